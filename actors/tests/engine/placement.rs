//! Placing orders: the stock race, multi-SKU reservations and their compensation under
//! contention, per-customer limits and currencies.

use std::collections::HashMap;

use futures::executor::block_on;
use futures::future::join_all;
use ordo_engine::domain::order::Status;
use ordo_engine::domain::DomainError;
use ordo_engine::{Durability, Engine, EngineError};

use crate::helpers::{config, order, shutdown_and_verify, sku};

#[test]
fn ten_thousand_buyers_race_for_a_thousand_units_and_exactly_a_thousand_win() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), Durability::Sync)).unwrap();
    block_on(engine.upsert_sku(sku("HOT", 1_000, 2_500), None)).unwrap();
    let results =
        block_on(join_all((0..10_000).map(|i| {
            engine.place_order(order(&format!("c{i}"), &[("HOT", 1)]), None)
        })));
    let mut pending = 0;
    let mut sold_out = 0;
    for r in results {
        match r {
            Ok(o) => {
                assert_eq!(o.status, Status::Pending);
                assert_eq!(o.total_minor, 2_500);
                pending += 1;
            }
            Err(EngineError::OrderFailed {
                order,
                reason: DomainError::OutOfStock { .. },
            }) => {
                assert_eq!(order.status, Status::Failed);
                sold_out += 1;
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!((pending, sold_out), (1_000, 9_000));
    let s = block_on(engine.get_sku("HOT")).unwrap();
    assert_eq!((s.available, s.reserved, s.sold), (0, 1_000, 0));
    let report = shutdown_and_verify(engine, dir.path());
    assert_eq!(report.orders, 10_000);
}

#[test]
fn multi_sku_orders_racing_on_overlapping_skus_leak_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), Durability::Buffered)).unwrap();
    for code in ["A", "B", "C"] {
        block_on(engine.upsert_sku(sku(code, 300, 100), None)).unwrap();
    }
    let shapes: [&[(&str, u32)]; 4] = [
        &[("A", 1), ("B", 2)],
        &[("B", 1), ("C", 1), ("A", 1)],
        &[("C", 3)],
        &[("A", 2), ("C", 1)],
    ];
    let results =
        block_on(join_all((0..2_000).map(|i| {
            engine.place_order(order(&format!("c{i}"), shapes[i % 4]), None)
        })));
    let mut want: HashMap<&str, i64> = HashMap::new();
    for (i, r) in results.iter().enumerate() {
        match r {
            Ok(_) => {
                for (s, q) in shapes[i % 4] {
                    *want.entry(s).or_default() += i64::from(*q);
                }
            }
            Err(EngineError::OrderFailed { .. }) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    for code in ["A", "B", "C"] {
        let s = block_on(engine.get_sku(code)).unwrap();
        assert_eq!(
            s.reserved,
            want.get(code).copied().unwrap_or(0),
            "sku {code}"
        );
        assert_eq!(s.available + s.reserved + s.sold, 300, "sku {code}");
        assert!(s.available >= 0);
    }
    shutdown_and_verify(engine, dir.path());
}

#[test]
fn per_customer_limits_and_currencies_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), Durability::Memory)).unwrap();
    block_on(async {
        let mut limited = sku("LTD", 100, 999);
        limited.per_customer_limit = Some(2);
        engine.upsert_sku(limited, None).await.unwrap();
        let mut usd = sku("USD-ITEM", 10, 100);
        usd.currency = "USD".into();
        engine.upsert_sku(usd, None).await.unwrap();
        engine
            .place_order(order("zoe", &[("LTD", 2)]), None)
            .await
            .unwrap();
        let e = engine
            .place_order(order("zoe", &[("LTD", 1)]), None)
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                EngineError::OrderFailed {
                    reason: DomainError::LimitExceeded { .. },
                    ..
                }
            ),
            "{e}"
        );
        engine
            .place_order(order("yan", &[("LTD", 2)]), None)
            .await
            .unwrap();
        let e = engine
            .place_order(order("yan", &[("LTD", 1), ("USD-ITEM", 1)]), None)
            .await
            .unwrap_err();
        assert!(matches!(e, EngineError::OrderFailed { .. }), "{e}");
        let e = engine
            .place_order(order("ann", &[("LTD", 1), ("USD-ITEM", 1)]), None)
            .await
            .unwrap_err();
        assert!(
            matches!(e, EngineError::Domain(DomainError::CurrencyMismatch { .. })),
            "{e}"
        );
        let s = engine.get_sku("LTD").await.unwrap();
        assert_eq!(
            (s.available, s.reserved),
            (96, 4),
            "the mismatched order's reservation was released"
        );
        assert_eq!(engine.get_sku("USD-ITEM").await.unwrap().available, 10);
        engine.shutdown().await.unwrap();
    });
}
