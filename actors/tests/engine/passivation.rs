//! Idle actors leave memory and come back with their state, racing with live traffic.

use std::time::Duration;

use futures::executor::block_on;
use ordo_engine::domain::order::{PaymentOutcome, Status};
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

/// A terminal order's snapshot leaves with its actor (issue 21: old order snapshots were
/// never deleted and were all re-read at start-up): after a checkpoint snapshots live
/// orders, those that end are gone from the store, the live ones stay, and a restart
/// finds only those.
#[test]
fn terminal_orders_leave_no_snapshot_behind() {
    use ordo_engine::domain::order::{PaymentOutcome, ShipmentStep};
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), Durability::Sync)).unwrap();
    block_on(engine.upsert_sku(sku("T", 100, 10), None)).unwrap();
    let mut ids = Vec::new();
    for i in 0..6 {
        let o = block_on(engine.place_order(order(&format!("t{i}"), &[("T", 1)]), None)).unwrap();
        // Paid: the order now has a live actor, which the checkpoint snapshots.
        let o = block_on(engine.pay(
            &o.id,
            &format!("p{i}"),
            PaymentOutcome::Succeeded,
            o.total_minor,
            None,
        ))
        .unwrap();
        assert_eq!(o.status, Status::Confirmed);
        ids.push(o.id);
    }
    block_on(engine.checkpoint()).unwrap();
    let order_snapshots = |store: &ordo_storage::Store| {
        let mut n = 0;
        store
            .scan_snapshots("order/", |_| {
                n += 1;
                Ok(())
            })
            .unwrap();
        n
    };
    assert_eq!(order_snapshots(engine.store()), 6);
    for id in &ids[..4] {
        for step in [
            ShipmentStep::Prepared,
            ShipmentStep::Processed,
            ShipmentStep::Fulfilled,
        ] {
            block_on(engine.ship(id, step, None)).unwrap();
        }
    }
    assert!(
        eventually(|| order_snapshots(engine.store()) == 2),
        "the four fulfilled orders' snapshots are deleted as their actors leave"
    );
    shutdown_and_verify(engine, dir.path());
    let engine = Engine::open(config(dir.path(), Durability::Sync)).unwrap();
    assert_eq!(order_snapshots(engine.store()), 2);
    assert_eq!(
        block_on(engine.get_order(&ids[0])).unwrap().status,
        Status::Fulfilled
    );
    block_on(engine.shutdown()).unwrap();
}

/// A placed order is on the feed once durable, before its placing caller has recorded it
/// as waiting without an actor; a follower can act on it in between. The order then has
/// a live actor, and the deadline table must not list it too (a stale entry outlives the
/// actor: a checkpoint would record the order as PENDING without an actor). The placing
/// future is held between the two steps by polling it by hand.
#[test]
fn an_order_activated_before_its_placement_returns_is_not_left_in_the_deadline_table() {
    use std::future::Future;
    use std::task::{Context, Poll};

    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), Durability::Sync)).unwrap();
    block_on(engine.upsert_sku(sku("S", 10, 100), None)).unwrap();
    let mut placing = Box::pin(engine.place_order(order("a", &[("S", 1)]), None));
    let waker = futures::task::noop_waker();
    assert!(matches!(
        placing.as_mut().poll(&mut Context::from_waker(&waker)),
        Poll::Pending
    ));
    // The order's creation becomes durable; a follower of the feed sees it and pays.
    let mut id = None;
    assert!(eventually(|| {
        id = engine
            .read_events(0, 100, None)
            .unwrap()
            .iter()
            .find_map(|e| e.stream.strip_prefix("order/").map(str::to_owned));
        id.is_some()
    }));
    let id = id.unwrap();
    let total = block_on(engine.get_order(&id)).unwrap().total_minor;
    let paid = block_on(engine.pay(&id, "p1", PaymentOutcome::Succeeded, total, None)).unwrap();
    assert_eq!(paid.status, Status::Confirmed);
    // Only now does the placing caller go on.
    let placed = block_on(placing).unwrap();
    assert_eq!(placed.id, id);
    assert_eq!(
        engine.pending_without_actor(),
        0,
        "the order has an actor; the table does not list it"
    );
    shutdown_and_verify(engine, dir.path());
}
