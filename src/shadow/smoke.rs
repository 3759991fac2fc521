//! A `verify` step's smoke requests: each one against every NEW backend, directly, and each
//! answer judged against its expectations. All must pass; the first failure is named with
//! the request, the backend and what differed.

use bytes::Bytes;
use http::HeaderMap;

use super::exchange::{exchange, origin_form, Answer, Outgoing};
use crate::config::{SmokeRequest, Timeouts};

/// How much of a smoke answer is read: enough for any `expect_body_contains`.
const SMOKE_MAX_BODY: usize = 1024 * 1024;

/// What a verify step found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SmokeOutcome {
    /// Request × backend pairs that passed.
    pub passed: usize,
    /// The first that did not, in words.
    pub failure: Option<String>,
}

/// Sends every request to every backend (in order; a verify step is a handful of
/// requests) and stops at the first failure.
pub(crate) async fn run_smoke(
    requests: &[SmokeRequest],
    backends: &[String],
    timeouts: Timeouts,
) -> SmokeOutcome {
    let mut passed = 0;
    for backend in backends {
        for smoke in requests {
            let result = match build(smoke, backend) {
                Ok(request) => exchange(
                    backend,
                    &request,
                    timeouts.connect,
                    timeouts.connect + timeouts.request,
                    SMOKE_MAX_BODY,
                )
                .await
                .and_then(|answer| judge(smoke, &answer)),
                Err(err) => Err(err),
            };
            match result {
                Ok(()) => passed += 1,
                Err(what) => {
                    return SmokeOutcome {
                        passed,
                        failure: Some(format!(
                            "smoke request {} {} on NEW backend {backend}: {what}",
                            smoke.method, smoke.path
                        )),
                    }
                }
            }
        }
    }
    SmokeOutcome {
        passed,
        failure: None,
    }
}

fn build(smoke: &SmokeRequest, backend: &str) -> Result<Outgoing, String> {
    let target = origin_form(&smoke.path)?;
    let mut headers = HeaderMap::new();
    for (name, value) in &smoke.headers {
        headers.append(name.clone(), value.clone());
    }
    let body = Bytes::from(smoke.body.clone().unwrap_or_default());
    Ok(Outgoing::new(
        smoke.method.clone(),
        target.as_str(),
        &headers,
        Some(backend.as_bytes()),
        body,
    ))
}

/// Whether `answer` meets `smoke`'s expectations; if not, what differed.
pub(crate) fn judge(smoke: &SmokeRequest, answer: &Answer) -> Result<(), String> {
    let status = answer.status.as_u16();
    if !smoke.expect_status.contains(&status) {
        let expected: Vec<String> = smoke.expect_status.iter().map(u16::to_string).collect();
        return Err(format!(
            "status {status}, expected {}",
            expected.join(" or ")
        ));
    }
    for (name, want) in &smoke.expect_header {
        let got = answer
            .headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()));
        match got {
            None => {
                return Err(format!(
                    "no `{name}` header, expected one containing `{want}`"
                ))
            }
            Some(value) if !value.to_ascii_lowercase().contains(want.as_str()) => {
                return Err(format!(
                    "header `{name}: {value}` does not contain `{want}`"
                ))
            }
            Some(_) => {}
        }
    }
    if let Some(want) = &smoke.expect_body_contains {
        let found = want.is_empty()
            || answer
                .body
                .windows(want.len())
                .any(|w| w == want.as_bytes());
        if !found {
            let excerpt = String::from_utf8_lossy(&answer.body[..answer.body.len().min(120)]);
            let read = if answer.truncated {
                " first 1 MiB of the"
            } else {
                ""
            };
            return Err(format!(
                "the{read} body does not contain `{want}` (it begins `{excerpt}`)"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use http::{HeaderName, Method};

    use super::*;

    fn smoke() -> SmokeRequest {
        SmokeRequest {
            method: Method::GET,
            path: "/items".to_string(),
            headers: Vec::new(),
            body: None,
            expect_status: vec![200, 201],
            expect_body_contains: Some("\"a\":1".to_string()),
            expect_header: vec![(HeaderName::from_static("content-type"), "json".to_string())],
        }
    }

    #[test]
    fn every_expectation_is_checked_and_the_difference_named() {
        let smoke = smoke();
        assert_eq!(
            judge(&smoke, &Answer::of(201, "application/JSON", r#"{"a":1}"#)),
            Ok(())
        );
        assert_eq!(
            judge(&smoke, &Answer::of(500, "application/json", r#"{"a":1}"#)),
            Err("status 500, expected 200 or 201".to_string())
        );
        assert_eq!(
            judge(&smoke, &Answer::of(200, "text/plain", r#"{"a":1}"#)),
            Err("header `content-type: text/plain` does not contain `json`".to_string())
        );
        assert_eq!(
            judge(&smoke, &Answer::of(200, "application/json", r#"{"a":2}"#)),
            Err(r#"the body does not contain `"a":1` (it begins `{"a":2}`)"#.to_string())
        );
    }
}
