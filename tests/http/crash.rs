//! Killed mid-load: after SIGKILL, or a SIGTERM with a live-feed stream open, every
//! acknowledged write is there after the restart, stock adds up, and replaying each
//! acknowledged request with its key returns the first answer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::helpers::{stop_and_verify, tempdir, verify, Keyed, Resp, Server};

fn status_rank(s: &str) -> u8 {
    match s {
        "PENDING" => 1,
        "PAID" => 2,
        "CONFIRMED" => 3,
        "SHIPMENT_PREPARED" => 4,
        "SHIPMENT_PROCESSED" => 5,
        "FULFILLED" => 6,
        "CANCELLED" => 7,
        _ => 0,
    }
}

/// An acknowledged request: what was sent and what came back.
#[derive(Debug, Clone)]
struct Acked {
    req: Keyed,
    answer: Resp,
}

/// Buyers place orders (each with an Idempotency-Key) and pay every other one, until
/// `stop` acknowledged orders exist or a request fails (the server died).
async fn mixed_load(s: Arc<Server>, buyers: usize, stop: usize) -> Vec<Acked> {
    let acked = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let placed = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..buyers)
        .map(|b| {
            let (s, acked, placed) = (s.clone(), acked.clone(), placed.clone());
            tokio::spawn(async move {
                for i in 0.. {
                    if placed.load(Ordering::Relaxed) >= stop {
                        break;
                    }
                    let req = Keyed::place(
                        &format!("order-{b}-{i}"),
                        &format!("buyer-{b}"),
                        &[("LOAD-1", 1), ("LOAD-2", 1)],
                    );
                    let Ok(r) = s.try_send_keyed(&req).await else {
                        break;
                    };
                    if r.status != 201 {
                        break;
                    }
                    placed.fetch_add(1, Ordering::Relaxed);
                    let id = r.json()["id"].as_str().unwrap().to_owned();
                    let total = r.json()["total_minor"].as_i64().unwrap();
                    acked.lock().push(Acked { req, answer: r });
                    if i % 2 == 0 {
                        let req = Keyed::pay(
                            &format!("pay-{b}-{i}"),
                            &id,
                            &format!("ref-{b}-{i}"),
                            "succeeded",
                            total,
                        );
                        let Ok(r) = s.try_send_keyed(&req).await else {
                            break;
                        };
                        if r.status != 200 {
                            break;
                        }
                        acked.lock().push(Acked { req, answer: r });
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let v = acked.lock().clone();
    v
}

/// Every acknowledged order is there in its acknowledged (or a later) state, every
/// acknowledged payment is kept, and replaying each acknowledged request with its key
/// returns the first answer.
async fn check_acknowledged(s: &Server, acked: &[Acked]) {
    for a in acked {
        let first = a.answer.json();
        let id = first["id"].as_str().unwrap();
        let now = s.order(id).await.ok(200);
        let (was, is) = (
            first["status"].as_str().unwrap(),
            now["status"].as_str().unwrap(),
        );
        assert!(
            status_rank(is) >= status_rank(was),
            "order {id} was {was}, is {is}"
        );
        if a.req.path.ends_with("/payments") {
            assert_eq!(now["payment_ref"], a.req.body["payment_ref"]);
            assert_eq!(is, "CONFIRMED");
        }
        let replay = s.send_keyed(&a.req).await;
        assert_eq!(
            (replay.status, &replay.text),
            (a.answer.status, &a.answer.text),
            "replay of {} {}",
            a.req.path,
            a.req.key
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_load_loses_no_acknowledged_write() {
    let (_t, dir) = tempdir();
    let s = Arc::new(Server::start(&dir, &[]));
    s.create_sku("LOAD-1", 100_000).await.ok(201);
    s.create_sku("LOAD-2", 100_000).await.ok(201);
    let load = tokio::spawn(mixed_load(s.clone(), 32, usize::MAX));
    // Kill once enough has been acknowledged (counted through the server's own log).
    loop {
        let e = s.events(Some(0), Some(1000)).await;
        if e.status != 200 || e.json()["events"].as_array().map_or(0, |v| v.len()) >= 1000 {
            break;
        }
        tokio::task::yield_now().await;
    }
    s.sigkill();
    let acked = load.await.unwrap();
    drop(s);
    assert!(
        acked.len() > 50,
        "only {} acknowledged before the kill",
        acked.len()
    );

    let s = Server::start(&dir, &[]);
    check_acknowledged(&s, &acked).await;
    // Nothing leaked: every unit is available, reserved by a live order, or sold.
    for sku in ["LOAD-1", "LOAD-2"] {
        let v = s.sku(sku).await.ok(200);
        let sum = v["available"].as_i64().unwrap()
            + v["reserved"].as_i64().unwrap()
            + v["sold"].as_i64().unwrap();
        assert_eq!(sum, 100_000, "{v}");
    }
    stop_and_verify(s, &dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_load_exits_zero_and_keeps_every_acknowledged_write() {
    let (_t, dir) = tempdir();
    // A long shutdown timeout: an open live-feed stream must end by itself on SIGTERM,
    // not hold the shutdown until the timeout.
    let s = Arc::new(Server::start(&dir, &["--shutdown-timeout", "600s"]));
    s.create_sku("LOAD-1", 100_000).await.ok(201);
    s.create_sku("LOAD-2", 100_000).await.ok(201);
    let feed = s.live_events(0).await;
    assert_eq!(feed.status(), 200);
    let load = tokio::spawn(mixed_load(s.clone(), 16, usize::MAX));
    loop {
        let e = s.events(Some(0), Some(500)).await;
        if e.json()["events"].as_array().map_or(0, |v| v.len()) >= 500 {
            break;
        }
        tokio::task::yield_now().await;
    }
    s.sigterm();
    let acked = load.await.unwrap();
    let mut s = Arc::try_unwrap(s).ok().expect("load finished");
    let status = s.wait_for_exit(60).await;
    assert!(status.success(), "exit status {status}");
    drop(feed);
    drop(s);

    let (ok, report) = verify(&dir);
    assert!(ok, "{report}");
    let s = Server::start(&dir, &[]);
    check_acknowledged(&s, &acked).await;
    assert!(s.terminate().success());
}
