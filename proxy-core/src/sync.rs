//! The sync loop that feeds a [`Dataplane`] from a [`ServiceSource`], at a bounded rate, and
//! tells the embedder what each sync did through a [`SyncHandle`].
//!
//! [`SyncLoop`] is kube-proxy's `BoundedFrequencyRunner` plus the bookkeeping around
//! `syncProxyRules` (`pkg/util/async/bounded_frequency_runner.go`, `pkg/proxy/iptables/proxier.go`):
//!
//! - **Coalescing.** No two syncs start closer than [`SyncConfig::min_sync_period`]; tables that
//!   arrive meanwhile replace one another and the newest is synced when the period is over.
//! - **Change sets.** Each sync gets `diff(last_good, desired)`, where `last_good` is the last
//!   table a sync *succeeded* with, so a failed sync's changes are never lost.
//! - **Modes.** The first sync, every retry after a failure or degraded sync, and the periodic
//!   resync every [`SyncConfig::full_sync_period`] (which repairs drift) are [`SyncMode::Full`];
//!   the others [`SyncMode::Partial`].
//! - **Drift checks.** While idle after a successful sync, the loop asks the dataplane every
//!   [`SyncConfig::drift_check_period`] whether its state is still in place
//!   ([`Dataplane::check_drift`], cheap: a flushed table, a deleted chain). Drift found forces a
//!   full sync at once (within the minimum period), is counted
//!   (`svcproxy_sync_drift_detected_total`), logged at warn and shown by [`SyncHealth`] until
//!   repaired. What a cheap check cannot see is repaired by the periodic resync.
//! - **Node addresses.** When the dataplane follows the node's addresses
//!   ([`Dataplane::node_addresses`]), each change queues a partial sync (within the minimum
//!   period) in which the backend re-plans only what depends on them (its node ports).
//! - **Retries.** A failed sync is retried in full after a bounded exponential backoff
//!   ([`SyncConfig::retry_backoff_initial`] doubling up to [`SyncConfig::retry_backoff_max`]); the
//!   dataplane keeps its last good state meanwhile. A new table is synced without waiting for the
//!   backoff (it may fix what failed). A degraded sync (a report with problems) counts as a
//!   success but is retried the same way.
//! - **Per-port isolation.** A service port asking for what the backend lacks is left out of the
//!   table the dataplane sees and reported as skipped (the [`crate::tracker::ChangeTracker`]
//!   already skips those, and invalid or clashing ports, keeping their last good versions); the
//!   rest applies. Only what is truly whole-table fails a sync (the kernel refused it).
//! - **Feedback.** After every sync the loop publishes a [`SyncOutcome`] (the generation applied,
//!   the backend's problems, the skipped ports, timings) on its [`SyncHandle`], which also asks
//!   the running loop for a resync or a dry run.
//! - **Health.** [`SyncHealth`] turns unhealthy when work has been pending (a table not yet
//!   synced, or a failed sync not yet repaired) for longer than the health timeout, like
//!   kube-proxy's `/healthz` (KEP-3836), and shows degraded, with the problems, while a sync left
//!   something out or ports are skipped.
//! - **Shutdown.** The shutdown future stops the loop (a sync in progress finishes first) and runs
//!   [`Dataplane::cleanup`] if [`SyncConfig::cleanup_on_shutdown`]. When the source closes, the
//!   newest table still queued is synced once, and the loop returns.
//!
//! All timing uses `tokio::time`, so tests run with paused time.
//!
//! ```
//! use prometheus_client::registry::Registry;
//! use proxy_core::sync::{SyncConfig, SyncLoop};
//! use proxy_core::testing::fake::FakeDataplane;
//! use proxy_core::ServiceTable;
//!
//! # tokio_test_block_on(async {
//! let fake = FakeDataplane::new();
//! let mut registry = Registry::default();
//! let sync = SyncLoop::new(fake.clone(), SyncConfig::default(), &mut registry);
//! let handle = sync.handle();
//! let (tx, rx) = tokio::sync::watch::channel(ServiceTable::empty());
//! tx.send(ServiceTable::empty()).unwrap();
//! drop(tx); // the source closes: the loop syncs what is queued and returns
//! let _dataplane = sync.run(rx, std::future::pending()).await.unwrap();
//! assert_eq!(fake.requests().len(), 1);
//! assert!(handle.health().has_synced());
//! assert_eq!(handle.latest().sequence, 1);
//! # });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
//! # }
//! ```

use std::future::Future;
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, debug_span, error, info, info_span, warn, Instrument as _};

use crate::dataplane::{Dataplane, SyncMode, SyncReport, SyncRequest};
use crate::diff::{diff, ChangeSet};
use crate::error::{error_chain, DataplaneError};
use crate::metrics::{FailureReason, SyncMetrics, SyncResult};
use crate::node_addresses::NodeAddresses;
use crate::table::{PortMap, ServiceTable};
use imbl::ordmap::DiffItem;

mod config;
mod handle;
mod health;

pub use crate::source::{ServiceSource, SkipReason, Skipped, SkippedPort, TableUpdate};
pub use config::SyncConfig;
pub use handle::{DryRunError, LoopStopped, SyncHandle, SyncOutcome, SyncStatus};
pub use health::{SyncFailure, SyncHealth};

use handle::Command;

/// How many handle requests may wait for the loop.
const COMMAND_QUEUE: usize = 16;

// === SyncLoop ===

/// One sync as it was started, and how long it took.
#[derive(Debug)]
struct Attempt {
    desired: ServiceTable,
    generation: u64,
    mode: SyncMode,
    started: Instant,
    elapsed: Duration,
    changes: ChangeSet,
}

/// Waits for the next change of `source`; `false` when it will change no more. Never ready
/// without a source. Cancel-safe, as [`NodeAddresses::changed`] is.
async fn node_addresses_changed(source: &mut Option<NodeAddresses>) -> bool {
    match source {
        Some(source) => source.changed().await,
        None => std::future::pending().await,
    }
}

/// Why [`SyncLoop::run`] ended badly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncLoopError {
    /// The cleanup run on shutdown failed; what could be removed was.
    #[error("cleanup on shutdown failed")]
    Cleanup(#[source] DataplaneError),
}

/// Feeds a [`Dataplane`] from a [`ServiceSource`]; see the [module docs](self).
#[derive(Debug)]
pub struct SyncLoop<D> {
    dataplane: D,
    config: SyncConfig,
    metrics: SyncMetrics,
    health: SyncHealth,
    state: LoopState,
    outcomes: watch::Sender<SyncOutcome>,
    commands: mpsc::Receiver<Command>,
    /// The sender handles clone; dropped when the loop runs, so that the channel closes with
    /// the last handle.
    commands_tx: Option<mpsc::Sender<Command>>,
}

/// What the loop knows between events.
#[derive(Debug)]
struct LoopState {
    /// The table the last successful sync implemented (empty before the first).
    last_good: ServiceTable,
    /// The generation of `last_good`.
    good_generation: u64,
    /// The newest table from the source, as it came (before the capability filter).
    source: ServiceTable,
    /// The newest accepted table, less the ports the backend cannot do: what the loop converges
    /// to. `None` before the first.
    desired: Option<ServiceTable>,
    /// The generation of `desired`.
    generation: u64,
    /// Ports the source skipped, and those the capability filter left out.
    skipped: Skipped,
    /// Ports of `source` the backend cannot do (a subset of `skipped`).
    unsupported: Skipped,
    /// A table arrived since the last sync started.
    queued: bool,
    /// The next sync must be full (first sync, after a failure or degraded sync).
    need_full: bool,
    /// When the last sync started.
    last_start: Option<Instant>,
    /// When the next periodic full resync is due (set by each successful full sync).
    next_full: Option<Instant>,
    /// When a failed or degraded sync is retried.
    retry_at: Option<Instant>,
    /// When the dataplane is next asked whether its state drifted (set by each sync and check).
    next_drift_check: Option<Instant>,
    /// The wait before the next retry.
    backoff: Duration,
    /// Syncs run so far.
    sequence: u64,
}

impl<D: Dataplane> SyncLoop<D> {
    /// A loop driving `dataplane`. Registers in `registry` the loop's metrics and, through
    /// [`Dataplane::register_metrics`], the dataplane's: one registry, one convention
    /// (`kubeproxy_` for kube-proxy's names, `svcproxy_` for ours), whatever the backend.
    ///
    /// # Panics
    /// In debug builds, if `registry` already holds the sync metrics (see
    /// [`SyncMetrics::register`]).
    pub fn new(mut dataplane: D, config: SyncConfig, registry: &mut Registry) -> Self {
        let metrics = SyncMetrics::register(registry);
        dataplane.register_metrics(registry);
        let health = SyncHealth::new(config.health_timeout());
        let state = LoopState {
            last_good: ServiceTable::empty(),
            good_generation: 0,
            source: ServiceTable::empty(),
            desired: None,
            generation: 0,
            skipped: Skipped::new(),
            unsupported: Skipped::new(),
            queued: false,
            need_full: true,
            last_start: None,
            next_full: None,
            retry_at: None,
            next_drift_check: None,
            backoff: config.retry_backoff_initial,
            sequence: 0,
        };
        let (outcomes, _) = watch::channel(SyncOutcome::initial());
        let (commands_tx, commands) = mpsc::channel(COMMAND_QUEUE);
        Self {
            dataplane,
            config,
            metrics,
            health,
            state,
            outcomes,
            commands,
            commands_tx: Some(commands_tx),
        }
    }

    /// A handle on the loop's health, valid after the loop is moved into [`SyncLoop::run`].
    pub fn health(&self) -> SyncHealth {
        self.health.clone()
    }

    /// The embedder's handle: outcomes, waiting for a generation, resync, dry run. Valid before
    /// and after the loop is moved into [`SyncLoop::run`].
    pub fn handle(&self) -> SyncHandle {
        let (commands, _) = mpsc::channel(1);
        SyncHandle {
            outcomes: self.outcomes.subscribe(),
            // Before `run`, the loop always holds its sender.
            commands: self.commands_tx.clone().unwrap_or(commands),
            health: self.health.clone(),
        }
    }

    /// The dataplane, before the loop runs.
    pub fn dataplane(&self) -> &D {
        &self.dataplane
    }

    /// Runs until `shutdown` completes or `source` closes, and returns the dataplane.
    ///
    /// On shutdown, a sync in progress finishes first, then [`Dataplane::cleanup`] runs if the
    /// config asks for it. When the source closes, a table still queued is synced once (after
    /// the minimum period), pending retries are abandoned, and no cleanup runs.
    ///
    /// # Errors
    /// [`SyncLoopError::Cleanup`] when the cleanup on shutdown failed. Sync failures are not
    /// errors of the loop: they are retried, logged, counted and shown by [`SyncHealth`] and the
    /// [`SyncOutcome`]s.
    pub async fn run<S, F>(mut self, mut source: S, shutdown: F) -> Result<D, SyncLoopError>
    where
        S: ServiceSource,
        F: Future<Output = ()>,
    {
        let backend = self.dataplane.name();
        info!(backend, "sync loop started");
        tokio::pin!(shutdown);
        let mut source_open = true;
        // Drop our own sender, so that the command channel closes with the last handle.
        self.commands_tx = None;
        let mut commands_open = true;
        // The node's addresses, when the backend follows them: a change runs a partial sync.
        let mut node_addresses = self.dataplane.node_addresses();
        loop {
            let due = self.next_due(source_open);
            let drift_due = self.next_drift_check();
            if !source_open && due.is_none() {
                info!(backend, "service source closed, sync loop stopped");
                return Ok(self.dataplane);
            }
            tokio::select! {
                biased;
                () = &mut shutdown => {
                    info!(backend, "shutdown requested, sync loop stopped");
                    return self.shut_down().await;
                }
                command = self.commands.recv(), if commands_open => match command {
                    Some(command) => self.command(command),
                    None => commands_open = false,
                },
                update = source.next_update(), if source_open => match update {
                    Some(update) => self.accept(update),
                    None => source_open = false,
                },
                changed = node_addresses_changed(&mut node_addresses) => {
                    if changed {
                        self.node_addresses_changed();
                    } else {
                        node_addresses = None;
                    }
                }
                () = sleep_until(due) => self.sync().await,
                // After the sync branch: when both are due, the sync goes first and the check
                // moves a period later.
                () = sleep_until(drift_due) => self.check_drift().await,
            }
        }
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Resync => {
                if self.state.desired.is_some() {
                    debug!("resync requested");
                    self.state.need_full = true;
                    self.state.queued = true;
                }
            }
            Command::DryRun(reply) => {
                let table = self.state.desired.clone().unwrap_or_default();
                // The asker may have given up; nothing to do then.
                let _ = reply.send(self.dataplane.dry_run(&table));
            }
        }
    }

    /// The node's addresses changed: queue a sync (partial unless one is due anyway), in which
    /// the backend re-plans what depends on them. Before the first table there is nothing to
    /// re-plan: the first sync reads the addresses as they are then.
    fn node_addresses_changed(&mut self) {
        if self.state.desired.is_some() {
            debug!("node addresses changed");
            self.state.queued = true;
        }
    }

    /// When the next sync should start, or `None` when nothing is to be done.
    fn next_due(&self, source_open: bool) -> Option<Instant> {
        let state = &self.state;
        state.desired.as_ref()?;
        let wanted = if state.queued {
            Instant::now()
        } else if !source_open {
            return None;
        } else if let Some(retry_at) = state.retry_at {
            retry_at
        } else {
            state.next_full?
        };
        let earliest = state
            .last_start
            .map(|start| start + self.config.min_sync_period);
        Some(earliest.map_or(wanted, |earliest| wanted.max(earliest)))
    }

    /// When the dataplane should next be checked for drift, or `None`: checks are off, nothing
    /// has synced yet, or a sync is queued or a retry pending (those are full or coming anyway).
    fn next_drift_check(&self) -> Option<Instant> {
        let state = &self.state;
        if self.config.drift_check_period.is_zero()
            || state.queued
            || state.retry_at.is_some()
            || !self.health.has_synced()
        {
            return None;
        }
        state.next_drift_check
    }

    /// Asks the dataplane whether what it programmed is still in place; if not, queues a full
    /// sync (which still waits for the minimum period).
    async fn check_drift(&mut self) {
        let backend = self.dataplane.name();
        let started = Instant::now();
        let span = debug_span!("drift_check", backend);
        let result = self.dataplane.check_drift().instrument(span).await;
        let now = Instant::now();
        let elapsed_ms = now.saturating_duration_since(started).as_secs_f64() * 1e3;
        self.state.next_drift_check = Some(now + self.config.drift_check_period);
        match result {
            Ok(false) => {}
            Ok(true) => {
                warn!(
                    backend,
                    elapsed_ms, "dataplane changed behind our back (drift check), syncing fully"
                );
                self.metrics.record_drift();
                self.health.record_drift(now);
                self.state.need_full = true;
                self.state.queued = true;
            }
            // Handled here: the next check, or the periodic resync, runs anyway.
            Err(error) => warn!(
                backend,
                error = %error_chain(&error),
                elapsed_ms,
                "drift check failed, checking again next period"
            ),
        }
    }

    /// An update arrived: leave out the ports the backend cannot do, and queue it.
    fn accept(&mut self, update: TableUpdate) {
        let backend = self.dataplane.name();
        let now = Instant::now();
        let TableUpdate {
            table,
            generation,
            skipped,
        } = update;
        let old_source = self.state.source.clone();
        let (table, source_changes) = self.without_unsupported(table);
        let state = &mut self.state;
        let mut skipped = skipped;
        for (name, port) in state.unsupported.iter() {
            skipped.insert(name.clone(), port.clone());
        }
        let before = std::mem::replace(&mut state.skipped, skipped);
        // Said once, when a port's verdict changes, not at every update: the maps share their
        // structure, so the diff costs what changed.
        let mut skipped_changed = false;
        for item in before.diff(&state.skipped) {
            skipped_changed = true;
            match item {
                DiffItem::Add(name, port)
                | DiffItem::Update {
                    new: (name, port), ..
                } => {
                    warn!(backend, generation, service_port = %name, "{port}; the rest applies");
                }
                DiffItem::Remove(name, _) => {
                    info!(backend, generation, service_port = %name, "no longer skipped");
                }
            }
        }
        if skipped_changed {
            self.metrics.set_skipped(&state.skipped);
        }

        let previous = state.desired.as_ref().unwrap_or(&state.last_good);
        // When nothing was left out, before or now, the desired tables are the source's own and
        // the capability filter's diff is this one: no second walk.
        let seen = if previous.ptr_eq(&old_source) && table.ptr_eq(&state.source) {
            source_changes
        } else {
            diff(previous, &table)
        };
        state.generation = generation;
        if seen.is_empty() && state.desired.is_some() {
            debug!(backend, generation, "table unchanged, nothing to sync");
            if !state.queued && state.retry_at.is_none() {
                // Nothing to sync: the generation is in place already.
                self.publish_unchanged(generation);
            }
            return;
        }
        let pending = if previous.ptr_eq(&state.last_good) {
            seen.clone()
        } else {
            diff(&state.last_good, &table)
        };
        self.metrics.record_queued(&seen, &pending);
        debug!(
            backend,
            generation,
            service_ports = table.len(),
            service_ports_changed = seen.service_ports_changed(),
            endpoints_changed = seen.endpoints_changed(),
            "table queued"
        );
        state.desired = Some(table);
        state.queued = true;
        self.health.mark_pending(now);
    }

    /// `table` less its ports the backend cannot do. Only the ports changed since the last
    /// update are checked (the diff skips what the two share), so the cost follows the change;
    /// when nothing is left out, the table is passed on as it is.
    /// Returns the table to converge to and the source's changes since its last update.
    fn without_unsupported(&mut self, table: ServiceTable) -> (ServiceTable, ChangeSet) {
        let backend = self.dataplane.name();
        let capabilities = self.dataplane.capabilities();
        let state = &mut self.state;
        let changes = diff(&state.source, &table);
        for port in &changes.removed {
            state.unsupported.remove(&port.name);
        }
        let current = changes
            .added
            .iter()
            .chain(changes.changed.iter().map(|c| &c.current));
        for port in current {
            let problems = capabilities.check_port(backend, port);
            if problems.is_empty() {
                state.unsupported.remove(&port.name);
            } else {
                state.unsupported.insert(
                    port.name.clone(),
                    SkippedPort {
                        reason: SkipReason::Unsupported,
                        problems,
                        runs_previous: false,
                    },
                );
            }
        }
        state.source = table.clone();
        if state.unsupported.is_empty() {
            return (table, changes);
        }
        let mut ports: PortMap = table.ports().clone();
        let mut endpoints = table.endpoint_count();
        for name in state.unsupported.keys() {
            if let Some(port) = ports.remove(name) {
                endpoints -= port.endpoints.len();
            }
        }
        // A valid table less some of its ports is valid.
        let filtered = ServiceTable::from_parts_unchecked(
            table.node().map(str::to_owned),
            table.zone().map(str::to_owned),
            ports,
            endpoints,
        );
        (filtered, changes)
    }

    /// Runs one sync of the desired table, and schedules what follows.
    async fn sync(&mut self) {
        let Some(desired) = self.state.desired.clone() else {
            return;
        };
        let backend = self.dataplane.name();
        let started = Instant::now();
        let periodic = self.state.next_full.is_some_and(|due| started >= due);
        let mode = if self.state.need_full || periodic {
            SyncMode::Full
        } else {
            SyncMode::Partial
        };
        let state = &mut self.state;
        state.queued = false;
        state.retry_at = None;
        state.last_start = Some(started);
        state.sequence += 1;
        let generation = state.generation;
        let changes = diff(&state.last_good, &desired);

        let span = info_span!("sync", backend, full = mode == SyncMode::Full, generation);
        let request = SyncRequest {
            desired: &desired,
            changes: &changes,
            mode,
        };
        let result = self.dataplane.sync(request).instrument(span.clone()).await;
        // A sync has just looked at (and, if full, repaired) the dataplane: check a period on.
        self.state.next_drift_check = Some(Instant::now() + self.config.drift_check_period);
        let attempt = Attempt {
            desired,
            generation,
            mode,
            started,
            elapsed: started.elapsed(),
            changes,
        };
        span.in_scope(|| match result {
            Ok(report) => self.succeeded(attempt, report),
            Err(error) => self.failed(&attempt, &error),
        });
    }

    fn succeeded(&mut self, attempt: Attempt, report: SyncReport) {
        let Attempt {
            desired,
            generation,
            started,
            elapsed,
            changes,
            ..
        } = attempt;
        // The backend may have upgraded a partial sync to a full one.
        let mode = report.mode;
        let now = Instant::now();
        // Lifecycle and state changes log at info, no-op resyncs at debug.
        let is_news = !self.health.has_synced()
            || self.health.consecutive_failures() > 0
            || self.health.is_degraded()
            || !self.state.last_good.ptr_eq(&desired);
        // Relative to the last good table, so a partial sync recounts only what it changed.
        let partial = (mode == SyncMode::Partial).then_some(&changes);
        self.metrics.record_synced(&desired, partial);
        let state = &mut self.state;
        state.last_good = desired;
        state.good_generation = generation;
        if mode == SyncMode::Full {
            state.next_full = Some(started + self.config.full_sync_period);
        }
        let elapsed_ms = elapsed.as_secs_f64() * 1e3;
        let problems: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
        if report.is_complete() {
            self.metrics.record_sync(mode, SyncResult::Success, elapsed);
            state.need_full = false;
            state.backoff = self.config.retry_backoff_initial;
            self.health
                .record_success(now, problems, state.skipped.clone());
            if is_news {
                info!(
                    generation,
                    service_ports = report.service_ports,
                    endpoints = report.endpoints,
                    service_ports_changed = report.service_ports_changed,
                    objects_written = report.objects_written,
                    elapsed_ms,
                    "sync complete"
                );
            } else {
                debug!(
                    generation,
                    service_ports = report.service_ports,
                    endpoints = report.endpoints,
                    objects_written = report.objects_written,
                    elapsed_ms,
                    "sync complete, nothing changed"
                );
            }
        } else {
            self.metrics
                .record_sync(mode, SyncResult::Degraded, elapsed);
            let retry_in = self.schedule_retry(now);
            self.health
                .record_success(now, problems.clone(), self.state.skipped.clone());
            warn!(
                generation,
                service_ports = report.service_ports,
                endpoints = report.endpoints,
                objects_written = report.objects_written,
                elapsed_ms,
                problems = ?problems,
                retry_in_ms = retry_in.as_millis(),
                "sync degraded: some objects could not be applied"
            );
        }
        let status = if report.is_complete() {
            SyncStatus::Applied
        } else {
            SyncStatus::Degraded
        };
        let state = &self.state;
        self.outcomes.send_replace(SyncOutcome {
            sequence: state.sequence,
            generation,
            applied_generation: generation,
            mode,
            status,
            problems: report.problems,
            skipped: state.skipped.clone(),
            service_ports: report.service_ports,
            endpoints: report.endpoints,
            service_ports_changed: report.service_ports_changed,
            objects_written: report.objects_written,
            duration: elapsed,
        });
    }

    fn failed(&mut self, attempt: &Attempt, error: &DataplaneError) {
        let Attempt {
            mode,
            elapsed,
            generation,
            ..
        } = *attempt;
        let now = Instant::now();
        self.metrics.record_sync(mode, SyncResult::Error, elapsed);
        self.metrics.record_failure(FailureReason::DataplaneError);
        let retry_in = self.schedule_retry(now);
        let message = error_chain(error);
        self.health.record_failure(
            SyncFailure {
                at: now,
                reason: FailureReason::DataplaneError,
                message: message.clone(),
            },
            true,
        );
        error!(
            generation,
            error = %message,
            consecutive_failures = self.health.consecutive_failures(),
            retry_in_ms = retry_in.as_millis(),
            elapsed_ms = elapsed.as_secs_f64() * 1e3,
            "sync failed, keeping the last good state"
        );
        let state = &self.state;
        self.outcomes.send_replace(SyncOutcome {
            sequence: state.sequence,
            generation,
            applied_generation: state.good_generation,
            mode,
            status: SyncStatus::Failed(message),
            problems: Vec::new(),
            skipped: state.skipped.clone(),
            service_ports: attempt.desired.len(),
            endpoints: attempt.desired.endpoint_count(),
            service_ports_changed: attempt.changes.service_ports_changed(),
            objects_written: 0,
            duration: elapsed,
        });
    }

    /// An update changed nothing the dataplane sees (only skipped ports changed, or nothing):
    /// its generation is in place as soon as it arrives, so say so, with the skipped ports.
    fn publish_unchanged(&mut self, generation: u64) {
        let state = &mut self.state;
        if state.sequence == 0 {
            return;
        }
        state.good_generation = generation;
        let skipped = state.skipped.clone();
        if self.health.consecutive_failures() == 0 {
            self.health.set_skipped(skipped.clone());
        }
        self.outcomes.send_modify(|outcome| {
            outcome.generation = generation;
            outcome.applied_generation = generation;
            outcome.skipped = skipped;
            outcome.service_ports_changed = 0;
            outcome.objects_written = 0;
        });
    }

    /// Schedules a full retry after the current backoff, doubles the backoff (capped), and
    /// returns the wait.
    fn schedule_retry(&mut self, now: Instant) -> Duration {
        let state = &mut self.state;
        let wait = state.backoff;
        state.retry_at = Some(now + wait);
        state.need_full = true;
        state.backoff = wait.saturating_mul(2).min(self.config.retry_backoff_max);
        wait
    }

    async fn shut_down(mut self) -> Result<D, SyncLoopError> {
        if !self.config.cleanup_on_shutdown {
            return Ok(self.dataplane);
        }
        let backend = self.dataplane.name();
        match self.dataplane.cleanup().await {
            Ok(report) => {
                info!(
                    backend,
                    objects_removed = report.objects_removed,
                    "cleanup complete"
                );
                Ok(self.dataplane)
            }
            // Returned, not logged: the caller decides.
            Err(error) => Err(SyncLoopError::Cleanup(error)),
        }
    }
}

/// Syncs `table` once, as a full sync from nothing (`svcproxy --once`): checks capabilities,
/// diffs against the empty table, and returns the dataplane's report.
///
/// # Errors
/// [`DataplaneError::Unsupported`] when the table asks for what the backend lacks (the dataplane
/// is not called), or the dataplane's own error.
pub async fn sync_once<D: Dataplane + ?Sized>(
    dataplane: &mut D,
    table: &ServiceTable,
    mode: SyncMode,
) -> Result<SyncReport, DataplaneError> {
    let backend = dataplane.name();
    dataplane.capabilities().check(backend, table)?;
    let changes = diff(&ServiceTable::empty(), table);
    let request = SyncRequest {
        desired: table,
        changes: &changes,
        mode,
    };
    let span = info_span!("sync", backend, full = mode == SyncMode::Full);
    dataplane.sync(request).instrument(span).await
}

/// Sleeps until `due`, or forever when there is none. A time already reached returns at once:
/// tokio's timer counts in whole milliseconds, so sleeping until "now" would add up to a
/// millisecond to every sync that is due immediately.
async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(due) if due <= Instant::now() => {}
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("exit status 1: iptables-restore: line 3 failed")]
    struct Restore(#[source] std::io::Error);

    #[test]
    fn error_chain_names_each_cause_once() {
        let error =
            DataplaneError::backend("iptables", Restore(std::io::Error::other("resource busy")));
        assert_eq!(
            error_chain(&error),
            "iptables backend\n  caused by: exit status 1: iptables-restore: line 3 failed\n  caused by: resource busy"
        );
    }

    #[derive(Debug, thiserror::Error)]
    #[error("ipv4 nat: {0}\n  input line 3: -A SVCP-SERVICES ...")]
    struct WithContext(#[source] Restore);

    #[test]
    fn a_cause_printed_inside_its_wrapper_is_not_repeated() {
        let error = WithContext(Restore(std::io::Error::other("resource busy")));
        let text = error_chain(&error);
        assert_eq!(
            text.matches("line 3 failed").count(),
            1,
            "the restore failure once, before the wrapper's context:\n{text}"
        );
        assert!(text.ends_with("caused by: resource busy"), "{text}");
    }
}
