//! `flowgate sim mc`: Management Center as Flow's UI sees it. `/health`, and
//! the CORS behaviour of `hazelcast.mc.flow.addresses`: only the listed
//! origins get `Access-Control-Allow-Origin`, on preflights and requests.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;

use super::SimError;
use crate::config::deployment::{FLOW_ADDRESSES_PROPERTY, system_property};
use crate::serve::{self, Body};

/// Serves on `listen` until SIGTERM or SIGINT. The allowed origins are
/// `flow_addresses` (comma-separated), else `-Dhazelcast.mc.flow.addresses`
/// from JAVA_OPTS, as Management Center reads them.
pub async fn run(listen: std::net::SocketAddr, flow_addresses: Option<String>) -> Result<(), SimError> {
    let java_opts = std::env::var("JAVA_OPTS").unwrap_or_default();
    let configured = flow_addresses.or_else(|| system_property(&java_opts, FLOW_ADDRESSES_PROPERTY));
    let origins: Arc<Vec<String>> = Arc::new(configured.as_deref().map(parse_origins).unwrap_or_default());
    if origins.is_empty() {
        tracing::warn!(
            "no Flow origins configured: no CORS preflight will succeed (set -D{FLOW_ADDRESSES_PROPERTY}=https://flow.example.com in JAVA_OPTS)"
        );
    }
    let listener = serve::bind(listen).await?;
    println!(
        "flowgate sim mc listening on http://{} (allowed Flow origins: {})",
        listener.local_addr().map_err(SimError::Io)?,
        if origins.is_empty() {
            "none".to_string()
        } else {
            origins.join(", ")
        }
    );
    serve::run_until_stopped(listener, crate::sim::SERVER_LIMITS, move |req, _| {
        let origins = origins.clone();
        async move { handle(&origins, req) }
    })
    .await
    .map_err(SimError::Io)
}

/// Origins as browsers send them: scheme://host[:port], lower-case, no slash.
pub fn parse_origins(list: &str) -> Vec<String> {
    list.split(',')
        .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
        .filter(|o| !o.is_empty())
        .collect()
}

fn handle(origins: &[String], req: Request<Incoming>) -> Response<Body> {
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .map(|o| o.trim_end_matches('/').to_ascii_lowercase());
    let allowed = origin.as_ref().filter(|o| origins.contains(o));
    let preflight =
        req.method() == Method::OPTIONS && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if preflight {
        if allowed.is_none() {
            // What Spring-based MC answers to a preflight from an unknown origin.
            serve::text(StatusCode::FORBIDDEN, "Invalid CORS request")
        } else {
            let mut r = Response::new(serve::empty());
            *r.status_mut() = StatusCode::NO_CONTENT;
            let h = r.headers_mut();
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, POST, PUT, DELETE, OPTIONS"),
            );
            if let Some(asked) = req.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
                h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
            }
            h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("1800"));
            r
        }
    } else {
        match req.uri().path() {
            "/health" => serve::json(StatusCode::OK, &json!({"status": "UP"})),
            "/api/sim/config" => serve::json(StatusCode::OK, &json!({ "flow_addresses": origins })),
            "/" => serve::text(StatusCode::OK, "Management Center simulator"),
            other => serve::text(StatusCode::NOT_FOUND, format!("MC simulator has no {other}")),
        }
    };
    let h = response.headers_mut();
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    if let Some(Ok(value)) = allowed.map(|o| HeaderValue::from_str(o)) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_property_from_java_opts() {
        let opts = "-Xmx1g -Dhazelcast.mc.flow.addresses=https://flow.example.com,https://b.example.com -Dother=1";
        assert_eq!(
            system_property(opts, FLOW_ADDRESSES_PROPERTY).as_deref(),
            Some("https://flow.example.com,https://b.example.com")
        );
        let quoted = "-Dhazelcast.mc.flow.addresses=\"https://a.example.com, https://b.example.com\"";
        assert_eq!(
            parse_origins(&system_property(quoted, FLOW_ADDRESSES_PROPERTY).unwrap()).len(),
            2
        );
        assert_eq!(system_property("-Xmx1g", FLOW_ADDRESSES_PROPERTY), None);
    }

    #[test]
    fn origins_are_normalised() {
        assert_eq!(
            parse_origins("HTTPS://Flow.Example.com/, ,http://x:8080"),
            vec!["https://flow.example.com", "http://x:8080"]
        );
    }
}
