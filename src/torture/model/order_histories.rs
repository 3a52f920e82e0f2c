//! The `history` check: every answer's order status appears in the order's final
//! history, in an order consistent with real time (see [`history_conflict`]).

use std::collections::BTreeMap;
use std::fmt;

use super::history::{Micros, Observed, Op, Record, St, Violation};
use super::said::Said;

/// A set of statuses: what an answer allows the order to have been in when the request
/// took effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mask(u8);

impl Mask {
    fn only(s: St) -> Mask {
        Mask(s.bit())
    }

    fn all_but(excluded: &[St]) -> Mask {
        Mask(
            St::ALL
                .into_iter()
                .filter(|s| !excluded.contains(s))
                .fold(0, |m, s| m | s.bit()),
        )
    }

    fn has(self, s: St) -> bool {
        self.0 & s.bit() != 0
    }
}

impl fmt::Display for Mask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = St::ALL
            .into_iter()
            .filter(|s| self.has(*s))
            .map(St::as_str)
            .collect();
        if names.len() == 1 {
            f.write_str(names[0])
        } else {
            write!(f, "one of {}", names.join("|"))
        }
    }
}

/// What an answer allows the order's status to have been once the request took effect.
fn allowed(s: &Said<'_>) -> Option<Mask> {
    let a = s.rec.answer.as_ref()?;
    let ty = s.ty.as_deref();
    match (&s.rec.op, a.status, ty) {
        (Op::Cancel { .. }, 409, Some("invalid_transition")) => {
            Some(Mask::all_but(&[St::Pending, St::Confirmed]))
        }
        (Op::Ship { step, .. }, 409, Some("invalid_transition")) => {
            Some(Mask::all_but(&[step.from_status()]))
        }
        (Op::Pay { .. }, 409, Some("order_not_payable")) => Some(match s.status {
            Some(st) => Mask::only(st),
            None => Mask::all_but(&[St::Pending]),
        }),
        (Op::Adjust { .. }, _, _) => None,
        (_, 200 | 201 | 409, _) => s.status.map(Mask::only),
        _ => None,
    }
}

/// One answer's constraint on an order's history.
#[derive(Debug, Clone)]
struct Observation<'a> {
    sent_us: Micros,
    answered_us: Micros,
    allowed: Mask,
    /// For the message (its label is only made when there is one).
    rec: &'a Record,
}

/// Whether `obs` (answers about one order) can be placed on the order's `history`:
/// each at an index whose status it allows, and an answer received before another was
/// sent at an index no later than the other's. Returns why not, or `None`.
///
/// This is constraint propagation over index ranges: it never rejects a placement that
/// exists (each step only removes indices no valid placement can use), so a conflict is
/// a proof.
fn history_conflict(history: &[St], obs: &[Observation<'_>]) -> Option<String> {
    if history.is_empty() {
        return Some("the order has an empty history".into());
    }
    let (mut lo, mut hi) = match index_ranges(history, obs) {
        Ok(ranges) => ranges,
        Err(why) => return Some(why),
    };
    let pairs: Vec<(usize, usize)> = (0..obs.len())
        .flat_map(|i| (0..obs.len()).map(move |j| (i, j)))
        .filter(|&(i, j)| obs[i].answered_us < obs[j].sent_us)
        .collect();
    let conflict = |i: usize, j: usize| {
        format!(
            "{} was received before {} was sent, but the order's history {} cannot show {} and then {}",
            obs[i].rec.label(),
            obs[j].rec.label(),
            show(history),
            obs[i].allowed,
            obs[j].allowed
        )
    };
    loop {
        let mut changed = false;
        for &(i, j) in &pairs {
            if lo[j] < lo[i] {
                match next_index(history, obs[j].allowed, lo[i]) {
                    Some(k) => {
                        lo[j] = k;
                        changed = true;
                    }
                    None => return Some(conflict(i, j)),
                }
            }
            if hi[i] > hi[j] {
                match prev_index(history, obs[i].allowed, hi[j]) {
                    Some(k) => {
                        hi[i] = k;
                        changed = true;
                    }
                    None => return Some(conflict(i, j)),
                }
            }
            if lo[i] > hi[i] || lo[j] > hi[j] {
                return Some(conflict(i, j));
            }
        }
        if !changed {
            return None;
        }
    }
}

/// Each observation's first and last index on a non-empty `history` with a status it
/// allows, or why one has none.
fn index_ranges(
    history: &[St],
    obs: &[Observation<'_>],
) -> Result<(Vec<usize>, Vec<usize>), String> {
    let last = history.len() - 1;
    let mut lo = Vec::with_capacity(obs.len());
    let mut hi = Vec::with_capacity(obs.len());
    for o in obs {
        match (
            next_index(history, o.allowed, 0),
            prev_index(history, o.allowed, last),
        ) {
            (Some(a), Some(b)) => {
                lo.push(a);
                hi.push(b);
            }
            _ => {
                return Err(format!(
                    "{} means the order was {} then, but its history {} never shows that",
                    o.rec.label(),
                    o.allowed,
                    show(history)
                ))
            }
        }
    }
    Ok((lo, hi))
}

/// The first index at or after `from` whose status `allowed` has.
fn next_index(history: &[St], allowed: Mask, from: usize) -> Option<usize> {
    (from..history.len()).find(|&k| allowed.has(history[k]))
}

/// The last index at or before `upto` (capped at the end) whose status `allowed` has.
fn prev_index(history: &[St], allowed: Mask, upto: usize) -> Option<usize> {
    let last = history.len().checked_sub(1)?;
    (0..=upto.min(last))
        .rev()
        .find(|&k| allowed.has(history[k]))
}

/// A history as `[PENDING, PAID, …]`.
fn show(h: &[St]) -> String {
    let s: Vec<&str> = h.iter().map(|s| s.as_str()).collect();
    format!("[{}]", s.join(", "))
}

/// Acknowledged answers agree with each order's final history.
pub(super) fn check_histories(said: &[Said<'_>], seen: &Observed, v: &mut Vec<Violation>) {
    let mut per_order: BTreeMap<&str, Vec<Observation<'_>>> = BTreeMap::new();
    for s in said {
        let (Some(mask), Some(t)) = (allowed(s), s.rec.answered_us) else {
            continue;
        };
        if s.order_id.is_empty() {
            continue;
        }
        per_order.entry(&s.order_id).or_default().push(Observation {
            sent_us: s.rec.sent_us,
            answered_us: t,
            allowed: mask,
            rec: s.rec,
        });
        if let (Op::Cancel { .. }, Some(200)) = (&s.rec.op, s.rec.answer.as_ref().map(|a| a.status))
        {
            if let Some(o) = seen.orders.get(&s.order_id) {
                if o.status != St::Cancelled {
                    v.push(Violation::new(
                        "history",
                        format!("{} but the order is {} now", s.rec.label(), o.status),
                    ));
                }
            }
        }
    }
    for (id, obs) in per_order {
        let Some(o) = seen.orders.get(id) else {
            continue;
        };
        if let Some(why) = history_conflict(&o.history, &obs) {
            v.push(Violation::new("history", format!("order {id}: {why}")));
        }
    }
}
