//! The OpenAPI document, generated from the handlers' annotations and the types they
//! take and return (utoipa). A test checks it lists every route of the router.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::bodies::*;
use super::dto;
use super::error::{Problem, ProblemType};
use super::handlers::*;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "Tokens and roles (admin, client, payment) from --auth-tokens; admin may do everything",
                    ))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Ordo",
        description = "An actor-based order engine with a durable event log. Errors are application/problem+json with a stable `type` code."
    ),
    paths(
        put_sku, get_sku, list_skus, adjust_stock, create_order, get_order, pay, cancel, ship,
        list_events, healthz, readyz, metrics, openapi,
        super::feed::live_events, super::feed::create_subscription,
        super::feed::list_subscriptions, super::feed::get_subscription,
        super::feed::delete_subscription, super::feed::rotate_secret, super::feed::dead_letters,
        super::feed::redrive
    ),
    components(schemas(
        Problem, ProblemType, PutSkuBody, StockAdjustmentBody, CreateOrderBody, LineBody,
        PaymentBody, CancelBody, ShipmentBody, SkuPage, EventPage, EventJson, Health,
        dto::SkuView, dto::OrderView, dto::Status, dto::PaymentOutcome, dto::ShipmentStep,
        dto::OrderLine, dto::HistoryEntry, dto::FailureReason,
        crate::webhooks::CreateSubscription, crate::webhooks::SubscriptionView,
        crate::webhooks::DeadLetter, crate::webhooks::OnFailure, crate::webhooks::RotateSecret,
        crate::webhooks::SecretView, super::feed::Redriven
    )),
    modifiers(&BearerAuth),
    tags(
        (name = "skus", description = "Catalogue and stock"),
        (name = "orders", description = "The order saga"),
        (name = "events", description = "The event log and its live feed"),
        (name = "subscriptions", description = "Webhooks by the Standard Webhooks spec: signed, ordered, at-least-once deliveries to public targets, with retries, dead letters and secret rotation"),
        (name = "operations", description = "Health, readiness, metrics, this document")
    )
)]
pub struct ApiDoc;

/// The document as served at `/openapi.json`.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}
