//! A fixed amount of ingest work for instruction-count profiles: decode + fold + apply of
//! the W1 body (1000 measurements over 100 sensors) `N` times. Under
//! `valgrind --tool=callgrind` the count is the same on every run, whatever else the
//! machine does, so it compares versions where timings on a shared machine are noisy:
//!
//!     cargo build --release --example ingest_profile
//!     valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!         target/release/examples/ingest_profile 2>&1 | grep refs

#![allow(missing_docs)]

use sensor_stats::{
    ingest::{PADDING, decode},
    store::MemoryStore,
    workload,
};

const N: usize = 200;

fn main() {
    let body = workload::batch(1000, 100, 1).into_bytes();
    let store = MemoryStore::default();
    for _ in 0..N {
        let mut buf = Vec::with_capacity(body.len() + PADDING);
        buf.extend_from_slice(&body);
        let batch = decode(&mut buf).expect("valid W1 body");
        store.record_batch(&batch);
    }
    assert_eq!(store.len(), 100);
}
