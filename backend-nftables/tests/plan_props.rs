//! Properties of the planner over arbitrary valid tables (addresses in 198.18.0.0/15 and
//! 2001:db8::/32): following a change port by port gives the table planned whole; a full plan
//! applied to what the kernel holds gives the desired table, and planned again is empty; a
//! partial plan equals the full diff; every verdict leads to a declared chain.

use std::collections::BTreeSet;
use std::net::IpAddr;

use backend_nftables::config::NftablesConfig;
use backend_nftables::model::{Table, Value};
use backend_nftables::plan::{apply_changes, desired, plan, Change};
use backend_nftables::render::render_table;
use proptest::prelude::*;
use proxy_core::diff::diff;
use proxy_core::testing::strategy::arb_table;

fn config() -> NftablesConfig {
    NftablesConfig {
        cluster_cidrs: vec![
            "198.18.0.0/17".parse().expect("cidr"),
            "2001:db8:18::/48".parse().expect("cidr"),
        ],
        ..NftablesConfig::default()
    }
}

fn node_ips() -> BTreeSet<IpAddr> {
    ["198.18.200.1", "2001:db8:200::1"]
        .iter()
        .map(|s| s.parse().expect("address"))
        .collect()
}

/// Every verdict of every map and every rule target is a declared chain.
fn dangling(table: &Table) -> Vec<String> {
    let mut out = Vec::new();
    for set in table.sets.values() {
        for (key, value) in &set.elements {
            if let Value::Verdict(v) = value {
                if let Some(c) = v.chain() {
                    if !table.chains.contains_key(&c) {
                        out.push(format!("{} {key}: {v}", set.name));
                    }
                }
            }
        }
    }
    for chain in table.chains.values() {
        for rule in &chain.rules {
            if let Some(c) = rule.target() {
                if !table.chains.contains_key(&c) {
                    out.push(format!("{}: {rule}", chain.name));
                }
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn plans_converge_and_follow_changes(a in arb_table(), b in arb_table()) {
        let (config, ips) = (config(), node_ips());
        let want_a = desired(&a, &config, &ips);
        let want_b = desired(&b, &config, &ips);
        prop_assert!(dangling(&want_b.table).is_empty(), "{:?}", dangling(&want_b.table));
        prop_assert_eq!(render_table(&want_b.table), render_table(&want_b.table.clone()));

        // Port by port equals whole.
        let changes = diff(&a, &b);
        let mut followed = want_a.clone();
        followed.update(&changes);
        prop_assert_eq!(&followed, &want_b);

        // The kernel holds `a`; a full plan to `b` gives `b`, and then nothing is left to do.
        let mut kernel = Table::new(config.table.clone());
        apply_changes(&mut kernel, &plan(&want_a, None, None));
        prop_assert_eq!(&kernel, &want_a.table);
        let full = plan(&want_b, Some(&kernel), None);
        let partial: Vec<Change> = plan(&followed, Some(&kernel), Some(&changes))
            .into_iter()
            .filter(|c| !matches!(c, Change::PurgeAffinity(..)))
            .collect();
        let only_partial: Vec<&Change> = partial.iter().filter(|c| !full.contains(c)).collect();
        let only_full: Vec<&Change> = full.iter().filter(|c| !partial.contains(c)).collect();
        prop_assert!(
            partial == full,
            "partial plan differs from the full diff: only partial {:?}, only full {:?}",
            only_partial,
            only_full
        );
        apply_changes(&mut kernel, &full);
        prop_assert_eq!(&kernel, &want_b.table);
        prop_assert!(plan(&want_b, Some(&kernel), None).is_empty());
    }
}
