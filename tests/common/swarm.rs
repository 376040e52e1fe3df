//! A two-node Docker Swarm on this machine for the tests: a second Docker
//! engine in a network namespace the test makes (joined over a veth pair),
//! the main engine as the manager. Everything is taken down when dropped,
//! even after a failure, and the main engine is never left in swarm mode.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn ok(command: &mut Command, what: &str) -> String {
    let out = command.output().unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The second engine's address on the veth pair.
pub const WORKER_IP: &str = "10.231.7.2";

/// A CA, the second engine's server certificate (for its address) and a
/// client certificate, as `docker --tlsverify` wants them: the client's in
/// `tls/client/{ca,cert,key}.pem` (a DOCKER_CERT_PATH).
fn make_tls(dir: &std::path::Path) {
    let tls = dir.join("tls");
    std::fs::create_dir_all(tls.join("client")).unwrap();
    let at = |name: &str| tls.join(name).to_str().unwrap().to_string();
    let openssl = |args: &[&str]| ok(Command::new("openssl").args(args), &format!("openssl {}", args[0]));
    openssl(&["genrsa", "-out", &at("ca-key.pem"), "2048"]);
    openssl(&[
        "req",
        "-x509",
        "-new",
        "-key",
        &at("ca-key.pem"),
        "-days",
        "2",
        "-subj",
        "/CN=flowgate test CA",
        "-out",
        &at("ca.pem"),
    ]);
    for (name, extensions) in [
        (
            "server",
            format!("subjectAltName=IP:{WORKER_IP}\nextendedKeyUsage=serverAuth\n"),
        ),
        ("client", "extendedKeyUsage=clientAuth\n".to_string()),
    ] {
        let key = at(&format!("{name}-key.pem"));
        openssl(&["genrsa", "-out", &key, "2048"]);
        openssl(&[
            "req",
            "-new",
            "-key",
            &key,
            "-subj",
            &format!("/CN={name}"),
            "-out",
            &at(&format!("{name}.csr")),
        ]);
        std::fs::write(tls.join(format!("{name}.ext")), extensions).unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            &at(&format!("{name}.csr")),
            "-CA",
            &at("ca.pem"),
            "-CAkey",
            &at("ca-key.pem"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &at(&format!("{name}.ext")),
            "-out",
            &at(&format!("{name}-cert.pem")),
        ]);
    }
    for (from, to) in [
        ("ca.pem", "ca.pem"),
        ("client-cert.pem", "cert.pem"),
        ("client-key.pem", "key.pem"),
    ] {
        std::fs::copy(tls.join(from), tls.join("client").join(to)).unwrap();
    }
}

pub struct Swarm {
    pub name: String,
    dir: PathBuf,
    /// `-H unix://...` of the second engine.
    pub worker: String,
    engine: Option<Child>,
    joined: bool,
    managing: bool,
    /// Docker makes `docker_gwbridge` when the engine joins a swarm and
    /// leaves it after; removed at the end unless it was there before.
    had_gwbridge: bool,
}

impl Swarm {
    /// Starts the second engine and makes the swarm; `image` is copied to it.
    pub fn start(image: &str) -> Swarm {
        let uid = ok(Command::new("id").arg("-u"), "id -u");
        assert_eq!(
            uid.trim(),
            "0",
            "the Swarm tests need root (a network namespace and a second Docker engine); run them as root, or FLOWGATE_SKIP_DOCKER=1"
        );
        let state = ok(
            Command::new("docker").args(["info", "-f", "{{.Swarm.LocalNodeState}}"]),
            "docker info",
        );
        assert_eq!(
            state.trim(),
            "inactive",
            "the main Docker engine is in swarm mode already; these tests make their own swarm (docker swarm leave --force first)"
        );
        let had_gwbridge = Command::new("docker")
            .args(["network", "inspect", "docker_gwbridge"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        let name = format!("fgsw{}", std::process::id());
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&dir).unwrap();
        let mut swarm = Swarm {
            worker: format!("unix://{}", dir.join("docker.sock").display()),
            name: name.clone(),
            dir: dir.clone(),
            engine: None,
            joined: false,
            managing: false,
            had_gwbridge,
        };
        let (host, peer) = (format!("{name}a"), format!("{name}b"));
        let ip = |args: &[&str]| ok(Command::new("ip").args(args), &format!("ip {}", args.join(" ")));
        let in_ns = |args: &[&str]| {
            let mut all = vec!["netns", "exec", name.as_str(), "ip"];
            all.extend_from_slice(args);
            ok(Command::new("ip").args(&all), &format!("ip {}", all.join(" ")))
        };
        ip(&["netns", "add", &name]);
        ip(&["link", "add", &host, "type", "veth", "peer", "name", &peer]);
        ip(&["link", "set", &peer, "netns", &name]);
        ip(&["addr", "add", "10.231.7.1/24", "dev", &host]);
        ip(&["link", "set", &host, "up"]);
        in_ns(&["addr", "add", "10.231.7.2/24", "dev", &peer]);
        in_ns(&["link", "set", &peer, "up"]);
        in_ns(&["link", "set", "lo", "up"]);
        make_tls(&dir);
        // Its own settings: the main engine's daemon.json names its data root and driver.
        std::fs::write(dir.join("daemon.json"), r#"{"storage-driver": "vfs", "mtu": 1400}"#).unwrap();
        let log = std::fs::File::create(dir.join("dockerd.log")).unwrap();
        let engine = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{name}"))
            .arg("dockerd")
            .args(["--config-file", dir.join("daemon.json").to_str().unwrap()])
            .args(["--data-root", dir.join("data").to_str().unwrap()])
            .args(["--exec-root", dir.join("exec").to_str().unwrap()])
            .args(["-H", &swarm.worker])
            // Also over TCP with mutual TLS, for DOCKER_HOST=tcp://... clients.
            .args(["-H", &format!("tcp://{WORKER_IP}:2376"), "--tlsverify"])
            .args(["--tlscacert", dir.join("tls/ca.pem").to_str().unwrap()])
            .args(["--tlscert", dir.join("tls/server-cert.pem").to_str().unwrap()])
            .args(["--tlskey", dir.join("tls/server-key.pem").to_str().unwrap()])
            .args(["--pidfile", dir.join("docker.pid").to_str().unwrap()])
            .arg("--iptables=false")
            .args(["--containerd-namespace", &name])
            .args(["--containerd-plugins-namespace", &format!("{name}-plugins")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("dockerd starts");
        swarm.engine = Some(engine);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !swarm.worker_docker(&["info"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "the second Docker engine did not start; see {}",
                dir.join("dockerd.log").display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        ok(
            Command::new("docker").args(["swarm", "init", "--advertise-addr", "10.231.7.1"]),
            "docker swarm init",
        );
        swarm.managing = true;
        let token = ok(
            Command::new("docker").args(["swarm", "join-token", "-q", "worker"]),
            "join-token",
        );
        let joined = swarm.worker_docker(&[
            "swarm",
            "join",
            "--advertise-addr",
            "10.231.7.2",
            "--token",
            token.trim(),
            "10.231.7.1:2377",
        ]);
        assert!(
            joined.status.success(),
            "the second engine did not join: {}",
            String::from_utf8_lossy(&joined.stderr)
        );
        swarm.joined = true;
        // No registry: the image goes to the second engine by hand.
        let mut saved = Command::new("docker")
            .args(["save", image])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let load = Command::new("docker")
            .args(["-H", &swarm.worker, "load", "-q"])
            .stdin(saved.stdout.take().unwrap())
            .output()
            .unwrap();
        let _ = saved.wait();
        assert!(
            load.status.success(),
            "docker load: {}",
            String::from_utf8_lossy(&load.stderr)
        );
        swarm
    }

    /// `docker -H <second engine> ARGS`.
    pub fn worker_docker(&self, args: &[&str]) -> std::process::Output {
        Command::new("docker")
            .args(["-H", &self.worker])
            .args(args)
            .output()
            .unwrap()
    }

    /// Makes the second engine a manager too, and gives the environment a
    /// client reaches it with over TCP and mutual TLS.
    pub fn promote_worker(&self) -> Vec<(String, String)> {
        let id = ok(
            Command::new("docker").args(["-H", &self.worker, "info", "-f", "{{.Swarm.NodeID}}"]),
            "docker info",
        );
        ok(
            Command::new("docker").args(["node", "promote", id.trim()]),
            "docker node promote",
        );
        // The promotion takes effect a moment later on the engine itself.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let control = ok(
                Command::new("docker").args(["-H", &self.worker, "info", "-f", "{{.Swarm.ControlAvailable}}"]),
                "docker info",
            );
            if control.trim() == "true" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the second engine did not become a manager within 30 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        vec![
            ("DOCKER_HOST".into(), format!("tcp://{WORKER_IP}:2376")),
            ("DOCKER_TLS_VERIFY".into(), "1".into()),
            (
                "DOCKER_CERT_PATH".into(),
                self.dir.join("tls/client").to_str().unwrap().to_string(),
            ),
        ]
    }

    /// Cuts the second engine off (its end of the link goes down): for the
    /// swarm, the node is lost; its tasks keep running, unreachable.
    pub fn cut_worker(&self) {
        ok(
            Command::new("ip").args(["link", "set", &format!("{}a", self.name), "down"]),
            "ip link set down",
        );
    }

    /// The swarm's node ids.
    pub fn nodes(&self) -> Vec<String> {
        ok(Command::new("docker").args(["node", "ls", "-q"]), "docker node ls")
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// An ssh server in the second engine's namespace whose sessions talk to
/// that engine; killed when dropped.
pub struct Sshd {
    child: Child,
    netns: String,
    /// What a flowgate reaches the second engine with over ssh.
    pub env: Vec<(String, String)>,
}

impl Swarm {
    /// Starts sshd on the second engine's address (port 2222) with a host
    /// key and a client key of its own, and gives the environment that
    /// reaches that engine as `DOCKER_HOST=ssh://root@...`; ssh checks the
    /// host key against the one made here.
    pub fn ssh_to_worker(&self) -> Sshd {
        let sshd = Path::new("/usr/sbin/sshd");
        assert!(
            sshd.exists(),
            "the ssh:// test needs /usr/sbin/sshd: apt-get install openssh-server (tests/run does)"
        );
        let dir = self.dir.join("ssh");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap(); // sshd's privilege separation directory
        let at = |name: &str| dir.join(name).to_str().unwrap().to_string();
        for key in ["host_key", "client_key"] {
            ok(
                Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f", &at(key)]),
                "ssh-keygen",
            );
        }
        std::fs::copy(at("client_key.pub"), at("authorized_keys")).unwrap();
        std::fs::write(
            at("sshd_config"),
            format!(
                "ListenAddress {WORKER_IP}:2222\nHostKey {}\nAuthorizedKeysFile {}\nPermitRootLogin prohibit-password\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPidFile none\n\
                 SetEnv DOCKER_HOST={}\n",
                at("host_key"),
                at("authorized_keys"),
                self.worker
            ),
        )
        .unwrap();
        let host_key = std::fs::read_to_string(at("host_key.pub")).unwrap();
        std::fs::write(at("known_hosts"), format!("[{WORKER_IP}]:2222 {host_key}")).unwrap();
        std::fs::write(
            at("ssh_config"),
            format!(
                "Host *\n  IdentityFile {}\n  IdentitiesOnly yes\n  UserKnownHostsFile {}\n  StrictHostKeyChecking yes\n  BatchMode yes\n",
                at("client_key"),
                at("known_hosts")
            ),
        )
        .unwrap();
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.name,
                "/usr/sbin/sshd",
                "-D",
                "-f",
                &at("sshd_config"),
                "-E",
            ])
            .arg(at("sshd.log"))
            .spawn()
            .expect("cannot start sshd");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect((WORKER_IP, 2222)).is_err() {
            assert!(
                Instant::now() < deadline,
                "sshd did not listen within 10 s: {}",
                std::fs::read_to_string(at("sshd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Sshd {
            child,
            netns: self.name.clone(),
            env: vec![
                ("DOCKER_HOST".into(), format!("ssh://root@{WORKER_IP}:2222")),
                ("FLOWGATE_SSH_COMMAND".into(), format!("ssh -F {}", at("ssh_config"))),
            ],
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Its sessions outlive it (a client's shared connection): every
        // sshd left in the namespace goes too.
        let pids = Command::new("ip").args(["netns", "pids", &self.netns]).output();
        for pid in pids.iter().flat_map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .into_owned()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        }) {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == "sshd" {
                let _ = Command::new("kill").arg(&pid).status();
            }
        }
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        let quiet = |command: &mut Command| {
            let _ = command.stdout(Stdio::null()).stderr(Stdio::null()).status();
        };
        if self.joined {
            quiet(Command::new("docker").args(["-H", &self.worker, "swarm", "leave", "--force"]));
        }
        if self.managing {
            quiet(Command::new("docker").args(["swarm", "leave", "--force"]));
        }
        if !self.had_gwbridge {
            quiet(Command::new("docker").args(["network", "rm", "docker_gwbridge"]));
        }
        if let Some(mut engine) = self.engine.take() {
            let _ = Command::new("kill").arg(engine.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while engine.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = engine.kill();
            let _ = engine.wait();
        }
        quiet(Command::new("ip").args(["netns", "del", &self.name]));
        quiet(Command::new("ip").args(["link", "del", &format!("{}a", self.name)]));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
