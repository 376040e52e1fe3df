//! End-to-end tests of the proxy core: real processes on loopback, real
//! sockets, the real load generator.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

fn three_instances(fx: &mut Fixture) -> Vec<String> {
    (1..=3).map(|i| fx.sim_flow(&format!("flow-{i}")).to_string()).collect()
}

fn backend_flags(backends: &[String]) -> Vec<String> {
    backends
        .iter()
        .flat_map(|b| ["--backend".to_string(), b.clone()])
        .collect()
}

fn proxy_over(fx: &mut Fixture, backends: &[String], extra: &[&str]) -> Proxy {
    let mut args: Vec<String> = backend_flags(backends);
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let proxy = fx.proxy("proxy", &refs);
    proxy.wait_healthy(backends.len());
    proxy
}

#[test]
fn requests_spread_evenly_over_three_instances() {
    let mut fx = Fixture::new("spread");
    let backends = three_instances(&mut fx);
    let proxy = proxy_over(&mut fx, &backends, &[]);
    let mut seen: HashMap<String, u32> = HashMap::new();
    for _ in 0..300 {
        let r = get(proxy.addr, "/api/sim/whoami", None);
        assert_eq!(r.status, 200);
        *seen
            .entry(r.json()["instance"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    for (instance, count) in &seen {
        assert!((90..=110).contains(count), "{instance} got {count} of 300: {seen:?}");
    }
}

#[test]
fn least_connections_and_sticky_cookie() {
    let mut fx = Fixture::new("sticky");
    let backends = three_instances(&mut fx);
    let proxy = proxy_over(
        &mut fx,
        &backends,
        &["--balance", "least-connections", "--sticky-cookie", "fg"],
    );
    let first = get(proxy.addr, "/api/sim/whoami", None);
    let cookie = first
        .header("set-cookie")
        .expect("a sticky cookie")
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let instance = first.json()["instance"].clone();
    for _ in 0..20 {
        let r = request(proxy.addr, "GET", "/api/sim/whoami", &[("Cookie", &cookie)], b"");
        assert_eq!(r.json()["instance"], instance);
        assert!(
            r.header("set-cookie").is_none(),
            "cookie set again although it was right"
        );
    }
}

#[test]
fn forwarded_headers_reach_the_backend() {
    let mut fx = Fixture::new("forwarded");
    let backend = vec![fx.sim_flow("flow-1").to_string()];
    let proxy = proxy_over(
        &mut fx,
        &backend,
        &["--forwarded-proto", "https", "--forwarded-port", "443"],
    );
    let r = request(
        proxy.addr,
        "GET",
        "/api/sim/whoami",
        &[
            ("Host", "flow.example.com"),
            ("X-Forwarded-For", "203.0.113.7"),
            ("X-Forwarded-Proto", "gopher"),
            ("Connection", "close, X-Hop"),
            ("X-Hop", "secret"),
        ],
        b"",
    );
    let headers = &r.json()["headers"];
    assert_eq!(headers["host"], "flow.example.com", "Host must be preserved");
    assert_eq!(headers["x-forwarded-proto"], "https");
    assert_eq!(headers["x-forwarded-port"], "443");
    assert_eq!(headers["x-forwarded-host"], "flow.example.com");
    assert_eq!(
        headers["x-forwarded-for"], "127.0.0.1",
        "a client's own X-Forwarded-For is replaced unless it is a trusted proxy"
    );
    assert!(
        headers.get("x-hop").is_none(),
        "headers named in Connection are hop-by-hop"
    );
    assert!(headers.get("connection").is_none() || headers["connection"] != "close, X-Hop");

    // Without overrides the proxy reports what the client really used.
    let mut fx2 = Fixture::new("forwarded-plain");
    let backend = vec![fx2.sim_flow("flow-1").to_string()];
    let plain = proxy_over(&mut fx2, &backend, &[]);
    let headers = get(plain.addr, "/api/sim/whoami", Some("flow.example.com")).json()["headers"].clone();
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["x-forwarded-port"], plain.addr.port().to_string());
}

#[test]
fn websocket_counts_equal_what_clients_did_and_return_to_zero() {
    let mut fx = Fixture::new("ws-counts");
    let backends = three_instances(&mut fx);
    let proxy = proxy_over(&mut fx, &backends, &[]);
    let run = Load::to(proxy.addr).sessions(30, "300ms").duration("3s").spawn();
    // While the sessions are open, the admin API sees all of them.
    wait_for(Duration::from_secs(10), || proxy.total("ws_active") == 30);
    let sessions = proxy.admin_get("/api/v1/sessions");
    assert_eq!(sessions.as_array().unwrap().len(), 30);
    let summary = run.join().unwrap();
    assert_eq!(summary["ws_opened"], 30);
    assert_eq!(summary["ws_dropped"], 0);
    let sent = summary["heartbeats_sent"].as_u64().unwrap();
    assert!(sent >= 30 * 5, "only {sent} heartbeats sent");
    assert_eq!(summary["heartbeats_acknowledged"].as_u64().unwrap(), sent);
    wait_for(Duration::from_secs(5), || proxy.total("ws_active") == 0);
    assert_eq!(proxy.total("ws_total"), 30);
    assert_eq!(
        proxy.total("heartbeats_total"),
        sent,
        "proxy heartbeat count differs from the clients'"
    );
    let backends = proxy.backends();
    assert!(
        backends.iter().all(|b| b["ws_total"].as_u64().unwrap() >= 5),
        "sessions not spread: {backends:?}"
    );
    assert!(backends.iter().all(|b| b["last_heartbeat_ms_ago"].is_u64()));
    // The simulators saw the same heartbeats the proxy counted.
    let at_sims: u64 = fx_sim_stats(&proxy_backends(&proxy))
        .iter()
        .map(|s| s["heartbeats"].as_u64().unwrap())
        .sum();
    assert_eq!(at_sims, sent);
}

fn proxy_backends(proxy: &Proxy) -> Vec<String> {
    proxy
        .backends()
        .iter()
        .map(|b| b["address"].as_str().unwrap().to_string())
        .collect()
}

fn fx_sim_stats(addresses: &[String]) -> Vec<serde_json::Value> {
    addresses
        .iter()
        .map(|a| get(a.parse().unwrap(), "/api/sim/stats", None).json())
        .collect()
}

#[test]
fn text_heartbeats_match_the_configured_pattern() {
    let mut fx = Fixture::new("ws-text-heartbeat");
    let backend = vec![fx.sim_flow("flow-1").to_string()];
    let proxy = proxy_over(&mut fx, &backend, &["--heartbeat-pattern", "\"type\":\"hb\""]);
    let summary = Load::to(proxy.addr)
        .sessions(5, "200ms")
        .duration("2s")
        .text_heartbeats("{\"type\":\"hb\"}")
        .run();
    let sent = summary["heartbeats_sent"].as_u64().unwrap();
    assert!(sent >= 20);
    assert_eq!(summary["heartbeats_acknowledged"].as_u64().unwrap(), sent);
    wait_for(Duration::from_secs(5), || proxy.total("ws_active") == 0);
    assert_eq!(proxy.total("heartbeats_total"), sent);
}

#[test]
fn killed_backend_costs_no_failed_gets_and_its_sessions_get_1001() {
    let mut fx = Fixture::new("kill");
    let backends = three_instances(&mut fx);
    let proxy = proxy_over(&mut fx, &backends, &[]);
    let run = Load::to(proxy.addr)
        .sessions(30, "500ms")
        .rps(400)
        .duration("5s")
        .flag("--reconnect")
        .spawn();
    wait_for(Duration::from_secs(10), || proxy.total("ws_active") == 30);
    wait_for(Duration::from_secs(10), || proxy.total("requests_total") >= 100);
    let on_victim = proxy
        .backends()
        .iter()
        .find(|b| b["address"] == backends[1].as_str())
        .unwrap()["ws_active"]
        .as_u64()
        .unwrap();
    fx.kill("flow-2");
    let summary = run.join().unwrap();
    assert_eq!(summary["requests_failed"], 0, "{summary}");
    assert!(summary["requests_ok"].as_u64().unwrap() > 1000, "{summary}");
    assert_eq!(
        summary["ws_dropped"], 0,
        "sessions must be closed properly, not cut: {summary}"
    );
    assert_eq!(
        summary["ws_closed_by_server"]["1001"].as_u64(),
        Some(on_victim),
        "{summary}"
    );
    wait_for(Duration::from_secs(10), || {
        proxy.backends().iter().filter(|b| b["state"] == "unhealthy").count() == 1
    });
}

#[test]
fn drain_closes_sessions_with_1001_and_fails_no_request() {
    let mut fx = Fixture::new("drain");
    let backends = three_instances(&mut fx);
    let proxy = proxy_over(&mut fx, &backends, &[]);
    let run = Load::to(proxy.addr)
        .sessions(60, "500ms")
        .rps(200)
        .duration("5s")
        .flag("--reconnect")
        .spawn();
    wait_for(Duration::from_secs(10), || proxy.total("ws_active") == 60);
    // A slow request in flight on the drained backend must still finish.
    let victim = backends[1].clone();
    let slow = {
        let addr = proxy.addr;
        std::thread::spawn(move || {
            let mut statuses = Vec::new();
            for _ in 0..6 {
                statuses.push(get(addr, "/api/sim/delay?ms=800", None).status);
            }
            statuses
        })
    };
    wait_for(Duration::from_secs(5), || {
        proxy
            .backends()
            .iter()
            .any(|b| b["address"] == victim.as_str() && b["active_requests"].as_u64() > Some(0))
    });
    let on_victim = proxy
        .backends()
        .iter()
        .find(|b| b["address"] == victim.as_str())
        .unwrap()["ws_active"]
        .as_u64()
        .unwrap();
    assert!(on_victim > 0);
    let r = proxy.admin("DELETE", &format!("/api/v1/backends/{victim}?drain=1"), "");
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json()["state"], "draining");
    let summary = run.join().unwrap();
    assert!(slow.join().unwrap().iter().all(|s| *s == 200));
    assert_eq!(summary["requests_failed"], 0, "{summary}");
    assert_eq!(summary["ws_dropped"], 0, "{summary}");
    assert_eq!(
        summary["ws_closed_by_server"]["1001"].as_u64(),
        Some(on_victim),
        "{summary}"
    );
    let left = proxy_backends(&proxy);
    assert_eq!(left.len(), 2);
    assert!(!left.contains(&victim));
}

#[test]
fn reload_during_1000_open_sessions_closes_none() {
    let mut fx = Fixture::new("reload");
    let backends: Vec<String> = (1..=2).map(|i| fx.sim_flow(&format!("flow-{i}")).to_string()).collect();
    let config = fx.dir.join("proxy.toml");
    let write = |backends: &[String], idle: &str| {
        let list: Vec<String> = backends.iter().map(|b| format!("\"{b}\"")).collect();
        std::fs::write(
            &config,
            format!(
                "listen = [\"127.0.0.1:0\"]\n[service.flow]\nbackends = [{}]\n[service.flow.websocket]\nidle_timeout = \"{idle}\"\n",
                list.join(", ")
            ),
        )
        .unwrap();
    };
    write(&backends[..1], "1h");
    let proxy = fx.proxy_with_config("proxy", &config);
    proxy.wait_healthy(1);
    let run = Load::to(proxy.addr).sessions(1000, "1s").rps(50).duration("8s").spawn();
    wait_for(Duration::from_secs(20), || proxy.total("ws_active") == 1000);
    // Reload by signal with a second backend and another idle timeout, then
    // by the admin API.
    write(&backends, "30m");
    fx.signal("proxy", "HUP");
    proxy.wait_healthy(2);
    let r = proxy.admin("POST", "/api/v1/reload", "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(proxy.total("ws_active"), 1000, "a reload closed sessions");
    // A broken file is refused and the running config stays.
    std::fs::write(
        &config,
        "listen = [\"127.0.0.1:0\"]\n[service.flow]\nbackends = [\"nope\"]\n",
    )
    .unwrap();
    let r = proxy.admin("POST", "/api/v1/reload", "");
    assert_eq!(r.status, 400);
    assert!(r.text().contains("proxy.toml:3:"), "{}", r.text());
    let summary = run.join().unwrap();
    assert_eq!(summary["ws_opened"], 1000, "{summary}");
    assert_eq!(summary["ws_dropped"], 0, "{summary}");
    assert_eq!(summary["ws_closed_by_server"], serde_json::json!({}), "{summary}");
    assert_eq!(summary["requests_failed"], 0, "{summary}");
    assert_eq!(proxy.backends().len(), 2);
}

#[test]
fn unknown_hosts_connect_and_foreign_absolute_forms_are_refused() {
    let mut fx = Fixture::new("hosts");
    let backend = vec![fx.sim_flow("flow-1").to_string()];
    let proxy = proxy_over(
        &mut fx,
        &backend,
        &["--domain", "flow.example.com", "--domain", "*.flow.test"],
    );
    assert_eq!(get(proxy.addr, "/api/sim/whoami", Some("flow.example.com")).status, 200);
    assert_eq!(get(proxy.addr, "/api/sim/whoami", Some("a.flow.test:8080")).status, 200);
    assert_eq!(get(proxy.addr, "/api/sim/whoami", Some("evil.example")).status, 404);
    assert_eq!(get(proxy.addr, "/api/sim/whoami", Some("flow.test")).status, 404);
    let raw = |text: &str| {
        let mut s = TcpStream::connect(proxy.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(text.as_bytes()).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        parse_response(&out).status
    };
    assert_eq!(
        raw("CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n"),
        405
    );
    assert_eq!(
        raw("GET http://evil.example/ HTTP/1.1\r\nHost: flow.example.com\r\nConnection: close\r\n\r\n"),
        400
    );
    assert_eq!(
        raw("GET http://evil.example/ HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n"),
        404
    );
    assert_eq!(raw("\x01\x02 nonsense\r\n\r\n"), 400);
}

#[test]
fn oversized_headers_get_431_and_slow_heads_get_408() {
    let mut fx = Fixture::new("limits");
    let backend = vec![fx.sim_flow("flow-1").to_string()];
    let proxy = proxy_over(&mut fx, &backend, &["--header-timeout", "1s"]);
    let big = "a".repeat(20_000);
    assert_eq!(request(proxy.addr, "GET", "/", &[("X-Big", &big)], b"").status, 431);
    let many: Vec<(String, String)> = (0..150).map(|i| (format!("X-H{i}"), "1".to_string())).collect();
    let refs: Vec<(&str, &str)> = many.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    assert_eq!(request(proxy.addr, "GET", "/", &refs, b"").status, 431);
    // The second request on a kept-alive connection is held to the same limit.
    let mut s = TcpStream::connect(proxy.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let second = format!(
        "GET /b HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "b".repeat(20_000)
    );
    s.write_all(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    s.write_all(second.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    assert_eq!(text.matches("HTTP/1.1 ").count(), 2, "{text}");
    assert!(text.contains("HTTP/1.1 431"), "{text}");
    let started = Instant::now();
    let mut s = TcpStream::connect(proxy.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n").unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    assert_eq!(parse_response(&out).status, 408);
    assert!(started.elapsed() < Duration::from_secs(5));
    // The proxy still serves afterwards.
    assert_eq!(get(proxy.addr, "/api/sim/whoami", None).status, 200);
}

#[test]
fn admin_api_needs_the_token_and_manages_backends() {
    let mut fx = Fixture::new("admin");
    let backends = three_instances(&mut fx);
    let proxy = proxy_over(&mut fx, &backends[..1], &[]);
    assert_eq!(get(proxy.admin, "/api/v1/backends", None).status, 401);
    let wrong = request(
        proxy.admin,
        "GET",
        "/api/v1/backends",
        &[("Authorization", "Bearer nope")],
        b"",
    );
    assert_eq!(wrong.status, 401);
    assert_eq!(get(proxy.admin, "/metrics", None).status, 401);

    let r = proxy.admin(
        "POST",
        "/api/v1/backends",
        &format!("{{\"address\": \"{}\", \"id\": \"flow-2\"}}", backends[1]),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let r = proxy.admin(
        "POST",
        "/api/v1/backends",
        &format!("{{\"address\": \"{}\"}}", backends[1]),
    );
    assert_eq!(r.status, 409);
    let r = proxy.admin("POST", "/api/v1/backends", "{\"address\": \"no-port\"}");
    assert_eq!(r.status, 400);
    assert!(r.text().contains("host:port"));
    let r = proxy.admin("POST", "/api/v1/backends", "not json");
    assert_eq!(r.status, 400);
    proxy.wait_healthy(2);
    let seen: std::collections::HashSet<String> = (0..20)
        .map(|_| {
            get(proxy.addr, "/api/sim/whoami", None).json()["instance"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(seen.len(), 2);
    assert_eq!(proxy.admin("DELETE", "/api/v1/backends/unknown", "").status, 404);
    assert_eq!(proxy.admin("DELETE", "/api/v1/backends/flow-2?drain=0", "").status, 202);
    wait_for(Duration::from_secs(10), || proxy.backends().len() == 1);
    assert_eq!(proxy.admin_get("/api/v1/certificates"), serde_json::json!([]));

    let metrics = proxy.admin("GET", "/metrics", "").text();
    assert!(metrics.contains("# TYPE flowgate_backend_requests_total counter"));
    assert!(metrics.contains(&format!(
        "flowgate_backend_requests_total{{backend=\"{}\",service=\"flow\"}}",
        backends[0]
    )));
    assert!(metrics.contains("flowgate_backend_request_duration_seconds_bucket"));
}

#[test]
fn admin_added_backends_survive_a_restart() {
    let mut fx = Fixture::new("persist");
    let backends = three_instances(&mut fx);
    let state = fx.dir.join("p-state");
    let p1 = fx.proxy_in("p1", &state, &[]);
    for b in &backends {
        assert_eq!(
            p1.admin("POST", "/api/v1/backends", &format!("{{\"address\": \"{b}\"}}"))
                .status,
            201
        );
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(state.join("admin-token"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "the admin token must be private");
    fx.signal("p1", "TERM");
    assert_eq!(fx.wait_exit("p1", Duration::from_secs(15)), Some(0));
    let p2 = fx.proxy_in("p2", &state, &[]);
    assert_eq!(p2.token, p1.token, "the token is kept across restarts");
    p2.wait_healthy(3);
}

#[test]
fn sigterm_closes_sessions_with_1001_and_exits() {
    let mut fx = Fixture::new("sigterm");
    let backend = vec![fx.sim_flow("flow-1").to_string()];
    let proxy = proxy_over(&mut fx, &backend, &["--shutdown-grace", "3s"]);
    let run = Load::to(proxy.addr).sessions(20, "500ms").duration("4s").spawn();
    wait_for(Duration::from_secs(10), || proxy.total("ws_active") == 20);
    fx.signal("proxy", "TERM");
    assert_eq!(
        fx.wait_exit("proxy", Duration::from_secs(10)),
        Some(0),
        "{}",
        fx.log("proxy")
    );
    let summary = run.join().unwrap();
    assert_eq!(summary["ws_closed_by_server"]["1001"], 20, "{summary}");
    assert_eq!(summary["ws_dropped"], 0, "{summary}");
}

#[test]
fn config_errors_name_file_line_and_column_and_start_nothing() {
    let fx = Fixture::new("config-errors");
    let config = fx.dir.join("bad.toml");
    let cases = [
        (
            "listen = [\"127.0.0.1:0\"]\n[service.flow]\nbackends = [\"a:1\"]\n[service.flow.websocket]\nidle_timeout = \"4s\"\n",
            "bad.toml:4:1: idle_timeout (4s) must be greater than heartbeat_interval (5s)",
        ),
        (
            "listen = [\"127.0.0.1:0\"]\n[service.flow]\nbalance = \"random\"\n",
            "bad.toml:3:11",
        ),
        (
            "listen = [\"nowhere\"]\n",
            "bad.toml:1:11: listen 'nowhere' is not an IP address with a port",
        ),
        (
            "listen = [\"127.0.0.1:0\"]\nlisten_typo = 1\n",
            "bad.toml:2:1: unknown field `listen_typo`",
        ),
    ];
    for (text, expected) in cases {
        std::fs::write(&config, text).unwrap();
        let out = std::process::Command::new(BIN)
            .args(["proxy", "--config", config.to_str().unwrap()])
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(stderr.contains(expected), "expected '{expected}' in: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one sentence, not a dump: {stderr}");
        assert!(String::from_utf8_lossy(&out.stdout).is_empty(), "nothing may start");
    }
    let out = std::process::Command::new(BIN)
        .args(["proxy", "--listen", "127.0.0.1:0", "--idle-timeout", "5s"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be greater than heartbeat_interval"));
}

#[test]
fn mc_simulator_answers_cors_only_for_flow_origins() {
    let mut fx = Fixture::new("mc");
    // JAVA_OPTS is how the real MC image is configured.
    let found = fx.start_with_env(
        "mc",
        &["sim", "mc", "--listen", "127.0.0.1:0"],
        &[(
            "JAVA_OPTS",
            "-Xmx512m -Dhazelcast.mc.flow.addresses=https://flow.example.com,https://flow2.example.com",
        )],
        &["listening on http://"],
    );
    let addr: std::net::SocketAddr = found[0].parse().unwrap();
    let preflight = |origin: &str| {
        request(
            addr,
            "OPTIONS",
            "/api/login",
            &[("Origin", origin), ("Access-Control-Request-Method", "POST")],
            b"",
        )
    };
    let ok = preflight("https://flow.example.com");
    assert_eq!(ok.status, 204);
    assert_eq!(
        ok.header("access-control-allow-origin"),
        Some("https://flow.example.com")
    );
    assert_eq!(ok.header("vary"), Some("Origin"));
    let other = preflight("https://evil.example.com");
    assert_eq!(other.status, 403);
    assert_eq!(other.header("access-control-allow-origin"), None);
    let simple = request(addr, "GET", "/health", &[("Origin", "https://flow2.example.com")], b"");
    assert_eq!(simple.status, 200);
    assert_eq!(
        simple.header("access-control-allow-origin"),
        Some("https://flow2.example.com")
    );
    let foreign = request(addr, "GET", "/health", &[("Origin", "https://evil.example.com")], b"");
    assert_eq!(foreign.header("access-control-allow-origin"), None);
}

#[test]
fn event_stream_reports_sessions_heartbeats_and_backend_changes() {
    let mut fx = Fixture::new("events");
    let backends = three_instances(&mut fx);
    let proxy = proxy_over(&mut fx, &backends[..1], &[]);
    let mut stream = TcpStream::connect(proxy.admin).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let head = format!(
        "GET /api/v1/events HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {}\r\n\r\n",
        proxy.token
    );
    stream.write_all(head.as_bytes()).unwrap();
    // The answer's head comes once the subscription exists: events from
    // here on reach this stream.
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while !seen.contains("\r\n\r\n") {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "the event stream closed before its head: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let reader = std::thread::spawn(move || {
        let mut seen = seen;
        let mut buf = buf;
        let wanted = [
            "text/event-stream",
            "event: websocket_opened",
            "event: heartbeat",
            "event: websocket_closed",
            "event: backend_added",
            "event: backend_state",
        ];
        while !wanted.iter().all(|w| seen.contains(w)) {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
        seen
    });
    let summary = Load::to(proxy.addr).sessions(2, "200ms").duration("1s").run();
    assert_eq!(summary["ws_opened"], 2);
    let r = proxy.admin(
        "POST",
        "/api/v1/backends",
        &format!("{{\"address\": \"{}\"}}", backends[1]),
    );
    assert_eq!(r.status, 201);
    let seen = reader.join().unwrap();
    for wanted in [
        "text/event-stream",
        "event: websocket_opened",
        "event: heartbeat",
        "event: websocket_closed",
    ] {
        assert!(seen.contains(wanted), "no '{wanted}' in the stream:\n{seen}");
    }
    assert!(seen.contains("event: backend_added"), "{seen}");
    assert!(
        seen.contains("\"state\":\"healthy\""),
        "the new backend's health change is reported: {seen}"
    );
}

#[test]
fn h2c_clients_keep_alive_upstream_and_backends_by_name() {
    let mut fx = Fixture::new("h2c");
    let sim = fx.sim_flow("flow-1");
    // A DNS name, resolved when connecting (as Docker's names are).
    let by_name = format!("localhost:{}", sim.port());
    let proxy = proxy_over(&mut fx, &[by_name], &[]);
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "--http2-prior-knowledge",
            "-w",
            "\n%{http_version}",
            "-H",
            "Host: flow.example.com",
        ])
        .arg(format!("http://{}/api/sim/whoami", proxy.addr))
        .output()
        .expect("curl is needed for this test");
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, version) = text.rsplit_once('\n').unwrap();
    assert_eq!(version, "2", "curl did not speak HTTP/2: {text}");
    let whoami: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(
        whoami["headers"]["host"], "flow.example.com",
        "Host comes from :authority"
    );
    assert_eq!(whoami["headers"]["x-forwarded-proto"], "http");

    // Sequential requests reuse pooled upstream connections.
    let peers: std::collections::HashSet<String> = (0..20)
        .map(|_| {
            get(proxy.addr, "/api/sim/whoami", None).json()["peer"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(
        peers.len() <= 2,
        "no keep-alive upstream: {} connections for 20 requests",
        peers.len()
    );
}

#[test]
fn max_connections_holds_further_clients_until_a_slot_frees() {
    let mut fx = Fixture::new("max-conn");
    let backend = vec![fx.sim_flow("flow-1").to_string()];
    let proxy = proxy_over(&mut fx, &backend, &["--max-connections", "2"]);
    let keep_alive = |addr| {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /api/sim/whoami HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        s
    };
    let first = keep_alive(proxy.addr);
    let _second = keep_alive(proxy.addr);
    let mut third = TcpStream::connect(proxy.addr).unwrap();
    third.set_read_timeout(Some(Duration::from_millis(800))).unwrap();
    third
        .write_all(b"GET /api/sim/whoami HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 4096];
    assert!(
        third.read(&mut buf).is_err(),
        "a third connection was served beyond the limit"
    );
    drop(first);
    third.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let n = third.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
}

#[test]
fn a_refused_websocket_handshake_reaches_the_client_as_the_backend_sent_it() {
    let mut fx = Fixture::new("ws-refused");
    let backend = vec![fx.sim_flow("flow-1").to_string()];
    let proxy = proxy_over(&mut fx, &backend, &[]);
    // No Sec-WebSocket-Key: the simulator answers 400 with an explanation.
    let refused = request(
        proxy.addr,
        "GET",
        "/api/sim/ws",
        &[("Connection", "Upgrade"), ("Upgrade", "websocket")],
        b"",
    );
    assert_eq!(refused.status, 400, "{}", refused.text());
    assert!(refused.text().contains("Sec-WebSocket-Key"), "{}", refused.text());
    // The refusal counts as one of the backend's requests, finished.
    assert_eq!(proxy.total("requests_total"), 1, "{:?}", proxy.backends());
    assert_eq!(proxy.total("active_requests"), 0, "{:?}", proxy.backends());
    // The proxy keeps serving, and a proper handshake still switches.
    assert_eq!(get(proxy.addr, "/api/sim/whoami", None).status, 200);
    // Read the 101's head only: the connection stays open as the tunnel.
    let mut s = TcpStream::connect(proxy.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(
        b"GET /api/sim/ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .unwrap();
    let head = read_head(&mut s).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(
        head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
}

#[test]
fn rebalance_spreads_sessions_onto_a_new_instance_with_1012_and_no_failures() {
    let mut fx = Fixture::new("rebalance");
    let backends = three_instances(&mut fx);
    let proxy = proxy_over(&mut fx, &backends, &[]);
    let run = Load::to(proxy.addr)
        .sessions(120, "1s")
        .rps(50)
        .duration("35s")
        .flag("--reconnect")
        .spawn();
    wait_for(Duration::from_secs(15), || proxy.total("ws_active") == 120);
    // A fourth instance: it gets no sessions until someone reconnects.
    let fourth = fx.sim_flow("flow-4").to_string();
    let r = proxy.admin("POST", "/api/v1/backends", &format!("{{\"address\": \"{fourth}\"}}"));
    assert_eq!(r.status, 201, "{}", r.text());
    proxy.wait_healthy(4);
    let on = |address: &str| -> u64 {
        proxy
            .backends()
            .iter()
            .find(|b| b["address"] == address)
            .map_or(0, |b| b["ws_active"].as_u64().unwrap())
    };
    assert_eq!(on(&fourth), 0);
    let r = proxy.admin("POST", "/api/v1/rebalance", "");
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json()["running"], true);
    // 2 % of 120 sessions a second: about 14 s to move 27.
    wait_for(Duration::from_secs(35), || {
        proxy.admin("GET", "/api/v1/rebalance", "").json()["running"] == false
    });
    let report = proxy.admin("GET", "/api/v1/rebalance", "").json();
    let counts = rebalanced_counts(&report);
    assert_eq!(counts.len(), 4, "{report}");
    assert!(counts.iter().all(|c| c.abs_diff(30) <= 3), "{report}");
    let moved = report["moved"].as_u64().unwrap();
    assert!(moved >= 20, "{report}");

    let summary = run.join().unwrap();
    nothing_failed(&summary);
    assert_eq!(
        summary["ws_closed_by_server"]["1012"].as_u64(),
        Some(moved),
        "{summary}"
    );
    assert_eq!(
        summary["ws_reconnects"].as_u64(),
        Some(moved),
        "every moved session came back: {summary}"
    );
    assert!(fx.log("proxy").contains("rebalanced flow"), "{}", fx.log("proxy"));
}

/// A proxy over a silent instance (it answers its health checks while
/// `healthy` is set, never a GET) and a simulator, with two GETs sent:
/// round robin makes one of them wait on the silent instance.
struct OneGetWaiting {
    _fx: Fixture,
    healthy: std::sync::Arc<std::sync::atomic::AtomicBool>,
    silent: String,
    proxy: Proxy,
    gets: Vec<std::thread::JoinHandle<(u16, Duration)>>,
}

impl OneGetWaiting {
    /// Returns once one GET waits on the silent instance.
    fn start(test: &str) -> OneGetWaiting {
        let mut fx = Fixture::new(test);
        let healthy = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let silent = silent_backend(healthy.clone());
        let answering = fx.sim_flow("flow-2").to_string();
        let proxy = proxy_over(
            &mut fx,
            &[silent.clone(), answering],
            &["--health-interval", "500ms", "--upstream-timeout", "60s"],
        );
        let gets = (0..2)
            .map(|_| {
                let addr = proxy.addr;
                std::thread::spawn(move || {
                    let started = Instant::now();
                    (get(addr, "/api/sim/whoami", None).status, started.elapsed())
                })
            })
            .collect();
        wait_for(Duration::from_secs(10), || {
            proxy
                .backends()
                .iter()
                .any(|b| b["address"] == silent.as_str() && b["active_requests"].as_u64() == Some(1))
        });
        OneGetWaiting {
            _fx: fx,
            healthy,
            silent,
            proxy,
            gets,
        }
    }

    fn silent_backend(&self) -> serde_json::Value {
        self.proxy
            .backends()
            .into_iter()
            .find(|b| b["address"] == self.silent.as_str())
            .unwrap()
    }

    fn fail_checks(&self) {
        self.healthy.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// Both GETs answered 200; the longest took this long.
    fn slowest(&mut self) -> Duration {
        let mut slowest = Duration::ZERO;
        for get in std::mem::take(&mut self.gets) {
            let (status, took) = get.join().unwrap();
            assert_eq!(status, 200, "the waiting GET is sent again elsewhere");
            slowest = slowest.max(took);
        }
        slowest
    }
}

/// The waiting GET's instance is drained (its name no longer resolves)
/// with `drain`, after which its health check fails when `fails` is set.
fn get_waiting_on_a_drained_instance(test: &str, drain: &str, fails: bool) -> Duration {
    let mut waiting = OneGetWaiting::start(test);
    let id = waiting.silent_backend()["id"].as_str().unwrap().to_string();
    let r = waiting
        .proxy
        .admin("DELETE", &format!("/api/v1/backends/{id}?drain={drain}"), "");
    assert_eq!(r.status, 202, "{}", r.text());
    if fails {
        waiting.fail_checks();
    }
    waiting.slowest()
}

#[test]
fn a_get_waiting_on_a_draining_instance_that_stops_answering_checks_moves_on() {
    // The drain window is long; the failed health checks end the wait.
    let took = get_waiting_on_a_drained_instance("drainfails", "120s", true);
    assert!(took < Duration::from_secs(15), "answered after {took:?}");
}

#[test]
fn a_get_still_waiting_when_the_drain_window_ends_moves_on() {
    // The instance still answers its checks but not the GET: when the window
    // ends, the GET goes elsewhere instead of waiting for the upstream timeout.
    let took = get_waiting_on_a_drained_instance("drainends", "2s", false);
    assert!(
        took >= Duration::from_secs(2),
        "moved before the window ended: {took:?}"
    );
    assert!(took < Duration::from_secs(15), "answered after {took:?}");
}

/// A backend that answers its health check (while `healthy`) and holds
/// every other request without an answer, as an instance on a lost node.
fn silent_backend(healthy: std::sync::Arc<std::sync::atomic::AtomicBool>) -> String {
    use std::sync::atomic::Ordering;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(64) {
            let Ok(mut stream) = stream else { continue };
            let healthy = healthy.clone();
            std::thread::spawn(move || {
                loop {
                    let head = read_head(&mut stream);
                    if head.is_empty() {
                        return;
                    }
                    if !head.contains("/api/actuator/health") {
                        // Never answered; the connection stays open a bounded while.
                        std::thread::sleep(Duration::from_secs(40));
                        return;
                    }
                    let answer: &[u8] = if healthy.load(Ordering::SeqCst) {
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
                    } else {
                        b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\ndown"
                    };
                    if stream.write_all(answer).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn a_get_waiting_on_an_instance_that_goes_down_is_answered_by_another() {
    let mut waiting = OneGetWaiting::start("wentdown");
    waiting.fail_checks();
    let slowest = waiting.slowest();
    assert!(
        slowest < Duration::from_secs(20),
        "answered after {slowest:?}, not after the upstream timeout"
    );
    let retried = waiting.silent_backend()["retries"].as_u64();
    assert_eq!(retried, Some(1));
}
