//! The Kubernetes source (`kube-svcproxy`, `svcproxy --kubeconfig`): Services, EndpointSlices and
//! this Node, watched with kube-rs, each event fed to the change tracker ([`map`] reads the
//! objects). It holds no table logic of its own.
//!
//! - **Nothing is programmed before the first complete list of all three kinds** (kube-proxy
//!   waits for its informers to sync): [`KubeFeed::sync_initial`] feeds the tracker until each
//!   watcher has said `InitDone`, and only then does the sync loop start.
//! - **A relist is a change, never a reset.** kube-runtime's watcher lists again after a `410
//!   Gone` or a lost watch (`Init`, `InitApply`..., `InitDone`); objects are set as they come,
//!   and at `InitDone` the ones the new list no longer holds are deleted, nothing else. An API
//!   server that is down or slow only delays changes: the watcher retries with a backoff and
//!   the dataplane keeps what it has.

pub mod map;

use std::collections::HashSet;
use std::hash::Hash;
use std::path::PathBuf;
use std::pin::Pin;

use anyhow::Context as _;
use futures_util::{Stream, StreamExt as _};
use k8s_openapi::api::core::v1::{Node, Service as KubeService};
use k8s_openapi::api::discovery::v1::EndpointSlice as KubeSlice;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt as _;
use kube::{Api, Client};
use proxy_core::metrics::ProgrammingLatency;
use proxy_core::tracker::{ChangeTracker, ServiceName};
use tracing::{debug, info, warn};

use map::ServiceView;

use super::http::NodeEligibility;

/// Where the cluster is and who we are in it.
#[derive(Debug, Clone)]
pub struct KubeOptions {
    /// A kubeconfig file; `None`: the in-cluster config (or `$KUBECONFIG`, `~/.kube/config`).
    pub kubeconfig: Option<PathBuf>,
    /// This node's name (kube-proxy's `--hostname-override`, else the host name).
    pub node: String,
    /// Services labelled `service.kubernetes.io/service-proxy-name: <this>` are ours; without
    /// it, only unlabelled ones.
    pub proxy_name: Option<String>,
}

/// One event of one of the three watches (boxed: the objects are large, and of unequal size).
enum Update {
    Service(Box<Event<KubeService>>),
    Slice(Box<Event<KubeSlice>>),
    Node(Box<Event<Node>>),
    Failed(&'static str, watcher::Error),
}

type Updates = Pin<Box<dyn Stream<Item = Update> + Send>>;

/// The three watches and what they have told us.
pub struct KubeFeed {
    options: KubeOptions,
    updates: Updates,
    services: Relist<ServiceName>,
    slices: Relist<(ServiceName, String)>,
    nodes: Relist<String>,
    /// Whether this node takes load-balancer traffic (`/healthz`'s `nodeEligible`).
    eligibility: NodeEligibility,
    /// Slice changes' trigger times, for the network programming latency (once attached).
    latency: Option<ProgrammingLatency>,
    /// When this process started: earlier trigger times are not ours to measure (kube-proxy
    /// skips them too: a restart would report the whole downtime).
    started: std::time::SystemTime,
}

impl std::fmt::Debug for KubeFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeFeed")
            .field("options", &self.options)
            .field("services", &self.services.known.len())
            .field("slices", &self.slices.known.len())
            .finish_non_exhaustive()
    }
}

/// The keys of one kind: those applied, and during a relist those listed so far.
#[derive(Debug)]
struct Relist<K> {
    known: HashSet<K>,
    listing: Option<HashSet<K>>,
    synced: bool,
}

impl<K: Eq + Hash + Clone> Relist<K> {
    fn new() -> Self {
        Self {
            known: HashSet::new(),
            listing: None,
            synced: false,
        }
    }

    fn applied(&mut self, key: K) {
        if let Some(listing) = &mut self.listing {
            listing.insert(key.clone());
        }
        self.known.insert(key);
    }

    fn deleted(&mut self, key: &K) {
        self.known.remove(key);
    }

    /// The list is complete: what it did not hold, to delete.
    fn done(&mut self) -> Vec<K> {
        self.synced = true;
        let Some(listing) = self.listing.take() else {
            return Vec::new();
        };
        let gone: Vec<K> = self.known.difference(&listing).cloned().collect();
        self.known = listing;
        gone
    }
}

impl KubeFeed {
    /// This node's eligibility for load-balancer traffic, kept by the node watch, for the
    /// status server's `/healthz`.
    pub fn eligibility(&self) -> NodeEligibility {
        self.eligibility.clone()
    }

    /// From now on, records each EndpointSlice change's trigger time (the
    /// `endpoints.kubernetes.io/last-change-trigger-time` annotation) with the generation it
    /// made, for `kubeproxy_network_programming_duration_seconds`.
    pub fn track_programming_latency(&mut self, latency: ProgrammingLatency) {
        self.latency = Some(latency);
    }

    /// Records `slice`'s trigger time for `generation`, when it has one from after our start.
    fn record_trigger(&self, slice: &KubeSlice, generation: u64) {
        let Some(latency) = &self.latency else {
            return;
        };
        if let Some(at) = map::trigger_time(slice).filter(|at| *at >= self.started) {
            latency.record(generation, at);
        }
    }

    /// Connects and starts the three watches (nothing is read until they are polled).
    ///
    /// # Errors
    /// The kubeconfig cannot be read, or no client can be made from it.
    pub async fn connect(options: KubeOptions) -> anyhow::Result<KubeFeed> {
        let config = match &options.kubeconfig {
            Some(path) => {
                let kubeconfig = kube::config::Kubeconfig::read_from(path)
                    .with_context(|| format!("cannot read the kubeconfig {}", path.display()))?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                    .await
                    .with_context(|| format!("kubeconfig {}", path.display()))?
            }
            None => kube::Config::infer()
                .await
                .context("no in-cluster config and no kubeconfig (--kubeconfig)")?,
        };
        let client = Client::try_from(config).context("cannot make a Kubernetes client")?;
        let services = watcher(
            Api::<KubeService>::all(client.clone()),
            watcher::Config::default(),
        )
        .map(|item| match item {
            Ok(event) => Update::Service(Box::new(event)),
            Err(error) => Update::Failed("services", error),
        });
        let slices = watcher(
            Api::<KubeSlice>::all(client.clone()),
            watcher::Config::default(),
        )
        .map(|item| match item {
            Ok(event) => Update::Slice(Box::new(event)),
            Err(error) => Update::Failed("endpointslices", error),
        });
        let node_config =
            watcher::Config::default().fields(&format!("metadata.name={}", options.node));
        let nodes = watcher(Api::<Node>::all(client), node_config).map(|item| match item {
            Ok(event) => Update::Node(Box::new(event)),
            Err(error) => Update::Failed("nodes", error),
        });
        let updates: Updates = Box::pin(futures_util::stream::select_all([
            services.boxed(),
            slices.boxed(),
            nodes.boxed(),
        ]));
        Ok(KubeFeed {
            options,
            updates,
            services: Relist::new(),
            slices: Relist::new(),
            nodes: Relist::new(),
            eligibility: NodeEligibility::default(),
            latency: None,
            started: std::time::SystemTime::now(),
        })
    }

    /// Whether every kind has been listed whole at least once.
    fn synced(&self) -> bool {
        self.services.synced && self.slices.synced && self.nodes.synced
    }

    /// Feeds the tracker until each kind has been listed whole once (one generation), the node's
    /// name set first. Waits as long as that takes: an API server that is away is retried.
    pub async fn sync_initial(&mut self, tracker: &mut ChangeTracker) {
        if let Err(error) = tracker.set_node(Some(self.options.node.clone())) {
            warn!(%error, "node name refused");
        }
        let mut batch = tracker.batch();
        while !self.synced() {
            let Some(update) = self.updates.next().await else {
                return;
            };
            self.apply(&mut batch, update);
        }
        drop(batch);
        info!(
            services = self.services.known.len(),
            endpoint_slices = self.slices.known.len(),
            "Kubernetes objects listed; syncing"
        );
    }

    /// Follows the watches forever.
    pub async fn follow(mut self, mut tracker: ChangeTracker) {
        while let Some(update) = self.updates.next().await {
            self.apply(&mut tracker, update);
        }
        warn!("the Kubernetes watches ended");
    }

    fn apply(&mut self, tracker: &mut ChangeTracker, update: Update) {
        match update {
            Update::Service(event) => self.service_event(tracker, *event),
            Update::Slice(event) => self.slice_event(tracker, *event),
            Update::Node(event) => self.node_event(tracker, *event),
            Update::Failed(kind, error) => {
                // The watcher retries (with a backoff) and lists again if it must.
                warn!(kind, %error, "Kubernetes watch failed; retrying, the dataplane keeps what it has");
            }
        }
    }

    fn service_event(&mut self, tracker: &mut ChangeTracker, event: Event<KubeService>) {
        match event {
            Event::Init => self.services.listing = Some(HashSet::new()),
            Event::Apply(service) | Event::InitApply(service) => {
                let name = map::service_name(&service);
                match map::service(&service, self.options.proxy_name.as_deref()) {
                    ServiceView::Ours(service) => {
                        tracker.set_service(service);
                    }
                    ServiceView::Skipped(why) => {
                        debug!(service = %name, why, "service skipped");
                        tracker.delete_service(&name);
                    }
                    ServiceView::Invalid(problems) => {
                        warn!(service = %name, problems = ?problems.iter().map(ToString::to_string).collect::<Vec<_>>(), "service refused; its last good version keeps running");
                        let ports = tracker.port_names(&name);
                        tracker.reject_service(name.clone(), ports, problems);
                    }
                }
                self.services.applied(name);
            }
            Event::Delete(service) => {
                let name = map::service_name(&service);
                tracker.delete_service(&name);
                self.services.deleted(&name);
            }
            Event::InitDone => {
                for name in self.services.done() {
                    tracker.delete_service(&name);
                }
            }
        }
    }

    fn slice_event(&mut self, tracker: &mut ChangeTracker, event: Event<KubeSlice>) {
        match event {
            Event::Init => self.slices.listing = Some(HashSet::new()),
            Event::Apply(kube_slice) | Event::InitApply(kube_slice) => {
                let Some(key) = map::slice_key(&kube_slice) else {
                    return;
                };
                let generation = match map::endpoint_slice(&kube_slice) {
                    Some(slice) => {
                        self.slices.applied(key);
                        tracker.set_endpoint_slice(slice)
                    }
                    None => {
                        self.slices.deleted(&key);
                        tracker.delete_endpoint_slice(&key.0, &key.1)
                    }
                };
                self.record_trigger(&kube_slice, generation);
            }
            Event::Delete(kube_slice) => {
                if let Some(key) = map::slice_key(&kube_slice) {
                    self.slices.deleted(&key);
                    let generation = tracker.delete_endpoint_slice(&key.0, &key.1);
                    self.record_trigger(&kube_slice, generation);
                }
            }
            Event::InitDone => {
                for (service, slice) in self.slices.done() {
                    tracker.delete_endpoint_slice(&service, &slice);
                }
            }
        }
    }

    fn node_event(&mut self, tracker: &mut ChangeTracker, event: Event<Node>) {
        match event {
            Event::Init => self.nodes.listing = Some(HashSet::new()),
            Event::Apply(node) | Event::InitApply(node) => {
                let zone = map::node_zone(&node);
                if tracker.table().zone() != zone.as_deref() {
                    if let Err(error) = tracker.set_zone(zone) {
                        warn!(%error, "node zone refused");
                    }
                }
                self.set_eligible(map::node_eligible(&node));
                self.nodes
                    .applied(node.metadata.name.clone().unwrap_or_default());
            }
            Event::Delete(node) => {
                // As kube-proxy: a node that is gone takes no new load-balancer traffic.
                self.set_eligible(false);
                self.nodes
                    .deleted(&node.metadata.name.clone().unwrap_or_default());
            }
            Event::InitDone => {
                self.nodes.done();
            }
        }
    }
}

impl KubeFeed {
    fn set_eligible(&self, eligible: bool) {
        if self.eligibility.set(eligible) {
            if eligible {
                info!(node = %self.options.node, "node eligible for load-balancer traffic again: /healthz follows the sync");
            } else {
                warn!(node = %self.options.node, "node being deleted or tainted {}: /healthz answers 503 so that load balancers drain it", map::TO_BE_DELETED_TAINT);
            }
        }
    }
}

/// kube-runtime's watcher with its default backoff: failures are retried, not fatal.
fn watcher<K>(
    api: Api<K>,
    config: watcher::Config,
) -> impl Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    watcher::watcher(api, config).default_backoff()
}
