//! `flowgate export`: the deployment of flowgate.toml written for other
//! tools, each honouring every rule of the Flow load-balancing guide:
//! a docker-compose file with flowgate's proxy, one with Traefik in front,
//! and an nginx configuration (with its compose file).
//!
//! The container settings come from the same specs `flowgate up` creates
//! containers from, so an export and a deployment cannot drift apart.

mod compose;
mod nginx;

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use crate::cli::{ExportArgs, ExportKind, UpArgs};
use crate::config::deployment::{CertMode, DeploymentFile, Profile};
use crate::deploy::command::{Running, resolve};
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

pub async fn run(project: &str, args: ExportArgs, file: Option<&DeploymentFile>) -> anyhow::Result<()> {
    let up = UpArgs {
        deployment: args.deployment.clone(),
        no_pull: true,
    };
    // A running deployment of the project fills in what flags and the file leave open, as for `up`.
    let docker = crate::deploy::connect().await;
    let running = match &docker {
        Ok(docker) => Running::read(docker, project).await.unwrap_or_default(),
        Err(_) => Running::default(),
    };
    let target = resolve(project, &up, file, &running)?;
    let default_image = format!("{}:{}", crate::deploy::image::REPOSITORY, env!("CARGO_PKG_VERSION"));
    let source = Source {
        deployment: target.deployment,
        profile: target.profile,
        tag: target.tag,
        image: args.image.clone().unwrap_or_else(|| default_image.clone()),
    };
    let files = match args.kind {
        ExportKind::Compose => compose::flowgate(&source),
        ExportKind::Traefik => compose::traefik(&source),
        ExportKind::Nginx => {
            let upstreams =
                nginx::Upstreams::from_args(&source.deployment, &args.flow_address, args.mc_address.as_deref())?;
            nginx::files(&source, &upstreams)
        }
    };
    let uses_image = files.iter().any(|f| f.text.contains(&source.image));
    if uses_image && args.image.is_none() {
        tag_local_image(docker.as_ref().map_err(|e| e.to_string()), &default_image).await;
    }
    match &args.out {
        Some(dir) => {
            write(dir, &files)?;
            let written: String = files
                .iter()
                .map(|f| format!("{}\n", dir.join(f.name).display()))
                .collect();
            crate::cli::print(&written)?;
            let dir_shown = dir.display();
            match args.kind {
                ExportKind::Nginx => eprintln!(
                    "next: nginx -t -c {} on the balancer, or cd {dir_shown} && docker-compose up -d",
                    std::path::absolute(dir)
                        .unwrap_or_else(|_| dir.clone())
                        .join("nginx.conf")
                        .display()
                ),
                _ => eprintln!("next: cd {dir_shown} && docker-compose up -d"),
            }
            if source.profile == Profile::Real {
                eprintln!(
                    "note: put MC_LICENSE and POSTGRES_PASSWORD in {} (see .env.example); the files never hold them",
                    dir.join(".env").display()
                );
            }
        }
        None => {
            let main = &files[0];
            crate::cli::print(&main.text)?;
            if files.len() > 1 {
                let others: Vec<&str> = files[1..].iter().map(|f| f.name).collect();
                eprintln!(
                    "note: {} also needs {}; write them all with --out DIR",
                    main.name,
                    others.join(", ")
                );
            }
        }
    }
    Ok(())
}

/// Tags the image of this binary (built when missing) as `name`, so the
/// compose file runs here without a registry. Without Docker, says how.
async fn tag_local_image(docker: Result<&bollard::Docker, String>, name: &str) {
    let result = async {
        let docker = docker.map_err(anyhow::Error::msg)?;
        let binary = std::env::current_exe().context("cannot find flowgate's own binary")?;
        let built = crate::deploy::image::ensure(docker, &binary, |line| eprintln!("{line}")).await?;
        let (repo, tag) = name.rsplit_once(':').unwrap_or((name, "latest"));
        let options = bollard::query_parameters::TagImageOptionsBuilder::new()
            .repo(repo)
            .tag(tag)
            .build();
        docker
            .tag_image(&built, Some(options))
            .await
            .with_context(|| format!("cannot tag {built} as {name}"))?;
        anyhow::Ok(built)
    }
    .await;
    match result {
        Ok(built) => eprintln!("image {name} is this binary ({built})"),
        Err(e) => eprintln!(
            "note: the files use the image {name}, which is not built here ({e:#}); run `flowgate export` where Docker \
             runs, or push flowgate's image to your registry and pass --image"
        ),
    }
}

/// Writes `files` into `dir`, refusing to overwrite a file that export did
/// not write (nothing the operator wrote is lost).
pub fn write(dir: &Path, files: &[File]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for file in files {
        let path = dir.join(file.name);
        if let Ok(existing) = std::fs::read_to_string(&path) {
            if existing != file.text && !existing.lines().take(3).any(|l| l.contains(MARKER)) {
                bail!(
                    "{} exists and was not written by flowgate export; move it away or choose another --out",
                    path.display()
                );
            }
        }
        crate::fsutil::write_atomic(&path, file.text.as_bytes(), 0o644)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// Files every export of the real profile needs beside its main file.
fn real_profile_files(source: &Source) -> Vec<File> {
    if source.profile != Profile::Real {
        return Vec::new();
    }
    let hazelcast = settings::hazelcast_yml(&source.deployment).replacen(
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
            assert!(all.contains("--flow.db.password=${POSTGRES_PASSWORD:?"), "{all}");
        }
    }
}
