//! The fixed cost of a sync, for real (issue #11): in a fresh namespace this test creates, a full
//! sync of one IPv4 service runs one `iptables-save` and one `iptables-restore` for IPv4, one
//! save for IPv6 (to find leftovers of ours) and no single-rule `iptables` call; the hooks it
//! inserts in that restore carry real traffic, go first in the built-in chains, and leave
//! someone else's rules there alone. Cleanup takes the namespace back to what it was. Both
//! variants. Needs root.

mod cases;
mod counting;
mod saved;

use std::process::Command;
use std::time::Duration;

use backend_iptables::apply::Variant;
use backend_iptables::plan::Planner;
use backend_iptables::rules::Family;
use backend_iptables::IptablesDataplane;
use counting::{Counting, Ran};
use proxy_core::{diff, Dataplane, Protocol, ServiceTable, SyncMode, SyncRequest};
use saved::save_all;
use testkit::net::AnswerServer;
use testkit::netns::Netns;

/// The rules of one built-in chain, as `iptables-save` lists them (`-A CHAIN` stripped).
fn chain_rules(variant: Variant, family: Family, table: &str, chain: &str) -> Vec<String> {
    let o = Command::new(variant.save_binary(family))
        .args(["-t", table])
        .output()
        .expect("save");
    let prefix = format!("-A {chain} ");
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
        .collect()
}

fn table() -> ServiceTable {
    ServiceTable::builder()
        .node("node-a")
        .insert(
            cases::port("web", Protocol::Tcp, "198.19.0.10", 80)
                .with_endpoint(cases::local("198.18.1.10", 8080)),
        )
        .build()
        .expect("valid table")
}

fn sync(rt: &tokio::runtime::Runtime, dp: &mut IptablesDataplane, table: &ServiceTable) {
    let changes = diff(&ServiceTable::empty(), table);
    let report = rt
        .block_on(dp.sync(SyncRequest {
            desired: table,
            changes: &changes,
            mode: SyncMode::Full,
        }))
        .expect("sync");
    assert!(report.is_complete(), "{report}");
}

const FOREIGN: [(&str, &str, &str); 3] = [
    ("nat", "PREROUTING", "-p udp -m udp --dport 9 -j RETURN"),
    ("filter", "FORWARD", "-p tcp -m tcp --dport 9 -j ACCEPT"),
    ("filter", "INPUT", "-p tcp -m tcp --dport 9 -j ACCEPT"),
];

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn a_fresh_namespace_gets_working_hooks_in_one_restore_and_keeps_foreign_rules() {
    for variant in [Variant::Legacy, Variant::Nft] {
        let ns = Netns::new(&format!("fixed-{variant}"));
        ns.run(move || {
            cases::setup_node_v4(&["198.18.1.10/32"]);
            for family in Family::ALL {
                for (table, chain, rule) in FOREIGN {
                    let mut args = vec!["-t", table, "-A", chain];
                    args.extend(rule.split(' '));
                    let ok = Command::new(variant.binary(family))
                        .args(&args)
                        .status()
                        .expect("run");
                    assert!(ok.success(), "{variant} {family}: {args:?}");
                }
            }
            let before = save_all(variant);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let planner = Planner::new(cases::config()).expect("valid config");
            let counting = Counting::new(variant, Vec::new());
            let mut dp = IptablesDataplane::with_runners(
                planner.clone(),
                counting.clone(),
                counting.clone(),
                counting.clone(),
            );

            sync(&rt, &mut dp, &table());
            assert_eq!(
                counting.take(),
                [
                    Ran::Save(Family::V4),
                    Ran::Save(Family::V6),
                    Ran::Restore(Family::V4)
                ],
                "{variant}: the first full sync"
            );
            sync(&rt, &mut dp, &table());
            assert_eq!(
                counting.take(),
                [Ran::Save(Family::V4), Ran::Restore(Family::V4)],
                "{variant}: the periodic full sync"
            );

            // The hooks: first in each built-in chain, in planned order, the foreign rule after.
            for (table, chain, foreign) in FOREIGN {
                let mut want: Vec<String> = planner
                    .hooks()
                    .iter()
                    .filter(|h| h.table.as_str() == table && h.chain.as_str() == chain)
                    .map(|h| h.rule.to_string())
                    .collect();
                want.push(foreign.to_owned());
                assert_eq!(
                    chain_rules(variant, Family::V4, table, chain),
                    want,
                    "{variant}"
                );
                assert_eq!(
                    chain_rules(variant, Family::V6, table, chain),
                    [foreign],
                    "{variant}: IPv6 untouched"
                );
            }
            // ...and they carry traffic.
            let backend = AnswerServer::named("198.18.1.10:8080".parse().expect("addr"), "web");
            let answer = testkit::net::ask(
                "198.19.0.10:80".parse().expect("addr"),
                Duration::from_secs(2),
            )
            .unwrap_or_else(|e| panic!("{variant}: cluster IP: {e}"));
            assert_eq!(answer, "web");
            assert_eq!(backend.stop(), 1);

            // An unchanged ruleset: the drift check reads one save, writes nothing.
            assert!(!rt.block_on(dp.check_drift()).expect("check"));
            assert_eq!(counting.take(), [Ran::Save(Family::V4)], "{variant}");

            let removed = rt.block_on(dp.cleanup()).expect("cleanup");
            assert!(removed.objects_removed > 10, "{removed:?}");
            assert_eq!(
                counting.take(),
                [
                    Ran::Save(Family::V4),
                    Ran::Save(Family::V6),
                    Ran::Restore(Family::V4)
                ],
                "{variant}: cleanup"
            );
            assert_eq!(
                save_all(variant),
                before,
                "{variant}: namespace not restored"
            );
        });
    }
}

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn an_earlier_runs_ipv6_chains_go_when_the_table_is_ipv4_only() {
    for variant in [Variant::Legacy, Variant::Nft] {
        let ns = Netns::new(&format!("fixed6-{variant}"));
        ns.run(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let planner = Planner::new(cases::config()).expect("valid config");
            let (nat, chain, rule) = FOREIGN[0];
            let mut args = vec!["-t", nat, "-A", chain];
            args.extend(rule.split(' '));
            assert!(Command::new(variant.binary(Family::V6))
                .args(&args)
                .status()
                .expect("run")
                .success());
            let dual = cases::cases()
                .into_iter()
                .find(|c| c.name == "dual_stack")
                .expect("case")
                .table;
            let earlier = Counting::new(variant, Vec::new());
            let mut dp = IptablesDataplane::with_runners(
                planner.clone(),
                earlier.clone(),
                earlier.clone(),
                earlier.clone(),
            );
            sync(&rt, &mut dp, &dual);
            assert!(chain_rules(variant, Family::V6, "nat", "PREROUTING").len() == 2);
            drop(dp);

            let counting = Counting::new(variant, Vec::new());
            let mut dp = IptablesDataplane::with_runners(
                planner.clone(),
                counting.clone(),
                counting.clone(),
                counting.clone(),
            );
            sync(&rt, &mut dp, &table());
            assert_eq!(
                counting.take(),
                [
                    Ran::Save(Family::V4),
                    Ran::Save(Family::V6),
                    Ran::Restore(Family::V4),
                    Ran::Restore(Family::V6)
                ],
                "{variant}"
            );
            let v6 = Command::new(variant.save_binary(Family::V6))
                .output()
                .expect("save");
            let v6 = String::from_utf8_lossy(&v6.stdout);
            assert!(!v6.contains("SVCP-"), "{variant}:\n{v6}");
            assert_eq!(
                chain_rules(variant, Family::V6, "nat", "PREROUTING"),
                [rule],
                "{variant}"
            );
            sync(&rt, &mut dp, &table());
            assert_eq!(
                counting.take(),
                [Ran::Save(Family::V4), Ran::Restore(Family::V4)],
                "{variant}: IPv6 left alone from now on"
            );
        });
    }
}
