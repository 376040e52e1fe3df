//! Shared pieces of the end-to-end tests: start flowgate processes on
//! loopback with ports chosen by the kernel, talk HTTP to them, and kill
//! everything when the test ends, passed or failed.

#![allow(dead_code)]

pub mod docker;
pub mod raw;
pub mod swarm;
pub mod tmux;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_flowgate");

/// The binary the fixtures start: this build, or `FLOWGATE_TEST_BIN` (to show
/// that a test fails against an older build).
pub fn bin() -> String {
    std::env::var("FLOWGATE_TEST_BIN").unwrap_or_else(|_| BIN.to_string())
}

/// Child processes and temporary directories, cleaned up on drop.
pub struct Fixture {
    children: Vec<(String, Child)>,
    pub dir: PathBuf,
}

impl Fixture {
    pub fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("flowgate-test-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Fixture {
            children: Vec::new(),
            dir,
        }
    }

    /// Starts `flowgate ARGS` and waits for it to print lines containing each
    /// of `ready` (in order); returns the text after each marker up to the
    /// next space.
    pub fn start(&mut self, name: &str, args: &[&str], ready: &[&str]) -> Vec<String> {
        self.start_with_env(name, args, &[], ready)
    }

    /// Like [`Fixture::start`], with extra environment variables.
    pub fn start_with_env(&mut self, name: &str, args: &[&str], env: &[(&str, &str)], ready: &[&str]) -> Vec<String> {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log"))).unwrap();
        let mut child = Command::new(bin())
            .args(args)
            .envs(env.iter().copied())
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut found = Vec::new();
        for marker in ready {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(line) => {
                        if let Some(pos) = line.find(marker) {
                            let rest = &line[pos + marker.len()..];
                            found.push(rest.split_whitespace().next().unwrap_or("").to_string());
                            break;
                        }
                    }
                    Err(_) => {
                        let _ = child.kill();
                        let log = std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default();
                        panic!("{name} did not print '{marker}' in time; its log:\n{log}");
                    }
                }
            }
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in rx {});
        self.children.push((name.to_string(), child));
        found
    }

    /// A Flow simulator on a kernel-chosen port; returns its address.
    pub fn sim_flow(&mut self, name: &str) -> SocketAddr {
        let found = self.start(
            name,
            &["sim", "flow", "--listen", "127.0.0.1:0", "--name", name],
            &["listening on http://"],
        );
        found[0].parse().unwrap()
    }

    /// A proxy with the given extra flags; listener and admin on free ports.
    pub fn proxy(&mut self, name: &str, extra: &[&str]) -> Proxy {
        let state = self.dir.join(format!("{name}-state"));
        self.proxy_in(name, &state, extra)
    }

    /// A proxy keeping its state in `state` (to restart one on the same state).
    pub fn proxy_in(&mut self, name: &str, state: &Path, extra: &[&str]) -> Proxy {
        let state_str = state.to_str().unwrap().to_string();
        let mut args = vec![
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--state-dir",
            &state_str,
        ];
        args.extend_from_slice(extra);
        let found = self.start(name, &args, &["listening on http://", "admin API on http://"]);
        self.proxy_from(found, state)
    }

    /// A proxy from a config file (its listener must be 127.0.0.1:0).
    pub fn proxy_with_config(&mut self, name: &str, config: &Path) -> Proxy {
        let state = self.dir.join(format!("{name}-state"));
        let args = [
            "proxy",
            "--config",
            config.to_str().unwrap(),
            "--admin",
            "127.0.0.1:0",
            "--state-dir",
            state.to_str().unwrap(),
        ];
        let found = self.start(name, &args, &["listening on http://", "admin API on http://"]);
        self.proxy_from(found, &state)
    }

    fn proxy_from(&self, found: Vec<String>, state: &Path) -> Proxy {
        let token = std::fs::read_to_string(state.join("admin-token"))
            .unwrap()
            .trim()
            .to_string();
        Proxy {
            addr: found[0].parse().unwrap(),
            admin: found[1].parse().unwrap(),
            token,
        }
    }

    pub fn pid(&self, name: &str) -> u32 {
        self.children
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c.id())
            .unwrap()
    }

    pub fn kill(&mut self, name: &str) {
        if let Some((_, child)) = self.children.iter_mut().find(|(n, _)| n == name) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn signal(&self, name: &str, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid(name).to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for a child to exit and returns its exit code.
    pub fn wait_exit(&mut self, name: &str, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        let (_, child) = self.children.iter_mut().find(|(n, _)| n == name)?;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

pub struct Proxy {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub token: String,
}

impl Proxy {
    pub fn admin_get(&self, path: &str) -> serde_json::Value {
        let auth = format!("Bearer {}", self.token);
        let r = request(self.admin, "GET", path, &[("Authorization", &auth)], b"");
        assert_eq!(r.status, 200, "GET {path}: {}", r.text());
        serde_json::from_slice(&r.body).unwrap()
    }

    pub fn admin(&self, method: &str, path: &str, body: &str) -> Response {
        let auth = format!("Bearer {}", self.token);
        request(
            self.admin,
            method,
            path,
            &[("Authorization", &auth), ("Content-Type", "application/json")],
            body.as_bytes(),
        )
    }

    pub fn backends(&self) -> Vec<serde_json::Value> {
        self.admin_get("/api/v1/backends").as_array().unwrap().clone()
    }

    /// Sum of one numeric field over all backends.
    pub fn total(&self, field: &str) -> u64 {
        self.backends().iter().map(|b| b[field].as_u64().unwrap_or(0)).sum()
    }

    pub fn wait_healthy(&self, count: usize) {
        wait_for(Duration::from_secs(15), || {
            self.backends().iter().filter(|b| b["state"] == "healthy").count() == count
        });
    }
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request on a fresh connection (Connection: close).
/// An HTTP response head read byte by byte, so nothing after it is
/// consumed (after a 101 the connection carries WebSocket frames).
pub fn read_head(stream: &mut impl Read) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

pub fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\nConnection: close\r\n\r\n", body.len()));
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    parse_response(&raw)
}

/// A GET that gives None instead of failing when nothing (or nothing
/// complete) answers: for waiting until a server is up.
pub fn try_get(addr: SocketAddr, path: &str) -> Option<Response> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    raw.windows(4).any(|w| w == b"\r\n\r\n").then(|| parse_response(&raw))
}

pub fn get(addr: SocketAddr, path: &str, host: Option<&str>) -> Response {
    match host {
        Some(h) => request(addr, "GET", path, &[("Host", h)], b""),
        None => request(addr, "GET", path, &[], b""),
    }
}

pub fn parse_response(raw: &[u8]) -> Response {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete response head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Response { status, headers, body }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(pos) = data.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&data[..pos]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&data[pos + 2..pos + 2 + size]);
        data = &data[pos + 2 + size + 2..];
    }
    out
}

pub fn wait_for(timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("condition not met within {timeout:?}");
}

/// A `flowgate loadgen` run against a proxy: no sessions and no requests
/// unless asked, for 2 s.
pub struct Load {
    args: Vec<String>,
}

impl Load {
    pub fn to(addr: SocketAddr) -> Self {
        let args = [
            "--url",
            &format!("http://{addr}"),
            "--ws-clients",
            "0",
            "--rps",
            "0",
            "--duration",
            "2s",
        ];
        Load {
            args: args.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Sets a loadgen option (replacing its value when already set).
    pub fn set(mut self, flag: &str, value: &str) -> Self {
        match self.args.iter().position(|a| a == flag) {
            Some(i) => self.args[i + 1] = value.to_string(),
            None => self.args.extend([flag.to_string(), value.to_string()]),
        }
        self
    }

    /// `count` WebSocket sessions, each heartbeating every `heartbeat`.
    pub fn sessions(self, count: u32, heartbeat: &str) -> Self {
        self.set("--ws-clients", &count.to_string())
            .set("--heartbeat", heartbeat)
    }

    pub fn rps(self, rps: u32) -> Self {
        self.set("--rps", &rps.to_string())
    }

    pub fn duration(self, duration: &str) -> Self {
        self.set("--duration", duration)
    }

    /// Heartbeats as this text message instead of pings.
    pub fn text_heartbeats(self, text: &str) -> Self {
        self.set("--heartbeat-text", text)
    }

    /// Any other loadgen flag, such as `--reconnect`.
    pub fn flag(mut self, flag: &str) -> Self {
        self.args.push(flag.to_string());
        self
    }

    /// Runs to the end and returns the JSON summary.
    pub fn run(self) -> serde_json::Value {
        let output = Command::new(BIN)
            .arg("loadgen")
            .args(&self.args)
            .arg("--json")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "loadgen failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!(
                "loadgen printed no JSON ({e}): {}",
                String::from_utf8_lossy(&output.stdout)
            )
        })
    }

    /// Runs in the background; join the thread for the summary.
    pub fn spawn(self) -> std::thread::JoinHandle<serde_json::Value> {
        std::thread::spawn(move || self.run())
    }
}

/// Runs a command that must succeed; returns its standard output.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A CA and certificates made with openssl, as an operator would.
pub struct Pki {
    pub dir: PathBuf,
}

/// openssl arguments for a new P-256 key, unencrypted.
const NEW_EC_KEY: [&str; 5] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

impl Pki {
    pub fn new(dir: &Path) -> Pki {
        let pki = Pki { dir: dir.join("pki") };
        std::fs::create_dir_all(&pki.dir).unwrap();
        run(Command::new("openssl")
            .current_dir(&pki.dir)
            .args(["req", "-x509"])
            .args(NEW_EC_KEY)
            .args([
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "30",
                "-subj",
                "/CN=Test Ops CA",
            ])
            .args([
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign",
            ]));
        pki
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Issues `name`.pem (leaf then CA) and `name`.key for the DNS names
    /// (entries that parse as IP addresses become IP names).
    pub fn issue(&self, name: &str, dns: &[&str], days: u32) {
        let sans: Vec<String> = dns
            .iter()
            .map(|d| {
                if d.parse::<std::net::IpAddr>().is_ok() {
                    format!("IP:{d}")
                } else {
                    format!("DNS:{d}")
                }
            })
            .collect();
        std::fs::write(
            self.path("ext.cnf"),
            format!("subjectAltName={}\nextendedKeyUsage=serverAuth\n", sans.join(",")),
        )
        .unwrap();
        run(Command::new("openssl")
            .current_dir(&self.dir)
            .args(["req", "-new"])
            .args(NEW_EC_KEY)
            .args([
                "-keyout",
                &format!("{name}.key"),
                "-out",
                "leaf.csr",
                "-subj",
                &format!("/CN={}", dns[0]),
            ]));
        run(Command::new("openssl")
            .current_dir(&self.dir)
            .args([
                "x509",
                "-req",
                "-in",
                "leaf.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
            ])
            .args(["-out", "leaf.pem", "-days", &days.to_string(), "-extfile", "ext.cnf"]));
        let chain = std::fs::read_to_string(self.path("leaf.pem")).unwrap()
            + &std::fs::read_to_string(self.path("ca.pem")).unwrap();
        std::fs::write(self.path(&format!("{name}.pem")), chain).unwrap();
    }
}

/// A port that was free a moment ago (for programs that cannot report the
/// port they bound, such as Pebble, which must be told the proxy's ports).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_for_port(port: u16) {
    wait_for(Duration::from_secs(20), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
}

/// A Pebble ACME server with pebble-challtestsrv as its DNS (every name is
/// 127.0.0.1), validating HTTP-01 and TLS-ALPN-01 on the given proxy ports.
pub struct Pebble {
    pub directory: String,
    /// The CA of Pebble's own HTTPS listener, for --acme-ca.
    pub listener_ca: PathBuf,
    pub management: u16,
}

impl Pebble {
    /// The root that signs the certificates Pebble issues, as PEM.
    pub fn issuing_root(&self) -> String {
        run(Command::new("curl")
            .args(["-s", "--cacert", self.listener_ca.to_str().unwrap()])
            .arg(format!("https://localhost:{}/roots/0", self.management)))
    }
}

impl Fixture {
    /// Starts any program, logging its output to `<name>.log`.
    pub fn start_program(&mut self, name: &str, program: &str, args: &[&str], env: &[(&str, &str)]) {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log"))).unwrap();
        let child = Command::new(program)
            .args(args)
            .envs(env.iter().copied())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program} (tests/run installs it): {e}"));
        self.children.push((name.to_string(), child));
    }

    /// Starts Pebble. `validity` shortens the certificates it issues;
    /// `nonce_reject` is the percentage of nonces it rejects.
    pub fn pebble(&mut self, http_port: u16, tls_port: u16, validity: Option<u64>, nonce_reject: u32) -> Pebble {
        self.pebble_on(free_port(), http_port, tls_port, validity, nonce_reject)
    }

    /// Pebble on a given ACME port (to start it after its clients).
    pub fn pebble_at(&mut self, acme: u16, http_port: u16, tls_port: u16, nonce_reject: u32) -> Pebble {
        self.pebble_on(acme, http_port, tls_port, None, nonce_reject)
    }

    fn pebble_on(
        &mut self,
        acme: u16,
        http_port: u16,
        tls_port: u16,
        validity: Option<u64>,
        nonce_reject: u32,
    ) -> Pebble {
        let pki = Pki::new(&self.dir.join("pebble"));
        pki.issue("listener", &["localhost", "127.0.0.1"], 30);
        let (management, dns) = (free_port(), free_port());
        let mut config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{acme}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": pki.path("listener.pem"),
            "privateKey": pki.path("listener.key"),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        if let Some(seconds) = validity {
            config["pebble"]["certificateValidityPeriod"] = seconds.into();
        }
        let config_path = self.dir.join("pebble.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let dns_addr = format!("127.0.0.1:{dns}");
        let chall_management = format!("127.0.0.1:{}", free_port());
        self.start_program(
            "challtestsrv",
            "pebble-challtestsrv",
            &[
                "-defaultIPv4",
                "127.0.0.1",
                "-defaultIPv6",
                "",
                "-dns01",
                &dns_addr,
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                "-management",
                &chall_management,
            ],
            &[],
        );
        let reject = nonce_reject.to_string();
        self.start_program(
            "pebble",
            "pebble",
            &["-config", config_path.to_str().unwrap(), "-dnsserver", &dns_addr],
            &[("PEBBLE_VA_NOSLEEP", "1"), ("PEBBLE_WFE_NONCEREJECT", &reject)],
        );
        wait_for_port(acme);
        wait_for_port(management);
        Pebble {
            directory: format!("https://localhost:{acme}/dir"),
            listener_ca: pki.path("ca.pem"),
            management,
        }
    }
}

/// Asserts that a `flowgate loadgen --json` summary saw no failed request
/// and no session that ended without a close frame (1006); returns how many
/// sessions the server closed with a code.
pub fn nothing_failed(summary: &serde_json::Value) -> u64 {
    assert_eq!(summary["requests_failed"], 0, "{summary}");
    assert_eq!(
        summary["ws_dropped"], 0,
        "no session may end without a close frame (1006): {summary}"
    );
    summary["ws_closed_by_server"]
        .as_object()
        .map(|m| m.values().filter_map(|v| v.as_u64()).sum())
        .unwrap_or(0)
}

/// The simulator instances that answered `count` whoami requests through
/// `addr` (`host:port`); a request that fails counts for nothing.
pub fn whoami_instances(addr: &str, count: usize) -> std::collections::BTreeSet<String> {
    (0..count)
        .filter_map(|_| {
            let out = std::process::Command::new("curl")
                .args(["-s", "-m", "2", &format!("http://{addr}/api/sim/whoami")])
                .output()
                .ok()?;
            let json: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            Some(json["instance"].as_str()?.to_string())
        })
        .collect()
}

/// The sessions per instance of a rebalance report, asserting it ended even.
pub fn rebalanced_counts(report: &serde_json::Value) -> Vec<u64> {
    assert_eq!(report["balanced"], true, "{report}");
    report["sessions"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .collect()
}
