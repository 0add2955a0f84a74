//! [`SyncHandle`]: the embedder's side of a running [`super::SyncLoop`]: the outcome of every
//! sync ([`SyncOutcome`], on a `watch` channel), waiting for a generation, a resync, a dry run.

use std::fmt;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use crate::dataplane::{DryRun, SyncMode, SyncProblem};
use crate::error::DataplaneError;

use super::health::SyncHealth;
use crate::source::Skipped;

/// How one sync ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncStatus {
    /// Every service port of the table is in place.
    Applied,
    /// In place, except for what [`SyncOutcome::problems`] lists (the loop retries).
    Degraded,
    /// The sync failed as a whole; the last good state stays (the loop retries). The error with
    /// its causes, one per line.
    Failed(String),
}

/// What one sync did, published by the loop after each one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncOutcome {
    /// How many syncs the loop has run, this one included (0: none yet).
    pub sequence: u64,
    /// The source generation this sync tried to put in place.
    pub generation: u64,
    /// The newest generation in place after it: `generation` unless the sync failed.
    pub applied_generation: u64,
    /// Full or partial, as done.
    pub mode: SyncMode,
    /// How it ended.
    pub status: SyncStatus,
    /// What the backend could not apply (a listener that cannot bind...), keyed by service port
    /// where they belong to one.
    pub problems: Vec<SyncProblem>,
    /// Service ports not in the table as their source described them (invalid, clashing, or
    /// asking for what the backend lacks), by name, with why.
    pub skipped: Skipped,
    /// Service ports in the table synced.
    pub service_ports: usize,
    /// Endpoints in the table synced.
    pub endpoints: usize,
    /// Service ports added, removed or changed by this sync.
    pub service_ports_changed: usize,
    /// Kernel objects or listeners written, in the backend's unit.
    pub objects_written: usize,
    /// Wall time of the sync.
    pub duration: Duration,
}

impl SyncOutcome {
    /// The outcome before any sync.
    pub(crate) fn initial() -> Self {
        Self {
            sequence: 0,
            generation: 0,
            applied_generation: 0,
            mode: SyncMode::Full,
            status: SyncStatus::Applied,
            problems: Vec::new(),
            skipped: Skipped::new(),
            service_ports: 0,
            endpoints: 0,
            service_ports_changed: 0,
            objects_written: 0,
            duration: Duration::ZERO,
        }
    }

    /// Whether everything the source described is in place: applied, with no problem and no
    /// skipped port.
    pub fn is_complete(&self) -> bool {
        self.status == SyncStatus::Applied && self.problems.is_empty() && self.skipped.is_empty()
    }
}

impl fmt::Display for SyncOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = match &self.status {
            SyncStatus::Applied => "applied",
            SyncStatus::Degraded => "degraded",
            SyncStatus::Failed(_) => "failed",
        };
        write!(
            f,
            "sync #{} of generation {} {status} ({} sync, {} service ports, {} endpoints, {} changed, {} objects written in {:.3} ms)",
            self.sequence,
            self.generation,
            self.mode,
            self.service_ports,
            self.endpoints,
            self.service_ports_changed,
            self.objects_written,
            self.duration.as_secs_f64() * 1e3
        )?;
        if let SyncStatus::Failed(error) = &self.status {
            write!(f, "\n  error: {error}")?;
        }
        for problem in &self.problems {
            write!(f, "\n  problem: {problem}")?;
        }
        for (name, skipped) in &self.skipped {
            write!(f, "\n  {name}: {skipped}")?;
        }
        Ok(())
    }
}

/// A request from a [`SyncHandle`] to the running loop.
#[derive(Debug)]
pub(super) enum Command {
    /// Sync in full as soon as the minimum period allows.
    Resync,
    /// Render what the desired table would program.
    DryRun(oneshot::Sender<Result<DryRun, DataplaneError>>),
}

/// The loop is gone: it returned, or was dropped before it ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the sync loop is not running")]
pub struct LoopStopped;

/// Why [`SyncHandle::dry_run`] gave no rendering.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DryRunError {
    /// The loop is not running.
    #[error(transparent)]
    Stopped(#[from] LoopStopped),
    /// The backend could not plan the table.
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
}

/// The embedder's handle on a [`super::SyncLoop`], before and while it runs. Cheap to clone.
///
/// ```
/// use proxy_core::prometheus_client::registry::Registry;
/// use proxy_core::testing::fake::FakeDataplane;
/// use proxy_core::tracker::{ChangeTracker, Service, ServiceName, ServicePortSpec};
/// use proxy_core::{SyncConfig, SyncLoop};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let dataplane = FakeDataplane::new();
/// let (mut tracker, source) = ChangeTracker::for_dataplane(&dataplane);
/// let sync_loop = SyncLoop::new(dataplane, SyncConfig::default(), &mut Registry::default());
/// let handle = sync_loop.handle();
/// let running = tokio::spawn(sync_loop.run(source, std::future::pending()));
///
/// let web = ServiceName::new("default", "web");
/// let generation = tracker.set_service(
///     Service::new(web).with_port(ServicePortSpec::tcp("http", 80)).with_cluster_ip("198.19.0.10".parse().unwrap()),
/// );
/// let outcome = handle.wait_for(generation).await.unwrap();
/// assert!(outcome.is_complete(), "{outcome}");
/// assert!(handle.dry_run().await.unwrap().rendered.contains("default/web:http"));
/// running.abort();
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct SyncHandle {
    pub(super) outcomes: watch::Receiver<SyncOutcome>,
    pub(super) commands: mpsc::Sender<Command>,
    pub(super) health: SyncHealth,
}

impl SyncHandle {
    /// A receiver of every outcome (the newest one, as a `watch` channel keeps it).
    pub fn outcomes(&self) -> watch::Receiver<SyncOutcome> {
        self.outcomes.clone()
    }

    /// The newest outcome.
    pub fn latest(&self) -> SyncOutcome {
        self.outcomes.borrow().clone()
    }

    /// The loop's health, for a `/healthz` handler.
    pub fn health(&self) -> SyncHealth {
        self.health.clone()
    }

    /// Waits until `generation` (or a newer one) is in place, and returns that sync's outcome
    /// (which may be degraded, or list skipped ports: read it). Put a timeout around it: a
    /// dataplane that keeps failing never gets there.
    ///
    /// # Errors
    /// [`LoopStopped`] when the loop ends first.
    pub async fn wait_for(&self, generation: u64) -> Result<SyncOutcome, LoopStopped> {
        let mut outcomes = self.outcomes.clone();
        let outcome = outcomes
            .wait_for(|o| o.sequence > 0 && o.applied_generation >= generation)
            .await
            .map_err(|_| LoopStopped)?;
        Ok(outcome.clone())
    }

    /// Asks for a full sync as soon as the minimum period allows (to repair drift now, not at
    /// the next periodic resync). Returns at once; a request already queued absorbs this one.
    ///
    /// # Errors
    /// [`LoopStopped`] when the loop has ended.
    pub fn resync(&self) -> Result<(), LoopStopped> {
        match self.commands.try_send(Command::Resync) {
            Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(LoopStopped),
        }
    }

    /// What the backend would program for the loop's desired table now (the empty table before
    /// the first update), rendered; changes nothing. Answered between syncs.
    ///
    /// # Errors
    /// [`DryRunError::Stopped`] when the loop is not running, or the backend's error.
    pub async fn dry_run(&self) -> Result<DryRun, DryRunError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::DryRun(reply))
            .await
            .map_err(|_| LoopStopped)?;
        Ok(answer.await.map_err(|_| LoopStopped)??)
    }
}
