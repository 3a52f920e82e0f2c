//! HTTP for `ordo torture`: a request under one `Idempotency-Key`, retried with the same
//! key and body until it gets an answer that is not the server's fault, and recorded
//! attempt by attempt ([`call`]); and the read-back of the final state (SKUs, orders,
//! event log; [`read_back`]). Here: the [`Api`] they share and each operation's request.
//!
//! Threading: one [`Api`] is shared by every client task (reqwest's pool is shared and
//! thread-safe). The server's address lives behind a lock because `--spawn` restarts the
//! server on a new ephemeral port; each attempt reads it afresh.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use reqwest::Method;
use serde_json::{json, Value};

use super::model::{Answer, Attempt, Micros, Op};

mod call;
mod read_back;

/// Live counters (progress line and summary).
#[derive(Debug, Default)]
pub struct Counters {
    pub attempts: AtomicU64,
    pub requests: AtomicU64,
    pub acked: AtomicU64,
    pub kills: AtomicU64,
}

/// The outcome of [`Api::call`].
#[derive(Debug, Clone)]
pub struct Call {
    pub sent_us: Micros,
    pub answered_us: Option<Micros>,
    pub attempts: Vec<Attempt>,
    pub answer: Option<Answer>,
}

/// The server as the clients see it.
pub struct Api {
    http: reqwest::Client,
    /// `http://host:port`, replaced when a spawned server comes back on a new port.
    pub base: Arc<RwLock<String>>,
    token: Option<String>,
    /// Time zero of the run's monotonic clock.
    t0: Instant,
    /// After this, unanswered requests stop retrying.
    pub give_up_at: RwLock<Instant>,
    /// Set when the run is abandoned (the spawned server could not be restarted).
    pub abort: AtomicBool,
    pub counters: Counters,
}

impl Api {
    pub fn new(
        base: Arc<RwLock<String>>,
        token: Option<String>,
        t0: Instant,
        give_up_at: Instant,
    ) -> anyhow::Result<Api> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(64)
            .build()?;
        Ok(Api {
            http,
            base,
            token,
            t0,
            give_up_at: RwLock::new(give_up_at),
            abort: AtomicBool::new(false),
            counters: Counters::default(),
        })
    }

    /// Microseconds since the start of the run.
    pub fn now_us(&self) -> Micros {
        self.t0.elapsed().as_micros() as Micros
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let url = format!("{}{path}", self.base.read());
        let r = self.http.request(method, url);
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    fn stopped(&self) -> bool {
        self.abort.load(Ordering::Relaxed) || Instant::now() >= *self.give_up_at.read()
    }
}

/// Method, path and body of a request.
pub fn http_of(op: &Op) -> (Method, String, Value) {
    match op {
        Op::Place { customer_id, lines } => (
            Method::POST,
            "/v1/orders".into(),
            json!({
                "customer_id": customer_id,
                "lines": lines.iter().map(|l| json!({"sku": l.sku, "qty": l.qty})).collect::<Vec<_>>(),
            }),
        ),
        Op::Pay {
            order_id,
            payment_ref,
            outcome,
            amount_minor,
        } => (
            Method::POST,
            format!("/v1/orders/{order_id}/payments"),
            json!({"payment_ref": payment_ref, "outcome": outcome, "amount_minor": amount_minor}),
        ),
        Op::Cancel { order_id } => (
            Method::POST,
            format!("/v1/orders/{order_id}/cancel"),
            json!({"reason": "torture"}),
        ),
        Op::Ship { order_id, step } => (
            Method::POST,
            format!("/v1/orders/{order_id}/shipment"),
            json!({"step": step}),
        ),
        Op::Adjust { sku, delta } => (
            Method::POST,
            format!("/v1/skus/{sku}/stock-adjustments"),
            json!({"delta": delta, "reason": "torture"}),
        ),
    }
}
