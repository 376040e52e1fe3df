//! A client of a running proxy's admin API, found through the runtime file
//! it writes to its state dir. Commands such as `cert status` use it; so will
//! the deployer and the dashboard.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context as _, bail};
use http_body_util::BodyExt;
use hyper::{Method, Request, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::run::RuntimeInfo;
use crate::serve::{self, Body};

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
    pub fn from_state_dir(state_dir: &Path) -> anyhow::Result<AdminClient> {
        let info_path = state_dir.join("proxy.json");
        let text = std::fs::read_to_string(&info_path).with_context(|| {
            format!(
                "no running proxy found: {} is missing; start `flowgate proxy` or pass the --state-dir it uses",
                info_path.display()
            )
        })?;
        let info: RuntimeInfo =
            serde_json::from_str(&text).with_context(|| format!("{} is damaged", info_path.display()))?;
        let Some(addr) = info.admin else {
            bail!("the proxy runs without its admin API (admin = \"off\"); enable it to use this command");
        };
        let token = std::fs::read_to_string(&info.admin_token_file)
            .with_context(|| format!("cannot read the admin token {}", info.admin_token_file.display()))?;
        Ok(AdminClient::new(addr, &token))
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        let mut request = Request::new(match body {
            Some(json) => serve::full(serde_json::to_vec(json)?),
            None => serve::empty(),
        });
        *request.method_mut() = method;
        *request.uri_mut() = format!("http://{}{path}", self.addr).parse()?;
        request
            .headers_mut()
            .insert(header::AUTHORIZATION, format!("Bearer {}", self.token).parse()?);
        let response = self.client.request(request).await.with_context(|| {
            format!(
                "the proxy's admin API at {} does not answer; is the proxy running?",
                self.addr
            )
        })?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        let value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        if status == 401 {
            bail!("the admin API refused the token; the proxy was restarted with another --admin-token-file?");
        }
        Ok((status, value))
    }

    /// GETs a text answer (such as a PEM file); returns the status and text.
    pub async fn get_text(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let mut request = Request::new(serve::empty());
        *request.uri_mut() = format!("http://{}{path}", self.addr).parse()?;
        request
            .headers_mut()
            .insert(header::AUTHORIZATION, format!("Bearer {}", self.token).parse()?);
        let response = self.client.request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        match self.call(Method::GET, path, None).await? {
            (200, value) => Ok(value),
            (status, value) => bail!("GET {path} answered {status}: {}", error_text(&value)),
        }
    }

    /// POSTs without a body; returns the status and the JSON answer.
    pub async fn post(&self, path: &str) -> anyhow::Result<(u16, serde_json::Value)> {
        self.call(Method::POST, path, None).await
    }

    /// POSTs a JSON body; returns the status and the JSON answer.
    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> anyhow::Result<(u16, serde_json::Value)> {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> anyhow::Result<(u16, serde_json::Value)> {
        self.call(Method::DELETE, path, None).await
    }

    /// Follows the Server-Sent Events at `path`, handing each event's name
    /// and JSON data to `on_event` until the stream ends or `on_event`
    /// returns false.
    pub async fn follow_events(
        &self,
        path: &str,
        mut on_event: impl FnMut(&str, serde_json::Value) -> bool,
    ) -> anyhow::Result<()> {
        let mut request = Request::new(serve::empty());
        *request.uri_mut() = format!("http://{}{path}", self.addr).parse()?;
        request
            .headers_mut()
            .insert(header::AUTHORIZATION, format!("Bearer {}", self.token).parse()?);
        let response = self.client.request(request).await?;
        if response.status() != 200 {
            bail!("GET {path} answered {}", response.status());
        }
        let mut body = response.into_body();
        let mut buffer = Vec::new();
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame?.into_data() else { continue };
            buffer.extend_from_slice(&data);
            while let Some(end) = buffer.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = buffer.drain(..end + 2).collect();
                if let Some((name, data)) = parse_sse(&String::from_utf8_lossy(&block)) {
                    if !on_event(&name, data) {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }
}

/// One Server-Sent Events block: its `event:` name and `data:` as JSON.
/// Comments (keep-alives) give None.
fn parse_sse(block: &str) -> Option<(String, serde_json::Value)> {
    let mut name = None;
    let mut data = String::new();
    for line in block.lines() {
        if let Some(v) = line.strip_prefix("event:") {
            name = Some(v.trim().to_string());
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push_str(v.trim_start());
        }
    }
    Some((name?, serde_json::from_str(&data).unwrap_or(serde_json::Value::Null)))
}

/// The `error` field of an admin API answer, or the whole answer.
pub fn error_text(value: &serde_json::Value) -> String {
    value["error"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| value.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn server_sent_events_blocks() {
        let (name, data) = super::parse_sse("event: backend_state\ndata: {\"backend\":\"a\"}\n\n").unwrap();
        assert_eq!(name, "backend_state");
        assert_eq!(data["backend"], "a");
        assert!(super::parse_sse(": keep-alive\n\n").is_none());
    }
}
