//! The catalogue: SKUs created, updated, read, listed and validated; stock adjusted.

use serde_json::json;

use crate::helpers::{stop_and_verify, tempdir, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skus_are_created_updated_read_listed_and_validated() {
    let (_t, dir) = tempdir();
    let s = Server::start(&dir, &[]);

    let created = s.create_sku("TEE-1", 10).await;
    assert_eq!(created.header("location"), Some("/v1/skus/TEE-1"));
    let v = created.ok(201);
    assert_eq!(
        (v["available"].as_i64(), v["reserved"].as_i64()),
        (Some(10), Some(0))
    );
    let upd = s
        .put_sku("TEE-1", json!({"name": "Tee, blue", "price_minor": 1500, "currency": "EUR", "per_customer_limit": 3}))
        .await
        .ok(200);
    assert_eq!(upd["name"], "Tee, blue");
    assert_eq!(upd["available"], 10);
    s.create_sku("MUG-1", 5).await.ok(201);
    s.create_sku("USD-1", 5).await.ok(201);
    s.put_sku(
        "USD-1",
        json!({"name": "Cap", "price_minor": 900, "currency": "USD"}),
    )
    .await
    .ok(200);
    assert_eq!(s.sku("TEE-1").await.ok(200)["price_minor"], 1500);
    s.sku("NOPE").await.problem(404, "unknown_sku");
    s.put_sku(
        "bad%20sku",
        json!({"name": "x", "price_minor": 1, "currency": "EUR"}),
    )
    .await
    .problem(422, "invalid_request");
    s.put_sku(
        "X-1",
        json!({"name": "x", "price_minor": 1, "currency": "euro"}),
    )
    .await
    .problem(422, "invalid_request");
    let page = s.skus(Some(2), None).await.ok(200);
    assert_eq!(page["skus"].as_array().unwrap().len(), 2);
    assert_eq!(page["next"], "TEE-1");
    let page2 = s.skus(Some(2), Some("TEE-1")).await.ok(200);
    assert_eq!(page2["skus"][0]["sku"], "USD-1");
    assert!(page2.get("next").is_none());
    s.skus(Some(0), None).await.problem(422, "invalid_request");

    stop_and_verify(s, &dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_adjustments_add_units_and_refuse_an_overdraw_or_an_unknown_sku() {
    let (_t, dir) = tempdir();
    let s = Server::start(&dir, &[]);
    s.create_sku("MUG-1", 5).await.ok(201);

    let adj = s.adjust("MUG-1", 3, "delivery").await.ok(200);
    assert_eq!(adj["available"], 8);
    s.adjust("MUG-1", -9, "count")
        .await
        .problem(409, "insufficient_stock");
    s.adjust("NOPE", 1, "x").await.problem(404, "unknown_sku");

    stop_and_verify(s, &dir);
}
