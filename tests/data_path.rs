//! The data path against a real proxy on 127.0.0.1:0 and in-process backends.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use support::*;

#[tokio::test]
async fn the_split_follows_the_weight_within_one_percent() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let proxy = spawn_proxy(&simple_config(&[old.addr], &[new.addr], "20%", "")).await;
    let mut client = Client::connect(proxy.addr).await;
    let mut to_new = 0;
    for _ in 0..1000 {
        let got = client.send(get("a", "/")).await.unwrap();
        assert_eq!(got.status, StatusCode::OK);
        if got.body == "new" {
            to_new += 1;
        }
    }
    // Non-sticky requests follow a low-discrepancy sequence: 20% ± 1% of 1000.
    assert!(
        (190..=210).contains(&to_new),
        "NEW served {to_new} of 1000 at 20%"
    );
    assert_eq!(old.hits() + new.hits(), 1000);
}

#[tokio::test]
async fn cookie_sticky_users_stay_on_their_pool() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let sticky = "    sticky: { cookie: cutover_api }\n";
    let proxy = spawn_proxy(&simple_config(&[old.addr], &[new.addr], "50%", sticky)).await;
    let mut pools = std::collections::HashMap::new();
    for _ in 0..30 {
        let first = send(proxy.addr, get("a", "/")).await;
        let cookie = first.headers["set-cookie"].to_str().unwrap().to_string();
        assert!(cookie.starts_with("cutover_api="), "{cookie}");
        assert!(cookie.contains("HttpOnly"));
        let pair = cookie.split(';').next().unwrap().to_string();
        for _ in 0..5 {
            let request = Request::get("/")
                .header("host", "a")
                .header("cookie", format!("theme=dark; {pair}"))
                .body(Full::new(Bytes::new()))
                .unwrap();
            let again = send(proxy.addr, request).await;
            assert_eq!(again.body, first.body, "{pair} moved pools");
            assert!(
                !again.headers.contains_key("set-cookie"),
                "a known user keeps its cookie"
            );
        }
        *pools.entry(first.body).or_insert(0) += 1;
    }
    assert_eq!(pools.len(), 2, "both pools get sticky users: {pools:?}");
}

#[tokio::test]
async fn header_and_client_ip_stickiness_are_consistent() {
    let old = spawn_backend("old").await;
    let new = spawn_backend("new").await;
    let sticky = "    sticky: { header: X-User-Id }\n";
    let proxy = spawn_proxy(&simple_config(&[old.addr], &[new.addr], "50%", sticky)).await;
    let mut pools = std::collections::HashSet::new();
    for user in 0..20 {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..5 {
            let request = Request::get("/")
                .header("host", "a")
                .header("x-user-id", format!("user-{user}"))
                .body(Full::new(Bytes::new()))
                .unwrap();
            seen.insert(send(proxy.addr, request).await.body);
        }
        assert_eq!(seen.len(), 1, "user-{user} went to {seen:?}");
        pools.extend(seen);
    }
    assert_eq!(pools.len(), 2);

    let sticky = "    sticky: { client_ip: true }\n";
    let proxy = spawn_proxy(&simple_config(&[old.addr], &[new.addr], "50%", sticky)).await;
    let bodies: std::collections::HashSet<String> = {
        let mut set = std::collections::HashSet::new();
        for _ in 0..20 {
            set.insert(send(proxy.addr, get("a", "/")).await.body);
        }
        set
    };
    assert_eq!(bodies.len(), 1, "one client address, one pool: {bodies:?}");
}

#[tokio::test]
async fn hosts_and_path_prefixes_route_and_the_rest_is_404() {
    let api = spawn_backend("api").await;
    let static_files = spawn_backend("static").await;
    let fallback = spawn_backend("fallback").await;
    let yaml = format!(
        r#"listeners:
  - addr: "127.0.0.1:0"
admin:
  addr: "127.0.0.1:0"
services:
  - name: api
    match: {{ hosts: ["api.example.com", "*.api.example.com"], path_prefix: /v1 }}
    old: {{ backends: [{{ addr: "{a}" }}] }}
    new: {{ backends: [{{ addr: "{a}" }}] }}
  - name: static
    match: {{ hosts: ["www.example.com"] }}
    old: {{ backends: [{{ addr: "{s}" }}] }}
    new: {{ backends: [{{ addr: "{s}" }}] }}
  - name: other
    match: {{ hosts: ["other.example.com"], path_prefix: / }}
    old: {{ backends: [{{ addr: "{f}" }}] }}
    new: {{ backends: [{{ addr: "{f}" }}] }}
"#,
        a = api.addr,
        s = static_files.addr,
        f = fallback.addr
    );
    let proxy = spawn_proxy(&yaml).await;
    let route = |host: &'static str, path: &'static str| {
        let addr = proxy.addr;
        async move { send(addr, get(host, path)).await }
    };
    assert_eq!(route("api.example.com", "/v1/items").await.body, "api");
    assert_eq!(route("API.EXAMPLE.COM:8080", "/v1").await.body, "api");
    assert_eq!(route("eu.api.example.com", "/v1/x").await.body, "api");
    assert_eq!(route("www.example.com", "/anything").await.body, "static");
    assert_eq!(route("other.example.com", "/").await.body, "fallback");
    for (host, path) in [
        ("api.example.com", "/v2"),
        ("nowhere.example.com", "/"),
        ("example.com", "/v1"),
    ] {
        let got = route(host, path).await;
        assert_eq!(got.status, StatusCode::NOT_FOUND, "{host}{path}");
    }
}

#[tokio::test]
async fn forwarding_headers_are_set_and_hop_by_hop_headers_stripped() {
    let old = spawn_backend("old").await;
    let proxy = spawn_proxy(&simple_config(&[old.addr], &[old.addr], "0%", "")).await;
    let request = Request::post("/echo?q=1")
        .header("host", "api.example.com")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-forwarded-proto", "gopher")
        .header("connection", "keep-alive, x-secret")
        .header("x-secret", "hop")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .header("te", "trailers")
        .header("x-end-to-end", "kept")
        .body(Full::new(Bytes::from_static(b"payload")))
        .unwrap();
    let got = send(proxy.addr, request).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body, "payload");
    assert!(
        !got.headers.contains_key("x-hop"),
        "a header the backend's Connection names is stripped"
    );
    assert_eq!(got.headers["x-backend"], "old");

    let seen = old.seen().pop().unwrap();
    assert_eq!(seen.uri, "/echo?q=1");
    assert_eq!(seen.headers["host"], "api.example.com");
    assert_eq!(seen.headers["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(seen.headers["x-forwarded-host"], "api.example.com");
    assert_eq!(seen.headers["x-end-to-end"], "kept");
    for gone in ["x-secret", "keep-alive", "proxy-authorization", "te"] {
        assert!(
            !seen.headers.contains_key(gone),
            "{gone} reached the backend"
        );
    }
    assert_eq!(seen.body, "payload");
}

#[tokio::test]
async fn an_http_1_0_request_without_host_reaches_the_backend_with_one() {
    // The backend is sent HTTP/1.1, which requires Host (nginx answers 400 without one):
    // the proxy names the address the client reached, as the client would have.
    let old = spawn_backend("old").await;
    let proxy = spawn_proxy(&simple_config(&[old.addr], &[old.addr], "0%", "")).await;
    let answer = raw(
        proxy.addr,
        b"GET /plain HTTP/1.0\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer:?}");
    let seen = old.seen().pop().unwrap();
    assert_eq!(seen.headers["host"], proxy.addr.to_string().as_str());
    assert!(
        !seen.headers.contains_key("x-forwarded-host"),
        "the client named no host"
    );
}

#[tokio::test]
async fn content_length_with_transfer_encoding_is_400_and_never_forwarded() {
    let old = spawn_backend("old").await;
    let proxy = spawn_proxy(&simple_config(&[old.addr], &[old.addr], "0%", "")).await;
    let smuggles: [&[u8]; 3] = [
        b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n1\r\nZ\r\n0\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: a\r\ntransfer-encoding: chunked\r\ncontent-length: 0\r\n\r\n0\r\n\r\n",
    ];
    for smuggle in smuggles {
        let answer = raw(proxy.addr, smuggle, Duration::from_secs(2)).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert_eq!(
            answer.matches("HTTP/1.1").count(),
            1,
            "nothing after the 400: {answer}"
        );
    }
    assert_eq!(old.hits(), 0, "no smuggling attempt reached the backend");

    // After an honest request on the same connection, the conflict is still caught.
    let mut keep_alive = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec();
    keep_alive.extend_from_slice(smuggles[0]);
    let answer = raw(proxy.addr, &keep_alive, Duration::from_secs(2)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("HTTP/1.1 400"), "{answer}");
    assert_eq!(old.hits(), 1);
}

#[tokio::test]
async fn a_dead_backend_is_retried_on_another() {
    let alive = spawn_backend("alive").await;
    let dead = dead_addr().await;
    let proxy = spawn_proxy(&simple_config(&[dead, alive.addr], &[alive.addr], "0%", "")).await;
    for _ in 0..20 {
        let got = send(proxy.addr, get("a", "/")).await;
        assert_eq!(got.status, StatusCode::OK, "{}", got.body);
    }
    assert_eq!(alive.hits(), 20);
    let stats = proxy.app.snapshot.load().routes[0]
        .service
        .old
        .stats
        .counts();
    assert!(
        stats.upstream_errors[0] >= 1,
        "connect failures are counted: {:?}",
        stats.upstream_errors
    );
    assert_eq!(stats.errors(), 0, "retried requests are not failures");
}

/// One pick per try: a connect failure must not advance round robin twice, or every
/// request that meets the dead backend would skip the same live one.
#[tokio::test]
async fn a_retry_after_a_dead_backend_keeps_round_robin_fair() {
    let (first, second) = (spawn_backend("first").await, spawn_backend("second").await);
    let dead = dead_addr().await;
    let old = [dead, first.addr, second.addr];
    let proxy = spawn_proxy(&simple_config(&old, &[first.addr], "0%", "")).await;
    // Fewer than the failures that eject the dead backend: it stays in the rotation.
    for _ in 0..4 {
        let got = send(proxy.addr, get("a", "/")).await;
        assert_eq!(got.status, StatusCode::OK, "{}", got.body);
    }
    assert_eq!((first.hits(), second.hits()), (2, 2));
}

#[tokio::test]
async fn when_new_is_down_old_serves_its_share_and_new_is_charged() {
    let old = spawn_backend("old").await;
    let dead = dead_addr().await;
    let proxy = spawn_proxy(&simple_config(&[old.addr], &[dead], "50%", "")).await;
    let mut client = Client::connect(proxy.addr).await;
    for _ in 0..40 {
        let got = client.send(get("a", "/")).await.unwrap();
        assert_eq!(got.status, StatusCode::OK);
        assert_eq!(got.body, "old");
    }
    // NEW's share of these 40 requests, from the same sequence the proxy uses.
    let share = (0..40u64)
        .filter(|n| cutover::spread_bucket(*n) < 5000)
        .count() as u64;
    let route = &proxy.app.snapshot.load().routes[0];
    let new = route.service.new.stats.counts();
    assert_eq!(new.errors(), share, "NEW's share counts as NEW failures");
    let metrics = proxy.app.metrics.encode();
    let line =
        format!("cutover_requests_total{{service=\"api\",pool=\"new\",code=\"error\"}} {share}");
    assert!(metrics.contains(&line), "{metrics}");
}

#[tokio::test]
async fn a_slow_backend_gets_504_and_counts_a_timeout() {
    let old = spawn_backend("old").await;
    old.set_delay(Duration::from_secs(3));
    let timeouts = "    timeouts: { connect: 1s, request: 200ms, idle: 10s }\n";
    let proxy = spawn_proxy(&simple_config(&[old.addr], &[old.addr], "0%", timeouts)).await;
    let started = std::time::Instant::now();
    let got = send(proxy.addr, get("a", "/")).await;
    assert_eq!(got.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(started.elapsed() < Duration::from_secs(2));
    let stats = proxy.app.snapshot.load().routes[0]
        .service
        .old
        .stats
        .counts();
    assert_eq!(stats.upstream_errors[1], 1, "one timeout");
    assert_eq!(stats.errors(), 1);
}

#[tokio::test]
async fn websockets_are_tunnelled_after_the_backends_101() {
    let old = spawn_backend("old").await;
    let proxy = spawn_proxy(&simple_config(&[old.addr], &[old.addr], "0%", "")).await;
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        .await
        .unwrap();
    let mut head = vec![0u8; 1024];
    let n = stream.read(&mut head).await.unwrap();
    let head = String::from_utf8_lossy(&head[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: websocket"),
        "{head}"
    );
    for message in ["hello", "through", "the tunnel"] {
        stream.write_all(message.as_bytes()).await.unwrap();
        let mut echo = vec![0u8; message.len()];
        stream.read_exact(&mut echo).await.unwrap();
        assert_eq!(echo, message.as_bytes());
    }
}

#[tokio::test]
async fn h2c_prior_knowledge_is_served() {
    let old = spawn_backend("old").await;
    let proxy = spawn_proxy(&simple_config(&[old.addr], &[old.addr], "0%", "")).await;
    let stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    for path in ["/a", "/b", "/c"] {
        let request = Request::get(format!("http://api.example.com{path}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.version(), http::Version::HTTP_2);
    }
    let seen = old.seen();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[0].headers["host"], "api.example.com");
    assert_eq!(seen[0].uri, "/a");
}

#[tokio::test]
async fn a_dribbling_client_is_disconnected() {
    let old = spawn_backend("old").await;
    let limits = "limits:\n  header_read_timeout: 300ms\n  shutdown_grace: 5s\n";
    let yaml = simple_config(&[old.addr], &[old.addr], "0%", "")
        .replace("limits:\n  shutdown_grace: 5s\n", limits);
    let proxy = spawn_proxy(&yaml).await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for opening in [&b""[..], b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: "] {
        let started = std::time::Instant::now();
        let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        stream.write_all(opening).await.unwrap();
        let mut rest = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "the connection was left open");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
    assert_eq!(old.hits(), 0);
}

#[tokio::test]
async fn a_request_whose_first_byte_looks_like_the_h2_preface_is_served_whole() {
    // The protocol sniff reads "P", which could start the HTTP/2 preface, waits for more,
    // and hands every byte it read to HTTP/1 once they show it is not the preface.
    let old = spawn_backend("old").await;
    let proxy = spawn_proxy(&simple_config(&[old.addr], &[old.addr], "0%", "")).await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    stream.write_all(b"P").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    stream
        .write_all(
            b"OST /split HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("no answer")
        .unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let seen = old.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (seen[0].method.as_str(), seen[0].uri.as_str()),
        ("POST", "/split")
    );
    assert_eq!(&seen[0].body[..], b"hi");
}

#[tokio::test]
async fn malformed_requests_get_4xx_and_the_proxy_keeps_serving() {
    let old = spawn_backend("old").await;
    let yaml = simple_config(&[old.addr], &[old.addr], "0%", "")
        .replace("limits:\n", "limits:\n  max_header_bytes: 4KiB\n");
    let proxy = spawn_proxy(&yaml).await;
    let huge_header = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "a".repeat(8000)
    );
    let long_line = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(70_000));
    let cases: Vec<Vec<u8>> = vec![
        b"GARBAGE\r\n\r\n".to_vec(),
        b"GET / HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n".to_vec(),
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n".to_vec(),
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"
            .to_vec(),
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n".to_vec(),
        b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
        b"GET / HTTP/1.1\r\nHost: a\r\nX: \x00\r\n\r\n".to_vec(),
        b"G\x01T / HTTP/1.1\r\n\r\n".to_vec(),
        b"GET / HTTP/9.9\r\nHost: a\r\n\r\n".to_vec(),
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\ngarbage-instead-of-frames".to_vec(),
        huge_header.into_bytes(),
        long_line.into_bytes(),
    ];
    for case in &cases {
        let answer = raw(proxy.addr, case, Duration::from_secs(2)).await;
        let status = answer.get(9..12).unwrap_or("");
        // HTTP/2 garbage is answered the HTTP/2 way: SETTINGS, then GOAWAY.
        let h2_goaway = case.starts_with(b"PRI * HTTP/2.0") && answer.as_bytes().get(3) == Some(&4);
        assert!(
            answer.is_empty()
                || status.starts_with('4')
                || answer.starts_with("HTTP/1.1 505")
                || h2_goaway,
            "{:?} -> {answer:?}",
            String::from_utf8_lossy(&case[..case.len().min(60)])
        );
    }
    // A body that breaks its chunked framing halfway is cut off upstream too.
    let broken =
        b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloZZZ\r\n";
    let _ = raw(proxy.addr, broken, Duration::from_secs(1)).await;
    assert_eq!(old.seen().iter().filter(|s| s.body == "hello").count(), 0);
    let got = send(proxy.addr, get("a", "/")).await;
    assert_eq!(
        got.status,
        StatusCode::OK,
        "still serving after {} malformed requests",
        cases.len()
    );
}

#[tokio::test]
async fn bodies_stream_both_ways_and_connections_are_reused() {
    let old = spawn_backend("old").await;
    let proxy = spawn_proxy(&simple_config(&[old.addr], &[old.addr], "0%", "")).await;
    let mut client = Client::connect(proxy.addr).await;
    let payload = "x".repeat(300_000);
    let request = Request::post("/echo")
        .header("host", "a")
        .body(Full::new(Bytes::from(payload.clone())))
        .unwrap();
    let got = client.send(request).await.unwrap();
    assert_eq!(got.body.len(), payload.len());
    let big = client.send(get("a", "/big")).await.unwrap();
    assert_eq!(big.body.len(), 1 << 20);
    let head = client
        .send(
            Request::head("/")
                .header("host", "a")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_empty());
    for _ in 0..50 {
        assert_eq!(
            client.send(get("a", "/")).await.unwrap().status,
            StatusCode::OK
        );
    }
    // Keep-alive towards the backend: far fewer backend connections than requests.
    let backend_connections = old.seen().iter().filter(|s| s.uri == "/").count();
    assert_eq!(backend_connections, 51);
}

#[tokio::test]
async fn an_unhealthy_old_pool_answers_503() {
    let old = spawn_backend("old").await;
    old.set_status(500);
    let check = "    health_check: { path: /healthz, interval: 100ms, timeout: 50ms, healthy: 1, unhealthy: 1 }\n";
    let proxy = spawn_proxy(&simple_config(&[old.addr], &[old.addr], "0%", check)).await;
    let down = eventually(Duration::from_secs(3), || {
        !proxy.app.snapshot.load().routes[0].service.old.backends[0].is_healthy()
    })
    .await;
    assert!(down, "the health check marks the backend down");
    let got = send(proxy.addr, get("a", "/")).await;
    assert_eq!(got.status, StatusCode::SERVICE_UNAVAILABLE);
    old.set_status(200);
    let up = eventually(Duration::from_secs(3), || {
        proxy.app.snapshot.load().routes[0].service.old.backends[0].is_healthy()
    })
    .await;
    assert!(up);
    assert_eq!(send(proxy.addr, get("a", "/")).await.status, StatusCode::OK);
}

/// A TLS client trusting `certs`, offering h2 and http/1.1.
fn tls_client(certs: &[&std::path::Path]) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots
            .add(CertificateDer::from_pem_file(cert).unwrap())
            .unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(cutover::tls_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

#[tokio::test]
async fn tls_picks_the_certificate_by_sni_and_speaks_h2_by_alpn() {
    use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
    let old = spawn_backend("old").await;
    let dir = tempfile::tempdir().unwrap();
    let (cert_a, key_a) = certificate(dir.path(), "a", &["a.example.com"]);
    let (cert_b, key_b) = certificate(dir.path(), "b", &["b.example.com", "*.b.example.com"]);
    let tls = format!(
        "  - addr: \"127.0.0.1:0\"\n    tls:\n      certificates:\n        - {{ cert: {}, key: {} }}\n        - {{ cert: {}, key: {} }}\n",
        cert_a.display(),
        key_a.display(),
        cert_b.display(),
        key_b.display()
    );
    let yaml = simple_config(&[old.addr], &[old.addr], "0%", "")
        .replace("  - addr: \"127.0.0.1:0\"\nadmin", &format!("{tls}admin"));
    let proxy = spawn_proxy(&yaml).await;
    let connector = tls_client(&[&cert_a, &cert_b]);
    for (name, expected) in [
        ("a.example.com", &cert_a),
        ("b.example.com", &cert_b),
        ("x.b.example.com", &cert_b),
    ] {
        let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        let server_name = ServerName::try_from(name.to_string()).unwrap();
        let stream = connector.connect(server_name, tcp).await.unwrap();
        let (_, connection) = stream.get_ref();
        assert_eq!(connection.alpn_protocol(), Some(&b"h2"[..]), "{name}");
        let served = connection.peer_certificates().unwrap()[0].clone();
        assert_eq!(
            served,
            CertificateDer::from_pem_file(expected).unwrap(),
            "{name} got the wrong certificate"
        );

        let (mut sender, h2) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .unwrap();
        tokio::spawn(h2);
        let request = Request::get(format!("https://{name}/tls"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.version(), http::Version::HTTP_2);
    }
    let seen = old.seen().pop().unwrap();
    assert_eq!(seen.headers["x-forwarded-proto"], "https");
    assert_eq!(seen.headers["host"], "x.b.example.com");
}

#[tokio::test]
async fn shutdown_waits_for_an_open_tunnel_within_the_grace() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let old = spawn_backend("old").await;
    let proxy = spawn_proxy(&simple_config(&[old.addr], &[old.addr], "0%", "")).await;
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = [0u8; 512];
    let n = stream.read(&mut head).await.unwrap();
    assert!(head[..n].starts_with(b"HTTP/1.1 101"));
    let app = std::sync::Arc::new(proxy.app);
    let shutting = tokio::spawn({
        let app = app.clone();
        async move { app.shutdown().await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !shutting.is_finished(),
        "shutdown waits while the tunnel is open"
    );
    stream.write_all(b"still here").await.unwrap();
    let mut echo = [0u8; 10];
    stream.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"still here");
    drop(stream);
    let open = tokio::time::timeout(Duration::from_secs(3), shutting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(open, 0, "every connection finished");
}

#[tokio::test]
async fn max_connections_holds_further_clients_until_a_slot_frees() {
    let old = spawn_backend("old").await;
    let yaml = simple_config(&[old.addr], &[old.addr], "0%", "")
        .replace("limits:\n", "limits:\n  max_connections: 2\n");
    let proxy = spawn_proxy(&yaml).await;
    let mut first = Client::connect(proxy.addr).await;
    let mut second = Client::connect(proxy.addr).await;
    assert_eq!(
        first.send(get("a", "/")).await.unwrap().status,
        StatusCode::OK
    );
    assert_eq!(
        second.send(get("a", "/")).await.unwrap().status,
        StatusCode::OK
    );
    let third = tokio::spawn({
        let addr = proxy.addr;
        async move { send(addr, get("a", "/")).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!third.is_finished(), "a third connection waits");
    drop(first);
    let got = tokio::time::timeout(Duration::from_secs(3), third)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.status, StatusCode::OK, "served once a slot is free");
}

/// More clients than rustls' session cache holds (256): every one resumes its session on
/// its next connection, with the ticket it was given.
#[tokio::test]
async fn every_tls_client_resumes_its_session() {
    const CLIENTS: usize = 300;
    let old = spawn_backend("old").await;
    let (proxy, certs) = tls_proxy(old.addr, old.addr).await;
    // Each client its own session store, as separate clients have.
    let clients: Vec<_> = (0..CLIENTS).map(|_| tls_connector(&certs[..1])).collect();
    for client in &clients {
        let (_, mut sender) = tls_connect(client, proxy.addr).await;
        // An answer: the tickets, sent right after the handshake, have been read.
        assert_eq!(tls_get(&mut sender).await, "old");
    }
    let mut resumed = 0;
    for client in &clients {
        let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("api.test").unwrap();
        let tls = client.connect(name, tcp).await.unwrap();
        if tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
            resumed += 1;
        }
    }
    assert_eq!(resumed, CLIENTS, "sessions resumed");
}
