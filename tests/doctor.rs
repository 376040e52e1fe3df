//! `flowgate doctor` against real load balancers on loopback: flowgate's
//! proxy, and Debian's nginx configured by `flowgate export nginx`, as
//! exported and then broken one rule at a time. Each broken setup must fail
//! and name the rule it breaks, and only that rule.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use common::*;

/// The doctor's verdict: exit success and each check's status.
struct Verdict {
    passed: bool,
    statuses: BTreeMap<String, String>,
    stderr: String,
    report: serde_json::Value,
}

impl Verdict {
    fn status(&self, id: &str) -> &str {
        self.statuses.get(id).map(String::as_str).unwrap_or("missing")
    }

    fn failed(&self) -> Vec<&str> {
        self.statuses
            .iter()
            .filter(|(_, s)| *s == "fail")
            .map(|(id, _)| id.as_str())
            .collect()
    }
}

/// The doctor's arguments for https://flow.test:`https` served on
/// loopback, `mc` being the MC URL and any more arguments.
fn doctor_args(ca: &Path, http: u16, https: u16, mc: &[String], idle_wait: &str) -> Vec<String> {
    let mut args: Vec<String> = [
        "--url",
        &format!("https://flow.test:{https}"),
        "--ca",
        ca.to_str().unwrap(),
        "--resolve",
        &format!("flow.test:{https}:127.0.0.1"),
        "--http-port",
        &http.to_string(),
        "--idle-wait",
        idle_wait,
        "--mc-url",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(mc.iter().cloned());
    args
}

fn doctor(args: &[String]) -> Verdict {
    let out: Output = Command::new(BIN)
        .arg("doctor")
        .args(args)
        .arg("--json")
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let statuses = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_string(),
                c["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    Verdict {
        passed: out.status.success(),
        statuses,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        report,
    }
}

/// Flow simulators, an MC simulator allowing `origin` and one allowing
/// another origin, on kernel-chosen ports.
struct Backends {
    flow: Vec<std::net::SocketAddr>,
    mc_right: String,
    mc_wrong: String,
}

fn backends(fx: &mut Fixture, origin: &str) -> Backends {
    let flow = vec![fx.sim_flow("flow-1"), fx.sim_flow("flow-2")];
    let mc = |fx: &mut Fixture, name: &str, allowed: &str| {
        fx.start(
            name,
            &["sim", "mc", "--listen", "127.0.0.1:0", "--flow-addresses", allowed],
            &["listening on http://"],
        )[0]
        .clone()
    };
    Backends {
        flow,
        mc_right: mc(fx, "mc-right", origin),
        mc_wrong: mc(fx, "mc-wrong", "https://elsewhere.example"),
    }
}

#[test]
fn doctor_passes_flowgate_proxy_and_names_a_wrong_mc_origin() {
    let mut fx = Fixture::new("doctor-flowgate");
    let pki = Pki::new(&fx.dir);
    pki.issue("flow", &["flow.test"], 30);
    let (http, https) = (free_port(), free_port());
    let origin = format!("https://flow.test:{https}");
    let b = backends(&mut fx, &origin);
    // flowgate's proxy with TLS from files, routing flow.test only.
    let proxy = |fx: &mut Fixture, name: &str, http: u16, https: u16, routes: &[&str]| {
        let state = fx.dir.join(format!("{name}-state"));
        let (cert, key) = (pki.path("flow.pem"), pki.path("flow.key"));
        let (flow1, flow2) = (b.flow[0].to_string(), b.flow[1].to_string());
        let (http, https) = (format!("127.0.0.1:{http}"), https.to_string());
        let tls = format!("127.0.0.1:{https}");
        let mut args = vec!["proxy", "--listen", &http, "--tls", "files", "--tls-listen", &tls];
        args.extend(["--cert", cert.to_str().unwrap(), "--key", key.to_str().unwrap()]);
        args.extend(["--backend", &flow1, "--backend", &flow2, "--admin", "127.0.0.1:0"]);
        args.extend(["--forwarded-proto", "https", "--forwarded-port", &https]);
        args.extend(["--state-dir", state.to_str().unwrap()]);
        args.extend(routes);
        fx.start(name, &args, &["listening on https://"]);
    };
    proxy(&mut fx, "proxy", http, https, &["--domain", "flow.test"]);
    let ca = pki.path("ca.pem");
    let right = [format!("http://{}", b.mc_right)];
    let verdict = doctor(&doctor_args(&ca, http, https, &right, "7s"));
    assert!(verdict.passed, "{:#}\n{}", verdict.report, verdict.stderr);
    assert!(verdict.statuses.values().all(|s| s == "pass"), "{:#}", verdict.report);

    // Without a host rule every name reaches Flow.
    let (http_any, https_any) = (free_port(), free_port());
    proxy(&mut fx, "proxy-any-host", http_any, https_any, &[]);
    let origin_any = format!("https://flow.test:{https_any}");
    let mc_any = fx.start(
        "mc-any",
        &["sim", "mc", "--listen", "127.0.0.1:0", "--flow-addresses", &origin_any],
        &["listening on http://"],
    );
    let verdict = doctor(&doctor_args(
        &ca,
        http_any,
        https_any,
        &[format!("http://{}", mc_any[0])],
        "1s",
    ));
    assert_eq!(verdict.failed(), ["host-routing"], "{:#}", verdict.report);

    let wrong = [format!("http://{}", b.mc_wrong)];
    let verdict = doctor(&doctor_args(&ca, http, https, &wrong, "1s"));
    assert!(!verdict.passed);
    assert_eq!(verdict.failed(), ["mc-cors"], "{:#}", verdict.report);
    assert!(verdict.stderr.contains("mc-cors"), "{}", verdict.stderr);
    let check = &verdict.report["checks"].as_array().unwrap().last().unwrap().clone();
    assert!(
        check["observed"]
            .as_str()
            .unwrap()
            .contains("no Access-Control-Allow-Origin"),
        "{check:#}"
    );
    assert!(
        check["fix"]["nginx"]
            .as_str()
            .unwrap()
            .contains("hazelcast.mc.flow.addresses="),
        "{check:#}"
    );
}

/// Starts Debian's nginx on `conf`: one process in the foreground, so that
/// killing it (or the fixture ending) leaves no worker behind.
fn start_nginx(fx: &mut Fixture, name: &str, conf: &Path, port: u16) {
    let dir = conf.parent().unwrap().to_str().unwrap().to_string();
    let nginx = if Path::new("/usr/sbin/nginx").exists() {
        "/usr/sbin/nginx"
    } else {
        "nginx"
    };
    fx.start_program(
        name,
        nginx,
        &[
            "-c",
            conf.to_str().unwrap(),
            "-p",
            &dir,
            "-g",
            &format!("daemon off; master_process off; pid {dir}/{name}.pid;"),
        ],
        &[],
    );
    wait_for_port(port);
}

#[test]
fn doctor_passes_nginx_from_export_and_fails_each_broken_rule() {
    let mut fx = Fixture::new("doctor-nginx");
    let pki = Pki::new(&fx.dir);
    pki.issue("flow", &["flow.test", "mc.flow.test"], 30);
    let (http, https) = (free_port(), free_port());
    let origin = format!("https://flow.test:{https}");
    let b = backends(&mut fx, &origin);
    let settings = fx.dir.join("flowgate.toml");
    std::fs::write(
        &settings,
        format!(
            "project = \"ngx\"\nprofile = \"demo\"\ndomain = \"flow.test\"\nhttp_port = {http}\nhttps_port = {https}\n\
             [tls]\nmode = \"files\"\ncert = \"{}\"\nkey = \"{}\"\n",
            pki.path("flow.pem").display(),
            pki.path("flow.key").display()
        ),
    )
    .unwrap();
    let export = |mc: &str, out: &Path| {
        let (flow1, flow2) = (b.flow[0].to_string(), b.flow[1].to_string());
        let result = Command::new(BIN)
            .args(["--config", settings.to_str().unwrap(), "export", "nginx"])
            .args(["--flow-address", &flow1, "--flow-address", &flow2, "--mc-address", mc])
            .args(["--image", "flowgate:test", "--out", out.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
        // The export listens on every interface, as a balancer does; the
        // test keeps to loopback.
        let conf = out.join("nginx.conf");
        let text = std::fs::read_to_string(&conf).unwrap();
        assert!(text.contains(&format!("listen {https} ssl http2;")), "{text}");
        let text = text.replace("listen ", "listen 127.0.0.1:");
        std::fs::write(&conf, text).unwrap();
        conf
    };
    let ca = pki.path("ca.pem");
    let mc = [
        format!("https://mc.flow.test:{https}"),
        "--resolve".into(),
        format!("mc.flow.test:{https}:127.0.0.1"),
    ];
    let run = |idle_wait: &str| doctor(&doctor_args(&ca, http, https, &mc, idle_wait));

    // As exported: every rule holds.
    let conf = export(&b.mc_right, &fx.dir.join("exported"));
    start_nginx(&mut fx, "nginx", &conf, https);
    let verdict = run("7s");
    assert!(verdict.passed, "{:#}\n{}", verdict.report, verdict.stderr);
    assert!(verdict.statuses.values().all(|s| s == "pass"), "{:#}", verdict.report);
    let checks = verdict.report["checks"].as_array().unwrap();
    let measured = |id: &str| checks.iter().find(|c| c["id"] == id).unwrap()["measured"].clone();
    // No idle timeout within the wait, and both instances answered.
    assert!(measured("idle-timeout")["idle_timeout_s"].is_null(), "{checks:#?}");
    assert_eq!(
        measured("instances")["requests_per_instance"]
            .as_object()
            .unwrap()
            .len(),
        2,
        "{checks:#?}"
    );
    fx.kill("nginx");

    // Without the Upgrade and Connection headers: the handshake fails.
    let text = std::fs::read_to_string(&conf).unwrap();
    let broken: String = text
        .lines()
        .filter(|l| !l.contains("proxy_set_header Upgrade") && !l.contains("proxy_set_header Connection"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&conf, broken).unwrap();
    start_nginx(&mut fx, "nginx-no-upgrade", &conf, https);
    let verdict = run("7s");
    assert!(!verdict.passed);
    assert_eq!(verdict.failed(), ["websocket-upgrade"], "{:#}", verdict.report);
    assert_eq!(verdict.status("idle-timeout"), "skip");
    assert!(verdict.stderr.contains("websocket-upgrade"), "{}", verdict.stderr);
    fx.kill("nginx-no-upgrade");

    // A read timeout below the heartbeat: the idle timeout is found, and
    // the heartbeating session dies with it.
    std::fs::write(&conf, text.replace("proxy_read_timeout 3600s", "proxy_read_timeout 3s")).unwrap();
    start_nginx(&mut fx, "nginx-short-timeout", &conf, https);
    let verdict = run("20s");
    assert_eq!(
        verdict.failed(),
        ["heartbeat-session", "idle-timeout"],
        "{:#}",
        verdict.report
    );
    let idle = verdict.report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "idle-timeout")
        .unwrap()
        .clone();
    let observed = idle["observed"].as_str().unwrap();
    assert!(observed.contains("closed after 3."), "{observed}");
    let found = idle["measured"]["idle_timeout_s"].as_f64().unwrap();
    assert!((2.9..4.0).contains(&found), "{idle:#}");
    assert!(
        idle["fix"]["nginx"]
            .as_str()
            .unwrap()
            .contains("proxy_read_timeout 3600s")
    );
    fx.kill("nginx-short-timeout");

    // MC allowing another origin: only the CORS rule fails.
    let conf = export(&b.mc_wrong, &fx.dir.join("wrong-mc"));
    start_nginx(&mut fx, "nginx-wrong-mc", &conf, https);
    let verdict = run("1s");
    assert_eq!(verdict.failed(), ["mc-cors"], "{:#}", verdict.report);
}
