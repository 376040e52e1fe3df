//! `flowgate export`: compose's own validator accepts every export, the
//! examples in compose/ are what export writes today, and the demo compose
//! file runs on the Docker engine here and passes `flowgate doctor`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::docker::require_docker;
use common::*;

/// `docker-compose`, or the `docker compose` plugin.
fn compose(dir: &Path, project: &str) -> Command {
    let v1 = Command::new("docker-compose")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    let mut command = if v1 {
        Command::new("docker-compose")
    } else {
        let mut c = Command::new("docker");
        c.arg("compose");
        c
    };
    command
        .current_dir(dir)
        .args(["-p", project])
        .stdin(std::process::Stdio::null());
    command
}

fn export(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .env_remove("MC_LICENSE")
        // Away from any flowgate.toml of the checkout.
        .current_dir(std::env::temp_dir())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

fn ok(out: Output, what: &str) -> String {
    assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The examples: directory of compose/ and what it is an export of.
const EXAMPLES: [(&str, &str); 5] = [
    ("demo", "compose"),
    ("real", "compose"),
    ("traefik", "traefik"),
    ("nginx", "nginx"),
    ("stack", "stack"),
];

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("compose")
}

#[test]
fn the_compose_examples_are_what_export_writes() {
    let fx = Fixture::new("export-examples");
    for (dir, kind) in EXAMPLES {
        let example = examples_dir().join(dir);
        let out = fx.dir.join(dir);
        let settings = example.join("flowgate.toml");
        ok(
            export(
                &[
                    "--config",
                    settings.to_str().unwrap(),
                    "export",
                    kind,
                    "--image",
                    "flowgate:0.1.0",
                    "--out",
                    out.to_str().unwrap(),
                ],
                &[],
            ),
            dir,
        );
        for entry in std::fs::read_dir(&out).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap();
            let written = std::fs::read_to_string(&path).unwrap();
            let committed = std::fs::read_to_string(example.join(name)).unwrap_or_default();
            assert_eq!(
                written,
                committed,
                "compose/{dir}/{} is not what `flowgate --config compose/{dir}/flowgate.toml export {kind} --out compose/{dir}` writes now; run that and commit",
                name.to_string_lossy()
            );
        }
    }
}

#[test]
fn docker_compose_validates_every_export_and_secrets_must_come_from_the_environment() {
    require_docker();
    let fx = Fixture::new("export-validate");
    let secrets = [("MC_LICENSE", "test-licence"), ("POSTGRES_PASSWORD", "test-password")];
    for kind in ["compose", "traefik", "nginx"] {
        for profile in ["demo", "real"] {
            let out = fx.dir.join(format!("{kind}-{profile}"));
            let mut args = vec!["--project", "fgvalidate", "export", kind, "--image", "flowgate:test"];
            args.extend(["--domain", "flow.example.com", "--out", out.to_str().unwrap()]);
            if profile == "demo" {
                args.push("--demo");
            }
            ok(export(&args, &[]), &format!("export {kind} {profile}"));
            let check = compose(&out, "fgvalidate")
                .args(["config", "-q"])
                .envs(secrets)
                .output()
                .unwrap();
            assert!(
                check.status.success(),
                "{kind} {profile}: {}",
                String::from_utf8_lossy(&check.stderr)
            );
            if profile == "real" {
                // Without the secrets compose refuses, naming the one missing.
                let missing = compose(&out, "fgvalidate")
                    .args(["config", "-q"])
                    .env_remove("MC_LICENSE")
                    .env("POSTGRES_PASSWORD", "x")
                    .output()
                    .unwrap();
                assert!(
                    !missing.status.success(),
                    "{kind}: compose accepted a missing MC_LICENSE"
                );
                let stderr = String::from_utf8_lossy(&missing.stderr);
                assert!(stderr.contains("MC_LICENSE"), "{stderr}");
            }
        }
    }
}

/// Takes a compose project down with its volumes, even when the test fails.
struct Down<'a> {
    dir: &'a Path,
    project: String,
}

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = compose(self.dir, &self.project)
            .args(["down", "-v", "--remove-orphans"])
            .output();
    }
}

#[test]
fn docker_stack_validates_the_stack_export_whose_secrets_come_from_the_shell() {
    require_docker();
    let fx = Fixture::new("export-stack");
    for profile in ["demo", "real"] {
        let out = fx.dir.join(format!("stack-{profile}"));
        let mut args = vec!["--project", "fgvalidate", "export", "stack", "--image", "flowgate:test"];
        args.extend(["--domain", "flow.example.com", "--out", out.to_str().unwrap()]);
        if profile == "demo" {
            args.push("--demo");
        }
        ok(export(&args, &[]), &format!("export stack {profile}"));
        let config = |env: &[(&str, &str)]| {
            Command::new("docker")
                .args(["stack", "config", "-c", "docker-stack.yml"])
                .current_dir(&out)
                .env_remove("MC_LICENSE")
                .env_remove("POSTGRES_PASSWORD")
                .envs(env.iter().copied())
                .output()
                .unwrap()
        };
        let check = config(&[("MC_LICENSE", "test-licence"), ("POSTGRES_PASSWORD", "test-password")]);
        assert!(
            check.status.success(),
            "stack {profile}: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        let loaded = String::from_utf8_lossy(&check.stdout);
        assert!(
            loaded.contains("endpoint_mode: dnsrr") && loaded.contains("mode: host"),
            "{loaded}"
        );
        if profile == "real" {
            let missing = config(&[("POSTGRES_PASSWORD", "x")]);
            let stderr = String::from_utf8_lossy(&missing.stderr);
            assert!(!missing.status.success(), "docker stack accepted a missing MC_LICENSE");
            assert!(stderr.contains("export MC_LICENSE in the shell"), "{stderr}");
            let text = std::fs::read_to_string(out.join("docker-stack.yml")).unwrap();
            assert!(
                !text.contains("test-password") && !text.contains("test-licence"),
                "{text}"
            );
        }
    }
}

#[test]
fn docker_the_demo_compose_runs_here_and_passes_the_doctor() {
    require_docker();
    let fx = Fixture::new("export-up");
    let project = format!("fgexport-{}", std::process::id());
    let (http, https) = (free_port(), free_port());
    let out = fx.dir.join("demo");
    let written = ok(
        export(
            &[
                "--project",
                &project,
                "export",
                "compose",
                "--demo",
                "--instances",
                "2",
                "--http-port",
                &http.to_string(),
                "--https-port",
                &https.to_string(),
                "--out",
                out.to_str().unwrap(),
            ],
            &[],
        ),
        "export compose --demo",
    );
    assert!(
        written.contains("docker-compose.yml") && written.contains("proxy.toml"),
        "{written}"
    );
    let _down = Down {
        dir: &out,
        project: project.clone(),
    };
    let up = compose(&out, &project).args(["up", "-d"]).output().unwrap();
    assert!(
        up.status.success(),
        "compose up: {}",
        String::from_utf8_lossy(&up.stderr)
    );

    // The proxy makes its local CA at start; browsers (and the doctor) trust it.
    let ca = fx.dir.join("ca.pem");
    wait_for(Duration::from_secs(30), || {
        Command::new("docker")
            .args(["cp", &format!("{project}-proxy:/var/lib/flowgate/ca.pem")])
            .arg(&ca)
            .output()
            .is_ok_and(|o| o.status.success())
    });
    let url = format!("https://flow.localhost:{https}");
    let doctor = |idle_wait: &str| {
        Command::new(BIN)
            .args(["doctor", "--url", &url, "--ca", ca.to_str().unwrap()])
            .args(["--resolve", &format!("flow.localhost:{https}:127.0.0.1")])
            .args(["--resolve", &format!("mc.flow.localhost:{https}:127.0.0.1")])
            .args(["--mc-url", &format!("https://mc.flow.localhost:{https}")])
            .args(["--http-port", &http.to_string(), "--idle-wait", idle_wait])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    // The instances become healthy a moment after the proxy starts.
    wait_for(Duration::from_secs(30), || doctor("1s").status.success());
    let report = ok(doctor("7s"), "doctor on the demo compose deployment");
    assert!(
        report.contains("PASS  instances          12 requests reached 2 instances"),
        "{report}"
    );
    assert!(report.contains("9 passed, 0 failed, 0 skipped"), "{report}");
}
