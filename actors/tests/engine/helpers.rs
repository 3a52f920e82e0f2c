//! What every room shares: an engine config on a temp dir, SKU and order builders, an
//! offline `verify` of a closed data dir, a bounded wait, an idempotency key.

use std::time::Duration;

use futures::executor::block_on;
use ordo_engine::domain::LineRequest;
use ordo_engine::{Durability, Engine, EngineConfig, PlaceOrder, UpsertSku};
use ordo_storage::{Store, StoreOptions};

pub fn config(dir: &std::path::Path, durability: Durability) -> EngineConfig {
    EngineConfig {
        data_dir: dir.to_path_buf(),
        durability,
        ..EngineConfig::default()
    }
}

pub fn sku(code: &str, stock: i64, price: i64) -> UpsertSku {
    UpsertSku {
        sku: code.into(),
        name: format!("item {code}"),
        price_minor: price,
        currency: "EUR".into(),
        per_customer_limit: None,
        stock,
    }
}

pub fn order(customer: &str, lines: &[(&str, u32)]) -> PlaceOrder {
    PlaceOrder {
        customer_id: customer.into(),
        lines: lines
            .iter()
            .map(|(s, q)| LineRequest {
                sku: (*s).into(),
                qty: *q,
            })
            .collect(),
    }
}

/// The store of a closed engine's data dir.
fn open_store(dir: &std::path::Path, durability: Durability) -> std::sync::Arc<Store> {
    Store::open(
        dir,
        StoreOptions {
            durability,
            ..StoreOptions::default()
        },
    )
    .unwrap()
}

pub fn verify_dir(dir: &std::path::Path) -> ordo_engine::VerifyReport {
    ordo_engine::verify(&open_store(dir, Durability::Buffered)).unwrap()
}

/// Waits (bounded) until `f` holds; no timing is asserted, only the eventual state.
pub fn eventually(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..400 {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

pub fn idem(key: &str) -> ordo_engine::Idempotency {
    ordo_engine::Idempotency {
        key: key.into(),
        fingerprint: b"fp".to_vec(),
        ttl: Duration::from_secs(3600),
        render: ordo_engine::render(|o: ordo_engine::Outcome<'_>| {
            Some(format!("{o:?}").into_bytes())
        }),
    }
}

/// Shuts the engine down cleanly, closes its store, and checks the log: no violation.
pub fn shutdown_and_verify(engine: Engine, dir: &std::path::Path) -> ordo_engine::VerifyReport {
    block_on(engine.shutdown()).unwrap();
    drop(engine);
    let report = verify_dir(dir);
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    report
}

/// Appends `events` to order `id`'s stream behind the engine's back (the engine closed),
/// after its head: states a crash or a hostile writer can leave. Returns the store.
pub fn append_to_order_behind_the_engine(
    dir: &std::path::Path,
    id: &str,
    events: &[ordo_engine::domain::OrderEvent],
) -> std::sync::Arc<Store> {
    let store = open_store(dir, Durability::Sync);
    let stream: std::sync::Arc<str> = std::sync::Arc::from(format!("order/{id}"));
    let head = store.stream_head(&stream).unwrap();
    let new: Vec<_> = events
        .iter()
        .zip(head + 1..)
        .map(|(e, version)| ordo_storage::NewEvent {
            stream: stream.clone(),
            version,
            event_type: e.type_name(),
            schema: e.schema(),
            at_ms: ordo_storage::now_ms(),
            trace_id: None,
            payload: e.encode_payload(),
        })
        .collect();
    let journal = ordo_storage::Journal::start(store.clone()).unwrap();
    journal
        .append(ordo_storage::Append::events(new))
        .wait()
        .unwrap();
    journal.close();
    store
}
