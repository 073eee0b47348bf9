//! Proof that the ingest hot path does not allocate per measurement: decode + fold +
//! apply of batches of 10, 1 000 and 100 000 measurements over the same sensors make
//! about the same number of heap allocations.
//!
//! A separate test binary because counting needs its own global allocator
//! (`allocation-counter`, thread-local counts), which must not sit under the other tests.

#![allow(missing_docs)]

use sensor_stats::{ingest::decode, store::MemoryStore, workload};

fn allocations_for(measurements: usize, store: &MemoryStore) -> u64 {
    let mut body = workload::batch(measurements, 10, 3).into_bytes();
    allocation_counter::measure(|| {
        let batch = decode(&mut body).expect("valid batch");
        store.record_batch(&batch);
    })
    .count_total
}

#[test]
fn decode_fold_apply_allocations_do_not_grow_with_the_number_of_measurements() {
    let store = MemoryStore::default();
    allocations_for(10, &store); // the 10 sensors now exist: no inserts below

    let small = allocations_for(10, &store);
    let w1 = allocations_for(1_000, &store);
    let large = allocations_for(100_000, &store);
    eprintln!("allocations: 10 -> {small}, 1000 -> {w1}, 100000 -> {large}");

    // A per-measurement allocation would add at least 990 and 99 990 here. The slack
    // covers buffers that grow geometrically with the body (a handful of reallocations).
    assert!(w1 <= small + 4, "10 -> {small}, 1000 -> {w1}");
    assert!(large <= small + 8, "10 -> {small}, 100000 -> {large}");
}
