//! The nftables backend's metrics. [`Metrics::register`] takes the embedder's root registry
//! (through `Dataplane::register_metrics`) and, as every backend does, puts kube-proxy's series
//! under `kubeproxy` where kube-proxy's nftables mode has the metric (its names, types, help and
//! buckets, `pkg/proxy/metrics/metrics.go`), and ours under `svcproxy`. kube-proxy's sync-loop
//! series (`kubeproxy_sync_proxy_rules_duration_seconds`...) are recorded by proxy-core's sync
//! loop. Until registered, the metrics are recorded nowhere and cost nothing (a
//! transaction's size comes from the messages `apply` sends: it is never encoded twice).
//!
//! | series | type | meaning |
//! |---|---|---|
//! | `kubeproxy_sync_full_proxy_rules_duration_seconds` | histogram (1 ms doubling, 15 buckets) | full syncs of this backend |
//! | `kubeproxy_sync_partial_proxy_rules_duration_seconds` | histogram | partial syncs |
//! | `kubeproxy_sync_proxy_rules_nftables_sync_failures_total` | counter | failed syncs |
//! | `kubeproxy_sync_proxy_rules_nftables_cleanup_failures_total` | counter | failed cleanups |
//! | `svcproxy_nftables_elements_written_total` | counter | set and map elements added or deleted |
//! | `svcproxy_nftables_objects_written_total` | counter | tables, chains, sets and rules added, flushed or deleted |
//! | `svcproxy_nftables_transactions_total` | counter | nf_tables transactions sent by syncs |
//! | `svcproxy_nftables_transaction_bytes` | histogram (512 B, ×4, 10 buckets) | one transaction's datagram |
//! | `svcproxy_nftables_elements` | gauge | elements in our table after the last sync |
//!
//! No series is labelled by service port, so none has to go when a port does.
//!
//! ```
//! use backend_nftables::metrics::{Metrics, SyncStats};
//! use proxy_core::prometheus_client::registry::Registry;
//! use proxy_core::SyncMode;
//!
//! let mut registry = Registry::default();
//! let metrics = Metrics::register(&mut registry);
//! metrics.record_sync(&SyncStats {
//!     mode: SyncMode::Partial,
//!     duration: std::time::Duration::from_millis(3),
//!     elements_written: 4,
//!     objects_written: 1,
//!     transaction_bytes: vec![1200],
//!     elements: 40,
//! });
//! metrics.record_sync_failure();
//! let mut text = String::new();
//! proxy_core::prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
//! assert!(text.contains("svcproxy_nftables_elements_written_total 4"), "{text}");
//! assert!(text.contains("svcproxy_nftables_transactions_total 1"), "{text}");
//! assert!(text.contains("kubeproxy_sync_partial_proxy_rules_duration_seconds_count 1"), "{text}");
//! assert!(text.contains("kubeproxy_sync_proxy_rules_nftables_sync_failures_total 1"), "{text}");
//! ```

use std::time::Duration;

use proxy_core::prometheus_client::metrics::counter::Counter;
use proxy_core::prometheus_client::metrics::gauge::Gauge;
use proxy_core::prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use proxy_core::prometheus_client::registry::Registry;
use proxy_core::SyncMode;

/// What one successful sync did, for [`Metrics::record_sync`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncStats {
    /// Full or partial.
    pub mode: SyncMode,
    /// Wall time.
    pub duration: Duration,
    /// Element adds and deletes sent.
    pub elements_written: usize,
    /// Table, set, chain and rule changes sent (adds, flushes, deletes).
    pub objects_written: usize,
    /// The size of each transaction sent, in bytes (the whole datagram: BEGIN, the messages,
    /// END); empty when the sync sent none or the size was not measured.
    pub transaction_bytes: Vec<usize>,
    /// Elements in our table after the sync.
    pub elements: usize,
}

fn sync_histogram() -> Histogram {
    // kube-proxy's sync buckets: 1 ms doubling, 15 buckets.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

fn bytes_histogram() -> Histogram {
    // 512 B (one small partial sync) to 128 MiB (a cold table of 100,000 service ports).
    Histogram::new(exponential_buckets(512.0, 4.0, 10))
}

/// The backend's metrics. Cloning shares them.
#[derive(Debug, Clone)]
pub struct Metrics {
    full_sync_duration: Histogram,
    partial_sync_duration: Histogram,
    sync_failures: Counter,
    cleanup_failures: Counter,
    elements_written: Counter,
    objects_written: Counter,
    transactions: Counter,
    transaction_bytes: Histogram,
    elements: Gauge,
    registered: bool,
}

impl Default for Metrics {
    /// Unregistered metrics (recorded, never exported).
    fn default() -> Self {
        Metrics {
            full_sync_duration: sync_histogram(),
            partial_sync_duration: sync_histogram(),
            sync_failures: Counter::default(),
            cleanup_failures: Counter::default(),
            elements_written: Counter::default(),
            objects_written: Counter::default(),
            transactions: Counter::default(),
            transaction_bytes: bytes_histogram(),
            elements: Gauge::default(),
            registered: false,
        }
    }
}

impl Metrics {
    /// Registers the metrics in `registry`, the embedder's root registry: kube-proxy's under
    /// the `kubeproxy` prefix, ours under `svcproxy` (see the module docs for the names).
    ///
    /// # Panics
    /// In debug builds, prometheus-client panics if a series of the same name is already
    /// registered (registering twice in one registry, or beside the iptables backend's).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Metrics {
            registered: true,
            ..Metrics::default()
        };
        // prometheus-client appends `_total` to counters.
        let kube = registry.sub_registry_with_prefix("kubeproxy");
        kube.register(
            "sync_full_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for full resyncs",
            m.full_sync_duration.clone(),
        );
        kube.register(
            "sync_partial_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for partial resyncs",
            m.partial_sync_duration.clone(),
        );
        kube.register(
            "sync_proxy_rules_nftables_sync_failures",
            "Cumulative proxy nftables sync failures",
            m.sync_failures.clone(),
        );
        kube.register(
            "sync_proxy_rules_nftables_cleanup_failures",
            "Cumulative proxy nftables cleanup failures",
            m.cleanup_failures.clone(),
        );
        let own = registry.sub_registry_with_prefix("svcproxy");
        own.register(
            "nftables_elements_written",
            "nf_tables set and map elements added or deleted by syncs",
            m.elements_written.clone(),
        );
        own.register(
            "nftables_objects_written",
            "nf_tables tables, sets, chains and rules added, flushed or deleted by syncs",
            m.objects_written.clone(),
        );
        own.register(
            "nftables_transactions",
            "nf_tables transactions sent by syncs",
            m.transactions.clone(),
        );
        own.register(
            "nftables_transaction_bytes",
            "Size of one nf_tables transaction sent by a sync, in bytes",
            m.transaction_bytes.clone(),
        );
        own.register(
            "nftables_elements",
            "Set and map elements in our table after the last sync",
            m.elements.clone(),
        );
        m
    }

    /// Whether these metrics are in a registry: only then is a transaction's size measured
    /// (it costs an encoding of the plan).
    pub fn is_registered(&self) -> bool {
        self.registered
    }

    /// Records one successful sync.
    pub fn record_sync(&self, stats: &SyncStats) {
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        match stats.mode {
            SyncMode::Full => &self.full_sync_duration,
            SyncMode::Partial => &self.partial_sync_duration,
        }
        .observe(stats.duration.as_secs_f64());
        self.elements_written.inc_by(count(stats.elements_written));
        self.objects_written.inc_by(count(stats.objects_written));
        self.transactions
            .inc_by(count(stats.transaction_bytes.len()));
        for bytes in &stats.transaction_bytes {
            // Exact below 2^53 bytes.
            #[allow(clippy::cast_precision_loss)]
            self.transaction_bytes.observe(*bytes as f64);
        }
        self.elements
            .set(i64::try_from(stats.elements).unwrap_or(i64::MAX));
    }

    /// Records a failed sync.
    pub fn record_sync_failure(&self) {
        self.sync_failures.inc();
    }

    /// Records a failed cleanup.
    pub fn record_cleanup_failure(&self) {
        self.cleanup_failures.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proxy_core::prometheus_client::encoding::text::encode;

    #[test]
    fn beside_the_sync_loop_every_series_has_a_prefix_and_kube_proxy_names() {
        let mut registry = Registry::default();
        let _loop_metrics = proxy_core::metrics::SyncMetrics::register(&mut registry);
        let ours = Metrics::register(&mut registry);
        ours.record_cleanup_failure();
        let mut text = String::new();
        encode(&mut text, &registry).expect("encode");
        let bare: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter(|l| !l.starts_with("kubeproxy_") && !l.starts_with("svcproxy_"))
            .collect();
        assert!(bare.is_empty(), "series without a prefix: {bare:?}\n{text}");
        for want in [
            "# TYPE kubeproxy_sync_full_proxy_rules_duration_seconds histogram",
            "# TYPE kubeproxy_sync_partial_proxy_rules_duration_seconds histogram",
            "kubeproxy_sync_proxy_rules_nftables_sync_failures_total 0",
            "kubeproxy_sync_proxy_rules_nftables_cleanup_failures_total 1",
            "# TYPE svcproxy_nftables_transaction_bytes histogram",
            "svcproxy_nftables_elements 0",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert!(ours.is_registered() && !Metrics::default().is_registered());
    }
}
