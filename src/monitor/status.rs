//! `flowgate status`: one snapshot of the deployment from the same feeds
//! the dashboard folds, and its text for people.

use std::time::Duration;

use bollard::Docker;

use super::{Feed, Snapshot, State, feeds};

/// Why no snapshot could be taken.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("project {0} has no deployment; create one with `flowgate up --demo --project {0}`")]
    NoDeployment(String),
    #[error("Docker did not list the containers of project {0} within {1} s; is the engine overloaded?")]
    Slow(String, u64),
}

/// One picture of the deployment from the live feeds: waits (at most a
/// few seconds) until Docker, two backend samples and each running
/// container's stats have arrived.
pub async fn snapshot(docker: &Docker, project: &str) -> Result<Snapshot, StatusError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    let feeds = feeds::start(docker.clone(), project, tx);
    let mut state = State::new(project);
    let mut containers_seen = false;
    // An engine over ssh:// costs a round trip per call (and the admin API
    // one exec each): more time before the picture is given up on.
    let wait = if crate::deploy::engine_over_ssh() {
        Duration::from_secs(15)
    } else {
        Duration::from_secs(5)
    };
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let feed = tokio::select! {
            feed = rx.recv() => feed,
            _ = tokio::time::sleep_until(deadline) => None,
        };
        let Some(feed) = feed else { break };
        if let Feed::Containers(list) = &feed {
            if list.is_empty() {
                return Err(StatusError::NoDeployment(project.into()));
            }
            containers_seen = true;
        }
        state.apply(feed);
        let snap = state.snapshot(crate::clock::now_unix());
        let admin_known = state.samples >= 2 || matches!(state.admin, Some(Err(_)));
        // A Swarm task on another node has no stats here; the nodes come with it.
        let stats_known = snap
            .instances
            .iter()
            .all(|i| i.state != "running" || i.cpu_percent.is_some() || i.node.is_some());
        let nodes_known = snap.instances.iter().all(|i| i.node.is_none()) || !snap.nodes.is_empty();
        if containers_seen && admin_known && stats_known && nodes_known {
            break;
        }
    }
    if !containers_seen {
        return Err(StatusError::Slow(project.into(), wait.as_secs()));
    }
    if let Some(dep) = feeds.deployment.borrow().as_ref() {
        state.flow_url = Some(dep.flow_origin());
        state.mc_url = Some(dep.mc_origin());
    }
    Ok(state.snapshot(crate::clock::now_unix()))
}

/// `flowgate status` for people: where it answers, the certificate, the
/// totals and one row per instance.
pub fn status_text(snap: &Snapshot) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "project {}", snap.project);
    if let (Some(flow), Some(mc)) = (&snap.flow_url, &snap.mc_url) {
        let _ = writeln!(out, "Flow {flow}/   Management Center {mc}/");
    }
    if let Some(c) = &snap.certificate {
        let _ = write!(
            out,
            "certificate: {} by {}, {} days left",
            c.info.domains.join(", "),
            c.info.issuer,
            c.days_left
        );
        if let Some(next) = &c.next_renewal {
            let _ = write!(out, ", renews {next}");
        }
        if let Some(error) = &c.last_error {
            let _ = write!(out, ", last error: {error}");
        }
        out.push('\n');
    }
    if let Some(p) = &snap.proxy {
        if let Some(error) = &p.admin_error {
            let _ = writeln!(
                out,
                "proxy {}: {} (admin API: {error})",
                p.container.name, p.container.state
            );
        }
    }
    let t = &snap.totals;
    let _ = writeln!(
        out,
        "{}/{} healthy, {} WebSocket sessions, {:.1} heartbeats/s, {:.1} requests/s, {:.1} errors/s",
        t.healthy, t.instances, t.ws_active, t.heartbeats_per_s, t.rps, t.errors_per_s
    );
    let on_swarm = snap.instances.iter().any(|i| i.node.is_some());
    let node_column = |node: &str| {
        if on_swarm {
            format!(" {node:<14}")
        } else {
            String::new()
        }
    };
    let _ = writeln!(
        out,
        "{:<24}{} {:<9} {:<10} {:>6} {:>8} {:>8} {:>8} {:>6} {:>9} {:>8}",
        "INSTANCE",
        node_column("NODE"),
        "STATE",
        "HEALTH",
        "WS",
        "HB/s",
        "REQ/s",
        "P99ms",
        "CPU%",
        "MEMORY",
        "RESTARTS"
    );
    let num = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    for i in &snap.instances {
        let _ = writeln!(
            out,
            "{:<24}{} {:<9} {:<10} {:>6} {:>8} {:>8} {:>8} {:>6} {:>9} {:>8}",
            i.name,
            node_column(i.node.as_deref().unwrap_or("-")),
            i.state,
            i.health.as_str(),
            i.ws_active.map_or("-".to_string(), |v| v.to_string()),
            num(i.heartbeats_per_s),
            num(i.rps),
            num(i.p99_ms),
            num(i.cpu_percent),
            i.memory_bytes
                .map_or("-".to_string(), |b| format!("{:.1} MiB", b as f64 / 1048576.0)),
            i.restarts.map_or("-".to_string(), |r| r.to_string()),
        );
    }
    if !snap.nodes.is_empty() {
        let _ = writeln!(
            out,
            "\n{:<14} {:<8} {:<8} {:<12} {:>6} {:>5} {:>10}",
            "NODE", "ROLE", "STATE", "AVAILABILITY", "TASKS", "CPUS", "MEMORY"
        );
        for n in &snap.nodes {
            let _ = writeln!(
                out,
                "{:<14} {:<8} {:<8} {:<12} {:>6} {:>5.1} {:>10}",
                n.name,
                if n.manager { "manager" } else { "worker" },
                n.state,
                n.availability,
                n.tasks,
                n.cpus,
                format!("{:.1} GiB", n.memory_bytes as f64 / (1u64 << 30) as f64)
            );
        }
    }
    out
}
