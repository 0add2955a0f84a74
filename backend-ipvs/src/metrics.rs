//! The IPVS backend's own metrics, under `svcproxy_ipvs_` (kube-proxy's sync metrics are
//! recorded by proxy-core's sync loop): objects written, operations the kernel refused, drift
//! repaired, real servers draining, and how long each sync took, by mode.
//!
//! ```
//! use backend_ipvs::metrics::Metrics;
//! use prometheus_client::registry::Registry;
//! use proxy_core::SyncMode;
//!
//! let mut registry = Registry::default();
//! let metrics = Metrics::register(&mut registry);
//! metrics.record_sync(&backend_ipvs::metrics::SyncStats {
//!     mode: SyncMode::Full,
//!     duration: std::time::Duration::from_millis(3),
//!     written: 4,
//!     failed_ops: 0,
//!     drift: 1,
//!     draining: 2,
//! });
//! let mut text = String::new();
//! prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
//! assert!(text.contains("svcproxy_ipvs_objects_written_total 4"), "{text}");
//! assert!(text.contains("svcproxy_ipvs_drifted_virtual_servers_total 1"), "{text}");
//! assert!(text.contains("svcproxy_ipvs_draining_real_servers 2"), "{text}");
//! ```

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
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

/// What one sync did, for [`Metrics::record_sync`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncStats {
    /// Full or partial.
    pub mode: SyncMode,
    /// Wall time.
    pub duration: Duration,
    /// Virtual and real servers, VIP addresses, set entries and rules written.
    pub written: usize,
    /// IPVS operations the kernel refused.
    pub failed_ops: usize,
    /// Virtual servers found drifted (full syncs only).
    pub drift: usize,
    /// Real servers draining after the sync.
    pub draining: usize,
}

/// The backend's metric families. Cloning shares them.
#[derive(Debug, Clone)]
pub struct Metrics {
    objects_written: Counter,
    failed_ops: Counter,
    drifted: Counter,
    draining: Gauge,
    sync_duration: Family<ModeLabel, Histogram, fn() -> Histogram>,
}

impl Default for Metrics {
    /// Unregistered metrics (recorded, never exported).
    fn default() -> Self {
        Metrics {
            objects_written: Counter::default(),
            failed_ops: Counter::default(),
            drifted: Counter::default(),
            draining: Gauge::default(),
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
            "failed_operations",
            "IPVS operations the kernel refused (each is retried by the next full sync)",
            metrics.failed_ops.clone(),
        );
        sub.register(
            "draining_real_servers",
            "Removed TCP real servers kept at weight 0 until their connections end",
            metrics.draining.clone(),
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
    pub fn record_sync(&self, stats: &SyncStats) {
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        self.objects_written.inc_by(count(stats.written));
        self.failed_ops.inc_by(count(stats.failed_ops));
        self.drifted.inc_by(count(stats.drift));
        self.draining
            .set(i64::try_from(stats.draining).unwrap_or(i64::MAX));
        self.sync_duration
            .get_or_create(&ModeLabel {
                mode: stats.mode.to_string(),
            })
            .observe(stats.duration.as_secs_f64());
    }
}
