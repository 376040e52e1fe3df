//! Active health checks: one task per backend asks its health path at an
//! interval and moves it between healthy and unhealthy after `rise`
//! successes or `fall` failures in a row. A new backend is asked every
//! 200 ms until it first answers, and that first answer counts at once, so
//! a new instance serves as soon as it is up.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hyper::{Request, header};

use super::Proxy;
use super::backend::{Backend, BackendState};
use super::events::ProxyEvent;
use crate::config::proxy::{HealthCheck, Rebalance};
use crate::serve;

/// How often a backend that never answered is asked.
const STARTING_INTERVAL: Duration = Duration::from_millis(200);

pub fn spawn(proxy: Arc<Proxy>, backend: Arc<Backend>) {
    tokio::spawn(async move {
        let mut successes = 0u32;
        let mut failures = 0u32;
        let mut first = true;
        loop {
            if backend.removed.load(Ordering::Acquire) || *proxy.shutting_down.borrow() {
                return;
            }
            let Some(pool) = proxy.pool(&backend.service) else {
                return;
            };
            let Some(check) = pool.settings().health.clone() else {
                // Checks switched off (possibly by a reload): trust the backend.
                if backend.set_health(true) {
                    announce(&proxy, &backend, "health checks disabled".into());
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            };
            let result = probe(&proxy, &backend, &check).await;
            match &result {
                Ok(()) => {
                    successes += 1;
                    failures = 0;
                }
                Err(_) => {
                    failures += 1;
                    successes = 0;
                }
            }
            let change = match &result {
                Ok(()) if first || successes >= check.rise => backend.set_health(true),
                Err(_) if first || failures >= check.fall => backend.set_health(false),
                _ => false,
            };
            // A draining backend keeps its state, but one that stops
            // answering (its node lost before its name vanished) must not
            // hold the requests still waiting on it.
            if result.is_err() && failures == check.fall && backend.state() == BackendState::Draining {
                backend.release_waiting();
            }
            if change {
                let reason = match &result {
                    Ok(()) => format!("{} answered", check.path),
                    Err(e) => e.clone(),
                };
                announce(&proxy, &backend, reason);
                // A new healthy instance: spread the sessions onto it, when asked to.
                if result.is_ok() && pool.settings().rebalance == Rebalance::Auto {
                    proxy.rebalance(&backend.service);
                }
            }
            // Until a backend has answered once (a container still starting),
            // ask often: it serves as soon as it is up, not an interval later.
            if first && result.is_err() {
                tokio::time::sleep(STARTING_INTERVAL.min(check.interval)).await;
                continue;
            }
            first = false;
            tokio::time::sleep(check.interval).await;
        }
    });
}

fn announce(proxy: &Proxy, backend: &Backend, reason: String) {
    let state = backend.state();
    if state == BackendState::Unhealthy {
        tracing::warn!(backend = %backend.id, "backend unhealthy: {reason}");
    } else {
        tracing::info!(backend = %backend.id, "backend {}: {reason}", state.as_str());
    }
    proxy.events.send(ProxyEvent::BackendState {
        backend: backend.id.clone(),
        state,
        reason,
    });
}

async fn probe(proxy: &Proxy, backend: &Arc<Backend>, check: &HealthCheck) -> Result<(), String> {
    let uri: hyper::Uri = check.path.parse().map_err(|e| format!("bad health path: {e}"))?;
    let mut request = Request::new(serve::empty_request());
    *request.uri_mut() = uri;
    let headers = request.headers_mut();
    headers.insert(header::USER_AGENT, header::HeaderValue::from_static("flowgate-health"));
    if let Ok(host) = header::HeaderValue::from_str(&backend.address) {
        headers.insert(header::HOST, host);
    }
    let timeouts = super::upstream::Timeouts {
        connect: proxy.config().limits.connect_timeout,
        response: check.timeout,
        body: check.timeout,
    };
    let exchange = async {
        let answer = super::upstream::send(backend, request, timeouts).await?;
        // Reading the (small) body lets the connection be used again.
        let _ = http_body_util::BodyExt::collect(answer.body).await;
        Ok::<_, super::upstream::UpstreamError>(answer.status)
    };
    match tokio::time::timeout(check.timeout, exchange).await {
        Err(_) => Err(format!("{} did not answer within {:?}", check.path, check.timeout)),
        Ok(Err(e)) => Err(format!("{} failed: {e}", check.path)),
        Ok(Ok(status)) if status.is_success() => Ok(()),
        Ok(Ok(status)) => Err(format!("{} answered {status}", check.path)),
    }
}
