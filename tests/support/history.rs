//! Reading a service's decision log (`state_dir/<service>.history.jsonl`) back as JSON.

use std::path::Path;

use serde_json::Value;

/// Every record of `service`'s history in `state_dir`, oldest first.
pub fn history(state_dir: &Path, service: &str) -> Vec<Value> {
    let path = state_dir.join(format!("{service}.history.jsonl"));
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}")))
        .collect()
}

/// The records of one kind.
pub fn of_kind<'a>(records: &'a [Value], kind: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["kind"] == kind).collect()
}
