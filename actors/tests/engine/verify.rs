//! `ordo verify` on a log written behind the engine's back.

use futures::executor::block_on;
use ordo_engine::domain::order::Status;
use ordo_engine::{Durability, Engine};

use crate::helpers::{append_to_order_behind_the_engine, config, order, sku};

/// `ordo verify` catches money kept silently: a payment that succeeded on an order that
/// was then cancelled with no refund recorded (written behind the engine's back).
#[test]
fn verify_reports_a_succeeded_payment_neither_kept_nor_refunded() {
    use ordo_engine::domain::events as ev;
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), Durability::Sync)).unwrap();
    block_on(engine.upsert_sku(sku("M", 2, 100), None)).unwrap();
    let o = block_on(engine.place_order(order("ann", &[("M", 1)]), None)).unwrap();
    block_on(engine.shutdown()).unwrap();
    drop(engine);

    let events = [
        ev::OrderEvent::PaymentSucceeded(ev::PaymentSucceeded {
            payment_ref: "kept".into(),
            amount_minor: o.total_minor,
        }),
        ev::OrderEvent::OrderCancelled(ev::OrderCancelled {
            reason: "sneaky".into(),
            from: Status::Pending,
        }),
    ];
    let store = append_to_order_behind_the_engine(dir.path(), &o.id, &events);
    let report = ordo_engine::verify(&store).unwrap();
    assert!(
        report.violations.iter().any(|v| v.contains("payment kept")
            && v.contains("neither paid a confirmed order nor was refunded")),
        "{:?}",
        report.violations
    );
}
