//! The shadow copier: a step's one object, shared by the routing snapshot (the request
//! path offers it requests) and the controller (which reads its counts for the verdict).
//!
//! The request path's cost: with no shadow step the route has no copier, so nothing. With
//! one, `offer` does a method check, one atomic sample counter and one atomic in-flight
//! counter; only a request that is copied is cloned, and the copy runs on its own task.
//! The client's answer never waits for it.
//!
//! A copy is sent to a NEW backend and, as the reference, to an OLD backend (and with
//! `noise: auto` to a second OLD backend), all at once, over connections the copier keeps apart from the live pools.

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use http::request::Parts;
use http::{Method, Uri};
use prometheus_client::metrics::counter::Counter;

use super::compare::{differences, SHOWN_FIELDS};
use super::exchange::{Answer, Outgoing, Reuse};
use super::report::{MismatchSample, ShadowCounts, ShadowReport};
use crate::config::ShadowSpec;
use crate::http1::encode::host_of;

/// Mismatches kept for `cutover diff`.
const SAMPLES: usize = 50;
/// Noise fields learned at most in one step.
const MAX_NOISE: usize = 1000;
/// Spreads the sample counter over 0..10000, so 10% is every tenth request, not the first
/// thousand of every ten thousand (7919 is prime, so coprime to 10000).
const SPREAD: u64 = 7919;

/// `cutover_shadow_requests_total{result}` for one service, in the order of `RESULTS`.
pub(crate) const RESULTS: [&str; 5] = ["match", "mismatch", "noise", "error", "dropped"];

#[derive(Debug, Default)]
struct Counts {
    matched: AtomicU64,
    mismatched: AtomicU64,
    noise: AtomicU64,
    /// OLD's reference failed: no comparison.
    old_error: AtomicU64,
    /// NEW failed where OLD answered: counted as a mismatch in the rate.
    new_error: AtomicU64,
    dropped: AtomicU64,
}

impl Counts {
    /// The counters as reports show them, each read once.
    fn snapshot(&self) -> ShadowCounts {
        let load = |counter: &AtomicU64| counter.load(Relaxed);
        let (matched, mismatched, noise) = (
            load(&self.matched),
            load(&self.mismatched),
            load(&self.noise),
        );
        let new_errors = load(&self.new_error);
        ShadowCounts {
            matched,
            mismatched,
            noise,
            errors: load(&self.old_error) + new_errors,
            new_errors,
            dropped: load(&self.dropped),
            // Noise counts as a comparison, not as a mismatch (docs/verify-shadow.md).
            comparisons: matched + noise + mismatched + new_errors,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Copier {
    spec: ShadowSpec,
    /// OLD's and NEW's backends, as the config last said (a reload may change them).
    backends: ArcSwap<Backends>,
    connect: std::time::Duration,
    basis_points: u64,
    active: AtomicBool,
    seen: AtomicU64,
    next: AtomicUsize,
    in_flight: AtomicUsize,
    counts: Counts,
    metrics: [Counter; 5],
    samples: Mutex<VecDeque<MismatchSample>>,
    noise: Mutex<BTreeSet<String>>,
    on_drained: OnDrained,
    /// Keep-alive connections of the copies, apart from the live pools.
    connections: Arc<Reuse>,
}

#[derive(Debug)]
struct Backends {
    old: Vec<Arc<str>>,
    new: Vec<Arc<str>>,
}

impl Backends {
    fn new(old: Vec<String>, new: Vec<String>) -> Backends {
        Backends {
            old: old.into_iter().map(Arc::from).collect(),
            new: new.into_iter().map(Arc::from).collect(),
        }
    }
}

/// Called when the copier is retired and no copy is left in flight: its counts are final.
#[derive(Default)]
struct OnDrained(Option<Box<dyn Fn() + Send + Sync>>);

impl std::fmt::Debug for OnDrained {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "OnDrained(set)"
        } else {
            "OnDrained(none)"
        })
    }
}

impl Copier {
    pub(crate) fn new(
        spec: ShadowSpec,
        old: Vec<String>,
        new: Vec<String>,
        connect: std::time::Duration,
        metrics: [Counter; 5],
    ) -> Copier {
        Copier {
            basis_points: (spec.percent * 10_000.0).round() as u64,
            spec,
            backends: ArcSwap::from_pointee(Backends::new(old, new)),
            connect,
            active: AtomicBool::new(true),
            seen: AtomicU64::new(0),
            next: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            counts: Counts::default(),
            metrics,
            samples: Mutex::new(VecDeque::new()),
            noise: Mutex::new(BTreeSet::new()),
            on_drained: OnDrained::default(),
            connections: Arc::default(),
        }
    }

    /// `callback` runs once the copier is retired and its last copy has counted (and again
    /// if a copy that raced the retirement counts later), so whoever shows the counts can
    /// show them final rather than as they were at the retirement.
    pub(crate) fn on_drained(mut self, callback: impl Fn() + Send + Sync + 'static) -> Self {
        self.on_drained = OnDrained(Some(Box::new(callback)));
        self
    }

    /// The pools' backends after a reload: the copies from now on go to these.
    pub(crate) fn set_backends(&self, old: Vec<String>, new: Vec<String>) {
        self.backends.store(Arc::new(Backends::new(old, new)));
    }

    /// Stops copying: the step is over (copies in flight still finish and count).
    pub(crate) fn retire(&self) {
        // SeqCst here and in `copy_done`: of a retirement and a last copy racing, at least
        // one sees the other and reports the drain.
        self.active.store(false, SeqCst);
        if self.in_flight.load(SeqCst) == 0 {
            self.drained();
        }
    }

    fn drained(&self) {
        if let Some(callback) = &self.on_drained.0 {
            callback();
        }
    }

    /// A copy has counted; the last one after the retirement says so.
    fn copy_done(&self) {
        if self.in_flight.fetch_sub(1, SeqCst) == 1 && !self.active.load(SeqCst) {
            self.drained();
        }
    }

    pub(crate) fn is_active(&self) -> bool {
        self.active.load(Relaxed)
    }

    /// The request path hands over a request OLD serves. Cheap unless it is copied.
    pub(crate) fn offer(self: &Arc<Self>, parts: &Parts, body: Option<&[Bytes]>) {
        if !self.active.load(Relaxed) || !self.spec.methods.contains(&parts.method) {
            return;
        }
        let n = self.seen.fetch_add(1, Relaxed);
        if n.wrapping_mul(SPREAD) % 10_000 >= self.basis_points {
            return;
        }
        // A body is copied only for methods listed explicitly, whole and within max_body;
        // a streamed body (not read ahead) cannot be copied at all.
        let body = match body {
            None => return,
            Some([]) => Bytes::new(),
            Some(_) if !self.spec.copy_bodies => return,
            Some(chunks) => {
                let len: usize = chunks.iter().map(Bytes::len).sum();
                if len > self.spec.max_body {
                    return;
                }
                let mut whole = BytesMut::with_capacity(len);
                chunks.iter().for_each(|c| whole.extend_from_slice(c));
                whole.freeze()
            }
        };
        if self.in_flight.fetch_add(1, SeqCst) >= self.spec.max_in_flight {
            self.counts.dropped.fetch_add(1, Relaxed);
            self.metrics[4].inc();
            self.copy_done();
            return;
        }
        let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        // An HTTP/2 client's authority is in the URI, not in a `Host` header.
        let host = parts.uri.authority().map(|a| host_of(a).as_bytes());
        let copy = Copy {
            request: Outgoing::new(parts.method.clone(), target, &parts.headers, host, body),
            method: parts.method.clone(),
            uri: parts.uri.clone(),
        };
        let copier = self.clone();
        tokio::spawn(async move {
            copier.run(copy).await;
            copier.copy_done();
        });
    }

    async fn run(&self, copy: Copy) {
        let turn = self.next.fetch_add(1, Relaxed);
        let backends = self.backends.load_full();
        let (olds, news) = (&backends.old, &backends.new);
        let old = &olds[turn % olds.len()];
        let new = &news[turn % news.len()];
        let second =
            (self.spec.noise_auto && olds.len() >= 2).then(|| &olds[(turn + 1) % olds.len()]);
        let send = |addr| self.send(addr, &copy.request);
        let (old_answer, new_answer, second_answer) = tokio::join!(send(old), send(new), async {
            match second {
                Some(addr) => Some(send(addr).await),
                None => None,
            }
        });
        let Ok(old_answer) = old_answer else {
            self.counts.old_error.fetch_add(1, Relaxed);
            self.metrics[3].inc();
            return;
        };
        if let Some(Ok(second)) = &second_answer {
            self.learn_noise(&old_answer, second);
        }
        let new_answer = match new_answer {
            Ok(answer) => answer,
            Err(error) => {
                self.counts.new_error.fetch_add(1, Relaxed);
                self.metrics[3].inc();
                self.sample(&copy, &old_answer, None, vec!["error".into()], Some(error));
                return;
            }
        };
        let found = differences(&self.spec, &old_answer, &new_answer);
        if found.fields.is_empty() {
            self.counts.matched.fetch_add(1, Relaxed);
            self.metrics[0].inc();
            return;
        }
        let all_noise = !found.capped && {
            let noise = self.lock_noise();
            found.fields.iter().all(|f| noise.contains(f))
        };
        if all_noise {
            self.counts.noise.fetch_add(1, Relaxed);
            self.metrics[2].inc();
        } else {
            self.counts.mismatched.fetch_add(1, Relaxed);
            self.metrics[1].inc();
            self.sample(
                &copy,
                &old_answer,
                Some(&new_answer),
                found.fields,
                found.excerpt,
            );
        }
    }

    /// Learns as noise the fields two OLD answers to one request disagree on, but only
    /// what can be noise: not the status or a whole body (one OLD backend failing would
    /// make every later failure of NEW noise), not from two answers of different status
    /// (an error page against a page), not a diff too long to list, and at most
    /// `MAX_NOISE` fields in all (keys that change with every answer would grow the set
    /// for good). What is not learned counts as a mismatch: fail closed.
    fn learn_noise(&self, old: &Answer, second: &Answer) {
        if old.status != second.status {
            return;
        }
        let found = differences(&self.spec, old, second);
        if found.capped {
            return;
        }
        let mut noise = self.lock_noise();
        for field in found.fields {
            if noise.len() >= MAX_NOISE {
                break;
            }
            if field != "status" && field != "body" {
                noise.insert(field);
            }
        }
    }

    async fn send(&self, addr: &Arc<str>, request: &Outgoing) -> Result<Answer, String> {
        let (connect, timeout, max) = (self.connect, self.spec.timeout, self.spec.max_body);
        (self.connections)
            .exchange(addr, request, connect, timeout, max)
            .await
    }

    fn sample(
        &self,
        copy: &Copy,
        old: &Answer,
        new: Option<&Answer>,
        fields: Vec<String>,
        excerpt: Option<String>,
    ) {
        let sample = MismatchSample {
            method: copy.method.to_string(),
            path: copy
                .uri
                .path_and_query()
                .map_or_else(|| "/".to_string(), |p| p.to_string()),
            old_status: old.status.as_u16(),
            new_status: new.map(|a| a.status.as_u16()),
            differing: fields.into_iter().take(SHOWN_FIELDS).collect(),
            body_diff: excerpt,
        };
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        if samples.len() == SAMPLES {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    fn lock_noise(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.noise.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Comparisons that count for the verdict, and the mismatching ones among them.
    pub(crate) fn tally(&self) -> (u64, u64) {
        let counts = self.counts.snapshot();
        (counts.comparisons, counts.bad())
    }

    pub(crate) fn report(&self) -> ShadowReport {
        let counts = self.counts.snapshot();
        ShadowReport {
            active: self.is_active(),
            mismatch_rate: counts.mismatch_rate(),
            counts,
            noise_fields: self.lock_noise().iter().cloned().collect(),
            mismatches: self
                .samples
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .cloned()
                .collect(),
        }
    }
}

/// A copied request, encoded once for every backend it goes to; the method and URI name
/// it in mismatch samples.
struct Copy {
    request: Outgoing,
    method: Method,
    uri: Uri,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copier() -> Copier {
        let spec = ShadowSpec {
            noise_auto: true,
            ..ShadowSpec::example()
        };
        let metrics = std::array::from_fn(|_| Counter::default());
        Copier::new(
            spec,
            Vec::new(),
            Vec::new(),
            std::time::Duration::ZERO,
            metrics,
        )
    }

    fn json(status: u16, body: &str) -> Answer {
        Answer::of(status, "application/json", body)
    }

    #[test]
    fn noise_is_learned_from_two_like_answers_only() {
        let copier = copier();
        // One OLD backend failing: nothing learned, or NEW's failures would be noise.
        copier.learn_noise(
            &json(200, r#"{"id":1}"#),
            &Answer::of(503, "text/plain", "down"),
        );
        copier.learn_noise(&json(500, r#"{"e":"x"}"#), &json(500, r#"{"e":"y"}"#));
        assert_eq!(copier.report().noise_fields, vec!["$.e"]);
        // A timestamp two healthy answers disagree on is noise; a whole body never.
        copier.learn_noise(&json(200, r#"{"ts":1}"#), &json(200, r#"{"ts":2}"#));
        copier.learn_noise(
            &Answer::of(200, "text/html", "a"),
            &Answer::of(200, "text/html", "b"),
        );
        assert_eq!(copier.report().noise_fields, vec!["$.e", "$.ts"]);
    }

    #[test]
    fn the_noise_learned_is_bounded() {
        let copier = copier();
        for i in 0..(MAX_NOISE + 10) {
            let key = |v: u8| json(200, &format!(r#"{{"k{i}":{v}}}"#));
            copier.learn_noise(&key(1), &key(2));
        }
        assert_eq!(copier.report().noise_fields.len(), MAX_NOISE);
    }
}
