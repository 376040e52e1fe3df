//! Exchanges with backends. A request goes over one of its backend's idle
//! keep-alive connections, or a new one within the backend's connection
//! cap (waiting for one up to the connect timeout); the response head must
//! come within the upstream timeout. WebSocket handshakes are written by
//! hand on a connection of their own, which becomes the tunnel. Also here:
//! relaying an answer to the client, and what a client is told when there
//! is none (in words; addresses and OS errors go to the log and events).

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::Proxy;
use super::backend::{Backend, InFlight, Lease, Pooled};
use super::balance::sticky_value;
use super::events::ProxyEvent;
use super::headers::{remove_hop_by_hop, sticky_cookie};
use crate::config::proxy::Service;
use crate::serve::{self, Body, RequestBody};

/// Requests are tried on at most this many backends.
pub const MAX_ATTEMPTS: usize = 3;

/// What a client is told when no backend could take the request at all.
pub fn no_backend() -> Response<Body> {
    serve::text(StatusCode::SERVICE_UNAVAILABLE, "no healthy Flow instance is available")
}

/// The time limits of one exchange.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    /// For the response head (or the WebSocket handshake's answer).
    pub response: Duration,
}

/// Why a request did not get a response.
#[derive(Debug)]
pub enum UpstreamError {
    /// No connection could be made: the backend never saw the request.
    Connect(io::Error),
    /// Every connection the backend may have was in use for the whole wait.
    Busy,
    /// The connection failed while the request was sent or answered.
    Request(hyper::Error),
    /// No response head within the upstream timeout.
    Timeout(Duration),
    /// The WebSocket handshake failed after connecting.
    Handshake(io::Error),
    /// The backend's health check failed while the request waited for its
    /// answer (a node lost: no answer would ever come).
    WentDown,
}

impl UpstreamError {
    pub fn is_connect(&self) -> bool {
        matches!(self, UpstreamError::Connect(_))
    }

    /// The client's own request body stalled (see `forward::TimedBody`).
    pub fn is_body_timeout(&self) -> bool {
        let UpstreamError::Request(e) = self else { return false };
        let mut source = std::error::Error::source(e);
        while let Some(cause) = source {
            if cause.is::<BodyTimeout>() {
                return true;
            }
            source = cause.source();
        }
        false
    }

    /// What the client is told: what happened, in words, and nothing about
    /// addresses or the operating system.
    pub fn client_response(&self) -> Response<Body> {
        match self {
            UpstreamError::Busy => serve::text(
                StatusCode::SERVICE_UNAVAILABLE,
                "every connection to the Flow instances is in use; try again shortly",
            ),
            UpstreamError::Timeout(limit) => serve::text(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "the Flow instance did not answer in {}",
                    crate::config::duration::format(*limit)
                ),
            ),
            _ if self.is_body_timeout() => {
                let mut response = serve::text(StatusCode::REQUEST_TIMEOUT, "the request body did not arrive in time");
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                response
            }
            UpstreamError::Handshake(_) => serve::text(
                StatusCode::BAD_GATEWAY,
                "no Flow instance completed the WebSocket handshake",
            ),
            UpstreamError::Connect(_) | UpstreamError::Request(_) | UpstreamError::WentDown => {
                serve::text(StatusCode::BAD_GATEWAY, "no healthy Flow instance answered")
            }
        }
    }
}

/// The error a stalled request body ends with.
#[derive(Debug, thiserror::Error)]
#[error("the client sent no request body in time")]
pub struct BodyTimeout;

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamError::Connect(e) => write!(f, "connect: {e}"),
            UpstreamError::Busy => write!(f, "every connection the backend may have is in use"),
            UpstreamError::Timeout(limit) => write!(f, "no response head within {}s", limit.as_secs_f64()),
            UpstreamError::Handshake(e) => write!(f, "WebSocket handshake: {e}"),
            UpstreamError::WentDown => write!(f, "the instance failed its health check while the request waited"),
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
            UpstreamError::Connect(e) | UpstreamError::Handshake(e) => Some(e),
            UpstreamError::Request(e) => Some(e),
            UpstreamError::Busy | UpstreamError::Timeout(_) | UpstreamError::WentDown => None,
        }
    }
}

/// A TCP connection to `backend` (its name resolved now), without Nagle.
async fn connect_tcp(backend: &Backend, timeout: Duration) -> Result<TcpStream, UpstreamError> {
    let attempt = async {
        let mut last = None;
        for addr in backend.resolved.addresses(&backend.address).await? {
            match TcpStream::connect(addr).await {
                Ok(stream) => return Ok(stream),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other(format!("{} has no address", backend.address))))
    };
    let stream = match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            // The name may point elsewhere now (a replaced container).
            backend.resolved.forget();
            return Err(UpstreamError::Connect(e));
        }
        Err(_) => {
            return Err(UpstreamError::Connect(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no connection within {}s", timeout.as_secs_f64()),
            )));
        }
    };
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// A new connection once the backend's cap allows, or an idle one that
/// comes back meanwhile, waiting up to `timeout` for either.
async fn wait_for_connection(backend: &Backend, timeout: Duration) -> Result<(Pooled, bool), UpstreamError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let returned = backend.idle.returned.notified();
        tokio::select! {
            permit = backend.connections.clone().acquire_owned() => {
                let Ok(permit) = permit else { return Err(UpstreamError::Busy) };
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                let stream = connect_tcp(backend, left.max(Duration::from_millis(1))).await?;
                let (sender, connection) = http1::Builder::new()
                    .handshake(TokioIo::new(stream))
                    .await
                    .map_err(|e| UpstreamError::Connect(io::Error::other(e)))?;
                // The permit lives as long as the connection does.
                tokio::spawn(async move {
                    let _ = connection.await;
                    drop(permit);
                });
                return Ok((Pooled::new(sender), false));
            }
            _ = returned => {
                if let Some(conn) = backend.idle.take() {
                    return Ok((conn, true));
                }
            }
            _ = tokio::time::sleep_until(deadline) => return Err(UpstreamError::Busy),
        }
    }
}

/// Sends `request` (origin-form URI) to `backend` over a pooled connection,
/// or a new one. A request refused by a stale pooled connection before it
/// was sent goes out again on a fresh connection.
pub async fn send(
    backend: &Arc<Backend>,
    mut request: Request<RequestBody>,
    timeouts: Timeouts,
) -> Result<(Response<Incoming>, Lease), UpstreamError> {
    loop {
        let (mut conn, pooled) = match backend.idle.take() {
            Some(conn) => (conn, true),
            // Boxed: connecting is the rare path and its state is large.
            None => Box::pin(wait_for_connection(backend, timeouts.connect)).await?,
        };
        conn.deadline
            .as_mut()
            .reset(tokio::time::Instant::now() + timeouts.response);
        let Pooled { sender, deadline } = &mut conn;
        let exchange = sender.try_send_request(request);
        tokio::pin!(exchange);
        let answered = std::future::poll_fn(|cx| {
            if let Poll::Ready(result) = exchange.as_mut().poll(cx) {
                return Poll::Ready(Some(result));
            }
            deadline.as_mut().poll(cx).map(|()| None)
        })
        .await;
        match answered {
            // The connection is dropped with its unfinished exchange: closed.
            None => return Err(UpstreamError::Timeout(timeouts.response)),
            Some(Ok(response)) => return Ok((response, Lease::new(conn, backend.clone()))),
            Some(Err(mut error)) => match error.take_message() {
                // Not sent: a pooled connection closed under us. Try a new one.
                Some(unsent) if pooled => request = unsent,
                _ => return Err(UpstreamError::Request(error.into_error())),
            },
        }
    }
}

/// The most a backend's answer to a WebSocket handshake may take, head only.
const HANDSHAKE_HEAD_LIMIT: usize = 16 * 1024;

/// What a backend answered to a WebSocket handshake.
pub enum Handshake {
    /// 101: the connection is the tunnel from now on. `early` holds bytes
    /// the backend sent right after its answer (frames for the client).
    Switched {
        stream: TcpStream,
        headers: hyper::HeaderMap,
        early: Vec<u8>,
    },
    /// Any other answer. The connection is closed; the caller asks again
    /// through the pool to relay the whole answer (the handshake is a GET).
    Refused(StatusCode),
}

/// Sends a WebSocket handshake by hand on a new connection and reads the
/// answer's head. Cheaper than a client connection with upgrades: no
/// connection task and no upgrade hand-off per session. `headers` must
/// carry no body framing (`headers::prepare_handshake_headers`).
pub async fn websocket_handshake(
    backend: &Backend,
    timeouts: Timeouts,
    method: &hyper::Method,
    uri: &hyper::Uri,
    headers: &hyper::HeaderMap,
) -> Result<Handshake, UpstreamError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = connect_tcp(backend, timeouts.connect).await?;
    let mut head = Vec::with_capacity(512);
    head.extend_from_slice(method.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(uri.path_and_query().map_or("/", |p| p.as_str()).as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    let exchange = async {
        stream.write_all(&head).await?;
        let mut buf = Vec::with_capacity(1024);
        loop {
            if stream.read_buf(&mut buf).await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the backend closed the connection",
                ));
            }
            if let Some(end) = crate::websocket::peer::find_head_end(&buf) {
                return Ok((buf, end));
            }
            if buf.len() > HANDSHAKE_HEAD_LIMIT {
                return Err(io::Error::other("the answer's head is over 16 KiB"));
            }
        }
    };
    let (buf, end) = match tokio::time::timeout(timeouts.response, exchange).await {
        Ok(Ok(read)) => read,
        Ok(Err(e)) => return Err(UpstreamError::Handshake(e)),
        Err(_) => return Err(UpstreamError::Timeout(timeouts.response)),
    };
    let mut parsed = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut parsed);
    match response.parse(&buf[..end]) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) | Err(_) => {
            return Err(UpstreamError::Handshake(io::Error::other(
                "the answer is not valid HTTP/1.1",
            )));
        }
    }
    let code = response.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY);
    if status != StatusCode::SWITCHING_PROTOCOLS {
        return Ok(Handshake::Refused(status));
    }
    let mut headers = hyper::HeaderMap::with_capacity(response.headers.len());
    for h in response.headers.iter() {
        if let (Ok(name), Ok(value)) = (
            header::HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) {
            headers.append(name, value);
        }
    }
    Ok(Handshake::Switched {
        stream,
        headers,
        early: buf[end..].to_vec(),
    })
}

/// A backend's answer, with what keeps it counted until its body is sent.
pub struct Answered {
    pub response: Response<Incoming>,
    pub lease: Lease,
    pub in_flight: InFlight,
    pub started: Instant,
}

/// The client's response from a backend's answer: latency and 5xx counted,
/// hop-by-hop headers removed, the sticky cookie set (Secure over TLS), the
/// backend's in-flight count and connection held until the body is done.
pub fn relay(
    backend: &Backend,
    settings: &Service,
    sticky: Option<&str>,
    tls: bool,
    answered: Answered,
) -> Response<Body> {
    backend.latency.record(answered.started.elapsed());
    if answered.response.status().is_server_error() {
        backend.counters.responses_5xx.fetch_add(1, Ordering::Relaxed);
    }
    let (mut head, incoming) = answered.response.into_parts();
    remove_hop_by_hop(&mut head.headers);
    if let Some(name) = settings.sticky_cookie.as_deref() {
        let value = sticky_value(&backend.id);
        if sticky != Some(value.as_str()) {
            if let Some(cookie) = sticky_cookie(name, &value, tls) {
                head.headers.append(header::SET_COOKIE, cookie);
            }
        }
    }
    let body = TrackedBody {
        inner: incoming,
        _in_flight: answered.in_flight,
        _lease: answered.lease,
    };
    Response::from_parts(head, body.boxed())
}

/// Records a failed connect: the backend is skipped for a backoff.
pub fn eject(proxy: &Proxy, backend: &Backend, now_ms: u64, error: &UpstreamError) {
    if crate::fsutil::is_fd_exhaustion(error) {
        tracing::warn!(
            "out of file descriptors: cannot connect to {}; raise the limit (ulimit -n) or lower max_connections",
            backend.address
        );
        return;
    }
    let was_ejected = backend.is_ejected(now_ms);
    let backoff = backend.record_connect_failure(now_ms);
    if !was_ejected {
        let reason = format!("connect failed ({error}), ejected for {}s", backoff.as_secs());
        tracing::warn!(backend = %backend.id, "{reason}");
        proxy.events.send(ProxyEvent::BackendState {
            backend: backend.id.clone(),
            state: super::backend::BackendState::Unhealthy,
            reason,
        });
    }
}

/// A response body that keeps its backend's in-flight count until the body
/// has been sent (or dropped), so a drain waits for streaming responses too.
struct TrackedBody {
    inner: Incoming,
    _in_flight: InFlight,
    /// Returns the connection to the pool once the body is done (dropped after `inner`).
    _lease: Lease,
}

impl hyper::body::Body for TrackedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
