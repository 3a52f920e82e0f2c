//! Journal benchmarks: append throughput with 1, 64 and 512 concurrent submitters in each
//! durability mode, and full-log replay rate. Besides criterion's time per event, each
//! configuration prints events per batch (= per fsync in `sync` mode) and append latency
//! percentiles.
//!
//! `cargo bench --bench journal` (results: benches/RESULTS.md)

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hdrhistogram::Histogram;
use ordo_storage::{Append, Durability, Journal, NewEvent, Store, StoreOptions};

fn event(stream: &Arc<str>, version: u64) -> NewEvent {
    NewEvent {
        stream: stream.clone(),
        version,
        event_type: "StockReserved",
        schema: 1,
        at_ms: 1_700_000_000_000,
        trace_id: None,
        // About the size of a real StockReserved payload (order id, customer, qty).
        payload: vec![7u8; 48],
    }
}

/// Appends `total` events from `submitters` concurrent tasks (each on its own stream);
/// returns the elapsed time and records each append's latency.
fn run(
    j: &Journal,
    rt: &tokio::runtime::Runtime,
    submitters: usize,
    total: u64,
    versions: &mut [u64],
    hist: &mut Histogram<u64>,
    round: u64,
) -> Duration {
    let per = total.div_ceil(submitters as u64);
    let start = Instant::now();
    let lat = rt.block_on(async {
        let mut tasks = Vec::with_capacity(submitters);
        for (i, v0) in versions.iter().enumerate() {
            let j = j.clone();
            let stream: Arc<str> = Arc::from(format!("order/bench-{round}-{i}"));
            let v0 = *v0;
            tasks.push(tokio::spawn(async move {
                let mut lats = Vec::with_capacity(per as usize);
                for k in 1..=per {
                    let t = Instant::now();
                    j.append(Append::events(vec![event(&stream, v0 + k)]))
                        .await
                        .expect("append");
                    lats.push(t.elapsed().as_micros() as u64);
                }
                lats
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.expect("task"));
        }
        all
    });
    let elapsed = start.elapsed();
    for l in lat {
        let _ = hist.record(l.max(1));
    }
    for v in versions.iter_mut() {
        *v += per;
    }
    elapsed
}

fn appends(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("journal_append");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(4));
    for mode in [Durability::Sync, Durability::Buffered, Durability::Memory] {
        for submitters in [1usize, 64, 512] {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = Store::open(
                dir.path().join("db"),
                StoreOptions {
                    durability: mode,
                    ..StoreOptions::default()
                },
            )
            .expect("open");
            let j = Journal::start(store).expect("journal");
            let mut hist = Histogram::<u64>::new(3).expect("hist");
            let mut round = 0u64;
            group.throughput(Throughput::Elements(1));
            group.bench_with_input(
                BenchmarkId::new(mode.to_string(), submitters),
                &submitters,
                |b, &n| {
                    b.iter_custom(|iters| {
                        round += 1;
                        let mut versions = vec![0u64; n];
                        let total = iters.max(n as u64);
                        let d = run(&j, &rt, n, total, &mut versions, &mut hist, round);
                        // Report per requested iteration.
                        d.mul_f64(iters as f64 / (total.div_ceil(n as u64) * n as u64) as f64)
                    })
                },
            );
            let m = j.metrics();
            let (batches, events) = (m.batch_events.get_sample_count(), m.events.get());
            eprintln!(
                "journal_append/{mode}/{submitters}: {events} events in {batches} batches = {:.1} events/batch; append latency p50 {} us, p99 {} us, max {} us",
                events as f64 / batches.max(1) as f64,
                hist.value_at_quantile(0.5),
                hist.value_at_quantile(0.99),
                hist.max()
            );
        }
    }
    group.finish();
}

fn replay(c: &mut Criterion) {
    const N: u64 = 1_000_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(
        dir.path(),
        StoreOptions {
            durability: Durability::Buffered,
            ..StoreOptions::default()
        },
    )
    .expect("open");
    let j = Journal::start(store.clone()).expect("journal");
    // 1M events over 10,000 streams, appended in batches of 1,000.
    let streams: Vec<Arc<str>> = (0..10_000)
        .map(|i| Arc::from(format!("sku/s{i}")))
        .collect();
    let mut versions = vec![0u64; streams.len()];
    let mut tickets = Vec::new();
    for chunk in 0..(N / 1_000) {
        let mut evs = Vec::with_capacity(1_000);
        for k in 0..1_000u64 {
            let i = ((chunk * 1_000 + k) % streams.len() as u64) as usize;
            versions[i] += 1;
            evs.push(event(&streams[i], versions[i]));
        }
        tickets.push(j.append(Append::events(evs)));
    }
    for t in tickets {
        t.wait().expect("append");
    }
    let mut group = c.benchmark_group("journal_replay");
    group.sample_size(10).throughput(Throughput::Elements(N));
    group.bench_function("scan_1M_events", |b| {
        b.iter(|| {
            let mut n = 0u64;
            store
                .scan_from(0, |v| {
                    n += v.payload.len() as u64 & 1;
                    Ok(true)
                })
                .expect("scan");
            n
        })
    });
    group.bench_function("read_1M_events_owned", |b| {
        b.iter(|| {
            store
                .read_from(0)
                .map(|r| r.expect("read").seq)
                .sum::<u64>()
        })
    });
    group.finish();
}

criterion_group!(benches, appends, replay);
criterion_main!(benches);
