//! The proxy's configuration from its command-line flags: the same
//! [`ProxyConfig`] the TOML file gives, built from plain data the shell
//! fills in, through the same rules ([`TlsMode::from_parts`],
//! [`Limits::check`], [`ProxyConfig::validate`]). With a file, only the
//! settings that make sense beside one (state dir, admin, limits) apply.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::ConfigError;
use super::proxy::{
    self, AcmeSettings, BackendSpec, Balance, Cidr, HealthCheck, HostMatch, Limits, ProxyConfig, Route, Service,
    TlsMode, TlsModeName, TlsSettings,
};

/// What `flowgate proxy` was told on its command line.
#[derive(Debug, Clone)]
pub struct ProxyFlags {
    pub listen: Vec<SocketAddr>,
    pub backends: Vec<String>,
    /// A name whose addresses are the backends, resolved every second.
    pub discover: Option<String>,
    pub domains: Vec<String>,
    pub tls: Option<TlsModeName>,
    pub tls_listen: Vec<SocketAddr>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub acme: AcmeSettings,
    pub redirect_http: bool,
    pub redirect_port: Option<u16>,
    /// `off` (or empty) turns the admin API off.
    pub admin: Option<String>,
    pub admin_token_file: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub balance: Balance,
    pub sticky_cookie: Option<String>,
    /// None: backends are not health-checked.
    pub health: Option<(String, Duration)>,
    pub forwarded_proto: Option<String>,
    pub forwarded_port: Option<u16>,
    pub idle_timeout: Duration,
    pub heartbeat_interval: Duration,
    pub heartbeat_patterns: Vec<String>,
    pub limits: LimitOverrides,
}

/// Limits given on the command line; each one that is set wins over the
/// file's `[limits]` and the defaults.
#[derive(Debug, Clone, Default)]
pub struct LimitOverrides {
    pub max_connections: Option<usize>,
    pub max_connections_per_ip: Option<usize>,
    pub header_read_timeout: Option<Duration>,
    pub shutdown_grace: Option<Duration>,
    pub body_read_timeout: Option<Duration>,
    pub body_min_rate: Option<u64>,
    pub write_timeout: Option<Duration>,
    pub upstream_timeout: Option<Duration>,
    pub upstream_body_timeout: Option<Duration>,
    pub keepalive_timeout: Option<Duration>,
    pub max_concurrent_streams: Option<u32>,
    pub max_upstream_connections: Option<usize>,
    pub trusted_proxies: Vec<Cidr>,
    /// CIDRs, addresses or `gateway`.
    pub per_ip_exempt: Vec<String>,
}

impl LimitOverrides {
    /// Sets every limit given, then checks the result.
    pub fn apply(&self, limits: &mut Limits) -> Result<(), ConfigError> {
        fn set<T: Clone>(flag: &Option<T>, field: &mut T) {
            if let Some(value) = flag {
                *field = value.clone();
            }
        }
        set(&self.max_connections, &mut limits.max_connections);
        set(&self.max_connections_per_ip, &mut limits.max_connections_per_ip);
        set(&self.header_read_timeout, &mut limits.header_read_timeout);
        set(&self.shutdown_grace, &mut limits.shutdown_grace);
        set(&self.body_read_timeout, &mut limits.body_read_timeout);
        set(&self.body_min_rate, &mut limits.body_min_rate);
        set(&self.write_timeout, &mut limits.write_timeout);
        set(&self.upstream_timeout, &mut limits.upstream_timeout);
        set(&self.upstream_body_timeout, &mut limits.upstream_body_timeout);
        set(&self.keepalive_timeout, &mut limits.keepalive_timeout);
        set(&self.max_concurrent_streams, &mut limits.max_concurrent_streams);
        set(&self.max_upstream_connections, &mut limits.max_upstream_connections);
        if !self.trusted_proxies.is_empty() {
            limits.trusted_proxies = self.trusted_proxies.clone();
        }
        if !self.per_ip_exempt.is_empty() {
            limits.per_ip_exempt.clear();
            limits.exempt_gateway = false;
            for entry in &self.per_ip_exempt {
                if entry == "gateway" {
                    limits.exempt_gateway = true;
                } else {
                    let cidr = Cidr::parse(entry).map_err(|e| ConfigError::new(format!("--per-ip-exempt: {e}")))?;
                    limits.per_ip_exempt.push(cidr);
                }
            }
        }
        limits
            .check()
            .map_err(|e| ConfigError::new(e.replace('_', "-")).with_hint("see flowgate proxy --help"))
    }
}

impl ProxyFlags {
    /// The configuration these flags describe: the file given with
    /// --config (with the state dir, admin settings and limits still
    /// applying), or the flags alone.
    pub fn to_config(&self, file: Option<&Path>) -> Result<ProxyConfig, ConfigError> {
        if file.is_some() {
            let mixed = [
                (!self.listen.is_empty(), "--listen"),
                (!self.backends.is_empty(), "--backend"),
                (self.discover.is_some(), "--discover"),
                (!self.domains.is_empty(), "--domain"),
                (self.tls.is_some(), "--tls"),
                (!self.tls_listen.is_empty(), "--tls-listen"),
            ];
            if let Some((_, flag)) = mixed.iter().find(|(given, _)| *given) {
                return Err(ConfigError::new(format!("{flag} cannot be used with --config"))
                    .with_hint("put it in the file, or leave out --config"));
            }
        }
        let admin = match self.admin.as_deref() {
            None => None,
            Some("off") | Some("") => Some(None),
            Some(text) => Some(Some(text.parse::<SocketAddr>().map_err(|_| {
                ConfigError::new(format!("--admin '{text}' is not an IP address with a port"))
                    .with_hint("write it like 127.0.0.1:9901, or off")
            })?)),
        };
        let mut config = match file {
            Some(path) => proxy::load(path)?,
            None => self.flags_config()?,
        };
        if let Some(admin) = admin {
            config.admin = admin;
        }
        if let Some(dir) = &self.state_dir {
            config.state_dir = dir.clone();
        }
        if let Some(path) = &self.admin_token_file {
            config.admin_token_file = Some(path.clone());
        }
        self.limits.apply(&mut config.limits)?;
        Ok(config)
    }

    fn flags_config(&self) -> Result<ProxyConfig, ConfigError> {
        let mut service = Service::new(proxy::DEFAULT_SERVICE);
        for address in &self.backends {
            proxy::check_backend_address(address).map_err(|e| ConfigError::new(format!("--backend: {e}")))?;
            if service.backends.iter().any(|b| &b.address == address) {
                return Err(ConfigError::new(format!("--backend {address} is given twice")));
            }
            service.backends.push(BackendSpec {
                id: address.clone(),
                address: address.clone(),
            });
        }
        if let Some(name) = &self.discover {
            proxy::check_backend_address(name).map_err(|e| ConfigError::new(format!("--discover: {e}")))?;
            service.discover = Some(name.clone());
        }
        service.balance = self.balance;
        service.sticky_cookie = self.sticky_cookie.clone();
        service.forwarded_proto = self.forwarded_proto.clone();
        service.forwarded_port = self.forwarded_port;
        service.health = self.health.as_ref().map(|(path, interval)| HealthCheck {
            path: path.clone(),
            interval: *interval,
            ..HealthCheck::flow_default()
        });
        service.websocket.idle_timeout = self.idle_timeout;
        service.websocket.heartbeat_interval = self.heartbeat_interval;
        service.websocket.heartbeat_patterns = self.heartbeat_patterns.clone();
        let hosts = if self.domains.is_empty() {
            vec![HostMatch::Any]
        } else {
            self.domains
                .iter()
                .map(|d| HostMatch::parse(d).map_err(|e| ConfigError::new(format!("--domain: {e}"))))
                .collect::<Result<Vec<_>, _>>()?
        };
        let routes = hosts
            .into_iter()
            .map(|host| Route {
                host,
                path_prefix: "/".into(),
                service: service.name.clone(),
            })
            .collect();
        let tls = match self.tls {
            None => None,
            Some(name) => {
                let mode =
                    TlsMode::from_parts(name, self.cert.clone(), self.key.clone(), self.acme.clone()).map_err(|e| {
                        ConfigError::new(e.to_string())
                            .with_hint("--cert fullchain.pem --key privkey.pem go with --tls files")
                    })?;
                Some(TlsSettings {
                    listen: self.tls_listen.clone(),
                    mode,
                    domains: Vec::new(),
                    redirect_http: self.redirect_http,
                    redirect_port: self.redirect_port,
                })
            }
        };
        let config = ProxyConfig {
            listen: self.listen.clone(),
            tls,
            admin: proxy::DEFAULT_ADMIN.parse().ok(),
            admin_token_file: None,
            state_dir: proxy::default_state_dir(),
            limits: Limits::default(),
            routes,
            services: [(service.name.clone(), service)].into_iter().collect(),
            source: None,
        };
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags() -> ProxyFlags {
        ProxyFlags {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            backends: vec!["127.0.0.1:9021".into()],
            discover: None,
            domains: Vec::new(),
            tls: None,
            tls_listen: Vec::new(),
            cert: None,
            key: None,
            acme: AcmeSettings {
                directory: "production".into(),
                email: None,
                ca: None,
                challenge: proxy::ChallengeKind::Http01,
                renew_before: None,
            },
            redirect_http: true,
            redirect_port: None,
            admin: None,
            admin_token_file: None,
            state_dir: None,
            balance: Balance::RoundRobin,
            sticky_cookie: None,
            health: None,
            forwarded_proto: None,
            forwarded_port: None,
            idle_timeout: Duration::from_secs(3600),
            heartbeat_interval: Duration::from_secs(5),
            heartbeat_patterns: vec!["heartbeat".into()],
            limits: LimitOverrides::default(),
        }
    }

    #[test]
    fn flags_and_the_file_refuse_the_same_tls_contradiction() {
        let mut with_files = flags();
        with_files.tls = Some(TlsModeName::SelfSigned);
        with_files.tls_listen = vec!["127.0.0.1:0".parse().unwrap()];
        with_files.cert = Some("c.pem".into());
        with_files.key = Some("k.pem".into());
        let from_flags = with_files.to_config(None).unwrap_err();
        let file = "listen = [\"127.0.0.1:0\"]\n[tls]\nlisten = [\"127.0.0.1:0\"]\nmode = \"self-signed\"\n\
                    cert = \"c.pem\"\nkey = \"k.pem\"\n[service.flow]\nbackends = [\"127.0.0.1:9021\"]\n";
        let from_file = proxy::parse(file, None).unwrap_err();
        assert_eq!(from_flags.message, from_file.message);
        assert!(from_file.message.contains("not self-signed"), "{from_file}");
        assert_eq!(from_file.position.map(|p| p.0), Some(4));
    }

    #[test]
    fn a_discover_name_needs_a_port_from_flags_and_the_file() {
        let mut f = flags();
        f.discover = Some("tasks.flow".into());
        assert!(f.to_config(None).unwrap_err().message.starts_with("--discover:"));
        f.discover = Some("tasks.flow:9021".into());
        assert_eq!(
            f.to_config(None).unwrap().services["flow"].discover.as_deref(),
            Some("tasks.flow:9021")
        );
        let file = "listen = [\"127.0.0.1:0\"]\n[service.flow]\ndiscover = \"tasks.flow\"\n";
        let error = proxy::parse(file, None).unwrap_err();
        assert_eq!(error.position.map(|p| p.0), Some(3), "{error}");
    }

    #[test]
    fn limits_from_flags_are_checked() {
        let mut f = flags();
        f.limits.max_connections = Some(0);
        assert!(f.to_config(None).is_err());
        f.limits.max_connections = Some(10);
        f.limits.per_ip_exempt = vec!["gateway".into(), "10.0.0.0/8".into()];
        let config = f.to_config(None).unwrap();
        assert_eq!(config.limits.max_connections, 10);
        assert!(config.limits.exempt_gateway);
        assert_eq!(config.limits.per_ip_exempt.len(), 1);
    }
}
