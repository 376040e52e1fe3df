//! The client side of flowgate: how the load generator, the doctor and the
//! dashboard's live checks reach a deployment from outside, as a browser
//! would. `target` resolves a URL (with curl-style `--resolve`) and the TLS
//! trust into a connection; `http` sends one HTTP/1.1 request; `open_websocket`
//! opens a session. The proxy's own upstream connections live in `proxy`.

pub mod http;
pub mod target;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

pub use http::{Reply, request};
pub use target::{Stream, Target, Trust, connect, source_address};

use crate::websocket::peer::{self, Peer};

/// What went wrong reaching a server, in words an operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("'{url}' is not a URL with a host")]
    Url { url: String },
    #[error("'{url}' must start with http://, https://, ws:// or wss://")]
    Scheme { url: String },
    #[error("cannot resolve {name}: {source}; use --resolve {name}:{port}:ADDR")]
    Resolve {
        name: String,
        port: u16,
        source: std::io::Error,
    },
    #[error("{name} has no address; use --resolve {name}:PORT:ADDR")]
    NoAddress { name: String },
    #[error("--resolve '{entry}': {reason}")]
    ResolveEntry { entry: String, reason: String },
    #[error("'{name}' is not a valid TLS server name")]
    ServerName { name: String },
    #[error("--ca {}: {reason}", path.display())]
    Ca { path: PathBuf, reason: String },
    #[error("no system CA certificates found; pass --ca FILE (or --insecure for a test server)")]
    NoSystemRoots,
    #[error("TLS: {0}")]
    Tls(rustls::Error),
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: SocketAddr, source: std::io::Error },
    #[error("{0}")]
    Http(#[from] hyper::Error),
    #[error("cannot build the request: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("{0}")]
    Handshake(std::io::Error),
    #[error("no answer within {} s", .0.as_secs())]
    Timeout(std::time::Duration),
}

/// Connects to `target` (from `source` when given) and performs the
/// WebSocket opening handshake for `path`, with `extra` headers.
pub async fn open_websocket(
    target: &Target,
    source: Option<IpAddr>,
    path: &str,
    extra: &[(&str, &str)],
) -> Result<Peer<Stream>, NetError> {
    let stream = connect(target, source).await.map_err(|source| NetError::Connect {
        addr: target.addr,
        source,
    })?;
    peer::connect(stream, &target.host_header, path, extra)
        .await
        .map_err(NetError::Handshake)
}

/// One GET of an `http://` URL within 5 s: its status (a health check).
pub async fn probe(url: &str) -> Result<u16, NetError> {
    let target = Target::parse(url, None, &[], &Trust::System)?;
    let path = url
        .parse::<hyper::Uri>()
        .ok()
        .and_then(|u| u.path_and_query().map(|p| p.as_str().to_string()))
        .unwrap_or_else(|| "/".into());
    let reply = request(
        &target,
        hyper::Method::GET,
        &path,
        &[],
        std::time::Duration::from_secs(5),
    )
    .await?;
    Ok(reply.status)
}

/// Copies stdin to a new connection to `address` and what comes back to
/// stdout, until the server ends its side (stdin's end only half-closes).
pub async fn pipe_stdio(address: SocketAddr) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let stream = tokio::net::TcpStream::connect(address).await?;
    let (mut from, mut to) = stream.into_split();
    tokio::spawn(async move {
        if tokio::io::copy(&mut tokio::io::stdin(), &mut to).await.is_ok() {
            let _ = to.shutdown().await;
        }
    });
    let mut stdout = tokio::io::stdout();
    tokio::io::copy(&mut from, &mut stdout).await?;
    stdout.flush().await
}
