//! Plan tests: desired state per feature, then plan → apply to `FakeIpvs` → compare with the
//! desired state, graceful termination on a fake clock, and cost that follows the change.

use std::time::Duration;

use proxy_core::table::{SessionAffinity, TrafficPolicy};

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use proxy_core::table::{Endpoint, Protocol, ServicePort, ServicePortName, ServiceTable};

use super::*;
use crate::apply::apply_ops;
use crate::config::IpvsConfig;
use crate::model::ConnCounts;
use crate::model::{SchedFlags, Scheduler};
use crate::ops::IpvsOps;
use crate::testing::FakeIpvs;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address literal")
}

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("test socket address literal")
}

fn key(proto: Protocol, addr: &str) -> ServiceKey {
    let addr = sa(addr);
    ServiceKey {
        addr: addr.ip(),
        protocol: proto,
        port: addr.port(),
    }
}

fn endpoint(addr: &str, local: bool) -> Endpoint {
    let mut ep = Endpoint::new(ip(addr), 8080);
    ep.is_local = local;
    ep
}

fn web(endpoints: Vec<Endpoint>) -> ServicePort {
    let mut port = ServicePort::new(
        ServicePortName::new("default", "web", "http"),
        Protocol::Tcp,
        80,
    )
    .with_cluster_ip(ip("198.19.0.10"));
    port.endpoints = endpoints;
    port
}

fn table(ports: Vec<ServicePort>) -> ServiceTable {
    let mut builder = ServiceTable::builder().node("node-a");
    for port in ports {
        builder = builder.insert(port);
    }
    builder.build().expect("valid test table")
}

fn config() -> IpvsConfig {
    IpvsConfig {
        node_addresses: vec![ip("198.18.0.1"), ip("198.18.0.2")],
        ..IpvsConfig::default()
    }
}

/// What the fake holds, in the plan's model, without connection counts.
fn fake_state(fake: &FakeIpvs) -> IpvsState {
    let mut state = IpvsState::default();
    for vs in fake.virtual_servers().expect("fake dump") {
        let mut service = ServiceState::new(vs.clone());
        for rs in fake.real_servers(&vs.key()).expect("fake dump") {
            service
                .real_servers
                .insert(rs.socket_addr(), rs.without_conns());
        }
        state.services.insert(vs.key(), service);
    }
    state
}

/// Plans against the fake's state, applies, returns the ops; asserts that nothing failed.
fn converge(fake: &FakeIpvs, desired: &IpvsState, draining: &Draining, now: Instant) -> Plan {
    let mut observed = IpvsState::default();
    for vs in fake.virtual_servers().expect("fake dump") {
        let mut service = ServiceState::new(vs.clone());
        for rs in fake.real_servers(&vs.key()).expect("fake dump") {
            service.real_servers.insert(rs.socket_addr(), rs);
        }
        observed.services.insert(vs.key(), service);
    }
    let plan = plan(desired, &observed, draining, now, Duration::from_secs(30));
    let outcome = apply_ops(fake, &plan.ops, &mut observed);
    assert!(outcome.failures.is_empty(), "{:?}", outcome.failures);
    plan
}

fn real_servers(desired: &Desired, k: &ServiceKey) -> Vec<(SocketAddr, u32)> {
    desired.state.services[k]
        .real_servers
        .values()
        .map(|rs| (rs.socket_addr(), rs.weight))
        .collect()
}

#[test]
fn cluster_ip_with_two_endpoints_is_one_virtual_server_with_two_real_servers() {
    let t = table(vec![web(vec![
        endpoint("198.18.1.10", false),
        endpoint("198.18.1.11", false),
    ])]);
    let desired = plan_desired(&t, &config());
    let k = key(Protocol::Tcp, "198.19.0.10:80");
    assert_eq!(desired.state.services.len(), 1, "{desired:#?}");
    let vs = &desired.state.services[&k].vs;
    assert_eq!(vs.scheduler, Scheduler::RoundRobin, "the default scheduler");
    assert_eq!(vs.persistence, None);
    assert_eq!(
        real_servers(&desired, &k),
        [(sa("198.18.1.10:8080"), 1), (sa("198.18.1.11:8080"), 1)]
    );
    assert_eq!(desired.vips, BTreeMap::from([(ip("198.19.0.10"), 1)]));
    assert_eq!(desired.origins[&k].kind, VipKind::ClusterIp);
    assert_eq!(desired.origins[&k].verdict, Verdict::Forward);
}

#[test]
fn external_lb_and_node_port_addresses_each_get_a_virtual_server() {
    let mut port = web(vec![
        endpoint("198.18.1.10", true),
        endpoint("198.18.1.11", false),
    ]);
    port.external_ips = vec![ip("198.19.1.1")];
    port.load_balancer_ips = vec![ip("198.19.2.1")];
    port.node_port = Some(30080);
    port.external_traffic_policy = TrafficPolicy::Local;
    let desired = plan_desired(&table(vec![port]), &config());
    let keys: Vec<String> = desired
        .state
        .services
        .keys()
        .map(|k| k.to_string())
        .collect();
    assert_eq!(
        keys,
        [
            "TCP 198.18.0.1:30080",
            "TCP 198.18.0.2:30080",
            "TCP 198.19.0.10:80",
            "TCP 198.19.1.1:80",
            "TCP 198.19.2.1:80"
        ]
    );
    // Node addresses are the node's own: never bound to the dummy interface.
    assert_eq!(
        desired.vips.keys().copied().collect::<Vec<_>>(),
        [ip("198.19.0.10"), ip("198.19.1.1"), ip("198.19.2.1")]
    );
    // eTP=Local: the external VIPs use only the local endpoint; the cluster IP uses both.
    for external in ["198.18.0.1:30080", "198.19.1.1:80", "198.19.2.1:80"] {
        let k = key(Protocol::Tcp, external);
        assert_eq!(
            real_servers(&desired, &k),
            [(sa("198.18.1.10:8080"), 1)],
            "{k}"
        );
        assert!(desired.origins[&k].is_local_policy, "{k}");
    }
    let cluster = key(Protocol::Tcp, "198.19.0.10:80");
    assert_eq!(real_servers(&desired, &cluster).len(), 2);
    assert!(!desired.origins[&cluster].is_local_policy);
}

#[test]
fn node_ports_only_on_node_addresses_of_the_services_families() {
    let mut port = web(vec![endpoint("198.18.1.10", false)]);
    port.node_port = Some(30080);
    let config = IpvsConfig {
        node_addresses: vec![ip("198.18.0.1"), ip("2001:db8::1")],
        ..IpvsConfig::default()
    };
    let desired = plan_desired(&table(vec![port]), &config);
    let keys: Vec<String> = desired
        .state
        .services
        .keys()
        .map(|k| k.to_string())
        .collect();
    assert_eq!(keys, ["TCP 198.18.0.1:30080", "TCP 198.19.0.10:80"]);
}

#[test]
fn scheduler_affinity_weights_and_maglev_flags_come_from_the_table() {
    let mut heavy = endpoint("198.18.1.10", false);
    heavy.weight = 3;
    let mut port = web(vec![heavy, endpoint("198.18.1.11", false)]);
    port.scheduler = Some(proxy_core::table::Scheduler::Maglev);
    port.session_affinity = SessionAffinity::ClientIp {
        timeout: Duration::from_secs(600),
    };
    let desired = plan_desired(&table(vec![port]), &config());
    let k = key(Protocol::Tcp, "198.19.0.10:80");
    let vs = &desired.state.services[&k].vs;
    assert_eq!(vs.scheduler, Scheduler::Maglev);
    assert_eq!(
        vs.sched_flags,
        SchedFlags {
            flag1: false,
            flag2: true,
            flag3: false
        },
        "mh gets the port flag, as kube-proxy sets it"
    );
    assert_eq!(vs.persistence, Some(Duration::from_secs(600)));
    assert_eq!(
        real_servers(&desired, &k),
        [(sa("198.18.1.10:8080"), 3), (sa("198.18.1.11:8080"), 1)]
    );
}

#[test]
fn no_endpoints_rejects_and_internal_local_without_local_endpoints_drops_with_empty_virtual_servers(
) {
    let empty = web(vec![]);
    let mut remote_only = ServicePort::new(
        ServicePortName::new("default", "api", "https"),
        Protocol::Tcp,
        443,
    )
    .with_cluster_ip(ip("198.19.0.20"))
    .with_endpoint(endpoint("198.18.1.20", false));
    remote_only.internal_traffic_policy = TrafficPolicy::Local;
    let desired = plan_desired(&table(vec![empty, remote_only]), &config());

    let rejected = key(Protocol::Tcp, "198.19.0.10:80");
    assert_eq!(desired.origins[&rejected].verdict, Verdict::Reject);
    assert!(desired.state.services[&rejected].real_servers.is_empty());
    let dropped = key(Protocol::Tcp, "198.19.0.20:443");
    assert_eq!(desired.origins[&dropped].verdict, Verdict::Drop);
    assert!(desired.state.services[&dropped].real_servers.is_empty());
}

/// kube-proxy's IPVS mode (`syncEndpoint`, k/k#97081): an external address of an eTP=Local
/// service with no local endpoint keeps the cluster-wide endpoints, so that pods on this node
/// still reach it (the companions drop everyone else); its cluster IP is untouched.
#[test]
fn external_local_without_local_endpoints_keeps_the_cluster_endpoints_for_pods() {
    let mut remote_only = ServicePort::new(
        ServicePortName::new("default", "api", "https"),
        Protocol::Tcp,
        443,
    )
    .with_cluster_ip(ip("198.19.0.20"))
    .with_node_port(30443)
    .with_endpoint(endpoint("198.18.1.20", false))
    .with_endpoint(endpoint("198.18.1.21", false));
    remote_only.external_ips = vec![ip("198.19.1.20")];
    remote_only.load_balancer_ips = vec![ip("198.19.2.20")];
    remote_only.external_traffic_policy = TrafficPolicy::Local;
    let desired = plan_desired(&table(vec![remote_only.clone()]), &config());

    let cluster = [(sa("198.18.1.20:8080"), 1), (sa("198.18.1.21:8080"), 1)];
    for addr in [
        "198.19.1.20:443",
        "198.19.2.20:443",
        "198.18.0.1:30443",
        "198.18.0.2:30443",
    ] {
        let k = key(Protocol::Tcp, addr);
        assert_eq!(
            desired.origins[&k].verdict,
            Verdict::DropOutsideCluster,
            "{addr}"
        );
        assert!(
            desired.origins[&k].is_local_policy,
            "{addr}: not masqueraded"
        );
        assert_eq!(real_servers(&desired, &k), cluster, "{addr}");
    }
    let vip = key(Protocol::Tcp, "198.19.0.20:443");
    assert_eq!(desired.origins[&vip].verdict, Verdict::Forward);
    assert_eq!(real_servers(&desired, &vip), cluster);

    // Both policies Local: no cluster-wide list to fall back to, so a plain drop.
    remote_only.internal_traffic_policy = TrafficPolicy::Local;
    let desired = plan_desired(&table(vec![remote_only]), &config());
    let k = key(Protocol::Tcp, "198.19.1.20:443");
    assert_eq!(desired.origins[&k].verdict, Verdict::Drop);
    assert!(desired.state.services[&k].real_servers.is_empty());
}

#[test]
fn dual_stack_virtual_servers_take_endpoints_of_their_family() {
    let mut port = web(vec![
        endpoint("198.18.1.10", false),
        endpoint("2001:db8:1::10", false),
    ]);
    port.cluster_ips.push(ip("2001:db8::10"));
    let desired = plan_desired(&table(vec![port]), &config());
    assert_eq!(
        real_servers(&desired, &key(Protocol::Tcp, "198.19.0.10:80")),
        [(sa("198.18.1.10:8080"), 1)]
    );
    assert_eq!(
        real_servers(&desired, &key(Protocol::Tcp, "[2001:db8::10]:80")),
        [(sa("[2001:db8:1::10]:8080"), 1)]
    );
    assert!(desired.vips.contains_key(&ip("2001:db8::10")));
}

#[test]
fn applying_the_plan_to_the_fake_gives_the_desired_state_and_then_nothing_to_do() {
    let mut udp = ServicePort::new(
        ServicePortName::new("kube", "dns", "dns"),
        Protocol::Udp,
        53,
    )
    .with_cluster_ip(ip("198.19.0.53"))
    .with_endpoint(Endpoint::new(ip("198.18.1.53"), 5353));
    udp.node_port = Some(30053);
    let t = table(vec![
        web(vec![
            endpoint("198.18.1.10", false),
            endpoint("198.18.1.11", false),
        ]),
        udp,
    ]);
    let desired = plan_desired(&t, &config());
    let fake = FakeIpvs::new();
    let now = Instant::now();
    let first = converge(&fake, &desired.state, &Draining::default(), now);
    assert_eq!(first.ops.len(), 4 + 5, "{:#?}", first.ops);
    assert_eq!(fake_state(&fake), desired.state);
    let again = converge(&fake, &desired.state, &first.draining, now);
    assert_eq!(again.ops, vec![], "a converged state plans nothing");
}

#[test]
fn changed_scheduler_and_weight_update_in_place() {
    let fake = FakeIpvs::new();
    let now = Instant::now();
    let before = plan_desired(
        &table(vec![web(vec![endpoint("198.18.1.10", false)])]),
        &config(),
    );
    converge(&fake, &before.state, &Draining::default(), now);

    let mut heavy = endpoint("198.18.1.10", false);
    heavy.weight = 5;
    let mut port = web(vec![heavy]);
    port.scheduler = Some(proxy_core::table::Scheduler::WeightedLeastConnection);
    let after = plan_desired(&table(vec![port]), &config());
    let plan = converge(&fake, &after.state, &Draining::default(), now);
    let shown: Vec<String> = plan.ops.iter().map(Op::to_string).collect();
    assert_eq!(
        shown,
        [
            "-E TCP 198.19.0.10:80 wlc",
            "-e TCP 198.19.0.10:80 -r 198.18.1.10:8080 -w 5"
        ]
    );
    assert_eq!(fake_state(&fake), after.state);
}

#[test]
fn removed_tcp_real_server_drains_at_weight_zero_until_its_connections_end() {
    let fake = FakeIpvs::new();
    let t0 = Instant::now();
    let both = plan_desired(
        &table(vec![web(vec![
            endpoint("198.18.1.10", false),
            endpoint("198.18.1.11", false),
        ])]),
        &config(),
    );
    converge(&fake, &both.state, &Draining::default(), t0);
    let k = key(Protocol::Tcp, "198.19.0.10:80");
    let leaving = RealServer::new(ip("198.18.1.11"), 8080, 1);
    let open = ConnCounts {
        active: 2,
        inactive: 0,
        persistent: 0,
    };
    assert!(fake.set_conns(&k, &leaving, open));

    let one = plan_desired(
        &table(vec![web(vec![endpoint("198.18.1.10", false)])]),
        &config(),
    );
    let plan1 = converge(&fake, &one.state, &Draining::default(), t0);
    assert_eq!(
        plan1.ops,
        vec![Op::UpdateRealServer(
            k,
            RealServer {
                weight: 0,
                ..leaving.clone()
            }
        )],
        "first step of graceful termination: weight 0"
    );
    assert_eq!(
        plan1.draining.deadline(&k, leaving.socket_addr()),
        Some(t0 + Duration::from_secs(30))
    );

    // Still connected 10 s later: nothing to do, still draining with the same deadline.
    let plan2 = converge(
        &fake,
        &one.state,
        &plan1.draining,
        t0 + Duration::from_secs(10),
    );
    assert_eq!(plan2.ops, vec![]);
    assert_eq!(plan2.draining, plan1.draining);

    // The connections end: the real server goes.
    assert!(fake.set_conns(&k, &leaving, ConnCounts::default()));
    let plan3 = converge(
        &fake,
        &one.state,
        &plan2.draining,
        t0 + Duration::from_secs(11),
    );
    assert_eq!(
        plan3.ops,
        vec![Op::DeleteRealServer(
            k,
            RealServer {
                weight: 0,
                ..leaving
            }
        )]
    );
    assert!(plan3.draining.is_empty());
    assert_eq!(fake_state(&fake), one.state);
}

#[test]
fn draining_real_server_is_deleted_at_the_deadline_even_with_connections() {
    let fake = FakeIpvs::new();
    let t0 = Instant::now();
    let both = plan_desired(
        &table(vec![web(vec![
            endpoint("198.18.1.10", false),
            endpoint("198.18.1.11", false),
        ])]),
        &config(),
    );
    converge(&fake, &both.state, &Draining::default(), t0);
    let k = key(Protocol::Tcp, "198.19.0.10:80");
    let leaving = RealServer::new(ip("198.18.1.11"), 8080, 1);
    let busy = ConnCounts {
        active: 1,
        inactive: 3,
        persistent: 0,
    };
    assert!(fake.set_conns(&k, &leaving, busy));
    let one = plan_desired(
        &table(vec![web(vec![endpoint("198.18.1.10", false)])]),
        &config(),
    );
    let plan1 = converge(&fake, &one.state, &Draining::default(), t0);
    assert_eq!(plan1.draining.len(), 1);
    let plan2 = converge(
        &fake,
        &one.state,
        &plan1.draining,
        t0 + Duration::from_secs(29),
    );
    assert_eq!(
        plan2.ops,
        vec![],
        "one second before the deadline it still drains"
    );
    let plan3 = converge(
        &fake,
        &one.state,
        &plan2.draining,
        t0 + Duration::from_secs(30),
    );
    assert_eq!(
        plan3.ops,
        vec![Op::DeleteRealServer(
            k,
            RealServer {
                weight: 0,
                ..leaving
            }
        )]
    );
    assert!(plan3.draining.is_empty());
}

#[test]
fn endpoint_back_while_draining_gets_its_weight_again() {
    let fake = FakeIpvs::new();
    let t0 = Instant::now();
    let both = plan_desired(
        &table(vec![web(vec![
            endpoint("198.18.1.10", false),
            endpoint("198.18.1.11", false),
        ])]),
        &config(),
    );
    converge(&fake, &both.state, &Draining::default(), t0);
    let k = key(Protocol::Tcp, "198.19.0.10:80");
    let leaving = RealServer::new(ip("198.18.1.11"), 8080, 1);
    assert!(fake.set_conns(
        &k,
        &leaving,
        ConnCounts {
            active: 1,
            ..ConnCounts::default()
        }
    ));
    let one = plan_desired(
        &table(vec![web(vec![endpoint("198.18.1.10", false)])]),
        &config(),
    );
    let plan1 = converge(&fake, &one.state, &Draining::default(), t0);
    let plan2 = converge(
        &fake,
        &both.state,
        &plan1.draining,
        t0 + Duration::from_secs(1),
    );
    assert_eq!(plan2.ops, vec![Op::UpdateRealServer(k, leaving)]);
    assert!(plan2.draining.is_empty());
    assert_eq!(fake_state(&fake), both.state);
}

#[test]
fn removed_udp_real_server_goes_at_once() {
    let dns = |eps: &[&str]| {
        let mut port = ServicePort::new(
            ServicePortName::new("kube", "dns", "dns"),
            Protocol::Udp,
            53,
        )
        .with_cluster_ip(ip("198.19.0.53"));
        port.endpoints = eps.iter().map(|a| Endpoint::new(ip(a), 53)).collect();
        port
    };
    let fake = FakeIpvs::new();
    let t0 = Instant::now();
    let two = plan_desired(&table(vec![dns(&["198.18.1.1", "198.18.1.2"])]), &config());
    converge(&fake, &two.state, &Draining::default(), t0);
    let k = key(Protocol::Udp, "198.19.0.53:53");
    let leaving = RealServer::new(ip("198.18.1.2"), 53, 1);
    assert!(fake.set_conns(
        &k,
        &leaving,
        ConnCounts {
            active: 0,
            inactive: 5,
            persistent: 0
        }
    ));
    let one = plan_desired(&table(vec![dns(&["198.18.1.1"])]), &config());
    let plan = converge(&fake, &one.state, &Draining::default(), t0);
    assert_eq!(plan.ops, vec![Op::DeleteRealServer(k, leaving)]);
    assert!(plan.draining.is_empty());
}

#[test]
fn removed_service_port_deletes_its_virtual_servers() {
    let fake = FakeIpvs::new();
    let now = Instant::now();
    let desired = plan_desired(
        &table(vec![web(vec![endpoint("198.18.1.10", false)])]),
        &config(),
    );
    converge(&fake, &desired.state, &Draining::default(), now);
    let plan = converge(&fake, &IpvsState::default(), &Draining::default(), now);
    assert_eq!(
        plan.ops,
        vec![Op::DeleteVirtualServer(key(
            Protocol::Tcp,
            "198.19.0.10:80"
        ))]
    );
    assert_eq!(fake.virtual_servers().expect("dump"), vec![]);
}

#[test]
fn add_failure_skips_the_real_servers_of_that_virtual_server() {
    // Someone else's virtual server already sits on the key: we must not add to it.
    let fake = FakeIpvs::new();
    let foreign = VirtualServer::new(ip("198.19.0.10"), Protocol::Tcp, 80, Scheduler::Maglev);
    fake.add_virtual_server(&foreign).expect("foreign add");
    let desired = plan_desired(
        &table(vec![web(vec![endpoint("198.18.1.10", false)])]),
        &config(),
    );
    let plan = plan(
        &desired.state,
        &IpvsState::default(),
        &Draining::default(),
        Instant::now(),
        Duration::from_secs(30),
    );
    let mut applied = IpvsState::default();
    let outcome = apply_ops(&fake, &plan.ops, &mut applied);
    assert_eq!(outcome.done, 0);
    assert_eq!(outcome.failures.len(), 1, "{:?}", outcome.failures);
    let shown = outcome.failures[0].to_string();
    assert!(
        shown.contains("add virtual server TCP 198.19.0.10:80") && shown.contains("File exists"),
        "{shown}"
    );
    assert_eq!(fake.real_servers(&foreign.key()).expect("dump"), vec![]);
    assert_eq!(applied, IpvsState::default());
}

#[test]
fn one_endpoint_change_among_ten_thousand_service_ports_is_one_op() {
    let ports: Vec<ServicePort> = (0..10_000u32)
        .map(|i| {
            let vip = IpAddr::from([198, 19, (i / 250) as u8, (i % 250) as u8 + 1]);
            ServicePort::new(
                ServicePortName::new("bench", format!("svc-{i}"), "p"),
                Protocol::Tcp,
                80,
            )
            .with_cluster_ip(vip)
            .with_endpoint(Endpoint::new(IpAddr::from([198, 18, 0, 1]), 8080))
        })
        .collect();
    let before = table(ports);
    let fake = FakeIpvs::new();
    let now = Instant::now();
    let desired = plan_desired(&before, &config());
    let first = converge(&fake, &desired.state, &Draining::default(), now);
    assert_eq!(first.ops.len(), 20_000);

    let name = ServicePortName::new("bench", "svc-4242", "p");
    let mut changed = (**before.get(&name).expect("present")).clone();
    changed
        .endpoints
        .push(Endpoint::new(IpAddr::from([198, 18, 0, 2]), 8080));
    let after = before.edit().insert(changed).build().expect("valid");
    let plan = converge(
        &fake,
        &plan_desired(&after, &config()).state,
        &first.draining,
        now,
    );
    assert_eq!(plan.ops.len(), 1, "{:?}", plan.ops);
    assert!(
        matches!(plan.ops[0], Op::AddRealServer(..)),
        "{:?}",
        plan.ops
    );
}

#[test]
fn random_scheduler_is_a_problem_not_a_panic() {
    let mut port = web(vec![endpoint("198.18.1.10", false)]);
    port.scheduler = Some(proxy_core::table::Scheduler::Random);
    let desired = plan_desired(&table(vec![port]), &config());
    assert!(desired.state.services.is_empty());
    let problems = desired.problems();
    assert_eq!(problems.len(), 1);
    assert!(problems[0].reason.contains("random"), "{problems:?}");
    assert_eq!(
        problems[0].service_port,
        Some(ServicePortName::new("default", "web", "http"))
    );
}

// === Node addresses ===

/// 10,000 service ports, every fifth with a node port (`large_table`'s shape).
fn node_port_table() -> ServiceTable {
    proxy_core::testing::generate::large_table(10_000, 2)
}

#[test]
fn a_node_address_added_and_one_removed_touch_only_their_node_port_virtual_servers() {
    let t = node_port_table();
    let before: std::collections::BTreeSet<IpAddr> = [ip("198.18.0.1"), ip("198.18.0.2")].into();
    let after: std::collections::BTreeSet<IpAddr> = [ip("198.18.0.1"), ip("198.18.0.3")].into();
    let mut desired = plan_desired_on(&t, &config(), before);
    let node_ports = t.iter().filter(|p| p.node_port.is_some()).count();
    assert_eq!(node_ports, 2_000);
    assert_eq!(desired.dependent.len(), node_ports);

    let touched = desired.readdress(&t, after.clone(), &config());
    let whole = plan_desired_on(&t, &config(), after.clone());
    assert_eq!(desired.state, whole.state);
    assert_eq!(desired.origins, whole.origins);
    assert_eq!(desired.vips, whole.vips);
    assert_eq!(desired.node_ips, after);

    // Only the dependent ports were planned again: their node-port and cluster-IP virtual
    // servers, never another port's.
    let mut owners = std::collections::BTreeSet::new();
    for k in &touched.keys {
        let owner = match whole.origins.get(k) {
            Some(origin) => origin.port.clone(),
            None => {
                // A removed node-port virtual server (198.18.0.2): owned by a dependent port.
                assert_eq!(k.addr, ip("198.18.0.2"), "{k}");
                let port = t.iter().find(|p| p.node_port == Some(k.port));
                port.expect("its port").name.clone()
            }
        };
        owners.insert(owner);
    }
    assert!(owners.len() <= node_ports);
    assert!(owners.iter().all(|name| desired.dependent.contains(name)));

    // Converging the fake from the old state plans exactly the moved node ports.
    let plan = plan_keys(
        &whole.state,
        &plan_desired_on(&t, &config(), [ip("198.18.0.1"), ip("198.18.0.2")].into()).state,
        &touched.keys,
        &Draining::default(),
        Instant::now(),
        Duration::from_secs(30),
    );
    let adds = plan
        .ops
        .iter()
        .filter(|op| matches!(op, Op::AddVirtualServer(vs) if vs.key().addr == ip("198.18.0.3")))
        .count();
    let deletes = plan
        .ops
        .iter()
        .filter(|op| matches!(op, Op::DeleteVirtualServer(k) if k.addr == ip("198.18.0.2")))
        .count();
    assert_eq!((adds, deletes), (node_ports, node_ports));
    assert!(
        plan.ops.iter().all(|op| {
            let addr = op.key().addr;
            addr == ip("198.18.0.2") || addr == ip("198.18.0.3")
        }),
        "only the moved addresses' virtual servers change"
    );

    // Only the node ports of the addresses that came and went were touched.
    assert_eq!(touched.keys.len(), 2 * node_ports);
    assert!(touched
        .keys
        .iter()
        .all(|k| k.addr == ip("198.18.0.2") || k.addr == ip("198.18.0.3")));

    // The same addresses again touch nothing.
    let again = desired.readdress(&t, after, &config());
    assert!(again.keys.is_empty() && again.endpoints.is_empty());
}

#[test]
fn node_port_addresses_restrict_the_configured_node_addresses() {
    let config = IpvsConfig {
        node_addresses: vec![ip("198.18.0.1"), ip("198.18.5.1"), ip("2001:db8::1")],
        node_port_addresses: vec!["198.18.5.0/24".parse().expect("net")],
        ..IpvsConfig::default()
    };
    assert_eq!(
        configured_node_ips(&config),
        [ip("198.18.5.1")].into_iter().collect()
    );
    let mut port = web(vec![endpoint("198.18.1.10", false)]);
    port.node_port = Some(30080);
    let desired = plan_desired(&table(vec![port]), &config);
    let node_port_keys: Vec<String> = desired
        .origins
        .iter()
        .filter(|(_, o)| o.kind == VipKind::NodePort)
        .map(|(k, _)| k.to_string())
        .collect();
    assert_eq!(node_port_keys, ["TCP 198.18.5.1:30080"]);
}

#[test]
fn a_source_range_holding_a_node_address_lets_the_node_in_from_the_load_balancer_ip() {
    // kube-proxy's allowFromNode: traffic from this node to a load-balancer IP it holds
    // locally comes from that IP, which no range names.
    let mut port = web(vec![endpoint("198.18.1.10", false)]);
    port.load_balancer_ips = vec![ip("198.18.7.1")];
    port.load_balancer_source_ranges = vec!["198.18.0.0/24".parse().expect("net")];
    let t = table(vec![port.clone()]);
    let desired = plan_desired(&t, &config());
    let lb = &desired.origins[&key(Protocol::Tcp, "198.18.7.1:80")];
    let sources: Vec<String> = lb.source_ranges.iter().map(ToString::to_string).collect();
    assert_eq!(sources, ["198.18.0.0/24", "198.18.7.1/32"]);

    // No range holds a node address: only the ranges.
    port.load_balancer_source_ranges = vec!["198.18.9.0/24".parse().expect("net")];
    let desired = plan_desired(&table(vec![port]), &config());
    let lb = &desired.origins[&key(Protocol::Tcp, "198.18.7.1:80")];
    let sources: Vec<String> = lb.source_ranges.iter().map(ToString::to_string).collect();
    assert_eq!(sources, ["198.18.9.0/24"]);

    // The verdict follows the addresses: moving the node out of every range drops it.
    let mut desired = plan_desired(&t, &config());
    let touched = desired.readdress(&t, [ip("198.18.50.1")].into(), &config());
    assert!(touched.keys.contains(&key(Protocol::Tcp, "198.18.7.1:80")));
    let lb = &desired.origins[&key(Protocol::Tcp, "198.18.7.1:80")];
    assert_eq!(lb.source_ranges.len(), 1, "{:?}", lb.source_ranges);
}

mod properties {
    use proptest::prelude::*;
    use proxy_core::diff::diff;
    use proxy_core::testing::strategy::{arb_edited_pair, arb_table};

    use super::*;

    fn config() -> IpvsConfig {
        IpvsConfig {
            node_addresses: vec![ip("198.18.0.1"), ip("2001:db8::1")],
            ..IpvsConfig::default()
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Updating the desired state port by port gives what computing it whole gives.
        #[test]
        fn incremental_update_equals_planning_the_new_table((before, after) in arb_edited_pair()) {
            let mut desired = plan_desired(&before, &config());
            let touched = desired.update(&diff(&before, &after), &config());
            let whole = plan_desired(&after, &config());
            prop_assert_eq!(&desired, &whole);
            // Every virtual server that differs was touched.
            for key in whole.state.services.keys().chain(plan_desired(&before, &config()).state.services.keys()) {
                let old = plan_desired(&before, &config());
                if old.state.services.get(key) != whole.state.services.get(key) {
                    prop_assert!(touched.keys.contains(key), "{key} changed but was not touched");
                }
            }
        }

        /// Moving the node addresses gives what planning the table on the new ones gives, and
        /// touches every virtual server that differs.
        #[test]
        fn readdressing_equals_planning_on_the_new_addresses(
            table in arb_table(),
            before in 0_usize..4,
            after in 0_usize..4,
        ) {
            let sets: [Vec<IpAddr>; 4] = [
                vec![ip("198.18.0.1"), ip("2001:db8::1")],
                vec![ip("198.18.0.2"), ip("2001:db8::1")],
                vec![],
                vec![ip("198.18.0.1"), ip("198.18.0.2"), ip("2001:db8::2")],
            ];
            let ips = |i: usize| -> std::collections::BTreeSet<IpAddr> {
                sets[i].iter().copied().collect()
            };
            let old = plan_desired_on(&table, &config(), ips(before));
            let mut desired = old.clone();
            let touched = desired.readdress(&table, ips(after), &config());
            let whole = plan_desired_on(&table, &config(), ips(after));
            prop_assert_eq!(&desired, &whole);
            for key in whole.state.services.keys().chain(old.state.services.keys()) {
                if old.state.services.get(key) != whole.state.services.get(key)
                    || old.origins.get(key) != whole.origins.get(key)
                {
                    prop_assert!(touched.keys.contains(key), "{key} changed but was not touched");
                }
            }
        }

        /// Any table, planned against an empty kernel and applied, gives its desired state;
        /// planning again gives nothing.
        #[test]
        fn any_table_converges_in_one_plan(table in arb_table()) {
            let desired = plan_desired(&table, &config());
            let fake = FakeIpvs::new();
            let now = Instant::now();
            let first = converge(&fake, &desired.state, &Draining::default(), now);
            prop_assert_eq!(fake_state(&fake), desired.state.clone());
            let again = converge(&fake, &desired.state, &first.draining, now);
            prop_assert!(again.ops.is_empty(), "{:?}", again.ops);
        }
    }
}
