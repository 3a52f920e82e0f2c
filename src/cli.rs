//! The `ordo` command line.

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use ordo_storage::{Durability, Store, StoreOptions};

#[derive(Debug, Parser)]
#[command(
    name = "ordo",
    version,
    about = "Ordo: an actor-based order engine with a durable event log"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server (the v1 API) on the embedded engine.
    Serve(Box<crate::config::ServeArgs>),
    /// Load-test a server (--url) or the embedded engine: flash-sale, catalog, lifecycle.
    Bench(Box<crate::bench::BenchArgs>),
    /// Replay the log, check every invariant, print per-SKU counters; exit 1 on any
    /// violation.
    Verify {
        #[arg(long, env = "ORDO_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
        /// Print the report as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Print the event log as JSON lines.
    Events {
        #[arg(long, env = "ORDO_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
        /// Only events after this seq.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Only this stream (`sku/{sku}` or `order/{id}`).
        #[arg(long)]
        stream: Option<String>,
    },
}

/// Exit codes: 0 ok, 1 verification failed, 2 error.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Serve(args) => {
            let settings = crate::config::Settings::load(&args)?;
            crate::telemetry::init(settings.log_format);
            actix_web::rt::System::new().block_on(crate::http::serve(settings))?;
            Ok(0)
        }
        Command::Bench(args) => crate::bench::run(*args),
        Command::Verify { data_dir, json } => verify(&data_dir, json),
        Command::Events {
            data_dir,
            after,
            stream,
        } => events(&data_dir, after, stream.as_deref()),
    }
}

fn open_existing(dir: &std::path::Path) -> anyhow::Result<std::sync::Arc<Store>> {
    if !dir.join("CURRENT").exists() {
        anyhow::bail!("no Ordo store at {}", dir.display());
    }
    Ok(Store::open(
        dir,
        StoreOptions {
            durability: Durability::Buffered,
        },
    )?)
}

fn verify(dir: &std::path::Path, json: bool) -> anyhow::Result<i32> {
    let store = open_existing(dir)?;
    let report = ordo_actors::verify(&store)?;
    let mut out = std::io::stdout().lock();
    if json {
        let v = serde_json::json!({
            "events": report.events,
            "orders": report.orders,
            "skus": report.skus,
            "violations": report.violations,
            "ok": report.violations.is_empty(),
        });
        writeln!(out, "{v}")?;
    } else {
        writeln!(
            out,
            "{} events, {} orders, {} skus",
            report.events,
            report.orders,
            report.skus.len()
        )?;
        writeln!(
            out,
            "{:<24} {:>12} {:>12} {:>12}",
            "sku", "available", "reserved", "sold"
        )?;
        for s in &report.skus {
            writeln!(
                out,
                "{:<24} {:>12} {:>12} {:>12}",
                s.sku, s.available, s.reserved, s.sold
            )?;
        }
        for v in &report.violations {
            writeln!(out, "VIOLATION: {v}")?;
        }
        writeln!(
            out,
            "{}",
            if report.violations.is_empty() {
                "OK"
            } else {
                "FAILED"
            }
        )?;
    }
    Ok(if report.violations.is_empty() { 0 } else { 1 })
}

fn events(dir: &std::path::Path, after: u64, stream: Option<&str>) -> anyhow::Result<i32> {
    let store = open_existing(dir)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut write = |r: &ordo_storage::EventRecord| -> anyhow::Result<()> {
        writeln!(out, "{}", crate::event_json(r))?;
        Ok(())
    };
    match stream {
        Some(s) => {
            for r in store.read_stream(s, 1)?.iter().filter(|r| r.seq > after) {
                write(r)?;
            }
        }
        None => {
            for r in store.read_from(after) {
                write(&r?)?;
            }
        }
    }
    out.flush()?;
    Ok(0)
}
