//! Starting and stopping the proxy process: the admin token, binding every
//! listener before serving (so a taken port fails fast), signals (SIGHUP
//! reloads, SIGTERM drains and exits), and the runtime file other flowgate
//! commands and tests read to find the proxy.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::server::graceful::GracefulShutdown;
use serde::Serialize;
use tokio::signal::unix::{SignalKind, signal};

use super::Proxy;
use super::events::ProxyEvent;
use crate::config::proxy::{ProxyConfig, TlsMode};
use crate::fsutil::write_atomic;
use crate::tls::CertEvent;
use crate::tls::acme::AcmeIssuer;
use crate::tls::files::{self, CertFiles};
use crate::tls::local_ca::{self, LocalCa};
use tokio_rustls::TlsAcceptor;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot read the admin token file {}: {source}", path.display())]
    TokenFile { path: PathBuf, source: std::io::Error },
    #[error("the admin token file {} is empty; put a token in it", .0.display())]
    EmptyToken(PathBuf),
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot create the state directory {}: {source}; choose another with --state-dir", path.display())]
    StateDir { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Listen(#[from] crate::serve::ServeError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("cannot watch the signal {name}: {source}")]
    Signal { name: &'static str, source: std::io::Error },
}

/// What a running proxy writes to `<state-dir>/proxy.json`.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct RuntimeInfo {
    pub pid: u32,
    pub listen: Vec<SocketAddr>,
    pub tls_listen: Vec<SocketAddr>,
    pub admin: Option<SocketAddr>,
    pub admin_token_file: PathBuf,
}

/// Reads the token from the configured file, or from `<state-dir>/admin-token`,
/// creating that one (mode 0600) with a fresh random token when absent.
pub fn admin_token(config: &ProxyConfig) -> Result<(String, PathBuf), StartError> {
    if let Some(path) = &config.admin_token_file {
        let token = crate::fsutil::read_secret(path).map_err(|source| StartError::TokenFile {
            path: path.clone(),
            source,
        })?;
        if token.is_empty() {
            return Err(StartError::EmptyToken(path.clone()));
        }
        return Ok((token, path.clone()));
    }
    let path = config.state_dir.join("admin-token");
    let token = crate::fsutil::secret(&path).map_err(|source| StartError::Write {
        path: path.clone(),
        source,
    })?;
    Ok((token, path))
}

fn prepare_state_dir(dir: &Path) -> Result<(), StartError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| StartError::StateDir {
            path: dir.to_path_buf(),
            source,
        })
}

/// Runs the proxy until SIGTERM or SIGINT.
pub async fn run(config: ProxyConfig) -> Result<(), StartError> {
    prepare_state_dir(&config.state_dir)?;
    let mut config = config;
    let fd_limit = crate::fsutil::raise_fd_limit();
    // Each proxied connection may hold two descriptors (client and backend);
    // keep some for listeners, idle pooled connections and health checks.
    let affordable = (fd_limit.saturating_sub(1024) / 2).max(64) as usize;
    // Logged once the start has succeeded, so a failed start says one thing.
    let mut capacity_note = None;
    if config.limits.max_connections > affordable {
        let message = format!(
            "serving at most {affordable} connections (not {}): the open-file limit is {fd_limit}; raise it with ulimit -n",
            config.limits.max_connections
        );
        // Only a limit the operator chose deserves a warning.
        let chosen = config.limits.max_connections != crate::config::proxy::Limits::default().max_connections;
        capacity_note = Some((chosen, message));
        config.limits.max_connections = affordable;
    }
    if config.limits.exempt_gateway {
        match config.limits.resolve_gateway() {
            Some(gateway) => tracing::info!(
                "connections from {gateway} (this machine's gateway) are not limited per address: \
                 in a container, every client on the host arrives from it"
            ),
            None => tracing::warn!("per_ip_exempt names the gateway, but this machine has no default IPv4 route"),
        }
    }
    let (token, token_file) = admin_token(&config)?;

    let mut listeners = Vec::new();
    for addr in &config.listen {
        listeners.push(crate::serve::bind(*addr).await?);
    }
    let mut tls_listeners = Vec::new();
    for addr in config.tls.iter().flat_map(|t| t.listen.iter()) {
        tls_listeners.push(crate::serve::bind(*addr).await?);
    }
    let admin = match config.admin {
        Some(addr) => Some(crate::serve::bind(addr).await?),
        None => None,
    };
    let listen: Vec<SocketAddr> = listeners.iter().filter_map(|l| l.local_addr().ok()).collect();
    let tls_listen: Vec<SocketAddr> = tls_listeners.iter().filter_map(|l| l.local_addr().ok()).collect();
    let admin_addr = admin.as_ref().and_then(|l| l.local_addr().ok());
    let state_dir = config.state_dir.clone();
    let grace = config.limits.shutdown_grace;

    // Record what was bound (a port 0 became a real one): redirects and
    // reloads need the real addresses.
    config.listen = listen.clone();
    if let Some(t) = config.tls.as_mut() {
        t.listen = tls_listen.clone();
    }
    let tls = config.tls.clone();
    let domains = match &tls {
        Some(t) if !t.domains.is_empty() => t.domains.clone(),
        _ => config.route_hosts(),
    };
    let proxy = Proxy::new(config, token);
    let acceptor = match &tls {
        Some(settings) => Some(start_tls(&proxy, &settings.mode, &domains, &state_dir)?),
        None => None,
    };
    proxy.restore_dynamic();
    super::discover::spawn(proxy.clone());

    // Listeners ask for a watcher per connection; shutdown takes the
    // tracker out and waits on it.
    let graceful = Arc::new(Mutex::new(Some(GracefulShutdown::new())));
    let plain = listeners.into_iter().map(|l| (l, None));
    let secure = tls_listeners.into_iter().map(|l| (l, acceptor.clone()));
    for (listener, tls) in plain.chain(secure) {
        let graceful = graceful.clone();
        let watcher = move || {
            graceful
                .lock()
                .ok()
                .and_then(|g| g.as_ref().map(GracefulShutdown::watcher))
        };
        tokio::spawn(super::listener::run(proxy.clone(), listener, tls, watcher));
    }
    if let Some(listener) = admin {
        let proxy = proxy.clone();
        tokio::spawn(crate::serve::run(
            listener,
            super::admin::SERVER_LIMITS,
            move |req, _peer| super::admin::handle(proxy.clone(), req),
        ));
    }

    let info = RuntimeInfo {
        pid: std::process::id(),
        listen: listen.clone(),
        tls_listen: tls_listen.clone(),
        admin: admin_addr,
        admin_token_file: token_file.clone(),
    };
    let info_path = state_dir.join("proxy.json");
    let json = serde_json::to_vec_pretty(&info).unwrap_or_default();
    write_atomic(&info_path, &json, 0o600).map_err(|source| StartError::Write {
        path: info_path.clone(),
        source,
    })?;
    for addr in &listen {
        println!("flowgate proxy listening on http://{addr}");
    }
    for addr in &tls_listen {
        println!("flowgate proxy listening on https://{addr}");
    }
    if matches!(tls.as_ref().map(|t| &t.mode), Some(TlsMode::SelfSigned)) {
        println!(
            "clients trust the local CA at {}",
            LocalCa::ca_path(&state_dir).display()
        );
    }
    if let Some(addr) = admin_addr {
        println!("admin API on http://{addr} (token in {})", token_file.display());
    }

    match capacity_note {
        Some((true, message)) => tracing::warn!("{message}"),
        Some((false, message)) => tracing::info!("{message}"),
        None => {}
    }

    let watch =
        |kind: SignalKind, name: &'static str| signal(kind).map_err(|source| StartError::Signal { name, source });
    let mut hangup = watch(SignalKind::hangup(), "SIGHUP")?;
    let mut terminate = watch(SignalKind::terminate(), "SIGTERM")?;
    let mut interrupt = watch(SignalKind::interrupt(), "SIGINT")?;
    loop {
        tokio::select! {
            _ = hangup.recv() => match proxy.reload() {
                Ok(s) => tracing::info!("configuration reloaded: {} services, {} routes", s.services, s.routes),
                Err(e) => tracing::error!("configuration not reloaded, the running one stays: {e}"),
            },
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    tracing::info!("shutting down: no new connections; waiting up to {grace:?} for requests and sessions");
    proxy.shutting_down.send_replace(true);
    let tracker = graceful.lock().ok().and_then(|mut g| g.take());
    if let Some(tracker) = tracker {
        if tokio::time::timeout(grace, tracker.shutdown()).await.is_err() {
            tracing::warn!("some connections were still open after {grace:?}");
        }
    }
    // Sessions got their 1001 close; give the close handshakes a moment.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3).min(grace);
    while proxy.all_backends().iter().any(|b| b.load() > 0) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = std::fs::remove_file(&info_path);
    Ok(())
}

/// Loads the first certificates (a failure here stops the start: nothing
/// would be served) and starts keeping them fresh.
fn start_tls(
    proxy: &Arc<Proxy>,
    mode: &TlsMode,
    domains: &[String],
    state_dir: &Path,
) -> Result<TlsAcceptor, StartError> {
    let store = proxy.certs.clone();
    let mut events = store.subscribe();
    let bus = proxy.events.clone();
    tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            bus.send(ProxyEvent::Certificate(event));
        }
    });
    match mode {
        TlsMode::SelfSigned => {
            let ca = Arc::new(LocalCa::load_or_create(state_dir, domains)?);
            let info = ca.ensure_leaf(domains, &store)?;
            store.notify(CertEvent::installed(&info, "local CA"));
            local_ca::spawn_renewal(ca, domains.to_vec(), store.clone());
        }
        TlsMode::Files { cert, key } => {
            let pair = CertFiles {
                cert: cert.clone(),
                key: key.clone(),
            };
            let info = files::load(&pair, domains, &store)?;
            store.notify(CertEvent::installed(&info, "loaded from files"));
            files::spawn_watch(pair, domains.to_vec(), store.clone());
        }
        TlsMode::Acme(settings) => {
            let issuer = AcmeIssuer::new(settings.clone(), domains.to_vec(), state_dir, store.clone());
            // Serve what is on disk at once; issuance needs the listeners up
            // (they answer the challenges), so it runs in the background.
            if !issuer.install_from_disk() {
                tracing::info!(
                    "no certificate yet for {}: ordering one from {}",
                    domains.join(", "),
                    settings.directory_url()
                );
            }
            let _ = proxy.acme.set(issuer.clone());
            issuer.spawn();
        }
    }
    Ok(TlsAcceptor::from(crate::tls::server_config(store)?))
}
