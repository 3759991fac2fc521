//! Hostile config files: deep nesting, alias bombs and huge files are refused quickly by
//! `cutover validate`, and a running proxy that is asked to reload one keeps its config
//! and keeps serving.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

/// (name, text, the message expected).
fn hostile_files() -> Vec<(&'static str, String, &'static str)> {
    let depth = "nesting deeper than 64 levels";
    let flow = |levels: usize| format!("services: {}1{}\n", "[".repeat(levels), "]".repeat(levels));
    let block = |levels: usize| {
        (0..levels)
            .map(|level| format!("{}a:\n", " ".repeat(level)))
            .collect::<String>()
    };
    let mut bomb =
        String::from("a0: &a0 [\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\"]\n");
    for level in 1..=9 {
        let below = vec![format!("*a{}", level - 1); 9].join(",");
        bomb.push_str(&format!("a{level}: &a{level} [{below}]\n"));
    }
    let mut huge = String::from("# padding\n");
    while huge.len() <= 4 * 1024 * 1024 {
        huge.push_str("# a comment line of padding to make the file larger than 4 MiB\n");
    }
    vec![
        ("flow-4000", flow(4_000), depth),
        ("flow-100000", flow(100_000), depth),
        ("dashes-4000", format!("{}x\n", "- ".repeat(4_000)), depth),
        ("block-2000", block(2_000), depth),
        ("bomb", bomb, "aliases expand to more than 100000 nodes"),
        ("huge", huge, "more than the 4 MiB"),
    ]
}

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_cutover")
}

#[test]
fn validate_refuses_each_hostile_file_quickly() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text, message) in hostile_files() {
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, &text).unwrap();
        let started = Instant::now();
        let output = Command::new(binary())
            .args(["validate", "-c"])
            .arg(&path)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let took = started.elapsed();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        eprintln!(
            "{name} ({} bytes): exit {:?} in {took:?}",
            text.len(),
            output.status.code()
        );
        assert_eq!(output.status.code(), Some(1), "{name}: {all}");
        assert!(all.contains(message), "{name}: {all}");
        assert!(
            all.contains(&format!("{name}.yaml:")),
            "{name}: no file:line:col: {all}"
        );
        assert!(took < Duration::from_secs(2), "{name}: took {took:?}");
    }
}

/// A backend answering 200 "backend" to everything.
async fn spawn_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|_request| async {
                    Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from("backend"))))
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// Sends one request on a fresh connection: (status, body).
async fn send(addr: SocketAddr, request: Request<Full<Bytes>>) -> (StatusCode, String) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn request(method: &str, path: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `cutover run -c CONFIG`, killed when dropped.
struct Running {
    child: std::process::Child,
    log: tempfile::NamedTempFile,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    async fn start(config: &Path, admin: SocketAddr) -> Running {
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new(binary())
            .args(["run", "-c"])
            .arg(config)
            .env("CUTOVER_WORKER_THREADS", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        let mut running = Running { child, log };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(admin).await.is_err() {
            if let Ok(Some(exit)) = running.child.try_wait() {
                panic!("cutover exited with {exit} at start:\n{}", running.log());
            }
            assert!(
                Instant::now() < deadline,
                "no admin API after 10 s:\n{}",
                running.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        running
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    fn assert_alive(&mut self, when: &str) {
        if let Ok(Some(exit)) = self.child.try_wait() {
            panic!("cutover exited with {exit} {when}:\n{}", self.log());
        }
    }
}

#[tokio::test]
async fn reloading_a_hostile_file_keeps_the_running_proxy() {
    let backend = spawn_backend().await;
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cutover.yaml");
    let good = format!(
        "listeners:\n  - addr: \"{listen}\"\nadmin:\n  addr: \"{admin}\"\nstate_dir: state\nservices:\n  - name: api\n    old:\n      backends:\n        - addr: \"{backend}\"\n    new:\n      backends:\n        - addr: \"{backend}\"\n"
    );
    std::fs::write(&config, &good).unwrap();
    let mut running = Running::start(&config, admin).await;
    assert_eq!(
        send(listen, request("GET", "/")).await,
        (StatusCode::OK, "backend".into())
    );

    for (name, text, message) in hostile_files() {
        std::fs::write(&config, &text).unwrap();
        let started = Instant::now();
        let (status, body) = send(admin, request("POST", "/reload")).await;
        let took = started.elapsed();
        eprintln!("reload {name}: {status} in {took:?}");
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}: {body}");
        assert!(body.contains(message), "{name}: {body}");
        assert!(took < Duration::from_secs(2), "{name}: took {took:?}");
        running.assert_alive(&format!("after reloading {name}"));
        let (status, answer) = send(listen, request("GET", "/")).await;
        assert_eq!(
            (status, answer.as_str()),
            (StatusCode::OK, "backend"),
            "after {name}"
        );
    }
    // The watcher saw those files too; give it a moment to choke on them, if it would.
    tokio::time::sleep(Duration::from_millis(500)).await;
    running.assert_alive("after the watcher saw the hostile files");
    assert_eq!(send(listen, request("GET", "/")).await.0, StatusCode::OK);

    // And a good config still reloads.
    std::fs::write(&config, &good).unwrap();
    let (status, body) = send(admin, request("POST", "/reload")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
