//! WebSocket sessions through the proxy.
//!
//! The handshake is forwarded like any request (keeping Upgrade and
//! Connection); on 101 both sides are upgraded and one task copies bytes
//! both ways unchanged, feeding each direction's frame tap to count frames,
//! heartbeats and close codes. When the backend drains, the proxy shuts down
//! or the session idles out, the task waits for a frame boundary in each
//! direction and sends close code 1001 to both ends, then completes the close
//! handshake so neither side sees a reset.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper::{Request, Response, StatusCode, Version};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use super::Proxy;
use super::backend::{Backend, InFlight, Session};
use super::balance::Pool;
use super::conn::{ConnInfo, Scheme};
use super::events::ProxyEvent;
use super::headers::{check_upgrade_framing, origin_form, prepare_handshake_headers, prepare_request_headers};
use super::io::{Guarded, Prefixed};
use super::upstream::{self, Answered, Handshake, MAX_ATTEMPTS, Timeouts, no_backend};
use crate::config::proxy::Service;
use crate::serve::{self, Body};
use crate::websocket::frame::{self, Opcode};
use crate::websocket::tap::{FrameSeen, FrameTap};

/// Per-direction copy buffers start small (sessions are many and mostly
/// idle: a heartbeat every 5 s), grow while reads fill them (a stream of
/// large messages) and shrink back once reads are small again.
const BUFFER_MIN: usize = 256;
const BUFFER_MAX: usize = 16 * 1024;

#[derive(Debug)]
struct AdaptiveBuffer {
    buf: Vec<u8>,
    /// Reads in a row that used under a quarter of the buffer.
    small_reads: u8,
}

impl AdaptiveBuffer {
    fn new() -> Self {
        AdaptiveBuffer {
            buf: vec![0; BUFFER_MIN],
            small_reads: 0,
        }
    }

    /// Adjusts the size after a read of `n` bytes.
    fn record(&mut self, n: usize) {
        let len = self.buf.len();
        if n == len && len < BUFFER_MAX {
            self.buf.resize(len * 2, 0);
            self.small_reads = 0;
        } else if n < len / 4 && len > BUFFER_MIN {
            self.small_reads += 1;
            if self.small_reads >= 8 {
                self.buf.truncate(len / 2);
                self.buf.shrink_to_fit();
                self.small_reads = 0;
            }
        } else {
            self.small_reads = 0;
        }
    }
}

/// How long the close handshake may take once the proxy starts it.
const CLOSE_GRACE: Duration = Duration::from_secs(3);

pub async fn upgrade(
    proxy: Arc<Proxy>,
    conn: Arc<ConnInfo>,
    pool: Arc<Pool>,
    settings: Arc<Service>,
    mut req: Request<Incoming>,
    sticky: Option<String>,
) -> Response<Body> {
    if req.version() != Version::HTTP_11 {
        return serve::text(StatusCode::BAD_REQUEST, "WebSocket upgrades need HTTP/1.1");
    }
    if let Err(e) = check_upgrade_framing(req.headers()) {
        return e.response();
    }
    let client_upgrade = hyper::upgrade::on(&mut req);
    let (mut parts, _body) = req.into_parts();
    prepare_request_headers(&mut parts.headers, &parts.uri, &conn, &settings).insert_into(&mut parts.headers);
    prepare_handshake_headers(&mut parts.headers);

    let mut tried: Vec<Arc<Backend>> = Vec::new();
    let (timeouts, write_timeout) = {
        let limits = &proxy.config().limits;
        let timeouts = Timeouts {
            connect: limits.connect_timeout,
            response: limits.upstream_timeout,
            body: limits.upstream_body_timeout,
        };
        (timeouts, limits.write_timeout)
    };
    let uri = origin_form(&parts.uri);
    let (backend, stream, headers, early, opening) = loop {
        let now = proxy.clock.now_ms();
        let Some(backend) = pool.pick_for_session(now, sticky.as_deref(), &tried) else {
            return no_backend();
        };
        let opening = Opening::start(&backend);
        // A connection of its own, the handshake written by hand: after the
        // 101 the connection is the tunnel.
        match upstream::websocket_handshake(&backend, timeouts, &parts.method, &uri, &parts.headers).await {
            Ok(Handshake::Switched { stream, headers, early }) => {
                backend.record_connect_success();
                break (backend, stream, headers, early, opening);
            }
            Ok(Handshake::Refused(status)) => {
                // Relay the backend's whole answer (a 401 or 404 with its
                // body): the handshake is a GET without a body, so ask again
                // the usual way, counted as a request of this backend. The
                // refusing connection is closed, never pooled.
                backend.record_connect_success();
                let mut request = Request::new(serve::empty_request());
                *request.method_mut() = parts.method.clone();
                *request.uri_mut() = uri.clone();
                *request.headers_mut() = parts.headers.clone();
                let in_flight = InFlight::start(&backend);
                let started = std::time::Instant::now();
                return match upstream::send(&backend, request, timeouts).await {
                    Ok(answer) => {
                        let answered = Answered {
                            answer,
                            in_flight,
                            started,
                        };
                        upstream::relay(
                            &backend,
                            &settings,
                            sticky.as_deref(),
                            conn.scheme == Scheme::Https,
                            answered,
                        )
                        .into_response()
                    }
                    Err(error) => {
                        tracing::warn!(backend = %backend.id, "WebSocket handshake refused ({status}), then: {error}");
                        error.client_response()
                    }
                };
            }
            Err(error) => {
                if error.is_connect() {
                    upstream::eject(&proxy, &backend, now, &error);
                }
                tracing::warn!(backend = %backend.id, "WebSocket handshake failed: {error}");
                tried.push(backend);
                // The handshake is a GET without a body: always safe to retry.
                if tried.len() >= MAX_ATTEMPTS || matches!(error, upstream::UpstreamError::Timeout(_)) {
                    return error.client_response();
                }
            }
        }
    };

    let mut reply = Response::new(serve::empty());
    *reply.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *reply.headers_mut() = headers;

    let session = Arc::new(Session::new(proxy.next_session_id(), conn.client));
    // The session holds the client connection's slots until it ends (the
    // rest of the connection's state goes with hyper's connection).
    let slots = conn.take_slots();
    let session_task = async move {
        let _slots = slots;
        let client = match client_upgrade.await {
            Ok(client) => client,
            Err(e) => {
                tracing::debug!("the client's upgrade did not complete: {e}");
                return;
            }
        };
        let upstream = Guarded::new(Prefixed::new(early, stream), write_timeout, None);
        open_session(&proxy, &backend, &session);
        drop(opening);
        let reason = copy(&proxy, &backend, &session, &settings, client, upstream).await;
        close_session(&proxy, &backend, &session, reason);
    };
    tokio::spawn(session_task);
    reply
}

/// A session being opened on a backend, counted with its sessions until
/// it is open (or fails): a burst of new sessions then spreads instead of
/// all going to the backend whose handshakes happen to finish last.
struct Opening(Arc<Backend>);

impl Opening {
    fn start(backend: &Arc<Backend>) -> Opening {
        backend.counters.ws_opening.fetch_add(1, Ordering::Relaxed);
        Opening(backend.clone())
    }
}

impl Drop for Opening {
    fn drop(&mut self) {
        self.0.counters.ws_opening.fetch_sub(1, Ordering::Relaxed);
    }
}

fn open_session(proxy: &Proxy, backend: &Backend, session: &Arc<Session>) {
    backend.counters.ws_active.fetch_add(1, Ordering::Relaxed);
    backend.counters.ws_total.fetch_add(1, Ordering::Relaxed);
    backend
        .sessions
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(session.id, session.clone());
    proxy.events.send(ProxyEvent::WebsocketOpened {
        backend: backend.id.clone(),
        session: session.id,
        client: session.client.to_string(),
    });
}

fn close_session(proxy: &Proxy, backend: &Backend, session: &Session, reason: String) {
    backend
        .sessions
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&session.id);
    backend.counters.ws_active.fetch_sub(1, Ordering::Relaxed);
    proxy.events.send(ProxyEvent::WebsocketClosed {
        backend: backend.id.clone(),
        session: session.id,
        reason,
        duration_ms: session.started.elapsed().as_millis() as u64,
    });
}

/// Is this client frame a heartbeat? Pings and pongs are; so is the first
/// frame of a text message containing one of the configured patterns.
pub fn is_heartbeat(frame: &FrameSeen<'_>, patterns: &[String]) -> bool {
    match frame.opcode {
        Opcode::Ping | Opcode::Pong => true,
        Opcode::Text => {
            let text = String::from_utf8_lossy(frame.prefix);
            patterns.iter().any(|p| !p.is_empty() && text.contains(p.as_str()))
        }
        _ => false,
    }
}

struct Direction {
    tap: FrameTap,
    /// False once the tap lost track (a protocol error); bytes still flow.
    following: bool,
    /// The reading side sent EOF.
    eof: bool,
    /// The reading side sent a close frame.
    sent_close: bool,
    /// The proxy has written its own close frame toward this side's peer.
    injected: bool,
}

impl Direction {
    fn new(tap: FrameTap) -> Self {
        Direction {
            tap,
            following: true,
            eof: false,
            sent_close: false,
            injected: false,
        }
    }
}

/// What can end a session while it waits to write: a drain or shutdown
/// (before the proxy has started closing), or the close deadline (after).
/// A peer that reads nothing cannot take a close frame, so such a session
/// is cut rather than closed politely; `Guarded` bounds the wait anyway.
struct Stop {
    drain: watch::Receiver<bool>,
    shutdown: watch::Receiver<bool>,
}

impl Stop {
    async fn wait(&mut self, closing: Option<tokio::time::Instant>) -> &'static str {
        match closing {
            Some(deadline) => {
                tokio::time::sleep_until(deadline).await;
                "close handshake timed out"
            }
            None => {
                let reason = tokio::select! {
                    _ = self.drain.wait_for(|d| *d) => "backend draining",
                    _ = self.shutdown.wait_for(|s| *s) => "proxy shutting down",
                };
                // A write that is merely slow finishes in this time, and the
                // session is then closed politely by the copy loop.
                tokio::time::sleep(CLOSE_GRACE).await;
                reason
            }
        }
    }
}

/// Writes all of `data` unless the session is stopped first. Most writes
/// finish at the first try; only one that has to wait builds (boxed) what
/// it waits on, which keeps every session's task small.
async fn write_or_stop(
    io: &mut (impl AsyncWrite + Unpin),
    data: &[u8],
    stop: &mut Stop,
    closing: Option<tokio::time::Instant>,
) -> Result<(), String> {
    let failed = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::TimedOut => format!("write timeout: {e}"),
        _ => "connection ended".to_string(),
    };
    if data.is_empty() {
        return Ok(());
    }
    // One try without waiting: Poll::Pending here is a value, not a wait.
    let first = std::future::poll_fn(|cx| Poll::Ready(std::pin::Pin::new(&mut *io).poll_write(cx, data))).await;
    let written = match first {
        Poll::Ready(Ok(0)) => return Err("connection ended".to_string()),
        Poll::Ready(Ok(n)) => n,
        Poll::Ready(Err(e)) => return Err(failed(e)),
        Poll::Pending => 0,
    };
    if written == data.len() {
        return Ok(());
    }
    let rest = &data[written..];
    Box::pin(async move {
        tokio::select! {
            result = io.write_all(rest) => result.map_err(failed),
            reason = stop.wait(closing) => Err(reason.to_string()),
        }
    })
    .await
}

async fn copy(
    proxy: &Proxy,
    backend: &Backend,
    session: &Session,
    settings: &Service,
    client: Upgraded,
    mut upstream: impl AsyncRead + AsyncWrite + Unpin,
) -> String {
    let mut client = TokioIo::new(client);
    let mut client_buf = AdaptiveBuffer::new();
    let mut upstream_buf = AdaptiveBuffer::new();
    // `up` carries client -> backend (frames must be masked), `down`
    // backend -> client.
    let mut up = Direction::new(FrameTap::from_client());
    let mut down = Direction::new(FrameTap::new());
    let mut drain = backend.close_sessions.subscribe();
    let mut shutdown = proxy.shutting_down.subscribe();
    let mut stop = Stop {
        drain: backend.close_sessions.subscribe(),
        shutdown: proxy.shutting_down.subscribe(),
    };
    let idle = settings.websocket.idle_timeout;
    // The idle timer is not moved on every frame (that costs a timer-wheel
    // update per message): it fires, and re-arms itself from the last activity.
    let idle_timer = tokio::time::sleep(idle);
    tokio::pin!(idle_timer);
    let mut last_activity = tokio::time::Instant::now();
    let mut closing: Option<&'static str> = None;
    // 1001 (going away) unless the session is asked to reconnect elsewhere.
    let mut close_code = 1001;
    let mut close_deadline: Option<tokio::time::Instant> = None;
    let counters = &backend.counters;
    let patterns = &settings.websocket.heartbeat_patterns;
    if *drain.borrow() {
        closing = Some("backend draining");
    }

    loop {
        if up.eof && down.eof {
            break;
        }
        if up.sent_close && down.sent_close && close_deadline.is_none() {
            // The close handshake is done: a peer that keeps its end open
            // gets a moment to close it, not the idle timeout.
            close_deadline = Some(tokio::time::Instant::now() + CLOSE_GRACE);
        }
        if let Some(reason) = closing {
            let grace = *close_deadline.get_or_insert_with(|| tokio::time::Instant::now() + CLOSE_GRACE);
            // Frames written between two frames of the stream only: the taps
            // say where the boundaries are.
            if !down.injected && (down.tap.at_boundary() || !down.following) && !down.eof {
                let close = frame::encode(Opcode::Close, true, &frame::close_payload(close_code, reason), None);
                if let Err(why) = write_or_stop(&mut client, &close, &mut stop, Some(grace)).await {
                    return why;
                }
                down.injected = true;
            }
            if !up.injected && (up.tap.at_boundary() || !up.following) && !up.eof {
                let key = crate::websocket::random_bytes::<4>();
                let close = frame::encode(
                    Opcode::Close,
                    true,
                    &frame::close_payload(close_code, reason),
                    Some(key),
                );
                if let Err(why) = write_or_stop(&mut upstream, &close, &mut stop, Some(grace)).await {
                    return why;
                }
                up.injected = true;
            }
        }
        let deadline = close_deadline.unwrap_or_else(|| tokio::time::Instant::now() + idle);
        tokio::select! {
            read = client.read(&mut client_buf.buf), if !up.eof => {
                let n: usize = read.unwrap_or_default();
                client_buf.record(n);
                last_activity = tokio::time::Instant::now();
                if n == 0 {
                    up.eof = true;
                    let _ = upstream.shutdown().await;
                    continue;
                }
                let data = &client_buf.buf[..n];
                counters.ws_bytes_in.fetch_add(n as u64, Ordering::Relaxed);
                session.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
                let now = proxy.clock.now_ms();
                let mut heartbeat = false;
                tap(&mut up, data, |f| {
                    counters.ws_frames_in.fetch_add(1, Ordering::Relaxed);
                    session.frames_in.fetch_add(1, Ordering::Relaxed);
                    count_control(counters, f.opcode);
                    if is_heartbeat(f, patterns) {
                        counters.heartbeats_total.fetch_add(1, Ordering::Relaxed);
                        session.heartbeats.fetch_add(1, Ordering::Relaxed);
                        counters.last_heartbeat_ms.store(now, Ordering::Relaxed);
                        session.last_heartbeat_ms.store(now, Ordering::Relaxed);
                        heartbeat = true;
                    }
                });
                if heartbeat && proxy.events.has_listeners() {
                    proxy.events.send(ProxyEvent::Heartbeat { backend: backend.id.clone(), session: session.id });
                }
                if !up.following && !up.injected {
                    // A client that breaks the protocol (an unmasked frame,
                    // a reserved opcode, an impossible length) is failed
                    // (RFC 6455, 7.1.7): nothing more of it reaches Flow.
                    if down.tap.at_boundary() && !down.injected {
                        let close = frame::encode(Opcode::Close, true, &frame::close_payload(1002, "protocol error"), None);
                        let _ = write_or_stop(&mut client, &close, &mut stop, Some(tokio::time::Instant::now() + CLOSE_GRACE)).await;
                    }
                    return "client protocol error".to_string();
                }
                if up.injected {
                    // The proxy closed this session: what the client sends now
                    // (its close reply) ends here.
                    if up.sent_close || !up.following {
                        let _ = client.shutdown().await;
                    }
                } else if let Err(why) = write_or_stop(&mut upstream, data, &mut stop, close_deadline).await {
                    return closing.map_or(why, str::to_string);
                }
            }
            read = upstream.read(&mut upstream_buf.buf), if !down.eof => {
                let n: usize = read.unwrap_or_default();
                upstream_buf.record(n);
                last_activity = tokio::time::Instant::now();
                if n == 0 {
                    down.eof = true;
                    if !down.sent_close && !down.injected && down.tap.at_boundary() && !up.eof {
                        // The backend vanished without a close frame: tell the
                        // client properly, so it reconnects instead of seeing
                        // an abnormal closure, and swallow its close reply.
                        let close = frame::encode(Opcode::Close, true, &frame::close_payload(1001, "backend went away"), None);
                        let grace = tokio::time::Instant::now() + CLOSE_GRACE;
                        let _ = write_or_stop(&mut client, &close, &mut stop, Some(grace)).await;
                        up.injected = true;
                        closing.get_or_insert("backend went away");
                        close_deadline.get_or_insert(grace);
                    } else {
                        let _ = client.shutdown().await;
                    }
                    continue;
                }
                let data = &upstream_buf.buf[..n];
                counters.ws_bytes_out.fetch_add(n as u64, Ordering::Relaxed);
                session.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
                tap(&mut down, data, |f| {
                    counters.ws_frames_out.fetch_add(1, Ordering::Relaxed);
                    session.frames_out.fetch_add(1, Ordering::Relaxed);
                    count_control(counters, f.opcode);
                });
                if down.injected {
                    if down.sent_close || !down.following {
                        let _ = upstream.shutdown().await;
                    }
                } else if let Err(why) = write_or_stop(&mut client, data, &mut stop, close_deadline).await {
                    return closing.map_or(why, str::to_string);
                }
            }
            changed = drain.changed(), if closing.is_none() => {
                if changed.is_err() || *drain.borrow() {
                    closing = Some("backend draining");
                }
            }
            changed = shutdown.changed(), if closing.is_none() => {
                if changed.is_err() || *shutdown.borrow() {
                    closing = Some("proxy shutting down");
                }
            }
            _ = session.move_on.notified(), if closing.is_none() => {
                closing = Some("rebalancing");
                close_code = 1012;
            }
            _ = &mut idle_timer, if closing.is_none() => {
                let due = last_activity + idle;
                if due > tokio::time::Instant::now() {
                    idle_timer.as_mut().reset(due);
                } else {
                    closing = Some("idle timeout");
                }
            }
            _ = tokio::time::sleep_until(deadline), if close_deadline.is_some() => {
                break;
            }
        }
    }
    match closing {
        Some(reason) => reason.to_string(),
        None if up.sent_close || down.sent_close => "closed".to_string(),
        None => "connection ended".to_string(),
    }
}

fn tap(direction: &mut Direction, data: &[u8], mut on_frame: impl FnMut(&FrameSeen<'_>)) {
    if !direction.following {
        return;
    }
    let mut closed = false;
    let result = direction.tap.feed(data, &mut |f| {
        if f.opcode == Opcode::Close {
            closed = true;
        }
        on_frame(f);
    });
    if closed {
        direction.sent_close = true;
    }
    if let Err(e) = result {
        tracing::debug!("stopped following a WebSocket stream: {e}");
        direction.following = false;
    }
}

fn count_control(counters: &super::backend::Counters, opcode: Opcode) {
    match opcode {
        Opcode::Ping => {
            counters.ws_pings.fetch_add(1, Ordering::Relaxed);
        }
        Opcode::Pong => {
            counters.ws_pongs.fetch_add(1, Ordering::Relaxed);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_buffers_grow_with_full_reads_and_shrink_when_idle() {
        let mut b = AdaptiveBuffer::new();
        assert_eq!(b.buf.len(), BUFFER_MIN);
        for _ in 0..10 {
            let full = b.buf.len();
            b.record(full);
        }
        assert_eq!(b.buf.len(), BUFFER_MAX);
        // A heartbeat now and then: back down step by step.
        for _ in 0..200 {
            b.record(6);
        }
        assert_eq!(b.buf.len(), BUFFER_MIN);
        assert!(b.buf.capacity() < 2 * BUFFER_MIN, "memory is given back");
        // Mid-sized reads keep the size.
        b.record(BUFFER_MIN);
        let size = b.buf.len();
        for _ in 0..20 {
            b.record(size / 2);
        }
        assert_eq!(b.buf.len(), size);
    }
}
