//! Webhooks by the Standard Webhooks spec: deliveries the reference verifier (the
//! `standardwebhooks` crate) accepts, generated `whsec_` secrets shown once, rotation
//! with both signatures during grace, `webhook-id` the same on every attempt and
//! different in another store, the retry schedule to its dead letter, `Retry-After`
//! honoured, and `410 Gone` pausing the subscription. Receivers on 127.0.0.1.

use std::time::Duration;

use serde_json::{json, Value};
use standardwebhooks::Webhook;

use crate::helpers::{tempdir, wait_until, Server};
use crate::receivers::{Answer, Recorder, Request};
use crate::webhooks::SECRET;

/// `--webhook-allow-private` (the receivers are on 127.0.0.1) and `extra`.
fn start(dir: &std::path::Path, extra: &[&str]) -> Server {
    let flags: Vec<&str> = ["--webhook-allow-private"]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
    Server::start(dir, &flags)
}

/// Subscribes `url` to `SkuRegistered` with `body`'s other fields; the answer.
async fn subscribe(s: &Server, url: &str, mut body: Value) -> Value {
    body["url"] = json!(url);
    body["types"] = json!(["SkuRegistered"]);
    s.subscribe(body).await.ok(201)
}

/// Whether the reference verifier accepts `req` with `secret`.
fn verifies(secret: &str, req: &Request) -> bool {
    Webhook::new(secret)
        .unwrap()
        .verify(&req.body, &req.headers)
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_verify_with_the_standard_webhooks_library_under_a_generated_secret() {
    let (_t, dir) = tempdir();
    let s = start(&dir, &["--webhook-retry-schedule", "5ms"]);
    // The first attempt fails: the retry must carry the same webhook-id.
    let rx = Recorder::start(|n| Answer::status(if n == 0 { 500 } else { 200 }));
    for bad in [
        "a-long-enough-webhook-secret",
        "whsec_c2hvcnQ=",
        "whsec_!!!",
    ] {
        s.subscribe(json!({"url": rx.url, "secret": bad}))
            .await
            .problem(422, "invalid_request");
    }
    let sub = subscribe(&s, &rx.url, json!({})).await;
    let secret = sub["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{sub}");
    let id = sub["id"].as_str().unwrap();
    assert!(
        s.subscription(id).await.ok(200).get("secret").is_none(),
        "a secret is shown once"
    );
    let given = subscribe(&s, &Recorder::ok().url, json!({"secret": SECRET})).await;
    assert!(
        given.get("secret").is_none(),
        "a given secret is not echoed"
    );

    s.create_sku("STD-1", 1).await.ok(201);
    wait_until("two attempts", 60, || async { rx.count() == 2 }).await;
    let got = rx.requests();
    for req in &got {
        assert!(verifies(&secret, req), "{:?}", req.headers);
        assert!(!verifies(SECRET, req), "another secret verifies too");
        assert!(req.header("ordo-signature").starts_with("t="));
    }
    let msg_id = got[0].header("webhook-id");
    assert_eq!(
        got[1].header("webhook-id"),
        msg_id,
        "one id for every attempt"
    );
    let seq = got[0].header("ordo-event-seq");
    assert!(
        msg_id.starts_with("msg_") && msg_id.ends_with(&format!("_0_{seq}")),
        "msg_<store id>_<incarnation>_<seq>: {msg_id}"
    );

    // Another store delivers the same seq under another id.
    let (_t2, dir2) = tempdir();
    let s2 = start(&dir2, &[]);
    let rx2 = Recorder::ok();
    subscribe(&s2, &rx2.url, json!({"secret": SECRET})).await;
    s2.create_sku("STD-1", 1).await.ok(201);
    wait_until("a delivery from the other store", 60, || async {
        rx2.count() == 1
    })
    .await;
    let other = &rx2.requests()[0];
    assert!(verifies(SECRET, other));
    assert_eq!(other.header("ordo-event-seq"), seq);
    assert_ne!(other.header("webhook-id"), msg_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_secret_signs_beside_the_old_one_until_the_grace_ends() {
    let (_t, dir) = tempdir();
    let s = start(&dir, &[]);
    let rx = Recorder::ok();
    let sub = subscribe(&s, &rx.url, json!({"secret": SECRET})).await;
    let id = sub["id"].as_str().unwrap().to_owned();
    for bad in [
        json!({"grace": "forever"}),
        json!({"grace": "8d"}),
        json!({}),
        json!({"grace": "1h", "secret": "plain-text-is-not-a-secret"}),
        json!({"grace": "1h", "colour": "red"}),
    ] {
        s.rotate_secret(&id, bad)
            .await
            .problem(422, "invalid_request");
    }
    s.rotate_secret("01ARZ3NDEKTSV4RRFFQ69G5FAV", json!({"grace": "1h"}))
        .await
        .problem(404, "not_found");

    let second = s.rotate_secret(&id, json!({"grace": "1h"})).await.ok(200)["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(second.starts_with("whsec_") && second != SECRET);
    s.create_sku("ROT-1", 1).await.ok(201);
    wait_until("a delivery", 60, || async { rx.count() == 1 }).await;
    let during = &rx.requests()[0];
    assert_eq!(
        during.header("webhook-signature").split(' ').count(),
        2,
        "both signatures during grace"
    );
    assert!(verifies(&second, during), "the new secret verifies");
    assert!(verifies(SECRET, during), "the old secret verifies");

    // A rotation without grace: only the given secret signs from now on.
    let third = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let r = s
        .rotate_secret(&id, json!({"grace": "0s", "secret": third}))
        .await
        .ok(200);
    assert_eq!(r["secret"], third);
    s.create_sku("ROT-2", 1).await.ok(201);
    wait_until("a second delivery", 60, || async { rx.count() == 2 }).await;
    let after = &rx.requests()[1];
    assert_eq!(after.header("webhook-signature").split(' ').count(), 1);
    assert!(verifies(third, after));
    assert!(
        !verifies(&second, after),
        "the rotated-out secret still signs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_attempt_waits_for_the_receivers_retry_after() {
    let (_t, dir) = tempdir();
    let s = start(&dir, &["--webhook-retry-schedule", "5ms"]);
    let rx = Recorder::start(|n| match n {
        0 => Answer::status(503).with("retry-after", "2"),
        _ => Answer::status(200),
    });
    subscribe(&s, &rx.url, json!({"secret": SECRET})).await;
    s.create_sku("LATER-1", 1).await.ok(201);
    wait_until("two attempts", 60, || async { rx.count() == 2 }).await;
    let got = rx.requests();
    assert!(
        got[1].at.duration_since(got[0].at) >= Duration::from_secs(2),
        "retried {:?} after a Retry-After of 2 s",
        got[1].at.duration_since(got[0].at)
    );
    let stamp = |r: &Request| r.header("webhook-timestamp").parse::<u64>().unwrap();
    assert!(
        stamp(&got[1]) >= stamp(&got[0]) + 2,
        "each attempt carries its own time"
    );
    assert!(got.iter().all(|r| verifies(SECRET, r)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_410_gone_pauses_the_subscription_until_a_redrive_resumes_it() {
    let (_t, dir) = tempdir();
    let s = start(&dir, &["--webhook-retry-schedule", "5ms,5ms,5ms"]);
    let rx = Recorder::start(|n| Answer::status(if n == 0 { 410 } else { 200 }));
    let sub = subscribe(&s, &rx.url, json!({"secret": SECRET})).await;
    let id = sub["id"].as_str().unwrap().to_owned();
    s.create_sku("GONE-1", 1).await.ok(201);
    wait_until("the subscription paused", 60, || async {
        s.subscription(&id).await.json()["paused"] == true
    })
    .await;
    let view = s.subscription(&id).await.ok(200);
    assert_eq!(rx.count(), 1, "no attempt after 410 Gone");
    assert_eq!(view["dead_letters"], 0, "{view}");
    let seq: u64 = rx.requests()[0].header("ordo-event-seq").parse().unwrap();
    assert!(
        view["cursor"].as_u64().unwrap() < seq,
        "the event is still to deliver: {view}"
    );

    assert_eq!(s.redrive(&id).await.ok(200)["queued"], 0);
    wait_until("the event delivered after the resume", 60, || async {
        rx.count() == 2
    })
    .await;
    let got = rx.requests();
    assert_eq!(got[1].header("webhook-id"), got[0].header("webhook-id"));
    wait_until("the subscription resumed", 60, || async {
        s.subscription(&id).await.json()["paused"] == false
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_is_dead_lettered_after_the_last_attempt_of_the_schedule() {
    let (_t, dir) = tempdir();
    let s = start(&dir, &["--webhook-retry-schedule", "5ms,10ms,15ms"]);
    let rx = Recorder::start(|_| Answer::status(500));
    let sub = subscribe(&s, &rx.url, json!({"secret": SECRET})).await;
    let id = sub["id"].as_str().unwrap().to_owned();
    s.create_sku("SCHED-1", 1).await.ok(201);
    let dead = s.dead_letters_once(&id, 1).await;
    assert_eq!(dead[0]["attempts"], 4);
    assert!(dead[0]["last_error"].as_str().unwrap().contains("500"));
    let got = rx.requests();
    assert_eq!(got.len(), 4, "one attempt and a retry per wait");
    let attempts: Vec<String> = got
        .iter()
        .map(|r| r.header("ordo-delivery-attempt"))
        .collect();
    assert_eq!(attempts, ["1", "2", "3", "4"]);
    assert!(got
        .iter()
        .all(|r| r.header("webhook-id") == got[0].header("webhook-id")));
    let m = s.metrics().await.text;
    assert!(
        m.contains(&format!(
            "ordo_webhook_retries_total{{subscription=\"{id}\"}} 3"
        )),
        "{m}"
    );
}
