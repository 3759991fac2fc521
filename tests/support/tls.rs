//! TLS clients that trust exactly the certificates a test made, and a proxy serving
//! certificates from files the test can replace.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

use super::client::get;
use super::files::certificate;
use super::proxy::{simple_config, spawn_proxy_in, with_listeners, TestProxy};

pub fn der(pem: &Path) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(pem).unwrap()
}

/// A TLS client that trusts exactly `trusted` and speaks HTTP/1.1.
pub fn tls_connector(trusted: &[CertificateDer<'static>]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in trusted {
        roots.add(cert.clone()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(cutover::tls_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// Connects with TLS to `api.test`; the served end-entity certificate and an HTTP/1.1
/// sender on the connection.
pub async fn tls_connect(
    connector: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
) -> (
    CertificateDer<'static>,
    hyper::client::conn::http1::SendRequest<Full<Bytes>>,
) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("api.test".to_string()).unwrap();
    let tls = connector
        .connect(name, tcp)
        .await
        .unwrap_or_else(|e| panic!("TLS handshake failed: {e}"));
    let served = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(connection);
    (served, sender)
}

pub async fn tls_get(sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>) -> String {
    sender.ready().await.unwrap();
    let response = sender.send_request(get("api.test", "/")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

/// A proxy with one TLS listener serving `tls.crt`/`tls.key`, which start as `first`.
pub async fn tls_proxy(
    old: SocketAddr,
    new: SocketAddr,
) -> (TestProxy, [CertificateDer<'static>; 2]) {
    let tmp = tempfile::tempdir().unwrap();
    let (a_crt, a_key) = certificate(tmp.path(), "first", &["api.test"]);
    let (b_crt, _) = certificate(tmp.path(), "second", &["api.test"]);
    std::fs::copy(&a_crt, tmp.path().join("tls.crt")).unwrap();
    std::fs::copy(&a_key, tmp.path().join("tls.key")).unwrap();
    let yaml = with_listeners(
        &simple_config(&[old], &[new], "0%", ""),
        "listeners:\n  - addr: \"127.0.0.1:0\"\n    tls:\n      certificates:\n        - { cert: tls.crt, key: tls.key }\n",
    );
    let certs = [der(&a_crt), der(&b_crt)];
    assert_ne!(
        certs[0], certs[1],
        "precondition: two different certificates"
    );
    (spawn_proxy_in(tmp, &yaml, false).await, certs)
}
