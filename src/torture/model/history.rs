//! The recorded history: what the clients sent and were answered ([`Record`]), what the
//! run set up ([`Setup`]), the final state read back ([`Observed`]), and what the checks
//! report ([`Violation`]). Plain data, serialized into `--history`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::said::order_of;

/// Microseconds since the start of the run, on the process's monotonic clock.
pub type Micros = u64;

/// An order status (SPEC §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum St {
    Pending,
    Failed,
    Paid,
    Confirmed,
    ShipmentPrepared,
    ShipmentProcessed,
    Fulfilled,
    Cancelled,
}

impl St {
    pub const ALL: [St; 8] = [
        St::Pending,
        St::Failed,
        St::Paid,
        St::Confirmed,
        St::ShipmentPrepared,
        St::ShipmentProcessed,
        St::Fulfilled,
        St::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            St::Pending => "PENDING",
            St::Failed => "FAILED",
            St::Paid => "PAID",
            St::Confirmed => "CONFIRMED",
            St::ShipmentPrepared => "SHIPMENT_PREPARED",
            St::ShipmentProcessed => "SHIPMENT_PROCESSED",
            St::Fulfilled => "FULFILLED",
            St::Cancelled => "CANCELLED",
        }
    }

    pub fn parse(s: &str) -> Option<St> {
        St::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// The order's units are sold (moved out of `reserved`).
    pub fn sells(self) -> bool {
        matches!(
            self,
            St::Confirmed | St::ShipmentPrepared | St::ShipmentProcessed | St::Fulfilled
        )
    }

    /// The order's units are held in `reserved`.
    pub fn reserves(self) -> bool {
        matches!(self, St::Pending | St::Paid)
    }

    /// The status's bit in a set of statuses.
    pub(super) fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for St {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One order line.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Line {
    pub sku: String,
    pub qty: u32,
}

/// A payment's outcome as the payment provider reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Succeeded,
    Failed,
}

/// A shipment step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Prepared,
    Processed,
    Fulfilled,
}

impl Step {
    /// The status the step moves the order to.
    pub fn reaches(self) -> St {
        match self {
            Step::Prepared => St::ShipmentPrepared,
            Step::Processed => St::ShipmentProcessed,
            Step::Fulfilled => St::Fulfilled,
        }
    }

    /// The only status the step may be taken from.
    pub fn from_status(self) -> St {
        match self {
            Step::Prepared => St::Confirmed,
            Step::Processed => St::ShipmentPrepared,
            Step::Fulfilled => St::ShipmentProcessed,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Step::Prepared => "prepared",
            Step::Processed => "processed",
            Step::Fulfilled => "fulfilled",
        }
    }
}

/// What a request asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Op {
    /// `POST /v1/orders`
    Place {
        customer_id: String,
        lines: Vec<Line>,
    },
    /// `POST /v1/orders/{id}/payments`
    Pay {
        order_id: String,
        payment_ref: String,
        outcome: Outcome,
        amount_minor: i64,
    },
    /// `POST /v1/orders/{id}/cancel`
    Cancel { order_id: String },
    /// `POST /v1/orders/{id}/shipment`
    Ship { order_id: String, step: Step },
    /// `POST /v1/skus/{sku}/stock-adjustments`
    Adjust { sku: String, delta: i64 },
}

impl Op {
    /// The order a request on an existing order is about.
    pub fn order_id(&self) -> Option<&str> {
        match self {
            Op::Pay { order_id, .. } | Op::Cancel { order_id } | Op::Ship { order_id, .. } => {
                Some(order_id)
            }
            Op::Place { .. } | Op::Adjust { .. } => None,
        }
    }

    /// A short name for summaries: place, pay, cancel, ship, adjust.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Place { .. } => "place",
            Op::Pay { .. } => "pay",
            Op::Cancel { .. } => "cancel",
            Op::Ship { .. } => "ship",
            Op::Adjust { .. } => "adjust",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Place { customer_id, lines } => {
                let l: Vec<String> = lines
                    .iter()
                    .map(|l| format!("{}x{}", l.qty, l.sku))
                    .collect();
                write!(f, "place {customer_id} [{}]", l.join(", "))
            }
            Op::Pay {
                order_id,
                payment_ref,
                outcome,
                amount_minor,
            } => write!(
                f,
                "pay {order_id} ref {payment_ref} {outcome:?} {amount_minor}"
            ),
            Op::Cancel { order_id } => write!(f, "cancel {order_id}"),
            Op::Ship { order_id, step } => write!(f, "ship {order_id} {}", step.as_str()),
            Op::Adjust { sku, delta } => write!(f, "adjust {sku} {delta:+}"),
        }
    }
}

/// One HTTP attempt of a request: its status, or why no answer came.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub at_us: Micros,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// An answer as received: status, raw body, and the `Idempotent-Replayed` header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub status: u16,
    pub body: String,
    pub replayed: bool,
}

impl Answer {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// One logical request: every attempt under one `Idempotency-Key`, the final answer, and
/// any replays sent after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub id: usize,
    pub client: usize,
    pub op: Op,
    pub key: String,
    /// When the first attempt was sent.
    pub sent_us: Micros,
    /// When the final answer had been read in full.
    pub answered_us: Option<Micros>,
    pub attempts: Vec<Attempt>,
    /// The first answer that was not a 5xx or 429; `None` if none came in time.
    pub answer: Option<Answer>,
    /// Answers to the same request re-sent with the same key after `answer`.
    pub replays: Vec<Answer>,
}

impl Record {
    pub(super) fn label(&self) -> String {
        let answered = match (&self.answer, self.answered_us) {
            (Some(a), Some(t)) => {
                let v = a.json();
                let what = order_of(&v)
                    .and_then(|o| o.get("status"))
                    .and_then(Value::as_str)
                    .or_else(|| v.get("type").and_then(Value::as_str))
                    .unwrap_or("");
                format!("answered {} {what} at {}", a.status, secs(t))
            }
            _ => "unanswered".to_owned(),
        };
        format!(
            "#{} {} (key {}, sent at {}, {answered})",
            self.id,
            self.op,
            self.key,
            secs(self.sent_us)
        )
    }
}

fn secs(us: Micros) -> String {
    format!("{:.3}s", us as f64 / 1e6)
}

/// A SKU's counters as read at the end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkuFinal {
    pub available: i64,
    pub reserved: i64,
    pub sold: i64,
}

/// An order as read at the end (`GET /v1/orders/{id}`), reduced to what the model uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderFinal {
    pub id: String,
    pub customer_id: String,
    pub status: St,
    pub lines: Vec<Line>,
    pub total_minor: i64,
    pub payment_ref: Option<String>,
    pub refunds_requested: Vec<String>,
    /// The statuses of `history`, oldest first.
    pub history: Vec<St>,
}

impl OrderFinal {
    /// Reads an order view (SPEC §1 fields).
    pub fn from_json(v: &Value) -> Result<OrderFinal, String> {
        let s = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| format!("order without `{k}`: {v}"))
        };
        let status = |x: &Value| {
            x.as_str()
                .and_then(St::parse)
                .ok_or_else(|| format!("unknown status {x}"))
        };
        let lines = lines_of(v)?;
        let history = v
            .get("history")
            .and_then(Value::as_array)
            .ok_or_else(|| format!("order without history: {v}"))?
            .iter()
            .map(|h| status(&h["status"]))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(OrderFinal {
            id: s("id")?,
            customer_id: s("customer_id")?,
            status: status(&v["status"])?,
            lines,
            total_minor: v
                .get("total_minor")
                .and_then(Value::as_i64)
                .ok_or("order without total_minor")?,
            payment_ref: v
                .get("payment_ref")
                .and_then(Value::as_str)
                .map(str::to_owned),
            refunds_requested: v
                .get("refunds_requested")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|r| r.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            history,
        })
    }

    pub(super) fn qty_of(&self, sku: &str) -> i64 {
        self.lines
            .iter()
            .filter(|l| l.sku == sku)
            .map(|l| i64::from(l.qty))
            .sum()
    }

    pub(super) fn reached(&self, s: St) -> bool {
        self.history.contains(&s)
    }
}

/// The `lines` of an order view, as (sku, qty).
pub(super) fn lines_of(v: &Value) -> Result<Vec<Line>, String> {
    v.get("lines")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("order without lines: {v}"))?
        .iter()
        .map(|l| {
            Ok(Line {
                sku: l
                    .get("sku")
                    .and_then(Value::as_str)
                    .ok_or("line without sku")?
                    .to_owned(),
                qty: l
                    .get("qty")
                    .and_then(Value::as_u64)
                    .and_then(|q| u32::try_from(q).ok())
                    .ok_or("line without qty")?,
            })
        })
        .collect()
}

/// One event of an order stream, reduced to what the model uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEvent {
    /// The SPEC type name, e.g. `PaymentSucceeded`.
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_ref: Option<String>,
}

/// What the event log says about the run's SKUs and orders.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogView {
    /// The events of every order stream that touched the run's SKUs, in log order.
    pub orders: BTreeMap<String, Vec<LogEvent>>,
    /// Per SKU, the `StockAdjusted` events with the clients' reason (`torture`).
    pub adjustments: BTreeMap<String, u64>,
}

/// The final state read back from the server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observed {
    pub skus: BTreeMap<String, SkuFinal>,
    pub orders: BTreeMap<String, OrderFinal>,
    /// Orders that an answer or the log named and the server answered 404 for.
    pub lost: BTreeSet<String>,
    /// `None` when the log could not be read completely (its checks are then skipped).
    pub log: Option<LogView>,
}

/// What the run set up before the clients started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Setup {
    /// SKU → units it was created with.
    pub initial_stock: BTreeMap<String, i64>,
}

/// One thing the model proved wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// Which check: answer, stock, holds, orders, history, money, replay, liveness,
    /// store, server.
    pub check: &'static str,
    pub detail: String,
}

impl Violation {
    pub fn new(check: &'static str, detail: impl Into<String>) -> Violation {
        Violation {
            check,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.check, self.detail)
    }
}
