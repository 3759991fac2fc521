//! Reload storm: what does reloading the proxy's configuration cost the
//! traffic flowing through it?
//!
//! Two phases with the same open-loop load: a quiet phase with no reloads
//! (the baseline), then a storm phase during which the config file is
//! rewritten every `interval`, and optionally a reload is requested through
//! the admin API after each rewrite. The report puts both phases side by
//! side so the difference is the cost of reloading.
//!
//! Every rewrite produces a different but valid file: the original content
//! plus a trailing comment line `# loadtest-reload N`. Files are replaced
//! atomically (write a temporary file in the same directory, fsync, rename
//! over the original) the way editors and config management do, so a reader
//! sees either the old or the new file, never half of one. The original
//! bytes are put back at the end, also when the run fails or is interrupted.

use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::header::{HeaderValue, AUTHORIZATION};
use hyper::StatusCode;
use serde::Serialize;
use tokio::time::Instant;

use crate::client::Connection;
use crate::duration::format_duration;
use crate::load::{self, LoadPlan, PlanError};
use crate::report::{new_histogram, LatencySummary, LoadReport};
use crate::target::{Target, TargetError};

/// Why a reload storm could not run (problems with the target itself are
/// counted in the report instead).
#[derive(Debug, thiserror::Error)]
pub enum StormError {
    #[error("cannot read config file {path}: {source}")]
    ReadConfig { path: PathBuf, source: io::Error },
    #[error("cannot read token file {path}: {source}")]
    ReadToken { path: PathBuf, source: io::Error },
    #[error("token file {0} is empty")]
    EmptyToken(PathBuf),
    #[error("the token is not a valid HTTP header value")]
    BadToken,
    #[error("invalid --admin URL: {0}")]
    Admin(#[from] TargetError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("--reloads must be at least 1")]
    Reloads,
    #[error("--interval and --quiet must be more than zero")]
    Timing,
    #[error("rewriting the config file failed: {0}")]
    Rewrite(io::Error),
    #[error("restoring the original config file {path} failed: {source}")]
    Restore { path: PathBuf, source: io::Error },
}

/// Where to ask for a reload after each rewrite.
#[derive(Debug, Clone)]
pub struct AdminPlan {
    target: Arc<Target>,
    timeout: Duration,
}

impl AdminPlan {
    /// `POST {admin}/reload`, with a bearer token if given.
    pub fn new(admin: &str, token: Option<&str>, timeout: Duration) -> Result<Self, StormError> {
        let url = format!("{}/reload", admin.trim_end_matches('/'));
        let mut target = Target::parse(&url, "POST", &[])?;
        if let Some(token) = token {
            let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| StormError::BadToken)?;
            // Keeps the token out of any debug output of the header map.
            value.set_sensitive(true);
            target.insert_header(AUTHORIZATION, value);
        }
        Ok(Self {
            target: Arc::new(target),
            timeout,
        })
    }
}

/// Reads a bearer token from a file, ignoring surrounding whitespace (files
/// usually end with a newline).
pub fn read_token(path: &Path) -> Result<String, StormError> {
    let raw = fs::read_to_string(path).map_err(|source| StormError::ReadToken {
        path: path.to_path_buf(),
        source,
    })?;
    let token = raw.trim();
    if token.is_empty() {
        return Err(StormError::EmptyToken(path.to_path_buf()));
    }
    Ok(token.to_string())
}

/// A complete reload-storm run.
#[derive(Debug, Clone)]
pub struct StormPlan {
    /// The load for both phases; its duration is replaced per phase.
    pub load: LoadPlan,
    pub config: PathBuf,
    pub reloads: u32,
    pub interval: Duration,
    pub quiet: Duration,
    pub admin: Option<AdminPlan>,
}

impl StormPlan {
    pub fn validate(&self) -> Result<(), StormError> {
        if self.reloads == 0 {
            return Err(StormError::Reloads);
        }
        if self.interval.is_zero() || self.quiet.is_zero() {
            return Err(StormError::Timing);
        }
        Ok(())
    }

    /// The storm phase lasts one interval per reload, so the last rewrite
    /// still has a full interval of traffic after it.
    fn storm_duration(&self) -> Duration {
        self.interval.saturating_mul(self.reloads)
    }
}

/// What the reloads themselves did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReloadTally {
    pub requested: u32,
    /// Config rewrites done.
    pub rewrites: u32,
    /// Admin `POST /reload` calls made, and how they went.
    pub admin_posts: u32,
    pub admin_ok: u32,
    pub admin_non_200: u32,
    pub admin_errors: u32,
    pub admin_latency_us: LatencySummary,
}

/// Both phases side by side.
#[derive(Debug, Clone, Serialize)]
pub struct StormReport {
    pub quiet: LoadReport,
    pub storm: LoadReport,
    pub reloads: ReloadTally,
}

impl StormReport {
    /// What `--max-errors` is compared against: requests that failed during
    /// the storm plus reloads the admin API did not accept.
    pub fn storm_failures(&self) -> u64 {
        self.storm.failures
            + u64::from(self.reloads.admin_non_200)
            + u64::from(self.reloads.admin_errors)
    }

    pub fn render_text(&self) -> String {
        let (q, s) = (&self.quiet, &self.storm);
        let rows: Vec<(&str, String, String)> = vec![
            ("schedule", seconds(q.duration_s), seconds(s.duration_s)),
            ("target rate", rate(q.target_rate), rate(s.target_rate)),
            (
                "achieved rate",
                rate(q.achieved_rate),
                rate(s.achieved_rate),
            ),
            (
                "responses",
                q.responses.to_string(),
                s.responses.to_string(),
            ),
            (
                "p50",
                micros(&q.latency_us, q.latency_us.p50),
                micros(&s.latency_us, s.latency_us.p50),
            ),
            (
                "p90",
                micros(&q.latency_us, q.latency_us.p90),
                micros(&s.latency_us, s.latency_us.p90),
            ),
            (
                "p99",
                micros(&q.latency_us, q.latency_us.p99),
                micros(&s.latency_us, s.latency_us.p99),
            ),
            (
                "p99.9",
                micros(&q.latency_us, q.latency_us.p999),
                micros(&s.latency_us, s.latency_us.p999),
            ),
            (
                "max",
                micros(&q.latency_us, q.latency_us.max),
                micros(&s.latency_us, s.latency_us.max),
            ),
            ("5xx", q.status.s5xx.to_string(), s.status.s5xx.to_string()),
            (
                "transport errors",
                q.errors.total().to_string(),
                s.errors.total().to_string(),
            ),
        ];
        let mut out = format!(
            "{} {}\n{:<18}{:>14}{:>14}\n",
            q.method, q.url, "", "quiet", "storm"
        );
        for (label, quiet, storm) in rows {
            out.push_str(&format!("{label:<18}{quiet:>14}{storm:>14}\n"));
        }
        let r = &self.reloads;
        out.push_str(&format!(
            "reloads           {} of {} file rewrites",
            r.rewrites, r.requested
        ));
        if r.admin_posts > 0 {
            out.push_str(&format!(
                "; admin POST /reload: {} sent, {} ok, {} non-200, {} errors, {}",
                r.admin_posts,
                r.admin_ok,
                r.admin_non_200,
                r.admin_errors,
                r.admin_latency_us.render()
            ));
        }
        out.push('\n');
        for (phase, report) in [("quiet", q), ("storm", s)] {
            for (message, count) in &report.error_samples {
                out.push_str(&format!("{phase} error       {count} x {message}\n"));
            }
        }
        out
    }
}

fn seconds(value: f64) -> String {
    format_duration(Duration::from_secs_f64(value))
}

fn rate(value: f64) -> String {
    format!("{value:.1}/s")
}

fn micros(summary: &LatencySummary, value: u64) -> String {
    if summary.count == 0 {
        "-".to_string()
    } else {
        crate::duration::format_micros(value)
    }
}

/// Runs the quiet phase, then the storm phase, then restores the config
/// file. The file is restored on every exit path: normally here, and by
/// `RestoreGuard` if this future fails or is dropped (Ctrl-C).
pub async fn run(plan: &StormPlan) -> Result<StormReport, StormError> {
    plan.validate()?;
    let file = ConfigFile::open(&plan.config)?;
    let guard = RestoreGuard(Arc::clone(&file));

    let quiet = load::run(&plan.load.clone().with_duration(plan.quiet)).await;

    let storm_load = plan.load.clone().with_duration(plan.storm_duration());
    let start = Instant::now();
    // try_join: if a rewrite fails there is no point finishing the load.
    let outcome = tokio::try_join!(
        async { Ok::<_, StormError>(load::run(&storm_load).await) },
        rewrite_loop(&file, plan, start),
    );

    guard.restore()?;
    let (storm, reloads) = outcome?;
    Ok(StormReport {
        quiet,
        storm,
        reloads,
    })
}

/// Rewrites the file `reloads` times, one `interval` apart starting at
/// `start`, asking the admin API to reload after each rewrite.
async fn rewrite_loop(
    file: &Arc<ConfigFile>,
    plan: &StormPlan,
    start: Instant,
) -> Result<ReloadTally, StormError> {
    let mut tally = ReloadTally {
        requested: plan.reloads,
        ..ReloadTally::default()
    };
    let mut admin_latency = new_histogram();
    let mut admin = plan
        .admin
        .as_ref()
        .map(|admin| (admin, Connection::new(Arc::clone(&admin.target))));
    for n in 1..=plan.reloads {
        tokio::time::sleep_until(start + plan.interval.saturating_mul(n - 1)).await;
        let writer = Arc::clone(file);
        // fsync can take a while on a busy disk; keep it off the threads
        // that drive the load.
        let written = tokio::task::spawn_blocking(move || writer.rewrite(n))
            .await
            .map_err(|e| StormError::Rewrite(io::Error::other(e)))?
            .map_err(StormError::Rewrite)?;
        if !written {
            break;
        }
        tally.rewrites += 1;
        if let Some((plan, connection)) = admin.as_mut() {
            post_reload(plan, connection, &mut tally, &mut admin_latency).await;
        }
    }
    tally.admin_latency_us = LatencySummary::from_histogram(&admin_latency);
    Ok(tally)
}

/// One `POST /reload`; failures are counted, not fatal, because how the
/// proxy copes with a storm of reloads is what is being measured.
async fn post_reload(
    admin: &AdminPlan,
    connection: &mut Connection,
    tally: &mut ReloadTally,
    latency: &mut hdrhistogram::Histogram<u64>,
) {
    tally.admin_posts += 1;
    let began = Instant::now();
    let mut sent = None;
    let outcome = tokio::time::timeout(admin.timeout, connection.exchange(None, &mut sent)).await;
    match outcome {
        Ok(Ok(exchange)) => {
            let micros = u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX);
            latency.saturating_record(micros);
            if exchange.status == StatusCode::OK {
                tally.admin_ok += 1;
            } else {
                tally.admin_non_200 += 1;
            }
        }
        Ok(Err(_)) => tally.admin_errors += 1,
        Err(_elapsed) => {
            connection.reset();
            tally.admin_errors += 1;
        }
    }
}

/// The config file under test: its real path, its original bytes, and
/// whether the original has been put back.
#[derive(Debug)]
pub struct ConfigFile {
    path: PathBuf,
    original: Vec<u8>,
    /// Serialises rewrites and the restore: a rewrite that is still running
    /// on the blocking pool when the run is cancelled must not land *after*
    /// the restore. `true` once restored; later rewrites are skipped.
    restored: Mutex<bool>,
}

impl ConfigFile {
    /// Reads the file. Symlinks are resolved first so that the rewrites
    /// replace the real file rather than turning the link into a regular
    /// file (config directories mounted by orchestrators are often links).
    pub fn open(path: &Path) -> Result<Arc<Self>, StormError> {
        let read_error = |source| StormError::ReadConfig {
            path: path.to_path_buf(),
            source,
        };
        let real = fs::canonicalize(path).map_err(read_error)?;
        let original = fs::read(&real).map_err(read_error)?;
        Ok(Arc::new(Self {
            path: real,
            original,
            restored: Mutex::new(false),
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The content of rewrite number `n`: the original plus a marker line.
    /// A newline is added first if the original lacks one, so the marker is
    /// always a line of its own and the original's last line stays intact.
    pub fn marked(&self, n: u32) -> Vec<u8> {
        let mut content = self.original.clone();
        if !content.is_empty() && !content.ends_with(b"\n") {
            content.push(b'\n');
        }
        content.extend_from_slice(format!("# loadtest-reload {n}\n").as_bytes());
        content
    }

    /// Atomically replaces the file with rewrite number `n`. Returns false
    /// (and writes nothing) once the original has been restored.
    pub fn rewrite(&self, n: u32) -> io::Result<bool> {
        let restored = self.restored.lock().unwrap_or_else(|p| p.into_inner());
        if *restored {
            return Ok(false);
        }
        write_atomically(&self.path, &self.marked(n))?;
        Ok(true)
    }

    /// Puts the original bytes back (idempotent).
    pub fn restore(&self) -> io::Result<()> {
        let mut restored = self.restored.lock().unwrap_or_else(|p| p.into_inner());
        if !*restored {
            write_atomically(&self.path, &self.original)?;
            *restored = true;
        }
        Ok(())
    }
}

/// Restores the original file when dropped, so that an error or a
/// cancelled run (Ctrl-C drops the future) never leaves a modified config.
pub struct RestoreGuard(pub Arc<ConfigFile>);

impl RestoreGuard {
    /// Restores now and reports failure (instead of only printing it, as
    /// `Drop` has to).
    pub fn restore(self) -> Result<(), StormError> {
        self.0.restore().map_err(|source| StormError::Restore {
            path: self.0.path.clone(),
            source,
        })
    }
}

impl Drop for RestoreGuard {
    fn drop(&mut self) {
        if let Err(e) = self.0.restore() {
            eprintln!("loadtest: could not restore {}: {e}", self.0.path.display());
        }
    }
}

/// Replaces `path` with `contents` so that readers see either the old or
/// the new file, never a partial one: write a temporary file in the same
/// directory (rename is only atomic within one file system), fsync it, copy
/// the permissions, rename it over the original.
pub fn write_atomically(path: &Path, contents: &[u8]) -> io::Result<()> {
    let temp = temp_path(path)?;
    let result = write_then_rename(path, &temp, contents);
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

fn write_then_rename(path: &Path, temp: &Path, contents: &[u8]) -> io::Result<()> {
    let mut file = File::create(temp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    drop(file);
    if let Ok(metadata) = fs::metadata(path) {
        fs::set_permissions(temp, metadata.permissions())?;
    }
    fs::rename(temp, path)
}

/// `.NAME.loadtest-PID.tmp` next to the file. Hidden, so that directory
/// watchers that skip dotfiles do not mistake it for a config.
fn temp_path(path: &Path) -> io::Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other(format!("{} is not a file path", path.display())))?;
    let temp_name = format!(
        ".{}.loadtest-{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    );
    Ok(path.with_file_name(temp_name))
}
