//! What the request path needs besides the backend client: how the client reached us,
//! whether a request asks to switch protocols, and the tunnel once both sides have.
//!
//! The headers themselves are rewritten (SPEC §7) while the request head is encoded for
//! the backend and the response head is parsed, in `http1`.

use bytes::BytesMut;
use http::header::{self, HeaderMap};
use http::Version;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::http1::tokens::has_token;
use crate::upstream::Connection;

/// An HTTP/1.1 request asking to switch protocols (WebSocket and the like).
pub(crate) fn is_upgrade_request(version: Version, headers: &HeaderMap) -> bool {
    version == Version::HTTP_11
        && headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .any(|value| has_token(value.as_bytes(), b"upgrade"))
}

/// Runs the tunnel of an upgraded request as its own task, holding `guards` (what must
/// stay counted while it runs) until it closes.
pub(crate) fn spawn_tunnel(client: OnUpgrade, backend: Connection, guards: impl Send + 'static) {
    let (stream, early) = backend.into_parts();
    tokio::spawn(async move {
        let _guards = guards;
        tunnel(client, stream, early).await;
    });
}

/// Copies bytes both ways between the upgraded client and the backend until either side
/// closes. `early` holds what the backend sent right after its 101.
pub(crate) async fn tunnel(client: OnUpgrade, mut backend: TcpStream, early: BytesMut) {
    let client = match client.await {
        Ok(client) => client,
        Err(err) => {
            tracing::debug!(error = %err, "client upgrade did not complete");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    if !early.is_empty() && client.write_all(&early).await.is_err() {
        return;
    }
    match tokio::io::copy_bidirectional(&mut client, &mut backend).await {
        Ok((up, down)) => tracing::debug!(up, down, "tunnel closed"),
        Err(err) => tracing::debug!(error = %err, "tunnel closed with an error"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn headers(pairs: &[(&str, &str)], version: Version) -> (Version, HeaderMap) {
        let mut builder = Request::builder().version(version);
        for (name, value) in pairs {
            builder = builder.header(*name, *value);
        }
        let request = builder.body(()).unwrap();
        (request.version(), request.headers().clone())
    }

    #[test]
    fn only_http11_with_connection_upgrade_is_an_upgrade() {
        let (v, h) = headers(
            &[
                ("connection", "keep-alive, Upgrade"),
                ("upgrade", "websocket"),
            ],
            Version::HTTP_11,
        );
        assert!(is_upgrade_request(v, &h));
        let (v, h) = headers(&[("upgrade", "websocket")], Version::HTTP_11);
        assert!(!is_upgrade_request(v, &h));
        let (v, h) = headers(
            &[("connection", "upgrade"), ("upgrade", "websocket")],
            Version::HTTP_10,
        );
        assert!(!is_upgrade_request(v, &h));
        let (v, h) = headers(&[("connection", "upgrade")], Version::HTTP_11);
        assert!(!is_upgrade_request(v, &h));
    }
}
