//! One command, one atomic durable step (regressions): racing commands on one order,
//! payment refs and their refunds, keyed commands and their stored answers, racing
//! placements under one id.

use std::time::Duration;

use futures::executor::block_on;
use ordo_engine::domain::order::{PaymentOutcome, ShipmentStep, Status};
use ordo_engine::domain::DomainError;
use ordo_engine::{Durability, Engine, EngineError};

use crate::helpers::{config, eventually, idem, order, shutdown_and_verify, sku, verify_dir};

/// A cancel racing a payment on the last unit: the actor that cancelled leaves memory only
/// once its `OrderCancelled` is durable, so the payment, queued behind it, meets the
/// cancelled order and is refunded — never a second sale of the unit. The journal is held
/// so the "not yet durable" window is wide open. (Before the fix: the actor stopped at
/// once, the payment activated a new actor from the stale log, and the order was both
/// CANCELLED and CONFIRMED while the unit went back on sale.)
#[test]
fn a_payment_racing_a_cancel_never_sells_the_unit_twice() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), Durability::Sync)).unwrap();
    block_on(engine.upsert_sku(sku("LAST", 1, 500), None)).unwrap();
    let a = block_on(engine.place_order(order("ann", &[("LAST", 1)]), None)).unwrap();

    let hold = engine.journal().hold_writes_for_test();
    let cancelled_before = engine.metrics().orders_cancelled.get();
    let e1 = engine.clone();
    let id = a.id.clone();
    let cancel = std::thread::spawn(move || block_on(e1.cancel(&id, "changed mind", None)));
    // The cancel is decided (in memory, not durable: the journal is held).
    assert!(eventually(
        || engine.metrics().orders_cancelled.get() > cancelled_before
    ));
    let e2 = engine.clone();
    let id = a.id.clone();
    let total = a.total_minor;
    let pay = std::thread::spawn(move || {
        block_on(e2.pay(&id, "psp-1", PaymentOutcome::Succeeded, total, None))
    });
    // Give the payment every chance to overtake the cancel's durability.
    std::thread::sleep(Duration::from_millis(200));
    drop(hold);

    let cancelled = cancel.join().unwrap().unwrap();
    assert_eq!(cancelled.status, Status::Cancelled);
    match pay.join().unwrap() {
        Err(EngineError::NotPayable { order }) => {
            assert_eq!(order.status, Status::Cancelled);
            assert_eq!(order.refunds_requested, vec!["psp-1".to_string()]);
        }
        other => panic!("a payment after the cancel must be refused and refunded: {other:?}"),
    }
    // The unit is back; a second buyer gets it, and it is sold once.
    let b = block_on(engine.place_order(order("bob", &[("LAST", 1)]), None)).unwrap();
    let b = block_on(engine.pay(
        &b.id,
        "psp-2",
        PaymentOutcome::Succeeded,
        b.total_minor,
        None,
    ))
    .unwrap();
    assert_eq!(b.status, Status::Confirmed);
    let s = block_on(engine.get_sku("LAST")).unwrap();
    assert_eq!((s.available, s.reserved, s.sold), (0, 0, 1));
    let events = engine
        .read_events(0, 100, Some(&format!("order/{}", a.id)))
        .unwrap();
    let types: Vec<_> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "OrderCreated",
            "OrderPending",
            "OrderCancelled",
            "RefundRequested"
        ]
    );
    shutdown_and_verify(engine, dir.path());
}

/// Two cancels racing while the first is not yet durable: one is answered CANCELLED, the
/// other 409 invalid_transition (before the fix: a 500 from a version conflict).
#[test]
fn two_racing_cancels_give_one_cancellation_and_one_invalid_transition() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), Durability::Sync)).unwrap();
    block_on(engine.upsert_sku(sku("PAIR", 2, 100), None)).unwrap();
    let a = block_on(engine.place_order(order("ann", &[("PAIR", 1)]), None)).unwrap();
    let hold = engine.journal().hold_writes_for_test();
    let threads: Vec<_> = (0..2)
        .map(|i| {
            let e = engine.clone();
            let id = a.id.clone();
            std::thread::spawn(move || block_on(e.cancel(&id, &format!("r{i}"), None)))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    drop(hold);
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let refused = results
        .iter()
        .filter(|r| {
            matches!(
                r,
                Err(EngineError::Domain(DomainError::InvalidTransition { .. }))
            )
        })
        .count();
    assert_eq!((ok, refused), (1, 1), "{results:?}");
    assert!(engine.is_healthy());
    shutdown_and_verify(engine, dir.path());
}

/// SPEC §1 Payments: a success reusing a failed payment's ref is a new attempt, not a
/// replay; the order is cancelled, so it is refused and refunded (before the fix: 200
/// CANCELLED and the money kept).
#[test]
fn a_success_reusing_a_failed_payments_ref_is_refunded() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), Durability::Sync)).unwrap();
    block_on(engine.upsert_sku(sku("REF", 3, 250), None)).unwrap();
    let o = block_on(engine.place_order(order("ann", &[("REF", 2)]), None)).unwrap();
    let failed =
        block_on(engine.pay(&o.id, "P", PaymentOutcome::Failed, o.total_minor, None)).unwrap();
    assert_eq!(failed.status, Status::Cancelled);
    // The same failed payment again is a replay: the order as it is, nothing recorded.
    let again =
        block_on(engine.pay(&o.id, "P", PaymentOutcome::Failed, o.total_minor, None)).unwrap();
    assert_eq!(
        (again.status, again.version),
        (Status::Cancelled, failed.version)
    );
    match block_on(engine.pay(&o.id, "P", PaymentOutcome::Succeeded, o.total_minor, None)) {
        Err(EngineError::NotPayable { order }) => {
            assert_eq!(order.refunds_requested, vec!["P".to_string()])
        }
        other => panic!("expected a refused, refunded payment: {other:?}"),
    }
    // Its replay is refused again and refunds nothing twice.
    assert!(matches!(
        block_on(engine.pay(&o.id, "P", PaymentOutcome::Succeeded, o.total_minor, None)),
        Err(EngineError::NotPayable { .. })
    ));
    let types: Vec<String> = engine
        .read_events(0, 100, Some(&format!("order/{}", o.id)))
        .unwrap()
        .into_iter()
        .map(|e| e.event_type)
        .collect();
    assert_eq!(
        types,
        [
            "OrderCreated",
            "OrderPending",
            "PaymentFailed",
            "OrderCancelled",
            "RefundRequested"
        ]
    );
    let s = block_on(engine.get_sku("REF")).unwrap();
    assert_eq!((s.available, s.reserved, s.sold), (3, 0, 0));
    shutdown_and_verify(engine, dir.path());
}

/// A keyed command's events and its answer are one append: the key is stamped on the
/// first event, the answer is stored, and a refusal stores its answer too (nothing else).
/// `ordo verify` sees a key applied twice.
#[test]
fn a_keyed_command_stores_its_answer_with_its_events_and_verify_sees_a_key_applied_twice() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), Durability::Sync)).unwrap();
    block_on(engine.upsert_sku(sku("K", 5, 100), None)).unwrap();
    let v = block_on(engine.adjust_stock_with("K", 3, "delivery", None, Some(idem("s\nadj-1"))))
        .unwrap();
    assert_eq!(v.available, 8);
    let rec = engine.idempotency_record("s\nadj-1").unwrap().unwrap();
    assert!(String::from_utf8_lossy(&rec.response).contains("available: 8"));
    let events = engine.read_events(0, 100, Some("sku/K")).unwrap();
    let last = events.last().unwrap();
    assert_eq!(
        (last.event_type.as_str(), last.idempotency_key.as_deref()),
        ("StockAdjusted", Some("s\nadj-1"))
    );
    // A refusal keeps its answer and changes nothing.
    let e = block_on(engine.adjust_stock_with("K", -100, "shrink", None, Some(idem("s\nadj-2"))))
        .unwrap_err();
    assert!(matches!(
        e,
        EngineError::Domain(DomainError::InsufficientStock { .. })
    ));
    let rec = engine.idempotency_record("s\nadj-2").unwrap().unwrap();
    assert!(String::from_utf8_lossy(&rec.response).contains("InsufficientStock"));
    assert_eq!(
        engine.read_events(0, 100, Some("sku/K")).unwrap().len(),
        events.len()
    );
    // An unknown order is refused before any actor: stored all the same.
    let e = block_on(engine.cancel_with(
        &ordo_engine::Engine::new_order_id(),
        "x",
        None,
        Some(idem("s\ncancel-1")),
    ))
    .unwrap_err();
    assert!(matches!(e, EngineError::OrderNotFound { .. }));
    assert!(engine.idempotency_record("s\ncancel-1").unwrap().is_some());
    shutdown_and_verify(engine, dir.path());

    // The same key applied again while its answer is kept: verify says so.
    let engine = Engine::open(config(dir.path(), Durability::Sync)).unwrap();
    block_on(engine.adjust_stock_with("K", 1, "again", None, Some(idem("s\nadj-1")))).unwrap();
    block_on(engine.shutdown()).unwrap();
    drop(engine);
    let report = verify_dir(dir.path());
    assert!(
        report
            .violations
            .iter()
            .any(|v| v.contains("applied again")),
        "{:?}",
        report.violations
    );
}

/// Payments, cancels and shipments racing on one order, in every pairing, end as if
/// applied one at a time: each answer is one the order could give in some serial order,
/// a payment that lost to a cancel is refunded, and the log verifies.
#[test]
fn racing_payments_cancels_and_shipments_end_as_if_applied_one_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), Durability::Sync);
    cfg.order_idle_timeout = Duration::from_millis(1);
    let engine = Engine::open(cfg).unwrap();
    block_on(engine.upsert_sku(sku("RACE", 1_000, 100), None)).unwrap();
    let race =
        |a: Box<dyn FnOnce() -> Result<ordo_engine::OrderView, EngineError> + Send>,
         b: Box<dyn FnOnce() -> Result<ordo_engine::OrderView, EngineError> + Send>| {
            let ta = std::thread::spawn(a);
            let tb = std::thread::spawn(b);
            (ta.join().unwrap(), tb.join().unwrap())
        };
    for i in 0..25 {
        // Pay vs cancel on a PENDING order.
        let o =
            block_on(engine.place_order(order(&format!("c{i}"), &[("RACE", 1)]), None)).unwrap();
        let (e1, e2, id1, id2, t) = (
            engine.clone(),
            engine.clone(),
            o.id.clone(),
            o.id.clone(),
            o.total_minor,
        );
        let (pay, cancel) = race(
            Box::new(move || {
                block_on(e1.pay(&id1, &format!("p{i}"), PaymentOutcome::Succeeded, t, None))
            }),
            Box::new(move || block_on(e2.cancel(&id2, "race", None))),
        );
        assert_eq!(cancel.unwrap().status, Status::Cancelled);
        let end = block_on(engine.get_order(&o.id)).unwrap();
        assert_eq!(end.status, Status::Cancelled);
        match pay {
            Ok(v) => assert_eq!(
                v.status,
                Status::Confirmed,
                "pay won, then the cancel refunded it"
            ),
            Err(EngineError::NotPayable { .. }) => {}
            Err(e) => panic!("pay vs cancel: {e}"),
        }
        assert_eq!(
            end.refunds_requested,
            vec![format!("p{i}")],
            "paid money is refunded either way"
        );

        // Two payments under different refs.
        let o =
            block_on(engine.place_order(order(&format!("d{i}"), &[("RACE", 1)]), None)).unwrap();
        let (e1, e2, id1, id2, t) = (
            engine.clone(),
            engine.clone(),
            o.id.clone(),
            o.id.clone(),
            o.total_minor,
        );
        let (a, b) = race(
            Box::new(move || block_on(e1.pay(&id1, "a", PaymentOutcome::Succeeded, t, None))),
            Box::new(move || block_on(e2.pay(&id2, "b", PaymentOutcome::Succeeded, t, None))),
        );
        let confirmed = [&a, &b]
            .iter()
            .filter(|r| matches!(r, Ok(v) if v.status == Status::Confirmed))
            .count();
        let refused = [&a, &b]
            .iter()
            .filter(|r| matches!(r, Err(EngineError::NotPayable { .. })))
            .count();
        assert_eq!((confirmed, refused), (1, 1), "{a:?} {b:?}");
        let end = block_on(engine.get_order(&o.id)).unwrap();
        assert_eq!(
            end.refunds_requested.len(),
            1,
            "the losing payment is refunded"
        );

        // Cancel vs shipment on a CONFIRMED order.
        let e1 = engine.clone();
        let id = o.id.clone();
        let (e2, id2) = (engine.clone(), o.id.clone());
        let (cancel, ship) = race(
            Box::new(move || block_on(e1.cancel(&id, "race", None))),
            Box::new(move || block_on(e2.ship(&id2, ShipmentStep::Prepared, None))),
        );
        let wins = [cancel.is_ok(), ship.is_ok()];
        assert_eq!(
            wins.iter().filter(|w| **w).count(),
            1,
            "{cancel:?} {ship:?}"
        );
        for r in [&cancel, &ship] {
            if let Err(e) = r {
                assert!(
                    matches!(
                        e,
                        EngineError::Domain(DomainError::InvalidTransition { .. })
                    ),
                    "{e}"
                );
            }
        }
    }
    assert!(engine.is_healthy());
    let s = block_on(engine.get_sku("RACE")).unwrap();
    assert_eq!(s.available + s.reserved + s.sold, 1_000);
    shutdown_and_verify(engine, dir.path());
}

/// A second success under the paying ref (another amount: a new attempt, refused and
/// refunded) does not swallow the refund of the order's own payment when it is
/// cancelled afterwards.
#[test]
fn a_late_refund_under_the_paying_ref_does_not_swallow_the_cancellation_refund() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), Durability::Sync)).unwrap();
    block_on(engine.upsert_sku(sku("R", 10, 1000), None)).unwrap();
    let o = block_on(engine.place_order(order("a", &[("R", 1)]), None)).unwrap();
    let paid =
        block_on(engine.pay(&o.id, "A", PaymentOutcome::Succeeded, o.total_minor, None)).unwrap();
    assert_eq!(paid.status, Status::Confirmed);
    assert!(matches!(
        block_on(engine.pay(&o.id, "A", PaymentOutcome::Succeeded, 1, None)),
        Err(EngineError::NotPayable { .. })
    ));
    let c = block_on(engine.cancel(&o.id, "customer", None)).unwrap();
    assert_eq!(c.status, Status::Cancelled);
    let refunds: Vec<(String, String)> = engine
        .read_events(0, 100, Some(&format!("order/{}", o.id)))
        .unwrap()
        .into_iter()
        .filter(|e| e.event_type == "RefundRequested")
        .map(|e| {
            let ev = ordo_engine::domain::events::decode_order(&e.event_type, e.schema, &e.payload)
                .unwrap();
            match ev {
                ordo_engine::domain::OrderEvent::RefundRequested(r) => {
                    (format!("{}:{}", r.payment_ref, r.amount_minor), r.reason)
                }
                other => panic!("{other:?}"),
            }
        })
        .collect();
    assert_eq!(
        refunds,
        [
            ("A:1".to_string(), "order_not_payable".to_string()),
            ("A:1000".to_string(), "cancelled".to_string())
        ]
    );
    let s = block_on(engine.get_sku("R")).unwrap();
    assert_eq!((s.available, s.sold), (10, 0));
    shutdown_and_verify(engine, dir.path());
}

/// Two placements racing under one caller-chosen id: one is placed, the other refused as
/// taken, and the engine keeps running (before the fix the loser's append was a version
/// conflict, which stops the journal).
#[test]
fn racing_placements_under_one_chosen_id_place_one_order_and_keep_the_engine_up() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), Durability::Sync)).unwrap();
    block_on(engine.upsert_sku(sku("ID", 1000, 10), None)).unwrap();
    for _ in 0..20 {
        let id = Engine::new_order_id();
        let threads: Vec<_> = (0..2)
            .map(|i| {
                let (e, id) = (engine.clone(), id.clone());
                std::thread::spawn(move || {
                    block_on(e.place_order_as(id, order(&format!("c{i}"), &[("ID", 1)]), None))
                })
            })
            .collect();
        let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            1,
            "{results:?}"
        );
        assert!(engine.is_healthy(), "{:?}", engine.stopped_reason());
    }
    let s = block_on(engine.get_sku("ID")).unwrap();
    assert_eq!((s.available, s.reserved), (980, 20));
    block_on(engine.shutdown()).unwrap();
}
