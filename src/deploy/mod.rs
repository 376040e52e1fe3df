//! Running the deployment on Docker. `settings` says what a deployment is
//! made of (its rules, container specs and the proxy's file), `plan` turns
//! wanted and found containers into ordered actions (pure), `engine`
//! carries them out through bollard and the proxy's admin API, `image`
//! builds flowgate's own image from the running binary (no registry is
//! needed), and `command` holds the operations the commands and the
//! dashboard share: resolve, apply, scale, restart, drain, down, logs.

pub mod command;
pub mod engine;
pub mod image;
pub mod plan;
pub mod settings;
pub mod ssh;
pub mod swarm;

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error(
        "cannot reach Docker at {endpoint}: {reason}; start the Docker engine (or set DOCKER_HOST) and check this user may use it"
    )]
    Unreachable { endpoint: String, reason: String },
    #[error("cannot list the libraries of {binary} with ldd: {reason}")]
    Libraries { binary: String, reason: String },
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("building the image {tag} failed: {reason}")]
    Build { tag: String, reason: String },
    #[error(
        "the image {image} is not on this machine and cannot be pulled ({reason}); on a machine with registry access run `docker save {image} -o image.tar`, copy the file here and run `docker load -i image.tar`, or use --demo"
    )]
    Missing { image: String, reason: String },
    #[error("Docker: {0}")]
    Docker(#[from] bollard::errors::Error),
    #[error("{what}: {source}")]
    DockerCall {
        what: String,
        source: bollard::errors::Error,
    },
    #[error(transparent)]
    Invalid(#[from] crate::config::deployment::DeploymentError),
    #[error(
        "the real profile needs a Hazelcast licence: set MC_LICENSE in the environment, in ./.env or as mc_license in flowgate.toml, or use the demo profile (--demo)"
    )]
    NoLicense,
    #[error("project {project} has no deployment; create one with `flowgate up --demo --project {project}`")]
    NoDeployment { project: String },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot find flowgate's own binary: {0}")]
    OwnBinary(std::io::Error),
    #[error(
        "the project's admin token {} cannot be read ({source}); was the deployment made on this machine by this user?",
        path.display()
    )]
    Token {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{action} failed: {source}")]
    Step { action: String, source: Box<DeployError> },
    #[error(
        "a container named {0} already exists but is not part of this deployment; remove or rename it, or choose another --project"
    )]
    Foreign(String),
    #[error(
        "cannot start {name}: a host port it publishes ({ports}) is already taken; free it or choose others with --http-port/--https-port"
    )]
    PortTaken { name: String, ports: String },
    #[error("{name} exited (code {code}); see `flowgate logs {name}`")]
    Exited { name: String, code: i64 },
    #[error("{name} was not ready within {secs} s ({state}); see `flowgate logs {name}`")]
    NotReady { name: String, secs: u64, state: String },
    #[error("{name} was still draining after {secs} s")]
    StillDraining { name: String, secs: u64 },
    #[error("{0} publishes no admin port (is it running?)")]
    NoAdminPort(String),
    #[error("the proxy did not come up within 30 s ({0}); see `flowgate logs proxy`")]
    ProxyNotUp(crate::proxy::client::AdminError),
    #[error(transparent)]
    Admin(#[from] crate::proxy::client::AdminError),
    #[error(
        "a {kind} named {name} exists but flowgate did not make it for project {project} (it lacks the label io.flowgate.project={project}); flowgate will neither use nor remove it: remove or rename it yourself (docker {kind} rm {name}), or choose another --project"
    )]
    ForeignObject {
        kind: &'static str,
        name: String,
        project: String,
    },
    #[error(
        "could not remove {volumes}; kept {} (it holds what that data needs, such as the database password): stop what uses them and run `flowgate down --volumes` again",
        dir.display()
    )]
    VolumesKept { volumes: String, dir: std::path::PathBuf },
    #[error(
        "the proxy runs as the unprivileged user {uid} and cannot read {} (owner {owner}, mode {mode:o}); let it: setfacl -m u:{uid}:r {} (and u:{uid}:x on its directory), or chown {uid} {}",
        path.display(), path.display(), path.display()
    )]
    Unreadable {
        path: std::path::PathBuf,
        uid: u32,
        owner: u32,
        mode: u32,
    },
    #[error(
        "this Docker engine is not a Swarm manager (swarm state: {state}); run `docker swarm init` here, point DOCKER_HOST at a manager, or leave out --swarm (and engine = \"swarm\")"
    )]
    NotManager { state: String },
    #[error(
        "the proxy's task runs on node {node}, not on the engine flowgate talks to; flowgate reaches its admin API through that engine: set DOCKER_HOST to the node's engine"
    )]
    ProxyElsewhere { node: String },
    #[error(
        "nodes labelled io.flowgate.edge=true ({edges}) are to take public traffic, but flowgate talks to manager {manager}, which is not one; the proxy runs on the manager flowgate talks to (its admin API is reached through that engine only): label it (docker node update --label-add io.flowgate.edge=true {manager}) or point DOCKER_HOST at an edge node that is a manager (ssh://USER@HOST or tcp:// with TLS)"
    )]
    EdgeElsewhere { manager: String, edges: String },
    #[error(
        "the image {image} is not on node {node} and Swarm cannot pull it; copy it there with `docker save {image} | docker -H <node's engine> load`, or name an image in a registry every node can reach"
    )]
    ImageMissingOnNode { image: String, node: String },
    #[error(
        "{name} runs on node {node}, whose engine flowgate does not talk to; restart it there (docker -H <that engine> rm -f its container: Swarm starts a new one), or point DOCKER_HOST at it"
    )]
    TaskElsewhere { name: String, node: String },
    #[error(
        "on Swarm the proxy follows the running tasks, so {0} would come back at its next lookup; restart it (r: a new task takes its place, its sessions get 1001) or scale down instead"
    )]
    DrainOnSwarm(String),
    #[error("cannot open a loopback port to reach the proxy's admin API: {0}")]
    Forward(std::io::Error),
    #[error("the service {0} kept changing while flowgate updated it (update out of sequence, 5 tries); try again")]
    OutOfSequence(String),
    #[error(
        "project {project} runs on {running}, not on {wanted}; take it down first (`flowgate down --project {project}`) or choose another --project"
    )]
    OtherEngine {
        project: String,
        running: &'static str,
        wanted: &'static str,
    },
    #[error("no container {name} in project {project}; its containers: {known}")]
    NoContainer {
        name: String,
        project: String,
        known: String,
    },
}

impl DeployError {
    /// A Docker call that failed, said with what it was for.
    pub fn docker(what: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> DeployError {
        let what = what.into();
        move |source| DeployError::DockerCall { what, source }
    }
}

/// Whether DOCKER_HOST reaches the engine over ssh://.
pub fn engine_over_ssh() -> bool {
    std::env::var("DOCKER_HOST").is_ok_and(|h| h.starts_with("ssh://"))
}

/// The process's one ssh tunnel (every `connect` of it shares it).
static SSH_TUNNEL: std::sync::Mutex<Option<std::sync::Arc<ssh::Tunnel>>> = std::sync::Mutex::new(None);

fn ssh_tunnel(destination: ssh::Destination) -> Result<std::sync::Arc<ssh::Tunnel>, String> {
    let mut tunnel = SSH_TUNNEL.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(open) = tunnel.as_ref() {
        return Ok(open.clone());
    }
    let open = std::sync::Arc::new(ssh::Tunnel::open(destination)?);
    *tunnel = Some(open.clone());
    Ok(open)
}

/// Removes the ssh tunnel's socket, if one was opened: called once the
/// process is done with Docker.
pub fn close_ssh_tunnel() {
    if let Some(tunnel) = SSH_TUNNEL.lock().unwrap_or_else(|e| e.into_inner()).take() {
        tunnel.close();
    }
}

/// Connects to the Docker engine DOCKER_HOST names (the local one by
/// default: unix://, tcp:// with TLS, or ssh://) and agrees on an API version.
pub async fn connect() -> Result<bollard::Docker, DeployError> {
    let endpoint = std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
    let unreachable = |reason: String| DeployError::Unreachable {
        endpoint: endpoint.clone(),
        reason,
    };
    if endpoint.starts_with("ssh://") {
        let destination = ssh::Destination::parse(&endpoint).map_err(unreachable)?;
        let tunnel = ssh_tunnel(destination).map_err(unreachable)?;
        let socket = tunnel.socket.to_string_lossy().into_owned();
        let failed = |e: bollard::errors::Error| {
            let said = tunnel.said();
            unreachable(if said.is_empty() {
                e.to_string()
            } else {
                format!("ssh said: {}", said.lines().collect::<Vec<_>>().join(" "))
            })
        };
        let docker = bollard::Docker::connect_with_unix(&socket, 120, bollard::API_DEFAULT_VERSION).map_err(failed)?;
        let docker = docker.negotiate_version().await.map_err(failed)?;
        docker.ping().await.map_err(failed)?;
        return Ok(docker);
    }
    let tls = std::env::var_os("DOCKER_TLS_VERIFY").is_some_and(|v| !v.is_empty());
    if endpoint.starts_with("tcp://") && !tls {
        tracing::warn!(
            "DOCKER_HOST {endpoint} without DOCKER_TLS_VERIFY: the engine's API (root on that machine) travels unencrypted"
        );
    }
    // DOCKER_HOST as the docker CLI reads it: unix://, or tcp:// with TLS
    // from DOCKER_TLS_VERIFY and DOCKER_CERT_PATH (ca.pem, cert.pem, key.pem).
    let docker = bollard::Docker::connect_with_defaults().map_err(|e| unreachable(e.to_string()))?;
    let docker = docker
        .negotiate_version()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    docker.ping().await.map_err(|e| unreachable(e.to_string()))?;
    Ok(docker)
}
