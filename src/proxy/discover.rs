//! Backends found by name: a service's `discover` name (`tasks.flow:9021`
//! on Docker Swarm, a network alias on one engine) is resolved every
//! second. A new address becomes a backend, which serves once its health
//! check passes; an address the name no longer gives is drained. A backend
//! drained through the admin API while its address still resolves (a task
//! about to be stopped) stays out of service until the address goes. The proxy
//! needs no Docker socket for this: the engine's DNS is the source.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::backend::BackendState;
use super::{Origin, Proxy};

/// How often the names are resolved.
const INTERVAL: Duration = Duration::from_secs(1);
/// A name that fails to resolve this many times in a row counts as having
/// no addresses (an engine's DNS answers "no such name" for zero tasks);
/// one failure alone could be the resolver, so it changes nothing.
const FAILURES_MEAN_EMPTY: u32 = 3;
/// How long a vanished address drains: requests in flight finish, sessions
/// still open (a task stopping slowly) get their close frame.
const DRAIN: Duration = Duration::from_secs(5);

/// The addresses `name` (`host:port`) resolves to now.
async fn resolve(name: &str) -> std::io::Result<BTreeSet<String>> {
    Ok(tokio::net::lookup_host(name).await?.map(|a| a.to_string()).collect())
}

/// Resolves every service's name each second and adds or drains backends.
pub fn spawn(proxy: Arc<Proxy>) {
    tokio::spawn(async move {
        let mut failures: std::collections::HashMap<String, u32> = Default::default();
        let mut tick = tokio::time::interval(INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if *proxy.shutting_down.borrow() {
                return;
            }
            for pool in proxy.pools() {
                let settings = pool.settings();
                let Some(name) = settings.discover.clone() else {
                    continue;
                };
                let found = match resolve(&name).await {
                    Ok(found) => {
                        failures.remove(&settings.name);
                        found
                    }
                    Err(e) => {
                        let count = failures.entry(settings.name.clone()).or_default();
                        *count += 1;
                        if *count < FAILURES_MEAN_EMPTY {
                            continue;
                        }
                        if *count == FAILURES_MEAN_EMPTY {
                            tracing::warn!("{name} does not resolve ({e}): counting it as no instances");
                        }
                        BTreeSet::new()
                    }
                };
                let (current, draining): (Vec<_>, Vec<_>) = pool
                    .backends()
                    .into_iter()
                    .filter(|b| b.discovered)
                    .partition(|b| b.state() != BackendState::Draining);
                for backend in draining.iter().filter(|b| !found.contains(&b.address)) {
                    backend.vanished.store(true, Ordering::Release);
                }
                for address in &found {
                    if !current.iter().any(|b| &b.address == address) {
                        // A drained one of the same address may still be leaving: next time.
                        match proxy.add_backend(Some(&settings.name), None, address, Origin::Discovered) {
                            Ok(_) => tracing::info!("{name} gives {address}: added; it serves once healthy"),
                            Err(e) => tracing::debug!("{address} not added yet: {e}"),
                        }
                    }
                }
                for backend in current.iter().filter(|b| !found.contains(&b.address)) {
                    tracing::info!("{name} no longer gives {}: draining it", backend.address);
                    backend.vanished.store(true, Ordering::Release);
                    let _ = proxy.remove_backend(&backend.id, DRAIN);
                }
            }
        }
    });
}
