//! A runtime per core (`cutover run` on a machine with several): every core accepts
//! connections and serves them to their end, parked connections wake on any of them, a
//! listener a reload adds or removes starts or stops on all of them, a quiet listener
//! holds no connection slot on any, and a shutdown drains them all. The proxy runs
//! in-process on the test's runtime and two more, each on its own thread, and the
//! runtimes' own task counts show where the connections are.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::*;
use tokio::task::JoinSet;

/// Requests to `/slow` (the backend waits 300 ms) on new connections, one at a time, until
/// every worker runtime has taken some: their answers, to await.
async fn until_every_core_serves(
    addr: SocketAddr,
    cores: &Cores,
    baseline: &[usize],
) -> JoinSet<Result<(http::StatusCode, String), String>> {
    let mut answers = JoinSet::new();
    for _ in 0..100 {
        let mut client = KeepAlive::connect(addr).await.unwrap();
        answers.spawn(async move { client.get("/slow").await });
        tokio::time::sleep(Duration::from_millis(5)).await;
        let now = cores.tasks();
        if now.iter().zip(baseline).all(|(now, before)| now > before) {
            return answers;
        }
    }
    panic!(
        "100 connections, and not every core took one: tasks {:?}, before {baseline:?}",
        cores.tasks()
    );
}

/// The proxy on the test's runtime and two more, in front of OLD (`old`, which takes all
/// the traffic) and NEW; returned once each worker runs its accept loop and nothing else.
async fn on_three_cores() -> (Cores, Backend, TestProxy) {
    let cores = Cores::start(2);
    let (old, new) = (spawn_backend("old").await, spawn_backend("new").await);
    let config = simple_config(&[old.addr], &[new.addr], "0%", "");
    let proxy = spawn_proxy_on_cores(&config, &cores).await;
    let settled = eventually(Duration::from_secs(5), || cores.tasks() == [1, 1]).await;
    assert!(settled, "tasks on the workers: {:?}", cores.tasks());
    (cores, old, proxy)
}

async fn all_ok(mut answers: JoinSet<Result<(http::StatusCode, String), String>>) -> usize {
    let mut n = 0;
    while let Some(answer) = answers.join_next().await {
        let (status, body) = answer.unwrap().unwrap();
        assert_eq!((status.as_u16(), body.as_str()), (200, "old"));
        n += 1;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_core_accepts_connections_and_serves_them_to_the_end() {
    let (cores, old, proxy) = on_three_cores().await;
    let baseline = cores.tasks();
    let answers = until_every_core_serves(proxy.addr, &cores, &baseline).await;
    let served = all_ok(answers).await;
    assert_eq!(old.hits(), served);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_connections_wake_on_every_core() {
    let (cores, _old, proxy) = on_three_cores().await;
    let baseline = cores.tasks();
    let mut clients = Vec::new();
    for _ in 0..30 {
        let mut client = KeepAlive::connect(proxy.addr).await.unwrap();
        assert_eq!(client.get("/").await.unwrap().1, "old");
        clients.push(client);
    }
    // Quiet for longer than a connection waits before it parks: they all leave their
    // runtimes, whichever accepted them.
    let parked = eventually(Duration::from_secs(5), || cores.tasks() == baseline).await;
    assert!(
        parked,
        "idle connections still on the workers: {:?}",
        cores.tasks()
    );
    let mut answers = JoinSet::new();
    for mut client in clients {
        answers.spawn(async move { client.get("/slow").await });
    }
    // Woken, they are handed to the runtimes in turn: the workers serve some (for 300 ms,
    // the backend's wait).
    let spread = eventually(Duration::from_millis(250), || {
        let now = cores.tasks();
        now.iter().zip(&baseline).all(|(now, before)| now > before)
    })
    .await;
    assert!(
        spread,
        "woken connections did not reach every core: tasks {:?}, before {baseline:?}",
        cores.tasks()
    );
    assert_eq!(all_ok(answers).await, 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_drains_in_flight_requests_on_every_core() {
    let (cores, _old, proxy) = on_three_cores().await;
    let baseline = cores.tasks();
    let answers = until_every_core_serves(proxy.addr, &cores, &baseline).await;
    let open = proxy.app.shutdown().await;
    assert_eq!(open, 0, "connections left open after the drain");
    all_ok(answers).await;
    let closed = eventually_async(Duration::from_secs(2), || async {
        tokio::net::TcpStream::connect(proxy.addr).await.is_err()
    })
    .await;
    assert!(closed, "a core still accepts after the shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_a_reload_adds_accepts_on_every_core_and_stops_on_every_core_when_removed() {
    let (cores, _old, proxy) = on_three_cores().await;
    let one = std::fs::read_to_string(proxy.config_path()).unwrap();
    let port = free_port();
    save_by_rename(&proxy.config_path(), &two_listeners(&one, port));
    reload_ok(&proxy).await;
    // Each worker runs the added listener's accept loop beside the first one's.
    let both = eventually(Duration::from_secs(5), || cores.tasks() == [2, 2]).await;
    assert!(both, "tasks on the workers: {:?}", cores.tasks());
    let added: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    all_ok(until_every_core_serves(added, &cores, &[2, 2]).await).await;

    save_by_rename(&proxy.config_path(), &one);
    reload_ok(&proxy).await;
    let gone = eventually(Duration::from_secs(5), || cores.tasks() == [1, 1]).await;
    assert!(
        gone,
        "the removed listener still runs on a worker: {:?}",
        cores.tasks()
    );
    let closed = eventually_async(Duration::from_secs(2), || async {
        tokio::net::TcpStream::connect(added).await.is_err()
    })
    .await;
    assert!(closed, "a core still accepts on the removed listener");
    assert_eq!(served_by(proxy.addr).await, "old");
}

/// Each core's accept loops wait for a connection before they take a connection slot: with
/// `max_connections` no more than the cores, a quiet listener's loops holding every slot
/// once left a listener a reload adds accepting nothing, though no connection was open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_as_many_connection_slots_as_cores_every_listener_is_served() {
    let cores = Cores::start(2);
    let (old, new) = (spawn_backend("old").await, spawn_backend("new").await);
    let limits = "limits:\n  max_connections: 3\n";
    let one = simple_config(&[old.addr], &[new.addr], "0%", "").replacen("limits:\n", limits, 1);
    let proxy = spawn_proxy_on_cores(&one, &cores).await;
    let port = free_port();
    save_by_rename(&proxy.config_path(), &two_listeners(&one, port));
    reload_ok(&proxy).await;
    let added: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    for addr in [added, proxy.addr] {
        let answer = tokio::time::timeout(Duration::from_secs(3), async {
            let mut client = KeepAlive::connect(addr).await?;
            client.get("/").await
        })
        .await;
        assert!(
            matches!(answer, Ok(Ok(_))),
            "max_connections 3 on 3 cores, none open: {addr} did not answer: {answer:?}"
        );
    }
}
