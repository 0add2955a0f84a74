//! [`SyncHealth`]: the loop's health, shared with a `/healthz` handler.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::metrics::FailureReason;

use crate::source::Skipped;

/// The problem line shown while drift found by a check is not yet repaired.
const DRIFT_PROBLEM: &str =
    "dataplane changed behind our back (drift check): a full sync is repairing it";

/// A shared view of the loop's health, for a `/healthz` endpoint. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SyncHealth {
    timeout: Duration,
    state: Arc<Mutex<HealthState>>,
}

#[derive(Debug, Default)]
struct HealthState {
    last_success: Option<Instant>,
    pending_since: Option<Instant>,
    consecutive_failures: u32,
    /// What the backend could not apply at the last successful sync.
    backend_problems: Vec<String>,
    /// The service ports skipped now (a persistent map: kept in O(1), written out when asked).
    skipped: Skipped,
    last_error: Option<SyncFailure>,
    /// A drift check found our state changed behind our back, and no sync has repaired it yet.
    drift_pending: bool,
    /// Drift checks that found drift, since the loop started.
    drifts_detected: u64,
    /// When the last of them did.
    last_drift: Option<Instant>,
}

/// The last thing that went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncFailure {
    /// When it happened.
    pub at: Instant,
    /// What kind of failure.
    pub reason: FailureReason,
    /// The error with its sources, one per line.
    pub message: String,
}

impl SyncHealth {
    pub(super) fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            state: Arc::default(),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut HealthState) -> T) -> T {
        // A poisoned lock only means a panic elsewhere; the state is still plain data.
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Healthy unless work (a table not yet synced, or a failed sync not yet repaired) has been
    /// pending for longer than the health timeout. A loop waiting for its first table is healthy.
    pub fn is_healthy(&self) -> bool {
        self.with(|s| match s.pending_since {
            None => true,
            Some(since) => Instant::now().saturating_duration_since(since) <= self.timeout,
        })
    }

    /// When a sync last succeeded (complete or degraded).
    pub fn last_success(&self) -> Option<Instant> {
        self.with(|s| s.last_success)
    }

    /// Whether a sync has ever succeeded.
    pub fn has_synced(&self) -> bool {
        self.last_success().is_some()
    }

    /// Since when work has been pending, if any.
    pub fn pending_since(&self) -> Option<Instant> {
        self.with(|s| s.pending_since)
    }

    /// Failed syncs since the last success.
    pub fn consecutive_failures(&self) -> u32 {
        self.with(|s| s.consecutive_failures)
    }

    /// Whether the last successful sync left something out: the backend reported problems
    /// (an address that cannot be bound), or service ports are skipped (invalid, clashing, or
    /// asking for what the backend lacks). [`SyncHealth::problems`] says what.
    pub fn is_degraded(&self) -> bool {
        self.with(|s| s.drift_pending || !s.backend_problems.is_empty() || !s.skipped.is_empty())
    }

    /// What the last successful sync left out, one line each (`default/web:http 127.0.0.1:80:
    /// address in use`, `default/api:dns: skipped (unsupported): ...`); empty when nothing.
    pub fn problems(&self) -> Vec<String> {
        self.with(|s| {
            let mut problems = s.backend_problems.clone();
            problems.extend(
                s.skipped
                    .iter()
                    .map(|(name, port)| format!("{name}: {port}")),
            );
            if s.drift_pending {
                problems.push(DRIFT_PROBLEM.to_owned());
            }
            problems
        })
    }

    /// How many drift checks found the dataplane changed behind our back
    /// ([`crate::Dataplane::check_drift`]), since the loop started.
    pub fn drifts_detected(&self) -> u64 {
        self.with(|s| s.drifts_detected)
    }

    /// When a drift check last found the dataplane changed behind our back.
    pub fn last_drift(&self) -> Option<Instant> {
        self.with(|s| s.last_drift)
    }

    /// The last failed sync or rejected table, if any (kept after recovery, for diagnosis).
    pub fn last_error(&self) -> Option<SyncFailure> {
        self.with(|s| s.last_error.clone())
    }

    /// The timeout past which pending work makes the loop unhealthy.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub(super) fn mark_pending(&self, now: Instant) {
        self.with(|s| {
            s.pending_since.get_or_insert(now);
        });
    }

    /// A drift check found drift: degraded, and work pending, until a sync repairs it.
    pub(super) fn record_drift(&self, now: Instant) {
        self.with(|s| {
            s.drift_pending = true;
            s.drifts_detected = s.drifts_detected.saturating_add(1);
            s.last_drift = Some(now);
            s.pending_since.get_or_insert(now);
        });
    }

    pub(super) fn record_success(
        &self,
        now: Instant,
        backend_problems: Vec<String>,
        skipped: Skipped,
    ) {
        self.with(|s| {
            s.drift_pending = false;
            s.last_success = Some(now);
            s.pending_since = None;
            s.consecutive_failures = 0;
            s.backend_problems = backend_problems;
            s.skipped = skipped;
        });
    }

    /// The skipped ports changed without a sync (the dataplane's table did not change).
    pub(super) fn set_skipped(&self, skipped: Skipped) {
        self.with(|s| s.skipped = skipped);
    }

    pub(super) fn record_failure(&self, failure: SyncFailure, counts_as_failed_sync: bool) {
        self.with(|s| {
            if counts_as_failed_sync {
                s.pending_since.get_or_insert(failure.at);
                s.consecutive_failures = s.consecutive_failures.saturating_add(1);
            }
            s.last_error = Some(failure);
        });
    }
}

impl fmt::Display for SyncFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason.as_str(), self.message)
    }
}
