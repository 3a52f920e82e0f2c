//! Restarts: snapshots and the log alone rebuild the same state, and orders waiting
//! without actors come back from the checkpoint with their deadlines.

use std::time::Duration;

use futures::executor::block_on;
use ordo_engine::domain::order::{PaymentOutcome, ShipmentStep, Status};
use ordo_engine::{Durability, Engine};

use crate::helpers::{
    append_to_order_behind_the_engine, config, eventually, order, shutdown_and_verify, sku,
};

/// Runs a mixed workload and returns the SKU and order views it ends with.
fn workload(engine: &Engine) -> Vec<String> {
    block_on(async {
        for code in ["P", "Q", "R"] {
            engine.upsert_sku(sku(code, 200, 300), None).await.unwrap();
        }
        let mut ids = Vec::new();
        for i in 0..150 {
            let lines: &[(&str, u32)] = match i % 3 {
                0 => &[("P", 2)],
                1 => &[("Q", 1), ("R", 1)],
                _ => &[("R", 3), ("P", 1)],
            };
            if let Ok(o) = engine
                .place_order(order(&format!("c{i}"), lines), None)
                .await
            {
                match i % 5 {
                    0 | 1 => {
                        engine
                            .pay(
                                &o.id,
                                &format!("p{i}"),
                                PaymentOutcome::Succeeded,
                                o.total_minor,
                                None,
                            )
                            .await
                            .unwrap();
                    }
                    2 => {
                        engine.cancel(&o.id, "customer", None).await.unwrap();
                    }
                    _ => {}
                }
                if i % 10 == 0 {
                    engine
                        .ship(&o.id, ShipmentStep::Prepared, None)
                        .await
                        .unwrap();
                }
                ids.push(o.id);
            }
        }
        ids
    })
}

fn state_of(engine: &Engine, ids: &[String]) -> String {
    block_on(async {
        let mut out = String::new();
        for code in ["P", "Q", "R"] {
            out.push_str(&format!("{:?}\n", engine.get_sku(code).await.unwrap()));
        }
        for id in ids {
            out.push_str(&format!("{:?}\n", engine.get_order(id).await.unwrap()));
        }
        out
    })
}

#[test]
fn recovery_from_snapshots_equals_recovery_from_the_log_alone() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), Durability::Sync);
    cfg.snapshot_every = 7;
    let engine = Engine::open(cfg.clone()).unwrap();
    let ids = workload(&engine);
    let before = state_of(&engine, &ids);
    block_on(engine.shutdown()).unwrap();
    drop(engine);

    let with_snapshots = Engine::open(cfg.clone()).unwrap();
    let a = state_of(&with_snapshots, &ids);
    block_on(with_snapshots.shutdown()).unwrap();
    drop(with_snapshots);
    let mut log_only = cfg;
    log_only.ignore_snapshots = true;
    let from_log = Engine::open(log_only).unwrap();
    let b = state_of(&from_log, &ids);
    block_on(from_log.shutdown()).unwrap();
    assert_eq!(a, before);
    assert_eq!(a, b);
}

#[test]
fn pending_orders_without_actors_survive_a_checkpointed_restart_and_still_expire() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), Durability::Sync);
    cfg.reservation_ttl = Duration::from_millis(2_500);
    let engine = Engine::open(cfg.clone()).unwrap();
    block_on(engine.upsert_sku(sku("A", 10, 100), None)).unwrap();
    block_on(engine.upsert_sku(sku("B", 10, 100), None)).unwrap();
    let mut ids = Vec::new();
    for c in ["p1", "p2", "p3"] {
        ids.push(
            block_on(engine.place_order(order(c, &[("A", 1), ("B", 2)]), None))
                .unwrap()
                .id,
        );
    }
    assert_eq!(
        engine.pending_without_actor(),
        3,
        "placed orders wait without actors"
    );
    // One is paid before the restart (activated, leaves the table).
    let paid = block_on(engine.get_order(&ids[0])).unwrap();
    block_on(engine.pay(
        &ids[0],
        "pay-1",
        PaymentOutcome::Succeeded,
        paid.total_minor,
        None,
    ))
    .unwrap();
    assert_eq!(engine.pending_without_actor(), 2);
    block_on(engine.shutdown()).unwrap();
    drop(engine);

    // The clean shutdown's checkpoint carries the table; the restart takes it back.
    let engine = Engine::open(cfg).unwrap();
    assert_eq!(engine.pending_without_actor(), 2);
    assert_eq!(
        block_on(engine.get_order(&ids[0])).unwrap().status,
        Status::Confirmed
    );
    // Their deadlines still fire: the stock comes back, the paid order keeps its units.
    assert!(eventually(|| ids[1..].iter().all(|id| block_on(
        engine.get_order(id)
    )
    .unwrap()
    .status
        == Status::Cancelled)));
    assert!(eventually(|| {
        let (a, b) = (
            block_on(engine.get_sku("A")).unwrap(),
            block_on(engine.get_sku("B")).unwrap(),
        );
        (
            a.available,
            a.reserved,
            a.sold,
            b.available,
            b.reserved,
            b.sold,
        ) == (9, 0, 1, 8, 0, 2)
    }));
    assert_eq!(engine.pending_without_actor(), 0);
    shutdown_and_verify(engine, dir.path());
}

/// A checkpoint of a SKU with thousands of holds: its snapshot is encoded and written
/// off the actor thread and outside the journal's batches (issue 20: at a million holds
/// the checkpoint held every order for up to a second), and both it and the table of
/// PENDING orders are stored, tagged with what they cover, when `checkpoint` returns.
/// A restart takes both back.
#[test]
fn a_checkpoint_of_a_sku_with_many_holds_is_stored_off_the_actor_and_taken_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), Durability::Buffered);
    cfg.snapshot_every = u64::MAX; // only the checkpoint snapshots
    cfg.checkpoint_every = u64::MAX;
    let engine = Engine::open(cfg.clone()).unwrap();
    block_on(engine.upsert_sku(sku("S", 10_000, 100), None)).unwrap();
    let n = 5_000;
    for chunk in 0..n / 500 {
        let placed = block_on(futures::future::join_all((0..500).map(|i| {
            let customer = format!("c{}", chunk * 500 + i);
            let engine = engine.clone();
            async move {
                engine
                    .place_order(order(&customer, &[("S", 1)]), None)
                    .await
            }
        })));
        assert!(placed.iter().all(Result::is_ok));
    }
    assert_eq!(engine.pending_without_actor(), n);

    let seq = block_on(engine.checkpoint()).unwrap();
    let store = engine.store();
    let snap = store
        .load_snapshot("sku/S")
        .unwrap()
        .expect("the checkpoint's snapshot");
    assert_eq!(snap.version, store.stream_head("sku/S").unwrap());
    assert!(
        snap.seq >= seq,
        "covers the checkpoint: {} < {seq}",
        snap.seq
    );
    let table = store.get_meta("checkpoint/pending").unwrap().unwrap();
    assert_eq!(
        table.len(),
        8 + 24 * n,
        "the checkpoint's seq, then every order"
    );
    assert_eq!(table[..8], seq.to_be_bytes());
    block_on(engine.shutdown()).unwrap();
    drop(engine);

    let engine = Engine::open(cfg).unwrap();
    assert_eq!(engine.pending_without_actor(), n, "taken from the table");
    let s = block_on(engine.get_sku("S")).unwrap();
    assert_eq!((s.available, s.reserved), (10_000 - n as i64, n as i64));
    shutdown_and_verify(engine, dir.path());
}

/// An order in the checkpoint's table of PENDING orders that was cancelled after the
/// checkpoint, with a crash before its SKU released the hold (the order's cancellation
/// is durable, the release is not): recovery must not take the table's word that it is
/// PENDING. It reads the order, finds it cancelled, and releases the hold.
#[test]
fn a_table_entry_cancelled_after_the_checkpoint_does_not_keep_its_hold() {
    use ordo_engine::domain::events::{OrderCancelled, OrderEvent};

    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), Durability::Sync);
    let engine = Engine::open(cfg.clone()).unwrap();
    block_on(engine.upsert_sku(sku("S", 10, 100), None)).unwrap();
    let a = block_on(engine.place_order(order("a", &[("S", 1)]), None)).unwrap();
    let b = block_on(engine.place_order(order("b", &[("S", 1)]), None)).unwrap();
    assert_eq!(engine.pending_without_actor(), 2);
    // The clean shutdown's checkpoint lists both as PENDING without an actor.
    block_on(engine.shutdown()).unwrap();
    drop(engine);

    // After the checkpoint: `a` is cancelled and the crash comes before the release.
    let cancelled = OrderEvent::OrderCancelled(OrderCancelled {
        reason: "customer".into(),
        from: Status::Pending,
    });
    drop(append_to_order_behind_the_engine(
        dir.path(),
        &a.id,
        &[cancelled],
    ));

    let engine = Engine::open(cfg).unwrap();
    assert_eq!(
        block_on(engine.get_order(&a.id)).unwrap().status,
        Status::Cancelled
    );
    assert!(
        eventually(|| block_on(engine.get_sku("S")).unwrap().reserved == 1),
        "a's hold is released; b's stays"
    );
    assert_eq!(
        block_on(engine.get_order(&b.id)).unwrap().status,
        Status::Pending
    );
    shutdown_and_verify(engine, dir.path());
}
