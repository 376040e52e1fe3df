//! Spreading WebSocket sessions again after a scale-up. New instances get
//! no sessions until users reconnect, so the proxy asks sessions on busy
//! instances to reconnect: each gets a close frame with 1012 ("service
//! restart"), the Flow UI reconnects, and the reconnect goes to the
//! instance with the fewest sessions (`Pool::pick_for_session`).
//!
//! It is gentle: at most 2 % of all sessions a second (at least one), never
//! more than one session of an instance at a time (the next only once the
//! previous has closed), and it stops once every instance is within 10 % of
//! the mean (or one session of it, for small counts).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Proxy;
use super::backend::Backend;
use super::balance::Pool;
use super::events::ProxyEvent;

/// How often the rebalancer looks and acts.
const TICK: Duration = Duration::from_secs(1);
/// Share of all sessions asked to reconnect per tick.
const RATE: f64 = 0.02;
/// An instance within this share of the mean is even enough.
const TOLERANCE: f64 = 0.10;
/// A rebalance that has not converged by then stops (clients that do not
/// reconnect, sticky cookies that bring them back).
const LIMIT: Duration = Duration::from_secs(600);

/// What a rebalance did, for the admin API and the event stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RebalanceReport {
    pub service: String,
    pub running: bool,
    /// Sessions asked to reconnect so far.
    pub moved: u64,
    /// Sessions per eligible instance now.
    pub sessions: BTreeMap<String, u64>,
    pub balanced: bool,
}

/// Sessions per eligible backend, and whether they are even enough.
fn spread(backends: &[Arc<Backend>], now_ms: u64) -> (Vec<(Arc<Backend>, u64)>, bool) {
    let counts: Vec<(Arc<Backend>, u64)> = backends
        .iter()
        .filter(|b| b.is_eligible(now_ms))
        .map(|b| (b.clone(), b.counters.ws_active.load(Ordering::Relaxed)))
        .collect();
    let balanced = is_even(&counts.iter().map(|(_, c)| *c).collect::<Vec<_>>());
    (counts, balanced)
}

/// Every count within 10 % of the mean, or within one session of it.
pub fn is_even(counts: &[u64]) -> bool {
    if counts.len() < 2 {
        return true;
    }
    let mean = counts.iter().sum::<u64>() as f64 / counts.len() as f64;
    let allowed = (mean * TOLERANCE).max(1.0);
    counts.iter().all(|c| (*c as f64 - mean).abs() <= allowed)
}

/// Which instances give up a session this tick, while the spread is not
/// even: the busiest ones above the mean (one session each), `budget` in
/// all. An instance only a little above the mean still gives when another
/// is far below it.
pub fn plan_moves(counts: &[u64], budget: usize) -> Vec<usize> {
    if is_even(counts) {
        return Vec::new();
    }
    let mean = counts.iter().sum::<u64>() as f64 / counts.len() as f64;
    let mut above: Vec<usize> = (0..counts.len()).filter(|&i| counts[i] as f64 >= mean + 1.0).collect();
    above.sort_by(|a, b| counts[*b].cmp(&counts[*a]));
    above.truncate(budget);
    above
}

/// The session of `backend` to move: the one that has been open longest.
fn oldest_session(backend: &Backend) -> Option<Arc<super::backend::Session>> {
    let sessions = backend.sessions.lock().unwrap_or_else(|e| e.into_inner());
    sessions.values().min_by_key(|s| s.started).cloned()
}

impl Proxy {
    /// Starts rebalancing `service` unless it runs already; returns the
    /// report as it stands.
    pub fn rebalance(self: &Arc<Self>, service: &str) -> Option<RebalanceReport> {
        let pool = self.pool(service)?;
        let mut running = self.rebalancing.lock().unwrap_or_else(|e| e.into_inner());
        let report = running.entry(service.to_string()).or_default();
        if !report.running {
            *report = RebalanceReport {
                service: service.to_string(),
                running: true,
                ..RebalanceReport::default()
            };
            tokio::spawn(run(self.clone(), service.to_string(), pool));
        }
        Some(report.clone())
    }

    /// The last or running rebalance of `service`.
    pub fn rebalance_report(&self, service: &str) -> RebalanceReport {
        let now = self.clock.now_ms();
        let mut report = self
            .rebalancing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(service)
            .cloned()
            .unwrap_or_else(|| RebalanceReport {
                service: service.to_string(),
                ..RebalanceReport::default()
            });
        if let Some(pool) = self.pool(service) {
            let (counts, balanced) = spread(&pool.backends(), now);
            report.sessions = counts.iter().map(|(b, c)| (b.id.clone(), *c)).collect();
            report.balanced = balanced;
        }
        report
    }

    fn update_rebalance(&self, service: &str, change: impl FnOnce(&mut RebalanceReport)) -> RebalanceReport {
        let mut all = self.rebalancing.lock().unwrap_or_else(|e| e.into_inner());
        let report = all.entry(service.to_string()).or_default();
        change(report);
        report.clone()
    }
}

async fn run(proxy: Arc<Proxy>, service: String, pool: Arc<Pool>) {
    let started = tokio::time::Instant::now();
    // Sessions asked to reconnect that have not closed yet, per backend.
    let mut asked: BTreeMap<String, u64> = BTreeMap::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!("rebalancing the WebSocket sessions of {service}");
    proxy.events.send(ProxyEvent::RebalanceStarted {
        service: service.clone(),
    });
    loop {
        tick.tick().await;
        let now = proxy.clock.now_ms();
        let (counts, balanced) = spread(&pool.backends(), now);
        let stop = balanced || started.elapsed() > LIMIT || *proxy.shutting_down.borrow();
        if stop {
            let report = proxy.update_rebalance(&service, |r| {
                r.running = false;
                r.balanced = balanced;
                r.sessions = counts.iter().map(|(b, c)| (b.id.clone(), *c)).collect();
            });
            tracing::info!(
                "rebalanced {service}: {} sessions asked to reconnect; {}",
                report.moved,
                if balanced { "even" } else { "stopped before it was even" }
            );
            proxy.events.send(ProxyEvent::RebalanceDone {
                service: service.clone(),
                moved: report.moved,
                balanced,
            });
            return;
        }
        // A backend whose last asked session is still open waits.
        asked.retain(|id, session| {
            counts.iter().any(|(b, _)| {
                &b.id == id
                    && b.sessions
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .contains_key(session)
            })
        });
        let total: u64 = counts.iter().map(|(_, c)| c).sum();
        let budget = ((total as f64 * RATE) as usize).max(1);
        let numbers: Vec<u64> = counts.iter().map(|(_, c)| *c).collect();
        let mut moved = 0;
        for index in plan_moves(&numbers, budget) {
            let backend = &counts[index].0;
            if asked.contains_key(&backend.id) {
                continue;
            }
            if let Some(session) = oldest_session(backend) {
                session.move_on.notify_one();
                asked.insert(backend.id.clone(), session.id);
                moved += 1;
            }
        }
        proxy.update_rebalance(&service, |r| {
            r.moved += moved;
            r.sessions = counts.iter().map(|(b, c)| (b.id.clone(), *c)).collect();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn even_means_within_ten_percent_or_one_session() {
        assert!(is_even(&[75, 75, 75, 75]));
        assert!(is_even(&[80, 70, 75, 75]));
        assert!(!is_even(&[100, 100, 100, 0]));
        assert!(is_even(&[2, 1, 2]), "one session of slack for small counts");
        assert!(!is_even(&[3, 0, 3]));
        assert!(is_even(&[5]));
    }

    #[test]
    fn moves_come_from_the_busiest_one_each_within_the_budget() {
        assert_eq!(plan_moves(&[100, 100, 100, 0], 6), vec![0, 1, 2]);
        assert_eq!(plan_moves(&[90, 120, 90, 0], 1), vec![1]);
        assert!(plan_moves(&[75, 75, 75, 75], 6).is_empty());
        // Within 10 % of the mean themselves, but one instance is far below.
        assert_eq!(plan_moves(&[33, 33, 33, 21], 6), vec![0, 1, 2]);
        assert!(plan_moves(&[31, 30, 30, 29], 6).is_empty());
    }
}
