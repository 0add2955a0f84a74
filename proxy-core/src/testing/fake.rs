//! An in-memory [`Dataplane`] that records what it was asked and does what a test scripts.
//!
//! [`FakeDataplane`] is a cloneable handle: give one clone to the code under test (a
//! [`crate::sync::SyncLoop`]) and keep another to script failures and read the record. It keeps
//! the table it "implements" and checks every request's change set against it, so a test can
//! assert that the loop diffs against the last *successful* sync.
//!
//! ```
//! use proxy_core::dataplane::{Dataplane, SyncMode};
//! use proxy_core::testing::fake::FakeDataplane;
//! use proxy_core::ServiceTable;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let fake = FakeDataplane::new();
//! fake.fail_next(1);
//! let mut dataplane = fake.clone();
//! let table = ServiceTable::empty();
//! assert!(proxy_core::sync::sync_once(&mut dataplane, &table, SyncMode::Full).await.is_err());
//! assert!(proxy_core::sync::sync_once(&mut dataplane, &table, SyncMode::Full).await.is_ok());
//! assert_eq!(fake.requests().len(), 2);
//! # });
//! ```

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::dataplane::{
    Capabilities, CleanupReport, Dataplane, DryRun, SyncMode, SyncProblem, SyncReport, SyncRequest,
};
use crate::diff::{apply_changes, ChangeSet};
use crate::error::DataplaneError;
use crate::table::ServiceTable;

/// The name the fake reports (`DataplaneError::Backend::backend`, metrics labels, spans).
pub const FAKE_BACKEND: &str = "fake";

/// A scripted failure of the fake.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("injected failure of sync #{request}")]
pub struct InjectedFailure {
    /// The index of the failed request in [`FakeDataplane::requests`].
    pub request: usize,
}

/// How the fake answered one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FakeOutcome {
    /// Applied; the fake now implements the request's table.
    Applied,
    /// Applied with problems (a degraded report).
    Degraded,
    /// Failed; the fake kept its previous table.
    Failed,
}

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct RecordedSync {
    /// The table asked for.
    pub desired: ServiceTable,
    /// The change set the caller sent.
    pub changes: ChangeSet,
    /// Full or partial.
    pub mode: SyncMode,
    /// When the request arrived (tokio time, so paused-time tests can compare).
    pub at: Instant,
    /// What the fake implemented when the request arrived.
    pub applied_before: ServiceTable,
    /// Whether applying `changes` to `applied_before` gives `desired`: the caller diffed against
    /// what was really in place.
    pub changes_match_applied: bool,
    /// How the fake answered.
    pub outcome: FakeOutcome,
}

/// A [`Dataplane`] in memory; see the [module docs](self). Clones share their state.
#[derive(Debug, Clone)]
pub struct FakeDataplane {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<FakeState>,
    /// Woken after every request and cleanup.
    changed: Notify,
}

#[derive(Debug)]
struct FakeState {
    capabilities: Capabilities,
    applied: ServiceTable,
    requests: Vec<RecordedSync>,
    /// Scripted answers, consumed one per request; empty means apply.
    script: VecDeque<FakeOutcome>,
    sync_delay: Duration,
    cleanups: usize,
    fail_cleanup: bool,
}

impl Default for FakeDataplane {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeDataplane {
    /// A fake that can do everything and succeeds until told otherwise.
    pub fn new() -> Self {
        Self::with_capabilities(Capabilities::everything())
    }

    /// A fake with the given capabilities.
    pub fn with_capabilities(capabilities: Capabilities) -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(FakeState {
                    capabilities,
                    applied: ServiceTable::empty(),
                    requests: Vec::new(),
                    script: VecDeque::new(),
                    sync_delay: Duration::ZERO,
                    cleanups: 0,
                    fail_cleanup: false,
                }),
                changed: Notify::new(),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, FakeState> {
        // A poisoned lock means a test panicked while holding it; the data is still readable.
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The next `n` requests fail (after any answers already scripted).
    pub fn fail_next(&self, n: usize) {
        self.script(std::iter::repeat_n(FakeOutcome::Failed, n));
    }

    /// The next `n` requests apply but report a problem (after any answers already scripted).
    pub fn degrade_next(&self, n: usize) {
        self.script(std::iter::repeat_n(FakeOutcome::Degraded, n));
    }

    /// Appends answers for the next requests, in order; when they run out, requests apply.
    pub fn script(&self, outcomes: impl IntoIterator<Item = FakeOutcome>) {
        self.state().script.extend(outcomes);
    }

    /// Every sync now takes `delay` of (tokio) time.
    pub fn set_sync_delay(&self, delay: Duration) {
        self.state().sync_delay = delay;
    }

    /// Changes what the fake claims to support.
    pub fn set_capabilities(&self, capabilities: Capabilities) {
        self.state().capabilities = capabilities;
    }

    /// The next cleanups fail (or succeed again with `false`).
    pub fn set_fail_cleanup(&self, fail: bool) {
        self.state().fail_cleanup = fail;
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<RecordedSync> {
        self.state().requests.clone()
    }

    /// The table the fake implements (that of the last applied or degraded request).
    pub fn applied(&self) -> ServiceTable {
        self.state().applied.clone()
    }

    /// How many times `cleanup` was called.
    pub fn cleanups(&self) -> usize {
        self.state().cleanups
    }

    /// Waits until at least `n` requests have arrived, and returns them all.
    pub async fn wait_for_requests(&self, n: usize) -> Vec<RecordedSync> {
        loop {
            // Register interest before checking, so a request in between is not missed.
            let notified = self.shared.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let state = self.state();
                if state.requests.len() >= n {
                    return state.requests.clone();
                }
            }
            notified.await;
        }
    }
}

#[async_trait]
impl Dataplane for FakeDataplane {
    fn name(&self) -> &'static str {
        FAKE_BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        self.state().capabilities.clone()
    }

    async fn sync(&mut self, request: SyncRequest<'_>) -> Result<SyncReport, DataplaneError> {
        let delay = self.state().sync_delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let result = {
            let mut state = self.state();
            let index = state.requests.len();
            let outcome = state.script.pop_front().unwrap_or(FakeOutcome::Applied);
            let applied_before = state.applied.clone();
            let changes_match_applied = apply_changes(&applied_before, request.changes)
                .is_ok_and(|table| table == *request.desired);
            state.requests.push(RecordedSync {
                desired: request.desired.clone(),
                changes: request.changes.clone(),
                mode: request.mode,
                at: Instant::now(),
                applied_before,
                changes_match_applied,
                outcome,
            });
            let mut report = SyncReport::for_request(&request);
            report.objects_written = request.changes.service_ports_changed();
            report.duration = delay;
            match outcome {
                FakeOutcome::Applied => {
                    state.applied = request.desired.clone();
                    Ok(report)
                }
                FakeOutcome::Degraded => {
                    state.applied = request.desired.clone();
                    report.problems.push(SyncProblem::new(
                        format!("request #{index}"),
                        "injected problem",
                    ));
                    Ok(report)
                }
                FakeOutcome::Failed => Err(DataplaneError::backend(
                    FAKE_BACKEND,
                    InjectedFailure { request: index },
                )),
            }
        };
        self.shared.changed.notify_waiters();
        result
    }

    fn dry_run(&self, table: &ServiceTable) -> Result<DryRun, DataplaneError> {
        let mut rendered = String::new();
        for port in table.iter() {
            rendered.push_str(&format!(
                "{} ({} endpoint(s))\n",
                port.name,
                port.endpoints.len()
            ));
        }
        Ok(DryRun::new(rendered))
    }

    async fn cleanup(&mut self) -> Result<CleanupReport, DataplaneError> {
        let result = {
            let mut state = self.state();
            state.cleanups += 1;
            if state.fail_cleanup {
                Err(DataplaneError::backend(
                    FAKE_BACKEND,
                    InjectedFailure {
                        request: state.requests.len(),
                    },
                ))
            } else {
                let removed = state.applied.len();
                state.applied = ServiceTable::empty();
                Ok(CleanupReport {
                    objects_removed: removed,
                })
            }
        };
        self.shared.changed.notify_waiters();
        result
    }
}
