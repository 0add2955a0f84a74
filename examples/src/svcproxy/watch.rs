//! The table file as a service source: load it, then watch it for changes, feeding each version
//! to the change tracker (the same path an embedder's controller takes, object by object).
//!
//! # How changes are seen
//!
//! inotify watches the file's directory, and the directory of every symlink on the way to it
//! ([`dirwatch`]), for events on those names only. That sees every way a file gets replaced:
//! written in place, renamed over by an editor or `sed -i`, or swapped through a symlink, such as
//! the `..data` link of a Kubernetes ConfigMap volume. After a name on the way changes, or a
//! watched directory goes away, the watches are set up again for the path as it resolves then.
//!
//! Polling the file's identity (device, inode, size, mtime) every `--poll-interval-ms` is the
//! fallback: while inotify cannot cover the path (a directory on the way is gone; each poll tries
//! again), when the kernel gives no inotify instance, or when `SVCPROXY_WATCH=poll` asks for it
//! (a file system whose changes inotify does not see, such as one written from another host, or
//! to compare with the old behaviour).
//!
//! # When a change applies
//!
//! - A **complete write** applies at once: a file renamed into place, itself or a symlink on the
//!   way to it (`IN_MOVED_TO`; by polling: a new inode whose change time is after its last write),
//!   a file closed after writing (`IN_CLOSE_WRITE`, unless the last event on it is a write again),
//!   or a symlink created.
//! - Any other change (written in place and not closed, seen by `IN_MODIFY` or a poll; also an
//!   emptied file, which is what a truncation before a write leaves) applies only once its size,
//!   mtime **and** content hash have stayed the same for the settle time (`--settle-ms`),
//!   checked at two looks at least that far apart. A writer that pauses longer than that in the
//!   middle of a write can still get its first part applied when that part is a valid table, and
//!   so can one that closes the file between parts. Writing a temporary file and renaming it over
//!   the table is the one safe way.
//!
//! A version that applies is parsed service by service ([`SpecCache`]): only the services whose
//! text changed since the last version go to the parser, which at a thousand services is most of
//! the time from an edit to the dataplane otherwise.
//!
//! # Hostile files
//!
//! Only a regular file is read (a symlink is followed first): `/dev/zero`, a FIFO, a socket or a
//! directory is refused before it is opened, and the open itself uses `O_NONBLOCK`, so a FIFO
//! swapped in between cannot block it. At most `--max-table-bytes` are read. Every stat, open,
//! read and parse, and the resolving of the path for the watches, runs on a thread of its own,
//! bounded by a timeout, never on the runtime ([`worker`]): a file system that hangs stalls only
//! that thread, while signals, the sync loop and health keep working. (A plain thread rather
//! than `spawn_blocking`: the runtime waits for its blocking pool on shutdown, so a read stuck
//! there would hold up the exit.)

mod check; // when a change applies: the settle rule and complete writes
mod dirwatch; // inotify watches on the directories on the way to the file
mod worker; // file work on a thread of its own, with a timeout

use std::hash::{Hash as _, Hasher as _};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use proxy_core::file::{check_table_file, read_table_from, LoadError, SpecCache, TableSpec};
use proxy_core::tracker::ChangeTracker;
use proxy_core::validate::control_character_problem;
use proxy_core::{FieldError, ValidationErrors};
use tracing::{error, info, warn};

use self::check::{check, Candidate, Check};
use self::dirwatch::{DirWatch, WatchError};
use self::worker::FileWorker;

/// How long a changed file must hold still (size, mtime) before it is read at all.
pub const SETTLE: Duration = Duration::from_millis(50);
/// The longest a stat, or an open and read, of the table file may take.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Set to `poll` to watch the table file by polling only (see the module docs).
pub const WATCH_MODE_ENV: &str = "SVCPROXY_WATCH";
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
    let io = |error| LoadError::Io {
        path: path.to_owned(),
        error,
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
pub async fn load(options: &FileOptions) -> Result<(TableSpec, Loaded), ReadError> {
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
    let mut cache = SpecCache::default();
    let spec = worker
        .parse(
            &options.path,
            snapshot.text,
            options.node.clone(),
            &mut cache,
        )
        .await?;
    let loaded = Loaded {
        version: snapshot.version,
        cache,
    };
    Ok((spec, loaded))
}

/// What [`load`] read, for [`watch_file`] to start from: the version, and its services parsed,
/// so that an edit parses only the services it changed.
#[derive(Debug)]
pub struct Loaded {
    version: Version,
    cache: SpecCache,
}

/// What made the watcher look at the file.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Wake {
    /// A poll, a settle deadline, a metadata change, a removal or lost events: only a version
    /// renamed into place, or one that held still for the settle time, applies.
    Poll,
    /// inotify saw the file written in place, not (yet) closed: look again once it pauses.
    Modified,
    /// A complete write: the file closed after writing (`IN_CLOSE_WRITE`), or renamed into
    /// place, itself or a symlink on the way to it (`IN_MOVED_TO`): it applies at once.
    Completed,
    /// This entry on the way to the file was created: complete if it is a symlink (made whole
    /// in one call), written in place otherwise (a file is created empty, then written).
    Created(PathBuf),
}

/// Watches the table file and applies each complete change to `tracker` (see the module docs for
/// when a change is complete): a file that parses is applied (each service port checked on its
/// own, a bad one skipped and reported, its last good version kept); one that does not parse,
/// is no regular file or is too large is logged once and the running table stays. inotify
/// wakes it; it polls every `interval` only while inotify cannot cover the path. Runs until
/// aborted.
pub async fn watch_file(
    options: FileOptions,
    interval: Duration,
    loaded: Loaded,
    tracker: ChangeTracker,
) {
    let mut watcher = Watcher {
        worker: FileWorker::default(),
        seen: Some(loaded.version),
        cache: loaded.cache,
        candidate: None,
        last_problem: None,
        options,
        tracker,
    };
    let mut notify = Notify::start(&mut watcher, interval).await;
    if notify.as_ref().is_some_and(|n| n.covered) {
        // A change made between the load and the watches is in no event.
        watcher.look(false).await;
    }
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // When to look at a file written in place that inotify saw no close of.
    let mut modified_check: Option<Instant> = None;
    loop {
        let polling = notify.as_ref().is_none_or(|n| !n.covered);
        // While inotify covers the path, nothing polls: a change waiting to settle needs a timer.
        let settle_due = watcher
            .candidate
            .filter(|_| !polling)
            .map(|c| c.since + watcher.options.settle);
        let due = [modified_check, settle_due].into_iter().flatten().min();
        let woke = tokio::select! {
            batch = next_batch(&mut notify) => Woke::Events(batch),
            _ = ticker.tick(), if polling => Woke::Tick,
            () = sleep_until(due), if due.is_some() => Woke::Due,
        };
        match woke {
            Woke::Tick => {
                if let Some(n) = notify.as_mut() {
                    // Back as soon as the directories are: the next event is not missed.
                    n.rewatch(&mut watcher, interval).await;
                }
                watcher.look(false).await;
            }
            Woke::Due => {
                modified_check = None;
                watcher.look(false).await;
            }
            Woke::Events(Ok(Some(batch))) => {
                if batch.rewatch {
                    if let Some(n) = notify.as_mut() {
                        n.rewatch(&mut watcher, interval).await;
                    }
                }
                let wake = match batch.wake {
                    Some(Wake::Created(entry)) => watcher.created(entry).await,
                    other => other,
                };
                match wake {
                    None => {}
                    Some(Wake::Modified | Wake::Created(_)) => {
                        // Each write pushes the look back: it comes once the writer pauses.
                        modified_check = Some(Instant::now() + SETTLE);
                    }
                    Some(Wake::Completed) => {
                        modified_check = None;
                        watcher.look(true).await;
                    }
                    Some(Wake::Poll) => watcher.look(false).await,
                }
            }
            Woke::Events(ended) => {
                let error = match ended {
                    Err(err) => err.to_string(),
                    _ => "no more events".to_owned(),
                };
                warn!(
                    file = %watcher.options.path.display(),
                    %error,
                    poll_interval_ms = interval.as_millis(),
                    "inotify failed; polling the table file from now on"
                );
                notify = None;
            }
        }
    }
}

/// What the watch loop woke for.
enum Woke {
    Events(std::io::Result<Option<dirwatch::Batch>>),
    Tick,
    Due,
}

async fn next_batch(notify: &mut Option<Notify>) -> std::io::Result<Option<dirwatch::Batch>> {
    match notify {
        Some(notify) => notify.watch.next_batch().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due.into()).await,
        None => std::future::pending().await,
    }
}

/// Whether `SVCPROXY_WATCH` asks for polling only.
fn poll_only() -> bool {
    match std::env::var(WATCH_MODE_ENV) {
        Ok(mode) if mode == "poll" => true,
        Ok(mode) if mode == "inotify" || mode.is_empty() => false,
        Ok(mode) => {
            warn!(
                variable = WATCH_MODE_ENV,
                value = %mode,
                "unknown watch mode (expected poll or inotify); using inotify"
            );
            false
        }
        Err(_) => false,
    }
}

/// The inotify side of the watcher: its watches, and whether they cover the path now.
#[derive(Debug)]
struct Notify {
    watch: DirWatch,
    covered: bool,
    /// The last reason the path could not be watched, logged once.
    last_error: Option<String>,
}

impl Notify {
    /// Starts inotify and watches the path; `None` (logged) when inotify is unavailable or
    /// turned off, and the watcher polls.
    async fn start(watcher: &mut Watcher, interval: Duration) -> Option<Notify> {
        let file = watcher.options.path.display().to_string();
        if poll_only() {
            info!(
                %file,
                poll_interval_ms = interval.as_millis(),
                "{WATCH_MODE_ENV}=poll: polling the table file"
            );
            return None;
        }
        let watch = match DirWatch::start() {
            Ok(watch) => watch,
            Err(err) => {
                warn!(
                    %file,
                    error = %err,
                    poll_interval_ms = interval.as_millis(),
                    "polling the table file"
                );
                return None;
            }
        };
        let mut notify = Notify {
            watch,
            covered: false,
            last_error: None,
        };
        notify.rewatch(watcher, interval).await;
        Some(notify)
    }

    /// Sets up the watches for the path as it resolves now; on failure (a directory gone), the
    /// watcher polls until a later call succeeds.
    async fn rewatch(&mut self, watcher: &mut Watcher, interval: Duration) {
        let path = watcher.options.path.clone();
        let job = self.watch.rewatch_job(&path);
        let result = match watcher.worker.run(&path, "watching", IO_TIMEOUT, job).await {
            Ok(result) => result,
            Err(err) => Err(WatchError::Worker(err)),
        };
        match result {
            Ok(watched) => {
                self.watch.set_watched(watched);
                if !self.covered {
                    info!(
                        file = %path.display(),
                        dirs = ?self.watch.dirs(),
                        "watching the table file with inotify"
                    );
                }
                self.covered = true;
                self.last_error = None;
            }
            Err(err) => {
                let error = err.to_string();
                if self.covered || self.last_error.as_ref() != Some(&error) {
                    warn!(
                        file = %path.display(),
                        %error,
                        poll_interval_ms = interval.as_millis(),
                        "cannot watch the table file with inotify; polling it until it can"
                    );
                }
                self.covered = false;
                self.last_error = Some(error);
            }
        }
    }
}

/// The watcher's state between looks at the file.
#[derive(Debug)]
struct Watcher {
    options: FileOptions,
    worker: FileWorker,
    /// The version applied last; `None` once the file is gone.
    seen: Option<Version>,
    /// The services of the version applied last, parsed.
    cache: SpecCache,
    candidate: Option<Candidate>,
    last_problem: Option<String>,
    tracker: ChangeTracker,
}

impl Watcher {
    /// Looks at the file and applies a complete new version; `complete` when inotify saw a
    /// complete write.
    async fn look(&mut self, complete: bool) {
        let looked = Instant::now();
        let step = check(
            &self.options,
            &mut self.worker,
            self.seen.as_ref(),
            &mut self.candidate,
            complete,
        )
        .await;
        let snapshot = match step {
            Ok(Check::Unchanged) => return,
            Ok(Check::Gone) => {
                if self.seen.take().is_some() {
                    error!(
                        file = %self.options.path.display(),
                        "table file is gone; keeping the running table"
                    );
                }
                self.candidate = None;
                return;
            }
            Ok(Check::Complete(snapshot)) => snapshot,
            Err(problem) => {
                report_once(&mut self.last_problem, &problem);
                return;
            }
        };
        self.candidate = None;
        self.seen = Some(snapshot.version);
        let applied = apply(
            &self.options,
            &mut self.worker,
            snapshot,
            &mut self.cache,
            &mut self.tracker,
            looked,
        );
        match applied.await {
            Ok(()) => self.last_problem = None,
            Err(problem) => report_once(&mut self.last_problem, &problem),
        }
    }

    /// How to take the creation of `entry`: a symlink is whole at once, anything else is
    /// written after it is created.
    async fn created(&mut self, entry: PathBuf) -> Option<Wake> {
        let path = self.options.path.clone();
        let is_symlink = self
            .worker
            .run(&path, "stat", IO_TIMEOUT, move || {
                std::fs::symlink_metadata(entry).is_ok_and(|meta| meta.file_type().is_symlink())
            })
            .await
            .unwrap_or(false);
        Some(if is_symlink {
            Wake::Completed
        } else {
            Wake::Modified
        })
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

/// Parses a complete version and applies it to the tracker; `looked` is when the look that read
/// it began, for the log's timings.
async fn apply(
    options: &FileOptions,
    worker: &mut FileWorker,
    snapshot: Snapshot,
    cache: &mut SpecCache,
    tracker: &mut ChangeTracker,
    looked: Instant,
) -> Result<(), ReadError> {
    let path = &options.path;
    let parsing = Instant::now();
    let spec = worker
        .parse(path, snapshot.text, options.node.clone(), cache)
        .await?;
    let parsed = Instant::now();
    let before = tracker.generation();
    let running = tracker.table().clone();
    let generation = spec.apply_to(tracker);
    if !tracker.table().ptr_eq(&running) || generation != before {
        let ms = |from: Instant, to: Instant| (to - from).as_secs_f64() * 1e3;
        let now = Instant::now();
        info!(
            file = %path.display(),
            generation,
            service_ports = tracker.table().len(),
            endpoints = tracker.table().endpoint_count(),
            skipped = tracker.skipped().len(),
            read_ms = ms(looked, parsing),
            parse_ms = ms(parsing, parsed),
            apply_ms = ms(parsed, now),
            "table file applied"
        );
    }
    Ok(())
}
