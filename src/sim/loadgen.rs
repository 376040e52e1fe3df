//! `flowgate loadgen`: simulated Flow UI users. Each session opens a
//! WebSocket, sends a heartbeat every interval (a ping, or a text message)
//! and times the answer; meanwhile HTTP GETs go out at a fixed rate. The
//! summary says what succeeded, what failed and how long it took.
//!
//! Sessions bind to source addresses spread over 127.0.0.x when the target is
//! on loopback, so tens of thousands of them do not run out of ports.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use hyper::{Request, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;

use crate::cli::LoadgenArgs;
use crate::serve::{self, Body};
use crate::websocket::frame::Opcode;
use crate::websocket::peer::{self, Peer};

/// Where the load goes.
#[derive(Debug, Clone)]
pub struct Target {
    /// Host header value (with port when not the default).
    pub host_header: String,
    /// Where to connect.
    pub addr: SocketAddr,
}

impl Target {
    pub fn parse(url: &str, host: Option<&str>, resolve: &[String]) -> anyhow::Result<Target> {
        let uri: hyper::Uri = url.parse().with_context(|| format!("'{url}' is not a URL"))?;
        let default_port = match uri.scheme_str() {
            Some("http") | Some("ws") => 80,
            Some("https") | Some("wss") => {
                bail!("'{url}': TLS targets are not supported by loadgen yet; use http:// or ws://")
            }
            _ => bail!("'{url}' must start with http:// or ws://"),
        };
        let name = uri
            .host()
            .context("the URL has no host")?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(default_port);
        let host_header = match host {
            Some(h) => h.to_string(),
            None if port == default_port => name.clone(),
            None => uri.authority().map(|a| a.to_string()).unwrap_or_else(|| name.clone()),
        };
        let addr = match resolved(resolve, &name, port)? {
            Some(addr) => addr,
            None => (name.as_str(), port)
                .to_socket_addrs()
                .with_context(|| format!("cannot resolve {name}"))?
                .next()
                .with_context(|| format!("{name} has no address"))?,
        };
        Ok(Target { host_header, addr })
    }
}

/// The address `--resolve HOST:PORT:ADDR` gives for this host and port.
fn resolved(entries: &[String], host: &str, port: u16) -> anyhow::Result<Option<SocketAddr>> {
    for entry in entries {
        let mut parts = entry.splitn(3, ':');
        let (Some(h), Some(p), Some(a)) = (parts.next(), parts.next(), parts.next()) else {
            bail!("--resolve '{entry}' must look like HOST:PORT:ADDR, e.g. flow.example.com:443:127.0.0.1");
        };
        let p: u16 = p.parse().with_context(|| format!("--resolve '{entry}': bad port"))?;
        if h.eq_ignore_ascii_case(host) && p == port {
            let ip: IpAddr = a
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .with_context(|| format!("--resolve '{entry}': '{a}' is not an IP address"))?;
            return Ok(Some(SocketAddr::new(ip, port)));
        }
    }
    Ok(None)
}

#[derive(Debug, Default)]
struct Stats {
    requests_ok: AtomicU64,
    requests_failed: AtomicU64,
    ws_opened: AtomicU64,
    ws_failed: AtomicU64,
    ws_dropped: AtomicU64,
    ws_reconnects: AtomicU64,
    ws_open: AtomicU64,
    ws_peak_open: AtomicU64,
    heartbeats_sent: AtomicU64,
    heartbeats_acked: AtomicU64,
    by_status: Mutex<BTreeMap<String, u64>>,
    closed_by_server: Mutex<BTreeMap<u16, u64>>,
    http_latency_us: Mutex<Vec<u32>>,
    heartbeat_rtt_us: Mutex<Vec<u32>>,
    errors: Mutex<BTreeMap<String, u64>>,
}

/// Samples kept for percentiles; beyond this they are dropped (the counts
/// still include them).
const MAX_SAMPLES: usize = 2_000_000;

impl Stats {
    fn sample(list: &Mutex<Vec<u32>>, elapsed: Duration) {
        let mut list = list.lock().unwrap_or_else(|e| e.into_inner());
        if list.len() < MAX_SAMPLES {
            list.push(elapsed.as_micros().min(u32::MAX as u128) as u32);
        }
    }
    fn error(&self, what: String) {
        *self
            .errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(what)
            .or_default() += 1;
    }
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub duration_s: f64,
    pub requests_ok: u64,
    pub requests_failed: u64,
    pub requests_by_status: BTreeMap<String, u64>,
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    pub ws_opened: u64,
    pub ws_failed: u64,
    pub ws_dropped: u64,
    pub ws_closed_by_server: BTreeMap<u16, u64>,
    pub ws_reconnects: u64,
    pub ws_peak_open: u64,
    pub heartbeats_sent: u64,
    pub heartbeats_acknowledged: u64,
    pub heartbeat_rtt_p50_ms: Option<f64>,
    pub heartbeat_rtt_p99_ms: Option<f64>,
    pub errors: BTreeMap<String, u64>,
}

fn take<T: Default>(m: &Mutex<T>) -> T {
    std::mem::take(&mut *m.lock().unwrap_or_else(|e| e.into_inner()))
}

fn percentile(samples: &Mutex<Vec<u32>>, q: f64) -> Option<f64> {
    let mut list = samples.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if list.is_empty() {
        return None;
    }
    list.sort_unstable();
    let index = ((q * list.len() as f64).ceil() as usize).clamp(1, list.len()) - 1;
    Some(list[index] as f64 / 1000.0)
}

pub async fn run(args: LoadgenArgs) -> anyhow::Result<()> {
    if args.heartbeat.is_zero() {
        bail!("--heartbeat must be more than 0");
    }
    if !(args.rps >= 0.0 && args.rps.is_finite()) {
        bail!("--rps must be 0 or more");
    }
    let target = Target::parse(&args.url, args.host.as_deref(), &args.resolve)?;
    let fd_limit = crate::fsutil::raise_fd_limit();
    if args.ws_clients as u64 + 256 > fd_limit {
        bail!(
            "{} sessions need more file descriptors than the limit of {fd_limit}; raise it (ulimit -n) or use fewer --ws-clients",
            args.ws_clients
        );
    }
    let summary = generate(&args, &target).await;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_summary(&summary);
    }
    Ok(())
}

/// Runs the load described by `args` against `target` and summarises it.
pub async fn generate(args: &LoadgenArgs, target: &Target) -> Summary {
    let stats = Arc::new(Stats::default());
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + args.duration;
    let opening = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let mut tasks = Vec::with_capacity(args.ws_clients + 1);
    for index in 0..args.ws_clients {
        let session = SessionPlan {
            target: target.clone(),
            path: args.ws_path.clone(),
            heartbeat: args.heartbeat,
            heartbeat_text: args.heartbeat_text.clone(),
            reconnect: args.reconnect,
            source: source_address(target.addr, index, args.source_addresses),
            deadline,
        };
        tasks.push(tokio::spawn(run_session(session, stats.clone(), opening.clone())));
    }
    if args.rps > 0.0 {
        tasks.push(tokio::spawn(http_load(
            target.clone(),
            args.http_path.clone(),
            args.rps,
            deadline,
            stats.clone(),
        )));
    }
    let progress = (!args.json).then(|| tokio::spawn(report_progress(stats.clone(), started)));
    for task in tasks {
        let _ = task.await;
    }
    if let Some(p) = progress {
        p.abort();
    }
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    Summary {
        duration_s: (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        requests_ok: load(&stats.requests_ok),
        requests_failed: load(&stats.requests_failed),
        requests_by_status: take(&stats.by_status),
        latency_p50_ms: percentile(&stats.http_latency_us, 0.5),
        latency_p99_ms: percentile(&stats.http_latency_us, 0.99),
        ws_opened: load(&stats.ws_opened),
        ws_failed: load(&stats.ws_failed),
        ws_dropped: load(&stats.ws_dropped),
        ws_closed_by_server: take(&stats.closed_by_server),
        ws_reconnects: load(&stats.ws_reconnects),
        ws_peak_open: load(&stats.ws_peak_open),
        heartbeats_sent: load(&stats.heartbeats_sent),
        heartbeats_acknowledged: load(&stats.heartbeats_acked),
        heartbeat_rtt_p50_ms: percentile(&stats.heartbeat_rtt_us, 0.5),
        heartbeat_rtt_p99_ms: percentile(&stats.heartbeat_rtt_us, 0.99),
        errors: take(&stats.errors),
    }
}

async fn report_progress(stats: Arc<Stats>, started: Instant) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.tick().await;
    loop {
        tick.tick().await;
        eprintln!(
            "loadgen {:>4.0}s: {} sessions open, {} heartbeats acknowledged, {} requests ok, {} failed",
            started.elapsed().as_secs_f64(),
            stats.ws_open.load(Ordering::Relaxed),
            stats.heartbeats_acked.load(Ordering::Relaxed),
            stats.requests_ok.load(Ordering::Relaxed),
            stats.requests_failed.load(Ordering::Relaxed),
        );
    }
}

fn print_summary(s: &Summary) {
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2} ms"));
    println!("loadgen summary ({:.1} s)", s.duration_s);
    println!("  HTTP requests     {} ok, {} failed", s.requests_ok, s.requests_failed);
    println!(
        "  HTTP latency      p50 {}, p99 {}",
        ms(s.latency_p50_ms),
        ms(s.latency_p99_ms)
    );
    println!(
        "  WebSocket         {} opened, {} failed, {} dropped, peak {} open, {} reconnects",
        s.ws_opened, s.ws_failed, s.ws_dropped, s.ws_peak_open, s.ws_reconnects
    );
    if !s.ws_closed_by_server.is_empty() {
        let codes: Vec<String> = s.ws_closed_by_server.iter().map(|(c, n)| format!("{c}: {n}")).collect();
        println!("  closed by server  {}", codes.join(", "));
    }
    println!(
        "  heartbeats        {} sent, {} acknowledged",
        s.heartbeats_sent, s.heartbeats_acknowledged
    );
    println!(
        "  heartbeat RTT     p50 {}, p99 {}",
        ms(s.heartbeat_rtt_p50_ms),
        ms(s.heartbeat_rtt_p99_ms)
    );
    for (error, count) in &s.errors {
        println!("  error x{count}: {error}");
    }
}

/// A source address for session `index`: 127.0.0.1 + (index mod n) toward a
/// loopback IPv4 target, the system's choice otherwise.
fn source_address(target: SocketAddr, index: usize, spread: u8) -> Option<IpAddr> {
    match target.ip() {
        IpAddr::V4(ip) if ip.is_loopback() && spread > 1 => Some(IpAddr::V4(Ipv4Addr::new(
            127,
            0,
            0,
            1 + (index % spread as usize) as u8,
        ))),
        _ => None,
    }
}

async fn connect(target: SocketAddr, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let Some(source) = source else {
        return TcpStream::connect(target).await;
    };
    let socket = if target.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // Choose the source port at connect time (not bind time), so ports are
    // unique per destination rather than per source address.
    let one: libc::c_int = 1;
    // SAFETY: a valid socket descriptor and a pointer to a live c_int.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            &one as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    socket.bind(SocketAddr::new(source, 0))?;
    let stream = socket.connect(target).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

struct SessionPlan {
    target: Target,
    path: String,
    heartbeat: Duration,
    heartbeat_text: Option<String>,
    reconnect: bool,
    source: Option<IpAddr>,
    deadline: tokio::time::Instant,
}

enum SessionEnd {
    /// The run's time was up and the session closed normally.
    Finished,
    /// The server sent a close frame with this code.
    ClosedByServer(u16),
    /// The connection ended without a close frame.
    Dropped(String),
}

async fn run_session(plan: SessionPlan, stats: Arc<Stats>, opening: Arc<Semaphore>) {
    let mut first = true;
    while tokio::time::Instant::now() < plan.deadline {
        if !first {
            stats.ws_reconnects.fetch_add(1, Ordering::Relaxed);
        }
        first = false;
        let peer = {
            let _permit = opening.acquire().await;
            let handshake = async {
                let stream = connect(plan.target.addr, plan.source).await?;
                peer::connect(stream, &plan.target.host_header, &plan.path, &[]).await
            };
            match tokio::time::timeout(Duration::from_secs(10), handshake).await {
                Ok(Ok(peer)) => peer,
                Ok(Err(e)) => {
                    stats.ws_failed.fetch_add(1, Ordering::Relaxed);
                    stats.error(format!("websocket: {e}"));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    if plan.reconnect { continue } else { return }
                }
                Err(_) => {
                    stats.ws_failed.fetch_add(1, Ordering::Relaxed);
                    stats.error("websocket: handshake took over 10 s".into());
                    if plan.reconnect { continue } else { return }
                }
            }
        };
        stats.ws_opened.fetch_add(1, Ordering::Relaxed);
        let open = stats.ws_open.fetch_add(1, Ordering::Relaxed) + 1;
        stats.ws_peak_open.fetch_max(open, Ordering::Relaxed);
        let end = heartbeat_loop(&plan, peer, &stats).await;
        stats.ws_open.fetch_sub(1, Ordering::Relaxed);
        match end {
            SessionEnd::Finished => return,
            SessionEnd::ClosedByServer(code) => {
                *stats
                    .closed_by_server
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(code)
                    .or_default() += 1;
            }
            SessionEnd::Dropped(why) => {
                stats.ws_dropped.fetch_add(1, Ordering::Relaxed);
                stats.error(format!("websocket dropped: {why}"));
            }
        }
        if !plan.reconnect {
            return;
        }
    }
}

async fn heartbeat_loop(plan: &SessionPlan, mut peer: Peer<TcpStream>, stats: &Stats) -> SessionEnd {
    let epoch = Instant::now();
    // Spread the first heartbeat over the interval so sessions don't beat in step.
    let offset = u64::from_le_bytes(crate::websocket::random_bytes::<8>()) % plan.heartbeat.as_millis().max(1) as u64;
    let mut next_beat = tokio::time::Instant::now() + Duration::from_millis(offset);
    loop {
        tokio::select! {
            frame = peer.read() => match frame {
                Ok(Some(frame)) => match frame.opcode {
                    Opcode::Pong | Opcode::Text => record_answer(stats, epoch, &frame),
                    Opcode::Ping => {
                        let _ = peer.send(Opcode::Pong, true, &frame.payload).await;
                    }
                    Opcode::Close => {
                        let code = frame.close_code().unwrap_or(1005);
                        let _ = peer.send_close(code, "").await;
                        // Wait for the server to close the TCP connection.
                        let _ = tokio::time::timeout(Duration::from_secs(2), peer.read()).await;
                        return SessionEnd::ClosedByServer(code);
                    }
                    _ => {}
                },
                Ok(None) => return SessionEnd::Dropped("connection closed without a close frame".into()),
                Err(e) => return SessionEnd::Dropped(e.to_string()),
            },
            _ = tokio::time::sleep_until(next_beat) => {
                next_beat += plan.heartbeat;
                let stamp = epoch.elapsed().as_micros() as u64;
                let sent = match &plan.heartbeat_text {
                    Some(text) => peer.send(Opcode::Text, true, format!("{text} {stamp}").as_bytes()).await,
                    None => peer.send(Opcode::Ping, true, format!("hb {stamp}").as_bytes()).await,
                };
                if let Err(e) = sent {
                    return SessionEnd::Dropped(e.to_string());
                }
                stats.heartbeats_sent.fetch_add(1, Ordering::Relaxed);
            },
            _ = tokio::time::sleep_until(plan.deadline) => {
                if peer.send_close(1000, "done").await.is_err() {
                    return SessionEnd::Dropped("could not send the close frame".into());
                }
                // Read until the server's close (echoes may still arrive).
                let wait = async {
                    loop {
                        match peer.read().await {
                            Ok(Some(f)) if f.opcode == Opcode::Close => return true,
                            // Answers to heartbeats sent just before the end.
                            Ok(Some(f)) => record_answer(stats, epoch, &f),
                            _ => return false,
                        }
                    }
                };
                return match tokio::time::timeout(Duration::from_secs(3), wait).await {
                    Ok(true) => SessionEnd::Finished,
                    _ => SessionEnd::Dropped("no close reply from the server".into()),
                };
            }
        }
    }
}

/// Counts a pong or echoed text that answers one of our heartbeats.
fn record_answer(stats: &Stats, epoch: Instant, frame: &peer::Frame) {
    if let Some(sent_us) = parse_beat(&frame.payload, frame.opcode == Opcode::Text) {
        stats.heartbeats_acked.fetch_add(1, Ordering::Relaxed);
        let now_us = epoch.elapsed().as_micros() as u64;
        Stats::sample(
            &stats.heartbeat_rtt_us,
            Duration::from_micros(now_us.saturating_sub(sent_us)),
        );
    }
}

/// The send time carried by a heartbeat answer: `hb <micros>` in pongs,
/// `<text> <micros>` in echoed text messages.
fn parse_beat(payload: &[u8], text: bool) -> Option<u64> {
    let s = std::str::from_utf8(payload).ok()?;
    let (label, stamp) = s.rsplit_once(' ')?;
    if !text && label != "hb" {
        return None;
    }
    stamp.parse().ok()
}

async fn http_load(target: Target, path: String, rps: f64, deadline: tokio::time::Instant, stats: Arc<Stats>) {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Body> = Client::builder(TokioExecutor::new()).build(connector);
    let uri: hyper::Uri = match format!("http://{}{}", target.addr, path).parse() {
        Ok(u) => u,
        Err(e) => {
            stats.error(format!("http: bad path '{path}': {e}"));
            return;
        }
    };
    let period = Duration::from_secs_f64(1.0 / rps);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Bound requests in flight, so a stalled server cannot pile up tasks.
    let in_flight = Arc::new(Semaphore::new(512));
    let mut pending = Vec::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::time::sleep_until(deadline) => break,
        }
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let client = client.clone();
        let uri = uri.clone();
        let host = target.host_header.clone();
        let stats = stats.clone();
        pending.push(tokio::spawn(async move {
            let _permit = permit;
            let mut request = Request::new(serve::empty());
            *request.uri_mut() = uri;
            if let Ok(value) = header::HeaderValue::from_str(&host) {
                request.headers_mut().insert(header::HOST, value);
            }
            let started = Instant::now();
            let result = tokio::time::timeout(Duration::from_secs(10), async {
                let response = client.request(request).await?;
                let status = response.status();
                http_body_util::BodyExt::collect(response.into_body()).await?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(status)
            })
            .await;
            let key = match result {
                Ok(Ok(status)) => {
                    Stats::sample(&stats.http_latency_us, started.elapsed());
                    if status.is_success() || status.is_redirection() {
                        stats.requests_ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        stats.requests_failed.fetch_add(1, Ordering::Relaxed);
                    }
                    status.as_u16().to_string()
                }
                Ok(Err(e)) => {
                    stats.requests_failed.fetch_add(1, Ordering::Relaxed);
                    stats.error(format!("http: {e}"));
                    "error".to_string()
                }
                Err(_) => {
                    stats.requests_failed.fetch_add(1, Ordering::Relaxed);
                    "timeout".to_string()
                }
            };
            *stats
                .by_status
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(key)
                .or_default() += 1;
        }));
        pending.retain(|t| !t.is_finished());
    }
    for task in pending {
        let _ = task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_take_resolve_and_host_overrides() {
        let t = Target::parse(
            "http://flow.example.com:8080/x",
            None,
            &["flow.example.com:8080:127.0.0.5".into()],
        )
        .unwrap();
        assert_eq!(t.addr, "127.0.0.5:8080".parse().unwrap());
        assert_eq!(t.host_header, "flow.example.com:8080");
        let t = Target::parse("ws://127.0.0.1", Some("flow.example.com"), &[]).unwrap();
        assert_eq!(t.addr.port(), 80);
        assert_eq!(t.host_header, "flow.example.com");
        assert!(Target::parse("ftp://x", None, &[]).is_err());
        assert!(Target::parse("http://x:1", None, &["bad".into()]).is_err());
    }

    #[test]
    fn source_addresses_spread_only_on_loopback() {
        let lo: SocketAddr = "127.0.0.1:80".parse().unwrap();
        assert_eq!(source_address(lo, 17, 16), Some("127.0.0.2".parse().unwrap()));
        assert_eq!(source_address("10.0.0.1:80".parse().unwrap(), 3, 16), None);
    }

    #[test]
    fn heartbeat_answers_carry_their_send_time() {
        assert_eq!(parse_beat(b"hb 1234", false), Some(1234));
        assert_eq!(parse_beat(b"heartbeat 99", true), Some(99));
        assert_eq!(parse_beat(b"other 5", false), None);
    }
}
