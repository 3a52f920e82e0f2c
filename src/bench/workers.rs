//! The workers: each owns one connection (or a handle on the embedded engine) and sends
//! the scenario's requests in a loop until the run stops, closed loop or open loop.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ordo_engine::ShipmentStep;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use tokio::task::JoinHandle;

use super::args::{BenchArgs, Scenario};
use super::tally::{Shared, Tally};
use super::target::{Conn, Outcome, Target};

/// Starts `--concurrency` workers.
pub(super) fn spawn_workers(
    args: &BenchArgs,
    target: &Target,
    skus: &[String],
    shared: &Arc<Shared>,
    start: Instant,
) -> Vec<JoinHandle<Tally>> {
    let skus_arc = Arc::new(skus.to_vec());
    (0..args.concurrency)
        .map(|w| {
            let (shared, target, skus, args) = (
                shared.clone(),
                target.clone(),
                skus_arc.clone(),
                args.clone(),
            );
            tokio::spawn(async move {
                Worker::new(w, args, target, skus, shared, start)
                    .run()
                    .await
            })
        })
        .collect()
}

/// Waits for every worker and merges their tallies.
pub(super) async fn join_workers(workers: Vec<JoinHandle<Tally>>) -> anyhow::Result<Tally> {
    let mut total = Tally::new();
    for w in workers {
        let t = w.await?;
        total.merge(t);
    }
    Ok(total)
}

/// One worker: its connection, its tallies and its own seeded share of the request mix.
struct Worker {
    w: usize,
    args: BenchArgs,
    skus: Arc<Vec<String>>,
    shared: Arc<Shared>,
    /// When the run started: open-loop requests are due relative to it.
    start: Instant,
    conn: Conn,
    tally: Tally,
    rng: StdRng,
    zipf: Option<Zipf<f64>>,
}

impl Worker {
    /// Worker `w`, seeded from `--seed` and its number.
    fn new(
        w: usize,
        args: BenchArgs,
        target: Target,
        skus: Arc<Vec<String>>,
        shared: Arc<Shared>,
        start: Instant,
    ) -> Worker {
        let conn = Conn::new(target).with_idempotency_keys(args.idempotency_keys);
        let rng = StdRng::seed_from_u64(args.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ w as u64);
        let zipf = Zipf::new(skus.len().max(1) as f64, args.zipf.max(0.0)).ok();
        Worker {
            w,
            args,
            skus,
            shared,
            start,
            conn,
            tally: Tally::new(),
            rng,
            zipf,
        }
    }

    /// Sends requests until the run stops or `--requests` have been issued; returns the
    /// worker's tallies.
    async fn run(mut self) -> Tally {
        let max = self.args.requests.unwrap_or(u64::MAX);
        loop {
            if self.shared.stop.load(Relaxed) {
                break;
            }
            let n = self.shared.issued.fetch_add(1, Relaxed);
            if n >= max {
                self.shared.issued.fetch_sub(1, Relaxed);
                break;
            }
            let sent_at = self.wait_until_due(n).await;
            if self.args.scenario == Scenario::Ping {
                let o = self.conn.healthz().await;
                self.record("ping", &o, sent_at);
                continue;
            }
            self.order(n, sent_at).await;
        }
        self.tally.flush(&self.shared);
        self.tally
    }

    /// When request `n` counts as sent: open loop, its due time (waited for); closed
    /// loop, now.
    async fn wait_until_due(&self, n: u64) -> Instant {
        match self.args.rate {
            Some(rate) => {
                let due = self.start + Duration::from_secs_f64(n as f64 / rate);
                tokio::time::sleep_until(due.into()).await;
                due
            }
            None => Instant::now(),
        }
    }

    /// Counts one request sent at `sent_at` and answered now.
    fn record(&mut self, op: &'static str, o: &Outcome, sent_at: Instant) {
        self.tally
            .record(op, o, sent_at.elapsed(), sent_at - self.start, &self.shared);
    }

    /// Order `n`: placed, its units counted when acknowledged; in the lifecycle
    /// scenario, then paid and shipped, or cancelled, or left to expire.
    async fn order(&mut self, n: u64, sent_at: Instant) {
        let keep = self.args.scenario == Scenario::Lifecycle;
        let lines = pick_lines(&self.args, &self.skus, self.zipf.as_ref(), &mut self.rng);
        let customer = format!("buyer-{}-{n}", self.w);
        let o = self.conn.place(&customer, &lines, keep).await;
        self.record("place", &o, sent_at);
        if !o.ok() {
            return;
        }
        for (sku, q) in &lines {
            *self.tally.units.entry(sku.clone()).or_default() += i64::from(*q);
        }
        if !keep {
            return;
        }
        let Some(body) = o.body else { return };
        let (Some(id), Some(total)) = (body["id"].as_str(), body["total_minor"].as_i64()) else {
            return;
        };
        let id = id.to_owned();
        self.follow_up(&id, total, n).await;
        self.tally.orders.push((id, lines));
    }

    /// Lifecycle: pay (then ship to fulfilled) a share, cancel a share, leave the rest.
    async fn follow_up(&mut self, id: &str, total: i64, n: u64) {
        let roll: f64 = self.rng.random();
        if roll < self.args.pay_share {
            let t = Instant::now();
            let o = self
                .conn
                .pay(id, &format!("bench-{}-{n}", self.w), total)
                .await;
            self.record("pay", &o, t);
            if o.ok() {
                for step in [
                    ShipmentStep::Prepared,
                    ShipmentStep::Processed,
                    ShipmentStep::Fulfilled,
                ] {
                    let t = Instant::now();
                    let o = self.conn.ship(id, step).await;
                    self.record("ship", &o, t);
                }
            }
        } else if roll < self.args.pay_share + self.args.cancel_share {
            let t = Instant::now();
            let o = self.conn.cancel(id).await;
            self.record("cancel", &o, t);
        }
    }
}

/// The lines of one order: one unit of a hot SKU (flash sale), or 1–5 (catalog) or 1–3
/// (lifecycle) distinct SKUs picked by popularity, 1–3 units each.
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
