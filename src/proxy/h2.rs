//! HTTP/2 connections served by the proxy's own server (`http2::server`,
//! the protocol as a state machine) instead of hyper's: this is its I/O.
//! One task per connection reads frames, runs each stream's exchange with
//! its backend (a future polled by the same task, no task per stream),
//! sends the answers as flow control lets them go, and writes. Nothing is
//! read while much output waits, so a client that does not read is held
//! back by its own socket.
//!
//! A stream's request goes through `handler::handle_h2` (the same checks,
//! routing and forwarding as every request); its body comes from the
//! connection as `RequestBody`, each piece's window given back once the
//! exchange has taken it, so a client can have only the windows' worth in
//! the proxy at once. A stream the client resets is dropped with its
//! exchange at once.

use std::collections::{HashMap, VecDeque};
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::StreamExt;
use futures_util::future::{AbortHandle, Abortable};
use futures_util::stream::FuturesUnordered;
use http_body_util::BodyExt;
use hyper::body::{Body as _, Frame, SizeHint};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Uri, Version};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::Proxy;
use super::conn::ConnInfo;
use super::upstream::Reply;
use super::{handler, plain};
use crate::http2::frame::ErrorCode;
use crate::http2::server::{self, Connection, Event, RequestHead};
use crate::serve::{Body, BoxError};

/// An answer's bytes waiting on a stream's window before its source is
/// read further.
const SEND_HIGH: usize = 64 * 1024;
/// How much one read takes.
const READ_CHUNK: usize = 16 * 1024;
/// Reading stops while this much waits unparsed: more than a whole frame
/// of the largest size this side allows (16 KiB and its header), so a
/// frame can always be completed.
const READ_LIMIT: usize = 64 * 1024;

/// What the connection's task and its streams share. One task polls them
/// all, so the lock is never contended; it is there because the streams'
/// futures must be `Send`.
struct Shared {
    conn: Connection,
    bodies: HashMap<u32, BodyIn>,
    /// Streams waiting for their answer's queue to drain.
    waiting: Vec<Waker>,
}

/// A request body as it arrives.
#[derive(Default)]
struct BodyIn {
    chunks: VecDeque<Bytes>,
    ended: bool,
    waker: Option<Waker>,
}

#[derive(Clone)]
struct Handle(Arc<Mutex<Shared>>);

impl Handle {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

type StreamFuture = Abortable<Pin<Box<dyn Future<Output = u32> + Send>>>;

/// Serves one connection that began with the HTTP/2 preface (`first`
/// holds the bytes read so far), until the client closes it, an error ends
/// it, or the proxy shuts down (GOAWAY, then the streams in flight finish).
pub async fn serve<IO>(proxy: Arc<Proxy>, conn: Arc<ConnInfo>, mut io: IO, first: Vec<u8>)
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let limits = proxy.config().limits.clone();
    let handle = Handle(Arc::new(Mutex::new(Shared {
        conn: Connection::new(server::Limits {
            max_concurrent_streams: limits.max_concurrent_streams,
            max_header_list_size: u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX),
            ..server::Limits::default()
        }),
        bodies: HashMap::new(),
        waiting: Vec::new(),
    })));
    let mut input = BytesMut::from(&first[..]);
    let mut output = BytesMut::new();
    let mut events = Vec::new();
    let mut streams: FuturesUnordered<StreamFuture> = FuturesUnordered::new();
    let mut aborts: HashMap<u32, AbortHandle> = HashMap::new();
    let mut shutdown = proxy.shutting_down.subscribe();
    let mut stop = pin!(async move {
        let _ = shutdown.wait_for(|stopping| *stopping).await;
    });
    let mut stopping = false;
    let mut failed = false;
    let mut flush_due = false;
    poll_fn(|cx| {
        loop {
            let mut progress = false;
            if !stopping && stop.as_mut().poll(cx).is_ready() {
                stopping = true;
                handle.lock().conn.shutdown();
            }
            if !input.is_empty() && !failed {
                let mut shared = handle.lock();
                let result = shared.conn.recv(&mut input, &mut events);
                for event in events.drain(..) {
                    dispatch(&proxy, &conn, &handle, &mut shared, event, &mut streams, &mut aborts);
                }
                // Windows may have opened: answers waiting on them go on.
                for waker in shared.waiting.drain(..) {
                    waker.wake();
                }
                if let Err(e) = result {
                    tracing::debug!(client = %conn.client, "HTTP/2 connection ended: {e}");
                    failed = true;
                    streams.clear();
                }
            }
            while let Poll::Ready(Some(done)) = streams.poll_next_unpin(cx) {
                if let Ok(stream) = done {
                    aborts.remove(&stream);
                    handle.lock().bodies.remove(&stream);
                }
            }
            if output.is_empty() {
                output = handle.lock().conn.output().split();
            }
            while !output.is_empty() {
                match Pin::new(&mut io).poll_write(cx, &output) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(()),
                    Poll::Ready(Ok(n)) => {
                        output.advance(n);
                        flush_due = true;
                        progress = true;
                    }
                    Poll::Pending => break,
                }
            }
            if output.is_empty() && flush_due {
                match Pin::new(&mut io).poll_flush(cx) {
                    Poll::Ready(Ok(())) => flush_due = false,
                    Poll::Ready(Err(_)) => return Poll::Ready(()),
                    Poll::Pending => {}
                }
            }
            let idle_out = output.is_empty() && !flush_due;
            if idle_out && (failed || handle.lock().conn.is_done()) {
                return Poll::Ready(());
            }
            // Read only once what is owed has been written.
            if idle_out && !failed && input.len() < READ_LIMIT {
                match read(&mut io, &mut input, cx) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(()),
                    Poll::Ready(Ok(_)) => progress = true,
                    Poll::Pending => {}
                }
            }
            if !progress {
                return Poll::Pending;
            }
        }
    })
    .await;
    let _ = tokio::io::AsyncWriteExt::shutdown(&mut io).await;
}

fn read<IO: AsyncRead + Unpin>(
    io: &mut IO,
    input: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<usize>> {
    input.reserve(READ_CHUNK);
    let spare = input.spare_capacity_mut();
    let mut buf = ReadBuf::uninit(spare);
    match Pin::new(io).poll_read(cx, &mut buf) {
        Poll::Ready(Ok(())) => {
            let n = buf.filled().len();
            // SAFETY: `poll_read` initialised the first `n` bytes of the
            // spare capacity (`ReadBuf::filled`).
            unsafe { input.set_len(input.len() + n) };
            Poll::Ready(Ok(n))
        }
        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        Poll::Pending => Poll::Pending,
    }
}

/// Acts on one event of the connection.
fn dispatch(
    proxy: &Arc<Proxy>,
    conn: &Arc<ConnInfo>,
    handle: &Handle,
    shared: &mut Shared,
    event: Event,
    streams: &mut FuturesUnordered<StreamFuture>,
    aborts: &mut HashMap<u32, AbortHandle>,
) {
    match event {
        Event::Request {
            stream,
            head,
            end_stream,
        } => {
            let length = head.content_length;
            let Some(parts) = request_parts(head) else {
                shared.conn.send_headers(stream, 400, [], true);
                return;
            };
            if !end_stream {
                shared.bodies.insert(stream, BodyIn::default());
            }
            let body = RequestBody {
                handle: handle.clone(),
                stream,
                ended: end_stream,
                length,
            };
            let request = Request::from_parts(parts, body);
            let exchange = exchange(proxy.clone(), conn.clone(), handle.clone(), stream, request);
            let (future, abort) = futures_util::future::abortable(Box::pin(exchange) as Pin<Box<_>>);
            aborts.insert(stream, abort);
            streams.push(future);
        }
        Event::Data {
            stream,
            data,
            end_stream,
        } => match shared.bodies.get_mut(&stream) {
            Some(body) => {
                if !data.is_empty() {
                    body.chunks.push_back(data);
                }
                body.ended |= end_stream;
                if let Some(waker) = body.waker.take() {
                    waker.wake();
                }
            }
            // Nobody reads this body any more: its exchange ended early.
            // The answer may still wait on the client's window, and until
            // it is sent the server keeps the stream; give the bytes back
            // now so they do not hold the connection's window meanwhile
            // (a no-op once the server has dropped the stream).
            None => shared.conn.release(stream, data.len()),
        },
        Event::Trailers { stream, .. } => {
            // Trailers end the body; HTTP/1.1 backends get none.
            if let Some(body) = shared.bodies.get_mut(&stream) {
                body.ended = true;
                if let Some(waker) = body.waker.take() {
                    waker.wake();
                }
            }
        }
        Event::Reset { stream } => {
            if let Some(abort) = aborts.remove(&stream) {
                abort.abort();
            }
            shared.bodies.remove(&stream);
        }
    }
}

/// The request as the rest of the proxy takes it: an absolute URI from
/// the pseudo-header fields (as hyper's HTTP/2 server makes it), the
/// fields in a map, cookies joined into one field for HTTP/1.1 backends
/// (RFC 9113 8.2.3). `None` when the target is no valid URI.
fn request_parts(head: RequestHead) -> Option<hyper::http::request::Parts> {
    let method = Method::from_bytes(&head.method).ok()?;
    let path = head.path.unwrap_or_default();
    let uri = match (&head.scheme, &head.authority) {
        (Some(scheme), Some(authority)) => Uri::builder()
            .scheme(std::str::from_utf8(scheme).ok()?)
            .authority(authority.as_ref())
            .path_and_query(path.as_ref())
            .build()
            .ok()?,
        (None, Some(authority)) => Uri::builder().authority(authority.as_ref()).build().ok()?,
        _ => Uri::from_maybe_shared(path).ok()?,
    };
    let mut headers = HeaderMap::with_capacity(head.fields.len());
    let mut cookies: Option<Vec<u8>> = None;
    for (name, value) in head.fields {
        if name == "cookie" {
            let joined = cookies.get_or_insert_with(Vec::new);
            if !joined.is_empty() {
                joined.extend_from_slice(b"; ");
            }
            joined.extend_from_slice(&value);
            continue;
        }
        let name = HeaderName::from_bytes(&name).ok()?;
        headers.append(name, HeaderValue::from_maybe_shared(value).ok()?);
    }
    if let Some(cookies) = cookies {
        headers.insert(header::COOKIE, HeaderValue::from_bytes(&cookies).ok()?);
    }
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_2;
    *request.headers_mut() = headers;
    Some(request.into_parts().0)
}

/// One stream: the request through the proxy, then its answer out as the
/// windows allow. Returns the stream's number once the answer is sent.
async fn exchange(
    proxy: Arc<Proxy>,
    conn: Arc<ConnInfo>,
    handle: Handle,
    stream: u32,
    request: Request<RequestBody>,
) -> u32 {
    let _request = conn.start_request();
    let mut body = match handler::handle_h2(proxy, conn, request).await {
        // A Date on the proxy's own answers, and on a backend's that came
        // without one, as on HTTP/1.1 (`plain`).
        Reply::Made(response) => {
            let (parts, body) = response.into_parts();
            let date = plain::http_date();
            let fields = parts.headers.iter().map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()));
            let fields = fields.chain([(&b"date"[..], &date[..])]);
            if !start(&handle, stream, parts.status.as_u16(), fields, body.is_end_stream()) {
                return stream;
            }
            body
        }
        Reply::Relayed(relayed) => {
            let cookie = relayed.cookie.as_ref().map(|c| (&b"set-cookie"[..], c.as_bytes()));
            let dated = relayed.end_to_end().any(|(name, _)| name.eq_ignore_ascii_case(b"date"));
            let date = (!dated).then(plain::http_date);
            let date = date.as_ref().map(|d| (&b"date"[..], &d[..]));
            let fields = relayed.end_to_end().chain(cookie).chain(date);
            if !start(
                &handle,
                stream,
                relayed.status.as_u16(),
                fields,
                relayed.body.is_end_stream(),
            ) {
                return stream;
            }
            relayed.body
        }
    };
    send_body(&handle, stream, &mut body).await;
    stream
}

/// Sends the answer's head; true when a body follows.
fn start<'a>(
    handle: &Handle,
    stream: u32,
    status: u16,
    fields: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    end: bool,
) -> bool {
    handle.lock().conn.send_headers(stream, status, fields, end) && !end
}

/// The answer's body, a frame at a time, reading its source only while
/// little of it waits for the client's windows.
async fn send_body(handle: &Handle, stream: u32, body: &mut Body) {
    loop {
        poll_fn(|cx| {
            let mut shared = handle.lock();
            if shared.conn.buffered(stream) < SEND_HIGH {
                Poll::Ready(())
            } else {
                shared.waiting.push(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
        match body.frame().await {
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else { continue };
                let end = body.is_end_stream();
                if !handle.lock().conn.send_data(stream, data, end) || end {
                    return;
                }
            }
            Some(Err(e)) => {
                tracing::debug!("answer body failed midway: {e}");
                handle.lock().conn.reset(stream, ErrorCode::INTERNAL_ERROR);
                return;
            }
            None => {
                handle.lock().conn.send_data(stream, Bytes::new(), true);
                return;
            }
        }
    }
}

/// A request body from the connection: each piece, once taken, is given
/// back to the client's windows.
struct RequestBody {
    handle: Handle,
    stream: u32,
    /// The request came without a body (END_STREAM on its head).
    ended: bool,
    length: Option<u64>,
}

/// The client reset the stream while its body was being read.
#[derive(Debug, thiserror::Error)]
#[error("the client reset the HTTP/2 stream")]
struct StreamReset;

impl hyper::body::Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let stream = self.stream;
        let handle = self.handle.clone();
        let mut shared = handle.lock();
        let Some(body) = shared.bodies.get_mut(&stream) else {
            return Poll::Ready(Some(Err(StreamReset.into())));
        };
        if let Some(chunk) = body.chunks.pop_front() {
            let len = chunk.len();
            shared.conn.release(stream, len);
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if body.ended {
            self.ended = true;
            return Poll::Ready(None);
        }
        body.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }

    fn size_hint(&self) -> SizeHint {
        match (self.ended, self.length) {
            (true, _) => SizeHint::with_exact(0),
            (false, Some(length)) => SizeHint::with_exact(length),
            (false, None) => SizeHint::default(),
        }
    }
}
