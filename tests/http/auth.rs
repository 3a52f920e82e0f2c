//! Bearer tokens: required when configured, each role to its routes; per-token rate
//! limits answer 429.

use reqwest::Method;

use crate::helpers::{stop_and_verify, tempdir, Resp, Server};

const ADMIN: &str = "admin-secret-1";
const CLIENT: &str = "client-secret-1";
const PAYMENT: &str = "payment-secret-1";

/// A server with one token per role and a rate limit of 1/s with a burst of 40.
fn start_with_tokens(dir: &std::path::Path) -> Server {
    let tokens = format!("admin:{ADMIN},client:{CLIENT},payment:{PAYMENT}");
    Server::start(
        dir,
        &[
            "--auth-tokens",
            &tokens,
            "--rate-limit",
            "1",
            "--rate-burst",
            "40",
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_required_and_each_role_reaches_only_its_routes() {
    let (_t, dir) = tempdir();
    let mut s = start_with_tokens(&dir);
    let r = s.create_sku("A-1", 5).await;
    r.problem(401, "unauthorized");
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    s.token = Some("not-a-real-token");
    s.create_sku("A-1", 5).await.problem(401, "unauthorized");
    s.token = Some(CLIENT);
    s.create_sku("A-1", 5).await.problem(403, "forbidden");
    s.token = Some(ADMIN);
    s.create_sku("A-1", 5).await.ok(201);
    s.token = Some(PAYMENT);
    s.place("c", &[("A-1", 1)]).await.problem(403, "forbidden");
    s.token = Some(CLIENT);
    let o = s.place("c", &[("A-1", 1)]).await.ok(201);
    let id = o["id"].as_str().unwrap();
    s.pay(id, "p", "succeeded", 1250)
        .await
        .problem(403, "forbidden");
    s.events(None, None).await.problem(403, "forbidden");
    s.token = Some(PAYMENT);
    s.pay(id, "p", "succeeded", 1250).await.ok(200);
    // Health and metrics need no token.
    s.token = None;
    s.healthz().await.ok(200);

    stop_and_verify(s, &dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_runs_dry_gets_429_and_other_tokens_are_unaffected() {
    let (_t, dir) = tempdir();
    let mut s = start_with_tokens(&dir);
    s.token = Some(ADMIN);
    s.create_sku("A-1", 5).await.ok(201);

    // The client token's bucket (burst 40, 1/s) runs dry; other tokens are unaffected.
    s.token = Some(CLIENT);
    let mut limited = None;
    for _ in 0..200 {
        let r = s.sku("A-1").await;
        if r.status == 429 {
            limited = Some(r);
            break;
        }
        r.ok(200);
    }
    let limited = limited.expect("no 429 after 200 requests against a burst of 40");
    limited.problem(429, "rate_limited");
    assert!(limited.header("retry-after").is_some());
    s.token = Some(ADMIN);
    s.sku("A-1").await.ok(200);

    stop_and_verify(s, &dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_role_gets_403_before_its_path_query_or_body_is_looked_at() {
    let (_t, dir) = tempdir();
    let mut s = start_with_tokens(&dir);
    // Each of these would be 400, 404, 415 or 422 for a caller allowed in.
    let cases: [(&str, Method, &str, Option<&str>, &str); 6] = [
        (
            CLIENT,
            Method::PUT,
            "/v1/skus/A-1",
            Some("application/json"),
            "not json",
        ),
        (
            PAYMENT,
            Method::POST,
            "/v1/orders",
            Some("application/json"),
            "[]",
        ),
        (
            PAYMENT,
            Method::POST,
            "/v1/orders",
            Some("text/plain"),
            "{}",
        ),
        (
            CLIENT,
            Method::POST,
            "/v1/orders/not-an-id/payments",
            None,
            "{",
        ),
        (
            PAYMENT,
            Method::POST,
            "/v1/orders/not-an-id/shipment",
            None,
            "",
        ),
        (CLIENT, Method::GET, "/v1/events?after=x", None, ""),
    ];
    for (token, method, path, content_type, body) in cases {
        s.token = Some(token);
        let mut r = s.req(method.clone(), path).body(body);
        if let Some(ct) = content_type {
            r = r.header("content-type", ct);
        }
        let r = Resp::read(r.send().await.unwrap()).await;
        assert_eq!(r.status, 403, "{method} {path} {body:?}: {}", r.text);
        r.problem(403, "forbidden");
    }
    // The same requests from the admin get their own answers.
    s.token = Some(ADMIN);
    let r = s
        .req(Method::PUT, "/v1/skus/A-1")
        .header("content-type", "application/json")
        .body("not json");
    Resp::read(r.send().await.unwrap())
        .await
        .problem(400, "invalid_request");
    s.ship("not-an-id", "prepared")
        .await
        .problem(404, "not_found");
    let r = s.req(Method::GET, "/v1/events?after=x");
    Resp::read(r.send().await.unwrap())
        .await
        .problem(422, "invalid_request");
}
