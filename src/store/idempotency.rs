//! `Claims`: the Idempotency-Key records of the memory store: who is processing a key
//! right now, and which body a key completed with, each until it expires.
//!
//! The durable store uses these records too, with one more state: a claim whose batch is
//! being written to the log (it cannot expire until the write is decided), and completed
//! records that carry the wall-clock time they completed at, so they can be written to
//! disk and outlive a restart with the rest of their window.
//!
//! The Redis store keeps the same records in Redis (see `store::redis`); both follow the
//! rules of `CONTRACT.md`, section "Idempotency-Key".

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dashmap::{DashMap, mapref::entry::Entry};

use super::{Claim, ClaimToken};
use crate::domain::Fingerprint;

#[derive(Debug)]
enum State {
    Pending(ClaimToken),
    /// The durable store is writing this claim's batch; only the writer ends it.
    Committing(ClaimToken),
    /// Completed with this body, at this wall-clock time (Unix ms).
    Done(Fingerprint, u64),
}

/// Now, in Unix milliseconds.
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
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
            State::Committing(_) | State::Done(..) => unreachable!("a fresh record is pending"),
        };
        match self.records.entry(Box::from(key)) {
            Entry::Occupied(mut e)
                if e.get().expires <= now && !matches!(e.get().state, State::Committing(_)) =>
            {
                e.insert(fresh());
                claimed(e.get())
            }
            Entry::Occupied(e) => match &e.get().state {
                State::Pending(_) | State::Committing(_) => Claim::InProgress,
                State::Done(fingerprint, _) => Claim::Completed(*fingerprint),
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
        record.state = State::Done(fingerprint, unix_ms());
        record.expires = now + self.done_ttl;
        Some(Ok(()))
    }

    /// For the durable store, before its batch goes to the log: when `token` still holds
    /// `key`, the claim becomes a commit that does not expire, decided by
    /// [`Claims::finish`] or [`Claims::abort`]. Returns whether it did.
    pub fn begin_commit(&self, key: &str, token: &ClaimToken) -> bool {
        let now = Instant::now();
        let Some(mut record) = self.records.get_mut(key) else {
            return false;
        };
        if !matches!(&record.state, State::Pending(t) if t == token) || record.expires <= now {
            return false;
        }
        record.state = State::Committing(token.clone());
        true
    }

    /// Records `key` as completed with `fingerprint` at `at_ms` (Unix ms): the commit of
    /// its batch is durable, or recovery read it back. Records past the window are skipped.
    pub fn finish(&self, key: &str, fingerprint: Fingerprint, at_ms: u64) {
        let age = Duration::from_millis(unix_ms().saturating_sub(at_ms));
        let Some(left) = self.done_ttl.checked_sub(age).filter(|d| !d.is_zero()) else {
            self.records.remove(key);
            return;
        };
        self.records.insert(
            Box::from(key),
            Record {
                state: State::Done(fingerprint, at_ms),
                expires: Instant::now() + left,
            },
        );
    }

    /// Ends a commit that failed: the key is free again, so the client may retry.
    pub fn abort(&self, key: &str, token: &ClaimToken) {
        self.records
            .remove_if(key, |_, r| matches!(&r.state, State::Committing(t) if t == token));
    }

    /// Every live completed record: (key, fingerprint, completed at Unix ms).
    pub fn completed(&self) -> Vec<(Box<str>, Fingerprint, u64)> {
        let now = Instant::now();
        self.records
            .iter()
            .filter_map(|r| match r.state {
                State::Done(fp, at) if r.expires > now => Some((r.key().clone(), fp, at)),
                _ => None,
            })
            .collect()
    }

    /// Gives up `key` when `token` still holds it, so the client may retry at once.
    pub fn release(&self, key: &str, token: &ClaimToken) {
        self.records
            .remove_if(key, |_, r| matches!(&r.state, State::Pending(t) if t == token));
    }

    /// Forgets every record (a snapshot that failed to load halfway).
    pub fn clear(&self) {
        self.records.clear();
    }

    /// Frees every expired record (a commit in progress is never expired).
    pub fn purge(&self) {
        let now = Instant::now();
        self.records
            .retain(|_, r| r.expires > now || matches!(r.state, State::Committing(_)));
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

    #[test]
    fn a_commit_in_progress_neither_expires_nor_is_released_and_ends_done_or_free() {
        let claims = Claims::new(Duration::ZERO, Duration::from_secs(60));
        let Claim::Claimed(token) = claims.claim("k") else {
            panic!()
        };
        // Expired at once as a claim: too late to commit.
        assert!(!claims.begin_commit("k", &token));
        let claims = Claims::new(Duration::from_secs(30), Duration::from_secs(60));
        let Claim::Claimed(token) = claims.claim("k") else {
            panic!()
        };
        assert!(claims.begin_commit("k", &token));
        claims.release("k", &token);
        claims.purge();
        assert!(matches!(claims.claim("k"), Claim::InProgress));
        claims.abort("k", &token);
        let Claim::Claimed(token) = claims.claim("k") else {
            panic!("free after abort")
        };
        assert!(claims.begin_commit("k", &token));
        let fp = Fingerprint::of(b"[]");
        claims.finish("k", fp, unix_ms());
        assert!(matches!(claims.claim("k"), Claim::Completed(f) if f == fp));
        assert_eq!(claims.completed().len(), 1);
        // A record read back from disk after its window is dropped.
        claims.finish("old", fp, unix_ms() - 61_000);
        assert!(matches!(claims.claim("old"), Claim::Claimed(_)));
    }
}
