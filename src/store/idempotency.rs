//! `Claims`: the Idempotency-Key records of the memory store: who is processing a key
//! right now, and which body a key completed with, each until it expires.
//!
//! The Redis store keeps the same records in Redis (see `store::redis`); both follow the
//! rules of `CONTRACT.md`, section "Idempotency-Key".

use std::time::{Duration, Instant};

use dashmap::{DashMap, mapref::entry::Entry};

use super::{Claim, ClaimToken};
use crate::domain::Fingerprint;

#[derive(Debug)]
enum State {
    Pending(ClaimToken),
    Done(Fingerprint),
}

#[derive(Debug)]
struct Record {
    state: State,
    expires: Instant,
}

/// Idempotency records, each expiring on its own; [`Claims::purge`] frees expired ones.
#[derive(Debug)]
pub struct Claims {
    records: DashMap<Box<str>, Record, foldhash::fast::RandomState>,
    pending_ttl: Duration,
    done_ttl: Duration,
}

impl Claims {
    /// Records where a claim lasts `pending_ttl` and a completion `done_ttl`.
    pub fn new(pending_ttl: Duration, done_ttl: Duration) -> Self {
        Self {
            records: DashMap::default(),
            pending_ttl,
            done_ttl,
        }
    }

    /// Claims `key` for a request that starts now, unless a live record holds it.
    pub fn claim(&self, key: &str) -> Claim {
        let now = Instant::now();
        let fresh = || Record {
            state: State::Pending(ClaimToken::new()),
            expires: now + self.pending_ttl,
        };
        let claimed = |record: &Record| match &record.state {
            State::Pending(token) => Claim::Claimed(token.clone()),
            State::Done(_) => unreachable!("a fresh record is pending"),
        };
        match self.records.entry(Box::from(key)) {
            Entry::Occupied(mut e) if e.get().expires <= now => {
                e.insert(fresh());
                claimed(e.get())
            }
            Entry::Occupied(e) => match &e.get().state {
                State::Pending(_) => Claim::InProgress,
                State::Done(fingerprint) => Claim::Completed(*fingerprint),
            },
            Entry::Vacant(e) => claimed(e.insert(fresh()).value()),
        }
    }

    /// When `key` is still claimed by `token`: runs `apply`, and when it succeeds records
    /// the key as completed with `fingerprint`. `None` when the claim was lost (nothing
    /// run); `apply`'s result otherwise (on error the claim stays pending, to be released).
    pub fn complete<E>(
        &self,
        key: &str,
        token: &ClaimToken,
        fingerprint: Fingerprint,
        apply: impl FnOnce() -> Result<(), E>,
    ) -> Option<Result<(), E>> {
        let now = Instant::now();
        let mut record = self.records.get_mut(key)?;
        if !matches!(&record.state, State::Pending(t) if t == token) || record.expires <= now {
            return None;
        }
        if let Err(e) = apply() {
            return Some(Err(e));
        }
        record.state = State::Done(fingerprint);
        record.expires = now + self.done_ttl;
        Some(Ok(()))
    }

    /// Gives up `key` when `token` still holds it, so the client may retry at once.
    pub fn release(&self, key: &str, token: &ClaimToken) {
        self.records
            .remove_if(key, |_, r| matches!(&r.state, State::Pending(t) if t == token));
    }

    /// Frees every expired record.
    pub fn purge(&self) {
        let now = Instant::now();
        self.records.retain(|_, r| r.expires > now);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.records.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_claimed_once_completed_once_and_replayed_with_its_fingerprint() {
        let claims = Claims::new(Duration::from_secs(30), Duration::from_secs(60));
        let Claim::Claimed(token) = claims.claim("k") else {
            panic!("first claim")
        };
        assert!(matches!(claims.claim("k"), Claim::InProgress));
        let fp = Fingerprint::of(b"[]");
        let mut applied = 0;
        let mut apply = || {
            applied += 1;
            Ok::<(), ()>(())
        };
        assert_eq!(claims.complete("k", &token, fp, &mut apply), Some(Ok(())));
        assert_eq!(claims.complete("k", &token, fp, &mut apply), None);
        assert_eq!(applied, 1);
        assert!(matches!(claims.claim("k"), Claim::Completed(f) if f == fp));
    }

    #[test]
    fn a_failed_apply_leaves_the_claim_pending_for_release() {
        let claims = Claims::new(Duration::from_secs(30), Duration::from_secs(60));
        let Claim::Claimed(token) = claims.claim("k") else {
            panic!("first claim")
        };
        let fp = Fingerprint::of(b"[]");
        assert_eq!(
            claims.complete("k", &token, fp, || Err("full")),
            Some(Err("full"))
        );
        assert!(matches!(claims.claim("k"), Claim::InProgress));
        claims.release("k", &token);
        assert!(matches!(claims.claim("k"), Claim::Claimed(_)));
    }

    #[test]
    fn a_released_or_expired_claim_frees_the_key() {
        let claims = Claims::new(Duration::ZERO, Duration::ZERO);
        let Claim::Claimed(old) = claims.claim("k") else {
            panic!()
        };
        // Expired at once: the next request claims it and the old claimant lost it.
        let Claim::Claimed(new) = claims.claim("k") else {
            panic!()
        };
        assert_eq!(
            claims.complete("k", &old, Fingerprint::of(b""), || -> Result<(), ()> {
                panic!("applied")
            }),
            None
        );
        claims.release("k", &old);
        assert_eq!(claims.len(), 1, "a stale token must not release another claim");
        claims.release("k", &new);
        assert_eq!(claims.len(), 0);
        let _ = claims.claim("x");
        claims.purge();
        assert_eq!(claims.len(), 0);
    }
}
