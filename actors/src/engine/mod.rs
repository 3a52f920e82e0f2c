//! The engine: actors on one arbiter per core, a DashMap registry from ids to actor
//! addresses, the journal, and the embedded API.
//!
//! `Engine::open` recovers state from the store (checkpoint snapshots + the log after
//! them), finishes sagas a crash interrupted, then starts actors on its own threads, so a
//! host program needs neither actix nor tokio: every method returns a plain future that
//! any executor (or `futures::executor::block_on`) can drive.

mod aggregate;
pub mod config;
pub(crate) mod deadlines;
pub mod error;
mod idempotency;
mod metrics;
mod order_actor;
mod recovery;
/// Recovery helpers used by the CLI (`ordo verify`).
pub mod recovery_api {
    pub use super::recovery::{load_sku, RecoveryStats};
    pub use super::verify::{verify, VerifyReport};
}
mod sku_actor;
mod verify;
pub mod view;

mod background;
mod orders;
pub(crate) mod placement;
mod registry;
mod runtime;
mod skus;

use registry::{Admission, Kind, PlacingGuard};
use runtime::{start_runtime, Runtime};

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_rt::{Arbiter, ArbiterHandle, System};
use dashmap::DashMap;
use ordo_storage::{Append, EventRecord, Journal, JournalOptions, Store, StoreOptions};
use parking_lot::{Mutex, RwLock};
use prometheus::Registry;
use tokio::sync::oneshot;

use crate::domain::order::{
    self, FailureReason, Order, OrderCommand, OrderLine, PaymentOutcome, PlaceFailure,
    ShipmentStep, Status,
};
use crate::domain::sku::{Sku, SkuCommand, SkuView};
use crate::domain::Aggregate;
use crate::domain::{validate_lines, validate_sku, DomainError, LineRequest, OrderEvent};
pub use config::{Durability, EngineConfig};
pub use error::{EngineError, EngineResult};
pub use idempotency::{render, Idempotency, Outcome, Render};
pub use metrics::EngineMetrics;
use order_actor::{OrderActor, OrderReq, PaymentReport};
pub use recovery::RecoveryStats;
use sku_actor::{Placed, SinglePlace, SkuActor, SkuHandle, SkuReq, SnapshotPolicy};
pub use view::OrderView;

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
    /// The engine's and the journal's metrics, for `/metrics`. One per engine, not the
    /// process-wide default: a process (a test run) may open several engines.
    registry: Registry,
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

impl Engine {
    /// Opens the store, recovers, and starts the actors.
    pub fn open(config: EngineConfig) -> EngineResult<Engine> {
        let store = Store::open(
            &config.data_dir,
            StoreOptions {
                durability: config.durability,
                ..StoreOptions::default()
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
        let registry = Registry::new();
        let metrics = EngineMetrics::new(&registry)?;
        journal.metrics().register(&registry)?;
        let recovered = recovery::recover(&store, config.ignore_snapshots)?;
        metrics
            .snapshot_decode_failures
            .inc_by(recovered.stats.snapshot_failures);
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
            deadlines: deadlines::Deadlines::new(metrics.pending_without_actor.clone()),
            arbiters,
            next_arbiter: AtomicUsize::new(0),
            metrics,
            registry,
            checkpointing: AtomicBool::new(false),
            shut_down: AtomicBool::new(false),
        });
        let engine = Engine {
            inner,
            runtime: Arc::new(runtime),
        };
        engine.start_recovered(recovered)?;
        engine.spawn_checkpointer();
        engine.spawn_deadline_driver();
        Ok(engine)
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

    /// The store (for wiring: the webhook store is built over it).
    pub fn store(&self) -> &Arc<Store> {
        &self.inner.store
    }

    /// The highest seq known durable (the end of the feed).
    pub fn durable_seq(&self) -> u64 {
        self.inner.journal.durable_seq()
    }

    /// A receiver that sees the durable seq advance (live feeds, webhook deliveries).
    pub fn subscribe_durable(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.journal.subscribe()
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

    /// What the engine counts, as typed handles.
    pub fn metrics(&self) -> &EngineMetrics {
        &self.inner.metrics
    }

    /// The registry holding the engine's and the journal's metrics, for `/metrics`.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
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
