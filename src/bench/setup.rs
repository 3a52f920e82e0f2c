//! Before the run: the target opened, the scenario's SKUs named (and with `--setup`
//! created), and their counters read for the audit.

use std::collections::BTreeMap;
use std::sync::Arc;

use ordo_engine::{Engine, EngineConfig};

use super::args::{BenchArgs, Scenario};
use super::target::{Conn, HttpTarget, Target};

/// Per SKU, its counters `(available, reserved, sold)`.
pub(super) type Counters = BTreeMap<String, (i64, i64, i64)>;

/// The target and its name for the report: the embedded engine (on `--data-dir`, or on a
/// temporary directory left in `tempdir` for the caller to keep until the end) or the
/// server at `--url`.
pub(super) async fn open_target(
    args: &BenchArgs,
    tempdir: &mut Option<tempfile::TempDir>,
) -> anyhow::Result<(Target, String)> {
    if !args.embedded {
        let url = args.url.clone().unwrap_or_default();
        let t = HttpTarget::parse(&url, args.token.clone()).await?;
        return Ok((Target::Http(Arc::new(t)), url));
    }
    let dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => {
            let t = tempfile::tempdir()?;
            let p = t.path().to_owned();
            *tempdir = Some(t);
            p
        }
    };
    let cfg = EngineConfig {
        data_dir: dir,
        durability: args
            .durability
            .parse()
            .map_err(|e| anyhow::anyhow!("{e}"))?,
        reservation_ttl: humantime::parse_duration(&args.reservation_ttl)?,
        ..EngineConfig::default()
    };
    let name = format!("embedded ({})", cfg.durability);
    let engine = tokio::task::spawn_blocking(move || Engine::open(cfg)).await??;
    Ok((Target::Embedded(engine), name))
}

/// The SKU codes of a scenario.
pub(super) fn sku_codes(args: &BenchArgs) -> Vec<String> {
    match args.scenario {
        Scenario::FlashSale => (1..=args.skus.unwrap_or(1).max(1))
            .map(|k| format!("{}-FLASH-{k}", args.prefix))
            .collect(),
        Scenario::Catalog => (1..=args.skus.unwrap_or(1000).max(1))
            .map(|k| format!("{}-CAT-{k:05}", args.prefix))
            .collect(),
        Scenario::Lifecycle => (1..=args.skus.unwrap_or(20).max(1))
            .map(|k| format!("{}-LIFE-{k:03}", args.prefix))
            .collect(),
        Scenario::Ping => Vec::new(),
    }
}

/// Ping: the target answers `/healthz`. With `--setup`: the scenario's SKUs created (or
/// reset) with their stock.
pub(super) async fn prepare(
    args: &BenchArgs,
    conn: &mut Conn,
    skus: &[String],
) -> anyhow::Result<()> {
    if args.scenario == Scenario::Ping {
        let o = conn.healthz().await;
        if !o.ok() {
            anyhow::bail!("GET /healthz answered {}", o.label());
        }
    }
    if args.setup {
        let stock = args.stock.unwrap_or(match args.scenario {
            Scenario::FlashSale => 10_000,
            _ => 1_000_000,
        });
        for (i, sku) in skus.iter().enumerate() {
            let price = 1_000 + (i as i64 * 37) % 9_000;
            let o = conn.put_sku(sku, price, stock).await;
            if !o.ok() {
                anyhow::bail!("setting up {sku} failed: {}", o.label());
            }
        }
    }
    Ok(())
}

/// The SKUs' counters; an error names the SKU that could not be read.
pub(super) async fn read_counters(conn: &mut Conn, skus: &[String]) -> anyhow::Result<Counters> {
    let mut out = BTreeMap::new();
    for s in skus {
        let c = conn
            .sku_counters(s)
            .await
            .map_err(|e| anyhow::anyhow!("reading {s}: {e} (use --setup to create the SKUs)"))?;
        out.insert(s.clone(), c);
    }
    Ok(out)
}
