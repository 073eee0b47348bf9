//! `IdempotencyKey` and `Fingerprint`: the client's retry key of a `POST /data` and the
//! digest of the body it was first sent with (IETF draft "The Idempotency-Key HTTP
//! Header Field").

use std::fmt;

use sha2::{Digest as _, Sha256};

/// The longest idempotency key we accept, in characters (all ASCII).
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// A validated idempotency key: 1 to 255 visible ASCII characters (0x21 to 0x7E).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdempotencyKey<'a>(&'a str);

/// Why a header value is not an idempotency key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdempotencyKeyError {
    /// The value is empty.
    #[error("Idempotency-Key must not be empty")]
    Empty,
    /// The value is longer than [`MAX_IDEMPOTENCY_KEY_LEN`].
    #[error("Idempotency-Key is {0} bytes long; the limit is {MAX_IDEMPOTENCY_KEY_LEN}")]
    TooLong(usize),
    /// The value has a byte outside 0x21..=0x7E (spaces, control characters, non-ASCII).
    #[error("Idempotency-Key may only hold visible ASCII characters (0x21 to 0x7E, no spaces)")]
    Character,
}

impl<'a> IdempotencyKey<'a> {
    /// Checks `raw` (the header value's bytes) and wraps it.
    ///
    /// # Errors
    /// [`IdempotencyKeyError`] naming the rule `raw` breaks.
    pub fn parse(raw: &'a [u8]) -> Result<Self, IdempotencyKeyError> {
        match raw.len() {
            0 => return Err(IdempotencyKeyError::Empty),
            n if n > MAX_IDEMPOTENCY_KEY_LEN => return Err(IdempotencyKeyError::TooLong(n)),
            _ => {}
        }
        if !raw.iter().all(|b| (0x21..=0x7e).contains(b)) {
            return Err(IdempotencyKeyError::Character);
        }
        // Every byte is ASCII, so this cannot fail.
        std::str::from_utf8(raw)
            .map(Self)
            .map_err(|_| IdempotencyKeyError::Character)
    }

    /// The key as a string slice.
    pub fn as_str(&self) -> &'a str {
        self.0
    }
}

/// SHA-256 of a request body's exact bytes after any Content-Encoding is undone.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of `body`.
    pub fn of(body: &[u8]) -> Self {
        Self(Sha256::digest(body).into())
    }

    /// The 32 digest bytes (how the durable store writes it).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Wraps 32 digest bytes read back from disk.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Lower-case hex, 64 characters (how stores keep it).
    pub fn to_hex(&self) -> String {
        let mut out = String::with_capacity(64);
        for b in self.0 {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        out
    }

    /// Parses the form [`Fingerprint::to_hex`] writes.
    pub fn from_hex(text: &str) -> Option<Self> {
        let b = text.as_bytes();
        if b.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in b.chunks_exact(2).enumerate() {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            out[i] = (hi * 16 + lo) as u8;
        }
        Some(Self(out))
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_visible_ascii_from_1_to_255_characters() {
        assert!(IdempotencyKey::parse(b"a").is_ok());
        assert!(IdempotencyKey::parse(b"!~8e0f-key/with:punctuation").is_ok());
        assert!(IdempotencyKey::parse(&[b'x'; 255]).is_ok());
    }

    #[test]
    fn rejects_empty_long_spaces_controls_and_non_ascii() {
        assert_eq!(IdempotencyKey::parse(b""), Err(IdempotencyKeyError::Empty));
        assert_eq!(
            IdempotencyKey::parse(&[b'x'; 256]),
            Err(IdempotencyKeyError::TooLong(256))
        );
        for bad in [&b"a b"[..], b"a\tb", b"\x7f", "é".as_bytes()] {
            assert_eq!(
                IdempotencyKey::parse(bad),
                Err(IdempotencyKeyError::Character),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn fingerprint_hex_round_trips_and_tells_bodies_apart() {
        let a = Fingerprint::of(b"[]");
        assert_eq!(Fingerprint::from_hex(&a.to_hex()), Some(a));
        assert_ne!(a, Fingerprint::of(b"[ ]"));
        assert_eq!(Fingerprint::from_hex("zz"), None);
    }
}
