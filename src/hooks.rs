//! Hooks (SPEC §4): programs and HTTP endpoints that drive the rest of a migration.
//!
//! - `exec`: argv, no shell, cwd = the config's directory, the JSON payload on stdin;
//!   success is exit status 0. The environment is built, not inherited (as systemd does for
//!   services): `PATH`, `HOME`, `LANG`, `TZ` from cutover's, the variables `pass_env` names,
//!   the hook's `env`, and the `CUTOVER_*` of the run. Secrets in cutover's environment
//!   reach a hook only when its config lists them.
//! - `http`: the payload is POSTed with the configured headers; success is a 2xx.
//!
//! Design note on processes: each hook runs in a process group of its own. At its timeout
//! the whole group gets SIGTERM, then SIGKILL 5 s later, so a script that forked a
//! `sleep` leaves nothing behind. When the hook's own process exits, whatever it left
//! running in its group is terminated the same way (a hook that really means to leave a
//! daemon behind must `setsid` it). The child is always waited for: no zombies.
//! stdout and stderr are read concurrently (a chatty hook never blocks on a full pipe) and
//! the last 64 KiB of each are kept.
//!
//! Hooks run on their own tasks; nothing on the request path ever waits for one.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::config::{Hook, HookAction};

/// How much of each output stream is kept.
pub(crate) const OUTPUT_LIMIT: usize = 64 * 1024;
/// Between SIGTERM and SIGKILL.
pub(crate) const KILL_GRACE: Duration = Duration::from_secs(5);

/// What a hook run is handed: the JSON document (stdin of an exec hook, body of an http
/// one) and the `CUTOVER_*` environment of exec hooks. The controller builds both from its
/// payload (SPEC §4); this module only delivers them.
#[derive(Debug, Clone)]
pub(crate) struct HookInput {
    pub json: Bytes,
    pub env: Vec<(&'static str, String)>,
}

/// `cutover_hook_runs_total{result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum HookResult {
    Ok,
    Failed,
    Timeout,
}

names! {
    HookResult: pub(crate) fn label, pub(crate) const ALL {
        Ok => "ok",
        Failed => "failed",
        Timeout => "timeout",
    }
}

/// How one run of a hook went.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct HookOutcome {
    pub result: HookResult,
    /// `exit 0`, `exit 3`, `killed by signal 9`, `HTTP 503`, `cannot start: …`.
    pub detail: String,
    #[serde(serialize_with = "as_millis")]
    pub duration: Duration,
    #[serde(skip)]
    pub finished_at: SystemTime,
    pub stdout: String,
    pub stderr: String,
}

fn as_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

impl HookOutcome {
    pub(crate) fn ok(&self) -> bool {
        self.result == HookResult::Ok
    }

    /// The last `bytes` of a stream, for logs and status.
    pub(crate) fn tail(text: &str, bytes: usize) -> &str {
        if text.len() <= bytes {
            return text;
        }
        let mut start = text.len() - bytes;
        while !text.is_char_boundary(start) {
            start += 1;
        }
        &text[start..]
    }
}

/// Runs `hook` once with `input`; `dir` is the config's directory.
pub(crate) async fn run(hook: &Hook, dir: &Path, input: &HookInput) -> HookOutcome {
    let started = Instant::now();
    let (result, detail, stdout, stderr) = match &hook.action {
        HookAction::Exec { argv } => {
            let env = environment(hook, input, std::env::vars_os());
            run_exec(argv, dir, env, &input.json, hook.timeout).await
        }
        HookAction::Http { url, headers } => {
            let (result, detail) = run_http(url, headers, input, hook.timeout).await;
            (result, detail, String::new(), String::new())
        }
    };
    HookOutcome {
        result,
        detail,
        duration: started.elapsed(),
        finished_at: SystemTime::now(),
        stdout,
        stderr,
    }
}

/// Taken from cutover's environment for every exec hook: enough to find programs and
/// format text and dates, nothing that could be a secret.
const BASE_ENV: [&str; 4] = ["PATH", "HOME", "LANG", "TZ"];
/// `PATH` when cutover itself runs without one.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// An exec hook's whole environment, from cutover's (`inherited`): `BASE_ENV`, what
/// `pass_env` names (`NAME` or `PREFIX_*`), the hook's `env`, then the run's `CUTOVER_*`;
/// a later source wins over an earlier one.
fn environment(
    hook: &Hook,
    input: &HookInput,
    inherited: impl Iterator<Item = (OsString, OsString)>,
) -> BTreeMap<OsString, OsString> {
    let passes = |name: &str| {
        BASE_ENV.contains(&name)
            || hook
                .pass_env
                .iter()
                .any(|pattern| match pattern.strip_suffix('*') {
                    Some(prefix) => name.starts_with(prefix),
                    None => name == pattern,
                })
    };
    let mut env: BTreeMap<OsString, OsString> = inherited
        .filter(|(name, _)| name.to_str().is_some_and(passes))
        .collect();
    env.entry("PATH".into())
        .or_insert_with(|| DEFAULT_PATH.into());
    for (name, value) in &hook.env {
        env.insert(name.into(), value.into());
    }
    for (name, value) in &input.env {
        env.insert(name.into(), value.into());
    }
    env
}

async fn run_exec(
    argv: &[String],
    dir: &Path,
    env: BTreeMap<OsString, OsString>,
    json: &Bytes,
    timeout: Duration,
) -> (HookResult, String, String, String) {
    let Some(program) = argv.first() else {
        return (
            HookResult::Failed,
            "empty argv".into(),
            String::new(),
            String::new(),
        );
    };
    let program_path = if program.contains('/') {
        dir.join(program)
    } else {
        program.into()
    };
    let mut command = Command::new(&program_path);
    command
        .args(&argv[1..])
        .current_dir(dir)
        .env_clear()
        .envs(env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(err) => {
            let detail = format!("cannot start {}: {err}", program_path.display());
            return (HookResult::Failed, detail, String::new(), String::new());
        }
    };
    let group = child.id().map(|pid| ProcessGroup(pid as i32));
    // If this task is dropped mid-run (shutdown), the whole group goes with it.
    let guard = group.as_ref().map(|g| KillOnDrop(g.0));
    let stdout = child.stdout.take().map(|out| tokio::spawn(read_tail(out)));
    let stderr = child.stderr.take().map(|err| tokio::spawn(read_tail(err)));
    if let Some(mut stdin) = child.stdin.take() {
        let json = json.clone();
        tokio::spawn(async move {
            // A hook that does not read its stdin closes the pipe: that is fine.
            let _ = stdin.write_all(&json).await;
        });
    }

    let (result, detail) = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => exit_result(status),
        Ok(Err(err)) => (
            HookResult::Failed,
            format!("waiting for the hook failed: {err}"),
        ),
        Err(_) => {
            if let Some(group) = &group {
                group.terminate(&mut child).await;
            }
            let waited = humantime::format_duration(timeout);
            (
                HookResult::Timeout,
                format!("timed out after {waited}; process group terminated"),
            )
        }
    };
    std::mem::forget(guard);
    // Whatever the hook left in its group goes too, so the pipes close and nothing lingers.
    if let Some(group) = group {
        tokio::spawn(async move { group.clean_up().await });
    }
    let stdout = collect(stdout).await;
    let stderr = collect(stderr).await;
    (result, detail, stdout, stderr)
}

fn exit_result(status: std::process::ExitStatus) -> (HookResult, String) {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(0), _) => (HookResult::Ok, "exit 0".into()),
        (Some(code), _) => (HookResult::Failed, format!("exit {code}")),
        (None, Some(signal)) => (HookResult::Failed, format!("killed by signal {signal}")),
        (None, None) => (HookResult::Failed, "ended without a status".into()),
    }
}

/// A hook's process group.
struct ProcessGroup(i32);

impl ProcessGroup {
    fn signal(&self, signal: libc::c_int) -> bool {
        // SAFETY: kill(2) with a negative pid signals a process group; it has no memory
        // effects on this process. ESRCH (group gone) is reported through the return value.
        unsafe { libc::kill(-self.0, signal) == 0 }
    }

    /// SIGTERM to the group, SIGKILL after the grace period, then reap the leader.
    async fn terminate(&self, leader: &mut Child) {
        self.signal(libc::SIGTERM);
        if tokio::time::timeout(KILL_GRACE, leader.wait())
            .await
            .is_err()
        {
            self.signal(libc::SIGKILL);
            let _ = leader.wait().await;
        }
    }

    /// After the leader exited: terminate anything left in the group.
    async fn clean_up(self) {
        if !self.signal(libc::SIGTERM) {
            return;
        }
        tokio::time::sleep(KILL_GRACE).await;
        self.signal(libc::SIGKILL);
    }
}

/// SIGKILLs a process group when dropped (`mem::forget` it to disarm).
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        ProcessGroup(self.0).signal(libc::SIGKILL);
    }
}

/// Reads a stream to its end, keeping the last `OUTPUT_LIMIT` bytes.
async fn read_tail(mut stream: impl AsyncRead + Unpin) -> Vec<u8> {
    let mut kept: VecDeque<u8> = VecDeque::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                kept.extend(&buf[..n]);
                let excess = kept.len().saturating_sub(OUTPUT_LIMIT);
                kept.drain(..excess);
            }
        }
    }
    kept.into()
}

/// The captured output; a stream still held open by a leftover process after the group
/// was terminated is given a moment, then abandoned.
async fn collect(reader: Option<tokio::task::JoinHandle<Vec<u8>>>) -> String {
    let Some(reader) = reader else {
        return String::new();
    };
    match tokio::time::timeout(KILL_GRACE + Duration::from_secs(1), reader).await {
        Ok(Ok(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
        _ => String::new(),
    }
}

async fn run_http(
    url: &Uri,
    headers: &[(http::HeaderName, HeaderValue)],
    input: &HookInput,
    timeout: Duration,
) -> (HookResult, String) {
    match tokio::time::timeout(timeout, post_json(url, headers, input)).await {
        Err(_) => (
            HookResult::Timeout,
            format!("no answer within {}", humantime::format_duration(timeout)),
        ),
        Ok(Err(detail)) => (HookResult::Failed, detail),
        Ok(Ok(status)) if status.is_success() => {
            (HookResult::Ok, format!("HTTP {}", status.as_u16()))
        }
        Ok(Ok(status)) => (HookResult::Failed, format!("HTTP {}", status.as_u16())),
    }
}

/// POSTs the payload as JSON over HTTP/1.1, with TLS for `https://`.
async fn post_json(
    url: &Uri,
    headers: &[(http::HeaderName, HeaderValue)],
    input: &HookInput,
) -> Result<http::StatusCode, String> {
    let host = url.host().ok_or("the URL has no host")?.to_string();
    let https = url.scheme_str() == Some("https");
    let port = url.port_u16().unwrap_or(if https { 443 } else { 80 });
    let stream = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|err| format!("cannot connect to {host}:{port}: {err}"))?;
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(url.path_and_query().map_or("/", |pq| pq.as_str()))
        .header(
            header::HOST,
            url.authority().map_or(host.as_str(), |a| a.as_str()),
        )
        .header(header::CONTENT_TYPE, "application/json")
        .header(
            header::USER_AGENT,
            concat!("cutover/", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(input.json.clone()))
        .map_err(|err| err.to_string())?;
    for (name, value) in headers {
        request.headers_mut().insert(name.clone(), value.clone());
    }
    if https {
        let server_name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|err| format!("invalid TLS name {host}: {err}"))?;
        let connector = tokio_rustls::TlsConnector::from(crate::tls::client_config());
        let tls = connector
            .connect(server_name, stream)
            .await
            .map_err(|err| format!("TLS with {host} failed: {err}"))?;
        send(TokioIo::new(tls), request).await
    } else {
        send(TokioIo::new(stream), request).await
    }
}

async fn send<I>(io: I, request: Request<Full<Bytes>>) -> Result<http::StatusCode, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|err| format!("HTTP handshake failed: {err}"))?;
    tokio::spawn(connection);
    let response = sender
        .send_request(request)
        .await
        .map_err(|err| format!("request failed: {err}"))?;
    let status = response.status();
    // Read (and drop) the body so the server is not cut off mid-answer.
    let _ = response.into_body().collect().await;
    Ok(status)
}

/// Runs hooks on behalf of the controller and reports back on a channel.
#[derive(Clone)]
pub(crate) struct Runner {
    pub dir: Arc<Path>,
}

impl Runner {
    /// Starts `hook` on its own task; `done` receives the outcome.
    pub(crate) fn spawn<T: Send + 'static>(
        &self,
        hook: Arc<Hook>,
        input: HookInput,
        done: tokio::sync::mpsc::UnboundedSender<T>,
        wrap: impl FnOnce(HookOutcome) -> T + Send + 'static,
    ) {
        let dir = self.dir.clone();
        tokio::spawn(async move {
            let outcome = run(&hook, &dir, &input).await;
            let _ = done.send(wrap(outcome));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OnDeadline;

    fn hook(env: &[(&str, &str)], pass_env: &[&str]) -> Hook {
        Hook {
            name: "h".into(),
            action: HookAction::Exec {
                argv: vec!["true".into()],
            },
            timeout: Duration::from_secs(1),
            every: Duration::from_secs(1),
            deadline: None,
            on_deadline: OnDeadline::Pause,
            retries: 0,
            on: Vec::new(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            pass_env: pass_env.iter().map(|p| p.to_string()).collect(),
        }
    }

    fn built(hook: &Hook, inherited: &[(&str, &str)]) -> Vec<(String, String)> {
        let input = HookInput {
            json: Bytes::new(),
            env: vec![("CUTOVER_EVENT", "started".into())],
        };
        let inherited = inherited.iter().map(|(k, v)| (k.into(), v.into()));
        environment(hook, &input, inherited)
            .into_iter()
            .map(|(k, v)| (k.into_string().unwrap(), v.into_string().unwrap()))
            .collect()
    }

    #[test]
    fn only_the_base_listed_and_cutover_variables_reach_a_hook() {
        let inherited = [
            ("PATH", "/opt/bin"),
            ("HOME", "/home/op"),
            ("AWS_SECRET_ACCESS_KEY", "hunter2"),
            ("DB_HOST", "db1"),
            ("DB_PORT", "5432"),
            ("DRY_RUN", "1"),
            ("VAULT_TOKEN", "t"),
            ("CUTOVER_EVENT", "forged"),
        ];
        let hook = hook(&[("REGION", "eu-1")], &["DB_*", "VAULT_TOKEN"]);
        assert_eq!(
            built(&hook, &inherited),
            [
                ("CUTOVER_EVENT", "started"),
                ("DB_HOST", "db1"),
                ("DB_PORT", "5432"),
                ("HOME", "/home/op"),
                ("PATH", "/opt/bin"),
                ("REGION", "eu-1"),
                ("VAULT_TOKEN", "t"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
    }

    #[test]
    fn a_hook_gets_a_path_even_when_cutover_has_none() {
        let env = built(&hook(&[], &[]), &[("SECRET", "x")]);
        assert!(env.contains(&("PATH".to_string(), DEFAULT_PATH.to_string())));
        assert!(!env.iter().any(|(k, _)| k == "SECRET"));
    }
}
