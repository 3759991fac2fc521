//! `cutover diff SERVICE`: what the last shadow step found (SPEC §9).

use std::fmt::Write;
use std::process::ExitCode;

use http::Method;

use super::client::{call, Target};
use super::commands::{exit_for, unreachable_exit};
use crate::status::ShadowReport;

pub(super) async fn diff(target: &Target, json: bool, service: &str) -> ExitCode {
    let answer = match call(
        target,
        Method::GET,
        &format!("/services/{service}/shadow"),
        None,
    )
    .await
    {
        Ok(answer) => answer,
        Err(err) => return unreachable_exit(err),
    };
    if answer.status.is_success() {
        if json {
            print!("{}", String::from_utf8_lossy(&answer.body));
        } else {
            match serde_json::from_slice::<ShadowReport>(&answer.body) {
                Ok(report) => print!("{}", diff_text(service, &report)),
                Err(err) => {
                    eprintln!("cutover: the admin API answered something unexpected: {err}");
                    return ExitCode::from(1);
                }
            }
        }
    }
    exit_for(&answer)
}

pub(super) fn diff_text(service: &str, r: &ShadowReport) -> String {
    let mut out = String::new();
    let c = &r.counts;
    if c.comparisons == 0 && c.errors == 0 && c.dropped == 0 {
        let _ = writeln!(out, "{service}: no shadow comparisons yet");
        return out;
    }
    let rate = r
        .mismatch_rate
        .map_or("-".to_string(), |rate| format!("{:.2}%", rate * 100.0));
    let _ = writeln!(
        out,
        "{service}: shadow {}: {} comparisons, mismatch rate {rate}",
        if r.active { "running" } else { "finished" },
        c.comparisons
    );
    let _ = writeln!(
        out,
        "  match {}  mismatch {}  noise {}  error {} (NEW {})  dropped {}",
        c.matched, c.mismatched, c.noise, c.errors, c.new_errors, c.dropped
    );
    if !r.noise_fields.is_empty() {
        let _ = writeln!(out, "  noise learned: {}", r.noise_fields.join(", "));
    }
    if !r.mismatches.is_empty() {
        let _ = writeln!(
            out,
            "  last {} mismatches, newest last:",
            r.mismatches.len()
        );
    }
    for m in &r.mismatches {
        let new = m
            .new_status
            .map_or("no answer".to_string(), |s| s.to_string());
        let _ = writeln!(
            out,
            "  {} {}  OLD {} NEW {}  differs: {}",
            m.method,
            m.path,
            m.old_status,
            new,
            m.differing.join(", ")
        );
        if let Some(body) = &m.body_diff {
            let _ = writeln!(out, "      {body}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{MismatchSample, ShadowCounts};

    #[test]
    fn the_diff_shows_counts_noise_and_each_mismatch() {
        let report = ShadowReport {
            active: false,
            counts: ShadowCounts {
                matched: 90,
                mismatched: 10,
                comparisons: 100,
                ..ShadowCounts::default()
            },
            mismatch_rate: Some(0.1),
            noise_fields: vec!["$.timestamp".into()],
            mismatches: vec![MismatchSample {
                method: "GET".into(),
                path: "/item/10".into(),
                old_status: 200,
                new_status: Some(500),
                differing: vec!["status".into(), "$.ok".into()],
                body_diff: Some("OLD …true} | NEW …false}".into()),
            }],
        };
        assert_eq!(
            diff_text("api", &report),
            "api: shadow finished: 100 comparisons, mismatch rate 10.00%\n  \
             match 90  mismatch 10  noise 0  error 0 (NEW 0)  dropped 0\n  \
             noise learned: $.timestamp\n  last 1 mismatches, newest last:\n  \
             GET /item/10  OLD 200 NEW 500  differs: status, $.ok\n      \
             OLD …true} | NEW …false}\n"
        );
    }
}
