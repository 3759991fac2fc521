//! Passive outlier detection: a backend that fails `consecutive_failures` times in a row
//! is ejected for `eject_for`, but never more than `max_ejected` of its pool at once.
//!
//! Design note: the limit is a per-pool count of ejected backends (`Ejections`), taken
//! with compare-and-swap *before* a backend is ejected and given back once its ejection
//! has ended, so two requests failing at the same moment can never both eject past it.
//! The count belongs to the (service, pool) and outlives routing snapshots, as the
//! backends do: a reload builds new `Pool`s around the same backends. An ejection that
//! has run out gives its slot back lazily, on the pool's next ejection attempt or when
//! the backend is dropped; until then it still counts, which errs on the side of ejecting
//! fewer backends, never more.
//!
//! Only the failure path does any of this: a success is one relaxed load.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::config::Outlier;

/// How many backends of one pool are ejected (or hold a slot while being ejected).
#[derive(Debug, Default)]
pub struct Ejections {
    ejected: AtomicUsize,
}

impl Ejections {
    /// Takes one ejection slot if fewer than `allowed` are taken.
    fn take(&self, allowed: usize) -> bool {
        self.ejected
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |taken| {
                (taken < allowed).then_some(taken + 1)
            })
            .is_ok()
    }

    fn give_back(&self) {
        self.ejected.fetch_sub(1, Ordering::AcqRel);
    }

    #[cfg(test)]
    pub(super) fn taken(&self) -> usize {
        self.ejected.load(Ordering::Acquire)
    }
}

/// One backend's outlier state.
#[derive(Debug)]
pub(super) struct OutlierState {
    /// `now_millis()` until which the backend is kept out; 0 when it holds no slot.
    ejected_until: AtomicU64,
    consecutive_failures: AtomicU32,
    ejections: Arc<Ejections>,
}

impl OutlierState {
    pub(super) fn new(ejections: Arc<Ejections>) -> OutlierState {
        OutlierState {
            ejected_until: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            ejections,
        }
    }

    #[inline]
    pub(super) fn is_ejected(&self, now_ms: u64) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > now_ms
    }

    #[inline]
    pub(super) fn record_success(&self) {
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
    }

    /// Counts a failure; returns true when this one got the backend ejected. `pool`
    /// holds the outlier state of every backend of the pool, this one included.
    pub(super) fn record_failure<'a>(
        &self,
        pool: impl ExactSizeIterator<Item = &'a OutlierState>,
        config: &Outlier,
        now_ms: u64,
    ) -> bool {
        let failures = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < config.consecutive_failures || self.is_ejected(now_ms) {
            return false;
        }
        let allowed = (pool.len() as f64 * config.max_ejected).floor() as usize;
        for peer in pool {
            peer.end_ejection_if_over(now_ms);
        }
        if !self.ejections.take(allowed) {
            return false;
        }
        let until = now_ms + config.eject_for.as_millis() as u64;
        let ejected =
            self.ejected_until
                .compare_exchange(0, until, Ordering::AcqRel, Ordering::Acquire);
        if ejected.is_err() {
            // Another request ejected this backend first: its slot is the one that counts.
            self.ejections.give_back();
            return false;
        }
        self.consecutive_failures.store(0, Ordering::Relaxed);
        true
    }

    /// Gives back the slot of an ejection that has run out (once, whoever else tries).
    fn end_ejection_if_over(&self, now_ms: u64) {
        let until = self.ejected_until.load(Ordering::Acquire);
        if until == 0 || until > now_ms {
            return;
        }
        let ended =
            self.ejected_until
                .compare_exchange(until, 0, Ordering::AcqRel, Ordering::Acquire);
        if ended.is_ok() {
            self.ejections.give_back();
        }
    }

    #[cfg(test)]
    pub(super) fn holds_slot(&self) -> bool {
        self.ejected_until.load(Ordering::Acquire) != 0
    }
}

impl Drop for OutlierState {
    fn drop(&mut self) {
        if *self.ejected_until.get_mut() != 0 {
            self.ejections.give_back();
        }
    }
}

#[cfg(test)]
#[path = "outlier_tests.rs"]
mod tests;
