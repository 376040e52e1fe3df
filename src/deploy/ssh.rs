//! `DOCKER_HOST=ssh://[user@]host[:port]`, reached the way the docker CLI
//! reaches it: every connection to the engine is `ssh … docker system
//! dial-stdio` on the far machine, spliced to a unix socket in a private
//! (0700) directory that flowgate's Docker client connects to. ssh checks
//! the host key and authenticates as it always does (agent, keys,
//! `~/.ssh/config`); `FLOWGATE_SSH_COMMAND` names another program or adds
//! options (`ssh -F FILE`), as `GIT_SSH_COMMAND` does for git.

use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::process::Command;

/// The variable that replaces `ssh` (program and options, split on spaces).
pub const COMMAND_VAR: &str = "FLOWGATE_SSH_COMMAND";
/// How much of ssh's complaint is kept to explain a failure.
const STDERR_KEPT: usize = 2048;

/// Where an `ssh://` DOCKER_HOST points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
}

impl Destination {
    /// Reads `ssh://[user@]host[:port]`. Anything else is refused: a path,
    /// a query, and above all a user or host that ssh would read as an
    /// option (`ssh://-oProxyCommand=...`).
    pub fn parse(endpoint: &str) -> Result<Destination, String> {
        let rest = endpoint
            .strip_prefix("ssh://")
            .ok_or_else(|| "an ssh endpoint starts with ssh://".to_string())?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#']) {
            return Err("an ssh:// DOCKER_HOST names a machine, not a path: ssh://[user@]host[:port]".into());
        }
        let (user, authority) = match rest.split_once('@') {
            Some((user, authority)) => (Some(user), authority),
            None => (None, rest),
        };
        if let Some(user) = user {
            let fine = !user.is_empty()
                && !user.starts_with('-')
                && user.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
            if !fine {
                return Err(format!("{user:?} is not a user name ssh:// accepts"));
            }
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| "an IPv6 address in ssh:// ends with ]".to_string())?;
            host.parse::<std::net::Ipv6Addr>()
                .map_err(|_| format!("{host:?} is not an IPv6 address"))?;
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| format!("{after:?} after the address"))?,
                ),
            };
            (host, port)
        } else {
            match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        let v6 = host.parse::<std::net::Ipv6Addr>().is_ok();
        let fine_host = v6
            || !host.is_empty()
                && !host.starts_with('-')
                && host.chars().all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c));
        if !fine_host {
            return Err(format!("{host:?} is not a host name ssh:// accepts"));
        }
        let port = match port {
            None => None,
            Some(p) => Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| format!("{p:?} is not a port"))?,
            ),
        };
        Ok(Destination {
            user: user.map(str::to_string),
            host: host.to_string(),
            port,
        })
    }

    /// The ssh command line that opens one connection to the far engine.
    /// Connections share one ssh session through a control socket in
    /// `private` (flowgate's 0700 directory), so each after the first costs
    /// no new handshake; options given in FLOWGATE_SSH_COMMAND come first
    /// and win.
    pub fn command_line(&self, ssh: Option<&str>, private: &Path) -> Vec<String> {
        let mut line: Vec<String> = ssh
            .map(|s| s.split_whitespace().map(str::to_string).collect())
            .filter(|l: &Vec<String>| !l.is_empty())
            .unwrap_or_else(|| vec!["ssh".into()]);
        line.extend(["-o", "ConnectTimeout=30", "-o", "ControlMaster=auto"].map(String::from));
        line.extend(["-o".into(), format!("ControlPath={}", private.join("ssh-%C").display())]);
        line.extend(["-o", "ControlPersist=10", "-T"].map(String::from));
        if let Some(user) = &self.user {
            line.extend(["-l".into(), user.clone()]);
        }
        if let Some(port) = self.port {
            line.extend(["-p".into(), port.to_string()]);
        }
        // `--` ends ssh's options: the host is never read as one.
        line.extend(["--".into(), self.host.clone()]);
        line.extend(["docker", "system", "dial-stdio"].map(String::from));
        line
    }
}

/// A local socket whose every connection is a fresh ssh to the engine.
pub struct Tunnel {
    pub socket: PathBuf,
    dir: PathBuf,
    /// What ssh last said on stderr, to explain a failed connection.
    said: Arc<Mutex<String>>,
}

impl Tunnel {
    /// Opens the socket; ssh runs only when the Docker client connects.
    pub fn open(destination: Destination) -> Result<Tunnel, String> {
        let base = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|d| d.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        sweep_stale(&base);
        let dir = base.join(format!("flowgate-ssh-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
        let socket = dir.join("docker.sock");
        let listener =
            UnixListener::bind(&socket).map_err(|e| format!("cannot listen on {}: {e}", socket.display()))?;
        let said = Arc::new(Mutex::new(String::new()));
        let line = destination.command_line(std::env::var(COMMAND_VAR).ok().as_deref(), &dir);
        let heard = said.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(splice(stream, line.clone(), heard.clone()));
            }
        });
        Ok(Tunnel { socket, dir, said })
    }

    /// What ssh said last, if anything (why a connection failed).
    pub fn said(&self) -> String {
        self.said.lock().unwrap_or_else(|e| e.into_inner()).trim().to_string()
    }

    /// Removes the socket's directory (the process is done with Docker).
    pub fn close(&self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One Docker connection carried by one ssh process.
async fn splice(stream: UnixStream, line: Vec<String>, said: Arc<Mutex<String>>) {
    let child = Command::new(&line[0])
        .args(&line[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            *said.lock().unwrap_or_else(|e| e.into_inner()) = format!("cannot run {}: {e}", line[0]);
            return;
        }
    };
    let (Some(mut stdin), Some(mut stdout), Some(mut stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return;
    };
    let complaint = tokio::spawn(async move {
        let mut kept = Vec::new();
        let mut chunk = [0u8; 512];
        while let Ok(n) = stderr.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            if kept.len() < STDERR_KEPT {
                kept.extend_from_slice(&chunk[..n.min(STDERR_KEPT - kept.len())]);
            }
        }
        String::from_utf8_lossy(&kept).into_owned()
    });
    let (mut from_client, mut to_client) = stream.into_split();
    let upstream = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut from_client, &mut stdin).await;
    });
    let answered = tokio::io::copy(&mut stdout, &mut to_client).await.unwrap_or(0);
    // ssh's output ended: learn why before the Docker client sees the end,
    // so a failed connection is explained by ssh's own words.
    let exited = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
    let failed = !matches!(exited, Ok(Ok(status)) if status.success());
    if failed || answered == 0 {
        let text = match tokio::time::timeout(Duration::from_secs(1), complaint).await {
            Ok(Ok(text)) if !text.trim().is_empty() => text,
            _ => match exited {
                Ok(Ok(status)) => format!("{} ended without an answer ({status})", line[0]),
                _ => format!("{} gave no answer", line[0]),
            },
        };
        *said.lock().unwrap_or_else(|e| e.into_inner()) = text;
    }
    drop(to_client);
    upstream.abort();
}

/// Removes socket directories left by flowgate processes of this user
/// that have ended.
fn sweep_stale(base: &Path) {
    let Ok(me) = std::fs::metadata("/proc/self").map(|m| m.uid()) else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("flowgate-ssh-")) else {
            continue;
        };
        let ours = entry.metadata().is_ok_and(|m| m.uid() == me && m.is_dir());
        let ended = pid
            .parse::<u32>()
            .is_ok_and(|p| !Path::new(&format!("/proc/{p}")).exists());
        if ours && ended {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ssh_host_is_user_at_host_port_and_nothing_ssh_could_read_as_an_option() {
        let d = Destination::parse("ssh://deploy@manager-1.example.com:2222").unwrap();
        assert_eq!(d.user.as_deref(), Some("deploy"));
        assert_eq!(d.host, "manager-1.example.com");
        assert_eq!(d.port, Some(2222));
        let d = Destination::parse("ssh://10.0.0.5").unwrap();
        assert_eq!((d.user, d.port), (None, None));
        let d = Destination::parse("ssh://root@[fd00::1]:22/").unwrap();
        assert_eq!(d.host, "fd00::1");
        for hostile in [
            "ssh://-oProxyCommand=touch${IFS}/tmp/x",
            "ssh://-oProxyCommand=x@host",
            "ssh://user@-oProxyCommand=x",
            "ssh://user@host:22/var/run/docker.sock",
            "ssh://user@host?x=1",
            "ssh://user@host:0",
            "ssh://user@host:99999",
            "ssh://us er@host",
            "ssh://user@ho st",
            "ssh://user@host;reboot",
            "ssh://@host",
            "ssh://",
            "ssh://[not-v6]:22",
            "tcp://host:2376",
        ] {
            assert!(Destination::parse(hostile).is_err(), "{hostile} accepted");
        }
    }

    #[test]
    fn the_command_ends_ssh_options_before_the_host_and_runs_dial_stdio() {
        let d = Destination::parse("ssh://deploy@manager:2222").unwrap();
        let private = Path::new("/run/user/1000/flowgate-ssh-7");
        let shared = "-o ConnectTimeout=30 -o ControlMaster=auto -o ControlPath=/run/user/1000/flowgate-ssh-7/ssh-%C \
                      -o ControlPersist=10 -T -l deploy -p 2222 -- manager docker system dial-stdio";
        assert_eq!(d.command_line(None, private).join(" "), format!("ssh {shared}"));
        assert_eq!(
            d.command_line(Some("ssh -F /etc/flowgate/ssh_config"), private)
                .join(" "),
            format!("ssh -F /etc/flowgate/ssh_config {shared}")
        );
        assert_eq!(
            d.command_line(Some("  "), private).first().map(String::as_str),
            Some("ssh")
        );
    }
}
