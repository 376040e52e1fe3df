//! `flowgate doctor`: checks a running Flow deployment, whatever load
//! balancer serves it, against each rule of the Flow load-balancing guide,
//! from the outside, as a browser and the Flow UI would meet it.
//!
//! The checks other than `certificate` accept any certificate, so one
//! certificate problem does not hide the rest of the picture.

pub mod rules;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::deploy::DeployError;
use crate::monitor::probe;
use crate::net::{self as target, NetError, Stream, Target, Trust};
use crate::tls::{CertInfo, Source};
use crate::websocket::frame::Opcode;
use crate::websocket::peer::{self, Peer};
use rules::{Context, Fix, Rule};

/// A certificate with fewer days left fails: renewal should have happened.
const EXPIRY_DAYS: i64 = 14;
const REQUEST_LIMIT: Duration = Duration::from_secs(10);
/// flowgate's simulator echoes the headers Flow receives here.
const WHOAMI: &str = "/api/sim/whoami";

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
    Skip,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub id: &'static str,
    pub rule: &'static str,
    pub status: Status,
    pub observed: String,
    /// Figures behind `observed`, for scripts (idle timeout, instance counts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub measured: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<Fix>,
}

impl Check {
    fn measured(mut self, value: serde_json::Value) -> Check {
        self.measured = Some(value);
        self
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub url: String,
    pub passed: bool,
    pub checks: Vec<Check>,
}

impl Report {
    /// The ids of the checks that failed.
    pub fn failed(&self) -> Vec<&'static str> {
        self.checks
            .iter()
            .filter(|c| c.status == Status::Fail)
            .map(|c| c.id)
            .collect()
    }
}

/// What to check and how long to watch.
#[derive(Debug, Clone)]
pub struct Options {
    /// The Flow URL users open; `None`: the project's deployment on this machine.
    pub url: Option<String>,
    /// Management Center's URL; its CORS preflight from the Flow origin is checked.
    pub mc_url: Option<String>,
    /// CA certificates to trust instead of the system's roots.
    pub ca: Option<std::path::PathBuf>,
    /// curl-style HOST:PORT:ADDR entries.
    pub resolve: Vec<String>,
    /// The plain-HTTP port that must redirect [default: 80, or the local deployment's].
    pub http_port: Option<u16>,
    /// A path where Flow accepts WebSockets.
    pub ws_path: String,
    /// The Flow UI's heartbeat interval.
    pub heartbeat: Duration,
    /// How long a silent session is watched to find the idle timeout.
    pub idle_wait: Duration,
    /// Requests sent to see how many instances answer.
    pub requests: u32,
}

impl Options {
    /// The local deployment, watched for at most `idle_wait` (the dashboard's `D`).
    pub fn local(idle_wait: Duration) -> Options {
        Options {
            url: None,
            mc_url: None,
            ca: None,
            resolve: Vec::new(),
            http_port: None,
            ws_path: "/".into(),
            heartbeat: crate::config::proxy::FLOW_HEARTBEAT,
            idle_wait,
            requests: 12,
        }
    }
}

/// Why the checks could not start (a failed check is in the report instead).
#[derive(Debug, thiserror::Error)]
pub enum DoctorError {
    #[error("no --url given, and Docker is not reachable to find the local deployment: {0}")]
    NoDocker(DeployError),
    #[error("no --url given, and no deployment of project '{project}' runs here; pass --url (or --project)")]
    NoDeployment { project: String },
    #[error("reading the local deployment: {0}")]
    Deploy(#[from] DeployError),
    #[error("--url '{url}' must be an https:// (or http://) URL with a host")]
    Url { url: String },
    #[error("--heartbeat must be at least 100ms (the Flow UI's is 5s)")]
    Heartbeat,
    #[error("--requests must be at least 1 (2 or more to see the spread over instances)")]
    Requests,
    #[error(transparent)]
    Net(#[from] NetError),
}

/// What the checks connect to.
struct Setup {
    /// The Flow URL, verifying the certificate.
    verified: Target,
    /// The Flow URL, any certificate.
    any_cert: Target,
    /// Plain HTTP on the same host.
    http: Result<Target, NetError>,
    secure: bool,
    host: String,
    http_port: u16,
    context: Context,
    resolve: Vec<String>,
    trust: Trust,
}

impl Setup {
    fn check(&self, rule: Rule, status: Status, observed: impl Into<String>) -> Check {
        Check {
            id: rule.id(),
            rule: rule.text(),
            status,
            observed: observed.into(),
            measured: None,
            fix: (status == Status::Fail).then(|| rule.fix(&self.context)),
        }
    }
}

/// Where progress lines go: stderr for the command, nowhere in the dashboard.
pub type Say = dyn Fn(&str) + Sync;

/// Runs every check: on `options.url`, or without one on the project's
/// deployment on this machine. Progress goes to `say`.
pub async fn check(project: &str, options: Options, say: &Say) -> Result<Report, DoctorError> {
    let options = match options.url {
        Some(_) => options,
        None => local_deployment(project, options, say).await?,
    };
    let setup = setup(&options)?;
    Ok(examine(&setup, &options, say).await)
}

/// Without --url: the project's deployment on this machine, reached on
/// loopback when its names are `*.localhost`, trusting its local CA.
async fn local_deployment(project: &str, mut args: Options, say: &Say) -> Result<Options, DoctorError> {
    let docker = crate::deploy::connect().await.map_err(DoctorError::NoDocker)?;
    let running = crate::deploy::command::Running::read(&docker, project).await?;
    let Some(dep) = running.settings else {
        return Err(DoctorError::NoDeployment {
            project: project.into(),
        });
    };
    args.url = Some(dep.flow_origin());
    args.mc_url = args.mc_url.or_else(|| Some(dep.mc_origin()));
    args.http_port = args.http_port.or(Some(dep.http_port));
    let ca = crate::deploy::settings::project_dir(project).join("ca.pem");
    if args.ca.is_none() && dep.tls.mode == crate::config::deployment::CertMode::SelfSigned && ca.exists() {
        args.ca = Some(ca);
    }
    for name in [&dep.domain, &dep.mc_domain] {
        if name == "localhost" || name.ends_with(".localhost") {
            args.resolve.push(format!("{name}:{}:127.0.0.1", dep.https_port));
        }
    }
    say(&format!(
        "doctor: checking project {project}: {} (MC {})",
        dep.flow_origin(),
        dep.mc_origin()
    ));
    Ok(args)
}

fn setup(args: &Options) -> Result<Setup, DoctorError> {
    let url = args.url.as_deref().unwrap_or_default();
    let bad_url = || DoctorError::Url { url: url.into() };
    let http_port = args.http_port.unwrap_or(80);
    let uri: hyper::Uri = url.parse().map_err(|_| bad_url())?;
    let secure = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(bad_url()),
    };
    let host = uri.host().ok_or_else(bad_url)?.to_ascii_lowercase();
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    if args.heartbeat < Duration::from_millis(100) {
        return Err(DoctorError::Heartbeat);
    }
    if args.requests == 0 {
        return Err(DoctorError::Requests);
    }
    let trust = args.ca.clone().map_or(Trust::System, Trust::File);
    let resolve = with_http_port(&args.resolve, &host, http_port);
    let verified = Target::parse(url, None, &resolve, &trust)?;
    let any_cert = Target::parse(url, None, &resolve, &Trust::Insecure)?;
    let http = Target::parse(&http_url(&host, http_port, "/"), None, &resolve, &Trust::Insecure);
    let origin = crate::deploy::settings::origin(&host, port);
    Ok(Setup {
        verified,
        any_cert,
        http,
        secure,
        host: host.clone(),
        http_port,
        context: Context {
            domain: host,
            port,
            origin,
            heartbeat_secs: args.heartbeat.as_secs().max(1),
        },
        resolve,
        trust,
    })
}

/// `http://host[:port]path`, the port left out when it is 80.
fn http_url(host: &str, port: u16, path: &str) -> String {
    if port == 80 {
        format!("http://{host}{path}")
    } else {
        format!("http://{host}:{port}{path}")
    }
}

/// `--resolve` entries plus one for the HTTP port when only another port of
/// the same host was given: a redirect check then reaches the same balancer.
fn with_http_port(entries: &[String], host: &str, http_port: u16) -> Vec<String> {
    let mut out = entries.to_vec();
    let for_host = |e: &&String| e.split(':').next().is_some_and(|h| h.eq_ignore_ascii_case(host));
    let has_http = entries
        .iter()
        .filter(for_host)
        .any(|e| e.split(':').nth(1) == Some(&http_port.to_string()));
    if !has_http {
        if let Some(addr) = entries.iter().find(for_host).and_then(|e| e.splitn(3, ':').nth(2)) {
            out.push(format!("{host}:{http_port}:{addr}"));
        }
    }
    out
}

async fn examine(setup: &Setup, args: &Options, say: &Say) -> Report {
    let mut checks = vec![certificate(setup, args.mc_url.as_deref()).await, redirect(setup).await];
    let handshake = open_session(setup, &args.ws_path).await;
    checks.push(match &handshake {
        Ok((_, took)) => setup.check(
            Rule::WebsocketUpgrade,
            Status::Pass,
            format!("101 Switching Protocols on {} in {} ms", args.ws_path, took.as_millis()),
        ),
        Err(e) => setup.check(Rule::WebsocketUpgrade, Status::Fail, e.clone()),
    });
    let opened = handshake.is_ok();
    // The sessions run while the quick checks go on.
    let sessions = async {
        match handshake {
            Ok((silent, _)) => {
                let beating = open_session(setup, &args.ws_path).await.map(|(p, _)| p);
                Some(sessions(setup, silent, beating, args.heartbeat, args.idle_wait).await)
            }
            Err(_) => None,
        }
    };
    let quick = async {
        let mut quick = whoami(setup, args.requests).await;
        quick.push(host_routing(setup).await);
        quick.push(mc_cors(setup, args.mc_url.as_deref()).await);
        quick
    };
    if opened {
        say(&format!(
            "doctor: watching a silent WebSocket session for up to {} s to find the idle timeout, beside one that \
             heartbeats every {} s",
            args.idle_wait.as_secs(),
            args.heartbeat.as_secs()
        ));
    }
    let (sessions, quick) = tokio::join!(sessions, quick);
    let mut quick = quick.into_iter();
    checks.extend(quick.by_ref().take(3));
    match sessions {
        Some((idle, beat)) => checks.extend([idle, beat]),
        None => {
            for rule in [Rule::IdleTimeout, Rule::HeartbeatSession] {
                checks.push(setup.check(rule, Status::Skip, "no WebSocket session could be opened"));
            }
        }
    }
    checks.extend(quick);
    Report {
        url: args.url.clone().unwrap_or_default(),
        passed: checks.iter().all(|c| c.status != Status::Fail),
        checks,
    }
}

/// The certificates of Flow's domain and, when its URL is https, MC's.
async fn certificate(setup: &Setup, mc_url: Option<&str>) -> Check {
    let rule = Rule::Certificate;
    if !setup.secure {
        return setup.check(
            rule,
            Status::Fail,
            "the URL is plain http://: Flow must be served over HTTPS, with TLS ending at the load balancer",
        );
    }
    let mut seen = Vec::new();
    let flow = inspect_certificate(setup, &setup.verified, &setup.any_cert, &setup.host).await;
    let mut failed = flow.is_err();
    seen.push(flow.unwrap_or_else(|e| e));
    if let Some(mc_url) = mc_url.filter(|u| u.starts_with("https://")) {
        let mc_host = mc_url
            .parse::<hyper::Uri>()
            .ok()
            .and_then(|u| u.host().map(str::to_string))
            .unwrap_or_default();
        let targets = Target::parse(mc_url, None, &setup.resolve, &setup.trust)
            .and_then(|v| Ok((v, Target::parse(mc_url, None, &setup.resolve, &Trust::Insecure)?)));
        let mc = match targets {
            Ok((verified, any_cert)) => inspect_certificate(setup, &verified, &any_cert, &mc_host).await,
            Err(e) => Err(format!("{mc_url}: {e:#}")),
        };
        failed |= mc.is_err();
        seen.push(mc.unwrap_or_else(|e| e));
    }
    let status = if failed { Status::Fail } else { Status::Pass };
    setup.check(rule, status, seen.join("; "))
}

/// What the certificate `host` presents looks like, or why it fails.
async fn inspect_certificate(
    setup: &Setup,
    verified: &Target,
    any_cert: &Target,
    host: &str,
) -> Result<String, String> {
    let presented = |stream: &Stream| match stream {
        Stream::Tls(tls) => tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| CertInfo::inspect(leaf.as_ref(), Source::Files).ok()),
        Stream::Plain(_) => None,
    };
    let connected = tokio::time::timeout(REQUEST_LIMIT, target::connect(verified, None))
        .await
        .map_err(|_| format!("{host}: no TLS handshake within 10 s"))?;
    match connected {
        Ok(stream) => {
            let info = presented(&stream).ok_or_else(|| format!("{host}: the server sent no certificate"))?;
            let days = (info.not_after_unix - crate::clock::now_unix()) / 86_400;
            let summary = format!(
                "{host}: valid, issued by {}, expires {} ({days} days left)",
                info.issuer,
                date(&info.not_after)
            );
            if days < EXPIRY_DAYS {
                Err(format!(
                    "{summary}: under {EXPIRY_DAYS} days, so renewal is not happening"
                ))
            } else {
                Ok(summary)
            }
        }
        Err(error) => {
            let shown = match tokio::time::timeout(REQUEST_LIMIT, target::connect(any_cert, None)).await {
                Ok(Ok(stream)) => presented(&stream).map(|info| {
                    format!(
                        " (it names {}, is issued by {}, expires {})",
                        info.domains.join(", "),
                        info.issuer,
                        date(&info.not_after)
                    )
                }),
                _ => None,
            };
            let hint = match (&setup.trust, error.to_string().contains("UnknownIssuer")) {
                (Trust::System, true) => "; a private CA needs --ca FILE",
                _ => "",
            };
            Err(format!(
                "{host}: {}{}{hint}",
                tls_failure(&error.to_string(), host),
                shown.unwrap_or_default()
            ))
        }
    }
}

/// rustls' verification errors in words.
fn tls_failure(error: &str, host: &str) -> String {
    let known = [
        (
            "UnknownIssuer",
            "the certificate is signed by a CA that is not trusted".to_string(),
        ),
        ("NotValidForName", format!("the certificate does not name {host}")),
        ("Expired", "the certificate has expired".to_string()),
        ("NotValidYet", "the certificate is not valid yet".to_string()),
        ("Revoked", "the certificate is revoked".to_string()),
        (
            "CaUsedAsEndEntity",
            "the server presents a CA certificate as its own (self-signed with CA:TRUE)".to_string(),
        ),
    ];
    known
        .into_iter()
        .find(|(needle, _)| error.contains(needle))
        .map(|(_, words)| words)
        .unwrap_or_else(|| format!("the TLS handshake failed: {error}"))
}

/// A deep link, so the redirect is seen to keep the path and query.
const REDIRECT_PROBE: &str = "/flowgate-doctor/redirect?probe=1";

async fn redirect(setup: &Setup) -> Check {
    let rule = Rule::HttpsRedirect;
    let url = http_url(&setup.host, setup.http_port, REDIRECT_PROBE);
    let target = match &setup.http {
        Ok(target) => target,
        Err(e) => return setup.check(rule, Status::Fail, format!("{url}: {e:#}")),
    };
    let reply = match crate::net::request(target, hyper::Method::GET, REDIRECT_PROBE, &[], REQUEST_LIMIT).await {
        Ok(reply) => reply,
        Err(e) => {
            return setup.check(
                rule,
                Status::Fail,
                format!("nothing answers {url} ({e:#}): users who type the domain get an error"),
            );
        }
    };
    let location = reply.header("location").unwrap_or_default().to_string();
    let origin = &setup.context.origin;
    let wanted = format!("{origin}{REDIRECT_PROBE}");
    let to_https = location == *origin || location.starts_with(&format!("{origin}/"));
    match reply.status {
        301 | 302 | 307 | 308 if location == wanted => {
            setup.check(rule, Status::Pass, format!("{url} -> {} {location}", reply.status))
        }
        301 | 302 | 307 | 308 if to_https => setup.check(
            rule,
            Status::Fail,
            format!(
                "{url} redirects ({}) to '{location}': HTTPS, but without the path and query, so links \
                 to Flow pages land on the start page",
                reply.status
            ),
        ),
        301 | 302 | 303 | 307 | 308 => setup.check(
            rule,
            Status::Fail,
            format!("{url} redirects ({}) to '{location}', not to {wanted}", reply.status),
        ),
        status => setup.check(
            rule,
            Status::Fail,
            format!("{url} answered {status} over plain HTTP instead of redirecting to {wanted}"),
        ),
    }
}

/// Opens a WebSocket session through the balancer; the error is what was
/// seen instead of `101 Switching Protocols`.
async fn open_session(setup: &Setup, path: &str) -> Result<(Peer<Stream>, Duration), String> {
    let started = Instant::now();
    let attempt = async {
        let stream = target::connect(&setup.any_cert, None)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", setup.any_cert.addr))?;
        peer::connect(
            stream,
            &setup.any_cert.host_header,
            path,
            &[("Origin", &setup.context.origin)],
        )
        .await
        .map_err(|e| format!("{e} (a balancer that drops the Upgrade header sends a plain GET to Flow)"))
    };
    match tokio::time::timeout(REQUEST_LIMIT, attempt).await {
        Ok(Ok(peer)) => Ok((peer, started.elapsed())),
        Ok(Err(e)) => Err(e),
        Err(_) => Err("no answer to the WebSocket handshake within 10 s".into()),
    }
}

/// `forwarded-headers` and `instances`, from what the simulator's whoami
/// reports: the headers it received and its name.
async fn whoami(setup: &Setup, requests: u32) -> Vec<Check> {
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    let mut first_headers: Option<BTreeMap<String, String>> = None;
    for _ in 0..requests {
        let reply = crate::net::request(&setup.any_cert, hyper::Method::GET, WHOAMI, &[], REQUEST_LIMIT).await;
        let parsed = reply.as_ref().ok().and_then(|r| {
            (r.status == 200)
                .then(|| serde_json::from_slice::<serde_json::Value>(&r.body).ok())
                .flatten()
        });
        let Some(body) = parsed else {
            let (status, observed) = match reply {
                Ok(r) if r.status == 404 => (
                    Status::Skip,
                    format!(
                        "{WHOAMI} answered 404: the instances are not flowgate's simulator, whose echo this check reads"
                    ),
                ),
                Ok(r) => (
                    Status::Fail,
                    format!("{WHOAMI} answered {} without the simulator's JSON", r.status),
                ),
                Err(e) => (Status::Fail, format!("{WHOAMI} failed: {e:#}")),
            };
            return [Rule::ForwardedHeaders, Rule::Instances]
                .into_iter()
                .map(|rule| setup.check(rule, status, observed.clone()))
                .collect();
        };
        let instance = body["instance"].as_str().unwrap_or("?").to_string();
        *seen.entry(instance).or_default() += 1;
        if first_headers.is_none() {
            first_headers = serde_json::from_value(body["headers"].clone()).ok();
        }
    }
    let headers = first_headers.unwrap_or_default();
    let proto = headers.get("x-forwarded-proto").map(String::as_str);
    let port = headers.get("x-forwarded-port").map(String::as_str);
    let expected_port = setup.context.port.to_string();
    let shown = |v: Option<&str>| v.map_or("(absent)".to_string(), str::to_string);
    let observed = format!(
        "Flow received X-Forwarded-Proto: {}, X-Forwarded-Port: {}",
        shown(proto),
        shown(port)
    );
    let forwarded = if proto == Some("https") && port == Some(expected_port.as_str()) {
        setup.check(Rule::ForwardedHeaders, Status::Pass, observed)
    } else {
        setup.check(
            Rule::ForwardedHeaders,
            Status::Fail,
            format!("{observed}; expected https and {expected_port}"),
        )
    };
    let spread = seen
        .iter()
        .map(|(name, n)| format!("{name} x{n}"))
        .collect::<Vec<_>>()
        .join(", ");
    let instances = if seen.len() > 1 {
        setup.check(
            Rule::Instances,
            Status::Pass,
            format!("{requests} requests reached {} instances ({spread})", seen.len()),
        )
    } else {
        setup.check(
            Rule::Instances,
            Status::Fail,
            format!("all {requests} requests reached one instance ({spread})"),
        )
    }
    .measured(serde_json::json!({ "requests_per_instance": seen }));
    vec![forwarded, instances]
}

/// A name the balancer cannot have been configured for.
const FOREIGN_HOST: &str = "flowgate-doctor.invalid";

/// A request for another name, on a connection made for the domain (same
/// SNI), must not reach Flow: Flow's health endpoint must not answer it.
async fn host_routing(setup: &Setup) -> Check {
    let rule = Rule::HostRouting;
    let path = crate::config::proxy::FLOW_HEALTH_PATH;
    let answer = crate::net::request(
        &setup.any_cert,
        hyper::Method::GET,
        path,
        &[("host", FOREIGN_HOST)],
        REQUEST_LIMIT,
    )
    .await;
    match answer {
        Ok(reply) if reply.status == 200 && String::from_utf8_lossy(&reply.body).contains("UP") => setup.check(
            rule,
            Status::Fail,
            format!(
                "GET {path} for Host: {FOREIGN_HOST} reached Flow (200, its health answer): the balancer forwards \
                 any name to Flow"
            ),
        ),
        Ok(reply) => setup.check(
            rule,
            Status::Pass,
            format!(
                "a request for Host: {FOREIGN_HOST} got {} from the balancer, not Flow",
                reply.status
            ),
        ),
        Err(e) => setup.check(
            rule,
            Status::Pass,
            format!("a request for Host: {FOREIGN_HOST} was refused ({e:#})"),
        ),
    }
}

async fn mc_cors(setup: &Setup, mc_url: Option<&str>) -> Check {
    let rule = Rule::McCors;
    let Some(mc_url) = mc_url else {
        return setup.check(rule, Status::Skip, "no --mc-url given");
    };
    let origin = &setup.context.origin;
    // The certificate check judges MC's certificate; this one reads CORS whatever it is.
    let target = match Target::parse(mc_url, None, &setup.resolve, &Trust::Insecure) {
        Ok(target) => target,
        Err(e) => return setup.check(rule, Status::Fail, format!("{mc_url}: {e:#}")),
    };
    match probe::preflight(&target, origin).await {
        Ok(answer) if answer.allows(origin) => setup.check(
            rule,
            Status::Pass,
            format!(
                "{mc_url} answered the preflight from {origin} with {} and Access-Control-Allow-Origin: {origin}",
                answer.status
            ),
        ),
        Ok(answer) => {
            let allowed = answer.allow_origin.as_deref();
            let why = match allowed {
                Some("*") => "'*', which browsers refuse for the SSO login's credentialed requests".to_string(),
                Some(other) => format!("'{other}', another origin"),
                None => "no Access-Control-Allow-Origin".to_string(),
            };
            setup.check(
                rule,
                Status::Fail,
                format!(
                    "{mc_url} answered the preflight from {origin} with {} and {why}: {origin} is not in \
                     hazelcast.mc.flow.addresses",
                    answer.status
                ),
            )
        }
        Err(e) => setup.check(rule, Status::Fail, format!("{mc_url}: {e:#}")),
    }
}

/// How a session ended.
struct Ended {
    after: Duration,
    how: String,
}

/// Watches a silent session to find the idle timeout while another one
/// heartbeats; the heartbeating one runs until well past the timeout found
/// (two heartbeats), or the whole wait plus one heartbeat when none is found.
async fn sessions(
    setup: &Setup,
    silent: Peer<Stream>,
    beating: Result<Peer<Stream>, String>,
    heartbeat: Duration,
    wait: Duration,
) -> (Check, Check) {
    let started = Instant::now();
    let silent_stop = AtomicU64::new(wait.as_millis() as u64);
    let beating_stop = AtomicU64::new((wait + heartbeat).as_millis() as u64);
    let watch_silent = async {
        let (ended, _, _) = watch(silent, None, started, &silent_stop).await;
        if let Some(ended) = &ended {
            // Well past the timeout found: two more heartbeats.
            beating_stop.fetch_min((ended.after + 2 * heartbeat).as_millis() as u64, Ordering::Relaxed);
        }
        ended
    };
    let watch_beating = async {
        match beating {
            Ok(peer) => Ok(watch(peer, Some(heartbeat), started, &beating_stop).await),
            Err(e) => Err(e),
        }
    };
    let (silent_end, beating_end) = tokio::join!(watch_silent, watch_beating);
    let hb = heartbeat.as_secs_f64();
    let idle_measured = serde_json::json!({
        "idle_timeout_s": silent_end.as_ref().map(|end| (end.after.as_secs_f64() * 10.0).round() / 10.0),
        "waited_s": wait.as_secs_f64(),
        "heartbeat_s": hb,
    });
    let idle = match &silent_end {
        None => setup.check(
            Rule::IdleTimeout,
            Status::Pass,
            format!(
                "a silent session stayed open for the whole {} s wait: the idle timeout is longer (--idle-wait \
                 finds longer ones)",
                wait.as_secs()
            ),
        ),
        Some(end) if end.after < 2 * heartbeat => setup.check(
            Rule::IdleTimeout,
            Status::Fail,
            format!(
                "a silent session was closed after {:.1} s ({}): the idle timeout is not safely above the {hb} s \
                 heartbeat; one late heartbeat (a busy or background tab) ends the session",
                end.after.as_secs_f64(),
                end.how
            ),
        ),
        Some(end) => setup.check(
            Rule::IdleTimeout,
            Status::Pass,
            format!(
                "a silent session was closed after {:.1} s ({}): the idle timeout, above the {hb} s heartbeat",
                end.after.as_secs_f64(),
                end.how
            ),
        ),
    };
    let idle = idle.measured(idle_measured);
    let beat = match beating_end {
        Err(e) => setup.check(
            Rule::HeartbeatSession,
            Status::Fail,
            format!("a second session did not open: {e}"),
        ),
        Ok((None, pongs, alive)) => {
            let past = silent_end
                .as_ref()
                .map(|end| format!(", past the {:.1} s idle timeout", end.after.as_secs_f64()))
                .unwrap_or_default();
            setup.check(
                Rule::HeartbeatSession,
                Status::Pass,
                format!(
                    "a session pinging every {hb} s stayed open {:.0} s with {pongs} pong(s){past}",
                    alive.as_secs_f64()
                ),
            )
        }
        Ok((Some(end), pongs, _)) => setup.check(
            Rule::HeartbeatSession,
            Status::Fail,
            format!(
                "a session pinging every {hb} s was closed after {:.1} s ({}), with {pongs} pong(s)",
                end.after.as_secs_f64(),
                end.how
            ),
        ),
    };
    (idle, beat)
}

/// Reads `peer` until it ends or `started + stop_at_ms`, pinging every
/// `beat` when given (the end is read again after each wake, so another
/// task may move it earlier). Returns how it ended (None: still open at the
/// end), the pongs received and how long it was watched.
async fn watch(
    mut peer: Peer<Stream>,
    beat: Option<Duration>,
    started: Instant,
    stop_at_ms: &AtomicU64,
) -> (Option<Ended>, u64, Duration) {
    let mut pongs = 0;
    let mut next_beat = beat.map(|b| started + b);
    let ended = |how: String| {
        Some(Ended {
            after: started.elapsed(),
            how,
        })
    };
    loop {
        let until = started + Duration::from_millis(stop_at_ms.load(Ordering::Relaxed));
        if Instant::now() >= until {
            let _ = peer.send_close(1000, "doctor done").await;
            return (None, pongs, started.elapsed());
        }
        let wake = next_beat.map_or(until, |b| b.min(until));
        let frame = tokio::select! {
            frame = peer.read() => frame,
            _ = tokio::time::sleep_until(wake.into()) => {
                if let (Some(b), Some(at)) = (beat, next_beat) {
                    if Instant::now() >= at {
                        next_beat = Some(at + b);
                        if let Err(e) = peer.send(Opcode::Ping, true, b"heartbeat").await {
                            return (ended(format!("sending a heartbeat failed: {e}")), pongs, started.elapsed());
                        }
                    }
                }
                continue;
            }
        };
        let how = match frame {
            Ok(Some(frame)) => match frame.opcode {
                Opcode::Pong => {
                    pongs += 1;
                    continue;
                }
                Opcode::Ping => {
                    let _ = peer.send(Opcode::Pong, true, &frame.payload).await;
                    continue;
                }
                Opcode::Close => format!(
                    "close frame, code {}",
                    frame.close_code().map_or("none".to_string(), |c| c.to_string())
                ),
                _ => continue,
            },
            Ok(None) => "the connection was closed without a close frame".into(),
            Err(e) => format!("connection error: {e}"),
        };
        return (ended(how), pongs, started.elapsed());
    }
}

/// `2027-02-01` from an RFC 3339 time.
fn date(rfc3339: &str) -> &str {
    rfc3339.get(..10).unwrap_or(rfc3339)
}

/// The report for people: one line per check, and under each failure the
/// rule and the three fixes.
pub fn render(report: &Report) -> String {
    let width = report.checks.iter().map(|c| c.id.len()).max().unwrap_or(0);
    let mut out = format!("flowgate doctor {}\n", report.url);
    for check in &report.checks {
        let mark = match check.status {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::Skip => "SKIP",
        };
        out.push_str(&format!("  {mark}  {:width$}  {}\n", check.id, check.observed));
        if let Some(fix) = &check.fix {
            out.push_str(&format!("        rule: {}\n", check.rule));
            out.push_str(&format!("        fix (flowgate): {}\n", fix.flowgate));
            out.push_str(&format!("        fix (Traefik):  {}\n", fix.traefik));
            out.push_str(&format!("        fix (nginx):    {}\n", fix.nginx));
        }
    }
    let count = |s| report.checks.iter().filter(|c| c.status == s).count();
    out.push_str(&format!(
        "{} passed, {} failed, {} skipped\n",
        count(Status::Pass),
        count(Status::Fail),
        count(Status::Skip)
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_http_port_reaches_the_same_address_as_the_https_port() {
        let entries = vec![
            "flow.test:8443:127.0.0.9".to_string(),
            "mc.test:8443:127.0.0.8".to_string(),
        ];
        let out = with_http_port(&entries, "flow.test", 8080);
        assert_eq!(out.last().unwrap(), "flow.test:8080:127.0.0.9");
        assert_eq!(out.len(), 3);
        let given = vec!["flow.test:8080:127.0.0.7".to_string()];
        assert_eq!(with_http_port(&given, "flow.test", 8080), given);
        assert!(with_http_port(&[], "flow.test", 80).is_empty());
    }

    #[test]
    fn a_failure_carries_its_rule_and_fixes_and_the_summary_counts() {
        let report = Report {
            url: "https://flow.test".into(),
            passed: false,
            checks: vec![
                Check {
                    id: "certificate",
                    rule: Rule::Certificate.text(),
                    status: Status::Pass,
                    observed: "valid".into(),
                    measured: None,
                    fix: None,
                },
                Check {
                    id: "idle-timeout",
                    rule: Rule::IdleTimeout.text(),
                    status: Status::Fail,
                    observed: "closed after 3.0 s".into(),
                    measured: None,
                    fix: Some(Rule::IdleTimeout.fix(&Context {
                        domain: "flow.test".into(),
                        port: 443,
                        origin: "https://flow.test".into(),
                        heartbeat_secs: 5,
                    })),
                },
            ],
        };
        let text = render(&report);
        assert!(text.contains("FAIL  idle-timeout  closed after 3.0 s"), "{text}");
        assert!(
            text.contains("fix (nginx):    in the Flow location: proxy_read_timeout 3600s"),
            "{text}"
        );
        assert!(text.ends_with("1 passed, 1 failed, 0 skipped\n"), "{text}");
    }
}
