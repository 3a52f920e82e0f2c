//! The `answer` and `replay` checks: each final answer is one the SPEC allows for its
//! request and agrees with it; a request re-sent with its key is answered the same.

use std::collections::HashMap;

use super::history::{Line, Observed, Op, Record, St, Step, Violation};
use super::said::Said;

/// Every final answer is one the SPEC allows for its request, and says what it must.
pub(super) fn check_answers(
    pays: &HashMap<&str, Vec<&Record>>,
    said: &[Said<'_>],
    seen: &Observed,
    v: &mut Vec<Violation>,
) {
    for s in said {
        let Some(a) = &s.rec.answer else { continue };
        let why = body_fault(s).or_else(|| request_fault(pays, s, seen, a.status));
        if let Some(why) = why {
            v.push(Violation::new(
                "answer",
                format!("{}: {why}", s.rec.label()),
            ));
        }
    }
}

/// What is wrong with the order a body carries, whatever the request: it is another
/// order, or its status is unknown.
fn body_fault(s: &Said<'_>) -> Option<String> {
    if let (Some(want), true) = (s.rec.op.order_id(), s.has_order) {
        if s.body_order_id.as_deref() != Some(want) {
            return Some(format!(
                "the body is about another order: {:?}",
                s.body_order_id
            ));
        }
    }
    if s.has_order && s.status.is_none() {
        return Some("the order in the body has no known status".into());
    }
    None
}

/// The table of answers the SPEC allows per request: why this one is wrong, or `None`.
fn request_fault(
    pays: &HashMap<&str, Vec<&Record>>,
    s: &Said<'_>,
    seen: &Observed,
    status: u16,
) -> Option<String> {
    let ty = s.ty.as_deref();
    match (&s.rec.op, status, ty) {
        (Op::Place { lines, .. }, 201, _) => placed_fault(s, lines),
        (Op::Place { .. }, 409, Some("out_of_stock" | "limit_exceeded")) => (s.status
            != Some(St::Failed))
        .then(|| "a refused placement must carry its FAILED order".into()),
        (Op::Pay { payment_ref, .. }, 200, _) => paid_fault(pays, s, seen, payment_ref),
        (Op::Pay { .. }, 409, Some("order_not_payable")) => (s.status == Some(St::Pending))
            .then(|| "order_not_payable, yet the order in the body is PENDING".into()),
        (Op::Pay { .. }, 422, Some("amount_mismatch")) => mismatch_fault(s, seen),
        (Op::Cancel { .. }, 200, _) => (s.status != Some(St::Cancelled))
            .then(|| "a cancel answered 200 must say CANCELLED".into()),
        (Op::Ship { step, .. }, 200, _) => shipped_fault(s, *step),
        (Op::Cancel { .. } | Op::Ship { .. }, 409, Some("invalid_transition")) => None,
        (Op::Adjust { .. }, 200, _) => s
            .bad_counter
            .map(|k| format!("the SKU's `{k}` is missing or negative")),
        (Op::Adjust { delta, .. }, 409, Some("insufficient_stock")) => {
            (*delta > 0).then(|| "adding stock was refused with insufficient_stock".into())
        }
        (_, status, ty) => Some(format!(
            "not an answer the SPEC allows for this request: {status} {}",
            ty.unwrap_or("(no problem type)")
        )),
    }
}

/// A placement answered 201: a PENDING order with the lines asked for.
fn placed_fault(s: &Said<'_>, lines: &[Line]) -> Option<String> {
    if s.status != Some(St::Pending) {
        return Some("a placement answered 201 must be PENDING".into());
    }
    let got = s.lines.as_ref()?;
    let mut got = got.clone();
    let mut want = lines.to_vec();
    got.sort();
    want.sort();
    (got != want).then(|| format!("the order's lines are {got:?}"))
}

/// A payment answered 200: the order is past PENDING, carries this payment's ref, and a
/// new payment had the right amount.
fn paid_fault(
    pays: &HashMap<&str, Vec<&Record>>,
    s: &Said<'_>,
    seen: &Observed,
    payment_ref: &str,
) -> Option<String> {
    if matches!(s.status, None | Some(St::Pending | St::Failed)) {
        Some("a payment answered 200 cannot leave the order PENDING or FAILED".into())
    } else if s.payment_ref.as_deref() != Some(payment_ref) {
        Some(format!(
            "a payment answered 200 must be the order's payment, but its payment_ref is {:?}",
            s.payment_ref
        ))
    } else if !ref_used_elsewhere(pays, s.rec) && wrong_amount(s, seen) {
        Some("a new payment with the wrong amount was accepted".into())
    } else {
        None
    }
}

/// A payment refused with amount_mismatch: its amount differs from the order's total.
fn mismatch_fault(s: &Said<'_>, seen: &Observed) -> Option<String> {
    let known = s
        .rec
        .op
        .order_id()
        .and_then(|id| seen.orders.get(id))
        .is_some();
    (known && !wrong_amount(s, seen))
        .then(|| "the amount equals the order's total, yet amount_mismatch".into())
}

/// A shipment step answered 200: the order says the status the step reaches.
fn shipped_fault(s: &Said<'_>, step: Step) -> Option<String> {
    (s.status != Some(step.reaches())).then(|| {
        format!(
            "shipment step {} answered 200 must say {}",
            step.as_str(),
            step.reaches()
        )
    })
}

/// The payment's amount differs from the order's total (as finally read).
fn wrong_amount(s: &Said<'_>, seen: &Observed) -> bool {
    match (&s.rec.op, seen.orders.get(&s.order_id)) {
        (Op::Pay { amount_minor, .. }, Some(o)) => *amount_minor != o.total_minor,
        _ => false,
    }
}

/// Another request (answered or not) carried this payment's ref for the same order.
fn ref_used_elsewhere(pays: &HashMap<&str, Vec<&Record>>, rec: &Record) -> bool {
    let Op::Pay {
        order_id,
        payment_ref,
        ..
    } = &rec.op
    else {
        return false;
    };
    pays.get(order_id.as_str()).is_some_and(|rs| {
        rs.iter().any(|r| {
            r.id != rec.id && matches!(&r.op, Op::Pay { payment_ref: p, .. } if p == payment_ref)
        })
    })
}

/// A request re-sent with its key after its answer gets the same answer, marked replayed.
pub(super) fn check_replays(records: &[Record], v: &mut Vec<Violation>) {
    for r in records {
        let Some(first) = &r.answer else { continue };
        for again in &r.replays {
            if again.status != first.status || again.body != first.body {
                v.push(Violation::new(
                    "replay",
                    format!(
                        "{}: re-sent with its key, it was answered {} {} instead of {} {}",
                        r.label(),
                        again.status,
                        again.body,
                        first.status,
                        first.body
                    ),
                ));
            } else if !again.replayed {
                v.push(Violation::new(
                    "replay",
                    format!(
                        "{}: a replayed answer lacks `Idempotent-Replayed: true`",
                        r.label()
                    ),
                ));
            }
        }
    }
}
