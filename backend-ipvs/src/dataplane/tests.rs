//! The dataplane over `FakeIpvs`: ownership, drift repair, partial syncs that trust the applied
//! state, failures that force a full sync, cleanup.

use std::net::IpAddr;
use std::time::Duration;

use proxy_core::diff::diff;
use proxy_core::table::{Endpoint, ServicePort, ServicePortName};

use super::run::problems_of;
use super::*;
use crate::model::{
    ConnCounts, RealServer, Scheduler as KernelScheduler, ServiceKey, VirtualServer,
};
use crate::plan::{Op, Touched};
use crate::testing::FakeIpvs;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address literal")
}

fn web(endpoints: &[&str]) -> ServicePort {
    let mut port = ServicePort::new(
        ServicePortName::new("default", "web", "http"),
        Protocol::Tcp,
        80,
    )
    .with_cluster_ip(ip("198.19.0.10"));
    port.endpoints = endpoints
        .iter()
        .map(|a| Endpoint::new(ip(a), 8080))
        .collect();
    port
}

fn table(ports: Vec<ServicePort>) -> ServiceTable {
    let mut builder = ServiceTable::builder().node("node-a");
    for port in ports {
        builder = builder.insert(port);
    }
    builder.build().expect("valid test table")
}

fn dataplane(fake: &Arc<FakeIpvs>) -> IpvsDataplane {
    let ipvs: Arc<dyn IpvsOps> = fake.clone();
    IpvsDataplane::with_ops(IpvsConfig::default(), ipvs).expect("valid config")
}

fn sync_at(
    dp: &IpvsDataplane,
    from: &ServiceTable,
    to: &ServiceTable,
    mode: SyncMode,
    now: Instant,
) -> SyncReport {
    let changes = diff(from, to);
    dp.sync_at(
        &SyncRequest {
            desired: to,
            changes: &changes,
            mode,
        },
        now,
    )
    .expect("sync")
}

fn sync(dp: &IpvsDataplane, from: &ServiceTable, to: &ServiceTable, mode: SyncMode) -> SyncReport {
    sync_at(dp, from, to, mode, Instant::now())
}

fn web_key() -> ServiceKey {
    ServiceKey {
        addr: ip("198.19.0.10"),
        protocol: Protocol::Tcp,
        port: 80,
    }
}

#[test]
fn a_virtual_server_we_do_not_own_survives_sync_and_cleanup() {
    let fake = Arc::new(FakeIpvs::new());
    let foreign = VirtualServer::new(ip("198.18.5.5"), Protocol::Tcp, 80, KernelScheduler::Maglev);
    fake.add_virtual_server(&foreign).expect("foreign");
    let rs = RealServer::new(ip("198.18.5.6"), 80, 7);
    fake.add_real_server(&foreign.key(), &rs)
        .expect("foreign rs");

    let dp = dataplane(&fake);
    let t = table(vec![web(&["198.18.1.10"])]);
    let report = sync(&dp, &ServiceTable::empty(), &t, SyncMode::Full);
    assert!(report.is_complete(), "{report}");
    assert_eq!(report.objects_written, 2, "{report}");
    // An empty table: ours goes, the foreign one stays.
    let report = sync(&dp, &t, &ServiceTable::empty(), SyncMode::Full);
    assert!(report.is_complete(), "{report}");
    assert_eq!(fake.virtual_servers().expect("dump"), vec![foreign.clone()]);
    sync(&dp, &ServiceTable::empty(), &t, SyncMode::Full);
    let removed = dp.cleanup_now().expect("cleanup");
    assert_eq!(removed.objects_removed, 1);
    assert_eq!(fake.virtual_servers().expect("dump"), vec![foreign.clone()]);
    assert_eq!(
        fake.real_servers(&foreign.key()).expect("dump")[0].without_conns(),
        rs
    );
}

#[test]
fn a_full_sync_repairs_a_virtual_server_deleted_by_hand_and_a_partial_one_trusts_its_record() {
    let fake = Arc::new(FakeIpvs::new());
    let dp = dataplane(&fake);
    let t = table(vec![web(&["198.18.1.10", "198.18.1.11"])]);
    sync(&dp, &ServiceTable::empty(), &t, SyncMode::Full);
    fake.delete_virtual_server(&web_key())
        .expect("delete by hand");
    assert_eq!(
        dp.observe().expect("observe"),
        IpvsState::default(),
        "observe reads the kernel, not the record"
    );
    assert_eq!(dp.applied().services.len(), 1);

    let partial = sync(&dp, &t, &t, SyncMode::Partial);
    assert_eq!(
        partial.objects_written, 0,
        "partial syncs trust the applied state"
    );
    assert_eq!(fake.virtual_servers().expect("dump"), vec![]);

    let full = sync(&dp, &t, &t, SyncMode::Full);
    assert_eq!(full.objects_written, 3, "{full}");
    assert_eq!(fake.real_servers(&web_key()).expect("dump").len(), 2);
    assert_eq!(dp.applied().without_conns(), dp.desired(&t).state);
}

#[test]
fn a_real_server_changed_by_hand_is_put_back_at_the_next_full_sync() {
    let fake = Arc::new(FakeIpvs::new());
    let dp = dataplane(&fake);
    let t = table(vec![web(&["198.18.1.10"])]);
    sync(&dp, &ServiceTable::empty(), &t, SyncMode::Full);
    let rs = RealServer::new(ip("198.18.1.10"), 8080, 1);
    fake.update_real_server(
        &web_key(),
        &RealServer {
            weight: 9,
            ..rs.clone()
        },
    )
    .expect("edit by hand");
    // A real server added by hand has no connections: deleted at once, no draining.
    let stray = RealServer::new(ip("198.18.1.99"), 8080, 1);
    fake.add_real_server(&web_key(), &stray)
        .expect("add by hand");
    let full = sync(&dp, &t, &t, SyncMode::Full);
    assert_eq!(full.objects_written, 2, "{full}");
    let got: Vec<RealServer> = fake
        .real_servers(&web_key())
        .expect("dump")
        .iter()
        .map(RealServer::without_conns)
        .collect();
    assert_eq!(got, vec![rs]);
}

#[test]
fn partial_sync_of_one_endpoint_among_ten_thousand_writes_one_object() {
    let ports: Vec<ServicePort> = (0..10_000u32)
        .map(|i| {
            let vip = IpAddr::from([198, 19, (i / 250) as u8, (i % 250) as u8 + 1]);
            ServicePort::new(
                ServicePortName::new("bench", format!("svc-{i}"), "p"),
                Protocol::Tcp,
                80,
            )
            .with_cluster_ip(vip)
            .with_endpoint(Endpoint::new(ip("198.18.0.1"), 8080))
        })
        .collect();
    let before = table(ports);
    let fake = Arc::new(FakeIpvs::new());
    let dp = dataplane(&fake);
    let full = sync(&dp, &ServiceTable::empty(), &before, SyncMode::Full);
    assert_eq!(full.objects_written, 20_000);
    let name = ServicePortName::new("bench", "svc-777", "p");
    let mut changed = (**before.get(&name).expect("present")).clone();
    changed
        .endpoints
        .push(Endpoint::new(ip("198.18.0.2"), 8080));
    let after = before.edit().insert(changed).build().expect("valid");
    let partial = sync(&dp, &before, &after, SyncMode::Partial);
    assert_eq!(partial.mode, SyncMode::Partial);
    assert_eq!(partial.objects_written, 1, "{partial}");
    println!("{full}\n{partial}");
    // The partial sync updates the desired state port by port: its cost is the change's
    // (a ratio, not a time, so a loaded machine does not fail it).
    assert!(
        partial.duration * 10 < full.duration,
        "partial {:?} vs full {:?}",
        partial.duration,
        full.duration
    );
}

#[test]
fn a_failed_op_is_a_problem_naming_the_service_and_the_next_sync_is_full() {
    let fake = Arc::new(FakeIpvs::new());
    // Someone else's virtual server on our cluster IP and port.
    let foreign = VirtualServer::new(
        ip("198.19.0.10"),
        Protocol::Tcp,
        80,
        KernelScheduler::Maglev,
    );
    fake.add_virtual_server(&foreign).expect("foreign");
    let mut dp = dataplane(&fake);
    let mut registry = Registry::default();
    dp.register_metrics(&mut registry);
    let t = table(vec![web(&["198.18.1.10"])]);
    let report = sync(&dp, &ServiceTable::empty(), &t, SyncMode::Full);
    assert_eq!(report.problems.len(), 1, "{report}");
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
    for series in [
        "svcproxy_ipvs_failed_operations_total 1",
        "svcproxy_ipvs_objects_written_total 0",
        "kubeproxy_sync_proxy_rules_iptables_restore_failures_total 0",
        "svcproxy_ipvs_sync_duration_seconds_count{mode=\"full\"} 1",
    ] {
        assert!(text.contains(series), "{series} in:\n{text}");
    }
    assert_eq!(
        report.problems[0].service_port,
        Some(ServicePortName::new("default", "web", "http")),
        "{report}"
    );
    let problem = report.problems[0].to_string();
    assert!(
        problem.contains("default/web:http cluster IP") && problem.contains("File exists"),
        "{problem}"
    );
    assert_eq!(fake.real_servers(&foreign.key()).expect("dump"), vec![]);

    // The other tool goes away; a partial sync is upgraded to full and converges.
    fake.delete_virtual_server(&foreign.key()).expect("delete");
    let report = sync(&dp, &t, &t, SyncMode::Partial);
    assert_eq!(report.mode, SyncMode::Full);
    assert!(report.is_complete(), "{report}");
    assert_eq!(fake.real_servers(&web_key()).expect("dump").len(), 1);
}

#[test]
fn graceful_termination_is_driven_by_each_sync() {
    let fake = Arc::new(FakeIpvs::new());
    let dp = dataplane(&fake);
    let two = table(vec![web(&["198.18.1.10", "198.18.1.11"])]);
    let one = table(vec![web(&["198.18.1.10"])]);
    sync(&dp, &ServiceTable::empty(), &two, SyncMode::Full);
    let leaving = RealServer::new(ip("198.18.1.11"), 8080, 1);
    let open = ConnCounts {
        active: 1,
        ..ConnCounts::default()
    };
    assert!(fake.set_conns(&web_key(), &leaving, open));
    let t0 = Instant::now();
    sync_at(&dp, &two, &one, SyncMode::Partial, t0);
    assert_eq!(dp.draining().len(), 1);
    let weights: Vec<u32> = fake
        .real_servers(&web_key())
        .expect("dump")
        .iter()
        .map(|rs| rs.weight)
        .collect();
    assert_eq!(weights, [1, 0]);
    // Still open a second later: a partial sync re-reads the draining service, keeps it.
    let report = sync_at(
        &dp,
        &one,
        &one,
        SyncMode::Partial,
        t0 + Duration::from_secs(1),
    );
    assert_eq!(report.objects_written, 0, "{report}");
    assert_eq!(dp.draining().len(), 1);
    // The connection ends: the next sync deletes it.
    assert!(fake.set_conns(&web_key(), &leaving, ConnCounts::default()));
    let report = sync_at(
        &dp,
        &one,
        &one,
        SyncMode::Partial,
        t0 + Duration::from_secs(2),
    );
    assert_eq!(report.objects_written, 1, "{report}");
    assert!(dp.draining().is_empty());
    assert_eq!(fake.real_servers(&web_key()).expect("dump").len(), 1);
}

#[test]
fn plan_shows_what_a_sync_would_do_without_doing_it() {
    let fake = Arc::new(FakeIpvs::new());
    let dp = dataplane(&fake);
    let one = table(vec![web(&["198.18.1.10"])]);
    sync(&dp, &ServiceTable::empty(), &one, SyncMode::Full);
    let two = table(vec![web(&["198.18.1.10", "198.18.1.11"])]);
    let shown: Vec<String> = dp.plan(&two).ops.iter().map(Op::to_string).collect();
    assert_eq!(shown, ["-a TCP 198.19.0.10:80 -r 198.18.1.11:8080 -w 1"]);
    assert_eq!(
        fake.real_servers(&web_key()).expect("dump").len(),
        1,
        "nothing applied"
    );
}

#[test]
fn capabilities_have_every_scheduler_but_random_and_source_ranges_only_with_companions() {
    let caps = IpvsDataplane::supported(true);
    assert!(!caps.schedulers.contains(&Scheduler::Random));
    assert_eq!(caps.schedulers.len(), Scheduler::ALL.len() - 1);
    assert!(caps.load_balancer_source_ranges);
    assert!(!IpvsDataplane::supported(false).load_balancer_source_ranges);
    assert_eq!(caps.protocols.len(), 3);
}

// === construction and dry runs: no kernel ===

#[test]
fn new_only_checks_the_config_and_opens_nothing() {
    let dp = IpvsDataplane::new(IpvsConfig::default()).expect("a valid config is enough");
    {
        let core = dp.lock();
        assert!(
            matches!(core.handles.kernel, Kernel::Pending { ipvs: None }),
            "{:?}",
            core.handles.kernel
        );
        assert!(core.handles.link.is_none() && core.handles.companions.is_none());
    }
    assert!(
        dp.capabilities().load_balancer_source_ranges,
        "companions by default"
    );
    let bad = IpvsConfig {
        prefix: "KUBE-X-".into(),
        ..IpvsConfig::default()
    };
    match IpvsDataplane::new(bad) {
        Err(BackendError::Config { field, .. }) => assert_eq!(field, "prefix"),
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn a_dry_run_renders_the_plan_without_root_or_ipvs() {
    let dp = IpvsDataplane::new(IpvsConfig::default()).expect("valid config");
    let t = table(vec![web(&["198.18.1.10", "198.18.1.11"])]);
    let dry = dp.dry_run(&t).expect("dry run");
    assert_eq!(
        dry.rendered,
        "# ipvs backend: 1 virtual server(s) for 1 service port(s), 2 endpoint(s); VIPs on svcp-ipvs0\n\
         # default/web:http cluster IP\n\
         TCP 198.19.0.10:80 rr\n  \
         -> 198.18.1.10:8080  Masq  1\n  \
         -> 198.18.1.11:8080  Masq  1\n\
         # bound to the dummy interface: 198.19.0.10\n"
    );
    assert!(dry.problems.is_empty(), "{dry}");
    assert!(
        matches!(dp.lock().handles.kernel, Kernel::Pending { .. }),
        "still nothing opened"
    );
}

#[test]
fn a_ports_idle_timeout_is_accepted_and_changes_nothing_ipvs_programs() {
    // IPVS connection timeouts are per namespace (`ipvsadm --set`), none per virtual server.
    let dp = IpvsDataplane::new(IpvsConfig::default()).expect("valid config");
    let plain = table(vec![web(&["198.18.1.10"])]);
    let idle = table(vec![
        web(&["198.18.1.10"]).with_idle_timeout(Duration::from_secs(5))
    ]);
    let with = dp.dry_run(&idle).expect("dry run");
    assert!(with.problems.is_empty(), "{with}");
    assert_eq!(with.rendered, dp.dry_run(&plain).expect("dry run").rendered);
}

#[test]
fn a_dry_run_gives_each_problem_its_port_and_refuses_what_ipvs_lacks() {
    let config = IpvsConfig {
        node_addresses: vec![ip("198.18.0.1")],
        ..IpvsConfig::default()
    };
    let dp = IpvsDataplane::new(config).expect("valid config");
    // api's external IP and port are web's node port on the node's address: one virtual server.
    let mut api = ServicePort::new(
        ServicePortName::new("default", "api", "http"),
        Protocol::Tcp,
        30080,
    )
    .with_cluster_ip(ip("198.19.0.11"));
    api.external_ips = vec![ip("198.18.0.1")];
    let mut clashing = web(&["198.18.1.10"]);
    clashing.node_port = Some(30080);
    let dry = dp.dry_run(&table(vec![api, clashing])).expect("dry run");
    assert_eq!(dry.problems.len(), 1, "{dry}");
    assert_eq!(
        dry.problems[0].service_port,
        Some(ServicePortName::new("default", "web", "http"))
    );
    let text = dry.to_string();
    assert!(
        text.ends_with(
            "# problem: default/web:http node port TCP 198.18.0.1:30080: \
             already served by default/api:http external IP\n"
        ),
        "{text}"
    );
    assert!(
        !dry.rendered.contains("# problem"),
        "problems only once: {text}"
    );

    let mut random = web(&["198.18.1.10"]);
    random.scheduler = Some(Scheduler::Random);
    match dp.dry_run(&table(vec![random])) {
        Err(DataplaneError::Unsupported(e)) => assert_eq!(e.problems.len(), 1, "{e}"),
        other => panic!("expected the table refused, got {other:?}"),
    }
}

#[test]
fn a_vip_that_cannot_be_bound_is_a_problem_of_each_port_on_it() {
    let mut dns_tcp = ServicePort::new(
        ServicePortName::new("kube-system", "dns", "dns-tcp"),
        Protocol::Tcp,
        53,
    )
    .with_cluster_ip(ip("198.19.0.53"));
    dns_tcp.external_ips = vec![ip("198.19.0.10")];
    let t = table(vec![web(&["198.18.1.10"]), dns_tcp]);
    let desired = plan_desired(&t, &IpvsConfig::default());
    let error = BackendError::Link {
        op: "add address",
        object: "198.19.0.10".into(),
        source: std::io::Error::from_raw_os_error(1),
    };
    let problems = problems_of(&desired, "svcp-ipvs0", ip("198.19.0.10"), &error);
    let got: Vec<(Option<String>, String)> = problems
        .iter()
        .map(|p| {
            (
                p.service_port.as_ref().map(ToString::to_string),
                p.object.clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                Some("default/web:http".to_owned()),
                "default/web:http cluster IP 198.19.0.10 on svcp-ipvs0".to_owned()
            ),
            (
                Some("kube-system/dns:dns-tcp".to_owned()),
                "kube-system/dns:dns-tcp external IP 198.19.0.10 on svcp-ipvs0".to_owned()
            ),
        ]
    );
}

#[test]
fn a_use_from_another_network_namespace_is_refused() {
    let here = std::fs::read_link("/proc/thread-self/ns/net")
        .expect("/proc/thread-self/ns/net")
        .display()
        .to_string();
    kernel::check_netns(Some(&here)).expect("same namespace");
    kernel::check_netns(None).expect("nothing opened in a namespace");
    match kernel::check_netns(Some("net:[1]")) {
        Err(e @ BackendError::Namespace { .. }) => {
            let text = e.to_string();
            assert!(text.contains("net:[1]") && text.contains(&here), "{text}");
        }
        other => panic!("expected a namespace error, got {other:?}"),
    }
}

#[tokio::test]
async fn the_async_dataplane_syncs_on_a_blocking_thread() {
    let fake = Arc::new(FakeIpvs::new());
    let mut dp = dataplane(&fake);
    let t = table(vec![web(&["198.18.1.10"])]);
    let changes = diff(&ServiceTable::empty(), &t);
    let report = Dataplane::sync(
        &mut dp,
        SyncRequest {
            desired: &t,
            changes: &changes,
            mode: SyncMode::Full,
        },
    )
    .await
    .expect("sync");
    assert!(report.is_complete(), "{report}");
    assert_eq!(fake.virtual_servers().expect("dump").len(), 1);
    let removed = Dataplane::cleanup(&mut dp).await.expect("cleanup");
    assert_eq!(removed.objects_removed, 1);
    assert_eq!(fake.virtual_servers().expect("dump"), vec![]);
}

mod properties {
    use proptest::prelude::*;
    use proxy_core::testing::strategy::arb_edited_pair;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// A partial sync from one table to an edit of it leaves the kernel (the fake) exactly
        /// where a fresh full sync of the edit would.
        #[test]
        fn partial_sync_reaches_the_desired_state((before, after) in arb_edited_pair()) {
            let fake = Arc::new(FakeIpvs::new());
            let config = IpvsConfig {
                node_addresses: vec![ip("198.18.0.1"), ip("2001:db8::1")],
                ..IpvsConfig::default()
            };
            let ipvs: Arc<dyn IpvsOps> = fake.clone();
            let dp = IpvsDataplane::with_ops(config, ipvs).expect("valid config");
            sync(&dp, &ServiceTable::empty(), &before, SyncMode::Full);
            let report = sync(&dp, &before, &after, SyncMode::Partial);
            prop_assert_eq!(report.mode, SyncMode::Partial);
            let kernel = || {
                let mut kernel = IpvsState::default();
                for vs in fake.virtual_servers().expect("dump") {
                    let mut service = crate::plan::ServiceState::new(vs.clone());
                    for rs in fake.real_servers(&vs.key()).expect("dump") {
                        service.real_servers.insert(rs.socket_addr(), rs.without_conns());
                    }
                    kernel.services.insert(vs.key(), service);
                }
                kernel
            };
            // Removed TCP real servers drain at weight 0 (a partial sync does not know their
            // connections yet); everything else is as desired.
            let mut drained = kernel();
            for (key, service) in drained.services.iter_mut() {
                service.real_servers.retain(|addr, rs| {
                    let draining = dp.draining().deadline(key, *addr).is_some();
                    assert!(!draining || rs.weight == 0, "{key} -> {addr} drains at weight 0");
                    !draining
                });
            }
            prop_assert_eq!(drained, dp.desired(&after).state);
            // The next sync reads their (zero) connection counts and deletes them.
            sync(&dp, &after, &after, SyncMode::Partial);
            prop_assert!(dp.draining().is_empty());
            prop_assert_eq!(kernel(), dp.desired(&after).state);
            prop_assert_eq!(dp.applied().without_conns(), dp.desired(&after).state);
        }
    }
}

// === stale UDP flows ===

fn dns(endpoints: &[&str]) -> ServicePort {
    let mut port = ServicePort::new(
        ServicePortName::new("default", "dns", "udp"),
        Protocol::Udp,
        53,
    )
    .with_cluster_ip(ip("198.19.0.53"));
    port.endpoints = endpoints
        .iter()
        .map(|a| Endpoint::new(ip(a), 5353))
        .collect();
    port
}

/// A UDP flow from `client` through the DNS VIP, answered by `real_server`.
fn dns_flow(client: &str, real_server: &str) -> nf_conntrack::Entry {
    nf_conntrack::Entry {
        proto: nf_conntrack::IPPROTO_UDP,
        src: ip(client),
        dst: ip("198.19.0.53"),
        sport: 40000,
        dport: 53,
        reply_src: ip(real_server),
    }
}

fn dataplane_with_conntrack(
    fake: &Arc<FakeIpvs>,
    conntrack: &Arc<nf_conntrack::testing::FakeConntrack>,
) -> IpvsDataplane {
    let ops: Arc<dyn ConntrackOps> = conntrack.clone();
    dataplane(fake).with_conntrack(ops)
}

#[test]
fn removed_udp_real_servers_lose_their_flows_in_one_dump() {
    let fake = Arc::new(FakeIpvs::new());
    let conntrack = Arc::new(nf_conntrack::testing::FakeConntrack::default());
    let dp = dataplane_with_conntrack(&fake, &conntrack);
    let all = table(vec![
        dns(&["198.18.1.1", "198.18.1.2", "198.18.1.3"]),
        web(&["198.18.1.10"]),
    ]);
    sync(&dp, &ServiceTable::empty(), &all, SyncMode::Full);
    assert!(conntrack.dumps().is_empty(), "nothing was deleted yet");

    let kept = dns_flow("198.18.0.3", "198.18.1.3");
    conntrack.insert([
        dns_flow("198.18.0.1", "198.18.1.1"),
        dns_flow("198.18.0.2", "198.18.1.2"),
        kept,
    ]);
    // Two UDP real servers and the only TCP one go in one sync.
    let fewer = table(vec![dns(&["198.18.1.3"]), web(&[])]);
    let report = sync(&dp, &all, &fewer, SyncMode::Partial);
    assert!(report.is_complete(), "{report}");
    // The clean-up runs off the sync's path; wait for it.
    assert_eq!(dp.wait_for_flow_cleanup(), None);
    assert_eq!(conntrack.dumps(), [nf_conntrack::Family::V4], "one dump");
    let deleted: Vec<IpAddr> = conntrack
        .deleted()
        .into_iter()
        .map(|(_, e)| e.reply_src)
        .collect();
    assert_eq!(deleted, [ip("198.18.1.1"), ip("198.18.1.2")]);
    assert_eq!(conntrack.entries(), [kept]);

    // A sync that deletes no UDP real server dumps nothing.
    sync(&dp, &fewer, &fewer, SyncMode::Full);
    assert_eq!(conntrack.dumps().len(), 1);
}

#[test]
fn a_failed_flow_clean_up_is_a_problem_of_the_next_sync_and_the_real_server_is_still_gone() {
    let fake = Arc::new(FakeIpvs::new());
    let conntrack = Arc::new(nf_conntrack::testing::FakeConntrack::default());
    let dp = dataplane_with_conntrack(&fake, &conntrack);
    let two = table(vec![dns(&["198.18.1.1", "198.18.1.2"])]);
    sync(&dp, &ServiceTable::empty(), &two, SyncMode::Full);
    conntrack.fail_with(1);
    let one = table(vec![dns(&["198.18.1.2"])]);
    let report = sync(&dp, &two, &one, SyncMode::Partial);
    assert!(
        report.is_complete(),
        "the clean-up runs after the sync: {report}"
    );
    // The first sync after it ended reports its failure (bounded wait: it runs on a thread).
    let mut report = sync(&dp, &one, &one, SyncMode::Partial);
    for _ in 0..400 {
        if !report.problems.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
        report = sync(&dp, &one, &one, SyncMode::Partial);
    }
    assert_eq!(report.problems.len(), 1, "{report}");
    let problem = report.problems[0].to_string();
    assert!(
        problem.contains("UDP 198.19.0.53:53 -> 198.18.1.1")
            && problem.contains("conntrack dump (ipv4)"),
        "{problem}"
    );
    let key = ServiceKey {
        addr: ip("198.19.0.53"),
        protocol: Protocol::Udp,
        port: 53,
    };
    let left: Vec<IpAddr> = fake
        .real_servers(&key)
        .expect("dump")
        .iter()
        .map(|rs| rs.addr)
        .collect();
    assert_eq!(left, [ip("198.18.1.2")]);
}

#[tokio::test]
async fn the_drift_check_sees_a_deleted_virtual_server_and_a_flush() {
    let fake = Arc::new(FakeIpvs::new());
    let mut dp = dataplane(&fake);
    assert!(
        !dp.check_drift().await.expect("check"),
        "nothing applied, nothing to lose"
    );
    let mut api = web(&["198.18.1.20"]);
    api.name = ServicePortName::new("default", "api", "http");
    api.cluster_ips = vec![ip("198.19.0.11")];
    let t = table(vec![web(&["198.18.1.10"]), api]);
    sync(&dp, &ServiceTable::empty(), &t, SyncMode::Full);
    assert!(!dp.check_drift().await.expect("check"), "all there");

    fake.delete_virtual_server(&web_key())
        .expect("delete by hand");
    assert!(
        dp.check_drift().await.expect("check"),
        "one of ours is gone"
    );
    sync(&dp, &t, &t, SyncMode::Full);
    assert!(!dp.check_drift().await.expect("check"), "repaired");

    fake.flush().expect("ipvsadm -C");
    assert!(dp.check_drift().await.expect("check"), "all gone");
}

#[tokio::test]
async fn the_drift_check_sees_a_real_server_changed_added_or_deleted_by_hand() {
    let fake = Arc::new(FakeIpvs::new());
    let mut dp = dataplane(&fake);
    let t = table(vec![web(&["198.18.1.10", "198.18.1.11"])]);
    sync(&dp, &ServiceTable::empty(), &t, SyncMode::Full);
    assert!(!dp.check_drift().await.expect("check"), "all there");
    let ours = fake.real_servers(&web_key()).expect("dump");

    // `ipvsadm -e ... -w 0`: the weight of one of ours changed.
    let mut drained = ours[0].clone();
    drained.weight = 0;
    fake.update_real_server(&web_key(), &drained)
        .expect("edit by hand");
    assert!(dp.check_drift().await.expect("check"), "weight changed");
    sync(&dp, &t, &t, SyncMode::Full);
    assert!(!dp.check_drift().await.expect("check"), "repaired");

    // `ipvsadm -d`: one of ours deleted.
    fake.delete_real_server(&web_key(), &ours[1])
        .expect("delete by hand");
    assert!(dp.check_drift().await.expect("check"), "real server gone");
    sync(&dp, &t, &t, SyncMode::Full);
    assert!(!dp.check_drift().await.expect("check"), "repaired");

    // `ipvsadm -a`: a stranger added to our virtual server.
    let mut stranger = ours[0].clone();
    stranger.addr = ip("198.18.1.99");
    fake.add_real_server(&web_key(), &stranger)
        .expect("add by hand");
    assert!(dp.check_drift().await.expect("check"), "stranger added");
    sync(&dp, &t, &t, SyncMode::Full);
    assert!(!dp.check_drift().await.expect("check"), "repaired");
}

#[test]
fn the_drift_audit_sweeps_every_virtual_server_in_slices_and_wraps_around() {
    let mut applied = IpvsState::default();
    for port in 1..=10u16 {
        let vs = VirtualServer::new(
            ip("198.19.0.10"),
            Protocol::Tcp,
            port,
            KernelScheduler::RoundRobin,
        );
        applied
            .services
            .insert(vs.key(), crate::plan::ServiceState::new(vs));
    }
    let mut audit = DriftAudit {
        next: None,
        batch: 4,
    };
    let mut seen = Vec::new();
    for _ in 0..3 {
        let (keys, next) = audit.slice(&applied);
        assert_eq!(keys.len(), 4, "a full slice every time, wrapping around");
        seen.extend(keys.iter().map(|k| k.port));
        audit.next = next;
    }
    // 1-4, 5-8, then 9, 10 and the wrap to 1, 2.
    assert_eq!(seen, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1, 2]);

    // A table smaller than the slice: each key once.
    audit.batch = 100;
    audit.next = Some(ServiceKey {
        addr: ip("198.19.0.10"),
        protocol: Protocol::Tcp,
        port: 7,
    });
    let (keys, _) = audit.slice(&applied);
    let ports: Vec<u16> = keys.iter().map(|k| k.port).collect();
    assert_eq!(ports, [7, 8, 9, 10, 1, 2, 3, 4, 5, 6]);

    // Sized to the budget: 10 µs a key fits 4,000 in 40 ms; never below the floor.
    audit.measured(100, Duration::from_millis(1));
    assert_eq!(audit.batch, 4_000);
    audit.measured(10, Duration::from_secs(1));
    assert_eq!(audit.batch, DriftAudit::MIN_BATCH);
}

// === every effect through its handle (fake interface, fake companions) ===

/// A dummy interface in memory. At each bind and unbind it notes how many virtual servers the
/// fake IPVS holds on the address, so a test sees what ran before what.
#[derive(Debug)]
struct FakeLink {
    ipvs: Arc<FakeIpvs>,
    log: Arc<Mutex<Vec<String>>>,
    vips: Mutex<BTreeSet<IpAddr>>,
}

impl FakeLink {
    fn services_on(&self, ip: IpAddr) -> usize {
        let all = self.ipvs.virtual_servers().expect("dump");
        all.iter().filter(|vs| vs.addr == ip).count()
    }

    fn note(&self, line: String) {
        self.log.lock().expect("log").push(line);
    }
}

impl crate::apply::LinkOps for FakeLink {
    fn link_index(&self, _: &str) -> Result<Option<u32>, BackendError> {
        Ok(Some(7))
    }

    fn ensure_dummy(&self, name: &str) -> Result<(u32, bool), BackendError> {
        self.note(format!("ensure {name}"));
        Ok((7, false))
    }

    fn delete_link(&self, _: &str) -> Result<bool, BackendError> {
        Ok(true)
    }

    fn vips(&self, _: u32, _: crate::config::VipBinding) -> Result<Vec<IpAddr>, BackendError> {
        Ok(self.vips.lock().expect("vips").iter().copied().collect())
    }

    fn bind_vips(
        &self,
        _: u32,
        _: crate::config::VipBinding,
        ips: &[IpAddr],
    ) -> Vec<Result<(), BackendError>> {
        for ip in ips {
            self.note(format!("bind {ip} ({} there)", self.services_on(*ip)));
            self.vips.lock().expect("vips").insert(*ip);
        }
        ips.iter().map(|_| Ok(())).collect()
    }

    fn unbind_vips(
        &self,
        _: u32,
        _: crate::config::VipBinding,
        ips: &[IpAddr],
    ) -> Vec<Result<(), BackendError>> {
        for ip in ips {
            self.note(format!("unbind {ip} ({} there)", self.services_on(*ip)));
            self.vips.lock().expect("vips").remove(ip);
        }
        ips.iter().map(|_| Ok(())).collect()
    }

    fn set_sysctls(&self, strict_arp: bool) {
        self.note(format!("sysctls (strict ARP {strict_arp})"));
    }
}

/// Companions that note each sync's scope and write one object per touched key.
#[derive(Debug)]
struct FakeCompanions {
    log: Arc<Mutex<Vec<String>>>,
}

impl crate::apply::CompanionOps for FakeCompanions {
    fn sync(
        &mut self,
        desired: &Desired,
        touched: Option<&Touched>,
    ) -> Result<usize, BackendError> {
        let (scope, written) = match touched {
            None => ("all".to_owned(), desired.state.services.len()),
            Some(t) => (format!("{} key(s)", t.keys.len()), t.keys.len()),
        };
        self.log
            .lock()
            .expect("log")
            .push(format!("companions {scope}"));
        Ok(written)
    }

    fn restore_failures(&self) -> usize {
        0
    }

    fn cleanup(&mut self) -> Result<usize, BackendError> {
        Ok(0)
    }
}

/// A dataplane over `fake` with a fake interface and fake companions, and their shared log.
fn dataplane_with_handles(fake: &Arc<FakeIpvs>) -> (IpvsDataplane, Arc<Mutex<Vec<String>>>) {
    let dp = dataplane(fake);
    let log = Arc::new(Mutex::new(Vec::new()));
    {
        let mut core = dp.lock();
        core.handles.link = Some(Box::new(FakeLink {
            ipvs: Arc::clone(fake),
            log: Arc::clone(&log),
            vips: Mutex::new(BTreeSet::new()),
        }));
        core.handles.companions = Some(Box::new(FakeCompanions {
            log: Arc::clone(&log),
        }));
    }
    (dp, log)
}

fn take_log(log: &Mutex<Vec<String>>) -> Vec<String> {
    std::mem::take(&mut *log.lock().expect("log"))
}

fn api(endpoints: &[&str]) -> ServicePort {
    let mut port = web(endpoints);
    port.name = ServicePortName::new("default", "api", "http");
    port.cluster_ips = vec![ip("198.19.0.11")];
    port
}

#[test]
fn each_effect_runs_through_its_handle_binds_first_unbinds_last() {
    let fake = Arc::new(FakeIpvs::new());
    let (dp, log) = dataplane_with_handles(&fake);
    let first = table(vec![web(&["198.18.1.10"])]);
    let report = sync(&dp, &ServiceTable::empty(), &first, SyncMode::Full);
    assert_eq!(
        take_log(&log),
        [
            "ensure svcp-ipvs0",
            "sysctls (strict ARP false)",
            "bind 198.19.0.10 (0 there)",
            "companions all",
        ]
    );
    // A bind, the virtual server and its real server, one companion object.
    assert_eq!(report.objects_written, 4, "{report}");

    // web goes, api comes: api's VIP is bound before its virtual server exists, web's is
    // unbound once its virtual server is gone; no setup on a partial sync.
    let second = table(vec![api(&["198.18.1.10"])]);
    let report = sync(&dp, &first, &second, SyncMode::Partial);
    assert_eq!(report.mode, SyncMode::Partial);
    assert_eq!(
        take_log(&log),
        [
            "bind 198.19.0.11 (0 there)",
            "unbind 198.19.0.10 (0 there)",
            "companions 2 key(s)",
        ]
    );
    assert_eq!(report.objects_written, 1 + 3 + 1 + 2, "{report}");
}

#[test]
fn changes_that_do_not_lead_from_the_last_table_make_the_sync_full() {
    let fake = Arc::new(FakeIpvs::new());
    let (dp, log) = dataplane_with_handles(&fake);
    let first = table(vec![web(&["198.18.1.10"])]);
    sync(&dp, &ServiceTable::empty(), &first, SyncMode::Full);
    let second = table(vec![web(&["198.18.1.10"]), api(&["198.18.1.11"])]);
    take_log(&log);
    // Changes from the empty table, though the last sync was of `first`.
    let report = sync(&dp, &ServiceTable::empty(), &second, SyncMode::Partial);
    assert_eq!(report.mode, SyncMode::Full, "{report}");
    assert_eq!(
        take_log(&log),
        [
            "ensure svcp-ipvs0",
            "sysctls (strict ARP false)",
            "bind 198.19.0.11 (0 there)",
            "companions all",
        ]
    );
    assert_eq!(dp.applied().without_conns(), dp.desired(&second).state);
    // Back on track: the next partial sync follows its changes.
    let third = table(vec![api(&["198.18.1.11"])]);
    let report = sync(&dp, &second, &third, SyncMode::Partial);
    assert_eq!(report.mode, SyncMode::Partial, "{report}");
    assert_eq!(dp.applied().without_conns(), dp.desired(&third).state);
}
