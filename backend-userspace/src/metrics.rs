//! Per-service-port metrics of the proxy: connections accepted, active and failed, bytes each
//! way, UDP flows. kube-proxy has none of these (its proxiers program the kernel and count no
//! connections), so every series takes our own prefix, `svcproxy_userspace_`; the sync loop's
//! kube-proxy-named series are [`proxy_core::metrics::SyncMetrics`]'.
//!
//! The dataplane records into its [`Metrics`] from the start, and
//! [`Dataplane::register_metrics`] registers them in the embedder's root registry. The series of
//! a service port go when a sync removes the port from the table
//! ([`Metrics::remove_service_port`]), so that none outlives its service.
//!
//! [`Dataplane::register_metrics`]: proxy_core::Dataplane::register_metrics
//!
//! | series | type | labels |
//! |---|---|---|
//! | `svcproxy_userspace_connections_accepted_total` | counter | `service_port`, `protocol` |
//! | `svcproxy_userspace_connections_active` | gauge | `service_port`, `protocol` (TCP ports) |
//! | `svcproxy_userspace_connections_failed_total` | counter | `service_port`, `protocol`, `reason` |
//! | `svcproxy_userspace_bytes_total` | counter | `service_port`, `protocol`, `direction` |
//! | `svcproxy_userspace_udp_flows_active` | gauge | `service_port`, `protocol` (UDP ports) |
//! | `svcproxy_userspace_endpoint_ejections_total` | counter | |
//! | `svcproxy_userspace_listeners` | gauge | |
//! | `svcproxy_userspace_accept_errors_total` | counter | |
//!
//! `reason` is `connect_failed`, `no_endpoints`, `dropped`, `flow_table_full` (a listener's UDP
//! flows), `service_port_limit` or `global_limit` (the connection limits of
//! [`crate::ConnectionLimits`]).
//!
//! A port has only the series its protocol can move: a TCP port no `udp_flows_active` and no
//! `flow_table_full` reason, a UDP port no `connections_active` and no `service_port_limit`
//! reason (a series stuck at 0 that can never change reads as a measurement, and dashboards sum
//! it). [`FailureReason::applies_to`] says which reasons apply.
//!
//! ```
//! use backend_userspace::metrics::Metrics;
//! use proxy_core::metrics::encode_text;
//! use proxy_core::prometheus_client::registry::Registry;
//! use proxy_core::table::{Protocol, ServicePortName};
//!
//! # fn main() -> Result<(), std::fmt::Error> {
//! let mut registry = Registry::default();
//! let metrics = Metrics::register(&mut registry);
//! let name = ServicePortName::new("default", "web", "http");
//! metrics.for_service_port(&name, Protocol::Tcp).accepted.inc();
//! let series =
//!     r#"svcproxy_userspace_connections_accepted_total{service_port="default/web:http",protocol="tcp"} 1"#;
//! assert!(encode_text(&registry)?.contains(series));
//! metrics.remove_service_port(&name, Protocol::Tcp);
//! assert!(!encode_text(&registry)?.contains("default/web:http"));
//! # Ok(())
//! # }
//! ```

use std::fmt::{self, Write as _};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use proxy_core::table::{Protocol, ServicePortName};

/// The prefix of every series name.
pub const PREFIX: &str = "svcproxy_userspace";

/// The sub-registry prefix our own series share with the sync loop's (see
/// [`proxy_core::metrics::SyncMetrics::register`]); [`PREFIX`] is it plus [`NAME_PREFIX`].
const OWN_PREFIX: &str = "svcproxy";

/// What each series name starts with inside the [`OWN_PREFIX`] sub-registry.
const NAME_PREFIX: &str = "userspace_";

/// The protocol label's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProtocolLabel {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP (never served; present so every table protocol maps).
    Sctp,
}

impl From<Protocol> for ProtocolLabel {
    fn from(protocol: Protocol) -> Self {
        match protocol {
            Protocol::Tcp => ProtocolLabel::Tcp,
            Protocol::Udp => ProtocolLabel::Udp,
            Protocol::Sctp => ProtocolLabel::Sctp,
        }
    }
}

/// Why a flow did not reach an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureReason {
    /// Every connect attempt failed or timed out.
    ConnectFailed,
    /// The service port has no usable endpoint: the flow was rejected.
    NoEndpoints,
    /// A `Local` policy with no local endpoint, or a source outside the load-balancer ranges.
    Dropped,
    /// The UDP flow table was full.
    FlowTableFull,
    /// The service port held its most TCP connections
    /// ([`crate::UserspaceConfig::max_connections_per_port`]).
    ServicePortLimit,
    /// The proxy held its most TCP connections or UDP flows in all
    /// ([`crate::UserspaceConfig::max_connections`], [`crate::UserspaceConfig::udp_max_flows_total`]).
    GlobalLimit,
}

impl FailureReason {
    /// Whether flows of `protocol` can fail for this reason: the UDP flow table is UDP's, the
    /// per-service-port connection limit TCP's.
    pub fn applies_to(self, protocol: Protocol) -> bool {
        match self {
            FailureReason::FlowTableFull => protocol == Protocol::Udp,
            FailureReason::ServicePortLimit => protocol == Protocol::Tcp,
            FailureReason::ConnectFailed
            | FailureReason::NoEndpoints
            | FailureReason::Dropped
            | FailureReason::GlobalLimit => true,
        }
    }

    /// Every reason, in label order.
    pub const ALL: [FailureReason; 6] = [
        FailureReason::ConnectFailed,
        FailureReason::NoEndpoints,
        FailureReason::Dropped,
        FailureReason::FlowTableFull,
        FailureReason::ServicePortLimit,
        FailureReason::GlobalLimit,
    ];
}

/// Which way bytes went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the client to the endpoint.
    ToEndpoint,
    /// From the endpoint back to the client.
    ToClient,
}

impl Direction {
    /// Both directions.
    pub const ALL: [Direction; 2] = [Direction::ToEndpoint, Direction::ToClient];
}

/// Label values are snake_case strings.
macro_rules! label_values {
    ($ty:ty { $($variant:ident => $text:literal),* $(,)? }) => {
        impl $ty {
            /// The label value.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),* }
            }
        }
        impl EncodeLabelValue for $ty {
            fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> fmt::Result {
                encoder.write_str(self.as_str())
            }
        }
    };
}

label_values!(ProtocolLabel { Tcp => "tcp", Udp => "udp", Sctp => "sctp" });
label_values!(FailureReason {
    ConnectFailed => "connect_failed",
    NoEndpoints => "no_endpoints",
    Dropped => "dropped",
    FlowTableFull => "flow_table_full",
    ServicePortLimit => "service_port_limit",
    GlobalLimit => "global_limit",
});
label_values!(Direction { ToEndpoint => "to_endpoint", ToClient => "to_client" });

/// Labels of a per-service-port series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ServicePortLabels {
    /// `namespace/name:port`.
    pub service_port: String,
    /// The protocol.
    pub protocol: ProtocolLabel,
}

/// Labels of the failure counter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct FailureLabels {
    /// `namespace/name:port`.
    pub service_port: String,
    /// The protocol.
    pub protocol: ProtocolLabel,
    /// Why.
    pub reason: FailureReason,
}

/// Labels of the byte counter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ByteLabels {
    /// `namespace/name:port`.
    pub service_port: String,
    /// The protocol.
    pub protocol: ProtocolLabel,
    /// Which way.
    pub direction: Direction,
}

/// The backend's metric families. Cloning shares them (each family is an `Arc`).
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// TCP connections accepted (and UDP flows opened) per service port.
    pub connections_accepted: Family<ServicePortLabels, Counter>,
    /// TCP connections open to an endpoint now.
    pub connections_active: Family<ServicePortLabels, Gauge>,
    /// Flows that reached no endpoint, by reason.
    pub connections_failed: Family<FailureLabels, Counter>,
    /// Bytes relayed, by direction.
    pub bytes: Family<ByteLabels, Counter>,
    /// UDP flows in the flow tables now.
    pub udp_flows_active: Family<ServicePortLabels, Gauge>,
    /// Endpoints ejected after repeated connect failures.
    pub endpoint_ejections: Counter,
    /// Listening sockets open now.
    pub listeners: Gauge,
    /// `accept` calls that failed and made the listener back off (descriptors, buffers or
    /// memory ran out).
    pub accept_errors: Counter,
}

impl Metrics {
    /// Creates the families and registers them in `registry` (the root registry: names get
    /// [`PREFIX`]). A dataplane makes its own and registers them in
    /// [`Dataplane::register_metrics`](proxy_core::Dataplane::register_metrics); this is for
    /// code that uses [`Metrics::for_service_port`] on its own.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        metrics.register_in(registry);
        metrics
    }

    /// Registers these families, with the series they already have, in `registry` (the root
    /// registry: names get [`PREFIX`]). Handles taken before stay live.
    pub(crate) fn register_in(&self, registry: &mut Registry) {
        let sub = registry.sub_registry_with_prefix(OWN_PREFIX);
        let name = |name: &str| format!("{NAME_PREFIX}{name}");
        sub.register(
            name("connections_accepted"),
            "TCP connections accepted and UDP flows opened, per service port",
            self.connections_accepted.clone(),
        );
        sub.register(
            name("connections_active"),
            "TCP connections open to an endpoint, per service port",
            self.connections_active.clone(),
        );
        sub.register(
            name("connections_failed"),
            "Flows that reached no endpoint, per service port and reason",
            self.connections_failed.clone(),
        );
        sub.register(
            name("bytes"),
            "Bytes relayed per service port and direction",
            self.bytes.clone(),
        );
        sub.register(
            name("udp_flows_active"),
            "UDP flows in the flow tables, per service port",
            self.udp_flows_active.clone(),
        );
        sub.register(
            name("endpoint_ejections"),
            "Endpoints ejected after repeated connect failures",
            self.endpoint_ejections.clone(),
        );
        sub.register(
            name("listeners"),
            "Listening sockets open",
            self.listeners.clone(),
        );
        sub.register(
            name("accept_errors"),
            "Failed accepts (descriptors, buffers or memory ran out); the listener backs off",
            self.accept_errors.clone(),
        );
    }

    /// The series of one service port, resolved once so that the data path touches only atomics.
    /// Only the series `protocol` can move are created (see the [module docs](self)); the
    /// handles of the others count into nothing a registry shows.
    pub fn for_service_port(&self, name: &ServicePortName, protocol: Protocol) -> PortMetrics {
        let labels = ServicePortLabels {
            service_port: name.to_string(),
            protocol: protocol.into(),
        };
        let failed = |reason: FailureReason| {
            if !reason.applies_to(protocol) {
                return Counter::default();
            }
            self.connections_failed.get_or_create_owned(&FailureLabels {
                service_port: labels.service_port.clone(),
                protocol: labels.protocol,
                reason,
            })
        };
        let gauge_if = |family: &Family<ServicePortLabels, Gauge>, applies: bool| {
            if applies {
                family.get_or_create_owned(&labels)
            } else {
                Gauge::default()
            }
        };
        let bytes = |direction| {
            self.bytes.get_or_create_owned(&ByteLabels {
                service_port: labels.service_port.clone(),
                protocol: labels.protocol,
                direction,
            })
        };
        PortMetrics {
            accepted: self.connections_accepted.get_or_create_owned(&labels),
            active: gauge_if(&self.connections_active, protocol == Protocol::Tcp),
            connect_failed: failed(FailureReason::ConnectFailed),
            no_endpoints: failed(FailureReason::NoEndpoints),
            dropped: failed(FailureReason::Dropped),
            flow_table_full: failed(FailureReason::FlowTableFull),
            port_limit: failed(FailureReason::ServicePortLimit),
            global_limit: failed(FailureReason::GlobalLimit),
            bytes_to_endpoint: bytes(Direction::ToEndpoint),
            bytes_to_client: bytes(Direction::ToClient),
            udp_flows: gauge_if(&self.udp_flows_active, protocol == Protocol::Udp),
            ejections: self.endpoint_ejections.clone(),
            accept_errors: self.accept_errors.clone(),
        }
    }

    /// Removes every series of one service port (what [`Metrics::for_service_port`] creates),
    /// once the port has left the table. Flows still open keep their handles and go on counting
    /// into series no registry shows any more; if the port comes back, its series start again.
    pub fn remove_service_port(&self, name: &ServicePortName, protocol: Protocol) {
        let labels = ServicePortLabels {
            service_port: name.to_string(),
            protocol: protocol.into(),
        };
        self.connections_accepted.remove(&labels);
        self.connections_active.remove(&labels);
        self.udp_flows_active.remove(&labels);
        for reason in FailureReason::ALL {
            self.connections_failed.remove(&FailureLabels {
                service_port: labels.service_port.clone(),
                protocol: labels.protocol,
                reason,
            });
        }
        for direction in Direction::ALL {
            self.bytes.remove(&ByteLabels {
                service_port: labels.service_port.clone(),
                protocol: labels.protocol,
                direction,
            });
        }
    }
}

/// One service port's series (handles into [`Metrics`]).
#[derive(Debug, Clone)]
pub struct PortMetrics {
    /// Connections accepted / flows opened.
    pub accepted: Counter,
    /// Connections open now.
    pub active: Gauge,
    /// Connect failures (all attempts failed).
    pub connect_failed: Counter,
    /// Rejected: no endpoints.
    pub no_endpoints: Counter,
    /// Dropped by policy or source range.
    pub dropped: Counter,
    /// UDP flow table full.
    pub flow_table_full: Counter,
    /// Refused: the service port's connection limit.
    pub port_limit: Counter,
    /// Refused: the proxy's connection (or UDP flow) limit.
    pub global_limit: Counter,
    /// Bytes client → endpoint.
    pub bytes_to_endpoint: Counter,
    /// Bytes endpoint → client.
    pub bytes_to_client: Counter,
    /// UDP flows now.
    pub udp_flows: Gauge,
    /// Endpoint ejections (shared by all ports).
    pub ejections: Counter,
    /// Failed accepts (shared by all ports).
    pub accept_errors: Counter,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proxy_core::metrics::encode_text;

    #[test]
    fn a_port_has_only_the_series_its_protocol_moves() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        let web = ServicePortName::new("default", "web", "http");
        let dns = ServicePortName::new("default", "dns", "dns");
        let _web = metrics.for_service_port(&web, Protocol::Tcp);
        let _dns = metrics.for_service_port(&dns, Protocol::Udp);
        let text = encode_text(&registry).expect("encode");
        let series = |name: &str, port: &str| {
            text.lines()
                .filter(|line| line.starts_with(name) && line.contains(port))
                .count()
        };
        let (web, dns) = ("\"default/web:http\"", "\"default/dns:dns\"");
        assert_eq!(
            series("svcproxy_userspace_udp_flows_active", web),
            0,
            "{text}"
        );
        assert_eq!(
            series("svcproxy_userspace_udp_flows_active", dns),
            1,
            "{text}"
        );
        assert_eq!(
            series("svcproxy_userspace_connections_active", web),
            1,
            "{text}"
        );
        assert_eq!(
            series("svcproxy_userspace_connections_active", dns),
            0,
            "{text}"
        );
        assert!(
            !text.contains("protocol=\"tcp\",reason=\"flow_table_full\""),
            "{text}"
        );
        assert!(
            !text.contains("protocol=\"udp\",reason=\"service_port_limit\""),
            "{text}"
        );
        // Four reasons apply to both, one more to each.
        assert_eq!(
            series("svcproxy_userspace_connections_failed_total", web),
            5,
            "{text}"
        );
        assert_eq!(
            series("svcproxy_userspace_connections_failed_total", dns),
            5,
            "{text}"
        );
    }
}
