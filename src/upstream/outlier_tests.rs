use std::sync::atomic::AtomicBool;
use std::time::Duration;

use super::*;
use crate::config::Balance;
use crate::upstream::pool::{test_pool, Pool};

fn pool(weights: &[u32], balance: Balance) -> Pool {
    test_pool(weights, balance, Outlier::default())
}

fn ejections(pool: &Pool) -> &Ejections {
    &pool.backends[0].outlier.ejections
}

#[test]
fn outlier_ejection_respects_max_ejected() {
    let pool = pool(&[1, 1, 1, 1], Balance::RoundRobin);
    let now = 1_000;
    let threshold = Outlier::default().consecutive_failures;
    for i in 0..4 {
        for _ in 0..threshold {
            pool.backends[i].record_failure(&pool, now);
        }
    }
    // 50% of four: two ejected, the other two kept whatever they do.
    let ejected = pool.backends.iter().filter(|b| b.is_ejected(now)).count();
    assert_eq!(ejected, 2);
    let later = now + Outlier::default().eject_for.as_millis() as u64;
    assert!(pool.backends.iter().all(|b| !b.is_ejected(later)));
}

#[test]
fn a_lone_backend_is_never_ejected_and_success_resets() {
    let pool = pool(&[1], Balance::RoundRobin);
    for _ in 0..100 {
        assert!(!pool.backends[0].record_failure(&pool, 5));
    }
    let pool = self::pool(&[1, 1], Balance::RoundRobin);
    for _ in 0..Outlier::default().consecutive_failures - 1 {
        pool.backends[0].record_failure(&pool, 5);
    }
    pool.backends[0].record_success();
    assert!(!pool.backends[0].record_failure(&pool, 5));
}

#[test]
fn an_ejection_that_ran_out_gives_its_slot_back() {
    let pool = pool(&[1, 1, 1, 1], Balance::RoundRobin);
    let outlier = Outlier::default();
    let fail = |i: usize, now: u64| {
        (0..outlier.consecutive_failures).any(|_| pool.backends[i].record_failure(&pool, now))
    };
    assert!(fail(0, 1_000) && fail(1, 1_000));
    assert!(!fail(2, 1_000), "two of four is the limit");
    let later = 1_000 + outlier.eject_for.as_millis() as u64;
    assert!(fail(2, later) && fail(3, later), "the first two ran out");
    assert_eq!(ejections(&pool).taken(), 2);
    let shared = pool.backends[0].outlier.ejections.clone();
    drop(pool);
    assert_eq!(shared.taken(), 0, "dropped backends give their slots back");
}

/// Many threads fail every backend at once while time moves on, so ejections run out
/// and are taken again: at no instant may more than `max_ejected` be ejected.
#[test]
fn racing_failures_never_eject_past_the_limit() {
    let outlier = Outlier {
        consecutive_failures: 1,
        eject_for: Duration::from_millis(3),
        max_ejected: 0.3,
    };
    let pool = test_pool(&[1; 10], Balance::RoundRobin, outlier);
    let allowed = 3;
    let done = AtomicBool::new(false);
    let ejected_total = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        // The slot count is the invariant: a backend is marked ejected only after taking a
        // slot and unmarked before giving it back, so at every instant the ejected backends
        // are at most the slots taken. (Counting the marked backends by a scan would not
        // be one instant: a slot can move from a backend already scanned to a later one.)
        let monitor = scope.spawn(|| {
            let mut most = 0;
            while !done.load(Ordering::Acquire) {
                most = most.max(ejections(&pool).taken());
            }
            most
        });
        let workers: Vec<_> = (0..8)
            .map(|thread| {
                let (pool, ejected_total) = (&pool, &ejected_total);
                scope.spawn(move || {
                    for i in 0..20_000u64 {
                        let backend = &pool.backends[(i as usize + thread) % 10];
                        if backend.record_failure(pool, i / 8) {
                            ejected_total.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().unwrap();
        }
        done.store(true, Ordering::Release);
        let most = monitor.join().unwrap();
        assert!(most <= allowed, "{most} ejected at once, limit {allowed}");
    });
    assert!(
        ejected_total.load(Ordering::Relaxed) > allowed,
        "ejections ran out and recurred"
    );
    let holding = pool
        .backends
        .iter()
        .filter(|b| b.outlier.holds_slot())
        .count();
    assert_eq!(ejections(&pool).taken(), holding);
}
