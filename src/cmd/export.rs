//! `flowgate export`: the deployment written for docker-compose, Traefik or nginx.

use std::path::PathBuf;

use clap::Args;
use flowgate::config::deployment::{DeploymentFile, Engine, Profile};
use flowgate::deploy::command::{Running, resolve};
use flowgate::deploy::settings::Deployment;
use flowgate::export::{self, Kind, Source};

use super::deploy::DeploymentArgs;
use super::print;

#[derive(Debug, Args)]
#[command(
    after_help = "The deployment comes from flowgate.toml (see --config) and these flags, as for \
    `flowgate up`. Secrets are never written: the files read MC_LICENSE and POSTGRES_PASSWORD from \
    the environment or a .env file beside them.\n\n\
    Examples:\n  \
    flowgate export compose --out deploy/\n  \
    flowgate export nginx --demo --domain flow.example.com --out nginx/\n  \
    flowgate export nginx --flow-address 10.0.0.11:9021 --flow-address 10.0.0.12:9021 --mc-address 10.0.0.20:8080\n  \
    flowgate export stack --demo --image registry.example.com/flowgate:0.1.0 --out stack/"
)]
pub struct ExportArgs {
    /// What to write.
    pub kind: Kind,
    /// Directory for the files (created); without it the main file goes to stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub deployment: DeploymentArgs,
    /// flowgate's image for the proxy and simulators [default: flowgate:<version>, built
    /// from this binary when Docker is reachable].
    #[arg(long)]
    pub image: Option<String>,
    /// nginx only: Flow instances that run elsewhere (HOST:PORT, repeat), instead of the
    /// containers of the compose file.
    #[arg(long)]
    pub flow_address: Vec<String>,
    /// nginx only: Management Center's address (HOST:PORT) when it runs elsewhere.
    #[arg(long)]
    pub mc_address: Option<String>,
}

pub async fn run(project: &str, args: ExportArgs, file: Option<&DeploymentFile>) -> anyhow::Result<()> {
    // A running deployment of the project fills in what flags and the file leave open, as for `up`.
    let docker = flowgate::deploy::connect().await;
    let running = match &docker {
        Ok(docker) => Running::read(docker, project).await.unwrap_or_default(),
        Err(_) => Running::default(),
    };
    let target = resolve(project, &args.deployment.clone().overrides(true), file, &running)?;
    if target.deployment.engine == Engine::Swarm && args.kind != Kind::Stack {
        eprintln!(
            "note: {project} runs on Docker Swarm; these files are for one Docker engine (docker-compose), \
             with the same settings; `flowgate export stack` writes the stack file for `docker stack deploy`"
        );
    }
    let default_image = format!("{}:{}", flowgate::deploy::image::REPOSITORY, env!("CARGO_PKG_VERSION"));
    let source = Source {
        // The files are for one engine, whatever the deployment runs on.
        deployment: Deployment {
            engine: Engine::Single,
            ..target.deployment
        },
        profile: target.profile,
        tag: target.tag,
        image: args.image.clone().unwrap_or_else(|| default_image.clone()),
    };
    let files = export::render(args.kind, &source, &args.flow_address, args.mc_address.as_deref())?;
    let uses_image = files.iter().any(|f| f.text.contains(&source.image));
    if uses_image && args.image.is_none() {
        let tagged = match &docker {
            Ok(docker) => export::tag_local_image(docker, &default_image, |line| eprintln!("{line}"))
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match tagged {
            Ok(built) => eprintln!("image {default_image} is this binary ({built})"),
            Err(e) => eprintln!(
                "note: the files use the image {default_image}, which is not built here ({e}); run `flowgate export` \
                 where Docker runs, or push flowgate's image to your registry and pass --image"
            ),
        }
    }
    let Some(dir) = &args.out else {
        let main = &files[0];
        print(&main.text)?;
        if files.len() > 1 {
            let others: Vec<&str> = files[1..].iter().map(|f| f.name).collect();
            eprintln!(
                "note: {} also needs {}; write them all with --out DIR",
                main.name,
                others.join(", ")
            );
        }
        return Ok(());
    };
    export::write(dir, &files)?;
    let written: String = files
        .iter()
        .map(|f| format!("{}\n", dir.join(f.name).display()))
        .collect();
    print(&written)?;
    let dir_shown = dir.display();
    match args.kind {
        Kind::Nginx => eprintln!(
            "next: nginx -t -c {} on the balancer, or cd {dir_shown} && docker-compose up -d",
            std::path::absolute(dir)
                .unwrap_or_else(|_| dir.clone())
                .join("nginx.conf")
                .display()
        ),
        Kind::Stack => eprintln!(
            "next: cd {dir_shown} && openssl rand -hex 32 > admin-token && docker stack deploy -c docker-stack.yml {project}"
        ),
        _ => eprintln!("next: cd {dir_shown} && docker-compose up -d"),
    }
    if source.profile == Profile::Real && args.kind == Kind::Stack {
        eprintln!(
            "note: docker stack reads no .env: export MC_LICENSE and POSTGRES_PASSWORD in the shell, write the password \
             to {} as well, and label PostgreSQL's node (docker node update --label-add io.flowgate.postgres=true NODE)",
            dir.join("db-password").display()
        );
    } else if source.profile == Profile::Real {
        eprintln!(
            "note: put MC_LICENSE and POSTGRES_PASSWORD in {} (see .env.example); the files never hold them",
            dir.join(".env").display()
        );
    }
    Ok(())
}
