//! Reading request input: bodies (size limit, media type, JSON with problem answers)
//! and path ids.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest};
use futures::StreamExt;
use serde::de::DeserializeOwned;

use super::error::{ApiError, ProblemType};
use super::AppState;

// ---------------------------------------------------------------------------------------
// Body handling.

/// Reads the body up to the configured limit (413 beyond it).
pub(crate) async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::BytesMut, ApiError> {
    let too_large = || {
        ApiError::new(
            ProblemType::PayloadTooLarge,
            format!("the body is larger than {limit} bytes"),
        )
    };
    if let Some(len) = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > limit as u64 {
            return Err(too_large());
        }
    }
    if let Some(ct) = req.headers().get(actix_web::http::header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
        let essence = ct.split(';').next().unwrap_or("").trim();
        if !(essence == "application/json" || essence.ends_with("+json")) {
            return Err(ApiError::invalid(format!(
                "the body must be application/json, not {essence:?}"
            ))
            .with_status(StatusCode::UNSUPPORTED_MEDIA_TYPE));
        }
    }
    let mut buf = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::bad_request(format!("cannot read the body: {e}")))?;
        if buf.len() + chunk.len() > limit {
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// Strict JSON: not JSON at all is 400; JSON of the wrong shape or types is 422.
pub(crate) fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("a JSON body is required"));
    }
    serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::invalid(e.to_string()),
        _ => ApiError::bad_request(format!("malformed JSON: {e}")),
    })
}

pub(crate) async fn json_body<T: DeserializeOwned>(
    state: &AppState,
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<T, ApiError> {
    let body = read_body(req, payload, state.settings.max_body_bytes).await?;
    parse_json(&body)
}

/// Order ids are ULIDs; anything else cannot name an order.
pub(crate) fn check_order_id(id: &str) -> Result<(), ApiError> {
    if id.len() == 26 && ulid::Ulid::from_string(id).is_ok() {
        Ok(())
    } else {
        Err(ApiError::not_found(format!("order {id} not found")))
    }
}
