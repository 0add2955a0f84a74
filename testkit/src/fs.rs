//! Temporary directories and file replacement as editors do it.

use std::path::{Path, PathBuf};

/// A fresh directory under the system's temporary directory, removed (with its contents) on
/// drop. Its name holds the process id, a counter and the tag, so parallel tests never share one.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `$TMPDIR/svcp-test-<pid>-<n>-<tag>`.
    ///
    /// # Panics
    ///
    /// When the directory cannot be created.
    pub fn new(tag: &str) -> Self {
        let path = std::env::temp_dir().join(crate::unique_name("svcp-test", tag));
        // Left over from an earlier process with the same pid: start empty.
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("create temp dir {}: {e}", path.display()));
        Self { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `name` inside the directory.
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Writes `contents` to `path` the way editors and `sed -i` do: into a new file beside it, then
/// renamed over it. A watcher sees a new inode with the whole contents, never a half-written file.
///
/// # Panics
///
/// When the temporary file cannot be written or renamed.
pub fn replace_file(path: &Path, contents: impl AsRef<[u8]>) {
    let name = path
        .file_name()
        .unwrap_or_else(|| panic!("replace_file: {} names no file", path.display()));
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".replace");
    let tmp = path.with_file_name(tmp_name);
    std::fs::write(&tmp, contents).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
    std::fs::rename(&tmp, path)
        .unwrap_or_else(|e| panic!("rename {} over {}: {e}", tmp.display(), path.display()));
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt as _;

    use super::*;

    #[test]
    fn temp_dirs_are_distinct_and_removed_on_drop() {
        let a = TempDir::new("fs");
        let b = TempDir::new("fs");
        assert_ne!(a.path(), b.path());
        std::fs::write(a.join("f"), "x").expect("write into temp dir");
        let kept = a.path().to_owned();
        drop(a);
        assert!(!kept.exists(), "{} still exists", kept.display());
        assert!(b.path().is_dir());
    }

    #[test]
    fn replace_file_swaps_in_a_new_inode_and_leaves_no_temp() {
        let dir = TempDir::new("replace");
        let path = dir.join("table.yaml");
        std::fs::write(&path, "old").expect("write");
        let before = std::fs::metadata(&path).expect("stat").ino();
        replace_file(&path, "new");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "new");
        assert_ne!(std::fs::metadata(&path).expect("stat").ino(), before);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["table.yaml"]);
    }
}
