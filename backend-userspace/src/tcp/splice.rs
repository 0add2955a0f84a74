//! Zero-copy TCP pump on Linux: `splice(2)` moves bytes socket → pipe → socket inside the
//! kernel, one pipe per direction. nix's `splice` and `pipe2` are safe wrappers, so no `unsafe`
//! here. Readiness comes from tokio (`readable()`/`try_io`), so the sockets stay on the reactor.

use std::io;
use std::net::Shutdown;
use std::os::fd::{AsFd, OwnedFd};

use nix::fcntl::{splice, OFlag, SpliceFFlags};
use nix::unistd::pipe2;
use prometheus_client::metrics::counter::Counter;
use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::TcpStream;

use super::Activity;

/// Bytes moved per splice call; the default pipe holds 64 KiB.
const CHUNK: usize = 64 * 1024;

/// Pumps both directions until both reach EOF; EOF on one side shuts down writing on the other.
pub(super) async fn pump(
    client: &TcpStream,
    upstream: &TcpStream,
    (to_endpoint, to_client): (&Counter, &Counter),
    activity: &Activity,
) -> io::Result<()> {
    let forward = one_way(client, upstream, to_endpoint, activity);
    let backward = one_way(upstream, client, to_client, activity);
    tokio::try_join!(forward, backward).map(|_| ())
}

async fn one_way(
    from: &TcpStream,
    to: &TcpStream,
    counter: &Counter,
    activity: &Activity,
) -> io::Result<()> {
    // The pipe is made when the first bytes arrive, so an idle connection holds no pipe (two
    // file descriptors per direction).
    let mut pipe: Option<(OwnedFd, OwnedFd)> = None;
    let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
    loop {
        // The pipe is empty here, so WouldBlock can only mean the socket has nothing.
        from.readable().await?;
        let (pipe_read, pipe_write) = match &pipe {
            Some(pipe) => pipe,
            None => {
                pipe.insert(pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).map_err(io::Error::from)?)
            }
        };
        let filled = match from.try_io(Interest::READABLE, || {
            splice(from.as_fd(), None, pipe_write.as_fd(), None, CHUNK, flags)
                .map_err(io::Error::from)
        }) {
            Ok(n) => n,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
            Err(error) => return Err(error),
        };
        if filled == 0 {
            // EOF: pass the half-close on. The peer may already be gone; that is not an error.
            let _ = SockRef::from(to).shutdown(Shutdown::Write);
            return Ok(());
        }
        activity.touch();
        let mut left = filled;
        while left > 0 {
            to.writable().await?;
            match to.try_io(Interest::WRITABLE, || {
                splice(pipe_read.as_fd(), None, to.as_fd(), None, left, flags)
                    .map_err(io::Error::from)
            }) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => left -= n,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) => return Err(error),
            }
        }
        counter.inc_by(filled as u64);
        activity.touch();
    }
}
