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
//! tracker.set_node(Some("node-a".into()));
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

mod claims;
mod model;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use tokio::sync::watch;

pub use crate::sync::{SkipReason, Skipped, SkippedPort, TableUpdate};
pub use model::{EndpointSlice, Service, ServiceName, ServicePortSpec, SliceEndpoint, SlicePort};

use crate::dataplane::{Capabilities, Dataplane};
use crate::sync::ServiceSource;
use crate::table::{
    normalized, Endpoint, EndpointKey, PortMap, ServicePort, ServicePortName, ServiceTable,
};
use crate::validate::{port_path, service_path, validate, FieldError};
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
    pub fn set_node(&mut self, node: Option<String>) -> u64 {
        if self.node != node {
            self.node = node;
            self.refresh_all();
        }
        self.publish()
    }

    /// Sets this node's zone, read by endpoints' zone hints. Returns the new generation.
    pub fn set_zone(&mut self, zone: Option<String>) -> u64 {
        if self.zone != zone {
            self.zone = zone;
            self.refresh_all();
        }
        self.publish()
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

    fn refresh_all(&mut self) {
        self.dirty = true;
        let mut names: BTreeSet<ServiceName> = self.services.keys().cloned().collect();
        names.extend(self.ports.keys().map(ServiceName::of));
        for name in names {
            self.refresh_one(&name);
        }
    }

    /// Re-reads one service, then every service that waited for what it let go, until none is
    /// left to wake. Each wake re-reads a service whose clash may be gone; a service is woken
    /// at most once per service re-read, so this ends.
    fn refresh(&mut self, name: ServiceName) {
        self.dirty = true;
        let mut queue = vec![name];
        let mut budget = self.services.len() + 1;
        while let Some(name) = queue.pop() {
            let released = self.refresh_one(&name);
            if released {
                if let Some(waiters) = self.waiting_on.remove(&name) {
                    // Reverse order: the queue pops from the end, and waiters wake in name order.
                    queue.extend(waiters.into_iter().rev());
                }
            }
            budget = budget.saturating_sub(1);
            if budget == 0 {
                break;
            }
        }
    }

    /// Re-reads one service: builds its ports, checks them, and admits each one that passes.
    /// Returns whether the service let go of anything it held (so waiters may now pass).
    fn refresh_one(&mut self, name: &ServiceName) -> bool {
        let admitted = self.admitted_ports(name);
        let candidates = self.candidates(name);

        // The service's own checks (names, families, duplicates, clashes between its ports)
        // run over its candidate ports together; the cross-service clashes against the index,
        // without the service's own old claims.
        for port in &admitted {
            self.claims.release(port);
        }
        let mut verdicts: BTreeMap<ServicePortName, Verdict> = BTreeMap::new();
        let mut duplicates = Vec::new();
        let mut by_name: BTreeMap<ServicePortName, Arc<ServicePort>> = BTreeMap::new();
        for port in candidates {
            if by_name.contains_key(&port.name) {
                duplicates.push(port.name.clone());
            } else {
                by_name.insert(port.name.clone(), port);
            }
        }
        let own_errors = self.own_errors(name, &by_name, &duplicates);
        let mut blockers = BTreeSet::new();
        for (port_name, port) in &by_name {
            let errors = own_errors.get(port_name).cloned().unwrap_or_default();
            if !errors.is_empty() {
                verdicts.insert(
                    port_name.clone(),
                    Verdict::Skip(SkipReason::Invalid, errors),
                );
                continue;
            }
            let unsupported = self.capabilities.check_port(&self.backend, port);
            if !unsupported.is_empty() {
                verdicts.insert(
                    port_name.clone(),
                    Verdict::Skip(SkipReason::Unsupported, unsupported),
                );
                continue;
            }
            let (clashes, holders) = self.claims.clashes(port);
            if clashes.is_empty() {
                verdicts.insert(port_name.clone(), Verdict::Admit(Arc::clone(port)));
            } else {
                blockers.extend(holders);
                verdicts.insert(port_name.clone(), Verdict::Skip(SkipReason::Clash, clashes));
            }
        }
        let previous: BTreeMap<ServicePortName, Arc<ServicePort>> = admitted
            .iter()
            .map(|p| (p.name.clone(), Arc::clone(p)))
            .collect();
        let effective = self.settle(name, verdicts, &previous);

        // Apply: the table, the claims, the skipped ports, the waiters.
        let mut released = false;
        for (port_name, old) in &previous {
            match effective.ports.get(port_name) {
                Some(new) if Arc::ptr_eq(new, old) => {}
                _ => released = true,
            }
            if !effective.ports.contains_key(port_name) {
                self.endpoint_count -= old.endpoints.len();
                self.ports.remove(port_name);
            }
        }
        for (port_name, port) in &effective.ports {
            self.claims.claim(port);
            let old = previous.get(port_name);
            if old.is_some_and(|old| Arc::ptr_eq(old, port)) {
                continue;
            }
            if let Some(old) = old {
                self.endpoint_count -= old.endpoints.len();
            }
            self.endpoint_count += port.endpoints.len();
            self.ports.insert(port_name.clone(), Arc::clone(port));
        }
        let stale: Vec<ServicePortName> = self
            .skipped
            .range(name.port("")..)
            .take_while(|(n, _)| n.namespace == name.namespace && n.name == name.name)
            .map(|(n, _)| n.clone())
            .collect();
        for port_name in stale {
            self.skipped.remove(&port_name);
        }
        for (port_name, skipped) in effective.skipped {
            self.skipped.insert(port_name, skipped);
        }
        if let Some(rejection) = self.rejected.get(name) {
            for port_name in &rejection.ports {
                self.skipped.insert(
                    port_name.clone(),
                    SkippedPort {
                        reason: SkipReason::Invalid,
                        problems: rejection.problems.clone(),
                        runs_previous: self.ports.contains_key(port_name),
                    },
                );
            }
        }
        for holder in blockers {
            self.waiting_on
                .entry(holder)
                .or_default()
                .insert(name.clone());
        }
        released
    }

    /// Decides each port: admitted as new, kept at its previous version, or left out. A new
    /// version that passed alone may still clash with a port of its own service kept at its
    /// previous version; then every changed port falls back to its previous version (or is left
    /// out), which is the last set of versions known to agree.
    fn settle(
        &self,
        name: &ServiceName,
        mut verdicts: BTreeMap<ServicePortName, Verdict>,
        previous: &BTreeMap<ServicePortName, Arc<ServicePort>>,
    ) -> Settled {
        let settled = Self::settle_once(&verdicts, previous);
        let mixed = settled
            .ports
            .keys()
            .any(|n| settled.skipped.contains_key(n));
        if !mixed {
            return settled;
        }
        let errors = self.own_errors(name, &settled.ports, &[]);
        if errors.is_empty() {
            return settled;
        }
        let all: Vec<FieldError> = errors.values().flatten().cloned().collect();
        for (port_name, verdict) in &mut verdicts {
            let Verdict::Admit(port) = verdict else {
                continue;
            };
            if previous.get(port_name).is_some_and(|old| **old == **port) {
                continue;
            }
            let problems = errors
                .get(port_name)
                .cloned()
                .unwrap_or_else(|| all.clone());
            *verdict = Verdict::Skip(SkipReason::Invalid, problems);
        }
        Self::settle_once(&verdicts, previous)
    }

    fn settle_once(
        verdicts: &BTreeMap<ServicePortName, Verdict>,
        previous: &BTreeMap<ServicePortName, Arc<ServicePort>>,
    ) -> Settled {
        let mut settled = Settled::default();
        for (port_name, verdict) in verdicts {
            match verdict {
                Verdict::Admit(port) => {
                    // Keep the old `Arc` when nothing changed, so the diff skips it.
                    let port = match previous.get(port_name) {
                        Some(old) if **old == **port => Arc::clone(old),
                        _ => Arc::clone(port),
                    };
                    settled.ports.insert(port_name.clone(), port);
                }
                Verdict::Skip(reason, problems) => {
                    let old = previous.get(port_name);
                    if let Some(old) = old {
                        settled.ports.insert(port_name.clone(), Arc::clone(old));
                    }
                    settled.skipped.insert(
                        port_name.clone(),
                        SkippedPort {
                            reason: *reason,
                            problems: problems.clone(),
                            runs_previous: old.is_some(),
                        },
                    );
                }
            }
        }
        settled
    }

    /// The service's own problems, by port: validation of its ports together. A problem of
    /// the whole service (its name) is every port's.
    fn own_errors(
        &self,
        name: &ServiceName,
        ports: &BTreeMap<ServicePortName, Arc<ServicePort>>,
        duplicates: &[ServicePortName],
    ) -> BTreeMap<ServicePortName, Vec<FieldError>> {
        let map: PortMap = ports
            .iter()
            .map(|(n, p)| (n.clone(), Arc::clone(p)))
            .collect();
        let Err(invalid) = validate(self.node.as_deref(), &map, duplicates) else {
            return BTreeMap::new();
        };
        let mut by_port: BTreeMap<ServicePortName, Vec<FieldError>> = BTreeMap::new();
        let service_wide = service_path(&name.port(""));
        for error in invalid.errors {
            let owner = ports.keys().find(|n| {
                let path = port_path(n);
                error.path == path || error.path.starts_with(&format!("{path}."))
            });
            match owner {
                Some(owner) => by_port.entry(owner.clone()).or_default().push(error),
                None if error.path.starts_with(&service_wide) => {
                    for port_name in ports.keys() {
                        by_port
                            .entry(port_name.clone())
                            .or_default()
                            .push(error.clone());
                    }
                }
                None => {}
            }
        }
        by_port
    }

    /// The service's ports in the table now.
    fn admitted_ports(&self, name: &ServiceName) -> Vec<Arc<ServicePort>> {
        self.ports
            .range(name.port("")..)
            .take_while(|(n, _)| n.namespace == name.namespace && n.name == name.name)
            .map(|(_, p)| Arc::clone(p))
            .collect()
    }

    /// The service's ports as its spec and slices describe them now (none when it is deleted).
    /// A rejected service keeps the ports it runs.
    fn candidates(&self, name: &ServiceName) -> Vec<Arc<ServicePort>> {
        if self.rejected.contains_key(name) {
            return self.admitted_ports(name);
        }
        let service = match self.services.get(name) {
            None => return Vec::new(),
            Some(Described::Ports(ports)) => {
                return ports
                    .iter()
                    .map(|port| {
                        normalized(port, &self.node, &self.zone).unwrap_or_else(|| Arc::clone(port))
                    })
                    .collect()
            }
            Some(Described::Service(service)) => service,
        };
        let slices = self.slices.get(name);
        service
            .ports
            .iter()
            .map(|spec| {
                let mut port =
                    ServicePort::new(name.port(spec.name.clone()), spec.protocol, spec.port);
                port.target_port = spec.target_port;
                port.node_port = spec.node_port;
                port.cluster_ips.clone_from(&service.cluster_ips);
                port.external_ips.clone_from(&service.external_ips);
                port.load_balancer_ips
                    .clone_from(&service.load_balancer_ips);
                port.load_balancer_source_ranges
                    .clone_from(&service.load_balancer_source_ranges);
                port.session_affinity = service.session_affinity;
                port.external_traffic_policy = service.external_traffic_policy;
                port.internal_traffic_policy = service.internal_traffic_policy;
                port.scheduler = service.scheduler;
                port.health_check_node_port = service.health_check_node_port;
                port.endpoints = self.endpoints_of(spec, slices);
                let port = Arc::new(port);
                normalized(&port, &self.node, &self.zone).unwrap_or(port)
            })
            .collect()
    }

    /// The endpoints of one service port, merged over the service's slices in name order. An
    /// endpoint in two slices counts once (the ready copy if one is; else the first), as
    /// kube-proxy's endpoint slice cache merges them; a copy within one slice is kept, so that
    /// validation reports it.
    fn endpoints_of(
        &self,
        spec: &ServicePortSpec,
        slices: Option<&BTreeMap<String, EndpointSlice>>,
    ) -> Vec<Endpoint> {
        let mut endpoints: Vec<Endpoint> = Vec::new();
        let mut seen: HashMap<EndpointKey, (usize, usize)> = HashMap::new();
        for (slice_index, slice) in slices.into_iter().flat_map(BTreeMap::values).enumerate() {
            let slice_port = if slice.ports.is_empty() {
                Some(spec.target_port)
            } else {
                slice
                    .ports
                    .iter()
                    .find(|p| p.name == spec.name)
                    .map(|p| p.port)
            };
            let Some(slice_port) = slice_port else {
                continue;
            };
            for endpoint in &slice.endpoints {
                let endpoint = self.endpoint(endpoint, endpoint.port.unwrap_or(slice_port));
                match seen.get(&endpoint.key()) {
                    Some((index, from)) if *from != slice_index => {
                        if endpoint.ready && !endpoints[*index].ready {
                            endpoints[*index] = endpoint;
                        }
                    }
                    _ => {
                        seen.insert(endpoint.key(), (endpoints.len(), slice_index));
                        endpoints.push(endpoint);
                    }
                }
            }
        }
        endpoints
    }

    fn endpoint(&self, endpoint: &SliceEndpoint, port: u16) -> Endpoint {
        let on_this_node = endpoint.node.is_some() && endpoint.node == self.node;
        Endpoint {
            addr: endpoint.addr,
            port,
            node: endpoint.node.clone(),
            is_local: endpoint.local.unwrap_or(on_this_node),
            ready: endpoint.ready,
            serving: endpoint.serving,
            terminating: endpoint.terminating,
            zone: endpoint.zone.clone(),
            weight: endpoint.weight,
            zone_hints: endpoint.zone_hints.clone(),
            node_hints: endpoint.node_hints.clone(),
        }
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

/// One candidate port's verdict before the service's ports are settled together.
#[derive(Debug)]
enum Verdict {
    Admit(Arc<ServicePort>),
    Skip(SkipReason, Vec<FieldError>),
}

/// A service's ports after settling: what runs, and what is skipped.
#[derive(Debug, Default)]
struct Settled {
    ports: BTreeMap<ServicePortName, Arc<ServicePort>>,
    skipped: BTreeMap<ServicePortName, SkippedPort>,
}
