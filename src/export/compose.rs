//! docker-compose files: flowgate's proxy in front, or Traefik, or nginx.
//! Each service is a [`Service`] made from the same container specs `up`
//! uses, written as YAML with JSON-quoted strings (no YAML library); the
//! fixed texts around them are templates in `assets/templates/`.

use std::path::Path;

use super::{File, MARKER, Source, certificate_paths, real_profile_files};
use crate::config::deployment::CertMode;
use crate::deploy::plan::Role;
use crate::deploy::settings::{self, Confinement, ContainerSpec, FLOW_PORT, MC_PORT, STATE_IN_CONTAINER};
use crate::template;

/// One service of a compose file.
#[derive(Debug, Default)]
pub struct Service {
    pub name: String,
    pub image: String,
    pub command: Vec<String>,
    pub environment: Vec<String>,
    pub ports: Vec<String>,
    pub volumes: Vec<String>,
    pub labels: Vec<(String, String)>,
    /// Services that must be healthy before this one starts.
    pub after_healthy: Vec<String>,
    pub healthcheck: Option<Vec<String>>,
    /// As `up` confines the container (user, capabilities, read-only root,
    /// limits); every service gets no-new-privileges.
    pub confinement: Confinement,
}

impl Service {
    fn from_spec(spec: &ContainerSpec) -> Service {
        // A compose file cannot put a file into a volume before a service
        // starts: the secrets come from the environment (interpolated from
        // .env) instead, and their volume is not needed.
        let mut environment = spec.env.clone();
        let mut volumes = spec.binds.clone();
        for secret in &spec.secrets {
            environment.retain(|e| !e.ends_with(&format!("={}", secret.path())));
            volumes.retain(|v| !v.contains(&format!(":{}", secret.dir)));
            if let Some(env) = secret.env {
                environment.push(format!("{env}={}", secret.content));
            }
        }
        Service {
            name: spec.name.clone(),
            image: spec.image.clone(),
            command: spec.cmd.clone(),
            environment,
            ports: spec
                .ports
                .iter()
                .map(|p| match (p.host_ip.as_str(), p.host_port) {
                    ("0.0.0.0", port) => format!("{port}:{}", p.container),
                    (ip, 0) => format!("{ip}::{}", p.container),
                    (ip, port) => format!("{ip}:{port}:{}", p.container),
                })
                .collect(),
            volumes,
            healthcheck: spec.healthcheck.clone(),
            confinement: spec.confinement.clone(),
            ..Service::default()
        }
    }
}

/// JSON strings are YAML strings; `$` is doubled except where compose must
/// interpolate a secret.
pub(super) fn quote(text: &str) -> String {
    let escaped = text
        .replace('$', "$$")
        .replace("$${MC_LICENSE", "${MC_LICENSE")
        .replace("$${POSTGRES_PASSWORD", "${POSTGRES_PASSWORD");
    serde_json::to_string(&escaped).unwrap_or_default()
}

fn list(out: &mut String, key: &str, items: &[String]) {
    if items.is_empty() {
        return;
    }
    out.push_str(&format!("    {key}:\n"));
    for item in items {
        out.push_str(&format!("      - {}\n", quote(item)));
    }
}

/// The compose file: a header, the services, the project's network and
/// named volumes (named exactly, so `flowgate status`-style names hold).
pub fn render(header: &str, project: &str, services: &[Service], volumes: &[String]) -> String {
    let mut out = String::new();
    for line in header.lines() {
        out.push_str(&format!("# {line}\n"));
    }
    out.push_str("services:\n");
    for s in services {
        out.push_str(&format!("  {}:\n", s.name));
        out.push_str(&format!("    image: {}\n", quote(&s.image)));
        out.push_str(&format!("    container_name: {}\n", quote(&s.name)));
        out.push_str("    restart: unless-stopped\n");
        let c = &s.confinement;
        if let Some(user) = &c.user {
            out.push_str(&format!("    user: {}\n", quote(user)));
        }
        out.push_str("    security_opt:\n      - \"no-new-privileges:true\"\n");
        if c.drop_capabilities {
            out.push_str("    cap_drop:\n      - ALL\n");
        }
        if c.read_only_root {
            out.push_str("    read_only: true\n");
        }
        let tmpfs: Vec<String> = c
            .tmpfs
            .iter()
            .map(|(path, options)| format!("{path}:{options}"))
            .collect();
        list(&mut out, "tmpfs", &tmpfs);
        if let Some(memory) = c.memory_bytes {
            out.push_str(&format!("    mem_limit: {memory}\n    memswap_limit: {memory}\n"));
        }
        if let Some(pids) = c.pids {
            out.push_str(&format!("    pids_limit: {pids}\n"));
        }
        if !c.sysctls.is_empty() {
            out.push_str("    sysctls:\n");
            for (key, value) in &c.sysctls {
                out.push_str(&format!("      {key}: {}\n", quote(value)));
            }
        }
        list(&mut out, "command", &s.command);
        list(&mut out, "environment", &s.environment);
        list(&mut out, "ports", &s.ports);
        list(&mut out, "volumes", &s.volumes);
        if !s.labels.is_empty() {
            out.push_str("    labels:\n");
            for (k, v) in &s.labels {
                out.push_str(&format!("      {}: {}\n", quote(k), quote(v)));
            }
        }
        if !s.after_healthy.is_empty() {
            out.push_str("    depends_on:\n");
            for d in &s.after_healthy {
                out.push_str(&format!("      {d}:\n        condition: service_healthy\n"));
            }
        }
        if let Some(check) = &s.healthcheck {
            let test = settings::health_test(check);
            out.push_str(&format!(
                "    healthcheck:\n      test: {}\n      interval: 5s\n      timeout: 5s\n      retries: 20\n",
                serde_json::to_string(&test).unwrap_or_default()
            ));
        }
    }
    out.push_str(&format!(
        "networks:\n  default:\n    name: {}\n",
        quote(&format!("{project}-net"))
    ));
    if !volumes.is_empty() {
        out.push_str("volumes:\n");
        for v in volumes {
            out.push_str(&format!("  {v}:\n    name: {}\n", quote(v)));
        }
    }
    out
}

/// The Flow, MC and PostgreSQL services of the deployment (no front end).
fn backend_services(source: &Source) -> (Vec<Service>, Vec<String>) {
    let dep = &source.deployment;
    let names = dep.names();
    let specs = match source.real() {
        Some(real) => settings::real_specs(dep, &source.image, &real, Path::new(".")),
        None => settings::demo_specs(dep, &source.image, Path::new(".")),
    };
    let postgres = names.container(Role::Postgres, None);
    let mut services: Vec<Service> = specs
        .iter()
        .filter(|s| s.role != Role::Proxy)
        .map(|spec| {
            let mut service = Service::from_spec(spec);
            if spec.role == Role::Flow && source.real().is_some() {
                service.after_healthy.push(postgres.clone());
            }
            service
        })
        .collect();
    // PostgreSQL first, then the instances, then MC: the order they start in.
    services.sort_by_key(|s| {
        if s.name == postgres {
            0
        } else if s.name.contains("-flow-") {
            1
        } else {
            2
        }
    });
    let volumes = if source.real().is_some() {
        vec![names.postgres_volume()]
    } else {
        Vec::new()
    };
    (services, volumes)
}

fn header(source: &Source, kind: &str, front: &str) -> String {
    let dep = &source.deployment;
    let profile = if source.real().is_some() {
        format!("hazelcast-flow:{}", source.tag)
    } else {
        "flowgate's simulators".into()
    };
    let trust = if kind == "compose" && dep.tls.mode == CertMode::SelfSigned {
        format!(
            "\nBrowsers trust the proxy's local CA: docker cp {}-proxy:{STATE_IN_CONTAINER}/ca.pem .",
            dep.project
        )
    } else {
        String::new()
    };
    template::COMPOSE_HEADER.render(&[
        ("marker", MARKER),
        ("kind", kind),
        ("project", &dep.project),
        ("instances", &dep.instances.to_string()),
        ("profile", &profile),
        ("front", front),
        ("flow_origin", &dep.flow_origin()),
        ("mc_origin", &dep.mc_origin()),
        ("trust", &trust),
    ])
}

/// flowgate's proxy in front: the same containers `flowgate up` makes, with
/// the instances listed in the proxy's file instead of registered live.
pub fn flowgate(source: &Source) -> Vec<File> {
    let dep = &source.deployment;
    let names = dep.names();
    let specs = settings::demo_specs(dep, &source.image, Path::new("."));
    let mut proxy = Service::from_spec(&specs[0]);
    // Only the change detection of `up` reads this variable.
    proxy.environment.clear();
    let (mut services, mut volumes) = backend_services(source);
    services.push(proxy);
    volumes.insert(0, names.certificates_volume());
    let mut files = vec![
        File {
            name: "docker-compose.yml",
            text: render(
                &header(source, "compose", "flowgate's proxy"),
                &dep.project,
                &services,
                &volumes,
            ),
        },
        File {
            name: "proxy.toml",
            text: settings::standalone_proxy_toml(dep),
        },
    ];
    files.extend(real_profile_files(source));
    files
}

/// Traefik in front, configured by labels on the Flow and MC containers
/// and by flags for the entrypoints, the redirect and the ACME resolver.
pub fn traefik(source: &Source) -> Vec<File> {
    let dep = &source.deployment;
    let names = dep.names();
    let project = &dep.project;
    let (mut services, mut volumes) = backend_services(source);
    let acme = matches!(dep.tls.mode, CertMode::AcmeProduction | CertMode::AcmeStaging);
    let router_labels = |router: &str, host: &str, port: u16| {
        let mut labels = vec![
            ("traefik.enable".to_string(), "true".to_string()),
            (format!("traefik.http.routers.{router}.rule"), format!("Host(`{host}`)")),
            (format!("traefik.http.routers.{router}.entrypoints"), "websecure".into()),
            (format!("traefik.http.routers.{router}.tls"), "true".into()),
            (
                format!("traefik.http.routers.{router}.middlewares"),
                format!("{project}-forwarded"),
            ),
            (
                format!("traefik.http.middlewares.{project}-forwarded.headers.customrequestheaders.X-Forwarded-Proto"),
                "https".into(),
            ),
            (
                format!("traefik.http.middlewares.{project}-forwarded.headers.customrequestheaders.X-Forwarded-Port"),
                dep.https_port.to_string(),
            ),
            (
                format!("traefik.http.services.{router}.loadbalancer.server.port"),
                port.to_string(),
            ),
        ];
        if acme {
            labels.push((
                format!("traefik.http.routers.{router}.tls.certresolver"),
                "letsencrypt".into(),
            ));
        }
        labels
    };
    for service in &mut services {
        if service.name.contains("-flow-") {
            service.labels = router_labels(&format!("{project}-flow"), &dep.domain, FLOW_PORT);
            service.labels.push((
                format!("traefik.http.services.{project}-flow.loadbalancer.healthcheck.path"),
                crate::config::proxy::FLOW_HEALTH_PATH.into(),
            ));
        } else if service.name == names.container(Role::Mc, None) {
            service.labels = router_labels(&format!("{project}-mc"), &dep.mc_domain, MC_PORT);
        }
    }
    let mut command: Vec<String> = [
        "--providers.docker=true",
        "--providers.docker.exposedbydefault=false",
        "--entrypoints.web.address=:80",
        "--entrypoints.web.http.redirections.entrypoint.to=websecure",
        "--entrypoints.web.http.redirections.entrypoint.scheme=https",
        "--entrypoints.websecure.address=:443",
        // WebSockets: no read deadline, and idle connections kept well past the heartbeat.
        "--entrypoints.websecure.transport.respondingtimeouts.readtimeout=0",
        "--entrypoints.websecure.transport.respondingtimeouts.idletimeout=3600s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    command.push(format!("--providers.docker.network={project}-net"));
    let mut traefik_volumes = vec!["/var/run/docker.sock:/var/run/docker.sock:ro".to_string()];
    if acme {
        let letsencrypt = format!("{project}-letsencrypt");
        command.push(format!(
            "--certificatesresolvers.letsencrypt.acme.email={}",
            dep.tls.email.clone().unwrap_or_default()
        ));
        command.push("--certificatesresolvers.letsencrypt.acme.storage=/letsencrypt/acme.json".into());
        command.push("--certificatesresolvers.letsencrypt.acme.httpchallenge.entrypoint=web".into());
        if dep.tls.mode == CertMode::AcmeStaging {
            command.push(
                "--certificatesresolvers.letsencrypt.acme.caserver=https://acme-staging-v02.api.letsencrypt.org/directory"
                    .into(),
            );
        }
        traefik_volumes.push(format!("{letsencrypt}:/letsencrypt"));
        volumes.push(letsencrypt);
    }
    let mut extra = Vec::new();
    if dep.tls.mode == CertMode::Files {
        let (cert, key) = certificate_paths(source);
        command.push("--providers.file.filename=/etc/traefik/dynamic.yml".into());
        traefik_volumes.push("./dynamic.yml:/etc/traefik/dynamic.yml:ro".into());
        traefik_volumes.extend(certificate_binds(source));
        extra.push(File {
            name: "dynamic.yml",
            text: template::TRAEFIK_DYNAMIC.render(&[
                ("marker", MARKER),
                ("cert", &quote(&cert.display().to_string())),
                ("key", &quote(&key.display().to_string())),
            ]),
        });
    }
    services.push(Service {
        name: format!("{project}-traefik"),
        image: "traefik:v3.1".into(),
        command,
        ports: vec![format!("{}:80", dep.http_port), format!("{}:443", dep.https_port)],
        volumes: traefik_volumes,
        ..Service::default()
    });
    let mut files = vec![File {
        name: "docker-compose.yml",
        text: render(&header(source, "traefik", "Traefik"), project, &services, &volumes),
    }];
    files.extend(extra);
    files.extend(real_profile_files(source));
    files
}

/// The directories of the certificate and key, mounted where they are on
/// the host (so renewals there are seen).
fn certificate_binds(source: &Source) -> Vec<String> {
    let (cert, key) = certificate_paths(source);
    let mut binds = Vec::new();
    for path in [&cert, &key] {
        let dir = path.parent().unwrap_or(Path::new("/")).display().to_string();
        let bind = format!("{dir}:{dir}:ro");
        if !binds.contains(&bind) {
            binds.push(bind);
        }
    }
    binds
}

/// nginx in front: the compose file beside `nginx.conf`.
pub fn nginx(source: &Source, config_name: &str) -> String {
    let dep = &source.deployment;
    let (mut services, volumes) = backend_services(source);
    let mut binds = vec![format!("./{config_name}:/etc/nginx/nginx.conf:ro")];
    binds.extend(certificate_binds(source));
    services.push(Service {
        name: format!("{}-nginx", dep.project),
        image: "nginx:1.27".into(),
        ports: vec![format!("{0}:{0}", dep.http_port), format!("{0}:{0}", dep.https_port)],
        volumes: binds,
        ..Service::default()
    });
    render(&header(source, "nginx", "nginx"), &dep.project, &services, &volumes)
}

#[cfg(test)]
mod tests {
    use super::super::tests::source;
    use super::*;
    use crate::config::deployment::Profile;

    #[test]
    fn the_flowgate_compose_lists_every_instance_for_the_proxy() {
        let files = flowgate(&source(Profile::Demo));
        let names: Vec<&str> = files.iter().map(|f| f.name).collect();
        assert_eq!(names, ["docker-compose.yml", "proxy.toml"]);
        let proxy = crate::config::proxy::parse(&files[1].text, None).expect("a valid proxy.toml");
        let flow: Vec<&str> = proxy.services["flow"]
            .backends
            .iter()
            .map(|b| b.address.as_str())
            .collect();
        assert_eq!(flow, ["prod-flow-1:9021", "prod-flow-2:9021", "prod-flow-3:9021"]);
        assert!(proxy.admin_token_file.is_none());
        let compose = &files[0].text;
        assert!(
            compose.contains("\"./proxy.toml:/etc/flowgate/proxy.toml:ro\""),
            "{compose}"
        );
        assert!(
            compose.contains("\"80:80\"") && compose.contains("\"443:443\""),
            "{compose}"
        );
        assert!(!compose.contains("admin-token"), "{compose}");
        assert!(
            compose.contains("-Dhazelcast.mc.flow.addresses=https://flow.example.com"),
            "{compose}"
        );
    }

    #[test]
    fn traefik_labels_honour_every_rule() {
        let files = traefik(&source(Profile::Real));
        let compose = &files[0].text;
        for needle in [
            "\"traefik.http.routers.prod-flow.rule\": \"Host(`flow.example.com`)\"",
            "\"traefik.http.services.prod-flow.loadbalancer.server.port\": \"9021\"",
            "customrequestheaders.X-Forwarded-Proto\": \"https\"",
            "customrequestheaders.X-Forwarded-Port\": \"443\"",
            "\"traefik.http.routers.prod-flow.tls.certresolver\": \"letsencrypt\"",
            "redirections.entrypoint.scheme=https",
            "respondingtimeouts.readtimeout=0",
            "condition: service_healthy",
        ] {
            assert!(compose.contains(needle), "{needle} missing from\n{compose}");
        }
        assert!(files.iter().any(|f| f.name == "hazelcast.yml"));
    }

    #[test]
    fn dollars_are_escaped_except_the_secrets() {
        assert_eq!(quote("a$b"), "\"a$$b\"");
        assert_eq!(quote("MC_LICENSE=${MC_LICENSE:?x}"), "\"MC_LICENSE=${MC_LICENSE:?x}\"");
    }
}
