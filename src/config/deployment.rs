//! `flowgate.toml`: the deployment an operator wants (domains, instances,
//! profile, certificates, host ports) and the dashboard's key bindings.
//! Every field is optional; command-line flags win over the file, and the
//! file wins over the built-in defaults.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::{ConfigError, Source};

/// The file `--config` names when it is not given.
pub const DEFAULT_FILE: &str = "flowgate.toml";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// flowgate's simulators: no registry, no licence.
    #[default]
    Demo,
    /// hazelcast/hazelcast-flow, hazelcast/management-center-flow and postgres:15.
    Real,
}

/// Which Docker runs the deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Engine {
    /// Containers on one Docker engine.
    #[default]
    Single,
    /// Services on a Docker Swarm, created through one of its managers:
    /// the instances spread over the nodes and are rescheduled by Swarm.
    Swarm,
}

impl Engine {
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Single => "single",
            Engine::Swarm => "swarm",
        }
    }
}

/// Where the proxy's certificate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum CertMode {
    /// A local CA kept in the proxy's volume; clients trust its ca.pem.
    #[default]
    SelfSigned,
    /// Let's Encrypt's staging CA (untrusted certificates, generous limits).
    AcmeStaging,
    /// Let's Encrypt.
    AcmeProduction,
    /// A certificate and key from files on this machine.
    Files,
}

impl CertMode {
    pub const ALL: [CertMode; 4] = [
        CertMode::SelfSigned,
        CertMode::AcmeStaging,
        CertMode::AcmeProduction,
        CertMode::Files,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CertMode::SelfSigned => "self-signed",
            CertMode::AcmeStaging => "acme-staging",
            CertMode::AcmeProduction => "acme-production",
            CertMode::Files => "files",
        }
    }
}

/// The `[tls]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TlsFile {
    pub mode: CertMode,
    pub email: Option<String>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// What flowgate's own containers may use. Flow, MC and PostgreSQL keep
/// their images' settings; these bound the proxy and the simulators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// Memory limit of the proxy, in bytes.
    pub proxy_memory: u64,
    /// How many processes and threads the proxy may have.
    pub proxy_pids: u32,
    /// Memory limit of each simulator (Flow and MC stand-ins), in bytes.
    pub simulator_memory: u64,
    pub simulator_pids: u32,
}

/// The least memory a limit may set: below it the proxy cannot start.
pub const MIN_MEMORY: u64 = 32 << 20;
/// The fewest processes a limit may allow (tokio's threads plus headroom).
pub const MIN_PIDS: u32 = 32;

impl Default for Resources {
    /// Room for 10,000 sessions through the proxy (about 5 KiB each, plus
    /// buffers under load) and for the simulators of a demo.
    fn default() -> Self {
        Resources {
            proxy_memory: 512 << 20,
            proxy_pids: 1024,
            simulator_memory: 256 << 20,
            simulator_pids: 256,
        }
    }
}

/// `[resources]` as written: each limit that is set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResourcesFile {
    pub proxy_memory: Option<u64>,
    pub proxy_pids: Option<u32>,
    pub simulator_memory: Option<u64>,
    pub simulator_pids: Option<u32>,
}

impl ResourcesFile {
    /// These limits over `base`.
    pub fn over(&self, base: Resources) -> Resources {
        Resources {
            proxy_memory: self.proxy_memory.unwrap_or(base.proxy_memory),
            proxy_pids: self.proxy_pids.unwrap_or(base.proxy_pids),
            simulator_memory: self.simulator_memory.unwrap_or(base.simulator_memory),
            simulator_pids: self.simulator_pids.unwrap_or(base.simulator_pids),
        }
    }
}

/// A size such as `512MiB`, `1GiB`, `256M` or a number of bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a size; write it like 512MiB or 1GiB"))?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KB" | "KiB" | "k" => 1 << 10,
        "M" | "MB" | "MiB" | "m" => 1 << 20,
        "G" | "GB" | "GiB" | "g" => 1 << 30,
        other => return Err(format!("'{other}' is not a unit of size; use KiB, MiB or GiB")),
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("'{text}' is too large"))
}

/// A size for people: `512MiB`, `1GiB`.
pub fn format_size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 && b % (1 << 30) == 0 => format!("{}GiB", b >> 30),
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{}MiB", b >> 20),
        b => format!("{b}"),
    }
}

/// `flowgate.toml` once read and checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeploymentFile {
    /// Where it was read from (relative paths in it are relative to its directory).
    pub path: Option<PathBuf>,
    pub project: Option<String>,
    pub profile: Option<Profile>,
    pub domain: Option<String>,
    pub mc_domain: Option<String>,
    pub instances: Option<u32>,
    pub http_port: Option<u16>,
    pub https_port: Option<u16>,
    pub tag: Option<String>,
    pub mc_license: Option<String>,
    pub tls: Option<TlsFile>,
    /// The address the ports are published on [default: 127.0.0.1 for the
    /// demo, 0.0.0.0 for the real profile].
    pub bind: Option<std::net::IpAddr>,
    pub resources: ResourcesFile,
    /// `auto`: a new healthy instance gets sessions moved onto it at once.
    pub rebalance: Option<crate::config::proxy::Rebalance>,
    /// `swarm`: services on a Docker Swarm instead of containers on one engine.
    pub engine: Option<Engine>,
    /// Dashboard action -> key, e.g. `scale_up = "+"`.
    pub keys: BTreeMap<KeyAction, char>,
}

/// The dashboard's actions that can be bound to keys in `[keys]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum KeyAction {
    ScaleUp,
    ScaleDown,
    Restart,
    Drain,
    Logs,
    Certificate,
    Mc,
    Doctor,
    Filter,
    Rebalance,
    Help,
    Quit,
    QuitDown,
}

impl KeyAction {
    /// Every action, in the order the help lists them.
    pub const ALL: [KeyAction; 13] = [
        KeyAction::ScaleUp,
        KeyAction::ScaleDown,
        KeyAction::Restart,
        KeyAction::Drain,
        KeyAction::Logs,
        KeyAction::Certificate,
        KeyAction::Mc,
        KeyAction::Doctor,
        KeyAction::Filter,
        KeyAction::Rebalance,
        KeyAction::Help,
        KeyAction::Quit,
        KeyAction::QuitDown,
    ];

    /// Its name in `[keys]`.
    pub fn name(self) -> &'static str {
        self.describe().0
    }

    pub fn default_key(self) -> char {
        self.describe().1
    }

    /// What it does, for the help.
    pub fn what(self) -> &'static str {
        self.describe().2
    }

    fn describe(self) -> (&'static str, char, &'static str) {
        match self {
            KeyAction::ScaleUp => ("scale_up", '+', "add one Flow instance"),
            KeyAction::ScaleDown => ("scale_down", '-', "remove one Flow instance (drained first)"),
            KeyAction::Restart => ("restart", 'r', "restart the selected instance"),
            KeyAction::Drain => ("drain", 'd', "drain the selected instance (sessions get 1001)"),
            KeyAction::Logs => ("logs", 'l', "logs of the selected instance"),
            KeyAction::Certificate => ("certificate", 'c', "certificate details"),
            KeyAction::Mc => ("mc", 'm', "Management Center and its CORS check"),
            KeyAction::Doctor => (
                "doctor",
                'D',
                "check the deployment against Flow's load-balancing guide",
            ),
            KeyAction::Filter => ("filter", '/', "filter instances by name"),
            KeyAction::Rebalance => (
                "rebalance",
                'b',
                "spread the sessions evenly again (1012: clients reconnect)",
            ),
            KeyAction::Help => ("help", '?', "this help"),
            KeyAction::Quit => ("quit", 'q', "quit; the deployment keeps running"),
            KeyAction::QuitDown => ("quit_down", 'Q', "quit and take the deployment down"),
        }
    }

    pub fn from_name(name: &str) -> Option<KeyAction> {
        KeyAction::ALL.into_iter().find(|a| a.name() == name)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    mode: Option<CertMode>,
    email: Option<Spanned<String>>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    project: Option<Spanned<String>>,
    profile: Option<Profile>,
    domain: Option<Spanned<String>>,
    mc_domain: Option<Spanned<String>>,
    instances: Option<Spanned<u32>>,
    http_port: Option<u16>,
    https_port: Option<u16>,
    tag: Option<String>,
    mc_license: Option<String>,
    tls: Option<Spanned<RawTls>>,
    bind: Option<Spanned<String>>,
    resources: Option<RawResources>,
    rebalance: Option<crate::config::proxy::Rebalance>,
    engine: Option<Engine>,
    #[serde(default)]
    keys: BTreeMap<String, Spanned<String>>,
}

/// A memory limit: `"512MiB"` or a number of bytes.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawSize {
    Bytes(u64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResources {
    proxy_memory: Option<Spanned<RawSize>>,
    proxy_pids: Option<Spanned<u32>>,
    simulator_memory: Option<Spanned<RawSize>>,
    simulator_pids: Option<Spanned<u32>>,
}

fn resources_from(source: &Source<'_>, raw: Option<RawResources>) -> Result<ResourcesFile, ConfigError> {
    let Some(raw) = raw else {
        return Ok(ResourcesFile::default());
    };
    let memory = |value: Option<Spanned<RawSize>>| -> Result<Option<u64>, ConfigError> {
        let Some(value) = value else { return Ok(None) };
        let span = value.span();
        let bytes = match value.into_inner() {
            RawSize::Bytes(b) => b,
            RawSize::Text(t) => parse_size(&t).map_err(|e| source.error_at(span.clone(), e))?,
        };
        if bytes < MIN_MEMORY {
            return Err(source
                .error_at(
                    span,
                    format!("{} is less than the least a container needs", format_size(bytes)),
                )
                .with_hint(format!("use at least {}", format_size(MIN_MEMORY))));
        }
        Ok(Some(bytes))
    };
    let pids = |value: Option<Spanned<u32>>| -> Result<Option<u32>, ConfigError> {
        let Some(value) = value else { return Ok(None) };
        if *value.get_ref() < MIN_PIDS {
            return Err(source
                .error_at(value.span(), format!("{} processes are too few", value.get_ref()))
                .with_hint(format!("use at least {MIN_PIDS}")));
        }
        Ok(Some(value.into_inner()))
    };
    Ok(ResourcesFile {
        proxy_memory: memory(raw.proxy_memory)?,
        proxy_pids: pids(raw.proxy_pids)?,
        simulator_memory: memory(raw.simulator_memory)?,
        simulator_pids: pids(raw.simulator_pids)?,
    })
}

/// Reads `path`. A missing file is not an error when it is the default
/// name (`required` false): there is simply no file.
pub fn load(path: &Path, required: bool) -> Result<Option<DeploymentFile>, ConfigError> {
    if !required && !path.exists() {
        return Ok(None);
    }
    let text = super::read_file(path)?;
    parse(&text, Some(path)).map(Some)
}

/// Parses and checks the text of a flowgate.toml.
pub fn parse(text: &str, file: Option<&Path>) -> Result<DeploymentFile, ConfigError> {
    let source = Source { file, text };
    let raw: RawFile = toml::from_str(text).map_err(|e| source.toml_error(&e))?;
    if let Some(project) = &raw.project {
        check_project(project.get_ref()).map_err(|e| source.error_at(project.span(), e.to_string()))?;
    }
    for (domain, setting) in [(&raw.domain, Setting::Domain), (&raw.mc_domain, Setting::McDomain)] {
        if let Some(domain) = domain {
            check_domain(domain.get_ref(), setting).map_err(|e| source.error_at(domain.span(), e.to_string()))?;
        }
    }
    if let Some(n) = &raw.instances {
        if *n.get_ref() > MAX_INSTANCES {
            return Err(source
                .error_at(
                    n.span(),
                    format!("instances = {} is more than {MAX_INSTANCES}", n.get_ref()),
                )
                .with_hint("one proxy in front of more Flow servers than this is not what flowgate is for"));
        }
    }
    let base = file.and_then(Path::parent).unwrap_or(Path::new("."));
    let tls = match raw.tls {
        None => None,
        Some(spanned) => {
            let span = spanned.span();
            let t = spanned.into_inner();
            let mode = t.mode.unwrap_or_default();
            let email = t.email.map(|e| e.into_inner()).filter(|e| !e.is_empty());
            if let (Some(email), true) = (&email, matches!(mode, CertMode::AcmeStaging | CertMode::AcmeProduction)) {
                if !email.contains('@') {
                    return Err(source
                        .error_at(span.clone(), format!("email '{email}' is not an e-mail address"))
                        .with_hint("the ACME account's contact, e.g. ops@example.com"));
                }
            }
            if mode == CertMode::Files && (t.cert.is_none() || t.key.is_none()) {
                return Err(source
                    .error_at(span, "mode = \"files\" needs both cert and key")
                    .with_hint("cert = \"fullchain.pem\" and key = \"privkey.pem\""));
            }
            Some(TlsFile {
                mode,
                email,
                cert: t.cert.map(|p| base.join(p)),
                key: t.key.map(|p| base.join(p)),
            })
        }
    };
    let mut keys = BTreeMap::new();
    for (name, key) in raw.keys {
        let Some(action) = KeyAction::from_name(&name) else {
            let known: Vec<&str> = KeyAction::ALL.iter().map(|a| a.name()).collect();
            return Err(source
                .error_at(key.span(), format!("no dashboard action is called '{name}'"))
                .with_hint(format!("the actions are {}", known.join(", "))));
        };
        let mut chars = key.get_ref().chars();
        let (Some(c), None) = (chars.next(), chars.next()) else {
            return Err(source
                .error_at(key.span(), format!("'{}' is not one character", key.get_ref()))
                .with_hint("bind actions to single characters, e.g. scale_up = \"a\""));
        };
        keys.insert(action, c);
    }
    let bind = match &raw.bind {
        None => None,
        Some(text) => Some(text.get_ref().parse::<std::net::IpAddr>().map_err(|_| {
            source
                .error_at(text.span(), format!("bind = '{}' is not an IP address", text.get_ref()))
                .with_hint("127.0.0.1 publishes on this machine only, 0.0.0.0 on every interface")
        })?),
    };
    let resources = resources_from(&source, raw.resources)?;
    Ok(DeploymentFile {
        path: file.map(Path::to_path_buf),
        project: raw.project.map(Spanned::into_inner),
        profile: raw.profile,
        domain: raw.domain.map(Spanned::into_inner),
        mc_domain: raw.mc_domain.map(Spanned::into_inner),
        instances: raw.instances.map(Spanned::into_inner),
        http_port: raw.http_port,
        https_port: raw.https_port,
        tag: raw.tag,
        mc_license: raw.mc_license.filter(|l| !l.trim().is_empty()),
        tls,
        bind,
        resources,
        rebalance: raw.rebalance,
        engine: raw.engine,
        keys,
    })
}

pub const MAX_INSTANCES: u32 = 100;

/// The Java system property that tells Management Center which Flow
/// origins may call it (its CORS allow-list).
pub const FLOW_ADDRESSES_PROPERTY: &str = "hazelcast.mc.flow.addresses";

/// The value of `-Dname=value` in a JAVA_OPTS string (quotes allowed).
pub fn system_property(java_opts: &str, name: &str) -> Option<String> {
    let needle = format!("-D{name}=");
    let start = java_opts.find(&needle)? + needle.len();
    let rest = &java_opts[start..];
    let value = match rest.chars().next() {
        Some(quote @ ('"' | '\'')) => rest[1..].split(quote).next().unwrap_or_default(),
        _ => rest.split_whitespace().next().unwrap_or_default(),
    };
    Some(value.to_string())
}

/// The setting a [`DeploymentError`] is about: the setup form puts its
/// cursor there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    Project,
    Domain,
    McDomain,
    Instances,
    HttpPort,
    HttpsPort,
    Email,
    Cert,
    Key,
}

/// A deployment rule that does not hold, whoever built the deployment
/// (the setup form, flags, flowgate.toml or a scale command).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeploymentError {
    #[error(
        "project '{0}' is not a valid name: use up to 40 lower-case letters, digits, '-' or '_', starting with a letter or digit"
    )]
    Project(String),
    #[error("'{name}' is not a host name (write it like flow.example.com, without https:// or a port)")]
    HostName { setting: Setting, name: String },
    #[error("Management Center needs a host name of its own, not Flow's ({0}); use mc.{0}")]
    SameDomains(String),
    #[error("{0} instances is more than flowgate runs ({MAX_INSTANCES})")]
    Instances(u32),
    #[error("port 0 is not a port a browser can reach; choose one from 1 to 65535")]
    NoPort(Setting),
    #[error("the HTTP and HTTPS ports are both {0}; give them different ports")]
    SamePorts(u16),
    #[error("Let's Encrypt needs a contact e-mail address (tls.email), not '{0}'")]
    Email(String),
    #[error(
        "Let's Encrypt only issues certificates for public names, not {0}; use the self-signed mode for local names"
    )]
    NotPublic(String),
    #[error("the certificate mode \"files\" needs both a certificate and a key file")]
    MissingCertFile(Setting),
    #[error("the certificate file {} must be an absolute path (Docker mounts it)", .1.display())]
    RelativeCertFile(Setting, PathBuf),
    #[error(
        "on Swarm the proxy's ports are published on every address of its node (Swarm's host-mode publishing takes no address), not only on {0}; say that this is meant with --bind 0.0.0.0 (or bind = \"0.0.0.0\"), and keep the node's firewall closed to what must not reach it"
    )]
    SwarmBind(std::net::IpAddr),
}

impl DeploymentError {
    pub fn setting(&self) -> Setting {
        match self {
            DeploymentError::Project(_) => Setting::Project,
            DeploymentError::HostName { setting, .. } => *setting,
            DeploymentError::SameDomains(_) => Setting::McDomain,
            DeploymentError::Instances(_) => Setting::Instances,
            DeploymentError::NoPort(setting) => *setting,
            DeploymentError::SamePorts(_) => Setting::HttpsPort,
            DeploymentError::Email(_) => Setting::Email,
            DeploymentError::NotPublic(_) => Setting::Domain,
            DeploymentError::MissingCertFile(setting) | DeploymentError::RelativeCertFile(setting, _) => *setting,
            DeploymentError::SwarmBind(_) => Setting::HttpPort,
        }
    }
}

/// A project name must make valid Docker object names.
pub fn check_project(name: &str) -> Result<(), DeploymentError> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(DeploymentError::Project(name.into()))
    }
}

/// A public host name: letters, digits, '-' and dots, no scheme or port.
pub fn check_domain(name: &str, setting: Setting) -> Result<(), DeploymentError> {
    let labels_ok = name
        .split('.')
        .all(|l| !l.is_empty() && l.len() <= 63 && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    if name.is_empty() || name.len() > 253 || !labels_ok || name.starts_with('-') {
        return Err(DeploymentError::HostName {
            setting,
            name: name.into(),
        });
    }
    Ok(())
}

/// The certificate rules: ACME needs a contact and a public name, files
/// need both paths, absolute.
pub fn check_tls(tls: &TlsFile, domain: &str) -> Result<(), DeploymentError> {
    match tls.mode {
        CertMode::AcmeStaging | CertMode::AcmeProduction => {
            if let Some(email) = &tls.email {
                if !email.contains('@') {
                    return Err(DeploymentError::Email(email.clone()));
                }
            }
            if domain == "localhost" || domain.ends_with(".localhost") || !domain.contains('.') {
                return Err(DeploymentError::NotPublic(domain.into()));
            }
        }
        CertMode::Files => {
            for (path, setting) in [(&tls.cert, Setting::Cert), (&tls.key, Setting::Key)] {
                let Some(path) = path else {
                    return Err(DeploymentError::MissingCertFile(setting));
                };
                if !path.is_absolute() {
                    return Err(DeploymentError::RelativeCertFile(setting, path.clone()));
                }
            }
        }
        CertMode::SelfSigned => {}
    }
    Ok(())
}

/// The commented file the setup wizard writes: every setting, with what it
/// does, so it can be edited later.
pub fn render(file: &DeploymentFile) -> String {
    let mut out = String::from(
        "# flowgate.toml: the deployment `flowgate`, `flowgate up` and the dashboard manage.\n\
         # Command-line flags override these values. Edit, then run `flowgate up` to apply.\n\n",
    );
    let quoted = |v: &str| toml::Value::String(v.into()).to_string();
    let number = |n: Option<u32>| n.map(|n| n.to_string());
    let profile = file
        .profile
        .map(|p| quoted(if p == Profile::Real { "real" } else { "demo" }));
    // (what it does, key, value when set, example shown when not)
    let entries: [(&str, &str, Option<String>, &str); 12] = [
        (
            "Names and labels every Docker object (like --project).",
            "project",
            file.project.as_deref().map(quoted),
            "\"flowgate\"",
        ),
        (
            "demo: flowgate's simulators (no registry, no licence); real: the Hazelcast images.",
            "profile",
            profile,
            "\"demo\"",
        ),
        (
            "The public host name of Flow; its certificate is issued for it.",
            "domain",
            file.domain.as_deref().map(quoted),
            "\"flow.example.com\"",
        ),
        (
            "The public host name of Management Center [default: mc.<domain>].",
            "mc_domain",
            file.mc_domain.as_deref().map(quoted),
            "\"mc.flow.example.com\"",
        ),
        (
            "How many Flow servers run behind the proxy.",
            "instances",
            number(file.instances),
            "3",
        ),
        (
            "Host ports the proxy publishes (ACME's HTTP-01 needs 80 reachable from the internet).",
            "http_port",
            number(file.http_port.map(u32::from)),
            "80",
        ),
        ("", "https_port", number(file.https_port.map(u32::from)), "443"),
        (
            "The address the ports are published on [default: 127.0.0.1 for the demo, 0.0.0.0 for real].",
            "bind",
            file.bind.map(|b| quoted(&b.to_string())),
            "\"0.0.0.0\"",
        ),
        (
            "auto: a new Flow instance gets sessions moved onto it (1012, clients reconnect); manual: `flowgate rebalance` or `b`.",
            "rebalance",
            file.rebalance.map(|r| {
                quoted(match r {
                    crate::config::proxy::Rebalance::Auto => "auto",
                    crate::config::proxy::Rebalance::Manual => "manual",
                })
            }),
            "\"auto\"",
        ),
        (
            "single: containers on this Docker engine; swarm: services on the Docker Swarm this engine manages.",
            "engine",
            file.engine.map(|e| quoted(e.as_str())),
            "\"swarm\"",
        ),
        (
            "Tag of hazelcast/hazelcast-flow and hazelcast/management-center-flow (real profile).",
            "tag",
            file.tag.as_deref().map(quoted),
            "\"latest\"",
        ),
        (
            "Management Center's licence (real profile); MC_LICENSE in the environment or ./.env also works.",
            "mc_license",
            file.mc_license.as_deref().map(quoted),
            "\"...\"",
        ),
    ];
    for (comment, key, value, example) in entries {
        if !comment.is_empty() {
            out.push_str(&format!("# {comment}\n"));
        }
        match value {
            Some(v) => out.push_str(&format!("{key} = {v}\n\n")),
            None => out.push_str(&format!("# {key} = {example}\n\n")),
        }
    }
    let tls = file.tls.clone().unwrap_or_default();
    out.push_str(
        "[tls]\n# self-signed (a local CA; clients trust its ca.pem), acme-staging, acme-production (Let's Encrypt) or files.\n",
    );
    out.push_str(&format!("mode = {}\n", quoted(tls.mode.as_str())));
    out.push_str("# Contact for the ACME account (expiry notices).\n");
    match &tls.email {
        Some(e) => out.push_str(&format!("email = {}\n", quoted(e))),
        None => out.push_str("# email = \"ops@example.com\"\n"),
    }
    out.push_str("# With mode = \"files\": the chain (server certificate first) and its key.\n");
    match (&tls.cert, &tls.key) {
        (Some(c), Some(k)) => out.push_str(&format!(
            "cert = {}\nkey = {}\n",
            quoted(&c.display().to_string()),
            quoted(&k.display().to_string())
        )),
        _ => out.push_str("# cert = \"fullchain.pem\"\n# key = \"privkey.pem\"\n"),
    }
    out.push_str(
        "\n[resources]\n# Limits of flowgate's own containers (the proxy and the simulators); raise them for more sessions.\n",
    );
    let defaults = Resources::default();
    let memory_lines = [
        ("proxy_memory", file.resources.proxy_memory, defaults.proxy_memory),
        (
            "simulator_memory",
            file.resources.simulator_memory,
            defaults.simulator_memory,
        ),
    ];
    for (key, value, default) in memory_lines {
        match value {
            Some(v) => out.push_str(&format!("{key} = {}\n", quoted(&format_size(v)))),
            None => out.push_str(&format!("# {key} = {}\n", quoted(&format_size(default)))),
        }
    }
    let pids_lines = [
        ("proxy_pids", file.resources.proxy_pids, defaults.proxy_pids),
        ("simulator_pids", file.resources.simulator_pids, defaults.simulator_pids),
    ];
    for (key, value, default) in pids_lines {
        match value {
            Some(v) => out.push_str(&format!("{key} = {v}\n")),
            None => out.push_str(&format!("# {key} = {default}\n")),
        }
    }
    out.push_str("\n[keys]\n# The dashboard's keys; each action takes one character.\n");
    for action in KeyAction::ALL {
        let (name, what) = (action.name(), action.what());
        match file.keys.get(&action) {
            Some(k) => out.push_str(&format!("{name} = {}  # {what}\n", quoted(&k.to_string()))),
            None => out.push_str(&format!(
                "# {name} = {}  # {what}\n",
                quoted(&action.default_key().to_string())
            )),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_sets_nothing() {
        let file = parse("", None).unwrap();
        assert_eq!(file.domain, None);
        assert!(file.keys.is_empty());
    }

    #[test]
    fn the_rendered_file_reads_back_the_same() {
        let file = DeploymentFile {
            path: None,
            project: Some("prod".into()),
            profile: Some(Profile::Real),
            domain: Some("flow.example.com".into()),
            mc_domain: Some("mc.example.com".into()),
            instances: Some(4),
            http_port: Some(80),
            https_port: Some(443),
            tag: Some("6.0".into()),
            mc_license: None,
            tls: Some(TlsFile {
                mode: CertMode::AcmeProduction,
                email: Some("ops@example.com".into()),
                cert: None,
                key: None,
            }),
            bind: Some("10.0.0.5".parse().unwrap()),
            resources: ResourcesFile {
                proxy_memory: Some(2 << 30),
                proxy_pids: Some(4096),
                simulator_memory: None,
                simulator_pids: None,
            },
            rebalance: Some(crate::config::proxy::Rebalance::Auto),
            engine: Some(Engine::Swarm),
            keys: BTreeMap::from([(KeyAction::ScaleUp, 'a')]),
        };
        let text = render(&file);
        assert_eq!(parse(&text, None).unwrap(), file);
        // Unset values are shown commented out with an example.
        assert!(text.contains("# mc_license = "), "{text}");
        assert!(text.contains("# quit = \"q\""), "{text}");
    }

    #[test]
    fn errors_point_at_the_value() {
        let error = parse(
            "domain = \"flow.example.com\"\ninstances = 500\n",
            Some(Path::new("f.toml")),
        )
        .unwrap_err();
        assert_eq!(
            error.to_string().split(':').take(3).collect::<Vec<_>>(),
            ["f.toml", "2", "13"]
        );
        let error = parse("domain = \"https://x\"\n", None).unwrap_err();
        assert!(error.message.contains("not a host name"), "{error}");
        let error = parse("[resources]\nproxy_memory = \"12MiB\"\n", Some(Path::new("f.toml"))).unwrap_err();
        assert!(
            error.to_string().starts_with("f.toml:2:16: 12MiB is less than"),
            "{error}"
        );
        let error = parse("[resources]\nproxy_memory = \"1 TB\"\n", None).unwrap_err();
        assert!(error.message.contains("not a unit of size"), "{error}");
        let error = parse("[resources]\nsimulator_pids = 3\n", None).unwrap_err();
        assert!(error.message.contains("too few"), "{error}");
        let error = parse("bind = \"everywhere\"\n", None).unwrap_err();
        assert!(error.message.contains("not an IP address"), "{error}");
        let error = parse("[keys]\nscale = \"+\"\n", None).unwrap_err();
        assert!(error.to_string().contains("scale_up"), "{error}");
        let error = parse("[tls]\nmode = \"files\"\ncert = \"a.pem\"\n", None).unwrap_err();
        assert!(error.message.contains("needs both cert and key"), "{error}");
        let error = parse("[tls]\nmode = \"acme\"\n", None).unwrap_err();
        assert!(error.to_string().contains("acme-production"), "{error}");
        let error = parse("domian = \"x\"\n", None).unwrap_err();
        assert!(error.hint.is_some(), "{error}");
    }

    #[test]
    fn relative_certificate_paths_are_relative_to_the_file() {
        let file = parse(
            "[tls]\nmode = \"files\"\ncert = \"c.pem\"\nkey = \"/abs/k.pem\"\n",
            Some(Path::new("/etc/flowgate/flowgate.toml")),
        )
        .unwrap();
        let tls = file.tls.unwrap();
        assert_eq!(tls.cert.unwrap(), Path::new("/etc/flowgate/c.pem"));
        assert_eq!(tls.key.unwrap(), Path::new("/abs/k.pem"));
    }

    #[test]
    fn project_names_fit_docker() {
        assert!(check_project("flow-prod_2").is_ok());
        assert!(check_project("Flow").is_err());
        assert!(check_project("-x").is_err());
        assert!(check_project("").is_err());
    }
}
