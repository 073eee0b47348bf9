//! A single-pass reader for the shape nearly every client sends: a JSON array of flat
//! objects whose values are ASCII strings without escapes and plain numbers.
//!
//! It answers "no" to anything else (an escape, a non-ASCII byte, a nested or literal
//! value, a missing or repeated field, an invalid sensor id or timestamp, any syntax
//! error) and leaves the body untouched; [`super::decode`] then runs the full simd-json
//! decoder, which gives the same batch or the precise error. So this reader only has to
//! be right when it says yes, and a differential test checks exactly that against the
//! full decoder. It skips simd-json's fixed cost per body and its general tape, which is
//! most of the time of a one-measurement post and a large part of a big batch's.

use crate::domain::{DateMemo, MAX_SENSOR_ID_BYTES, Timestamp};

/// One measurement read by [`scan`]: the sensor id as a byte range of the body.
#[derive(Debug, Clone, Copy)]
pub(super) struct Item {
    pub(super) sensor: (u32, u32),
    pub(super) value: f64,
    pub(super) at: Timestamp,
}

/// The fewest bytes a measurement takes in a body (without the comma after it):
/// `{"sensor":"s","timestamp":"2021-11-08T21:38:09","value":0},`.
const SHORTEST_ITEM: usize = 58;

/// Reads `body` into `items` (cleared first); `false` when the body is not of the plain
/// shape, or not valid, and the full decoder must decide.
pub(super) fn scan(body: &[u8], items: &mut Vec<Item>) -> bool {
    items.clear();
    if u32::try_from(body.len()).is_err() {
        return false;
    }
    // Room for as many measurements as the body can hold at most, so the buffer grows
    // in one step rather than by doubling.
    items.reserve(body.len() / SHORTEST_ITEM);
    Reader {
        body,
        pos: 0,
        dates: DateMemo::default(),
    }
    .array(items)
    .is_some()
}

struct Reader<'a> {
    body: &'a [u8],
    pos: usize,
    /// The last timestamp's date: a batch's timestamps mostly share it.
    dates: DateMemo,
}

impl Reader<'_> {
    fn array(&mut self, items: &mut Vec<Item>) -> Option<()> {
        self.whitespace();
        self.byte(b'[')?;
        self.whitespace();
        if self.peek() == Some(b']') {
            self.pos += 1;
        } else {
            loop {
                items.push(self.object()?);
                self.whitespace();
                match self.next()? {
                    b',' => self.whitespace(),
                    b']' => break,
                    _ => return None,
                }
            }
        }
        self.whitespace();
        (self.pos == self.body.len()).then_some(())
    }

    fn object(&mut self) -> Option<Item> {
        self.byte(b'{')?;
        let mut sensor = None;
        let mut at = None;
        let mut value = None;
        loop {
            self.whitespace();
            let field = self.key()?;
            self.whitespace();
            self.byte(b':')?;
            self.whitespace();
            match field {
                Field::Sensor => set_once(&mut sensor, self.string()?)?,
                Field::Timestamp => {
                    let (start, end) = self.string()?;
                    let at_ =
                        Timestamp::parse_ascii_remembering(&self.body[start..end], &mut self.dates).ok()?;
                    set_once(&mut at, at_)?;
                }
                Field::Value => set_once(&mut value, self.number()?)?,
                Field::Other => self.skip_plain_value()?,
            }
            self.whitespace();
            match self.next()? {
                b',' => {}
                b'}' => break,
                _ => return None,
            }
        }
        let (start, end) = sensor?;
        if end == start || end - start > MAX_SENSOR_ID_BYTES {
            return None;
        }
        Some(Item {
            sensor: (start as u32, end as u32),
            value: value?,
            at: at?,
        })
    }

    /// An object key: one of ours, compared in place, or any other plain string.
    fn key(&mut self) -> Option<Field> {
        let rest = &self.body[self.pos..];
        for (literal, field) in [
            (&br#""sensor""#[..], Field::Sensor),
            (&br#""timestamp""#[..], Field::Timestamp),
            (&br#""value""#[..], Field::Value),
        ] {
            if rest.starts_with(literal) {
                self.pos += literal.len();
                return Some(field);
            }
        }
        self.string().map(|_| Field::Other)
    }

    /// A string of printable ASCII without escapes, as the byte range of its contents.
    /// Eight bytes at a time while none of them is special.
    fn string(&mut self) -> Option<(usize, usize)> {
        self.byte(b'"')?;
        let start = self.pos;
        let mut i = start;
        while let Some(chunk) = self.body.get(i..i + 8) {
            let word = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
            if special(word) {
                break;
            }
            i += 8;
        }
        loop {
            match *self.body.get(i)? {
                b'"' => break,
                // Escapes, control characters and non-ASCII go to the full decoder.
                b'\\' | 0..=0x1f | 0x80.. => return None,
                _ => i += 1,
            }
        }
        self.pos = i + 1;
        Some((start, i))
    }

    /// A JSON number, converted as the full decoder converts it: an integer through
    /// `i64`; a number with a fraction or an exponent as the nearest `f64`, exactly (one
    /// IEEE operation on exact operands) when its digits fit 2^53 and its power of ten
    /// 10^22, otherwise by `fast_float2` (the standard library's algorithm, reading the
    /// bytes directly).
    fn number(&mut self) -> Option<f64> {
        let body = self.body;
        let start = self.pos;
        let mut i = start;
        let negative = body.get(i) == Some(&b'-');
        if negative {
            i += 1;
        }
        // Every digit goes into the mantissa; it is exact while there are at most 19.
        let mut mantissa = 0u64;
        let int_start = i;
        match body.get(i)? {
            b'0' => i += 1,
            b'1'..=b'9' => {
                while let Some(&d) = body.get(i)
                    && d.is_ascii_digit()
                {
                    mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
                    i += 1;
                }
            }
            _ => return None,
        }
        let int_digits = i - int_start;
        let mut fraction_digits = 0;
        if body.get(i) == Some(&b'.') {
            i += 1;
            let from = i;
            while let Some(&d) = body.get(i)
                && d.is_ascii_digit()
            {
                mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
                i += 1;
            }
            fraction_digits = i - from;
            if fraction_digits == 0 {
                return None;
            }
        }
        let mut exponent = 0i32;
        let mut has_exponent = false;
        if let Some(b'e' | b'E') = body.get(i) {
            i += 1;
            let exponent_negative = match body.get(i) {
                Some(b'-') => {
                    i += 1;
                    true
                }
                Some(b'+') => {
                    i += 1;
                    false
                }
                _ => false,
            };
            let from = i;
            while let Some(&d) = body.get(i)
                && d.is_ascii_digit()
            {
                exponent = exponent.saturating_mul(10).saturating_add(i32::from(d - b'0'));
                i += 1;
            }
            if i == from {
                return None;
            }
            if exponent_negative {
                exponent = -exponent;
            }
            has_exponent = true;
        }
        self.pos = i;
        if fraction_digits == 0 && !has_exponent {
            // Up to 18 digits fit an i64; longer integers go to the full decoder.
            if int_digits > 18 {
                return None;
            }
            let magnitude = mantissa as i64;
            return Some(if negative { -magnitude } else { magnitude } as f64);
        }
        if int_digits + fraction_digits <= 19 {
            // The sign of a negative zero is the full decoder's to judge.
            if negative && mantissa == 0 {
                return None;
            }
            let power = exponent.saturating_sub(fraction_digits as i32);
            if mantissa <= 1 << 53 && (-22..=22).contains(&power) {
                let m = mantissa as f64;
                let magnitude = if power >= 0 {
                    m * POWERS_OF_TEN[power as usize]
                } else {
                    m / POWERS_OF_TEN[power.unsigned_abs() as usize]
                };
                return Some(if negative { -magnitude } else { magnitude });
            }
        }
        // The same correctly rounded value as the standard library's (and simd-json's),
        // read from the bytes without checking them as UTF-8 again.
        let value: f64 = fast_float2::parse(&body[start..i]).ok()?;
        // Overflow to infinity, and the sign of a negative zero, are the full decoder's.
        (value.is_finite() && !(negative && value == 0.0)).then_some(value)
    }

    /// Skips the value of a field we do not read: a plain string or number only.
    fn skip_plain_value(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'-' | b'0'..=b'9' => self.number().map(drop),
            _ => None,
        }
    }

    fn whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.body.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }

    fn byte(&mut self, want: u8) -> Option<()> {
        (self.next()? == want).then_some(())
    }
}

#[derive(Clone, Copy)]
enum Field {
    Sensor,
    Timestamp,
    Value,
    Other,
}

/// 10^0 ..= 10^22, every one exact in an `f64`.
const POWERS_OF_TEN: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18,
    1e19, 1e20, 1e21, 1e22,
];

/// Whether any of the eight bytes in `word` ends or leaves a plain string: a quote, a
/// backslash, a control character or a non-ASCII byte.
fn special(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let quote = has_zero(word ^ (ONES * u64::from(b'"')));
    let backslash = has_zero(word ^ (ONES * u64::from(b'\\')));
    let control = word.wrapping_sub(ONES * 0x20) & !word & HIGH;
    (quote | backslash | control | (word & HIGH)) != 0
}

fn set_once<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    slot.replace(value).is_none().then_some(())
}
