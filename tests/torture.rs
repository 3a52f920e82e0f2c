//! `ordo torture`: the checker's model on hand-made histories (a clean one it must
//! accept, bad ones it must reject), and one short end-to-end run of the real binary
//! against a server it spawns, kills and restarts.
//!
//! Set `TORTURE_SEED` to replay the end-to-end run's mix of requests.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};

use ordo::torture::model::{
    check, Answer, Attempt, Line, LogEvent, LogView, Observed, Op, OrderFinal, Outcome, Record,
    Setup, SkuFinal, Step, Violation,
};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_ordo");

// ---------------------------------------------------------------------------------------
// Building histories.

fn answered(id: usize, op: Op, sent: u64, got: u64, status: u16, body: Value) -> Record {
    Record {
        id,
        client: id % 3,
        op,
        key: format!("key-{id}"),
        sent_us: sent,
        answered_us: Some(got),
        attempts: vec![Attempt {
            at_us: sent,
            status: Some(status),
            error: None,
        }],
        answer: Some(Answer {
            status,
            body: body.to_string(),
            replayed: false,
        }),
        replays: Vec::new(),
    }
}

fn unanswered(id: usize, op: Op, sent: u64) -> Record {
    Record {
        id,
        client: 0,
        op,
        key: format!("key-{id}"),
        sent_us: sent,
        answered_us: None,
        attempts: vec![Attempt {
            at_us: sent,
            status: None,
            error: Some("connect: refused".into()),
        }],
        answer: None,
        replays: Vec::new(),
    }
}

/// An order view as the server sends it.
fn order(
    id: &str,
    customer: &str,
    qty: u32,
    status: &str,
    payment_ref: Option<&str>,
    refunds: &[&str],
    history: &[&str],
) -> Value {
    let mut v = json!({
        "id": id,
        "customer_id": customer,
        "status": status,
        "lines": [{"sku": "S", "qty": qty, "unit_price_minor": 10}],
        "total_minor": 10 * i64::from(qty),
        "currency": "EUR",
        "created_at": 1, "expires_at": 2, "version": history.len() + 1,
        "history": history.iter().enumerate().map(|(i, s)| json!({"status": s, "at_ms": i})).collect::<Vec<_>>(),
    });
    if let Some(r) = payment_ref {
        v["payment_ref"] = json!(r);
    }
    if !refunds.is_empty() {
        v["refunds_requested"] = json!(refunds);
    }
    v
}

fn problem(kind: &str, order: Option<Value>) -> Value {
    let mut v = json!({"type": kind, "title": "t", "status": 409, "detail": "d"});
    if let Some(o) = order {
        v["order"] = o;
    }
    v
}

fn place(customer: &str, qty: u32) -> Op {
    Op::Place {
        customer_id: customer.into(),
        lines: vec![Line {
            sku: "S".into(),
            qty,
        }],
    }
}

fn pay(order: &str, r: &str, outcome: Outcome, amount: i64) -> Op {
    Op::Pay {
        order_id: order.into(),
        payment_ref: r.into(),
        outcome,
        amount_minor: amount,
    }
}

fn cancel(order: &str) -> Op {
    Op::Cancel {
        order_id: order.into(),
    }
}

fn ev(kind: &str, r: Option<&str>) -> LogEvent {
    LogEvent {
        kind: kind.into(),
        payment_ref: r.map(str::to_owned),
    }
}

/// A legitimate history over one SKU with 10 units, with overlapping requests, late and
/// refused payments, an unanswered adjustment that was applied, and an order left
/// PENDING. Order ids are single letters.
struct World {
    setup: Setup,
    records: Vec<Record>,
    seen: Observed,
}

fn clean() -> World {
    use Outcome::Succeeded;
    let a_final = order(
        "A",
        "c1",
        2,
        "CANCELLED",
        Some("r1"),
        &["r1"],
        &["PENDING", "PAID", "CONFIRMED", "CANCELLED"],
    );
    let b_final = order(
        "B",
        "c2",
        3,
        "CANCELLED",
        None,
        &["r2"],
        &["PENDING", "CANCELLED"],
    );
    let c_final = order(
        "C",
        "c3",
        1,
        "SHIPMENT_PREPARED",
        Some("r3"),
        &[],
        &["PENDING", "PAID", "CONFIRMED", "SHIPMENT_PREPARED"],
    );
    let d_final = order("D", "c4", 2, "PENDING", None, &[], &["PENDING"]);
    let pending = |id: &str, c: &str, q: u32| order(id, c, q, "PENDING", None, &[], &["PENDING"]);
    let records = vec![
        answered(1, place("c1", 2), 0, 10, 201, pending("A", "c1", 2)),
        answered(
            2,
            pay("A", "r1", Succeeded, 20),
            20,
            30,
            200,
            order(
                "A",
                "c1",
                2,
                "CONFIRMED",
                Some("r1"),
                &[],
                &["PENDING", "PAID", "CONFIRMED"],
            ),
        ),
        // Overlaps the payment: it went second (cancelled from CONFIRMED, refunded).
        answered(3, cancel("A"), 25, 40, 200, a_final.clone()),
        answered(4, place("c2", 3), 50, 60, 201, pending("B", "c2", 3)),
        answered(
            5,
            cancel("B"),
            70,
            80,
            200,
            order(
                "B",
                "c2",
                3,
                "CANCELLED",
                None,
                &[],
                &["PENDING", "CANCELLED"],
            ),
        ),
        // A late payment: refused and refunded.
        answered(
            6,
            pay("B", "r2", Succeeded, 30),
            90,
            100,
            409,
            problem("order_not_payable", Some(b_final.clone())),
        ),
        answered(7, place("c3", 1), 110, 120, 201, pending("C", "c3", 1)),
        answered(
            8,
            pay("C", "r3", Succeeded, 10),
            130,
            140,
            200,
            order(
                "C",
                "c3",
                1,
                "CONFIRMED",
                Some("r3"),
                &[],
                &["PENDING", "PAID", "CONFIRMED"],
            ),
        ),
        answered(
            9,
            Op::Ship {
                order_id: "C".into(),
                step: Step::Prepared,
            },
            150,
            160,
            200,
            c_final.clone(),
        ),
        answered(
            10,
            cancel("C"),
            170,
            180,
            409,
            problem("invalid_transition", None),
        ),
        answered(
            11,
            Op::Adjust {
                sku: "S".into(),
                delta: 5,
            },
            190,
            200,
            200,
            json!({"sku": "S", "available": 15, "reserved": 0, "sold": 1}),
        ),
        unanswered(
            12,
            Op::Adjust {
                sku: "S".into(),
                delta: -2,
            },
            205,
        ),
        answered(13, place("c4", 2), 210, 220, 201, pending("D", "c4", 2)),
    ];
    let log = LogView {
        orders: BTreeMap::from([
            (
                "A".into(),
                vec![
                    ev("OrderCreated", None),
                    ev("OrderPending", None),
                    ev("PaymentSucceeded", Some("r1")),
                    ev("OrderConfirmed", None),
                    ev("OrderCancelled", None),
                    ev("RefundRequested", Some("r1")),
                ],
            ),
            (
                "B".into(),
                vec![
                    ev("OrderCreated", None),
                    ev("OrderPending", None),
                    ev("OrderCancelled", None),
                    ev("RefundRequested", Some("r2")),
                ],
            ),
            (
                "C".into(),
                vec![
                    ev("OrderCreated", None),
                    ev("OrderPending", None),
                    ev("PaymentSucceeded", Some("r3")),
                    ev("OrderConfirmed", None),
                    ev("ShipmentPrepared", None),
                ],
            ),
            (
                "D".into(),
                vec![ev("OrderCreated", None), ev("OrderPending", None)],
            ),
        ]),
        // The acknowledged +5 and the unanswered -2, which was applied.
        adjustments: BTreeMap::from([("S".into(), 2)]),
    };
    let orders = [a_final, b_final, c_final, d_final]
        .iter()
        .map(|v| {
            let o = OrderFinal::from_json(v).unwrap();
            (o.id.clone(), o)
        })
        .collect();
    World {
        setup: Setup {
            initial_stock: BTreeMap::from([("S".into(), 10)]),
        },
        records,
        seen: Observed {
            // 10 + 5 - 2 = 13 units: C sold 1, D holds 2.
            skus: BTreeMap::from([(
                "S".into(),
                SkuFinal {
                    available: 10,
                    reserved: 2,
                    sold: 1,
                },
            )]),
            orders,
            lost: BTreeSet::new(),
            log: Some(log),
        },
    }
}

impl World {
    fn check(&self) -> Vec<Violation> {
        check(&self.setup, &self.records, &self.seen)
    }

    fn set_order(&mut self, v: Value) {
        let o = OrderFinal::from_json(&v).unwrap();
        self.seen.orders.insert(o.id.clone(), o);
    }
}

fn assert_found(v: &[Violation], check: &str, words: &str) {
    assert!(
        v.iter()
            .any(|x| x.check == check && x.detail.contains(words)),
        "expected a `{check}` violation mentioning {words:?}, got {v:#?}"
    );
}

// ---------------------------------------------------------------------------------------
// The model.

#[test]
fn a_legitimate_history_with_races_and_unanswered_requests_is_accepted() {
    let w = clean();
    assert_eq!(w.check(), vec![]);
}

#[test]
fn an_unanswered_adjustment_may_also_not_have_been_applied() {
    let mut w = clean();
    w.seen.skus.get_mut("S").unwrap().available += 2;
    w.seen
        .log
        .as_mut()
        .unwrap()
        .adjustments
        .insert("S".into(), 1);
    assert_eq!(w.check(), vec![]);
}

#[test]
fn a_unit_sold_twice_is_found() {
    let mut w = clean();
    // Order E is confirmed too, but the SKU counted one sale only: the unit C bought was
    // sold again.
    w.records.push(answered(
        14,
        place("c5", 1),
        230,
        240,
        201,
        order("E", "c5", 1, "PENDING", None, &[], &["PENDING"]),
    ));
    let e = order(
        "E",
        "c5",
        1,
        "CONFIRMED",
        Some("r5"),
        &[],
        &["PENDING", "PAID", "CONFIRMED"],
    );
    w.records.push(answered(
        15,
        pay("E", "r5", Outcome::Succeeded, 10),
        250,
        260,
        200,
        e.clone(),
    ));
    w.set_order(e);
    let log = w.seen.log.as_mut().unwrap();
    log.orders.insert(
        "E".into(),
        vec![
            ev("OrderCreated", None),
            ev("OrderPending", None),
            ev("PaymentSucceeded", Some("r5")),
            ev("OrderConfirmed", None),
        ],
    );
    let v = w.check();
    assert_found(&v, "holds", "sold twice");
}

#[test]
fn an_adjustment_applied_twice_is_found() {
    let mut w = clean();
    w.seen.skus.get_mut("S").unwrap().available += 5;
    w.seen
        .log
        .as_mut()
        .unwrap()
        .adjustments
        .insert("S".into(), 3);
    let v = w.check();
    assert_found(&v, "stock", "available 15");
    assert_found(&v, "stock", "3 StockAdjusted events");
}

#[test]
fn a_payment_confirmed_after_a_cancel_was_answered_is_found() {
    let mut w = clean();
    // B was answered CANCELLED (request 5); a payment sent after that is answered
    // CONFIRMED, and the order stays CANCELLED without a refund for it.
    w.records[5] = answered(
        6,
        pay("B", "r2", Outcome::Succeeded, 30),
        90,
        100,
        200,
        order(
            "B",
            "c2",
            3,
            "CONFIRMED",
            Some("r2"),
            &[],
            &["PENDING", "PAID", "CONFIRMED"],
        ),
    );
    w.set_order(order(
        "B",
        "c2",
        3,
        "CANCELLED",
        Some("r2"),
        &[],
        &["PENDING", "CANCELLED"],
    ));
    let log = w.seen.log.as_mut().unwrap();
    log.orders.insert(
        "B".into(),
        vec![
            ev("OrderCreated", None),
            ev("OrderPending", None),
            ev("OrderCancelled", None),
        ],
    );
    let v = w.check();
    assert_found(&v, "history", "never shows that");
    assert_found(&v, "money", "money kept silently");
}

#[test]
fn a_confirmation_ordered_before_a_cancel_answered_earlier_is_found() {
    let mut w = clean();
    // The history has CONFIRMED before CANCELLED, but the cancel's answer (CANCELLED)
    // arrived before the payment was even sent.
    w.records[5] = answered(
        6,
        pay("B", "r2", Outcome::Succeeded, 30),
        90,
        100,
        200,
        order(
            "B",
            "c2",
            3,
            "CONFIRMED",
            Some("r2"),
            &[],
            &["PENDING", "PAID", "CONFIRMED"],
        ),
    );
    w.set_order(order(
        "B",
        "c2",
        3,
        "CANCELLED",
        Some("r2"),
        &["r2"],
        &["PENDING", "PAID", "CONFIRMED", "CANCELLED"],
    ));
    let v = w.check();
    assert_found(&v, "history", "was received before");
}

#[test]
fn a_succeeded_payment_with_neither_confirmation_nor_refund_is_found() {
    use Outcome::{Failed, Succeeded};
    let mut w = clean();
    // B: a failed payment cancels it; the same ref then reported succeeded is answered as
    // a replay of the failure, and nothing is refunded.
    w.records.truncate(4);
    let cancelled = order(
        "B",
        "c2",
        3,
        "CANCELLED",
        Some("r2"),
        &[],
        &["PENDING", "CANCELLED"],
    );
    w.records.push(answered(
        5,
        pay("B", "r2", Failed, 30),
        70,
        80,
        200,
        cancelled.clone(),
    ));
    w.records.push(answered(
        6,
        pay("B", "r2", Succeeded, 30),
        90,
        100,
        200,
        cancelled.clone(),
    ));
    w.set_order(cancelled);
    w.seen.orders.retain(|k, _| k != "C" && k != "D");
    let log = w.seen.log.as_mut().unwrap();
    log.orders.retain(|k, _| k != "C" && k != "D");
    log.orders.insert(
        "B".into(),
        vec![
            ev("OrderCreated", None),
            ev("OrderPending", None),
            ev("PaymentFailed", Some("r2")),
            ev("OrderCancelled", None),
        ],
    );
    log.adjustments.clear();
    w.seen.skus.insert(
        "S".into(),
        SkuFinal {
            available: 10,
            reserved: 0,
            sold: 0,
        },
    );
    let v = w.check();
    assert_found(&v, "money", "money kept silently");
    assert_eq!(v.len(), 1, "{v:#?}");
}

#[test]
fn a_payment_succeeded_in_the_log_without_confirmation_or_refund_is_found() {
    let mut w = clean();
    let log = w.seen.log.as_mut().unwrap();
    log.orders
        .get_mut("D")
        .unwrap()
        .push(ev("PaymentSucceeded", Some("r9")));
    let v = w.check();
    assert_found(&v, "money", "PaymentSucceeded r9");
}

#[test]
fn a_replay_that_differs_from_the_first_answer_is_found() {
    let mut w = clean();
    let first = w.records[0].answer.clone().unwrap();
    w.records[0].replays.push(Answer {
        replayed: true,
        ..first.clone()
    });
    assert_eq!(w.check(), vec![]);
    w.records[0].replays.push(Answer {
        status: 201,
        body: first.body.replace("PENDING", "CANCELLED"),
        replayed: true,
    });
    let second = w.records[1].answer.clone().unwrap();
    w.records[1].replays.push(Answer {
        replayed: false,
        ..second
    });
    let v = w.check();
    assert_found(&v, "replay", "instead of");
    assert_found(&v, "replay", "Idempotent-Replayed");
}

#[test]
fn an_order_placed_twice_under_one_key_is_found() {
    let mut w = clean();
    // A second order for c4's request (key-13), PENDING and holding its units.
    w.set_order(order("F", "c4", 2, "PENDING", None, &[], &["PENDING"]));
    w.seen.log.as_mut().unwrap().orders.insert(
        "F".into(),
        vec![ev("OrderCreated", None), ev("OrderPending", None)],
    );
    let s = w.seen.skus.get_mut("S").unwrap();
    s.available -= 2;
    s.reserved += 2;
    let v = w.check();
    assert_found(&v, "orders", "key-13");
    // The same order may belong to a placement that never got its answer.
    w.records.push(unanswered(14, place("c4", 2), 300));
    assert_eq!(w.check(), vec![]);
}

#[test]
fn a_cancel_refused_while_the_order_was_pending_is_found() {
    let mut w = clean();
    // D is PENDING from its placement to the end: a cancel cannot be refused.
    w.records.push(answered(
        14,
        cancel("D"),
        300,
        310,
        409,
        problem("invalid_transition", None),
    ));
    let v = w.check();
    assert_found(&v, "history", "cancel D");
}

#[test]
fn an_acknowledged_order_that_is_gone_is_found() {
    let mut w = clean();
    w.seen.orders.remove("D");
    w.seen.log.as_mut().unwrap().orders.remove("D");
    w.seen.lost.insert("D".into());
    let v = w.check();
    assert_found(&v, "orders", "no longer knows it");
}

// ---------------------------------------------------------------------------------------
// End to end.

#[test]
fn torture_with_kills_finds_nothing_and_does_real_work() {
    let seed: u64 = match std::env::var("TORTURE_SEED") {
        Ok(s) => s.parse().expect("TORTURE_SEED is a u64"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    };
    eprintln!("torture seed {seed} (TORTURE_SEED={seed} replays the mix)");
    let out = Command::new(BIN)
        .args(["torture", "--spawn", "--json", "--duration", "20s"])
        .args(["--kill-every", "1s..3s", "--drain", "15s"])
        .args(["--seed", &seed.to_string()])
        .env_remove("ORDO_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .expect("run ordo torture");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON summary on stdout: {stdout}"));
    let n = |k: &str| summary[k].as_u64().unwrap_or(0);
    let violations: Vec<&str> = summary["violations"]
        .as_array()
        .map(|v| v.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert!(
        out.status.success() && summary["ok"] == true,
        "seed {seed}: ordo torture failed ({}), {} violations; the first:\n{}",
        out.status,
        violations.len(),
        violations
            .iter()
            .take(12)
            .map(|v| format!("  {v}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(n("kills") >= 2, "{summary}");
    assert!(n("acked") >= 200, "{summary}");
    assert!(n("confirmed") > 0, "{summary}");
    assert!(n("cancelled") > 0, "{summary}");
}
