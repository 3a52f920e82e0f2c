//! The bounded SKU mailbox: a full queue refuses its SKU only, and its count stays exact
//! through checkpoints and callers that hang up.

use futures::executor::block_on;
use ordo_engine::domain::order::Status;
use ordo_engine::{Durability, Engine, EngineError};

use crate::helpers::{config, eventually, order, sku};

/// The per-SKU queue bound holds: with the SKU's actor held (a failure point) and its
/// queue full, further orders for it are refused at once with `Overloaded`, orders for
/// another SKU go through, and the queued ones complete once it is released.
#[test]
fn a_full_sku_queue_refuses_new_orders_for_that_sku_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), Durability::Sync);
    cfg.sku_mailbox = 8;
    let engine = Engine::open(cfg).unwrap();
    block_on(engine.upsert_sku(sku("HOT", 100, 10), None)).unwrap();
    block_on(engine.upsert_sku(sku("COLD", 100, 10), None)).unwrap();
    let release = block_on(engine.hold_sku_for_test("HOT")).unwrap();
    let queued: Vec<_> = (0..8)
        .map(|i| {
            let e = engine.clone();
            std::thread::spawn(move || {
                block_on(e.place_order(order(&format!("q{i}"), &[("HOT", 1)]), None))
            })
        })
        .collect();
    assert!(eventually(|| engine.sku_queue_for_test("HOT") == 8));
    for i in 0..5 {
        match block_on(engine.place_order(order(&format!("x{i}"), &[("HOT", 1)]), None)) {
            Err(EngineError::Overloaded { sku }) => assert_eq!(sku, "HOT"),
            other => panic!("a full queue must refuse at once: {other:?}"),
        }
    }
    let cold = block_on(engine.place_order(order("c", &[("COLD", 1)]), None)).unwrap();
    assert_eq!(cold.status, Status::Pending);
    drop(release);
    for t in queued {
        assert_eq!(t.join().unwrap().unwrap().status, Status::Pending);
    }
    assert!(engine.metrics().overloaded.get() >= 5);
    let s = block_on(engine.get_sku("HOT")).unwrap();
    assert_eq!((s.available, s.reserved), (92, 8));
    block_on(engine.shutdown()).unwrap();
}

/// The SKU queue count comes back to zero whatever happens to a message: a checkpoint's
/// snapshot request, requests whose caller went away before the actor took them up (they
/// change nothing).
/// (Before the fix a checkpoint wrapped the count below zero and the SKU refused every
/// order from then on; dropped requests leaked it upwards.)
#[test]
fn the_sku_queue_count_survives_checkpoints_and_callers_that_hang_up() {
    use futures::FutureExt;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), Durability::Sync);
    cfg.checkpoint_every = 1;
    let engine = Engine::open(cfg).unwrap();
    block_on(engine.upsert_sku(sku("Q", 100, 10), None)).unwrap();
    block_on(engine.place_order(order("a", &[("Q", 1)]), None)).unwrap();
    assert!(eventually(|| engine.metrics().checkpoints.get() > 0));
    assert_eq!(engine.sku_queue_for_test("Q"), 0);
    let release = block_on(engine.hold_sku_for_test("Q")).unwrap();
    for i in 0..5 {
        // An order whose client hung up: queued (polled once), then dropped. (Reads no
        // longer queue: they are served from the SKU's published view.)
        let gone = engine.place_order(order(&format!("gone{i}"), &[("Q", 1)]), None);
        assert!(gone.now_or_never().is_none());
    }
    assert_eq!(engine.sku_queue_for_test("Q"), 5);
    drop(release);
    assert!(eventually(|| engine.sku_queue_for_test("Q") == 0));
    let q = block_on(engine.get_sku("Q")).unwrap();
    assert_eq!(
        (q.available, q.reserved),
        (99, 1),
        "hung-up orders placed nothing"
    );
    let o = block_on(engine.place_order(order("b", &[("Q", 1)]), None)).unwrap();
    assert_eq!(o.status, Status::Pending);
    block_on(engine.shutdown()).unwrap();
}
