//! Running the deployment on Docker: flowgate's own image (built here from
//! the running binary, since no registry can be reached), and, as it grows,
//! the planner and the executor that create and reconcile containers.

pub mod command;
pub mod engine;
pub mod image;
pub mod plan;
pub mod settings;

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
}

/// Connects to the local Docker engine and agrees on an API version.
pub async fn connect() -> Result<bollard::Docker, DeployError> {
    let endpoint = std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
    let unreachable = |reason: String| DeployError::Unreachable {
        endpoint: endpoint.clone(),
        reason,
    };
    let docker = bollard::Docker::connect_with_local_defaults().map_err(|e| unreachable(e.to_string()))?;
    let docker = docker
        .negotiate_version()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    docker.ping().await.map_err(|e| unreachable(e.to_string()))?;
    Ok(docker)
}
