//! Webhooks: retried with backoff, delivered in order and signed; dead letters that do
//! not block and are redriven; every event delivered after a SIGKILL; a delivery in
//! flight at SIGTERM finished before the server stops; https receivers trusted through
//! `--webhook-ca-file`. The receivers here are real servers on 127.0.0.1, so the
//! servers run with `--webhook-allow-private`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{place_many, stop_and_verify, tempdir, wait_until, Server};
use crate::receivers::{Answer, Endpoint};

#[derive(Debug, Clone)]
struct Delivery {
    seq: u64,
    event_type: String,
    signature: String,
    body: String,
}

/// A webhook receiver on 127.0.0.1: fails the first `fail_first` requests, answers 503
/// while `down`, records the rest. While `hold` is set, a recorded request is answered
/// only once the test lets it go ([`Receiver::release`]).
struct Receiver {
    url: String,
    got: Arc<parking_lot::Mutex<Vec<Delivery>>>,
    down: Arc<std::sync::atomic::AtomicBool>,
    attempts: Arc<std::sync::atomic::AtomicU64>,
    hold: Arc<std::sync::atomic::AtomicBool>,
    /// Held requests wait on it (it has no permits); closed to let them all go.
    gate: Arc<tokio::sync::Semaphore>,
    /// Requests answered 200 (after their hold, if any).
    answered: Arc<std::sync::atomic::AtomicU64>,
    _endpoint: Endpoint,
}

impl Receiver {
    fn start(fail_first: u64) -> Receiver {
        use std::sync::atomic::Ordering::SeqCst;
        let got = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let attempts = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let hold = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let answered = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let shared = (
            got.clone(),
            down.clone(),
            attempts.clone(),
            hold.clone(),
            gate.clone(),
            answered.clone(),
        );
        let endpoint = Endpoint::start_async(move |req| {
            let (g, d, a, hold, gate, answered) = shared.clone();
            async move {
                let n = a.fetch_add(1, SeqCst);
                if d.load(SeqCst) {
                    return Answer::status(503);
                }
                if n < fail_first {
                    return Answer::status(500);
                }
                g.lock().push(Delivery {
                    seq: req.header("ordo-event-seq").parse().unwrap_or(0),
                    event_type: req.header("ordo-event-type"),
                    signature: req.header("ordo-signature"),
                    body: String::from_utf8_lossy(&req.body).into_owned(),
                });
                if hold.load(SeqCst) {
                    // Never a permit: this waits until the gate is closed.
                    let _ = gate.acquire().await;
                }
                answered.fetch_add(1, SeqCst);
                Answer::status(200)
            }
        });
        Receiver {
            url: endpoint.url.clone(),
            got,
            down,
            attempts,
            hold,
            gate,
            answered,
            _endpoint: endpoint,
        }
    }

    fn seqs(&self) -> Vec<u64> {
        self.got.lock().iter().map(|d| d.seq).collect()
    }

    /// Answers the requests held so far, and holds no more.
    fn release(&self) {
        self.hold.store(false, std::sync::atomic::Ordering::SeqCst);
        self.gate.close();
    }
}

/// An https webhook receiver with a throwaway certificate for 127.0.0.1; the CA file
/// for `--webhook-ca-file` is written to `dir`.
struct TlsReceiver {
    url: String,
    ca_file: PathBuf,
    got: Arc<parking_lot::Mutex<Vec<Delivery>>>,
}

impl TlsReceiver {
    fn start(dir: &Path) -> TlsReceiver {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio_rustls::rustls;
        let rcgen::CertifiedKey { cert, key_pair } =
            rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        let ca_file = dir.join("receiver-ca.pem");
        std::fs::write(&ca_file, cert.pem()).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key_pair.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("https://{}/hook", listener.local_addr().unwrap());
        let got = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let g = got.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                while let Ok((tcp, _)) = listener.accept().await {
                    let (acceptor, g) = (acceptor.clone(), g.clone());
                    tokio::spawn(async move {
                        let Ok(mut tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let mut buf = Vec::new();
                        loop {
                            // One request: headers, then Content-Length bytes of body.
                            let head_end = loop {
                                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                    break i + 4;
                                }
                                let mut chunk = [0u8; 4096];
                                match tls.read(&mut chunk).await {
                                    Ok(0) | Err(_) => return,
                                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                                }
                            };
                            let head =
                                String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                            let header = |name: &str| {
                                head.lines()
                                    .find_map(|l| {
                                        l.strip_prefix(&format!("{name}: ")).map(str::to_owned)
                                    })
                                    .unwrap_or_default()
                            };
                            let len: usize = header("content-length").parse().unwrap_or(0);
                            while buf.len() < head_end + len {
                                let mut chunk = [0u8; 4096];
                                match tls.read(&mut chunk).await {
                                    Ok(0) | Err(_) => return,
                                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                                }
                            }
                            let body = String::from_utf8_lossy(&buf[head_end..head_end + len])
                                .into_owned();
                            g.lock().push(Delivery {
                                seq: header("ordo-event-seq").parse().unwrap_or(0),
                                event_type: header("ordo-event-type"),
                                signature: header("ordo-signature"),
                                body,
                            });
                            buf.drain(..head_end + len);
                            if tls
                                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                    });
                }
            });
        });
        TlsReceiver { url, ca_file, got }
    }
}

/// Checks `Ordo-Signature: t=…,v1=…` with an HMAC computed here (the key: the bytes
/// the `whsec_` secret encodes).
fn signature_ok(secret: &str, sig: &str, body: &str) -> bool {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    let Some((t, v1)) = sig.strip_prefix("t=").and_then(|s| s.split_once(",v1=")) else {
        return false;
    };
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    let want: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    want == v1
}

/// A Standard Webhooks secret: `whsec_` + base64 of 24 bytes.
pub const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

/// Subscribes `url` to `types` (signed with [`SECRET`]); the subscription's id.
async fn subscribe_to(s: &Server, url: &str, types: &[&str]) -> String {
    let sub = s
        .subscribe(json!({"url": url, "secret": SECRET, "types": types}))
        .await
        .ok(201);
    sub["id"].as_str().unwrap().to_owned()
}

/// Polls `cond` for up to `limit`; whether it came true.
async fn comes_true(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

/// One order paid and shipped to the end, one cancelled; returns their ids.
async fn order_lives(s: &Server, sku: &str) -> (String, String) {
    let a = s.place("life-a", &[(sku, 1)]).await.ok(201);
    let a_id = a["id"].as_str().unwrap().to_owned();
    s.pay(
        &a_id,
        "p-a",
        "succeeded",
        a["total_minor"].as_i64().unwrap(),
    )
    .await
    .ok(200);
    for step in ["prepared", "processed", "fulfilled"] {
        s.ship(&a_id, step).await.ok(200);
    }
    let b = s.place("life-b", &[(sku, 1)]).await.ok(201);
    let b_id = b["id"].as_str().unwrap().to_owned();
    s.cancel_because(&b_id, "changed mind").await.ok(200);
    (a_id, b_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_retry_then_deliver_every_order_event_in_order_signed() {
    let (_t, dir) = tempdir();
    let s = Server::start(
        &dir,
        &[
            "--webhook-allow-private",
            "--webhook-backoff",
            "5ms",
            "--webhook-max-attempts",
            "10",
        ],
    );
    let rx = Receiver::start(3);
    s.create_sku("HOOK-1", 10).await.ok(201);
    // Bad subscriptions are refused.
    for bad in [
        json!({"url": "ftp://127.0.0.1/x", "secret": SECRET}),
        json!({"url": "https://", "secret": SECRET}),
        json!({"url": "not a url", "secret": SECRET}),
        json!({"url": rx.url, "secret": "short"}),
        json!({"url": rx.url, "secret": SECRET, "types": ["NoSuchEvent"]}),
        json!({"url": rx.url, "secret": SECRET, "colour": "red"}),
    ] {
        s.subscribe(bad).await.problem(422, "invalid_request");
    }
    let order_types = [
        "OrderCreated",
        "OrderPending",
        "OrderFailed",
        "PaymentSucceeded",
        "PaymentFailed",
        "OrderConfirmed",
        "OrderCancelled",
        "RefundRequested",
        "ShipmentPrepared",
        "ShipmentProcessed",
        "OrderFulfilled",
    ];
    let sub = s
        .subscribe(json!({"url": rx.url, "secret": SECRET, "types": order_types}))
        .await
        .ok(201);
    let id = sub["id"].as_str().unwrap().to_owned();
    assert!(
        sub.get("secret").is_none(),
        "the secret is never shown: {sub}"
    );
    let (a, b) = order_lives(&s, "HOOK-1").await;
    wait_until("10 deliveries", 60, || async { rx.got.lock().len() >= 10 }).await;
    let got = rx.got.lock().clone();
    // The first three attempts failed and were retried.
    assert!(rx.attempts.load(std::sync::atomic::Ordering::SeqCst) >= 13);
    // In seq order, each once, signed, only order events.
    let seqs: Vec<u64> = got.iter().map(|d| d.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    for d in &got {
        assert!(
            signature_ok(SECRET, &d.signature, &d.body),
            "bad signature on seq {}",
            d.seq
        );
        let v: Value = serde_json::from_str(&d.body).unwrap();
        assert_eq!(v["seq"], d.seq);
        assert_eq!(v["type"], d.event_type.as_str());
    }
    let life = |id: &str| -> Vec<String> {
        got.iter()
            .filter(|d| d.body.contains(&format!("\"order/{id}\"")))
            .map(|d| d.event_type.clone())
            .collect()
    };
    assert_eq!(
        life(&a),
        [
            "OrderCreated",
            "OrderPending",
            "PaymentSucceeded",
            "OrderConfirmed",
            "ShipmentPrepared",
            "ShipmentProcessed",
            "OrderFulfilled"
        ]
    );
    assert_eq!(life(&b), ["OrderCreated", "OrderPending", "OrderCancelled"]);
    let view = s.subscription(&id).await.ok(200);
    assert_eq!(view["dead_letters"], 0);
    assert_eq!(s.subscriptions().await.ok(200).as_array().unwrap().len(), 1);
    let m = s.metrics().await.text;
    assert!(
        m.contains(&format!(
            "ordo_webhook_retries_total{{subscription=\"{id}\"}} 3"
        )),
        "{m}"
    );
    s.unsubscribe(&id).await;
    s.subscription(&id).await.problem(404, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_do_not_block_and_are_redriven_when_the_receiver_is_back() {
    let (_t, dir) = tempdir();
    let s = Server::start(
        &dir,
        &[
            "--webhook-allow-private",
            "--webhook-backoff",
            "2ms",
            "--webhook-max-attempts",
            "2",
        ],
    );
    let rx = Receiver::start(0);
    rx.down.store(true, std::sync::atomic::Ordering::SeqCst);
    let id = subscribe_to(&s, &rx.url, &["SkuRegistered", "StockAdjusted"]).await;
    for i in 0..3 {
        s.create_sku(&format!("DL-{i}"), 5).await.ok(201);
    }
    // Six events, each tried twice, all dead-lettered: the later ones were not blocked.
    wait_until("6 dead letters", 60, || async {
        s.dead_letters(&id)
            .await
            .json()
            .as_array()
            .map_or(0, |a| a.len())
            == 6
    })
    .await;
    let dead = s.dead_letters(&id).await.ok(200);
    assert!(dead
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["attempts"] == 2 && d["last_error"].as_str().unwrap().contains("503")));
    assert!(rx.got.lock().is_empty());

    rx.down.store(false, std::sync::atomic::Ordering::SeqCst);
    let r = s.redrive(&id).await.ok(200);
    assert_eq!(r["queued"], 6);
    wait_until("6 redriven deliveries", 60, || async {
        rx.got.lock().len() == 6
    })
    .await;
    let seqs = rx.seqs();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    wait_until("an empty dead-letter list", 60, || async {
        s.dead_letters(&id)
            .await
            .json()
            .as_array()
            .is_some_and(|a| a.is_empty())
    })
    .await;
    s.redrive("01ARZ3NDEKTSV4RRFFQ69G5FAV")
        .await
        .problem(404, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_server_delivers_every_event_after_restart() {
    let (_t, dir) = tempdir();
    let s = Server::start(&dir, &["--webhook-allow-private"]);
    let rx = Receiver::start(0);
    s.subscribe(json!({"url": rx.url, "secret": SECRET, "after": 0}))
        .await
        .ok(201);
    let s = Arc::new(s);
    s.create_sku("KILL-1", 100_000).await.ok(201);
    place_many(&s, "KILL-1", 400, 16).await;
    wait_until("some deliveries", 60, || async {
        rx.got.lock().len() >= 20
    })
    .await;
    s.sigkill();
    drop(s);
    let delivered_before = rx.got.lock().len();

    let s = Server::start(&dir, &["--webhook-allow-private"]);
    let last = s.events(Some(0), Some(1000)).await.ok(200)["next"]
        .as_u64()
        .unwrap();
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let page = s.events(Some(after), Some(1000)).await.ok(200);
        let evs = page["events"].as_array().unwrap().clone();
        if evs.is_empty() {
            break;
        }
        all.extend(evs.iter().map(|e| e["seq"].as_u64().unwrap()));
        after = page["next"].as_u64().unwrap();
    }
    assert!(all.len() as u64 >= last);
    let n = all.len();
    wait_until("every event delivered", 120, || async {
        let got: std::collections::HashSet<u64> = rx.seqs().into_iter().collect();
        got.len() >= n
    })
    .await;
    let got: std::collections::HashSet<u64> = rx.seqs().into_iter().collect();
    for seq in &all {
        assert!(got.contains(seq), "event {seq} was never delivered");
    }
    assert!(
        delivered_before < n,
        "the kill came after delivery had finished"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_deliver_over_https_to_a_receiver_trusted_through_the_ca_file() {
    let (t, dir) = tempdir();
    let rx = TlsReceiver::start(t.path());
    let s = Server::start(
        &dir,
        &[
            "--webhook-allow-private",
            "--webhook-ca-file",
            rx.ca_file.to_str().unwrap(),
        ],
    );
    let sub = s
        .subscribe(
            json!({"url": rx.url, "secret": SECRET, "types": ["SkuRegistered", "StockAdjusted"]}),
        )
        .await
        .ok(201);
    assert!(sub["url"].as_str().unwrap().starts_with("https://"));
    s.create_sku("TLS-1", 3).await.ok(201);
    wait_until("2 deliveries over https", 60, || async {
        rx.got.lock().len() >= 2
    })
    .await;
    let got = rx.got.lock().clone();
    assert_eq!(
        got.iter()
            .map(|d| d.event_type.as_str())
            .collect::<Vec<_>>(),
        ["skuregistered", "stockadjusted"] // header values as the receiver lower-cased them
    );
    for d in &got {
        let v: Value = serde_json::from_str(&d.body).unwrap();
        assert_eq!(v["seq"], d.seq);
        assert!(signature_ok(SECRET, &d.signature, &d.body));
    }
    // A receiver whose certificate is not trusted fails, and the event is dead-lettered.
    let (_t2, dir2) = tempdir();
    let s2 = Server::start(
        &dir2,
        &["--webhook-allow-private", "--webhook-max-attempts", "1"],
    );
    let id2 = subscribe_to(&s2, &rx.url, &["SkuRegistered"]).await;
    s2.create_sku("TLS-2", 1).await.ok(201);
    wait_until("a dead letter for the untrusted receiver", 60, || async {
        s2.dead_letters(&id2)
            .await
            .json()
            .as_array()
            .is_some_and(|a| a.len() == 1)
    })
    .await;
    assert_eq!(
        rx.got.lock().len(),
        2,
        "nothing reached the receiver without trust"
    );
}

/// Shutdown's second stage waits for webhook deliveries: one under way when SIGTERM comes
/// is finished (the receiver answers 2xx, the cursor moves past it) before the engine
/// stops, and is neither dead-lettered nor sent again after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_in_flight_at_sigterm_is_finished_and_not_dead_lettered() {
    let (_t, dir) = tempdir();
    // Bounds far above the test's own waits, so neither cuts the delivery short.
    let flags = [
        "--webhook-allow-private",
        "--shutdown-timeout",
        "120s",
        "--webhook-timeout",
        "120s",
        "--webhook-max-attempts",
        "1",
    ];
    let mut s = Server::start(&dir, &flags);
    let rx = Receiver::start(0);
    rx.hold.store(true, std::sync::atomic::Ordering::SeqCst);
    let id = subscribe_to(&s, &rx.url, &["SkuRegistered"]).await;
    s.create_sku("DRAIN-1", 0).await.ok(201);
    wait_until("the delivery to reach the receiver", 60, || async {
        rx.got.lock().len() == 1
    })
    .await;

    // Stop the server while the receiver holds the delivery.
    s.sigterm();
    wait_until("the shutdown to begin", 60, || async {
        s.has_logged("shutting down: no new connections; ending live feeds and webhook deliveries")
    })
    .await;
    // The server must stay in the stage that waits for deliveries while this one is held.
    // A server that went on would log the next stage; it is given a moment to do so (the
    // wait only makes that more likely to be seen, it cannot fail a server that waits).
    let went_on = comes_true(Duration::from_secs(2), || {
        s.has_logged("finishing in-flight requests")
    })
    .await;
    assert!(
        !went_on,
        "the shutdown went past the webhook drain while a delivery was in flight"
    );
    assert_eq!(rx.answered.load(std::sync::atomic::Ordering::SeqCst), 0);
    rx.release();
    let status = s.wait_for_exit(120).await;
    assert!(status.success(), "exit status {status}");
    assert_eq!(rx.answered.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(rx.attempts.load(std::sync::atomic::Ordering::SeqCst), 1);
    let seq = rx.seqs()[0];
    drop(s);

    // Delivered, as the store says after a restart: the cursor is past the event and
    // there is no dead letter. (A cursor moved by sending the event again after the
    // restart would show in the receiver's count, read after the view.)
    let s = Server::start(&dir, &["--webhook-allow-private"]);
    let view = s.subscription(&id).await.ok(200);
    assert_eq!(view["cursor"], seq, "{view}");
    assert_eq!(view["dead_letters"], 0, "{view}");
    assert_eq!(
        rx.attempts.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "sent again after the restart"
    );
    assert_eq!(s.dead_letters(&id).await.ok(200), json!([]));
    stop_and_verify(s, &dir);
}
