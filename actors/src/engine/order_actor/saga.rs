//! The order's saga steps: SKU commands run one after another while the order's mailbox
//! waits (`ctx.wait`), then the order's own closing event — stock deducted then
//! `OrderConfirmed`, stock restored then the cancellation's `RefundRequested`, holds
//! released after a cancellation or expiry.

use super::*;

impl OrderActor {
    /// Runs SKU commands for this order one after another (blocking the order's mailbox),
    /// then `then` with the outcome.
    pub(super) fn with_skus(
        &mut self,
        ctx: &mut Context<Self>,
        ops: Vec<(String, SkuCommand)>,
        trace: Option<Arc<str>>,
        then: impl FnOnce(&mut Self, &mut Context<Self>, EngineResult<()>) + 'static,
    ) {
        let engine = self.engine.clone();
        let fut = async move {
            for (sku, cmd) in ops {
                engine
                    .sku_command(&sku, cmd, trace.clone(), false, None)
                    .await?;
            }
            Ok(())
        }
        .into_actor(self)
        .map(move |res, act, ctx| then(act, ctx, res));
        ctx.wait(fut);
    }

    pub(super) fn release_ops(&self, reason: &str) -> Vec<(String, SkuCommand)> {
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

    pub(super) fn reduce_ops(&self) -> Vec<(String, SkuCommand)> {
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

    pub(super) fn restore_ops(&self, skip: &[String]) -> Vec<(String, SkuCommand)> {
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

    /// PAID → deduct stock on every line → CONFIRMED (the command's answer is stored with
    /// the confirmation).
    pub(super) fn confirm(
        &mut self,
        ctx: &mut Context<Self>,
        trace: Option<Arc<str>>,
        idem: Option<Idempotency>,
        reply: Option<Reply>,
    ) {
        let ops = self.reduce_ops();
        self.with_skus(ctx, ops, trace.clone(), move |act, _ctx, res| {
            let res = res.and_then(|()| Ok(order::decide(&act.state, &OrderCommand::Confirm)?));
            match res {
                Ok(events) => {
                    let ticket = act.persist(&events, trace, |a| {
                        a.record(idem.as_ref(), Stage::Done, false)
                    });
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

    /// CANCELLED from CONFIRMED → restore every line → RefundRequested (with the
    /// command's answer).
    pub(super) fn restore(
        &mut self,
        ctx: &mut Context<Self>,
        skip: Vec<String>,
        trace: Option<Arc<str>>,
        idem: Option<Idempotency>,
        reply: Option<Reply>,
    ) {
        let ops = self.restore_ops(&skip);
        self.with_skus(ctx, ops, trace.clone(), move |act, _ctx, res| {
            let payment_ref = act.state.payment_ref.clone().unwrap_or_default();
            let cmd = OrderCommand::RequestRefund {
                payment_ref,
                amount_minor: act.state.total_minor,
                reason: order::REFUND_CANCELLED.into(),
            };
            match res.and_then(|()| Ok(order::decide(&act.state, &cmd)?)) {
                Ok(events) => {
                    let ticket = act.persist(&events, trace, |a| {
                        a.record(idem.as_ref(), Stage::Done, false)
                    });
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

    /// Releases every line's hold, then answers when `ticket` (the order's own event,
    /// first in the log) is durable; the releases follow it and are redone by recovery if
    /// lost.
    pub(super) fn release(
        &mut self,
        ctx: &mut Context<Self>,
        reason: &str,
        ticket: AppendTicket,
        trace: Option<Arc<str>>,
        then: impl FnOnce(&Self, AppendTicket) + 'static,
    ) {
        let ops = self.release_ops(reason);
        self.with_skus(ctx, ops, trace, move |act, _ctx, res| {
            if let Err(e) = res {
                tracing::error!(order = %act.state.id, error = %e, "release failed; recovery will release it");
            }
            then(act, ticket);
        });
    }
}
