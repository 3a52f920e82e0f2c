//! Reading answers: what each answered record's body says, parsed once.

use serde_json::Value;

use super::history::{lines_of, Line, Op, Record, St};

/// The order a body describes: the body itself (an order view) or a problem's `order`.
pub(crate) fn order_of(body: &Value) -> Option<&Value> {
    if body.get("id").is_some() && body.get("status").is_some() {
        Some(body)
    } else {
        body.get("order").filter(|o| o.is_object())
    }
}

/// The `type` of a problem body.
fn problem_type(body: &Value) -> Option<&str> {
    body.get("type").and_then(Value::as_str)
}

/// What one answered record says, reduced from its body: bodies are parsed once and
/// dropped (a long run has a million of them, and a parsed body is ten times its text).
pub(super) struct Said<'a> {
    pub(super) rec: &'a Record,
    /// The order the request is about (or, for a placement, the one it was answered with).
    pub(super) order_id: String,
    /// The problem `type` of a problem answer.
    pub(super) ty: Option<String>,
    /// The body carries an order (it is one, or a problem's `order`).
    pub(super) has_order: bool,
    /// That order's id, status, `payment_ref` (payments) and lines (placements).
    pub(super) body_order_id: Option<String>,
    pub(super) status: Option<St>,
    pub(super) payment_ref: Option<String>,
    pub(super) lines: Option<Vec<Line>>,
    /// An adjustment's answer: the first SKU counter that is missing or negative.
    pub(super) bad_counter: Option<&'static str>,
}

/// The answered records, each with what its body says.
pub(super) fn said(records: &[Record]) -> Vec<Said<'_>> {
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
