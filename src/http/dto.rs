//! The API's shapes as OpenAPI documents them: responses converted from the engine's read
//! models, request enums converted into the domain's. The domain and the engine know
//! nothing of OpenAPI; the JSON is the same as their serde form (a test pins it).

use ordo_engine::domain::order as domain;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// An order's status (SPEC §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
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

impl From<domain::Status> for Status {
    fn from(s: domain::Status) -> Self {
        use domain::Status as D;
        match s {
            D::Pending => Status::Pending,
            D::Failed => Status::Failed,
            D::Paid => Status::Paid,
            D::Confirmed => Status::Confirmed,
            D::ShipmentPrepared => Status::ShipmentPrepared,
            D::ShipmentProcessed => Status::ShipmentProcessed,
            D::Fulfilled => Status::Fulfilled,
            D::Cancelled => Status::Cancelled,
        }
    }
}

/// Why a placement failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    OutOfStock,
    LimitExceeded,
}

impl From<domain::FailureReason> for FailureReason {
    fn from(r: domain::FailureReason) -> Self {
        match r {
            domain::FailureReason::OutOfStock => FailureReason::OutOfStock,
            domain::FailureReason::LimitExceeded => FailureReason::LimitExceeded,
        }
    }
}

/// A line with its price captured at creation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OrderLine {
    pub sku: String,
    pub qty: u32,
    /// Minor units.
    pub unit_price_minor: i64,
}

/// One status change of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HistoryEntry {
    pub status: Status,
    /// Unix milliseconds.
    pub at_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// An order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
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
    /// Payment refs a refund was requested for.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub refunds_requested: Vec<String>,
    pub history: Vec<HistoryEntry>,
    pub version: u64,
}

impl From<&ordo_engine::OrderView> for OrderView {
    fn from(v: &ordo_engine::OrderView) -> Self {
        OrderView {
            id: v.id.clone(),
            customer_id: v.customer_id.clone(),
            status: v.status.into(),
            lines: v
                .lines
                .iter()
                .map(|l| OrderLine {
                    sku: l.sku.clone(),
                    qty: l.qty,
                    unit_price_minor: l.unit_price_minor,
                })
                .collect(),
            total_minor: v.total_minor,
            currency: v.currency.clone(),
            created_at: v.created_at,
            expires_at: v.expires_at,
            payment_ref: v.payment_ref.clone(),
            cancel_reason: v.cancel_reason.clone(),
            failure_reason: v.failure_reason.map(Into::into),
            failed_sku: v.failed_sku.clone(),
            refunds_requested: v.refunds_requested.clone(),
            history: v
                .history
                .iter()
                .map(|h| HistoryEntry {
                    status: h.status.into(),
                    at_ms: h.at_ms,
                    reason: h.reason.clone(),
                })
                .collect(),
            version: v.version,
        }
    }
}

/// A SKU with its stock counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SkuView {
    pub sku: String,
    pub name: String,
    /// Minor units.
    pub price_minor: i64,
    /// ISO 4217.
    pub currency: String,
    pub per_customer_limit: Option<u32>,
    pub available: i64,
    pub reserved: i64,
    pub sold: i64,
    pub version: u64,
}

impl From<&ordo_engine::SkuView> for SkuView {
    fn from(v: &ordo_engine::SkuView) -> Self {
        SkuView {
            sku: v.sku.clone(),
            name: v.name.clone(),
            price_minor: v.price_minor,
            currency: v.currency.clone(),
            per_customer_limit: v.per_customer_limit,
            available: v.available,
            reserved: v.reserved,
            sold: v.sold,
            version: v.version,
        }
    }
}

/// A payment outcome as reported by the payment provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentOutcome {
    Succeeded,
    Failed,
}

impl From<PaymentOutcome> for domain::PaymentOutcome {
    fn from(o: PaymentOutcome) -> Self {
        match o {
            PaymentOutcome::Succeeded => domain::PaymentOutcome::Succeeded,
            PaymentOutcome::Failed => domain::PaymentOutcome::Failed,
        }
    }
}

/// Shipment steps, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ShipmentStep {
    Prepared,
    Processed,
    Fulfilled,
}

impl From<ShipmentStep> for domain::ShipmentStep {
    fn from(s: ShipmentStep) -> Self {
        match s {
            ShipmentStep::Prepared => domain::ShipmentStep::Prepared,
            ShipmentStep::Processed => domain::ShipmentStep::Processed,
            ShipmentStep::Fulfilled => domain::ShipmentStep::Fulfilled,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The API's JSON is the engine's serde form: a DTO and the read model it comes
    /// from serialise alike.
    #[test]
    fn dtos_serialise_like_the_read_models_they_come_from() {
        let order = ordo_engine::OrderView {
            id: "01J".into(),
            customer_id: "ann".into(),
            status: domain::Status::Cancelled,
            lines: vec![domain::OrderLine {
                sku: "A".into(),
                qty: 2,
                unit_price_minor: 150,
            }],
            total_minor: 300,
            currency: "EUR".into(),
            created_at: 1,
            expires_at: 2,
            payment_ref: Some("p".into()),
            cancel_reason: Some("customer".into()),
            failure_reason: Some(domain::FailureReason::LimitExceeded),
            failed_sku: Some("A".into()),
            refunds_requested: vec!["p".into()],
            history: vec![
                domain::HistoryEntry {
                    status: domain::Status::Pending,
                    at_ms: 1,
                    reason: None,
                },
                domain::HistoryEntry {
                    status: domain::Status::ShipmentPrepared,
                    at_ms: 2,
                    reason: Some("x".into()),
                },
            ],
            version: 4,
        };
        assert_eq!(
            serde_json::to_value(OrderView::from(&order)).unwrap(),
            serde_json::to_value(&order).unwrap()
        );
        let sku = ordo_engine::SkuView {
            sku: "A".into(),
            name: "a".into(),
            price_minor: 1,
            currency: "EUR".into(),
            per_customer_limit: None,
            available: 1,
            reserved: 2,
            sold: 3,
            version: 4,
        };
        assert_eq!(
            serde_json::to_value(SkuView::from(&sku)).unwrap(),
            serde_json::to_value(&sku).unwrap()
        );
        for (dto, d) in [
            (PaymentOutcome::Succeeded, domain::PaymentOutcome::Succeeded),
            (PaymentOutcome::Failed, domain::PaymentOutcome::Failed),
        ] {
            assert_eq!(
                serde_json::to_value(dto).unwrap(),
                serde_json::to_value(d).unwrap()
            );
        }
        for (dto, d) in [
            (ShipmentStep::Prepared, domain::ShipmentStep::Prepared),
            (ShipmentStep::Processed, domain::ShipmentStep::Processed),
            (ShipmentStep::Fulfilled, domain::ShipmentStep::Fulfilled),
        ] {
            assert_eq!(
                serde_json::to_value(dto).unwrap(),
                serde_json::to_value(d).unwrap()
            );
        }
    }
}
