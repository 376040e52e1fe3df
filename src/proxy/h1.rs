//! HTTP/1.1 as the proxy speaks it to backends, without I/O: the request
//! head it writes, the response head it reads (and how that answer's body is
//! framed), and the chunked-body decoder. The proxy writes and reads these
//! on the client connection's own task (`upstream`), which saves hyper's
//! client its connection task, channel and second read buffer per request.
//!
//! What a backend sends is read as strictly as what a client sends: a head
//! over `MAX_HEAD` or with more than `MAX_HEADERS` fields, a bad or
//! conflicting Content-Length, Transfer-Encoding together with
//! Content-Length, a malformed chunk: each ends the exchange with an error
//! and the connection is closed, never reused.

use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, StatusCode, Uri};

use super::headers::Forwarded;

/// The most a response head may take (status line and fields).
pub const MAX_HEAD: usize = 64 * 1024;
/// The most header fields a response head may have (hyper's own default).
pub const MAX_HEADERS: usize = 100;
/// The longest chunk-size line, extensions included.
const MAX_CHUNK_LINE: usize = 4 * 1024;
/// The most a chunked body's trailer section may take; it is read and dropped.
const MAX_TRAILERS: usize = 16 * 1024;

/// What is wrong with what a backend sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("the response head is over {} KiB", MAX_HEAD / 1024)]
    HeadTooLong,
    #[error("the response head has more than {MAX_HEADERS} fields")]
    TooManyHeaders,
    #[error("the response head is not HTTP/1.x ({0})")]
    Head(String),
    #[error("101 Switching Protocols answered a request that asked for no upgrade")]
    UnaskedSwitch,
    #[error("Content-Length is not one number")]
    ContentLength,
    #[error("both Transfer-Encoding and Content-Length frame the body")]
    BothFramings,
    #[error("Transfer-Encoding in an HTTP/1.0 answer")]
    TransferEncoding10,
    #[error("a chunk-size line is not valid")]
    ChunkSize,
    #[error("a chunk does not end with CRLF")]
    ChunkEnd,
    #[error("the trailer section is over {} KiB", MAX_TRAILERS / 1024)]
    TrailersTooLong,
}

/// How the body a request sends is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFraming {
    /// Nothing follows the head.
    Empty,
    /// Exactly this many bytes (the client's own Content-Length).
    Length(u64),
    Chunked,
}

/// A request as it goes to a backend, borrowed from the client's request
/// (so a request tried on a second backend is not copied).
pub struct RequestHead<'a> {
    pub method: &'a Method,
    /// Origin-form.
    pub uri: &'a Uri,
    pub fields: Outgoing<'a>,
    /// X-Forwarded-* written after the fields (None when the fields have them).
    pub forwarded: Option<&'a Forwarded>,
}

/// The fields a request carries to its backend.
#[derive(Clone, Copy)]
pub enum Outgoing<'a> {
    /// hyper's request (or the proxy's own): already without hop-by-hop
    /// fields; a Content-Length in it is the one the client sent, checked.
    Map(&'a HeaderMap),
    /// A bodiless request of the plain path, its fields as the client sent
    /// them: those that go no further are left out as the head is written
    /// (`headers::to_backend`), framing fields among them, so the request
    /// goes without a body whatever the client wrote.
    Sent { fields: &'a Fields, trusted: bool },
}

/// Writes a request head into `out`: origin-form target, the fields, the
/// forwarded fields, and the framing field the body needs.
pub fn encode_request_head(out: &mut Vec<u8>, head: &RequestHead<'_>, bodyless: bool) -> RequestFraming {
    let RequestHead {
        method,
        uri,
        fields,
        forwarded,
    } = *head;
    out.clear();
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(uri.path_and_query().map_or("/", |p| p.as_str()).as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let length = match fields {
        Outgoing::Map(headers) => {
            for (name, value) in headers {
                field(out, name.as_str().as_bytes(), value.as_bytes());
            }
            headers.get(header::CONTENT_LENGTH).map(content_length)
        }
        Outgoing::Sent { fields, trusted } => {
            debug_assert!(bodyless, "the plain path sends no body");
            for (name, value) in super::headers::to_backend(fields, trusted) {
                field(out, name, value);
            }
            None
        }
    };
    for (name, value) in forwarded.into_iter().flat_map(Forwarded::fields) {
        field(out, name.as_bytes(), value.as_bytes());
    }
    let framing = match (bodyless, length) {
        (_, Some(Some(n))) => RequestFraming::Length(n),
        (true, _) => {
            // A method that defines a meaning for content says it has none.
            if matches!(*method, Method::POST | Method::PUT | Method::PATCH) && length.is_none() {
                out.extend_from_slice(b"content-length: 0\r\n");
            }
            RequestFraming::Empty
        }
        (false, _) => {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
            RequestFraming::Chunked
        }
    };
    out.extend_from_slice(b"\r\n");
    framing
}

/// Appends one header field line: `name: value` and CRLF.
pub fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// One Content-Length value: digits only, no sign, no overflow.
pub fn content_length(value: &HeaderValue) -> Option<u64> {
    crate::field::content_length(value.as_bytes())
}

/// How a response's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    /// No body (HEAD, 204, 304).
    Empty,
    Length(u64),
    Chunked,
    /// Until the backend closes the connection.
    UntilClose,
}

/// A parsed response head.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    pub fields: Fields,
    pub framing: ResponseFraming,
    /// The connection may carry another request once the body is read.
    pub keep_alive: bool,
}

/// Where one header field lies in the head's bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct FieldAt {
    name: (u32, u32),
    value: (u32, u32),
}

/// A message's header fields as they were sent: its head's bytes and where
/// each field lies, in order. The plain HTTP/1.1 path reads a request's
/// fields and writes an answer's from these directly; a `HeaderMap` is made
/// only for hyper's side (`to_map`), so most messages never hash a name.
#[derive(Debug, Clone, Default)]
pub struct Fields {
    head: Bytes,
    at: Vec<FieldAt>,
}

fn span((start, len): (u32, u32)) -> std::ops::Range<usize> {
    start as usize..(start + len) as usize
}

/// Where each field httparse read from `buf` lies in it: `buf` is the head
/// the fields borrow from, under 4 GiB (heads are limited far below that).
pub fn locate(buf: &[u8], parsed: &[httparse::Header<'_>]) -> Vec<FieldAt> {
    let mut at = Vec::new();
    locate_into(buf, parsed, &mut at);
    at
}

/// `locate` into a vector kept from an earlier message (`Fields::recycle`),
/// so a connection's requests do not each allocate one.
pub fn locate_into(buf: &[u8], parsed: &[httparse::Header<'_>], at: &mut Vec<FieldAt>) {
    let base = buf.as_ptr() as usize;
    let span = |part: &[u8]| ((part.as_ptr() as usize - base) as u32, part.len() as u32);
    at.clear();
    at.extend(parsed.iter().map(|field| FieldAt {
        name: span(field.name.as_bytes()),
        value: span(field.value),
    }));
}

impl Fields {
    /// `head`'s fields, found where `locate` said while it was being parsed.
    pub fn new(head: Bytes, at: Vec<FieldAt>) -> Fields {
        Fields { head, at }
    }

    /// The positions' vector, emptied, for the next message's `locate_into`;
    /// the head is let go.
    pub fn recycle(self) -> Vec<FieldAt> {
        let mut at = self.at;
        at.clear();
        at
    }

    /// The first value of a field named `name` (lower-case), sharing the head.
    pub fn first(&self, name: &str) -> Option<Bytes> {
        self.at
            .iter()
            .find(|field| self.head[span(field.name)].eq_ignore_ascii_case(name.as_bytes()))
            .map(|field| self.head.slice(span(field.value)))
    }

    /// The values of every field named `name` (lower-case), in order.
    pub fn values<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a [u8]> {
        self.iter()
            .filter(move |(field, _)| field.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, value)| value)
    }

    /// The fields' size as sent: name, ": ", value and CRLF each.
    pub fn len_as_sent(&self) -> usize {
        self.at
            .iter()
            .map(|field| (field.name.1 + field.value.1) as usize + 4)
            .sum()
    }

    /// Each field's name and value, in the order they came.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.at
            .iter()
            .map(|field| (&self.head[span(field.name)], &self.head[span(field.value)]))
    }

    /// The fields as a map whose values share the head's memory. A
    /// `Connection` field is left out unless it names other fields (which
    /// the relay removes with it). httparse admits exactly the names and
    /// values `HeaderName` and `HeaderValue` do, so nothing is lost; a field
    /// either refused anyway is left out rather than passed on unchecked.
    pub fn to_map(&self) -> HeaderMap {
        let mut headers = HeaderMap::with_capacity(self.at.len());
        for field in &self.at {
            let name = &self.head[span(field.name)];
            let value = &self.head[span(field.value)];
            if name.eq_ignore_ascii_case(b"connection") && !names_fields(value) {
                continue;
            }
            let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name),
                HeaderValue::from_maybe_shared(self.head.slice(span(field.value))),
            ) else {
                tracing::debug!("a backend's header field was refused when relayed");
                continue;
            };
            headers.append(name, value);
        }
        headers
    }
}

/// Whether a value is text that `HeaderValue::to_str` accepts: visible
/// ASCII, spaces and tabs. A field whose value is not says nothing.
pub fn visible_ascii(value: &[u8]) -> bool {
    value.iter().all(|&b| b == b'\t' || (b' '..0x7f).contains(&b))
}

/// The tokens of a `Connection` value, trimmed, when it is visible ASCII.
pub fn connection_tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    let text = visible_ascii(value);
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(move |token| text && !token.is_empty())
}

/// Whether a `Connection` value names fields besides `close` and `keep-alive`.
pub fn names_fields(value: &[u8]) -> bool {
    // The usual values, told at once.
    if value.eq_ignore_ascii_case(b"keep-alive") || value.eq_ignore_ascii_case(b"close") {
        return false;
    }
    connection_tokens(value).any(|t| !t.eq_ignore_ascii_case(b"close") && !t.eq_ignore_ascii_case(b"keep-alive"))
}

/// Takes the answer's head from the start of `buf` when it is all there
/// (skipping interim 1xx answers); None while more bytes are needed. The
/// head is parsed once: field positions are noted during the parse, and
/// nothing is copied or hashed.
pub fn take_response_head(buf: &mut BytesMut, method: &Method) -> Result<Option<ResponseHead>, Malformed> {
    loop {
        let (n, code, http10, at) = {
            let mut fields = [const { MaybeUninit::uninit() }; MAX_HEADERS];
            let mut response = httparse::Response::new(&mut []);
            let parsed =
                httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut response, buf, &mut fields);
            let n = match parsed {
                Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Err(Malformed::HeadTooLong),
                Ok(httparse::Status::Partial) => return Ok(None),
                Ok(httparse::Status::Complete(n)) if n > MAX_HEAD => return Err(Malformed::HeadTooLong),
                Ok(httparse::Status::Complete(n)) => n,
                Err(httparse::Error::TooManyHeaders) => return Err(Malformed::TooManyHeaders),
                Err(e) => return Err(Malformed::Head(e.to_string())),
            };
            let code = response.code.unwrap_or(0);
            let at = if (100..200).contains(&code) {
                Vec::new()
            } else {
                locate(buf, response.headers)
            };
            (n, code, response.version == Some(0), at)
        };
        match code {
            101 => return Err(Malformed::UnaskedSwitch),
            100..=199 => buf.advance(n),
            _ => {
                let head = buf.split_to(n).freeze();
                return build_head(Fields { head, at }, code, http10, method).map(Some);
            }
        }
    }
}

/// The head's status and framing, read from its fields (RFC 9112, 6.3).
fn build_head(fields: Fields, code: u16, http10: bool, method: &Method) -> Result<ResponseHead, Malformed> {
    let status = StatusCode::from_u16(code).map_err(|_| Malformed::Head("no status".into()))?;
    let mut chunked = false;
    let mut transfer_encoding = false;
    let mut length: Option<u64> = None;
    let mut close = http10;
    for (name, value) in fields.iter() {
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = crate::field::content_length(value).ok_or(Malformed::ContentLength)?;
            if length.is_some_and(|earlier| earlier != n) {
                return Err(Malformed::ContentLength);
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            transfer_encoding = true;
            // Only a final "chunked" frames the body; anything else reads to the close.
            chunked = visible_ascii(value)
                && value
                    .rsplit(|&b| b == b',')
                    .next()
                    .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in connection_tokens(value) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    close &= !http10;
                }
            }
        }
    }
    let bodyless = *method == Method::HEAD || matches!(status.as_u16(), 204 | 304);
    let framing = if bodyless {
        ResponseFraming::Empty
    } else if transfer_encoding {
        if length.is_some() {
            return Err(Malformed::BothFramings);
        }
        if http10 {
            return Err(Malformed::TransferEncoding10);
        }
        if chunked {
            ResponseFraming::Chunked
        } else {
            ResponseFraming::UntilClose
        }
    } else {
        match length {
            Some(0) => ResponseFraming::Empty,
            Some(n) => ResponseFraming::Length(n),
            None => ResponseFraming::UntilClose,
        }
    };
    Ok(ResponseHead {
        status,
        fields,
        framing,
        keep_alive: !close && framing != ResponseFraming::UntilClose,
    })
}

/// Where a chunked body's decoder stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// At a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes left.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: trailer lines up to an empty one; this much read.
    Trailers(usize),
    Done,
}

/// A chunked body decoded from a buffer that more bytes are appended to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkedDecoder {
    state: ChunkState,
}

/// What the decoder took from the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Some of the body's data.
    Data(Bytes),
    /// The body ended (last chunk and trailers read).
    End,
    /// The buffer holds no whole next piece: read more.
    NeedMore,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder {
            state: ChunkState::Size,
        }
    }
}

impl ChunkedDecoder {
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Takes the next piece out of `buf`: data shares `buf`'s memory.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, Malformed> {
        loop {
            match self.state {
                ChunkState::Done => return Ok(Decoded::End),
                ChunkState::Size => {
                    let Some(end) = line_end(buf, MAX_CHUNK_LINE, Malformed::ChunkSize, Malformed::ChunkSize)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    let size = chunk_size(&buf[..end])?;
                    buf.advance(end + 2);
                    self.state = if size == 0 {
                        ChunkState::Trailers(0)
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let data = buf.split_to(take).freeze();
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left)
                    };
                    return Ok(Decoded::Data(data));
                }
                ChunkState::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(Malformed::ChunkEnd);
                    }
                    buf.advance(2);
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers(read) => {
                    let Some(end) = line_end(
                        buf,
                        MAX_TRAILERS.saturating_sub(read),
                        Malformed::TrailersTooLong,
                        Malformed::ChunkEnd,
                    )?
                    else {
                        return Ok(Decoded::NeedMore);
                    };
                    buf.advance(end + 2);
                    self.state = if end == 0 {
                        ChunkState::Done
                    } else {
                        ChunkState::Trailers(read + end + 2)
                    };
                }
            }
        }
    }
}

/// Where the CRLF-ended line at the start of `buf` ends (before the CRLF);
/// None while no line end came within `limit`.
fn line_end(buf: &[u8], limit: usize, too_long: Malformed, bare_lf: Malformed) -> Result<Option<usize>, Malformed> {
    let window = &buf[..buf.len().min(limit.saturating_add(2))];
    match window.iter().position(|&b| b == b'\n') {
        Some(lf) if lf > 0 && window[lf - 1] == b'\r' => Ok(Some(lf - 1)),
        Some(_) => Err(bare_lf),
        None if buf.len() > limit => Err(too_long),
        None => Ok(None),
    }
}

/// A chunk-size line's size: hex digits, then nothing or `;` extensions.
fn chunk_size(line: &[u8]) -> Result<u64, Malformed> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(Malformed::ChunkSize);
    }
    match line[digits..].iter().position(|&b| b != b' ' && b != b'\t') {
        None => {}
        Some(at) if line[digits + at] == b';' => {}
        Some(_) => return Err(Malformed::ChunkSize),
    }
    let text = std::str::from_utf8(&line[..digits]).map_err(|_| Malformed::ChunkSize)?;
    u64::from_str_radix(text, 16).map_err(|_| Malformed::ChunkSize)
}

/// Appends the chunk-size line written before `len` bytes of a chunked
/// request body.
pub fn chunk_header(len: usize, out: &mut Vec<u8>) {
    use std::io::Write;
    let _ = write!(out, "{len:x}\r\n");
}

/// The last chunk and an empty trailer section.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str, method: &Method) -> Result<ResponseHead, Malformed> {
        take(text.as_bytes(), method).map(|h| h.expect("a whole head"))
    }

    fn take(bytes: &[u8], method: &Method) -> Result<Option<ResponseHead>, Malformed> {
        take_response_head(&mut BytesMut::from(bytes), method)
    }

    #[test]
    fn request_heads_carry_the_framing_the_body_needs() {
        fn encode(out: &mut Vec<u8>, method: Method, headers: &HeaderMap, bodyless: bool) -> RequestFraming {
            let uri: Uri = "/api/x?y=1".parse().unwrap();
            let head = RequestHead {
                method: &method,
                uri: &uri,
                fields: Outgoing::Map(headers),
                forwarded: None,
            };
            encode_request_head(out, &head, bodyless)
        }
        let mut out = Vec::new();
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("flow.example"));
        let uri: Uri = "/api/x?y=1".parse().unwrap();
        assert_eq!(encode(&mut out, Method::GET, &headers, true), RequestFraming::Empty);
        assert_eq!(out, b"GET /api/x?y=1 HTTP/1.1\r\nhost: flow.example\r\n\r\n");
        assert_eq!(encode(&mut out, Method::POST, &headers, true), RequestFraming::Empty);
        assert!(out.ends_with(b"content-length: 0\r\n\r\n"));
        assert_eq!(encode(&mut out, Method::POST, &headers, false), RequestFraming::Chunked);
        assert!(out.ends_with(b"transfer-encoding: chunked\r\n\r\n"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("12"));
        assert_eq!(
            encode(&mut out, Method::PUT, &headers, false),
            RequestFraming::Length(12)
        );
        assert!(!String::from_utf8_lossy(&out).contains("transfer-encoding"));
        let forwarded = Forwarded {
            for_: HeaderValue::from_static("10.0.0.1"),
            proto: HeaderValue::from_static("https"),
            port: HeaderValue::from_static("443"),
            host: None,
        };
        let head = RequestHead {
            method: &Method::GET,
            uri: &uri,
            fields: Outgoing::Map(&HeaderMap::new()),
            forwarded: Some(&forwarded),
        };
        encode_request_head(&mut out, &head, true);
        assert_eq!(
            out,
            b"GET /api/x?y=1 HTTP/1.1\r\nx-forwarded-for: 10.0.0.1\r\nx-forwarded-proto: https\r\nx-forwarded-port: 443\r\n\r\n"
        );
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        let get = Method::GET;
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", &get).unwrap();
        assert_eq!((h.framing, h.keep_alive), (ResponseFraming::Length(5), true));
        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", &get).unwrap();
        assert_eq!(h.framing, ResponseFraming::Chunked);
        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", &get).unwrap();
        assert_eq!((h.framing, h.keep_alive), (ResponseFraming::UntilClose, false));
        let h = head("HTTP/1.1 200 OK\r\n\r\n", &get).unwrap();
        assert_eq!((h.framing, h.keep_alive), (ResponseFraming::UntilClose, false));
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", &Method::HEAD).unwrap();
        assert_eq!(h.framing, ResponseFraming::Empty);
        let h = head("HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", &get).unwrap();
        assert_eq!(h.framing, ResponseFraming::Empty);
        let h = head(
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\n",
            &get,
        )
        .unwrap();
        assert_eq!((h.framing, h.keep_alive), (ResponseFraming::Length(3), false));
        let h = head("HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n", &get).unwrap();
        assert!(!h.keep_alive);
        let h = head(
            "HTTP/1.0 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\n",
            &get,
        )
        .unwrap();
        assert!(h.keep_alive);
        assert!(!h.fields.to_map().contains_key(header::CONNECTION));
        let h = head(
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: x-hop\r\nX-Hop: 1\r\n\r\n",
            &get,
        )
        .unwrap();
        assert_eq!(h.fields.to_map()[header::CONNECTION], "x-hop");
        let h = head(
            "HTTP/1.1 200 OK\r\nContent-Length: 7\r\nContent-Length: 7\r\n\r\n",
            &get,
        )
        .unwrap();
        assert_eq!(h.framing, ResponseFraming::Length(7));
    }

    #[test]
    fn ambiguous_or_bad_response_framing_is_refused() {
        let get = Method::GET;
        for (text, want) in [
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                Malformed::BothFramings,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                Malformed::ContentLength,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
                Malformed::ContentLength,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n",
                Malformed::ContentLength,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
                Malformed::ContentLength,
            ),
            (
                "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                Malformed::TransferEncoding10,
            ),
        ] {
            assert_eq!(head(text, &get).unwrap_err(), want, "{text:?}");
        }
        assert_eq!(
            take(b"HTTP/1.1 101 Switching Protocols\r\n\r\n", &get).unwrap_err(),
            Malformed::UnaskedSwitch
        );
        assert!(matches!(
            take(b"HTTP/1.1 200 OK\r\nFoo : bar\r\n\r\n", &get),
            Err(Malformed::Head(_))
        ));
        assert!(matches!(
            take(b"HTTP/1.1 200 OK\r\nFoo: bar\r\n baz\r\n\r\n", &get),
            Err(Malformed::Head(_))
        ));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: y\r\n")).collect();
        assert_eq!(
            take(format!("HTTP/1.1 200 OK\r\n{many}\r\n").as_bytes(), &get).unwrap_err(),
            Malformed::TooManyHeaders
        );
        let long = vec![b'a'; MAX_HEAD + 1];
        let mut text = b"HTTP/1.1 200 OK\r\nx: ".to_vec();
        text.extend_from_slice(&long);
        assert_eq!(take(&text, &get).unwrap_err(), Malformed::HeadTooLong);
    }

    #[test]
    fn interim_answers_are_skipped_and_partial_heads_wait() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200"[..],
        );
        assert!(take_response_head(&mut buf, &Method::GET).unwrap().is_none());
        assert_eq!(&buf[..], b"HTTP/1.1 200");
        buf.extend_from_slice(b" OK\r\nContent-Length: 2\r\n\r\nok");
        let head = take_response_head(&mut buf, &Method::GET).unwrap().unwrap();
        assert_eq!(
            (head.status, head.framing),
            (StatusCode::OK, ResponseFraming::Length(2))
        );
        assert_eq!(head.fields.to_map()["content-length"], "2");
        assert_eq!(&buf[..], b"ok");
        assert!(take(b"HTTP/1.1 200 OK\r\nContent-Len", &Method::GET).unwrap().is_none());
    }

    fn decode_all(decoder: &mut ChunkedDecoder, input: &[u8]) -> Result<(Vec<u8>, bool), Malformed> {
        let mut buf = BytesMut::from(input);
        let mut body = Vec::new();
        loop {
            match decoder.decode(&mut buf)? {
                Decoded::Data(d) => body.extend_from_slice(&d),
                Decoded::End => return Ok((body, true)),
                Decoded::NeedMore => return Ok((body, false)),
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_whole_and_byte_by_byte() {
        let input = b"5;ext=1\r\nhello\r\n1 \r\n \r\n0\r\nx-trailer: 1\r\n\r\n";
        let (body, done) = decode_all(&mut ChunkedDecoder::default(), input).unwrap();
        assert_eq!((body.as_slice(), done), (&b"hello "[..], true));
        // The same bytes arriving one at a time.
        let mut decoder = ChunkedDecoder::default();
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        for &byte in input.iter() {
            buf.extend_from_slice(&[byte]);
            while let Decoded::Data(d) = decoder.decode(&mut buf).unwrap() {
                body.extend_from_slice(&d);
            }
        }
        assert!(decoder.is_done());
        assert_eq!(body, b"hello ");
    }

    #[test]
    fn malformed_chunks_are_errors() {
        for (input, want) in [
            (&b"x\r\n"[..], Malformed::ChunkSize),
            (b"-5\r\n", Malformed::ChunkSize),
            (b"5 x\r\n", Malformed::ChunkSize),
            (b"11111111111111111\r\n", Malformed::ChunkSize),
            (b"5\n", Malformed::ChunkSize),
            (b"5\r\nhelloXY", Malformed::ChunkEnd),
            (b"0\r\nx: 1\n", Malformed::ChunkEnd),
        ] {
            assert_eq!(
                decode_all(&mut ChunkedDecoder::default(), input).unwrap_err(),
                want,
                "{input:?}"
            );
        }
        let long = [b"1;".as_slice(), &vec![b'a'; MAX_CHUNK_LINE + 8]].concat();
        assert_eq!(
            decode_all(&mut ChunkedDecoder::default(), &long).unwrap_err(),
            Malformed::ChunkSize
        );
        let trailers = [b"0\r\n".as_slice(), &b"x: y\r\n".repeat(MAX_TRAILERS / 6 + 2)].concat();
        assert_eq!(
            decode_all(&mut ChunkedDecoder::default(), &trailers).unwrap_err(),
            Malformed::TrailersTooLong
        );
        // A size that only fits in 64 bits is fine to start.
        let (_, done) = decode_all(&mut ChunkedDecoder::default(), b"ffffffffffffffff\r\nab").unwrap();
        assert!(!done);
    }
}
