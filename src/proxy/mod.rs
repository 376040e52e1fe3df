//! The proxy core: a WebSocket-aware reverse proxy for Flow.
//!
//! The request path runs one way, outermost first: `listener` (accept,
//! connection limits, first-request deadline, idle connections; `io` and
//! `conn` hold what it keeps per connection; `plain` serves bodiless
//! HTTP/1.1 requests, hyper the rest of HTTP/1.1, `h2` HTTP/2 on
//! `http2::server`) -> `handler` (refuse, route by
//! host and path) -> `forward` (plain requests, retries) | `tunnel`
//! (WebSocket copy loop with the frame tap) -> `upstream` (exchanges with a
//! backend, over the connections `backend` owns). `headers` is the one
//! place request headers are checked and rewritten, for both branches.
//! `Proxy` holds the shared state they read: config, pools of backends,
//! events. `admin` and `metrics` expose that state; `health` keeps it
//! current; `run` starts and stops the process.

pub mod admin;
pub mod backend;
pub mod balance;
pub mod client;
pub mod conn;
pub mod discover;
pub mod events;
pub mod forward;
pub mod h1;
pub mod h2;
pub mod handler;
pub mod headers;
pub mod health;
pub mod io;
pub mod listener;
pub mod metrics;
pub mod plain;
pub mod rebalance;
pub mod run;
pub mod tunnel;
pub mod upstream;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, watch};

use crate::config::proxy::{ProxyConfig, check_backend_address};
use backend::{Backend, BackendState, Clock};
use balance::Pool;
use events::{EventBus, ProxyEvent};

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("{0}")]
    InvalidBackend(String),
    #[error("backend '{0}' already exists")]
    DuplicateBackend(String),
    #[error("no backend with id '{0}'")]
    UnknownBackend(String),
    #[error("no service named '{0}'")]
    UnknownService(String),
    #[error("no service is configured to add backends to")]
    NoService,
}

/// How long a drained discovered backend whose address still resolves is
/// kept out of service before discovery may add it again.
const WITHDRAWN_AT_MOST: Duration = Duration::from_secs(30);

pub struct Proxy {
    config: RwLock<Arc<ProxyConfig>>,
    /// Certificates the TLS listeners serve (empty without TLS).
    pub certs: Arc<crate::tls::CertStore>,
    /// The ACME issuer, in `acme` mode (for `cert renew`).
    pub acme: std::sync::OnceLock<Arc<crate::tls::acme::AcmeIssuer>>,
    pools: RwLock<BTreeMap<String, Arc<Pool>>>,
    pub events: EventBus,
    pub clock: Clock,
    pub token: String,
    next_session: AtomicU64,
    /// Flips to true on SIGTERM: listeners stop, sessions close with 1001.
    pub shutting_down: watch::Sender<bool>,
    pub connections_active: AtomicU64,
    pub connections_total: AtomicU64,
    /// One permit per client connection or WebSocket session (`max_connections`).
    pub slots: Arc<Semaphore>,
    /// Open connections per client address (`max_connections_per_ip`).
    pub clients: Arc<conn::ClientCounts>,
    /// Serializes writes of `backends.json`, so the last change is the one kept.
    persisting: Mutex<()>,
    /// The last or running rebalance of each service.
    rebalancing: Mutex<BTreeMap<String, rebalance::RebalanceReport>>,
}

/// Where a backend came from: it decides what a reload and a restart do with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Listed in the configuration: a reload that drops it drains it.
    Config,
    /// Added through the admin API: kept across reloads and restarts.
    Api,
    /// Found by resolving a service's `discover` name: it goes when the
    /// name stops resolving to it.
    Discovered,
}

/// A backend added through the admin API, as kept in the state dir.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DynamicBackend {
    pub id: String,
    pub address: String,
    pub service: String,
}

impl Proxy {
    pub fn new(config: ProxyConfig, token: String) -> Arc<Self> {
        let proxy = Arc::new(Proxy {
            config: RwLock::new(Arc::new(config.clone())),
            certs: crate::tls::CertStore::new(),
            acme: std::sync::OnceLock::new(),
            pools: RwLock::new(BTreeMap::new()),
            events: EventBus::default(),
            clock: Clock::new(),
            token,
            next_session: AtomicU64::new(1),
            shutting_down: watch::channel(false).0,
            connections_active: AtomicU64::new(0),
            connections_total: AtomicU64::new(0),
            slots: Arc::new(Semaphore::new(config.limits.max_connections)),
            clients: Default::default(),
            persisting: Mutex::new(()),
            rebalancing: Mutex::new(BTreeMap::new()),
        });
        proxy.apply_config(config);
        proxy
    }

    pub fn config(&self) -> Arc<ProxyConfig> {
        self.config.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn pool(&self, service: &str) -> Option<Arc<Pool>> {
        self.pools
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(service)
            .cloned()
    }

    pub fn pools(&self) -> Vec<Arc<Pool>> {
        self.pools
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub fn all_backends(&self) -> Vec<Arc<Backend>> {
        self.pools().iter().flat_map(|p| p.backends()).collect()
    }

    pub fn find_backend(&self, id: &str) -> Option<Arc<Backend>> {
        self.all_backends().into_iter().find(|b| b.id == id)
    }

    pub fn next_session_id(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    pub fn state_dir(&self) -> PathBuf {
        self.config().state_dir.clone()
    }

    /// Adds a backend to a service (the default one when `service` is None)
    /// and starts its health checks.
    pub fn add_backend(
        self: &Arc<Self>,
        service: Option<&str>,
        id: Option<&str>,
        address: &str,
        origin: Origin,
    ) -> Result<Arc<Backend>, ProxyError> {
        let dynamic = origin == Origin::Api;
        check_backend_address(address).map_err(ProxyError::InvalidBackend)?;
        let config = self.config();
        let service = match service {
            Some(name) => name.to_string(),
            None => config.default_service().ok_or(ProxyError::NoService)?.to_string(),
        };
        let pool = self
            .pool(&service)
            .ok_or_else(|| ProxyError::UnknownService(service.clone()))?;
        let id = id.unwrap_or(address).to_string();
        let settings = pool.settings();
        let initial = if settings.health.is_some() {
            BackendState::Unhealthy
        } else {
            BackendState::Healthy
        };
        let mut backend = Backend::new(&id, address, &service, dynamic, initial)
            .with_connection_limit(config.limits.max_upstream_connections);
        if origin == Origin::Discovered {
            backend = backend.discovered();
        }
        let backend = Arc::new(backend);
        {
            // Check and insert under one lock so two concurrent adds of the
            // same id cannot both succeed.
            let all_ids: Vec<String> = self.all_backends().iter().map(|b| b.id.clone()).collect();
            let mut backends = pool.backends.write().unwrap_or_else(|e| e.into_inner());
            if all_ids.contains(&id) || backends.iter().any(|b| b.id == id || b.address == address) {
                return Err(ProxyError::DuplicateBackend(id));
            }
            backends.push(backend.clone());
        }
        self.events.send(ProxyEvent::BackendAdded {
            backend: id.clone(),
            address: address.into(),
            service: service.clone(),
        });
        tracing::info!(backend = %id, %address, %service, "backend added");
        health::spawn(self.clone(), backend.clone());
        if dynamic {
            self.persist_dynamic();
        }
        Ok(backend)
    }

    /// Drains a backend: no new work at once; in-flight requests may finish
    /// and WebSocket sessions may end by themselves within `window`; then the
    /// remaining sessions get close code 1001 and the backend is removed.
    pub fn remove_backend(self: &Arc<Self>, id: &str, window: Duration) -> Result<Arc<Backend>, ProxyError> {
        let backend = self
            .find_backend(id)
            .ok_or_else(|| ProxyError::UnknownBackend(id.into()))?;
        if backend.state() == BackendState::Draining {
            return Ok(backend);
        }
        backend.start_draining();
        self.events.send(ProxyEvent::BackendState {
            backend: id.into(),
            state: BackendState::Draining,
            reason: format!("drain window {}", crate::config::duration::format(window)),
        });
        tracing::info!(backend = %id, ?window, "draining backend");
        let proxy = self.clone();
        let draining = backend.clone();
        tokio::spawn(async move {
            proxy.finish_drain(draining, window).await;
        });
        Ok(backend)
    }

    async fn finish_drain(self: Arc<Self>, backend: Arc<Backend>, window: Duration) {
        let deadline = tokio::time::Instant::now() + window;
        let tick = Duration::from_millis(25);
        let counters = &backend.counters;
        // In-flight requests first, then sessions that end by themselves.
        while counters.active_requests.load(Ordering::Relaxed) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(tick).await;
        }
        // Requests still unanswered after the window are waiting on an
        // instance that is going away: those that may be sent again move.
        if counters.active_requests.load(Ordering::Relaxed) > 0 {
            backend.release_waiting();
        }
        while counters.ws_active.load(Ordering::Relaxed) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(tick).await;
        }
        backend.close_all_sessions();
        let grace = tokio::time::Instant::now() + Duration::from_secs(5);
        while counters.ws_active.load(Ordering::Relaxed) > 0 && tokio::time::Instant::now() < grace {
            tokio::time::sleep(tick).await;
        }
        // A discovered backend drained before its task stopped (flowgate
        // drains what Swarm is about to stop) stays, serving nothing, so the
        // name still giving its address does not add it again; it goes once
        // the address vanishes, or is given back if it still resolves long
        // after (the task was not the one that stopped).
        if backend.discovered {
            let given_back = tokio::time::Instant::now() + WITHDRAWN_AT_MOST;
            while !backend.vanished.load(Ordering::Acquire) && tokio::time::Instant::now() < given_back {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if !backend.vanished.load(Ordering::Acquire) {
                tracing::info!(
                    backend = %backend.id,
                    "still found {}s after its drain: given back to discovery",
                    WITHDRAWN_AT_MOST.as_secs()
                );
            }
        }
        if let Some(pool) = self.pool(&backend.service) {
            pool.backends
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|b| !Arc::ptr_eq(b, &backend));
        }
        backend.removed.store(true, Ordering::Release);
        backend.idle.clear();
        self.events.send(ProxyEvent::BackendRemoved {
            backend: backend.id.clone(),
        });
        tracing::info!(backend = %backend.id, "backend removed");
        if backend.dynamic {
            self.persist_dynamic();
        }
    }

    /// Applies a (re)loaded configuration without touching open connections:
    /// service settings are swapped, new static backends added, and static
    /// backends no longer listed are drained. Backends added through the
    /// admin API stay.
    pub fn apply_config(self: &Arc<Self>, config: ProxyConfig) {
        let drain = config.limits.shutdown_grace;
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config.clone());
        for (name, service) in &config.services {
            let pool = {
                let mut pools = self.pools.write().unwrap_or_else(|e| e.into_inner());
                pools
                    .entry(name.clone())
                    .or_insert_with(|| Arc::new(Pool::new(service.clone())))
                    .clone()
            };
            *pool.settings.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(service.clone());
            for stale in pool.backends() {
                let listed = service.backends.iter().any(|s| s.id == stale.id);
                if !stale.dynamic && !stale.discovered && !listed {
                    let _ = self.remove_backend(&stale.id, drain);
                }
            }
            for spec in &service.backends {
                if pool.find(&spec.id).is_none() {
                    if let Err(e) = self.add_backend(Some(name), Some(&spec.id), &spec.address, Origin::Config) {
                        tracing::warn!("backend {} not added: {e}", spec.address);
                    }
                }
            }
        }
        // Services removed from the file: drain their static backends.
        for pool in self.pools() {
            let name = pool.settings().name.clone();
            if !config.services.contains_key(&name) {
                for backend in pool.backends().iter().filter(|b| !b.dynamic) {
                    let _ = self.remove_backend(&backend.id, drain);
                }
            }
        }
    }

    fn dynamic_file(&self) -> PathBuf {
        self.state_dir().join("backends.json")
    }

    /// Writes the admin-added backends to the state dir (atomically), so a
    /// restarted proxy serves the same instances without the deployer.
    fn persist_dynamic(&self) {
        let _one_writer = self.persisting.lock().unwrap_or_else(|e| e.into_inner());
        let list: Vec<DynamicBackend> = self
            .all_backends()
            .iter()
            .filter(|b| b.dynamic && b.state() != BackendState::Draining)
            .map(|b| DynamicBackend {
                id: b.id.clone(),
                address: b.address.clone(),
                service: b.service.clone(),
            })
            .collect();
        let path = self.dynamic_file();
        let result = serde_json::to_vec_pretty(&list)
            .map_err(std::io::Error::other)
            .and_then(|bytes| crate::fsutil::write_atomic(&path, &bytes, 0o600));
        if let Err(e) = result {
            tracing::warn!("cannot save the backend list to {}: {e}", path.display());
        }
    }

    /// Re-adds the backends a previous run added through the admin API.
    pub fn restore_dynamic(self: &Arc<Self>) {
        let path = self.dynamic_file();
        let Ok(bytes) = std::fs::read(&path) else {
            return;
        };
        match serde_json::from_slice::<Vec<DynamicBackend>>(&bytes) {
            Ok(list) => {
                for b in list {
                    if let Err(e) = self.add_backend(Some(&b.service), Some(&b.id), &b.address, Origin::Api) {
                        tracing::warn!("saved backend {} not restored: {e}", b.address);
                    }
                }
            }
            Err(e) => tracing::warn!("ignoring {}: {e}", path.display()),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ReloadSummary {
    pub services: usize,
    pub routes: usize,
    pub backends: usize,
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("the proxy was started from flags, so there is no file to reload; start it with --config FILE")]
    NoFile,
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

impl Proxy {
    /// Reads the configuration file again and applies it; open connections
    /// and sessions are untouched. Listener, admin and TLS settings and the
    /// connection limits need a restart.
    pub fn reload(self: &Arc<Self>) -> Result<ReloadSummary, ReloadError> {
        let current = self.config();
        let Some(path) = current.source.clone() else {
            return Err(ReloadError::NoFile);
        };
        let mut next = match crate::config::proxy::load(&path) {
            Ok(config) => config,
            Err(e) => {
                self.events.send(ProxyEvent::ConfigRejected { error: e.to_string() });
                return Err(e.into());
            }
        };
        // Listeners, the admin API and TLS are set up at start; a reload keeps
        // them (port 0 in the file matches whatever port was bound).
        let same = |file: &[SocketAddr], bound: &[SocketAddr]| {
            file.len() == bound.len()
                && file
                    .iter()
                    .zip(bound)
                    .all(|(f, b)| f.ip() == b.ip() && (f.port() == 0 || f.port() == b.port()))
        };
        let file_tls_listen = next.tls.as_ref().map(|t| t.listen.clone()).unwrap_or_default();
        let bound_tls_listen = current.tls.as_ref().map(|t| t.listen.clone()).unwrap_or_default();
        let tls_mode_changed = next.tls.as_ref().map(|t| &t.mode) != current.tls.as_ref().map(|t| &t.mode);
        if !same(&next.listen, &current.listen) || !same(&file_tls_listen, &bound_tls_listen) || tls_mode_changed {
            tracing::warn!("listeners and TLS settings change only on restart; keeping the current ones");
        }
        if next.limits != current.limits {
            tracing::warn!("[limits] change only on restart; keeping the current ones");
        }
        next.listen = current.listen.clone();
        next.admin = current.admin;
        next.tls = current.tls.clone();
        next.state_dir = current.state_dir.clone();
        next.limits = current.limits.clone();
        let summary = ReloadSummary {
            services: next.services.len(),
            routes: next.routes.len(),
            backends: next.services.values().map(|s| s.backends.len()).sum(),
        };
        self.apply_config(next);
        self.events.send(ProxyEvent::ConfigReloaded {
            services: summary.services,
            routes: summary.routes,
        });
        Ok(summary)
    }
}
