//! Reading a table file: only a regular file, and at most a size limit.

use std::path::Path;

use super::LoadError;

/// The default limit on a table file's size: 256 MiB. A 50,000-service × 10-endpoint table is
/// about 34 MB of YAML, so this leaves room while stopping an endless file (`/dev/zero`, a log
/// written to the wrong path) long before memory runs out.
pub const DEFAULT_MAX_TABLE_BYTES: u64 = 256 * 1024 * 1024;

/// Reads the text of the table file at `path`: only if it is a regular file once symlinks are
/// followed (checked before it is opened, so a FIFO cannot block the open, and again on the open
/// file), and at most `max_bytes` of it.
///
/// A FIFO swapped in between the check and the open would still block the open; a reader that
/// must never block opens the file itself with `O_NONBLOCK` and calls [`read_table_from`].
///
/// # Errors
/// [`LoadError::NotRegular`] for a device, FIFO, socket or directory; [`LoadError::TooLarge`]
/// past `max_bytes`; [`LoadError::Io`] when it cannot be read or is not UTF-8.
pub fn read_table_text(path: &Path, max_bytes: u64) -> Result<String, LoadError> {
    let io = |error| LoadError::Io {
        path: path.to_owned(),
        error,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    check_table_file(path, &meta, max_bytes)?;
    let file = std::fs::File::open(path).map_err(io)?;
    read_table_from(&file, path, max_bytes)
}

/// Reads the text of an open table file (named `path` in errors): only a regular file, and at
/// most `max_bytes`, whatever its size claims (a file that grows while read stops at the limit).
///
/// # Errors
/// As [`read_table_text`].
pub fn read_table_from(
    file: &std::fs::File,
    path: &Path,
    max_bytes: u64,
) -> Result<String, LoadError> {
    use std::io::Read as _;
    let io = |error| LoadError::Io {
        path: path.to_owned(),
        error,
    };
    let meta = file.metadata().map_err(io)?;
    check_table_file(path, &meta, max_bytes)?;
    let capacity = usize::try_from(meta.len()).unwrap_or(0);
    let mut bytes = Vec::with_capacity(capacity);
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > max_bytes {
        return Err(LoadError::TooLarge {
            path: path.to_owned(),
            limit: max_bytes,
        });
    }
    String::from_utf8(bytes).map_err(|error| {
        io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "not UTF-8 text (at byte {})",
                error.utf8_error().valid_up_to()
            ),
        ))
    })
}

/// Checks, from its metadata, that the table file at `path` is a regular file of at most
/// `max_bytes`, before it is opened (a device may act on being opened, a FIFO blocks the open).
///
/// # Errors
/// [`LoadError::NotRegular`] or [`LoadError::TooLarge`].
pub fn check_table_file(
    path: &Path,
    meta: &std::fs::Metadata,
    max_bytes: u64,
) -> Result<(), LoadError> {
    use std::os::unix::fs::FileTypeExt as _;
    let file_type = meta.file_type();
    if !file_type.is_file() {
        let kind = if file_type.is_dir() {
            "a directory"
        } else if file_type.is_fifo() {
            "a FIFO"
        } else if file_type.is_char_device() {
            "a character device"
        } else if file_type.is_block_device() {
            "a block device"
        } else if file_type.is_socket() {
            "a socket"
        } else {
            "a special file"
        };
        return Err(LoadError::NotRegular {
            path: path.to_owned(),
            kind,
        });
    }
    if meta.len() > max_bytes {
        return Err(LoadError::TooLarge {
            path: path.to_owned(),
            limit: max_bytes,
        });
    }
    Ok(())
}
