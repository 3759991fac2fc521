//! The leadership guard against a real etcd: a deposed leader's write is refused by etcd
//! itself, not by anything this process believes.

use std::time::Duration;

use etcdv3client::grpc::TonicClient;
use etcdv3client::{pb, Client};

use super::agent::guarded_put;
use super::keys::Keys;

/// A throwaway etcd on free ports, killed on drop; `None` (loudly) when not installed.
struct Etcd {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn etcd() -> Option<Etcd> {
    let binary = std::path::Path::new("/usr/bin/etcd");
    if !binary.exists() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "/usr/bin/etcd is missing"
        );
        eprintln!("\n*** SKIP: /usr/bin/etcd is missing; the etcd guard test did not run ***\n");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let (client, peer) = (free_port(), free_port());
    let url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let child = std::process::Command::new(binary)
        .arg("--name=guard")
        .arg(format!("--data-dir={}", dir.path().display()))
        .arg(format!("--listen-client-urls={url}"))
        .arg(format!("--advertise-client-urls={url}"))
        .arg(format!("--listen-peer-urls={peer_url}"))
        .arg(format!("--initial-advertise-peer-urls={peer_url}"))
        .arg(format!("--initial-cluster=guard={peer_url}"))
        .args(["--heartbeat-interval=10", "--election-timeout=50"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    Some(Etcd {
        child,
        url,
        _dir: dir,
    })
}

async fn connect(url: &str) -> Client<TonicClient> {
    for _ in 0..500 {
        if let Ok(channel) = tonic::transport::Endpoint::from_shared(url.to_string())
            .unwrap()
            .connect()
            .await
        {
            let mut client = Client::with_service(TonicClient::new(channel));
            let probe = pb::RangeRequest {
                key: b"/".to_vec(),
                ..Default::default()
            };
            if client.kv.range(probe).await.is_ok() {
                return client;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("etcd did not start");
}

/// Takes the leader key under `lease`; its create revision.
async fn lead(client: &mut Client<TonicClient>, keys: &Keys, lease: i64) -> i64 {
    let put = pb::PutRequest {
        key: keys.leader().into_bytes(),
        value: b"someone".to_vec(),
        lease,
        ..Default::default()
    };
    client.kv.put(put).await.unwrap().header.unwrap().revision
}

#[tokio::test]
async fn a_deposed_leader_cannot_write_the_state() {
    let Some(etcd) = etcd() else {
        return;
    };
    let mut client = connect(&etcd.url).await;
    let keys = Keys::new("/guard");
    let grant = |ttl| pb::LeaseGrantRequest { ttl, id: 0 };
    let old_lease = client.lease.lease_grant(grant(60)).await.unwrap().id;
    let old = lead(&mut client, &keys, old_lease).await;

    let first = client
        .kv
        .txn(guarded_put(&keys, old, "api", 0, b"one".to_vec()))
        .await
        .unwrap();
    assert!(first.succeeded, "the leader writes");
    let written = first.header.unwrap().revision;

    // The old leader's lease goes (a partition, a crash); another instance takes the key.
    client
        .lease
        .lease_revoke(pb::LeaseRevokeRequest { id: old_lease })
        .await
        .unwrap();
    let new_lease = client.lease.lease_grant(grant(60)).await.unwrap().id;
    let new = lead(&mut client, &keys, new_lease).await;
    assert_ne!(new, old);

    let deposed = client
        .kv
        .txn(guarded_put(&keys, old, "api", written, b"stale".to_vec()))
        .await
        .unwrap();
    assert!(!deposed.succeeded, "the deposed leader's write is refused");
    let stale_state = client
        .kv
        .txn(guarded_put(&keys, new, "api", 0, b"blind".to_vec()))
        .await
        .unwrap();
    assert!(
        !stale_state.succeeded,
        "a write on a state it has not seen is refused"
    );
    let fresh = client
        .kv
        .txn(guarded_put(&keys, new, "api", written, b"two".to_vec()))
        .await
        .unwrap();
    assert!(fresh.succeeded, "the new leader writes on what it read");
    let got = client.kv.get(keys.state("api")).await.unwrap();
    assert_eq!(got, b"two");
}
