//! Client-facing listeners: accept with a connection limit, give the first
//! request head a deadline (408 when it is missed: slowloris), then serve
//! HTTP/1.1 and h2c through hyper with header limits (431). Generic over the
//! transport, so TLS streams plug in the same way as TCP.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use super::Proxy;
use super::handler::{self, ConnInfo};
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
    let scheme = if tls.is_some() { "https" } else { "http" };
    let limits = proxy.config().limits.clone();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let mut shutdown = proxy.shutting_down.subscribe();
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit { Ok(p) => p, Err(_) => return },
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
        let _ = stream.set_nodelay(true);
        let conn = Arc::new(ConnInfo::new(client, scheme, port));
        let proxy = proxy.clone();
        let watcher = watcher();
        let tls = tls.clone();
        let handshake_timeout = limits.header_read_timeout;
        tokio::spawn(async move {
            proxy.connections_active.fetch_add(1, Ordering::Relaxed);
            proxy.connections_total.fetch_add(1, Ordering::Relaxed);
            match tls {
                None => serve_connection(proxy.clone(), conn, stream, watcher).await,
                Some(acceptor) => match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => serve_connection(proxy.clone(), conn, stream, watcher).await,
                    Ok(Err(e)) => tracing::debug!("TLS handshake with {client} failed: {e}"),
                    Err(_) => tracing::debug!("TLS handshake with {client} timed out"),
                },
            }
            proxy.connections_active.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
}

/// Serves one client connection over any transport.
pub async fn serve_connection<IO>(proxy: Arc<Proxy>, conn: Arc<ConnInfo>, mut io: IO, watcher: Option<Watcher>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = proxy.config().limits.clone();
    let head = match read_first_head(&mut io, limits.max_header_bytes, limits.header_read_timeout).await {
        FirstHead::Ready(bytes) => bytes,
        FirstHead::Closed => return,
        FirstHead::TimedOut => {
            let _ = io
                .write_all(b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
                .await;
            let _ = io.shutdown().await;
            return;
        }
    };
    let io = Prefixed::new(head, io);
    let service = hyper::service::service_fn(move |req| {
        let proxy = proxy.clone();
        let conn = conn.clone();
        // Boxed: the handler's state is a few KiB, and hyper moves the
        // future around (into its dispatcher, into a task for HTTP/2);
        // moving a pointer is cheaper than copying that state each time.
        Box::pin(async move { Ok::<_, std::convert::Infallible>(handler::handle(proxy, conn, req).await) })
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(limits.max_headers)
        // hyper's buffer also bounds how much of a body one read takes:
        // 64 KiB reads move uploads with a quarter of the system calls of
        // 16 KiB ones. The header limit itself is checked per request by
        // the handler (and for the first head here, before hyper).
        .max_buf_size(limits.max_header_bytes.max(READ_BUFFER));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(limits.max_header_bytes as u32);
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    let result = match watcher {
        Some(watcher) => watcher.watch(connection.into_owned()).await,
        None => connection.await,
    };
    if let Err(e) = result {
        tracing::debug!("client connection ended: {e}");
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

/// A stream that first replays bytes already read from it.
pub(crate) struct Prefixed<IO> {
    prefix: Vec<u8>,
    pos: usize,
    inner: IO,
}

impl<IO> Prefixed<IO> {
    pub(crate) fn new(prefix: Vec<u8>, inner: IO) -> Self {
        Prefixed { prefix, pos: 0, inner }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Prefixed<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = buf.remaining().min(self.prefix.len() - self.pos);
            let start = self.pos;
            buf.put_slice(&self.prefix[start..start + n]);
            self.pos += n;
            if self.pos == self.prefix.len() {
                self.prefix = Vec::new();
                self.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Prefixed<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
