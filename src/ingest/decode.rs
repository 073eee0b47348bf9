//! `decode`: a `POST /data` body to a folded [`Batch`], all or nothing.
//!
//! Bodies of the plain shape nearly every client sends are read in one pass by
//! [`super::fast`]; the others, and every invalid body, by simd-json as follows.
//! simd-json parses in place into a tape; strings without escapes borrow from the body and
//! escaped ones are unescaped in place, so no measurement allocates a string. The tape is
//! walked once: every item is validated and folded into the batch, and the first invalid
//! item fails the whole request with its index.
//!
//! The body buffer carries simd-json's padding itself ([`decode`] adds it), so the parser
//! does not copy the input, and each thread keeps its parser buffers and tape between
//! requests (up to [`SCRATCH_KEEP_LIMIT`] bytes of body), so a batch costs a handful of
//! allocations whatever its size.

use std::cell::RefCell;

use simd_json::{Buffers, ErrorType, INPUT_PADDING, Node, StaticNode, Tape};

use super::fast::{self, Item};
use crate::domain::{Batch, SensorId, SensorIdError, Timestamp, TimestampError};

/// How deeply a body may nest: the array (1), a measurement object (2), and containers
/// inside unknown fields below that. simd-json stops at the first container deeper than
/// this, so a nesting bomb costs one scan of the input.
pub const MAX_DEPTH: usize = 8;

/// Bodies up to this size leave their parser buffers to the thread for the next request;
/// larger ones free them, so one huge batch does not pin memory on every worker.
pub const SCRATCH_KEEP_LIMIT: usize = 1 << 20;

/// Extra capacity a caller may reserve after the body so [`decode`] adds its padding
/// without reallocating.
pub const PADDING: usize = INPUT_PADDING;

thread_local! {
    static SCRATCH: RefCell<Option<(Buffers, Tape<'static>)>> = const { RefCell::new(None) };
    /// The measurements the plain-shape reader found, kept for the thread's next body.
    static ITEMS: RefCell<Vec<Item>> = const { RefCell::new(Vec::new()) };
}

/// Why a body was rejected, and at which measurement.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{kind}")]
pub struct DecodeError {
    /// Position of the offending measurement in the array; `None` for whole-body errors.
    pub index: Option<usize>,
    /// What is wrong.
    pub kind: DecodeErrorKind,
}

/// What is wrong with a body or one of its measurements.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeErrorKind {
    /// The body is not JSON at all.
    #[error("request body is not valid JSON: {0}")]
    Syntax(String),
    /// The body is JSON but not an array.
    #[error("request body must be a JSON array of measurements, got {0}")]
    NotAnArray(&'static str),
    /// The body nests deeper than [`MAX_DEPTH`].
    #[error("request body nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// An item of the array is not an object.
    #[error("measurement must be a JSON object, got {0}")]
    NotAnObject(&'static str),
    /// A required field is absent.
    #[error("measurement has no `{0}` field")]
    Missing(&'static str),
    /// A known field appears twice in one object.
    #[error("measurement has the `{0}` field more than once")]
    Duplicate(&'static str),
    /// A known field has the wrong JSON type.
    #[error("`{field}` must be {expected}, got {got}")]
    Type {
        /// The field.
        field: &'static str,
        /// What it must be.
        expected: &'static str,
        /// What it was.
        got: &'static str,
    },
    /// The sensor id breaks a rule.
    #[error("`sensor`: {0}")]
    Sensor(#[from] SensorIdError),
    /// The timestamp is not an accepted date-time.
    #[error("`timestamp` {text:?} is invalid: {reason}")]
    Timestamp {
        /// The text as sent (cut to 64 characters).
        text: String,
        /// The rule it breaks.
        reason: TimestampError,
    },
    /// The value is a number too large for a 64-bit float.
    #[error("`value` must be a finite number")]
    NotFinite,
}

impl DecodeError {
    fn body(kind: DecodeErrorKind) -> Self {
        Self { index: None, kind }
    }

    /// A short, bounded label for metrics: `malformed_json` or `invalid_measurement`.
    pub fn reason(&self) -> &'static str {
        match self.kind {
            DecodeErrorKind::Syntax(_) | DecodeErrorKind::NotAnArray(_) | DecodeErrorKind::TooDeep => {
                "malformed_json"
            }
            _ => "invalid_measurement",
        }
    }
}

/// Decodes and validates a whole batch. `body` gets [`PADDING`] bytes appended (reserve
/// them to avoid a reallocation) and is modified in place by the parser.
///
/// # Errors
/// [`DecodeError`] for the first problem found; no partial batch is returned.
pub fn decode(body: &mut Vec<u8>) -> Result<Batch<'_>, DecodeError> {
    // The plain shape first (one pass, no tape); anything else, and every error, is
    // the full decoder's.
    if ITEMS.with_borrow_mut(|items| fast::scan(body, items)) {
        let body: &Vec<u8> = body;
        // `scan` accepts ASCII only, so this one check of the whole body (with SIMD)
        // passes; it is what lets the batch borrow the sensor ids as `str`.
        return match simdutf8::basic::from_utf8(body) {
            Ok(text) => Ok(ITEMS.with_borrow_mut(|items| fold_items(text, items))),
            Err(_) => Err(DecodeError::body(DecodeErrorKind::Syntax("invalid UTF-8".into()))),
        };
    }
    decode_full(body)
}

/// [`decode`] with simd-json, whatever the shape.
fn decode_full(body: &mut Vec<u8>) -> Result<Batch<'_>, DecodeError> {
    let len = body.len();
    body.resize(len + PADDING, 0);
    let (mut buffers, tape) = SCRATCH
        .with(|s| s.borrow_mut().take())
        .unwrap_or_else(|| (Buffers::with_max_depth(len, MAX_DEPTH), Tape::null()));
    let mut tape = tape.reset();
    let result = simd_json::fill_tape_padded(body, len, &mut buffers, &mut tape)
        .map_err(|e| match e.error() {
            ErrorType::DepthLimitExceeded => DecodeError::body(DecodeErrorKind::TooDeep),
            _ => DecodeError::body(DecodeErrorKind::Syntax(e.to_string())),
        })
        .and_then(|()| walk(&tape.0));
    if len <= SCRATCH_KEEP_LIMIT {
        SCRATCH.with(|s| *s.borrow_mut() = Some((buffers, tape.reset())));
    }
    result
}

/// Folds what [`fast::scan`] read from `body` (every sensor range is ASCII of an
/// accepted length, which `scan` checked), and leaves the item buffer to the thread
/// unless it grew large.
fn fold_items<'a>(body: &'a str, items: &mut Vec<Item>) -> Batch<'a> {
    let mut batch = Batch::with_capacity(items.len().min(64));
    for item in items.iter() {
        let (start, end) = item.sensor;
        let text = &body[start as usize..end as usize];
        let sensor = SensorId::parse(text).expect("the plain-shape reader checked the length");
        batch.push(sensor, item.value, item.at);
    }
    if items.capacity() * std::mem::size_of::<Item>() > SCRATCH_KEEP_LIMIT {
        *items = Vec::new();
    } else {
        items.clear();
    }
    batch
}

/// Validates and folds the measurements of a parsed body.
fn walk<'a>(nodes: &[Node<'a>]) -> Result<Batch<'a>, DecodeError> {
    let Some(root) = nodes.first() else {
        return Err(DecodeError::body(DecodeErrorKind::Syntax("empty body".into())));
    };
    let Node::Array { len, .. } = *root else {
        return Err(DecodeError::body(DecodeErrorKind::NotAnArray(type_name(root))));
    };

    // Most batches repeat sensors; a small table that grows on demand beats sizing by items.
    let mut batch = Batch::with_capacity(len.min(64));
    let mut pos = 1;
    for index in 0..len {
        let node = &nodes[pos];
        let Node::Object { len: fields, count } = *node else {
            return Err(DecodeError {
                index: Some(index),
                kind: DecodeErrorKind::NotAnObject(type_name(node)),
            });
        };
        let (sensor, value, at) =
            measurement(&nodes[pos + 1..=pos + count], fields).map_err(|kind| DecodeError {
                index: Some(index),
                kind,
            })?;
        batch.push(sensor, value, at);
        pos += 1 + count;
    }
    Ok(batch)
}

/// Reads the `fields` key/value pairs of one object from `nodes` (its subtree).
fn measurement<'a>(
    nodes: &[Node<'a>],
    fields: usize,
) -> Result<(SensorId<'a>, f64, Timestamp), DecodeErrorKind> {
    let mut sensor = None;
    let mut timestamp = None;
    let mut value = None;
    let mut pos = 0;
    for _ in 0..fields {
        let Some(&Node::String(key)) = nodes.get(pos) else {
            return Err(DecodeErrorKind::Syntax("object key is not a string".into()));
        };
        let node = &nodes[pos + 1];
        pos += 2 + nested_count(node);
        match key {
            "sensor" => set_once(&mut sensor, "sensor", string(node, "sensor")?)?,
            "timestamp" => set_once(&mut timestamp, "timestamp", string(node, "timestamp")?)?,
            "value" => set_once(&mut value, "value", number(node)?)?,
            _ => {}
        }
    }
    let sensor = SensorId::parse(sensor.ok_or(DecodeErrorKind::Missing("sensor"))?)?;
    let text = timestamp.ok_or(DecodeErrorKind::Missing("timestamp"))?;
    let at = Timestamp::parse(text).map_err(|reason| DecodeErrorKind::Timestamp {
        text: text.chars().take(64).collect(),
        reason,
    })?;
    let value = value.ok_or(DecodeErrorKind::Missing("value"))?;
    Ok((sensor, value, at))
}

fn set_once<T>(slot: &mut Option<T>, field: &'static str, v: T) -> Result<(), DecodeErrorKind> {
    if slot.replace(v).is_some() {
        return Err(DecodeErrorKind::Duplicate(field));
    }
    Ok(())
}

fn string<'a>(node: &Node<'a>, field: &'static str) -> Result<&'a str, DecodeErrorKind> {
    match *node {
        Node::String(s) => Ok(s),
        _ => Err(DecodeErrorKind::Type {
            field,
            expected: "a string",
            got: type_name(node),
        }),
    }
}

fn number(node: &Node<'_>) -> Result<f64, DecodeErrorKind> {
    let v = match *node {
        Node::Static(StaticNode::F64(v)) => v,
        Node::Static(StaticNode::I64(v)) => v as f64,
        Node::Static(StaticNode::U64(v)) => v as f64,
        _ => {
            return Err(DecodeErrorKind::Type {
                field: "value",
                expected: "a number",
                got: type_name(node),
            });
        }
    };
    if v.is_finite() {
        Ok(v)
    } else {
        Err(DecodeErrorKind::NotFinite)
    }
}

/// How many tape nodes follow `node` inside it.
fn nested_count(node: &Node<'_>) -> usize {
    match *node {
        Node::Array { count, .. } | Node::Object { count, .. } => count,
        _ => 0,
    }
}

fn type_name(node: &Node<'_>) -> &'static str {
    match node {
        Node::String(_) => "a string",
        Node::Object { .. } => "an object",
        Node::Array { .. } => "an array",
        Node::Static(StaticNode::Null) => "null",
        Node::Static(StaticNode::Bool(_)) => "a boolean",
        Node::Static(_) => "a number",
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    fn decode_str(json: &str) -> Result<HashMap<String, (u64, f64, String)>, DecodeError> {
        let mut buf = json.as_bytes().to_vec();
        let batch = decode(&mut buf)?;
        Ok(batch
            .deltas()
            .map(|(s, d)| (s.to_string(), (d.count, d.sum, d.latest.to_string())))
            .collect())
    }

    fn error(json: &str) -> DecodeError {
        decode_str(json).expect_err("should be rejected")
    }

    #[test]
    fn decodes_the_contract_samples() {
        let got = decode_str(
            r#"[{"sensor":"sensor1","timestamp":"2021-11-08T21:38:09+00:00","value":2},
                {"sensor":"sensor0","timestamp":"2021-11-09T21:38:09+01:00","value":3}]"#,
        )
        .unwrap();
        assert_eq!(got["sensor1"], (1, 2.0, "2021-11-08T21:38:09+00:00".into()));
        assert_eq!(got["sensor0"], (1, 3.0, "2021-11-09T20:38:09+00:00".into()));
        assert!(decode_str("[]").unwrap().is_empty());
        assert!(decode_str("  [ ]\n").unwrap().is_empty());
    }

    #[test]
    fn skips_unknown_fields_of_any_shape_in_any_position() {
        let got = decode_str(
            r#"[{"unit":{"a":[1,{"b":2}]},"sensor":"s","x":[[]],"timestamp":"2021-01-01T00:00:00Z",
                 "note":"hi","value":1.5,"tail":null},
                {"value":2.5,"timestamp":"2021-01-01T00:00:01Z","sensor":"s"}]"#,
        )
        .unwrap();
        assert_eq!(got["s"], (2, 4.0, "2021-01-01T00:00:01+00:00".into()));
    }

    #[test]
    fn unescapes_sensor_ids() {
        let got = decode_str(r#"[{"sensor":"a\"b\u00e9\/c","timestamp":"2021-01-01T00:00:00Z","value":1}]"#)
            .unwrap();
        assert!(got.contains_key("a\"bé/c"));
    }

    #[test]
    fn accepts_integer_float_and_big_numbers() {
        let got = decode_str(
            r#"[{"sensor":"a","timestamp":"2021-01-01T00:00:00Z","value":-3},
                {"sensor":"b","timestamp":"2021-01-01T00:00:00Z","value":18446744073709551615},
                {"sensor":"c","timestamp":"2021-01-01T00:00:00Z","value":1.5e300},
                {"sensor":"d","timestamp":"2021-01-01T00:00:00Z","value":-0.0}]"#,
        )
        .unwrap();
        assert_eq!(got["a"].1, -3.0);
        assert_eq!(got["b"].1, 18446744073709551615.0);
        assert_eq!(got["c"].1, 1.5e300);
    }

    #[test]
    fn whole_body_errors_have_no_index() {
        for body in ["", "[", "{}", r#""x""#, "null", "[1,]", "nope", "[{\"sensor\":}]"] {
            let e = error(body);
            assert_eq!(e.index, None, "body {body:?}: {e}");
            assert_eq!(e.reason(), "malformed_json", "body {body:?}");
        }
    }

    #[test]
    fn item_errors_name_the_index_and_the_rule() {
        let ok = r#"{"sensor":"s","timestamp":"2021-01-01T00:00:00Z","value":1}"#;
        let cases: &[(&str, DecodeErrorKind)] = &[
            ("1", DecodeErrorKind::NotAnObject("a number")),
            ("[]", DecodeErrorKind::NotAnObject("an array")),
            (
                r#"{"timestamp":"2021-01-01T00:00:00Z","value":1}"#,
                DecodeErrorKind::Missing("sensor"),
            ),
            (
                r#"{"sensor":"s","value":1}"#,
                DecodeErrorKind::Missing("timestamp"),
            ),
            (
                r#"{"sensor":"s","timestamp":"2021-01-01T00:00:00Z"}"#,
                DecodeErrorKind::Missing("value"),
            ),
            (
                r#"{"sensor":"s","timestamp":"2021-01-01T00:00:00Z","value":"1"}"#,
                DecodeErrorKind::Type {
                    field: "value",
                    expected: "a number",
                    got: "a string",
                },
            ),
            (
                r#"{"sensor":"s","timestamp":"2021-01-01T00:00:00Z","value":null}"#,
                DecodeErrorKind::Type {
                    field: "value",
                    expected: "a number",
                    got: "null",
                },
            ),
            (
                r#"{"sensor":"s","timestamp":"2021-01-01T00:00:00Z","value":true}"#,
                DecodeErrorKind::Type {
                    field: "value",
                    expected: "a number",
                    got: "a boolean",
                },
            ),
            (
                r#"{"sensor":"s","timestamp":1636407489,"value":1}"#,
                DecodeErrorKind::Type {
                    field: "timestamp",
                    expected: "a string",
                    got: "a number",
                },
            ),
            (
                r#"{"sensor":7,"timestamp":"2021-01-01T00:00:00Z","value":1}"#,
                DecodeErrorKind::Type {
                    field: "sensor",
                    expected: "a string",
                    got: "a number",
                },
            ),
            (
                r#"{"sensor":"","timestamp":"2021-01-01T00:00:00Z","value":1}"#,
                DecodeErrorKind::Sensor(SensorIdError::Empty),
            ),
            (
                r#"{"sensor":"s","timestamp":"2021-02-30T00:00:00Z","value":1}"#,
                DecodeErrorKind::Timestamp {
                    text: "2021-02-30T00:00:00Z".into(),
                    reason: TimestampError::Date(2021, 2, 30),
                },
            ),
            (
                r#"{"sensor":"s","sensor":"t","timestamp":"2021-01-01T00:00:00Z","value":1}"#,
                DecodeErrorKind::Duplicate("sensor"),
            ),
        ];
        for (item, kind) in cases {
            let e = error(&format!("[{ok},{ok},{item},{ok}]"));
            assert_eq!(e.index, Some(2), "item {item}");
            assert_eq!(&e.kind, kind, "item {item}");
            assert_eq!(e.reason(), "invalid_measurement");
        }
    }

    #[test]
    fn sensor_longer_than_256_bytes_is_rejected() {
        let long = "x".repeat(257);
        let e = error(&format!(
            r#"[{{"sensor":"{long}","timestamp":"2021-01-01T00:00:00Z","value":1}}]"#
        ));
        assert_eq!(e.kind, DecodeErrorKind::Sensor(SensorIdError::TooLong(257)));
    }

    #[test]
    fn overflowing_numbers_are_rejected() {
        let e = error(r#"[{"sensor":"s","timestamp":"2021-01-01T00:00:00Z","value":1e400}]"#);
        assert!(
            matches!(e.kind, DecodeErrorKind::NotFinite | DecodeErrorKind::Syntax(_)),
            "{e:?}"
        );
    }

    #[test]
    fn nesting_is_bounded() {
        let nested = |depth: usize| {
            format!(
                r#"[{{"sensor":"s","timestamp":"2021-01-01T00:00:00Z","value":1,"x":{}1{}}}]"#,
                "[".repeat(depth),
                "]".repeat(depth)
            )
        };
        assert!(decode_str(&nested(MAX_DEPTH - 2)).is_ok());
        assert_eq!(error(&nested(MAX_DEPTH - 1)).kind, DecodeErrorKind::TooDeep);
        let bomb = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(decode_str(&bomb).is_err());
    }

    /// What a batch holds, comparable exactly (floats by their bits).
    fn contents(batch: &Batch<'_>) -> Vec<(String, u64, u64, String)> {
        let mut v: Vec<_> = batch
            .deltas()
            .map(|(s, d)| (s.to_string(), d.count, d.sum.to_bits(), d.latest.to_string()))
            .collect();
        v.sort();
        v
    }

    /// The plain-shape reader either declines or gives exactly what simd-json gives.
    fn fast_agrees_with_full(body: &[u8]) -> bool {
        let mut items = Vec::new();
        if !fast::scan(body, &mut items) {
            return false;
        }
        let fast = fold_items(
            std::str::from_utf8(body).expect("scan accepts ASCII only"),
            &mut items,
        );
        let mut copy = body.to_vec();
        let full = decode_full(&mut copy).unwrap_or_else(|e| {
            panic!(
                "fast path accepted what simd-json rejects ({e}): {:?}",
                String::from_utf8_lossy(body)
            )
        });
        assert_eq!(
            fast.measurements(),
            full.measurements(),
            "{:?}",
            String::from_utf8_lossy(body)
        );
        assert_eq!(
            contents(&fast),
            contents(&full),
            "{:?}",
            String::from_utf8_lossy(body)
        );
        true
    }

    #[test]
    fn the_plain_reader_takes_the_workload_and_agrees_with_simd_json() {
        for (measurements, sensors) in [(0, 1), (1, 1), (1000, 100), (5000, 7)] {
            let body = crate::workload::batch(measurements, sensors, 3);
            assert!(
                fast_agrees_with_full(body.as_bytes()),
                "{measurements} x {sensors} declined"
            );
        }
    }

    #[test]
    fn the_plain_reader_declines_what_it_does_not_read_and_agrees_on_the_rest() {
        let ts = r#""timestamp":"2021-11-08T21:38:09Z""#;
        let cases = [
            // Numbers of every form.
            ("-0", true),
            ("0", true),
            ("-0.0", false),
            ("0.0", true),
            ("0e0", true),
            ("-0e0", false),
            ("1", true),
            ("-17", true),
            ("123456789012345678", true),
            ("1234567890123456789", false),
            ("-123456789012345678", true),
            ("1.5", true),
            ("-123.45", true),
            ("1e2", true),
            ("1E+2", true),
            ("2.5e-3", true),
            ("1e400", false),
            ("-1e400", false),
            ("1.7976931348623157e308", true),
            ("4.9e-324", true),
            ("1e-400", true),
            ("0.1", true),
            ("9007199254740993", true),
            ("9007199254740993.0", true),
            ("01", false),
            ("1.", false),
            (".5", false),
            ("-", false),
            ("+1", false),
            ("1e", false),
            ("NaN", false),
            ("true", false),
            ("\"1\"", false),
        ];
        for (number, plain) in cases {
            let body = format!(r#"[{{"sensor":"s",{ts},"value":{number}}}]"#);
            assert_eq!(fast_agrees_with_full(body.as_bytes()), plain, "{body}");
        }
        let sensor_256 = "x".repeat(256);
        let sensor_257 = "x".repeat(257);
        for (body, plain) in [
            (
                format!(r#" [ {{ "sensor" : "s" , {ts} , "value" : 1 }} ] "#),
                true,
            ),
            (format!("[\t{{\"sensor\":\"s\",{ts},\"value\":1}}\r\n]"), true),
            (
                format!(r#"[{{"value":1,{ts},"sensor":"s","unit":"C","n":-2.5e3}}]"#),
                true,
            ),
            (format!(r#"[{{"sensor":"{sensor_256}",{ts},"value":1}}]"#), true),
            (format!(r#"[{{"sensor":"{sensor_257}",{ts},"value":1}}]"#), false),
            (format!(r#"[{{"sensor":"",{ts},"value":1}}]"#), false),
            (format!(r#"[{{"sensor":"a\"b",{ts},"value":1}}]"#), false),
            (format!(r#"[{{"sensor":"é",{ts},"value":1}}]"#), false),
            (format!("[{{\"sensor\":\"a\u{1}b\",{ts},\"value\":1}}]"), false),
            (format!(r#"[{{"sensor":"ab",{ts},"value":1}}]"#), true),
            (format!(r#"[{{"sensor":"s",{ts},"value":1,"x":null}}]"#), false),
            (format!(r#"[{{"sensor":"s",{ts},"value":1,"x":{{}}}}]"#), false),
            (
                format!(r#"[{{"sensor":"s",{ts},"value":1,"sensor":"t"}}]"#),
                false,
            ),
            (format!(r#"[{{"sensor":"s",{ts}}}]"#), false),
            (format!(r#"[{{"sensor":"s",{ts},"value":1}},]"#), false),
            (format!(r#"[{{"sensor":"s",{ts},"value":1,}}]"#), false),
            (format!(r#"[{{"sensor":"s",{ts},"value":1}}] x"#), false),
            (format!(r#"[{{"sensor":"s",{ts},"value":1}}"#), false),
            (format!(r#"{{"sensor":"s",{ts},"value":1}}"#), false),
            (
                r#"[{"sensor":"s","timestamp":"2021-02-30T00:00:00Z","value":1}]"#.to_owned(),
                false,
            ),
            (
                r#"[{"sensor":"s","timestamp":"2021-02-28 00:00:00.5-05:30","value":1}]"#.to_owned(),
                true,
            ),
            (r#"[{"sensor":"s","timestamp":1,"value":1}]"#.to_owned(), false),
            (
                r#"[{"sensor":1,"timestamp":"2021-02-28T00:00:00Z","value":1}]"#.to_owned(),
                false,
            ),
            ("[]".to_owned(), true),
            ("[{}]".to_owned(), false),
            ("".to_owned(), false),
        ] {
            assert_eq!(fast_agrees_with_full(body.as_bytes()), plain, "{body}");
        }
    }

    proptest! {
        #[test]
        fn the_plain_reader_never_disagrees_on_mangled_bodies(
            cut in 0usize..400, byte in any::<u8>(), seed in 1u64..50, n in 1usize..5,
        ) {
            let mut body = crate::workload::batch(n, 2, seed).into_bytes();
            let at = cut % body.len();
            body[at] = byte;
            fast_agrees_with_full(&body);
            body.truncate(at);
            fast_agrees_with_full(&body);
        }

        #[test]
        fn the_plain_reader_agrees_on_any_number_text(
            int in -1_000_000_000_000_000_000i128..1_000_000_000_000_000_000i128,
            frac in proptest::option::of("[0-9]{1,20}"), exp in proptest::option::of(-400i32..400),
        ) {
            let mut number = int.to_string();
            if let Some(f) = frac { number.push('.'); number.push_str(&f); }
            if let Some(e) = exp { number.push_str(&format!("e{e}")); }
            let body = format!(r#"[{{"sensor":"s","timestamp":"2021-11-08T21:38:09Z","value":{number}}}]"#);
            fast_agrees_with_full(body.as_bytes());
        }

        #[test]
        fn the_plain_reader_agrees_on_any_value_bits(bits in any::<u64>()) {
            let value = f64::from_bits(bits);
            if value.is_finite() {
                let body = format!(r#"[{{"sensor":"s","timestamp":"2021-11-08T21:38:09Z","value":{value:e}}},{{"sensor":"s","timestamp":"2021-11-08T21:38:09Z","value":{value}}}]"#);
                fast_agrees_with_full(body.as_bytes());
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&mut bytes);
        }

        #[test]
        fn mangled_valid_bodies_never_panic(cut in 0usize..120, byte in any::<u8>()) {
            let mut body = br#"[{"sensor":"s","timestamp":"2021-01-01T00:00:00Z","value":1.5,"x":[{"y":2}]}]"#.to_vec();
            let at = cut % body.len();
            body[at] = byte;
            let _ = decode(&mut body);
        }
    }
}
