//! The suite's errors: what went wrong around the cases (a sync, a rule load), as opposed to a
//! case's own verdict, which the runner reports.

use thiserror::Error;

/// An error of the harness itself.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConformanceError {
    /// The dataplane under test did not sync the suite's table.
    #[error("{backend}: sync failed: {reason}")]
    Sync {
        /// The backend's name.
        backend: &'static str,
        /// The dataplane's error and its sources.
        reason: String,
    },
    /// A tool the reference layout runs failed.
    #[error("`{command}` failed: {status}: {stderr}")]
    Command {
        /// The command line, for people.
        command: String,
        /// Its exit status, or why it did not run.
        status: String,
        /// What it wrote to stderr.
        stderr: String,
    },
}
