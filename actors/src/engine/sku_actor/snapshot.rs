//! A SKU actor's own snapshots: small ones queued in an append after the events they
//! cover; a hot SKU's (many holds) cloned in O(1) and written off the actor thread.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use ordo_storage::{Append, AppendTicket, Journal};

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
            if let Ok(ticket) = self.snapshot_append() {
                drop(ticket);
            }
            return;
        }
        if self.snapshotting.swap(true, Ordering::AcqRel) {
            return; // the previous one is still being written
        }
        let busy = self.snapshotting.clone();
        let stream = self.stream.clone();
        let spawned = self.snapshot_off_thread(false, move |res| {
            if let Err(e) = res {
                tracing::warn!(stream = %stream, error = %e, "snapshot not written; recovery reads the stream");
            }
            busy.store(false, Ordering::Release);
        });
        if let Err(e) = spawned {
            tracing::warn!(sku = %self.state.sku, error = %e, "snapshot skipped");
            self.snapshotting.store(false, Ordering::Release);
        }
    }

    /// A checkpoint's snapshot: small, queued in an append of its own; large, written off
    /// the actor and the journal's batches and then flushed, so the checkpoint's marker
    /// follows it to disk (at a million holds, encoding here held every order for up to
    /// a second).
    pub(super) fn checkpoint_snapshot(&self) -> EngineResult<SnapshotTicket> {
        if self.state.version == 0 {
            return Ok(SnapshotTicket::Journal(
                self.journal.append(Append::default()),
            ));
        }
        if self.state.holds.len() < self.snapshots.large_holds {
            return self.snapshot_append().map(SnapshotTicket::Journal);
        }
        let (tx, rx) = oneshot::channel();
        self.snapshot_off_thread(true, move |res| {
            let _ = tx.send(res);
        })?;
        Ok(SnapshotTicket::Thread(rx))
    }

    /// A small state's snapshot, encoded here and queued in an append of its own, after
    /// the events it covers.
    fn snapshot_append(&self) -> EngineResult<AppendTicket> {
        let snap = aggregate::snapshot(&self.state, &self.stream)?;
        Ok(self.journal.append(Append {
            snapshots: vec![snap],
            ..Append::default()
        }))
    }

    /// A large state cloned (O(1): its maps are persistent), then encoded and written as
    /// the snapshot cache on a thread of its own once what it covers is durable, and with
    /// `flush` flushed to disk; `done` gets the outcome there.
    fn snapshot_off_thread(
        &self,
        flush: bool,
        done: impl FnOnce(EngineResult<()>) + Send + 'static,
    ) -> EngineResult<()> {
        let (state, stream) = (self.state.clone(), self.stream.clone());
        let journal = self.journal.clone();
        std::thread::Builder::new()
            .name("ordo-snapshot".into())
            .spawn(move || {
                let mut res = write_snapshot_cache(&journal, &state, &stream);
                if flush {
                    res = res.and_then(|()| Ok(journal.store().flush_snapshot_cache()?));
                }
                done(res);
            })
            .map(drop)
            .map_err(|e| EngineError::Unavailable(format!("cannot start a snapshot thread: {e}")))
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
