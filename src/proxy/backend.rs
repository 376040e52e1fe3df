//! A backend (one Flow instance) and everything the proxy counts about it.
//!
//! Counters are atomics so request and WebSocket tasks update them without
//! locks; the admin API, `/metrics` and the dashboard read them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;

use crate::histogram::Histogram;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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
pub struct Clock(Instant);

impl Clock {
    pub fn new() -> Self {
        Clock(Instant::now())
    }
    /// Never 0, so 0 can mean "never".
    pub fn now_ms(&self) -> u64 {
        self.0.elapsed().as_millis() as u64 + 1
    }
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
    pub sessions: Mutex<HashMap<u64, Arc<Session>>>,
    /// Idle keep-alive connections to this backend.
    pub idle: super::upstream::IdlePool,
    /// Its addresses, when it is given by name.
    pub resolved: super::upstream::Resolved,
}

impl Backend {
    pub fn new(id: &str, address: &str, service: &str, dynamic: bool, initial: BackendState) -> Self {
        Backend {
            id: id.into(),
            address: address.into(),
            service: service.into(),
            dynamic,
            state: AtomicU8::new(initial as u8),
            counters: Counters::default(),
            latency: Histogram::default(),
            ejected_until_ms: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            removed: AtomicBool::new(false),
            close_sessions: watch::channel(false).0,
            sessions: Mutex::new(HashMap::new()),
            idle: Default::default(),
            resolved: Default::default(),
        }
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
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

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
