//! Changes requested over HTTP: one `Op` per command, run on a spawned task (a client
//! hanging up cannot cut one in half), once per Idempotency-Key when one is given, and
//! the one mapping from an engine outcome to the answer sent and stored.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use ordo_engine::domain::order::{PaymentOutcome, ShipmentStep};
use ordo_engine::{Engine, EngineError, Idempotency, Outcome, PlaceOrder, UpsertSku};
use serde::Serialize;

use super::answer::Answer;
use super::caller::Caller;
use super::dto::{OrderView, SkuView};
use super::error::{ApiError, ProblemType};
use super::idempotency::{self, placed_answer};
use super::AppState;

// ---------------------------------------------------------------------------------------
// Mutations: run on a spawned task (a client hanging up cannot cut them in half), once
// per Idempotency-Key when one is given.

/// A change requested over HTTP, with everything it needs.
#[derive(Debug)]
pub enum Op {
    Upsert(UpsertSku),
    Adjust {
        sku: String,
        delta: i64,
        reason: String,
    },
    Place(PlaceOrder),
    Pay {
        order_id: String,
        payment_ref: String,
        outcome: PaymentOutcome,
        amount_minor: i64,
    },
    Cancel {
        order_id: String,
        reason: String,
    },
    Ship {
        order_id: String,
        step: ShipmentStep,
    },
}

impl Op {
    /// How this operation's outcome becomes an answer.
    pub fn kind(&self) -> AnswerKind {
        match self {
            Op::Upsert(_) => AnswerKind::Upsert,
            Op::Adjust { .. } => AnswerKind::Sku,
            Op::Place(_) => AnswerKind::Place,
            Op::Pay { .. } | Op::Cancel { .. } | Op::Ship { .. } => AnswerKind::Order,
        }
    }
}

/// The shape of an operation's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerKind {
    /// 201 with `Location` when created, else 200.
    Upsert,
    /// 200 with the SKU.
    Sku,
    /// 201 with the PENDING order, or 409 with the FAILED one.
    Place,
    /// 200 with the order.
    Order,
}

/// The answer an operation's outcome gets. One function, so the answer stored under an
/// Idempotency-Key and the one sent are the same bytes.
pub fn answer_of(kind: AnswerKind, outcome: Outcome<'_>) -> Answer {
    match (kind, outcome) {
        (_, Outcome::Sku { result: Err(e), .. }) | (_, Outcome::Order(Err(e))) => match (kind, e) {
            (AnswerKind::Place, EngineError::OrderFailed { order, .. }) => {
                placed_answer((**order).clone())
            }
            _ => Answer::error(&ApiError::from(e)),
        },
        (
            AnswerKind::Upsert,
            Outcome::Sku {
                result: Ok(view),
                created: true,
            },
        ) => {
            let loc = format!("/v1/skus/{}", view.sku);
            Answer::json(StatusCode::CREATED, &SkuView::from(view)).with_location(loc)
        }
        (
            _,
            Outcome::Sku {
                result: Ok(view), ..
            },
        ) => Answer::json(StatusCode::OK, &SkuView::from(view)),
        (AnswerKind::Place, Outcome::Order(Ok(view))) => placed_answer(view.clone()),
        (_, Outcome::Order(Ok(view))) => Answer::json(StatusCode::OK, &OrderView::from(view)),
        // Only stored (as "applied"), never sent: see `idempotency`.
        (_, Outcome::Applied { order_id }) => Answer::error(&ApiError::new(
            ProblemType::Internal,
            format!("order {order_id}: the command is applied, its answer is not ready"),
        )),
    }
}

/// Runs one change against the engine; with `idem`, its answer is kept under the key in
/// the same append as its events.
pub async fn execute(
    engine: &Engine,
    op: Op,
    idem: Option<Idempotency>,
    trace: Arc<str>,
) -> Answer {
    let kind = op.kind();
    execute_then(engine, op, idem, trace, |outcome| answer_of(kind, outcome)).await
}

/// Runs one change against the engine and hands its outcome to `finish` (which makes
/// the answer: with an Idempotency-Key, usually the one already rendered and stored).
pub async fn execute_then(
    engine: &Engine,
    op: Op,
    idem: Option<Idempotency>,
    trace: Arc<str>,
    finish: impl FnOnce(Outcome<'_>) -> Answer,
) -> Answer {
    let t = Some(trace);
    match op {
        Op::Upsert(req) => match engine.upsert_sku_with(req, t, idem).await {
            Ok((view, created)) => finish(Outcome::Sku {
                result: Ok(&view),
                created,
            }),
            Err(e) => finish(Outcome::Sku {
                result: Err(&e),
                created: false,
            }),
        },
        Op::Adjust { sku, delta, reason } => {
            let r = engine
                .adjust_stock_with(&sku, delta, &reason, t, idem)
                .await;
            finish(Outcome::Sku {
                result: r.as_ref(),
                created: false,
            })
        }
        Op::Place(req) => {
            let r = engine.place_order_with(req, t, idem).await;
            finish(Outcome::Order(r.as_ref()))
        }
        Op::Pay {
            order_id,
            payment_ref,
            outcome,
            amount_minor,
        } => {
            let r = engine
                .pay_with(&order_id, &payment_ref, outcome, amount_minor, t, idem)
                .await;
            finish(Outcome::Order(r.as_ref()))
        }
        Op::Cancel { order_id, reason } => {
            let r = engine.cancel_with(&order_id, &reason, t, idem).await;
            finish(Outcome::Order(r.as_ref()))
        }
        Op::Ship { order_id, step } => {
            let r = engine.ship_with(&order_id, step, t, idem).await;
            finish(Outcome::Order(r.as_ref()))
        }
    }
}

/// Runs `op` (idempotently when the request carries an Idempotency-Key) and answers.
pub(crate) async fn mutate<B: Serialize>(
    state: web::Data<AppState>,
    req: &HttpRequest,
    caller: &Caller,
    body: &B,
    op: Op,
) -> Result<HttpResponse, ApiError> {
    let engine = state.engine()?;
    let key = match req.headers().get("Idempotency-Key") {
        None => None,
        Some(v) => {
            let k = v
                .to_str()
                .map_err(|_| ApiError::invalid("Idempotency-Key must be visible ASCII"))?;
            idempotency::validate_key(k)?;
            Some(k.to_owned())
        }
    };
    let trace = caller.trace.clone();
    let (answer, replayed) = match key {
        None => {
            let task =
                actix_web::rt::spawn(
                    async move { (execute(&engine, op, None, trace).await, false) },
                );
            task.await
        }
        Some(key) => {
            let canonical = serde_json::to_vec(body).unwrap_or_default();
            let fp = idempotency::fingerprint(req.method().as_str(), req.path(), &canonical);
            let task = actix_web::rt::spawn(idempotency::run(
                state.into_inner(),
                engine,
                caller.scope.clone(),
                key,
                fp,
                op,
                trace,
            ));
            task.await
        }
    }
    .map_err(|e| ApiError::new(ProblemType::Internal, format!("request task failed: {e}")))?;
    Ok(answer.into_response(replayed))
}
