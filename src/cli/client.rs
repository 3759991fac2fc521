//! The admin API client: where the API is, its token, and one request.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use super::{config_path, Cli};
use crate::config;

const DEFAULT_ADMIN: &str = "127.0.0.1:9901";

/// The admin API's address and token, from flags, environment and config.
pub(super) struct Target {
    pub(super) authority: String,
    token: Option<String>,
}

pub(super) fn target(cli: &Cli) -> Result<Target, String> {
    let config_path = config_path(cli);
    let (config_admin, config_token_file) = if cli.config.is_some() || config_path.exists() {
        config::load::admin_settings(&config_path).unwrap_or_default()
    } else {
        (None, None)
    };
    let admin = cli
        .admin
        .clone()
        .or(config_admin)
        .unwrap_or_else(|| DEFAULT_ADMIN.to_string());
    let authority = admin
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    if admin.starts_with("https://") {
        return Err("the admin API speaks plain HTTP: use http://host:port".into());
    }
    let token = match (
        &cli.token_file,
        std::env::var("CUTOVER_TOKEN").ok(),
        config_token_file,
    ) {
        (Some(file), _, _) => Some(read_token(file)?),
        (None, Some(token), _) if !token.trim().is_empty() => Some(token.trim().to_string()),
        (None, _, Some(file)) => Some(read_token(&file)?),
        _ => None,
    };
    Ok(Target { authority, token })
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
