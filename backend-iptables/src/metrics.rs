//! The backend's metrics, with kube-proxy's names, types, help and buckets
//! (`pkg/proxy/metrics/metrics.go`), registered by [`Metrics::register`] in the embedder's root
//! registry under the `kubeproxy` prefix, as [`proxy_core::metrics::SyncMetrics`] registers the
//! sync loop's (the embedder calls [`proxy_core::Dataplane::register_metrics`]). Every series
//! here is one kube-proxy has, so nothing goes under our own `svcproxy` prefix. Per-table series
//! carry kube-proxy's `ip_family` label (kubernetes/kubernetes PR 129173) as well as `table`; no
//! series is labelled by service port, so a deleted port leaves nothing behind.
//!
//! | series | type |
//! |---|---|
//! | `kubeproxy_sync_full_proxy_rules_duration_seconds` | histogram (1 ms doubling, 15 buckets) |
//! | `kubeproxy_sync_partial_proxy_rules_duration_seconds` | histogram |
//! | `kubeproxy_sync_proxy_rules_iptables_restore_failures_total` | counter |
//! | `kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total` | counter |
//! | `kubeproxy_sync_proxy_rules_iptables_total{ip_family, table}` | gauge: rules we own |
//! | `kubeproxy_sync_proxy_rules_iptables_last{ip_family, table}` | gauge: rules the last sync wrote |

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family as MetricFamily;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::plan::{Applied, Plan};
use crate::rules::{Family, TableName};

/// `ip_family` label values, as kube-proxy writes them.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum IpFamily {
    /// IPv4.
    IPv4,
    /// IPv6.
    IPv6,
}

/// `table` label values.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum TableLabel {
    /// The filter table.
    filter,
    /// The nat table.
    nat,
}

/// Labels of the per-table series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabels {
    /// Address family.
    pub ip_family: IpFamily,
    /// Table.
    pub table: TableLabel,
}

impl TableLabels {
    fn new(family: Family, table: TableName) -> Self {
        Self {
            ip_family: match family {
                Family::V4 => IpFamily::IPv4,
                Family::V6 => IpFamily::IPv6,
            },
            table: match table {
                TableName::Filter => TableLabel::filter,
                TableName::Nat => TableLabel::nat,
            },
        }
    }
}

/// The iptables backend's metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// `kubeproxy_sync_full_proxy_rules_duration_seconds`.
    pub full_sync_duration: Histogram,
    /// `kubeproxy_sync_partial_proxy_rules_duration_seconds`.
    pub partial_sync_duration: Histogram,
    /// `kubeproxy_sync_proxy_rules_iptables_restore_failures` (`_total` added on encoding).
    pub restore_failures: Counter,
    /// `kubeproxy_sync_proxy_rules_iptables_partial_restore_failures`.
    pub partial_restore_failures: Counter,
    /// `kubeproxy_sync_proxy_rules_iptables_total{ip_family, table}`: rules we own per table.
    pub rules_total: MetricFamily<TableLabels, Gauge>,
    /// `kubeproxy_sync_proxy_rules_iptables_last{ip_family, table}`: rules written by the last
    /// sync per table.
    pub rules_last: MetricFamily<TableLabels, Gauge>,
}

fn sync_buckets() -> Histogram {
    // kube-proxy: 1 ms doubling, 15 buckets.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`, the embedder's root registry, under
    /// the `kubeproxy` prefix.
    ///
    /// # Panics
    /// In debug builds, prometheus-client panics if a series of the same name is already
    /// registered (registering twice in one registry).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            full_sync_duration: sync_buckets(),
            partial_sync_duration: sync_buckets(),
            restore_failures: Counter::default(),
            partial_restore_failures: Counter::default(),
            rules_total: MetricFamily::default(),
            rules_last: MetricFamily::default(),
        };
        let registry = registry.sub_registry_with_prefix("kubeproxy");
        registry.register(
            "sync_full_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for full resyncs",
            m.full_sync_duration.clone(),
        );
        registry.register(
            "sync_partial_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for partial resyncs",
            m.partial_sync_duration.clone(),
        );
        registry.register(
            "sync_proxy_rules_iptables_restore_failures",
            "Cumulative proxy iptables restore failures",
            m.restore_failures.clone(),
        );
        registry.register(
            "sync_proxy_rules_iptables_partial_restore_failures",
            "Cumulative proxy iptables partial restore failures",
            m.partial_restore_failures.clone(),
        );
        registry.register(
            "sync_proxy_rules_iptables_total",
            "Total number of iptables rules owned by kube-proxy",
            m.rules_total.clone(),
        );
        registry.register(
            "sync_proxy_rules_iptables_last",
            "Number of iptables rules written by kube-proxy in last sync",
            m.rules_last.clone(),
        );
        m
    }

    /// Records a successful sync: its duration and rule counts.
    pub fn record_sync(&self, plan: &Plan, applied: &Applied, seconds: f64) {
        match plan.mode {
            proxy_core::SyncMode::Full => self.full_sync_duration.observe(seconds),
            proxy_core::SyncMode::Partial => self.partial_sync_duration.observe(seconds),
        }
        for family in Family::ALL {
            for table in [TableName::Filter, TableName::Nat] {
                let labels = TableLabels::new(family, table);
                let total = i64::try_from(applied.rule_count(family, table)).unwrap_or(i64::MAX);
                self.rules_total.get_or_create(&labels).set(total);
                let last = plan
                    .restore(family, table)
                    .map_or(0, |r| r.table.rule_count());
                self.rules_last
                    .get_or_create(&labels)
                    .set(i64::try_from(last).unwrap_or(i64::MAX));
            }
        }
    }

    /// Records a failed restore.
    pub fn record_failure(&self, mode: proxy_core::SyncMode) {
        self.restore_failures.inc();
        if mode == proxy_core::SyncMode::Partial {
            self.partial_restore_failures.inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::IptablesConfig;
    use crate::plan::Planner;
    use prometheus_client::encoding::text::encode;
    use proxy_core::table::{Endpoint, Protocol, ServicePort, ServicePortName, ServiceTable};

    #[test]
    fn encodes_kube_proxy_names_with_family_and_table() {
        // The root registry, as embedders pass it: the prefix is ours to add.
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        let table = ServiceTable::builder()
            .insert(
                ServicePort::new(ServicePortName::new("ns", "s", "p"), Protocol::Tcp, 80)
                    .with_cluster_ip("198.19.0.1".parse().expect("ip"))
                    .with_endpoint(Endpoint::new("198.18.0.1".parse().expect("ip"), 80)),
            )
            .build()
            .expect("valid");
        let planner = Planner::new(IptablesConfig::default()).expect("valid");
        let plan = planner.plan_full(&table);
        let mut applied = Applied::new();
        applied.commit(&plan);
        metrics.record_sync(&plan, &applied, 0.003);
        metrics.record_failure(proxy_core::SyncMode::Partial);
        let mut text = String::new();
        encode(&mut text, &registry).expect("encode");
        let nat_v4 = applied.rule_count(Family::V4, TableName::Nat);
        for want in [
            "kubeproxy_sync_full_proxy_rules_duration_seconds_count 1".to_owned(),
            "kubeproxy_sync_proxy_rules_iptables_restore_failures_total 1".to_owned(),
            "kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total 1".to_owned(),
            format!(
                "kubeproxy_sync_proxy_rules_iptables_total{{ip_family=\"IPv4\",table=\"nat\"}} {nat_v4}"
            ),
        ] {
            assert!(text.contains(&want), "missing {want:?} in\n{text}");
        }
    }

    #[test]
    fn beside_the_sync_loop_every_series_has_a_prefix() {
        let mut registry = Registry::default();
        let _loop_metrics = proxy_core::metrics::SyncMetrics::register(&mut registry);
        let _ours = Metrics::register(&mut registry);
        let mut text = String::new();
        encode(&mut text, &registry).expect("encode");
        let bare: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter(|l| !l.starts_with("kubeproxy_") && !l.starts_with("svcproxy_"))
            .collect();
        assert!(bare.is_empty(), "series without a prefix: {bare:?}\n{text}");
        assert!(
            text.contains("# TYPE kubeproxy_sync_partial_proxy_rules_duration_seconds histogram"),
            "{text}"
        );
    }
}
