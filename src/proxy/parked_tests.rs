//! The listener's idle watch and its set, on the paused clock.

use std::sync::atomic::AtomicI64;

use super::*;

fn entered(set: &IdleSet, timeout_ms: u64) -> Arc<IdleState> {
    let state = Arc::new(IdleState::new());
    set.enter(&state, Duration::from_millis(timeout_ms));
    state
}

#[tokio::test(start_paused = true)]
async fn the_watch_parks_quiet_connections_and_closes_them_at_their_deadline() {
    let set = IdleSet::default();
    let start = Instant::now();
    let (fresh, busy, answered, waiting) = (
        entered(&set, 1000),
        entered(&set, 1000),
        entered(&set, 1000),
        entered(&set, 1000),
    );
    busy.started.store(1, Relaxed);
    answered.started.store(1, Relaxed);
    answered.finished.store(1, Relaxed);
    waiting.waiting.store(true, Relaxed);
    assert_eq!(set.len(), 4);

    let at = |ms| start + Duration::from_millis(ms);
    assert_eq!(set.look(at(250)), Some(at(1000)));
    assert!(
        !fresh.park.load(Relaxed),
        "asked to park at the first look, before its first request"
    );
    assert!(
        !busy.park.load(Relaxed),
        "asked to park with a request in flight"
    );
    assert!(
        !answered.park.load(Relaxed),
        "asked to park right after an answer"
    );
    assert_eq!(answered.quiet_since(), at(250));
    assert_eq!(set.look(at(500)), Some(at(1000)));
    assert!(
        fresh.park.load(Relaxed),
        "a quiet connection is asked to park"
    );
    assert!(
        !waiting.park.load(Relaxed),
        "a parked connection is asked again"
    );

    // Never before the deadline, counted from the start or from the last answer.
    assert_eq!(set.look(at(999)), Some(at(1000)));
    assert!([&fresh, &busy, &answered, &waiting]
        .iter()
        .all(|state| !state.expired.load(Relaxed)));
    assert_eq!(set.look(at(1000)), Some(at(1250)));
    assert!(fresh.expired.load(Relaxed) && waiting.expired.load(Relaxed));
    assert!(
        !busy.expired.load(Relaxed),
        "closed with a request in flight"
    );
    assert!(!answered.expired.load(Relaxed));
    assert!(answered.park.load(Relaxed));
    assert_eq!(set.look(at(1250)), None);
    assert!(answered.expired.load(Relaxed));

    set.leave(&fresh);
    set.leave(&fresh);
    assert_eq!(set.len(), 3, "a closed connection leaves once");
    // A connection whose session kept its waker is told once; one that had no waker
    // yet is told again at each look.
    busy.task.set(std::task::Waker::noop().clone()).unwrap();
    set.stop_all();
    assert!([&busy, &answered, &waiting]
        .iter()
        .all(|state| state.stopping.load(Relaxed)));
    busy.stopping.store(false, Relaxed);
    answered.stopping.store(false, Relaxed);
    set.look(at(1250));
    assert!(!busy.stopping.load(Relaxed), "woken again though told");
    assert!(
        answered.stopping.load(Relaxed),
        "not told again with no waker"
    );
    let late = entered(&set, 1000);
    assert!(
        late.stopping.load(Relaxed),
        "not told on a stopped listener"
    );
    assert_eq!(set.len(), 4, "not watched on a stopped listener");
    // Its header timeout still holds through the drain.
    late.stopping.store(false, Relaxed);
    set.look(at(1250) + Duration::from_millis(1000));
    assert!(late.expired.load(Relaxed));
    assert!(
        late.stopping.load(Relaxed),
        "not told again at the next look"
    );
    set.leave(&late);
    for state in [busy, answered, waiting] {
        set.leave(&state);
    }
    assert_eq!(set.len(), 0);
}

#[tokio::test(start_paused = true)]
async fn an_empty_set_gives_back_its_slab_after_a_burst() {
    let set = IdleSet::default();
    let burst: Vec<_> = (0..2000).map(|_| entered(&set, 60_000)).collect();
    let last = entered(&set, 60_000);
    for state in &burst {
        set.leave(state);
    }
    set.look(Instant::now());
    assert!(set.capacity() >= 2000, "shrunk while an entry was in");
    set.leave(&last);
    set.look(Instant::now());
    assert_eq!(set.capacity(), 0);
    // And takes connections again as before.
    let again = entered(&set, 60_000);
    assert_eq!(set.len(), 1);
    set.leave(&again);
    assert_eq!(set.len(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_watch_looks_every_park_check_and_at_deadlines_and_through_a_drain() {
    let set = Arc::new(IdleSet::default());
    let open = Arc::new(AtomicI64::new(2));
    let (stop, stopped) = watch::channel(false);
    let state = entered(&set, 600);
    let watch = tokio::spawn({
        let (set, open) = (set.clone(), open.clone());
        let resume = |_, _| unreachable!("no connection parks out of the runtime here");
        async move { watch_idle(&set, resume, || open.load(Relaxed) == 0, stopped).await }
    });
    tokio::time::sleep(Duration::from_millis(590)).await;
    assert!(
        state.park.load(Relaxed),
        "not asked to park at the first look"
    );
    assert!(!state.expired.load(Relaxed), "closed before its deadline");
    // Due at 600 ms: the look at 500 ms set the next one there.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(state.expired.load(Relaxed), "not closed at its deadline");
    set.leave(&state);

    open.store(1, Relaxed);

    // A session still reading its first head when the listener stops: told to finish,
    // and closed at its deadline all the same.
    let draining = entered(&set, 1000);
    stop.send(true).unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert!(
        draining.stopping.load(Relaxed),
        "not told the listener stops"
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(
        draining.expired.load(Relaxed),
        "no header timeout in the drain"
    );
    assert!(
        !watch.is_finished(),
        "the watch ended with a connection open"
    );
    set.leave(&draining);
    open.store(0, Relaxed);
    tokio::time::sleep(PARK_CHECK).await;
    assert!(
        watch.is_finished(),
        "the watch outlived the listener's connections"
    );
}
