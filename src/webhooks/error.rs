//! What can go wrong with a webhook subscription; the HTTP edge maps each kind to its
//! problem once (`http/error.rs`).

/// A subscription request refused, or the subscription store failing.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The request is not a valid subscription (url, secret, types, cursor).
    #[error("invalid subscription: {0}")]
    Invalid(String),
    /// The target is not allowed (private, loopback, link-local), or its name does not
    /// resolve.
    #[error("url: {0}")]
    Target(#[from] super::Refused),
    /// No subscription has this id.
    #[error("subscription {id} not found")]
    NotFound { id: String },
    /// The subscription could not be stored or read (logged where it is handled).
    #[error("the subscription store failed: {0}")]
    Store(String),
    /// The subscription's metrics could not be declared.
    #[error("the subscription's metrics failed: {0}")]
    Metrics(String),
}

impl WebhookError {
    pub(crate) fn invalid(detail: impl Into<String>) -> Self {
        WebhookError::Invalid(detail.into())
    }
}
