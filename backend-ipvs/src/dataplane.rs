//! [`IpvsDataplane`]: the [`Dataplane`] over IPVS, the dummy interface and the companions.
//!
//! One sync, on a blocking thread (every kernel call blocks):
//!
//! 0. the first sync (or cleanup) opens the kernel connections, on its thread (see [`kernel`]);
//!    later ones check that they run in the same network namespace;
//! 1. the desired state: computed whole (full), or updated port by port from the difference
//!    between the last table and this one (partial: [`Desired::update`], so a partial sync
//!    costs what changed, whatever the table's size);
//! 2. on a full sync, make sure the dummy interface exists and is up and read its addresses
//!    (they say which virtual servers are ours, see [`crate::observe`]);
//! 3. read our virtual servers from the kernel (full), or trust the applied state and re-read
//!    only the draining ones (partial);
//! 4. bind the new VIPs, [`plan`](crate::plan::plan) (partial: only the touched virtual
//!    servers), [`apply`](crate::apply::apply_ops), then unbind the VIPs no longer used;
//! 5. write the companion ipsets (partial: only the touched entries) and rules (if managed).
//!
//! A failed operation is reported as a problem and the next sync is upgraded to full.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use nf_conntrack::{ConntrackOps, Netlink as NetlinkConntrack};
use prometheus_client::registry::Registry;
use proxy_core::dataplane::{
    Capabilities, CleanupReport, DryRun, SyncMode, SyncProblem, SyncReport, SyncRequest,
};
use proxy_core::node_addresses::{node_port_ips, NodeAddresses};
use proxy_core::table::{Protocol, Scheduler, ServicePortName, ServiceTable};
use proxy_core::{diff, Dataplane, DataplaneError};
use tracing::{debug, debug_span, info, warn};

use crate::apply::apply_ops;
use crate::cleanup::cleanup_owned;
use crate::companions::Companions;
use crate::config::IpvsConfig;
use crate::error::BackendError;
use crate::flows::{clear_udp_flows, StaleUdpFlows};
use crate::link::RouteSocket;
use crate::metrics::{Metrics, SyncStats};
use crate::model::{RealServer, ServiceKey};
use crate::observe::{observe_owned, refresh_services, Ownership};
use crate::ops::IpvsOps;
use crate::plan::{
    plan, plan_desired, plan_desired_on, plan_keys, render_state, Desired, Draining, IpvsState, Op,
    Touched,
};
use kernel::{check_netns, Kernel};

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

/// Everything a sync reads and writes, moved to the blocking thread and back.
#[derive(Debug)]
struct Core {
    config: IpvsConfig,
    /// The IPVS client, or how to open it (with `link` and `companions`) at first use.
    kernel: Kernel,
    /// Whether `companions` is to be opened with the kernel connections.
    has_companions: bool,
    link: Option<RouteSocket>,
    companions: Option<Companions>,
    /// Where the conntrack entries of deleted UDP real servers are deleted; `None`: not at all.
    conntrack: Option<Arc<dyn ConntrackOps>>,
    applied: IpvsState,
    draining: Draining,
    ownership: Ownership,
    needs_full: bool,
    /// The table the desired state was last computed for, and that state.
    cache: Option<(ServiceTable, Desired)>,
    /// The index of our dummy interface, once known.
    link_index: Option<u32>,
    /// The one-owner locks taken when the kernel connections were opened, held until the
    /// dataplane is dropped (see [`kernel`]).
    owner: Vec<proxy_core::lock::DataplaneLock>,
    /// The clean-up of stale UDP flows started by the last sync, still running or not yet
    /// joined: its failure is a problem of the first sync after it ended (or of the sync that
    /// starts the next one, which waits for it).
    flow_cleanup: Option<std::thread::JoinHandle<Option<SyncProblem>>>,
    /// Where the drift check's rolling audit of real servers goes on (see [`DriftAudit`]).
    audit: DriftAudit,
    /// Where the node's addresses come from: node ports are planned on them.
    node_addresses: NodeAddresses,
}

/// The drift check's rolling audit: each check compares a slice of our virtual servers (their
/// attributes and real servers) with what the kernel holds, picking up after the last slice and
/// wrapping around. IPVS has no generation number to compare, and a real server changed by hand
/// (`ipvsadm -e`, `-d`, `-a`) is visible only by dumping that virtual server, so the slice is
/// sized to a time budget: the whole table each check while it fits (a small table: found
/// within one check period), a sweep over several checks when it does not (10,000 virtual
/// servers take a few periods), and never more than [`DriftAudit::BUDGET`] of work a check.
#[derive(Debug, Clone)]
struct DriftAudit {
    /// The first key of the next slice; `None`: start from the first.
    next: Option<ServiceKey>,
    /// How many virtual servers the next slice holds.
    batch: usize,
}

impl DriftAudit {
    /// Work a check may spend on the audit: 40 ms every 2 s period is 2 % of one core.
    const BUDGET: std::time::Duration = std::time::Duration::from_millis(40);
    /// The first slice, before any measurement, and the floor (so a slow moment cannot stall
    /// the sweep).
    const FIRST_BATCH: usize = 256;
    const MIN_BATCH: usize = 32;

    fn new() -> Self {
        DriftAudit {
            next: None,
            batch: Self::FIRST_BATCH,
        }
    }

    /// The keys of the next slice of `applied`, wrapping around, and where the one after starts.
    fn slice(&self, applied: &IpvsState) -> (Vec<ServiceKey>, Option<ServiceKey>) {
        let services = &applied.services;
        let batch = self.batch.min(services.len());
        let start = self
            .next
            .as_ref()
            .filter(|key| services.range(*key..).next().is_some());
        let from_start = match start {
            Some(key) => services.range(key..),
            None => services.range(..),
        };
        let mut keys: Vec<ServiceKey> = from_start.map(|(k, _)| *k).take(batch).collect();
        if keys.len() < batch {
            // Wrap around, stopping before the slice's own first key.
            let first = keys.first().cloned();
            keys.extend(
                services
                    .keys()
                    .take_while(|k| Some(*k) != first.as_ref())
                    .take(batch - keys.len())
                    .cloned(),
            );
        }
        let next = keys.last().and_then(|last| {
            services
                .range((std::ops::Bound::Excluded(last), std::ops::Bound::Unbounded))
                .next()
                .map(|(k, _)| *k)
        });
        (keys, next)
    }

    /// Sizes the next slice from what this one cost.
    fn measured(&mut self, audited: usize, took: std::time::Duration) {
        if audited == 0 {
            return;
        }
        // Keys that fit the budget at this slice's cost per key (integer nanoseconds: exact).
        let took = took.as_nanos().max(1);
        let fits = Self::BUDGET.as_nanos() * audited as u128 / took;
        let fits = usize::try_from(fits).unwrap_or(usize::MAX);
        self.batch = fits.max(Self::MIN_BATCH);
    }
}

/// What one blocking sync did.
#[derive(Debug)]
struct Outcome {
    mode: SyncMode,
    written: usize,
    failed_ops: usize,
    drift: usize,
    draining: usize,
    restore_failures: usize,
    problems: Vec<SyncProblem>,
}

impl Outcome {
    fn stats(&self, duration: std::time::Duration) -> SyncStats {
        SyncStats {
            mode: self.mode,
            duration,
            written: self.written,
            failed_ops: self.failed_ops,
            drift: self.drift,
            draining: self.draining,
            restore_failures: self.restore_failures,
        }
    }
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
                kernel,
                has_companions,
                link: None,
                companions: None,
                conntrack: None,
                applied: IpvsState::default(),
                draining: Draining::default(),
                ownership: Ownership::default(),
                needs_full: true,
                cache: None,
                link_index: None,
                owner: Vec::new(),
                flow_cleanup: None,
                audit: DriftAudit::new(),
                node_addresses: node_addresses.clone(),
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
        self.lock().conntrack = Some(ops);
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
        self.lock().applied.clone()
    }

    /// What a full sync to `table` would do now, against the state our last sync left, without
    /// doing it (tests; [`Dataplane::dry_run`] renders the desired state instead).
    pub fn plan(&self, table: &ServiceTable) -> crate::plan::Plan {
        let core = self.lock();
        let desired = plan_desired(table, &core.config);
        plan(
            &desired.state,
            &core.applied,
            &core.draining,
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
        let ipvs = core.ipvs()?;
        let mut ownership = core.ownership.clone();
        if let (Some(link), Some(index)) = (&core.link, core.link_index) {
            ownership.bound = link
                .vips(index, core.config.vip_binding)?
                .into_iter()
                .collect();
        }
        Ok(observe_owned(ipvs.as_ref(), &ownership)?)
    }

    /// The real servers draining now.
    pub fn draining(&self) -> Draining {
        self.lock().draining.clone()
    }

    /// Waits for the clean-up of stale UDP conntrack entries that the last sync started (it
    /// runs off the sync's path); `Some` with the problem if it failed. The next sync waits
    /// for it too and reports the problem itself, so only tests and shutdown need this.
    pub fn wait_for_flow_cleanup(&self) -> Option<SyncProblem> {
        self.lock().finish_flow_cleanup()
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
        let outcome = self.lock().sync(request.desired, request.mode, now);
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
    /// The IPVS client. The first call opens the kernel connections on this thread (so in its
    /// network namespace); later ones check that this thread is still in that namespace.
    ///
    /// # Errors
    /// See [`kernel::open`] and [`kernel::check_netns`].
    fn ipvs(&mut self) -> Result<Arc<dyn IpvsOps>, BackendError> {
        let pending = match &self.kernel {
            Kernel::Open { ipvs, netns } => {
                check_netns(netns.as_deref())?;
                return Ok(Arc::clone(ipvs));
            }
            Kernel::Pending { ipvs } => ipvs.as_ref(),
        };
        let opened = kernel::open(pending, &self.config, self.has_companions)?;
        self.link = Some(opened.link);
        self.companions = opened.companions;
        self.owner = opened.owner;
        self.kernel = Kernel::Open {
            ipvs: Arc::clone(&opened.ipvs),
            netns: opened.netns,
        };
        Ok(opened.ipvs)
    }

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
        if self.applied.services.is_empty() || matches!(self.kernel, Kernel::Pending { .. }) {
            return Ok(false);
        }
        let ipvs = self.ipvs()?;
        let probes = [
            self.applied.services.keys().next(),
            self.applied.services.keys().next_back(),
        ];
        for key in probes.into_iter().flatten() {
            if ipvs.virtual_server(key)?.is_none() {
                return Ok(true);
            }
        }
        if let (Some(link), Some(index)) = (&self.link, self.link_index) {
            if link.link_index(&self.config.interface)? != Some(index) {
                return Ok(true);
            }
        }
        self.audit_slice(ipvs.as_ref())
    }

    /// Compares the next slice of our virtual servers with the kernel's (attributes, and real
    /// servers without their connection counts), and moves the audit on.
    fn audit_slice(&mut self, ipvs: &dyn IpvsOps) -> Result<bool, BackendError> {
        let started = Instant::now();
        let (keys, next) = self.audit.slice(&self.applied);
        let observed = ipvs.real_servers_of(&keys)?;
        let mut drifted = None;
        for (key, real_servers) in keys.iter().zip(observed) {
            let Some(applied) = self.applied.services.get(key) else {
                continue;
            };
            let mut seen: Vec<RealServer> = real_servers
                .into_iter()
                .map(|rs| rs.without_conns())
                .collect();
            seen.sort_by_key(RealServer::socket_addr);
            let expected = applied.real_servers.values().map(RealServer::without_conns);
            let same_real_servers =
                seen.len() == applied.real_servers.len() && seen.iter().cloned().eq(expected);
            let same_vs =
                same_real_servers && ipvs.virtual_server(key)?.as_ref() == Some(&applied.vs);
            if !same_vs {
                drifted = Some(*key);
                break;
            }
        }
        self.audit.measured(keys.len(), started.elapsed());
        self.audit.next = next;
        if let Some(key) = drifted {
            debug!(virtual_server = %key, "drift audit: the kernel's virtual server differs from ours");
            return Ok(true);
        }
        Ok(false)
    }

    /// Sets the configured IPVS connection timeouts unless the kernel already has them (one
    /// read, and one write only when something differs).
    fn apply_timeouts(&self, ipvs: &dyn IpvsOps) -> Result<(), BackendError> {
        let current = ipvs.timeouts()?;
        if self.config.timeouts.satisfied_by(&current) {
            return Ok(());
        }
        ipvs.set_timeouts(&self.config.timeouts.to_ops())?;
        info!(timeouts = ?self.config.timeouts, "IPVS connection timeouts set");
        Ok(())
    }

    /// The desired state for `table`, and what changed since the last one: `None` when it was
    /// computed whole (first sync, full sync).
    fn take_desired(&mut self, table: &ServiceTable, partial: bool) -> (Desired, Option<Touched>) {
        let node_ips = self.node_ips();
        match (partial, self.cache.take()) {
            (true, Some((last, mut desired))) => {
                // Our own diff against the table we last computed for: proxy-core's diff skips
                // shared entries by pointer, so it costs what changed. A node name change alone
                // needs nothing: locality is each endpoint's `is_local`.
                let mut touched = desired.update(&diff(&last, table), &self.config);
                // Then the node's addresses: only the ports that depend on them, if they moved.
                let moved = desired.readdress(table, node_ips, &self.config);
                touched.keys.extend(moved.keys);
                touched.endpoints.extend(moved.endpoints);
                (desired, Some(touched))
            }
            _ => (plan_desired_on(table, &self.config, node_ips), None),
        }
    }

    /// The node addresses node ports go on now: the source's, within
    /// [`IpvsConfig::node_port_addresses`], less those on our interface (VIPs we bound; before
    /// the first sync has found the interface, asked for by name).
    fn node_ips(&self) -> std::collections::BTreeSet<IpAddr> {
        let ours = self.link_index.or_else(|| {
            let link = self.link.as_ref()?;
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

    fn sync(
        &mut self,
        table: &ServiceTable,
        requested: SyncMode,
        now: Instant,
    ) -> Result<Outcome, BackendError> {
        let result = self.try_sync(table, requested, now);
        if result.is_err() {
            self.needs_full = true;
        }
        result
    }

    fn try_sync(
        &mut self,
        table: &ServiceTable,
        requested: SyncMode,
        now: Instant,
    ) -> Result<Outcome, BackendError> {
        let ipvs = debug_span!("connect").in_scope(|| self.ipvs())?;
        // The first sync of a source that follows the kernel dumps the node's addresses (in
        // this thread's namespace); if it cannot, node ports wait for a later sync.
        let address_problem = self.node_addresses.start().err().map(|e| {
            let cause = std::error::Error::source(&e)
                .map(|source| format!(": {source}"))
                .unwrap_or_default();
            SyncProblem::new("node addresses", format!("{e}{cause}"))
        });
        let partial = requested == SyncMode::Partial && !self.needs_full;
        let started = Instant::now();
        let (desired, touched) =
            debug_span!("desired", partial).in_scope(|| self.take_desired(table, partial));
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
        let started = Instant::now();
        self.cache = Some((table.clone(), desired));
        debug!(
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "IPVS table cached"
        );
        result
    }

    fn sync_desired(
        &mut self,
        ipvs: &dyn IpvsOps,
        desired: &Desired,
        touched: Option<&Touched>,
        now: Instant,
    ) -> Result<Outcome, BackendError> {
        let full = touched.is_none();
        let mut phases = Phases::start();
        let mut outcome = Outcome {
            mode: if full {
                SyncMode::Full
            } else {
                SyncMode::Partial
            },
            written: 0,
            failed_ops: 0,
            drift: 0,
            draining: 0,
            restore_failures: 0,
            problems: desired.problems(),
        };
        // The last flow clean-up's failure, if it has ended (a sync never waits for it here).
        if self
            .flow_cleanup
            .as_ref()
            .is_some_and(std::thread::JoinHandle::is_finished)
        {
            outcome.problems.extend(self.finish_flow_cleanup());
        }
        if let Some(link) = &self.link {
            let _span = debug_span!("link").entered();
            if full || self.link_index.is_none() {
                let (index, created) = link.ensure_dummy(&self.config.interface)?;
                if created {
                    info!(interface = %self.config.interface, "created dummy interface");
                }
                self.ownership.bound = link
                    .vips(index, self.config.vip_binding)?
                    .into_iter()
                    .collect();
                self.link_index = Some(index);
                kernel::set_ipvs_sysctls();
                if self.config.strict_arp {
                    kernel::set_strict_arp();
                }
            }
        }
        if full && self.config.timeouts.any() {
            if let Err(e) = self.apply_timeouts(ipvs) {
                warn!(error = %e, "IPVS timeouts not set");
                outcome
                    .problems
                    .push(SyncProblem::new("IPVS connection timeouts", e.to_string()));
            }
        }
        phases.lap("link");

        let observe_span = debug_span!("observe", full).entered();
        if full {
            let observed = observe_owned(ipvs, &self.ownership)?;
            outcome.drift = count_drift(&self.applied, &observed);
            if outcome.drift > 0 && !self.applied.services.is_empty() {
                warn!(
                    differences = outcome.drift,
                    "IPVS state drifted from what we applied; repairing"
                );
            }
            self.applied = observed;
        } else {
            refresh_services(ipvs, &self.draining.services(), &mut self.applied)?;
        }
        drop(observe_span);
        phases.lap("observe");

        // The addresses this sync may bind or unbind: all (full) or the touched ones.
        let candidates: BTreeSet<IpAddr> = match touched {
            None => desired
                .vips
                .keys()
                .chain(&self.ownership.bound)
                .copied()
                .collect(),
            Some(touched) => touched.keys.iter().map(|k| k.addr).collect(),
        };

        // VIPs first, so a new virtual server is reachable as soon as it exists.
        if let (Some(link), Some(index)) = (&self.link, self.link_index) {
            let _span = debug_span!("bind").entered();
            let new: Vec<IpAddr> = candidates
                .iter()
                .filter(|ip| desired.vips.contains_key(ip) && !self.ownership.bound.contains(ip))
                .copied()
                .collect();
            for (ip, result) in new
                .iter()
                .zip(link.bind_vips(index, self.config.vip_binding, &new))
            {
                match result {
                    Ok(()) => {
                        self.ownership.bound.insert(*ip);
                        outcome.written += 1;
                    }
                    Err(e) => outcome.problems.extend(problems_of(
                        desired,
                        &self.config.interface,
                        *ip,
                        &e,
                    )),
                }
            }
        }

        phases.lap("bind");
        let grace = self.config.graceful_termination;
        let plan = match touched {
            None => plan(&desired.state, &self.applied, &self.draining, now, grace),
            Some(touched) => {
                let mut keys = self.draining.services();
                keys.extend(touched.keys.iter().copied());
                plan_keys(
                    &desired.state,
                    &self.applied,
                    &keys,
                    &self.draining,
                    now,
                    grace,
                )
            }
        };
        debug!(
            ops = plan.ops.len(),
            draining = plan.draining.len(),
            full,
            "IPVS plan"
        );
        phases.lap("plan");
        let applied = debug_span!("apply", ops = plan.ops.len())
            .in_scope(|| apply_ops(ipvs, &plan.ops, &mut self.applied));
        phases.lap("apply");
        outcome.written += applied.done;
        for failure in &applied.failures {
            let problem = match desired.origins.get(&failure.op.key()) {
                Some(o) => SyncProblem::of_port(
                    o.port.clone(),
                    format!("{} {}: {}", o.port, o.kind, failure.op),
                    failure.to_string(),
                ),
                // A virtual server of no port any more (being deleted).
                None => SyncProblem::new(failure.op.to_string(), failure.to_string()),
            };
            outcome.problems.push(problem);
        }
        self.after_apply(&plan.ops, &mut outcome);
        self.draining = plan.draining;
        self.draining.retain_present(&self.applied);
        outcome.draining = self.draining.len();
        outcome.failed_ops = applied.failures.len();

        // Unbind what no virtual server of ours uses any more.
        if let (Some(link), Some(index)) = (&self.link, self.link_index) {
            let _span = debug_span!("unbind").entered();
            let stale: Vec<IpAddr> = candidates
                .into_iter()
                .filter(|ip| {
                    self.ownership.bound.contains(ip)
                        && !desired.vips.contains_key(ip)
                        && !has_service_on(&self.applied, *ip)
                })
                .collect();
            for (&ip, result) in
                stale
                    .iter()
                    .zip(link.unbind_vips(index, self.config.vip_binding, &stale))
            {
                match result {
                    Ok(()) => {
                        self.ownership.bound.remove(&ip);
                        outcome.written += 1;
                    }
                    Err(e) => outcome.problems.push(SyncProblem::new(
                        format!("{} address {ip}", self.config.interface),
                        e.to_string(),
                    )),
                }
            }
        }

        phases.lap("unbind");
        if let Some(companions) = &mut self.companions {
            let _span = debug_span!("companions").entered();
            let restore_failures = companions.restore_failures();
            match companions.sync(desired, touched) {
                Ok(written) => outcome.written += written,
                Err(e) => outcome.problems.push(SyncProblem::new(
                    "companion ipsets and iptables rules",
                    e.to_string(),
                )),
            }
            outcome.restore_failures = companions.restore_failures() - restore_failures;
        }
        phases.lap("companions");
        phases.log(full, outcome.written);
        self.needs_full = !applied.failures.is_empty();
        Ok(outcome)
    }

    /// Ownership of what was created or deleted, and the conntrack entries of deleted UDP
    /// real servers (all of this sync's at once: one dump per family).
    fn after_apply(&mut self, ops: &[Op], outcome: &mut Outcome) {
        let mut stale = Vec::new();
        for op in ops {
            match op {
                Op::AddVirtualServer(vs) if self.applied.services.contains_key(&vs.key()) => {
                    self.ownership.created.insert(vs.key());
                }
                Op::DeleteVirtualServer(key) if !self.applied.services.contains_key(key) => {
                    self.ownership.created.remove(key);
                }
                Op::DeleteRealServer(key, rs) if key.protocol == Protocol::Udp => {
                    let deleted = self
                        .applied
                        .services
                        .get(key)
                        .is_none_or(|s| !s.real_servers.contains_key(&rs.socket_addr()));
                    if deleted {
                        stale.push(StaleUdpFlows {
                            vip: key.addr,
                            port: key.port,
                            real_server: rs.addr,
                        });
                    }
                }
                _ => {}
            }
        }
        let Some(conntrack) = self.conntrack.clone() else {
            return;
        };
        if stale.is_empty() {
            return;
        }
        // Off the sync's path: a conntrack dump walks the kernel's whole conntrack hash (it is
        // shared by every namespace), several ms on a busy host, while the real servers are
        // already gone. The thread starts in this thread's network namespace; the next sync
        // (or `wait_for_flow_cleanup`) joins it and reports a failure.
        if let Some(problem) = self.finish_flow_cleanup() {
            outcome.problems.push(problem);
        }
        let spawned = std::thread::Builder::new()
            .name("svcp-ipvs-flows".into())
            .spawn(move || clean_udp_flows(conntrack.as_ref(), &stale));
        match spawned {
            Ok(handle) => self.flow_cleanup = Some(handle),
            Err(e) => outcome.problems.push(SyncProblem::new(
                "stale UDP flows",
                format!("cannot start the clean-up thread: {e}"),
            )),
        }
    }

    /// Joins the last flow clean-up, if any; its failure as a problem.
    fn finish_flow_cleanup(&mut self) -> Option<SyncProblem> {
        let handle = self.flow_cleanup.take()?;
        match handle.join() {
            Ok(problem) => problem,
            Err(_) => Some(SyncProblem::new(
                "stale UDP flows",
                "the clean-up thread panicked",
            )),
        }
    }

    fn cleanup(&mut self) -> Result<CleanupReport, BackendError> {
        let ipvs = self.ipvs()?;
        if let Some(problem) = self.finish_flow_cleanup() {
            warn!(%problem, "stale UDP flows");
        }
        let result = cleanup_owned(
            ipvs.as_ref(),
            self.link.as_ref(),
            &self.config.interface,
            self.companions.as_mut(),
            &self.ownership.created,
        );
        self.applied = IpvsState::default();
        self.draining = Draining::default();
        self.ownership = Ownership::default();
        self.needs_full = true;
        result.map(|objects_removed| CleanupReport { objects_removed })
    }
}

/// Where a sync's time goes: the wall time of each phase, logged at debug level once per sync.
#[derive(Debug)]
struct Phases {
    last: Instant,
    laps: Vec<(&'static str, std::time::Duration)>,
}

impl Phases {
    fn start() -> Self {
        Phases {
            last: Instant::now(),
            laps: Vec::with_capacity(8),
        }
    }

    /// Ends the phase `name` (started at the previous lap).
    fn lap(&mut self, name: &'static str) {
        let now = Instant::now();
        self.laps.push((name, now - self.last));
        self.last = now;
    }

    fn ms(&self, name: &str) -> f64 {
        self.laps
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, d)| d.as_secs_f64() * 1e3)
            .sum()
    }

    fn log(&self, full: bool, written: usize) {
        debug!(
            full,
            written,
            link_ms = self.ms("link"),
            observe_ms = self.ms("observe"),
            bind_ms = self.ms("bind"),
            plan_ms = self.ms("plan"),
            apply_ms = self.ms("apply"),
            unbind_ms = self.ms("unbind"),
            companions_ms = self.ms("companions"),
            "IPVS sync phases"
        );
    }
}

/// Deletes the conntrack entries of `stale`'s flows; a failure as a problem naming them.
fn clean_udp_flows(conntrack: &dyn ConntrackOps, stale: &[StaleUdpFlows]) -> Option<SyncProblem> {
    match clear_udp_flows(conntrack, stale) {
        Ok(entries) => {
            debug!(
                real_servers = stale.len(),
                entries, "conntrack entries of deleted UDP real servers deleted"
            );
            None
        }
        Err(e) => {
            warn!(error = %e, "stale UDP flows not deleted");
            let flows: Vec<String> = stale.iter().map(ToString::to_string).collect();
            Some(SyncProblem::new(
                format!("conntrack entries of {}", flows.join(", ")),
                e.to_string(),
            ))
        }
    }
}

/// A VIP that could not be bound, as a problem of each service port with a virtual server on
/// it (each is unreachable there).
fn problems_of(
    desired: &Desired,
    interface: &str,
    ip: IpAddr,
    e: &BackendError,
) -> Vec<SyncProblem> {
    let mut kinds: BTreeMap<&ServicePortName, Vec<String>> = BTreeMap::new();
    for (_, origin) in desired.origins.iter().filter(|(key, _)| key.addr == ip) {
        kinds
            .entry(&origin.port)
            .or_default()
            .push(origin.kind.to_string());
    }
    kinds
        .into_iter()
        .map(|(port, kinds)| {
            SyncProblem::of_port(
                port.clone(),
                format!("{port} {} {ip} on {interface}", kinds.join(", ")),
                e.to_string(),
            )
        })
        .collect()
}

/// Whether any of our virtual servers has address `ip`.
fn has_service_on(state: &IpvsState, ip: IpAddr) -> bool {
    let first = ServiceKey {
        addr: ip,
        protocol: Protocol::Tcp,
        port: 0,
    };
    state
        .services
        .range(first..)
        .next()
        .is_some_and(|(key, _)| key.addr == ip)
}

/// Virtual servers that differ between what we applied and what the kernel holds (connection
/// counts aside).
fn count_drift(applied: &IpvsState, observed: &IpvsState) -> usize {
    let applied = &applied.services;
    let observed = &observed.services;
    let keys: BTreeSet<_> = applied.keys().chain(observed.keys()).collect();
    keys.into_iter()
        .filter(|key| {
            let strip = |s: &crate::plan::ServiceState| {
                (
                    s.vs.clone(),
                    s.real_servers
                        .values()
                        .map(|rs| rs.without_conns())
                        .collect::<Vec<_>>(),
                )
            };
            applied.get(key).map(strip) != observed.get(key).map(strip)
        })
        .count()
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
        let outcome = tokio::task::spawn_blocking(move || {
            core.lock()
                .unwrap_or_else(|e| e.into_inner())
                .sync(&table, mode, Instant::now())
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

    /// See [`Core::find_drift`]: two virtual-server lookups and one link lookup, on the
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

mod kernel;
#[cfg(test)]
mod tests;
