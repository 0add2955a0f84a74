//! [`IptablesDataplane`]: the [`Dataplane`] the sync loop drives. Each sync plans against what
//! is applied, applies, and records the result; a full sync first reads the kernel back
//! ([`crate::observe`]) so drift is repaired and stale chains are deleted, then ensures the hooks.
//! A failed apply forgets what is applied, so the next sync is full.
//!
//! [`IptablesDataplane::new`] does no I/O: the iptables variant (legacy or nft) is detected at
//! the first sync or cleanup, asynchronously, and the runners are built then, all under the
//! configured namespace ([`IptablesConfig::netns`]). [`Dataplane::dry_run`] needs none of it.
//!
//! **One owner.** Right after detection, before it changes anything, the first sync or cleanup
//! takes the [`proxy_core::lock::DataplaneLock`] of (network namespace, `iptables`, prefix), and
//! the dataplane keeps it until dropped: a second instance with the same prefix in the same
//! namespace would delete our chains at each full sync (and all of them at its cleanup), so its
//! syncs fail instead with [`IptablesError::Lock`], naming our pid, until we are gone.
//!
//! **Drift.** [`Dataplane::check_drift`] runs [`find_drift`] (canary chains and the first hook of
//! each table: eight short `iptables` processes, off the async threads), so the sync loop repairs
//! a flushed table or deleted chains within its drift-check period; rules edited inside our chains
//! are repaired by the periodic full sync, which reads them back.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use prometheus_client::registry::Registry;
use proxy_core::dataplane::{CleanupReport, DryRun, SyncProblem, SyncReport};
use proxy_core::lock::{DataplaneLock, LockError, LockKey, NetnsId, DEFAULT_LOCK_DIR};
use proxy_core::table::Scheduler;
use proxy_core::{
    Capabilities, Dataplane, DataplaneError, Protocol, ServiceTable, SyncMode, SyncRequest,
};
use tracing::{debug, info, warn};

use crate::apply::{apply_plan, detect_variant, CommandRunner, RestoreRunner, Variant};
use crate::cleanup::cleanup_chains;
use crate::config::IptablesConfig;
use crate::conntrack::{flush_stale, plan_conntrack, ConntrackOps, Netlink, NetnsNetlink};
use crate::error::IptablesError;
use crate::hooks::{
    canaries_present, ensure_hooks, find_drift, remove_hooks, HookError, HookOps, IptablesHooks,
};
use crate::metrics::Metrics;
use crate::observe::{observe, SaveRunner};
use crate::plan::{Applied, Planner};

/// The backend's name in logs, metrics and reports.
pub const NAME: &str = "iptables";

/// The iptables backend.
///
/// ```no_run
/// use backend_iptables::{IptablesConfig, IptablesDataplane};
/// use proxy_core::prometheus_client::registry::Registry;
/// use proxy_core::Dataplane;
///
/// # fn main() -> Result<(), backend_iptables::IptablesError> {
/// let mut registry = Registry::default();
/// let mut dp = IptablesDataplane::new(IptablesConfig::default())?;
/// dp.register_metrics(&mut registry);
/// // Hand `dp` to `proxy_core::SyncLoop`; its first sync detects legacy or nft.
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct IptablesDataplane {
    planner: Planner,
    /// `None` until the first sync or cleanup of a dataplane made by [`IptablesDataplane::new`].
    runners: Option<Runners>,
    variant: Option<Variant>,
    applied: Applied,
    hooks_ensured: bool,
    metrics: Option<Metrics>,
    conntrack: Option<Arc<dyn ConntrackOps>>,
    owner: OwnerLock,
}

/// The one-owner lock: not taken (runners given by the caller), to be taken in a directory at
/// the first sync or cleanup, or held for the dataplane's life.
#[derive(Debug)]
enum OwnerLock {
    Off,
    Pending { dir: PathBuf },
    Held(DataplaneLock),
}

/// The effects a sync goes through.
#[derive(Debug, Clone)]
struct Runners {
    restore: Arc<dyn RestoreRunner>,
    save: Arc<dyn SaveRunner>,
    hooks: Arc<dyn HookOps>,
}

impl IptablesDataplane {
    /// The dataplane on this host's iptables, or on the namespace [`IptablesConfig::netns`]
    /// names. Does no I/O and needs no privileges: at the first sync or cleanup it detects legacy
    /// or nft as kube-proxy does (`iptables --version`), then writes with that variant's
    /// `iptables-restore`, reads back with its `iptables-save` and hooks with its `iptables`, every
    /// command under `ip netns exec NAME` when a namespace is set; after each sync it deletes
    /// stale UDP conntrack entries over ctnetlink, in that namespace too.
    ///
    /// # Errors
    /// [`IptablesError::Config`] for a bad configuration. A host without a usable `iptables`
    /// shows at the first sync, as [`IptablesError::Detect`] (retried at the next one).
    pub fn new(config: IptablesConfig) -> Result<Self, IptablesError> {
        let planner = Planner::new(config)?;
        let conntrack: Arc<dyn ConntrackOps> = match &planner.config().netns {
            Some(name) => Arc::new(NetnsNetlink::new(name)),
            None => Arc::new(Netlink),
        };
        Ok(Self {
            planner,
            runners: None,
            variant: None,
            applied: Applied::new(),
            hooks_ensured: false,
            metrics: None,
            conntrack: Some(conntrack),
            owner: OwnerLock::Pending {
                dir: PathBuf::from(DEFAULT_LOCK_DIR),
            },
        })
    }

    /// A dataplane writing through `restore`, reading through `save`, hooking through `hooks`,
    /// with no conntrack cleanup unless [`Self::with_conntrack`] adds it: for tests (the fakes in
    /// `testing::fake`) and for embedders with their own runners. `planner`'s
    /// [`IptablesConfig::netns`] is not applied to these runners: give them their own prefix.
    pub fn with_runners(
        planner: Planner,
        restore: Arc<dyn RestoreRunner>,
        save: Arc<dyn SaveRunner>,
        hooks: Arc<dyn HookOps>,
    ) -> Self {
        Self {
            planner,
            runners: Some(Runners {
                restore,
                save,
                hooks,
            }),
            variant: None,
            applied: Applied::new(),
            hooks_ensured: false,
            metrics: None,
            conntrack: None,
            owner: OwnerLock::Off,
        }
    }

    /// The same dataplane, taking its one-owner lock in `dir` rather than
    /// [`DEFAULT_LOCK_DIR`] (`/run/svcproxy`); on a dataplane made
    /// [`with_runners`](Self::with_runners), which takes none by default, this turns it on. The
    /// lock is keyed by the network namespace ([`IptablesConfig::netns`], else the calling
    /// thread's), this backend and the prefix.
    #[must_use]
    pub fn with_lock_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.owner = OwnerLock::Pending { dir: dir.into() };
        self
    }

    /// The lock file this dataplane holds, once its first sync or cleanup took it.
    pub fn lock_path(&self) -> Option<&Path> {
        match &self.owner {
            OwnerLock::Held(lock) => Some(lock.path()),
            OwnerLock::Off | OwnerLock::Pending { .. } => None,
        }
    }

    /// Takes the one-owner lock if it is due and not yet held.
    ///
    /// # Errors
    /// [`IptablesError::Lock`]: held by another instance (named), or not takeable.
    fn ensure_owner(&mut self) -> Result<(), IptablesError> {
        let OwnerLock::Pending { dir } = &self.owner else {
            return Ok(());
        };
        let config = self.planner.config();
        let (netns_path, netns) = match &config.netns {
            Some(name) => (Path::new("/run/netns").join(name), NetnsId::named(name)),
            None => (
                PathBuf::from("/proc/thread-self/ns/net"),
                NetnsId::current(),
            ),
        };
        let netns = netns.map_err(|source| LockError::Io {
            path: netns_path,
            op: "identify the network namespace",
            source,
        })?;
        let key = LockKey::new(netns, NAME, self.planner.names().prefix());
        let lock = DataplaneLock::acquire_in(dir, &key)?;
        info!(lock = %lock.path().display(), %netns, prefix = %key.scope, "iptables owner lock taken");
        self.owner = OwnerLock::Held(lock);
        Ok(())
    }

    /// The same dataplane, deleting stale UDP conntrack entries after each sync through `ops`
    /// (usually [`crate::conntrack::Netlink`]; [`Self::new`] sets it up already).
    pub fn with_conntrack(mut self, ops: Arc<dyn ConntrackOps>) -> Self {
        self.conntrack = Some(ops);
        self
    }

    /// What a full sync to `table` would write (every restore input), typed; see
    /// [`Dataplane::dry_run`] for the rendered form.
    pub fn plan_full(&self, table: &ServiceTable) -> crate::Plan {
        self.planner.plan_full(table)
    }

    /// What this backend implements (also [`Dataplane::capabilities`]).
    ///
    /// A service port's idle timeout ([`proxy_core::table::ServicePort::idle_timeout`]) is
    /// ignored, not refused: NATed connections live as long as conntrack keeps them, and
    /// conntrack's timeouts (`net.netfilter.nf_conntrack_tcp_timeout_established`,
    /// `nf_conntrack_udp_timeout`...) are per network namespace, not per rule. (A per-service
    /// `-j CT --timeout` policy would need `nfct` timeout objects; kube-proxy sets none either.)
    pub fn supported() -> Capabilities {
        Capabilities {
            protocols: Protocol::ALL.into_iter().collect(),
            // `-m statistic --mode random`, weights respected.
            schedulers: [Scheduler::Random].into_iter().collect(),
            session_affinity: true,
            local_traffic_policy: true,
            load_balancer_source_ranges: true,
            node_ports: true,
            ipv6: true,
        }
    }

    /// What this dataplane believes is applied.
    pub fn applied(&self) -> &Applied {
        &self.applied
    }

    /// The variant detected at the first sync or cleanup; `None` before it, and for a dataplane
    /// made [`with_runners`](Self::with_runners).
    pub fn variant(&self) -> Option<Variant> {
        self.variant
    }

    /// The runners, detecting the variant and building them on first use.
    async fn runners(&mut self) -> Result<Runners, IptablesError> {
        if let Some(runners) = &self.runners {
            return Ok(runners.clone());
        }
        let config = self.planner.config();
        let prefix = config.command_prefix();
        let variant = detect_variant(&prefix)
            .await
            .map_err(IptablesError::Detect)?;
        info!(%variant, netns = config.netns.as_deref(), "iptables variant detected");
        let runner = CommandRunner::new(variant).with_prefix(prefix);
        let hooks = Arc::new(IptablesHooks::like(&runner));
        let runner = Arc::new(runner);
        let runners = Runners {
            restore: runner.clone(),
            save: runner,
            hooks,
        };
        self.variant = Some(variant);
        self.runners = Some(runners.clone());
        Ok(runners)
    }

    async fn sync_inner(&mut self, request: SyncRequest<'_>) -> Result<SyncReport, IptablesError> {
        let started = Instant::now();
        let runners = self.runners().await?;
        self.ensure_owner()?;
        let mut mode = if self.applied.is_empty() {
            SyncMode::Full
        } else {
            request.mode
        };
        let canary = self.planner.names().canary();
        if mode == SyncMode::Partial
            && !off_runtime(&runners.hooks, move |ops| canaries_present(ops, &canary)).await?
        {
            info!("canary chain missing: a table was flushed behind our back, syncing fully");
            mode = SyncMode::Full;
            self.hooks_ensured = false;
        }
        if mode == SyncMode::Full {
            let observed = observe(runners.save.as_ref(), self.planner.names()).await?;
            let drift = observed.drift(&self.applied);
            if !self.applied.is_empty() && !drift.is_empty() {
                info!(chains = drift.len(), "iptables drift found, repairing");
            }
            self.applied = observed.to_applied();
        }
        let plan = self
            .planner
            .plan(request.desired, request.changes, &self.applied, mode);
        let applied = apply_plan(runners.restore.as_ref(), &plan).await;
        let report = match applied {
            Ok(report) => report,
            Err(e) => {
                if let Some(m) = &self.metrics {
                    m.record_failure(plan.mode);
                }
                // Some restores of the plan may have run: the state is unknown until a full sync.
                self.applied = Applied::new();
                self.hooks_ensured = false;
                return Err(e);
            }
        };
        self.applied.commit(&plan);
        if mode == SyncMode::Full || !self.hooks_ensured {
            let hooks = self.planner.hooks();
            let inserted =
                off_runtime(&runners.hooks, move |ops| ensure_hooks(ops, &hooks)).await?;
            if inserted > 0 {
                info!(inserted, "iptables hooks inserted");
            }
            self.hooks_ensured = true;
        }
        if let Some(m) = &self.metrics {
            m.record_sync(&plan, &self.applied, started.elapsed().as_secs_f64());
        }
        let mut out = SyncReport::for_request(&request);
        if let Some(ops) = &self.conntrack {
            let flushes = plan_conntrack(request.changes);
            if !flushes.is_empty() {
                let ops = Arc::clone(ops);
                let count = flushes.len();
                let result =
                    tokio::task::spawn_blocking(move || flush_stale(ops.as_ref(), &flushes)).await;
                match result {
                    Ok(Ok(deleted)) => debug!(
                        flushes = count,
                        deleted, "stale UDP conntrack entries deleted"
                    ),
                    Ok(Err(e)) => {
                        warn!(error = %e, "stale UDP conntrack entries not deleted");
                        out.problems
                            .push(SyncProblem::new("conntrack", e.to_string()));
                    }
                    Err(e) => out
                        .problems
                        .push(SyncProblem::new("conntrack", e.to_string())),
                }
            }
        }
        out.mode = plan.mode;
        out.objects_written = report.rules_written;
        out.duration = started.elapsed();
        debug!(
            mode = %plan.mode,
            restores = report.restores,
            rules_written = report.rules_written,
            chains_written = report.chains_written,
            chains_deleted = report.chains_deleted,
            "iptables sync"
        );
        Ok(out)
    }
}

/// Runs hook calls (one blocking process each) off the async runtime.
async fn off_runtime<T: Send + 'static>(
    ops: &Arc<dyn HookOps>,
    call: impl FnOnce(&dyn HookOps) -> Result<T, HookError> + Send + 'static,
) -> Result<T, IptablesError> {
    let ops = Arc::clone(ops);
    tokio::task::spawn_blocking(move || call(ops.as_ref()))
        .await
        .map_err(|e| {
            IptablesError::Hook(HookError {
                op: "join",
                family: crate::rules::Family::V4,
                table: String::new(),
                chain: String::new(),
                rule: String::new(),
                message: e.to_string(),
            })
        })?
        .map_err(IptablesError::from)
}

/// `--dry-run`'s text: a header, the full restore input of every table ([`crate::Plan::render`]),
/// then the hooks as `# hook:` lines (they are ensured one by one, not restored). Pure.
fn render_dry_run(planner: &Planner, table: &ServiceTable) -> String {
    let plan = planner.plan_full(table);
    let netns = match &planner.config().netns {
        Some(name) => format!(" in netns {name}"),
        None => String::new(),
    };
    let mut out = format!(
        "# iptables backend{netns}: full restore input for {} service port(s), {} endpoint(s): {} rules in {} chains\n",
        table.len(),
        table.endpoint_count(),
        plan.rules_written(),
        plan.chains_written()
    );
    out.push_str(&plan.render());
    for hook in planner.hooks() {
        // Infallible: writing to a String.
        let _ = writeln!(
            out,
            "# hook: -t {} -A {} {}",
            hook.table, hook.chain, hook.rule
        );
    }
    out
}

#[async_trait]
impl Dataplane for IptablesDataplane {
    fn name(&self) -> &'static str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        Self::supported()
    }

    async fn sync(&mut self, request: SyncRequest<'_>) -> Result<SyncReport, DataplaneError> {
        self.sync_inner(request)
            .await
            .map_err(IptablesError::into_dataplane)
    }

    async fn cleanup(&mut self) -> Result<CleanupReport, DataplaneError> {
        let runners = self
            .runners()
            .await
            .map_err(IptablesError::into_dataplane)?;
        self.ensure_owner().map_err(IptablesError::into_dataplane)?;
        let hooks = self.planner.hooks();
        let hooks = off_runtime(&runners.hooks, move |ops| remove_hooks(ops, &hooks))
            .await
            .map_err(IptablesError::into_dataplane)?;
        let chains = cleanup_chains(
            runners.restore.as_ref(),
            runners.save.as_ref(),
            self.planner.names(),
        )
        .await
        .map_err(IptablesError::into_dataplane)?;
        self.applied = Applied::new();
        self.hooks_ensured = false;
        Ok(CleanupReport {
            objects_removed: hooks + chains,
        })
    }

    /// The header, the full restore input and the hooks (see `svcproxy --dry-run`). Touches
    /// nothing: no variant detection, no tool, no root.
    ///
    /// # Errors
    /// [`DataplaneError::Unsupported`] when the table asks for what this backend lacks (a
    /// scheduler other than `random`).
    fn dry_run(&self, table: &ServiceTable) -> Result<DryRun, DataplaneError> {
        Self::supported().check(NAME, table)?;
        Ok(DryRun::new(render_dry_run(&self.planner, table)))
    }

    /// The canary chains and the first hook of each table, in both families ([`find_drift`]),
    /// off the async threads. `false` before anything is programmed, and while the next sync is
    /// full anyway (after a failure).
    ///
    /// # Errors
    /// [`DataplaneError::Backend`] when `iptables` could not run.
    async fn check_drift(&mut self) -> Result<bool, DataplaneError> {
        let Some(runners) = self.runners.clone() else {
            return Ok(false);
        };
        if self.applied.is_empty() || !self.hooks_ensured {
            return Ok(false);
        }
        let canary = self.planner.names().canary();
        let hooks = self.planner.hooks();
        let found = off_runtime(&runners.hooks, move |ops| find_drift(ops, &canary, &hooks))
            .await
            .map_err(IptablesError::into_dataplane)?;
        let Some(found) = found else {
            return Ok(false);
        };
        // The sync loop logs the drift at warn; what it was is this backend's detail.
        info!(%found, "iptables drift");
        // The full sync the loop now runs reads our chains back; the hooks go in again too.
        self.hooks_ensured = false;
        Ok(true)
    }

    /// Registers [`Metrics`] (kube-proxy's iptables series) under `kubeproxy` in the root
    /// `registry`. Only the first call registers: `proxy_core::SyncLoop::new` calls it too, so an
    /// embedder that already did (to drive the dataplane itself, say) gets no duplicate series.
    fn register_metrics(&mut self, registry: &mut Registry) {
        if self.metrics.is_some() {
            debug!("iptables metrics already registered");
            return;
        }
        self.metrics = Some(Metrics::register(registry));
    }
}
