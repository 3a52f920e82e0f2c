//! The recorded history of a torture run and the reference model that checks it.
//!
//! Everything here is pure: [`check`] takes what the clients recorded ([`Record`]s), the
//! SKUs' initial stock ([`Setup`]) and the final state read back from the server
//! ([`Observed`]), and returns every violation it can prove. *Prove* is the rule that
//! keeps the checks sound:
//!
//! - a request whose answer never arrived may or may not have been applied, so it only
//!   ever widens what is allowed (an unanswered adjustment may count once or not at all;
//!   an unanswered placement may own one order nobody claimed);
//! - requests that overlapped in time may have been applied in either order, so the
//!   order checks only use real-time precedence: answer *A* arrived before request *B*
//!   was sent (both on one monotonic clock in one process);
//! - an answer describes the order *after* the request took effect, at some point
//!   between sending the request (its first attempt: a retry may get the answer an earlier
//!   attempt produced) and receiving the answer.
//!
//! The checks, each named in its [`Violation`]:
//! - `answer`: every final answer is one the SPEC allows for that request, with a body
//!   that agrees with it (a cancel answered 200 says CANCELLED, a payment answered 200
//!   carries its own `payment_ref`, …).
//! - `stock`: per SKU, `available + reserved + sold` equals the initial stock plus every
//!   adjustment answered 200 (give or take unanswered ones), and the log holds one
//!   `StockAdjusted` per applied adjustment.
//! - `holds`: per SKU, `sold` and `reserved` equal the units of the orders whose final
//!   status sells or reserves them; no counter is negative.
//! - `orders`: every order an answer named still exists; every order in the log is
//!   claimed by the answer to one placement (or may belong to an unanswered one).
//! - `history`: every answer's order status appears in the order's final history, in an
//!   order consistent with real time (see `history_conflict`).
//! - `money`: every succeeded payment that was acknowledged either paid the order (which
//!   reached CONFIRMED and, if cancelled since, was refunded) or has a `RefundRequested`;
//!   every `PaymentSucceeded` in the log is followed by its `OrderConfirmed` or refunded.
//! - `replay`: a request re-sent with its key after it was answered gets the first
//!   answer again, byte for byte, marked `Idempotent-Replayed: true`.
//!
//! Besides, [`liveness`]: no request is left without an answer while the server was up
//! to give one.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

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

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for St {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of statuses: what an answer allows the order to have been in when the request
/// took effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mask(u8);

impl Mask {
    fn only(s: St) -> Mask {
        Mask(s.bit())
    }

    fn all_but(excluded: &[St]) -> Mask {
        Mask(
            St::ALL
                .into_iter()
                .filter(|s| !excluded.contains(s))
                .fold(0, |m, s| m | s.bit()),
        )
    }

    fn has(self, s: St) -> bool {
        self.0 & s.bit() != 0
    }
}

impl fmt::Display for Mask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = St::ALL
            .into_iter()
            .filter(|s| self.has(*s))
            .map(St::as_str)
            .collect();
        if names.len() == 1 {
            f.write_str(names[0])
        } else {
            write!(f, "one of {}", names.join("|"))
        }
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
    fn label(&self) -> String {
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

    fn qty_of(&self, sku: &str) -> i64 {
        self.lines
            .iter()
            .filter(|l| l.sku == sku)
            .map(|l| i64::from(l.qty))
            .sum()
    }

    fn reached(&self, s: St) -> bool {
        self.history.contains(&s)
    }
}

/// The `lines` of an order view, as (sku, qty).
fn lines_of(v: &Value) -> Result<Vec<Line>, String> {
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

// ---------------------------------------------------------------------------------------
// Reading answers.

/// The order a body describes: the body itself (an order view) or a problem's `order`.
pub(crate) fn order_of(body: &Value) -> Option<&Value> {
    if body.get("id").is_some() && body.get("status").is_some() {
        Some(body)
    } else {
        body.get("order").filter(|o| o.is_object())
    }
}

fn problem_type(body: &Value) -> Option<&str> {
    body.get("type").and_then(Value::as_str)
}

/// What one answered record says, reduced from its body: bodies are parsed once and
/// dropped (a long run has a million of them, and a parsed body is ten times its text).
struct Said<'a> {
    rec: &'a Record,
    /// The order the request is about (or, for a placement, the one it was answered with).
    order_id: String,
    /// The problem `type` of a problem answer.
    ty: Option<String>,
    /// The body carries an order (it is one, or a problem's `order`).
    has_order: bool,
    /// That order's id, status, `payment_ref` (payments) and lines (placements).
    body_order_id: Option<String>,
    status: Option<St>,
    payment_ref: Option<String>,
    lines: Option<Vec<Line>>,
    /// An adjustment's answer: the first SKU counter that is missing or negative.
    bad_counter: Option<&'static str>,
}

/// The answered records, each with what its body says.
fn said(records: &[Record]) -> Vec<Said<'_>> {
    let mut out = Vec::new();
    for rec in records {
        let Some(a) = &rec.answer else { continue };
        let body = a.json();
        let order = order_of(&body);
        let text = |k: &str| {
            order
                .and_then(|o| o.get(k))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let body_order_id = text("id");
        let order_id = match (rec.op.order_id(), &body_order_id) {
            (Some(id), _) => id.to_owned(),
            (None, Some(id)) => id.clone(),
            (None, None) => String::new(),
        };
        let bad_counter = match rec.op {
            Op::Adjust { .. } => ["available", "reserved", "sold"]
                .into_iter()
                .find(|k| body.get(*k).and_then(Value::as_i64).is_none_or(|n| n < 0)),
            _ => None,
        };
        out.push(Said {
            rec,
            order_id,
            ty: problem_type(&body).map(str::to_owned),
            has_order: order.is_some(),
            status: text("status").as_deref().and_then(St::parse),
            payment_ref: matches!(rec.op, Op::Pay { .. })
                .then(|| text("payment_ref"))
                .flatten(),
            lines: matches!(rec.op, Op::Place { .. })
                .then(|| order.and_then(|o| lines_of(o).ok()))
                .flatten(),
            body_order_id,
            bad_counter,
        });
    }
    out
}

// ---------------------------------------------------------------------------------------
// The checks.

/// Checks a recorded history against the final state. Returns every violation found;
/// none means the history is explained by a correct server.
pub fn check(setup: &Setup, records: &[Record], seen: &Observed) -> Vec<Violation> {
    let said = said(records);
    // Every payment request (answered or not) by order: the checks look payments up by
    // order often, and a long run has a million records.
    let mut pays: HashMap<&str, Vec<&Record>> = HashMap::new();
    for r in records {
        if let Op::Pay { order_id, .. } = &r.op {
            pays.entry(order_id.as_str()).or_default().push(r);
        }
    }
    let mut v = Vec::new();
    check_answers(&pays, &said, seen, &mut v);
    check_stock(setup, records, seen, &mut v);
    check_orders(records, &said, seen, &mut v);
    check_holds(setup, records, seen, &mut v);
    check_histories(&said, seen, &mut v);
    check_money(&pays, &said, seen, &mut v);
    check_replays(records, &mut v);
    v
}

/// Every final answer is one the SPEC allows for its request, and says what it must.
fn check_answers(
    pays: &HashMap<&str, Vec<&Record>>,
    said: &[Said<'_>],
    seen: &Observed,
    v: &mut Vec<Violation>,
) {
    for s in said {
        let Some(a) = &s.rec.answer else { continue };
        let ty = s.ty.as_deref();
        let mut bad = |why: String| {
            v.push(Violation::new(
                "answer",
                format!("{}: {why}", s.rec.label()),
            ))
        };
        if let (Some(want), true) = (s.rec.op.order_id(), s.has_order) {
            if s.body_order_id.as_deref() != Some(want) {
                bad(format!(
                    "the body is about another order: {:?}",
                    s.body_order_id
                ));
                continue;
            }
        }
        if s.has_order && s.status.is_none() {
            bad("the order in the body has no known status".into());
            continue;
        }
        match (&s.rec.op, a.status, ty) {
            (Op::Place { lines, .. }, 201, _) => {
                if s.status != Some(St::Pending) {
                    bad("a placement answered 201 must be PENDING".into());
                } else if let Some(got) = &s.lines {
                    let mut got = got.clone();
                    let mut want = lines.clone();
                    got.sort();
                    want.sort();
                    if got != want {
                        bad(format!("the order's lines are {got:?}"));
                    }
                }
            }
            (Op::Place { .. }, 409, Some("out_of_stock" | "limit_exceeded")) => {
                if s.status != Some(St::Failed) {
                    bad("a refused placement must carry its FAILED order".into());
                }
            }
            (Op::Pay { payment_ref, .. }, 200, _) => {
                if matches!(s.status, None | Some(St::Pending | St::Failed)) {
                    bad("a payment answered 200 cannot leave the order PENDING or FAILED".into());
                } else if s.payment_ref.as_deref() != Some(payment_ref.as_str()) {
                    bad(format!(
                        "a payment answered 200 must be the order's payment, but its payment_ref is {:?}",
                        s.payment_ref
                    ));
                } else if !ref_used_elsewhere(pays, s.rec) && wrong_amount(s, seen) {
                    bad("a new payment with the wrong amount was accepted".into());
                }
            }
            (Op::Pay { .. }, 409, Some("order_not_payable")) => {
                if s.status == Some(St::Pending) {
                    bad("order_not_payable, yet the order in the body is PENDING".into());
                }
            }
            (Op::Pay { .. }, 422, Some("amount_mismatch")) => {
                if s.rec
                    .op
                    .order_id()
                    .and_then(|id| seen.orders.get(id))
                    .is_some()
                    && !wrong_amount(s, seen)
                {
                    bad("the amount equals the order's total, yet amount_mismatch".into());
                }
            }
            (Op::Cancel { .. }, 200, _) => {
                if s.status != Some(St::Cancelled) {
                    bad("a cancel answered 200 must say CANCELLED".into());
                }
            }
            (Op::Ship { step, .. }, 200, _) => {
                if s.status != Some(step.reaches()) {
                    bad(format!(
                        "shipment step {} answered 200 must say {}",
                        step.as_str(),
                        step.reaches()
                    ));
                }
            }
            (Op::Cancel { .. } | Op::Ship { .. }, 409, Some("invalid_transition")) => {}
            (Op::Adjust { .. }, 200, _) => {
                if let Some(k) = s.bad_counter {
                    bad(format!("the SKU's `{k}` is missing or negative"));
                }
            }
            (Op::Adjust { delta, .. }, 409, Some("insufficient_stock")) => {
                if *delta > 0 {
                    bad("adding stock was refused with insufficient_stock".into());
                }
            }
            (_, status, ty) => bad(format!(
                "not an answer the SPEC allows for this request: {status} {}",
                ty.unwrap_or("(no problem type)")
            )),
        }
    }
}

/// The payment's amount differs from the order's total (as finally read).
fn wrong_amount(s: &Said<'_>, seen: &Observed) -> bool {
    match (&s.rec.op, seen.orders.get(&s.order_id)) {
        (Op::Pay { amount_minor, .. }, Some(o)) => *amount_minor != o.total_minor,
        _ => false,
    }
}

/// Another request (answered or not) carried this payment's ref for the same order.
fn ref_used_elsewhere(pays: &HashMap<&str, Vec<&Record>>, rec: &Record) -> bool {
    let Op::Pay {
        order_id,
        payment_ref,
        ..
    } = &rec.op
    else {
        return false;
    };
    pays.get(order_id.as_str()).is_some_and(|rs| {
        rs.iter().any(|r| {
            r.id != rec.id && matches!(&r.op, Op::Pay { payment_ref: p, .. } if p == payment_ref)
        })
    })
}

/// Conservation: `available + reserved + sold` moves only by adjustments, each once.
fn check_stock(setup: &Setup, records: &[Record], seen: &Observed, v: &mut Vec<Violation>) {
    for (sku, &initial) in &setup.initial_stock {
        let Some(f) = seen.skus.get(sku) else {
            v.push(Violation::new(
                "stock",
                format!("sku {sku} could not be read at the end"),
            ));
            continue;
        };
        let adjustments = records.iter().filter_map(|r| match &r.op {
            Op::Adjust { sku: s, delta } if s == sku => Some((r, *delta)),
            _ => None,
        });
        let (mut applied, mut acked, mut unanswered) = (0i64, 0u64, 0u64);
        let (mut lo, mut hi) = (0i64, 0i64);
        for (r, delta) in adjustments {
            match &r.answer {
                Some(a) if a.status == 200 => {
                    applied += delta;
                    acked += 1;
                }
                Some(_) => {}
                None => {
                    unanswered += 1;
                    if delta < 0 {
                        lo += delta;
                    } else {
                        hi += delta;
                    }
                }
            }
        }
        let total = f.available + f.reserved + f.sold;
        let expected = initial + applied;
        let diff = total - expected;
        if diff < lo || diff > hi {
            let maybe = if unanswered > 0 {
                format!(" ({unanswered} unanswered adjustments could explain {lo:+}..{hi:+})")
            } else {
                String::new()
            };
            v.push(Violation::new(
                "stock",
                format!(
                    "sku {sku}: available {} + reserved {} + sold {} = {total}, but the initial {initial} plus the adjustments answered 200 ({applied:+}) make {expected}{maybe}: an adjustment was applied twice, lost, or stock appeared or vanished",
                    f.available, f.reserved, f.sold
                ),
            ));
        }
        if let Some(log) = &seen.log {
            let events = log.adjustments.get(sku).copied().unwrap_or(0);
            if events < acked || events > acked + unanswered {
                v.push(Violation::new(
                    "stock",
                    format!(
                        "sku {sku}: the log holds {events} StockAdjusted events from the clients for {acked} adjustments answered 200 and {unanswered} unanswered: an adjustment was applied twice (or a refused one applied, or an acknowledged one lost)"
                    ),
                ));
            }
        }
    }
}

/// Every order an answer named exists; every order in the log is claimed by one
/// placement's answer, or may belong to a placement that got none.
fn check_orders(records: &[Record], said: &[Said<'_>], seen: &Observed, v: &mut Vec<Violation>) {
    let mut claimed: HashMap<&str, &Record> = HashMap::new();
    for s in said {
        if matches!(s.rec.op, Op::Place { .. }) && !s.order_id.is_empty() {
            if let Some(other) = claimed.insert(&s.order_id, s.rec) {
                v.push(Violation::new(
                    "orders",
                    format!(
                        "order {} was answered to two placements: {} and {}",
                        s.order_id,
                        other.label(),
                        s.rec.label()
                    ),
                ));
            }
        }
    }
    let mut reported = BTreeSet::new();
    for s in said {
        if !s.order_id.is_empty() && seen.lost.contains(&s.order_id) && reported.insert(&s.order_id)
        {
            v.push(Violation::new(
                "orders",
                format!(
                    "order {} was named in an answer ({}) but the server no longer knows it",
                    s.order_id,
                    s.rec.label()
                ),
            ));
        }
    }
    let Some(log) = &seen.log else { return };
    // Unanswered placements, by what they asked for: each may own one unclaimed order.
    let mut open: HashMap<(String, Vec<Line>), usize> = HashMap::new();
    let mut open_total = 0usize;
    for r in records.iter().filter(|r| r.answer.is_none()) {
        if let Op::Place { customer_id, lines } = &r.op {
            let mut l = lines.clone();
            l.sort();
            *open.entry((customer_id.clone(), l)).or_default() += 1;
            open_total += 1;
        }
    }
    let mut unknown = Vec::new();
    for id in log.orders.keys() {
        if claimed.contains_key(id.as_str()) {
            continue;
        }
        let sig = seen.orders.get(id).map(|o| {
            let mut l = o.lines.clone();
            l.sort();
            (o.customer_id.clone(), l)
        });
        match sig
            .as_ref()
            .and_then(|s| open.get_mut(s))
            .filter(|n| **n > 0)
        {
            Some(n) => {
                *n -= 1;
                open_total -= 1;
            }
            None => unknown.push((id, sig)),
        }
    }
    // Orders whose request could not be matched exactly may still be an unanswered
    // placement's (its lines as stored may differ, say); beyond that they are phantoms.
    for (n, (id, sig)) in unknown.into_iter().skip(open_total).enumerate() {
        // The first few get their look-alike requests named; the search costs a pass
        // over every record.
        let sig = sig.filter(|_| n < 20);
        let twin: Vec<String> = sig
            .map(|(c, l)| {
                records
                    .iter()
                    .filter(|r| match &r.op {
                        Op::Place { customer_id, lines } => {
                            let mut x = lines.clone();
                            x.sort();
                            *customer_id == c && x == l
                        }
                        _ => false,
                    })
                    .map(Record::label)
                    .collect()
            })
            .unwrap_or_default();
        v.push(Violation::new(
            "orders",
            format!(
                "order {id} is in the log but no placement was answered with it and none is unanswered (placed twice under one key?); placements that asked for the same: {}",
                match (n < 20, twin.is_empty()) {
                    (false, _) => "not looked up".to_owned(),
                    (true, true) => "none".to_owned(),
                    (true, false) => twin.join("; "),
                }
            ),
        ));
    }
}

/// `sold` and `reserved` are exactly the units of the orders that sell or hold them.
fn check_holds(setup: &Setup, records: &[Record], seen: &Observed, v: &mut Vec<Violation>) {
    // Without the log, an unanswered placement may own an order nobody knows of: then
    // only "at least" can be checked.
    let complete = seen.log.is_some()
        || !records
            .iter()
            .any(|r| r.answer.is_none() && matches!(r.op, Op::Place { .. }));
    for sku in setup.initial_stock.keys() {
        let Some(f) = seen.skus.get(sku) else {
            continue;
        };
        for (name, n) in [
            ("available", f.available),
            ("reserved", f.reserved),
            ("sold", f.sold),
        ] {
            if n < 0 {
                v.push(Violation::new("holds", format!("sku {sku}: {name} is {n}")));
            }
        }
        let (mut sold, mut reserved) = (0i64, 0i64);
        let (mut sellers, mut holders) = (Vec::new(), Vec::new());
        for o in seen.orders.values() {
            let q = o.qty_of(sku);
            if q == 0 {
                continue;
            }
            if o.status.sells() {
                sold += q;
                sellers.push(format!("{} {}x", o.id, q));
            } else if o.status.reserves() {
                reserved += q;
                holders.push(format!("{} {}x", o.id, q));
            }
        }
        let mismatch = |actual: i64, want: i64| {
            if complete {
                actual != want
            } else {
                actual < want
            }
        };
        if mismatch(f.sold, sold) {
            v.push(Violation::new(
                "holds",
                format!(
                    "sku {sku}: sold is {} but the orders in CONFIRMED..FULFILLED hold {sold} units ({}): {}",
                    f.sold,
                    some(&sellers),
                    if f.sold < sold { "a unit was sold twice" } else { "units sold to no order" }
                ),
            ));
        }
        if mismatch(f.reserved, reserved) {
            v.push(Violation::new(
                "holds",
                format!(
                    "sku {sku}: reserved is {} but the PENDING/PAID orders hold {reserved} units ({}): {}",
                    f.reserved,
                    some(&holders),
                    if f.reserved > reserved { "phantom holds" } else { "holds lost" }
                ),
            ));
        }
    }
}

/// The first few of a list, and how many more.
fn some(items: &[String]) -> String {
    const SHOWN: usize = 8;
    if items.len() <= SHOWN {
        items.join(", ")
    } else {
        format!(
            "{}, and {} more",
            items[..SHOWN].join(", "),
            items.len() - SHOWN
        )
    }
}

/// What an answer allows the order's status to have been once the request took effect.
fn allowed(s: &Said<'_>) -> Option<Mask> {
    let a = s.rec.answer.as_ref()?;
    let ty = s.ty.as_deref();
    match (&s.rec.op, a.status, ty) {
        (Op::Cancel { .. }, 409, Some("invalid_transition")) => {
            Some(Mask::all_but(&[St::Pending, St::Confirmed]))
        }
        (Op::Ship { step, .. }, 409, Some("invalid_transition")) => {
            Some(Mask::all_but(&[step.from_status()]))
        }
        (Op::Pay { .. }, 409, Some("order_not_payable")) => Some(match s.status {
            Some(st) => Mask::only(st),
            None => Mask::all_but(&[St::Pending]),
        }),
        (Op::Adjust { .. }, _, _) => None,
        (_, 200 | 201 | 409, _) => s.status.map(Mask::only),
        _ => None,
    }
}

/// One answer's constraint on an order's history.
#[derive(Debug, Clone)]
struct Observation<'a> {
    sent_us: Micros,
    answered_us: Micros,
    allowed: Mask,
    /// For the message (its label is only made when there is one).
    rec: &'a Record,
}

/// Whether `obs` (answers about one order) can be placed on the order's `history`:
/// each at an index whose status it allows, and an answer received before another was
/// sent at an index no later than the other's. Returns why not, or `None`.
///
/// This is constraint propagation over index ranges: it never rejects a placement that
/// exists (each step only removes indices no valid placement can use), so a conflict is
/// a proof.
fn history_conflict(history: &[St], obs: &[Observation<'_>]) -> Option<String> {
    let show = |h: &[St]| {
        let s: Vec<&str> = h.iter().map(|s| s.as_str()).collect();
        format!("[{}]", s.join(", "))
    };
    if history.is_empty() {
        return Some("the order has an empty history".into());
    }
    let last = history.len() - 1;
    let next =
        |i: usize, from: usize| (from..history.len()).find(|&k| obs[i].allowed.has(history[k]));
    let prev = |i: usize, upto: usize| {
        (0..=upto.min(last))
            .rev()
            .find(|&k| obs[i].allowed.has(history[k]))
    };
    let mut lo = Vec::with_capacity(obs.len());
    let mut hi = Vec::with_capacity(obs.len());
    for (i, o) in obs.iter().enumerate() {
        match (next(i, 0), prev(i, last)) {
            (Some(a), Some(b)) => {
                lo.push(a);
                hi.push(b);
            }
            _ => {
                return Some(format!(
                    "{} means the order was {} then, but its history {} never shows that",
                    o.rec.label(),
                    o.allowed,
                    show(history)
                ))
            }
        }
    }
    let pairs: Vec<(usize, usize)> = (0..obs.len())
        .flat_map(|i| (0..obs.len()).map(move |j| (i, j)))
        .filter(|&(i, j)| obs[i].answered_us < obs[j].sent_us)
        .collect();
    let conflict = |i: usize, j: usize| {
        format!(
            "{} was received before {} was sent, but the order's history {} cannot show {} and then {}",
            obs[i].rec.label(),
            obs[j].rec.label(),
            show(history),
            obs[i].allowed,
            obs[j].allowed
        )
    };
    loop {
        let mut changed = false;
        for &(i, j) in &pairs {
            if lo[j] < lo[i] {
                match next(j, lo[i]) {
                    Some(k) => {
                        lo[j] = k;
                        changed = true;
                    }
                    None => return Some(conflict(i, j)),
                }
            }
            if hi[i] > hi[j] {
                match prev(i, hi[j]) {
                    Some(k) => {
                        hi[i] = k;
                        changed = true;
                    }
                    None => return Some(conflict(i, j)),
                }
            }
            if lo[i] > hi[i] || lo[j] > hi[j] {
                return Some(conflict(i, j));
            }
        }
        if !changed {
            return None;
        }
    }
}

/// Acknowledged answers agree with each order's final history.
fn check_histories(said: &[Said<'_>], seen: &Observed, v: &mut Vec<Violation>) {
    let mut per_order: BTreeMap<&str, Vec<Observation<'_>>> = BTreeMap::new();
    for s in said {
        let (Some(mask), Some(t)) = (allowed(s), s.rec.answered_us) else {
            continue;
        };
        if s.order_id.is_empty() {
            continue;
        }
        per_order.entry(&s.order_id).or_default().push(Observation {
            sent_us: s.rec.sent_us,
            answered_us: t,
            allowed: mask,
            rec: s.rec,
        });
        if let (Op::Cancel { .. }, Some(200)) = (&s.rec.op, s.rec.answer.as_ref().map(|a| a.status))
        {
            if let Some(o) = seen.orders.get(&s.order_id) {
                if o.status != St::Cancelled {
                    v.push(Violation::new(
                        "history",
                        format!("{} but the order is {} now", s.rec.label(), o.status),
                    ));
                }
            }
        }
    }
    for (id, obs) in per_order {
        let Some(o) = seen.orders.get(id) else {
            continue;
        };
        if let Some(why) = history_conflict(&o.history, &obs) {
            v.push(Violation::new("history", format!("order {id}: {why}")));
        }
    }
}

/// No money is kept without paying an order or refunding it.
fn check_money(
    pays: &HashMap<&str, Vec<&Record>>,
    said: &[Said<'_>],
    seen: &Observed,
    v: &mut Vec<Violation>,
) {
    let refunded = |id: &str, r: &str| {
        seen.orders
            .get(id)
            .is_some_and(|o| o.refunds_requested.iter().any(|x| x == r))
            || seen
                .log
                .as_ref()
                .and_then(|l| l.orders.get(id))
                .is_some_and(|evs| {
                    evs.iter()
                        .any(|e| e.kind == "RefundRequested" && e.payment_ref.as_deref() == Some(r))
                })
    };
    for s in said {
        let Op::Pay {
            payment_ref,
            outcome,
            ..
        } = &s.rec.op
        else {
            continue;
        };
        let Some(a) = &s.rec.answer else { continue };
        let Some(o) = seen.orders.get(&s.order_id) else {
            continue;
        };
        let not_payable = a.status == 409 && s.ty.as_deref() == Some("order_not_payable");
        if a.status == 200 && o.payment_ref.as_deref() != Some(payment_ref.as_str()) {
            v.push(Violation::new(
                "money",
                format!(
                    "{} was answered 200, but the order's payment is {:?} now",
                    s.rec.label(),
                    o.payment_ref
                ),
            ));
        }
        if *outcome != Outcome::Succeeded || !(a.status == 200 || not_payable) {
            continue;
        }
        let paid_by_it = o.payment_ref.as_deref() == Some(payment_ref.as_str())
            && o.reached(St::Confirmed)
            && o.status != St::Cancelled;
        let refund = refunded(&o.id, payment_ref);
        if not_payable && !refund {
            v.push(Violation::new(
                "money",
                format!(
                    "{}: a succeeded payment refused as not payable has no RefundRequested for its ref (order {} now)",
                    s.rec.label(),
                    o.status
                ),
            ));
        } else if !paid_by_it && !refund {
            v.push(Violation::new(
                "money",
                format!(
                    "{}: a succeeded payment neither paid the order (it is {} with payment {:?}, history {:?}) nor has a RefundRequested: money kept silently",
                    s.rec.label(),
                    o.status,
                    o.payment_ref,
                    o.history
                ),
            ));
        }
    }
    for o in seen.orders.values() {
        if !o.reached(St::Confirmed) {
            continue;
        }
        let Some(r) = &o.payment_ref else {
            v.push(Violation::new(
                "money",
                format!("order {} reached CONFIRMED without a payment_ref", o.id),
            ));
            continue;
        };
        let asked = pays
            .get(o.id.as_str())
            .into_iter()
            .flatten()
            .any(|x| match &x.op {
                Op::Pay {
                    order_id,
                    payment_ref,
                    outcome: Outcome::Succeeded,
                    amount_minor,
                } => order_id == &o.id && payment_ref == r && *amount_minor == o.total_minor,
                _ => false,
            });
        if !asked {
            v.push(Violation::new(
                "money",
                format!(
                    "order {} reached CONFIRMED by payment {r}, but no request paid it that way (succeeded, amount {})",
                    o.id, o.total_minor
                ),
            ));
        }
        if o.status == St::Cancelled && !refunded(&o.id, r) {
            v.push(Violation::new(
                "money",
                format!(
                    "order {} was cancelled after CONFIRMED without a RefundRequested for its payment {r}",
                    o.id
                ),
            ));
        }
    }
    // The log: each OrderConfirmed accounts for the latest PaymentSucceeded before it;
    // every other PaymentSucceeded must be refunded.
    let Some(log) = &seen.log else { return };
    for (id, events) in &log.orders {
        let mut waiting: Option<&str> = None;
        let mut unpaid: Vec<&str> = Vec::new();
        for e in events {
            match e.kind.as_str() {
                "PaymentSucceeded" => {
                    if let Some(r) = waiting.replace(e.payment_ref.as_deref().unwrap_or("")) {
                        unpaid.push(r);
                    }
                }
                "OrderConfirmed" => waiting = None,
                _ => {}
            }
        }
        unpaid.extend(waiting);
        for r in unpaid {
            if !refunded(id, r) {
                v.push(Violation::new(
                    "money",
                    format!(
                        "order {id}: the log has PaymentSucceeded {r} with neither an OrderConfirmed for it nor a RefundRequested"
                    ),
                ));
            }
        }
    }
}

/// A request re-sent with its key after its answer gets the same answer, marked replayed.
fn check_replays(records: &[Record], v: &mut Vec<Violation>) {
    for r in records {
        let Some(first) = &r.answer else { continue };
        for again in &r.replays {
            if again.status != first.status || again.body != first.body {
                v.push(Violation::new(
                    "replay",
                    format!(
                        "{}: re-sent with its key, it was answered {} {} instead of {} {}",
                        r.label(),
                        again.status,
                        again.body,
                        first.status,
                        first.body
                    ),
                ));
            } else if !again.replayed {
                v.push(Violation::new(
                    "replay",
                    format!(
                        "{}: a replayed answer lacks `Idempotent-Replayed: true`",
                        r.label()
                    ),
                ));
            }
        }
    }
}

/// Every request got an answer. Not part of [`check`] (a history with unanswered requests
/// is a legitimate input there): the driver applies it when the server was up for the
/// whole drain, so a request still without an answer means the server stopped answering.
pub fn liveness(records: &[Record]) -> Option<Violation> {
    let stuck: Vec<String> = records
        .iter()
        .filter(|r| r.answer.is_none())
        .map(Record::label)
        .collect();
    (!stuck.is_empty()).then(|| {
        Violation::new(
            "liveness",
            format!(
                "{} requests got no answer but 5xx or errors until the end: {}",
                stuck.len(),
                stuck.into_iter().take(5).collect::<Vec<_>>().join("; ")
            ),
        )
    })
}
