//! The order path in batches: a failed batch answers every caller in it with the error
//! and acknowledges none; reads are answered while reservations flood the SKU.

use futures::executor::block_on;
use ordo_engine::domain::order::Status;
use ordo_engine::{Durability, Engine};

use crate::helpers::{config, eventually, idem, order, sku, verify_dir};

/// Single-line orders (one append each, minted by the SKU actor), keyed ones and
/// two-line sagas all wait in one journal batch; the batch's write fails (failure point):
/// every caller gets the error, none is told its order exists, and after a restart the
/// store holds none of them.
#[test]
fn a_failed_batch_answers_every_caller_with_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), Durability::Sync)).unwrap();
    block_on(engine.upsert_sku(sku("B", 100, 10), None)).unwrap();
    block_on(engine.upsert_sku(sku("C", 100, 10), None)).unwrap();
    let held = engine.journal().hold_writes_for_test();
    let mut callers = Vec::new();
    for i in 0..12 {
        let e = engine.clone();
        let (lines, key): (&[(&str, u32)], _) = match i % 4 {
            0 => (&[("B", 1), ("C", 1)], None),
            1 => (&[("B", 1)], Some(idem(&format!("k{i}")))),
            _ => (&[("B", 1)], None),
        };
        let req = order(&format!("c{i}"), lines);
        callers.push(std::thread::spawn(move || {
            block_on(e.place_order_with(req, None, key))
        }));
    }
    // Nine single-line appends and three order appends of the sagas (their reservations
    // are appends of their own, queued before them).
    assert!(eventually(|| engine.journal().queued_for_test() >= 12 + 6));
    engine.journal().fail_next_write_for_test();
    drop(held);
    for c in callers {
        match c.join().unwrap() {
            Err(e) => assert!(
                !matches!(e, ordo_engine::EngineError::OrderFailed { .. }),
                "a storage error, not an answer about the order: {e}"
            ),
            Ok(o) => panic!("acknowledged an order that was never stored: {o:?}"),
        }
    }
    assert!(engine.journal().stopped().is_some());
    let _ = block_on(engine.shutdown());
    drop(engine);

    let engine = Engine::open(config(dir.path(), Durability::Sync)).unwrap();
    for code in ["B", "C"] {
        let s = block_on(engine.get_sku(code)).unwrap();
        assert_eq!(
            (s.available, s.reserved),
            (100, 0),
            "{code}: nothing was reserved"
        );
    }
    let placed = block_on(engine.place_order(order("after", &[("B", 1)]), None)).unwrap();
    assert_eq!(placed.status, Status::Pending);
    block_on(engine.shutdown()).unwrap();
    drop(engine);
    let report = verify_dir(dir.path());
    assert!(report.violations.is_empty(), "{:?}", report.violations);
}

/// Reads do not queue behind reservations: with the SKU's actor held (a failure point)
/// and a flood of orders queued for it, `get_sku` still answers, from the view the actor
/// last published; once the flood is through, the view counts every order.
#[test]
fn sku_reads_are_answered_during_a_flood() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), Durability::Sync)).unwrap();
    block_on(engine.upsert_sku(sku("F", 1000, 10), None)).unwrap();
    let release = block_on(engine.hold_sku_for_test("F")).unwrap();
    let flood: Vec<_> = (0..64)
        .map(|i| {
            let e = engine.clone();
            std::thread::spawn(move || {
                block_on(e.place_order(order(&format!("f{i}"), &[("F", 1)]), None))
            })
        })
        .collect();
    assert!(eventually(|| engine.sku_queue_for_test("F") == 64));
    // The actor is held with 64 orders queued, yet reads answer (they would hang here
    // if they queued behind the reservations).
    for _ in 0..10 {
        let s = block_on(engine.get_sku("F")).unwrap();
        assert_eq!((s.available, s.reserved, s.sold), (1000, 0, 0));
    }
    drop(release);
    for f in flood {
        assert_eq!(f.join().unwrap().unwrap().status, Status::Pending);
    }
    let s = block_on(engine.get_sku("F")).unwrap();
    assert_eq!((s.available, s.reserved), (936, 64));
    let listed = block_on(engine.list_skus(None, 10)).unwrap();
    assert_eq!(listed[0].reserved, 64);
    block_on(engine.shutdown()).unwrap();
}

/// `read_events` for one stream (the feed's `?stream=`) pages through the stream's index:
/// with the stream's early events made unreadable, a page after them still comes back
/// (reading the whole stream for every page, as before, fails on them).
#[test]
fn a_stream_page_of_the_feed_does_not_read_the_whole_stream() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), Durability::Sync)).unwrap();
    block_on(engine.upsert_sku(sku("S", 1000, 10), None)).unwrap();
    for i in 0..40 {
        block_on(engine.place_order(order(&format!("s{i}"), &[("S", 1)]), None)).unwrap();
    }
    let all = engine.read_events(0, 1000, Some("sku/S")).unwrap();
    assert_eq!(all.len(), 42, "registered, stock received, 40 reservations");
    for early in &all[..20] {
        engine
            .store()
            .corrupt_event_for_test(early.seq, b"x")
            .unwrap();
    }
    let page = engine.read_events(all[29].seq, 5, Some("sku/S")).unwrap();
    let seqs: Vec<u64> = page.iter().map(|e| e.seq).collect();
    let want: Vec<u64> = all[30..35].iter().map(|e| e.seq).collect();
    assert_eq!(seqs, want);
    drop(engine);
}
