//! The engine's metrics, declared where they are counted.
//!
//! Actors, the placement path and the background tasks update the typed handles below
//! (shared atomics behind `prometheus` types, so any thread may touch them without a
//! lock); the engine owns the [`Registry`] they are registered in, together with the
//! journal's, and the HTTP edge gathers it for `/metrics`.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// What the engine counts. Clones share the same series.
#[derive(Debug, Clone)]
pub struct EngineMetrics {
    /// `ordo_orders_total{outcome="pending"}`: orders placed and PENDING.
    pub orders_pending: IntCounter,
    /// `ordo_orders_total{outcome="failed_out_of_stock"}`.
    pub orders_failed_out_of_stock: IntCounter,
    /// `ordo_orders_total{outcome="failed_limit_exceeded"}`.
    pub orders_failed_limit: IntCounter,
    /// `ordo_orders_total{outcome="confirmed"}`.
    pub orders_confirmed: IntCounter,
    /// `ordo_orders_total{outcome="cancelled"}`.
    pub orders_cancelled: IntCounter,
    /// `ordo_orders_total{outcome="fulfilled"}`.
    pub orders_fulfilled: IntCounter,
    /// `ordo_orders_total{outcome="expired"}`.
    pub expired: IntCounter,
    /// `ordo_refunds_requested_total`.
    pub refunds_requested: IntCounter,
    /// `ordo_overloaded_total`: reservations refused for a full SKU mailbox.
    pub overloaded: IntCounter,
    /// `ordo_live_order_actors`.
    pub live_orders: IntGauge,
    /// `ordo_live_sku_actors`: shared with the SKU actors, which count themselves out
    /// when they passivate.
    pub live_skus: IntGauge,
    /// `ordo_checkpoints_total`.
    pub checkpoints: IntCounter,
    /// `ordo_snapshot_decode_failures_total`: snapshots replayed from the log instead.
    pub snapshot_decode_failures: IntCounter,
    /// `ordo_pending_orders_without_actor`: kept by the deadline table as it changes.
    pub pending_without_actor: IntGauge,
}

impl EngineMetrics {
    /// Declares the engine's series and registers them in `registry`. Fails only if
    /// `registry` already holds one of these names.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let orders = IntCounterVec::new(
            Opts::new("ordo_orders_total", "Orders by outcome since start."),
            &["outcome"],
        )?;
        // Every outcome is created now, so each is exported (at 0) from the start.
        let outcome = |o: &str| orders.get_metric_with_label_values(&[o]);
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
        let m = EngineMetrics {
            orders_pending: outcome("pending")?,
            orders_failed_out_of_stock: outcome("failed_out_of_stock")?,
            orders_failed_limit: outcome("failed_limit_exceeded")?,
            orders_confirmed: outcome("confirmed")?,
            orders_cancelled: outcome("cancelled")?,
            expired: outcome("expired")?,
            orders_fulfilled: outcome("fulfilled")?,
            refunds_requested: counter(
                "ordo_refunds_requested_total",
                "Refunds recorded (late payments, cancelled paid orders).",
            )?,
            overloaded: counter(
                "ordo_overloaded_total",
                "Reservations refused because a SKU's mailbox was full.",
            )?,
            live_orders: gauge("ordo_live_order_actors", "Order actors in memory.")?,
            live_skus: gauge("ordo_live_sku_actors", "SKU actors in memory.")?,
            checkpoints: counter("ordo_checkpoints_total", "Checkpoints written.")?,
            snapshot_decode_failures: counter(
                "ordo_snapshot_decode_failures_total",
                "Snapshots that did not decode (replayed from the log instead).",
            )?,
            pending_without_actor: gauge(
                "ordo_pending_orders_without_actor",
                "PENDING orders kept as a deadline only (activated on use or at their deadline).",
            )?,
        };
        registry.register(Box::new(orders))?;
        Ok(m)
    }
}
