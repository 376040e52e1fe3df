//! `/metrics` in the Prometheus text format: per-backend counters, gauges
//! and the request latency histogram.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use super::Proxy;
use super::backend::{Backend, BackendState, Counters};

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

type Field = fn(&Counters) -> &AtomicU64;

const BACKEND_SERIES: [(&str, &str, &str, Field); 12] = [
    (
        "flowgate_backend_requests_total",
        "counter",
        "Requests sent to the backend.",
        |c| &c.requests_total,
    ),
    (
        "flowgate_backend_active_requests",
        "gauge",
        "Requests in flight.",
        |c| &c.active_requests,
    ),
    (
        "flowgate_backend_responses_5xx_total",
        "counter",
        "5xx answers, including the proxy's own 502s.",
        |c| &c.responses_5xx,
    ),
    (
        "flowgate_backend_connect_failures_total",
        "counter",
        "Failed connection attempts.",
        |c| &c.connect_failures,
    ),
    (
        "flowgate_backend_retries_total",
        "counter",
        "Requests retried on another backend.",
        |c| &c.retries,
    ),
    (
        "flowgate_backend_websocket_active",
        "gauge",
        "Open WebSocket sessions.",
        |c| &c.ws_active,
    ),
    (
        "flowgate_backend_websocket_total",
        "counter",
        "WebSocket sessions opened.",
        |c| &c.ws_total,
    ),
    (
        "flowgate_backend_websocket_frames_in_total",
        "counter",
        "Frames from clients.",
        |c| &c.ws_frames_in,
    ),
    (
        "flowgate_backend_websocket_frames_out_total",
        "counter",
        "Frames to clients.",
        |c| &c.ws_frames_out,
    ),
    (
        "flowgate_backend_websocket_bytes_in_total",
        "counter",
        "WebSocket bytes from clients.",
        |c| &c.ws_bytes_in,
    ),
    (
        "flowgate_backend_websocket_bytes_out_total",
        "counter",
        "WebSocket bytes to clients.",
        |c| &c.ws_bytes_out,
    ),
    (
        "flowgate_backend_heartbeats_total",
        "counter",
        "Heartbeats from clients (pings, pongs, heartbeat messages).",
        |c| &c.heartbeats_total,
    ),
];

pub fn render(proxy: &Proxy) -> String {
    let backends = proxy.all_backends();
    let mut out = String::with_capacity(4096);
    let labels = |b: &Backend| format!("backend=\"{}\",service=\"{}\"", escape(&b.id), escape(&b.service));
    for (name, kind, help, field) in BACKEND_SERIES {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for b in &backends {
            let _ = writeln!(
                out,
                "{name}{{{}}} {}",
                labels(b),
                field(&b.counters).load(Ordering::Relaxed)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP flowgate_backend_up 1 when the backend takes new work.\n# TYPE flowgate_backend_up gauge"
    );
    let now = proxy.clock.now_ms();
    for b in &backends {
        let up = (b.state() == BackendState::Healthy && !b.is_ejected(now)) as u8;
        let _ = writeln!(out, "flowgate_backend_up{{{}}} {up}", labels(b));
    }
    let name = "flowgate_backend_request_duration_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Time to the backend's response head.\n# TYPE {name} histogram"
    );
    for b in &backends {
        let l = labels(b);
        for (bound, count) in b.latency.cumulative() {
            let le = bound.map_or("+Inf".to_string(), |v| format!("{v}"));
            let _ = writeln!(out, "{name}_bucket{{{l},le=\"{le}\"}} {count}");
        }
        let _ = writeln!(out, "{name}_sum{{{l}}} {}", b.latency.sum().as_secs_f64());
        let _ = writeln!(out, "{name}_count{{{l}}} {}", b.latency.count());
    }
    let _ = writeln!(
        out,
        "# HELP flowgate_connections_active Client connections open.\n# TYPE flowgate_connections_active gauge\nflowgate_connections_active {}",
        proxy.connections_active.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP flowgate_connections_total Client connections accepted.\n# TYPE flowgate_connections_total counter\nflowgate_connections_total {}",
        proxy.connections_total.load(Ordering::Relaxed)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
