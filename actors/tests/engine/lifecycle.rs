//! One order through its life: payment, shipment, cancellation, refusals, and the
//! deadline that expires it when it is never paid.

use std::time::Duration;

use futures::executor::block_on;
use ordo_engine::domain::order::{PaymentOutcome, ShipmentStep, Status};
use ordo_engine::domain::DomainError;
use ordo_engine::{Durability, Engine, EngineError};

use crate::helpers::{config, eventually, order, sku, verify_dir};

#[test]
fn an_order_lives_through_payment_shipment_and_cancellation() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), Durability::Sync)).unwrap();
    block_on(async {
        engine.upsert_sku(sku("TEA", 10, 450), None).await.unwrap();
        engine.upsert_sku(sku("MUG", 5, 1_200), None).await.unwrap();
        let o = engine
            .place_order(order("alice", &[("TEA", 2), ("MUG", 1)]), None)
            .await
            .unwrap();
        assert_eq!(o.total_minor, 2 * 450 + 1_200);
        assert_eq!(o.currency, "EUR");

        // A wrong amount is refused and changes nothing.
        let e = engine
            .pay(&o.id, "pay-1", PaymentOutcome::Succeeded, 1, None)
            .await
            .unwrap_err();
        assert!(
            matches!(e, EngineError::Domain(DomainError::AmountMismatch { .. })),
            "{e}"
        );
        assert_eq!(
            engine.get_order(&o.id).await.unwrap().status,
            Status::Pending
        );

        let paid = engine
            .pay(
                &o.id,
                "pay-1",
                PaymentOutcome::Succeeded,
                o.total_minor,
                None,
            )
            .await
            .unwrap();
        assert_eq!(paid.status, Status::Confirmed);
        let tea = engine.get_sku("TEA").await.unwrap();
        assert_eq!((tea.available, tea.reserved, tea.sold), (8, 0, 2));
        // The same payment again is answered, not applied twice.
        let again = engine
            .pay(
                &o.id,
                "pay-1",
                PaymentOutcome::Succeeded,
                o.total_minor,
                None,
            )
            .await
            .unwrap();
        assert_eq!(again.version, paid.version);
        // Another payment for a paid order is refused and a refund recorded.
        let e = engine
            .pay(
                &o.id,
                "pay-2",
                PaymentOutcome::Succeeded,
                o.total_minor,
                None,
            )
            .await
            .unwrap_err();
        match e {
            EngineError::NotPayable { order } => {
                assert!(order.refunds_requested.contains(&"pay-2".to_string()))
            }
            other => panic!("unexpected {other}"),
        }

        let e = engine
            .ship(&o.id, ShipmentStep::Processed, None)
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                EngineError::Domain(DomainError::InvalidTransition { .. })
            ),
            "{e}"
        );
        let prepared = engine
            .ship(&o.id, ShipmentStep::Prepared, None)
            .await
            .unwrap();
        assert_eq!(prepared.status, Status::ShipmentPrepared);
        let e = engine
            .cancel(&o.id, "changed mind", None)
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                EngineError::Domain(DomainError::InvalidTransition { .. })
            ),
            "{e}"
        );
        engine
            .ship(&o.id, ShipmentStep::Processed, None)
            .await
            .unwrap();
        let done = engine
            .ship(&o.id, ShipmentStep::Fulfilled, None)
            .await
            .unwrap();
        assert_eq!(done.status, Status::Fulfilled);
        let statuses: Vec<_> = done.history.iter().map(|h| h.status).collect();
        assert_eq!(
            statuses,
            vec![
                Status::Pending,
                Status::Paid,
                Status::Confirmed,
                Status::ShipmentPrepared,
                Status::ShipmentProcessed,
                Status::Fulfilled
            ]
        );

        // Cancelling a confirmed order restores its units and requests a refund.
        let o2 = engine
            .place_order(order("bob", &[("MUG", 2)]), None)
            .await
            .unwrap();
        engine
            .pay(
                &o2.id,
                "pay-3",
                PaymentOutcome::Succeeded,
                o2.total_minor,
                None,
            )
            .await
            .unwrap();
        let c = engine.cancel(&o2.id, "customer", None).await.unwrap();
        assert_eq!(c.status, Status::Cancelled);
        assert_eq!(c.refunds_requested, vec!["pay-3".to_string()]);
        let mug = engine.get_sku("MUG").await.unwrap();
        assert_eq!((mug.available, mug.reserved, mug.sold), (4, 0, 1));

        // A failed payment cancels the order and releases its units.
        let o3 = engine
            .place_order(order("carol", &[("TEA", 3)]), None)
            .await
            .unwrap();
        let f = engine
            .pay(
                &o3.id,
                "pay-4",
                PaymentOutcome::Failed,
                o3.total_minor,
                None,
            )
            .await
            .unwrap();
        assert_eq!(
            (f.status, f.cancel_reason.as_deref()),
            (Status::Cancelled, Some("payment_failed"))
        );
        assert_eq!(engine.get_sku("TEA").await.unwrap().reserved, 0);

        // Cancelling a PENDING order releases; cancelling twice is refused.
        let o4 = engine
            .place_order(order("dave", &[("TEA", 1)]), None)
            .await
            .unwrap();
        engine.cancel(&o4.id, "", None).await.unwrap();
        let e = engine.cancel(&o4.id, "", None).await.unwrap_err();
        assert!(
            matches!(
                e,
                EngineError::Domain(DomainError::InvalidTransition { .. })
            ),
            "{e}"
        );
        let tea = engine.get_sku("TEA").await.unwrap();
        assert_eq!((tea.available, tea.reserved, tea.sold), (8, 0, 2));

        // Compensation: the second line fails, the first is released, the order is FAILED.
        let e = engine
            .place_order(order("erin", &[("TEA", 1), ("MUG", 50)]), None)
            .await
            .unwrap_err();
        match e {
            EngineError::OrderFailed {
                order,
                reason: DomainError::OutOfStock { sku, .. },
            } => {
                assert_eq!(sku, "MUG");
                assert_eq!(order.failed_sku.as_deref(), Some("MUG"));
            }
            other => panic!("unexpected {other}"),
        }
        assert_eq!(engine.get_sku("TEA").await.unwrap().available, 8);

        // Bad input changes nothing.
        let e = engine
            .place_order(order("x", &[("NOPE", 1)]), None)
            .await
            .unwrap_err();
        assert!(
            matches!(e, EngineError::Domain(DomainError::UnknownSku(_))),
            "{e}"
        );
        let e = engine
            .place_order(order("x", &[("TEA", 1), ("TEA", 1)]), None)
            .await
            .unwrap_err();
        assert!(
            matches!(e, EngineError::Domain(DomainError::Invalid(_))),
            "{e}"
        );
        let e = engine
            .place_order(order("x", &[("TEA", 0)]), None)
            .await
            .unwrap_err();
        assert!(
            matches!(e, EngineError::Domain(DomainError::Invalid(_))),
            "{e}"
        );
        let e = engine
            .adjust_stock("TEA", -100, "shrinkage", None)
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                EngineError::Domain(DomainError::InsufficientStock { .. })
            ),
            "{e}"
        );
        assert!(matches!(
            engine.get_order("01ARZ3NDEKTSV4RRFFQ69G5FAV").await,
            Err(EngineError::OrderNotFound { .. })
        ));
        engine.shutdown().await.unwrap();
    });
    drop(engine);
    let report = verify_dir(dir.path());
    assert!(report.violations.is_empty(), "{:?}", report.violations);
}

#[test]
fn an_unpaid_order_expires_releases_its_stock_and_refuses_late_payment() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), Durability::Sync);
    cfg.reservation_ttl = Duration::from_millis(300);
    let engine = Engine::open(cfg).unwrap();
    block_on(engine.upsert_sku(sku("FLASH", 5, 100), None)).unwrap();
    let o = block_on(engine.place_order(order("u1", &[("FLASH", 3)]), None)).unwrap();
    assert!(eventually(|| block_on(engine.get_order(&o.id))
        .unwrap()
        .status
        == Status::Cancelled));
    let o = block_on(engine.get_order(&o.id)).unwrap();
    assert_eq!(o.cancel_reason.as_deref(), Some("expired"));
    assert!(eventually(|| block_on(engine.get_sku("FLASH"))
        .unwrap()
        .available
        == 5));
    let e = block_on(engine.pay(
        &o.id,
        "late-1",
        PaymentOutcome::Succeeded,
        o.total_minor,
        None,
    ))
    .unwrap_err();
    match e {
        EngineError::NotPayable { order } => {
            assert_eq!(order.refunds_requested, vec!["late-1".to_string()])
        }
        other => panic!("unexpected {other}"),
    }
    let events = engine
        .read_events(0, 1_000, Some(&format!("order/{}", o.id)))
        .unwrap();
    let types: Vec<_> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        vec![
            "OrderCreated",
            "OrderPending",
            "OrderCancelled",
            "RefundRequested"
        ]
    );
    block_on(engine.shutdown()).unwrap();
}
