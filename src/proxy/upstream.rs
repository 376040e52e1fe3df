//! Connections to backends. Each backend keeps its own stack of idle
//! HTTP/1.1 connections (hyper's client connection API), so a request
//! costs no absolute-URI building, no pool-key hashing and no hand-off to
//! a pool task: pop a ready connection (or connect), send, and put the
//! connection back once its response body is done.

use std::fmt;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::backend::Backend;
use crate::serve::Body;

/// Idle connections unused this long are closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// At most this many idle connections are kept per backend.
const MAX_IDLE: usize = 512;

/// The idle connections of one backend.
#[derive(Default)]
pub struct IdlePool {
    stack: Mutex<Vec<(SendRequest<Body>, Instant)>>,
}

impl fmt::Debug for IdlePool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let idle = self.stack.lock().map(|s| s.len()).unwrap_or(0);
        f.debug_struct("IdlePool").field("idle", &idle).finish()
    }
}

impl IdlePool {
    /// The most recently used connection that can take a request now.
    fn take(&self) -> Option<SendRequest<Body>> {
        let mut stack = self.stack.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((sender, since)) = stack.pop() {
            if sender.is_ready() && since.elapsed() < IDLE_TIMEOUT {
                return Some(sender);
            }
        }
        None
    }

    fn put(&self, sender: SendRequest<Body>) {
        let mut stack = self.stack.lock().unwrap_or_else(|e| e.into_inner());
        if stack.len() < MAX_IDLE {
            stack.push((sender, Instant::now()));
        }
    }

    /// Closes every idle connection (the backend is going away).
    pub fn clear(&self) {
        self.stack.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// Why a request did not get a response.
#[derive(Debug)]
pub enum UpstreamError {
    /// No connection could be made: the backend never saw the request.
    Connect(io::Error),
    /// The connection failed while the request was sent or answered.
    Request(hyper::Error),
}

impl UpstreamError {
    pub fn is_connect(&self) -> bool {
        matches!(self, UpstreamError::Connect(_))
    }
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamError::Connect(e) => write!(f, "connect: {e}"),
            UpstreamError::Request(e) => {
                write!(f, "{e}")?;
                let mut source = std::error::Error::source(e);
                while let Some(cause) = source {
                    write!(f, ": {cause}")?;
                    source = cause.source();
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for UpstreamError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            UpstreamError::Connect(e) => Some(e),
            UpstreamError::Request(e) => Some(e),
        }
    }
}

/// A pooled connection lent to one response: it goes back to its backend's
/// pool when dropped, once the response body is done.
pub struct Lease {
    sender: Option<SendRequest<Body>>,
    backend: Arc<Backend>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(mut sender) = self.sender.take() else { return };
        if sender.is_ready() {
            self.backend.idle.put(sender);
        } else if !sender.is_closed() {
            // The connection finishes its response in its own task first.
            let backend = self.backend.clone();
            tokio::spawn(async move {
                if sender.ready().await.is_ok() {
                    backend.idle.put(sender);
                }
            });
        }
    }
}

/// Opens a new HTTP/1.1 connection to `backend`. With `upgrades`, the
/// connection can be taken over after a 101 (WebSocket).
pub async fn connect(backend: &Backend, timeout: Duration, upgrades: bool) -> Result<SendRequest<Body>, UpstreamError> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(backend.address.as_str())).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(UpstreamError::Connect(e)),
        Err(_) => {
            return Err(UpstreamError::Connect(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no connection within {}s", timeout.as_secs_f64()),
            )));
        }
    };
    let _ = stream.set_nodelay(true);
    let (sender, connection) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| UpstreamError::Connect(io::Error::other(e)))?;
    if upgrades {
        tokio::spawn(async move {
            let _ = connection.with_upgrades().await;
        });
    } else {
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
    Ok(sender)
}

/// Sends `request` (origin-form URI) to `backend` over a pooled connection,
/// or a new one. A request refused by a stale pooled connection before it
/// was sent goes out again on a fresh connection.
pub async fn send(
    backend: &Arc<Backend>,
    mut request: Request<Body>,
    connect_timeout: Duration,
) -> Result<(Response<Incoming>, Lease), UpstreamError> {
    loop {
        let (mut sender, pooled) = match backend.idle.take() {
            Some(sender) => (sender, true),
            // Boxed for the same reason: connecting is the rare path.
            None => (Box::pin(connect(backend, connect_timeout, false)).await?, false),
        };
        match sender.try_send_request(request).await {
            Ok(response) => {
                let lease = Lease {
                    sender: Some(sender),
                    backend: backend.clone(),
                };
                return Ok((response, lease));
            }
            Err(mut error) => match error.take_message() {
                // Not sent: a pooled connection closed under us. Try a new one.
                Some(unsent) if pooled => request = unsent,
                _ => return Err(UpstreamError::Request(error.into_error())),
            },
        }
    }
}
