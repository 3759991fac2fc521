//! The packaging in `Dockerfile` and `deploy/`, checked with the tools that run offline:
//! hadolint, the image's build steps run on this machine (no Docker engine here),
//! `systemd-analyze verify`, and Kubernetes' own schemas (`kubernetes-validate`), plus
//! `cutover validate` on every config these files ship.
//!
//! A missing tool fails the test when `CI=true` and prints a loud SKIP otherwise (`.ci/run`
//! installs them). The image's release build (`cargo build --release --locked`) runs when
//! `CI=true` or `CUTOVER_PACKAGING_BUILD=1`; otherwise the layout is made from the test
//! binary and the build is reported as skipped.

mod support;

#[path = "packaging/checks.rs"]
mod checks;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use checks::*;
use support::free_port;

const KUBERNETES: &str = "deploy/kubernetes";
const FLEET: &str = "deploy/kubernetes/fleet";

#[test]
fn the_dockerfile_passes_hadolint_and_has_what_an_image_needs() {
    let text = read(&repo().join("Dockerfile"));
    let stages = instructions(&text, "FROM");
    assert_eq!(
        stages.len(),
        2,
        "a build stage and a runtime stage: {stages:?}"
    );
    assert!(stages[0].starts_with("rust:") && stages[0].ends_with(" AS build"));
    assert_eq!(stages[1], "debian:bookworm-slim");
    assert_eq!(
        instructions(&text, "USER"),
        ["10001:10001"],
        "a numeric non-root user"
    );
    assert_eq!(instructions(&text, "STOPSIGNAL"), ["SIGTERM"]);
    assert_eq!(instructions(&text, "EXPOSE"), ["8080 8443 9901"]);
    assert!(instructions(&text, "RUN")
        .iter()
        .any(|run| run.ends_with("scripts/image-layout.sh /out")));
    assert_eq!(instructions(&text, "COPY")[1], "--from=build /out/ /");
    assert_eq!(
        entrypoint(&text),
        ["cutover", "run", "-c", "/etc/cutover/cutover.yaml"]
    );

    let Some(hadolint) = tool("hadolint") else {
        return;
    };
    let out = run(Command::new(hadolint).arg("Dockerfile").current_dir(repo()));
    assert!(
        out.ok && out.text.trim().is_empty(),
        "hadolint Dockerfile:\n{}",
        out.text
    );
    // The same run on a known-bad file, so that a hadolint that checks nothing fails here.
    let bad = tempfile::tempdir().unwrap();
    std::fs::write(
        bad.path().join("Dockerfile"),
        "FROM debian\nRUN cd /tmp && ls\n",
    )
    .unwrap();
    let out = run(Command::new(tool("hadolint").unwrap())
        .arg("Dockerfile")
        .current_dir(bad.path()));
    assert!(
        !out.ok && out.text.contains("DL3006"),
        "hadolint let a bad file pass:\n{}",
        out.text
    );
}

#[test]
fn the_image_build_steps_lay_out_a_binary_that_validates_its_config() {
    let root = tempfile::tempdir().unwrap();
    let context = build_context(root.path());
    let image = root.path().join("image");
    let mut layout = Command::new(context.join("scripts/image-layout.sh"));
    layout.arg(&image);
    if ci() || std::env::var("CUTOVER_PACKAGING_BUILD").is_ok_and(|v| v == "1") {
        // The Dockerfile's own command; a target dir of its own keeps it off `cargo test`'s lock.
        layout.env("CARGO_TARGET_DIR", repo().join("target/packaging"));
    } else {
        loud_skip(
            "the image's `cargo build --release --locked` (set CI=true or \
             CUTOVER_PACKAGING_BUILD=1); laying out the test binary instead",
        );
        layout.env("CUTOVER_BINARY", support::binary());
    }
    let out = run(&mut layout);
    assert!(out.ok, "scripts/image-layout.sh:\n{}", out.text);

    let state = image.join("etc/cutover/state");
    assert_eq!(
        std::fs::read_link(&state).unwrap(),
        Path::new("../../var/lib/cutover")
    );
    assert!(state.canonicalize().unwrap().ends_with("var/lib/cutover"));
    assert!(
        !image.join("etc/cutover/write-target").exists(),
        ".dockerignore keeps local files out"
    );

    // The entrypoint's command, with the image's config, from the image's layout.
    let out = run(Command::new(image.join("usr/local/bin/cutover"))
        .args(["validate", "-c"])
        .arg(image.join("etc/cutover/cutover.yaml")));
    assert!(
        out.ok && out.text.contains(": ok ("),
        "validate in the image:\n{}",
        out.text
    );
}

#[tokio::test]
async fn the_healthcheck_passes_on_a_running_proxy_and_fails_on_a_stopped_one() {
    let command = healthcheck(&read(&repo().join("Dockerfile")));
    assert_eq!(command[0], "bash");
    let dir = tempfile::tempdir().unwrap();
    let admin = free_port();
    let config = dir.path().join("cutover.yaml");
    std::fs::write(&config, small_config(free_port(), admin)).unwrap();
    let mut proxy = Command::new(support::binary())
        .args(["run", "-c"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let up = support::eventually_async(Duration::from_secs(10), || async {
        probe(&command, admin).ok
    })
    .await;
    proxy.kill().unwrap();
    proxy.wait().unwrap();
    assert!(
        up,
        "HEALTHCHECK never passed against a running cutover: {}",
        probe(&command, admin).text
    );
    let down = probe(&command, admin);
    assert!(
        !down.ok,
        "HEALTHCHECK passed with nothing listening: {}",
        down.text
    );
    // An answer other than 200 is unhealthy too: a listener that is not cutover's admin API.
    let other = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = other.local_addr().unwrap().port();
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let (mut socket, _) = other.accept().await.unwrap();
        let _ = socket.write_all(b"HTTP/1.0 404 Not Found\r\n\r\n").await;
    });
    let wrong = tokio::task::spawn_blocking(move || probe(&command, port))
        .await
        .unwrap();
    assert!(!wrong.ok, "HEALTHCHECK passed on a 404: {}", wrong.text);
}

/// The HEALTHCHECK command as Docker runs it, against 127.0.0.1:`port`.
fn probe(command: &[String], port: u16) -> Ran {
    run(Command::new(&command[0])
        .args(&command[1..])
        .env("CUTOVER_HEALTHCHECK_PORT", port.to_string()))
}

#[test]
fn the_systemd_unit_verifies_and_keeps_its_sandbox() {
    let unit = read(&repo().join("deploy/systemd/cutover.service"));
    for line in [
        "ExecStart=/usr/local/bin/cutover run -c /etc/cutover/cutover.yaml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "ReadWritePaths=/var/lib/cutover",
        "StateDirectory=cutover",
        "RuntimeDirectory=cutover",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "LimitNOFILE=65536",
        "User=cutover",
        "KillMode=mixed",
    ] {
        assert!(unit.lines().any(|l| l == line), "the unit lacks `{line}`");
    }
    let Some(analyze) = tool("systemd-analyze") else {
        return;
    };
    verify_unit(&analyze, &unit).unwrap();
    // The check must be able to fail: a misspelt key is only a warning to systemd.
    let typo = unit.replace("ProtectSystem=strict", "ProtectSytem=strict");
    let err = verify_unit(&analyze, &typo).unwrap_err();
    assert!(err.contains("Unknown key"), "{err}");
}

#[test]
fn the_systemd_sample_config_validates_and_uses_the_units_state_directory() {
    let sample = read(&repo().join("deploy/systemd/etc/cutover/cutover.yaml"));
    assert!(sample.lines().any(|l| l == "state_dir: /var/lib/cutover"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cutover.yaml"), &sample).unwrap();
    std::fs::write(dir.path().join("admin.token"), "0123456789abcdef\n").unwrap();
    let out = validate(&dir.path().join("cutover.yaml"));
    assert!(out.ok, "the systemd sample config:\n{}", out.text);
}

#[test]
fn the_kubernetes_manifests_pass_the_kubernetes_schemas() {
    let Some(validator) = tool("kubernetes-validate") else {
        return;
    };
    for dir in [KUBERNETES, FLEET] {
        for file in yaml_files(&repo().join(dir)) {
            schema_check(&validator, &file).unwrap();
        }
    }
    // The check must be able to fail: a misspelt field.
    let bad = tempfile::tempdir().unwrap();
    let file = bad.path().join("deployment.yaml");
    std::fs::write(
        &file,
        read(&repo().join(KUBERNETES).join("deployment.yaml")).replace("replicas:", "replica:"),
    )
    .unwrap();
    let err = schema_check(&validator, &file).unwrap_err();
    assert!(err.contains("'replica' was unexpected"), "{err}");
}

#[test]
fn the_kubernetes_config_validates_with_the_deployments_mounts() {
    for dir in [KUBERNETES, FLEET] {
        let manifests = Manifests::load(&repo().join(dir));
        manifests.check_wiring();
        let scratch = tempfile::tempdir().unwrap();
        let config = manifests.config_in_pod(scratch.path());
        let out = validate(&config);
        if dir == FLEET && !out.ok && fleet_unknown(&out.text) {
            // Fleet mode is not in this build yet: check the rest, and say so loudly.
            loud_skip(&format!(
                "this cutover does not know `fleet:` yet; {dir}'s config was validated without it"
            ));
            std::fs::write(&config, without_fleet(&read(&config))).unwrap();
            let out = validate(&config);
            assert!(
                out.ok,
                "{dir}/configmap.yaml without its fleet section:\n{}",
                out.text
            );
        } else {
            assert!(out.ok, "{dir}/configmap.yaml:\n{}", out.text);
        }
    }
}

#[test]
fn the_fleet_variant_shares_the_base_services_and_differs_where_it_must() {
    for file in ["service.yaml", "servicemonitor.yaml"] {
        assert_eq!(
            read(&repo().join(KUBERNETES).join(file)),
            read(&repo().join(FLEET).join(file)),
            "{file} drifted"
        );
    }
    let base = Manifests::load(&repo().join(KUBERNETES));
    let fleet = Manifests::load(&repo().join(FLEET));
    assert_eq!(base.deployment["spec"]["replicas"].as_i64(), Some(1));
    assert_eq!(
        base.deployment["spec"]["strategy"]["type"].as_str(),
        Some("Recreate")
    );
    assert_eq!(
        base.volume("state")["persistentVolumeClaim"]["claimName"].as_str(),
        Some("cutover-state")
    );
    assert_eq!(fleet.deployment["spec"]["replicas"].as_i64(), Some(3));
    assert!(!fleet.volume("state")["emptyDir"].is_badvalue());
    assert_eq!(fleet.pdb["spec"]["minAvailable"].as_i64(), Some(2));
    let config = fleet.config();
    assert_eq!(config["fleet"]["prefix"].as_str(), Some("/cutover/prod"));
    assert_eq!(config["fleet"]["etcd"].as_vec().map(Vec::len), Some(3));
    assert!(
        config["fleet"]["instance"].is_badvalue(),
        "each pod must default to its own name"
    );
    assert!(base.config()["fleet"].is_badvalue());
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn validate(config: &Path) -> Ran {
    run(Command::new(support::binary())
        .args(["validate", "-c"])
        .arg(config))
}

/// A config that starts on loopback with the given ports; its backends are never asked.
fn small_config(listen: u16, admin: u16) -> String {
    format!(
        "listeners:\n  - addr: \"127.0.0.1:{listen}\"\nadmin:\n  addr: \"127.0.0.1:{admin}\"\n\
         services:\n  - name: app\n    old: {{ backends: [{{ addr: \"127.0.0.1:9\" }}] }}\n    \
         new: {{ backends: [{{ addr: \"127.0.0.1:9\" }}] }}\n"
    )
}
