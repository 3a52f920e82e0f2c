//! The journal's metrics, declared where they are counted.
//!
//! The writer thread updates them after each batch (and the durable seq whenever it
//! advances); they are `prometheus` types, so shared atomics any thread may read. The
//! journal registers in no registry of its own: whoever serves `/metrics` (the engine)
//! adds them to its [`Registry`] with [`JournalMetrics::register`]; benchmarks and tests
//! read the typed handles from [`Journal::metrics`](crate::Journal::metrics).

use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, Registry};

/// Upper bounds of the write-latency buckets, microseconds.
const WRITE_BUCKETS_US: [u64; 12] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 1_000_000,
];

/// Upper bounds of the batch-size buckets, events.
const BATCH_BUCKETS: [u64; 10] = [1, 2, 4, 8, 16, 64, 256, 1024, 4096, 16384];

/// What the journal counts. Clones share the same series.
#[derive(Debug, Clone)]
pub struct JournalMetrics {
    /// `ordo_journal_events_total`: events written.
    pub events: IntCounter,
    /// `ordo_journal_batch_events`: events per write batch (group commit). Its sample count
    /// is the number of batches written, its sum the number of events.
    pub batch_events: Histogram,
    /// `ordo_journal_write_seconds`: batch write latency, fsync included in sync mode.
    pub write_seconds: Histogram,
    /// `ordo_journal_durable_seq`: the highest seq known durable.
    pub durable_seq: IntGauge,
}

impl JournalMetrics {
    /// Declares the series (registered nowhere yet). Fails only on a malformed name or
    /// bucket list, which these constants are not.
    pub(crate) fn new() -> prometheus::Result<Self> {
        let bounds = |b: &[u64], scale: f64| b.iter().map(|v| *v as f64 / scale).collect();
        Ok(JournalMetrics {
            events: IntCounter::new(
                "ordo_journal_events_total",
                "Events written by the journal.",
            )?,
            batch_events: Histogram::with_opts(
                HistogramOpts::new(
                    "ordo_journal_batch_events",
                    "Events per journal write batch (group commit).",
                )
                .buckets(bounds(&BATCH_BUCKETS, 1.0)),
            )?,
            write_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "ordo_journal_write_seconds",
                    "Journal batch write latency (including fsync in sync mode).",
                )
                .buckets(bounds(&WRITE_BUCKETS_US, 1e6)),
            )?,
            durable_seq: IntGauge::new("ordo_journal_durable_seq", "Highest seq known durable.")?,
        })
    }

    /// Adds every series to `registry`. Fails if `registry` already holds one of these
    /// names (the journal's metrics registered twice).
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.events.clone()))?;
        registry.register(Box::new(self.batch_events.clone()))?;
        registry.register(Box::new(self.write_seconds.clone()))?;
        registry.register(Box::new(self.durable_seq.clone()))?;
        Ok(())
    }

    /// Counts one written batch of `events` events that took `nanos` to write.
    pub(crate) fn batch_written(&self, events: u64, nanos: u64) {
        self.events.inc_by(events);
        self.batch_events.observe(events as f64);
        self.write_seconds.observe(nanos as f64 / 1e9);
    }

    /// Records the durable seq.
    pub(crate) fn set_durable(&self, seq: u64) {
        self.durable_seq.set(i64::try_from(seq).unwrap_or(i64::MAX));
    }
}
