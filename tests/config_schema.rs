//! `cutover schema`: every config shipped in the repository validates against the schema
//! the binary prints, and broken configs do not.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use support::binary;
use yaml_rust2::{Yaml, YamlLoader};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The schema as `cutover schema` prints it (the binary, not a library call: what users get).
fn schema() -> jsonschema::Validator {
    let output = Command::new(binary()).arg("schema").output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let schema: Value = serde_json::from_slice(&output.stdout).expect("the schema is JSON");
    jsonschema::validator_for(&schema).expect("the schema is a valid JSON Schema")
}

/// YAML as the YAML language server hands it to the schema: plain scalars typed.
fn to_json(yaml: &Yaml) -> Value {
    match yaml {
        Yaml::Real(text) => text.parse::<f64>().map(Value::from).unwrap_or(Value::Null),
        Yaml::Integer(n) => Value::from(*n),
        Yaml::String(s) => Value::from(s.as_str()),
        Yaml::Boolean(b) => Value::from(*b),
        Yaml::Array(items) => Value::Array(items.iter().map(to_json).collect()),
        Yaml::Hash(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Yaml::String(s) => s.clone(),
                        other => format!("{other:?}"),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        Yaml::Null => Value::Null,
        other => panic!("unexpected YAML node {other:?}"),
    }
}

fn parse(text: &str, origin: &str) -> Value {
    let docs = YamlLoader::load_from_str(text).unwrap_or_else(|e| panic!("{origin}: {e}"));
    to_json(&docs[0])
}

fn errors(validator: &jsonschema::Validator, config: &Value) -> Vec<String> {
    validator
        .iter_errors(config)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

/// Every config file in the repository: the annotated example, the examples, and the
/// configs inside the deployment files (the ConfigMaps carry theirs as a string).
fn shipped_configs() -> Vec<(String, Value)> {
    let root = repo();
    let mut files: Vec<PathBuf> = vec![root.join("config/cutover.yaml")];
    let mut examples: Vec<PathBuf> = std::fs::read_dir(root.join("config/examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    examples.sort();
    assert!(!examples.is_empty(), "no example configs found");
    files.extend(examples);
    files.push(root.join("deploy/systemd/etc/cutover/cutover.yaml"));
    let mut configs: Vec<(String, Value)> = files
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path).unwrap();
            (display(path), parse(&text, &display(path)))
        })
        .collect();
    for map in [
        "deploy/kubernetes/configmap.yaml",
        "deploy/kubernetes/fleet/configmap.yaml",
    ] {
        let text = std::fs::read_to_string(root.join(map)).unwrap();
        let manifest = parse(&text, map);
        let inner = manifest["data"]["cutover.yaml"]
            .as_str()
            .unwrap_or_else(|| panic!("{map} has no data.cutover.yaml"));
        configs.push((format!("{map} (data.cutover.yaml)"), parse(inner, map)));
    }
    configs
}

fn display(path: &Path) -> String {
    path.strip_prefix(repo())
        .unwrap_or(path)
        .display()
        .to_string()
}

#[test]
fn every_shipped_config_validates_against_the_schema() {
    let validator = schema();
    let configs = shipped_configs();
    assert!(configs.len() >= 5, "{} configs", configs.len());
    for (name, config) in &configs {
        assert!(
            config["services"].as_array().is_some_and(|s| !s.is_empty()),
            "{name}: read no services, so the check would prove nothing"
        );
        let problems = errors(&validator, config);
        assert!(problems.is_empty(), "{name}:\n{}", problems.join("\n"));
    }
}

#[test]
fn broken_configs_fail_the_schema_where_they_are_broken() {
    let validator = schema();
    let good = "listeners: [{ addr: \"127.0.0.1:8080\" }]\nservices:\n  - name: api\n    old: { backends: [{ addr: \"127.0.0.1:9001\" }] }\n    new: { backends: [{ addr: \"127.0.0.1:9002\" }] }\n    rollout:\n      steps:\n        - weight: 5%\n          hold: 10m\n        - pause: {}\n        - weight: 100%\n";
    assert!(errors(&validator, &parse(good, "good")).is_empty());
    let cases = [
        // A typo in a key is an error, never a silent default.
        ("listenrs:", "listeners:", "/"),
        ("hold: 10m", "hold: 10", "/services/0/rollout/steps/0/hold"),
        (
            "hold: 10m",
            "hold: 1.5h",
            "/services/0/rollout/steps/0/hold",
        ),
        (
            "weight: 5%",
            "weight: five",
            "/services/0/rollout/steps/0/weight",
        ),
        ("name: api", "name: Api", "/services/0/name"),
        (
            "- pause: {}",
            "- pause: { for: 1m }",
            "/services/0/rollout/steps/1/pause",
        ),
        (
            "name: api",
            "name: api\n    balance: fastest",
            "/services/0/balance",
        ),
        (
            "\"127.0.0.1:9001\"",
            "\"127.0.0.1\"",
            "/services/0/old/backends/0/addr",
        ),
    ];
    for (from, to, path) in cases {
        let (from, to) = if from == "listenrs:" {
            (to, from)
        } else {
            (from, to)
        };
        let broken = good.replacen(from, to, 1);
        assert_ne!(broken, good, "{from} not in the config");
        let problems = errors(&validator, &parse(&broken, to));
        assert!(
            problems
                .iter()
                .any(|p| p.ends_with(&format!("at {path}")) || (path == "/" && p.ends_with("at "))),
            "`{to}` should fail at {path}; got {problems:?}"
        );
    }
}
