//! What the request path needs besides the backend client: how the client reached us,
//! whether a request asks to switch protocols, and the tunnel once both sides have.
//!
//! The headers themselves are rewritten (SPEC §7) while the request head is encoded for
//! the backend and the response head is parsed, in `http1`.

use std::net::IpAddr;

use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderValue};
use http::Version;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::http1::tokens::has_token;
use crate::upstream::Connection;

/// The client's address as it goes into `X-Forwarded-For`, made once per connection.
///
/// An IPv4 address is written by hand: `Ipv4Addr`'s `Display` goes through `core::fmt` and
/// a `String`, some 1,300 instructions, a twentieth of what a new connection costs here.
pub(crate) fn client_ip_header(ip: IpAddr) -> HeaderValue {
    match ip.to_canonical() {
        IpAddr::V4(ip) => {
            let mut text = [0u8; 15];
            let mut len = 0;
            for (i, octet) in ip.octets().into_iter().enumerate() {
                if i > 0 {
                    text[len] = b'.';
                    len += 1;
                }
                if octet >= 100 {
                    text[len] = b'0' + octet / 100;
                    len += 1;
                }
                if octet >= 10 {
                    text[len] = b'0' + octet / 10 % 10;
                    len += 1;
                }
                text[len] = b'0' + octet % 10;
                len += 1;
            }
            HeaderValue::from_bytes(&text[..len]).expect("digits and dots")
        }
        IpAddr::V6(ip) => HeaderValue::from_str(&ip.to_string()).expect("hex digits and colons"),
    }
}

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
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn the_client_ip_header_spells_addresses_as_display_does() {
        for octet in 0..=255u8 {
            for ip in [
                Ipv4Addr::new(octet, 0, 9, 255),
                Ipv4Addr::new(10, octet, 100, 1),
                Ipv4Addr::new(199, 99, octet, 10),
                Ipv4Addr::new(1, 255, 20, octet),
            ] {
                assert_eq!(client_ip_header(IpAddr::V4(ip)), ip.to_string().as_str());
            }
        }
        let v6 = "2001:db8::8a2e:370:7334".parse::<Ipv6Addr>().unwrap();
        assert_eq!(client_ip_header(IpAddr::V6(v6)), "2001:db8::8a2e:370:7334");
        // An IPv4 client on a dual-stack socket is named as IPv4.
        let mapped = Ipv4Addr::new(192, 0, 2, 33).to_ipv6_mapped();
        assert_eq!(client_ip_header(IpAddr::V6(mapped)), "192.0.2.33");
    }

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
