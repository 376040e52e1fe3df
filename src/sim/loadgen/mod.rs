//! `flowgate loadgen`: simulated Flow UI users. Each session opens a
//! WebSocket, sends a heartbeat every interval (a ping, or a text message)
//! and times the answer; meanwhile HTTP GETs go out at a fixed rate. The
//! summary says what succeeded, what failed and how long it took.
//!
//! `target` says where and how to connect (TLS, `--resolve`), `session` is one
//! simulated user, `http` the request load.

mod http;
mod session;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Semaphore;

pub use crate::net::{Target, Trust};

/// The load: how many sessions, how they heartbeat, how many requests.
#[derive(Debug, Clone)]
pub struct Options {
    /// Base URL of the deployment (http://, https://, ws:// or wss://).
    pub url: String,
    pub ws_clients: usize,
    pub heartbeat: Duration,
    /// Heartbeats as this text message instead of pings.
    pub heartbeat_text: Option<String>,
    /// HTTP GETs of `http_path` per second.
    pub rps: f64,
    pub duration: Duration,
    pub ws_path: String,
    pub http_path: String,
    /// Host header (default: the URL's).
    pub host: Option<String>,
    /// curl-style HOST:PORT:ADDR entries.
    pub resolve: Vec<String>,
    pub trust: Trust,
    /// Reconnect sessions the server closes (as the Flow UI does).
    pub reconnect: bool,
    /// Spread sessions over this many loopback source addresses.
    pub source_addresses: u8,
    /// Sessions opening at once.
    pub connect_concurrency: usize,
    /// Progress lines on stderr every 5 s.
    pub progress: bool,
}

/// Why the load could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    #[error("--heartbeat must be more than 0")]
    Heartbeat,
    #[error("--rps must be 0 or more")]
    Rate,
    #[error(
        "{sessions} sessions need more file descriptors than the limit of {limit}; raise it (ulimit -n) or use fewer --ws-clients"
    )]
    Descriptors { sessions: usize, limit: u64 },
    #[error(transparent)]
    Net(#[from] crate::net::NetError),
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
    /// Round trips of heartbeats sent once every session was open (plus one
    /// interval): the steady state, without the opening burst.
    heartbeat_rtt_steady_us: Mutex<Vec<u32>>,
    /// Sessions asked for, and when the steady state began.
    sessions_wanted: AtomicU64,
    heartbeat: Mutex<Duration>,
    steady_from: std::sync::OnceLock<Instant>,
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
    /// After each session opened or failed: once every session has had its
    /// try, the steady state begins one heartbeat interval later.
    fn note_attempt(&self) {
        let tried = self.ws_opened.load(Ordering::Relaxed) + self.ws_failed.load(Ordering::Relaxed);
        if tried >= self.sessions_wanted.load(Ordering::Relaxed) && self.steady_from.get().is_none() {
            let heartbeat = *self.heartbeat.lock().unwrap_or_else(|e| e.into_inner());
            let _ = self.steady_from.set(Instant::now() + heartbeat);
        }
    }

    fn count_status(&self, key: &str) {
        *self
            .by_status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.to_string())
            .or_default() += 1;
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
    /// The same for heartbeats sent after every session had opened (and one
    /// heartbeat interval more).
    pub heartbeat_rtt_steady_p50_ms: Option<f64>,
    pub heartbeat_rtt_steady_p99_ms: Option<f64>,
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

/// Checks the options, runs the load and summarises it.
pub async fn run(args: &Options) -> Result<Summary, LoadgenError> {
    if args.heartbeat.is_zero() {
        return Err(LoadgenError::Heartbeat);
    }
    if !(args.rps >= 0.0 && args.rps.is_finite()) {
        return Err(LoadgenError::Rate);
    }
    let target = Target::parse(&args.url, args.host.as_deref(), &args.resolve, &args.trust)?;
    let limit = crate::fsutil::raise_fd_limit();
    if args.ws_clients as u64 + 256 > limit {
        return Err(LoadgenError::Descriptors {
            sessions: args.ws_clients,
            limit,
        });
    }
    Ok(generate(args, &target).await)
}

/// Runs the load described by `args` against `target` and summarises it.
async fn generate(args: &Options, target: &Target) -> Summary {
    let stats = Arc::new(Stats::default());
    stats.sessions_wanted.store(args.ws_clients as u64, Ordering::Relaxed);
    *stats.heartbeat.lock().unwrap_or_else(|e| e.into_inner()) = args.heartbeat;
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + args.duration;
    let opening = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let mut tasks = Vec::with_capacity(args.ws_clients + 1);
    for index in 0..args.ws_clients {
        let session = session::SessionPlan {
            target: target.clone(),
            path: args.ws_path.clone(),
            heartbeat: args.heartbeat,
            heartbeat_text: args.heartbeat_text.clone(),
            reconnect: args.reconnect,
            source: crate::net::source_address(target.addr, index, args.source_addresses),
            deadline,
        };
        tasks.push(tokio::spawn(session::run(session, stats.clone(), opening.clone())));
    }
    if args.rps > 0.0 {
        tasks.push(tokio::spawn(http::run(
            target.clone(),
            args.http_path.clone(),
            args.rps,
            deadline,
            stats.clone(),
        )));
    }
    let progress = args
        .progress
        .then(|| tokio::spawn(report_progress(stats.clone(), started)));
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
        heartbeat_rtt_steady_p50_ms: percentile(&stats.heartbeat_rtt_steady_us, 0.5),
        heartbeat_rtt_steady_p99_ms: percentile(&stats.heartbeat_rtt_steady_us, 0.99),
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

impl Summary {
    /// The summary for people.
    pub fn text(&self) -> String {
        use std::fmt::Write as _;
        let s = self;
        let mut out = String::new();
        let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2} ms"));
        let _ = writeln!(out, "loadgen summary ({:.1} s)", s.duration_s);
        let _ = writeln!(
            out,
            "  HTTP requests     {} ok, {} failed",
            s.requests_ok, s.requests_failed
        );
        let _ = writeln!(
            out,
            "  HTTP latency      p50 {}, p99 {}",
            ms(s.latency_p50_ms),
            ms(s.latency_p99_ms)
        );
        let _ = writeln!(
            out,
            "  WebSocket         {} opened, {} failed, {} dropped, peak {} open, {} reconnects",
            s.ws_opened, s.ws_failed, s.ws_dropped, s.ws_peak_open, s.ws_reconnects
        );
        if !s.ws_closed_by_server.is_empty() {
            let codes: Vec<String> = s.ws_closed_by_server.iter().map(|(c, n)| format!("{c}: {n}")).collect();
            let _ = writeln!(out, "  closed by server  {}", codes.join(", "));
        }
        let _ = writeln!(
            out,
            "  heartbeats        {} sent, {} acknowledged",
            s.heartbeats_sent, s.heartbeats_acknowledged
        );
        let _ = writeln!(
            out,
            "  heartbeat RTT     p50 {}, p99 {}; once all sessions were open p50 {}, p99 {}",
            ms(s.heartbeat_rtt_p50_ms),
            ms(s.heartbeat_rtt_p99_ms),
            ms(s.heartbeat_rtt_steady_p50_ms),
            ms(s.heartbeat_rtt_steady_p99_ms)
        );
        for (error, count) in &s.errors {
            let _ = writeln!(out, "  error x{count}: {error}");
        }
        out
    }
}
