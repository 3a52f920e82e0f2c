//! `ordo bench` against a real server: each workload passes its own audit, and the audit
//! catches stock changed behind the run's back.

use std::process::{Command, Stdio};

use serde_json::Value;

use crate::helpers::{bench, signal, tempdir, Server, BIN};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_runs_pass_their_audit_against_a_real_server() {
    let (t, dir) = tempdir();
    let s = Server::start(&dir, &[]);
    let html = t.path().join("report.html");
    let (code, r) = bench(&[
        "flash-sale",
        "--url",
        &s.base,
        "--setup",
        "--stock",
        "300",
        "--requests",
        "1000",
        "--concurrency",
        "16",
        "--report",
        html.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(
        (
            r["ok"].as_u64(),
            r["sold_out"].as_u64(),
            r["errors"].as_u64()
        ),
        (Some(300), Some(700), Some(0)),
        "{r}"
    );
    assert_eq!(r["audit"]["ok"], true);
    assert_eq!(r["audit"]["units_acknowledged"], 300);
    assert_eq!(r["by_outcome"]["place 409 out_of_stock"], 700);
    assert!(r["latency_us"]["p99"].as_u64().unwrap() >= r["latency_us"]["p50"].as_u64().unwrap());
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("<svg") && page.contains("passed"), "{page}");
    // The server agrees with the report.
    let sku = s.sku("BENCH-FLASH-1").await.ok(200);
    assert_eq!(
        (sku["available"].as_i64(), sku["reserved"].as_i64()),
        (Some(0), Some(300))
    );

    let (code, r) = bench(&[
        "catalog",
        "--url",
        &s.base,
        "--setup",
        "--skus",
        "50",
        "--requests",
        "300",
        "--concurrency",
        "8",
        "--rate",
        "2000",
    ]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["ok"], 300, "{r}");
    assert!(r["audit"]["units_acknowledged"].as_i64().unwrap() >= 300);

    let (code, r) = bench(&[
        "lifecycle",
        "--url",
        &s.base,
        "--setup",
        "--requests",
        "200",
        "--concurrency",
        "8",
    ]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["errors"], 0, "{r}");
    assert!(r["by_op"]["pay"]["count"].as_u64().unwrap() > 0, "{r}");
    assert!(r["by_op"]["cancel"]["count"].as_u64().unwrap() > 0, "{r}");
    assert!(r["by_op"]["ship"]["count"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["audit"]["ok"], true, "{r}");

    let (code, r) = bench(&[
        "catalog",
        "--embedded",
        "--durability",
        "memory",
        "--setup",
        "--requests",
        "300",
    ]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["target"], "embedded (memory)");
    assert_eq!(r["ok"], 300, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_audit_catches_stock_changed_behind_its_back() {
    let (_t, dir) = tempdir();
    let s = Server::start(&dir, &[]);
    let child = Command::new(BIN)
        .args([
            "bench",
            "flash-sale",
            "--url",
            &s.base,
            "--setup",
            "--stock",
            "1000000",
        ])
        .args([
            "--duration",
            "120s",
            "--concurrency",
            "4",
            "--json",
            "--quiet",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the run is under way (past its "before" reading of the counters) ...
    loop {
        let r = s.sku("BENCH-FLASH-1").await;
        if r.status == 200 && r.json()["reserved"].as_i64().unwrap_or(0) > 0 {
            break;
        }
        tokio::task::yield_now().await;
    }
    // ... change the stock behind its back, then end it (Ctrl-C ends a run with its audit).
    s.adjust("BENCH-FLASH-1", 5, "found a box").await.ok(200);
    signal(child.id(), "INT");
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "the audit must fail");
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["audit"]["ok"], false);
    let problems = r["audit"]["problems"].to_string();
    assert!(problems.contains("changed outside this run"), "{problems}");
    assert!(r["ok"].as_u64().unwrap() > 0);
}
