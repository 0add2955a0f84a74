//! The change tracker: the embedder says what changed, object by object, and the tracker keeps
//! the current [`ServiceTable`] with a cost proportional to the change.
//!
//! kube-proxy's `ServiceChangeTracker`/`EndpointsChangeTracker` and kpng's backend
//! `decoder.Interface` (`SetService`, `DeleteService`, `SetEndpoint`, ...) are the models; the
//! tracker goes further in three ways:
//!
//! - **It joins for you.** A [`Service`] and its [`EndpointSlice`]s (several per service, keyed by
//!   name, merged) become service ports with their endpoints, joined by port name as kube-proxy
//!   does; each endpoint is local when its node is this node ([`ChangeTracker::set_node`]), for
//!   every source, so `Local` policies work without the embedder computing locality.
//! - **Each service port stands alone.** A port that is invalid, clashes with another service's
//!   address or node port, or asks for what the backend lacks is *skipped* with a
//!   [`SkippedPort`] keyed by its [`ServicePortName`]; everything else is applied. In a clash the
//!   newcomer is blamed and the incumbent keeps running; a port whose new version is invalid keeps
//!   its last good version running. When what blocked a port goes away (the incumbent is
//!   deleted, or moves), the port is admitted then.
//! - **Cost follows the change.** A change re-validates only the service it touches (its ports
//!   together, and their addresses against an index of what the others hold), and the table is a
//!   persistent map: a new snapshot copies O(log N), and the sync loop's diff skips the rest.
//!
//! Every change publishes a new table on the [`TrackerSource`] with the next *generation*,
//! which the call returns; the sync loop reports which generation it applied
//! ([`crate::sync::SyncOutcome`]), so an embedder can wait for its change
//! ([`crate::sync::SyncHandle::wait_for`]).
//!
//! ```
//! use proxy_core::tracker::*;
//! use proxy_core::Capabilities;
//!
//! let (mut tracker, _source) = ChangeTracker::new("any", Capabilities::everything());
//! tracker.set_node(Some("node-a".into())).expect("no control characters");
//! let web = ServiceName::new("default", "web");
//! tracker.set_service(
//!     Service::new(web.clone())
//!         .with_cluster_ip("198.19.0.10".parse().unwrap())
//!         .with_port(ServicePortSpec::tcp("http", 80).with_target_port(8080)),
//! );
//! let generation = tracker.set_endpoint_slice(
//!     EndpointSlice::new(web.clone(), "web-1")
//!         .with_endpoint(SliceEndpoint::new("198.18.1.10".parse().unwrap()).on_node("node-a")),
//! );
//! assert_eq!(generation, 3);
//! let port = tracker.table().get(&web.port("http")).unwrap().clone();
//! assert_eq!(port.endpoints[0].port, 8080);
//! assert!(port.endpoints[0].is_local);
//!
//! // A second service on the same cluster IP and port: the newcomer is skipped, by name.
//! let api = ServiceName::new("default", "api");
//! tracker.set_service(
//!     Service::new(api.clone())
//!         .with_cluster_ip("198.19.0.10".parse().unwrap())
//!         .with_port(ServicePortSpec::tcp("http", 80)),
//! );
//! assert!(tracker.table().get(&api.port("http")).is_none());
//! assert_eq!(tracker.skipped()[&api.port("http")].reason, SkipReason::Clash);
//! ```

mod admit;
mod claims;
mod join;
mod model;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use tokio::sync::watch;

pub use crate::source::{SkipReason, Skipped, SkippedPort, TableUpdate};
pub use model::{EndpointSlice, Service, ServiceName, ServicePortSpec, SliceEndpoint, SlicePort};

use crate::dataplane::{Capabilities, Dataplane};
use crate::source::ServiceSource;
use crate::table::{PortMap, ServicePort, ServicePortName, ServiceTable};
use crate::validate::FieldError;
use claims::Claims;

/// Keeps the current table from per-object changes; see the [module docs](self).
#[derive(Debug)]
pub struct ChangeTracker {
    backend: String,
    capabilities: Capabilities,
    node: Option<String>,
    zone: Option<String>,
    services: HashMap<ServiceName, Described>,
    slices: HashMap<ServiceName, BTreeMap<String, EndpointSlice>>,
    /// Services their source could not read: what runs stays, and these problems are reported
    /// on the named ports until the source describes the service again.
    rejected: HashMap<ServiceName, Rejection>,
    /// The admitted service ports: the table.
    ports: PortMap,
    endpoint_count: usize,
    skipped: Skipped,
    claims: Claims,
    /// Services with a port skipped for a clash, by the service holding what they want.
    waiting_on: HashMap<ServiceName, BTreeSet<ServiceName>>,
    generation: u64,
    table: ServiceTable,
    publish: watch::Sender<TableUpdate>,
    /// Inside a [`Batch`]: changes wait for its end.
    holding: bool,
    /// Something changed since the last publish.
    dirty: bool,
}

/// A run of changes published as one generation when dropped ([`ChangeTracker::batch`]).
#[derive(Debug)]
pub struct Batch<'a> {
    tracker: &'a mut ChangeTracker,
}

impl std::ops::Deref for Batch<'_> {
    type Target = ChangeTracker;

    fn deref(&self) -> &ChangeTracker {
        self.tracker
    }
}

impl std::ops::DerefMut for Batch<'_> {
    fn deref_mut(&mut self) -> &mut ChangeTracker {
        self.tracker
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        self.tracker.holding = false;
        self.tracker.publish();
    }
}

/// The [`ServiceSource`] of a [`ChangeTracker`]: hand it to [`crate::SyncLoop::run`].
#[derive(Debug)]
pub struct TrackerSource {
    updates: watch::Receiver<TableUpdate>,
}

#[async_trait::async_trait]
impl ServiceSource for TrackerSource {
    async fn next_update(&mut self) -> Option<TableUpdate> {
        self.updates.next_update().await
    }
}

impl ChangeTracker {
    /// A tracker for a backend named `backend` that can do `capabilities` (ports asking for
    /// more are skipped), and the source that hands its tables to a sync loop. The table starts
    /// empty, at generation 0, and the source has nothing to sync until the first change.
    pub fn new(backend: &str, capabilities: Capabilities) -> (ChangeTracker, TrackerSource) {
        let (publish, updates) = watch::channel(TableUpdate::default());
        let tracker = ChangeTracker {
            backend: backend.to_owned(),
            capabilities,
            node: None,
            zone: None,
            services: HashMap::new(),
            slices: HashMap::new(),
            rejected: HashMap::new(),
            ports: PortMap::new(),
            endpoint_count: 0,
            skipped: Skipped::new(),
            claims: Claims::default(),
            waiting_on: HashMap::new(),
            generation: 0,
            table: ServiceTable::empty(),
            publish,
            holding: false,
            dirty: false,
        };
        (tracker, TrackerSource { updates })
    }

    /// A tracker for `dataplane`'s name and capabilities.
    pub fn for_dataplane<D: Dataplane + ?Sized>(dataplane: &D) -> (ChangeTracker, TrackerSource) {
        Self::new(dataplane.name(), dataplane.capabilities())
    }

    /// The table as last published (every admitted service port); inside a [`Batch`], as it
    /// was before the batch.
    pub fn table(&self) -> &ServiceTable {
        &self.table
    }

    /// The service ports skipped now, with why.
    pub fn skipped(&self) -> &Skipped {
        &self.skipped
    }

    /// The generation of the current table: how many changes the tracker has published.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// A service as last set with [`ChangeTracker::set_service`], if any.
    pub fn service(&self, name: &ServiceName) -> Option<&Service> {
        match self.services.get(name) {
            Some(Described::Service(service)) => Some(service),
            _ => None,
        }
    }

    /// The names of the ports the source described for a service, in the order given.
    pub fn port_names(&self, name: &ServiceName) -> Vec<ServicePortName> {
        match self.services.get(name) {
            Some(Described::Service(service)) => service
                .ports
                .iter()
                .map(|p| name.port(p.name.clone()))
                .collect(),
            Some(Described::Ports(ports)) => ports.iter().map(|p| p.name.clone()).collect(),
            None => Vec::new(),
        }
    }

    /// Sets this node's name: endpoints on this node become local. Re-reads every service (a
    /// node's name rarely changes). Returns the new generation.
    ///
    /// # Errors
    /// A name holding a control character (a newline, NUL, ESC...: no Kubernetes name does, and
    /// it would forge log lines) is refused by name, and the node keeps its name.
    pub fn set_node(&mut self, node: Option<String>) -> Result<u64, FieldError> {
        refuse_control_characters("node", node.as_deref())?;
        if self.node != node {
            self.node = node;
            self.refresh_all();
        }
        Ok(self.publish())
    }

    /// Sets this node's zone, read by endpoints' zone hints. Returns the new generation.
    ///
    /// # Errors
    /// As [`ChangeTracker::set_node`]: a zone holding a control character is refused.
    pub fn set_zone(&mut self, zone: Option<String>) -> Result<u64, FieldError> {
        refuse_control_characters("zone", zone.as_deref())?;
        if self.zone != zone {
            self.zone = zone;
            self.refresh_all();
        }
        Ok(self.publish())
    }

    /// Adds or replaces a service. Returns the new generation.
    pub fn set_service(&mut self, service: Service) -> u64 {
        let name = service.name.clone();
        self.describe(name, Described::Service(service));
        self.publish()
    }

    /// Adds or replaces a service given as ready-made service ports, endpoints included (a
    /// table file's entries, already joined); its endpoint slices, if any, are not read. Ports
    /// of another service than `name` are ignored. Returns the new generation.
    pub fn set_service_ports(&mut self, name: ServiceName, ports: Vec<ServicePort>) -> u64 {
        let ports = ports
            .into_iter()
            .filter(|p| ServiceName::of(&p.name) == name)
            .map(Arc::new)
            .collect();
        self.describe(name, Described::Ports(ports));
        self.publish()
    }

    /// Says that the source could not read a service (a number out of range in a file): what
    /// runs of it stays, and `problems` are reported on each of `ports` until the service is
    /// set or deleted again. Returns the new generation.
    pub fn reject_service(
        &mut self,
        name: ServiceName,
        ports: Vec<ServicePortName>,
        problems: Vec<FieldError>,
    ) -> u64 {
        let rejection = Rejection { ports, problems };
        if self.rejected.get(&name) != Some(&rejection) {
            self.rejected.insert(name.clone(), rejection);
            self.refresh(name);
        }
        self.publish()
    }

    /// Deletes a service and its ports (its endpoint slices stay, as Kubernetes' outlive their
    /// service until garbage-collected). Returns the new generation.
    pub fn delete_service(&mut self, name: &ServiceName) -> u64 {
        let known = self.services.remove(name).is_some();
        let rejected = self.rejected.remove(name).is_some();
        if known || rejected {
            self.refresh(name.clone());
        }
        self.publish()
    }

    fn describe(&mut self, name: ServiceName, described: Described) {
        let rejected = self.rejected.remove(&name).is_some();
        if rejected || self.services.get(&name) != Some(&described) {
            self.services.insert(name.clone(), described);
            self.refresh(name);
        }
    }

    /// Adds or replaces an endpoint slice of a service (which need not exist yet). Returns the
    /// new generation.
    pub fn set_endpoint_slice(&mut self, slice: EndpointSlice) -> u64 {
        let service = slice.service.clone();
        let slices = self.slices.entry(service.clone()).or_default();
        if slices.get(&slice.name) != Some(&slice) {
            slices.insert(slice.name.clone(), slice);
            self.refresh(service);
        }
        self.publish()
    }

    /// Deletes an endpoint slice. Returns the new generation.
    pub fn delete_endpoint_slice(&mut self, service: &ServiceName, slice: &str) -> u64 {
        let removed = self
            .slices
            .get_mut(service)
            .and_then(|slices| slices.remove(slice))
            .is_some();
        if removed {
            if self.slices.get(service).is_some_and(BTreeMap::is_empty) {
                self.slices.remove(service);
            }
            self.refresh(service.clone());
        }
        self.publish()
    }

    /// Replaces a service and all its slices at once (a table file's entry). Returns the new
    /// generation.
    pub fn replace_service(&mut self, service: Service, slices: Vec<EndpointSlice>) -> u64 {
        let name = service.name.clone();
        let slices: BTreeMap<String, EndpointSlice> =
            slices.into_iter().map(|s| (s.name.clone(), s)).collect();
        let described = Described::Service(service);
        let same_service = self.services.get(&name) == Some(&described);
        let same_slices = self
            .slices
            .get(&name)
            .map_or(slices.is_empty(), |s| *s == slices);
        let rejected = self.rejected.remove(&name).is_some();
        if rejected || !(same_service && same_slices) {
            self.services.insert(name.clone(), described);
            if slices.is_empty() {
                self.slices.remove(&name);
            } else {
                self.slices.insert(name.clone(), slices);
            }
            self.refresh(name);
        }
        self.publish()
    }

    /// Every service name known (set and not deleted), in order.
    pub fn service_names(&self) -> BTreeSet<ServiceName> {
        self.services.keys().cloned().collect()
    }

    /// Holds back publishing until the returned guard drops: every change made through it
    /// becomes one generation, published once (a table file's reload, a controller's resync
    /// after a reconnect). Each call inside returns that coming generation.
    ///
    /// ```
    /// use proxy_core::tracker::*;
    /// use proxy_core::Capabilities;
    ///
    /// let (mut tracker, _source) = ChangeTracker::new("any", Capabilities::everything());
    /// let mut batch = tracker.batch();
    /// for i in 0..3u8 {
    ///     batch.set_service(
    ///         Service::new(ServiceName::new("default", format!("svc-{i}")))
    ///             .with_cluster_ip([198, 19, 0, i].into())
    ///             .with_port(ServicePortSpec::tcp("http", 80)),
    ///     );
    /// }
    /// drop(batch);
    /// assert_eq!(tracker.generation(), 1);
    /// assert_eq!(tracker.table().len(), 3);
    /// ```
    pub fn batch(&mut self) -> Batch<'_> {
        self.holding = true;
        Batch { tracker: self }
    }

    /// Publishes the current state as a new generation even if nothing changed, and returns it.
    /// Call it once the source has caught up (its first full list, as kube-proxy waits for its
    /// informers): the sync loop syncs nothing before the first generation, and an empty first
    /// generation is a full sync that removes what a previous run left.
    pub fn flush(&mut self) -> u64 {
        self.dirty = true;
        self.publish()
    }

    /// Publishes the current state as the next generation if anything changed, and returns the
    /// generation that holds the latest change: inside a batch, the one its end publishes.
    fn publish(&mut self) -> u64 {
        if self.holding {
            return self.generation + u64::from(self.dirty);
        }
        if !std::mem::take(&mut self.dirty) {
            return self.generation;
        }
        self.generation += 1;
        self.table = ServiceTable::from_parts_unchecked(
            self.node.clone(),
            self.zone.clone(),
            self.ports.clone(),
            self.endpoint_count,
        );
        // `send_replace` stores the value even when no loop listens (yet).
        self.publish.send_replace(TableUpdate {
            table: self.table.clone(),
            generation: self.generation,
            skipped: self.skipped.clone(),
        });
        self.generation
    }
}

/// How a source described a service.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Described {
    /// As a service whose endpoints come in slices.
    Service(Service),
    /// As ready-made service ports.
    Ports(Vec<Arc<ServicePort>>),
}

/// A service its source could not read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rejection {
    ports: Vec<ServicePortName>,
    problems: Vec<FieldError>,
}

/// The problem with a node name or zone that holds a control character, by field.
fn refuse_control_characters(field: &str, value: Option<&str>) -> Result<(), FieldError> {
    match value.and_then(crate::validate::control_character_problem) {
        Some(problem) => Err(FieldError::new(field, problem)),
        None => Ok(()),
    }
}
