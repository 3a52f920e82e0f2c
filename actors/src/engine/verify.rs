//! `ordo verify`: replay the whole log through the domain's `apply` and check every
//! invariant of SPEC §5 from the log alone.

use std::collections::HashMap;

use ordo_storage::Store;

use crate::domain::events::{decode_order, decode_sku};
use crate::domain::order::{self, Order, Status};
use crate::domain::sku::{self, Sku};
use crate::domain::{OrderEvent, SkuEvent};
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
    let mut report = VerifyReport::default();
    // Idempotency key → (seq of its application, until when its answer was kept).
    let mut applied: HashMap<String, (u64, u64)> = HashMap::new();
    // (order id, payment ref, seq) of every PaymentSucceeded.
    let mut paid: Vec<(String, String, u64)> = Vec::new();
    // (order id, payment ref) → (amount paid, amount refunded) for refs that paid.
    let mut money: HashMap<(String, String), (i64, i64)> = HashMap::new();
    let mut skus: HashMap<String, Sku> = HashMap::new();
    let mut orders: HashMap<String, Order> = HashMap::new();
    // (order, sku) → (units held, units sold) according to SKU events.
    let mut per_line: HashMap<(String, String), (i64, i64)> = HashMap::new();
    let mut expect_seq = 1;
    let mut err = None;
    report.events = store.scan_from(0, |v| {
        if v.seq != expect_seq {
            report.violations.push(format!("seq gap: expected {expect_seq}, found {}", v.seq));
        }
        expect_seq = v.seq + 1;
        if let Some(key) = v.idempotency_key {
            if let Some((first, kept_until)) = applied.get(key) {
                if v.at_ms < *kept_until {
                    report.violations.push(format!(
                        "seq {}: idempotency key {:?} applied again (first applied at seq {first}, kept until {kept_until})",
                        v.seq,
                        key.replace('\n', " "),
                    ));
                }
            }
            applied.insert(key.to_owned(), (v.seq, v.idempotency_expires_ms));
        }
        if let Some(code) = v.stream.strip_prefix("sku/") {
            let ev = match decode_sku(v.event_type, v.schema, v.payload) {
                Ok(e) => e,
                Err(e) => {
                    err = Some(decode_err(format!("seq {}: {e}", v.seq)));
                    return Ok(false);
                }
            };
            let s = skus.entry(code.to_owned()).or_default();
            if v.version != s.version + 1 {
                report.violations.push(format!("seq {}: {} version {} after {}", v.seq, v.stream, v.version, s.version));
            }
            let key = |id: &str| (id.to_owned(), code.to_owned());
            match &ev {
                SkuEvent::StockReserved(e) => per_line.entry(key(&e.order_id)).or_default().0 += i64::from(e.qty),
                SkuEvent::StockReleased(e) => per_line.entry(key(&e.order_id)).or_default().0 -= i64::from(e.qty),
                SkuEvent::StockReduced(e) => {
                    let l = per_line.entry(key(&e.order_id)).or_default();
                    l.0 -= i64::from(e.qty);
                    l.1 += i64::from(e.qty);
                }
                SkuEvent::StockRestored(e) => per_line.entry(key(&e.order_id)).or_default().1 -= i64::from(e.qty),
                _ => {}
            }
            sku::apply(s, &ev);
            if !s.invariant_holds() {
                report.violations.push(format!(
                    "seq {}: sku {code} invariant broken: available {} reserved {} sold {} received {}",
                    v.seq, s.available, s.reserved, s.sold, s.received
                ));
            }
        } else if let Some(id) = v.stream.strip_prefix("order/") {
            let ev: OrderEvent = match decode_order(v.event_type, v.schema, v.payload) {
                Ok(e) => e,
                Err(e) => {
                    err = Some(decode_err(format!("seq {}: {e}", v.seq)));
                    return Ok(false);
                }
            };
            let o = orders.entry(id.to_owned()).or_default();
            if v.version != o.version + 1 {
                report.violations.push(format!("seq {}: {} version {} after {}", v.seq, v.stream, v.version, o.version));
            }
            match &ev {
                OrderEvent::PaymentSucceeded(p) => {
                    paid.push((id.to_owned(), p.payment_ref.clone(), v.seq));
                    money.entry((id.to_owned(), p.payment_ref.clone())).or_default().0 += p.amount_minor;
                }
                // A cancelled order's refund returns what its payment paid; refunds of
                // other attempts under the same ref (late payments) are their own money.
                OrderEvent::RefundRequested(r) if r.reason == order::REFUND_CANCELLED => {
                    if let Some(m) = money.get_mut(&(id.to_owned(), r.payment_ref.clone())) {
                        m.1 += r.amount_minor;
                        if m.1 > m.0 {
                            report.violations.push(format!(
                                "seq {}: order {id} refunds {} of payment {} that paid {}",
                                v.seq, m.1, r.payment_ref, m.0
                            ));
                        }
                    }
                }
                _ => {}
            }
            order::apply(o, &ev, v.at_ms);
        } else {
            report.violations.push(format!("seq {}: unknown stream {}", v.seq, v.stream));
        }
        Ok(true)
    })?;
    if let Some(e) = err {
        return Err(e);
    }
    for ((order_id, sku), (held, sold)) in &per_line {
        let o = orders.get(order_id);
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
        let paid_ok = o.is_some_and(|o| o.status == Some(Status::Paid)) && held + sold == line_qty;
        if (*held, *sold) != (want_held, want_sold) && !paid_ok {
            report.violations.push(format!(
                "order {order_id} ({}) sku {sku}: {held} held and {sold} sold by sku events, expected {want_held} held and {want_sold} sold",
                o.and_then(|o| o.status).map(|s| s.as_str()).unwrap_or("missing")
            ));
        }
    }
    for (order_id, payment_ref, seq) in &paid {
        let o = orders.get(order_id);
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
        // A confirmed order that was cancelled must have refunded its payment too (or be
        // restocking: `needs_restore`, which recovery finishes with the refund).
        let ok = if confirmed_then_cancelled {
            refunded || o.is_some_and(Order::needs_restore)
        } else {
            kept || refunded
        };
        if !ok {
            report.violations.push(format!(
                "seq {seq}: payment {payment_ref} of order {order_id} ({}) neither paid a confirmed order nor was refunded",
                o.and_then(|o| o.status).map(|s| s.as_str()).unwrap_or("missing")
            ));
        }
    }
    for s in skus.values() {
        if !s.invariant_holds() {
            report
                .violations
                .push(format!("sku {} invariant broken at the end", s.sku));
        }
    }
    report.orders = orders.len() as u64;
    let mut views: Vec<_> = skus.values().map(Sku::view).collect();
    views.sort_by(|a, b| a.sku.cmp(&b.sku));
    report.skus = views;
    Ok(report)
}
