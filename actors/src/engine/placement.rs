//! Placing an order: reserve every line in its SKU's actor (compensating on failure),
//! then the order's own append with the command's idempotency record (SPEC §2).

use super::*;

impl Engine {
    /// Places an order: reserves every line (in order), compensating on failure. A
    /// PENDING order is answered once its events are durable; a FAILED one is stored and
    /// returned as [`EngineError::OrderFailed`].
    pub async fn place_order(
        &self,
        req: PlaceOrder,
        trace: Option<Arc<str>>,
    ) -> EngineResult<OrderView> {
        self.place_order_with(req, trace, None).await
    }

    /// [`Engine::place_order`], its answer kept under `idem` in the same append as the
    /// order's events: a retry after a crash either finds that answer or finds nothing
    /// placed (reservations of an order that never became durable are released by
    /// recovery).
    pub async fn place_order_with(
        &self,
        req: PlaceOrder,
        trace: Option<Arc<str>>,
        idem: Option<Idempotency>,
    ) -> EngineResult<OrderView> {
        let inner = &self.inner;
        if let Err(e) = inner
            .fail_if_stopped()
            .and_then(|()| validate_lines(&req.customer_id, &req.lines).map_err(Into::into))
        {
            return inner.refuse(idem.as_ref(), Kind::Order, e).await;
        }
        self.place(Self::new_order_id(), req, trace, idem).await
    }

    /// A fresh order id (a ULID: time-sortable, 26 characters).
    pub fn new_order_id() -> String {
        ulid::Ulid::new().to_string()
    }

    /// Places an order under an id the caller chose beforehand with
    /// [`Engine::new_order_id`]. An id that is taken is refused before anything is
    /// reserved.
    pub async fn place_order_as(
        &self,
        order_id: String,
        req: PlaceOrder,
        trace: Option<Arc<str>>,
    ) -> EngineResult<OrderView> {
        let inner = &self.inner;
        inner.fail_if_stopped()?;
        validate_lines(&req.customer_id, &req.lines)?;
        if ulid::Ulid::from_string(&order_id).is_err() {
            return Err(
                DomainError::Invalid(format!("order id {order_id:?} is not a ULID")).into(),
            );
        }
        let taken = || DomainError::Invalid(format!("order id {order_id} is taken")).into();
        if inner.placing.insert(order_id.clone(), ()).is_some() {
            return Err(taken());
        }
        let placing = PlacingGuard {
            placing: &inner.placing,
            id: &order_id,
        };
        if inner.orders.contains_key(&order_id)
            || inner.store.stream_head(&format!("order/{order_id}"))? > 0
        {
            return Err(taken());
        }
        let res = self.place(order_id.clone(), req, trace, None).await;
        drop(placing);
        res
    }

    /// Reserves every line in order; `Ok` holds the lines reserved (with their captured
    /// prices), the order's currency, and the reason a line failed (the lines after it
    /// not tried). `Err` is a refusal with every reservation already released.
    pub(super) async fn reserve_lines(
        &self,
        order_id: &str,
        req: &PlaceOrder,
        trace: &Option<Arc<str>>,
    ) -> EngineResult<(Vec<OrderLine>, Option<String>, Option<DomainError>)> {
        let inner = &self.inner;
        let mut reserved: Vec<String> = Vec::with_capacity(req.lines.len());
        let mut lines: Vec<OrderLine> = Vec::with_capacity(req.lines.len());
        let mut currency: Option<String> = None;
        for line in &req.lines {
            if !inner.sku_index.read().contains(&line.sku) {
                inner.release_reserved(order_id, &reserved).await;
                return Err(DomainError::UnknownSku(line.sku.clone()).into());
            }
            let asked = inner
                .ask_sku(&line.sku, false, Admission::RefuseWhenFull, |reply| {
                    SkuReq::Reserve {
                        order_id: order_id.to_owned(),
                        customer_id: req.customer_id.clone(),
                        qty: line.qty,
                        currency: currency.clone(),
                        trace: trace.clone(),
                        reply,
                    }
                })
                .await;
            match asked.and_then(|answer| answer) {
                Ok((price, cur)) => {
                    currency.get_or_insert(cur);
                    reserved.push(line.sku.clone());
                    lines.push(OrderLine {
                        sku: line.sku.clone(),
                        qty: line.qty,
                        unit_price_minor: price,
                    });
                }
                Err(EngineError::Domain(
                    e @ (DomainError::OutOfStock { .. } | DomainError::LimitExceeded { .. }),
                )) => {
                    inner.release_reserved(order_id, &reserved).await;
                    return Ok((lines, currency, Some(e)));
                }
                Err(e) => {
                    inner.release_reserved(order_id, &reserved).await;
                    return Err(e);
                }
            }
        }
        Ok((lines, currency, None))
    }

    pub(super) async fn place(
        &self,
        order_id: String,
        req: PlaceOrder,
        trace: Option<Arc<str>>,
        idem: Option<Idempotency>,
    ) -> EngineResult<OrderView> {
        if req.lines.len() == 1 {
            return self.place_single(order_id, req, trace, idem).await;
        }
        self.place_saga(order_id, req, trace, idem).await
    }

    /// A single-line order: the SKU's actor reserves and mints the order in one append
    /// (see `sku_actor`), and answers once it is durable.
    async fn place_single(
        &self,
        order_id: String,
        req: PlaceOrder,
        trace: Option<Arc<str>>,
        idem: Option<Idempotency>,
    ) -> EngineResult<OrderView> {
        let inner = &self.inner;
        let line = &req.lines[0];
        if !inner.sku_index.read().contains(&line.sku) {
            let e = DomainError::UnknownSku(line.sku.clone()).into();
            return inner.refuse(idem.as_ref(), Kind::Order, e).await;
        }
        let ttl_ms = inner.config.reservation_ttl.as_millis() as u64;
        let asked = inner
            .ask_sku(&line.sku, false, Admission::RefuseWhenFull, |reply| {
                SkuReq::Place(Box::new(SinglePlace {
                    order_id: order_id.clone(),
                    customer_id: req.customer_id.clone(),
                    qty: line.qty,
                    ttl_ms,
                    trace: trace.clone(),
                    idem: idem.clone(),
                    reply,
                }))
            })
            .await;
        match asked {
            Ok(Placed::Stored(result, state)) => {
                self.note_placed(&result, *state);
                result
            }
            Ok(Placed::NotStored(e)) => Err(e),
            Ok(Placed::Refused(e)) | Err(e) => inner.refuse(idem.as_ref(), Kind::Order, e).await,
        }
    }

    /// An order over several SKUs: a saga of appends (each line's reservation, then the
    /// order's own events with the idempotency record), compensated on failure.
    async fn place_saga(
        &self,
        order_id: String,
        req: PlaceOrder,
        trace: Option<Arc<str>>,
        idem: Option<Idempotency>,
    ) -> EngineResult<OrderView> {
        let inner = &self.inner;
        let (mut lines, currency, failure) = match self.reserve_lines(&order_id, &req, &trace).await
        {
            Ok(r) => r,
            Err(e) => return inner.refuse(idem.as_ref(), Kind::Order, e).await,
        };
        if failure.is_some() {
            self.price_untried_lines(&req, &mut lines).await;
        }

        let now = ordo_storage::now_ms();
        let cmd = place_command(
            order_id.clone(),
            req.customer_id.clone(),
            lines,
            currency.unwrap_or_default(),
            now,
            inner.config.reservation_ttl.as_millis() as u64,
            failure.as_ref(),
        );
        let mut state = Order::default();
        let events = match order::decide(&state, &cmd) {
            Ok(ev) => ev,
            Err(e) => {
                if failure.is_none() {
                    let held: Vec<String> = req.lines.iter().map(|l| l.sku.clone()).collect();
                    inner.release_reserved(&order_id, &held).await;
                }
                return inner.refuse(idem.as_ref(), Kind::Order, e.into()).await;
            }
        };
        let stream: Arc<str> = Arc::from(<Order as Aggregate>::stream(&order_id));
        let new = aggregate::stage(&mut state, &stream, &events, now, &trace);
        let view = OrderView::from(&state);
        let result = match failure {
            None => Ok(view),
            Some(reason) => Err(EngineError::OrderFailed {
                order: Box::new(view),
                reason,
            }),
        };
        // The order's events and the command's answer: one append.
        inner
            .journal
            .append(Append {
                events: new,
                idempotency: idempotency::write(
                    idem.as_ref(),
                    Outcome::Order(result.as_ref()),
                    true,
                ),
                ..Append::default()
            })
            .await?;
        self.note_placed(&result, state);
        result
    }

    /// Lines after the one that failed were never tried: they are recorded at the SKU's
    /// current price when known.
    async fn price_untried_lines(&self, req: &PlaceOrder, lines: &mut Vec<OrderLine>) {
        for line in req.lines.iter().skip(lines.len()) {
            let price = match self.get_sku(&line.sku).await {
                Ok(v) => v.price_minor,
                Err(_) => 0,
            };
            lines.push(OrderLine {
                sku: line.sku.clone(),
                qty: line.qty,
                unit_price_minor: price,
            });
        }
    }

    /// After a placement is durable: count it, and give a PENDING order its deadline
    /// entry (no actor until something happens to it, see `deadlines`).
    fn note_placed(&self, result: &EngineResult<OrderView>, state: Order) {
        let inner = &self.inner;
        match result {
            Ok(_) => {
                inner.metrics.orders_pending.inc();
                // No actor until something happens to the order (see `deadlines`).
                inner.note_pending(state);
            }
            Err(EngineError::OrderFailed { reason, .. }) => {
                let counter = match reason {
                    DomainError::LimitExceeded { .. } => &inner.metrics.orders_failed_limit,
                    _ => &inner.metrics.orders_failed_out_of_stock,
                };
                counter.inc();
            }
            Err(_) => {}
        }
    }
}

/// The `Place` command for an order whose lines are priced, and reserved unless `failure`
/// says why a line could not be.
pub(crate) fn place_command(
    order_id: String,
    customer_id: String,
    lines: Vec<OrderLine>,
    currency: String,
    now_ms: u64,
    ttl_ms: u64,
    failure: Option<&DomainError>,
) -> OrderCommand {
    let failure = failure.and_then(|e| {
        FailureReason::of(e).map(|(reason, sku)| PlaceFailure {
            reason,
            sku: sku.to_owned(),
            detail: e.to_string(),
        })
    });
    OrderCommand::Place {
        order_id,
        customer_id,
        lines,
        currency,
        now_ms,
        ttl_ms,
        failure,
    }
}
