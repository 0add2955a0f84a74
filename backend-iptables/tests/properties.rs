//! Property tests over random tables (addresses in 198.18.0.0/15): rendering parses back to the
//! same rules, every usable endpoint is reachable with its exact share, a removed service leaves no
//! rule, the flat and tree layouts give the same verdicts, and the tree walk stays short at scale.

mod cases;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use backend_iptables::config::{DispatchLayout, InlineBalancing, IptablesConfig, TreeConfig};
use backend_iptables::plan::Planner;
use backend_iptables::rules::{parse_restore, Family};
use backend_iptables::testing::trace::{Packet, Trace, Tracer};
use proptest::prelude::*;
use proxy_core::table::{Endpoint, SessionAffinity, TrafficPolicy};
use proxy_core::{Protocol, ServicePort, ServicePortName, ServiceTable};

#[derive(Debug, Clone)]
struct EpSpec {
    host: u8,
    local: bool,
    ready: bool,
    serving: bool,
    terminating: bool,
    weight: u32,
}

#[derive(Debug, Clone)]
struct PortSpec {
    vip: u8,
    port: u16,
    udp: bool,
    eps: Vec<EpSpec>,
    node_port: bool,
    external_ip: bool,
    lb: Option<bool>,
    itp_local: bool,
    etp_local: bool,
    affinity: bool,
}

fn ep_spec() -> impl Strategy<Value = EpSpec> {
    (
        0u8..40,
        any::<bool>(),
        prop::bool::weighted(0.8),
        any::<bool>(),
        any::<bool>(),
        0u32..4,
    )
        .prop_map(
            |(host, local, ready, serving, terminating, weight)| EpSpec {
                host,
                local,
                ready,
                serving: serving || ready,
                terminating: terminating && !ready,
                weight,
            },
        )
}

fn port_spec() -> impl Strategy<Value = PortSpec> {
    (
        0u8..30,
        prop::sample::select(vec![80u16, 443, 53]),
        any::<bool>(),
        prop::collection::vec(ep_spec(), 0..5),
        any::<bool>(),
        prop::bool::weighted(0.3),
        prop::option::weighted(0.3, any::<bool>()),
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.3),
        prop::bool::weighted(0.2),
    )
        .prop_map(
            |(vip, port, udp, eps, node_port, external_ip, lb, itp_local, etp_local, affinity)| {
                PortSpec {
                    vip,
                    port,
                    udp,
                    eps,
                    node_port,
                    external_ip,
                    lb,
                    itp_local,
                    etp_local,
                    affinity,
                }
            },
        )
}

/// VIPs spread over 198.19.0.0/16 so the tree has several levels.
fn vip(v: u8) -> IpAddr {
    let offset = (u32::from(v) * 1031) % 65536;
    Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 19, 0, 0)) + offset).into()
}

fn build(specs: &[PortSpec]) -> ServiceTable {
    let mut seen = BTreeSet::new();
    let mut b = ServiceTable::builder().node("node-a");
    for (i, s) in specs.iter().enumerate() {
        let proto = if s.udp { Protocol::Udp } else { Protocol::Tcp };
        if !seen.insert((s.vip, s.port, proto)) {
            continue;
        }
        let mut p = ServicePort::new(
            ServicePortName::new("ns", format!("s{i}"), "p"),
            proto,
            s.port,
        )
        .with_cluster_ip(vip(s.vip));
        if s.node_port {
            p.node_port = Some(30000 + i as u16);
        }
        if s.external_ip {
            p.external_ips = vec![Ipv4Addr::new(198, 19, 100, s.vip).into()];
        }
        if let Some(ranges) = s.lb {
            p.load_balancer_ips = vec![Ipv4Addr::new(198, 19, 101, s.vip).into()];
            if ranges {
                p.load_balancer_source_ranges = vec!["198.18.250.0/24".parse().expect("range")];
            }
        }
        if s.itp_local {
            p.internal_traffic_policy = TrafficPolicy::Local;
        }
        if s.etp_local {
            p.external_traffic_policy = TrafficPolicy::Local;
        }
        if s.affinity {
            p.session_affinity = SessionAffinity::ClientIp {
                timeout: Duration::from_secs(300),
            };
        }
        let mut keys = BTreeSet::new();
        for e in &s.eps {
            let addr = Ipv4Addr::new(198, 18, if e.local { 1 } else { 2 }, e.host);
            if !keys.insert(addr) {
                continue;
            }
            let mut ep = Endpoint::new(addr.into(), 8080);
            ep.is_local = e.local;
            ep.ready = e.ready;
            ep.serving = e.serving;
            ep.terminating = e.terminating;
            ep.weight = e.weight;
            p = p.with_endpoint(ep);
        }
        b = b.insert(p);
    }
    b.build().expect("valid random table")
}

fn tracer(table: &ServiceTable, config: IptablesConfig) -> Tracer {
    let planner = Planner::new(config).expect("valid config");
    Tracer::from_plan(
        &planner,
        &planner.plan_full(table),
        Family::V4,
        cases::local_addrs(),
    )
    .expect("our rules parse")
}

/// A tree with tiny leaves: deep for a few ports. With `inline_balancing`, leaves of at most 6
/// rules, so a port of up to 5 endpoints (and a masquerade rule) is inline and larger ones keep
/// their chain.
fn deep_tree(inline_balancing: InlineBalancing) -> IptablesConfig {
    IptablesConfig {
        dispatch: DispatchLayout::Tree,
        tree: TreeConfig {
            leaf_rules: 2,
            stride_bits: 2,
            inline_balancing,
            leaf_max_rules: 6,
        },
        ..cases::config()
    }
}

/// What must agree between layouts: verdict, masquerade, probability.
fn verdicts(trace: &Trace) -> Vec<(String, bool, i64)> {
    trace
        .outcomes
        .iter()
        .map(|o| {
            (
                o.verdict.to_string(),
                o.masq,
                (o.probability * 1e9).round() as i64,
            )
        })
        .collect()
}

fn packets(table: &ServiceTable, srcs: &[&str]) -> Vec<Packet> {
    let mut dsts: BTreeSet<(IpAddr, u16)> = BTreeSet::new();
    for p in table.iter() {
        for ip in p.service_ips() {
            dsts.insert((ip, p.port));
            dsts.insert((ip, p.port + 1));
        }
        if let Some(np) = p.node_port {
            dsts.insert((cases::ip(cases::NODE_IP), np));
        }
    }
    dsts.insert((vip(31), 80));
    let mut out = Vec::new();
    for (dst, dport) in dsts {
        for src in srcs {
            for proto in [Protocol::Tcp, Protocol::Udp] {
                out.push(Packet {
                    src: cases::ip(src),
                    dst,
                    proto,
                    dport,
                    local_src: *src == cases::NODE_IP,
                });
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn rendering_parses_back_to_the_same_rules(specs in prop::collection::vec(port_spec(), 0..12)) {
        let table = build(&specs);
        for config in [cases::config(), deep_tree(InlineBalancing::Always), deep_tree(InlineBalancing::Never)] {
            let planner = Planner::new(config).expect("valid config");
            for restore in planner.plan_full(&table).restores {
                let parsed = parse_restore(&restore.input()).expect("parses");
                prop_assert_eq!(parsed, vec![restore.table.clone()]);
            }
        }
    }

    #[test]
    fn flat_and_tree_layouts_give_the_same_verdicts(specs in prop::collection::vec(port_spec(), 1..16)) {
        let table = build(&specs);
        let flat = tracer(&table, IptablesConfig { dispatch: DispatchLayout::Flat, ..cases::config() });
        let trees = [tracer(&table, deep_tree(InlineBalancing::Never)), tracer(&table, deep_tree(InlineBalancing::Always))];
        let srcs = [cases::POD, cases::CLIENT, cases::BLOCKED_CLIENT, "198.18.2.3", cases::NODE_IP];
        for packet in packets(&table, &srcs) {
            let a = flat.trace(&packet).expect("trace");
            for (tree, layout) in trees.iter().zip(["per-port chains", "inline balancing"]) {
                let b = tree.trace(&packet).expect("trace");
                prop_assert_eq!(verdicts(&a), verdicts(&b), "{:?}\nflat:\n{}\ntree ({}):\n{}", packet, a, layout, b);
            }
        }
    }

    #[test]
    fn every_usable_endpoint_is_reachable_with_its_share(specs in prop::collection::vec(port_spec(), 1..12)) {
        let table = build(&specs);
        let tracer = tracer(&table, cases::config());
        for port in table.iter() {
            if port.internal_traffic_policy != TrafficPolicy::Cluster {
                continue;
            }
            let ready: Vec<&Endpoint> = port.endpoints.iter().filter(|e| e.ready).collect();
            let usable: Vec<&Endpoint> = if ready.is_empty() {
                port.endpoints.iter().filter(|e| e.serving && e.terminating).collect()
            } else {
                ready
            };
            // Weight 0 takes no new connections; all weight 0 is no endpoint (REJECT).
            let weighted: Vec<&Endpoint> = usable.into_iter().filter(|e| e.weight > 0).collect();
            let total: f64 = weighted.iter().map(|e| f64::from(e.weight.max(1))).sum();
            let packet = Packet {
                src: cases::ip(cases::POD),
                dst: port.cluster_ips[0],
                proto: port.protocol,
                dport: port.port,
                local_src: false,
            };
            let trace = tracer.trace(&packet).expect("trace");
            if weighted.is_empty() {
                prop_assert_eq!(trace.summary(), "REJECT", "{}: {}", port.name, trace);
                continue;
            }
            let want: BTreeMap<SocketAddr, f64> = weighted
                .iter()
                .map(|e| (SocketAddr::new(e.addr, e.port), f64::from(e.weight.max(1)) / total))
                .collect();
            let got = trace.destinations();
            prop_assert_eq!(
                got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(),
                "{}: {}", port.name, trace
            );
            for (to, p) in &want {
                prop_assert!((got[to] - p).abs() < 1e-6, "{}: {} want {} got {}\n{}", port.name, to, p, got[to], trace);
            }
        }
    }

    #[test]
    fn a_removed_service_leaves_no_rule(specs in prop::collection::vec(port_spec(), 1..10), pick in any::<prop::sample::Index>()) {
        let table = build(&specs);
        let names: Vec<ServicePortName> = table.ports().keys().cloned().collect();
        let gone = names[pick.index(names.len())].clone();
        let port = table.get(&gone).expect("exists").clone();
        let mut b = table.edit();
        b.remove(&gone);
        let without = b.build().expect("valid");
        let planner = Planner::new(cases::config()).expect("valid config");
        let text = planner.plan_full(&without).render();
        prop_assert!(!text.contains(&format!("\"{gone} ")), "rule for {} remains:\n{}", gone, text);
        prop_assert!(!text.contains(&format!("\"{gone}\"")), "rule for {} remains:\n{}", gone, text);
        let tracer = tracer(&without, cases::config());
        let packet = Packet {
            src: cases::ip(cases::POD),
            dst: port.cluster_ips[0],
            proto: port.protocol,
            dport: port.port,
            local_src: false,
        };
        let trace = tracer.trace(&packet).expect("trace");
        prop_assert_eq!(trace.summary(), "ACCEPT", "{}", trace);
    }
}

#[test]
fn tree_walk_is_under_100_rules_at_10000_services() {
    let table = cases::scale_table(10_000, 10);
    let planner = Planner::new(cases::config()).expect("default is tree");
    let plan = planner.plan_full(&table);
    let per_port = Planner::new(IptablesConfig {
        tree: TreeConfig {
            inline_balancing: InlineBalancing::Never,
            ..TreeConfig::default()
        },
        ..cases::config()
    })
    .expect("valid config")
    .plan_full(&table);
    // The chain count does not grow with endpoints. With a chain per service port: one per port
    // plus the tree and base; with inline balancing (the default), the ports share leaves of at
    // most 80 rules (here 4 ports of 11 rules).
    for (layout, plan) in [("inline balancing", &plan), ("per-port chains", &per_port)] {
        eprintln!(
            "10,000 x 10, {layout}: {} chains, {} rules, {} bytes",
            plan.chains_written(),
            plan.rules_written(),
            plan.restores.iter().map(|r| r.input().len()).sum::<usize>()
        );
    }
    assert!(
        per_port.chains_written() < 12_000,
        "{} chains",
        per_port.chains_written()
    );
    assert!(
        plan.chains_written() < 3_000,
        "{} chains",
        plan.chains_written()
    );
    let tracer =
        Tracer::from_plan(&planner, &plan, Family::V4, cases::local_addrs()).expect("parses");
    let mut worst = 0;
    for i in [0u32, 1, 4_999, 5_000, 9_998, 9_999] {
        let dst = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 19, 0, 0)) + i);
        let trace = tracer
            .trace(&Packet::tcp(cases::POD, &dst.to_string(), 80))
            .expect("trace");
        assert_eq!(trace.destinations().len(), 10, "service {i}\n{trace}");
        worst = worst.max(trace.max_nat_rules_walked());
    }
    // Not-ours traffic to this node walks the tree top, then the node-ports chain.
    let other = tracer
        .trace(&Packet::tcp(cases::CLIENT, cases::NODE_IP, 22))
        .expect("trace");
    assert_eq!(other.summary(), "ACCEPT");
    eprintln!(
        "tree layout, 10,000 services: worst walk {worst} nat rules, not-ours {}",
        other.max_nat_rules_walked()
    );
    assert!(worst < 100, "worst walk {worst} rules");
    assert!(other.max_nat_rules_walked() < 100, "{other}");
}

#[test]
fn node_port_walk_is_short_at_10000_node_ports() {
    let mut b = ServiceTable::builder().node("node-a");
    for i in 0..10_000u32 {
        let vip: IpAddr = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 19, 0, 0)) + i).into();
        let ep: IpAddr = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + i).into();
        b = b.insert(
            ServicePort::new(
                ServicePortName::new("np", format!("s{i}"), "p"),
                Protocol::Tcp,
                80,
            )
            .with_cluster_ip(vip)
            .with_node_port(30_000 + i as u16)
            .with_endpoint(Endpoint::new(ep, 8080)),
        );
    }
    let table = b.build().expect("valid");
    let planner = Planner::new(cases::config()).expect("valid config");
    let tracer = Tracer::from_plan(
        &planner,
        &planner.plan_full(&table),
        Family::V4,
        cases::local_addrs(),
    )
    .expect("parses");
    let mut worst = 0;
    for i in [0u16, 4_321, 9_999] {
        let t = tracer
            .trace(&Packet::tcp(cases::CLIENT, cases::NODE_IP, 30_000 + i))
            .expect("trace");
        let ep = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + u32::from(i));
        assert_eq!(t.summary(), format!("{ep}:8080"), "{t}");
        worst = worst.max(t.max_nat_rules_walked());
    }
    let not_ours = tracer
        .trace(&Packet::tcp(cases::CLIENT, cases::NODE_IP, 22))
        .expect("trace");
    assert_eq!(not_ours.summary(), "ACCEPT");
    eprintln!(
        "10,000 node ports: worst walk {worst}, not ours {}",
        not_ours.max_nat_rules_walked()
    );
    assert!(worst < 100, "worst node-port walk {worst}");
    assert!(not_ours.max_nat_rules_walked() < 100, "{not_ours}");
}
