//! Idle actors leave memory and come back with their state, racing with live traffic.

use std::time::Duration;

use futures::executor::block_on;
use ordo_engine::domain::order::Status;
use ordo_engine::{Durability, Engine};

use crate::helpers::{config, eventually, order, shutdown_and_verify, sku};

#[test]
fn idle_skus_passivate_and_come_back_with_their_counters_under_concurrent_use() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), Durability::Sync);
    cfg.sku_idle_timeout = Duration::from_millis(30);
    let engine = Engine::open(cfg).unwrap();
    let live = |e: &Engine| e.metrics().live_skus.get();
    block_on(engine.upsert_sku(sku("A", 10, 100), None)).unwrap();
    block_on(engine.upsert_sku(sku("B", 10, 100), None)).unwrap();
    assert!(eventually(|| live(&engine) == 0), "idle SKUs passivate");
    // Reads, admin changes and orders activate them again, with their counters.
    assert_eq!(block_on(engine.get_sku("A")).unwrap().available, 10);
    assert_eq!(
        block_on(engine.adjust_stock("B", 5, "delivery", None))
            .unwrap()
            .available,
        15
    );
    let held = block_on(engine.place_order(order("h", &[("A", 2)]), None)).unwrap();
    assert!(
        eventually(|| live(&engine) == 1),
        "B passivates, A holds stock and stays"
    );
    // Rounds of concurrent orders racing with passivation: none lost, none doubled.
    for round in 0..20 {
        let ids: Vec<String> = block_on(futures::future::join_all((0..8).map(|i| {
            let e = engine.clone();
            async move {
                e.place_order(order(&format!("c{round}-{i}"), &[("B", 1)]), None)
                    .await
                    .unwrap()
                    .id
            }
        })));
        assert_eq!(block_on(engine.get_sku("B")).unwrap().reserved, 8);
        for id in &ids {
            block_on(engine.cancel(id, "round over", None)).unwrap();
        }
        std::thread::sleep(Duration::from_millis(10 + (round % 5) * 10));
    }
    let b = block_on(engine.get_sku("B")).unwrap();
    assert_eq!((b.available, b.reserved, b.sold), (15, 0, 0));
    let a = block_on(engine.get_sku("A")).unwrap();
    assert_eq!((a.available, a.reserved), (8, 2));
    assert_eq!(
        block_on(engine.get_order(&held.id)).unwrap().status,
        Status::Pending
    );
    shutdown_and_verify(engine, dir.path());
}
