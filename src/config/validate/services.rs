//! `services:`: names, matchers (and which service shadows which), the split, smoke
//! requests; the pools and per-backend settings are in `pools.rs`.

use std::sync::Arc;

use super::Checker;
use crate::config::de::Spanned;
use crate::config::defaults;
use crate::config::file::{List, MatchFile, ServiceFile};
use crate::config::model::*;
use crate::config::yaml::Mark;

impl Checker<'_> {
    pub(super) fn services(&mut self, services: &List<ServiceFile>, top: Mark) -> Vec<Service> {
        let services =
            self.required_list(services, top, "services", "at least one service is needed");
        let mut names: Vec<(String, Mark)> = Vec::new();
        let mut out: Vec<(Service, Mark)> = Vec::new();
        for service in services {
            let Some(built) = self.service(service) else {
                continue;
            };
            let name_mark = service.value.name.as_ref().map_or(service.mark, |n| n.mark);
            if let Some((_, first)) = names.iter().find(|(n, _)| *n == built.name) {
                self.error(
                    name_mark,
                    format!(
                        "service `{}` is defined twice (first at line {})",
                        built.name, first.line
                    ),
                );
            }
            names.push((built.name.clone(), name_mark));
            for (earlier, earlier_mark) in &out {
                if shadows(&earlier.matcher, &built.matcher) {
                    self.error(
                        name_mark,
                        format!(
                            "service `{}` is never reached: service `{}` (line {}) matches all \
                             of its requests first",
                            built.name, earlier.name, earlier_mark.line
                        ),
                    );
                    break;
                }
            }
            out.push((built, name_mark));
        }
        out.into_iter().map(|(service, _)| service).collect()
    }

    pub(super) fn service(&mut self, service: &Spanned<ServiceFile>) -> Option<Service> {
        let file = &service.value;
        let name = self.required(&file.name, service.mark, "name");
        if let Some(name) = name {
            self.service_name(name);
        }
        let matcher = self.matcher(file.matcher.as_ref());
        let old = self.pool(&file.old, service.mark, "old");
        let new = self.pool(&file.new, service.mark, "new");
        let balance = file
            .balance
            .as_ref()
            .map_or(defaults::BALANCE, |b| self.balance(b));
        let sticky = file.sticky.as_ref().and_then(|s| self.sticky(s));
        let timeouts = self.timeouts(file.timeouts.as_ref());
        let retries = file.retries.as_ref().map_or(defaults::RETRIES, |r| {
            self.count(&r.attempts, u64::from(defaults::RETRIES), 0, 10) as u32
        });
        let outlier = file
            .outlier
            .as_ref()
            .map(|o| self.outlier(o))
            .unwrap_or_default();
        let health_check = file.health_check.as_ref().map(|h| self.health_check(h));
        let weight = match &file.weight {
            None => Weight::ZERO,
            Some(w) => self.weight(w).unwrap_or(Weight::ZERO),
        };
        let hooks = self.hooks(file.hooks.as_ref());
        let rollout = file.rollout.as_ref().and_then(|r| self.rollout(r, &hooks));
        let smoke = file
            .smoke
            .iter()
            .flatten()
            .filter_map(|s| self.smoke(s))
            .collect::<Vec<_>>();
        self.verify_has_smoke(file, rollout.as_ref(), smoke.is_empty());
        Some(Service {
            name: name?.value.clone(),
            matcher,
            old: old?,
            new: new?,
            balance,
            sticky,
            timeouts,
            retries,
            outlier,
            health_check,
            weight,
            rollout,
            smoke,
            hooks: hooks.into_iter().map(|(hook, _)| Arc::new(hook)).collect(),
        })
    }

    /// Service names end up in metric labels, state file names and URLs.
    fn service_name(&mut self, name: &Spanned<String>) {
        let valid = !name.value.is_empty()
            && name
                .value
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !valid {
            self.error(
                name.mark,
                format!(
                    "service name `{}` may hold only a-z, 0-9, `_` and `-`",
                    name.value
                ),
            );
        }
    }

    fn balance(&mut self, balance: &Spanned<String>) -> Balance {
        match balance.value.as_str() {
            "round_robin" => Balance::RoundRobin,
            "least_request" => Balance::LeastRequest,
            "random" => Balance::Random,
            other => {
                self.error(
                    balance.mark,
                    format!(
                        "unknown balance `{other}`; expected `round_robin`, `least_request` or `random`"
                    ),
                );
                Balance::RoundRobin
            }
        }
    }

    pub(super) fn matcher(&mut self, matcher: Option<&MatchFile>) -> Matcher {
        let Some(matcher) = matcher else {
            return Matcher {
                hosts: Vec::new(),
                path_prefix: defaults::PATH_PREFIX.to_string(),
            };
        };
        let mut hosts = Vec::new();
        for host in matcher.hosts.iter().flatten() {
            let text = host.value.trim().to_ascii_lowercase();
            let (pattern, name) = match text.strip_prefix("*.") {
                Some(rest) => (HostPattern::Suffix(format!(".{rest}")), rest.to_string()),
                None => (HostPattern::Exact(text.clone()), text.clone()),
            };
            let valid = !name.is_empty()
                && name.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b':' || b == b'_'
                });
            if valid {
                hosts.push(pattern);
            } else {
                self.error(
                    host.mark,
                    format!(
                        "`{}` is not a host name (write `api.example.com` or `*.example.com`)",
                        host.value
                    ),
                );
            }
        }
        let path_prefix = match &matcher.path_prefix {
            None => defaults::PATH_PREFIX.to_string(),
            Some(p) if p.value.starts_with('/') => p.value.clone(),
            Some(p) => {
                self.error(
                    p.mark,
                    format!("`path_prefix` must start with `/`, got `{}`", p.value),
                );
                defaults::PATH_PREFIX.to_string()
            }
        };
        Matcher { hosts, path_prefix }
    }
}

/// `earlier` takes every request `later` would: `later` can never match.
fn shadows(earlier: &Matcher, later: &Matcher) -> bool {
    let hosts_covered = earlier.hosts.is_empty()
        || (!later.hosts.is_empty() && later.hosts.iter().all(|h| earlier.hosts.contains(h)));
    hosts_covered && later.path_prefix.starts_with(&earlier.path_prefix)
}
