//! `flowgate sim flow`: a Flow server as the load balancer sees it. Health on
//! `/api/actuator/health` (switchable), `/api/sim/whoami` echoing the request
//! headers, a WebSocket echo on any path that counts heartbeats, and a small
//! page at `/`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde_json::json;

use super::SimError;
use crate::serve::{self, Body};
use crate::websocket::frame::Opcode;
use crate::websocket::peer::{Peer, Role};

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    ws_active: AtomicU64,
    ws_total: AtomicU64,
    heartbeats: AtomicU64,
    messages: AtomicU64,
}

#[derive(Debug)]
struct FlowSim {
    name: String,
    healthy: AtomicBool,
    counters: Counters,
}

#[derive(Serialize)]
struct Stats {
    instance: String,
    healthy: bool,
    requests: u64,
    ws_active: u64,
    ws_total: u64,
    heartbeats: u64,
    messages: u64,
}

/// Serves as the Flow instance `name` on `listen` until SIGTERM or SIGINT.
pub async fn run(listen: SocketAddr, name: String) -> Result<(), SimError> {
    let listener = serve::bind(listen).await?;
    let addr = listener.local_addr().map_err(SimError::Io)?;
    println!("flowgate sim flow '{name}' listening on http://{addr}");
    let sim = Arc::new(FlowSim {
        name,
        healthy: AtomicBool::new(true),
        counters: Counters::default(),
    });
    serve::run_until_stopped(listener, crate::sim::SERVER_LIMITS, move |req, peer| {
        handle(sim.clone(), req, peer)
    })
    .await
    .map_err(SimError::Io)
}

async fn handle(sim: Arc<FlowSim>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    sim.counters.requests.fetch_add(1, Ordering::Relaxed);
    if crate::websocket::is_upgrade_request(req.headers()) {
        return accept_websocket(sim, req);
    }
    let path = req.uri().path().to_string();
    match (req.method().clone(), path.as_str()) {
        (Method::GET | Method::HEAD, "/api/actuator/health") => {
            if sim.healthy.load(Ordering::Relaxed) {
                serve::json(StatusCode::OK, &json!({"status": "UP"}))
            } else {
                serve::json(StatusCode::SERVICE_UNAVAILABLE, &json!({"status": "DOWN"}))
            }
        }
        (Method::POST, "/sim/health/down") => {
            sim.healthy.store(false, Ordering::Relaxed);
            serve::json(StatusCode::OK, &json!({"status": "DOWN"}))
        }
        (Method::POST, "/sim/health/up") => {
            sim.healthy.store(true, Ordering::Relaxed);
            serve::json(StatusCode::OK, &json!({"status": "UP"}))
        }
        (Method::GET, "/api/sim/whoami") => {
            let mut headers: BTreeMap<String, String> = BTreeMap::new();
            for (name, value) in req.headers() {
                let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                headers
                    .entry(name.as_str().to_string())
                    .and_modify(|v| {
                        v.push_str(", ");
                        v.push_str(&value);
                    })
                    .or_insert(value);
            }
            serve::json(
                StatusCode::OK,
                &json!({"instance": sim.name, "peer": peer.to_string(), "headers": headers}),
            )
        }
        (Method::GET, "/api/sim/stats") => serve::json(StatusCode::OK, &stats(&sim)),
        (Method::GET, "/api/sim/delay") => {
            let ms = serve::query_param(req.uri().query(), "ms")
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(100)
                .min(60_000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            serve::json(StatusCode::OK, &json!({"instance": sim.name, "delayed_ms": ms}))
        }
        (Method::POST | Method::PUT, "/api/sim/echo") => match serve::read_body(req.into_body(), 64 << 20).await {
            Ok(body) => serve::json(StatusCode::OK, &json!({"instance": sim.name, "bytes": body.len()})),
            Err(e) => serve::text(StatusCode::BAD_REQUEST, e),
        },
        (Method::GET, "/") => {
            let mut response = serve::text(StatusCode::OK, page(&sim.name));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            response
        }
        _ => serve::text(
            StatusCode::NOT_FOUND,
            format!("flow simulator '{}' has no {path}", sim.name),
        ),
    }
}

fn stats(sim: &FlowSim) -> Stats {
    let c = &sim.counters;
    Stats {
        instance: sim.name.clone(),
        healthy: sim.healthy.load(Ordering::Relaxed),
        requests: c.requests.load(Ordering::Relaxed),
        ws_active: c.ws_active.load(Ordering::Relaxed),
        ws_total: c.ws_total.load(Ordering::Relaxed),
        heartbeats: c.heartbeats.load(Ordering::Relaxed),
        messages: c.messages.load(Ordering::Relaxed),
    }
}

fn page(name: &str) -> String {
    format!(
        "<!doctype html>\n<html><head><title>Flow simulator {name}</title></head>\n<body><h1>Flow simulator</h1>\
         <p>Instance <b>{name}</b>. Health at <code>/api/actuator/health</code>, request headers at \
         <code>/api/sim/whoami</code>, WebSocket echo on any path.</p></body></html>"
    )
}

fn accept_websocket(sim: Arc<FlowSim>, mut req: Request<Incoming>) -> Response<Body> {
    let key = req.headers().get("sec-websocket-key").map(|k| k.as_bytes().to_vec());
    let version_ok = req
        .headers()
        .get("sec-websocket-version")
        .is_some_and(|v| v.as_bytes() == b"13");
    let Some(key) = key.filter(|_| version_ok) else {
        return serve::text(
            StatusCode::BAD_REQUEST,
            "WebSocket handshake needs Sec-WebSocket-Key and version 13",
        );
    };
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let c = &sim.counters;
        c.ws_active.fetch_add(1, Ordering::Relaxed);
        c.ws_total.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = echo(&sim, Peer::new(TokioIo::new(upgraded), Role::Server, &[])).await {
            tracing::debug!("session ended: {e}");
        }
        c.ws_active.fetch_sub(1, Ordering::Relaxed);
    });
    let mut response = Response::new(serve::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&crate::websocket::accept_key(&key)) {
        headers.insert("sec-websocket-accept", accept);
    }
    response
}

async fn echo<S>(sim: &FlowSim, mut peer: Peer<S>) -> std::io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let c = &sim.counters;
    while let Some(frame) = peer.read().await? {
        match frame.opcode {
            Opcode::Ping => {
                c.heartbeats.fetch_add(1, Ordering::Relaxed);
                peer.send(Opcode::Pong, true, &frame.payload).await?;
            }
            Opcode::Pong => {
                c.heartbeats.fetch_add(1, Ordering::Relaxed);
            }
            Opcode::Close => {
                let code = frame.close_code().unwrap_or(1000);
                peer.send_close(code, "").await?;
                // The server closes the TCP connection first (RFC 6455, 7.1.1).
                peer.shutdown().await?;
                return Ok(());
            }
            Opcode::Text | Opcode::Binary | Opcode::Continuation => {
                c.messages.fetch_add(1, Ordering::Relaxed);
                if frame.opcode == Opcode::Text && frame.payload.windows(9).any(|w| w == b"heartbeat") {
                    c.heartbeats.fetch_add(1, Ordering::Relaxed);
                }
                peer.send(frame.opcode, frame.fin, &frame.payload).await?;
            }
            Opcode::Reserved(_) => return Ok(()),
        }
    }
    Ok(())
}
