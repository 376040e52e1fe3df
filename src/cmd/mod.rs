//! The shell: the command line's clap types, and one small function per
//! command that turns its arguments into the library's own options, calls
//! the library and prints. Nothing in the library imports this module (it
//! lives in the binary, so the compiler keeps it that way); errors become
//! one sentence on stderr in `main`.

mod cert;
mod completions;
mod deploy;
mod doctor;
mod export;
mod proxy;
mod sim;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use flowgate::config::deployment::{self, DEFAULT_FILE};

#[derive(Debug, Parser)]
#[command(
    name = "flowgate",
    version,
    about = "Run Hazelcast Flow behind a WebSocket-aware load balancer",
    long_about = "flowgate runs Hazelcast Flow on Docker behind its own WebSocket-aware load balancer: \
                  N Flow instances, Management Center with the right CORS setting, TLS with a certificate \
                  for your domain, forwarded headers and WebSocket heartbeats watched per instance.\n\n\
                  Try it without a registry or licence: `flowgate tui --demo --http-port 8080 --https-port 8443` \
                  (the dashboard), or headless `flowgate up --demo ...`, then `flowgate status`, `flowgate scale 5` \
                  and `flowgate down`. The load balancer alone is \
                  `flowgate proxy`; `flowgate loadgen` simulates Flow UI users.",
    after_help = "Example:\n  flowgate tui --demo --http-port 8080 --https-port 8443"
)]
pub struct Cli {
    /// The deployment to act on: names and labels every Docker object
    /// [default: `project` in flowgate.toml, else flowgate].
    #[arg(long, global = true, env = "FLOWGATE_PROJECT")]
    pub project: Option<String>,

    /// Settings file: the deployment's flowgate.toml [default: ./flowgate.toml when it
    /// exists; flags win over it]; for `flowgate proxy`, the proxy's own TOML file.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,

    /// Log filter for stderr, e.g. `info`, `debug`, `flowgate=trace` (also RUST_LOG).
    #[arg(long, global = true, env = "FLOWGATE_LOG", default_value = "info")]
    pub log: String,

    /// Without a command: the dashboard (`flowgate tui`).
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The dashboard: live instances, sessions, heartbeats; one key scales.
    /// With no deployment yet it asks for the settings and creates it.
    Tui(deploy::TuiArgs),
    /// Create or reconcile the deployment on Docker, headless, with progress output.
    Up(deploy::UpArgs),
    /// Set the number of Flow instances (removed ones are drained first).
    Scale(deploy::ScaleArgs),
    /// Remove the deployment (volumes are kept unless --volumes).
    Down(deploy::DownArgs),
    /// Spread the WebSocket sessions evenly over the Flow instances again
    /// (after a scale-up): busy instances close some with 1012, clients reconnect.
    Rebalance(deploy::RebalanceArgs),
    /// One snapshot of the deployment: instances, health, sessions, rates.
    Status(deploy::StatusArgs),
    /// A container's logs: `flow-2` (or `2`), `proxy`, `mc`.
    Logs(deploy::LogsArgs),
    /// Run the proxy core: the WebSocket-aware load balancer.
    Proxy(Box<proxy::ProxyArgs>),
    /// Run a simulator of Flow or Management Center.
    #[command(
        subcommand,
        after_help = "Example:\n  flowgate sim flow --listen 127.0.0.1:9021 --name flow-1"
    )]
    Sim(sim::SimCommand),
    /// Simulate Flow UI users: WebSocket sessions with heartbeats plus HTTP load.
    Loadgen(sim::LoadgenArgs),
    /// Certificates of a running proxy: their state, or renew now.
    #[command(subcommand, after_help = "Example:\n  flowgate cert status --json")]
    Cert(cert::CertCommand),
    /// Check any Flow load balancer (flowgate, Traefik, nginx, ...) against every rule of
    /// the Flow load-balancing guide; each failure names the rule and the fix.
    Doctor(doctor::DoctorArgs),
    /// Write this deployment for other tools: docker-compose, Traefik or nginx.
    Export(export::ExportArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(completions::CompletionsArgs),
    /// Print the manual page (roff), e.g. `flowgate man | man -l -`.
    Man(completions::ManArgs),
    /// Inside flowgate's image only: hand a state volume made by an older
    /// flowgate (owned by root) to the unprivileged user.
    #[command(hide = true)]
    StateOwner(deploy::StateOwnerArgs),
    /// Inside flowgate's image only: copy stdin to a TCP address and its
    /// answer to stdout (how flowgate reaches a Swarm proxy's admin API
    /// through `docker exec`, with no port published).
    #[command(hide = true)]
    Pipe(deploy::PipeArgs),
    /// Inside flowgate's image only: exit 0 when an HTTP GET of the URL
    /// answers 2xx (the Swarm health check of the simulators).
    #[command(hide = true)]
    Probe(deploy::ProbeArgs),
}

/// Runs the command line's command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    // Commands that act on a deployment read flowgate.toml; `proxy` reads its own file.
    let deployment_command = !matches!(
        cli.command,
        Some(
            Command::Proxy(_)
                | Command::Sim(_)
                | Command::Loadgen(_)
                | Command::Cert(_)
                | Command::Completions(_)
                | Command::Man(_)
                | Command::StateOwner(_)
        )
    );
    let config_path = cli.config.clone().unwrap_or_else(|| DEFAULT_FILE.into());
    let file = if deployment_command {
        deployment::load(&config_path, cli.config.is_some())?
    } else {
        None
    };
    let project = cli
        .project
        .clone()
        .or_else(|| file.as_ref().and_then(|f| f.project.clone()))
        .unwrap_or_else(|| "flowgate".into());
    deployment::check_project(&project)?;
    let command = cli.command.unwrap_or_else(|| Command::Tui(Default::default()));
    match command {
        Command::Tui(args) => deploy::tui(&project, args, file, config_path).await,
        Command::Up(args) => deploy::up(&project, args, file.as_ref()).await,
        Command::Scale(args) => deploy::scale(&project, args, file.as_ref()).await,
        Command::Down(args) => deploy::down(&project, args).await,
        Command::Rebalance(args) => deploy::rebalance(&project, args).await,
        Command::Status(args) => deploy::status(&project, args).await,
        Command::Logs(args) => deploy::logs(&project, args).await,
        Command::Proxy(args) => proxy::run(*args, cli.config.as_deref()).await,
        Command::Sim(command) => sim::run(command).await,
        Command::Loadgen(args) => sim::loadgen(args).await,
        Command::Cert(command) => cert::run(command).await,
        Command::Doctor(args) => doctor::run(&project, args).await,
        Command::Export(args) => export::run(&project, args, file.as_ref()).await,
        Command::Completions(args) => completions::completions(args),
        Command::Man(args) => completions::man(args),
        Command::StateOwner(args) => deploy::state_owner(args),
        Command::Pipe(args) => deploy::pipe(args).await,
        Command::Probe(args) => deploy::probe(args).await,
    }
}

/// Prints command output to stdout. A reader that went away (`| head`)
/// ends the output quietly instead of panicking as `println!` does.
pub fn print(text: &str) -> std::io::Result<()> {
    print_bytes(text.as_bytes())
}

/// [`print`] for bytes that may not be text (a container's log).
pub fn print_bytes(bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// Prints `value` as pretty JSON, one document per line.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value).context("cannot write JSON")?;
    print(&format!("{text}\n"))?;
    Ok(())
}

/// Progress lines go to stderr, so stdout stays the command's answer.
fn progress(line: &str) {
    eprintln!("{line}");
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    flowgate::config::duration::parse(text)
}
