//! Finding a request's route among many services without testing each in turn.
//!
//! The first route in config order whose path prefix and hosts match wins. With a handful
//! of routes, testing them in order is cheapest. With more, the index looks the request's
//! path up once per distinct prefix length (`/a/` and `/b/` share one lookup) and tests
//! hosts only on the routes whose prefix is exactly that part of the path; the smallest
//! matching position wins, as in the linear scan.

use std::collections::HashMap;

use super::{host_matches, matches, Route};

/// Up to this many routes, a linear scan (no hashing) is cheaper than the index.
const LINEAR_UP_TO: usize = 8;

#[derive(Debug, Default)]
pub(super) struct RouteIndex {
    /// The distinct prefix lengths, shortest first; empty when routes are few.
    lengths: Vec<usize>,
    /// Path prefix → the positions of the routes with that prefix, in config order.
    by_prefix: HashMap<Box<str>, Vec<usize>>,
}

impl RouteIndex {
    pub(super) fn new(routes: &[Route]) -> RouteIndex {
        let mut index = RouteIndex::default();
        if routes.len() <= LINEAR_UP_TO {
            return index;
        }
        for (position, route) in routes.iter().enumerate() {
            let prefix = route.service.matcher.path_prefix.as_str();
            index
                .by_prefix
                .entry(prefix.into())
                .or_default()
                .push(position);
            index.lengths.push(prefix.len());
        }
        index.lengths.sort_unstable();
        index.lengths.dedup();
        index
    }

    /// The first route (in config order) that matches `host` and `path`.
    pub(super) fn find<'r>(
        &self,
        routes: &'r [Route],
        host: &str,
        path: &str,
    ) -> Option<&'r Route> {
        if self.lengths.is_empty() {
            return routes
                .iter()
                .find(|route| matches(&route.service.matcher, host, path));
        }
        let mut first: Option<usize> = None;
        for &length in &self.lengths {
            let Some(prefix) = path.get(..length) else {
                if length > path.len() {
                    break;
                }
                continue;
            };
            let Some(positions) = self.by_prefix.get(prefix) else {
                continue;
            };
            let found = positions
                .iter()
                .copied()
                .take_while(|&p| first.is_none_or(|f| p < f))
                .find(|&p| host_matches(&routes[p].service.matcher, host));
            if found.is_some() {
                first = found;
            }
        }
        first.map(|p| &routes[p])
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::{HostPattern, Matcher};
    use crate::routing::tests::route_with;

    /// A small deterministic generator, so the comparison covers many shapes repeatably.
    struct Lcg(u64);

    impl Lcg {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) % n
        }
    }

    #[test]
    fn the_index_finds_what_testing_every_route_in_order_finds() {
        let prefixes = [
            "", "/", "/a", "/a/", "/ab", "/b/c", "/é", "/s1/", "/s10/", "/s1",
        ];
        let hosts = ["api.test", "*.test", "other.test"];
        let paths = [
            "/", "/a", "/a/x", "/ab/c", "/b/c/d", "/é/x", "/s1/", "/s10/x", "/s1x", "",
        ];
        let mut rng = Lcg(7);
        for _ in 0..300 {
            let routes: Vec<Route> = (0..9 + rng.below(30))
                .map(|i| {
                    let prefix = prefixes[rng.below(prefixes.len() as u64) as usize];
                    let host_patterns = (0..rng.below(3))
                        .map(|_| match hosts[rng.below(hosts.len() as u64) as usize] {
                            h if h.starts_with("*.") => HostPattern::Suffix(h[1..].to_string()),
                            h => HostPattern::Exact(h.to_string()),
                        })
                        .collect();
                    let matcher = Matcher {
                        hosts: host_patterns,
                        path_prefix: prefix.to_string(),
                    };
                    route_with(&format!("s{i}"), matcher)
                })
                .collect();
            let index = RouteIndex::new(&routes);
            assert!(!index.lengths.is_empty());
            for host in ["api.test", "x.test", "none"] {
                for path in paths {
                    let linear = routes
                        .iter()
                        .position(|r| matches(&r.service.matcher, host, path));
                    let indexed = index.find(&routes, host, path).map(|r| {
                        routes
                            .iter()
                            .position(|x| Arc::ptr_eq(&x.service, &r.service))
                            .unwrap()
                    });
                    assert_eq!(indexed, linear, "host {host} path {path}");
                }
            }
        }
    }
}
