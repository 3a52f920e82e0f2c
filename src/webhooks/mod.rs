//! Webhook subscriptions: every stored event of the subscribed types goes to the
//! subscriber's URL, in seq order, at least once, signed by the Standard Webhooks spec.
//!
//! One delivery task per subscription, on the server's runtime. It follows the log from
//! its cursor (never past the journal's durable seq), POSTs each matching event, retries
//! failures on the retry schedule ([`retry`]: by default over about 27 hours, a
//! receiver's `Retry-After` honoured), and after the last attempt either puts the event
//! on the subscription's dead-letter list and goes on (the default) or pauses the
//! subscription where it stands (`on_failure: "pause"`). A receiver answering `410 Gone`
//! pauses the subscription at once, before that event; a redrive resumes it. Redirects
//! are never followed (a 3xx is a failed attempt). The cursor, the subscription and its
//! dead letters live in the store's `meta` column family, so a restart resumes where
//! delivery stopped: an event whose delivery was under way when the process died is
//! sent again, with the same `webhook-id`.
//!
//! Targets: private, loopback and link-local addresses are refused unless the operator
//! allows them, at creation and again at every delivery, after DNS ([`targets`]).
//!
//! Shutdown: the tasks run on the server's main runtime, tracked by its first shutdown
//! stage. Once that is triggered a task finishes the attempt in flight (bounded by the
//! delivery timeout), records its outcome, starts no retry and no new event, and ends;
//! an event it had not finished is neither dead-lettered nor passed, so the next start
//! sends it again.
//!
//! Signatures ([`signing`]): `webhook-id` (`msg_<store id>_<incarnation>_<seq>`: the
//! same on every attempt at one event, unique across stores and restores),
//! `webhook-timestamp` (each attempt's own unix seconds) and `webhook-signature`
//! (`v1,<base64 HMAC-SHA256>` over `{id}.{timestamp}.{body}`, one per signing key), and
//! the earlier `Ordo-Signature` beside them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use ordo_engine::Engine;
use ordo_storage::{now_ms, EventRecord};
use parking_lot::Mutex;
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::shutdown::Shutdown;

mod delivery;
mod error;
mod metrics;
pub mod retry;
pub mod signing;
mod store;
mod subscriptions;
pub mod targets;
pub use error::WebhookError;
use metrics::{SubStats, WebhookMetrics};
use signing::Secrets;
pub use store::WebhookStore;
use subscriptions::{parse_grace, validate};
pub use subscriptions::{
    CreateSubscription, DeadLetter, RotateSecret, SecretView, SubscriptionView,
};
pub use targets::{Lookup, Refused, Resolve, Resolver};

/// The event types of SPEC §1, the only ones a subscription may name.
pub const EVENT_TYPES: [&str; 18] = [
    "SkuRegistered",
    "SkuUpdated",
    "StockAdjusted",
    "StockReserved",
    "StockReleased",
    "StockReduced",
    "StockRestored",
    "OrderCreated",
    "OrderPending",
    "OrderFailed",
    "PaymentSucceeded",
    "PaymentFailed",
    "OrderConfirmed",
    "OrderCancelled",
    "RefundRequested",
    "ShipmentPrepared",
    "ShipmentProcessed",
    "OrderFulfilled",
];

/// What happens to an event that failed every attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Put it on the dead-letter list and go on with the next event.
    #[default]
    DeadLetter,
    /// Stop the subscription at that event until its dead letters are redriven.
    Pause,
}

/// A subscription's record as stored: its settings and its secrets (one flat JSON
/// object, as earlier releases wrote it).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    #[serde(flatten)]
    sub: Stored,
    #[serde(flatten)]
    secrets: Secrets,
}

/// A subscription's settings (they never change).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    id: String,
    url: String,
    types: Vec<String>,
    on_failure: OnFailure,
    created_at: u64,
    /// Delivery starts after this seq.
    start_after: u64,
}

/// Delivery settings.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// The waits before each retry: an event gets one attempt more than it has waits.
    pub retry_schedule: Vec<Duration>,
    pub timeout: Duration,
    /// Extra trusted CA certificates (PEM) for https receivers.
    pub ca_file: Option<std::path::PathBuf>,
    /// Deliver to loopback, private and link-local targets too.
    pub allow_private: bool,
    /// Answers the targets' names (the system's; tests bring their own).
    pub resolver: Resolver,
}

impl WebhookConfig {
    /// Attempts per event.
    pub fn max_attempts(&self) -> u32 {
        u32::try_from(self.retry_schedule.len())
            .unwrap_or(u32::MAX)
            .saturating_add(1)
    }
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            retry_schedule: retry::DEFAULT_SCHEDULE.to_vec(),
            timeout: Duration::from_secs(10),
            ca_file: None,
            allow_private: false,
            resolver: Resolver::system(),
        }
    }
}

struct Handle {
    sub: Stored,
    /// The secrets that sign, replaced by a rotation (under `records`).
    secrets: Mutex<Secrets>,
    cursor: AtomicU64,
    paused: AtomicBool,
    deleted: AtomicBool,
    redrive: AtomicBool,
    wake: Notify,
    stats: SubStats,
    /// Serialises changes to the subscription's stored records (dead letters, secrets)
    /// between the worker, the API and deletion, so none is written after a delete.
    records: Mutex<()>,
}

impl Handle {
    fn new(
        Record { sub, secrets }: Record,
        cursor: u64,
        paused: bool,
        dead_letters: u64,
        stats: SubStats,
    ) -> Arc<Handle> {
        stats
            .dead_letters
            .set(i64::try_from(dead_letters).unwrap_or(i64::MAX));
        Arc::new(Handle {
            sub,
            secrets: Mutex::new(secrets),
            cursor: AtomicU64::new(cursor),
            paused: AtomicBool::new(paused),
            deleted: AtomicBool::new(false),
            redrive: AtomicBool::new(false),
            wake: Notify::new(),
            stats,
            records: Mutex::new(()),
        })
    }
}

pub struct Webhooks {
    /// The log: the durable seq and its watch, and the events to deliver.
    engine: Engine,
    /// Subscriptions, cursors, pause marks and dead letters.
    store: WebhookStore,
    cfg: WebhookConfig,
    client: reqwest::Client,
    /// Which targets may be delivered to (the client's resolver holds a clone).
    targets: targets::Targets,
    /// `msg_<store id>_<incarnation>_`: a seq after it is an event's `webhook-id`.
    message_prefix: String,
    subs: DashMap<String, Arc<Handle>>,
    /// The server's first shutdown stage: every delivery task is tracked by it and ends
    /// when it is triggered, so the store is no longer used when the engine stops.
    shutdown: Shutdown,
    /// The server's main runtime, where every delivery task runs — also those of
    /// subscriptions created by a request. On an HTTP worker's runtime a task would be
    /// dropped mid-delivery as soon as that worker went idle on shutdown, instead of
    /// finishing its attempt.
    runtime: tokio::runtime::Handle,
    metrics: WebhookMetrics,
}

impl Webhooks {
    /// Loads the subscriptions in `store` and starts their delivery tasks; their metrics
    /// go to `registry`.
    pub fn start(
        engine: Engine,
        store: WebhookStore,
        cfg: WebhookConfig,
        shutdown: Shutdown,
        registry: &Registry,
    ) -> anyhow::Result<Arc<Webhooks>> {
        let targets = targets::Targets::new(cfg.allow_private, cfg.resolver.clone());
        // Never a redirect (it would carry the signed event elsewhere, unchecked), never a
        // proxy (it would resolve the target itself, past the check), and every name
        // resolved and checked by `CheckedResolver` as the client connects.
        let mut builder = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .user_agent(concat!("ordo-webhooks/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(targets::CheckedResolver(targets.clone())))
            .https_only(false);
        if let Some(path) = &cfg.ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| anyhow::anyhow!("webhook CA file {}: {e}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| anyhow::anyhow!("webhook CA file {}: {e}", path.display()))?;
            if certs.is_empty() {
                anyhow::bail!("webhook CA file {} holds no certificate", path.display());
            }
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let client = builder.build()?;
        let identity = store.identity()?;
        let message_prefix = format!("msg_{}_{}_", identity.id, identity.incarnation);
        let hooks = Arc::new(Webhooks {
            engine,
            store,
            cfg,
            client,
            targets,
            message_prefix,
            subs: DashMap::new(),
            shutdown,
            runtime: tokio::runtime::Handle::try_current()
                .map_err(|e| anyhow::anyhow!("webhook delivery needs a runtime: {e}"))?,
            metrics: WebhookMetrics::new(registry)?,
        });
        for record in hooks.store.subscriptions()? {
            let sub = &record.sub;
            let cursor = hooks.store.cursor(&sub.id)?.unwrap_or(sub.start_after);
            let paused = hooks.store.is_paused(&sub.id)?;
            let dead = hooks.store.dead_letter_count(&sub.id)?;
            let stats = hooks.metrics.series(&sub.id)?;
            let h = Handle::new(record, cursor, paused, dead, stats);
            hooks.subs.insert(h.sub.id.clone(), h.clone());
            hooks.clone().spawn(h);
        }
        tracing::info!(subscriptions = hooks.subs.len(), "webhook delivery started");
        Ok(hooks)
    }

    fn spawn(self: Arc<Self>, h: Arc<Handle>) {
        let (stage, runtime) = (self.shutdown.clone(), self.runtime.clone());
        runtime.spawn(stage.track(async move { self.worker(h).await }));
    }

    /// The server is shutting down: start nothing new.
    fn stopping(&self) -> bool {
        self.shutdown.is_triggered()
    }

    fn view(&self, h: &Handle) -> SubscriptionView {
        let cursor = h.cursor.load(Relaxed);
        SubscriptionView {
            id: h.sub.id.clone(),
            url: h.sub.url.clone(),
            types: h.sub.types.clone(),
            on_failure: h.sub.on_failure,
            paused: h.paused.load(Relaxed),
            created_at: h.sub.created_at,
            cursor,
            lag: self.engine.durable_seq().saturating_sub(cursor),
            dead_letters: u64::try_from(h.stats.dead_letters.get()).unwrap_or(0),
            secret: None,
        }
    }

    /// Creates a subscription once its target is allowed (see [`targets`]).
    pub async fn create(
        self: &Arc<Self>,
        req: CreateSubscription,
    ) -> Result<SubscriptionView, WebhookError> {
        let url = validate(&req)?;
        self.targets.check_url(&url).await?;
        // A generated secret is shown in this answer, once; a given one never.
        let (secret, generated) = match req.secret {
            Some(given) => (given, None),
            None => {
                let made = signing::generate_secret();
                (made.clone(), Some(made))
            }
        };
        let head = self.engine.durable_seq();
        let sub = Stored {
            id: ulid::Ulid::new().to_string(),
            url: req.url,
            types: req.types,
            on_failure: req.on_failure,
            created_at: now_ms(),
            start_after: req.after.unwrap_or(head).min(head),
        };
        let record = Record {
            sub,
            secrets: Secrets::new(secret),
        };
        // The series first: nothing is stored for a subscription that could not be counted.
        let id = &record.sub.id;
        let stats = self.metrics.series(id).map_err(|e| {
            tracing::error!(error = %e, "webhook metrics");
            WebhookError::Metrics(e.to_string())
        })?;
        if let Err(e) = self.store.put_subscription(&record) {
            self.metrics.remove(id);
            return Err(e);
        }
        let cursor = record.sub.start_after;
        let h = Handle::new(record, cursor, false, 0, stats);
        self.subs.insert(h.sub.id.clone(), h.clone());
        let view = SubscriptionView {
            secret: generated,
            ..self.view(&h)
        };
        self.clone().spawn(h);
        Ok(view)
    }

    /// Replaces the secret of subscription `id` (with `req.secret`, or a generated
    /// one); the old one keeps signing for the grace period. The new secret.
    pub fn rotate_secret(&self, id: &str, req: RotateSecret) -> Result<SecretView, WebhookError> {
        let h = self.handle(id)?;
        let grace = parse_grace(&req.grace)?;
        if let Some(s) = &req.secret {
            signing::check_secret(s)?;
        }
        let secret = req.secret.unwrap_or_else(signing::generate_secret);
        let _g = h.records.lock();
        if h.deleted.load(Relaxed) {
            return Err(WebhookError::NotFound { id: id.to_owned() });
        }
        let secrets = h.secrets.lock().rotated(secret.clone(), grace, now_ms());
        self.store.put_subscription(&Record {
            sub: h.sub.clone(),
            secrets: secrets.clone(),
        })?;
        *h.secrets.lock() = secrets;
        tracing::info!(subscription = %id, grace = %humantime::format_duration(grace), "webhook secret rotated");
        Ok(SecretView { secret })
    }

    pub fn list(&self) -> Vec<SubscriptionView> {
        let mut v: Vec<_> = self.subs.iter().map(|e| self.view(e.value())).collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    fn handle(&self, id: &str) -> Result<Arc<Handle>, WebhookError> {
        self.subs
            .get(id)
            .map(|h| h.clone())
            .ok_or_else(|| WebhookError::NotFound { id: id.to_owned() })
    }

    pub fn get(&self, id: &str) -> Result<SubscriptionView, WebhookError> {
        Ok(self.view(&*self.handle(id)?))
    }

    pub fn delete(&self, id: &str) -> Result<(), WebhookError> {
        let h = self.handle(id)?;
        h.deleted.store(true, Relaxed);
        h.wake.notify_one();
        self.subs.remove(id);
        self.metrics.remove(id);
        let _g = h.records.lock();
        self.store.delete_subscription(id)
    }

    pub fn dead_letters(&self, id: &str) -> Result<Vec<DeadLetter>, WebhookError> {
        let h = self.handle(id)?;
        let _g = h.records.lock();
        self.store.dead_letters(id)
    }

    /// Asks the delivery task to deliver the dead letters again (in seq order, before new
    /// events) and to resume if paused. Returns how many are queued.
    pub fn redrive(&self, id: &str) -> Result<usize, WebhookError> {
        let n = self.dead_letters(id)?.len();
        let h = self.handle(id)?;
        h.redrive.store(true, Relaxed);
        h.wake.notify_one();
        Ok(n)
    }

    /// Brings the gauges that are read rather than counted (the lag) up to date, for a
    /// scrape.
    pub fn refresh_metrics(&self) {
        let head = self.engine.durable_seq();
        for h in self.subs.iter() {
            let lag = head.saturating_sub(h.cursor.load(Relaxed));
            h.stats.lag.set(i64::try_from(lag).unwrap_or(i64::MAX));
        }
    }
}
