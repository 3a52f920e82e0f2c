//! The order actor: one per live order. Its mailbox serialises everything that happens to
//! the order; a saga step that waits on SKU actors blocks the order's mailbox (`ctx.wait`)
//! so steps never interleave.
//!
//! Ordering rule that makes crashes safe: an order appends its own intent event *before* it
//! asks SKUs to release, deduct or restore, and the SKUs append after that. The log is
//! written in order, so a SKU change is never durable without the order event that caused
//! it; recovery finishes what was started (see `recovery`).

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use ordo_storage::{Append, AppendTicket, SnapshotWrite};
use tokio::sync::oneshot;

use crate::domain::order::{self, Order, OrderCommand, PaymentOutcome, ShipmentStep, Status};
use crate::domain::sku::SkuCommand;
use crate::domain::{DomainError, OrderEvent};
use crate::engine::error::{EngineError, EngineResult};
use crate::engine::sku_actor::{new_event, reply_when_durable};
use crate::engine::view::OrderView;
use crate::engine::Inner;

pub(crate) const ORDER_SNAPSHOT_SCHEMA: u16 = 1;

type Reply = oneshot::Sender<EngineResult<OrderView>>;

pub(crate) enum OrderReq {
    Pay {
        payment_ref: String,
        outcome: PaymentOutcome,
        amount_minor: i64,
        trace: Option<Arc<str>>,
        reply: Reply,
    },
    Cancel {
        reason: String,
        trace: Option<Arc<str>>,
        reply: Reply,
    },
    Ship {
        step: ShipmentStep,
        trace: Option<Arc<str>>,
        reply: Reply,
    },
    Get {
        reply: oneshot::Sender<OrderView>,
    },
    Snapshot {
        reply: oneshot::Sender<AppendTicket>,
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
}

impl OrderActor {
    pub(crate) fn new(state: Order, engine: Arc<Inner>) -> Self {
        OrderActor {
            stream: Arc::from(format!("order/{}", state.id)),
            state,
            engine,
            last_activity: std::time::Instant::now(),
        }
    }

    fn view(&self) -> OrderView {
        OrderView::from(&self.state)
    }

    fn persist(&mut self, events: &[OrderEvent], trace: Option<Arc<str>>) -> AppendTicket {
        let now = ordo_storage::now_ms();
        let mut new = Vec::with_capacity(events.len());
        for e in events {
            order::apply(&mut self.state, e, now);
            new.push(new_event(
                &self.stream,
                self.state.version,
                e,
                now,
                trace.clone(),
            ));
        }
        self.engine.note_order_events(events);
        self.engine.journal.append(Append::events(new))
    }

    /// Runs SKU commands for this order one after another (blocking the order's mailbox),
    /// then `then` with the outcome.
    fn with_skus(
        &mut self,
        ctx: &mut Context<Self>,
        ops: Vec<(String, SkuCommand)>,
        trace: Option<Arc<str>>,
        then: impl FnOnce(&mut Self, &mut Context<Self>, EngineResult<()>) + 'static,
    ) {
        let engine = self.engine.clone();
        let fut = async move {
            for (sku, cmd) in ops {
                engine.sku_command(&sku, cmd, trace.clone(), false).await?;
            }
            Ok(())
        }
        .into_actor(self)
        .map(move |res, act, ctx| then(act, ctx, res));
        ctx.wait(fut);
    }

    fn release_ops(&self, reason: &str) -> Vec<(String, SkuCommand)> {
        self.state
            .lines
            .iter()
            .map(|l| {
                (
                    l.sku.clone(),
                    SkuCommand::Release {
                        order_id: self.state.id.clone(),
                        reason: reason.to_owned(),
                    },
                )
            })
            .collect()
    }

    fn reduce_ops(&self) -> Vec<(String, SkuCommand)> {
        self.state
            .lines
            .iter()
            .map(|l| {
                (
                    l.sku.clone(),
                    SkuCommand::Reduce {
                        order_id: self.state.id.clone(),
                    },
                )
            })
            .collect()
    }

    fn restore_ops(&self, skip: &[String]) -> Vec<(String, SkuCommand)> {
        self.state
            .lines
            .iter()
            .filter(|l| !skip.contains(&l.sku))
            .map(|l| {
                (
                    l.sku.clone(),
                    SkuCommand::Restore {
                        order_id: self.state.id.clone(),
                        customer_id: self.state.customer_id.clone(),
                        qty: l.qty,
                    },
                )
            })
            .collect()
    }

    /// PAID → deduct stock on every line → CONFIRMED.
    fn confirm(&mut self, ctx: &mut Context<Self>, trace: Option<Arc<str>>, reply: Option<Reply>) {
        let ops = self.reduce_ops();
        self.with_skus(ctx, ops, trace.clone(), move |act, _ctx, res| {
            let res = res.and_then(|()| Ok(order::decide(&act.state, &OrderCommand::Confirm)?));
            match res {
                Ok(events) => {
                    let ticket = act.persist(&events, trace);
                    act.answer(ticket, reply);
                }
                Err(e) => {
                    tracing::error!(order = %act.state.id, error = %e, "stock deduction failed; order stays PAID until redriven");
                    if let Some(r) = reply {
                        let _ = r.send(Err(e));
                    }
                }
            }
        });
    }

    /// CANCELLED from CONFIRMED → restore every line → RefundRequested.
    fn restore(
        &mut self,
        ctx: &mut Context<Self>,
        skip: Vec<String>,
        trace: Option<Arc<str>>,
        reply: Option<Reply>,
    ) {
        let ops = self.restore_ops(&skip);
        self.with_skus(ctx, ops, trace.clone(), move |act, _ctx, res| {
            let payment_ref = act.state.payment_ref.clone().unwrap_or_default();
            let cmd = OrderCommand::RequestRefund {
                payment_ref,
                amount_minor: act.state.total_minor,
                reason: "cancelled".into(),
            };
            match res.and_then(|()| Ok(order::decide(&act.state, &cmd)?)) {
                Ok(events) => {
                    let ticket = act.persist(&events, trace);
                    act.answer(ticket, reply);
                }
                Err(e) => {
                    tracing::error!(order = %act.state.id, error = %e, "stock restore failed; redriven on next start");
                    if let Some(r) = reply {
                        let _ = r.send(Err(e));
                    }
                }
            }
        });
    }

    fn release(
        &mut self,
        ctx: &mut Context<Self>,
        reason: &str,
        ticket: AppendTicket,
        trace: Option<Arc<str>>,
        reply: Option<Reply>,
    ) {
        let ops = self.release_ops(reason);
        self.with_skus(ctx, ops, trace, move |act, _ctx, res| match res {
            // The order's own event came first in the log; answering when it is durable
            // is enough (the releases follow it and are redone by recovery if lost).
            Ok(()) => act.answer(ticket, reply),
            Err(e) => {
                if let Some(r) = reply {
                    let _ = r.send(Err(e));
                }
            }
        });
    }

    fn answer(&self, ticket: AppendTicket, reply: Option<Reply>) {
        match reply {
            Some(r) => reply_when_durable(ticket, r, self.view()),
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
            let ticket = act.persist(&events, None);
            act.engine
                .metrics
                .expired
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            act.release(ctx, "expired", ticket, None, None);
        });
    }

    fn handle_pay(
        &mut self,
        ctx: &mut Context<Self>,
        payment_ref: String,
        outcome: PaymentOutcome,
        amount_minor: i64,
        trace: Option<Arc<str>>,
        reply: Reply,
    ) {
        let cmd = OrderCommand::Pay {
            payment_ref: payment_ref.clone(),
            outcome,
            amount_minor,
            now_ms: ordo_storage::now_ms(),
        };
        match order::decide(&self.state, &cmd) {
            Ok(events) if events.is_empty() => {
                let barrier = self.engine.journal.append(Append::default());
                self.answer(barrier, Some(reply));
            }
            Ok(events) => {
                let ticket = self.persist(&events, trace.clone());
                match outcome {
                    PaymentOutcome::Succeeded => {
                        drop(ticket);
                        self.confirm(ctx, trace, Some(reply));
                    }
                    PaymentOutcome::Failed => {
                        self.release(ctx, "payment_failed", ticket, trace, Some(reply))
                    }
                }
            }
            Err(DomainError::OrderNotPayable { .. }) => {
                // Late payment: money that arrived must be refunded, and the caller told.
                let refund = OrderCommand::RequestRefund {
                    payment_ref,
                    amount_minor,
                    reason: "order_not_payable".into(),
                };
                let was_pending = self.state.status == Some(Status::Pending);
                let mut events = Vec::new();
                if was_pending {
                    // Past its deadline but the timer has not fired yet: expire it now.
                    if let Ok(ev) = order::decide(
                        &self.state,
                        &OrderCommand::Expire {
                            now_ms: ordo_storage::now_ms(),
                        },
                    ) {
                        events = ev;
                    }
                }
                let mut ticket = if events.is_empty() {
                    None
                } else {
                    Some(self.persist(&events, trace.clone()))
                };
                if outcome == PaymentOutcome::Succeeded {
                    if let Ok(ev) = order::decide(&self.state, &refund) {
                        if !ev.is_empty() {
                            ticket = Some(self.persist(&ev, trace.clone()));
                        }
                    }
                }
                let ticket =
                    ticket.unwrap_or_else(|| self.engine.journal.append(Append::default()));
                let view = Box::new(self.view());
                let finish = move |ticket: AppendTicket, reply: Reply| {
                    actix::spawn(async move {
                        let res = match ticket.await {
                            Ok(_) => Err(EngineError::NotPayable { order: view }),
                            Err(e) => Err(e.into()),
                        };
                        let _ = reply.send(res);
                    });
                };
                if was_pending && self.state.status == Some(Status::Cancelled) {
                    let ops = self.release_ops("expired");
                    self.with_skus(ctx, ops, trace, move |_act, _ctx, res| match res {
                        Ok(()) => finish(ticket, reply),
                        Err(e) => {
                            let _ = reply.send(Err(e));
                        }
                    });
                } else {
                    finish(ticket, reply);
                }
            }
            Err(e) => {
                let _ = reply.send(Err(e.into()));
            }
        }
    }

    fn maybe_passivate(&mut self, ctx: &mut Context<Self>) {
        let st = self.state.status;
        let done = self.state.is_terminal() && !self.state.needs_restore();
        let idle = matches!(
            st,
            Some(Status::Confirmed | Status::ShipmentPrepared | Status::ShipmentProcessed)
        ) && self.last_activity.elapsed() >= self.engine.config.order_idle_timeout;
        if done || idle {
            ctx.stop();
        }
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
        self.engine
            .metrics
            .live_orders
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn stopped(&mut self, ctx: &mut Self::Context) {
        let me = ctx.address();
        self.engine
            .orders
            .remove_if(&self.state.id, |_, a| *a == me);
        self.engine
            .metrics
            .live_orders
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Handler<OrderReq> for OrderActor {
    type Result = ();

    fn handle(&mut self, msg: OrderReq, ctx: &mut Self::Context) {
        self.last_activity = std::time::Instant::now();
        match msg {
            OrderReq::Pay {
                payment_ref,
                outcome,
                amount_minor,
                trace,
                reply,
            } => self.handle_pay(ctx, payment_ref, outcome, amount_minor, trace, reply),
            OrderReq::Cancel {
                reason,
                trace,
                reply,
            } => {
                match order::decide(
                    &self.state,
                    &OrderCommand::Cancel {
                        reason: reason.clone(),
                    },
                ) {
                    Ok(events) => {
                        let from_confirmed = self.state.status == Some(Status::Confirmed);
                        let ticket = self.persist(&events, trace.clone());
                        if from_confirmed {
                            drop(ticket);
                            self.restore(ctx, Vec::new(), trace, Some(reply));
                        } else {
                            self.release(ctx, "cancelled", ticket, trace, Some(reply));
                        }
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                    }
                }
            }
            OrderReq::Ship { step, trace, reply } => {
                match order::decide(&self.state, &OrderCommand::Ship(step)) {
                    Ok(events) => {
                        let ticket = self.persist(&events, trace);
                        self.answer(ticket, Some(reply));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                    }
                }
            }
            OrderReq::Get { reply } => {
                let _ = reply.send(self.view());
            }
            OrderReq::Snapshot { reply } => {
                let state = bincode::encode_to_vec(&self.state, bincode::config::standard())
                    .unwrap_or_default();
                let t = self.engine.journal.append(Append {
                    events: Vec::new(),
                    snapshots: vec![SnapshotWrite {
                        stream: self.stream.clone(),
                        version: self.state.version,
                        schema: ORDER_SNAPSHOT_SCHEMA,
                        state,
                    }],
                    meta: Vec::new(),
                });
                let _ = reply.send(t);
            }
            OrderReq::Redrive { restored } => match self.state.status {
                Some(Status::Paid) => self.confirm(ctx, None, None),
                Some(Status::Cancelled) if self.state.needs_restore() => {
                    self.restore(ctx, restored, None, None)
                }
                _ => {}
            },
        }
        if self.state.is_terminal() && !self.state.needs_restore() {
            // Let queued saga steps finish first: stopping waits for `ctx.wait` futures.
            ctx.run_later(Duration::ZERO, |act, ctx| act.maybe_passivate(ctx));
        }
    }
}
