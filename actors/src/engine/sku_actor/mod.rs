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

mod place;
mod snapshot;

use place::Flush;
pub(crate) use place::{Placed, SinglePlace};

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use dashmap::DashMap;
use ordo_storage::{Append, AppendTicket, Completion, IdempotencyWrite, Journal};
use parking_lot::RwLock;
use tokio::sync::oneshot;

use crate::domain::sku::{self, Sku, SkuCommand, SkuView};
use crate::domain::DomainError;
use crate::engine::aggregate::{self, SnapshotTicket};
use crate::engine::error::EngineResult;
use crate::engine::idempotency::{self, Idempotency, Outcome};

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
    /// Write a snapshot of the current state (a checkpoint); answers how to learn that
    /// it is stored.
    Snapshot {
        reply: oneshot::Sender<EngineResult<SnapshotTicket>>,
    },
    /// Failure point for tests: take no message until `until` resolves (or is dropped).
    HoldForTest { until: oneshot::Receiver<()> },
}

/// When a SKU snapshots, and which snapshots leave the actor thread.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SnapshotPolicy {
    /// A snapshot with every this-many events (at least; see `snapshot_due`).
    pub every: u64,
    /// From this many holds on, snapshots are encoded and written on their own thread.
    pub large_holds: usize,
}

pub(crate) struct SkuActor {
    stream: Arc<str>,
    state: Sku,
    journal: Journal,
    mailbox: usize,
    snapshots: SnapshotPolicy,
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

impl SkuActor {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        sku: &str,
        state: Sku,
        journal: Journal,
        mailbox: usize,
        snapshots: SnapshotPolicy,
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
            snapshots: SnapshotPolicy {
                every: snapshots.every.max(1),
                ..snapshots
            },
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

impl SkuActor {
    /// One line of a saga's reservations: answered at once with the captured unit price
    /// (the order's own append comes later in the same log; see the module docs).
    fn reserve_line(
        &mut self,
        cmd: SkuCommand,
        currency: Option<String>,
        trace: Option<Arc<str>>,
    ) -> EngineResult<(i64, String)> {
        if let Some(c) = currency.filter(|c| self.state.registered && *c != self.state.currency) {
            return Err(DomainError::CurrencyMismatch {
                first: c,
                other: self.state.currency.clone(),
            }
            .into());
        }
        let events = sku::decide(&self.state, &cmd)?;
        if !events.is_empty() {
            // The ticket is not awaited here: see the module docs.
            drop(self.persist(&events, trace, |_| None));
            self.publish();
        }
        Ok((self.state.price_minor, self.state.currency.clone()))
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
                let cmd = SkuCommand::Reserve {
                    order_id,
                    customer_id,
                    qty,
                };
                let _ = reply.send(self.reserve_line(cmd, currency, trace));
            }
            SkuReq::Place(_) => {} // handled above
            SkuReq::Get { reply } => {
                let _ = reply.send(self.state.view());
            }
            SkuReq::Snapshot { reply } => {
                self.since_snapshot = 0;
                let _ = reply.send(self.checkpoint_snapshot());
            }
            SkuReq::HoldForTest { until } => {
                ctx.wait(actix::fut::wrap_future(async move {
                    let _ = until.await;
                }));
            }
        }
    }
}
