//! The table file as a service source: load it, then poll it for changes, feeding each version to
//! the change tracker (the same path an embedder's controller takes, object by object).
//!
//! Polling the file's identity (device, inode, size, mtime) rather than watching the directory
//! keeps this simple and correct for every way a file gets replaced: written in place, renamed
//! over by an editor or `sed -i`, or swapped through a symlink.
//!
//! # When a change applies
//!
//! - A file **renamed into place** (a new inode whose change time is after its last write: the
//!   rename) is complete, since a rename is atomic: it applies at the next poll, once it has held
//!   still for [`SETTLE`].
//! - Any other change (written in place, or a new file written under the name) applies only once
//!   its size, mtime **and** content hash have stayed the same for the settle time
//!   (`--settle-ms`), checked at two polls at least that far apart. A writer that pauses longer
//!   than that in the middle of a write can still get its first part applied when that part is a
//!   valid table: by polling, such a pause cannot be told from the end of the write. Writing a
//!   temporary file and renaming it over the table is the one safe way.
//!
//! # Hostile files
//!
//! Only a regular file is read (a symlink is followed first): `/dev/zero`, a FIFO, a socket or a
//! directory is refused before it is opened, and the open itself uses `O_NONBLOCK`, so a FIFO
//! swapped in between cannot block it. At most `--max-table-bytes` are read. Every stat, open,
//! read and parse runs on a thread of its own, bounded by a timeout, never on the runtime: a file
//! system that hangs stalls only that thread, while signals, the sync loop and health keep
//! working. (A plain thread rather than `spawn_blocking`: the runtime waits for its blocking pool
//! on shutdown, so a read stuck there would hold up the exit.)

use std::hash::{Hash as _, Hasher as _};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use proxy_core::file::{check_table_file, parse_spec, read_table_from, LoadError, TableSpec};
use proxy_core::tracker::ChangeTracker;
use proxy_core::validate::control_character_problem;
use proxy_core::{FieldError, ValidationErrors};
use tracing::{error, info};

/// How long a changed file must hold still (size, mtime) before it is read at all.
pub const SETTLE: Duration = Duration::from_millis(50);
/// The longest a stat, or an open and read, of the table file may take.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a parse may take (a 34 MB table parses in about 3 s in a release build).
const PARSE_TIMEOUT: Duration = Duration::from_secs(300);

/// How the table file is read.
#[derive(Debug, Clone)]
pub struct FileOptions {
    /// The table file.
    pub path: PathBuf,
    /// Overrides the file's `node:`.
    pub node: Option<String>,
    /// The most bytes read (`--max-table-bytes`).
    pub max_bytes: u64,
    /// How long an in-place change must hold still before it applies (`--settle-ms`).
    pub settle: Duration,
}

/// Why the table file could not be loaded: a [`LoadError`], or file work that did not finish.
#[derive(Debug)]
pub enum ReadError {
    Load(LoadError),
    TimedOut {
        path: PathBuf,
        what: &'static str,
        timeout: Duration,
    },
    Busy {
        path: PathBuf,
    },
    Panicked {
        path: PathBuf,
        what: &'static str,
    },
    Thread {
        path: PathBuf,
        source: std::io::Error,
    },
    Changed {
        path: PathBuf,
    },
}

impl From<LoadError> for ReadError {
    fn from(error: LoadError) -> Self {
        ReadError::Load(error)
    }
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Load(error) => f.write_str(&describe(error)),
            ReadError::TimedOut {
                path,
                what,
                timeout,
            } => write!(
                f,
                "table file {}: {what} took longer than {} s; gave up",
                path.display(),
                timeout.as_secs()
            ),
            ReadError::Busy { path } => write!(
                f,
                "table file {}: an earlier read is still stuck; not reading again until it ends",
                path.display()
            ),
            ReadError::Panicked { path, what } => {
                write!(f, "table file {}: {what} failed (panicked)", path.display())
            }
            ReadError::Thread { path, source } => write!(
                f,
                "table file {}: cannot start a thread to read it: {source}",
                path.display()
            ),
            ReadError::Changed { path } => {
                write!(
                    f,
                    "table file {}: changed while it was read",
                    path.display()
                )
            }
        }
    }
}

// The text above carries every cause already: no `source()`, so nothing prints twice.
impl std::error::Error for ReadError {}

/// A load error's text, with how to raise the size limit when that is what stopped it.
fn describe(error: &LoadError) -> String {
    match error {
        LoadError::TooLarge { .. } => format!("{error}; raise it with --max-table-bytes"),
        other => other.to_string(),
    }
}

/// What identifies a version of the file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
}

impl Fingerprint {
    fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
        }
    }
}

/// One stat of the path (symlinks followed).
#[derive(Debug, Clone, Copy)]
struct Stat {
    fingerprint: Fingerprint,
    /// The inode's change time: a rename sets it, and leaves the mtime of the last write.
    ctime: (i64, i64),
}

impl Stat {
    fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            fingerprint: Fingerprint::of(meta),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// Whether this is another inode than `before`, renamed into place after its last write.
    fn is_renamed_in(&self, before: Option<&Version>) -> bool {
        let fp = self.fingerprint;
        let other_inode =
            before.is_none_or(|b| (b.fingerprint.dev, b.fingerprint.ino) != (fp.dev, fp.ino));
        other_inode && self.ctime > fp.mtime
    }
}

/// A version of the file that was read: its identity and a hash of its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    fingerprint: Fingerprint,
    hash: u64,
}

/// The file's text as read, with the version it is.
#[derive(Debug)]
struct Snapshot {
    text: String,
    stat: Stat,
    version: Version,
}

fn text_hash(text: &str) -> u64 {
    // For change detection only: nobody gains from a collision but the one who writes the file.
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

/// Stats, opens and reads the file, off the runtime: only a regular file, with `O_NONBLOCK`,
/// at most `max_bytes`, and only if it did not change while read.
fn read_snapshot(path: &Path, max_bytes: u64) -> Result<Snapshot, ReadError> {
    let io = |source| LoadError::Io {
        path: path.to_owned(),
        source,
    };
    let before = std::fs::metadata(path).map_err(io)?;
    check_table_file(path, &before, max_bytes)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(io)?;
    let text = read_table_from(&file, path, max_bytes)?;
    let after = file.metadata().map_err(io)?;
    let stat = Stat::of(&after);
    if Fingerprint::of(&before) != stat.fingerprint || text.len() as u64 != after.len() {
        return Err(ReadError::Changed {
            path: path.to_owned(),
        });
    }
    let version = Version {
        fingerprint: stat.fingerprint,
        hash: text_hash(&text),
    };
    Ok(Snapshot {
        text,
        stat,
        version,
    })
}

/// Runs file work on a thread of its own, at most one at a time, bounded by a timeout.
#[derive(Debug, Default)]
struct FileWorker {
    /// The thread of the last job that timed out, until it ends.
    stuck: Option<JoinHandle<()>>,
}

impl FileWorker {
    async fn run<T: Send + 'static>(
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

    async fn stat(&mut self, path: &Path) -> Result<Option<Stat>, ReadError> {
        let owned = path.to_owned();
        let stat = self
            .run(path, "stat", IO_TIMEOUT, move || std::fs::metadata(owned))
            .await?;
        match stat {
            Ok(meta) => Ok(Some(Stat::of(&meta))),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(LoadError::Io {
                path: path.to_owned(),
                source,
            }
            .into()),
        }
    }

    async fn read(&mut self, path: &Path, max_bytes: u64) -> Result<Snapshot, ReadError> {
        let owned = path.to_owned();
        self.run(path, "reading", IO_TIMEOUT, move || {
            read_snapshot(&owned, max_bytes)
        })
        .await?
    }

    async fn parse(
        &mut self,
        path: &Path,
        text: String,
        node: Option<String>,
    ) -> Result<TableSpec, ReadError> {
        let origin = path.display().to_string();
        let spec = self
            .run(path, "parsing", PARSE_TIMEOUT, move || {
                parse_spec(&text, &origin)
            })
            .await??;
        Ok(with_node(spec, node.as_deref()))
    }
}

fn with_node(mut spec: TableSpec, node: Option<&str>) -> TableSpec {
    if let Some(node) = node {
        spec.node = Some(node.to_owned());
    }
    spec
}

/// Reads and parses the table file off the runtime, with the node's name overriding the file's
/// `node:`. Values are checked by the tracker the spec is applied to, service port by service
/// port. Returns the version read, for [`watch_file`] to start from.
///
/// # Errors
/// [`ReadError`] when the file is no regular file, too large, cannot be read in time, or does
/// not parse (with the file, line and column): then nothing of it can be trusted.
pub async fn load(options: &FileOptions) -> Result<(TableSpec, Version), ReadError> {
    if let Some(problem) = options.node.as_deref().and_then(control_character_problem) {
        return Err(LoadError::Invalid {
            origin: "--node-name".to_owned(),
            errors: ValidationErrors {
                errors: vec![FieldError::new("node", problem)],
            },
        }
        .into());
    }
    let mut worker = FileWorker::default();
    let snapshot = worker.read(&options.path, options.max_bytes).await?;
    let spec = worker
        .parse(&options.path, snapshot.text, options.node.clone())
        .await?;
    Ok((spec, snapshot.version))
}

/// A changed version seen in place, waiting to hold still for the settle time.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    version: Version,
    since: Instant,
}

/// Polls the table file every `interval` and applies each complete change to `tracker` (see the
/// module docs for when a change is complete): a file that parses is applied (each service port
/// checked on its own, a bad one skipped and reported, its last good version kept); one that
/// does not parse, is no regular file or is too large is logged once and the running table
/// stays. Runs until aborted.
pub async fn watch_file(
    options: FileOptions,
    interval: Duration,
    loaded: Version,
    mut tracker: ChangeTracker,
) {
    let path = options.path.clone();
    let mut worker = FileWorker::default();
    // The version applied last; `None` once the file is gone.
    let mut seen: Option<Version> = Some(loaded);
    let mut candidate: Option<Candidate> = None;
    let mut last_problem: Option<String> = None;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let step = poll_once(&options, &mut worker, seen.as_ref(), &mut candidate).await;
        let snapshot = match step {
            Ok(Poll::Unchanged) => continue,
            Ok(Poll::Gone) => {
                if seen.take().is_some() {
                    error!(file = %path.display(), "table file is gone; keeping the running table");
                }
                candidate = None;
                continue;
            }
            Ok(Poll::Complete(snapshot)) => snapshot,
            Err(problem) => {
                report_once(&mut last_problem, &problem);
                continue;
            }
        };
        candidate = None;
        seen = Some(snapshot.version);
        match apply(&options, &mut worker, snapshot, &mut tracker).await {
            Ok(()) => last_problem = None,
            Err(problem) => report_once(&mut last_problem, &problem),
        }
    }
}

/// Logs a problem with the file unless it is the one logged last: a FIFO or a file that does
/// not parse is reported once, not at every poll.
fn report_once(last_problem: &mut Option<String>, problem: &ReadError) {
    let text = problem.to_string();
    if last_problem.as_ref() != Some(&text) {
        error!(error = %text, "ignoring the changed table file; keeping the running table");
        *last_problem = Some(text);
    }
}

/// What one poll found.
#[derive(Debug)]
enum Poll {
    /// Nothing to apply (yet).
    Unchanged,
    /// The path names nothing.
    Gone,
    /// A complete new version.
    Complete(Snapshot),
}

/// One poll: stat, and when the file changed, settle, read and decide whether the change is
/// complete (renamed in, or held still for the settle time).
async fn poll_once(
    options: &FileOptions,
    worker: &mut FileWorker,
    seen: Option<&Version>,
    candidate: &mut Option<Candidate>,
) -> Result<Poll, ReadError> {
    let path = &options.path;
    let Some(stat) = worker.stat(path).await? else {
        return Ok(Poll::Gone);
    };
    let fingerprint = stat.fingerprint;
    if candidate.is_none() && seen.is_some_and(|s| s.fingerprint == fingerprint) {
        return Ok(Poll::Unchanged);
    }
    if let Some(waiting) = candidate.filter(|c| c.version.fingerprint == fingerprint) {
        if waiting.since.elapsed() < options.settle {
            return Ok(Poll::Unchanged);
        }
    }
    // Wait until the writer is done: the identity must hold still for SETTLE.
    tokio::time::sleep(SETTLE).await;
    let settled = worker.stat(path).await?;
    if settled.map(|s| s.fingerprint) != Some(fingerprint) {
        *candidate = None;
        return Ok(Poll::Unchanged);
    }
    let snapshot = match worker.read(path, options.max_bytes).await {
        Ok(snapshot) => snapshot,
        Err(ReadError::Changed { .. }) => {
            *candidate = None;
            return Ok(Poll::Unchanged);
        }
        Err(other) => return Err(other),
    };
    let version = snapshot.version;
    if seen == Some(&version) {
        // Touched, or written back the same: nothing to apply.
        *candidate = None;
        return Ok(Poll::Unchanged);
    }
    if snapshot.stat.is_renamed_in(seen) {
        return Ok(Poll::Complete(snapshot));
    }
    match candidate {
        Some(waiting)
            if waiting.version == version && waiting.since.elapsed() >= options.settle =>
        {
            Ok(Poll::Complete(snapshot))
        }
        Some(waiting) if waiting.version == version => Ok(Poll::Unchanged),
        _ => {
            *candidate = Some(Candidate {
                version,
                since: Instant::now(),
            });
            Ok(Poll::Unchanged)
        }
    }
}

/// Parses a complete version and applies it to the tracker.
async fn apply(
    options: &FileOptions,
    worker: &mut FileWorker,
    snapshot: Snapshot,
    tracker: &mut ChangeTracker,
) -> Result<(), ReadError> {
    let path = &options.path;
    let spec = worker
        .parse(path, snapshot.text, options.node.clone())
        .await?;
    let before = tracker.generation();
    let running = tracker.table().clone();
    let generation = spec.apply_to(tracker);
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
    Ok(())
}
