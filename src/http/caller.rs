//! Who is calling: the trace id of the request, the bearer token's role, and the scope
//! that rate limits and `Idempotency-Key`s are kept under.

use std::collections::HashMap;
use std::future::{ready, Ready};
use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::http::header::{HeaderMap, AUTHORIZATION};
use actix_web::http::Method;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use sha2::{Digest, Sha256};

use super::error::{ApiError, ProblemType};
use super::{input, AppState};
use crate::config::Role;

/// The request's trace id (32 lower-case hex digits, W3C trace-context), put into the
/// request's extensions by the outermost middleware.
#[derive(Debug, Clone)]
pub struct TraceId(pub Arc<str>);

/// Reads the trace id of a W3C `traceparent` header
/// (`00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`), or makes a new one.
pub fn trace_id(headers: &HeaderMap) -> Arc<str> {
    if let Some(tp) = headers.get("traceparent").and_then(|v| v.to_str().ok()) {
        let parts: Vec<&str> = tp.trim().split('-').collect();
        let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
        if parts.len() >= 4
            && hex(parts[0], 2)
            && parts[0] != "ff"
            && hex(parts[1], 32)
            && hex(parts[2], 16)
            && hex(parts[3], 2)
            && parts[1].bytes().any(|b| b != b'0')
            && parts[2].bytes().any(|b| b != b'0')
        {
            return Arc::from(parts[1].to_ascii_lowercase());
        }
    }
    Arc::from(format!("{:032x}", rand::random::<u128>()))
}

/// Bearer tokens, kept by their SHA-256 so a lookup does not compare secrets byte by byte.
pub struct Tokens {
    by_digest: HashMap<[u8; 32], (Role, Arc<str>)>,
    /// The scope of every caller when authentication is off.
    anonymous: Arc<str>,
}

impl Tokens {
    pub fn new(tokens: &HashMap<String, Role>) -> Tokens {
        let by_digest = tokens
            .iter()
            .map(|(t, r)| {
                let d: [u8; 32] = Sha256::digest(t.as_bytes()).into();
                // The scope names the token by a digest prefix, never by the token.
                let scope: String = d[..8].iter().map(|b| format!("{b:02x}")).collect();
                (d, (*r, Arc::from(format!("token:{scope}"))))
            })
            .collect();
        Tokens {
            by_digest,
            anonymous: Arc::from("anonymous"),
        }
    }

    pub fn enabled(&self) -> bool {
        !self.by_digest.is_empty()
    }

    fn lookup(&self, token: &str) -> Option<&(Role, Arc<str>)> {
        let d: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.by_digest.get(&d)
    }
}

/// An authenticated (or, without tokens, anonymous) caller that has passed the rate
/// limiter. Handlers get it through a room's guard, [`Allowed`].
#[derive(Debug, Clone)]
pub struct Caller {
    /// `None` when authentication is off: everything is allowed.
    pub role: Option<Role>,
    /// Rate-limit and idempotency scope: the token's digest, or `anonymous`.
    pub scope: Arc<str>,
    pub trace: Arc<str>,
}

impl Caller {
    /// Admin, or one of `roles`.
    fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        match self.role {
            None | Some(Role::Admin) => Ok(()),
            Some(r) if roles.contains(&r) => Ok(()),
            Some(r) => Err(ApiError::new(
                ProblemType::Forbidden,
                format!(
                    "a {} token may not do this; it needs {}",
                    r.as_str(),
                    std::iter::once("admin")
                        .chain(roles.iter().map(|r| r.as_str()))
                        .collect::<Vec<_>>()
                        .join(" or ")
                ),
            )),
        }
    }

    /// The caller of `req`: 401 without a known token, 429 when rate limited.
    fn authenticate(req: &HttpRequest) -> Result<Caller, ApiError> {
        let state = req
            .app_data::<web::Data<AppState>>()
            .ok_or_else(|| ApiError::new(ProblemType::Internal, "application state missing"))?;
        let trace = req
            .extensions()
            .get::<TraceId>()
            .map(|t| t.0.clone())
            .unwrap_or_else(|| trace_id(req.headers()));
        let (role, scope) = if state.tokens.enabled() {
            let header = req
                .headers()
                .get(AUTHORIZATION)
                .ok_or_else(|| {
                    ApiError::new(
                        ProblemType::Unauthorized,
                        "an Authorization: Bearer token is required",
                    )
                })?
                .to_str()
                .map_err(|_| {
                    ApiError::new(ProblemType::Unauthorized, "malformed Authorization header")
                })?;
            let token = header
                .strip_prefix("Bearer ")
                .or_else(|| header.strip_prefix("bearer "))
                .map(str::trim)
                .ok_or_else(|| {
                    ApiError::new(
                        ProblemType::Unauthorized,
                        "the Authorization header must be `Bearer <token>`",
                    )
                })?;
            let (role, scope) = state
                .tokens
                .lookup(token)
                .ok_or_else(|| ApiError::new(ProblemType::Unauthorized, "unknown token"))?;
            (Some(*role), scope.clone())
        } else {
            (None, state.tokens.anonymous.clone())
        };
        if let Some(rl) = &state.limiter {
            // Per token; without tokens, per peer address.
            let limit_key = match role {
                Some(_) => scope.clone(),
                None => {
                    let peer = req.peer_addr().map(|a| a.ip().to_string());
                    Arc::from(format!("peer:{}", peer.as_deref().unwrap_or("unknown")))
                }
            };
            if let Err(secs) = rl.check(&limit_key) {
                state.metrics.rate_limited.inc();
                return Err(ApiError::new(
                    ProblemType::RateLimited,
                    format!("too many requests; retry in {secs}s"),
                )
                .retry_after(secs));
            }
        }
        Ok(Caller { role, scope, trace })
    }
}

// ---------------------------------------------------------------------------------------
// Rooms: who may call a route.

/// The roles let into a route besides `admin`, who may do everything.
pub trait Room {
    const ROLES: &'static [Role];
}

/// `admin` only.
#[derive(Debug)]
pub enum Admin {}
/// `admin` or `client`.
#[derive(Debug)]
pub enum Client {}
/// `admin` or `payment`.
#[derive(Debug)]
pub enum Payment {}
/// Every role.
#[derive(Debug)]
pub enum AnyRole {}

impl Room for Admin {
    const ROLES: &'static [Role] = &[];
}
impl Room for Client {
    const ROLES: &'static [Role] = &[Role::Client];
}
impl Room for Payment {
    const ROLES: &'static [Role] = &[Role::Payment];
}
impl Room for AnyRole {
    const ROLES: &'static [Role] = &[Role::Client, Role::Payment];
}

/// A [`Caller`] let into room `R`. Extracting it answers 401 (no or an unknown token)
/// and 429 (rate limited), then 403 when the caller's role is not in `R`, then, for a
/// POST, PUT or PATCH, 415 when what it sends is not declared `application/json`
/// ([`input::require_json`]; here, so that routes that read no body are held to it
/// too). A handler lists it first, so a caller with the wrong role gets 403 before its
/// path or body is read.
#[derive(Debug)]
pub struct Allowed<R: Room> {
    caller: Caller,
    room: PhantomData<R>,
}

impl<R: Room> Deref for Allowed<R> {
    type Target = Caller;

    fn deref(&self) -> &Caller {
        &self.caller
    }
}

impl<R: Room> FromRequest for Allowed<R> {
    type Error = ApiError;
    type Future = Ready<Result<Allowed<R>, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Caller::authenticate(req).and_then(|caller| {
            caller.require(R::ROLES)?;
            if matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH) {
                input::require_json(req)?;
            }
            Ok(Allowed {
                caller,
                room: PhantomData,
            })
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn headers(tp: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            HeaderName::from_static("traceparent"),
            HeaderValue::from_str(tp).unwrap(),
        );
        h
    }

    #[test]
    fn traceparent_is_honoured_and_bad_ones_replaced() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            &*trace_id(&headers(good)),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "garbage",
        ] {
            let t = trace_id(&headers(bad));
            assert_eq!(t.len(), 32);
            assert_ne!(&*t, "4bf92f3577b34da6a3ce929d0e0e4736");
        }
    }
}
