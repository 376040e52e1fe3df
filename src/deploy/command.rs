//! `flowgate up`, `scale`, `down` and `status`: the deployment commands.
//! Each reads what exists from Docker labels, so they work from any shell,
//! whether or not the dashboard ran.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bollard::Docker;
use serde::Serialize;

use super::engine::{self, Executor};
use super::plan::{Desired, Found, Role, plan};
use super::settings::{self, Deployment, LABEL_SETTINGS};
use crate::cli::{DownArgs, LogsArgs, StatusArgs, UpArgs};
use crate::fsutil::write_atomic;
use crate::proxy::client::AdminClient;

fn progress(line: &str) {
    eprintln!("{line}");
}

/// The settings a running deployment was made with, from its proxy's label.
async fn previous_settings(docker: &Docker, project: &str) -> Option<Deployment> {
    let name = Deployment {
        project: project.into(),
        ..placeholder()
    }
    .names()
    .container(Role::Proxy, None);
    let inspect = docker.inspect_container(&name, None).await.ok()?;
    let labels = inspect.config?.labels?;
    serde_json::from_str(labels.get(LABEL_SETTINGS)?).ok()
}

fn placeholder() -> Deployment {
    Deployment {
        project: String::new(),
        domain: "flow.localhost".into(),
        mc_domain: "mc.flow.localhost".into(),
        instances: 3,
        http_port: 80,
        https_port: 443,
    }
}

/// Whether the running deployment uses flowgate's simulators, and else
/// the tag of its Hazelcast images (from the first Flow instance).
async fn current_profile(docker: &Docker, project: &str) -> (bool, Option<String>) {
    let flow = super::plan::Names {
        project: project.into(),
    }
    .container(Role::Flow, Some(1));
    let image = docker
        .inspect_container(&flow, None)
        .await
        .ok()
        .and_then(|c| c.config?.image);
    match image {
        Some(image) if !image.starts_with(super::image::REPOSITORY) => {
            (false, image.rsplit_once(':').map(|(_, tag)| tag.to_string()))
        }
        _ => (true, None),
    }
}

/// The admin token of a project, created (0600) on first use.
fn project_token(dir: &Path) -> anyhow::Result<String> {
    project_secret(dir, "admin-token")
}

/// A random secret kept in the project dir (mode 0600), made on first use.
fn project_secret(dir: &Path, name: &str) -> anyhow::Result<String> {
    let path = dir.join(name);
    if let Ok(token) = std::fs::read_to_string(&path) {
        if !token.trim().is_empty() {
            return Ok(token.trim().to_string());
        }
    }
    let token: String = crate::websocket::random_bytes::<24>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    write_atomic(&path, token.as_bytes(), 0o600).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(token)
}

pub async fn up(project: &str, args: UpArgs) -> anyhow::Result<()> {
    if !args.demo && settings::find_license(Path::new(".")).is_none() {
        bail!(
            "the real profile needs a Hazelcast licence: set MC_LICENSE in the environment or in ./.env, or add --demo to run flowgate's simulators"
        );
    }
    let docker = super::connect().await?;
    let flows = engine::found(&docker, project)
        .await?
        .iter()
        .filter(|f| f.role == Role::Flow)
        .count() as u32;
    apply(&docker, project, args, flows).await
}

pub async fn scale(project: &str, instances: u32) -> anyhow::Result<()> {
    let docker = super::connect().await?;
    if previous_settings(&docker, project).await.is_none() {
        bail!("project {project} has no deployment to scale; create one with `flowgate up --demo --project {project}`");
    }
    if instances == 0 {
        eprintln!("scaling to 0: Flow will be unreachable until you scale up again");
    }
    let (demo, tag) = current_profile(&docker, project).await;
    let args = UpArgs {
        instances: Some(instances),
        demo,
        domain: None,
        http_port: None,
        https_port: None,
        tag,
        no_pull: false,
    };
    apply(&docker, project, args, instances).await
}

async fn apply(docker: &Docker, project: &str, args: UpArgs, found_instances: u32) -> anyhow::Result<()> {
    let previous = previous_settings(docker, project).await;
    let base = previous.clone().unwrap_or_else(placeholder);
    let domain = args.domain.clone().unwrap_or(base.domain.clone());
    let dep = Deployment {
        project: project.into(),
        mc_domain: if args.domain.is_some() {
            format!("mc.{domain}")
        } else {
            base.mc_domain.clone()
        },
        domain,
        instances: args
            .instances
            .unwrap_or(if previous.is_some() { found_instances } else { 3 }),
        http_port: args.http_port.unwrap_or(base.http_port),
        https_port: args.https_port.unwrap_or(base.https_port),
    };
    let dir = settings::project_dir(project);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let token = project_token(&dir)?;
    write_atomic(&dir.join("proxy.toml"), settings::proxy_toml(&dep).as_bytes(), 0o644)?;

    let binary = std::env::current_exe().context("cannot find flowgate's own binary")?;
    let image = super::image::ensure(docker, &binary, progress).await?;
    let names = dep.names();
    let (specs, volumes) = if args.demo {
        (
            settings::demo_specs(&dep, &image, &dir),
            vec![names.certificates_volume()],
        )
    } else {
        let real = settings::RealProfile {
            tag: args.tag.clone().unwrap_or_else(|| "latest".into()),
            license: settings::find_license(Path::new(".")).unwrap_or_default(),
            db_password: project_secret(&dir, "db-password")?,
        };
        write_atomic(
            &dir.join("hazelcast.yml"),
            settings::hazelcast_yml(&dep).as_bytes(),
            0o644,
        )?;
        let specs = settings::real_specs(&dep, &image, &real, &dir);
        // Every image first: a missing one must stop the run before anything exists.
        for spec in specs.iter().filter(|s| s.role != Role::Proxy) {
            super::image::ensure_pulled(docker, &spec.image, !args.no_pull, progress).await?;
        }
        (specs, vec![names.certificates_volume(), names.postgres_volume()])
    };
    let desired = Desired {
        names: names.clone(),
        containers: specs.iter().map(|s| s.wanted()).collect(),
        volumes,
    };
    let found = engine::found(docker, project).await?;
    let actions = plan(
        &desired,
        &found,
        engine::network_exists(docker, &names.network()).await,
        &engine::existing_volumes(docker, &desired.volumes).await,
    );
    if actions.is_empty() {
        eprintln!("project {project} is up to date ({} instances)", dep.instances);
    }
    let mut executor = Executor::new(docker, names, specs, token);
    executor.run(&actions, &mut |line| progress(line)).await?;

    // Clients trust the proxy's local CA: keep a copy beside the token.
    let admin = executor.admin().await?;
    let (status, ca) = admin.get_text("/api/v1/certificates/ca").await?;
    let ca_path = dir.join("ca.pem");
    if status == 200 {
        write_atomic(&ca_path, ca.as_bytes(), 0o644)?;
    }
    println!("Flow: {}/", dep.flow_origin());
    println!("Management Center: {}/", dep.mc_origin());
    println!("{} instances; clients trust {}", dep.instances, ca_path.display());
    Ok(())
}

pub async fn down(project: &str, args: DownArgs) -> anyhow::Result<()> {
    let docker = super::connect().await?;
    let found = engine::found(&docker, project).await?;
    for f in &found {
        eprintln!("removing {}", f.name);
        engine::remove_container(&docker, &f.name).await?;
    }
    let names = Deployment {
        project: project.into(),
        ..placeholder()
    }
    .names();
    if docker.remove_network(&names.network()).await.is_ok() {
        eprintln!("removed network {}", names.network());
    }
    if args.volumes {
        for volume in [names.certificates_volume(), names.postgres_volume()] {
            if docker
                .remove_volume(&volume, None::<bollard::query_parameters::RemoveVolumeOptions>)
                .await
                .is_ok()
            {
                eprintln!("removed volume {volume}");
            }
        }
        let _ = std::fs::remove_dir_all(settings::project_dir(project));
    } else {
        eprintln!("kept the certificate volume (remove it with --volumes)");
    }
    if found.is_empty() {
        eprintln!("project {project} had no containers");
    }
    Ok(())
}

#[derive(Debug, Serialize)]
struct InstanceStatus {
    name: String,
    state: String,
    health: String,
    ws_active: Option<u64>,
    heartbeats_per_s: Option<f64>,
    last_heartbeat_ms_ago: Option<u64>,
    rps: Option<f64>,
    p99_ms: Option<f64>,
    cpu_percent: Option<f64>,
    memory_bytes: Option<u64>,
    restarts: Option<i64>,
}

#[derive(Debug, Serialize)]
struct Status {
    project: String,
    instances: Vec<InstanceStatus>,
    proxy: serde_json::Value,
    mc: serde_json::Value,
    certificate: serde_json::Value,
}

pub async fn status(project: &str, args: StatusArgs) -> anyhow::Result<()> {
    let docker = super::connect().await?;
    let found = engine::found(&docker, project).await?;
    if found.is_empty() {
        bail!("project {project} has no deployment; create one with `flowgate up --demo --project {project}`");
    }
    let names = Deployment {
        project: project.into(),
        ..placeholder()
    }
    .names();
    let token = std::fs::read_to_string(settings::project_dir(project).join("admin-token")).unwrap_or_default();
    let admin = engine::admin_address(&docker, &names)
        .await
        .ok()
        .map(|a| AdminClient::new(a, &token));
    // Two samples a second apart give the rates.
    let first = backends(admin.as_ref()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let second = backends(admin.as_ref()).await;
    let by_id = |v: &Option<serde_json::Value>| -> BTreeMap<String, serde_json::Value> {
        v.as_ref()
            .and_then(|l| l.as_array().cloned())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|b| Some((b["id"].as_str()?.to_string(), b)))
            .collect()
    };
    let (before, after) = (by_id(&first), by_id(&second));
    let mut flows: Vec<&Found> = found.iter().filter(|f| f.role == Role::Flow).collect();
    flows.sort_by_key(|f| f.index);
    let usages = futures_util::future::join_all(flows.iter().map(|f| engine::usage(&docker, &f.name))).await;
    let instances = flows
        .iter()
        .zip(usages)
        .map(|(f, usage)| {
            let now = after.get(&f.name);
            let then = before.get(&f.name);
            let delta = |field: &str| match (now, then) {
                (Some(n), Some(t)) => Some(n[field].as_f64().unwrap_or(0.0) - t[field].as_f64().unwrap_or(0.0)),
                _ => None,
            };
            let health = match (f.running, now.map(|b| b["state"].as_str().unwrap_or(""))) {
                (false, _) => "unhealthy".to_string(),
                (true, Some("healthy")) => "healthy".to_string(),
                (true, Some("draining")) => "draining".to_string(),
                (true, Some(_)) => "unhealthy".to_string(),
                (true, None) => "starting".to_string(),
            };
            InstanceStatus {
                name: f.name.clone(),
                state: if f.running { "running".into() } else { "stopped".into() },
                health,
                ws_active: now.and_then(|b| b["ws_active"].as_u64()),
                heartbeats_per_s: delta("heartbeats_total"),
                last_heartbeat_ms_ago: now.and_then(|b| b["last_heartbeat_ms_ago"].as_u64()),
                rps: delta("requests_total"),
                p99_ms: now.and_then(|b| b["latency_p99_ms"].as_f64()),
                cpu_percent: usage.cpu_percent.map(|c| (c * 10.0).round() / 10.0),
                memory_bytes: usage.memory_bytes,
                restarts: usage.restarts,
            }
        })
        .collect();
    let find = |role: Role| found.iter().find(|f| f.role == role);
    let proxy = find(Role::Proxy).map_or(serde_json::Value::Null, |p| {
        serde_json::json!({"name": p.name, "state": if p.running { "running" } else { "stopped" }, "admin": admin.is_some()})
    });
    let mc = find(Role::Mc).map_or(serde_json::Value::Null, |m| {
        let backend = after.values().find(|b| b["service"] == "mc");
        serde_json::json!({"name": m.name, "state": if m.running { "running" } else { "stopped" },
                           "health": backend.map(|b| b["state"].clone())})
    });
    let certificate = match &admin {
        Some(a) => a
            .get("/api/v1/certificates")
            .await
            .ok()
            .and_then(|c| c.get(0).cloned())
            .unwrap_or(serde_json::Value::Null),
        None => serde_json::Value::Null,
    };
    let status = Status {
        project: project.into(),
        instances,
        proxy,
        mc,
        certificate,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    println!("project {project}");
    println!(
        "{:<24} {:<9} {:<10} {:>6} {:>8} {:>8} {:>6} {:>9} {:>8}",
        "INSTANCE", "STATE", "HEALTH", "WS", "HB/s", "REQ/s", "CPU%", "MEMORY", "RESTARTS"
    );
    for i in &status.instances {
        let num = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
        println!(
            "{:<24} {:<9} {:<10} {:>6} {:>8} {:>8} {:>6} {:>9} {:>8}",
            i.name,
            i.state,
            i.health,
            i.ws_active.map_or("-".to_string(), |v| v.to_string()),
            num(i.heartbeats_per_s),
            num(i.rps),
            num(i.cpu_percent),
            i.memory_bytes
                .map_or("-".to_string(), |b| format!("{:.1} MiB", b as f64 / 1048576.0)),
            i.restarts.map_or("-".to_string(), |r| r.to_string()),
        );
    }
    Ok(())
}

async fn backends(admin: Option<&AdminClient>) -> Option<serde_json::Value> {
    admin?.get("/api/v1/backends").await.ok()
}

/// The container of `instance`: `flow-2` or `2`, `proxy`, `mc`, `postgres`,
/// or a full container name.
pub fn container_of(project: &str, instance: &str) -> String {
    let names = super::plan::Names {
        project: project.into(),
    };
    if let Ok(n) = instance.parse::<u32>() {
        return names.container(Role::Flow, Some(n));
    }
    if let Some(role) = Role::parse(instance) {
        return names.container(role, None);
    }
    if instance.starts_with(&format!("{project}-")) {
        return instance.to_string();
    }
    format!("{project}-{instance}")
}

pub async fn logs(project: &str, args: LogsArgs) -> anyhow::Result<()> {
    use futures_util::StreamExt;
    use std::io::Write;
    let docker = super::connect().await?;
    let name = container_of(project, &args.instance);
    if docker.inspect_container(&name, None).await.is_err() {
        let known: Vec<String> = engine::found(&docker, project)
            .await?
            .into_iter()
            .map(|f| f.name)
            .collect();
        bail!(
            "no container {name} in project {project}; its containers: {}",
            if known.is_empty() {
                "none".into()
            } else {
                known.join(", ")
            }
        );
    }
    let options = bollard::query_parameters::LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .follow(args.follow)
        .tail(&args.tail.to_string())
        .build();
    let mut stream = docker.logs(&name, Some(options));
    while let Some(chunk) = stream.next().await {
        match chunk? {
            bollard::container::LogOutput::StdErr { message } => std::io::stderr().write_all(&message)?,
            other => std::io::stdout().write_all(&other.into_bytes())?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::container_of;

    #[test]
    fn instance_names_accept_short_forms() {
        assert_eq!(container_of("demo", "2"), "demo-flow-2");
        assert_eq!(container_of("demo", "flow-2"), "demo-flow-2");
        assert_eq!(container_of("demo", "proxy"), "demo-proxy");
        assert_eq!(container_of("demo", "demo-mc"), "demo-mc");
    }
}
