//! ACME against a real ACME server: Pebble, with pebble-challtestsrv as its
//! DNS. The proxy answers the challenges itself; clients trust Pebble's root.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use flowgate::websocket::frame::{self, Opcode};

const DOMAIN: &str = "flow.example.com";

struct AcmeProxy {
    proxy: Proxy,
    tls_port: u16,
}

/// A proxy in acme mode on fixed ports (Pebble must know them in advance).
fn acme_proxy(
    fx: &mut Fixture,
    name: &str,
    state: &Path,
    ports: (u16, u16),
    pebble: &Pebble,
    extra: &[&str],
) -> AcmeProxy {
    let backend = fx.sim_flow(&format!("{name}-flow")).to_string();
    let (http, tls) = (format!("127.0.0.1:{}", ports.0), format!("127.0.0.1:{}", ports.1));
    let ca = pebble.listener_ca.to_str().unwrap().to_string();
    let state_str = state.to_str().unwrap().to_string();
    let mut args = vec![
        "proxy",
        "--listen",
        &http,
        "--admin",
        "127.0.0.1:0",
        "--state-dir",
        &state_str,
        "--backend",
        &backend,
        "--tls",
        "acme",
        "--tls-listen",
        &tls,
        "--domain",
        DOMAIN,
        "--acme-directory",
        &pebble.directory,
        "--acme-ca",
        &ca,
        "--acme-email",
        "ops@example.com",
    ];
    args.extend_from_slice(extra);
    let found = fx.start(name, &args, &["listening on http://", "admin API on http://"]);
    let token = std::fs::read_to_string(state.join("admin-token"))
        .unwrap()
        .trim()
        .to_string();
    let proxy = Proxy {
        addr: found[0].parse().unwrap(),
        admin: found[1].parse().unwrap(),
        token,
    };
    proxy.wait_healthy(1);
    AcmeProxy {
        proxy,
        tls_port: ports.1,
    }
}

fn acme_certificate(proxy: &Proxy) -> Option<serde_json::Value> {
    proxy
        .admin_get("/api/v1/certificates")
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["source"] == "acme")
        .cloned()
}

fn wait_issued(proxy: &Proxy, timeout: Duration) -> serde_json::Value {
    let mut found = None;
    wait_for(timeout, || {
        found = acme_certificate(proxy);
        found.is_some()
    });
    found.unwrap()
}

fn curl_h2(tls_port: u16, root: &Path) -> String {
    run(Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{http_version}",
            "--cacert",
            root.to_str().unwrap(),
        ])
        .args(["--resolve", &format!("{DOMAIN}:{tls_port}:127.0.0.1")])
        .arg(format!("https://{DOMAIN}:{tls_port}/api/sim/whoami")))
}

#[test]
fn http01_issuance_serves_h2_and_a_restart_does_not_order_again() {
    let mut fx = Fixture::new("acme-http01");
    let ports = (free_port(), free_port());
    let pebble = fx.pebble(ports.0, ports.1, None, 0);
    let state = fx.dir.join("state");
    let started = Instant::now();
    let p = acme_proxy(&mut fx, "proxy", &state, ports, &pebble, &[]);
    let cert = wait_issued(&p.proxy, Duration::from_secs(30));
    eprintln!("issued over HTTP-01 in {:?}", started.elapsed());
    assert!(cert["issuer"].as_str().unwrap().contains("Pebble"), "{cert}");
    assert_eq!(cert["domains"], serde_json::json!([DOMAIN]));
    assert!(cert["next_renewal"].is_string());
    let root = fx.dir.join("pebble-root.pem");
    std::fs::write(&root, pebble.issuing_root()).unwrap();
    assert_eq!(curl_h2(p.tls_port, &root), "200 2");
    use std::os::unix::fs::PermissionsExt;
    for private in ["acme/account.json", "acme/key.pem"] {
        let mode = std::fs::metadata(state.join(private)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{private}");
    }

    // A restart serves the stored certificate and orders nothing.
    fx.kill("proxy");
    let p2 = acme_proxy(&mut fx, "proxy2", &state, ports, &pebble, &[]);
    let again = acme_certificate(&p2.proxy).expect("the stored certificate serves at once");
    assert_eq!(again["serial"], cert["serial"]);
    // The issuer has decided: the stored certificate is current.
    wait_for(Duration::from_secs(10), || {
        fx.log("proxy2").contains("is current; it renews at")
    });
    assert!(
        !fx.log("proxy2").contains("issued by"),
        "a restart ordered again: {}",
        fx.log("proxy2")
    );
    assert_eq!(curl_h2(p2.tls_port, &root), "200 2");
}

#[test]
fn tls_alpn01_issuance() {
    let mut fx = Fixture::new("acme-alpn");
    let ports = (free_port(), free_port());
    let pebble = fx.pebble(ports.0, ports.1, None, 0);
    let state = fx.dir.join("state");
    let p = acme_proxy(
        &mut fx,
        "proxy",
        &state,
        ports,
        &pebble,
        &["--acme-challenge", "tls-alpn-01", "--no-redirect"],
    );
    let cert = wait_issued(&p.proxy, Duration::from_secs(30));
    assert!(cert["issuer"].as_str().unwrap().contains("Pebble"));
    let root = fx.dir.join("pebble-root.pem");
    std::fs::write(&root, pebble.issuing_root()).unwrap();
    assert_eq!(curl_h2(p.tls_port, &root), "200 2");
}

#[test]
fn an_absent_then_flaky_acme_server_is_retried_until_it_issues() {
    let mut fx = Fixture::new("acme-flaky");
    let ports = (free_port(), free_port());
    // Pebble's address is known before it runs: point the proxy at it first.
    let acme_port = free_port();
    let fake = Pebble {
        directory: format!("https://localhost:{acme_port}/dir"),
        listener_ca: fx.dir.join("pebble/pki/ca.pem"),
        management: 0,
    };
    let state = fx.dir.join("state");
    let p = acme_proxy(&mut fx, "proxy", &state, ports, &fake, &[]);
    wait_for(Duration::from_secs(20), || {
        p.proxy.admin_get("/api/v1/certificates").as_array().unwrap().is_empty()
            && fx.log("proxy").contains("certificate not issued")
    });
    // Plain HTTP still works while there is no certificate.
    assert_eq!(
        get(p.proxy.addr, "/.well-known/acme-challenge/x", Some(DOMAIN)).status,
        404
    );
    // Now the server comes, rejecting a quarter of all nonces.
    let pebble = fx.pebble_at(acme_port, ports.0, ports.1, 25);
    let cert = wait_issued(&p.proxy, Duration::from_secs(60));
    assert!(cert["issuer"].as_str().unwrap().contains("Pebble"));
    let root = fx.dir.join("pebble-root.pem");
    std::fs::write(&root, pebble.issuing_root()).unwrap();
    assert_eq!(curl_h2(p.tls_port, &root), "200 2");
}

/// A WebSocket client over TLS (rustls, blocking).
struct WssClient {
    stream: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
}

impl WssClient {
    fn connect(port: u16, root_pem: &str) -> WssClient {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(root_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let conn = rustls::ClientConnection::new(Arc::new(config), DOMAIN.try_into().unwrap()).unwrap();
        let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        let key = flowgate::websocket::new_key();
        write!(
            stream,
            "GET /ws HTTP/1.1\r\nHost: {DOMAIN}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .unwrap();
        let head = read_head(&mut stream);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        WssClient { stream }
    }

    fn echo(&mut self, text: &str) -> String {
        self.stream
            .write_all(&frame::encode(Opcode::Text, true, text.as_bytes(), Some([1, 2, 3, 4])))
            .unwrap();
        let mut header = [0u8; 2];
        self.stream.read_exact(&mut header).unwrap();
        assert_eq!(header[0] & 0x0F, 0x1, "a text frame back");
        let mut payload = vec![0u8; (header[1] & 0x7F) as usize];
        self.stream.read_exact(&mut payload).unwrap();
        String::from_utf8(payload).unwrap()
    }
}

#[test]
fn renewal_swaps_the_certificate_while_a_websocket_session_stays_open() {
    let mut fx = Fixture::new("acme-renew");
    let ports = (free_port(), free_port());
    // 15 s certificates: renewal is due 10 s after issuance.
    let pebble = fx.pebble(ports.0, ports.1, Some(15), 0);
    let state = fx.dir.join("state");
    let p = acme_proxy(&mut fx, "proxy", &state, ports, &pebble, &[]);
    let first = wait_issued(&p.proxy, Duration::from_secs(30));
    let root = pebble.issuing_root();
    let mut session = WssClient::connect(p.tls_port, &root);
    assert_eq!(session.echo("before renewal"), "before renewal");
    wait_for(Duration::from_secs(40), || {
        acme_certificate(&p.proxy).is_some_and(|c| c["serial"] != first["serial"])
    });
    assert_eq!(
        session.echo("after renewal"),
        "after renewal",
        "the session survived the swap"
    );
    assert_eq!(p.proxy.total("ws_active"), 1);
    // New connections get the new certificate.
    let root_path = fx.dir.join("pebble-root.pem");
    std::fs::write(&root_path, &root).unwrap();
    assert_eq!(curl_h2(p.tls_port, &root_path), "200 2");
}

#[test]
fn cert_status_and_renew_commands_talk_to_the_running_proxy() {
    let mut fx = Fixture::new("acme-cli");
    let ports = (free_port(), free_port());
    let pebble = fx.pebble(ports.0, ports.1, None, 0);
    let state = fx.dir.join("state");
    let p = acme_proxy(&mut fx, "proxy", &state, ports, &pebble, &[]);
    let first = wait_issued(&p.proxy, Duration::from_secs(30));
    let cert = |args: &[&str]| {
        let out = Command::new(BIN)
            .arg("cert")
            .args(args)
            .arg("--state-dir")
            .arg(&state)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, _) = cert(&["status"]);
    assert!(ok);
    assert!(
        out.contains("flow.example.com (acme)") && out.contains("Pebble"),
        "{out}"
    );
    let (ok, out, _) = cert(&["status", "--json"]);
    assert!(ok);
    let parsed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(parsed[0]["serial"], first["serial"]);

    // Not due yet: nothing happens without --force.
    let (ok, out, _) = cert(&["renew"]);
    assert!(ok);
    assert!(out.contains("not due for renewal until"), "{out}");
    assert_eq!(acme_certificate(&p.proxy).unwrap()["serial"], first["serial"]);
    let (ok, out, err) = cert(&["renew", "--force", "--json"]);
    assert!(ok, "{err}");
    let renewed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_ne!(renewed["serial"], first["serial"]);

    // Without a running proxy: one sentence that says what to do.
    let (ok, _, err) = {
        let out = Command::new(BIN)
            .args(["cert", "status", "--state-dir"])
            .arg(fx.dir.join("nowhere"))
            .output()
            .unwrap();
        (
            out.status.success(),
            (),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert!(!ok);
    assert!(
        err.contains("no running proxy found") && err.contains("--state-dir"),
        "{err}"
    );
}

#[test]
fn a_refused_order_is_reported_and_retried_while_plain_http_keeps_serving() {
    let mut fx = Fixture::new("acme-refused");
    let ports = (free_port(), free_port());
    // Pebble validates HTTP-01 on a port where nothing listens.
    let pebble = fx.pebble(free_port(), ports.1, None, 0);
    let state = fx.dir.join("state");
    let p = acme_proxy(&mut fx, "proxy", &state, ports, &pebble, &[]);
    wait_for(Duration::from_secs(30), || {
        fx.log("proxy").contains("certificate not issued")
    });
    let log = fx.log("proxy");
    assert!(
        log.contains("did not validate") || log.contains("Connection refused") || log.contains("connection refused"),
        "{log}"
    );
    assert!(acme_certificate(&p.proxy).is_none());
    let (ok, _, err) = {
        let out = Command::new(BIN)
            .args(["cert", "renew", "--timeout", "5s", "--state-dir"])
            .arg(&state)
            .output()
            .unwrap();
        (
            out.status.success(),
            (),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert!(!ok);
    assert!(err.contains("renew"), "{err}");
    // Plain HTTP requests still reach Flow (here: redirected, as configured).
    assert_eq!(get(p.proxy.addr, "/api/sim/whoami", Some(DOMAIN)).status, 308);
}
