//! `ordo-storage`: Ordo's durable event log, snapshots and idempotency store on RocksDB.
//!
//! This crate knows bytes and envelopes, not the domain: payloads and snapshot states are
//! opaque bytes with a schema number, encoded by `ordo-engine`.
//!
//! * [`Store`] opens RocksDB with the column families of SPEC §3 (`events`, `streams`,
//!   `snapshots`, `idempotency`, `meta`) and serves every read.
//! * [`Journal`] is the single writer of the log, with group commit: see its module docs.
//!   It counts what it writes in [`JournalMetrics`], which its owner registers.
//!
//! Every stored value is a format byte followed by bincode, so encodings can change
//! without breaking stores written by older releases.
#![forbid(unsafe_code)]

mod codec;
mod error;
mod event;
mod journal;
mod metrics;
mod store;

pub use codec::{EVENT_FORMAT_V2, VALUE_FORMAT_V1};
pub use error::{Result, StorageError};
pub use event::{valid_stream_name, EventRecord, EventView, NewEvent};
pub use journal::{
    Append, AppendTicket, Completion, HoldWrites, IdempotencyWrite, Journal, JournalOptions,
    Receipt, SnapshotWrite,
};
pub use metrics::JournalMetrics;
pub use store::{
    now_ms, Durability, EventIter, IdempotencyRecord, PutOutcome, SnapshotRecord, Store,
    StoreIdentity, StoreOptions, STORE_FORMAT,
};
