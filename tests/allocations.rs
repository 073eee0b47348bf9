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

/// The store's own heap per sensor, counted exactly (live bytes, so the map's old tables
/// freed while it grows do not count; the load test's MEM row shows RSS, allocator
/// included).
#[test]
fn a_million_sensors_with_16_byte_ids_take_at_most_128_heap_bytes_each() {
    const SENSORS: usize = 1_000_000;
    let ids: Vec<String> = (0..SENSORS).map(workload::sensor_id).collect();
    let at = sensor_stats::domain::Timestamp::parse("2021-11-08T21:38:09Z").unwrap();
    let store = MemoryStore::default();
    let info = allocation_counter::measure(|| {
        for chunk in ids.chunks(10_000) {
            let mut batch = sensor_stats::domain::Batch::with_capacity(chunk.len());
            for id in chunk {
                batch.push(sensor_stats::domain::SensorId::parse(id).unwrap(), 1.5, at);
            }
            store.record_batch(&batch);
        }
    });
    assert_eq!(store.len(), SENSORS);
    let per_sensor = info.bytes_current as f64 / SENSORS as f64;
    eprintln!("heap held by the store: {per_sensor:.1} bytes per sensor");
    assert!(per_sensor <= 128.0, "{per_sensor:.1} bytes per sensor");
}
