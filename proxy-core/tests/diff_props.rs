//! Properties of the table diff: `apply_changes` inverts `diff`, equal tables give empty change
//! sets however they were built, `share_unchanged` re-shares equal entries, and every part of a
//! `ChangeSet` matches a naive set computation. Tables come from `proxy_core::testing::strategy`
//! (arbitrary pairs, and pairs where the second is an edit of the first through
//! `ServiceTable::edit`); the cost-follows-the-change check uses `proxy_core::testing::generate`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use proxy_core::diff::{apply_changes, diff, share_unchanged, ChangeSet, EndpointChanges};
use proxy_core::table::{Endpoint, EndpointKey, ServicePort, ServicePortName, ServiceTable};
use proxy_core::testing::generate::{
    deep_copy, large_table, with_endpoint_changed, with_service_added, with_service_removed,
};
use proxy_core::testing::strategy::{arb_edited_pair, arb_table};

/// What a table holds, for failure messages (`ServiceTable`'s `Debug` only prints counts).
fn dump(table: &ServiceTable) -> String {
    format!(
        "node {:?}, zone {:?}, ports {:#?}",
        table.node(),
        table.zone(),
        table.ports()
    )
}

/// Endpoint changes computed with sets, to compare with the diff's merge walk.
fn naive_endpoint_changes(previous: &ServicePort, current: &ServicePort) -> EndpointChanges {
    let by_key = |port: &ServicePort| -> BTreeMap<EndpointKey, Endpoint> {
        port.endpoints
            .iter()
            .map(|e| (e.key(), e.clone()))
            .collect()
    };
    let (old, new) = (by_key(previous), by_key(current));
    EndpointChanges {
        added: new
            .keys()
            .filter(|k| !old.contains_key(k))
            .copied()
            .collect(),
        removed: old
            .keys()
            .filter(|k| !new.contains_key(k))
            .copied()
            .collect(),
        changed: new
            .iter()
            .filter(|(k, ep)| old.get(k).is_some_and(|old_ep| old_ep != *ep))
            .map(|(k, _)| *k)
            .collect(),
    }
}

/// Whether anything but the endpoints differs: compare the two with their endpoints removed.
fn naive_service_changed(previous: &ServicePort, current: &ServicePort) -> bool {
    let mut previous = previous.clone();
    let mut current = current.clone();
    previous.endpoints.clear();
    current.endpoints.clear();
    previous != current
}

/// Checks every part of `changes` against naive set computations over `a` and `b`.
fn check_against_naive(
    a: &ServiceTable,
    b: &ServiceTable,
    changes: &ChangeSet,
) -> Result<(), TestCaseError> {
    let old: BTreeSet<&ServicePortName> = a.ports().keys().collect();
    let new: BTreeSet<&ServicePortName> = b.ports().keys().collect();
    let only_old: Vec<&ServicePortName> = old.difference(&new).copied().collect();
    let only_new: Vec<&ServicePortName> = new.difference(&old).copied().collect();
    let differing: Vec<&ServicePortName> = old
        .intersection(&new)
        .copied()
        .filter(|name| a.get(name) != b.get(name))
        .collect();

    let removed: Vec<&ServicePortName> = changes.removed.iter().map(|p| &p.name).collect();
    let added: Vec<&ServicePortName> = changes.added.iter().map(|p| &p.name).collect();
    let changed: Vec<&ServicePortName> = changes.changed.iter().map(|c| c.name()).collect();
    prop_assert_eq!(&removed, &only_old, "removed");
    prop_assert_eq!(&added, &only_new, "added");
    prop_assert_eq!(&changed, &differing, "changed");

    // touched() = symmetric difference + changed, each name once, in name order.
    let mut want_touched: Vec<&ServicePortName> = only_old
        .iter()
        .chain(&only_new)
        .chain(&differing)
        .copied()
        .collect();
    want_touched.sort();
    let touched: Vec<&ServicePortName> = changes.touched().collect();
    prop_assert_eq!(&touched, &want_touched, "touched");
    prop_assert_eq!(changes.service_ports_changed(), want_touched.len());

    for port in &changes.removed {
        prop_assert_eq!(
            Some(port),
            a.get(&port.name),
            "removed value is the old one"
        );
    }
    for port in &changes.added {
        prop_assert_eq!(Some(port), b.get(&port.name), "added value is the new one");
    }
    let mut endpoint_count: usize = changes
        .added
        .iter()
        .chain(&changes.removed)
        .map(|p| p.endpoints.len())
        .sum();
    for change in &changes.changed {
        let name = change.name();
        prop_assert_eq!(Some(&change.previous), a.get(name), "{} previous", name);
        prop_assert_eq!(Some(&change.current), b.get(name), "{} current", name);
        let want = naive_endpoint_changes(&change.previous, &change.current);
        prop_assert_eq!(&change.endpoints, &want, "{} endpoints", name);
        prop_assert_eq!(
            change.service_changed,
            naive_service_changed(&change.previous, &change.current),
            "{} service_changed",
            name
        );
        // A change is never empty: the service or some endpoint differs.
        prop_assert!(
            change.service_changed || !change.endpoints.is_empty(),
            "{}",
            name
        );
        endpoint_count += want.added.len() + want.removed.len() + want.changed.len();
    }
    prop_assert_eq!(changes.endpoints_changed(), endpoint_count);

    let node_changed = a.node() != b.node();
    prop_assert_eq!(changes.node.is_some(), node_changed, "node");
    prop_assert_eq!(changes.zone.is_some(), a.zone() != b.zone(), "zone");
    if let Some(zone) = &changes.zone {
        prop_assert_eq!(zone.previous.as_deref(), a.zone());
        prop_assert_eq!(zone.current.as_deref(), b.zone());
    }
    if let Some(node) = &changes.node {
        prop_assert_eq!(node.previous.as_deref(), a.node());
        prop_assert_eq!(node.current.as_deref(), b.node());
    }
    prop_assert_eq!(changes.is_empty(), a == b, "is_empty iff equal");
    Ok(())
}

/// `apply_changes(a, diff(a, b)) == b`, and the result shares every port `a` and `b` agree on
/// with `a`.
fn check_apply_inverts_diff(a: &ServiceTable, b: &ServiceTable) -> Result<(), TestCaseError> {
    let changes = diff(a, b);
    let applied = match apply_changes(a, &changes) {
        Ok(table) => table,
        Err(errors) => return Err(TestCaseError::fail(format!("apply_changes: {errors}"))),
    };
    prop_assert!(
        applied == *b,
        "applied {}\nwant {}",
        dump(&applied),
        dump(b)
    );
    prop_assert_eq!(applied.endpoint_count(), b.endpoint_count());
    for (name, port) in applied.ports() {
        if let Some(old) = a.get(name).filter(|old| *old == port) {
            prop_assert!(Arc::ptr_eq(old, port), "{} copied, not shared", name);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(Config::with_cases(256))]

    #[test]
    fn apply_inverts_diff_for_arbitrary_pairs(a in arb_table(), b in arb_table()) {
        check_apply_inverts_diff(&a, &b)?;
    }

    #[test]
    fn apply_inverts_diff_for_edited_pairs((a, b) in arb_edited_pair()) {
        check_apply_inverts_diff(&a, &b)?;
    }

    #[test]
    fn diff_of_a_table_with_itself_is_empty(table in arb_table()) {
        prop_assert_eq!(diff(&table, &table), ChangeSet::default());
        let clone = table.clone();
        prop_assert_eq!(diff(&table, &clone), ChangeSet::default());
        // A new snapshot that shares every port but not the table itself.
        let rebuilt = table.edit().build().map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(!rebuilt.ptr_eq(&table));
        prop_assert_eq!(diff(&table, &rebuilt), ChangeSet::default());
    }

    #[test]
    fn diff_of_a_deep_copy_is_empty(table in arb_table()) {
        let copy = deep_copy(&table);
        for (old, new) in table.iter().zip(copy.iter()) {
            prop_assert!(!Arc::ptr_eq(old, new), "{} still shared", old.name);
        }
        prop_assert_eq!(diff(&table, &copy), ChangeSet::default());
        prop_assert_eq!(diff(&copy, &table), ChangeSet::default());
    }

    #[test]
    fn diff_matches_naive_sets_for_arbitrary_pairs(a in arb_table(), b in arb_table()) {
        check_against_naive(&a, &b, &diff(&a, &b))?;
    }

    #[test]
    fn diff_matches_naive_sets_for_edited_pairs((a, b) in arb_edited_pair()) {
        let changes = diff(&a, &b);
        check_against_naive(&a, &b, &changes)?;
        // Ports shared by pointer are never reported.
        for name in changes.touched() {
            let shared = matches!((a.get(name), b.get(name)), (Some(x), Some(y)) if Arc::ptr_eq(x, y));
            prop_assert!(!shared, "{} is shared but reported", name);
        }
    }

    /// `share_unchanged(a, b')`, with `b'` parsed afresh (a deep copy of `b`), equals `b`, takes
    /// `a`'s `Arc` for every port equal to `a`'s, and so diffs like `b` with every unchanged port
    /// skipped by pointer.
    #[test]
    fn share_unchanged_re_shares_equal_ports((a, b) in arb_edited_pair(), c in arb_table()) {
        for next in [b, c] {
            let fresh = deep_copy(&next);
            let shared = share_unchanged(&a, &fresh);
            prop_assert!(shared == next, "shared {}\nwant {}", dump(&shared), dump(&next));
            prop_assert_eq!(shared.node(), next.node());
            prop_assert_eq!(shared.zone(), next.zone());
            prop_assert_eq!(shared.endpoint_count(), next.endpoint_count());
            for (name, port) in shared.ports() {
                match a.get(name) {
                    Some(old) if old == port => {
                        prop_assert!(Arc::ptr_eq(old, port), "{} equal but not shared", name);
                    }
                    _ => {
                        let original = fresh.get(name).map(Arc::as_ptr);
                        prop_assert_eq!(Some(Arc::as_ptr(port)), original, "{} not from next", name);
                    }
                }
            }
            let changes = diff(&a, &shared);
            prop_assert_eq!(&changes, &diff(&a, &fresh));
            check_against_naive(&a, &shared, &changes)?;
            // Every port the diff did not report is shared with `a`: the diff skipped it by
            // pointer, without a deep compare.
            let touched: BTreeSet<&ServicePortName> = changes.touched().collect();
            for (name, port) in shared.ports() {
                if !touched.contains(name) {
                    let old = a.get(name);
                    prop_assert!(old.is_some_and(|old| Arc::ptr_eq(old, port)), "{}", name);
                }
            }
        }
        let reshared = share_unchanged(&a, &deep_copy(&a));
        prop_assert!(a.iter().zip(reshared.iter()).all(|(x, y)| Arc::ptr_eq(x, y)));
    }
}

/// The edit strategy is not vacuous: over a few hundred pairs it produces every kind of change
/// the diff reports.
#[test]
fn edited_pairs_exercise_every_kind_of_change() {
    let mut runner = TestRunner::new(Config::with_cases(300));
    let mut seen: BTreeSet<&'static str> = BTreeSet::new();
    for _ in 0..300 {
        let tree = arb_edited_pair()
            .new_tree(&mut runner)
            .expect("strategy generates");
        let (a, b) = tree.current();
        let changes = diff(&a, &b);
        let kinds = [
            ("node", changes.node.is_some()),
            ("zone", changes.zone.is_some()),
            (
                "hinted port re-read",
                changes
                    .changed
                    .iter()
                    .any(|c| c.previous.topology != c.current.topology),
            ),
            ("port added", !changes.added.is_empty()),
            ("port removed", !changes.removed.is_empty()),
            (
                "port added to a service",
                changes.added.iter().any(|port| {
                    a.iter().any(|old| {
                        old.name.namespace == port.name.namespace && old.name.name == port.name.name
                    })
                }),
            ),
            (
                "service changed",
                changes.changed.iter().any(|c| c.service_changed),
            ),
            (
                "endpoints only",
                changes.changed.iter().any(|c| !c.service_changed),
            ),
            (
                "endpoint added",
                changes
                    .changed
                    .iter()
                    .any(|c| !c.endpoints.added.is_empty()),
            ),
            (
                "endpoint removed",
                changes
                    .changed
                    .iter()
                    .any(|c| !c.endpoints.removed.is_empty()),
            ),
            (
                "endpoint changed",
                changes
                    .changed
                    .iter()
                    .any(|c| !c.endpoints.changed.is_empty()),
            ),
        ];
        seen.extend(kinds.iter().filter(|(_, hit)| *hit).map(|(kind, _)| *kind));
    }
    assert_eq!(seen.len(), 11, "only saw {seen:?}");
}

/// Cost follows the change: one endpoint changed among 10,000 service ports gives a change set
/// naming exactly that port, with exactly that endpoint, whether the tables share `Arc`s (the edit
/// path) or not (a table parsed afresh: deep compares, same answer).
#[test]
fn one_endpoint_changed_among_ten_thousand_ports_names_only_that_port() {
    let table = large_table(10_000, 10);
    let edited = with_endpoint_changed(&table, 4_242);

    for (label, next) in [
        ("edited", edited.clone()),
        ("deep copy", deep_copy(&edited)),
    ] {
        let changes = diff(&table, &next);
        assert!(changes.node.is_none(), "{label}");
        assert!(
            changes.added.is_empty() && changes.removed.is_empty(),
            "{label}"
        );
        let names: Vec<String> = changes.touched().map(ToString::to_string).collect();
        assert_eq!(names, ["ns-0042/svc-004242:http"], "{label}");
        let change = &changes.changed[0];
        assert!(!change.service_changed, "{label}: only an endpoint changed");
        let first = table.iter().nth(4_242).expect("10,000 ports").endpoints[0].key();
        assert_eq!(change.endpoints.changed, [first], "{label}");
        assert!(change.endpoints.added.is_empty() && change.endpoints.removed.is_empty());
        assert_eq!(changes.endpoints_changed(), 1, "{label}");
    }

    let removed = with_service_removed(&table, 17);
    let changes = diff(&table, &removed);
    assert_eq!(changes.service_ports_changed(), 1);
    assert_eq!(
        changes.removed[0].name.to_string(),
        "ns-0000/svc-000017:http"
    );
    assert_eq!(changes.endpoints_changed(), 10);

    let added = with_service_added(&table);
    let changes = diff(&table, &added);
    assert_eq!(changes.service_ports_changed(), 1);
    assert_eq!(changes.added[0].endpoints.len(), 10);
    assert_eq!(apply_changes(&table, &changes), Ok(added));
}

/// A zone change re-reads only the ports whose endpoints carry zone hints: they change as a
/// service (their selection may change), every other port stays out of the change set.
#[test]
fn a_zone_change_touches_only_ports_with_zone_hints() {
    use proxy_core::table::{Endpoint, Protocol, ServicePort, ServicePortName};
    let port = |name: &str, vip: &str, hinted: bool| {
        let mut ep = Endpoint::new("198.18.1.10".parse().expect("ip"), 80);
        if hinted {
            ep.zone_hints = vec!["zone-a".into()];
        }
        ServicePort::new(ServicePortName::new("ns", name, ""), Protocol::Tcp, 80)
            .with_cluster_ip(vip.parse().expect("ip"))
            .with_endpoint(ep)
    };
    let a = ServiceTable::builder()
        .zone("zone-a")
        .insert(port("hinted", "198.18.0.1", true))
        .insert(port("plain", "198.18.0.2", false))
        .build()
        .expect("valid");
    let b = a.edit().zone("zone-b").build().expect("valid");
    let changes = diff(&a, &b);
    let zone = changes.zone.as_ref().expect("zone change reported");
    assert_eq!(
        (zone.previous.as_deref(), zone.current.as_deref()),
        (Some("zone-a"), Some("zone-b"))
    );
    let names: Vec<&str> = changes
        .changed
        .iter()
        .map(|c| c.name().name.as_str())
        .collect();
    assert_eq!(names, ["hinted"]);
    assert!(changes.changed[0].service_changed);
    assert!(changes.added.is_empty() && changes.removed.is_empty());
    assert_eq!(
        proxy_core::diff::apply_changes(&a, &changes).expect("applies"),
        b
    );
}
