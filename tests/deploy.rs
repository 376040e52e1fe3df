//! The deployment commands on the real Docker engine: up, HTTPS through the
//! published port, scale under load, a killed instance, status from labels,
//! and down. Each test uses its own project and takes it down even when it
//! fails. Under CI (CI=true) a missing Docker engine fails the test.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::docker::*;
use common::*;

fn whoami_over_https(port: u16, ca: &Path) -> String {
    let out = run(Command::new("curl")
        .args([
            "-s",
            "--cacert",
            ca.to_str().unwrap(),
            "--resolve",
            &format!("flow.localhost:{port}:127.0.0.1"),
        ])
        .arg(format!("https://flow.localhost:{port}/api/sim/whoami")));
    let json: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(json["headers"]["x-forwarded-proto"], "https");
    json["instance"].as_str().unwrap().to_string()
}

/// `sessions` heartbeating sessions (reconnecting when closed) and `rps`
/// requests a second through a demo deployment for `duration`, once every
/// session is open.
fn sessions_through(
    project: &Project,
    https: u16,
    sessions: u32,
    rps: u32,
    duration: &str,
) -> std::thread::JoinHandle<serde_json::Value> {
    let load = load_through(project, https)
        .sessions(sessions, "1s")
        .rps(rps)
        .duration(duration)
        .flag("--reconnect")
        .spawn();
    wait_for(Duration::from_secs(20), || {
        project.status()["totals"]["ws_active"].as_u64() == Some(u64::from(sessions))
    });
    load
}

/// Load through a demo deployment's HTTPS port, trusting its local CA.
fn load_through(project: &Project, https: u16) -> Load {
    Load::to("127.0.0.1:1".parse().unwrap())
        .set("--url", &format!("https://flow.localhost:{https}"))
        .set("--resolve", &format!("flow.localhost:{https}:127.0.0.1"))
        .set("--ca", project.ca().to_str().unwrap())
}

#[test]
fn docker_up_scale_kill_status_and_down_on_the_real_engine() {
    let (_fx, project) = project_for("deploy");
    let (http, https) = (free_port(), free_port());
    let (http_s, https_s) = (http.to_string(), https.to_string());
    let out = succeeded(project.up_demo("3", &http_s, &https_s), "up --demo");
    assert!(out.contains(&format!("Flow: https://flow.localhost:{https}/")), "{out}");

    // HTTPS through the published port reaches all three instances.
    let seen: std::collections::BTreeSet<String> = (0..12).map(|_| whoami_over_https(https, &project.ca())).collect();
    assert_eq!(seen.len(), 3, "{seen:?}");
    let status = project.status();
    assert_eq!(status["instances"].as_array().unwrap().len(), 3);
    assert!(
        status["instances"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["health"] == "healthy"),
        "{status}"
    );
    assert_eq!(status["certificate"]["issuer"], "flowgate local CA");

    // The doctor, given nothing but the project, finds the deployment's
    // URLs, ports and local CA, and every rule of the guide honoured.
    let doctor = project.ok(&["doctor", "--idle-wait", "2s"]);
    assert!(
        doctor.contains(&format!("flowgate doctor https://flow.localhost:{https}")),
        "{doctor}"
    );
    assert!(doctor.contains("9 passed, 0 failed, 0 skipped"), "{doctor}");

    assert!(
        status["instances"][0]["memory_bytes"].as_u64().unwrap_or(0) > 0,
        "{status}"
    );

    // MC, on its own domain, answers the Flow origin's preflight.
    let preflight = run(Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-D",
            "-",
            "-X",
            "OPTIONS",
            "--cacert",
            project.ca().to_str().unwrap(),
        ])
        .args(["--resolve", &format!("mc.flow.localhost:{https}:127.0.0.1")])
        .args([
            "-H",
            &format!("Origin: https://flow.localhost:{https}"),
            "-H",
            "Access-Control-Request-Method: POST",
        ])
        .arg(format!("https://mc.flow.localhost:{https}/api/login")));
    assert!(
        preflight
            .to_ascii_lowercase()
            .contains(&format!("access-control-allow-origin: https://flow.localhost:{https}")),
        "{preflight}"
    );

    // The human table: one header, one row per instance, the same columns.
    let table = project.ok(&["status"]);
    let lines: Vec<&str> = table
        .lines()
        .filter(|l| l.starts_with("INSTANCE") || l.contains("-flow-"))
        .collect();
    assert_eq!(lines.len(), 4, "{table}");
    let columns = |l: &str| l.split_whitespace().count();
    assert!(lines[0].contains("CPU%") && lines[0].contains("RESTARTS"), "{table}");
    assert!(
        lines[1..].iter().all(|l| columns(l) == columns(lines[0]) + 1),
        "MEMORY is 'N MiB': {table}"
    );

    // Logs by short name.
    assert!(
        project
            .ok(&["logs", "flow-1"])
            .contains("listening on http://0.0.0.0:9021")
    );

    // `up` again changes nothing.
    let again = project.flowgate(&["up", "--demo"]);
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("is up to date"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    // Scale 3 -> 5 -> 2 under load: no failed request, no dropped session.
    let load = sessions_through(&project, https, 30, 50, "20s");
    project.ok(&["scale", "5"]);
    let five = project.status();
    assert_eq!(
        five["instances"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["health"] == "healthy")
            .count(),
        5,
        "{five}"
    );
    project.ok(&["scale", "2"]);
    let summary = load.join().unwrap();
    nothing_failed(&summary);
    assert!(
        summary["ws_closed_by_server"]["1001"].as_u64().unwrap_or(0) > 0,
        "drained sessions get 1001: {summary}"
    );
    assert_eq!(project.labelled("container"), 4, "proxy, mc and two instances");

    // A killed instance is restarted by Docker and serves again.
    let pid =
        run(Command::new("docker").args(["inspect", "-f", "{{.State.Pid}}", &format!("{}-flow-1", project.name)]));
    run(Command::new("kill").args(["-9", pid.trim()]));
    wait_for(Duration::from_secs(30), || {
        project.status()["instances"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["health"] == "healthy" && i["state"] == "running")
    });
    let seen: std::collections::BTreeSet<String> = (0..8).map(|_| whoami_over_https(https, &project.ca())).collect();
    assert_eq!(seen.len(), 2, "{seen:?}");
    let restarted = project.status();
    assert!(
        restarted["instances"][0]["restarts"].as_i64().unwrap() >= 1,
        "{restarted}"
    );

    // Down with volumes leaves nothing labelled with the project.
    project.ok(&["down", "--volumes"]);
    for kind in ["container", "network", "volume"] {
        assert_eq!(project.labelled(kind), 0, "{kind}s left behind");
    }
    let gone = project.flowgate(&["status"]);
    assert!(!gone.status.success());
}

#[test]
fn docker_a_taken_port_fails_clearly_and_leaves_nothing() {
    let (_fx, project) = project_for("errors");
    let taken = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let https = free_port().to_string();
    let out = project.up_demo("1", &port, &https);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("already taken") && stderr.contains(&port), "{stderr}");
    assert!(stderr.contains("rolling back"), "{stderr}");
    for kind in ["container", "network", "volume"] {
        assert_eq!(project.labelled(kind), 0, "{kind}s left behind after a failed up");
    }
}

#[test]
fn docker_the_real_profile_needs_a_licence_and_names_missing_images() {
    let (fx, project) = project_for("real");
    let (http, https) = (free_port().to_string(), free_port().to_string());
    let base = ["up", "--instances", "2", "--http-port", &http, "--https-port", &https];
    // No licence anywhere (the test runs in a directory without .env).
    let out = project
        .command(&base)
        .env_remove("MC_LICENSE")
        .current_dir(&fx.dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("MC_LICENSE") && stderr.contains("--demo"), "{stderr}");

    // A licence but no images here (and no pulling: tests stay on this machine).
    let mut no_pull = base.to_vec();
    no_pull.push("--no-pull");
    let out = project
        .command(&no_pull)
        .env("MC_LICENSE", "test-licence")
        .current_dir(&fx.dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("postgres:15") && stderr.contains("docker load"),
        "{stderr}"
    );
    for kind in ["container", "network", "volume"] {
        assert_eq!(project.labelled(kind), 0, "{kind}s left behind");
    }
    // The generated member list is there for the operator to read.
    let yml = std::fs::read_to_string(
        project
            .state
            .join("flowgate/projects")
            .join(&project.name)
            .join("hazelcast.yml"),
    )
    .unwrap();
    assert!(yml.contains(&format!("{}-flow-2:25701", project.name)), "{yml}");
}

#[test]
fn docker_a_foreign_container_with_our_name_is_left_alone_and_explained() {
    let (_fx, project) = project_for("clash");
    // Someone else's container, without flowgate's labels, holds the proxy's name.
    let image = flowgate_image();
    let foreign = format!("{}-proxy", project.name);
    struct Remove(String);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
        }
    }
    let _cleanup = Remove(foreign.clone());
    run(Command::new("docker").args(["create", "--name", &foreign, &image, "--version"]));

    let (http, https) = (free_port().to_string(), free_port().to_string());
    let out = project.up_demo("1", &http, &https);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("already exists but is not part of this deployment"),
        "{stderr}"
    );
    for kind in ["container", "network", "volume"] {
        assert_eq!(project.labelled(kind), 0, "{kind}s left behind");
    }
    let still = run(Command::new("docker").args(["inspect", "-f", "{{.Name}}", &foreign]));
    assert_eq!(
        still.trim(),
        format!("/{foreign}"),
        "the foreign container must survive"
    );
}

/// The section names of a 64-bit little-endian ELF file.
fn section_names(elf: &[u8]) -> Vec<String> {
    assert_eq!(&elf[..4], b"\x7fELF", "not an ELF file");
    let u16_at = |at: usize| u16::from_le_bytes([elf[at], elf[at + 1]]) as usize;
    let u64_at = |at: usize| u64::from_le_bytes(elf[at..at + 8].try_into().unwrap()) as usize;
    let (table, size, count, names) = (u64_at(0x28), u16_at(0x3a), u16_at(0x3c), u16_at(0x3e));
    let header = |i: usize| table + i * size;
    let strings = u64_at(header(names) + 0x18);
    (0..count)
        .map(|i| {
            let start = strings + u32::from_le_bytes(elf[header(i)..header(i) + 4].try_into().unwrap()) as usize;
            let end = start + elf[start..].iter().position(|&b| b == 0).unwrap();
            String::from_utf8_lossy(&elf[start..end]).into_owned()
        })
        .collect()
}

/// `up` stopped at a volume of its name it did not make.
fn refused_foreign_volume(out: &std::process::Output, volume: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("a volume named {volume} exists but flowgate did not make it")),
        "{stderr}"
    );
}

/// `docker inspect` of one container, as JSON.
fn inspect(name: &str) -> serde_json::Value {
    let out = run(Command::new("docker").args(["inspect", name]));
    serde_json::from_str::<serde_json::Value>(&out).unwrap()[0].clone()
}

/// A volume made here, outside flowgate, removed when dropped.
struct Volume(String);

impl Volume {
    fn new(name: &str, labels: &[&str]) -> Volume {
        let mut command = Command::new("docker");
        command.args(["volume", "create"]);
        for label in labels {
            command.args(["--label", label]);
        }
        run(command.arg(name));
        Volume(name.to_string())
    }

    fn path(&self) -> std::path::PathBuf {
        run(Command::new("docker").args(["volume", "inspect", "-f", "{{.Mountpoint}}", &self.0]))
            .trim()
            .into()
    }

    fn exists(&self) -> bool {
        Command::new("docker")
            .args(["volume", "inspect", &self.0])
            .output()
            .unwrap()
            .status
            .success()
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["volume", "rm", "-f", &self.0]).output();
    }
}

#[test]
fn docker_the_demo_runs_unprivileged_on_loopback_from_a_stripped_image() {
    let (_fx, project) = project_for("confined");
    let (http, https) = (free_port(), free_port());
    project.up_demo_ok(1, http, https);
    for role in ["proxy", "flow-1", "mc"] {
        let c = inspect(&format!("{}-{role}", project.name));
        let host = &c["HostConfig"];
        assert_eq!(c["Config"]["User"], "65532:65532", "{role}");
        assert_eq!(host["CapDrop"], serde_json::json!(["ALL"]), "{role}");
        assert!(host["CapAdd"].is_null(), "{role}: {}", host["CapAdd"]);
        assert_eq!(
            host["SecurityOpt"],
            serde_json::json!(["no-new-privileges:true"]),
            "{role}"
        );
        assert_eq!(host["ReadonlyRootfs"], true, "{role}");
        assert!(host["Memory"].as_i64().unwrap() > 0, "{role}");
        assert!(host["PidsLimit"].as_i64().unwrap() > 0, "{role}");
    }
    let proxy = inspect(&format!("{}-proxy", project.name));
    for port in ["80/tcp", "443/tcp", "9901/tcp"] {
        assert_eq!(
            proxy["HostConfig"]["PortBindings"][port][0]["HostIp"], "127.0.0.1",
            "{port}"
        );
    }
    // It serves, unprivileged, on the published port.
    assert!(whoami_over_https(https, &project.ca()).ends_with("-flow-1"));
    // The admin token is a file in the proxy's volume: in no environment,
    // label, command or host path Docker shows.
    let token = std::fs::read_to_string(project.ca().with_file_name("admin-token")).unwrap();
    assert!(token.trim().len() >= 32);
    assert!(
        !proxy.to_string().contains(token.trim()),
        "docker inspect shows the admin token"
    );

    // The binary in the image has no debug sections.
    let image = proxy["Config"]["Image"].as_str().unwrap().to_string();
    let holder = format!("{}-binary", project.name);
    run(Command::new("docker").args(["create", "--name", &holder, &image, "--version"]));
    let copied = _fx.dir.join("flowgate-in-image");
    let cp = Command::new("docker")
        .args([
            "cp",
            &format!("{holder}:/usr/local/bin/flowgate"),
            copied.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let _ = Command::new("docker").args(["rm", "-f", &holder]).output();
    assert!(cp.status.success(), "{}", String::from_utf8_lossy(&cp.stderr));
    let binary = std::fs::read(&copied).unwrap();
    let debug: Vec<String> = section_names(&binary)
        .into_iter()
        // .debug_gdb_scripts is a few loaded bytes naming gdb's pretty
        // printers, not debug info.
        .filter(|n| n.starts_with(".debug") && n != ".debug_gdb_scripts")
        .collect();
    assert!(
        debug.is_empty(),
        "the image's binary keeps its debug sections {debug:?} ({} MB)",
        binary.len() >> 20
    );
    assert!(binary.len() < std::fs::metadata(BIN).unwrap().len() as usize);

    // --bind publishes elsewhere, and the deployment keeps it.
    project.ok(&["up", "--demo", "--bind", "0.0.0.0"]);
    let proxy = inspect(&format!("{}-proxy", project.name));
    assert_eq!(proxy["HostConfig"]["PortBindings"]["443/tcp"][0]["HostIp"], "0.0.0.0");
    assert_eq!(
        proxy["HostConfig"]["PortBindings"]["9901/tcp"][0]["HostIp"],
        "127.0.0.1"
    );
    project.ok(&["scale", "2"]);
    let proxy = inspect(&format!("{}-proxy", project.name));
    assert_eq!(proxy["HostConfig"]["PortBindings"]["443/tcp"][0]["HostIp"], "0.0.0.0");
}

#[test]
fn docker_volumes_flowgate_did_not_make_are_never_used_or_removed() {
    let (fx, project) = project_for("foreign-volumes");
    let (http, https) = (free_port().to_string(), free_port().to_string());
    // Someone else's volume with the name of the proxy's state volume.
    let certs = Volume::new(&format!("{}-certs", project.name), &[]);
    std::fs::write(certs.path().join("marker"), "theirs").unwrap();
    let out = project.up_demo("1", &http, &https);
    refused_foreign_volume(&out, &format!("{}-certs", project.name));
    assert_eq!(project.labelled("container"), 0);
    assert_eq!(std::fs::read_to_string(certs.path().join("marker")).unwrap(), "theirs");
    drop(certs);

    // A state volume an older flowgate made (labelled, files owned by root)
    // is handed to the unprivileged proxy, which keeps its CA.
    let old = Volume::new(
        &format!("{}-certs", project.name),
        &[&format!("io.flowgate.project={}", project.name)],
    );
    std::fs::write(old.path().join("old-state"), "root's").unwrap();
    // And a foreign volume with the database volume's name, which the demo does not use.
    let pgdata = Volume::new(&format!("{}-pgdata", project.name), &[]);
    std::fs::write(pgdata.path().join("marker"), "theirs").unwrap();
    // The real profile would use it for PostgreSQL: refused, before any image is looked for.
    let out = project
        .command(&[
            "up",
            "--instances",
            "1",
            "--http-port",
            &http,
            "--https-port",
            &https,
            "--no-pull",
        ])
        .env("MC_LICENSE", "test-licence")
        .current_dir(&fx.dir)
        .output()
        .unwrap();
    refused_foreign_volume(&out, &format!("{}-pgdata", project.name));
    succeeded(project.up_demo("1", &http, &https), "flowgate up --demo");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(old.path().join("old-state")).unwrap().uid(), 65532);
    assert_eq!(std::fs::metadata(old.path().join("ca-key.pem")).unwrap().uid(), 65532);

    let out = project.flowgate(&["down", "--volumes"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("left the volume {}-pgdata alone", project.name)),
        "{stderr}"
    );
    assert!(!old.exists(), "flowgate's own volume must go");
    assert!(pgdata.exists());
    assert_eq!(std::fs::read_to_string(pgdata.path().join("marker")).unwrap(), "theirs");
}

#[test]
fn docker_rebalance_spreads_the_sessions_onto_a_new_instance() {
    let (_fx, project) = project_for("rebalance");
    let (http, https) = (free_port(), free_port());
    project.up_demo_ok(3, http, https);
    let load = sessions_through(&project, https, 90, 20, "40s");
    project.ok(&["scale", "4"]);
    let out = project.ok(&["rebalance", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let counts = rebalanced_counts(&report);
    assert_eq!(counts.len(), 4, "{report}");
    // 90 over 4: 22.5 each, within 10 % (or one session).
    assert!(counts.iter().all(|c| (*c as f64 - 22.5).abs() <= 2.25), "{report}");
    let summary = load.join().unwrap();
    nothing_failed(&summary);
    assert_eq!(summary["ws_closed_by_server"]["1012"], report["moved"], "{summary}");
}

/// Containers and a network made by a test, removed when dropped.
struct Made {
    image: String,
    containers: Vec<String>,
    network: String,
}

impl Made {
    /// A network of its own (`tag`), removed with whatever runs on it.
    fn network(tag: &str) -> Made {
        let made = Made {
            image: flowgate_image(),
            containers: Vec::new(),
            network: tag.into(),
        };
        run(Command::new("docker").args([
            "network",
            "create",
            "--label",
            &format!("io.flowgate.project={tag}"),
            tag,
        ]));
        made
    }

    /// Runs `image_args` of flowgate's image as the container `name` on the
    /// network, `docker` adding to `docker run`; removed when dropped.
    fn start(&mut self, name: &str, docker: &[&str], image_args: &[&str]) {
        run(Command::new("docker")
            .args(["run", "-d", "--name", name, "--network", &self.network])
            .args(docker)
            .arg(&self.image)
            .args(image_args));
        self.containers.push(name.to_string());
    }

    /// A simulator calling itself `sim-<n>` under the network alias `flowsims`.
    fn sim(&mut self, n: u32) -> String {
        let name = format!("{}-sim-{n}", self.network);
        let sim = format!("sim-{n}");
        self.start(
            &name,
            &["--network-alias", "flowsims"],
            &["sim", "flow", "--listen", "0.0.0.0:9021", "--name", &sim],
        );
        name
    }

    /// A proxy that follows `flowsims:9021`, its port 80 published on
    /// loopback; `docker` and `proxy` add arguments to each.
    fn proxy(&mut self, docker: &[&str], proxy: &[&str]) -> (String, std::net::SocketAddr) {
        let name = format!("{}-proxy", self.network);
        let docker: Vec<&str> = ["-p", "127.0.0.1::80"].iter().chain(docker).copied().collect();
        let args: Vec<&str> = ["proxy", "--listen", "0.0.0.0:80", "--discover", "flowsims:9021"]
            .iter()
            .chain(proxy)
            .copied()
            .collect();
        self.start(&name, &docker, &args);
        (name.clone(), published(&name, 80))
    }

    /// A container's address on the network.
    fn address(&self, container: &str) -> String {
        let template = format!(
            "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
            self.network
        );
        run(Command::new("docker").args(["inspect", "-f", &template, container]))
            .trim()
            .to_string()
    }
}

/// Where a container's port is published on loopback.
fn published(container: &str, port: u16) -> std::net::SocketAddr {
    run(Command::new("docker").args(["port", container, &port.to_string()]))
        .lines()
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

impl Drop for Made {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = Command::new("docker").args(["rm", "-f", c]).output();
        }
        let _ = Command::new("docker").args(["network", "rm", &self.network]).output();
    }
}

fn instances(names: &[&str]) -> std::collections::BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

#[test]
fn docker_the_proxy_follows_a_name_adding_and_draining_instances_without_failures() {
    let mut made = Made::network(&format!("fgtest-discover-{}", std::process::id()));
    let first = made.sim(1);
    made.sim(2);
    let (_, addr) = made.proxy(&[], &["--admin", "off"]);
    wait_for(Duration::from_secs(20), || {
        whoami_instances(&addr.to_string(), 10) == instances(&["sim-1", "sim-2"])
    });

    let load = Load::to(addr)
        .sessions(20, "1s")
        .rps(100)
        .duration("20s")
        .flag("--reconnect")
        .spawn();
    // A third container with the name: the proxy adds it by itself.
    made.sim(3);
    wait_for(Duration::from_secs(10), || {
        whoami_instances(&addr.to_string(), 12) == instances(&["sim-1", "sim-2", "sim-3"])
    });
    // One goes away under load: drained, no request fails, no session is cut.
    run(Command::new("docker").args(["stop", "-t", "2", &first]));
    wait_for(Duration::from_secs(10), || {
        whoami_instances(&addr.to_string(), 12) == instances(&["sim-2", "sim-3"])
    });
    nothing_failed(&load.join().unwrap());
    drop(made);
}

#[test]
fn docker_a_found_instance_drained_through_the_admin_api_stays_out_until_its_name_goes_or_for_30_s() {
    let mut made = Made::network(&format!("fgtest-withdraw-{}", std::process::id()));
    let first = made.sim(1);
    made.sim(2);
    let fx = Fixture::new("withdraw");
    let token = "withdraw-test-token-0123456789abcdef";
    let token_file = fx.dir.join("token");
    std::fs::write(&token_file, token).unwrap();
    let mount = format!("{}:/run/token:ro", token_file.display());
    let (proxy, addr) = made.proxy(
        &["-p", "127.0.0.1::9901", "-v", &mount],
        &["--admin", "0.0.0.0:9901", "--admin-token-file", "/run/token"],
    );
    let admin = Proxy {
        addr,
        admin: published(&proxy, 9901),
        token: token.into(),
    };
    let both = instances(&["sim-1", "sim-2"]);
    wait_for(Duration::from_secs(20), || {
        whoami_instances(&addr.to_string(), 10) == both
    });
    let leaving = format!("{}:9021", made.address(&first));
    let state_of = |address: &str| -> Vec<String> {
        admin
            .backends()
            .iter()
            .filter(|b| b["address"] == address)
            .map(|b| b["state"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let drain = |what: &str| {
        let r = admin.admin("DELETE", &format!("/api/v1/backends/{leaving}?drain=1"), "");
        assert_eq!(r.status, 202, "{what}: {}", r.text());
    };

    // Drained while the name still gives its address (a task about to be
    // stopped): past its 1 s window and the checks that would make a new
    // backend healthy, it is still one draining backend that serves nothing.
    drain("the first drain");
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(8) {
        assert_eq!(state_of(&leaving), vec!["draining"], "found again while withdrawn");
        assert_eq!(whoami_instances(&addr.to_string(), 4), instances(&["sim-2"]));
        std::thread::sleep(Duration::from_millis(500));
    }
    // Its address goes: so does the backend.
    run(Command::new("docker").args(["network", "disconnect", &made.network, &first]));
    wait_for(Duration::from_secs(10), || state_of(&leaving).is_empty());

    // Back on the network it is found again; drained once more and left
    // running (Swarm stopped another task), it is given back after 30 s.
    run(Command::new("docker").args(["network", "connect", "--alias", "flowsims", &made.network, &first]));
    let leaving_now = format!("{}:9021", made.address(&first));
    assert_eq!(
        leaving_now, leaving,
        "the same address again (the network is otherwise idle)"
    );
    wait_for(Duration::from_secs(20), || {
        whoami_instances(&addr.to_string(), 10) == both
    });
    drain("the second drain");
    let drained = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(whoami_instances(&addr.to_string(), 4), instances(&["sim-2"]));
    wait_for(Duration::from_secs(45), || {
        whoami_instances(&addr.to_string(), 10) == both
    });
    let back = drained.elapsed();
    assert!(
        back >= Duration::from_secs(30),
        "given back after {back:?}, before its 30 s"
    );
    drop(made);
}

#[test]
fn docker_a_rolling_update_under_load_fails_no_request_and_cuts_no_session() {
    let (fx, project) = project_for("rolling");
    let (http, https) = (free_port(), free_port());
    let settings = fx.dir.join("flowgate.toml");
    let write = |memory: &str| {
        std::fs::write(
            &settings,
            format!(
                "profile = \"demo\"\ninstances = 3\nhttp_port = {http}\nhttps_port = {https}\n\n[resources]\nsimulator_memory = \"{memory}\"\n"
            ),
        )
        .unwrap()
    };
    write("256MiB");
    project.ok(&["--config", settings.to_str().unwrap(), "up"]);
    let before: Vec<String> = project.status()["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_string())
        .collect();
    let load = sessions_through(&project, https, 30, 50, "40s");
    // A changed setting replaces every Flow instance, one at a time, drained first.
    write("320MiB");
    let out = project.flowgate(&["--config", settings.to_str().unwrap(), "up"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.matches("replace ").count() >= 3, "{stderr}");
    let flow = inspect(&before[0]);
    assert_eq!(
        flow["HostConfig"]["Memory"],
        320 << 20,
        "the instance runs the new setting"
    );
    let summary = load.join().unwrap();
    let closed = nothing_failed(&summary);
    assert!(
        closed > 0,
        "the replaced instances' sessions were closed and reconnected: {summary}"
    );
}
