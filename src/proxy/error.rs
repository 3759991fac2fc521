//! What can go wrong on the request path, whose fault it is, and the status it becomes.
//!
//! The variant decides whether a failure counts against a pool: everything the backend
//! did (or failed to do) does; a client that gave up on its own request body does not.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use super::body::ProxyBody;
use crate::stats::UpstreamErrorKind;
use crate::upstream::{BodyError, ConnectError, ExchangeError};

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no service matches this host and path")]
    NoRoute,
    #[error("no healthy backend in the {pool} pool")]
    NoHealthyBackend { pool: &'static str },
    #[error(transparent)]
    Unreachable(#[from] ConnectError),
    #[error("backend {addr} sent no response within {after:?}")]
    Timeout { addr: Arc<str>, after: Duration },
    #[error("backend {addr} failed ({}): {source}", kind.label())]
    Upstream {
        addr: Arc<str>,
        kind: UpstreamErrorKind,
        source: ExchangeError,
    },
    #[error("the client's request body failed: {0}")]
    ClientBody(hyper::Error),
    #[error("CONNECT is not served by a reverse proxy")]
    MethodNotAllowed,
    #[error("the client sent no request body within {after:?}")]
    BodyTimeout { after: Duration },
    #[error("backend {addr} has max_connections requests in flight")]
    BackendBusy { addr: Arc<str> },
    #[error("the request has more than one Host header")]
    DuplicateHost,
    /// Seen only in the access log, as nginx's 499: no one is there to be answered.
    #[error("the client went away while its backend worked")]
    ClientGone,
}

impl ProxyError {
    /// A backend connection that failed mid-exchange: a bad response or a reset.
    pub fn upstream(addr: Arc<str>, source: ExchangeError) -> ProxyError {
        let kind = match source {
            ExchangeError::Protocol(_) => UpstreamErrorKind::Protocol,
            _ => UpstreamErrorKind::Reset,
        };
        ProxyError::Upstream { addr, kind, source }
    }

    /// A 101 to a request that did not ask to switch protocols.
    pub fn unrequested_switch(addr: Arc<str>) -> ProxyError {
        ProxyError::Upstream {
            addr,
            kind: UpstreamErrorKind::Protocol,
            source: ExchangeError::Protocol("101 Switching Protocols without an upgrade request"),
        }
    }

    /// Whether the pool that was tried is to blame.
    pub fn counts_against_pool(&self) -> bool {
        !matches!(
            self,
            ProxyError::NoRoute
                | ProxyError::ClientBody(_)
                | ProxyError::MethodNotAllowed
                | ProxyError::BodyTimeout { .. }
                | ProxyError::DuplicateHost
                | ProxyError::ClientGone
        )
    }

    pub fn upstream_kind(&self) -> Option<UpstreamErrorKind> {
        match self {
            ProxyError::Unreachable(_) => Some(UpstreamErrorKind::Connect),
            ProxyError::Timeout { .. } => Some(UpstreamErrorKind::Timeout),
            ProxyError::Upstream { kind, .. } => Some(*kind),
            _ => None,
        }
    }
}

impl From<&BodyError> for UpstreamErrorKind {
    fn from(error: &BodyError) -> UpstreamErrorKind {
        match error {
            BodyError::Chunked => UpstreamErrorKind::Protocol,
            BodyError::Stalled(_) => UpstreamErrorKind::Timeout,
            // A client gone is not recorded against the backend (`ResponseBody`).
            BodyError::Io(_) | BodyError::Truncated | BodyError::ClientGone => {
                UpstreamErrorKind::Reset
            }
        }
    }
}

impl From<&ProxyError> for StatusCode {
    fn from(error: &ProxyError) -> StatusCode {
        match error {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::NoHealthyBackend { .. } | ProxyError::BackendBusy { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::Unreachable(_) | ProxyError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::ClientBody(_) | ProxyError::DuplicateHost => StatusCode::BAD_REQUEST,
            ProxyError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ProxyError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::ClientGone => CLIENT_CLOSED_REQUEST,
        }
    }
}

/// nginx's name and number for a request whose client went away before its answer.
const CLIENT_CLOSED_REQUEST: StatusCode = match StatusCode::from_u16(499) {
    Ok(status) => status,
    Err(_) => StatusCode::BAD_REQUEST,
};

/// The response cutover sends in place of the backend's.
pub(crate) fn error_response(error: &ProxyError) -> Response<ProxyBody> {
    let status = StatusCode::from(error);
    let body = match status {
        StatusCode::NOT_FOUND => "404 Not Found: no service matches this host and path\n",
        StatusCode::SERVICE_UNAVAILABLE => {
            "503 Service Unavailable: no backend can take the request\n"
        }
        StatusCode::GATEWAY_TIMEOUT => "504 Gateway Timeout: the backend did not answer in time\n",
        StatusCode::BAD_REQUEST => "400 Bad Request\n",
        StatusCode::METHOD_NOT_ALLOWED => "405 Method Not Allowed\n",
        StatusCode::REQUEST_TIMEOUT => "408 Request Timeout: the request body did not arrive\n",
        CLIENT_CLOSED_REQUEST => "499 Client Closed Request\n",
        _ => "502 Bad Gateway: the backend could not be reached or answered badly\n",
    };
    let mut response = Response::new(ProxyBody::full(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_spec() {
        let unreachable = ProxyError::Unreachable(ConnectError::Io {
            addr: "10.0.0.1:80".into(),
            source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        });
        assert_eq!(StatusCode::from(&unreachable), StatusCode::BAD_GATEWAY);
        assert!(unreachable.counts_against_pool());
        let timeout = ProxyError::Timeout {
            addr: Arc::from("10.0.0.1:80"),
            after: Duration::from_secs(1),
        };
        assert_eq!(StatusCode::from(&timeout), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(timeout.upstream_kind(), Some(UpstreamErrorKind::Timeout));
        let none = ProxyError::NoHealthyBackend { pool: "old" };
        assert_eq!(StatusCode::from(&none), StatusCode::SERVICE_UNAVAILABLE);
        assert!(!ProxyError::NoRoute.counts_against_pool());
        let gone = ProxyError::ClientGone;
        assert_eq!(StatusCode::from(&gone).as_u16(), 499);
        assert!(!gone.counts_against_pool());
        assert_eq!(gone.upstream_kind(), None);
        assert_eq!(
            error_response(&ProxyError::NoRoute).status(),
            StatusCode::NOT_FOUND
        );
    }
}
