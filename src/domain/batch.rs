//! `Batch`: the measurements of one request folded per sensor (count, sum, latest
//! instant), so applying a batch costs one store update per sensor, not per measurement.

use std::collections::HashMap;

use super::{SensorId, Timestamp};

/// The contribution of one batch to one sensor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Delta {
    /// How many measurements.
    pub count: u64,
    /// The sum of their values.
    pub sum: f64,
    /// The greatest instant among them.
    pub latest: Timestamp,
}

impl Delta {
    fn new(value: f64, at: Timestamp) -> Self {
        Self {
            count: 1,
            sum: value,
            latest: at,
        }
    }

    fn add(&mut self, value: f64, at: Timestamp) {
        self.count += 1;
        self.sum += value;
        self.latest = self.latest.max(at);
    }
}

/// A validated request, folded per sensor. Sensor ids borrow from the request body.
#[derive(Debug, Default)]
pub struct Batch<'a> {
    by_sensor: HashMap<SensorId<'a>, Delta, foldhash::fast::RandomState>,
    measurements: u64,
}

impl<'a> Batch<'a> {
    /// An empty batch with room for about `sensors` distinct sensors.
    pub fn with_capacity(sensors: usize) -> Self {
        Self {
            by_sensor: HashMap::with_capacity_and_hasher(sensors, Default::default()),
            measurements: 0,
        }
    }

    /// Adds one measurement.
    pub fn push(&mut self, sensor: SensorId<'a>, value: f64, at: Timestamp) {
        self.measurements += 1;
        self.by_sensor
            .entry(sensor)
            .and_modify(|d| d.add(value, at))
            .or_insert_with(|| Delta::new(value, at));
    }

    /// How many measurements were pushed.
    pub fn measurements(&self) -> u64 {
        self.measurements
    }

    /// How many distinct sensors the batch touches.
    pub fn sensors(&self) -> usize {
        self.by_sensor.len()
    }

    /// The per-sensor deltas, in no particular order.
    pub fn deltas(&self) -> impl Iterator<Item = (SensorId<'a>, &Delta)> + '_ {
        self.by_sensor.iter().map(|(s, d)| (*s, d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap()
    }

    #[test]
    fn folds_per_sensor_keeping_the_greatest_instant_whatever_the_order() {
        let a = SensorId::parse("a").unwrap();
        let b = SensorId::parse("b").unwrap();
        let mut batch = Batch::default();
        batch.push(a, 1.0, ts("2021-01-01T00:00:02Z"));
        batch.push(b, 5.0, ts("2021-01-01T00:00:00Z"));
        batch.push(a, 2.0, ts("2021-01-01T00:00:01Z"));
        batch.push(a, 3.0, ts("2021-01-01T01:00:03+02:00"));

        assert_eq!(batch.measurements(), 4);
        assert_eq!(batch.sensors(), 2);
        let deltas: HashMap<_, _> = batch.deltas().map(|(s, d)| (s.as_str(), *d)).collect();
        assert_eq!(
            deltas["a"],
            Delta {
                count: 3,
                sum: 6.0,
                latest: ts("2021-01-01T00:00:02Z")
            }
        );
        assert_eq!(
            deltas["b"],
            Delta {
                count: 1,
                sum: 5.0,
                latest: ts("2021-01-01T00:00:00Z")
            }
        );
    }
}
