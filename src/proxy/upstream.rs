//! Exchanges with backends. A request goes over one of its backend's idle
//! keep-alive connections, or a new one within the backend's connection
//! cap (waiting for one up to the connect timeout); the response head must
//! come within the upstream timeout. WebSocket handshakes are written by
//! hand on a connection of their own, which becomes the tunnel. Also here:
//! relaying an answer to the client, and what a client is told when there
//! is none (in words; addresses and OS errors go to the log and events).

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Frame, SizeHint};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Proxy;
use super::backend::{Backend, InFlight, Pooled};
use super::balance::sticky_value;
use super::events::ProxyEvent;
use super::h1::{
    self, ChunkedDecoder, Decoded, Fields, Malformed, Outgoing, RequestFraming, RequestHead, ResponseFraming,
    ResponseHead,
};
use super::headers::{remove_hop_by_hop, sticky_cookie};
use crate::config::proxy::Service;
use crate::serve::{self, Body, BoxError, RequestBody};

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
    /// The longest silence within the response body.
    pub body: Duration,
}

/// Why a request did not get a response.
#[derive(Debug)]
pub enum UpstreamError {
    /// No connection could be made: the backend never saw the request.
    Connect(io::Error),
    /// Every connection the backend may have was in use for the whole wait.
    Busy,
    /// The exchange failed once the request was on its way.
    Request(ExchangeError),
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
        matches!(self, UpstreamError::Request(ExchangeError::Body(e)) if e.is::<BodyTimeout>())
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

/// How an exchange failed once its request was on the way.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// Before any byte of an answer: the backend closed a kept-alive
    /// connection (or reset it) as the request went out.
    #[error("the backend closed the connection before answering")]
    Closed,
    #[error("the connection failed: {0}")]
    Io(#[from] io::Error),
    #[error("the backend's answer is not valid HTTP/1.1: {0}")]
    Malformed(#[from] Malformed),
    /// The answer's body stopped arriving for the body timeout.
    #[error("the backend sent no byte of the response body for {}", crate::config::duration::format(*.0))]
    BodyStalled(Duration),
    /// The client's request body failed (stalled, or the client went).
    #[error("the request body failed: {0}")]
    Body(BoxError),
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
            UpstreamError::Request(e) => write!(f, "{e}"),
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
                // The permit lives as long as the connection does.
                return Ok((Pooled::new(stream, permit), false));
            }
            _ = returned => {
                if let Some(conn) = backend.idle.take(Instant::now()) {
                    return Ok((conn, true));
                }
            }
            _ = tokio::time::sleep_until(deadline) => return Err(UpstreamError::Busy),
        }
    }
}

/// Methods whose request may be sent twice with the effect of once.
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// Bytes asked of the kernel per read from a backend.
const READ_CHUNK: usize = 8 * 1024;
/// Reads of a long body ask for at most this much at once.
const READ_CHUNK_MAX: usize = 64 * 1024;

/// Sends `request` (origin-form URI) to `backend` over a pooled connection,
/// or a new one, and reads the answer's head; the body follows as the
/// response's body is read. A bodyless idempotent request that a kept-alive
/// connection closed under goes out again on a fresh connection.
pub async fn send(
    backend: &Arc<Backend>,
    request: Request<RequestBody>,
    timeouts: Timeouts,
) -> Result<Answer, UpstreamError> {
    let (parts, body) = request.into_parts();
    let body = (!body.is_end_stream()).then_some(body);
    let head = RequestHead {
        method: &parts.method,
        uri: &parts.uri,
        fields: Outgoing::Map(&parts.headers),
        forwarded: None,
    };
    send_parts(backend, &head, body, timeouts, Instant::now()).await
}

/// A backend's answer: its status, its fields as the backend sent them, its
/// body still to be read, and when its head arrived.
pub struct Answer {
    pub status: StatusCode,
    pub fields: Fields,
    pub body: UpstreamBody,
    pub at: Instant,
}

/// `send` for a request given as its parts, borrowed: a request that may
/// be tried again on another backend is not copied for each attempt.
/// `started` is when the caller last read the clock (the request's start);
/// the answer carries the time its head arrived. The clock is read once
/// here, not at each step that needs a time.
pub async fn send_parts(
    backend: &Arc<Backend>,
    head: &RequestHead<'_>,
    mut body: Option<RequestBody>,
    timeouts: Timeouts,
    started: Instant,
) -> Result<Answer, UpstreamError> {
    let bodyless = body.is_none();
    loop {
        let (mut conn, pooled, from) = match backend.idle.take(started) {
            Some(conn) => (conn, true, started),
            None => {
                // Boxed: connecting is the rare path and its state is large.
                let (conn, pooled) = Box::pin(wait_for_connection(backend, timeouts.connect)).await?;
                // The answer is timed from when the connection came.
                (conn, pooled, Instant::now())
            }
        };
        conn.deadline
            .as_mut()
            .reset(tokio::time::Instant::from_std(from) + timeouts.response);
        let framing = h1::encode_request_head(&mut conn.write, head, bodyless);
        match exchange(&mut conn, framing, body.take(), head.method, timeouts.response).await {
            Ok((head, sent)) => {
                let at = Instant::now();
                let keep_alive = head.keep_alive && sent;
                return Ok(Answer {
                    status: head.status,
                    fields: head.fields,
                    body: UpstreamBody::new(conn, backend, head.framing, keep_alive, timeouts.body, at),
                    at,
                });
            }
            // Closed as it was reused (the backend's keep-alive ran out): try a new one.
            Err(UpstreamError::Request(ExchangeError::Closed)) if pooled && bodyless && is_idempotent(head.method) => {}
            Err(error) => return Err(error),
        }
    }
}

/// Writes the request (head, then body) and reads the answer's head, both
/// at once: a backend may answer before it has read the whole body (a 413,
/// say), and its answer is what the client gets. Returns the head and
/// whether the request went out whole (else the connection is not reused).
async fn exchange(
    conn: &mut Pooled,
    framing: RequestFraming,
    body: Option<RequestBody>,
    method: &Method,
    limit: Duration,
) -> Result<(ResponseHead, bool), UpstreamError> {
    let Pooled {
        stream,
        read,
        write,
        deadline,
        ..
    } = conn;
    let (mut reader, mut writer) = stream.split();
    let send = async {
        writer.write_all(write).await?;
        if let Some(body) = body {
            send_body(&mut writer, body, framing, limit).await?;
        }
        Ok::<(), ExchangeError>(())
    };
    let answer = read_head(&mut reader, read, method);
    tokio::pin!(send, answer);
    let mut sent = false;
    let mut sending = true;
    loop {
        tokio::select! {
            biased;
            head = &mut answer => {
                let head = head.map_err(UpstreamError::Request)?;
                if sending && head.keep_alive {
                    // An answer before the whole body that keeps the
                    // connection (a backend that reads or discards the
                    // rest): the rest goes out, or the client's upload
                    // would be cut and both connections lost. One that
                    // closes is relayed at once (RFC 9112, 9.5).
                    sent = sent_whole((&mut send).await)?;
                }
                return Ok((head, sent));
            }
            result = &mut send, if sending => {
                sending = false;
                sent = sent_whole(result)?;
            }
            () = deadline.as_mut() => return Err(UpstreamError::Timeout(limit)),
        }
    }
}

/// Whether the request went out whole. The client's body failing ends the
/// exchange; the backend no longer reading does not: its answer may still come.
fn sent_whole(result: Result<(), ExchangeError>) -> Result<bool, UpstreamError> {
    match result {
        Ok(()) => Ok(true),
        Err(ExchangeError::Body(e)) => Err(UpstreamError::Request(ExchangeError::Body(e))),
        Err(_) => Ok(false),
    }
}

/// Copies the client's request body to the backend with the framing the
/// head announced; a body that ends short of (or runs past) its
/// Content-Length is an error, never sent as something else.
async fn send_body(
    writer: &mut tokio::net::tcp::WriteHalf<'_>,
    mut body: RequestBody,
    framing: RequestFraming,
    limit: Duration,
) -> Result<(), ExchangeError> {
    let mut left = match framing {
        RequestFraming::Length(n) => Some(n),
        RequestFraming::Chunked => None,
        RequestFraming::Empty => Some(0),
    };
    let mut line = Vec::with_capacity(20);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(ExchangeError::Body)?;
        let Ok(data) = frame.into_data() else { continue };
        if data.is_empty() {
            continue;
        }
        match &mut left {
            Some(left) => {
                *left = left
                    .checked_sub(data.len() as u64)
                    .ok_or_else(|| ExchangeError::Body("the request body is longer than its Content-Length".into()))?;
                within(limit, writer.write_all(&data)).await?;
            }
            None => {
                line.clear();
                h1::chunk_header(data.len(), &mut line);
                let mut slices = [
                    io::IoSlice::new(&line),
                    io::IoSlice::new(&data),
                    io::IoSlice::new(b"\r\n"),
                ];
                within(limit, write_all_vectored(writer, &mut slices)).await?;
            }
        }
    }
    match left {
        Some(0) => Ok(()),
        Some(_) => Err(ExchangeError::Body(
            "the request body ended before its Content-Length".into(),
        )),
        None => Ok(within(limit, writer.write_all(h1::LAST_CHUNK)).await?),
    }
}

/// A write of the request body that the backend does not take within
/// `limit` fails: a backend that answered and then stopped reading cannot
/// hold the exchange (and its client) for ever.
async fn within(limit: Duration, write: impl std::future::Future<Output = io::Result<()>>) -> io::Result<()> {
    tokio::time::timeout(limit, write).await.unwrap_or_else(|_| {
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the backend stopped reading the request body",
        ))
    })
}

pub async fn write_all_vectored<W: AsyncWrite + Unpin>(
    writer: &mut W,
    mut slices: &mut [io::IoSlice<'_>],
) -> io::Result<()> {
    while !slices.is_empty() {
        let n = writer.write_vectored(slices).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        io::IoSlice::advance_slices(&mut slices, n);
    }
    Ok(())
}

/// Reads up to the answer's final head, skipping interim (1xx) ones; the
/// bytes after it stay in `read` for the body.
async fn read_head(
    reader: &mut tokio::net::tcp::ReadHalf<'_>,
    read: &mut BytesMut,
    method: &Method,
) -> Result<ResponseHead, ExchangeError> {
    let mut answered = false;
    loop {
        if !read.is_empty() {
            answered = true;
            if let Some(head) = h1::take_response_head(read, method)? {
                return Ok(head);
            }
        }
        read.reserve(READ_CHUNK);
        match reader.read_buf(read).await {
            Ok(0) if !answered => return Err(ExchangeError::Closed),
            Ok(0) => {
                return Err(ExchangeError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the backend closed the connection within the answer's head",
                )));
            }
            Ok(_) => {}
            Err(e) if !answered && matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe) => {
                return Err(ExchangeError::Closed);
            }
            Err(e) => return Err(e.into()),
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
    let mut stream = connect_tcp(backend, timeouts.connect).await?;
    let mut head = Vec::with_capacity(512);
    // A GET without framing headers: the writer adds none.
    let request = RequestHead {
        method,
        uri,
        fields: Outgoing::Map(headers),
        forwarded: None,
    };
    h1::encode_request_head(&mut head, &request, true);
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
    pub answer: Answer,
    pub in_flight: InFlight,
    /// When the request started (its latency runs to the answer's head).
    pub started: Instant,
}

/// What the client gets: an answer the proxy made itself, or a backend's.
pub enum Reply {
    Made(Response<Body>),
    Relayed(Relayed),
}

impl From<Response<Body>> for Reply {
    fn from(response: Response<Body>) -> Self {
        Reply::Made(response)
    }
}

impl Reply {
    /// The reply as hyper's response.
    pub fn into_response(self) -> Response<Body> {
        match self {
            Reply::Made(response) => response,
            Reply::Relayed(relayed) => relayed.into_response(),
        }
    }
}

/// A backend's answer on its way to the client, its fields still as the
/// backend wrote them: the plain HTTP/1.1 path writes them out as they are
/// (`end_to_end`); hyper's side gets them as a map (`into_response`).
pub struct Relayed {
    pub status: StatusCode,
    pub fields: Fields,
    /// The sticky cookie to set: the client did not send this backend's.
    pub cookie: Option<HeaderValue>,
    pub body: Body,
}

impl Relayed {
    /// The fields that go on to the client (no hop-by-hop ones).
    pub fn end_to_end(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        super::headers::end_to_end(&self.fields)
    }

    pub fn into_response(self) -> Response<Body> {
        let mut headers = self.fields.to_map();
        remove_hop_by_hop(&mut headers);
        if let Some(cookie) = self.cookie {
            headers.append(header::SET_COOKIE, cookie);
        }
        let mut response = Response::new(self.body);
        *response.status_mut() = self.status;
        *response.headers_mut() = headers;
        response
    }
}

/// The client's reply from a backend's answer: latency and 5xx counted,
/// the sticky cookie chosen (Secure over TLS), the backend's in-flight
/// count and connection held until the body is done. Hop-by-hop headers
/// are left out as the head is written (`Relayed`).
pub fn relay(backend: &Backend, settings: &Service, sticky: Option<&str>, tls: bool, answered: Answered) -> Reply {
    let Answered {
        answer,
        in_flight,
        started,
    } = answered;
    backend.latency.record(answer.at.saturating_duration_since(started));
    if answer.status.is_server_error() {
        backend.counters.responses_5xx.fetch_add(1, Ordering::Relaxed);
    }
    let cookie = settings.sticky_cookie.as_deref().and_then(|name| {
        let value = sticky_value(&backend.id);
        if sticky == Some(value.as_str()) {
            return None;
        }
        sticky_cookie(name, &value, tls)
    });
    let body = TrackedBody {
        inner: answer.body,
        _in_flight: in_flight,
    };
    Reply::Relayed(Relayed {
        status: answer.status,
        fields: answer.fields,
        cookie,
        body: body.boxed(),
    })
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
    inner: UpstreamBody,
    _in_flight: InFlight,
}

impl hyper::body::Body for TrackedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A backend's answer's body, read from its connection as the client takes
/// it. The connection goes back to the backend's idle pool the moment the
/// body has been read to its end (when both sides may keep it alive); a
/// body dropped before its end closes the connection.
pub struct UpstreamBody {
    state: BodyState,
}

enum BodyState {
    Done,
    /// The whole body, read with the head (the connection is back already).
    Whole(Bytes),
    Streaming(Streaming),
}

struct Streaming {
    conn: Pooled,
    backend: Arc<Backend>,
    framing: Framing,
    /// Both sides may keep the connection (never so for a body read to the close).
    keep_alive: bool,
    /// The longest silence allowed, timed by the connection's own timer
    /// (the head's deadline, which has done its work by now).
    idle: Duration,
    /// The timer runs from the first wait after the last bytes that came.
    waiting: bool,
}

enum Framing {
    /// This many bytes left.
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
}

impl UpstreamBody {
    fn new(
        mut conn: Pooled,
        backend: &Arc<Backend>,
        framing: ResponseFraming,
        keep_alive: bool,
        idle: Duration,
        now: Instant,
    ) -> Self {
        let framing = match framing {
            ResponseFraming::Empty => {
                release(conn, backend, keep_alive, now);
                return UpstreamBody { state: BodyState::Done };
            }
            ResponseFraming::Length(n) if n <= conn.read.len() as u64 => {
                let whole = conn.read.split_to(n as usize).freeze();
                release(conn, backend, keep_alive, now);
                return UpstreamBody {
                    state: BodyState::Whole(whole),
                };
            }
            ResponseFraming::Length(n) => Framing::Length(n),
            ResponseFraming::Chunked => Framing::Chunked(ChunkedDecoder::default()),
            ResponseFraming::UntilClose => Framing::UntilClose,
        };
        UpstreamBody {
            state: BodyState::Streaming(Streaming {
                conn,
                backend: backend.clone(),
                framing,
                keep_alive,
                idle,
                waiting: false,
            }),
        }
    }
}

/// Keeps a connection whose exchange ended cleanly for the next request;
/// closes it otherwise (or when bytes beyond the answer came with it).
fn release(conn: Pooled, backend: &Backend, keep_alive: bool, now: Instant) {
    if keep_alive && conn.read.is_empty() && !backend.removed.load(Ordering::Acquire) {
        backend.idle.put(conn, now);
    }
}

impl Streaming {
    /// The next frame's data, or None at the body's end.
    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, ExchangeError>> {
        loop {
            let read = &mut self.conn.read;
            let want = match &mut self.framing {
                Framing::Length(left) => {
                    if !read.is_empty() {
                        let take = usize::try_from(*left).unwrap_or(usize::MAX).min(read.len());
                        *left -= take as u64;
                        return Poll::Ready(Ok(Some(read.split_to(take).freeze())));
                    }
                    if *left == 0 {
                        return Poll::Ready(Ok(None));
                    }
                    usize::try_from(*left)
                        .unwrap_or(usize::MAX)
                        .clamp(READ_CHUNK, READ_CHUNK_MAX)
                }
                Framing::Chunked(decoder) => match decoder.decode(read)? {
                    Decoded::Data(data) => return Poll::Ready(Ok(Some(data))),
                    Decoded::End => return Poll::Ready(Ok(None)),
                    Decoded::NeedMore => READ_CHUNK,
                },
                Framing::UntilClose => {
                    if !read.is_empty() {
                        return Poll::Ready(Ok(Some(read.split().freeze())));
                    }
                    READ_CHUNK_MAX
                }
            };
            read.reserve(want);
            let got = loop {
                match self.conn.stream.try_read_buf(read) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if !self.waiting {
                            // Read from the clock only when the body pauses,
                            // not for every piece of a body that flows.
                            self.waiting = true;
                            let deadline = tokio::time::Instant::now() + self.idle;
                            self.conn.deadline.as_mut().reset(deadline);
                        }
                        if let Poll::Ready(ready) = self.conn.stream.poll_read_ready(cx) {
                            ready?;
                            continue;
                        }
                        std::task::ready!(self.conn.deadline.as_mut().poll(cx));
                        tracing::warn!(
                            backend = %self.backend.id,
                            "the response body stalled: no byte for {}; the client's answer is cut off",
                            crate::config::duration::format(self.idle)
                        );
                        return Poll::Ready(Err(ExchangeError::BodyStalled(self.idle)));
                    }
                    result => break result?,
                }
            };
            self.waiting = false;
            if got == 0 {
                if let Framing::UntilClose = self.framing {
                    return Poll::Ready(Ok(None));
                }
                return Poll::Ready(Err(ExchangeError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the backend closed the connection before the body's end",
                ))));
            }
        }
    }
}

impl hyper::body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let state = &mut self.state;
        match state {
            BodyState::Done => Poll::Ready(None),
            BodyState::Whole(_) => {
                let BodyState::Whole(data) = std::mem::replace(state, BodyState::Done) else {
                    unreachable!("matched just above")
                };
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            BodyState::Streaming(body) => {
                let result = std::task::ready!(body.poll_data(cx));
                let ended = match &result {
                    Ok(None) => true,
                    Ok(Some(_)) => matches!(body.framing, Framing::Length(0)),
                    Err(_) => false,
                };
                if ended || result.is_err() {
                    if let BodyState::Streaming(body) = std::mem::replace(state, BodyState::Done) {
                        if ended {
                            // keep_alive is false for a body read to the close.
                            release(body.conn, &body.backend, body.keep_alive, Instant::now());
                        }
                    }
                }
                match result {
                    Ok(Some(data)) => Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(None) => Poll::Ready(None),
                    Err(e) => Poll::Ready(Some(Err(e.into()))),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, BodyState::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match &self.state {
            BodyState::Done => SizeHint::with_exact(0),
            BodyState::Whole(data) => SizeHint::with_exact(data.len() as u64),
            BodyState::Streaming(Streaming {
                framing: Framing::Length(left),
                ..
            }) => SizeHint::with_exact(*left),
            BodyState::Streaming(_) => SizeHint::default(),
        }
    }
}
