//! The engine: actors on one arbiter per core, a DashMap registry from ids to actor
//! addresses, the journal, and the embedded API.
//!
//! `Engine::open` recovers state from the store (checkpoint snapshots + the log after
//! them), finishes sagas a crash interrupted, then starts actors on its own threads, so a
//! host program needs neither actix nor tokio: every method returns a plain future that
//! any executor (or `futures::executor::block_on`) can drive.

pub mod config;
pub(crate) mod deadlines;
pub mod error;
mod idempotency;
mod order_actor;
mod recovery;
/// Recovery helpers used by the CLI (`ordo verify`).
pub mod recovery_api {
    pub use super::recovery::{load_sku, verify, RecoveryStats, VerifyReport};
}
mod sku_actor;
pub mod view;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_rt::{Arbiter, ArbiterHandle, System};
use dashmap::DashMap;
use ordo_storage::{Append, EventRecord, Journal, JournalOptions, Store, StoreOptions};
use parking_lot::{Mutex, RwLock};
use tokio::sync::oneshot;

use crate::domain::order::{
    self, Order, OrderCommand, OrderLine, PaymentOutcome, ShipmentStep, Status,
};
use crate::domain::sku::{Sku, SkuCommand, SkuView};
use crate::domain::{validate_lines, validate_sku, DomainError, LineRequest, OrderEvent};
pub use config::{Durability, EngineConfig};
pub use error::{EngineError, EngineResult};
pub use idempotency::{render, Idempotency, Outcome, Render};
use order_actor::{OrderActor, OrderReq, PaymentReport};
pub use recovery::RecoveryStats;
use sku_actor::{new_event, SkuActor, SkuHandle, SkuReq};
pub use view::OrderView;

/// Counters for metrics (read with `Ordering::Relaxed`).
#[derive(Debug, Default)]
pub struct EngineMetrics {
    pub orders_pending: AtomicU64,
    pub orders_failed_out_of_stock: AtomicU64,
    pub orders_failed_limit: AtomicU64,
    pub orders_confirmed: AtomicU64,
    pub orders_cancelled: AtomicU64,
    pub orders_fulfilled: AtomicU64,
    pub expired: AtomicU64,
    pub refunds_requested: AtomicU64,
    pub overloaded: AtomicU64,
    pub live_orders: AtomicU64,
    /// Shared with the SKU actors, which count themselves out when they passivate.
    pub live_skus: Arc<AtomicU64>,
    pub checkpoints: AtomicU64,
    pub snapshot_decode_failures: AtomicU64,
}

/// A request to create or update a SKU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpsertSku {
    pub sku: String,
    pub name: String,
    pub price_minor: i64,
    pub currency: String,
    pub per_customer_limit: Option<u32>,
    /// Initial stock; counts only when the SKU is created.
    pub stock: i64,
}

/// A request to place an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaceOrder {
    pub customer_id: String,
    pub lines: Vec<LineRequest>,
}

pub(crate) struct Inner {
    pub(crate) config: EngineConfig,
    pub(crate) store: Arc<Store>,
    pub(crate) journal: Journal,
    /// Live SKU actors (an `Arc`: an actor removes itself when it passivates).
    skus: Arc<DashMap<String, SkuHandle>>,
    /// SKU codes in order, for paging the catalogue.
    sku_index: RwLock<BTreeSet<String>>,
    pub(crate) orders: DashMap<String, Addr<OrderActor>>,
    /// Caller-chosen order ids being placed (`place_order_as`), so two placements under
    /// one id cannot both pass the "taken" check.
    placing: DashMap<String, ()>,
    /// PENDING orders without an actor (see `deadlines`).
    pub(crate) deadlines: deadlines::Deadlines,
    arbiters: Vec<ArbiterHandle>,
    next_arbiter: AtomicUsize,
    pub(crate) metrics: EngineMetrics,
    last_checkpoint: AtomicU64,
    checkpointing: AtomicBool,
    shut_down: AtomicBool,
}

/// The engine. Clones share one engine.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
    runtime: Arc<Runtime>,
}

/// The actix system thread; stopped on shutdown.
struct Runtime {
    system: System,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.system.stop();
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

fn start_runtime(workers: usize) -> EngineResult<(Runtime, Vec<ArbiterHandle>)> {
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("ordo-actors".into())
        .spawn(move || {
            let sys = System::new();
            let arbiters: Vec<Arbiter> = (0..workers.max(1)).map(|_| Arbiter::new()).collect();
            let handles = arbiters.iter().map(|a| a.handle()).collect::<Vec<_>>();
            let _ = tx.send((System::current(), handles));
            if let Err(e) = sys.run() {
                tracing::error!(error = %e, "actor system stopped with an error");
            }
            for a in arbiters {
                a.stop();
                let _ = a.join();
            }
        })
        .map_err(|e| EngineError::Unavailable(format!("cannot start actor threads: {e}")))?;
    let (system, handles) = rx
        .recv()
        .map_err(|_| EngineError::Unavailable("actor system failed to start".into()))?;
    Ok((
        Runtime {
            system,
            thread: Mutex::new(Some(thread)),
        },
        handles,
    ))
}

impl Inner {
    fn arbiter(&self) -> &ArbiterHandle {
        let i = self.next_arbiter.fetch_add(1, Ordering::Relaxed) % self.arbiters.len();
        &self.arbiters[i]
    }

    fn fail_if_stopped(&self) -> EngineResult<()> {
        if self.shut_down.load(Ordering::Acquire) {
            return Err(EngineError::Unavailable("engine is shut down".into()));
        }
        if let Some(reason) = self.journal.stopped() {
            return Err(EngineError::Unavailable(format!(
                "journal stopped: {reason}"
            )));
        }
        Ok(())
    }

    fn start_sku(&self, sku: &str, state: Sku) -> SkuHandle {
        let queued = Arc::new(AtomicUsize::new(0));
        let actor = SkuActor::new(
            sku,
            state,
            self.journal.clone(),
            self.config.sku_mailbox,
            self.config.snapshot_every,
            self.skus.clone(),
            self.config.sku_idle_timeout,
            self.metrics.live_skus.clone(),
        );
        let addr = SkuActor::start_in_arbiter(self.arbiter(), move |_| actor);
        self.metrics.live_skus.fetch_add(1, Ordering::Relaxed);
        SkuHandle { addr, queued }
    }

    /// The SKU's actor; with `create`, one is started for an unregistered SKU too.
    fn sku_addr(&self, sku: &str, create: bool) -> EngineResult<SkuHandle> {
        if let Some(h) = self.skus.get(sku) {
            if h.addr.connected() {
                return Ok(h.clone());
            }
        }
        if self.sku_index.read().contains(sku) {
            // Registered but passivated (or stopped): activate it from its snapshot and
            // the stream after it. Its last events are durable: it waited for them before
            // leaving the registry.
            // The shard stays locked while the state loads, so two activations cannot
            // race.
            let entry = self.skus.entry(sku.to_owned());
            if let dashmap::mapref::entry::Entry::Occupied(o) = &entry {
                if o.get().addr.connected() {
                    return Ok(o.get().clone());
                }
            }
            let state = recovery::load_sku(&self.store, sku)?;
            let handle = self.start_sku(sku, state);
            entry.insert(handle.clone());
            return Ok(handle);
        }
        if !create {
            return Err(DomainError::UnknownSku(sku.to_owned()).into());
        }
        validate_sku(sku)?;
        let entry = self
            .skus
            .entry(sku.to_owned())
            .or_insert_with(|| self.start_sku(sku, Sku::default()));
        Ok(entry.clone())
    }

    /// Sends a SKU command and flattens the answer: for sagas and recovery, which never
    /// keep an idempotency record. Waits for mailbox room rather than refusing
    /// (compensations and admin changes must not be dropped).
    pub(crate) async fn sku_command(
        &self,
        sku: &str,
        cmd: SkuCommand,
        trace: Option<Arc<str>>,
        durable: bool,
        idem: Option<Idempotency>,
    ) -> EngineResult<(SkuView, bool)> {
        let create = matches!(cmd, SkuCommand::Upsert { .. });
        match self
            .ask_sku(sku, create, Admission::Wait, |reply| SkuReq::Cmd {
                cmd: cmd.clone(),
                trace: trace.clone(),
                durable,
                idem: idem.clone(),
                reply,
            })
            .await
        {
            Ok(answer) => answer,
            // Never reached the actor: its refusal is stored here (the actor stores every
            // answer it gives).
            Err(e) => self.refuse(idem.as_ref(), Kind::Sku, e).await,
        }
    }

    /// Stores the answer to a command refused before any actor decided it (nothing
    /// changed), then returns the refusal. Answers that are the server's fault are not
    /// stored (the caller's render keeps nothing for them).
    async fn refuse<T>(
        &self,
        idem: Option<&Idempotency>,
        kind: Kind,
        err: EngineError,
    ) -> EngineResult<T> {
        let outcome = match kind {
            Kind::Sku => Outcome::Sku {
                result: Err(&err),
                created: false,
            },
            Kind::Order => Outcome::Order(Err(&err)),
        };
        if let Some(w) = idempotency::write(idem, outcome, false) {
            self.journal
                .append(Append {
                    idempotency: Some(w),
                    ..Append::default()
                })
                .await?;
        }
        Err(err)
    }

    /// Sends `make(reply)` to the SKU's actor and waits for the answer. With
    /// [`Admission::RefuseWhenFull`] a SKU whose queue is at its bound refuses at once
    /// with `Overloaded`; otherwise the send waits for room. A few tries at most: the
    /// actor may passivate between lookup and delivery, and a message it dropped
    /// unanswered was not applied, so sending it again to the re-activated actor is
    /// safe. An error means the message never reached an actor.
    async fn ask_sku<T>(
        &self,
        sku: &str,
        create: bool,
        admission: Admission,
        make: impl Fn(oneshot::Sender<T>) -> SkuReq,
    ) -> EngineResult<T> {
        for _ in 0..ASK_TRIES {
            let handle = self.sku_addr(sku, create)?;
            let (tx, rx) = oneshot::channel();
            let (msg, before) = handle.enqueue(make(tx));
            if admission == Admission::RefuseWhenFull && before >= self.config.sku_mailbox {
                drop(msg);
                self.metrics.overloaded.fetch_add(1, Ordering::Relaxed);
                return Err(EngineError::Overloaded {
                    sku: sku.to_owned(),
                });
            }
            if handle.addr.send(msg).await.is_ok() {
                if let Ok(v) = rx.await {
                    return Ok(v);
                }
            }
            self.skus.remove_if(sku, |_, h| h.addr == handle.addr);
            yield_now().await;
        }
        Err(EngineError::Unavailable(format!(
            "sku {sku} actor is restarting; retry"
        )))
    }

    pub(crate) fn note_order_events(&self, events: &[OrderEvent]) {
        let m = &self.metrics;
        for e in events {
            let c = match e {
                OrderEvent::OrderConfirmed(_) => &m.orders_confirmed,
                OrderEvent::OrderCancelled(_) => &m.orders_cancelled,
                OrderEvent::OrderFulfilled(_) => &m.orders_fulfilled,
                OrderEvent::RefundRequested(_) => &m.refunds_requested,
                _ => continue,
            };
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Reads an order from the store (no actor).
    fn load_order(&self, id: &str) -> EngineResult<Order> {
        recovery::load_order(&self.store, id)
    }

    /// The order's actor, activated from the log if it is not live. The registry shard
    /// stays locked while the order loads, so two activations cannot race; an actor that
    /// left made its appends durable before it left the registry, so the log holds its
    /// last state.
    fn order_addr(self: &Arc<Self>, id: &str) -> EngineResult<Addr<OrderActor>> {
        if let Some(a) = self.orders.get(id) {
            if a.connected() {
                return Ok(a.clone());
            }
        }
        let entry = self.orders.entry(id.to_owned());
        if let dashmap::mapref::entry::Entry::Occupied(o) = &entry {
            if o.get().connected() {
                return Ok(o.get().clone());
            }
        }
        let state = self.load_order(id)?;
        if !state.is_created() {
            return Err(EngineError::NotFound(format!("order {id}")));
        }
        // The actor keeps its own expiry timer from here on.
        self.deadlines.remove(id);
        let actor = OrderActor::new(state, self.clone());
        let addr = OrderActor::start_in_arbiter(self.arbiter(), move |_| actor);
        entry.insert(addr.clone());
        Ok(addr)
    }

    /// Starts an actor for an order whose state the caller holds (just placed, or
    /// recovered), unless one is live.
    fn start_order(self: &Arc<Self>, state: Order) -> Addr<OrderActor> {
        let id = state.id.clone();
        self.deadlines.remove(&id);
        let engine = self.clone();
        let mut slot = self.orders.entry(id).or_insert_with(|| {
            let actor = OrderActor::new(state.clone(), engine.clone());
            OrderActor::start_in_arbiter(engine.arbiter(), move |_| actor)
        });
        if !slot.connected() {
            let actor = OrderActor::new(state, engine.clone());
            *slot = OrderActor::start_in_arbiter(engine.arbiter(), move |_| actor);
        }
        slot.clone()
    }

    /// Sends an order command to the order's actor and waits for its answer. A message
    /// dropped unanswered (the actor was leaving memory) was not applied and is sent
    /// again, to the actor activated after it left. Errors before any actor decided the
    /// command are refusals stored under the idempotency key here.
    async fn order_request(
        self: &Arc<Self>,
        id: &str,
        idem: Option<Idempotency>,
        make: impl Fn(Option<Idempotency>, Reply<OrderView>) -> OrderReq,
    ) -> EngineResult<OrderView> {
        let reached: EngineResult<EngineResult<OrderView>> = async {
            self.fail_if_stopped()?;
            for _ in 0..ASK_TRIES {
                let addr = self.order_addr(id)?;
                let (tx, rx) = oneshot::channel();
                if addr.send(make(idem.clone(), tx)).await.is_ok() {
                    if let Ok(r) = rx.await {
                        return Ok(r);
                    }
                }
                self.orders.remove_if(id, |_, a| *a == addr);
                yield_now().await;
            }
            Err(EngineError::Unavailable(format!(
                "order {id} is restarting; retry"
            )))
        }
        .await;
        match reached {
            Ok(answer) => answer,
            Err(e) => self.refuse(idem.as_ref(), Kind::Order, e).await,
        }
    }

    async fn release_reserved(&self, order_id: &str, skus: &[String]) {
        for sku in skus {
            let cmd = SkuCommand::Release {
                order_id: order_id.to_owned(),
                reason: "compensation".into(),
            };
            if let Err(e) = self.sku_command(sku, cmd, None, false, None).await {
                tracing::error!(order = order_id, sku = %sku, error = %e, "release failed; recovery will release it");
            }
        }
    }
}

type Reply<T> = oneshot::Sender<EngineResult<T>>;

/// Frees a caller-chosen order id when its placement ends, however it ends.
struct PlacingGuard<'a> {
    placing: &'a DashMap<String, ()>,
    id: &'a str,
}

impl Drop for PlacingGuard<'_> {
    fn drop(&mut self) {
        self.placing.remove(self.id);
    }
}

/// How many times a request is sent to an actor that may be leaving memory.
const ASK_TRIES: usize = 8;

/// Whether a SKU request may be refused when the SKU's queue is at its bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admission {
    /// New work (reservations): refused with `Overloaded` when the queue is full.
    RefuseWhenFull,
    /// Compensations and admin changes: never dropped, they wait for room.
    Wait,
}

/// Which kind of answer a refused command renders as.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Sku,
    Order,
}

/// Yields once to the executor (any executor: no timer needed), so a retry lets the
/// actor that is leaving finish.
fn yield_now() -> impl std::future::Future<Output = ()> {
    let mut yielded = false;
    futures::future::poll_fn(move |cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
}

impl Engine {
    /// Opens the store, recovers, and starts the actors.
    pub fn open(config: EngineConfig) -> EngineResult<Engine> {
        let store = Store::open(
            &config.data_dir,
            StoreOptions {
                durability: config.durability,
            },
        )?;
        // The engine appends only versions its actors believe valid: a refused version
        // means memory and log disagree, and the journal stops (fail stop).
        let journal = Journal::start_with(
            store.clone(),
            JournalOptions {
                stop_on_conflict: true,
            },
        )?;
        let recovered = recovery::recover(&store, config.ignore_snapshots)?;
        let (runtime, arbiters) = start_runtime(config.workers)?;
        let inner = Arc::new(Inner {
            last_checkpoint: AtomicU64::new(recovered.stats.checkpoint_seq),
            config,
            store,
            journal,
            skus: Arc::new(DashMap::new()),
            sku_index: RwLock::new(BTreeSet::new()),
            orders: DashMap::new(),
            placing: DashMap::new(),
            deadlines: deadlines::Deadlines::default(),
            arbiters,
            next_arbiter: AtomicUsize::new(0),
            metrics: EngineMetrics::default(),
            checkpointing: AtomicBool::new(false),
            shut_down: AtomicBool::new(false),
        });
        inner
            .metrics
            .snapshot_decode_failures
            .store(recovered.stats.snapshot_failures, Ordering::Relaxed);
        let engine = Engine {
            inner,
            runtime: Arc::new(runtime),
        };
        engine.start_recovered(recovered)?;
        engine.spawn_checkpointer();
        engine.spawn_deadline_driver();
        Ok(engine)
    }

    fn start_recovered(&self, rec: recovery::Recovered) -> EngineResult<()> {
        let inner = &self.inner;
        {
            let mut index = inner.sku_index.write();
            for (sku, state) in rec.skus {
                if state.registered {
                    index.insert(sku.clone());
                }
                let handle = inner.start_sku(&sku, state);
                inner.skus.insert(sku, handle);
            }
        }
        // Orphaned holds (their order never became PENDING, or was cancelled before the
        // release reached the SKU) go back to stock.
        for (sku, order_id) in &rec.orphan_holds {
            let cmd = SkuCommand::Release {
                order_id: order_id.clone(),
                reason: "recovery".into(),
            };
            futures::executor::block_on(inner.sku_command(sku, cmd, None, true, None))?;
        }
        for (state, restored) in rec.orders {
            let redrive = matches!(state.status, Some(Status::Paid)) || state.needs_restore();
            if redrive {
                let addr = inner.start_order(state);
                addr.do_send(OrderReq::Redrive { restored });
            } else if state.status == Some(Status::Pending)
                && !inner.deadlines.insert(&state.id, state.expires_at_ms)
            {
                inner.start_order(state);
            }
            // Other live orders (CONFIRMED, shipping) are activated from the log on use.
        }
        for (id, at) in rec.lazy_pending {
            inner.deadlines.insert(&id, at);
        }
        Ok(())
    }

    /// Activates PENDING orders without an actor when their deadline passes; the actor's
    /// own timer then expires them.
    fn spawn_deadline_driver(&self) {
        let weak = Arc::downgrade(&self.inner);
        self.inner.arbiters[0].spawn(async move {
            loop {
                let wait = match weak.upgrade() {
                    Some(inner) => {
                        let now = ordo_storage::now_ms();
                        inner
                            .deadlines
                            .next()
                            .map_or(200, |at| at.saturating_sub(now).min(200))
                    }
                    None => break,
                };
                actix_rt::time::sleep(Duration::from_millis(wait.max(1))).await;
                let Some(inner) = weak.upgrade() else { break };
                if inner.shut_down.load(Ordering::Acquire) {
                    break;
                }
                for id in inner.deadlines.take_due(ordo_storage::now_ms(), 4096) {
                    if let Err(e) = inner.order_addr(&id) {
                        tracing::error!(order = %id, error = %e, "cannot activate an order at its deadline");
                    }
                }
            }
        });
    }

    fn spawn_checkpointer(&self) {
        let engine = self.clone();
        let weak = Arc::downgrade(&self.inner);
        let runtime = Arc::downgrade(&self.runtime);
        drop(engine);
        self.inner.arbiters[0].spawn(async move {
            loop {
                actix_rt::time::sleep(Duration::from_millis(500)).await;
                let (Some(inner), Some(runtime)) = (weak.upgrade(), runtime.upgrade()) else {
                    break;
                };
                if inner.shut_down.load(Ordering::Acquire) {
                    break;
                }
                let due = inner
                    .journal
                    .durable_seq()
                    .saturating_sub(inner.last_checkpoint.load(Ordering::Relaxed))
                    >= inner.config.checkpoint_every;
                if due {
                    let engine = Engine { inner, runtime };
                    if let Err(e) = engine.checkpoint().await {
                        tracing::warn!(error = %e, "checkpoint failed");
                    }
                }
            }
        });
    }

    /// Snapshots every live actor and records the log position they cover, so recovery
    /// replays only what came after. Runs beside normal traffic.
    pub async fn checkpoint(&self) -> EngineResult<u64> {
        let inner = &self.inner;
        if inner.checkpointing.swap(true, Ordering::AcqRel) {
            return Ok(inner.last_checkpoint.load(Ordering::Relaxed));
        }
        let res = async {
            let seq = inner.journal.durable_seq();
            let mut waits = Vec::new();
            let skus: Vec<_> = inner.skus.iter().map(|e| e.value().clone()).collect();
            for handle in skus {
                let (tx, rx) = oneshot::channel();
                if handle.send(SkuReq::Snapshot { reply: tx }).await.is_ok() {
                    waits.push(rx);
                }
            }
            let orders: Vec<_> = inner.orders.iter().map(|e| e.value().clone()).collect();
            for addr in orders {
                let (tx, rx) = oneshot::channel();
                if addr.send(OrderReq::Snapshot { reply: tx }).await.is_ok() {
                    waits.push(rx);
                }
            }
            for rx in waits {
                if let Ok(ticket) = rx.await {
                    ticket.await?;
                }
            }
            inner
                .journal
                .append(Append {
                    meta: vec![
                        (recovery::META_CHECKPOINT.into(), seq.to_be_bytes().to_vec()),
                        // PENDING orders without an actor have no snapshot: recovery
                        // takes them from here instead of reading each one's stream.
                        (recovery::META_PENDING.into(), inner.deadlines.encode()),
                    ],
                    ..Append::default()
                })
                .await?;
            inner.last_checkpoint.store(seq, Ordering::Relaxed);
            inner.metrics.checkpoints.fetch_add(1, Ordering::Relaxed);
            Ok(seq)
        }
        .await;
        inner.checkpointing.store(false, Ordering::Release);
        res
    }

    /// Creates a SKU (with its initial stock) or updates its catalogue data. Returns the
    /// SKU and whether it was created.
    pub async fn upsert_sku(
        &self,
        req: UpsertSku,
        trace: Option<Arc<str>>,
    ) -> EngineResult<(SkuView, bool)> {
        self.upsert_sku_with(req, trace, None).await
    }

    /// [`Engine::upsert_sku`], its answer kept under `idem` in the same append.
    pub async fn upsert_sku_with(
        &self,
        req: UpsertSku,
        trace: Option<Arc<str>>,
        idem: Option<Idempotency>,
    ) -> EngineResult<(SkuView, bool)> {
        let inner = &self.inner;
        if let Err(e) = inner
            .fail_if_stopped()
            .and_then(|()| validate_sku(&req.sku).map_err(EngineError::from))
        {
            return inner.refuse(idem.as_ref(), Kind::Sku, e).await;
        }
        let sku = req.sku.clone();
        let cmd = SkuCommand::Upsert {
            sku: req.sku,
            name: req.name,
            price_minor: req.price_minor,
            currency: req.currency,
            per_customer_limit: req.per_customer_limit,
            initial_stock: req.stock,
        };
        let (view, created) = inner.sku_command(&sku, cmd, trace, true, idem).await?;
        inner.sku_index.write().insert(sku);
        Ok((view, created))
    }

    /// Adds (`delta > 0`) or removes stock.
    pub async fn adjust_stock(
        &self,
        sku: &str,
        delta: i64,
        reason: &str,
        trace: Option<Arc<str>>,
    ) -> EngineResult<SkuView> {
        self.adjust_stock_with(sku, delta, reason, trace, None)
            .await
    }

    /// [`Engine::adjust_stock`], its answer kept under `idem` in the same append as its
    /// `StockAdjusted`.
    pub async fn adjust_stock_with(
        &self,
        sku: &str,
        delta: i64,
        reason: &str,
        trace: Option<Arc<str>>,
        idem: Option<Idempotency>,
    ) -> EngineResult<SkuView> {
        let inner = &self.inner;
        if let Err(e) = inner.fail_if_stopped().and_then(|()| self.known_sku(sku)) {
            return inner.refuse(idem.as_ref(), Kind::Sku, e).await;
        }
        let cmd = SkuCommand::AdjustStock {
            delta,
            reason: reason.to_owned(),
        };
        let (view, _) = inner.sku_command(sku, cmd, trace, true, idem).await?;
        Ok(view)
    }

    fn known_sku(&self, sku: &str) -> EngineResult<()> {
        if self.inner.sku_index.read().contains(sku) {
            Ok(())
        } else {
            Err(EngineError::NotFound(format!("sku {sku}")))
        }
    }

    pub async fn get_sku(&self, sku: &str) -> EngineResult<SkuView> {
        self.known_sku(sku)?;
        self.inner
            .ask_sku(sku, false, Admission::Wait, |reply| SkuReq::Get { reply })
            .await
    }

    /// SKUs in code order after `after`, at most `limit`.
    pub async fn list_skus(&self, after: Option<&str>, limit: usize) -> EngineResult<Vec<SkuView>> {
        let codes: Vec<String> = {
            let index = self.inner.sku_index.read();
            let iter: Box<dyn Iterator<Item = &String>> =
                match after {
                    Some(a) => Box::new(index.range::<str, _>((
                        std::ops::Bound::Excluded(a),
                        std::ops::Bound::Unbounded,
                    ))),
                    None => Box::new(index.iter()),
                };
            iter.take(limit).cloned().collect()
        };
        let mut out = Vec::with_capacity(codes.len());
        for c in codes {
            // A passivated SKU is read from the store, not woken up for a listing.
            let live = self.inner.skus.get(&c).is_some_and(|h| h.addr.connected());
            out.push(if live {
                self.get_sku(&c).await?
            } else {
                recovery::load_sku(&self.inner.store, &c)?.view()
            });
        }
        Ok(out)
    }

    /// Places an order: reserves every line (in order), compensating on failure. A
    /// PENDING order is answered once its events are durable; a FAILED one is stored and
    /// returned as [`EngineError::OrderFailed`].
    pub async fn place_order(
        &self,
        req: PlaceOrder,
        trace: Option<Arc<str>>,
    ) -> EngineResult<OrderView> {
        self.place_order_with(req, trace, None).await
    }

    /// [`Engine::place_order`], its answer kept under `idem` in the same append as the
    /// order's events: a retry after a crash either finds that answer or finds nothing
    /// placed (reservations of an order that never became durable are released by
    /// recovery).
    pub async fn place_order_with(
        &self,
        req: PlaceOrder,
        trace: Option<Arc<str>>,
        idem: Option<Idempotency>,
    ) -> EngineResult<OrderView> {
        let inner = &self.inner;
        if let Err(e) = inner
            .fail_if_stopped()
            .and_then(|()| validate_lines(&req.customer_id, &req.lines).map_err(Into::into))
        {
            return inner.refuse(idem.as_ref(), Kind::Order, e).await;
        }
        self.place(Self::new_order_id(), req, trace, idem).await
    }

    /// A fresh order id (a ULID: time-sortable, 26 characters).
    pub fn new_order_id() -> String {
        ulid::Ulid::new().to_string()
    }

    /// Places an order under an id the caller chose beforehand with
    /// [`Engine::new_order_id`]. An id that is taken is refused before anything is
    /// reserved.
    pub async fn place_order_as(
        &self,
        order_id: String,
        req: PlaceOrder,
        trace: Option<Arc<str>>,
    ) -> EngineResult<OrderView> {
        let inner = &self.inner;
        inner.fail_if_stopped()?;
        validate_lines(&req.customer_id, &req.lines)?;
        if ulid::Ulid::from_string(&order_id).is_err() {
            return Err(
                DomainError::Invalid(format!("order id {order_id:?} is not a ULID")).into(),
            );
        }
        let taken = || DomainError::Invalid(format!("order id {order_id} is taken")).into();
        if inner.placing.insert(order_id.clone(), ()).is_some() {
            return Err(taken());
        }
        let placing = PlacingGuard {
            placing: &inner.placing,
            id: &order_id,
        };
        if inner.orders.contains_key(&order_id)
            || inner.store.stream_head(&format!("order/{order_id}"))? > 0
        {
            return Err(taken());
        }
        let res = self.place(order_id.clone(), req, trace, None).await;
        drop(placing);
        res
    }

    /// Reserves every line in order; `Ok` holds the lines reserved (with their captured
    /// prices), the order's currency, and the reason a line failed (the lines after it
    /// not tried). `Err` is a refusal with every reservation already released.
    async fn reserve_lines(
        &self,
        order_id: &str,
        req: &PlaceOrder,
        trace: &Option<Arc<str>>,
    ) -> EngineResult<(Vec<OrderLine>, Option<String>, Option<DomainError>)> {
        let inner = &self.inner;
        let mut reserved: Vec<String> = Vec::with_capacity(req.lines.len());
        let mut lines: Vec<OrderLine> = Vec::with_capacity(req.lines.len());
        let mut currency: Option<String> = None;
        for line in &req.lines {
            if !inner.sku_index.read().contains(&line.sku) {
                inner.release_reserved(order_id, &reserved).await;
                return Err(DomainError::UnknownSku(line.sku.clone()).into());
            }
            let asked = inner
                .ask_sku(&line.sku, false, Admission::RefuseWhenFull, |reply| {
                    SkuReq::Reserve {
                        order_id: order_id.to_owned(),
                        customer_id: req.customer_id.clone(),
                        qty: line.qty,
                        currency: currency.clone(),
                        trace: trace.clone(),
                        reply,
                    }
                })
                .await;
            match asked.and_then(|answer| answer) {
                Ok((price, cur)) => {
                    currency.get_or_insert(cur);
                    reserved.push(line.sku.clone());
                    lines.push(OrderLine {
                        sku: line.sku.clone(),
                        qty: line.qty,
                        unit_price_minor: price,
                    });
                }
                Err(EngineError::Domain(
                    e @ (DomainError::OutOfStock { .. } | DomainError::LimitExceeded { .. }),
                )) => {
                    inner.release_reserved(order_id, &reserved).await;
                    return Ok((lines, currency, Some(e)));
                }
                Err(e) => {
                    inner.release_reserved(order_id, &reserved).await;
                    return Err(e);
                }
            }
        }
        Ok((lines, currency, None))
    }

    async fn place(
        &self,
        order_id: String,
        req: PlaceOrder,
        trace: Option<Arc<str>>,
        idem: Option<Idempotency>,
    ) -> EngineResult<OrderView> {
        let inner = &self.inner;
        let (mut lines, currency, failure) = match self.reserve_lines(&order_id, &req, &trace).await
        {
            Ok(r) => r,
            Err(e) => return inner.refuse(idem.as_ref(), Kind::Order, e).await,
        };
        if failure.is_some() {
            // Lines never tried are recorded at the SKU's current price when known.
            for line in req.lines.iter().skip(lines.len()) {
                let price = match self.get_sku(&line.sku).await {
                    Ok(v) => v.price_minor,
                    Err(_) => 0,
                };
                lines.push(OrderLine {
                    sku: line.sku.clone(),
                    qty: line.qty,
                    unit_price_minor: price,
                });
            }
        }

        let now = ordo_storage::now_ms();
        let failure_triple = failure.as_ref().map(|e| {
            let (code, sku) = match e {
                DomainError::OutOfStock { sku, .. } => ("out_of_stock", sku.clone()),
                DomainError::LimitExceeded { sku, .. } => ("limit_exceeded", sku.clone()),
                _ => ("failed", String::new()),
            };
            (code.to_owned(), sku, e.to_string())
        });
        let cmd = OrderCommand::Place {
            order_id: order_id.clone(),
            customer_id: req.customer_id.clone(),
            lines,
            currency: currency.unwrap_or_default(),
            now_ms: now,
            ttl_ms: inner.config.reservation_ttl.as_millis() as u64,
            failure: failure_triple,
        };
        let mut state = Order::default();
        let events = match order::decide(&state, &cmd) {
            Ok(ev) => ev,
            Err(e) => {
                if failure.is_none() {
                    let held: Vec<String> = req.lines.iter().map(|l| l.sku.clone()).collect();
                    inner.release_reserved(&order_id, &held).await;
                }
                return inner.refuse(idem.as_ref(), Kind::Order, e.into()).await;
            }
        };
        let stream: Arc<str> = Arc::from(format!("order/{order_id}"));
        let mut new = Vec::with_capacity(events.len());
        for e in &events {
            order::apply(&mut state, e, now);
            new.push(new_event(&stream, state.version, e, now, trace.clone()));
        }
        let view = OrderView::from(&state);
        let result = match failure {
            None => Ok(view),
            Some(reason) => Err(EngineError::OrderFailed {
                order: Box::new(view),
                reason,
            }),
        };
        // The order's events and the command's answer: one append.
        inner
            .journal
            .append(Append {
                events: new,
                idempotency: idempotency::write(
                    idem.as_ref(),
                    Outcome::Order(result.as_ref()),
                    true,
                ),
                ..Append::default()
            })
            .await?;
        match &result {
            Ok(_) => {
                inner.metrics.orders_pending.fetch_add(1, Ordering::Relaxed);
                // No actor until something happens to the order (see `deadlines`).
                if !inner.deadlines.insert(&state.id, state.expires_at_ms) {
                    inner.start_order(state);
                }
            }
            Err(EngineError::OrderFailed { reason, .. }) => {
                let counter = match reason {
                    DomainError::LimitExceeded { .. } => &inner.metrics.orders_failed_limit,
                    _ => &inner.metrics.orders_failed_out_of_stock,
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {}
        }
        result
    }

    /// Records a payment. Success deducts stock and answers the CONFIRMED order; a failed
    /// payment cancels the order. Idempotent by `payment_ref` (the same ref, outcome and
    /// amount is a replay).
    pub async fn pay(
        &self,
        order_id: &str,
        payment_ref: &str,
        outcome: PaymentOutcome,
        amount_minor: i64,
        trace: Option<Arc<str>>,
    ) -> EngineResult<OrderView> {
        self.pay_with(order_id, payment_ref, outcome, amount_minor, trace, None)
            .await
    }

    /// [`Engine::pay`], its answer kept under `idem` atomically with its events.
    pub async fn pay_with(
        &self,
        order_id: &str,
        payment_ref: &str,
        outcome: PaymentOutcome,
        amount_minor: i64,
        trace: Option<Arc<str>>,
        idem: Option<Idempotency>,
    ) -> EngineResult<OrderView> {
        if payment_ref.is_empty() || payment_ref.len() > 255 {
            let e = DomainError::Invalid("payment_ref must be 1-255 characters".into());
            return self
                .inner
                .refuse(idem.as_ref(), Kind::Order, e.into())
                .await;
        }
        self.inner
            .order_request(order_id, idem, |idem, reply| OrderReq::Pay {
                payment: PaymentReport {
                    payment_ref: payment_ref.to_owned(),
                    outcome,
                    amount_minor,
                },
                trace: trace.clone(),
                idem,
                reply,
            })
            .await
    }

    /// Cancels a PENDING (releases stock) or CONFIRMED (restores stock, requests a refund)
    /// order.
    pub async fn cancel(
        &self,
        order_id: &str,
        reason: &str,
        trace: Option<Arc<str>>,
    ) -> EngineResult<OrderView> {
        self.cancel_with(order_id, reason, trace, None).await
    }

    /// [`Engine::cancel`], its answer kept under `idem` atomically with its events.
    pub async fn cancel_with(
        &self,
        order_id: &str,
        reason: &str,
        trace: Option<Arc<str>>,
        idem: Option<Idempotency>,
    ) -> EngineResult<OrderView> {
        let reason = if reason.is_empty() {
            "customer"
        } else {
            reason
        };
        if reason.len() > 256 {
            let e = DomainError::Invalid("reason must be at most 256 characters".into());
            return self
                .inner
                .refuse(idem.as_ref(), Kind::Order, e.into())
                .await;
        }
        self.inner
            .order_request(order_id, idem, |idem, reply| OrderReq::Cancel {
                reason: reason.to_owned(),
                trace: trace.clone(),
                idem,
                reply,
            })
            .await
    }

    /// Records a shipment step.
    pub async fn ship(
        &self,
        order_id: &str,
        step: ShipmentStep,
        trace: Option<Arc<str>>,
    ) -> EngineResult<OrderView> {
        self.ship_with(order_id, step, trace, None).await
    }

    /// [`Engine::ship`], its answer kept under `idem` atomically with its event.
    pub async fn ship_with(
        &self,
        order_id: &str,
        step: ShipmentStep,
        trace: Option<Arc<str>>,
        idem: Option<Idempotency>,
    ) -> EngineResult<OrderView> {
        self.inner
            .order_request(order_id, idem, |idem, reply| OrderReq::Ship {
                step,
                trace: trace.clone(),
                idem,
                reply,
            })
            .await
    }

    /// The order as of now (live state, or read from the log if passivated).
    pub async fn get_order(&self, order_id: &str) -> EngineResult<OrderView> {
        if let Some(addr) = self.inner.orders.get(order_id).map(|a| a.clone()) {
            let (tx, rx) = oneshot::channel();
            if addr.send(OrderReq::Get { reply: tx }).await.is_ok() {
                if let Ok(v) = rx.await {
                    return Ok(v);
                }
            }
        }
        let state = self.inner.load_order(order_id)?;
        if !state.is_created() {
            return Err(EngineError::NotFound(format!("order {order_id}")));
        }
        Ok(OrderView::from(&state))
    }

    /// The order as of now, once that state is durable (a barrier append after the
    /// read): what a retried command whose saga a crash cut short is answered with.
    pub async fn get_order_durable(&self, order_id: &str) -> EngineResult<OrderView> {
        self.inner.fail_if_stopped()?;
        let view = self.get_order(order_id).await?;
        self.inner.journal.append(Append::default()).await?;
        Ok(view)
    }

    /// The order as it was answered when it was placed (its creation events only), or
    /// `None` if no order has this id. Used to replay the first answer to a retried
    /// request.
    pub fn order_at_creation(&self, order_id: &str) -> EngineResult<Option<OrderView>> {
        let state = recovery::load_order_upto(&self.inner.store, order_id, 3)?;
        Ok(state.is_created().then(|| OrderView::from(&state)))
    }

    /// Events after `after`, at most `limit`, optionally of one stream.
    pub fn read_events(
        &self,
        after: u64,
        limit: usize,
        stream: Option<&str>,
    ) -> EngineResult<Vec<EventRecord>> {
        recovery::read_events(&self.inner.store, after, limit, stream)
    }

    /// The store (the HTTP edge keeps `Idempotency-Key` answers in it).
    pub fn store(&self) -> &Arc<Store> {
        &self.inner.store
    }

    /// The journal (for the durable seq watch, stats).
    pub fn journal(&self) -> &Journal {
        &self.inner.journal
    }

    /// PENDING orders waiting for payment without an actor (activated on use or at their
    /// deadline).
    pub fn pending_without_actor(&self) -> usize {
        self.inner.deadlines.len()
    }

    pub fn metrics(&self) -> &EngineMetrics {
        &self.inner.metrics
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// Whether the engine accepts changes (false after a failed journal write or shutdown).
    pub fn is_healthy(&self) -> bool {
        self.inner.fail_if_stopped().is_ok()
    }

    /// Why the engine refuses changes (a failed write, a version conflict, shutdown), or
    /// `None` while it accepts them.
    pub fn stopped_reason(&self) -> Option<String> {
        self.inner.fail_if_stopped().err().map(|e| e.to_string())
    }

    /// The live answer kept under an idempotency key (`None`: never seen, or expired).
    pub fn idempotency_record(
        &self,
        key: &str,
    ) -> EngineResult<Option<ordo_storage::IdempotencyRecord>> {
        Ok(self
            .inner
            .store
            .idempotency_get(key.as_bytes(), ordo_storage::now_ms())?)
    }

    /// Messages queued for a SKU's actor (tests of the mailbox bound).
    #[doc(hidden)]
    pub fn sku_queue_for_test(&self, sku: &str) -> usize {
        self.inner
            .skus
            .get(sku)
            .map_or(0, |h| h.queued.load(Ordering::Acquire))
    }

    /// Up to `limit` idempotency records expired now, for
    /// [`Engine::expire_idempotency`]. Scans the store: call it off async workers.
    pub fn expired_idempotency(&self, limit: usize) -> EngineResult<Vec<(String, u64)>> {
        Ok(self
            .inner
            .store
            .idempotency_expired(ordo_storage::now_ms(), limit)?)
    }

    /// Deletes expired idempotency records through the journal, each only if it is still
    /// the record found expired (a key reused meanwhile keeps its new answer).
    pub async fn expire_idempotency(&self, keys: Vec<(String, u64)>) -> EngineResult<()> {
        if keys.is_empty() {
            return Ok(());
        }
        self.inner
            .journal
            .append(Append {
                expire_idempotency: keys,
                ..Append::default()
            })
            .await?;
        Ok(())
    }

    /// Failure point for tests: the SKU's actor takes no further message until the
    /// returned sender is dropped (or sent to), so its queue fills deterministically.
    #[doc(hidden)]
    pub async fn hold_sku_for_test(&self, sku: &str) -> EngineResult<oneshot::Sender<()>> {
        let (release, until) = oneshot::channel();
        let handle = self.inner.sku_addr(sku, false)?;
        handle
            .send(SkuReq::HoldForTest { until })
            .await
            .map_err(|e| EngineError::Unavailable(format!("sku {sku}: {e}")))?;
        Ok(release)
    }

    /// Clean shutdown: refuse new work, checkpoint (snapshots + log position), flush the
    /// journal, stop the actors.
    pub async fn shutdown(&self) -> EngineResult<()> {
        if self.inner.shut_down.load(Ordering::Acquire) {
            return Ok(());
        }
        let res = if self.inner.journal.stopped().is_none() {
            self.checkpoint().await.map(|_| ())
        } else {
            Ok(())
        };
        self.inner.shut_down.store(true, Ordering::Release);
        self.inner.journal.append(Append::default()).await.ok();
        self.inner.journal.close();
        self.inner.store.flush()?;
        self.runtime.system.stop();
        res
    }
}
