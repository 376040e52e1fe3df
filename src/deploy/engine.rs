//! The executor: carries out the planner's actions on the Docker engine
//! through bollard, and registers, waits for and drains Flow instances
//! through the proxy's admin API. What a failed run created is removed
//! again, so nothing half-made is left behind.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, HealthConfig, HealthStatusEnum, HostConfig, NetworkCreateRequest, PortBinding, RestartPolicy,
    RestartPolicyNameEnum, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
    StopContainerOptionsBuilder,
};

use super::DeployError;
use super::plan::{Action, Found, LABEL_PROJECT, Names, Role};
use super::settings::{ADMIN_PORT, ContainerSpec, FLOW_PORT};
use crate::proxy::admin::BackendView;
use crate::proxy::backend::BackendState;
use crate::proxy::client::AdminClient;

/// How long a removed Flow instance drains (in-flight requests finish, then
/// WebSocket sessions get 1001).
pub const DRAIN: Duration = Duration::from_secs(5);
/// How long a stopping container gets before it is killed.
const STOP_GRACE: i64 = 10;

/// One container of a project as Docker lists it.
#[derive(Debug, Clone)]
pub struct Listed {
    pub found: Found,
    /// Docker's id and state (`running`, `exited`, ...): together they
    /// change whenever the container does.
    pub id: String,
    pub state: String,
    /// The Swarm node it runs on (None on a single engine).
    pub node: Option<String>,
    /// Its address on the project's network, as the proxy's backends
    /// name it (Swarm tasks; None when unknown).
    pub address: Option<String>,
    /// The container to inspect and sample on the engine flowgate talks
    /// to: the container itself, or a Swarm task's when it runs here.
    pub container: Option<String>,
}

/// Every container that carries the project's label, with the identity
/// its labels give (containers of roles flowgate does not know are left out).
pub async fn list(docker: &Docker, project: &str) -> Result<Vec<Listed>, DeployError> {
    if super::swarm::deployed(docker, project).await {
        return super::swarm::list(docker, project).await;
    }
    let filters = HashMap::from([("label", vec![format!("{LABEL_PROJECT}={project}")])]);
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    let list = docker
        .list_containers(Some(options))
        .await
        .map_err(DeployError::docker(format!(
            "cannot list the containers of project {project}"
        )))?;
    Ok(list
        .iter()
        .filter_map(|c| {
            let labels: BTreeMap<String, String> = c.labels.clone().unwrap_or_default().into_iter().collect();
            let name = c.names.as_ref()?.first()?.clone();
            let running = matches!(c.state, Some(bollard::models::ContainerSummaryStateEnum::RUNNING));
            let found = Found::from_labels(&name, &labels, running)?;
            Some(Listed {
                container: Some(found.name.clone()),
                found,
                id: c.id.clone().unwrap_or_default(),
                state: c.state.map(|s| s.to_string()).unwrap_or_default(),
                node: None,
                address: None,
            })
        })
        .collect())
}

/// The containers of a project, from their labels.
pub async fn found(docker: &Docker, project: &str) -> Result<Vec<Found>, DeployError> {
    Ok(list(docker, project).await?.into_iter().map(|l| l.found).collect())
}

/// Whose a network or volume of a project's name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Missing,
    /// It carries the project's label: flowgate made it for this project.
    Ours,
    /// It exists without the label: someone else's, never touched.
    Foreign,
}

fn owner_of(labels: Option<&HashMap<String, String>>, project: &str) -> Owner {
    match labels.and_then(|l| l.get(LABEL_PROJECT)) {
        Some(p) if p == project => Owner::Ours,
        _ => Owner::Foreign,
    }
}

pub async fn network_owner(docker: &Docker, name: &str, project: &str) -> Owner {
    match docker.inspect_network(name, None).await {
        Ok(network) => owner_of(network.labels.as_ref(), project),
        Err(_) => Owner::Missing,
    }
}

pub async fn volume_owner(docker: &Docker, name: &str, project: &str) -> Owner {
    match docker.inspect_volume(name).await {
        Ok(volume) => owner_of(Some(&volume.labels), project),
        Err(_) => Owner::Missing,
    }
}

/// Something this run created, to take away again if the run fails.
enum Created {
    Network(String),
    Volume(String),
    Container(String),
}

pub struct Executor<'a> {
    pub docker: &'a Docker,
    pub names: Names,
    pub specs: Vec<ContainerSpec>,
    pub token: String,
    created: Vec<Created>,
}

impl<'a> Executor<'a> {
    pub fn new(docker: &'a Docker, names: Names, specs: Vec<ContainerSpec>, token: String) -> Self {
        Executor {
            docker,
            names,
            specs,
            token,
            created: Vec::new(),
        }
    }

    /// Runs the actions in order, reporting each; on failure removes what
    /// this run created and returns the error.
    pub async fn run(
        &mut self,
        actions: &[Action],
        progress: &mut (dyn FnMut(&str) + Send),
    ) -> Result<(), DeployError> {
        for action in actions {
            progress(&format!("{action} ..."));
            let started = Instant::now();
            if let Err(e) = self.apply(action).await {
                self.roll_back(progress).await;
                return Err(DeployError::Step {
                    action: action.to_string(),
                    source: Box::new(e),
                });
            }
            progress(&format!("{action}: done in {:.1}s", started.elapsed().as_secs_f64()));
        }
        Ok(())
    }

    async fn roll_back(&mut self, progress: &mut (dyn FnMut(&str) + Send)) {
        while let Some(object) = self.created.pop() {
            match object {
                Created::Container(name) => {
                    progress(&format!("rolling back: removing container {name}"));
                    let _ = remove_container(self.docker, &name).await;
                }
                Created::Volume(name) => {
                    progress(&format!("rolling back: removing volume {name}"));
                    let _ = self
                        .docker
                        .remove_volume(&name, None::<bollard::query_parameters::RemoveVolumeOptions>)
                        .await;
                }
                Created::Network(name) => {
                    progress(&format!("rolling back: removing network {name}"));
                    let _ = self.docker.remove_network(&name).await;
                }
            }
        }
    }

    /// The spec the planner's action names; the planner only names specs it was given.
    fn spec(&self, role: Role, index: Option<u32>) -> ContainerSpec {
        self.specs
            .iter()
            .find(|s| s.role == role && s.index == index)
            .cloned()
            .unwrap_or_else(|| unreachable!("the plan names {} {index:?}, which has no spec", role.as_str()))
    }

    async fn apply(&mut self, action: &Action) -> Result<(), DeployError> {
        match action {
            Action::CreateNetwork(name) => {
                let labels: HashMap<String, String> = self.names.labels(None, None, None).into_iter().collect();
                self.docker
                    .create_network(NetworkCreateRequest {
                        name: name.clone(),
                        driver: Some("bridge".into()),
                        labels: Some(labels),
                        ..Default::default()
                    })
                    .await
                    .map_err(DeployError::docker(format!("cannot create the network {name}")))?;
                self.created.push(Created::Network(name.clone()));
            }
            Action::CreateVolume(name) => {
                let labels: HashMap<String, String> = self.names.labels(None, None, None).into_iter().collect();
                self.docker
                    .create_volume(VolumeCreateRequest {
                        name: Some(name.clone()),
                        labels: Some(labels),
                        ..Default::default()
                    })
                    .await
                    .map_err(DeployError::docker(format!("cannot create the volume {name}")))?;
                self.created.push(Created::Volume(name.clone()));
            }
            Action::Create(wanted) => {
                let spec = self.spec(wanted.role, wanted.index);
                self.create_and_start(&spec).await?;
            }
            Action::Start { name, role, index } => {
                self.docker
                    .start_container(name, None)
                    .await
                    .map_err(DeployError::docker(format!("cannot start {name}")))?;
                if *role == Role::Flow {
                    self.register(name, *index).await?;
                } else if *role == Role::Proxy {
                    self.wait_for_admin().await?;
                }
            }
            Action::Replace { old, new } => {
                if new.role == Role::Flow {
                    self.drain(old).await?;
                }
                remove_container(self.docker, old).await?;
                let spec = self.spec(new.role, new.index);
                self.create_and_start(&spec).await?;
            }
            Action::Remove { name, role, .. } => {
                if *role == Role::Flow {
                    self.drain(name).await?;
                }
                remove_container(self.docker, name).await?;
            }
        }
        Ok(())
    }

    /// Before the proxy starts: its state volume, when an older flowgate
    /// made it, belongs to root; a one-off container of the same image
    /// (root with only CAP_CHOWN, no network) hands it to the proxy's user.
    /// A volume made by this run needs nothing.
    async fn hand_over_state(&self, spec: &ContainerSpec) -> Result<(), DeployError> {
        let Some(volume) = spec
            .binds
            .iter()
            .find_map(|b| b.strip_suffix(&format!(":{}", super::settings::STATE_IN_CONTAINER)))
        else {
            return Ok(());
        };
        // A volume this run made starts out owned by the proxy's user (the image's directory).
        if self
            .created
            .iter()
            .any(|c| matches!(c, Created::Volume(v) if v == volume))
        {
            return Ok(());
        }
        let name = format!("{}-state-owner", self.names.project);
        let _ = remove_container(self.docker, &name).await;
        let labels: HashMap<String, String> = self.names.labels(None, None, None).into_iter().collect();
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            labels: Some(labels),
            user: Some("0:0".into()),
            cmd: Some(vec![
                "state-owner".into(),
                "/state".into(),
                super::image::USER.to_string(),
            ]),
            host_config: Some(HostConfig {
                binds: Some(vec![format!("{volume}:/state")]),
                network_mode: Some("none".into()),
                cap_drop: Some(vec!["ALL".into()]),
                cap_add: Some(vec!["CHOWN".into()]),
                security_opt: Some(vec!["no-new-privileges:true".into()]),
                readonly_rootfs: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        };
        let what = format!("cannot hand the volume {volume} to the proxy's user");
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        self.docker
            .create_container(Some(options), body)
            .await
            .map_err(DeployError::docker(what.clone()))?;
        let run = async {
            self.docker
                .start_container(&name, None)
                .await
                .map_err(DeployError::docker(what.clone()))?;
            let mut wait = self.docker.wait_container(&name, None);
            while let Some(status) = futures_util::StreamExt::next(&mut wait).await {
                match status {
                    Ok(s) if s.status_code != 0 => {
                        return Err(DeployError::Exited {
                            name: name.clone(),
                            code: s.status_code,
                        });
                    }
                    Ok(_) => {}
                    Err(bollard::errors::Error::DockerContainerWaitError { code, .. }) if code != 0 => {
                        return Err(DeployError::Exited {
                            name: name.clone(),
                            code,
                        });
                    }
                    Err(bollard::errors::Error::DockerContainerWaitError { .. }) => {}
                    Err(e) => return Err(DeployError::docker(what.clone())(e)),
                }
            }
            Ok(())
        };
        let result = run.await;
        let _ = remove_container(self.docker, &name).await;
        result
    }

    async fn create_and_start(&mut self, spec: &ContainerSpec) -> Result<(), DeployError> {
        if spec.role == Role::Proxy {
            self.hand_over_state(spec).await?;
        }
        let mut port_bindings = HashMap::new();
        let mut exposed = Vec::new();
        for p in &spec.ports {
            let key = format!("{}/tcp", p.container);
            exposed.push(key.clone());
            let host_port = if p.host_port == 0 {
                String::new()
            } else {
                p.host_port.to_string()
            };
            port_bindings.insert(
                key,
                Some(vec![PortBinding {
                    host_ip: Some(p.host_ip.clone()),
                    host_port: Some(host_port),
                }]),
            );
        }
        let labels: HashMap<String, String> = spec.labels(&self.names).into_iter().collect();
        let c = &spec.confinement;
        let body = ContainerCreateBody {
            user: c.user.clone(),
            image: Some(spec.image.clone()),
            cmd: Some(spec.cmd.clone()),
            env: Some(spec.env.clone()),
            labels: Some(labels),
            exposed_ports: Some(exposed),
            healthcheck: spec.healthcheck.as_ref().map(|command| HealthConfig {
                test: Some(super::settings::health_test(command)),
                interval: Some(Duration::from_secs(1).as_nanos() as i64),
                timeout: Some(Duration::from_secs(5).as_nanos() as i64),
                retries: Some(5),
                start_period: Some(Duration::from_secs(60).as_nanos() as i64),
                ..Default::default()
            }),
            host_config: Some(HostConfig {
                binds: Some(spec.binds.clone()),
                port_bindings: Some(port_bindings),
                network_mode: Some(self.names.network()),
                // The deployment outlives flowgate and the host's reboots.
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                    maximum_retry_count: None,
                }),
                // No process in any container gains privileges (setuid, file capabilities).
                security_opt: Some(vec!["no-new-privileges:true".into()]),
                cap_drop: c.drop_capabilities.then(|| vec!["ALL".into()]),
                readonly_rootfs: Some(c.read_only_root),
                tmpfs: (!c.tmpfs.is_empty()).then(|| c.tmpfs.clone().into_iter().collect()),
                memory: c.memory_bytes.map(|m| m as i64),
                // No swap beyond the memory limit.
                memory_swap: c.memory_bytes.map(|m| m as i64),
                pids_limit: c.pids.map(i64::from),
                sysctls: (!c.sysctls.is_empty()).then(|| c.sysctls.clone().into_iter().collect()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default().name(&spec.name).build();
        self.docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| explain_create(e, &spec.name))?;
        self.created.push(Created::Container(spec.name.clone()));
        for secret in &spec.secrets {
            let archive = super::image::one_file_archive(&secret.name, secret.content.as_bytes(), secret.uid, 0o400);
            let options = bollard::query_parameters::UploadToContainerOptionsBuilder::new()
                .path(&secret.dir)
                .build();
            self.docker
                .upload_to_container(&spec.name, Some(options), bollard::body_full(archive.into()))
                .await
                .map_err(DeployError::docker(format!(
                    "cannot put {} into {}",
                    secret.path(),
                    spec.name
                )))?;
        }
        self.docker
            .start_container(&spec.name, None)
            .await
            .map_err(|e| explain_start(e, spec))?;
        match spec.role {
            Role::Proxy => self.wait_for_admin().await?,
            Role::Flow => self.register(&spec.name, spec.index).await?,
            Role::Mc => {
                self.wait_backend_healthy(&format!("{}:{}", spec.name, super::settings::MC_PORT))
                    .await?
            }
            Role::Postgres => self.wait_container_healthy(&spec.name, Duration::from_secs(90)).await?,
        }
        Ok(())
    }

    /// Waits until Docker's health check of `name` passes.
    async fn wait_container_healthy(&self, name: &str, limit: Duration) -> Result<(), DeployError> {
        let deadline = Instant::now() + limit;
        loop {
            let inspect = self
                .docker
                .inspect_container(name, None)
                .await
                .map_err(DeployError::docker(format!("cannot inspect {name}")))?;
            let state = inspect.state.unwrap_or_default();
            if state.running == Some(false) {
                return Err(DeployError::Exited {
                    name: name.into(),
                    code: state.exit_code.unwrap_or(-1),
                });
            }
            match state.health.and_then(|h| h.status) {
                Some(HealthStatusEnum::HEALTHY) | None => return Ok(()),
                status if Instant::now() > deadline => {
                    return Err(DeployError::NotReady {
                        name: name.into(),
                        secs: limit.as_secs(),
                        state: status.map_or("no health".into(), |s| s.to_string()),
                    });
                }
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }

    /// The proxy's admin API, at the host port Docker chose for it.
    pub async fn admin(&self) -> Result<AdminClient, DeployError> {
        let addr = admin_address(self.docker, &self.names).await?;
        Ok(AdminClient::new(addr, &self.token))
    }

    async fn wait_for_admin(&self) -> Result<(), DeployError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let last = match self.admin().await {
                Ok(admin) => match admin.backends().await {
                    Ok(_) => return Ok(()),
                    Err(e) => DeployError::ProxyNotUp(e),
                },
                Err(e) => e,
            };
            if Instant::now() > deadline {
                return Err(last);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Adds a Flow instance to the proxy and waits until it is healthy.
    pub async fn register(&self, name: &str, _index: Option<u32>) -> Result<(), DeployError> {
        let admin = self.admin().await?;
        let address = format!("{name}:{FLOW_PORT}");
        admin.add_backend(name, &address, "flow").await?;
        self.wait_backend_healthy(&address).await
    }

    async fn wait_backend_healthy(&self, address: &str) -> Result<(), DeployError> {
        let admin = self.admin().await?;
        let limit = Duration::from_secs(60);
        let deadline = Instant::now() + limit;
        loop {
            let backends = admin.backends().await?;
            let state = backends.iter().find(|b| b.address == address).map(|b| b.state);
            if state == Some(BackendState::Healthy) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(DeployError::NotReady {
                    name: address.into(),
                    secs: limit.as_secs(),
                    state: state.map_or("not registered", BackendState::as_str).into(),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Drains a Flow instance through the proxy and waits until it is gone.
    pub async fn drain(&self, name: &str) -> Result<(), DeployError> {
        let Ok(admin) = self.admin().await else {
            return Ok(()); // No proxy: nothing to drain from.
        };
        if !admin.drain(name, DRAIN.as_secs()).await? {
            return Ok(());
        }
        // The proxy removes a registered instance once it is drained.
        wait_drained(&admin, &[(name.to_string(), name.to_string())], |_| true).await
    }
}

/// Waits until none of `drained` (instance name, backend id) is `busy` in
/// the proxy (one it no longer lists is done), for the drain window and
/// 15 s more; then names the one still busy.
pub(super) async fn wait_drained(
    admin: &AdminClient,
    drained: &[(String, String)],
    busy: impl Fn(&BackendView) -> bool,
) -> Result<(), DeployError> {
    let limit = DRAIN + Duration::from_secs(15);
    let deadline = Instant::now() + limit;
    loop {
        let now = admin.backends().await?;
        let Some((name, _)) = drained
            .iter()
            .find(|(_, id)| now.iter().any(|b| &b.id == id && busy(b)))
        else {
            return Ok(());
        };
        if Instant::now() > deadline {
            return Err(DeployError::StillDraining {
                name: name.clone(),
                secs: limit.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Where the proxy container's admin port is published on the host.
pub async fn admin_address(docker: &Docker, names: &Names) -> Result<SocketAddr, DeployError> {
    let name = names.container(Role::Proxy, None);
    let inspect = match docker.inspect_container(&name, None).await {
        Ok(inspect) => inspect,
        Err(_) if super::swarm::deployed(docker, &names.project).await => {
            return super::swarm::admin_address(docker, names).await;
        }
        Err(e) => return Err(DeployError::docker(format!("no proxy container {name}"))(e)),
    };
    let port = inspect
        .network_settings
        .and_then(|n| n.ports)
        .and_then(|ports| ports.get(&format!("{ADMIN_PORT}/tcp")).cloned().flatten())
        .and_then(|bindings| bindings.into_iter().find_map(|b| b.host_port))
        .and_then(|p| p.parse::<u16>().ok())
        .ok_or_else(|| DeployError::NoAdminPort(name.clone()))?;
    Ok(SocketAddr::from(([127, 0, 0, 1], port)))
}

pub async fn remove_container(docker: &Docker, name: &str) -> Result<(), DeployError> {
    let _ = docker
        .stop_container(
            name,
            Some(StopContainerOptionsBuilder::default().t(STOP_GRACE as i32).build()),
        )
        .await;
    match docker
        .remove_container(name, Some(RemoveContainerOptionsBuilder::default().force(true).build()))
        .await
    {
        Ok(()) => Ok(()),
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(()),
        Err(e) => Err(DeployError::DockerCall {
            what: format!("cannot remove {name}"),
            source: e,
        }),
    }
}

fn explain_create(error: bollard::errors::Error, name: &str) -> DeployError {
    match &error {
        bollard::errors::Error::DockerResponseServerError { status_code: 409, .. } => DeployError::Foreign(name.into()),
        _ => DeployError::DockerCall {
            what: format!("cannot create {name}"),
            source: error,
        },
    }
}

fn explain_start(error: bollard::errors::Error, spec: &ContainerSpec) -> DeployError {
    let text = error.to_string();
    if text.contains("address already in use") || text.contains("port is already allocated") {
        let ports: Vec<String> = spec
            .ports
            .iter()
            .filter(|p| p.host_port != 0)
            .map(|p| p.host_port.to_string())
            .collect();
        DeployError::PortTaken {
            name: spec.name.clone(),
            ports: ports.join(", "),
        }
    } else {
        DeployError::DockerCall {
            what: format!("cannot start {}", spec.name),
            source: error,
        }
    }
}
