//! One HTTP/1.1 request on a new connection, read to the end: what the
//! doctor and the dashboard's checks need (they look at one answer, never
//! at throughput; loadgen has its own keep-alive workers).

use std::time::Duration;

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

use super::{NetError, Target, connect};

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
) -> Result<Reply, NetError> {
    let exchange = async {
        let stream = connect(target, None).await.map_err(|source| NetError::Connect {
            addr: target.addr,
            source,
        })?;
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
        Ok(Reply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    };
    tokio::time::timeout(limit, exchange)
        .await
        .map_err(|_| NetError::Timeout(limit))?
}
