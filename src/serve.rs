//! HTTP plumbing shared by every server in the binary (the admin API, the
//! simulators): binding with a useful error, the accept loop, and response
//! helpers. The proxy's own listeners add limits on top (see `proxy::listener`).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde::Serialize;
use tokio::net::{TcpListener, TcpSocket};

/// The body type every handler returns.
pub type Body = BoxBody<Bytes, BoxError>;

/// Any error a body may end with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of a request the proxy sends to a backend: the client's body,
/// which may also end with the proxy's own timeout.
pub type RequestBody = BoxBody<Bytes, BoxError>;

/// An empty request body.
pub fn empty_request() -> RequestBody {
    Full::new(Bytes::new())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: the address is already in use; stop whatever holds it or choose another port")]
    InUse { addr: SocketAddr },
    #[error("cannot listen on {addr}: permission denied; ports below 1024 need root or CAP_NET_BIND_SERVICE")]
    Denied { addr: SocketAddr },
    #[error("cannot listen on {addr}: {source}")]
    Other { addr: SocketAddr, source: std::io::Error },
}

/// Accept queue length asked of the kernel (which caps it at somaxconn).
/// The usual 128 overflows when thousands of WebSocket clients connect at
/// once, and an overflow costs a client a SYN retransmit (1 s or more).
const BACKLOG: u32 = 4096;

pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    let listen = || -> std::io::Result<TcpListener> {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(BACKLOG)
    };
    listen().map_err(|source| match source.kind() {
        std::io::ErrorKind::AddrInUse => ServeError::InUse { addr },
        std::io::ErrorKind::PermissionDenied => ServeError::Denied { addr },
        _ => ServeError::Other { addr, source },
    })
}

/// What one of these servers allows: how many connections at once (further
/// clients wait in the accept queue) and how long a request head may take.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    pub max_connections: usize,
    pub header_read_timeout: std::time::Duration,
}

/// Accepts connections forever, serving HTTP/1.1 and h2c with upgrades.
pub async fn run<F, Fut>(listener: TcpListener, limits: ServerLimits, handler: F)
where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and similar: wait, don't spin.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req| {
                let handler = handler.clone();
                async move { Ok::<_, Infallible>(handler(req, peer).await) }
            });
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout);
            builder.http2().timer(hyper_util::rt::TokioTimer::new());
            if let Err(e) = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!("connection from {peer} ended: {e}");
            }
        });
    }
}

/// Like [`run`], until SIGTERM or SIGINT: for the simulators, which (unlike
/// the proxy) have nothing to drain and must stop at once when Docker stops
/// their container.
pub async fn run_until_stopped<F, Fut>(listener: TcpListener, limits: ServerLimits, handler: F) -> std::io::Result<()>
where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = run(listener, limits, handler) => {}
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    Ok(())
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

pub fn empty() -> Body {
    full(Bytes::new())
}

pub fn text(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    let mut body = message.into();
    if !body.ends_with('\n') {
        body.push('\n');
    }
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

pub fn json(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    match serde_json::to_vec_pretty(value) {
        Ok(mut bytes) => {
            bytes.push(b'\n');
            let mut response = Response::new(full(bytes));
            *response.status_mut() = status;
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the response: {e}"),
        ),
    }
}

/// Reads a whole request body up to `limit` bytes.
pub async fn read_body(body: Incoming, limit: usize) -> Result<Bytes, String> {
    let limited = http_body_util::Limited::new(body, limit);
    limited
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| format!("cannot read the request body: {e}"))
}

/// The value of one query parameter (no percent-decoding: our parameters are
/// numbers and simple names).
pub fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_query_parameters() {
        assert_eq!(query_param(Some("drain=5&x=1"), "drain"), Some("5"));
        assert_eq!(query_param(Some("flag"), "flag"), Some(""));
        assert_eq!(query_param(None, "drain"), None);
    }
}
