//! `SensorId`: the validated name of a sensor, borrowed from the request that carried it.

use std::fmt;

/// The longest sensor id we accept, in bytes of UTF-8.
pub const MAX_SENSOR_ID_BYTES: usize = 256;

/// A sensor id: a non-empty string of at most [`MAX_SENSOR_ID_BYTES`] bytes.
///
/// Any characters are allowed (spaces, `/`, unicode). It borrows from the request body or
/// path, so decoding a batch allocates no string per measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SensorId<'a>(&'a str);

/// Why a string is not a sensor id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SensorIdError {
    /// The string is empty.
    #[error("sensor id must not be empty")]
    Empty,
    /// The string is longer than [`MAX_SENSOR_ID_BYTES`].
    #[error("sensor id is {0} bytes long; the limit is {MAX_SENSOR_ID_BYTES} bytes")]
    TooLong(usize),
}

impl<'a> SensorId<'a> {
    /// Checks `raw` and wraps it.
    ///
    /// # Errors
    /// [`SensorIdError`] when `raw` is empty or longer than [`MAX_SENSOR_ID_BYTES`].
    pub fn parse(raw: &'a str) -> Result<Self, SensorIdError> {
        match raw.len() {
            0 => Err(SensorIdError::Empty),
            n if n > MAX_SENSOR_ID_BYTES => Err(SensorIdError::TooLong(n)),
            _ => Ok(Self(raw)),
        }
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &'a str {
        self.0
    }
}

impl AsRef<str> for SensorId<'_> {
    fn as_ref(&self) -> &str {
        self.0
    }
}

impl fmt::Display for SensorId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn accepts_spaces_slashes_and_unicode() {
        for raw in ["sensor 1", "a/b", "température ✓", "x"] {
            assert_eq!(SensorId::parse(raw).unwrap().as_str(), raw);
        }
    }

    #[test]
    fn rejects_empty() {
        assert_eq!(SensorId::parse(""), Err(SensorIdError::Empty));
    }

    #[test]
    fn length_limit_counts_bytes_not_chars() {
        let ok = "é".repeat(128); // 256 bytes
        assert!(SensorId::parse(&ok).is_ok());
        let too_long = "é".repeat(129);
        assert_eq!(SensorId::parse(&too_long), Err(SensorIdError::TooLong(258)));
    }

    proptest! {
        #[test]
        fn parse_accepts_exactly_the_non_empty_short_strings(s in ".{0,300}") {
            let ok = !s.is_empty() && s.len() <= MAX_SENSOR_ID_BYTES;
            prop_assert_eq!(SensorId::parse(&s).is_ok(), ok);
        }
    }
}
