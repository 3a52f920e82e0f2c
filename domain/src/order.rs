//! The order aggregate and its state machine (SPEC §1):
//!
//! ```text
//! PENDING ─pay ok─▶ PAID ─stock deducted─▶ CONFIRMED ─▶ SHIPMENT_PREPARED ─▶ SHIPMENT_PROCESSED ─▶ FULFILLED
//!    │  └─pay failed / cancel / expiry─▶ CANCELLED ◀─cancel─┘
//! FAILED (a line could not be reserved)
//! ```

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

use super::events::*;
use super::{DomainError, DomainResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Pending,
    Failed,
    Paid,
    Confirmed,
    ShipmentPrepared,
    ShipmentProcessed,
    Fulfilled,
    Cancelled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "PENDING",
            Status::Failed => "FAILED",
            Status::Paid => "PAID",
            Status::Confirmed => "CONFIRMED",
            Status::ShipmentPrepared => "SHIPMENT_PREPARED",
            Status::ShipmentProcessed => "SHIPMENT_PROCESSED",
            Status::Fulfilled => "FULFILLED",
            Status::Cancelled => "CANCELLED",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Failed | Status::Fulfilled | Status::Cancelled)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A line with its price captured at creation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct OrderLine {
    pub sku: String,
    pub qty: u32,
    pub unit_price_minor: i64,
}

/// One status change, for the order's `history`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct HistoryEntry {
    pub status: Status,
    pub at_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// An order's state. `Default` is the state before `OrderCreated`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct Order {
    pub id: String,
    pub customer_id: String,
    pub lines: Vec<OrderLine>,
    pub total_minor: i64,
    pub currency: String,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
    /// `None` until the order is created.
    pub status: Option<Status>,
    /// The payment that paid (or failed) this order.
    pub payment_ref: Option<String>,
    pub cancel_reason: Option<String>,
    /// Failure details of a FAILED order: why, and the SKU that failed.
    pub failure: Option<(FailureReason, String)>,
    /// Refunds requested (late payments, cancellation), in order.
    pub refunds: Vec<Refund>,
    /// Every payment attempt recorded on the order (succeeded or failed), in order: what
    /// tells a replay (same ref, outcome and amount) from a new attempt.
    pub payments: Vec<Payment>,
    pub history: Vec<HistoryEntry>,
    pub version: u64,
}

/// A refund requested on an order: of a payment that could not be kept
/// ([`REFUND_NOT_PAYABLE`]) or of the order's own payment when it was cancelled
/// ([`REFUND_CANCELLED`]). One refund per (ref, amount, reason): a payment attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct Refund {
    pub payment_ref: String,
    pub amount_minor: i64,
    pub reason: String,
}

/// Reason of the refund of a cancelled order's payment.
pub const REFUND_CANCELLED: &str = "cancelled";
/// Reason of the refund of a payment for an order that could no longer be paid.
pub const REFUND_NOT_PAYABLE: &str = "order_not_payable";

/// Why a placement failed (its order is stored FAILED). The stored event carries the code
/// ([`FailureReason::as_str`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    OutOfStock,
    LimitExceeded,
}

impl FailureReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::OutOfStock => "out_of_stock",
            FailureReason::LimitExceeded => "limit_exceeded",
        }
    }

    /// The reason of a refusal that makes a placement FAILED (rather than refused).
    pub fn of(e: &DomainError) -> Option<(FailureReason, &str)> {
        match e {
            DomainError::OutOfStock { sku, .. } => Some((FailureReason::OutOfStock, sku)),
            DomainError::LimitExceeded { sku, .. } => Some((FailureReason::LimitExceeded, sku)),
            _ => None,
        }
    }

    /// Reads a stored code. Only the codes above are ever written; anything else reads as
    /// out of stock (nothing was held either way).
    fn parse(code: &str) -> FailureReason {
        match code {
            "limit_exceeded" => FailureReason::LimitExceeded,
            _ => FailureReason::OutOfStock,
        }
    }
}

/// Why a placement failed, with the line it failed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaceFailure {
    pub reason: FailureReason,
    pub sku: String,
    /// A sentence for people.
    pub detail: String,
}

/// A payment attempt recorded on an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct Payment {
    pub payment_ref: String,
    pub outcome: PaymentOutcome,
    pub amount_minor: i64,
}

/// A payment outcome as reported by the payment provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "snake_case")]
pub enum PaymentOutcome {
    Succeeded,
    Failed,
}

/// Shipment steps, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShipmentStep {
    Prepared,
    Processed,
    Fulfilled,
}

/// Commands on an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderCommand {
    /// Record the outcome of reserving every line: `failure` is `None` when all lines
    /// were reserved (→ PENDING), else why a line was not (→ FAILED).
    Place {
        order_id: String,
        customer_id: String,
        lines: Vec<OrderLine>,
        currency: String,
        now_ms: u64,
        ttl_ms: u64,
        failure: Option<PlaceFailure>,
    },
    Pay {
        payment_ref: String,
        outcome: PaymentOutcome,
        amount_minor: i64,
        now_ms: u64,
    },
    /// Stock was deducted for a PAID order.
    Confirm,
    Cancel {
        reason: String,
    },
    /// The reservation deadline passed (no-op unless PENDING and past `expires_at`).
    Expire {
        now_ms: u64,
    },
    /// Record a refund for money that arrived but cannot be kept.
    RequestRefund {
        payment_ref: String,
        amount_minor: i64,
        reason: String,
    },
    Ship(ShipmentStep),
}

impl Order {
    pub fn is_created(&self) -> bool {
        self.status.is_some()
    }

    /// Status of a created order; `Failed` stands in for "not created" only in messages.
    pub fn status(&self) -> Status {
        self.status.unwrap_or(Status::Failed)
    }

    pub fn is_terminal(&self) -> bool {
        self.status.is_some_and(Status::is_terminal)
    }

    /// A cancelled order whose units had been sold and must go back to stock; done once
    /// `RefundRequested { reason: "cancelled" }` is recorded after the restore.
    pub fn needs_restore(&self) -> bool {
        self.status == Some(Status::Cancelled)
            && self.history.iter().any(|h| h.status == Status::Confirmed)
            && !self.refunds.iter().any(|r| r.reason == REFUND_CANCELLED)
    }
}

fn transition(o: &Order, action: &str) -> DomainError {
    DomainError::InvalidTransition {
        from: o.status(),
        action: action.to_owned(),
    }
}

/// Decides what a command on `o` means. Pure.
pub fn decide(o: &Order, cmd: &OrderCommand) -> DomainResult<Vec<OrderEvent>> {
    use OrderCommand::*;
    match cmd {
        Place {
            order_id,
            customer_id,
            lines,
            currency,
            now_ms,
            ttl_ms,
            failure,
        } => {
            if o.is_created() {
                return Err(transition(o, "be placed again"));
            }
            let total = order_total(lines)?;
            let created = OrderEvent::OrderCreated(OrderCreated {
                order_id: order_id.clone(),
                customer_id: customer_id.clone(),
                lines: lines.clone(),
                total_minor: total,
                currency: currency.clone(),
                created_at_ms: *now_ms,
                expires_at_ms: now_ms.saturating_add(*ttl_ms),
            });
            let outcome = match failure {
                None => OrderEvent::OrderPending(OrderPending {}),
                Some(f) => OrderEvent::OrderFailed(OrderFailed {
                    reason: f.reason.as_str().to_owned(),
                    sku: f.sku.clone(),
                    detail: f.detail.clone(),
                }),
            };
            Ok(vec![created, outcome])
        }
        Pay {
            payment_ref,
            outcome,
            amount_minor,
            now_ms,
        } => pay(o, payment_ref, *outcome, *amount_minor, *now_ms),
        Confirm => match o.status {
            Some(Status::Paid) => Ok(vec![OrderEvent::OrderConfirmed(OrderConfirmed {})]),
            Some(Status::Confirmed) => Ok(vec![]),
            _ => Err(transition(o, "be confirmed")),
        },
        Cancel { reason } => {
            super::validate_reason(reason)?;
            match o.status {
                Some(from @ (Status::Pending | Status::Confirmed)) => {
                    Ok(vec![OrderEvent::OrderCancelled(OrderCancelled {
                        reason: reason.clone(),
                        from,
                    })])
                }
                _ => Err(transition(o, "be cancelled")),
            }
        }
        Expire { now_ms } => {
            if o.status == Some(Status::Pending) && *now_ms >= o.expires_at_ms {
                Ok(vec![OrderEvent::OrderCancelled(OrderCancelled {
                    reason: "expired".into(),
                    from: Status::Pending,
                })])
            } else {
                Ok(vec![])
            }
        }
        RequestRefund {
            payment_ref,
            amount_minor,
            reason,
        } => request_refund(o, payment_ref, *amount_minor, reason),
        Ship(step) => ship(o, *step),
    }
}

/// The sum of the lines' prices; an error if it overflows.
fn order_total(lines: &[OrderLine]) -> DomainResult<i64> {
    let mut total: i64 = 0;
    for l in lines {
        let line_total = l.unit_price_minor.checked_mul(i64::from(l.qty));
        total = match line_total.and_then(|t| total.checked_add(t)) {
            Some(t) => t,
            None => return Err(DomainError::Invalid("order total overflows".into())),
        };
    }
    Ok(total)
}

/// [`OrderCommand::Pay`].
fn pay(
    o: &Order,
    payment_ref: &str,
    outcome: PaymentOutcome,
    amount_minor: i64,
    now_ms: u64,
) -> DomainResult<Vec<OrderEvent>> {
    super::validate_payment_ref(payment_ref)?;
    if !o.is_created() {
        return Err(transition(o, "be paid"));
    }
    // SPEC §1: the same ref with the same outcome and amount is a replay (nothing
    // recorded); anything else is a new attempt and follows the rules below, so a
    // success reusing a failed payment's ref cannot slip through as a "replay".
    let replay = o.payments.iter().any(|p| {
        p.payment_ref == payment_ref && p.outcome == outcome && p.amount_minor == amount_minor
    });
    if replay {
        return Ok(vec![]);
    }
    let payable = o.status == Some(Status::Pending) && now_ms < o.expires_at_ms;
    if !payable {
        return Err(DomainError::OrderNotPayable { status: o.status() });
    }
    if amount_minor != o.total_minor {
        return Err(DomainError::AmountMismatch {
            expected: o.total_minor,
            got: amount_minor,
        });
    }
    Ok(match outcome {
        PaymentOutcome::Succeeded => vec![OrderEvent::PaymentSucceeded(PaymentSucceeded {
            payment_ref: payment_ref.to_owned(),
            amount_minor,
        })],
        PaymentOutcome::Failed => vec![
            OrderEvent::PaymentFailed(PaymentFailed {
                payment_ref: payment_ref.to_owned(),
                amount_minor,
            }),
            OrderEvent::OrderCancelled(OrderCancelled {
                reason: "payment_failed".into(),
                from: Status::Pending,
            }),
        ],
    })
}

/// [`OrderCommand::RequestRefund`].
fn request_refund(
    o: &Order,
    payment_ref: &str,
    amount_minor: i64,
    reason: &str,
) -> DomainResult<Vec<OrderEvent>> {
    if !o.is_created() {
        return Err(transition(o, "record a refund"));
    }
    // The same refund again (a replayed late payment, a redriven cancellation)
    // records nothing; another attempt under the same ref is refunded too.
    let done = o.refunds.iter().any(|r| {
        r.payment_ref == payment_ref && r.amount_minor == amount_minor && r.reason == reason
    });
    if done
        || (reason == REFUND_CANCELLED && o.refunds.iter().any(|r| r.reason == REFUND_CANCELLED))
    {
        return Ok(vec![]);
    }
    Ok(vec![OrderEvent::RefundRequested(RefundRequested {
        payment_ref: payment_ref.to_owned(),
        amount_minor,
        reason: reason.to_owned(),
    })])
}

/// [`OrderCommand::Ship`]: each step only from the one before it.
fn ship(o: &Order, step: ShipmentStep) -> DomainResult<Vec<OrderEvent>> {
    match (step, o.status) {
        (ShipmentStep::Prepared, Some(Status::Confirmed)) => {
            Ok(vec![OrderEvent::ShipmentPrepared(ShipmentPrepared {})])
        }
        (ShipmentStep::Processed, Some(Status::ShipmentPrepared)) => {
            Ok(vec![OrderEvent::ShipmentProcessed(ShipmentProcessed {})])
        }
        (ShipmentStep::Fulfilled, Some(Status::ShipmentProcessed)) => {
            Ok(vec![OrderEvent::OrderFulfilled(OrderFulfilled {})])
        }
        (step, _) => Err(transition(
            o,
            &format!("record shipment step {step:?}").to_lowercase(),
        )),
    }
}

fn set_status(o: &mut Order, status: Status, at_ms: u64, reason: Option<String>) {
    o.status = Some(status);
    o.history.push(HistoryEntry {
        status,
        at_ms,
        reason,
    });
}

/// Applies an event. Total: it never fails. `at_ms` is the event envelope's time.
pub fn apply(o: &mut Order, ev: &OrderEvent, at_ms: u64) {
    use OrderEvent::*;
    o.version += 1;
    match ev {
        OrderCreated(e) => {
            o.id = e.order_id.clone();
            o.customer_id = e.customer_id.clone();
            o.lines = e.lines.clone();
            o.total_minor = e.total_minor;
            o.currency = e.currency.clone();
            o.created_at_ms = e.created_at_ms;
            o.expires_at_ms = e.expires_at_ms;
        }
        OrderPending(_) => set_status(o, Status::Pending, at_ms, None),
        OrderFailed(e) => {
            o.failure = Some((FailureReason::parse(&e.reason), e.sku.clone()));
            set_status(o, Status::Failed, at_ms, Some(e.reason.clone()));
        }
        PaymentSucceeded(e) => {
            o.payment_ref = Some(e.payment_ref.clone());
            o.payments.push(Payment {
                payment_ref: e.payment_ref.clone(),
                outcome: PaymentOutcome::Succeeded,
                amount_minor: e.amount_minor,
            });
            set_status(o, Status::Paid, at_ms, None);
        }
        PaymentFailed(e) => {
            o.payment_ref = Some(e.payment_ref.clone());
            o.payments.push(Payment {
                payment_ref: e.payment_ref.clone(),
                outcome: PaymentOutcome::Failed,
                amount_minor: e.amount_minor,
            });
        }
        OrderConfirmed(_) => set_status(o, Status::Confirmed, at_ms, None),
        OrderCancelled(e) => {
            o.cancel_reason = Some(e.reason.clone());
            set_status(o, Status::Cancelled, at_ms, Some(e.reason.clone()));
        }
        RefundRequested(e) => o.refunds.push(Refund {
            payment_ref: e.payment_ref.clone(),
            amount_minor: e.amount_minor,
            reason: e.reason.clone(),
        }),
        ShipmentPrepared(_) => set_status(o, Status::ShipmentPrepared, at_ms, None),
        ShipmentProcessed(_) => set_status(o, Status::ShipmentProcessed, at_ms, None),
        OrderFulfilled(_) => set_status(o, Status::Fulfilled, at_ms, None),
    }
}
