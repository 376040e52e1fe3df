//! A tmux server of the test's own, running one command in a session
//! `tui`: the dashboard end to end, as a user's terminal shows it.

use std::process::Command;
use std::time::{Duration, Instant};

/// A tmux server and session of the test's own, killed on drop.
pub struct Tmux {
    socket: String,
}

impl Tmux {
    pub fn start(command: &str, width: u16, height: u16) -> Tmux {
        let tmux = Tmux {
            socket: format!("fgtest-{}", std::process::id()),
        };
        let status = tmux
            .command()
            .args([
                "new-session",
                "-d",
                "-s",
                "tui",
                "-x",
                &width.to_string(),
                "-y",
                &height.to_string(),
            ])
            .arg(command)
            .status()
            .expect("tmux is needed (tests/run installs it)");
        assert!(status.success(), "tmux new-session failed");
        tmux
    }

    fn command(&self) -> Command {
        let mut command = Command::new("tmux");
        command.args(["-L", &self.socket]);
        command
    }

    pub fn screen(&self) -> String {
        let out = self
            .command()
            .args(["capture-pane", "-p", "-t", "tui"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn keys(&self, keys: &str) {
        let status = self.command().args(["send-keys", "-t", "tui", keys]).status().unwrap();
        assert!(status.success());
    }

    /// Waits until the screen satisfies `check`; panics with the screen after `limit`.
    pub fn wait_for(&self, what: &str, limit: Duration, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let screen = self.screen();
            if check(&screen) {
                return screen;
            }
            if Instant::now() > deadline {
                panic!("waited {limit:?} for {what}; the screen:\n{screen}");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command().arg("kill-server").status();
    }
}
