//! `flowgate doctor`: every rule of the Flow load-balancing guide, checked
//! from outside against any balancer.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use flowgate::doctor::{self, Options};

use super::{parse_duration, print, print_json};

#[derive(Debug, Args)]
#[command(after_help = "Checks, in order: certificate, https-redirect, websocket-upgrade, \
    forwarded-headers, instances, host-routing, idle-timeout, heartbeat-session, mc-cors. The exit code is 0 only \
    when none fails (a check that cannot run here is skipped and said so). Without --url it checks \
    the project's deployment on this machine (its URLs, local CA and ports).\n\n\
    Examples:\n  \
    flowgate doctor\n  \
    flowgate doctor --url https://flow.example.com --mc-url https://mc.example.com\n  \
    flowgate doctor --url https://flow.localhost:8443 --ca ca.pem --resolve flow.localhost:8443:127.0.0.1 \
    --http-port 8080 --idle-wait 20s")]
pub struct DoctorArgs {
    /// The Flow URL users open, e.g. https://flow.example.com [default: the project's
    /// deployment on this machine].
    #[arg(long)]
    pub url: Option<String>,
    /// Management Center's URL; its CORS preflight from the Flow origin is checked.
    #[arg(long)]
    pub mc_url: Option<String>,
    /// Trust the CA certificates in this PEM file instead of the system's roots.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Connect to ADDR for HOST:PORT instead of resolving it (like curl), e.g.
    /// flow.example.com:443:127.0.0.1. Also used for HOST's HTTP port when only the HTTPS
    /// port is given.
    #[arg(long)]
    pub resolve: Vec<String>,
    /// The plain-HTTP port that must redirect to HTTPS [default: 80, or the local deployment's].
    #[arg(long)]
    pub http_port: Option<u16>,
    /// A path where Flow accepts WebSockets.
    #[arg(long, default_value = "/")]
    pub ws_path: String,
    /// The Flow UI's heartbeat interval; the idle timeout must exceed it.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub heartbeat: Duration,
    /// How long a silent WebSocket session is watched to find the balancer's idle
    /// timeout (nginx's default is 60 s). Longer finds longer timeouts.
    #[arg(long, value_parser = parse_duration, default_value = "75s")]
    pub idle_wait: Duration,
    /// Requests sent to see how many instances answer.
    #[arg(long, default_value_t = 12)]
    pub requests: u32,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(project: &str, args: DoctorArgs) -> anyhow::Result<()> {
    let json = args.json;
    let options = Options {
        url: args.url,
        mc_url: args.mc_url,
        ca: args.ca,
        resolve: args.resolve,
        http_port: args.http_port,
        ws_path: args.ws_path,
        heartbeat: args.heartbeat,
        idle_wait: args.idle_wait,
        requests: args.requests,
    };
    let report = doctor::check(project, options, &|line| eprintln!("{line}")).await?;
    if json {
        print_json(&report)?;
    } else {
        print(&doctor::render(&report))?;
    }
    let failed = report.failed();
    if !failed.is_empty() {
        anyhow::bail!(
            "{} of {} checks failed ({}); each names the rule it breaks and the fix",
            failed.len(),
            report.checks.len(),
            failed.join(", ")
        );
    }
    Ok(())
}
