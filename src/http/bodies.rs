//! Request and response bodies of the v1 endpoints (what OpenAPI documents beside
//! the DTOs in `dto`). Unknown fields are refused; types are checked by serde.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::dto::{self, SkuView};

// ---------------------------------------------------------------------------------------
// Request and response bodies. Unknown fields are refused; types are checked by serde.

/// Create a SKU (with its initial `stock`) or update its catalogue data.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutSkuBody {
    pub name: String,
    /// Minor units (cents).
    pub price_minor: i64,
    /// ISO 4217, e.g. `EUR`.
    pub currency: String,
    #[serde(default)]
    pub per_customer_limit: Option<u32>,
    /// Initial stock; counts only when the SKU is created.
    #[serde(default)]
    pub stock: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StockAdjustmentBody {
    /// Units to add (positive) or remove (negative).
    pub delta: i64,
    pub reason: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LineBody {
    pub sku: String,
    /// 1–10,000.
    pub qty: u32,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrderBody {
    pub customer_id: String,
    /// 1–100 lines, no SKU twice.
    pub lines: Vec<LineBody>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentBody {
    /// The payment provider's reference; a payment is idempotent by it.
    pub payment_ref: String,
    pub outcome: dto::PaymentOutcome,
    /// Must equal the order's `total_minor`.
    pub amount_minor: i64,
}

#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelBody {
    /// Defaults to `customer`.
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShipmentBody {
    pub step: dto::ShipmentStep,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SkuPage {
    pub skus: Vec<SkuView>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// One stored event in its JSON form (SPEC §1).
#[derive(Debug, Serialize, ToSchema)]
pub struct EventJson {
    pub seq: u64,
    pub stream: String,
    pub version: u64,
    #[serde(rename = "type")]
    pub event_type: String,
    pub schema: u16,
    /// Unix milliseconds.
    pub at: u64,
    pub trace_id: Option<String>,
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventPage {
    #[schema(value_type = Vec<EventJson>)]
    pub events: Vec<serde_json::Value>,
    /// Pass as `after` for the next page.
    pub next: u64,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SkuPageQuery {
    /// Only SKUs after this code.
    pub after: Option<String>,
    /// 1–1000, default 100.
    pub limit: Option<usize>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventPageQuery {
    /// Only events with a greater seq (default 0).
    pub after: Option<u64>,
    /// 1–1000, default 100.
    pub limit: Option<usize>,
    /// Only this stream, `sku/{sku}` or `order/{id}`.
    pub stream: Option<String>,
    /// Only these event types (comma-separated SPEC names).
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub event_type: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
}
