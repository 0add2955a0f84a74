//! Property: any valid table renders to YAML that parses back to the same table.

use std::net::IpAddr;
use std::time::Duration;

use proptest::prelude::*;
use proxy_core::dataplane::Capabilities;
use proxy_core::file::{parse_spec, parse_table, render_table_yaml};
use proxy_core::table::{
    Endpoint, Protocol, Scheduler, ServicePort, ServicePortName, ServiceTable, SessionAffinity,
    TrafficPolicy,
};
use proxy_core::tracker::ChangeTracker;

fn protocol() -> impl Strategy<Value = Protocol> {
    prop::sample::select(Protocol::ALL.to_vec())
}

fn policy() -> impl Strategy<Value = TrafficPolicy> {
    prop_oneof![Just(TrafficPolicy::Cluster), Just(TrafficPolicy::Local)]
}

fn node_name() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop::sample::select(vec![
        "node-a".to_owned(),
        "node-b".to_owned(),
    ]))
}

fn endpoint() -> impl Strategy<Value = Endpoint> {
    (
        (any::<u8>(), any::<u8>(), 1..=u16::MAX),
        node_name(),
        (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()),
        prop::option::of("zone-[a-c]"),
        prop_oneof![Just(1u32), 0..=i32::MAX.unsigned_abs()],
        prop::collection::vec("zone-[a-c]", 0..3),
        prop::collection::vec("node-[a-c]", 0..2),
    )
        .prop_map(
            |(
                (hi, lo, port),
                node,
                (is_local, ready, serving, terminating),
                zone,
                weight,
                zone_hints,
                node_hints,
            )| {
                Endpoint {
                    addr: IpAddr::from([198, 18, hi, lo]),
                    port,
                    node,
                    is_local,
                    ready,
                    serving,
                    terminating,
                    zone,
                    weight,
                    zone_hints,
                    node_hints,
                }
            },
        )
}

/// The ports of one service; service-wide fields are shared unless `vary` says otherwise, so
/// both merged and split renderings occur.
fn service(index: u8) -> impl Strategy<Value = Vec<ServicePort>> {
    (
        prop::collection::btree_set("[a-z]{0,3}", 1..4),
        prop::collection::vec(
            (
                protocol(),
                1..=u16::MAX,
                prop::option::of(1..=u16::MAX),
                any::<bool>(),
            ),
            3,
        ),
        (
            any::<bool>(),
            prop::option::of(1u64..=86_400),
            policy(),
            policy(),
        ),
        (
            prop::option::of(prop::sample::select(Scheduler::ALL.to_vec())),
            prop::option::of(40_000..=40_009u16),
            prop::collection::vec(endpoint(), 0..4),
            prop::option::of(prop_oneof![Just(1u64), Just(86_400u64), 1u64..=86_400]),
        ),
    )
        .prop_map(
            move |(names, numbers, policies, (scheduler, health, endpoints, idle))| {
                let (has_ipv6, timeout, external, internal) = policies;
                names
                    .into_iter()
                    .zip(numbers)
                    .enumerate()
                    .map(|(i, (name, (protocol, port, node_port, vary)))| {
                        let mut p = ServicePort::new(
                            ServicePortName::new("ns", format!("svc-{index}"), name),
                            protocol,
                            port,
                        )
                        .with_cluster_ip(IpAddr::from([198, 19, index, 1]));
                        if has_ipv6 {
                            p.cluster_ips
                                .push(format!("2001:db8::{index}").parse().expect("v6"));
                        }
                        p.target_port = port.wrapping_add(u16::from(vary)).max(1);
                        p.node_port = node_port.map(|n| 30_000 + n % 2_000);
                        p.external_ips = vec![IpAddr::from([198, 18, 200, index])];
                        if vary {
                            p.load_balancer_ips = vec![IpAddr::from([198, 18, 201, index])];
                            p.load_balancer_source_ranges =
                                vec!["198.18.0.0/16".parse().expect("net")];
                        }
                        p.session_affinity = timeout.map_or(SessionAffinity::None, |secs| {
                            SessionAffinity::ClientIp {
                                timeout: Duration::from_secs(secs),
                            }
                        });
                        p.external_traffic_policy = external;
                        p.internal_traffic_policy = internal;
                        p.scheduler = scheduler;
                        p.health_check_node_port = health.map(|h| h + u16::from(index) * 10);
                        // Ports that vary get their own idle timeout, so they render apart.
                        p.idle_timeout =
                            idle.map(|s| Duration::from_secs(s.max(2) - u64::from(vary)));
                        // A per-port endpoint port now and then, through the `port` override.
                        p.endpoints = endpoints
                            .iter()
                            .map(|e| {
                                let mut e = e.clone();
                                if e.port % 2 == 0 {
                                    e.port = p.target_port;
                                }
                                if i > 0 && vary {
                                    e.weight = e.weight.saturating_sub(1);
                                }
                                e
                            })
                            .collect();
                        p
                    })
                    .collect()
            },
        )
}

fn table() -> impl Strategy<Value = ServiceTable> {
    (node_name(), prop::option::of("zone-[a-c]"), 0u8..5)
        .prop_flat_map(|(node, zone, count)| {
            let services: Vec<_> = (0..count).map(service).collect();
            (Just(node), Just(zone), services)
        })
        .prop_filter_map("valid tables only", |(node, zone, services)| {
            let mut builder = ServiceTable::builder();
            builder.set_node(node);
            builder.set_zone(zone);
            for port in services.into_iter().flatten() {
                builder.upsert(port);
            }
            builder.build().ok()
        })
}

proptest! {
    #[test]
    fn rendered_table_parses_back_to_itself(table in table()) {
        let text = render_table_yaml(&table);
        let parsed = parse_table(&text, "rendered.yaml");
        prop_assert!(parsed.is_ok(), "{}\n{}", parsed.err().map(|e| e.to_string()).unwrap_or_default(), text);
        prop_assert_eq!(parsed.ok(), Some(table), "rendered:\n{}", text);
    }

    /// One path: a valid file fed to the change tracker gives the same table as the file read
    /// whole, with nothing skipped; and feeding it again changes nothing.
    #[test]
    fn a_valid_file_through_the_tracker_is_the_same_table(table in table()) {
        let text = render_table_yaml(&table);
        let spec = parse_spec(&text, "rendered.yaml").expect("renders parse");
        let (mut tracker, _source) = ChangeTracker::new("any", Capabilities::everything());
        spec.apply_to(&mut tracker);
        prop_assert!(tracker.skipped().is_empty(), "{:?}", tracker.skipped());
        prop_assert_eq!(tracker.table(), &table, "rendered:\n{}", text);
        let before = tracker.table().clone();
        spec.apply_to(&mut tracker);
        prop_assert!(proxy_core::diff(&before, tracker.table()).is_empty());
    }
}
