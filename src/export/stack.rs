//! A stack file for `docker stack deploy`: the services `flowgate up
//! --swarm` makes, written from the same Swarm service specs, so the two
//! cannot drift apart. The files a task reads (proxy.toml, hazelcast.yml,
//! the admin token, the database password) are the stack's configs and
//! secrets, read from files beside the stack file.

use std::fmt::Write as _;
use std::path::Path;

use bollard::models::{
    EndpointPortConfigPublishModeEnum, MountType, ServiceSpec, ServiceSpecUpdateConfigOrderEnum,
    TaskSpecRestartPolicyConditionEnum,
};

use super::compose::quote;
use super::{File, MARKER, Source};
use crate::config::deployment::Engine;
use crate::deploy::plan::Role;
use crate::deploy::settings::{self, Deployment};
use crate::deploy::swarm::{self, Content, Kind, Reference, References};

/// The file a stack's secret or config is read from, beside the stack file.
fn local_file(reference: &Reference) -> String {
    match &reference.wanted.content {
        Content::AdminToken => "./admin-token".into(),
        Content::Secret(_) => {
            let name = Path::new(&reference.wanted.target).file_name();
            format!("./{}", name.and_then(|n| n.to_str()).unwrap_or("secret"))
        }
        Content::HostFile(path) => path.clone(),
    }
}

/// The node label that pins PostgreSQL (its data is a volume on that node).
pub const POSTGRES_NODE_LABEL: &str = "io.flowgate.postgres";

/// docker-stack.yml, with proxy.toml and (real profile) hazelcast.yml.
pub fn files(source: &Source) -> Vec<File> {
    let dep = Deployment {
        engine: Engine::Swarm,
        // One spec of each role is its service's template, even at 0 instances.
        instances: source.deployment.instances.max(1),
        ..source.deployment.clone()
    };
    let names = dep.names();
    let specs = match source.real() {
        Some(real) => settings::real_specs(&dep, &source.image, &real, Path::new(".")),
        None => settings::demo_specs(&dep, &source.image, Path::new(".")),
    };
    let references = References(
        swarm::files_wanted(&specs)
            .into_iter()
            .map(|wanted| Reference {
                name: wanted.stem().to_string(),
                id: String::new(),
                wanted,
            })
            .collect(),
    );
    let services: Vec<ServiceSpec> = [Role::Postgres, Role::Proxy, Role::Flow, Role::Mc]
        .into_iter()
        .filter_map(|role| specs.iter().find(|s| s.role == role))
        .map(|spec| {
            let replicas = if spec.role == Role::Flow {
                u64::from(source.deployment.instances)
            } else {
                1
            };
            let placement = match spec.role {
                Role::Proxy => vec!["node.role == manager".to_string()],
                Role::Postgres => vec![format!("node.labels.{POSTGRES_NODE_LABEL} == true")],
                _ => Vec::new(),
            };
            swarm::service_spec(&names, spec, replicas, &placement, &references)
        })
        .collect();
    let mut text = header(source, &dep);
    text.push_str("services:\n");
    for service in &services {
        write_service(&mut text, service);
    }
    let _ = write!(
        text,
        "networks:\n  default:\n    name: {}\n    driver: overlay\n    attachable: true\n",
        quote(&names.network())
    );
    let volumes: std::collections::BTreeSet<String> = services
        .iter()
        .flat_map(|s| container(s).mounts.clone().unwrap_or_default())
        .filter(|m| m.typ == Some(MountType::VOLUME))
        .filter_map(|m| m.source)
        .collect();
    if !volumes.is_empty() {
        // Labelled as flowgate labels what it makes, so `flowgate down --volumes` knows them.
        text.push_str("volumes:\n");
        for volume in &volumes {
            let _ = writeln!(
                text,
                "  {volume}:\n    name: {}\n    labels:\n      {}: {}",
                quote(volume),
                quote(crate::deploy::plan::LABEL_PROJECT),
                quote(&dep.project)
            );
        }
    }
    for (kind, key) in [(Kind::Secret, "secrets"), (Kind::Config, "configs")] {
        let of_kind: std::collections::BTreeMap<&str, String> = references
            .0
            .iter()
            .filter(|r| r.wanted.kind == kind)
            .map(|r| (r.name.as_str(), local_file(r)))
            .collect();
        if !of_kind.is_empty() {
            let _ = writeln!(text, "{key}:");
            for (name, file) in of_kind {
                let _ = writeln!(text, "  {name}:\n    file: {}", quote(&file));
            }
        }
    }
    // docker stack reads no .env: the shell's environment holds the secrets.
    let text = text
        .replace("set MC_LICENSE in .env", "export MC_LICENSE in the shell")
        .replace("set POSTGRES_PASSWORD in .env", "export POSTGRES_PASSWORD in the shell");
    let mut files = vec![
        File {
            name: "docker-stack.yml",
            text,
        },
        File {
            name: "proxy.toml",
            text: settings::swarm_proxy_toml(&dep),
        },
    ];
    if source.real().is_some() {
        let hazelcast = settings::hazelcast_yml(&dep, None).replacen(
            "# Written by flowgate",
            &format!("# Written by `{MARKER} stack`"),
            1,
        );
        files.push(File {
            name: "hazelcast.yml",
            text: hazelcast,
        });
    }
    files
}

fn header(source: &Source, dep: &Deployment) -> String {
    let mut lines = vec![
        format!(
            "Written by `{MARKER} stack` for project {}: {} Flow instances behind flowgate's proxy on Docker Swarm,",
            dep.project, dep.instances
        ),
        format!(
            "Flow on {}, Management Center on {}.",
            dep.flow_origin(),
            dep.mc_origin()
        ),
        format!(
            "The proxy publishes {} and {} in host mode on every address of its node (a manager): Swarm binds no single address.",
            dep.http_port, dep.https_port
        ),
        "Before the first deploy, beside this file: openssl rand -hex 32 > admin-token".into(),
    ];
    if source.real().is_some() {
        lines.push(format!(
            "and label PostgreSQL's node: docker node update --label-add {POSTGRES_NODE_LABEL}=true NODE;"
        ));
        lines.push(
            "printf %s \"$POSTGRES_PASSWORD\" > db-password; export MC_LICENSE and POSTGRES_PASSWORD (docker stack reads no .env)."
                .into(),
        );
    }
    lines.push(format!(
        "Start: docker stack deploy -c docker-stack.yml {0}; stop: docker stack rm {0}.",
        dep.project
    ));
    lines.push("The image must be on every node (docker save IMAGE | docker -H NODE load) or in a registry.".into());
    lines.push("Regenerate rather than edit: changes here are lost on the next export.".into());
    lines.iter().map(|l| format!("# {l}\n")).collect()
}

fn container(service: &ServiceSpec) -> &bollard::models::TaskSpecContainerSpec {
    static EMPTY: std::sync::OnceLock<bollard::models::TaskSpecContainerSpec> = std::sync::OnceLock::new();
    service
        .task_template
        .as_ref()
        .and_then(|t| t.container_spec.as_ref())
        .unwrap_or_else(|| EMPTY.get_or_init(Default::default))
}

/// Nanoseconds as a compose duration.
fn duration(nanos: i64) -> String {
    let millis = nanos / 1_000_000;
    if millis % 1000 == 0 {
        format!("{}s", millis / 1000)
    } else {
        format!("{millis}ms")
    }
}

fn list(out: &mut String, indent: &str, key: &str, items: &[String]) {
    if items.is_empty() {
        return;
    }
    let _ = writeln!(out, "{indent}{key}:");
    for item in items {
        let _ = writeln!(out, "{indent}  - {}", quote(item));
    }
}

fn map<'a>(out: &mut String, indent: &str, key: &str, items: impl IntoIterator<Item = (&'a String, &'a String)>) {
    let mut items: Vec<_> = items.into_iter().collect();
    if items.is_empty() {
        return;
    }
    items.sort();
    let _ = writeln!(out, "{indent}{key}:");
    for (k, v) in items {
        let _ = writeln!(out, "{indent}  {}: {}", quote(k), quote(v));
    }
}

fn write_service(out: &mut String, service: &ServiceSpec) {
    let c = container(service);
    let task = service.task_template.clone().unwrap_or_default();
    let name = service.name.clone().unwrap_or_default();
    let _ = writeln!(out, "  {name}:");
    let _ = writeln!(out, "    image: {}", quote(c.image.as_deref().unwrap_or_default()));
    list(out, "    ", "command", c.args.as_deref().unwrap_or_default());
    list(out, "    ", "environment", c.env.as_deref().unwrap_or_default());
    if let Some(user) = &c.user {
        let _ = writeln!(out, "    user: {}", quote(user));
    }
    if c.read_only == Some(true) {
        out.push_str("    read_only: true\n");
    }
    list(
        out,
        "    ",
        "cap_drop",
        c.capability_drop.as_deref().unwrap_or_default(),
    );
    if let Some(sysctls) = &c.sysctls {
        map(out, "    ", "sysctls", sysctls);
    }
    if let Some(labels) = &c.labels {
        map(out, "    ", "labels", labels);
    }
    if let Some(grace) = c.stop_grace_period {
        let _ = writeln!(out, "    stop_grace_period: {}", duration(grace));
    }
    let mounts = c.mounts.clone().unwrap_or_default();
    if !mounts.is_empty() {
        out.push_str("    volumes:\n");
        for m in mounts {
            let target = quote(m.target.as_deref().unwrap_or_default());
            match m.typ {
                Some(MountType::TMPFS) => {
                    let size = m.tmpfs_options.and_then(|t| t.size_bytes).unwrap_or(0);
                    let _ = writeln!(
                        out,
                        "      - type: tmpfs\n        target: {target}\n        tmpfs:\n          size: {size}"
                    );
                }
                typ => {
                    let typ = if typ == Some(MountType::BIND) { "bind" } else { "volume" };
                    let source = quote(m.source.as_deref().unwrap_or_default());
                    let read_only = m.read_only.unwrap_or(false);
                    let _ = writeln!(
                        out,
                        "      - type: {typ}\n        source: {source}\n        target: {target}\n        read_only: {read_only}"
                    );
                }
            }
        }
    }
    let files = c
        .secrets
        .iter()
        .flatten()
        .map(|s| (s.secret_name.clone(), s.file.clone().map(|f| (f.name, f.uid, f.mode))))
        .map(|(name, file)| ("secrets", name, file.unwrap_or_default()));
    let configs = c
        .configs
        .iter()
        .flatten()
        .map(|s| (s.config_name.clone(), s.file.clone().map(|f| (f.name, f.uid, f.mode))))
        .map(|(name, file)| ("configs", name, file.unwrap_or_default()));
    let mut said = None;
    for (key, name, (target, uid, mode)) in files.chain(configs) {
        let mode = mode.unwrap_or(0o444);
        if said != Some(key) {
            let _ = writeln!(out, "    {key}:");
            said = Some(key);
        }
        let uid = quote(uid.as_deref().unwrap_or("0"));
        let _ = writeln!(
            out,
            // Decimal: YAML 1.2 reads 0400 as four hundred.
            "      - source: {}\n        target: {}\n        uid: {uid}\n        gid: {uid}\n        mode: {mode} # 0{mode:o}",
            name.unwrap_or_default(),
            quote(target.as_deref().unwrap_or_default()),
        );
    }
    if let Some(check) = &c.health_check {
        let test: Vec<String> = check.test.clone().unwrap_or_default();
        let _ = writeln!(
            out,
            "    healthcheck:\n      test: {}\n      interval: {}\n      timeout: {}\n      retries: {}\n      start_period: {}",
            serde_json::to_string(&test).unwrap_or_default(),
            duration(check.interval.unwrap_or(0)),
            duration(check.timeout.unwrap_or(0)),
            check.retries.unwrap_or(3),
            duration(check.start_period.unwrap_or(0)),
        );
    }
    let ports = service
        .endpoint_spec
        .as_ref()
        .and_then(|e| e.ports.clone())
        .unwrap_or_default();
    if !ports.is_empty() {
        out.push_str("    ports:\n");
        for p in ports {
            let mode = if p.publish_mode == Some(EndpointPortConfigPublishModeEnum::HOST) {
                "host"
            } else {
                "ingress"
            };
            let _ = writeln!(
                out,
                "      - target: {}\n        published: {}\n        protocol: tcp\n        mode: {mode}",
                p.target_port.unwrap_or(0),
                p.published_port.unwrap_or(0)
            );
        }
    }
    out.push_str("    deploy:\n      mode: replicated\n");
    let replicas = service
        .mode
        .as_ref()
        .and_then(|m| m.replicated.as_ref())
        .and_then(|r| r.replicas)
        .unwrap_or(1);
    let _ = writeln!(out, "      replicas: {replicas}\n      endpoint_mode: dnsrr");
    if let Some(labels) = &service.labels {
        map(out, "      ", "labels", labels);
    }
    let constraints = task.placement.and_then(|p| p.constraints).unwrap_or_default();
    if !constraints.is_empty() {
        out.push_str("      placement:\n");
        list(out, "        ", "constraints", &constraints);
    }
    if let Some(limits) = task.resources.and_then(|r| r.limits) {
        let mut lines = String::new();
        if let Some(memory) = limits.memory_bytes {
            let _ = writeln!(lines, "          memory: \"{memory}b\"");
        }
        if let Some(pids) = limits.pids {
            let _ = writeln!(lines, "          pids: {pids}");
        }
        if !lines.is_empty() {
            let _ = write!(out, "      resources:\n        limits:\n{lines}");
        }
    }
    if let Some(restart) = task.restart_policy {
        let condition = match restart.condition {
            Some(TaskSpecRestartPolicyConditionEnum::ON_FAILURE) => "on-failure",
            Some(TaskSpecRestartPolicyConditionEnum::NONE) => "none",
            _ => "any",
        };
        let _ = writeln!(
            out,
            "      restart_policy:\n        condition: {condition}\n        delay: {}",
            duration(restart.delay.unwrap_or(0))
        );
    }
    if let Some(update) = &service.update_config {
        let order = if update.order == Some(ServiceSpecUpdateConfigOrderEnum::STOP_FIRST) {
            "stop-first"
        } else {
            "start-first"
        };
        let _ = writeln!(
            out,
            "      update_config:\n        parallelism: {}\n        delay: {}\n        failure_action: rollback\n        monitor: {}\n        order: {order}",
            update.parallelism.unwrap_or(1),
            duration(update.delay.unwrap_or(0)),
            duration(update.monitor.unwrap_or(0)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::deployment::Profile;

    fn stack(profile: Profile) -> Vec<File> {
        files(&super::super::tests::source(profile))
    }

    #[test]
    fn the_stack_holds_the_services_up_makes_with_their_files_as_configs_and_secrets() {
        let files = stack(Profile::Real);
        let names: Vec<&str> = files.iter().map(|f| f.name).collect();
        assert_eq!(names, ["docker-stack.yml", "proxy.toml", "hazelcast.yml"]);
        let text = &files[0].text;
        for service in ["prod-postgres", "prod-proxy", "prod-flow", "prod-mc"] {
            assert!(text.contains(&format!("\n  {service}:\n")), "{service}: {text}");
        }
        assert!(text.contains("replicas: 3\n      endpoint_mode: dnsrr"), "{text}");
        assert!(text.contains("mode: host"), "{text}");
        assert!(text.contains("\"node.labels.io.flowgate.postgres == true\""), "{text}");
        assert!(
            text.contains("target: \"/run/secrets/flowgate/db-password\"\n        uid: \"999\""),
            "{text}"
        );
        assert!(
            text.contains("target: \"/run/secrets/admin-token\"\n        uid: \"65532\""),
            "{text}"
        );
        assert!(text.contains("target: \"/opt/flowgate/hazelcast.yml\""), "{text}");
        assert!(
            text.contains(
                "secrets:\n  admin-token:\n    file: \"./admin-token\"\n  db-password:\n    file: \"./db-password\""
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "configs:\n  hazelcast:\n    file: \"./hazelcast.yml\"\n  proxy:\n    file: \"./proxy.toml\""
            ),
            "{text}"
        );
        assert!(text.contains("mode: 256 # 0400"), "{text}");
        // One hazelcast.yml for the Flow service, however many instances.
        assert_eq!(
            text.matches("target: \"/opt/flowgate/hazelcast.yml\"").count(),
            1,
            "{text}"
        );
        // Secrets stay out of the file: interpolated from the shell, or files beside it.
        assert!(
            text.contains("${MC_LICENSE:?") && text.contains("FLOW_DB_PASSWORD=${POSTGRES_PASSWORD:?"),
            "{text}"
        );
        assert!(!text.contains("prod-secrets"), "{text}");
        assert!(
            text.contains(
                "  prod-pgdata:\n    name: \"prod-pgdata\"\n    labels:\n      \"io.flowgate.project\": \"prod\""
            ),
            "{text}"
        );
        assert!(files[2].text.contains("- tasks.prod-flow:25701"), "{}", files[2].text);
        assert!(files[1].text.contains("tasks.prod-flow"), "{}", files[1].text);
    }

    #[test]
    fn the_demo_stack_names_its_simulators_by_slot_and_confines_them() {
        let text = &stack(Profile::Demo)[0].text;
        assert!(
            text.contains("FLOWGATE_SIM_NAME={{.Service.Name}}-{{.Task.Slot}}"),
            "{text}"
        );
        assert!(text.contains("cap_drop:\n      - \"ALL\""), "{text}");
        assert!(text.contains("read_only: true"), "{text}");
        assert!(
            text.contains("healthcheck:\n      test: [\"CMD\",\"/usr/local/bin/flowgate\",\"probe\""),
            "{text}"
        );
        assert!(!text.contains("postgres"), "{text}");
    }
}
