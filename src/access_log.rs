//! The access log (`access_log:`): one line per request, written by a thread of its own.
//!
//! Off (the default) it costs the request path one `Option` test on the routing snapshot
//! it already holds. On, a request keeps an `Entry` (its clock, client, method and URI, a
//! refcounted clone of the request's) and, once its response has ended (the body sent, or
//! the client gone), formats one line and hands it to a bounded channel. The writer
//! thread writes what has queued in one buffered write and flushes whenever the queue is
//! empty, so a quiet proxy's lines appear at once and a busy one's in batches. A full
//! queue drops the line and counts it rather than slow a request; the writer reports
//! drops at WARN. Every reload reopens a file target (logrotate's `postrotate` can send
//! SIGHUP); a reload whose file cannot be opened fails and keeps the running config.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::{Method, Uri, Version};

use crate::config::{AccessLogTarget, LogFormat};
use crate::upstream::PoolKind;

/// Lines queued for the writer before a request's line is dropped instead.
const QUEUE: usize = 65_536;

/// An open access log; the writer thread stops when the last clone is dropped.
#[derive(Debug)]
pub(crate) struct AccessLog {
    tx: SyncSender<String>,
    format: LogFormat,
    target: AccessLogTarget,
    reopen: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
}

impl AccessLog {
    /// Opens `target` (a file is created if missing, appended to) and starts the writer.
    pub(crate) fn open(target: &AccessLogTarget, format: LogFormat) -> io::Result<AccessLog> {
        let out = open_target(target)?;
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let reopen = Arc::new(AtomicBool::new(false));
        let dropped = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            rx,
            out,
            target: target.clone(),
            reopen: reopen.clone(),
            dropped: dropped.clone(),
            reported: 0,
        };
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer.run())?;
        Ok(AccessLog {
            tx,
            format,
            target: target.clone(),
            reopen,
            dropped,
        })
    }

    /// The log a reload should run with: the same one, told to reopen its file, when the
    /// target and format did not change; a new one when they did; `None` when off.
    pub(crate) fn reconfigured(
        running: Option<&Arc<AccessLog>>,
        target: Option<&AccessLogTarget>,
        format: LogFormat,
    ) -> io::Result<Option<Arc<AccessLog>>> {
        let Some(target) = target else {
            return Ok(None);
        };
        match running {
            Some(log) if log.target == *target && log.format == format => {
                log.reopen.store(true, Relaxed);
                Ok(Some(log.clone()))
            }
            _ => AccessLog::open(target, format).map(|log| Some(Arc::new(log))),
        }
    }

    /// Starts the entry of a request that arrived at `started`.
    pub(crate) fn begin(
        self: &Arc<AccessLog>,
        client: SocketAddr,
        method: &Method,
        uri: &Uri,
        version: Version,
        started: Instant,
    ) -> Entry {
        Entry {
            log: self.clone(),
            time: SystemTime::now(),
            started,
            client,
            method: method.clone(),
            uri: uri.clone(),
            version,
            service: None,
            pool: None,
            backend: None,
            status: 0,
            bytes: 0,
        }
    }

    /// Queues `line`; a full queue (or a writer gone) drops and counts it.
    fn write(&self, line: String) {
        if self.tx.try_send(line).is_err() {
            self.dropped.fetch_add(1, Relaxed);
        }
    }
}

/// What the request path tells the access log. `()` hears nothing: with the log off the
/// request path is compiled without a trace of it.
pub(crate) trait Note {
    /// The service and pool that took the request.
    fn routed(&mut self, _service: &Arc<str>, _pool: PoolKind) {}
    /// The backend that answered.
    fn answered_by(&mut self, _backend: &Arc<str>) {}
}

impl Note for () {}

impl Note for Entry {
    fn routed(&mut self, service: &Arc<str>, pool: PoolKind) {
        self.service = Some(service.clone());
        self.pool = Some(pool.label());
    }

    fn answered_by(&mut self, backend: &Arc<str>) {
        self.backend = Some(backend.clone());
    }
}

/// One request's line, filled in as the request goes and written at its end.
#[derive(Debug)]
pub(crate) struct Entry {
    log: Arc<AccessLog>,
    time: SystemTime,
    started: Instant,
    client: SocketAddr,
    method: Method,
    uri: Uri,
    version: Version,
    service: Option<Arc<str>>,
    pool: Option<&'static str>,
    backend: Option<Arc<str>>,
    status: u16,
    bytes: u64,
}

impl Entry {
    pub(crate) fn status(&mut self, status: u16) {
        self.status = status;
    }

    /// Body bytes sent to the client so far.
    pub(crate) fn sent(&mut self, bytes: usize) {
        self.bytes += bytes as u64;
    }

    /// Writes the line; `complete` is false when the body ended early (the client went
    /// away, or the backend's body broke off).
    pub(crate) fn finish(&mut self, complete: bool) {
        let line = self.line(complete);
        self.log.write(line);
    }

    fn line(&self, complete: bool) -> String {
        let time = humantime::format_rfc3339_millis(self.time);
        let ms = self.started.elapsed().as_secs_f64() * 1000.0;
        let service = self.service.as_deref().unwrap_or("-");
        let pool = self.pool.unwrap_or("-");
        let backend = self.backend.as_deref().unwrap_or("-");
        let target = self.uri.path_and_query().map_or("/", |p| p.as_str());
        match self.log.format {
            LogFormat::Text => {
                let end = if complete { "" } else { " incomplete" };
                format!(
                    "{time} {client} \"{method} {target} {version:?}\" {status} {bytes} {ms:.3}ms \
                     service={service} pool={pool} backend={backend}{end}\n",
                    client = self.client,
                    method = self.method,
                    version = self.version,
                    status = self.status,
                    bytes = self.bytes,
                )
            }
            LogFormat::Json => {
                let mut line = serde_json::json!({
                    "time": time.to_string(),
                    "client": self.client.to_string(),
                    "method": self.method.as_str(),
                    "target": target,
                    "version": format!("{:?}", self.version),
                    "service": service,
                    "pool": pool,
                    "backend": backend,
                    "status": self.status,
                    "bytes": self.bytes,
                    "duration_ms": (ms * 1000.0).round() / 1000.0,
                    "complete": complete,
                })
                .to_string();
                line.push('\n');
                line
            }
        }
    }
}

struct Writer {
    rx: Receiver<String>,
    out: BufWriter<Box<dyn Write + Send>>,
    target: AccessLogTarget,
    reopen: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
    reported: u64,
}

impl Writer {
    fn run(mut self) {
        while let Ok(line) = self.rx.recv() {
            if self.reopen.swap(false, Relaxed) {
                self.reopen();
            }
            self.put(&line);
            while let Ok(line) = self.rx.try_recv() {
                self.put(&line);
            }
            if let Err(error) = self.out.flush() {
                tracing::error!(%error, "access log: cannot write");
            }
            self.report_drops();
        }
        let _ = self.out.flush();
    }

    fn put(&mut self, line: &str) {
        if self.out.write_all(line.as_bytes()).is_err() {
            self.dropped.fetch_add(1, Relaxed);
        }
    }

    fn reopen(&mut self) {
        let _ = self.out.flush();
        match open_target(&self.target) {
            Ok(out) => self.out = out,
            Err(error) => {
                tracing::error!(%error, "access log: cannot reopen; writing to the old file")
            }
        }
    }

    fn report_drops(&mut self) {
        let dropped = self.dropped.load(Relaxed);
        if dropped > self.reported {
            let lost = dropped - self.reported;
            tracing::warn!(
                lost,
                total = dropped,
                "access log lines dropped (writer behind)"
            );
            self.reported = dropped;
        }
    }
}

fn open_target(target: &AccessLogTarget) -> io::Result<BufWriter<Box<dyn Write + Send>>> {
    let out: Box<dyn Write + Send> = match target {
        AccessLogTarget::Stdout => Box::new(io::stdout()),
        AccessLogTarget::Stderr => Box::new(io::stderr()),
        AccessLogTarget::File(path) => Box::new(append(path)?),
    };
    Ok(BufWriter::with_capacity(64 * 1024, out))
}

fn append(path: &std::path::Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(log: &Arc<AccessLog>) -> Entry {
        let uri: Uri = "/items?id=7".parse().unwrap();
        let client = "127.0.0.1:5000".parse().unwrap();
        let mut entry = log.begin(client, &Method::GET, &uri, Version::HTTP_11, Instant::now());
        entry.routed(&Arc::from("api"), PoolKind::New);
        entry.answered_by(&Arc::from("127.0.0.1:9001"));
        entry.status(200);
        entry.sent(5);
        entry.sent(7);
        entry
    }

    fn log(format: LogFormat) -> (tempfile::TempDir, Arc<AccessLog>, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let target = AccessLogTarget::File(path.clone());
        (
            dir,
            Arc::new(AccessLog::open(&target, format).unwrap()),
            path,
        )
    }

    #[test]
    fn a_text_line_holds_every_field() {
        let (_dir, log, _) = log(LogFormat::Text);
        let line = entry(&log).line(true);
        assert!(line.ends_with('\n'), "{line}");
        let fields = [
            "127.0.0.1:5000 \"GET /items?id=7 HTTP/1.1\" 200 12 ",
            "ms service=api pool=new backend=127.0.0.1:9001\n",
        ];
        for field in fields {
            assert!(line.contains(field), "{field:?} in {line:?}");
        }
        assert!(entry(&log).line(false).ends_with(" incomplete\n"));
    }

    #[test]
    fn a_json_line_is_one_object() {
        let (_dir, log, _) = log(LogFormat::Json);
        let line = entry(&log).line(true);
        let value: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(value["target"], "/items?id=7");
        assert_eq!(value["service"], "api");
        assert_eq!(value["pool"], "new");
        assert_eq!(value["backend"], "127.0.0.1:9001");
        assert_eq!(value["status"], 200);
        assert_eq!(value["bytes"], 12);
        assert_eq!(value["complete"], true);
        assert!(value["duration_ms"].as_f64().unwrap() >= 0.0);
    }

    #[test]
    fn lines_reach_the_file_and_a_reload_reopens_it() {
        let (dir, log, path) = log(LogFormat::Text);
        entry(&log).finish(true);
        wait_for_lines(&path, 1);
        // logrotate moved the file away; the reload reopens the configured path.
        let rotated = dir.path().join("access.log.1");
        std::fs::rename(&path, &rotated).unwrap();
        let target = AccessLogTarget::File(path.clone());
        let same = AccessLog::reconfigured(Some(&log), Some(&target), LogFormat::Text).unwrap();
        assert!(Arc::ptr_eq(same.as_ref().unwrap(), &log));
        entry(&log).finish(true);
        wait_for_lines(&path, 1);
        assert_eq!(
            std::fs::read_to_string(&rotated).unwrap().lines().count(),
            1
        );
    }

    #[test]
    fn off_is_none_and_a_new_target_is_a_new_log() {
        let (dir, log, _) = log(LogFormat::Text);
        assert!(AccessLog::reconfigured(Some(&log), None, LogFormat::Text)
            .unwrap()
            .is_none());
        let other = AccessLogTarget::File(dir.path().join("other.log"));
        let new = AccessLog::reconfigured(Some(&log), Some(&other), LogFormat::Text).unwrap();
        assert!(!Arc::ptr_eq(new.as_ref().unwrap(), &log));
        let missing = AccessLogTarget::File(dir.path().join("no/such/dir.log"));
        let err = AccessLog::reconfigured(Some(&log), Some(&missing), LogFormat::Text);
        assert!(err.unwrap_err().to_string().contains("no/such/dir.log"));
    }

    fn wait_for_lines(path: &std::path::Path, lines: usize) {
        for _ in 0..500 {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            if text.lines().count() >= lines {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        panic!("{} did not get {lines} line(s)", path.display());
    }
}
