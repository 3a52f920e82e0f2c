//! Read models handed to callers (and serialised by the HTTP edge).

use serde::{Deserialize, Serialize};

use crate::domain::order::{FailureReason, HistoryEntry, Order, OrderLine, Status};

pub use crate::domain::sku::SkuView;

/// An order as callers see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderView {
    pub id: String,
    pub customer_id: String,
    pub status: Status,
    pub lines: Vec<OrderLine>,
    pub total_minor: i64,
    pub currency: String,
    /// Unix milliseconds.
    pub created_at: u64,
    /// The reservation deadline (meaningful while PENDING), unix milliseconds.
    pub expires_at: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_ref: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancel_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<FailureReason>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_sku: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub refunds_requested: Vec<String>,
    pub history: Vec<HistoryEntry>,
    pub version: u64,
}

impl From<&Order> for OrderView {
    fn from(o: &Order) -> Self {
        OrderView {
            id: o.id.clone(),
            customer_id: o.customer_id.clone(),
            status: o.status(),
            lines: o.lines.clone(),
            total_minor: o.total_minor,
            currency: o.currency.clone(),
            created_at: o.created_at_ms,
            expires_at: o.expires_at_ms,
            payment_ref: o.payment_ref.clone(),
            cancel_reason: o.cancel_reason.clone(),
            failure_reason: o.failure.as_ref().map(|f| f.0),
            failed_sku: o.failure.as_ref().map(|f| f.1.clone()),
            refunds_requested: o.refunds.iter().map(|r| r.payment_ref.clone()).collect(),
            history: o.history.clone(),
            version: o.version,
        }
    }
}
