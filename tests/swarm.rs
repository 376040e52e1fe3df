//! flowgate's proxy on a real two-node Docker Swarm (a second engine in a
//! network namespace, see `common::swarm`): Flow's stand-ins as a service in
//! dnsrr mode on both nodes, the proxy on the overlay following
//! `tasks.<service>` by itself. Needs root and Docker.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::docker::{Project, flowgate_image, project_for};
use common::swarm::Swarm;
use common::tmux::Tmux;
use common::*;

/// One swarm at a time: each test makes the main engine its manager.
fn one_swarm_at_a_time() -> MutexGuard<'static, ()> {
    static SWARM: Mutex<()> = Mutex::new(());
    SWARM.lock().unwrap_or_else(|e| e.into_inner())
}

/// Removes what the test made on the swarm when dropped (before the swarm goes).
struct Made {
    service: String,
    network: String,
    proxy: String,
}

impl Drop for Made {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.proxy]).output();
        let _ = Command::new("docker").args(["service", "rm", &self.service]).output();
        // The tasks' endpoints leave the network a moment after the service.
        for _ in 0..50 {
            let gone = Command::new("docker").args(["network", "rm", &self.network]).output();
            if gone.is_ok_and(|o| o.status.success()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn replicas(service: &str, n: u32) {
    run(Command::new("docker").args(["service", "scale", "-d", &format!("{service}={n}")]));
}

#[test]
fn docker_swarm_the_proxy_follows_the_tasks_on_both_nodes_while_scaling_under_load() {
    let _one = one_swarm_at_a_time();
    let image = flowgate_image();
    let swarm = Swarm::start(&image);
    let nodes = swarm.nodes();
    assert_eq!(nodes.len(), 2, "{nodes:?}");
    let made = Made {
        service: format!("{}-flow", swarm.name),
        network: format!("{}-net", swarm.name),
        proxy: format!("{}-proxy", swarm.name),
    };
    run(Command::new("docker").args(["network", "create", "-d", "overlay", "--attachable", &made.network]));
    run(Command::new("docker")
        .args([
            "service",
            "create",
            "-d",
            "--name",
            &made.service,
            "--network",
            &made.network,
        ])
        .args(["--endpoint-mode", "dnsrr", "--replicas", "4"])
        .args(["--env", "FLOWGATE_SIM_NAME={{.Node.ID}}-{{.Task.Slot}}"])
        .args([&image, "sim", "flow", "--listen", "0.0.0.0:9021"]));
    // The admin token: a file the proxy's user may read, mounted read-only.
    let token_dir = std::env::temp_dir().join(format!("{}-token", swarm.name));
    std::fs::create_dir_all(&token_dir).unwrap();
    std::fs::write(token_dir.join("token"), "swarm-test-token").unwrap();
    run(Command::new("docker")
        .args(["run", "-d", "--name", &made.proxy, "--network", &made.network])
        .args(["-p", "127.0.0.1::80", "-p", "127.0.0.1::9901"])
        .args(["-v", &format!("{}:/token:ro", token_dir.display())])
        .args([&image, "proxy", "--listen", "0.0.0.0:80", "--admin", "0.0.0.0:9901"])
        .args(["--admin-token-file", "/token/token"])
        .args(["--discover", &format!("tasks.{}:9021", made.service)]));
    let published = |port: &str| {
        run(Command::new("docker").args(["port", &made.proxy, port]))
            .lines()
            .next()
            .unwrap()
            .trim()
            .to_string()
    };
    let (addr, admin) = (published("80"), published("9901"));
    let sessions = || -> u64 {
        let out = Command::new("curl")
            .args(["-s", "-m", "2", "-H", "Authorization: Bearer swarm-test-token"])
            .arg(format!("http://{admin}/api/v1/backends"))
            .output()
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|v| {
                v.as_array()
                    .map(|l| l.iter().filter_map(|b| b["ws_active"].as_u64()).sum())
            })
            .unwrap_or(0)
    };
    // Every task on both nodes answers through the proxy.
    wait_for(Duration::from_secs(60), || whoami_instances(&addr, 16).len() == 4);
    let seen = whoami_instances(&addr, 16);
    for node in &nodes {
        assert!(
            seen.iter().any(|i| i.starts_with(node.as_str())),
            "no task of node {node} answered: {seen:?}"
        );
    }

    // Scale 4 -> 6 -> 2 under load: no failed request, no session cut.
    let load = Load::to(addr.parse().unwrap())
        .sessions(40, "1s")
        .rps(100)
        .duration("40s")
        .flag("--reconnect")
        .spawn();
    wait_for(Duration::from_secs(20), || sessions() == 40);
    replicas(&made.service, 6);
    wait_for(Duration::from_secs(30), || whoami_instances(&addr, 24).len() == 6);
    replicas(&made.service, 2);
    wait_for(Duration::from_secs(30), || whoami_instances(&addr, 12).len() == 2);
    let summary = load.join().unwrap();
    let closed = nothing_failed(&summary);
    assert_eq!(
        summary["ws_reconnects"].as_u64(),
        Some(closed),
        "every closed session came back: {summary}"
    );
    drop(made);
    drop(swarm);
    let _ = std::fs::remove_dir_all(token_dir);
}

/// The nodes `status --json` places the Flow instances on.
fn instance_nodes(project: &Project) -> BTreeSet<String> {
    project.status()["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["node"].as_str().map(str::to_string))
        .collect()
}

/// `up --swarm --demo` with two instances on these ports, on every address.
fn up_demo_args(http: u16, https: u16) -> Vec<String> {
    let (http, https) = (http.to_string(), https.to_string());
    [
        "up",
        "--swarm",
        "--demo",
        "--bind",
        "0.0.0.0",
        "--instances",
        "2",
        "--http-port",
        &http,
        "--https-port",
        &https,
    ]
    .map(String::from)
    .to_vec()
}

/// A refused `up`: it failed, said each of `words`, and made no service or network.
fn refused_with_nothing_made(project: &Project, out: &std::process::Output, words: &[&str]) {
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && words.iter().all(|w| said.contains(w)),
        "{said}"
    );
    assert_eq!(
        (project.labelled("service"), project.labelled("network")),
        (0, 0),
        "nothing made: {said}"
    );
}

/// `args` as the `&[&str]` the commands take.
fn refs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// Load through a deployment's HTTPS port on this machine, trusting its local CA.
fn https_load(project: &Project, https: u16) -> Load {
    Load::to("127.0.0.1:1".parse().unwrap())
        .set("--url", &format!("https://flow.localhost:{https}"))
        .set("--resolve", &format!("flow.localhost:{https}:127.0.0.1"))
        .set("--ca", project.ca().to_str().unwrap())
}

/// The instances that answered `count` requests over HTTPS through the proxy.
fn https_instances(project: &Project, https: u16, count: usize) -> BTreeSet<String> {
    https_instances_at(project, "127.0.0.1", https, count)
}

/// The instances that answered `count` requests through the proxy at `ip`.
fn https_instances_at(project: &Project, ip: &str, https: u16, count: usize) -> BTreeSet<String> {
    https_whoami(&["--cacert", project.ca().to_str().unwrap()], ip, https, count)
}

/// The instances that answered `count` whoami requests over HTTPS at `ip`,
/// curl trusting the server as `trust` says.
fn https_whoami(trust: &[&str], ip: &str, https: u16, count: usize) -> BTreeSet<String> {
    (0..count)
        .filter_map(|_| {
            let out = Command::new("curl")
                .args(["-s", "-m", "3"])
                .args(trust)
                .args(["--resolve", &format!("flow.localhost:{https}:{ip}")])
                .arg(format!("https://flow.localhost:{https}/api/sim/whoami"))
                .output()
                .ok()?;
            let json: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            assert_eq!(json["headers"]["x-forwarded-proto"], "https", "{json}");
            Some(json["instance"].as_str()?.to_string())
        })
        .collect()
}

#[test]
fn docker_swarm_flowgate_up_spreads_flow_over_both_nodes_scales_under_load_and_takes_it_down() {
    let _one = one_swarm_at_a_time();
    let image = flowgate_image();
    let swarm = Swarm::start(&image);
    // Declared after the swarm: taken down (`down --volumes`) before the swarm goes.
    let (fx, project) = project_for("swarm");
    let (http, https) = (free_port(), free_port());
    // Swarm publishes on every address: a demo's loopback default is refused, not widened.
    let refused = project.flowgate(&["up", "--swarm", "--demo", "--http-port", &http.to_string()]);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && said.contains("--bind 0.0.0.0"), "{said}");
    // Public traffic meant for an edge node flowgate cannot reach the proxy
    // on: refused with the way out, before anything is made.
    let worker = swarm.worker_docker(&["info", "-f", "{{.Swarm.NodeID}}"]);
    let worker = String::from_utf8_lossy(&worker.stdout).trim().to_string();
    let label = |how: &str, arg: &str| {
        run(Command::new("docker").args(["node", "update", how, arg, &worker]));
    };
    label("--label-add", "io.flowgate.edge=true");
    let elsewhere = project.flowgate(&refs(&up_demo_args(free_port(), free_port())));
    label("--label-rm", "io.flowgate.edge");
    refused_with_nothing_made(&project, &elsewhere, &["io.flowgate.edge=true", "docker node update"]);
    // The real profile (the default without --demo) is built for Swarm:
    // PostgreSQL, Flow and MC. Their images cannot be here, which is said
    // before anything is made, as on one engine.
    let mut real = up_demo_args(free_port(), free_port());
    real.retain(|a| a != "--demo");
    real.push("--no-pull".into());
    let refused = project
        .command(&refs(&real))
        .env("MC_LICENSE", "test-licence")
        .current_dir(&fx.dir)
        .output()
        .unwrap();
    refused_with_nothing_made(&project, &refused, &["postgres:15", "docker load"]);
    let started = Instant::now();
    let out = project.ok(&refs(&up_demo_args(http, https)));
    eprintln!(
        "up --swarm --demo (2 instances): {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(out.contains(&format!("https://flow.localhost:{https}/")), "{out}");
    // No admin port is published: flowgate reaches it through docker exec.
    let ports = run(Command::new("docker").args(["service", "inspect", &format!("{}-proxy", project.name)]));
    assert!(!ports.contains("9901"), "the admin port must not be published: {ports}");

    // Every task here is confined as on one engine: unprivileged, no capabilities, read-only.
    let here = run(Command::new("docker").args([
        "ps",
        "-q",
        "--filter",
        &format!("label=io.flowgate.project={}", project.name),
    ]));
    assert!(!here.trim().is_empty());
    for id in here.lines() {
        let seen = run(Command::new("docker").args([
            "inspect",
            "-f",
            "{{.Config.User}} {{.HostConfig.CapDrop}} {{.HostConfig.ReadonlyRootfs}} {{.HostConfig.Memory}}",
            id,
        ]));
        assert!(seen.starts_with("65532:65532 [ALL] true "), "{id}: {seen}");
        assert!(!seen.trim().ends_with(" 0"), "a memory limit: {seen}");
    }

    // The two tasks run one on each node, and both answer over HTTPS.
    let status = project.status();
    assert_eq!(status["nodes"].as_array().map(Vec::len), Some(2), "{status}");
    assert_eq!(instance_nodes(&project).len(), 2, "{status}");
    let text = project.ok(&["status"]);
    assert!(
        text.contains("NODE") && text.contains("manager") && text.contains("worker"),
        "{text}"
    );
    wait_for(Duration::from_secs(20), || {
        https_instances(&project, https, 8).len() == 2
    });
    let doctor = project.flowgate(&["doctor", "--idle-wait", "8s"]);
    assert!(
        doctor.status.success(),
        "flowgate doctor failed on the swarm: {}{}",
        String::from_utf8_lossy(&doctor.stdout),
        String::from_utf8_lossy(&doctor.stderr)
    );

    // export reads the deployment from Swarm and says what its files are for.
    let export = project.flowgate(&["export", "compose"]);
    let said = String::from_utf8_lossy(&export.stderr);
    let compose = String::from_utf8_lossy(&export.stdout);
    assert!(export.status.success(), "{said}");
    assert!(
        said.contains("runs on Docker Swarm") && said.contains("docker stack deploy"),
        "{said}"
    );
    assert!(
        compose.contains(&format!("{}-flow-2", project.name)),
        "the running count: {compose}"
    );

    // The dashboard on the swarm: a NODE column, the nodes summed up, and
    // `+` adds a task whose node shows.
    let command = format!(
        "env XDG_STATE_HOME={state} NO_COLOR=1 {BIN} tui --project {name}; echo EXITED $?; sleep 600",
        state = project.state.display(),
        name = project.name,
    );
    let tmux = Tmux::start(&command, 180, 36);
    tmux.wait_for("the instances with their nodes", Duration::from_secs(60), |s| {
        s.contains("NODE") && s.contains("nodes:") && s.contains("2/2 healthy")
    });
    tmux.keys("+");
    let flow3 = format!("{}-flow-3", project.name);
    let screen = tmux.wait_for("a third task on a node", Duration::from_secs(90), |s| {
        s.contains("3/3 healthy") && s.lines().any(|l| l.contains(&flow3) && l.contains("@10.231.7."))
    });
    assert!(screen.contains("3 tasks") || screen.contains("4 tasks"), "{screen}");
    tmux.keys("q");
    tmux.wait_for("the dashboard to quit", Duration::from_secs(10), |s| {
        s.contains("EXITED 0")
    });
    drop(tmux);

    // Scale 3 -> 6 -> 2 under heartbeating sessions and requests.
    let load = https_load(&project, https)
        .sessions(40, "1s")
        .rps(100)
        .duration("45s")
        .flag("--reconnect")
        .spawn();
    wait_for(Duration::from_secs(20), || {
        project.status()["totals"]["ws_active"].as_u64() == Some(40)
    });
    let started = Instant::now();
    project.ok(&["scale", "4"]);
    eprintln!(
        "scale 3 -> 4 on Swarm, serving: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    project.ok(&["scale", "6"]);
    wait_for(Duration::from_secs(30), || {
        https_instances(&project, https, 30).len() == 6
    });
    assert_eq!(instance_nodes(&project).len(), 2);
    // Going down, flowgate drains in the proxy the tasks Swarm will stop,
    // before it changes the count: those are the ones that go.
    let down = project.flowgate(&["scale", "2"]);
    let said = String::from_utf8_lossy(&down.stderr);
    assert!(down.status.success(), "{said}");
    let drained: BTreeSet<String> = said
        .lines()
        .find_map(|l| l.split("drain ").nth(1)?.split(" in the proxy before Swarm").next())
        .unwrap_or_else(|| panic!("no drain before the scale-down: {said}"))
        .split(", ")
        .map(str::to_string)
        .collect();
    assert_eq!(drained.len(), 4, "{said}");
    let kept: BTreeSet<String> = project.status()["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["name"].as_str().map(str::to_string))
        .collect();
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(
        kept.is_disjoint(&drained),
        "Swarm stopped others than those drained: kept {kept:?}, drained {drained:?}"
    );
    wait_for(Duration::from_secs(30), || {
        https_instances(&project, https, 12).len() == 2
    });
    let summary = load.join().unwrap();
    let closed = nothing_failed(&summary);
    eprintln!("scale under load on Swarm: {summary}");
    assert_eq!(
        summary["ws_reconnects"].as_u64(),
        Some(closed),
        "every closed session came back: {summary}"
    );

    // Rebalance: 300 sessions on 3 instances, a fourth added, then spread.
    project.ok(&["scale", "3"]);
    let load = https_load(&project, https)
        .sessions(300, "1s")
        .rps(50)
        .duration("60s")
        .flag("--reconnect")
        .spawn();
    wait_for(Duration::from_secs(30), || {
        project.status()["totals"]["ws_active"].as_u64() == Some(300)
    });
    project.ok(&["scale", "4"]);
    let report = project.ok(&["rebalance", "--json"]);
    let spread = || -> Vec<u64> {
        project.status()["instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["ws_active"].as_u64().unwrap_or(0))
            .collect()
    };
    // The moved sessions reconnect within a second or two.
    let even = |s: &[u64]| s.len() == 4 && s.iter().all(|&n| (67..=83).contains(&n));
    wait_for(Duration::from_secs(15), || even(&spread()));
    eprintln!("rebalance on Swarm: {:?}; {report}", spread());
    let summary = load.join().unwrap();
    let closed = nothing_failed(&summary);
    assert_eq!(summary["ws_reconnects"].as_u64(), Some(closed), "{summary}");

    // A task's log, wherever it runs.
    let log = project.ok(&["logs", "flow-1", "--tail", "5"]);
    assert!(log.contains("listening"), "{log}");

    let down = project.flowgate(&["down", "--volumes"]);
    let said = String::from_utf8_lossy(&down.stderr);
    assert!(down.status.success() && said.contains("removed service"), "{said}");
    let left = run(Command::new("docker").args([
        "service",
        "ls",
        "-q",
        "--filter",
        &format!("label=io.flowgate.project={}", project.name),
    ]));
    assert!(left.trim().is_empty(), "services left: {left}");
    drop(project);
    drop(swarm);
}

#[test]
fn docker_swarm_a_rolling_update_and_the_loss_of_a_node_fail_no_request() {
    let _one = one_swarm_at_a_time();
    let image = flowgate_image();
    let swarm = Swarm::start(&image);
    let (fx, project) = project_for("swarmloss");
    let (http, https) = (free_port(), free_port());
    let settings = fx.dir.join("flowgate.toml");
    let write_settings = |memory: &str| {
        std::fs::write(
            &settings,
            format!(
                "profile = \"demo\"\nengine = \"swarm\"\nbind = \"0.0.0.0\"\ninstances = 4\n\
                 http_port = {http}\nhttps_port = {https}\n[resources]\nsimulator_memory = \"{memory}\"\n"
            ),
        )
        .unwrap();
    };
    write_settings("256MiB");
    let config = settings.to_str().unwrap();
    project.ok(&["--config", config, "up"]);
    wait_for(Duration::from_secs(30), || {
        https_instances(&project, https, 16).len() == 4
    });
    assert_eq!(instance_nodes(&project).len(), 2);
    let load = |duration: &str| {
        let load = https_load(&project, https)
            .sessions(40, "1s")
            .rps(100)
            .duration(duration)
            .flag("--reconnect")
            .spawn();
        wait_for(Duration::from_secs(20), || {
            project.status()["totals"]["ws_active"].as_u64() == Some(40)
        });
        load
    };

    // A rolling update of Flow (its memory limit changes) under load.
    let running = load("60s");
    write_settings("300MiB");
    let started = Instant::now();
    let out = project.flowgate(&["--config", config, "up"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && said.contains("update service"), "{said}");
    eprintln!("rolling update of 4 tasks: {:.1} s", started.elapsed().as_secs_f64());
    let summary = running.join().unwrap();
    eprintln!("rolling update under load: {summary}");
    let closed = nothing_failed(&summary);
    assert_eq!(summary["ws_reconnects"].as_u64(), Some(closed), "{summary}");

    // The worker node is lost under load: Swarm runs its tasks on the
    // manager, the proxy drops the dead addresses and takes the new ones.
    let running = load("60s");
    let lost = Instant::now();
    swarm.cut_worker();
    wait_for(Duration::from_secs(50), || {
        let status = project.status();
        let down = status["nodes"]
            .as_array()
            .is_some_and(|n| n.iter().any(|n| n["state"] == "down"));
        down && status["totals"]["healthy"].as_u64() == Some(4) && instance_nodes(&project).len() == 1
    });
    eprintln!(
        "node loss: 4 healthy instances again after {:.1} s",
        lost.elapsed().as_secs_f64()
    );
    let text = project.ok(&["status"]);
    assert!(text.contains(" down "), "the status shows the node down: {text}");
    let summary = running.join().unwrap();
    eprintln!("node loss under load: {summary}");
    assert_eq!(summary["requests_failed"], 0, "{summary}");
    assert_eq!(summary["ws_dropped"], 0, "{summary}");
    drop(project);
    drop(swarm);
}

#[test]
fn docker_swarm_every_command_works_through_docker_host_over_tcp_with_tls_and_over_ssh() {
    let _one = one_swarm_at_a_time();
    let image = flowgate_image();
    let swarm = Swarm::start(&image);
    let env = swarm.promote_worker();
    let sshd = swarm.ssh_to_worker();
    let (_fx, project) = project_for("swarmtls");
    let through = |env: &[(String, String)], args: &[&str]| {
        let out = project.command(args).envs(env.iter().cloned()).output().unwrap();
        assert!(
            out.status.success(),
            "flowgate {args:?} through {}: {}",
            env[0].1,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let remote = |args: &[&str]| through(&env, args);
    let over_ssh = |args: &[&str]| through(&sshd.env, args);
    // A client without the right certificates is refused with the way out.
    let refused = project
        .command(&["status"])
        .envs(env.iter().cloned())
        .env("DOCKER_CERT_PATH", "/nonexistent")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && said.contains("cannot reach Docker at tcp://"),
        "{said}"
    );

    let (http, https) = (free_port(), free_port());
    let out = remote(&refs(&up_demo_args(http, https)));
    assert!(out.contains(&format!("https://flow.localhost:{https}/")), "{out}");
    // The proxy runs on the manager flowgate talked to: the second engine.
    let status: serde_json::Value = serde_json::from_str(&remote(&["status", "--json"])).unwrap();
    assert_eq!(status["nodes"].as_array().map(Vec::len), Some(2), "{status}");
    assert_eq!(status["totals"]["healthy"], 2, "{status}");
    wait_for(Duration::from_secs(20), || {
        https_instances_at(&project, common::swarm::WORKER_IP, https, 8).len() == 2
    });
    remote(&["scale", "3"]);
    wait_for(Duration::from_secs(20), || {
        https_instances_at(&project, common::swarm::WORKER_IP, https, 12).len() == 3
    });
    let log = remote(&["logs", "proxy", "--tail", "20"]);
    assert!(log.contains("admin API"), "{log}");

    // The same engine over ssh://: each connection is `docker system
    // dial-stdio` on the far side, and ssh checks the host key.
    let unknown_host = project
        .command(&["status"])
        .envs(sshd.env.iter().cloned())
        .env(
            "FLOWGATE_SSH_COMMAND",
            "ssh -F /dev/null -o BatchMode=yes -o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes",
        )
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&unknown_host.stderr);
    assert!(
        !unknown_host.status.success()
            && said.contains("cannot reach Docker at ssh://")
            && said.contains("Host key verification failed"),
        "{said}"
    );
    let status: serde_json::Value = serde_json::from_str(&over_ssh(&["status", "--json"])).unwrap();
    assert_eq!(status["totals"]["healthy"], 3, "{status}");
    assert_eq!(status["nodes"].as_array().map(Vec::len), Some(2), "{status}");
    over_ssh(&["scale", "2"]);
    wait_for(Duration::from_secs(20), || {
        https_instances_at(&project, common::swarm::WORKER_IP, https, 12).len() == 2
    });
    let log = over_ssh(&["logs", "flow-1", "--tail", "5"]);
    assert!(log.contains("listening"), "{log}");
    let down = project
        .command(&["down", "--volumes"])
        .envs(sshd.env.iter().cloned())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&down.stderr);
    assert!(down.status.success() && said.contains("removed service"), "{said}");
    drop(project);
    drop(sshd);
    drop(swarm);
}

/// A stack deployed with `docker stack deploy`, removed when dropped
/// (before the project's `down` and the swarm go), with its volumes
/// (`docker stack rm` leaves them).
struct Stack {
    name: String,
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["stack", "rm", &self.name]).output();
        let of_stack = format!("label=com.docker.stack.namespace={}", self.name);
        let listed = |what: &[&str]| {
            Command::new("docker")
                .args(what)
                .args(["-q", "--filter", &of_stack])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap_or_default()
        };
        // The stack's network goes once its tasks have left it; its
        // volumes are free once its containers are gone.
        for _ in 0..150 {
            if listed(&["network", "ls"]).is_empty() && listed(&["ps", "-a"]).is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        for volume in listed(&["volume", "ls"]).split_whitespace() {
            let _ = Command::new("docker").args(["volume", "rm", volume]).output();
        }
    }
}

#[test]
fn docker_swarm_an_exported_stack_file_deploys_with_docker_stack_deploy_and_serves_from_both_nodes() {
    let _one = one_swarm_at_a_time();
    let image = flowgate_image();
    let swarm = Swarm::start(&image);
    let (fx, project) = project_for("stack");
    let (http, https) = (free_port().to_string(), free_port().to_string());
    let dir = fx.dir.join("stack");
    let dir_arg = dir.to_str().unwrap();
    let written = project.ok(&[
        "export",
        "stack",
        "--demo",
        "--image",
        &image,
        "--instances",
        "2",
        "--http-port",
        &http,
        "--https-port",
        &https,
        "--out",
        dir_arg,
    ]);
    assert!(
        written.contains("docker-stack.yml") && written.contains("proxy.toml"),
        "{written}"
    );
    let text = std::fs::read_to_string(dir.join("docker-stack.yml")).unwrap();
    assert!(text.contains("openssl rand -hex 32 > admin-token"), "{text}");
    std::fs::write(dir.join("admin-token"), "stack-test-token").unwrap();

    let stack = Stack {
        name: project.name.clone(),
    };
    let deployed = Command::new("docker")
        .args(["stack", "deploy", "-c", "docker-stack.yml", &stack.name])
        .current_dir(&dir)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&deployed.stdout),
        String::from_utf8_lossy(&deployed.stderr)
    );
    assert!(deployed.status.success(), "docker stack deploy: {said}");
    assert!(
        !said.contains("Ignoring unsupported options"),
        "every option of the file applies: {said}"
    );

    // The proxy finds the Flow tasks by the stack's alias and serves both, over HTTPS
    // (its local CA is inside its volume: not checked here).
    let https: u16 = https.parse().unwrap();
    let answered = || https_whoami(&["-k"], "127.0.0.1", https, 8);
    wait_for(Duration::from_secs(90), || answered().len() == 2);
    // One task on each node, as Swarm spreads a service (both nodes share a host name: by id).
    let tasks = run(Command::new("docker").args([
        "service",
        "ps",
        "-q",
        "-f",
        "desired-state=running",
        &format!("{0}_{0}-flow", stack.name),
    ]));
    let nodes = run(Command::new("docker")
        .args(["inspect", "--format", "{{.NodeID}}"])
        .args(tasks.split_whitespace()));
    assert_eq!(nodes.lines().collect::<BTreeSet<_>>().len(), 2, "{nodes}");
    drop(stack);
    let left = run(Command::new("docker").args(["volume", "ls", "-q", "--filter", &format!("name={}", project.name)]));
    assert!(left.trim().is_empty(), "volumes left: {left}");
    drop(project);
    drop(swarm);
}
