//! `Summary`: what a reader gets back for one sensor.

use super::Timestamp;

/// The statistics of one sensor since it was first seen or last deleted.
///
/// `count` and `sum` always describe the same set of measurements; `avg` is derived.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Summary {
    /// The greatest instant among the measurements, `None` when there are none.
    pub last_measurement: Option<Timestamp>,
    /// How many measurements there are.
    pub count: u64,
    /// The sum of their values.
    pub sum: f64,
}

impl Summary {
    /// The arithmetic mean of the values, `0.0` when there are none.
    pub fn avg(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avg_of_nothing_is_zero() {
        assert_eq!(Summary::default().avg(), 0.0);
    }

    #[test]
    fn avg_is_sum_over_count() {
        let s = Summary {
            last_measurement: None,
            count: 4,
            sum: 10.0,
        };
        assert_eq!(s.avg(), 2.5);
    }
}
