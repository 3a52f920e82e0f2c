//! The registry: live actors by id (activation from the store under the registry's entry
//! lock, so two activations cannot race), the bounded SKU queues, sending a request to an
//! actor that may be leaving memory, and refusals stored under an idempotency key.

use super::*;

impl Inner {
    pub(super) fn arbiter(&self) -> &ArbiterHandle {
        let i = self.next_arbiter.fetch_add(1, Ordering::Relaxed) % self.arbiters.len();
        &self.arbiters[i]
    }

    pub(super) fn fail_if_stopped(&self) -> EngineResult<()> {
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

    pub(super) fn start_sku(&self, sku: &str, state: Sku) -> SkuHandle {
        let queued = Arc::new(AtomicUsize::new(0));
        let view = Arc::new(RwLock::new(state.view()));
        let actor = SkuActor::new(
            sku,
            state,
            self.journal.clone(),
            self.config.sku_mailbox,
            SnapshotPolicy {
                every: self.config.snapshot_every,
                large_holds: self.config.large_snapshot_holds,
            },
            self.skus.clone(),
            self.config.sku_idle_timeout,
            self.metrics.live_skus.clone(),
            view.clone(),
        );
        let addr = SkuActor::start_in_arbiter(self.arbiter(), move |_| actor);
        self.metrics.live_skus.inc();
        SkuHandle { addr, queued, view }
    }

    /// The SKU's actor; with `create`, one is started for an unregistered SKU too.
    pub(super) fn sku_addr(&self, sku: &str, create: bool) -> EngineResult<SkuHandle> {
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
    pub(super) async fn refuse<T>(
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
    pub(super) async fn ask_sku<T>(
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
                self.metrics.overloaded.inc();
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
            c.inc();
        }
    }

    /// Reads an order from the store (no actor).
    pub(super) fn load_order(&self, id: &str) -> EngineResult<Order> {
        recovery::load_order(&self.store, id)
    }

    /// The order's actor, activated from the log if it is not live. The registry shard
    /// stays locked while the order loads, so two activations cannot race; an actor that
    /// left made its appends durable before it left the registry, so the log holds its
    /// last state.
    pub(super) fn order_addr(self: &Arc<Self>, id: &str) -> EngineResult<Addr<OrderActor>> {
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
            return Err(EngineError::OrderNotFound { id: id.to_owned() });
        }
        // The actor keeps its own expiry timer from here on.
        self.deadlines.remove(id);
        let actor = OrderActor::new(state, self.clone());
        let addr = OrderActor::start_in_arbiter(self.arbiter(), move |_| actor);
        entry.insert(addr.clone());
        Ok(addr)
    }

    /// A just placed order waits in the deadline table without an actor — unless one was
    /// activated meanwhile: the order is on the feed once durable, before its placement's
    /// caller gets here, so a follower may already have acted on it. Checked and inserted
    /// under the order's registry entry, which activation holds while it takes the order
    /// out of the table, so the table never lists an order that has an actor.
    pub(super) fn note_pending(self: &Arc<Self>, state: Order) {
        let entry = self.orders.entry(state.id.clone());
        if let dashmap::mapref::entry::Entry::Occupied(o) = &entry {
            if o.get().connected() {
                return;
            }
        }
        if self.deadlines.insert(&state.id, state.expires_at_ms) {
            return;
        }
        drop(entry); // `start_order` takes it again
        self.start_order(state);
    }

    /// Starts an actor for an order whose state the caller holds (just placed, or
    /// recovered), unless one is live.
    pub(super) fn start_order(self: &Arc<Self>, state: Order) -> Addr<OrderActor> {
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
    pub(super) async fn order_request(
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

    pub(super) async fn release_reserved(&self, order_id: &str, skus: &[String]) {
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

pub(super) type Reply<T> = oneshot::Sender<EngineResult<T>>;

/// Frees a caller-chosen order id when its placement ends, however it ends.
pub(super) struct PlacingGuard<'a> {
    pub(super) placing: &'a DashMap<String, ()>,
    pub(super) id: &'a str,
}

impl Drop for PlacingGuard<'_> {
    fn drop(&mut self) {
        self.placing.remove(self.id);
    }
}

/// How many times a request is sent to an actor that may be leaving memory.
pub(super) const ASK_TRIES: usize = 8;

/// Whether a SKU request may be refused when the SKU's queue is at its bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admission {
    /// New work (reservations): refused with `Overloaded` when the queue is full.
    RefuseWhenFull,
    /// Compensations and admin changes: never dropped, they wait for room.
    Wait,
}

/// Which kind of answer a refused command renders as.
#[derive(Debug, Clone, Copy)]
pub(super) enum Kind {
    Sku,
    Order,
}

/// Yields once to the executor (any executor: no timer needed), so a retry lets the
/// actor that is leaving finish.
pub(super) fn yield_now() -> impl std::future::Future<Output = ()> {
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
