//! The admin API client: where the API is, its token, and one request.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use super::{config_path, Cli, ClientArgs};
use crate::admin::runtime_file;
use crate::config;

const DEFAULT_ADMIN: &str = "127.0.0.1:9901";

/// The admin API's address and token, from flags, environment and config.
pub(super) struct Target {
    pub(super) authority: String,
    token: Option<String>,
}

pub(super) fn target(cli: &Cli, args: &ClientArgs) -> Result<Target, String> {
    let found = locate(cli, args)?;
    for note in &found.notes {
        eprintln!("cutover: {note}");
    }
    let admin = found.addr;
    let authority = admin
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    if admin.starts_with("https://") {
        return Err("the admin API speaks plain HTTP: use http://host:port".into());
    }
    let token = match (
        &args.token_file,
        std::env::var("CUTOVER_TOKEN").ok(),
        found.token_file,
    ) {
        (Some(file), _, _) => Some(read_token(file)?),
        (None, Some(token), _) if !token.trim().is_empty() => Some(token.trim().to_string()),
        (None, _, Some(file)) => Some(read_token(&file)?),
        _ => None,
    };
    Ok(Target { authority, token })
}

/// Where the admin API is and which token file goes with it, and what the operator must
/// be told about how that was decided.
#[derive(Debug)]
struct Located {
    addr: String,
    token_file: Option<PathBuf>,
    notes: Vec<String>,
}

/// `--admin`/`CUTOVER_ADMIN`, else the running process's record next to the config (it is
/// what is actually bound), else the config's `admin.addr`. A config that does not parse
/// never silently becomes the default address: that could reach another instance.
fn locate(cli: &Cli, args: &ClientArgs) -> Result<Located, String> {
    let config_path = config_path(cli);
    if cli.config.is_none() && !config_path.exists() {
        let notes = match &args.admin {
            Some(_) => Vec::new(),
            None => vec![format!(
                "no config file at {} and no --admin: trying the default admin address {DEFAULT_ADMIN}",
                config_path.display()
            )],
        };
        return Ok(Located {
            addr: args
                .admin
                .clone()
                .unwrap_or_else(|| DEFAULT_ADMIN.to_string()),
            token_file: None,
            notes,
        });
    }
    let settings = config::load::admin_settings(&config_path);
    let running = runtime_file::live(&config_path);
    let mut notes = Vec::new();
    let (addr, token_file) = match (settings, running) {
        (Ok((addr, token_file)), None) => (
            addr.unwrap_or_else(|| DEFAULT_ADMIN.to_string()),
            token_file,
        ),
        (Ok((addr, token_file)), Some((record, info))) => {
            let configured = addr.unwrap_or_else(|| DEFAULT_ADMIN.to_string());
            let running = info.admin.to_string();
            if args.admin.is_none() && configured.trim_start_matches("http://") != running {
                notes.push(format!(
                    "the running cutover (pid {}) serves its admin API on {running}, not on {configured} as the config now says (a change of admin.addr needs a restart): using {running}, recorded in {}",
                    info.pid,
                    record.display()
                ));
            }
            (running, token_file)
        }
        (Err(error), Some((record, info))) => {
            let running = info.admin.to_string();
            notes.push(format!("the config does not parse: {error}"));
            if args.admin.is_none() {
                notes.push(format!(
                    "using the admin address of the running cutover (pid {}, started {}), recorded in {}: {running}",
                    info.pid,
                    info.started_at,
                    record.display()
                ));
            }
            (running, info.token_file)
        }
        (Err(error), None) => {
            let record = runtime_file::path_for(&config_path);
            if args.admin.is_none() {
                return Err(format!(
                    "cannot tell where the admin API is: the config does not parse ({error}) and no running cutover recorded its address in {}; fix the config or pass --admin URL",
                    record.display()
                ));
            }
            if args.token_file.is_none() && std::env::var_os("CUTOVER_TOKEN").is_none() {
                notes.push(format!(
                "the config does not parse ({error}): its admin.token_file is unknown, so no token is sent unless --token-file or CUTOVER_TOKEN gives one"
            ));
            }
            (String::new(), None)
        }
    };
    Ok(Located {
        addr: args.admin.clone().unwrap_or(addr),
        token_file,
        notes,
    })
}

fn read_token(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map(|t| t.trim().to_string())
        .map_err(|err| format!("cannot read token file {}: {err}", path.display()))
}

/// An answer from the admin API.
pub(super) struct Answer {
    pub(super) status: StatusCode,
    pub(super) body: Bytes,
}

#[derive(Debug)]
pub(super) enum ClientError {
    Unreachable(String),
}

pub(super) async fn call(
    target: &Target,
    method: Method,
    path: &str,
    body: Option<String>,
) -> Result<Answer, ClientError> {
    let unreachable =
        |what: String| ClientError::Unreachable(format!("{}: {what}", target.authority));
    let connect = tokio::net::TcpStream::connect(target.authority.as_str());
    let stream = tokio::time::timeout(Duration::from_secs(5), connect)
        .await
        .map_err(|_| unreachable("connection timed out".into()))?
        .map_err(|err| unreachable(err.to_string()))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|err| unreachable(err.to_string()))?;
    tokio::spawn(connection);
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, target.authority.as_str())
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(token) = &target.token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|err| unreachable(err.to_string()))?;
    let response = tokio::time::timeout(Duration::from_secs(30), sender.send_request(request))
        .await
        .map_err(|_| unreachable("no answer within 30s".into()))?
        .map_err(|err| unreachable(err.to_string()))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|err| unreachable(err.to_string()))?
        .to_bytes();
    Ok(Answer { status, body })
}
