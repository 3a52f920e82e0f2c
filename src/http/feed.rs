//! The live event feed (`GET /v1/events/live`, Server-Sent Events) and the webhook
//! subscription endpoints.
//!
//! Live feed: a producer task per reader follows the log (never past the durable seq)
//! into a bounded channel that the response body drains. A reader whose channel stays
//! full for longer than the slow-reader timeout is cut off: it gets every event up to a seq, then a `cutoff`
//! event carrying that seq as `resume_after`, and the stream ends — the server never
//! buffers without bound. Reconnecting with `Last-Event-ID` (or `?after=`) resumes with
//! no gap and no repeat.
//!
//! Shutdown: the producers are tracked by the server's first shutdown stage and end
//! when it is triggered (the stream then simply ends; the reader resumes elsewhere or
//! later with `Last-Event-ID`), so an open feed never holds the server up.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use serde::Deserialize;
use utoipa::IntoParams;

use super::caller::{Admin, Allowed};
use super::error::{ApiError, Problem, ProblemType};
use super::input::ApiJson;
use super::AppState;
use crate::webhooks::{
    CreateSubscription, DeadLetter, RotateSecret, SecretView, SubscriptionView, Webhooks,
};

const PROBLEM: &str = "application/problem+json";

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LiveQuery {
    /// Start after this seq (default 0). `Last-Event-ID` takes precedence.
    pub after: Option<u64>,
}

/// Follow the log as Server-Sent Events (`id:` = seq, `event:` = type, `data:` = the
/// event's JSON); heartbeats as comments; a reader that falls behind its buffer gets a
/// final `cutoff` event with `resume_after`.
#[utoipa::path(get, path = "/v1/events/live", tag = "events", params(LiveQuery,
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this seq")),
    responses(
        (status = 200, description = "text/event-stream", body = String, content_type = "text/event-stream"),
        (status = 422, description = "invalid_request", body = Problem, content_type = PROBLEM),
    ),
    security(("bearer" = [])))]
pub async fn live_events(
    _: Allowed<Admin>,
    state: web::Data<AppState>,
    req: HttpRequest,
    q: web::Query<LiveQuery>,
) -> Result<HttpResponse, ApiError> {
    let engine = state.engine()?;
    let start = match req.headers().get("Last-Event-ID") {
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or_else(|| ApiError::invalid("Last-Event-ID must be a seq (a number)"))?,
        None => q.after.unwrap_or(0),
    };
    let cap = state.feed.buffer;
    let heartbeat = state.feed.heartbeat;
    let slow = state.feed.slow_timeout;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(cap);
    // u64::MAX: not cut off; otherwise the last seq queued before the cut.
    let cut = Arc::new(AtomicU64::new(u64::MAX));
    let cut_w = cut.clone();
    let st = state.clone();
    st.metrics.sse_readers.inc();
    actix_web::rt::spawn(state.shutdown.track(async move {
        follow(&st, &engine, tx, start, heartbeat, slow, &cut_w).await;
        if cut_w.load(Relaxed) != u64::MAX {
            st.metrics.sse_cutoffs.inc();
        }
        st.metrics.sse_readers.dec();
    }));
    let body = futures::stream::unfold((rx, cut, false), |(mut rx, cut, finished)| async move {
        if finished {
            return None;
        }
        match rx.recv().await {
            Some(b) => Some((Ok::<_, actix_web::Error>(b), (rx, cut, false))),
            None => {
                let at = cut.load(Relaxed);
                if at == u64::MAX {
                    return None;
                }
                let frame = format!(
                    "event: cutoff\ndata: {{\"reason\":\"slow consumer\",\"resume_after\":{at}}}\n\n"
                );
                Some((Ok(Bytes::from(frame)), (rx, cut, true)))
            }
        }
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body))
}

/// Follows the log from `start` into `tx` until the reader goes away or falls behind
/// (then `cut` holds the last seq it was given).
async fn follow(
    state: &AppState,
    engine: &ordo_engine::Engine,
    tx: tokio::sync::mpsc::Sender<Bytes>,
    start: u64,
    heartbeat: std::time::Duration,
    slow: std::time::Duration,
    cut: &AtomicU64,
) {
    let mut watch = engine.subscribe_durable();
    let mut cursor = start;
    loop {
        if state.shutdown.is_triggered() {
            return; // the server is shutting down: end the stream
        }
        let durable = engine.durable_seq();
        if cursor < durable {
            let e = engine.clone();
            let batch = match web::block(move || e.read_events(cursor, 256, None)).await {
                Ok(Ok(b)) => b,
                _ => return,
            };
            for r in batch {
                if r.seq > durable {
                    break;
                }
                let frame = format!(
                    "id: {}\nevent: {}\ndata: {}\n\n",
                    r.seq,
                    r.event_type,
                    crate::event_json(&r)
                );
                // A full buffer is fine for a moment (the reader is busy); full for
                // longer than `slow` means the reader cannot keep up: cut it off.
                let sent = tokio::select! {
                    sent = tx.send_timeout(Bytes::from(frame), slow) => sent,
                    _ = state.shutdown.triggered() => return,
                };
                match sent {
                    Ok(()) => cursor = r.seq,
                    Err(tokio::sync::mpsc::error::SendTimeoutError::Timeout(_)) => {
                        cut.store(cursor, Relaxed);
                        return;
                    }
                    Err(tokio::sync::mpsc::error::SendTimeoutError::Closed(_)) => return,
                }
            }
            continue;
        }
        tokio::select! {
            _ = watch.changed() => {}
            _ = tx.closed() => return,
            _ = state.shutdown.triggered() => return,
            _ = tokio::time::sleep(heartbeat) => {
                match tx.try_send(Bytes::from_static(b": heartbeat\n\n")) {
                    Ok(()) => {}
                    Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                        cut.store(cursor, Relaxed);
                        return;
                    }
                    Err(_) => return,
                }
            }
        }
    }
}

fn hooks(state: &AppState) -> Result<Arc<Webhooks>, ApiError> {
    state.engine()?;
    state.webhooks.get().cloned().ok_or_else(|| {
        ApiError::new(ProblemType::Unavailable, "webhooks are starting").retry_after(1)
    })
}

/// Subscribe a URL to events. The target must be public (not loopback, private or
/// link-local, by address or by what its name resolves to) unless the server runs with
/// `--webhook-allow-private`.
#[utoipa::path(post, path = "/v1/subscriptions", tag = "subscriptions",
    request_body = CreateSubscription,
    responses(
        (status = 201, description = "Created; `secret` only when it was generated", body = SubscriptionView),
        (status = 422, description = "invalid_request (also a target that is not allowed)", body = Problem, content_type = PROBLEM),
    ),
    security(("bearer" = [])))]
pub async fn create_subscription(
    _: Allowed<Admin>,
    state: web::Data<AppState>,
    ApiJson(body): ApiJson<CreateSubscription>,
) -> Result<HttpResponse, ApiError> {
    let view = hooks(&state)?.create(body).await?;
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/v1/subscriptions/{}", view.id)))
        .json(view))
}

/// Every subscription.
#[utoipa::path(get, path = "/v1/subscriptions", tag = "subscriptions",
    responses((status = 200, description = "Subscriptions", body = Vec<SubscriptionView>)),
    security(("bearer" = [])))]
pub async fn list_subscriptions(
    _: Allowed<Admin>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(hooks(&state)?.list()))
}

/// One subscription, with its cursor, lag and dead-letter count.
#[utoipa::path(get, path = "/v1/subscriptions/{id}", tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id")),
    responses(
        (status = 200, description = "The subscription", body = SubscriptionView),
        (status = 404, description = "not_found", body = Problem, content_type = PROBLEM),
    ),
    security(("bearer" = [])))]
pub async fn get_subscription(
    _: Allowed<Admin>,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(hooks(&state)?.get(&path)?))
}

/// Stop delivering and forget the subscription, its cursor and its dead letters.
#[utoipa::path(delete, path = "/v1/subscriptions/{id}", tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "not_found", body = Problem, content_type = PROBLEM),
    ),
    security(("bearer" = [])))]
pub async fn delete_subscription(
    _: Allowed<Admin>,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    hooks(&state)?.delete(&path)?;
    Ok(HttpResponse::build(StatusCode::NO_CONTENT).finish())
}

/// Replace the signing secret; the old one keeps signing (both signatures sent) for
/// `grace`.
#[utoipa::path(post, path = "/v1/subscriptions/{id}/secret", tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id")),
    request_body = RotateSecret,
    responses(
        (status = 200, description = "The new secret", body = SecretView),
        (status = 404, description = "not_found", body = Problem, content_type = PROBLEM),
        (status = 422, description = "invalid_request", body = Problem, content_type = PROBLEM),
    ),
    security(("bearer" = [])))]
pub async fn rotate_secret(
    _: Allowed<Admin>,
    state: web::Data<AppState>,
    path: web::Path<String>,
    ApiJson(body): ApiJson<RotateSecret>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(hooks(&state)?.rotate_secret(&path, body)?))
}

/// Events that failed every delivery attempt.
#[utoipa::path(get, path = "/v1/subscriptions/{id}/dead-letters", tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id")),
    responses(
        (status = 200, description = "Dead letters in seq order", body = Vec<DeadLetter>),
        (status = 404, description = "not_found", body = Problem, content_type = PROBLEM),
    ),
    security(("bearer" = [])))]
pub async fn dead_letters(
    _: Allowed<Admin>,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(hooks(&state)?.dead_letters(&path)?))
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Redriven {
    /// Dead letters queued for delivery again (in seq order, before new events).
    pub queued: usize,
}

/// Deliver the dead letters again, and resume a paused subscription (paused by a
/// `410 Gone`, or by `on_failure: "pause"`) from where it stopped.
#[utoipa::path(post, path = "/v1/subscriptions/{id}/dead-letters/redrive", tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id")),
    responses(
        (status = 200, description = "Queued", body = Redriven),
        (status = 404, description = "not_found", body = Problem, content_type = PROBLEM),
    ),
    security(("bearer" = [])))]
pub async fn redrive(
    _: Allowed<Admin>,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let queued = hooks(&state)?.redrive(&path)?;
    Ok(HttpResponse::Ok().json(Redriven { queued }))
}
