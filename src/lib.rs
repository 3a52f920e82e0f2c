//! Ordo: an actor-based, in-memory order engine with a durable event log.
//!
//! This crate is the embedded API and the `ordo` command line. A point-of-sale back end
//! embeds the engine like this (no actix or tokio needed in the host):
//!
//! ```no_run
//! use ordo::{Engine, EngineConfig, PlaceOrder, UpsertSku, LineRequest};
//! # fn main() -> Result<(), ordo::EngineError> {
//! let engine = Engine::open(EngineConfig { data_dir: "./data".into(), ..Default::default() })?;
//! futures::executor::block_on(async {
//!     engine.upsert_sku(UpsertSku {
//!         sku: "COFFEE-1KG".into(), name: "Coffee beans 1 kg".into(), price_minor: 1_890,
//!         currency: "EUR".into(), per_customer_limit: None, stock: 40,
//!     }, None).await?;
//!     let order = engine.place_order(PlaceOrder {
//!         customer_id: "till-3".into(),
//!         lines: vec![LineRequest { sku: "COFFEE-1KG".into(), qty: 2 }],
//!     }, None).await?;
//!     engine.pay(&order.id, "cash-0001", ordo::PaymentOutcome::Succeeded, order.total_minor, None).await?;
//!     engine.shutdown().await
//! })
//! # }
//! ```
#![forbid(unsafe_code)]

pub mod bench;
pub mod cli;
pub mod config;
pub mod http;
pub mod shutdown;
pub mod telemetry;
pub mod torture;
pub mod webhooks;

pub use ordo_engine::domain::order::{PaymentOutcome, ShipmentStep, Status};
pub use ordo_engine::domain::{DomainError, LineRequest};
pub use ordo_engine::{
    load_sku, verify, Durability, Engine, EngineConfig, EngineError, EngineMetrics, EngineResult,
    OrderView, PlaceOrder, RecoveryStats, SkuView, UpsertSku, VerifyReport,
};
pub use ordo_storage as storage;

/// The JSON form of a stored event (feed, `ordo events`): the envelope with the payload
/// decoded under its SPEC type name, snake_case fields.
pub fn event_json(r: &ordo_storage::EventRecord) -> serde_json::Value {
    let payload = match ordo_engine::domain::events::decode(&r.event_type, r.schema, &r.payload) {
        Ok(ev) => ev.payload_json(),
        Err(e) => serde_json::json!({ "undecodable": e.to_string() }),
    };
    serde_json::json!({
        "seq": r.seq,
        "stream": r.stream,
        "version": r.version,
        "type": r.event_type,
        "schema": r.schema,
        "at": r.at_ms,
        "trace_id": r.trace_id,
        "payload": payload,
    })
}
