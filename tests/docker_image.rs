//! flowgate's image, built on the real Docker engine from the flowgate
//! binary: it runs, its simulators answer, and it is rebuilt only when the
//! binary changes. Under CI (CI=true) a missing Docker engine fails the test.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// The Docker client; the test fails with a sentence when there is no engine.
fn docker() -> bollard::Docker {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime
        .block_on(flowgate::deploy::connect())
        .unwrap_or_else(|e| panic!("this test needs a Docker engine: {e}"))
}

/// Removes a container by name when dropped, however the test ends.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

#[test]
fn docker_the_image_is_built_from_the_binary_runs_and_is_reused() {
    let docker = docker();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let binary = std::path::Path::new(BIN);
    let mut lines = Vec::new();
    let tag = runtime
        .block_on(flowgate::deploy::image::ensure(&docker, binary, |line| {
            lines.push(line.to_string())
        }))
        .unwrap();
    assert!(tag.starts_with("flowgate:"), "{tag}");

    // The binary runs inside the image (its libraries came along).
    let out = run(Command::new("docker").args(["run", "--rm", &tag, "--version"]));
    assert!(out.starts_with("flowgate "), "{out}");

    // A simulator in the image answers on a published loopback port.
    let name = format!("flowgate-test-image-{}", std::process::id());
    let _cleanup = Container(name.clone());
    let port = free_port();
    run(Command::new("docker")
        .args([
            "run",
            "-d",
            "--name",
            &name,
            "-p",
            &format!("127.0.0.1:{port}:9021"),
            &tag,
        ])
        .args(["sim", "flow", "--name", "flow-in-docker"]));
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_for(Duration::from_secs(20), || {
        try_get(addr, "/api/actuator/health").is_some_and(|r| r.status == 200)
    });
    assert_eq!(get(addr, "/api/sim/whoami", None).json()["instance"], "flow-in-docker");

    // Same binary: same tag, no build.
    let started = Instant::now();
    let mut rebuilt = false;
    let again = runtime
        .block_on(flowgate::deploy::image::ensure(&docker, binary, |_| rebuilt = true))
        .unwrap();
    assert_eq!(again, tag);
    assert!(!rebuilt, "the image was built again for the same binary");
    eprintln!("image check without a build took {:?}", started.elapsed());
}
