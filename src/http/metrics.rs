//! `/metrics` in the Prometheus text format.
//!
//! Each layer declares the metrics it counts, where it counts them: the journal
//! (`ordo_storage::JournalMetrics`) and the engine (`ordo_engine::EngineMetrics`) in the
//! engine's registry; the HTTP edge (below) and the webhook deliveries
//! ([`super::webhooks`]) in the edge's. A scrape sets the few gauges that are read rather
//! than counted (readiness, rate-limiter callers, webhook lag), gathers both registries
//! and encodes them with `prometheus`'s `TextEncoder`.
//!
//! Request series are keyed by (route pattern, method, status), and every label comes
//! from a fixed set, because the series are recorded for every request, before (and
//! whatever) auth says, and a series once made is never dropped: a label taken from
//! client input would let anyone grow the process and the scrape without bound. So the
//! route is the router's pattern (or `unmatched`), never the raw path; the method is one
//! of [`METHODS`] or `other` (actix accepts any token as a method); the status is the
//! three-digit code, which the server picks. After warm-up a request is a read lock on
//! the vector's map and an atomic add.

use std::time::Duration;

use actix_web::http::{Method, StatusCode};
use ordo_engine::Engine;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

use crate::webhooks::Webhooks;

/// Latency bucket bounds, seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// The labels of `ordo_http_requests_total`, in the order dashboards know them.
const REQUEST_LABELS: [&str; 3] = ["route", "method", "status"];

/// The methods counted under their own name; any other is counted as `other`.
pub const METHODS: [&str; 7] = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"];

/// The `method` label of a request: its name if it is one of [`METHODS`], else `other`.
pub fn method_label(method: &Method) -> &'static str {
    METHODS
        .into_iter()
        .find(|m| *m == method.as_str())
        .unwrap_or("other")
}

/// What the HTTP edge counts, and the registry it is gathered from.
pub struct HttpMetrics {
    /// The edge's series and the webhook deliveries'. Not the process-wide default
    /// registry: tests run several servers in one process.
    registry: Registry,
    /// `ordo_http_requests_total{route,method,status}`.
    requests: IntCounterVec,
    /// `ordo_http_request_duration_seconds{route}`.
    latency: HistogramVec,
    /// `ordo_rate_limited_total`: requests refused with 429.
    pub rate_limited: IntCounter,
    /// `ordo_idempotent_replays_total`: answers replayed for an `Idempotency-Key`.
    pub idempotent_replays: IntCounter,
    /// `ordo_sse_readers`: live-feed readers connected.
    pub sse_readers: IntGauge,
    /// `ordo_sse_cutoffs_total`: live-feed readers cut off for falling behind.
    pub sse_cutoffs: IntCounter,
    /// `ordo_rate_limiter_callers`: set at each scrape.
    rate_limiter_callers: IntGauge,
    /// `ordo_ready`: set at each scrape.
    ready: IntGauge,
}

impl HttpMetrics {
    /// Declares the edge's series in a registry of their own. Fails only on a malformed
    /// name or a name registered twice, which these constants are not.
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "ordo_http_requests_total",
                "HTTP requests by route, method and status.",
            ),
            &REQUEST_LABELS,
        )?;
        registry.register(Box::new(InDeclaredOrder {
            inner: requests.clone(),
            order: &REQUEST_LABELS,
        }))?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "ordo_http_request_duration_seconds",
                "HTTP request latency by route.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )?;
        registry.register(Box::new(latency.clone()))?;
        let counter = |name: &str, help: &str| -> prometheus::Result<IntCounter> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let gauge = |name: &str, help: &str| -> prometheus::Result<IntGauge> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        Ok(HttpMetrics {
            rate_limited: counter("ordo_rate_limited_total", "Requests refused with 429.")?,
            rate_limiter_callers: gauge(
                "ordo_rate_limiter_callers",
                "Callers with a partly used token bucket.",
            )?,
            idempotent_replays: counter(
                "ordo_idempotent_replays_total",
                "Requests answered from a stored Idempotency-Key answer.",
            )?,
            sse_readers: gauge("ordo_sse_readers", "Live-feed (SSE) readers connected.")?,
            sse_cutoffs: counter(
                "ordo_sse_cutoffs_total",
                "Live-feed readers cut off for falling behind their buffer.",
            )?,
            ready: gauge(
                "ordo_ready",
                "1 once recovery has finished and the engine takes writes.",
            )?,
            requests,
            latency,
            registry,
        })
    }

    /// The edge's registry (the webhook deliveries register theirs here).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Counts one answered request. `route` is the router's pattern or "unmatched" (a
    /// value of the route table, never the request's path); the method is counted as
    /// [`method_label`] names it.
    pub fn record(&self, route: &str, method: &Method, status: StatusCode, took: Duration) {
        // Both lookups fail only on a wrong number of label values, which is fixed here.
        if let Ok(c) = self.requests.get_metric_with_label_values(&[
            route,
            method_label(method),
            status.as_str(),
        ]) {
            c.inc();
        }
        if let Ok(h) = self.latency.get_metric_with_label_values(&[route]) {
            h.observe(took.as_secs_f64());
        }
    }

    /// The whole exposition: the edge's series, then (once recovered) the engine's and
    /// the journal's.
    pub fn render(
        &self,
        engine: Option<&Engine>,
        ready: bool,
        rate_callers: usize,
        webhooks: Option<&Webhooks>,
    ) -> prometheus::Result<String> {
        self.ready.set(i64::from(ready));
        self.rate_limiter_callers
            .set(i64::try_from(rate_callers).unwrap_or(i64::MAX));
        if let Some(h) = webhooks {
            h.refresh_metrics();
        }
        let mut families = self.registry.gather();
        if let Some(engine) = engine {
            families.extend(engine.registry().gather());
        }
        TextEncoder::new().encode_to_string(&families)
    }
}

/// A collector that exports its samples' labels in a declared order. `prometheus` sorts
/// a sample's labels by name; `ordo_http_requests_total` has always been exported as
/// `route, method, status`, and dashboards (and tests) match on that text.
#[derive(Clone)]
struct InDeclaredOrder {
    inner: IntCounterVec,
    order: &'static [&'static str],
}

impl Collector for InDeclaredOrder {
    fn desc(&self) -> Vec<&Desc> {
        self.inner.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut families = self.inner.collect();
        for sample in families.iter_mut().flat_map(|f| f.mut_metric().iter_mut()) {
            sample
                .mut_label()
                .sort_by_key(|l| self.order.iter().position(|n| *n == l.name()));
        }
        families
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_labels_keep_their_declared_order_and_every_series_is_exported() {
        let m = HttpMetrics::new().unwrap();
        m.record(
            "/v1/orders",
            &Method::POST,
            StatusCode::CREATED,
            Duration::from_micros(300),
        );
        m.rate_limited.inc();
        let text = m.render(None, true, 2, None).unwrap();
        for needle in [
            "ordo_http_requests_total{route=\"/v1/orders\",method=\"POST\",status=\"201\"} 1",
            "ordo_http_request_duration_seconds_bucket{route=\"/v1/orders\",le=\"0.0002\"} 0",
            "ordo_http_request_duration_seconds_bucket{route=\"/v1/orders\",le=\"0.0005\"} 1",
            "ordo_http_request_duration_seconds_bucket{route=\"/v1/orders\",le=\"+Inf\"} 1",
            "ordo_http_request_duration_seconds_count{route=\"/v1/orders\"} 1",
            "ordo_rate_limited_total 1",
            "ordo_rate_limiter_callers 2",
            "ordo_idempotent_replays_total 0",
            "ordo_sse_readers 0",
            "ordo_sse_cutoffs_total 0",
            "ordo_ready 1",
        ] {
            assert!(text.contains(needle), "lacks {needle}:\n{text}");
        }
    }

    #[test]
    fn invented_methods_share_one_series() {
        let m = HttpMetrics::new().unwrap();
        for name in ["BREW", "PROPFIND", "X-1", "get", "TRACE"] {
            let method = Method::from_bytes(name.as_bytes()).unwrap();
            assert_eq!(method_label(&method), "other", "{name}");
            m.record("unmatched", &method, StatusCode::NOT_FOUND, Duration::ZERO);
        }
        let text = m.render(None, true, 0, None).unwrap();
        assert!(text.contains(
            "ordo_http_requests_total{route=\"unmatched\",method=\"other\",status=\"404\"} 5"
        ));
        assert_eq!(method_label(&Method::PATCH), "PATCH");
    }
}
