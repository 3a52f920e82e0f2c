//! What every aggregate (a stream's state: a SKU, an order) offers the engine: its
//! commands and events, the prefix of its streams, its snapshot schema, and the pure
//! `decide`/`apply` pair. The engine has one generic path for all of them — staging
//! events into envelopes, loading from snapshot + stream, replaying records.

use crate::events::{decode_order, decode_sku, DecodeError, DomainEvent, OrderEvent, SkuEvent};
use crate::order::{self, Order, OrderCommand};
use crate::sku::{self, Sku, SkuCommand};
use crate::DomainResult;

pub trait Aggregate: Default + Clone + bincode::Encode + bincode::Decode<()> {
    type Command;
    type Event: DomainEvent;
    /// Streams of this aggregate are named `{STREAM_PREFIX}{id}`.
    const STREAM_PREFIX: &'static str;
    /// Version of this aggregate's snapshot encoding; a snapshot of another schema is not
    /// decoded (the state is rebuilt from its stream).
    const SNAPSHOT_SCHEMA: u16;

    /// The stream version of the last applied event (0: none).
    fn version(&self) -> u64;
    /// What `cmd` means for this state. Pure.
    fn decide(&self, cmd: &Self::Command) -> DomainResult<Vec<Self::Event>>;
    /// Applies `ev` (total: never fails). `at_ms` is the event envelope's time.
    fn apply(&mut self, ev: &Self::Event, at_ms: u64);
    /// Decodes a stored payload of this aggregate's stream, upcasting old schemas.
    fn decode_event(
        event_type: &str,
        schema: u16,
        payload: &[u8],
    ) -> Result<Self::Event, DecodeError>;

    /// The stream of the aggregate `id`.
    fn stream(id: &str) -> String {
        format!("{}{id}", Self::STREAM_PREFIX)
    }
}

impl Aggregate for Sku {
    type Command = SkuCommand;
    type Event = SkuEvent;
    const STREAM_PREFIX: &'static str = "sku/";
    const SNAPSHOT_SCHEMA: u16 = 1;

    fn version(&self) -> u64 {
        self.version
    }
    fn decide(&self, cmd: &SkuCommand) -> DomainResult<Vec<SkuEvent>> {
        sku::decide(self, cmd)
    }
    fn apply(&mut self, ev: &SkuEvent, _at_ms: u64) {
        sku::apply(self, ev)
    }
    fn decode_event(
        event_type: &str,
        schema: u16,
        payload: &[u8],
    ) -> Result<SkuEvent, DecodeError> {
        decode_sku(event_type, schema, payload)
    }
}

impl Aggregate for Order {
    type Command = OrderCommand;
    type Event = OrderEvent;
    const STREAM_PREFIX: &'static str = "order/";
    /// 2: payment attempts and typed refunds and failure reasons.
    const SNAPSHOT_SCHEMA: u16 = 2;

    fn version(&self) -> u64 {
        self.version
    }
    fn decide(&self, cmd: &OrderCommand) -> DomainResult<Vec<OrderEvent>> {
        order::decide(self, cmd)
    }
    fn apply(&mut self, ev: &OrderEvent, at_ms: u64) {
        order::apply(self, ev, at_ms)
    }
    fn decode_event(
        event_type: &str,
        schema: u16,
        payload: &[u8],
    ) -> Result<OrderEvent, DecodeError> {
        decode_order(event_type, schema, payload)
    }
}
