//! The `stock` and `holds` checks: per SKU, `available + reserved + sold` moves only by
//! adjustments, each once; `sold` and `reserved` are the units of the orders that sell or
//! hold them.

use super::history::{Observed, Op, Record, Setup, Violation};

/// Conservation: `available + reserved + sold` moves only by adjustments, each once.
pub(super) fn check_stock(
    setup: &Setup,
    records: &[Record],
    seen: &Observed,
    v: &mut Vec<Violation>,
) {
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

/// `sold` and `reserved` are exactly the units of the orders that sell or hold them.
pub(super) fn check_holds(
    setup: &Setup,
    records: &[Record],
    seen: &Observed,
    v: &mut Vec<Violation>,
) {
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
