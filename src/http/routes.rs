//! The one route table: the router and the list the OpenAPI test checks are both built
//! from it.

use actix_web::http::{Method, StatusCode};
use actix_web::{web, FromRequest, Handler, HttpRequest, HttpResponse, Responder};

use super::error::ApiError;

use super::handlers::*;

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
    // The router tries routes in this order, and each pattern with a `{…}` is a regex
    // match: the hottest route, a static one, goes first (3 regex runs fewer per order).
    r.add(Method::POST, "/v1/orders", create_order);
    r.add(Method::PUT, "/v1/skus/{sku}", put_sku);
    r.add(Method::GET, "/v1/skus/{sku}", get_sku);
    r.add(Method::GET, "/v1/skus", list_skus);
    r.add(
        Method::POST,
        "/v1/skus/{sku}/stock-adjustments",
        adjust_stock,
    );
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
        Method::POST,
        "/v1/subscriptions/{id}/secret",
        super::feed::rotate_secret,
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
