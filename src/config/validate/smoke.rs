//! `smoke:`: the requests a `verify` step sends to every NEW backend (SPEC §9).

use http::{HeaderName, HeaderValue, Method};

use super::Checker;
use crate::config::de::Spanned;
use crate::config::defaults;
use crate::config::file::{OneOrMany, ServiceFile, SmokeFile};
use crate::config::model::{RolloutSpec, SmokeRequest, StepKind};

impl Checker<'_> {
    /// A `verify` step with nothing to send would pass without proving anything.
    pub(super) fn verify_has_smoke(
        &mut self,
        file: &ServiceFile,
        rollout: Option<&RolloutSpec>,
        no_smoke: bool,
    ) {
        let verifies = rollout.is_some_and(|r| r.steps.iter().any(|s| s.kind == StepKind::Verify));
        if verifies && no_smoke && file.smoke.as_ref().is_none_or(Vec::is_empty) {
            let mark = file.rollout.as_ref().map(|r| r.mark);
            if let Some(mark) = mark {
                self.error(
                    mark,
                    "a `verify` step sends the service's `smoke` requests, and it has none: \
                     add a `smoke:` list to the service",
                );
            }
        }
    }

    pub(super) fn smoke(&mut self, smoke: &Spanned<SmokeFile>) -> Option<SmokeRequest> {
        let file = &smoke.value;
        let method = match &file.method {
            None => Method::GET,
            Some(m) => match Method::from_bytes(m.value.as_bytes()) {
                Ok(method) => method,
                Err(_) => {
                    self.error(m.mark, format!("`{}` is not an HTTP method", m.value));
                    return None;
                }
            },
        };
        let path = self.required(&file.path, smoke.mark, "path")?;
        if !path.value.starts_with('/') || path.value.parse::<http::Uri>().is_err() {
            self.error(
                path.mark,
                "a smoke request's `path` starts with `/` and is a valid request target",
            );
            return None;
        }
        let mut headers = Vec::new();
        for (name, value) in file.headers.iter().flat_map(|h| h.0.iter()) {
            match (
                HeaderName::from_bytes(name.value.as_bytes()),
                HeaderValue::from_str(&value.value),
            ) {
                (Ok(n), Ok(v)) => headers.push((n, v)),
                (Err(_), _) => {
                    self.error(name.mark, format!("`{}` is not a header name", name.value))
                }
                (_, Err(_)) => self.error(value.mark, "not a valid header value"),
            }
        }
        let mut expect_header = Vec::new();
        for (name, value) in file.expect_header.iter().flat_map(|h| h.0.iter()) {
            match HeaderName::from_bytes(name.value.as_bytes()) {
                Ok(n) => expect_header.push((n, value.value.to_ascii_lowercase())),
                Err(_) => self.error(name.mark, format!("`{}` is not a header name", name.value)),
            }
        }
        let expect_status = match &file.expect_status {
            None => vec![defaults::SMOKE_EXPECT_STATUS],
            Some(status) => {
                let listed = match &status.value {
                    OneOrMany::One(one) => vec![*one],
                    OneOrMany::Many(many) => many.clone(),
                };
                if listed.is_empty() || listed.iter().any(|s| !(100..=599).contains(s)) {
                    self.error(
                        status.mark,
                        "`expect_status` is a status code (100 to 599) or a non-empty list of them",
                    );
                    return None;
                }
                listed.into_iter().map(|s| s as u16).collect()
            }
        };
        Some(SmokeRequest {
            method,
            path: path.value.clone(),
            headers,
            body: file.body.as_ref().map(|b| b.value.clone()),
            expect_status,
            expect_body_contains: file.expect_body_contains.as_ref().map(|b| b.value.clone()),
            expect_header,
        })
    }
}
