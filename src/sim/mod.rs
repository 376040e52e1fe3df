//! Stand-ins for what cannot run here (Flow and Management Center need a
//! registry and a licence) and a load generator that behaves like Flow UI
//! users. They are real servers and clients on real sockets.

pub mod flow;
pub mod loadgen;
pub mod mc;

/// Why a simulator stopped.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error(transparent)]
    Listen(#[from] crate::serve::ServeError),
    #[error("{0}")]
    Io(std::io::Error),
}

/// The simulators' servers take as many connections as a proxy in front of
/// them may hold sessions, and a request head in 10 s like the proxy's.
pub const SERVER_LIMITS: crate::serve::ServerLimits = crate::serve::ServerLimits {
    max_connections: 50_000,
    header_read_timeout: std::time::Duration::from_secs(10),
};
