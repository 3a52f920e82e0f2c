//! Input the API must refuse without harm: bodies over the limit (413), malformed or
//! out-of-range JSON, wrong media types, oversized keys. Each gets a problem, changes
//! nothing, and the server stays up.

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
