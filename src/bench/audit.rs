//! The audit after the run: no counter went negative, `available + reserved + sold` did
//! not change, and `reserved + sold` grew by exactly the units of the orders the run got
//! acknowledged (less those it cancelled or saw expire).

use std::collections::HashMap;

use super::args::{BenchArgs, Scenario};
use super::report::Audit;
use super::setup::{read_counters, Counters};
use super::tally::{PlacedOrder, Tally};
use super::target::{Conn, Target};

/// Reads the counters back and checks them against `before` and the run's tallies.
pub(super) async fn audit(
    args: &BenchArgs,
    target: &Target,
    conn: &mut Conn,
    skus: &[String],
    before: &Counters,
    total: &Tally,
) -> Audit {
    let mut problems = Vec::new();
    let after = match read_counters(conn, skus).await {
        Ok(a) => a,
        Err(e) => {
            return Audit {
                ok: false,
                skus_checked: 0,
                units_acknowledged: 0,
                units_grown: 0,
                problems: vec![format!("cannot read the counters back: {e}")],
            }
        }
    };
    let expected = held_units(args, target, total, &mut problems).await;
    let lifecycle = args.scenario == Scenario::Lifecycle;
    let (mut acked, mut grown) = (0, 0);
    for sku in skus {
        let (Some(&b), Some(&a)) = (before.get(sku), after.get(sku)) else {
            continue;
        };
        let want = expected.get(sku).copied().unwrap_or(0);
        acked += want;
        grown += check_sku(sku, b, a, want, lifecycle, &mut problems);
    }
    Audit {
        ok: problems.is_empty(),
        skus_checked: skus.len(),
        units_acknowledged: acked,
        units_grown: grown,
        problems,
    }
}

/// Units still held (reserved or sold) by the run's acknowledged orders, per SKU:
/// lifecycle orders that were cancelled or expired are read back and taken off.
async fn held_units(
    args: &BenchArgs,
    target: &Target,
    total: &Tally,
    problems: &mut Vec<String>,
) -> HashMap<String, i64> {
    let mut expected: HashMap<String, i64> = total.units.clone();
    if args.scenario == Scenario::Lifecycle {
        let released = released_units(target, &total.orders, args.concurrency.min(32)).await;
        match released {
            Ok(r) => {
                for (sku, u) in r {
                    *expected.entry(sku).or_default() -= u;
                }
            }
            Err(e) => problems.push(format!("cannot read the run's orders back: {e}")),
        }
    }
    expected
}

/// One SKU's counters `before` and `after` the run, against the `want` units its
/// acknowledged orders hold; returns how much `reserved + sold` grew.
fn check_sku(
    sku: &str,
    (a0, r0, s0): (i64, i64, i64),
    (a1, r1, s1): (i64, i64, i64),
    want: i64,
    lifecycle: bool,
    problems: &mut Vec<String>,
) -> i64 {
    if a1 < 0 || r1 < 0 || s1 < 0 {
        problems.push(format!(
            "{sku}: a counter is negative (available {a1}, reserved {r1}, sold {s1})"
        ));
    }
    let (recv0, recv1) = (a0 + r0 + s0, a1 + r1 + s1);
    if recv0 != recv1 {
        problems.push(format!(
            "{sku}: available + reserved + sold went from {recv0} to {recv1}: stock was changed outside this run"
        ));
    }
    if r1 + s1 > recv0 {
        problems.push(format!(
            "{sku}: {} units reserved or sold, only {recv0} in stock",
            r1 + s1
        ));
    }
    let got = (r1 + s1) - (r0 + s0);
    if want != got {
        problems.push(format!(
            "{sku}: the run's acknowledged orders hold {want} units, but reserved + sold grew by {got}{}",
            if lifecycle {
                ""
            } else {
                " (orders that expired during the run also show here: use a reservation TTL longer than the run)"
            }
        ));
    }
    got
}

/// Units of the run's orders that are no longer held (cancelled, expired).
async fn released_units(
    target: &Target,
    orders: &[PlacedOrder],
    parallel: usize,
) -> Result<HashMap<String, i64>, String> {
    let chunks: Vec<Vec<PlacedOrder>> = orders
        .chunks(orders.len().div_ceil(parallel.max(1)).max(1))
        .map(|c| c.to_vec())
        .collect();
    let tasks: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            let target = target.clone();
            tokio::spawn(async move {
                let mut conn = Conn::new(target);
                let mut out: HashMap<String, i64> = HashMap::new();
                for (id, lines) in chunk {
                    let status = conn.order_status(&id).await?;
                    if status == "CANCELLED" || status == "FAILED" {
                        for (sku, q) in lines {
                            *out.entry(sku).or_default() += i64::from(q);
                        }
                    }
                }
                Ok::<_, String>(out)
            })
        })
        .collect();
    let mut total: HashMap<String, i64> = HashMap::new();
    for t in tasks {
        for (k, v) in t.await.map_err(|e| e.to_string())?? {
            *total.entry(k).or_default() += v;
        }
    }
    Ok(total)
}
