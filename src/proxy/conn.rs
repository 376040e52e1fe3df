//! What the proxy knows about one client connection, and what it holds for
//! it: a slot of `max_connections` and of the client's per-address share,
//! both kept until the connection ends, and for a WebSocket session until
//! the session ends. It also tracks whether the connection is idle, for
//! the keep-alive timeout.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::header::HeaderValue;
use tokio::sync::OwnedSemaphorePermit;

use super::backend::Clock;

/// Open connections per client address, for `max_connections_per_ip`.
#[derive(Debug, Default)]
pub struct ClientCounts {
    open: Mutex<HashMap<IpAddr, u32>>,
}

impl ClientCounts {
    /// Counts a new connection from `ip`, or None when it already has `limit`.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, limit: usize) -> Option<ClientSlot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(ip).or_insert(0);
        if limit > 0 && *count as usize >= limit {
            return None;
        }
        *count += 1;
        Some(ClientSlot {
            counts: self.clone(),
            ip,
        })
    }

    #[cfg(test)]
    fn open_from(&self, ip: IpAddr) -> u32 {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.get(&ip).copied().unwrap_or(0)
    }
}

/// One connection's share of its address's count; given back on drop.
#[derive(Debug)]
pub struct ClientSlot {
    counts: Arc<ClientCounts>,
    ip: IpAddr,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.counts.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// What the client connected with: the listener's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// What the handler knows about the client connection.
#[derive(Debug)]
pub struct ConnInfo {
    pub client: SocketAddr,
    /// What the client used.
    pub scheme: Scheme,
    /// The port the client connected to.
    pub port: u16,
    /// The peer is a trusted proxy: its forwarded headers are kept.
    pub trusted: bool,
    /// The client's IP address and the port as header values, made once per
    /// connection rather than per request.
    pub client_ip: HeaderValue,
    pub port_value: HeaderValue,
    /// Held for the connection's life, or handed to its WebSocket session.
    slots: Mutex<Option<Slots>>,
    /// Whether the connection is idle; shared with the stream, which is told
    /// when bytes arrive (and which a WebSocket session keeps, so this part
    /// is small and the rest goes with the connection).
    pub activity: Arc<Activity>,
}

impl ConnInfo {
    pub fn new(client: SocketAddr, scheme: Scheme, port: u16) -> ConnInfo {
        ConnInfo {
            client,
            scheme,
            port,
            trusted: false,
            client_ip: HeaderValue::from_str(&client.ip().to_string()).unwrap_or(HeaderValue::from_static("unknown")),
            port_value: HeaderValue::from(port),
            slots: Mutex::new(None),
            activity: Arc::new(Activity::new(Clock::new())),
        }
    }

    /// A connection holding its slots, from a peer that is or is not trusted.
    pub fn holding(
        mut self,
        slot: OwnedSemaphorePermit,
        client_slot: Option<ClientSlot>,
        trusted: bool,
        clock: Clock,
    ) -> ConnInfo {
        self.slots = Mutex::new(Some(Slots {
            _connection: slot,
            _client: client_slot,
        }));
        self.trusted = trusted;
        self.activity = Arc::new(Activity::new(clock));
        self
    }

    /// Marks a request in flight until the guard is dropped (with its response body).
    pub fn start_request(&self) -> RequestGuard {
        self.activity.in_flight.fetch_add(1, Ordering::Relaxed);
        self.activity.head_started_ms.store(0, Ordering::Relaxed);
        RequestGuard {
            activity: self.activity.clone(),
        }
    }

    /// Hands the connection's slots to its WebSocket session, which outlives
    /// the connection's other state and holds them until it ends.
    pub fn take_slots(&self) -> Option<Slots> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Whether a connection has requests in flight, and since when it is idle.
/// Its stamps come from the coarse clock (`Clock::coarse_ms`): two per
/// request, for timeouts counted in seconds.
#[derive(Debug)]
pub struct Activity {
    clock: Clock,
    in_flight: AtomicU32,
    /// Clock time the connection last became idle (no request in flight).
    idle_since_ms: AtomicU64,
    /// Clock time the first byte arrived while idle (a head started), or 0.
    head_started_ms: AtomicU64,
    /// The client speaks HTTP/2 (frames such as PING arrive while idle).
    pub http2: AtomicBool,
}

impl Activity {
    fn new(clock: Clock) -> Self {
        Activity {
            idle_since_ms: AtomicU64::new(clock.coarse_ms()),
            clock,
            in_flight: AtomicU32::new(0),
            head_started_ms: AtomicU64::new(0),
            http2: AtomicBool::new(false),
        }
    }

    /// Called by the stream when bytes arrive.
    pub fn bytes_arrived(&self) {
        if self.in_flight.load(Ordering::Relaxed) == 0 && self.head_started_ms.load(Ordering::Relaxed) == 0 {
            self.head_started_ms.store(self.clock.coarse_ms(), Ordering::Relaxed);
        }
    }

    /// How long until this connection is due to be closed, or None if it is
    /// due now. A connection with a request in flight is never due; an idle
    /// one is due `keepalive` after it became idle, or `head` after the
    /// next request head started arriving (HTTP/1.1 only).
    pub fn time_left(&self, keepalive: Duration, head: Duration) -> Option<Duration> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return Some(keepalive);
        }
        let now = self.clock.coarse_ms();
        let started = self.head_started_ms.load(Ordering::Relaxed);
        let (since, limit) = if started != 0 && !self.http2.load(Ordering::Relaxed) {
            (started, head)
        } else {
            (self.idle_since_ms.load(Ordering::Relaxed), keepalive)
        };
        let due = since.saturating_add(u64::try_from(limit.as_millis()).unwrap_or(u64::MAX));
        (due > now).then(|| Duration::from_millis(due - now))
    }
}

/// A connection's share of `max_connections` and of its address's limit.
#[derive(Debug)]
pub struct Slots {
    _connection: OwnedSemaphorePermit,
    _client: Option<ClientSlot>,
}

/// A request in flight on a connection.
#[derive(Debug)]
pub struct RequestGuard {
    activity: Arc<Activity>,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let activity = &self.activity;
        if activity.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            activity
                .idle_since_ms
                .store(activity.clock.coarse_ms(), Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_address_counts_refuse_beyond_the_limit_and_free_on_drop() {
        let counts = Arc::new(ClientCounts::default());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let a = counts.admit(ip, 2).unwrap();
        let _b = counts.admit(ip, 2).unwrap();
        assert!(counts.admit(ip, 2).is_none());
        assert!(counts.admit("192.0.2.2".parse().unwrap(), 2).is_some());
        drop(a);
        assert_eq!(counts.open_from(ip), 1);
        assert!(counts.admit(ip, 2).is_some());
        assert!(counts.admit(ip, 0).is_some(), "0 means no limit");
    }

    #[test]
    fn a_connection_with_a_request_in_flight_is_never_idle() {
        let conn = ConnInfo::new("127.0.0.1:1".parse().unwrap(), Scheme::Http, 80);
        let activity = conn.activity.clone();
        let guard = conn.start_request();
        assert_eq!(activity.time_left(Duration::ZERO, Duration::ZERO), Some(Duration::ZERO));
        drop(guard);
        assert_eq!(activity.time_left(Duration::ZERO, Duration::from_secs(9)), None);
        assert!(
            activity
                .time_left(Duration::from_secs(60), Duration::from_secs(9))
                .unwrap()
                > Duration::from_secs(50)
        );
        activity.bytes_arrived();
        let left = activity
            .time_left(Duration::from_secs(60), Duration::from_secs(9))
            .unwrap();
        assert!(
            left <= Duration::from_secs(9),
            "a started head has the head timeout: {left:?}"
        );
    }
}
