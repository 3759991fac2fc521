//! A service's two pools and how requests use them: backends, stickiness, timeouts,
//! outlier ejection and health checks.

use std::net::SocketAddr;

use http::HeaderName;

use super::Checker;
use crate::config::de::Spanned;
use crate::config::defaults;
use crate::config::file::{HealthCheckFile, OutlierFile, PoolFile, StickyFile, TimeoutsFile};
use crate::config::model::*;
use crate::config::yaml::Mark;

impl Checker<'_> {
    pub(super) fn pool(
        &mut self,
        pool: &Option<Spanned<PoolFile>>,
        parent: Mark,
        which: &str,
    ) -> Option<PoolSpec> {
        let pool = self.required(pool, parent, which)?;
        let backends = match &pool.value.backends {
            Some(list) if !list.is_empty() => list,
            _ => {
                self.error(
                    pool.mark,
                    format!("the `{which}` pool needs at least one backend"),
                );
                return None;
            }
        };
        let mut out: Vec<BackendSpec> = Vec::new();
        for backend in backends {
            let Some(addr) = self.required(&backend.value.addr, backend.mark, "addr") else {
                continue;
            };
            if !valid_backend_addr(&addr.value) {
                self.error(
                    addr.mark,
                    format!(
                        "`{}` is not a backend address; write `host:port`",
                        addr.value
                    ),
                );
                continue;
            }
            if out.iter().any(|b| b.addr == addr.value) {
                self.error(
                    addr.mark,
                    format!("backend `{}` is listed twice", addr.value),
                );
                continue;
            }
            let weight = self.count(
                &backend.value.weight,
                u64::from(defaults::BACKEND_WEIGHT),
                1,
                1000,
            ) as u32;
            let max_connections = self.count(
                &backend.value.max_connections,
                u64::from(defaults::BACKEND_MAX_CONNECTIONS),
                1,
                1_000_000,
            ) as u32;
            out.push(BackendSpec {
                addr: addr.value.clone(),
                weight,
                max_connections,
            });
        }
        (out.len() == backends.len()).then_some(PoolSpec { backends: out })
    }

    pub(super) fn sticky(&mut self, sticky: &Spanned<StickyFile>) -> Option<Sticky> {
        let file = &sticky.value;
        let mut modes = Vec::new();
        if let Some(cookie) = &file.cookie {
            let valid = !cookie.value.is_empty()
                && cookie
                    .value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
            if valid {
                modes.push(Sticky::Cookie(cookie.value.clone()));
            } else {
                self.error(
                    cookie.mark,
                    format!("`{}` is not a valid cookie name", cookie.value),
                );
            }
        }
        if let Some(header) = &file.header {
            match HeaderName::from_bytes(header.value.as_bytes()) {
                Ok(name) => modes.push(Sticky::Header(name)),
                Err(_) => self.error(
                    header.mark,
                    format!("`{}` is not a header name", header.value),
                ),
            }
        }
        if let Some(ip) = &file.client_ip {
            if ip.value {
                modes.push(Sticky::ClientIp);
            }
        }
        if modes.len() > 1 {
            self.error(
                sticky.mark,
                "`sticky` takes one of `cookie`, `header` or `client_ip`",
            );
        }
        if modes.is_empty() && file.cookie.is_none() && file.header.is_none() {
            self.error(
                sticky.mark,
                "`sticky` needs one of `cookie`, `header` or `client_ip: true`",
            );
        }
        modes.into_iter().next()
    }

    pub(super) fn timeouts(&mut self, timeouts: Option<&TimeoutsFile>) -> Timeouts {
        let defaults = Timeouts::default();
        let Some(t) = timeouts else {
            return defaults;
        };
        Timeouts {
            connect: self.positive_duration(&t.connect, defaults.connect),
            request: self.positive_duration(&t.request, defaults.request),
            idle: self.positive_duration(&t.idle, defaults.idle),
        }
    }

    pub(super) fn outlier(&mut self, outlier: &OutlierFile) -> Outlier {
        let defaults = Outlier::default();
        Outlier {
            consecutive_failures: self.count(
                &outlier.consecutive_failures,
                u64::from(defaults.consecutive_failures),
                1,
                1000,
            ) as u32,
            eject_for: self.positive_duration(&outlier.eject_for, defaults.eject_for),
            max_ejected: self
                .fraction(&outlier.max_ejected)
                .unwrap_or(defaults.max_ejected),
        }
    }

    pub(super) fn health_check(&mut self, check: &Spanned<HealthCheckFile>) -> HealthCheck {
        let file = &check.value;
        let path = match &file.path {
            Some(p) if p.value.starts_with('/') => p.value.clone(),
            Some(p) => {
                self.error(
                    p.mark,
                    format!("the health path must start with `/`, got `{}`", p.value),
                );
                "/".to_string()
            }
            None => {
                self.error(check.mark, "missing `path`");
                "/".to_string()
            }
        };
        let interval = self.positive_duration(&file.interval, defaults::HEALTH_INTERVAL);
        let timeout = self.positive_duration(&file.timeout, defaults::HEALTH_TIMEOUT);
        if timeout > interval {
            if let Some(t) = &file.timeout {
                self.error(
                    t.mark,
                    "the health check timeout must not exceed its interval",
                );
            }
        }
        HealthCheck {
            path,
            interval,
            timeout,
            healthy: self.count(&file.healthy, u64::from(defaults::HEALTHY_AFTER), 1, 100) as u32,
            unhealthy: self.count(
                &file.unhealthy,
                u64::from(defaults::UNHEALTHY_AFTER),
                1,
                100,
            ) as u32,
        }
    }
}

fn valid_backend_addr(addr: &str) -> bool {
    if addr.parse::<SocketAddr>().is_ok() {
        return true;
    }
    match addr.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && port.parse::<u16>().is_ok_and(|p| p > 0)
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        }
        None => false,
    }
}
