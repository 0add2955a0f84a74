//! The difference between two tables: which service ports were added, removed or changed, and
//! per changed port which endpoints were added, removed or changed.
//!
//! Both tables are ordered maps, so the diff is one merge walk. Entries shared by pointer (the
//! normal case after [`ServiceTable::edit`]) are skipped without a deep compare, so the cost
//! follows the change, not the table.
//!
//! ```
//! use proxy_core::diff::{apply_changes, diff};
//! use proxy_core::table::*;
//!
//! let name = ServicePortName::new("default", "web", "http");
//! let web = ServicePort::new(name.clone(), Protocol::Tcp, 80)
//!     .with_cluster_ip("198.19.0.10".parse().unwrap())
//!     .with_endpoint(Endpoint::new("198.18.1.10".parse().unwrap(), 80));
//! let before = ServiceTable::builder().insert(web.clone()).build().unwrap();
//! let after = before
//!     .edit()
//!     .insert(web.with_endpoint(Endpoint::new("198.18.1.11".parse().unwrap(), 80)))
//!     .build()
//!     .unwrap();
//!
//! let changes = diff(&before, &after);
//! assert_eq!(changes.changed.len(), 1);
//! assert_eq!(changes.changed[0].endpoints.added.len(), 1);
//! assert_eq!(apply_changes(&before, &changes).unwrap(), after);
//! ```

use std::cmp::Ordering;
use std::sync::Arc;

use imbl::ordmap::DiffItem;

use crate::table::{Endpoint, EndpointKey, PortMap, ServicePort, ServicePortName, ServiceTable};
use crate::validate::ValidationErrors;

/// The changes that turn one table into another.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeSet {
    /// Set when the node name changed (every endpoint's locality may have changed).
    pub node: Option<NodeChange>,
    /// Set when the node's zone changed. Ports whose endpoints carry topology hints show up in
    /// `changed` too (their [`ServicePort::topology`] differs); no other port is affected.
    pub zone: Option<ZoneChange>,
    /// Service ports only in the new table, in name order.
    pub added: Vec<Arc<ServicePort>>,
    /// Service ports only in the old table (their old value), in name order.
    pub removed: Vec<Arc<ServicePort>>,
    /// Service ports in both whose value differs, in name order.
    pub changed: Vec<ServicePortChange>,
}

/// The node name before and after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeChange {
    /// The old node name.
    pub previous: Option<String>,
    /// The new node name.
    pub current: Option<String>,
}

/// The node's zone before and after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneChange {
    /// The old zone.
    pub previous: Option<String>,
    /// The new zone.
    pub current: Option<String>,
}

/// One service port present in both tables with different values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePortChange {
    /// The old value.
    pub previous: Arc<ServicePort>,
    /// The new value.
    pub current: Arc<ServicePort>,
    /// Whether anything but the endpoints changed (addresses, ports, policies...).
    pub service_changed: bool,
    /// How the endpoints changed.
    pub endpoints: EndpointChanges,
}

impl ServicePortChange {
    /// The service port's name.
    pub fn name(&self) -> &ServicePortName {
        &self.current.name
    }
}

/// Endpoint changes within one service port, by [`EndpointKey`], each list in key order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointChanges {
    /// Endpoints only in the new value.
    pub added: Vec<EndpointKey>,
    /// Endpoints only in the old value.
    pub removed: Vec<EndpointKey>,
    /// Endpoints in both whose conditions, node, zone or weight changed.
    pub changed: Vec<EndpointKey>,
}

impl EndpointChanges {
    /// Whether no endpoint changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

impl ChangeSet {
    /// Whether the two tables were equal.
    pub fn is_empty(&self) -> bool {
        self.node.is_none()
            && self.zone.is_none()
            && self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
    }

    /// Number of service ports added, removed or changed.
    pub fn service_ports_changed(&self) -> usize {
        self.added.len() + self.removed.len() + self.changed.len()
    }

    /// Number of endpoints added, removed or changed, counting every endpoint of added and removed
    /// service ports.
    pub fn endpoints_changed(&self) -> usize {
        let whole: usize = self
            .added
            .iter()
            .chain(&self.removed)
            .map(|p| p.endpoints.len())
            .sum();
        let partial: usize = self
            .changed
            .iter()
            .map(|c| {
                c.endpoints.added.len() + c.endpoints.removed.len() + c.endpoints.changed.len()
            })
            .sum();
        whole + partial
    }

    /// The names of every service port added, removed or changed, in name order: what a partial
    /// sync must rewrite.
    pub fn touched(&self) -> impl Iterator<Item = &ServicePortName> + '_ {
        let mut names: Vec<&ServicePortName> = self
            .added
            .iter()
            .chain(&self.removed)
            .map(|p| &p.name)
            .chain(self.changed.iter().map(ServicePortChange::name))
            .collect();
        names.sort();
        names.into_iter()
    }
}

/// The changes from `old` to `new`. `diff(t, t)` is empty; [`apply_changes`]`(old, diff(old, new))`
/// equals `new`. The cost follows the change when the two tables share structure (one was made
/// from the other by [`ServiceTable::edit`], [`share_unchanged`] or the change tracker), and is
/// linear in the tables otherwise.
pub fn diff(old: &ServiceTable, new: &ServiceTable) -> ChangeSet {
    let mut changes = ChangeSet::default();
    if old.ptr_eq(new) {
        return changes;
    }
    if old.node() != new.node() {
        changes.node = Some(NodeChange {
            previous: old.node().map(str::to_owned),
            current: new.node().map(str::to_owned),
        });
    }
    if old.zone() != new.zone() {
        changes.zone = Some(ZoneChange {
            previous: old.zone().map(str::to_owned),
            current: new.zone().map(str::to_owned),
        });
    }
    // The persistent maps' own diff walks both trees in order and skips every subtree the two
    // share by pointer, so tables derived from one another diff in O(change x log N).
    for item in old.ports().diff(new.ports()) {
        match item {
            DiffItem::Remove(_, port) => changes.removed.push(Arc::clone(port)),
            DiffItem::Add(_, port) => changes.added.push(Arc::clone(port)),
            DiffItem::Update {
                old: (_, previous),
                new: (_, current),
            } => {
                if let Some(change) = diff_port(previous, current) {
                    changes.changed.push(change);
                }
            }
        }
    }
    changes
}

/// The change between two values of one service port, or `None` when they are equal.
pub fn diff_port(
    previous: &Arc<ServicePort>,
    current: &Arc<ServicePort>,
) -> Option<ServicePortChange> {
    if Arc::ptr_eq(previous, current) || previous == current {
        return None;
    }
    let endpoints = diff_endpoints(&previous.endpoints, &current.endpoints);
    let service_changed = !same_service(previous, current);
    Some(ServicePortChange {
        previous: Arc::clone(previous),
        current: Arc::clone(current),
        service_changed,
        endpoints,
    })
}

/// Equal in everything but the endpoints.
fn same_service(a: &ServicePort, b: &ServicePort) -> bool {
    // Destructure so that a new field cannot be forgotten here.
    let ServicePort {
        name,
        protocol,
        cluster_ips,
        port,
        target_port,
        node_port,
        external_ips,
        load_balancer_ips,
        load_balancer_source_ranges,
        session_affinity,
        external_traffic_policy,
        internal_traffic_policy,
        scheduler,
        health_check_node_port,
        idle_timeout,
        endpoints: _,
        topology,
    } = a;
    *name == b.name
        && *protocol == b.protocol
        && *cluster_ips == b.cluster_ips
        && *port == b.port
        && *target_port == b.target_port
        && *node_port == b.node_port
        && *external_ips == b.external_ips
        && *load_balancer_ips == b.load_balancer_ips
        && *load_balancer_source_ranges == b.load_balancer_source_ranges
        && *session_affinity == b.session_affinity
        && *external_traffic_policy == b.external_traffic_policy
        && *internal_traffic_policy == b.internal_traffic_policy
        && *scheduler == b.scheduler
        && *health_check_node_port == b.health_check_node_port
        && *idle_timeout == b.idle_timeout
        // Where this node is changes which endpoints the hints select: treat it as a service
        // change, so backends re-plan the whole port.
        && *topology == b.topology
}

/// Endpoint changes between two lists sorted by key (as every built table's are).
fn diff_endpoints(previous: &[Endpoint], current: &[Endpoint]) -> EndpointChanges {
    let mut changes = EndpointChanges::default();
    let (mut i, mut j) = (0, 0);
    while i < previous.len() || j < current.len() {
        let order = match (previous.get(i), current.get(j)) {
            (Some(a), Some(b)) => a.key().cmp(&b.key()),
            (Some(_), None) => Ordering::Less,
            _ => Ordering::Greater,
        };
        match order {
            Ordering::Less => {
                changes.removed.push(previous[i].key());
                i += 1;
            }
            Ordering::Greater => {
                changes.added.push(current[j].key());
                j += 1;
            }
            Ordering::Equal => {
                if previous[i] != current[j] {
                    changes.changed.push(current[j].key());
                }
                i += 1;
                j += 1;
            }
        }
    }
    changes
}

/// Applies `changes` to `base`: the inverse of [`diff`]. Unchanged entries stay shared with `base`.
///
/// # Errors
/// [`ValidationErrors`] when the result is not a valid table (the change set did not come from
/// `diff(base, valid)`).
pub fn apply_changes(
    base: &ServiceTable,
    changes: &ChangeSet,
) -> Result<ServiceTable, ValidationErrors> {
    let mut builder = base.edit();
    if let Some(node) = &changes.node {
        builder.set_node(node.current.clone());
    }
    if let Some(zone) = &changes.zone {
        builder.set_zone(zone.current.clone());
    }
    for port in &changes.removed {
        builder.remove(&port.name);
    }
    for port in &changes.added {
        builder.upsert(Arc::clone(port));
    }
    for change in &changes.changed {
        builder.upsert(Arc::clone(&change.current));
    }
    builder.build()
}

/// Re-uses `previous`'s `Arc`s for every service port of `next` equal to the old one, so that
/// tables parsed afresh (from a file) share unchanged entries and later diffs skip them by pointer.
pub fn share_unchanged(previous: &ServiceTable, next: &ServiceTable) -> ServiceTable {
    let shared: PortMap = next
        .ports()
        .iter()
        .map(|(name, port)| match previous.get(name) {
            Some(old) if old == port => (name.clone(), Arc::clone(old)),
            _ => (name.clone(), Arc::clone(port)),
        })
        .collect();
    next.with_ports_unchecked(shared)
}
