//! A client of a running proxy's admin API: the deployer registers and
//! drains instances with it, the dashboard and `status` sample it, and
//! `cert status` finds a proxy by the runtime file in its state dir. Every
//! answer is read into the same serde type the admin API writes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;

use super::admin::{BackendView, CertificateView, SessionView};
use super::events::ProxyEvent;
use super::rebalance::RebalanceReport;
use super::run::RuntimeInfo;
use crate::serve::{self, Body};

/// What went wrong talking to the admin API, and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(
        "no running proxy found: {} is missing; start `flowgate proxy` or pass the --state-dir it uses",
        .0.display()
    )]
    NotRunning(PathBuf),
    #[error("{} is damaged ({reason}); restart the proxy to write it again", path.display())]
    Damaged { path: PathBuf, reason: String },
    #[error("the proxy runs without its admin API (admin = \"off\"); enable it to use this command")]
    Off,
    #[error("cannot read the admin token {}: {source}", path.display())]
    Token { path: PathBuf, source: std::io::Error },
    #[error("the proxy's admin API at {addr} does not answer ({reason}); is the proxy running?")]
    Unreachable { addr: SocketAddr, reason: String },
    #[error("the admin API refused the token; was the proxy restarted with another --admin-token-file?")]
    Refused,
    #[error("{method} {path} answered {status}: {message}")]
    Status {
        method: Method,
        path: String,
        status: u16,
        message: String,
    },
    #[error("{path} answered something flowgate cannot read ({reason}); do this flowgate and the proxy's match?")]
    Answer { path: String, reason: String },
}

/// What `renew` started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewal {
    /// A renewal runs now; the new certificate shows in `certificates`.
    Started,
    /// Not due (and not forced): when it will be.
    NotDue { due_at: Option<String> },
}

pub struct AdminClient {
    addr: SocketAddr,
    token: String,
    client: Client<HttpConnector, Body>,
}

impl AdminClient {
    pub fn new(addr: SocketAddr, token: &str) -> AdminClient {
        AdminClient {
            addr,
            token: token.trim().to_string(),
            // The admin server closes connections idle for 10 s: never reuse one that old.
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(std::time::Duration::from_secs(5))
                .build(HttpConnector::new()),
        }
    }

    /// Finds the proxy that runs with `state_dir`.
    pub fn from_state_dir(state_dir: &Path) -> Result<AdminClient, AdminError> {
        let path = state_dir.join("proxy.json");
        let text = std::fs::read_to_string(&path).map_err(|_| AdminError::NotRunning(path.clone()))?;
        let info: RuntimeInfo = serde_json::from_str(&text).map_err(|e| AdminError::Damaged {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let addr = info.admin.ok_or(AdminError::Off)?;
        let token = crate::fsutil::read_secret(&info.admin_token_file).map_err(|source| AdminError::Token {
            path: info.admin_token_file.clone(),
            source,
        })?;
        Ok(AdminClient::new(addr, &token))
    }

    async fn send(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<(u16, Incoming), AdminError> {
        let mut request = Request::new(body.map_or_else(serve::empty, serve::full));
        *request.method_mut() = method;
        *request.uri_mut() =
            format!("http://{}{path}", self.addr)
                .parse()
                .map_err(|e: hyper::http::uri::InvalidUri| AdminError::Answer {
                    path: path.into(),
                    reason: e.to_string(),
                })?;
        let bearer = format!("Bearer {}", self.token)
            .parse()
            .map_err(|_| AdminError::Refused)?;
        request.headers_mut().insert(header::AUTHORIZATION, bearer);
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| AdminError::Unreachable {
                addr: self.addr,
                reason: e.to_string(),
            })?;
        let status = response.status().as_u16();
        if status == 401 {
            return Err(AdminError::Refused);
        }
        Ok((status, response.into_body()))
    }

    /// One exchange, read whole: the status and the body.
    async fn call(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<(u16, Vec<u8>), AdminError> {
        let (status, incoming) = self.send(method, path, body).await?;
        let body = incoming.collect().await.map_err(|e| AdminError::Unreachable {
            addr: self.addr,
            reason: e.to_string(),
        })?;
        Ok((status, body.to_bytes().to_vec()))
    }

    /// GETs `path` and reads its JSON answer as `T`; any status but 200 is an error.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, AdminError> {
        match self.call(Method::GET, path, None).await? {
            (200, body) => decode(path, &body),
            (status, body) => Err(status_error(Method::GET, path, status, &body)),
        }
    }

    pub async fn backends(&self) -> Result<Vec<BackendView>, AdminError> {
        self.get("/api/v1/backends").await
    }

    /// The WebSocket sessions on one backend.
    pub async fn sessions(&self, backend: &str) -> Result<Vec<SessionView>, AdminError> {
        self.get(&format!("/api/v1/sessions?backend={backend}")).await
    }

    pub async fn certificates(&self) -> Result<Vec<CertificateView>, AdminError> {
        self.get("/api/v1/certificates").await
    }

    /// The local CA's certificate (PEM), when the proxy has one.
    pub async fn local_ca(&self) -> Result<Option<String>, AdminError> {
        const PATH: &str = "/api/v1/certificates/ca";
        match self.call(Method::GET, PATH, None).await? {
            (200, body) => Ok(Some(String::from_utf8_lossy(&body).into_owned())),
            (404, _) => Ok(None),
            (status, body) => Err(status_error(Method::GET, PATH, status, &body)),
        }
    }

    /// Adds a backend; one with this id already there is fine (false).
    pub async fn add_backend(&self, id: &str, address: &str, service: &str) -> Result<bool, AdminError> {
        const PATH: &str = "/api/v1/backends";
        let body = serde_json::json!({"address": address, "id": id, "service": service});
        match self
            .call(Method::POST, PATH, Some(body.to_string().into_bytes()))
            .await?
        {
            (201, _) => Ok(true),
            (409, _) => Ok(false),
            (status, body) => Err(status_error(Method::POST, PATH, status, &body)),
        }
    }

    /// Starts draining a backend for `drain_secs`; false when there is no such backend.
    pub async fn drain(&self, id: &str, drain_secs: u64) -> Result<bool, AdminError> {
        let path = format!("/api/v1/backends/{id}?drain={drain_secs}");
        match self.call(Method::DELETE, &path, None).await? {
            (202, _) => Ok(true),
            (404, _) => Ok(false),
            (status, body) => Err(status_error(Method::DELETE, &path, status, &body)),
        }
    }

    /// Starts spreading `service`'s WebSocket sessions again (or joins the
    /// rebalance that runs), and returns how it stands.
    pub async fn rebalance(&self, service: &str) -> Result<RebalanceReport, AdminError> {
        let path = format!("/api/v1/rebalance?service={service}");
        match self.call(Method::POST, &path, None).await? {
            (202, body) => decode(&path, &body),
            (status, body) => Err(status_error(Method::POST, &path, status, &body)),
        }
    }

    pub async fn rebalance_report(&self, service: &str) -> Result<RebalanceReport, AdminError> {
        self.get(&format!("/api/v1/rebalance?service={service}")).await
    }

    /// Asks for an ACME renewal now (`force`: even when not due).
    pub async fn renew(&self, force: bool) -> Result<Renewal, AdminError> {
        #[derive(serde::Deserialize)]
        struct Answer {
            due_at: Option<String>,
        }
        let path = if force {
            "/api/v1/certificates/renew?force=1"
        } else {
            "/api/v1/certificates/renew"
        };
        match self.call(Method::POST, path, None).await? {
            (202, _) => Ok(Renewal::Started),
            (200, body) => Ok(Renewal::NotDue {
                due_at: decode::<Answer>(path, &body)?.due_at,
            }),
            (status, body) => Err(status_error(Method::POST, path, status, &body)),
        }
    }

    /// Follows the event stream at `path` (`/api/v1/events?...`), handing
    /// each event to `on_event` until the stream ends or `on_event` returns
    /// false. Events this flowgate does not know are skipped.
    pub async fn follow_events(
        &self,
        path: &str,
        mut on_event: impl FnMut(ProxyEvent) -> bool,
    ) -> Result<(), AdminError> {
        let (status, mut body) = self.send(Method::GET, path, None).await?;
        if status != 200 {
            return Err(status_error(Method::GET, path, status, b""));
        }
        let mut buffer = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| AdminError::Unreachable {
                addr: self.addr,
                reason: e.to_string(),
            })?;
            let Ok(data) = frame.into_data() else { continue };
            buffer.extend_from_slice(&data);
            while let Some(end) = buffer.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = buffer.drain(..end + 2).collect();
                if let Some(event) = parse_sse(&String::from_utf8_lossy(&block)) {
                    if !on_event(event) {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }
}

fn decode<T: DeserializeOwned>(path: &str, body: &[u8]) -> Result<T, AdminError> {
    serde_json::from_slice(body).map_err(|e| AdminError::Answer {
        path: path.into(),
        reason: e.to_string(),
    })
}

/// The admin API's `{"error": ...}` answer, or the body as text.
fn status_error(method: Method, path: &str, status: u16, body: &[u8]) -> AdminError {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        error: String,
    }
    let message = serde_json::from_slice::<ErrorBody>(body)
        .map(|e| e.error)
        .unwrap_or_else(|_| String::from_utf8_lossy(body).into_owned());
    AdminError::Status {
        method,
        path: path.into(),
        status,
        message,
    }
}

/// One Server-Sent Events block's event. Comments (keep-alives) and
/// events this flowgate cannot read give None.
fn parse_sse(block: &str) -> Option<ProxyEvent> {
    let data: String = block
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(str::trim_start)
        .collect();
    serde_json::from_str(&data).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_sent_events_blocks_are_typed_events() {
        let block = "event: backend_removed\ndata: {\"type\":\"backend_removed\",\"backend\":\"a\"}\n\n";
        assert_eq!(
            parse_sse(block),
            Some(ProxyEvent::BackendRemoved { backend: "a".into() })
        );
        assert_eq!(parse_sse(": keep-alive\n\n"), None);
        // What the proxy writes reads back as the same event.
        let event = ProxyEvent::Lagged { missed: 3 };
        let written = format!(
            "event: {}\ndata: {}\n\n",
            event.name(),
            serde_json::to_string(&event).unwrap()
        );
        assert_eq!(parse_sse(&written), Some(event));
    }

    #[test]
    fn error_answers_keep_the_proxys_words() {
        let e = status_error(Method::POST, "/x", 400, br#"{"error":"bad address"}"#);
        assert_eq!(e.to_string(), "POST /x answered 400: bad address");
    }
}
