//! One broken edit is one reload error, however often the rest of the directory is written.

mod support;

use std::time::Duration;

use support::*;

/// `cutover_config_reloads_total{result=...}` from a live scrape.
async fn reloads(proxy: &TestProxy, result: &str) -> u64 {
    let got = send(proxy.app.admin_addr, get("127.0.0.1", "/metrics")).await;
    let prefix = format!("cutover_config_reloads_total{{result=\"{result}\"}} ");
    got.body
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in\n{}", got.body))
}

#[tokio::test]
async fn unrelated_writes_next_to_a_broken_config_do_not_reload_it_again() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let yaml = simple_config(&[old.addr], &[new.addr], "0%", "");
    let proxy = spawn_proxy_in(tempfile::tempdir().unwrap(), &yaml, true).await;
    let config = proxy.config_path();

    std::fs::write(
        &config,
        yaml.replace("weight: 0%", "weight: 0%\n    bogus: 1"),
    )
    .unwrap();
    let errors = || async { reloads(&proxy, "error").await };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while errors().await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the broken edit was not seen"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(errors().await, 1);

    // A hook's log and an editor's swap file, written 50 times over ~1.5 s.
    for i in 0..50 {
        let name = if i % 2 == 0 {
            "hook.log"
        } else {
            ".cutover.yaml.swp"
        };
        std::fs::write(proxy.dir.path().join(name), format!("line {i}\n")).unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    // The same broken bytes written again are not a change either.
    std::fs::write(&config, std::fs::read(&config).unwrap()).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        errors().await,
        1,
        "unrelated writes re-validated the broken config"
    );
    assert_eq!(
        std::fs::read_to_string(proxy.dir.path().join("hook.log")).unwrap(),
        "line 48\n"
    );

    // Fixing it (with a change, so that there is something new to load) is seen.
    std::fs::write(&config, yaml.replace("weight: 0%", "weight: 1%")).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while reloads(&proxy, "ok").await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the fix was not loaded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(errors().await, 1);
}
