//! The operations on a deployment that `up`, `scale`, `down`, `logs` and
//! the dashboard share: resolve what is wanted, apply it, scale, restart,
//! drain, take down, read logs. Each reads what exists from Docker labels,
//! so they work from any shell, whether or not the dashboard ran.

use std::path::{Path, PathBuf};
use std::time::Duration;

use std::net::{IpAddr, Ipv4Addr};

use bollard::Docker;
use futures_util::{Stream, StreamExt};

use super::DeployError;
use super::engine::{self, Executor};
use super::plan::{Action, Desired, Role, plan};
use super::settings::{self, Deployment};
use super::swarm;
use crate::config::deployment::{CertMode, DeploymentFile, Engine, Profile};
use crate::fsutil::write_atomic;

/// The deployment's settings given on the command line: they win over
/// flowgate.toml, which wins over what runs, which wins over the defaults.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub instances: Option<u32>,
    /// flowgate's simulators instead of the Hazelcast images.
    pub demo: bool,
    pub domain: Option<String>,
    pub http_port: Option<u16>,
    pub https_port: Option<u16>,
    /// Tag of the Hazelcast images (real profile).
    pub tag: Option<String>,
    /// The address the ports are published on.
    pub bind: Option<IpAddr>,
    /// Use only images already on this machine.
    pub no_pull: bool,
    /// Services on the Docker Swarm this engine manages.
    pub swarm: bool,
}

/// The settings a running deployment was made with (from its proxy's
/// label), and the image its proxy runs.
async fn previous_settings(docker: &Docker, project: &str) -> Option<(Deployment, Option<String>)> {
    let names = super::plan::Names {
        project: project.into(),
    };
    let name = names.container(Role::Proxy, None);
    if let Ok(inspect) = docker.inspect_container(&name, None).await {
        let config = inspect.config?;
        let settings = Deployment::from_labels(config.labels.as_ref()?)?;
        return Some((settings, config.image));
    }
    let (labels, image) = swarm::service_labels_and_image(docker, &names.service(Role::Proxy)).await?;
    Some((Deployment::from_labels(&labels)?, Some(image)))
}

/// Whether the running deployment uses flowgate's simulators, and else
/// the tag of its Hazelcast images (from the first Flow instance).
async fn current_profile(docker: &Docker, project: &str) -> (Profile, Option<String>) {
    let flow = super::plan::Names {
        project: project.into(),
    }
    .container(Role::Flow, Some(1));
    let mut image = docker
        .inspect_container(&flow, None)
        .await
        .ok()
        .and_then(|c| c.config?.image);
    if image.is_none() {
        let service = super::plan::Names {
            project: project.into(),
        }
        .service(Role::Flow);
        image = swarm::service_labels_and_image(docker, &service)
            .await
            .map(|(_, image)| image);
    }
    match image {
        Some(image) if !image.starts_with(super::image::REPOSITORY) => {
            (Profile::Real, image.rsplit_once(':').map(|(_, tag)| tag.to_string()))
        }
        _ => (Profile::Demo, None),
    }
}

/// A random secret kept in the project dir (mode 0600), made on first use:
/// the admin token, the database password.
fn project_secret(dir: &Path, name: &str) -> Result<String, DeployError> {
    let path = dir.join(name);
    crate::fsutil::secret(&path).map_err(|source| DeployError::Write { path, source })
}

/// Whether the proxy's user may read `path` (following links) and enter
/// its directory, by the owner, group or other bits (`access` is not asked:
/// it answers for this process's user). A file or directory with an access
/// ACL is let through: its bits do not tell, and the proxy's own start says
/// so if it still cannot read.
fn readable_by_proxy(path: &Path) -> Result<(), DeployError> {
    use std::os::unix::fs::MetadataExt;
    let uid = super::image::USER;
    let may = |meta: &std::fs::Metadata, bits: u32| {
        let mode = meta.mode();
        (meta.uid() == uid && mode & (bits << 6) != 0)
            || (meta.gid() == uid && mode & (bits << 3) != 0)
            || mode & bits != 0
    };
    let unreadable = |p: &Path, meta: &std::fs::Metadata| DeployError::Unreadable {
        path: p.to_path_buf(),
        uid,
        owner: meta.uid(),
        mode: meta.mode() & 0o7777,
    };
    let meta = std::fs::metadata(path).map_err(|source| DeployError::Read {
        path: path.display().to_string(),
        source,
    })?;
    if !may(&meta, 0o4) && !has_acl(path) {
        return Err(unreadable(path, &meta));
    }
    // Its directory, and the one a link points into (certbot's archive/).
    let target = std::fs::canonicalize(path).ok();
    for dir in [path.parent(), target.as_deref().and_then(Path::parent)]
        .into_iter()
        .flatten()
    {
        if let Ok(meta) = std::fs::metadata(dir) {
            if !may(&meta, 0o1) && !has_acl(dir) {
                return Err(unreadable(dir, &meta));
            }
        }
    }
    Ok(())
}

/// Whether `path` has an access ACL (then the mode bits do not tell).
fn has_acl(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(name) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a NUL-terminated path and attribute name, and no buffer (size 0 asks the length).
    let size = unsafe {
        libc::getxattr(
            name.as_ptr(),
            c"system.posix_acl_access".as_ptr(),
            std::ptr::null_mut(),
            0,
        )
    };
    size > 0
}

/// Writes one of the project's files.
fn write_project_file(path: &Path, text: &str, mode: u32) -> Result<(), DeployError> {
    write_atomic(path, text.as_bytes(), mode).map_err(|source| DeployError::Write {
        path: path.to_path_buf(),
        source,
    })
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
    pub async fn read(docker: &Docker, project: &str) -> Result<Running, DeployError> {
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
/// unless a flag or the file sets one. The result keeps every rule of
/// [`Deployment::validate`].
pub fn resolve(
    project: &str,
    args: &Overrides,
    file: Option<&DeploymentFile>,
    running: &Running,
) -> Result<Target, DeployError> {
    let no_pull = args.no_pull;
    let empty = DeploymentFile::default();
    let file = file.unwrap_or(&empty);
    let previous = running.settings.as_ref();
    let domain = args
        .domain
        .clone()
        .or_else(|| file.domain.clone())
        .or_else(|| previous.map(|p| p.domain.clone()))
        .unwrap_or_else(|| "flow.localhost".into());
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
    // A load balancer must be reachable from everywhere; a demo only here.
    let bind = args
        .bind
        .or(file.bind)
        .or_else(|| previous.and_then(|p| p.bind))
        .unwrap_or(match profile {
            Profile::Demo => IpAddr::V4(Ipv4Addr::LOCALHOST),
            Profile::Real => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        });
    let resources = file.resources.over(previous.map(|p| p.resources).unwrap_or_default());
    let deployment = Deployment {
        project: project.into(),
        domain,
        mc_domain,
        instances,
        http_port,
        https_port,
        tls,
        bind: Some(bind),
        resources,
        rebalance: file
            .rebalance
            .or_else(|| previous.map(|p| p.rebalance))
            .unwrap_or_default(),
        engine: if args.swarm {
            Engine::Swarm
        } else {
            file.engine.or_else(|| previous.map(|p| p.engine)).unwrap_or_default()
        },
    };
    deployment.validate()?;
    Ok(Target {
        deployment,
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

/// Scales a running deployment, keeping every other setting it runs with.
pub async fn scale_with(
    docker: &Docker,
    project: &str,
    instances: u32,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<Applied, DeployError> {
    let running = Running::read(docker, project).await?;
    let Some(settings) = running.settings.clone() else {
        return Err(DeployError::NoDeployment {
            project: project.into(),
        });
    };
    let deployment = Deployment { instances, ..settings };
    deployment.validate()?;
    if instances == 0 {
        progress("scaling to 0: Flow will be unreachable until you scale up again");
    }
    let (profile, tag) = running.profile.clone().unwrap_or((Profile::Demo, None));
    let target = Target {
        deployment,
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
) -> Result<Applied, DeployError> {
    let dep = &target.deployment;
    dep.validate()?;
    let project = dep.project.as_str();
    if target.profile == Profile::Real && target.license.is_none() {
        return Err(DeployError::NoLicense);
    }
    // One engine's containers and a Swarm's services of one project never
    // mix; said before any image is built or pulled.
    let on_swarm = swarm::deployed(docker, project).await;
    match dep.engine {
        Engine::Swarm if !on_swarm && !engine::found(docker, project).await?.is_empty() => {
            return Err(DeployError::OtherEngine {
                project: project.into(),
                running: "one Docker engine",
                wanted: "Swarm",
            });
        }
        Engine::Single if on_swarm => {
            return Err(DeployError::OtherEngine {
                project: project.into(),
                running: "Swarm",
                wanted: "one Docker engine",
            });
        }
        Engine::Swarm => {
            swarm::manager(docker).await?;
        }
        Engine::Single => {}
    }
    let names = dep.names();
    let volumes = match target.profile {
        Profile::Demo => vec![names.certificates_volume()],
        Profile::Real => vec![
            names.certificates_volume(),
            names.postgres_volume(),
            names.secrets_volume(),
        ],
    };
    // A network or volume of our name that flowgate did not make is left
    // alone: using it would hand someone else's data to this deployment.
    let network = engine::network_owner(docker, &names.network(), project).await;
    let mut ours = Vec::new();
    let mut owners = vec![("network", names.network(), network)];
    for volume in &volumes {
        owners.push((
            "volume",
            volume.clone(),
            engine::volume_owner(docker, volume, project).await,
        ));
    }
    for (kind, name, owner) in owners {
        match owner {
            engine::Owner::Foreign => {
                return Err(DeployError::ForeignObject {
                    kind,
                    name,
                    project: project.into(),
                });
            }
            engine::Owner::Ours if kind == "volume" => ours.push(name),
            _ => {}
        }
    }
    if dep.tls.mode == CertMode::Files {
        for path in [&dep.tls.cert, &dep.tls.key].into_iter().flatten() {
            readable_by_proxy(path)?;
        }
    }
    let dir = settings::project_dir(project);
    let token = project_secret(&dir, "admin-token")?;
    let proxy_toml = match dep.engine {
        Engine::Single => settings::proxy_toml(dep),
        Engine::Swarm => settings::swarm_proxy_toml(dep),
    };
    write_project_file(&dir.join("proxy.toml"), &proxy_toml, 0o644)?;

    // Scaling keeps the image the deployment runs, as long as it is still here.
    let running_image = match (&target.running_image, target.scale_only) {
        (Some(image), true) if docker.inspect_image(image).await.is_ok() => Some(image.clone()),
        _ => None,
    };
    let image = match running_image {
        Some(image) => image,
        None => {
            let binary = std::env::current_exe().map_err(DeployError::OwnBinary)?;
            super::image::ensure(docker, &binary, &mut *progress).await?
        }
    };
    // On Swarm one spec of each role is its service's template, even at 0 instances.
    let shaped = match dep.engine {
        Engine::Swarm => Deployment {
            instances: dep.instances.max(1),
            ..dep.clone()
        },
        Engine::Single => dep.clone(),
    };
    let mut specs = match target.profile {
        Profile::Demo => settings::demo_specs(&shaped, &image, &dir),
        Profile::Real => {
            let real = settings::RealProfile {
                tag: target.tag.clone(),
                license: target.license.clone().unwrap_or_default(),
                db_password: project_secret(&dir, "db-password")?,
            };
            let specs = settings::real_specs(&shaped, &image, &real, &dir);
            let hazelcast = dir.join("hazelcast.yml");
            if dep.engine == Engine::Single {
                // Written first: the operator can read the member list even when an image is missing.
                write_project_file(&hazelcast, &settings::hazelcast_yml(dep, None), 0o644)?;
            }
            // Every image first: a missing one must stop the run before anything exists.
            for spec in specs.iter().filter(|s| s.role != Role::Proxy) {
                super::image::ensure_pulled(docker, &spec.image, !target.no_pull, &mut *progress).await?;
            }
            if dep.engine == Engine::Swarm {
                // Hazelcast's members find each other on the overlay network.
                let subnet = swarm::overlay_network(docker, &names, progress).await?;
                let interface = subnet.as_deref().and_then(settings::hazelcast_interface);
                write_project_file(&hazelcast, &settings::hazelcast_yml(dep, interface.as_deref()), 0o644)?;
            }
            specs
        }
    };
    match dep.engine {
        Engine::Swarm => {
            swarm::apply(
                docker,
                &names,
                &specs,
                dep.instances,
                &token,
                target.scale_only,
                progress,
            )
            .await?;
            let admin = crate::proxy::client::AdminClient::new(engine::admin_address(docker, &names).await?, &token);
            return applied(dep, &admin, &dir, progress).await;
        }
        Engine::Single => {}
    }
    for proxy in specs.iter_mut().filter(|s| s.role == Role::Proxy) {
        proxy.secrets.push(settings::admin_token_secret(&token));
    }
    let desired = Desired {
        names: names.clone(),
        containers: specs.iter().map(|s| s.wanted()).collect(),
        volumes,
    };
    let found = engine::found(docker, project).await?;
    let mut actions = plan(&desired, &found, network == engine::Owner::Ours, &ours);
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

    let admin = executor.admin().await?;
    applied(dep, &admin, &dir, progress).await
}

/// Where the deployment answers; clients trust the proxy's local CA, so a
/// copy of it is kept beside the token.
async fn applied(
    dep: &Deployment,
    admin: &crate::proxy::client::AdminClient,
    dir: &Path,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<Applied, DeployError> {
    let ca = match admin.local_ca().await? {
        Some(pem) => {
            let path = dir.join("ca.pem");
            let before = std::fs::read_to_string(&path).ok();
            write_project_file(&path, &pem, 0o644)?;
            if before.is_some_and(|b| b != pem) {
                progress(&format!(
                    "the proxy made a new local CA (the domains changed, or the old one could sign for any name): clients must trust {} again",
                    path.display()
                ));
            }
            Some(path)
        }
        None => None,
    };
    Ok(Applied {
        flow_url: dep.flow_origin(),
        mc_url: dep.mc_origin(),
        instances: dep.instances,
        ca,
    })
}

/// Removes the project's containers and network (and volumes and project
/// dir with `volumes`), reporting each through `progress`.
pub async fn down(
    docker: &Docker,
    project: &str,
    volumes: bool,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<(), DeployError> {
    let names = super::plan::Names {
        project: project.into(),
    };
    let on_swarm = swarm::deployed(docker, project).await;
    if on_swarm {
        swarm::down(docker, &names, progress).await?;
    }
    let found = if on_swarm {
        Vec::new()
    } else {
        engine::found(docker, project).await?
    };
    for f in &found {
        progress(&format!("removing {}", f.name));
        engine::remove_container(docker, &f.name).await?;
    }
    let foreign = |kind: &str, name: &str| {
        format!(
            "left the {kind} {name} alone: it has no io.flowgate.project={project} label, so flowgate did not make it"
        )
    };
    match engine::network_owner(docker, &names.network(), project).await {
        engine::Owner::Ours => match docker.remove_network(&names.network()).await {
            Ok(()) => progress(&format!("removed network {}", names.network())),
            Err(e) => progress(&format!("could not remove network {}: {e}", names.network())),
        },
        engine::Owner::Foreign => progress(&foreign("network", &names.network())),
        engine::Owner::Missing => {}
    }
    if found.is_empty() && !on_swarm {
        progress(&format!("project {project} had no containers"));
    }
    if !volumes {
        progress("kept the volumes (certificates, database; remove them with --volumes)");
        return Ok(());
    }
    let mut failed = Vec::new();
    for volume in [
        names.certificates_volume(),
        names.postgres_volume(),
        names.secrets_volume(),
    ] {
        match engine::volume_owner(docker, &volume, project).await {
            engine::Owner::Ours => {
                match docker
                    .remove_volume(&volume, None::<bollard::query_parameters::RemoveVolumeOptions>)
                    .await
                {
                    Ok(()) => progress(&format!("removed volume {volume}")),
                    Err(e) => failed.push(format!("{volume} ({e})")),
                }
            }
            engine::Owner::Foreign => progress(&foreign("volume", &volume)),
            engine::Owner::Missing => {}
        }
    }
    let dir = settings::project_dir(project);
    if !failed.is_empty() {
        // The project dir holds what the surviving data needs (the database password).
        return Err(DeployError::VolumesKept {
            volumes: failed.join(", "),
            dir,
        });
    }
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => progress(&format!("removed {}", dir.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => progress(&format!("could not remove {}: {e}", dir.display())),
    }
    Ok(())
}

/// An executor for single-instance work (restart, drain) on a running project.
fn executor<'a>(docker: &'a Docker, project: &str) -> Result<Executor<'a>, DeployError> {
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
pub async fn restart(docker: &Docker, project: &str, name: &str) -> Result<(), DeployError> {
    if swarm::deployed(docker, project).await {
        return swarm::restart(docker, project, name).await;
    }
    let options = bollard::query_parameters::RestartContainerOptionsBuilder::default()
        .t(10)
        .build();
    docker
        .restart_container(name, Some(options))
        .await
        .map_err(DeployError::docker(format!("cannot restart {name}")))?;
    let is_flow = engine::found(docker, project)
        .await?
        .iter()
        .any(|f| f.name == name && f.role == Role::Flow);
    if is_flow {
        executor(docker, project)?.register(name, None).await?;
    }
    Ok(())
}

/// Spreads the WebSocket sessions over the Flow instances again and waits
/// until they are even (or the proxy gives up), reporting each second.
pub async fn rebalance(
    docker: &Docker,
    project: &str,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<crate::proxy::rebalance::RebalanceReport, DeployError> {
    let admin = executor(docker, project)?.admin().await?;
    let mut report = admin.rebalance("flow").await?;
    let mut shown = u64::MAX;
    while report.running {
        if report.moved != shown && !report.sessions.is_empty() {
            let spread: Vec<String> = report.sessions.iter().map(|(b, n)| format!("{b} {n}")).collect();
            progress(&format!(
                "{} sessions asked to reconnect; now {}",
                report.moved,
                spread.join(", ")
            ));
            shown = report.moved;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        report = admin.rebalance_report("flow").await?;
    }
    Ok(report)
}

/// Takes one Flow instance out of the proxy's rotation: in-flight requests
/// finish, WebSocket sessions get 1001 after the drain window. The
/// container keeps running; `restart` brings it back.
pub async fn drain(docker: &Docker, project: &str, name: &str) -> Result<(), DeployError> {
    if swarm::deployed(docker, project).await {
        // The proxy follows Swarm's DNS: a drained task that still runs
        // would be found again at the next lookup.
        return Err(DeployError::DrainOnSwarm(name.into()));
    }
    executor(docker, project)?.drain(name).await
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

/// Where a chunk of a container's log came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogSource {
    Stdout,
    Stderr,
}

/// The log of `instance` (see [`container_of`]): the last `tail` lines,
/// then, with `follow`, what the container writes until it stops.
/// An unknown instance is an error that lists the project's containers.
pub async fn logs(
    docker: &Docker,
    project: &str,
    instance: &str,
    follow: bool,
    tail: u32,
) -> Result<futures_util::stream::BoxStream<'static, Result<(LogSource, Vec<u8>), DeployError>>, DeployError> {
    let names = super::plan::Names {
        project: project.into(),
    };
    let options = bollard::query_parameters::LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .follow(follow)
        .tail(&tail.to_string())
        .build();
    let name = container_of(project, instance);
    if swarm::deployed(docker, project).await {
        // A task's log, wherever it runs: `flow-2` is slot 2 of Flow's service.
        let (role, slot) = match name.strip_prefix(&format!("{project}-")) {
            Some(rest) => match rest.rsplit_once('-') {
                Some(("flow", n)) => (Some(Role::Flow), n.parse().ok()),
                _ => (Role::parse(rest), None),
            },
            None => (None, None),
        };
        let task = match role {
            Some(role) => swarm::task_of(docker, &names, role, slot).await,
            None => None,
        };
        let Some(task) = task else {
            let known: Vec<String> = engine::list(docker, project)
                .await?
                .into_iter()
                .map(|l| l.found.name)
                .collect();
            return Err(DeployError::NoContainer {
                name,
                project: project.into(),
                known: known.join(", "),
            });
        };
        let what = format!("reading the log of {name}");
        return Ok(log_chunks(docker.task_logs(&task, Some(options)), what).boxed());
    }
    if docker.inspect_container(&name, None).await.is_err() {
        let known: Vec<String> = engine::found(docker, project)
            .await?
            .into_iter()
            .map(|f| f.name.trim_start_matches('/').to_string())
            .collect();
        return Err(DeployError::NoContainer {
            name,
            project: project.into(),
            known: if known.is_empty() {
                "none".into()
            } else {
                known.join(", ")
            },
        });
    }
    let what = format!("reading the log of {name}");
    Ok(log_chunks(docker.logs(&name, Some(options)), what).boxed())
}

/// Docker's log chunks as (source, bytes).
fn log_chunks(
    chunks: impl Stream<Item = Result<bollard::container::LogOutput, bollard::errors::Error>> + Send + 'static,
    what: String,
) -> impl Stream<Item = Result<(LogSource, Vec<u8>), DeployError>> + Send + 'static {
    chunks.map(move |chunk| {
        let chunk = chunk.map_err(DeployError::docker(what.clone()))?;
        Ok(match chunk {
            bollard::container::LogOutput::StdErr { message } => (LogSource::Stderr, message.to_vec()),
            other => (LogSource::Stdout, other.into_bytes().to_vec()),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> Overrides {
        Overrides::default()
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
                bind: None,
                resources: Default::default(),
                rebalance: Default::default(),
                engine: Default::default(),
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
        flags.instances = Some(6);
        flags.domain = Some("flow.other.org".into());
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
        same.http_port = Some(443);
        assert!(resolve("p", &same, None, &Running::default()).is_err());
        let mut bad = args();
        bad.domain = Some("https://flow".into());
        assert!(resolve("p", &bad, None, &Running::default()).is_err());
    }

    #[test]
    fn certificate_files_the_proxy_cannot_read_are_named_with_the_way_out() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("flowgate-readable-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let key = dir.join("privkey.pem");
        std::fs::write(&key, "key").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let error = readable_by_proxy(&key).unwrap_err().to_string();
        assert!(
            error.contains("cannot read") && error.contains("setfacl -m u:65532:r"),
            "{error}"
        );
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(readable_by_proxy(&key).is_ok());
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let error = readable_by_proxy(&key).unwrap_err().to_string();
        assert!(error.contains(&format!("cannot read {}", dir.display())), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn instance_names_accept_short_forms() {
        assert_eq!(container_of("demo", "2"), "demo-flow-2");
        assert_eq!(container_of("demo", "flow-2"), "demo-flow-2");
        assert_eq!(container_of("demo", "proxy"), "demo-proxy");
        assert_eq!(container_of("demo", "demo-mc"), "demo-mc");
    }
}
