//! `Timestamp`: an instant in UTC at nanosecond precision, parsed from the RFC 3339 /
//! ISO 8601 forms the contract accepts and printed in the one form it answers with.
//!
//! Parsing is on the ingest hot path (one per measurement), so it is done by hand: fixed
//! positions, the calendar checked directly, and the instant computed with the
//! days-from-civil algorithm, without building chrono values. chrono prints the answer.

use std::fmt::{self, Write as _};

use chrono::{DateTime, Datelike as _, Timelike as _, Utc};

/// An instant, always held in UTC: seconds since the Unix epoch and nanoseconds within
/// the second. Field order makes the derived ordering the order of instants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    secs: i64,
    nanos: u32,
}

/// Why a string is not an accepted timestamp. The message names the rule that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    /// The text does not have the shape `YYYY-MM-DDTHH:MM:SS[.fraction][offset]`.
    #[error(
        "expected an RFC 3339 date-time such as 2021-11-08T21:38:09+00:00 \
         (YYYY-MM-DD, then T or a space, HH:MM:SS, an optional fraction, an optional offset)"
    )]
    Shape,
    /// The fraction has more than nine digits.
    #[error("fractional seconds have at most 9 digits")]
    FractionTooLong,
    /// The date does not exist (e.g. February 30th).
    #[error("{0:04}-{1:02}-{2:02} is not a date in the calendar")]
    Date(u32, u32, u32),
    /// Hour, minute or second out of range (leap seconds included).
    #[error("time of day {0:02}:{1:02}:{2:02} is out of range")]
    Time(u32, u32, u32),
    /// The offset is out of range.
    #[error("UTC offset must be between -23:59 and +23:59")]
    Offset,
}

/// The UTC offset of a parsed string, in seconds east of UTC.
type OffsetSeconds = i32;

/// The last valid date [`Timestamp::parse_ascii_remembering`] read (its ten bytes) and its
/// day number since 1970-01-01.
#[derive(Debug, Default, Clone, Copy)]
pub struct DateMemo {
    date: [u8; 10],
    days: Option<i64>,
}

/// The date of a timestamp being parsed: remembered, or read and still to be checked.
enum Date {
    Known(i64),
    Read(u32, u32, u32),
}

impl Timestamp {
    /// Parses the accepted forms: `T`, `t` or a space between date and time; an optional
    /// fraction with `.` or `,` and 1 to 9 digits; offset `Z`, `z`, `+HH:MM`, `+HHMM`,
    /// `+HH` (or `-`), or none, which is read as UTC.
    ///
    /// # Errors
    /// [`TimestampError`] naming the first rule the text breaks.
    pub fn parse(text: &str) -> Result<Self, TimestampError> {
        Self::parse_ascii(text.as_bytes())
    }

    /// [`Timestamp::parse`] of the bytes of a string (every accepted form is ASCII, so
    /// the caller need not check UTF-8 first).
    ///
    /// # Errors
    /// [`TimestampError`] naming the first rule the text breaks.
    pub fn parse_ascii(b: &[u8]) -> Result<Self, TimestampError> {
        Self::parse_ascii_remembering(b, &mut DateMemo::default())
    }

    /// [`Timestamp::parse_ascii`], remembering the last valid date in `memo`: a timestamp
    /// on the same date (most of a batch's) skips reading, checking and counting it.
    /// Gives exactly what [`Timestamp::parse_ascii`] gives, errors included.
    ///
    /// # Errors
    /// [`TimestampError`] naming the first rule the text breaks.
    pub fn parse_ascii_remembering(b: &[u8], memo: &mut DateMemo) -> Result<Self, TimestampError> {
        if b.len() < 19 {
            return Err(TimestampError::Shape);
        }
        let date = match memo.days {
            Some(days) if b[..10] == memo.date => Date::Known(days),
            _ => {
                let year = digits(b, 0, 4)?;
                expect(b, 4, b'-')?;
                let month = digits(b, 5, 2)?;
                expect(b, 7, b'-')?;
                Date::Read(year, month, digits(b, 8, 2)?)
            }
        };
        if !matches!(b[10], b'T' | b't' | b' ') {
            return Err(TimestampError::Shape);
        }
        let hour = digits(b, 11, 2)?;
        expect(b, 13, b':')?;
        let minute = digits(b, 14, 2)?;
        expect(b, 16, b':')?;
        let second = digits(b, 17, 2)?;

        let mut pos = 19;
        let mut nanos = 0u32;
        if pos < b.len() && matches!(b[pos], b'.' | b',') {
            pos += 1;
            let start = pos;
            while pos < b.len() && b[pos].is_ascii_digit() {
                pos += 1;
            }
            let len = pos - start;
            if len == 0 {
                return Err(TimestampError::Shape);
            }
            if len > 9 {
                return Err(TimestampError::FractionTooLong);
            }
            nanos = digits(b, start, len)? * 10u32.pow(9 - len as u32);
        }
        let offset = parse_offset(&b[pos..])?;

        let days = match date {
            Date::Known(days) => days,
            Date::Read(year, month, day) => {
                if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
                    return Err(TimestampError::Date(year, month, day));
                }
                let days = days_from_civil(i64::from(year), month, day);
                memo.date.copy_from_slice(&b[..10]);
                memo.days = Some(days);
                days
            }
        };
        // No leap seconds: second 60 has no instant of its own in Unix time.
        if hour > 23 || minute > 59 || second > 59 {
            return Err(TimestampError::Time(hour, minute, second));
        }
        let local = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second);
        Ok(Self {
            secs: local - i64::from(offset),
            nanos,
        })
    }

    /// Wraps an instant.
    pub fn from_datetime(at: DateTime<Utc>) -> Self {
        Self {
            secs: at.timestamp(),
            nanos: at.timestamp_subsec_nanos(),
        }
    }

    /// The instant as a chrono value.
    pub fn as_datetime(&self) -> DateTime<Utc> {
        // Parsed years 0000..=9999 (± a day of offset) and chrono-made instants are all
        // within chrono's range.
        DateTime::from_timestamp(self.secs, self.nanos).expect("a Timestamp is always in chrono's range")
    }

    /// An order-preserving 128-bit encoding (never 0), so a store can keep the latest
    /// instant in one atomic and update it with `fetch_max`.
    pub fn to_key(self) -> u128 {
        let secs = (i128::from(self.secs) - i128::from(i64::MIN)) as u128;
        (secs << 32) | u128::from(self.nanos)
    }

    /// The inverse of [`Timestamp::to_key`]; `None` for 0 or a key no timestamp has.
    pub fn from_key(key: u128) -> Option<Self> {
        if key == 0 {
            return None;
        }
        let secs = ((key >> 32) as i128 + i128::from(i64::MIN)) as i64;
        let nanos = (key & u128::from(u32::MAX)) as u32;
        DateTime::from_timestamp(secs, nanos).map(Self::from_datetime)
    }
}

/// The text of a [`Timestamp`] (what `Display` writes), on the stack: see
/// [`Timestamp::text`].
#[derive(Clone, Copy)]
pub struct TimestampText {
    buf: [u8; 48],
    len: usize,
}

impl TimestampText {
    /// The text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).expect("the text of a timestamp is ASCII")
    }
}

impl fmt::Write for TimestampText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        self.buf
            .get_mut(self.len..end)
            .ok_or(fmt::Error)?
            .copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

impl Timestamp {
    /// What `Display` writes, with the digits put in place by hand rather than through
    /// the formatting machinery (the GET answer writes one per request; a test checks
    /// both agree).
    pub fn text(&self) -> TimestampText {
        let mut out = TimestampText { buf: [0; 48], len: 0 };
        let t = self.as_datetime();
        let year = t.year();
        if !(0..=9999).contains(&year) {
            let _ = write!(out, "{self}");
            return out;
        }
        fn put(out: &mut TimestampText, mut value: u32, digits: usize) {
            for i in (0..digits).rev() {
                out.buf[out.len + i] = b'0' + (value % 10) as u8;
                value /= 10;
            }
            out.len += digits;
        }
        put(&mut out, year as u32, 4);
        out.buf[out.len] = b'-';
        out.len += 1;
        // Each separator follows a fixed-width number.
        for (value, separator) in [
            (t.month(), b'-'),
            (t.day(), b'T'),
            (t.hour(), b':'),
            (t.minute(), b':'),
        ] {
            put(&mut out, value, 2);
            out.buf[out.len] = separator;
            out.len += 1;
        }
        put(&mut out, t.second(), 2);
        let nanos = t.nanosecond();
        if nanos != 0 {
            out.buf[out.len] = b'.';
            out.len += 1;
            if nanos.is_multiple_of(1_000) {
                put(&mut out, nanos / 1_000, 6);
            } else {
                put(&mut out, nanos, 9);
            }
        }
        out.buf[out.len..out.len + 6].copy_from_slice(b"+00:00");
        out.len += 6;
        out
    }
}

impl fmt::Display for Timestamp {
    /// `YYYY-MM-DDTHH:MM:SS[.ffffff|.fffffffff]+00:00`: no fraction when it is zero, six
    /// digits for whole microseconds, nine otherwise.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.as_datetime();
        if (0..=9999).contains(&t.year()) {
            write!(
                f,
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
                t.year(),
                t.month(),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            )?;
        } else {
            // Only reachable by offsets that push year 0000 or 9999 over the edge.
            write!(f, "{}", t.format("%Y-%m-%dT%H:%M:%S"))?;
        }
        let nanos = t.nanosecond();
        if nanos != 0 {
            if nanos.is_multiple_of(1_000) {
                write!(f, ".{:06}", nanos / 1_000)?;
            } else {
                write!(f, ".{nanos:09}")?;
            }
        }
        f.write_str("+00:00")
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut text = String::with_capacity(35);
        write!(text, "{self}").map_err(serde::ser::Error::custom)?;
        serializer.serialize_str(&text)
    }
}

fn expect(b: &[u8], at: usize, want: u8) -> Result<(), TimestampError> {
    if b[at] == want {
        Ok(())
    } else {
        Err(TimestampError::Shape)
    }
}

/// Reads `len` ASCII digits at `at` as a number; the caller has checked the length.
fn digits(b: &[u8], at: usize, len: usize) -> Result<u32, TimestampError> {
    let mut n = 0u32;
    for &c in b.get(at..at + len).ok_or(TimestampError::Shape)? {
        if !c.is_ascii_digit() {
            return Err(TimestampError::Shape);
        }
        n = n * 10 + u32::from(c - b'0');
    }
    Ok(n)
}

/// Days in `month` of `year` in the proleptic Gregorian calendar (year 0 is a leap year).
fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to `year-month-day` (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month = i64::from(month);
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn parse_offset(b: &[u8]) -> Result<OffsetSeconds, TimestampError> {
    let sign = match b {
        [] => return Ok(0),
        [b'Z' | b'z'] => return Ok(0),
        [b'+', ..] => 1,
        [b'-', ..] => -1,
        _ => return Err(TimestampError::Shape),
    };
    let (hours, minutes) = match b.len() {
        3 => (digits(b, 1, 2)?, 0),
        5 => (digits(b, 1, 2)?, digits(b, 3, 2)?),
        6 if b[3] == b':' => (digits(b, 1, 2)?, digits(b, 4, 2)?),
        _ => return Err(TimestampError::Shape),
    };
    if hours > 23 || minutes > 59 {
        return Err(TimestampError::Offset);
    }
    Ok(sign * (hours * 3600 + minutes * 60) as i32)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn utc(text: &str) -> String {
        Timestamp::parse(text)
            .unwrap_or_else(|e| panic!("{text:?} rejected: {e}"))
            .to_string()
    }

    #[test]
    fn accepts_every_separator_offset_and_fraction_form() {
        let cases = [
            ("2021-11-08T21:38:09+00:00", "2021-11-08T21:38:09+00:00"),
            ("2021-11-08t21:38:09Z", "2021-11-08T21:38:09+00:00"),
            ("2021-11-08 21:38:09z", "2021-11-08T21:38:09+00:00"),
            ("2021-11-08T21:38:09", "2021-11-08T21:38:09+00:00"),
            ("2021-11-09T21:38:09+01:00", "2021-11-09T20:38:09+00:00"),
            ("2021-11-09T21:38:09+0100", "2021-11-09T20:38:09+00:00"),
            ("2021-11-09T21:38:09+01", "2021-11-09T20:38:09+00:00"),
            ("2021-11-09T21:38:09-05:30", "2021-11-10T03:08:09+00:00"),
            ("2021-11-09T21:38:09-00:00", "2021-11-09T21:38:09+00:00"),
            ("2021-11-08T21:38:09.5Z", "2021-11-08T21:38:09.500000+00:00"),
            ("2021-11-08T21:38:09,25Z", "2021-11-08T21:38:09.250000+00:00"),
            ("2021-11-08T21:38:09.000001Z", "2021-11-08T21:38:09.000001+00:00"),
            (
                "2021-11-08T21:38:09.123456789Z",
                "2021-11-08T21:38:09.123456789+00:00",
            ),
            (
                "2021-11-08T21:38:09.1234567Z",
                "2021-11-08T21:38:09.123456700+00:00",
            ),
            ("2021-11-08T21:38:09.000Z", "2021-11-08T21:38:09+00:00"),
            ("2020-02-29T00:00:00Z", "2020-02-29T00:00:00+00:00"),
            ("2021-01-01T00:30:00+01:00", "2020-12-31T23:30:00+00:00"),
            (
                "9999-12-31T23:59:59.999999999Z",
                "9999-12-31T23:59:59.999999999+00:00",
            ),
            ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00+00:00"),
        ];
        for (input, want) in cases {
            assert_eq!(utc(input), want, "input {input:?}");
        }
    }

    #[test]
    fn rejects_impossible_dates_times_and_free_text() {
        let cases = [
            ("2021-02-30T00:00:00Z", TimestampError::Date(2021, 2, 30)),
            ("2021-02-29T00:00:00Z", TimestampError::Date(2021, 2, 29)),
            ("2021-13-01T00:00:00Z", TimestampError::Date(2021, 13, 1)),
            ("2021-00-01T00:00:00Z", TimestampError::Date(2021, 0, 1)),
            ("2021-11-08T25:00:00Z", TimestampError::Time(25, 0, 0)),
            ("2021-11-08T24:00:00Z", TimestampError::Time(24, 0, 0)),
            ("2021-11-08T21:60:00Z", TimestampError::Time(21, 60, 0)),
            ("2021-11-08T23:59:60Z", TimestampError::Time(23, 59, 60)),
            ("2021-11-08T21:38:09+24:00", TimestampError::Offset),
            ("2021-11-08T21:38:09+01:60", TimestampError::Offset),
            ("2021-11-08T21:38:09.1234567891Z", TimestampError::FractionTooLong),
        ];
        for (input, want) in cases {
            assert_eq!(Timestamp::parse(input), Err(want), "input {input:?}");
        }
        for input in [
            "",
            "yesterday",
            "2021-11-08",
            "2021-11-08T21:38",
            "2021-11-08T21:38:09.Z",
            "2021-11-08T21:38:09 +00:00",
            "2021-11-08T21:38:09+1",
            "2021-11-08T21:38:09+001",
            "2021-11-08T21:38:09+01:0",
            "2021-11-08T21:38:09ZZ",
            "2021-11-08X21:38:09Z",
            "21-11-08T21:38:09Z",
            "2021/11/08T21:38:09Z",
            "+2021-11-08T21:38:09Z",
            "2021-11-08T21:38:09UTC",
            "1636407489",
            "２０２１-11-08T21:38:09Z",
        ] {
            assert_eq!(
                Timestamp::parse(input),
                Err(TimestampError::Shape),
                "input {input:?}"
            );
        }
    }

    #[test]
    fn key_round_trips_and_keeps_order() {
        let a = Timestamp::parse("2021-11-08T21:38:09.000000001Z").unwrap();
        let b = Timestamp::parse("2021-11-08T21:38:09.000000002Z").unwrap();
        let old = Timestamp::parse("0001-01-01T00:00:00Z").unwrap();
        assert!(old.to_key() < a.to_key() && a.to_key() < b.to_key());
        assert_ne!(old.to_key(), 0);
        for t in [a, b, old] {
            assert_eq!(Timestamp::from_key(t.to_key()), Some(t));
        }
        assert_eq!(Timestamp::from_key(0), None);
    }

    /// A whole 400-year Gregorian cycle (every leap rule), today's dates, and the last year.
    #[test]
    fn the_calendar_matches_chrono_day_by_day() {
        for (from, to) in [(0, 400), (1969, 2100), (9999, 9999)] {
            check_calendar(from, to);
        }
    }

    fn check_calendar(from_year: i32, to_year: i32) {
        let mut date = chrono::NaiveDate::from_ymd_opt(from_year, 1, 1).unwrap();
        let end = chrono::NaiveDate::from_ymd_opt(to_year, 12, 31).unwrap();
        while date <= end {
            let (y, m, d) = (date.year() as u32, date.month(), date.day());
            let want = date.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp();
            assert_eq!(days_from_civil(i64::from(y), m, d) * 86_400, want, "{date}");
            if d == 28 || d == 29 || d == 30 {
                assert_eq!(
                    days_in_month(y, m) == d,
                    date.succ_opt().unwrap().day() == 1,
                    "{date}"
                );
            }
            date = match date.succ_opt() {
                Some(next) => next,
                None => break,
            };
        }
    }

    #[test]
    fn text_is_what_display_writes_at_the_edges_of_the_years() {
        for text in [
            "0000-01-01T00:30:00+01:00",
            "0000-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999999-01:00",
            "2021-11-09T21:38:11.5Z",
            "2021-11-09T21:38:11.000001Z",
        ] {
            let at = Timestamp::parse(text).unwrap();
            assert_eq!(at.text().as_str(), at.to_string(), "{text}");
        }
    }

    proptest! {
        #[test]
        fn text_is_what_display_writes(secs in -62_135_596_800i64..253_402_300_799, nanos in 0u32..1_000_000_000, micros in any::<bool>()) {
            let nanos = if micros { nanos / 1000 * 1000 } else { nanos };
            let at = Timestamp::from_datetime(DateTime::from_timestamp(secs, nanos).unwrap());
            let text = at.text();
            prop_assert_eq!(text.as_str(), at.to_string());
        }

        #[test]
        fn formatting_then_parsing_gives_the_same_instant(
            secs in -62_135_596_800i64..253_402_300_799, nanos in 0u32..1_000_000_000
        ) {
            let t = Timestamp::from_datetime(DateTime::from_timestamp(secs, nanos).unwrap());
            prop_assert_eq!(Timestamp::parse(&t.to_string()), Ok(t));
        }

        #[test]
        fn key_order_matches_instant_order(a in any::<i32>(), b in any::<i32>(), n in 0u32..1_000_000_000) {
            let ta = Timestamp::from_datetime(DateTime::from_timestamp(i64::from(a) * 7, n).unwrap());
            let tb = Timestamp::from_datetime(DateTime::from_timestamp(i64::from(b) * 7, 0).unwrap());
            prop_assert_eq!(ta.cmp(&tb), ta.to_key().cmp(&tb.to_key()));
        }

        #[test]
        fn arbitrary_text_never_panics(s in "\\PC{0,40}") {
            let _ = Timestamp::parse(&s);
        }

        /// A remembered date changes nothing: every text of a sequence (dates shared,
        /// valid or not, then the rest of the text varied or mangled) parses to what it
        /// parses to alone, errors included.
        #[test]
        fn remembering_the_date_gives_what_parsing_alone_gives(
            texts in proptest::collection::vec(
                (
                    prop_oneof![Just("2021-11-08"), Just("2021-02-29"), Just("2020-02-29"), Just("2021-13-01"), Just("0000-01-01"), Just("2021-11-0x")],
                    prop_oneof![Just('T'), Just(' '), Just('x')],
                    "[0-9]{2}:[0-9]{2}:[0-9]{2}",
                    prop_oneof![Just(""), Just("Z"), Just(".5+02:00"), Just("-0530"), Just(",123456789Z"), Just("+24:00"), Just(".Z")],
                ),
                1..12,
            )
        ) {
            let mut memo = DateMemo::default();
            for (date, separator, time, rest) in texts {
                let text = format!("{date}{separator}{time}{rest}");
                prop_assert_eq!(
                    Timestamp::parse_ascii_remembering(text.as_bytes(), &mut memo),
                    Timestamp::parse_ascii(text.as_bytes()),
                    "{}", text
                );
            }
        }
    }
}
