//! The recorded history of a torture run and the reference model that checks it.
//!
//! Everything here is pure: [`check`] takes what the clients recorded ([`Record`]s), the
//! SKUs' initial stock ([`Setup`]) and the final state read back from the server
//! ([`Observed`]), and returns every violation it can prove. *Prove* is the rule that
//! keeps the checks sound:
//!
//! - a request whose answer never arrived may or may not have been applied, so it only
//!   ever widens what is allowed (an unanswered adjustment may count once or not at all;
//!   an unanswered placement may own one order nobody claimed);
//! - requests that overlapped in time may have been applied in either order, so the
//!   order checks only use real-time precedence: answer *A* arrived before request *B*
//!   was sent (both on one monotonic clock in one process);
//! - an answer describes the order *after* the request took effect, at some point
//!   between sending the request (its first attempt: a retry may get the answer an earlier
//!   attempt produced) and receiving the answer.
//!
//! The checks, each named in its [`Violation`]:
//! - `answer`: every final answer is one the SPEC allows for that request, with a body
//!   that agrees with it (a cancel answered 200 says CANCELLED, a payment answered 200
//!   carries its own `payment_ref`, …).
//! - `stock`: per SKU, `available + reserved + sold` equals the initial stock plus every
//!   adjustment answered 200 (give or take unanswered ones), and the log holds one
//!   `StockAdjusted` per applied adjustment.
//! - `holds`: per SKU, `sold` and `reserved` equal the units of the orders whose final
//!   status sells or reserves them; no counter is negative.
//! - `orders`: every order an answer named still exists; every order in the log is
//!   claimed by the answer to one placement (or may belong to an unanswered one).
//! - `history`: every answer's order status appears in the order's final history, in an
//!   order consistent with real time (see `history_conflict`).
//! - `money`: every succeeded payment that was acknowledged either paid the order (which
//!   reached CONFIRMED and, if cancelled since, was refunded) or has a `RefundRequested`;
//!   every `PaymentSucceeded` in the log is followed by its `OrderConfirmed` or refunded.
//! - `replay`: a request re-sent with its key after it was answered gets the first
//!   answer again, byte for byte, marked `Idempotent-Replayed: true`.
//!
//! Besides, [`liveness`]: no request is left without an answer while the server was up
//! to give one.
//!
//! Layout: `history` holds the recorded types; `said` reads each answer's body once;
//! one file per family of checks (`answers`, `stock`, `orders`, `order_histories`,
//! `money`).

mod answers;
mod history;
mod money;
mod order_histories;
mod orders;
mod said;
mod stock;

use std::collections::HashMap;

pub use history::{
    Answer, Attempt, Line, LogEvent, LogView, Micros, Observed, Op, OrderFinal, Outcome, Record,
    Setup, SkuFinal, St, Step, Violation,
};
pub(crate) use said::order_of;

use answers::{check_answers, check_replays};
use money::check_money;
use order_histories::check_histories;
use orders::check_orders;
use said::said;
use stock::{check_holds, check_stock};

/// Checks a recorded history against the final state. Returns every violation found;
/// none means the history is explained by a correct server.
pub fn check(setup: &Setup, records: &[Record], seen: &Observed) -> Vec<Violation> {
    let said = said(records);
    // Every payment request (answered or not) by order: the checks look payments up by
    // order often, and a long run has a million records.
    let mut pays: HashMap<&str, Vec<&Record>> = HashMap::new();
    for r in records {
        if let Op::Pay { order_id, .. } = &r.op {
            pays.entry(order_id.as_str()).or_default().push(r);
        }
    }
    let mut v = Vec::new();
    check_answers(&pays, &said, seen, &mut v);
    check_stock(setup, records, seen, &mut v);
    check_orders(records, &said, seen, &mut v);
    check_holds(setup, records, seen, &mut v);
    check_histories(&said, seen, &mut v);
    check_money(&pays, &said, seen, &mut v);
    check_replays(records, &mut v);
    v
}

/// Every request got an answer. Not part of [`check`] (a history with unanswered requests
/// is a legitimate input there): the driver applies it when the server was up for the
/// whole drain, so a request still without an answer means the server stopped answering.
pub fn liveness(records: &[Record]) -> Option<Violation> {
    let stuck: Vec<String> = records
        .iter()
        .filter(|r| r.answer.is_none())
        .map(Record::label)
        .collect();
    (!stuck.is_empty()).then(|| {
        Violation::new(
            "liveness",
            format!(
                "{} requests got no answer but 5xx or errors until the end: {}",
                stuck.len(),
                stuck.into_iter().take(5).collect::<Vec<_>>().join("; ")
            ),
        )
    })
}
