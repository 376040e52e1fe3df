//! `flowgate up`, `scale`, `down` and `status`: the deployment commands.
//! Each reads what exists from Docker labels, so they work from any shell,
//! whether or not the dashboard ran.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use bollard::Docker;

use super::engine::{self, Executor};
use super::plan::{Action, Desired, Role, plan};
use super::settings::{self, Deployment, LABEL_SETTINGS};
use crate::cli::{DownArgs, LogsArgs, StatusArgs, UpArgs};
use crate::config::deployment::{CertMode, DeploymentFile, MAX_INSTANCES, Profile, check_domain};
use crate::fsutil::write_atomic;
use crate::monitor::{Feed, Snapshot, State, feeds};

fn progress(line: &str) {
    eprintln!("{line}");
}

/// The settings a running deployment was made with (from its proxy's
/// label), and the image its proxy runs.
async fn previous_settings(docker: &Docker, project: &str) -> Option<(Deployment, Option<String>)> {
    let name = super::plan::Names {
        project: project.into(),
    }
    .container(Role::Proxy, None);
    let config = docker.inspect_container(&name, None).await.ok()?.config?;
    let settings = serde_json::from_str(config.labels?.get(LABEL_SETTINGS)?).ok()?;
    Some((settings, config.image))
}

/// Whether the running deployment uses flowgate's simulators, and else
/// the tag of its Hazelcast images (from the first Flow instance).
async fn current_profile(docker: &Docker, project: &str) -> (Profile, Option<String>) {
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
            (Profile::Real, image.rsplit_once(':').map(|(_, tag)| tag.to_string()))
        }
        _ => (Profile::Demo, None),
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

/// What a run of `up` deploys, resolved from its flags, flowgate.toml, the
/// running deployment and the defaults, in that order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub deployment: Deployment,
    pub profile: Profile,
    /// Tag of the Hazelcast images (real profile).
    pub tag: String,
    pub license: Option<String>,
    pub no_pull: bool,
    /// Only add or remove Flow instances (`scale`): new ones use the image
    /// the deployment runs, and changed settings are left for `up`.
    pub scale_only: bool,
    /// With `scale_only`: the image the deployment's proxy runs.
    pub running_image: Option<String>,
}

/// What runs now, as `up` needs it to resolve a target.
#[derive(Debug, Clone, Default)]
pub struct Running {
    pub settings: Option<Deployment>,
    pub profile: Option<(Profile, Option<String>)>,
    pub instances: u32,
    /// The image the proxy runs (flowgate's own, of the binary that made it).
    pub proxy_image: Option<String>,
}

impl Running {
    pub async fn read(docker: &Docker, project: &str) -> anyhow::Result<Running> {
        let (settings, proxy_image) = match previous_settings(docker, project).await {
            Some((settings, image)) => (Some(settings), image),
            None => (None, None),
        };
        let instances = engine::found(docker, project)
            .await?
            .iter()
            .filter(|f| f.role == Role::Flow)
            .count() as u32;
        let profile = match settings {
            Some(_) => Some(current_profile(docker, project).await),
            None => None,
        };
        Ok(Running {
            settings,
            profile,
            instances,
            proxy_image,
        })
    }
}

/// Flags win over flowgate.toml, which wins over what runs, which wins
/// over the defaults. The instance count of a running deployment is kept
/// unless a flag or the file sets one.
pub fn resolve(
    project: &str,
    args: &UpArgs,
    file: Option<&DeploymentFile>,
    running: &Running,
) -> anyhow::Result<Target> {
    let no_pull = args.no_pull;
    let args = &args.deployment;
    let empty = DeploymentFile::default();
    let file = file.unwrap_or(&empty);
    let previous = running.settings.as_ref();
    let domain = args
        .domain
        .clone()
        .or_else(|| file.domain.clone())
        .or_else(|| previous.map(|p| p.domain.clone()))
        .unwrap_or_else(|| "flow.localhost".into());
    check_domain(&domain).map_err(anyhow::Error::msg)?;
    let mc_domain = if args.domain.is_some() {
        format!("mc.{domain}")
    } else {
        file.mc_domain
            .clone()
            .or_else(|| file.domain.as_ref().map(|d| format!("mc.{d}")))
            .or_else(|| previous.map(|p| p.mc_domain.clone()))
            .unwrap_or_else(|| format!("mc.{domain}"))
    };
    let instances = args
        .instances
        .or(file.instances)
        .or_else(|| previous.map(|_| running.instances))
        .unwrap_or(3);
    if instances > MAX_INSTANCES {
        bail!("{instances} instances is more than flowgate runs ({MAX_INSTANCES})");
    }
    let profile = if args.demo {
        Profile::Demo
    } else {
        file.profile
            .or_else(|| running.profile.as_ref().map(|p| p.0))
            .unwrap_or(Profile::Real)
    };
    let tag = args
        .tag
        .clone()
        .or_else(|| file.tag.clone())
        .or_else(|| running.profile.as_ref().and_then(|p| p.1.clone()))
        .unwrap_or_else(|| "latest".into());
    let tls = file
        .tls
        .clone()
        .or_else(|| previous.map(|p| p.tls.clone()))
        .unwrap_or_default();
    if matches!(tls.mode, CertMode::Files) {
        for path in [&tls.cert, &tls.key].into_iter().flatten() {
            if !path.is_absolute() {
                bail!(
                    "the certificate file {} must be an absolute path (Docker mounts it)",
                    path.display()
                );
            }
        }
    }
    let http_port = args
        .http_port
        .or(file.http_port)
        .or_else(|| previous.map(|p| p.http_port))
        .unwrap_or(80);
    let https_port = args
        .https_port
        .or(file.https_port)
        .or_else(|| previous.map(|p| p.https_port))
        .unwrap_or(443);
    if http_port == https_port {
        bail!("the HTTP and HTTPS ports are both {http_port}; give them different ports");
    }
    Ok(Target {
        deployment: Deployment {
            project: project.into(),
            domain,
            mc_domain,
            instances,
            http_port,
            https_port,
            tls,
        },
        profile,
        tag,
        license: file
            .mc_license
            .clone()
            .or_else(|| settings::find_license(Path::new("."))),
        no_pull,
        scale_only: false,
        running_image: None,
    })
}

/// Where a deployment answers, once `apply` is done.
#[derive(Debug, Clone)]
pub struct Applied {
    pub flow_url: String,
    pub mc_url: String,
    pub instances: u32,
    /// The local CA clients trust (self-signed mode).
    pub ca: Option<PathBuf>,
}

pub async fn up(project: &str, args: UpArgs, file: Option<&DeploymentFile>) -> anyhow::Result<()> {
    let docker = super::connect().await?;
    let running = Running::read(&docker, project).await?;
    let target = resolve(project, &args, file, &running)?;
    let applied = apply(&docker, &target, &mut |line| progress(line)).await?;
    print_applied(&applied);
    Ok(())
}

fn print_applied(applied: &Applied) {
    println!("Flow: {}/", applied.flow_url);
    println!("Management Center: {}/", applied.mc_url);
    match &applied.ca {
        Some(ca) => println!("{} instances; clients trust {}", applied.instances, ca.display()),
        None => println!("{} instances", applied.instances),
    }
}

pub async fn scale(project: &str, instances: u32, file: Option<&DeploymentFile>) -> anyhow::Result<()> {
    let docker = super::connect().await?;
    scale_with(&docker, project, instances, &mut |line| progress(line)).await?;
    if let Some(wanted) = file.and_then(|f| f.instances).filter(|n| *n != instances) {
        eprintln!(
            "note: flowgate.toml says instances = {wanted}; `flowgate up` will go back to {wanted} unless you edit it"
        );
    }
    Ok(())
}

/// Scales a running deployment, keeping every other setting it runs with.
pub async fn scale_with(
    docker: &Docker,
    project: &str,
    instances: u32,
    progress: &mut (dyn FnMut(&str) + Send),
) -> anyhow::Result<Applied> {
    let running = Running::read(docker, project).await?;
    let Some(settings) = running.settings.clone() else {
        bail!("project {project} has no deployment to scale; create one with `flowgate up --demo --project {project}`");
    };
    if instances > MAX_INSTANCES {
        bail!("{instances} instances is more than flowgate runs ({MAX_INSTANCES})");
    }
    if instances == 0 {
        progress("scaling to 0: Flow will be unreachable until you scale up again");
    }
    let (profile, tag) = running.profile.clone().unwrap_or((Profile::Demo, None));
    let target = Target {
        deployment: Deployment { instances, ..settings },
        profile,
        tag: tag.unwrap_or_else(|| "latest".into()),
        license: settings::find_license(Path::new(".")),
        no_pull: true,
        scale_only: true,
        running_image: running.proxy_image.clone(),
    };
    apply(docker, &target, progress).await
}

/// Brings the deployment to `target`: plans against what exists and runs
/// the plan, reporting each step through `progress`.
pub async fn apply(
    docker: &Docker,
    target: &Target,
    progress: &mut (dyn FnMut(&str) + Send),
) -> anyhow::Result<Applied> {
    let dep = &target.deployment;
    let project = dep.project.as_str();
    if target.profile == Profile::Real && target.license.is_none() {
        bail!(
            "the real profile needs a Hazelcast licence: set MC_LICENSE in the environment, in ./.env or as mc_license in flowgate.toml, or use the demo profile (--demo)"
        );
    }
    let dir = settings::project_dir(project);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let token = project_token(&dir)?;
    write_atomic(&dir.join("proxy.toml"), settings::proxy_toml(dep).as_bytes(), 0o644)?;

    // Scaling keeps the image the deployment runs, as long as it is still here.
    let running_image = match (&target.running_image, target.scale_only) {
        (Some(image), true) if docker.inspect_image(image).await.is_ok() => Some(image.clone()),
        _ => None,
    };
    let image = match running_image {
        Some(image) => image,
        None => {
            let binary = std::env::current_exe().context("cannot find flowgate's own binary")?;
            super::image::ensure(docker, &binary, &mut *progress).await?
        }
    };
    let names = dep.names();
    let (specs, volumes) = match target.profile {
        Profile::Demo => (
            settings::demo_specs(dep, &image, &dir),
            vec![names.certificates_volume()],
        ),
        Profile::Real => {
            let real = settings::RealProfile {
                tag: target.tag.clone(),
                license: target.license.clone().unwrap_or_default(),
                db_password: project_secret(&dir, "db-password")?,
            };
            write_atomic(
                &dir.join("hazelcast.yml"),
                settings::hazelcast_yml(dep).as_bytes(),
                0o644,
            )?;
            let specs = settings::real_specs(dep, &image, &real, &dir);
            // Every image first: a missing one must stop the run before anything exists.
            for spec in specs.iter().filter(|s| s.role != Role::Proxy) {
                super::image::ensure_pulled(docker, &spec.image, !target.no_pull, &mut *progress).await?;
            }
            (specs, vec![names.certificates_volume(), names.postgres_volume()])
        }
    };
    let desired = Desired {
        names: names.clone(),
        containers: specs.iter().map(|s| s.wanted()).collect(),
        volumes,
    };
    let found = engine::found(docker, project).await?;
    let mut actions = plan(
        &desired,
        &found,
        engine::network_exists(docker, &names.network()).await,
        &engine::existing_volumes(docker, &desired.volumes).await,
    );
    if target.scale_only {
        let changed = actions.iter().filter(|a| matches!(a, Action::Replace { .. })).count();
        actions.retain(|a| !matches!(a, Action::Replace { .. }));
        if changed > 0 {
            progress(&format!(
                "{changed} containers run older settings or another flowgate version; `flowgate up` rolls them out"
            ));
        }
    }
    if actions.is_empty() {
        progress(&format!(
            "project {project} is up to date ({} instances)",
            dep.instances
        ));
    }
    let mut executor = Executor::new(docker, names, specs, token);
    executor.run(&actions, progress).await?;

    // Clients trust the proxy's local CA: keep a copy beside the token.
    let admin = executor.admin().await?;
    let (status, ca) = admin.get_text("/api/v1/certificates/ca").await?;
    let ca_path = dir.join("ca.pem");
    let ca = if status == 200 {
        write_atomic(&ca_path, ca.as_bytes(), 0o644)?;
        Some(ca_path)
    } else {
        None
    };
    Ok(Applied {
        flow_url: dep.flow_origin(),
        mc_url: dep.mc_origin(),
        instances: dep.instances,
        ca,
    })
}

pub async fn down(project: &str, args: DownArgs) -> anyhow::Result<()> {
    let docker = super::connect().await?;
    down_with(&docker, project, args.volumes, &mut |line| progress(line)).await
}

/// Removes the project's containers and network (and volumes and project
/// dir with `volumes`), reporting each through `progress`.
pub async fn down_with(
    docker: &Docker,
    project: &str,
    volumes: bool,
    progress: &mut (dyn FnMut(&str) + Send),
) -> anyhow::Result<()> {
    let found = engine::found(docker, project).await?;
    for f in &found {
        progress(&format!("removing {}", f.name));
        engine::remove_container(docker, &f.name).await?;
    }
    let names = super::plan::Names {
        project: project.into(),
    };
    if docker.remove_network(&names.network()).await.is_ok() {
        progress(&format!("removed network {}", names.network()));
    }
    if volumes {
        for volume in [names.certificates_volume(), names.postgres_volume()] {
            if docker
                .remove_volume(&volume, None::<bollard::query_parameters::RemoveVolumeOptions>)
                .await
                .is_ok()
            {
                progress(&format!("removed volume {volume}"));
            }
        }
        let _ = std::fs::remove_dir_all(settings::project_dir(project));
    } else {
        progress("kept the certificate volume (remove it with --volumes)");
    }
    if found.is_empty() {
        progress(&format!("project {project} had no containers"));
    }
    Ok(())
}

/// An executor for single-instance work (restart, drain) on a running project.
fn executor<'a>(docker: &'a Docker, project: &str) -> anyhow::Result<Executor<'a>> {
    let names = super::plan::Names {
        project: project.into(),
    };
    Ok(Executor::new(
        docker,
        names,
        Vec::new(),
        settings::admin_token(project)?,
    ))
}

/// Restarts one container; a Flow instance is registered with the proxy
/// again (it may have been drained) and waited for until healthy.
pub async fn restart(docker: &Docker, project: &str, name: &str) -> anyhow::Result<()> {
    let options = bollard::query_parameters::RestartContainerOptionsBuilder::default()
        .t(10)
        .build();
    docker
        .restart_container(name, Some(options))
        .await
        .with_context(|| format!("cannot restart {name}"))?;
    let is_flow = engine::found(docker, project)
        .await?
        .iter()
        .any(|f| f.name == name && f.role == Role::Flow);
    if is_flow {
        executor(docker, project)?.register(name, None).await?;
    }
    Ok(())
}

/// Takes one Flow instance out of the proxy's rotation: in-flight requests
/// finish, WebSocket sessions get 1001 after the drain window. The
/// container keeps running; `restart` brings it back.
pub async fn drain(docker: &Docker, project: &str, name: &str) -> anyhow::Result<()> {
    executor(docker, project)?.drain(name).await
}

/// One picture of the deployment from the live feeds: waits (at most a
/// few seconds) until Docker, two backend samples and each running
/// container's stats have arrived.
pub async fn snapshot(docker: &Docker, project: &str) -> anyhow::Result<Snapshot> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    let feeds = feeds::start(docker.clone(), project, tx);
    let mut state = State::new(project);
    let mut containers_seen = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let feed = tokio::select! {
            feed = rx.recv() => feed,
            _ = tokio::time::sleep_until(deadline) => None,
        };
        let Some(feed) = feed else { break };
        if let Feed::Containers(list) = &feed {
            if list.is_empty() {
                bail!("project {project} has no deployment; create one with `flowgate up --demo --project {project}`");
            }
            containers_seen = true;
        }
        state.apply(feed);
        let snap = state.snapshot(crate::tls::now_unix());
        let admin_known = state.samples >= 2 || matches!(state.admin, Some(Err(_)));
        let stats_known = snap
            .instances
            .iter()
            .all(|i| i.state != "running" || i.cpu_percent.is_some());
        if containers_seen && admin_known && stats_known {
            break;
        }
    }
    if !containers_seen {
        bail!("Docker did not list the containers of project {project} within 5 s");
    }
    if let Some(dep) = feeds.deployment.borrow().as_ref() {
        state.flow_url = Some(dep.flow_origin());
        state.mc_url = Some(dep.mc_origin());
    }
    Ok(state.snapshot(crate::tls::now_unix()))
}

pub async fn status(project: &str, args: StatusArgs) -> anyhow::Result<()> {
    let docker = super::connect().await?;
    let snap = snapshot(&docker, project).await?;
    if args.json {
        crate::cli::print(&format!("{}\n", serde_json::to_string_pretty(&snap)?))?;
        return Ok(());
    }
    crate::cli::print(&status_text(&snap))?;
    Ok(())
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
            c.domains.join(", "),
            c.issuer,
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
    let _ = writeln!(
        out,
        "{:<24} {:<9} {:<10} {:>6} {:>8} {:>8} {:>8} {:>6} {:>9} {:>8}",
        "INSTANCE", "STATE", "HEALTH", "WS", "HB/s", "REQ/s", "P99ms", "CPU%", "MEMORY", "RESTARTS"
    );
    let num = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    for i in &snap.instances {
        let _ = writeln!(
            out,
            "{:<24} {:<9} {:<10} {:>6} {:>8} {:>8} {:>8} {:>6} {:>9} {:>8}",
            i.name,
            i.state,
            i.health,
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
    out
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
    use super::*;

    fn args() -> UpArgs {
        UpArgs::default()
    }

    #[test]
    fn flags_win_over_the_file_which_wins_over_what_runs() {
        let file = crate::config::deployment::parse(
            "profile = \"demo\"\ndomain = \"flow.example.com\"\ninstances = 4\nhttp_port = 8080\n",
            None,
        )
        .unwrap();
        let running = Running {
            settings: Some(Deployment {
                project: "p".into(),
                domain: "old.example.com".into(),
                mc_domain: "mc.old.example.com".into(),
                instances: 2,
                http_port: 80,
                https_port: 8443,
                tls: Default::default(),
            }),
            profile: Some((Profile::Real, Some("6.0".into()))),
            instances: 2,
            proxy_image: None,
        };
        let target = resolve("p", &args(), Some(&file), &running).unwrap();
        let dep = &target.deployment;
        assert_eq!(
            (dep.domain.as_str(), dep.mc_domain.as_str()),
            ("flow.example.com", "mc.flow.example.com")
        );
        assert_eq!((dep.instances, dep.http_port, dep.https_port), (4, 8080, 8443));
        assert_eq!((target.profile, target.tag.as_str()), (Profile::Demo, "6.0"));

        let mut flags = args();
        flags.deployment.instances = Some(6);
        flags.deployment.domain = Some("flow.other.org".into());
        let target = resolve("p", &flags, Some(&file), &running).unwrap();
        assert_eq!(target.deployment.instances, 6);
        assert_eq!(target.deployment.mc_domain, "mc.flow.other.org");

        // Without a file, a running deployment keeps its size and profile.
        let target = resolve("p", &args(), None, &running).unwrap();
        assert_eq!((target.deployment.instances, target.profile), (2, Profile::Real));
    }

    #[test]
    fn defaults_and_refusals() {
        let target = resolve("p", &args(), None, &Running::default()).unwrap();
        assert_eq!(target.deployment.instances, 3);
        assert_eq!((target.deployment.http_port, target.deployment.https_port), (80, 443));
        assert_eq!(target.deployment.mc_domain, "mc.flow.localhost");
        let mut same = args();
        same.deployment.http_port = Some(443);
        assert!(resolve("p", &same, None, &Running::default()).is_err());
        let mut bad = args();
        bad.deployment.domain = Some("https://flow".into());
        assert!(resolve("p", &bad, None, &Running::default()).is_err());
    }

    #[test]
    fn instance_names_accept_short_forms() {
        assert_eq!(container_of("demo", "2"), "demo-flow-2");
        assert_eq!(container_of("demo", "flow-2"), "demo-flow-2");
        assert_eq!(container_of("demo", "proxy"), "demo-proxy");
        assert_eq!(container_of("demo", "demo-mc"), "demo-mc");
    }
}
