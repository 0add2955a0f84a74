//! Real `iptables-restore` (legacy and nft) in network namespaces this test creates: every golden
//! case loads, and `iptables-save` reads back exactly the rules we planned; a partial sync over a
//! full one gives what a full sync of the new table gives; a failed restore keeps the old rules.
//! Needs root; never touches the root namespace (every command runs under `ip netns exec`).

mod cases;

use std::collections::BTreeMap;

use backend_iptables::apply::{apply_plan, failing_line, CommandRunner, RestoreRunner, Variant};
use backend_iptables::names::Names;
use backend_iptables::plan::{Applied, Plan, Planner};
use backend_iptables::rules::{parse_save, Family, Rule, TableName};
use proxy_core::table::Endpoint;
use proxy_core::{diff, ServicePort, ServicePortName, SyncMode};
use testkit::netns::Netns;

/// `iptables-save -t TABLE` (of `variant` and `family`) inside `ns`.
fn save_text(ns: &Netns, variant: Variant, family: Family, table: TableName) -> String {
    ns.exec_ok(variant.save_binary(family), &["-t", table.as_str()])
}

/// Our chains in one table of `ns` as `iptables-save` shows them.
fn save(
    ns: &Netns,
    variant: Variant,
    family: Family,
    table: TableName,
) -> BTreeMap<String, Vec<Rule>> {
    let text = save_text(ns, variant, family, table);
    let names = Names::default();
    let tables = parse_save(&text, &|n| names.is_owned(n))
        .unwrap_or_else(|e| panic!("cannot parse save output: {e}\n{text}"));
    tables
        .into_iter()
        .flat_map(|t| t.chains)
        .filter(|c| !c.name.is_builtin())
        .map(|c| (c.name.to_string(), c.rules))
        .collect()
}

fn planned(plan: &Plan, family: Family, table: TableName) -> BTreeMap<String, Vec<Rule>> {
    plan.restore(family, table)
        .map(|r| {
            r.table
                .chains
                .iter()
                .map(|c| (c.name.to_string(), c.rules.clone()))
                .collect()
        })
        .unwrap_or_default()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

const VARIANTS: [Variant; 2] = [Variant::Legacy, Variant::Nft];

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn every_golden_case_loads_and_reads_back_exactly() {
    let rt = runtime();
    for variant in VARIANTS {
        for case in cases::cases() {
            let ns = Netns::new("ipt");
            let runner = CommandRunner::new(variant).with_prefix(ns.exec_prefix());
            let planner = Planner::new(case.config.clone()).expect("valid config");
            let plan = planner.plan_full(&case.table);
            rt.block_on(apply_plan(&runner, &plan))
                .unwrap_or_else(|e| panic!("{} ({variant}): {e}", case.name));
            for family in Family::ALL {
                for table in [TableName::Filter, TableName::Nat] {
                    assert_eq!(
                        save(&ns, variant, family, table),
                        planned(&plan, family, table),
                        "{} ({variant}, {family} {table})",
                        case.name
                    );
                }
            }
        }
    }
}

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn partial_sync_over_full_equals_a_fresh_full_sync() {
    let rt = runtime();
    // Both tree layouts: with a chain per port the removed port's chain is deleted; with inline
    // balancing (the default) its leaf is rewritten.
    let per_port = backend_iptables::config::IptablesConfig {
        tree: backend_iptables::config::TreeConfig {
            inline_balancing: backend_iptables::config::InlineBalancing::Never,
            ..Default::default()
        },
        ..cases::config()
    };
    for config in [per_port, cases::config()] {
        partial_over_full(&rt, &Planner::new(config).expect("valid config"));
    }
}

fn partial_over_full(rt: &tokio::runtime::Runtime, planner: &Planner) {
    let inline =
        planner.config().tree.inline_balancing != backend_iptables::config::InlineBalancing::Never;
    let before = cases::scale_table(300, 3);
    let name = ServicePortName::new("scale", "s9", "p");
    let mut port = ServicePort::clone(before.get(&name).expect("exists"));
    port.endpoints = vec![Endpoint::new("198.18.222.2".parse().expect("ip"), 9090)];
    let mut b = before.edit().insert(port);
    b.remove(&ServicePortName::new("scale", "s10", "p"));
    let after = b.build().expect("valid");
    for variant in VARIANTS {
        let ns = Netns::new("ipt");
        let runner = CommandRunner::new(variant).with_prefix(ns.exec_prefix());
        let full = planner.plan_full(&before);
        rt.block_on(apply_plan(&runner, &full)).expect("full");
        let mut applied = Applied::new();
        applied.commit(&full);
        let partial = planner.plan(&after, &diff(&before, &after), &applied, SyncMode::Partial);
        assert!(inline || partial.chains_deleted() >= 1);
        rt.block_on(apply_plan(&runner, &partial)).expect("partial");
        let fresh = planner.plan_full(&after);
        for table in [TableName::Filter, TableName::Nat] {
            assert_eq!(
                save(&ns, variant, Family::V4, table),
                planned(&fresh, Family::V4, table),
                "{variant} {table}"
            );
        }
    }
}

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn a_failed_restore_keeps_the_old_rules_and_names_the_line() {
    let rt = runtime();
    let planner = Planner::new(cases::config()).expect("valid config");
    let plan = planner.plan_full(&cases::scale_table(3, 2));
    for variant in VARIANTS {
        let ns = Netns::new("ipt");
        let runner = CommandRunner::new(variant).with_prefix(ns.exec_prefix());
        rt.block_on(apply_plan(&runner, &plan)).expect("full");
        let before = save(&ns, variant, Family::V4, TableName::Nat);
        let bad =
            "*nat\n:SVCP-SERVICES - [0:0]\n-A SVCP-SERVICES -j SVCP-SVC-NOSUCHCHAIN23456\nCOMMIT\n";
        let failure = rt
            .block_on(runner.restore(Family::V4, bad))
            .expect_err("dangling jump must fail");
        let line = failing_line(&failure.stderr);
        assert!(matches!(line, Some(3) | Some(4)), "{variant}: {failure}");
        assert_eq!(
            save(&ns, variant, Family::V4, TableName::Nat),
            before,
            "{variant}"
        );
    }
}

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn observe_detects_drift_and_a_full_sync_repairs_it() {
    use backend_iptables::observe::observe;
    let rt = runtime();
    let planner = Planner::new(cases::config()).expect("valid config");
    let table = cases::scale_table(20, 2);
    for variant in VARIANTS {
        let ns = Netns::new("ipt");
        let runner = CommandRunner::new(variant).with_prefix(ns.exec_prefix());
        let full = planner.plan_full(&table);
        rt.block_on(apply_plan(&runner, &full)).expect("full");
        let mut applied = Applied::new();
        applied.commit(&full);
        let observed = rt
            .block_on(observe(&runner, planner.names()))
            .expect("observe");
        assert!(
            observed.drift(&applied).is_empty(),
            "{variant}: {:?}",
            observed.drift(&applied)
        );

        // Someone flushes our dispatch chain and leaves a stale chain of ours and a foreign one.
        let vandal = "*nat\n:SVCP-SERVICES - [0:0]\n:SVCP-SVC-AAAAAAAAAAAAAAAA - [0:0]\n\
                      :OTHER-CHAIN - [0:0]\n-A OTHER-CHAIN -p tcp -m multiport --dports 1,2 -j RETURN\nCOMMIT\n";
        rt.block_on(runner.restore(Family::V4, vandal))
            .expect("vandal restore");
        let observed = rt
            .block_on(observe(&runner, planner.names()))
            .expect("observe");
        let drift = observed.drift(&applied);
        assert_eq!(drift.len(), 2, "{variant}: {drift:?}");

        // A full plan against what the kernel has repairs the chain and deletes the stale one.
        let repair = planner.plan(
            &table,
            &Default::default(),
            &observed.to_applied(),
            SyncMode::Full,
        );
        rt.block_on(apply_plan(&runner, &repair)).expect("repair");
        let after = rt
            .block_on(observe(&runner, planner.names()))
            .expect("observe");
        assert!(
            after.drift(&applied).is_empty(),
            "{variant}: {:?}",
            after.drift(&applied)
        );
        let save = save_text(&ns, variant, Family::V4, TableName::Nat);
        assert!(
            save.contains("OTHER-CHAIN"),
            "foreign chain must be left alone"
        );
        assert!(!save.contains("SVCP-SVC-AAAAAAAAAAAAAAAA"), "{save}");
    }
}
