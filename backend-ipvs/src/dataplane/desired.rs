//! [`DesiredCache`]: the desired state of the last sync's table, followed from one sync to the
//! next with the sync loop's [`ChangeSet`] (`SyncRequest::changes`), so a partial sync costs what
//! changed rather than the table.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use proxy_core::diff::ChangeSet;
use proxy_core::table::{ServicePort, ServiceTable};
use tracing::debug;

use crate::config::IpvsConfig;
use crate::plan::{plan_desired_on, Desired, Touched};

/// The table the desired state was last computed for, and that state.
#[derive(Debug, Default)]
pub(super) struct DesiredCache {
    last: Option<(ServiceTable, Desired)>,
}

impl DesiredCache {
    /// The desired state for `table`, and what changed since the last one: `None` when it was
    /// computed whole. Followed from the last one with `changes` (partial syncs) when they
    /// lead from the cached table to `table`; computed whole otherwise (no `changes`: a full
    /// sync; nothing cached: the first sync, or the last one failed; `changes` from another
    /// table: a caller that does not keep the contract). Taken out: until [`DesiredCache::store`],
    /// the cache is empty, so a sync that panics half-way is followed by a whole one.
    pub fn take(
        &mut self,
        table: &ServiceTable,
        changes: Option<&ChangeSet>,
        node_ips: BTreeSet<IpAddr>,
        config: &IpvsConfig,
    ) -> (Desired, Option<Touched>) {
        let cached = self.last.take();
        match (changes, cached) {
            (Some(changes), Some((last, mut desired))) if follows(&last, changes, table) => {
                // A node name change alone needs nothing: locality is each endpoint's
                // `is_local`, and ports whose endpoints it changes are in `changes.changed`.
                let mut touched = desired.update(changes, config);
                // Then the node's addresses: only the ports that depend on them, if they moved.
                let moved = desired.readdress(table, node_ips, config);
                touched.keys.extend(moved.keys);
                touched.endpoints.extend(moved.endpoints);
                (desired, Some(touched))
            }
            (Some(_), Some(_)) => {
                debug!(
                    "the changes do not lead from the last table to this one: planning it whole"
                );
                (plan_desired_on(table, config, node_ips), None)
            }
            _ => (plan_desired_on(table, config, node_ips), None),
        }
    }

    /// Keeps `desired`, the state of `table`, for the next sync.
    pub fn store(&mut self, table: &ServiceTable, desired: Desired) {
        self.last = Some((table.clone(), desired));
    }

    /// Forgets the cached state: the next sync computes it whole.
    pub fn clear(&mut self) {
        self.last = None;
    }
}

/// Whether `changes` lead from `last` to `table`, as far as a look at what they name tells
/// (O(changes x log N), no walk of the tables): each removed or changed port was in `last` as
/// its previous value, each added or changed one is in `table` as its new value, the numbers
/// of ports and of endpoints add up, and so do the node and zone. A port changed outside `changes` goes unseen: the sync
/// loop's contract (changes from the previous request's table) is trusted that far.
pub(super) fn follows(last: &ServiceTable, changes: &ChangeSet, table: &ServiceTable) -> bool {
    fn same(have: Option<&Arc<ServicePort>>, want: &Arc<ServicePort>) -> bool {
        have.is_some_and(|have| Arc::ptr_eq(have, want) || **have == **want)
    }
    let node_follows = match &changes.node {
        Some(change) => {
            change.previous.as_deref() == last.node() && change.current.as_deref() == table.node()
        }
        None => last.node() == table.node(),
    };
    let zone_follows = match &changes.zone {
        Some(change) => {
            change.previous.as_deref() == last.zone() && change.current.as_deref() == table.zone()
        }
        None => last.zone() == table.zone(),
    };
    let size_follows = (last.len() + changes.added.len())
        .checked_sub(changes.removed.len())
        .is_some_and(|len| len == table.len());
    let endpoints = |ports: &mut dyn Iterator<Item = &Arc<ServicePort>>| -> usize {
        ports.map(|p| p.endpoints.len()).sum()
    };
    let came = endpoints(
        &mut changes
            .added
            .iter()
            .chain(changes.changed.iter().map(|c| &c.current)),
    );
    let went = endpoints(
        &mut changes
            .removed
            .iter()
            .chain(changes.changed.iter().map(|c| &c.previous)),
    );
    let endpoints_follow = (last.endpoint_count() + came)
        .checked_sub(went)
        .is_some_and(|count| count == table.endpoint_count());
    node_follows
        && zone_follows
        && size_follows
        && endpoints_follow
        && changes
            .removed
            .iter()
            .all(|p| same(last.get(&p.name), p) && table.get(&p.name).is_none())
        && changes
            .added
            .iter()
            .all(|p| last.get(&p.name).is_none() && same(table.get(&p.name), p))
        && changes
            .changed
            .iter()
            .all(|c| same(last.get(c.name()), &c.previous) && same(table.get(c.name()), &c.current))
}

#[cfg(test)]
mod tests {
    use proxy_core::diff::diff;
    use proxy_core::table::{Endpoint, Protocol, ServicePortName};

    use super::*;

    fn port(name: &str, last: u8, endpoints: &[u8]) -> ServicePort {
        let mut port = ServicePort::new(
            ServicePortName::new("default", name, "http"),
            Protocol::Tcp,
            80,
        )
        .with_cluster_ip(IpAddr::from([198, 19, 0, last]));
        port.endpoints = endpoints
            .iter()
            .map(|&e| Endpoint::new(IpAddr::from([198, 18, 1, e]), 8080))
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

    #[test]
    fn changes_follow_only_from_the_table_they_were_made_from() {
        let a = table(vec![port("web", 10, &[1]), port("api", 11, &[2])]);
        let b = table(vec![port("web", 10, &[1, 3]), port("dns", 12, &[4])]);
        let other = table(vec![port("web", 10, &[9])]);
        assert!(follows(&a, &diff(&a, &b), &b));
        assert!(follows(&b, &diff(&b, &a), &a));
        assert!(follows(&a, &diff(&a, &a), &a));
        assert!(
            !follows(&other, &diff(&a, &b), &b),
            "changes from another table"
        );
        assert!(
            !follows(&a, &diff(&ServiceTable::empty(), &b), &b),
            "every port added, though the last table had some"
        );
        assert!(
            !follows(&a, &diff(&a, &b), &a),
            "changes towards another table"
        );
        assert!(!follows(&a, &ChangeSet::default(), &b), "no changes at all");
        let renamed = a.edit().node("node-b").build().expect("valid");
        assert!(follows(&a, &diff(&a, &renamed), &renamed));
        assert!(!follows(&a, &ChangeSet::default(), &renamed));
    }

    #[test]
    fn untrusted_changes_plan_the_table_whole() {
        let config = IpvsConfig::default();
        let a = table(vec![port("web", 10, &[1])]);
        let b = table(vec![port("web", 10, &[1, 2])]);
        let mut cache = DesiredCache::default();
        let (desired, touched) = cache.take(&a, None, BTreeSet::new(), &config);
        assert_eq!(touched, None, "no changes: whole");
        cache.store(&a, desired);
        let (desired, touched) = cache.take(&b, Some(&diff(&a, &b)), BTreeSet::new(), &config);
        assert_eq!(touched.map(|t| t.keys.len()), Some(1), "followed");
        cache.store(&b, desired);
        let wrong = diff(&ServiceTable::empty(), &a);
        let (desired, touched) = cache.take(&a, Some(&wrong), BTreeSet::new(), &config);
        assert_eq!(touched, None, "changes from the empty table, not from b");
        assert_eq!(desired, plan_desired_on(&a, &config, BTreeSet::new()));
        let (_, touched) = cache.take(&a, Some(&diff(&b, &a)), BTreeSet::new(), &config);
        assert_eq!(touched, None, "taken out: nothing cached");
    }
}
