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
    #[error("a header field is not valid")]
    Field,
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

/// Writes a request head into `out`: origin-form target, the headers as
/// they are (already without hop-by-hop fields), and the framing header the
/// body needs. `headers` carries no Transfer-Encoding (hop-by-hop); a
/// Content-Length in it is the one the client sent, already checked.
pub fn encode_request_head(
    out: &mut Vec<u8>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    bodyless: bool,
) -> RequestFraming {
    out.clear();
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(uri.path_and_query().map_or("/", |p| p.as_str()).as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let length = headers.get(header::CONTENT_LENGTH).map(content_length);
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

/// One Content-Length value: digits only, no sign, no overflow.
fn content_length(value: &HeaderValue) -> Option<u64> {
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() > 19 || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    bytes
        .iter()
        .try_fold(0u64, |n, d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
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
    pub headers: HeaderMap,
    pub framing: ResponseFraming,
    /// The connection may carry another request once the body is read.
    pub keep_alive: bool,
}

/// What `parse_response_head` found at the start of the buffer.
#[derive(Debug)]
pub enum Parsed {
    /// More bytes are needed.
    Partial,
    /// An interim (1xx) answer of this many bytes, to be skipped.
    Interim(usize),
    /// The final head, of this many bytes.
    Complete(usize),
}

/// Finds whether `buf` starts with a whole response head, without building
/// anything: the cheap first look, made on every read.
pub fn scan_response_head(buf: &[u8]) -> Result<Parsed, Malformed> {
    let mut fields = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut response, buf, &mut fields);
    match parsed {
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => Err(Malformed::HeadTooLong),
        Ok(httparse::Status::Partial) => Ok(Parsed::Partial),
        Ok(httparse::Status::Complete(_)) if response.code == Some(101) => Err(Malformed::UnaskedSwitch),
        Ok(httparse::Status::Complete(n)) if response.code.is_some_and(|c| c < 200) => Ok(Parsed::Interim(n)),
        Ok(httparse::Status::Complete(n)) if n > MAX_HEAD => Err(Malformed::HeadTooLong),
        Ok(httparse::Status::Complete(n)) => Ok(Parsed::Complete(n)),
        Err(httparse::Error::TooManyHeaders) => Err(Malformed::TooManyHeaders),
        Err(e) => Err(Malformed::Head(e.to_string())),
    }
}

/// Builds the head `scan_response_head` found complete in `head` (exactly
/// its bytes). Field values share `head`'s memory rather than being copied.
pub fn parse_response_head(head: &Bytes, method: &Method) -> Result<ResponseHead, Malformed> {
    let mut fields = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut response, head, &mut fields)
        .map_err(|e| Malformed::Head(e.to_string()))?;
    let status = response
        .code
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or_else(|| Malformed::Head("no status".into()))?;
    let http10 = response.version == Some(0);
    let mut headers = HeaderMap::with_capacity(response.headers.len());
    let mut chunked = false;
    let mut transfer_encoding = false;
    let mut length: Option<u64> = None;
    let mut close = http10;
    for field in response.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes()).map_err(|_| Malformed::Field)?;
        let value = HeaderValue::from_maybe_shared(head.slice_ref(field.value)).map_err(|_| Malformed::Field)?;
        if name == header::CONTENT_LENGTH {
            let n = content_length(&value).ok_or(Malformed::ContentLength)?;
            if length.is_some_and(|earlier| earlier != n) {
                return Err(Malformed::ContentLength);
            }
            length = Some(n);
        } else if name == header::TRANSFER_ENCODING {
            transfer_encoding = true;
            // Only a final "chunked" frames the body; anything else reads to the close.
            chunked = value
                .to_str()
                .ok()
                .and_then(|v| v.rsplit(',').next())
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        } else if name == header::CONNECTION {
            let tokens = value.to_str().unwrap_or("");
            for token in tokens.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    close = true;
                } else if http10 && token.eq_ignore_ascii_case("keep-alive") {
                    close = false;
                }
            }
        }
        headers.append(name, value);
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
        headers,
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
        let bytes = Bytes::copy_from_slice(text.as_bytes());
        match scan_response_head(&bytes)? {
            Parsed::Complete(n) => parse_response_head(&bytes.slice(..n), method),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn request_heads_carry_the_framing_the_body_needs() {
        let mut out = Vec::new();
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("flow.example"));
        let uri: Uri = "/api/x?y=1".parse().unwrap();
        assert_eq!(
            encode_request_head(&mut out, &Method::GET, &uri, &headers, true),
            RequestFraming::Empty
        );
        assert_eq!(out, b"GET /api/x?y=1 HTTP/1.1\r\nhost: flow.example\r\n\r\n");
        assert_eq!(
            encode_request_head(&mut out, &Method::POST, &uri, &headers, true),
            RequestFraming::Empty
        );
        assert!(out.ends_with(b"content-length: 0\r\n\r\n"));
        assert_eq!(
            encode_request_head(&mut out, &Method::POST, &uri, &headers, false),
            RequestFraming::Chunked
        );
        assert!(out.ends_with(b"transfer-encoding: chunked\r\n\r\n"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("12"));
        assert_eq!(
            encode_request_head(&mut out, &Method::PUT, &uri, &headers, false),
            RequestFraming::Length(12)
        );
        assert!(!String::from_utf8_lossy(&out).contains("transfer-encoding"));
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
            scan_response_head(b"HTTP/1.1 101 Switching Protocols\r\n\r\n").unwrap_err(),
            Malformed::UnaskedSwitch
        );
        assert!(matches!(
            scan_response_head(b"HTTP/1.1 200 OK\r\nFoo : bar\r\n\r\n"),
            Err(Malformed::Head(_))
        ));
        assert!(matches!(
            scan_response_head(b"HTTP/1.1 200 OK\r\nFoo: bar\r\n baz\r\n\r\n"),
            Err(Malformed::Head(_))
        ));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: y\r\n")).collect();
        assert_eq!(
            scan_response_head(format!("HTTP/1.1 200 OK\r\n{many}\r\n").as_bytes()).unwrap_err(),
            Malformed::TooManyHeaders
        );
        let long = vec![b'a'; MAX_HEAD + 1];
        let mut text = b"HTTP/1.1 200 OK\r\nx: ".to_vec();
        text.extend_from_slice(&long);
        assert_eq!(scan_response_head(&text).unwrap_err(), Malformed::HeadTooLong);
    }

    #[test]
    fn interim_answers_are_skipped_and_partial_heads_wait() {
        assert!(matches!(
            scan_response_head(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200"),
            Ok(Parsed::Interim(25))
        ));
        assert!(matches!(
            scan_response_head(b"HTTP/1.1 200 OK\r\nContent-Len"),
            Ok(Parsed::Partial)
        ));
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
