//! Property tests of the config parser (issue 13, fuzzing on stable): arbitrary YAML-ish
//! text and structured mutations of the annotated example never panic, never take a
//! second, and every error they produce has a position inside the file.
//! `PROPTEST_CASES` raises the number of cases for a longer run; the slowest validation
//! is printed (`--nocapture`), and `CUTOVER_FUZZ_SLOW_DIR` keeps inputs slower than 100 ms.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use cutover::config::load::from_str;
use proptest::prelude::*;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(200);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn example() -> (PathBuf, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/cutover.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    (path, text)
}

static SLOWEST_MICROS: AtomicU64 = AtomicU64::new(0);

/// Validates `text` as if it were at `path`; fails the case on a slow validation or an
/// error without a position in the file.
fn check(text: &str, path: &Path) -> Result<(), TestCaseError> {
    let started = Instant::now();
    let result = from_str(text, path);
    let took = started.elapsed();
    let before = SLOWEST_MICROS.fetch_max(took.as_micros() as u64, Relaxed);
    if took.as_micros() as u64 > before {
        eprintln!("slowest validation so far: {took:?} ({} bytes)", text.len());
    }
    // To look into slow inputs: CUTOVER_FUZZ_SLOW_DIR=/tmp/slow keeps those over 100 ms.
    if let Ok(dir) = std::env::var("CUTOVER_FUZZ_SLOW_DIR") {
        if took > Duration::from_millis(100) {
            let name = format!("{}-{}us.yaml", std::process::id(), took.as_micros());
            let _ = std::fs::write(Path::new(&dir).join(name), text);
        }
    }
    prop_assert!(took < Duration::from_secs(1), "validation took {took:?}");
    if let Err(errors) = result {
        prop_assert!(!errors.0.is_empty(), "refused without an error");
        let lines = text.lines().count() as u64 + 1;
        for error in &errors.0 {
            prop_assert!(!error.message.is_empty());
            let (line, col) = (u64::from(error.mark.line), u64::from(error.mark.col));
            prop_assert!(
                line >= 1 && col >= 1 && line <= lines.max(1),
                "error outside the file ({} lines): {}",
                lines,
                error
            );
        }
    }
    Ok(())
}

/// Pieces that YAML and the config schema care about.
const TOKENS: &[&str] = &[
    ":",
    ": ",
    "- ",
    "{",
    "}",
    "[",
    "]",
    ",",
    "\n",
    "  ",
    "\t",
    "#",
    "&a ",
    "*a",
    "<<: *a",
    "!!str ",
    "!!binary ",
    "'",
    "\"",
    "|",
    ">",
    "~",
    "null",
    "0",
    "-1",
    "1e400",
    "18446744073709551616",
    "18446744073709551615s",
    "30M",
    "1.5h",
    "30 minutes",
    "100%",
    "101%",
    "0.001%",
    "true",
    "0.0.0.0:0",
    "127.0.0.1:99999",
    "weight: 50%",
    "hold: 1d",
    "gate: x",
    "run: x",
    "point_of_no_return: true",
    "exec: []",
    "http: {url: x}",
    "steps: []",
    "\u{feff}",
    "é",
    "\0",
    "pass_env: [\"*\"]",
    "env: {A: b}",
    "token_file: /nonexistent",
];

#[derive(Debug, Clone)]
enum Mutation {
    Insert(usize, usize),
    Delete(usize, usize),
    Replace(usize, usize, usize),
    DuplicateLine(usize),
    Indent(usize, bool),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0..TOKENS.len()).prop_map(|(at, t)| Mutation::Insert(at, t)),
        (any::<usize>(), 1usize..40).prop_map(|(at, n)| Mutation::Delete(at, n)),
        (any::<usize>(), 1usize..10, 0..TOKENS.len())
            .prop_map(|(at, n, t)| Mutation::Replace(at, n, t)),
        any::<usize>().prop_map(Mutation::DuplicateLine),
        (any::<usize>(), any::<bool>()).prop_map(|(at, more)| Mutation::Indent(at, more)),
    ]
}

fn boundary(text: &str, at: usize) -> usize {
    let mut at = at % (text.len() + 1);
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn apply(text: &mut String, mutation: &Mutation) {
    match *mutation {
        Mutation::Insert(at, t) => {
            let at = boundary(text, at);
            text.insert_str(at, TOKENS[t]);
        }
        Mutation::Delete(at, n) | Mutation::Replace(at, n, _) => {
            let from = boundary(text, at);
            let to = boundary(text, from + n).max(from);
            let with = match *mutation {
                Mutation::Replace(_, _, t) => TOKENS[t],
                _ => "",
            };
            text.replace_range(from..to, with);
        }
        Mutation::DuplicateLine(at) | Mutation::Indent(at, _) => {
            let lines: Vec<&str> = text.split('\n').collect();
            let index = at % lines.len();
            let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
            match *mutation {
                Mutation::DuplicateLine(_) => out.insert(index, lines[index].to_string()),
                Mutation::Indent(_, true) => out[index].insert_str(0, "  "),
                _ => out[index] = lines[index].trim_start().to_string(),
            }
            *text = out.join("\n");
        }
    }
}

#[test]
fn the_example_itself_is_valid() {
    let (path, text) = example();
    from_str(&text, &path).unwrap_or_else(|e| panic!("{e}"));
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn mutated_examples_never_panic_and_errors_have_positions(
        mutations in prop::collection::vec(mutation(), 1..5),
    ) {
        let (path, mut text) = example();
        for m in &mutations {
            apply(&mut text, m);
        }
        check(&text, &path)?;
    }

    #[test]
    fn yaml_ish_text_never_panics_and_errors_have_positions(
        text in "([a-z_]{1,8}|[:{}\\[\\],&*!|>#%'\"~@` -]|\n|  |[0-9]{1,4}(ms|s|m|h|d|%)?){0,120}",
    ) {
        check(&text, Path::new("/tmp/cutover-fuzz/cutover.yaml"))?;
    }

    #[test]
    fn arbitrary_unicode_never_panics(text in "\\PC{0,300}") {
        check(&text, Path::new("/tmp/cutover-fuzz/cutover.yaml"))?;
    }
}
