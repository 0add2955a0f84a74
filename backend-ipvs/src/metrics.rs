//! The IPVS backend's metrics. [`Metrics::register`] takes the embedder's root registry (through
//! `Dataplane::register_metrics`) and, as every backend does, puts kube-proxy's series under
//! `kubeproxy` where kube-proxy's IPVS mode has the metric, and ours under `svcproxy`.
//! kube-proxy's sync metrics (`kubeproxy_sync_proxy_rules_duration_seconds`...) are recorded by
//! proxy-core's sync loop.
//!
//! | series | type | meaning |
//! |---|---|---|
//! | `kubeproxy_sync_proxy_rules_iptables_restore_failures_total` | counter | companion `iptables-restore` runs that failed (kube-proxy's IPVS proxier counts its own restores here too) |
//! | `svcproxy_ipvs_objects_written_total` | counter | virtual and real servers, VIP bindings, set entries and rules written |
//! | `svcproxy_ipvs_failed_operations_total` | counter | IPVS netlink operations the kernel refused |
//! | `svcproxy_ipvs_drifted_virtual_servers_total` | counter | virtual servers found different from what was applied, at full syncs |
//! | `svcproxy_ipvs_draining_real_servers` | gauge | removed TCP real servers at weight 0, waiting for their connections to end |
//! | `svcproxy_ipvs_sync_duration_seconds{mode}` | histogram | one sync of this backend, `full` or `partial` (1 ms doubling, 15 buckets) |
//!
//! No series is labelled by service port, so none has to go when a port does.
//!
//! ```
//! use backend_ipvs::metrics::{Metrics, SyncStats};
//! use prometheus_client::registry::Registry;
//! use proxy_core::SyncMode;
//!
//! let mut registry = Registry::default();
//! let metrics = Metrics::register(&mut registry);
//! metrics.record_sync(&SyncStats {
//!     mode: SyncMode::Full,
//!     duration: std::time::Duration::from_millis(3),
//!     written: 4,
//!     failed_ops: 0,
//!     drift: 1,
//!     draining: 2,
//!     restore_failures: 1,
//! });
//! let mut text = String::new();
//! prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
//! assert!(text.contains("svcproxy_ipvs_objects_written_total 4"), "{text}");
//! assert!(text.contains("svcproxy_ipvs_drifted_virtual_servers_total 1"), "{text}");
//! assert!(text.contains("svcproxy_ipvs_draining_real_servers 2"), "{text}");
//! assert!(text.contains("kubeproxy_sync_proxy_rules_iptables_restore_failures_total 1"), "{text}");
//! ```

use std::fmt::{self, Write as _};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use proxy_core::SyncMode;

/// The `mode` label of `svcproxy_ipvs_sync_duration_seconds`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ModeLabel {
    mode: ModeValue,
}

/// [`SyncMode`] as a label value: `full` or `partial`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ModeValue(SyncMode);

impl EncodeLabelValue for ModeValue {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), fmt::Error> {
        write!(encoder, "{}", self.0)
    }
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
    /// Companion `iptables-restore` runs that failed.
    pub restore_failures: usize,
}

/// The backend's metric families. Cloning shares them.
#[derive(Debug, Clone)]
pub struct Metrics {
    restore_failures: Counter,
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
            restore_failures: Counter::default(),
            objects_written: Counter::default(),
            failed_ops: Counter::default(),
            drifted: Counter::default(),
            draining: Gauge::default(),
            sync_duration: Family::new_with_constructor(new_histogram),
        }
    }
}

impl Metrics {
    /// Registers the families in `registry`, the embedder's root registry: kube-proxy's under
    /// the `kubeproxy` prefix, ours under `svcproxy` (see the module docs for the names).
    ///
    /// # Panics
    /// In debug builds, prometheus-client panics if a series of the same name is already
    /// registered (registering twice in one registry).
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Metrics::default();
        // prometheus-client appends `_total` to counters.
        registry.sub_registry_with_prefix("kubeproxy").register(
            "sync_proxy_rules_iptables_restore_failures",
            "Cumulative proxy iptables restore failures",
            metrics.restore_failures.clone(),
        );
        let own = registry.sub_registry_with_prefix("svcproxy");
        own.register(
            "ipvs_objects_written",
            "IPVS virtual and real servers, VIP bindings, set entries and rules written",
            metrics.objects_written.clone(),
        );
        own.register(
            "ipvs_failed_operations",
            "IPVS operations the kernel refused (each is retried by the next full sync)",
            metrics.failed_ops.clone(),
        );
        own.register(
            "ipvs_draining_real_servers",
            "Removed TCP real servers kept at weight 0 until their connections end",
            metrics.draining.clone(),
        );
        own.register(
            "ipvs_drifted_virtual_servers",
            "Virtual servers found different from what was applied, at full syncs",
            metrics.drifted.clone(),
        );
        own.register(
            "ipvs_sync_duration_seconds",
            "Time a sync of the IPVS backend took, by mode",
            metrics.sync_duration.clone(),
        );
        metrics
    }

    /// Records one sync.
    pub fn record_sync(&self, stats: &SyncStats) {
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        self.restore_failures.inc_by(count(stats.restore_failures));
        self.objects_written.inc_by(count(stats.written));
        self.failed_ops.inc_by(count(stats.failed_ops));
        self.drifted.inc_by(count(stats.drift));
        self.draining
            .set(i64::try_from(stats.draining).unwrap_or(i64::MAX));
        self.sync_duration
            .get_or_create(&ModeLabel {
                mode: ModeValue(stats.mode),
            })
            .observe(stats.duration.as_secs_f64());
    }
}
