//! Test support, one library for every integration test: scripted backends
//! (`backend`), a real proxy and what it reports (`proxy`), the runtimes of other cores
//! (`cores`), clients (`client`), traffic
//! under change (`traffic`), files as operators edit them (`files`), TLS (`tls`), hook
//! fixtures (`hooks`), the real binary (`binary`) and what Prometheus makes of `/metrics`
//! (`prometheus`).
//!
//! Everything binds loopback, uses port 0 and stops with the test's runtime. Each test
//! file uses a part of this, so unused items are expected.
#![allow(dead_code, unreachable_pub)]

mod backend;
mod binary;
mod browser;
mod client;
mod cores;
mod files;
mod hooks;
mod json_backend;
mod prometheus;
mod proxy;
mod tls;
mod tools;
mod traffic;

use std::time::Duration;

#[allow(unused_imports)]
pub use backend::*;
#[allow(unused_imports)]
pub use binary::*;
#[allow(unused_imports)]
pub use browser::*;
#[allow(unused_imports)]
pub use client::*;
#[allow(unused_imports)]
pub use cores::*;
#[allow(unused_imports)]
pub use files::*;
#[allow(unused_imports)]
pub use hooks::*;
#[allow(unused_imports)]
pub use json_backend::*;
#[allow(unused_imports)]
pub use prometheus::*;
#[allow(unused_imports)]
pub use proxy::*;
#[allow(unused_imports)]
pub use tls::*;
#[allow(unused_imports)]
pub use tools::*;
#[allow(unused_imports)]
pub use traffic::*;

/// Polls `condition` every 10 ms for up to `within`.
pub async fn eventually(within: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    condition()
}

/// Polls an async condition every 20 ms for up to `within`.
pub async fn eventually_async<F, Fut>(within: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if condition().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

mod counting;
#[allow(unused_imports)]
pub use counting::*;
mod etcd;
mod fleet;
#[allow(unused_imports)]
pub use etcd::*;
#[allow(unused_imports)]
pub use fleet::*;
mod restart;
#[allow(unused_imports)]
pub use restart::*;
mod history;
#[allow(unused_imports)]
pub use history::*;
