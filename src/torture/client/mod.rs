//! HTTP for `ordo torture`: a request under one `Idempotency-Key`, retried with the same
//! key and body until it gets an answer that is not the server's fault, and recorded
//! attempt by attempt; and the read-back of the final state (SKUs, orders, event log).
//!
//! Threading: one [`Api`] is shared by every client task (reqwest's pool is shared and
//! thread-safe). The server's address lives behind a lock because `--spawn` restarts the
//! server on a new ephemeral port; each attempt reads it afresh.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use parking_lot::RwLock;
use rand::Rng;
use reqwest::Method;
use serde_json::{json, Value};

use super::model::{
    Answer, Attempt, LogEvent, LogView, Micros, Observed, Op, OrderFinal, SkuFinal,
};

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

    /// Sends `body` under `key` until an answer that is neither a 5xx nor a 429 arrives
    /// (then that is the answer), or the run gives up (then there is none). No answer at
    /// all (connection refused or reset, timeout, a body cut short) is retried too: the
    /// server may or may not have acted, and the key makes the retry safe.
    pub async fn call(&self, method: Method, path: &str, body: &Value, key: &str) -> Call {
        let sent_us = self.now_us();
        let mut attempts = Vec::new();
        loop {
            if self.stopped() {
                return Call {
                    sent_us,
                    answered_us: None,
                    attempts,
                    answer: None,
                };
            }
            self.counters.attempts.fetch_add(1, Ordering::Relaxed);
            let at_us = self.now_us();
            let sent = self
                .request(method.clone(), path)
                .header("Idempotency-Key", key)
                .json(body)
                .send()
                .await;
            let mut wait = backoff();
            match sent {
                Err(e) => attempts.push(Attempt {
                    at_us,
                    status: None,
                    error: Some(short_error(&e)),
                }),
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let replayed = resp
                        .headers()
                        .get("Idempotent-Replayed")
                        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
                    let retry_after = resp
                        .headers()
                        .get("Retry-After")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok());
                    match resp.text().await {
                        Err(e) => attempts.push(Attempt {
                            at_us,
                            status: Some(status),
                            error: Some(format!("body: {}", short_error(&e))),
                        }),
                        Ok(text) => {
                            attempts.push(Attempt {
                                at_us,
                                status: Some(status),
                                error: None,
                            });
                            if status < 500 && status != 429 {
                                return Call {
                                    sent_us,
                                    answered_us: Some(self.now_us()),
                                    attempts,
                                    answer: Some(Answer {
                                        status,
                                        body: text,
                                        replayed,
                                    }),
                                };
                            }
                            if let Some(s) = retry_after {
                                // Honoured, but never more than a second: the run is short.
                                wait = wait.max(Duration::from_secs(s.min(1)));
                            }
                        }
                    }
                }
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// A read: retried on errors and 5xx for up to `patience`. Returns status and body.
    pub async fn get(&self, path: &str, patience: Duration) -> anyhow::Result<(u16, Value)> {
        let until = Instant::now() + patience;
        let mut last = String::new();
        while Instant::now() < until && !self.abort.load(Ordering::Relaxed) {
            match self.request(Method::GET, path).send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    match resp.text().await {
                        Ok(text) if status < 500 && status != 429 => {
                            let v = serde_json::from_str(&text).unwrap_or(Value::Null);
                            return Ok((status, v));
                        }
                        Ok(text) => last = format!("{status} {text}"),
                        Err(e) => last = short_error(&e),
                    }
                }
                Err(e) => last = short_error(&e),
            }
            tokio::time::sleep(backoff()).await;
        }
        anyhow::bail!("GET {path}: no answer ({last})")
    }

    /// `PUT /v1/skus/{sku}` with its initial stock; returns the units it starts with.
    pub async fn create_sku(
        &self,
        sku: &str,
        price_minor: i64,
        per_customer_limit: Option<u32>,
        stock: i64,
    ) -> anyhow::Result<i64> {
        let body = json!({
            "name": format!("torture {sku}"),
            "price_minor": price_minor,
            "currency": "EUR",
            "per_customer_limit": per_customer_limit,
            "stock": stock,
        });
        let key = format!("setup-{sku}");
        let call = self
            .call(Method::PUT, &format!("/v1/skus/{sku}"), &body, &key)
            .await;
        match call.answer {
            Some(a) if a.status == 201 => Ok(stock),
            Some(a) => anyhow::bail!(
                "creating sku {sku} was answered {} {} (an admin token is needed with --url)",
                a.status,
                a.body
            ),
            None => anyhow::bail!("creating sku {sku}: the server did not answer"),
        }
    }

    /// Reads the final state: every SKU, the event log (`full_log`: paged from the start,
    /// for a server that holds only this run; else per stream: the SKUs' streams name the
    /// orders that held stock), and every order an answer or the log names.
    ///
    /// SKUs are read before and after the orders; if any changed meanwhile (a saga still
    /// finishing, an expiry), everything is read again, so the SKUs and orders compared
    /// are one consistent state.
    pub async fn read_final(
        &self,
        skus: &[String],
        answered_orders: &BTreeSet<String>,
        full_log: bool,
    ) -> anyhow::Result<(Observed, Vec<String>)> {
        let mut notes = Vec::new();
        let patience = Duration::from_secs(30);
        let mut tries = 0;
        loop {
            tries += 1;
            let before = self.read_skus(skus, patience).await?;
            let log = match self.read_log(skus, answered_orders, full_log).await {
                Ok(l) => Some(l),
                Err(e) => {
                    notes.push(format!("event log not checked: {e:#}"));
                    None
                }
            };
            let mut ids: BTreeSet<String> = answered_orders.clone();
            if let Some(l) = &log {
                ids.extend(l.orders.keys().cloned());
            }
            let mut orders = BTreeMap::new();
            let mut lost = BTreeSet::new();
            let mut reads = futures::stream::iter(ids.into_iter().map(|id| async move {
                let res = self.get(&format!("/v1/orders/{id}"), patience).await;
                (id, res)
            }))
            .buffer_unordered(16);
            while let Some((id, res)) = reads.next().await {
                match res? {
                    (200, v) => {
                        let o = OrderFinal::from_json(&v)
                            .map_err(|e| anyhow::anyhow!("order {id} does not read: {e}"))?;
                        orders.insert(id, o);
                    }
                    (404, _) => {
                        lost.insert(id);
                    }
                    (status, v) => anyhow::bail!("GET /v1/orders/{id} answered {status} {v}"),
                }
            }
            let after = self.read_skus(skus, patience).await?;
            let stable = before == after;
            if stable || tries >= 5 {
                if !stable {
                    notes.push("the SKUs kept changing while the final state was read".into());
                }
                let counters = after.into_iter().map(|(k, (f, _version))| (k, f)).collect();
                return Ok((
                    Observed {
                        skus: counters,
                        orders,
                        lost,
                        log,
                    },
                    notes,
                ));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn read_skus(
        &self,
        skus: &[String],
        patience: Duration,
    ) -> anyhow::Result<BTreeMap<String, (SkuFinal, Option<i64>)>> {
        let mut out = BTreeMap::new();
        for sku in skus {
            let (status, v) = self.get(&format!("/v1/skus/{sku}"), patience).await?;
            if status != 200 {
                anyhow::bail!("GET /v1/skus/{sku} answered {status} {v}");
            }
            let n = |k: &str| {
                v.get(k)
                    .and_then(Value::as_i64)
                    .ok_or_else(|| anyhow::anyhow!("sku {sku} without `{k}`: {v}"))
            };
            let f = SkuFinal {
                available: n("available")?,
                reserved: n("reserved")?,
                sold: n("sold")?,
            };
            // The version (when the server reports one) tells apart two reads with equal
            // counters around a change that was undone.
            let version = v.get("version").and_then(Value::as_i64);
            out.insert(sku.clone(), (f, version));
        }
        Ok(out)
    }

    /// Pages `GET /v1/events` (optionally one stream) from the start to the end, handing
    /// each event to `each` (so a long log is never held whole).
    async fn read_events(
        &self,
        stream: Option<&str>,
        mut each: impl FnMut(Value),
    ) -> anyhow::Result<()> {
        let mut after = 0u64;
        let started = Instant::now();
        loop {
            if started.elapsed() > Duration::from_secs(120) {
                anyhow::bail!("reading the log took over 2 minutes");
            }
            let path = match stream {
                Some(s) => format!("/v1/events?after={after}&limit=1000&stream={s}"),
                None => format!("/v1/events?after={after}&limit=1000"),
            };
            let (status, mut v) = self.get(&path, Duration::from_secs(30)).await?;
            if status != 200 {
                anyhow::bail!("GET {path} answered {status} {v}");
            }
            let next = v
                .get("next")
                .and_then(Value::as_u64)
                .ok_or_else(|| anyhow::anyhow!("GET {path}: no next"))?;
            let Some(Value::Array(events)) = v.get_mut("events").map(Value::take) else {
                anyhow::bail!("GET {path}: no events list");
            };
            if events.is_empty() || next <= after {
                return Ok(());
            }
            events.into_iter().for_each(&mut each);
            after = next;
        }
    }

    async fn read_log(
        &self,
        skus: &[String],
        answered_orders: &BTreeSet<String>,
        full_log: bool,
    ) -> anyhow::Result<LogView> {
        let ours: BTreeSet<&str> = skus.iter().map(String::as_str).collect();
        let mut view = LogView::default();
        // Every order stream seen, with whether it names one of the run's SKUs.
        let mut order_events: BTreeMap<String, (bool, Vec<LogEvent>)> = BTreeMap::new();
        let note_sku_event = |view: &mut LogView, e: &Value| {
            if e["type"] == "StockAdjusted" && e["payload"]["reason"] == "torture" {
                if let Some(sku) = e["stream"].as_str().and_then(|s| s.strip_prefix("sku/")) {
                    *view.adjustments.entry(sku.to_owned()).or_default() += 1;
                }
            }
        };
        let names_ours = |e: &Value| {
            e["type"] == "OrderCreated"
                && e["payload"]["lines"].as_array().is_some_and(|ls| {
                    ls.iter()
                        .any(|l| l["sku"].as_str().is_some_and(|s| ours.contains(s)))
                })
        };
        if full_log {
            self.read_events(None, |e| {
                let stream = e["stream"].as_str().unwrap_or_default();
                if let Some(id) = stream.strip_prefix("order/") {
                    let entry = order_events.entry(id.to_owned()).or_default();
                    entry.0 |= names_ours(&e);
                    entry.1.push(log_event(&e));
                } else if stream
                    .strip_prefix("sku/")
                    .is_some_and(|s| ours.contains(s))
                {
                    note_sku_event(&mut view, &e);
                }
            })
            .await?;
        } else {
            let mut ids = answered_orders.clone();
            for sku in skus {
                self.read_events(Some(&format!("sku/{sku}")), |e| {
                    if let Some(id) = e["payload"]["order_id"].as_str() {
                        ids.insert(id.to_owned());
                    }
                    note_sku_event(&mut view, &e);
                })
                .await?;
            }
            let mut reads = futures::stream::iter(ids.into_iter().map(|id| async move {
                let mut evs = (false, Vec::new());
                let res = self
                    .read_events(Some(&format!("order/{id}")), |e| {
                        evs.0 |= names_ours(&e);
                        evs.1.push(log_event(&e));
                    })
                    .await;
                (id, res.map(|()| evs))
            }))
            .buffer_unordered(16);
            while let Some((id, res)) = reads.next().await {
                order_events.insert(id, res?);
            }
        }
        view.orders = order_events
            .into_iter()
            .filter(|(_, (ours, _))| *ours)
            .map(|(id, (_, evs))| (id, evs))
            .collect();
        Ok(view)
    }
}

fn log_event(e: &Value) -> LogEvent {
    LogEvent {
        kind: e["type"].as_str().unwrap_or_default().to_owned(),
        payment_ref: e["payload"]["payment_ref"].as_str().map(str::to_owned),
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

/// 50–200 ms, jittered so retries after a restart do not arrive in one wave.
fn backoff() -> Duration {
    Duration::from_millis(rand::rng().random_range(50..=200))
}

fn short_error(e: &reqwest::Error) -> String {
    let kind = if e.is_connect() {
        "connect"
    } else if e.is_timeout() {
        "timeout"
    } else if e.is_body() || e.is_decode() {
        "body"
    } else {
        "request"
    };
    let mut s = format!("{kind}: {e}");
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(&format!(": {c}"));
        src = c.source();
    }
    if s.len() > 200 {
        let cut = (0..=200)
            .rev()
            .find(|&i| s.is_char_boundary(i))
            .unwrap_or(0);
        s.truncate(cut);
    }
    s
}
