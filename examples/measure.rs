//! Capacity figures for `benches/RESULTS.md` (SPEC §6): memory per live order actor and
//! per idle SKU (RSS delta over many of them), and recovery of a 10 M-event store with
//! and without snapshots. Bounded; stops by itself.
//!
//! `cargo run --release --example measure -- DIR [LIVE_ORDERS] [IDLE_SKUS] [EVENTS]`
//! (defaults 1,000,000 / 1,000,000 / 10,000,000). DIR must not exist.

use std::time::Instant;

use futures::future::join_all;
use ordo::{Durability, Engine, EngineConfig, LineRequest, PlaceOrder, UpsertSku};

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn sku(code: &str, stock: i64) -> UpsertSku {
    UpsertSku {
        sku: code.into(),
        name: format!("item {code}"),
        price_minor: 1_000,
        currency: "EUR".into(),
        per_customer_limit: None,
        stock,
    }
}

fn open(dir: &std::path::Path, ignore_snapshots: bool) -> Result<Engine, ordo::EngineError> {
    Engine::open(EngineConfig {
        data_dir: dir.to_owned(),
        durability: Durability::Buffered,
        ignore_snapshots,
        // Short, so the idle SKUs of the memory phase passivate while it waits.
        sku_idle_timeout: std::time::Duration::from_secs(2),
        ..Default::default()
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(
        args.get(1)
            .ok_or("usage: measure DIR [LIVE_ORDERS] [IDLE_SKUS] [EVENTS]")?,
    );
    if dir.exists() && !dir.join("recovery").exists() {
        return Err(format!("{} exists; give a fresh directory", dir.display()).into());
    }
    let n_orders: u64 = args.get(2).map_or(Ok(1_000_000), |s| s.parse())?;
    let n_skus: u64 = args.get(3).map_or(Ok(1_000_000), |s| s.parse())?;
    let n_events: u64 = args.get(4).map_or(Ok(10_000_000), |s| s.parse())?;

    // 1. Memory per live (PENDING) order actor and per idle SKU (skipped with 0 0).
    if n_orders > 0 && n_skus > 0 {
        memory(&dir, n_orders, n_skus)?;
    }
    recovery(&dir, n_events)
}

fn memory(
    dir: &std::path::Path,
    n_orders: u64,
    n_skus: u64,
) -> Result<(), Box<dyn std::error::Error>> {
    let engine = open(&dir.join("memory"), false)?;
    futures::executor::block_on(async {
        engine
            .upsert_sku(sku("HOT", n_orders as i64 + 1), None)
            .await?;
        let before = rss_bytes();
        let mut placed = 0u64;
        while placed < n_orders {
            let batch = (n_orders - placed).min(1024);
            let futs = (0..batch).map(|i| {
                engine.place_order(
                    PlaceOrder {
                        customer_id: format!("c{}", placed + i),
                        lines: vec![LineRequest {
                            sku: "HOT".into(),
                            qty: 1,
                        }],
                    },
                    None,
                )
            });
            for r in join_all(futs).await {
                r?;
            }
            placed += batch;
        }
        let after = rss_bytes();
        let live = engine.metrics().live_orders.get();
        println!(
            "live orders: {placed} placed, {live} live actors; RSS {:.1} -> {:.1} MiB: {:.0} bytes per live order",
            before as f64 / 1048576.0,
            after as f64 / 1048576.0,
            (after.saturating_sub(before)) as f64 / placed as f64
        );
        let before = rss_bytes();
        let mut made = 0u64;
        while made < n_skus {
            let batch = (n_skus - made).min(1024);
            let futs = (0..batch)
                .map(|i| engine.upsert_sku(sku(&format!("IDLE-{:08}", made + i), 0), None));
            for r in join_all(futs).await {
                r?;
            }
            made += batch;
        }
        let after = rss_bytes();
        println!(
            "idle SKUs: {made}; RSS {:.1} -> {:.1} MiB: {:.0} bytes per SKU while its actor is live",
            before as f64 / 1048576.0,
            after as f64 / 1048576.0,
            (after.saturating_sub(before)) as f64 / made as f64
        );
        // Wait (bounded) for the idle ones to passivate: only the HOT SKU holds stock.
        let live = || engine.metrics().live_skus.get();
        let t = Instant::now();
        while live() > 1 && t.elapsed().as_secs() < 300 {
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        let passivated = rss_bytes();
        println!(
            "idle SKUs passivated ({} actors left) after {:.0} s; RSS {:.1} MiB: {:.0} bytes per idle SKU over the start \
             (the allocator keeps some freed memory)",
            live(),
            t.elapsed().as_secs_f64(),
            passivated as f64 / 1048576.0,
            (passivated.saturating_sub(before)) as f64 / made as f64
        );
        engine.shutdown().await
    })?;
    Ok(())
}

fn recovery(dir: &std::path::Path, n_events: u64) -> Result<(), Box<dyn std::error::Error>> {
    // 2. Recovery of a store with `n_events` events: orders placed and cancelled over 100
    //    SKUs (5 events each), then a clean shutdown (which checkpoints).
    let rec = dir.join("recovery");
    if rec.exists() {
        // Restarts only, on a store made by an earlier run.
        return restarts(&rec, None);
    }
    let engine = open(&rec, false)?;
    let t = Instant::now();
    futures::executor::block_on(async {
        for i in 0..100 {
            engine
                .upsert_sku(sku(&format!("R-{i:03}"), 1_000_000_000), None)
                .await?;
        }
        let mut n = 0u64;
        while engine.durable_seq() < n_events {
            let futs = (0..512u64).map(|i| {
                let e = engine.clone();
                let k = n + i;
                async move {
                    let o = e
                        .place_order(
                            PlaceOrder {
                                customer_id: format!("c{k}"),
                                lines: vec![LineRequest {
                                    sku: format!("R-{:03}", k % 100),
                                    qty: 1,
                                }],
                            },
                            None,
                        )
                        .await?;
                    e.cancel(&o.id, "measure", None).await
                }
            });
            for r in join_all(futs).await {
                r?;
            }
            n += 512;
        }
        engine.shutdown().await
    })?;
    let events = engine.durable_seq();
    println!(
        "wrote {events} events in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    drop(engine);
    restarts(&rec, Some(events))
}

/// Times `Engine::open` with and without snapshots, twice each.
fn restarts(rec: &std::path::Path, events: Option<u64>) -> Result<(), Box<dyn std::error::Error>> {
    let events = match events {
        Some(e) => e,
        None => {
            let e = open(rec, false)?;
            let n = e.durable_seq();
            futures::executor::block_on(e.shutdown())?;
            n
        }
    };
    for (label, ignore) in [
        ("with snapshots (checkpoint at shutdown)", false),
        ("from the log alone", true),
        ("with snapshots (checkpoint at shutdown)", false),
        ("from the log alone", true),
    ] {
        let t = Instant::now();
        let engine = open(rec, ignore)?;
        let took = t.elapsed().as_secs_f64();
        println!(
            "restart {label}: {took:.2} s ({:.0} events/s over the whole log)",
            events as f64 / took
        );
        futures::executor::block_on(engine.shutdown())?;
    }
    Ok(())
}
