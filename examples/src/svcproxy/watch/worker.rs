//! File work off the runtime: each stat, read and parse on a thread of its own, one at a time,
//! bounded by a timeout.

use std::path::Path;
use std::thread::JoinHandle;
use std::time::Duration;

use proxy_core::file::{LoadError, SpecCache, TableSpec};

use super::{read_snapshot, with_node, ReadError, Snapshot, Stat, IO_TIMEOUT, PARSE_TIMEOUT};

/// Runs file work on a thread of its own, at most one at a time, bounded by a timeout.
#[derive(Debug, Default)]
pub(super) struct FileWorker {
    /// The thread of the last job that timed out, until it ends.
    stuck: Option<JoinHandle<()>>,
}

impl FileWorker {
    pub(super) async fn run<T: Send + 'static>(
        &mut self,
        path: &Path,
        what: &'static str,
        timeout: Duration,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ReadError> {
        // Only a thread whose wait timed out is kept: it may still be stuck.
        if self.stuck.as_ref().is_some_and(|r| !r.is_finished()) {
            return Err(ReadError::Busy {
                path: path.to_owned(),
            });
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("svcproxy-file".to_owned())
            .spawn(move || {
                // The receiver is gone only when the wait timed out; the result is no use then.
                let _ = tx.send(work());
            })
            .map_err(|source| ReadError::Thread {
                path: path.to_owned(),
                source,
            })?;
        self.stuck = None;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(value)) => Ok(value),
            // The thread ended without sending: it panicked.
            Ok(Err(_)) => Err(ReadError::Panicked {
                path: path.to_owned(),
                what,
            }),
            Err(_) => {
                self.stuck = Some(thread);
                Err(ReadError::TimedOut {
                    path: path.to_owned(),
                    what,
                    timeout,
                })
            }
        }
    }

    pub(super) async fn stat(&mut self, path: &Path) -> Result<Option<Stat>, ReadError> {
        let owned = path.to_owned();
        let stat = self
            .run(path, "stat", IO_TIMEOUT, move || std::fs::metadata(owned))
            .await?;
        match stat {
            Ok(meta) => Ok(Some(Stat::of(&meta))),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(LoadError::Io {
                path: path.to_owned(),
                error,
            }
            .into()),
        }
    }

    pub(super) async fn read(
        &mut self,
        path: &Path,
        max_bytes: u64,
    ) -> Result<Snapshot, ReadError> {
        let owned = path.to_owned();
        self.run(path, "reading", IO_TIMEOUT, move || {
            read_snapshot(&owned, max_bytes)
        })
        .await?
    }

    /// Parses `text`, only its changed services when `cache` holds the last version's (the
    /// cache goes to the thread and back; lost, so emptied, if the parse does not finish).
    pub(super) async fn parse(
        &mut self,
        path: &Path,
        text: String,
        node: Option<String>,
        cache: &mut SpecCache,
    ) -> Result<TableSpec, ReadError> {
        let origin = path.display().to_string();
        let mut owned = std::mem::take(cache);
        let (spec, owned) = self
            .run(path, "parsing", PARSE_TIMEOUT, move || {
                (owned.parse(&text, &origin), owned)
            })
            .await?;
        *cache = owned;
        Ok(with_node(spec?, node.as_deref()))
    }
}
