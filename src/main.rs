//! The `flowgate` binary: parse arguments, set up logging, dispatch.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use flowgate::cli::{CertCommand, Cli, Command, SimCommand};
use flowgate::config::deployment::{self, DEFAULT_FILE};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&cli.log))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .init();
    // On one core (a container limited to it, or taskset), a single-threaded
    // runtime does the same work without the work-stealing scheduler's cost.
    let one_core = std::thread::available_parallelism().is_ok_and(|n| n.get() == 1);
    let runtime = if one_core {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Runtime::new()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("flowgate: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        // Commands that run a deployment read flowgate.toml; `proxy` reads its own file.
        let deployment_command = !matches!(
            cli.command,
            Some(Command::Proxy(_) | Command::Sim(_) | Command::Loadgen(_) | Command::Cert(_))
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
        deployment::check_project(&project).map_err(anyhow::Error::msg)?;
        let command = match cli.command {
            Some(command) => command,
            None => Command::Tui(Default::default()),
        };
        if let Command::Tui(args) = command {
            return flowgate::tui::run(&project, args, file, config_path).await;
        }
        let file = file.as_ref();
        match command {
            Command::Tui(_) => unreachable!("handled above"),
            Command::Up(args) => flowgate::deploy::command::up(&project, args, file).await,
            Command::Scale { instances } => flowgate::deploy::command::scale(&project, instances, file).await,
            Command::Down(args) => flowgate::deploy::command::down(&project, args).await,
            Command::Status(args) => flowgate::deploy::command::status(&project, args).await,
            Command::Logs(args) => flowgate::deploy::command::logs(&project, args).await,
            Command::Proxy(args) => flowgate::proxy::run::run(args.to_config(cli.config.as_deref())?).await,
            Command::Sim(SimCommand::Flow(args)) => flowgate::sim::flow::run(args).await,
            Command::Sim(SimCommand::Mc(args)) => flowgate::sim::mc::run(args).await,
            Command::Loadgen(args) => flowgate::sim::loadgen::run(args).await,
            Command::Cert(CertCommand::Status(args)) => flowgate::tls::command::status(args).await,
            Command::Cert(CertCommand::Renew(args)) => flowgate::tls::command::renew(args).await,
            Command::Doctor(args) => flowgate::doctor::run(&project, args).await,
            Command::Export(args) => flowgate::export::run(&project, args, file).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One sentence: the error and its causes, joined, skipping causes
            // a message already quotes.
            let mut message = e.to_string();
            for cause in e.chain().skip(1) {
                let cause = cause.to_string();
                if !message.contains(&cause) {
                    message.push_str(": ");
                    message.push_str(&cause);
                }
            }
            eprintln!("flowgate: {message}");
            ExitCode::FAILURE
        }
    }
}
