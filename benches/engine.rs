//! Embedded engine throughput: orders placed per second through the embedded API, one hot
//! SKU and 10,000 SKUs, `sync` and `memory`, 1-line and 3-line orders, 512 orders in
//! flight. `cargo bench --bench engine` (results: benches/RESULTS.md)

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures::executor::block_on;
use futures::future::join_all;
use ordo::{Durability, Engine, EngineConfig, LineRequest, PlaceOrder, UpsertSku};

const IN_FLIGHT: usize = 512;

fn setup(mode: Durability, skus: usize, dir: &std::path::Path) -> Engine {
    let engine = Engine::open(EngineConfig {
        data_dir: dir.to_path_buf(),
        durability: mode,
        ..Default::default()
    })
    .expect("open");
    block_on(async {
        for i in 0..skus {
            engine
                .upsert_sku(
                    UpsertSku {
                        sku: format!("S{i}"),
                        name: "bench".into(),
                        price_minor: 100,
                        currency: "EUR".into(),
                        per_customer_limit: None,
                        stock: 1 << 40,
                    },
                    None,
                )
                .await
                .expect("sku");
        }
    });
    engine
}

fn place(c: &mut Criterion) {
    let mut group = c.benchmark_group("engine_place_order");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(1));
    for mode in [Durability::Sync, Durability::Memory] {
        for (skus, lines) in [(1usize, 1usize), (10_000, 1), (10_000, 3)] {
            let dir = tempfile::tempdir().expect("tempdir");
            let engine = setup(mode, skus, &dir.path().join("db"));
            let mut n = 0u64;
            let id = format!("{mode}/{}sku/{lines}line", skus);
            group.bench_with_input(BenchmarkId::from_parameter(id), &(), |b, _| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    let mut left = iters;
                    while left > 0 {
                        let k = left.min(IN_FLIGHT as u64);
                        let batch = (0..k).map(|_| {
                            n += 1;
                            let ls = (0..lines)
                                .map(|j| LineRequest {
                                    sku: format!("S{}", (n as usize * 7 + j * 13) % skus),
                                    qty: 1,
                                })
                                .collect();
                            engine.place_order(
                                PlaceOrder {
                                    customer_id: format!("c{n}"),
                                    lines: ls,
                                },
                                None,
                            )
                        });
                        for r in block_on(join_all(batch)) {
                            r.expect("placed");
                        }
                        left -= k;
                    }
                    start.elapsed()
                })
            });
            block_on(engine.shutdown()).expect("shutdown");
        }
    }
    group.finish();
}

criterion_group!(benches, place);
criterion_main!(benches);
