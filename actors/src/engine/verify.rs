//! `ordo verify`: replay the whole log through the domain's `apply` and check every
//! invariant of SPEC §5 from the log alone.

use std::collections::HashMap;

use ordo_storage::{EventView, Store};

use crate::domain::events::{decode_order, decode_sku};
use crate::domain::order::{self, Order, Status};
use crate::domain::sku::{self, Sku};
use crate::domain::{Aggregate, OrderEvent, SkuEvent};
use crate::engine::aggregate::decode_err;
use crate::engine::error::EngineResult;

/// What `ordo verify` found.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    pub events: u64,
    pub skus: Vec<crate::domain::sku::SkuView>,
    pub orders: u64,
    pub violations: Vec<String>,
}

/// Replays the whole log through `apply` and checks (SPEC §5): every SKU's invariant
/// after every event; seqs gap-free; every order consistent with the SKU events that name
/// it (units held while PENDING/PAID, sold while CONFIRMED or later, none held or sold
/// otherwise); no idempotency key applied twice while its first answer was kept; every
/// `PaymentSucceeded` paid an order that reached CONFIRMED (or is PAID, its deduction
/// under way, which recovery finishes) or has a `RefundRequested` for its ref; no payment
/// refunded beyond what it paid.
pub fn verify(store: &Store) -> EngineResult<VerifyReport> {
    let mut audit = Audit::default();
    let mut err = None;
    audit.report.events = store.scan_from(0, |v| match audit.event(&v) {
        Ok(()) => Ok(true),
        Err(e) => {
            err = Some(e);
            Ok(false)
        }
    })?;
    if let Some(e) = err {
        return Err(e);
    }
    audit.check_lines();
    audit.check_payments();
    Ok(audit.finish())
}

/// What the replay keeps to check the log against itself.
#[derive(Default)]
struct Audit {
    report: VerifyReport,
    expect_seq: u64,
    skus: HashMap<String, Sku>,
    orders: HashMap<String, Order>,
    /// (order, sku) → (units held, units sold) according to SKU events.
    per_line: HashMap<(String, String), (i64, i64)>,
    /// Idempotency key → (seq of its application, until when its answer was kept).
    applied: HashMap<String, (u64, u64)>,
    /// (order id, payment ref, seq) of every PaymentSucceeded.
    paid: Vec<(String, String, u64)>,
    /// (order id, payment ref) → (amount paid, amount refunded) for refs that paid.
    money: HashMap<(String, String), (i64, i64)>,
}

impl Audit {
    fn violation(&mut self, v: String) {
        self.report.violations.push(v);
    }

    /// One event: its place in the log, its key, and its stream.
    fn event(&mut self, v: &EventView<'_>) -> EngineResult<()> {
        let expect = self.expect_seq.max(1);
        if v.seq != expect {
            self.violation(format!("seq gap: expected {expect}, found {}", v.seq));
        }
        self.expect_seq = v.seq + 1;
        if let Some(key) = v.idempotency_key {
            self.key_applied(v, key);
        }
        if let Some(code) = v.stream.strip_prefix(Sku::STREAM_PREFIX) {
            let ev = decode_sku(v.event_type, v.schema, v.payload)
                .map_err(|e| decode_err(format!("seq {}: {e}", v.seq)))?;
            self.sku_event(v, code, &ev);
        } else if let Some(id) = v.stream.strip_prefix(Order::STREAM_PREFIX) {
            let ev = decode_order(v.event_type, v.schema, v.payload)
                .map_err(|e| decode_err(format!("seq {}: {e}", v.seq)))?;
            self.order_event(v, id, &ev);
        } else {
            self.violation(format!("seq {}: unknown stream {}", v.seq, v.stream));
        }
        Ok(())
    }

    /// No key applied again while its first answer was kept.
    fn key_applied(&mut self, v: &EventView<'_>, key: &str) {
        if let Some((first, kept_until)) = self.applied.get(key).copied() {
            if v.at_ms < kept_until {
                self.violation(format!(
                    "seq {}: idempotency key {:?} applied again (first applied at seq {first}, kept until {kept_until})",
                    v.seq,
                    key.replace('\n', " "),
                ));
            }
        }
        self.applied
            .insert(key.to_owned(), (v.seq, v.idempotency_expires_ms));
    }

    fn sku_event(&mut self, v: &EventView<'_>, code: &str, ev: &SkuEvent) {
        let key = |id: &str| (id.to_owned(), code.to_owned());
        match ev {
            SkuEvent::StockReserved(e) => {
                self.per_line.entry(key(&e.order_id)).or_default().0 += i64::from(e.qty)
            }
            SkuEvent::StockReleased(e) => {
                self.per_line.entry(key(&e.order_id)).or_default().0 -= i64::from(e.qty)
            }
            SkuEvent::StockReduced(e) => {
                let l = self.per_line.entry(key(&e.order_id)).or_default();
                l.0 -= i64::from(e.qty);
                l.1 += i64::from(e.qty);
            }
            SkuEvent::StockRestored(e) => {
                self.per_line.entry(key(&e.order_id)).or_default().1 -= i64::from(e.qty)
            }
            _ => {}
        }
        let s = self.skus.entry(code.to_owned()).or_default();
        let version_gap = (v.version != s.version + 1).then_some(s.version);
        sku::apply(s, ev);
        let broken = (!s.invariant_holds()).then(|| {
            format!(
                "seq {}: sku {code} invariant broken: available {} reserved {} sold {} received {}",
                v.seq, s.available, s.reserved, s.sold, s.received
            )
        });
        if let Some(after) = version_gap {
            self.violation(format!(
                "seq {}: {} version {} after {after}",
                v.seq, v.stream, v.version
            ));
        }
        if let Some(b) = broken {
            self.violation(b);
        }
    }

    fn order_event(&mut self, v: &EventView<'_>, id: &str, ev: &OrderEvent) {
        let o = self.orders.entry(id.to_owned()).or_default();
        if v.version != o.version + 1 {
            let after = o.version;
            self.violation(format!(
                "seq {}: {} version {} after {after}",
                v.seq, v.stream, v.version
            ));
        }
        match ev {
            OrderEvent::PaymentSucceeded(p) => {
                self.paid
                    .push((id.to_owned(), p.payment_ref.clone(), v.seq));
                self.money
                    .entry((id.to_owned(), p.payment_ref.clone()))
                    .or_default()
                    .0 += p.amount_minor;
            }
            // A cancelled order's refund returns what its payment paid; refunds of other
            // attempts under the same ref (late payments) are their own money.
            OrderEvent::RefundRequested(r) if r.reason == order::REFUND_CANCELLED => {
                let over = self
                    .money
                    .get_mut(&(id.to_owned(), r.payment_ref.clone()))
                    .and_then(|m| {
                        m.1 += r.amount_minor;
                        (m.1 > m.0).then_some(*m)
                    });
                if let Some((paid, refunded)) = over {
                    self.violation(format!(
                        "seq {}: order {id} refunds {refunded} of payment {} that paid {paid}",
                        v.seq, r.payment_ref
                    ));
                }
            }
            _ => {}
        }
        if let Some(o) = self.orders.get_mut(id) {
            order::apply(o, ev, v.at_ms);
        }
    }

    /// Every order agrees with the SKU events that name it.
    fn check_lines(&mut self) {
        let mut found = Vec::new();
        for ((order_id, sku), (held, sold)) in &self.per_line {
            let o = self.orders.get(order_id);
            let line_qty = o
                .and_then(|o| o.lines.iter().find(|l| &l.sku == sku))
                .map(|l| i64::from(l.qty))
                .unwrap_or(0);
            let (want_held, want_sold) = match o.and_then(|o| o.status) {
                Some(Status::Pending | Status::Paid) => (line_qty, 0),
                Some(
                    Status::Confirmed
                    | Status::ShipmentPrepared
                    | Status::ShipmentProcessed
                    | Status::Fulfilled,
                ) => (0, line_qty),
                Some(Status::Cancelled) if o.is_some_and(Order::needs_restore) => (0, line_qty),
                _ => (0, 0),
            };
            // A PAID order may have deducted some lines already (saga under way).
            let paid_ok =
                o.is_some_and(|o| o.status == Some(Status::Paid)) && held + sold == line_qty;
            if (*held, *sold) != (want_held, want_sold) && !paid_ok {
                found.push(format!(
                    "order {order_id} ({}) sku {sku}: {held} held and {sold} sold by sku events, expected {want_held} held and {want_sold} sold",
                    o.and_then(|o| o.status).map(|s| s.as_str()).unwrap_or("missing")
                ));
            }
        }
        self.report.violations.extend(found);
    }

    /// No succeeded payment kept without paying a confirmed order, or refunded.
    fn check_payments(&mut self) {
        let mut found = Vec::new();
        for (order_id, payment_ref, seq) in &self.paid {
            let o = self.orders.get(order_id);
            let kept = o.is_some_and(|o| {
                (o.status == Some(Status::Paid)
                    || o.history.iter().any(|h| h.status == Status::Confirmed))
                    && o.payment_ref.as_ref() == Some(payment_ref)
            });
            let refunded = o.is_some_and(|o| {
                o.refunds
                    .iter()
                    .any(|r| r.payment_ref == *payment_ref && r.reason == order::REFUND_CANCELLED)
            });
            let confirmed_then_cancelled = o.is_some_and(|o| {
                o.status == Some(Status::Cancelled)
                    && o.history.iter().any(|h| h.status == Status::Confirmed)
            });
            // A confirmed order that was cancelled must have refunded its payment too (or
            // be restocking: `needs_restore`, which recovery finishes with the refund).
            let ok = if confirmed_then_cancelled {
                refunded || o.is_some_and(Order::needs_restore)
            } else {
                kept || refunded
            };
            if !ok {
                found.push(format!(
                    "seq {seq}: payment {payment_ref} of order {order_id} ({}) neither paid a confirmed order nor was refunded",
                    o.and_then(|o| o.status).map(|s| s.as_str()).unwrap_or("missing")
                ));
            }
        }
        self.report.violations.extend(found);
    }

    fn finish(mut self) -> VerifyReport {
        for s in self.skus.values() {
            if !s.invariant_holds() {
                self.report
                    .violations
                    .push(format!("sku {} invariant broken at the end", s.sku));
            }
        }
        self.report.orders = self.orders.len() as u64;
        let mut views: Vec<_> = self.skus.values().map(Sku::view).collect();
        views.sort_by(|a, b| a.sku.cmp(&b.sku));
        self.report.skus = views;
        self.report
    }
}
