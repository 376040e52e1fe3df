//! Client-facing listeners: accept within `max_connections` and the
//! client's per-address share (a WebSocket session keeps both until it
//! ends), bound every write to the client (`io::Guarded`), give the first
//! request head a deadline (408 when it is missed: slowloris), then serve
//! HTTP/1.1 (`plain`, then hyper) or HTTP/2 (`h2`, the proxy's own), closing
//! connections that stay idle. Generic over the transport, so TLS streams
//! plug in the same way as TCP.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::Proxy;
use super::conn::{Activity, ConnInfo, RequestGuard, Scheme};
use super::handler;
use super::io::{Guarded, Prefixed};
use super::plain::Outcome;
use crate::config::proxy::Limits;
use crate::serve::{Body, BoxError};
use crate::websocket::peer::find_head_end;

/// The most one read takes from a client (hyper's buffer limit).
const READ_BUFFER: usize = 64 * 1024;

/// Accepts until shutdown; each connection is served on its own task.
pub async fn run(
    proxy: Arc<Proxy>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    watcher: impl Fn() -> Option<Watcher>,
) {
    let scheme = if tls.is_some() { Scheme::Https } else { Scheme::Http };
    let limits = proxy.config().limits.clone();
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let mut shutdown = proxy.shutting_down.subscribe();
    loop {
        let permit = tokio::select! {
            permit = proxy.slots.clone().acquire_owned() => match permit { Ok(p) => p, Err(_) => return },
            _ = shutdown.changed() => return,
        };
        let (stream, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        // A trusted proxy speaks for many clients: no per-address share.
        let trusted = limits.is_trusted(client.ip());
        let client_slot = if !limits.limits_per_ip(client.ip()) {
            None
        } else {
            match proxy.clients.admit(client.ip(), limits.max_connections_per_ip) {
                Some(slot) => Some(slot),
                None => {
                    tracing::debug!(
                        "refused a connection from {}: it has {} open (max_connections_per_ip)",
                        client.ip(),
                        limits.max_connections_per_ip
                    );
                    continue;
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let conn = Arc::new(ConnInfo::new(client, scheme, port).holding(permit, client_slot, trusted, proxy.clock));
        let proxy = proxy.clone();
        let watcher = watcher();
        let tls = tls.clone();
        let limits = limits.clone();
        tokio::spawn(async move {
            proxy.connections_active.fetch_add(1, Ordering::Relaxed);
            proxy.connections_total.fetch_add(1, Ordering::Relaxed);
            let stream = Guarded::new(stream, limits.write_timeout, Some(conn.activity.clone()));
            match tls {
                None => serve_connection(proxy.clone(), conn, stream, watcher).await,
                Some(acceptor) => match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream)).await
                {
                    Ok(Ok(stream)) => serve_connection(proxy.clone(), conn, stream, watcher).await,
                    Ok(Err(e)) => tracing::debug!("TLS handshake with {client} failed: {e}"),
                    Err(_) => tracing::debug!("TLS handshake with {client} timed out"),
                },
            }
            proxy.connections_active.fetch_sub(1, Ordering::Relaxed);
        });
        // One connection per turn of the event loop, as nginx does: during
        // a burst of new connections the sessions already open get their
        // frames through between accepts instead of after a batch of them.
        tokio::task::yield_now().await;
    }
}

/// A response body that keeps its request counted on the connection until
/// it has been sent: a connection streaming a long answer is not idle.
struct Counted {
    inner: Body,
    _request: RequestGuard,
}

impl hyper::body::Body for Counted {
    type Data = bytes::Bytes;
    type Error = crate::serve::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, crate::serve::BoxError>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Serves one client connection over any transport.
pub async fn serve_connection<IO>(proxy: Arc<Proxy>, conn: Arc<ConnInfo>, mut io: IO, watcher: Option<Watcher>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = proxy.config().limits.clone();
    let (service_conn, conn_for_plain, idle_limits) = (conn.clone(), conn.clone(), limits.clone());
    let head = match read_first_head(&mut io, limits.max_header_bytes, limits.header_read_timeout).await {
        FirstHead::Ready(bytes) => bytes,
        FirstHead::Closed => return,
        FirstHead::TimedOut => {
            answer_and_close(
                &mut io,
                b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            )
            .await;
            return;
        }
    };
    let http2 = head.starts_with(PREFACE_LINE);
    conn.activity.http2.store(http2, Ordering::Relaxed);
    let served = async move {
        // Plain HTTP/1.1 requests are served by `plain` until one is not;
        // from there hyper serves the connection, from the bytes read.
        if http2 {
            // Held until the connection ends: graceful shutdown waits for
            // it; `h2` itself hears of the shutdown from `shutting_down`.
            let _watcher = watcher;
            super::h2::serve(proxy, conn_for_plain, io, head).await;
            return;
        }
        let head = {
            match super::plain::serve(&proxy, &conn_for_plain, &mut io, BytesMut::from(&head[..])).await {
                Outcome::Closed => return,
                // HTTP/2 by prior knowledge starts a connection (RFC 9113,
                // 3.3); a preface after HTTP/1.1 requests would otherwise
                // switch hyper to HTTP/2 under HTTP/1.1's limits.
                Outcome::HandOver(rest) if rest.starts_with(PREFACE_LINE) => {
                    answer_and_close(&mut io, LATE_PREFACE_ANSWER).await;
                    return;
                }
                Outcome::HandOver(rest) => Vec::from(rest),
            }
        };
        let io = Prefixed::new(head, io);
        let service = hyper::service::service_fn(move |req| {
            let proxy = proxy.clone();
            let conn = service_conn.clone();
            // Boxed: the handler's state is a few KiB, and hyper moves the
            // future around (into its dispatcher); moving a pointer is
            // cheaper than copying that state each time.
            Box::pin(async move {
                let request = conn.start_request();
                let response = handler::handle(proxy, conn, req).await;
                Ok::<_, std::convert::Infallible>(response.map(|inner| Counted {
                    inner,
                    _request: request,
                }))
            })
        });
        let io = TokioIo::new(io);
        let connection = http1_builder(&limits)
            .serve_connection_with_upgrades(io, service)
            .into_owned();
        let result: Result<(), BoxError> = match watcher {
            Some(watcher) => watcher.watch(connection).await,
            None => connection.await,
        };
        if let Err(e) = result {
            tracing::debug!("client connection ended: {e}");
        }
    };
    // The connection runs in a task of its own, so its requests never wake
    // the idle watcher (this task), which sleeps until a deadline is due.
    let mut served = tokio::spawn(served);
    tokio::select! {
        _ = &mut served => {}
        () = idle(&conn.activity, &idle_limits) => {
            served.abort();
            tracing::debug!("closed an idle connection from {}", conn.client);
        }
    }
}

/// Writes an answer the proxy makes itself before hyper has the connection,
/// and closes it; a client already gone changes nothing.
async fn answer_and_close<IO: AsyncWrite + Unpin>(io: &mut IO, answer: &[u8]) {
    let _ = io.write_all(answer).await;
    let _ = io.shutdown().await;
}

/// How many headers hyper's HTTP/1 server takes when not told otherwise.
const HYPER_MAX_HEADERS: usize = 100;

/// The request line that begins the HTTP/2 preface: at a connection's
/// start it means HTTP/2 by prior knowledge; after HTTP/1.1 requests it is
/// refused with `LATE_PREFACE_ANSWER`.
const PREFACE_LINE: &[u8] = b"PRI * HTTP/2.0";
const LATE_PREFACE_ANSWER: &[u8] = b"HTTP/1.1 505 HTTP Version Not Supported\r\nConnection: close\r\n\
    Content-Type: text/plain\r\nContent-Length: 51\r\n\r\nHTTP/2 must start the connection (prior knowledge)\n";

/// For connections that begin as HTTP/1.1 (HTTP/2 is told from the first
/// bytes in `serve_connection`; hyper's version sniffing, which
/// `serve_connection_with_upgrades` always does, never sees a preface).
fn http1_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    let mut http1 = builder.http1();
    http1
        .timer(TokioTimer::new())
        // hyper times the wait for every later head from the moment the
        // connection goes idle; `idle` closes it sooner where it must.
        .header_read_timeout(limits.keepalive_timeout.max(limits.header_read_timeout));
    // hyper's own limit is 100 headers, parsed into stack space it leaves
    // uninitialised; any limit set, even 100, makes it fill that space for
    // every head (about 4 % of a proxied GET's instructions). Set only
    // when it differs.
    if limits.max_headers != HYPER_MAX_HEADERS {
        http1.max_headers(limits.max_headers);
    }
    http1
        // hyper's buffer also bounds how much of a body one read takes:
        // 64 KiB reads move uploads with a quarter of the system calls of
        // 16 KiB ones. The header limit itself is checked per request by
        // the handler (and for the first head here, before hyper).
        .max_buf_size(limits.max_header_bytes.max(READ_BUFFER));
    builder
}

/// Completes when the connection is due to close: idle (no request in
/// flight) for `keepalive_timeout`, or a later request head taking longer
/// than `header_read_timeout`.
/// A head that starts while the watcher sleeps is noticed at its next look:
/// it looks at least once per `header_read_timeout`, so such a head is cut
/// within twice that.
async fn idle(activity: &Activity, limits: &Limits) {
    let timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(timer);
    while let Some(left) = activity.time_left(limits.keepalive_timeout, limits.header_read_timeout) {
        timer
            .as_mut()
            .reset(tokio::time::Instant::now() + left.min(limits.header_read_timeout));
        timer.as_mut().await;
    }
}

enum FirstHead {
    Ready(Vec<u8>),
    Closed,
    TimedOut,
}

/// Reads until the first request head is complete (or the buffer is as large
/// as a head may be, which hyper then refuses with 431), within `timeout`.
async fn read_first_head<IO: AsyncRead + Unpin>(io: &mut IO, limit: usize, timeout: std::time::Duration) -> FirstHead {
    let mut buf = Vec::with_capacity(1024);
    let read = async {
        loop {
            if find_head_end(&buf).is_some() || buf.len() >= limit {
                return FirstHead::Ready(std::mem::take(&mut buf));
            }
            let mut chunk = [0u8; 2048];
            match io.read(&mut chunk).await {
                Ok(0) | Err(_) if buf.is_empty() => return FirstHead::Closed,
                // A partial head then EOF: let hyper answer it.
                Ok(0) | Err(_) => return FirstHead::Ready(std::mem::take(&mut buf)),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(timeout, read).await.unwrap_or(FirstHead::TimedOut)
}
