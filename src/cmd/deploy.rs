//! `flowgate tui`, `up`, `scale`, `down`, `status` and `logs`.

use std::path::PathBuf;

use clap::Args;
use flowgate::config::deployment::DeploymentFile;
use flowgate::deploy::command::{self, Applied, LogSource, Overrides, Running};
use flowgate::monitor::status;
use futures_util::StreamExt;

use super::{print, print_bytes, print_json, progress};

/// The deployment's settings on the command line (they win over flowgate.toml).
#[derive(Debug, Args, Default, Clone)]
pub struct DeploymentArgs {
    /// Number of Flow instances [default: flowgate.toml's, else what runs now, else 3].
    #[arg(long)]
    pub instances: Option<u32>,
    /// Run flowgate's simulators instead of the Hazelcast images (no registry or licence
    /// needed). Without it: hazelcast/hazelcast-flow, hazelcast/management-center-flow and
    /// postgres:15, with MC_LICENSE from the environment or ./.env.
    #[arg(long)]
    pub demo: bool,
    /// Flow's public host name [default: flow.localhost]; MC is served on mc.<domain>.
    #[arg(long)]
    pub domain: Option<String>,
    /// Public port for HTTP [default: 80].
    #[arg(long)]
    pub http_port: Option<u16>,
    /// Public port for HTTPS [default: 443].
    #[arg(long)]
    pub https_port: Option<u16>,
    /// Tag of the Hazelcast Flow and MC images (real profile) [default: latest].
    #[arg(long)]
    pub tag: Option<String>,
    /// The address the proxy's ports are published on [default: 127.0.0.1 with
    /// --demo (this machine only), 0.0.0.0 for the real profile].
    #[arg(long)]
    pub bind: Option<std::net::IpAddr>,
    /// Create the deployment as services on the Docker Swarm this engine (or DOCKER_HOST)
    /// manages: Flow spread over the nodes, the proxy on the manager (or on nodes labelled
    /// io.flowgate.edge=true) [default: flowgate.toml's `engine`, else what runs now].
    #[arg(long)]
    pub swarm: bool,
}

impl DeploymentArgs {
    pub fn overrides(self, no_pull: bool) -> Overrides {
        Overrides {
            instances: self.instances,
            demo: self.demo,
            domain: self.domain,
            http_port: self.http_port,
            https_port: self.https_port,
            tag: self.tag,
            bind: self.bind,
            no_pull,
            swarm: self.swarm,
        }
    }
}

#[derive(Debug, Args, Default)]
#[command(
    after_help = "Example:\n  flowgate up --demo --instances 3 --http-port 8080 --https-port 8443\n  \
    then https://flow.localhost:8443/ (trust the CA printed at the end)"
)]
pub struct UpArgs {
    #[command(flatten)]
    pub deployment: DeploymentArgs,
    /// Use only images already on this machine (loaded with `docker load`); never pull.
    #[arg(long)]
    pub no_pull: bool,
}

#[derive(Debug, Args, Default)]
#[command(
    after_help = "Keys: + / - scale, digits then Enter set the count, r restart, d drain, l logs, \
    c certificate, m MC/CORS, D doctor, b rebalance, / filter, Tab panes, ? help, q quit (the deployment keeps running), \
    Q take it down.\n\nExample:\n  flowgate tui --demo --http-port 8080 --https-port 8443"
)]
pub struct TuiArgs {
    #[command(flatten)]
    pub up: UpArgs,
}

#[derive(Debug, Args)]
#[command(after_help = "Example:\n  flowgate scale 5")]
pub struct ScaleArgs {
    /// How many Flow instances to run.
    pub instances: u32,
}

#[derive(Debug, Args)]
#[command(after_help = "Example:\n  flowgate down --volumes")]
pub struct DownArgs {
    /// Also remove the volumes (certificates, database) and the project's token.
    #[arg(long)]
    pub volumes: bool,
}

#[derive(Debug, Args)]
#[command(after_help = "Example:\n  flowgate logs flow-2 --follow --tail 50")]
pub struct LogsArgs {
    /// The instance: flow-N (or N), proxy, mc, or a container name.
    pub instance: String,
    /// Keep printing new lines.
    #[arg(long, short)]
    pub follow: bool,
    /// Lines from the end to start with.
    #[arg(long, default_value_t = 200)]
    pub tail: u32,
}

#[derive(Debug, Args)]
#[command(after_help = "Example:\n  flowgate status --json | jq '.instances[].health'")]
pub struct StatusArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(
    after_help = "At most 2 % of all sessions a second and one per instance at a time, until every \
    instance is within 10 % of even. `rebalance = \"auto\"` in flowgate.toml does it whenever an instance \
    becomes healthy.\n\nExample:\n  flowgate scale 4 && flowgate rebalance"
)]
pub struct RebalanceArgs {
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn rebalance(project: &str, args: RebalanceArgs) -> anyhow::Result<()> {
    let docker = flowgate::deploy::connect().await?;
    let report = command::rebalance(&docker, project, &mut |line| progress(line)).await?;
    if args.json {
        return print_json(&report);
    }
    let spread: Vec<String> = report.sessions.iter().map(|(b, n)| format!("{b} {n}")).collect();
    print(&format!(
        "{} sessions moved; {}: {}\n",
        report.moved,
        if report.balanced {
            "even"
        } else {
            "stopped before it was even"
        },
        spread.join(", ")
    ))?;
    Ok(())
}

#[derive(Debug, Args)]
pub struct StateOwnerArgs {
    /// The directory to hand over.
    pub path: PathBuf,
    /// The new owner (user and group).
    pub uid: u32,
}

pub fn state_owner(args: StateOwnerArgs) -> anyhow::Result<()> {
    let changed = flowgate::fsutil::chown_tree(&args.path, args.uid)?;
    eprintln!("{} now owned by {} ({changed} entries)", args.path.display(), args.uid);
    Ok(())
}

#[derive(Debug, Args)]
pub struct PipeArgs {
    /// host:port to connect to.
    pub address: std::net::SocketAddr,
}

pub async fn pipe(args: PipeArgs) -> anyhow::Result<()> {
    flowgate::net::pipe_stdio(args.address).await?;
    // A read of stdin may still be waiting on a blocking thread: do not wait for it.
    std::process::exit(0)
}

#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// An http:// URL on this container.
    pub url: String,
}

pub async fn probe(args: ProbeArgs) -> anyhow::Result<()> {
    let status = flowgate::net::probe(&args.url).await?;
    anyhow::ensure!((200..300).contains(&status), "{} answered {status}", args.url);
    Ok(())
}

pub async fn tui(
    project: &str,
    args: TuiArgs,
    file: Option<DeploymentFile>,
    config_path: PathBuf,
) -> anyhow::Result<()> {
    let overrides = args.up.deployment.overrides(args.up.no_pull);
    flowgate::tui::run(project, overrides, file, config_path).await?;
    Ok(())
}

pub async fn up(project: &str, args: UpArgs, file: Option<&DeploymentFile>) -> anyhow::Result<()> {
    let docker = flowgate::deploy::connect().await?;
    let running = Running::read(&docker, project).await?;
    let overrides = args.deployment.overrides(args.no_pull);
    let target = command::resolve(project, &overrides, file, &running)?;
    let applied = command::apply(&docker, &target, &mut |line| progress(line)).await?;
    print(&applied_text(&applied))?;
    Ok(())
}

fn applied_text(applied: &Applied) -> String {
    let mut out = format!("Flow: {}/\nManagement Center: {}/\n", applied.flow_url, applied.mc_url);
    match &applied.ca {
        Some(ca) => out.push_str(&format!(
            "{} instances; clients trust {}\n",
            applied.instances,
            ca.display()
        )),
        None => out.push_str(&format!("{} instances\n", applied.instances)),
    }
    out
}

pub async fn scale(project: &str, args: ScaleArgs, file: Option<&DeploymentFile>) -> anyhow::Result<()> {
    let docker = flowgate::deploy::connect().await?;
    command::scale_with(&docker, project, args.instances, &mut |line| progress(line)).await?;
    if let Some(wanted) = file.and_then(|f| f.instances).filter(|n| *n != args.instances) {
        eprintln!(
            "note: flowgate.toml says instances = {wanted}; `flowgate up` will go back to {wanted} unless you edit it"
        );
    }
    Ok(())
}

pub async fn down(project: &str, args: DownArgs) -> anyhow::Result<()> {
    let docker = flowgate::deploy::connect().await?;
    command::down(&docker, project, args.volumes, &mut |line| progress(line)).await?;
    Ok(())
}

pub async fn status(project: &str, args: StatusArgs) -> anyhow::Result<()> {
    let docker = flowgate::deploy::connect().await?;
    let snap = status::snapshot(&docker, project).await?;
    if args.json {
        return print_json(&snap);
    }
    print(&status::status_text(&snap))?;
    Ok(())
}

pub async fn logs(project: &str, args: LogsArgs) -> anyhow::Result<()> {
    use std::io::Write;
    let docker = flowgate::deploy::connect().await?;
    let mut stream = command::logs(&docker, project, &args.instance, args.follow, args.tail).await?;
    while let Some(chunk) = stream.next().await {
        match chunk? {
            (LogSource::Stderr, bytes) => std::io::stderr().write_all(&bytes)?,
            (LogSource::Stdout, bytes) => print_bytes(&bytes)?,
        }
    }
    Ok(())
}
