//! `loadtest scenarios`: the scenario matrix of issue 11 against the real
//! `cutover` binary. Each run starts the binary as a child (its own temporary
//! directory, listener and admin API on 127.0.0.1:0), two scripted OLD and two
//! NEW backends in process and open-loop load; once NEW holds 25% with passing
//! checks, a fault begins on NEW, and the run reads the proxy's decision log to
//! see whether, how fast and after how many checks NEW's weight went to 0.
//!
//! Time is real, so the schedule is short (a check every 2 s over 15 s by
//! default); runs go a few at a time to keep the matrix within minutes.

mod history;
mod proxy;
mod run;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

pub use run::Outcome;

/// What goes wrong on NEW once the rollout holds 25%.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    None,
    /// This much more of NEW's answers are 500s.
    Errors(f64),
    /// NEW's backends stop: connections are refused.
    Down,
    /// Every NEW answer comes this much later.
    Latency(Duration),
    /// NEW fails every request for this long, then is fine for as long, over and over.
    Flapping(Duration),
}

/// One row of the matrix (for each method).
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: &'static str,
    /// Requests per second through the proxy.
    pub rate: f64,
    /// Share of 500s from every backend, OLD and NEW, before any fault.
    pub noise: f64,
    /// Whether checks can pass at this rate (low traffic stays inconclusive).
    pub conclusive: bool,
    pub fault: Fault,
}

/// The scenarios of issue 11.
pub fn scenarios() -> Vec<Scenario> {
    let at = |name, noise, fault| Scenario {
        name,
        rate: 200.0,
        noise,
        conclusive: true,
        fault,
    };
    vec![
        at("healthy", 0.0, Fault::None),
        at("equal 0.5% errors", 0.005, Fault::None),
        Scenario {
            name: "low traffic (3 req/s)",
            rate: 3.0,
            noise: 0.005,
            conclusive: false,
            fault: Fault::None,
        },
        at("NEW +8% errors", 0.005, Fault::Errors(0.08)),
        at("NEW hard down", 0.005, Fault::Down),
        at(
            "NEW +40 ms latency",
            0.005,
            Fault::Latency(Duration::from_millis(40)),
        ),
        at(
            "flapping NEW (1 s bad, 1 s good)",
            0.005,
            Fault::Flapping(Duration::from_secs(1)),
        ),
    ]
}

/// The analysis schedule of every run, and how long runs last.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub interval: Duration,
    /// The statistical method's confidence bounds need about 3,000 NEW requests to pass
    /// 0.5% noise (docs/evidence.md, "cost of confidence"): a minute at 200 req/s and 25%.
    /// Both methods judge the same window, so that the table compares methods only.
    pub window: Duration,
    pub min_requests: u64,
    pub failure_threshold: u32,
    /// Longest wait for the healthy checks at 25% before the fault.
    pub warmup_limit: Duration,
    /// Whether the fault waits until a whole `window` of traffic at 25% has been seen, so
    /// that detection is measured against a full window of healthy traffic (the steady
    /// state of a rollout), not against the few seconds after the start.
    pub fill_window: bool,
    /// How long a run watches after the fault begins (or, with no fault, after
    /// the healthy checks).
    pub observe: Duration,
    /// Where to copy the decision log of every measured run (`--keep-logs`), so that a
    /// surprising rollback (or a failed check) can be read afterwards.
    pub keep_logs: Option<PathBuf>,
}

impl Default for Schedule {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(2),
            window: Duration::from_secs(60),
            min_requests: 100,
            failure_threshold: 3,
            warmup_limit: Duration::from_secs(90),
            fill_window: true,
            observe: Duration::from_secs(30),
            keep_logs: None,
        }
    }
}

/// The whole matrix to run.
#[derive(Debug, Clone)]
pub struct MatrixPlan {
    pub binary: PathBuf,
    pub scenarios: Vec<Scenario>,
    /// `threshold` and/or `statistical`.
    pub methods: Vec<&'static str>,
    pub seeds: u32,
    pub schedule: Schedule,
    /// Runs at the same time.
    pub parallel: usize,
}

/// The methods `analysis.method` accepts.
pub fn parse_method(name: &str) -> Result<&'static str, String> {
    match name.trim() {
        "threshold" => Ok("threshold"),
        "statistical" => Ok("statistical"),
        other => Err(format!(
            "unknown method {other:?} (threshold or statistical)"
        )),
    }
}

/// One line of the table: a scenario with one method over every seed.
#[derive(Debug, Clone)]
pub struct Row {
    pub scenario: &'static str,
    pub method: &'static str,
    pub has_fault: bool,
    pub outcomes: Vec<Outcome>,
}

impl Row {
    pub fn runs(&self) -> usize {
        self.outcomes.len()
    }

    pub fn false_rollbacks(&self) -> usize {
        self.outcomes.iter().filter(|o| o.false_rollback).count()
    }

    pub fn caught(&self) -> usize {
        self.outcomes
            .iter()
            .filter(|o| o.detected_after.is_some())
            .count()
    }

    pub fn median_detection(&self) -> Option<Duration> {
        median(
            self.outcomes
                .iter()
                .filter_map(|o| o.detected_after)
                .collect(),
        )
    }

    pub fn median_checks(&self) -> Option<u32> {
        median(
            self.outcomes
                .iter()
                .filter_map(|o| o.checks_to_detect)
                .collect(),
        )
    }
}

fn median<T: Copy + Ord>(mut values: Vec<T>) -> Option<T> {
    values.sort();
    values.get(values.len().checked_sub(1)? / 2).copied()
}

/// Runs every scenario × method × seed, `parallel` at a time. A run that
/// cannot happen (the binary fails to start, no healthy checks before the
/// fault) is an error: the table would otherwise claim what was not measured.
pub async fn run_matrix(plan: &MatrixPlan) -> Result<Vec<Row>, String> {
    let permits = Arc::new(Semaphore::new(plan.parallel.max(1)));
    let mut tasks = Vec::new();
    for scenario in &plan.scenarios {
        for &method in &plan.methods {
            for _ in 0..plan.seeds {
                let (permits, plan, scenario) =
                    (Arc::clone(&permits), plan.clone(), scenario.clone());
                tasks.push(tokio::spawn(async move {
                    let _permit = permits.acquire_owned().await.map_err(|e| e.to_string())?;
                    let outcome = run::run(&plan.binary, &scenario, method, &plan.schedule).await?;
                    eprintln!(
                        "loadtest scenarios: {} / {method}: {outcome:?}",
                        scenario.name
                    );
                    Ok::<_, String>((scenario.name, method, outcome))
                }));
            }
        }
    }
    let mut rows: Vec<Row> = Vec::new();
    for scenario in &plan.scenarios {
        for &method in &plan.methods {
            rows.push(Row {
                scenario: scenario.name,
                method,
                has_fault: scenario.fault != Fault::None,
                outcomes: Vec::new(),
            });
        }
    }
    // A run that could not be measured (a warm-up that never passed, a proxy that died) is
    // reported and leaves its row with fewer runs; the other rows still count.
    let mut errors = 0;
    for task in tasks {
        match task.await {
            Ok(Ok((name, method, outcome))) => {
                if let Some(row) = rows
                    .iter_mut()
                    .find(|r| r.scenario == name && r.method == method)
                {
                    row.outcomes.push(outcome);
                }
            }
            Ok(Err(e)) => {
                eprintln!("loadtest scenarios: a run was not measured: {e}");
                errors += 1;
            }
            Err(e) => {
                eprintln!("loadtest scenarios: a run panicked: {e}");
                errors += 1;
            }
        }
    }
    if rows.iter().all(|row| row.outcomes.is_empty()) {
        return Err(format!(
            "none of the runs could be measured ({errors} failed)"
        ));
    }
    Ok(rows)
}

/// The table as Markdown (also what the text output prints).
pub fn markdown(rows: &[Row]) -> String {
    let mut text = String::from(
        "| scenario | method | false rollbacks | caught | fault → weight 0 (median) | checks to detect (median) |\n\
         |---|---|---|---|---|---|\n",
    );
    for row in rows {
        let dash = || "-".to_string();
        let caught = if row.has_fault {
            format!("{}/{}", row.caught(), row.runs())
        } else {
            dash()
        };
        text.push_str(&format!(
            "| {} | {} | {}/{} | {} | {} | {} |\n",
            row.scenario,
            row.method,
            row.false_rollbacks(),
            row.runs(),
            caught,
            row.median_detection()
                .map_or_else(dash, |d| format!("{:.1} s", d.as_secs_f64())),
            row.median_checks().map_or_else(dash, |c| c.to_string()),
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_counts_what_the_runs_saw() {
        let caught = Outcome {
            detected_after: Some(Duration::from_millis(1500)),
            checks_to_detect: Some(0),
            ..Outcome::default()
        };
        let missed = Outcome::default();
        let row = Row {
            scenario: "NEW hard down",
            method: "threshold",
            has_fault: true,
            outcomes: vec![caught.clone(), missed, caught],
        };
        assert_eq!(row.caught(), 2);
        assert_eq!(row.median_checks(), Some(0));
        let table = markdown(&[row]);
        assert!(
            table.contains("| NEW hard down | threshold | 0/3 | 2/3 | 1.5 s | 0 |"),
            "{table}"
        );
        assert_eq!(median::<u32>(Vec::new()), None);
        assert_eq!(median(vec![3, 1, 2, 9]), Some(2));
    }

    #[test]
    fn methods_are_checked() {
        assert_eq!(parse_method("statistical"), Ok("statistical"));
        assert!(parse_method("bayes").is_err());
    }
}
