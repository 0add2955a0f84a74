//! The IPVS backend's own metrics, under `svcproxy_ipvs_` (kube-proxy's sync metrics are
//! recorded by proxy-core's sync loop): netlink and rtnetlink objects written, drift repaired,
//! and how long the kernel part of each sync took, by mode.
//!
//! ```
//! use backend_ipvs::metrics::Metrics;
//! use prometheus_client::registry::Registry;
//! use proxy_core::SyncMode;
//!
//! let mut registry = Registry::default();
//! let metrics = Metrics::register(&mut registry);
//! metrics.record_sync(SyncMode::Full, std::time::Duration::from_millis(3), 4, 1);
//! let mut text = String::new();
//! prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
//! assert!(text.contains("svcproxy_ipvs_objects_written_total 4"), "{text}");
//! assert!(text.contains("svcproxy_ipvs_drifted_virtual_servers_total 1"), "{text}");
//! ```

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use proxy_core::SyncMode;

/// The metric name prefix.
pub const PREFIX: &str = "svcproxy_ipvs";

/// The `mode` label: `full` or `partial`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ModeLabel {
    /// `full` or `partial`.
    pub mode: String,
}

fn new_histogram() -> Histogram {
    // kube-proxy's sync buckets: 1 ms doubling, 15 buckets.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// The backend's metric families. Cloning shares them.
#[derive(Debug, Clone)]
pub struct Metrics {
    objects_written: Counter,
    drifted: Counter,
    sync_duration: Family<ModeLabel, Histogram, fn() -> Histogram>,
}

impl Default for Metrics {
    /// Unregistered metrics (recorded, never exported).
    fn default() -> Self {
        Metrics {
            objects_written: Counter::default(),
            drifted: Counter::default(),
            sync_duration: Family::new_with_constructor(new_histogram),
        }
    }
}

impl Metrics {
    /// Registers the families in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Metrics::default();
        let sub = registry.sub_registry_with_prefix(PREFIX);
        sub.register(
            "objects_written",
            "IPVS virtual and real servers, and VIP addresses, written",
            metrics.objects_written.clone(),
        );
        sub.register(
            "drifted_virtual_servers",
            "Virtual servers found different from what was applied, at full syncs",
            metrics.drifted.clone(),
        );
        sub.register(
            "sync_duration_seconds",
            "Time a sync of the IPVS backend took, by mode",
            metrics.sync_duration.clone(),
        );
        metrics
    }

    /// Records one sync.
    pub fn record_sync(&self, mode: SyncMode, duration: Duration, written: usize, drift: usize) {
        self.objects_written.inc_by(written as u64);
        self.drifted.inc_by(drift as u64);
        self.sync_duration
            .get_or_create(&ModeLabel {
                mode: mode.to_string(),
            })
            .observe(duration.as_secs_f64());
    }
}
