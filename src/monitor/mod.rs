//! The live picture of a deployment. Feeds (Docker's containers, events and
//! stats; the proxy's backends, sessions, certificates and event stream)
//! arrive as [`Feed`] messages on one channel; [`State::apply`] folds them in,
//! and [`State::snapshot`] is what `status --json` prints and the dashboard
//! draws. Pure: time comes in with the messages.

pub mod feeds;
pub mod probe;
pub mod status;

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::deploy::plan::Role;
use crate::proxy::admin::{BackendView, CertificateView, SessionView};
use crate::proxy::backend::BackendState;
use crate::proxy::events::ProxyEvent;
use crate::tls::CertAction;

/// How many points of history each instance keeps (one per second).
pub const HISTORY: usize = 120;
/// How many event lines are kept.
pub const EVENTS: usize = 200;

/// A container of the project, as Docker reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerInfo {
    pub name: String,
    pub role: Role,
    pub index: Option<u32>,
    /// Docker's state: running, restarting, exited, created, ...
    pub state: String,
    /// When the current run started (seconds since the epoch).
    pub started_at: Option<i64>,
    pub restarts: i64,
    /// The Swarm node it runs on (None on a single engine).
    pub node: Option<String>,
    /// Its address as the proxy's backends name it, when the proxy found
    /// it by itself (Swarm's tasks): the backend is shown under its name.
    pub address: Option<String>,
}

/// One message from a feed.
#[derive(Debug, Clone)]
pub enum Feed {
    /// Every container of the project (replaces the previous list).
    Containers(Vec<ContainerInfo>),
    /// The Swarm's nodes (a Swarm deployment only).
    Nodes(Vec<crate::deploy::swarm::NodeView>),
    /// A Docker event about one of them (`start`, `die`, `restart`, ...).
    Docker {
        at_ms: u64,
        container: String,
        action: String,
    },
    /// Resource use of one container.
    Stats {
        container: String,
        cpu_percent: Option<f64>,
        memory_bytes: Option<u64>,
        net_rx_bytes: u64,
        net_tx_bytes: u64,
    },
    /// A sample of the proxy's backends, taken at `at_ms`.
    Backends {
        at_ms: u64,
        backends: Vec<BackendView>,
    },
    Sessions(Vec<SessionView>),
    Certificates(Vec<CertificateView>),
    /// An event from the proxy's stream (`/api/v1/events`).
    Proxy {
        at_ms: u64,
        event: ProxyEvent,
    },
    /// The proxy's admin API cannot be reached (why).
    ProxyDown(String),
    /// A line of progress or an error from an action (scale, restart, ...).
    Note {
        at_ms: u64,
        text: String,
        error: bool,
    },
}

/// Where an event line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventSource {
    Docker,
    Proxy,
    Certificate,
    Flowgate,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventLine {
    pub at_ms: u64,
    pub source: EventSource,
    pub text: String,
    pub error: bool,
}

/// One second of an instance's history, for the charts.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Point {
    pub rps: f64,
    pub sessions: u64,
    pub heartbeats_per_s: f64,
    pub p99_ms: f64,
}

/// A Flow instance's health as the dashboard and `status` show it: the
/// proxy's view of the backend, and `starting` before the proxy has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    Healthy,
    Unhealthy,
    Starting,
    Draining,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
            Health::Starting => "starting",
            Health::Draining => "draining",
        }
    }

    /// What a container in Docker's `running` (or not) state whose
    /// backend the proxy sees as `backend` (if it has one) amounts to.
    pub fn of(running: bool, backend: Option<BackendState>) -> Health {
        match (running, backend) {
            (false, _) => Health::Unhealthy,
            (true, Some(BackendState::Healthy)) => Health::Healthy,
            (true, Some(BackendState::Draining)) => Health::Draining,
            (true, Some(BackendState::Unhealthy)) => Health::Unhealthy,
            (true, None) => Health::Starting,
        }
    }
}

/// Everything known about one Flow instance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Instance {
    pub name: String,
    pub index: Option<u32>,
    /// Docker's state of the container.
    pub state: String,
    pub health: Health,
    pub uptime_s: Option<u64>,
    pub ws_active: Option<u64>,
    pub heartbeats_per_s: Option<f64>,
    pub last_heartbeat_ms_ago: Option<u64>,
    pub rps: Option<f64>,
    pub errors_per_s: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub cpu_percent: Option<f64>,
    pub memory_bytes: Option<u64>,
    pub net_rx_bytes: Option<u64>,
    pub net_tx_bytes: Option<u64>,
    pub restarts: Option<i64>,
    /// The Swarm node it runs on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// A non-Flow container (proxy, MC, PostgreSQL).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Component {
    pub name: String,
    pub state: String,
    /// The proxy's view of it, when it is a backend (MC).
    pub health: Option<BackendState>,
    pub cpu_percent: Option<f64>,
    pub memory_bytes: Option<u64>,
    pub restarts: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Totals {
    pub instances: usize,
    pub healthy: usize,
    pub ws_active: u64,
    pub heartbeats_per_s: f64,
    pub rps: f64,
    pub errors_per_s: f64,
}

/// What `status --json` prints: one picture of the deployment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    pub project: String,
    pub flow_url: Option<String>,
    pub mc_url: Option<String>,
    pub instances: Vec<Instance>,
    pub totals: Totals,
    pub proxy: Option<ProxyStatus>,
    pub mc: Option<Component>,
    pub postgres: Option<Component>,
    pub certificate: Option<CertificateView>,
    pub events: Vec<EventLine>,
    /// The Swarm's nodes, with the project's tasks on each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<crate::deploy::swarm::NodeView>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProxyStatus {
    #[serde(flatten)]
    pub container: Component,
    /// Whether its admin API answers (None until tried).
    pub admin: Option<bool>,
    pub admin_error: Option<String>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    cpu_percent: Option<f64>,
    memory_bytes: Option<u64>,
    net_rx_bytes: u64,
    net_tx_bytes: u64,
}

/// Rates from the last two backend samples.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Rates {
    rps: f64,
    errors_per_s: f64,
    heartbeats_per_s: f64,
}

/// The folded state of every feed.
#[derive(Debug, Clone, Default)]
pub struct State {
    pub project: String,
    pub flow_url: Option<String>,
    pub mc_url: Option<String>,
    pub containers: Vec<ContainerInfo>,
    usage: BTreeMap<String, Usage>,
    /// Latest backend sample by id, with the time it was taken.
    backends: BTreeMap<String, BackendView>,
    backends_at_ms: Option<u64>,
    rates: BTreeMap<String, Rates>,
    /// Samples of backends so far (two give rates).
    pub samples: u64,
    pub sessions: Vec<SessionView>,
    pub certificates: Vec<CertificateView>,
    pub history: BTreeMap<String, VecDeque<Point>>,
    pub events: VecDeque<EventLine>,
    pub admin: Option<Result<(), String>>,
    /// The Swarm's nodes (empty on a single engine).
    pub nodes: Vec<crate::deploy::swarm::NodeView>,
    /// Bumped on every change that shows; the dashboard redraws on change.
    pub version: u64,
}

impl State {
    pub fn new(project: &str) -> State {
        State {
            project: project.into(),
            ..State::default()
        }
    }

    pub fn apply(&mut self, feed: Feed) {
        self.version += 1;
        match feed {
            Feed::Containers(mut list) => {
                list.sort_by(|a, b| (a.role, a.index, &a.name).cmp(&(b.role, b.index, &b.name)));
                self.usage.retain(|name, _| list.iter().any(|c| &c.name == name));
                self.history.retain(|name, _| list.iter().any(|c| &c.name == name));
                // Backends sampled before their tasks were listed (a slow
                // engine) carry addresses: they take the names now.
                for c in &list {
                    let Some(address) = c.address.as_deref() else {
                        continue;
                    };
                    if let Some(mut backend) = self.backends.remove(address) {
                        backend.id = c.name.clone();
                        self.backends.insert(c.name.clone(), backend);
                    }
                    if let Some(rates) = self.rates.remove(address) {
                        self.rates.insert(c.name.clone(), rates);
                    }
                }
                self.containers = list;
            }
            Feed::Docker {
                at_ms,
                container,
                action,
            } => {
                let error = matches!(action.as_str(), "die" | "oom" | "kill");
                self.push_event(at_ms, EventSource::Docker, format!("{container}: {action}"), error);
            }
            Feed::Stats {
                container,
                cpu_percent,
                memory_bytes,
                net_rx_bytes,
                net_tx_bytes,
            } => {
                self.usage.insert(
                    container,
                    Usage {
                        cpu_percent,
                        memory_bytes,
                        net_rx_bytes,
                        net_tx_bytes,
                    },
                );
            }
            Feed::Backends { at_ms, backends } => self.apply_backends(at_ms, backends),
            Feed::Nodes(nodes) => self.nodes = nodes,
            Feed::Sessions(sessions) => self.sessions = sessions,
            Feed::Certificates(certificates) => self.certificates = certificates,
            Feed::Proxy { at_ms, event } => {
                if let Some((source, text, error)) = describe_proxy_event(&event) {
                    self.push_event(at_ms, source, text, error);
                }
            }
            Feed::ProxyDown(why) => {
                if self.admin.as_ref().is_none_or(|a| a.is_ok()) {
                    self.admin = Some(Err(why));
                }
            }
            Feed::Note { at_ms, text, error } => self.push_event(at_ms, EventSource::Flowgate, text, error),
        }
    }

    fn apply_backends(&mut self, at_ms: u64, list: Vec<BackendView>) {
        self.admin = Some(Ok(()));
        let dt = self.backends_at_ms.map(|t| at_ms.saturating_sub(t) as f64 / 1000.0);
        let mut next = BTreeMap::new();
        let names: BTreeMap<&str, &str> = self
            .containers
            .iter()
            .filter_map(|c| Some((c.address.as_deref()?, c.name.as_str())))
            .collect();
        for mut b in list {
            if let Some(name) = names.get(b.id.as_str()) {
                b.id = name.to_string();
            }
            if let (Some(dt), Some(before)) = (dt, self.backends.get(&b.id)) {
                if dt > 0.0 {
                    let rate = |now: u64, then: u64| now.saturating_sub(then) as f64 / dt;
                    let rates = Rates {
                        rps: rate(b.requests_total, before.requests_total),
                        errors_per_s: rate(
                            b.responses_5xx + b.connect_failures,
                            before.responses_5xx + before.connect_failures,
                        ),
                        heartbeats_per_s: rate(b.heartbeats_total, before.heartbeats_total),
                    };
                    self.rates.insert(b.id.clone(), rates);
                    let history = self.history.entry(b.id.clone()).or_default();
                    history.push_back(Point {
                        rps: rates.rps,
                        sessions: b.ws_active,
                        heartbeats_per_s: rates.heartbeats_per_s,
                        p99_ms: b.latency_p99_ms.unwrap_or(0.0),
                    });
                    while history.len() > HISTORY {
                        history.pop_front();
                    }
                }
            }
            next.insert(b.id.clone(), b);
        }
        self.rates.retain(|id, _| next.contains_key(id));
        self.backends = next;
        self.backends_at_ms = Some(at_ms);
        self.samples += 1;
    }

    fn push_event(&mut self, at_ms: u64, source: EventSource, text: String, error: bool) {
        self.events.push_back(EventLine {
            at_ms,
            source,
            text,
            error,
        });
        while self.events.len() > EVENTS {
            self.events.pop_front();
        }
    }

    /// The WebSocket sessions of one instance.
    pub fn sessions_of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a SessionView> + 'a {
        self.sessions.iter().filter(move |s| s.backend == name)
    }

    fn component(&self, c: &ContainerInfo, health: Option<BackendState>) -> Component {
        let usage = self.usage.get(&c.name);
        Component {
            name: c.name.clone(),
            state: c.state.clone(),
            health,
            cpu_percent: usage.and_then(|u| u.cpu_percent).map(round1),
            memory_bytes: usage.and_then(|u| u.memory_bytes),
            restarts: Some(c.restarts),
        }
    }

    /// The picture at `now_unix` (seconds since the epoch, for uptimes).
    pub fn snapshot(&self, now_unix: i64) -> Snapshot {
        let mut instances = Vec::new();
        for c in self.containers.iter().filter(|c| c.role == Role::Flow) {
            let backend = self.backends.get(&c.name);
            let rates = self.rates.get(&c.name);
            let usage = self.usage.get(&c.name);
            let running = c.state == "running";
            let health = Health::of(running, backend.map(|b| b.state));
            instances.push(Instance {
                name: c.name.clone(),
                index: c.index,
                state: c.state.clone(),
                health,
                uptime_s: c
                    .started_at
                    .filter(|_| running)
                    .map(|t| now_unix.saturating_sub(t).max(0) as u64),
                ws_active: backend.map(|b| b.ws_active),
                heartbeats_per_s: rates.map(|r| round1(r.heartbeats_per_s)),
                last_heartbeat_ms_ago: backend.and_then(|b| b.last_heartbeat_ms_ago),
                rps: rates.map(|r| round1(r.rps)),
                errors_per_s: rates.map(|r| round1(r.errors_per_s)),
                p50_ms: backend.and_then(|b| b.latency_p50_ms),
                p99_ms: backend.and_then(|b| b.latency_p99_ms),
                cpu_percent: usage.and_then(|u| u.cpu_percent).map(round1),
                memory_bytes: usage.and_then(|u| u.memory_bytes),
                net_rx_bytes: usage.map(|u| u.net_rx_bytes),
                net_tx_bytes: usage.map(|u| u.net_tx_bytes),
                restarts: Some(c.restarts),
                node: c.node.clone(),
            });
        }
        let totals = Totals {
            instances: instances.len(),
            healthy: instances.iter().filter(|i| i.health == Health::Healthy).count(),
            ws_active: instances.iter().filter_map(|i| i.ws_active).sum(),
            heartbeats_per_s: round1(instances.iter().filter_map(|i| i.heartbeats_per_s).sum()),
            rps: round1(instances.iter().filter_map(|i| i.rps).sum()),
            errors_per_s: round1(instances.iter().filter_map(|i| i.errors_per_s).sum()),
        };
        let find = |role: Role| self.containers.iter().find(|c| c.role == role);
        let mc = find(Role::Mc).map(|c| {
            let health = self.backends.values().find(|b| b.service == "mc").map(|b| b.state);
            self.component(c, health)
        });
        let proxy = find(Role::Proxy).map(|c| ProxyStatus {
            container: self.component(c, None),
            admin: self.admin.as_ref().map(|a| a.is_ok()),
            admin_error: self.admin.as_ref().and_then(|a| a.clone().err()),
        });
        Snapshot {
            project: self.project.clone(),
            flow_url: self.flow_url.clone(),
            mc_url: self.mc_url.clone(),
            instances,
            totals,
            proxy,
            mc,
            postgres: find(Role::Postgres).map(|c| self.component(c, None)),
            certificate: self.certificates.first().cloned(),
            events: self.events.iter().rev().take(20).rev().cloned().collect(),
            nodes: self.nodes.clone(),
        }
    }
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// The event line for a proxy event, or None for the busy ones (sessions
/// and heartbeats are counted, not listed).
fn describe_proxy_event(event: &ProxyEvent) -> Option<(EventSource, String, bool)> {
    Some(match event {
        ProxyEvent::BackendAdded { backend, address, .. } => {
            (EventSource::Proxy, format!("{backend} added ({address})"), false)
        }
        ProxyEvent::BackendRemoved { backend } => (EventSource::Proxy, format!("{backend} removed"), false),
        ProxyEvent::BackendState { backend, state, reason } => {
            let state_name = state.as_str();
            let text = if reason.is_empty() {
                format!("{backend} is {state_name}")
            } else {
                format!("{backend} is {state_name}: {reason}")
            };
            (EventSource::Proxy, text, *state == BackendState::Unhealthy)
        }
        ProxyEvent::ConfigReloaded { .. } => (EventSource::Proxy, "configuration reloaded".into(), false),
        ProxyEvent::ConfigRejected { error } => (EventSource::Proxy, format!("configuration refused: {error}"), true),
        ProxyEvent::Certificate(c) => {
            let action = match c.action {
                CertAction::Installed => "installed",
                CertAction::Failed => "failed",
            };
            let mut text = format!("certificate {action} for {}", c.domains.join(", "));
            if !c.detail.is_empty() {
                text.push_str(&format!(": {}", c.detail));
            }
            (EventSource::Certificate, text, c.action == CertAction::Failed)
        }
        ProxyEvent::Lagged { missed } => (EventSource::Proxy, format!("missed {missed} events"), true),
        ProxyEvent::RebalanceStarted { service } => (
            EventSource::Proxy,
            format!("rebalancing the sessions of {service}"),
            false,
        ),
        ProxyEvent::RebalanceDone {
            service,
            moved,
            balanced,
        } => (
            EventSource::Proxy,
            format!(
                "{service}: {moved} sessions moved; {}",
                if *balanced {
                    "even now"
                } else {
                    "stopped before it was even"
                }
            ),
            !balanced,
        ),
        ProxyEvent::WebsocketOpened { .. } | ProxyEvent::WebsocketClosed { .. } | ProxyEvent::Heartbeat { .. } => {
            return None;
        }
    })
}

#[cfg(test)]
pub mod tests {
    use super::*;

    pub fn backend(id: &str, requests: u64, heartbeats: u64, ws: u64, state: BackendState) -> BackendView {
        BackendView {
            id: id.into(),
            address: format!("{id}:9021"),
            service: "flow".into(),
            state,
            ejected: false,
            dynamic: true,
            active_requests: 0,
            requests_total: requests,
            responses_5xx: 0,
            connect_failures: 0,
            retries: 0,
            ws_active: ws,
            ws_total: ws,
            ws_frames_in: 0,
            ws_frames_out: 0,
            ws_bytes_in: 0,
            ws_bytes_out: 0,
            pings: 0,
            pongs: 0,
            heartbeats_total: heartbeats,
            last_heartbeat_ms_ago: Some(1200),
            latency_p50_ms: Some(1.5),
            latency_p99_ms: Some(9.0),
        }
    }

    #[test]
    fn backends_sampled_before_their_swarm_tasks_were_listed_take_the_tasks_names() {
        let mut state = State::new("p");
        // The proxy names a Swarm task's backend by its address.
        state.apply(Feed::Backends {
            at_ms: 1_000,
            backends: vec![backend("10.0.1.5:9021", 10, 0, 2, BackendState::Healthy)],
        });
        let mut task = container("p-flow-1", Role::Flow, Some(1), "running");
        task.address = Some("10.0.1.5:9021".into());
        task.node = Some("node-1".into());
        state.apply(Feed::Containers(vec![task]));
        let snap = state.snapshot(1_060);
        assert_eq!(snap.instances[0].health, Health::Healthy, "{snap:?}");
        assert_eq!(snap.instances[0].ws_active, Some(2));
    }

    fn container(name: &str, role: Role, index: Option<u32>, state: &str) -> ContainerInfo {
        ContainerInfo {
            name: name.into(),
            role,
            index,
            state: state.into(),
            started_at: Some(1_000),
            restarts: 0,
            node: None,
            address: None,
        }
    }

    #[test]
    fn two_samples_give_rates_and_health() {
        let mut state = State::new("p");
        state.apply(Feed::Containers(vec![
            container("p-flow-2", Role::Flow, Some(2), "running"),
            container("p-proxy", Role::Proxy, None, "running"),
            container("p-flow-1", Role::Flow, Some(1), "running"),
            container("p-flow-3", Role::Flow, Some(3), "exited"),
        ]));
        state.apply(Feed::Backends {
            at_ms: 1_000,
            backends: vec![backend("p-flow-1", 100, 10, 4, BackendState::Healthy)],
        });
        let first = state.snapshot(1_060);
        assert_eq!(first.instances[0].rps, None, "one sample has no rate");
        state.apply(Feed::Backends {
            at_ms: 3_000,
            backends: vec![
                backend("p-flow-1", 300, 30, 5, BackendState::Healthy),
                backend("p-flow-2", 0, 0, 0, BackendState::Draining),
            ],
        });
        let snap = state.snapshot(1_060);
        let names: Vec<&str> = snap.instances.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["p-flow-1", "p-flow-2", "p-flow-3"]);
        let one = &snap.instances[0];
        assert_eq!(
            (one.rps, one.heartbeats_per_s, one.ws_active),
            (Some(100.0), Some(10.0), Some(5))
        );
        assert_eq!(one.uptime_s, Some(60));
        let health: Vec<&str> = snap.instances.iter().map(|i| i.health.as_str()).collect();
        assert_eq!(health, ["healthy", "draining", "unhealthy"]);
        assert_eq!(
            (snap.totals.healthy, snap.totals.instances, snap.totals.ws_active),
            (1, 3, 5)
        );
        assert_eq!(state.history["p-flow-1"].len(), 1);
        assert!(snap.proxy.unwrap().admin.unwrap());
    }

    #[test]
    fn busy_proxy_events_are_not_listed() {
        let mut state = State::new("p");
        let busy = [
            ProxyEvent::Heartbeat {
                backend: "x".into(),
                session: 1,
            },
            ProxyEvent::WebsocketOpened {
                backend: "x".into(),
                session: 1,
                client: "127.0.0.1:1".into(),
            },
            ProxyEvent::WebsocketClosed {
                backend: "x".into(),
                session: 1,
                reason: "client".into(),
                duration_ms: 5,
            },
        ];
        for event in busy {
            state.apply(Feed::Proxy { at_ms: 1, event });
        }
        state.apply(Feed::Proxy {
            at_ms: 2,
            event: ProxyEvent::BackendState {
                backend: "p-flow-1".into(),
                state: BackendState::Unhealthy,
                reason: "health check failed".into(),
            },
        });
        assert_eq!(state.events.len(), 1);
        assert_eq!(state.events[0].text, "p-flow-1 is unhealthy: health check failed");
        assert!(state.events[0].error);
    }

    #[test]
    fn history_and_events_are_bounded() {
        let mut state = State::new("p");
        for i in 0..(HISTORY as u64 + 10) {
            state.apply(Feed::Backends {
                at_ms: i * 1000,
                backends: vec![backend("a", i, 0, 0, BackendState::Healthy)],
            });
            state.apply(Feed::Note {
                at_ms: i,
                text: "x".into(),
                error: false,
            });
            state.apply(Feed::Note {
                at_ms: i,
                text: "y".into(),
                error: false,
            });
        }
        assert_eq!(state.history["a"].len(), HISTORY);
        assert_eq!(state.events.len(), EVENTS);
    }
}
