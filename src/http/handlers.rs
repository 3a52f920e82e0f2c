//! The v1 endpoints (SPEC §4): one handler per route, with its OpenAPI annotation.

use actix_web::{web, HttpRequest, HttpResponse};
use ordo_engine::domain::LineRequest;
use ordo_engine::{Engine, EngineError, PlaceOrder, UpsertSku};

use super::caller::{Admin, Allowed, AnyRole, Client, Payment};
use super::dto::{OrderView, SkuView};
use super::error::{ApiError, Problem, ProblemType};
use super::AppState;

use super::bodies::*;
use super::commands::{mutate, Op};
use super::input::*;

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
    caller: Allowed<Admin>,
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    ApiJson(body): ApiJson<PutSkuBody>,
) -> Result<HttpResponse, ApiError> {
    let sku = path.into_inner();
    let op = Op::Upsert(UpsertSku {
        sku,
        name: body.name.clone(),
        price_minor: body.price_minor,
        currency: body.currency.clone(),
        per_customer_limit: body.per_customer_limit,
        stock: body.stock.unwrap_or(0),
    });
    mutate(state, &req, &caller, &body, op).await
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
    _: Allowed<AnyRole>,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let view = state.engine()?.get_sku(&path).await?;
    Ok(HttpResponse::Ok().json(SkuView::from(&view)))
}

/// SKUs in code order.
#[utoipa::path(get, path = "/v1/skus", tag = "skus", params(SkuPageQuery),
    responses((status = 200, description = "A page of SKUs", body = SkuPage)),
    security(("bearer" = [])))]
pub async fn list_skus(
    _: Allowed<AnyRole>,
    state: web::Data<AppState>,
    q: web::Query<SkuPageQuery>,
) -> Result<HttpResponse, ApiError> {
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
    let skus = skus.iter().map(SkuView::from).collect();
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
    caller: Allowed<Admin>,
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    ApiJson(body): ApiJson<StockAdjustmentBody>,
) -> Result<HttpResponse, ApiError> {
    let op = Op::Adjust {
        sku: path.into_inner(),
        delta: body.delta,
        reason: body.reason.clone(),
    };
    mutate(state, &req, &caller, &body, op).await
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
    caller: Allowed<Client>,
    state: web::Data<AppState>,
    req: HttpRequest,
    ApiJson(body): ApiJson<CreateOrderBody>,
) -> Result<HttpResponse, ApiError> {
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
    mutate(state, &req, &caller, &body, Op::Place(place)).await
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
    _: Allowed<AnyRole>,
    OrderId(id): OrderId,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let view = state.engine()?.get_order(&id).await?;
    Ok(HttpResponse::Ok().json(OrderView::from(&view)))
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
    caller: Allowed<Payment>,
    OrderId(order_id): OrderId,
    ApiJson(body): ApiJson<PaymentBody>,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let op = Op::Pay {
        order_id,
        payment_ref: body.payment_ref.clone(),
        outcome: body.outcome.into(),
        amount_minor: body.amount_minor,
    };
    mutate(state, &req, &caller, &body, op).await
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
    caller: Allowed<Client>,
    OrderId(order_id): OrderId,
    ApiJsonOrDefault(body): ApiJsonOrDefault<CancelBody>,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    // No reason given: the customer's. Its rules are the domain's (`validate_reason`).
    let reason = body.reason.clone().unwrap_or_else(|| "customer".into());
    let op = Op::Cancel { order_id, reason };
    mutate(state, &req, &caller, &body, op).await
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
    caller: Allowed<Admin>,
    OrderId(order_id): OrderId,
    ApiJson(body): ApiJson<ShipmentBody>,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let op = Op::Ship {
        order_id,
        step: body.step.into(),
    };
    mutate(state, &req, &caller, &body, op).await
}

/// Stored events in seq order.
#[utoipa::path(get, path = "/v1/events", tag = "events", params(EventPageQuery),
    responses(
        (status = 200, description = "A page of events", body = EventPage),
        (status = 422, description = "invalid_request", body = Problem, content_type = PROBLEM),
    ),
    security(("bearer" = [])))]
pub async fn list_events(
    _: Allowed<Admin>,
    state: web::Data<AppState>,
    q: web::Query<EventPageQuery>,
) -> Result<HttpResponse, ApiError> {
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
                .find(|t| !crate::webhooks::EVENT_TYPES.contains(&t.as_str()))
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
            let durable = engine.durable_seq();
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
pub async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let ready = state.engine().is_ok();
    let callers = state.limiter.as_ref().map_or(0, |l| l.callers());
    let hooks = state.webhooks.get().map(|h| &**h);
    let text = state
        .metrics
        .render(state.engine.get(), ready, callers, hooks)
        .map_err(|e| {
            tracing::error!(error = %e, "encoding the metrics");
            ApiError::new(ProblemType::Internal, "the metrics could not be encoded")
        })?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(text))
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object)))]
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(super::openapi::document())
}
