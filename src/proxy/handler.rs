//! One request through the proxy: refuse what must not be routed, find the
//! route by host and path, answer ACME challenges and HTTPS redirects, then
//! hand the request to `forward` or, for a WebSocket upgrade, to `tunnel`.
//! hyper's requests come through `handle`; the plain HTTP/1.1 path's
//! bodiless ones through `handle_bodyless`, with the same checks.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use super::Proxy;
use super::balance::Pool;
use super::conn::{ConnInfo, Scheme};
use super::forward::ClientBody;
use super::h1::{Outgoing, RequestHead};
use super::headers::{
    ClientHead, cookie_value, forwarded_for_sent, origin_form, prepare_request_headers, request_host,
};
use super::plain::Bodiless;
use super::upstream::Reply;
use crate::config::proxy::{ProxyConfig, Route, Service};
use crate::serve::{self, Body};

pub async fn handle(proxy: Arc<Proxy>, conn: Arc<ConnInfo>, req: Request<Incoming>) -> Response<Body> {
    let routed = match route(&proxy, &conn, &req) {
        Ok(routed) => routed,
        Err(answer) => return *answer,
    };
    if crate::websocket::is_upgrade_request(req.headers()) {
        // Boxed: the upgrade path is rare and its state large; unboxed it
        // would make every request's future that large.
        let Routed {
            pool, settings, sticky, ..
        } = routed;
        return Box::pin(super::tunnel::upgrade(proxy, conn, pool, settings, req, sticky)).await;
    }
    proxied(&proxy, &conn, &routed, req).await.into_response()
}

/// A request from the proxy's own HTTP/2 server (`h2`): the same checks
/// and routing as `handle`, never an upgrade (HTTP/2 has no Upgrade field,
/// and the server refuses one). The answer stays a `Reply`, so a backend's
/// fields go to the client without a map in between.
pub async fn handle_h2<B: ClientBody>(proxy: Arc<Proxy>, conn: Arc<ConnInfo>, req: Request<B>) -> Reply {
    let routed = match route(&proxy, &conn, &req) {
        Ok(routed) => routed,
        Err(answer) => return Reply::Made(*answer),
    };
    proxied(&proxy, &conn, &routed, req).await
}

async fn proxied<B: ClientBody>(proxy: &Arc<Proxy>, conn: &ConnInfo, routed: &Routed, req: Request<B>) -> Reply {
    let (mut parts, body) = req.into_parts();
    let forwarded = prepare_request_headers(&mut parts.headers, &parts.uri, conn, &routed.settings);
    let uri = origin_form(&parts.uri);
    let head = RequestHead {
        method: &parts.method,
        uri: &uri,
        fields: Outgoing::Map(&parts.headers),
        forwarded: Some(&forwarded),
    };
    super::forward::forward(proxy, conn, routed, &head, Some(body)).await
}

/// A request without a body, read by the plain HTTP/1.1 path (`plain`):
/// the same checks and routing as `handle`, never an upgrade; its fields
/// go on as the client sent them, less those that stop at the proxy. A
/// backend's answer comes back with its fields as the backend wrote them.
pub async fn handle_bodyless(proxy: Arc<Proxy>, conn: Arc<ConnInfo>, req: &Bodiless) -> Reply {
    let routed = match route(&proxy, &conn, req) {
        Ok(routed) => routed,
        Err(answer) => return Reply::Made(*answer),
    };
    let forwarded = forwarded_for_sent(&req.fields, &conn, &routed.settings);
    let head = RequestHead {
        method: &req.method,
        uri: &req.uri,
        fields: Outgoing::Sent {
            fields: &req.fields,
            trusted: conn.trusted,
        },
        forwarded: Some(&forwarded),
    };
    super::forward::forward(&proxy, &conn, &routed, &head, None::<Incoming>).await
}

/// Where a request goes once it passed the checks.
pub struct Routed {
    pub config: Arc<ProxyConfig>,
    pub pool: Arc<Pool>,
    pub settings: Arc<Service>,
    /// The sticky cookie's value the client sent, if any.
    pub sticky: Option<String>,
}

/// Refuses what must not be routed, answers what the proxy answers itself
/// (ACME challenges, HTTPS redirects, no route, no backend), and otherwise
/// says where the request goes. The answer is boxed: it is the rare case,
/// and the Ok side stays small.
fn route(proxy: &Proxy, conn: &ConnInfo, req: &impl ClientHead) -> Result<Routed, Box<Response<Body>>> {
    if req.method() == Method::CONNECT {
        return Err(Box::new(serve::text(
            StatusCode::METHOD_NOT_ALLOWED,
            "CONNECT is not supported: flowgate is not a forward proxy",
        )));
    }
    let config = proxy.config();
    let limit = config.limits.max_header_bytes;
    if req.fields_len() > limit {
        return Err(Box::new(serve::text(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("the request headers are larger than {limit} bytes"),
        )));
    }
    req.check_framing().map_err(|e| Box::new(e.response()))?;
    let host = request_host(req).map_err(|e| Box::new(e.response()))?;
    let Some(route) = find_route(&config.routes, &host, req.uri().path()) else {
        return Err(Box::new(serve::text(
            StatusCode::NOT_FOUND,
            "no site is configured for this host name",
        )));
    };
    if conn.scheme == Scheme::Http {
        if let Some(tls) = &config.tls {
            if let Some(token) = req.uri().path().strip_prefix(ACME_CHALLENGE_PATH) {
                return Err(Box::new(match proxy.certs.http_challenge(token) {
                    Some(answer) => serve::text(StatusCode::OK, answer),
                    None => serve::text(StatusCode::NOT_FOUND, "no such ACME challenge"),
                }));
            }
            if tls.redirect_http {
                return Err(Box::new(redirect_to_https(req, &host, tls)));
            }
        }
    }
    let Some(pool) = proxy.pool(&route.service) else {
        return Err(Box::new(super::upstream::no_backend()));
    };
    let settings = pool.settings();
    let sticky = settings
        .sticky_cookie
        .as_deref()
        .and_then(|name| cookie_value(req.values(&header::COOKIE), name));
    Ok(Routed {
        config,
        pool,
        settings,
        sticky,
    })
}

/// Where ACME HTTP-01 validation asks for its token (RFC 8555, 8.3).
pub const ACME_CHALLENGE_PATH: &str = "/.well-known/acme-challenge/";

/// 308 to the same host and path over HTTPS (308 keeps the method and body).
fn redirect_to_https(req: &impl ClientHead, host: &str, tls: &crate::config::proxy::TlsSettings) -> Response<Body> {
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

/// The first route (in file order) whose host and path prefix match.
pub fn find_route<'a>(routes: &'a [Route], host: &str, path: &str) -> Option<&'a Route> {
    routes
        .iter()
        .find(|r| r.host.matches(host) && path.starts_with(r.path_prefix.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::proxy::HostMatch;

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
}
