//! Recovery: rebuild SKU and live-order state from the store, and find what a crash left
//! half done.
//!
//! 1. Start from the last checkpoint's snapshots (unless told to ignore them). Each
//!    snapshot is brought up to date with its stream's later events, so a stale or
//!    partial snapshot is never trusted beyond what it covers; one that does not decode is
//!    counted and rebuilt from the log.
//! 2. Replay the log after the checkpoint through `apply`. A stream met at a version past
//!    the next one is first filled from its own index (an order created before the
//!    checkpoint, say).
//! 3. Holds whose order is not PENDING/PAID are orphans of a crash and are released;
//!    PAID orders are redriven to CONFIRMED; cancelled confirmed orders without their
//!    refund marker get the rest of their stock restored.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use ordo_storage::{EventRecord, Store};

use crate::domain::events::{decode_order, decode_sku};
use crate::domain::order::{self, Order, Status};
use crate::domain::sku::{self, Sku};
use crate::domain::Aggregate;
use crate::domain::SkuEvent;
use crate::engine::aggregate::{self, decode_err};
use crate::engine::error::{EngineError, EngineResult};

pub(crate) const META_CHECKPOINT: &str = "checkpoint";
/// The checkpoint's table of PENDING orders without an actor (see `deadlines`).
pub(crate) const META_PENDING: &str = "checkpoint/pending";

/// Figures from one recovery.
#[derive(Debug, Clone, Default)]
pub struct RecoveryStats {
    pub checkpoint_seq: u64,
    pub snapshots_loaded: u64,
    pub snapshot_failures: u64,
    pub events_replayed: u64,
    pub millis: u64,
}

pub(crate) struct Recovered {
    pub skus: HashMap<String, Sku>,
    /// Live orders, each with the SKUs already restored (for an interrupted restore).
    pub orders: Vec<(Order, Vec<String>)>,
    /// (sku, order id) holds to release.
    pub orphan_holds: Vec<(String, String)>,
    /// PENDING orders known from the checkpoint's table and untouched since: (id, deadline).
    pub lazy_pending: Vec<(String, u64)>,
    pub stats: RecoveryStats,
}

/// An order read from its stream.
pub(crate) fn load_order(store: &Store, id: &str) -> EngineResult<Order> {
    aggregate::load::<Order>(store, id, false, u64::MAX)
}

/// An order read from its stream, events of versions below `upto` only.
pub(crate) fn load_order_upto(store: &Store, id: &str, upto: u64) -> EngineResult<Order> {
    aggregate::load::<Order>(store, id, false, upto)
}

/// A SKU read from its snapshot and stream.
pub fn load_sku(store: &Store, sku: &str) -> EngineResult<Sku> {
    aggregate::load::<Sku>(store, sku, true, u64::MAX)
}

pub(crate) fn read_events(
    store: &Store,
    after: u64,
    limit: usize,
    stream: Option<&str>,
) -> EngineResult<Vec<EventRecord>> {
    match stream {
        // Stream reads page by seq too, through the stream's index.
        Some(s) => Ok(store.read_stream_page(s, after, limit)?),
        None => {
            let mut out = Vec::with_capacity(limit.min(1024));
            for r in store.read_from(after) {
                if out.len() >= limit {
                    break;
                }
                out.push(r?);
            }
            Ok(out)
        }
    }
}

pub(crate) fn recover(store: &Store, ignore_snapshots: bool) -> EngineResult<Recovered> {
    let started = Instant::now();
    let mut r = Rebuild::new(store);
    let checkpoint = if ignore_snapshots {
        0
    } else {
        r.load_snapshots()?;
        r.checkpoint_seq()?
    };
    r.stats.checkpoint_seq = checkpoint;
    r.replay_after(checkpoint)?;
    let pending = r.checkpoint_pending(checkpoint)?;
    let (orphan_holds, lazy_pending) = r.sort_holds(&pending)?;
    let orders = r.live_orders()?;
    let mut stats = r.stats;
    stats.millis = started.elapsed().as_millis() as u64;
    tracing::info!(
        checkpoint = stats.checkpoint_seq,
        snapshots = stats.snapshots_loaded,
        replayed = stats.events_replayed,
        millis = stats.millis,
        "recovered"
    );
    Ok(Recovered {
        skus: r.skus,
        orders,
        orphan_holds,
        lazy_pending,
        stats,
    })
}

/// The state being rebuilt, step by step (see the module docs).
struct Rebuild<'a> {
    store: &'a Store,
    stats: RecoveryStats,
    skus: HashMap<String, Sku>,
    /// Orders that may need an actor (not terminal, or a restock to finish).
    orders: HashMap<String, Order>,
    /// StockRestored per order met in the replay (an interrupted cancellation of a
    /// confirmed order).
    restored: HashMap<String, Vec<String>>,
    /// Orders found ended (and dropped from `orders`) in a snapshot or the replay: the
    /// checkpoint's table of PENDING orders is out of date for them.
    ended: HashSet<String>,
}

impl<'a> Rebuild<'a> {
    fn new(store: &'a Store) -> Self {
        Rebuild {
            store,
            stats: RecoveryStats::default(),
            skus: HashMap::new(),
            orders: HashMap::new(),
            restored: HashMap::new(),
            ended: HashSet::new(),
        }
    }

    /// The seq the last checkpoint covers (0: none).
    fn checkpoint_seq(&self) -> EngineResult<u64> {
        Ok(match self.store.get_meta(META_CHECKPOINT)? {
            Some(v) => v.as_slice().try_into().map(u64::from_be_bytes).unwrap_or(0),
            None => 0,
        })
    }

    /// Every snapshot, each brought up to its stream's head (the log after the
    /// checkpoint may not hold all of a stream's later events). One that does not decode
    /// is counted and its state rebuilt from the log.
    fn load_snapshots(&mut self) -> EngineResult<()> {
        let (skus, orders, stats) = (&mut self.skus, &mut self.orders, &mut self.stats);
        self.store.scan_snapshots("", |snap| {
            let snap = match snap {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "snapshot does not decode; rebuilding from the log");
                    stats.snapshot_failures += 1;
                    return Ok(());
                }
            };
            if let Some(code) = snap.stream.strip_prefix(Sku::STREAM_PREFIX) {
                match aggregate::decode_snapshot::<Sku>(snap.schema, &snap.state) {
                    Some(s) if s.version == snap.version => {
                        skus.insert(code.to_owned(), s);
                        stats.snapshots_loaded += 1;
                    }
                    _ => stats.snapshot_failures += 1,
                }
            } else if let Some(id) = snap.stream.strip_prefix(Order::STREAM_PREFIX) {
                if snap.schema < Order::SNAPSHOT_SCHEMA {
                    // Written by an older release (no payment attempts): the order is
                    // rebuilt from its stream below, like a snapshot-less one.
                    orders.insert(id.to_owned(), Order::default());
                    return Ok(());
                }
                match aggregate::decode_snapshot::<Order>(snap.schema, &snap.state) {
                    Some(o) if o.version == snap.version => {
                        orders.insert(id.to_owned(), o);
                        stats.snapshots_loaded += 1;
                    }
                    _ => stats.snapshot_failures += 1,
                }
            }
            Ok(())
        })?;
        for (code, s) in self.skus.iter_mut() {
            aggregate::fill(self.store, &Sku::stream(code), s, u64::MAX)?;
        }
        for (id, o) in self.orders.iter_mut() {
            aggregate::fill(self.store, &Order::stream(id), o, u64::MAX)?;
        }
        // A terminal order's snapshot is deleted when its actor leaves; those of earlier
        // releases (or of a crash in between) are deleted here, so start-up stops
        // re-reading them.
        let mut done: Vec<String> = Vec::new();
        self.orders.retain(|id, o| {
            let keep = !o.is_terminal() || o.needs_restore();
            if !keep {
                done.push(id.clone());
            }
            keep
        });
        for id in done {
            if let Err(e) = self.store.delete_snapshot(&Order::stream(&id)) {
                tracing::warn!(order = %id, error = %e, "cannot delete a terminal order's snapshot");
            }
            self.ended.insert(id);
        }
        Ok(())
    }

    /// Replays the log after `checkpoint` through `apply`.
    fn replay_after(&mut self, checkpoint: u64) -> EngineResult<()> {
        let store = self.store;
        let mut err: Option<EngineError> = None;
        self.stats.events_replayed = store.scan_from(checkpoint, |v| match self.replay(&v) {
            Ok(()) => Ok(true),
            Err(e) => {
                err = Some(e);
                Ok(false)
            }
        })?;
        err.map_or(Ok(()), Err)
    }

    /// One event of the replay. A stream met at a version past the next one is first
    /// filled from its own index (a stream whose earlier events precede the checkpoint).
    fn replay(&mut self, v: &ordo_storage::EventView<'_>) -> EngineResult<()> {
        if let Some(code) = v.stream.strip_prefix(Sku::STREAM_PREFIX) {
            let s = self.skus.entry(code.to_owned()).or_default();
            if v.version <= s.version {
                return Ok(());
            }
            if v.version > s.version + 1 {
                aggregate::fill(self.store, v.stream, s, v.version)?;
            }
            let ev = decode_sku(v.event_type, v.schema, v.payload).map_err(decode_err)?;
            if let SkuEvent::StockRestored(r) = &ev {
                self.restored
                    .entry(r.order_id.clone())
                    .or_default()
                    .push(code.to_owned());
            }
            sku::apply(s, &ev);
        } else if let Some(id) = v.stream.strip_prefix(Order::STREAM_PREFIX) {
            let o = self.orders.entry(id.to_owned()).or_default();
            if v.version <= o.version {
                return Ok(());
            }
            if v.version > o.version + 1 {
                aggregate::fill(self.store, v.stream, o, v.version)?;
            }
            let ev = decode_order(v.event_type, v.schema, v.payload).map_err(decode_err)?;
            order::apply(o, &ev, v.at_ms);
            if o.is_terminal() && !o.needs_restore() {
                self.orders.remove(id);
                self.ended.insert(id.to_owned());
            }
        }
        Ok(())
    }

    /// PENDING orders that had no actor at the checkpoint. Every event of an order needs
    /// its actor, and activation takes the order out of the table, so an order in it had
    /// no event since its creation up to the checkpoint; anything later was replayed and
    /// is in `orders`, which takes precedence.
    fn checkpoint_pending(&self, checkpoint: u64) -> EngineResult<HashMap<String, u64>> {
        if checkpoint == 0 {
            return Ok(HashMap::new());
        }
        let Some(bytes) = self.store.get_meta(META_PENDING)? else {
            return Ok(HashMap::new());
        };
        Ok(
            super::deadlines::decode(&bytes, checkpoint).unwrap_or_else(|| {
                tracing::warn!(
                checkpoint,
                "the checkpoint's table of PENDING orders is missing or of another checkpoint; \
                 their orders are read from their streams"
            );
                HashMap::new()
            }),
        )
    }

    /// Holds must belong to a PENDING or PAID order; anything else is a crash's orphan
    /// (its order never became durable, or was cancelled before the release). Returns the
    /// orphans and the PENDING orders known only from the checkpoint's table.
    #[allow(clippy::type_complexity)]
    fn sort_holds(
        &mut self,
        checkpoint_pending: &HashMap<String, u64>,
    ) -> EngineResult<(Vec<(String, String)>, Vec<(String, u64)>)> {
        let mut orphans = Vec::new();
        let mut lazy_pending: HashMap<String, u64> = HashMap::new();
        let mut extra_live: HashMap<String, Order> = HashMap::new();
        for (code, s) in &self.skus {
            for order_id in s.holds.keys() {
                let known = self
                    .orders
                    .get(order_id)
                    .or_else(|| extra_live.get(order_id));
                let status = match known {
                    Some(o) => o.status,
                    None if checkpoint_pending.contains_key(order_id)
                        && !self.ended.contains(order_id) =>
                    {
                        // A multi-line order holds in several SKUs: keyed, so once.
                        lazy_pending.insert(order_id.clone(), checkpoint_pending[order_id]);
                        Some(Status::Pending)
                    }
                    None => {
                        let o = load_order(self.store, order_id)?;
                        let st = o.status;
                        if matches!(st, Some(Status::Pending | Status::Paid)) {
                            extra_live.insert(order_id.clone(), o);
                        }
                        st
                    }
                };
                if !matches!(status, Some(Status::Pending | Status::Paid)) {
                    orphans.push((code.clone(), order_id.clone()));
                }
            }
        }
        self.orders.extend(extra_live);
        Ok((orphans, lazy_pending.into_iter().collect()))
    }

    /// The live orders, each with the SKUs already restored for an interrupted restock
    /// (looked up in the log after the cancellation when it precedes the checkpoint).
    fn live_orders(&mut self) -> EngineResult<Vec<(Order, Vec<String>)>> {
        let mut live = Vec::with_capacity(self.orders.len());
        for (id, o) in std::mem::take(&mut self.orders) {
            if !o.is_created() {
                continue; // events of a stream that never got OrderCreated (cannot happen)
            }
            let mut done = self.restored.remove(&id).unwrap_or_default();
            if o.needs_restore() && done.is_empty() {
                done = restored_since_cancel(self.store, &o)?;
            }
            live.push((o, done));
        }
        Ok(live)
    }
}

/// SKUs for which a StockRestored of `o` follows its cancellation in the log.
fn restored_since_cancel(store: &Store, o: &Order) -> EngineResult<Vec<String>> {
    let stream = format!("order/{}", o.id);
    let cancel_seq = store
        .read_stream(&stream, 1)?
        .into_iter()
        .find(|r| r.event_type == "OrderCancelled")
        .map(|r| r.seq)
        .unwrap_or(0);
    let mut done = Vec::new();
    let mut err = None;
    store.scan_from(cancel_seq, |v| {
        if v.event_type == "StockRestored" {
            match decode_sku(v.event_type, v.schema, v.payload) {
                Ok(SkuEvent::StockRestored(r)) if r.order_id == o.id => {
                    done.push(v.stream.trim_start_matches("sku/").to_owned())
                }
                Ok(_) => {}
                Err(e) => {
                    err = Some(decode_err(e));
                    return Ok(false);
                }
            }
        }
        Ok(true)
    })?;
    match err {
        Some(e) => Err(e),
        None => Ok(done),
    }
}
