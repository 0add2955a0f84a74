use std::net::IpAddr;

use proptest::prelude::*;

use super::*;
use crate::diff::diff;
use crate::table::Protocol;

fn ip(text: &str) -> IpAddr {
    text.parse().expect("valid ip")
}

fn tracker() -> ChangeTracker {
    let (mut tracker, _source) = ChangeTracker::new("test", Capabilities::everything());
    tracker
        .set_node(Some("node-a".to_owned()))
        .expect("plain name");
    tracker
}

/// `default/NAME` on cluster IP 198.19.0.VIP, ports http:80 -> 8080 and https:443 -> 8443.
fn web(name: &str, vip: u8) -> Service {
    Service::new(ServiceName::new("default", name))
        .with_cluster_ip(ip(&format!("198.19.0.{vip}")))
        .with_port(ServicePortSpec::tcp("http", 80).with_target_port(8080))
        .with_port(ServicePortSpec::tcp("https", 443).with_target_port(8443))
}

fn slice(service: &str, name: &str, endpoints: &[(&str, &str)]) -> EndpointSlice {
    let mut slice = EndpointSlice::new(ServiceName::new("default", service), name);
    for (addr, node) in endpoints {
        slice = slice.with_endpoint(SliceEndpoint::new(ip(addr)).on_node(*node));
    }
    slice
}

fn port_of(tracker: &ChangeTracker, service: &str, port: &str) -> Option<Arc<ServicePort>> {
    tracker
        .table()
        .get(&ServicePortName::new("default", service, port))
        .cloned()
}

fn problems(tracker: &ChangeTracker, service: &str, port: &str) -> Vec<String> {
    tracker
        .skipped()
        .get(&ServicePortName::new("default", service, port))
        .map(|s| s.problems.iter().map(ToString::to_string).collect())
        .unwrap_or_default()
}

#[test]
fn a_services_idle_timeout_reaches_each_of_its_ports_and_a_bad_one_is_skipped() {
    let mut tracker = tracker();
    let five = std::time::Duration::from_secs(5);
    tracker.set_service(web("web", 10).with_idle_timeout(five));
    tracker.set_service(web("api", 11));
    for port in ["http", "https"] {
        let web = port_of(&tracker, "web", port).expect("admitted");
        assert_eq!(web.idle_timeout, Some(five), "{port}");
    }
    assert_eq!(
        port_of(&tracker, "api", "http")
            .expect("admitted")
            .idle_timeout,
        None
    );

    let before = tracker.table().clone();
    tracker.set_service(web("web", 10).with_idle_timeout(std::time::Duration::ZERO));
    assert_eq!(
        problems(&tracker, "web", "http"),
        ["services[default/web].ports[http].idle_timeout_seconds: 0 is outside 1-86400"]
    );
    assert_eq!(
        port_of(&tracker, "web", "http")
            .expect("keeps its last good version")
            .idle_timeout,
        Some(five)
    );
    assert!(diff(&before, tracker.table()).is_empty());

    tracker.set_service(web("web", 10));
    let changes = diff(&before, tracker.table());
    assert_eq!(changes.changed.len(), 2);
    assert!(changes
        .changed
        .iter()
        .all(|c| c.service_changed && c.endpoints.is_empty()));
}

#[test]
fn service_and_slices_join_by_port_name_with_locality_from_the_node_name() {
    let mut tracker = tracker();
    tracker.set_service(web("web", 10));
    tracker.set_endpoint_slice(slice("web", "web-a", &[("198.18.1.10", "node-a")]));
    // A second slice with named ports: only `http` is served by it, at 9090.
    tracker.set_endpoint_slice(
        slice("web", "web-b", &[("198.18.1.11", "node-b")]).with_port("http", 9090),
    );

    let http = port_of(&tracker, "web", "http").expect("http admitted");
    let endpoints: Vec<(String, bool)> = http
        .endpoints
        .iter()
        .map(|e| (e.key().to_string(), e.is_local))
        .collect();
    assert_eq!(
        endpoints,
        [
            ("198.18.1.10:8080".to_owned(), true),
            ("198.18.1.11:9090".to_owned(), false)
        ]
    );
    let https = port_of(&tracker, "web", "https").expect("https admitted");
    assert_eq!(https.endpoints.len(), 1, "web-b names no https port");
    assert_eq!(https.endpoints[0].port, 8443);
    assert_eq!(tracker.table().endpoint_count(), 3);
    assert!(tracker.skipped().is_empty());
}

#[test]
fn an_endpoint_in_two_slices_counts_once_preferring_the_ready_copy() {
    let mut tracker = tracker();
    tracker.set_service(web("web", 10));
    let mut not_ready = SliceEndpoint::new(ip("198.18.1.10"));
    not_ready.ready = false;
    tracker.set_endpoint_slice(slice("web", "a", &[]).with_endpoint(not_ready));
    tracker.set_endpoint_slice(slice("web", "b", &[("198.18.1.10", "node-b")]));
    let http = port_of(&tracker, "web", "http").expect("admitted");
    assert_eq!(http.endpoints.len(), 1);
    assert!(http.endpoints[0].ready);
    assert!(tracker.skipped().is_empty());
}

#[test]
fn changing_the_node_name_changes_locality() {
    let mut tracker = tracker();
    tracker.set_service(web("web", 10));
    tracker.set_endpoint_slice(slice("web", "a", &[("198.18.1.10", "node-b")]));
    assert!(
        !port_of(&tracker, "web", "http")
            .expect("admitted")
            .endpoints[0]
            .is_local
    );
    tracker
        .set_node(Some("node-b".to_owned()))
        .expect("plain name");
    assert!(
        port_of(&tracker, "web", "http")
            .expect("admitted")
            .endpoints[0]
            .is_local
    );
}

#[test]
fn a_bad_service_among_good_ones_is_skipped_by_name_and_the_rest_applies() {
    let mut tracker = tracker();
    tracker.set_service(web("web", 10));
    let mut bad = web("bad", 11);
    bad.cluster_ips.push(ip("198.19.0.12")); // a second IPv4 cluster IP
    tracker.set_service(bad);
    tracker.set_service(web("api", 13));

    assert!(port_of(&tracker, "web", "http").is_some());
    assert!(port_of(&tracker, "api", "https").is_some());
    assert!(port_of(&tracker, "bad", "http").is_none());
    let skipped = &tracker.skipped()[&ServicePortName::new("default", "bad", "http")];
    assert_eq!(skipped.reason, SkipReason::Invalid);
    assert!(!skipped.runs_previous);
    assert_eq!(
        problems(&tracker, "bad", "http"),
        [
            "services[default/bad].ports[http].cluster_ips[1]: second IPv4 cluster IP \
          (198.19.0.11 and 198.19.0.12): at most one per family"
        ]
    );
    assert_eq!(tracker.skipped().len(), 2, "both of bad's ports");
}

#[test]
fn an_invalid_new_version_keeps_the_last_good_one_running() {
    let mut tracker = tracker();
    tracker.set_service(web("web", 10));
    tracker.set_endpoint_slice(slice("web", "a", &[("198.18.1.10", "node-a")]));
    let good = port_of(&tracker, "web", "http").expect("admitted");

    let mut typo = web("web", 10);
    typo.ports[0].target_port = 0;
    tracker.set_service(typo);
    let running = port_of(&tracker, "web", "http").expect("still running");
    assert!(
        Arc::ptr_eq(&running, &good),
        "the last good version, unchanged"
    );
    let skipped = &tracker.skipped()[&ServicePortName::new("default", "web", "http")];
    assert!(skipped.runs_previous);
    assert_eq!(
        problems(&tracker, "web", "http"),
        [
            "services[default/web].ports[http].target_port: 0 is outside 1-65535",
            "services[default/web].ports[http].endpoints[198.18.1.10:0].port: 0 is outside 1-65535"
        ]
    );
    // The other port of the service took its new version (the same as before here).
    assert!(!tracker
        .skipped()
        .contains_key(&ServicePortName::new("default", "web", "https")));

    tracker.set_service(web("web", 10));
    assert!(tracker.skipped().is_empty(), "fixed");
}

#[test]
fn in_a_clash_the_newcomer_is_blamed_and_admitted_once_the_incumbent_goes() {
    let mut tracker = tracker();
    let mut api = web("api", 10);
    api.ports[0].node_port = Some(30080);
    tracker.set_service(api);
    // `web` sorts after `api`, `aaa` before it: the blame follows arrival, not name order.
    let mut aaa = web("aaa", 10);
    aaa.ports.truncate(1);
    tracker.set_service(aaa);
    assert!(
        port_of(&tracker, "api", "http").is_some(),
        "the incumbent keeps running"
    );
    assert!(port_of(&tracker, "aaa", "http").is_none());
    assert_eq!(
        problems(&tracker, "aaa", "http"),
        [
            "services[default/aaa].ports[http].cluster_ips[0]: 198.19.0.10:80/tcp already used by \
          services[default/api].ports[http] (cluster_ips)"
        ]
    );
    assert_eq!(
        tracker.skipped()[&ServicePortName::new("default", "aaa", "http")].reason,
        SkipReason::Clash
    );

    let mut zzz = Service::new(ServiceName::new("default", "zzz"))
        .with_port(ServicePortSpec::tcp("http", 8080).with_node_port(30080));
    zzz.cluster_ips.push(ip("198.19.0.99"));
    tracker.set_service(zzz);
    assert_eq!(
        problems(&tracker, "zzz", "http"),
        [
            "services[default/zzz].ports[http].node_port: 30080 already used by \
          services[default/api].ports[http]"
        ]
    );

    tracker.delete_service(&ServiceName::new("default", "api"));
    assert!(port_of(&tracker, "api", "http").is_none());
    assert!(
        port_of(&tracker, "aaa", "http").is_some(),
        "woken when api let go"
    );
    assert!(
        port_of(&tracker, "zzz", "http").is_some(),
        "woken when api let go"
    );
    assert!(tracker.skipped().is_empty(), "{:?}", tracker.skipped());
}

#[test]
fn a_health_check_port_on_another_services_node_port_is_a_clash() {
    let mut tracker = tracker();
    let mut api = web("api", 10);
    api.ports[0].node_port = Some(30100);
    tracker.set_service(api);
    let mut web = web("web", 11);
    web.health_check_node_port = Some(30100);
    tracker.set_service(web);
    assert_eq!(
        problems(&tracker, "web", "http"),
        [
            "services[default/web].ports[http].health_check_node_port: 30100 already used as \
          node port by services[default/api].ports[http]"
        ]
    );
}

#[test]
fn a_port_the_backend_lacks_is_skipped_as_unsupported() {
    let capabilities = Capabilities {
        protocols: [Protocol::Tcp].into_iter().collect(),
        ..Capabilities::everything()
    };
    let (mut tracker, _source) = ChangeTracker::new("tcp-only", capabilities);
    let dns = Service::new(ServiceName::new("default", "dns"))
        .with_cluster_ip(ip("198.19.0.53"))
        .with_port(ServicePortSpec::tcp("tcp", 53))
        .with_port(ServicePortSpec::udp("udp", 53));
    tracker.set_service(dns);
    assert!(port_of(&tracker, "dns", "tcp").is_some());
    assert!(port_of(&tracker, "dns", "udp").is_none());
    assert_eq!(
        problems(&tracker, "dns", "udp"),
        ["services[default/dns].ports[udp].protocol: udp is not supported by the tcp-only backend"]
    );
}

#[test]
fn deleting_a_service_or_a_slice_removes_what_it_brought() {
    let mut tracker = tracker();
    tracker.set_service(web("web", 10));
    tracker.set_endpoint_slice(slice("web", "a", &[("198.18.1.10", "node-a")]));
    tracker.set_endpoint_slice(slice("web", "b", &[("198.18.1.11", "node-a")]));
    assert_eq!(tracker.table().endpoint_count(), 4);
    tracker.delete_endpoint_slice(&ServiceName::new("default", "web"), "a");
    assert_eq!(tracker.table().endpoint_count(), 2);
    let generation = tracker.delete_service(&ServiceName::new("default", "web"));
    assert!(tracker.table().is_empty());
    assert_eq!(tracker.table().endpoint_count(), 0);
    assert_eq!(generation, tracker.generation());
    // Its slices outlive it: the service comes back with them.
    tracker.set_service(web("web", 10));
    assert_eq!(tracker.table().endpoint_count(), 2);
}

#[test]
fn every_change_publishes_the_next_generation_to_the_source() {
    let (mut tracker, mut source) = ChangeTracker::new("test", Capabilities::everything());
    assert_eq!(tracker.set_service(web("web", 10)), 1);
    assert_eq!(
        tracker.set_service(web("web", 10)),
        1,
        "a no-op publishes nothing"
    );
    assert_eq!(tracker.flush(), 2, "a flush publishes anyway");
    let update = futures_now(source.next_update()).expect("published");
    assert_eq!(update.generation, 2);
    assert_eq!(update.table.len(), 2);
    let mut batch = tracker.batch();
    assert_eq!(batch.set_service(web("api", 11)), 3);
    assert_eq!(
        batch.set_service(web("db", 12)),
        3,
        "one generation for the batch"
    );
    assert_eq!(batch.table().len(), 2, "not yet published");
    drop(batch);
    assert_eq!(tracker.generation(), 3);
    assert_eq!(tracker.table().len(), 6);
}

#[test]
fn one_endpoint_change_among_many_services_shares_everything_else() {
    let mut tracker = tracker();
    for i in 0..2_000u16 {
        let [hi, lo] = i.to_be_bytes();
        let name = format!("svc-{i}");
        let service = Service::new(ServiceName::new("default", name.clone()))
            .with_cluster_ip(IpAddr::from([198, 19, hi, lo]))
            .with_port(ServicePortSpec::tcp("http", 80));
        tracker.set_service(service);
        tracker.set_endpoint_slice(slice(
            &name,
            "a",
            &[(&format!("198.18.{hi}.{lo}"), "node-a")],
        ));
    }
    let before = tracker.table().clone();
    tracker.set_endpoint_slice(slice(
        "svc-1234",
        "a",
        &[("198.18.4.210", "node-a"), ("198.18.200.1", "node-b")],
    ));
    let changes = diff(&before, tracker.table());
    assert_eq!(changes.service_ports_changed(), 1);
    assert_eq!(changes.changed[0].endpoints.added.len(), 1);
    let shared = before
        .iter()
        .zip(tracker.table().iter())
        .filter(|(a, b)| Arc::ptr_eq(a, b))
        .count();
    assert_eq!(shared, 1_999, "every other port is the same `Arc`");
}

/// Polls a future once with a no-op waker (the watch channel has the value already).
fn futures_now<F: std::future::Future>(future: F) -> F::Output {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    runtime.block_on(future)
}

// === properties ===

/// One embedder event, over a small pool of names and addresses so that clashes happen.
#[derive(Debug, Clone)]
enum Event {
    SetService {
        name: u8,
        vip: u8,
        node_port: Option<u16>,
        health_check: Option<u16>,
        bad: bool,
        ports: u8,
    },
    DeleteService(u8),
    SetSlice {
        service: u8,
        slice: u8,
        endpoints: Vec<u8>,
    },
    DeleteSlice(u8, u8),
    SetNode(u8),
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        4 => (0..6u8, 0..4u8, proptest::option::of(30_000..30_004u16),
              proptest::option::of(30_002..30_006u16), proptest::bool::weighted(0.15), 1..3u8)
            .prop_map(|(name, vip, node_port, health_check, bad, ports)| Event::SetService {
                name, vip, node_port, health_check, bad, ports
            }),
        1 => (0..6u8).prop_map(Event::DeleteService),
        4 => (0..6u8, 0..2u8, proptest::collection::vec(0..8u8, 0..4))
            .prop_map(|(service, slice, endpoints)| Event::SetSlice { service, slice, endpoints }),
        1 => (0..6u8, 0..2u8).prop_map(|(s, l)| Event::DeleteSlice(s, l)),
        1 => (0..3u8).prop_map(Event::SetNode),
    ]
}

fn apply(tracker: &mut ChangeTracker, event: &Event) {
    let service_name = |n: u8| ServiceName::new("default", format!("s{n}"));
    match event {
        Event::SetService {
            name,
            vip,
            node_port,
            health_check,
            bad,
            ports,
        } => {
            let mut service =
                Service::new(service_name(*name)).with_cluster_ip(IpAddr::from([198, 19, 0, *vip]));
            for p in 0..*ports {
                let mut spec = ServicePortSpec::tcp(format!("p{p}"), 80 + u16::from(p));
                spec.node_port = node_port.map(|n| n + u16::from(p) * 10);
                if *bad && p == 0 {
                    spec.target_port = 0;
                }
                service = service.with_port(spec);
            }
            service.health_check_node_port = *health_check;
            tracker.set_service(service);
        }
        Event::DeleteService(name) => {
            tracker.delete_service(&service_name(*name));
        }
        Event::SetSlice {
            service,
            slice,
            endpoints,
        } => {
            let mut s = EndpointSlice::new(service_name(*service), format!("l{slice}"));
            for e in endpoints {
                s = s.with_endpoint(
                    SliceEndpoint::new(IpAddr::from([198, 18, 0, *e]))
                        .on_node(format!("n{}", e % 3)),
                );
            }
            tracker.set_endpoint_slice(s);
        }
        Event::DeleteSlice(service, slice) => {
            tracker.delete_endpoint_slice(&service_name(*service), &format!("l{slice}"));
        }
        Event::SetNode(n) => {
            tracker.set_node(Some(format!("n{n}"))).expect("plain name");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Whatever the embedder says, in any order, the tracker's table is a valid table (it
    /// builds through the validating builder unchanged), its endpoint count is right, and every
    /// port of every known service is either in it, or skipped with a reason, or both (its last
    /// good version runs).
    #[test]
    fn the_tracked_table_is_always_valid_and_accounts_for_every_port(
        events in proptest::collection::vec(event(), 1..40)
    ) {
        let (mut tracker, _source) = ChangeTracker::new("test", Capabilities::everything());
        for event in &events {
            apply(&mut tracker, event);
            let table = tracker.table();
            let rebuilt = table.edit().build();
            prop_assert!(rebuilt.is_ok(), "after {event:?}: {rebuilt:?}");
            let rebuilt = rebuilt.expect("checked");
            prop_assert_eq!(&rebuilt, table);
            let endpoints: usize = table.iter().map(|p| p.endpoints.len()).sum();
            prop_assert_eq!(endpoints, table.endpoint_count());
            for name in tracker.service_names() {
                for port in tracker.port_names(&name) {
                    let running = table.get(&port).is_some();
                    let skipped = tracker.skipped().get(&port);
                    prop_assert!(running || skipped.is_some(), "{port} neither runs nor is skipped");
                    if let Some(skipped) = skipped {
                        prop_assert_eq!(skipped.runs_previous, running, "{}", port);
                    }
                }
            }
            for (port, _) in tracker.skipped().iter() {
                prop_assert!(tracker.port_names(&ServiceName::of(port)).contains(port), "{port} of no service");
            }
        }
    }
}

#[test]
fn a_node_name_or_zone_with_a_control_character_is_refused_and_the_old_one_kept() {
    let (mut tracker, _source) = ChangeTracker::new("test", Capabilities::everything());
    tracker
        .set_node(Some("node-a".to_owned()))
        .expect("plain name");
    let before = tracker.generation();
    let error = tracker
        .set_node(Some("node-a\nFORGED log line".to_owned()))
        .expect_err("a newline is refused");
    assert_eq!(error.path, "node");
    assert!(error.message.contains("U+000A"), "{error}");
    assert_eq!(
        tracker.table().node(),
        Some("node-a"),
        "the old name is kept"
    );
    assert_eq!(tracker.generation(), before, "nothing published");
    let error = tracker
        .set_zone(Some("zone\u{1b}[31m".to_owned()))
        .expect_err("an ESC is refused");
    assert_eq!(error.path, "zone");
    assert_eq!(tracker.table().zone(), None);
}
