use super::*;

/// Binding registers the socket with a reactor: these tests need a runtime entered.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A listener on a fresh port (call inside a runtime).
fn held_port() -> (std::net::TcpListener, SocketAddr) {
    let first = bind_listener("127.0.0.1:0".parse().unwrap(), PortSharing::Exclusive).unwrap();
    let addr = first.local_addr().unwrap();
    (first, addr)
}

#[test]
fn a_second_process_by_mistake_cannot_share_a_port() {
    let runtime = runtime();
    let _guard = runtime.enter();
    let (_first, addr) = held_port();
    let err = bind_listener(addr, PortSharing::Exclusive).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    assert!(err.to_string().contains("CUTOVER_TAKEOVER=1"), "{err}");
}

#[test]
fn a_takeover_binds_beside_the_running_listener() {
    let runtime = runtime();
    let _guard = runtime.enter();
    let (_first, addr) = held_port();
    let second = bind_listener(addr, PortSharing::Shared).unwrap();
    assert_eq!(second.local_addr().unwrap(), addr);
}

#[test]
fn a_free_port_binds_exclusively_and_stays_shareable() {
    let runtime = runtime();
    let _guard = runtime.enter();
    let (first, addr) = held_port();
    drop(first);
    let again = bind_listener(addr, PortSharing::Exclusive).unwrap();
    // Still SO_REUSEPORT: a later takeover can bind beside it.
    let beside = bind_listener(addr, PortSharing::Shared).unwrap();
    assert_eq!(again.local_addr().unwrap(), beside.local_addr().unwrap());
}
