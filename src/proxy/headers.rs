//! The headers the proxy checks and rewrites, for plain requests and
//! WebSocket handshakes alike: the one Host a request may name, the
//! hop-by-hop headers that go, the forwarded headers that only the proxy
//! (or a trusted proxy before it) may set, and the sticky cookie.

use std::borrow::Cow;

use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Uri, Version};

use super::conn::ConnInfo;
use super::h1::{Fields, connection_tokens, names_fields, visible_ascii};
use crate::config::proxy::Service;

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The forwarded fields the proxy always writes itself: a trusted peer's
/// are replaced (its X-Forwarded-For extended), never passed on beside them.
const SET_BY_PROXY: [HeaderName; 4] = [X_FORWARDED_FOR, X_FORWARDED_PROTO, X_FORWARDED_PORT, X_FORWARDED_HOST];

/// Headers a `Connection` token can never remove: what routes and frames the
/// message, and what the proxy sets itself.
fn protected(name: &HeaderName) -> bool {
    protected_name(name.as_str().as_bytes())
}

/// `protected` for a name as it was sent, in any case.
fn protected_name(name: &[u8]) -> bool {
    const ROUTING: [&[u8]; 4] = [b"host", b"content-length", b"transfer-encoding", b"upgrade"];
    ROUTING.iter().any(|p| name.eq_ignore_ascii_case(p)) || is_forwarding_name(name)
}

/// A header that says what earlier hops saw: only the proxy, or a trusted
/// proxy before it, may set these.
fn is_forwarding(name: &HeaderName) -> bool {
    is_forwarding_name(name.as_str().as_bytes())
}

/// `is_forwarding` for a name as it was sent, in any case.
fn is_forwarding_name(name: &[u8]) -> bool {
    let prefix = b"x-forwarded-";
    name.eq_ignore_ascii_case(b"forwarded")
        || name.eq_ignore_ascii_case(b"x-real-ip")
        || name
            .get(..prefix.len())
            .is_some_and(|start| start.eq_ignore_ascii_case(prefix))
}

/// Why a request is refused with 400 before it is routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadRequest {
    #[error("the request has no Host header")]
    NoHost,
    #[error("the request has more than one Host header")]
    SeveralHosts,
    #[error("the Host header is not a valid host name with an optional port")]
    InvalidHost,
    #[error("the request target names another host than the Host header")]
    HostMismatch,
    #[error("a WebSocket handshake cannot carry a request body")]
    UpgradeWithBody,
    #[error("the request's length is ambiguous (Content-Length with Transfer-Encoding, or several lengths)")]
    AmbiguousLength,
    #[error("Transfer-Encoding must be exactly 'chunked', once, on HTTP/1.1")]
    BadTransferEncoding,
}

impl BadRequest {
    /// 400 that closes the connection: after a request this malformed,
    /// nothing else on the connection can be trusted.
    pub fn response(self) -> hyper::Response<crate::serve::Body> {
        let mut response = crate::serve::text(hyper::StatusCode::BAD_REQUEST, self.to_string());
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        response
    }
}

/// What the checks before routing read of a client's request: hyper's
/// request, its fields in a map, or the plain path's, its fields as sent.
pub trait ClientHead {
    fn method(&self) -> &Method;
    fn uri(&self) -> &Uri;
    fn version(&self) -> Version;
    /// The values of every field named `name`, in order.
    fn values(&self, name: &HeaderName) -> impl Iterator<Item = &[u8]>;
    /// The fields' size as sent: name, ": ", value and CRLF each.
    fn fields_len(&self) -> usize;
    /// The framing rules hyper leaves to the proxy (`check_framing`).
    fn check_framing(&self) -> Result<(), BadRequest>;
}

impl<B> ClientHead for Request<B> {
    fn method(&self) -> &Method {
        Request::method(self)
    }

    fn uri(&self) -> &Uri {
        Request::uri(self)
    }

    fn version(&self) -> Version {
        Request::version(self)
    }

    fn values(&self, name: &HeaderName) -> impl Iterator<Item = &[u8]> {
        self.headers().get_all(name).iter().map(HeaderValue::as_bytes)
    }

    fn fields_len(&self) -> usize {
        self.headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum()
    }

    fn check_framing(&self) -> Result<(), BadRequest> {
        check_framing(self)
    }
}

/// The framing rules hyper leaves to the proxy (RFC 9112, 6.1 and 6.3):
/// Content-Length beside Transfer-Encoding, Transfer-Encoding on HTTP/1.0,
/// a coding other than one `chunked`, and differing lengths are refused,
/// since some server behind or beside the proxy may read them otherwise.
pub fn check_framing<B>(req: &Request<B>) -> Result<(), BadRequest> {
    let headers = req.headers();
    let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter();
    if let Some(first) = lengths.next() {
        if headers.contains_key(header::TRANSFER_ENCODING) || lengths.any(|other| other != first) {
            return Err(BadRequest::AmbiguousLength);
        }
    }
    let mut codings = headers.get_all(header::TRANSFER_ENCODING).iter();
    if let Some(coding) = codings.next() {
        let chunked = coding.as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked");
        if !chunked || codings.next().is_some() || req.version() != Version::HTTP_11 {
            return Err(BadRequest::BadTransferEncoding);
        }
    }
    Ok(())
}

/// The request's host, lower-case and without a port. Exactly one Host
/// header, a valid authority; on HTTP/2 (and for absolute-form targets) it
/// must name the same host as the target, so the proxy never routes by one
/// name and forwards another. Borrowed from the request unless the name
/// needs lower-casing.
pub fn request_host(req: &impl ClientHead) -> Result<Cow<'_, str>, BadRequest> {
    let mut hosts = req.values(&header::HOST);
    let header = hosts.next();
    if hosts.next().is_some() {
        return Err(BadRequest::SeveralHosts);
    }
    let header = match header {
        Some(value) => Some(parse_authority(value).ok_or(BadRequest::InvalidHost)?),
        None => None,
    };
    let target = match req.uri().authority() {
        Some(a) => Some(parse_authority(a.as_str().as_bytes()).ok_or(BadRequest::InvalidHost)?),
        None => None,
    };
    match (target, header) {
        (Some(t), Some(h)) => {
            // HTTP/2: :authority and Host are one name for one thing. HTTP/1.1
            // absolute form: the target wins (RFC 9112, 3.2.2), so the Host
            // header must agree with it.
            let same = if req.version() == Version::HTTP_2 {
                t == h
            } else {
                t.0 == h.0
            };
            if same { Ok(t.0) } else { Err(BadRequest::HostMismatch) }
        }
        (Some(t), None) => Ok(t.0),
        (None, Some(h)) => Ok(h.0),
        (None, None) => Err(BadRequest::NoHost),
    }
}

/// `host[:port]` as (lower-case host, port): a DNS name, an IPv4 address or
/// a bracketed IPv6 address; no user info, no path, nothing else. The host
/// is copied only when it has upper-case letters.
fn parse_authority(bytes: &[u8]) -> Option<(Cow<'_, str>, Option<u16>)> {
    // Bytes, not text: one pass each, and anything not ASCII is refused
    // (an IPv6 literal is checked as text below).
    let text = bytes.trim_ascii();
    let (host, port) = if let Some(rest) = text.strip_prefix(b"[") {
        let close = rest.iter().position(|&b| b == b']')?;
        let inside = &rest[..close];
        std::str::from_utf8(inside).ok()?.parse::<std::net::Ipv6Addr>().ok()?;
        let port = match &rest[close + 1..] {
            [] => None,
            [b':', port @ ..] => Some(port),
            _ => return None,
        };
        (inside, port)
    } else {
        match text.iter().rposition(|&b| b == b':') {
            Some(colon) => (&text[..colon], Some(&text[colon + 1..])),
            None => (text, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.len() <= 5 && p.iter().all(u8::is_ascii_digit) => {
            let value = p.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
            Some(u16::try_from(value).ok()?)
        }
        Some(_) => return None,
    };
    let valid_name = |h: &[u8]| {
        !h.is_empty()
            && h.len() <= 253
            && h.iter()
                .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    };
    if !text.starts_with(b"[") && !valid_name(host) {
        return None;
    }
    let host = std::str::from_utf8(host).ok()?;
    let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    };
    Some((host, port))
}

/// A WebSocket handshake is a GET without a body (RFC 6455, 4.1). One that
/// declares a body would leave those bytes on the backend connection, to
/// be read as the start of the next request.
pub fn check_upgrade_framing(headers: &HeaderMap) -> Result<(), BadRequest> {
    if headers.contains_key(header::TRANSFER_ENCODING) {
        return Err(BadRequest::UpgradeWithBody);
    }
    for value in headers.get_all(header::CONTENT_LENGTH) {
        if value.as_bytes().trim_ascii() != b"0" {
            return Err(BadRequest::UpgradeWithBody);
        }
    }
    Ok(())
}

/// The X-Forwarded-* fields a request carries to its backend: what the
/// client used, as the proxy saw it.
pub struct Forwarded {
    pub for_: HeaderValue,
    pub proto: HeaderValue,
    pub port: HeaderValue,
    /// The request's Host, when it has one.
    pub host: Option<HeaderValue>,
}

impl Forwarded {
    /// The fields as written on the wire (the HTTP/1.1 request writer
    /// appends these to the head rather than hashing them into the map).
    pub fn fields(&self) -> impl Iterator<Item = (&'static str, &HeaderValue)> {
        [
            ("x-forwarded-for", Some(&self.for_)),
            ("x-forwarded-proto", Some(&self.proto)),
            ("x-forwarded-port", Some(&self.port)),
            ("x-forwarded-host", self.host.as_ref()),
        ]
        .into_iter()
        .filter_map(|(name, value)| Some((name, value?)))
    }

    /// The fields added to a header map (for a request built as a map).
    pub fn insert_into(self, headers: &mut HeaderMap) {
        headers.insert(X_FORWARDED_FOR, self.for_);
        headers.insert(X_FORWARDED_PROTO, self.proto);
        headers.insert(X_FORWARDED_PORT, self.port);
        if let Some(host) = self.host {
            headers.insert(X_FORWARDED_HOST, host);
        }
    }
}

/// Rewrites request headers for the backend: hop-by-hop headers go (and
/// whatever the Connection header names, unless protected), Host stays, the
/// client's own forwarded headers go unless its address is trusted (a
/// trusted proxy's X-Forwarded-For is extended, its other X-Forwarded-*
/// replaced), and the X-Forwarded-* set returned says what the client used.
pub fn prepare_request_headers(headers: &mut HeaderMap, uri: &Uri, conn: &ConnInfo, settings: &Service) -> Forwarded {
    remove_hop_by_hop(headers);
    headers.remove(header::UPGRADE);
    if !headers.contains_key(header::HOST) {
        // HTTP/2 carries the host in the :authority pseudo-header.
        if let Some(value) = uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()) {
            headers.insert(header::HOST, value);
        }
    }
    let previous = if conn.trusted {
        let previous = headers.get(X_FORWARDED_FOR).cloned();
        for name in SET_BY_PROXY {
            headers.remove(name);
        }
        previous
    } else {
        remove_client_forwarding(headers);
        None
    };
    let host = headers.get(header::HOST).cloned();
    forwarded(previous.as_ref().map(HeaderValue::as_bytes), host, conn, settings)
}

/// `prepare_request_headers` for the plain path's request, its fields as
/// sent: the X-Forwarded-* set for it. Which of its fields go on is
/// `to_backend`'s to say, as the head is written.
pub fn forwarded_for_sent(fields: &Fields, conn: &ConnInfo, settings: &Service) -> Forwarded {
    let previous = if conn.trusted {
        fields.first(X_FORWARDED_FOR.as_str())
    } else {
        None
    };
    let host = fields
        .first(header::HOST.as_str())
        .and_then(|host| HeaderValue::from_maybe_shared(host).ok());
    forwarded(previous.as_deref(), host, conn, settings)
}

/// What the client used, as the proxy saw it: `previous` is the first
/// X-Forwarded-For a trusted peer sent (extended with the peer's address).
fn forwarded(previous: Option<&[u8]>, host: Option<HeaderValue>, conn: &ConnInfo, settings: &Service) -> Forwarded {
    let for_ = match previous.filter(|p| conn.trusted && visible_ascii(p) && !p.trim_ascii().is_empty()) {
        Some(previous) => {
            let previous = String::from_utf8_lossy(previous);
            let client_ip = conn.client_ip.to_str().unwrap_or("unknown");
            HeaderValue::from_str(&format!("{previous}, {client_ip}")).unwrap_or_else(|_| conn.client_ip.clone())
        }
        None => conn.client_ip.clone(),
    };
    let proto = match settings.forwarded_proto.as_deref() {
        Some(proto) => HeaderValue::from_str(proto).unwrap_or(HeaderValue::from_static("https")),
        None => HeaderValue::from_static(conn.scheme.as_str()),
    };
    let port = match settings.forwarded_port {
        Some(port) => HeaderValue::from(port),
        None => conn.port_value.clone(),
    };
    Forwarded {
        for_,
        proto,
        port,
        host,
    }
}

/// The plain path's request fields that go on to a backend, as the client
/// sent them: what `prepare_request_headers` keeps of a map. The
/// end-to-end ones (`end_to_end`), without Upgrade, without what the client
/// claims about earlier hops (unless its peer is trusted: then only the
/// X-Forwarded-* the proxy sets itself go) and without framing fields (the
/// request goes without a body).
pub fn to_backend(fields: &Fields, trusted: bool) -> impl Iterator<Item = (&[u8], &[u8])> {
    end_to_end(fields).filter(move |(name, _)| {
        let dropped = if trusted {
            set_by_proxy(name)
        } else {
            is_forwarding_name(name)
        };
        !(dropped || name.eq_ignore_ascii_case(b"upgrade") || name.eq_ignore_ascii_case(b"content-length"))
    })
}

/// One of `SET_BY_PROXY`, named in any case.
fn set_by_proxy(name: &[u8]) -> bool {
    SET_BY_PROXY
        .iter()
        .any(|own| name.eq_ignore_ascii_case(own.as_str().as_bytes()))
}

/// Removes what a client may claim about earlier hops: only a trusted
/// proxy's claims reach the backend.
fn remove_client_forwarding(headers: &mut HeaderMap) {
    let claimed: Vec<HeaderName> = headers.keys().filter(|name| is_forwarding(name)).cloned().collect();
    for name in claimed {
        headers.remove(name);
    }
}

/// Removes the hop-by-hop headers, and those the Connection header names
/// unless they are protected.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names, matched as text (a length and a compare;
    // cheaper than hashing each of the eight names, or comparing
    // HeaderNames): most messages carry none of them, or only `Connection:
    // keep-alive`.
    let mut present: [Option<HeaderName>; 8] = Default::default();
    for (slot, name) in present.iter_mut().zip(headers.keys().filter(|n| is_hop_by_hop(n))) {
        *slot = Some(name.clone());
    }
    if present[0].is_none() {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        // The usual token: its header goes with the hop-by-hop ones below.
        .filter(|t| !t.eq_ignore_ascii_case("keep-alive"))
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .filter(|name| !protected(name))
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in present.into_iter().flatten() {
        headers.remove(name);
    }
}

/// The headers removed from every message in both directions (RFC 9110,
/// 7.6.1) besides those `Connection` names.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
];

/// A hop-by-hop header, told by its text.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    is_hop_by_hop_name(name.as_str().as_bytes())
}

/// A backend's answer fields that go on to the client, as the backend wrote
/// them: `remove_hop_by_hop` for fields not in a map, with the same rules
/// (the hop-by-hop ones, and those a `Connection` field names unless
/// protected or named `keep-alive`).
pub fn end_to_end(fields: &Fields) -> impl Iterator<Item = (&[u8], &[u8])> {
    // Connection fields that name others are rare: only then is each field
    // looked for among their tokens.
    let naming = fields
        .iter()
        .any(|(name, value)| name.eq_ignore_ascii_case(b"connection") && names_fields(value));
    fields
        .iter()
        .filter(move |(name, _)| !(is_hop_by_hop_name(name) || naming && named_by_connection(fields, name)))
}

/// `is_hop_by_hop` for a name as it was sent, in any case (each compare
/// looks at the lengths first, so most names cost eight of those).
fn is_hop_by_hop_name(name: &[u8]) -> bool {
    HOP_BY_HOP.iter().any(|hop| name.eq_ignore_ascii_case(hop.as_bytes()))
}

fn named_by_connection(fields: &Fields, name: &[u8]) -> bool {
    !protected_name(name)
        && fields
            .iter()
            .filter(|(field, _)| field.eq_ignore_ascii_case(b"connection"))
            .flat_map(|(_, value)| connection_tokens(value))
            .any(|token| !token.eq_ignore_ascii_case(b"keep-alive") && token.eq_ignore_ascii_case(name))
}

/// The headers of a WebSocket handshake as written to the backend by hand:
/// nothing that frames a body or asks for one.
pub fn prepare_handshake_headers(headers: &mut HeaderMap) {
    for name in [
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::TE,
        header::EXPECT,
    ] {
        headers.remove(name);
    }
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
}

/// The URI to send to a backend: the client's path and query (origin form;
/// HTTP/2 requests arrive with scheme and authority, which go).
pub fn origin_form(uri: &Uri) -> Uri {
    if uri.scheme().is_none() && uri.authority().is_none() {
        return uri.clone();
    }
    match uri.path_and_query() {
        Some(pq) => Uri::from(pq.clone()),
        None => Uri::from_static("/"),
    }
}

/// The value of the cookie `name` among the Cookie fields' `values`.
pub fn cookie_value<'a>(values: impl Iterator<Item = &'a [u8]>, name: &str) -> Option<String> {
    values
        .filter(|v| visible_ascii(v))
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// The sticky cookie: never readable by scripts, not sent on cross-site
/// subrequests, and over TLS never sent in clear.
pub fn sticky_cookie(name: &str, value: &str, secure: bool) -> Option<HeaderValue> {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax{secure}")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_names_are_told_in_any_case() {
        for name in super::HOP_BY_HOP {
            assert!(is_hop_by_hop_name(name.as_bytes()), "{name}");
            assert!(is_hop_by_hop_name(name.to_ascii_uppercase().as_bytes()), "{name}");
        }
        for name in [
            "t",
            "tee",
            "trailers",
            "connections",
            "content-length",
            "proxy-connectio",
            "upgrade",
        ] {
            assert!(!is_hop_by_hop_name(name.as_bytes()), "{name}");
        }
    }

    #[test]
    fn request_fields_sent_on_as_written_are_those_the_map_keeps() {
        use super::super::conn::Scheme;
        let heads: [&[u8]; 6] = [
            b"GET / HTTP/1.1\r\nHost: flow.example\r\nConnection: keep-alive\r\nKeep-Alive: 5\r\nCookie: a=1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 203.0.113.66\r\nx-forwarded-for: 10.1.1.1\r\n\
              X-FORWARDED-HOST: evil\r\nX-Forwarded-Proto: gopher\r\nX-Forwarded-Prefix: /admin\r\n\
              Forwarded: for=x\r\nX-Real-IP: 1.2.3.4\r\nX-Forwarded-Port: 1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nProxy-Authorization: p\r\nProxy-Connection: k\r\nTE: trailers\r\n\
              Trailer: t\r\nUpgrade: h2c\r\nAccept: */*\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nConnection: x-a, host, X-Forwarded-For, keep-alive\r\nX-A: 1\r\n\
              X-B: 2\r\nX-Forwarded-For: 198.51.100.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: \xe9\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For:  \t \r\nUser-Agent: u\r\n\r\n",
        ];
        let settings = Service::new("flow");
        let as_pairs = |pairs: &mut dyn Iterator<Item = (&[u8], &[u8])>| {
            let mut pairs: Vec<(String, Vec<u8>)> = pairs
                .map(|(name, value)| (String::from_utf8_lossy(name).to_ascii_lowercase(), value.to_vec()))
                .collect();
            pairs.sort();
            pairs
        };
        for trusted in [false, true] {
            let mut conn = ConnInfo::new("192.0.2.7:4000".parse().unwrap(), Scheme::Https, 443);
            conn.trusted = trusted;
            for text in heads {
                let buf = bytes::Bytes::from_static(text);
                let mut storage = [httparse::EMPTY_HEADER; 16];
                let mut parsed = httparse::Request::new(&mut storage);
                parsed.parse(&buf).unwrap();
                let mut map = HeaderMap::new();
                for field in parsed.headers.iter() {
                    map.append(
                        HeaderName::from_bytes(field.name.as_bytes()).unwrap(),
                        HeaderValue::from_bytes(field.value).unwrap(),
                    );
                }
                let fields = super::super::h1::Fields::new(buf.clone(), super::super::h1::locate(&buf, parsed.headers));

                let sent = forwarded_for_sent(&fields, &conn, &settings);
                let raw = as_pairs(
                    &mut to_backend(&fields, trusted).chain(sent.fields().map(|(n, v)| (n.as_bytes(), v.as_bytes()))),
                );
                let uri = Uri::from_static("/");
                let forwarded = prepare_request_headers(&mut map, &uri, &conn, &settings);
                let mapped = as_pairs(
                    &mut map
                        .iter()
                        .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()))
                        .chain(forwarded.fields().map(|(n, v)| (n.as_bytes(), v.as_bytes()))),
                );
                let text = String::from_utf8_lossy(text);
                assert_eq!(raw, mapped, "trusted {trusted}: {text}");
                for name in ["proxy-authorization", "keep-alive", "upgrade", "te", "x-a"] {
                    assert!(raw.iter().all(|(n, _)| n != name), "{name} went on: {text}");
                }
                let count = |name: &str| raw.iter().filter(|(n, _)| n == name).count();
                assert_eq!(count("x-forwarded-for"), 1, "{text}");
                assert_eq!(count("host"), 1, "{text}");
            }
        }
        // The plain path admits no framing field; were one there, it would not go on.
        let buf =
            bytes::Bytes::from_static(b"GET / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n");
        let mut storage = [httparse::EMPTY_HEADER; 4];
        let mut parsed = httparse::Request::new(&mut storage);
        parsed.parse(&buf).unwrap();
        let fields = super::super::h1::Fields::new(buf.clone(), super::super::h1::locate(&buf, parsed.headers));
        assert_eq!(to_backend(&fields, true).count(), 0);
    }

    #[test]
    fn answer_fields_written_as_sent_are_those_the_map_keeps() {
        let heads: [&[u8]; 7] = [
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nServer: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nConnection: X-Hop, close\r\nX-HOP: 1\r\nx-other: 2\r\nTransfer-Encoding: chunked\r\n\
              Trailer: x\r\nProxy-Connection: k\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nConnection: content-length, HOST, x-forwarded-for, upgrade, keep-alive, forwarded\r\n\
              Keep-Alive: 1\r\nContent-Length: 1\r\nX-Forwarded-For: a\r\nUpgrade: h2c\r\nHost: h\r\nForwarded: f\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nConnection: a\r\nconnection: b ,, c\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nTE: trailers\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nConnection: \xe9, a\r\nA: 1\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nProxy-Authenticate: x\r\nDate: d\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nClose: 1\r\nProxy-Authorization: p\r\nContent-Length: 0\r\n\r\n",
        ];
        for text in heads {
            let head = super::super::h1::take_response_head(&mut bytes::BytesMut::from(text), &hyper::Method::GET)
                .unwrap()
                .unwrap();
            let mut raw: Vec<(String, Vec<u8>)> = end_to_end(&head.fields)
                .map(|(name, value)| (String::from_utf8_lossy(name).to_ascii_lowercase(), value.to_vec()))
                .collect();
            let mut map = head.fields.to_map();
            remove_hop_by_hop(&mut map);
            let mut mapped: Vec<(String, Vec<u8>)> = map
                .iter()
                .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
                .collect();
            raw.sort();
            mapped.sort();
            assert_eq!(raw, mapped, "{}", String::from_utf8_lossy(text));
            assert!(raw.iter().all(|(name, _)| !super::HOP_BY_HOP.contains(&name.as_str())));
        }
    }

    /// What `is_hop_by_hop` must match.
    const HOP_BY_HOP: [HeaderName; 8] = [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
    ];

    fn request(uri: &str, hosts: &[&str]) -> Request<()> {
        let mut builder = Request::builder().uri(uri);
        for h in hosts {
            builder = builder.header(header::HOST, *h);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn host_comes_from_one_valid_header_or_the_authority() {
        assert_eq!(
            request_host(&request("/", &["Flow.Example.com:8443"])).unwrap(),
            "flow.example.com"
        );
        assert!(
            matches!(
                request_host(&request("/", &["flow.example.com:8443"])),
                Ok(Cow::Borrowed("flow.example.com"))
            ),
            "a name already lower-case is borrowed, not copied"
        );
        assert_eq!(request_host(&request("http://a.example/", &[])).unwrap(), "a.example");
        assert_eq!(request_host(&request("/", &["[::1]:80"])).unwrap(), "::1");
        assert_eq!(
            request_host(&request("http://evil.example/", &["flow.example.com"])),
            Err(BadRequest::HostMismatch)
        );
        assert_eq!(request_host(&request("/", &[])), Err(BadRequest::NoHost));
        assert_eq!(
            request_host(&request("/", &["flow.example.com", "evil.example"])),
            Err(BadRequest::SeveralHosts)
        );
        for bad in [
            "a b",
            "user@flow.example.com",
            "flow.example.com:80:80",
            "flow/x",
            "[::1",
            "h:99999",
            "",
        ] {
            assert_eq!(
                request_host(&request("/", &[bad])),
                Err(BadRequest::InvalidHost),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn http2_authority_and_host_must_agree() {
        let mut req = request("https://flow.example.com/", &["evil.example"]);
        *req.version_mut() = Version::HTTP_2;
        assert_eq!(request_host(&req), Err(BadRequest::HostMismatch));
        let mut req = request("https://flow.example.com:443/", &["flow.example.com"]);
        *req.version_mut() = Version::HTTP_2;
        assert_eq!(request_host(&req), Err(BadRequest::HostMismatch), "the port differs");
        let mut req = request("https://flow.example.com/", &["FLOW.example.com"]);
        *req.version_mut() = Version::HTTP_2;
        assert_eq!(request_host(&req).unwrap(), "flow.example.com");
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        let build = |version: Version, headers: &[(&str, &str)]| {
            let mut builder = Request::builder().uri("/").version(version);
            for (n, v) in headers {
                builder = builder.header(*n, *v);
            }
            builder.body(()).unwrap()
        };
        let ok = |h: &[(&str, &str)]| check_framing(&build(Version::HTTP_11, h));
        assert!(ok(&[("content-length", "5")]).is_ok());
        assert!(ok(&[("content-length", "5"), ("content-length", "5")]).is_ok());
        assert!(ok(&[("transfer-encoding", "Chunked")]).is_ok());
        assert_eq!(
            ok(&[("content-length", "5"), ("content-length", "6")]),
            Err(BadRequest::AmbiguousLength)
        );
        assert_eq!(
            ok(&[("content-length", "5"), ("transfer-encoding", "chunked")]),
            Err(BadRequest::AmbiguousLength)
        );
        for bad in ["gzip", "chunked, chunked", "gzip, chunked", ""] {
            assert_eq!(
                ok(&[("transfer-encoding", bad)]),
                Err(BadRequest::BadTransferEncoding),
                "{bad}"
            );
        }
        assert_eq!(
            ok(&[("transfer-encoding", "chunked"), ("transfer-encoding", "chunked")]),
            Err(BadRequest::BadTransferEncoding)
        );
        assert_eq!(
            check_framing(&build(Version::HTTP_10, &[("transfer-encoding", "chunked")])),
            Err(BadRequest::BadTransferEncoding)
        );
    }

    #[test]
    fn upgrades_with_a_body_are_refused() {
        let mut headers = HeaderMap::new();
        assert!(check_upgrade_framing(&headers).is_ok());
        headers.insert(header::CONTENT_LENGTH, "0".parse().unwrap());
        assert!(check_upgrade_framing(&headers).is_ok());
        headers.insert(header::CONTENT_LENGTH, "23".parse().unwrap());
        assert_eq!(check_upgrade_framing(&headers), Err(BadRequest::UpgradeWithBody));
        headers.remove(header::CONTENT_LENGTH);
        headers.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        assert_eq!(check_upgrade_framing(&headers), Err(BadRequest::UpgradeWithBody));
    }

    fn untrusted() -> ConnInfo {
        ConnInfo::new(
            "127.0.0.7:5000".parse().unwrap(),
            super::super::conn::Scheme::Http,
            8080,
        )
    }

    #[test]
    fn forwarded_headers_from_clients_are_replaced() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, "flow.example.com".parse().unwrap());
        headers.insert("x-forwarded-for", "203.0.113.9".parse().unwrap());
        headers.insert("x-forwarded-proto", "gopher".parse().unwrap());
        headers.insert("x-forwarded-host", "evil.example".parse().unwrap());
        headers.insert("x-forwarded-prefix", "/admin".parse().unwrap());
        headers.insert("forwarded", "for=1.2.3.4".parse().unwrap());
        headers.insert("x-real-ip", "1.2.3.4".parse().unwrap());
        headers.insert(header::CONNECTION, "keep-alive, x-secret".parse().unwrap());
        headers.insert("x-secret", "1".parse().unwrap());
        let mut settings = Service::new("flow");
        settings.forwarded_proto = Some("https".into());
        settings.forwarded_port = Some(443);
        prepare_request_headers(&mut headers, &Uri::from_static("/"), &untrusted(), &settings)
            .insert_into(&mut headers);
        assert_eq!(headers["x-forwarded-for"], "127.0.0.7");
        assert_eq!(headers["x-forwarded-proto"], "https");
        assert_eq!(headers["x-forwarded-port"], "443");
        assert_eq!(headers["x-forwarded-host"], "flow.example.com");
        for gone in ["x-forwarded-prefix", "forwarded", "x-real-ip", "x-secret", "connection"] {
            assert!(!headers.contains_key(gone), "{gone} reached the backend");
        }
    }

    #[test]
    fn a_trusted_proxy_s_chain_is_appended_to() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, "flow.example.com".parse().unwrap());
        headers.insert("x-forwarded-for", "203.0.113.9".parse().unwrap());
        headers.insert("x-real-ip", "203.0.113.9".parse().unwrap());
        let mut conn = untrusted();
        conn.trusted = true;
        prepare_request_headers(&mut headers, &Uri::from_static("/"), &conn, &Service::new("flow"))
            .insert_into(&mut headers);
        assert_eq!(headers["x-forwarded-for"], "203.0.113.9, 127.0.0.7");
        assert_eq!(headers["x-real-ip"], "203.0.113.9");
    }

    #[test]
    fn connection_tokens_cannot_remove_what_routes_or_frames() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, "flow.example.com".parse().unwrap());
        headers.insert(header::CONTENT_LENGTH, "5".parse().unwrap());
        headers.insert(
            header::CONNECTION,
            "close, host, content-length, x-forwarded-for, x-other".parse().unwrap(),
        );
        headers.insert("x-other", "1".parse().unwrap());
        prepare_request_headers(
            &mut headers,
            &Uri::from_static("/"),
            &untrusted(),
            &Service::new("flow"),
        )
        .insert_into(&mut headers);
        assert_eq!(headers["host"], "flow.example.com");
        assert_eq!(headers["content-length"], "5");
        assert_eq!(headers["x-forwarded-for"], "127.0.0.7");
        assert!(!headers.contains_key("x-other"));
    }

    #[test]
    fn every_hop_by_hop_header_goes_and_the_rest_stay() {
        let mut headers = HeaderMap::new();
        for name in &HOP_BY_HOP {
            headers.append(name.clone(), "x".parse().unwrap());
        }
        headers.append(header::CONNECTION, "Keep-Alive, X-Named".parse().unwrap());
        headers.append("x-named", "1".parse().unwrap());
        headers.append(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        headers.append(header::SET_COOKIE, "a=1".parse().unwrap());
        headers.append(header::SET_COOKIE, "b=2".parse().unwrap());
        remove_hop_by_hop(&mut headers);
        let left: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.to_str().unwrap())).collect();
        assert_eq!(
            left,
            [
                ("content-type", "text/plain"),
                ("set-cookie", "a=1"),
                ("set-cookie", "b=2")
            ]
        );
        // Nothing to remove: nothing changes.
        let before = headers.clone();
        remove_hop_by_hop(&mut headers);
        assert_eq!(headers, before);
        // A response's usual `Connection: keep-alive` goes.
        headers.insert(header::CONNECTION, "keep-alive".parse().unwrap());
        remove_hop_by_hop(&mut headers);
        assert_eq!(headers, before);
    }

    #[test]
    fn handshakes_carry_no_framing() {
        let mut headers = HeaderMap::new();
        for (n, v) in [("content-length", "0"), ("te", "trailers"), ("expect", "100-continue")] {
            headers.insert(HeaderName::from_static(n), v.parse().unwrap());
        }
        prepare_handshake_headers(&mut headers);
        assert_eq!(headers.len(), 2, "{headers:?}");
        assert_eq!(headers["upgrade"], "websocket");
    }

    #[test]
    fn cookies_are_found_among_others_and_set_safely() {
        let cookies: [&[u8]; 3] = [b"x=1", b"a=1; flowgate=abc; b=2", b"flowgate=\xe9"];
        assert_eq!(cookie_value(cookies.into_iter(), "flowgate").as_deref(), Some("abc"));
        assert_eq!(cookie_value(cookies.into_iter(), "missing"), None);
        assert_eq!(cookie_value(cookies[2..].iter().copied(), "flowgate"), None, "not text");
        let cookie = sticky_cookie("fg", "x", true).unwrap();
        assert_eq!(cookie, "fg=x; Path=/; HttpOnly; SameSite=Lax; Secure");
        assert!(
            !sticky_cookie("fg", "x", false)
                .unwrap()
                .to_str()
                .unwrap()
                .contains("Secure")
        );
    }
}
