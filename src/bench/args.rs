//! `ordo bench`'s flags ([`BenchArgs`]) and the scenarios it runs ([`Scenario`]).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// K hot SKUs with S units each; every order is one unit of one of them.
    FlashSale,
    /// N SKUs with Zipf-distributed popularity; 1–5 lines per order.
    Catalog,
    /// Place, then pay and ship a share, cancel a share, leave the rest to expire.
    Lifecycle,
    /// GET /healthz only: the generator's own ceiling.
    Ping,
}

impl Scenario {
    /// The name the report gives it.
    pub(super) fn name(self) -> &'static str {
        match self {
            Scenario::FlashSale => "flash-sale",
            Scenario::Catalog => "catalog",
            Scenario::Lifecycle => "lifecycle",
            Scenario::Ping => "ping",
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// flash-sale, catalog, lifecycle, or ping (the generator's ceiling against /healthz).
    #[arg(value_enum)]
    pub scenario: Scenario,
    /// The server, e.g. http://127.0.0.1:8080.
    #[arg(
        long,
        conflicts_with = "embedded",
        required_unless_present = "embedded"
    )]
    pub url: Option<String>,
    /// Bearer token (an admin token if --setup is used).
    #[arg(long, env = "ORDO_BENCH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Run the same scenario in-process through the embedded engine.
    #[arg(long)]
    pub embedded: bool,
    /// Embedded: where the engine keeps its data [default: a temporary directory].
    #[arg(long, requires = "embedded")]
    pub data_dir: Option<PathBuf>,
    /// Embedded: sync, buffered or memory.
    #[arg(long, default_value = "sync", requires = "embedded")]
    pub durability: String,
    /// Embedded: reservation TTL (lifecycle's unpaid orders expire after it).
    #[arg(long, default_value = "15m", requires = "embedded")]
    pub reservation_ttl: String,
    /// Create the scenario's SKUs first (PUT /v1/skus, admin).
    #[arg(long)]
    pub setup: bool,
    /// Closed loop: requests in flight (one connection each).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Open loop: orders started per second (latency counted from the intended start).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Stop after this long, e.g. 30s [default: 10s unless --requests is given].
    #[arg(long)]
    pub duration: Option<String>,
    /// Stop after this many orders (requests, for ping).
    #[arg(long)]
    pub requests: Option<u64>,
    /// Hot SKUs (flash-sale, default 1) or catalogue size (catalog 1000, lifecycle 20).
    #[arg(long)]
    pub skus: Option<usize>,
    /// Units per SKU created by --setup [default: 10000 for flash-sale, 1000000 otherwise].
    #[arg(long)]
    pub stock: Option<i64>,
    /// Zipf exponent of the catalogue's popularity.
    #[arg(long, default_value_t = 1.0)]
    pub zipf: f64,
    /// Lifecycle: share of orders paid (then shipped to fulfilled).
    #[arg(long, default_value_t = 0.6)]
    pub pay_share: f64,
    /// Lifecycle: share of orders cancelled.
    #[arg(long, default_value_t = 0.2)]
    pub cancel_share: f64,
    /// SKU code prefix, so runs can keep to their own SKUs.
    #[arg(long, default_value = "BENCH")]
    pub prefix: String,
    /// Seed of the request mix; the same seed makes the same run.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Every POST (order, payment, cancellation, shipment) carries a fresh
    /// `Idempotency-Key`, as production clients send; embedded, every placement is keyed.
    #[arg(long)]
    pub idempotency_keys: bool,
    /// Print the report as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Also write a self-contained HTML report with charts.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

impl BenchArgs {
    /// Checks the load flags; returns how long the run lasts (`None`: until
    /// `--requests`).
    pub(super) fn checked_duration(&self) -> anyhow::Result<Option<Duration>> {
        if self.concurrency == 0 || self.concurrency > 10_000 {
            anyhow::bail!("--concurrency must be 1-10000");
        }
        if let Some(r) = self.rate {
            if !(r > 0.0 && r.is_finite()) {
                anyhow::bail!("--rate must be a positive number of orders per second");
            }
        }
        if !(0.0..=1.0).contains(&(self.pay_share + self.cancel_share)) {
            anyhow::bail!("--pay-share + --cancel-share must be within 0..1");
        }
        Ok(match (&self.duration, self.requests) {
            (Some(d), _) => Some(humantime::parse_duration(d)?),
            (None, Some(_)) => None,
            (None, None) => Some(Duration::from_secs(10)),
        })
    }
}
