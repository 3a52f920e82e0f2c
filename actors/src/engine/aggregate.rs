//! The one generic path between an aggregate (`ordo_domain::Aggregate`: a SKU, an order)
//! and the log: staging decided events into envelopes, snapshots, loading a state from
//! its snapshot and stream, replaying stored records.

use std::sync::Arc;

use ordo_storage::{EventRecord, NewEvent, SnapshotWrite, Store};

use crate::domain::events::DomainEvent;
use crate::domain::Aggregate;
use crate::engine::error::{EngineError, EngineResult};

/// Applies `events` to `state` and returns their envelopes on `stream`, versions
/// following the state's, all stamped `at_ms`.
pub(crate) fn stage<A: Aggregate>(
    state: &mut A,
    stream: &Arc<str>,
    events: &[A::Event],
    at_ms: u64,
    trace: &Option<Arc<str>>,
) -> Vec<NewEvent> {
    events
        .iter()
        .map(|e| {
            state.apply(e, at_ms);
            NewEvent {
                stream: stream.clone(),
                version: state.version(),
                event_type: e.type_name(),
                schema: e.schema(),
                at_ms,
                trace_id: trace.clone(),
                payload: e.encode_payload(),
            }
        })
        .collect()
}

/// `state` as a snapshot of `stream`; an encoding failure is an error (logged), never an
/// empty snapshot.
pub(crate) fn snapshot<A: Aggregate>(state: &A, stream: &Arc<str>) -> EngineResult<SnapshotWrite> {
    let bytes = bincode::encode_to_vec(state, bincode::config::standard()).map_err(|e| {
        tracing::error!(stream = %stream, error = %e, "cannot encode a snapshot");
        EngineError::Storage(ordo_storage::StorageError::Encode(e.to_string()))
    })?;
    Ok(SnapshotWrite {
        stream: stream.clone(),
        version: state.version(),
        schema: A::SNAPSHOT_SCHEMA,
        state: bytes,
    })
}

/// A snapshot's state, if it is of the current schema and decodes.
pub(crate) fn decode_snapshot<A: Aggregate>(schema: u16, bytes: &[u8]) -> Option<A> {
    if schema != A::SNAPSHOT_SCHEMA {
        return None;
    }
    bincode::decode_from_slice::<A, _>(bytes, bincode::config::standard())
        .ok()
        .map(|(v, _)| v)
}

pub(crate) fn decode_err(e: impl std::fmt::Display) -> EngineError {
    EngineError::Decode(e.to_string())
}

/// Applies one stored record.
pub(crate) fn apply_record<A: Aggregate>(state: &mut A, r: &EventRecord) -> EngineResult<()> {
    let ev = A::decode_event(&r.event_type, r.schema, &r.payload).map_err(decode_err)?;
    state.apply(&ev, r.at_ms);
    Ok(())
}

/// Brings `state` up to version `upto` (exclusive) from its stream.
pub(crate) fn fill<A: Aggregate>(
    store: &Store,
    stream: &str,
    state: &mut A,
    upto: u64,
) -> EngineResult<()> {
    for r in store.read_stream(stream, state.version() + 1)? {
        if r.version >= upto {
            break;
        }
        apply_record(state, &r)?;
    }
    Ok(())
}

/// The aggregate `id` from its snapshot (when `use_snapshot` and one of the current
/// schema exists) and the stream after it, events of versions below `upto` only.
pub(crate) fn load<A: Aggregate>(
    store: &Store,
    id: &str,
    use_snapshot: bool,
    upto: u64,
) -> EngineResult<A> {
    let stream = A::stream(id);
    let mut state = if use_snapshot {
        match store.load_snapshot(&stream) {
            Ok(Some(snap)) => decode_snapshot::<A>(snap.schema, &snap.state)
                .filter(|s| s.version() == snap.version)
                .unwrap_or_default(),
            _ => A::default(),
        }
    } else {
        A::default()
    };
    fill(store, &stream, &mut state, upto)?;
    Ok(state)
}

/// How a checkpoint learns that an actor's snapshot is stored: through the journal (a
/// small state, in an append of its own), or from the thread that encodes and writes a
/// large one outside the actor and the journal's batches.
pub(crate) enum SnapshotTicket {
    Journal(ordo_storage::AppendTicket),
    Thread(tokio::sync::oneshot::Receiver<EngineResult<()>>),
}

impl SnapshotTicket {
    /// Resolves once the snapshot is stored (or with why it was not).
    pub(crate) async fn stored(self) -> EngineResult<()> {
        match self {
            SnapshotTicket::Journal(t) => t.await.map(|_| ()).map_err(Into::into),
            SnapshotTicket::Thread(rx) => rx
                .await
                .unwrap_or_else(|_| Err(EngineError::Unavailable("snapshot thread ended".into()))),
        }
    }
}
