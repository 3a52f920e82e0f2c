//! The v1 endpoints (SPEC §4), their request bodies, and the one route table the router
//! and the OpenAPI document are both built from.

use std::sync::Arc;

use actix_web::http::{Method, StatusCode};
use actix_web::{web, FromRequest, Handler, HttpRequest, HttpResponse, Responder};
use futures::StreamExt;
use ordo_actors::domain::LineRequest;
use ordo_actors::{
    Engine, EngineError, Idempotency, OrderView, Outcome, PaymentOutcome, PlaceOrder, ShipmentStep,
    SkuView, UpsertSku,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::answer::Answer;
use super::caller::Caller;
use super::error::{ApiError, Problem, ProblemType};
use super::idempotency::{self, placed_answer};
use super::AppState;
use crate::config::Role;

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
    pub outcome: PaymentOutcome,
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
    pub step: ShipmentStep,
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

// ---------------------------------------------------------------------------------------
// Body handling.

/// Reads the body up to the configured limit (413 beyond it).
async fn read_body(
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
fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
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
fn check_order_id(id: &str) -> Result<(), ApiError> {
    if id.len() == 26 && ulid::Ulid::from_string(id).is_ok() {
        Ok(())
    } else {
        Err(ApiError::not_found(format!("order {id} not found")))
    }
}

// ---------------------------------------------------------------------------------------
// Mutations: run on a spawned task (a client hanging up cannot cut them in half), once
// per Idempotency-Key when one is given.

/// A change requested over HTTP, with everything it needs.
#[derive(Debug)]
pub enum Op {
    Upsert(UpsertSku),
    Adjust {
        sku: String,
        delta: i64,
        reason: String,
    },
    Place(PlaceOrder),
    Pay {
        order_id: String,
        payment_ref: String,
        outcome: PaymentOutcome,
        amount_minor: i64,
    },
    Cancel {
        order_id: String,
        reason: String,
    },
    Ship {
        order_id: String,
        step: ShipmentStep,
    },
}

impl Op {
    /// How this operation's outcome becomes an answer.
    pub fn kind(&self) -> AnswerKind {
        match self {
            Op::Upsert(_) => AnswerKind::Upsert,
            Op::Adjust { .. } => AnswerKind::Sku,
            Op::Place(_) => AnswerKind::Place,
            Op::Pay { .. } | Op::Cancel { .. } | Op::Ship { .. } => AnswerKind::Order,
        }
    }
}

/// The shape of an operation's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerKind {
    /// 201 with `Location` when created, else 200.
    Upsert,
    /// 200 with the SKU.
    Sku,
    /// 201 with the PENDING order, or 409 with the FAILED one.
    Place,
    /// 200 with the order.
    Order,
}

/// The answer an operation's outcome gets. One function, so the answer stored under an
/// Idempotency-Key and the one sent are the same bytes.
pub fn answer_of(kind: AnswerKind, outcome: Outcome<'_>) -> Answer {
    match (kind, outcome) {
        (_, Outcome::Sku { result: Err(e), .. }) | (_, Outcome::Order(Err(e))) => match (kind, e) {
            (AnswerKind::Place, EngineError::OrderFailed { order, .. }) => {
                placed_answer((**order).clone())
            }
            _ => Answer::error(&ApiError::from(e)),
        },
        (
            AnswerKind::Upsert,
            Outcome::Sku {
                result: Ok(view),
                created: true,
            },
        ) => {
            let loc = format!("/v1/skus/{}", view.sku);
            Answer::json(StatusCode::CREATED, view).with_location(loc)
        }
        (
            _,
            Outcome::Sku {
                result: Ok(view), ..
            },
        ) => Answer::json(StatusCode::OK, view),
        (AnswerKind::Place, Outcome::Order(Ok(view))) => placed_answer(view.clone()),
        (_, Outcome::Order(Ok(view))) => Answer::json(StatusCode::OK, view),
        // Only stored (as "applied"), never sent: see `idempotency`.
        (_, Outcome::Applied { order_id }) => Answer::error(&ApiError::new(
            ProblemType::Internal,
            format!("order {order_id}: the command is applied, its answer is not ready"),
        )),
    }
}

/// Runs one change against the engine; with `idem`, its answer is kept under the key in
/// the same append as its events.
pub async fn execute(
    engine: &Engine,
    op: Op,
    idem: Option<Idempotency>,
    trace: Arc<str>,
) -> Answer {
    let t = Some(trace);
    let kind = op.kind();
    match op {
        Op::Upsert(req) => match engine.upsert_sku_with(req, t, idem).await {
            Ok((view, created)) => answer_of(
                kind,
                Outcome::Sku {
                    result: Ok(&view),
                    created,
                },
            ),
            Err(e) => answer_of(
                kind,
                Outcome::Sku {
                    result: Err(&e),
                    created: false,
                },
            ),
        },
        Op::Adjust { sku, delta, reason } => {
            let r = engine
                .adjust_stock_with(&sku, delta, &reason, t, idem)
                .await;
            answer_of(
                kind,
                Outcome::Sku {
                    result: r.as_ref(),
                    created: false,
                },
            )
        }
        Op::Place(req) => {
            let r = engine.place_order_with(req, t, idem).await;
            answer_of(kind, Outcome::Order(r.as_ref()))
        }
        Op::Pay {
            order_id,
            payment_ref,
            outcome,
            amount_minor,
        } => {
            let r = engine
                .pay_with(&order_id, &payment_ref, outcome, amount_minor, t, idem)
                .await;
            answer_of(kind, Outcome::Order(r.as_ref()))
        }
        Op::Cancel { order_id, reason } => {
            let r = engine.cancel_with(&order_id, &reason, t, idem).await;
            answer_of(kind, Outcome::Order(r.as_ref()))
        }
        Op::Ship { order_id, step } => {
            let r = engine.ship_with(&order_id, step, t, idem).await;
            answer_of(kind, Outcome::Order(r.as_ref()))
        }
    }
}

/// Runs `op` (idempotently when the request carries an Idempotency-Key) and answers.
async fn mutate<B: Serialize>(
    state: web::Data<AppState>,
    req: &HttpRequest,
    caller: Caller,
    body: &B,
    op: Op,
) -> Result<HttpResponse, ApiError> {
    let engine = state.engine()?;
    let key = match req.headers().get("Idempotency-Key") {
        None => None,
        Some(v) => {
            let k = v
                .to_str()
                .map_err(|_| ApiError::invalid("Idempotency-Key must be visible ASCII"))?;
            idempotency::validate_key(k)?;
            Some(k.to_owned())
        }
    };
    let trace = caller.trace.clone();
    let (answer, replayed) = match key {
        None => {
            let task =
                actix_web::rt::spawn(
                    async move { (execute(&engine, op, None, trace).await, false) },
                );
            task.await
        }
        Some(key) => {
            let canonical = serde_json::to_vec(body).unwrap_or_default();
            let fp = idempotency::fingerprint(req.method().as_str(), req.path(), &canonical);
            let task = actix_web::rt::spawn(idempotency::run(
                state.into_inner(),
                engine,
                caller.scope.clone(),
                key,
                fp,
                op,
                trace,
            ));
            task.await
        }
    }
    .map_err(|e| ApiError::new(ProblemType::Internal, format!("request task failed: {e}")))?;
    Ok(answer.into_response(replayed))
}

// ---------------------------------------------------------------------------------------
// Handlers.

const PROBLEM: &str = "application/problem+json";

/// Create or update a SKU.
#[utoipa::path(put, path = "/v1/skus/{sku}", tag = "skus",
    params(("sku" = String, Path, description = "1–64 characters of [A-Za-z0-9._:-]")),
    request_body = PutSkuBody,
    responses(
        (status = 201, description = "Created", body = SkuView),
        (status = 200, description = "Updated", body = SkuView),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = PROBLEM),
        (status = 422, description = "invalid_request", body = Problem, content_type = PROBLEM),
    ),
    security(("bearer" = [])))]
pub async fn put_sku(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[])?;
    let sku = path.into_inner();
    let body: PutSkuBody = json_body(&state, &req, payload).await?;
    let op = Op::Upsert(UpsertSku {
        sku,
        name: body.name.clone(),
        price_minor: body.price_minor,
        currency: body.currency.clone(),
        per_customer_limit: body.per_customer_limit,
        stock: body.stock.unwrap_or(0),
    });
    mutate(state, &req, caller, &body, op).await
}

/// A SKU with its counters.
#[utoipa::path(get, path = "/v1/skus/{sku}", tag = "skus",
    params(("sku" = String, Path, description = "SKU code")),
    responses(
        (status = 200, description = "The SKU", body = SkuView),
        (status = 404, description = "unknown_sku", body = Problem, content_type = PROBLEM),
    ),
    security(("bearer" = [])))]
pub async fn get_sku(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Client, Role::Payment])?;
    let view = state.engine()?.get_sku(&path).await?;
    Ok(HttpResponse::Ok().json(view))
}

/// SKUs in code order.
#[utoipa::path(get, path = "/v1/skus", tag = "skus", params(SkuPageQuery),
    responses((status = 200, description = "A page of SKUs", body = SkuPage)),
    security(("bearer" = [])))]
pub async fn list_skus(
    state: web::Data<AppState>,
    caller: Caller,
    q: web::Query<SkuPageQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Client, Role::Payment])?;
    let limit = page_limit(q.limit)?;
    let skus = state
        .engine()?
        .list_skus(q.after.as_deref(), limit + 1)
        .await?;
    let (skus, next) = if skus.len() > limit {
        let mut skus = skus;
        skus.truncate(limit);
        let next = skus.last().map(|s| s.sku.clone());
        (skus, next)
    } else {
        (skus, None)
    };
    Ok(HttpResponse::Ok().json(SkuPage { skus, next }))
}

fn page_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit {
        None => Ok(100),
        Some(n @ 1..=1000) => Ok(n),
        Some(n) => Err(ApiError::invalid(format!("limit must be 1-1000, got {n}"))),
    }
}

/// Add or remove stock.
#[utoipa::path(post, path = "/v1/skus/{sku}/stock-adjustments", tag = "skus",
    params(("sku" = String, Path, description = "SKU code")),
    request_body = StockAdjustmentBody,
    responses(
        (status = 200, description = "The SKU after the adjustment", body = SkuView),
        (status = 404, description = "unknown_sku", body = Problem, content_type = PROBLEM),
        (status = 409, description = "insufficient_stock", body = Problem, content_type = PROBLEM),
        (status = 422, description = "invalid_request", body = Problem, content_type = PROBLEM),
    ),
    security(("bearer" = [])))]
pub async fn adjust_stock(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[])?;
    let body: StockAdjustmentBody = json_body(&state, &req, payload).await?;
    if body.reason.is_empty() || body.reason.len() > 256 {
        return Err(ApiError::invalid("reason must be 1-256 characters"));
    }
    if body.delta == 0 {
        return Err(ApiError::invalid("delta must not be 0"));
    }
    let op = Op::Adjust {
        sku: path.into_inner(),
        delta: body.delta,
        reason: body.reason.clone(),
    };
    mutate(state, &req, caller, &body, op).await
}

/// Place an order: every line is reserved, or none.
#[utoipa::path(post, path = "/v1/orders", tag = "orders",
    request_body = CreateOrderBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays return the first answer; ≤ 255 characters")),
    responses(
        (status = 201, description = "PENDING: every line is reserved until expires_at", body = OrderView),
        (status = 409, description = "out_of_stock or limit_exceeded; the order is stored as FAILED and is in the body", body = Problem, content_type = PROBLEM),
        (status = 422, description = "invalid_request, unknown_sku or idempotency_mismatch", body = Problem, content_type = PROBLEM),
        (status = 503, description = "overloaded; retry after Retry-After seconds", body = Problem, content_type = PROBLEM),
    ),
    security(("bearer" = [])))]
pub async fn create_order(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Client])?;
    let body: CreateOrderBody = json_body(&state, &req, payload).await?;
    let place = PlaceOrder {
        customer_id: body.customer_id.clone(),
        lines: body
            .lines
            .iter()
            .map(|l| LineRequest {
                sku: l.sku.clone(),
                qty: l.qty,
            })
            .collect(),
    };
    // Shape errors are answered here, before anything is stored under a key.
    ordo_actors::domain::validate_lines(&place.customer_id, &place.lines)?;
    mutate(state, &req, caller, &body, Op::Place(place)).await
}

/// An order with its history.
#[utoipa::path(get, path = "/v1/orders/{id}", tag = "orders",
    params(("id" = String, Path, description = "Order id (ULID)")),
    responses(
        (status = 200, description = "The order", body = OrderView),
        (status = 404, description = "not_found", body = Problem, content_type = PROBLEM),
    ),
    security(("bearer" = [])))]
pub async fn get_order(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Client, Role::Payment])?;
    check_order_id(&path)?;
    let view = state.engine()?.get_order(&path).await?;
    Ok(HttpResponse::Ok().json(view))
}

/// Record a payment. Success confirms the order (stock reserved → sold).
#[utoipa::path(post, path = "/v1/orders/{id}/payments", tag = "orders",
    params(("id" = String, Path, description = "Order id")),
    request_body = PaymentBody,
    responses(
        (status = 200, description = "CONFIRMED (or CANCELLED after a failed payment)", body = OrderView),
        (status = 404, description = "not_found", body = Problem, content_type = PROBLEM),
        (status = 409, description = "order_not_payable (a refund was recorded)", body = Problem, content_type = PROBLEM),
        (status = 422, description = "amount_mismatch or invalid_request", body = Problem, content_type = PROBLEM),
    ),
    security(("bearer" = [])))]
pub async fn pay(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Payment])?;
    check_order_id(&path)?;
    let body: PaymentBody = json_body(&state, &req, payload).await?;
    if body.payment_ref.is_empty()
        || body.payment_ref.len() > 255
        || !body.payment_ref.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(ApiError::invalid(
            "payment_ref must be 1-255 visible ASCII characters",
        ));
    }
    let op = Op::Pay {
        order_id: path.into_inner(),
        payment_ref: body.payment_ref.clone(),
        outcome: body.outcome,
        amount_minor: body.amount_minor,
    };
    mutate(state, &req, caller, &body, op).await
}

/// Cancel a PENDING (stock released) or CONFIRMED (stock restored, refund requested) order.
#[utoipa::path(post, path = "/v1/orders/{id}/cancel", tag = "orders",
    params(("id" = String, Path, description = "Order id")),
    request_body(content = Option<CancelBody>, description = "Optional; reason defaults to `customer`"),
    responses(
        (status = 200, description = "CANCELLED", body = OrderView),
        (status = 404, description = "not_found", body = Problem, content_type = PROBLEM),
        (status = 409, description = "invalid_transition", body = Problem, content_type = PROBLEM),
    ),
    security(("bearer" = [])))]
pub async fn cancel(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Client])?;
    check_order_id(&path)?;
    let raw = read_body(&req, payload, state.settings.max_body_bytes).await?;
    let body: CancelBody = if raw.iter().all(u8::is_ascii_whitespace) {
        CancelBody::default()
    } else {
        parse_json(&raw)?
    };
    let reason = body.reason.clone().unwrap_or_else(|| "customer".into());
    if reason.is_empty() || reason.len() > 256 || reason.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "reason must be 1-256 characters without control characters",
        ));
    }
    let op = Op::Cancel {
        order_id: path.into_inner(),
        reason,
    };
    mutate(state, &req, caller, &body, op).await
}

/// Record a shipment step: prepared → processed → fulfilled.
#[utoipa::path(post, path = "/v1/orders/{id}/shipment", tag = "orders",
    params(("id" = String, Path, description = "Order id")),
    request_body = ShipmentBody,
    responses(
        (status = 200, description = "The order after the step", body = OrderView),
        (status = 404, description = "not_found", body = Problem, content_type = PROBLEM),
        (status = 409, description = "invalid_transition", body = Problem, content_type = PROBLEM),
    ),
    security(("bearer" = [])))]
pub async fn ship(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[])?;
    check_order_id(&path)?;
    let body: ShipmentBody = json_body(&state, &req, payload).await?;
    let op = Op::Ship {
        order_id: path.into_inner(),
        step: body.step,
    };
    mutate(state, &req, caller, &body, op).await
}

/// Stored events in seq order.
#[utoipa::path(get, path = "/v1/events", tag = "events", params(EventPageQuery),
    responses(
        (status = 200, description = "A page of events", body = EventPage),
        (status = 422, description = "invalid_request", body = Problem, content_type = PROBLEM),
    ),
    security(("bearer" = [])))]
pub async fn list_events(
    state: web::Data<AppState>,
    caller: Caller,
    q: web::Query<EventPageQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[])?;
    let limit = page_limit(q.limit)?;
    let after = q.after.unwrap_or(0);
    if let Some(s) = &q.stream {
        if !ordo_storage::valid_stream_name(s) {
            return Err(ApiError::invalid(format!("{s:?} is not a stream name")));
        }
    }
    let types: Option<Vec<String>> = match &q.event_type {
        None => None,
        Some(t) => {
            let v: Vec<String> = t.split(',').map(|s| s.trim().to_owned()).collect();
            if let Some(bad) = v
                .iter()
                .find(|t| !super::webhooks::EVENT_TYPES.contains(&t.as_str()))
            {
                return Err(ApiError::invalid(format!("unknown event type `{bad}`")));
            }
            Some(v)
        }
    };
    let engine = state.engine()?;
    let stream = q.stream.clone();
    // With a type filter, scan at most this many events per page (the cursor still
    // advances past what was scanned, so paging never stalls).
    let scan_budget = if types.is_some() { 10_000 } else { limit };
    let (events, next) = web::block(
        move || -> Result<(Vec<serde_json::Value>, u64), EngineError> {
            let mut out = Vec::new();
            let mut cursor = after;
            let mut scanned = 0;
            let durable = engine.journal().durable_seq();
            while out.len() < limit && scanned < scan_budget {
                let want = (scan_budget - scanned).min(1000);
                let records = engine.read_events(cursor, want, stream.as_deref())?;
                if records.is_empty() {
                    break;
                }
                for r in &records {
                    if r.seq > durable || out.len() >= limit {
                        return Ok((out, cursor));
                    }
                    cursor = r.seq;
                    scanned += 1;
                    if types
                        .as_ref()
                        .is_none_or(|t| t.iter().any(|t| *t == *r.event_type))
                    {
                        out.push(crate::event_json(r));
                    }
                }
            }
            Ok((out, cursor))
        },
    )
    .await
    .map_err(|e| ApiError::new(ProblemType::Internal, e.to_string()))??;
    Ok(HttpResponse::Ok().json(EventPage { events, next }))
}

/// Liveness: 200 while the process can take writes; 503 after a failed journal write.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive", body = Health),
              (status = 503, description = "The journal stopped after a failed write", body = Problem, content_type = PROBLEM)))]
pub async fn healthz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    match state.engine.get().and_then(Engine::stopped_reason) {
        Some(why) => Err(ApiError::new(
            ProblemType::Unavailable,
            format!("the engine stopped ({why}); restart it"),
        )),
        None => Ok(HttpResponse::Ok().json(Health { status: "ok" })),
    }
}

/// Readiness: 503 until recovery has finished.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "Ready", body = Health),
              (status = 503, description = "Recovering, stopping or stopped", body = Problem, content_type = PROBLEM)))]
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.engine()?;
    Ok(HttpResponse::Ok().json(Health { status: "ready" }))
}

/// Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Metrics", body = String, content_type = "text/plain; version=0.0.4")))]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let engine = state.engine.get();
    let ready = state.engine().is_ok();
    let callers = state.limiter.as_ref().map_or(0, |l| l.callers());
    let mut text = state.metrics.render(engine, ready, callers);
    if let Some(h) = state.webhooks.get() {
        h.render_metrics(&mut text);
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(text)
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object)))]
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(super::openapi::document())
}

// ---------------------------------------------------------------------------------------
// The route table.

/// Something routes can be added to: the real router, or a list (for the OpenAPI check).
pub trait Routes {
    fn add<F, Args>(&mut self, method: Method, path: &'static str, handler: F)
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static;
}

impl Routes for web::ServiceConfig {
    fn add<F, Args>(&mut self, method: Method, path: &'static str, handler: F)
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.route(path, web::method(method).to(handler));
    }
}

/// The routes as (method, path) pairs.
#[derive(Debug, Default)]
pub struct RouteList(pub Vec<(Method, &'static str)>);

impl Routes for RouteList {
    fn add<F, Args>(&mut self, method: Method, path: &'static str, _: F)
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.0.push((method, path));
    }
}

/// Every route of the server.
pub fn register<R: Routes>(r: &mut R) {
    r.add(Method::PUT, "/v1/skus/{sku}", put_sku);
    r.add(Method::GET, "/v1/skus/{sku}", get_sku);
    r.add(Method::GET, "/v1/skus", list_skus);
    r.add(
        Method::POST,
        "/v1/skus/{sku}/stock-adjustments",
        adjust_stock,
    );
    r.add(Method::POST, "/v1/orders", create_order);
    r.add(Method::GET, "/v1/orders/{id}", get_order);
    r.add(Method::POST, "/v1/orders/{id}/payments", pay);
    r.add(Method::POST, "/v1/orders/{id}/cancel", cancel);
    r.add(Method::POST, "/v1/orders/{id}/shipment", ship);
    r.add(Method::GET, "/v1/events", list_events);
    r.add(Method::GET, "/v1/events/live", super::feed::live_events);
    r.add(
        Method::POST,
        "/v1/subscriptions",
        super::feed::create_subscription,
    );
    r.add(
        Method::GET,
        "/v1/subscriptions",
        super::feed::list_subscriptions,
    );
    r.add(
        Method::GET,
        "/v1/subscriptions/{id}",
        super::feed::get_subscription,
    );
    r.add(
        Method::DELETE,
        "/v1/subscriptions/{id}",
        super::feed::delete_subscription,
    );
    r.add(
        Method::GET,
        "/v1/subscriptions/{id}/dead-letters",
        super::feed::dead_letters,
    );
    r.add(
        Method::POST,
        "/v1/subscriptions/{id}/dead-letters/redrive",
        super::feed::redrive,
    );
    r.add(Method::GET, "/healthz", healthz);
    r.add(Method::GET, "/readyz", readyz);
    r.add(Method::GET, "/metrics", metrics);
    r.add(Method::GET, "/openapi.json", openapi);
}

/// The routes, listed.
pub fn route_list() -> Vec<(Method, &'static str)> {
    let mut l = RouteList::default();
    register(&mut l);
    l.0
}

/// Unmatched requests: 405 when the path exists with another method, else 404.
pub async fn fallback(req: HttpRequest) -> HttpResponse {
    let path = req.path();
    let routes = route_list();
    let allowed: Vec<&str> = routes
        .iter()
        .filter(|(_, p)| actix_web::dev::ResourceDef::new(*p).is_match(path))
        .map(|(m, _)| m.as_str())
        .collect();
    let e = if allowed.is_empty() {
        ApiError::not_found(format!("no route {path}"))
    } else {
        ApiError::invalid(format!(
            "{} is not allowed on {path}; allowed: {}",
            req.method(),
            allowed.join(", ")
        ))
        .with_status(StatusCode::METHOD_NOT_ALLOWED)
    };
    actix_web::ResponseError::error_response(&e)
}
