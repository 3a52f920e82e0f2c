//! The order side of the embedded API: payments, cancellation, shipment, reads. Each
//! command goes to the order's actor (see `order_actor`).

use super::*;

impl Engine {
    /// Records a payment. Success deducts stock and answers the CONFIRMED order; a failed
    /// payment cancels the order. Idempotent by `payment_ref` (the same ref, outcome and
    /// amount is a replay).
    pub async fn pay(
        &self,
        order_id: &str,
        payment_ref: &str,
        outcome: PaymentOutcome,
        amount_minor: i64,
        trace: Option<Arc<str>>,
    ) -> EngineResult<OrderView> {
        self.pay_with(order_id, payment_ref, outcome, amount_minor, trace, None)
            .await
    }

    /// [`Engine::pay`], its answer kept under `idem` atomically with its events.
    pub async fn pay_with(
        &self,
        order_id: &str,
        payment_ref: &str,
        outcome: PaymentOutcome,
        amount_minor: i64,
        trace: Option<Arc<str>>,
        idem: Option<Idempotency>,
    ) -> EngineResult<OrderView> {
        if let Err(e) = crate::domain::validate_payment_ref(payment_ref) {
            return self
                .inner
                .refuse(idem.as_ref(), Kind::Order, e.into())
                .await;
        }
        self.inner
            .order_request(order_id, idem, |idem, reply| OrderReq::Pay {
                payment: PaymentReport {
                    payment_ref: payment_ref.to_owned(),
                    outcome,
                    amount_minor,
                },
                trace: trace.clone(),
                idem,
                reply,
            })
            .await
    }

    /// Cancels a PENDING (releases stock) or CONFIRMED (restores stock, requests a refund)
    /// order.
    pub async fn cancel(
        &self,
        order_id: &str,
        reason: &str,
        trace: Option<Arc<str>>,
    ) -> EngineResult<OrderView> {
        self.cancel_with(order_id, reason, trace, None).await
    }

    /// [`Engine::cancel`], its answer kept under `idem` atomically with its events.
    pub async fn cancel_with(
        &self,
        order_id: &str,
        reason: &str,
        trace: Option<Arc<str>>,
        idem: Option<Idempotency>,
    ) -> EngineResult<OrderView> {
        let reason = if reason.is_empty() {
            "customer"
        } else {
            reason
        };
        if let Err(e) = crate::domain::validate_reason(reason) {
            return self
                .inner
                .refuse(idem.as_ref(), Kind::Order, e.into())
                .await;
        }
        self.inner
            .order_request(order_id, idem, |idem, reply| OrderReq::Cancel {
                reason: reason.to_owned(),
                trace: trace.clone(),
                idem,
                reply,
            })
            .await
    }

    /// Records a shipment step.
    pub async fn ship(
        &self,
        order_id: &str,
        step: ShipmentStep,
        trace: Option<Arc<str>>,
    ) -> EngineResult<OrderView> {
        self.ship_with(order_id, step, trace, None).await
    }

    /// [`Engine::ship`], its answer kept under `idem` atomically with its event.
    pub async fn ship_with(
        &self,
        order_id: &str,
        step: ShipmentStep,
        trace: Option<Arc<str>>,
        idem: Option<Idempotency>,
    ) -> EngineResult<OrderView> {
        self.inner
            .order_request(order_id, idem, |idem, reply| OrderReq::Ship {
                step,
                trace: trace.clone(),
                idem,
                reply,
            })
            .await
    }

    /// The order as of now (live state, or read from the log if passivated).
    pub async fn get_order(&self, order_id: &str) -> EngineResult<OrderView> {
        if let Some(addr) = self.inner.orders.get(order_id).map(|a| a.clone()) {
            let (tx, rx) = oneshot::channel();
            if addr.send(OrderReq::Get { reply: tx }).await.is_ok() {
                if let Ok(v) = rx.await {
                    return Ok(v);
                }
            }
        }
        let state = self.inner.load_order(order_id)?;
        if !state.is_created() {
            return Err(EngineError::OrderNotFound {
                id: order_id.to_owned(),
            });
        }
        Ok(OrderView::from(&state))
    }

    /// Keeps `outcome`'s answer under `idem`'s key (a record-only append), once durable:
    /// for a caller that answers a key whose command was applied but whose answer was
    /// never stored (a saga a crash cut short, finished by recovery). Every later replay
    /// then gets these same bytes, whatever happens to the order afterwards.
    pub async fn keep_answer(&self, idem: &Idempotency, outcome: Outcome<'_>) -> EngineResult<()> {
        self.inner.fail_if_stopped()?;
        if let Some(w) = idem.write(outcome, false) {
            let append = Append {
                idempotency: Some(w),
                ..Append::default()
            };
            self.inner.journal.append(append).await?;
        }
        Ok(())
    }

    /// The order as of now, once that state is durable (a barrier append after the
    /// read): what a retried command whose saga a crash cut short is answered with.
    pub async fn get_order_durable(&self, order_id: &str) -> EngineResult<OrderView> {
        self.inner.fail_if_stopped()?;
        let view = self.get_order(order_id).await?;
        self.inner.journal.append(Append::default()).await?;
        Ok(view)
    }

    /// The order as it was answered when it was placed (its creation events only), or
    /// `None` if no order has this id. Used to replay the first answer to a retried
    /// request.
    pub fn order_at_creation(&self, order_id: &str) -> EngineResult<Option<OrderView>> {
        let state = recovery::load_order_upto(&self.inner.store, order_id, 3)?;
        Ok(state.is_created().then(|| OrderView::from(&state)))
    }
}
