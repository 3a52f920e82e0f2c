//! The random clients. Each loops until the deadline, choosing among: place an order,
//! pay one (mostly right, sometimes failed, a wrong amount, or a payment ref used before
//! on that order), cancel one, take its next shipment step, adjust stock, or race two of
//! pay/cancel/ship on one order (both sent at once). Every request carries a fresh
//! `Idempotency-Key`; one in twenty is sent again with its key after its answer, to check
//! the replay.
//!
//! Clients share the orders they learn of (a `Pool` behind a mutex, touched once per
//! request, never across an await), so they act on each other's orders and races are
//! real. The pool's statuses are hints only (the last answer seen); the model never
//! trusts them.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use serde_json::Value;

use super::client::{http_of, Api};
use super::model::{order_of, Answer, Line, Op, Outcome, Record, St, Step};

/// What the clients know of one order.
struct Known {
    id: String,
    total_minor: i64,
    /// The status in the last answer seen (a hint).
    status: St,
    /// Payments sent for it so far: (ref, outcome, amount).
    refs: Vec<(String, Outcome, i64)>,
}

#[derive(Default)]
struct Pool {
    list: Vec<Known>,
    by_id: HashMap<String, usize>,
    /// FAILED orders seen; one in four joins the pool (late payments to them are worth
    /// a few requests, not a quarter of the run).
    failed: u64,
}

/// A copy of what the pool knows of one order, taken under the lock.
struct Picked {
    id: String,
    total_minor: i64,
    status: St,
    refs: Vec<(String, Outcome, i64)>,
}

/// The orders a pick is drawn from: mostly recent ones, where the action is.
const RECENT: usize = 64;

/// What every client shares.
pub struct Ctx {
    pub api: Arc<Api>,
    pub skus: Vec<String>,
    /// Prefix of keys and payment refs, unique to the run.
    pub run: String,
    /// Clients start no new request after this, or after `max_requests` in all.
    pub deadline: Instant,
    pub max_requests: u64,
    pub started: Instant,
    pool: Mutex<Pool>,
}

impl Ctx {
    pub fn new(
        api: Arc<Api>,
        skus: Vec<String>,
        run: String,
        deadline: Instant,
        max_requests: u64,
    ) -> Ctx {
        Ctx {
            api,
            skus,
            run,
            deadline,
            max_requests,
            started: Instant::now(),
            pool: Mutex::new(Pool::default()),
        }
    }

    /// An order whose hinted status is in `prefer` (most of the time), else any.
    fn pick(&self, rng: &mut StdRng, prefer: &[St]) -> Option<Picked> {
        let pool = self.pool.lock();
        if pool.list.is_empty() {
            return None;
        }
        let from = if rng.random_bool(0.85) {
            pool.list.len().saturating_sub(RECENT)
        } else {
            0
        };
        let window = &pool.list[from..];
        let fitting: Vec<&Known> = window
            .iter()
            .filter(|k| prefer.contains(&k.status))
            .collect();
        let k = if !fitting.is_empty() && rng.random_bool(0.85) {
            fitting.choose(rng).copied()
        } else {
            window.choose(rng)
        }?;
        Some(Picked {
            id: k.id.clone(),
            total_minor: k.total_minor,
            status: k.status,
            refs: k.refs.clone(),
        })
    }

    fn note_ref(&self, id: &str, r: (String, Outcome, i64)) {
        let mut pool = self.pool.lock();
        if let Some(&i) = pool.by_id.get(id) {
            pool.list[i].refs.push(r);
        }
    }

    /// Learns from an answer: a new order, or an order's latest status.
    fn learn(&self, answer: &Answer) {
        let body = answer.json();
        let Some(o) = order_of(&body) else { return };
        let (Some(id), Some(status)) = (
            o.get("id").and_then(Value::as_str),
            o.get("status").and_then(Value::as_str).and_then(St::parse),
        ) else {
            return;
        };
        let mut pool = self.pool.lock();
        match pool.by_id.get(id) {
            Some(&i) => pool.list[i].status = status,
            None => {
                if status == St::Failed {
                    pool.failed += 1;
                    if pool.failed % 4 != 1 {
                        return;
                    }
                }
                let total_minor = o.get("total_minor").and_then(Value::as_i64).unwrap_or(0);
                let i = pool.list.len();
                pool.list.push(Known {
                    id: id.to_owned(),
                    total_minor,
                    status,
                    refs: Vec::new(),
                });
                pool.by_id.insert(id.to_owned(), i);
            }
        }
    }
}

/// One client: its own seeded choices, its records.
pub struct Client {
    ctx: Arc<Ctx>,
    idx: usize,
    rng: StdRng,
    n: u64,
    out: Vec<Record>,
}

impl Client {
    pub fn new(ctx: Arc<Ctx>, idx: usize, seed: u64) -> Client {
        let seed = seed ^ (idx as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        Client {
            ctx,
            idx,
            rng: StdRng::seed_from_u64(seed),
            n: 0,
            out: Vec::new(),
        }
    }

    /// Runs until the deadline; returns everything it recorded.
    pub async fn run(mut self) -> Vec<Record> {
        while self.more() {
            let roll = self.rng.random_range(0..100);
            let op = match roll {
                0..30 => Some(self.place()),
                30..55 => self.pay(),
                55..65 => self.cancel(),
                65..77 => self.ship(),
                77..85 => Some(self.adjust()),
                _ => {
                    if let Some((a, b)) = self.race() {
                        let (ra, rb) = (self.replay_roll(), self.replay_roll());
                        let (ka, kb) = (self.key(), self.key());
                        let (x, y) = futures::join!(
                            perform(&self.ctx, self.idx, a, ka, ra),
                            perform(&self.ctx, self.idx, b, kb, rb)
                        );
                        self.out.push(x);
                        self.out.push(y);
                    }
                    continue;
                }
            };
            let op = op.unwrap_or_else(|| self.place());
            let (key, replay) = (self.key(), self.replay_roll());
            let rec = perform(&self.ctx, self.idx, op, key, replay).await;
            self.out.push(rec);
        }
        self.out
    }

    /// Whether to start another request.
    fn more(&self) -> bool {
        let api = &self.ctx.api;
        Instant::now() < self.ctx.deadline
            && !api.abort.load(Ordering::Relaxed)
            && api.counters.requests.load(Ordering::Relaxed) < self.ctx.max_requests
    }

    fn key(&mut self) -> String {
        self.n += 1;
        format!("{}-c{}-{}", self.ctx.run, self.idx, self.n)
    }

    fn replay_roll(&mut self) -> bool {
        self.rng.random_bool(0.05)
    }

    fn place(&mut self) -> Op {
        let rng = &mut self.rng;
        let k = rng.random_range(1..=3usize).min(self.ctx.skus.len());
        let mut skus: Vec<&String> = self.ctx.skus.iter().collect();
        skus.shuffle(rng);
        let lines = skus
            .into_iter()
            .take(k)
            .map(|s| Line {
                sku: s.clone(),
                qty: rng.random_range(1..=3),
            })
            .collect();
        // A small pool of customers at any time, so per-customer limits bite; renewed
        // every two seconds, so they do not bite forever.
        let epoch = self.ctx.started.elapsed().as_secs() / 2;
        let customer_id = format!("{}-cust{}-{}", self.ctx.run, epoch, rng.random_range(0..16));
        Op::Place { customer_id, lines }
    }

    fn pay(&mut self) -> Option<Op> {
        let Picked {
            id: order_id,
            total_minor: total,
            refs,
            ..
        } = self.ctx.pick(&mut self.rng, &[St::Pending])?;
        let rng = &mut self.rng;
        let (payment_ref, outcome, amount_minor) = match refs.choose(rng) {
            // The same ref again: its outcome and amount, or something else.
            Some((r, o, a)) if rng.random_bool(0.12) => {
                let outcome = if rng.random_bool(0.5) {
                    *o
                } else {
                    match o {
                        Outcome::Succeeded => Outcome::Failed,
                        Outcome::Failed => Outcome::Succeeded,
                    }
                };
                let amount = if rng.random_bool(0.5) { *a } else { total };
                (r.clone(), outcome, amount)
            }
            _ => {
                self.n += 1;
                let r = format!("{}-pay-c{}-{}", self.ctx.run, self.idx, self.n);
                let outcome = if rng.random_bool(0.85) {
                    Outcome::Succeeded
                } else {
                    Outcome::Failed
                };
                let amount = if rng.random_bool(0.9) {
                    total
                } else {
                    total + rng.random_range(1..=3)
                };
                (r, outcome, amount)
            }
        };
        self.ctx
            .note_ref(&order_id, (payment_ref.clone(), outcome, amount_minor));
        Some(Op::Pay {
            order_id,
            payment_ref,
            outcome,
            amount_minor,
        })
    }

    fn cancel(&mut self) -> Option<Op> {
        let order_id = self
            .ctx
            .pick(&mut self.rng, &[St::Pending, St::Confirmed])?
            .id;
        Some(Op::Cancel { order_id })
    }

    fn ship(&mut self) -> Option<Op> {
        let prefer = [St::Confirmed, St::ShipmentPrepared, St::ShipmentProcessed];
        let Picked {
            id: order_id,
            status,
            ..
        } = self.ctx.pick(&mut self.rng, &prefer)?;
        let step = match status {
            St::Confirmed => Step::Prepared,
            St::ShipmentPrepared => Step::Processed,
            St::ShipmentProcessed => Step::Fulfilled,
            _ => *[Step::Prepared, Step::Processed, Step::Fulfilled].choose(&mut self.rng)?,
        };
        Some(Op::Ship { order_id, step })
    }

    fn adjust(&mut self) -> Op {
        let sku = self
            .ctx
            .skus
            .choose(&mut self.rng)
            .cloned()
            .unwrap_or_default();
        // Mostly restocking (sales drain it); sometimes taking stock out.
        let delta = if self.rng.random_bool(0.6) {
            self.rng.random_range(1..=5)
        } else {
            -self.rng.random_range(1..=3)
        };
        Op::Adjust { sku, delta }
    }

    /// Two requests on one order, to be sent at once.
    fn race(&mut self) -> Option<(Op, Op)> {
        let Picked {
            id: order_id,
            total_minor: total,
            status,
            ..
        } = self
            .ctx
            .pick(&mut self.rng, &[St::Pending, St::Confirmed])?;
        let fresh_pay = |me: &mut Self| {
            me.n += 1;
            let payment_ref = format!("{}-pay-c{}-{}", me.ctx.run, me.idx, me.n);
            me.ctx
                .note_ref(&order_id, (payment_ref.clone(), Outcome::Succeeded, total));
            Op::Pay {
                order_id: order_id.clone(),
                payment_ref,
                outcome: Outcome::Succeeded,
                amount_minor: total,
            }
        };
        let cancel = Op::Cancel {
            order_id: order_id.clone(),
        };
        let ship = Op::Ship {
            order_id: order_id.clone(),
            step: Step::Prepared,
        };
        let pair = match (status, self.rng.random_range(0..4)) {
            (St::Confirmed, 0 | 1) => (cancel, ship),
            (St::Confirmed, 2) => (fresh_pay(self), cancel),
            (_, 0 | 1) => (fresh_pay(self), cancel),
            (_, 2) => (fresh_pay(self), fresh_pay(self)),
            _ => (cancel.clone(), cancel),
        };
        Some(pair)
    }
}

/// Sends one request (retried under its key until answered), optionally re-sends it for
/// the replay check, and records it.
async fn perform(ctx: &Ctx, client: usize, op: Op, key: String, replay: bool) -> Record {
    let api = &ctx.api;
    let (method, path, body) = http_of(&op);
    api.counters.requests.fetch_add(1, Ordering::Relaxed);
    let call = api.call(method.clone(), &path, &body, &key).await;
    let mut replays = Vec::new();
    if let Some(a) = &call.answer {
        api.counters.acked.fetch_add(1, Ordering::Relaxed);
        ctx.learn(a);
        if replay {
            // A short pause, so the replay is not always right behind the answer.
            let pause = Duration::from_millis(rand::rng().random_range(0..50));
            tokio::time::sleep(pause).await;
            if let Some(again) = api.call(method, &path, &body, &key).await.answer {
                replays.push(again);
            }
        }
    }
    Record {
        id: 0,
        client,
        op,
        key,
        sent_us: call.sent_us,
        answered_us: call.answered_us,
        attempts: call.attempts,
        answer: call.answer,
        replays,
    }
}
