//! The table file as a service source: load it, then poll it for changes, feeding each version to
//! the change tracker (the same path an embedder's controller takes, object by object).
//!
//! Polling the file's identity (device, inode, size, mtime) rather than watching the directory
//! keeps this simple and correct for every way a file gets replaced: written in place, renamed
//! over by an editor or `sed -i`, or swapped through a symlink. A change is read only once the
//! identity has been stable for one short settle period, so a half-written file is not applied.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use proxy_core::file::{parse_spec, LoadError, TableSpec};
use proxy_core::tracker::{ChangeTracker, Skipped};
use tracing::{error, info, warn};

/// How long a changed file must stay unchanged before it is read.
const SETTLE: Duration = Duration::from_millis(50);

/// Reads and parses the table file, with `node` overriding the file's `node:`. Values are
/// checked by the tracker the spec is applied to, service port by service port.
///
/// # Errors
/// [`LoadError`] when the file cannot be read, or with the file, line and column of a syntax
/// error, a wrong type or an unknown field: then nothing of it can be trusted.
pub fn load(path: &Path, node: Option<&str>) -> Result<TableSpec, LoadError> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Io {
        path: path.to_owned(),
        source,
    })?;
    let mut spec = parse_spec(&text, &origin)?;
    if let Some(node) = node {
        spec.node = Some(node.to_owned());
    }
    Ok(spec)
}

/// Logs the service ports the tracker skips, once per change of the set.
pub fn log_skipped(file: &Path, skipped: &Skipped) {
    for (name, port) in skipped {
        warn!(file = %file.display(), service_port = %name, "{port}");
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: Option<SystemTime>,
}

fn fingerprint(path: &Path) -> Option<Fingerprint> {
    let meta = std::fs::metadata(path).ok()?;
    Some(Fingerprint {
        dev: meta.dev(),
        ino: meta.ino(),
        len: meta.len(),
        mtime: meta.modified().ok(),
    })
}

/// Polls `path` every `interval` and applies each change to `tracker`: a file that parses is
/// applied (each service port checked on its own, a bad one skipped and reported, its last good
/// version kept); one that does not parse is logged and the running table stays. Runs until
/// aborted.
pub async fn watch_file(
    path: PathBuf,
    node: Option<String>,
    interval: Duration,
    mut tracker: ChangeTracker,
) {
    let mut seen = fingerprint(&path);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let now = fingerprint(&path);
        if now == seen {
            continue;
        }
        // Wait until the writer is done: the identity must hold still for SETTLE.
        tokio::time::sleep(SETTLE).await;
        let settled = fingerprint(&path);
        if settled != now {
            continue;
        }
        seen = settled;
        if seen.is_none() {
            error!(file = %path.display(), "table file is gone; keeping the running table");
            continue;
        }
        match load(&path, node.as_deref()) {
            Ok(spec) => {
                let before = tracker.generation();
                let skipped_before = tracker.skipped().clone();
                let running = tracker.table().clone();
                let generation = spec.apply_to(&mut tracker);
                if !tracker.table().ptr_eq(&running) || generation != before {
                    info!(
                        file = %path.display(),
                        generation,
                        service_ports = tracker.table().len(),
                        endpoints = tracker.table().endpoint_count(),
                        skipped = tracker.skipped().len(),
                        "table file applied"
                    );
                }
                if *tracker.skipped() != skipped_before {
                    log_skipped(&path, tracker.skipped());
                }
            }
            Err(err) => {
                error!(error = %err, "ignoring the changed table file; keeping the running table")
            }
        }
    }
}
