//! The dashboard: `flowgate` or `flowgate tui`.
//!
//! Feeds (Docker events and stats, the proxy's samples and event stream)
//! and input go down one channel into [`app::App::update`]; drawing is a
//! pure function of the app ([`view::render`]). Keys become actions for a
//! deployer task, so the screen never waits on Docker or the network. The
//! screen is redrawn only on change: within 100 ms of a key (at most 10
//! frames a second), at most four times a second for feed updates.

pub mod app;
pub mod view;
pub mod wizard;

#[cfg(test)]
mod picture;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bollard::Docker;
use crossterm::event::{DisableMouseCapture, EnableMouseCapture, Event};
use ratatui::DefaultTerminal;
use tokio::sync::mpsc;

use crate::clock::now_ms;
use crate::config::deployment::{self, DeploymentFile};
use crate::deploy::DeployError;
use crate::deploy::command::{self, Overrides, Running, Target};
use crate::monitor::feeds;
use crate::monitor::{Feed, probe};
use app::{Action, App, KeyMap, Msg, Quit};
use wizard::{Outcome, Wizard};

/// Work for the deployer task, done one at a time in order.
enum Job {
    Up(Box<Target>),
    Scale(u32),
    Restart(String),
    Drain(String),
    Rebalance,
    Down,
}

/// Why the dashboard could not run.
#[derive(Debug, thiserror::Error)]
pub enum TuiError {
    #[error(
        "the dashboard needs a terminal; in scripts use `flowgate status --json` (and `flowgate up`, `flowgate scale`)"
    )]
    NoTerminal,
    #[error("the terminal: {0}")]
    Terminal(#[from] std::io::Error),
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Keys(#[from] app::KeyError),
    #[error(transparent)]
    Deploy(#[from] DeployError),
}

/// Runs the dashboard on `project` until the user quits. With no
/// deployment yet it creates one from `args` and `file`, or asks for the
/// settings first (and writes them to `config_path`).
pub async fn run(
    project: &str,
    args: Overrides,
    file: Option<DeploymentFile>,
    config_path: PathBuf,
) -> Result<(), TuiError> {
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        return Err(TuiError::NoTerminal);
    }
    let keys = KeyMap::new(file.as_ref())?;
    let docker = crate::deploy::connect().await?;
    let running = Running::read(&docker, project).await?;
    let color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());

    let mut terminal = setup_terminal();
    let result = session(
        &mut terminal,
        &docker,
        project,
        args,
        file,
        config_path,
        &running,
        keys,
        color,
    )
    .await;
    restore_terminal();
    match result? {
        Quit::Leave => eprintln!(
            "the deployment keeps running; `flowgate status` shows it, `flowgate` comes back to this dashboard"
        ),
        Quit::Down => eprintln!("project {project} is down (volumes kept; `flowgate down --volumes` removes them)"),
    }
    Ok(())
}

fn setup_terminal() -> DefaultTerminal {
    // ratatui's hook restores the screen on panic; mouse capture goes too.
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let _ = crossterm::execute!(std::io::stdout(), DisableMouseCapture);
        previous(info);
    }));
    let terminal = ratatui::init();
    let _ = crossterm::execute!(std::io::stdout(), EnableMouseCapture);
    terminal
}

fn restore_terminal() {
    let _ = crossterm::execute!(std::io::stdout(), DisableMouseCapture);
    ratatui::restore();
}

/// Reads terminal input on its own thread (crossterm's reads block).
fn spawn_input(tx: mpsc::Sender<Msg>, stop: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match crossterm::event::poll(Duration::from_millis(200)) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(_) => return,
            }
            let msg = match crossterm::event::read() {
                Ok(Event::Key(key)) => Msg::Key(key),
                Ok(Event::Mouse(mouse)) => Msg::Mouse(mouse),
                Ok(Event::Resize(..)) => Msg::Resize,
                Ok(_) => continue,
                Err(_) => return,
            };
            if tx.blocking_send(msg).is_err() {
                return;
            }
        }
    });
}

#[allow(clippy::too_many_arguments)]
async fn session(
    terminal: &mut DefaultTerminal,
    docker: &Docker,
    project: &str,
    args: Overrides,
    file: Option<DeploymentFile>,
    config_path: PathBuf,
    running: &Running,
    keys: KeyMap,
    color: bool,
) -> Result<Quit, TuiError> {
    let (tx, mut rx) = mpsc::channel::<Msg>(4096);
    let stop = Arc::new(AtomicBool::new(false));
    spawn_input(tx.clone(), stop.clone());
    let _stop_input = StopOnDrop(stop);

    // No deployment yet: create it from the flags and flowgate.toml, or
    // ask for its settings first.
    let mut first_job = None;
    if running.settings.is_none() {
        let file = if args.demo || file.is_some() {
            file
        } else {
            let license = crate::deploy::settings::find_license(std::path::Path::new(".")).is_some();
            let manager = crate::deploy::swarm::is_manager(docker).await;
            let Some(chosen) = run_wizard(terminal, &mut rx, project, license, manager, color).await? else {
                return Ok(Quit::Leave);
            };
            let text = deployment::render(&chosen);
            crate::fsutil::write_atomic(&config_path, text.as_bytes(), 0o644).map_err(|source| TuiError::Write {
                path: config_path.clone(),
                source,
            })?;
            Some(chosen)
        };
        let target = command::resolve(project, &args, file.as_ref(), running)?;
        first_job = Some(Job::Up(Box::new(target)));
    }

    let (feed_tx, mut feed_rx) = mpsc::channel::<Feed>(4096);
    let feeds = feeds::start(docker.clone(), project, feed_tx);
    let mut deployment_rx = feeds.deployment.clone();
    let (jobs, job_rx) = mpsc::unbounded_channel::<Job>();
    tokio::spawn(deployer(docker.clone(), project.to_string(), job_rx, tx.clone()));
    if let Some(job) = first_job {
        let _ = jobs.send(job);
    }

    let mut app = App::new(project, keys, color);
    app.deployment = running.settings.clone();
    let mut logs_task: Option<tokio::task::JoinHandle<()>> = None;
    let mut last_draw = Instant::now() - Duration::from_secs(1);
    let mut dirty = true;
    // After input the screen follows within a frame (at most 10 a second);
    // live data alone redraws at most 4 times a second.
    let mut urgent_pending = false;
    loop {
        let (msg, urgent) = tokio::select! {
            Some(msg) = rx.recv() => {
                let urgent = matches!(msg, Msg::Key(_) | Msg::Mouse(_) | Msg::Resize);
                (Some(msg), urgent)
            }
            Some(feed) = feed_rx.recv() => (Some(Msg::Feed(feed)), false),
            Ok(()) = deployment_rx.changed() => {
                (Some(Msg::Deployment(deployment_rx.borrow_and_update().clone())), false)
            }
            _ = tokio::time::sleep_until(next_draw(last_draw, dirty, urgent_pending)) => (None, false),
        };
        if let Some(msg) = msg {
            dirty = true;
            for action in app.update(msg) {
                match action {
                    Action::Scale(n) => {
                        let _ = jobs.send(Job::Scale(n));
                    }
                    Action::Restart(name) => {
                        let _ = jobs.send(Job::Restart(name));
                    }
                    Action::Drain(name) => {
                        let _ = jobs.send(Job::Drain(name));
                    }
                    Action::Down => {
                        let _ = jobs.send(Job::Down);
                    }
                    Action::Rebalance => {
                        let _ = jobs.send(Job::Rebalance);
                    }
                    Action::WatchSessions(name) => feeds.watch_sessions(name),
                    Action::Logs(name) => {
                        if let Some(task) = logs_task.take() {
                            task.abort();
                        }
                        if let Some(name) = name {
                            logs_task = Some(tokio::spawn(follow_logs(
                                docker.clone(),
                                project.to_string(),
                                name,
                                tx.clone(),
                            )));
                        }
                    }
                    Action::RunDoctor => {
                        let tx = tx.clone();
                        let project = project.to_string();
                        tokio::spawn(async move {
                            let options = crate::doctor::Options::local(DOCTOR_IDLE_WAIT);
                            let result = crate::doctor::check(&project, options, &|_| {})
                                .await
                                .map_err(|e| e.to_string());
                            let _ = tx.send(Msg::Doctor(result)).await;
                        });
                    }
                    Action::CheckMc => {
                        let tx = tx.clone();
                        let dep = app.deployment.clone();
                        let ca = crate::deploy::settings::project_dir(project).join("ca.pem");
                        tokio::spawn(async move {
                            let result = match dep {
                                None => Err("the deployment's settings are not known yet".to_string()),
                                Some(dep) => probe::mc_preflight(
                                    &dep.mc_origin(),
                                    &dep.flow_origin(),
                                    std::net::Ipv4Addr::LOCALHOST.into(),
                                    ca.exists().then_some(ca.as_path()),
                                )
                                .await
                                .map_err(|e| format!("{} did not answer the preflight: {e}", dep.mc_origin())),
                            };
                            let _ = tx.send(Msg::Mc(result)).await;
                        });
                    }
                }
            }
        }
        if let Some(quit) = app.quit {
            if let Some(task) = logs_task.take() {
                task.abort();
            }
            return Ok(quit);
        }
        urgent_pending |= urgent;
        let gap = if urgent_pending { MIN_FRAME } else { FEED_FRAME };
        if dirty && last_draw.elapsed() >= gap {
            app.now_ms = now_ms();
            let size = terminal.size()?;
            let area = ratatui::layout::Rect::new(0, 0, size.width, size.height);
            let visible = app.visible_names().len();
            app.rows_area = Some(view::rows_area(area, visible));
            app.rows_offset = view::rows_offset(area, &app, visible);
            terminal.draw(|frame| view::render(frame, &app))?;
            last_draw = Instant::now();
            dirty = false;
            urgent_pending = false;
        }
    }
}

/// How long the dashboard's doctor watches a silent session for the idle
/// timeout (the command's default is 75 s; the dashboard answers sooner).
pub const DOCTOR_IDLE_WAIT: Duration = Duration::from_secs(12);

/// The shortest time between two frames (10 frames a second).
const MIN_FRAME: Duration = Duration::from_millis(100);
/// The shortest time between frames that only show new live data.
const FEED_FRAME: Duration = Duration::from_millis(250);

/// When the loop must wake up to draw what is pending (or in a second, to
/// notice nothing).
fn next_draw(last_draw: Instant, dirty: bool, urgent: bool) -> tokio::time::Instant {
    let wait = match (dirty, urgent) {
        (false, _) => Duration::from_secs(1),
        (true, true) => MIN_FRAME,
        (true, false) => FEED_FRAME,
    };
    tokio::time::Instant::from_std(last_draw + wait)
}

struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

async fn run_wizard(
    terminal: &mut DefaultTerminal,
    rx: &mut mpsc::Receiver<Msg>,
    project: &str,
    license: bool,
    swarm_manager: bool,
    color: bool,
) -> Result<Option<DeploymentFile>, TuiError> {
    let mut wizard = Wizard::new(project, license, swarm_manager, color);
    loop {
        terminal.draw(|frame| wizard.render(frame))?;
        let Some(msg) = rx.recv().await else {
            return Ok(None);
        };
        if let Msg::Key(key) = msg {
            match wizard.handle_key(key) {
                Outcome::Continue => {}
                Outcome::Cancel => return Ok(None),
                Outcome::Done(file) => return Ok(Some(*file)),
            }
        }
    }
}

/// Runs jobs one after the other, reporting progress as event lines.
async fn deployer(docker: Docker, project: String, mut jobs: mpsc::UnboundedReceiver<Job>, tx: mpsc::Sender<Msg>) {
    while let Some(job) = jobs.recv().await {
        let what = match &job {
            Job::Up(target) => format!("creating the deployment ({} instances)", target.deployment.instances),
            Job::Scale(n) => format!("scaling to {n}"),
            Job::Restart(name) => format!("restarting {name}"),
            Job::Drain(name) => format!("draining {name}"),
            Job::Rebalance => "spreading the sessions evenly".to_string(),
            Job::Down => "taking the deployment down".to_string(),
        };
        let _ = tx.send(Msg::Busy(Some(what.clone()))).await;
        let note_tx = tx.clone();
        let mut progress = move |line: &str| {
            let _ = note_tx.try_send(Msg::Feed(Feed::Note {
                at_ms: now_ms(),
                text: line.to_string(),
                error: false,
            }));
        };
        let started = Instant::now();
        let down = matches!(job, Job::Down);
        let result = match job {
            Job::Up(target) => command::apply(&docker, &target, &mut progress).await.map(|_| ()),
            Job::Scale(n) => command::scale_with(&docker, &project, n, &mut progress)
                .await
                .map(|_| ()),
            Job::Restart(name) => command::restart(&docker, &project, &name).await,
            Job::Drain(name) => command::drain(&docker, &project, &name).await,
            Job::Rebalance => command::rebalance(&docker, &project, &mut progress).await.map(|_| ()),
            Job::Down => command::down(&docker, &project, false, &mut progress).await,
        };
        let (text, error) = match &result {
            Ok(()) => (
                format!("{what}: done in {:.1}s", started.elapsed().as_secs_f64()),
                false,
            ),
            Err(e) => (format!("{what} failed: {e}"), true),
        };
        let _ = tx
            .send(Msg::Feed(Feed::Note {
                at_ms: now_ms(),
                text,
                error,
            }))
            .await;
        let _ = tx.send(Msg::Busy(None)).await;
        if down && result.is_ok() {
            let _ = tx.send(Msg::Down).await;
        }
    }
}

/// Follows a container's logs into the logs view.
async fn follow_logs(docker: Docker, project: String, name: String, tx: mpsc::Sender<Msg>) {
    use futures_util::StreamExt;
    let mut stream = match command::logs(&docker, &project, &name, true, 500).await {
        Ok(stream) => Box::pin(stream),
        Err(e) => {
            let _ = tx.send(Msg::LogLine(e.to_string())).await;
            return;
        }
    };
    let mut partial = String::new();
    while let Some(chunk) = stream.next().await {
        let Ok((_, bytes)) = chunk else {
            let _ = tx.send(Msg::LogLine(format!("(logs of {name} ended)"))).await;
            return;
        };
        partial.push_str(&String::from_utf8_lossy(&bytes));
        while let Some(end) = partial.find('\n') {
            let line: String = partial.drain(..=end).collect();
            if tx.send(Msg::LogLine(strip_ansi(line.trim_end()))).await.is_err() {
                return;
            }
        }
    }
}

/// Log lines without terminal colour codes (they would garble the screen).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else if c == '\t' {
            out.push_str("    ");
        } else if !c.is_control() {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn colour_codes_are_removed_from_log_lines() {
        assert_eq!(
            super::strip_ansi("\u{1b}[32mINFO\u{1b}[0m ready\tnow"),
            "INFO ready    now"
        );
    }
}
