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

use std::collections::HashMap;
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
        Some(s) => {
            // Stream reads page by seq too: skip what is not after the cursor.
            let mut out: Vec<EventRecord> = store
                .read_stream(s, 1)?
                .into_iter()
                .filter(|e| e.seq > after)
                .collect();
            out.truncate(limit);
            Ok(out)
        }
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
    let mut stats = RecoveryStats::default();
    let mut skus: HashMap<String, Sku> = HashMap::new();
    let mut orders: HashMap<String, Order> = HashMap::new();

    let checkpoint = if ignore_snapshots {
        0
    } else {
        match store.get_meta(META_CHECKPOINT)? {
            Some(v) => v.as_slice().try_into().map(u64::from_be_bytes).unwrap_or(0),
            None => 0,
        }
    };
    stats.checkpoint_seq = checkpoint;

    if !ignore_snapshots {
        store.scan_snapshots("", |snap| {
            let snap = match snap {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "snapshot does not decode; rebuilding from the log");
                    stats.snapshot_failures += 1;
                    return Ok(());
                }
            };
            if let Some(code) = snap.stream.strip_prefix("sku/") {
                match aggregate::decode_snapshot::<Sku>(snap.schema, &snap.state) {
                    Some(s) if s.version == snap.version => {
                        skus.insert(code.to_owned(), s);
                        stats.snapshots_loaded += 1;
                    }
                    _ => stats.snapshot_failures += 1,
                }
            } else if let Some(id) = snap.stream.strip_prefix("order/") {
                if snap.schema < <Order as Aggregate>::SNAPSHOT_SCHEMA {
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
        // Bring every snapshot up to its stream's head: the log after the checkpoint may
        // not hold all of a stream's later events.
        for (code, s) in skus.iter_mut() {
            aggregate::fill(store, &format!("sku/{code}"), s, u64::MAX)?;
        }
        for (id, o) in orders.iter_mut() {
            aggregate::fill(store, &format!("order/{id}"), o, u64::MAX)?;
        }
        orders.retain(|_, o| !o.is_terminal() || o.needs_restore());
    }

    // Replay the log after the checkpoint. `restored` remembers StockRestored per order,
    // for an interrupted cancellation of a confirmed order.
    let mut restored: HashMap<String, Vec<String>> = HashMap::new();
    let mut err: Option<EngineError> = None;
    stats.events_replayed = store.scan_from(checkpoint, |v| {
        let step = (|| -> EngineResult<()> {
            if let Some(code) = v.stream.strip_prefix("sku/") {
                let s = skus.entry(code.to_owned()).or_default();
                if v.version <= s.version {
                    return Ok(());
                }
                if v.version > s.version + 1 {
                    aggregate::fill(store, v.stream, s, v.version)?;
                }
                let ev = decode_sku(v.event_type, v.schema, v.payload).map_err(decode_err)?;
                if let SkuEvent::StockRestored(r) = &ev {
                    restored
                        .entry(r.order_id.clone())
                        .or_default()
                        .push(code.to_owned());
                }
                sku::apply(s, &ev);
            } else if let Some(id) = v.stream.strip_prefix("order/") {
                let o = orders.entry(id.to_owned()).or_default();
                if v.version <= o.version {
                    return Ok(());
                }
                if v.version > o.version + 1 {
                    aggregate::fill(store, v.stream, o, v.version)?;
                }
                let ev = decode_order(v.event_type, v.schema, v.payload).map_err(decode_err)?;
                order::apply(o, &ev, v.at_ms);
                if o.is_terminal() && !o.needs_restore() {
                    orders.remove(id);
                }
            }
            Ok(())
        })();
        match step {
            Ok(()) => Ok(true),
            Err(e) => {
                err = Some(e);
                Ok(false)
            }
        }
    })?;
    if let Some(e) = err {
        return Err(e);
    }

    // PENDING orders that had no actor at the checkpoint. Every event of an order needs
    // its actor, and activation takes the order out of the table, so an order in it had
    // no event since its creation up to the checkpoint; anything later was replayed above
    // and is in `orders`, which takes precedence.
    let checkpoint_pending = if checkpoint > 0 {
        store
            .get_meta(META_PENDING)?
            .map(|b| super::deadlines::decode(&b))
            .unwrap_or_default()
    } else {
        HashMap::new()
    };
    let mut lazy_pending: HashMap<String, u64> = HashMap::new();

    // Holds must belong to a PENDING or PAID order; anything else is a crash's orphan.
    let mut orphan_holds = Vec::new();
    let mut extra_live: HashMap<String, Order> = HashMap::new();
    for (code, s) in &skus {
        for order_id in s.holds.keys() {
            let status = match orders.get(order_id).or_else(|| extra_live.get(order_id)) {
                Some(o) => o.status,
                None if checkpoint_pending.contains_key(order_id) => {
                    // A multi-line order holds in several SKUs: keyed, so once.
                    lazy_pending.insert(order_id.clone(), checkpoint_pending[order_id]);
                    Some(Status::Pending)
                }
                None => {
                    let o = load_order(store, order_id)?;
                    let st = o.status;
                    if matches!(st, Some(Status::Pending | Status::Paid)) {
                        extra_live.insert(order_id.clone(), o);
                    }
                    st
                }
            };
            if !matches!(status, Some(Status::Pending | Status::Paid)) {
                orphan_holds.push((code.clone(), order_id.clone()));
            }
        }
    }
    orders.extend(extra_live);

    // For restores interrupted before the checkpoint, look for their StockRestored events
    // in the log after the cancellation.
    let mut live = Vec::with_capacity(orders.len());
    for (id, o) in orders {
        if !o.is_created() {
            continue; // events of a stream that never got OrderCreated (cannot happen)
        }
        let mut done = restored.remove(&id).unwrap_or_default();
        if o.needs_restore() && done.is_empty() {
            done = restored_since_cancel(store, &o)?;
        }
        live.push((o, done));
    }
    stats.millis = started.elapsed().as_millis() as u64;
    tracing::info!(
        checkpoint = stats.checkpoint_seq,
        snapshots = stats.snapshots_loaded,
        replayed = stats.events_replayed,
        millis = stats.millis,
        "recovered"
    );
    Ok(Recovered {
        skus,
        orders: live,
        orphan_holds,
        lazy_pending: lazy_pending.into_iter().collect(),
        stats,
    })
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
