//! The functional core: SKU and order state, commands, events, and the pure
//! `decide(state, command) -> Result<Vec<Event>, DomainError>` / `apply(state, &event)`
//! pair for each. No actix, no I/O, no clock: time comes in with the commands.

pub mod aggregate;
pub mod events;
pub mod order;
pub mod sku;

use serde::{Deserialize, Serialize};

pub use aggregate::Aggregate;
pub use events::{Event, OrderEvent, SkuEvent};
pub use order::{Order, OrderCommand, OrderLine, Status};
pub use sku::{Sku, SkuCommand};

/// Why a command was refused. Each maps to one problem `type` of SPEC §4 at the edge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("unknown sku `{0}`")]
    UnknownSku(String),
    #[error("sku `{sku}` is out of stock: {requested} requested, {available} available")]
    OutOfStock {
        sku: String,
        requested: u64,
        available: i64,
    },
    #[error("sku `{sku}` allows {limit} units per customer; customer holds {held}, asked for {requested}")]
    LimitExceeded {
        sku: String,
        limit: u32,
        held: u64,
        requested: u64,
    },
    #[error("sku `{sku}` has {available} available; cannot remove {requested}")]
    InsufficientStock {
        sku: String,
        available: i64,
        requested: i64,
    },
    #[error("order is {from}; cannot {action}")]
    InvalidTransition { from: Status, action: String },
    #[error("order is {status} and can no longer be paid")]
    OrderNotPayable { status: Status },
    #[error("payment of {got} does not match the order total {expected}")]
    AmountMismatch { expected: i64, got: i64 },
    #[error("currency mismatch: order lines are in {first} and {other}")]
    CurrencyMismatch { first: String, other: String },
}

pub type DomainResult<T> = Result<T, DomainError>;

/// A SKU code: 1–64 characters of `[A-Za-z0-9._:-]`.
pub fn validate_sku(sku: &str) -> DomainResult<()> {
    let ok = !sku.is_empty()
        && sku.len() <= 64
        && sku
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(DomainError::Invalid(format!(
            "sku must be 1-64 characters of [A-Za-z0-9._:-], got {sku:?}"
        )))
    }
}

/// A customer id: 1–128 visible ASCII characters.
pub fn validate_customer(id: &str) -> DomainResult<()> {
    if !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(DomainError::Invalid(
            "customer_id must be 1-128 visible ASCII characters".into(),
        ))
    }
}

/// An ISO 4217 code: three upper-case ASCII letters.
pub fn validate_currency(c: &str) -> DomainResult<()> {
    if c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(DomainError::Invalid(format!(
            "currency must be an ISO 4217 code (3 upper-case letters), got {c:?}"
        )))
    }
}

/// A payment provider's reference: 1–255 visible ASCII characters.
pub fn validate_payment_ref(r: &str) -> DomainResult<()> {
    if !r.is_empty() && r.len() <= 255 && r.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(DomainError::Invalid(
            "payment_ref must be 1-255 visible ASCII characters".into(),
        ))
    }
}

/// A reason given by a person (cancellation, stock adjustment): 1–256 characters, not
/// blank, no control characters.
pub fn validate_reason(r: &str) -> DomainResult<()> {
    if !r.trim().is_empty() && r.len() <= 256 && !r.chars().any(char::is_control) {
        Ok(())
    } else {
        Err(DomainError::Invalid(
            "reason must be 1-256 characters, not blank, without control characters".into(),
        ))
    }
}

/// An order id: a ULID, 26 characters of Crockford's base32 (either case; no I, L, O
/// or U). Anything else cannot name an order.
pub fn validate_order_id(id: &str) -> DomainResult<()> {
    let base32 = |b: u8| {
        b.is_ascii_digit()
            || (b.is_ascii_alphabetic()
                && !matches!(b.to_ascii_uppercase(), b'I' | b'L' | b'O' | b'U'))
    };
    if id.len() == 26 && id.bytes().all(base32) {
        Ok(())
    } else {
        Err(DomainError::Invalid(format!(
            "order id {id:?} is not a ULID"
        )))
    }
}

/// Limits of SPEC §1 on an order's lines.
pub const MAX_LINES: usize = 100;
pub const MAX_QTY: u32 = 10_000;

/// A requested line before prices are captured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineRequest {
    pub sku: String,
    pub qty: u32,
}

/// Checks an order request's shape: 1–100 lines, qty 1–10,000, no SKU twice.
pub fn validate_lines(customer_id: &str, lines: &[LineRequest]) -> DomainResult<()> {
    validate_customer(customer_id)?;
    if lines.is_empty() || lines.len() > MAX_LINES {
        return Err(DomainError::Invalid(format!(
            "an order has 1-{MAX_LINES} lines, got {}",
            lines.len()
        )));
    }
    let mut seen = std::collections::HashSet::with_capacity(lines.len());
    for l in lines {
        validate_sku(&l.sku)?;
        if l.qty == 0 || l.qty > MAX_QTY {
            return Err(DomainError::Invalid(format!(
                "qty must be 1-{MAX_QTY}, got {} for sku {}",
                l.qty, l.sku
            )));
        }
        if !seen.insert(l.sku.as_str()) {
            return Err(DomainError::Invalid(format!("sku {} appears twice", l.sku)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_ids_are_ulids_in_either_case_and_nothing_else() {
        for ok in [
            "01ARZ3NDEKTSV4RRFFQ69G5FAV",
            "01arz3ndektsv4rrffq69g5fav",
            "7ZZZZZZZZZZZZZZZZZZZZZZZZZ",
        ] {
            assert_eq!(validate_order_id(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "not-an-id",
            "01ARZ3NDEKTSV4RRFFQ69G5FA",
            "01ARZ3NDEKTSV4RRFFQ69G5FAVX",
            "01ARZ3NDEKTSV4RRFFQ69G5FAI",
            "01ARZ3NDEKTSV4RRFFQ69G5FAU",
            "01ARZ3NDEKTSV4RRFFQ69G5FA-",
            "01ARZ3NDEKTSV4RRFFQ69G5FAÄ",
        ] {
            assert!(validate_order_id(bad).is_err(), "{bad}");
        }
    }
}
