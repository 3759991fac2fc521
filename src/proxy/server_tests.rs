use super::*;

/// A listener on a fresh port. Binding registers the socket with a reactor, which is why
/// these tests run on `tokio::test` though their bodies never await.
fn held_port() -> (std::net::TcpListener, SocketAddr) {
    let first = bind_listener("127.0.0.1:0".parse().unwrap(), PortSharing::Exclusive).unwrap();
    let addr = first.local_addr().unwrap();
    (first, addr)
}

#[tokio::test]
async fn a_second_process_by_mistake_cannot_share_a_port() {
    let (_first, addr) = held_port();
    let err = bind_listener(addr, PortSharing::Exclusive).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    assert!(err.to_string().contains("CUTOVER_TAKEOVER=1"), "{err}");
}

#[tokio::test]
async fn a_takeover_binds_beside_the_running_listener() {
    let (_first, addr) = held_port();
    let second = bind_listener(addr, PortSharing::Shared).unwrap();
    assert_eq!(second.local_addr().unwrap(), addr);
}

#[tokio::test]
async fn a_free_port_binds_exclusively_and_stays_shareable() {
    let (first, addr) = held_port();
    drop(first);
    let again = bind_listener(addr, PortSharing::Exclusive).unwrap();
    // Still SO_REUSEPORT: a later takeover can bind beside it.
    let beside = bind_listener(addr, PortSharing::Shared).unwrap();
    assert_eq!(again.local_addr().unwrap(), beside.local_addr().unwrap());
}
