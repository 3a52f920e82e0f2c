//! The SKU aggregate: catalogue data and the stock counters, changed only through the
//! SKU's own events. Invariant after every event: `available >= 0`, `reserved >= 0`,
//! `available + reserved + sold == received`.

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

use super::events::*;
use super::{validate_currency, validate_sku, DomainError, DomainResult};

/// Units held for one live order (reserved, awaiting payment or deduction).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
pub struct Hold {
    pub customer_id: String,
    pub qty: u32,
}

/// Live holds by order id.
pub type Holds = imbl::HashMap<String, Hold>;

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
    ///
    /// Persistent maps (`imbl`): cloning the state is O(1), so a snapshot of a SKU with a
    /// million holds is encoded off the actor thread. Encoded through serde, which bincode
    /// writes byte for byte as it wrote the `std` maps (test `snapshot_bytes_unchanged`).
    #[bincode(with_serde)]
    pub holds: Holds,
    /// Units each customer has in orders that are not cancelled or failed (reserved or
    /// sold); what `per_customer_limit` is checked against. Customers at zero are removed.
    #[bincode(with_serde)]
    pub customer_units: imbl::HashMap<String, u64>,
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

fn add_customer_units(map: &mut imbl::HashMap<String, u64>, customer: &str, qty: u32) {
    *map.entry(customer.to_owned()).or_insert(0) += u64::from(qty);
}

fn sub_customer_units(map: &mut imbl::HashMap<String, u64>, customer: &str, qty: u32) {
    if let Some(n) = map.get_mut(customer) {
        *n = n.saturating_sub(u64::from(qty));
        if *n == 0 {
            map.remove(customer);
        }
    }
}

/// Sets the per-customer limit. Units per customer are counted only while a limit is set
/// (a SKU without one would otherwise keep a count for every customer who ever bought
/// it): a limit set later starts from the units customers hold now, so units bought
/// before it was set do not count against it; removing the limit drops the counts.
fn set_limit(s: &mut Sku, limit: Option<u32>) {
    match (s.per_customer_limit, limit) {
        (_, None) => s.customer_units = imbl::HashMap::new(),
        (None, Some(_)) => {
            let mut units = imbl::HashMap::new();
            for hold in s.holds.values() {
                add_customer_units(&mut units, &hold.customer_id, hold.qty);
            }
            s.customer_units = units;
        }
        (Some(_), Some(_)) => {}
    }
    s.per_customer_limit = limit;
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
            set_limit(s, e.per_customer_limit);
        }
        SkuUpdated(e) => {
            s.name = e.name.clone();
            s.price_minor = e.price_minor;
            s.currency = e.currency.clone();
            set_limit(s, e.per_customer_limit);
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
            if s.per_customer_limit.is_some() {
                add_customer_units(&mut s.customer_units, &e.customer_id, e.qty);
            }
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use bincode::{Decode, Encode};

    use super::*;

    /// The `Sku` of snapshot schema 1 as the previous release declared it (`std` maps).
    #[derive(Debug, Clone, Default, PartialEq, Eq, Encode, Decode)]
    struct SkuWithStdMaps {
        registered: bool,
        sku: String,
        name: String,
        price_minor: i64,
        currency: String,
        per_customer_limit: Option<u32>,
        available: i64,
        reserved: i64,
        sold: i64,
        received: i64,
        holds: HashMap<String, Hold>,
        customer_units: HashMap<String, u64>,
        version: u64,
    }

    /// Snapshots written before the maps became persistent still decode, and new ones are
    /// the same bytes, so the snapshot schema did not change.
    #[test]
    fn snapshot_bytes_unchanged() {
        let hold = Hold {
            customer_id: "c-1".into(),
            qty: 3,
        };
        let old = SkuWithStdMaps {
            registered: true,
            sku: "TEE".into(),
            name: "Tee".into(),
            price_minor: 1999,
            currency: "EUR".into(),
            per_customer_limit: Some(5),
            available: 7,
            reserved: 3,
            sold: 0,
            received: 10,
            holds: HashMap::from([("01ORDER".to_owned(), hold.clone())]),
            customer_units: HashMap::from([("c-1".to_owned(), 3)]),
            version: 4,
        };
        let cfg = bincode::config::standard();
        let old_bytes = bincode::encode_to_vec(&old, cfg).unwrap();
        let (new, _): (Sku, _) = bincode::decode_from_slice(&old_bytes, cfg).unwrap();
        assert_eq!(new.holds.get("01ORDER"), Some(&hold));
        assert_eq!(new.customer_units.get("c-1"), Some(&3));
        assert_eq!((new.available, new.reserved, new.version), (7, 3, 4));
        assert_eq!(bincode::encode_to_vec(&new, cfg).unwrap(), old_bytes);
    }
}
