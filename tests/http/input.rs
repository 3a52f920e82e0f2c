//! Input the API must refuse without harm: bodies over the limit (413), malformed or
//! out-of-range JSON, wrong media types, oversized keys. Each gets a problem, changes
//! nothing, and the server stays up. And input that must not grow the server: made-up
//! methods, paths and tokens.

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::StreamExt;
use reqwest::Method;

use crate::helpers::{tempdir, Resp, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_get_413_and_change_nothing() {
    let (_t, dir) = tempdir();
    let s = Server::start(&dir, &["--max-body-bytes", "1024"]);
    s.create_sku("A-1", 5).await.ok(201);
    let skus: Vec<String> = (0..100).map(|i| format!("SKU-{i:04}")).collect();
    let lines: Vec<(&str, u32)> = skus.iter().map(|s| (s.as_str(), 1)).collect();
    s.place("c", &lines).await.problem(413, "payload_too_large");
    // Chunked (no Content-Length) is cut off as well.
    let big = vec![b' '; 4096];
    let stream = futures::stream::iter(vec![Ok::<_, std::io::Error>(big)]);
    let r = Resp::read(
        s.req(Method::POST, "/v1/orders")
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await
            .unwrap(),
    )
    .await;
    r.problem(413, "payload_too_large");
    assert_eq!(s.events(None, None).await.ok(200)["next"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_gets_a_problem_changes_nothing_and_the_server_stays_up() {
    let (_t, dir) = tempdir();
    let s = Server::start(&dir, &[]);
    s.create_sku("A-1", 50).await.ok(201);
    let long = "x".repeat(300);
    let long_sku_path = format!("/v1/skus/{long}");
    let cases: Vec<(&str, &str, String, u16)> = vec![
        ("POST", "/v1/orders", "{\"customer_id\": \"c\", \"lines\": [".into(), 400),
        ("POST", "/v1/orders", "not json".into(), 400),
        ("POST", "/v1/orders", "".into(), 400),
        ("POST", "/v1/orders", "[]".into(), 422),
        ("POST", "/v1/orders", "{\"customer_id\": 5, \"lines\": []}".into(), 422),
        ("POST", "/v1/orders", "{\"customer_id\": \"c\"}".into(), 422),
        ("POST", "/v1/orders", "{\"customer_id\": \"c\", \"lines\": []}".into(), 422),
        ("POST", "/v1/orders", "{\"customer_id\": \"c\", \"lines\": [{\"sku\": \"A-1\", \"qty\": 0}]}".into(), 422),
        ("POST", "/v1/orders", "{\"customer_id\": \"c\", \"lines\": [{\"sku\": \"A-1\", \"qty\": -1}]}".into(), 422),
        ("POST", "/v1/orders", "{\"customer_id\": \"c\", \"lines\": [{\"sku\": \"A-1\", \"qty\": 10001}]}".into(), 422),
        ("POST", "/v1/orders", "{\"customer_id\": \"c\", \"lines\": [{\"sku\": \"A-1\", \"qty\": 99999999999999999999999}]}".into(), 422),
        ("POST", "/v1/orders", "{\"customer_id\": \"c\", \"lines\": [{\"sku\": \"A-1\", \"qty\": 1.5}]}".into(), 422),
        ("POST", "/v1/orders", "{\"customer_id\": \"c\", \"lines\": [{\"sku\": \"A-1\", \"qty\": \"1\"}]}".into(), 422),
        ("POST", "/v1/orders", "{\"customer_id\": \"c\", \"lines\": [{\"sku\": \"A-1\", \"qty\": 1}, {\"sku\": \"A-1\", \"qty\": 1}]}".into(), 422),
        ("POST", "/v1/orders", "{\"customer_id\": \"\", \"lines\": [{\"sku\": \"A-1\", \"qty\": 1}]}".into(), 422),
        ("POST", "/v1/orders", format!("{{\"customer_id\": \"{long}\", \"lines\": [{{\"sku\": \"A-1\", \"qty\": 1}}]}}"), 422),
        ("POST", "/v1/orders", "{\"customer_id\": \"kunde-ü\", \"lines\": [{\"sku\": \"A-1\", \"qty\": 1}]}".into(), 422),
        ("POST", "/v1/orders", "{\"customer_id\": \"c\", \"lines\": [{\"sku\": \"Ä-1\", \"qty\": 1}]}".into(), 422),
        ("POST", "/v1/orders", format!("{{\"customer_id\": \"c\", \"lines\": [{{\"sku\": \"{long}\", \"qty\": 1}}]}}"), 422),
        ("POST", "/v1/orders", "{\"customer_id\": \"c\", \"lines\": [{\"sku\": \"A-1\", \"qty\": 1, \"price\": 0}]}".into(), 422),
        ("POST", "/v1/orders", "{\"customer_id\": \"c\", \"lines\": [{\"sku\": \"A-1\", \"qty\": 1}], \"total_minor\": 1}".into(), 422),
        ("PUT", "/v1/skus/B-1", "{\"name\": \"b\", \"price_minor\": 1e3, \"currency\": \"EUR\"}".into(), 422),
        ("PUT", "/v1/skus/B-1", "{\"name\": \"b\", \"price_minor\": -5, \"currency\": \"EUR\"}".into(), 422),
        ("PUT", "/v1/skus/B-1", "{\"name\": \"b\", \"price_minor\": 5, \"currency\": \"EUR\", \"stock\": -1}".into(), 422),
        ("PUT", "/v1/skus/B-1", "{\"name\": \"b\", \"price_minor\": 9223372036854775808, \"currency\": \"EUR\"}".into(), 422),
        ("PUT", "/v1/skus/B-1", "{\"name\": \"\", \"price_minor\": 5, \"currency\": \"EUR\"}".into(), 422),
        ("PUT", &long_sku_path, "{\"name\": \"b\", \"price_minor\": 5, \"currency\": \"EUR\"}".into(), 422),
        ("POST", "/v1/skus/A-1/stock-adjustments", "{\"delta\": 0, \"reason\": \"x\"}".into(), 422),
        ("POST", "/v1/skus/A-1/stock-adjustments", "{\"delta\": 1}".into(), 422),
        ("POST", "/v1/skus/A-1/stock-adjustments", "{\"delta\": -9223372036854775808, \"reason\": \"x\"}".into(), 422),
        ("POST", "/v1/skus/A-1/stock-adjustments", "{\"delta\": -51, \"reason\": \"x\"}".into(), 409),
        ("POST", "/v1/skus/A-1/stock-adjustments", "{\"delta\": 9223372036854775807, \"reason\": \"x\"}".into(), 422),
    ];
    let before = s.events(None, None).await.ok(200)["next"].clone();
    for (method, path, body, status) in &cases {
        let r = Resp::read(
            s.req(method.parse().unwrap(), path)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            r.status.as_u16(),
            *status,
            "{method} {path} {body}: {}",
            r.text
        );
        assert_eq!(
            r.header("content-type"),
            Some("application/problem+json"),
            "{body}"
        );
        assert!(r.json()["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
    // Wrong media type, bad Idempotency-Key.
    let r = Resp::read(
        s.req(Method::POST, "/v1/orders")
            .header("content-type", "text/plain")
            .body("{}")
            .send()
            .await
            .unwrap(),
    )
    .await;
    r.problem(415, "invalid_request");
    let r = s.place_keyed(&"k".repeat(256), "c", &[("A-1", 1)]).await;
    r.problem(422, "invalid_request");
    assert_eq!(s.events(None, None).await.ok(200)["next"], before);
    let sku = s.sku("A-1").await.ok(200);
    assert_eq!(
        (sku["available"].as_i64(), sku["reserved"].as_i64()),
        (Some(50), Some(0))
    );
    s.healthz().await.ok(200);
}

// ---------------------------------------------------------------------------------------
// Input that would grow the server. Every request is counted in /metrics, before auth and
// whatever it asked for, and a series once made is kept: so no label may come from what
// a client sends (issue 21: 20,000 invented methods took /metrics from 7 KB to 81 MB).

/// The `ordo_http_requests_total` series of a scrape, as their label text.
fn request_series(metrics: &str) -> BTreeSet<String> {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix("ordo_http_requests_total{"))
        .filter_map(|l| l.rsplit_once('}'))
        .map(|(labels, _)| labels.to_owned())
        .collect()
}

/// One label's value in a series' label text (`route="…",method="…",status="…"`).
fn label<'a>(series: &'a str, name: &str) -> &'a str {
    let start = series
        .find(&format!("{name}=\""))
        .unwrap_or_else(|| panic!("no {name} in {series}"))
        + name.len()
        + 2;
    let len = series[start..].find('"').unwrap();
    &series[start..start + len]
}

/// A scrape of /metrics: (its text, the number of its lines).
async fn scrape(s: &Server) -> (String, usize) {
    let r = s.metrics().await;
    assert_eq!(r.status, 200, "{}", r.text);
    let lines = r.text.lines().count();
    (r.text, lines)
}

/// `n` requests a client made up: invented methods, random paths, random ids, bodies of
/// the wrong type or shape. Request `i` has shape `i % 6`, so every batch has each shape.
async fn made_up_requests(s: &Arc<Server>, n: usize) {
    futures::stream::iter(0..n)
        .map(|i| {
            let s = s.clone();
            async move {
                let r: u64 = rand::random();
                let invented = Method::from_bytes(format!("X{r:X}").as_bytes()).unwrap();
                let req = match i % 6 {
                    0 => s.req(invented, &format!("/{r:x}/{i}")),
                    1 => s.req(invented, &format!("/v1/skus/S-{r:x}")),
                    2 => s.req(Method::GET, &format!("/v1/orders/{r:x}")),
                    3 => s
                        .req(Method::POST, "/v1/orders")
                        .header("content-type", format!("text/x-{r:x}"))
                        .body("{}"),
                    4 => s
                        .req(Method::POST, "/v1/orders")
                        .header("content-type", "application/json")
                        .body(format!("{{\"customer_id\": {r}}}")),
                    _ => s.req(Method::DELETE, &format!("/v1/subscriptions/{r:x}")),
                };
                let status = req.send().await.expect("request").status().as_u16();
                assert!([404, 405, 415, 422].contains(&status), "{i}: {status}");
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_methods_and_paths_do_not_grow_the_request_metrics() {
    let (_t, dir) = tempdir();
    let s = Arc::new(Server::start(&dir, &["--rate-limit", "1000000"]));
    s.create_sku("A-1", 5).await.ok(201);
    // The scrape's own series first, so that later scrapes count only the batches'.
    scrape(&s).await;

    made_up_requests(&s, 2_000).await;
    let (first, first_lines) = scrape(&s).await;
    made_up_requests(&s, 2_000).await;
    let (second, second_lines) = scrape(&s).await;

    // Bounded by the shapes (a handful), not by the 4,000 requests.
    let series = request_series(&second);
    let few: Vec<&String> = series.iter().take(12).collect();
    assert!(series.len() <= 12, "{} series, e.g. {few:#?}", series.len());
    // 2,000 more requests, not one more series or line.
    assert_eq!(request_series(&first), series);
    assert_eq!(first_lines, second_lines);
    let routes = ordo::http::routes::route_list();
    for s in &series {
        let route = label(s, "route");
        assert!(
            route == "unmatched" || routes.iter().any(|(_, p)| *p == route),
            "{s}"
        );
        let method = label(s, "method");
        assert!(
            ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "other"].contains(&method),
            "{s}"
        );
        assert!(label(s, "status").parse::<u16>().is_ok(), "{s}");
    }
    for expected in [
        "route=\"unmatched\",method=\"other\",status=\"404\"",
        "route=\"/v1/skus/{sku}\",method=\"other\",status=\"405\"",
        "route=\"/v1/orders\",method=\"POST\",status=\"415\"",
    ] {
        assert!(series.contains(expected), "lacks {expected}: {series:#?}");
    }
    // The rate limiter keeps one bucket per peer (here one: 127.0.0.1), not per request.
    let callers = second
        .lines()
        .find_map(|l| l.strip_prefix("ordo_rate_limiter_callers "))
        .expect("ordo_rate_limiter_callers");
    assert!(callers.trim().parse::<u64>().unwrap() <= 1, "{callers}");
    s.healthz().await.ok(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_tokens_get_no_rate_limit_bucket() {
    let (_t, dir) = tempdir();
    let mut s = Server::start(
        &dir,
        &[
            "--auth-tokens",
            "admin:admin-secret-1",
            "--rate-limit",
            "1000000",
        ],
    );
    for _ in 0..500 {
        let token = format!("made-up-{:x}", rand::random::<u64>());
        let r = Resp::read(
            s.req(Method::GET, "/v1/skus/A-1")
                .bearer_auth(token)
                .send()
                .await
                .unwrap(),
        )
        .await;
        r.problem(401, "unauthorized");
    }
    // Refused before the limiter: no bucket was made for any of them.
    let (text, _) = scrape(&s).await;
    assert!(
        text.lines().any(|l| l == "ordo_rate_limiter_callers 0"),
        "{text}"
    );
    s.token = Some("admin-secret-1");
    s.create_sku("A-1", 1).await.ok(201);
}
