//! [`IptablesDataplane`]: the [`Dataplane`] the sync loop drives. Each sync plans against what
//! is applied, applies, and records the result; a full sync first reads the kernel back
//! ([`crate::observe`]) so drift is repaired and stale chains are deleted, then ensures the hooks.
//! A failed apply forgets what is applied, so the next sync is full.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use proxy_core::dataplane::{CleanupReport, SyncProblem, SyncReport};
use proxy_core::table::Scheduler;
use proxy_core::{Capabilities, Dataplane, DataplaneError, Protocol, SyncMode, SyncRequest};
use tracing::{debug, info, warn};

use crate::apply::{apply_plan, RestoreRunner};
use crate::cleanup::cleanup_chains;
use crate::conntrack::{flush_stale, plan_conntrack, ConntrackOps};
use crate::error::IptablesError;
use crate::hooks::{canaries_present, ensure_hooks, remove_hooks, HookError, HookOps};
use crate::metrics::Metrics;
use crate::observe::{observe, SaveRunner};
use crate::plan::{Applied, Hook, Planner};

/// The backend's name in logs, metrics and reports.
pub const NAME: &str = "iptables";

/// The iptables backend.
#[derive(Debug)]
pub struct IptablesDataplane {
    planner: Planner,
    restore: Arc<dyn RestoreRunner>,
    save: Arc<dyn SaveRunner>,
    hooks: Arc<dyn HookOps>,
    applied: Applied,
    hooks_ensured: bool,
    metrics: Option<Metrics>,
    conntrack: Option<Arc<dyn ConntrackOps>>,
}

impl IptablesDataplane {
    /// A dataplane writing through `restore`, reading through `save`, hooking through `hooks`.
    pub fn new(
        planner: Planner,
        restore: Arc<dyn RestoreRunner>,
        save: Arc<dyn SaveRunner>,
        hooks: Arc<dyn HookOps>,
    ) -> Self {
        Self {
            planner,
            restore,
            save,
            hooks,
            applied: Applied::new(),
            hooks_ensured: false,
            metrics: None,
            conntrack: None,
        }
    }

    /// A dataplane on this host's iptables: detects legacy or nft as kube-proxy does, then writes
    /// with that variant's `iptables-restore`, reads back with its `iptables-save`, hooks with
    /// `iptables`, and deletes stale UDP conntrack entries over ctnetlink.
    ///
    /// # Errors
    /// [`IptablesError::Config`] for a bad configuration, [`IptablesError::Detect`] when no
    /// usable `iptables` is installed.
    pub fn system(config: crate::Config) -> Result<Self, IptablesError> {
        let planner = Planner::new(config)?;
        let variant = crate::apply::detect_variant().map_err(IptablesError::Detect)?;
        let runner = Arc::new(crate::apply::CommandRunner::new(variant));
        let hooks = Arc::new(crate::hooks::IptablesHooks::new(variant));
        Ok(Self::new(planner, runner.clone(), runner, hooks)
            .with_conntrack(Arc::new(crate::conntrack::Netlink)))
    }

    /// What a full sync to `table` would write (every restore input), for `--dry-run`.
    pub fn plan_full(&self, table: &proxy_core::ServiceTable) -> crate::Plan {
        self.planner.plan_full(table)
    }

    /// The same dataplane, deleting stale UDP conntrack entries after each sync through `ops`
    /// (usually [`crate::conntrack::Netlink`]).
    pub fn with_conntrack(mut self, ops: Arc<dyn ConntrackOps>) -> Self {
        self.conntrack = Some(ops);
        self
    }

    /// The same dataplane, recording into `metrics` (see [`Metrics::register`]).
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// What this backend implements (also [`Dataplane::capabilities`]).
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

    async fn run_hooks(
        &self,
        f: fn(&dyn HookOps, &[Hook]) -> Result<usize, HookError>,
    ) -> Result<usize, IptablesError> {
        let ops = Arc::clone(&self.hooks);
        let hooks = self.planner.hooks();
        // The `iptables` crate blocks (one process per call).
        tokio::task::spawn_blocking(move || f(ops.as_ref(), &hooks))
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

    async fn canaries_present(&self) -> Result<bool, IptablesError> {
        let ops = Arc::clone(&self.hooks);
        let canary = self.planner.names().canary();
        tokio::task::spawn_blocking(move || canaries_present(ops.as_ref(), &canary))
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

    async fn sync_inner(&mut self, request: SyncRequest<'_>) -> Result<SyncReport, IptablesError> {
        let started = Instant::now();
        let mut mode = if self.applied.is_empty() {
            SyncMode::Full
        } else {
            request.mode
        };
        if mode == SyncMode::Partial && !self.canaries_present().await? {
            info!("canary chain missing: a table was flushed behind our back, syncing fully");
            mode = SyncMode::Full;
            self.hooks_ensured = false;
        }
        if mode == SyncMode::Full {
            let observed = observe(self.save.as_ref(), self.planner.names()).await?;
            let drift = observed.drift(&self.applied);
            if !self.applied.is_empty() && !drift.is_empty() {
                info!(chains = drift.len(), "iptables drift found, repairing");
            }
            self.applied = observed.to_applied();
        }
        let plan = self
            .planner
            .plan(request.desired, request.changes, &self.applied, mode);
        let applied = apply_plan(self.restore.as_ref(), &plan).await;
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
            let inserted = self.run_hooks(ensure_hooks).await?;
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
                        out.problems.push(SyncProblem {
                            object: "conntrack".into(),
                            reason: e.to_string(),
                        });
                    }
                    Err(e) => out.problems.push(SyncProblem {
                        object: "conntrack".into(),
                        reason: e.to_string(),
                    }),
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
        let hooks = self
            .run_hooks(remove_hooks)
            .await
            .map_err(IptablesError::into_dataplane)?;
        let chains = cleanup_chains(
            self.restore.as_ref(),
            self.save.as_ref(),
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
}
