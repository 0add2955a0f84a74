//! The effects of a sync, pure: a golden file of a small case (full and partial), and their cost
//! (one endpoint changed plans one IPVS operation, one service added a fixed number of effects,
//! at 1,000 and at 10,000 services).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Instant;

use proxy_core::diff::diff;
use proxy_core::table::{Endpoint, ServicePort, ServicePortName, ServiceTable};

use super::*;
use crate::model::{ConnCounts, RealServer};
use crate::plan::golden::{check, dir};
use crate::plan::plan_desired;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address literal")
}

fn port(name: &str, protocol: Protocol, vip: &str, vport: u16, endpoints: &[&str]) -> ServicePort {
    let mut port = ServicePort::new(ServicePortName::new("default", name, "p"), protocol, vport)
        .with_cluster_ip(ip(vip));
    port.endpoints = endpoints
        .iter()
        .map(|a| Endpoint::new(ip(a), 8080))
        .collect();
    port
}

fn table(ports: Vec<ServicePort>) -> ServiceTable {
    let mut builder = ServiceTable::builder().node("node-a");
    for p in ports {
        builder = builder.insert(p);
    }
    builder.build().expect("valid test table")
}

/// What a sync of `desired` left: its virtual servers applied, its VIPs bound.
fn synced(desired: &Desired) -> Observed {
    Observed {
        applied: desired.state.clone(),
        ownership: Ownership {
            bound: desired.vips.keys().copied().collect(),
            created: BTreeSet::new(),
        },
        link_index: Some(7),
        draining: Draining::default(),
    }
}

fn key_of(port: &ServicePort) -> ServiceKey {
    ServiceKey {
        addr: port.cluster_ips[0],
        protocol: port.protocol,
        port: port.port,
    }
}

#[test]
fn the_effects_of_a_small_change_render_to_their_golden_file() {
    let config = IpvsConfig::default();
    let web = |eps: &[&str]| port("web", Protocol::Tcp, "198.19.0.10", 80, eps);
    let dns = |eps: &[&str]| port("dns", Protocol::Udp, "198.19.0.53", 53, eps);
    let old = port("old", Protocol::Tcp, "198.19.0.20", 80, &["198.18.1.5"]);
    let api = port("api", Protocol::Tcp, "198.19.0.30", 443, &["198.18.1.6"]);
    let before = table(vec![
        web(&["198.18.1.1", "198.18.1.2"]),
        dns(&["198.18.1.3", "198.18.1.4"]),
        old,
    ]);
    let after = table(vec![
        web(&["198.18.1.1", "198.18.1.7"]),
        dns(&["198.18.1.3"]),
        api,
    ]);
    let mut desired = plan_desired(&before, &config);
    let mut observed = synced(&desired);
    // 198.18.1.2 still has a connection open: it drains. A stray VIP of ours, bound with no
    // virtual server: a full sync unbinds it, a partial one does not look at it.
    let web_key = key_of(&web(&[]));
    let leaving = RealServer::new(ip("198.18.1.2"), 8080, 1);
    let service = observed.applied.services.get_mut(&web_key).expect("web");
    service.real_servers.insert(
        leaving.socket_addr(),
        RealServer {
            conns: Some(ConnCounts {
                active: 1,
                ..ConnCounts::default()
            }),
            ..leaving
        },
    );
    observed.ownership.bound.insert(ip("198.19.0.99"));

    let now = Instant::now();
    let grace = config.graceful_termination;
    let touched = desired.update(&diff(&before, &after), &config);
    let partial = plan_sync(&desired, &observed, Some(&touched), now, grace);
    let full = plan_sync(&desired, &observed, None, now, grace);
    let mut got = String::new();
    for (effects, is_full) in [(&partial, false), (&full, true)] {
        // The mode's line, then the setup before the effects.
        let rendered = effects.render(now);
        let (mode, rest) = rendered.split_once('\n').expect("a mode line");
        got.push_str(&format!("{mode}\n"));
        got.push_str(&plan_setup(is_full, &observed, &config).render());
        got.push_str(rest);
    }
    let path = dir("golden").join("effects").join("small.effects");
    if let Err(e) = check(&path, &got) {
        panic!("{e}");
    }
    // The partial plan is the full one, but for what the change did not touch.
    assert_eq!(partial.ops, full.ops);
    assert_eq!(full.unbinds, [ip("198.19.0.20"), ip("198.19.0.99")]);
    assert_eq!(partial.unbinds, [ip("198.19.0.20")]);
}

#[test]
fn an_unbind_waits_for_every_virtual_server_on_the_address() {
    // Two ports on one VIP; one goes: the address stays bound for the other.
    let config = IpvsConfig::default();
    let a = port("a", Protocol::Tcp, "198.19.0.10", 80, &["198.18.1.1"]);
    let b = port("b", Protocol::Tcp, "198.19.0.10", 81, &["198.18.1.1"]);
    let before = table(vec![a.clone(), b]);
    let after = table(vec![a]);
    let mut desired = plan_desired(&before, &config);
    let mut observed = synced(&desired);
    let touched = desired.update(&diff(&before, &after), &config);
    let now = Instant::now();
    let effects = plan_sync(
        &desired,
        &observed,
        Some(&touched),
        now,
        config.graceful_termination,
    );
    assert_eq!(effects.unbinds, Vec::<IpAddr>::new(), "a is still there");
    assert_eq!(effects.ops.len(), 1, "{:?}", effects.ops);

    // Nothing desired on the address, but a virtual server of ours there that the partial
    // plan does not touch: it stays, so does the address.
    let b_key = key_of(&port("b", Protocol::Tcp, "198.19.0.10", 81, &[]));
    let mut stray = observed.applied.services[&b_key].clone();
    stray.vs.port = 82;
    observed.applied.services.insert(stray.vs.key(), stray);
    let only_b = Touched {
        keys: BTreeSet::from([b_key]),
        endpoints: BTreeSet::new(),
    };
    let grace = config.graceful_termination;
    let effects = plan_sync(&Desired::default(), &observed, Some(&only_b), now, grace);
    assert_eq!(effects.ops, [Op::DeleteVirtualServer(b_key)]);
    assert_eq!(
        effects.unbinds,
        Vec::<IpAddr>::new(),
        "198.19.0.10:82 stays"
    );
    // A full plan deletes it too, and unbinds.
    let effects = plan_sync(&Desired::default(), &observed, None, now, grace);
    assert_eq!(effects.ops.len(), 3, "{:?}", effects.ops);
    assert_eq!(effects.unbinds, [ip("198.19.0.10")]);
}

/// `n` services, each with its cluster IP and one endpoint of its own.
fn big_table(n: u32) -> ServiceTable {
    let ports = (0..n).map(|i| {
        let vip = IpAddr::from([198, 19, (i / 250) as u8, (i % 250) as u8 + 1]);
        let ep = IpAddr::from([198, 18, (i / 250) as u8, (i % 250) as u8 + 1]);
        ServicePort::new(
            ServicePortName::new("bench", format!("svc-{i}"), "p"),
            Protocol::Tcp,
            80,
        )
        .with_cluster_ip(vip)
        .with_endpoint(Endpoint::new(ep, 8080))
    });
    table(ports.collect())
}

/// The effects of the partial sync from `before` to `after`, `before` having been synced.
fn partial_effects(before: &ServiceTable, after: &ServiceTable) -> Effects {
    let config = IpvsConfig::default();
    let mut desired = plan_desired(before, &config);
    let observed = synced(&desired);
    let touched = desired.update(&diff(before, after), &config);
    plan_sync(
        &desired,
        &observed,
        Some(&touched),
        Instant::now(),
        config.graceful_termination,
    )
}

#[test]
fn one_endpoint_changed_plans_one_ipvs_operation_at_any_size() {
    for n in [1_000, 10_000] {
        let before = big_table(n);
        let name = ServicePortName::new("bench", "svc-777", "p");
        let mut changed = (**before.get(&name).expect("present")).clone();
        changed
            .endpoints
            .push(Endpoint::new(ip("198.18.200.1"), 8080));
        let key = key_of(&changed);
        let after = before.edit().insert(changed).build().expect("valid");

        let effects = partial_effects(&before, &after);
        let added = RealServer::new(ip("198.18.200.1"), 8080, 1);
        assert_eq!(effects.ops, [Op::AddRealServer(key, added)], "n = {n}");
        assert!(
            effects.binds.is_empty() && effects.unbinds.is_empty(),
            "n = {n}"
        );
        assert!(effects.deleted_udp.is_empty(), "n = {n}");
        let CompanionScope::Touched(touched) = &effects.companions else {
            panic!("a partial sync writes the touched companions only");
        };
        assert_eq!(touched.keys, BTreeSet::from([key]), "n = {n}");
        // The port's endpoints, the one that came and the one it had (a changed port's entries
        // are written again whole).
        let own = BTreeSet::from([
            (ip("198.18.3.28"), Protocol::Tcp, 8080),
            (ip("198.18.200.1"), Protocol::Tcp, 8080),
        ]);
        assert_eq!(
            touched.endpoints, own,
            "n = {n}: only that port's endpoints"
        );
        assert_eq!(
            effects.count(),
            4,
            "n = {n}: {}",
            effects.render(Instant::now())
        );
    }
}

#[test]
fn one_service_added_or_removed_plans_the_same_effects_at_any_size() {
    let mut rendered = Vec::new();
    for n in [1_000, 10_000] {
        let before = big_table(n);
        let new = port(
            "new",
            Protocol::Tcp,
            "198.19.250.1",
            80,
            &["198.18.250.1", "198.18.250.2"],
        );
        let after = before.edit().insert(new).build().expect("valid");
        let added = partial_effects(&before, &after);
        // A bind, the virtual server and its two real servers; companions of its key and two
        // endpoints.
        assert_eq!((added.binds.len(), added.ops.len()), (1, 3), "n = {n}");
        assert_eq!(
            added.count(),
            7,
            "n = {n}: {}",
            added.render(Instant::now())
        );
        let removed = partial_effects(&after, &before);
        assert_eq!(
            (removed.ops.len(), removed.unbinds.len()),
            (1, 1),
            "n = {n}"
        );
        assert_eq!(
            removed.count(),
            5,
            "n = {n}: {}",
            removed.render(Instant::now())
        );
        let now = Instant::now();
        rendered.push((added.render(now), removed.render(now)));
    }
    assert_eq!(
        rendered[0], rendered[1],
        "the same effects at 1,000 and 10,000"
    );
}
