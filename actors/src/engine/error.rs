//! The engine's error type: what a caller of the embedded API (or the HTTP edge) sees.

use crate::domain::DomainError;
use crate::engine::view::OrderView;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The command was refused by the domain rules; nothing changed.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The order was stored as FAILED (a line was out of stock or over its limit).
    #[error("order {} failed: {reason}", order.id)]
    OrderFailed {
        order: Box<OrderView>,
        reason: DomainError,
    },
    /// A payment arrived for an order that can no longer be paid; a refund was recorded
    /// when money was taken.
    #[error("order {} is {} and can no longer be paid", order.id, order.status)]
    NotPayable { order: Box<OrderView> },
    /// No SKU of this code is registered.
    #[error("unknown sku `{sku}`")]
    SkuNotFound { sku: String },
    /// No order of this id exists.
    #[error("order {id} not found")]
    OrderNotFound { id: String },
    /// The SKU's mailbox is full; retry after a moment.
    #[error("sku `{sku}` is overloaded; retry later")]
    Overloaded { sku: String },
    /// Storage failed. After a failed journal write the engine refuses all changes.
    #[error("storage: {0}")]
    Storage(#[from] ordo_storage::StorageError),
    /// A stored event does not decode.
    #[error("stored event does not decode: {0}")]
    Decode(String),
    /// The engine's metrics could not be declared or registered (start-up only).
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The engine is shutting down or its actors are gone.
    #[error("engine unavailable: {0}")]
    Unavailable(String),
}

pub type EngineResult<T> = Result<T, EngineError>;
