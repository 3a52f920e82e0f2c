//! The `money` check: no money is kept without paying an order or refunding it. Every
//! succeeded payment that was acknowledged either paid the order (which reached
//! CONFIRMED and, if cancelled since, was refunded) or has a `RefundRequested`; every
//! `PaymentSucceeded` in the log is followed by its `OrderConfirmed` or refunded.

use std::collections::HashMap;

use super::history::{LogView, Observed, Op, OrderFinal, Outcome, Record, St, Violation};
use super::said::Said;

/// No money is kept without paying an order or refunding it.
pub(super) fn check_money(
    pays: &HashMap<&str, Vec<&Record>>,
    said: &[Said<'_>],
    seen: &Observed,
    v: &mut Vec<Violation>,
) {
    check_answered_payments(said, seen, v);
    check_confirmed_orders(pays, seen, v);
    // The log: each OrderConfirmed accounts for the latest PaymentSucceeded before it;
    // every other PaymentSucceeded must be refunded.
    let Some(log) = &seen.log else { return };
    check_logged_payments(log, seen, v);
}

/// A refund was requested for payment `r` of order `id`: the order says so, or its log
/// has the `RefundRequested`.
fn refunded(seen: &Observed, id: &str, r: &str) -> bool {
    seen.orders
        .get(id)
        .is_some_and(|o| o.refunds_requested.iter().any(|x| x == r))
        || seen
            .log
            .as_ref()
            .and_then(|l| l.orders.get(id))
            .is_some_and(|evs| {
                evs.iter()
                    .any(|e| e.kind == "RefundRequested" && e.payment_ref.as_deref() == Some(r))
            })
}

/// A payment answered 200 is the order's payment now; a succeeded payment that was
/// accepted (or refused as not payable) paid the order or was refunded.
fn check_answered_payments(said: &[Said<'_>], seen: &Observed, v: &mut Vec<Violation>) {
    for s in said {
        let Op::Pay {
            payment_ref,
            outcome,
            ..
        } = &s.rec.op
        else {
            continue;
        };
        let Some(a) = &s.rec.answer else { continue };
        let Some(o) = seen.orders.get(&s.order_id) else {
            continue;
        };
        let not_payable = a.status == 409 && s.ty.as_deref() == Some("order_not_payable");
        if a.status == 200 && o.payment_ref.as_deref() != Some(payment_ref.as_str()) {
            v.push(Violation::new(
                "money",
                format!(
                    "{} was answered 200, but the order's payment is {:?} now",
                    s.rec.label(),
                    o.payment_ref
                ),
            ));
        }
        if *outcome != Outcome::Succeeded || !(a.status == 200 || not_payable) {
            continue;
        }
        check_succeeded_payment(s, o, payment_ref, not_payable, seen, v);
    }
}

/// One acknowledged succeeded payment: refunded if refused as not payable, else it paid
/// the order or was refunded.
fn check_succeeded_payment(
    s: &Said<'_>,
    o: &OrderFinal,
    payment_ref: &str,
    not_payable: bool,
    seen: &Observed,
    v: &mut Vec<Violation>,
) {
    let paid_by_it = o.payment_ref.as_deref() == Some(payment_ref)
        && o.reached(St::Confirmed)
        && o.status != St::Cancelled;
    let refund = refunded(seen, &o.id, payment_ref);
    if not_payable && !refund {
        v.push(Violation::new(
            "money",
            format!(
                "{}: a succeeded payment refused as not payable has no RefundRequested for its ref (order {} now)",
                s.rec.label(),
                o.status
            ),
        ));
    } else if !paid_by_it && !refund {
        v.push(Violation::new(
            "money",
            format!(
                "{}: a succeeded payment neither paid the order (it is {} with payment {:?}, history {:?}) nor has a RefundRequested: money kept silently",
                s.rec.label(),
                o.status,
                o.payment_ref,
                o.history
            ),
        ));
    }
}

/// Every order that reached CONFIRMED was paid by a request that asked for exactly that
/// payment, and refunded if cancelled since.
fn check_confirmed_orders(
    pays: &HashMap<&str, Vec<&Record>>,
    seen: &Observed,
    v: &mut Vec<Violation>,
) {
    for o in seen.orders.values() {
        if !o.reached(St::Confirmed) {
            continue;
        }
        let Some(r) = &o.payment_ref else {
            v.push(Violation::new(
                "money",
                format!("order {} reached CONFIRMED without a payment_ref", o.id),
            ));
            continue;
        };
        if !payment_asked(pays, o, r) {
            v.push(Violation::new(
                "money",
                format!(
                    "order {} reached CONFIRMED by payment {r}, but no request paid it that way (succeeded, amount {})",
                    o.id, o.total_minor
                ),
            ));
        }
        if o.status == St::Cancelled && !refunded(seen, &o.id, r) {
            v.push(Violation::new(
                "money",
                format!(
                    "order {} was cancelled after CONFIRMED without a RefundRequested for its payment {r}",
                    o.id
                ),
            ));
        }
    }
}

/// Some request paid order `o` with ref `r`, succeeded, for its total.
fn payment_asked(pays: &HashMap<&str, Vec<&Record>>, o: &OrderFinal, r: &str) -> bool {
    pays.get(o.id.as_str())
        .into_iter()
        .flatten()
        .any(|x| match &x.op {
            Op::Pay {
                order_id,
                payment_ref,
                outcome: Outcome::Succeeded,
                amount_minor,
            } => order_id == &o.id && payment_ref == r && *amount_minor == o.total_minor,
            _ => false,
        })
}

/// In the log, every `PaymentSucceeded` not accounted for by the `OrderConfirmed` after
/// it has a `RefundRequested`.
fn check_logged_payments(log: &LogView, seen: &Observed, v: &mut Vec<Violation>) {
    for (id, events) in &log.orders {
        let mut waiting: Option<&str> = None;
        let mut unpaid: Vec<&str> = Vec::new();
        for e in events {
            match e.kind.as_str() {
                "PaymentSucceeded" => {
                    if let Some(r) = waiting.replace(e.payment_ref.as_deref().unwrap_or("")) {
                        unpaid.push(r);
                    }
                }
                "OrderConfirmed" => waiting = None,
                _ => {}
            }
        }
        unpaid.extend(waiting);
        for r in unpaid {
            if !refunded(seen, id, r) {
                v.push(Violation::new(
                    "money",
                    format!(
                        "order {id}: the log has PaymentSucceeded {r} with neither an OrderConfirmed for it nor a RefundRequested"
                    ),
                ));
            }
        }
    }
}
