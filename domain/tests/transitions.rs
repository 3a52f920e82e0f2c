//! Every transition of SPEC §1, as `given(events).when(command).then(events | error)`
//! (cqrs-es style): the aggregate is rebuilt from `given` with `apply`, the command is
//! decided, and the outcome is compared. One test per aggregate and area; each case names
//! the rule it checks.

use ordo_domain::events::*;
use ordo_domain::order::{
    FailureReason, Order, OrderCommand, OrderLine, PaymentOutcome, PlaceFailure, ShipmentStep,
    Status, REFUND_CANCELLED, REFUND_NOT_PAYABLE,
};
use ordo_domain::sku::{Sku, SkuCommand};
use ordo_domain::{Aggregate, DomainError};

struct Given<A: Aggregate>(A);

fn given<A: Aggregate>(events: &[A::Event]) -> Given<A> {
    let mut state = A::default();
    for e in events {
        state.apply(e, 1_000);
    }
    Given(state)
}

struct Then<A: Aggregate>(Result<Vec<A::Event>, DomainError>, String);

impl<A: Aggregate> Given<A>
where
    A::Command: std::fmt::Debug,
{
    fn when(self, cmd: A::Command) -> Then<A> {
        let what = format!("{cmd:?}");
        Then(self.0.decide(&cmd), what)
    }
}

impl<A: Aggregate> Then<A>
where
    A::Event: PartialEq + std::fmt::Debug,
{
    fn then(self, events: Vec<A::Event>) {
        match self.0 {
            Ok(got) => assert_eq!(got, events, "when {}", self.1),
            Err(e) => panic!("when {}: refused with {e}, expected {events:?}", self.1),
        }
    }

    fn then_err(self, matches: impl Fn(&DomainError) -> bool) {
        match self.0 {
            Err(e) if matches(&e) => {}
            other => panic!("when {}: unexpected {other:?}", self.1),
        }
    }
}

// --- orders -------------------------------------------------------------------------------

const DEADLINE: u64 = 10_000;

fn created() -> OrderEvent {
    OrderEvent::OrderCreated(OrderCreated {
        order_id: "o1".into(),
        customer_id: "ann".into(),
        lines: vec![OrderLine {
            sku: "A".into(),
            qty: 2,
            unit_price_minor: 150,
        }],
        total_minor: 300,
        currency: "EUR".into(),
        created_at_ms: 0,
        expires_at_ms: DEADLINE,
    })
}
fn pending() -> Vec<OrderEvent> {
    vec![created(), OrderEvent::OrderPending(OrderPending {})]
}
fn paid(r: &str) -> OrderEvent {
    OrderEvent::PaymentSucceeded(PaymentSucceeded {
        payment_ref: r.into(),
        amount_minor: 300,
    })
}
fn confirmed() -> Vec<OrderEvent> {
    let mut e = pending();
    e.extend([paid("p1"), OrderEvent::OrderConfirmed(OrderConfirmed {})]);
    e
}
fn cancelled(reason: &str, from: Status) -> OrderEvent {
    OrderEvent::OrderCancelled(OrderCancelled {
        reason: reason.into(),
        from,
    })
}
fn pay(r: &str, outcome: PaymentOutcome, amount: i64, now: u64) -> OrderCommand {
    OrderCommand::Pay {
        payment_ref: r.into(),
        outcome,
        amount_minor: amount,
        now_ms: now,
    }
}
fn refund(r: &str, amount: i64, reason: &str) -> OrderCommand {
    OrderCommand::RequestRefund {
        payment_ref: r.into(),
        amount_minor: amount,
        reason: reason.into(),
    }
}
fn refunded(r: &str, amount: i64, reason: &str) -> OrderEvent {
    OrderEvent::RefundRequested(RefundRequested {
        payment_ref: r.into(),
        amount_minor: amount,
        reason: reason.into(),
    })
}
fn invalid_transition(e: &DomainError) -> bool {
    matches!(e, DomainError::InvalidTransition { .. })
}
fn not_payable(e: &DomainError) -> bool {
    matches!(e, DomainError::OrderNotPayable { .. })
}

fn place(failure: Option<PlaceFailure>) -> OrderCommand {
    OrderCommand::Place {
        order_id: "o1".into(),
        customer_id: "ann".into(),
        lines: vec![OrderLine {
            sku: "A".into(),
            qty: 2,
            unit_price_minor: 150,
        }],
        currency: "EUR".into(),
        now_ms: 0,
        ttl_ms: DEADLINE,
        failure,
    }
}

#[test]
fn placing_an_order() {
    // Every line reserved: created and PENDING, total from the captured prices.
    given::<Order>(&[]).when(place(None)).then(pending());
    // A line could not be reserved: created and FAILED, with why and where.
    let failure = PlaceFailure {
        reason: FailureReason::LimitExceeded,
        sku: "A".into(),
        detail: "over the limit".into(),
    };
    given::<Order>(&[]).when(place(Some(failure))).then(vec![
        created(),
        OrderEvent::OrderFailed(OrderFailed {
            reason: "limit_exceeded".into(),
            sku: "A".into(),
            detail: "over the limit".into(),
        }),
    ]);
    // An order is placed once.
    given::<Order>(&pending())
        .when(place(None))
        .then_err(invalid_transition);
}

#[test]
fn paying_a_pending_order() {
    let ok = PaymentOutcome::Succeeded;
    given::<Order>(&pending())
        .when(pay("p1", ok, 300, 1))
        .then(vec![paid("p1")]);
    // A failed payment cancels the order.
    given::<Order>(&pending())
        .when(pay("p1", PaymentOutcome::Failed, 300, 1))
        .then(vec![
            OrderEvent::PaymentFailed(PaymentFailed {
                payment_ref: "p1".into(),
                amount_minor: 300,
            }),
            cancelled("payment_failed", Status::Pending),
        ]);
    // The amount must be the total.
    given::<Order>(&pending())
        .when(pay("p1", ok, 299, 1))
        .then_err(|e| {
            matches!(
                e,
                DomainError::AmountMismatch {
                    expected: 300,
                    got: 299
                }
            )
        });
    // Past the deadline it can no longer be paid.
    given::<Order>(&pending())
        .when(pay("p1", ok, 300, DEADLINE))
        .then_err(not_payable);
    // A payment ref that is not visible ASCII is refused before anything else.
    given::<Order>(&pending())
        .when(pay("p 1", ok, 300, 1))
        .then_err(|e| matches!(e, DomainError::Invalid(_)));
}

#[test]
fn payment_replays_and_new_attempts() {
    let ok = PaymentOutcome::Succeeded;
    // The same ref, outcome and amount again records nothing.
    let mut paid_events = pending();
    paid_events.push(paid("p1"));
    given::<Order>(&paid_events)
        .when(pay("p1", ok, 300, 1))
        .then(vec![]);
    let mut failed = pending();
    failed.extend([
        OrderEvent::PaymentFailed(PaymentFailed {
            payment_ref: "p1".into(),
            amount_minor: 300,
        }),
        cancelled("payment_failed", Status::Pending),
    ]);
    given::<Order>(&failed)
        .when(pay("p1", PaymentOutcome::Failed, 300, 1))
        .then(vec![]);
    // A success reusing the failed payment's ref is a new attempt: not payable.
    given::<Order>(&failed)
        .when(pay("p1", ok, 300, 1))
        .then_err(not_payable);
    // Another ref on a paid order is not payable either.
    given::<Order>(&confirmed())
        .when(pay("p2", ok, 300, 1))
        .then_err(not_payable);
}

#[test]
fn confirming_a_paid_order() {
    let mut paid_events = pending();
    paid_events.push(paid("p1"));
    given::<Order>(&paid_events)
        .when(OrderCommand::Confirm)
        .then(vec![OrderEvent::OrderConfirmed(OrderConfirmed {})]);
    // Confirming again records nothing (a redriven saga).
    given::<Order>(&confirmed())
        .when(OrderCommand::Confirm)
        .then(vec![]);
    given::<Order>(&pending())
        .when(OrderCommand::Confirm)
        .then_err(invalid_transition);
}

#[test]
fn cancelling_and_expiring() {
    let cancel = || OrderCommand::Cancel {
        reason: "customer".into(),
    };
    given::<Order>(&pending())
        .when(cancel())
        .then(vec![cancelled("customer", Status::Pending)]);
    // A confirmed order can be cancelled; it remembers where it came from (restock).
    given::<Order>(&confirmed())
        .when(cancel())
        .then(vec![cancelled("customer", Status::Confirmed)]);
    let mut done = pending();
    done.push(cancelled("customer", Status::Pending));
    given::<Order>(&done)
        .when(cancel())
        .then_err(invalid_transition);
    let mut fulfilled = confirmed();
    fulfilled.extend([
        OrderEvent::ShipmentPrepared(ShipmentPrepared {}),
        OrderEvent::ShipmentProcessed(ShipmentProcessed {}),
        OrderEvent::OrderFulfilled(OrderFulfilled {}),
    ]);
    given::<Order>(&fulfilled)
        .when(cancel())
        .then_err(invalid_transition);
    // Expiry: only a PENDING order, only once its deadline has passed.
    given::<Order>(&pending())
        .when(OrderCommand::Expire { now_ms: DEADLINE })
        .then(vec![cancelled("expired", Status::Pending)]);
    given::<Order>(&pending())
        .when(OrderCommand::Expire {
            now_ms: DEADLINE - 1,
        })
        .then(vec![]);
    given::<Order>(&confirmed())
        .when(OrderCommand::Expire { now_ms: DEADLINE })
        .then(vec![]);
}

#[test]
fn shipping_in_order() {
    let ship = OrderCommand::Ship;
    given::<Order>(&confirmed())
        .when(ship(ShipmentStep::Prepared))
        .then(vec![OrderEvent::ShipmentPrepared(ShipmentPrepared {})]);
    let mut prepared = confirmed();
    prepared.push(OrderEvent::ShipmentPrepared(ShipmentPrepared {}));
    given::<Order>(&prepared)
        .when(ship(ShipmentStep::Processed))
        .then(vec![OrderEvent::ShipmentProcessed(ShipmentProcessed {})]);
    let mut processed = prepared.clone();
    processed.push(OrderEvent::ShipmentProcessed(ShipmentProcessed {}));
    given::<Order>(&processed)
        .when(ship(ShipmentStep::Fulfilled))
        .then(vec![OrderEvent::OrderFulfilled(OrderFulfilled {})]);
    // Steps are not skipped, and a PENDING order is not shipped.
    given::<Order>(&confirmed())
        .when(ship(ShipmentStep::Fulfilled))
        .then_err(invalid_transition);
    given::<Order>(&pending())
        .when(ship(ShipmentStep::Prepared))
        .then_err(invalid_transition);
}

#[test]
fn refunds_are_recorded_once_per_attempt() {
    let mut cancelled_confirmed = confirmed();
    cancelled_confirmed.push(cancelled("customer", Status::Confirmed));
    given::<Order>(&cancelled_confirmed)
        .when(refund("p1", 300, REFUND_CANCELLED))
        .then(vec![refunded("p1", 300, REFUND_CANCELLED)]);
    // The cancellation's refund once (a redriven restock records nothing more).
    let mut with_refund = cancelled_confirmed.clone();
    with_refund.push(refunded("p1", 300, REFUND_CANCELLED));
    given::<Order>(&with_refund)
        .when(refund("p1", 300, REFUND_CANCELLED))
        .then(vec![]);
    // A late payment under the paying ref (another amount) does not hide the
    // cancellation's refund: each attempt is refunded on its own.
    let mut late = confirmed();
    late.push(refunded("p1", 1, REFUND_NOT_PAYABLE));
    late.push(cancelled("customer", Status::Confirmed));
    given::<Order>(&late)
        .when(refund("p1", 300, REFUND_CANCELLED))
        .then(vec![refunded("p1", 300, REFUND_CANCELLED)]);
    given::<Order>(&late)
        .when(refund("p1", 1, REFUND_NOT_PAYABLE))
        .then(vec![]);
}

// --- SKUs ---------------------------------------------------------------------------------

fn registered(limit: Option<u32>) -> Vec<SkuEvent> {
    vec![
        SkuEvent::SkuRegistered(SkuRegistered {
            sku: "A".into(),
            name: "a".into(),
            price_minor: 150,
            currency: "EUR".into(),
            per_customer_limit: limit,
        }),
        SkuEvent::StockAdjusted(StockAdjusted {
            delta: 5,
            reason: "initial stock".into(),
        }),
    ]
}
fn reserved(order: &str, customer: &str, qty: u32) -> SkuEvent {
    SkuEvent::StockReserved(StockReserved {
        order_id: order.into(),
        customer_id: customer.into(),
        qty,
    })
}
fn reserve(order: &str, customer: &str, qty: u32) -> SkuCommand {
    SkuCommand::Reserve {
        order_id: order.into(),
        customer_id: customer.into(),
        qty,
    }
}

#[test]
fn registering_and_adjusting_stock() {
    given::<Sku>(&[])
        .when(SkuCommand::Upsert {
            sku: "A".into(),
            name: "a".into(),
            price_minor: 150,
            currency: "EUR".into(),
            per_customer_limit: None,
            initial_stock: 5,
        })
        .then(registered(None));
    given::<Sku>(&registered(None))
        .when(SkuCommand::AdjustStock {
            delta: -5,
            reason: "shrinkage".into(),
        })
        .then(vec![SkuEvent::StockAdjusted(StockAdjusted {
            delta: -5,
            reason: "shrinkage".into(),
        })]);
    given::<Sku>(&registered(None))
        .when(SkuCommand::AdjustStock {
            delta: -6,
            reason: "shrinkage".into(),
        })
        .then_err(|e| matches!(e, DomainError::InsufficientStock { .. }));
    given::<Sku>(&registered(None))
        .when(SkuCommand::AdjustStock {
            delta: 0,
            reason: "nothing".into(),
        })
        .then_err(|e| matches!(e, DomainError::Invalid(_)));
    given::<Sku>(&registered(None))
        .when(SkuCommand::AdjustStock {
            delta: 1,
            reason: "  ".into(),
        })
        .then_err(|e| matches!(e, DomainError::Invalid(_)));
}

#[test]
fn reserving_never_oversells_and_keeps_limits() {
    given::<Sku>(&registered(None))
        .when(reserve("o1", "ann", 5))
        .then(vec![reserved("o1", "ann", 5)]);
    given::<Sku>(&registered(None))
        .when(reserve("o1", "ann", 6))
        .then_err(|e| matches!(e, DomainError::OutOfStock { available: 5, .. }));
    // Reserving again for the same order records nothing.
    let mut held = registered(Some(3));
    held.push(reserved("o1", "ann", 2));
    given::<Sku>(&held)
        .when(reserve("o1", "ann", 2))
        .then(vec![]);
    // The per-customer limit counts what the customer already holds.
    given::<Sku>(&held)
        .when(reserve("o2", "ann", 2))
        .then_err(|e| matches!(e, DomainError::LimitExceeded { held: 2, .. }));
    given::<Sku>(&held)
        .when(reserve("o2", "bob", 3))
        .then(vec![reserved("o2", "bob", 3)]);
}

#[test]
fn releasing_reducing_and_restoring() {
    let mut held = registered(None);
    held.push(reserved("o1", "ann", 2));
    given::<Sku>(&held)
        .when(SkuCommand::Release {
            order_id: "o1".into(),
            reason: "cancelled".into(),
        })
        .then(vec![SkuEvent::StockReleased(StockReleased {
            order_id: "o1".into(),
            customer_id: "ann".into(),
            qty: 2,
            reason: "cancelled".into(),
        })]);
    // Nothing held for that order: nothing to release or deduct (idempotent).
    given::<Sku>(&registered(None))
        .when(SkuCommand::Release {
            order_id: "o1".into(),
            reason: "cancelled".into(),
        })
        .then(vec![]);
    given::<Sku>(&held)
        .when(SkuCommand::Reduce {
            order_id: "o1".into(),
        })
        .then(vec![SkuEvent::StockReduced(StockReduced {
            order_id: "o1".into(),
            customer_id: "ann".into(),
            qty: 2,
        })]);
    let mut sold = held.clone();
    sold.push(SkuEvent::StockReduced(StockReduced {
        order_id: "o1".into(),
        customer_id: "ann".into(),
        qty: 2,
    }));
    given::<Sku>(&sold)
        .when(SkuCommand::Reduce {
            order_id: "o1".into(),
        })
        .then(vec![]);
    given::<Sku>(&sold)
        .when(SkuCommand::Restore {
            order_id: "o1".into(),
            customer_id: "ann".into(),
            qty: 2,
        })
        .then(vec![SkuEvent::StockRestored(StockRestored {
            order_id: "o1".into(),
            customer_id: "ann".into(),
            qty: 2,
        })]);
    // Never more restored than sold.
    given::<Sku>(&held)
        .when(SkuCommand::Restore {
            order_id: "o1".into(),
            customer_id: "ann".into(),
            qty: 2,
        })
        .then_err(|e| matches!(e, DomainError::Invalid(_)));
}

#[test]
fn a_cancellation_needs_a_reason_a_person_could_give() {
    for bad in ["", "   ", "line\nbreak"] {
        given::<Order>(&pending())
            .when(OrderCommand::Cancel { reason: bad.into() })
            .then_err(|e| matches!(e, DomainError::Invalid(_)));
    }
}

/// Units per customer are counted only while a limit is set (issue 21: a SKU without one
/// kept a count for every customer who ever bought it, in memory and in every snapshot).
/// A limit set later counts what customers hold from then on.
#[test]
fn customer_units_are_kept_only_under_a_limit() {
    let mut events = registered(None);
    events.push(reserved("o1", "ann", 2));
    events.push(reserved("o2", "bob", 1));
    let g = given::<Sku>(&events);
    assert!(g.0.customer_units.is_empty(), "no limit: no counts");
    events.push(SkuEvent::SkuUpdated(SkuUpdated {
        name: "a".into(),
        price_minor: 150,
        currency: "EUR".into(),
        per_customer_limit: Some(3),
    }));
    let g = given::<Sku>(&events);
    assert_eq!(g.0.customer_units.get("ann"), Some(&2));
    assert_eq!(g.0.customer_units.len(), 2);
    given::<Sku>(&events)
        .when(reserve("o3", "ann", 2))
        .then_err(|e| matches!(e, DomainError::LimitExceeded { .. }));
    given::<Sku>(&events)
        .when(reserve("o3", "ann", 1))
        .then(vec![reserved("o3", "ann", 1)]);
    events.push(SkuEvent::SkuUpdated(SkuUpdated {
        name: "a".into(),
        price_minor: 150,
        currency: "EUR".into(),
        per_customer_limit: None,
    }));
    assert!(
        given::<Sku>(&events).0.customer_units.is_empty(),
        "limit removed"
    );
}
