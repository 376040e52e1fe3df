//! `flowgate sim flow`, `sim mc` and `loadgen`: the stand-ins for Flow and
//! Management Center, and the simulated Flow UI users.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use flowgate::sim::loadgen::{self, Trust};

use super::{parse_duration, print, print_json};

#[derive(Debug, Subcommand)]
pub enum SimCommand {
    /// Simulate a Flow server: health, whoami, WebSocket echo with heartbeat counting.
    Flow(SimFlowArgs),
    /// Simulate Management Center: health and the CORS of hazelcast.mc.flow.addresses.
    Mc(SimMcArgs),
}

#[derive(Debug, Args)]
#[command(after_help = "Example:\n  flowgate sim flow --listen 127.0.0.1:9021 --name flow-1")]
pub struct SimFlowArgs {
    /// Address to listen on (Flow's port is 9021).
    #[arg(long, default_value = "0.0.0.0:9021")]
    pub listen: SocketAddr,
    /// Instance name, reported by /api/sim/whoami.
    #[arg(long, env = "FLOWGATE_SIM_NAME", default_value = "flow-1")]
    pub name: String,
}

#[derive(Debug, Args)]
#[command(after_help = "Example:\n  flowgate sim mc --listen 127.0.0.1:8080 --flow-addresses https://flow.example.com")]
pub struct SimMcArgs {
    /// Address to listen on (MC's port is 8080).
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Allowed Flow origins, comma-separated; default: -Dhazelcast.mc.flow.addresses from JAVA_OPTS.
    #[arg(long)]
    pub flow_addresses: Option<String>,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  flowgate loadgen --url http://127.0.0.1:8080 --ws-clients 1000 --rps 200 --duration 30s --json"
)]
pub struct LoadgenArgs {
    /// Base URL of the deployment (http://, https://, ws:// or wss://).
    #[arg(long)]
    pub url: String,
    /// WebSocket sessions to hold open.
    #[arg(long, default_value_t = 10)]
    pub ws_clients: usize,
    /// Heartbeat interval of each session.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub heartbeat: Duration,
    /// Send heartbeats as this text message instead of WebSocket pings.
    #[arg(long)]
    pub heartbeat_text: Option<String>,
    /// HTTP requests per second (GET of --http-path), 0 for none.
    #[arg(long, default_value_t = 10.0)]
    pub rps: f64,
    /// How long to run.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub duration: Duration,
    /// Path of the WebSocket endpoint.
    #[arg(long, default_value = "/api/sim/ws")]
    pub ws_path: String,
    /// Path requested by the HTTP load.
    #[arg(long, default_value = "/api/sim/whoami")]
    pub http_path: String,
    /// Host header to send (default: the URL's host).
    #[arg(long)]
    pub host: Option<String>,
    /// Send to ADDR for HOST:PORT, like curl's --resolve.
    #[arg(long)]
    pub resolve: Vec<String>,
    /// Trust the CA certificates in this PEM file for https:// and wss://
    /// (a flowgate local CA: <state-dir>/ca.pem). Default: the system's roots.
    #[arg(long, conflicts_with = "insecure")]
    pub ca: Option<PathBuf>,
    /// Accept any server certificate (test servers only).
    #[arg(long)]
    pub insecure: bool,
    /// Reconnect sessions the server closes (as the Flow UI does).
    #[arg(long)]
    pub reconnect: bool,
    /// Spread sessions over this many source addresses 127.0.0.x (loopback targets only).
    #[arg(long, default_value_t = 16)]
    pub source_addresses: u8,
    /// How many sessions may be opening at once.
    #[arg(long, default_value_t = 200)]
    pub connect_concurrency: usize,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(command: SimCommand) -> anyhow::Result<()> {
    match command {
        SimCommand::Flow(args) => flowgate::sim::flow::run(args.listen, args.name).await?,
        SimCommand::Mc(args) => flowgate::sim::mc::run(args.listen, args.flow_addresses).await?,
    }
    Ok(())
}

pub async fn loadgen(args: LoadgenArgs) -> anyhow::Result<()> {
    let trust = match (&args.ca, args.insecure) {
        (Some(path), _) => Trust::File(path.clone()),
        (None, true) => Trust::Insecure,
        (None, false) => Trust::System,
    };
    let options = loadgen::Options {
        url: args.url,
        ws_clients: args.ws_clients,
        heartbeat: args.heartbeat,
        heartbeat_text: args.heartbeat_text,
        rps: args.rps,
        duration: args.duration,
        ws_path: args.ws_path,
        http_path: args.http_path,
        host: args.host,
        resolve: args.resolve,
        trust,
        reconnect: args.reconnect,
        source_addresses: args.source_addresses,
        connect_concurrency: args.connect_concurrency,
        progress: !args.json,
    };
    let summary = loadgen::run(&options).await?;
    if args.json {
        return print_json(&summary);
    }
    print(&summary.text())?;
    Ok(())
}
