//! The table file as a service source: load it, then poll it for changes.
//!
//! Polling the file's identity (device, inode, size, mtime) rather than watching the directory
//! keeps this simple and correct for every way a file gets replaced: written in place, renamed
//! over by an editor or `sed -i`, or swapped through a symlink. A change is read only once the
//! identity has been stable for one short settle period, so a half-written file is not applied.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use proxy_core::diff::share_unchanged;
use proxy_core::file::{parse_spec, LoadError};
use proxy_core::ServiceTable;
use tokio::sync::watch;
use tracing::{error, info};

/// How long a changed file must stay unchanged before it is read.
const SETTLE: Duration = Duration::from_millis(50);

/// Reads and validates the table file, with `node` overriding the file's `node:`.
///
/// # Errors
/// [`LoadError`] with the file, line and column of a parse error, or every validation problem.
pub fn load(path: &Path, node: Option<&str>) -> Result<ServiceTable, LoadError> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Io {
        path: path.to_owned(),
        source,
    })?;
    let mut spec = parse_spec(&text, &origin)?;
    if let Some(node) = node {
        spec.node = Some(node.to_owned());
    }
    spec.into_table()
        .map_err(|errors| LoadError::Invalid { origin, errors })
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

/// Polls `path` every `interval` and sends each new valid table; logs invalid ones and keeps the
/// running table. Ends when every receiver is gone.
pub async fn watch_file(
    path: PathBuf,
    node: Option<String>,
    interval: Duration,
    tx: watch::Sender<ServiceTable>,
) {
    let mut seen = fingerprint(&path);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if tx.is_closed() {
            return;
        }
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
            Ok(table) => {
                let running = tx.borrow().clone();
                let table = share_unchanged(&running, &table);
                if table != running {
                    info!(
                        file = %path.display(),
                        service_ports = table.len(),
                        endpoints = table.endpoint_count(),
                        "table changed"
                    );
                    // Only fails when every receiver is gone, and then the next tick returns.
                    let _ = tx.send(table);
                }
            }
            Err(err) => {
                error!(error = %err, "ignoring the changed table file; keeping the running table")
            }
        }
    }
}
