//! `ordo-actors`: Ordo's domain core and the actors around it.
//!
//! * [`domain`]: pure `decide`/`apply` for SKUs and orders, events with versioned
//!   payloads. No actix, no I/O.
//! * [`engine`]: the actors (one per SKU, one per live order), the registry, recovery and
//!   the embedded API ([`Engine`]).
#![forbid(unsafe_code)]

pub mod domain;
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
