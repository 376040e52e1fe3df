//! The admin API: backends, sessions, live events, reload and metrics, on a
//! loopback listener behind a bearer token.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};

use super::Proxy;
use super::backend::{Backend, BackendState};
use super::events::ProxyEvent;
use crate::serve::{self, Body};

#[derive(Debug, Serialize, Deserialize, Clone, PartialEq)]
pub struct BackendView {
    pub id: String,
    pub address: String,
    pub service: String,
    pub state: BackendState,
    pub ejected: bool,
    pub dynamic: bool,
    pub active_requests: u64,
    pub requests_total: u64,
    pub responses_5xx: u64,
    pub connect_failures: u64,
    pub retries: u64,
    pub ws_active: u64,
    pub ws_total: u64,
    pub ws_frames_in: u64,
    pub ws_frames_out: u64,
    pub ws_bytes_in: u64,
    pub ws_bytes_out: u64,
    pub pings: u64,
    pub pongs: u64,
    pub heartbeats_total: u64,
    pub last_heartbeat_ms_ago: Option<u64>,
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
}

impl BackendView {
    pub fn of(backend: &Backend, now_ms: u64) -> Self {
        let c = &backend.counters;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let ejected = backend.is_ejected(now_ms);
        let state = match backend.state() {
            BackendState::Healthy if ejected => BackendState::Unhealthy,
            other => other,
        };
        let last = load(&c.last_heartbeat_ms);
        let ms = |d: Option<Duration>| d.map(|d| (d.as_secs_f64() * 1e6).round() / 1e3);
        BackendView {
            id: backend.id.clone(),
            address: backend.address.clone(),
            service: backend.service.clone(),
            state,
            ejected,
            dynamic: backend.dynamic,
            active_requests: load(&c.active_requests),
            requests_total: load(&c.requests_total),
            responses_5xx: load(&c.responses_5xx),
            connect_failures: load(&c.connect_failures),
            retries: load(&c.retries),
            ws_active: load(&c.ws_active),
            ws_total: load(&c.ws_total),
            ws_frames_in: load(&c.ws_frames_in),
            ws_frames_out: load(&c.ws_frames_out),
            ws_bytes_in: load(&c.ws_bytes_in),
            ws_bytes_out: load(&c.ws_bytes_out),
            pings: load(&c.ws_pings),
            pongs: load(&c.ws_pongs),
            heartbeats_total: load(&c.heartbeats_total),
            last_heartbeat_ms_ago: (last != 0).then(|| now_ms.saturating_sub(last)),
            latency_p50_ms: ms(backend.latency.quantile(0.5)),
            latency_p99_ms: ms(backend.latency.quantile(0.99)),
        }
    }
}

/// One WebSocket session, as `/api/v1/sessions` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionView {
    pub id: u64,
    pub backend: String,
    pub client: String,
    pub age_ms: u64,
    pub frames_in: u64,
    pub frames_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub heartbeats: u64,
    pub last_heartbeat_ms_ago: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddBackend {
    address: String,
    id: Option<String>,
    service: Option<String>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

fn error(status: StatusCode, message: &str) -> Response<Body> {
    serve::json(status, &ErrorBody { error: message })
}

/// Compares in constant time, so the token cannot be guessed byte by byte.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The admin API is for flowgate and the operator's scripts: a few
/// connections at once, and a head within 10 s (which also closes a
/// connection left idle that long; `AdminClient` drops its idle ones sooner).
pub const SERVER_LIMITS: serve::ServerLimits = serve::ServerLimits {
    max_connections: 64,
    header_read_timeout: Duration::from_secs(10),
};

/// `Authorization: Bearer <token>`; the scheme is case-insensitive (RFC 9110, 11.1).
fn authorized(token: &str, req: &Request<Incoming>) -> bool {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim_start().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .is_some_and(|(_, given)| same(given.trim().as_bytes(), token.as_bytes()))
}

pub async fn handle(proxy: Arc<Proxy>, req: Request<Incoming>) -> Response<Body> {
    if !authorized(&proxy.token, &req) {
        let mut response = error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token: send 'Authorization: Bearer <token>' with the token from the admin-token file",
        );
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let now = proxy.clock.now_ms();
    match (req.method().clone(), path.as_str()) {
        (Method::GET, "/api/v1/backends") => {
            let views: Vec<BackendView> = proxy.all_backends().iter().map(|b| BackendView::of(b, now)).collect();
            serve::json(StatusCode::OK, &views)
        }
        (Method::POST, "/api/v1/backends") => add_backend(&proxy, req).await,
        (Method::DELETE, p) if p.starts_with("/api/v1/backends/") => {
            let id = percent_decode(&p["/api/v1/backends/".len()..]);
            let window = match serve::query_param(query.as_deref(), "drain") {
                None => Duration::ZERO,
                Some(text) => match parse_seconds(text) {
                    Ok(d) => d,
                    Err(e) => return error(StatusCode::BAD_REQUEST, &e),
                },
            };
            match proxy.remove_backend(&id, window) {
                Ok(backend) => serve::json(StatusCode::ACCEPTED, &BackendView::of(&backend, now)),
                Err(e) => error(StatusCode::NOT_FOUND, &e.to_string()),
            }
        }
        (Method::GET, "/api/v1/sessions") => {
            let only = serve::query_param(query.as_deref(), "backend").map(percent_decode);
            let mut sessions = Vec::new();
            for backend in proxy.all_backends() {
                if only.as_deref().is_some_and(|id| id != backend.id) {
                    continue;
                }
                let map = backend.sessions.lock().unwrap_or_else(|e| e.into_inner());
                for s in map.values() {
                    let last = s.last_heartbeat_ms.load(Ordering::Relaxed);
                    sessions.push(SessionView {
                        id: s.id,
                        backend: backend.id.clone(),
                        client: s.client.to_string(),
                        age_ms: s.started.elapsed().as_millis() as u64,
                        frames_in: s.frames_in.load(Ordering::Relaxed),
                        frames_out: s.frames_out.load(Ordering::Relaxed),
                        bytes_in: s.bytes_in.load(Ordering::Relaxed),
                        bytes_out: s.bytes_out.load(Ordering::Relaxed),
                        heartbeats: s.heartbeats.load(Ordering::Relaxed),
                        last_heartbeat_ms_ago: (last != 0).then(|| now.saturating_sub(last)),
                    });
                }
            }
            sessions.sort_by_key(|s| s.id);
            serve::json(StatusCode::OK, &sessions)
        }
        // `?service=flow` (the default): start spreading its sessions again, or see how it goes.
        (Method::POST, "/api/v1/rebalance") => {
            let service = serve::query_param(query.as_deref(), "service").map_or("flow".into(), percent_decode);
            match proxy.rebalance(&service) {
                Some(report) => serve::json(StatusCode::ACCEPTED, &report),
                None => error(StatusCode::NOT_FOUND, &format!("no service '{service}'")),
            }
        }
        (Method::GET, "/api/v1/rebalance") => {
            let service = serve::query_param(query.as_deref(), "service").map_or("flow".into(), percent_decode);
            if proxy.pool(&service).is_none() {
                return error(StatusCode::NOT_FOUND, &format!("no service '{service}'"));
            }
            serve::json(StatusCode::OK, &proxy.rebalance_report(&service))
        }
        (Method::GET, "/api/v1/events") => {
            // `?skip=heartbeat,websocket_opened` leaves out busy event types.
            let skip: Vec<String> = serve::query_param(query.as_deref(), "skip")
                .map(|list| list.split(',').map(str::to_string).collect())
                .unwrap_or_default();
            events(&proxy, skip)
        }
        (Method::GET, "/api/v1/certificates") => serve::json(StatusCode::OK, &certificates(&proxy)),
        (Method::GET, "/api/v1/certificates/ca") => {
            // The local CA clients must trust in self-signed mode.
            match std::fs::read_to_string(crate::tls::local_ca::LocalCa::ca_path(&proxy.state_dir())) {
                Ok(pem) => serve::text(StatusCode::OK, pem),
                Err(_) => error(
                    StatusCode::NOT_FOUND,
                    "this proxy has no local CA (its TLS mode is not self-signed)",
                ),
            }
        }
        (Method::POST, "/api/v1/certificates/renew") => match proxy.acme.get() {
            Some(issuer) => {
                let force = matches!(serve::query_param(query.as_deref(), "force"), Some("" | "1" | "true"));
                let (due, renew_at) = issuer.due();
                if force || due {
                    issuer.renew_now(force);
                }
                renew_answer(force || due, renew_at)
            }
            None => error(
                StatusCode::CONFLICT,
                "only ACME certificates are renewed on request; this proxy has none",
            ),
        },
        (Method::POST, "/api/v1/reload") => match proxy.reload() {
            Ok(summary) => serve::json(StatusCode::OK, &summary),
            Err(e) => error(StatusCode::BAD_REQUEST, &e.to_string()),
        },
        (Method::GET, "/metrics") => {
            let mut response = serve::text(StatusCode::OK, super::metrics::render(&proxy));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        (
            _,
            "/api/v1/backends"
            | "/api/v1/sessions"
            | "/api/v1/events"
            | "/api/v1/certificates"
            | "/api/v1/rebalance"
            | "/metrics",
        ) => error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this path"),
        _ => error(
            StatusCode::NOT_FOUND,
            "no such admin endpoint; see the admin API in README.md",
        ),
    }
}

async fn add_backend(proxy: &Arc<Proxy>, req: Request<Incoming>) -> Response<Body> {
    let body = match serve::read_body(req.into_body(), 64 * 1024).await {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let add: AddBackend = match serde_json::from_slice(&body) {
        Ok(a) => a,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("expected {{\"address\": \"host:port\"}} (optional \"id\", \"service\"): {e}"),
            );
        }
    };
    match proxy.add_backend(
        add.service.as_deref(),
        add.id.as_deref(),
        &add.address,
        super::Origin::Api,
    ) {
        Ok(backend) => serve::json(StatusCode::CREATED, &BackendView::of(&backend, proxy.clock.now_ms())),
        Err(e @ super::ProxyError::DuplicateBackend(_)) => error(StatusCode::CONFLICT, &e.to_string()),
        Err(e) => error(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}

fn renew_answer(renewing: bool, renew_at: Option<i64>) -> Response<Body> {
    let status = if renewing { StatusCode::ACCEPTED } else { StatusCode::OK };
    serve::json(
        status,
        &serde_json::json!({"renewing": renewing, "due_at": renew_at.map(crate::tls::rfc3339)}),
    )
}

/// One certificate, as `/api/v1/certificates` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CertificateView {
    #[serde(flatten)]
    pub info: crate::tls::CertInfo,
    pub days_left: i64,
    pub next_renewal: Option<String>,
    pub last_error: Option<String>,
}

fn certificates(proxy: &Proxy) -> Vec<CertificateView> {
    let now = crate::clock::now_unix();
    proxy
        .certs
        .certificates()
        .iter()
        .map(|c| {
            let status = proxy.certs.status(c.info.source);
            CertificateView {
                info: c.info.clone(),
                days_left: (c.info.not_after_unix - now).div_euclid(86_400),
                next_renewal: status.next_renewal,
                last_error: status.last_error,
            }
        })
        .collect()
}

/// The longest drain window the API accepts.
const MAX_DRAIN: Duration = Duration::from_secs(3600);

/// `5`, `0.5` (seconds) or a duration such as `500ms`, from 0 to an hour.
fn parse_seconds(text: &str) -> Result<Duration, String> {
    let range = "drain must be from 0 to 3600 seconds (for example drain=30 or drain=90s)";
    let parsed = match text.parse::<f64>() {
        Ok(secs) if secs.is_finite() && (0.0..=MAX_DRAIN.as_secs_f64()).contains(&secs) => {
            Duration::from_secs_f64(secs)
        }
        Ok(_) => return Err(format!("{range}; got '{text}'")),
        Err(_) => crate::config::duration::parse(text).map_err(|e| format!("{range}: {e}"))?,
    };
    if parsed > MAX_DRAIN {
        return Err(format!("{range}; got '{text}'"));
    }
    Ok(parsed)
}

fn percent_decode(text: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(high), Some(low)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(high << 4 | low);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The live event stream as Server-Sent Events.
fn events(proxy: &Proxy, skip: Vec<String>) -> Response<Body> {
    let mut receiver = proxy.events.subscribe();
    let (sender, rx) = mpsc::channel::<Bytes>(256);
    tokio::spawn(async move {
        if sender.send(Bytes::from_static(b": flowgate events\n\n")).await.is_err() {
            return;
        }
        let mut keepalive = tokio::time::interval(Duration::from_secs(15));
        loop {
            let message = tokio::select! {
                event = receiver.recv() => match event {
                    Ok(event) if skip.iter().any(|s| s == event.name()) => continue,
                    Ok(event) => format_event(&event),
                    Err(broadcast::error::RecvError::Lagged(missed)) => format_event(&ProxyEvent::Lagged { missed }),
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = keepalive.tick() => ": keep-alive\n\n".to_string(),
            };
            if sender.send(Bytes::from(message)).await.is_err() {
                return;
            }
        }
    });
    let mut response = Response::new(EventBody { rx }.boxed());
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn format_event(event: &ProxyEvent) -> String {
    let data = serde_json::to_string(event).unwrap_or_else(|_| "{}".into());
    format!("event: {}\ndata: {data}\n\n", event.name())
}

struct EventBody {
    rx: mpsc::Receiver<Bytes>,
}

impl hyper::body::Body for EventBody {
    type Data = Bytes;
    type Error = crate::serve::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, crate::serve::BoxError>>> {
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_percent_escapes() {
        assert_eq!(percent_decode("flow-1%3A9021"), "flow-1:9021");
        assert_eq!(percent_decode("plain"), "plain");
        assert_eq!(percent_decode("bad%zz"), "bad%zz");
        assert_eq!(percent_decode("end%3"), "end%3");
    }

    #[test]
    fn drain_accepts_seconds_and_durations() {
        assert_eq!(parse_seconds("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_seconds("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_seconds("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_seconds("-1").is_err());
        for out_of_range in ["1e300", "3601", "NaN", "inf", "2h", "99999999999999999999d"] {
            let err = parse_seconds(out_of_range).unwrap_err();
            assert!(err.contains("0 to 3600"), "{out_of_range}: {err}");
        }
        assert_eq!(parse_seconds("3600"), Ok(MAX_DRAIN));
    }

    #[test]
    fn token_comparison() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"ab"));
    }
}
