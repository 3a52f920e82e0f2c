//! `ordo torture`'s flags ([`TortureArgs`]) and the run they describe once checked
//! ([`Plan`]).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use rand::Rng;

#[derive(Debug, Clone, Args)]
pub struct TortureArgs {
    /// Start `ordo serve` (this executable) on 127.0.0.1 with its own data directory,
    /// SIGKILL and restart it at random points, and check its store at the end.
    #[arg(long, conflicts_with = "url", required_unless_present = "url")]
    pub spawn: bool,
    /// Run against this server instead, e.g. http://127.0.0.1:8080. It is never killed.
    #[arg(long)]
    pub url: Option<String>,
    /// Bearer token for --url; it must be allowed everything (an admin token).
    #[arg(long, env = "ORDO_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// With --spawn: the server's data directory [default: a temporary directory, kept
    /// when the run finds a violation].
    #[arg(long, requires = "spawn")]
    pub data_dir: Option<PathBuf>,
    /// How long the clients run, e.g. 20s, 10m.
    #[arg(long, default_value = "60s")]
    pub duration: String,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// SKUs, created for the run (few, with little stock: sell-outs and races are
    /// frequent).
    #[arg(long, default_value_t = 4)]
    pub skus: usize,
    /// Initial units of each SKU.
    #[arg(long, default_value_t = 20)]
    pub stock: i64,
    /// Seed of the clients' choices [default: random]. Printed either way. The
    /// interleaving with the server is not seeded: a seed replays the mix of requests,
    /// not the exact race.
    #[arg(long)]
    pub seed: Option<u64>,
    /// With --spawn: time between kills, `MIN..MAX` (uniform) or one duration; `0`
    /// never kills.
    #[arg(long, default_value = "1s..4s")]
    pub kill_every: String,
    /// Stop sooner, after this many requests: every request is kept in memory until
    /// the checks have run.
    #[arg(long, default_value_t = 1_000_000)]
    pub max_requests: u64,
    /// How long requests still unanswered when --duration is over keep retrying.
    #[arg(long, default_value = "30s")]
    pub drain: String,
    /// Write the recorded history, the final state and the violations to this file as
    /// JSON.
    #[arg(long)]
    pub history: Option<PathBuf>,
    /// With --spawn: echo the server's log lines to stderr.
    #[arg(long)]
    pub server_log: bool,
    /// Print a one-line JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Where the server comes from.
#[derive(Debug, Clone)]
pub(super) enum Mode {
    Spawn { data_dir: Option<PathBuf> },
    Url { url: String, token: Option<String> },
}

/// The arguments, checked.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    pub(super) mode: Mode,
    pub(super) duration: Duration,
    pub(super) clients: usize,
    pub(super) skus: usize,
    pub(super) stock: i64,
    pub(super) seed: u64,
    pub(super) kill_every: Option<(Duration, Duration)>,
    pub(super) max_requests: u64,
    pub(super) drain: Duration,
    pub(super) history: Option<PathBuf>,
    pub(super) server_log: bool,
    pub(super) json: bool,
}

/// A humantime duration; an error names the flag.
fn parse_duration(what: &str, s: &str) -> anyhow::Result<Duration> {
    humantime::parse_duration(s.trim()).map_err(|e| anyhow::anyhow!("--{what} {s:?}: {e}"))
}

/// `--kill-every`: `MIN..MAX`, one duration, or `0` (never).
fn parse_kill_every(s: &str) -> anyhow::Result<Option<(Duration, Duration)>> {
    match s.trim() {
        "0" | "0s" => Ok(None),
        s => {
            let (lo, hi) = match s.split_once("..") {
                Some((lo, hi)) => (
                    parse_duration("kill-every", lo)?,
                    parse_duration("kill-every", hi)?,
                ),
                None => {
                    let d = parse_duration("kill-every", s)?;
                    (d, d)
                }
            };
            if lo.is_zero() || lo > hi {
                anyhow::bail!("--kill-every wants MIN..MAX with 0 < MIN <= MAX, or 0");
            }
            Ok(Some((lo, hi)))
        }
    }
}

impl Plan {
    /// Checks the flags; a bad one is an error that names it.
    pub(super) fn from_args(a: TortureArgs) -> anyhow::Result<Plan> {
        let mode = match (a.spawn, a.url) {
            (true, _) => Mode::Spawn {
                data_dir: a.data_dir,
            },
            (false, Some(url)) => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    anyhow::bail!("--url must start with http:// or https://");
                }
                Mode::Url {
                    url: url.trim_end_matches('/').to_owned(),
                    token: a.token,
                }
            }
            (false, None) => anyhow::bail!("give --spawn or --url"),
        };
        let duration = parse_duration("duration", &a.duration)?;
        if duration.is_zero() || duration > Duration::from_secs(7 * 24 * 3600) {
            anyhow::bail!("--duration must be more than 0 and at most 7 days");
        }
        if !(1..=1024).contains(&a.clients) {
            anyhow::bail!("--clients must be 1-1024");
        }
        if !(1..=64).contains(&a.skus) {
            anyhow::bail!("--skus must be 1-64");
        }
        if !(0..=1_000_000).contains(&a.stock) {
            anyhow::bail!("--stock must be 0-1000000");
        }
        let kill_every = parse_kill_every(&a.kill_every)?;
        let drain = parse_duration("drain", &a.drain)?;
        if drain > Duration::from_secs(3600) {
            anyhow::bail!("--drain must be at most 1h");
        }
        Ok(Plan {
            mode,
            duration,
            clients: a.clients,
            skus: a.skus,
            stock: a.stock,
            seed: a.seed.unwrap_or_else(|| rand::rng().random()),
            kill_every,
            max_requests: a.max_requests,
            drain,
            history: a.history,
            server_log: a.server_log,
            json: a.json,
        })
    }
}
