//! Packet flows through the rendered rules, per case, in every dispatch layout.

mod cases;

use std::net::SocketAddr;

use backend_iptables::config::{DispatchLayout, InlineBalancing, IptablesConfig, TreeConfig};
use backend_iptables::plan::Planner;
use backend_iptables::rules::Family;
use backend_iptables::testing::trace::{run_packet_flows, Packet, Trace, Tracer};
use proxy_core::ServiceTable;

fn tracer(config: &IptablesConfig, table: &ServiceTable, family: Family) -> Tracer {
    let planner = Planner::new(config.clone()).expect("valid config");
    let plan = planner.plan_full(table);
    Tracer::from_plan(&planner, &plan, family, cases::local_addrs()).expect("our rules parse")
}

/// The layouts every case is traced in: flat dispatch, the tree with a chain per service port,
/// and the tree with inline balancing (the default), each with the case's other settings.
fn layouts(config: &IptablesConfig) -> Vec<(&'static str, IptablesConfig)> {
    let with = |dispatch, inline_balancing| IptablesConfig {
        dispatch,
        tree: TreeConfig {
            inline_balancing,
            ..config.tree
        },
        ..config.clone()
    };
    vec![
        ("flat", with(DispatchLayout::Flat, InlineBalancing::Never)),
        (
            "tree, per-port chains",
            with(DispatchLayout::Tree, InlineBalancing::Never),
        ),
        (
            "tree, inline balancing",
            with(DispatchLayout::Tree, InlineBalancing::Always),
        ),
    ]
}

#[test]
fn every_case_passes_its_packet_flows_in_every_layout() {
    let mut failures = Vec::new();
    for case in cases::cases() {
        for (layout, config) in layouts(&case.config) {
            for family in Family::ALL {
                let flows: Vec<_> = case
                    .flows
                    .iter()
                    .filter(|f| family.contains(cases::ip(f.dst)))
                    .cloned()
                    .collect();
                if flows.is_empty() {
                    continue;
                }
                let tracer = tracer(&config, &case.table, family);
                for failure in run_packet_flows(&tracer, &flows) {
                    failures.push(format!("{} ({layout}, {family}): {failure}", case.name));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn case(name: &str) -> cases::Case {
    cases::cases()
        .into_iter()
        .find(|c| c.name == name)
        .expect("case exists")
}

fn trace(case: &cases::Case, packet: Packet) -> Trace {
    let family = Family::of(packet.dst);
    tracer(&case.config, &case.table, family)
        .trace(&packet)
        .expect("trace")
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

#[test]
fn even_split_over_three_endpoints() {
    let c = case("cluster_ip_three_endpoints");
    let t = trace(&c, Packet::tcp(cases::POD, "198.19.0.1", 80));
    let d = t.destinations();
    assert_eq!(d.len(), 3, "{t}");
    for (to, p) in &d {
        assert!((p - 1.0 / 3.0).abs() < 1e-9, "{to}: {p}\n{t}");
    }
}

#[test]
fn weights_are_respected() {
    let c = case("weights");
    let t = trace(&c, Packet::tcp(cases::POD, "198.19.0.2", 80));
    let d = t.destinations();
    for (to, want) in [
        ("198.18.2.21:80", 1.0 / 6.0),
        ("198.18.2.22:80", 2.0 / 6.0),
        ("198.18.2.23:80", 3.0 / 6.0),
    ] {
        let got = d.get(&addr(to)).copied().unwrap_or(0.0);
        assert!(
            (got - want).abs() < 1e-9,
            "{to}: want {want}, got {got}\n{t}"
        );
    }
}

#[test]
fn hairpin_is_masqueraded_only_when_the_endpoint_picks_itself() {
    let c = case("cluster_ip_three_endpoints");
    // The local pod 198.18.1.3, an endpoint of the service, calls the service.
    let t = trace(&c, Packet::tcp("198.18.1.3", "198.19.0.1", 80));
    assert_eq!(
        t.masq(),
        None,
        "mixed: only the self-pick is masqueraded\n{t}"
    );
    for o in &t.outcomes {
        let to_self = o.verdict.to_string() == "198.18.1.3:8080";
        assert_eq!(o.masq, to_self, "{t}");
    }
    // And the split stays even for the hairpinning client.
    for (to, p) in t.destinations() {
        assert!((p - 1.0 / 3.0).abs() < 1e-9, "{to}: {p}\n{t}");
    }
}

#[test]
fn hairpin_of_the_last_endpoint_is_masqueraded() {
    // iTP=Local: the SVL chain has the single local endpoint, so it is also the last one.
    let c = case("itp_local");
    let t = trace(&c, Packet::tcp("198.18.1.8", "198.19.0.8", 80));
    assert_eq!(t.summary(), "198.18.1.8:80", "{t}");
    assert_eq!(t.masq(), Some(true), "{t}");
}

#[test]
fn remote_endpoints_get_hairpin_rules_only_when_asked() {
    let c = case("cluster_ip_three_endpoints");
    let packet = Packet::tcp("198.18.2.1", "198.19.0.1", 80);
    let default = trace(&c, packet.clone());
    assert_eq!(default.masq(), Some(false), "{default}");
    let config = IptablesConfig {
        hairpin_all_endpoints: true,
        ..c.config.clone()
    };
    let all = tracer(&config, &c.table, Family::V4)
        .trace(&packet)
        .expect("trace");
    for o in &all.outcomes {
        assert_eq!(o.masq, o.verdict.to_string() == "198.18.2.1:8080", "{all}");
    }
    // The last endpoint too (no statistic rule of its own).
    let last = tracer(&config, &c.table, Family::V4)
        .trace(&Packet::tcp("198.18.2.2", "198.19.0.1", 80))
        .expect("trace");
    for o in &last.outcomes {
        assert_eq!(o.masq, o.verdict.to_string() == "198.18.2.2:8080", "{last}");
    }
}

#[test]
fn comments_can_be_left_out() {
    let c = case("etp_local");
    let config = IptablesConfig {
        comments: false,
        ..c.config.clone()
    };
    let planner = Planner::new(config.clone()).expect("valid");
    let text = planner.plan_full(&c.table).render();
    assert!(!text.contains("--comment"), "{text}");
    let flows: Vec<_> = c.flows.clone();
    let failures = backend_iptables::testing::trace::run_packet_flows(
        &tracer(&config, &c.table, Family::V4),
        &flows,
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn affinity_hairpin_masquerades_in_the_endpoint_chain() {
    let c = case("affinity");
    let t = trace(&c, Packet::tcp("198.18.2.7", "198.19.0.6", 80));
    for o in &t.outcomes {
        assert_eq!(o.masq, o.verdict.to_string() == "198.18.2.7:80", "{t}");
    }
}

#[test]
fn tree_walks_fewer_rules_than_flat_for_the_last_service() {
    let c = case("tree_40_services");
    let packet = Packet::tcp(cases::POD, "198.19.1.39", 80);
    let walked = |layout| {
        let config = IptablesConfig {
            dispatch: layout,
            ..c.config.clone()
        };
        tracer(&config, &c.table, Family::V4)
            .trace(&packet)
            .expect("trace")
            .max_nat_rules_walked()
    };
    let (flat, tree) = (walked(DispatchLayout::Flat), walked(DispatchLayout::Tree));
    assert!(tree < flat, "tree {tree} vs flat {flat}");
}

/// Topology hints (read by proxy-core's shared selection) reach the rules: in zone-a, only the
/// endpoints hinted for zone-a get cluster traffic; when the node moves to a zone no endpoint
/// is hinted for, every endpoint does again.
#[test]
fn zone_hints_steer_cluster_traffic_to_this_zone() {
    let hinted = |addr: &str, zone: &str| {
        let mut ep = cases::remote(addr, 8080);
        ep.zone_hints = vec![zone.to_owned()];
        ep
    };
    let web = cases::port("web", proxy_core::Protocol::Tcp, "198.19.0.1", 80)
        .with_endpoint(hinted("198.18.2.1", "zone-a"))
        .with_endpoint(hinted("198.18.2.2", "zone-b"))
        .with_endpoint(hinted("198.18.2.3", "zone-a"));
    let config = cases::config();
    let in_zone = |zone: &str| {
        let table = ServiceTable::builder()
            .node("node-a")
            .zone(zone)
            .insert(web.clone())
            .build()
            .expect("valid table");
        let t = tracer(&config, &table, Family::V4)
            .trace(&Packet::tcp(cases::POD, "198.19.0.1", 80))
            .expect("trace");
        // A map: its keys come sorted.
        t.destinations().into_keys().collect::<Vec<SocketAddr>>()
    };
    assert_eq!(
        in_zone("zone-a"),
        [addr("198.18.2.1:8080"), addr("198.18.2.3:8080")]
    );
    assert_eq!(
        in_zone("zone-c"),
        [
            addr("198.18.2.1:8080"),
            addr("198.18.2.2:8080"),
            addr("198.18.2.3:8080")
        ]
    );
}

#[test]
fn hairpin_in_a_shared_leaf_is_masqueraded_only_when_the_endpoint_picks_itself() {
    let c = case("tree_inline_leaves");
    // 198.18.1.3 is port 3's local endpoint; port 3's rules sit in a leaf after port 2's.
    let t = trace(&c, Packet::tcp("198.18.1.3", "198.19.2.3", 80));
    for o in &t.outcomes {
        let to_self = o.verdict.to_string() == "198.18.1.3:80";
        assert_eq!(o.masq, to_self, "{t}");
    }
    for (to, p) in t.destinations() {
        assert!((p - 1.0 / 3.0).abs() < 1e-9, "{to}: {p}\n{t}");
    }
}

#[test]
fn only_ports_that_need_a_chain_get_one() {
    let c = case("tree_inline_leaves");
    let planner = Planner::new(c.config.clone()).expect("valid config");
    let plan = planner.plan_full(&c.table);
    let nat = plan
        .restore(Family::V4, backend_iptables::rules::TableName::Nat)
        .expect("nat");
    let service_chains: Vec<&str> = nat
        .table
        .chains
        .iter()
        .map(|chain| chain.name.as_str())
        .filter(|name| name.contains("-SVC-") || name.contains("-SVL-"))
        .collect();
    // Port 5's 10 endpoints do not fit in a leaf of 10 rules (with its masquerade rule): its
    // own chain; every other port is inline, two to a leaf.
    let port5 = planner.names().service_cluster(
        &proxy_core::ServicePortName::new("ns", "c05", "p"),
        proxy_core::Protocol::Tcp,
    );
    assert_eq!(service_chains, [port5.as_str()]);
    let leaves: Vec<_> = nat
        .table
        .chains
        .iter()
        .filter(|c| c.name.as_str().contains("-DT-"))
        .collect();
    assert_eq!(leaves.len(), 6, "{}", plan.render());
    for chain in leaves {
        assert!(
            chain.rules.len() <= 10,
            "{}: {} rules",
            chain.name,
            chain.rules.len()
        );
    }
    // And the same ports, inline balancing off: a chain each.
    let config = IptablesConfig {
        tree: TreeConfig {
            inline_balancing: InlineBalancing::Never,
            ..c.config.tree
        },
        ..c.config.clone()
    };
    let plan = Planner::new(config)
        .expect("valid config")
        .plan_full(&c.table);
    let nat = plan
        .restore(Family::V4, backend_iptables::rules::TableName::Nat)
        .expect("nat");
    let count = nat
        .table
        .chains
        .iter()
        .filter(|chain| chain.name.as_str().contains("-SVC-"))
        .count();
    assert_eq!(count, 12);
}
