//! The service table: an immutable snapshot of every service port and its endpoints.
//!
//! The unit is the *service port*, as in kube-proxy (`ServicePortName` = namespace/name + port name):
//! every backend programs one set of kernel objects per service port. A [`ServiceTable`] is cheap to
//! clone (one `Arc`), its ports sit in a persistent ordered map ([`PortMap`], a B-tree whose
//! nodes are shared between snapshots), and each [`ServicePort`] sits behind its own `Arc`. So an
//! edit made with [`ServiceTable::edit`] or the [`crate::tracker::ChangeTracker`] copies only the
//! path to what changed, shares everything else with the previous snapshot, and
//! [`crate::diff()`] skips shared subtrees by pointer: a one-port change costs O(log N), not O(N).
//!
//! A `ServiceTable` can only be built through [`TableBuilder::build`] (or the file loader in
//! [`crate::file`]), which validates it: a table that exists is a valid table.
//!
//! ```
//! use proxy_core::table::*;
//! use std::sync::Arc;
//!
//! let web = ServicePort::new(ServicePortName::new("default", "web", "http"), Protocol::Tcp, 80)
//!     .with_cluster_ip("198.19.0.10".parse().unwrap())
//!     .with_endpoint(Endpoint::new("198.18.1.10".parse().unwrap(), 8080));
//! let table = ServiceTable::builder().node("node-a").insert(web).build().unwrap();
//! assert_eq!(table.len(), 1);
//! assert_eq!(table.endpoint_count(), 1);
//! ```

use std::fmt;
use std::sync::Arc;

pub use crate::model::{
    Endpoint, EndpointKey, NodeTopology, PortMap, Protocol, Scheduler, ServicePort,
    ServicePortName, SessionAffinity, TrafficPolicy,
};
use crate::validate::{self, ValidationErrors};

/// The immutable snapshot of all service ports. Clone is one `Arc` increment.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ServiceTable {
    inner: Arc<TableInner>,
}

#[derive(Default, PartialEq, Eq)]
struct TableInner {
    node: Option<String>,
    zone: Option<String>,
    ports: PortMap,
    endpoint_count: usize,
}

impl fmt::Debug for ServiceTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceTable")
            .field("node", &self.inner.node)
            .field("zone", &self.inner.zone)
            .field("service_ports", &self.inner.ports.len())
            .field("endpoints", &self.inner.endpoint_count)
            .finish()
    }
}

impl ServiceTable {
    /// An empty table for no particular node.
    pub fn empty() -> Self {
        Self::default()
    }

    /// A builder for a new table.
    pub fn builder() -> TableBuilder {
        TableBuilder::default()
    }

    /// A builder that starts from this table; unchanged entries stay shared with it.
    pub fn edit(&self) -> TableBuilder {
        TableBuilder {
            node: self.inner.node.clone(),
            zone: self.inner.zone.clone(),
            ports: self.inner.ports.clone(),
            duplicates: Vec::new(),
        }
    }

    /// The node this table was made for (drives local traffic policies).
    pub fn node(&self) -> Option<&str> {
        self.inner.node.as_deref()
    }

    /// This node's zone (drives topology hints), if known.
    pub fn zone(&self) -> Option<&str> {
        self.inner.zone.as_deref()
    }

    /// Number of service ports.
    pub fn len(&self) -> usize {
        self.inner.ports.len()
    }

    /// Whether the table has no service ports.
    pub fn is_empty(&self) -> bool {
        self.inner.ports.is_empty()
    }

    /// Total number of endpoints over all service ports.
    pub fn endpoint_count(&self) -> usize {
        self.inner.endpoint_count
    }

    /// One service port by name.
    pub fn get(&self, name: &ServicePortName) -> Option<&Arc<ServicePort>> {
        self.inner.ports.get(name)
    }

    /// Every service port, ordered by name.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &Arc<ServicePort>> + '_ {
        self.inner.ports.values()
    }

    /// The underlying map, ordered by name (the diff walks two of these side by side).
    pub fn ports(&self) -> &PortMap {
        &self.inner.ports
    }

    /// A table from parts that the caller has validated port by port (the change tracker, the
    /// sync loop's capability filter): no check runs here, so the cost is O(1).
    pub(crate) fn from_parts_unchecked(
        node: Option<String>,
        zone: Option<String>,
        ports: PortMap,
        endpoint_count: usize,
    ) -> ServiceTable {
        ServiceTable {
            inner: Arc::new(TableInner {
                node,
                zone,
                ports,
                endpoint_count,
            }),
        }
    }

    /// The same table with `ports` swapped for an equal map (used to share `Arc`s with an older
    /// snapshot). The caller guarantees every value equals the one it replaces, so no validation.
    pub(crate) fn with_ports_unchecked(&self, ports: PortMap) -> ServiceTable {
        debug_assert!(ports.len() == self.inner.ports.len());
        ServiceTable {
            inner: Arc::new(TableInner {
                node: self.inner.node.clone(),
                zone: self.inner.zone.clone(),
                ports,
                endpoint_count: self.inner.endpoint_count,
            }),
        }
    }

    /// Whether two tables are the same snapshot (pointer equality, no deep compare).
    pub fn ptr_eq(&self, other: &ServiceTable) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

/// Builds a [`ServiceTable`]; [`TableBuilder::build`] validates it.
#[derive(Debug, Default, Clone)]
pub struct TableBuilder {
    node: Option<String>,
    zone: Option<String>,
    ports: PortMap,
    /// Keys inserted twice through [`TableBuilder::insert_new`]; reported by `build`.
    duplicates: Vec<ServicePortName>,
}

impl TableBuilder {
    /// Sets this node's name.
    pub fn node(mut self, node: impl Into<String>) -> Self {
        self.node = Some(node.into());
        self
    }

    /// Sets or clears this node's name.
    pub fn set_node(&mut self, node: Option<String>) -> &mut Self {
        self.node = node;
        self
    }

    /// Sets this node's zone (its `topology.kubernetes.io/zone` label, for topology hints).
    pub fn zone(mut self, zone: impl Into<String>) -> Self {
        self.zone = Some(zone.into());
        self
    }

    /// Sets or clears this node's zone.
    pub fn set_zone(&mut self, zone: Option<String>) -> &mut Self {
        self.zone = zone;
        self
    }

    /// Inserts or replaces a service port (chaining form).
    pub fn insert(mut self, port: impl Into<Arc<ServicePort>>) -> Self {
        self.upsert(port);
        self
    }

    /// Inserts or replaces a service port, returning the one it replaced.
    pub fn upsert(&mut self, port: impl Into<Arc<ServicePort>>) -> Option<Arc<ServicePort>> {
        let port = port.into();
        self.ports.insert(port.name.clone(), port)
    }

    /// Inserts a service port that must be new: a second one with the same name makes
    /// [`TableBuilder::build`] fail with a duplicate-key error (used by the file loader).
    pub fn insert_new(&mut self, port: impl Into<Arc<ServicePort>>) {
        let port = port.into();
        if self.ports.contains_key(&port.name) {
            self.duplicates.push(port.name.clone());
        } else {
            self.ports.insert(port.name.clone(), port);
        }
    }

    /// Removes a service port, returning it.
    pub fn remove(&mut self, name: &ServicePortName) -> Option<Arc<ServicePort>> {
        self.ports.remove(name)
    }

    /// Removes every port of the service `namespace/name`, returning them in name order.
    pub fn remove_service(&mut self, namespace: &str, name: &str) -> Vec<Arc<ServicePort>> {
        let first = ServicePortName::new(namespace, name, "");
        let names: Vec<ServicePortName> = self
            .ports
            .range(first..)
            .take_while(|(n, _)| n.namespace == namespace && n.name == name)
            .map(|(n, _)| n.clone())
            .collect();
        names.iter().filter_map(|n| self.ports.remove(n)).collect()
    }

    /// One service port by name.
    pub fn get(&self, name: &ServicePortName) -> Option<&Arc<ServicePort>> {
        self.ports.get(name)
    }

    /// Validates and freezes the table. Endpoints of each service port are sorted by key, so equal
    /// tables compare equal whatever order they were given in.
    ///
    /// # Errors
    /// Every problem found, each naming its field path (see [`crate::validate`]).
    pub fn build(self) -> Result<ServiceTable, ValidationErrors> {
        let mut ports = self.ports;
        let mut fixed = Vec::new();
        for (name, port) in &ports {
            if let Some(port) = normalized(port, &self.node, &self.zone) {
                fixed.push((name.clone(), port));
            }
        }
        for (name, port) in fixed {
            ports.insert(name, port);
        }
        validate::validate(self.node.as_deref(), &ports, &self.duplicates)?;
        let endpoint_count = ports.values().map(|p| p.endpoints.len()).sum();
        Ok(ServiceTable {
            inner: Arc::new(TableInner {
                node: self.node,
                zone: self.zone,
                ports,
                endpoint_count,
            }),
        })
    }
}

/// `port` with its endpoints sorted by key and its [`ServicePort::topology`] stamped from this
/// node's name and zone, or `None` when it already is so (it is then shared as it is).
pub(crate) fn normalized(
    port: &Arc<ServicePort>,
    node: &Option<String>,
    zone: &Option<String>,
) -> Option<Arc<ServicePort>> {
    let sorted = port.endpoints.is_sorted_by_key(Endpoint::key);
    // Only ports with hints carry the node's topology, and only the parts their hints read (see
    // `ServicePort::topology`): a port changes when the node's name or zone changes only if its
    // hints read it.
    let wanted = NodeTopology::read_by(&port.endpoints, node, zone);
    if sorted && port.topology == wanted {
        return None;
    }
    let mut port = Arc::clone(port);
    let inner = Arc::make_mut(&mut port);
    if !sorted {
        inner.endpoints.sort_by_key(Endpoint::key);
    }
    inner.topology = wanted;
    Some(port)
}
