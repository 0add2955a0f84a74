//! The sync loop that feeds a [`Dataplane`] from a [`ServiceSource`], at a bounded rate.
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
//! - **Retries.** A failed sync is retried in full after a bounded exponential backoff
//!   ([`SyncConfig::retry_backoff_initial`] doubling up to [`SyncConfig::retry_backoff_max`]); the
//!   dataplane keeps its last good state meanwhile. A new table is synced without waiting for the
//!   backoff (it may fix what failed). A degraded sync (a report with problems) counts as a
//!   success but is retried the same way.
//! - **Capabilities.** A table asking for what the backend lacks is rejected before the dataplane
//!   sees it: logged once with every field, counted, and the last good state kept.
//! - **Health.** [`SyncHealth`] turns unhealthy when work has been pending (a table not yet
//!   synced, or a failed sync not yet repaired) for longer than the health timeout, like
//!   kube-proxy's `/healthz` (KEP-3836).
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
//! let health = sync.health();
//! let (tx, rx) = tokio::sync::watch::channel(ServiceTable::empty());
//! tx.send(ServiceTable::empty()).unwrap();
//! drop(tx); // the source closes: the loop syncs what is queued and returns
//! let _dataplane = sync.run(rx, std::future::pending()).await.unwrap();
//! assert_eq!(fake.requests().len(), 1);
//! assert!(health.has_synced());
//! # });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
//! # }
//! ```

use std::future::Future;
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::time::Instant;
use tracing::{debug, error, info, info_span, warn, Instrument as _};

use crate::dataplane::{Dataplane, SyncMode, SyncReport, SyncRequest};
use crate::diff::diff;
use crate::error::DataplaneError;
use crate::metrics::{FailureReason, SyncMetrics, SyncResult};
use crate::table::ServiceTable;

mod config;
mod health;
mod source;

pub use config::SyncConfig;
pub use health::{SyncFailure, SyncHealth};
pub use source::ServiceSource;

// === SyncLoop ===

/// One sync as it was started, and how long it took.
#[derive(Debug)]
struct Attempt {
    desired: ServiceTable,
    mode: SyncMode,
    started: Instant,
    elapsed: Duration,
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
}

/// What the loop knows between events.
#[derive(Debug)]
struct LoopState {
    /// The table the last successful sync implemented (empty before the first).
    last_good: ServiceTable,
    /// The newest accepted table: what the loop converges to. `None` before the first.
    desired: Option<ServiceTable>,
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
    /// The wait before the next retry.
    backoff: Duration,
}

impl<D: Dataplane> SyncLoop<D> {
    /// A loop driving `dataplane`, registering its metrics in `registry`.
    ///
    /// # Panics
    /// In debug builds, if `registry` already holds the sync metrics (see
    /// [`SyncMetrics::register`]).
    pub fn new(dataplane: D, config: SyncConfig, registry: &mut Registry) -> Self {
        let metrics = SyncMetrics::register(registry);
        let health = SyncHealth::new(config.health_timeout());
        let state = LoopState {
            last_good: ServiceTable::empty(),
            desired: None,
            queued: false,
            need_full: true,
            last_start: None,
            next_full: None,
            retry_at: None,
            backoff: config.retry_backoff_initial,
        };
        Self {
            dataplane,
            config,
            metrics,
            health,
            state,
        }
    }

    /// A handle on the loop's health, valid after the loop is moved into [`SyncLoop::run`].
    pub fn health(&self) -> SyncHealth {
        self.health.clone()
    }

    /// Runs until `shutdown` completes or `source` closes, and returns the dataplane.
    ///
    /// On shutdown, a sync in progress finishes first, then [`Dataplane::cleanup`] runs if the
    /// config asks for it. When the source closes, a table still queued is synced once (after
    /// the minimum period), pending retries are abandoned, and no cleanup runs.
    ///
    /// # Errors
    /// [`SyncLoopError::Cleanup`] when the cleanup on shutdown failed. Sync failures are not
    /// errors of the loop: they are retried, logged, counted and shown by [`SyncHealth`].
    pub async fn run<S, F>(mut self, mut source: S, shutdown: F) -> Result<D, SyncLoopError>
    where
        S: ServiceSource,
        F: Future<Output = ()>,
    {
        let backend = self.dataplane.name();
        info!(backend, "sync loop started");
        tokio::pin!(shutdown);
        let mut source_open = true;
        loop {
            let due = self.next_due(source_open);
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
                table = source.next_table(), if source_open => match table {
                    Some(table) => self.accept(table),
                    None => source_open = false,
                },
                () = sleep_until(due) => self.sync().await,
            }
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

    /// A table arrived: check it against the backend's capabilities and queue it.
    fn accept(&mut self, table: ServiceTable) {
        let backend = self.dataplane.name();
        let now = Instant::now();
        if let Err(unsupported) = self.dataplane.capabilities().check(backend, &table) {
            error!(
                backend,
                service_ports = table.len(),
                error = %unsupported,
                "table rejected, keeping the last good state"
            );
            self.metrics.record_failure(FailureReason::UnsupportedTable);
            self.health.record_failure(
                SyncFailure {
                    at: now,
                    reason: FailureReason::UnsupportedTable,
                    message: unsupported.to_string(),
                },
                false,
            );
            // The source has moved past any table not yet synced: converge back to the last good
            // one. A retry already scheduled stays, as a full resync of the last good state.
            let state = &mut self.state;
            if state.desired.is_some() {
                state.desired = Some(state.last_good.clone());
            }
            state.queued = false;
            if state.retry_at.is_none() {
                self.health.clear_pending();
            }
            self.metrics.set_pending(&Default::default());
            return;
        }

        let state = &mut self.state;
        let previous = state.desired.as_ref().unwrap_or(&state.last_good);
        let seen = diff(previous, &table);
        if seen.is_empty() && state.desired.is_some() {
            debug!(backend, "table unchanged, nothing to sync");
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
            service_ports = table.len(),
            service_ports_changed = seen.service_ports_changed(),
            endpoints_changed = seen.endpoints_changed(),
            "table queued"
        );
        state.desired = Some(table);
        state.queued = true;
        self.health.mark_pending(now);
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
        let changes = diff(&state.last_good, &desired);

        let span = info_span!("sync", backend, full = mode == SyncMode::Full);
        let request = SyncRequest {
            desired: &desired,
            changes: &changes,
            mode,
        };
        let result = self.dataplane.sync(request).instrument(span.clone()).await;
        let attempt = Attempt {
            desired,
            mode,
            started,
            elapsed: started.elapsed(),
        };
        span.in_scope(|| match result {
            Ok(report) => self.succeeded(attempt, &report),
            Err(error) => self.failed(&attempt, &error),
        });
    }

    fn succeeded(&mut self, attempt: Attempt, report: &SyncReport) {
        let Attempt {
            desired,
            started,
            elapsed,
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
        self.metrics.record_synced(&desired);
        let state = &mut self.state;
        state.last_good = desired;
        if mode == SyncMode::Full {
            state.next_full = Some(started + self.config.full_sync_period);
        }
        let elapsed_ms = elapsed.as_secs_f64() * 1e3;
        if report.is_complete() {
            self.metrics.record_sync(mode, SyncResult::Success, elapsed);
            state.need_full = false;
            state.backoff = self.config.retry_backoff_initial;
            self.health.record_success(now, false);
            if is_news {
                info!(
                    service_ports = report.service_ports,
                    endpoints = report.endpoints,
                    service_ports_changed = report.service_ports_changed,
                    objects_written = report.objects_written,
                    elapsed_ms,
                    "sync complete"
                );
            } else {
                debug!(
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
            self.health.record_success(now, true);
            let problems: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
            warn!(
                service_ports = report.service_ports,
                endpoints = report.endpoints,
                objects_written = report.objects_written,
                elapsed_ms,
                problems = ?problems,
                retry_in_ms = retry_in.as_millis(),
                "sync degraded: some objects could not be applied"
            );
        }
    }

    fn failed(&mut self, attempt: &Attempt, error: &DataplaneError) {
        let Attempt { mode, elapsed, .. } = *attempt;
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
            error = %message,
            consecutive_failures = self.health.consecutive_failures(),
            retry_in_ms = retry_in.as_millis(),
            elapsed_ms = elapsed.as_secs_f64() * 1e3,
            "sync failed, keeping the last good state"
        );
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

/// Sleeps until `due`, or forever when there is none.
async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// `error: source: source...` on one line per level, so one log event carries every cause.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Wrappers such as `DataplaneError::Backend` already print their source.
        if !text.ends_with(&cause_text) {
            text.push_str("\n  caused by: ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
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
            "iptables backend: exit status 1: iptables-restore: line 3 failed\n  caused by: resource busy"
        );
    }
}
