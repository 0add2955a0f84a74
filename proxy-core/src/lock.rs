//! [`DataplaneLock`]: one owner per set of kernel objects, so that two instances on one node
//! never destroy each other.
//!
//! Two dataplanes of the same backend with the same prefix in the same network namespace own
//! the same chains (or virtual servers, sets, interface): each full resync deletes what it does
//! not know, so each deletes the other's, and when one exits with cleanup the other loses every
//! rule while its own health still says it synced. A backend therefore takes this lock where it
//! first touches the kernel and keeps it for its life: the second instance's first sync fails
//! with [`LockError::Held`], naming the holder's pid and command line, and the sync loop retries
//! it with backoff (so it takes over once the first is gone) and shows it in its health.
//!
//! The lock is `flock(LOCK_EX | LOCK_NB)` on a file under [`DEFAULT_LOCK_DIR`] (created `0700`),
//! named from the [`LockKey`]: the network namespace (its nsfs device and inode, the identity
//! `ip netns identify` and `/proc/PID/ns/net` share), the backend and its prefix. The kernel
//! drops a `flock` when its holder dies, however it dies, so a crashed instance never blocks the
//! next. The holder writes its pid and command line into the file, for the error of the next.
//! Instances in different mount namespaces (containers) see each other only if they share the
//! directory, as they must share `/run/xtables.lock` for iptables' own lock.
//!
//! ```
//! use proxy_core::lock::{DataplaneLock, LockError, LockKey, NetnsId};
//!
//! # let dir = std::env::temp_dir().join(format!("svcproxy-lock-doc-{}", std::process::id()));
//! let key = LockKey::new(NetnsId::current().unwrap(), "iptables", "SVCP-");
//! let first = DataplaneLock::acquire_in(&dir, &key).unwrap();
//! match DataplaneLock::acquire_in(&dir, &key) {
//!     Err(LockError::Held { holder, .. }) => assert_eq!(holder.pid, Some(std::process::id())),
//!     other => panic!("{other:?}"),
//! }
//! drop(first);
//! let _second = DataplaneLock::acquire_in(&dir, &key).unwrap();
//! # drop(_second); let _ = std::fs::remove_dir(&dir);
//! ```

use std::fmt;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Read as _, Seek as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// Where the lock files live unless a backend is told otherwise.
pub const DEFAULT_LOCK_DIR: &str = "/run/svcproxy";

/// How often [`DataplaneLock::acquire_in`] reopens a lock file that its previous holder removed
/// between our open and our lock (each time means another instance came and went meanwhile).
const REOPEN_ATTEMPTS: usize = 8;

/// A network namespace's identity: the device and inode of its nsfs file, the same whichever
/// path reaches it (`/proc/self/ns/net`, `/proc/PID/ns/net`, `/run/netns/NAME`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetnsId {
    /// Device of the nsfs file.
    pub dev: u64,
    /// Inode of the nsfs file (`net:[INODE]` in `/proc/PID/ns/net`'s link).
    pub ino: u64,
}

impl NetnsId {
    /// The namespace of the calling *thread* (`/proc/thread-self/ns/net`): what the commands and
    /// sockets it opens reach. The same as `/proc/self/ns/net` unless the thread has entered
    /// another namespace with `setns(2)`.
    ///
    /// # Errors
    /// The `stat(2)` error (no `/proc`).
    pub fn current() -> io::Result<Self> {
        Self::of_path("/proc/thread-self/ns/net")
    }

    /// The namespace `ip netns add NAME` made (`/run/netns/NAME`).
    ///
    /// # Errors
    /// The `stat(2)` error (no such namespace).
    pub fn named(name: &str) -> io::Result<Self> {
        Self::of_path(Path::new("/run/netns").join(name))
    }

    /// The namespace a nsfs file (or a bind mount of one) refers to.
    ///
    /// # Errors
    /// The `stat(2)` error.
    pub fn of_path(path: impl AsRef<Path>) -> io::Result<Self> {
        let meta = std::fs::metadata(path.as_ref())?;
        Ok(Self {
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }
}

impl fmt::Display for NetnsId {
    /// As `/proc` names it: `net:[4026531840]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "net:[{}]", self.ino)
    }
}

/// What a lock protects: the objects of `backend` under `scope` (its prefix) in one network
/// namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LockKey {
    /// The namespace the backend programs.
    pub netns: NetnsId,
    /// The backend's name (`iptables`, `ipvs`).
    pub backend: String,
    /// What distinguishes two instances' objects in one namespace: the chain prefix, or an
    /// interface name.
    pub scope: String,
}

impl LockKey {
    /// A key for `backend`'s objects under `scope` in `netns`.
    pub fn new(netns: NetnsId, backend: impl Into<String>, scope: impl Into<String>) -> Self {
        Self {
            netns,
            backend: backend.into(),
            scope: scope.into(),
        }
    }

    /// The lock file's name: `iptables-net-<dev>-<ino>-SVCP-.lock`, with any byte of the
    /// backend or scope other than `A-Za-z0-9-_.` written `%XX`.
    pub fn file_name(&self) -> String {
        format!(
            "{}-net-{:x}-{}-{}.lock",
            escape(&self.backend),
            self.netns.dev,
            self.netns.ino,
            escape(&self.scope)
        )
    }
}

impl fmt::Display for LockKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} objects under {:?} in network namespace {}",
            self.backend, self.scope, self.netns
        )
    }
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Who holds a lock, as it wrote itself into the lock file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Its process id; `None` if it had not written it yet (it took the lock an instant ago).
    pub pid: Option<u32>,
    /// Its command line, arguments separated by spaces; empty if unknown.
    pub command: String,
}

impl Holder {
    /// This process.
    fn this_process() -> Self {
        let command: Vec<String> = std::env::args_os()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        Self {
            pid: Some(std::process::id()),
            command: command.join(" "),
        }
    }

    /// The file's text: `pid <pid>\ncommand <command line>\n`.
    fn render(&self) -> String {
        let pid = self.pid.map_or_else(String::new, |p| p.to_string());
        // One line each: a newline in an argument would split the record.
        let command = self.command.replace('\n', " ");
        format!("pid {pid}\ncommand {command}\n")
    }

    fn parse(text: &str) -> Self {
        let mut holder = Holder {
            pid: None,
            command: String::new(),
        };
        for line in text.lines() {
            if let Some(pid) = line.strip_prefix("pid ") {
                holder.pid = pid.trim().parse().ok();
            } else if let Some(command) = line.strip_prefix("command ") {
                command.clone_into(&mut holder.command);
            }
        }
        holder
    }
}

impl fmt::Display for Holder {
    /// `pid 1234 (svcproxy --backend iptables)`, or what is known of it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.pid, self.command.is_empty()) {
            (Some(pid), false) => write!(f, "pid {pid} ({})", self.command),
            (Some(pid), true) => write!(f, "pid {pid}"),
            (None, _) => f.write_str("a process that has not yet written its pid"),
        }
    }
}

/// Why a lock could not be taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// Another instance owns these objects.
    #[error(
        "{key} are already managed by {holder} (lock {}); \
         stop it, or give this instance another prefix or namespace",
        path.display()
    )]
    Held {
        /// What the lock protects.
        key: LockKey,
        /// The lock file.
        path: PathBuf,
        /// Who holds it.
        holder: Holder,
    },
    /// The lock directory or file could not be made, opened, locked or written.
    #[error("lock {}: cannot {op}", path.display())]
    Io {
        /// The directory or file.
        path: PathBuf,
        /// What failed: `create the directory`, `open`, `lock`, `write`.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// A held lock on a [`LockKey`]; released (and its file removed) on drop. See the
/// [module docs](self).
#[derive(Debug)]
pub struct DataplaneLock {
    /// Held, never read: the lock lasts as long as this open file.
    _file: Flock<File>,
    path: PathBuf,
    key: LockKey,
}

impl DataplaneLock {
    /// Takes the lock on `key` in [`DEFAULT_LOCK_DIR`].
    ///
    /// # Errors
    /// As [`DataplaneLock::acquire_in`].
    pub fn acquire(key: &LockKey) -> Result<Self, LockError> {
        Self::acquire_in(Path::new(DEFAULT_LOCK_DIR), key)
    }

    /// Takes the lock on `key` in `dir` (created `0700` if missing), without waiting, and writes
    /// this process's pid and command line into it. Blocks only for a few file-system calls.
    ///
    /// # Errors
    /// [`LockError::Held`] naming the holder when another open lock file holds it (another
    /// process, or another dataplane of this one); [`LockError::Io`] when the directory or file
    /// cannot be used.
    pub fn acquire_in(dir: &Path, key: &LockKey) -> Result<Self, LockError> {
        fn io_error(path: &Path, op: &'static str) -> impl FnOnce(io::Error) -> LockError {
            let path = path.to_owned();
            move |source| LockError::Io { path, op, source }
        }
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_error(dir, "create the directory"))?;
        let path = dir.join(key.file_name());
        for _ in 0..REOPEN_ATTEMPTS {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&path)
                .map_err(io_error(&path, "open"))?;
            let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(locked) => locked,
                Err((mut file, Errno::EWOULDBLOCK)) => {
                    let mut text = String::new();
                    // What it says is only for the message: an unreadable file names nobody.
                    let _ = file.read_to_string(&mut text);
                    return Err(LockError::Held {
                        key: key.clone(),
                        path,
                        holder: Holder::parse(&text),
                    });
                }
                Err((_, errno)) => return Err(io_error(&path, "lock")(errno.into())),
            };
            // The previous holder removes the file before it unlocks: if the path no longer
            // names the file we locked, we locked a removed file, and a newcomer may lock the new
            // one. Start again on the new one.
            let locked = file.metadata().map_err(io_error(&path, "lock"))?;
            let current = match std::fs::metadata(&path) {
                Ok(meta) => meta,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_error(&path, "lock")(e)),
            };
            if (current.dev(), current.ino()) != (locked.dev(), locked.ino()) {
                continue;
            }
            let text = Holder::this_process().render();
            file.set_len(0)
                .and_then(|()| file.rewind())
                .and_then(|()| file.write_all(text.as_bytes()))
                .map_err(io_error(&path, "write"))?;
            return Ok(Self {
                _file: file,
                path,
                key: key.clone(),
            });
        }
        Err(io_error(&path, "lock")(io::Error::other(
            "its file was replaced on every attempt",
        )))
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the lock protects.
    pub fn key(&self) -> &LockKey {
        &self.key
    }
}

impl Drop for DataplaneLock {
    fn drop(&mut self) {
        // Removed while still locked (see `acquire_in`), so no file lingers per namespace; the
        // lock itself goes when `_file` closes, right after.
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!("svcproxy-lock-{}-{tag}", std::process::id()))
    }

    fn key(scope: &str) -> LockKey {
        LockKey::new(NetnsId::current().expect("/proc"), "iptables", scope)
    }

    #[test]
    fn a_second_lock_on_the_same_key_names_the_holder_and_is_free_after_drop() {
        let dir = dir("same");
        let first = DataplaneLock::acquire_in(&dir, &key("SVCP-")).expect("free");
        let err = DataplaneLock::acquire_in(&dir, &key("SVCP-")).expect_err("held");
        let text = err.to_string();
        assert!(
            text.contains(&format!("pid {}", std::process::id()))
                && text.contains("iptables objects under \"SVCP-\" in network namespace net:[")
                && text.contains(&first.path().display().to_string()),
            "{text}"
        );
        assert!(
            DataplaneLock::acquire_in(&dir, &key("OTHER-")).is_ok(),
            "another prefix is another key"
        );
        drop(first);
        let second = DataplaneLock::acquire_in(&dir, &key("SVCP-")).expect("released on drop");
        let written = std::fs::read_to_string(second.path()).expect("read");
        assert!(
            written.starts_with(&format!("pid {}\ncommand ", std::process::id())),
            "{written:?}"
        );
        let path = second.path().to_owned();
        drop(second);
        assert!(!path.exists(), "the file goes with the lock");
        let _ = std::fs::remove_dir(&dir);
    }

    #[test]
    fn file_names_escape_what_a_path_cannot_hold() {
        let key = LockKey::new(
            NetnsId {
                dev: 4,
                ino: 4026531840,
            },
            "ipvs",
            "a/b c",
        );
        assert_eq!(key.file_name(), "ipvs-net-4-4026531840-a%2Fb%20c.lock");
    }

    #[test]
    fn a_holder_that_wrote_nothing_yet_is_said_so() {
        assert_eq!(
            Holder::parse("").to_string(),
            "a process that has not yet written its pid"
        );
        let holder = Holder::parse("pid 42\ncommand svcproxy --backend ipvs\n");
        assert_eq!(holder.to_string(), "pid 42 (svcproxy --backend ipvs)");
    }
}

impl NetnsId {
    /// The network namespace a dataplane's lock is keyed by: the named one (`ip netns`'s
    /// `/run/netns/<name>`), else the calling thread's.
    ///
    /// # Errors
    /// [`LockError::Io`] naming the namespace file that could not be read.
    pub fn for_lock(named: Option<&str>) -> Result<NetnsId, LockError> {
        let (path, id) = match named {
            Some(name) => (Path::new("/run/netns").join(name), NetnsId::named(name)),
            None => (
                PathBuf::from("/proc/thread-self/ns/net"),
                NetnsId::current(),
            ),
        };
        id.map_err(|source| LockError::Io {
            path,
            op: "identify the network namespace",
            source,
        })
    }
}

/// A kernel backend's one-owner lock over the dataplane's life: off (the caller gave its own
/// kernel handles), due (to take in a directory before the kernel is first touched), or held.
#[derive(Debug)]
pub enum OwnerLock {
    /// No lock is taken.
    Off,
    /// To be taken in `dir` at the first sync or cleanup.
    Pending {
        /// The lock directory ([`DEFAULT_LOCK_DIR`] by default).
        dir: PathBuf,
    },
    /// Held until the dataplane is dropped.
    Held(DataplaneLock),
}

impl OwnerLock {
    /// The lock, once taken.
    pub fn held(&self) -> Option<&DataplaneLock> {
        match self {
            OwnerLock::Held(lock) => Some(lock),
            OwnerLock::Off | OwnerLock::Pending { .. } => None,
        }
    }

    /// The lock file held, once taken.
    pub fn path(&self) -> Option<&Path> {
        self.held().map(DataplaneLock::path)
    }

    /// Takes the lock if it is due, on the key `key` gives (asked only then); returns the lock
    /// taken by this call, if any. A failure leaves it due, so the next call tries again.
    ///
    /// # Errors
    /// As [`DataplaneLock::acquire_in`], or `key`'s error.
    pub fn ensure(
        &mut self,
        key: impl FnOnce() -> Result<LockKey, LockError>,
    ) -> Result<Option<&DataplaneLock>, LockError> {
        let OwnerLock::Pending { dir } = &*self else {
            return Ok(None);
        };
        let lock = DataplaneLock::acquire_in(dir, &key()?)?;
        *self = OwnerLock::Held(lock);
        Ok(self.held())
    }
}
