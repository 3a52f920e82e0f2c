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

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use ordo_engine::{Engine, EngineConfig, ShipmentStep};
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};

use report::{Audit, LatencySummary, Report, TimeSlot};
use target::{Conn, HttpTarget, Outcome, Target};

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
    fn name(self) -> &'static str {
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

/// An acknowledged order: its id and lines.
type PlacedOrder = (String, Vec<(String, u32)>);

/// Live counters for the progress bar.
#[derive(Default)]
struct Live {
    done: AtomicU64,
    ok: AtomicU64,
    sold_out: AtomicU64,
    errors: AtomicU64,
}

/// One worker's tallies, merged at the end.
struct Tally {
    all: Histogram<u64>,
    per_op: BTreeMap<&'static str, Histogram<u64>>,
    labels: HashMap<String, u64>,
    /// Units of acknowledged orders per SKU.
    units: HashMap<String, i64>,
    /// Acknowledged orders (lifecycle: checked at audit time).
    orders: Vec<PlacedOrder>,
    requests: u64,
    slot: Option<(usize, TimeSlot)>,
}

fn hist() -> Histogram<u64> {
    // 1 µs .. 100 s at 3 significant figures.
    Histogram::new_with_bounds(1, 100_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).expect("histogram"))
}

impl Tally {
    fn new() -> Tally {
        Tally {
            all: hist(),
            per_op: BTreeMap::new(),
            labels: HashMap::new(),
            units: HashMap::new(),
            orders: Vec::new(),
            requests: 0,
            slot: None,
        }
    }

    fn record(
        &mut self,
        op: &'static str,
        o: &Outcome,
        took: Duration,
        since_start: Duration,
        shared: &Shared,
    ) {
        let us = (took.as_micros() as u64).clamp(1, 100_000_000);
        let _ = self.all.record(us);
        let _ = self.per_op.entry(op).or_insert_with(hist).record(us);
        *self
            .labels
            .entry(format!("{op} {}", o.label()))
            .or_default() += 1;
        self.requests += 1;
        let sold_out = matches!(
            o.problem.as_deref(),
            Some("out_of_stock" | "limit_exceeded")
        );
        shared.live.done.fetch_add(1, Relaxed);
        if o.ok() {
            shared.live.ok.fetch_add(1, Relaxed);
        } else if sold_out {
            shared.live.sold_out.fetch_add(1, Relaxed);
        } else {
            shared.live.errors.fetch_add(1, Relaxed);
        }
        // The per-second timeline: kept locally, handed over when the second turns.
        let sec = since_start.as_secs() as usize;
        if self.slot.as_ref().is_some_and(|(s, _)| *s != sec) {
            self.flush(shared);
        }
        let (_, slot) = self.slot.get_or_insert_with(|| (sec, TimeSlot::new(sec)));
        slot.add(us, o.ok());
    }

    fn flush(&mut self, shared: &Shared) {
        if let Some((sec, slot)) = self.slot.take() {
            let mut tl = shared.timeline.lock();
            while tl.len() <= sec {
                let n = tl.len();
                tl.push(TimeSlot::new(n));
            }
            tl[sec].merge(&slot);
        }
    }

    fn merge(&mut self, o: Tally) {
        let _ = self.all.add(&o.all);
        for (k, h) in o.per_op {
            let _ = self.per_op.entry(k).or_insert_with(hist).add(&h);
        }
        for (k, v) in o.labels {
            *self.labels.entry(k).or_default() += v;
        }
        for (k, v) in o.units {
            *self.units.entry(k).or_default() += v;
        }
        self.orders.extend(o.orders);
        self.requests += o.requests;
    }
}

struct Shared {
    live: Live,
    stop: AtomicBool,
    issued: AtomicU64,
    timeline: Mutex<Vec<TimeSlot>>,
}

/// The SKU codes of a scenario.
fn sku_codes(args: &BenchArgs) -> Vec<String> {
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

/// Runs the benchmark; the exit code is 0 (audit passed), 1 (audit failed) or 2.
pub fn run(args: BenchArgs) -> anyhow::Result<i32> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_async(args))
}

async fn run_async(args: BenchArgs) -> anyhow::Result<i32> {
    if args.concurrency == 0 || args.concurrency > 10_000 {
        anyhow::bail!("--concurrency must be 1-10000");
    }
    if let Some(r) = args.rate {
        if !(r > 0.0 && r.is_finite()) {
            anyhow::bail!("--rate must be a positive number of orders per second");
        }
    }
    if !(0.0..=1.0).contains(&(args.pay_share + args.cancel_share)) {
        anyhow::bail!("--pay-share + --cancel-share must be within 0..1");
    }
    let duration = match (&args.duration, args.requests) {
        (Some(d), _) => Some(humantime::parse_duration(d)?),
        (None, Some(_)) => None,
        (None, None) => Some(Duration::from_secs(10)),
    };
    let mut _tempdir = None;
    let (target, target_name) = if args.embedded {
        let dir = match &args.data_dir {
            Some(d) => d.clone(),
            None => {
                let t = tempfile::tempdir()?;
                let p = t.path().to_owned();
                _tempdir = Some(t);
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
        (Target::Embedded(engine), name)
    } else {
        let url = args.url.clone().unwrap_or_default();
        let t = HttpTarget::parse(&url, args.token.clone()).await?;
        (Target::Http(Arc::new(t)), url)
    };

    let skus = sku_codes(&args);
    let mut conn = Conn::new(target.clone());
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
    let before = read_counters(&mut conn, &skus).await?;

    let shared = Arc::new(Shared {
        live: Live::default(),
        stop: AtomicBool::new(false),
        issued: AtomicU64::new(0),
        timeline: Mutex::new(Vec::new()),
    });
    // Ctrl-C ends the run early, with its report and audit. The handler is installed
    // before the first request, so no interrupt can arrive unhandled.
    #[cfg(unix)]
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let progress = progress_bar(&args, duration);
    let start = Instant::now();
    let skus_arc = Arc::new(skus.clone());
    let workers: Vec<_> = (0..args.concurrency)
        .map(|w| {
            let (shared, target, skus, args) = (
                shared.clone(),
                target.clone(),
                skus_arc.clone(),
                args.clone(),
            );
            tokio::spawn(async move { worker(w, args, target, skus, shared, start).await })
        })
        .collect();
    let ticker = {
        let shared = shared.clone();
        let pb = progress.clone();
        tokio::spawn(async move {
            let mut last = (Instant::now(), 0u64);
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                if let Some(d) = duration {
                    if start.elapsed() >= d {
                        shared.stop.store(true, Relaxed);
                    }
                }
                let done = shared.live.done.load(Relaxed);
                let now = Instant::now();
                let rate = (done - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
                last = (now, done);
                pb.set_position(match duration {
                    Some(_) => start.elapsed().as_millis() as u64,
                    None => shared.issued.load(Relaxed),
                });
                pb.set_message(format!(
                    "{rate:>9.0} req/s  ok {}  sold out {}  errors {}",
                    shared.live.ok.load(Relaxed),
                    shared.live.sold_out.load(Relaxed),
                    shared.live.errors.load(Relaxed)
                ));
                if shared.stop.load(Relaxed) {
                    break;
                }
            }
        })
    };
    let stopper = {
        let shared = shared.clone();
        tokio::spawn(async move {
            #[cfg(unix)]
            let got = interrupt.recv().await.is_some();
            #[cfg(not(unix))]
            let got = tokio::signal::ctrl_c().await.is_ok();
            if got {
                shared.stop.store(true, Relaxed);
            }
        })
    };
    let mut total = Tally::new();
    for w in workers {
        let t = w.await?;
        total.merge(t);
    }
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
    let timeline = shared.timeline.lock().clone();
    let report = Report {
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
        orders: shared.issued.load(Relaxed).min(total_orders(&total)),
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
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        report.print_text(&mut std::io::stdout().lock())?;
    }
    if let Some(path) = &args.report {
        std::fs::write(path, report.html())?;
        eprintln!("HTML report written to {}", path.display());
    }
    Ok(if report.audit.ok { 0 } else { 1 })
}

fn total_orders(t: &Tally) -> u64 {
    t.per_op
        .get("place")
        .or_else(|| t.per_op.get("ping"))
        .map_or(0, |h| h.len())
}

fn progress_bar(args: &BenchArgs, duration: Option<Duration>) -> indicatif::ProgressBar {
    if args.quiet || args.json {
        return indicatif::ProgressBar::hidden();
    }
    let (len, template) = match duration {
        Some(d) => (d.as_millis() as u64, "{elapsed_precise} [{bar:30}] {msg}"),
        None => (
            args.requests.unwrap_or(0),
            "{elapsed_precise} [{bar:30}] {pos}/{len} {msg}",
        ),
    };
    let pb = indicatif::ProgressBar::with_draw_target(
        Some(len),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb
}

async fn read_counters(
    conn: &mut Conn,
    skus: &[String],
) -> anyhow::Result<BTreeMap<String, (i64, i64, i64)>> {
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

async fn worker(
    w: usize,
    args: BenchArgs,
    target: Target,
    skus: Arc<Vec<String>>,
    shared: Arc<Shared>,
    start: Instant,
) -> Tally {
    let mut conn = Conn::new(target).with_idempotency_keys(args.idempotency_keys);
    let mut tally = Tally::new();
    let mut rng = StdRng::seed_from_u64(args.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ w as u64);
    let zipf = Zipf::new(skus.len().max(1) as f64, args.zipf.max(0.0)).ok();
    let max = args.requests.unwrap_or(u64::MAX);
    let keep = args.scenario == Scenario::Lifecycle;
    loop {
        if shared.stop.load(Relaxed) {
            break;
        }
        let n = shared.issued.fetch_add(1, Relaxed);
        if n >= max {
            shared.issued.fetch_sub(1, Relaxed);
            break;
        }
        let sent_at = match args.rate {
            Some(rate) => {
                let due = start + Duration::from_secs_f64(n as f64 / rate);
                tokio::time::sleep_until(due.into()).await;
                due
            }
            None => Instant::now(),
        };
        if args.scenario == Scenario::Ping {
            let o = conn.healthz().await;
            tally.record("ping", &o, sent_at.elapsed(), sent_at - start, &shared);
            continue;
        }
        let lines = pick_lines(&args, &skus, zipf.as_ref(), &mut rng);
        let customer = format!("buyer-{w}-{n}");
        let o = conn.place(&customer, &lines, keep).await;
        tally.record("place", &o, sent_at.elapsed(), sent_at - start, &shared);
        if !o.ok() {
            continue;
        }
        for (sku, q) in &lines {
            *tally.units.entry(sku.clone()).or_default() += i64::from(*q);
        }
        if !keep {
            continue;
        }
        let Some(body) = o.body else { continue };
        let (Some(id), Some(total)) = (body["id"].as_str(), body["total_minor"].as_i64()) else {
            continue;
        };
        let id = id.to_owned();
        let roll: f64 = rng.random();
        if roll < args.pay_share {
            let t = Instant::now();
            let o = conn.pay(&id, &format!("bench-{w}-{n}"), total).await;
            tally.record("pay", &o, t.elapsed(), t - start, &shared);
            if o.ok() {
                for step in [
                    ShipmentStep::Prepared,
                    ShipmentStep::Processed,
                    ShipmentStep::Fulfilled,
                ] {
                    let t = Instant::now();
                    let o = conn.ship(&id, step).await;
                    tally.record("ship", &o, t.elapsed(), t - start, &shared);
                }
            }
        } else if roll < args.pay_share + args.cancel_share {
            let t = Instant::now();
            let o = conn.cancel(&id).await;
            tally.record("cancel", &o, t.elapsed(), t - start, &shared);
        }
        tally.orders.push((id, lines));
    }
    tally.flush(&shared);
    tally
}

fn pick_lines(
    args: &BenchArgs,
    skus: &[String],
    zipf: Option<&Zipf<f64>>,
    rng: &mut StdRng,
) -> Vec<(String, u32)> {
    match args.scenario {
        Scenario::FlashSale => vec![(skus[rng.random_range(0..skus.len())].clone(), 1)],
        Scenario::Catalog | Scenario::Lifecycle => {
            let max_lines = if args.scenario == Scenario::Catalog {
                5
            } else {
                3
            };
            let want = rng.random_range(1..=max_lines).min(skus.len());
            let mut picked: Vec<usize> = Vec::with_capacity(want);
            let mut tries = 0;
            while picked.len() < want && tries < 50 {
                tries += 1;
                let i = match zipf {
                    Some(z) => (z.sample(rng) as usize).clamp(1, skus.len()) - 1,
                    None => rng.random_range(0..skus.len()),
                };
                if !picked.contains(&i) {
                    picked.push(i);
                }
            }
            picked
                .into_iter()
                .map(|i| (skus[i].clone(), rng.random_range(1..=3)))
                .collect()
        }
        Scenario::Ping => Vec::new(),
    }
}

async fn audit(
    args: &BenchArgs,
    target: &Target,
    conn: &mut Conn,
    skus: &[String],
    before: &BTreeMap<String, (i64, i64, i64)>,
    total: &Tally,
) -> Audit {
    let mut problems = Vec::new();
    let after = match read_counters(conn, skus).await {
        Ok(a) => a,
        Err(e) => {
            return Audit {
                ok: false,
                skus_checked: 0,
                units_acknowledged: 0,
                units_grown: 0,
                problems: vec![format!("cannot read the counters back: {e}")],
            }
        }
    };
    // Units still held (reserved or sold) by the run's acknowledged orders.
    let mut expected: HashMap<String, i64> = total.units.clone();
    if args.scenario == Scenario::Lifecycle {
        let released = released_units(target, &total.orders, args.concurrency.min(32)).await;
        match released {
            Ok(r) => {
                for (sku, u) in r {
                    *expected.entry(sku).or_default() -= u;
                }
            }
            Err(e) => problems.push(format!("cannot read the run's orders back: {e}")),
        }
    }
    let (mut acked, mut grown) = (0, 0);
    for sku in skus {
        let (Some(&(a0, r0, s0)), Some(&(a1, r1, s1))) = (before.get(sku), after.get(sku)) else {
            continue;
        };
        if a1 < 0 || r1 < 0 || s1 < 0 {
            problems.push(format!(
                "{sku}: a counter is negative (available {a1}, reserved {r1}, sold {s1})"
            ));
        }
        let (recv0, recv1) = (a0 + r0 + s0, a1 + r1 + s1);
        if recv0 != recv1 {
            problems.push(format!(
                "{sku}: available + reserved + sold went from {recv0} to {recv1}: stock was changed outside this run"
            ));
        }
        if r1 + s1 > recv0 {
            problems.push(format!(
                "{sku}: {} units reserved or sold, only {recv0} in stock",
                r1 + s1
            ));
        }
        let want = expected.get(sku).copied().unwrap_or(0);
        let got = (r1 + s1) - (r0 + s0);
        acked += want;
        grown += got;
        if want != got {
            problems.push(format!(
                "{sku}: the run's acknowledged orders hold {want} units, but reserved + sold grew by {got}{}",
                if args.scenario == Scenario::Lifecycle {
                    ""
                } else {
                    " (orders that expired during the run also show here: use a reservation TTL longer than the run)"
                }
            ));
        }
    }
    Audit {
        ok: problems.is_empty(),
        skus_checked: skus.len(),
        units_acknowledged: acked,
        units_grown: grown,
        problems,
    }
}

/// Units of the run's orders that are no longer held (cancelled, expired).
async fn released_units(
    target: &Target,
    orders: &[PlacedOrder],
    parallel: usize,
) -> Result<HashMap<String, i64>, String> {
    let chunks: Vec<Vec<PlacedOrder>> = orders
        .chunks(orders.len().div_ceil(parallel.max(1)).max(1))
        .map(|c| c.to_vec())
        .collect();
    let tasks: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            let target = target.clone();
            tokio::spawn(async move {
                let mut conn = Conn::new(target);
                let mut out: HashMap<String, i64> = HashMap::new();
                for (id, lines) in chunk {
                    let status = conn.order_status(&id).await?;
                    if status == "CANCELLED" || status == "FAILED" {
                        for (sku, q) in lines {
                            *out.entry(sku).or_default() += i64::from(q);
                        }
                    }
                }
                Ok::<_, String>(out)
            })
        })
        .collect();
    let mut total: HashMap<String, i64> = HashMap::new();
    for t in tasks {
        for (k, v) in t.await.map_err(|e| e.to_string())?? {
            *total.entry(k).or_default() += v;
        }
    }
    Ok(total)
}
