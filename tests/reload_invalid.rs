//! Hot reload (SPEC §8) of an invalid file: the running config stays, and the error is
//! reported with its position, whichever way the reload was asked for.

mod support;

use std::time::Duration;

use http::StatusCode;
use support::*;

// ---------------------------------------------------------------------------------------
// (2) An invalid file keeps the running config and is reported
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_file_keeps_the_running_config_and_is_reported() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let valid = simple_config(&[old.addr], &[new.addr], "20%", "");
    let proxy = spawn_proxy(&valid).await;
    let path = proxy.config_path();
    let version = running_version(&proxy);
    let generation = snapshot_generation(&proxy);

    // An unknown key at a known place, a value out of range, and broken YAML.
    let unknown_key = simple_config(&[old.addr], &[new.addr], "20%", "    colour: blue\n");
    let colour_line = unknown_key
        .lines()
        .position(|l| l.contains("colour"))
        .unwrap()
        + 1;
    let out_of_range = simple_config(&[old.addr], &[new.addr], "150%", "");
    let broken_yaml = format!("{valid}    old: [\n");
    let variants = [
        ("an unknown key", unknown_key, Some((colour_line, 5))),
        ("a weight of 150%", out_of_range, None),
        ("broken YAML", broken_yaml, None),
    ];

    let traffic = Traffic::start(proxy.addr, 4, 50);
    for (n, (what, text, exact)) in variants.iter().enumerate() {
        save_by_rename(&path, text);
        let (status, body) = admin(proxy.app.admin_addr, "POST", "/reload").await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "POST /reload with {what} should be refused: {body}"
        );
        let errors = body["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("400 body without an `errors` list for {what}: {body}"));
        assert!(!errors.is_empty(), "{what}: empty `errors`");
        assert!(
            errors
                .iter()
                .all(|e| has_location(e.as_str().unwrap_or(""), &path)),
            "{what}: every error should start with {}:LINE:COL: {errors:#?}",
            path.display()
        );
        if let Some((line, col)) = exact {
            let at = format!("{}:{line}:{col}", path.display());
            assert!(
                errors
                    .iter()
                    .any(|e| e.as_str().unwrap_or("").contains(&at)),
                "{what}: expected an error at {at}: {errors:#?}"
            );
        }

        let (status, report) = admin(proxy.app.admin_addr, "GET", "/status").await;
        assert_eq!(status, StatusCode::OK);
        let last_error = report["config"]["last_error"].as_str().unwrap_or_else(|| {
            panic!(
                "{what}: /status has no config.last_error: {}",
                report["config"]
            )
        });
        assert!(
            has_location(last_error, &path),
            "{what}: config.last_error lacks file:line:col: {last_error}"
        );
        assert_eq!(
            report["config"]["version"], version,
            "{what}: the running version changed"
        );
        assert_eq!(
            metric(&proxy, RELOADS_ERROR),
            (n + 1) as f64,
            "{what}: cutover_config_reloads_total{{result=\"error\"}} should count it"
        );
        assert_eq!(
            snapshot_generation(&proxy),
            generation,
            "{what}: a routing snapshot was published"
        );
        assert_eq!(routed_weight(&proxy), 20.0, "{what}: the weight changed");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let tally = traffic.stop().await;
    tally.assert_no_failures("while invalid configs were refused");
    assert!(
        tally.total() >= 50,
        "too little traffic to tell whether it was affected: {tally:?}"
    );
    assert_eq!(metric(&proxy, RELOADS_OK), 0.0);

    // Fixing the file reloads and clears the error.
    save_by_rename(&path, &simple_config(&[old.addr], &[new.addr], "60%", ""));
    let (status, body) = admin(proxy.app.admin_addr, "POST", "/reload").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let status = proxy.app.controller.status();
    assert_eq!(
        status.config.last_error, None,
        "a good reload should clear it"
    );
    assert_eq!(routed_weight(&proxy), 60.0);
}

#[tokio::test]
async fn an_invalid_file_seen_by_the_watcher_is_reported_and_not_applied() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let valid = simple_config(&[old.addr], &[new.addr], "0%", "");
    let proxy = spawn_proxy_in(tempfile::tempdir().unwrap(), &valid, true).await;
    let path = proxy.config_path();
    let version = running_version(&proxy);

    save_by_rename(
        &path,
        &simple_config(&[old.addr], &[new.addr], "100%", "    colour: blue\n"),
    );
    let reported = eventually(Duration::from_secs(5), || {
        proxy.app.controller.status().config.last_error.is_some()
    })
    .await;
    assert!(
        reported,
        "the watcher did not report the invalid file within 5s"
    );
    let last_error = proxy
        .app
        .controller
        .status()
        .config
        .last_error
        .clone()
        .unwrap();
    assert!(has_location(&last_error, &path), "{last_error}");
    assert!(metric(&proxy, RELOADS_ERROR) >= 1.0);
    assert_eq!(running_version(&proxy), version);
    assert_eq!(routed_weight(&proxy), 0.0);
    assert_eq!(served_by(proxy.addr).await, "old");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverting_a_broken_file_to_the_running_config_clears_the_reported_error() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let valid = simple_config(&[old.addr], &[new.addr], "0%", "");
    let proxy = spawn_proxy_in(tempfile::tempdir().unwrap(), &valid, true).await;
    let path = proxy.config_path();

    save_by_rename(
        &path,
        &simple_config(&[old.addr], &[new.addr], "100%", "    colour: blue\n"),
    );
    let reported = eventually(Duration::from_secs(5), || {
        proxy.app.controller.status().config.last_error.is_some()
    })
    .await;
    assert!(
        reported,
        "the watcher did not report the invalid file within 5s"
    );

    // The operator puts back exactly what runs. The file on disk is valid again and is
    // the running config: /status must stop reporting an error about a line that is gone.
    save_by_rename(&path, &valid);
    let cleared = eventually(Duration::from_secs(3), || {
        proxy.app.controller.status().config.last_error.is_none()
    })
    .await;
    let status = proxy.app.controller.status();
    assert!(
        cleared,
        "3s after the file was reverted to the running config, /status still reports \
         config.last_error = {:?} (version {}, file on disk {})",
        status.config.last_error,
        status.config.version,
        version_on_disk(&path)
    );
}
