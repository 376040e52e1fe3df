//! The client side of plain keep-alive HTTP/1.1 requests, served without
//! hyper: the request heads browsers and load generators send most (GET or
//! HEAD, no body, no upgrade, nothing that changes the framing) are parsed
//! here once with `httparse`, routed by the same handler, and answered
//! with a head written straight from the response. The first head that is
//! anything else (a body, `Expect`, an upgrade, HTTP/1.0, `Connection:
//! close`, absolute-form, a head `httparse` refuses, too many fields) hands
//! the connection, with every byte read so far, to hyper, which serves it
//! from there on as it serves every connection that starts that way: the
//! rules for framing and for refusing bad input are hyper's in both cases,
//! because nothing this path does not fully understand is served by it.

use std::future::poll_fn;
use std::io::{self, Write as _};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Body as _;
use hyper::header::{self, HeaderName};
use hyper::{Method, Response, StatusCode, Uri, Version};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::Proxy;
use super::conn::ConnInfo;
use super::h1::{FieldAt, Fields, LAST_CHUNK, chunk_header, content_length, field, locate_into};
use super::handler;
use super::headers::{BadRequest, ClientHead};
use super::upstream::{Relayed, Reply};
use crate::serve::Body;

/// How a connection left this path.
pub enum Outcome {
    /// It is closed (or due to be): nothing more to do.
    Closed,
    /// Its next request is one for hyper; these bytes of it were read.
    HandOver(BytesMut),
}

/// The most header fields this path parses; a head with more goes to hyper,
/// which applies `max_headers` (and answers 431 beyond it).
const MAX_FIELDS: usize = 100;

/// Serves requests from `buf` and `io` until the connection ends or a
/// request needs hyper.
pub async fn serve<IO>(proxy: &Arc<Proxy>, conn: &Arc<ConnInfo>, io: &mut IO, mut buf: BytesMut) -> Outcome
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let limits = proxy.config().limits.clone();
    let max_head = limits.max_header_bytes;
    let fields = limits.max_headers.min(MAX_FIELDS);
    // One wait for shutdown for the connection's life, not one per read.
    let mut watch = proxy.shutting_down.subscribe();
    let stopping = watch.changed();
    tokio::pin!(stopping);
    let shutting_down = || *proxy.shutting_down.borrow();
    let mut out = Vec::with_capacity(1024);
    // Where the fields lie, kept from one request to the next.
    let mut positions = Vec::new();
    loop {
        let request = loop {
            match parse(&mut buf, fields, &mut positions) {
                Parsed::Ready(request) => break request,
                Parsed::Other => return Outcome::HandOver(buf),
                Parsed::Partial if buf.len() >= max_head => return Outcome::HandOver(buf),
                Parsed::Partial => {}
            }
            if buf.is_empty() && shutting_down() {
                return Outcome::Closed;
            }
            buf.reserve(4096);
            tokio::select! {
                biased;
                read = io.read_buf(&mut buf) => match read {
                    // A partial head and then the end: nothing to answer.
                    Ok(0) | Err(_) => return Outcome::Closed,
                    Ok(_) => {}
                },
                _ = &mut stopping, if buf.is_empty() => return Outcome::Closed,
            }
        };
        let head_only = request.method == Method::HEAD;
        let guard = conn.start_request();
        let response = {
            let handling = handler::handle_bodyless(proxy.clone(), conn.clone(), &request);
            tokio::pin!(handling);
            // The client is read meanwhile: its end cancels the request (as
            // hyper does without half-close), and what it sends next waits in
            // `buf`, up to one head's worth.
            loop {
                tokio::select! {
                    biased;
                    response = &mut handling => break response,
                    read = io.read_buf(&mut buf), if buf.len() < max_head => match read {
                        Ok(0) | Err(_) => return Outcome::Closed,
                        Ok(_) => {}
                    },
                }
            }
        };
        positions = request.fields.recycle();
        let closing = shutting_down();
        let keep_alive = write_response(io, &mut out, response, head_only, closing).await;
        drop(guard);
        if !keep_alive.unwrap_or(false) {
            let _ = io.shutdown().await;
            return Outcome::Closed;
        }
    }
}

/// A request of this path: GET or HEAD, origin-form, HTTP/1.1, no body;
/// its fields as the client sent them.
pub struct Bodiless {
    pub method: Method,
    pub uri: Uri,
    pub fields: Fields,
}

impl ClientHead for Bodiless {
    fn method(&self) -> &Method {
        &self.method
    }

    fn uri(&self) -> &Uri {
        &self.uri
    }

    fn version(&self) -> Version {
        Version::HTTP_11
    }

    fn values(&self, name: &HeaderName) -> impl Iterator<Item = &[u8]> {
        self.fields.values(name.as_str())
    }

    fn fields_len(&self) -> usize {
        self.fields.len_as_sent()
    }

    /// Nothing to check: this path admits no Content-Length or
    /// Transfer-Encoding (`plain_field`).
    fn check_framing(&self) -> Result<(), BadRequest> {
        debug_assert!(
            self.values(&header::CONTENT_LENGTH).next().is_none()
                && self.values(&header::TRANSFER_ENCODING).next().is_none()
        );
        Ok(())
    }
}

enum Parsed {
    Ready(Bodiless),
    Partial,
    /// Not a request for this path: hyper's to serve or refuse.
    Other,
}

/// Takes one request head off `buf` if it is complete and one this path
/// serves. Its fields are not copied or hashed: they are read where they
/// lie in the head (`Fields`).
/// `positions` is the connection's vector for where the fields lie (left
/// empty when the request is taken).
fn parse(buf: &mut BytesMut, fields: usize, positions: &mut Vec<FieldAt>) -> Parsed {
    let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
    let mut parsed = httparse::Request::new(&mut []);
    let len = match parsed.parse_with_uninit_headers(buf, &mut storage[..fields]) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Other,
    };
    let method = match parsed.method {
        Some("GET") => Method::GET,
        Some("HEAD") => Method::HEAD,
        _ => return Parsed::Other,
    };
    let Some(path) = parsed.path.filter(|p| p.starts_with('/')) else {
        return Parsed::Other;
    };
    // httparse admits the names and values hyper's types do, but for a
    // name's length: one longer than `HeaderName` takes is hyper's to refuse.
    let plain = parsed
        .headers
        .iter()
        .all(|f| plain_field(f) && f.name.len() <= MAX_NAME);
    if parsed.version != Some(1) || !plain {
        return Parsed::Other;
    }
    // Where each part lies in the head, so the head is split off once and
    // the URI and fields share it.
    let start = path.as_ptr() as usize - buf.as_ptr() as usize;
    let path = start..start + path.len();
    locate_into(buf, parsed.headers, positions);
    let head = buf.split_to(len).freeze();
    let Ok(uri) = Uri::from_maybe_shared(head.slice(path)) else {
        // hyper refuses it from the same bytes.
        let mut whole = BytesMut::from(&head[..]);
        whole.extend_from_slice(buf);
        *buf = whole;
        return Parsed::Other;
    };
    Parsed::Ready(Bodiless {
        method,
        uri,
        fields: Fields::new(head, std::mem::take(positions)),
    })
}

/// The longest field name `HeaderName` takes.
const MAX_NAME: usize = (1 << 16) - 1;

/// A field this path can serve a request with: none that brings a body,
/// asks for an interim answer, an upgrade or the connection's end.
fn plain_field(field: &httparse::Header<'_>) -> bool {
    let name = field.name;
    if name.eq_ignore_ascii_case("connection") {
        return field.value.eq_ignore_ascii_case(b"keep-alive");
    }
    ![
        "content-length",
        "transfer-encoding",
        "upgrade",
        "expect",
        "te",
        "http2-settings",
    ]
    .iter()
    .any(|framing| name.eq_ignore_ascii_case(framing))
}

/// Writes `reply` to the client; whether the connection may carry another
/// request.
async fn write_response<IO>(
    io: &mut IO,
    out: &mut Vec<u8>,
    reply: Reply,
    head_only: bool,
    closing: bool,
) -> io::Result<bool>
where
    IO: AsyncWrite + Unpin,
{
    out.clear();
    let Head {
        status,
        mut body,
        stated,
        close,
        says_close,
    } = match reply {
        Reply::Made(response) => made_head(out, response, closing),
        Reply::Relayed(relayed) => relayed_head(out, relayed, closing),
    };
    let bodyless = head_only || status.is_informational() || matches!(status.as_u16(), 204 | 304);
    let framing = if bodyless {
        Framing::None
    } else if let Some(length) = stated {
        Framing::Length(length)
    } else if let Some(length) = body.size_hint().exact() {
        let _ = write!(out, "content-length: {length}\r\n");
        Framing::Length(length)
    } else {
        field(out, b"transfer-encoding", b"chunked");
        Framing::Chunked
    };
    if close && !says_close {
        field(out, b"connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
    if matches!(framing, Framing::None) || body.is_end_stream() {
        drop(body);
        if matches!(framing, Framing::Chunked) {
            out.extend_from_slice(LAST_CHUNK);
        }
        io.write_all(out).await?;
        io.flush().await?;
        return Ok(!close && !matches!(framing, Framing::Length(n) if n > 0));
    }
    let mut sent = 0u64;
    let mut pending_head = true;
    loop {
        // Polled once before waiting, so an answer already read goes out
        // with its head in one write, and a slow one's head goes first.
        let frame = match poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                if pending_head || !out.is_empty() {
                    io.write_all(out).await?;
                    io.flush().await?;
                    out.clear();
                    pending_head = false;
                }
                body.frame().await
            }
        };
        match frame {
            Some(Ok(frame)) => {
                // Trailers are not relayed (as hyper's server path did not).
                let Ok(data) = frame.into_data() else { continue };
                sent += data.len() as u64;
                let chunk = matches!(framing, Framing::Chunked) && !data.is_empty();
                if chunk {
                    chunk_header(data.len(), out);
                }
                write_data(io, out, data).await?;
                if chunk {
                    out.extend_from_slice(b"\r\n");
                }
                if out.len() >= FLUSH_AT {
                    io.write_all(out).await?;
                    out.clear();
                    pending_head = false;
                }
            }
            // The answer broke off: the client must see that it did, so
            // the connection ends without a last chunk or the rest.
            Some(Err(e)) => return Err(io::Error::other(e)),
            None => break,
        }
    }
    match framing {
        Framing::Chunked => out.extend_from_slice(LAST_CHUNK),
        Framing::Length(length) if length != sent => {
            return Err(io::Error::other("an answer's body did not match its length"));
        }
        _ => {}
    }
    io.write_all(out).await?;
    io.flush().await?;
    out.clear();
    Ok(!close)
}

enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// A reply's head, its fields written to `out` but for the framing and
/// `Connection: close`.
struct Head {
    status: StatusCode,
    body: Body,
    /// The Content-Length the fields state.
    stated: Option<u64>,
    /// The connection ends after this reply.
    close: bool,
    /// The fields said so already.
    says_close: bool,
}

/// The head of an answer the proxy made: its map's fields, and a Date.
fn made_head(out: &mut Vec<u8>, response: Response<Body>, closing: bool) -> Head {
    let (parts, body) = response.into_parts();
    let connection = parts.headers.get(header::CONNECTION);
    let close = closing || connection.is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
    status_line(out, parts.status);
    for (name, value) in &parts.headers {
        field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if !parts.headers.contains_key(header::DATE) {
        field(out, b"date", &http_date());
    }
    Head {
        status: parts.status,
        body,
        stated: parts.headers.get(header::CONTENT_LENGTH).and_then(content_length),
        close,
        says_close: connection.is_some(),
    }
}

/// The head of a backend's answer, from its fields as the backend wrote
/// them (no map): the end-to-end ones in order and case, one
/// Content-Length however many equal ones came, the sticky cookie, and a
/// Date when the backend sent none.
fn relayed_head(out: &mut Vec<u8>, relayed: Relayed, closing: bool) -> Head {
    status_line(out, relayed.status);
    let mut stated = None;
    let mut dated = false;
    for (name, value) in relayed.end_to_end() {
        if name.eq_ignore_ascii_case(b"content-length") {
            if stated.is_none() {
                // The head was refused unless every one was a number, and the same.
                stated = crate::field::content_length(value);
                field(out, name, value);
            }
            continue;
        }
        dated |= name.eq_ignore_ascii_case(b"date");
        field(out, name, value);
    }
    if let Some(cookie) = &relayed.cookie {
        field(out, b"set-cookie", cookie.as_bytes());
    }
    if !dated {
        field(out, b"date", &http_date());
    }
    Head {
        status: relayed.status,
        body: relayed.body,
        stated,
        // Its own Connection field was hop-by-hop: only a shutdown closes.
        close: closing,
        says_close: false,
    }
}

/// What `out` may gather before it is written even though more is ready.
const FLUSH_AT: usize = 64 * 1024;

/// Small data joins what waits in `out`; large data goes out with it in
/// one vectored write.
async fn write_data<IO: AsyncWrite + Unpin>(io: &mut IO, out: &mut Vec<u8>, data: Bytes) -> io::Result<()> {
    const COPY_BELOW: usize = 16 * 1024;
    if data.len() < COPY_BELOW {
        out.extend_from_slice(&data);
        return Ok(());
    }
    let mut slices = [io::IoSlice::new(out), io::IoSlice::new(&data)];
    super::upstream::write_all_vectored(io, &mut slices).await?;
    out.clear();
    Ok(())
}

fn status_line(out: &mut Vec<u8>, status: StatusCode) {
    if status == StatusCode::OK {
        // Most answers: no lookup of the reason.
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        return;
    }
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Now as an HTTP date (RFC 9110 5.6.7), made once a second per thread.
pub(super) fn http_date() -> [u8; 29] {
    use std::cell::Cell;
    thread_local! {
        static LAST: Cell<(u64, [u8; 29])> = const { Cell::new((u64::MAX, [0; 29])) };
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    LAST.with(|last| {
        let (secs, text) = last.get();
        if secs == now {
            return text;
        }
        let text = format_http_date(now);
        last.set((now, text));
        text
    })
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` for seconds since 1970.
fn format_http_date(secs: u64) -> [u8; 29] {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs / 86_400;
    let (hour, minute, second) = (secs % 86_400 / 3600, secs % 3600 / 60, secs % 60);
    let (year, month, day) = crate::clock::civil_date(days as i64);
    let text = format!(
        "{}, {day:02} {} {year:04} {hour:02}:{minute:02}:{second:02} GMT",
        DAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize]
    );
    let mut out = [b' '; 29];
    let n = text.len().min(29);
    out[..n].copy_from_slice(&text.as_bytes()[..n]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Parsed {
        parse(&mut BytesMut::from(text), MAX_FIELDS, &mut Vec::new())
    }

    #[test]
    fn plain_heads_are_parsed_with_their_fields_in_order() {
        let mut buf = BytesMut::from("GET /a?b=c HTTP/1.1\r\nHost: x\r\nAccept: 1\r\naccept: 2\r\n\r\nGET /next");
        let Parsed::Ready(request) = parse(&mut buf, MAX_FIELDS, &mut Vec::new()) else {
            panic!("a plain GET is this path's")
        };
        assert_eq!(request.uri, "/a?b=c");
        assert_eq!(request.values(&header::HOST).collect::<Vec<_>>(), [b"x"]);
        let accept: Vec<_> = request.values(&header::ACCEPT).collect();
        assert_eq!(accept, [b"1", b"2"]);
        assert_eq!(request.fields_len(), "Host: x\r\nAccept: 1\r\naccept: 2\r\n".len());
        assert_eq!(&buf[..], b"GET /next", "the next request's bytes stay");
        assert!(matches!(parse(&mut buf, MAX_FIELDS, &mut Vec::new()), Parsed::Partial));
    }

    #[test]
    fn anything_else_goes_to_hyper() {
        for head in [
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx",
            "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n",
            "GET / HTTP/1.0\r\nHost: x\r\n\r\n",
            "GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n",
            "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET / HTTP/1.1\r\nHost : x\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ] {
            assert!(matches!(parse_text(head), Parsed::Other), "{head:?}");
        }
        let many: String = (0..=MAX_FIELDS).map(|i| format!("X-{i}: v\r\n")).collect();
        assert!(matches!(
            parse_text(&format!("GET / HTTP/1.1\r\n{many}\r\n")),
            Parsed::Other
        ));
        let browser = "GET / HTTP/1.1\r\nHost: x\r\nConnection: Keep-Alive\r\n\r\n";
        assert!(matches!(parse_text(browser), Parsed::Ready(_)));
    }

    #[test]
    fn dates_are_imf_fixdates() {
        assert_eq!(&format_http_date(784_111_777), b"Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(&format_http_date(951_782_400), b"Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(&format_http_date(0), b"Thu, 01 Jan 1970 00:00:00 GMT");
    }
}
