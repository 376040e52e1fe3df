//! The proxy core's configuration: the TOML file, the quick flags, and the
//! validated form the proxy runs from.
//!
//! ```toml
//! listen = ["0.0.0.0:80"]
//! admin = "127.0.0.1:9901"
//!
//! [[route]]
//! host = "flow.example.com"     # exact, "*.example.com", or absent for any host
//! path_prefix = "/"
//! service = "flow"
//!
//! [service.flow]
//! backends = ["flow-1:9021", "flow-2:9021"]
//! balance = "round-robin"        # or "least-connections"
//! forwarded_proto = "https"      # what Flow must see behind TLS
//! forwarded_port = 443
//! [service.flow.health]
//! path = "/api/actuator/health"
//! [service.flow.websocket]
//! idle_timeout = "1h"            # must be greater than heartbeat_interval
//! heartbeat_interval = "5s"
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::duration::{self, Dur};
use super::{ConfigError, Source};

/// The Flow UI's heartbeat interval, which every idle timeout must exceed.
pub const FLOW_HEARTBEAT: Duration = Duration::from_secs(5);
/// Flow's health endpoint.
pub const FLOW_HEALTH_PATH: &str = "/api/actuator/health";
pub const DEFAULT_SERVICE: &str = "flow";
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9901";

// ---------------------------------------------------------------------------
// The validated configuration.

/// Where TLS certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsMode {
    /// A local CA in the state dir issues them (clients trust `<state-dir>/ca.pem`).
    SelfSigned,
    /// A PEM chain and key made elsewhere, watched for changes.
    Files { cert: PathBuf, key: PathBuf },
    /// Issued and renewed by an ACME CA (Let's Encrypt by default).
    Acme(AcmeSettings),
}

/// How the CA checks that we control a domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ChallengeKind {
    /// A token served at /.well-known/acme-challenge/ on port 80.
    #[value(name = "http-01")]
    #[serde(rename = "http-01")]
    Http01,
    /// A special certificate served on port 443 for ALPN acme-tls/1.
    #[value(name = "tls-alpn-01")]
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeSettings {
    /// Directory URL, or `production` / `staging` for Let's Encrypt.
    pub directory: String,
    pub email: Option<String>,
    /// A CA bundle to trust for the ACME server itself (Pebble, a private CA).
    pub ca: Option<PathBuf>,
    pub challenge: ChallengeKind,
    /// Renew this long before expiry instead of at a third of the lifetime.
    pub renew_before: Option<Duration>,
}

impl AcmeSettings {
    pub fn directory_url(&self) -> String {
        match self.directory.as_str() {
            "production" | "letsencrypt" => instant_acme::LetsEncrypt::Production.url().to_string(),
            "staging" | "letsencrypt-staging" => instant_acme::LetsEncrypt::Staging.url().to_string(),
            other => other.to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub listen: Vec<SocketAddr>,
    pub mode: TlsMode,
    /// Names the certificate must cover; default: the routes' exact hosts.
    pub domains: Vec<String>,
    /// Plain-HTTP requests get 308 to HTTPS (ACME challenges excepted).
    pub redirect_http: bool,
    /// The HTTPS port named in redirects (the public one, when a container
    /// publishes the listener under another port); default: the first TLS
    /// listener's.
    pub redirect_port: Option<u16>,
}

/// When the WebSocket sessions are spread again (`proxy::rebalance`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rebalance {
    /// Only when asked (`flowgate rebalance`, the dashboard's `b`, the admin API).
    #[default]
    Manual,
    /// Also whenever a backend becomes healthy (a scale-up, a replaced instance).
    Auto,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum TlsModeName {
    SelfSigned,
    Files,
    Acme,
}

/// A TLS mode that its settings contradict.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsModeError {
    #[error("the files mode needs both a certificate (cert) and a key (key)")]
    FilesNeedBoth,
    #[error("a certificate and key file belong to the files mode, not {0}; leave them out or use files")]
    FilesWithoutFilesMode(&'static str),
}

impl TlsModeName {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsModeName::SelfSigned => "self-signed",
            TlsModeName::Files => "files",
            TlsModeName::Acme => "acme",
        }
    }
}

impl TlsMode {
    /// The one place a mode name and its settings become a mode, for the
    /// command line and the file alike.
    pub fn from_parts(
        name: TlsModeName,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        acme: AcmeSettings,
    ) -> Result<TlsMode, TlsModeError> {
        match (name, cert, key) {
            (TlsModeName::Files, Some(cert), Some(key)) => Ok(TlsMode::Files { cert, key }),
            (TlsModeName::Files, _, _) => Err(TlsModeError::FilesNeedBoth),
            (TlsModeName::SelfSigned, None, None) => Ok(TlsMode::SelfSigned),
            (TlsModeName::Acme, None, None) => Ok(TlsMode::Acme(acme)),
            (other, _, _) => Err(TlsModeError::FilesWithoutFilesMode(other.as_str())),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub listen: Vec<SocketAddr>,
    pub tls: Option<TlsSettings>,
    pub admin: Option<SocketAddr>,
    pub admin_token_file: Option<PathBuf>,
    pub state_dir: PathBuf,
    pub limits: Limits,
    pub routes: Vec<Route>,
    pub services: BTreeMap<String, Service>,
    /// The file this came from, read again on SIGHUP.
    pub source: Option<PathBuf>,
}

/// What one client, one request or one backend may take. Every default is
/// part of the proxy's security posture: each one bounds what a hostile
/// client can hold (README, "Limits and timeouts").
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Client connections open at once; a WebSocket session counts until it closes.
    pub max_connections: usize,
    /// Client connections open at once from one address (0: no limit).
    pub max_connections_per_ip: usize,
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    /// How long SIGTERM waits for requests and sessions before exiting.
    pub shutdown_grace: Duration,
    pub connect_timeout: Duration,
    /// A request body that sends no byte for this long gets 408.
    pub body_read_timeout: Duration,
    /// A request body slower than this on average (bytes/s, after the first
    /// `body_read_timeout`) gets 408 too: a trickle of one byte every few
    /// seconds never trips an inactivity timeout. 0 turns the check off.
    pub body_min_rate: u64,
    /// A client that accepts no byte for this long while the proxy has data
    /// for it (a response, WebSocket frames) is disconnected.
    pub write_timeout: Duration,
    /// How long a backend has to send a response head (504 after).
    pub upstream_timeout: Duration,
    /// A backend that sends no byte of a response body for this long: the
    /// client's answer is cut off (never passed off as whole) and the
    /// backend connection closed. An inactivity limit, not a total: a body
    /// that keeps streaming (Server-Sent Events, query results) runs on.
    pub upstream_body_timeout: Duration,
    /// A client connection with no request in flight is closed after this long.
    pub keepalive_timeout: Duration,
    pub max_concurrent_streams: u32,
    /// HTTP connections to one backend at most; further requests wait for
    /// one, up to `connect_timeout`, then get 503.
    pub max_upstream_connections: usize,
    /// Peers whose X-Forwarded-* and Forwarded headers are believed (and
    /// appended to); from anyone else they are removed.
    pub trusted_proxies: Vec<Cidr>,
    /// Peers not held to `max_connections_per_ip`: addresses that carry
    /// many clients, such as Docker's gateway for every client on the host.
    pub per_ip_exempt: Vec<Cidr>,
    /// `per_ip_exempt` names `gateway`: this machine's default gateway, found
    /// when the proxy starts (in a container, Docker's bridge).
    pub exempt_gateway: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 50_000,
            max_connections_per_ip: 1_000,
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
            max_headers: 100,
            shutdown_grace: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(3),
            body_read_timeout: Duration::from_secs(60),
            body_min_rate: 500,
            write_timeout: Duration::from_secs(60),
            upstream_timeout: Duration::from_secs(60),
            upstream_body_timeout: Duration::from_secs(300),
            keepalive_timeout: Duration::from_secs(75),
            max_concurrent_streams: 100,
            max_upstream_connections: 1_024,
            trusted_proxies: Vec::new(),
            per_ip_exempt: Vec::new(),
            exempt_gateway: false,
        }
    }
}

/// An address block such as `10.0.0.0/8` or `::1/128` (a bare address is
/// the block of that one address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: std::net::IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let hint = "write it like 10.0.0.0/8, 192.168.1.7 or fd00::/8";
        let (addr, prefix) = match text.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text.trim(), None),
        };
        let network: std::net::IpAddr = addr
            .parse()
            .map_err(|_| format!("'{text}' is not an address block; {hint}"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("'{text}' has a prefix length outside 0-{max}; {hint}")),
            },
        };
        Ok(Cidr { network, prefix })
    }

    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        // An IPv4 client on a dual-stack socket arrives as ::ffff:a.b.c.d.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    Any,
    Exact(String),
    /// `*.example.com`: any name ending in `.example.com` (not the bare domain).
    Suffix(String),
}

impl HostMatch {
    pub fn parse(pattern: &str) -> Result<HostMatch, String> {
        let pattern = pattern.trim().to_ascii_lowercase();
        if pattern.is_empty() || pattern == "*" {
            return Ok(HostMatch::Any);
        }
        let (suffix, name) = match pattern.strip_prefix("*.") {
            Some(rest) => (true, rest.to_string()),
            None => (false, pattern.clone()),
        };
        let valid = !name.is_empty()
            && name
                .split('.')
                .all(|label| !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        if !valid {
            return Err(format!("'{pattern}' is not a host name or a '*.domain' pattern"));
        }
        Ok(if suffix {
            HostMatch::Suffix(format!(".{name}"))
        } else {
            HostMatch::Exact(name)
        })
    }

    /// `host` must already be lower-case and without a port.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Any => true,
            HostMatch::Exact(name) => host == name,
            HostMatch::Suffix(suffix) => host.len() > suffix.len() && host.ends_with(suffix.as_str()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub host: HostMatch,
    pub path_prefix: String,
    pub service: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Balance {
    #[default]
    RoundRobin,
    LeastConnections,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheck {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
}

impl HealthCheck {
    pub fn flow_default() -> Self {
        HealthCheck {
            path: FLOW_HEALTH_PATH.into(),
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            rise: 2,
            fall: 2,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct WebSocketSettings {
    pub idle_timeout: Duration,
    pub heartbeat_interval: Duration,
    /// Text messages containing one of these (in their first 128 bytes) count
    /// as heartbeats, as do pings and pongs.
    pub heartbeat_patterns: Vec<String>,
}

impl Default for WebSocketSettings {
    fn default() -> Self {
        WebSocketSettings {
            idle_timeout: Duration::from_secs(3600),
            heartbeat_interval: FLOW_HEARTBEAT,
            heartbeat_patterns: vec!["heartbeat".into()],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSpec {
    pub id: String,
    pub address: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub name: String,
    pub backends: Vec<BackendSpec>,
    pub balance: Balance,
    /// Whether a newly healthy backend starts a rebalance of the sessions.
    pub rebalance: Rebalance,
    /// A name whose addresses are the backends (`tasks.flow:9021` on Swarm,
    /// a network alias on one engine), resolved every second.
    pub discover: Option<String>,
    pub sticky_cookie: Option<String>,
    pub health: Option<HealthCheck>,
    pub forwarded_proto: Option<String>,
    pub forwarded_port: Option<u16>,
    pub websocket: WebSocketSettings,
}

impl Service {
    pub fn new(name: &str) -> Self {
        Service {
            name: name.into(),
            backends: Vec::new(),
            balance: Balance::default(),
            rebalance: Rebalance::default(),
            discover: None,
            sticky_cookie: None,
            health: Some(HealthCheck::flow_default()),
            forwarded_proto: None,
            forwarded_port: None,
            websocket: WebSocketSettings::default(),
        }
    }
}

/// Checks a backend address of the form `host:port` (a DNS name is resolved
/// only when connecting, so Docker names work).
pub fn check_backend_address(address: &str) -> Result<(), String> {
    let hint = "write it as host:port, for example flow-1:9021 or 127.0.0.1:9021";
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| format!("backend '{address}' has no port; {hint}"))?;
    if host.is_empty() || host.contains('/') || host.contains(char::is_whitespace) {
        return Err(format!("backend '{address}' has no valid host; {hint}"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("backend '{address}' has an invalid port '{port}'; {hint}")),
    }
}

fn check_websocket(ws: &WebSocketSettings) -> Result<(), String> {
    if ws.idle_timeout <= ws.heartbeat_interval {
        return Err(format!(
            "idle_timeout ({}) must be greater than heartbeat_interval ({}): the Flow UI sends a heartbeat \
             every {}, and a balancer that closes idle connections sooner cuts every session between heartbeats",
            duration::format(ws.idle_timeout),
            duration::format(ws.heartbeat_interval),
            duration::format(ws.heartbeat_interval),
        ));
    }
    Ok(())
}

impl ProxyConfig {
    /// Checks what the types alone cannot: references between sections and
    /// the WebSocket timing rule. Used for flags and files alike.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let tls_listeners = self.tls.as_ref().map_or(0, |t| t.listen.len());
        if self.listen.is_empty() && tls_listeners == 0 {
            return Err(ConfigError::new("no listener configured").with_hint("add --listen 0.0.0.0:80"));
        }
        if let Some(tls) = &self.tls {
            if tls.listen.is_empty() {
                return Err(ConfigError::new("TLS is on but has no listener").with_hint("add --tls-listen 0.0.0.0:443"));
            }
            let domains = if tls.domains.is_empty() {
                self.route_hosts()
            } else {
                tls.domains.clone()
            };
            if matches!(tls.mode, TlsMode::Acme(_)) {
                if domains.is_empty() {
                    return Err(ConfigError::new("ACME needs the domain names to certify")
                        .with_hint("add --domain flow.example.com (or domains = [...] under [tls])"));
                }
                if let Some(wildcard) = domains.iter().find(|d| d.starts_with('*')) {
                    return Err(ConfigError::new(format!(
                        "ACME cannot certify {wildcard} with HTTP-01 or TLS-ALPN-01 challenges"
                    ))
                    .with_hint("list the exact host names instead"));
                }
            }
        }
        for route in &self.routes {
            if !self.services.contains_key(&route.service) {
                return Err(ConfigError::new(format!(
                    "a route names service '{}', which is not defined",
                    route.service
                )));
            }
        }
        for service in self.services.values() {
            check_websocket(&service.websocket).map_err(ConfigError::new)?;
        }
        Ok(())
    }

    /// Exact host names of the routes: what a certificate must cover when
    /// no TLS domains are given.
    pub fn route_hosts(&self) -> Vec<String> {
        self.routes
            .iter()
            .filter_map(|r| match &r.host {
                HostMatch::Exact(name) => Some(name.clone()),
                HostMatch::Suffix(suffix) => Some(format!("*{suffix}")),
                HostMatch::Any => None,
            })
            .collect()
    }

    /// The default service for backends added without naming one.
    pub fn default_service(&self) -> Option<&str> {
        if self.services.contains_key(DEFAULT_SERVICE) {
            Some(DEFAULT_SERVICE)
        } else {
            self.services.keys().next().map(String::as_str)
        }
    }
}

// ---------------------------------------------------------------------------
// The TOML file as written, with spans for error positions.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTls {
    #[serde(default)]
    listen: Vec<Spanned<String>>,
    mode: Spanned<TlsModeName>,
    #[serde(default)]
    domains: Vec<String>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    #[serde(default = "default_true")]
    redirect_http: bool,
    redirect_port: Option<u16>,
    acme_directory: Option<String>,
    acme_email: Option<String>,
    acme_ca: Option<PathBuf>,
    acme_challenge: Option<ChallengeKind>,
    renew_before: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    listen: Vec<Spanned<String>>,
    tls: Option<FileTls>,
    admin: Option<Spanned<String>>,
    admin_token_file: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    #[serde(default)]
    limits: FileLimits,
    #[serde(default, rename = "route")]
    routes: Vec<FileRoute>,
    #[serde(default, rename = "service")]
    services: BTreeMap<String, FileService>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLimits {
    max_connections: Option<usize>,
    max_connections_per_ip: Option<usize>,
    header_read_timeout: Option<Dur>,
    max_header_bytes: Option<usize>,
    max_headers: Option<usize>,
    shutdown_grace: Option<Dur>,
    connect_timeout: Option<Dur>,
    body_read_timeout: Option<Dur>,
    body_min_rate: Option<u64>,
    write_timeout: Option<Dur>,
    upstream_timeout: Option<Dur>,
    upstream_body_timeout: Option<Dur>,
    keepalive_timeout: Option<Dur>,
    max_concurrent_streams: Option<u32>,
    max_upstream_connections: Option<usize>,
    #[serde(default)]
    trusted_proxies: Vec<Spanned<String>>,
    #[serde(default)]
    per_ip_exempt: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRoute {
    host: Option<Spanned<String>>,
    path_prefix: Option<String>,
    service: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileService {
    #[serde(default)]
    backends: Vec<Spanned<String>>,
    #[serde(default)]
    balance: Balance,
    #[serde(default)]
    rebalance: Rebalance,
    discover: Option<Spanned<String>>,
    sticky_cookie: Option<String>,
    health: Option<FileHealth>,
    forwarded_proto: Option<String>,
    forwarded_port: Option<u16>,
    websocket: Option<Spanned<FileWebSocket>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileHealth {
    #[serde(default = "default_true")]
    enabled: bool,
    path: Option<String>,
    interval: Option<Dur>,
    timeout: Option<Dur>,
    rise: Option<u32>,
    fall: Option<u32>,
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileWebSocket {
    idle_timeout: Option<Dur>,
    heartbeat_interval: Option<Dur>,
    heartbeat_patterns: Option<Vec<String>>,
}

/// Where the proxy keeps its admin token and runtime state by default.
pub fn default_state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("flowgate");
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/state/flowgate"),
        None => PathBuf::from(".flowgate"),
    }
}

/// Loads and validates a proxy configuration file.
pub fn load(path: &Path) -> Result<ProxyConfig, ConfigError> {
    let text = super::read_file(path)?;
    parse(&text, Some(path))
}

/// Parses and validates proxy configuration text.
pub fn parse(text: &str, file: Option<&Path>) -> Result<ProxyConfig, ConfigError> {
    let source = Source { file, text };
    let raw: FileConfig = toml::from_str(text).map_err(|e| source.toml_error(&e))?;

    let mut listen = Vec::new();
    for entry in &raw.listen {
        listen.push(parse_socket_addr(&source, entry, "listen")?);
    }
    let admin = match &raw.admin {
        Some(entry) if entry.get_ref().is_empty() || entry.get_ref() == "off" => None,
        Some(entry) => Some(parse_socket_addr(&source, entry, "admin")?),
        None => DEFAULT_ADMIN.parse().ok(),
    };

    let limits = limits_from_file(&source, raw.limits)?;

    let mut services = BTreeMap::new();
    for (name, file_service) in raw.services {
        let service = service_from_file(&source, &name, file_service)?;
        services.insert(name, service);
    }

    let mut routes = Vec::new();
    for route in raw.routes {
        let host = match &route.host {
            Some(host) => HostMatch::parse(host.get_ref()).map_err(|e| {
                source
                    .error_at(host.span(), e)
                    .with_hint("use flow.example.com or *.example.com")
            })?,
            None => HostMatch::Any,
        };
        if !services.contains_key(route.service.get_ref()) {
            let known: Vec<_> = services.keys().cloned().collect();
            return Err(source
                .error_at(
                    route.service.span(),
                    format!(
                        "route names service '{}', which is not defined",
                        route.service.get_ref()
                    ),
                )
                .with_hint(if known.is_empty() {
                    "add a [service.NAME] table with its backends".to_string()
                } else {
                    format!("defined services: {}", known.join(", "))
                }));
        }
        let path_prefix = route.path_prefix.unwrap_or_else(|| "/".into());
        if !path_prefix.starts_with('/') {
            return Err(ConfigError::new(format!(
                "path_prefix '{path_prefix}' must start with '/'"
            )));
        }
        routes.push(Route {
            host,
            path_prefix,
            service: route.service.into_inner(),
        });
    }
    // A file with services but no routes sends every host to its only service.
    if routes.is_empty() && services.len() == 1 {
        if let Some(name) = services.keys().next() {
            routes.push(Route {
                host: HostMatch::Any,
                path_prefix: "/".into(),
                service: name.clone(),
            });
        }
    }

    let tls = match raw.tls {
        None => None,
        Some(t) => {
            let mut listen = Vec::new();
            for entry in &t.listen {
                listen.push(parse_socket_addr(&source, entry, "tls.listen")?);
            }
            let acme = AcmeSettings {
                directory: t.acme_directory.unwrap_or_else(|| "production".into()),
                email: t.acme_email,
                ca: t.acme_ca.map(|p| relative_to(file, p)),
                challenge: t.acme_challenge.unwrap_or(ChallengeKind::Http01),
                renew_before: t.renew_before.map(|d| d.0),
            };
            let cert = t.cert.map(|p| relative_to(file, p));
            let key = t.key.map(|p| relative_to(file, p));
            let mode = TlsMode::from_parts(*t.mode.get_ref(), cert, key, acme).map_err(|e| {
                source
                    .error_at(t.mode.span(), e.to_string())
                    .with_hint("cert = \"fullchain.pem\" and key = \"privkey.pem\" (paths relative to this file) go with mode = \"files\"")
            })?;
            Some(TlsSettings {
                listen,
                mode,
                domains: t.domains,
                redirect_http: t.redirect_http,
                redirect_port: t.redirect_port,
            })
        }
    };

    let config = ProxyConfig {
        listen,
        tls,
        admin,
        admin_token_file: raw.admin_token_file,
        state_dir: raw.state_dir.unwrap_or_else(default_state_dir),
        limits,
        routes,
        services,
        source: file.map(Path::to_path_buf),
    };
    config.validate().map_err(|mut e| {
        e.file = file.map(Path::to_path_buf);
        e
    })?;
    Ok(config)
}

fn limits_from_file(source: &Source<'_>, file: FileLimits) -> Result<Limits, ConfigError> {
    let d = Limits::default();
    let dur = |v: Option<Dur>, default: Duration| v.map_or(default, |v| v.0);
    let mut trusted_proxies = Vec::new();
    for entry in &file.trusted_proxies {
        let cidr = Cidr::parse(entry.get_ref()).map_err(|e| source.error_at(entry.span(), e))?;
        trusted_proxies.push(cidr);
    }
    let mut per_ip_exempt = Vec::new();
    let mut exempt_gateway = false;
    for entry in &file.per_ip_exempt {
        if entry.get_ref() == "gateway" {
            exempt_gateway = true;
            continue;
        }
        let cidr = Cidr::parse(entry.get_ref()).map_err(|e| {
            source
                .error_at(entry.span(), e)
                .with_hint("or \"gateway\" for this machine's default gateway")
        })?;
        per_ip_exempt.push(cidr);
    }
    let limits = Limits {
        max_connections: file.max_connections.unwrap_or(d.max_connections),
        max_connections_per_ip: file.max_connections_per_ip.unwrap_or(d.max_connections_per_ip),
        header_read_timeout: dur(file.header_read_timeout, d.header_read_timeout),
        max_header_bytes: file.max_header_bytes.unwrap_or(d.max_header_bytes),
        max_headers: file.max_headers.unwrap_or(d.max_headers),
        shutdown_grace: dur(file.shutdown_grace, d.shutdown_grace),
        connect_timeout: dur(file.connect_timeout, d.connect_timeout),
        body_read_timeout: dur(file.body_read_timeout, d.body_read_timeout),
        body_min_rate: file.body_min_rate.unwrap_or(d.body_min_rate),
        write_timeout: dur(file.write_timeout, d.write_timeout),
        upstream_timeout: dur(file.upstream_timeout, d.upstream_timeout),
        upstream_body_timeout: dur(file.upstream_body_timeout, d.upstream_body_timeout),
        keepalive_timeout: dur(file.keepalive_timeout, d.keepalive_timeout),
        max_concurrent_streams: file.max_concurrent_streams.unwrap_or(d.max_concurrent_streams),
        max_upstream_connections: file.max_upstream_connections.unwrap_or(d.max_upstream_connections),
        trusted_proxies,
        per_ip_exempt,
        exempt_gateway,
    };
    limits.check().map_err(|e| ConfigError::new(format!("[limits]: {e}")))?;
    Ok(limits)
}

/// The largest `max_header_bytes` a configuration may ask for.
pub const MAX_HEADER_BYTES: usize = 1024 * 1024;

impl Limits {
    /// Values that would switch a protection off by accident, or ask for
    /// more than the proxy holds.
    pub fn check(&self) -> Result<(), String> {
        let nonzero = [
            ("max_connections", self.max_connections),
            ("max_upstream_connections", self.max_upstream_connections),
            ("max_concurrent_streams", self.max_concurrent_streams as usize),
            ("max_headers", self.max_headers),
            ("max_header_bytes", self.max_header_bytes),
        ];
        if let Some((name, _)) = nonzero.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} must be at least 1"));
        }
        // A head is read into memory whole, and field positions in it are
        // kept as 32-bit numbers; no browser sends a head near this.
        if self.max_header_bytes > MAX_HEADER_BYTES {
            return Err(format!("max_header_bytes must be at most {MAX_HEADER_BYTES} (1 MiB)"));
        }
        let timeouts = [
            ("header_read_timeout", self.header_read_timeout),
            ("connect_timeout", self.connect_timeout),
            ("body_read_timeout", self.body_read_timeout),
            ("write_timeout", self.write_timeout),
            ("upstream_timeout", self.upstream_timeout),
            ("upstream_body_timeout", self.upstream_body_timeout),
            ("keepalive_timeout", self.keepalive_timeout),
        ];
        if let Some((name, _)) = timeouts.iter().find(|(_, v)| v.is_zero()) {
            return Err(format!("{name} must be longer than 0s"));
        }
        // Deadlines are computed from these; nothing useful is longer.
        let longest = Duration::from_secs(30 * 86_400);
        if let Some((name, _)) = timeouts.iter().find(|(_, v)| *v > longest) {
            return Err(format!("{name} must be at most 30d"));
        }
        Ok(())
    }

    pub fn is_trusted(&self, peer: std::net::IpAddr) -> bool {
        self.trusted_proxies.iter().any(|c| c.contains(peer))
    }

    /// Whether a peer's connections are counted against `max_connections_per_ip`.
    pub fn limits_per_ip(&self, peer: std::net::IpAddr) -> bool {
        self.max_connections_per_ip > 0
            && !self.is_trusted(peer)
            && !self.per_ip_exempt.iter().any(|c| c.contains(peer))
    }
}

/// This machine's default IPv4 gateway, from the kernel's routing table.
/// In a container on a Docker bridge network it is the bridge, the address
/// every client on the host arrives from through Docker's port forwarding.
pub fn default_gateway() -> Option<std::net::Ipv4Addr> {
    let table = std::fs::read_to_string("/proc/net/route").ok()?;
    gateway_in(&table)
}

fn gateway_in(table: &str) -> Option<std::net::Ipv4Addr> {
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // Iface Destination Gateway Flags ...; the default route has
        // destination 0 and the gateway flag (0x2).
        let flags = u32::from_str_radix(fields.get(3)?, 16).ok()?;
        if *fields.get(1)? != "00000000" || flags & 0x2 == 0 {
            return None;
        }
        let gateway = u32::from_str_radix(fields.get(2)?, 16).ok()?;
        // The kernel prints the address in host byte order.
        Some(std::net::Ipv4Addr::from(gateway.to_le_bytes()))
    })
}

impl Limits {
    /// Resolves `per_ip_exempt = ["gateway"]` now that the proxy runs where it will serve.
    pub fn resolve_gateway(&mut self) -> Option<std::net::Ipv4Addr> {
        if !self.exempt_gateway {
            return None;
        }
        let gateway = default_gateway()?;
        self.per_ip_exempt.push(Cidr {
            network: gateway.into(),
            prefix: 32,
        });
        Some(gateway)
    }
}

/// Paths in a file are relative to the file's directory.
fn relative_to(file: Option<&Path>, path: PathBuf) -> PathBuf {
    match file.and_then(Path::parent) {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path,
    }
}

fn parse_socket_addr(source: &Source<'_>, entry: &Spanned<String>, what: &str) -> Result<SocketAddr, ConfigError> {
    entry.get_ref().parse().map_err(|_| {
        source
            .error_at(
                entry.span(),
                format!("{what} '{}' is not an IP address with a port", entry.get_ref()),
            )
            .with_hint("write it like 0.0.0.0:80 or 127.0.0.1:9901")
    })
}

fn service_from_file(source: &Source<'_>, name: &str, file: FileService) -> Result<Service, ConfigError> {
    let mut service = Service::new(name);
    for (index, entry) in file.backends.iter().enumerate() {
        check_backend_address(entry.get_ref()).map_err(|e| source.error_at(entry.span(), e))?;
        if service
            .backends
            .iter()
            .any(|b: &BackendSpec| &b.address == entry.get_ref())
        {
            return Err(source.error_at(
                entry.span(),
                format!("backend '{}' is listed twice (entry {})", entry.get_ref(), index + 1),
            ));
        }
        service.backends.push(BackendSpec {
            id: entry.get_ref().clone(),
            address: entry.get_ref().clone(),
        });
    }
    service.balance = file.balance;
    service.rebalance = file.rebalance;
    if let Some(name) = &file.discover {
        check_backend_address(name.get_ref()).map_err(|e| {
            source
                .error_at(name.span(), e)
                .with_hint("discover = \"tasks.flow:9021\" (a name and the backends' port)")
        })?;
        service.discover = Some(name.get_ref().clone());
    }
    service.sticky_cookie = file.sticky_cookie;
    service.forwarded_proto = file.forwarded_proto;
    service.forwarded_port = file.forwarded_port;
    service.health = match file.health {
        Some(h) if !h.enabled => None,
        Some(h) => {
            let d = HealthCheck::flow_default();
            Some(HealthCheck {
                path: h.path.unwrap_or(d.path),
                interval: h.interval.map_or(d.interval, |v| v.0),
                timeout: h.timeout.map_or(d.timeout, |v| v.0),
                rise: h.rise.unwrap_or(d.rise).max(1),
                fall: h.fall.unwrap_or(d.fall).max(1),
            })
        }
        None => Some(HealthCheck::flow_default()),
    };
    if let Some(ws) = file.websocket {
        let span = ws.span();
        let ws = ws.into_inner();
        let d = WebSocketSettings::default();
        service.websocket = WebSocketSettings {
            idle_timeout: ws.idle_timeout.map_or(d.idle_timeout, |v| v.0),
            heartbeat_interval: ws.heartbeat_interval.map_or(d.heartbeat_interval, |v| v.0),
            heartbeat_patterns: ws.heartbeat_patterns.unwrap_or(d.heartbeat_patterns),
        };
        check_websocket(&service.websocket).map_err(|e| {
            source.error_at(span, e).with_hint(format!(
                "set idle_timeout to at least {}; the default is 1h",
                duration::format(service.websocket.heartbeat_interval * 3)
            ))
        })?;
    }
    Ok(service)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_full_file() {
        let config = parse(
            r#"
listen = ["127.0.0.1:8080"]
admin = "127.0.0.1:9000"
[[route]]
host = "*.example.com"
service = "flow"
[service.flow]
backends = ["flow-1:9021", "10.0.0.2:9021"]
balance = "least-connections"
forwarded_proto = "https"
forwarded_port = 443
[service.flow.websocket]
idle_timeout = "10m"
"#,
            None,
        )
        .unwrap();
        let flow = &config.services["flow"];
        assert_eq!(flow.backends.len(), 2);
        assert_eq!(flow.balance, Balance::LeastConnections);
        assert_eq!(flow.websocket.idle_timeout, Duration::from_secs(600));
        assert_eq!(config.routes[0].host, HostMatch::Suffix(".example.com".into()));
    }

    #[test]
    fn idle_timeout_not_above_heartbeat_is_rejected_with_its_position() {
        let text = "listen = [\"127.0.0.1:80\"]\n[service.flow]\nbackends = [\"a:1\"]\n[service.flow.websocket]\nidle_timeout = \"5s\"\n";
        let err = parse(text, Some(Path::new("p.toml"))).unwrap_err();
        let shown = err.to_string();
        assert!(shown.starts_with("p.toml:"), "{shown}");
        assert!(shown.contains("must be greater than heartbeat_interval"), "{shown}");
        assert!(err.hint.is_some());
    }

    #[test]
    fn type_errors_carry_line_and_column() {
        let err = parse(
            "listen = [\"127.0.0.1:80\"]\n[service.flow]\nbalance = \"random\"\n",
            None,
        )
        .unwrap_err();
        assert_eq!(err.position.map(|p| p.0), Some(3), "{err}");
        assert!(err.to_string().contains("round-robin"), "{err}");
    }

    #[test]
    fn unknown_service_in_route_lists_the_known_ones() {
        let err = parse(
            "listen = [\"127.0.0.1:80\"]\n[[route]]\nservice = \"mc\"\n[service.flow]\n",
            None,
        )
        .unwrap_err();
        assert_eq!(err.position, Some((3, 11)));
        assert!(err.hint.unwrap().contains("flow"));
    }

    #[test]
    fn bad_backend_addresses_are_located() {
        let err = parse(
            "listen = [\"127.0.0.1:80\"]\n[service.flow]\nbackends = [\"flow-1\"]\n",
            None,
        )
        .unwrap_err();
        assert_eq!(err.position, Some((3, 13)));
        assert!(err.message.contains("no port"));
    }

    #[test]
    fn tls_files_need_cert_and_key_and_paths_are_relative() {
        let err = parse(
            "[tls]\nlisten = [\"127.0.0.1:443\"]\nmode = \"files\"\n",
            Some(Path::new("/etc/fg/p.toml")),
        )
        .unwrap_err();
        assert_eq!(err.position, Some((3, 8)));
        let config = parse(
            "[tls]\nlisten = [\"127.0.0.1:443\"]\nmode = \"files\"\ncert = \"c.pem\"\nkey = \"/k.pem\"\n",
            Some(Path::new("/etc/fg/p.toml")),
        )
        .unwrap();
        let tls = config.tls.unwrap();
        assert_eq!(
            tls.mode,
            TlsMode::Files {
                cert: "/etc/fg/c.pem".into(),
                key: "/k.pem".into()
            }
        );
        assert!(tls.redirect_http);
    }

    #[test]
    fn address_blocks() {
        let lan = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(lan.contains("10.1.200.3".parse().unwrap()));
        assert!(!lan.contains("10.2.0.1".parse().unwrap()));
        assert!(lan.contains("::ffff:10.1.0.9".parse().unwrap()), "mapped IPv4");
        let one = Cidr::parse("192.0.2.7").unwrap();
        assert!(one.contains("192.0.2.7".parse().unwrap()));
        assert!(!one.contains("192.0.2.8".parse().unwrap()));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("203.0.113.1".parse().unwrap())
        );
        assert!(Cidr::parse("fd00::/8").unwrap().contains("fd12::1".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("evil").is_err());
    }

    #[test]
    fn the_default_gateway_is_read_from_the_routing_table() {
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n\
                     eth0\t00000000\t010012AC\t0003\t0\t0\t0\t00000000\n\
                     eth0\t000012AC\t00000000\t0001\t0\t0\t0\t0000FFFF\n";
        assert_eq!(gateway_in(table), Some("172.18.0.1".parse().unwrap()));
        assert_eq!(gateway_in("Iface\tDestination\n"), None);
    }

    #[test]
    fn limits_come_from_the_file_with_positions() {
        let config = parse(
            "listen = [\"127.0.0.1:80\"]\n[limits]\nwrite_timeout = \"5s\"\ntrusted_proxies = [\"10.0.0.0/8\"]\n[service.flow]\n",
            None,
        )
        .unwrap();
        assert_eq!(config.limits.write_timeout, Duration::from_secs(5));
        assert!(config.limits.is_trusted("10.9.9.9".parse().unwrap()));
        assert_eq!(config.limits.max_connections_per_ip, 1_000);
        assert!(config.limits.limits_per_ip("192.0.2.1".parse().unwrap()));
        assert!(
            !config.limits.limits_per_ip("10.1.1.1".parse().unwrap()),
            "trusted proxies are exempt"
        );
        let config = parse(
            "listen = [\"127.0.0.1:80\"]\n[limits]\nper_ip_exempt = [\"gateway\", \"192.0.2.0/24\"]\n",
            None,
        )
        .unwrap();
        assert!(config.limits.exempt_gateway);
        assert!(!config.limits.limits_per_ip("192.0.2.9".parse().unwrap()));
        let err = parse(
            "listen = [\"127.0.0.1:80\"]\n[limits]\ntrusted_proxies = [\"10.0.0.0/99\"]\n",
            None,
        )
        .unwrap_err();
        assert_eq!(err.position.map(|p| p.0), Some(3), "{err}");
        for bad in [
            "upstream_timeout = \"0s\"",
            "upstream_body_timeout = \"0s\"",
            "write_timeout = \"999999d\"",
            "max_upstream_connections = 0",
            "max_header_bytes = 1048577",
        ] {
            let text = format!("listen = [\"127.0.0.1:80\"]\n[limits]\n{bad}\n");
            assert!(parse(&text, None).is_err(), "{bad}");
        }
    }

    #[test]
    fn host_patterns() {
        let suffix = HostMatch::parse("*.Example.com").unwrap();
        assert!(suffix.matches("flow.example.com"));
        assert!(!suffix.matches("example.com"));
        assert!(
            HostMatch::parse("flow.example.com")
                .unwrap()
                .matches("flow.example.com")
        );
        assert!(HostMatch::parse("bad host").is_err());
    }
}
