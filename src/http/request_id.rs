//! Request ids: the caller's `x-request-id` when it sends one (kept as is, no copy), and
//! otherwise `<process prefix>-<sequence>`: a random 8-hex-digit prefix drawn at start
//! and a counter, unique within the process and, with the prefix, across replicas.
//!
//! A generated id costs a counter step and a few bytes written into a per-thread arena
//! that the header value then shares; no UUID, no random numbers, no allocation per id.

use std::{
    cell::RefCell,
    sync::{
        LazyLock,
        atomic::{AtomicU64, Ordering},
    },
};

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use bytes::{BufMut as _, BytesMut};

/// The request and response header carrying the id.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Ids a thread takes from the process-wide counter at a time, so threads do not share
/// a cache line per request.
const BLOCK: u64 = 1024;
/// Arena size: room for ~150 ids before the next (shared, reference-counted) buffer.
const ARENA: usize = 4096;
/// Longest generated id: 8 hex digits, `-`, up to 20 decimal digits.
const MAX_LEN: usize = 29;

static NEXT_BLOCK: AtomicU64 = AtomicU64::new(0);

/// The process prefix: 8 lowercase hex digits from the standard library's random hasher
/// seed, so replicas started at the same instant still differ.
static PREFIX: LazyLock<[u8; 8]> = LazyLock::new(|| {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    let bits = hasher.finish() as u32;
    let mut out = [0u8; 8];
    for (i, b) in out.iter_mut().enumerate() {
        let nibble = (bits >> (28 - 4 * i)) & 0xf;
        *b = b"0123456789abcdef"[nibble as usize];
    }
    out
});

struct Local {
    next: u64,
    end: u64,
    arena: BytesMut,
}

thread_local! {
    static LOCAL: RefCell<Local> = RefCell::new(Local { next: 0, end: 0, arena: BytesMut::new() });
}

/// The id of a request: the caller's `x-request-id`, or a new one.
pub fn of(headers: &HeaderMap) -> HeaderValue {
    match headers.get(&X_REQUEST_ID) {
        Some(id) => id.clone(),
        None => generate(),
    }
}

/// A new `<prefix>-<sequence>` id.
pub fn generate() -> HeaderValue {
    LOCAL.with_borrow_mut(|local| {
        if local.next == local.end {
            local.next = NEXT_BLOCK.fetch_add(BLOCK, Ordering::Relaxed);
            local.end = local.next + BLOCK;
        }
        let sequence = local.next;
        local.next += 1;
        if local.arena.capacity() < MAX_LEN {
            local.arena = BytesMut::with_capacity(ARENA);
        }
        local.arena.put_slice(&PREFIX[..]);
        local.arena.put_u8(b'-');
        local
            .arena
            .put_slice(itoa::Buffer::new().format(sequence).as_bytes());
        HeaderValue::from_maybe_shared(local.arena.split().freeze())
            .expect("hex digits, a dash and decimal digits are a valid header value")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_callers_id_is_kept() {
        let mut headers = HeaderMap::new();
        headers.insert(&X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(of(&headers), "abc-123");
    }

    #[test]
    fn generated_ids_share_the_prefix_and_never_repeat() {
        let ids: Vec<String> = (0..10_000)
            .map(|_| of(&HeaderMap::new()).to_str().unwrap().to_owned())
            .collect();
        let unique: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
        let prefix = &ids[0][..9];
        assert!(prefix.ends_with('-') && prefix[..8].bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(ids.iter().all(|id| id.starts_with(prefix) && id.len() <= MAX_LEN));
    }

    #[test]
    fn threads_draw_distinct_ids() {
        let draw = || {
            std::thread::spawn(|| {
                (0..3000)
                    .map(|_| generate().to_str().unwrap().to_owned())
                    .collect::<Vec<_>>()
            })
        };
        let (a, b) = (draw(), draw());
        let mut all = a.join().unwrap();
        all.extend(b.join().unwrap());
        let unique: std::collections::HashSet<&String> = all.iter().collect();
        assert_eq!(unique.len(), 6000);
    }
}
