//! What a deployment is made of: its settings (project, domains, instances,
//! ports) and, from them, each container's full specification and the proxy's
//! configuration file. Pure: the executor turns specs into containers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::plan::{Names, Role, Wanted};
use crate::config::deployment::{
    CertMode, DeploymentError, Engine, MAX_INSTANCES, Resources, Setting, TlsFile, check_domain, check_project,
    check_tls,
};
use crate::template;

/// Where things live inside flowgate's image.
pub const PROXY_CONFIG_IN_CONTAINER: &str = "/etc/flowgate/proxy.toml";
pub const STATE_IN_CONTAINER: &str = "/var/lib/flowgate";
/// The admin API's port inside the proxy container.
pub const ADMIN_PORT: u16 = 9901;
pub const FLOW_PORT: u16 = 9021;
pub const MC_PORT: u16 = 8080;
/// Label holding the deployment's settings (JSON) on the proxy container, so
/// `status` and `scale` recover them without the original command line.
pub const LABEL_SETTINGS: &str = "io.flowgate.settings";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    pub project: String,
    /// The public name of Flow (the proxy's host rule and certificate).
    pub domain: String,
    /// The public name of Management Center.
    pub mc_domain: String,
    pub instances: u32,
    /// Host ports the proxy publishes.
    pub http_port: u16,
    pub https_port: u16,
    /// Where the certificate comes from.
    #[serde(default)]
    pub tls: TlsFile,
    /// The address the proxy's ports are published on. None only in the
    /// label of a deployment made before it existed: `resolve` then picks
    /// the profile's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind: Option<std::net::IpAddr>,
    /// Limits of flowgate's own containers.
    #[serde(default)]
    pub resources: Resources,
    /// Whether a new healthy instance gets sessions moved onto it at once.
    #[serde(default)]
    pub rebalance: crate::config::proxy::Rebalance,
    /// One engine's containers, or a Swarm's services.
    #[serde(default)]
    pub engine: crate::config::deployment::Engine,
}

impl Deployment {
    pub fn names(&self) -> Names {
        Names {
            project: self.project.clone(),
        }
    }

    /// The Flow UI's public origin, as browsers send it in `Origin`.
    pub fn flow_origin(&self) -> String {
        origin(&self.domain, self.https_port)
    }

    pub fn mc_origin(&self) -> String {
        origin(&self.mc_domain, self.https_port)
    }

    /// The settings a proxy container carries in its labels (`up` puts them
    /// there, so `status`, `scale` and the dashboard need no command line).
    pub fn from_labels(labels: &std::collections::HashMap<String, String>) -> Option<Deployment> {
        serde_json::from_str(labels.get(LABEL_SETTINGS)?).ok()
    }

    /// Every rule a deployment must keep, whoever built it: the setup
    /// form, flags and flowgate.toml (through `resolve`) and scaling.
    pub fn validate(&self) -> Result<(), DeploymentError> {
        check_project(&self.project)?;
        check_domain(&self.domain, Setting::Domain)?;
        check_domain(&self.mc_domain, Setting::McDomain)?;
        if self.mc_domain.eq_ignore_ascii_case(&self.domain) {
            return Err(DeploymentError::SameDomains(self.domain.clone()));
        }
        if self.instances > MAX_INSTANCES {
            return Err(DeploymentError::Instances(self.instances));
        }
        if self.http_port == 0 {
            return Err(DeploymentError::NoPort(Setting::HttpPort));
        }
        if self.https_port == 0 {
            return Err(DeploymentError::NoPort(Setting::HttpsPort));
        }
        if self.http_port == self.https_port {
            return Err(DeploymentError::SamePorts(self.http_port));
        }
        if let Some(bind) = self.bind.filter(|b| !b.is_unspecified()) {
            if self.engine == crate::config::deployment::Engine::Swarm {
                return Err(DeploymentError::SwarmBind(bind));
            }
        }
        check_tls(&self.tls, &self.domain)
    }
}

/// The HTTPS origin browsers send for `host` on `port` (no port when 443).
pub fn origin(host: &str, port: u16) -> String {
    if port == 443 {
        format!("https://{host}")
    } else {
        format!("https://{host}:{port}")
    }
}

/// A port the container publishes on the host; host port 0 lets Docker pick.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Published {
    pub container: u16,
    pub host_ip: String,
    pub host_port: u16,
}

/// How a container is confined: whom it runs as, what it may do, what
/// it may use. Every container gets `no-new-privileges`; flowgate's own
/// (proxy, simulators) get all of it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Confinement {
    /// `uid:gid`; None keeps the image's user (Flow, MC, PostgreSQL).
    pub user: Option<String>,
    /// Every Linux capability dropped.
    pub drop_capabilities: bool,
    pub read_only_root: bool,
    /// Writable scratch space on a read-only root: path -> mount options.
    pub tmpfs: BTreeMap<String, String>,
    pub memory_bytes: Option<u64>,
    pub pids: Option<u32>,
    /// Namespaced kernel settings of the container's network.
    pub sysctls: BTreeMap<String, String>,
}

impl Confinement {
    /// flowgate's own containers: an unprivileged user, no capabilities,
    /// nothing written outside its volumes, bounded memory and processes.
    pub fn flowgate(memory_bytes: u64, pids: u32) -> Confinement {
        Confinement {
            user: Some(format!("{0}:{0}", super::image::USER)),
            drop_capabilities: true,
            read_only_root: true,
            tmpfs: BTreeMap::from([("/tmp".to_string(), "rw,noexec,nosuid,size=16m".to_string())]),
            memory_bytes: Some(memory_bytes),
            pids: Some(pids),
            sysctls: BTreeMap::new(),
        }
    }
}

/// A secret put into one of the container's volumes after it is created
/// and before it starts, readable only by the container's user (mode
/// 0400): it is in no environment, label, command line or host path.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct SecretFile {
    /// The directory inside the container: a volume's mount point.
    pub dir: String,
    pub name: String,
    /// The owner: the user the container runs as.
    pub uid: u32,
    /// Only its digest is part of the spec (and of the config label).
    #[serde(skip)]
    pub content: String,
    pub digest: String,
    /// The environment variable the image also reads it from, for tools
    /// that cannot put a file into a volume (a compose file).
    pub env: Option<&'static str>,
}

impl SecretFile {
    pub fn new(dir: &str, name: &str, uid: u32, content: &str) -> SecretFile {
        SecretFile {
            dir: dir.into(),
            name: name.into(),
            uid,
            content: content.into(),
            digest: short_digest(content.as_bytes()),
            env: None,
        }
    }

    /// Where the container reads it.
    pub fn path(&self) -> String {
        format!("{}/{}", self.dir, self.name)
    }
}

impl std::fmt::Debug for SecretFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SecretFile({}, uid {}, digest {})",
            self.path(),
            self.uid,
            self.digest
        )
    }
}

/// Where the proxy finds its admin token: the default file of its state
/// dir, put into its state volume.
pub fn admin_token_secret(token: &str) -> SecretFile {
    SecretFile::new(STATE_IN_CONTAINER, "admin-token", super::image::USER, token)
}

/// Where PostgreSQL's secrets volume is mounted.
pub const SECRETS_IN_POSTGRES: &str = "/run/secrets/flowgate";
/// A health check command in Docker's exec form: `CMD` first.
pub fn health_test(command: &[String]) -> Vec<String> {
    std::iter::once("CMD".to_string())
        .chain(command.iter().cloned())
        .collect()
}

/// The postgres user of the postgres:15 image (Debian's).
const POSTGRES_UID: u32 = 999;

/// Everything needed to create one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerSpec {
    pub name: String,
    #[serde(skip)]
    pub role: Role,
    #[serde(skip)]
    pub index: Option<u32>,
    pub image: String,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub ports: Vec<Published>,
    /// `source:target[:ro]`, volumes by name or host paths.
    pub binds: Vec<String>,
    /// Extra labels (the project, role, index and config labels are added).
    #[serde(skip)]
    pub extra_labels: BTreeMap<String, String>,
    /// A command Docker runs to tell when the container is ready
    /// (`CMD` form); the executor waits for it before going on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Vec<String>>,
    pub confinement: Confinement,
    /// Put into its volumes before it starts.
    pub secrets: Vec<SecretFile>,
}

impl ContainerSpec {
    /// A hash of everything that shapes the container: when it changes, the
    /// container is replaced.
    pub fn config_hash(&self) -> String {
        short_digest(&serde_json::to_vec(self).unwrap_or_default())
    }

    pub fn wanted(&self) -> Wanted {
        Wanted {
            role: self.role,
            index: self.index,
            config: self.config_hash(),
        }
    }

    pub fn labels(&self, names: &Names) -> BTreeMap<String, String> {
        let mut labels = names.labels(Some(self.role), self.index, Some(&self.config_hash()));
        labels.extend(self.extra_labels.clone());
        labels
    }
}

/// 12 hex digits of SHA-256.
pub(crate) fn short_digest(data: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    digest.as_ref().iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// Where `--tls files` certificates appear in the proxy container. Their
/// directories are mounted (not the files), so a renewal on the host that
/// replaces the files is seen by the proxy.
/// The directories of the certificate and key, mounted read-only at the
/// same paths as on the host (so the files' names, and renewals that
/// replace them, are the same inside), plus the directory a link points to
/// (certbot's `live/` links into `archive/`) so links resolve inside too.
fn certificate_binds(tls: &TlsFile) -> Vec<String> {
    let (Some(cert), Some(key)) = (&tls.cert, &tls.key) else {
        return Vec::new();
    };
    if tls.mode != CertMode::Files {
        return Vec::new();
    }
    let mut dirs: Vec<PathBuf> = Vec::new();
    for path in [cert, key] {
        let mut add = |p: &Path| {
            if let Some(dir) = p.parent() {
                if !dirs.iter().any(|d| d == dir) {
                    dirs.push(dir.to_path_buf());
                }
            }
        };
        add(path);
        if let Ok(target) = std::fs::canonicalize(path) {
            add(&target);
        }
    }
    dirs.iter().map(|d| format!("{0}:{0}:ro", d.display())).collect()
}

fn path_text(path: &Option<PathBuf>) -> String {
    path.as_deref().map(|p| p.display().to_string()).unwrap_or_default()
}

/// The `[tls]` lines of proxy.toml after `mode` for each certificate source.
fn tls_lines(dep: &Deployment) -> String {
    let quoted = toml_string;
    match dep.tls.mode {
        CertMode::SelfSigned => "mode = \"self-signed\"\n".into(),
        CertMode::AcmeStaging | CertMode::AcmeProduction => {
            let directory = if dep.tls.mode == CertMode::AcmeStaging {
                "staging"
            } else {
                "production"
            };
            let mut lines = format!("mode = \"acme\"\nacme_directory = \"{directory}\"\n");
            if let Some(email) = &dep.tls.email {
                lines.push_str(&format!("acme_email = {}\n", quoted(email)));
            }
            // HTTP-01 is answered on the plain listener, which Let's Encrypt
            // reaches on port 80; TLS-ALPN-01 works when only 443 is public.
            let challenge = if dep.http_port == 80 { "http-01" } else { "tls-alpn-01" };
            lines.push_str(&format!("acme_challenge = \"{challenge}\"\n"));
            lines
        }
        CertMode::Files => format!(
            "mode = \"files\"\ncert = {}\nkey = {}\n",
            quoted(&path_text(&dep.tls.cert)),
            quoted(&path_text(&dep.tls.key)),
        ),
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// The host directory of a project: its admin token and proxy configuration.
pub fn project_dir(project: &str) -> PathBuf {
    crate::config::proxy::default_state_dir().join("projects").join(project)
}

/// The admin token a project's proxy was started with (made by `up`).
pub fn admin_token(project: &str) -> Result<String, super::DeployError> {
    let path = project_dir(project).join("admin-token");
    crate::fsutil::read_secret(&path).map_err(|source| super::DeployError::Token { path, source })
}

/// The specs of the demo profile: flowgate's simulators behind its proxy.
pub fn demo_specs(dep: &Deployment, image: &str, project_dir: &Path) -> Vec<ContainerSpec> {
    let names = dep.names();
    let mut specs = Vec::new();
    let settings = serde_json::to_string(dep).unwrap_or_default();
    let bind = dep
        .bind
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
        .to_string();
    let simulator = Confinement::flowgate(dep.resources.simulator_memory, dep.resources.simulator_pids);
    specs.push(ContainerSpec {
        name: names.container(Role::Proxy, None),
        role: Role::Proxy,
        index: None,
        image: image.into(),
        cmd: strings(&["proxy", "--config", PROXY_CONFIG_IN_CONTAINER]),
        // The file is mounted, so its text is not in the spec: its digest is,
        // and a changed proxy.toml replaces the proxy.
        env: vec![format!(
            "FLOWGATE_PROXY_TOML={}",
            short_digest(proxy_toml(dep).as_bytes())
        )],
        ports: vec![
            Published {
                container: 80,
                host_ip: bind.clone(),
                host_port: dep.http_port,
            },
            Published {
                container: 443,
                host_ip: bind.clone(),
                host_port: dep.https_port,
            },
            Published {
                container: ADMIN_PORT,
                host_ip: "127.0.0.1".into(),
                host_port: 0,
            },
        ],
        binds: vec![
            format!("{}:{STATE_IN_CONTAINER}", names.certificates_volume()),
            format!(
                "{}:{PROXY_CONFIG_IN_CONTAINER}:ro",
                project_dir.join("proxy.toml").display()
            ),
        ]
        .into_iter()
        .chain(certificate_binds(&dep.tls))
        .collect(),
        extra_labels: BTreeMap::from([(LABEL_SETTINGS.to_string(), settings)]),
        healthcheck: None,
        confinement: Confinement {
            // Ports 80 and 443 without a capability: unprivileged ports
            // start at 80 in the proxy's own network namespace.
            sysctls: BTreeMap::from([("net.ipv4.ip_unprivileged_port_start".to_string(), "80".to_string())]),
            ..Confinement::flowgate(dep.resources.proxy_memory, dep.resources.proxy_pids)
        },
        secrets: Vec::new(),
    });
    for n in 1..=dep.instances {
        let name = names.container(Role::Flow, Some(n));
        specs.push(ContainerSpec {
            cmd: vec![
                "sim".into(),
                "flow".into(),
                "--listen".into(),
                format!("0.0.0.0:{FLOW_PORT}"),
                "--name".into(),
                name.clone(),
            ],
            name,
            role: Role::Flow,
            index: Some(n),
            image: image.into(),
            env: Vec::new(),
            ports: Vec::new(),
            binds: Vec::new(),
            extra_labels: BTreeMap::new(),
            healthcheck: None,
            confinement: simulator.clone(),
            secrets: Vec::new(),
        });
    }
    specs.push(ContainerSpec {
        name: names.container(Role::Mc, None),
        role: Role::Mc,
        index: None,
        image: image.into(),
        cmd: vec![
            "sim".into(),
            "mc".into(),
            "--listen".into(),
            format!("0.0.0.0:{MC_PORT}"),
        ],
        env: mc_env(dep),
        ports: Vec::new(),
        binds: Vec::new(),
        extra_labels: BTreeMap::new(),
        healthcheck: None,
        confinement: simulator,
        secrets: Vec::new(),
    });
    specs
}

/// Management Center's environment, as the real image takes it. The member
/// list names the first instance only: MC finds the others through it, and
/// scaling then does not restart MC.
pub fn mc_env(dep: &Deployment) -> Vec<String> {
    let first = flow_host(dep);
    vec![
        "MC_DEFAULT_CLUSTER=flow".into(),
        format!("MC_DEFAULT_CLUSTER_MEMBERS={first}:25701"),
        format!(
            "JAVA_OPTS=-Dhazelcast.mc.flow.addresses={} -Dhazelcast.mc.flow.internalAddress=http://{first}:{FLOW_PORT}",
            dep.flow_origin()
        ),
    ]
}

/// The proxy's configuration: Flow by its domain (instances are added
/// through the admin API as they become healthy), MC by its own, TLS from
/// the local CA, and the forwarded headers Flow expects behind TLS.
pub fn proxy_toml(dep: &Deployment) -> String {
    render_proxy_toml(dep, Layout::Registered)
}

/// Where the proxy's admin token is in a Swarm task (a Swarm secret).
pub const SWARM_TOKEN_IN_CONTAINER: &str = "/run/secrets/admin-token";

/// The proxy's configuration as a Swarm service: Flow's tasks found by
/// the name `tasks.<service>` (Swarm's DNS), the admin API on the task's
/// loopback only (flowgate reaches it through `docker exec`), the token a
/// Swarm secret.
pub fn swarm_proxy_toml(dep: &Deployment) -> String {
    render_proxy_toml(dep, Layout::Swarm)
}

/// The proxy's configuration when nothing registers instances (a compose
/// file): every Flow instance listed, the admin token kept in the state
/// volume.
pub fn standalone_proxy_toml(dep: &Deployment) -> String {
    render_proxy_toml(dep, Layout::Standalone)
}

/// Who tells the proxy where Flow's instances are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// `flowgate up` on one engine, through the admin API.
    Registered,
    /// Nobody: a compose file lists every instance.
    Standalone,
    /// Swarm's DNS, resolved by the proxy itself.
    Swarm,
}

fn render_proxy_toml(dep: &Deployment, layout: Layout) -> String {
    let names = dep.names();
    // The admin token is the state dir's own file: `up` puts it there
    // before the proxy starts, and a compose proxy makes one. On Swarm it
    // is a secret.
    let (writer, flow_backends) = match layout {
        Layout::Standalone => {
            let backends: Vec<String> = (1..=dep.instances)
                .map(|n| toml_string(&format!("{}:{FLOW_PORT}", names.container(Role::Flow, Some(n)))))
                .collect();
            (
                "flowgate export compose",
                format!("backends = [{}]\n", backends.join(", ")),
            )
        }
        Layout::Registered => ("flowgate up", String::new()),
        Layout::Swarm => (
            "flowgate up --swarm",
            format!(
                "discover = {}\n",
                toml_string(&format!("tasks.{}:{FLOW_PORT}", names.service(Role::Flow)))
            ),
        ),
    };
    let (admin_host, token_file) = match layout {
        Layout::Swarm => (
            "127.0.0.1",
            format!("admin_token_file = {}\n", toml_string(SWARM_TOKEN_IN_CONTAINER)),
        ),
        _ => ("0.0.0.0", String::new()),
    };
    template::PROXY_TOML.render(&[
        ("writer", writer),
        ("project", &dep.project),
        ("admin_host", admin_host),
        ("admin_port", &ADMIN_PORT.to_string()),
        ("admin_token_file", &token_file),
        ("state_dir", &toml_string(STATE_IN_CONTAINER)),
        ("tls", &tls_lines(dep)),
        ("domain", &toml_string(&dep.domain)),
        ("mc_domain", &toml_string(&dep.mc_domain)),
        ("https_port", &dep.https_port.to_string()),
        ("flow_backends", &flow_backends),
        (
            "flow_rebalance",
            match dep.rebalance {
                crate::config::proxy::Rebalance::Auto => "rebalance = \"auto\"\n",
                crate::config::proxy::Rebalance::Manual => "",
            },
        ),
        (
            "mc_backend",
            &toml_string(&format!("{}:{MC_PORT}", names.container(Role::Mc, None))),
        ),
    ])
}

/// A TOML string literal (quoted and escaped).
fn toml_string(text: &str) -> String {
    toml::Value::String(text.into()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overlay_subnet_becomes_hazelcasts_interface_pattern() {
        let pattern = |s: &str| hazelcast_interface(s);
        assert_eq!(pattern("10.0.1.0/24").as_deref(), Some("10.0.1.*"));
        assert_eq!(pattern("10.0.0.0/16").as_deref(), Some("10.0.*.*"));
        assert_eq!(pattern("10.0.16.0/20").as_deref(), Some("10.0.16-31.*"));
        assert_eq!(pattern("10.0.1.77/26").as_deref(), Some("10.0.1.64-127"));
        assert_eq!(pattern("10.0.1.5/32").as_deref(), Some("10.0.1.5"));
        assert_eq!(pattern("0.0.0.0/0").as_deref(), Some("*.*.*.*"));
        for bad in ["fd00::/64", "10.0.1.0/33", "10.0.1.0", "10.0.1/24", "", "/"] {
            assert_eq!(pattern(bad), None, "{bad}");
        }
    }

    fn demo() -> Deployment {
        Deployment {
            project: "demo".into(),
            domain: "flow.localhost".into(),
            mc_domain: "mc.localhost".into(),
            instances: 3,
            http_port: 8080,
            https_port: 8443,
            tls: TlsFile::default(),
            bind: None,
            resources: Default::default(),
            rebalance: Default::default(),
            engine: Default::default(),
        }
    }

    #[test]
    fn the_proxy_configuration_is_valid_and_routes_both_domains() {
        let text = proxy_toml(&demo());
        let config = crate::config::proxy::parse(&text, None).unwrap();
        assert_eq!(config.routes.len(), 2);
        assert_eq!(config.services["flow"].forwarded_proto.as_deref(), Some("https"));
        assert_eq!(config.services["flow"].forwarded_port, Some(8443));
        assert_eq!(config.services["mc"].backends[0].address, "demo-mc:8080");
        assert_eq!(config.tls.unwrap().redirect_port, Some(8443));
    }

    #[test]
    fn mc_allows_the_public_flow_origin() {
        let env = mc_env(&demo());
        let java_opts = env.iter().find(|e| e.starts_with("JAVA_OPTS=")).unwrap();
        let value =
            crate::config::deployment::system_property(java_opts, crate::config::deployment::FLOW_ADDRESSES_PROPERTY)
                .unwrap();
        assert_eq!(value, "https://flow.localhost:8443");
        let mut standard = demo();
        standard.https_port = 443;
        assert_eq!(standard.flow_origin(), "https://flow.localhost");
    }

    #[test]
    fn scaling_changes_only_the_instance_list() {
        let dir = Path::new("/tmp/p");
        let three = demo_specs(&demo(), "flowgate:x", dir);
        let mut five_dep = demo();
        five_dep.instances = 5;
        let five = demo_specs(&five_dep, "flowgate:x", dir);
        let hash = |specs: &[ContainerSpec], role| specs.iter().find(|s| s.role == role).unwrap().config_hash();
        assert_eq!(
            hash(&three, Role::Mc),
            hash(&five, Role::Mc),
            "MC must not restart on scale"
        );
        assert_eq!(hash(&three, Role::Flow), hash(&five, Role::Flow));
        assert_eq!(five.iter().filter(|s| s.role == Role::Flow).count(), 5);
        // The settings label is not part of the hash: scaling keeps the proxy
        // (the instance count is read from the Flow containers instead).
        assert_eq!(hash(&three, Role::Proxy), hash(&five, Role::Proxy));
        let mut other_image = demo_specs(&demo(), "flowgate:y", dir);
        assert_ne!(other_image.remove(0).config_hash(), three[0].config_hash());
    }
}

/// The images of the real profile.
pub const FLOW_IMAGE: &str = "hazelcast/hazelcast-flow";
pub const MC_IMAGE: &str = "hazelcast/management-center-flow";
pub const POSTGRES_IMAGE: &str = "postgres:15";
pub const HAZELCAST_PORT: u16 = 25701;
const HAZELCAST_YML_IN_CONTAINER: &str = "/opt/flowgate/hazelcast.yml";

/// What the real profile needs besides the deployment's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealProfile {
    /// Image tag of Flow and MC.
    pub tag: String,
    pub license: String,
    pub db_password: String,
}

/// The name that reaches a Flow instance on the deployment's network: the
/// first container on one engine; on Swarm the service, whose name Swarm's
/// DNS answers with one of its tasks.
fn flow_host(dep: &Deployment) -> String {
    let names = dep.names();
    match dep.engine {
        Engine::Single => names.container(Role::Flow, Some(1)),
        Engine::Swarm => names.service(Role::Flow),
    }
}

/// The member list of Flow's embedded Hazelcast (tcp-ip join; cluster
/// name `flow`). On one engine every instance by name. On Swarm the
/// instances come and go, so the one name `tasks.<service>`, which
/// Hazelcast resolves to every task's address when its interfaces are
/// restricted to `interface` (the overlay network's subnet as Hazelcast's
/// pattern, from [`hazelcast_interface`]); without it, to one task per
/// attempt, which is enough to join.
pub fn hazelcast_yml(dep: &Deployment, interface: Option<&str>) -> String {
    let names = dep.names();
    let (members, interfaces) = match dep.engine {
        Engine::Swarm => (
            format!("          - tasks.{}:{HAZELCAST_PORT}\n", names.service(Role::Flow)),
            interface
                .map(|pattern| {
                    format!("    interfaces:\n      enabled: true\n      interfaces:\n        - {pattern}\n")
                })
                .unwrap_or_default(),
        ),
        Engine::Single => (
            (1..=dep.instances.max(1))
                .map(|n| {
                    format!(
                        "          - {}:{HAZELCAST_PORT}\n",
                        names.container(Role::Flow, Some(n))
                    )
                })
                .collect(),
            String::new(),
        ),
    };
    template::HAZELCAST_YML.render(&[
        ("port", &HAZELCAST_PORT.to_string()),
        ("interfaces", &interfaces),
        ("members", &members),
    ])
}

/// An IPv4 subnet (`10.0.1.0/24`) as Hazelcast's interface pattern, one
/// field per octet: `*` for any, `a-b` for a range (`10.0.16-31.*` for a
/// /20). None for what is not an IPv4 subnet.
pub fn hazelcast_interface(subnet: &str) -> Option<String> {
    let (address, bits) = subnet.split_once('/')?;
    let address: std::net::Ipv4Addr = address.parse().ok()?;
    let bits: u32 = bits.parse().ok().filter(|b| *b <= 32)?;
    let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
    let first = u32::from(address) & mask;
    let last = first | !mask;
    let octets = (0..4).map(|i| {
        let shift = 24 - 8 * i;
        let (low, high) = ((first >> shift) & 0xff, (last >> shift) & 0xff);
        match (low, high) {
            (0, 255) => "*".to_string(),
            (low, high) if low == high => low.to_string(),
            (low, high) => format!("{low}-{high}"),
        }
    });
    Some(octets.collect::<Vec<_>>().join("."))
}

/// Flow's `OPTIONS`: the database, clustering and the public MC URL. They
/// end up on Java's command line, so the database password is not here
/// (`FLOW_DB_PASSWORD` carries it).
pub fn flow_options(dep: &Deployment) -> String {
    let names = dep.names();
    [
        format!("--flow.db.host={}", names.container(Role::Postgres, None)),
        "--flow.db.database=flow".into(),
        "--flow.db.username=flow".into(),
        "--flow.schema.server.clustered=true".into(),
        format!("--flow.hazelcast.configYamlPath={HAZELCAST_YML_IN_CONTAINER}"),
        format!("--flow.config.custom.managementCenterUrl={}", dep.mc_origin()),
    ]
    .join(" ")
}

/// The specs of the real profile: PostgreSQL, Hazelcast Flow and MC behind
/// flowgate's proxy.
pub fn real_specs(dep: &Deployment, proxy_image: &str, real: &RealProfile, project_dir: &Path) -> Vec<ContainerSpec> {
    let names = dep.names();
    let mut specs = demo_specs(dep, proxy_image, project_dir);
    specs.retain(|s| s.role == Role::Proxy);
    specs.push(ContainerSpec {
        name: names.container(Role::Postgres, None),
        role: Role::Postgres,
        index: None,
        image: POSTGRES_IMAGE.into(),
        cmd: Vec::new(),
        env: vec![
            "POSTGRES_DB=flow".into(),
            "POSTGRES_USER=flow".into(),
            format!("POSTGRES_PASSWORD_FILE={SECRETS_IN_POSTGRES}/db-password"),
        ],
        ports: Vec::new(),
        binds: vec![
            format!("{}:/var/lib/postgresql/data", names.postgres_volume()),
            format!("{}:{SECRETS_IN_POSTGRES}", names.secrets_volume()),
        ],
        extra_labels: BTreeMap::new(),
        // Flow fails at start without its database: it starts only once
        // PostgreSQL accepts connections.
        healthcheck: Some(strings(&["pg_isready", "-U", "flow", "-d", "flow"])),
        confinement: Confinement::default(),
        secrets: vec![SecretFile {
            env: Some("POSTGRES_PASSWORD"),
            ..SecretFile::new(SECRETS_IN_POSTGRES, "db-password", POSTGRES_UID, &real.db_password)
        }],
    });
    for n in 1..=dep.instances {
        specs.push(ContainerSpec {
            name: names.container(Role::Flow, Some(n)),
            role: Role::Flow,
            index: Some(n),
            image: format!("{FLOW_IMAGE}:{}", real.tag),
            cmd: Vec::new(),
            env: vec![
                format!("MC_LICENSE={}", real.license),
                "JAVA_OPTS=-Xms1g -Xmx2g".into(),
                // Spring reads flow.db.password from here: not on the command line.
                format!("FLOW_DB_PASSWORD={}", real.db_password),
                format!("OPTIONS={}", flow_options(dep)),
            ],
            ports: Vec::new(),
            binds: vec![format!(
                "{}:{HAZELCAST_YML_IN_CONTAINER}:ro",
                project_dir.join("hazelcast.yml").display()
            )],
            extra_labels: BTreeMap::new(),
            healthcheck: None,
            confinement: Confinement::default(),
            secrets: Vec::new(),
        });
    }
    let mut mc = mc_env(dep);
    mc.insert(0, format!("MC_LICENSE={}", real.license));
    specs.push(ContainerSpec {
        name: names.container(Role::Mc, None),
        role: Role::Mc,
        index: None,
        image: format!("{MC_IMAGE}:{}", real.tag),
        cmd: Vec::new(),
        env: mc,
        ports: Vec::new(),
        binds: Vec::new(),
        extra_labels: BTreeMap::new(),
        healthcheck: None,
        confinement: Confinement::default(),
        secrets: Vec::new(),
    });
    specs
}

/// `MC_LICENSE` from the environment or a `.env` file in `dir`.
pub fn find_license(dir: &Path) -> Option<String> {
    license_from(std::env::var("MC_LICENSE").ok(), dir)
}

/// The licence from the environment's value when it has one, else from `dir/.env`.
fn license_from(env: Option<String>, dir: &Path) -> Option<String> {
    if let Some(value) = env.filter(|v| !v.trim().is_empty()) {
        return Some(value.trim().to_string());
    }
    let text = std::fs::read_to_string(dir.join(".env")).ok()?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("MC_LICENSE="))
        .map(|v| v.trim().trim_matches('"').trim_matches('\'').to_string())
        .find(|v| !v.is_empty())
}

/// The production-shaped deployment the tests of settings and export use.
#[cfg(test)]
pub(crate) fn example() -> Deployment {
    Deployment {
        project: "prod".into(),
        domain: "flow.example.com".into(),
        mc_domain: "mc.example.com".into(),
        instances: 3,
        http_port: 80,
        https_port: 443,
        tls: TlsFile::default(),
        bind: None,
        resources: Default::default(),
        rebalance: Default::default(),
        engine: Default::default(),
    }
}

#[cfg(test)]
mod golden {
    //! Golden files: every generated setting, compared with the file in
    //! tests/golden. Run with UPDATE_GOLDEN=1 to rewrite them after a
    //! deliberate change, and review the diff.
    use super::*;

    fn check(name: &str, actual: &str) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, actual).unwrap();
        }
        let expected = std::fs::read_to_string(&path)
            .unwrap_or_else(|_| panic!("{} is missing; run with UPDATE_GOLDEN=1", path.display()));
        assert_eq!(actual, expected, "{name} differs from {}", path.display());
    }

    fn deployment() -> Deployment {
        example()
    }

    fn real() -> RealProfile {
        RealProfile {
            tag: "latest".into(),
            license: "LICENSE-KEY".into(),
            db_password: "s3cret".into(),
        }
    }

    fn render(specs: &[ContainerSpec]) -> String {
        let mut out = String::new();
        for s in specs {
            out.push_str(&format!("[{}]\nimage = {}\n", s.name, s.image));
            if !s.cmd.is_empty() {
                out.push_str(&format!("cmd = {}\n", s.cmd.join(" ")));
            }
            for e in &s.env {
                out.push_str(&format!("env {e}\n"));
            }
            for p in &s.ports {
                out.push_str(&format!("publish {}:{} -> {}\n", p.host_ip, p.host_port, p.container));
            }
            for b in &s.binds {
                out.push_str(&format!("bind {}\n", b.replace("/tmp/project", "<project-dir>")));
            }
            if let Some(check) = &s.healthcheck {
                out.push_str(&format!("healthcheck {}\n", check.join(" ")));
            }
            let c = &s.confinement;
            out.push_str(&format!(
                "confinement user={} drop-capabilities={} read-only={} memory={} pids={} no-new-privileges\n",
                c.user.as_deref().unwrap_or("(image)"),
                c.drop_capabilities,
                c.read_only_root,
                c.memory_bytes
                    .map_or("-".into(), crate::config::deployment::format_size),
                c.pids.map_or("-".into(), |p| p.to_string()),
            ));
            for (path, options) in &c.tmpfs {
                out.push_str(&format!("tmpfs {path} {options}\n"));
            }
            for (key, value) in &c.sysctls {
                out.push_str(&format!("sysctl {key}={value}\n"));
            }
            for secret in &s.secrets {
                out.push_str(&format!(
                    "secret {} owner={} mode=0400 digest={}\n",
                    secret.path(),
                    secret.uid,
                    secret.digest
                ));
            }
            out.push('\n');
        }
        out
    }

    #[test]
    fn hazelcast_yml_lists_every_instance() {
        check("hazelcast.yml", &hazelcast_yml(&deployment(), None));
    }

    #[test]
    fn proxy_toml() {
        check("proxy.toml", &super::proxy_toml(&deployment()));
    }

    #[test]
    fn proxy_toml_for_acme_and_files() {
        let mut acme = deployment();
        acme.tls = TlsFile {
            mode: CertMode::AcmeStaging,
            email: Some("ops@example.com".into()),
            ..TlsFile::default()
        };
        let mut files = deployment();
        files.https_port = 8443;
        files.http_port = 8080;
        files.tls = TlsFile {
            mode: CertMode::Files,
            email: None,
            cert: Some("/etc/letsencrypt/live/flow/fullchain.pem".into()),
            key: Some("/etc/letsencrypt/live/flow/privkey.pem".into()),
        };
        let text = format!(
            "{}\n# ---- files ----\n{}",
            super::proxy_toml(&acme),
            super::proxy_toml(&files)
        );
        check("proxy-acme-files.toml", &text);
        for dep in [&acme, &files] {
            crate::config::proxy::parse(&super::proxy_toml(dep), None).expect("a valid proxy.toml");
        }
        let proxy = demo_specs(&files, "flowgate:abc", Path::new("/tmp/project")).remove(0);
        assert!(
            proxy
                .binds
                .contains(&"/etc/letsencrypt/live/flow:/etc/letsencrypt/live/flow:ro".to_string()),
            "{:?}",
            proxy.binds
        );
    }

    #[test]
    fn a_changed_proxy_toml_replaces_the_proxy() {
        let mut other = deployment();
        other.tls.mode = CertMode::AcmeProduction;
        let hash = |d: &Deployment| demo_specs(d, "flowgate:abc", Path::new("/tmp/project"))[0].config_hash();
        assert_ne!(hash(&deployment()), hash(&other));
        let mut scaled = deployment();
        scaled.instances = 7;
        assert_eq!(hash(&deployment()), hash(&scaled));
    }

    #[test]
    fn real_profile_containers() {
        check(
            "real-containers.txt",
            &render(&real_specs(
                &deployment(),
                "flowgate:abc",
                &real(),
                Path::new("/tmp/project"),
            )),
        );
    }

    #[test]
    fn demo_profile_containers() {
        let mut demo = deployment();
        demo.bind = Some("127.0.0.1".parse().unwrap());
        let mut specs = demo_specs(&demo, "flowgate:abc", Path::new("/tmp/project"));
        // As `apply` adds it.
        specs[0].secrets.push(admin_token_secret("t0ken"));
        check("demo-containers.txt", &render(&specs));
    }

    #[test]
    fn certbot_links_resolve_inside_the_proxy() {
        let root = std::env::temp_dir().join(format!("flowgate-certbot-{}", std::process::id()));
        let (live, archive) = (root.join("live/flow"), root.join("archive/flow"));
        std::fs::create_dir_all(&live).unwrap();
        std::fs::create_dir_all(&archive).unwrap();
        for (link, file) in [("fullchain.pem", "fullchain1.pem"), ("privkey.pem", "privkey1.pem")] {
            std::fs::write(archive.join(file), "pem").unwrap();
            std::os::unix::fs::symlink(format!("../../archive/flow/{file}"), live.join(link)).unwrap();
        }
        let tls = TlsFile {
            mode: CertMode::Files,
            email: None,
            cert: Some(live.join("fullchain.pem")),
            key: Some(live.join("privkey.pem")),
        };
        let binds = certificate_binds(&tls);
        let same = |dir: &Path| format!("{0}:{0}:ro", dir.display());
        assert_eq!(binds, vec![same(&live), same(&archive.canonicalize().unwrap())]);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn rebalance_auto_reaches_the_proxy() {
        let mut dep = deployment();
        dep.rebalance = crate::config::proxy::Rebalance::Auto;
        let config = crate::config::proxy::parse(&super::proxy_toml(&dep), None).unwrap();
        assert_eq!(config.services["flow"].rebalance, crate::config::proxy::Rebalance::Auto);
        assert_eq!(config.services["mc"].rebalance, crate::config::proxy::Rebalance::Manual);
    }

    #[test]
    fn real_profile_secrets_are_files_and_never_on_a_command_line() {
        let specs = real_specs(&deployment(), "flowgate:abc", &real(), Path::new("/tmp/project"));
        for spec in &specs {
            // Flow's own variable is the one place it may be (Spring reads it).
            let mut shown = spec.clone();
            shown.env.retain(|e| e != "FLOW_DB_PASSWORD=s3cret");
            let labels = format!("{:?}", shown.labels(&deployment().names()));
            let shown = format!("{:?} {} {labels}", shown, serde_json::to_string(&shown).unwrap());
            assert!(!shown.contains("s3cret"), "{} shows the password: {shown}", spec.name);
            for option in spec.env.iter().filter(|e| e.starts_with("OPTIONS=")) {
                assert!(!option.contains("password"), "{option}");
            }
        }
        let postgres = specs.iter().find(|s| s.role == Role::Postgres).unwrap();
        assert_eq!(postgres.secrets[0].content, "s3cret");
        assert!(
            postgres
                .env
                .contains(&"POSTGRES_PASSWORD_FILE=/run/secrets/flowgate/db-password".to_string())
        );
        let flow = specs.iter().find(|s| s.role == Role::Flow).unwrap();
        assert!(flow.env.contains(&"FLOW_DB_PASSWORD=s3cret".to_string()));
    }

    #[test]
    fn the_licence_comes_from_a_dot_env_file() {
        let dir = std::env::temp_dir().join(format!("flowgate-env-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(".env"), "# comment\nOTHER=1\nMC_LICENSE=\"abc123\"\n").unwrap();
        assert_eq!(license_from(None, &dir).as_deref(), Some("abc123"));
        assert_eq!(license_from(Some("  ".into()), &dir).as_deref(), Some("abc123"));
        assert_eq!(
            license_from(Some("from-env".into()), &dir).as_deref(),
            Some("from-env"),
            "the environment wins"
        );
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(license_from(None, &dir), None, "no .env, no licence");
    }
}
