//! `ordo torture` (SPEC §5): a history checker.
//!
//! Random concurrent clients ([`workload`]) drive a real server over HTTP and record every
//! request: what was sent, when, each attempt, and the final answer ([`model::Record`]).
//! With `--spawn` the server is this executable's `ordo serve`, SIGKILLed and restarted
//! on the same data directory at random points ([`server`]); with `--url` it is someone
//! else's and is never killed. Requests left without an answer (a kill, a 5xx) are
//! retried with the same key and body until one comes.
//!
//! Afterwards the final state is read back ([`client::Api::read_final`]) and the whole
//! history is checked against a reference model ([`model::check`]); with `--spawn` the
//! server is then stopped with SIGTERM and its store checked by `ordo verify`'s replay
//! in-process. Exit 0 when nothing was found, 1 on any violation (each printed).
//!
//! Threading: one multi-threaded tokio runtime; one task per client, one for the killer,
//! one for the progress line; process starts and waits run on the blocking pool.
//! Bounded: clients stop at `--duration` (or `--max-requests`); requests still
//! unanswered then retry for at most `--drain`; every read-back has its own deadline.

pub mod client;
pub mod model;
pub mod server;
pub mod workload;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use parking_lot::{Mutex, RwLock};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use client::Api;
use model::{Observed, Record, Setup, St, Violation};
use server::Spawned;
use workload::{Client, Ctx};

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
enum Mode {
    Spawn { data_dir: Option<PathBuf> },
    Url { url: String, token: Option<String> },
}

/// The arguments, checked.
#[derive(Debug, Clone)]
struct Plan {
    mode: Mode,
    duration: Duration,
    clients: usize,
    skus: usize,
    stock: i64,
    seed: u64,
    kill_every: Option<(Duration, Duration)>,
    max_requests: u64,
    drain: Duration,
    history: Option<PathBuf>,
    server_log: bool,
    json: bool,
}

fn parse_duration(what: &str, s: &str) -> anyhow::Result<Duration> {
    humantime::parse_duration(s.trim()).map_err(|e| anyhow::anyhow!("--{what} {s:?}: {e}"))
}

impl Plan {
    fn from_args(a: TortureArgs) -> anyhow::Result<Plan> {
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
        let kill_every = match a.kill_every.trim() {
            "0" | "0s" => None,
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
                Some((lo, hi))
            }
        };
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

/// Runs `ordo torture`. Exit codes: 0 clean, 1 violations, 2 error (returned as `Err`).
pub fn run(args: TortureArgs) -> anyhow::Result<i32> {
    let plan = Plan::from_args(args)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(drive(plan))
}

/// A tag unique to the run: SKU codes, keys and payment refs carry it, so runs against
/// one server never meet.
fn run_tag() -> String {
    let u = ulid::Ulid::new().to_string();
    format!("t{}", &u[u.len() - 8..])
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f).await?
}

async fn drive(plan: Plan) -> anyhow::Result<i32> {
    let seed = plan.seed;
    let run = run_tag();
    eprintln!(
        "ordo torture: seed {seed} (replay with --seed {seed}), run {run}, {} clients, {} skus x {} units, {}",
        plan.clients,
        plan.skus,
        plan.stock,
        humantime::format_duration(plan.duration)
    );

    // The server.
    let mut temp_dir = None;
    let mut spawned: Option<(Arc<Mutex<Spawned>>, PathBuf)> = None;
    let (base, token) = match &plan.mode {
        Mode::Spawn { data_dir } => {
            let dir = match data_dir {
                Some(d) => {
                    std::fs::create_dir_all(d)?;
                    d.clone()
                }
                None => {
                    let t = tempfile::Builder::new().prefix("ordo-torture-").tempdir()?;
                    let p = t.path().to_owned();
                    temp_dir = Some(t);
                    p
                }
            };
            let exe = std::env::current_exe()?;
            // Long enough that no PENDING order expires during the run.
            let ttl = (plan.duration * 2 + plan.drain + Duration::from_secs(600))
                .max(Duration::from_secs(3600));
            let (d, echo) = (dir.clone(), plan.server_log);
            let s = blocking(move || Spawned::start(&exe, &d, ttl, echo)).await?;
            eprintln!("ordo torture: server at {} on {}", s.base, dir.display());
            let base = s.base.clone();
            spawned = Some((Arc::new(Mutex::new(s)), dir));
            (base, None)
        }
        Mode::Url { url, token } => (url.clone(), token.clone()),
    };
    let base = Arc::new(RwLock::new(base));
    let t0 = Instant::now();
    let api = Arc::new(Api::new(
        base.clone(),
        token,
        t0,
        t0 + Duration::from_secs(60),
    )?);

    // The SKUs: every even one with a per-customer limit.
    let skus: Vec<String> = (0..plan.skus).map(|i| format!("{run}-S{i}")).collect();
    let mut setup = Setup::default();
    for (i, sku) in skus.iter().enumerate() {
        let price = 100 + 37 * i as i64;
        let limit = (i % 2 == 0).then_some(6);
        let units = api.create_sku(sku, price, limit, plan.stock).await?;
        setup.initial_stock.insert(sku.clone(), units);
    }

    // The run.
    let deadline = Instant::now() + plan.duration;
    *api.give_up_at.write() = deadline + plan.drain;
    let ctx = Arc::new(Ctx::new(
        api.clone(),
        skus.clone(),
        run.clone(),
        deadline,
        plan.max_requests,
    ));
    let clients_done = Arc::new(AtomicBool::new(false));
    let killer = match (&spawned, plan.kill_every) {
        (Some((s, _)), Some(range)) => Some(tokio::spawn(killer(
            s.clone(),
            api.clone(),
            range,
            deadline,
            clients_done.clone(),
            seed,
        ))),
        _ => None,
    };
    let progress = tokio::spawn(progress(api.clone(), deadline));
    let clients: Vec<_> = (0..plan.clients)
        .map(|i| tokio::spawn(Client::new(ctx.clone(), i, seed).run()))
        .collect();
    let mut records: Vec<Record> = Vec::new();
    for c in clients {
        records.extend(c.await?);
    }
    clients_done.store(true, Ordering::Relaxed);
    progress.abort();
    let mut violations = Vec::new();
    let mut notes = Vec::new();
    if let Some(k) = killer {
        if let Err(e) = k.await? {
            violations.push(Violation::new(
                "server",
                format!("the spawned server could not be restarted: {e:#}"),
            ));
        }
    }
    records.sort_by_key(|r| (r.sent_us, r.client));
    for (i, r) in records.iter_mut().enumerate() {
        r.id = i + 1;
    }
    eprintln!(
        "ordo torture: {} requests done; reading the final state",
        records.len()
    );

    // The final state, and the checks.
    let answered: BTreeSet<String> = records
        .iter()
        .filter_map(|r| {
            let a = r.answer.as_ref()?;
            let body = a.json();
            let o = model::order_of(&body)?;
            Some(o.get("id")?.as_str()?.to_owned())
        })
        .collect();
    let full_log = matches!(plan.mode, Mode::Spawn { .. });
    let observed = if api.abort.load(Ordering::Relaxed) {
        None
    } else {
        match api.read_final(&skus, &answered, full_log).await {
            Ok((o, n)) => {
                notes.extend(n);
                Some(o)
            }
            Err(e) => {
                violations.push(Violation::new(
                    "server",
                    format!("the final state could not be read: {e:#}"),
                ));
                None
            }
        }
    };
    if let Some(o) = &observed {
        violations.extend(model::check(&setup, &records, o));
        violations.extend(model::liveness(&records));
    }

    // With --spawn: SIGTERM, then the store's own check.
    let mut starts = 0;
    if let Some((server, dir)) = spawned {
        let stopped = blocking(move || {
            let mut s = server.lock();
            let status = s.terminate(Duration::from_secs(60));
            Ok((status, s.starts))
        })
        .await;
        let (status, n) = stopped?;
        starts = n;
        match status {
            Ok(Some(st)) if st.success() => {}
            Ok(Some(st)) => violations.push(Violation::new(
                "server",
                format!("after SIGTERM the server exited with {st}, not 0"),
            )),
            Ok(None) => violations.push(Violation::new(
                "server",
                "the server did not exit within 60 s of SIGTERM",
            )),
            Err(e) => violations.push(Violation::new("server", format!("stopping: {e:#}"))),
        }
        let d = dir.clone();
        match blocking(move || {
            let store = ordo_storage::Store::open(
                &d,
                ordo_storage::StoreOptions {
                    durability: ordo_storage::Durability::Sync,
                },
            )?;
            Ok(ordo_engine::verify(&store)?)
        })
        .await
        {
            Ok(report) => violations.extend(
                report
                    .violations
                    .into_iter()
                    .map(|v| Violation::new("store", v)),
            ),
            Err(e) => violations.push(Violation::new(
                "store",
                format!("the store could not be verified: {e:#}"),
            )),
        }
        if !violations.is_empty() {
            if let Some(t) = temp_dir.take() {
                let kept = t.keep();
                notes.push(format!("data dir kept at {}", kept.display()));
            }
        }
    }

    let summary = summarize(
        &plan,
        &run,
        &records,
        observed.as_ref(),
        &api,
        starts,
        &notes,
        &violations,
    );
    if let Some(path) = &plan.history {
        let doc = json!({
            "summary": summary,
            "setup": setup,
            "records": records,
            "observed": observed,
        });
        std::fs::write(path, serde_json::to_vec(&doc)?)?;
        eprintln!("ordo torture: history written to {}", path.display());
    }
    report(&plan, &summary, &notes, &violations)?;
    Ok(if violations.is_empty() { 0 } else { 1 })
}

/// SIGKILLs the spawned server at random points until the deadline (or until the
/// clients are done), restarting it each time on the same data directory. The server is
/// up when this returns `Ok`.
async fn killer(
    server: Arc<Mutex<Spawned>>,
    api: Arc<Api>,
    (lo, hi): (Duration, Duration),
    deadline: Instant,
    done: Arc<AtomicBool>,
    seed: u64,
) -> anyhow::Result<()> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x6b69_6c6c);
    loop {
        let wait = if hi > lo {
            rng.random_range(lo..=hi)
        } else {
            lo
        };
        let at = Instant::now() + wait;
        if at >= deadline {
            return Ok(());
        }
        while Instant::now() < at {
            if done.load(Ordering::Relaxed) {
                return Ok(());
            }
            tokio::time::sleep(
                Duration::from_millis(100).min(at.saturating_duration_since(Instant::now())),
            )
            .await;
        }
        let s = server.clone();
        let a = api.clone();
        let restarted = blocking(move || {
            let mut s = s.lock();
            s.kill()?;
            a.counters.kills.fetch_add(1, Ordering::Relaxed);
            s.restart()?;
            Ok(s.base.clone())
        })
        .await;
        match restarted {
            Ok(b) => *api.base.write() = b,
            Err(e) => {
                api.abort.store(true, Ordering::Relaxed);
                return Err(e);
            }
        }
    }
}

/// A progress line on stderr every five seconds.
async fn progress(api: Arc<Api>, deadline: Instant) {
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let c = &api.counters;
        eprintln!(
            "ordo torture: {:>4}s {} requests, {} answered, {} attempts, {} kills{}",
            started.elapsed().as_secs(),
            c.requests.load(Ordering::Relaxed),
            c.acked.load(Ordering::Relaxed),
            c.attempts.load(Ordering::Relaxed),
            c.kills.load(Ordering::Relaxed),
            if Instant::now() >= deadline {
                ", draining"
            } else {
                ""
            }
        );
    }
}

#[allow(clippy::too_many_arguments)]
fn summarize(
    plan: &Plan,
    run: &str,
    records: &[Record],
    observed: Option<&Observed>,
    api: &Api,
    starts: u64,
    notes: &[String],
    violations: &[Violation],
) -> Value {
    let acked = records.iter().filter(|r| r.answer.is_some()).count();
    let retries: usize = records
        .iter()
        .map(|r| r.attempts.len().saturating_sub(1))
        .sum();
    let replays: usize = records.iter().map(|r| r.replays.len()).sum();
    let mut answers: BTreeMap<String, u64> = BTreeMap::new();
    for r in records {
        let what = match &r.answer {
            Some(a) => {
                let v = a.json();
                match v.get("type").and_then(Value::as_str) {
                    Some(t) => format!("{} {} {t}", r.op.name(), a.status),
                    None => format!("{} {}", r.op.name(), a.status),
                }
            }
            None => format!("{} unanswered", r.op.name()),
        };
        *answers.entry(what).or_default() += 1;
    }
    let count = |f: &dyn Fn(&model::OrderFinal) -> bool| {
        observed.map_or(0, |o| o.orders.values().filter(|x| f(x)).count())
    };
    let mode = match plan.mode {
        Mode::Spawn { .. } => "spawn",
        Mode::Url { .. } => "url",
    };
    json!({
        "seed": plan.seed,
        "run": run,
        "mode": mode,
        "duration_s": plan.duration.as_secs_f64(),
        "clients": plan.clients,
        "skus": plan.skus,
        "requests": records.len(),
        "acked": acked,
        "unanswered": records.len() - acked,
        "attempts": api.counters.attempts.load(Ordering::Relaxed),
        "retries": retries,
        "replays": replays,
        "kills": api.counters.kills.load(Ordering::Relaxed),
        "starts": starts,
        "orders": observed.map_or(0, |o| o.orders.len()),
        "confirmed": count(&|o| o.history.contains(&St::Confirmed)),
        "cancelled": count(&|o| o.status == St::Cancelled),
        "fulfilled": count(&|o| o.status == St::Fulfilled),
        "failed": count(&|o| o.status == St::Failed),
        "answers": answers,
        "notes": notes,
        "violations": violations.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "ok": violations.is_empty(),
    })
}

/// Prints the outcome: the JSON line (--json) or a readable report on stdout; the
/// violations also on stderr in JSON mode, so a person watching sees them.
fn report(
    plan: &Plan,
    summary: &Value,
    notes: &[String],
    violations: &[Violation],
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if plan.json {
        for v in violations {
            eprintln!("VIOLATION {v}");
        }
        writeln!(out, "{summary}")?;
        return Ok(());
    }
    let n = |k: &str| summary[k].clone();
    writeln!(
        out,
        "seed {}: {} requests ({} answered, {} retries, {} replays), {} kills, {} orders ({} confirmed, {} cancelled, {} fulfilled, {} failed)",
        n("seed"), n("requests"), n("acked"), n("retries"), n("replays"), n("kills"),
        n("orders"), n("confirmed"), n("cancelled"), n("fulfilled"), n("failed")
    )?;
    if let Some(a) = summary["answers"].as_object() {
        for (k, v) in a {
            writeln!(out, "  {k:<40} {v}")?;
        }
    }
    for note in notes {
        writeln!(out, "note: {note}")?;
    }
    for v in violations {
        writeln!(out, "VIOLATION {v}")?;
    }
    writeln!(
        out,
        "{}",
        if violations.is_empty() {
            "OK".to_owned()
        } else {
            format!(
                "FAILED: {} violations (seed {})",
                violations.len(),
                plan.seed
            )
        }
    )?;
    Ok(())
}
