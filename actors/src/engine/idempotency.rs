//! A command's idempotency record, written in the same journal append as the command's
//! events (SPEC §2 "One command, one atomic append").
//!
//! The engine does not know what a caller's stored answer looks like (the HTTP edge
//! stores status and body); the caller hands over a [`Render`] that turns the command's
//! [`Outcome`] into the bytes to keep. The actor that decides the command renders it
//! right after applying its events and puts the record in the same append, so the
//! events and the answer become durable together or not at all, and the answer is sent
//! only after that. Commands refused before reaching an actor (unknown ids, invalid
//! input) store their answer in an append of their own; nothing changed, so nothing
//! else has to be atomic with it.

use std::sync::Arc;
use std::time::Duration;

use ordo_storage::{IdempotencyRecord, IdempotencyWrite};

use crate::engine::error::EngineError;
use crate::engine::view::{OrderView, SkuView};

/// What a command came to, for rendering its stored answer.
#[derive(Debug)]
pub enum Outcome<'a> {
    /// A SKU command (`created`: the SKU was registered by it).
    Sku {
        result: Result<&'a SkuView, &'a EngineError>,
        created: bool,
    },
    /// An order command, or a placement (a FAILED placement is
    /// [`EngineError::OrderFailed`]).
    Order(Result<&'a OrderView, &'a EngineError>),
    /// The command is applied and durable, but its saga goes on (a payment's stock
    /// deduction, a cancelled confirmed order's restock): a retry after a crash in
    /// between is answered with the order as it then is.
    Applied { order_id: &'a str },
}

impl Outcome<'_> {
    /// Whether the command succeeded (an applied saga counts as success).
    pub fn is_ok(&self) -> bool {
        match self {
            Outcome::Sku { result, .. } => result.is_ok(),
            Outcome::Order(result) => result.is_ok(),
            Outcome::Applied { .. } => true,
        }
    }
}

/// Turns an outcome into the bytes stored under the key; `None` keeps nothing (answers
/// that are the server's fault, which a retry should run again).
pub type Render = Arc<dyn Fn(Outcome<'_>) -> Option<Vec<u8>> + Send + Sync>;

/// Wraps a closure as a [`Render`] (the bound makes it take outcomes of any lifetime).
pub fn render<F>(f: F) -> Render
where
    F: Fn(Outcome<'_>) -> Option<Vec<u8>> + Send + Sync + 'static,
{
    Arc::new(f)
}

/// The idempotency of one command: its key (already scoped by the caller), a digest of
/// the request, how long the answer is kept, and how it is rendered.
#[derive(Clone)]
pub struct Idempotency {
    pub key: String,
    pub fingerprint: Vec<u8>,
    pub ttl: Duration,
    pub render: Render,
}

impl std::fmt::Debug for Idempotency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idempotency")
            .field("key", &self.key)
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl Idempotency {
    /// The record for `outcome`; `applies` when the append it goes into applies the
    /// command (the journal then stamps the key on its first event).
    pub(crate) fn write(&self, outcome: Outcome<'_>, applies: bool) -> Option<IdempotencyWrite> {
        let response = (self.render)(outcome)?;
        let now = ordo_storage::now_ms();
        Some(IdempotencyWrite {
            key: self.key.clone(),
            record: IdempotencyRecord {
                fingerprint: self.fingerprint.clone(),
                response,
                created_at_ms: now,
                expires_at_ms: now.saturating_add(self.ttl.as_millis() as u64),
            },
            applies,
        })
    }
}

/// Renders `outcome` with `idem` if there is one.
pub(crate) fn write(
    idem: Option<&Idempotency>,
    outcome: Outcome<'_>,
    applies: bool,
) -> Option<IdempotencyWrite> {
    idem.and_then(|i| i.write(outcome, applies))
}
