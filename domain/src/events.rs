//! Events: past-tense facts, one enum per stream kind. Each payload carries a `schema`
//! number; [`decode`] upcasts older schemas, so a store written by an older release keeps
//! decoding after a payload gains a field.
//!
//! Stored form: bincode of the payload struct (the envelope, with type name and schema, is
//! the storage crate's). JSON form (feed, webhooks): the payload struct with snake_case
//! fields under the SPEC's type names.

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

use super::order::{OrderLine, Status};

/// A payload that does not decode: unknown type, unknown schema or bad bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot decode {event_type} (schema {schema}): {detail}")]
pub struct DecodeError {
    pub event_type: String,
    pub schema: u16,
    pub detail: String,
}

fn cfg() -> bincode::config::Configuration {
    bincode::config::standard()
}

fn decode_payload<T: Decode<()>>(
    event_type: &str,
    schema: u16,
    bytes: &[u8],
) -> Result<T, DecodeError> {
    match bincode::decode_from_slice::<T, _>(bytes, cfg()) {
        Ok((v, used)) if used == bytes.len() => Ok(v),
        Ok(_) => Err(DecodeError {
            event_type: event_type.into(),
            schema,
            detail: "trailing bytes".into(),
        }),
        Err(e) => Err(DecodeError {
            event_type: event_type.into(),
            schema,
            detail: e.to_string(),
        }),
    }
}

/// What the actors need of either event enum to store it.
pub trait DomainEvent {
    fn type_name(&self) -> &'static str;
    fn schema(&self) -> u16;
    fn encode_payload(&self) -> Vec<u8>;
}

macro_rules! event_enum {
    ($(#[$meta:meta])* $enum:ident { $($variant:ident = $schema:literal),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(tag = "type", content = "payload")]
        pub enum $enum { $($variant($variant)),* }

        impl DomainEvent for $enum {
            fn type_name(&self) -> &'static str { $enum::type_name(self) }
            fn schema(&self) -> u16 { $enum::schema(self) }
            fn encode_payload(&self) -> Vec<u8> { $enum::encode_payload(self) }
        }

        impl $enum {
            /// The SPEC's type name.
            pub fn type_name(&self) -> &'static str {
                match self { $(Self::$variant(_) => stringify!($variant)),* }
            }
            /// The current schema of this type's payload.
            pub fn schema(&self) -> u16 {
                match self { $(Self::$variant(_) => $schema),* }
            }
            /// The payload's stored bytes (current schema).
            pub fn encode_payload(&self) -> Vec<u8> {
                let res = match self { $(Self::$variant(p) => bincode::encode_to_vec(p, cfg())),* };
                // Encoding into a Vec only fails for types bincode cannot represent,
                // which none of these are.
                res.unwrap_or_else(|e| unreachable!("payload encodes: {e}"))
            }
            /// The payload as JSON (snake_case fields).
            pub fn payload_json(&self) -> serde_json::Value {
                let res = match self { $(Self::$variant(p) => serde_json::to_value(p)),* };
                res.unwrap_or(serde_json::Value::Null)
            }
            fn decode_current(event_type: &str, bytes: &[u8]) -> Option<Result<Self, DecodeError>> {
                match event_type {
                    $(stringify!($variant) => Some(decode_payload::<$variant>(event_type, $schema, bytes).map(Self::$variant)),)*
                    _ => None,
                }
            }
            fn current_schema(event_type: &str) -> Option<u16> {
                match event_type { $(stringify!($variant) => Some($schema),)* _ => None }
            }
        }
    };
}

event_enum! {
    /// Events of a `sku/{sku}` stream.
    SkuEvent {
        SkuRegistered = 2,
        SkuUpdated = 1,
        StockAdjusted = 1,
        StockReserved = 1,
        StockReleased = 1,
        StockReduced = 1,
        StockRestored = 1,
    }
}

event_enum! {
    /// Events of an `order/{id}` stream.
    OrderEvent {
        OrderCreated = 1,
        OrderPending = 1,
        OrderFailed = 1,
        PaymentSucceeded = 1,
        PaymentFailed = 1,
        OrderConfirmed = 1,
        OrderCancelled = 1,
        RefundRequested = 1,
        ShipmentPrepared = 1,
        ShipmentProcessed = 1,
        OrderFulfilled = 1,
    }
}

/// Schema 2 added `per_customer_limit`; schema 1 is upcast with no limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct SkuRegistered {
    pub sku: String,
    pub name: String,
    pub price_minor: i64,
    pub currency: String,
    pub per_customer_limit: Option<u32>,
}

/// `SkuRegistered` as schema 1 stored it. Kept to upcast old stores.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct SkuRegisteredV1 {
    pub sku: String,
    pub name: String,
    pub price_minor: i64,
    pub currency: String,
}

impl From<SkuRegisteredV1> for SkuRegistered {
    fn from(v1: SkuRegisteredV1) -> Self {
        SkuRegistered {
            sku: v1.sku,
            name: v1.name,
            price_minor: v1.price_minor,
            currency: v1.currency,
            per_customer_limit: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct SkuUpdated {
    pub name: String,
    pub price_minor: i64,
    pub currency: String,
    pub per_customer_limit: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct StockAdjusted {
    pub delta: i64,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct StockReserved {
    pub order_id: String,
    pub customer_id: String,
    pub qty: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct StockReleased {
    pub order_id: String,
    pub customer_id: String,
    pub qty: u32,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct StockReduced {
    pub order_id: String,
    pub customer_id: String,
    pub qty: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct StockRestored {
    pub order_id: String,
    pub customer_id: String,
    pub qty: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct OrderCreated {
    pub order_id: String,
    pub customer_id: String,
    pub lines: Vec<OrderLine>,
    pub total_minor: i64,
    pub currency: String,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct OrderPending {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct OrderFailed {
    /// `out_of_stock`, `limit_exceeded` or `unknown_sku`.
    pub reason: String,
    pub sku: String,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct PaymentSucceeded {
    pub payment_ref: String,
    pub amount_minor: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct PaymentFailed {
    pub payment_ref: String,
    pub amount_minor: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct OrderConfirmed {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct OrderCancelled {
    /// `customer`, `payment_failed`, `expired` or the caller's own reason.
    pub reason: String,
    /// The status the order left; `Confirmed` means units go back to stock.
    pub from: Status,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct RefundRequested {
    pub payment_ref: String,
    pub amount_minor: i64,
    /// `cancelled` (a paid order was cancelled) or `order_not_payable` (late payment).
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct ShipmentPrepared {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct ShipmentProcessed {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct OrderFulfilled {}

/// Either kind of event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Sku(SkuEvent),
    Order(OrderEvent),
}

impl Event {
    pub fn type_name(&self) -> &'static str {
        match self {
            Event::Sku(e) => e.type_name(),
            Event::Order(e) => e.type_name(),
        }
    }

    pub fn payload_json(&self) -> serde_json::Value {
        match self {
            Event::Sku(e) => e.payload_json(),
            Event::Order(e) => e.payload_json(),
        }
    }
}

/// Decodes a stored payload of any schema this release knows, upcasting old ones.
pub fn decode(event_type: &str, schema: u16, bytes: &[u8]) -> Result<Event, DecodeError> {
    let current =
        SkuEvent::current_schema(event_type).or_else(|| OrderEvent::current_schema(event_type));
    match (event_type, schema) {
        (_, s) if Some(s) == current => {
            if let Some(r) = SkuEvent::decode_current(event_type, bytes) {
                r.map(Event::Sku)
            } else if let Some(r) = OrderEvent::decode_current(event_type, bytes) {
                r.map(Event::Order)
            } else {
                unreachable!("a type with a current schema decodes")
            }
        }
        ("SkuRegistered", 1) => decode_payload::<SkuRegisteredV1>(event_type, schema, bytes)
            .map(|v1| Event::Sku(SkuEvent::SkuRegistered(v1.into()))),
        _ => Err(DecodeError {
            event_type: event_type.into(),
            schema,
            detail: match current {
                Some(c) => format!("unknown schema (this release writes {c})"),
                None => "unknown event type".into(),
            },
        }),
    }
}

/// Decodes a SKU stream's payload.
pub fn decode_sku(event_type: &str, schema: u16, bytes: &[u8]) -> Result<SkuEvent, DecodeError> {
    match decode(event_type, schema, bytes)? {
        Event::Sku(e) => Ok(e),
        Event::Order(_) => Err(DecodeError {
            event_type: event_type.into(),
            schema,
            detail: "an order event in a sku stream".into(),
        }),
    }
}

/// Decodes an order stream's payload.
pub fn decode_order(
    event_type: &str,
    schema: u16,
    bytes: &[u8],
) -> Result<OrderEvent, DecodeError> {
    match decode(event_type, schema, bytes)? {
        Event::Order(e) => Ok(e),
        Event::Sku(_) => Err(DecodeError {
            event_type: event_type.into(),
            schema,
            detail: "a sku event in an order stream".into(),
        }),
    }
}
