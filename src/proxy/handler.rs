//! One request through the proxy: find its route by host and path, pick a
//! backend, rewrite headers, forward, and retry on another backend when that
//! is safe. WebSocket upgrades branch off to `tunnel`.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri, Version};

use super::Proxy;
use super::backend::{Backend, InFlight};
use super::balance::{Pool, sticky_value};
use super::events::ProxyEvent;
use super::upstream::UpstreamError;
use crate::config::proxy::{Route, Service};
use crate::serve::{self, Body};

/// What the handler knows about the client connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub client: SocketAddr,
    /// `http` or `https`: what the client used.
    pub scheme: &'static str,
    /// The port the client connected to.
    pub port: u16,
    /// The client's IP address and the port as header values, made once per
    /// connection rather than per request.
    client_ip: HeaderValue,
    port_value: HeaderValue,
}

impl ConnInfo {
    pub fn new(client: SocketAddr, scheme: &'static str, port: u16) -> ConnInfo {
        ConnInfo {
            client,
            scheme,
            port,
            client_ip: HeaderValue::from_str(&client.ip().to_string()).unwrap_or(HeaderValue::from_static("unknown")),
            port_value: HeaderValue::from(port),
        }
    }
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Requests are tried on at most this many backends.
const MAX_ATTEMPTS: usize = 3;

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

pub async fn handle(proxy: Arc<Proxy>, conn: Arc<ConnInfo>, req: Request<Incoming>) -> Response<Body> {
    if req.method() == Method::CONNECT {
        return serve::text(
            StatusCode::METHOD_NOT_ALLOWED,
            "CONNECT is not supported: flowgate is not a forward proxy",
        );
    }
    let config = proxy.config();
    let limit = config.limits.max_header_bytes;
    if header_bytes(req.headers()) > limit {
        return serve::text(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("the request headers are larger than {limit} bytes"),
        );
    }
    let host = match request_host(&req) {
        Ok(host) => host,
        Err(message) => return serve::text(StatusCode::BAD_REQUEST, message),
    };
    let Some(route) = find_route(&config.routes, &host, req.uri().path()) else {
        return serve::text(StatusCode::NOT_FOUND, format!("no route for host '{host}'"));
    };
    if conn.scheme == "http" {
        if let Some(tls) = &config.tls {
            if let Some(token) = req.uri().path().strip_prefix(ACME_CHALLENGE_PATH) {
                return match proxy.certs.http_challenge(token) {
                    Some(answer) => serve::text(StatusCode::OK, answer),
                    None => serve::text(StatusCode::NOT_FOUND, "no such ACME challenge"),
                };
            }
            if tls.redirect_http {
                return redirect_to_https(&req, &host, tls);
            }
        }
    }
    let Some(pool) = proxy.pool(&route.service) else {
        return serve::text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("service '{}' is not running", route.service),
        );
    };
    let settings = pool.settings();
    let sticky = settings
        .sticky_cookie
        .as_deref()
        .and_then(|name| cookie_value(req.headers(), name));
    if crate::websocket::is_upgrade_request(req.headers()) {
        // Boxed: the upgrade path is rare and its state large; unboxed it
        // would make every request's future that large.
        return Box::pin(super::tunnel::upgrade(proxy, conn, pool, settings, req, sticky)).await;
    }
    forward(
        &proxy,
        &conn,
        &pool,
        &settings,
        config.limits.connect_timeout,
        req,
        sticky.as_deref(),
    )
    .await
}

/// The size of the headers as sent: name, ": ", value and CRLF each.
fn header_bytes(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum()
}

/// Where ACME HTTP-01 validation asks for its token (RFC 8555, 8.3).
pub const ACME_CHALLENGE_PATH: &str = "/.well-known/acme-challenge/";

/// 308 to the same host and path over HTTPS (308 keeps the method and body).
fn redirect_to_https<B>(req: &Request<B>, host: &str, tls: &crate::config::proxy::TlsSettings) -> Response<Body> {
    let port = tls
        .redirect_port
        .or_else(|| tls.listen.first().map(|a| a.port()))
        .unwrap_or(443);
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let authority = if port == 443 { host } else { format!("{host}:{port}") };
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = format!("https://{authority}{path}");
    let mut response = serve::text(StatusCode::PERMANENT_REDIRECT, format!("use {location}"));
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// The request's host, lower-case and without a port. Absolute-form
/// requests naming another host than their Host header are refused, so the
/// proxy never forwards to a host of the client's choosing.
pub fn request_host<B>(req: &Request<B>) -> Result<String, String> {
    let header = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(strip_port);
    let authority = req
        .uri()
        .host()
        .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase());
    match (authority, header) {
        (Some(a), Some(h)) if a != h => Err(format!(
            "request target names host '{a}' but the Host header says '{h}'"
        )),
        (Some(a), _) => Ok(a),
        (None, Some(h)) if !h.is_empty() => Ok(h),
        _ => Err("the request has no Host header".into()),
    }
}

fn strip_port(host: &str) -> String {
    let host = host.trim();
    let without = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        host.rsplit_once(':').map_or(host, |(h, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                h
            } else {
                host
            }
        })
    };
    without.to_ascii_lowercase()
}

/// The first route (in file order) whose host and path prefix match.
pub fn find_route<'a>(routes: &'a [Route], host: &str, path: &str) -> Option<&'a Route> {
    routes
        .iter()
        .find(|r| r.host.matches(host) && path.starts_with(r.path_prefix.as_str()))
}

fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// Rewrites request headers for the backend: hop-by-hop headers go, Host
/// stays, and the X-Forwarded-* set says what the client used.
pub fn prepare_request_headers(headers: &mut HeaderMap, uri: &Uri, conn: &ConnInfo, settings: &Service) {
    remove_hop_by_hop(headers);
    headers.remove(header::UPGRADE);
    if !headers.contains_key(header::HOST) {
        // HTTP/2 carries the host in the :authority pseudo-header.
        if let Some(value) = uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()) {
            headers.insert(header::HOST, value);
        }
    }
    let forwarded_for = match headers.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(previous) if !previous.trim().is_empty() => {
            let client_ip = conn.client_ip.to_str().unwrap_or("unknown");
            HeaderValue::from_str(&format!("{previous}, {client_ip}")).unwrap_or_else(|_| conn.client_ip.clone())
        }
        _ => conn.client_ip.clone(),
    };
    let proto = match settings.forwarded_proto.as_deref() {
        Some(proto) => HeaderValue::from_str(proto).unwrap_or(HeaderValue::from_static("https")),
        None => HeaderValue::from_static(conn.scheme),
    };
    let port = match settings.forwarded_port {
        Some(port) => HeaderValue::from(port),
        None => conn.port_value.clone(),
    };
    let forwarded_host = headers.get(header::HOST).cloned();
    headers.insert(X_FORWARDED_FOR, forwarded_for);
    headers.insert(X_FORWARDED_PROTO, proto);
    headers.insert(X_FORWARDED_PORT, port);
    if let Some(host) = forwarded_host {
        headers.insert(X_FORWARDED_HOST, host);
    }
}

/// Removes the hop-by-hop headers, including those the Connection header names.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    // Most messages carry none of them: look before removing.
    for name in &HOP_BY_HOP {
        if headers.contains_key(name) {
            headers.remove(name);
        }
    }
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
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

async fn forward(
    proxy: &Arc<Proxy>,
    conn: &ConnInfo,
    pool: &Pool,
    settings: &Service,
    connect_timeout: std::time::Duration,
    req: Request<Incoming>,
    sticky: Option<&str>,
) -> Response<Body> {
    let (mut parts, body) = req.into_parts();
    prepare_request_headers(&mut parts.headers, &parts.uri, conn, settings);
    let uri = origin_form(&parts.uri);
    // A request without a body can be sent again as it is; one with a body
    // cannot, because the first attempt consumed it.
    let bodyless = body.is_end_stream();
    let mut body = Some(body);
    let mut tried: Vec<Arc<Backend>> = Vec::new();
    loop {
        let now = proxy.clock.now_ms();
        let Some(backend) = pool.pick(now, sticky, &tried) else {
            return if tried.is_empty() {
                serve::text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("no healthy backend for service '{}'", settings.name),
                )
            } else {
                serve::text(StatusCode::BAD_GATEWAY, "every backend tried failed")
            };
        };
        let outgoing_body = match (bodyless, body.take()) {
            (false, Some(b)) => b.boxed(),
            _ => serve::empty(),
        };
        let mut upstream = Request::new(outgoing_body);
        *upstream.method_mut() = parts.method.clone();
        *upstream.uri_mut() = uri.clone();
        *upstream.version_mut() = Version::HTTP_11;
        *upstream.headers_mut() = parts.headers.clone();

        let in_flight = InFlight::start(&backend);
        let started = Instant::now();
        match super::upstream::send(&backend, upstream, connect_timeout).await {
            Ok((response, lease)) => {
                backend.record_connect_success();
                let answered = Answered {
                    response,
                    lease,
                    in_flight,
                    started,
                };
                return relay(&backend, settings, sticky, answered);
            }
            Err(error) => {
                drop(in_flight);
                let connect = error.is_connect();
                if connect {
                    eject(proxy, &backend, now, &error);
                }
                let retry = bodyless && (connect || is_idempotent(&parts.method));
                tracing::debug!(backend = %backend.id, retry, "upstream request failed: {error:?}");
                tried.push(backend.clone());
                if retry && tried.len() < MAX_ATTEMPTS {
                    backend.counters.retries.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                backend.counters.responses_5xx.fetch_add(1, Ordering::Relaxed);
                return serve::text(
                    StatusCode::BAD_GATEWAY,
                    format!("backend {} failed: {}", backend.id, describe(&error)),
                );
            }
        }
    }
}

/// A backend's answer, with what keeps it counted until its body is sent.
pub(super) struct Answered {
    pub response: Response<Incoming>,
    pub lease: super::upstream::Lease,
    pub in_flight: InFlight,
    pub started: Instant,
}

/// The client's response from a backend's answer: latency and 5xx counted,
/// hop-by-hop headers removed, the sticky cookie set, the backend's
/// in-flight count and connection held until the body is done.
pub(super) fn relay(backend: &Backend, settings: &Service, sticky: Option<&str>, answered: Answered) -> Response<Body> {
    backend.latency.record(answered.started.elapsed());
    if answered.response.status().is_server_error() {
        backend.counters.responses_5xx.fetch_add(1, Ordering::Relaxed);
    }
    let (mut head, incoming) = answered.response.into_parts();
    remove_hop_by_hop(&mut head.headers);
    if let Some(name) = settings.sticky_cookie.as_deref() {
        let value = sticky_value(&backend.id);
        if sticky != Some(value.as_str()) {
            let cookie = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax");
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                head.headers.append(header::SET_COOKIE, v);
            }
        }
    }
    let body = TrackedBody {
        inner: incoming,
        _in_flight: answered.in_flight,
        _lease: answered.lease,
    };
    Response::from_parts(head, body.boxed())
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
        let reason = format!(
            "connect failed ({}), ejected for {}s",
            describe(error),
            backoff.as_secs()
        );
        tracing::warn!(backend = %backend.id, "{reason}");
        proxy.events.send(ProxyEvent::BackendState {
            backend: backend.id.clone(),
            state: "unhealthy",
            reason,
        });
    }
}

fn describe(error: &UpstreamError) -> String {
    error.to_string()
}

/// A response body that keeps its backend's in-flight count until the body
/// has been sent (or dropped), so a drain waits for streaming responses too.
struct TrackedBody {
    inner: Incoming,
    _in_flight: InFlight,
    /// Returns the connection to the pool once the body is done (dropped after `inner`).
    _lease: super::upstream::Lease,
}

impl hyper::body::Body for TrackedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::proxy::HostMatch;

    fn request(uri: &str, host: Option<&str>) -> Request<()> {
        let mut builder = Request::builder().uri(uri);
        if let Some(h) = host {
            builder = builder.header(header::HOST, h);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn host_comes_from_header_or_authority() {
        assert_eq!(
            request_host(&request("/", Some("Flow.Example.com:8443"))).unwrap(),
            "flow.example.com"
        );
        assert_eq!(request_host(&request("http://a.example/", None)).unwrap(), "a.example");
        assert_eq!(request_host(&request("/", Some("[::1]:80"))).unwrap(), "::1");
        assert!(request_host(&request("http://evil.example/", Some("flow.example.com"))).is_err());
        assert!(request_host(&request("/", None)).is_err());
    }

    #[test]
    fn routes_match_in_order() {
        let routes = vec![
            Route {
                host: HostMatch::Exact("mc.example.com".into()),
                path_prefix: "/".into(),
                service: "mc".into(),
            },
            Route {
                host: HostMatch::Any,
                path_prefix: "/api".into(),
                service: "api".into(),
            },
            Route {
                host: HostMatch::Any,
                path_prefix: "/".into(),
                service: "flow".into(),
            },
        ];
        assert_eq!(find_route(&routes, "mc.example.com", "/x").unwrap().service, "mc");
        assert_eq!(
            find_route(&routes, "flow.example.com", "/api/x").unwrap().service,
            "api"
        );
        assert_eq!(find_route(&routes, "flow.example.com", "/").unwrap().service, "flow");
        assert!(find_route(&routes[..1], "other.example.com", "/").is_none());
    }

    #[test]
    fn forwarded_headers_append_and_override() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, "flow.example.com".parse().unwrap());
        headers.insert("x-forwarded-for", "203.0.113.9".parse().unwrap());
        headers.insert("x-forwarded-proto", "gopher".parse().unwrap());
        headers.insert(header::CONNECTION, "keep-alive, x-secret".parse().unwrap());
        headers.insert("x-secret", "1".parse().unwrap());
        let conn = ConnInfo::new("127.0.0.7:5000".parse().unwrap(), "http", 8080);
        let mut settings = Service::new("flow");
        settings.forwarded_proto = Some("https".into());
        settings.forwarded_port = Some(443);
        prepare_request_headers(&mut headers, &Uri::from_static("/"), &conn, &settings);
        assert_eq!(headers["x-forwarded-for"], "203.0.113.9, 127.0.0.7");
        assert_eq!(headers["x-forwarded-proto"], "https");
        assert_eq!(headers["x-forwarded-port"], "443");
        assert_eq!(headers["x-forwarded-host"], "flow.example.com");
        assert!(!headers.contains_key("x-secret"));
        assert!(!headers.contains_key(header::CONNECTION));
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, "a=1; flowgate=abc; b=2".parse().unwrap());
        assert_eq!(cookie_value(&headers, "flowgate").as_deref(), Some("abc"));
        assert_eq!(cookie_value(&headers, "missing"), None);
    }
}
