//! The helpers of `tests/packaging.rs`: finding the offline tools, running them, reading the
//! Dockerfile and the Kubernetes manifests, and laying out what a container would see.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use yaml_rust2::{Yaml, YamlLoader};

use super::repo;

pub(crate) fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The path of an offline checker: on PATH, or where pip puts scripts. Missing: a failure
/// under `CI=true` (`.ci/run` installs it), a loud SKIP otherwise.
pub(crate) fn tool(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> =
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).collect();
    let scripts = Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ])
        .output();
    if let Ok(out) = scripts {
        dirs.push(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    }
    let found = dirs
        .into_iter()
        .map(|dir| dir.join(name))
        .find(|path| path.is_file());
    if found.is_none() {
        assert!(
            !ci(),
            "{name} is missing: .ci/run installs it; install it or fix .ci/run"
        );
        loud_skip(&format!(
            "{name} is not installed; its check did NOT run (see .ci/run)"
        ));
    }
    found
}

/// Says what did not run, past the test harness's capture of `eprintln!` (which would
/// hide it in a passing test).
pub(crate) fn loud_skip(what: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "\n*** SKIP: {what} ***\n");
}

/// What a command did: whether it exited 0, and its stdout and stderr together.
#[derive(Debug)]
pub(crate) struct Ran {
    pub(crate) ok: bool,
    pub(crate) text: String,
}

pub(crate) fn run(command: &mut Command) -> Ran {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ran {
        ok: out.status.success(),
        text,
    }
}

pub(crate) fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The arguments of every `KEYWORD` instruction of a Dockerfile, continuation lines joined.
pub(crate) fn instructions(dockerfile: &str, keyword: &str) -> Vec<String> {
    joined_lines(dockerfile)
        .iter()
        .filter_map(|line| line.strip_prefix(keyword)?.strip_prefix(' '))
        .map(|arguments| arguments.trim().to_string())
        .collect()
}

fn joined_lines(dockerfile: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for line in dockerfile
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
    {
        match line.strip_suffix('\\') {
            Some(head) => current.push_str(head),
            None => {
                current.push_str(line);
                lines.push(std::mem::take(&mut current));
            }
        }
    }
    lines
}

/// ENTRYPOINT followed by CMD, as the container runs them.
pub(crate) fn entrypoint(dockerfile: &str) -> Vec<String> {
    let mut argv: Vec<String> =
        serde_json::from_str(&instructions(dockerfile, "ENTRYPOINT")[0]).unwrap();
    argv.extend(serde_json::from_str::<Vec<String>>(&instructions(dockerfile, "CMD")[0]).unwrap());
    argv
}

/// The HEALTHCHECK's exec-form command.
pub(crate) fn healthcheck(dockerfile: &str) -> Vec<String> {
    let spec = &instructions(dockerfile, "HEALTHCHECK")[0];
    let (_, command) = spec.split_once("CMD ").expect("HEALTHCHECK ... CMD [...]");
    serde_json::from_str(command).expect("HEALTHCHECK CMD in exec form")
}

/// A copy of the repository as `docker build .` would send it: without what `.dockerignore`
/// names (the patterns it uses: plain paths, `*` within a name, `**/` for any depth).
pub(crate) fn build_context(scratch: &Path) -> PathBuf {
    let patterns: Vec<String> = read(&repo().join(".dockerignore"))
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    assert!(
        patterns.iter().any(|p| p == "target"),
        "the 5 GB target/ must stay out of the context"
    );
    let context = scratch.join("context");
    copy_tree(&repo(), &context, Path::new(""), &patterns);
    context
}

fn copy_tree(from: &Path, to: &Path, relative: &Path, ignore: &[String]) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let rel = relative.join(entry.file_name());
        if ignore.iter().any(|pattern| ignored(pattern, &rel)) {
            continue;
        }
        let target = to.join(entry.file_name());
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            copy_tree(&entry.path(), &target, &rel, ignore);
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path()).unwrap(), &target).unwrap();
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn ignored(pattern: &str, path: &Path) -> bool {
    let names: Vec<String> = path
        .iter()
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    let parts: Vec<&str> = pattern.split('/').collect();
    matches_parts(&parts, &names)
}

fn matches_parts(pattern: &[&str], names: &[String]) -> bool {
    match (pattern.first(), names.first()) {
        (None, None) => true,
        (Some(&"**"), _) => {
            (0..=names.len()).any(|skip| matches_parts(&pattern[1..], &names[skip..]))
        }
        (Some(part), Some(name)) => glob(part, name) && matches_parts(&pattern[1..], &names[1..]),
        _ => false,
    }
}

fn glob(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, tail)) => {
            name.starts_with(head) && name.len() >= head.len() + tail.len() && name.ends_with(tail)
        }
    }
}

/// `systemd-analyze verify` of `unit` in a scratch root holding the unit's commands and
/// the system's own units. Any output counts as a failure: systemd only warns about a
/// misspelt key or a bad value, and ignores them.
pub(crate) fn verify_unit(analyze: &Path, unit: &str) -> Result<(), String> {
    let root = tempfile::tempdir().unwrap();
    let install = |from: &Path, to: &str| {
        let target = root.path().join(to);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(from, target).unwrap();
    };
    install(&super::support::binary(), "usr/local/bin/cutover");
    install(Path::new("/bin/kill"), "bin/kill");
    copy_tree(
        Path::new("/lib/systemd/system"),
        &root.path().join("usr/lib/systemd/system"),
        Path::new(""),
        &[],
    );
    let units = root.path().join("etc/systemd/system");
    std::fs::create_dir_all(&units).unwrap();
    std::fs::write(units.join("cutover.service"), unit).unwrap();
    let out = run(Command::new(analyze)
        .arg("verify")
        .arg(format!("--root={}", root.path().display()))
        .args(["--man=no", "/etc/systemd/system/cutover.service"]));
    if out.ok && out.text.trim().is_empty() {
        Ok(())
    } else {
        Err(out.text)
    }
}

pub(crate) fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// Kubernetes' OpenAPI schemas, strict (unknown fields are errors). Kinds without a schema
/// there (the Prometheus Operator's ServiceMonitor, kustomize's file) are accepted only
/// for those two kinds; `Manifests::check_wiring` checks them by structure.
pub(crate) fn schema_check(validator: &Path, file: &Path) -> Result<(), String> {
    let out = run(Command::new(validator).arg("--strict").arg(file));
    let unchecked: Vec<&str> = out
        .text
        .lines()
        .filter(|l| !l.starts_with("INFO ") && !l.trim().is_empty())
        .filter(|l| {
            !(l.contains("Couldn't find schema for kind ServiceMonitor with api version monitoring.coreos.com/v1")
                || l.contains("Couldn't find schema for kind Kustomization with api version kustomize.config.k8s.io/v1beta1"))
        })
        .collect();
    let checked = out.text.contains(" passed for resource ") || is_extra_kind(file);
    if out.ok && unchecked.is_empty() && checked {
        Ok(())
    } else {
        Err(format!("{}:\n{}", file.display(), out.text))
    }
}

fn is_extra_kind(file: &Path) -> bool {
    let name = file.file_name().unwrap();
    name == "servicemonitor.yaml" || name == "kustomization.yaml"
}

/// The manifests of one directory, by kind.
#[derive(Debug)]
pub(crate) struct Manifests {
    dir: PathBuf,
    pub(crate) deployment: Yaml,
    pub(crate) configmap: Yaml,
    pub(crate) pdb: Yaml,
    pub(crate) services: Vec<Yaml>,
    pub(crate) servicemonitor: Yaml,
    pub(crate) kustomization: Yaml,
}

impl Manifests {
    pub(crate) fn load(dir: &Path) -> Manifests {
        let mut docs: Vec<Yaml> = Vec::new();
        for file in yaml_files(dir) {
            docs.extend(
                YamlLoader::load_from_str(&read(&file))
                    .unwrap_or_else(|e| panic!("{}: {e}", file.display())),
            );
        }
        let one = |kind: &str| {
            let mut found: Vec<Yaml> = docs
                .iter()
                .filter(|d| d["kind"].as_str() == Some(kind))
                .cloned()
                .collect();
            assert_eq!(found.len(), 1, "one {kind} in {}", dir.display());
            found.remove(0)
        };
        Manifests {
            dir: dir.to_path_buf(),
            deployment: one("Deployment"),
            configmap: one("ConfigMap"),
            pdb: one("PodDisruptionBudget"),
            services: docs
                .iter()
                .filter(|d| d["kind"].as_str() == Some("Service"))
                .cloned()
                .collect(),
            servicemonitor: one("ServiceMonitor"),
            kustomization: one("Kustomization"),
        }
    }

    pub(crate) fn config_text(&self) -> String {
        self.configmap["data"]["cutover.yaml"]
            .as_str()
            .expect("data: cutover.yaml")
            .to_string()
    }

    pub(crate) fn config(&self) -> Yaml {
        YamlLoader::load_from_str(&self.config_text())
            .unwrap()
            .remove(0)
    }

    fn pod(&self) -> &Yaml {
        &self.deployment["spec"]["template"]
    }

    fn container(&self) -> &Yaml {
        let containers = self.pod()["spec"]["containers"].as_vec().unwrap();
        assert_eq!(containers.len(), 1);
        &containers[0]
    }

    pub(crate) fn volume(&self, name: &str) -> &Yaml {
        let volumes = self.pod()["spec"]["volumes"].as_vec().unwrap();
        volumes
            .iter()
            .find(|v| v["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("volume {name}"))
    }

    fn mount(&self, name: &str) -> &Yaml {
        let mounts = self.container()["volumeMounts"].as_vec().unwrap();
        mounts
            .iter()
            .find(|m| m["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("mount {name}"))
    }

    fn port(&self, name: &str) -> i64 {
        let ports = self.container()["ports"].as_vec().unwrap();
        ports
            .iter()
            .find(|p| p["name"].as_str() == Some(name))
            .unwrap()["containerPort"]
            .as_i64()
            .unwrap()
    }

    /// What must agree across files for the pod to work: the config's ports and paths with
    /// the container's, probes, labels and selectors, the image's user, the hardening.
    pub(crate) fn check_wiring(&self) {
        let listed: BTreeSet<String> = self.kustomization["resources"]
            .as_vec()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_string())
            .collect();
        let present: BTreeSet<String> = yaml_files(&self.dir)
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .filter(|f| f != "kustomization.yaml")
            .collect();
        assert_eq!(
            listed,
            present,
            "kustomization.yaml lists every manifest of {}",
            self.dir.display()
        );

        let config = self.config();
        let port_of = |addr: &Yaml| {
            addr.as_str()
                .unwrap()
                .rsplit_once(':')
                .unwrap()
                .1
                .parse::<i64>()
                .unwrap()
        };
        assert_eq!(port_of(&config["listeners"][0]["addr"]), self.port("http"));
        assert_eq!(port_of(&config["admin"]["addr"]), self.port("admin"));
        let annotations = &self.pod()["metadata"]["annotations"];
        assert_eq!(
            annotations["prometheus.io/port"].as_str(),
            Some(self.port("admin").to_string().as_str())
        );
        assert_eq!(annotations["prometheus.io/path"].as_str(), Some("/metrics"));
        for probe in ["readinessProbe", "livenessProbe"] {
            let get = &self.container()[probe]["httpGet"];
            assert_eq!(
                (get["path"].as_str(), get["port"].as_str()),
                (Some("/healthz"), Some("admin")),
                "{probe}"
            );
        }

        // The ConfigMap as a directory: a subPath mount would never see an update.
        let config_mount = self.mount("config");
        assert_eq!(config_mount["mountPath"].as_str(), Some("/etc/cutover"));
        assert!(
            config_mount["subPath"].is_badvalue(),
            "no subPath on the config"
        );
        assert_eq!(
            self.volume("config")["configMap"]["name"].as_str(),
            self.configmap["metadata"]["name"].as_str()
        );
        assert_eq!(
            config["state_dir"].as_str(),
            self.mount("state")["mountPath"].as_str()
        );
        let token = Path::new(config["admin"]["token_file"].as_str().unwrap());
        assert_eq!(
            token.parent().unwrap().to_str(),
            self.mount("admin-token")["mountPath"].as_str()
        );

        let pod_security = &self.pod()["spec"]["securityContext"];
        assert_eq!(pod_security["runAsNonRoot"].as_bool(), Some(true));
        let dockerfile = read(&repo().join("Dockerfile"));
        let image_user = instructions(&dockerfile, "USER")[0]
            .split(':')
            .next()
            .unwrap()
            .to_string();
        assert_eq!(
            pod_security["runAsUser"].as_i64().map(|u| u.to_string()),
            Some(image_user)
        );
        let security = &self.container()["securityContext"];
        assert_eq!(security["readOnlyRootFilesystem"].as_bool(), Some(true));
        assert_eq!(security["allowPrivilegeEscalation"].as_bool(), Some(false));
        assert_eq!(security["capabilities"]["drop"][0].as_str(), Some("ALL"));
        assert!(self.container()["resources"]["requests"]["memory"]
            .as_str()
            .is_some());
        let grace = self.pod()["spec"]["terminationGracePeriodSeconds"]
            .as_i64()
            .unwrap();
        let pre_stop = self.container()["lifecycle"]["preStop"]["sleep"]["seconds"]
            .as_i64()
            .unwrap();
        let shutdown: i64 = config["limits"]["shutdown_grace"]
            .as_str()
            .unwrap()
            .trim_end_matches('s')
            .parse()
            .unwrap();
        assert!(
            grace > pre_stop + shutdown,
            "the pod is killed before cutover drains"
        );

        self.check_selectors();
    }

    fn check_selectors(&self) {
        let labels = &self.pod()["metadata"]["labels"];
        let selects = |selector: &Yaml, labels: &Yaml| {
            selector
                .as_hash()
                .unwrap()
                .iter()
                .all(|(k, v)| labels[k.as_str().unwrap()].as_str() == v.as_str())
        };
        assert!(selects(
            &self.deployment["spec"]["selector"]["matchLabels"],
            labels
        ));
        assert!(selects(
            &self.pdb["spec"]["selector"]["matchLabels"],
            labels
        ));
        for service in &self.services {
            assert!(selects(&service["spec"]["selector"], labels));
            for port in service["spec"]["ports"].as_vec().unwrap() {
                self.port(port["targetPort"].as_str().unwrap());
            }
        }
        let monitor = &self.servicemonitor["spec"];
        let scraped: Vec<&Yaml> = self
            .services
            .iter()
            .filter(|s| {
                selects(
                    &monitor["selector"]["matchLabels"],
                    &s["metadata"]["labels"],
                )
            })
            .collect();
        assert_eq!(
            scraped.len(),
            1,
            "the ServiceMonitor selects the admin Service only"
        );
        let endpoint = &monitor["endpoints"][0];
        assert_eq!(endpoint["path"].as_str(), Some("/metrics"));
        let port_names: Vec<&str> = scraped[0]["spec"]["ports"]
            .as_vec()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(port_names, [endpoint["port"].as_str().unwrap()]);
    }

    /// The ConfigMap's config written where the pod would see it, under `scratch`, with
    /// the Secret's token and the state volume at their mount paths (rebased onto `scratch`).
    pub(crate) fn config_in_pod(&self, scratch: &Path) -> PathBuf {
        let config = self.config();
        let mut text = self.config_text();
        for key in [&config["admin"]["token_file"], &config["state_dir"]] {
            let path = key.as_str().unwrap();
            let rebased = scratch.join(path.trim_start_matches('/'));
            text = text.replace(&format!(" {path}\n"), &format!(" {}\n", rebased.display()));
        }
        let token = scratch.join(
            config["admin"]["token_file"]
                .as_str()
                .unwrap()
                .trim_start_matches('/'),
        );
        std::fs::create_dir_all(token.parent().unwrap()).unwrap();
        std::fs::write(&token, "0123456789abcdef\n").unwrap();
        std::fs::create_dir_all(
            scratch.join(
                config["state_dir"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches('/'),
            ),
        )
        .unwrap();
        let dir = scratch.join("etc/cutover");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cutover.yaml"), text).unwrap();
        dir.join("cutover.yaml")
    }
}

/// Whether `cutover validate` refused only the `fleet:` key (a build without fleet mode).
pub(crate) fn fleet_unknown(output: &str) -> bool {
    output.contains("unknown key `fleet`") && output.contains(": 1 error(s)")
}

/// The config without its top-level `fleet:` section.
pub(crate) fn without_fleet(config: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in config.lines() {
        if line.starts_with("fleet:") {
            inside = true;
        } else if inside && !line.is_empty() && !line.starts_with(' ') {
            inside = false;
        }
        if !inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}
