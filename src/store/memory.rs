//! `MemoryStore`: per-sensor statistics in a sharded `DashMap`, updated with atomics.
//!
//! Each sensor's cell holds two 128-bit atomics:
//!
//! - `totals`: the count (high 64 bits) and the bit pattern of the `f64` sum (low 64 bits),
//!   changed together by one compare-and-swap, so a reader can never see a count without
//!   its sum (no torn pair). 128-bit CAS is `cmpxchg16b` on x86_64 and `casp` on aarch64;
//!   `portable-atomic` detects it at run time and falls back to a lock elsewhere. A
//!   seqlock would also work, but would make readers retry under write load.
//! - `latest`: the greatest instant as an order-preserving key ([`Timestamp::to_key`]),
//!   kept by `fetch_max`, so arrival order does not matter.
//!
//! `latest` is raised before `totals`, so a reader that sees a count also sees an instant.
//! Map guards are held only for the few atomic instructions of one update and never
//! across an `.await` (this module has none), and no other map call is made while one is
//! held (a same-shard call would deadlock). A writer racing a `DELETE` lands wholly
//! before it (its cell is removed) or wholly after it (a fresh cell).
//!
//! With a sensor cap ([`MemoryStore::with_max_sensors`]) the store also counts its
//! sensors in an atomic (`DashMap::len` visits every shard), and a batch first reserves
//! room for the sensors it would add (see [`MemoryStore::try_record_batch`]). Without a
//! cap none of that runs.

use std::sync::atomic::AtomicUsize;

use dashmap::{DashMap, mapref::entry::Entry};
use portable_atomic::{AtomicU128, Ordering};

use crate::domain::{Batch, Delta, SensorId, Summary, Timestamp};

/// Statistics of every sensor, in this process.
#[derive(Debug, Default)]
pub struct MemoryStore {
    cells: DashMap<Box<str>, Cell, foldhash::fast::RandomState>,
    cap: Option<SensorCap>,
}

/// The sensor cap and the count it is checked against.
#[derive(Debug)]
struct SensorCap {
    max: usize,
    /// Sensors in the map plus room reserved by batches being applied.
    tracked: AtomicUsize,
}

impl SensorCap {
    /// Reserves room for `new` sensors, unless that would pass the cap.
    fn reserve(&self, new: usize) -> bool {
        let mut current = self.tracked.load(Ordering::Acquire);
        loop {
            if current.saturating_add(new) > self.max {
                return false;
            }
            match self.tracked.compare_exchange_weak(
                current,
                current + new,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(seen) => current = seen,
            }
        }
    }

    /// After applying: `reserved` slots were taken, `inserted` sensors were created.
    fn settle(&self, reserved: usize, inserted: usize) {
        if inserted > reserved {
            self.tracked.fetch_add(inserted - reserved, Ordering::AcqRel);
        } else if reserved > inserted {
            self.tracked.fetch_sub(reserved - inserted, Ordering::AcqRel);
        }
    }
}

#[derive(Debug, Default)]
struct Cell {
    totals: AtomicU128,
    latest: AtomicU128,
}

impl Cell {
    fn apply(&self, d: &Delta) {
        self.latest.fetch_max(d.latest.to_key(), Ordering::AcqRel);
        let mut current = self.totals.load(Ordering::Acquire);
        loop {
            let (count, sum) = unpack(current);
            let next = pack(count + d.count, sum + d.sum);
            match self
                .totals
                .compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return,
                Err(seen) => current = seen,
            }
        }
    }

    fn summary(&self) -> Summary {
        let (count, sum) = unpack(self.totals.load(Ordering::Acquire));
        let last_measurement = Timestamp::from_key(self.latest.load(Ordering::Acquire));
        Summary {
            last_measurement,
            count,
            sum,
        }
    }
}

fn pack(count: u64, sum: f64) -> u128 {
    (u128::from(count) << 64) | u128::from(sum.to_bits())
}

fn unpack(bits: u128) -> (u64, f64) {
    ((bits >> 64) as u64, f64::from_bits(bits as u64))
}

impl MemoryStore {
    /// An empty store that tracks at most `max` sensors (see [`MemoryStore::try_record_batch`]).
    pub fn with_max_sensors(max: usize) -> Self {
        Self {
            cells: DashMap::default(),
            cap: Some(SensorCap {
                max,
                tracked: AtomicUsize::new(0),
            }),
        }
    }

    /// Applies every delta of `batch`, whatever the sensor cap: one map lookup and one
    /// CAS per sensor.
    pub fn record_batch(&self, batch: &Batch<'_>) {
        let inserted = self.apply(batch);
        if let Some(cap) = &self.cap {
            cap.settle(0, inserted);
        }
    }

    /// Applies `batch` unless it would make the store track more sensors than its cap;
    /// then applies nothing and returns the cap. Sensors already tracked always fit.
    ///
    /// The batch's unknown sensors are counted first and room for them reserved in one
    /// compare-and-swap, so concurrent batches cannot pass the cap together. Two batches
    /// creating the same sensor at once both reserve a slot for it (the spare one is
    /// given back after), which may refuse a third near the cap; and a sensor deleted
    /// while a batch naming it is applied is created again without a reservation, the
    /// only way the count can pass the cap (by the number of such races).
    ///
    /// # Errors
    /// The cap, when the batch does not fit.
    pub fn try_record_batch(&self, batch: &Batch<'_>) -> Result<(), usize> {
        let Some(cap) = &self.cap else {
            self.apply(batch);
            return Ok(());
        };
        let new = batch
            .deltas()
            .filter(|(sensor, _)| !self.cells.contains_key(sensor.as_str()))
            .count();
        if !cap.reserve(new) {
            return Err(cap.max);
        }
        let inserted = self.apply(batch);
        cap.settle(new, inserted);
        Ok(())
    }

    /// Applies `batch`; how many sensors it created.
    fn apply(&self, batch: &Batch<'_>) -> usize {
        let mut inserted = 0;
        for (sensor, delta) in batch.deltas() {
            inserted += usize::from(self.record(sensor, delta));
        }
        inserted
    }

    /// Applies `delta` to `sensor`; whether that created the sensor.
    fn record(&self, sensor: SensorId<'_>, delta: &Delta) -> bool {
        if let Some(cell) = self.cells.get(sensor.as_str()) {
            cell.apply(delta);
            return false;
        }
        // Not there: take the shard's write lock; another writer may have inserted it
        // meanwhile, in which case the entry is occupied and that cell is used.
        match self.cells.entry(Box::from(sensor.as_str())) {
            Entry::Occupied(cell) => {
                cell.get().apply(delta);
                false
            }
            Entry::Vacant(slot) => {
                slot.insert(Cell::default()).apply(delta);
                true
            }
        }
    }

    /// The statistics of `sensor`, `None` when it is unknown.
    pub fn get(&self, sensor: SensorId<'_>) -> Option<Summary> {
        self.cells.get(sensor.as_str()).map(|cell| cell.summary())
    }

    /// Forgets `sensor`.
    pub fn delete(&self, sensor: SensorId<'_>) {
        if self.cells.remove(sensor.as_str()).is_some()
            && let Some(cap) = &self.cap
        {
            cap.tracked.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// How many sensors are tracked. Visits every shard; meant for scrapes, not hot paths.
    pub fn len(&self) -> usize {
        self.cells.len()
    }

    /// Whether no sensor is tracked.
    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, sync::Arc, thread};

    use proptest::prelude::*;

    use super::*;

    fn id(s: &str) -> SensorId<'_> {
        SensorId::parse(s).unwrap()
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_datetime(chrono::DateTime::from_timestamp(secs, 0).unwrap())
    }

    #[test]
    fn records_gets_and_deletes() {
        let store = MemoryStore::default();
        let mut batch = Batch::default();
        batch.push(id("a"), 1.0, at(20));
        batch.push(id("a"), 2.0, at(10));
        store.record_batch(&batch);

        let s = store.get(id("a")).unwrap();
        assert_eq!((s.count, s.sum, s.last_measurement), (2, 3.0, Some(at(20))));
        assert_eq!(store.get(id("b")), None);

        store.delete(id("a"));
        assert_eq!(store.get(id("a")), None);
        assert!(store.is_empty());

        let mut later = Batch::default();
        later.push(id("a"), 5.0, at(5));
        store.record_batch(&later);
        let s = store.get(id("a")).unwrap();
        assert_eq!((s.count, s.sum, s.last_measurement), (1, 5.0, Some(at(5))));
    }

    #[test]
    fn concurrent_writers_lose_nothing() {
        let store = Arc::new(MemoryStore::default());
        let threads: u32 = 8;
        let rounds: u32 = 2_000;
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let store = Arc::clone(&store);
                thread::spawn(move || {
                    let own = format!("own-{t}");
                    for r in 0..rounds {
                        let mut batch = Batch::default();
                        for s in ["hot", "warm", own.as_str()] {
                            // Small integers and halves: every partial sum is exact.
                            batch.push(id(s), 0.5, at(i64::from(t * rounds + r)));
                        }
                        store.record_batch(&batch);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let total = u64::from(threads * rounds);
        for s in ["hot", "warm"] {
            let got = store.get(id(s)).unwrap();
            assert_eq!(got.count, total);
            assert_eq!(got.sum, total as f64 * 0.5);
            assert_eq!(got.last_measurement, Some(at(i64::from(threads * rounds - 1))));
        }
        assert_eq!(store.get(id("own-3")).unwrap().count, u64::from(rounds));
    }

    #[test]
    fn readers_never_see_a_torn_count_and_sum() {
        let store = Arc::new(MemoryStore::default());
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writers: Vec<_> = (0..2)
            .map(|_| {
                let store = Arc::clone(&store);
                let stop = Arc::clone(&stop);
                thread::spawn(move || {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let mut batch = Batch::default();
                        batch.push(id("s"), 2.0, at(1));
                        store.record_batch(&batch);
                    }
                })
            })
            .collect();
        let mut seen = 0;
        while seen < 200_000 {
            if let Some(s) = store.get(id("s")) {
                assert!(s.count > 0 && s.last_measurement.is_some());
                assert_eq!(s.avg(), 2.0, "torn read: count {} sum {}", s.count, s.sum);
                seen += 1;
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for w in writers {
            w.join().unwrap();
        }
    }

    #[test]
    fn a_capped_store_refuses_whole_batches_that_add_too_many_sensors() {
        let store = MemoryStore::with_max_sensors(3);
        let batch = |names: &[&'static str]| {
            let mut b = Batch::default();
            for n in names {
                b.push(id(n), 1.0, at(1));
            }
            b
        };
        assert_eq!(store.try_record_batch(&batch(&["a", "b"])), Ok(()));
        assert_eq!(store.try_record_batch(&batch(&["c", "d"])), Err(3));
        assert_eq!(store.get(id("c")), None, "nothing of a refused batch is applied");
        assert_eq!(store.try_record_batch(&batch(&["a", "b", "c"])), Ok(()));
        assert_eq!(
            store.try_record_batch(&batch(&["a", "b", "c"])),
            Ok(()),
            "known sensors fit"
        );
        assert_eq!(store.try_record_batch(&batch(&["d"])), Err(3));
        store.delete(id("b"));
        store.delete(id("b"));
        assert_eq!(store.try_record_batch(&batch(&["d"])), Ok(()));
        assert_eq!(store.get(id("a")).unwrap().count, 3);
        assert_eq!(store.len(), 3);
    }

    #[test]
    fn concurrent_capped_writers_never_pass_the_cap() {
        let store = Arc::new(MemoryStore::with_max_sensors(50));
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let store = Arc::clone(&store);
                thread::spawn(move || {
                    let mut taken = 0;
                    for i in 0..200 {
                        let names = [format!("s{}", (t * 7 + i) % 120), format!("s{}", (i * 13) % 120)];
                        let mut batch = Batch::default();
                        for n in &names {
                            batch.push(id(n), 1.0, at(1));
                        }
                        if store.try_record_batch(&batch).is_ok() {
                            taken += 1;
                        }
                        assert!(store.len() <= 50);
                    }
                    taken
                })
            })
            .collect();
        let taken: u32 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert!(taken > 0);
        assert_eq!(store.len(), 50, "the cap fills up and stays full");
        let cap = store.cap.as_ref().unwrap();
        assert_eq!(cap.tracked.load(Ordering::Acquire), 50, "no reservation leaks");
    }

    #[derive(Debug, Clone)]
    enum Op {
        Record(Vec<(u8, i8, i16)>),
        Delete(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => proptest::collection::vec((0u8..5, any::<i8>(), any::<i16>()), 0..20).prop_map(Op::Record),
            1 => (0u8..5).prop_map(Op::Delete),
        ]
    }

    proptest! {
        #[test]
        fn matches_a_sequential_model(ops in proptest::collection::vec(op(), 0..40)) {
            let store = MemoryStore::default();
            let mut model: HashMap<String, Vec<(f64, i64)>> = HashMap::new();
            let names: Vec<String> = (0..5).map(|i| format!("sensor {i}")).collect();
            for op in &ops {
                match op {
                    Op::Record(items) => {
                        let mut batch = Batch::default();
                        for &(s, v, t) in items {
                            let name = &names[usize::from(s)];
                            batch.push(id(name), f64::from(v), at(i64::from(t)));
                            model.entry(name.clone()).or_default().push((f64::from(v), i64::from(t)));
                        }
                        store.record_batch(&batch);
                    }
                    Op::Delete(s) => {
                        let name = &names[usize::from(*s)];
                        store.delete(id(name));
                        model.remove(name);
                    }
                }
            }
            for name in &names {
                let got = store.get(id(name)).unwrap_or_default();
                let want = model.get(name).cloned().unwrap_or_default();
                prop_assert_eq!(got.count, want.len() as u64);
                prop_assert_eq!(got.sum, want.iter().map(|m| m.0).sum::<f64>());
                prop_assert_eq!(got.last_measurement, want.iter().map(|m| m.1).max().map(at));
            }
        }
    }
}
