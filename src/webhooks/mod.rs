//! Webhook subscriptions: every stored event of the subscribed types goes to the
//! subscriber's URL, in seq order, at least once, signed.
//!
//! One delivery task per subscription, on the server's runtime. It follows the log from
//! its cursor (never past the journal's durable seq), POSTs each matching event, retries
//! failures with exponential backoff and full jitter, and after `max_attempts` either puts
//! the event on the subscription's dead-letter list and goes on (the default) or pauses
//! the subscription where it stands (`on_failure: "pause"`). The cursor, the subscription
//! and its dead letters live in the store's `meta` column family, so a restart resumes
//! where delivery stopped: an event whose delivery was under way when the process died is
//! sent again (receivers recognise duplicates by `Ordo-Event-Seq`).
//!
//! Shutdown: the tasks run on the server's main runtime, tracked by its first shutdown
//! stage. Once that is triggered a task finishes the attempt in flight (bounded by the
//! delivery timeout), records its outcome, starts no retry and no new event, and ends;
//! an event it had not finished is neither dead-lettered nor passed, so the next start
//! sends it again.
//!
//! Signature: `Ordo-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
//! A receiver recomputes the HMAC over the timestamp, a dot and the raw body with its
//! secret, compares in constant time, and rejects timestamps too far from its clock.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use hmac::{Hmac, Mac};
use ordo_engine::Engine;
use ordo_storage::{now_ms, EventRecord};
use parking_lot::Mutex;
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::sync::Notify;

use crate::shutdown::Shutdown;

mod delivery;
mod error;
mod metrics;
mod store;
pub use error::WebhookError;
use metrics::{SubStats, WebhookMetrics};
pub use store::WebhookStore;

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

/// A subscription as stored (the secret included).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    id: String,
    url: String,
    types: Vec<String>,
    secret: String,
    on_failure: OnFailure,
    created_at: u64,
    /// Delivery starts after this seq.
    start_after: u64,
}

/// A subscription as the API shows it (never the secret).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SubscriptionView {
    pub id: String,
    pub url: String,
    /// Event types delivered; empty means all.
    pub types: Vec<String>,
    pub on_failure: OnFailure,
    pub paused: bool,
    /// Unix milliseconds.
    pub created_at: u64,
    /// The last seq handled (delivered, skipped as another type, or dead-lettered).
    pub cursor: u64,
    /// How many seqs it is behind the log.
    pub lag: u64,
    pub dead_letters: u64,
}

/// `POST /v1/subscriptions`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSubscription {
    /// `http://` or `https://` URL the events are POSTed to.
    pub url: String,
    /// Event types to deliver (SPEC names); empty or absent: all.
    #[serde(default)]
    pub types: Vec<String>,
    /// 16–256 characters; signs every delivery.
    pub secret: String,
    #[serde(default)]
    pub on_failure: OnFailure,
    /// Deliver events after this seq [default: only events stored from now on].
    #[serde(default)]
    pub after: Option<u64>,
}

/// An event that failed every attempt.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeadLetter {
    pub seq: u64,
    #[serde(rename = "type")]
    pub event_type: String,
    pub attempts: u32,
    pub last_error: String,
    /// Unix milliseconds.
    pub at: u64,
}

/// Delivery settings.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub max_attempts: u32,
    pub timeout: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Extra trusted CA certificates (PEM) for https receivers.
    pub ca_file: Option<std::path::PathBuf>,
}

struct Handle {
    sub: Stored,
    cursor: AtomicU64,
    paused: AtomicBool,
    deleted: AtomicBool,
    redrive: AtomicBool,
    wake: Notify,
    stats: SubStats,
    /// Serialises dead-letter list changes between the worker and the API.
    dead_lock: Mutex<()>,
}

impl Handle {
    fn new(
        sub: Stored,
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
            cursor: AtomicU64::new(cursor),
            paused: AtomicBool::new(paused),
            deleted: AtomicBool::new(false),
            redrive: AtomicBool::new(false),
            wake: Notify::new(),
            stats,
            dead_lock: Mutex::new(()),
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

/// `Ordo-Signature` for `body` at unix second `t`.
pub fn signature(secret: &str, t: u64, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={t},v1={hex}")
}

fn validate(req: &CreateSubscription) -> Result<(), WebhookError> {
    let url =
        reqwest::Url::parse(&req.url).map_err(|e| WebhookError::invalid(format!("url: {e}")))?;
    match url.scheme() {
        "http" | "https" => {}
        other => {
            return Err(WebhookError::invalid(format!(
                "url must be http:// or https://, not {other}://"
            )))
        }
    }
    if url.host_str().is_none_or(str::is_empty) || req.url.len() > 2048 {
        return Err(WebhookError::invalid(
            "url needs a host and at most 2048 characters",
        ));
    }
    if req.secret.len() < 16 || req.secret.len() > 256 {
        return Err(WebhookError::invalid("secret must be 16-256 characters"));
    }
    if req.types.len() > EVENT_TYPES.len() {
        return Err(WebhookError::invalid("too many types"));
    }
    for t in &req.types {
        if !EVENT_TYPES.contains(&t.as_str()) {
            return Err(WebhookError::invalid(format!(
                "unknown event type `{t}`; known: {}",
                EVENT_TYPES.join(", ")
            )));
        }
    }
    Ok(())
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
        let mut builder = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .user_agent(concat!("ordo-webhooks/", env!("CARGO_PKG_VERSION")))
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
        let hooks = Arc::new(Webhooks {
            engine,
            store,
            cfg,
            client,
            subs: DashMap::new(),
            shutdown,
            runtime: tokio::runtime::Handle::try_current()
                .map_err(|e| anyhow::anyhow!("webhook delivery needs a runtime: {e}"))?,
            metrics: WebhookMetrics::new(registry)?,
        });
        for sub in hooks.store.subscriptions()? {
            let cursor = hooks.store.cursor(&sub.id)?.unwrap_or(sub.start_after);
            let paused = hooks.store.is_paused(&sub.id)?;
            let dead = hooks.store.dead_letter_count(&sub.id)?;
            let stats = hooks.metrics.series(&sub.id)?;
            let h = Handle::new(sub, cursor, paused, dead, stats);
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
        }
    }

    pub fn create(
        self: &Arc<Self>,
        req: CreateSubscription,
    ) -> Result<SubscriptionView, WebhookError> {
        validate(&req)?;
        let head = self.engine.durable_seq();
        let sub = Stored {
            id: ulid::Ulid::new().to_string(),
            url: req.url,
            types: req.types,
            secret: req.secret,
            on_failure: req.on_failure,
            created_at: now_ms(),
            start_after: req.after.unwrap_or(head).min(head),
        };
        // The series first: nothing is stored for a subscription that could not be counted.
        let stats = self.metrics.series(&sub.id).map_err(|e| {
            tracing::error!(error = %e, "webhook metrics");
            WebhookError::Metrics(e.to_string())
        })?;
        if let Err(e) = self.store.put_subscription(&sub) {
            self.metrics.remove(&sub.id);
            return Err(e);
        }
        let cursor = sub.start_after;
        let h = Handle::new(sub, cursor, false, 0, stats);
        self.subs.insert(h.sub.id.clone(), h.clone());
        let view = self.view(&h);
        self.clone().spawn(h);
        Ok(view)
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
        let _g = h.dead_lock.lock();
        self.store.delete_subscription(id)
    }

    pub fn dead_letters(&self, id: &str) -> Result<Vec<DeadLetter>, WebhookError> {
        let h = self.handle(id)?;
        let _g = h.dead_lock.lock();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_a_known_hmac() {
        // HMAC-SHA256("key", "1.{}"), computed with Python's hmac module.
        let s = signature("key", 1, b"{}");
        assert_eq!(
            s,
            "t=1,v1=1ba6b8171186efc613e8bcc0cbdab2748f24984d7c5a84faa2637afa0e40d224"
        );
        assert_ne!(s, signature("other", 1, b"{}"));
        assert_ne!(s, signature("key", 2, b"{}"));
    }
}
