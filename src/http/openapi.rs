//! The OpenAPI document, generated from the handlers' annotations and the types they
//! take and return (utoipa). A test checks it lists every route of the router.

use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::bodies::*;
use super::dto;
use super::error::{Problem, ProblemType, PROBLEM_JSON};
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

/// The refusals answered before a handler looks at the request, added to every
/// operation they can reach (unless it lists them itself): 415 on every POST, PUT and
/// PATCH (the role guard holds them to [`super::input::require_json`], bodies or not), and
/// 403 on every operation (a token's role, or, in loopback mode, a `Host` or `Origin`
/// naming another site: [`super::loopback`]).
struct EdgeRefusals;

impl Modify for EdgeRefusals {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let problem = |description: &str| -> RefOr<Response> {
            ResponseBuilder::new()
                .description(description)
                .content(
                    PROBLEM_JSON,
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Problem")))
                        .build(),
                )
                .build()
                .into()
        };
        let add = |op: &mut Operation, status: &str, description: &str| {
            op.responses
                .responses
                .entry(status.to_owned())
                .or_insert_with(|| problem(description));
        };
        for item in doc.paths.paths.values_mut() {
            for op in [&mut item.put, &mut item.post, &mut item.patch]
                .into_iter()
                .flatten()
            {
                add(
                    op,
                    "415",
                    "invalid_request: a body (or Content-Type) that is not application/json",
                );
            }
            for op in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.options,
                &mut item.head,
                &mut item.patch,
                &mut item.trace,
            ]
            .into_iter()
            .flatten()
            {
                add(op, "403", "forbidden: a token whose role may not call this route; without tokens, a Host or Origin that names another site");
            }
        }
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
    modifiers(&BearerAuth, &EdgeRefusals),
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
