//! Live checks through the proxy's published port: Management Center's CORS
//! preflight from the Flow origin.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

use crate::sim::loadgen::target::{Target, Trust, connect};

/// What MC answered to a CORS preflight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preflight {
    pub status: u16,
    /// Its Access-Control-Allow-Origin, if any.
    pub allow_origin: Option<String>,
}

impl Preflight {
    pub fn allows(&self, origin: &str) -> bool {
        self.allow_origin.as_deref() == Some(origin)
    }
}

/// One HTTP/1.1 exchange's answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends one request on a new connection to `target` (TLS when it is
/// https) and reads the whole answer, within `limit`. The Host header is the
/// target's unless `headers` has one.
pub async fn request(
    target: &Target,
    method: hyper::Method,
    path: &str,
    headers: &[(&str, &str)],
    limit: Duration,
) -> anyhow::Result<Reply> {
    let exchange = async {
        let stream = connect(target, None).await?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let mut builder = hyper::Request::builder().method(method).uri(path);
        if !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("host")) {
            builder = builder.header(hyper::header::HOST, &target.host_header);
        }
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let response = sender.send_request(builder.body(Empty::<Bytes>::new())?).await?;
        let (parts, body) = response.into_parts();
        let body = http_body_util::BodyExt::collect(body).await?.to_bytes();
        anyhow::Ok(Reply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    };
    tokio::time::timeout(limit, exchange)
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {} s", limit.as_secs()))?
}

/// Sends `OPTIONS /` to `mc_url` with `Origin: flow_origin`, connecting to
/// `connect_to` (the host's published port) and trusting `ca` (or the
/// system's roots).
pub async fn mc_preflight(
    mc_url: &str,
    flow_origin: &str,
    connect_to: std::net::IpAddr,
    ca: Option<&Path>,
) -> anyhow::Result<Preflight> {
    let uri: hyper::Uri = mc_url.parse().with_context(|| format!("'{mc_url}' is not a URL"))?;
    let host = uri.host().context("the MC URL has no host")?;
    let port = uri.port_u16().unwrap_or(443);
    let trust = ca.map_or(Trust::System, |p| Trust::File(p.to_path_buf()));
    let target = Target::parse(mc_url, None, &[format!("{host}:{port}:{connect_to}")], &trust)?;
    preflight(&target, flow_origin)
        .await
        .with_context(|| format!("{mc_url} did not answer the preflight"))
}

/// A CORS preflight (`OPTIONS /` from `origin`, for a GET) to `target`.
pub async fn preflight(target: &Target, origin: &str) -> anyhow::Result<Preflight> {
    let reply = request(
        target,
        hyper::Method::OPTIONS,
        "/",
        &[("origin", origin), ("access-control-request-method", "GET")],
        Duration::from_secs(5),
    )
    .await?;
    Ok(Preflight {
        status: reply.status,
        allow_origin: reply.header("access-control-allow-origin").map(str::to_string),
    })
}
