//! Delivering a subscription's events: the worker that follows the durable log from the
//! subscription's cursor, one signed POST per event with retries on the schedule, the
//! cursor written after each delivery, dead letters and their redrive, the pause a
//! `410 Gone` asks for.

use std::ops::ControlFlow;
use std::time::SystemTime;

use reqwest::StatusCode;

use super::signing::{ordo_signature, standard_signature};
use super::*;

/// Why an event was not delivered.
pub(super) enum Undelivered {
    /// Every attempt failed (or deletion or shutdown cut them short): how many were
    /// made, and the last error.
    Failed { attempts: u32, error: String },
    /// The receiver answered `410 Gone`: the subscription pauses before this event.
    Gone,
}

/// What one attempt came to.
enum Attempt {
    Delivered,
    Gone,
    Failed {
        error: String,
        /// The receiver's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
    },
}

impl Attempt {
    fn failed(error: String) -> Attempt {
        Attempt::Failed {
            error,
            retry_after: None,
        }
    }
}

/// What became of one event the subscription wants.
enum Handled {
    /// Delivered or dead-lettered: the cursor moves past it.
    Passed,
    /// The subscription paused before it (`410 Gone`): the cursor stays.
    Held,
}

/// `e` and every error under it, so the cause (a refused target, a TLS failure) is in
/// the dead letter; and whether a refused target was the cause.
fn describe(e: &reqwest::Error) -> (String, bool) {
    let mut text = e.to_string();
    let mut refused = false;
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        refused |= s.downcast_ref::<Refused>().is_some();
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    (text, refused)
}

impl Webhooks {
    /// The delivery task of one subscription: until it is deleted or the server stops,
    /// a redrive when one is asked for, then the next batch of the log after its cursor
    /// (never past the durable seq), or a wait for more.
    pub(super) async fn worker(self: Arc<Self>, h: Arc<Handle>) {
        let mut watch = self.engine.subscribe_durable();
        loop {
            if h.deleted.load(Relaxed) || self.stopping() {
                return;
            }
            self.redrive_if_asked(&h).await;
            let cursor = h.cursor.load(Relaxed);
            let durable = self.engine.durable_seq();
            if h.paused.load(Relaxed) || cursor >= durable {
                if !self.wait_for_work(&h, &mut watch).await {
                    return;
                }
                continue;
            }
            let Some(batch) = self.read_batch(&h, cursor).await else {
                continue;
            };
            if self
                .deliver_batch(&h, batch, cursor, durable)
                .await
                .is_break()
            {
                return;
            }
        }
    }

    /// A redrive the API asked for: the dead letters delivered again, then a paused
    /// subscription resumed. A redrive cut short by shutdown leaves the subscription as
    /// it was.
    async fn redrive_if_asked(&self, h: &Handle) {
        if h.redrive.swap(false, Relaxed)
            && self.redrive_now(h).await
            && h.paused.swap(false, Relaxed)
        {
            self.store_paused(h, false);
        }
    }

    /// Waits for the log to grow, a wake-up from the API, or a second; `false` once the
    /// server is shutting down.
    async fn wait_for_work(
        &self,
        h: &Handle,
        watch: &mut tokio::sync::watch::Receiver<u64>,
    ) -> bool {
        tokio::select! {
            _ = watch.changed() => true,
            _ = h.wake.notified() => true,
            _ = self.shutdown.triggered() => false,
            _ = tokio::time::sleep(Duration::from_secs(1)) => true,
        }
    }

    /// Up to 256 events after `cursor`; `None` when the log could not be read (an error
    /// is logged and followed by a second's pause).
    async fn read_batch(&self, h: &Handle, cursor: u64) -> Option<Vec<EventRecord>> {
        let engine = self.engine.clone();
        match actix_web::web::block(move || engine.read_events(cursor, 256, None)).await {
            Ok(Ok(batch)) => Some(batch),
            Ok(Err(e)) => {
                tracing::error!(error = %e, subscription = %h.sub.id, "reading the log for delivery");
                tokio::time::sleep(Duration::from_secs(1)).await;
                None
            }
            Err(_) => None,
        }
    }

    /// Delivers the events of `batch` the subscription wants, up to `durable`, moving the
    /// cursor past every event handled. `Break` when the task must end: the subscription
    /// was deleted, or shutdown cut a delivery short.
    async fn deliver_batch(
        &self,
        h: &Handle,
        batch: Vec<EventRecord>,
        cursor: u64,
        durable: u64,
    ) -> ControlFlow<()> {
        let mut written = cursor;
        for r in batch {
            if r.seq > durable || h.deleted.load(Relaxed) || self.stopping() {
                break;
            }
            let wanted = h.sub.types.is_empty() || h.sub.types.contains(&r.event_type);
            if wanted {
                if let Handled::Held = self.deliver_or_dead_letter(h, &r).await? {
                    break;
                }
            }
            h.cursor.store(r.seq, Relaxed);
            if h.deleted.load(Relaxed) {
                return ControlFlow::Break(());
            }
            // Stored after each delivery, so a restart re-sends at most that one
            // event; skipped events are covered by the write after the batch.
            if wanted {
                self.store_cursor(h, r.seq);
                written = r.seq;
            }
            if h.paused.load(Relaxed) {
                break;
            }
        }
        let c = h.cursor.load(Relaxed);
        if c != written && !h.deleted.load(Relaxed) {
            self.store_cursor(h, c);
        }
        ControlFlow::Continue(())
    }

    /// Delivers `r`; after its last failed attempt, dead-letters it (and pauses the
    /// subscription if it says so); on `410 Gone`, pauses the subscription before it.
    /// `Break` when deletion or shutdown cut the delivery short: the event is then
    /// neither passed nor dead-lettered, so it is sent again next time.
    async fn deliver_or_dead_letter(
        &self,
        h: &Handle,
        r: &EventRecord,
    ) -> ControlFlow<(), Handled> {
        let (attempts, err) = match self.deliver(h, r).await {
            Ok(()) => return ControlFlow::Continue(Handled::Passed),
            Err(_) if h.deleted.load(Relaxed) || self.stopping() => return ControlFlow::Break(()),
            Err(Undelivered::Gone) => {
                self.pause_gone(h, r.seq);
                return ControlFlow::Continue(Handled::Held);
            }
            Err(Undelivered::Failed { attempts, error }) => (attempts, error),
        };
        let pause = h.sub.on_failure == OnFailure::Pause;
        tracing::warn!(subscription = %h.sub.id, seq = r.seq, error = %err, paused = pause, "delivery failed; dead-lettered");
        if pause {
            h.paused.store(true, Relaxed);
            self.store_paused(h, true);
        }
        self.dead_letter(h, r, attempts, &err);
        ControlFlow::Continue(Handled::Passed)
    }

    /// The receiver answered `410 Gone` to event `seq`: no more attempts until a
    /// redrive resumes the subscription (from that event).
    fn pause_gone(&self, h: &Handle, seq: u64) {
        tracing::warn!(subscription = %h.sub.id, seq, "the receiver answered 410 Gone; subscription paused (POST /v1/subscriptions/{{id}}/dead-letters/redrive resumes it)");
        h.paused.store(true, Relaxed);
        self.store_paused(h, true);
    }

    pub(super) fn store_cursor(&self, h: &Handle, seq: u64) {
        if let Err(e) = self.store.put_cursor(&h.sub.id, seq) {
            tracing::error!(error = %e, subscription = %h.sub.id, "storing a webhook cursor");
        }
    }

    fn store_paused(&self, h: &Handle, paused: bool) {
        if let Err(e) = self.store.set_paused(&h.sub.id, paused) {
            tracing::error!(error = %e, subscription = %h.sub.id, paused, "storing a webhook pause");
        }
    }

    pub(super) fn dead_letter(&self, h: &Handle, r: &EventRecord, attempts: u32, err: &str) {
        let d = DeadLetter {
            seq: r.seq,
            event_type: r.event_type.to_string(),
            attempts,
            last_error: err.chars().take(500).collect(),
            at: now_ms(),
        };
        let _g = h.records.lock();
        if h.deleted.load(Relaxed) {
            return;
        }
        match self.store.put_dead_letter(&h.sub.id, &d) {
            Ok(true) => h.stats.dead_letters.inc(),
            Ok(false) => {}
            Err(e) => {
                tracing::error!(error = %e, subscription = %h.sub.id, "storing a dead letter")
            }
        }
    }

    /// Delivers the dead letters again; `false` if shutdown cut that short or a
    /// `410 Gone` paused the subscription again.
    pub(super) async fn redrive_now(&self, h: &Handle) -> bool {
        let rows = match self.dead_letters(&h.sub.id) {
            Ok(r) => r,
            Err(_) => return true,
        };
        for d in rows {
            if self.stopping() {
                return false;
            }
            let Some(rec) = self.event_at(d.seq).await else {
                continue;
            };
            match self.deliver(h, &rec).await {
                Ok(()) => {
                    let _g = h.records.lock();
                    if self.store.delete_dead_letter(&h.sub.id, d.seq).is_ok() {
                        h.stats.dead_letters.dec();
                    }
                }
                // Interrupted by shutdown: the dead letter stays as it was.
                Err(_) if self.stopping() => return false,
                Err(Undelivered::Gone) => {
                    self.pause_gone(h, d.seq);
                    return false;
                }
                Err(Undelivered::Failed { attempts, error }) => {
                    self.dead_letter(h, &rec, d.attempts + attempts, &error)
                }
            }
        }
        true
    }

    /// The event at `seq`, if it can be read.
    async fn event_at(&self, seq: u64) -> Option<EventRecord> {
        let engine = self.engine.clone();
        let after = seq.saturating_sub(1);
        match actix_web::web::block(move || engine.read_events(after, 1, None)).await {
            Ok(Ok(records)) => records.into_iter().find(|r| r.seq == seq),
            _ => None,
        }
    }

    /// Delivers one event, retrying on the schedule; every attempt carries the same
    /// `webhook-id`.
    pub(super) async fn deliver(&self, h: &Handle, r: &EventRecord) -> Result<(), Undelivered> {
        let body = serde_json::to_vec(&crate::event_json(r)).unwrap_or_default();
        let msg_id = format!("{}{}", self.message_prefix, r.seq);
        let max = self.cfg.max_attempts();
        let mut last = String::new();
        for attempt in 1..=max {
            let cut = |error: &str| Undelivered::Failed {
                attempts: attempt - 1,
                error: error.into(),
            };
            if h.deleted.load(Relaxed) {
                return Err(cut("subscription deleted"));
            }
            if self.stopping() {
                return Err(cut("shutting down"));
            }
            if attempt > 1 {
                h.stats.retries.inc();
            }
            let retry_after = match self.attempt(h, r, &msg_id, attempt, &body).await {
                Attempt::Delivered => {
                    h.stats.deliveries.inc();
                    return Ok(());
                }
                Attempt::Gone => {
                    h.stats.failures.inc();
                    return Err(Undelivered::Gone);
                }
                Attempt::Failed { error, retry_after } => {
                    h.stats.failures.inc();
                    last = error;
                    retry_after
                }
            };
            if attempt < max {
                let scheduled = usize::try_from(attempt - 1)
                    .ok()
                    .and_then(|i| self.cfg.retry_schedule.get(i))
                    .copied()
                    .unwrap_or_default();
                self.wait_before_retry(h, retry::next_wait(scheduled, retry_after))
                    .await;
            }
        }
        Err(Undelivered::Failed {
            attempts: max,
            error: last,
        })
    }

    /// Waits `wait`, or less if the subscription is deleted or the server stops. A
    /// wake-up from the API does not cut it short: a receiver's `Retry-After` is kept.
    async fn wait_before_retry(&self, h: &Handle, wait: Duration) {
        let until = tokio::time::Instant::now() + wait;
        while !h.deleted.load(Relaxed) {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return,
                _ = h.wake.notified() => {}
                _ = self.shutdown.triggered() => return,
            }
        }
    }

    /// One signed POST of `body`. A target that is not allowed (its literal address
    /// here, a name's addresses in the client's resolver) is not sent to: a failed
    /// attempt, logged with the reason.
    async fn attempt(
        &self,
        h: &Handle,
        r: &EventRecord,
        msg_id: &str,
        attempt: u32,
        body: &[u8],
    ) -> Attempt {
        let url = match reqwest::Url::parse(&h.sub.url) {
            Ok(u) => u,
            Err(e) => return Attempt::failed(format!("url: {e}")),
        };
        if let Err(refused) = self.targets.check_literal(&url) {
            tracing::warn!(subscription = %h.sub.id, seq = r.seq, attempt, error = %refused, "webhook target refused; not sent");
            return Attempt::failed(format!("not sent: {refused}"));
        }
        let now = now_ms();
        let t = now / 1000;
        let keys = h.secrets.lock().keys(now);
        let res = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", msg_id)
            .header("webhook-timestamp", t.to_string())
            .header(
                "webhook-signature",
                standard_signature(&keys, msg_id, t, body),
            )
            .header("ordo-event-seq", r.seq.to_string())
            .header("ordo-event-type", r.event_type.as_str())
            .header("ordo-subscription", h.sub.id.as_str())
            .header("ordo-delivery-attempt", attempt.to_string())
            .header("ordo-signature", ordo_signature(&keys, t, body))
            .body(body.to_vec())
            .send()
            .await;
        match res {
            Ok(resp) if resp.status().is_success() => Attempt::Delivered,
            Ok(resp) if resp.status() == StatusCode::GONE => Attempt::Gone,
            Ok(resp) => {
                let status = resp.status();
                let retry_after = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| retry::parse_retry_after(v, SystemTime::now()));
                let note = if status.is_redirection() {
                    " (redirects are not followed)"
                } else {
                    ""
                };
                Attempt::Failed {
                    error: format!("HTTP {status}{note}"),
                    retry_after,
                }
            }
            Err(e) => {
                let (error, refused) = describe(&e);
                if refused {
                    tracing::warn!(subscription = %h.sub.id, seq = r.seq, attempt, error = %error, "webhook target refused; not sent");
                }
                Attempt::failed(error)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::webhooks::targets::{CheckedResolver, Targets};

    /// Answers every name with 127.0.0.1.
    struct Loopback;

    impl Resolve for Loopback {
        fn lookup<'a>(&'a self, _: &'a str) -> Lookup<'a> {
            Box::pin(async { Ok(vec![IpAddr::from([127, 0, 0, 1])]) })
        }
    }

    #[tokio::test]
    async fn a_name_refused_by_the_clients_resolver_is_named_as_the_cause() {
        let targets = Targets::new(false, Resolver(Arc::new(Loopback)));
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(CheckedResolver(targets)))
            .no_proxy()
            .build()
            .unwrap();
        let err = client
            .post("http://hooks.example.test:9/")
            .send()
            .await
            .unwrap_err();
        let (text, refused) = describe(&err);
        assert!(refused, "{text}");
        assert!(text.contains("127.0.0.1, a loopback address"), "{text}");
    }
}
