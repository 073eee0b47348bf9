//! Slow, obviously correct references for the fuzz targets (`fuzz/`) and the unit tests:
//! a batch decoder on serde_json and a timestamp parser on chrono, written from
//! CONTRACT.md with no regard for speed. [`decode`](super::decode) and
//! [`Timestamp::parse`] must agree with them on every input: the same bodies accepted and
//! rejected, with the same index and the same folded result; the same timestamps
//! accepted, at the same instant. [`check_decode`] and [`check_timestamp`] assert that.
//!
//! Built for unit tests and with the `fuzzing` feature; never part of the server.

use std::{collections::BTreeMap, fmt};

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveTime, TimeZone as _, Utc};
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::MAX_DEPTH;
use crate::domain::{Batch, MAX_SENSOR_ID_BYTES, Timestamp};

/// What a batch adds to one sensor.
#[derive(Debug, Clone, Copy)]
pub struct Folded {
    /// How many measurements.
    pub count: u64,
    /// Their values added in the order of the body.
    pub sum: f64,
    /// The greatest instant among them.
    pub latest: DateTime<Utc>,
}

impl PartialEq for Folded {
    /// Sums compare as numbers (`0.0 == -0.0`), and two NaN sums (an overflow to +inf
    /// and one to -inf) are the same result.
    fn eq(&self, other: &Self) -> bool {
        self.count == other.count
            && self.latest == other.latest
            && (self.sum == other.sum || (self.sum.is_nan() && other.sum.is_nan()))
    }
}

/// A decoded body: the per-sensor fold, or the rejection's index (`None` for the whole
/// body: not JSON, too deep, not an array).
pub type Decoded = Result<BTreeMap<String, Folded>, Option<usize>>;

/// The contract's decoder, the slow way: parse the whole body as JSON with serde_json
/// (nesting at most [`MAX_DEPTH`]), require an array, then check each item in order and
/// fold the valid ones.
pub fn decode(body: &[u8]) -> Decoded {
    let Ok(Depth(depth)) = serde_json::from_slice::<Depth>(body) else {
        return Err(None);
    };
    if depth > MAX_DEPTH {
        return Err(None);
    }
    let Ok(items) = serde_json::from_slice::<Vec<Box<RawValue>>>(body) else {
        return Err(None);
    };
    let mut folded: BTreeMap<String, Folded> = BTreeMap::new();
    for (index, item) in items.iter().enumerate() {
        let (sensor, value, at) = measurement(item).ok_or(Some(index))?;
        let entry = folded.entry(sensor).or_insert(Folded {
            count: 0,
            sum: 0.0,
            latest: at,
        });
        entry.count += 1;
        entry.sum += value;
        entry.latest = entry.latest.max(at);
    }
    Ok(folded)
}

/// One item: an object with exactly one `sensor` (a string of 1 to 256 bytes once
/// unescaped), one `timestamp` (a string [`timestamp`] accepts) and one `value` (a JSON
/// number that is finite as a 64-bit float); other fields are ignored.
fn measurement(item: &RawValue) -> Option<(String, f64, DateTime<Utc>)> {
    let Fields(fields) = serde_json::from_str(item.get()).ok()?;
    let only = |name: &str| {
        let mut found = fields.iter().filter(|(key, _)| key == name);
        let first = found.next()?;
        found.next().is_none().then_some(first.1.get())
    };
    let sensor: String = serde_json::from_str(only("sensor")?).ok()?;
    if sensor.is_empty() || sensor.len() > MAX_SENSOR_ID_BYTES {
        return None;
    }
    let text: String = serde_json::from_str(only("timestamp")?).ok()?;
    let at = timestamp(&text)?;
    let raw = only("value")?;
    if !matches!(serde_json::from_str(raw).ok()?, serde_json::Value::Number(_)) {
        return None;
    }
    // The standard library rounds correctly; `1e400` becomes infinity.
    let value: f64 = raw.parse().ok()?;
    value.is_finite().then_some((sensor, value, at))
}

/// The contract's timestamp forms, the slow way: the shape checked character by
/// character, then chrono builds the date, the time of day and the offset (each refusing
/// what does not exist) and gives the instant.
pub fn timestamp(text: &str) -> Option<DateTime<Utc>> {
    let b = text.as_bytes();
    let head = b.get(..19)?;
    for (&c, &want) in head.iter().zip(b"NNNN-NN-NNSNN:NN:NN") {
        let ok = match want {
            b'N' => c.is_ascii_digit(),
            b'S' => matches!(c, b'T' | b't' | b' '),
            _ => c == want,
        };
        if !ok {
            return None;
        }
    }
    let number = |from: usize, to: usize| text[from..to].parse::<u32>().ok();
    let (year, month, day) = (number(0, 4)?, number(5, 7)?, number(8, 10)?);
    let (hour, minute, second) = (number(11, 13)?, number(14, 16)?, number(17, 19)?);

    let mut rest = &text[19..];
    let mut nanos = 0;
    if let Some(fraction) = rest.strip_prefix(['.', ',']) {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if !(1..=9).contains(&digits) {
            return None;
        }
        nanos = format!("{:0<9}", &fraction[..digits]).parse().ok()?;
        rest = &fraction[digits..];
    }
    let offset_seconds = match rest {
        "" | "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let hhmm = &rest[1..];
            let all_digits = |s: &str| s.bytes().all(|c| c.is_ascii_digit());
            let (hours, minutes) = match hhmm.len() {
                2 if all_digits(hhmm) => (&hhmm[..2], "00"),
                4 if all_digits(hhmm) => (&hhmm[..2], &hhmm[2..]),
                5 if hhmm.as_bytes()[2] == b':' && all_digits(&hhmm[..2]) && all_digits(&hhmm[3..]) => {
                    (&hhmm[..2], &hhmm[3..])
                }
                _ => return None,
            };
            let (hours, minutes): (i32, i32) = (hours.parse().ok()?, minutes.parse().ok()?);
            if hours > 23 || minutes > 59 {
                return None;
            }
            sign * (hours * 3600 + minutes * 60)
        }
    };

    let date = NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day)?;
    // Seconds stop at 59: chrono writes a leap second as nanoseconds over 1e9, never as 60.
    let time = NaiveTime::from_hms_nano_opt(hour, minute, second, nanos)?;
    let offset = FixedOffset::east_opt(offset_seconds)?;
    let local = offset.from_local_datetime(&date.and_time(time)).single()?;
    Some(local.with_timezone(&Utc))
}

/// The real decoder's result in the reference's terms.
pub fn fold(batch: &Batch<'_>) -> BTreeMap<String, Folded> {
    batch
        .deltas()
        .map(|(sensor, delta)| {
            let folded = Folded {
                count: delta.count,
                sum: delta.sum,
                latest: delta.latest.as_datetime(),
            };
            (sensor.to_string(), folded)
        })
        .collect()
}

/// Runs [`decode`](super::decode) and the reference on `body`.
///
/// # Panics
/// When they disagree, with both results.
pub fn check_decode(body: &[u8]) {
    let mut buf = body.to_vec();
    let real = super::decode(&mut buf)
        .map(|batch| fold(&batch))
        .map_err(|e| e.index);
    let reference = decode(body);
    assert!(
        real == reference,
        "decode and the reference disagree on {:?}\n decode:    {real:?}\n reference: {reference:?}",
        String::from_utf8_lossy(body)
    );
}

/// Runs [`Timestamp::parse`] and the reference on `text`.
///
/// # Panics
/// When they disagree, with both results.
pub fn check_timestamp(text: &str) {
    let real = Timestamp::parse(text);
    let reference = timestamp(text);
    assert!(
        real.map(|t| t.as_datetime()).ok() == reference,
        "Timestamp::parse and the reference disagree on {text:?}\n parse:     {real:?}\n reference: {reference:?}"
    );
}

/// How deeply a JSON text nests (a scalar 0, `[]` 1, `[{}]` 2), counted on the text
/// itself, so a duplicate key cannot hide a deep first value.
struct Depth(usize);

impl<'de> Deserialize<'de> for Depth {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(DepthVisitor)
    }
}

struct DepthVisitor;

impl<'de> Visitor<'de> for DepthVisitor {
    type Value = Depth;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Depth, A::Error> {
        let mut deepest = 0;
        while let Some(Depth(d)) = seq.next_element()? {
            deepest = deepest.max(d);
        }
        Ok(Depth(deepest + 1))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Depth, A::Error> {
        let mut deepest = 0;
        while let Some((IgnoredAny, Depth(d))) = map.next_entry()? {
            deepest = deepest.max(d);
        }
        Ok(Depth(deepest + 1))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Depth, E> {
        Ok(Depth(0))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Depth, E> {
        Ok(Depth(0))
    }

    fn visit_u64<E>(self, _: u64) -> Result<Depth, E> {
        Ok(Depth(0))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Depth, E> {
        Ok(Depth(0))
    }

    fn visit_str<E>(self, _: &str) -> Result<Depth, E> {
        Ok(Depth(0))
    }

    fn visit_unit<E>(self) -> Result<Depth, E> {
        Ok(Depth(0))
    }
}

/// An object's fields in order, duplicates kept.
struct Fields(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(FieldsVisitor)
    }
}

struct FieldsVisitor;

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = Fields;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
        let mut fields = Vec::new();
        while let Some(entry) = map.next_entry()? {
            fields.push(entry);
        }
        Ok(Fields(fields))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_reference_reads_the_contract_samples() {
        let got = decode(br#"[{"sensor":"sensor1","timestamp":"2021-11-08T21:38:09+00:00","value":2},{"sensor":"sensor0","timestamp":"2021-11-09T21:38:09+01:00","value":3}]"#).unwrap();
        assert_eq!(got["sensor0"].latest.to_rfc3339(), "2021-11-09T20:38:09+00:00");
        assert_eq!((got["sensor1"].count, got["sensor1"].sum), (1, 2.0));
        assert_eq!(decode(b"[]"), Ok(BTreeMap::new()));
        assert_eq!(decode(b"[1]"), Err(Some(0)));
        assert_eq!(decode(b"{}"), Err(None));
    }

    /// The bodies of the decoder's own unit tests, and the edges of each rule.
    #[test]
    fn decode_agrees_with_the_reference_on_the_test_cases() {
        let ok = r#"{"sensor":"s","timestamp":"2021-01-01T00:00:00Z","value":1}"#;
        let items = [
            ok,
            "1",
            "[]",
            "null",
            r#"{"timestamp":"2021-01-01T00:00:00Z","value":1}"#,
            r#"{"sensor":"s","value":1}"#,
            r#"{"sensor":"s","timestamp":"2021-01-01T00:00:00Z"}"#,
            r#"{"sensor":"s","timestamp":"2021-01-01T00:00:00Z","value":"1"}"#,
            r#"{"sensor":"s","timestamp":"2021-01-01T00:00:00Z","value":null}"#,
            r#"{"sensor":"s","timestamp":"2021-01-01T00:00:00Z","value":true}"#,
            r#"{"sensor":"s","timestamp":1636407489,"value":1}"#,
            r#"{"sensor":7,"timestamp":"2021-01-01T00:00:00Z","value":1}"#,
            r#"{"sensor":"","timestamp":"2021-01-01T00:00:00Z","value":1}"#,
            r#"{"sensor":"s","timestamp":"2021-02-30T00:00:00Z","value":1}"#,
            r#"{"sensor":"s","sensor":"t","timestamp":"2021-01-01T00:00:00Z","value":1}"#,
            r#"{"sensor":"s","timestamp":"2021-01-01T00:00:00Z","value":1,"value":1}"#,
            r#"{"sensor":"s","timestamp":"2021-01-01T00:00:00Z","value":1e400}"#,
            r#"{"sensor":"s","timestamp":"2021-01-01T00:00:00Z","value":1.5e300}"#,
            r#"{"sensor":"s","timestamp":"2021-01-01T00:00:00Z","value":18446744073709551616}"#,
            r#"{"sensor":"s","timestamp":"2021-01-01T00:00:00Z","value":-0}"#,
            r#"{"sensor":"a\"b\u00e9\/c","timestamp":"2021-01-01T00:00:00Z","value":1}"#,
            r#"{"sen\u0073or":"s","timestamp":"2021-01-01T00:00:00Z","value":1}"#,
            r#"{"unit":{"a":[1,{"b":2}]},"sensor":"s","x":[[]],"timestamp":"2021-01-01T00:00:00Z","value":1.5}"#,
            r#"{"sensor":"s","timestamp":"2021-01-01T00:00:00Z","value":1,"x":[[[[[[1]]]]]]}"#,
            r#"{"sensor":"s","timestamp":"2021-01-01T00:00:00Z","value":1,"x":[[[[[[[1]]]]]]]}"#,
        ];
        for item in items {
            check_decode(format!("[{item}]").as_bytes());
            check_decode(format!("[{ok},{item},{ok}]").as_bytes());
        }
        let long = format!(
            r#"[{{"sensor":"{}","timestamp":"2021-01-01T00:00:00Z","value":1}}]"#,
            "é".repeat(128)
        );
        check_decode(long.as_bytes());
        check_decode(long.replace("é\"", "éx\"").as_bytes());
        for body in [
            "",
            " ",
            "[",
            "{}",
            r#""x""#,
            "null",
            "[1,]",
            "nope",
            "[{\"sensor\":}]",
            "[]x",
            " [ ] ",
        ] {
            check_decode(body.as_bytes());
        }
    }

    #[test]
    fn timestamp_agrees_with_the_reference_on_the_test_cases() {
        for text in [
            "2021-11-08T21:38:09+00:00",
            "2021-11-08t21:38:09Z",
            "2021-11-08 21:38:09z",
            "2021-11-08T21:38:09",
            "2021-11-09T21:38:09+0100",
            "2021-11-09T21:38:09+01",
            "2021-11-09T21:38:09-05:30",
            "2021-11-08T21:38:09,25Z",
            "2021-11-08T21:38:09.123456789Z",
            "2021-11-08T21:38:09.1234567891Z",
            "2020-02-29T00:00:00Z",
            "2021-02-29T00:00:00Z",
            "2021-02-30T00:00:00Z",
            "2021-13-01T00:00:00Z",
            "2021-11-08T24:00:00Z",
            "2021-11-08T23:59:60Z",
            "2021-11-08T21:38:09+24:00",
            "2021-11-08T21:38:09+01:60",
            "0000-01-01T00:00:00+23:59",
            "9999-12-31T23:59:59.999999999-23:59",
            "2021-11-08T21:38:09.Z",
            "2021-11-08T21:38:09 +00:00",
            "2021-11-08T21:38:09+001",
            "２０２１-11-08T21:38:09Z",
            "",
        ] {
            check_timestamp(text);
        }
    }

    /// Timestamps assembled from the contract's pieces and near misses.
    fn timestamp_text() -> impl Strategy<Value = String> {
        (
            "[0-9]{4}",
            "(0[0-9]|1[0-3])",
            "([0-2][0-9]|3[0-2])",
            "[Tt _]",
            "([01][0-9]|2[0-5])",
            "[0-6][0-9]",
            "[0-6][0-9]",
            "([.,][0-9]{0,10})?",
            "(|Z|z|[+-][0-2][0-9](:?[0-6][0-9])?|[+-][0-9]{1,5})",
        )
            .prop_map(|(y, mo, d, sep, h, mi, s, frac, off)| {
                format!("{y}-{mo}-{d}{sep}{h}:{mi}:{s}{frac}{off}")
            })
    }

    /// Bodies assembled from measurement-like items and near misses.
    fn body() -> impl Strategy<Value = String> {
        let sensor = prop_oneof![
            Just(r#""s""#.to_owned()),
            Just(r#""""#.to_owned()),
            Just("1".to_owned()),
            "\"[a-zé\\\\/\"]{0,3}\"",
            (250usize..260).prop_map(|n| format!("\"{}\"", "x".repeat(n))),
        ];
        let value = prop_oneof![
            Just("1".to_owned()),
            Just("-0".to_owned()),
            Just("1e400".to_owned()),
            Just("null".to_owned()),
            Just(r#""2""#.to_owned()),
            "-?[0-9]{1,25}(\\.[0-9]{1,20})?([eE][+-]?[0-9]{1,3})?",
        ];
        let field = prop_oneof![
            sensor.prop_map(|s| format!(r#""sensor":{s}"#)),
            timestamp_text().prop_map(|t| format!(r#""timestamp":"{t}""#)),
            value.prop_map(|v| format!(r#""value":{v}"#)),
            Just(r#""x":[[[[[[1]]]]]]"#.to_owned()),
            Just(r#""x":[[[[[[[1]]]]]]]"#.to_owned()),
            Just(r#""other":{"a":null}"#.to_owned()),
        ];
        let item = prop_oneof![
            4 => proptest::collection::vec(field, 0..5).prop_map(|f| format!("{{{}}}", f.join(","))),
            1 => Just("[]".to_owned()),
            1 => Just("7".to_owned()),
        ];
        proptest::collection::vec(item, 0..4).prop_map(|items| format!("[{}]", items.join(",")))
    }

    proptest! {
        #[test]
        fn decode_agrees_with_the_reference(body in body()) {
            check_decode(body.as_bytes());
        }

        #[test]
        fn timestamp_agrees_with_the_reference(text in timestamp_text()) {
            check_timestamp(&text);
        }
    }
}
