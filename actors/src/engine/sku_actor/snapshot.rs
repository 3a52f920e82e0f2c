//! A SKU actor's own snapshots: small ones queued in an append after the events they
//! cover; a hot SKU's (many holds) cloned in O(1) and written off the actor thread.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use ordo_storage::{Append, Journal};

use super::SkuActor;
use crate::domain::sku::Sku;
use crate::engine::aggregate::{self, SnapshotTicket};
use crate::engine::error::{EngineError, EngineResult};
use tokio::sync::oneshot;

impl SkuActor {
    /// Takes a snapshot once `due` events were applied since the last one. A small state
    /// is encoded here and queued in an append of its own, after the events it covers. A
    /// large one (a hot SKU's many holds) is cloned — O(1): its maps are persistent — and
    /// encoded and written on a thread of its own once what it covers is durable, so
    /// neither the actor nor the journal's fsynced batches wait for O(holds) work.
    pub(super) fn snapshot_if_due(&mut self, due: u64) {
        if self.since_snapshot < due {
            return;
        }
        self.since_snapshot = 0;
        if self.state.holds.len() < self.snapshots.large_holds {
            // Nobody waits for it. A snapshot that cannot be encoded is skipped (logged):
            // recovery reads the stream instead.
            if let Ok(snap) = aggregate::snapshot(&self.state, &self.stream) {
                drop(self.journal.append(Append {
                    snapshots: vec![snap],
                    ..Append::default()
                }));
            }
            return;
        }
        if self.snapshotting.swap(true, Ordering::AcqRel) {
            return; // the previous one is still being written
        }
        let (state, stream) = (self.state.clone(), self.stream.clone());
        let (journal, busy) = (self.journal.clone(), self.snapshotting.clone());
        let spawned = std::thread::Builder::new()
            .name("ordo-snapshot".into())
            .spawn(move || {
                if let Err(e) = write_snapshot_cache(&journal, &state, &stream) {
                    tracing::warn!(stream = %stream, error = %e, "snapshot not written; recovery reads the stream");
                }
                busy.store(false, Ordering::Release);
            });
        if let Err(e) = spawned {
            tracing::warn!(sku = %self.state.sku, error = %e, "cannot start a snapshot thread; snapshot skipped");
            self.snapshotting.store(false, Ordering::Release);
        }
    }

    /// A checkpoint's snapshot. A small state is encoded here and queued in an append of
    /// its own. A large one is cloned (O(1)) and encoded and written on a thread of its
    /// own, then flushed, so the checkpoint's marker follows it to disk — the actor and
    /// the journal's batches never carry O(holds) work (at a million holds that held
    /// every order for up to a second).
    pub(super) fn checkpoint_snapshot(&self) -> EngineResult<SnapshotTicket> {
        if self.state.version == 0 {
            return Ok(SnapshotTicket::Journal(
                self.journal.append(Append::default()),
            ));
        }
        if self.state.holds.len() < self.snapshots.large_holds {
            let snap = aggregate::snapshot(&self.state, &self.stream)?;
            return Ok(SnapshotTicket::Journal(self.journal.append(Append {
                snapshots: vec![snap],
                ..Append::default()
            })));
        }
        let (state, stream, journal) = (
            self.state.clone(),
            self.stream.clone(),
            self.journal.clone(),
        );
        let (tx, rx) = oneshot::channel();
        std::thread::Builder::new()
            .name("ordo-snapshot".into())
            .spawn(move || {
                let res = write_snapshot_cache(&journal, &state, &stream)
                    .and_then(|()| Ok(journal.store().flush_snapshot_cache()?));
                let _ = tx.send(res);
            })
            .map_err(|e| EngineError::Unavailable(format!("snapshot thread: {e}")))?;
        Ok(SnapshotTicket::Thread(rx))
    }

    /// Events between snapshots: at least `snapshot_every`, and at least as many as there
    /// are holds, so a snapshot's cost per event stays constant.
    pub(super) fn snapshot_due(&self) -> u64 {
        self.snapshots.every.max(self.state.holds.len() as u64)
    }
}

/// One large snapshot encoded and written at a time, whatever the number of hot SKUs: a
/// checkpoint starts a thread for each, and each encode holds a copy of its holds.
static LARGE_SNAPSHOT_WRITES: parking_lot::Mutex<()> = parking_lot::const_mutex(());

/// Encodes `state` and stores it as `stream`'s snapshot cache once everything queued
/// before now (so every event it covers) is durable. Runs on a snapshot thread.
fn write_snapshot_cache(journal: &Journal, state: &Sku, stream: &Arc<str>) -> EngineResult<()> {
    let _one_at_a_time = LARGE_SNAPSHOT_WRITES.lock();
    let snap = aggregate::snapshot(state, stream)?;
    let barrier = journal.append(Append::default()).wait()?;
    journal
        .store()
        .save_snapshot_cache(&ordo_storage::SnapshotRecord {
            stream: stream.to_string(),
            version: snap.version,
            seq: barrier.last_seq,
            schema: snap.schema,
            state: snap.state,
        })?;
    Ok(())
}
