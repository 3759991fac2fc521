//! `shadow` steps (SPEC §9): what is copied to NEW and how the answers are compared.

use http::{HeaderName, Method};

use super::Checker;
use crate::config::de::Spanned;
use crate::config::defaults;
use crate::config::file::ShadowFile;
use crate::config::model::parse_bytes;
use crate::config::{Config, ShadowSpec, StepKind};

/// Methods a copy can repeat without changing anything (RFC 9110 §9.2.1 "safe").
const SAFE_METHODS: [Method; 4] = [Method::GET, Method::HEAD, Method::OPTIONS, Method::TRACE];

/// A shadow step that copies a method with side effects runs it on OLD twice (the
/// reference answer is a second request to OLD) and on NEW once. Allowed, since the
/// operator listed it, but said aloud.
pub(super) fn warnings(config: &Config, out: &mut Vec<String>) {
    for service in &config.services {
        let steps = service.rollout.iter().flat_map(|r| r.steps.iter());
        for (index, step) in steps.enumerate() {
            let StepKind::Shadow(spec) = &step.kind else {
                continue;
            };
            let risky: Vec<&str> = spec
                .methods
                .iter()
                .filter(|m| !SAFE_METHODS.contains(m))
                .map(Method::as_str)
                .collect();
            if !risky.is_empty() {
                out.push(format!(
                    "service `{}`, step {} (shadow) copies {}: methods with side effects. \
                     OLD serves each copied request twice (three times with `noise: auto`) \
                     and NEW once",
                    service.name,
                    index + 1,
                    risky.join(", ")
                ));
            }
        }
    }
}

impl Checker<'_> {
    pub(super) fn shadow_step(&mut self, shadow: &Spanned<ShadowFile>) -> Option<ShadowSpec> {
        let file = &shadow.value;
        let percent = self.required(&file.percent, shadow.mark, "percent");
        let hold = self.required(&file.hold, shadow.mark, "hold");
        let max_mismatch = self.required(&file.max_mismatch, shadow.mark, "max_mismatch");
        let (percent, hold, max_mismatch) =
            (percent?.clone(), hold?.clone(), max_mismatch?.clone());
        let percent = self.fraction(&Some(percent.clone())).and_then(|p| {
            if p > 0.0 {
                Some(p)
            } else {
                self.error(
                    percent.mark,
                    "a shadow step copies more than 0% of the requests",
                );
                None
            }
        });
        let hold = self.duration_opt(&Some(hold));
        let max_wait = match (&file.max_wait, hold) {
            (Some(text), Some(hold)) => match self.duration_opt(&file.max_wait) {
                Some(wait) if wait < hold => {
                    self.error(
                        text.mark,
                        "`max_wait` must be at least the step's `hold`: it is counted from the step's start",
                    );
                    None
                }
                wait => wait,
            },
            _ => None,
        };
        let max_mismatch = self.fraction(&Some(max_mismatch));
        let (copy_bodies, methods) = match &file.methods {
            None => (false, vec![Method::GET, Method::HEAD, Method::OPTIONS]),
            Some(listed) => {
                let mut methods = Vec::new();
                for method in listed {
                    match Method::from_bytes(method.value.as_bytes()) {
                        Ok(m) => methods.push(m),
                        Err(_) => self.error(
                            method.mark,
                            format!("`{}` is not an HTTP method", method.value),
                        ),
                    }
                }
                (true, methods)
            }
        };
        let compare = file.compare.as_ref().map(|c| &c.value);
        let mut compare_headers = Vec::new();
        for header in compare
            .and_then(|c| c.headers.as_ref())
            .into_iter()
            .flatten()
        {
            match HeaderName::from_bytes(header.value.as_bytes()) {
                Ok(name) => compare_headers.push(name),
                Err(_) => self.error(
                    header.mark,
                    format!("`{}` is not a header name", header.value),
                ),
            }
        }
        let mut ignore_json = Vec::new();
        for path in compare
            .and_then(|c| c.ignore_json.as_ref())
            .into_iter()
            .flatten()
        {
            match json_path(&path.value) {
                Some(segments) => ignore_json.push(segments),
                None => self.error(
                    path.mark,
                    format!(
                        "`{}` is not a JSON path such as `$.timestamp` or `$.meta.id`",
                        path.value
                    ),
                ),
            }
        }
        let max_body = match compare.and_then(|c| c.max_body.as_ref()) {
            None => defaults::SHADOW_MAX_BODY,
            Some(text) => match parse_bytes(&text.value) {
                Ok(n) => n,
                Err(message) => {
                    self.error(text.mark, message);
                    defaults::SHADOW_MAX_BODY
                }
            },
        };
        let noise_auto = match &file.noise {
            None => false,
            Some(n) if n.value == "auto" => true,
            Some(n) if n.value == "off" => false,
            Some(n) => {
                self.error(
                    n.mark,
                    format!("`noise: {}`: write `auto` or `off`", n.value),
                );
                false
            }
        };
        Some(ShadowSpec {
            percent: percent?,
            hold: hold?,
            min_requests: self.count(
                &file.min_requests,
                defaults::SHADOW_MIN_REQUESTS,
                1,
                10_000_000,
            ),
            max_wait,
            max_mismatch: max_mismatch?,
            methods,
            copy_bodies,
            compare_status: compare
                .and_then(|c| c.status.as_ref())
                .is_none_or(|s| s.value),
            compare_headers,
            compare_body: compare
                .and_then(|c| c.body.as_ref())
                .is_none_or(|s| s.value),
            ignore_json,
            max_body,
            noise_auto,
            max_in_flight: self.count(
                &file.max_in_flight,
                defaults::SHADOW_MAX_IN_FLIGHT,
                1,
                100_000,
            ) as usize,
            timeout: self.duration(&file.timeout, defaults::SHADOW_TIMEOUT),
        })
    }
}

/// `$.a.b` → `["a", "b"]`; only dotted member names.
fn json_path(text: &str) -> Option<Vec<String>> {
    let rest = text.strip_prefix("$.")?;
    let segments: Vec<String> = rest.split('.').map(str::to_string).collect();
    segments.iter().all(|s| !s.is_empty()).then_some(segments)
}
