//! The deployment as Docker Swarm services, made through a manager: an
//! attachable overlay network; Flow as one replicated service in `dnsrr`
//! endpoint mode (no VIP, no routing mesh: the proxy wants every task, and
//! this kernel has no IPVS); the proxy as a service pinned to the manager
//! flowgate talks to (an `io.flowgate.edge=true` node when any is labelled so) that publishes its ports
//! in host mode, so clients' addresses reach it; MC. Swarm schedules and
//! restarts; flowgate never does. The proxy follows Flow's tasks itself by
//! resolving `tasks.<service>` (no Docker socket in it), and flowgate
//! reaches its admin API through `docker exec` (no admin port published).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::exec::StartExecResults;
use bollard::models::{
    ConfigSpec, EndpointPortConfig, EndpointPortConfigPublishModeEnum, EndpointSpec, EndpointSpecModeEnum, ExecConfig,
    HealthConfig, Limit, Mount, MountTmpfsOptions, MountType, MountVolumeOptions, NetworkAttachmentConfig,
    NetworkCreateRequest, SecretSpec, ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated, ServiceSpecUpdateConfig,
    ServiceSpecUpdateConfigFailureActionEnum, ServiceSpecUpdateConfigOrderEnum, TaskSpec, TaskSpecContainerSpec,
    TaskSpecContainerSpecConfigs, TaskSpecContainerSpecFile, TaskSpecContainerSpecFile1,
    TaskSpecContainerSpecPrivileges, TaskSpecContainerSpecSecrets, TaskSpecPlacement, TaskSpecResources,
    TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum, TaskState,
};
use bollard::query_parameters::{
    InspectServiceOptions, ListContainersOptionsBuilder, ListNodesOptions, ListServicesOptionsBuilder,
    ListTasksOptionsBuilder, UpdateServiceOptionsBuilder,
};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::DeployError;
use super::engine::Listed;
use super::plan::{Found, LABEL_CONFIG, LABEL_PROJECT, Names, Role};
use super::settings::{ADMIN_PORT, ContainerSpec, FLOW_PORT, MC_PORT, SWARM_TOKEN_IN_CONTAINER, short_digest};
use crate::proxy::backend::BackendState;
use crate::proxy::client::AdminClient;

/// Swarm's label on every task's container.
const SERVICE_NAME_LABEL: &str = "com.docker.swarm.service.name";
/// Nodes labelled `io.flowgate.edge=true` are the ones meant for public
/// traffic: when any is, the manager flowgate talks to (which carries the
/// proxy) must be one.
pub const EDGE_LABEL: &str = "io.flowgate.edge";
/// Where flowgate's binary is in its image.
const BINARY: &str = "/usr/local/bin/flowgate";
/// How long a Flow task gets between SIGTERM and SIGKILL.
const FLOW_STOP_GRACE: Duration = Duration::from_secs(15);
/// How long a service may take to run all its tasks.
const CONVERGE: Duration = Duration::from_secs(120);

/// The manager flowgate talks to.
#[derive(Debug, Clone)]
pub struct Manager {
    pub node_id: String,
}

/// The engine's node, when it is a Swarm manager.
pub async fn manager(docker: &Docker) -> Result<Manager, DeployError> {
    let info = docker
        .info()
        .await
        .map_err(DeployError::docker("cannot ask Docker about its swarm"))?;
    let swarm = info.swarm.unwrap_or_default();
    if swarm.control_available != Some(true) {
        let state = swarm
            .local_node_state
            .map(|s| s.to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "inactive".into());
        return Err(DeployError::NotManager { state });
    }
    Ok(Manager {
        node_id: swarm.node_id.unwrap_or_default(),
    })
}

/// Whether the engine is a Swarm manager (what the setup form asks).
pub async fn is_manager(docker: &Docker) -> bool {
    manager(docker).await.is_ok()
}

/// The project's services, by name (empty when the engine is no manager).
pub async fn services(docker: &Docker, project: &str) -> Vec<bollard::models::Service> {
    let filters = HashMap::from([("label", vec![format!("{LABEL_PROJECT}={project}")])]);
    let options = ListServicesOptionsBuilder::default().filters(&filters).build();
    docker.list_services(Some(options)).await.unwrap_or_default()
}

/// Whether the project runs as Swarm services.
pub async fn deployed(docker: &Docker, project: &str) -> bool {
    !services(docker, project).await.is_empty()
}

/// A service's labels (the proxy's hold the settings) and the image its
/// tasks run, from one inspect.
pub async fn service_labels_and_image(docker: &Docker, name: &str) -> Option<(HashMap<String, String>, String)> {
    let spec = docker
        .inspect_service(name, None::<InspectServiceOptions>)
        .await
        .ok()?
        .spec?;
    let image = spec.task_template?.container_spec?.image?;
    // Swarm pins `image@sha256:...` when it can; the tag is what was asked.
    let image = image.split('@').next().unwrap_or_default().to_string();
    Some((spec.labels.unwrap_or_default(), image))
}

/// A node of the swarm as `status` and the dashboard show it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NodeView {
    pub id: String,
    pub name: String,
    /// `ready`, `down`, `unknown`, `disconnected`.
    pub state: String,
    /// `active`, `pause`, `drain`.
    pub availability: String,
    pub manager: bool,
    /// Running tasks of this project on it.
    pub tasks: u32,
    pub cpus: f64,
    pub memory_bytes: u64,
}

/// The name each node goes by: its host name, or `host@address` when
/// several nodes share one (engines on one machine, cloned VMs).
fn display_names(nodes: &[bollard::models::Node]) -> HashMap<String, String> {
    let host = |n: &bollard::models::Node| {
        n.description
            .as_ref()
            .and_then(|d| d.hostname.clone())
            .unwrap_or_else(|| n.id.clone().unwrap_or_default())
    };
    nodes
        .iter()
        .map(|n| {
            let name = host(n);
            let shared = nodes.iter().filter(|m| host(m) == name).count() > 1;
            let address = n.status.as_ref().and_then(|s| s.addr.clone());
            let shown = match address {
                Some(address) if shared => format!("{name}@{address}"),
                _ => name,
            };
            (n.id.clone().unwrap_or_default(), shown)
        })
        .collect()
}

/// Every node of the swarm, with how many of `listed` (the project's
/// instances, from [`list`]) run on each.
pub async fn nodes(docker: &Docker, listed: &[Listed]) -> Result<Vec<NodeView>, DeployError> {
    let nodes = docker
        .list_nodes(None::<ListNodesOptions>)
        .await
        .map_err(DeployError::docker("cannot list the swarm's nodes"))?;
    let shown = display_names(&nodes);
    let mut views: Vec<NodeView> = nodes
        .into_iter()
        .map(|n| {
            let id = n.id.clone().unwrap_or_default();
            let description = n.description.clone().unwrap_or_default();
            let resources = description.resources.unwrap_or_default();
            NodeView {
                tasks: listed
                    .iter()
                    .filter(|l| l.found.running && l.node.as_ref() == shown.get(&id))
                    .count() as u32,
                name: shown.get(&id).cloned().unwrap_or_else(|| id.clone()),
                id,
                state: n
                    .status
                    .and_then(|s| s.state)
                    .map_or("unknown".into(), |s| s.to_string()),
                availability: n
                    .spec
                    .and_then(|s| s.availability)
                    .map_or("unknown".into(), |a| a.to_string()),
                manager: n.manager_status.is_some(),
                cpus: resources.nano_cpus.unwrap_or(0) as f64 / 1e9,
                memory_bytes: resources.memory_bytes.unwrap_or(0).max(0) as u64,
            }
        })
        .collect();
    views.sort_by(|a, b| (!a.manager, &a.name).cmp(&(!b.manager, &b.name)));
    Ok(views)
}

/// One task of the project, with what `list` and the waits need.
#[derive(Debug, Clone)]
struct TaskInfo {
    id: String,
    service: String,
    role: Role,
    slot: Option<u32>,
    node_id: String,
    state: TaskState,
    error: Option<String>,
    container: Option<String>,
    config: String,
}

/// The tasks Swarm wants running (desired state running) of every service
/// of the project, plus those it failed to run.
async fn project_tasks(docker: &Docker, project: &str) -> Result<Vec<TaskInfo>, DeployError> {
    let mut all = Vec::new();
    for service in services(docker, project).await {
        let spec = service.spec.unwrap_or_default();
        let name = spec.name.unwrap_or_default();
        let labels = spec.labels.unwrap_or_default();
        let Some(role) = labels.get(super::plan::LABEL_ROLE).and_then(|r| Role::parse(r)) else {
            continue;
        };
        let filters = HashMap::from([("service", vec![name.clone()])]);
        let options = ListTasksOptionsBuilder::default().filters(&filters).build();
        let tasks = docker
            .list_tasks(Some(options))
            .await
            .map_err(DeployError::docker(format!("cannot list the tasks of {name}")))?;
        for task in tasks {
            let status = task.status.unwrap_or_default();
            let state = status.state.unwrap_or(TaskState::NEW);
            let wanted = task.desired_state == Some(TaskState::RUNNING);
            if !wanted && !matches!(state, TaskState::REJECTED | TaskState::FAILED) {
                continue;
            }
            all.push(TaskInfo {
                id: task.id.unwrap_or_default(),
                service: name.clone(),
                role,
                slot: task.slot.map(|s| s as u32),
                node_id: task.node_id.unwrap_or_default(),
                state,
                error: status.err.filter(|e| !e.is_empty()),
                container: status.container_status.and_then(|c| c.container_id),
                config: labels.get(LABEL_CONFIG).cloned().unwrap_or_default(),
            });
        }
    }
    Ok(all)
}

/// The name a task's instance goes by: `<service>-<slot>`, like a
/// single engine's `<project>-flow-<n>` (and the simulator's own name).
fn instance_name(service: &str, role: Role, slot: Option<u32>) -> String {
    match (role, slot) {
        (Role::Flow, Some(slot)) => format!("{service}-{slot}"),
        _ => service.to_string(),
    }
}

/// Every running (or starting) task of the project as an instance: its
/// node, its address on the overlay (what the proxy's backend is), and
/// its container when it runs on the engine flowgate talks to.
pub async fn list(docker: &Docker, project: &str) -> Result<Vec<Listed>, DeployError> {
    let tasks = project_tasks(docker, project).await?;
    let names = Names {
        project: project.into(),
    };
    let addresses = task_addresses(docker, &names.network()).await;
    let node_names = display_names(&docker.list_nodes(None::<ListNodesOptions>).await.unwrap_or_default());
    let local = manager(docker).await.map(|m| m.node_id).unwrap_or_default();
    let mut listed: Vec<Listed> = tasks
        .into_iter()
        .filter(|t| !matches!(t.state, TaskState::REJECTED | TaskState::FAILED))
        .map(|t| {
            let name = instance_name(&t.service, t.role, t.slot);
            let key = format!("{}.{}.{}", t.service, t.slot.unwrap_or(0), t.id);
            let port = if t.role == Role::Mc { MC_PORT } else { FLOW_PORT };
            let running = t.state == TaskState::RUNNING;
            Listed {
                found: Found {
                    name,
                    role: t.role,
                    index: if t.role == Role::Flow { t.slot } else { None },
                    config: t.config.clone(),
                    running,
                },
                id: t.id.clone(),
                state: task_state_word(t.state).into(),
                node: Some(node_names.get(&t.node_id).cloned().unwrap_or_else(|| t.node_id.clone())),
                address: addresses.get(&key).map(|ip| format!("{ip}:{port}")),
                container: t.container.clone().filter(|_| t.node_id == local && running),
            }
        })
        .collect();
    listed.sort_by_key(|a| (a.found.role, a.found.index));
    Ok(listed)
}

/// A task's state in the words of a container's (`running`, `created`, ...),
/// so the dashboard and `status` read both engines alike.
fn task_state_word(state: TaskState) -> &'static str {
    match state {
        TaskState::RUNNING => "running",
        TaskState::COMPLETE | TaskState::SHUTDOWN => "exited",
        TaskState::FAILED | TaskState::REJECTED | TaskState::ORPHANED => "dead",
        _ => "created",
    }
}

/// Each task's address on the overlay (`<service>.<slot>.<task id>` ->
/// IP), from the network as the manager's engine sees it.
async fn task_addresses(docker: &Docker, network: &str) -> HashMap<String, String> {
    let options = bollard::query_parameters::InspectNetworkOptionsBuilder::new()
        .verbose(true)
        .build();
    let Ok(inspect) = docker.inspect_network(network, Some(options)).await else {
        return HashMap::new();
    };
    let mut addresses = HashMap::new();
    for service in inspect.services.unwrap_or_default().into_values() {
        for task in service
            .get("Tasks")
            .and_then(|t| t.as_array())
            .cloned()
            .unwrap_or_default()
        {
            if let (Some(name), Some(ip)) = (
                task.get("Name").and_then(|n| n.as_str()),
                task.get("EndpointIP").and_then(|n| n.as_str()),
            ) {
                addresses.insert(name.to_string(), ip.to_string());
            }
        }
    }
    addresses
}

/// The running proxy task's container on the engine flowgate talks to.
async fn local_proxy_container(docker: &Docker, names: &Names) -> Result<String, DeployError> {
    let service = names.service(Role::Proxy);
    let filters = HashMap::from([
        ("label", vec![format!("{SERVICE_NAME_LABEL}={service}")]),
        ("status", vec!["running".to_string()]),
    ]);
    let options = ListContainersOptionsBuilder::default().filters(&filters).build();
    let containers = docker
        .list_containers(Some(options))
        .await
        .map_err(DeployError::docker(format!("cannot find the container of {service}")))?;
    if let Some(id) = containers.into_iter().find_map(|c| c.id) {
        return Ok(id);
    }
    let tasks = project_tasks(docker, &names.project).await.unwrap_or_default();
    match tasks
        .iter()
        .find(|t| t.role == Role::Proxy && t.state == TaskState::RUNNING)
    {
        Some(task) => Err(DeployError::ProxyElsewhere {
            node: task.node_id.clone(),
        }),
        None => Err(DeployError::NoAdminPort(service)),
    }
}

/// Open port-forwards to proxy containers' admin APIs, by container.
static FORWARDS: Mutex<BTreeMap<String, (SocketAddr, tokio::task::JoinHandle<()>)>> = Mutex::new(BTreeMap::new());

/// A loopback address that reaches the Swarm proxy's admin API: each
/// connection to it becomes a `docker exec flowgate pipe` in the proxy's
/// container (as `kubectl port-forward` does), so the admin API is
/// published nowhere and whoever may use it is whoever may use Docker.
pub async fn admin_address(docker: &Docker, names: &Names) -> Result<SocketAddr, DeployError> {
    let container = local_proxy_container(docker, names).await?;
    {
        let mut forwards = FORWARDS.lock().unwrap_or_else(|e| e.into_inner());
        forwards.retain(|_, (_, task)| !task.is_finished());
        if let Some((addr, _)) = forwards.get(&container) {
            return Ok(*addr);
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(DeployError::Forward)?;
    let addr = listener.local_addr().map_err(DeployError::Forward)?;
    let (docker, id) = (docker.clone(), container.clone());
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (docker, id) = (docker.clone(), id.clone());
            tokio::spawn(async move {
                if let Err(e) = pipe_through_exec(&docker, &id, stream).await {
                    tracing::debug!("admin API through docker exec: {e}");
                }
            });
        }
    });
    FORWARDS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(container, (addr, task));
    Ok(addr)
}

/// One connection to the admin API, carried by `docker exec` in `container`.
async fn pipe_through_exec(
    docker: &Docker,
    container: &str,
    stream: tokio::net::TcpStream,
) -> Result<(), bollard::errors::Error> {
    let exec = docker
        .create_exec(
            container,
            ExecConfig {
                cmd: Some(vec![BINARY.into(), "pipe".into(), format!("127.0.0.1:{ADMIN_PORT}")]),
                attach_stdin: Some(true),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            },
        )
        .await?;
    let StartExecResults::Attached { mut output, mut input } = docker.start_exec(&exec.id, None).await? else {
        return Ok(());
    };
    let (mut from_client, mut to_client) = stream.into_split();
    let up = async move {
        let _ = tokio::io::copy(&mut from_client, &mut input).await;
        let _ = input.shutdown().await;
        // Keep the exec's input open until the answer is read.
        std::future::pending::<()>().await;
    };
    let down = async move {
        while let Some(Ok(chunk)) = output.next().await {
            let bytes = match chunk {
                bollard::container::LogOutput::StdOut { message } => message,
                bollard::container::LogOutput::StdErr { message } => {
                    tracing::debug!("admin pipe: {}", String::from_utf8_lossy(&message).trim_end());
                    continue;
                }
                _ => continue,
            };
            if to_client.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = to_client.shutdown().await;
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
    Ok(())
}

/// The Swarm form of one of the deployment's containers: a service with
/// `replicas` tasks. Its config label hashes everything but the count.
pub fn service_spec(
    names: &Names,
    spec: &ContainerSpec,
    replicas: u64,
    placement: &[String],
    references: &References,
) -> ServiceSpec {
    let role = spec.role;
    let c = &spec.confinement;
    let mut args = spec.cmd.clone();
    let mut env = spec.env.clone();
    let flowgate_image = spec.cmd.first().is_some_and(|a| a == "sim" || a == "proxy");
    if role == Role::Flow && flowgate_image {
        // Every task runs the same command: each simulator's name comes
        // from Swarm's template, `<service>-<slot>`.
        if let Some(at) = args.iter().position(|a| a == "--name") {
            args.drain(at..(at + 2).min(args.len()));
        }
        env.push("FLOWGATE_SIM_NAME={{.Service.Name}}-{{.Task.Slot}}".into());
    }
    let mut mounts: Vec<Mount> = spec
        .binds
        .iter()
        .filter_map(|bind| {
            let (source, target, read_only) = bind_parts(bind)?;
            // A host file is a Swarm config; a secret's directory holds Swarm secrets.
            let secret_dir = spec.secrets.iter().any(|f| f.dir == target);
            if references.provides(role, target) || secret_dir {
                return None;
            }
            let volume = !source.starts_with('/');
            Some(Mount {
                target: Some(target.into()),
                source: Some(source.into()),
                typ: Some(if volume { MountType::VOLUME } else { MountType::BIND }),
                read_only: Some(read_only),
                volume_options: volume.then(|| MountVolumeOptions {
                    labels: Some(names.labels(None, None, None).into_iter().collect()),
                    ..Default::default()
                }),
                ..Default::default()
            })
        })
        .collect();
    for path in c.tmpfs.keys() {
        mounts.push(Mount {
            target: Some(path.clone()),
            typ: Some(MountType::TMPFS),
            tmpfs_options: Some(MountTmpfsOptions {
                size_bytes: Some(16 << 20),
                mode: Some(0o1777),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    let health_check = match role {
        Role::Flow if flowgate_image => Some(probe(&format!(
            "http://127.0.0.1:{FLOW_PORT}{}",
            crate::config::proxy::FLOW_HEALTH_PATH
        ))),
        Role::Mc if flowgate_image => Some(probe(&format!("http://127.0.0.1:{MC_PORT}/health"))),
        _ => spec.healthcheck.as_ref().map(|command| HealthConfig {
            test: Some(super::settings::health_test(command)),
            ..probe_timing()
        }),
    };
    let secrets: Vec<TaskSpecContainerSpecSecrets> = references
        .of(role, Kind::Secret)
        .map(|r| TaskSpecContainerSpecSecrets {
            secret_id: Some(r.id.clone()),
            secret_name: Some(r.name.clone()),
            file: Some(TaskSpecContainerSpecFile {
                name: Some(r.wanted.target.clone()),
                uid: Some(r.wanted.uid.clone()),
                gid: Some(r.wanted.uid.clone()),
                mode: Some(r.wanted.mode),
            }),
        })
        .collect();
    let configs: Vec<TaskSpecContainerSpecConfigs> = references
        .of(role, Kind::Config)
        .map(|r| TaskSpecContainerSpecConfigs {
            config_id: Some(r.id.clone()),
            config_name: Some(r.name.clone()),
            file: Some(TaskSpecContainerSpecFile1 {
                name: Some(r.wanted.target.clone()),
                uid: Some(r.wanted.uid.clone()),
                gid: Some(r.wanted.uid.clone()),
                mode: Some(r.wanted.mode),
            }),
            ..Default::default()
        })
        .collect();
    let container_spec = TaskSpecContainerSpec {
        image: Some(spec.image.clone()),
        labels: Some(names.labels(Some(role), None, None).into_iter().collect()),
        args: Some(args),
        env: Some(env),
        user: c.user.clone(),
        privileges: Some(TaskSpecContainerSpecPrivileges {
            no_new_privileges: Some(true),
            ..Default::default()
        }),
        read_only: Some(c.read_only_root),
        mounts: Some(mounts),
        stop_grace_period: Some(if role == Role::Flow {
            FLOW_STOP_GRACE.as_nanos() as i64
        } else {
            Duration::from_secs(10).as_nanos() as i64
        }),
        health_check,
        secrets: (!secrets.is_empty()).then_some(secrets),
        configs: (!configs.is_empty()).then_some(configs),
        sysctls: (!c.sysctls.is_empty()).then(|| c.sysctls.clone().into_iter().collect()),
        capability_drop: c.drop_capabilities.then(|| vec!["ALL".into()]),
        ..Default::default()
    };
    let ports = spec
        .ports
        .iter()
        .filter(|p| p.container != ADMIN_PORT)
        .map(|p| EndpointPortConfig {
            target_port: Some(i64::from(p.container)),
            published_port: Some(i64::from(p.host_port)),
            publish_mode: Some(EndpointPortConfigPublishModeEnum::HOST),
            ..Default::default()
        })
        .collect::<Vec<_>>();
    let mut service = ServiceSpec {
        name: Some(names.service(role)),
        labels: None,
        task_template: Some(TaskSpec {
            container_spec: Some(container_spec),
            resources: Some(TaskSpecResources {
                limits: Some(Limit {
                    memory_bytes: c.memory_bytes.map(|m| m as i64),
                    pids: c.pids.map(i64::from),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            restart_policy: Some(TaskSpecRestartPolicy {
                condition: Some(TaskSpecRestartPolicyConditionEnum::ANY),
                delay: Some(Duration::from_secs(1).as_nanos() as i64),
                ..Default::default()
            }),
            placement: (!placement.is_empty()).then(|| TaskSpecPlacement {
                constraints: Some(placement.to_vec()),
                ..Default::default()
            }),
            networks: Some(vec![NetworkAttachmentConfig {
                target: Some(names.network()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        mode: None,
        update_config: Some(ServiceSpecUpdateConfig {
            parallelism: Some(1),
            delay: Some(Duration::from_secs(1).as_nanos() as i64),
            failure_action: Some(ServiceSpecUpdateConfigFailureActionEnum::ROLLBACK),
            monitor: Some(Duration::from_secs(5).as_nanos() as i64),
            // A new Flow task serves before an old one stops; the proxy's
            // ports allow one task per node, so it is replaced in place.
            order: Some(if role == Role::Proxy {
                ServiceSpecUpdateConfigOrderEnum::STOP_FIRST
            } else {
                ServiceSpecUpdateConfigOrderEnum::START_FIRST
            }),
            ..Default::default()
        }),
        endpoint_spec: Some(EndpointSpec {
            mode: Some(EndpointSpecModeEnum::DNSRR),
            ports: (!ports.is_empty()).then_some(ports),
        }),
        ..Default::default()
    };
    // Through a Value, whose maps are sorted: a HashMap's order is not.
    let canonical = serde_json::to_value(&service).unwrap_or_default();
    let hash = short_digest(canonical.to_string().as_bytes());
    let mut labels = names.labels(Some(role), None, Some(&hash));
    labels.extend(spec.extra_labels.clone());
    service.labels = Some(labels.into_iter().collect());
    service.mode = Some(ServiceSpecMode {
        replicated: Some(ServiceSpecModeReplicated {
            replicas: Some(replicas as i64),
        }),
        ..Default::default()
    });
    service
}

/// A bind in Docker's `SOURCE:TARGET[:ro]` form: source, target, read-only.
fn bind_parts(bind: &str) -> Option<(&str, &str, bool)> {
    let mut parts = bind.split(':');
    let (source, target) = (parts.next()?, parts.next()?);
    Some((source, target, parts.next() == Some("ro")))
}

/// A Swarm health check running flowgate's own probe.
fn probe(url: &str) -> HealthConfig {
    HealthConfig {
        test: Some(vec!["CMD".into(), BINARY.into(), "probe".into(), url.into()]),
        ..probe_timing()
    }
}

/// How often Swarm runs a task's health check, and how long it waits.
fn probe_timing() -> HealthConfig {
    HealthConfig {
        test: None,
        interval: Some(Duration::from_secs(2).as_nanos() as i64),
        timeout: Some(Duration::from_secs(5).as_nanos() as i64),
        retries: Some(3),
        start_period: Some(Duration::from_secs(30).as_nanos() as i64),
        ..Default::default()
    }
}

/// Whether a task reads a file as a Swarm secret or a Swarm config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Secret,
    Config,
}

impl Kind {
    fn word(self) -> &'static str {
        match self {
            Kind::Secret => "secret",
            Kind::Config => "config",
        }
    }
}

/// Where a file the tasks read comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum Content {
    /// The proxy's admin token.
    AdminToken,
    /// A spec's secret file (the database password): its text.
    Secret(String),
    /// A file on this machine that a spec binds read-only (proxy.toml, hazelcast.yml).
    HostFile(String),
}

/// A file one role's tasks read, before it exists in the swarm.
#[derive(Clone, PartialEq, Eq)]
pub struct FileWanted {
    pub role: Role,
    pub kind: Kind,
    /// Where the task reads it (absolute).
    pub target: String,
    pub uid: String,
    pub mode: u32,
    pub content: Content,
}

impl std::fmt::Debug for FileWanted {
    // Never a secret's text: a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?} {} of {} for {}",
            self.kind,
            self.target,
            self.uid,
            self.role.as_str()
        )
    }
}

impl FileWanted {
    /// The stem of the file's name in the task (`proxy`, `db-password`).
    pub fn stem(&self) -> &str {
        std::path::Path::new(&self.target)
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("file")
    }

    /// The file's text (read from this machine for a host file).
    fn text(&self, token: &str) -> Result<String, DeployError> {
        match &self.content {
            Content::AdminToken => Ok(token.into()),
            Content::Secret(text) => Ok(text.clone()),
            Content::HostFile(path) => std::fs::read_to_string(path).map_err(|source| DeployError::Read {
                path: path.clone(),
                source,
            }),
        }
    }
}

/// A Swarm secret or config a role's tasks read: made, with its id.
#[derive(Debug, Clone)]
pub struct Reference {
    pub wanted: FileWanted,
    pub id: String,
    pub name: String,
}

/// Every Swarm secret and config the deployment's tasks read.
#[derive(Debug, Clone, Default)]
pub struct References(pub Vec<Reference>);

impl References {
    fn of(&self, role: Role, kind: Kind) -> impl Iterator<Item = &Reference> {
        self.0
            .iter()
            .filter(move |r| r.wanted.role == role && r.wanted.kind == kind)
    }

    /// Whether a task of `role` gets a file at `target` from the swarm.
    fn provides(&self, role: Role, target: &str) -> bool {
        self.0
            .iter()
            .any(|r| r.wanted.role == role && r.wanted.target == target)
    }

    fn keeps(&self, id: &str) -> bool {
        self.0.iter().any(|r| r.id == id)
    }
}

/// The files the tasks read from the swarm instead of from this host: the
/// proxy's admin token (a secret); each spec's secret files (the database
/// password) as secrets at the same paths; each read-only bind of a host
/// file (proxy.toml, hazelcast.yml: a path or `./name`, not a directory)
/// as a config at its target, since the host's path exists on this
/// machine only.
pub fn files_wanted(specs: &[ContainerSpec]) -> Vec<FileWanted> {
    let mut files: Vec<FileWanted> = Vec::new();
    // Every Flow instance's spec binds the same files: one service reads them once.
    let mut add = |file: FileWanted| {
        if !files.iter().any(|f| f.role == file.role && f.target == file.target) {
            files.push(file);
        }
    };
    for spec in specs {
        let role = spec.role;
        let user = spec
            .confinement
            .user
            .as_deref()
            .and_then(|u| u.split(':').next())
            .unwrap_or("0")
            .to_string();
        if role == Role::Proxy {
            add(FileWanted {
                role,
                kind: Kind::Secret,
                target: SWARM_TOKEN_IN_CONTAINER.into(),
                uid: user.clone(),
                mode: 0o400,
                content: Content::AdminToken,
            });
        }
        for secret in &spec.secrets {
            add(FileWanted {
                role,
                kind: Kind::Secret,
                target: secret.path(),
                uid: secret.uid.to_string(),
                mode: 0o400,
                content: Content::Secret(secret.content.clone()),
            });
        }
        for bind in &spec.binds {
            let Some((source, target, true)) = bind_parts(bind) else {
                continue;
            };
            let host_path = source.starts_with('/') || source.starts_with("./");
            if !host_path || std::path::Path::new(source).is_dir() {
                continue; // A volume, or certificates' directories (the proxy's node is this one).
            }
            add(FileWanted {
                role,
                kind: Kind::Config,
                target: target.into(),
                uid: user.clone(),
                mode: 0o444,
                content: Content::HostFile(source.into()),
            });
        }
    }
    files
}

/// Makes (once: they cannot change) each wanted secret and config, named
/// `<project>-<file's stem>-<content digest>`.
async fn references(
    docker: &Docker,
    names: &Names,
    wanted: Vec<FileWanted>,
    token: &str,
) -> Result<References, DeployError> {
    let labels: HashMap<String, String> = names.labels(None, None, None).into_iter().collect();
    let mut made = Vec::new();
    for file in wanted {
        let text = file.text(token)?;
        let name = format!("{}-{}-{}", names.project, file.stem(), short_digest(text.as_bytes()));
        let data = Some(crate::websocket::base64(text.as_bytes()));
        let found = match file.kind {
            Kind::Secret => docker.inspect_secret(&name).await.ok().map(|s| s.id),
            Kind::Config => docker.inspect_config(&name).await.ok().map(|c| c.id),
        };
        let id = match found {
            Some(id) => id,
            None => {
                let labels = Some(labels.clone());
                let made = match file.kind {
                    Kind::Secret => docker
                        .create_secret(SecretSpec {
                            name: Some(name.clone()),
                            labels,
                            data,
                            ..Default::default()
                        })
                        .await
                        .map(|r| r.id),
                    Kind::Config => docker
                        .create_config(ConfigSpec {
                            name: Some(name.clone()),
                            labels,
                            data,
                            ..Default::default()
                        })
                        .await
                        .map(|r| r.id),
                };
                Some(made.map_err(DeployError::docker(format!(
                    "cannot create the Swarm {} {name}",
                    file.kind.word()
                )))?)
            }
        };
        made.push(Reference {
            wanted: file,
            id: id.unwrap_or_default(),
            name,
        });
    }
    Ok(References(made))
}

/// Where the proxy runs: always on the manager flowgate talks to, which
/// is how flowgate reaches its admin API (`docker exec` works on the
/// engine it is made on only; the admin API is published nowhere). When
/// some nodes are labelled `io.flowgate.edge=true` (the ones meant to take
/// public traffic), that manager must be one of them: a proxy placed on
/// another node would be out of flowgate's reach, so that is refused with
/// the two ways out.
async fn proxy_placement(docker: &Docker, manager: &Manager) -> Result<Vec<String>, DeployError> {
    let nodes = docker
        .list_nodes(None::<ListNodesOptions>)
        .await
        .map_err(DeployError::docker("cannot list the swarm's nodes"))?;
    placement_on_edge(&nodes, &manager.node_id)
}

fn placement_on_edge(nodes: &[bollard::models::Node], manager: &str) -> Result<Vec<String>, DeployError> {
    let edges: Vec<&str> = nodes
        .iter()
        .filter(|n| {
            n.spec
                .as_ref()
                .and_then(|s| s.labels.as_ref())
                .and_then(|l| l.get(EDGE_LABEL))
                .is_some_and(|v| v == "true")
        })
        .filter_map(|n| n.id.as_deref())
        .collect();
    if !edges.is_empty() && !edges.contains(&manager) {
        let names = display_names(nodes);
        let name = |id: &str| names.get(id).cloned().unwrap_or_else(|| id.to_string());
        return Err(DeployError::EdgeElsewhere {
            manager: name(manager),
            edges: edges.iter().map(|id| name(id)).collect::<Vec<_>>().join(", "),
        });
    }
    Ok(vec![format!("node.id=={manager}")])
}

/// Makes the project's attachable overlay network when it is missing, and
/// returns its subnet (Hazelcast's members listen on it).
pub async fn overlay_network(
    docker: &Docker,
    names: &Names,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<Option<String>, DeployError> {
    let network = names.network();
    let subnet = |n: bollard::models::NetworkInspect| n.ipam?.config?.into_iter().find_map(|c| c.subnet);
    if let Ok(found) = docker.inspect_network(&network, None).await {
        return Ok(subnet(found));
    }
    progress(&format!("create overlay network {network} ..."));
    docker
        .create_network(NetworkCreateRequest {
            name: network.clone(),
            driver: Some("overlay".into()),
            attachable: Some(true),
            labels: Some(names.labels(None, None, None).into_iter().collect()),
            ..Default::default()
        })
        .await
        .map_err(DeployError::docker(format!(
            "cannot create the overlay network {network}"
        )))?;
    let found = docker
        .inspect_network(&network, None)
        .await
        .map_err(DeployError::docker(format!(
            "cannot inspect the overlay network {network}"
        )))?;
    Ok(subnet(found))
}

/// Where PostgreSQL runs: on one node for good, since its data is a local
/// volume there. The node it was pinned to when the service exists (an
/// operator may have moved it with `docker service update
/// --constraint-add`), else the manager flowgate talks to.
async fn postgres_placement(docker: &Docker, names: &Names, manager: &Manager) -> Vec<String> {
    let pinned = docker
        .inspect_service(&names.service(Role::Postgres), None::<InspectServiceOptions>)
        .await
        .ok()
        .and_then(|s| s.spec?.task_template?.placement?.constraints)
        .filter(|c| !c.is_empty());
    pinned.unwrap_or_else(|| vec![format!("node.id=={}", manager.node_id)])
}

/// Brings the project's services to `specs` (one service per role, the
/// first spec of each: PostgreSQL when the profile has it, the proxy,
/// Flow and MC) with `instances` Flow tasks. `scale_only` changes only
/// Flow's count.
#[allow(clippy::too_many_arguments)]
pub async fn apply(
    docker: &Docker,
    names: &Names,
    specs: &[ContainerSpec],
    instances: u32,
    token: &str,
    scale_only: bool,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<(), DeployError> {
    let manager = manager(docker).await?;
    let proxy_placement = proxy_placement(docker, &manager).await?;
    overlay_network(docker, names, progress).await?;
    let version = docker.client_version();
    if (version.major_version, version.minor_version) < (1, 46) {
        progress(&format!(
            "this engine speaks API {}.{}: Swarm sets no-new-privileges on tasks from API 1.46 (Docker 27) on; \
             flowgate's tasks still run as user 65532 with no capabilities on a read-only image that holds no setuid file",
            version.major_version, version.minor_version
        ));
    }
    let references = references(docker, names, files_wanted(specs), token).await?;
    for role in [Role::Postgres, Role::Proxy, Role::Flow, Role::Mc] {
        let Some(spec) = specs.iter().find(|s| s.role == role) else {
            continue;
        };
        let replicas = if role == Role::Flow { u64::from(instances) } else { 1 };
        let placement = match role {
            Role::Proxy => proxy_placement.clone(),
            Role::Postgres => postgres_placement(docker, names, &manager).await,
            _ => Vec::new(),
        };
        let wanted = service_spec(names, spec, replicas, &placement, &references);
        let started = Instant::now();
        if role == Role::Flow {
            drain_leaving(docker, names, token, instances as usize, progress).await?;
        }
        let Some(change) = converge(docker, wanted, scale_only, progress).await? else {
            continue;
        };
        wait_for(docker, names, token, role, replicas, progress).await?;
        progress(&format!("{change}: done in {:.1}s", started.elapsed().as_secs_f64()));
    }
    prune_references(docker, names, &references).await;
    Ok(())
}

/// The Flow tasks Swarm stops when the service goes down to `keep` tasks,
/// by Swarm's own rule (swarmkit's replicated orchestrator): running tasks
/// stay before others, then each node's first copies before its later
/// ones, then lower slots. Swarm decides; the guess only lets the proxy
/// drain them first. A wrong guess costs that task's sessions a reconnect
/// (1001), and the task Swarm stops instead still gets its close frames
/// from the proxy when its address vanishes.
/// While an update rolls (two tasks in one slot) nothing is guessed.
fn leaving_on_scale_down(tasks: &[Listed], keep: usize) -> Vec<&Listed> {
    let mut flow: Vec<&Listed> = tasks.iter().filter(|t| t.found.role == Role::Flow).collect();
    let slots: std::collections::BTreeSet<_> = flow.iter().map(|t| t.found.index).collect();
    if slots.len() != flow.len() {
        return Vec::new();
    }
    flow.sort_by_key(|t| (!t.found.running, t.found.index));
    let mut copies: HashMap<&str, usize> = HashMap::new();
    let mut ranked: Vec<(usize, &Listed)> = flow
        .into_iter()
        .map(|t| {
            let copy = match t.node.as_deref() {
                Some(node) => {
                    let n = copies.entry(node).or_default();
                    *n += 1;
                    *n
                }
                None => usize::MAX,
            };
            (copy, t)
        })
        .collect();
    ranked.sort_by_key(|(copy, _)| *copy);
    ranked.into_iter().skip(keep).map(|(_, t)| t).collect()
}

/// Before Flow goes down to `keep` tasks: the tasks Swarm is about to stop
/// are drained in the proxy (requests finish, sessions get 1001 and
/// reconnect elsewhere) until idle, so Swarm stops tasks that serve nothing.
async fn drain_leaving(
    docker: &Docker,
    names: &Names,
    token: &str,
    keep: usize,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<(), DeployError> {
    // The full listing (tasks, addresses, nodes) only when the count goes down.
    let running = docker
        .inspect_service(&names.service(Role::Flow), None::<InspectServiceOptions>)
        .await
        .ok()
        .and_then(|s| s.spec?.mode?.replicated?.replicas);
    if running.is_none_or(|n| n <= keep as i64) {
        return Ok(());
    }
    let tasks = list(docker, &names.project).await?;
    let leaving = leaving_on_scale_down(&tasks, keep);
    if leaving.is_empty() {
        return Ok(());
    }
    let Ok(address) = admin_address(docker, names).await else {
        return Ok(()); // No proxy: nothing to drain from.
    };
    let admin = AdminClient::new(address, token);
    let backends = admin.backends().await?;
    let mut drained = Vec::new();
    for task in &leaving {
        let Some(backend) = backends
            .iter()
            .find(|b| b.service == "flow" && Some(&b.address) == task.address.as_ref())
        else {
            continue;
        };
        if admin.drain(&backend.id, super::engine::DRAIN.as_secs()).await? {
            drained.push((task.found.name.clone(), backend.id.clone()));
        }
    }
    if drained.is_empty() {
        return Ok(());
    }
    let said: Vec<&str> = drained.iter().map(|(name, _)| name.as_str()).collect();
    progress(&format!(
        "drain {} in the proxy before Swarm stops {} ...",
        said.join(", "),
        if drained.len() == 1 { "it" } else { "them" }
    ));
    // Drained here means idle: the proxy keeps each out of service until
    // its address vanishes, so Swarm stops tasks that serve nothing.
    super::engine::wait_drained(&admin, &drained, |b| b.active_requests > 0 || b.ws_active > 0).await
}

/// Creates or updates one service; the change made, if any.
async fn converge(
    docker: &Docker,
    wanted: ServiceSpec,
    scale_only: bool,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<Option<String>, DeployError> {
    let name = wanted.name.clone().unwrap_or_default();
    let replicas = |spec: &ServiceSpec| {
        spec.mode
            .as_ref()
            .and_then(|m| m.replicated.as_ref())
            .and_then(|r| r.replicas)
            .unwrap_or(0)
    };
    let config = |spec: &ServiceSpec| {
        spec.labels
            .as_ref()
            .and_then(|l| l.get(LABEL_CONFIG))
            .cloned()
            .unwrap_or_default()
    };
    for attempt in 0..5 {
        let current = match docker.inspect_service(&name, None::<InspectServiceOptions>).await {
            Ok(current) => current,
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {
                let change = format!("create service {name} ({} tasks)", replicas(&wanted));
                progress(&format!("{change} ..."));
                docker
                    .create_service(wanted, None)
                    .await
                    .map_err(DeployError::docker(format!("cannot create the service {name}")))?;
                return Ok(Some(change));
            }
            Err(e) => return Err(DeployError::docker(format!("cannot inspect the service {name}"))(e)),
        };
        let spec = current.spec.clone().unwrap_or_default();
        let version = current.version.and_then(|v| v.index).unwrap_or(0);
        let (next, change) = if config(&spec) != config(&wanted) && !scale_only {
            (
                wanted.clone(),
                format!("update service {name} (settings changed; one task at a time, the new one first)"),
            )
        } else if replicas(&spec) != replicas(&wanted) {
            // The settings it was made with, with the new count: a spec read
            // back through bollard loses its health check (Docker writes
            // `Healthcheck`, bollard reads `HealthCheck`), and any change
            // of the task template would replace every task.
            let next = if config(&spec) == config(&wanted) {
                wanted.clone()
            } else {
                let mut next = spec.clone();
                next.mode = wanted.mode.clone();
                if let (Some(task), Some(health)) = (
                    next.task_template.as_mut().and_then(|t| t.container_spec.as_mut()),
                    wanted
                        .task_template
                        .as_ref()
                        .and_then(|t| t.container_spec.as_ref())
                        .and_then(|c| c.health_check.clone()),
                ) {
                    task.health_check.get_or_insert(health);
                }
                next
            };
            (
                next,
                format!("scale {name} {} -> {}", replicas(&spec), replicas(&wanted)),
            )
        } else {
            if config(&spec) != config(&wanted) {
                progress(&format!(
                    "{name} runs older settings or another flowgate version; `flowgate up` rolls it out"
                ));
            }
            return Ok(None);
        };
        if attempt == 0 {
            progress(&format!("{change} ..."));
        }
        let options = UpdateServiceOptionsBuilder::default().version(version as i32).build();
        match docker.update_service(&name, next, options, None).await {
            Ok(_) => return Ok(Some(change)),
            // Someone else changed it since it was read: read it again.
            Err(bollard::errors::Error::DockerResponseServerError { message, .. })
                if message.contains("out of sequence") =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(DeployError::docker(format!("cannot update the service {name}"))(e)),
        }
    }
    Err(DeployError::OutOfSequence(name))
}

/// Waits until a service runs `replicas` tasks of its current settings and,
/// for Flow and MC, the proxy finds them healthy; a task Swarm cannot run
/// (an image missing on its node) is said at once.
async fn wait_for(
    docker: &Docker,
    names: &Names,
    token: &str,
    role: Role,
    replicas: u64,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<(), DeployError> {
    let service = names.service(role);
    let deadline = Instant::now() + CONVERGE;
    let mut said = Instant::now();
    loop {
        let tasks: Vec<TaskInfo> = project_tasks(docker, &names.project)
            .await?
            .into_iter()
            .filter(|t| t.service == service)
            .collect();
        if let Some(failed) = tasks.iter().find(|t| {
            matches!(t.state, TaskState::REJECTED | TaskState::FAILED)
                && t.error.as_deref().is_some_and(|e| e.contains("No such image"))
        }) {
            let node = node_name(docker, &failed.node_id).await;
            let image = service_labels_and_image(docker, &service)
                .await
                .map(|(_, image)| image)
                .unwrap_or_default();
            return Err(DeployError::ImageMissingOnNode { image, node });
        }
        let running = tasks.iter().filter(|t| t.state == TaskState::RUNNING).count() as u64;
        let updating = update_running(docker, &service).await;
        let backends = match admin_address(docker, names).await {
            Ok(addr) => AdminClient::new(addr, token).backends().await.ok(),
            Err(_) => None,
        };
        let healthy_in = |service: &str| {
            backends.as_ref().map_or(0, |b| {
                b.iter()
                    .filter(|b| b.service == service && b.state == BackendState::Healthy)
                    .count() as u64
            })
        };
        let healthy = match role {
            Role::Proxy => u64::from(backends.is_some()),
            Role::Flow => healthy_in("flow"),
            Role::Mc => healthy_in("mc"),
            Role::Postgres => running,
        };
        let wanted_healthy = if role == Role::Proxy { 1 } else { replicas };
        if running == replicas && healthy == wanted_healthy && !updating {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(DeployError::NotReady {
                name: service,
                secs: CONVERGE.as_secs(),
                state: format!("{running} of {replicas} tasks running, {healthy} healthy in the proxy"),
            });
        }
        if said.elapsed() >= Duration::from_secs(5) {
            progress(&format!(
                "{service}: {running} of {replicas} tasks running, {healthy} healthy in the proxy{}",
                if updating { ", update in progress" } else { "" }
            ));
            said = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Whether Swarm is still rolling an update of `service` out.
async fn update_running(docker: &Docker, service: &str) -> bool {
    let Ok(current) = docker.inspect_service(service, None::<InspectServiceOptions>).await else {
        return false;
    };
    current.update_status.and_then(|s| s.state).is_some_and(|s| {
        matches!(
            s,
            bollard::models::ServiceUpdateStatusStateEnum::UPDATING
                | bollard::models::ServiceUpdateStatusStateEnum::ROLLBACK_STARTED
        )
    })
}

async fn node_name(docker: &Docker, id: &str) -> String {
    let nodes = docker.list_nodes(None::<ListNodesOptions>).await.unwrap_or_default();
    display_names(&nodes).remove(id).unwrap_or_else(|| id.to_string())
}

/// Removes the project's secrets and configs no service uses any more
/// (Swarm refuses to remove one in use, which is what keeps the current).
async fn prune_references(docker: &Docker, names: &Names, keep: &References) {
    let filters = HashMap::from([("label", vec![format!("{LABEL_PROJECT}={}", names.project)])]);
    let secrets = docker
        .list_secrets(Some(
            bollard::query_parameters::ListSecretsOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await
        .unwrap_or_default();
    for secret in secrets {
        let id = secret.id.unwrap_or_default();
        if !keep.keeps(&id) {
            let _ = docker.delete_secret(&id).await;
        }
    }
    let configs = docker
        .list_configs(Some(
            bollard::query_parameters::ListConfigsOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await
        .unwrap_or_default();
    for config in configs {
        let id = config.id.unwrap_or_default();
        if !keep.keeps(&id) {
            let _ = docker.delete_config(&id).await;
        }
    }
}

/// Removes the project's services (Flow first, so sessions are closed by
/// a running proxy), waits for their tasks to stop, then the network,
/// secrets and configs.
pub async fn down(docker: &Docker, names: &Names, progress: &mut (dyn FnMut(&str) + Send)) -> Result<(), DeployError> {
    for role in [Role::Flow, Role::Mc, Role::Proxy, Role::Postgres] {
        let service = names.service(role);
        match docker.delete_service(&service).await {
            Ok(()) => progress(&format!("removed service {service}")),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {}
            Err(e) => return Err(DeployError::docker(format!("cannot remove the service {service}"))(e)),
        }
    }
    // Tasks stop after their services are gone; the network is free once they have.
    let deadline = Instant::now() + Duration::from_secs(60);
    let filters = HashMap::from([("label", vec![format!("{LABEL_PROJECT}={}", names.project)])]);
    while Instant::now() < deadline {
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let left = docker.list_containers(Some(options)).await.unwrap_or_default();
        if left.is_empty() && docker.remove_network(&names.network()).await.is_ok() {
            progress(&format!("removed network {}", names.network()));
            break;
        }
        if docker.inspect_network(&names.network(), None).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    prune_references(docker, names, &References::default()).await;
    Ok(())
}

/// Restarts one instance of a Swarm deployment: its task's container is
/// stopped (SIGTERM, then the grace period) and Swarm starts a new task in
/// its slot, which the proxy adds once healthy. Only a task on the engine
/// flowgate talks to can be stopped from here.
pub async fn restart(docker: &Docker, project: &str, name: &str) -> Result<(), DeployError> {
    let listed = list(docker, project).await?;
    let Some(task) = listed.iter().find(|l| l.found.name == name) else {
        return Err(DeployError::NoContainer {
            name: name.into(),
            project: project.into(),
            known: listed
                .iter()
                .map(|l| l.found.name.clone())
                .collect::<Vec<_>>()
                .join(", "),
        });
    };
    let Some(container) = &task.container else {
        return Err(DeployError::TaskElsewhere {
            name: name.into(),
            node: task.node.clone().unwrap_or_default(),
        });
    };
    super::engine::remove_container(docker, container).await
}

/// The id of the task in `slot` of a role's service (any slot when None),
/// a running one first: whose log `logs flow-2` reads.
pub async fn task_of(docker: &Docker, names: &Names, role: Role, slot: Option<u32>) -> Option<String> {
    let tasks = project_tasks(docker, &names.project).await.ok()?;
    tasks
        .into_iter()
        .filter(|t| t.role == role && (slot.is_none() || t.slot == slot))
        .max_by_key(|t| t.state == TaskState::RUNNING)
        .map(|t| t.id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::settings::PROXY_CONFIG_IN_CONTAINER;

    use crate::config::deployment::Engine;
    use crate::deploy::settings::{self, Deployment, RealProfile};

    /// A project directory of its own per test, holding the files flowgate
    /// writes before it makes the services.
    struct ProjectDir(std::path::PathBuf);

    impl ProjectDir {
        fn new(dep: &Deployment) -> ProjectDir {
            static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("flowgate-swarm-test-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("proxy.toml"), settings::swarm_proxy_toml(dep)).unwrap();
            std::fs::write(
                dir.join("hazelcast.yml"),
                settings::hazelcast_yml(dep, Some("10.0.1.*")),
            )
            .unwrap();
            ProjectDir(dir)
        }
    }

    impl Drop for ProjectDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn demo() -> (Names, Vec<ContainerSpec>, ProjectDir) {
        let dep = Deployment {
            project: "demo".into(),
            http_port: 8080,
            https_port: 8443,
            engine: Engine::Swarm,
            ..settings::example()
        };
        let dir = ProjectDir::new(&dep);
        let specs = settings::demo_specs(&dep, "flowgate:x", &dir.0);
        (dep.names(), specs, dir)
    }

    fn real() -> (Names, Vec<ContainerSpec>, ProjectDir) {
        let dep = Deployment {
            engine: Engine::Swarm,
            ..settings::example()
        };
        let real = RealProfile {
            tag: "6.0".into(),
            license: "LICENCE".into(),
            db_password: "s3cret".into(),
        };
        let dir = ProjectDir::new(&dep);
        let specs = settings::real_specs(&dep, "flowgate:x", &real, &dir.0);
        (dep.names(), specs, dir)
    }

    /// The secrets and configs `apply` would make, with made-up ids.
    fn made(specs: &[ContainerSpec]) -> References {
        let wanted = files_wanted(specs);
        References(
            wanted
                .into_iter()
                .enumerate()
                .map(|(n, wanted)| Reference {
                    wanted,
                    id: format!("id-{n}"),
                    name: format!("name-{n}"),
                })
                .collect(),
        )
    }

    fn container(spec: &ServiceSpec) -> &TaskSpecContainerSpec {
        spec.task_template.as_ref().unwrap().container_spec.as_ref().unwrap()
    }

    #[test]
    fn the_real_profile_pins_postgres_to_its_volume_and_passes_its_password_as_a_secret() {
        let (names, specs, _dir) = real();
        let refs = made(&specs);
        let postgres = specs.iter().find(|s| s.role == Role::Postgres).unwrap();
        let service = service_spec(&names, postgres, 1, &["node.id==n1".into()], &refs);
        assert_eq!(service.name.as_deref(), Some("prod-postgres"));
        let placement = service.task_template.as_ref().unwrap().placement.as_ref().unwrap();
        assert_eq!(placement.constraints.as_deref(), Some(&["node.id==n1".to_string()][..]));
        let c = container(&service);
        let mounts = c.mounts.as_ref().unwrap();
        assert!(mounts.iter().any(|m| m.typ == Some(MountType::VOLUME)
            && m.source.as_deref() == Some("prod-pgdata")
            && m.target.as_deref() == Some("/var/lib/postgresql/data")));
        assert!(
            mounts.iter().all(|m| m.source.as_deref() != Some("prod-secrets")),
            "the password's directory is a Swarm secret, not a volume: {mounts:?}"
        );
        let secrets = c.secrets.as_ref().unwrap();
        assert_eq!(secrets.len(), 1);
        let file = secrets[0].file.as_ref().unwrap();
        assert_eq!(file.name.as_deref(), Some("/run/secrets/flowgate/db-password"));
        assert_eq!((file.uid.as_deref(), file.mode), (Some("999"), Some(0o400)));
        assert!(
            c.env
                .as_ref()
                .unwrap()
                .contains(&"POSTGRES_PASSWORD_FILE=/run/secrets/flowgate/db-password".to_string())
        );
        let shown = serde_json::to_string(&service).unwrap();
        assert!(!shown.contains("s3cret"), "{shown}");
        let check = c.health_check.as_ref().unwrap().test.clone().unwrap();
        assert_eq!(check[..2], ["CMD".to_string(), "pg_isready".to_string()]);
        // The token is the proxy's alone.
        assert!(
            refs.0
                .iter()
                .filter(|r| r.wanted.content == Content::AdminToken)
                .all(|r| r.wanted.role == Role::Proxy)
        );
    }

    #[test]
    fn the_real_profiles_flow_reads_hazelcast_yml_as_a_config_naming_every_task_on_the_overlay() {
        let (names, specs, _dir) = real();
        let refs = made(&specs);
        let flow = specs.iter().find(|s| s.role == Role::Flow).unwrap();
        let service = service_spec(&names, flow, 3, &[], &refs);
        let c = container(&service);
        let configs = c.configs.as_ref().unwrap();
        assert_eq!(
            configs[0].file.as_ref().unwrap().name.as_deref(),
            Some("/opt/flowgate/hazelcast.yml")
        );
        assert!(
            c.mounts.as_ref().unwrap().is_empty(),
            "a host path exists on one node only"
        );
        let yml = refs
            .of(Role::Flow, Kind::Config)
            .next()
            .unwrap()
            .wanted
            .text("")
            .unwrap();
        assert!(yml.contains("- tasks.prod-flow:25701"), "{yml}");
        assert!(
            yml.contains("interfaces:\n      enabled: true\n      interfaces:\n        - 10.0.1.*"),
            "{yml}"
        );
        let env = c.env.as_ref().unwrap();
        assert!(env.iter().all(|e| !e.starts_with("FLOWGATE_SIM_NAME")), "{env:?}");
        assert!(
            env.iter()
                .any(|e| e.starts_with("OPTIONS=") && e.contains("--flow.db.host=prod-postgres"))
        );
        // MC reaches Flow by the service's name, which Swarm's DNS answers.
        let mc = specs.iter().find(|s| s.role == Role::Mc).unwrap();
        assert!(
            mc.env
                .contains(&"MC_DEFAULT_CLUSTER_MEMBERS=prod-flow:25701".to_string()),
            "{:?}",
            mc.env
        );
    }

    fn task(slot: u32, node: &str, running: bool) -> Listed {
        Listed {
            found: Found {
                name: format!("demo-flow-{slot}"),
                role: Role::Flow,
                index: Some(slot),
                config: String::new(),
                running,
            },
            id: format!("t{slot}"),
            state: "running".into(),
            node: Some(node.into()),
            address: Some(format!("10.0.1.{slot}:9021")),
            container: None,
        }
    }

    fn leaving(tasks: &[Listed], keep: usize) -> Vec<u32> {
        let mut slots: Vec<u32> = leaving_on_scale_down(tasks, keep)
            .iter()
            .filter_map(|t| t.found.index)
            .collect();
        slots.sort();
        slots
    }

    #[test]
    fn a_scale_down_drains_the_tasks_swarm_stops_later_copies_on_a_node_first_then_higher_slots() {
        // Six tasks, three per node: each node keeps its lowest slot.
        let six: Vec<Listed> = [(1, "a"), (2, "b"), (3, "a"), (4, "b"), (5, "a"), (6, "b")]
            .into_iter()
            .map(|(slot, node)| task(slot, node, true))
            .collect();
        assert_eq!(leaving(&six, 2), vec![3, 4, 5, 6]);
        assert_eq!(leaving(&six, 5), vec![6]);
        assert_eq!(leaving(&six, 6), Vec::<u32>::new());
        // Uneven: node a's later copies go before node b's first.
        let uneven: Vec<Listed> = [(1, "a"), (2, "a"), (3, "a"), (4, "b")]
            .into_iter()
            .map(|(slot, node)| task(slot, node, true))
            .collect();
        assert_eq!(leaving(&uneven, 2), vec![2, 3]);
        // A task not running yet goes before a running one of the same rank.
        let starting = vec![task(1, "a", false), task(2, "b", true), task(3, "a", true)];
        assert_eq!(leaving(&starting, 2), vec![1]);
        // Proxy and MC tasks never count.
        let mut mixed = six.clone();
        mixed[0].found.role = Role::Mc;
        assert_eq!(leaving(&mixed, 4), vec![6]);
    }

    fn node(id: &str, host: &str, edge: bool) -> bollard::models::Node {
        bollard::models::Node {
            id: Some(id.into()),
            spec: Some(bollard::models::NodeSpec {
                labels: Some(if edge {
                    HashMap::from([(EDGE_LABEL.to_string(), "true".to_string())])
                } else {
                    HashMap::new()
                }),
                ..Default::default()
            }),
            description: Some(bollard::models::NodeDescription {
                hostname: Some(host.into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_proxy_runs_on_the_manager_flowgate_talks_to_which_must_be_an_edge_node_when_any_is() {
        let plain = [node("m1", "manager-1", false), node("w1", "worker-1", false)];
        assert_eq!(placement_on_edge(&plain, "m1").unwrap(), vec!["node.id==m1"]);
        let edge_here = [node("m1", "manager-1", true), node("w1", "worker-1", true)];
        assert_eq!(placement_on_edge(&edge_here, "m1").unwrap(), vec!["node.id==m1"]);
        let edge_elsewhere = [node("m1", "manager-1", false), node("w1", "edge-1", true)];
        let said = placement_on_edge(&edge_elsewhere, "m1").unwrap_err().to_string();
        assert!(
            said.contains("edge-1") && said.contains("manager-1") && said.contains("--label-add io.flowgate.edge=true"),
            "{said}"
        );
    }

    #[test]
    fn no_guess_while_an_update_rolls_two_tasks_in_one_slot() {
        let rolling = vec![task(1, "a", true), task(1, "b", true), task(2, "b", true)];
        assert!(leaving_on_scale_down(&rolling, 1).is_empty());
    }

    #[test]
    fn flow_is_one_dnsrr_service_whose_tasks_name_themselves_and_whose_hash_ignores_the_count() {
        let (names, specs, _dir) = demo();
        let flow = specs.iter().find(|s| s.role == Role::Flow).unwrap();
        let three = service_spec(&names, flow, 3, &[], &References::default());
        let five = service_spec(&names, flow, 5, &[], &References::default());
        let label = |s: &ServiceSpec| s.labels.as_ref().unwrap()[LABEL_CONFIG].clone();
        assert_eq!(label(&three), label(&five), "scaling must not roll the tasks");
        assert_eq!(three.name.as_deref(), Some("demo-flow"));
        assert_eq!(
            three.endpoint_spec.as_ref().unwrap().mode,
            Some(EndpointSpecModeEnum::DNSRR)
        );
        let container = three.task_template.as_ref().unwrap().container_spec.as_ref().unwrap();
        assert!(!container.args.as_ref().unwrap().contains(&"--name".to_string()));
        assert!(
            container
                .env
                .as_ref()
                .unwrap()
                .contains(&"FLOWGATE_SIM_NAME={{.Service.Name}}-{{.Task.Slot}}".to_string())
        );
        assert_eq!(container.capability_drop.as_deref(), Some(&["ALL".to_string()][..]));
        assert_eq!(container.user.as_deref(), Some("65532:65532"));
        assert!(container.health_check.is_some());
    }

    #[test]
    fn the_proxy_publishes_in_host_mode_without_its_admin_port_and_reads_its_token_as_a_secret() {
        let (names, specs, _dir) = demo();
        let proxy = specs.iter().find(|s| s.role == Role::Proxy).unwrap();
        let spec = service_spec(&names, proxy, 1, &["node.id==abc".into()], &made(&specs));
        let ports = spec.endpoint_spec.as_ref().unwrap().ports.clone().unwrap();
        assert_eq!(ports.len(), 2);
        assert!(
            ports
                .iter()
                .all(|p| p.publish_mode == Some(EndpointPortConfigPublishModeEnum::HOST))
        );
        assert_eq!(
            ports.iter().map(|p| p.published_port.unwrap()).collect::<Vec<_>>(),
            [8080, 8443]
        );
        let container = spec.task_template.as_ref().unwrap().container_spec.as_ref().unwrap();
        let secret = &container.secrets.as_ref().unwrap()[0];
        assert_eq!(secret.file.as_ref().unwrap().mode, Some(0o400));
        assert_eq!(
            secret.file.as_ref().unwrap().name.as_deref(),
            Some(SWARM_TOKEN_IN_CONTAINER)
        );
        let config = &container.configs.as_ref().unwrap()[0];
        assert_eq!(
            config.file.as_ref().unwrap().name.as_deref(),
            Some(PROXY_CONFIG_IN_CONTAINER)
        );
        // proxy.toml is a Swarm config, not a host path that exists on one node only.
        let mounts = container.mounts.as_ref().unwrap();
        assert!(
            mounts
                .iter()
                .all(|m| m.target.as_deref() != Some(PROXY_CONFIG_IN_CONTAINER))
        );
        assert!(
            mounts
                .iter()
                .any(|m| m.typ == Some(MountType::VOLUME) && m.source.as_deref() == Some("demo-certs"))
        );
    }
}
