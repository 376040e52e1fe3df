//! Command-line arguments. Each subcommand here works; the rest of the
//! product's commands arrive with their features.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::ConfigError;
use crate::config::duration;
use crate::config::proxy::{
    self, BackendSpec, Balance, HealthCheck, HostMatch, Limits, ProxyConfig, Route, Service, TlsMode, TlsModeName,
    TlsSettings,
};

#[derive(Debug, Parser)]
#[command(
    name = "flowgate",
    version,
    about = "Run Hazelcast Flow behind a WebSocket-aware load balancer",
    long_about = "flowgate runs Hazelcast Flow on Docker behind its own WebSocket-aware load balancer: \
                  N Flow instances, Management Center with the right CORS setting, TLS with a certificate \
                  for your domain, forwarded headers and WebSocket heartbeats watched per instance.\n\n\
                  Try it without a registry or licence: `flowgate tui --demo --http-port 8080 --https-port 8443` \
                  (the dashboard), or headless `flowgate up --demo ...`, then `flowgate status`, `flowgate scale 5` \
                  and `flowgate down`. The load balancer alone is \
                  `flowgate proxy`; `flowgate loadgen` simulates Flow UI users."
)]
pub struct Cli {
    /// The deployment to act on: names and labels every Docker object
    /// [default: `project` in flowgate.toml, else flowgate].
    #[arg(long, global = true, env = "FLOWGATE_PROJECT")]
    pub project: Option<String>,

    /// Settings file: the deployment's flowgate.toml [default: ./flowgate.toml when it
    /// exists; flags win over it]; for `flowgate proxy`, the proxy's own TOML file.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,

    /// Log filter for stderr, e.g. `info`, `debug`, `flowgate=trace` (also RUST_LOG).
    #[arg(long, global = true, env = "FLOWGATE_LOG", default_value = "info")]
    pub log: String,

    /// Without a command: the dashboard (`flowgate tui`).
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The dashboard: live instances, sessions, heartbeats; one key scales.
    /// With no deployment yet it asks for the settings and creates it.
    Tui(TuiArgs),
    /// Create or reconcile the deployment on Docker, headless, with progress output.
    Up(UpArgs),
    /// Set the number of Flow instances (removed ones are drained first).
    Scale {
        /// How many Flow instances to run.
        instances: u32,
    },
    /// Remove the deployment (volumes are kept unless --volumes).
    Down(DownArgs),
    /// One snapshot of the deployment: instances, health, sessions, rates.
    Status(StatusArgs),
    /// A container's logs: `flow-2` (or `2`), `proxy`, `mc`.
    Logs(LogsArgs),
    /// Run the proxy core: the WebSocket-aware load balancer.
    Proxy(Box<ProxyArgs>),
    /// Run a simulator of Flow or Management Center.
    #[command(subcommand)]
    Sim(SimCommand),
    /// Simulate Flow UI users: WebSocket sessions with heartbeats plus HTTP load.
    Loadgen(LoadgenArgs),
    /// Certificates of a running proxy: their state, or renew now.
    #[command(subcommand)]
    Cert(CertCommand),
    /// Check any Flow load balancer (flowgate, Traefik, nginx, ...) against every rule of
    /// the Flow load-balancing guide; each failure names the rule and the fix.
    Doctor(DoctorArgs),
    /// Write this deployment for other tools: docker-compose, Traefik or nginx.
    Export(ExportArgs),
}

#[derive(Debug, Args)]
#[command(after_help = "Checks, in order: certificate, https-redirect, websocket-upgrade, \
    forwarded-headers, instances, host-routing, idle-timeout, heartbeat-session, mc-cors. The exit code is 0 only \
    when none fails (a check that cannot run here is skipped and said so). Without --url it checks \
    the project's deployment on this machine (its URLs, local CA and ports).\n\n\
    Examples:\n  \
    flowgate doctor\n  \
    flowgate doctor --url https://flow.example.com --mc-url https://mc.example.com\n  \
    flowgate doctor --url https://flow.localhost:8443 --ca ca.pem --resolve flow.localhost:8443:127.0.0.1 \
    --http-port 8080 --idle-wait 20s")]
pub struct DoctorArgs {
    /// The Flow URL users open, e.g. https://flow.example.com [default: the project's
    /// deployment on this machine].
    #[arg(long)]
    pub url: Option<String>,
    /// Management Center's URL; its CORS preflight from the Flow origin is checked.
    #[arg(long)]
    pub mc_url: Option<String>,
    /// Trust the CA certificates in this PEM file instead of the system's roots.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Connect to ADDR for HOST:PORT instead of resolving it (like curl), e.g.
    /// flow.example.com:443:127.0.0.1. Also used for HOST's HTTP port when only the HTTPS
    /// port is given.
    #[arg(long)]
    pub resolve: Vec<String>,
    /// The plain-HTTP port that must redirect to HTTPS [default: 80, or the local deployment's].
    #[arg(long)]
    pub http_port: Option<u16>,
    /// A path where Flow accepts WebSockets.
    #[arg(long, default_value = "/")]
    pub ws_path: String,
    /// The Flow UI's heartbeat interval; the idle timeout must exceed it.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub heartbeat: Duration,
    /// How long a silent WebSocket session is watched to find the balancer's idle
    /// timeout (nginx's default is 60 s). Longer finds longer timeouts.
    #[arg(long, value_parser = parse_duration, default_value = "75s")]
    pub idle_wait: Duration,
    /// Requests sent to see how many instances answer.
    #[arg(long, default_value_t = 12)]
    pub requests: u32,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportKind {
    /// docker-compose.yml with flowgate's proxy in front.
    Compose,
    /// docker-compose.yml with Traefik in front (labels, entrypoints, middlewares, ACME).
    Traefik,
    /// nginx.conf (upstream over all instances, WebSocket, TLS) and a docker-compose.yml.
    Nginx,
}

#[derive(Debug, Args)]
#[command(
    after_help = "The deployment comes from flowgate.toml (see --config) and these flags, as for \
    `flowgate up`. Secrets are never written: the files read MC_LICENSE and POSTGRES_PASSWORD from \
    the environment or a .env file beside them.\n\n\
    Examples:\n  \
    flowgate export compose --out deploy/\n  \
    flowgate export nginx --demo --domain flow.example.com --out nginx/\n  \
    flowgate export nginx --flow-address 10.0.0.11:9021 --flow-address 10.0.0.12:9021 --mc-address 10.0.0.20:8080"
)]
pub struct ExportArgs {
    /// What to write.
    pub kind: ExportKind,
    /// Directory for the files (created); without it the main file goes to stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub deployment: DeploymentArgs,
    /// flowgate's image for the proxy and simulators [default: flowgate:<version>, built
    /// from this binary when Docker is reachable].
    #[arg(long)]
    pub image: Option<String>,
    /// nginx only: Flow instances that run elsewhere (HOST:PORT, repeat), instead of the
    /// containers of the compose file.
    #[arg(long)]
    pub flow_address: Vec<String>,
    /// nginx only: Management Center's address (HOST:PORT) when it runs elsewhere.
    #[arg(long)]
    pub mc_address: Option<String>,
}

#[derive(Debug, Args, Default)]
#[command(
    after_help = "Example:\n  flowgate up --demo --instances 3 --http-port 8080 --https-port 8443\n  \
    then https://flow.localhost:8443/ (trust the CA printed at the end)"
)]
pub struct UpArgs {
    #[command(flatten)]
    pub deployment: DeploymentArgs,
    /// Use only images already on this machine (loaded with `docker load`); never pull.
    #[arg(long)]
    pub no_pull: bool,
}

/// The deployment's settings on the command line (they win over flowgate.toml).
#[derive(Debug, Args, Default, Clone)]
pub struct DeploymentArgs {
    /// Number of Flow instances [default: flowgate.toml's, else what runs now, else 3].
    #[arg(long)]
    pub instances: Option<u32>,
    /// Run flowgate's simulators instead of the Hazelcast images (no registry or licence
    /// needed). Without it: hazelcast/hazelcast-flow, hazelcast/management-center-flow and
    /// postgres:15, with MC_LICENSE from the environment or ./.env.
    #[arg(long)]
    pub demo: bool,
    /// Flow's public host name [default: flow.localhost]; MC is served on mc.<domain>.
    #[arg(long)]
    pub domain: Option<String>,
    /// Public port for HTTP [default: 80].
    #[arg(long)]
    pub http_port: Option<u16>,
    /// Public port for HTTPS [default: 443].
    #[arg(long)]
    pub https_port: Option<u16>,
    /// Tag of the Hazelcast Flow and MC images (real profile) [default: latest].
    #[arg(long)]
    pub tag: Option<String>,
}

#[derive(Debug, Args, Default)]
#[command(
    after_help = "Keys: + / - scale, digits then Enter set the count, r restart, d drain, l logs, \
    c certificate, m MC/CORS, D doctor, / filter, Tab panes, ? help, q quit (the deployment keeps running), \
    Q take it down.\n\nExample:\n  flowgate tui --demo --http-port 8080 --https-port 8443"
)]
pub struct TuiArgs {
    #[command(flatten)]
    pub up: UpArgs,
}

#[derive(Debug, Args)]
pub struct DownArgs {
    /// Also remove the volumes (certificates, database) and the project's token.
    #[arg(long)]
    pub volumes: bool,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The instance: flow-N (or N), proxy, mc, or a container name.
    pub instance: String,
    /// Keep printing new lines.
    #[arg(long, short)]
    pub follow: bool,
    /// Lines from the end to start with.
    #[arg(long, default_value_t = 200)]
    pub tail: u32,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Show the certificates the proxy serves: names, issuer, expiry, next renewal, last error.
    Status(CertStatusArgs),
    /// Renew the ACME certificate now if it is due (or always, with --force), and wait for it.
    Renew(CertRenewArgs),
}

#[derive(Debug, Args)]
pub struct CertStatusArgs {
    /// The running proxy's state dir (default: the proxy's default).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CertRenewArgs {
    /// The running proxy's state dir (default: the proxy's default).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Renew even when the certificate is not due.
    #[arg(long)]
    pub force: bool,
    /// How long to wait for the new certificate.
    #[arg(long, value_parser = parse_duration, default_value = "2m")]
    pub timeout: Duration,
    /// Print the new certificate as JSON.
    #[arg(long)]
    pub json: bool,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    duration::parse(text)
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    flowgate proxy --listen 0.0.0.0:8080 --backend 127.0.0.1:9021 --backend 127.0.0.1:9022\n  \
    flowgate proxy --listen 0.0.0.0:80 --domain flow.example.com --backend flow-1:9021 --forwarded-proto https --forwarded-port 443\n  \
    flowgate proxy --config proxy.toml\n\n\
    With no --domain every Host goes to the backends; with domains, other hosts get 404.\n\
    SIGHUP reloads --config without closing connections; SIGTERM drains and exits.")]
pub struct ProxyArgs {
    /// Address to accept clients on (repeatable), e.g. 0.0.0.0:80.
    #[arg(long)]
    pub listen: Vec<SocketAddr>,
    /// Backend address host:port (repeatable); names are resolved when connecting.
    #[arg(long)]
    pub backend: Vec<String>,
    /// Host name to route (repeatable; `*.example.com` allowed). Default: every host.
    #[arg(long)]
    pub domain: Vec<String>,
    /// Terminate TLS: `self-signed` (a local CA in the state dir; clients trust
    /// <state-dir>/ca.pem), `files` (--cert and --key) or `acme` (Let's Encrypt
    /// or --acme-directory; needs --domain).
    #[arg(long, value_enum, requires = "tls_listen")]
    pub tls: Option<TlsModeName>,
    /// Address to accept TLS clients on (repeatable), e.g. 0.0.0.0:443.
    #[arg(long, requires = "tls")]
    pub tls_listen: Vec<SocketAddr>,
    /// PEM certificate chain, server certificate first (with --tls files).
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    /// PEM private key of the certificate (with --tls files).
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
    /// ACME directory: `production` or `staging` (Let's Encrypt), or a URL.
    #[arg(long, default_value = "production")]
    pub acme_directory: String,
    /// Contact e-mail for the ACME account (expiry notices).
    #[arg(long)]
    pub acme_email: Option<String>,
    /// CA bundle to trust for the ACME server itself (a private CA, Pebble).
    #[arg(long)]
    pub acme_ca: Option<PathBuf>,
    /// How the CA validates the domains: http-01 (port 80) or tls-alpn-01 (port 443).
    #[arg(long, value_enum, default_value = "http-01")]
    pub acme_challenge: crate::tls::acme::ChallengeKind,
    /// Renew this long before expiry (default: when a third of the lifetime is left).
    #[arg(long, value_parser = parse_duration)]
    pub renew_before: Option<Duration>,
    /// Do not redirect plain-HTTP requests to HTTPS.
    #[arg(long)]
    pub no_redirect: bool,
    /// HTTPS port named in redirects (default: the first --tls-listen port).
    #[arg(long)]
    pub redirect_port: Option<u16>,
    /// Admin API address [default: 127.0.0.1:9901]; `off` disables it.
    #[arg(long)]
    pub admin: Option<String>,
    /// File holding the admin API's bearer token (default: generated in the state dir).
    #[arg(long)]
    pub admin_token_file: Option<PathBuf>,
    /// Where the admin token, backend list and runtime info live.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// How to spread requests over backends.
    #[arg(long, value_enum, default_value = "round-robin")]
    pub balance: Balance,
    /// Name of a cookie that keeps a browser on one backend.
    #[arg(long)]
    pub sticky_cookie: Option<String>,
    /// Health check path on every backend.
    #[arg(long, default_value = crate::config::proxy::FLOW_HEALTH_PATH)]
    pub health_path: String,
    /// Do not health-check backends (they count as healthy).
    #[arg(long)]
    pub no_health_check: bool,
    /// Time between health checks.
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    pub health_interval: Duration,
    /// Value of X-Forwarded-Proto sent to backends (default: the listener's scheme).
    #[arg(long)]
    pub forwarded_proto: Option<String>,
    /// Value of X-Forwarded-Port sent to backends (default: the listener's port).
    #[arg(long)]
    pub forwarded_port: Option<u16>,
    /// Close WebSocket sessions idle this long; must exceed --heartbeat-interval.
    #[arg(long, value_parser = parse_duration, default_value = "1h")]
    pub idle_timeout: Duration,
    /// The clients' heartbeat interval (Flow UI: 5s).
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub heartbeat_interval: Duration,
    /// Text that marks a WebSocket text message as a heartbeat (repeatable).
    #[arg(long, default_value = "heartbeat")]
    pub heartbeat_pattern: Vec<String>,
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// Limits and timeouts of `flowgate proxy`. Each one overrides the same
/// setting under `[limits]` in the --config file; unset, the file's value or
/// the default (README, "Limits and timeouts") applies.
#[derive(Debug, Args, Default)]
#[command(next_help_heading = "Limits and timeouts")]
pub struct LimitArgs {
    /// Client connections open at once; a WebSocket session counts until it
    /// closes. Further clients wait for a slot [default: 50000].
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// Client connections open at once from one address (0: no limit);
    /// beyond it that address's new connections are refused [default: 1000].
    #[arg(long)]
    pub max_connections_per_ip: Option<usize>,
    /// Time a client has to send a request head (408 after) [default: 10s].
    #[arg(long, value_parser = parse_duration)]
    pub header_timeout: Option<Duration>,
    /// How long SIGTERM waits for requests and sessions [default: 10s].
    #[arg(long, value_parser = parse_duration)]
    pub shutdown_grace: Option<Duration>,
    /// A request body that sends no byte for this long gets 408 [default: 60s].
    #[arg(long, value_parser = parse_duration)]
    pub body_timeout: Option<Duration>,
    /// Slowest average request body accepted after --body-timeout, in bytes/s;
    /// 0 turns it off [default: 500].
    #[arg(long)]
    pub body_min_rate: Option<u64>,
    /// A client that accepts no byte for this long while the proxy has data
    /// for it is disconnected (responses and WebSocket sessions) [default: 60s].
    #[arg(long, value_parser = parse_duration)]
    pub write_timeout: Option<Duration>,
    /// How long a backend has to send a response head (504 after) [default: 60s].
    #[arg(long, value_parser = parse_duration)]
    pub upstream_timeout: Option<Duration>,
    /// Close client connections with no request in flight after this long [default: 75s].
    #[arg(long, value_parser = parse_duration)]
    pub keepalive_timeout: Option<Duration>,
    /// HTTP/2 streams one client connection may have open [default: 100].
    #[arg(long)]
    pub max_concurrent_streams: Option<u32>,
    /// HTTP connections to one backend at most; further requests wait up to
    /// the connect timeout, then get 503 [default: 1024].
    #[arg(long)]
    pub max_upstream_connections: Option<usize>,
    /// A peer (CIDR or address, repeatable) whose X-Forwarded-*, Forwarded and
    /// X-Real-IP headers are believed; from any other peer they are removed
    /// [default: none].
    #[arg(long, value_parser = crate::config::proxy::Cidr::parse)]
    pub trusted_proxy: Vec<crate::config::proxy::Cidr>,
    /// A peer (CIDR, address, or `gateway` for this machine's default
    /// gateway, which in a container is where every client on the host comes
    /// from) not held to --max-connections-per-ip (repeatable) [default: none].
    #[arg(long)]
    pub per_ip_exempt: Vec<String>,
}

impl LimitArgs {
    /// Sets every limit given on the command line.
    pub fn apply(&self, limits: &mut Limits) -> Result<(), ConfigError> {
        fn set<T: Clone>(flag: &Option<T>, field: &mut T) {
            if let Some(value) = flag {
                *field = value.clone();
            }
        }
        set(&self.max_connections, &mut limits.max_connections);
        set(&self.max_connections_per_ip, &mut limits.max_connections_per_ip);
        set(&self.header_timeout, &mut limits.header_read_timeout);
        set(&self.shutdown_grace, &mut limits.shutdown_grace);
        set(&self.body_timeout, &mut limits.body_read_timeout);
        set(&self.body_min_rate, &mut limits.body_min_rate);
        set(&self.write_timeout, &mut limits.write_timeout);
        set(&self.upstream_timeout, &mut limits.upstream_timeout);
        set(&self.keepalive_timeout, &mut limits.keepalive_timeout);
        set(&self.max_concurrent_streams, &mut limits.max_concurrent_streams);
        set(&self.max_upstream_connections, &mut limits.max_upstream_connections);
        if !self.trusted_proxy.is_empty() {
            limits.trusted_proxies = self.trusted_proxy.clone();
        }
        if !self.per_ip_exempt.is_empty() {
            limits.per_ip_exempt.clear();
            limits.exempt_gateway = false;
            for entry in &self.per_ip_exempt {
                if entry == "gateway" {
                    limits.exempt_gateway = true;
                } else {
                    let cidr = crate::config::proxy::Cidr::parse(entry)
                        .map_err(|e| ConfigError::new(format!("--per-ip-exempt: {e}")))?;
                    limits.per_ip_exempt.push(cidr);
                }
            }
        }
        limits
            .check()
            .map_err(|e| ConfigError::new(e.replace('_', "-")).with_hint("see flowgate proxy --help"))
    }
}

#[derive(Debug, Subcommand)]
pub enum SimCommand {
    /// Simulate a Flow server: health, whoami, WebSocket echo with heartbeat counting.
    Flow(SimFlowArgs),
    /// Simulate Management Center: health and the CORS of hazelcast.mc.flow.addresses.
    Mc(SimMcArgs),
}

#[derive(Debug, Args)]
pub struct SimFlowArgs {
    /// Address to listen on (Flow's port is 9021).
    #[arg(long, default_value = "0.0.0.0:9021")]
    pub listen: SocketAddr,
    /// Instance name, reported by /api/sim/whoami.
    #[arg(long, env = "FLOWGATE_SIM_NAME", default_value = "flow-1")]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct SimMcArgs {
    /// Address to listen on (MC's port is 8080).
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Allowed Flow origins, comma-separated; default: -Dhazelcast.mc.flow.addresses from JAVA_OPTS.
    #[arg(long)]
    pub flow_addresses: Option<String>,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  flowgate loadgen --url http://127.0.0.1:8080 --ws-clients 1000 --rps 200 --duration 30s --json"
)]
pub struct LoadgenArgs {
    /// Base URL of the deployment (http://, https://, ws:// or wss://).
    #[arg(long)]
    pub url: String,
    /// WebSocket sessions to hold open.
    #[arg(long, default_value_t = 10)]
    pub ws_clients: usize,
    /// Heartbeat interval of each session.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub heartbeat: Duration,
    /// Send heartbeats as this text message instead of WebSocket pings.
    #[arg(long)]
    pub heartbeat_text: Option<String>,
    /// HTTP requests per second (GET of --http-path), 0 for none.
    #[arg(long, default_value_t = 10.0)]
    pub rps: f64,
    /// How long to run.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub duration: Duration,
    /// Path of the WebSocket endpoint.
    #[arg(long, default_value = "/api/sim/ws")]
    pub ws_path: String,
    /// Path requested by the HTTP load.
    #[arg(long, default_value = "/api/sim/whoami")]
    pub http_path: String,
    /// Host header to send (default: the URL's host).
    #[arg(long)]
    pub host: Option<String>,
    /// Send to ADDR for HOST:PORT, like curl's --resolve.
    #[arg(long)]
    pub resolve: Vec<String>,
    /// Trust the CA certificates in this PEM file for https:// and wss://
    /// (a flowgate local CA: <state-dir>/ca.pem). Default: the system's roots.
    #[arg(long, conflicts_with = "insecure")]
    pub ca: Option<PathBuf>,
    /// Accept any server certificate (test servers only).
    #[arg(long)]
    pub insecure: bool,
    /// Reconnect sessions the server closes (as the Flow UI does).
    #[arg(long)]
    pub reconnect: bool,
    /// Spread sessions over this many source addresses 127.0.0.x (loopback targets only).
    #[arg(long, default_value_t = 16)]
    pub source_addresses: u8,
    /// How many sessions may be opening at once.
    #[arg(long, default_value_t = 200)]
    pub connect_concurrency: usize,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

impl ProxyArgs {
    /// The proxy configuration these arguments describe: the file given with
    /// --config (with --state-dir and --admin still applying), or the quick flags.
    pub fn to_config(&self, file: Option<&Path>) -> Result<ProxyConfig, ConfigError> {
        if file.is_some() {
            let mixed = [
                (!self.listen.is_empty(), "--listen"),
                (!self.backend.is_empty(), "--backend"),
                (!self.domain.is_empty(), "--domain"),
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
            None => self.quick_config()?,
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

    fn quick_config(&self) -> Result<ProxyConfig, ConfigError> {
        let mut service = Service::new(proxy::DEFAULT_SERVICE);
        for address in &self.backend {
            proxy::check_backend_address(address).map_err(|e| ConfigError::new(format!("--backend: {e}")))?;
            if service.backends.iter().any(|b| &b.address == address) {
                return Err(ConfigError::new(format!("--backend {address} is given twice")));
            }
            service.backends.push(BackendSpec {
                id: address.clone(),
                address: address.clone(),
            });
        }
        service.balance = self.balance;
        service.sticky_cookie = self.sticky_cookie.clone();
        service.forwarded_proto = self.forwarded_proto.clone();
        service.forwarded_port = self.forwarded_port;
        service.health = (!self.no_health_check).then(|| HealthCheck {
            path: self.health_path.clone(),
            interval: self.health_interval,
            ..HealthCheck::flow_default()
        });
        service.websocket.idle_timeout = self.idle_timeout;
        service.websocket.heartbeat_interval = self.heartbeat_interval;
        service.websocket.heartbeat_patterns = self.heartbeat_pattern.clone();
        let hosts = if self.domain.is_empty() {
            vec![HostMatch::Any]
        } else {
            self.domain
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
                let mode = match (name, &self.cert, &self.key) {
                    (TlsModeName::SelfSigned, None, None) => TlsMode::SelfSigned,
                    (TlsModeName::Acme, None, None) => TlsMode::Acme(crate::tls::acme::AcmeSettings {
                        directory: self.acme_directory.clone(),
                        email: self.acme_email.clone(),
                        ca: self.acme_ca.clone(),
                        challenge: self.acme_challenge,
                        renew_before: self.renew_before,
                    }),
                    (TlsModeName::Acme, _, _) => {
                        return Err(ConfigError::new("--cert and --key go with --tls files, not --tls acme"));
                    }
                    (TlsModeName::SelfSigned, _, _) => {
                        return Err(ConfigError::new(
                            "--cert and --key go with --tls files, not --tls self-signed",
                        ));
                    }
                    (TlsModeName::Files, Some(cert), Some(key)) => TlsMode::Files {
                        cert: cert.clone(),
                        key: key.clone(),
                    },
                    (TlsModeName::Files, _, _) => {
                        return Err(ConfigError::new("--tls files needs --cert FILE and --key FILE")
                            .with_hint("--cert fullchain.pem --key privkey.pem"));
                    }
                };
                Some(TlsSettings {
                    listen: self.tls_listen.clone(),
                    mode,
                    domains: Vec::new(),
                    redirect_http: !self.no_redirect,
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

/// Prints command output to stdout. A reader that went away (`| head`)
/// ends the output quietly instead of panicking as `println!` does.
pub fn print(text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}
