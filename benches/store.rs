//! `MemoryStore::record_batch` on folded batches: one hot sensor (every update hits the
//! same cell) against 100k sensors (every update a different cell), from one thread and
//! from two at once.

#![allow(missing_docs)] // criterion_group! generates undocumented public functions

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sensor_stats::{
    domain::{Batch, SensorId, Timestamp},
    store::MemoryStore,
    workload,
};

/// Deltas per batch in the spread case.
const SPREAD: usize = 100;
const SENSORS: usize = 100_000;

fn batches<'a>(ids: &'a [String], per_batch: usize, at: Timestamp) -> Vec<Batch<'a>> {
    ids.chunks(per_batch)
        .map(|chunk| {
            let mut b = Batch::default();
            for id in chunk {
                b.push(SensorId::parse(id).unwrap(), 1.5, at);
            }
            b
        })
        .collect()
}

/// Applies `batches` round-robin `iters` times from `threads` threads; returns wall time.
fn run(store: &MemoryStore, batches: &[Batch<'_>], iters: u64, threads: usize) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                for i in 0..iters / threads as u64 {
                    let batch = &batches[(i as usize + t * 7) % batches.len()];
                    store.record_batch(black_box(batch));
                }
            });
        }
    });
    start.elapsed()
}

fn bench_store(c: &mut Criterion) {
    let at = Timestamp::parse("2021-11-08T21:38:09Z").unwrap();
    let hot_id = vec![workload::sensor_id(0)];
    let hot = batches(&hot_id, 1, at);
    let ids: Vec<String> = (0..SENSORS).map(workload::sensor_id).collect();
    let spread = batches(&ids, SPREAD, at);

    let mut group = c.benchmark_group("store_apply");
    for threads in [1, 2] {
        let store = MemoryStore::default();
        group.throughput(Throughput::Elements(1));
        group.bench_function(
            BenchmarkId::new("hot_sensor", format!("{threads}_threads")),
            |b| b.iter_custom(|iters| run(&store, &hot, iters, threads)),
        );
        let store = MemoryStore::default();
        run(&store, &spread, spread.len() as u64, 1); // every sensor exists: steady state
        group.throughput(Throughput::Elements(SPREAD as u64));
        group.bench_function(
            BenchmarkId::new("100k_sensors", format!("{threads}_threads")),
            |b| b.iter_custom(|iters| run(&store, &spread, iters, threads)),
        );
    }
    group.finish();
}

criterion_group!(benches, bench_store);
criterion_main!(benches);
