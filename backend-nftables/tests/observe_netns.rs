//! Root tests: reading our table back over netlink. For each golden case, after the full plan
//! is programmed, [`observe`] reads back exactly the desired table, and the full plan against
//! it is empty (a restart with the rules in place programs nothing). Drift made with `nft`
//! (an element deleted, a rule added to one of our chains, a chain flushed) is observed and
//! the full plan repairs it.
//!
//! Run with `cargo test -p backend-nftables --test observe_netns -- --include-ignored` as root.

#[path = "nft_cases.rs"]
mod nft_cases;

use backend_nftables::apply::apply;
use backend_nftables::model::Rule;
use backend_nftables::names::ChainName;
use backend_nftables::netlink::NftSocket;
use backend_nftables::observe::observe;
use backend_nftables::plan::{plan, render_changes};
use backend_nftables::render::render_table;
use testkit::netns::in_new_netns;
use testkit::process::run;

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn every_golden_reads_back_as_desired_and_replans_to_nothing() {
    let mut failures = Vec::new();
    for (name, path) in nft_cases::cases() {
        let desired = nft_cases::plan_case(&path);
        let result = in_new_netns({
            let desired = desired.clone();
            move || {
                let table = desired.table.name.clone();
                let mut socket = NftSocket::open().expect("socket");
                apply(&mut socket, &table, &plan(&desired, None, None))
                    .map_err(|e| e.to_string())?;
                let observed = observe(&mut socket, &table, &desired.table)
                    .map_err(|e| e.to_string())?
                    .ok_or("no table observed")?;
                Ok::<_, String>(observed)
            }
        });
        let observed = match result {
            Ok(o) => o,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        if observed.table != desired.table || observed.needs_rebuild() {
            failures.push(format!(
                "{name}: observed differs from desired (redeclare {:?}, rehook {:?}, foreign {:?})\n--- desired\n{}\n--- observed\n{}",
                observed.redeclare,
                observed.rehook,
                observed.foreign,
                render_table(&desired.table),
                render_table(&observed.table)
            ));
            continue;
        }
        let again = plan(&desired, Some(&observed.table), None);
        if !again.is_empty() {
            failures.push(format!(
                "{name}: the full plan against the observed table is not empty:\n{}",
                render_changes(&desired.table.name, &again)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn drift_made_with_nft_is_observed_and_the_full_plan_repairs_it() {
    let path = nft_cases::dir("tables").join("local_policies.yaml");
    let desired = nft_cases::plan_case(&path);
    let (drifted, repaired, listing, golden) = in_new_netns(move || {
        let table = desired.table.name.clone();
        let mut socket = NftSocket::open().expect("socket");
        apply(&mut socket, &table, &plan(&desired, None, None)).expect("programmed");
        let golden = run("nft", &["list", "table", "inet", &table]);
        // Someone deletes one of our elements, adds a rule to one of our chains and flushes
        // another.
        run(
            "nft",
            &[
                "delete",
                "element",
                "inet",
                &table,
                "endpoints-v4",
                "{ 198.19.0.30 . tcp . 80 . 0 }",
            ],
        );
        run(
            "nft",
            &["add", "rule", "inet", &table, "services", "counter"],
        );
        run("nft", &["flush", "chain", "inet", &table, "masquerading"]);
        let observed = observe(&mut socket, &table, &desired.table)
            .expect("observed")
            .expect("table there");
        let drifted = (
            observed.table.chains[&ChainName::Services]
                .rules
                .contains(&Rule::Foreign),
            observed.table.chains[&ChainName::Masquerading].rules.len(),
            observed.table.element_count(),
        );
        let changes = plan(&desired, Some(&observed.table), None);
        apply(&mut socket, &table, &changes).expect("repaired");
        let again = observe(&mut socket, &table, &desired.table)
            .expect("observed")
            .expect("table there");
        let repaired = plan(&desired, Some(&again.table), None);
        (
            (drifted, render_changes(&table, &changes)),
            repaired,
            run("nft", &["list", "table", "inet", &table]),
            golden,
        )
    });
    let ((foreign_seen, masquerading_rules, _), changes) = drifted;
    assert!(foreign_seen, "the added rule reads as foreign");
    assert_eq!(masquerading_rules, 0, "the flushed chain reads empty");
    assert!(
        changes.contains("add element inet svcproxy endpoints-v4 { 198.19.0.30 . tcp . 80 . 0 : 198.18.1.30 . 8080 }"),
        "the repair adds the deleted element back:\n{changes}"
    );
    assert!(
        changes.contains("flush chain inet svcproxy services"),
        "the repair rewrites services:\n{changes}"
    );
    assert!(
        repaired.is_empty(),
        "after the repair, nothing to do: {repaired:?}"
    );
    assert_eq!(
        listing, golden,
        "the repaired table lists as before the drift"
    );
}

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn purge_affinity_deletes_the_elements_leading_to_the_endpoint_only() {
    use backend_nftables::model::Family;
    use backend_nftables::plan::Change;
    let desired = nft_cases::plan_case(&nft_cases::dir("tables").join("affinity.yaml"));
    let (listed, sent) = in_new_netns(move || {
        let table = desired.table.name.clone();
        let mut socket = NftSocket::open().expect("socket");
        apply(&mut socket, &table, &plan(&desired, None, None)).expect("programmed");
        // What the datapath would have written: two clients on two endpoints.
        run(
            "nft",
            &[
                "add",
                "element",
                "inet",
                &table,
                "affinity-v4",
                "{ 198.18.250.1 . 198.19.0.50 . tcp . 80 : 198.18.2.50 . 8080, \
                 198.18.250.2 . 198.19.0.50 . tcp . 80 : 198.18.3.50 . 8080 }",
            ],
        );
        let gone = "198.18.2.50:8080".parse().expect("endpoint");
        let sent = apply(
            &mut socket,
            &table,
            &[Change::PurgeAffinity(Family::V4, gone)],
        )
        .expect("purged");
        (
            run("nft", &["list", "map", "inet", &table, "affinity-v4"]),
            sent,
        )
    });
    assert_eq!(sent, 1, "one delete message");
    assert!(!listed.contains("198.18.2.50 . 8080"), "purged:\n{listed}");
    assert!(
        listed.contains("198.18.250.2 . 198.19.0.50 . tcp . 80"),
        "the other client stays:\n{listed}"
    );
}
