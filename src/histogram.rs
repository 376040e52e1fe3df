//! A lock-free latency histogram with fixed, exponentially growing buckets.
//!
//! The proxy records every request's latency here from many tasks at once,
//! the admin API reads quantiles from it, and `/metrics` exports its buckets
//! as a Prometheus histogram, so one type serves all three.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets in microseconds: 100 µs growing by 1.5x to
/// about 60 s; anything slower lands in the last (+Inf) bucket.
fn bounds() -> &'static [u64] {
    static BOUNDS: std::sync::OnceLock<Vec<u64>> = std::sync::OnceLock::new();
    BOUNDS.get_or_init(|| {
        let mut out = Vec::new();
        let mut bound = 100.0f64;
        while bound < 60_000_000.0 {
            out.push(bound.round() as u64);
            bound *= 1.5;
        }
        out
    })
}

#[derive(Debug)]
pub struct Histogram {
    /// One counter per bound, plus the +Inf bucket; not cumulative.
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: (0..=bounds().len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn record(&self, latency: Duration) {
        let micros = latency.as_micros().min(u64::MAX as u128) as u64;
        let index = bounds().partition_point(|&b| b < micros);
        self.counts[index].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    pub fn sum(&self) -> Duration {
        Duration::from_micros(self.sum_micros.load(Ordering::Relaxed))
    }

    /// Cumulative counts per upper bound (in seconds), for Prometheus; the
    /// last entry is +Inf.
    pub fn cumulative(&self) -> Vec<(Option<f64>, u64)> {
        let mut total = 0;
        let mut out = Vec::with_capacity(self.counts.len());
        for (i, count) in self.counts.iter().enumerate() {
            total += count.load(Ordering::Relaxed);
            out.push((bounds().get(i).map(|&b| b as f64 / 1e6), total));
        }
        out
    }

    /// Estimates quantile `q` (0..=1) by interpolating inside its bucket;
    /// `None` when nothing was recorded.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let counts: Vec<u64> = self.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        quantile_of(&counts, q)
    }

    /// A copy of the counts, to compute quantiles over an interval later.
    pub fn snapshot(&self) -> Vec<u64> {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect()
    }
}

/// The quantile of bucket counts such as the difference of two snapshots.
pub fn quantile_of(counts: &[u64], q: f64) -> Option<Duration> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = (q.clamp(0.0, 1.0) * total as f64).ceil().max(1.0);
    let mut seen = 0u64;
    for (i, &count) in counts.iter().enumerate() {
        if count == 0 {
            continue;
        }
        if (seen + count) as f64 >= rank {
            let low = if i == 0 { 0 } else { bounds()[i - 1] };
            let high = bounds().get(i).copied().unwrap_or(low * 2);
            let within = (rank - seen as f64) / count as f64;
            return Some(Duration::from_micros(low + ((high - low) as f64 * within) as u64));
        }
        seen += count;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_fall_in_the_right_bucket() {
        let h = Histogram::default();
        for _ in 0..99 {
            h.record(Duration::from_millis(1));
        }
        h.record(Duration::from_millis(500));
        let p50 = h.quantile(0.5).unwrap();
        assert!(
            p50 >= Duration::from_micros(600) && p50 <= Duration::from_micros(1600),
            "{p50:?}"
        );
        let p100 = h.quantile(1.0).unwrap();
        assert!(
            p100 >= Duration::from_millis(300) && p100 <= Duration::from_millis(800),
            "{p100:?}"
        );
        assert_eq!(h.count(), 100);
    }

    #[test]
    fn empty_has_no_quantile() {
        assert_eq!(Histogram::default().quantile(0.99), None);
    }

    #[test]
    fn cumulative_ends_with_the_total() {
        let h = Histogram::default();
        h.record(Duration::from_secs(120));
        h.record(Duration::from_micros(10));
        let buckets = h.cumulative();
        assert_eq!(buckets.first().unwrap().1, 1);
        assert_eq!(*buckets.last().unwrap(), (None, 2));
    }
}
