#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;

use arc_swap::ArcSwap;
use cutover::routing::{build_service, Route, Snapshot};
use cutover::upstream::UpstreamRegistry;

fn main() {
    let path = std::env::args().nth(3).expect("cutover run -c FILE");
    let config =
        cutover::config::load(std::path::Path::new(&path)).unwrap_or_else(|e| panic!("{e}"));
    let runtime = if std::env::var("CT").is_ok() {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    runtime.block_on(async {
        let handle = tokio::runtime::Handle::current();
        let mut registry = UpstreamRegistry::default();
        let routes = config
            .services
            .iter()
            .map(|s| Route {
                service: build_service(s, &mut registry, &handle),
                new_weight: s.weight,
            })
            .collect();
        let snapshot = Arc::new(ArcSwap::from_pointee(Snapshot {
            routes,
            generation: 1,
        }));
        let mut listeners = cutover::proxy::Listeners::new(handle, snapshot, &config.limits);
        let bound = listeners.prepare(&config.listeners).unwrap();
        listeners.apply(&config.listeners, bound, &config.limits);
        tokio::signal::ctrl_c().await.unwrap();
    });
}
