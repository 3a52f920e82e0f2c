//! `Idempotency-Key` (SPEC §4): a replay returns the first answer (status and body); the
//! same key with another request is 422 `idempotency_mismatch`; keys are durable for a
//! configurable time (24 h by default); concurrent requests with one key run once.
//!
//! How:
//! - Per key, one async mutex in this process (a DashMap of them, removed when nobody
//!   waits): concurrent requests with one key queue behind the first, then find its
//!   stored answer.
//! - Before the operation runs, an `InFlight` record is written durably to the store's
//!   idempotency column family. For an order it carries the order id chosen in advance,
//!   so after a crash between "order stored" and "answer stored" a retry finds the order
//!   (its creation events give back the first answer) instead of placing a second one.
//! - After it runs, the answer replaces the record, before the client sees it. Answers
//!   that are the server's fault (5xx: overloaded, unavailable) are not kept: the record
//!   is removed so a retry runs again.
//! - The whole sequence runs on a spawned task, so a client that hangs up cannot cut it
//!   in half.
//!
//! An `InFlight` record found while holding the key's mutex was left by a process that
//! died (or a write that failed): for orders it is resolved as above; other operations
//! run again (payments are idempotent by `payment_ref` anyway; a repeated cancel or
//! shipment step then answers 409 `invalid_transition`).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix_web::http::StatusCode;
use ordo_actors::{Engine, Status};
use ordo_storage::{now_ms, IdempotencyRecord, PutOutcome};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::answer::Answer;
use super::error::{ApiError, ProblemType};
use super::handlers::{execute, Op};
use super::AppState;

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
enum Stored {
    InFlight {
        #[serde(default)]
        order_id: Option<String>,
    },
    Done {
        answer: Answer,
    },
}

/// Checks the header's value: 1–255 visible ASCII characters.
pub fn validate_key(key: &str) -> Result<(), ApiError> {
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::invalid(
            "Idempotency-Key must be 1-255 visible ASCII characters",
        ));
    }
    Ok(())
}

/// A digest of what the request asks for: method, path and the canonical form of the
/// parsed body (so whitespace or field order does not count as "another request").
pub fn fingerprint(method: &str, path: &str, canonical_body: &[u8]) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(method.as_bytes());
    h.update([0]);
    h.update(path.as_bytes());
    h.update([0]);
    h.update(canonical_body);
    h.finalize().to_vec()
}

fn encode(s: &Stored) -> Vec<u8> {
    serde_json::to_vec(s).unwrap_or_default()
}

/// Runs `op` once per (`scope`, `key`) and answers every request with that key alike.
/// Returns the answer and whether it was replayed.
pub async fn run(
    state: Arc<AppState>,
    engine: Engine,
    scope: Arc<str>,
    key: String,
    fingerprint: Vec<u8>,
    op: Op,
    trace: Arc<str>,
) -> (Answer, bool) {
    let store_key = format!("{scope}\n{key}").into_bytes();
    let lock = state
        .idem_locks
        .entry(store_key.clone())
        .or_default()
        .clone();
    let guard = lock.lock().await;
    let out = locked(&state, &engine, &store_key, fingerprint, op, trace).await;
    drop(guard);
    drop(lock);
    state
        .idem_locks
        .remove_if(&store_key, |_, l| Arc::strong_count(l) == 1);
    if out.1 {
        state
            .metrics
            .idempotent_replays
            .fetch_add(1, Ordering::Relaxed);
    }
    out
}

async fn locked(
    state: &AppState,
    engine: &Engine,
    store_key: &[u8],
    fingerprint: Vec<u8>,
    op: Op,
    trace: Arc<str>,
) -> (Answer, bool) {
    let store = engine.store();
    let now = now_ms();
    let ttl = state.settings.idempotency_ttl.as_millis() as u64;
    let mut order_id = matches!(op, Op::Place(_)).then(Engine::new_order_id);
    let record = IdempotencyRecord {
        fingerprint: fingerprint.clone(),
        response: encode(&Stored::InFlight {
            order_id: order_id.clone(),
        }),
        created_at_ms: now,
        expires_at_ms: now.saturating_add(ttl),
    };
    let internal = |e: &dyn std::fmt::Display| {
        tracing::error!(error = %e, "idempotency store");
        (
            Answer::error(&ApiError::new(
                ProblemType::Internal,
                "the idempotency store failed; see the server log",
            )),
            false,
        )
    };
    match store.idempotency_put_if_absent(store_key, &record, now) {
        Err(e) => return internal(&e),
        Ok(PutOutcome::Inserted) => {}
        Ok(PutOutcome::Existing(old)) => {
            if old.fingerprint != fingerprint {
                return (
                    Answer::error(&ApiError::new(
                        ProblemType::IdempotencyMismatch,
                        "this Idempotency-Key was used for a different request",
                    )),
                    false,
                );
            }
            match serde_json::from_slice::<Stored>(&old.response) {
                Ok(Stored::Done { answer }) => return (answer, true),
                Ok(Stored::InFlight { order_id: Some(id) }) => {
                    // Left by a process that died: was the order stored before it did?
                    match engine.order_at_creation(&id) {
                        Ok(Some(view)) => {
                            let answer = placed_answer(view);
                            finish(store, store_key, &old, &answer);
                            return (answer, true);
                        }
                        Ok(None) => order_id = Some(id),
                        Err(e) => return internal(&e),
                    }
                }
                // Left by a process that died: run it (again).
                Ok(Stored::InFlight { order_id: None }) => {}
                Err(e) => return internal(&e),
            }
        }
    }
    let answer = execute(engine, op, order_id, trace).await;
    finish(store, store_key, &record, &answer);
    (answer, false)
}

/// Stores the answer under the key (or frees the key after a server-side failure).
fn finish(store: &ordo_storage::Store, key: &[u8], rec: &IdempotencyRecord, answer: &Answer) {
    let res = if answer.status().is_server_error() {
        store.idempotency_delete(key)
    } else {
        store.idempotency_put(
            key,
            &IdempotencyRecord {
                response: encode(&Stored::Done {
                    answer: answer.clone(),
                }),
                ..rec.clone()
            },
        )
    };
    if let Err(e) = res {
        tracing::error!(error = %e, "cannot store an idempotent answer; a retry will be resolved from the log");
    }
}

/// The answer a placement gave: 201 with the order, or 409 with the FAILED order.
pub fn placed_answer(view: ordo_actors::OrderView) -> Answer {
    if view.status == Status::Failed {
        let kind = match view.failure_reason.as_deref() {
            Some("limit_exceeded") => ProblemType::LimitExceeded,
            _ => ProblemType::OutOfStock,
        };
        let sku = view.failed_sku.clone();
        let e = ApiError {
            detail: format!(
                "order {} failed: {} on sku `{}`",
                view.id,
                view.failure_reason.as_deref().unwrap_or("failed"),
                sku.as_deref().unwrap_or("")
            ),
            sku,
            order: Some(Box::new(view)),
            ..ApiError::new(kind, "")
        };
        Answer::error(&e)
    } else {
        let loc = format!("/v1/orders/{}", view.id);
        Answer::json(StatusCode::CREATED, &view).with_location(loc)
    }
}
