//! When a change to the table file applies: at once after a complete write, else once it held
//! still for the settle time (see the module docs of `watch`).

use std::time::{Duration, Instant};

use proxy_core::file::LoadError;

use super::worker::FileWorker;
use super::{FileOptions, ReadError, Snapshot, Version, SETTLE};

/// A changed version seen in place, waiting to hold still for the settle time.
#[derive(Debug, Clone, Copy)]
pub(super) struct Candidate {
    pub(super) version: Version,
    pub(super) since: Instant,
}

/// What one look at the file found.
#[derive(Debug)]
pub(super) enum Check {
    /// Nothing to apply (yet).
    Unchanged,
    /// The path names nothing.
    Gone,
    /// A complete new version.
    Complete(Snapshot),
}

/// One look: stat, and when the file changed, read it and decide whether the change is complete
/// (`complete`: inotify saw a complete write; else renamed in, or held still for the settle
/// time).
pub(super) async fn check(
    options: &FileOptions,
    worker: &mut FileWorker,
    seen: Option<&Version>,
    candidate: &mut Option<Candidate>,
    complete: bool,
) -> Result<Check, ReadError> {
    let path = &options.path;
    if complete {
        // Read at once, even when the identity would look the same: a rewrite of the same
        // length within one tick of the file system's coarse clock keeps size and mtime, and the
        // event says the file was written.
        return check_complete(options, worker, seen, candidate).await;
    }
    let Some(stat) = worker.stat(path).await? else {
        return Ok(Check::Gone);
    };
    let fingerprint = stat.fingerprint;
    if candidate.is_none() && seen.is_some_and(|s| s.fingerprint == fingerprint) {
        return Ok(Check::Unchanged);
    }
    if let Some(waiting) = candidate.filter(|c| c.version.fingerprint == fingerprint) {
        if waiting.since.elapsed() < options.settle {
            return Ok(Check::Unchanged);
        }
    }
    // Wait until the writer is done: the identity must hold still for SETTLE.
    tokio::time::sleep(SETTLE).await;
    let settled = worker.stat(path).await?;
    if settled.map(|s| s.fingerprint) != Some(fingerprint) {
        *candidate = None;
        return Ok(Check::Unchanged);
    }
    let snapshot = match worker.read(path, options.max_bytes).await {
        Ok(snapshot) => snapshot,
        Err(ReadError::Changed { .. }) => {
            *candidate = None;
            return Ok(Check::Unchanged);
        }
        Err(other) => return Err(other),
    };
    if seen == Some(&snapshot.version) {
        // Touched, or written back the same: nothing to apply.
        *candidate = None;
        return Ok(Check::Unchanged);
    }
    if snapshot.stat.is_renamed_in(seen) {
        return Ok(Check::Complete(snapshot));
    }
    Ok(hold_still(candidate, snapshot, options.settle))
}

/// After a complete write: read at once and apply, unless the file is empty (what a truncation
/// before a write leaves, closed as a complete write would be: `: > table.yaml`), which applies
/// only once it held still, as an in-place write.
async fn check_complete(
    options: &FileOptions,
    worker: &mut FileWorker,
    seen: Option<&Version>,
    candidate: &mut Option<Candidate>,
) -> Result<Check, ReadError> {
    let snapshot = match worker.read(&options.path, options.max_bytes).await {
        Ok(snapshot) => snapshot,
        // Written again while read: that write's own events follow.
        Err(ReadError::Changed { .. }) => return Ok(Check::Unchanged),
        Err(ReadError::Load(LoadError::Io { error, .. }))
            if error.kind() == std::io::ErrorKind::NotFound =>
        {
            return Ok(Check::Gone)
        }
        Err(other) => return Err(other),
    };
    if seen == Some(&snapshot.version) {
        *candidate = None;
        return Ok(Check::Unchanged);
    }
    if snapshot.text.trim().is_empty() {
        return Ok(hold_still(candidate, snapshot, options.settle));
    }
    Ok(Check::Complete(snapshot))
}

/// The settle rule: a version applies once it was read the same at two looks at least `settle`
/// apart; a new version starts the wait.
fn hold_still(candidate: &mut Option<Candidate>, snapshot: Snapshot, settle: Duration) -> Check {
    let version = snapshot.version;
    match candidate {
        Some(waiting) if waiting.version == version && waiting.since.elapsed() >= settle => {
            Check::Complete(snapshot)
        }
        Some(waiting) if waiting.version == version => Check::Unchanged,
        _ => {
            *candidate = Some(Candidate {
                version,
                since: Instant::now(),
            });
            Check::Unchanged
        }
    }
}
