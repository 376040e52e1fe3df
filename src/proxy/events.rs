//! The proxy's live event stream: what the admin API's `/api/v1/events`
//! sends and the dashboard follows.

use serde::{Deserialize, Serialize};

use super::backend::BackendState;
use tokio::sync::broadcast;

/// One event of `/api/v1/events`: the SSE event name is [`ProxyEvent::name`]
/// and the data this type's JSON, read back by [`super::client::AdminClient`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ProxyEvent {
    BackendAdded {
        backend: String,
        address: String,
        service: String,
    },
    BackendState {
        backend: String,
        state: BackendState,
        reason: String,
    },
    BackendRemoved {
        backend: String,
    },
    WebsocketOpened {
        backend: String,
        session: u64,
        client: String,
    },
    WebsocketClosed {
        backend: String,
        session: u64,
        reason: String,
        duration_ms: u64,
    },
    Heartbeat {
        backend: String,
        session: u64,
    },
    ConfigReloaded {
        services: usize,
        routes: usize,
    },
    ConfigRejected {
        error: String,
    },
    Certificate(crate::tls::CertEvent),
    /// A subscriber fell behind and this many events were not sent to it.
    Lagged {
        missed: u64,
    },
    RebalanceStarted {
        service: String,
    },
    RebalanceDone {
        service: String,
        /// Sessions asked to reconnect.
        moved: u64,
        balanced: bool,
    },
}

impl ProxyEvent {
    pub fn name(&self) -> &'static str {
        match self {
            ProxyEvent::BackendAdded { .. } => "backend_added",
            ProxyEvent::BackendState { .. } => "backend_state",
            ProxyEvent::BackendRemoved { .. } => "backend_removed",
            ProxyEvent::WebsocketOpened { .. } => "websocket_opened",
            ProxyEvent::WebsocketClosed { .. } => "websocket_closed",
            ProxyEvent::Heartbeat { .. } => "heartbeat",
            ProxyEvent::ConfigReloaded { .. } => "config_reloaded",
            ProxyEvent::ConfigRejected { .. } => "config_rejected",
            ProxyEvent::Certificate(_) => "certificate",
            ProxyEvent::Lagged { .. } => "lagged",
            ProxyEvent::RebalanceStarted { .. } => "rebalance_started",
            ProxyEvent::RebalanceDone { .. } => "rebalance_done",
        }
    }
}

/// Fans events out to every admin API subscriber. Sending with nobody
/// listening costs next to nothing, so the hot paths may always send.
#[derive(Debug, Clone)]
pub struct EventBus {
    sender: broadcast::Sender<ProxyEvent>,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus {
            sender: broadcast::channel(4096).0,
        }
    }
}

impl EventBus {
    pub fn send(&self, event: ProxyEvent) {
        if self.sender.receiver_count() > 0 {
            let _ = self.sender.send(event);
        }
    }

    /// True when someone listens; lets hot paths skip building an event.
    pub fn has_listeners(&self) -> bool {
        self.sender.receiver_count() > 0
    }

    pub fn subscribe(&self) -> broadcast::Receiver<ProxyEvent> {
        self.sender.subscribe()
    }
}
