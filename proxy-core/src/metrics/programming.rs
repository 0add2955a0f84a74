//! Network programming latency, the Kubernetes scalability SLI: from the moment a change was
//! made at its source (an EndpointSlice's `endpoints.kubernetes.io/last-change-trigger-time`)
//! to the moment a sync put it in the dataplane, as kube-proxy's
//! `kubeproxy_network_programming_duration_seconds` (same name, help and buckets).
//!
//! The source says when each change was triggered ([`ProgrammingLatency::record`], with the
//! tracker generation the change made); the sync loop's outcomes say which generation is in
//! place ([`ProgrammingLatency::follow`] watches a [`SyncHandle`]), and every recorded change
//! at or below it is observed once. A failed sync observes nothing; the next one that succeeds
//! does, with the longer latency.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use prometheus_client::registry::Registry;
//! use proxy_core::metrics::{encode_text, ProgrammingLatency};
//!
//! let mut registry = Registry::default();
//! let latency = ProgrammingLatency::register(&mut registry);
//! latency.record(7, SystemTime::now() - Duration::from_millis(300));
//! assert_eq!(latency.programmed(6), 0); // generation 7 is not in place yet
//! assert_eq!(latency.programmed(7), 1);
//! let text = encode_text(&registry).unwrap();
//! assert!(text.contains("kubeproxy_network_programming_duration_seconds_count 1"));
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::sync::{SyncHandle, SyncStatus};

/// kube-proxy's buckets: 0.25 s and 0.5 s, every second to 59 s, every 5 s to 115 s, every 30 s
/// to 300 s.
fn buckets() -> Vec<f64> {
    let mut out = vec![0.25, 0.5];
    out.extend((1..=59).map(f64::from));
    out.extend((0..12).map(|i| 60.0 + 5.0 * f64::from(i)));
    out.extend((0..7).map(|i| 120.0 + 30.0 * f64::from(i)));
    out
}

/// See the [module docs](self). Cheap to clone: clones share the pending changes and the
/// histogram.
#[derive(Debug, Clone)]
pub struct ProgrammingLatency {
    histogram: Histogram,
    /// Trigger times by the generation that carried them, not yet in place.
    pending: Arc<Mutex<BTreeMap<u64, Vec<SystemTime>>>>,
}

impl ProgrammingLatency {
    /// Registers the histogram in `registry` (under `kubeproxy_`).
    pub fn register(registry: &mut Registry) -> Self {
        let histogram = Histogram::new(buckets());
        registry.sub_registry_with_prefix("kubeproxy").register(
            "network_programming_duration_seconds",
            "In Cluster Network Programming Latency in seconds",
            histogram.clone(),
        );
        Self {
            histogram,
            pending: Arc::default(),
        }
    }

    /// A change triggered at `trigger` reached the tracker as `generation`.
    pub fn record(&self, generation: u64, trigger: SystemTime) {
        self.lock().entry(generation).or_default().push(trigger);
    }

    /// `generation` and everything before it are in place: observes their latencies (until
    /// now) and returns how many.
    pub fn programmed(&self, generation: u64) -> usize {
        let done: Vec<SystemTime> = {
            let mut pending = self.lock();
            let later = pending.split_off(&(generation.saturating_add(1)));
            std::mem::replace(&mut *pending, later)
                .into_values()
                .flatten()
                .collect()
        };
        let now = SystemTime::now();
        for trigger in &done {
            // A trigger in the future (clock skew between the control plane and this node)
            // counts as zero.
            let seconds = now
                .duration_since(*trigger)
                .map_or(0.0, |d| d.as_secs_f64());
            self.histogram.observe(seconds);
        }
        done.len()
    }

    /// Observes as the loop behind `handle` puts generations in place, until it stops.
    pub async fn follow(self, handle: SyncHandle) {
        let mut outcomes = handle.outcomes();
        while outcomes.changed().await.is_ok() {
            // Two fields of the outcome, read in place: no copy of its problems per sync.
            let applied = {
                let outcome = outcomes.borrow_and_update();
                (!matches!(outcome.status, SyncStatus::Failed(_)))
                    .then_some(outcome.applied_generation)
            };
            if let Some(generation) = applied {
                self.programmed(generation);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Vec<SystemTime>>> {
        // A panic while holding the lock leaves a map that is still whole.
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::metrics::encode_text;

    #[test]
    fn each_change_is_observed_once_when_its_generation_is_in_place() {
        let mut registry = Registry::default();
        let latency = ProgrammingLatency::register(&mut registry);
        let ago = |ms: u64| SystemTime::now() - Duration::from_millis(ms);
        latency.record(3, ago(700));
        latency.record(3, ago(200));
        latency.record(5, ago(100));
        latency.record(9, ago(50));
        assert_eq!(latency.programmed(2), 0);
        assert_eq!(latency.programmed(5), 3);
        assert_eq!(latency.programmed(5), 0, "observed once");
        // Clock skew: a trigger in the future counts as zero, not as a panic.
        latency.record(10, SystemTime::now() + Duration::from_secs(60));
        assert_eq!(latency.programmed(10), 2);
        let text = encode_text(&registry).expect("encode");
        assert!(
            text.contains("kubeproxy_network_programming_duration_seconds_count 5"),
            "{text}"
        );
        // 700 ms falls in the 1 s bucket, the other four at or below 0.5 s.
        assert!(
            text.contains("kubeproxy_network_programming_duration_seconds_bucket{le=\"0.5\"} 4"),
            "{text}"
        );
        assert_eq!(buckets().len(), 2 + 59 + 12 + 7);
        assert_eq!(buckets().last(), Some(&300.0));
    }
}
