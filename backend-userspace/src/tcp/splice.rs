//! Zero-copy TCP pump on Linux: `splice(2)` moves bytes socket → pipe → socket inside the
//! kernel. nix's `splice`, `pipe2` and `fcntl` are safe wrappers, so no `unsafe` here.
//! Readiness comes from tokio (`readable()`/`try_io`), so the sockets stay on the reactor.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use nix::fcntl::{fcntl, splice, FcntlArg, OFlag, SpliceFFlags};
use nix::unistd::pipe2;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tracing::debug;

use super::{Activity, Tally};

/// The pipe size asked for with `F_SETPIPE_SZ` (the unprivileged maximum by default, see
/// `/proc/sys/fs/pipe-max-size`): fewer, larger splices per bulk transfer. Measured on loopback
/// it halved the proxy's CPU per GB against the default 64 KiB pipe. A pipe holds pages only
/// while bytes sit in it; empty, a 1 MiB pipe costs its slot array (256 slots, about 10 KiB).
const PIPE_SIZE: usize = 1024 * 1024;

/// The pipe's size when the kernel refuses [`PIPE_SIZE`] (a user over its pipe page quota).
const DEFAULT_PIPE_SIZE: usize = 64 * 1024;

/// A pipe and the bytes in it.
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Its size: the most one splice moves into it.
    size: usize,
    /// Bytes in it now.
    len: usize,
}

impl Pipe {
    fn new() -> io::Result<Self> {
        let (read, write) = pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        let size = grow(&write);
        Ok(Self {
            read,
            write,
            size,
            len: 0,
        })
    }
}

/// The two pipes of a spliced direction.
pub(super) struct Pipes([Pipe; 2]);

impl Pipes {
    /// Two new pipes (four descriptors).
    ///
    /// # Errors
    /// `pipe2` failed (`EMFILE`: the process is out of descriptors).
    pub(super) fn new() -> io::Result<Self> {
        Ok(Self([Pipe::new()?, Pipe::new()?]))
    }
}

/// Moves bytes from `from` to `to` until EOF on `from`. Used once a direction carries bulk (see
/// [`super::relay`]), which passes the half-close on.
///
/// Two pipes, drained in the order they were filled: while one waits for `to` to take its
/// bytes, the other can already take the next bytes from `from`, so neither socket idles while
/// the other is slow. A pipe is filled only when empty, so a splice into it that would block
/// means `from` has nothing (a partly full pipe could also refuse for lack of room, and the
/// socket's readiness would be lost).
pub(super) async fn one_way(
    pipes: Pipes,
    from: &TcpStream,
    to: &TcpStream,
    counter: &Tally<'_>,
    activity: &Activity,
) -> io::Result<()> {
    let mut pipes = pipes.0;
    // The pipe whose bytes go out first.
    let mut head = 0;
    let mut eof = false;
    let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
    loop {
        let empty = if pipes[head].len == 0 {
            Some(head)
        } else if pipes[1 - head].len == 0 {
            Some(1 - head)
        } else {
            None
        };
        if let (false, Some(i)) = (eof, empty) {
            let pipe = &mut pipes[i];
            match from.try_io(Interest::READABLE, || {
                splice(
                    from.as_fd(),
                    None,
                    pipe.write.as_fd(),
                    None,
                    pipe.size,
                    flags,
                )
                .map_err(io::Error::from)
            }) {
                Ok(0) => eof = true,
                Ok(n) => {
                    pipe.len = n;
                    counter.add(n as u64);
                    activity.touch();
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) => return Err(error),
            }
        }
        loop {
            if pipes[head].len == 0 {
                if pipes[1 - head].len == 0 {
                    break;
                }
                head = 1 - head;
            }
            let pipe = &mut pipes[head];
            match to.try_io(Interest::WRITABLE, || {
                splice(pipe.read.as_fd(), None, to.as_fd(), None, pipe.len, flags)
                    .map_err(io::Error::from)
            }) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    pipe.len -= n;
                    activity.touch();
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) => return Err(error),
            }
        }
        let can_fill = !eof && pipes.iter().any(|p| p.len == 0);
        let can_drain = pipes.iter().any(|p| p.len > 0);
        match (can_fill, can_drain) {
            (false, false) => return Ok(()),
            (true, false) => from.readable().await?,
            (false, true) => to.writable().await?,
            (true, true) => tokio::select! {
                ready = from.readable() => ready?,
                ready = to.writable() => ready?,
            },
        }
    }
}

/// Asks for a [`PIPE_SIZE`] pipe; returns the pipe's size (bytes per splice).
fn grow(pipe: &OwnedFd) -> usize {
    let asked = i32::try_from(PIPE_SIZE).unwrap_or(i32::MAX);
    match fcntl(pipe, FcntlArg::F_SETPIPE_SZ(asked)) {
        Ok(size) => usize::try_from(size).unwrap_or(DEFAULT_PIPE_SIZE),
        Err(error) => {
            debug!(%error, "F_SETPIPE_SZ refused; splicing through a default pipe");
            DEFAULT_PIPE_SIZE
        }
    }
}
