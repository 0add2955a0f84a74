//! Partial sync: cost follows the change, and a partial plan applied over the previous rules gives
//! the same behaviour as a full plan of the new table.

mod cases;

use std::net::IpAddr;

use backend_iptables::config::{InlineBalancing, IptablesConfig, TreeConfig};
use backend_iptables::plan::{Applied, Plan, Planner};
use backend_iptables::rules::{Family, TableName};
use backend_iptables::testing::trace::{Packet, Tracer};
use proxy_core::table::Endpoint;
use proxy_core::{diff, Protocol, ServicePort, ServicePortName, ServiceTable, SyncMode};

fn planner() -> Planner {
    Planner::new(cases::config()).expect("valid config")
}

/// The tree with a chain per service port (`inline_balancing` off).
fn per_port_planner() -> Planner {
    Planner::new(IptablesConfig {
        tree: TreeConfig {
            inline_balancing: InlineBalancing::Never,
            ..TreeConfig::default()
        },
        ..cases::config()
    })
    .expect("valid config")
}

fn v4_text(plan: &Plan) -> String {
    plan.restores
        .iter()
        .filter(|r| r.family == Family::V4)
        .map(|r| r.input())
        .collect()
}

/// Full plan of `before`, then a partial plan to `after`; returns (partial plan, kernel text as the
/// two restores would leave it).
fn sync_twice(planner: &Planner, before: &ServiceTable, after: &ServiceTable) -> (Plan, String) {
    let full = planner.plan_full(before);
    let mut applied = Applied::new();
    applied.commit(&full);
    let changes = diff(before, after);
    let partial = planner.plan(after, &changes, &applied, SyncMode::Partial);
    assert_eq!(partial.mode, SyncMode::Partial);
    let text = format!("{}{}", v4_text(&full), v4_text(&partial));
    (partial, text)
}

fn name(i: u32) -> ServicePortName {
    ServicePortName::new("scale", format!("s{i}"), "p")
}

fn vip(i: u32) -> IpAddr {
    std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(198, 19, 0, 0)) + i).into()
}

fn assert_same_behaviour(planner: &Planner, kernel_text: &str, after: &ServiceTable, vips: &[u32]) {
    let locals = cases::local_addrs();
    let incremental =
        Tracer::new(Family::V4, kernel_text, &planner.hooks(), locals.clone()).expect("parses");
    let fresh =
        Tracer::from_plan(planner, &planner.plan_full(after), Family::V4, locals).expect("parses");
    for &i in vips {
        let p = Packet::tcp(cases::POD, &vip(i).to_string(), 80);
        let a = incremental.trace(&p).expect("trace");
        let b = fresh.trace(&p).expect("trace");
        assert_eq!(
            a.summary(),
            b.summary(),
            "service {i}: incremental\n{a}\nfresh\n{b}"
        );
        assert_eq!(a.destinations(), b.destinations(), "service {i}");
    }
}

#[test]
fn one_endpoint_change_among_1000_services_rewrites_one_chain() {
    let before = cases::scale_table(1000, 10);
    let mut port = ServicePort::clone(before.get(&name(500)).expect("exists"));
    port.endpoints.pop();
    port.endpoints
        .push(Endpoint::new("198.18.200.99".parse().expect("ip"), 8080));
    let after = before.edit().insert(port).build().expect("valid");
    // Inline balancing: the leaf holding the port (4 ports of 11 rules here, at most 80 rules);
    // a chain per port: the port's SVC chain (11 rules).
    for (planner, chain, most_rules) in [
        (planner(), "SVCP-DT-", 80),
        (per_port_planner(), "SVCP-SVC-", 11),
    ] {
        let (partial, text) = sync_twice(&planner, &before, &after);
        assert_eq!(partial.restores.len(), 1, "{}", partial.render());
        let nat = partial
            .restore(Family::V4, TableName::Nat)
            .expect("nat restore");
        assert_eq!(nat.table.chains.len(), 1, "{}", partial.render());
        assert!(nat.table.chains[0].name.as_str().starts_with(chain));
        assert!(nat.table.deleted.is_empty());
        let rules = partial.rules_written();
        eprintln!("one endpoint changed: {chain}… rewritten, {rules} rules");
        assert!(rules <= most_rules, "{rules} rules\n{}", partial.render());
        assert_same_behaviour(&planner, &text, &after, &[0, 499, 500, 501, 999]);
    }
}

#[test]
fn adding_a_service_writes_its_chain_and_the_dispatch_leaf_only() {
    let before = cases::scale_table(1000, 2);
    let new = ServicePort::new(name(5000), Protocol::Tcp, 80)
        .with_cluster_ip(vip(1000))
        .with_endpoint(Endpoint::new("198.18.100.1".parse().expect("ip"), 8080));
    let after = before.edit().insert(new).build().expect("valid");
    for planner in [planner(), per_port_planner()] {
        adding_a_service(&planner, &before, &after);
    }
}

fn adding_a_service(planner: &Planner, before: &ServiceTable, after: &ServiceTable) {
    let (partial, text) = sync_twice(planner, before, after);
    let written: Vec<&str> = partial
        .restores
        .iter()
        .flat_map(|r| r.table.chains.iter().map(|c| c.name.as_str()))
        .collect();
    assert!(written.len() <= 4, "{written:?}");
    assert!(
        partial.rules_written() < 100,
        "rules written: {}",
        partial.rules_written()
    );
    assert_same_behaviour(planner, &text, after, &[0, 999, 1000]);
}

#[test]
fn removing_a_service_deletes_its_chains() {
    let before = cases::scale_table(100, 2);
    let mut b = before.edit();
    b.remove(&name(42));
    let after = b.build().expect("valid");
    for (planner, own_chain) in [(planner(), false), (per_port_planner(), true)] {
        let (partial, text) = sync_twice(&planner, &before, &after);
        let nat = partial.restore(Family::V4, TableName::Nat).expect("nat");
        let svc = planner.names().service_cluster(&name(42), Protocol::Tcp);
        if own_chain {
            assert_eq!(nat.table.deleted, vec![svc.clone()], "{}", partial.render());
            assert!(nat.input().contains(&format!("-X {svc}\n")));
        } else {
            // Inline: its rules go with the rewrite of its leaf; no chain of its own to delete.
            assert!(nat.table.deleted.is_empty(), "{}", partial.render());
            assert_eq!(nat.table.chains.len(), 1, "{}", partial.render());
        }
        removed_service_is_gone(&planner, &text, &after);
    }
}

fn removed_service_is_gone(planner: &Planner, text: &str, after: &ServiceTable) {
    assert_same_behaviour(planner, text, after, &[41, 42, 43]);
    let gone = Tracer::new(Family::V4, text, &planner.hooks(), cases::local_addrs())
        .expect("parses")
        .trace(&Packet::tcp(cases::POD, &vip(42).to_string(), 80))
        .expect("trace");
    assert_eq!(gone.summary(), "ACCEPT", "{gone}");
}

#[test]
fn nothing_changed_plans_nothing() {
    let planner = planner();
    let table = cases::scale_table(50, 3);
    let mut applied = Applied::new();
    applied.commit(&planner.plan_full(&table));
    let plan = planner.plan(&table, &diff(&table, &table), &applied, SyncMode::Partial);
    assert!(plan.is_empty(), "{}", plan.render());
}

#[test]
fn full_resync_deletes_stale_chains_and_partial_without_state_is_full() {
    // A chain per port, so the five removed ports leave five chains to delete.
    let planner = per_port_planner();
    let before = cases::scale_table(10, 2);
    let after = cases::scale_table(5, 2);
    let mut applied = Applied::new();
    applied.commit(&planner.plan_full(&before));
    let full = planner.plan(&after, &diff(&before, &after), &applied, SyncMode::Full);
    assert_eq!(full.chains_deleted(), 5, "{}", full.render());
    let no_state = planner.plan(
        &after,
        &diff(&before, &after),
        &Applied::new(),
        SyncMode::Partial,
    );
    assert_eq!(no_state.mode, SyncMode::Full);
}

#[test]
fn commit_tracks_rule_counts() {
    let planner = planner();
    let table = cases::scale_table(10, 3);
    let plan = planner.plan_full(&table);
    let mut applied = Applied::new();
    applied.commit(&plan);
    let nat = plan.restore(Family::V4, TableName::Nat).expect("nat");
    assert_eq!(
        applied.rule_count(Family::V4, TableName::Nat),
        nat.table.rule_count()
    );
}

/// The default (`InlineBalancing::Nft`) plans inline balancing for iptables-nft and a chain per
/// port for iptables-legacy, once the dataplane tells the planner the variant; explicit settings
/// stay as they are.
#[test]
fn the_default_layout_follows_the_variant() {
    use backend_iptables::apply::Variant;
    let table = cases::scale_table(100, 3);
    let chains = |planner: &Planner| {
        planner
            .plan_full(&table)
            .restore(Family::V4, TableName::Nat)
            .expect("nat")
            .table
            .chains
            .iter()
            .filter(|c| c.name.as_str().contains("-SVC-"))
            .count()
    };
    let default = planner();
    assert_eq!(chains(&default), 0, "not told the variant: inline");
    assert_eq!(chains(&default.for_variant(Variant::Nft)), 0);
    assert_eq!(chains(&default.for_variant(Variant::Legacy)), 100);
    let always = Planner::new(IptablesConfig {
        tree: TreeConfig {
            inline_balancing: InlineBalancing::Always,
            ..TreeConfig::default()
        },
        ..cases::config()
    })
    .expect("valid config");
    assert_eq!(chains(&always.for_variant(Variant::Legacy)), 0);
    assert_eq!(chains(&per_port_planner().for_variant(Variant::Nft)), 100);
}

/// A port that gains session affinity needs its chains back (SVC- and SEP-), and the leaf that
/// held its rules jumps to them; losing it again deletes them, the rules back in the leaf. Each
/// partial plan over the previous rules behaves like a fresh full plan.
#[test]
fn a_port_moves_between_its_leaf_and_its_own_chains() {
    let planner = planner();
    let plain = cases::scale_table(100, 3);
    let mut port = ServicePort::clone(plain.get(&name(42)).expect("exists"));
    port.session_affinity = proxy_core::table::SessionAffinity::ClientIp {
        timeout: std::time::Duration::from_secs(60),
    };
    let sticky = plain.edit().insert(port).build().expect("valid");
    let svc = planner.names().service_cluster(&name(42), Protocol::Tcp);

    let (to_chains, text) = sync_twice(&planner, &plain, &sticky);
    let nat = to_chains.restore(Family::V4, TableName::Nat).expect("nat");
    let written: Vec<&str> = nat.table.chains.iter().map(|c| c.name.as_str()).collect();
    assert!(written.contains(&svc.as_str()), "{written:?}");
    assert!(
        written.iter().any(|c| c.starts_with("SVCP-DT-")),
        "{written:?}"
    );
    assert!(nat.table.deleted.is_empty(), "{}", to_chains.render());
    assert_same_behaviour(&planner, &text, &sticky, &[41, 42, 43]);

    let (to_leaf, text) = sync_twice(&planner, &sticky, &plain);
    let nat = to_leaf.restore(Family::V4, TableName::Nat).expect("nat");
    assert!(nat.table.deleted.contains(&svc), "{}", to_leaf.render());
    // SVC- and one SEP- chain per endpoint.
    assert_eq!(nat.table.deleted.len(), 4, "{}", to_leaf.render());
    assert_same_behaviour(&planner, &text, &plain, &[41, 42, 43]);
}
