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
    let exchange = async {
        let stream = connect(&target, None).await?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let request = hyper::Request::builder()
            .method(hyper::Method::OPTIONS)
            .uri("/")
            .header(hyper::header::HOST, &target.host_header)
            .header(hyper::header::ORIGIN, flow_origin)
            .header(hyper::header::ACCESS_CONTROL_REQUEST_METHOD, "GET")
            .body(Empty::<Bytes>::new())?;
        let response = sender.send_request(request).await?;
        anyhow::Ok(Preflight {
            status: response.status().as_u16(),
            allow_origin: response
                .headers()
                .get(hyper::header::ACCESS_CONTROL_ALLOW_ORIGIN)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        })
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| anyhow::anyhow!("no answer from {mc_url} within 5 s"))?
}
