//! inotify watches on the directories that decide what the table path names, and the reading of
//! their events as wake-ups for the watcher (issue #11).
//!
//! A path is watched through its directories, never through the file itself: a watch on the file
//! follows its inode, so it goes deaf as soon as an editor, `sed -i` or a rename replaces the file.
//! The watched names are the path's own and those of every symlink met while resolving it, in the
//! directory holding each. For a Kubernetes ConfigMap volume (`table.yaml -> ..data/table.yaml`,
//! `..data -> ..2026_12_01_19_00_00.123`), that is `table.yaml` and `..data` in the volume, and
//! `table.yaml` in the timestamped directory; the kubelet swaps `..data` with a rename, which is
//! seen as `IN_MOVED_TO ..data` (Ref: kubernetes `pkg/volume/util/atomic_writer.go`).
//!
//! Only events on those names count: another file closed in the same directory says nothing
//! about the table, and taking it as a complete write could apply a table still being written.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use futures_util::{FutureExt as _, StreamExt as _};
use inotify::{EventMask, EventOwned, EventStream, Inotify, WatchDescriptor, WatchMask, Watches};

use super::Wake;

/// The most symlinks followed while resolving the table path (Linux's own limit, `MAXSYMLINKS`).
const MAX_SYMLINKS: usize = 40;
/// The inotify read buffer: room for about 150 events with short names per read.
const BUFFER_BYTES: usize = 4096;
/// What each directory is watched for: every way an entry can be written, replaced or removed,
/// and the directory itself going away.
const MASK: WatchMask = WatchMask::CLOSE_WRITE
    .union(WatchMask::MODIFY)
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::CREATE)
    .union(WatchMask::DELETE)
    .union(WatchMask::ATTRIB)
    .union(WatchMask::DELETE_SELF)
    .union(WatchMask::MOVE_SELF)
    .union(WatchMask::ONLYDIR);

/// Why the table path cannot be watched with inotify; the watcher polls meanwhile.
///
/// Each message carries its cause, and none is also a `source`: the watcher logs these alone
/// (`%error`), and a chain of causes would print the cause twice.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The kernel gave no inotify instance (disabled, or `fs.inotify.max_user_instances` used up).
    #[error("cannot start inotify: {0}")]
    Init(std::io::Error),
    /// A directory or symlink on the way to the table could not be read (often: a directory is
    /// gone).
    #[error("cannot resolve {path}: {error}")]
    Resolve {
        /// The entry that could not be read.
        path: PathBuf,
        /// The operating system's error.
        error: std::io::Error,
    },
    /// A directory could not be watched (gone, or `fs.inotify.max_user_watches` used up).
    #[error("cannot watch directory {dir}: {error}")]
    Add {
        /// The directory.
        dir: PathBuf,
        /// The operating system's error.
        error: std::io::Error,
    },
    /// The work did not finish (it runs on a thread with a timeout, like every file access).
    #[error("{0}")]
    Worker(super::ReadError),
}

/// A watched directory and the names in it that matter for the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watched {
    dir: PathBuf,
    names: BTreeSet<OsString>,
}

/// The watches of one table path, set up with [`DirWatch::rewatch_job`].
#[derive(Debug)]
pub struct DirWatch {
    stream: EventStream<[u8; BUFFER_BYTES]>,
    watched: HashMap<WatchDescriptor, Watched>,
}

/// What one batch of events asks of the watcher.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Batch {
    /// How to look at the file now, if at all.
    pub wake: Option<Wake>,
    /// Whether the set of watched directories may have changed (a name on the way replaced, a
    /// watched directory gone, or events lost), so the watches must be set up again.
    pub rewatch: bool,
}

impl DirWatch {
    /// Starts an inotify instance, with no watches yet.
    ///
    /// # Errors
    /// [`WatchError::Init`] when the kernel gives none.
    pub fn start() -> Result<Self, WatchError> {
        let inotify = Inotify::init().map_err(WatchError::Init)?;
        let stream = inotify
            .into_event_stream([0; BUFFER_BYTES])
            .map_err(WatchError::Init)?;
        Ok(Self {
            stream,
            watched: HashMap::new(),
        })
    }

    /// A job for a file thread that watches what `path` depends on and drops the watches no
    /// longer needed; hand its result to [`DirWatch::set_watched`].
    pub fn rewatch_job(
        &self,
        path: &Path,
    ) -> impl FnOnce() -> Result<HashMap<WatchDescriptor, Watched>, WatchError> + Send + 'static
    {
        let path = path.to_owned();
        let watches = self.stream.watches();
        let old: Vec<WatchDescriptor> = self.watched.keys().cloned().collect();
        move || rewatch(&path, watches, old)
    }

    /// Records the watches a [`DirWatch::rewatch_job`] set up.
    pub fn set_watched(&mut self, watched: HashMap<WatchDescriptor, Watched>) {
        self.watched = watched;
    }

    /// The directories watched, for the logs.
    pub fn dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self.watched.values().map(|w| w.dir.clone()).collect();
        dirs.sort();
        dirs
    }

    /// Waits for events and returns what the ones ready now ask for, together: a writer's
    /// `IN_MODIFY` and `IN_CLOSE_WRITE` usually arrive in one read.
    ///
    /// # Errors
    /// The inotify descriptor's read error; `Ok(None)` when it can give no more events.
    pub async fn next_batch(&mut self) -> std::io::Result<Option<Batch>> {
        let Some(first) = self.stream.next().await else {
            return Ok(None);
        };
        let mut events = vec![first?];
        // Whatever else is ready, without waiting.
        while let Some(Some(next)) = self.stream.next().now_or_never() {
            events.push(next?);
        }
        Ok(Some(classify(&self.watched, &events)))
    }
}

/// What a batch of events asks for: how to look at the file, judged by the last event on a name
/// that matters (a write after a close means the file is being written again), and whether to
/// watch anew.
fn classify(watched: &HashMap<WatchDescriptor, Watched>, events: &[EventOwned]) -> Batch {
    let mut batch = Batch::default();
    for event in events {
        if event.mask.contains(EventMask::Q_OVERFLOW) {
            // Events were lost: look (the settle rule, since nothing says the write is over).
            batch.rewatch = true;
            batch.wake = Some(merge(batch.wake.take(), Wake::Poll));
            continue;
        }
        // A watch we dropped ourselves still reports IN_IGNORED: not ours any more.
        let Some(dir) = watched.get(&event.wd) else {
            continue;
        };
        if event.mask.intersects(
            EventMask::IGNORED | EventMask::DELETE_SELF | EventMask::MOVE_SELF | EventMask::UNMOUNT,
        ) {
            batch.rewatch = true;
            batch.wake = Some(merge(batch.wake.take(), Wake::Poll));
            continue;
        }
        let Some(name) = event.name.as_ref().filter(|n| dir.names.contains(*n)) else {
            continue;
        };
        if event.mask.intersects(
            EventMask::CREATE | EventMask::DELETE | EventMask::MOVED_FROM | EventMask::MOVED_TO,
        ) {
            // A name on the way was replaced: a symlink may point elsewhere now.
            batch.rewatch = true;
        }
        let wake = if event
            .mask
            .intersects(EventMask::CLOSE_WRITE | EventMask::MOVED_TO)
        {
            Wake::Completed
        } else if event.mask.contains(EventMask::MODIFY) {
            Wake::Modified
        } else if event.mask.contains(EventMask::CREATE) {
            Wake::Created(dir.dir.join(name))
        } else {
            Wake::Poll
        };
        batch.wake = Some(merge(batch.wake.take(), wake));
    }
    batch
}

/// The wake for `earlier` followed by `later`: a complete write is complete until the next
/// write; a metadata change or removal does not make a write any less complete or pending.
fn merge(earlier: Option<Wake>, later: Wake) -> Wake {
    match (earlier, later) {
        (Some(earlier @ (Wake::Completed | Wake::Modified | Wake::Created(_))), Wake::Poll) => {
            earlier
        }
        (_, later) => later,
    }
}

/// Watches every directory in [`watch_points`] of `path`, then drops the `old` watches not among
/// them.
fn rewatch(
    path: &Path,
    mut watches: Watches,
    old: Vec<WatchDescriptor>,
) -> Result<HashMap<WatchDescriptor, Watched>, WatchError> {
    let mut by_dir: Vec<Watched> = Vec::new();
    for (dir, name) in watch_points(path)? {
        match by_dir.iter_mut().find(|w| w.dir == dir) {
            Some(watched) => {
                watched.names.insert(name);
            }
            None => by_dir.push(Watched {
                dir,
                names: BTreeSet::from([name]),
            }),
        }
    }
    let mut watched: HashMap<WatchDescriptor, Watched> = HashMap::new();
    for entry in by_dir {
        let wd = watches
            .add(&entry.dir, MASK)
            .map_err(|error| WatchError::Add {
                dir: entry.dir.clone(),
                error,
            })?;
        // Two paths to one directory (a symlinked directory) share one watch: merge the names.
        match watched.get_mut(&wd) {
            Some(existing) => existing.names.extend(entry.names),
            None => {
                watched.insert(wd, entry);
            }
        }
    }
    for wd in old.into_iter().filter(|wd| !watched.contains_key(wd)) {
        // Fails when the kernel dropped the watch already (its directory is gone): no matter.
        let _ = watches.remove(wd);
    }
    Ok(watched)
}

/// One step of resolving a path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Root,
    Parent,
    Name(OsString),
}

fn steps(path: &Path) -> VecDeque<Step> {
    use std::path::Component;
    path.components()
        .filter_map(|component| match component {
            Component::RootDir => Some(Step::Root),
            Component::ParentDir => Some(Step::Parent),
            Component::Normal(name) => Some(Step::Name(name.to_owned())),
            Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

/// The (directory, name) entries whose replacement changes what `path` names: each symlink met
/// while resolving it (as the kernel does, component by component), and the file it ends at (also
/// when that does not exist yet). Directories in the result are fully resolved.
///
/// # Errors
/// [`WatchError::Resolve`] when a directory on the way is missing or unreadable, or there are
/// more than [`MAX_SYMLINKS`] symlinks.
pub fn watch_points(path: &Path) -> Result<Vec<(PathBuf, OsString)>, WatchError> {
    let resolve_error = |path: &Path, error| WatchError::Resolve {
        path: path.to_owned(),
        error,
    };
    let absolute = std::path::absolute(path).map_err(|e| resolve_error(path, e))?;
    let mut pending = steps(&absolute);
    let mut resolved = PathBuf::from("/");
    let mut points = Vec::new();
    let mut symlinks = 0;
    while let Some(step) = pending.pop_front() {
        let name = match step {
            Step::Root => {
                resolved = PathBuf::from("/");
                continue;
            }
            Step::Parent => {
                resolved.pop();
                continue;
            }
            Step::Name(name) => name,
        };
        let entry = resolved.join(&name);
        let is_last = pending.is_empty();
        match std::fs::symlink_metadata(&entry) {
            Ok(meta) if meta.file_type().is_symlink() => {
                symlinks += 1;
                if symlinks > MAX_SYMLINKS {
                    return Err(resolve_error(
                        &entry,
                        std::io::Error::other(format!("more than {MAX_SYMLINKS} symlinks")),
                    ));
                }
                let target = std::fs::read_link(&entry).map_err(|e| resolve_error(&entry, e))?;
                points.push((resolved.clone(), name));
                // The target's steps come first; a relative one resolves from the symlink's
                // directory, which `resolved` still is.
                let mut next = steps(&target);
                next.extend(pending);
                pending = next;
            }
            Ok(_) => {
                if is_last {
                    points.push((resolved.clone(), name));
                }
                resolved = entry;
            }
            Err(err) if is_last && err.kind() == std::io::ErrorKind::NotFound => {
                // Not there (yet): watching its directory sees it arrive.
                points.push((resolved.clone(), name));
                resolved = entry;
            }
            Err(err) => return Err(resolve_error(&entry, err)),
        }
    }
    Ok(points)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "svcproxy-dirwatch-{tag}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        dir.canonicalize().expect("canonical temp dir")
    }

    fn point(dir: &Path, name: &str) -> (PathBuf, OsString) {
        (dir.to_owned(), OsString::from(name))
    }

    #[test]
    fn a_plain_file_is_watched_in_its_directory_even_before_it_exists() {
        let dir = temp_dir("plain");
        let path = dir.join("table.yaml");
        assert_eq!(
            watch_points(&path).expect("resolves"),
            vec![point(&dir, "table.yaml")]
        );
        std::fs::write(&path, "services: []\n").expect("write");
        assert_eq!(
            watch_points(&path).expect("resolves"),
            vec![point(&dir, "table.yaml")]
        );
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn a_configmap_volume_watches_the_link_the_data_link_and_the_file() {
        let dir = temp_dir("configmap");
        let version = dir.join("..2026_12_01_19_00_00.000000001");
        std::fs::create_dir(&version).expect("version dir");
        std::fs::write(version.join("table.yaml"), "services: []\n").expect("write");
        std::os::unix::fs::symlink("..2026_12_01_19_00_00.000000001", dir.join("..data"))
            .expect("..data");
        std::os::unix::fs::symlink("..data/table.yaml", dir.join("table.yaml")).expect("link");
        assert_eq!(
            watch_points(&dir.join("table.yaml")).expect("resolves"),
            vec![
                point(&dir, "table.yaml"),
                point(&dir, "..data"),
                point(&version, "table.yaml"),
            ]
        );
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn a_missing_directory_is_an_error_and_a_symlink_loop_ends() {
        let dir = temp_dir("missing");
        let err = watch_points(&dir.join("gone/table.yaml")).expect_err("no directory");
        assert!(err.to_string().contains("gone"), "{err}");
        std::os::unix::fs::symlink("b", dir.join("a")).expect("a");
        std::os::unix::fs::symlink("a", dir.join("b")).expect("b");
        let err = watch_points(&dir.join("a")).expect_err("a loop");
        assert!(err.to_string().contains("symlinks"), "{err}");
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn the_last_event_on_a_watched_name_decides_and_others_are_ignored() {
        use Wake::{Completed, Modified, Poll};
        let merged = |wakes: &[Wake]| {
            wakes
                .iter()
                .cloned()
                .fold(None, |acc, w| Some(merge(acc, w)))
        };
        assert_eq!(merged(&[Modified, Completed]), Some(Completed));
        // Written again after a close: not complete any more.
        assert_eq!(merged(&[Completed, Modified]), Some(Modified));
        // A chmod after the close leaves it complete.
        assert_eq!(merged(&[Modified, Completed, Poll]), Some(Completed));
        assert_eq!(merged(&[Poll]), Some(Poll));
    }
}
