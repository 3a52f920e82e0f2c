//! The SKU aggregate: catalogue data and the stock counters, changed only through the
//! SKU's own events. Invariant after every event: `available >= 0`, `reserved >= 0`,
//! `available + reserved + sold == received`.

use std::collections::HashMap;

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

use super::events::*;
use super::{validate_currency, validate_sku, DomainError, DomainResult};

/// Units held for one live order (reserved, awaiting payment or deduction).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Hold {
    pub customer_id: String,
    pub qty: u32,
}

/// A SKU's state. `Default` is the state before `SkuRegistered`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Encode, Decode)]
pub struct Sku {
    pub registered: bool,
    pub sku: String,
    pub name: String,
    pub price_minor: i64,
    pub currency: String,
    pub per_customer_limit: Option<u32>,
    pub available: i64,
    pub reserved: i64,
    pub sold: i64,
    pub received: i64,
    /// Live reservations by order id: what a release or a deduction acts on, and what
    /// makes both idempotent per order.
    pub holds: HashMap<String, Hold>,
    /// Units each customer has in orders that are not cancelled or failed (reserved or
    /// sold); what `per_customer_limit` is checked against. Customers at zero are removed.
    pub customer_units: HashMap<String, u64>,
    /// Stream version of the last applied event.
    pub version: u64,
}

/// The public view of a SKU (API responses).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkuView {
    pub sku: String,
    pub name: String,
    pub price_minor: i64,
    pub currency: String,
    pub per_customer_limit: Option<u32>,
    pub available: i64,
    pub reserved: i64,
    pub sold: i64,
    pub version: u64,
}

/// Commands on a SKU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkuCommand {
    /// Create, or update catalogue data. `initial_stock` counts only on create.
    Upsert {
        sku: String,
        name: String,
        price_minor: i64,
        currency: String,
        per_customer_limit: Option<u32>,
        initial_stock: i64,
    },
    AdjustStock {
        delta: i64,
        reason: String,
    },
    Reserve {
        order_id: String,
        customer_id: String,
        qty: u32,
    },
    /// Returns an order's held units to `available` (no-op if it holds none).
    Release {
        order_id: String,
        reason: String,
    },
    /// Moves an order's held units to `sold` (no-op if it holds none: already done).
    Reduce {
        order_id: String,
    },
    /// Returns sold units of a cancelled confirmed order to `available`.
    Restore {
        order_id: String,
        customer_id: String,
        qty: u32,
    },
}

impl Sku {
    pub fn view(&self) -> SkuView {
        SkuView {
            sku: self.sku.clone(),
            name: self.name.clone(),
            price_minor: self.price_minor,
            currency: self.currency.clone(),
            per_customer_limit: self.per_customer_limit,
            available: self.available,
            reserved: self.reserved,
            sold: self.sold,
            version: self.version,
        }
    }

    /// The SPEC invariant.
    pub fn invariant_holds(&self) -> bool {
        self.available >= 0
            && self.reserved >= 0
            && self.sold >= 0
            && self
                .available
                .checked_add(self.reserved)
                .and_then(|s| s.checked_add(self.sold))
                == Some(self.received)
    }

    fn require_registered(&self, sku: &str) -> DomainResult<()> {
        if self.registered {
            Ok(())
        } else {
            Err(DomainError::UnknownSku(sku.to_owned()))
        }
    }
}

fn validate_catalogue(
    name: &str,
    price_minor: i64,
    currency: &str,
    limit: Option<u32>,
) -> DomainResult<()> {
    if name.trim().is_empty() || name.len() > 256 {
        return Err(DomainError::Invalid("name must be 1-256 characters".into()));
    }
    if price_minor < 0 {
        return Err(DomainError::Invalid("price_minor must be >= 0".into()));
    }
    if limit == Some(0) {
        return Err(DomainError::Invalid(
            "per_customer_limit must be >= 1 when set".into(),
        ));
    }
    validate_currency(currency)
}

/// Stock counters are bounded so that sums over them cannot overflow an i64.
pub const MAX_STOCK: i64 = 1 << 48;

/// Decides what a command on `s` means. Pure.
pub fn decide(s: &Sku, cmd: &SkuCommand) -> DomainResult<Vec<SkuEvent>> {
    use SkuCommand::*;
    match cmd {
        Upsert {
            sku,
            name,
            price_minor,
            currency,
            per_customer_limit,
            initial_stock,
        } => upsert(
            s,
            sku,
            name,
            *price_minor,
            currency,
            *per_customer_limit,
            *initial_stock,
        ),
        AdjustStock { delta, reason } => adjust_stock(s, *delta, reason),
        Reserve {
            order_id,
            customer_id,
            qty,
        } => reserve(s, order_id, customer_id, *qty),
        Release { order_id, reason } => Ok(match s.holds.get(order_id) {
            Some(h) => vec![SkuEvent::StockReleased(StockReleased {
                order_id: order_id.clone(),
                customer_id: h.customer_id.clone(),
                qty: h.qty,
                reason: reason.clone(),
            })],
            None => vec![],
        }),
        Reduce { order_id } => Ok(match s.holds.get(order_id) {
            Some(h) => vec![SkuEvent::StockReduced(StockReduced {
                order_id: order_id.clone(),
                customer_id: h.customer_id.clone(),
                qty: h.qty,
            })],
            None => vec![],
        }),
        Restore {
            order_id,
            customer_id,
            qty,
        } => {
            s.require_registered(&s.sku)?;
            if i64::from(*qty) > s.sold {
                return Err(DomainError::Invalid(format!(
                    "cannot restore {qty} units of {}: only {} sold",
                    s.sku, s.sold
                )));
            }
            Ok(vec![SkuEvent::StockRestored(StockRestored {
                order_id: order_id.clone(),
                customer_id: customer_id.clone(),
                qty: *qty,
            })])
        }
    }
}

/// [`SkuCommand::Upsert`]: registers a new SKU (with its initial stock) or updates its
/// catalogue data; the same data again records nothing.
fn upsert(
    s: &Sku,
    sku: &str,
    name: &str,
    price_minor: i64,
    currency: &str,
    per_customer_limit: Option<u32>,
    initial_stock: i64,
) -> DomainResult<Vec<SkuEvent>> {
    validate_sku(sku)?;
    validate_catalogue(name, price_minor, currency, per_customer_limit)?;
    if !s.registered {
        if !(0..=MAX_STOCK).contains(&initial_stock) {
            return Err(DomainError::Invalid(format!("stock must be 0-{MAX_STOCK}")));
        }
        let mut ev = vec![SkuEvent::SkuRegistered(SkuRegistered {
            sku: sku.to_owned(),
            name: name.to_owned(),
            price_minor,
            currency: currency.to_owned(),
            per_customer_limit,
        })];
        if initial_stock > 0 {
            ev.push(SkuEvent::StockAdjusted(StockAdjusted {
                delta: initial_stock,
                reason: "initial stock".into(),
            }));
        }
        Ok(ev)
    } else if s.name == name
        && s.price_minor == price_minor
        && s.currency == currency
        && s.per_customer_limit == per_customer_limit
    {
        Ok(vec![])
    } else {
        Ok(vec![SkuEvent::SkuUpdated(SkuUpdated {
            name: name.to_owned(),
            price_minor,
            currency: currency.to_owned(),
            per_customer_limit,
        })])
    }
}

/// [`SkuCommand::AdjustStock`].
fn adjust_stock(s: &Sku, delta: i64, reason: &str) -> DomainResult<Vec<SkuEvent>> {
    s.require_registered(&s.sku)?;
    if delta == 0 || delta.unsigned_abs() > MAX_STOCK as u64 {
        return Err(DomainError::Invalid(format!(
            "delta must be non-zero and within ±{MAX_STOCK}"
        )));
    }
    super::validate_reason(reason)?;
    if delta < 0 && s.available + delta < 0 {
        return Err(DomainError::InsufficientStock {
            sku: s.sku.clone(),
            available: s.available,
            requested: -delta,
        });
    }
    if delta > 0 && s.received + delta > MAX_STOCK {
        return Err(DomainError::Invalid(format!(
            "stock received may not exceed {MAX_STOCK}"
        )));
    }
    Ok(vec![SkuEvent::StockAdjusted(StockAdjusted {
        delta,
        reason: reason.to_owned(),
    })])
}

/// [`SkuCommand::Reserve`]: at most once per order, within the stock and the
/// per-customer limit.
fn reserve(s: &Sku, order_id: &str, customer_id: &str, qty: u32) -> DomainResult<Vec<SkuEvent>> {
    s.require_registered(&s.sku)?;
    if s.holds.contains_key(order_id) {
        return Ok(vec![]); // already reserved for this order
    }
    if i64::from(qty) > s.available {
        return Err(DomainError::OutOfStock {
            sku: s.sku.clone(),
            requested: u64::from(qty),
            available: s.available,
        });
    }
    if let Some(limit) = s.per_customer_limit {
        let held = s.customer_units.get(customer_id).copied().unwrap_or(0);
        if held + u64::from(qty) > u64::from(limit) {
            return Err(DomainError::LimitExceeded {
                sku: s.sku.clone(),
                limit,
                held,
                requested: u64::from(qty),
            });
        }
    }
    Ok(vec![SkuEvent::StockReserved(StockReserved {
        order_id: order_id.to_owned(),
        customer_id: customer_id.to_owned(),
        qty,
    })])
}

fn add_customer_units(map: &mut HashMap<String, u64>, customer: &str, qty: u32) {
    *map.entry(customer.to_owned()).or_insert(0) += u64::from(qty);
}

fn sub_customer_units(map: &mut HashMap<String, u64>, customer: &str, qty: u32) {
    if let Some(n) = map.get_mut(customer) {
        *n = n.saturating_sub(u64::from(qty));
        if *n == 0 {
            map.remove(customer);
        }
    }
}

/// Applies an event. Total: it never fails; `decide` is where rules live.
pub fn apply(s: &mut Sku, ev: &SkuEvent) {
    use SkuEvent::*;
    s.version += 1;
    match ev {
        SkuRegistered(e) => {
            s.registered = true;
            s.sku = e.sku.clone();
            s.name = e.name.clone();
            s.price_minor = e.price_minor;
            s.currency = e.currency.clone();
            s.per_customer_limit = e.per_customer_limit;
        }
        SkuUpdated(e) => {
            s.name = e.name.clone();
            s.price_minor = e.price_minor;
            s.currency = e.currency.clone();
            s.per_customer_limit = e.per_customer_limit;
        }
        StockAdjusted(e) => {
            s.available += e.delta;
            s.received += e.delta;
        }
        StockReserved(e) => {
            s.available -= i64::from(e.qty);
            s.reserved += i64::from(e.qty);
            s.holds.insert(
                e.order_id.clone(),
                Hold {
                    customer_id: e.customer_id.clone(),
                    qty: e.qty,
                },
            );
            add_customer_units(&mut s.customer_units, &e.customer_id, e.qty);
        }
        StockReleased(e) => {
            s.available += i64::from(e.qty);
            s.reserved -= i64::from(e.qty);
            s.holds.remove(&e.order_id);
            sub_customer_units(&mut s.customer_units, &e.customer_id, e.qty);
        }
        StockReduced(e) => {
            s.reserved -= i64::from(e.qty);
            s.sold += i64::from(e.qty);
            s.holds.remove(&e.order_id);
        }
        StockRestored(e) => {
            s.sold -= i64::from(e.qty);
            s.available += i64::from(e.qty);
            sub_customer_units(&mut s.customer_units, &e.customer_id, e.qty);
        }
    }
}
