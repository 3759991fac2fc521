//! Idle keep-alive connections: what a backend's idle queues cost, that a backend's
//! connections close when idle though no request takes them, what an idle client
//! connection costs in memory, and that a connection parked while idle
//! (docs/performance.md) still behaves as any other: it serves its next requests,
//! pipelined ones too, over clear text and TLS, closes `header_read_timeout` after its
//! last answer (or its opening; also while the proxy drains) and at once on shutdown, or
//! when its runtime stops.
//!
//! The memory is counted by this binary's allocator (the proxy runs in-process), so the
//! tests here take turns.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use support::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// The system allocator, counting the bytes live.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Relaxed);
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// One test at a time: the memory test counts every allocation of the process.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: api.test\r\n\r\n";

/// Reads one whole answer (head and `Content-Length` body); its status line and body.
async fn answer<S: AsyncRead + Unpin>(stream: &mut S) -> Result<(String, String), String> {
    let mut bytes = Vec::new();
    let mut byte = [0u8; 1];
    while !bytes.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => bytes.push(byte[0]),
            Ok(_) => return Err(format!("closed after {bytes:?}")),
            Err(err) => return Err(err.to_string()),
        }
    }
    let head = String::from_utf8_lossy(&bytes).into_owned();
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .ok_or_else(|| format!("no content-length in {head:?}"))?;
    let mut body = vec![0u8; length];
    stream
        .read_exact(&mut body)
        .await
        .map_err(|e| e.to_string())?;
    let status = head.lines().next().unwrap_or_default().to_string();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Sends `requests` GETs in one write and reads their answers: their bodies.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    requests: usize,
) -> Vec<String> {
    stream.write_all(&GET.repeat(requests)).await.unwrap();
    let mut bodies = Vec::new();
    for _ in 0..requests {
        let (status, body) = tokio::time::timeout(Duration::from_secs(5), answer(stream))
            .await
            .expect("an answer within 5s")
            .unwrap();
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        bodies.push(body);
    }
    bodies
}

/// Longer than a connection needs to be parked (two of the proxy's idle checks, 250 ms
/// apart), with room for a loaded machine.
const PARKED: Duration = Duration::from_millis(1200);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_holds_a_few_kilobytes_and_serves_again() {
    let _turn = TURN.lock().await;
    let old = spawn_backend("old").await;
    let proxy = spawn_proxy(&simple_config(&[old.addr], &[old.addr], "0%", "")).await;
    // Warm up: the backend connection pool, the routing snapshot, the runtime's buffers.
    for _ in 0..2 {
        let mut warm = Vec::new();
        for _ in 0..16 {
            let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
            exchange(&mut stream, 1).await;
            warm.push(stream);
        }
        tokio::time::sleep(PARKED).await;
    }

    // What a parked connection costs, in the proxy and in this test's client: the growth
    // from a second batch of connections, so that what the first one grows once (pools,
    // runtime and allocator caches) is not counted.
    const N: isize = 200;
    let mut idle = Vec::new();
    let mut live = Vec::new();
    for _batch in 0..2 {
        for _ in 0..N {
            let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
            assert_eq!(exchange(&mut stream, 1).await, ["old"]);
            idle.push(stream);
        }
        // Nothing tells when the connections are parked: give them twice the time it takes.
        tokio::time::sleep(2 * PARKED).await;
        // The backend is in this process too: what it records of each request is not the
        // proxy's.
        old.forget_seen();
        live.push(LIVE.load(Relaxed));
    }
    let per_idle = (live[1] - live[0]) / N;

    // Parked connections serve again, pipelined requests too.
    for stream in &mut idle[..20] {
        assert_eq!(exchange(stream, 3).await, ["old", "old", "old"]);
    }
    assert_eq!(old.hits(), 32 + 2 * N as usize + 60);
    drop(idle);
    let active = "cutover_connections_active{listener=\"127.0.0.1:0\"}";
    assert!(eventually(Duration::from_secs(5), || metric(&proxy, active) == 0.0).await);

    // In a debug build, this test's client socket included (its registration with the
    // runtime alone is 256 bytes): some 650 bytes. It was 1.1 KiB while a parked
    // connection kept its task and its socket's registration with the runtime (now its
    // socket waits with the listener's poller), 910 bytes when its state kept the ended
    // task's waker, and with it the task's cell, 1.35 KiB while a parked connection kept
    // its serve loop (then its task held the socket), 1.6
    // KiB while the connection's task kept the set-up's room, 1.9 KiB while each parked
    // connection kept a timer and a stop waiter of its own (now its listener's watch keeps
    // both), 3.4 KiB while hyper's emptied connection box stayed
    // allocated through every parked wait and the wait carried hyper's builder and parts,
    // and is over 20 KiB with hyper's session kept.
    eprintln!("per idle connection: {per_idle} bytes");
    assert!(per_idle < 800, "{per_idle} bytes per idle connection");
}

#[tokio::test]
async fn a_parked_tls_connection_serves_its_next_requests() {
    let _turn = TURN.lock().await;
    let old = spawn_backend("old").await;
    let (proxy, certs) = tls_proxy(old.addr, old.addr).await;
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("api.test".to_string()).unwrap();
    let mut tls = tls_connector(&certs[..1]).connect(name, tcp).await.unwrap();
    assert_eq!(exchange(&mut tls, 1).await, ["old"]);
    for _ in 0..2 {
        tokio::time::sleep(PARKED).await;
        assert_eq!(exchange(&mut tls, 2).await, ["old", "old"]);
    }
}

/// Sends a head that never ends, a byte every 100 ms, until the proxy closes the
/// connection (at most 5 s); panics if it answers instead.
async fn dribble_until_closed(stream: &mut TcpStream) {
    let dribble = async {
        for byte in b"GET / HTTP/1.1\r\nHost: api.test\r\nX-Slow: "
            .iter()
            .cycle()
        {
            if stream.write_all(&[*byte]).await.is_err() {
                return;
            }
            let mut probe = [0u8; 1];
            match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut probe)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                Ok(Ok(_)) => panic!("an answer to a head that never ended"),
                Err(_) => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), dribble)
        .await
        .expect("still open 5s after the answer");
}

/// A proxy with `header_read_timeout: 1s`, its backend, and a client connection that has
/// had one answer.
async fn answered_with_a_1s_header_timeout() -> (Backend, TestProxy, TcpStream) {
    let old = spawn_backend("old").await;
    let yaml = simple_config(&[old.addr], &[old.addr], "0%", "")
        .replace("limits:\n", "limits:\n  header_read_timeout: 1s\n");
    let proxy = spawn_proxy(&yaml).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    exchange(&mut stream, 1).await;
    (old, proxy, stream)
}

#[tokio::test]
async fn a_parked_connection_closes_header_read_timeout_after_its_last_answer() {
    let _turn = TURN.lock().await;
    let (_old, _proxy, mut stream) = answered_with_a_1s_header_timeout().await;
    let answered = Instant::now();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
    let after = answered.elapsed();
    assert!(read.is_ok(), "still open 5s after the answer");
    assert!(rest.is_empty(), "{rest:?}");
    // Never before the timeout; after it by at most one idle check and scheduling.
    assert!(
        after >= Duration::from_millis(950) && after < Duration::from_millis(1900),
        "closed {after:?} after the answer"
    );
}

#[tokio::test]
async fn shutdown_closes_a_parked_connection_at_once() {
    let _turn = TURN.lock().await;
    let old = spawn_backend("old").await;
    let proxy = spawn_proxy(&simple_config(&[old.addr], &[old.addr], "0%", "")).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    exchange(&mut stream, 1).await;
    tokio::time::sleep(PARKED).await;
    let started = Instant::now();
    assert_eq!(proxy.app.shutdown().await, 0, "connections left open");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut rest)).await;
    assert!(matches!(read, Ok(Ok(0))), "{read:?}");
}

#[tokio::test]
async fn a_drain_keeps_header_read_timeout_for_a_head_begun_before_it() {
    let _turn = TURN.lock().await;
    // shutdown_grace is 5 s: the half-sent head must be closed by its 1 s header timeout.
    // On a new connection: hyper's graceful shutdown closes one that has had an answer
    // and waits for the head of one that has not.
    let (_old, proxy, _answered) = answered_with_a_1s_header_timeout().await;
    let answered = Instant::now();
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream.write_all(&GET[..10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (left, rest) = tokio::join!(proxy.app.shutdown(), async {
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await
    });
    let after = answered.elapsed();
    assert_eq!(left, 0, "connections left open");
    assert!(rest.is_ok(), "still open 5 s after the answer");
    assert!(
        after >= Duration::from_millis(950) && after < Duration::from_millis(1900),
        "closed {after:?} after the answer"
    );
}

#[tokio::test]
async fn a_head_dribbled_after_an_answer_is_cut_off_at_header_read_timeout() {
    let _turn = TURN.lock().await;
    let (old, _proxy, mut stream) = answered_with_a_1s_header_timeout().await;
    let answered = Instant::now();
    // A byte every 100 ms: the connection never parks (a head is under way), so only the
    // header timeout can end it.
    dribble_until_closed(&mut stream).await;
    let after = answered.elapsed();
    assert!(
        after >= Duration::from_millis(950) && after < Duration::from_millis(1900),
        "closed {after:?} after the answer"
    );
    assert_eq!(old.hits(), 1);
}

/// The first head's `header_read_timeout` counts from the connection's opening: its first
/// bytes, sent just before that time is up, do not start a timeout of their own.
#[tokio::test]
async fn a_first_head_dribbled_late_is_cut_off_header_read_timeout_after_opening() {
    let _turn = TURN.lock().await;
    let old = spawn_backend("old").await;
    let yaml = simple_config(&[old.addr], &[old.addr], "0%", "")
        .replace("limits:\n", "limits:\n  header_read_timeout: 1s\n");
    let proxy = spawn_proxy(&yaml).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let opened = Instant::now();
    tokio::time::sleep(Duration::from_millis(900)).await;
    dribble_until_closed(&mut stream).await;
    let after = opened.elapsed();
    // About 1.9 s when the sniff's wait was a timeout of its own.
    assert!(
        after >= Duration::from_millis(950) && after < Duration::from_millis(1750),
        "closed {after:?} after it opened"
    );
    assert_eq!(old.hits(), 0);
}

#[tokio::test]
async fn a_slow_head_that_ends_within_header_read_timeout_is_served() {
    let _turn = TURN.lock().await;
    let (_old, _proxy, mut stream) = answered_with_a_1s_header_timeout().await;
    // Twice: the second head's time is counted from the first one's answer, not from the
    // connection's start.
    for _ in 0..2 {
        let (start, end) = GET.split_at(10);
        tokio::time::sleep(Duration::from_millis(300)).await;
        stream.write_all(start).await.unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        stream.write_all(end).await.unwrap();
        assert_eq!(answer(&mut stream).await.unwrap().1, "old");
    }
}

#[tokio::test]
async fn waking_a_parked_connection_does_not_restart_its_header_timeout() {
    let _turn = TURN.lock().await;
    let (_old, _proxy, mut stream) = answered_with_a_1s_header_timeout().await;
    let answered = Instant::now();
    // Parked by 0.5 s; its first byte at 0.8 s starts a new session, which still has to
    // complete the head 1 s after the answer, not 1 s after that byte.
    tokio::time::sleep(Duration::from_millis(800)).await;
    dribble_until_closed(&mut stream).await;
    let after = answered.elapsed();
    assert!(
        after >= Duration::from_millis(950) && after < Duration::from_millis(1600),
        "closed {after:?} after the answer"
    );
}

/// More parked connections than the listener's poller reports at once (256).
const MANY: usize = 300;

#[tokio::test]
async fn many_parked_connections_wake_together_and_close_when_their_clients_leave() {
    let _turn = TURN.lock().await;
    let old = spawn_backend("old").await;
    let proxy = spawn_proxy(&simple_config(&[old.addr], &[old.addr], "0%", "")).await;
    let mut streams = Vec::new();
    for _ in 0..MANY {
        let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
        exchange(&mut stream, 1).await;
        streams.push(stream);
    }
    tokio::time::sleep(PARKED).await;

    // Every one at once: the heads arrive before the proxy serves any.
    for stream in &mut streams {
        stream.write_all(GET).await.unwrap();
    }
    for stream in &mut streams {
        let answered = tokio::time::timeout(Duration::from_secs(5), answer(stream)).await;
        assert_eq!(answered.expect("an answer within 5s").unwrap().1, "old");
    }
    assert_eq!(old.hits(), 2 * MANY);

    // Parked again, then the clients leave: the proxy closes its side at once, not at
    // header_read_timeout (10 s).
    tokio::time::sleep(PARKED).await;
    let active = "cutover_connections_active{listener=\"127.0.0.1:0\"}";
    assert_eq!(metric(&proxy, active), MANY as f64);
    drop(streams);
    assert!(
        eventually(Duration::from_secs(3), || metric(&proxy, active) == 0.0).await,
        "{} connections still open",
        metric(&proxy, active)
    );
}

/// Two pools of 1,000 backends cost about a kilobyte per backend, on 16 cores too: a
/// backend's idle-connection queues hold memory as they hold connections, not for every
/// place they could, nor for every core.
#[tokio::test]
async fn a_thousand_backends_per_pool_cost_a_kilobyte_each() {
    let _turn = TURN.lock().await;
    let cores = Cores::start(15);
    let pool = |first: u16| -> Vec<std::net::SocketAddr> {
        (first..first + 1000)
            .map(|port| std::net::SocketAddr::from(([127, 0, 0, 1], port)))
            .collect()
    };
    let before = LIVE.load(Relaxed);
    let config = simple_config(&pool(20_000), &pool(21_000), "5%", "");
    let proxy = spawn_proxy_on_cores(&config, &cores).await;
    let per_backend = (LIVE.load(Relaxed) - before) / 2000;
    // About 0.9 KiB in a debug build (the config, the routing snapshot and the backends);
    // some 50 KiB while each backend's queue held its 512 places from the start, and 24
    // KiB on these 16 cores while each runtime's queue was made with the backend.
    eprintln!("per backend: {per_backend} bytes");
    assert!(per_backend < 4000, "{per_backend} bytes per backend");
    drop(proxy);
}

/// A backend's unused connections close `timeouts.idle` after their last request, though
/// no request comes to take them (as OLD's after a cutover): not sooner, not never.
#[tokio::test]
async fn backend_connections_close_when_idle_though_no_request_comes() {
    let _turn = TURN.lock().await;
    let backend = spawn_counting_backend().await;
    let extra = "    timeouts: { idle: 400ms }\n";
    let config = simple_config(&[backend.addr], &[backend.addr], "0%", extra);
    let proxy = spawn_proxy(&config).await;
    let slow = || send(proxy.addr, get("api.test", "/slow"));
    let (a, b, c) = tokio::join!(slow(), slow(), slow());
    assert_eq!([a.status, b.status, c.status], [200; 3]);
    assert_eq!(backend.open(), 3, "one connection per request at once");
    // The next request takes one of them.
    let last = Instant::now();
    assert_eq!(send(proxy.addr, get("api.test", "/")).await.status, 200);
    assert_eq!(backend.accepted(), 3);
    assert!(
        eventually(Duration::from_secs(5), || backend.open() == 0).await,
        "{} backend connections still open 5 s after the last request",
        backend.open()
    );
    let closed_after = last.elapsed();
    assert!(
        closed_after >= Duration::from_millis(400),
        "the last connection closed {closed_after:?} after its request, within its idle timeout"
    );
    drop(proxy);
}

/// A parked connection closes when its listener's watch ends with the runtime, though
/// nothing shut the proxy down (an embedding that drops its runtime): nothing else could
/// ever wake or close it.
#[test]
fn a_parked_connection_closes_when_its_runtime_stops() {
    use std::io::{Read, Write};
    let _turn = TURN.blocking_lock();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (backend, proxy) = runtime.block_on(async {
        let old = spawn_backend("old").await;
        let config = simple_config(&[old.addr], &[old.addr], "0%", "");
        (old, spawn_proxy(&config).await)
    });
    let mut parked = std::net::TcpStream::connect(proxy.addr).unwrap();
    parked
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    parked.write_all(GET).unwrap();
    let mut answer = [0u8; 4096];
    let n = parked.read(&mut answer).unwrap();
    assert!(answer[..n].starts_with(b"HTTP/1.1 200"));
    std::thread::sleep(2 * PARKED);
    drop((proxy, backend));
    runtime.shutdown_timeout(Duration::from_secs(1));
    let end = parked.read(&mut answer);
    assert!(
        matches!(end, Ok(0)),
        "the parked connection is still open: {end:?}"
    );
}
