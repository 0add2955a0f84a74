//! [`NftablesDataplane`]: the [`Dataplane`] the sync loop drives.
//!
//! - **Full sync** (the first, the periodic one, and any after a failure): plan the desired
//!   table from scratch, read our table back ([`crate::observe`]), send the difference in one
//!   transaction. With the rules in place (a restart) nothing is sent. A set or base chain
//!   someone redeclared cannot be repaired in place: the table is deleted first and programmed
//!   whole.
//! - **Partial sync**: the desired table follows the change set port by port and the plan
//!   compares only those ports' keys and chains against what we last applied (kept in memory,
//!   updated by the changes we send): cost ∝ change, no read of the kernel.
//! - After a failed transaction (nothing of it committed) the next sync is full.
//! - After each successful sync, stale UDP conntrack entries of the change set are deleted
//!   ([`crate::conntrack`]) on a thread of their own, off the sync's path (a conntrack dump
//!   walks the kernel's whole conntrack hash, shared by every namespace: 10-25 ms here, more
//!   on a busy node, while the rules are already committed), one clean-up at a time; a failure
//!   is a [`SyncProblem`] of the next sync (or of
//!   [`NftablesDataplane::wait_for_conntrack_cleanup`]), not a failed sync.
//! - [`Dataplane::check_drift`] reads the ruleset generation (one request); when it moved,
//!   it compares the number of our chains and sets with ours (two dumps of names): a deleted
//!   chain, set or table is seen at once, a deleted element at the next full sync.
//! - [`Dataplane::cleanup`] deletes our table, and nothing else.
//! - **One owner** ([`proxy_core::lock`]): before it first touches the kernel (a sync or a
//!   cleanup), [`NftablesDataplane::new`] takes the lock of our table's name in this thread's
//!   network namespace under `/run/svcproxy`, and holds it for its life: a second instance with
//!   the same table would rewrite the first's elements at every full sync and delete its table at
//!   cleanup, so its first sync fails instead, naming the holder, and the sync loop retries it.
//! - **Node addresses** ([`Dataplane::node_addresses`]): the configured list, or, when it is
//!   empty, the node's own, followed through rtnetlink ([`NodeAddresses::kernel`], started at
//!   the first sync in that thread's namespace). The sync loop runs a partial sync after each
//!   change, and it plans again only what depends on them ([`DesiredTable::readdress`]): the
//!   `nodeport-ips` elements (with `node_port_addresses`; without, node ports follow `fib
//!   daddr type local` and need no address) and the source-range elements that admit a
//!   load-balancer IP itself when a range holds a node address.
//! - **Metrics** ([`crate::metrics`]), once [`Dataplane::register_metrics`] has run.
//!
//! The netlink calls are made on the calling thread, so in its network namespace (the socket is
//! opened at the first sync or cleanup there); on a multi-thread tokio runtime through
//! `block_in_place`, which first hands the worker's other tasks to another worker, so a cold
//! sync of a large table does not stall them.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use netlink_transport::{Datagrams, SysSocket};
use proxy_core::dataplane::{CleanupReport, DryRun, SyncProblem, SyncReport};
use proxy_core::error::error_chain;
use proxy_core::lock::{LockKey, NetnsId, OwnerLock, DEFAULT_LOCK_DIR};
use proxy_core::node_addresses::NodeAddresses;
use proxy_core::prometheus_client::registry::Registry;
use proxy_core::{
    async_trait, Capabilities, Dataplane, DataplaneError, ServiceTable, SyncMode, SyncRequest,
};
use tracing::{debug, info, warn};

use crate::apply::{apply_measured, transaction_bytes, ApplyError, Encoder};
use crate::config::NftablesConfig;
use crate::conntrack::{flush_stale, plan_conntrack, ConntrackOps, Netlink};
use crate::error::NftablesError;
use crate::metrics::{Metrics, SyncStats};
use crate::model::{Key, Table};
use crate::names::SetName;
use crate::netlink::{NftSocket, ProtoFamily, TableAttr};
use crate::observe::observe_sets;
use crate::plan::{apply_changes, desired, plan, Change, DesiredTable};
use crate::render::render_table;

/// The backend's name in logs and metrics.
pub const NAME: &str = "nftables";

/// How the dataplane gets its socket: opened at first use, or given.
type Opener<D> = Box<dyn Fn() -> Result<NftSocket<D>, netlink_transport::NetlinkError> + Send>;

/// The nftables dataplane: one `inet` table, programmed over netlink.
pub struct NftablesDataplane<D: Datagrams = SysSocket> {
    config: NftablesConfig,
    open: Opener<D>,
    socket: Option<NftSocket<D>>,
    /// The desired table of the last successful sync, followed by partial syncs.
    desired: Option<DesiredTable>,
    /// What the kernel holds, as far as we know: the observed table of the last full sync
    /// with every change we sent since applied.
    kernel: Table,
    needs_full: bool,
    /// The ruleset generation and our object count after our last transaction.
    verified: Option<(u32, usize)>,
    conntrack: Option<Arc<dyn ConntrackOps>>,
    /// The last stale-entry clean-up, while it runs or until joined: its failure, if any.
    conntrack_cleanup: Option<JoinHandle<Option<SyncProblem>>>,
    /// Where the node's addresses come from.
    node_addresses: NodeAddresses,
    metrics: Metrics,
    owner: OwnerLock,
}

/// What one sync sent.
#[derive(Debug)]
struct Outcome {
    mode: SyncMode,
    /// Messages sent (transactions and affinity purges).
    messages: usize,
    elements: usize,
    objects: usize,
    /// Each transaction's size, when measured (registered metrics).
    bytes: Vec<usize>,
}

impl Outcome {
    fn new(mode: SyncMode) -> Self {
        Outcome {
            mode,
            messages: 0,
            elements: 0,
            objects: 0,
            bytes: Vec::new(),
        }
    }
}

impl<D: Datagrams> std::fmt::Debug for NftablesDataplane<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NftablesDataplane")
            .field("table", &self.config.table)
            .field("needs_full", &self.needs_full)
            .field("elements", &self.kernel.element_count())
            .finish_non_exhaustive()
    }
}

impl NftablesDataplane<SysSocket> {
    /// A dataplane for `config`; no I/O until the first sync or cleanup. With no
    /// [`NftablesConfig::node_addresses`], it follows the node's own addresses
    /// ([`NodeAddresses::kernel`], read from the first sync on).
    pub fn new(config: NftablesConfig) -> Self {
        let follow = config.node_addresses.is_empty();
        let dp = Self::with_opener(config, Box::new(NftSocket::open))
            .with_conntrack(Arc::new(Netlink))
            .with_lock_dir(DEFAULT_LOCK_DIR);
        if follow {
            dp.with_node_addresses(NodeAddresses::kernel())
        } else {
            dp
        }
    }
}

impl<D: Datagrams> NftablesDataplane<D> {
    /// A dataplane whose socket `open` makes (a fake kernel in tests). No conntrack cleanup
    /// unless [`NftablesDataplane::with_conntrack`].
    ///
    /// The node's addresses are the configured ones only (empty or not): a fake kernel has
    /// none to follow; see [`NftablesDataplane::with_node_addresses`].
    pub fn with_opener(config: NftablesConfig, open: Opener<D>) -> Self {
        let kernel = Table::new(config.table.clone());
        let node_addresses = NodeAddresses::fixed(config.node_addresses.iter().copied());
        Self {
            config,
            open,
            socket: None,
            desired: None,
            kernel,
            needs_full: true,
            verified: None,
            conntrack: None,
            conntrack_cleanup: None,
            node_addresses,
            metrics: Metrics::default(),
            owner: OwnerLock::Off,
        }
    }

    /// The same dataplane, taking its one-owner lock in `dir` ([`proxy_core::lock`]; `new`
    /// takes it in [`DEFAULT_LOCK_DIR`], `/run/svcproxy`) before it first touches the kernel;
    /// on a dataplane made [`with_opener`](Self::with_opener), which takes none, this turns it
    /// on. The lock is keyed by the calling thread's network namespace, this backend and the
    /// table's name.
    #[must_use]
    pub fn with_lock_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.owner = OwnerLock::Pending { dir: dir.into() };
        self
    }

    /// The lock file held, once the lock is taken.
    pub fn lock_path(&self) -> Option<&std::path::Path> {
        self.owner.path()
    }

    /// Takes the one-owner lock if it is pending (once; a failure is retried at the next call).
    fn ensure_owner(&mut self) -> Result<(), NftablesError> {
        let table = &self.config.table;
        let key = || Ok(LockKey::new(NetnsId::for_lock(None)?, NAME, table));
        if let Some(lock) = self.owner.ensure(key)? {
            let netns = lock.key().netns;
            info!(lock = %lock.path().display(), %netns, %table, "nftables owner lock taken");
        }
        Ok(())
    }

    /// The same dataplane, with the node's addresses from `source` (with the configured
    /// ones): [`NodeAddresses::kernel`] follows the node's, [`NodeAddresses::manual`] is fed
    /// by the embedder. The sync loop follows the source ([`Dataplane::node_addresses`]):
    /// each change is a partial sync that plans again only what depends on the addresses
    /// ([`DesiredTable::readdress`]).
    #[must_use]
    pub fn with_node_addresses(mut self, source: NodeAddresses) -> Self {
        self.node_addresses = source;
        self
    }

    /// Deletes stale UDP conntrack entries through `ops` after each sync.
    #[must_use]
    pub fn with_conntrack(mut self, ops: Arc<dyn ConntrackOps>) -> Self {
        self.conntrack = Some(ops);
        self
    }

    /// What this backend implements: everything but schedulers other than random (weights
    /// are respected).
    pub fn supported() -> Capabilities {
        Capabilities {
            schedulers: [proxy_core::Scheduler::Random].into_iter().collect(),
            ..Capabilities::everything()
        }
    }

    /// Waits for the last stale UDP conntrack clean-up to end: its failure, if any (tests,
    /// and embedders that need the entries gone before they go on).
    pub fn wait_for_conntrack_cleanup(&mut self) -> Option<SyncProblem> {
        let handle = self.conntrack_cleanup.take()?;
        handle.join().unwrap_or_else(|_| {
            Some(SyncProblem::new(
                "stale UDP conntrack entries",
                "the clean-up thread panicked",
            ))
        })
    }

    /// The last clean-up's failure if it has ended (never waits).
    fn ended_conntrack_cleanup(&mut self) -> Option<SyncProblem> {
        if self
            .conntrack_cleanup
            .as_ref()
            .is_some_and(JoinHandle::is_finished)
        {
            return self.wait_for_conntrack_cleanup();
        }
        None
    }

    /// Starts deleting the stale UDP entries of `changes` (nothing without a conntrack client
    /// or entries to delete), after the last clean-up has ended: the problems to report now.
    /// The thread starts in this thread's network namespace.
    fn start_conntrack_cleanup(
        &mut self,
        changes: &proxy_core::diff::ChangeSet,
    ) -> Vec<SyncProblem> {
        let Some(ops) = self.conntrack.clone() else {
            return Vec::new();
        };
        let flushes = plan_conntrack(changes);
        if flushes.is_empty() {
            return Vec::new();
        }
        let mut problems: Vec<SyncProblem> =
            self.wait_for_conntrack_cleanup().into_iter().collect();
        let spawned = std::thread::Builder::new()
            .name("svcp-nft-conntrack".into())
            .spawn(move || {
                flush_stale(ops.as_ref(), &flushes)
                    .err()
                    .map(|e| SyncProblem::new("stale UDP conntrack entries", error_chain(&e)))
            });
        match spawned {
            Ok(handle) => self.conntrack_cleanup = Some(handle),
            Err(e) => problems.push(SyncProblem::new(
                "stale UDP conntrack entries",
                format!("cannot start the clean-up thread: {e}"),
            )),
        }
        problems
    }

    /// What we believe the kernel holds (tests compare it with an observation).
    pub fn kernel(&self) -> &Table {
        &self.kernel
    }

    /// The node's addresses now (the planner adds the configured ones).
    fn node_ips(&self) -> BTreeSet<IpAddr> {
        self.node_addresses.current().iter().map(|a| a.ip).collect()
    }

    /// Sends `changes` (one transaction, then the affinity purges) and counts them in `out`.
    fn send(&mut self, changes: &[Change], out: &mut Outcome) -> Result<(), NftablesError> {
        let name = self.config.table.clone();
        let elements = changes.iter().filter(|c| c.is_element()).count();
        let purges = changes
            .iter()
            .filter(|c| matches!(c, Change::PurgeAffinity(..)))
            .count();
        let applied = apply_measured(self.socket()?, &name, changes)?;
        out.messages += applied.messages;
        if applied.transaction_bytes > 0 {
            out.bytes.push(applied.transaction_bytes);
        }
        out.elements += elements;
        out.objects += changes.len() - elements - purges;
        Ok(())
    }

    fn socket(&mut self) -> Result<&mut NftSocket<D>, NftablesError> {
        if self.socket.is_none() {
            // Before anything of the kernel is read or changed.
            self.ensure_owner()?;
            self.socket = Some((self.open)().map_err(|e| NftablesError::Socket(Box::new(e)))?);
        }
        Ok(self.socket.as_mut().expect("opened above"))
    }

    fn observe_err(&self, source: netlink_transport::NetlinkError) -> NftablesError {
        NftablesError::Observe {
            table: self.config.table.clone(),
            source: Box::new(source),
        }
    }

    /// One sync: what it ran and sent.
    fn sync_inner(&mut self, request: &SyncRequest<'_>) -> Result<Outcome, NftablesError> {
        let name = self.config.table.clone();
        let node_ips = self.node_ips();
        let partial = request.mode == SyncMode::Partial && !self.needs_full;
        if let (true, Some(mut desired)) = (partial, self.desired.take()) {
            let mut out = Outcome::new(SyncMode::Partial);
            desired.update(request.changes);
            let mut changes = plan(&desired, Some(&self.kernel), Some(request.changes));
            let moved = desired.readdress(request.desired, &node_ips);
            if !moved.is_empty() {
                debug!(elements = moved.len(), "node addresses changed");
                changes = with_elements(&desired, &self.kernel, changes, moved);
            }
            self.send(&changes, &mut out)?;
            apply_changes(&mut self.kernel, &changes);
            self.desired = Some(desired);
            return Ok(out);
        }
        let mut out = Outcome::new(SyncMode::Full);
        // Reading our sets back (the kernel's dump, most of a restart's time) and planning the
        // desired table (ours) do not depend on each other: the plan runs on a second thread
        // meanwhile, so that on two cores a full sync takes the longer of the two, not the sum.
        // The chains and rules, recognised against the plan, are read after (they are few).
        let config = self.config.clone();
        let table = request.desired;
        let socket = self.socket()?;
        let (desired, sets) = std::thread::scope(|scope| {
            let planner = scope.spawn(|| desired(table, &config, &node_ips));
            let sets = observe_sets(socket, &name);
            let planned = planner
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (planned, sets)
        });
        let observed = match sets.map_err(|e| self.observe_err(e))? {
            Some(sets) => Some(
                sets.finish(self.socket()?, &desired.table)
                    .map_err(|e| self.observe_err(e))?,
            ),
            None => None,
        };
        let base = match observed {
            Some(o) if o.needs_rebuild() => {
                warn!(
                    table = %name,
                    redeclare = ?o.redeclare,
                    rehook = ?o.rehook,
                    "objects of ours were redeclared by someone else: deleting the table to program it whole"
                );
                let delete = Encoder::new(name.clone()).delete_table();
                out.bytes
                    .push(transaction_bytes(std::slice::from_ref(&delete)));
                let socket = self.socket()?;
                let outcome = socket.transaction(std::slice::from_ref(&delete));
                match outcome.map(|r| r.into_iter().find_map(Result::err)) {
                    Ok(None) => {}
                    Ok(Some(source)) | Err(source) => {
                        return Err(ApplyError::Transaction {
                            table: name,
                            changes: 1,
                            source: Box::new(source),
                        }
                        .into())
                    }
                }
                out.messages += 1;
                out.objects += 1;
                None
            }
            Some(o) => Some(o.table),
            None => None,
        };
        let changes = plan(&desired, base.as_ref(), None);
        self.send(&changes, &mut out)?;
        let mut kernel = base.unwrap_or_else(|| Table::new(name.clone()));
        apply_changes(&mut kernel, &changes);
        self.kernel = kernel;
        self.desired = Some(desired);
        Ok(out)
    }

    /// The generation and our object count, now.
    fn fingerprint(&mut self) -> Result<(u32, usize), NftablesError> {
        let name = self.config.table.clone();
        let socket = self.socket()?;
        let generation = socket
            .generation()
            .map_err(|source| NftablesError::Observe {
                table: name.clone(),
                source: Box::new(source),
            })?;
        let count =
            Self::count_objects(socket, &name).map_err(|source| NftablesError::Observe {
                table: name.clone(),
                source: Box::new(source),
            })?;
        Ok((generation, count))
    }

    /// Our chains and named sets, counted (0 without the table).
    fn count_objects(
        socket: &mut NftSocket<D>,
        name: &str,
    ) -> Result<usize, netlink_transport::NetlinkError> {
        let exists = socket
            .list_tables(ProtoFamily::Inet)?
            .iter()
            .any(|t| t.contains(&TableAttr::Name(name.to_owned())));
        if !exists {
            return Ok(0);
        }
        let chains = socket.list_chains(ProtoFamily::Inet, name)?.len();
        let sets = socket
            .list_sets(ProtoFamily::Inet, name)?
            .iter()
            .filter(|s| {
                !s.iter().any(
                    |a| matches!(a, crate::netlink::SetAttr::Name(n) if n.starts_with("__set")),
                )
            })
            .count();
        Ok(chains + sets)
    }

    fn expected_objects(&self) -> usize {
        self.kernel.chains.len() + self.kernel.sets.len()
    }
}

#[async_trait]
impl<D: Datagrams + Send + 'static> Dataplane for NftablesDataplane<D> {
    fn name(&self) -> &'static str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        Self::supported()
    }

    async fn sync(&mut self, request: SyncRequest<'_>) -> Result<SyncReport, DataplaneError> {
        let started = Instant::now();
        let mut report = SyncReport::for_request(&request);
        // A source following the kernel reads the node's addresses at the first sync, in
        // this thread's namespace; if it cannot, they wait for a later sync.
        let address_problem = self.node_addresses.start().err().map(|e| {
            warn!(error = %error_chain(&e), "cannot follow the node's addresses");
            SyncProblem::new("node addresses", error_chain(&e))
        });
        let outcome = match blocking(|| self.sync_inner(&request)) {
            Ok(done) => done,
            Err(e) => {
                self.needs_full = true;
                self.verified = None;
                self.metrics.record_sync_failure();
                return Err(DataplaneError::backend(NAME, e));
            }
        };
        self.needs_full = false;
        report.mode = outcome.mode;
        report.objects_written = outcome.messages;
        report.problems = self
            .desired
            .as_ref()
            .map(DesiredTable::problems)
            .unwrap_or_default();
        report.problems.extend(address_problem);
        report.problems.extend(self.ended_conntrack_cleanup());
        let cleanup = self.start_conntrack_cleanup(request.changes);
        report.problems.extend(cleanup);
        self.verified = match blocking(|| self.fingerprint()) {
            Ok((generation, count)) if count == self.expected_objects() => {
                Some((generation, count))
            }
            _ => None,
        };
        report.duration = started.elapsed();
        self.metrics.record_sync(&SyncStats {
            mode: outcome.mode,
            duration: report.duration,
            elements_written: outcome.elements,
            objects_written: outcome.objects,
            transaction_bytes: outcome.bytes,
            elements: self.kernel.element_count(),
        });
        debug!(%report, "nftables sync");
        Ok(report)
    }

    async fn cleanup(&mut self) -> Result<CleanupReport, DataplaneError> {
        let name = self.config.table.clone();
        let result = blocking(|| {
            let socket = self.socket()?;
            let exists = socket
                .list_tables(ProtoFamily::Inet)
                .map_err(|source| NftablesError::Observe {
                    table: name.clone(),
                    source: Box::new(source),
                })?
                .iter()
                .any(|t| t.contains(&TableAttr::Name(name.clone())));
            if !exists {
                return Ok(0);
            }
            let delete = Encoder::new(name.clone()).delete_table();
            let outcome = socket.transaction(std::slice::from_ref(&delete));
            match outcome.map(|r| r.into_iter().find_map(Result::err)) {
                Ok(None) => Ok(1),
                Ok(Some(source)) | Err(source) => {
                    Err(NftablesError::from(ApplyError::Transaction {
                        table: name.clone(),
                        changes: 1,
                        source: Box::new(source),
                    }))
                }
            }
        });
        self.needs_full = true;
        self.verified = None;
        self.desired = None;
        self.kernel = Table::new(name);
        if result.is_err() {
            self.metrics.record_cleanup_failure();
        }
        let removed = result.map_err(|e| DataplaneError::backend(NAME, e))?;
        Ok(CleanupReport {
            objects_removed: removed,
        })
    }

    /// The desired table with the node addresses known now (no I/O: a source that follows
    /// the kernel has none before the first sync).
    fn dry_run(&self, table: &ServiceTable) -> Result<DryRun, DataplaneError> {
        let desired = desired(table, &self.config, &self.node_ips());
        Ok(DryRun {
            rendered: render_table(&desired.table),
            problems: desired.problems(),
        })
    }

    async fn check_drift(&mut self) -> Result<bool, DataplaneError> {
        let Some((generation, count)) = self.verified else {
            return Ok(false);
        };
        let name = self.config.table.clone();
        let socket = self
            .socket()
            .map_err(|e| DataplaneError::backend(NAME, e))?;
        let now = socket.generation().map_err(|source| {
            DataplaneError::backend(
                NAME,
                NftablesError::Observe {
                    table: name.clone(),
                    source: Box::new(source),
                },
            )
        })?;
        if now == generation {
            return Ok(false);
        }
        let objects = Self::count_objects(socket, &name).map_err(|source| {
            DataplaneError::backend(
                NAME,
                NftablesError::Observe {
                    table: name,
                    source: Box::new(source),
                },
            )
        })?;
        if objects == count {
            // Someone else's change (another table), or elements: left to the full sync.
            self.verified = Some((now, count));
            return Ok(false);
        }
        Ok(true)
    }

    /// Registers [`Metrics`] in `registry` (the root: kube-proxy's series under `kubeproxy`,
    /// ours under `svcproxy`) and records into them from now on.
    fn register_metrics(&mut self, registry: &mut Registry) {
        self.metrics = Metrics::register(registry);
    }

    /// The source of the node's addresses: the sync loop runs a partial sync after each
    /// change.
    fn node_addresses(&self) -> Option<NodeAddresses> {
        Some(self.node_addresses.clone())
    }
}

/// Runs `f` (blocking netlink exchanges) on this thread, so in its network namespace, without
/// stalling the runtime's other tasks: on a multi-thread runtime through `block_in_place`
/// (which moves this worker's other tasks to another first); elsewhere (a current-thread
/// runtime, no runtime) directly.
fn blocking<R>(f: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// `changes` (a partial plan) with the element changes redone over their keys and `extra`:
/// every element of either compared between `desired` and `kernel`, in the plan's order
/// (definitions and rules, element deletes, element adds, then the rest).
fn with_elements(
    desired: &DesiredTable,
    kernel: &Table,
    changes: Vec<Change>,
    mut extra: BTreeSet<(SetName, Key)>,
) -> Vec<Change> {
    let (elements, others): (Vec<Change>, Vec<Change>) =
        changes.into_iter().partition(Change::is_element);
    extra.extend(elements.iter().filter_map(|c| match c {
        Change::AddElement(s, k, _) | Change::DeleteElement(s, k) => Some((*s, *k)),
        _ => None,
    }));
    let (mut deletes, mut adds) = (Vec::new(), Vec::new());
    for (set, key) in extra {
        let want = desired
            .table
            .sets
            .get(&set)
            .and_then(|s| s.elements.get(&key));
        let have = kernel.sets.get(&set).and_then(|s| s.elements.get(&key));
        match (want, have) {
            (Some(w), Some(h)) if w == h => {}
            (Some(w), have) => {
                if have.is_some() {
                    deletes.push(Change::DeleteElement(set, key));
                }
                adds.push(Change::AddElement(set, key, *w));
            }
            (None, Some(_)) => deletes.push(Change::DeleteElement(set, key)),
            (None, None) => {}
        }
    }
    let (before, after): (Vec<Change>, Vec<Change>) = others.into_iter().partition(|c| {
        matches!(
            c,
            Change::AddTable
                | Change::AddSet(_)
                | Change::AddChain(..)
                | Change::FlushChain(_)
                | Change::AddRule(..)
        )
    });
    before
        .into_iter()
        .chain(deletes)
        .chain(adds)
        .chain(after)
        .collect()
}
