//! A backend (one Flow instance), everything the proxy counts about it, and
//! the connections it owns: the idle keep-alive connections, the cap on how
//! many it may have, and its addresses when it is given by name.
//!
//! Counters are atomics so request and WebSocket tasks update them without
//! locks; the admin API, `/metrics` and the dashboard read them.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};

use crate::histogram::Histogram;

/// A backend's health as the proxy sees it: the admin API's `state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendState {
    Healthy,
    Unhealthy,
    Draining,
}

impl BackendState {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendState::Healthy => "healthy",
            BackendState::Unhealthy => "unhealthy",
            BackendState::Draining => "draining",
        }
    }
}

/// Milliseconds since the proxy started: a compact, atomic-friendly clock.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base: Instant,
    /// `coarse_ms`'s reading when the clock was made.
    coarse_base: u64,
}

impl Clock {
    pub fn new() -> Self {
        Clock {
            base: Instant::now(),
            coarse_base: coarse_reading(),
        }
    }
    /// Never 0, so 0 can mean "never".
    pub fn now_ms(&self) -> u64 {
        self.ms_at(Instant::now())
    }

    /// `now_ms` for an instant already read from the clock (a request's
    /// start, say), so one request reads the clock as few times as it can.
    pub fn ms_at(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.base).as_millis() as u64 + 1
    }

    /// `now_ms` from the kernel's coarse clock: a few milliseconds behind
    /// at most (one scheduler tick), and cheaper to read, for stamps taken
    /// at every request that only timeouts in seconds compare. Compare its
    /// readings with each other only, never with `now_ms`'s.
    pub fn coarse_ms(&self) -> u64 {
        coarse_reading().saturating_sub(self.coarse_base) + 1
    }
}

/// The coarse monotonic clock in milliseconds (Linux: no TSC read, the
/// time of the last tick); elsewhere the ordinary monotonic clock.
fn coarse_reading() -> u64 {
    #[cfg(target_os = "linux")]
    {
        let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime only writes the timespec it is given.
        if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut now) } == 0 {
            return now.tv_sec as u64 * 1000 + now.tv_nsec as u64 / 1_000_000;
        }
    }
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// Counters of one WebSocket session, shared by its tunnel task and the
/// admin API.
#[derive(Debug)]
pub struct Session {
    pub id: u64,
    pub client: SocketAddr,
    pub started: Instant,
    pub frames_in: AtomicU64,
    pub frames_out: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub heartbeats: AtomicU64,
    pub last_heartbeat_ms: AtomicU64,
    /// Asks the session to close with 1012 so its client reconnects to a
    /// less busy instance (rebalancing).
    pub move_on: tokio::sync::Notify,
}

impl Session {
    pub fn new(id: u64, client: SocketAddr) -> Self {
        Session {
            id,
            client,
            started: Instant::now(),
            frames_in: AtomicU64::new(0),
            frames_out: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            heartbeats: AtomicU64::new(0),
            last_heartbeat_ms: AtomicU64::new(0),
            move_on: tokio::sync::Notify::new(),
        }
    }
}

#[derive(Debug, Default)]
pub struct Counters {
    pub active_requests: AtomicU64,
    pub requests_total: AtomicU64,
    pub responses_5xx: AtomicU64,
    pub connect_failures: AtomicU64,
    pub retries: AtomicU64,
    pub ws_active: AtomicU64,
    /// Sessions whose handshake with this backend is under way.
    pub ws_opening: AtomicU64,
    pub ws_total: AtomicU64,
    pub ws_frames_in: AtomicU64,
    pub ws_frames_out: AtomicU64,
    pub ws_bytes_in: AtomicU64,
    pub ws_bytes_out: AtomicU64,
    pub ws_pings: AtomicU64,
    pub ws_pongs: AtomicU64,
    pub heartbeats_total: AtomicU64,
    /// [`Clock::now_ms`] of the last heartbeat, 0 for none.
    pub last_heartbeat_ms: AtomicU64,
}

#[derive(Debug)]
pub struct Backend {
    pub id: String,
    pub address: String,
    pub service: String,
    /// Added through the admin API (kept in the state dir), not from config.
    pub dynamic: bool,
    /// Found by resolving the service's `discover` name; it goes when the
    /// name stops resolving to it.
    pub discovered: bool,
    /// Set when the name no longer resolves to it: a drained discovered
    /// backend stays (serving nothing, so its address is not found again)
    /// until then.
    pub vanished: AtomicBool,
    state: AtomicU8,
    pub counters: Counters,
    pub latency: Histogram,
    /// Passive ejection after connect failures: skip until this clock time.
    ejected_until_ms: AtomicU64,
    consecutive_failures: AtomicU32,
    /// Set once the backend left its pool; its health task then ends.
    pub removed: AtomicBool,
    /// Flips to true when the backend's sessions must close (drain, removal).
    pub close_sessions: watch::Sender<bool>,
    /// Counts the times it was found down (its health check failed, also
    /// while draining) or left with requests still waiting: those that may
    /// be sent again then go elsewhere.
    pub went_down: watch::Sender<u64>,
    pub sessions: Mutex<HashMap<u64, Arc<Session>>>,
    /// Idle keep-alive connections to this backend.
    pub idle: IdlePool,
    /// One permit per open HTTP connection (`max_upstream_connections`).
    pub connections: Arc<Semaphore>,
    /// Its addresses, when it is given by name.
    pub resolved: Resolved,
}

impl Backend {
    pub fn new(id: &str, address: &str, service: &str, dynamic: bool, initial: BackendState) -> Self {
        Backend {
            id: id.into(),
            address: address.into(),
            service: service.into(),
            dynamic,
            discovered: false,
            vanished: AtomicBool::new(false),
            state: AtomicU8::new(initial as u8),
            counters: Counters::default(),
            latency: Histogram::default(),
            ejected_until_ms: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            removed: AtomicBool::new(false),
            close_sessions: watch::channel(false).0,
            went_down: watch::channel(0).0,
            sessions: Mutex::new(HashMap::new()),
            idle: Default::default(),
            connections: Arc::new(Semaphore::new(
                crate::config::proxy::Limits::default().max_upstream_connections,
            )),
            resolved: Default::default(),
        }
    }

    /// Marks a backend found by name resolution.
    pub fn discovered(mut self) -> Self {
        self.discovered = true;
        self
    }

    /// Caps the HTTP connections this backend may have open at once.
    pub fn with_connection_limit(mut self, limit: usize) -> Self {
        self.connections = Arc::new(Semaphore::new(limit.max(1)));
        self
    }

    pub fn state(&self) -> BackendState {
        match self.state.load(Ordering::Acquire) {
            0 => BackendState::Healthy,
            1 => BackendState::Unhealthy,
            _ => BackendState::Draining,
        }
    }

    /// Sets the state unless the backend is draining (draining is final).
    /// Returns true when the state changed.
    pub fn set_health(&self, healthy: bool) -> bool {
        let new = if healthy {
            BackendState::Healthy
        } else {
            BackendState::Unhealthy
        } as u8;
        let mut current = self.state.load(Ordering::Acquire);
        loop {
            if current == BackendState::Draining as u8 || current == new {
                return false;
            }
            match self
                .state
                .compare_exchange(current, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    if !healthy {
                        self.release_waiting();
                    }
                    return true;
                }
                Err(actual) => current = actual,
            }
        }
    }

    /// Tells the requests waiting on this backend that no answer is coming:
    /// those that may be sent again go to another backend.
    pub fn release_waiting(&self) {
        self.went_down.send_modify(|n| *n += 1);
    }

    pub fn start_draining(&self) {
        self.state.store(BackendState::Draining as u8, Ordering::Release);
    }

    /// Whether the balancer may send new work here now.
    pub fn is_eligible(&self, now_ms: u64) -> bool {
        self.state() == BackendState::Healthy && self.ejected_until_ms.load(Ordering::Relaxed) <= now_ms
    }

    pub fn is_ejected(&self, now_ms: u64) -> bool {
        self.ejected_until_ms.load(Ordering::Relaxed) > now_ms
    }

    /// Records a failed connect: ejects the backend for a backoff that doubles
    /// with each consecutive failure (1 s up to 30 s).
    pub fn record_connect_failure(&self, now_ms: u64) -> Duration {
        self.counters.connect_failures.fetch_add(1, Ordering::Relaxed);
        let failures = self.consecutive_failures.fetch_add(1, Ordering::Relaxed).min(5);
        let backoff = Duration::from_secs(1 << failures).min(Duration::from_secs(30));
        self.ejected_until_ms
            .store(now_ms + backoff.as_millis() as u64, Ordering::Relaxed);
        backoff
    }

    pub fn record_connect_success(&self) {
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
            self.ejected_until_ms.store(0, Ordering::Relaxed);
        }
    }

    /// Load used by least-connections: open requests plus open sessions.
    pub fn load(&self) -> u64 {
        self.counters.active_requests.load(Ordering::Relaxed) + self.counters.ws_active.load(Ordering::Relaxed)
    }

    /// Asks every WebSocket session on this backend to close (code 1001).
    pub fn close_all_sessions(&self) {
        self.close_sessions.send_replace(true);
    }
}

/// Decrements a counter when dropped: tracks work in flight however it ends.
#[derive(Debug)]
pub struct InFlight {
    backend: Arc<Backend>,
}

impl InFlight {
    pub fn start(backend: &Arc<Backend>) -> Self {
        backend.counters.active_requests.fetch_add(1, Ordering::Relaxed);
        backend.counters.requests_total.fetch_add(1, Ordering::Relaxed);
        InFlight {
            backend: backend.clone(),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.backend.counters.active_requests.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Idle connections unused this long are closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// At most this many idle connections are kept per backend.
const MAX_IDLE: usize = 512;

/// A keep-alive connection to a backend: its socket, the bytes read from
/// it and not yet used, the buffer request heads are written into, the
/// timer its exchanges use for the response-head deadline (one per
/// connection, moved forward for each request rather than made and dropped
/// each time), and its place under the backend's connection cap.
pub struct Pooled {
    pub stream: TcpStream,
    pub read: BytesMut,
    pub write: Vec<u8>,
    pub deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
    _permit: OwnedSemaphorePermit,
}

impl Pooled {
    pub fn new(stream: TcpStream, permit: OwnedSemaphorePermit) -> Self {
        Pooled {
            stream,
            read: BytesMut::new(),
            write: Vec::new(),
            deadline: Box::pin(tokio::time::sleep(Duration::ZERO)),
            _permit: permit,
        }
    }

    /// Whether the connection can carry a request: not closed by the
    /// backend while idle, and nothing arrived unasked (which would be
    /// taken for the next answer). Reads nothing unless the socket was seen
    /// readable, so an idle connection costs no system call here.
    fn is_usable(&self) -> bool {
        if !self.read.is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

/// The idle connections of one backend.
#[derive(Default)]
pub struct IdlePool {
    stack: Mutex<Vec<(Pooled, Instant)>>,
    /// Told when a connection comes back, for requests waiting for one.
    pub returned: Notify,
}

impl fmt::Debug for IdlePool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let idle = self.stack.lock().map(|s| s.len()).unwrap_or(0);
        f.debug_struct("IdlePool").field("idle", &idle).finish()
    }
}

impl IdlePool {
    /// The most recently used connection that can take a request `now`.
    pub fn take(&self, now: Instant) -> Option<Pooled> {
        let mut stack = self.stack.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((conn, since)) = stack.pop() {
            if now.saturating_duration_since(since) < IDLE_TIMEOUT && conn.is_usable() {
                return Some(conn);
            }
        }
        None
    }

    /// Keeps a connection whose exchange ended cleanly (request and answer
    /// framed to their ends) `now` for the next request.
    pub fn put(&self, conn: Pooled, now: Instant) {
        let mut stack = self.stack.lock().unwrap_or_else(|e| e.into_inner());
        if stack.len() < MAX_IDLE {
            stack.push((conn, now));
            drop(stack);
            self.returned.notify_one();
        }
    }

    /// Closes every idle connection (the backend is going away).
    pub fn clear(&self) {
        self.stack.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// How long a backend name's addresses are reused before asking again.
const RESOLVE_TTL: Duration = Duration::from_secs(5);

/// A backend's addresses when it is given by name (a container name, say):
/// looked up at most every few seconds rather than for every connection,
/// and again at once after a failed connect.
#[derive(Debug, Default)]
pub struct Resolved {
    cached: Mutex<Option<(Vec<std::net::SocketAddr>, Instant)>>,
}

impl Resolved {
    pub async fn addresses(&self, address: &str) -> io::Result<Vec<std::net::SocketAddr>> {
        if let Ok(addr) = address.parse::<std::net::SocketAddr>() {
            return Ok(vec![addr]);
        }
        if let Some((addrs, at)) = &*self.cached.lock().unwrap_or_else(|e| e.into_inner()) {
            if at.elapsed() < RESOLVE_TTL {
                return Ok(addrs.clone());
            }
        }
        let addrs: Vec<_> = tokio::net::lookup_host(address).await?.collect();
        *self.cached.lock().unwrap_or_else(|e| e.into_inner()) = Some((addrs.clone(), Instant::now()));
        Ok(addrs)
    }

    pub fn forget(&self) {
        *self.cached.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_coarse_clock_counts_milliseconds_from_the_start_and_never_says_0() {
        let clock = Clock::new();
        let first = clock.coarse_ms();
        assert!(first >= 1);
        std::thread::sleep(Duration::from_millis(50));
        let later = clock.coarse_ms();
        // One tick behind at most at either end (10 ms at HZ=100).
        assert!((30..5_000).contains(&(later - first)), "{first} then {later}");
    }

    #[tokio::test]
    async fn names_are_looked_up_once_in_a_while_and_again_after_forget() {
        let resolved = Resolved::default();
        let literal = resolved.addresses("127.0.0.1:9021").await.unwrap();
        assert_eq!(literal, vec!["127.0.0.1:9021".parse().unwrap()]);
        assert!(resolved.cached.lock().unwrap().is_none(), "literals are not cached");
        // localhost comes from /etc/hosts: no DNS query leaves the machine.
        let named = resolved.addresses("localhost:9021").await.unwrap();
        assert!(
            named.iter().all(|a| a.ip().is_loopback() && a.port() == 9021),
            "{named:?}"
        );
        assert!(resolved.cached.lock().unwrap().is_some());
        resolved.forget();
        assert!(resolved.cached.lock().unwrap().is_none());
    }

    #[test]
    fn draining_is_final() {
        let b = Backend::new("a", "a:1", "flow", false, BackendState::Healthy);
        b.start_draining();
        assert!(!b.set_health(true));
        assert_eq!(b.state(), BackendState::Draining);
    }

    #[test]
    fn connect_failures_back_off_and_success_clears() {
        let b = Backend::new("a", "a:1", "flow", false, BackendState::Healthy);
        assert_eq!(b.record_connect_failure(1000), Duration::from_secs(1));
        assert_eq!(b.record_connect_failure(1000), Duration::from_secs(2));
        assert!(!b.is_eligible(2500));
        assert!(b.is_eligible(3001));
        b.record_connect_success();
        assert!(b.is_eligible(1000));
    }

    #[test]
    fn in_flight_counts_until_dropped() {
        let b = Arc::new(Backend::new("a", "a:1", "flow", false, BackendState::Healthy));
        let guard = InFlight::start(&b);
        assert_eq!(b.load(), 1);
        drop(guard);
        assert_eq!(b.load(), 0);
        assert_eq!(b.counters.requests_total.load(Ordering::Relaxed), 1);
    }
}
