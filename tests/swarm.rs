//! flowgate's proxy on a real two-node Docker Swarm (a second engine in a
//! network namespace, see `common::swarm`): Flow's stand-ins as a service in
//! dnsrr mode on both nodes, the proxy on the overlay following
//! `tasks.<service>` by itself. Needs root and Docker.

mod common;

use std::process::Command;
use std::time::Duration;

use common::docker::flowgate_image;
use common::swarm::Swarm;
use common::*;

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
