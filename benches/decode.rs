//! The ingest path without HTTP: `ingest::decode` alone, and decode + fold + apply to the
//! memory store (the one-core ceiling the server's W1 load test is measured against).
//! Inputs come from `sensor_stats::workload::batch` (deterministic).

#![allow(missing_docs)] // criterion_group! generates undocumented public functions

use std::hint::black_box;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sensor_stats::{
    ingest::{PADDING, decode},
    store::MemoryStore,
    workload,
};

/// A copy of `body` with room for the parser's padding, as the server reads bodies.
fn padded(body: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(body.len() + PADDING);
    buf.extend_from_slice(body);
    buf
}

const CASES: [(&str, usize, usize); 3] = [
    ("small_10", 10, 10),
    ("w1_1000x100", 1000, 100),
    ("large_100k", 100_000, 100),
];

fn bench_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("ingest");
    for (name, measurements, sensors) in CASES {
        let body = workload::batch(measurements, sensors, 1).into_bytes();
        group.throughput(Throughput::Elements(measurements as u64));
        if measurements >= 100_000 {
            group.sample_size(20);
        }
        group.bench_with_input(BenchmarkId::new("decode", name), &body, |b, body| {
            b.iter_batched_ref(
                || padded(body),
                |buf| black_box(decode(buf).unwrap().measurements()),
                BatchSize::LargeInput,
            )
        });
        let store = MemoryStore::default();
        group.bench_with_input(BenchmarkId::new("decode_fold_apply", name), &body, |b, body| {
            b.iter_batched_ref(
                || padded(body),
                |buf| {
                    let batch = decode(buf).unwrap();
                    store.record_batch(&batch);
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench_decode);
criterion_main!(benches);
