//! The deployment planner: what should exist, compared with what Docker
//! has (found by labels), gives an ordered list of actions. Pure: no Docker
//! here, so every case is a unit test. The executor carries the actions out
//! one by one, waiting for health after each container it starts, which is
//! what keeps at least one Flow instance serving through a rolling change.

use std::collections::BTreeMap;
use std::fmt;

/// Labels on every Docker object flowgate makes .
pub const LABEL_PROJECT: &str = "io.flowgate.project";
pub const LABEL_ROLE: &str = "io.flowgate.role";
pub const LABEL_INDEX: &str = "io.flowgate.index";
/// A hash of the container's settings: when it differs, the container is replaced.
pub const LABEL_CONFIG: &str = "io.flowgate.config";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Postgres,
    Proxy,
    Flow,
    Mc,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Postgres => "postgres",
            Role::Proxy => "proxy",
            Role::Flow => "flow",
            Role::Mc => "mc",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "postgres" => Some(Role::Postgres),
            "proxy" => Some(Role::Proxy),
            "flow" => Some(Role::Flow),
            "mc" => Some(Role::Mc),
            _ => None,
        }
    }
}

/// The names of one project's objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub project: String,
}

impl Names {
    pub fn network(&self) -> String {
        format!("{}-net", self.project)
    }

    /// `<project>-flow-<n>`, `<project>-proxy`, `<project>-mc`, `<project>-postgres`.
    pub fn container(&self, role: Role, index: Option<u32>) -> String {
        match index {
            Some(n) => format!("{}-{}-{n}", self.project, role.as_str()),
            None => format!("{}-{}", self.project, role.as_str()),
        }
    }

    /// The Swarm service of a role: `<project>-flow` runs every instance.
    pub fn service(&self, role: Role) -> String {
        format!("{}-{}", self.project, role.as_str())
    }

    pub fn certificates_volume(&self) -> String {
        format!("{}-certs", self.project)
    }

    pub fn postgres_volume(&self) -> String {
        format!("{}-pgdata", self.project)
    }

    /// PostgreSQL's password file (real profile).
    pub fn secrets_volume(&self) -> String {
        format!("{}-secrets", self.project)
    }

    /// The labels of an object of this project.
    pub fn labels(&self, role: Option<Role>, index: Option<u32>, config: Option<&str>) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::from([(LABEL_PROJECT.to_string(), self.project.clone())]);
        if let Some(role) = role {
            labels.insert(LABEL_ROLE.into(), role.as_str().into());
        }
        if let Some(index) = index {
            labels.insert(LABEL_INDEX.into(), index.to_string());
        }
        if let Some(config) = config {
            labels.insert(LABEL_CONFIG.into(), config.into());
        }
        labels
    }
}

/// One container the deployment should have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub role: Role,
    /// Flow instances are numbered from 1; the other roles have no index.
    pub index: Option<u32>,
    /// Hash of the container's settings (image, command, environment, ports).
    pub config: String,
}

/// A container of the project as Docker reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub name: String,
    pub role: Role,
    pub index: Option<u32>,
    pub config: String,
    pub running: bool,
}

impl Found {
    /// Reads a container's identity from its labels; None for objects that
    /// are not flowgate's (or not of a role it knows).
    pub fn from_labels(name: &str, labels: &BTreeMap<String, String>, running: bool) -> Option<Found> {
        let role = Role::parse(labels.get(LABEL_ROLE)?)?;
        let index = labels.get(LABEL_INDEX).and_then(|i| i.parse().ok());
        Some(Found {
            name: name.trim_start_matches('/').to_string(),
            role,
            index,
            config: labels.get(LABEL_CONFIG).cloned().unwrap_or_default(),
            running,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub names: Names,
    pub containers: Vec<Wanted>,
    pub volumes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    CreateNetwork(String),
    CreateVolume(String),
    /// Create and start the container, then wait until it is healthy (and,
    /// for Flow, register it with the proxy).
    Create(Wanted),
    /// Start an existing stopped container and wait until it is healthy.
    Start {
        name: String,
        role: Role,
        index: Option<u32>,
    },
    /// Drain (Flow), stop and remove the old container, then create the new.
    Replace {
        old: String,
        new: Wanted,
    },
    /// Drain (Flow), stop with a grace period, remove.
    Remove {
        name: String,
        role: Role,
        index: Option<u32>,
    },
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::CreateNetwork(name) => write!(f, "create network {name}"),
            Action::CreateVolume(name) => write!(f, "create volume {name}"),
            Action::Create(w) => match w.index {
                Some(n) => write!(f, "create {} {n}", w.role.as_str()),
                None => write!(f, "create {}", w.role.as_str()),
            },
            Action::Start { name, .. } => write!(f, "start {name}"),
            Action::Replace { old, .. } => write!(f, "replace {old} (settings changed)"),
            Action::Remove { name, .. } => write!(f, "remove {name}"),
        }
    }
}

/// The actions that turn `found` (plus the network and volumes that exist)
/// into `desired`, in the order to carry them out: network and volumes,
/// then the database, proxy, Flow instances (new ones, then one replacement
/// at a time) and MC, and last the removals, highest instance first. An
/// empty list means there is nothing to do.
pub fn plan(desired: &Desired, found: &[Found], network_exists: bool, volumes: &[String]) -> Vec<Action> {
    let mut actions = Vec::new();
    if !network_exists {
        actions.push(Action::CreateNetwork(desired.names.network()));
    }
    for volume in &desired.volumes {
        if !volumes.contains(volume) {
            actions.push(Action::CreateVolume(volume.clone()));
        }
    }
    let mut wanted: Vec<&Wanted> = desired.containers.iter().collect();
    wanted.sort_by_key(|w| (w.role, w.index));
    let mut replacements = Vec::new();
    for want in wanted {
        let existing = found.iter().find(|f| f.role == want.role && f.index == want.index);
        match existing {
            None => actions.push(Action::Create(want.clone())),
            Some(f) if f.config != want.config => {
                let replace = Action::Replace {
                    old: f.name.clone(),
                    new: want.clone(),
                };
                // Flow replacements go after every other change, one by one.
                if want.role == Role::Flow {
                    replacements.push(replace);
                } else {
                    actions.push(replace);
                }
            }
            Some(f) if !f.running => actions.push(Action::Start {
                name: f.name.clone(),
                role: f.role,
                index: f.index,
            }),
            Some(_) => {}
        }
    }
    actions.extend(replacements);
    let mut surplus: Vec<&Found> = found
        .iter()
        .filter(|f| {
            !desired
                .containers
                .iter()
                .any(|w| w.role == f.role && w.index == f.index)
        })
        .collect();
    surplus.sort_by_key(|f| (std::cmp::Reverse(f.index), f.role));
    for f in surplus {
        actions.push(Action::Remove {
            name: f.name.clone(),
            role: f.role,
            index: f.index,
        });
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Names {
        Names { project: "demo".into() }
    }

    fn desired(instances: u32, flow_config: &str) -> Desired {
        let mut containers = vec![Wanted {
            role: Role::Proxy,
            index: None,
            config: "p".into(),
        }];
        containers.extend((1..=instances).map(|n| Wanted {
            role: Role::Flow,
            index: Some(n),
            config: flow_config.into(),
        }));
        containers.push(Wanted {
            role: Role::Mc,
            index: None,
            config: "m".into(),
        });
        Desired {
            names: names(),
            containers,
            volumes: vec!["demo-certs".into()],
        }
    }

    /// What Docker would hold after `desired` was carried out.
    fn found_for(d: &Desired) -> Vec<Found> {
        d.containers
            .iter()
            .map(|w| Found {
                name: d.names.container(w.role, w.index),
                role: w.role,
                index: w.index,
                config: w.config.clone(),
                running: true,
            })
            .collect()
    }

    fn shown(actions: &[Action]) -> Vec<String> {
        actions.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn an_empty_engine_gets_everything_in_order() {
        let actions = plan(&desired(2, "f"), &[], false, &[]);
        assert_eq!(
            shown(&actions),
            [
                "create network demo-net",
                "create volume demo-certs",
                "create proxy",
                "create flow 1",
                "create flow 2",
                "create mc"
            ]
        );
    }

    #[test]
    fn up_twice_does_nothing() {
        let d = desired(3, "f");
        assert!(plan(&d, &found_for(&d), true, &["demo-certs".into()]).is_empty());
    }

    #[test]
    fn scaling_up_creates_only_the_new_instances() {
        let before = found_for(&desired(3, "f"));
        assert_eq!(
            shown(&plan(&desired(5, "f"), &before, true, &["demo-certs".into()])),
            ["create flow 4", "create flow 5"]
        );
    }

    #[test]
    fn scaling_down_removes_the_highest_instances_first() {
        let before = found_for(&desired(5, "f"));
        assert_eq!(
            shown(&plan(&desired(2, "f"), &before, true, &["demo-certs".into()])),
            ["remove demo-flow-5", "remove demo-flow-4", "remove demo-flow-3"]
        );
    }

    #[test]
    fn changed_settings_replace_flow_instances_one_at_a_time_after_other_work() {
        let before = found_for(&desired(2, "old"));
        let actions = plan(&desired(3, "new"), &before, true, &["demo-certs".into()]);
        assert_eq!(
            shown(&actions),
            [
                "create flow 3",
                "replace demo-flow-1 (settings changed)",
                "replace demo-flow-2 (settings changed)"
            ]
        );
    }

    #[test]
    fn stopped_containers_are_started() {
        let d = desired(2, "f");
        let mut found = found_for(&d);
        found[1].running = false;
        assert_eq!(
            shown(&plan(&d, &found, true, &["demo-certs".into()])),
            ["start demo-flow-1"]
        );
    }

    #[test]
    fn labels_round_trip() {
        let n = names();
        let labels = n.labels(Some(Role::Flow), Some(7), Some("abc"));
        let found = Found::from_labels("/demo-flow-7", &labels, true).unwrap();
        assert_eq!(
            found,
            Found {
                name: "demo-flow-7".into(),
                role: Role::Flow,
                index: Some(7),
                config: "abc".into(),
                running: true
            }
        );
        assert_eq!(n.container(Role::Flow, Some(7)), "demo-flow-7");
        assert_eq!(n.container(Role::Proxy, None), "demo-proxy");
        let foreign = BTreeMap::from([(LABEL_ROLE.to_string(), "database".to_string())]);
        assert!(Found::from_labels("x", &foreign, true).is_none());
    }
}
