//! `/metrics` in the Prometheus text format: HTTP requests by route and status, latency
//! histograms by route, and the engine's and journal's own counters.
//!
//! Request counters live in a DashMap keyed by (route pattern, method, status): the set of
//! keys is small and fixed by the router, so after warm-up every request is one shard
//! read lock and an atomic add.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use actix_web::http::{Method, StatusCode};
use dashmap::DashMap;
use ordo_engine::Engine;
use ordo_storage::{BATCH_BUCKETS, WRITE_BUCKETS_US};

/// Latency bucket bounds, seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

#[derive(Default)]
pub struct HttpMetrics {
    requests: DashMap<(String, Method, u16), AtomicU64>,
    latency: DashMap<String, Histogram>,
    pub rate_limited: AtomicU64,
    pub idempotent_replays: AtomicU64,
    pub sse_readers: AtomicU64,
    pub sse_cutoffs: AtomicU64,
}

impl HttpMetrics {
    pub fn record(&self, route: &str, method: &Method, status: StatusCode, took: Duration) {
        let key = (route.to_owned(), method.clone(), status.as_u16());
        match self.requests.get(&key) {
            Some(c) => {
                c.fetch_add(1, Relaxed);
            }
            None => {
                self.requests.entry(key).or_default().fetch_add(1, Relaxed);
            }
        }
        let secs = took.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        let observe = |h: &Histogram| {
            h.buckets[i].fetch_add(1, Relaxed);
            h.sum_nanos
                .fetch_add(took.as_nanos().min(u128::from(u64::MAX)) as u64, Relaxed);
            h.count.fetch_add(1, Relaxed);
        };
        match self.latency.get(route) {
            Some(h) => observe(&h),
            None => observe(&self.latency.entry(route.to_owned()).or_default()),
        }
    }

    /// The whole exposition.
    pub fn render(&self, engine: Option<&Engine>, ready: bool, rate_callers: usize) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let mut reqs: Vec<_> = self
            .requests
            .iter()
            .map(|e| (e.key().clone(), e.value().load(Relaxed)))
            .collect();
        reqs.sort_by(|a, b| {
            (&a.0 .0, a.0 .1.as_str(), a.0 .2).cmp(&(&b.0 .0, b.0 .1.as_str(), b.0 .2))
        });
        head(
            &mut out,
            "ordo_http_requests_total",
            "counter",
            "HTTP requests by route, method and status.",
        );
        for ((route, method, status), n) in reqs {
            let _ = writeln!(
                out,
                "ordo_http_requests_total{{route=\"{}\",method=\"{}\",status=\"{status}\"}} {n}",
                escape(&route),
                method
            );
        }
        head(
            &mut out,
            "ordo_http_request_duration_seconds",
            "histogram",
            "HTTP request latency by route.",
        );
        let mut routes: Vec<String> = self.latency.iter().map(|e| e.key().clone()).collect();
        routes.sort();
        for route in routes {
            if let Some(h) = self.latency.get(&route) {
                histogram(
                    &mut out,
                    "ordo_http_request_duration_seconds",
                    &format!("route=\"{}\"", escape(&route)),
                    LATENCY_BUCKETS.iter().map(|b| b.to_string()),
                    &h.buckets,
                    h.sum_nanos.load(Relaxed) as f64 / 1e9,
                    h.count.load(Relaxed),
                );
            }
        }
        head(
            &mut out,
            "ordo_rate_limited_total",
            "counter",
            "Requests refused with 429.",
        );
        let _ = writeln!(
            out,
            "ordo_rate_limited_total {}",
            self.rate_limited.load(Relaxed)
        );
        head(
            &mut out,
            "ordo_rate_limiter_callers",
            "gauge",
            "Callers with a partly used token bucket.",
        );
        let _ = writeln!(out, "ordo_rate_limiter_callers {rate_callers}");
        head(
            &mut out,
            "ordo_idempotent_replays_total",
            "counter",
            "Requests answered from a stored Idempotency-Key answer.",
        );
        let _ = writeln!(
            out,
            "ordo_idempotent_replays_total {}",
            self.idempotent_replays.load(Relaxed)
        );
        head(
            &mut out,
            "ordo_sse_readers",
            "gauge",
            "Live-feed (SSE) readers connected.",
        );
        let _ = writeln!(out, "ordo_sse_readers {}", self.sse_readers.load(Relaxed));
        head(
            &mut out,
            "ordo_sse_cutoffs_total",
            "counter",
            "Live-feed readers cut off for falling behind their buffer.",
        );
        let _ = writeln!(
            out,
            "ordo_sse_cutoffs_total {}",
            self.sse_cutoffs.load(Relaxed)
        );
        head(
            &mut out,
            "ordo_ready",
            "gauge",
            "1 once recovery has finished and the engine takes writes.",
        );
        let _ = writeln!(out, "ordo_ready {}", u8::from(ready));
        if let Some(engine) = engine {
            engine_metrics(&mut out, engine);
        }
        out
    }
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// One histogram series: cumulative `_bucket`s at `bounds` (then `+Inf`, the last count),
/// `_sum` and `_count`. `label` is empty or one `key="value"` pair.
#[allow(clippy::too_many_arguments)]
fn histogram(
    out: &mut String,
    name: &str,
    label: &str,
    bounds: impl Iterator<Item = String>,
    counts: &[AtomicU64],
    sum: impl std::fmt::Display,
    count: u64,
) {
    let sep = if label.is_empty() { "" } else { "," };
    let mut cum = 0;
    for (le, c) in bounds.chain(std::iter::once("+Inf".to_owned())).zip(counts) {
        cum += c.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{label}{sep}le=\"{le}\"}} {cum}");
    }
    let braces = if label.is_empty() {
        String::new()
    } else {
        format!("{{{label}}}")
    };
    let _ = writeln!(out, "{name}_sum{braces} {sum}");
    let _ = writeln!(out, "{name}_count{braces} {count}");
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn engine_metrics(out: &mut String, engine: &Engine) {
    let m = engine.metrics();
    head(
        out,
        "ordo_orders_total",
        "counter",
        "Orders by outcome since start.",
    );
    for (outcome, v) in [
        ("pending", &m.orders_pending),
        ("failed_out_of_stock", &m.orders_failed_out_of_stock),
        ("failed_limit_exceeded", &m.orders_failed_limit),
        ("confirmed", &m.orders_confirmed),
        ("cancelled", &m.orders_cancelled),
        ("expired", &m.expired),
        ("fulfilled", &m.orders_fulfilled),
    ] {
        let _ = writeln!(
            out,
            "ordo_orders_total{{outcome=\"{outcome}\"}} {}",
            v.load(Relaxed)
        );
    }
    for (name, kind, help, v) in [
        (
            "ordo_refunds_requested_total",
            "counter",
            "Refunds recorded (late payments, cancelled paid orders).",
            &m.refunds_requested,
        ),
        (
            "ordo_overloaded_total",
            "counter",
            "Reservations refused because a SKU's mailbox was full.",
            &m.overloaded,
        ),
        (
            "ordo_live_order_actors",
            "gauge",
            "Order actors in memory.",
            &m.live_orders,
        ),
        (
            "ordo_live_sku_actors",
            "gauge",
            "SKU actors in memory.",
            &m.live_skus,
        ),
        (
            "ordo_checkpoints_total",
            "counter",
            "Checkpoints written.",
            &m.checkpoints,
        ),
        (
            "ordo_snapshot_decode_failures_total",
            "counter",
            "Snapshots that did not decode (replayed from the log instead).",
            &m.snapshot_decode_failures,
        ),
    ] {
        head(out, name, kind, help);
        let _ = writeln!(out, "{name} {}", v.load(Relaxed));
    }
    head(
        out,
        "ordo_pending_orders_without_actor",
        "gauge",
        "PENDING orders kept as a deadline only (activated on use or at their deadline).",
    );
    let _ = writeln!(
        out,
        "ordo_pending_orders_without_actor {}",
        engine.pending_without_actor()
    );
    let j = engine.journal();
    let s = j.stats();
    head(
        out,
        "ordo_journal_durable_seq",
        "gauge",
        "Highest seq known durable.",
    );
    let _ = writeln!(out, "ordo_journal_durable_seq {}", j.durable_seq());
    head(
        out,
        "ordo_journal_events_total",
        "counter",
        "Events written by the journal.",
    );
    let _ = writeln!(out, "ordo_journal_events_total {}", s.events.load(Relaxed));
    head(
        out,
        "ordo_journal_batch_events",
        "histogram",
        "Events per journal write batch (group commit).",
    );
    histogram(
        out,
        "ordo_journal_batch_events",
        "",
        BATCH_BUCKETS.iter().map(|b| b.to_string()),
        &s.batch_hist,
        s.events.load(Relaxed),
        s.batches.load(Relaxed),
    );
    head(
        out,
        "ordo_journal_write_seconds",
        "histogram",
        "Journal batch write latency (including fsync in sync mode).",
    );
    histogram(
        out,
        "ordo_journal_write_seconds",
        "",
        WRITE_BUCKETS_US
            .iter()
            .map(|b| (*b as f64 / 1e6).to_string()),
        &s.write_hist,
        s.write_nanos.load(Relaxed) as f64 / 1e9,
        s.batches.load(Relaxed),
    );
}
