//! The `orders` check: every order an answer named still exists; every order in the log
//! is claimed by the answer to one placement, or may belong to one that got no answer.

use std::collections::{BTreeSet, HashMap};

use super::history::{Line, LogView, Observed, Op, Record, Violation};
use super::said::Said;

/// What a placement asked for: the customer and its lines, sorted.
type Signature = (String, Vec<Line>);

/// Phantom orders beyond this many are reported without their look-alike placements
/// (the search costs a pass over every record).
const LOOKED_UP: usize = 20;

/// Every order an answer named exists; every order in the log is claimed by one
/// placement's answer, or may belong to a placement that got none.
pub(super) fn check_orders(
    records: &[Record],
    said: &[Said<'_>],
    seen: &Observed,
    v: &mut Vec<Violation>,
) {
    let claimed = claimed_orders(said, v);
    check_lost(said, seen, v);
    let Some(log) = &seen.log else { return };
    check_unclaimed(records, &claimed, log, seen, v);
}

/// The placements' answers by the order they name; an order answered to two placements
/// is a violation.
fn claimed_orders<'a>(
    said: &'a [Said<'a>],
    v: &mut Vec<Violation>,
) -> HashMap<&'a str, &'a Record> {
    let mut claimed: HashMap<&str, &Record> = HashMap::new();
    for s in said {
        if matches!(s.rec.op, Op::Place { .. }) && !s.order_id.is_empty() {
            if let Some(other) = claimed.insert(&s.order_id, s.rec) {
                v.push(Violation::new(
                    "orders",
                    format!(
                        "order {} was answered to two placements: {} and {}",
                        s.order_id,
                        other.label(),
                        s.rec.label()
                    ),
                ));
            }
        }
    }
    claimed
}

/// Every order an answer named is still known to the server (each reported once).
fn check_lost(said: &[Said<'_>], seen: &Observed, v: &mut Vec<Violation>) {
    let mut reported = BTreeSet::new();
    for s in said {
        if !s.order_id.is_empty() && seen.lost.contains(&s.order_id) && reported.insert(&s.order_id)
        {
            v.push(Violation::new(
                "orders",
                format!(
                    "order {} was named in an answer ({}) but the server no longer knows it",
                    s.order_id,
                    s.rec.label()
                ),
            ));
        }
    }
}

/// Every order in the log that no answer claimed may belong to an unanswered placement;
/// the rest are phantoms.
fn check_unclaimed(
    records: &[Record],
    claimed: &HashMap<&str, &Record>,
    log: &LogView,
    seen: &Observed,
    v: &mut Vec<Violation>,
) {
    // Unanswered placements, by what they asked for: each may own one unclaimed order.
    let (mut open, mut open_total) = open_placements(records);
    let mut unknown = Vec::new();
    for id in log.orders.keys() {
        if claimed.contains_key(id.as_str()) {
            continue;
        }
        let sig = seen
            .orders
            .get(id)
            .map(|o| signature(&o.customer_id, &o.lines));
        match sig
            .as_ref()
            .and_then(|s| open.get_mut(s))
            .filter(|n| **n > 0)
        {
            Some(n) => {
                *n -= 1;
                open_total -= 1;
            }
            None => unknown.push((id, sig)),
        }
    }
    // Orders whose request could not be matched exactly may still be an unanswered
    // placement's (its lines as stored may differ, say); beyond that they are phantoms.
    for (n, (id, sig)) in unknown.into_iter().skip(open_total).enumerate() {
        // The first few get their look-alike requests named.
        let sig = sig.filter(|_| n < LOOKED_UP);
        let twin = sig
            .map(|sig| look_alikes(records, &sig))
            .unwrap_or_default();
        v.push(Violation::new(
            "orders",
            format!(
                "order {id} is in the log but no placement was answered with it and none is unanswered (placed twice under one key?); placements that asked for the same: {}",
                match (n < LOOKED_UP, twin.is_empty()) {
                    (false, _) => "not looked up".to_owned(),
                    (true, true) => "none".to_owned(),
                    (true, false) => twin.join("; "),
                }
            ),
        ));
    }
}

/// The unanswered placements counted by what they asked for, and their total.
fn open_placements(records: &[Record]) -> (HashMap<Signature, usize>, usize) {
    let mut open: HashMap<Signature, usize> = HashMap::new();
    let mut open_total = 0usize;
    for r in records.iter().filter(|r| r.answer.is_none()) {
        if let Op::Place { customer_id, lines } = &r.op {
            *open.entry(signature(customer_id, lines)).or_default() += 1;
            open_total += 1;
        }
    }
    (open, open_total)
}

/// The labels of every placement that asked for `sig`.
fn look_alikes(records: &[Record], sig: &Signature) -> Vec<String> {
    records
        .iter()
        .filter(|r| match &r.op {
            Op::Place { customer_id, lines } => signature(customer_id, lines) == *sig,
            _ => false,
        })
        .map(Record::label)
        .collect()
}

/// A placement's signature: its customer and its lines in a canonical order.
fn signature(customer_id: &str, lines: &[Line]) -> Signature {
    let mut l = lines.to_vec();
    l.sort();
    (customer_id.to_owned(), l)
}
