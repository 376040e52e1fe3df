//! A plain request through the proxy: pick a backend, send the request with
//! the client's body under the body timeouts, and retry on another backend
//! when that is safe (nothing was sent, or an idempotent request without a
//! body failed before any answer).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::StatusCode;
use hyper::body::{Frame, SizeHint};
use tokio::time::Sleep;

use super::Proxy;
use super::backend::{Backend, InFlight};
use super::conn::{ConnInfo, Scheme};
use super::h1::RequestHead;
use super::handler::Routed;
use super::upstream::{self, Answered, BodyTimeout, MAX_ATTEMPTS, Reply, Timeouts, is_idempotent};
use crate::config::proxy::Limits;
use crate::serve::{self, BoxError};

/// Sends `head` (the request as it goes to a backend: its fields already
/// rid of what stops at the proxy) and `body` to a backend of the route.
pub async fn forward<B: ClientBody>(
    proxy: &Arc<Proxy>,
    conn: &ConnInfo,
    routed: &Routed,
    head: &RequestHead<'_>,
    mut body: Option<B>,
) -> Reply {
    let Routed {
        config,
        pool,
        settings,
        sticky,
    } = routed;
    let (limits, sticky) = (&config.limits, sticky.as_deref());
    // A request without a body can be sent again as it is; one with a body
    // cannot, because the first attempt consumed it.
    let bodyless = body.as_ref().is_none_or(B::is_end_stream);
    let timeouts = Timeouts {
        connect: limits.connect_timeout,
        response: limits.upstream_timeout,
        body: limits.upstream_body_timeout,
    };
    let mut tried: Vec<Arc<Backend>> = Vec::new();
    loop {
        // The one clock read before the answer: picking, the pool, the
        // deadline and the latency all take their time from it.
        let started = Instant::now();
        let now = proxy.clock.ms_at(started);
        let Some(backend) = pool.pick(now, sticky, &tried) else {
            return Reply::Made(if tried.is_empty() {
                upstream::no_backend()
            } else {
                serve::text(StatusCode::BAD_GATEWAY, "no healthy Flow instance answered")
            });
        };
        let outgoing_body = match (bodyless, body.take()) {
            (false, Some(b)) => Some(TimedBody::new(b, limits).boxed()),
            _ => None,
        };

        let in_flight = InFlight::start(&backend);
        // An answer that may be asked for again is not waited for on an
        // instance found down meanwhile: it would never come (a lost node).
        // Pinned where it is made: the future is large, and neither the
        // select nor the await below then copies it.
        let mut attempt = std::pin::pin!(upstream::send_parts(&backend, head, outgoing_body, timeouts, started));
        let result = if bodyless && is_idempotent(head.method) {
            // Subscribed before the attempt is first polled: nothing is missed.
            let mut went_down = backend.went_down.subscribe();
            tokio::select! {
                result = &mut attempt => result,
                _ = went_down.changed() => Err(upstream::UpstreamError::WentDown),
            }
        } else {
            attempt.await
        };
        match result {
            Ok(answer) => {
                backend.record_connect_success();
                let answered = Answered {
                    answer,
                    in_flight,
                    started,
                };
                return upstream::relay(&backend, settings, sticky, conn.scheme == Scheme::Https, answered);
            }
            Err(error) => {
                drop(in_flight);
                let connect = error.is_connect();
                if connect {
                    upstream::eject(proxy, &backend, now, &error);
                }
                let retry = bodyless && (connect || is_idempotent(head.method));
                tried.push(backend.clone());
                if error.is_body_timeout() {
                    tracing::debug!(client = %conn.client, "request body timed out");
                    return error.client_response().into();
                }
                tracing::warn!(backend = %backend.id, retry, "upstream request failed: {error}");
                if retry && tried.len() < MAX_ATTEMPTS && !matches!(error, upstream::UpstreamError::Timeout(_)) {
                    backend.counters.retries.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                backend.counters.responses_5xx.fetch_add(1, Ordering::Relaxed);
                return error.client_response().into();
            }
        }
    }
}

/// A client's request body: hyper's (`Incoming`) or the proxy's own
/// HTTP/2 server's.
pub trait ClientBody: hyper::body::Body<Data = Bytes, Error: Into<BoxError>> + Send + Sync + Unpin + 'static {}

impl<B: hyper::body::Body<Data = Bytes, Error: Into<BoxError>> + Send + Sync + Unpin + 'static> ClientBody for B {}

/// The client's request body on its way to a backend, under two limits: no
/// byte for `body_read_timeout` ends it, and so does an average slower than
/// `body_min_rate` once the first `body_read_timeout` has passed (each
/// `body_min_rate` bytes buy one more second), so a trickle cannot hold a
/// connection and a backend slot for ever.
pub struct TimedBody<B> {
    inner: B,
    idle: Duration,
    min_rate: u64,
    started: tokio::time::Instant,
    received: u64,
    timer: Pin<Box<Sleep>>,
}

impl<B> TimedBody<B> {
    pub fn new(inner: B, limits: &Limits) -> Self {
        let started = tokio::time::Instant::now();
        TimedBody {
            inner,
            idle: limits.body_read_timeout,
            min_rate: limits.body_min_rate,
            started,
            received: 0,
            timer: Box::pin(tokio::time::sleep_until(started + limits.body_read_timeout)),
        }
    }

    fn deadline(&self, now: tokio::time::Instant) -> tokio::time::Instant {
        let idle = now
            .checked_add(self.idle)
            .unwrap_or(now + Duration::from_secs(86_400 * 365));
        if self.min_rate == 0 {
            return idle;
        }
        let earned = Duration::from_secs(self.received / self.min_rate);
        let by_rate = self.started.checked_add(self.idle.saturating_add(earned));
        by_rate.map_or(idle, |rate| idle.min(rate))
    }
}

impl<B: ClientBody> hyper::body::Body for TimedBody<B> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.received += data.len() as u64;
                    let deadline = self.deadline(tokio::time::Instant::now());
                    self.timer.as_mut().reset(deadline);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match self.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(BodyTimeout.into()))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
