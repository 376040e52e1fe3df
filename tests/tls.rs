//! End-to-end tests of TLS termination: the local CA and certificate files,
//! checked with curl and openssl as real clients.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

/// curl over TLS, trusting `ca`, resolving `host` to the proxy.
fn curl(proxy: &Proxy, tls: std::net::SocketAddr, ca: &Path, host: &str, path: &str) -> (String, String) {
    let out = run(Command::new("curl")
        .args([
            "-s",
            "--cacert",
            ca.to_str().unwrap(),
            "-w",
            "\n%{http_code} %{http_version}",
        ])
        .args(["--resolve", &format!("{host}:{}:127.0.0.1", tls.port())])
        .arg(format!("https://{host}:{}{path}", tls.port())));
    let _ = proxy;
    let (body, status) = out.rsplit_once('\n').unwrap();
    (body.to_string(), status.to_string())
}

/// The TLS listener's address, from `<state-dir>/proxy.json`.
fn tls_addr(state: &Path) -> std::net::SocketAddr {
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("proxy.json")).unwrap()).unwrap();
    info["tls_listen"][0].as_str().unwrap().parse().unwrap()
}

/// What openssl s_client sees: the chain's subjects, ALPN and verification.
fn s_client(tls: std::net::SocketAddr, servername: &str, ca: &Path, extra: &[&str]) -> String {
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &tls.to_string(),
            "-servername",
            servername,
            "-CAfile",
            ca.to_str().unwrap(),
        ])
        .args(["-alpn", "h2,http/1.1", "-showcerts"])
        .args(extra)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A proxy terminating TLS for flow.example.com with its local CA, in front
/// of one Flow simulator; returns it, its TLS address and its state dir.
fn self_signed_proxy(fx: &mut Fixture) -> (Proxy, std::net::SocketAddr, std::path::PathBuf) {
    let backend = fx.sim_flow("flow-1").to_string();
    let state = fx.dir.join("state");
    let flags = [
        "--tls",
        "self-signed",
        "--tls-listen",
        "127.0.0.1:0",
        "--domain",
        "flow.example.com",
    ];
    let mut args = flags.to_vec();
    args.extend(["--backend", &backend]);
    let proxy = fx.proxy_in("proxy", &state, &args);
    proxy.wait_healthy(1);
    let tls = tls_addr(&state);
    (proxy, tls, state)
}

#[test]
fn self_signed_serves_h2_with_a_trusted_chain_and_redirects_plain_http() {
    let mut fx = Fixture::new("tls-self-signed");
    let (proxy, tls, state) = self_signed_proxy(&mut fx);
    let ca = state.join("ca.pem");

    let (body, status) = curl(&proxy, tls, &ca, "flow.example.com", "/api/sim/whoami");
    assert_eq!(status, "200 2", "h2 over TLS expected");
    let headers = serde_json::from_str::<serde_json::Value>(&body).unwrap()["headers"].clone();
    assert_eq!(headers["x-forwarded-proto"], "https");
    assert_eq!(headers["x-forwarded-port"], tls.port().to_string());

    let seen = s_client(tls, "flow.example.com", &ca, &[]);
    assert!(seen.contains("Verify return code: 0 (ok)"), "{seen}");
    assert!(seen.contains("ALPN protocol: h2"), "{seen}");
    let leaf = seen.find("s:CN = flow.example.com").expect("leaf first");
    let issuer = seen.find("s:CN = flowgate local CA").expect("then the CA");
    assert!(leaf < issuer, "{seen}");
    let old = s_client(tls, "flow.example.com", &ca, &["-tls1_1"]);
    assert!(
        old.contains("no peer certificate available"),
        "TLS 1.1 must be refused: {old}"
    );
    assert!(seen.contains("TLSv1.3"), "TLS 1.3 expected: {seen}");

    // Plain HTTP: 308 to HTTPS, except ACME's challenge path; unknown hosts 404.
    let r = get(proxy.addr, "/api/x?y=1", Some("flow.example.com"));
    assert_eq!(r.status, 308);
    assert_eq!(
        r.header("location"),
        Some(format!("https://flow.example.com:{}/api/x?y=1", tls.port()).as_str())
    );
    assert_eq!(
        get(proxy.addr, "/.well-known/acme-challenge/none", Some("flow.example.com")).status,
        404
    );
    assert_eq!(get(proxy.addr, "/", Some("other.example.com")).status, 404);

    let certs = proxy.admin_get("/api/v1/certificates");
    let cert = &certs[0];
    assert_eq!(cert["source"], "self-signed");
    assert_eq!(cert["issuer"], "flowgate local CA");
    assert!(
        cert["domains"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d == "flow.example.com")
    );
    assert!(cert["days_left"].as_i64().unwrap() >= 89);
    assert!(cert["next_renewal"].is_string());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(state.join("ca-key.pem"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
}

fn proxy_exit_error(args: &[&str]) -> String {
    let out = Command::new(BIN)
        .arg("proxy")
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(!out.status.success(), "the proxy started although it should not have");
    assert!(
        out.stdout.is_empty(),
        "nothing may listen: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).trim().to_string()
}

#[test]
fn certificate_files_are_checked_served_and_hot_reloaded() {
    let mut fx = Fixture::new("tls-files");
    let pki = Pki::new(&fx.dir);
    pki.issue("good", &["flow.example.com"], 20);
    let backend = fx.sim_flow("flow-1").to_string();
    let state = fx.dir.join("state");
    let (cert, key) = (pki.path("live.pem"), pki.path("live.key"));
    std::fs::copy(pki.path("good.pem"), &cert).unwrap();
    std::fs::copy(pki.path("good.key"), &key).unwrap();
    let files_args = |cert: &Path, key: &Path| -> Vec<String> {
        [
            "--tls",
            "files",
            "--tls-listen",
            "127.0.0.1:0",
            "--domain",
            "flow.example.com",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([
            "--cert".into(),
            cert.display().to_string(),
            "--key".into(),
            key.display().to_string(),
        ])
        .collect()
    };
    let mut args = files_args(&cert, &key);
    args.extend(["--backend".to_string(), backend.clone()]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let proxy = fx.proxy_in("proxy", &state, &refs);
    proxy.wait_healthy(1);
    let tls = tls_addr(&state);
    let ca = pki.path("ca.pem");
    let (_, status) = curl(&proxy, tls, &ca, "flow.example.com", "/api/sim/whoami");
    assert_eq!(status, "200 2");
    let first = proxy.admin_get("/api/v1/certificates")[0].clone();
    assert_eq!(first["source"], "files");
    assert_eq!(first["issuer"], "Test Ops CA");

    // New files are picked up without a restart; open connections are untouched.
    pki.issue("next", &["flow.example.com"], 25);
    std::fs::copy(pki.path("next.key"), &key).unwrap();
    std::fs::copy(pki.path("next.pem"), &cert).unwrap();
    wait_for(Duration::from_secs(10), || {
        proxy.admin_get("/api/v1/certificates")[0]["serial"] != first["serial"]
    });
    let (_, status) = curl(&proxy, tls, &ca, "flow.example.com", "/api/sim/whoami");
    assert_eq!(status, "200 2");
    let second = proxy.admin_get("/api/v1/certificates")[0]["serial"].clone();

    // A broken update (key of another certificate) is refused; the current
    // certificate keeps serving and the error is reported.
    std::fs::copy(pki.path("good.key"), &key).unwrap();
    wait_for(Duration::from_secs(10), || {
        proxy.admin_get("/api/v1/certificates")[0]["last_error"].is_string()
    });
    let now = proxy.admin_get("/api/v1/certificates")[0].clone();
    assert_eq!(now["serial"], second);
    assert!(now["last_error"].as_str().unwrap().contains("does not belong"), "{now}");
    let (_, status) = curl(&proxy, tls, &ca, "flow.example.com", "/api/sim/whoami");
    assert_eq!(status, "200 2");
}

#[test]
fn bad_certificate_files_stop_the_start_with_the_reason() {
    let fx = Fixture::new("tls-bad-files");
    let pki = Pki::new(&fx.dir);
    pki.issue("a", &["flow.example.com"], 20);
    pki.issue("b", &["other.example.com"], 20);
    let state = fx.dir.join("state");
    let state = state.to_str().unwrap();
    let p = |name: &str| pki.path(name).display().to_string();
    let base = |cert: &str, key: &str| -> Vec<String> {
        [
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "off",
            "--state-dir",
            state,
            "--tls",
            "files",
            "--tls-listen",
            "127.0.0.1:0",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([
            "--domain".into(),
            "flow.example.com".into(),
            "--cert".into(),
            cert.into(),
            "--key".into(),
            key.into(),
        ])
        .collect()
    };
    let check = |args: Vec<String>, expected: &str| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let err = proxy_exit_error(&refs);
        assert!(err.contains(expected), "expected '{expected}' in: {err}");
        assert_eq!(err.lines().count(), 1, "one sentence: {err}");
    };
    check(base(&p("missing.pem"), &p("a.key")), "missing.pem");
    check(base(&p("a.pem"), &p("b.key")), "does not belong to the certificate");
    check(base(&p("b.pem"), &p("b.key")), "does not cover flow.example.com");
    // Chain out of order: the CA first, then the leaf.
    let text = std::fs::read_to_string(pki.path("a.pem")).unwrap();
    let split = text.find("-----END CERTIFICATE-----").unwrap() + "-----END CERTIFICATE-----\n".len();
    std::fs::write(pki.path("swapped.pem"), format!("{}{}", &text[split..], &text[..split])).unwrap();
    check(base(&p("swapped.pem"), &p("a.key")), "out of order");
    std::fs::write(pki.path("empty.pem"), "nothing here\n").unwrap();
    check(base(&p("empty.pem"), &p("a.key")), "no PEM certificate");
    let err = proxy_exit_error(&[
        "--listen",
        "127.0.0.1:0",
        "--tls",
        "files",
        "--tls-listen",
        "127.0.0.1:0",
    ]);
    assert!(err.contains("--cert"), "{err}");
}

#[test]
fn loadgen_runs_https_and_wss_trusting_the_local_ca() {
    let mut fx = Fixture::new("tls-loadgen");
    let (proxy, tls, state) = self_signed_proxy(&mut fx);
    let url = format!("https://flow.example.com:{}", tls.port());
    let resolve = format!("flow.example.com:{}:127.0.0.1", tls.port());
    let ca = state.join("ca.pem");
    let summary = Load::to(proxy.addr)
        .set("--url", &url)
        .set("--resolve", &resolve)
        .set("--ca", ca.to_str().unwrap())
        .sessions(20, "300ms")
        .rps(100)
        .duration("3s")
        .run();
    assert_eq!(summary["ws_opened"], 20, "{summary}");
    assert_eq!(summary["ws_dropped"], 0, "{summary}");
    assert_eq!(summary["requests_failed"], 0, "{summary}");
    assert!(summary["requests_ok"].as_u64().unwrap() >= 250, "{summary}");
    assert_eq!(
        summary["heartbeats_acknowledged"], summary["heartbeats_sent"],
        "{summary}"
    );
    wait_for(Duration::from_secs(5), || proxy.total("ws_active") == 0);
    assert_eq!(
        proxy.total("heartbeats_total"),
        summary["heartbeats_sent"].as_u64().unwrap()
    );

    // Without trusting the local CA nothing gets through, and loadgen says why.
    let untrusted = Load::to(proxy.addr)
        .set("--url", &url)
        .set("--resolve", &resolve)
        .sessions(2, "1s")
        .rps(5)
        .duration("1s")
        .run();
    assert_eq!(untrusted["ws_opened"], 0, "{untrusted}");
    assert_eq!(untrusted["requests_ok"], 0, "{untrusted}");
    assert!(untrusted["errors"].to_string().contains("certificate"), "{untrusted}");
    let insecure = Load::to(proxy.addr)
        .set("--url", &url)
        .set("--resolve", &resolve)
        .flag("--insecure")
        .sessions(2, "1s")
        .duration("1s")
        .run();
    assert_eq!(insecure["ws_opened"], 2, "{insecure}");
}

/// A leaf for `name` signed with the proxy's local CA key, as whoever read
/// `ca-key.pem` could make one; written to `dir` as `<stem>.pem`/`.key`.
fn forge_leaf(state: &Path, dir: &Path, stem: &str, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let ca_pem = std::fs::read_to_string(state.join("ca.pem")).unwrap();
    let ca_key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(state.join("ca-key.pem")).unwrap()).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let (cert_path, key_path) = (dir.join(format!("{stem}.pem")), dir.join(format!("{stem}.key")));
    std::fs::write(&cert_path, format!("{}{ca_pem}", cert.pem())).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (cert_path, key_path)
}

#[test]
fn the_local_ca_signs_only_for_its_domains() {
    let mut fx = Fixture::new("tls-ca-limits");
    let (_proxy, _, state) = self_signed_proxy(&mut fx);
    let ca = state.join("ca.pem");
    let backend = fx.sim_flow("flow-2").to_string();
    for (stem, name, trusted) in [
        ("outside", "bank.example.net", false),
        ("inside", "mc.flow.example.com", true),
    ] {
        let (cert, key) = forge_leaf(&state, &fx.dir, stem, name);
        let other_state = fx.dir.join(format!("state-{stem}"));
        let args = [
            "--tls",
            "files",
            "--tls-listen",
            "127.0.0.1:0",
            "--domain",
            name,
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--backend",
            &backend,
        ];
        let server = fx.proxy_in(stem, &other_state, &args);
        server.wait_healthy(1);
        let tls = tls_addr(&other_state);
        // curl (OpenSSL) checks the CA's name constraints.
        let out = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--cacert",
                ca.to_str().unwrap(),
            ])
            .args(["--resolve", &format!("{name}:{}:127.0.0.1", tls.port())])
            .arg(format!("https://{name}:{}/api/sim/whoami", tls.port()))
            .output()
            .unwrap();
        assert_eq!(out.status.success(), trusted, "curl for {name}: {:?}", out);
        // So does rustls, through flowgate's own client.
        let target = flowgate::net::Target::parse(
            &format!("https://{name}:{}", tls.port()),
            None,
            &[format!("{name}:{}:127.0.0.1", tls.port())],
            &flowgate::net::Trust::File(ca.clone()),
        )
        .unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let reached = runtime.block_on(flowgate::net::connect(&target, None));
        assert_eq!(reached.is_ok(), trusted, "rustls for {name}: {:?}", reached.err());
        if !trusted {
            let error = reached.err().unwrap().to_string();
            assert!(error.to_lowercase().contains("name"), "{error}");
        }
    }
}

#[test]
fn half_a_local_ca_stops_the_start_and_nothing_is_overwritten() {
    let mut fx = Fixture::new("tls-half-ca");
    let state = {
        let (proxy, _, state) = self_signed_proxy(&mut fx);
        drop(proxy);
        fx.kill("proxy");
        state
    };
    std::fs::remove_file(state.join("ca-key.pem")).unwrap();
    let ca = std::fs::read_to_string(state.join("ca.pem")).unwrap();
    let error = proxy_exit_error(&[
        "--tls",
        "self-signed",
        "--tls-listen",
        "127.0.0.1:0",
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "off",
        "--domain",
        "flow.example.com",
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    assert!(error.contains("ca-key.pem does not"), "{error}");
    assert_eq!(std::fs::read_to_string(state.join("ca.pem")).unwrap(), ca);
    assert!(!state.join("ca-key.pem").exists());
}

/// One TLS connection by openssl s_client (HTTP/1.1, one GET read to the
/// end, so the session tickets sent after the handshake arrive), saving its
/// session to `save` and resuming the one in `resume`; what it printed.
fn session(tls: std::net::SocketAddr, ca: &Path, flags: &[&str], save: &Path, resume: Option<&Path>) -> String {
    use std::io::Write;
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &tls.to_string(),
            "-servername",
            "flow.example.com",
        ])
        .args(["-CAfile", ca.to_str().unwrap(), "-alpn", "http/1.1", "-ign_eof"])
        .args(["-sess_out", save.to_str().unwrap()])
        .args(resume.map_or(vec![], |r| vec!["-sess_in", r.to_str().unwrap()]))
        .args(flags)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"GET /api/sim/whoami HTTP/1.1\r\nHost: flow.example.com\r\nConnection: close\r\n\r\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn returning_clients_resume_their_tls_session_by_ticket_or_session_id() {
    let mut fx = Fixture::new("tls-resumption");
    let (_proxy, tls, state) = self_signed_proxy(&mut fx);
    let ca = state.join("ca.pem");
    let cases: [(&str, &[&str], &str); 3] = [
        ("TLS 1.3 ticket", &[], "Reused, TLSv1.3"),
        ("TLS 1.2 ticket", &["-tls1_2"], "Reused, TLSv1.2"),
        ("TLS 1.2 session ID", &["-tls1_2", "-no_ticket"], "Reused, TLSv1.2"),
    ];
    let mut saved_sessions = Vec::new();
    for (name, flags, _) in cases {
        let saved = fx.dir.join(format!("{}.session", name.replace(' ', "-")));
        let first = session(tls, &ca, flags, &saved, None);
        assert!(first.contains("New, TLSv1."), "{name}, first connection: {first}");
        assert!(first.contains("HTTP/1.1 200"), "{name}: {first}");
        saved_sessions.push(saved);
    }
    // More clients than a small server-side cache holds come in between
    // (rustls keeps 256 by default): tickets need no memory on the server,
    // and session IDs have room for thousands.
    let others = Command::new("python3")
        .arg("-c")
        .arg(
            "import socket, ssl, sys\n\
             ctx = ssl.create_default_context(cafile=sys.argv[3])\n\
             for _ in range(600):\n\
             \x20   with socket.create_connection((sys.argv[1], int(sys.argv[2]))) as raw:\n\
             \x20       with ctx.wrap_socket(raw, server_hostname='flow.example.com') as tls:\n\
             \x20           tls.sendall(b'GET / HTTP/1.1\\r\\nHost: flow.example.com\\r\\nConnection: close\\r\\n\\r\\n')\n\
             \x20           while tls.recv(4096): pass\n",
        )
        .args([&tls.ip().to_string(), &tls.port().to_string(), ca.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(others.status.success(), "{}", String::from_utf8_lossy(&others.stderr));
    for ((name, flags, reused), saved) in cases.into_iter().zip(saved_sessions) {
        let again = session(tls, &ca, flags, &fx.dir.join("again.session"), Some(&saved));
        assert!(again.contains(reused), "{name}, second connection: {again}");
        assert!(again.contains("HTTP/1.1 200"), "{name}: {again}");
    }
    // A session from another server's keys is not taken: a full handshake.
    let forged = fx.dir.join("forged.session");
    let saved = fx.dir.join("TLS-1.3-ticket.session");
    let mut bytes = std::fs::read_to_string(&saved).unwrap();
    bytes = bytes.replace('A', "B");
    std::fs::write(&forged, bytes).unwrap();
    let fresh = session(tls, &ca, &[], &fx.dir.join("fresh.session"), Some(&forged));
    assert!(!fresh.contains("Reused"), "a forged session was resumed: {fresh}");
}
