//! `SensorMap`: the durable store's statistics in memory, written by one writer at a time
//! (whoever holds the log's lock, or recovery before it starts) and read by any, with copy-on-write
//! snapshots that never stop the writer.
//!
//! Each cell holds the same two 128-bit atomics as the memory store (count and sum in one,
//! so readers never see a torn pair; the latest instant in the other) plus the
//! generation of the last snapshot that has dealt with it. A snapshot of generation `g`
//! captures the state at one point of the log (the cut) while the writer goes on:
//!
//! - the writer, before it first changes or removes a cell during `g`, claims it (its
//!   generation goes to `g` by compare-and-swap) and keeps its value as a before-image;
//! - the snapshot visits every cell: it reads the value, then claims the cell; if the
//!   claim succeeds the value it read is the value at the cut (the writer changes a cell
//!   only after claiming it, or after seeing it claimed), otherwise the writer has the
//!   before-image;
//! - cells created during `g` are born claimed: they did not exist at the cut.
//!
//! So every cell of the cut is written exactly once, by the snapshot or from the
//! before-images the writer hands over at the end, and the writer never waits for the
//! snapshot beyond one shard lock when it inserts or removes (256 shards keep that short).

use std::collections::HashMap;

use dashmap::DashMap;
use portable_atomic::{AtomicU64, AtomicU128, Ordering};

use crate::domain::{Delta, Summary, Timestamp};

/// Shards of the map: many, so a snapshot holds each shard's read lock only briefly.
const SHARDS: usize = 256;

/// Statistics of every sensor of the durable store.
#[derive(Debug)]
pub(super) struct SensorMap {
    cells: DashMap<Box<str>, Cell, foldhash::fast::RandomState>,
}

#[derive(Debug)]
struct Cell {
    totals: AtomicU128,
    latest: AtomicU128,
    generation: AtomicU64,
}

impl Cell {
    fn new(generation: u64) -> Self {
        Self {
            totals: AtomicU128::new(0),
            latest: AtomicU128::new(0),
            generation: AtomicU64::new(generation),
        }
    }

    fn read(&self) -> Delta {
        let bits = self.totals.load(Ordering::SeqCst);
        let latest = self.latest.load(Ordering::SeqCst);
        Delta {
            count: (bits >> 64) as u64,
            sum: f64::from_bits(bits as u64),
            latest: Timestamp::from_key(latest).expect("a cell holds a valid instant"),
        }
    }

    /// Adds `d`. Only the single writer calls this, so loads and stores need no CAS;
    /// `latest` goes first so a reader that sees a count also sees an instant.
    fn add(&self, d: &Delta) {
        let key = d.latest.to_key();
        if key > self.latest.load(Ordering::Acquire) {
            self.latest.store(key, Ordering::SeqCst);
        }
        let bits = self.totals.load(Ordering::Acquire);
        let count = (bits >> 64) as u64 + d.count;
        let sum = f64::from_bits(bits as u64) + d.sum;
        self.totals.store(
            (u128::from(count) << 64) | u128::from(sum.to_bits()),
            Ordering::SeqCst,
        );
    }

    fn set(&self, d: &Delta) {
        self.latest.store(d.latest.to_key(), Ordering::SeqCst);
        self.totals.store(
            (u128::from(d.count) << 64) | u128::from(d.sum.to_bits()),
            Ordering::SeqCst,
        );
    }

    /// Claims the cell for snapshot `generation`; true when this call did.
    fn claim(&self, generation: u64) -> bool {
        let seen = self.generation.load(Ordering::SeqCst);
        seen < generation
            && self
                .generation
                .compare_exchange(seen, generation, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
    }
}

/// The writer's side of a snapshot in progress: its generation (0: none) and the values
/// of cells as they were at the cut, kept before the writer changed them.
#[derive(Debug, Default)]
pub(super) struct Cow {
    pub(super) generation: u64,
    pub(super) before: HashMap<Box<str>, Delta>,
}

impl Cow {
    fn keep(&mut self, sensor: &str, cell: &Cell) {
        if self.generation != 0 && cell.claim(self.generation) {
            self.before.insert(Box::from(sensor), cell.read());
        }
    }
}

impl Default for SensorMap {
    fn default() -> Self {
        Self {
            cells: DashMap::with_capacity_and_hasher_and_shard_amount(0, Default::default(), SHARDS),
        }
    }
}

impl SensorMap {
    /// The statistics of `sensor`, `None` when it is unknown.
    pub(super) fn get(&self, sensor: &str) -> Option<Summary> {
        self.cells.get(sensor).map(|cell| {
            let d = cell.read();
            Summary {
                last_measurement: Some(d.latest),
                count: d.count,
                sum: d.sum,
            }
        })
    }

    /// Whether `sensor` is tracked.
    pub(super) fn contains(&self, sensor: &str) -> bool {
        self.cells.contains_key(sensor)
    }

    /// How many sensors are tracked.
    pub(super) fn len(&self) -> usize {
        self.cells.len()
    }

    /// Forgets everything (a snapshot that failed to load halfway).
    pub(super) fn clear(&self) {
        self.cells.clear();
    }

    /// Adds `delta` to `sensor` (writer only).
    pub(super) fn add(&self, sensor: &str, delta: &Delta, cow: &mut Cow) {
        if let Some(cell) = self.cells.get(sensor) {
            cow.keep(sensor, &cell);
            cell.add(delta);
            return;
        }
        let cell = Cell::new(cow.generation);
        cell.add(delta);
        self.cells.insert(Box::from(sensor), cell);
    }

    /// Sets `sensor`'s statistics (loading a snapshot, before the writer starts).
    pub(super) fn set(&self, sensor: &str, totals: &Delta) {
        let cell = Cell::new(0);
        cell.set(totals);
        self.cells.insert(Box::from(sensor), cell);
    }

    /// Forgets `sensor` (writer only).
    pub(super) fn remove(&self, sensor: &str, cow: &mut Cow) {
        if let Some(cell) = self.cells.get(sensor) {
            cow.keep(sensor, &cell);
        } else {
            return;
        }
        self.cells.remove(sensor);
    }

    /// Calls `f` with every cell of snapshot `generation`'s cut that the writer has not
    /// kept a before-image of (see the module docs). Runs beside the writer.
    pub(super) fn visit(&self, generation: u64, mut f: impl FnMut(&str, &Delta)) {
        for entry in &self.cells {
            let cell = entry.value();
            let seen = cell.generation.load(Ordering::SeqCst);
            if seen >= generation {
                continue;
            }
            let value = cell.read();
            if cell
                .generation
                .compare_exchange(seen, generation, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                f(entry.key(), &value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::BTreeMap,
        sync::{
            Arc,
            atomic::{AtomicBool, Ordering as StdOrdering},
        },
    };

    use super::*;

    fn delta(count: u64, sum: f64, secs: i64) -> Delta {
        Delta {
            count,
            sum,
            latest: Timestamp::from_datetime(chrono::DateTime::from_timestamp(secs, 0).unwrap()),
        }
    }

    #[test]
    fn a_snapshot_sees_the_cut_while_the_writer_goes_on() {
        let map = Arc::new(SensorMap::default());
        let mut idle = Cow::default();
        for i in 0..20_000 {
            map.add(&format!("s{i}"), &delta(1, 1.0, i), &mut idle);
        }
        let expected: BTreeMap<String, u64> = (0..20_000).map(|i| (format!("s{i}"), 1)).collect();

        // The writer changes, removes and adds cells while the snapshot runs.
        let mut cow = Cow {
            generation: 1,
            ..Cow::default()
        };
        let done = Arc::new(AtomicBool::new(false));
        let snapshot = {
            let map = Arc::clone(&map);
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                let mut seen = BTreeMap::new();
                map.visit(1, |s, d| {
                    seen.insert(s.to_owned(), d.count);
                });
                done.store(true, StdOrdering::SeqCst);
                seen
            })
        };
        let mut round = 0;
        while !done.load(StdOrdering::SeqCst) || round < 3 {
            for i in (0..20_000).step_by(7) {
                map.add(&format!("s{i}"), &delta(1, 1.0, 0), &mut cow);
            }
            map.remove(&format!("s{}", round * 3 + 1), &mut cow);
            map.add(&format!("new{round}"), &delta(1, 1.0, 0), &mut cow);
            round += 1;
        }
        let mut seen = snapshot.join().unwrap();
        for (sensor, d) in cow.before.drain() {
            assert!(
                seen.insert(sensor.into(), d.count).is_none(),
                "a cell written twice"
            );
        }
        assert_eq!(seen, expected);
    }

    #[test]
    fn readers_see_whole_totals() {
        let map = SensorMap::default();
        let mut cow = Cow::default();
        map.add("a", &delta(2, 3.0, 20), &mut cow);
        map.add("a", &delta(1, 1.0, 10), &mut cow);
        let s = map.get("a").unwrap();
        assert_eq!((s.count, s.sum), (3, 4.0));
        assert_eq!(s.last_measurement, Some(delta(1, 0.0, 20).latest));
        map.remove("a", &mut cow);
        assert_eq!(map.get("a"), None);
    }
}
