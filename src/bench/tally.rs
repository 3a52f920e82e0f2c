//! What the workers count: live counters for the progress bar ([`Live`]), each worker's
//! own tallies merged at the end ([`Tally`]), and the state they share ([`Shared`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use hdrhistogram::Histogram;
use parking_lot::Mutex;

use super::report::TimeSlot;
use super::target::Outcome;

/// An acknowledged order: its id and lines.
pub(super) type PlacedOrder = (String, Vec<(String, u32)>);

/// Live counters for the progress bar.
#[derive(Default)]
pub(super) struct Live {
    pub(super) done: AtomicU64,
    pub(super) ok: AtomicU64,
    pub(super) sold_out: AtomicU64,
    pub(super) errors: AtomicU64,
}

/// One worker's tallies, merged at the end.
pub(super) struct Tally {
    pub(super) all: Histogram<u64>,
    pub(super) per_op: BTreeMap<&'static str, Histogram<u64>>,
    pub(super) labels: HashMap<String, u64>,
    /// Units of acknowledged orders per SKU.
    pub(super) units: HashMap<String, i64>,
    /// Acknowledged orders (lifecycle: checked at audit time).
    pub(super) orders: Vec<PlacedOrder>,
    pub(super) requests: u64,
    /// The current second's timeline slot, handed over when the second turns.
    slot: Option<(usize, TimeSlot)>,
}

/// A latency histogram in microseconds.
fn hist() -> Histogram<u64> {
    // 1 µs .. 100 s at 3 significant figures.
    Histogram::new_with_bounds(1, 100_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).expect("histogram"))
}

impl Tally {
    /// Empty tallies.
    pub(super) fn new() -> Tally {
        Tally {
            all: hist(),
            per_op: BTreeMap::new(),
            labels: HashMap::new(),
            units: HashMap::new(),
            orders: Vec::new(),
            requests: 0,
            slot: None,
        }
    }

    /// Counts one request: its latency, its outcome, and the second it belongs to.
    pub(super) fn record(
        &mut self,
        op: &'static str,
        o: &Outcome,
        took: Duration,
        since_start: Duration,
        shared: &Shared,
    ) {
        let us = (took.as_micros() as u64).clamp(1, 100_000_000);
        let _ = self.all.record(us);
        let _ = self.per_op.entry(op).or_insert_with(hist).record(us);
        *self
            .labels
            .entry(format!("{op} {}", o.label()))
            .or_default() += 1;
        self.requests += 1;
        let sold_out = matches!(
            o.problem.as_deref(),
            Some("out_of_stock" | "limit_exceeded")
        );
        shared.live.done.fetch_add(1, Relaxed);
        if o.ok() {
            shared.live.ok.fetch_add(1, Relaxed);
        } else if sold_out {
            shared.live.sold_out.fetch_add(1, Relaxed);
        } else {
            shared.live.errors.fetch_add(1, Relaxed);
        }
        // The per-second timeline: kept locally, handed over when the second turns.
        let sec = since_start.as_secs() as usize;
        if self.slot.as_ref().is_some_and(|(s, _)| *s != sec) {
            self.flush(shared);
        }
        let (_, slot) = self.slot.get_or_insert_with(|| (sec, TimeSlot::new(sec)));
        slot.add(us, o.ok());
    }

    /// Hands the current second's slot over to the shared timeline.
    pub(super) fn flush(&mut self, shared: &Shared) {
        if let Some((sec, slot)) = self.slot.take() {
            let mut tl = shared.timeline.lock();
            while tl.len() <= sec {
                let n = tl.len();
                tl.push(TimeSlot::new(n));
            }
            tl[sec].merge(&slot);
        }
    }

    /// Adds another worker's tallies (the timeline is shared already).
    pub(super) fn merge(&mut self, o: Tally) {
        let _ = self.all.add(&o.all);
        for (k, h) in o.per_op {
            let _ = self.per_op.entry(k).or_insert_with(hist).add(&h);
        }
        for (k, v) in o.labels {
            *self.labels.entry(k).or_default() += v;
        }
        for (k, v) in o.units {
            *self.units.entry(k).or_default() += v;
        }
        self.orders.extend(o.orders);
        self.requests += o.requests;
    }
}

/// What the workers, the ticker and the stopper share.
pub(super) struct Shared {
    pub(super) live: Live,
    pub(super) stop: AtomicBool,
    pub(super) issued: AtomicU64,
    pub(super) timeline: Mutex<Vec<TimeSlot>>,
}

impl Shared {
    /// Nothing counted yet, not stopped.
    pub(super) fn new() -> Shared {
        Shared {
            live: Live::default(),
            stop: AtomicBool::new(false),
            issued: AtomicU64::new(0),
            timeline: Mutex::new(Vec::new()),
        }
    }
}

/// Orders placed (or pings sent) in all: the report's `orders`.
pub(super) fn total_orders(t: &Tally) -> u64 {
    t.per_op
        .get("place")
        .or_else(|| t.per_op.get("ping"))
        .map_or(0, |h| h.len())
}
