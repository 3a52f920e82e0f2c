//! Each subscription's delivery metrics (one series per subscription, removed with it).

use super::*;

/// Delivery metrics, one series per subscription (label `subscription`: its id). A
/// subscription's series are created with it and removed with it, so a deleted one stops
/// being exported; a delivery task still finishing holds its own handles and counts into
/// series no longer exported.
pub(super) struct WebhookMetrics {
    /// `ordo_webhook_lag`: seqs behind the log, set at each scrape (the log moves on
    /// without the delivery task).
    pub(super) lag: IntGaugeVec,
    /// `ordo_webhook_deliveries_total`.
    pub(super) deliveries: IntCounterVec,
    /// `ordo_webhook_failures_total`.
    pub(super) failures: IntCounterVec,
    /// `ordo_webhook_retries_total`.
    pub(super) retries: IntCounterVec,
    /// `ordo_webhook_dead_letters`.
    pub(super) dead_letters: IntGaugeVec,
}

impl WebhookMetrics {
    /// Declares the series and registers them in `registry`. Fails only if `registry`
    /// already holds one of these names.
    pub(super) fn new(registry: &Registry) -> prometheus::Result<Self> {
        let label = ["subscription"];
        let counters = |name: &str, help: &str| -> prometheus::Result<IntCounterVec> {
            let v = IntCounterVec::new(Opts::new(name, help), &label)?;
            registry.register(Box::new(v.clone()))?;
            Ok(v)
        };
        let gauges = |name: &str, help: &str| -> prometheus::Result<IntGaugeVec> {
            let v = IntGaugeVec::new(Opts::new(name, help), &label)?;
            registry.register(Box::new(v.clone()))?;
            Ok(v)
        };
        Ok(WebhookMetrics {
            lag: gauges("ordo_webhook_lag", "Seqs a subscription is behind the log.")?,
            deliveries: counters("ordo_webhook_deliveries_total", "Events delivered (2xx).")?,
            failures: counters(
                "ordo_webhook_failures_total",
                "Delivery attempts that failed.",
            )?,
            retries: counters(
                "ordo_webhook_retries_total",
                "Delivery attempts that were retries.",
            )?,
            dead_letters: gauges(
                "ordo_webhook_dead_letters",
                "Events on the dead-letter list.",
            )?,
        })
    }

    /// The series of subscription `id` (created now if new). Fails only on a wrong
    /// number of label values, which is fixed here.
    pub(super) fn series(&self, id: &str) -> prometheus::Result<SubStats> {
        Ok(SubStats {
            lag: self.lag.get_metric_with_label_values(&[id])?,
            deliveries: self.deliveries.get_metric_with_label_values(&[id])?,
            failures: self.failures.get_metric_with_label_values(&[id])?,
            retries: self.retries.get_metric_with_label_values(&[id])?,
            dead_letters: self.dead_letters.get_metric_with_label_values(&[id])?,
        })
    }

    /// Stops exporting subscription `id`.
    pub(super) fn remove(&self, id: &str) {
        // An error only says the series was not there.
        let _ = self.lag.remove_label_values(&[id]);
        let _ = self.deliveries.remove_label_values(&[id]);
        let _ = self.failures.remove_label_values(&[id]);
        let _ = self.retries.remove_label_values(&[id]);
        let _ = self.dead_letters.remove_label_values(&[id]);
    }
}

/// One subscription's series (see [`WebhookMetrics`]).
pub(super) struct SubStats {
    pub(super) lag: IntGauge,
    pub(super) deliveries: IntCounter,
    pub(super) failures: IntCounter,
    pub(super) retries: IntCounter,
    pub(super) dead_letters: IntGauge,
}
