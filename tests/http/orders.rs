//! Orders through their life: placed (traced), read, paid (once per payment ref), shipped,
//! cancelled; placements refused; a flash sale under concurrency.

use std::collections::HashMap;
use std::sync::Arc;

use crate::helpers::{place_many, seed_catalog, stop_and_verify, tempdir, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_is_placed_traced_paid_once_and_shipped_to_the_end() {
    let (_t, dir) = tempdir();
    let s = Server::start(&dir, &[]);
    seed_catalog(&s).await;

    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let placed = s
        .place_traced(
            &format!("00-{trace}-00f067aa0ba902b7-01"),
            "ann",
            &[("TEE-1", 2), ("MUG-1", 1)],
        )
        .await;
    assert_eq!(placed.header("x-trace-id"), Some(trace));
    let order = placed.ok(201);
    let id = order["id"].as_str().unwrap().to_owned();
    assert_eq!(
        placed.header("location"),
        Some(format!("/v1/orders/{id}").as_str())
    );
    assert_eq!(order["status"], "PENDING");
    assert_eq!(order["total_minor"], 2 * 1500 + 1250);
    let events = s.order_events(&id).await.ok(200);
    let evs = events["events"].as_array().unwrap();
    assert_eq!(evs[0]["type"], "OrderCreated");
    assert_eq!(evs[1]["type"], "OrderPending");
    assert!(evs.iter().all(|e| e["trace_id"] == trace));
    assert_eq!(s.order(&id).await.ok(200)["id"], id.as_str());
    s.order("01ARZ3NDEKTSV4RRFFQ69G5FAV")
        .await
        .problem(404, "not_found");
    s.order("not-an-id").await.problem(404, "not_found");

    // Paid: the wrong amount is refused; the same payment ref again changes nothing.
    s.pay(&id, "p-1", "succeeded", 1)
        .await
        .problem(422, "amount_mismatch");
    let paid = s.pay(&id, "p-1", "succeeded", 4250).await.ok(200);
    assert_eq!(paid["status"], "CONFIRMED");
    let again = s.pay(&id, "p-1", "succeeded", 4250).await.ok(200);
    assert_eq!(again["status"], "CONFIRMED");
    let sku = s.sku("TEE-1").await.ok(200);
    assert_eq!(
        (sku["available"].as_i64(), sku["sold"].as_i64()),
        (Some(8), Some(2))
    );

    // Shipped step by step, never out of order; a fulfilled order cannot be cancelled.
    s.ship(&id, "processed")
        .await
        .problem(409, "invalid_transition");
    for (step, status) in [
        ("prepared", "SHIPMENT_PREPARED"),
        ("processed", "SHIPMENT_PROCESSED"),
        ("fulfilled", "FULFILLED"),
    ] {
        let o = s.ship(&id, step).await.ok(200);
        assert_eq!(o["status"], status);
    }
    s.cancel(&id).await.problem(409, "invalid_transition");

    stop_and_verify(s, &dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_pending_order_refuses_a_late_payment_and_records_its_refund() {
    let (_t, dir) = tempdir();
    let s = Server::start(&dir, &[]);
    seed_catalog(&s).await;

    let o2 = s.place("bob", &[("TEE-1", 1)]).await.ok(201);
    let id2 = o2["id"].as_str().unwrap();
    let c = s.cancel(id2).await.ok(200);
    assert_eq!(c["status"], "CANCELLED");
    assert_eq!(c["cancel_reason"], "customer");
    let late = s
        .pay(id2, "p-2", "succeeded", 1500)
        .await
        .problem(409, "order_not_payable");
    assert_eq!(late["order"]["refunds_requested"][0], "p-2");

    stop_and_verify(s, &dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_placements_are_stored_failed_or_rejected_and_hold_no_stock() {
    let (_t, dir) = tempdir();
    let s = Server::start(&dir, &[]);
    seed_catalog(&s).await;

    // Out of stock: stored FAILED, its id in the problem.
    let oos = s
        .place("cid", &[("MUG-1", 100)])
        .await
        .problem(409, "out_of_stock");
    let failed_id = oos["order"]["id"].as_str().unwrap();
    assert_eq!(s.order(failed_id).await.ok(200)["status"], "FAILED");
    // Over the per-customer limit, an unknown SKU, two currencies.
    s.place("dan", &[("TEE-1", 4)])
        .await
        .problem(409, "limit_exceeded");
    s.place("dan", &[("NOPE", 1)])
        .await
        .problem(422, "unknown_sku");
    s.place("dan", &[("TEE-1", 1), ("USD-1", 1)])
        .await
        .problem(422, "invalid_request");
    // Nothing is left held by the refused orders.
    assert_eq!(s.sku("TEE-1").await.ok(200)["reserved"], 0);

    stop_and_verify(s, &dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flash_sale_over_http_sells_exactly_the_stock() {
    let (_t, dir) = tempdir();
    let s = Arc::new(Server::start(&dir, &[]));
    s.create_sku("DROP-1", 500).await.ok(201);
    let answers = place_many(&s, "DROP-1", 5_000, 500).await;
    let mut by_status: HashMap<u16, usize> = HashMap::new();
    for a in &answers {
        *by_status.entry(a.status.as_u16()).or_default() += 1;
        if a.status == 409 {
            a.problem(409, "out_of_stock");
        }
    }
    assert_eq!(by_status.get(&201), Some(&500), "{by_status:?}");
    assert_eq!(by_status.get(&409), Some(&4_500), "{by_status:?}");
    let sku = s.sku("DROP-1").await.ok(200);
    assert_eq!(
        (
            sku["available"].as_i64(),
            sku["reserved"].as_i64(),
            sku["sold"].as_i64()
        ),
        (Some(0), Some(500), Some(0))
    );
    let s = Arc::try_unwrap(s).ok().expect("no other owners");
    let report = stop_and_verify(s, &dir);
    assert_eq!(report["orders"], 5_000);
}
