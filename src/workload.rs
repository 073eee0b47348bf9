//! Deterministic request bodies for the benches, the load test and the allocation test:
//! the same inputs on every machine and every run, so figures can be compared.

use std::fmt::Write as _;

/// Offsets and fractions cycled through, so timestamps look like real clients' mixes.
const SUFFIXES: [&str; 6] = ["Z", "+00:00", "+01:00", ".250+02:00", "-05:30", ".123456789Z"];

/// The id of sensor `i`: 16 bytes, `sensor-000000042`.
pub fn sensor_id(i: usize) -> String {
    format!("sensor-{i:09}")
}

/// A `POST /data` body of `measurements` items spread round-robin over `sensors` sensors,
/// with ISO timestamps of mixed offsets and float values drawn from a fixed-seed
/// generator.
pub fn batch(measurements: usize, sensors: usize, seed: u64) -> String {
    let mut rng = XorShift(seed | 1);
    let mut out = String::with_capacity(measurements * 90 + 2);
    out.push('[');
    for i in 0..measurements {
        if i > 0 {
            out.push(',');
        }
        let minute = (i / 60) % 60;
        let second = i % 60;
        let value = (rng.next() % 100_000) as f64 / 100.0 - 200.0;
        let _ = write!(
            out,
            r#"{{"sensor":"{}","timestamp":"2021-11-08T21:{minute:02}:{second:02}{}","value":{value}}}"#,
            sensor_id(i % sensors.max(1)),
            SUFFIXES[i % SUFFIXES.len()],
        );
    }
    out.push(']');
    out
}

/// xorshift64: tiny, deterministic, good enough for test values.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::decode;

    #[test]
    fn batches_are_valid_deterministic_and_spread_over_the_sensors() {
        let body = batch(1000, 100, 7);
        assert_eq!(body, batch(1000, 100, 7));
        let mut bytes = body.into_bytes();
        let decoded = decode(&mut bytes).unwrap();
        assert_eq!(decoded.measurements(), 1000);
        assert_eq!(decoded.sensors(), 100);
        assert_eq!(sensor_id(42).len(), 16);
    }
}
