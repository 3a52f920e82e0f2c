//! The SKU actor: one per SKU, the only place its stock changes. Its mailbox serialises
//! every reservation for the SKU, so no lock is needed. The mailbox is bounded by a
//! counter of queued messages that the engine owns ([`SkuHandle::queued`]): a
//! reservation that finds it full is refused at once (`Overloaded`).
//!
//! The actor applies its events in memory, hands them to the journal and takes its next
//! message without waiting for the disk. Callers that need durability (admin commands)
//! are answered from a task that awaits the journal ticket; a command's idempotency
//! record goes into the same append as its events. Reservations for an order are
//! answered at once: the order's own events are appended after them, so when the order's
//! append is durable, so are the reservations (one log, written in order).
//!
//! A single-line order is placed by the SKU actor itself (SPEC §2, "the SKU actor mints
//! the order"): the reservation, the order's own events and the command's idempotency
//! record are one append, and the caller is answered by the journal's completion once it
//! is durable — no second hop, no task per order. Placements are batched: the actor
//! collects their appends while it drains its mailbox and hands the whole batch to the
//! journal in one enqueue ([`SkuActor::flush`]) before it takes any other kind of message,
//! so its appends reach the journal in the order it decided them.
//!
//! Reads do not queue behind reservations: the actor publishes its [`SkuView`] to its
//! handle ([`SkuHandle::view`]) after each change it hands to the journal.
//!
//! Snapshots are never part of a command's append: a due snapshot is its own append,
//! queued after the events it covers (so it is never durable before them).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use dashmap::DashMap;
use ordo_storage::{Append, AppendTicket, Completion, IdempotencyWrite, Journal};
use parking_lot::RwLock;
use tokio::sync::oneshot;

use crate::domain::order::{self, Order, OrderLine};
use crate::domain::sku::{self, Sku, SkuCommand, SkuView};
use crate::domain::{Aggregate, DomainError};
use crate::engine::aggregate;
use crate::engine::error::{EngineError, EngineResult};
use crate::engine::idempotency::{self, Idempotency, Outcome};
use crate::engine::placement::place_command;
use crate::engine::view::OrderView;

/// A live SKU actor in the registry, with the count of messages queued for it.
#[derive(Clone)]
pub(crate) struct SkuHandle {
    pub(crate) addr: Addr<SkuActor>,
    /// Messages sent and not yet taken up by the actor: the mailbox bound is enforced on
    /// this (actix bounds a mailbox only for a sender that already waited on it).
    pub(crate) queued: Arc<AtomicUsize>,
    /// The SKU's public view as of the last change the actor handed to the journal: reads
    /// are served from here, never from the mailbox.
    pub(crate) view: Arc<RwLock<SkuView>>,
}

impl SkuHandle {
    /// Counts `req` in and wraps it for sending; the count goes down when the message is
    /// dropped — handled, skipped (its caller went away) or discarded with a stopped
    /// actor alike — so it never leaks. Returns the count before it.
    pub(crate) fn enqueue(&self, req: SkuReq) -> (SkuMsg, usize) {
        let before = self.queued.fetch_add(1, Ordering::AcqRel);
        (
            SkuMsg {
                req,
                _queued: Queued(self.queued.clone()),
            },
            before,
        )
    }

    /// Sends `req` (counted) and waits until the actor took it up.
    pub(crate) async fn send(&self, req: SkuReq) -> Result<(), MailboxError> {
        let (msg, _) = self.enqueue(req);
        self.addr.send(msg).await
    }
}

/// One message counted in a SKU's queue while it exists.
struct Queued(Arc<AtomicUsize>);

impl Drop for Queued {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A [`SkuReq`] on its way, counted in the SKU's queue.
pub(crate) struct SkuMsg {
    req: SkuReq,
    _queued: Queued,
}

impl Message for SkuMsg {
    type Result = ();
}

pub(crate) enum SkuReq {
    Cmd {
        cmd: SkuCommand,
        trace: Option<Arc<str>>,
        /// Answer only once the events are durable.
        durable: bool,
        idem: Option<Idempotency>,
        /// The SKU view, and whether this command registered the SKU.
        reply: oneshot::Sender<EngineResult<(SkuView, bool)>>,
    },
    /// Reserve `qty` for an order; answers the captured unit price.
    Reserve {
        order_id: String,
        customer_id: String,
        qty: u32,
        /// The currency the order's earlier lines are in, if any.
        currency: Option<String>,
        trace: Option<Arc<str>>,
        reply: oneshot::Sender<EngineResult<(i64, String)>>,
    },
    /// Place a single-line order: reserve and mint the order in one append (see the
    /// module docs).
    Place(Box<SinglePlace>),
    /// The public view only: cloning the whole state would copy every hold, O(holds)
    /// per read (it made each sold-out order of a hot SKU cost milliseconds).
    Get { reply: oneshot::Sender<SkuView> },
    /// Write a snapshot of the current state; answers the journal ticket.
    Snapshot {
        reply: oneshot::Sender<EngineResult<AppendTicket>>,
    },
    /// Failure point for tests: take no message until `until` resolves (or is dropped).
    HoldForTest { until: oneshot::Receiver<()> },
}

/// A single-line order for the SKU actor to place.
pub(crate) struct SinglePlace {
    pub(crate) order_id: String,
    pub(crate) customer_id: String,
    pub(crate) qty: u32,
    pub(crate) ttl_ms: u64,
    pub(crate) trace: Option<Arc<str>>,
    pub(crate) idem: Option<Idempotency>,
    pub(crate) reply: oneshot::Sender<Placed>,
}

/// How a single-line placement ended.
pub(crate) enum Placed {
    /// Stored (durable): PENDING, or FAILED ([`EngineError::OrderFailed`]); with the
    /// order's state.
    Stored(EngineResult<OrderView>, Box<Order>),
    /// Refused before anything changed (no answer kept yet).
    Refused(EngineError),
    /// The append was not stored (the journal stopped).
    NotStored(EngineError),
}

pub(crate) struct SkuActor {
    stream: Arc<str>,
    state: Sku,
    journal: Journal,
    mailbox: usize,
    snapshot_every: u64,
    since_snapshot: u64,
    /// The registry, to leave it when passivating.
    registry: Arc<DashMap<String, SkuHandle>>,
    /// A SKU with no holds and no message for this long is passivated.
    idle_timeout: Duration,
    last_activity: Instant,
    metrics_live: prometheus::IntGauge,
    /// Placements decided since the last flush, in order.
    outbox: Vec<(Append, Completion)>,
    /// Where the actor publishes its view.
    view: Arc<RwLock<SkuView>>,
    /// A snapshot is being written off the actor thread.
    snapshotting: Arc<AtomicBool>,
}

/// Hands the actor's collected appends to the journal (scheduled by the first placement
/// of a batch; runs once the mailbox is drained).
struct Flush;

impl Message for Flush {
    type Result = ();
}

impl SkuActor {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        sku: &str,
        state: Sku,
        journal: Journal,
        mailbox: usize,
        snapshot_every: u64,
        registry: Arc<DashMap<String, SkuHandle>>,
        idle_timeout: Duration,
        metrics_live: prometheus::IntGauge,
        view: Arc<RwLock<SkuView>>,
    ) -> Self {
        SkuActor {
            stream: Arc::from(format!("sku/{sku}")),
            state,
            journal,
            mailbox,
            snapshot_every: snapshot_every.max(1),
            since_snapshot: 0,
            registry,
            idle_timeout,
            last_activity: Instant::now(),
            metrics_live,
            outbox: Vec::new(),
            view,
            snapshotting: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Publishes the current view for readers.
    fn publish(&self) {
        *self.view.write() = self.state.view();
    }

    /// Hands every collected placement to the journal, in one enqueue.
    fn flush(&mut self) {
        if !self.outbox.is_empty() {
            self.journal.append_all(self.outbox.drain(..));
            self.publish();
        }
    }

    /// Applies `events`, then appends them with the idempotency record `record` renders
    /// from the new state (one append), and a due snapshot in an append of its own.
    fn persist(
        &mut self,
        events: &[crate::domain::SkuEvent],
        trace: Option<Arc<str>>,
        record: impl FnOnce(&Self) -> Option<IdempotencyWrite>,
    ) -> AppendTicket {
        let now = ordo_storage::now_ms();
        let new = aggregate::stage(&mut self.state, &self.stream, events, now, &trace);
        self.since_snapshot += events.len() as u64;
        // A snapshot encodes every live hold; taking one only after at least as many
        // events as there are holds keeps its cost per event constant (a hot SKU with a
        // million PENDING orders would otherwise re-encode them every `snapshot_every`).
        let due = self.snapshot_due();
        let ticket = self.journal.append(Append {
            events: new,
            idempotency: record(self),
            ..Append::default()
        });
        self.snapshot_if_due(due);
        ticket
    }

    /// Takes a snapshot once `due` events were applied since the last one. A small state
    /// is encoded here and queued in an append of its own, after the events it covers. A
    /// large one (a hot SKU's many holds) is cloned — O(1): its maps are persistent — and
    /// encoded and written on a thread of its own once what it covers is durable, so
    /// neither the actor nor the journal's fsynced batches wait for O(holds) work.
    fn snapshot_if_due(&mut self, due: u64) {
        if self.since_snapshot < due {
            return;
        }
        self.since_snapshot = 0;
        if self.state.holds.len() < OFF_THREAD_SNAPSHOT_HOLDS {
            // Nobody waits for it. A snapshot that cannot be encoded is skipped (logged):
            // recovery reads the stream instead.
            if let Ok(snap) = aggregate::snapshot(&self.state, &self.stream) {
                drop(self.journal.append(Append {
                    snapshots: vec![snap],
                    ..Append::default()
                }));
            }
            return;
        }
        if self.snapshotting.swap(true, Ordering::AcqRel) {
            return; // the previous one is still being written
        }
        let (state, stream) = (self.state.clone(), self.stream.clone());
        let (journal, busy) = (self.journal.clone(), self.snapshotting.clone());
        let spawned = std::thread::Builder::new()
            .name("ordo-snapshot".into())
            .spawn(move || {
                write_snapshot_cache(&journal, &state, &stream);
                busy.store(false, Ordering::Release);
            });
        if let Err(e) = spawned {
            tracing::warn!(sku = %self.state.sku, error = %e, "cannot start a snapshot thread; snapshot skipped");
            self.snapshotting.store(false, Ordering::Release);
        }
    }

    /// Events between snapshots: at least `snapshot_every`, and at least as many as there
    /// are holds, so a snapshot's cost per event stays constant.
    fn snapshot_due(&self) -> u64 {
        self.snapshot_every.max(self.state.holds.len() as u64)
    }
}

impl SkuActor {
    /// Passivation of an idle SKU (no holds, no message for `idle_timeout`): write a
    /// snapshot and wait until it — and so every earlier append of this SKU — is durable
    /// (the mailbox is paused meanwhile), leave the registry, stop. The next request for
    /// the SKU activates a new actor from that snapshot. A request that raced with the
    /// stop finds its message refused or unanswered and retries on the new actor (see
    /// `Inner::sku_addr` and its callers).
    fn maybe_passivate(&mut self, ctx: &mut Context<Self>) {
        self.flush();
        if !self.state.holds.is_empty()
            || !self.state.registered
            || self.last_activity.elapsed() < self.idle_timeout
        {
            return;
        }
        let Ok(snap) = aggregate::snapshot(&self.state, &self.stream) else {
            return; // stays live; logged
        };
        let ticket = self.journal.append(Append {
            snapshots: vec![snap],
            ..Append::default()
        });
        self.since_snapshot = 0;
        let fut = ticket
            .into_actor(self)
            .map(|res, act, ctx| {
                if let Err(e) = res {
                    tracing::warn!(sku = %act.state.sku, error = %e, "passivation snapshot failed; staying live");
                    return;
                }
                let me = ctx.address();
                act.registry.remove_if(&act.state.sku, |_, h| h.addr == me);
                ctx.stop();
            });
        ctx.wait(fut);
    }
}

impl Actor for SkuActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.mailbox);
        let every = self.idle_timeout.max(Duration::from_millis(20));
        ctx.run_interval(every, |act, ctx| act.maybe_passivate(ctx));
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.flush(); // placements decided and not yet handed over: their callers wait
        self.metrics_live.dec();
    }
}

impl SkuActor {
    fn handle_cmd(
        &mut self,
        cmd: SkuCommand,
        trace: Option<Arc<str>>,
        durable: bool,
        idem: Option<Idempotency>,
        reply: oneshot::Sender<EngineResult<(SkuView, bool)>>,
    ) {
        let was_registered = self.state.registered;
        match sku::decide(&self.state, &cmd) {
            Err(e) => {
                let res: EngineResult<SkuView> = Err(e.into());
                let outcome = Outcome::Sku {
                    result: res.as_ref(),
                    created: false,
                };
                match idempotency::write(idem.as_ref(), outcome, false) {
                    // The refusal's answer is kept: answer once it is durable.
                    Some(w) => {
                        let t = self.journal.append(Append {
                            idempotency: Some(w),
                            ..Append::default()
                        });
                        reply_when_durable(t, reply, res.map(|v| (v, false)));
                    }
                    None => {
                        let _ = reply.send(res.map(|v| (v, false)));
                    }
                }
            }
            Ok(events) => {
                let created = !was_registered && matches!(cmd, SkuCommand::Upsert { .. });
                let render = |act: &Self, applies: bool| {
                    let view = act.state.view();
                    let outcome = Outcome::Sku {
                        result: Ok(&view),
                        created,
                    };
                    idempotency::write(idem.as_ref(), outcome, applies)
                };
                let ticket = if events.is_empty() {
                    let w = render(self, false);
                    (durable || w.is_some()).then(|| {
                        self.journal.append(Append {
                            idempotency: w,
                            ..Append::default()
                        })
                    })
                } else {
                    Some(self.persist(&events, trace, |act| render(act, true)))
                };
                self.publish();
                let view = self.state.view();
                match ticket {
                    Some(t) if durable || idem.is_some() => {
                        reply_when_durable(t, reply, Ok((view, created)))
                    }
                    _ => {
                        let _ = reply.send(Ok((view, created)));
                    }
                }
            }
        }
    }
}

/// Holds from which a SKU's snapshot is written off the actor thread.
const OFF_THREAD_SNAPSHOT_HOLDS: usize = 4096;

/// Encodes `state` and stores it as `stream`'s snapshot cache once everything queued
/// before now (so every event it covers) is durable. Runs on a snapshot thread.
fn write_snapshot_cache(journal: &Journal, state: &Sku, stream: &Arc<str>) {
    let Ok(snap) = aggregate::snapshot(state, stream) else {
        return; // logged
    };
    let written = journal
        .append(Append::default())
        .wait()
        .and_then(|barrier| {
            journal
                .store()
                .save_snapshot_cache(&ordo_storage::SnapshotRecord {
                    stream: stream.to_string(),
                    version: snap.version,
                    seq: barrier.last_seq,
                    schema: snap.schema,
                    state: snap.state,
                })
        });
    if let Err(e) = written {
        tracing::warn!(stream = %stream, error = %e, "snapshot not written; recovery reads the stream");
    }
}

/// Answers `reply` with `value` once `ticket` is durable (or with the storage error).
pub(crate) fn reply_when_durable<T: Send + 'static>(
    ticket: AppendTicket,
    reply: oneshot::Sender<EngineResult<T>>,
    value: EngineResult<T>,
) {
    actix::spawn(async move {
        let res = match ticket.await {
            Ok(_) => value,
            Err(e) => Err(e.into()),
        };
        let _ = reply.send(res);
    });
}

impl Handler<SkuMsg> for SkuActor {
    type Result = ();

    fn handle(&mut self, msg: SkuMsg, ctx: &mut Self::Context) {
        let SkuMsg { req, _queued } = msg;
        drop(_queued); // taken up: no longer queued
        self.last_activity = Instant::now();
        let req = match req {
            SkuReq::Place(p) => {
                self.handle_place(*p);
                if self.outbox.len() == 1 {
                    ctx.notify(Flush);
                }
                return;
            }
            other => other,
        };
        // Anything else sees the placements before it in the journal first.
        self.flush();
        match req {
            SkuReq::Cmd {
                cmd,
                trace,
                durable,
                idem,
                reply,
            } => self.handle_cmd(cmd, trace, durable, idem, reply),
            SkuReq::Reserve {
                order_id,
                customer_id,
                qty,
                currency,
                trace,
                reply,
            } => {
                if let Some(c) =
                    currency.filter(|c| self.state.registered && *c != self.state.currency)
                {
                    let _ = reply.send(Err(DomainError::CurrencyMismatch {
                        first: c,
                        other: self.state.currency.clone(),
                    }
                    .into()));
                    return;
                }
                let cmd = SkuCommand::Reserve {
                    order_id,
                    customer_id,
                    qty,
                };
                let res = sku::decide(&self.state, &cmd).map(|events| {
                    if !events.is_empty() {
                        // The ticket is not awaited here: see the module docs.
                        drop(self.persist(&events, trace, |_| None));
                        self.publish();
                    }
                    (self.state.price_minor, self.state.currency.clone())
                });
                let _ = reply.send(res.map_err(EngineError::from));
            }
            SkuReq::Place(_) => {} // handled above
            SkuReq::Get { reply } => {
                let _ = reply.send(self.state.view());
            }
            SkuReq::Snapshot { reply } => {
                self.since_snapshot = 0;
                let t = if self.state.version == 0 {
                    Ok(self.journal.append(Append::default()))
                } else {
                    aggregate::snapshot(&self.state, &self.stream).map(|snap| {
                        self.journal.append(Append {
                            snapshots: vec![snap],
                            ..Append::default()
                        })
                    })
                };
                let _ = reply.send(t);
            }
            SkuReq::HoldForTest { until } => {
                ctx.wait(actix::fut::wrap_future(async move {
                    let _ = until.await;
                }));
            }
        }
    }
}

impl Handler<Flush> for SkuActor {
    type Result = ();

    fn handle(&mut self, _: Flush, _ctx: &mut Self::Context) {
        self.flush();
    }
}

impl SkuActor {
    /// Places a single-line order: decides the reservation and the order together, and
    /// collects their one append (with the idempotency record) for the next flush. The
    /// caller is answered by the journal's completion once it is durable. An order the
    /// SKU cannot serve (out of stock, over the limit) is placed FAILED the same way.
    fn handle_place(&mut self, p: SinglePlace) {
        let SinglePlace {
            order_id,
            customer_id,
            qty,
            ttl_ms,
            trace,
            idem,
            reply,
        } = p;
        if reply.is_closed() {
            return; // the caller went away before this was taken up: nothing changes
        }
        let reserve = SkuCommand::Reserve {
            order_id: order_id.clone(),
            customer_id: customer_id.clone(),
            qty,
        };
        let (sku_events, failure) = match sku::decide(&self.state, &reserve) {
            Ok(events) => (events, None),
            Err(e @ (DomainError::OutOfStock { .. } | DomainError::LimitExceeded { .. })) => {
                (Vec::new(), Some(e))
            }
            Err(e) => {
                let _ = reply.send(Placed::Refused(e.into()));
                return;
            }
        };
        let now = ordo_storage::now_ms();
        let line = OrderLine {
            sku: self.state.sku.clone(),
            qty,
            unit_price_minor: self.state.price_minor,
        };
        let cmd = place_command(
            order_id.clone(),
            customer_id,
            vec![line],
            self.state.currency.clone(),
            now,
            ttl_ms,
            failure.as_ref(),
        );
        let mut order = Order::default();
        let order_events = match order::decide(&order, &cmd) {
            Ok(events) => events,
            Err(e) => {
                let _ = reply.send(Placed::Refused(e.into()));
                return;
            }
        };
        // Decided: apply both, one append.
        let mut events = aggregate::stage(&mut self.state, &self.stream, &sku_events, now, &trace);
        self.since_snapshot += sku_events.len() as u64;
        let order_stream: Arc<str> = Arc::from(<Order as Aggregate>::stream(&order_id));
        events.extend(aggregate::stage(
            &mut order,
            &order_stream,
            &order_events,
            now,
            &trace,
        ));
        let view = OrderView::from(&order);
        let result = match failure {
            None => Ok(view),
            Some(reason) => Err(EngineError::OrderFailed {
                order: Box::new(view),
                reason,
            }),
        };
        let append = Append {
            events,
            idempotency: idempotency::write(idem.as_ref(), Outcome::Order(result.as_ref()), true),
            minted: Some(order_stream),
            ..Append::default()
        };
        let order = Box::new(order);
        let done = Completion::call(move |stored| {
            let _ = reply.send(match stored {
                Ok(_) => Placed::Stored(result, order),
                Err(e) => Placed::NotStored(e.into()),
            });
        });
        self.outbox.push((append, done));
        if self.since_snapshot >= self.snapshot_due() {
            // The snapshot follows the events it covers.
            self.flush();
            let due = self.snapshot_due();
            self.snapshot_if_due(due);
        }
    }
}
