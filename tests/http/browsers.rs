//! What a web page in the operator's browser can send to a server on 127.0.0.1, and why
//! it changes nothing (SPEC §4: bodies must be `application/json`; with no tokens, `Host`
//! and `Origin` are checked). Host and Origin are only header values here: every request
//! goes to the server on loopback.

use std::path::Path;

use reqwest::Method;
use serde_json::Value;

use crate::helpers::{seed_catalog, stop_and_verify, tempdir, Resp, Server};

const ADMIN: &str = "admin-secret-1";

async fn send(r: reqwest::RequestBuilder) -> Resp {
    Resp::read(r.send().await.expect("request")).await
}

/// A server started with `flags` on the seeded catalogue, with one PENDING order: the
/// server, the order's id and the log's end.
async fn with_a_pending_order(dir: &Path, flags: &[&str]) -> (Server, String, Value) {
    let s = Server::start(dir, flags);
    seed_catalog(&s).await;
    let order = s.place("c", &[("TEE-1", 1)]).await.ok(201);
    let next = s.events(None, None).await.ok(200)["next"].clone();
    let id = order["id"].as_str().unwrap().to_owned();
    (s, id, next)
}

/// What a refused request must have left alone: the log's end and the order.
async fn unchanged(s: &Server, next: &Value, order_id: &str) {
    assert_eq!(&s.events(None, None).await.ok(200)["next"], next);
    assert_eq!(s.order(order_id).await.ok(200)["status"], "PENDING");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_is_not_declared_json_gets_415_and_changes_nothing() {
    let (_t, dir) = tempdir();
    let (s, id, next) = with_a_pending_order(&dir, &[]).await;
    let order = r#"{"customer_id": "c", "lines": [{"sku": "MUG-1", "qty": 1}]}"#;
    let cancel = format!("/v1/orders/{id}/cancel");
    let cases: Vec<(Method, &str, Option<&str>, &str)> = vec![
        // A page's fetch with a Blob body: no Content-Type at all.
        (Method::POST, "/v1/orders", None, order),
        (Method::POST, &cancel, None, r#"{"reason": "x"}"#),
        (Method::POST, "/v1/orders", Some("text/plain"), order),
        (
            Method::POST,
            "/v1/orders",
            Some("text/plain;charset=UTF-8"),
            order,
        ),
        (
            Method::POST,
            "/v1/orders",
            Some("application/merge-patch+json"),
            order,
        ),
        // An HTML form, even with nothing in it.
        (
            Method::POST,
            &cancel,
            Some("application/x-www-form-urlencoded"),
            "",
        ),
        (
            Method::POST,
            &cancel,
            Some("multipart/form-data; boundary=x"),
            "",
        ),
        (
            Method::PUT,
            "/v1/skus/MUG-1",
            Some("text/plain"),
            r#"{"name": "m", "price_minor": 1, "currency": "EUR"}"#,
        ),
        // Routes that read no body are held to it too.
        (
            Method::POST,
            "/v1/subscriptions/sub-1/dead-letters/redrive",
            Some("text/plain"),
            "{}",
        ),
    ];
    for (method, path, ct, body) in cases {
        let mut r = s.req(method.clone(), path).body(body.to_owned());
        if let Some(ct) = ct {
            r = r.header("content-type", ct);
        }
        let resp = send(r).await;
        assert_eq!(resp.status, 415, "{method} {path} {ct:?}: {}", resp.text);
        resp.problem(415, "invalid_request");
    }
    unchanged(&s, &next, &id).await;
    assert_eq!(s.sku("MUG-1").await.ok(200)["available"], 5);

    // application/json with parameters, in any case, is JSON.
    for ct in ["application/json; charset=utf-8", "Application/JSON"] {
        let r = s
            .req(Method::POST, "/v1/orders")
            .header("content-type", ct)
            .body(order);
        send(r).await.ok(201);
    }
    // No body, no Content-Type: cancel's body is optional (the reason defaults).
    assert_eq!(s.cancel(&id).await.ok(200)["status"], "CANCELLED");
    stop_and_verify(s, &dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_site_page_cannot_act_on_a_server_without_tokens() {
    let (_t, dir) = tempdir();
    let (s, id, next) = with_a_pending_order(&dir, &[]).await;
    let cancel = format!("/v1/orders/{id}/cancel");
    for origin in [
        "https://evil.example",
        "null",
        "http://127.0.0.1:1",
        "https://127.0.0.1",
    ] {
        // With a JSON body, and with none at all (the cancel a page could send).
        let r = s
            .req(Method::POST, &cancel)
            .header("origin", origin)
            .json(&serde_json::json!({"reason": "csrf"}));
        send(r).await.problem(403, "forbidden");
        let r = s.req(Method::POST, &cancel).header("origin", origin);
        send(r).await.problem(403, "forbidden");
        // Reads too: the log is what a page would want.
        let r = s.req(Method::GET, "/v1/events").header("origin", origin);
        send(r).await.problem(403, "forbidden");
    }
    unchanged(&s, &next, &id).await;

    // The server's own pages (same origin) may.
    let own = format!("http://{}", s.authority());
    let r = s.req(Method::POST, &cancel).header("origin", own);
    assert_eq!(send(r).await.ok(200)["status"], "CANCELLED");
    stop_and_verify(s, &dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebinding_host_is_refused_without_tokens_and_allowed_hosts_are_not() {
    let (_t, dir) = tempdir();
    let (s, id, next) = with_a_pending_order(&dir, &["--allowed-hosts", "ordo.test"]).await;
    let port = s.authority().rsplit_once(':').unwrap().1.to_owned();
    let evil = format!("evil.example:{port}");
    // evil.example resolved to 127.0.0.1: the page is "same-origin" with the server.
    let r = s
        .req(Method::POST, &format!("/v1/orders/{id}/cancel"))
        .header("host", &evil)
        .header("origin", format!("http://{evil}"))
        .json(&serde_json::json!({}));
    send(r).await.problem(403, "forbidden");
    let r = s
        .req(Method::POST, "/v1/orders")
        .header("host", &evil)
        .json(&serde_json::json!({"customer_id": "c", "lines": [{"sku": "MUG-1", "qty": 1}]}));
    send(r).await.problem(403, "forbidden");
    for path in [
        format!("/v1/orders/{id}"),
        "/v1/events".into(),
        "/metrics".into(),
    ] {
        let r = s.req(Method::GET, &path).header("host", &evil);
        send(r).await.problem(403, "forbidden");
    }
    // The loopback names on the server's port, and --allowed-hosts, are the server.
    let r = s.req(Method::GET, &format!("/v1/orders/{id}")).header(
        "host",
        format!("127.0.0.1:{}", port.parse::<u16>().unwrap() ^ 1),
    );
    send(r).await.problem(403, "forbidden");
    unchanged(&s, &next, &id).await;
    for host in ["localhost", "[::1]", "ordo.test"] {
        let r = s
            .req(Method::GET, &format!("/v1/orders/{id}"))
            .header("host", format!("{host}:{port}"))
            .header("origin", format!("http://{host}:{port}"));
        send(r).await.ok(200);
    }
    stop_and_verify(s, &dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tokens_any_host_or_origin_may_call_but_bodies_must_still_be_json() {
    let (_t, dir) = tempdir();
    let mut s = Server::start(&dir, &["--auth-tokens", &format!("admin:{ADMIN}")]);
    s.token = Some(ADMIN);
    // Behind a proxy, or reached by a name the server cannot know: the token decides.
    let r = s
        .req(Method::PUT, "/v1/skus/A-1")
        .header("host", "orders.example.com")
        .header("origin", "https://evil.example")
        .json(&serde_json::json!({"name": "a", "price_minor": 100, "currency": "EUR", "stock": 2}));
    send(r).await.ok(201);
    let r = s
        .req(Method::POST, "/v1/orders")
        .header("host", "orders.example.com")
        .body(r#"{"customer_id": "c", "lines": [{"sku": "A-1", "qty": 1}]}"#);
    send(r).await.problem(415, "invalid_request");
    assert_eq!(s.sku("A-1").await.ok(200)["available"], 2);
    stop_and_verify(s, &dir);
}
