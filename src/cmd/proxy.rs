//! `flowgate proxy`: the load balancer alone, from flags or a TOML file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use flowgate::config::proxy::{self, AcmeSettings, Balance, ChallengeKind, TlsModeName};
use flowgate::config::quick::{LimitOverrides, ProxyFlags};

use super::parse_duration;

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
    /// A name whose addresses are the backends, resolved every second: new
    /// ones are added once healthy, vanished ones drained (`tasks.flow:9021`
    /// on Docker Swarm, a network alias on one engine).
    #[arg(long)]
    pub discover: Option<String>,
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
    pub acme_challenge: ChallengeKind,
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
    #[arg(long, default_value = proxy::FLOW_HEALTH_PATH)]
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
    /// A backend that sends no byte of a response body for this long: the
    /// client's answer is cut off and the backend connection closed; a body
    /// that keeps streaming runs on [default: 5m].
    #[arg(long, value_parser = parse_duration)]
    pub upstream_body_timeout: Option<Duration>,
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
    #[arg(long, value_parser = proxy::Cidr::parse)]
    pub trusted_proxy: Vec<proxy::Cidr>,
    /// A peer (CIDR, address, or `gateway` for this machine's default
    /// gateway, which in a container is where every client on the host comes
    /// from) not held to --max-connections-per-ip (repeatable) [default: none].
    #[arg(long)]
    pub per_ip_exempt: Vec<String>,
}

impl LimitArgs {
    fn overrides(self) -> LimitOverrides {
        LimitOverrides {
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            header_read_timeout: self.header_timeout,
            shutdown_grace: self.shutdown_grace,
            body_read_timeout: self.body_timeout,
            body_min_rate: self.body_min_rate,
            write_timeout: self.write_timeout,
            upstream_timeout: self.upstream_timeout,
            upstream_body_timeout: self.upstream_body_timeout,
            keepalive_timeout: self.keepalive_timeout,
            max_concurrent_streams: self.max_concurrent_streams,
            max_upstream_connections: self.max_upstream_connections,
            trusted_proxies: self.trusted_proxy,
            per_ip_exempt: self.per_ip_exempt,
        }
    }
}

impl ProxyArgs {
    fn flags(self) -> ProxyFlags {
        ProxyFlags {
            listen: self.listen,
            backends: self.backend,
            discover: self.discover,
            domains: self.domain,
            tls: self.tls,
            tls_listen: self.tls_listen,
            cert: self.cert,
            key: self.key,
            acme: AcmeSettings {
                directory: self.acme_directory,
                email: self.acme_email,
                ca: self.acme_ca,
                challenge: self.acme_challenge,
                renew_before: self.renew_before,
            },
            redirect_http: !self.no_redirect,
            redirect_port: self.redirect_port,
            admin: self.admin,
            admin_token_file: self.admin_token_file,
            state_dir: self.state_dir,
            balance: self.balance,
            sticky_cookie: self.sticky_cookie,
            health: (!self.no_health_check).then_some((self.health_path, self.health_interval)),
            forwarded_proto: self.forwarded_proto,
            forwarded_port: self.forwarded_port,
            idle_timeout: self.idle_timeout,
            heartbeat_interval: self.heartbeat_interval,
            heartbeat_patterns: self.heartbeat_pattern,
            limits: self.limits.overrides(),
        }
    }
}

pub async fn run(args: ProxyArgs, file: Option<&Path>) -> anyhow::Result<()> {
    let config = args.flags().to_config(file)?;
    flowgate::proxy::run::run(config).await?;
    Ok(())
}
