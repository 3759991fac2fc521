use super::*;
use crate::evidence::record::*;

fn at(second: i64) -> OffsetDateTime {
    // 2026-11-30T14:00:00Z
    OffsetDateTime::from_unix_timestamp(1796047200 + second).unwrap()
}

fn check(second: i64) -> Entry {
    Entry::new(
        at(second),
        "api",
        5.0,
        Some(1),
        Decision::Check(CheckRecord {
            method: Method::Statistical,
            outcome: Outcome::Fail,
            window_s: 120.0,
            new: PoolMeasure {
                requests: 1200,
                errors: 30,
                error_rate: 0.025,
                p99_ms: Some(41.5),
            },
            old: PoolMeasure::default(),
            rules: vec![RuleRecord {
                rule: Rule::MaxErrorRate,
                outcome: Outcome::Fail,
                measured: Some(0.025),
                threshold: 0.01,
                new_requests: 1200,
                old_requests: 22800,
                bound: Some(Bound {
                    confidence: 0.99,
                    lower: 0.0165,
                    upper: 0.0378,
                }),
                p_value: None,
                note: None,
            }],
            note: None,
            consecutive_failures: 1,
        }),
    )
}

/// One entry of every kind.
fn every_kind() -> Vec<Entry> {
    let decisions = vec![
        check(0).decision,
        Decision::Trip(TripRecord {
            requests: 40,
            errors: 40,
            error_rate: 1.0,
            threshold: 0.25,
            reason: "trip: 40 of 40".to_string(),
        }),
        Decision::Step(StepRecord {
            from_step: Some(0),
            to_step: 1,
            description: "weight 25%".to_string(),
            from_weight: 5.0,
            to_weight: 25.0,
            by: DecidedBy::Schedule,
            reason: "hold 10m observed, last check passed".to_string(),
        }),
        Decision::State(StateRecord {
            from: "progressing".to_string(),
            to: "rolled_back".to_string(),
            by: DecidedBy::Operator {
                client: "10.0.0.7:51234".to_string(),
            },
            reason: "manual rollback".to_string(),
        }),
        Decision::Operator(OperatorRecord {
            command: "promote --full".to_string(),
            client: "127.0.0.1:40000".to_string(),
            accepted: false,
            detail: Some("the rollout is rolled back".to_string()),
        }),
        Decision::Hook(HookRecord {
            hook: "switch-writes".to_string(),
            event: "run".to_string(),
            ok: true,
            exit_code: Some(0),
            duration_ms: 812,
            attempt: 1,
            output_tail: "writes now go to NEW\n".to_string(),
        }),
        Decision::Verify(ProbeRecord {
            name: "smoke".to_string(),
            passed: false,
            total: 2,
            failed: 1,
            detail: vec!["GET /healthz: 503, expected 200".to_string()],
        }),
        Decision::Shadow(ProbeRecord {
            name: "shadow 100%".to_string(),
            passed: true,
            total: 5000,
            failed: 3,
            detail: Vec::new(),
        }),
        Decision::Reload(ReloadRecord {
            ok: true,
            changes: vec!["analysis".to_string()],
            by: DecidedBy::Config,
        }),
    ];
    decisions
        .into_iter()
        .enumerate()
        .map(|(i, decision)| Entry::new(at(i as i64), "api", 5.0, Some(1), decision))
        .collect()
}

#[test]
fn every_kind_of_decision_reads_back_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = HistoryLog::open(dir.path(), "api").unwrap();
    let entries = every_kind();
    for entry in &entries {
        log.append(entry).unwrap();
    }
    let path = history_path(dir.path(), "api");
    assert_eq!(log.path(), path);
    assert_eq!(read_since(&path, None).unwrap(), entries);
    // One object a line, with its kind and the operator's address where there is one.
    let text = fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), entries.len());
    assert!(text
        .lines()
        .all(|l| l.starts_with("{\"v\":1,\"at\":\"2026-11-30T14:00:")));
    assert!(text.contains(r#""kind":"state","from":"progressing","to":"rolled_back","by":"operator","client":"10.0.0.7:51234""#), "{text}");
}

/// `api.history.jsonl` in a new directory, rotated when it holds `lines` lines as long as
/// `check(0)`'s (that length, with its newline, is the third value).
fn log_holding(lines: u64) -> (tempfile::TempDir, PathBuf, u64, HistoryLog) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("api.history.jsonl");
    let line = serde_json::to_vec(&check(0)).unwrap().len() as u64 + 1;
    let log = HistoryLog::open_path(path.clone(), line * lines).unwrap();
    (dir, path, line, log)
}

#[test]
fn rotation_keeps_one_old_file_and_since_reads_across_both() {
    // Room for three lines a file.
    let (dir, path, line, mut log) = log_holding(3);
    for second in 0..10 {
        log.append(&check(second)).unwrap();
    }
    let mut names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["api.history.jsonl", "api.history.jsonl.1"]);
    assert!(fs::metadata(&path).unwrap().len() <= line * 3);
    // Seconds 0..=5 were rotated away; 6..=8 are in .1 and 9 in the current file.
    let all = read_since(&path, None).unwrap();
    let seconds: Vec<i64> = all.iter().map(|e| (e.at - at(0)).whole_seconds()).collect();
    assert_eq!(seconds, [6, 7, 8, 9]);
    let since = parse_since("2026-11-30T15:00:08+01:00").unwrap();
    let recent = read_since(&path, Some(since)).unwrap();
    assert_eq!(recent, vec![check(8), check(9)]);
}

#[test]
fn a_torn_last_line_is_skipped_and_a_bad_line_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("api.history.jsonl");
    let mut log = HistoryLog::open_path(path.clone(), ROTATE_AT).unwrap();
    log.append(&check(0)).unwrap();
    let mut file = OpenOptions::new().append(true).open(&path).unwrap();
    file.write_all(b"{\"v\":1,\"at\":\"2026-").unwrap();
    assert_eq!(read_since(&path, None).unwrap(), vec![check(0)]);
    file.write_all(b"\n").unwrap();
    let error = read_since(&path, None).unwrap_err().to_string();
    assert!(
        error.contains("api.history.jsonl:2: not a history record"),
        "{error}"
    );
}

#[test]
fn since_must_be_rfc3339() {
    let error = parse_since("yesterday").unwrap_err().to_string();
    assert!(
        error.contains("\"yesterday\" is not an RFC 3339 time"),
        "{error}"
    );
    assert_eq!(parse_since("2026-11-30T14:00:05Z").unwrap(), at(5));
}

#[test]
fn a_missing_file_holds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = history_path(dir.path(), "none");
    assert!(read_since(&path, None).unwrap().is_empty());
}

#[test]
fn the_follower_sees_new_entries_across_a_rotation() {
    let (_dir, path, _, mut log) = log_holding(2);
    log.append(&check(0)).unwrap();
    let mut follower = Follower::from_end(&path);
    assert!(follower.poll().unwrap().is_empty());
    log.append(&check(1)).unwrap();
    assert_eq!(follower.poll().unwrap(), vec![check(1)]);
    // 2 does not fit: the file rotates before it, and the follower must notice.
    log.append(&check(2)).unwrap();
    log.append(&check(3)).unwrap();
    assert_eq!(follower.poll().unwrap(), vec![check(2), check(3)]);
    log.append(&check(4)).unwrap();
    assert_eq!(follower.poll().unwrap(), vec![check(4)]);
}

#[test]
fn a_line_torn_by_a_crash_is_cut_off_before_the_next_record() {
    let (_dir, path, _, mut log) = log_holding(100);
    log.append(&check(0)).unwrap();
    drop(log);
    // The process died halfway through a line.
    let mut file = OpenOptions::new().append(true).open(&path).unwrap();
    file.write_all(b"{\"v\":1,\"at\":\"2026-").unwrap();
    // The next process appends: the history must still read back, whole.
    let mut log = HistoryLog::open_path(path.clone(), ROTATE_AT).unwrap();
    log.append(&check(1)).unwrap();
    assert_eq!(read_since(&path, None).unwrap(), vec![check(0), check(1)]);
    // A file of one torn line only is cut to nothing.
    fs::write(&path, b"{\"v\":1").unwrap();
    let mut log = HistoryLog::open_path(path.clone(), ROTATE_AT).unwrap();
    log.append(&check(2)).unwrap();
    assert_eq!(read_since(&path, None).unwrap(), vec![check(2)]);
}

#[test]
fn a_follower_goes_on_exactly_where_the_reading_ended() {
    let (_dir, path, _, mut log) = log_holding(100);
    log.append(&check(0)).unwrap();
    log.append(&check(1)).unwrap();
    let (read, position) = read_history(&path, None).unwrap();
    assert_eq!(read, vec![check(0), check(1)]);
    // Written after the reading and before the follower starts: once, by the follower.
    log.append(&check(2)).unwrap();
    let mut follower = Follower::at(&path, position);
    assert_eq!(follower.poll().unwrap(), vec![check(2)]);
    assert!(follower.poll().unwrap().is_empty());
}

#[test]
fn a_file_rotated_while_it_is_read_is_not_read_twice() {
    let (_dir, path, _, mut log) = log_holding(100);
    log.append(&check(0)).unwrap();
    log.append(&check(1)).unwrap();
    // What a rotation right after the reading opened the current file leaves: the file
    // it opened is the `.1` too.
    fs::hard_link(&path, old_path(&path)).unwrap();
    assert_eq!(read_since(&path, None).unwrap(), vec![check(0), check(1)]);
}
