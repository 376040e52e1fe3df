//! Live checks through the proxy's published port: Management Center's CORS
//! preflight from the Flow origin.

use std::path::Path;
use std::time::Duration;

use crate::net::{NetError, Target, Trust, request};

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
) -> Result<Preflight, NetError> {
    let uri: hyper::Uri = mc_url.parse().map_err(|_| NetError::Url { url: mc_url.into() })?;
    let host = uri.host().ok_or_else(|| NetError::Url { url: mc_url.into() })?;
    let port = uri.port_u16().unwrap_or(443);
    let trust = ca.map_or(Trust::System, |p| Trust::File(p.to_path_buf()));
    let target = Target::parse(mc_url, None, &[format!("{host}:{port}:{connect_to}")], &trust)?;
    preflight(&target, flow_origin).await
}

/// A CORS preflight (`OPTIONS /` from `origin`, for a GET) to `target`.
pub async fn preflight(target: &Target, origin: &str) -> Result<Preflight, NetError> {
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
