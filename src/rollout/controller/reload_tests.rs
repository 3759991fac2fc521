use super::*;

fn config(services: &[(&str, &str)]) -> Config {
    let dir = tempfile::tempdir().unwrap();
    crate::rollout::controller::tests::load(&crate::rollout::controller::tests::write_config(
        dir.path(),
        services,
    ))
}

const EVERY_30M: &str = "    rollout:\n      schedule: { start: 5%, step: 20%, every: 30m }\n";
const EVERY_10M: &str = "    rollout:\n      schedule: { start: 5%, step: 20%, every: 10m }\n";

/// What runs under `config`: each service with its rollout's steps fingerprint.
fn running(config: &Config) -> Vec<(String, Option<String>)> {
    config
        .services
        .iter()
        .map(|s| (s.name.clone(), Plan::of(s).map(|p| p.fingerprint)))
        .collect()
}

fn keep(name: &str, rollout: RolloutChange) -> Change {
    Change::Keep {
        name: name.to_string(),
        rollout,
    }
}

#[test]
fn the_same_config_keeps_every_rollout_in_its_place() {
    let old = config(&[("api", EVERY_30M), ("web", "")]);
    let new = config(&[("api", EVERY_30M), ("web", "")]);
    assert_eq!(
        diff(&running(&old), &new),
        vec![
            keep("api", RolloutChange::Same),
            keep("web", RolloutChange::Same)
        ]
    );
}

#[test]
fn new_steps_realign_and_a_new_or_dropped_rollout_is_said_so() {
    let old = config(&[("api", EVERY_30M), ("web", ""), ("shop", EVERY_30M)]);
    let new = config(&[("api", EVERY_10M), ("web", EVERY_30M), ("shop", "")]);
    assert_eq!(
        diff(&running(&old), &new),
        vec![
            keep("api", RolloutChange::StepsChanged),
            keep("web", RolloutChange::Added),
            keep("shop", RolloutChange::Dropped),
        ]
    );
}

#[test]
fn services_are_added_in_the_new_order_and_removed_last() {
    let old = config(&[("api", EVERY_30M), ("old", ""), ("legacy", "")]);
    let new = config(&[("fresh", EVERY_30M), ("api", EVERY_30M)]);
    assert_eq!(
        diff(&running(&old), &new),
        vec![
            Change::Add("fresh".to_string()),
            keep("api", RolloutChange::Same),
            Change::Remove("legacy".to_string()),
            Change::Remove("old".to_string()),
        ]
    );
}
