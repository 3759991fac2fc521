//! `analysis.method`, `confidence` and `max_wait`.

use std::path::Path;
use std::time::Duration;

use crate::config::load::from_str;
use crate::config::{AnalysisMethod, AnalysisSpec, ConfigError};

fn config(analysis: &str) -> String {
    format!(
        r#"listeners:
  - addr: "127.0.0.1:0"
services:
  - name: api
    old: {{ backends: [{{ addr: "127.0.0.1:9001" }}] }}
    new: {{ backends: [{{ addr: "127.0.0.1:9002" }}] }}
    rollout:
      steps: [{{ weight: 5%, hold: 10m }}]
      analysis:
        max_error_rate: 1%
{analysis}"#
    )
}

fn spec(analysis: &str) -> AnalysisSpec {
    let config = from_str(
        &config(analysis),
        Path::new("/tmp/cutover-test/cutover.yaml"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let rollout = config.services[0].rollout.clone().expect("a rollout");
    rollout.analysis.expect("an analysis")
}

fn error(analysis: &str) -> ConfigError {
    let loaded = from_str(
        &config(analysis),
        Path::new("/tmp/cutover-test/cutover.yaml"),
    );
    let errors = match loaded {
        Ok(_) => panic!("expected an error for {analysis:?}"),
        Err(errors) => errors.0,
    };
    assert_eq!(errors.len(), 1, "{errors:#?}");
    errors.into_iter().next().expect("one error")
}

#[test]
fn the_method_defaults_to_threshold_and_statistical_to_99_percent() {
    let default = spec("");
    assert_eq!(default.method, AnalysisMethod::Threshold);
    assert_eq!(default.max_wait, None);
    let statistical = spec("        method: statistical\n        max_wait: 20m\n");
    assert_eq!(
        statistical.method,
        AnalysisMethod::Statistical { confidence: 0.99 }
    );
    assert_eq!(statistical.max_wait, Some(Duration::from_secs(1200)));
    let confident = spec("        method: statistical\n        confidence: 95%\n");
    assert_eq!(
        confident.method,
        AnalysisMethod::Statistical { confidence: 0.95 }
    );
}

#[test]
fn bad_values_are_errors_at_their_place() {
    let e = error("        method: bayesian\n");
    assert!(e.message.contains("threshold or statistical"), "{e}");
    assert_eq!((e.mark.line, e.mark.col), (11, 17), "{e}");
    let e = error("        method: statistical\n        confidence: 100%\n");
    assert!(e.message.contains("strictly between 50% and 100%"), "{e}");
    assert_eq!(e.mark.line, 12, "{e}");
    let e = error("        confidence: 95%\n");
    assert!(
        e.message.contains("only applies to `method: statistical`"),
        "{e}"
    );
    let e = error("        max_wait: 10s\n");
    assert!(
        e.message.contains("at least the analysis `interval`"),
        "{e}"
    );
    let e = error("        max_wait: soon\n");
    assert_eq!(e.mark.line, 11, "{e}");
}

#[test]
fn comparisons_alone_under_the_threshold_method_are_warned_of() {
    let warnings = |analysis: &str| {
        let yaml = config(analysis).replace("max_error_rate: 1%", "max_error_rate_increase: 1%");
        let loaded = from_str(&yaml, Path::new("/tmp/cutover-test/cutover.yaml"));
        crate::config::warnings(&loaded.unwrap_or_else(|e| panic!("{e}")))
    };
    let warned = warnings("");
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(warned[0].contains("waits for good"), "{warned:?}");
    assert!(warnings("        max_wait: 30m\n").is_empty());
    assert!(warnings("        method: statistical\n").is_empty());
    assert!(warnings("        max_p99_latency: 1s\n").is_empty());
}
