//! [`IpvsDataplane`]: the [`Dataplane`] over IPVS, the dummy interface and the companions.
//!
//! One sync, on a blocking thread (every kernel call blocks): model, observe, plan, apply.
//!
//! 0. the first sync (or cleanup) opens the kernel connections, on its thread (see [`kernel`]);
//!    later ones check that they run in the same network namespace;
//! 1. the desired state: computed whole (full), or followed port by port with the sync loop's
//!    changes (`SyncRequest::changes`, see [`desired`]: a partial sync costs what changed,
//!    whatever the table's size);
//! 2. on a full sync, make sure the dummy interface exists and is up and read its addresses
//!    (they say which virtual servers are ours, see [`crate::observe`]);
//! 3. read our virtual servers from the kernel (full), or trust the applied state and re-read
//!    only the draining ones (partial): the [`Observed`] state;
//! 4. plan every effect, pure ([`plan_sync`](crate::plan::plan_sync): VIP binds, IPVS
//!    operations, VIP unbinds, the companions, the UDP flows to clean, the draining list);
//! 5. apply them in order, each through its handle ([`handles`], [`run`]).
//!
//! A failed operation is reported as a problem and the next sync is upgraded to full.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use nf_conntrack::{ConntrackOps, Netlink as NetlinkConntrack};
use prometheus_client::registry::Registry;
use proxy_core::dataplane::{
    Capabilities, CleanupReport, DryRun, SyncMode, SyncProblem, SyncReport, SyncRequest,
};
use proxy_core::diff::ChangeSet;
use proxy_core::node_addresses::{node_port_ips, NodeAddresses};
use proxy_core::table::{Protocol, Scheduler, ServiceTable};
use proxy_core::{Dataplane, DataplaneError};
use tracing::{debug, debug_span, warn};

use crate::cleanup::cleanup_owned;
use crate::config::IpvsConfig;
use crate::error::BackendError;
use crate::metrics::Metrics;
use crate::observe::observe_owned;
use crate::ops::IpvsOps;
use crate::plan::{
    plan, plan_desired, plan_desired_on, render_state, Desired, Draining, IpvsState, Observed,
};
use audit::DriftAudit;
use desired::DesiredCache;
use handles::Handles;
use kernel::Kernel;
use run::Outcome;

/// The backend's name in logs, metrics and reports.
pub const NAME: &str = "ipvs";

/// The IPVS dataplane. See the crate docs for what it owns.
#[derive(Debug)]
pub struct IpvsDataplane {
    core: Arc<Mutex<Core>>,
    /// The core's config, also kept here so that a dry run never waits for a sync.
    config: IpvsConfig,
    /// Whether the companions are programmed (never over [`IpvsDataplane::with_ops`]).
    has_companions: bool,
    metrics: Metrics,
    /// Where the node's addresses come from (also in the core, which plans with them).
    node_addresses: NodeAddresses,
}

/// Everything a sync reads and writes, moved to the blocking thread and back: the config, what
/// we know of the kernel, what we act through, and what we keep from one sync to the next.
#[derive(Debug)]
struct Core {
    config: IpvsConfig,
    /// Where the node's addresses come from: node ports are planned on them.
    node_addresses: NodeAddresses,
    observed: Observed,
    handles: Handles,
    /// The desired state of the last sync's table.
    desired: DesiredCache,
    /// Where the drift check's rolling audit of real servers goes on.
    audit: DriftAudit,
    needs_full: bool,
}

impl IpvsDataplane {
    /// The dataplane on the real kernel: IPVS over generic netlink, the dummy interface over
    /// rtnetlink, ctnetlink for the flows of deleted UDP real servers and (if configured) the
    /// companions. Only checks `config`: nothing is opened until the first sync or cleanup,
    /// which opens it all on the thread it runs on, so in that thread's network namespace (see
    /// the crate docs). A dry run needs neither root nor IPVS.
    ///
    /// # Errors
    /// [`BackendError::Config`] for a bad config. A kernel without IPVS is reported by the
    /// first sync ([`IpvsError::Unavailable`](crate::IpvsError::Unavailable)).
    pub fn new(config: IpvsConfig) -> Result<Self, BackendError> {
        config.validate()?;
        let has_companions = config.manage_companions;
        Ok(
            Self::from_parts(config, Kernel::Pending { ipvs: None }, has_companions)
                .with_conntrack(Arc::new(NetlinkConntrack)),
        )
    }

    /// Everything [`IpvsDataplane::new`] programs (the dummy interface, the companions, the
    /// conntrack clean-up) but IPVS itself, which goes through `ipvs`. With a fake, this
    /// measures at host speed what a sync costs besides the kernel's IPVS work, on a kernel
    /// without IPVS (`bench ipvs --backends ipvs-fake-kernel`). Opens its sockets at first
    /// use, as [`IpvsDataplane::new`] does.
    ///
    /// # Errors
    /// [`BackendError::Config`] for a bad config.
    pub fn with_kernel_parts(
        config: IpvsConfig,
        ipvs: Arc<dyn IpvsOps>,
    ) -> Result<Self, BackendError> {
        config.validate()?;
        let has_companions = config.manage_companions;
        let kernel = Kernel::Pending { ipvs: Some(ipvs) };
        Ok(Self::from_parts(config, kernel, has_companions)
            .with_conntrack(Arc::new(NetlinkConntrack)))
    }

    /// A dataplane over any [`IpvsOps`] (a fake in tests), with no dummy interface, no
    /// companions and no conntrack clean-up: ownership then rests on what this dataplane
    /// created. Opens nothing of its own.
    ///
    /// # Errors
    /// [`BackendError::Config`] for a bad config.
    pub fn with_ops(config: IpvsConfig, ipvs: Arc<dyn IpvsOps>) -> Result<Self, BackendError> {
        config.validate()?;
        let kernel = Kernel::Open { ipvs, netns: None };
        Ok(Self::from_parts(config, kernel, false))
    }

    fn from_parts(config: IpvsConfig, kernel: Kernel, has_companions: bool) -> Self {
        // No list configured: the node's own addresses, followed; but over a fake IPVS
        // (`with_ops`, which opens nothing of its own) the configured list, empty or not.
        let is_fake = matches!(kernel, Kernel::Open { .. });
        let node_addresses = if config.node_addresses.is_empty() && !is_fake {
            NodeAddresses::kernel()
        } else {
            NodeAddresses::fixed(config.node_addresses.iter().copied())
        };
        IpvsDataplane {
            core: Arc::new(Mutex::new(Core {
                config: config.clone(),
                node_addresses: node_addresses.clone(),
                observed: Observed::default(),
                handles: Handles::new(kernel, has_companions),
                desired: DesiredCache::default(),
                audit: DriftAudit::new(),
                needs_full: true,
            })),
            config,
            has_companions,
            metrics: Metrics::default(),
            node_addresses,
        }
    }

    /// The same dataplane, with node ports on the addresses of `source` (filtered by
    /// [`IpvsConfig::node_port_addresses`], less those on our interface) instead of those the
    /// config names: an embedder feeds them by hand with [`NodeAddresses::manual`]. The sync
    /// loop follows the source ([`Dataplane::node_addresses`]): each change plans again only
    /// the service ports that depend on the addresses ([`Desired::readdress`]).
    #[must_use]
    pub fn with_node_addresses(mut self, source: NodeAddresses) -> Self {
        self.lock().node_addresses = source.clone();
        self.node_addresses = source;
        self
    }

    /// The capabilities of this backend (also [`Dataplane::capabilities`]). Source ranges need
    /// the companion rules.
    ///
    /// A service port's idle timeout ([`proxy_core::table::ServicePort::idle_timeout`]) is
    /// ignored, not refused: IPVS keeps one set of connection timeouts per network namespace
    /// (`ipvsadm --set tcp tcpfin udp`, `IPVS_CMD_SET_TIMEOUT` in `net/netfilter/ipvs/ip_vs_ctl.c`),
    /// none per virtual server; [`crate::IpvsConfig::timeouts`] sets them.
    pub fn supported(manage_companions: bool) -> Capabilities {
        Capabilities {
            protocols: Protocol::ALL.into_iter().collect(),
            schedulers: Scheduler::ALL
                .into_iter()
                .filter(|s| *s != Scheduler::Random)
                .collect(),
            session_affinity: true,
            local_traffic_policy: true,
            load_balancer_source_ranges: manage_companions,
            node_ports: true,
            ipv6: true,
        }
    }

    /// The same dataplane, deleting the conntrack entries of deleted UDP real servers through
    /// `ops` after each sync ([`crate::flows`]; [`IpvsDataplane::new`] uses ctnetlink, tests a
    /// fake).
    #[must_use]
    pub fn with_conntrack(self, ops: Arc<dyn ConntrackOps>) -> Self {
        self.lock().handles.conntrack = Some(ops);
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Core> {
        // Every field is replaced whole by a sync; a panic mid-way leaves `needs_full` set.
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What IPVS should hold for `table` under this dataplane's config.
    pub fn desired(&self, table: &ServiceTable) -> Desired {
        plan_desired(table, &self.config)
    }

    /// The state our last sync left, as we recorded it.
    pub fn applied(&self) -> IpvsState {
        self.lock().observed.applied.clone()
    }

    /// What a full sync to `table` would do now, against the state our last sync left, without
    /// doing it (tests; [`Dataplane::dry_run`] renders the desired state instead).
    pub fn plan(&self, table: &ServiceTable) -> crate::plan::Plan {
        let core = self.lock();
        let desired = plan_desired(table, &core.config);
        plan(
            &desired.state,
            &core.observed.applied,
            &core.observed.draining,
            Instant::now(),
            core.config.graceful_termination,
        )
    }

    /// Our virtual servers as the kernel holds them now, with connection counts: compare with
    /// [`IpvsDataplane::applied`] to see drift. Opens the kernel connections on this thread if
    /// no sync has yet.
    ///
    /// # Errors
    /// [`BackendError`] when the kernel or the interface cannot be read.
    pub fn observe(&self) -> Result<IpvsState, BackendError> {
        let mut core = self.lock();
        let core = &mut *core;
        let ipvs = core.handles.ipvs(&core.config)?;
        let mut ownership = core.observed.ownership.clone();
        if let (Some(link), Some(index)) = (&core.handles.link, core.observed.link_index) {
            ownership.bound = link
                .vips(index, core.config.vip_binding)?
                .into_iter()
                .collect();
        }
        Ok(observe_owned(ipvs.as_ref(), &ownership)?)
    }

    /// The real servers draining now.
    pub fn draining(&self) -> Draining {
        self.lock().observed.draining.clone()
    }

    /// Waits for the clean-up of stale UDP conntrack entries that the last sync started (it
    /// runs off the sync's path); `Some` with the problem if it failed. The next sync waits
    /// for it too and reports the problem itself, so only tests and shutdown need this.
    pub fn wait_for_flow_cleanup(&self) -> Option<SyncProblem> {
        self.lock().handles.finish_flow_cleanup()
    }

    /// Syncs on this thread, at time `now` (tests pass a fake clock). [`Dataplane::sync`] runs
    /// this on a blocking thread with `Instant::now()`. The first sync opens the kernel
    /// connections in this thread's network namespace.
    ///
    /// # Errors
    /// [`BackendError`] when the kernel connections cannot be opened (no IPVS:
    /// [`IpvsError::Unavailable`](crate::IpvsError::Unavailable)), this thread is in another
    /// network namespace than the first sync's ([`BackendError::Namespace`]), or the kernel
    /// state cannot be read or the interface set up; failed operations are problems in the
    /// report instead.
    pub fn sync_at(
        &self,
        request: &SyncRequest<'_>,
        now: Instant,
    ) -> Result<SyncReport, BackendError> {
        let started = Instant::now();
        let changes = (request.mode == SyncMode::Partial).then_some(request.changes);
        let outcome = self
            .lock()
            .sync(request.desired, changes, request.mode, now);
        let mut report = SyncReport::for_request(request);
        report.duration = started.elapsed();
        let outcome = outcome?;
        report.mode = outcome.mode;
        report.objects_written = outcome.written;
        self.metrics.record_sync(&outcome.stats(report.duration));
        report.problems = outcome.problems;
        Ok(report)
    }

    /// Removes every virtual server of ours, our interface, our sets and rules, on this thread
    /// (opening the kernel connections here if no sync has yet).
    ///
    /// # Errors
    /// As [`IpvsDataplane::sync_at`] for the connections; then the first failure: what could be
    /// removed was.
    pub fn cleanup_now(&self) -> Result<CleanupReport, BackendError> {
        self.lock().cleanup()
    }

    /// [`Dataplane::dry_run`] without the capability check: the desired state as an
    /// `ipvsadm -Ln`-style listing under a summary line, and the problems a sync would report.
    fn render_dry_run(&self, table: &ServiceTable) -> DryRun {
        // The addresses known now (no I/O: a source not started yet has none).
        let node_ips = node_port_ips(
            &self.node_addresses.current(),
            &self.config.node_port_addresses,
            None,
        );
        let desired = plan_desired_on(table, &self.config, node_ips);
        let mut rendered = format!(
            "# ipvs backend: {} virtual server(s) for {} service port(s), {} endpoint(s); VIPs on {}\n",
            desired.state.services.len(),
            table.len(),
            table.endpoint_count(),
            self.config.interface
        );
        rendered.push_str(&render_state(&desired));
        DryRun {
            rendered,
            problems: desired.problems(),
        }
    }
}

impl Core {
    /// Whether what our last sync left has drifted: the first and the last of our virtual
    /// servers are still there (two `IPVS_CMD_GET_SERVICE` requests, whatever the table's size:
    /// an `ipvsadm -C` or a deleted service), our interface is (one rtnetlink request), and a
    /// slice of our virtual servers, audited in turn, still has the attributes and real servers
    /// we applied (see [`DriftAudit`]: a real server changed by hand). Before the first sync
    /// (nothing opened, nothing applied) there is nothing to lose.
    ///
    /// # Errors
    /// A request that could not be made.
    fn find_drift(&mut self) -> Result<bool, BackendError> {
        let applied = &self.observed.applied;
        if applied.services.is_empty() || self.handles.is_pending() {
            return Ok(false);
        }
        let ipvs = self.handles.ipvs(&self.config)?;
        let probes = [
            applied.services.keys().next(),
            applied.services.keys().next_back(),
        ];
        for key in probes.into_iter().flatten() {
            if ipvs.virtual_server(key)?.is_none() {
                return Ok(true);
            }
        }
        if let (Some(link), Some(index)) = (&self.handles.link, self.observed.link_index) {
            if link.link_index(&self.config.interface)? != Some(index) {
                return Ok(true);
            }
        }
        self.audit.audit(ipvs.as_ref(), applied)
    }

    /// The node addresses node ports go on now: the source's, within
    /// [`IpvsConfig::node_port_addresses`], less those on our interface (VIPs we bound; before
    /// the first sync has found the interface, asked for by name).
    fn node_ips(&self) -> BTreeSet<IpAddr> {
        let ours = self.observed.link_index.or_else(|| {
            let link = self.handles.link.as_ref()?;
            link.link_index(&self.config.interface).ok().flatten()
        });
        if let Some(index) = ours {
            // Our VIPs then cost the watcher nothing (no wake-up, no place in the set).
            self.node_addresses.exclude_link(index);
        }
        node_port_ips(
            &self.node_addresses.current(),
            &self.config.node_port_addresses,
            ours,
        )
    }

    /// Syncs to `table`: partial (following `changes`, the changes from the last sync's table)
    /// when asked for and nothing forces a full one.
    fn sync(
        &mut self,
        table: &ServiceTable,
        changes: Option<&ChangeSet>,
        requested: SyncMode,
        now: Instant,
    ) -> Result<Outcome, BackendError> {
        let result = self.try_sync(table, changes, requested, now);
        if result.is_err() {
            self.needs_full = true;
        }
        result
    }

    fn try_sync(
        &mut self,
        table: &ServiceTable,
        changes: Option<&ChangeSet>,
        requested: SyncMode,
        now: Instant,
    ) -> Result<Outcome, BackendError> {
        let ipvs = debug_span!("connect").in_scope(|| self.handles.ipvs(&self.config))?;
        // The first sync of a source that follows the kernel dumps the node's addresses (in
        // this thread's namespace); if it cannot, node ports wait for a later sync.
        let address_problem = self.node_addresses.start().err().map(|e| {
            let cause = std::error::Error::source(&e)
                .map(|source| format!(": {source}"))
                .unwrap_or_default();
            SyncProblem::new("node addresses", format!("{e}{cause}"))
        });
        let partial = requested == SyncMode::Partial && !self.needs_full;
        let changes = changes.filter(|_| partial);
        let started = Instant::now();
        let node_ips = self.node_ips();
        let (desired, touched) = debug_span!("desired", partial)
            .in_scope(|| self.desired.take(table, changes, node_ips, &self.config));
        debug!(
            partial,
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "IPVS desired state"
        );
        let result = self
            .sync_desired(ipvs.as_ref(), &desired, touched.as_ref(), now)
            .map(|mut outcome| {
                outcome.problems.extend(address_problem);
                outcome
            });
        self.desired.store(table, desired);
        result
    }

    fn cleanup(&mut self) -> Result<CleanupReport, BackendError> {
        let ipvs = self.handles.ipvs(&self.config)?;
        if let Some(problem) = self.handles.finish_flow_cleanup() {
            warn!(%problem, "stale UDP flows");
        }
        let handles = &mut self.handles;
        let result = cleanup_owned(
            ipvs.as_ref(),
            handles.link.as_deref(),
            &self.config.interface,
            handles
                .companions
                .as_mut()
                .map(|c| &mut **c as &mut dyn crate::apply::CompanionOps),
            &self.observed.ownership.created,
        );
        self.observed = Observed::default();
        self.desired.clear();
        self.needs_full = true;
        result.map(|objects_removed| CleanupReport { objects_removed })
    }
}

#[async_trait]
impl Dataplane for IpvsDataplane {
    fn name(&self) -> &'static str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        Self::supported(self.has_companions)
    }

    async fn sync(&mut self, request: SyncRequest<'_>) -> Result<SyncReport, DataplaneError> {
        // On the runtime's blocking pool, whose threads start in the network namespace of the
        // thread that spawned them (the runtime's): the first sync opens the kernel connections
        // there, and a later one from another namespace fails instead of mixing two.
        let started = Instant::now();
        let table = request.desired.clone();
        let core = Arc::clone(&self.core);
        let mode = request.mode;
        // Only a partial sync follows the changes (a full one plans the table whole).
        let changes = (mode == SyncMode::Partial).then(|| request.changes.clone());
        let outcome = tokio::task::spawn_blocking(move || {
            core.lock().unwrap_or_else(|e| e.into_inner()).sync(
                &table,
                changes.as_ref(),
                mode,
                Instant::now(),
            )
        })
        .await
        .map_err(|e| DataplaneError::backend(NAME, BackendError::Task(e.to_string())))?
        .map_err(|e| DataplaneError::backend(NAME, e))?;
        let mut report = SyncReport::for_request(&request);
        report.mode = outcome.mode;
        report.objects_written = outcome.written;
        report.duration = started.elapsed();
        self.metrics.record_sync(&outcome.stats(report.duration));
        report.problems = outcome.problems;
        debug!(
            service_ports = report.service_ports,
            written = report.objects_written,
            problems = report.problems.len(),
            "sync complete"
        );
        Ok(report)
    }

    /// See `Core::find_drift`: two virtual-server lookups and one link lookup, on the
    /// blocking pool as the syncs.
    async fn check_drift(&mut self) -> Result<bool, DataplaneError> {
        let core = Arc::clone(&self.core);
        tokio::task::spawn_blocking(move || {
            core.lock().unwrap_or_else(|e| e.into_inner()).find_drift()
        })
        .await
        .map_err(|e| DataplaneError::backend(NAME, BackendError::Task(e.to_string())))?
        .map_err(|e| DataplaneError::backend(NAME, e))
    }

    async fn cleanup(&mut self) -> Result<CleanupReport, DataplaneError> {
        let core = Arc::clone(&self.core);
        tokio::task::spawn_blocking(move || {
            core.lock().unwrap_or_else(|e| e.into_inner()).cleanup()
        })
        .await
        .map_err(|e| DataplaneError::backend(NAME, BackendError::Task(e.to_string())))?
        .map_err(|e| DataplaneError::backend(NAME, e))
    }

    /// The desired state as an `ipvsadm -Ln`-style listing (each virtual server's service port,
    /// kind and verdict as a comment) under a summary line, and the VIPs to bind; pure, so it
    /// needs neither root nor IPVS.
    ///
    /// # Errors
    /// [`DataplaneError::Unsupported`] when the table asks for what this backend lacks (the
    /// `random` scheduler; source ranges without the companions), as a sync loop would.
    fn dry_run(&self, table: &ServiceTable) -> Result<DryRun, DataplaneError> {
        self.capabilities().check(NAME, table)?;
        Ok(self.render_dry_run(table))
    }

    /// Registers [`Metrics`] in `registry` (the root: kube-proxy's series under `kubeproxy`,
    /// ours under `svcproxy`) and records into them from now on.
    fn register_metrics(&mut self, registry: &mut Registry) {
        self.metrics = Metrics::register(registry);
    }

    /// The source node ports follow: the sync loop runs a partial sync after each change.
    fn node_addresses(&self) -> Option<NodeAddresses> {
        Some(self.node_addresses.clone())
    }
}

mod audit;
mod desired;
mod handles;
mod kernel;
mod run;
#[cfg(test)]
mod tests;
