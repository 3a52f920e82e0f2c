//! Subscriptions as the API sees them: what is created, shown, rotated and dead-lettered,
//! and the checks on what a client sends (the target's addresses are checked in
//! `targets`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{signing, OnFailure, WebhookError, EVENT_TYPES};

/// A subscription as the API shows it (the secret only once, when it was generated).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SubscriptionView {
    pub id: String,
    pub url: String,
    /// Event types delivered; empty means all.
    pub types: Vec<String>,
    pub on_failure: OnFailure,
    /// Delivery stopped: the receiver answered `410 Gone`, or an event failed every
    /// attempt with `on_failure: "pause"`. `POST …/dead-letters/redrive` resumes it.
    pub paused: bool,
    /// Unix milliseconds.
    pub created_at: u64,
    /// The last seq handled (delivered, skipped as another type, or dead-lettered).
    pub cursor: u64,
    /// How many seqs it is behind the log.
    pub lag: u64,
    pub dead_letters: u64,
    /// The generated secret: only in the answer that created the subscription, and only
    /// when the request named none. Never shown again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// `POST /v1/subscriptions`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSubscription {
    /// `http://` or `https://` URL the events are POSTed to.
    pub url: String,
    /// Event types to deliver (SPEC names); empty or absent: all.
    #[serde(default)]
    pub types: Vec<String>,
    /// `whsec_` + base64 of 24–64 random bytes; signs every delivery. Absent: one is
    /// generated and shown in the answer, once.
    #[serde(default)]
    #[schema(
        pattern = "^whsec_(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$",
        min_length = 38,
        max_length = 94
    )]
    pub secret: Option<String>,
    #[serde(default)]
    pub on_failure: OnFailure,
    /// Deliver events after this seq [default: only events stored from now on].
    #[serde(default)]
    pub after: Option<u64>,
}

/// `POST /v1/subscriptions/{id}/secret`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateSecret {
    /// The new secret (`whsec_` + base64 of 24–64 bytes); absent: one is generated.
    #[serde(default)]
    #[schema(
        pattern = "^whsec_(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$",
        min_length = 38,
        max_length = 94
    )]
    pub secret: Option<String>,
    /// How long the old secret keeps signing beside the new one, e.g. `24h`; `0s` stops
    /// it at once. At most 7 days.
    #[schema(example = "24h")]
    pub grace: String,
}

/// The answer to a rotation.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SecretView {
    /// The secret that signs from now on.
    pub secret: String,
}

/// An event that failed every attempt.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeadLetter {
    pub seq: u64,
    #[serde(rename = "type")]
    pub event_type: String,
    pub attempts: u32,
    pub last_error: String,
    /// Unix milliseconds.
    pub at: u64,
}

/// Checks everything but the target's addresses; the parsed url.
pub(super) fn validate(req: &CreateSubscription) -> Result<reqwest::Url, WebhookError> {
    let url =
        reqwest::Url::parse(&req.url).map_err(|e| WebhookError::invalid(format!("url: {e}")))?;
    match url.scheme() {
        "http" | "https" => {}
        other => {
            return Err(WebhookError::invalid(format!(
                "url must be http:// or https://, not {other}://"
            )))
        }
    }
    if url.host_str().is_none_or(str::is_empty) || req.url.len() > 2048 {
        return Err(WebhookError::invalid(
            "url needs a host and at most 2048 characters",
        ));
    }
    if let Some(secret) = &req.secret {
        signing::check_secret(secret)?;
    }
    if req.types.len() > EVENT_TYPES.len() {
        return Err(WebhookError::invalid("too many types"));
    }
    for t in &req.types {
        if !EVENT_TYPES.contains(&t.as_str()) {
            return Err(WebhookError::invalid(format!(
                "unknown event type `{t}`; known: {}",
                EVENT_TYPES.join(", ")
            )));
        }
    }
    Ok(url)
}

/// A rotation's grace period: a duration like `24h`, at most [`signing::MAX_GRACE`].
pub(super) fn parse_grace(grace: &str) -> Result<Duration, WebhookError> {
    let g = humantime::parse_duration(grace.trim()).map_err(|e| {
        WebhookError::invalid(format!("grace: {grace:?} is not a duration like 24h: {e}"))
    })?;
    if g > signing::MAX_GRACE {
        return Err(WebhookError::invalid("grace must be at most 7 days"));
    }
    Ok(g)
}
