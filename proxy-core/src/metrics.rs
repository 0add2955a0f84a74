//! Prometheus metrics of the sync loop, with kube-proxy's names where kube-proxy has the metric.
//!
//! [`SyncMetrics::register`] adds them to the [`Registry`] it is handed (no globals), and
//! [`crate::sync::SyncLoop`] updates them. Names, types, help texts and buckets follow kube-proxy's
//! `pkg/proxy/metrics/metrics.go` (subsystem `kubeproxy`):
//!
//! | series | type | meaning |
//! |---|---|---|
//! | `kubeproxy_sync_proxy_rules_duration_seconds` | histogram | one dataplane sync (1 ms doubling, 15 buckets) |
//! | `kubeproxy_sync_proxy_rules_last_timestamp_seconds` | gauge | wall time of the last successful sync |
//! | `kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds` | gauge | wall time the last accepted table arrived |
//! | `kubeproxy_sync_proxy_rules_service_changes_pending` | gauge | service ports changed but not yet synced |
//! | `kubeproxy_sync_proxy_rules_service_changes_total` | counter | service ports added, removed or changed, per arriving table |
//! | `kubeproxy_sync_proxy_rules_endpoint_changes_pending` | gauge | endpoints changed but not yet synced |
//! | `kubeproxy_sync_proxy_rules_endpoint_changes_total` | counter | endpoints added, removed or changed, per arriving table |
//! | `kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy}` | gauge | service ports with a `Local` policy whose traffic is dropped for want of a local endpoint |
//! | `svcproxy_sync_service_ports` | gauge | service ports in the last synced table |
//! | `svcproxy_sync_endpoints` | gauge | endpoints in the last synced table |
//! | `svcproxy_sync_failures_total{reason}` | counter | syncs that did not converge: `dataplane_error`, `unsupported_table` |
//! | `svcproxy_syncs_total{mode, result}` | counter | dataplane syncs by `full`/`partial` and `success`/`degraded`/`error` |
//! | `svcproxy_sync_drift_detected_total` | counter | drift checks that found the dataplane changed behind our back (each forces a full sync) |
//! | `kubeproxy_network_programming_duration_seconds` | histogram | from a change at its source to its sync ([`ProgrammingLatency`], fed by a source that knows when each change was made) |
//!
//! kube-proxy's `no_local_endpoints_total` is a gauge despite its name, recounted on each sync; so
//! is ours. kube-proxy runs one proxier per IP family and labels some series `ip_family`; the sync
//! loop drives one dataplane for both families, so these series carry no such label.
//!
//! ```
//! use prometheus_client::registry::Registry;
//! use proxy_core::metrics::{encode_text, SyncMetrics};
//!
//! let mut registry = Registry::default();
//! let _metrics = SyncMetrics::register(&mut registry);
//! let text = encode_text(&registry).unwrap();
//! assert!(text.contains("# TYPE kubeproxy_sync_proxy_rules_duration_seconds histogram"));
//! ```

use std::fmt::{self, Write as _};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

pub mod programming;

pub use programming::ProgrammingLatency;

use crate::dataplane::SyncMode;
use crate::diff::ChangeSet;
use crate::select::{select_endpoints, uses_local_endpoints, Target};
use crate::source::{SkipReason, Skipped};
use crate::table::{ServicePort, ServiceTable, TrafficPolicy};
use std::sync::Arc;

/// The metrics of one sync loop. Cheap to clone: every handle shares its series.
#[derive(Debug, Clone)]
pub struct SyncMetrics {
    sync_duration: Histogram,
    last_timestamp: Gauge<f64, std::sync::atomic::AtomicU64>,
    last_queued_timestamp: Gauge<f64, std::sync::atomic::AtomicU64>,
    service_changes_pending: Gauge,
    service_changes: Counter,
    endpoint_changes_pending: Gauge,
    endpoint_changes: Counter,
    no_local_endpoints: Family<PolicyLabels, Gauge>,
    service_ports: Gauge,
    endpoints: Gauge,
    failures: Family<FailureLabels, Counter>,
    syncs: Family<SyncLabels, Counter>,
    skipped: Family<SkipLabels, Gauge>,
    drift_detected: Counter,
    /// The service ports counted by `no_local_endpoints`, kept so that a partial sync recounts
    /// only the ports it changed.
    dropping: std::sync::Arc<std::sync::Mutex<Dropping>>,
}

/// Service ports whose internal or external traffic is dropped for want of a local endpoint.
#[derive(Debug, Default)]
struct Dropping {
    internal: std::collections::HashSet<crate::table::ServicePortName>,
    external: std::collections::HashSet<crate::table::ServicePortName>,
}

/// The label of the skipped service ports gauge.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SkipLabels {
    reason: SkipReason,
}

/// Which traffic policy a `no_local_endpoints_total` series counts (kube-proxy's label values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PolicyKind {
    /// Traffic to the cluster IPs (`internalTrafficPolicy`).
    Internal,
    /// Traffic to node ports, external and load-balancer IPs (`externalTrafficPolicy`).
    External,
}

impl PolicyKind {
    /// The label value: `internal` or `external`.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::Internal => "internal",
            PolicyKind::External => "external",
        }
    }
}

/// Why a table did not reach the dataplane, or a sync did not converge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureReason {
    /// The dataplane's sync returned an error.
    DataplaneError,
    /// The table asks for features the backend lacks; it was never handed to the dataplane.
    UnsupportedTable,
}

impl FailureReason {
    /// The label value: `dataplane_error` or `unsupported_table`.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::DataplaneError => "dataplane_error",
            FailureReason::UnsupportedTable => "unsupported_table",
        }
    }
}

/// How a dataplane sync ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SyncResult {
    /// Everything in the table was applied.
    Success,
    /// Applied, except for the problems the report lists.
    Degraded,
    /// The sync failed as a whole.
    Error,
}

impl SyncResult {
    /// The label value: `success`, `degraded` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncResult::Success => "success",
            SyncResult::Degraded => "degraded",
            SyncResult::Error => "error",
        }
    }
}

/// Writes an enum's `as_str` as a label value.
macro_rules! label_value {
    ($($ty:ty),*) => {$(
        impl EncodeLabelValue for $ty {
            fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), fmt::Error> {
                encoder.write_str(self.as_str())
            }
        }
    )*};
}

label_value!(PolicyKind, FailureReason, SyncResult, ModeLabel, SkipReason);

/// [`SyncMode`] as a label value (`full`, `partial`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ModeLabel(SyncMode);

impl ModeLabel {
    fn as_str(self) -> &'static str {
        match self.0 {
            SyncMode::Full => "full",
            SyncMode::Partial => "partial",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PolicyLabels {
    traffic_policy: PolicyKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FailureLabels {
    reason: FailureReason,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SyncLabels {
    mode: ModeLabel,
    result: SyncResult,
}

impl SyncMetrics {
    /// Registers every series in `registry` (kube-proxy's under the `kubeproxy` prefix, ours under
    /// `svcproxy`) and returns the handles that update them.
    ///
    /// # Panics
    /// In debug builds, prometheus-client panics if a series of the same name is already registered
    /// (registering twice in one registry); use a sub-registry per loop.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            sync_duration: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            last_timestamp: Gauge::default(),
            last_queued_timestamp: Gauge::default(),
            service_changes_pending: Gauge::default(),
            service_changes: Counter::default(),
            endpoint_changes_pending: Gauge::default(),
            endpoint_changes: Counter::default(),
            no_local_endpoints: Family::default(),
            service_ports: Gauge::default(),
            endpoints: Gauge::default(),
            failures: Family::default(),
            syncs: Family::default(),
            skipped: Family::default(),
            drift_detected: Counter::default(),
            dropping: Default::default(),
        };
        for reason in [
            SkipReason::Invalid,
            SkipReason::Clash,
            SkipReason::Unsupported,
        ] {
            metrics.skipped.get_or_create(&SkipLabels { reason }).set(0);
        }
        // Both policies are always present, zero or not, as in kube-proxy.
        for kind in [PolicyKind::Internal, PolicyKind::External] {
            metrics
                .no_local_endpoints
                .get_or_create(&PolicyLabels {
                    traffic_policy: kind,
                })
                .set(0);
        }
        for reason in [
            FailureReason::DataplaneError,
            FailureReason::UnsupportedTable,
        ] {
            metrics
                .failures
                .get_or_create(&FailureLabels { reason })
                .inc_by(0);
        }

        let kube = registry.sub_registry_with_prefix("kubeproxy");
        kube.register(
            "sync_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds",
            metrics.sync_duration.clone(),
        );
        kube.register(
            "sync_proxy_rules_last_timestamp_seconds",
            "The last time proxy rules were successfully synced",
            metrics.last_timestamp.clone(),
        );
        kube.register(
            "sync_proxy_rules_last_queued_timestamp_seconds",
            "The last time a sync of proxy rules was queued",
            metrics.last_queued_timestamp.clone(),
        );
        kube.register(
            "sync_proxy_rules_service_changes_pending",
            "Pending proxy rules Service changes",
            metrics.service_changes_pending.clone(),
        );
        // prometheus-client appends `_total` to counters.
        kube.register(
            "sync_proxy_rules_service_changes",
            "Cumulative proxy rules Service changes",
            metrics.service_changes.clone(),
        );
        kube.register(
            "sync_proxy_rules_endpoint_changes_pending",
            "Pending proxy rules Endpoint changes",
            metrics.endpoint_changes_pending.clone(),
        );
        kube.register(
            "sync_proxy_rules_endpoint_changes",
            "Cumulative proxy rules Endpoint changes",
            metrics.endpoint_changes.clone(),
        );
        // A gauge: the name keeps kube-proxy's `_total`.
        kube.register(
            "sync_proxy_rules_no_local_endpoints_total",
            "Number of services with a Local traffic policy and no endpoints",
            metrics.no_local_endpoints.clone(),
        );

        let own = registry.sub_registry_with_prefix("svcproxy");
        own.register(
            "sync_service_ports",
            "Service ports in the last successfully synced table",
            metrics.service_ports.clone(),
        );
        own.register(
            "sync_endpoints",
            "Endpoints in the last successfully synced table",
            metrics.endpoints.clone(),
        );
        own.register(
            "sync_failures",
            "Tables or syncs that did not converge, by reason",
            metrics.failures.clone(),
        );
        own.register(
            "syncs",
            "Dataplane syncs, by mode and result",
            metrics.syncs.clone(),
        );
        own.register(
            "sync_skipped_service_ports",
            "Service ports left out of the table or kept at their last good version, by reason",
            metrics.skipped.clone(),
        );
        // kube-proxy has no such series: its canary only forces the next sync to be full.
        own.register(
            "sync_drift_detected",
            "Drift checks that found the dataplane changed behind our back, each forcing a full sync",
            metrics.drift_detected.clone(),
        );
        metrics
    }

    /// A drift check found the dataplane changed behind our back.
    pub(crate) fn record_drift(&self) {
        self.drift_detected.inc();
    }

    /// The service ports skipped now, counted by reason.
    pub(crate) fn set_skipped(&self, skipped: &Skipped) {
        for reason in [
            SkipReason::Invalid,
            SkipReason::Clash,
            SkipReason::Unsupported,
        ] {
            let n = skipped.values().filter(|s| s.reason == reason).count();
            self.skipped
                .get_or_create(&SkipLabels { reason })
                .set(gauge(n));
        }
    }

    /// An accepted table arrived: `seen` is its change from the previous accepted table (counted),
    /// `pending` its change from the last synced one (the pending gauges).
    pub(crate) fn record_queued(&self, seen: &ChangeSet, pending: &ChangeSet) {
        self.last_queued_timestamp.set(unix_now());
        self.service_changes
            .inc_by(count(seen.service_ports_changed()));
        self.endpoint_changes
            .inc_by(count(seen.endpoints_changed()));
        self.set_pending(pending);
    }

    /// Sets the pending gauges from the change between the synced and the desired table.
    pub(crate) fn set_pending(&self, pending: &ChangeSet) {
        self.service_changes_pending
            .set(gauge(pending.service_ports_changed()));
        self.endpoint_changes_pending
            .set(gauge(pending.endpoints_changed()));
    }

    /// A dataplane sync ended (successfully or not) after `elapsed`.
    pub(crate) fn record_sync(&self, mode: SyncMode, result: SyncResult, elapsed: Duration) {
        self.sync_duration.observe(elapsed.as_secs_f64());
        self.syncs
            .get_or_create(&SyncLabels {
                mode: ModeLabel(mode),
                result,
            })
            .inc();
    }

    /// `synced` is now in place: timestamps, sizes, nothing pending, and the no-local-endpoint
    /// gauges recounted with [`select_endpoints`]: for the ports in `changes` when given (a
    /// partial sync: the cost follows the change), else for the whole table.
    pub(crate) fn record_synced(&self, synced: &ServiceTable, changes: Option<&ChangeSet>) {
        self.last_timestamp.set(unix_now());
        self.service_ports.set(gauge(synced.len()));
        self.endpoints.set(gauge(synced.endpoint_count()));
        self.service_changes_pending.set(0);
        self.endpoint_changes_pending.set(0);
        let mut dropping = self
            .dropping
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let dropping = &mut *dropping;
        let touched: Vec<&Arc<ServicePort>> = match changes {
            Some(changes) if changes.node.is_none() && changes.zone.is_none() => {
                for port in &changes.removed {
                    dropping.internal.remove(&port.name);
                    dropping.external.remove(&port.name);
                }
                changes
                    .added
                    .iter()
                    .chain(changes.changed.iter().map(|c| &c.current))
                    .collect()
            }
            _ => {
                dropping.internal.clear();
                dropping.external.clear();
                synced.iter().collect()
            }
        };
        for port in touched {
            let (internal, external) = drops(port);
            for (set, drops) in [
                (&mut dropping.internal, internal),
                (&mut dropping.external, external),
            ] {
                if drops {
                    set.insert(port.name.clone());
                } else {
                    set.remove(&port.name);
                }
            }
        }
        for (kind, n) in [
            (PolicyKind::Internal, dropping.internal.len()),
            (PolicyKind::External, dropping.external.len()),
        ] {
            self.no_local_endpoints
                .get_or_create(&PolicyLabels {
                    traffic_policy: kind,
                })
                .set(gauge(n));
        }
    }

    /// A table or sync failed for `reason`.
    pub(crate) fn record_failure(&self, reason: FailureReason) {
        self.failures.get_or_create(&FailureLabels { reason }).inc();
    }
}

/// Service ports whose internal (resp. external) traffic is dropped because their `Local` policy
/// finds no local endpoint while endpoints exist elsewhere: kube-proxy's
/// `serviceNoLocalEndpointsTotal{Internal,External}` (`pkg/proxy/iptables/proxier.go`). External
/// traffic is counted only for ports reachable from outside.
pub fn no_local_endpoints(table: &ServiceTable) -> (usize, usize) {
    table.iter().fold((0, 0), |(internal, external), port| {
        let (i, e) = drops(port);
        (internal + usize::from(i), external + usize::from(e))
    })
}

/// Whether `port` drops its internal, and its external, traffic for want of a local endpoint.
fn drops(port: &ServicePort) -> (bool, bool) {
    // Skip the selection for the common all-Cluster port.
    if !uses_local_endpoints(port) {
        return (false, false);
    }
    let is_local = |policy| policy == TrafficPolicy::Local;
    let selection = select_endpoints(port);
    let internal = is_local(port.internal_traffic_policy) && selection.internal() == Target::Drop;
    let external = port.has_external_addresses()
        && is_local(port.external_traffic_policy)
        && selection.external() == Target::Drop;
    (internal, external)
}

/// Encodes every series of `registry` in the Prometheus/OpenMetrics text format, for a `/metrics`
/// endpoint.
///
/// # Errors
/// [`fmt::Error`] when a metric of the registry cannot be encoded as text (prometheus-client refuses
/// native-only histograms in this format); the series of this crate always encode.
pub fn encode_text(registry: &Registry) -> Result<String, fmt::Error> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry)?;
    Ok(text)
}

/// Seconds since the Unix epoch (wall clock: the timestamps are compared across hosts).
fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{Endpoint, Protocol, ServicePort, ServicePortName};

    fn endpoint(last: u8, is_local: bool) -> Endpoint {
        let mut ep = Endpoint::new(format!("198.18.1.{last}").parse().expect("valid ip"), 80);
        ep.is_local = is_local;
        ep
    }

    fn port(name: &str, vip: u8, endpoints: Vec<Endpoint>) -> ServicePort {
        let mut port = ServicePort::new(
            ServicePortName::new("default", name, "http"),
            Protocol::Tcp,
            80,
        )
        .with_cluster_ip(format!("198.19.0.{vip}").parse().expect("valid ip"));
        port.endpoints = endpoints;
        port
    }

    #[test]
    fn no_local_endpoints_counts_drops_not_rejects() {
        // internal Local, endpoint only elsewhere: dropped, counted.
        let mut remote = port("remote", 1, vec![endpoint(1, false)]);
        remote.internal_traffic_policy = TrafficPolicy::Local;
        // internal Local, no endpoints at all: rejected, not counted (kube-proxy counts drops).
        let mut empty = port("empty", 2, vec![]);
        empty.internal_traffic_policy = TrafficPolicy::Local;
        // internal Local with a local endpoint: fine.
        let mut local = port("local", 3, vec![endpoint(3, true)]);
        local.internal_traffic_policy = TrafficPolicy::Local;
        // external Local on a node port, endpoint elsewhere: external drop.
        let mut ext = port("ext", 4, vec![endpoint(4, false)]).with_node_port(30080);
        ext.external_traffic_policy = TrafficPolicy::Local;
        // external Local without external addresses: the policy does not apply.
        let mut no_ext = port("noext", 5, vec![endpoint(5, false)]);
        no_ext.external_traffic_policy = TrafficPolicy::Local;
        let table = ServiceTable::builder()
            .insert(remote)
            .insert(empty)
            .insert(local)
            .insert(ext)
            .insert(no_ext)
            .build()
            .expect("valid table");
        assert_eq!(no_local_endpoints(&table), (1, 1));
    }

    #[test]
    fn series_carry_kube_proxy_names_and_suffixes() {
        let mut registry = Registry::default();
        let metrics = SyncMetrics::register(&mut registry);
        metrics.record_failure(FailureReason::UnsupportedTable);
        metrics.record_sync(
            SyncMode::Full,
            SyncResult::Success,
            Duration::from_millis(3),
        );
        let text = encode_text(&registry).expect("encodes");
        for line in [
            "# TYPE kubeproxy_sync_proxy_rules_duration_seconds histogram",
            "kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"0.001\"} 0",
            "kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"0.004\"} 1",
            "kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"16.384\"} 1",
            "kubeproxy_sync_proxy_rules_service_changes_total 0",
            "kubeproxy_sync_proxy_rules_endpoint_changes_total 0",
            "kubeproxy_sync_proxy_rules_service_changes_pending 0",
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy=\"internal\"} 0",
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy=\"external\"} 0",
            "svcproxy_sync_failures_total{reason=\"unsupported_table\"} 1",
            "svcproxy_sync_failures_total{reason=\"dataplane_error\"} 0",
            "svcproxy_syncs_total{mode=\"full\",result=\"success\"} 1",
            "svcproxy_sync_drift_detected_total 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing line {line:?} in:\n{text}"
            );
        }
        let buckets = text
            .lines()
            .filter(|l| l.starts_with("kubeproxy_sync_proxy_rules_duration_seconds_bucket"))
            .count();
        assert_eq!(buckets, 16, "15 buckets and +Inf:\n{text}");
    }
}
