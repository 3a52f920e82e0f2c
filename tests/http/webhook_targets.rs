//! Webhook targets (SSRF): loopback, private and link-local targets refused at creation
//! and, after DNS, at delivery; redirects never followed.
//!
//! Nothing here sends a packet past loopback or asks a DNS server anything: refused
//! literal addresses are never connected to, `localhost` is refused by name, and the
//! one name (`hooks.rebind.test`) is answered by a resolver of the test's own. The test
//! with that resolver runs the webhook deliveries in this process, on a real engine and
//! store (the server binary has no way to be given a resolver).

use std::net::{IpAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use ordo::webhooks::{
    CreateSubscription, Lookup, OnFailure, Resolve, Resolver, WebhookConfig, WebhookStore, Webhooks,
};
use serde_json::json;

use crate::helpers::{tempdir, wait_until, Server};
use crate::receivers::{Answer, Recorder};
use crate::webhooks::SECRET;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_private_and_link_local_targets_are_refused_at_creation_and_never_contacted() {
    let (_t, dir) = tempdir();
    let s = Server::start(&dir, &[]);
    // Anything connecting to the loopback targets below would be accepted here.
    let trap = TcpListener::bind("127.0.0.1:0").unwrap();
    trap.set_nonblocking(true).unwrap();
    let port = trap.local_addr().unwrap().port();
    for url in [
        format!("http://127.0.0.1:{port}/hook"),
        format!("http://localhost:{port}/hook"),
        format!("http://[::1]:{port}/hook"),
        format!("http://[::ffff:127.0.0.1]:{port}/hook"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://10.0.0.1/hook".to_owned(),
        "http://[fe80::1]/hook".to_owned(),
        "http://100.64.0.1/hook".to_owned(),
    ] {
        let p = s
            .subscribe(json!({"url": url, "secret": SECRET}))
            .await
            .problem(422, "invalid_request");
        let detail = p["detail"].as_str().unwrap();
        assert!(
            detail.contains("must be public") && detail.contains("--webhook-allow-private"),
            "{url}: {detail}"
        );
    }
    // An event, and still no subscription to deliver it.
    s.create_sku("SSRF-1", 1).await.ok(201);
    assert_eq!(s.subscriptions().await.ok(200), json!([]));
    assert_eq!(
        trap.accept().map_err(|e| e.kind()).err(),
        Some(std::io::ErrorKind::WouldBlock),
        "something connected to a refused target"
    );
}

/// Answers `hooks.rebind.test` with whatever address it holds now (and nothing else),
/// counting the lookups.
struct Rebinding {
    answer: parking_lot::Mutex<IpAddr>,
    lookups: std::sync::atomic::AtomicUsize,
}

impl Resolve for Rebinding {
    fn lookup<'a>(&'a self, host: &'a str) -> Lookup<'a> {
        let answer = (host == "hooks.rebind.test").then(|| *self.answer.lock());
        self.lookups
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::pin(async move {
            answer
                .map(|ip| vec![ip])
                .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "not a test name"))
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_rebinds_to_loopback_after_creation_is_refused_at_delivery() {
    let (_t, dir) = tempdir();
    let engine = ordo::Engine::open(ordo::EngineConfig {
        data_dir: dir.clone(),
        ..Default::default()
    })
    .unwrap();
    let resolver = Arc::new(Rebinding {
        // A documentation address: public to the check, and never connected to here.
        answer: parking_lot::Mutex::new("203.0.113.7".parse().unwrap()),
        lookups: Default::default(),
    });
    let stage = ordo::shutdown::Shutdown::new();
    let hooks = Webhooks::start(
        engine.clone(),
        WebhookStore::new(engine.store().clone()),
        WebhookConfig {
            retry_schedule: vec![Duration::from_millis(5)],
            resolver: Resolver(resolver.clone()),
            ..Default::default()
        },
        stage.clone(),
        &prometheus::Registry::new(),
    )
    .unwrap();
    let rx = Recorder::ok();
    let port = rx.url.split(':').nth(2).unwrap().split('/').next().unwrap();
    let url = format!("http://hooks.rebind.test:{port}/hook");

    // Created while the name is public. No event is stored until it rebinds, so
    // nothing is ever sent to the public address.
    let sub = hooks
        .create(CreateSubscription {
            url,
            types: vec!["SkuRegistered".into()],
            secret: None,
            on_failure: OnFailure::DeadLetter,
            after: None,
        })
        .await
        .unwrap();
    assert_eq!(sub.lag, 0);
    let looked_up = resolver.lookups.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(looked_up, 1, "checked at creation");

    *resolver.answer.lock() = "127.0.0.1".parse().unwrap();
    engine
        .upsert_sku(
            ordo::UpsertSku {
                sku: "REBIND-1".into(),
                name: "rebind".into(),
                price_minor: 100,
                currency: "EUR".into(),
                per_customer_limit: None,
                stock: 1,
            },
            None,
        )
        .await
        .unwrap();
    wait_until("the event dead-lettered", 60, || async {
        !hooks.dead_letters(&sub.id).unwrap().is_empty()
    })
    .await;
    let dead = hooks.dead_letters(&sub.id).unwrap();
    assert_eq!(dead[0].attempts, 2);
    assert!(
        dead[0].last_error.contains("127.0.0.1, a loopback address"),
        "{}",
        dead[0].last_error
    );
    assert!(
        resolver.lookups.load(std::sync::atomic::Ordering::SeqCst) > looked_up,
        "resolved again at delivery"
    );
    assert_eq!(rx.count(), 0, "the receiver on 127.0.0.1 got nothing");

    assert!(stage.drain(Duration::from_secs(30)).await);
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_a_failed_attempt_and_never_followed() {
    let (_t, dir) = tempdir();
    let s = Server::start(
        &dir,
        &["--webhook-allow-private", "--webhook-retry-schedule", "5ms"],
    );
    let elsewhere = Recorder::ok();
    let to = elsewhere.url.clone();
    let redirecting = Recorder::start(move |_| Answer::status(307).with("location", to.clone()));
    let sub = s
        .subscribe(json!({"url": redirecting.url, "secret": SECRET, "types": ["SkuRegistered"]}))
        .await
        .ok(201);
    let id = sub["id"].as_str().unwrap().to_owned();
    s.create_sku("REDIRECT-1", 1).await.ok(201);
    let dead = s.dead_letters_once(&id, 1).await;
    assert_eq!(dead[0]["attempts"], 2);
    let err = dead[0]["last_error"].as_str().unwrap();
    assert!(err.contains("307") && err.contains("not followed"), "{err}");
    assert_eq!(redirecting.count(), 2);
    assert_eq!(elsewhere.count(), 0, "the redirect was followed");
}
