//! Single-line orders placed by the SKU actor (the reservation and the minted order in one
//! append), collected while the actor drains its mailbox and handed to the journal in one
//! enqueue by [`Flush`].

use std::sync::Arc;

use actix::prelude::*;
use ordo_storage::{Append, Completion};
use tokio::sync::oneshot;

use super::SkuActor;
use crate::domain::order::{self, Order, OrderLine};
use crate::domain::sku::{self, SkuCommand};
use crate::domain::{Aggregate, DomainError, OrderEvent, SkuEvent};
use crate::engine::aggregate;
use crate::engine::error::{EngineError, EngineResult};
use crate::engine::idempotency::{self, Idempotency, Outcome};
use crate::engine::placement::place_command;
use crate::engine::view::OrderView;

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

/// Hands the actor's collected appends to the journal (scheduled by the first placement
/// of a batch; runs once the mailbox is drained).
pub(super) struct Flush;

impl Message for Flush {
    type Result = ();
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
    pub(super) fn handle_place(&mut self, p: SinglePlace) {
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
        let now = ordo_storage::now_ms();
        let decided = match self.decide_single(&order_id, customer_id, qty, ttl_ms, now) {
            Ok(d) => d,
            Err(e) => {
                let _ = reply.send(Placed::Refused(e));
                return;
            }
        };
        // Decided: apply both, one append.
        let Decided {
            sku_events,
            failure,
            order_events,
        } = decided;
        let mut events = aggregate::stage(&mut self.state, &self.stream, &sku_events, now, &trace);
        self.since_snapshot += sku_events.len() as u64;
        let mut order = Order::default();
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

    /// Decides the reservation and the order's placement, applying nothing: the SKU's
    /// events (none when it cannot serve the order), why it cannot, and the order's events.
    fn decide_single(
        &self,
        order_id: &str,
        customer_id: String,
        qty: u32,
        ttl_ms: u64,
        now: u64,
    ) -> EngineResult<Decided> {
        let reserve = SkuCommand::Reserve {
            order_id: order_id.to_owned(),
            customer_id: customer_id.clone(),
            qty,
        };
        let (sku_events, failure) = match sku::decide(&self.state, &reserve) {
            Ok(events) => (events, None),
            Err(e @ (DomainError::OutOfStock { .. } | DomainError::LimitExceeded { .. })) => {
                (Vec::new(), Some(e))
            }
            Err(e) => return Err(e.into()),
        };
        let line = OrderLine {
            sku: self.state.sku.clone(),
            qty,
            unit_price_minor: self.state.price_minor,
        };
        let cmd = place_command(
            order_id.to_owned(),
            customer_id,
            vec![line],
            self.state.currency.clone(),
            now,
            ttl_ms,
            failure.as_ref(),
        );
        let order_events = order::decide(&Order::default(), &cmd)?;
        Ok(Decided {
            sku_events,
            failure,
            order_events,
        })
    }
}

/// What [`SkuActor::decide_single`] decided.
struct Decided {
    sku_events: Vec<SkuEvent>,
    failure: Option<DomainError>,
    order_events: Vec<OrderEvent>,
}
