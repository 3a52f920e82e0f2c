//! Engine tests: real actors on real RocksDB in temp dirs. One binary, to keep link time
//! down.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use futures::executor::block_on;
use futures::future::join_all;
use ordo_engine::domain::order::{PaymentOutcome, ShipmentStep, Status};
use ordo_engine::domain::{DomainError, LineRequest};
use ordo_engine::{Durability, Engine, EngineConfig, EngineError, PlaceOrder, UpsertSku};
use ordo_storage::{Store, StoreOptions};

fn config(dir: &std::path::Path, durability: Durability) -> EngineConfig {
    EngineConfig {
        data_dir: dir.to_path_buf(),
        durability,
        ..EngineConfig::default()
    }
}

fn sku(code: &str, stock: i64, price: i64) -> UpsertSku {
    UpsertSku {
        sku: code.into(),
        name: format!("item {code}"),
        price_minor: price,
        currency: "EUR".into(),
        per_customer_limit: None,
        stock,
    }
}

fn order(customer: &str, lines: &[(&str, u32)]) -> PlaceOrder {
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

fn verify_dir(dir: &std::path::Path) -> ordo_engine::VerifyReport {
    let store = Store::open(
        dir,
        StoreOptions {
            durability: Durability::Buffered,
        },
    )
    .unwrap();
    ordo_engine::verify(&store).unwrap()
}

/// Waits (bounded) until `f` holds; no timing is asserted, only the eventual state.
fn eventually(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..400 {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

#[test]
fn ten_thousand_buyers_race_for_a_thousand_units_and_exactly_a_thousand_win() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), Durability::Sync)).unwrap();
    block_on(engine.upsert_sku(sku("HOT", 1_000, 2_500), None)).unwrap();
    let results =
        block_on(join_all((0..10_000).map(|i| {
            engine.place_order(order(&format!("c{i}"), &[("HOT", 1)]), None)
        })));
    let mut pending = 0;
    let mut sold_out = 0;
    for r in results {
        match r {
            Ok(o) => {
                assert_eq!(o.status, Status::Pending);
                assert_eq!(o.total_minor, 2_500);
                pending += 1;
            }
            Err(EngineError::OrderFailed {
                order,
                reason: DomainError::OutOfStock { .. },
            }) => {
                assert_eq!(order.status, Status::Failed);
                sold_out += 1;
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!((pending, sold_out), (1_000, 9_000));
    let s = block_on(engine.get_sku("HOT")).unwrap();
    assert_eq!((s.available, s.reserved, s.sold), (0, 1_000, 0));
    block_on(engine.shutdown()).unwrap();
    drop(engine);
    let report = verify_dir(dir.path());
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    assert_eq!(report.orders, 10_000);
}

#[test]
fn multi_sku_orders_racing_on_overlapping_skus_leak_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), Durability::Buffered)).unwrap();
    for code in ["A", "B", "C"] {
        block_on(engine.upsert_sku(sku(code, 300, 100), None)).unwrap();
    }
    let shapes: [&[(&str, u32)]; 4] = [
        &[("A", 1), ("B", 2)],
        &[("B", 1), ("C", 1), ("A", 1)],
        &[("C", 3)],
        &[("A", 2), ("C", 1)],
    ];
    let results =
        block_on(join_all((0..2_000).map(|i| {
            engine.place_order(order(&format!("c{i}"), shapes[i % 4]), None)
        })));
    let mut want: HashMap<&str, i64> = HashMap::new();
    for (i, r) in results.iter().enumerate() {
        match r {
            Ok(_) => {
                for (s, q) in shapes[i % 4] {
                    *want.entry(s).or_default() += i64::from(*q);
                }
            }
            Err(EngineError::OrderFailed { .. }) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    for code in ["A", "B", "C"] {
        let s = block_on(engine.get_sku(code)).unwrap();
        assert_eq!(
            s.reserved,
            want.get(code).copied().unwrap_or(0),
            "sku {code}"
        );
        assert_eq!(s.available + s.reserved + s.sold, 300, "sku {code}");
        assert!(s.available >= 0);
    }
    block_on(engine.shutdown()).unwrap();
    drop(engine);
    let report = verify_dir(dir.path());
    assert!(report.violations.is_empty(), "{:?}", report.violations);
}

#[test]
fn an_order_lives_through_payment_shipment_and_cancellation() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), Durability::Sync)).unwrap();
    block_on(async {
        engine.upsert_sku(sku("TEA", 10, 450), None).await.unwrap();
        engine.upsert_sku(sku("MUG", 5, 1_200), None).await.unwrap();
        let o = engine
            .place_order(order("alice", &[("TEA", 2), ("MUG", 1)]), None)
            .await
            .unwrap();
        assert_eq!(o.total_minor, 2 * 450 + 1_200);
        assert_eq!(o.currency, "EUR");

        // A wrong amount is refused and changes nothing.
        let e = engine
            .pay(&o.id, "pay-1", PaymentOutcome::Succeeded, 1, None)
            .await
            .unwrap_err();
        assert!(
            matches!(e, EngineError::Domain(DomainError::AmountMismatch { .. })),
            "{e}"
        );
        assert_eq!(
            engine.get_order(&o.id).await.unwrap().status,
            Status::Pending
        );

        let paid = engine
            .pay(
                &o.id,
                "pay-1",
                PaymentOutcome::Succeeded,
                o.total_minor,
                None,
            )
            .await
            .unwrap();
        assert_eq!(paid.status, Status::Confirmed);
        let tea = engine.get_sku("TEA").await.unwrap();
        assert_eq!((tea.available, tea.reserved, tea.sold), (8, 0, 2));
        // The same payment again is answered, not applied twice.
        let again = engine
            .pay(
                &o.id,
                "pay-1",
                PaymentOutcome::Succeeded,
                o.total_minor,
                None,
            )
            .await
            .unwrap();
        assert_eq!(again.version, paid.version);
        // Another payment for a paid order is refused and a refund recorded.
        let e = engine
            .pay(
                &o.id,
                "pay-2",
                PaymentOutcome::Succeeded,
                o.total_minor,
                None,
            )
            .await
            .unwrap_err();
        match e {
            EngineError::NotPayable { order } => {
                assert!(order.refunds_requested.contains(&"pay-2".to_string()))
            }
            other => panic!("unexpected {other}"),
        }

        let e = engine
            .ship(&o.id, ShipmentStep::Processed, None)
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                EngineError::Domain(DomainError::InvalidTransition { .. })
            ),
            "{e}"
        );
        let prepared = engine
            .ship(&o.id, ShipmentStep::Prepared, None)
            .await
            .unwrap();
        assert_eq!(prepared.status, Status::ShipmentPrepared);
        let e = engine
            .cancel(&o.id, "changed mind", None)
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                EngineError::Domain(DomainError::InvalidTransition { .. })
            ),
            "{e}"
        );
        engine
            .ship(&o.id, ShipmentStep::Processed, None)
            .await
            .unwrap();
        let done = engine
            .ship(&o.id, ShipmentStep::Fulfilled, None)
            .await
            .unwrap();
        assert_eq!(done.status, Status::Fulfilled);
        let statuses: Vec<_> = done.history.iter().map(|h| h.status).collect();
        assert_eq!(
            statuses,
            vec![
                Status::Pending,
                Status::Paid,
                Status::Confirmed,
                Status::ShipmentPrepared,
                Status::ShipmentProcessed,
                Status::Fulfilled
            ]
        );

        // Cancelling a confirmed order restores its units and requests a refund.
        let o2 = engine
            .place_order(order("bob", &[("MUG", 2)]), None)
            .await
            .unwrap();
        engine
            .pay(
                &o2.id,
                "pay-3",
                PaymentOutcome::Succeeded,
                o2.total_minor,
                None,
            )
            .await
            .unwrap();
        let c = engine.cancel(&o2.id, "customer", None).await.unwrap();
        assert_eq!(c.status, Status::Cancelled);
        assert_eq!(c.refunds_requested, vec!["pay-3".to_string()]);
        let mug = engine.get_sku("MUG").await.unwrap();
        assert_eq!((mug.available, mug.reserved, mug.sold), (4, 0, 1));

        // A failed payment cancels the order and releases its units.
        let o3 = engine
            .place_order(order("carol", &[("TEA", 3)]), None)
            .await
            .unwrap();
        let f = engine
            .pay(
                &o3.id,
                "pay-4",
                PaymentOutcome::Failed,
                o3.total_minor,
                None,
            )
            .await
            .unwrap();
        assert_eq!(
            (f.status, f.cancel_reason.as_deref()),
            (Status::Cancelled, Some("payment_failed"))
        );
        assert_eq!(engine.get_sku("TEA").await.unwrap().reserved, 0);

        // Cancelling a PENDING order releases; cancelling twice is refused.
        let o4 = engine
            .place_order(order("dave", &[("TEA", 1)]), None)
            .await
            .unwrap();
        engine.cancel(&o4.id, "", None).await.unwrap();
        let e = engine.cancel(&o4.id, "", None).await.unwrap_err();
        assert!(
            matches!(
                e,
                EngineError::Domain(DomainError::InvalidTransition { .. })
            ),
            "{e}"
        );
        let tea = engine.get_sku("TEA").await.unwrap();
        assert_eq!((tea.available, tea.reserved, tea.sold), (8, 0, 2));

        // Compensation: the second line fails, the first is released, the order is FAILED.
        let e = engine
            .place_order(order("erin", &[("TEA", 1), ("MUG", 50)]), None)
            .await
            .unwrap_err();
        match e {
            EngineError::OrderFailed {
                order,
                reason: DomainError::OutOfStock { sku, .. },
            } => {
                assert_eq!(sku, "MUG");
                assert_eq!(order.failed_sku.as_deref(), Some("MUG"));
            }
            other => panic!("unexpected {other}"),
        }
        assert_eq!(engine.get_sku("TEA").await.unwrap().available, 8);

        // Bad input changes nothing.
        let e = engine
            .place_order(order("x", &[("NOPE", 1)]), None)
            .await
            .unwrap_err();
        assert!(
            matches!(e, EngineError::Domain(DomainError::UnknownSku(_))),
            "{e}"
        );
        let e = engine
            .place_order(order("x", &[("TEA", 1), ("TEA", 1)]), None)
            .await
            .unwrap_err();
        assert!(
            matches!(e, EngineError::Domain(DomainError::Invalid(_))),
            "{e}"
        );
        let e = engine
            .place_order(order("x", &[("TEA", 0)]), None)
            .await
            .unwrap_err();
        assert!(
            matches!(e, EngineError::Domain(DomainError::Invalid(_))),
            "{e}"
        );
        let e = engine
            .adjust_stock("TEA", -100, "shrinkage", None)
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                EngineError::Domain(DomainError::InsufficientStock { .. })
            ),
            "{e}"
        );
        assert!(matches!(
            engine.get_order("01ARZ3NDEKTSV4RRFFQ69G5FAV").await,
            Err(EngineError::OrderNotFound { .. })
        ));
        engine.shutdown().await.unwrap();
    });
    drop(engine);
    let report = verify_dir(dir.path());
    assert!(report.violations.is_empty(), "{:?}", report.violations);
}

#[test]
fn per_customer_limits_and_currencies_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), Durability::Memory)).unwrap();
    block_on(async {
        let mut limited = sku("LTD", 100, 999);
        limited.per_customer_limit = Some(2);
        engine.upsert_sku(limited, None).await.unwrap();
        let mut usd = sku("USD-ITEM", 10, 100);
        usd.currency = "USD".into();
        engine.upsert_sku(usd, None).await.unwrap();
        engine
            .place_order(order("zoe", &[("LTD", 2)]), None)
            .await
            .unwrap();
        let e = engine
            .place_order(order("zoe", &[("LTD", 1)]), None)
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                EngineError::OrderFailed {
                    reason: DomainError::LimitExceeded { .. },
                    ..
                }
            ),
            "{e}"
        );
        engine
            .place_order(order("yan", &[("LTD", 2)]), None)
            .await
            .unwrap();
        let e = engine
            .place_order(order("yan", &[("LTD", 1), ("USD-ITEM", 1)]), None)
            .await
            .unwrap_err();
        assert!(matches!(e, EngineError::OrderFailed { .. }), "{e}");
        let e = engine
            .place_order(order("ann", &[("LTD", 1), ("USD-ITEM", 1)]), None)
            .await
            .unwrap_err();
        assert!(
            matches!(e, EngineError::Domain(DomainError::CurrencyMismatch { .. })),
            "{e}"
        );
        let s = engine.get_sku("LTD").await.unwrap();
        assert_eq!(
            (s.available, s.reserved),
            (96, 4),
            "the mismatched order's reservation was released"
        );
        assert_eq!(engine.get_sku("USD-ITEM").await.unwrap().available, 10);
        engine.shutdown().await.unwrap();
    });
}

#[test]
fn an_unpaid_order_expires_releases_its_stock_and_refuses_late_payment() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), Durability::Sync);
    cfg.reservation_ttl = Duration::from_millis(300);
    let engine = Engine::open(cfg).unwrap();
    block_on(engine.upsert_sku(sku("FLASH", 5, 100), None)).unwrap();
    let o = block_on(engine.place_order(order("u1", &[("FLASH", 3)]), None)).unwrap();
    assert!(eventually(|| block_on(engine.get_order(&o.id))
        .unwrap()
        .status
        == Status::Cancelled));
    let o = block_on(engine.get_order(&o.id)).unwrap();
    assert_eq!(o.cancel_reason.as_deref(), Some("expired"));
    assert!(eventually(|| block_on(engine.get_sku("FLASH"))
        .unwrap()
        .available
        == 5));
    let e = block_on(engine.pay(
        &o.id,
        "late-1",
        PaymentOutcome::Succeeded,
        o.total_minor,
        None,
    ))
    .unwrap_err();
    match e {
        EngineError::NotPayable { order } => {
            assert_eq!(order.refunds_requested, vec!["late-1".to_string()])
        }
        other => panic!("unexpected {other}"),
    }
    let events = engine
        .read_events(0, 1_000, Some(&format!("order/{}", o.id)))
        .unwrap();
    let types: Vec<_> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        vec![
            "OrderCreated",
            "OrderPending",
            "OrderCancelled",
            "RefundRequested"
        ]
    );
    block_on(engine.shutdown()).unwrap();
}

/// Runs a mixed workload and returns the SKU and order views it ends with.
fn workload(engine: &Engine) -> Vec<String> {
    block_on(async {
        for code in ["P", "Q", "R"] {
            engine.upsert_sku(sku(code, 200, 300), None).await.unwrap();
        }
        let mut ids = Vec::new();
        for i in 0..150 {
            let lines: &[(&str, u32)] = match i % 3 {
                0 => &[("P", 2)],
                1 => &[("Q", 1), ("R", 1)],
                _ => &[("R", 3), ("P", 1)],
            };
            if let Ok(o) = engine
                .place_order(order(&format!("c{i}"), lines), None)
                .await
            {
                match i % 5 {
                    0 | 1 => {
                        engine
                            .pay(
                                &o.id,
                                &format!("p{i}"),
                                PaymentOutcome::Succeeded,
                                o.total_minor,
                                None,
                            )
                            .await
                            .unwrap();
                    }
                    2 => {
                        engine.cancel(&o.id, "customer", None).await.unwrap();
                    }
                    _ => {}
                }
                if i % 10 == 0 {
                    engine
                        .ship(&o.id, ShipmentStep::Prepared, None)
                        .await
                        .unwrap();
                }
                ids.push(o.id);
            }
        }
        ids
    })
}

fn state_of(engine: &Engine, ids: &[String]) -> String {
    block_on(async {
        let mut out = String::new();
        for code in ["P", "Q", "R"] {
            out.push_str(&format!("{:?}\n", engine.get_sku(code).await.unwrap()));
        }
        for id in ids {
            out.push_str(&format!("{:?}\n", engine.get_order(id).await.unwrap()));
        }
        out
    })
}

#[test]
fn recovery_from_snapshots_equals_recovery_from_the_log_alone() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), Durability::Sync);
    cfg.snapshot_every = 7;
    let engine = Engine::open(cfg.clone()).unwrap();
    let ids = workload(&engine);
    let before = state_of(&engine, &ids);
    block_on(engine.shutdown()).unwrap();
    drop(engine);

    let with_snapshots = Engine::open(cfg.clone()).unwrap();
    let a = state_of(&with_snapshots, &ids);
    block_on(with_snapshots.shutdown()).unwrap();
    drop(with_snapshots);
    let mut log_only = cfg;
    log_only.ignore_snapshots = true;
    let from_log = Engine::open(log_only).unwrap();
    let b = state_of(&from_log, &ids);
    block_on(from_log.shutdown()).unwrap();
    assert_eq!(a, before);
    assert_eq!(a, b);
}

// ---- crash test: a child process runs a mixed workload in sync mode, is SIGKILLed ----

const CHILD_ENV: &str = "ORDO_ENGINE_CRASH_CHILD_DIR";

/// Child process of `acknowledged_orders_survive_sigkill_and_deadlines_still_fire`: runs
/// orders forever and prints each acknowledged result as `<id> <STATUS>`.
#[test]
#[ignore = "child process of the crash test"]
fn crash_child_workload() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut cfg = config(std::path::Path::new(&dir), Durability::Sync);
    cfg.reservation_ttl = Duration::from_millis(1_500);
    cfg.snapshot_every = 50;
    cfg.checkpoint_every = 400;
    let engine = Engine::open(cfg).unwrap();
    block_on(async {
        for code in ["K1", "K2"] {
            engine
                .upsert_sku(sku(code, 1_000_000, 100), None)
                .await
                .unwrap();
        }
        let out = std::sync::Mutex::new(std::io::stdout());
        let say = |id: &str, st: Status| {
            let mut o = out.lock().unwrap();
            writeln!(o, "{id} {st}").unwrap();
            o.flush().unwrap();
        };
        for round in 0u64.. {
            let batch = (0..16).map(|k| {
                let engine = engine.clone();
                let say = &say;
                async move {
                    let i = round * 16 + k;
                    let lines: &[(&str, u32)] = if i % 2 == 0 {
                        &[("K1", 1)]
                    } else {
                        &[("K1", 1), ("K2", 2)]
                    };
                    let o = engine
                        .place_order(order(&format!("c{i}"), lines), None)
                        .await
                        .unwrap();
                    say(&o.id, o.status);
                    match i % 4 {
                        0 => say(
                            &o.id,
                            engine
                                .pay(
                                    &o.id,
                                    &format!("p{i}"),
                                    PaymentOutcome::Succeeded,
                                    o.total_minor,
                                    None,
                                )
                                .await
                                .unwrap()
                                .status,
                        ),
                        1 => say(
                            &o.id,
                            engine.cancel(&o.id, "customer", None).await.unwrap().status,
                        ),
                        _ => {} // left PENDING: expires after the restart
                    }
                }
            });
            join_all(batch).await;
        }
    });
}

fn rank(s: &str) -> u8 {
    match s {
        "PENDING" => 0,
        "PAID" => 1,
        "CONFIRMED" => 2,
        _ => 3,
    }
}

#[test]
fn acknowledged_orders_survive_sigkill_and_deadlines_still_fire() {
    let exe = std::env::current_exe().unwrap();
    for kill_after in [40usize, 400] {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_child_workload",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut acked: HashMap<String, String> = HashMap::new();
        let mut n = 0;
        let record = |line: &str, acked: &mut HashMap<String, String>| {
            // Only acknowledgement lines (`<ULID> <STATUS>`); the harness prints its own.
            if let Some((id, st)) = line.split_once(' ').filter(|(id, _)| id.len() == 26) {
                let e = acked.entry(id.to_owned()).or_insert_with(|| st.to_owned());
                if st == "CANCELLED" || rank(st) > rank(e) {
                    *e = st.to_owned();
                }
            }
        };
        for line in lines.by_ref() {
            record(&line.unwrap(), &mut acked);
            n += 1;
            if n >= kill_after {
                break;
            }
        }
        child.kill().unwrap();
        for line in lines {
            record(&line.unwrap(), &mut acked);
        }
        child.wait().unwrap();

        let mut cfg = config(dir.path(), Durability::Sync);
        cfg.reservation_ttl = Duration::from_millis(1_500);
        let engine = Engine::open(cfg).unwrap();
        for (id, st) in &acked {
            let o = block_on(engine.get_order(id))
                .unwrap_or_else(|e| panic!("acknowledged order {id} lost: {e}"));
            let now = o.status.as_str();
            let ok = match st.as_str() {
                "CANCELLED" => now == "CANCELLED",
                "CONFIRMED" => matches!(now, "CONFIRMED" | "CANCELLED"),
                _ => true, // PENDING may since have been paid, cancelled or expired
            };
            assert!(ok, "order {id} acknowledged {st}, now {now}");
        }
        // Every PENDING order's deadline still fires after the restart.
        let pending: Vec<&String> = acked
            .iter()
            .filter(|(_, s)| *s == "PENDING")
            .map(|(id, _)| id)
            .collect();
        assert!(eventually(|| pending.iter().all(|id| block_on(
            engine.get_order(id)
        )
        .unwrap()
        .status
            != Status::Pending)));
        assert!(eventually(|| block_on(engine.get_sku("K1"))
            .unwrap()
            .reserved
            == 0));
        block_on(engine.shutdown()).unwrap();
        drop(engine);
        let report = verify_dir(dir.path());
        assert!(report.violations.is_empty(), "{:?}", report.violations);
    }
}

#[test]
fn an_old_schema_payload_from_the_fixture_decodes_through_the_upcaster() {
    use ordo_engine::domain::events::{decode, Event, SkuEvent};
    // Written by the schema-1 encoder of SkuRegistered (before per_customer_limit).
    let hex = include_str!("fixtures/sku_registered_v1.hex").trim();
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    match decode("SkuRegistered", 1, &bytes).unwrap() {
        Event::Sku(SkuEvent::SkuRegistered(e)) => {
            assert_eq!(
                (
                    e.sku.as_str(),
                    e.name.as_str(),
                    e.price_minor,
                    e.currency.as_str()
                ),
                ("LEGACY-1", "Old item", 1234, "EUR")
            );
            assert_eq!(e.per_customer_limit, None);
        }
        other => panic!("unexpected {other:?}"),
    }
    // The fixture is exactly what the kept schema-1 encoder writes.
    let v1 = ordo_engine::domain::events::SkuRegisteredV1 {
        sku: "LEGACY-1".into(),
        name: "Old item".into(),
        price_minor: 1234,
        currency: "EUR".into(),
    };
    assert_eq!(
        bincode::encode_to_vec(&v1, bincode::config::standard()).unwrap(),
        bytes
    );
    // Schema 1 bytes are not mistaken for the current schema, and unknown schemas fail.
    assert!(decode("SkuRegistered", 9, &bytes).is_err());
    assert!(decode("NoSuchEvent", 1, &bytes).is_err());
}

// ---- property test: the pure core against a plain reference model ----

#[test]
fn pending_orders_without_actors_survive_a_checkpointed_restart_and_still_expire() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), Durability::Sync);
    cfg.reservation_ttl = Duration::from_millis(2_500);
    let engine = Engine::open(cfg.clone()).unwrap();
    block_on(engine.upsert_sku(sku("A", 10, 100), None)).unwrap();
    block_on(engine.upsert_sku(sku("B", 10, 100), None)).unwrap();
    let mut ids = Vec::new();
    for c in ["p1", "p2", "p3"] {
        ids.push(
            block_on(engine.place_order(order(c, &[("A", 1), ("B", 2)]), None))
                .unwrap()
                .id,
        );
    }
    assert_eq!(
        engine.pending_without_actor(),
        3,
        "placed orders wait without actors"
    );
    // One is paid before the restart (activated, leaves the table).
    let paid = block_on(engine.get_order(&ids[0])).unwrap();
    block_on(engine.pay(
        &ids[0],
        "pay-1",
        PaymentOutcome::Succeeded,
        paid.total_minor,
        None,
    ))
    .unwrap();
    assert_eq!(engine.pending_without_actor(), 2);
    block_on(engine.shutdown()).unwrap();
    drop(engine);

    // The clean shutdown's checkpoint carries the table; the restart takes it back.
    let engine = Engine::open(cfg).unwrap();
    assert_eq!(engine.pending_without_actor(), 2);
    assert_eq!(
        block_on(engine.get_order(&ids[0])).unwrap().status,
        Status::Confirmed
    );
    // Their deadlines still fire: the stock comes back, the paid order keeps its units.
    assert!(eventually(|| ids[1..].iter().all(|id| block_on(
        engine.get_order(id)
    )
    .unwrap()
    .status
        == Status::Cancelled)));
    assert!(eventually(|| {
        let (a, b) = (
            block_on(engine.get_sku("A")).unwrap(),
            block_on(engine.get_sku("B")).unwrap(),
        );
        (
            a.available,
            a.reserved,
            a.sold,
            b.available,
            b.reserved,
            b.sold,
        ) == (9, 0, 1, 8, 0, 2)
    }));
    assert_eq!(engine.pending_without_actor(), 0);
    block_on(engine.shutdown()).unwrap();
    drop(engine);
    let report = verify_dir(dir.path());
    assert!(report.violations.is_empty(), "{:?}", report.violations);
}

#[test]
fn idle_skus_passivate_and_come_back_with_their_counters_under_concurrent_use() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), Durability::Sync);
    cfg.sku_idle_timeout = Duration::from_millis(30);
    let engine = Engine::open(cfg).unwrap();
    let live = |e: &Engine| e.metrics().live_skus.get();
    block_on(engine.upsert_sku(sku("A", 10, 100), None)).unwrap();
    block_on(engine.upsert_sku(sku("B", 10, 100), None)).unwrap();
    assert!(eventually(|| live(&engine) == 0), "idle SKUs passivate");
    // Reads, admin changes and orders activate them again, with their counters.
    assert_eq!(block_on(engine.get_sku("A")).unwrap().available, 10);
    assert_eq!(
        block_on(engine.adjust_stock("B", 5, "delivery", None))
            .unwrap()
            .available,
        15
    );
    let held = block_on(engine.place_order(order("h", &[("A", 2)]), None)).unwrap();
    assert!(
        eventually(|| live(&engine) == 1),
        "B passivates, A holds stock and stays"
    );
    // Rounds of concurrent orders racing with passivation: none lost, none doubled.
    for round in 0..20 {
        let ids: Vec<String> = block_on(futures::future::join_all((0..8).map(|i| {
            let e = engine.clone();
            async move {
                e.place_order(order(&format!("c{round}-{i}"), &[("B", 1)]), None)
                    .await
                    .unwrap()
                    .id
            }
        })));
        assert_eq!(block_on(engine.get_sku("B")).unwrap().reserved, 8);
        for id in &ids {
            block_on(engine.cancel(id, "round over", None)).unwrap();
        }
        std::thread::sleep(Duration::from_millis(10 + (round % 5) * 10));
    }
    let b = block_on(engine.get_sku("B")).unwrap();
    assert_eq!((b.available, b.reserved, b.sold), (15, 0, 0));
    let a = block_on(engine.get_sku("A")).unwrap();
    assert_eq!((a.available, a.reserved), (8, 2));
    assert_eq!(
        block_on(engine.get_order(&held.id)).unwrap().status,
        Status::Pending
    );
    block_on(engine.shutdown()).unwrap();
    drop(engine);
    let report = verify_dir(dir.path());
    assert!(report.violations.is_empty(), "{:?}", report.violations);
}

// ---------------------------------------------------------------------------------------
// One command, one atomic durable step (regressions).

/// A cancel racing a payment on the last unit: the actor that cancelled leaves memory only
/// once its `OrderCancelled` is durable, so the payment, queued behind it, meets the
/// cancelled order and is refunded — never a second sale of the unit. The journal is held
/// so the "not yet durable" window is wide open. (Before the fix: the actor stopped at
/// once, the payment activated a new actor from the stale log, and the order was both
/// CANCELLED and CONFIRMED while the unit went back on sale.)
#[test]
fn a_payment_racing_a_cancel_never_sells_the_unit_twice() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), Durability::Sync)).unwrap();
    block_on(engine.upsert_sku(sku("LAST", 1, 500), None)).unwrap();
    let a = block_on(engine.place_order(order("ann", &[("LAST", 1)]), None)).unwrap();

    let hold = engine.journal().hold_writes_for_test();
    let cancelled_before = engine.metrics().orders_cancelled.get();
    let e1 = engine.clone();
    let id = a.id.clone();
    let cancel = std::thread::spawn(move || block_on(e1.cancel(&id, "changed mind", None)));
    // The cancel is decided (in memory, not durable: the journal is held).
    assert!(eventually(
        || engine.metrics().orders_cancelled.get() > cancelled_before
    ));
    let e2 = engine.clone();
    let id = a.id.clone();
    let total = a.total_minor;
    let pay = std::thread::spawn(move || {
        block_on(e2.pay(&id, "psp-1", PaymentOutcome::Succeeded, total, None))
    });
    // Give the payment every chance to overtake the cancel's durability.
    std::thread::sleep(Duration::from_millis(200));
    drop(hold);

    let cancelled = cancel.join().unwrap().unwrap();
    assert_eq!(cancelled.status, Status::Cancelled);
    match pay.join().unwrap() {
        Err(EngineError::NotPayable { order }) => {
            assert_eq!(order.status, Status::Cancelled);
            assert_eq!(order.refunds_requested, vec!["psp-1".to_string()]);
        }
        other => panic!("a payment after the cancel must be refused and refunded: {other:?}"),
    }
    // The unit is back; a second buyer gets it, and it is sold once.
    let b = block_on(engine.place_order(order("bob", &[("LAST", 1)]), None)).unwrap();
    let b = block_on(engine.pay(
        &b.id,
        "psp-2",
        PaymentOutcome::Succeeded,
        b.total_minor,
        None,
    ))
    .unwrap();
    assert_eq!(b.status, Status::Confirmed);
    let s = block_on(engine.get_sku("LAST")).unwrap();
    assert_eq!((s.available, s.reserved, s.sold), (0, 0, 1));
    let events = engine
        .read_events(0, 100, Some(&format!("order/{}", a.id)))
        .unwrap();
    let types: Vec<_> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "OrderCreated",
            "OrderPending",
            "OrderCancelled",
            "RefundRequested"
        ]
    );
    block_on(engine.shutdown()).unwrap();
    drop(engine);
    let report = verify_dir(dir.path());
    assert!(report.violations.is_empty(), "{:?}", report.violations);
}

/// Two cancels racing while the first is not yet durable: one is answered CANCELLED, the
/// other 409 invalid_transition (before the fix: a 500 from a version conflict).
#[test]
fn two_racing_cancels_give_one_cancellation_and_one_invalid_transition() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), Durability::Sync)).unwrap();
    block_on(engine.upsert_sku(sku("PAIR", 2, 100), None)).unwrap();
    let a = block_on(engine.place_order(order("ann", &[("PAIR", 1)]), None)).unwrap();
    let hold = engine.journal().hold_writes_for_test();
    let threads: Vec<_> = (0..2)
        .map(|i| {
            let e = engine.clone();
            let id = a.id.clone();
            std::thread::spawn(move || block_on(e.cancel(&id, &format!("r{i}"), None)))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    drop(hold);
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let refused = results
        .iter()
        .filter(|r| {
            matches!(
                r,
                Err(EngineError::Domain(DomainError::InvalidTransition { .. }))
            )
        })
        .count();
    assert_eq!((ok, refused), (1, 1), "{results:?}");
    assert!(engine.is_healthy());
    block_on(engine.shutdown()).unwrap();
    drop(engine);
    assert!(verify_dir(dir.path()).violations.is_empty());
}

/// SPEC §1 Payments: a success reusing a failed payment's ref is a new attempt, not a
/// replay; the order is cancelled, so it is refused and refunded (before the fix: 200
/// CANCELLED and the money kept).
#[test]
fn a_success_reusing_a_failed_payments_ref_is_refunded() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), Durability::Sync)).unwrap();
    block_on(engine.upsert_sku(sku("REF", 3, 250), None)).unwrap();
    let o = block_on(engine.place_order(order("ann", &[("REF", 2)]), None)).unwrap();
    let failed =
        block_on(engine.pay(&o.id, "P", PaymentOutcome::Failed, o.total_minor, None)).unwrap();
    assert_eq!(failed.status, Status::Cancelled);
    // The same failed payment again is a replay: the order as it is, nothing recorded.
    let again =
        block_on(engine.pay(&o.id, "P", PaymentOutcome::Failed, o.total_minor, None)).unwrap();
    assert_eq!(
        (again.status, again.version),
        (Status::Cancelled, failed.version)
    );
    match block_on(engine.pay(&o.id, "P", PaymentOutcome::Succeeded, o.total_minor, None)) {
        Err(EngineError::NotPayable { order }) => {
            assert_eq!(order.refunds_requested, vec!["P".to_string()])
        }
        other => panic!("expected a refused, refunded payment: {other:?}"),
    }
    // Its replay is refused again and refunds nothing twice.
    assert!(matches!(
        block_on(engine.pay(&o.id, "P", PaymentOutcome::Succeeded, o.total_minor, None)),
        Err(EngineError::NotPayable { .. })
    ));
    let types: Vec<String> = engine
        .read_events(0, 100, Some(&format!("order/{}", o.id)))
        .unwrap()
        .into_iter()
        .map(|e| e.event_type)
        .collect();
    assert_eq!(
        types,
        [
            "OrderCreated",
            "OrderPending",
            "PaymentFailed",
            "OrderCancelled",
            "RefundRequested"
        ]
    );
    let s = block_on(engine.get_sku("REF")).unwrap();
    assert_eq!((s.available, s.reserved, s.sold), (3, 0, 0));
    block_on(engine.shutdown()).unwrap();
    drop(engine);
    assert!(verify_dir(dir.path()).violations.is_empty());
}

/// The per-SKU queue bound holds: with the SKU's actor held (a failure point) and its
/// queue full, further orders for it are refused at once with `Overloaded`, orders for
/// another SKU go through, and the queued ones complete once it is released.
#[test]
fn a_full_sku_queue_refuses_new_orders_for_that_sku_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), Durability::Sync);
    cfg.sku_mailbox = 8;
    let engine = Engine::open(cfg).unwrap();
    block_on(engine.upsert_sku(sku("HOT", 100, 10), None)).unwrap();
    block_on(engine.upsert_sku(sku("COLD", 100, 10), None)).unwrap();
    let release = block_on(engine.hold_sku_for_test("HOT")).unwrap();
    let queued: Vec<_> = (0..8)
        .map(|i| {
            let e = engine.clone();
            std::thread::spawn(move || {
                block_on(e.place_order(order(&format!("q{i}"), &[("HOT", 1)]), None))
            })
        })
        .collect();
    assert!(eventually(|| engine.sku_queue_for_test("HOT") == 8));
    for i in 0..5 {
        match block_on(engine.place_order(order(&format!("x{i}"), &[("HOT", 1)]), None)) {
            Err(EngineError::Overloaded { sku }) => assert_eq!(sku, "HOT"),
            other => panic!("a full queue must refuse at once: {other:?}"),
        }
    }
    let cold = block_on(engine.place_order(order("c", &[("COLD", 1)]), None)).unwrap();
    assert_eq!(cold.status, Status::Pending);
    drop(release);
    for t in queued {
        assert_eq!(t.join().unwrap().unwrap().status, Status::Pending);
    }
    assert!(engine.metrics().overloaded.get() >= 5);
    let s = block_on(engine.get_sku("HOT")).unwrap();
    assert_eq!((s.available, s.reserved), (92, 8));
    block_on(engine.shutdown()).unwrap();
}

fn idem(key: &str) -> ordo_engine::Idempotency {
    ordo_engine::Idempotency {
        key: key.into(),
        fingerprint: b"fp".to_vec(),
        ttl: Duration::from_secs(3600),
        render: ordo_engine::render(|o: ordo_engine::Outcome<'_>| {
            Some(format!("{o:?}").into_bytes())
        }),
    }
}

/// A keyed command's events and its answer are one append: the key is stamped on the
/// first event, the answer is stored, and a refusal stores its answer too (nothing else).
/// `ordo verify` sees a key applied twice.
#[test]
fn a_keyed_command_stores_its_answer_with_its_events_and_verify_sees_a_key_applied_twice() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), Durability::Sync)).unwrap();
    block_on(engine.upsert_sku(sku("K", 5, 100), None)).unwrap();
    let v = block_on(engine.adjust_stock_with("K", 3, "delivery", None, Some(idem("s\nadj-1"))))
        .unwrap();
    assert_eq!(v.available, 8);
    let rec = engine.idempotency_record("s\nadj-1").unwrap().unwrap();
    assert!(String::from_utf8_lossy(&rec.response).contains("available: 8"));
    let events = engine.read_events(0, 100, Some("sku/K")).unwrap();
    let last = events.last().unwrap();
    assert_eq!(
        (last.event_type.as_str(), last.idempotency_key.as_deref()),
        ("StockAdjusted", Some("s\nadj-1"))
    );
    // A refusal keeps its answer and changes nothing.
    let e = block_on(engine.adjust_stock_with("K", -100, "shrink", None, Some(idem("s\nadj-2"))))
        .unwrap_err();
    assert!(matches!(
        e,
        EngineError::Domain(DomainError::InsufficientStock { .. })
    ));
    let rec = engine.idempotency_record("s\nadj-2").unwrap().unwrap();
    assert!(String::from_utf8_lossy(&rec.response).contains("InsufficientStock"));
    assert_eq!(
        engine.read_events(0, 100, Some("sku/K")).unwrap().len(),
        events.len()
    );
    // An unknown order is refused before any actor: stored all the same.
    let e = block_on(engine.cancel_with(
        &ordo_engine::Engine::new_order_id(),
        "x",
        None,
        Some(idem("s\ncancel-1")),
    ))
    .unwrap_err();
    assert!(matches!(e, EngineError::OrderNotFound { .. }));
    assert!(engine.idempotency_record("s\ncancel-1").unwrap().is_some());
    block_on(engine.shutdown()).unwrap();
    drop(engine);
    assert!(verify_dir(dir.path()).violations.is_empty());

    // The same key applied again while its answer is kept: verify says so.
    let engine = Engine::open(config(dir.path(), Durability::Sync)).unwrap();
    block_on(engine.adjust_stock_with("K", 1, "again", None, Some(idem("s\nadj-1")))).unwrap();
    block_on(engine.shutdown()).unwrap();
    drop(engine);
    let report = verify_dir(dir.path());
    assert!(
        report
            .violations
            .iter()
            .any(|v| v.contains("applied again")),
        "{:?}",
        report.violations
    );
}

/// `ordo verify` catches money kept silently: a payment that succeeded on an order that
/// was then cancelled with no refund recorded (written behind the engine's back).
#[test]
fn verify_reports_a_succeeded_payment_neither_kept_nor_refunded() {
    use ordo_engine::domain::events as ev;
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), Durability::Sync)).unwrap();
    block_on(engine.upsert_sku(sku("M", 2, 100), None)).unwrap();
    let o = block_on(engine.place_order(order("ann", &[("M", 1)]), None)).unwrap();
    block_on(engine.shutdown()).unwrap();
    drop(engine);

    let store = Store::open(
        dir.path(),
        StoreOptions {
            durability: Durability::Sync,
        },
    )
    .unwrap();
    let journal = ordo_storage::Journal::start(store.clone()).unwrap();
    let stream: std::sync::Arc<str> = std::sync::Arc::from(format!("order/{}", o.id));
    let events = [
        ev::OrderEvent::PaymentSucceeded(ev::PaymentSucceeded {
            payment_ref: "kept".into(),
            amount_minor: o.total_minor,
        }),
        ev::OrderEvent::OrderCancelled(ev::OrderCancelled {
            reason: "sneaky".into(),
            from: Status::Pending,
        }),
    ];
    let new: Vec<_> = events
        .iter()
        .zip(o.version + 1..)
        .map(|(e, version)| ordo_storage::NewEvent {
            stream: stream.clone(),
            version,
            event_type: e.type_name(),
            schema: e.schema(),
            at_ms: 1,
            trace_id: None,
            payload: e.encode_payload(),
        })
        .collect();
    journal
        .append(ordo_storage::Append::events(new))
        .wait()
        .unwrap();
    journal.close();
    let report = ordo_engine::verify(&store).unwrap();
    assert!(
        report.violations.iter().any(|v| v.contains("payment kept")
            && v.contains("neither paid a confirmed order nor was refunded")),
        "{:?}",
        report.violations
    );
}

/// Payments, cancels and shipments racing on one order, in every pairing, end as if
/// applied one at a time: each answer is one the order could give in some serial order,
/// a payment that lost to a cancel is refunded, and the log verifies.
#[test]
fn racing_payments_cancels_and_shipments_end_as_if_applied_one_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), Durability::Sync);
    cfg.order_idle_timeout = Duration::from_millis(1);
    let engine = Engine::open(cfg).unwrap();
    block_on(engine.upsert_sku(sku("RACE", 1_000, 100), None)).unwrap();
    let race =
        |a: Box<dyn FnOnce() -> Result<ordo_engine::OrderView, EngineError> + Send>,
         b: Box<dyn FnOnce() -> Result<ordo_engine::OrderView, EngineError> + Send>| {
            let ta = std::thread::spawn(a);
            let tb = std::thread::spawn(b);
            (ta.join().unwrap(), tb.join().unwrap())
        };
    for i in 0..25 {
        // Pay vs cancel on a PENDING order.
        let o =
            block_on(engine.place_order(order(&format!("c{i}"), &[("RACE", 1)]), None)).unwrap();
        let (e1, e2, id1, id2, t) = (
            engine.clone(),
            engine.clone(),
            o.id.clone(),
            o.id.clone(),
            o.total_minor,
        );
        let (pay, cancel) = race(
            Box::new(move || {
                block_on(e1.pay(&id1, &format!("p{i}"), PaymentOutcome::Succeeded, t, None))
            }),
            Box::new(move || block_on(e2.cancel(&id2, "race", None))),
        );
        assert_eq!(cancel.unwrap().status, Status::Cancelled);
        let end = block_on(engine.get_order(&o.id)).unwrap();
        assert_eq!(end.status, Status::Cancelled);
        match pay {
            Ok(v) => assert_eq!(
                v.status,
                Status::Confirmed,
                "pay won, then the cancel refunded it"
            ),
            Err(EngineError::NotPayable { .. }) => {}
            Err(e) => panic!("pay vs cancel: {e}"),
        }
        assert_eq!(
            end.refunds_requested,
            vec![format!("p{i}")],
            "paid money is refunded either way"
        );

        // Two payments under different refs.
        let o =
            block_on(engine.place_order(order(&format!("d{i}"), &[("RACE", 1)]), None)).unwrap();
        let (e1, e2, id1, id2, t) = (
            engine.clone(),
            engine.clone(),
            o.id.clone(),
            o.id.clone(),
            o.total_minor,
        );
        let (a, b) = race(
            Box::new(move || block_on(e1.pay(&id1, "a", PaymentOutcome::Succeeded, t, None))),
            Box::new(move || block_on(e2.pay(&id2, "b", PaymentOutcome::Succeeded, t, None))),
        );
        let confirmed = [&a, &b]
            .iter()
            .filter(|r| matches!(r, Ok(v) if v.status == Status::Confirmed))
            .count();
        let refused = [&a, &b]
            .iter()
            .filter(|r| matches!(r, Err(EngineError::NotPayable { .. })))
            .count();
        assert_eq!((confirmed, refused), (1, 1), "{a:?} {b:?}");
        let end = block_on(engine.get_order(&o.id)).unwrap();
        assert_eq!(
            end.refunds_requested.len(),
            1,
            "the losing payment is refunded"
        );

        // Cancel vs shipment on a CONFIRMED order.
        let e1 = engine.clone();
        let id = o.id.clone();
        let (e2, id2) = (engine.clone(), o.id.clone());
        let (cancel, ship) = race(
            Box::new(move || block_on(e1.cancel(&id, "race", None))),
            Box::new(move || block_on(e2.ship(&id2, ShipmentStep::Prepared, None))),
        );
        let wins = [cancel.is_ok(), ship.is_ok()];
        assert_eq!(
            wins.iter().filter(|w| **w).count(),
            1,
            "{cancel:?} {ship:?}"
        );
        for r in [&cancel, &ship] {
            if let Err(e) = r {
                assert!(
                    matches!(
                        e,
                        EngineError::Domain(DomainError::InvalidTransition { .. })
                    ),
                    "{e}"
                );
            }
        }
    }
    assert!(engine.is_healthy());
    let s = block_on(engine.get_sku("RACE")).unwrap();
    assert_eq!(s.available + s.reserved + s.sold, 1_000);
    block_on(engine.shutdown()).unwrap();
    drop(engine);
    let report = verify_dir(dir.path());
    assert!(report.violations.is_empty(), "{:?}", report.violations);
}

/// The SKU queue count comes back to zero whatever happens to a message: a checkpoint's
/// snapshot request, requests whose caller went away before the actor took them up.
/// (Before the fix a checkpoint wrapped the count below zero and the SKU refused every
/// order from then on; dropped requests leaked it upwards.)
#[test]
fn the_sku_queue_count_survives_checkpoints_and_callers_that_hang_up() {
    use futures::FutureExt;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), Durability::Sync);
    cfg.checkpoint_every = 1;
    let engine = Engine::open(cfg).unwrap();
    block_on(engine.upsert_sku(sku("Q", 100, 10), None)).unwrap();
    block_on(engine.place_order(order("a", &[("Q", 1)]), None)).unwrap();
    assert!(eventually(|| engine.metrics().checkpoints.get() > 0));
    assert_eq!(engine.sku_queue_for_test("Q"), 0);
    let release = block_on(engine.hold_sku_for_test("Q")).unwrap();
    for _ in 0..5 {
        // A read whose client hung up: queued (polled once), then dropped.
        assert!(engine.get_sku("Q").now_or_never().is_none());
    }
    drop(release);
    assert!(eventually(|| engine.sku_queue_for_test("Q") == 0));
    let o = block_on(engine.place_order(order("b", &[("Q", 1)]), None)).unwrap();
    assert_eq!(o.status, Status::Pending);
    block_on(engine.shutdown()).unwrap();
}

/// A second success under the paying ref (another amount: a new attempt, refused and
/// refunded) does not swallow the refund of the order's own payment when it is
/// cancelled afterwards.
#[test]
fn a_late_refund_under_the_paying_ref_does_not_swallow_the_cancellation_refund() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), Durability::Sync)).unwrap();
    block_on(engine.upsert_sku(sku("R", 10, 1000), None)).unwrap();
    let o = block_on(engine.place_order(order("a", &[("R", 1)]), None)).unwrap();
    let paid =
        block_on(engine.pay(&o.id, "A", PaymentOutcome::Succeeded, o.total_minor, None)).unwrap();
    assert_eq!(paid.status, Status::Confirmed);
    assert!(matches!(
        block_on(engine.pay(&o.id, "A", PaymentOutcome::Succeeded, 1, None)),
        Err(EngineError::NotPayable { .. })
    ));
    let c = block_on(engine.cancel(&o.id, "customer", None)).unwrap();
    assert_eq!(c.status, Status::Cancelled);
    let refunds: Vec<(String, String)> = engine
        .read_events(0, 100, Some(&format!("order/{}", o.id)))
        .unwrap()
        .into_iter()
        .filter(|e| e.event_type == "RefundRequested")
        .map(|e| {
            let ev = ordo_engine::domain::events::decode_order(&e.event_type, e.schema, &e.payload)
                .unwrap();
            match ev {
                ordo_engine::domain::OrderEvent::RefundRequested(r) => {
                    (format!("{}:{}", r.payment_ref, r.amount_minor), r.reason)
                }
                other => panic!("{other:?}"),
            }
        })
        .collect();
    assert_eq!(
        refunds,
        [
            ("A:1".to_string(), "order_not_payable".to_string()),
            ("A:1000".to_string(), "cancelled".to_string())
        ]
    );
    let s = block_on(engine.get_sku("R")).unwrap();
    assert_eq!((s.available, s.sold), (10, 0));
    block_on(engine.shutdown()).unwrap();
    drop(engine);
    let report = verify_dir(dir.path());
    assert!(report.violations.is_empty(), "{:?}", report.violations);
}

/// Two placements racing under one caller-chosen id: one is placed, the other refused as
/// taken, and the engine keeps running (before the fix the loser's append was a version
/// conflict, which stops the journal).
#[test]
fn racing_placements_under_one_chosen_id_place_one_order_and_keep_the_engine_up() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), Durability::Sync)).unwrap();
    block_on(engine.upsert_sku(sku("ID", 1000, 10), None)).unwrap();
    for _ in 0..20 {
        let id = Engine::new_order_id();
        let threads: Vec<_> = (0..2)
            .map(|i| {
                let (e, id) = (engine.clone(), id.clone());
                std::thread::spawn(move || {
                    block_on(e.place_order_as(id, order(&format!("c{i}"), &[("ID", 1)]), None))
                })
            })
            .collect();
        let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            1,
            "{results:?}"
        );
        assert!(engine.is_healthy(), "{:?}", engine.stopped_reason());
    }
    let s = block_on(engine.get_sku("ID")).unwrap();
    assert_eq!((s.available, s.reserved), (980, 20));
    block_on(engine.shutdown()).unwrap();
}
