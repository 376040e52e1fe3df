//! `flowgate export`: the deployment of flowgate.toml written for other
//! tools, each honouring every rule of the Flow load-balancing guide:
//! a docker-compose file with flowgate's proxy, one with Traefik in front,
//! and an nginx configuration (with its compose file).
//!
//! The container settings come from the same specs `flowgate up` creates
//! containers from, so an export and a deployment cannot drift apart.

mod compose;
mod nginx;
mod stack;

use std::path::{Path, PathBuf};

use crate::config::deployment::{CertMode, Profile};
use crate::deploy::DeployError;
use crate::deploy::settings::{self, Deployment, RealProfile};

/// Every file export writes starts with a comment holding this, and only
/// such files are overwritten.
pub const MARKER: &str = "flowgate export";

/// Compose interpolates these from the environment or `.env`: secrets never
/// land in the files.
const LICENSE: &str = "${MC_LICENSE:?set MC_LICENSE in .env}";
const DB_PASSWORD: &str = "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD in .env}";

/// What an export is made from.
pub struct Source {
    pub deployment: Deployment,
    pub profile: Profile,
    /// Tag of the Hazelcast images.
    pub tag: String,
    /// flowgate's image (proxy and simulators).
    pub image: String,
}

impl Source {
    pub fn real(&self) -> Option<RealProfile> {
        (self.profile == Profile::Real).then(|| RealProfile {
            tag: self.tag.clone(),
            license: LICENSE.into(),
            db_password: DB_PASSWORD.into(),
        })
    }
}

/// One file of an export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub name: &'static str,
    pub text: String,
}

/// What to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// docker-compose.yml with flowgate's proxy in front.
    Compose,
    /// docker-compose.yml with Traefik in front (labels, entrypoints, middlewares, ACME).
    Traefik,
    /// nginx.conf (upstream over all instances, WebSocket, TLS) and a docker-compose.yml.
    Nginx,
    /// docker-stack.yml for `docker stack deploy`: the services `up --swarm` makes.
    Stack,
}

/// Why an export could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("'{0}' is not HOST:PORT (e.g. 10.0.0.11:9021)")]
    Address(String),
    #[error("{} exists and was not written by flowgate export; move it away or choose another --out", .0.display())]
    Foreign(PathBuf),
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Deploy(#[from] DeployError),
}

/// The files of one export. `flow` and `mc` (nginx only) name instances
/// that run elsewhere instead of the compose file's containers.
pub fn render(kind: Kind, source: &Source, flow: &[String], mc: Option<&str>) -> Result<Vec<File>, ExportError> {
    Ok(match kind {
        Kind::Compose => compose::flowgate(source),
        Kind::Traefik => compose::traefik(source),
        Kind::Nginx => nginx::files(source, &nginx::Upstreams::from_args(&source.deployment, flow, mc)?),
        Kind::Stack => stack::files(source),
    })
}

/// Tags the image of this binary (built when missing) as `name`, so the
/// compose file runs here without a registry; returns the image built.
pub async fn tag_local_image(
    docker: &bollard::Docker,
    name: &str,
    progress: impl FnMut(&str) + Send,
) -> Result<String, ExportError> {
    let binary = std::env::current_exe().map_err(DeployError::OwnBinary)?;
    let built = crate::deploy::image::ensure(docker, &binary, progress).await?;
    let (repo, tag) = name.rsplit_once(':').unwrap_or((name, "latest"));
    let options = bollard::query_parameters::TagImageOptionsBuilder::new()
        .repo(repo)
        .tag(tag)
        .build();
    docker
        .tag_image(&built, Some(options))
        .await
        .map_err(DeployError::docker(format!("cannot tag {built} as {name}")))?;
    Ok(built)
}

/// Writes `files` into `dir`, refusing to overwrite a file that export did
/// not write (nothing the operator wrote is lost).
pub fn write(dir: &Path, files: &[File]) -> Result<(), ExportError> {
    for file in files {
        let path = dir.join(file.name);
        if let Ok(existing) = std::fs::read_to_string(&path) {
            if existing != file.text && !existing.lines().take(3).any(|l| l.contains(MARKER)) {
                return Err(ExportError::Foreign(path));
            }
        }
        crate::fsutil::write_atomic(&path, file.text.as_bytes(), 0o644)
            .map_err(|source| ExportError::Write { path, source })?;
    }
    Ok(())
}

/// Files every export of the real profile needs beside its main file.
fn real_profile_files(source: &Source) -> Vec<File> {
    if source.profile != Profile::Real {
        return Vec::new();
    }
    let hazelcast = settings::hazelcast_yml(&source.deployment, None).replacen(
        "# Written by flowgate",
        &format!("# Written by `{MARKER}`"),
        1,
    );
    vec![
        File {
            name: "hazelcast.yml",
            text: hazelcast,
        },
        File {
            name: ".env.example",
            text: format!(
                "# Written by `{MARKER}`: copy to .env and fill in; compose reads .env beside the compose file.\n\
                 MC_LICENSE=\n\
                 POSTGRES_PASSWORD=\n"
            ),
        },
    ]
}

/// Where a TLS front end other than flowgate finds the certificate.
fn certificate_paths(source: &Source) -> (PathBuf, PathBuf) {
    let dep = &source.deployment;
    match (&dep.tls.mode, &dep.tls.cert, &dep.tls.key) {
        (CertMode::Files, Some(cert), Some(key)) => (cert.clone(), key.clone()),
        _ => {
            let live = PathBuf::from("/etc/letsencrypt/live").join(&dep.domain);
            (live.join("fullchain.pem"), live.join("privkey.pem"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::deployment::TlsFile;

    pub fn source(profile: Profile) -> Source {
        Source {
            deployment: Deployment {
                tls: TlsFile {
                    mode: CertMode::AcmeProduction,
                    email: Some("ops@example.com".into()),
                    ..TlsFile::default()
                },
                ..settings::example()
            },
            profile,
            tag: "latest".into(),
            image: "flowgate:0.1.0".into(),
        }
    }

    #[test]
    fn write_refuses_to_overwrite_a_file_it_did_not_write() {
        let dir = std::env::temp_dir().join(format!("flowgate-export-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let files = vec![File {
            name: "nginx.conf",
            text: format!("# Written by `{MARKER} nginx`\nevents {{}}\n"),
        }];
        write(&dir, &files).unwrap();
        // Its own file is rewritten.
        write(&dir, &files).unwrap();
        std::fs::write(dir.join("nginx.conf"), "# mine\n").unwrap();
        let error = write(&dir, &files).unwrap_err().to_string();
        assert!(error.contains("was not written by flowgate export"), "{error}");
        assert_eq!(std::fs::read_to_string(dir.join("nginx.conf")).unwrap(), "# mine\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn secrets_are_never_in_the_files() {
        for files in [
            compose::flowgate(&source(Profile::Real)),
            compose::traefik(&source(Profile::Real)),
        ] {
            let all: String = files.iter().map(|f| f.text.as_str()).collect();
            assert!(all.contains("${MC_LICENSE:?"), "{all}");
            assert!(all.contains("\"FLOW_DB_PASSWORD=${POSTGRES_PASSWORD:?"), "{all}");
            assert!(all.contains("\"POSTGRES_PASSWORD=${POSTGRES_PASSWORD:?"), "{all}");
            assert!(
                !all.contains("POSTGRES_PASSWORD_FILE") && !all.contains("-secrets"),
                "{all}"
            );
        }
    }
}
