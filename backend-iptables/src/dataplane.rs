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
//! **Families.** A family the table has nothing in (IPv6, for an IPv4-only table) is left
//! alone: no chain, no hook, no process, once a first full sync has read it and removed what an
//! earlier run left there. The first service port of that family makes the next sync full, which
//! programs it; when its last one goes, the next full sync removes our chains and hooks there.
//!
//! **Fixed cost.** A full sync runs, per family it programs, one `iptables-save` (every table)
//! and one `iptables-restore` (both tables, with the missing hooks as `-I` lines: see
//! [`crate::hooks`]); a partial one, one restore per family it writes in.
//!
//! **Drift.** [`Dataplane::check_drift`] reads each programmed family with one `iptables-save`
//! and compares a fingerprint of what we own with the one verified after the last apply, parsing
//! only when it changed: a rule inserted into or deleted from one of our chains, a deleted chain,
//! a flushed table or a missing hook is repaired by the full sync the loop then runs. At large
//! sizes the check spaces itself out to stay within a CPU budget, with the cheaper canary check
//! ([`find_drift`]) in between (see [`Dataplane::check_drift`]).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use prometheus_client::registry::Registry;
use proxy_core::dataplane::{CleanupReport, DryRun, SyncProblem, SyncReport};
use proxy_core::error::error_chain;
use proxy_core::lock::{LockKey, NetnsId, OwnerLock, DEFAULT_LOCK_DIR};
use proxy_core::table::Scheduler;
use proxy_core::{
    Capabilities, Dataplane, DataplaneError, Protocol, ServiceTable, SyncMode, SyncRequest,
};
use tracing::{debug, info};

use crate::apply::{apply_restores, detect_variant, CommandRunner, RestoreRunner, Variant};
use crate::cleanup::{cleanup, removal};
use crate::config::IptablesConfig;
use crate::conntrack::{flush_stale, plan_conntrack, ConntrackOps, Netlink, NetnsNetlink};
use crate::error::IptablesError;
use crate::hooks::{
    canaries_present, find_drift, missing_hooks, BuiltinEdits, HookError, HookOps, IptablesHooks,
};
use crate::metrics::Metrics;
use crate::observe::{observe_saved, save_families, Fingerprint, SaveRunner};
use crate::plan::{family_view, Applied, Planner};
use crate::rules::Family;

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
    /// A full sync succeeded and nothing since (a failure, drift, a cleanup) says our state may
    /// be off: partial syncs may trust `applied`.
    synced: bool,
    /// What we know of our state in each family ([`slot`]).
    families: [FamilyState; 2],
    drift: DriftCheck,
    metrics: Option<Metrics>,
    conntrack: Option<Arc<dyn ConntrackOps>>,
    owner: OwnerLock,
}

/// The effects a sync goes through.
#[derive(Debug, Clone)]
struct Runners {
    restore: Arc<dyn RestoreRunner>,
    save: Arc<dyn SaveRunner>,
    hooks: Arc<dyn HookOps>,
}

/// What we know of our state in one address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FamilyState {
    /// Not read yet (at start, or after a failed restore): it may hold our chains from an earlier
    /// run, so the next full sync reads it.
    Unknown,
    /// Holds nothing of ours, and the table needs nothing there: syncs leave it alone (no
    /// process at all).
    Empty,
    /// We program it: fixed chains, hooks and the table's service ports of that family.
    Programmed,
}

/// The index of a family in per-family arrays.
fn slot(family: Family) -> usize {
    match family {
        Family::V4 => 0,
        Family::V6 => 1,
    }
}

/// Share of one core the save-based drift check may take on average: when one check costs more
/// than this share of the time until the next one, the next one waits longer (cost / budget).
pub const DRIFT_CHECK_CPU_BUDGET: f64 = 0.04;

/// Share of one core the canary check ([`find_drift`]) may take, at the drift-check periods
/// between two save-based checks; it runs there only when it is the cheaper of the two (with
/// `iptables-legacy`, each of its four processes per family reads the whole table, so at scale
/// it costs more than one save).
pub const CANARY_CHECK_CPU_BUDGET: f64 = 0.01;

/// A save-based drift check cheaper than this runs at every drift-check period, whatever the
/// budget says (1 % of a core at the default 2 s period).
pub const DRIFT_CHECK_ALWAYS_BELOW: Duration = Duration::from_millis(20);

/// The drift checks' state: what the last ones cost and when the next ones are due.
#[derive(Debug, Default)]
struct DriftCheck {
    /// The fingerprints of the last save whose typed reading matched `applied`; `None` after
    /// each apply (our own writes change them), so the next check parses once.
    verified: Option<Vec<(Family, Fingerprint)>>,
    /// When the next save-based check is due; `None`: at the next check.
    next_full: Option<Instant>,
    /// What the last save-based check cost (wall time: saves, hashing, parsing).
    full_cost: Duration,
    /// When the next canary check may run; `None`: at the next check it is wanted at.
    next_canary: Option<Instant>,
    /// What the last canary check cost; `None` until one ran.
    canary_cost: Option<Duration>,
}

/// Which drift check a period runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    /// The save-based check.
    Full,
    /// The canary check.
    Canary,
    /// None: both would exceed their budget.
    Nothing,
}

impl DriftCheck {
    fn due(&self, now: Instant) -> Due {
        if self.next_full.is_none_or(|due| now >= due) {
            Due::Full
        } else if self.canary_cost.is_none_or(|c| c < self.full_cost)
            && self.next_canary.is_none_or(|due| now >= due)
        {
            Due::Canary
        } else {
            Due::Nothing
        }
    }

    /// After a save-based check that started at `started` and took `cost`: the next one is due
    /// once `cost` is at most [`DRIFT_CHECK_CPU_BUDGET`] of the time since this one started.
    fn ran_full(&mut self, started: Instant, cost: Duration) {
        self.full_cost = cost;
        self.next_full = (cost > DRIFT_CHECK_ALWAYS_BELOW)
            .then(|| started + cost.div_f64(DRIFT_CHECK_CPU_BUDGET));
    }

    /// After a canary check, likewise with [`CANARY_CHECK_CPU_BUDGET`].
    fn ran_canary(&mut self, started: Instant, cost: Duration) {
        self.canary_cost = Some(cost);
        self.next_canary = Some(started + cost.div_f64(CANARY_CHECK_CPU_BUDGET));
    }
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
            synced: false,
            families: [FamilyState::Unknown; 2],
            drift: DriftCheck::default(),
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
            synced: false,
            families: [FamilyState::Unknown; 2],
            drift: DriftCheck::default(),
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
        self.owner.path()
    }

    /// Takes the one-owner lock if it is due and not yet held.
    ///
    /// # Errors
    /// [`IptablesError::Lock`]: held by another instance (named), or not takeable.
    fn ensure_owner(&mut self) -> Result<(), IptablesError> {
        let planner = &self.planner;
        let key = || {
            let netns = NetnsId::for_lock(planner.config().netns.as_deref())?;
            Ok(LockKey::new(netns, NAME, planner.names().prefix()))
        };
        if let Some(lock) = self.owner.ensure(key)? {
            let (netns, prefix) = (lock.key().netns, &lock.key().scope);
            info!(lock = %lock.path().display(), %netns, %prefix, "iptables owner lock taken");
        }
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
        // Before the first plan: the layout that restores faster with this variant.
        self.planner = self.planner.for_variant(variant);
        self.runners = Some(runners.clone());
        Ok(runners)
    }

    /// The families we program now.
    fn programmed(&self) -> Vec<Family> {
        Family::ALL
            .into_iter()
            .filter(|f| self.families[slot(*f)] == FamilyState::Programmed)
            .collect()
    }

    async fn sync_inner(&mut self, request: SyncRequest<'_>) -> Result<SyncReport, IptablesError> {
        let started = Instant::now();
        let runners = self.runners().await?;
        self.ensure_owner()?;
        let wanted = wanted_families(request.desired);
        let mut mode = if self.synced {
            request.mode
        } else {
            SyncMode::Full
        };
        if mode == SyncMode::Partial {
            if let Some(family) = Family::ALL
                .into_iter()
                .find(|f| wanted[slot(*f)] && self.families[slot(*f)] != FamilyState::Programmed)
            {
                // Its fixed chains and hooks are not there yet: a full sync reads and writes them.
                info!(%family, "first service port of a family, syncing fully");
                mode = SyncMode::Full;
            }
        }
        let canary = self.planner.names().canary();
        let programmed = self.programmed();
        if mode == SyncMode::Partial
            && !off_runtime(&runners.hooks, move |ops| {
                canaries_present(ops, &canary, &programmed)
            })
            .await?
        {
            info!("canary chain missing: a table was flushed behind our back, syncing fully");
            mode = SyncMode::Full;
        }
        let hooks = self.planner.hooks();
        let mut edits = BuiltinEdits::new();
        let mut retire = Vec::new();
        let mut emptied = Vec::new();
        if mode == SyncMode::Full {
            // One save per family we program or may own something in; a family known to hold
            // nothing of ours that the table does not need is not touched at all.
            let read: Vec<Family> = Family::ALL
                .into_iter()
                .filter(|f| wanted[slot(*f)] || self.families[slot(*f)] != FamilyState::Empty)
                .collect();
            let saved = save_families(runners.save.as_ref(), &read).await?;
            let observed = observe_saved(&saved, self.planner.names());
            let drift = observed.drift(&self.applied);
            if self.synced && !drift.is_empty() {
                info!(
                    chains = drift.len(),
                    first = ?drift.first(),
                    "iptables drift found, repairing"
                );
            }
            self.applied = observed.to_applied();
            for family in &saved {
                if wanted[slot(family.family)] {
                    edits.insert(family.family, &missing_hooks(&family.text, &hooks));
                } else {
                    // Nothing to program here: remove what we own (an earlier run's chains), then
                    // leave the family alone.
                    let (restores, deletions) = removal(family, self.planner.names(), &hooks);
                    if !restores.is_empty() || !deletions.is_empty() {
                        let chains: usize = restores.iter().map(|r| r.table.deleted.len()).sum();
                        info!(
                            family = %family.family,
                            chains,
                            hooks = deletions.len(),
                            "removing our state from a family the table does not use"
                        );
                    }
                    retire.extend(restores);
                    edits.extend(deletions);
                    emptied.push(family.family);
                }
            }
        }
        let mut plan = self
            .planner
            .plan(request.desired, request.changes, &self.applied, mode);
        let keep = match plan.mode {
            SyncMode::Full => wanted,
            SyncMode::Partial => {
                let programmed = self.programmed();
                Family::ALL.map(|f| programmed.contains(&f))
            }
        };
        plan.retain_families(|f| keep[slot(f)]);
        let applied = apply_restores(
            runners.restore.as_ref(),
            plan.restores.iter().chain(&retire),
            &edits,
        )
        .await;
        // Our own writes change what a save shows: the next drift check reads it typed.
        self.drift.verified = None;
        let report = match applied {
            Ok(report) => report,
            Err(e) => {
                if let Some(m) = &self.metrics {
                    m.record_failure(plan.mode);
                }
                // Some restores of the plan may have run: the state is unknown until a full sync,
                // which reads every family again.
                self.applied = Applied::new();
                self.synced = false;
                self.families = [FamilyState::Unknown; 2];
                return Err(e);
            }
        };
        self.applied.commit(&plan);
        if plan.mode == SyncMode::Full {
            for family in Family::ALL {
                if wanted[slot(family)] {
                    self.families[slot(family)] = FamilyState::Programmed;
                }
            }
            for family in emptied {
                self.families[slot(family)] = FamilyState::Empty;
            }
            self.synced = true;
        }
        if report.hooks_inserted > 0 {
            info!(inserted = report.hooks_inserted, "iptables hooks inserted");
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
                    // A problem, which the sync loop logs: not logged here too.
                    Ok(Err(e)) => out
                        .problems
                        .push(SyncProblem::new("conntrack", error_chain(&e))),
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
            hooks_inserted = report.hooks_inserted,
            hooks_deleted = report.hooks_deleted,
            rules_written = report.rules_written,
            chains_written = report.chains_written,
            chains_deleted = report.chains_deleted,
            "iptables sync"
        );
        Ok(out)
    }
}

/// Which families `table` has anything in (a service address, or a node port's endpoints):
/// the others get nothing beyond the fixed chains, so the dataplane leaves them alone. Stops
/// at the first port of each family, so a dual-stack table costs a port or two.
fn wanted_families(table: &ServiceTable) -> [bool; 2] {
    let mut wanted = [false; 2];
    for port in table.iter() {
        for family in Family::ALL {
            if !wanted[slot(family)] && family_view(port, family).is_some() {
                wanted[slot(family)] = true;
            }
        }
        if wanted == [true; 2] {
            break;
        }
    }
    wanted
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

impl IptablesDataplane {
    /// The save-based drift check (see [`Dataplane::check_drift`]): what drifted, for the log.
    async fn saved_drift(
        &mut self,
        save: &dyn SaveRunner,
        families: &[Family],
    ) -> Result<Option<String>, IptablesError> {
        let saved = save_families(save, families).await?;
        let names = self.planner.names();
        let prints: Vec<(Family, Fingerprint)> = saved
            .iter()
            .map(|s| (s.family, Fingerprint::of(s, names)))
            .collect();
        if self.drift.verified.as_ref() == Some(&prints) {
            return Ok(None);
        }
        let observed = observe_saved(&saved, names);
        let chains = observed.drift(&self.applied);
        if let Some((family, table, chain)) = chains.first() {
            return Ok(Some(format!(
                "{family} {table}: chain {chain} differs from what we wrote ({} chain(s) in all)",
                chains.len()
            )));
        }
        let hooks = self.planner.hooks();
        for s in &saved {
            if let Some(hook) = missing_hooks(&s.text, &hooks).first() {
                return Ok(Some(format!(
                    "{} {}: hook -A {} {} missing",
                    s.family, hook.table, hook.chain, hook.rule
                )));
            }
        }
        self.drift.verified = Some(prints);
        Ok(None)
    }
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

    /// Deletes every hook and chain of ours in both families ([`cleanup`]): one save per
    /// family, and one restore per family that holds something of ours.
    async fn cleanup(&mut self) -> Result<CleanupReport, DataplaneError> {
        let runners = self
            .runners()
            .await
            .map_err(IptablesError::into_dataplane)?;
        self.ensure_owner().map_err(IptablesError::into_dataplane)?;
        let removed = cleanup(
            runners.restore.as_ref(),
            runners.save.as_ref(),
            self.planner.names(),
            &self.planner.hooks(),
        )
        .await;
        self.applied = Applied::new();
        self.synced = false;
        self.drift = DriftCheck::default();
        let removed = match removed {
            Ok(removed) => removed,
            Err(e) => {
                self.families = [FamilyState::Unknown; 2];
                return Err(e.into_dataplane());
            }
        };
        self.families = [FamilyState::Empty; 2];
        Ok(CleanupReport {
            objects_removed: removed.hooks + removed.chains,
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

    /// Whether our state changed behind our back, in the families we program; `false` before
    /// anything is programmed, and while the next sync is full anyway (after a failure).
    ///
    /// The check reads each programmed family with one `iptables-save` and compares a
    /// [`Fingerprint`] of what we own there (our chains' lines, counters stripped, and the hooks)
    /// with the one verified after the last apply; only when it differs (or after an apply) are
    /// our chains parsed and compared with what we applied, and the hooks looked for. So a rule
    /// inserted into or deleted from one of our chains, a deleted chain, a flushed table or a
    /// missing hook is found at the next check, and an unchanged ruleset costs a save and a hash.
    ///
    /// Cost: at small sizes one save per period (a few ms: it runs at every period below
    /// [`DRIFT_CHECK_ALWAYS_BELOW`]). When a save-based check costs more, the next one waits
    /// until the check takes at most [`DRIFT_CHECK_CPU_BUDGET`] of a core (so drift inside our
    /// chains is found within cost / budget: about 4 s at 10,000 IPv4 service ports with
    /// `iptables-legacy`, about 40 s with `iptables-nft`, whose save is slower; see the README),
    /// and at the periods in between the canary check ([`find_drift`]: the canary chains and
    /// each table's first hook, so a flushed table is still found quickly) runs when it is the
    /// cheaper of the two, within [`CANARY_CHECK_CPU_BUDGET`].
    ///
    /// # Errors
    /// [`DataplaneError::Backend`] when `iptables-save` or `iptables` could not run.
    async fn check_drift(&mut self) -> Result<bool, DataplaneError> {
        let Some(runners) = self.runners.clone() else {
            return Ok(false);
        };
        let programmed = self.programmed();
        if !self.synced || programmed.is_empty() {
            return Ok(false);
        }
        let now = Instant::now();
        let found = match self.drift.due(now) {
            Due::Full => {
                let found = self
                    .saved_drift(runners.save.as_ref(), &programmed)
                    .await
                    .map_err(IptablesError::into_dataplane)?;
                let cost = now.elapsed();
                self.drift.ran_full(now, cost);
                debug!(
                    cost_ms = cost.as_secs_f64() * 1e3,
                    next_in_ms = self
                        .drift
                        .next_full
                        .map(|t| t.saturating_duration_since(now).as_secs_f64() * 1e3),
                    "iptables save-based drift check"
                );
                found
            }
            Due::Canary => {
                let canary = self.planner.names().canary();
                let hooks = self.planner.hooks();
                let found = off_runtime(&runners.hooks, move |ops| {
                    find_drift(ops, &canary, &hooks, &programmed)
                })
                .await
                .map_err(IptablesError::into_dataplane)?;
                let cost = now.elapsed();
                self.drift.ran_canary(now, cost);
                debug!(
                    cost_ms = cost.as_secs_f64() * 1e3,
                    "iptables canary drift check"
                );
                found
            }
            Due::Nothing => None,
        };
        let Some(found) = found else {
            return Ok(false);
        };
        // The sync loop logs the drift at warn and counts it; what it was is this backend's detail.
        info!(%found, "iptables drift");
        // The full sync the loop now runs reads our chains back and puts the hooks in again.
        self.synced = false;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cheap_save_based_check_runs_at_every_period() {
        let mut check = DriftCheck::default();
        let t0 = Instant::now();
        assert_eq!(check.due(t0), Due::Full);
        check.ran_full(t0, Duration::from_millis(5));
        assert_eq!(check.due(t0), Due::Full);
    }

    #[test]
    fn a_costly_save_based_check_waits_out_its_budget_with_the_cheaper_canary_between() {
        let mut check = DriftCheck::default();
        let t0 = Instant::now();
        // 1 s per save (iptables-nft at 10,000 ports): the next one 25 s later.
        check.ran_full(t0, Duration::from_secs(1));
        assert_eq!(check.due(t0 + Duration::from_secs(2)), Due::Canary);
        assert_eq!(check.due(t0 + Duration::from_secs(25)), Due::Full);
        // A 100 ms canary check: at most every 10 s.
        let t1 = t0 + Duration::from_secs(2);
        check.ran_canary(t1, Duration::from_millis(100));
        assert_eq!(check.due(t1 + Duration::from_secs(2)), Due::Nothing);
        assert_eq!(check.due(t1 + Duration::from_secs(10)), Due::Canary);
    }

    #[test]
    fn a_canary_check_dearer_than_a_save_is_not_run() {
        let mut check = DriftCheck::default();
        let t0 = Instant::now();
        // iptables-legacy at 10,000 ports: a save 170 ms, four canary processes 370 ms.
        check.ran_full(t0, Duration::from_millis(170));
        check.ran_canary(t0, Duration::from_millis(370));
        assert_eq!(check.due(t0 + Duration::from_secs(2)), Due::Nothing);
        assert_eq!(
            check.due(t0 + Duration::from_millis(170).div_f64(DRIFT_CHECK_CPU_BUDGET)),
            Due::Full
        );
    }
}
