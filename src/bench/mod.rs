//! `ordo bench`: the flash-sale load generator (SPEC §5, §6).
//!
//! Workers each own one keep-alive connection (or a handle on the embedded engine) and
//! loop: closed loop (`--concurrency C`, each worker sends its next request when the last
//! is answered) or open loop (`--rate R`: request *n* is due at `start + n/R`, and its
//! latency is measured from that intended time, so a server that stalls cannot hide its
//! queue behind a generator that stopped sending — coordinated omission). Every run is
//! bounded by `--duration` and/or `--requests` and ends early on Ctrl-C, still with its
//! report and audit.
//!
//! The audit reads the SKUs' counters before and after the run: no counter may go
//! negative, `available + reserved + sold` must not change (nothing sold beyond stock,
//! no stock changed behind the run's back), and the growth of `reserved + sold` must equal
//! the units of the orders the run got acknowledged (less those it cancelled or saw
//! expire). A failed audit exits 1.

pub mod report;
pub mod target;

mod args;
mod audit;
mod progress;
mod setup;
mod tally;
mod workers;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use args::{BenchArgs, Scenario};

use audit::audit;
use progress::{progress_bar, spawn_ticker, Interrupt};
use report::{Audit, LatencySummary, Report};
use setup::{open_target, prepare, read_counters, sku_codes};
use tally::{total_orders, Shared, Tally};
use target::{Conn, Target};
use workers::{join_workers, spawn_workers};

/// Runs the benchmark; the exit code is 0 (audit passed), 1 (audit failed) or 2.
pub fn run(args: BenchArgs) -> anyhow::Result<i32> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_async(args))
}

/// The run: open the target, prepare the SKUs and read their counters, let the workers
/// loose until the run stops, audit, report.
async fn run_async(args: BenchArgs) -> anyhow::Result<i32> {
    let duration = args.checked_duration()?;
    // The embedded engine's temporary directory, if any: deleted when the run is over.
    let mut _tempdir = None;
    let (target, target_name) = open_target(&args, &mut _tempdir).await?;

    let skus = sku_codes(&args);
    let mut conn = Conn::new(target.clone());
    prepare(&args, &mut conn, &skus).await?;
    let before = read_counters(&mut conn, &skus).await?;

    let shared = Arc::new(Shared::new());
    let interrupt = Interrupt::install()?;
    let progress = progress_bar(&args, duration);
    let start = Instant::now();
    let workers = spawn_workers(&args, &target, &skus, &shared, start);
    let ticker = spawn_ticker(shared.clone(), progress.clone(), start, duration);
    let stopper = interrupt.spawn_stopper(shared.clone());
    let total = join_workers(workers).await?;
    let elapsed = start.elapsed();
    shared.stop.store(true, Relaxed);
    let _ = ticker.await;
    stopper.abort();
    progress.finish_and_clear();

    let audit = if args.scenario == Scenario::Ping {
        Audit::skipped()
    } else {
        audit(&args, &target, &mut conn, &skus, &before, &total).await
    };
    if let Target::Embedded(e) = &target {
        e.shutdown().await?;
    }
    let report = build_report(&args, target_name, elapsed, &shared, &total, audit);
    publish(&args, &report)?;
    Ok(if report.audit.ok { 0 } else { 1 })
}

/// The report: the run's load, throughput, latencies, outcomes, audit and timeline.
fn build_report(
    args: &BenchArgs,
    target_name: String,
    elapsed: Duration,
    shared: &Shared,
    total: &Tally,
    audit: Audit,
) -> Report {
    let timeline = shared.timeline.lock().clone();
    Report {
        scenario: args.scenario.name().into(),
        target: target_name,
        load: match args.rate {
            Some(r) => format!(
                "open loop, {r} orders/s, up to {} in flight",
                args.concurrency
            ),
            None => format!("closed loop, {} in flight", args.concurrency),
        } + if args.idempotency_keys {
            ", a fresh Idempotency-Key per change"
        } else {
            ""
        },
        seed: args.seed,
        elapsed_s: elapsed.as_secs_f64(),
        orders: shared.issued.load(Relaxed).min(total_orders(total)),
        requests: total.requests,
        requests_per_s: total.requests as f64 / elapsed.as_secs_f64(),
        ok: shared.live.ok.load(Relaxed),
        sold_out: shared.live.sold_out.load(Relaxed),
        errors: shared.live.errors.load(Relaxed),
        latency_us: LatencySummary::of(&total.all),
        by_op: total
            .per_op
            .iter()
            .map(|(k, h)| (k.to_string(), LatencySummary::of(h)))
            .collect(),
        by_outcome: total.labels.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        audit,
        timeline,
    }
}

/// Prints the report (JSON with `--json`, text otherwise) and writes the HTML one with
/// `--report`.
fn publish(args: &BenchArgs, report: &Report) -> anyhow::Result<()> {
    if args.json {
        println!("{}", serde_json::to_string(report)?);
    } else {
        report.print_text(&mut std::io::stdout().lock())?;
    }
    if let Some(path) = &args.report {
        std::fs::write(path, report.html())?;
        eprintln!("HTML report written to {}", path.display());
    }
    Ok(())
}
