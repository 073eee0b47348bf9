//! [`Limit`]: a counter with a ceiling, for requests in flight (`--max-in-flight`) and open
//! connections (`--max-connections`). Taking a slot never waits: past the ceiling the
//! caller refuses at once, which is the point (a queue would hold clients until they
//! time out and hold their memory meanwhile).

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

/// At most `max` holders at a time.
#[derive(Debug)]
pub struct Limit {
    max: usize,
    current: AtomicUsize,
}

impl Limit {
    /// A limit of `max` holders (0 refuses everything).
    pub fn new(max: usize) -> Self {
        Self {
            max,
            current: AtomicUsize::new(0),
        }
    }

    /// A slot until the permit is dropped, or `None` when `max` are taken.
    pub fn try_acquire(&self) -> Option<Permit<'_>> {
        self.take().then(|| Permit(self))
    }

    /// Like [`Limit::try_acquire`], for a permit that moves to another task.
    pub fn try_acquire_owned(self: &Arc<Self>) -> Option<OwnedPermit> {
        self.take().then(|| OwnedPermit(Arc::clone(self)))
    }

    /// How many slots are taken.
    pub fn current(&self) -> usize {
        self.current.load(Ordering::Relaxed)
    }

    /// The ceiling.
    pub fn max(&self) -> usize {
        self.max
    }

    // One read-modify-write on the way in and one on the way out; an overshoot by a
    // racing taker is undone at once, so the count never stays above `max`.
    fn take(&self) -> bool {
        if self.current.fetch_add(1, Ordering::AcqRel) < self.max {
            true
        } else {
            self.current.fetch_sub(1, Ordering::AcqRel);
            false
        }
    }

    fn give_back(&self) {
        self.current.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One slot of a [`Limit`], given back on drop (also when the request is cancelled).
#[derive(Debug)]
#[must_use = "the slot is given back when the permit is dropped"]
pub struct Permit<'a>(&'a Limit);

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.0.give_back();
    }
}

/// One slot of a shared [`Limit`], given back on drop.
#[derive(Debug)]
#[must_use = "the slot is given back when the permit is dropped"]
pub struct OwnedPermit(Arc<Limit>);

impl Drop for OwnedPermit {
    fn drop(&mut self) {
        self.0.give_back();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_past_the_ceiling_and_frees_on_drop() {
        let limit = Arc::new(Limit::new(2));
        let a = limit.try_acquire().unwrap();
        let b = limit.try_acquire_owned().unwrap();
        assert!(limit.try_acquire().is_none());
        assert!(limit.try_acquire_owned().is_none());
        assert_eq!(limit.current(), 2, "a refusal leaves the count as it was");
        drop(a);
        let c = limit.try_acquire().unwrap();
        drop(b);
        drop(c);
        assert_eq!(limit.current(), 0);
        assert!(Limit::new(0).try_acquire().is_none());
    }

    #[test]
    fn concurrent_takers_never_hold_more_than_the_ceiling() {
        let limit = Arc::new(Limit::new(3));
        let held = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (limit, held) = (Arc::clone(&limit), Arc::clone(&held));
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        if let Some(_permit) = limit.try_acquire() {
                            let now = held.fetch_add(1, Ordering::SeqCst) + 1;
                            assert!(now <= 3, "{now} holders");
                            held.fetch_sub(1, Ordering::SeqCst);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(limit.current(), 0);
    }
}
