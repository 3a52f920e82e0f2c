//! The run, step by step: start (or reach) the server, create the SKUs, let the clients
//! loose with the killer and the progress line beside them, read the final state back and
//! check the history against it, stop a spawned server and verify its store, then
//! summarize.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use super::args::{Mode, Plan};
use super::client::Api;
use super::model::{self, Observed, Record, Setup, Violation};
use super::server::Spawned;
use super::summary::{report, summarize};
use super::workload::{Client, Ctx};

/// A tag unique to the run: SKU codes, keys and payment refs carry it, so runs against
/// one server never meet.
fn run_tag() -> String {
    let u = ulid::Ulid::new().to_string();
    format!("t{}", &u[u.len() - 8..])
}

/// Runs `f` on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f).await?
}

/// What the run found: violations, and notes for the reader.
#[derive(Default)]
struct Findings {
    violations: Vec<Violation>,
    notes: Vec<String>,
}

/// The server the clients talk to.
struct Server {
    base: String,
    token: Option<String>,
    /// With --spawn: the child this run started.
    spawned: Option<SpawnedServer>,
}

/// A server this run started (--spawn). The fields drop in order: the child is killed
/// before its temporary directory is deleted.
struct SpawnedServer {
    server: Arc<Mutex<Spawned>>,
    dir: PathBuf,
    /// The data directory when it is a temporary one: deleted at the end, unless a
    /// violation keeps it.
    temp_dir: Option<tempfile::TempDir>,
}

/// The whole run; the exit code is 0 clean or 1 violations.
pub(super) async fn drive(plan: Plan) -> anyhow::Result<i32> {
    let run = run_tag();
    announce(&plan, &run);
    let Server {
        base,
        token,
        mut spawned,
    } = start_server(&plan).await?;
    let base = Arc::new(RwLock::new(base));
    let t0 = Instant::now();
    let api = Arc::new(Api::new(
        base.clone(),
        token,
        t0,
        t0 + Duration::from_secs(60),
    )?);
    let (skus, setup) = create_skus(&api, &plan, &run).await?;
    let mut found = Findings::default();
    let records = run_clients(&plan, &api, &skus, &run, spawned.as_ref(), &mut found).await?;
    let observed = read_back_and_check(&plan, &api, &skus, &setup, &records, &mut found).await;
    let starts = match spawned.as_mut() {
        Some(s) => s.stop_and_verify(&mut found).await?,
        None => 0,
    };
    let summary = summarize(
        &plan,
        &run,
        &records,
        observed.as_ref(),
        &api,
        starts,
        &found.notes,
        &found.violations,
    );
    write_history(&plan, &summary, &setup, &records, observed.as_ref())?;
    report(&plan, &summary, &found.notes, &found.violations)?;
    Ok(if found.violations.is_empty() { 0 } else { 1 })
}

/// The first line on stderr: the seed to replay with, the run's tag and its size.
fn announce(plan: &Plan, run: &str) {
    let seed = plan.seed;
    eprintln!(
        "ordo torture: seed {seed} (replay with --seed {seed}), run {run}, {} clients, {} skus x {} units, {}",
        plan.clients,
        plan.skus,
        plan.stock,
        humantime::format_duration(plan.duration)
    );
}

/// With --spawn, `ordo serve` started on its data directory (a temporary one unless
/// given); with --url, that server.
async fn start_server(plan: &Plan) -> anyhow::Result<Server> {
    let data_dir = match &plan.mode {
        Mode::Spawn { data_dir } => data_dir,
        Mode::Url { url, token } => {
            return Ok(Server {
                base: url.clone(),
                token: token.clone(),
                spawned: None,
            })
        }
    };
    let (dir, temp_dir) = match data_dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            (d.clone(), None)
        }
        None => {
            let t = tempfile::Builder::new().prefix("ordo-torture-").tempdir()?;
            (t.path().to_owned(), Some(t))
        }
    };
    let exe = std::env::current_exe()?;
    // Long enough that no PENDING order expires during the run.
    let ttl =
        (plan.duration * 2 + plan.drain + Duration::from_secs(600)).max(Duration::from_secs(3600));
    let (d, echo) = (dir.clone(), plan.server_log);
    let s = blocking(move || Spawned::start(&exe, &d, ttl, echo)).await?;
    eprintln!("ordo torture: server at {} on {}", s.base, dir.display());
    Ok(Server {
        base: s.base.clone(),
        token: None,
        spawned: Some(SpawnedServer {
            server: Arc::new(Mutex::new(s)),
            dir,
            temp_dir,
        }),
    })
}

/// The run's SKUs, every even one with a per-customer limit, and the stock each was
/// created with.
async fn create_skus(api: &Api, plan: &Plan, run: &str) -> anyhow::Result<(Vec<String>, Setup)> {
    let skus: Vec<String> = (0..plan.skus).map(|i| format!("{run}-S{i}")).collect();
    let mut setup = Setup::default();
    for (i, sku) in skus.iter().enumerate() {
        let price = 100 + 37 * i as i64;
        let limit = (i % 2 == 0).then_some(6);
        let units = api.create_sku(sku, price, limit, plan.stock).await?;
        setup.initial_stock.insert(sku.clone(), units);
    }
    Ok((skus, setup))
}

/// Lets the clients loose until the deadline (with --spawn and kills, the killer beside
/// them), and returns every record in the order sent, numbered from 1.
async fn run_clients(
    plan: &Plan,
    api: &Arc<Api>,
    skus: &[String],
    run: &str,
    spawned: Option<&SpawnedServer>,
    found: &mut Findings,
) -> anyhow::Result<Vec<Record>> {
    let deadline = Instant::now() + plan.duration;
    *api.give_up_at.write() = deadline + plan.drain;
    let ctx = Arc::new(Ctx::new(
        api.clone(),
        skus.to_vec(),
        run.to_owned(),
        deadline,
        plan.max_requests,
    ));
    let clients_done = Arc::new(AtomicBool::new(false));
    let killer = match (spawned, plan.kill_every) {
        (Some(s), Some(range)) => Some(tokio::spawn(killer(
            s.server.clone(),
            api.clone(),
            range,
            deadline,
            clients_done.clone(),
            plan.seed,
        ))),
        _ => None,
    };
    let progress = tokio::spawn(progress(api.clone(), deadline));
    let clients: Vec<_> = (0..plan.clients)
        .map(|i| tokio::spawn(Client::new(ctx.clone(), i, plan.seed).run()))
        .collect();
    let mut records: Vec<Record> = Vec::new();
    for c in clients {
        records.extend(c.await?);
    }
    clients_done.store(true, Ordering::Relaxed);
    progress.abort();
    if let Some(k) = killer {
        if let Err(e) = k.await? {
            found.violations.push(Violation::new(
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
    Ok(records)
}

/// Reads the final state back (unless the server was lost) and checks the history
/// against it.
async fn read_back_and_check(
    plan: &Plan,
    api: &Api,
    skus: &[String],
    setup: &Setup,
    records: &[Record],
    found: &mut Findings,
) -> Option<Observed> {
    let answered = answered_orders(records);
    let full_log = matches!(plan.mode, Mode::Spawn { .. });
    let observed = if api.abort.load(Ordering::Relaxed) {
        None
    } else {
        match api.read_final(skus, &answered, full_log).await {
            Ok((o, n)) => {
                found.notes.extend(n);
                Some(o)
            }
            Err(e) => {
                found.violations.push(Violation::new(
                    "server",
                    format!("the final state could not be read: {e:#}"),
                ));
                None
            }
        }
    };
    if let Some(o) = &observed {
        found.violations.extend(model::check(setup, records, o));
        found.violations.extend(model::liveness(records));
    }
    observed
}

/// The orders some answer named.
fn answered_orders(records: &[Record]) -> BTreeSet<String> {
    records
        .iter()
        .filter_map(|r| {
            let a = r.answer.as_ref()?;
            let body = a.json();
            let o = model::order_of(&body)?;
            Some(o.get("id")?.as_str()?.to_owned())
        })
        .collect()
}

impl SpawnedServer {
    /// SIGTERM, then the store's own check; a temporary data directory is kept when
    /// anything was found. Returns how many times the server was started.
    async fn stop_and_verify(&mut self, found: &mut Findings) -> anyhow::Result<u64> {
        let starts = self.terminate(found).await?;
        self.verify_store(found).await;
        if !found.violations.is_empty() {
            if let Some(t) = self.temp_dir.take() {
                let kept = t.keep();
                found
                    .notes
                    .push(format!("data dir kept at {}", kept.display()));
            }
        }
        Ok(starts)
    }

    /// SIGTERM: the server must exit 0 within 60 s. Returns the starts.
    async fn terminate(&self, found: &mut Findings) -> anyhow::Result<u64> {
        let server = self.server.clone();
        let stopped = blocking(move || {
            let mut s = server.lock();
            let status = s.terminate(Duration::from_secs(60));
            Ok((status, s.starts))
        })
        .await;
        let (status, starts) = stopped?;
        match status {
            Ok(Some(st)) if st.success() => {}
            Ok(Some(st)) => found.violations.push(Violation::new(
                "server",
                format!("after SIGTERM the server exited with {st}, not 0"),
            )),
            Ok(None) => found.violations.push(Violation::new(
                "server",
                "the server did not exit within 60 s of SIGTERM",
            )),
            Err(e) => found
                .violations
                .push(Violation::new("server", format!("stopping: {e:#}"))),
        }
        Ok(starts)
    }

    /// `ordo verify`'s replay of the stopped server's store, in-process.
    async fn verify_store(&self, found: &mut Findings) {
        let d = self.dir.clone();
        match blocking(move || {
            let store = ordo_storage::Store::open(
                &d,
                ordo_storage::StoreOptions {
                    durability: ordo_storage::Durability::Sync,
                    ..ordo_storage::StoreOptions::default()
                },
            )?;
            Ok(ordo_engine::verify(&store)?)
        })
        .await
        {
            Ok(report) => found.violations.extend(
                report
                    .violations
                    .into_iter()
                    .map(|v| Violation::new("store", v)),
            ),
            Err(e) => found.violations.push(Violation::new(
                "store",
                format!("the store could not be verified: {e:#}"),
            )),
        }
    }
}

/// `--history`: the summary, the setup, every record and the final state, as JSON.
fn write_history(
    plan: &Plan,
    summary: &Value,
    setup: &Setup,
    records: &[Record],
    observed: Option<&Observed>,
) -> anyhow::Result<()> {
    let Some(path) = &plan.history else {
        return Ok(());
    };
    let doc = json!({
        "summary": summary,
        "setup": setup,
        "records": records,
        "observed": observed,
    });
    std::fs::write(path, serde_json::to_vec(&doc)?)?;
    eprintln!("ordo torture: history written to {}", path.display());
    Ok(())
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
