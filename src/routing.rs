//! The routing snapshot: which service a request belongs to, and whether it goes to OLD or
//! NEW.
//!
//! There is exactly one `ArcSwap<Snapshot>`; only the controller stores into it. The
//! request path loads it, finds its route and picks by the weight already computed there.
//!
//! Every request gets a bucket in 0..10 000 and goes to NEW iff `bucket < weight` (in basis
//! points). A sticky user's bucket is fixed (a cookie, a header hash, a client-address
//! hash), so raising the weight only ever moves users from old to new. A request that is
//! not sticky takes the next value of a golden-ratio (Weyl) sequence, which spreads
//! buckets evenly: out of any N requests, NEW gets N × weight ± a few, with no randomness.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{header, HeaderMap, HeaderValue};

use crate::config::{HostPattern, Matcher, Sticky, Timeouts, Weight};
use crate::hash::fnv1a;
use crate::upstream::{Backend, Pool, PoolKind, PoolSettings, UpstreamRegistry};

pub(crate) const BUCKETS: u16 = 10_000;

pub(crate) type SharedSnapshot = Arc<ArcSwap<Snapshot>>;

mod index;

use index::RouteIndex;

/// What the request path reads: the services in match order, each with NEW's weight.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub routes: Vec<Route>,
    /// How `route` finds a request's route among many.
    index: RouteIndex,
    /// Increases with every snapshot the controller publishes.
    pub generation: u64,
    /// `access_log:`; `None` (off) costs the request path one test.
    pub(crate) access_log: Option<Arc<crate::access_log::AccessLog>>,
}

impl Snapshot {
    pub(crate) fn new(
        routes: Vec<Route>,
        generation: u64,
        access_log: Option<Arc<crate::access_log::AccessLog>>,
    ) -> Snapshot {
        Snapshot {
            index: RouteIndex::new(&routes),
            routes,
            generation,
            access_log,
        }
    }

    /// The first route whose hosts and path prefix match.
    #[inline]
    pub fn route(&self, host: &str, path: &str) -> Option<&Route> {
        self.index.find(&self.routes, host, path)
    }

    pub fn service(&self, name: &str) -> Option<&Route> {
        self.routes.iter().find(|r| &*r.service.name == name)
    }

    /// Every pool's backends, route after route.
    pub(crate) fn backends(&self) -> impl Iterator<Item = &Arc<Backend>> {
        self.routes
            .iter()
            .flat_map(|route| [&route.service.old, &route.service.new])
            .flat_map(|pool| &pool.backends)
    }
}

/// Closes backend connections left unused for their service's `timeouts.idle`, every
/// second (or every half of the shortest idle timeout, when shorter); ends with the app,
/// when `snapshot` is gone. A request checks the age of the connection it takes, but a
/// backend that no request picks any more (OLD after a cutover, or every backend once
/// traffic stops) would otherwise keep its connections open for good.
pub(crate) async fn close_expired_connections(snapshot: Weak<ArcSwap<Snapshot>>) {
    loop {
        let mut every = Duration::from_secs(1);
        {
            let Some(snapshot) = snapshot.upgrade() else {
                return;
            };
            let now_ms = crate::upstream::now_millis();
            for backend in snapshot.load().backends() {
                backend.close_expired(now_ms);
                every = every.min(backend.idle_timeout() / 2);
            }
        }
        tokio::time::sleep(every.max(Duration::from_millis(10))).await;
    }
}

/// A service as routed right now: its fixed parts, and NEW's current weight.
#[derive(Debug, Clone)]
pub struct Route {
    pub service: Arc<ServiceRoute>,
    pub new_weight: Weight,
    /// A shadow step's copier while one runs; `None` costs the request path nothing.
    pub(crate) shadow: Option<Arc<crate::shadow::Copier>>,
}

impl Route {
    pub fn pool(&self, kind: PoolKind) -> &Pool {
        match kind {
            PoolKind::Old => &self.service.old,
            PoolKind::New => &self.service.new,
        }
    }
}

/// The parts of a service that do not change with its weight.
#[derive(Debug)]
pub struct ServiceRoute {
    pub name: Arc<str>,
    pub matcher: Matcher,
    pub old: Pool,
    pub new: Pool,
    pub sticky: Option<Sticky>,
    pub timeouts: Timeouts,
    pub retries: u32,
    split: AtomicU64,
}

/// Where a request's bucket came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    /// Fixed for this user (or evenly spread, for requests that are not sticky).
    Known(u16),
    /// A first visit under cookie stickiness: remember it with `Set-Cookie`.
    Assigned(u16),
}

impl Bucket {
    pub fn value(self) -> u16 {
        match self {
            Bucket::Known(b) | Bucket::Assigned(b) => b,
        }
    }
}

impl ServiceRoute {
    pub fn new(
        name: &str,
        matcher: Matcher,
        old: Pool,
        new: Pool,
        sticky: Option<Sticky>,
        timeouts: Timeouts,
        retries: u32,
    ) -> ServiceRoute {
        ServiceRoute {
            name: Arc::from(name),
            matcher,
            old,
            new,
            sticky,
            timeouts,
            retries,
            split: AtomicU64::new(0),
        }
    }

    /// The request's bucket in 0..10 000.
    pub fn bucket(&self, headers: &HeaderMap, client: IpAddr) -> Bucket {
        match &self.sticky {
            None => Bucket::Known(self.next_spread_bucket()),
            Some(Sticky::Cookie(name)) => match cookie_bucket(headers, name) {
                Some(bucket) => Bucket::Known(bucket),
                None => Bucket::Assigned(rand::random_range(0..BUCKETS)),
            },
            Some(Sticky::Header(name)) => match headers.get(name) {
                Some(value) => Bucket::Known(hash_bucket(value.as_bytes())),
                None => Bucket::Known(self.next_spread_bucket()),
            },
            Some(Sticky::ClientIp) => Bucket::Known(match client {
                IpAddr::V4(ip) => hash_bucket(&ip.octets()),
                IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
                    Some(v4) => hash_bucket(&v4.octets()),
                    None => hash_bucket(&ip.octets()),
                },
            }),
        }
    }

    fn next_spread_bucket(&self) -> u16 {
        spread_bucket(self.split.fetch_add(1, Relaxed))
    }

    /// The `Set-Cookie` value that pins a user to `bucket`.
    pub fn sticky_cookie(&self, bucket: u16) -> Option<HeaderValue> {
        let Some(Sticky::Cookie(name)) = &self.sticky else {
            return None;
        };
        HeaderValue::from_str(&format!(
            "{name}={bucket}; Path=/; Max-Age=2592000; HttpOnly; SameSite=Lax"
        ))
        .ok()
    }
}

/// Builds the fixed parts of a service's route, reusing the registry's backends.
pub(crate) fn build_service(
    service: &crate::config::Service,
    registry: &mut UpstreamRegistry,
    spawner: &tokio::runtime::Handle,
) -> Arc<ServiceRoute> {
    let settings = || PoolSettings {
        balance: service.balance,
        outlier: service.outlier,
        timeouts: service.timeouts,
        health_check: service.health_check.as_ref(),
        spawner,
    };
    let old = registry.pool(&service.name, PoolKind::Old, &service.old, settings());
    let new = registry.pool(&service.name, PoolKind::New, &service.new, settings());
    Arc::new(ServiceRoute::new(
        &service.name,
        service.matcher.clone(),
        old,
        new,
        service.sticky.clone(),
        service.timeouts,
        service.retries,
    ))
}

/// The n-th value of the golden-ratio sequence, scaled to 0..10 000.
pub fn spread_bucket(n: u64) -> u16 {
    let fraction = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
    ((fraction * u64::from(BUCKETS)) >> 32) as u16
}

/// A stable hash (the same on every cutover instance and across restarts) to a bucket.
pub(crate) fn hash_bucket(bytes: &[u8]) -> u16 {
    (fnv1a(bytes) % u64::from(BUCKETS)) as u16
}

fn cookie_bucket(headers: &HeaderMap, name: &str) -> Option<u16> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            let bucket = value.trim().parse::<u16>().ok()?;
            (key == name && bucket < BUCKETS).then_some(bucket)
        })
}

/// Host (without port, any case) and path against a service's match rules.
pub(crate) fn matches(matcher: &Matcher, host: &str, path: &str) -> bool {
    path.starts_with(matcher.path_prefix.as_str()) && host_matches(matcher, host)
}

/// Host (without port, any case) against a service's host patterns.
fn host_matches(matcher: &Matcher, host: &str) -> bool {
    if matcher.hosts.is_empty() {
        return true;
    }
    matcher.hosts.iter().any(|pattern| match pattern {
        HostPattern::Exact(name) => host.eq_ignore_ascii_case(name),
        HostPattern::Suffix(suffix) => {
            host.len() > suffix.len()
                && host.as_bytes()[host.len() - suffix.len()..]
                    .eq_ignore_ascii_case(suffix.as_bytes())
        }
    })
}

/// The host of an authority or Host header, without its port: `api.x.com:443` → `api.x.com`,
/// `[::1]:80` → `[::1]`.
pub(crate) fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(end) => &authority[..=end],
            None => authority,
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Balance, Outlier};

    /// A route with `matcher` and empty pools, for tests of matching.
    pub(super) fn route_with(name: &str, matcher: Matcher) -> Route {
        let pool = |kind| {
            let stats = Arc::default();
            Pool::new(
                kind,
                Vec::new(),
                Balance::RoundRobin,
                Outlier::default(),
                stats,
            )
        };
        let (old, new) = (pool(PoolKind::Old), pool(PoolKind::New));
        let service = ServiceRoute::new(name, matcher, old, new, None, Timeouts::default(), 0);
        Route {
            service: Arc::new(service),
            new_weight: Weight::default(),
            shadow: None,
        }
    }

    fn matcher(hosts: &[&str], prefix: &str) -> Matcher {
        Matcher {
            hosts: hosts
                .iter()
                .map(|h| match h.strip_prefix("*.") {
                    Some(rest) => HostPattern::Suffix(format!(".{rest}")),
                    None => HostPattern::Exact(h.to_string()),
                })
                .collect(),
            path_prefix: prefix.to_string(),
        }
    }

    #[test]
    fn host_and_path_matching() {
        let m = matcher(&["api.example.com", "*.api.example.com"], "/v1");
        assert!(matches(&m, "api.example.com", "/v1/items"));
        assert!(matches(&m, "API.Example.com", "/v1"));
        assert!(matches(&m, "eu.api.example.com", "/v1/x"));
        assert!(!matches(&m, "xapi.example.com", "/v1"));
        assert!(!matches(&m, "api.example.com", "/v2"));
        assert!(!matches(&m, ".api.example.com", "/v1"));
        assert!(matches(&matcher(&[], "/"), "anything", "/"));
    }

    #[test]
    fn ports_are_stripped() {
        assert_eq!(strip_port("api.example.com:8443"), "api.example.com");
        assert_eq!(strip_port("api.example.com"), "api.example.com");
        assert_eq!(strip_port("[::1]:8080"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
    }

    #[test]
    fn the_spread_sequence_is_even_over_short_runs() {
        for weight in [1u16, 50, 500, 2_500, 5_000, 9_500] {
            for run in [200u64, 1_000, 10_000] {
                let to_new = (0..run).filter(|n| spread_bucket(*n) < weight).count() as f64;
                let expected = run as f64 * f64::from(weight) / 10_000.0;
                assert!(
                    (to_new - expected).abs() <= 3.0,
                    "weight {weight} run {run}: {to_new} vs {expected}"
                );
            }
        }
    }

    #[test]
    fn cookie_buckets_are_read_from_any_cookie_header() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; cutover_api=4242"),
        );
        assert_eq!(cookie_bucket(&headers, "cutover_api"), Some(4242));
        assert_eq!(cookie_bucket(&headers, "cutover"), None);
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("cutover_api=10000"),
        );
        assert_eq!(cookie_bucket(&headers, "cutover_api"), None);
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("x=y;cutover_api=7"),
        );
        assert_eq!(cookie_bucket(&headers, "cutover_api"), Some(7));
    }

    #[test]
    fn hash_buckets_are_stable() {
        assert_eq!(hash_bucket(b"user-1"), hash_bucket(b"user-1"));
        assert!(hash_bucket(b"user-1") < BUCKETS);
        let distinct: std::collections::HashSet<u16> = (0..1000)
            .map(|i| hash_bucket(format!("user-{i}").as_bytes()))
            .collect();
        assert!(distinct.len() > 900);
    }
}
