//! What Prometheus makes of `/metrics`: histograms parsed from the exposition and their
//! quantiles computed as `histogram_quantile` does, `promtool check metrics`, and a real
//! Prometheus server scraping a proxy.
//!
//! promtool and prometheus come from Debian's `prometheus` package (`.ci/run` installs it).
//! Without them a test fails when `CI=true` and prints a loud SKIP line otherwise.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use tokio::io::AsyncWriteExt;

use super::binary::free_port;
use super::client::send;

/// One histogram series as exposed: `(le, cumulative count)` in order, sum and count.
#[derive(Debug, Clone)]
pub struct ExposedHistogram {
    pub buckets: Vec<(String, f64)>,
    pub sum: f64,
    pub count: f64,
}

/// The histogram `name` whose labels, apart from `le`, are exactly `labels` (as written,
/// e.g. `service="api",pool="new"`, in any order), from an exposition text.
pub fn exposed_histogram(text: &str, name: &str, labels: &str) -> ExposedHistogram {
    let mut wanted = split_labels(labels);
    wanted.sort();
    let mut buckets = Vec::new();
    let mut sum = None;
    let mut count = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Some((metric, rest)) = series.split_once('{') else {
            continue;
        };
        let mut found = split_labels(rest.strip_suffix('}').unwrap_or(rest));
        let le = found
            .iter()
            .position(|(k, _)| k == "le")
            .map(|i| found.remove(i).1);
        found.sort();
        if found != wanted {
            continue;
        }
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line}"));
        match (metric.strip_prefix(name), le) {
            (Some("_bucket"), Some(le)) => buckets.push((le, value)),
            (Some("_sum"), None) => sum = Some(value),
            (Some("_count"), None) => count = Some(value),
            _ => {}
        }
    }
    assert!(
        !buckets.is_empty(),
        "no {name}_bucket{{{labels}}} in:\n{text}"
    );
    ExposedHistogram {
        buckets,
        sum: sum.unwrap_or_else(|| panic!("no {name}_sum{{{labels}}} in:\n{text}")),
        count: count.unwrap_or_else(|| panic!("no {name}_count{{{labels}}} in:\n{text}")),
    }
}

/// `a="x",b="y"` as pairs; label values here never hold commas or quotes.
fn split_labels(labels: &str) -> Vec<(String, String)> {
    labels
        .split(',')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair
                .split_once('=')
                .unwrap_or_else(|| panic!("bad label {pair}"));
            (key.to_string(), value.trim_matches('"').to_string())
        })
        .collect()
}

/// The `q` quantile the way Prometheus' `histogram_quantile` computes it: the rank's
/// bucket by cumulative count, linear interpolation inside it (from 0 for the first
/// bucket), the highest finite bound when the rank falls in `+Inf`. `le` must parse as
/// Prometheus parses it (`+Inf`, decimals), or this panics: a bad label is a bad exposition.
pub fn histogram_quantile(q: f64, buckets: &[(String, f64)]) -> f64 {
    let parsed: Vec<(f64, f64)> = buckets
        .iter()
        .map(|(le, count)| {
            let bound = match le.as_str() {
                "+Inf" => f64::INFINITY,
                other => other
                    .parse::<f64>()
                    .ok()
                    .filter(|b| b.is_finite())
                    .unwrap_or_else(|| panic!("le=\"{other}\" is not a Prometheus bound")),
            };
            (bound, *count)
        })
        .collect();
    let Some(&(last_bound, total)) = parsed.last() else {
        return f64::NAN;
    };
    assert_eq!(last_bound, f64::INFINITY, "the last bucket must be +Inf");
    if total == 0.0 {
        return f64::NAN;
    }
    let rank = q * total;
    let index = parsed
        .iter()
        .position(|&(_, count)| count >= rank)
        .unwrap_or(parsed.len() - 1);
    if index == parsed.len() - 1 {
        return parsed
            .get(parsed.len().wrapping_sub(2))
            .map_or(0.0, |b| b.0);
    }
    let (upper, count) = parsed[index];
    let (lower, below) = if index == 0 {
        (0.0, 0.0)
    } else {
        parsed[index - 1]
    };
    lower + (upper - lower) * (rank - below) / (count - below)
}

/// Runs `promtool check metrics` on `text`: exit code and everything it printed.
pub async fn promtool_check_metrics(promtool: &std::path::Path, text: &str) -> (i32, String) {
    let mut child = tokio::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("promtool starts");
    let mut stdin = child.stdin.take().expect("promtool's stdin");
    stdin.write_all(text.as_bytes()).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("promtool finishes within 30s")
        .unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), printed)
}

/// A Prometheus server on 127.0.0.1 scraping one target's `/metrics`, with its storage in
/// a temporary directory; killed when dropped.
pub struct PrometheusServer {
    pub addr: SocketAddr,
    child: tokio::process::Child,
    dir: tempfile::TempDir,
}

impl PrometheusServer {
    /// Starts `prometheus` scraping `target` every `every`, and waits until it is ready.
    pub async fn start(prometheus: &std::path::Path, target: SocketAddr, every: &str) -> Self {
        let mut dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: {every}\n  scrape_timeout: {every}\n\
                 scrape_configs:\n  - job_name: cutover\n    metrics_path: /metrics\n    \
                 static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .unwrap();
        for _attempt in 0..3 {
            let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
            let child = tokio::process::Command::new(prometheus)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .expect("prometheus starts");
            let mut server = PrometheusServer { addr, child, dir };
            if server.ready(Duration::from_secs(20)).await {
                return server;
            }
            let _ = server.child.kill().await;
            dir = server.into_dir();
        }
        panic!("prometheus did not become ready in three attempts");
    }

    fn into_dir(self) -> tempfile::TempDir {
        let PrometheusServer { dir, .. } = self;
        dir
    }

    async fn ready(&mut self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if let Ok(stream) = tokio::net::TcpStream::connect(self.addr).await {
                drop(stream);
                let got = send(self.addr, get_path("/-/ready")).await;
                if got.status.is_success() {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// Prometheus' log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// An instant query through `/api/v1/query`: every result's labels and value.
    pub async fn query(&self, promql: &str) -> Vec<(serde_json::Value, f64)> {
        let path = format!("/api/v1/query?query={}", percent_encode(promql));
        let got = send(self.addr, get_path(&path)).await;
        let json: serde_json::Value = serde_json::from_str(&got.body)
            .unwrap_or_else(|e| panic!("{e}: {} {}", got.status, got.body));
        assert_eq!(json["status"], "success", "{promql}\n{json}");
        json["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|series| {
                let value = series["value"][1]
                    .as_str()
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(f64::NAN);
                (series["metric"].clone(), value)
            })
            .collect()
    }
}

fn get_path(path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header("host", "prometheus")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
