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

/// Why a request did not get a response.
#[derive(Debug)]
pub enum UpstreamError {
    /// No connection could be made: the backend never saw the request.
    Connect(io::Error),
    /// The connection failed while the request was sent or answered.
    Request(hyper::Error),
    /// The WebSocket handshake failed after connecting.
    Handshake(io::Error),
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
            UpstreamError::Handshake(e) => write!(f, "WebSocket handshake: {e}"),
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

/// Opens a new keep-alive HTTP/1.1 connection to `backend`; its own task
/// drives it. (WebSocket sessions use `websocket_handshake` instead.)
async fn connect(backend: &Backend, timeout: Duration) -> Result<SendRequest<Body>, UpstreamError> {
    let stream = connect_tcp(backend, timeout).await?;
    let (sender, connection) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| UpstreamError::Connect(io::Error::other(e)))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
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
            None => (Box::pin(connect(backend, connect_timeout)).await?, false),
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

/// The most a backend's answer to a WebSocket handshake may take, head only.
const HANDSHAKE_HEAD_LIMIT: usize = 16 * 1024;
/// How long a backend has to answer a WebSocket handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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
    Refused(hyper::StatusCode),
}

/// Sends a WebSocket handshake by hand on a new connection and reads the
/// answer's head. Cheaper than a client connection with upgrades: no
/// connection task and no upgrade hand-off per session.
pub async fn websocket_handshake(
    backend: &Backend,
    connect_timeout: Duration,
    method: &hyper::Method,
    uri: &hyper::Uri,
    headers: &hyper::HeaderMap,
) -> Result<Handshake, UpstreamError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = connect_tcp(backend, connect_timeout).await?;
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
    let (buf, end) = match tokio::time::timeout(HANDSHAKE_TIMEOUT, exchange).await {
        Ok(Ok(read)) => read,
        Ok(Err(e)) => return Err(UpstreamError::Handshake(e)),
        Err(_) => {
            return Err(UpstreamError::Handshake(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {}s", HANDSHAKE_TIMEOUT.as_secs()),
            )));
        }
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
    let status = hyper::StatusCode::from_u16(code).unwrap_or(hyper::StatusCode::BAD_GATEWAY);
    if status != hyper::StatusCode::SWITCHING_PROTOCOLS {
        return Ok(Handshake::Refused(status));
    }
    let mut headers = hyper::HeaderMap::with_capacity(response.headers.len());
    for h in response.headers.iter() {
        if let (Ok(name), Ok(value)) = (
            hyper::header::HeaderName::from_bytes(h.name.as_bytes()),
            hyper::header::HeaderValue::from_bytes(h.value),
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
