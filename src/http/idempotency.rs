//! `Idempotency-Key` (SPEC §4): a replay returns the first answer (status and body); the
//! same key with another request is 422 `idempotency_mismatch`; keys are durable for a
//! configurable time (24 h by default); concurrent requests with one key run once.
//!
//! How (SPEC §2 "One command, one atomic append"):
//! - Per key, one async mutex in this process (a DashMap of them, removed when nobody
//!   waits): concurrent requests with one key queue behind the first, then find its
//!   stored answer.
//! - Under it, the key's record is read. None: the command runs with an
//!   [`Idempotency`] whose render turns the engine's outcome into the answer; the engine
//!   stores that answer in the same journal append as the command's events, and answers
//!   only once it is durable. So a crash leaves either the command and its answer, or
//!   neither: a retry replays the one or runs the command (once) for the first time. No
//!   idempotency write happens here, on an HTTP worker.
//! - A command whose saga outlives its first append (a payment's stock deduction, a
//!   confirmed order's cancellation) stores "applied" with that append and its answer
//!   with the last: a retry that finds "applied" (the process died in between) is
//!   answered with the order as it is once recovery has finished the saga.
//! - Answers that are the server's fault (5xx: overloaded, unavailable) are not kept, so
//!   a retry runs again.
//! - The whole sequence runs on a spawned task, so a client that hangs up cannot cut it
//!   in half.

use std::sync::Arc;

use actix_web::http::StatusCode;
use ordo_engine::domain::order::FailureReason;
use ordo_engine::{Engine, Idempotency, OrderView, Outcome, Status};

use super::dto;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::answer::Answer;
use super::commands::{answer_of, execute_then, AnswerKind, Op};
use super::error::{ApiError, ProblemType};
use super::AppState;

/// What is stored under a key.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
enum Stored {
    /// The command is applied and durable; its saga went on (see the module docs).
    Applied { order_id: String },
    /// The answer.
    Done { answer: Answer },
    /// Written by releases before the atomic append (a claim taken before the command
    /// ran); still read from their stores.
    InFlight {
        #[serde(default)]
        order_id: Option<String>,
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

/// The format byte of records stored in binary (bincode of [`StoredBin`]); records of
/// earlier releases are JSON (they start with `{`) and still read.
const STORED_BIN: u8 = 1;

/// [`Stored`] as it is written now: compact, no JSON escaping of the answer's body.
#[derive(bincode::Encode, bincode::Decode)]
enum StoredBin {
    Applied {
        order_id: String,
    },
    Done {
        status: u16,
        body: String,
        problem: bool,
        location: Option<String>,
        retry_after: Option<u64>,
    },
}

fn encode(s: &Stored) -> Option<Vec<u8>> {
    let bin = match s {
        Stored::Applied { order_id } => StoredBin::Applied {
            order_id: order_id.clone(),
        },
        Stored::Done { answer } => StoredBin::Done {
            status: answer.status,
            body: answer.body.clone(),
            problem: answer.problem,
            location: answer.location.clone(),
            retry_after: answer.retry_after,
        },
        // Never written any more.
        Stored::InFlight { .. } => return serde_json::to_vec(s).ok(),
    };
    let mut out = vec![STORED_BIN];
    bincode::encode_into_std_write(bin, &mut out, bincode::config::standard()).ok()?;
    Some(out)
}

fn decode(bytes: &[u8]) -> Result<Stored, String> {
    match bytes.split_first() {
        Some((&STORED_BIN, body)) => {
            match bincode::decode_from_slice::<StoredBin, _>(body, bincode::config::standard()) {
                Ok((StoredBin::Applied { order_id }, _)) => Ok(Stored::Applied { order_id }),
                Ok((
                    StoredBin::Done {
                        status,
                        body,
                        problem,
                        location,
                        retry_after,
                    },
                    _,
                )) => Ok(Stored::Done {
                    answer: Answer {
                        status,
                        body,
                        problem,
                        location,
                        retry_after,
                    },
                }),
                Err(e) => Err(e.to_string()),
            }
        }
        _ => serde_json::from_slice::<Stored>(bytes).map_err(|e| e.to_string()),
    }
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
    let store_key = format!("{scope}\n{key}");
    let lock = state
        .idem_locks
        .entry(store_key.clone().into_bytes())
        .or_default()
        .clone();
    let guard = lock.lock().await;
    let out = locked(&state, &engine, store_key.clone(), fingerprint, op, trace).await;
    drop(guard);
    drop(lock);
    state
        .idem_locks
        .remove_if(store_key.as_bytes(), |_, l| Arc::strong_count(l) == 1);
    if out.1 {
        state.metrics.idempotent_replays.inc();
    }
    out
}

async fn locked(
    state: &AppState,
    engine: &Engine,
    store_key: String,
    fingerprint: Vec<u8>,
    op: Op,
    trace: Arc<str>,
) -> (Answer, bool) {
    match engine.idempotency_record(&store_key) {
        Err(e) => return internal(&e),
        Ok(None) => {}
        Ok(Some(old)) => {
            let ttl = state.settings.idempotency_ttl;
            if let Some(replayed) = replay(engine, &store_key, ttl, &old, &fingerprint).await {
                return replayed;
            }
        }
    }
    run_once(state, engine, store_key, fingerprint, op, trace).await
}

fn internal(e: &dyn std::fmt::Display) -> (Answer, bool) {
    tracing::error!(error = %e, "idempotency store");
    (
        Answer::error(&ApiError::new(
            ProblemType::Internal,
            "the idempotency store failed; see the server log",
        )),
        false,
    )
}

/// The answer to a key that has a record: the stored answer, the order of an applied
/// command, 422 for another request under the key — or `None` when an older release's
/// claim shows the command never ran (it runs now).
async fn replay(
    engine: &Engine,
    store_key: &str,
    ttl: std::time::Duration,
    old: &ordo_storage::IdempotencyRecord,
    fingerprint: &[u8],
) -> Option<(Answer, bool)> {
    if old.fingerprint != fingerprint {
        return Some((
            Answer::error(&ApiError::new(
                ProblemType::IdempotencyMismatch,
                "this Idempotency-Key was used for a different request",
            )),
            false,
        ));
    }
    match decode(&old.response) {
        Ok(Stored::Done { answer }) => Some((answer, true)),
        Ok(Stored::Applied { order_id }) => {
            let order = engine.get_order_durable(&order_id).await;
            let answer = answer_of(AnswerKind::Order, Outcome::Order(order.as_ref()));
            if answer.status().is_server_error() {
                return Some((answer, false));
            }
            // The first answer to an applied command is kept, so every later replay sends
            // the same bytes however the order changes meanwhile (the per-key lock is
            // held: no other request with this key runs in between).
            let bytes = encode(&Stored::Done {
                answer: answer.clone(),
            });
            let idem = Idempotency {
                key: store_key.to_owned(),
                fingerprint: fingerprint.to_vec(),
                ttl,
                render: ordo_engine::render(move |_| bytes.clone()),
            };
            if let Err(e) = engine
                .keep_answer(&idem, Outcome::Order(order.as_ref()))
                .await
            {
                return Some(internal(&e));
            }
            Some((answer, true))
        }
        // An older release's claim whose process died: was its order stored?
        Ok(Stored::InFlight { order_id: Some(id) }) => match engine.order_at_creation(&id) {
            Ok(Some(view)) => Some((placed_answer(view), true)),
            Ok(None) => None,
            Err(e) => Some(internal(&e)),
        },
        Ok(Stored::InFlight { order_id: None }) => None,
        Err(e) => Some(internal(&e)),
    }
}

/// Runs the command with the key: the engine stores the answer `render` makes in the
/// command's own append. The answer it stores is kept here too, so the one sent is the
/// same bytes.
async fn run_once(
    state: &AppState,
    engine: &Engine,
    store_key: String,
    fingerprint: Vec<u8>,
    op: Op,
    trace: Arc<str>,
) -> (Answer, bool) {
    let kind = op.kind();
    let kept: Arc<Mutex<Option<Answer>>> = Arc::default();
    let slot = kept.clone();
    let idem = Idempotency {
        key: store_key,
        fingerprint,
        ttl: state.settings.idempotency_ttl,
        render: ordo_engine::render(move |outcome: Outcome<'_>| {
            let stored = match outcome {
                Outcome::Applied { order_id } => Stored::Applied {
                    order_id: order_id.to_owned(),
                },
                other => {
                    let answer = answer_of(kind, other);
                    if answer.status().is_server_error() {
                        return None;
                    }
                    *slot.lock() = Some(answer.clone());
                    Stored::Done { answer }
                }
            };
            encode(&stored)
        }),
    };
    let sent = execute_then(engine, op, Some(idem), trace, |outcome| {
        let stored = kept.lock().take();
        match (outcome.is_ok(), stored) {
            // The answer rendered into the command's append, durable before the engine
            // answered: the same bytes, not rendered again.
            (true, Some(stored)) => stored,
            // A refusal was stored too, unless the engine failed after rendering (a 5xx,
            // never stored): then that failure is the answer.
            (false, stored) => {
                let answer = answer_of(kind, outcome);
                match stored {
                    Some(stored) if !answer.status().is_server_error() => stored,
                    _ => answer,
                }
            }
            (true, None) => answer_of(kind, outcome),
        }
    })
    .await;
    (sent, false)
}

/// The answer a placement gave: 201 with the order, or 409 with the FAILED order.
pub fn placed_answer(view: OrderView) -> Answer {
    if view.status == Status::Failed {
        let kind = match view.failure_reason {
            Some(FailureReason::LimitExceeded) => ProblemType::LimitExceeded,
            Some(FailureReason::OutOfStock) | None => ProblemType::OutOfStock,
        };
        let sku = view.failed_sku.clone();
        let e = ApiError {
            detail: format!(
                "order {} failed: {} on sku `{}`",
                view.id,
                view.failure_reason.map_or("failed", FailureReason::as_str),
                sku.as_deref().unwrap_or("")
            ),
            sku,
            order: Some(Box::new(dto::OrderView::from(&view))),
            ..ApiError::new(kind, "")
        };
        Answer::error(&e)
    } else {
        let loc = format!("/v1/orders/{}", view.id);
        Answer::json(StatusCode::CREATED, &dto::OrderView::from(&view)).with_location(loc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer() -> Answer {
        Answer {
            status: 201,
            body: r#"{"id":"01J","note":"quotes \" and é"}"#.into(),
            problem: false,
            location: Some("/v1/orders/01J".into()),
            retry_after: None,
        }
    }

    /// A key whose command was applied but whose answer a crash kept from being stored
    /// (`Applied`): the first retry is answered with the order as it is then, and that
    /// answer is kept, so a later replay sends the same bytes even though the order
    /// changed in between (found by `ordo torture`: a replay of a payment showed a refund
    /// recorded after the first answer).
    #[test]
    fn the_first_answer_to_an_applied_command_is_kept_for_every_replay() {
        use futures::executor::block_on;
        use ordo_engine::domain::LineRequest;
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(ordo_engine::EngineConfig {
            data_dir: dir.path().to_path_buf(),
            ..Default::default()
        })
        .unwrap();
        let sku = ordo_engine::UpsertSku {
            sku: "A".into(),
            name: "a".into(),
            price_minor: 100,
            currency: "EUR".into(),
            per_customer_limit: None,
            stock: 5,
        };
        block_on(engine.upsert_sku(sku, None)).unwrap();
        let place = ordo_engine::PlaceOrder {
            customer_id: "c".into(),
            lines: vec![LineRequest {
                sku: "A".into(),
                qty: 1,
            }],
        };
        let order = block_on(engine.place_order(place, None)).unwrap();
        // What a saga cut short by a crash leaves under its key.
        let applied = encode(&Stored::Applied {
            order_id: order.id.clone(),
        });
        let (fp, ttl) = (b"fp".to_vec(), std::time::Duration::from_secs(60));
        let mark = Idempotency {
            key: "k".into(),
            fingerprint: fp.clone(),
            ttl,
            render: ordo_engine::render(move |_| applied.clone()),
        };
        block_on(engine.keep_answer(&mark, Outcome::Order(Ok(&order)))).unwrap();
        let replay_now = || {
            let record = engine.idempotency_record("k").unwrap().unwrap();
            block_on(replay(&engine, "k", ttl, &record, &fp)).unwrap()
        };
        let (first, replayed) = replay_now();
        assert!(replayed);
        assert_eq!(first.status, 200);
        assert!(first.body.contains("PENDING"), "{}", first.body);
        block_on(engine.cancel(&order.id, "changed", None)).unwrap();
        let (again, _) = replay_now();
        assert_eq!((again.status, again.body), (first.status, first.body));
        block_on(engine.shutdown()).unwrap();
    }

    #[test]
    fn stored_answers_round_trip_and_records_of_earlier_releases_still_read() {
        let bytes = encode(&Stored::Done { answer: answer() }).unwrap();
        assert_eq!(bytes[0], STORED_BIN);
        match decode(&bytes).unwrap() {
            Stored::Done { answer: a } => {
                assert_eq!(
                    (a.status, a.body, a.location),
                    (201, answer().body, answer().location)
                )
            }
            other => panic!("{other:?}"),
        }
        let applied = encode(&Stored::Applied {
            order_id: "01K".into(),
        })
        .unwrap();
        assert!(
            matches!(decode(&applied).unwrap(), Stored::Applied { order_id } if order_id == "01K")
        );
        // Earlier releases stored JSON.
        let json = serde_json::to_vec(&Stored::Done { answer: answer() }).unwrap();
        assert!(
            matches!(decode(&json).unwrap(), Stored::Done { answer: a } if a.body == answer().body)
        );
        let claim = br#"{"state":"in_flight","order_id":"01L"}"#;
        assert!(
            matches!(decode(claim).unwrap(), Stored::InFlight { order_id: Some(id) } if id == "01L")
        );
        assert!(decode(&[STORED_BIN, 0xff, 0xff]).is_err());
    }
}
