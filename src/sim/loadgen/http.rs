//! The HTTP load: GETs at a fixed rate over a few keep-alive connections
//! (plain or TLS, to the `--resolve`d address), each request timed from the
//! moment it was due, so a slow server shows as latency, not as a lower rate.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, header};
use hyper_util::rt::TokioIo;
use tokio::sync::{Mutex, mpsc};

use super::Stats;
use crate::net::{self as target, Target};
use crate::serve::{self, Body};

/// Connections (and so requests in flight) at most.
const WORKERS: usize = 32;
/// Requests waiting for a worker at most; more are counted as not sent.
const QUEUE: usize = 4096;

pub async fn run(target: Target, path: String, rps: f64, deadline: tokio::time::Instant, stats: Arc<Stats>) {
    let (jobs, queue) = mpsc::channel::<Instant>(QUEUE);
    let queue = Arc::new(Mutex::new(queue));
    let target = Arc::new(target);
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| tokio::spawn(worker(target.clone(), path.clone(), queue.clone(), stats.clone())))
        .collect();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rps));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::time::sleep_until(deadline) => break,
        }
        if jobs.try_send(Instant::now()).is_err() {
            stats.requests_failed.fetch_add(1, Ordering::Relaxed);
            stats.count_status("not sent: server too slow");
        }
    }
    drop(jobs);
    for worker in workers {
        let _ = worker.await;
    }
}

/// Takes due requests off the queue and sends them over its own connection,
/// reconnecting after any failure.
async fn worker(target: Arc<Target>, path: String, queue: Arc<Mutex<mpsc::Receiver<Instant>>>, stats: Arc<Stats>) {
    let mut connection: Option<SendRequest<Body>> = None;
    loop {
        let Some(due) = queue.lock().await.recv().await else {
            return;
        };
        let result = tokio::time::timeout(Duration::from_secs(10), send(&target, &path, &mut connection)).await;
        let key = match result {
            Ok(Ok(status)) => {
                Stats::sample(&stats.http_latency_us, due.elapsed());
                if status.is_success() || status.is_redirection() {
                    stats.requests_ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    stats.requests_failed.fetch_add(1, Ordering::Relaxed);
                }
                status.as_u16().to_string()
            }
            Ok(Err(e)) => {
                connection = None;
                stats.requests_failed.fetch_add(1, Ordering::Relaxed);
                stats.error(format!("http: {e}"));
                "error".to_string()
            }
            Err(_) => {
                connection = None;
                stats.requests_failed.fetch_add(1, Ordering::Relaxed);
                "timeout".to_string()
            }
        };
        stats.count_status(&key);
    }
}

async fn send(
    target: &Target,
    path: &str,
    connection: &mut Option<SendRequest<Body>>,
) -> Result<hyper::StatusCode, Box<dyn std::error::Error + Send + Sync>> {
    if connection.as_ref().is_none_or(|c| c.is_closed()) {
        let stream = target::connect(target, None).await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        *connection = Some(sender);
    }
    let Some(sender) = connection.as_mut() else {
        return Err("no connection".into());
    };
    sender.ready().await?;
    let mut request = Request::new(serve::empty());
    *request.uri_mut() = path.parse()?;
    request
        .headers_mut()
        .insert(header::HOST, header::HeaderValue::from_str(&target.host_header)?);
    let response = sender.send_request(request).await?;
    let status = response.status();
    response.into_body().collect().await?;
    Ok(status)
}
