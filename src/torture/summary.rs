//! The end of a run: the summary (the `--json` line and the `--history` file's head) and
//! the report printed from it.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::Ordering;

use serde_json::{json, Value};

use super::args::{Mode, Plan};
use super::client::Api;
use super::model::{self, Observed, Record, St, Violation};

/// The run in one JSON object: its plan, the requests and answers, what the final state
/// holds, the notes and the violations.
#[allow(clippy::too_many_arguments)]
pub(super) fn summarize(
    plan: &Plan,
    run: &str,
    records: &[Record],
    observed: Option<&Observed>,
    api: &Api,
    starts: u64,
    notes: &[String],
    violations: &[Violation],
) -> Value {
    let acked = records.iter().filter(|r| r.answer.is_some()).count();
    let retries: usize = records
        .iter()
        .map(|r| r.attempts.len().saturating_sub(1))
        .sum();
    let replays: usize = records.iter().map(|r| r.replays.len()).sum();
    let answers = answers_by_kind(records);
    let count = |f: &dyn Fn(&model::OrderFinal) -> bool| {
        observed.map_or(0, |o| o.orders.values().filter(|x| f(x)).count())
    };
    let mode = match plan.mode {
        Mode::Spawn { .. } => "spawn",
        Mode::Url { .. } => "url",
    };
    json!({
        "seed": plan.seed,
        "run": run,
        "mode": mode,
        "duration_s": plan.duration.as_secs_f64(),
        "clients": plan.clients,
        "skus": plan.skus,
        "requests": records.len(),
        "acked": acked,
        "unanswered": records.len() - acked,
        "attempts": api.counters.attempts.load(Ordering::Relaxed),
        "retries": retries,
        "replays": replays,
        "kills": api.counters.kills.load(Ordering::Relaxed),
        "starts": starts,
        "orders": observed.map_or(0, |o| o.orders.len()),
        "confirmed": count(&|o| o.history.contains(&St::Confirmed)),
        "cancelled": count(&|o| o.status == St::Cancelled),
        "fulfilled": count(&|o| o.status == St::Fulfilled),
        "failed": count(&|o| o.status == St::Failed),
        "answers": answers,
        "notes": notes,
        "violations": violations.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "ok": violations.is_empty(),
    })
}

/// The requests counted by operation and answer: `place 201`, `pay 409
/// order_not_payable`, `cancel unanswered`.
fn answers_by_kind(records: &[Record]) -> BTreeMap<String, u64> {
    let mut answers: BTreeMap<String, u64> = BTreeMap::new();
    for r in records {
        let what = match &r.answer {
            Some(a) => {
                let v = a.json();
                match v.get("type").and_then(Value::as_str) {
                    Some(t) => format!("{} {} {t}", r.op.name(), a.status),
                    None => format!("{} {}", r.op.name(), a.status),
                }
            }
            None => format!("{} unanswered", r.op.name()),
        };
        *answers.entry(what).or_default() += 1;
    }
    answers
}

/// Prints the outcome: the JSON line (--json) or a readable report on stdout; the
/// violations also on stderr in JSON mode, so a person watching sees them.
pub(super) fn report(
    plan: &Plan,
    summary: &Value,
    notes: &[String],
    violations: &[Violation],
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if plan.json {
        for v in violations {
            eprintln!("VIOLATION {v}");
        }
        writeln!(out, "{summary}")?;
        return Ok(());
    }
    let n = |k: &str| summary[k].clone();
    writeln!(
        out,
        "seed {}: {} requests ({} answered, {} retries, {} replays), {} kills, {} orders ({} confirmed, {} cancelled, {} fulfilled, {} failed)",
        n("seed"), n("requests"), n("acked"), n("retries"), n("replays"), n("kills"),
        n("orders"), n("confirmed"), n("cancelled"), n("fulfilled"), n("failed")
    )?;
    if let Some(a) = summary["answers"].as_object() {
        for (k, v) in a {
            writeln!(out, "  {k:<40} {v}")?;
        }
    }
    for note in notes {
        writeln!(out, "note: {note}")?;
    }
    for v in violations {
        writeln!(out, "VIOLATION {v}")?;
    }
    writeln!(
        out,
        "{}",
        if violations.is_empty() {
            "OK".to_owned()
        } else {
            format!(
                "FAILED: {} violations (seed {})",
                violations.len(),
                plan.seed
            )
        }
    )?;
    Ok(())
}
