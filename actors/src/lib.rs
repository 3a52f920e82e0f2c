//! `ordo-engine` (folder `actors/`): the actor engine around Ordo's domain.
//!
//! * [`domain`]: the functional core, its own crate (`ordo-domain`), re-exported here:
//!   pure `decide`/`apply` for SKUs and orders, events with versioned payloads. It knows
//!   no actix, no tokio, no RocksDB and no OpenAPI — Cargo enforces it.
//! * [`engine`]: the actors (one per SKU, one per live order), the registry, recovery and
//!   the embedded API ([`Engine`]).
#![forbid(unsafe_code)]

pub use ordo_domain as domain;
pub mod engine;

pub use domain::order::{PaymentOutcome, ShipmentStep, Status};
pub use engine::recovery_api::{load_sku, verify, RecoveryStats, VerifyReport};
pub use engine::{
    config::{Durability, EngineConfig},
    error::{EngineError, EngineResult},
    render,
    view::{OrderView, SkuView},
    Engine, EngineMetrics, Idempotency, Outcome, PlaceOrder, Render, UpsertSku,
};
