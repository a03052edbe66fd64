//! A histogram of observations for the Prometheus text format: fixed
//! buckets, atomic counts, safe to observe from any thread.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of latency buckets, in microseconds (rendered in seconds):
/// from half a millisecond, around one fsync on a fast disk, to ten
/// seconds, the default request timeout.
pub const LATENCY_BOUNDS_US: &[u64] = &[
    500, 1_000, 2_000, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];

/// Upper bounds of size buckets (transfers in one group entry, up to the
/// largest batch).
pub const SIZE_BOUNDS: &[u64] = &[
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 8_190,
];

/// Counts of observations by bucket, their sum and their number.
pub struct Histogram {
    bounds: &'static [u64],
    /// Observations at most each bound (not cumulative; the rendering sums).
    counts: Vec<AtomicU64>,
    sum: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [u64]) -> Self {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]), "bounds ascend");
        Self {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// A histogram of durations (see [`LATENCY_BOUNDS_US`]).
    pub fn latency() -> Self {
        Self::new(LATENCY_BOUNDS_US)
    }

    pub fn observe(&self, value: u64) {
        if let Some(i) = self.bounds.iter().position(|b| value <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum.fetch_add(value, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Observes a duration, in microseconds.
    pub fn observe_duration(&self, d: Duration) {
        self.observe(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    /// Writes the histogram as metric `name`, each value divided by
    /// `scale` (1,000,000 to render microseconds as seconds).
    pub fn render(&self, out: &mut String, name: &str, help: &str, scale: f64) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, n) in self.bounds.iter().zip(&self.counts) {
            cumulative += n.load(Ordering::Relaxed);
            let le = *bound as f64 / scale;
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        // Read the count last: it is never below the buckets' total.
        let count = self.count.load(Ordering::Relaxed).max(cumulative);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum.load(Ordering::Relaxed) as f64 / scale;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {count}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_the_count_includes_values_past_the_last() {
        let h = Histogram::new(&[1, 10, 100]);
        for v in [0, 1, 5, 10, 50, 1_000] {
            h.observe(v);
        }
        let mut out = String::new();
        h.render(&mut out, "x", "An example.", 1.0);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines,
            [
                "# HELP x An example.",
                "# TYPE x histogram",
                "x_bucket{le=\"1\"} 2",
                "x_bucket{le=\"10\"} 4",
                "x_bucket{le=\"100\"} 5",
                "x_bucket{le=\"+Inf\"} 6",
                "x_sum 1066",
                "x_count 6",
            ]
        );
    }
}
