//! The one table from errors to HTTP: every problem `type` code of SPEC §4, its status
//! and title live here and nowhere else. Bodies are `application/problem+json`
//! (RFC 9457) with the stable code in `type`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use ordo_engine::domain::DomainError;
use ordo_engine::EngineError;

use super::dto::OrderView;
use serde::Serialize;

/// The stable problem codes clients match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProblemType {
    InvalidRequest,
    UnknownSku,
    NotFound,
    OutOfStock,
    LimitExceeded,
    InsufficientStock,
    InvalidTransition,
    OrderNotPayable,
    AmountMismatch,
    IdempotencyMismatch,
    Unauthorized,
    Forbidden,
    RateLimited,
    Overloaded,
    PayloadTooLarge,
    /// Not ready yet (recovering) or stopped after a failed write.
    Unavailable,
    Internal,
}

impl ProblemType {
    /// Status and title of each code: the one place that decides them.
    pub fn status_and_title(self) -> (StatusCode, &'static str) {
        use ProblemType::*;
        match self {
            InvalidRequest => (StatusCode::UNPROCESSABLE_ENTITY, "Invalid request"),
            UnknownSku => (StatusCode::UNPROCESSABLE_ENTITY, "Unknown SKU"),
            NotFound => (StatusCode::NOT_FOUND, "Not found"),
            OutOfStock => (StatusCode::CONFLICT, "Out of stock"),
            LimitExceeded => (StatusCode::CONFLICT, "Per-customer limit exceeded"),
            InsufficientStock => (StatusCode::CONFLICT, "Insufficient stock"),
            InvalidTransition => (StatusCode::CONFLICT, "Invalid transition"),
            OrderNotPayable => (StatusCode::CONFLICT, "Order not payable"),
            AmountMismatch => (StatusCode::UNPROCESSABLE_ENTITY, "Amount mismatch"),
            IdempotencyMismatch => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "Idempotency key reused with another request",
            ),
            Unauthorized => (StatusCode::UNAUTHORIZED, "Unauthorized"),
            Forbidden => (StatusCode::FORBIDDEN, "Forbidden"),
            RateLimited => (StatusCode::TOO_MANY_REQUESTS, "Rate limited"),
            Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "Overloaded"),
            PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "Payload too large"),
            Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "Unavailable"),
            Internal => (StatusCode::INTERNAL_SERVER_ERROR, "Internal error"),
        }
    }
}

/// A problem body (RFC 9457) as sent.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// The stable code, e.g. `out_of_stock`.
    #[serde(rename = "type")]
    pub kind: ProblemType,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    /// The order a FAILED placement or a refused payment is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<Box<OrderView>>,
    /// The SKU the problem is about, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
}

/// An error answered as a problem.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind:?}: {detail}")]
pub struct ApiError {
    pub kind: ProblemType,
    pub detail: String,
    pub order: Option<Box<OrderView>>,
    pub sku: Option<String>,
    /// Seconds, for 429 and 503.
    pub retry_after: Option<u64>,
    /// Overrides the code's usual status (400 for malformed JSON, 405, 415).
    pub status: Option<StatusCode>,
}

impl ApiError {
    pub fn new(kind: ProblemType, detail: impl Into<String>) -> Self {
        ApiError {
            kind,
            detail: detail.into(),
            order: None,
            sku: None,
            retry_after: None,
            status: None,
        }
    }

    pub fn invalid(detail: impl Into<String>) -> Self {
        Self::new(ProblemType::InvalidRequest, detail)
    }

    /// Malformed input that is not even JSON (or the wrong media type): 400.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::invalid(detail).with_status(StatusCode::BAD_REQUEST)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(ProblemType::NotFound, detail)
    }

    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = Some(status);
        self
    }

    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    pub fn http_status(&self) -> StatusCode {
        self.status
            .unwrap_or_else(|| self.kind.status_and_title().0)
    }

    pub fn problem(&self) -> Problem {
        let (status, title) = self.kind.status_and_title();
        Problem {
            kind: self.kind,
            title,
            status: self.status.unwrap_or(status).as_u16(),
            detail: self.detail.clone(),
            order: self.order.clone(),
            sku: self.sku.clone(),
        }
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        use DomainError::*;
        let detail = e.to_string();
        match e {
            Invalid(_) | CurrencyMismatch { .. } => ApiError::invalid(detail),
            UnknownSku(sku) => ApiError {
                sku: Some(sku),
                ..ApiError::new(ProblemType::UnknownSku, detail)
            },
            OutOfStock { sku, .. } => ApiError {
                sku: Some(sku),
                ..ApiError::new(ProblemType::OutOfStock, detail)
            },
            LimitExceeded { sku, .. } => ApiError {
                sku: Some(sku),
                ..ApiError::new(ProblemType::LimitExceeded, detail)
            },
            InsufficientStock { sku, .. } => ApiError {
                sku: Some(sku),
                ..ApiError::new(ProblemType::InsufficientStock, detail)
            },
            InvalidTransition { .. } => ApiError::new(ProblemType::InvalidTransition, detail),
            OrderNotPayable { .. } => ApiError::new(ProblemType::OrderNotPayable, detail),
            AmountMismatch { .. } => ApiError::new(ProblemType::AmountMismatch, detail),
        }
    }
}

impl From<crate::webhooks::WebhookError> for ApiError {
    fn from(e: crate::webhooks::WebhookError) -> Self {
        use crate::webhooks::WebhookError as W;
        match e {
            W::Invalid(detail) => ApiError::invalid(detail),
            W::Target(refused) => ApiError::invalid(format!("url: {refused}")),
            W::NotFound { id } => ApiError::not_found(format!("subscription {id} not found")),
            W::Store(detail) => {
                tracing::error!(error = %detail, "webhook store");
                ApiError::new(
                    ProblemType::Internal,
                    "the subscription store failed; see the server log",
                )
            }
            W::Metrics(_) => {
                ApiError::new(ProblemType::Internal, "the subscription's metrics failed")
            }
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        ApiError::from(&e)
    }
}

impl From<&EngineError> for ApiError {
    fn from(e: &EngineError) -> Self {
        match e {
            EngineError::Domain(d) => d.clone().into(),
            EngineError::OrderFailed { order, reason } => ApiError {
                order: Some(Box::new(OrderView::from(&**order))),
                ..reason.clone().into()
            },
            EngineError::NotPayable { order } => ApiError {
                detail: format!(
                    "order {} is {} and can no longer be paid; a refund was requested",
                    order.id, order.status
                ),
                order: Some(Box::new(OrderView::from(&**order))),
                ..ApiError::new(ProblemType::OrderNotPayable, "")
            },
            EngineError::SkuNotFound { sku } => ApiError {
                sku: Some(sku.clone()),
                ..ApiError::new(ProblemType::UnknownSku, format!("unknown sku `{sku}`"))
                    .with_status(StatusCode::NOT_FOUND)
            },
            EngineError::OrderNotFound { id } => {
                ApiError::not_found(format!("order {id} not found"))
            }
            EngineError::Overloaded { sku } => ApiError {
                sku: Some(sku.clone()),
                ..ApiError::new(
                    ProblemType::Overloaded,
                    format!("sku `{sku}` has more work queued than it takes; retry shortly"),
                )
                .retry_after(1)
            },
            EngineError::Storage(s) => match s {
                ordo_storage::StorageError::JournalStopped(_)
                | ordo_storage::StorageError::JournalClosed => {
                    ApiError::new(ProblemType::Unavailable, s.to_string())
                }
                other => {
                    tracing::error!(error = %other, "storage error");
                    ApiError::new(ProblemType::Internal, "storage error; see the server log")
                }
            },
            EngineError::Decode(d) => {
                tracing::error!(error = %d, "stored event does not decode");
                ApiError::new(ProblemType::Internal, "a stored event does not decode")
            }
            EngineError::Metrics(e) => {
                tracing::error!(error = %e, "engine metrics");
                ApiError::new(ProblemType::Internal, "the engine's metrics failed")
            }
            EngineError::Unavailable(d) => {
                ApiError::new(ProblemType::Unavailable, d.clone()).retry_after(1)
            }
        }
    }
}

pub const PROBLEM_JSON: &str = "application/problem+json";

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.http_status()
    }

    fn error_response(&self) -> HttpResponse {
        let mut b = HttpResponse::build(self.http_status());
        b.content_type(PROBLEM_JSON);
        if let Some(s) = self.retry_after {
            b.insert_header(("Retry-After", s.to_string()));
        }
        if self.kind == ProblemType::Unauthorized {
            b.insert_header(("WWW-Authenticate", "Bearer"));
        }
        let body = serde_json::to_vec(&self.problem()).unwrap_or_else(|_| b"{}".to_vec());
        b.body(body)
    }
}
