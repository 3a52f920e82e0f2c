//! Operations endpoints (health, readiness, metrics) and what answers a request no route
//! takes.

use reqwest::Method;

use crate::helpers::{seed_catalog, stop_and_verify, tempdir, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics_answer_and_unknown_routes_get_404_or_405() {
    let (_t, dir) = tempdir();
    let s = Server::start(&dir, &[]);
    // Something for the metrics to count: one order placed, one out of stock.
    seed_catalog(&s).await;
    s.place("ann", &[("TEE-1", 2), ("MUG-1", 1)]).await.ok(201);
    s.place("cid", &[("MUG-1", 100)])
        .await
        .problem(409, "out_of_stock");

    assert_eq!(s.healthz().await.ok(200)["status"], "ok");
    assert_eq!(s.readyz().await.ok(200)["status"], "ready");
    let m = s.metrics().await;
    assert_eq!(m.status, 200);
    for needle in [
        "ordo_http_requests_total{route=\"/v1/orders\",method=\"POST\",status=\"201\"}",
        "ordo_http_request_duration_seconds_bucket{route=\"/v1/orders\"",
        "ordo_orders_total{outcome=\"failed_out_of_stock\"} 1",
        "ordo_journal_batch_events_count",
        "ordo_journal_write_seconds_bucket",
        "ordo_live_order_actors",
        "ordo_overloaded_total 0",
    ] {
        assert!(
            m.text.contains(needle),
            "metrics lack {needle}:\n{}",
            m.text
        );
    }
    s.get("/v1/nothing").await.problem(404, "not_found");
    s.send(Method::DELETE, "/v1/orders", None)
        .await
        .problem(405, "invalid_request");

    stop_and_verify(s, &dir);
}
