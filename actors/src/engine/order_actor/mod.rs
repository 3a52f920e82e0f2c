//! The order actor: one per live order. Its mailbox serialises everything that happens to
//! the order; a saga step that waits on SKU actors blocks the order's mailbox (`ctx.wait`)
//! so steps never interleave.
//!
//! Ordering rule that makes crashes safe: an order appends its own intent event *before* it
//! asks SKUs to release, deduct or restore, and the SKUs append after that. The log is
//! written in order, so a SKU change is never durable without the order event that caused
//! it; recovery finishes what was started (see `recovery`).
//!
//! One command, one append: the events a command decides and its idempotency record are
//! one journal append, and the caller is answered once it is durable. A command whose saga
//! goes on (a payment's stock deduction, a cancelled confirmed order's restock) stores an
//! "applied" record with its first append and its answer with its last.
//!
//! Leaving memory: an actor leaves (terminal, or idle) only after a barrier append proves
//! its own appends durable; the mailbox is paused meanwhile, and it leaves the registry
//! before it stops. Requests that were queued on it are dropped unanswered and retried by
//! the engine on a new actor, which loads the order from the log: the durable state.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use ordo_storage::{Append, AppendTicket, IdempotencyWrite};
use tokio::sync::oneshot;

use crate::domain::order::{self, Order, OrderCommand, PaymentOutcome, ShipmentStep, Status};
use crate::domain::sku::SkuCommand;
use crate::domain::{DomainError, OrderEvent};
use crate::engine::aggregate::{self, SnapshotTicket};
use crate::engine::error::{EngineError, EngineResult};
use crate::engine::idempotency::{self, Idempotency, Outcome};
use crate::engine::sku_actor::reply_when_durable;
use crate::engine::view::OrderView;
use crate::engine::Inner;

mod saga;

type Reply = oneshot::Sender<EngineResult<OrderView>>;

/// A payment as reported by the payment provider.
pub(crate) struct PaymentReport {
    pub(crate) payment_ref: String,
    pub(crate) outcome: PaymentOutcome,
    pub(crate) amount_minor: i64,
}

pub(crate) enum OrderReq {
    Pay {
        payment: PaymentReport,
        trace: Option<Arc<str>>,
        idem: Option<Idempotency>,
        reply: Reply,
    },
    Cancel {
        reason: String,
        trace: Option<Arc<str>>,
        idem: Option<Idempotency>,
        reply: Reply,
    },
    Ship {
        step: ShipmentStep,
        trace: Option<Arc<str>>,
        idem: Option<Idempotency>,
        reply: Reply,
    },
    Get {
        reply: oneshot::Sender<OrderView>,
    },
    Snapshot {
        reply: oneshot::Sender<EngineResult<SnapshotTicket>>,
    },
    /// Finish a saga interrupted by a crash. `restored` lists SKUs already restored for a
    /// cancelled confirmed order.
    Redrive {
        restored: Vec<String>,
    },
}

impl Message for OrderReq {
    type Result = ();
}

pub(crate) struct OrderActor {
    stream: Arc<str>,
    state: Order,
    engine: Arc<Inner>,
    last_activity: std::time::Instant,
    /// Waiting for the barrier before leaving memory.
    leaving: bool,
}

/// The answer a command will give once its append is durable, and what to render it
/// from: a finished command (`Done`) or one whose saga goes on (`Applied`).
enum Stage {
    Done,
    Applied,
}

impl OrderActor {
    pub(crate) fn new(state: Order, engine: Arc<Inner>) -> Self {
        OrderActor {
            stream: Arc::from(format!("order/{}", state.id)),
            state,
            engine,
            last_activity: std::time::Instant::now(),
            leaving: false,
        }
    }

    fn view(&self) -> OrderView {
        OrderView::from(&self.state)
    }

    /// The idempotency record for the state as it now is.
    fn record(
        &self,
        idem: Option<&Idempotency>,
        stage: Stage,
        applies: bool,
    ) -> Option<IdempotencyWrite> {
        match stage {
            Stage::Done => {
                let view = self.view();
                idempotency::write(idem, Outcome::Order(Ok(&view)), applies)
            }
            Stage::Applied => idempotency::write(
                idem,
                Outcome::Applied {
                    order_id: &self.state.id,
                },
                applies,
            ),
        }
    }

    /// Applies `events` and appends them, with `record` (rendered from the new state), as
    /// one append.
    fn persist(
        &mut self,
        events: &[OrderEvent],
        trace: Option<Arc<str>>,
        record: impl FnOnce(&Self) -> Option<IdempotencyWrite>,
    ) -> AppendTicket {
        let now = ordo_storage::now_ms();
        let new = aggregate::stage(&mut self.state, &self.stream, events, now, &trace);
        self.engine.note_order_events(events);
        self.engine.journal.append(Append {
            events: new,
            idempotency: record(self),
            ..Append::default()
        })
    }

    /// Answers a refusal (nothing changed): at once, or, when its answer is kept under an
    /// idempotency key, once that record is durable.
    fn refuse(&self, err: EngineError, idem: Option<&Idempotency>, reply: Reply) {
        let res: EngineResult<OrderView> = Err(err);
        match idempotency::write(idem, Outcome::Order(res.as_ref()), false) {
            Some(w) => {
                let ticket = self.engine.journal.append(Append {
                    idempotency: Some(w),
                    ..Append::default()
                });
                reply_when_durable(ticket, reply, res);
            }
            None => {
                let _ = reply.send(res);
            }
        }
    }

    fn answer(&self, ticket: AppendTicket, reply: Option<Reply>) {
        match reply {
            Some(r) => reply_when_durable(ticket, r, Ok(self.view())),
            None => drop(ticket),
        }
    }

    fn arm_expiry(&self, ctx: &mut Context<Self>) {
        if self.state.status != Some(Status::Pending) {
            return;
        }
        let now = ordo_storage::now_ms();
        let wait = Duration::from_millis(self.state.expires_at_ms.saturating_sub(now));
        ctx.run_later(wait, |act, ctx| {
            let events = match order::decide(
                &act.state,
                &OrderCommand::Expire {
                    now_ms: ordo_storage::now_ms(),
                },
            ) {
                Ok(ev) if !ev.is_empty() => ev,
                _ => return act.arm_expiry(ctx), // not yet due (clock) or no longer PENDING
            };
            let ticket = act.persist(&events, None, |_| None);
            act.engine.metrics.expired.inc();
            act.release(ctx, "expired", ticket, None, |_, t| drop(t));
        });
    }

    fn handle_pay(
        &mut self,
        ctx: &mut Context<Self>,
        payment: PaymentReport,
        trace: Option<Arc<str>>,
        idem: Option<Idempotency>,
        reply: Reply,
    ) {
        let cmd = OrderCommand::Pay {
            payment_ref: payment.payment_ref.clone(),
            outcome: payment.outcome,
            amount_minor: payment.amount_minor,
            now_ms: ordo_storage::now_ms(),
        };
        match order::decide(&self.state, &cmd) {
            Ok(events) if events.is_empty() => {
                // A replay of a recorded payment: the order as it is, once everything
                // before is durable (the record-only append is a barrier too).
                let ticket = self.engine.journal.append(Append {
                    idempotency: self.record(idem.as_ref(), Stage::Done, false),
                    ..Append::default()
                });
                self.answer(ticket, Some(reply));
            }
            Ok(events) => match payment.outcome {
                PaymentOutcome::Succeeded => {
                    let ticket = self.persist(&events, trace.clone(), |a| {
                        a.record(idem.as_ref(), Stage::Applied, true)
                    });
                    drop(ticket); // the confirmation follows it in the log
                    self.confirm(ctx, trace, idem, Some(reply));
                }
                PaymentOutcome::Failed => {
                    let ticket = self.persist(&events, trace.clone(), |a| {
                        a.record(idem.as_ref(), Stage::Done, true)
                    });
                    self.release(ctx, "payment_failed", ticket, trace, move |act, t| {
                        act.answer(t, Some(reply))
                    });
                }
            },
            Err(DomainError::OrderNotPayable { .. }) => {
                self.late_payment(ctx, payment, trace, idem, reply)
            }
            Err(e) => self.refuse(e.into(), idem.as_ref(), reply),
        }
    }

    /// A payment for an order that can no longer be paid: money that arrived is refunded
    /// (RefundRequested) and the caller told (409). A PENDING order past its deadline
    /// whose timer has not fired yet is expired first. All of it is one append.
    fn late_payment(
        &mut self,
        ctx: &mut Context<Self>,
        payment: PaymentReport,
        trace: Option<Arc<str>>,
        idem: Option<Idempotency>,
        reply: Reply,
    ) {
        let was_pending = self.state.status == Some(Status::Pending);
        let now = ordo_storage::now_ms();
        let mut after = self.state.clone();
        let mut events = Vec::new();
        if was_pending {
            if let Ok(ev) = order::decide(&after, &OrderCommand::Expire { now_ms: now }) {
                for e in &ev {
                    order::apply(&mut after, e, now);
                }
                events.extend(ev);
            }
        }
        if payment.outcome == PaymentOutcome::Succeeded {
            let refund = OrderCommand::RequestRefund {
                payment_ref: payment.payment_ref,
                amount_minor: payment.amount_minor,
                reason: order::REFUND_NOT_PAYABLE.into(),
            };
            if let Ok(ev) = order::decide(&after, &refund) {
                events.extend(ev);
            }
        }
        let render = |a: &Self| {
            let err = EngineError::NotPayable {
                order: Box::new(a.view()),
            };
            idempotency::write(idem.as_ref(), Outcome::Order(Err(&err)), !events.is_empty())
        };
        let ticket = if events.is_empty() {
            let w = render(self);
            self.engine.journal.append(Append {
                idempotency: w,
                ..Append::default()
            })
        } else {
            let evs = events.clone();
            self.persist(&evs, trace.clone(), render)
        };
        let view = Box::new(self.view());
        let finish = move |ticket: AppendTicket, reply: Reply| {
            reply_when_durable(ticket, reply, Err(EngineError::NotPayable { order: view }));
        };
        if was_pending && self.state.status == Some(Status::Cancelled) {
            self.engine.metrics.expired.inc();
            self.release(ctx, "expired", ticket, trace, move |_, t| finish(t, reply));
        } else {
            finish(ticket, reply);
        }
    }

    fn handle_cancel(
        &mut self,
        ctx: &mut Context<Self>,
        reason: String,
        trace: Option<Arc<str>>,
        idem: Option<Idempotency>,
        reply: Reply,
    ) {
        match order::decide(&self.state, &OrderCommand::Cancel { reason }) {
            Ok(events) => {
                if self.state.status == Some(Status::Confirmed) {
                    let ticket = self.persist(&events, trace.clone(), |a| {
                        a.record(idem.as_ref(), Stage::Applied, true)
                    });
                    drop(ticket); // the refund marker follows it in the log
                    self.restore(ctx, Vec::new(), trace, idem, Some(reply));
                } else {
                    let ticket = self.persist(&events, trace.clone(), |a| {
                        a.record(idem.as_ref(), Stage::Done, true)
                    });
                    self.release(ctx, "cancelled", ticket, trace, move |act, t| {
                        act.answer(t, Some(reply))
                    });
                }
            }
            Err(e) => self.refuse(e.into(), idem.as_ref(), reply),
        }
    }

    /// Leaves memory when terminal (and done) or idle: first a barrier proves every
    /// append of this actor durable (mailbox paused), then it leaves the registry, then
    /// stops. See the module docs.
    fn maybe_passivate(&mut self, ctx: &mut Context<Self>) {
        // After a fail stop nothing becomes durable: stay (the engine refuses everything).
        if self.leaving || self.engine.journal.stopped().is_some() {
            return;
        }
        let st = self.state.status;
        let done = self.state.is_terminal() && !self.state.needs_restore();
        let idle = matches!(
            st,
            Some(Status::Confirmed | Status::ShipmentPrepared | Status::ShipmentProcessed)
        ) && self.last_activity.elapsed() >= self.engine.config.order_idle_timeout;
        if !(done || idle) {
            return;
        }
        self.leaving = true;
        // A terminal order's snapshot goes with it: nothing reads it again.
        let barrier = self.engine.journal.append(Append {
            delete_snapshots: if done {
                vec![self.stream.clone()]
            } else {
                Vec::new()
            },
            ..Append::default()
        });
        ctx.wait(barrier.into_actor(self).map(|res, act, ctx| {
            act.leaving = false;
            match res {
                Ok(_) => {
                    let me = ctx.address();
                    act.engine.orders.remove_if(&act.state.id, |_, a| *a == me);
                    ctx.stop();
                }
                // The journal stopped: the engine refuses every change now; stay.
                Err(e) => {
                    tracing::warn!(order = %act.state.id, error = %e, "cannot leave memory")
                }
            }
        }));
    }
}

impl Actor for OrderActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1024);
        self.arm_expiry(ctx);
        let every = self
            .engine
            .config
            .order_idle_timeout
            .max(Duration::from_millis(50));
        ctx.run_interval(every, |act, ctx| act.maybe_passivate(ctx));
        self.engine.metrics.live_orders.inc();
    }

    fn stopped(&mut self, ctx: &mut Self::Context) {
        let me = ctx.address();
        self.engine
            .orders
            .remove_if(&self.state.id, |_, a| *a == me);
        self.engine.metrics.live_orders.dec();
    }
}

impl Handler<OrderReq> for OrderActor {
    type Result = ();

    fn handle(&mut self, msg: OrderReq, ctx: &mut Self::Context) {
        self.last_activity = std::time::Instant::now();
        match msg {
            OrderReq::Pay {
                payment,
                trace,
                idem,
                reply,
            } => self.handle_pay(ctx, payment, trace, idem, reply),
            OrderReq::Cancel {
                reason,
                trace,
                idem,
                reply,
            } => self.handle_cancel(ctx, reason, trace, idem, reply),
            OrderReq::Ship {
                step,
                trace,
                idem,
                reply,
            } => match order::decide(&self.state, &OrderCommand::Ship(step)) {
                Ok(events) => {
                    let ticket = self.persist(&events, trace, |a| {
                        a.record(idem.as_ref(), Stage::Done, true)
                    });
                    self.answer(ticket, Some(reply));
                }
                Err(e) => self.refuse(e.into(), idem.as_ref(), reply),
            },
            OrderReq::Get { reply } => {
                let _ = reply.send(self.view());
            }
            OrderReq::Snapshot { reply } => {
                let t = aggregate::snapshot(&self.state, &self.stream).map(|snap| {
                    SnapshotTicket::Journal(self.engine.journal.append(Append {
                        snapshots: vec![snap],
                        ..Append::default()
                    }))
                });
                let _ = reply.send(t);
            }
            OrderReq::Redrive { restored } => match self.state.status {
                Some(Status::Paid) => self.confirm(ctx, None, None, None),
                Some(Status::Cancelled) if self.state.needs_restore() => {
                    self.restore(ctx, restored, None, None, None)
                }
                _ => {}
            },
        }
        if self.state.is_terminal() && !self.state.needs_restore() {
            // After the saga steps queued above (`ctx.wait` holds timers back until done).
            ctx.run_later(Duration::ZERO, |act, ctx| act.maybe_passivate(ctx));
        }
    }
}
