//! Reading the proxy's decision log (`state_dir/<service>.history.jsonl`): the
//! scenario runner judges a run from what the proxy recorded, not from what
//! the runner believes it did.

use std::path::Path;

use serde_json::Value;

/// One record, reduced to what the runner needs.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// A check with its outcome (`pass`, `fail`, `inconclusive`) at NEW's weight.
    Check {
        outcome: String,
        weight: f64,
    },
    Trip,
    /// A state change to `to` (e.g. `rolled_back (trip: …)`).
    State {
        to: String,
    },
    Other,
}

impl Record {
    pub fn is_rollback(&self) -> bool {
        matches!(self, Record::State { to } if to.starts_with("rolled_back"))
    }
}

/// Every complete record of the file, oldest first. A missing file is an
/// empty history (the proxy has decided nothing yet); a torn last line (being
/// written) is left for the next read; any other bad line is an error.
pub fn read(path: &Path) -> Result<Vec<Record>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let complete = match text.rfind('\n') {
        Some(end) => &text[..end],
        None => "",
    };
    complete
        .lines()
        .enumerate()
        .map(|(n, line)| {
            parse(line)
                .ok_or_else(|| format!("{}:{}: not a decision: {line}", path.display(), n + 1))
        })
        .collect()
}

fn parse(line: &str) -> Option<Record> {
    let value: Value = serde_json::from_str(line).ok()?;
    let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_string);
    Some(match value.get("kind")?.as_str()? {
        "check" => Record::Check {
            outcome: text("outcome")?,
            weight: value.get("weight")?.as_f64()?,
        },
        "trip" => Record::Trip,
        "state" => Record::State { to: text("to")? },
        _ => Record::Other,
    })
}

/// Passing checks at `weight` so far: the runner injects its fault once the
/// rollout has been judged healthy at 25% a few times.
pub fn passing_checks_at(records: &[Record], weight: f64) -> usize {
    records
        .iter()
        .filter(|r| matches!(r, Record::Check { outcome, weight: w } if outcome == "pass" && (*w - weight).abs() < 1e-9))
        .count()
}

/// Checks at `weight` that did not fail (low traffic is never conclusive).
pub fn unfailed_checks_at(records: &[Record], weight: f64) -> usize {
    records
        .iter()
        .filter(|r| matches!(r, Record::Check { outcome, weight: w } if outcome != "fail" && (*w - weight).abs() < 1e-9))
        .count()
}

/// How a fault was detected, from the records written after it began:
/// the number of checks up to and including the first failed one, or 0 when
/// a trip came before any failed check. `None`: not detected.
pub fn checks_to_detect(after_fault: &[Record]) -> Option<u32> {
    let mut checks = 0;
    for record in after_fault {
        match record {
            Record::Trip => return Some(0),
            Record::Check { outcome, .. } => {
                checks += 1;
                if outcome == "fail" {
                    return Some(checks);
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(outcome: &str) -> Record {
        Record::Check {
            outcome: outcome.into(),
            weight: 25.0,
        }
    }

    #[test]
    fn parses_the_records_the_runner_needs() {
        let check_line = r#"{"v":1,"at":"2026-01-01T00:00:00Z","service":"svc","weight":25.0,"step":0,"kind":"check","method":"threshold","outcome":"pass"}"#;
        assert_eq!(parse(check_line), Some(check("pass")));
        let state = r#"{"v":1,"at":"x","service":"svc","weight":0.0,"kind":"state","from":"progressing","to":"rolled_back (trip)","by":"analysis","reason":"r"}"#;
        assert!(parse(state).is_some_and(|r| r.is_rollback()));
        assert_eq!(parse(r#"{"kind":"hook"}"#), Some(Record::Other));
        assert_eq!(parse("not json"), None);
    }

    #[test]
    fn reads_complete_lines_only() {
        let dir = std::env::temp_dir().join(format!("loadtest-history-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("h.jsonl");
        assert_eq!(read(&path), Ok(Vec::new()));
        std::fs::write(&path, "{\"kind\":\"trip\"}\n{\"kind\":\"che").unwrap();
        assert_eq!(read(&path), Ok(vec![Record::Trip]));
        std::fs::write(&path, "garbage\n").unwrap();
        assert!(read(&path).unwrap_err().contains(":1:"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn counts_checks_to_the_first_failure_or_a_trip() {
        assert_eq!(checks_to_detect(&[check("pass"), check("fail")]), Some(2));
        assert_eq!(
            checks_to_detect(&[check("pass"), Record::Trip, check("fail")]),
            Some(0)
        );
        assert_eq!(checks_to_detect(&[check("inconclusive")]), None);
        let records = [
            check("pass"),
            check("inconclusive"),
            check("pass"),
            check("fail"),
        ];
        assert_eq!(passing_checks_at(&records, 25.0), 2);
        assert_eq!(unfailed_checks_at(&records, 25.0), 3);
        assert_eq!(passing_checks_at(&records, 5.0), 0);
    }
}
