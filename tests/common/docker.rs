//! Docker for the end-to-end tests: a project of the test's own, taken
//! down with its volumes when dropped. A test that needs Docker fails, with
//! a sentence, when there is none: it never passes by skipping.

use std::path::PathBuf;
use std::process::{Command, Output};

use super::{BIN, Fixture};

/// Fails the test with a sentence when there is no Docker engine
/// (`FLOWGATE_SKIP_DOCKER=1 tests/run` leaves out the tests named docker_*).
pub fn require_docker() {
    let info = Command::new("docker").arg("info").output();
    match info {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "this test needs a Docker engine, and `docker info` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => panic!("this test needs a Docker engine, and the docker command cannot run: {e}"),
    }
}

/// flowgate's image of this build (made when missing); Docker required.
pub fn flowgate_image() -> String {
    require_docker();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let docker = runtime.block_on(flowgate::deploy::connect()).unwrap();
    runtime
        .block_on(flowgate::deploy::image::ensure(
            &docker,
            std::path::Path::new(BIN),
            |_| {},
        ))
        .unwrap()
}

/// A fixture and a project of the test's own (Docker required).
pub fn project_for(test: &str) -> (Fixture, Project) {
    require_docker();
    let fx = Fixture::new(&format!("deploy-{test}"));
    let project = Project::new(&fx, test);
    (fx, project)
}

/// A project of its own, taken down (with its volumes) when dropped.
pub struct Project {
    pub name: String,
    pub state: PathBuf,
}

impl Project {
    pub fn new(fx: &Fixture, test: &str) -> Project {
        Project {
            name: format!("fgtest-{test}-{}", std::process::id()),
            state: fx.dir.join("xdg"),
        }
    }

    /// `flowgate ARGS --project NAME`, with the project's own state dir.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .args(["--project", &self.name])
            .env("XDG_STATE_HOME", &self.state)
            .env("NO_COLOR", "1")
            .stdin(std::process::Stdio::null());
        command
    }

    pub fn flowgate(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// `up --demo` with `instances` Flow instances on the given host ports.
    pub fn up_demo(&self, instances: &str, http: &str, https: &str) -> Output {
        self.flowgate(&[
            "up",
            "--demo",
            "--instances",
            instances,
            "--http-port",
            http,
            "--https-port",
            https,
        ])
    }

    /// `up --demo` that must succeed.
    pub fn up_demo_ok(&self, instances: u32, http: u16, https: u16) -> String {
        succeeded(
            self.up_demo(&instances.to_string(), &http.to_string(), &https.to_string()),
            "flowgate up --demo",
        )
    }

    pub fn ok(&self, args: &[&str]) -> String {
        succeeded(self.flowgate(args), &format!("flowgate {args:?}"))
    }

    pub fn ca(&self) -> PathBuf {
        self.state.join("flowgate/projects").join(&self.name).join("ca.pem")
    }

    pub fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["status", "--json"])).unwrap()
    }

    pub fn labelled(&self, kind: &str) -> usize {
        let out = Command::new("docker")
            .args([
                kind,
                "ls",
                "-q",
                "--filter",
                &format!("label=io.flowgate.project={}", self.name),
            ])
            .args(if kind == "container" { vec!["-a"] } else { vec![] })
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).lines().count()
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = self.flowgate(&["down", "--volumes"]);
    }
}

/// The standard output of a run that must have succeeded.
pub fn succeeded(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
