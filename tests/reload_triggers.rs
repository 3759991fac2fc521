//! What asks for a reload (SPEC §8): SIGHUP to the real binary, `POST /reload`, the
//! `reload` command, and the file watcher (editor saves, Kubernetes ConfigMap symlink
//! swaps, changes that change nothing).

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::StatusCode;
use support::*;

// ---------------------------------------------------------------------------------------
// (3) SIGHUP (real binary) and POST /reload
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_running_binary() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let (port, admin_port) = (free_port(), free_port());
    let yaml = |w: &str| {
        let text = with_listeners(
            &simple_config(&[old.addr], &[new.addr], w, ""),
            &format!("listeners:\n  - addr: \"127.0.0.1:{port}\"\n"),
        );
        text.replace(
            "admin:\n  addr: \"127.0.0.1:0\"",
            &format!("admin:\n  addr: \"127.0.0.1:{admin_port}\""),
        )
    };
    // The config is a symlink to a file in another directory. The binary always runs its
    // file watcher, which watches the symlink's directory: rewriting the target in place
    // is invisible to it, so only the SIGHUP can make the proxy see the change.
    let tmp = tempfile::tempdir().unwrap();
    let (conf, real) = (tmp.path().join("conf"), tmp.path().join("real"));
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::create_dir_all(&real).unwrap();
    std::fs::write(real.join("cutover.yaml"), yaml("0%")).unwrap();
    std::os::unix::fs::symlink(real.join("cutover.yaml"), conf.join("cutover.yaml")).unwrap();
    let config = conf.join("cutover.yaml");

    let admin_addr: SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    let proxy_addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut process = Cutover::start(&config, admin_addr).await;
    let first = process.status().await;
    let v0 = first["config"]["version"].as_str().unwrap().to_string();
    assert_eq!(v0, version_on_disk(&config));
    assert_eq!(served_by(proxy_addr).await, "old");

    std::fs::write(real.join("cutover.yaml"), yaml("100%")).unwrap();
    let v1 = version_on_disk(&config);
    assert_ne!(v0, v1);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let before = admin_status(admin_addr).await.unwrap();
    assert_eq!(
        before["config"]["version"], v0,
        "precondition: the watcher should not see a change outside its directory, \
         or this test cannot tell a SIGHUP reload from a watcher reload"
    );

    process.signal(libc::SIGHUP);
    let reloaded = eventually_async(Duration::from_secs(5), || async {
        admin_status(admin_addr)
            .await
            .is_some_and(|s| s["config"]["version"] == v1)
    })
    .await;
    assert!(
        reloaded,
        "SIGHUP did not reload within 5s:\n{}",
        process.log()
    );
    assert!(
        process.child.try_wait().unwrap().is_none(),
        "SIGHUP stopped the process:\n{}",
        process.log()
    );
    let status = admin_status(admin_addr).await.unwrap();
    assert_eq!(status["services"][0]["weight"], 100.0, "{status}");
    for _ in 0..5 {
        assert_eq!(served_by(proxy_addr).await, "new");
    }
    let log = process.log();
    assert!(
        log.lines()
            .any(|l| l.contains("config reloaded") && l.contains("SIGHUP")),
        "the log should say the reload came from SIGHUP:\n{log}"
    );
}

#[tokio::test]
async fn post_reload_applies_the_file_and_answers_its_version() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let proxy = spawn_proxy(&simple_config(&[old.addr], &[new.addr], "0%", "")).await;
    let path = proxy.config_path();
    assert_eq!(served_by(proxy.addr).await, "old");

    save_by_rename(&path, &simple_config(&[old.addr], &[new.addr], "100%", ""));
    let expected = version_on_disk(&path);
    // Nothing changes until the reload is asked for (this proxy does not watch).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(served_by(proxy.addr).await, "old");

    let (status, body) = admin(proxy.app.admin_addr, "POST", "/reload").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["version"], expected.as_str(), "{body}");
    let (_, report) = admin(proxy.app.admin_addr, "GET", "/status").await;
    assert_eq!(report["config"]["version"], expected.as_str());
    assert!(report["config"]["last_error"].is_null(), "{report}");
    assert_eq!(report["services"][0]["weight"], 100.0);
    assert_eq!(metric(&proxy, RELOADS_OK), 1.0);
    for _ in 0..5 {
        assert_eq!(served_by(proxy.addr).await, "new");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reload_command_reloads_through_the_admin_api() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let proxy = spawn_proxy(&simple_config(&[old.addr], &[new.addr], "0%", "")).await;
    let path = proxy.config_path();
    save_by_rename(&path, &simple_config(&[old.addr], &[new.addr], "100%", ""));
    let expected = version_on_disk(&path);

    let output = tokio::process::Command::new(binary())
        .arg("reload")
        .arg("--admin")
        .arg(format!("http://{}", proxy.app.admin_addr))
        .env_remove("CUTOVER_ADMIN")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "`cutover reload` failed ({}): {stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains(&expected), "{stdout}");
    assert_eq!(running_version(&proxy), expected);
    assert_eq!(served_by(proxy.addr).await, "new");
}

// ---------------------------------------------------------------------------------------
// (4) The file watcher: ConfigMap symlink swaps, editor saves
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_symlink_swap_is_picked_up_by_the_watcher() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let yaml = |w: &str| simple_config(&[old.addr], &[new.addr], w, "");

    // The Kubernetes layout: cutover.yaml -> ..data/cutover.yaml, ..data -> ..TIMESTAMP.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let first = "..2026_01_01_00_00_00.1";
    std::fs::create_dir(dir.join(first)).unwrap();
    std::fs::write(dir.join(first).join("cutover.yaml"), yaml("0%")).unwrap();
    std::os::unix::fs::symlink(first, dir.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/cutover.yaml", dir.join("cutover.yaml")).unwrap();
    let proxy = spawn_proxy_in(tmp, &yaml("0%"), true).await;
    let path = proxy.config_path();
    assert!(
        std::fs::symlink_metadata(&path).unwrap().is_symlink(),
        "precondition: cutover.yaml should still be the ConfigMap symlink"
    );
    assert_eq!(served_by(proxy.addr).await, "old");
    let dir = proxy.dir.path();

    // Two updates in a row: the watch must survive the first swap.
    let steps = [
        (first, "..2026_01_01_00_01_00.2", "100%", "new"),
        (
            "..2026_01_01_00_01_00.2",
            "..2026_01_01_00_02_00.3",
            "0%",
            "old",
        ),
    ];
    for (previous, next, weight, pool) in steps {
        let reloads = metric(&proxy, RELOADS_OK);
        let swapped_at = Instant::now();
        configmap_swap(dir, previous, next, &yaml(weight));
        let expected = version_on_disk(&path);
        let seen = eventually(Duration::from_secs(5), || {
            running_version(&proxy) == expected
        })
        .await;
        assert!(
            seen,
            "the swap to {next} ({weight}) was not picked up within 5s; running {} (want {expected}), \
             last_error {:?}",
            running_version(&proxy),
            proxy.app.controller.status().config.last_error
        );
        eprintln!(
            "ConfigMap swap to {next} applied after {:?}",
            swapped_at.elapsed()
        );
        assert_eq!(
            routed_weight(&proxy),
            if pool == "new" { 100.0 } else { 0.0 }
        );
        assert_eq!(served_by(proxy.addr).await, pool);
        assert!(metric(&proxy, RELOADS_OK) > reloads);
        assert_eq!(
            metric(&proxy, RELOADS_ERROR),
            0.0,
            "a half-swapped state was read"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_picks_up_editor_saves_and_in_place_writes() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let yaml = |w: &str| simple_config(&[old.addr], &[new.addr], w, "");
    let proxy = spawn_proxy_in(tempfile::tempdir().unwrap(), &yaml("0%"), true).await;
    let path = proxy.config_path();

    for (how, weight, pool) in [
        ("renamed over", "100%", "new"),
        ("written in place", "0%", "old"),
    ] {
        if how == "renamed over" {
            save_by_rename(&path, &yaml(weight));
        } else {
            save_in_place(&path, &yaml(weight));
        }
        let expected = version_on_disk(&path);
        let seen = eventually(Duration::from_secs(5), || {
            running_version(&proxy) == expected
        })
        .await;
        assert!(seen, "a file {how} was not picked up within 5s");
        assert_eq!(served_by(proxy.addr).await, pool);
    }
    assert_eq!(metric(&proxy, RELOADS_ERROR), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_ignores_changes_that_leave_the_config_as_it_is() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let yaml = |w: &str| simple_config(&[old.addr], &[new.addr], w, "");
    let proxy = spawn_proxy_in(tempfile::tempdir().unwrap(), &yaml("0%"), true).await;
    let path = proxy.config_path();
    let generation = snapshot_generation(&proxy);

    // Another file in the directory, and the same bytes saved again.
    std::fs::write(proxy.dir.path().join("notes.txt"), "unrelated").unwrap();
    save_by_rename(&path, &yaml("0%"));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        metric(&proxy, RELOADS_OK),
        0.0,
        "an unchanged config should not count as a reload"
    );
    assert_eq!(
        snapshot_generation(&proxy),
        generation,
        "the snapshot was republished"
    );

    // Control: the watcher is alive and does see a real change.
    save_by_rename(&path, &yaml("100%"));
    let seen = eventually(Duration::from_secs(5), || metric(&proxy, RELOADS_OK) == 1.0).await;
    assert!(seen, "the watcher did not reload a changed file within 5s");
    assert_eq!(routed_weight(&proxy), 100.0);
}
