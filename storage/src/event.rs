//! The event envelope of SPEC §1: global `seq`, `stream`, per-stream `version`, `type`,
//! `schema`, `at`, `trace_id` and the payload bytes. The payload's own encoding belongs to
//! the domain crate; storage keeps it opaque.

use std::sync::Arc;

/// An event handed to the journal: everything but the `seq`, which the journal assigns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// `sku/{sku}` or `order/{id}`; never contains NUL.
    pub stream: Arc<str>,
    /// The stream's next version (the first event of a stream has version 1).
    pub version: u64,
    /// The event type name, e.g. `OrderCreated`.
    pub event_type: &'static str,
    /// Version of this type's payload encoding.
    pub schema: u16,
    /// Unix milliseconds.
    pub at_ms: u64,
    pub trace_id: Option<Arc<str>>,
    pub payload: Vec<u8>,
}

/// A stored event, owned.
///
/// `idempotency_key` names the (scope, key) whose command this event's append applied:
/// the journal stamps it on the first event of an append that carries an
/// [`crate::IdempotencyWrite`] with `applies` set, so `ordo verify` can prove from the log
/// alone that no key was applied twice while its answer was kept (`idempotency_expires_ms`).
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct EventRecord {
    pub seq: u64,
    pub stream: String,
    pub version: u64,
    pub event_type: String,
    pub schema: u16,
    pub at_ms: u64,
    pub trace_id: Option<String>,
    pub payload: Vec<u8>,
    pub idempotency_key: Option<String>,
    pub idempotency_expires_ms: u64,
}

/// A stored event borrowed from the bytes it was read from: decoding it allocates nothing,
/// which is what full-log replay wants. Field order is the encoding and must match
/// [`EventRecord`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, bincode::Encode, bincode::BorrowDecode)]
pub struct EventView<'a> {
    pub seq: u64,
    pub stream: &'a str,
    pub version: u64,
    pub event_type: &'a str,
    pub schema: u16,
    pub at_ms: u64,
    pub trace_id: Option<&'a str>,
    pub payload: &'a [u8],
    pub idempotency_key: Option<&'a str>,
    pub idempotency_expires_ms: u64,
}

/// The envelope as releases before the idempotency stamp wrote it (value format 1).
#[derive(Debug, Clone, Copy, bincode::BorrowDecode)]
pub(crate) struct EventViewV1<'a> {
    pub seq: u64,
    pub stream: &'a str,
    pub version: u64,
    pub event_type: &'a str,
    pub schema: u16,
    pub at_ms: u64,
    pub trace_id: Option<&'a str>,
    pub payload: &'a [u8],
}

impl<'a> From<EventViewV1<'a>> for EventView<'a> {
    fn from(v: EventViewV1<'a>) -> Self {
        EventView {
            seq: v.seq,
            stream: v.stream,
            version: v.version,
            event_type: v.event_type,
            schema: v.schema,
            at_ms: v.at_ms,
            trace_id: v.trace_id,
            payload: v.payload,
            idempotency_key: None,
            idempotency_expires_ms: 0,
        }
    }
}

impl EventView<'_> {
    pub fn to_record(&self) -> EventRecord {
        EventRecord {
            seq: self.seq,
            stream: self.stream.to_owned(),
            version: self.version,
            event_type: self.event_type.to_owned(),
            schema: self.schema,
            at_ms: self.at_ms,
            trace_id: self.trace_id.map(str::to_owned),
            payload: self.payload.to_vec(),
            idempotency_key: self.idempotency_key.map(str::to_owned),
            idempotency_expires_ms: self.idempotency_expires_ms,
        }
    }
}

impl NewEvent {
    pub(crate) fn view(&self, seq: u64) -> EventView<'_> {
        EventView {
            seq,
            stream: &self.stream,
            version: self.version,
            event_type: self.event_type,
            schema: self.schema,
            at_ms: self.at_ms,
            trace_id: self.trace_id.as_deref(),
            payload: &self.payload,
            idempotency_key: None,
            idempotency_expires_ms: 0,
        }
    }
}

/// Checks a stream name: 1–200 bytes, no NUL (NUL separates name and version in keys).
pub fn valid_stream_name(stream: &str) -> bool {
    !stream.is_empty() && stream.len() <= 200 && !stream.as_bytes().contains(&0)
}
