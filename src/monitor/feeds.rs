//! The feeds: tasks that watch Docker and the proxy and send [`Feed`]
//! messages down one channel. They never block the receiver; a slow
//! receiver makes stats samples drop, never the dashboard wait.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::{EventsOptionsBuilder, StatsOptionsBuilder};
use futures_util::StreamExt;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;

use super::{ContainerInfo, Feed};
use crate::clock::{now_ms, parse_rfc3339};
use crate::deploy::DeployError;
use crate::deploy::engine;
use crate::deploy::plan::{LABEL_PROJECT, Names};
use crate::deploy::settings::{self, Deployment};
use crate::proxy::client::AdminClient;

/// The running feed tasks; dropping this stops them.
pub struct Feeds {
    tasks: Vec<JoinHandle<()>>,
    sessions_of: watch::Sender<Option<String>>,
    /// The deployment's settings, from the proxy's label, once known.
    pub deployment: watch::Receiver<Option<Deployment>>,
}

impl Drop for Feeds {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Feeds {
    /// Which instance's WebSocket sessions to fetch (None: no sessions).
    pub fn watch_sessions(&self, instance: Option<String>) {
        self.sessions_of.send_if_modified(|current| {
            let changed = *current != instance;
            *current = instance;
            changed
        });
    }
}

/// Starts every feed of `project`.
pub fn start(docker: Docker, project: &str, tx: mpsc::Sender<Feed>) -> Feeds {
    let refresh = std::sync::Arc::new(Notify::new());
    let (sessions_of, sessions_rx) = watch::channel(None);
    let (deployment_tx, deployment) = watch::channel(None);
    let tasks = vec![
        tokio::spawn(containers(
            docker.clone(),
            project.to_string(),
            tx.clone(),
            refresh.clone(),
            deployment_tx,
        )),
        tokio::spawn(docker_events(docker.clone(), project.to_string(), tx.clone(), refresh)),
        tokio::spawn(admin_poll(docker.clone(), project.to_string(), tx.clone(), sessions_rx)),
        tokio::spawn(proxy_events(docker, project.to_string(), tx)),
    ];
    Feeds {
        tasks,
        sessions_of,
        deployment,
    }
}

/// Lists the project's containers every few seconds (and at once after a
/// Docker event), and keeps one stats stream per running container.
async fn containers(
    docker: Docker,
    project: String,
    tx: mpsc::Sender<Feed>,
    refresh: std::sync::Arc<Notify>,
    deployment: watch::Sender<Option<Deployment>>,
) {
    let mut stats: HashMap<String, JoinHandle<()>> = HashMap::new();
    // Inspecting is what gives restarts and start times: done for new or
    // changed containers only.
    let mut known: BTreeMap<String, (String, ContainerInfo)> = BTreeMap::new();
    let mut forced = true;
    loop {
        if let Ok(list) = engine::list(&docker, &project).await {
            let on_swarm = list.iter().any(|l| l.node.is_some());
            let mut infos = Vec::new();
            for listed in &list {
                let (found, name) = (&listed.found, listed.found.name.as_str());
                let state = listed.state.clone();
                let key = format!("{}/{state}/{:?}", listed.id, listed.address);
                let info = match known.get(name) {
                    Some((k, info)) if *k == key && !forced => info.clone(),
                    _ => {
                        let inspect = match &listed.container {
                            Some(container) => docker.inspect_container(container, None).await.ok(),
                            None => None,
                        };
                        if found.role == crate::deploy::plan::Role::Proxy {
                            let settings = if on_swarm {
                                crate::deploy::swarm::service_labels_and_image(&docker, name)
                                    .await
                                    .and_then(|(labels, _)| Deployment::from_labels(&labels))
                            } else {
                                inspect
                                    .as_ref()
                                    .and_then(|i| Deployment::from_labels(i.config.as_ref()?.labels.as_ref()?))
                            };
                            deployment.send_replace(settings);
                        }
                        let started_at = inspect
                            .as_ref()
                            .and_then(|i| i.state.as_ref()?.started_at.clone())
                            .and_then(|t| parse_rfc3339(&t));
                        let info = ContainerInfo {
                            name: name.to_string(),
                            role: found.role,
                            index: found.index,
                            state: state.clone(),
                            started_at,
                            restarts: inspect.and_then(|i| i.restart_count).unwrap_or(0),
                            node: listed.node.clone(),
                            address: listed.address.clone(),
                        };
                        known.insert(name.to_string(), (key, info.clone()));
                        info
                    }
                };
                if let Some(container) = listed.container.clone().filter(|_| info.state == "running") {
                    if stats.get(name).is_none_or(|t| t.is_finished()) {
                        stats.insert(
                            name.to_string(),
                            tokio::spawn(container_stats(docker.clone(), container, name.to_string(), tx.clone())),
                        );
                    }
                }
                infos.push(info);
            }
            if on_swarm {
                if let Ok(nodes) = crate::deploy::swarm::nodes(&docker, &list).await {
                    if tx.send(Feed::Nodes(nodes)).await.is_err() {
                        break;
                    }
                }
            }
            known.retain(|name, _| infos.iter().any(|i| &i.name == name));
            stats.retain(|name, task| {
                let keep = infos.iter().any(|i| &i.name == name && i.state == "running");
                if !keep {
                    task.abort();
                }
                keep
            });
            if tx.send(Feed::Containers(infos)).await.is_err() {
                break;
            }
        }
        forced = tokio::select! {
            _ = refresh.notified() => true,
            _ = tokio::time::sleep(Duration::from_secs(5)) => false,
        };
    }
    for task in stats.values() {
        task.abort();
    }
}

/// One container's resource use, about once a second.
/// Samples `container`'s usage, reported under the instance's `name`.
async fn container_stats(docker: Docker, container: String, name: String, tx: mpsc::Sender<Feed>) {
    let options = StatsOptionsBuilder::default().stream(true).build();
    let mut stream = docker.stats(&container, Some(options));
    while let Some(Ok(stats)) = stream.next().await {
        let total = |s: &Option<bollard::models::ContainerCpuStats>| {
            s.as_ref()
                .and_then(|c| Some((c.cpu_usage.as_ref()?.total_usage?, c.system_cpu_usage?)))
        };
        let cpu_percent = match (total(&stats.cpu_stats), total(&stats.precpu_stats)) {
            (Some((cpu, system)), Some((pre_cpu, pre_system))) if system > pre_system => {
                let cores = stats.cpu_stats.as_ref().and_then(|c| c.online_cpus).unwrap_or(1) as f64;
                Some(cpu.saturating_sub(pre_cpu) as f64 / (system - pre_system) as f64 * cores * 100.0)
            }
            _ => None,
        };
        let (rx, tx_bytes) = stats
            .networks
            .as_ref()
            .map(|n| {
                n.values().fold((0, 0), |(r, t), s| {
                    (r + s.rx_bytes.unwrap_or(0), t + s.tx_bytes.unwrap_or(0))
                })
            })
            .unwrap_or((0, 0));
        let feed = Feed::Stats {
            container: name.clone(),
            cpu_percent,
            memory_bytes: stats.memory_stats.as_ref().and_then(|m| m.usage),
            net_rx_bytes: rx,
            net_tx_bytes: tx_bytes,
        };
        // A full channel drops this sample; the next one comes in a second.
        if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(feed) {
            return;
        }
    }
}

/// Docker's events about the project's containers.
async fn docker_events(docker: Docker, project: String, tx: mpsc::Sender<Feed>, refresh: std::sync::Arc<Notify>) {
    let filters = HashMap::from([
        ("label", vec![format!("{LABEL_PROJECT}={project}")]),
        ("type", vec!["container".to_string()]),
    ]);
    loop {
        let mut stream = docker.events(Some(EventsOptionsBuilder::default().filters(&filters).build()));
        while let Some(Ok(event)) = stream.next().await {
            let action = event.action.unwrap_or_default();
            // Health checks run as exec every second: not news.
            if action.starts_with("exec_") || action == "top" {
                continue;
            }
            let container = event
                .actor
                .and_then(|a| a.attributes?.get("name").cloned())
                .unwrap_or_default();
            refresh.notify_one();
            let feed = Feed::Docker {
                at_ms: now_ms(),
                container,
                action,
            };
            if tx.send(feed).await.is_err() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// The proxy's admin API of `project`: its published address and token.
pub async fn admin_client(docker: &Docker, project: &str) -> Result<AdminClient, DeployError> {
    let token = settings::admin_token(project)?;
    let names = Names {
        project: project.into(),
    };
    let addr = engine::admin_address(docker, &names).await?;
    Ok(AdminClient::new(addr, &token))
}

/// Samples the proxy's backends every second, the watched instance's
/// sessions every two and the certificates every ten.
async fn admin_poll(
    docker: Docker,
    project: String,
    tx: mpsc::Sender<Feed>,
    sessions_of: watch::Receiver<Option<String>>,
) {
    loop {
        let admin = match admin_client(&docker, &project).await {
            Ok(admin) => admin,
            Err(e) => {
                if tx.send(Feed::ProxyDown(e.to_string())).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for round in 0u64.. {
            tick.tick().await;
            let backends = match admin.backends().await {
                Ok(backends) => backends,
                Err(e) => {
                    if tx.send(Feed::ProxyDown(e.to_string())).await.is_err() {
                        return;
                    }
                    break;
                }
            };
            let feed = Feed::Backends {
                at_ms: now_ms(),
                backends,
            };
            if tx.send(feed).await.is_err() {
                return;
            }
            let watched = sessions_of.borrow().clone();
            if let (Some(instance), true) = (watched, round % 2 == 0) {
                if let Ok(sessions) = admin.sessions(&instance).await {
                    let _ = tx.send(Feed::Sessions(sessions)).await;
                }
            }
            if round % 10 == 0 {
                if let Ok(certificates) = admin.certificates().await {
                    let _ = tx.send(Feed::Certificates(certificates)).await;
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The proxy's event stream, without the per-session and heartbeat events
/// (those are counted by the backend samples).
async fn proxy_events(docker: Docker, project: String, tx: mpsc::Sender<Feed>) {
    const PATH: &str = "/api/v1/events?skip=heartbeat,websocket_opened,websocket_closed";
    loop {
        if let Ok(admin) = admin_client(&docker, &project).await {
            let _ = admin
                .follow_events(PATH, |event| {
                    let feed = Feed::Proxy { at_ms: now_ms(), event };
                    !matches!(tx.try_send(feed), Err(mpsc::error::TrySendError::Closed(_)))
                })
                .await;
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
