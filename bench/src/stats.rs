//! Latency samples and their summary (count, mean, percentiles).
//!
//! Samples are kept whole (bounded by [`Samples::with_cap`]) and sorted once at the end: a run
//! records at most a few hundred thousand values, so exact percentiles cost less than a histogram's
//! bookkeeping and need no bucket choice.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Recorded latencies, in nanoseconds, up to a fixed number; the rest are only counted.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    nanos: Vec<u64>,
    cap: usize,
    dropped: u64,
}

impl Samples {
    /// Keeps at most `cap` samples.
    pub fn with_cap(cap: usize) -> Self {
        Samples {
            nanos: Vec::with_capacity(cap.min(1 << 16)),
            cap,
            dropped: 0,
        }
    }

    /// Records one latency.
    pub fn record(&mut self, latency: Duration) {
        if self.nanos.len() < self.cap {
            self.nanos
                .push(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
        } else {
            self.dropped += 1;
        }
    }

    /// Adds another recorder's samples (up to this one's cap).
    pub fn merge(&mut self, other: Samples) {
        for nanos in other.nanos {
            self.record(Duration::from_nanos(nanos));
        }
        self.dropped += other.dropped;
    }

    /// How many latencies were recorded (kept or not).
    pub fn count(&self) -> u64 {
        self.nanos.len() as u64 + self.dropped
    }

    /// The summary of the kept samples; `None` when there are none.
    pub fn summary(mut self) -> Option<Summary> {
        if self.nanos.is_empty() {
            return None;
        }
        self.nanos.sort_unstable();
        let total: u128 = self.nanos.iter().map(|&n| u128::from(n)).sum();
        let mean_nanos = total as f64 / self.nanos.len() as f64;
        let micros = |n: u64| n as f64 / 1_000.0;
        Some(Summary {
            count: self.count(),
            mean_us: mean_nanos / 1_000.0,
            min_us: micros(self.nanos[0]),
            p50_us: micros(percentile(&self.nanos, 50.0)),
            p90_us: micros(percentile(&self.nanos, 90.0)),
            p99_us: micros(percentile(&self.nanos, 99.0)),
            max_us: micros(self.nanos[self.nanos.len() - 1]),
        })
    }
}

/// The summary of a set of latencies, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Number of recorded latencies.
    pub count: u64,
    /// Arithmetic mean.
    pub mean_us: f64,
    /// Smallest.
    pub min_us: f64,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// Largest.
    pub max_us: f64,
}

/// The nearest-rank percentile `p` (0 < p <= 100) of sorted values: the smallest value with at
/// least `p`% of the values at or below it.
///
/// # Panics
///
/// If `sorted` is empty (callers check first).
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    assert!(!sorted.is_empty(), "percentile of no values");
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles_of_one_to_hundred() {
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&values, 50.0), 50);
        assert_eq!(percentile(&values, 90.0), 90);
        assert_eq!(percentile(&values, 99.0), 99);
        assert_eq!(percentile(&values, 100.0), 100);
        assert_eq!(percentile(&values, 0.1), 1);
    }

    #[test]
    fn percentile_of_a_single_value_is_that_value() {
        assert_eq!(percentile(&[7], 1.0), 7);
        assert_eq!(percentile(&[7], 99.0), 7);
    }

    #[test]
    fn p99_of_ten_values_is_the_largest() {
        let values: Vec<u64> = (1..=10).collect();
        assert_eq!(percentile(&values, 99.0), 10);
        assert_eq!(percentile(&values, 50.0), 5);
    }

    #[test]
    fn summary_sorts_and_converts_to_microseconds() {
        let mut samples = Samples::with_cap(100);
        for micros in [30, 10, 20, 40] {
            samples.record(Duration::from_micros(micros));
        }
        let summary = samples.summary().expect("four samples");
        assert_eq!(summary.count, 4);
        assert_eq!(summary.min_us, 10.0);
        assert_eq!(summary.max_us, 40.0);
        assert_eq!(summary.p50_us, 20.0);
        assert_eq!(summary.p99_us, 40.0);
        assert_eq!(summary.mean_us, 25.0);
    }

    #[test]
    fn samples_over_the_cap_are_counted_not_kept() {
        let mut samples = Samples::with_cap(2);
        for micros in [1, 2, 3] {
            samples.record(Duration::from_micros(micros));
        }
        assert_eq!(samples.count(), 3);
        let summary = samples.summary().expect("two kept");
        assert_eq!(summary.count, 3);
        assert_eq!(summary.max_us, 2.0);
    }

    #[test]
    fn merge_keeps_both_sides() {
        let mut left = Samples::with_cap(10);
        left.record(Duration::from_micros(1));
        let mut right = Samples::with_cap(10);
        right.record(Duration::from_micros(3));
        left.merge(right);
        let summary = left.summary().expect("two samples");
        assert_eq!(
            (summary.count, summary.min_us, summary.max_us),
            (2, 1.0, 3.0)
        );
    }

    #[test]
    fn no_samples_no_summary() {
        assert!(Samples::with_cap(4).summary().is_none());
    }
}
