//! A pool: the backends of one side of one service, and how to choose among them
//! (weighted round robin, weighted random, least request by power of two choices).
//!
//! Picking is on the hot path: no lock, no allocation; round robin is one atomic
//! increment over a precomputed sequence.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use rand::Rng;

use super::backend::Backend;
use super::PoolKind;
use crate::config::{Balance, Outlier};
use crate::stats::PoolStats;

/// The backends of one side of one service, and how to choose among them.
#[derive(Debug)]
pub struct Pool {
    pub kind: PoolKind,
    pub backends: Vec<Arc<Backend>>,
    weights: Vec<u32>,
    total_weight: u32,
    balance: Balance,
    /// One cycle of nginx's smooth weighted round robin, precomputed: picking is then a
    /// single atomic increment, with no lock and no per-pick arithmetic over weights.
    sequence: Vec<u16>,
    cursor: AtomicUsize,
    pub(super) outlier: Outlier,
    pub stats: Arc<PoolStats>,
}

impl Pool {
    pub fn new(
        kind: PoolKind,
        backends: Vec<(Arc<Backend>, u32)>,
        balance: Balance,
        outlier: Outlier,
        stats: Arc<PoolStats>,
    ) -> Pool {
        let weights: Vec<u32> = backends.iter().map(|(_, w)| (*w).max(1)).collect();
        let sequence = smooth_weighted_sequence(&weights);
        Pool {
            kind,
            backends: backends.into_iter().map(|(b, _)| b).collect(),
            total_weight: weights.iter().sum(),
            weights,
            balance,
            sequence,
            cursor: AtomicUsize::new(0),
            outlier,
            stats,
        }
    }

    pub fn has_available(&self, now_ms: u64) -> bool {
        self.backends.iter().any(|b| b.is_available(now_ms))
    }

    /// Chooses a backend that is available and not in `tried`.
    pub fn pick(&self, tried: &[usize], now_ms: u64) -> Option<usize> {
        let usable = |i: usize| self.backends[i].is_available(now_ms) && !tried.contains(&i);
        if self.backends.len() == 1 {
            return usable(0).then_some(0);
        }
        match self.balance {
            Balance::RoundRobin => {
                let len = self.sequence.len();
                let start = self.cursor.fetch_add(1, Relaxed);
                (0..len)
                    .map(|offset| usize::from(self.sequence[(start + offset) % len]))
                    .find(|&i| usable(i))
            }
            Balance::Random => {
                let mut rng = rand::rng();
                let point = rng.random_range(0..self.total_weight);
                let first = self.weighted_index(point);
                (0..self.backends.len())
                    .map(|offset| (first + offset) % self.backends.len())
                    .find(|&i| usable(i))
            }
            Balance::LeastRequest => self.power_of_two_choices(&usable),
        }
    }

    fn weighted_index(&self, mut point: u32) -> usize {
        for (index, weight) in self.weights.iter().enumerate() {
            if point < *weight {
                return index;
            }
            point -= weight;
        }
        self.weights.len() - 1
    }

    /// Two random candidates; the one with fewer requests in flight per unit of weight.
    fn power_of_two_choices(&self, usable: &dyn Fn(usize) -> bool) -> Option<usize> {
        let n = self.backends.len();
        let mut rng = rand::rng();
        let mut random_usable = |avoid: Option<usize>| {
            for _ in 0..4 {
                let i = rng.random_range(0..n);
                if usable(i) && Some(i) != avoid {
                    return Some(i);
                }
            }
            let start = rng.random_range(0..n);
            (0..n)
                .map(|offset| (start + offset) % n)
                .find(|&i| usable(i) && Some(i) != avoid)
        };
        let a = random_usable(None)?;
        let Some(b) = random_usable(Some(a)) else {
            return Some(a);
        };
        let load = |i: usize| f64::from(self.backends[i].in_flight()) / f64::from(self.weights[i]);
        Some(if load(b) < load(a) { b } else { a })
    }
}

/// nginx's smooth weighted round robin over one full cycle, weights reduced by their gcd
/// and scaled down when the cycle would be long.
fn smooth_weighted_sequence(weights: &[u32]) -> Vec<u16> {
    if weights.is_empty() {
        return Vec::new();
    }
    let divisor = weights.iter().copied().fold(0, gcd).max(1);
    let mut reduced: Vec<i64> = weights.iter().map(|w| i64::from(w / divisor)).collect();
    let total: i64 = reduced.iter().sum();
    const MAX_CYCLE: i64 = 10_000;
    if total > MAX_CYCLE {
        for w in &mut reduced {
            *w = (*w * MAX_CYCLE / total).max(1);
        }
    }
    let total: i64 = reduced.iter().sum();
    let mut current = vec![0i64; reduced.len()];
    let mut sequence = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for i in 0..reduced.len() {
            current[i] += reduced[i];
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        sequence.push(best as u16);
    }
    sequence
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// A pool of local addresses (nothing listens), sharing one set of counters as the
/// registry's pools do.
#[cfg(test)]
pub(super) fn test_pool(weights: &[u32], balance: Balance, outlier: Outlier) -> Pool {
    let stats = Arc::new(PoolStats::default());
    let ejections = Arc::new(super::outlier::Ejections::default());
    let backends = weights
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let addr = format!("127.0.0.1:{}", 10_000 + i);
            let timeouts = crate::config::Timeouts::default();
            let backend = Backend::new(&addr, timeouts, stats.clone(), ejections.clone(), 1024, 1);
            (Arc::new(backend), *w)
        })
        .collect();
    Pool::new(PoolKind::Old, backends, balance, outlier, stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::InFlight;

    fn pool(weights: &[u32], balance: Balance) -> Pool {
        test_pool(weights, balance, Outlier::default())
    }

    #[test]
    fn smooth_weighted_round_robin_matches_nginx() {
        // nginx's documented example: weights 5, 1, 1 give a a b a c a a.
        let sequence = smooth_weighted_sequence(&[5, 1, 1]);
        assert_eq!(sequence, vec![0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(smooth_weighted_sequence(&[2, 2]), vec![0, 1]);
    }

    #[test]
    fn long_cycles_are_scaled_down_but_keep_every_backend() {
        let sequence = smooth_weighted_sequence(&[1000; 30]);
        assert_eq!(sequence.len(), 30);
        let sequence = smooth_weighted_sequence(&[999, 1, 997]);
        assert!(sequence.len() <= 10_000);
        assert!(sequence.contains(&1));
    }

    #[test]
    fn round_robin_spreads_by_weight() {
        let pool = pool(&[3, 1], Balance::RoundRobin);
        let mut hits = [0; 2];
        for _ in 0..400 {
            hits[pool.pick(&[], 0).unwrap()] += 1;
        }
        assert_eq!(hits, [300, 100]);
    }

    #[test]
    fn pick_skips_tried_and_unavailable_backends() {
        for balance in [Balance::RoundRobin, Balance::Random, Balance::LeastRequest] {
            let pool = pool(&[1, 1, 1], balance);
            pool.backends[1].set_healthy(false);
            for _ in 0..50 {
                assert_eq!(pool.pick(&[0], 0), Some(2), "{balance:?}");
            }
            assert_eq!(pool.pick(&[0, 2], 0), None, "{balance:?}");
        }
    }

    #[test]
    fn least_request_prefers_the_idle_backend() {
        let pool = pool(&[1, 1], Balance::LeastRequest);
        let _busy: Vec<InFlight> = (0..5)
            .map(|_| pool.backends[0].try_start_request(0).unwrap())
            .collect();
        for _ in 0..50 {
            assert_eq!(pool.pick(&[], 0), Some(1));
        }
    }
}
