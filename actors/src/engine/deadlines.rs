//! PENDING orders that have no actor, by reservation deadline.
//!
//! An order does not get an actor when it is placed: it is a ULID and a deadline here
//! (about 100 bytes instead of an actor's mailbox, context, timer and state). It gets an
//! actor when something happens to it — a payment, a cancellation, a read — or when its
//! deadline passes: the driver activates it from the log, and the actor's own timer
//! expires it at once. Entries leave the table when an actor takes the order over.
//!
//! One mutex: inserts and removals are a few hundred nanoseconds, far below the rest of
//! a placement, and the driver takes due entries in one short critical section. Both
//! indexes are B-trees: they never rehash, so no insert stalls the table for O(entries)
//! (a hash map doubling at a million PENDING orders did), and ULIDs, minted in time
//! order, go in at the right edge. The
//! table's size is kept in a gauge (`ordo_pending_orders_without_actor`), set under that
//! mutex whenever the size changes, so it always matches the table.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use parking_lot::Mutex;
use prometheus::IntGauge;

#[derive(Default)]
struct Table {
    by_time: BTreeSet<(u64, u128)>,
    by_id: BTreeMap<u128, u64>,
}

pub(crate) struct Deadlines {
    table: Mutex<Table>,
    /// The number of entries, for `/metrics`.
    size: IntGauge,
}

impl Table {
    fn size(&self) -> i64 {
        i64::try_from(self.by_id.len()).unwrap_or(i64::MAX)
    }
}

impl Deadlines {
    /// An empty table that keeps its size in `size`.
    pub(crate) fn new(size: IntGauge) -> Self {
        size.set(0);
        Deadlines {
            table: Mutex::default(),
            size,
        }
    }

    /// Records `id` as due at `at_ms`; false if `id` is not a ULID (the caller then keeps
    /// an actor for it instead).
    pub(crate) fn insert(&self, id: &str, at_ms: u64) -> bool {
        let Ok(u) = ulid::Ulid::from_string(id) else {
            return false;
        };
        let mut t = self.table.lock();
        if let Some(old) = t.by_id.insert(u.0, at_ms) {
            t.by_time.remove(&(old, u.0));
        }
        t.by_time.insert((at_ms, u.0));
        self.size.set(t.size());
        true
    }

    pub(crate) fn remove(&self, id: &str) {
        let Ok(u) = ulid::Ulid::from_string(id) else {
            return;
        };
        let mut t = self.table.lock();
        if let Some(at) = t.by_id.remove(&u.0) {
            t.by_time.remove(&(at, u.0));
            self.size.set(t.size());
        }
    }

    /// Removes and returns up to `max` ids due at `now_ms`.
    pub(crate) fn take_due(&self, now_ms: u64, max: usize) -> Vec<String> {
        let mut t = self.table.lock();
        let mut out = Vec::new();
        while out.len() < max {
            let Some(&(at, id)) = t.by_time.first() else {
                break;
            };
            if at > now_ms {
                break;
            }
            t.by_time.pop_first();
            t.by_id.remove(&id);
            out.push(ulid::Ulid(id).to_string());
        }
        self.size.set(t.size());
        out
    }

    /// The earliest deadline.
    pub(crate) fn next(&self) -> Option<u64> {
        self.table.lock().by_time.first().map(|(at, _)| *at)
    }

    pub(crate) fn len(&self) -> usize {
        self.table.lock().by_id.len()
    }

    /// The table as bytes for the checkpoint at `checkpoint`: that seq, then (ULID,
    /// deadline) pairs, 24 bytes each. Read in slices of [`ENCODE_SLICE`] entries, the
    /// mutex taken per slice, so placements never wait for a walk of a million entries.
    /// Entries that come or go during the walk may be in it or not; the table is only a
    /// hint for recovery (see [`decode`]), so either is safe.
    pub(crate) fn encode(&self, checkpoint: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.len() * 24);
        out.extend_from_slice(&checkpoint.to_be_bytes());
        let mut from = 0u128;
        loop {
            let t = self.table.lock();
            let mut last = None;
            for (id, at) in t.by_id.range(from..).take(ENCODE_SLICE) {
                out.extend_from_slice(&id.to_be_bytes());
                out.extend_from_slice(&at.to_be_bytes());
                last = Some(*id);
            }
            drop(t);
            match last.and_then(|id| id.checked_add(1)) {
                Some(next) => from = next,
                None => break,
            }
        }
        out
    }
}

/// Entries [`Deadlines::encode`] reads under one hold of the mutex.
const ENCODE_SLICE: usize = 4096;

/// Reads what [`Deadlines::encode`] wrote for the checkpoint at `checkpoint`: order id →
/// deadline. A table of another checkpoint (the one it was written for never reached
/// the marker's durability: a crash between them) or a damaged one is `None`: recovery
/// then reads those orders from their streams. Tables written by releases before the
/// seq tag (a multiple of 24 bytes, stored atomically with their marker) are taken as is.
pub(crate) fn decode(bytes: &[u8], checkpoint: u64) -> Option<HashMap<String, u64>> {
    let pairs = match bytes.len() % 24 {
        0 => bytes,
        8 if bytes[..8] == checkpoint.to_be_bytes() => &bytes[8..],
        _ => return None,
    };
    Some(
        pairs
            .chunks_exact(24)
            .filter_map(|c| {
                let id = u128::from_be_bytes(c[..16].try_into().ok()?);
                let at = u64::from_be_bytes(c[16..].try_into().ok()?);
                Some((ulid::Ulid(id).to_string(), at))
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_ids_come_out_in_deadline_order_once() {
        let size = IntGauge::new("size", "entries").unwrap();
        let d = Deadlines::new(size.clone());
        let ids: Vec<String> = (0..3).map(|_| ulid::Ulid::new().to_string()).collect();
        assert!(d.insert(&ids[0], 30));
        assert!(d.insert(&ids[1], 10));
        assert!(d.insert(&ids[2], 20));
        assert!(!d.insert("not-a-ulid", 5));
        d.insert(&ids[2], 40); // moved
        d.remove(&ids[0]);
        assert_eq!(d.next(), Some(10));
        assert_eq!(d.take_due(25, 10), vec![ids[1].clone()]);
        assert_eq!(d.take_due(25, 10), Vec::<String>::new());
        assert_eq!(d.len(), 1);
        assert_eq!(size.get(), 1);
        let back = decode(&d.encode(7), 7).unwrap();
        assert_eq!(back.get(&ids[2]), Some(&40));
        assert_eq!(back.len(), 1);
        assert_eq!(d.take_due(100, 10), vec![ids[2].clone()]);
        assert_eq!(d.len(), 0);
        assert_eq!(size.get(), 0);
    }

    /// The table is walked slice by slice, and a table is taken only for the checkpoint
    /// it was written for (or untagged, as older releases wrote it with their marker).
    #[test]
    fn a_table_spans_slices_and_is_read_only_for_its_own_checkpoint() {
        let d = Deadlines::new(IntGauge::new("size", "entries").unwrap());
        let n = 3 * ENCODE_SLICE + 5;
        let ids: Vec<String> = (0..n).map(|_| ulid::Ulid::new().to_string()).collect();
        for (i, id) in ids.iter().enumerate() {
            d.insert(id, i as u64);
        }
        let bytes = d.encode(42);
        assert_eq!(bytes.len(), 8 + 24 * n);
        let back = decode(&bytes, 42).unwrap();
        assert_eq!(back.len(), n);
        assert!(ids.iter().enumerate().all(|(i, id)| back[id] == i as u64));
        assert!(decode(&bytes, 41).is_none(), "another checkpoint's table");
        assert!(decode(&bytes[..bytes.len() - 1], 42).is_none(), "damaged");
        let untagged = &bytes[8..];
        assert_eq!(decode(untagged, 9).unwrap().len(), n);
    }
}
