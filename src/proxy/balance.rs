//! Choosing a backend: round-robin or least-connections over the eligible
//! backends of a service, with an optional sticky cookie.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use super::backend::{Backend, BackendState};
use crate::config::proxy::{Balance, Service};

/// A service's settings and its current backends.
#[derive(Debug)]
pub struct Pool {
    pub settings: RwLock<Arc<Service>>,
    pub backends: RwLock<Vec<Arc<Backend>>>,
    next: AtomicUsize,
}

impl Pool {
    pub fn new(settings: Service) -> Self {
        Pool {
            settings: RwLock::new(Arc::new(settings)),
            backends: RwLock::new(Vec::new()),
            next: AtomicUsize::new(0),
        }
    }

    pub fn settings(&self) -> Arc<Service> {
        self.settings
            .read()
            .map(|s| s.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    pub fn backends(&self) -> Vec<Arc<Backend>> {
        self.backends
            .read()
            .map(|b| b.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    pub fn find(&self, id: &str) -> Option<Arc<Backend>> {
        self.backends().into_iter().find(|b| b.id == id)
    }

    /// Picks a backend for new work, skipping those in `exclude` (already
    /// tried for this request). A sticky id wins while its backend is eligible.
    ///
    /// When connect failures have ejected every healthy backend, the ejected
    /// ones are tried anyway: a burst of failed connects (a full accept
    /// queue, say) must not turn into 503s for everyone.
    pub fn pick(&self, now_ms: u64, sticky: Option<&str>, exclude: &[Arc<Backend>]) -> Option<Arc<Backend>> {
        let guard = self.backends.read().unwrap_or_else(|e| e.into_inner());
        let untried = |b: &Arc<Backend>| !exclude.iter().any(|x| Arc::ptr_eq(x, b));
        let eligible = |b: &&Arc<Backend>| b.is_eligible(now_ms) && untried(b);
        if let Some(id) = sticky {
            if let Some(b) = guard.iter().filter(eligible).find(|b| sticky_value(&b.id) == id) {
                return Some(b.clone());
            }
        }
        let balance = self.settings.read().map(|s| s.balance).unwrap_or_default();
        choose(balance, &guard, &self.next, eligible).or_else(|| {
            let healthy = |b: &&Arc<Backend>| b.state() == BackendState::Healthy && untried(b);
            choose(balance, &guard, &self.next, healthy)
        })
    }

    /// Picks a backend for a new WebSocket session: the sticky one while it
    /// is eligible, else the one with the fewest sessions. Sessions last
    /// for hours, so whatever the request balancing, a reconnect (after a
    /// scale-up or a rebalance) goes where there is room.
    pub fn pick_for_session(
        &self,
        now_ms: u64,
        sticky: Option<&str>,
        exclude: &[Arc<Backend>],
    ) -> Option<Arc<Backend>> {
        if sticky.is_some() {
            return self.pick(now_ms, sticky, exclude);
        }
        let guard = self.backends.read().unwrap_or_else(|e| e.into_inner());
        let untried = |b: &Arc<Backend>| !exclude.iter().any(|x| Arc::ptr_eq(x, b));
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let fewest = |usable: &dyn Fn(&Arc<Backend>) -> bool| {
            (0..guard.len())
                .map(|i| &guard[(start + i) % guard.len()])
                .filter(|b| usable(b))
                .min_by_key(|b| {
                    b.counters.ws_active.load(Ordering::Relaxed) + b.counters.ws_opening.load(Ordering::Relaxed)
                })
                .cloned()
        };
        fewest(&|b| b.is_eligible(now_ms) && untried(b))
            .or_else(|| fewest(&|b| b.state() == BackendState::Healthy && untried(b)))
    }
}

fn choose(
    balance: Balance,
    backends: &[Arc<Backend>],
    next: &AtomicUsize,
    usable: impl Fn(&&Arc<Backend>) -> bool,
) -> Option<Arc<Backend>> {
    if backends.is_empty() {
        return None;
    }
    match balance {
        Balance::RoundRobin => {
            let start = next.fetch_add(1, Ordering::Relaxed);
            (0..backends.len())
                .map(|i| &backends[(start + i) % backends.len()])
                .find(|b| usable(b))
                .cloned()
        }
        Balance::LeastConnections => {
            // Rotate the starting point so ties spread instead of piling on
            // the first backend.
            let start = next.fetch_add(1, Ordering::Relaxed);
            (0..backends.len())
                .map(|i| &backends[(start + i) % backends.len()])
                .filter(|b| usable(b))
                .min_by_key(|b| b.load())
                .cloned()
        }
    }
}

/// The cookie value naming a backend: a short hash, so addresses of internal
/// hosts are not shown to browsers.
pub fn sticky_value(id: &str) -> String {
    // FNV-1a: stable across runs and versions, unlike std's hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in id.bytes() {
        hash ^= byte as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::backend::InFlight;

    fn pool(balance: Balance, n: usize) -> Pool {
        let mut service = Service::new("flow");
        service.balance = balance;
        let pool = Pool::new(service);
        *pool.backends.write().unwrap() = (0..n)
            .map(|i| {
                Arc::new(Backend::new(
                    &format!("b{i}"),
                    &format!("h{i}:1"),
                    "flow",
                    false,
                    BackendState::Healthy,
                ))
            })
            .collect();
        pool
    }

    #[test]
    fn sessions_go_to_the_fewest_counting_those_still_opening() {
        let p = pool(Balance::RoundRobin, 3);
        p.backends()[0].counters.ws_active.store(10, Ordering::Relaxed);
        // A burst: none has finished its handshake yet, yet they spread.
        let mut counts = [0; 3];
        for _ in 0..20 {
            let b = p.pick_for_session(1, None, &[]).unwrap();
            b.counters.ws_opening.fetch_add(1, Ordering::Relaxed);
            counts[b.id[1..].parse::<usize>().unwrap()] += 1;
        }
        assert_eq!(counts, [0, 10, 10]);
    }

    #[test]
    fn round_robin_spreads_evenly_and_skips_unhealthy() {
        let p = pool(Balance::RoundRobin, 3);
        let mut counts = [0; 3];
        for _ in 0..300 {
            let b = p.pick(1, None, &[]).unwrap();
            counts[b.id[1..].parse::<usize>().unwrap()] += 1;
        }
        assert_eq!(counts, [100, 100, 100]);
        p.backends()[1].set_health(false);
        for _ in 0..10 {
            assert_ne!(p.pick(1, None, &[]).unwrap().id, "b1");
        }
    }

    #[test]
    fn least_connections_prefers_the_idle_backend() {
        let p = pool(Balance::LeastConnections, 2);
        let busy = p.backends()[0].clone();
        let _guard = InFlight::start(&busy);
        for _ in 0..5 {
            assert_eq!(p.pick(1, None, &[]).unwrap().id, "b1");
        }
    }

    #[test]
    fn sticky_wins_while_eligible_and_exclusions_apply() {
        let p = pool(Balance::RoundRobin, 3);
        let cookie = sticky_value("b2");
        for _ in 0..5 {
            assert_eq!(p.pick(1, Some(&cookie), &[]).unwrap().id, "b2");
        }
        p.backends()[2].start_draining();
        assert_ne!(p.pick(1, Some(&cookie), &[]).unwrap().id, "b2");
        let tried = vec![p.backends()[0].clone()];
        assert_eq!(p.pick(1, None, &tried).unwrap().id, "b1");
        assert!(
            p.pick(1, None, &[p.backends()[0].clone(), p.backends()[1].clone()])
                .is_none()
        );
    }

    #[test]
    fn ejected_backends_are_tried_when_no_other_is_left() {
        let p = pool(Balance::RoundRobin, 2);
        for b in p.backends() {
            b.record_connect_failure(1);
        }
        assert!(p.pick(2, None, &[]).is_some(), "all ejected: try them rather than fail");
        p.backends()[0].set_health(false);
        assert_eq!(p.pick(2, None, &[]).unwrap().id, "b1");
        p.backends()[1].set_health(false);
        assert!(p.pick(2, None, &[]).is_none(), "unhealthy backends are never used");
    }
}
