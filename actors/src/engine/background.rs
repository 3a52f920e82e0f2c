//! Start-up after recovery and the background drivers: finishing interrupted sagas, the
//! deadline driver for PENDING orders without actors, and checkpoints.

use super::*;

impl Engine {
    pub(super) fn start_recovered(&self, rec: recovery::Recovered) -> EngineResult<()> {
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
    pub(super) fn spawn_deadline_driver(&self) {
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

    pub(super) fn spawn_checkpointer(&self) {
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
        let started = std::time::Instant::now();
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
                // An actor gone meanwhile (passivated after its own snapshot) is fine; a
                // snapshot that failed fails the checkpoint (it is not recorded).
                if let Ok(ticket) = rx.await {
                    ticket?.stored().await?;
                }
            }
            // PENDING orders without an actor have no snapshot: recovery takes them from
            // this table instead of reading each one's stream. At a million of them it is
            // tens of MB: walked and written on a blocking thread, outside the journal's
            // batches, and on disk before the marker that names its seq.
            // (A thread of its own: `checkpoint` is also awaited outside any runtime.)
            let table = Arc::clone(inner);
            let (tx, rx) = oneshot::channel();
            std::thread::Builder::new()
                .name("ordo-checkpoint".into())
                .spawn(move || {
                    let bytes = table.deadlines.encode(seq);
                    let _ = tx.send(
                        table
                            .journal
                            .store()
                            .put_meta_flushed(recovery::META_PENDING, &bytes),
                    );
                })
                .map_err(|e| EngineError::Unavailable(format!("checkpoint thread: {e}")))?;
            rx.await
                .map_err(|_| EngineError::Unavailable("checkpoint thread ended".into()))??;
            inner
                .journal
                .append(Append {
                    meta: vec![(recovery::META_CHECKPOINT.into(), seq.to_be_bytes().to_vec())],
                    ..Append::default()
                })
                .await?;
            inner.last_checkpoint.store(seq, Ordering::Relaxed);
            inner.metrics.checkpoints.inc();
            tracing::info!(
                seq,
                pending_without_actor = inner.deadlines.len(),
                millis = started.elapsed().as_millis() as u64,
                "checkpoint written"
            );
            Ok(seq)
        }
        .await;
        inner.checkpointing.store(false, Ordering::Release);
        res
    }
}
