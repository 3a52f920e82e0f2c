//! Reading request input, as extractors a handler names in its arguments: JSON bodies
//! ([`ApiJson`], [`ApiJsonOrDefault`]: size limit, media type, JSON with problem answers)
//! and path ids ([`OrderId`]); and the media-type rule every body is held to
//! ([`require_json`]).
//!
//! actix-web extracts a handler's arguments in order and answers the first error, so a
//! handler lists its caller's role guard (`caller::Allowed`) first: a caller with the
//! wrong role gets 403 before anything it sent is looked at.

use std::future::{ready, Future, Ready};
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header::{CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use actix_web::http::StatusCode;
use actix_web::{web, FromRequest, HttpRequest};
use futures::StreamExt;
use ordo_engine::domain::validate_order_id;
use serde::de::DeserializeOwned;

use super::error::{ApiError, ProblemType};
use super::AppState;

// ---------------------------------------------------------------------------------------
// Bodies.

/// A JSON body of type `T`: 413 over the configured size, 415 for another media type,
/// 400 when it is not JSON (or empty), 422 when it is JSON of the wrong shape.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

/// [`ApiJson`] for a body that may be left out: an empty (or blank) body is
/// `T::default()`.
#[derive(Debug)]
pub struct ApiJsonOrDefault<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for ApiJson<T> {
    type Error = ApiError;
    type Future = BodyFuture<Self>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        json_body(req, payload, None, ApiJson)
    }
}

impl<T: DeserializeOwned + Default + 'static> FromRequest for ApiJsonOrDefault<T> {
    type Error = ApiError;
    type Future = BodyFuture<Self>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        json_body(req, payload, Some(T::default), ApiJsonOrDefault)
    }
}

type BodyFuture<B> = Pin<Box<dyn Future<Output = Result<B, ApiError>>>>;

/// Reads the body of `req` and parses it as a `T` for `wrap`; a blank body is `blank()`
/// when given, else 400.
fn json_body<T: DeserializeOwned + 'static, B: 'static>(
    req: &HttpRequest,
    payload: &mut Payload,
    blank: Option<fn() -> T>,
    wrap: fn(T) -> B,
) -> BodyFuture<B> {
    let (req, payload) = (req.clone(), payload.take());
    Box::pin(async move {
        let body = read_body(&req, payload).await?;
        match blank {
            Some(blank) if body.iter().all(u8::is_ascii_whitespace) => Ok(wrap(blank())),
            _ => parse_json(&body).map(wrap),
        }
    })
}

/// Reads the body up to the configured limit (413 beyond it); refuses a media type other
/// than JSON (415, [`require_json`]).
async fn read_body(req: &HttpRequest, mut payload: Payload) -> Result<web::BytesMut, ApiError> {
    let limit = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| ApiError::new(ProblemType::Internal, "application state missing"))?
        .settings
        .max_body_bytes;
    let too_large = || {
        ApiError::new(
            ProblemType::PayloadTooLarge,
            format!("the body is larger than {limit} bytes"),
        )
    };
    if let Some(len) = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > limit as u64 {
            return Err(too_large());
        }
    }
    require_json(req)?;
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

/// SPEC §4 "Bodies must be `application/json`": 415 `invalid_request` for a request
/// that declares another media type (even with an empty body: an HTML form's POST), or
/// that carries a body (`Content-Length` over 0, or `Transfer-Encoding`) without saying
/// what it is (a page's `fetch` with a Blob body sends none). `application/json` with any
/// parameters (`; charset=utf-8`), in any case. Not `+json` types: the API reads plain
/// JSON and declares only `application/json` in its OpenAPI document.
///
/// A request with no body needs no `Content-Type` (cancel's body is optional). What keeps
/// a web page from sending such a request in loopback mode is the `Host`/`Origin` check
/// ([`super::loopback`]); with tokens, the page has no token.
pub fn require_json(req: &HttpRequest) -> Result<(), ApiError> {
    let refused = |what: String| {
        Err(
            ApiError::invalid(format!("the body must be application/json, not {what}"))
                .with_status(StatusCode::UNSUPPORTED_MEDIA_TYPE),
        )
    };
    let headers = req.headers();
    match headers.get(CONTENT_TYPE) {
        Some(ct) => {
            let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
            let essence = ct.split(';').next().unwrap_or("").trim();
            if essence == "application/json" {
                Ok(())
            } else {
                refused(format!("{essence:?}"))
            }
        }
        None => {
            let declared = headers.contains_key(TRANSFER_ENCODING)
                || headers.get(CONTENT_LENGTH).is_some_and(|v| {
                    v.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()) != Some(0)
                });
            if declared {
                refused("a body without Content-Type".into())
            } else {
                Ok(())
            }
        }
    }
}

/// Strict JSON: not JSON at all is 400; JSON of the wrong shape or types is 422.
fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("a JSON body is required"));
    }
    serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::invalid(e.to_string()),
        _ => ApiError::bad_request(format!("malformed JSON: {e}")),
    })
}

// ---------------------------------------------------------------------------------------
// Path ids.

/// The `{id}` of an order route, checked by the domain's rule (a ULID): anything else
/// cannot name an order, so it is 404 like an order that does not exist.
#[derive(Debug)]
pub struct OrderId(pub String);

impl FromRequest for OrderId {
    type Error = ApiError;
    type Future = Ready<Result<OrderId, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        // Percent-decoded as `web::Path` does.
        let id = match req.match_info().load::<IdSegment>() {
            Ok(IdSegment { id }) => id,
            Err(e) => return ready(Err(ApiError::invalid(format!("bad path: {e}")))),
        };
        ready(match validate_order_id(&id) {
            Ok(()) => Ok(OrderId(id)),
            Err(_) => Err(ApiError::not_found(format!("order {id} not found"))),
        })
    }
}

/// The `{id}` segment of a route.
#[derive(serde::Deserialize)]
struct IdSegment {
    id: String,
}
