//! One direction of the byte pump: read into a per-thread buffer and write straight through;
//! once a read fills the whole buffer (a bulk transfer) the direction switches to `splice(2)`
//! on Linux when [`crate::UserspaceConfig::splice`] is on.
//!
//! Why two modes: a short exchange (one request, one answer, or request after request on a
//! keep-alive connection) costs one `read` and one `write` per message this way, where a pipe
//! costs its creation (`pipe2`, two descriptors to close) and two `splice` calls per message.
//! A bulk transfer is cheaper spliced: the bytes stay in the kernel.
//!
//! EOF on one side becomes a write shutdown on the other (half-close), except for the direction
//! that ends last: both sockets close right after, and the close sends the FIN (one system call
//! less per connection).
//!
//! The buffer belongs to the worker thread, not the connection: bytes are written out in the
//! same poll that read them, and only what the peer cannot take right away is copied into a
//! per-connection `Vec`. An idle connection holds no buffer at all.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::net::Shutdown;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use socket2::SockRef;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::tcp::{ReadHalf, WriteHalf};

use super::{Activity, Tally};

/// Bytes read per call. A read that fills it marks the direction as bulk.
pub(super) const READ_BUFFER: usize = 64 * 1024;

thread_local! {
    /// The read buffer of this worker thread (see the module docs).
    static BUFFER: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_BUFFER].into_boxed_slice());
}

/// Moves bytes from `from` to `to` until EOF, then shuts down writing on `to` (half-close)
/// unless the other direction (sharing `one_ended`) ended before.
pub(super) async fn one_way(
    mut from: ReadHalf<'_>,
    mut to: WriteHalf<'_>,
    counter: &Tally<'_>,
    activity: &Activity,
    splice: bool,
    one_ended: &AtomicBool,
) -> io::Result<()> {
    moved(&mut from, &mut to, counter, activity, splice).await?;
    if !one_ended.swap(true, Ordering::Relaxed) {
        // The peer may already be gone; that is not an error.
        let _ = SockRef::from(to.as_ref()).shutdown(Shutdown::Write);
    }
    Ok(())
}

/// Moves bytes until EOF on `from`.
async fn moved(
    from: &mut ReadHalf<'_>,
    to: &mut WriteHalf<'_>,
    counter: &Tally<'_>,
    activity: &Activity,
    mut splice: bool,
) -> io::Result<()> {
    // Bytes read but not written yet (the peer's buffer was full).
    let mut pending = Vec::new();
    loop {
        if !pending.is_empty() {
            to.write_all(&pending).await?;
            // Freed, not kept: an idle connection holds no buffer.
            pending = Vec::new();
            activity.touch();
        }
        let (read, full) = poll_fn(|cx| read_through(from, to, cx, &mut pending)).await?;
        if read == 0 {
            return Ok(());
        }
        counter.add(read as u64);
        activity.touch();
        #[cfg(target_os = "linux")]
        if full && splice {
            // Out of descriptors (EMFILE) the direction goes on copying rather than failing.
            let pipes = match super::splice::Pipes::new() {
                Ok(pipes) => pipes,
                Err(error) => {
                    tracing::debug!(%error, "no pipes to splice through; copying");
                    splice = false;
                    continue;
                }
            };
            if !pending.is_empty() {
                to.write_all(&pending).await?;
                activity.touch();
            }
            // Boxed: only bulk directions pay for the splice state.
            return Box::pin(super::splice::one_way(
                pipes,
                from.as_ref(),
                to.as_ref(),
                counter,
                activity,
            ))
            .await;
        }
        #[cfg(not(target_os = "linux"))]
        let _ = (full, splice);
    }
}

/// Reads once into the thread's buffer and writes as much as `to` takes now; the rest goes to
/// `pending`. Ready with the bytes read (0 at EOF) and whether they filled the buffer.
fn read_through(
    from: &mut ReadHalf<'_>,
    to: &mut WriteHalf<'_>,
    cx: &mut Context<'_>,
    pending: &mut Vec<u8>,
) -> Poll<io::Result<(usize, bool)>> {
    BUFFER.with_borrow_mut(|buffer| {
        let mut read_buf = ReadBuf::new(buffer);
        match Pin::new(&mut *from).poll_read(cx, &mut read_buf) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
            Poll::Pending => return Poll::Pending,
        }
        let data = read_buf.filled();
        let mut written = 0;
        while written < data.len() {
            match Pin::new(&mut *to).poll_write(cx, &data[written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => written += n,
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                // `one_way` writes the rest before it reads again.
                Poll::Pending => break,
            }
        }
        pending.extend_from_slice(&data[written..]);
        Poll::Ready(Ok((data.len(), data.len() == READ_BUFFER)))
    })
}
