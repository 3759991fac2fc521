//! When the decision log cannot be written: more traffic to NEW waits, a rollback does
//! not, and every lost record is counted.

use super::*;

fn unwritable(h: &mut Harness) -> std::path::PathBuf {
    // A regular file where the state directory should be: every append fails.
    let file = h._dir.path().join("not-a-directory");
    std::fs::write(&file, "").unwrap();
    h.controller.history.set_dir(file.clone());
    file
}

fn lost(h: &Harness) -> u64 {
    h.controller.metrics.history_errors_of("api")
}

#[tokio::test(start_paused = true)]
async fn without_a_decision_log_nothing_raises_news_weight_but_a_rollback_still_happens() {
    let mut h = harness(&[("api", CHECKED)], Box::new(LocalTraffic));
    let good = h.controller.config.state_dir.clone();
    unwritable(&mut h);
    let err = h.controller.control("api", Op::Start).unwrap_err();
    assert!(matches!(err, ControlError::Persist(_)), "{err:?}");
    assert_eq!(h.routed(), Weight::ZERO);
    assert_eq!(h.status().state, ServiceState::Pending);
    assert!(lost(&h) >= 1, "the lost records are counted");

    h.controller.history.set_dir(good.clone());
    h.controller.control("api", Op::Start).unwrap();
    assert_eq!(h.routed(), Weight::from_percent(5.0).unwrap());

    let before = lost(&h);
    unwritable(&mut h);
    h.controller.control("api", Op::Rollback).unwrap();
    assert_eq!(h.routed(), Weight::ZERO, "NEW is out, log or no log");
    assert_eq!(h.status().state, ServiceState::RolledBack);
    assert!(lost(&h) > before);

    // What was written reads back: the start, with the operator's record first.
    let entries =
        crate::evidence::log::read_since(&crate::evidence::log::history_path(&good, "api"), None)
            .unwrap();
    let kinds: Vec<&str> = entries.iter().map(|e| e.decision.kind()).collect();
    assert_eq!(kinds, vec!["operator", "step", "state"], "{entries:#?}");
}
