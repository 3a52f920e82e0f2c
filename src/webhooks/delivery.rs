//! Delivering a subscription's events: the worker that follows the durable log from the
//! subscription's cursor, one signed POST per event with retries and backoff, the cursor
//! written after each delivery, dead letters and their redrive.

use std::ops::ControlFlow;

use super::*;

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
                self.deliver_or_dead_letter(h, &r).await?;
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
    /// subscription if it says so). `Break` when deletion or shutdown cut the delivery
    /// short: the event is then neither passed nor dead-lettered, so it is sent again
    /// next time.
    async fn deliver_or_dead_letter(&self, h: &Handle, r: &EventRecord) -> ControlFlow<()> {
        let Err((attempts, err)) = self.deliver(h, r).await else {
            return ControlFlow::Continue(());
        };
        if h.deleted.load(Relaxed) || self.stopping() {
            return ControlFlow::Break(());
        }
        let pause = h.sub.on_failure == OnFailure::Pause;
        tracing::warn!(subscription = %h.sub.id, seq = r.seq, error = %err, paused = pause, "delivery failed; dead-lettered");
        if pause {
            h.paused.store(true, Relaxed);
            self.store_paused(h, true);
        }
        self.dead_letter(h, r, attempts, &err);
        ControlFlow::Continue(())
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
        let _g = h.dead_lock.lock();
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

    /// Delivers the dead letters again; `false` if shutdown cut that short.
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
                    let _g = h.dead_lock.lock();
                    if self.store.delete_dead_letter(&h.sub.id, d.seq).is_ok() {
                        h.stats.dead_letters.dec();
                    }
                }
                // Interrupted by shutdown: the dead letter stays as it was.
                Err(_) if self.stopping() => return false,
                Err((attempts, err)) => self.dead_letter(h, &rec, d.attempts + attempts, &err),
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

    /// Delivers one event with retries; `Err((attempts, last error))` after the last.
    pub(super) async fn deliver(&self, h: &Handle, r: &EventRecord) -> Result<(), (u32, String)> {
        let body = serde_json::to_vec(&crate::event_json(r)).unwrap_or_default();
        let mut last = String::new();
        for attempt in 1..=self.cfg.max_attempts.max(1) {
            if h.deleted.load(Relaxed) {
                return Err((attempt - 1, "subscription deleted".into()));
            }
            if self.stopping() {
                return Err((attempt - 1, "shutting down".into()));
            }
            if attempt > 1 {
                h.stats.retries.inc();
            }
            let t = now_ms() / 1000;
            let res = self
                .client
                .post(&h.sub.url)
                .header("content-type", "application/json")
                .header("ordo-event-seq", r.seq.to_string())
                .header("ordo-event-type", r.event_type.as_str())
                .header("ordo-subscription", h.sub.id.as_str())
                .header("ordo-delivery-attempt", attempt.to_string())
                .header("ordo-signature", signature(&h.sub.secret, t, &body))
                .body(body.clone())
                .send()
                .await;
            match res {
                Ok(resp) if resp.status().is_success() => {
                    h.stats.deliveries.inc();
                    return Ok(());
                }
                Ok(resp) => last = format!("HTTP {}", resp.status()),
                Err(e) => last = format!("{e}"),
            }
            h.stats.failures.inc();
            if attempt < self.cfg.max_attempts {
                let exp = self
                    .cfg
                    .backoff_base
                    .saturating_mul(1u32 << (attempt - 1).min(20))
                    .min(self.cfg.backoff_max);
                // Full jitter: anywhere in [0, exp], so failing subscribers spread out.
                let wait = exp.mul_f64(rand::random::<f64>());
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = h.wake.notified() => {}
                    _ = self.shutdown.triggered() => {}
                }
            }
        }
        Err((self.cfg.max_attempts.max(1), last))
    }
}
