//! [`Connection`]: sequence numbers, and the three exchanges (request, dump, batch) over one
//! socket.

use std::io;

use netlink_packet_core::{
    parse_i32, DecodeError, NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP, NLMSG_OVERRUN, NLM_F_ACK,
    NLM_F_DUMP, NLM_F_REQUEST,
};
use tracing::{debug, trace};

use crate::batch::{parse_error, Ack, BatchAcks, BatchFault, BatchLimits, Datagram};
use crate::errno::{Errno, ENOBUFS};
use crate::error::{NetlinkError, RequestId};
use crate::message::{messages, stamp, Reply, Request};
use crate::notify::Subscription;
use crate::socket::{Datagrams, Protocol, SocketOptions, SysSocket};

/// The user buffer for one datagram. The kernel builds dump datagrams of at most 32 KiB
/// (`netlink_recvmsg` caps `max_recvmsg_len`); a larger datagram grows it.
const RECV_BUF_BYTES: usize = 64 * 1024;
/// The most datagrams read and dropped to clear what an abandoned exchange left queued; a
/// dump continues as it is read, so this bounds the time spent on one we gave up on.
const DRAIN_LIMIT: usize = 4096;

/// One netlink socket and its sequence numbers: requests, dumps and batches, one at a time
/// (`&mut self`; share it behind a `Mutex`). Each call blocks until the kernel has answered
/// in full or the receive timeout passes (use `tokio::task::spawn_blocking` from async code).
///
/// Every reply is checked against the request's sequence number and our port; replies left
/// over from an earlier, abandoned request are skipped (and drained before the next one).
#[derive(Debug)]
pub struct Connection<D = SysSocket> {
    pub(crate) io: D,
    pub(crate) buf: Vec<u8>,
    out: Vec<u8>,
    datagram: Datagram,
    limits: BatchLimits,
    next_seq: u32,
    /// Replies of an exchange we stopped reading may still be queued.
    unread: bool,
    /// The groups joined, and notifications kept while requests ran (`crate::notify`).
    pub(crate) subscription: Subscription,
}

impl Connection<SysSocket> {
    /// Opens a socket of `protocol` in the calling thread's network namespace, with
    /// [`SocketOptions::default`].
    ///
    /// # Errors
    /// [`NetlinkError::Socket`] naming the call that failed.
    pub fn open(protocol: Protocol) -> Result<Self, NetlinkError> {
        Self::open_with(protocol, SocketOptions::default())
    }

    /// Opens a socket of `protocol` with `options`.
    ///
    /// # Errors
    /// [`NetlinkError::Socket`] naming the call that failed.
    pub fn open_with(protocol: Protocol, options: SocketOptions) -> Result<Self, NetlinkError> {
        let conn = Connection::new(SysSocket::open(protocol, options)?);
        debug!(
            ?protocol,
            batch_ops = conn.limits.ops,
            batch_bytes = conn.limits.bytes,
            "netlink socket"
        );
        Ok(conn)
    }
}

/// The outcome of reading one datagram of a request or dump.
enum Progress {
    More,
    Finished,
}

/// Why a request or dump failed inside a datagram.
enum Fault {
    Kernel(Errno, Option<Box<[u8]>>),
    Overrun,
    Malformed(DecodeError),
}

impl Fault {
    fn into_error(self, request: RequestId) -> NetlinkError {
        match self {
            Fault::Kernel(errno, echo) => NetlinkError::Kernel {
                request,
                errno,
                echo,
            },
            Fault::Overrun => NetlinkError::Overrun {
                request,
                cause: "NLMSG_OVERRUN",
            },
            Fault::Malformed(source) => NetlinkError::Malformed { request, source },
        }
    }
}

/// What a request or dump does after `recv` gave no datagram.
enum AfterRecv {
    /// Interrupted by a signal: receive again.
    Retry,
    /// `ENOBUFS` on a request: something of ours was dropped, maybe the ACK; read on without
    /// waiting to see whether it came.
    ReadOn,
    /// The exchange failed.
    Fail(RecvError),
}

/// How an exchange failed in `recv`, before the request is named.
enum RecvError {
    /// The replies after `ENOBUFS` ended without our ACK.
    AckLost,
    /// A dump lost replies (`ENOBUFS`).
    Dropped,
    TimedOut,
    Io(io::Error),
    Truncated {
        len: usize,
        kept: usize,
    },
}

impl RecvError {
    fn into_error(self, request: RequestId, timeout: std::time::Duration) -> NetlinkError {
        match self {
            RecvError::AckLost => NetlinkError::AckLost {
                request,
                errno: Some(ENOBUFS),
            },
            RecvError::Dropped => NetlinkError::Overrun {
                request,
                cause: "ENOBUFS",
            },
            RecvError::TimedOut => NetlinkError::Timeout { request, timeout },
            RecvError::Io(source) => NetlinkError::Recv { request, source },
            RecvError::Truncated { len, kept } => NetlinkError::Truncated { request, len, kept },
        }
    }
}

/// What to do about `fault` in a request (`is_dump` false) or dump, `dropped` when `ENOBUFS`
/// was seen already.
fn after_recv_fault(
    fault: RecvFault,
    is_dump: bool,
    dropped: bool,
    subscription: &mut Subscription,
) -> AfterRecv {
    match &fault {
        RecvFault::Io(e) => subscription.note_error(e),
        // It may have been a notification.
        RecvFault::Truncated { .. } => subscription.note_loss(),
    }
    match fault {
        RecvFault::Io(e) if e.kind() == io::ErrorKind::Interrupted => AfterRecv::Retry,
        RecvFault::Io(e) if Errno::of(&e) == Some(ENOBUFS) => {
            if is_dump {
                AfterRecv::Fail(RecvError::Dropped)
            } else {
                AfterRecv::ReadOn
            }
        }
        RecvFault::Io(e) if e.kind() == io::ErrorKind::WouldBlock => AfterRecv::Fail(if dropped {
            RecvError::AckLost
        } else {
            RecvError::TimedOut
        }),
        RecvFault::Io(e) => AfterRecv::Fail(RecvError::Io(e)),
        RecvFault::Truncated { len, kept } => AfterRecv::Fail(RecvError::Truncated { len, kept }),
    }
}

impl<D: Datagrams> Connection<D> {
    /// A connection over `io` (a [`SysSocket`], or a fake in tests), with batch limits from
    /// its buffer sizes.
    pub fn new(io: D) -> Self {
        let (rcvbuf, sndbuf) = io.buffer_sizes();
        Connection {
            io,
            buf: Vec::with_capacity(RECV_BUF_BYTES),
            out: Vec::new(),
            datagram: Datagram::default(),
            limits: BatchLimits::for_buffers(rcvbuf, sndbuf),
            next_seq: 1,
            unread: false,
            subscription: Subscription::default(),
        }
    }

    /// How many requests, and bytes, one batch datagram carries.
    pub fn limits(&self) -> BatchLimits {
        self.limits
    }

    /// Overrides the batch limits (for tests of lost ACKs, with a shrunk receive buffer).
    pub fn set_limits(&mut self, limits: BatchLimits) {
        self.limits = limits;
    }

    /// The datagram I/O underneath.
    pub fn io_mut(&mut self) -> &mut D {
        &mut self.io
    }

    fn take_seq(&mut self, count: u32) -> u32 {
        let first = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(count);
        first
    }

    /// Sends `request` with `NLM_F_ACK` and feeds each reply before the ACK to `each` (none
    /// for commands that only change state).
    ///
    /// # Errors
    /// [`NetlinkError::Kernel`] when refused; [`NetlinkError::AckLost`] or
    /// [`NetlinkError::Timeout`] when the outcome is unknown; the `DecodeError` of `each` as
    /// [`NetlinkError::Malformed`]; socket and framing errors.
    pub fn request(
        &mut self,
        request: &impl Request,
        each: impl FnMut(Reply<'_>) -> Result<(), DecodeError>,
    ) -> Result<(), NetlinkError> {
        self.exchange(request, NLM_F_REQUEST | NLM_F_ACK, each)
    }

    /// Sends `request` with `NLM_F_DUMP` and feeds every message of the multipart reply to
    /// `each`, up to `NLMSG_DONE`.
    ///
    /// # Errors
    /// [`NetlinkError::Kernel`] when refused or ended with an errno in `NLMSG_DONE`;
    /// [`NetlinkError::Overrun`] when the kernel dropped part of it (the replies fed so far
    /// are incomplete); the `DecodeError` of `each` as [`NetlinkError::Malformed`]; timeouts,
    /// socket and framing errors.
    pub fn dump(
        &mut self,
        request: &impl Request,
        each: impl FnMut(Reply<'_>) -> Result<(), DecodeError>,
    ) -> Result<(), NetlinkError> {
        self.exchange(request, NLM_F_REQUEST | NLM_F_DUMP, each)
    }

    /// Sends `requests` (commands answered by an ACK) with `NLM_F_ACK`, in as few datagrams as
    /// [`Connection::limits`] allow, and returns one result per request, in order. A refused
    /// request does not stop the others. A request whose ACK was lost (`ENOBUFS`) or never
    /// came is [`NetlinkError::AckLost`]: it may have been done.
    pub fn batch<R: Request>(&mut self, requests: &[R]) -> Vec<Result<(), NetlinkError>> {
        self.batch_with_replies(requests, |_, _| Ok(()))
    }

    /// [`Connection::batch`], feeding each reply that comes before an ACK to
    /// `on_reply(index of its request, reply)`; its `DecodeError` fails that request.
    pub fn batch_with_replies<R: Request>(
        &mut self,
        requests: &[R],
        mut on_reply: impl FnMut(usize, Reply<'_>) -> Result<(), DecodeError>,
    ) -> Vec<Result<(), NetlinkError>> {
        self.drain();
        let mut results = Vec::with_capacity(requests.len());
        let mut datagram = std::mem::take(&mut self.datagram);
        let mut next = 0;
        while next < requests.len() {
            let base = next;
            next = datagram.fill(self.limits, next, requests.len(), &mut |i, out| {
                requests[i].emit_message(out);
            });
            let count = datagram.starts.len();
            let first = self.take_seq(u32::try_from(count).unwrap_or(u32::MAX));
            for (k, &start) in (0u32..).zip(&datagram.starts) {
                stamp(
                    &mut datagram.bytes,
                    start,
                    NLM_F_REQUEST | NLM_F_ACK,
                    first.wrapping_add(k),
                );
            }
            let acks = self.send_batch(&datagram.bytes, first, count, base, &mut on_reply);
            for (k, (ack, request)) in acks.into_iter().zip(&requests[base..]).enumerate() {
                let index = base + k;
                results.push(ack.map_err(|fault| {
                    let request = RequestId {
                        index,
                        seq: first.wrapping_add(u32::try_from(k).unwrap_or(0)),
                        description: request.describe(),
                    };
                    fault.into_error(request)
                }));
            }
        }
        self.datagram = datagram;
        results
    }

    /// Sends one datagram of `count` requests numbered from `first` (the first being request
    /// `base`), and reads their ACKs without waiting (see `crate::batch`).
    fn send_batch(
        &mut self,
        bytes: &[u8],
        first: u32,
        count: usize,
        base: usize,
        on_reply: &mut impl FnMut(usize, Reply<'_>) -> Result<(), DecodeError>,
    ) -> Vec<Result<(), BatchError>> {
        if let Err(e) = self.io.send(bytes) {
            return (0..count)
                .map(|_| Err(BatchError::Send(copy_io(&e))))
                .collect();
        }
        let mut acks = BatchAcks::new(first, count, self.io.port());
        let mut lost: Option<BatchError> = None;
        while !acks.is_complete() {
            match recv(&mut self.io, &mut self.buf, false) {
                Ok(datagram) => {
                    self.subscription.keep(datagram, self.io.port());
                    let mut reply = |i: usize, r: Reply<'_>| on_reply(base + i, r);
                    match acks.read_datagram(datagram, &mut reply) {
                        Ok(()) => {}
                        Err(BatchFault::Malformed(e)) => lost = Some(BatchError::Malformed(e)),
                        Err(BatchFault::Overrun) => lost = Some(BatchError::Overrun),
                    }
                }
                Err(RecvFault::Io(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(RecvFault::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(RecvFault::Io(e)) if Errno::of(&e) == Some(ENOBUFS) => {
                    self.subscription.note_error(&e);
                    lost = Some(BatchError::Lost(Some(ENOBUFS)));
                }
                Err(RecvFault::Io(e)) => {
                    lost = Some(BatchError::Recv(e));
                    break;
                }
                Err(RecvFault::Truncated { len, kept }) => {
                    self.subscription.note_loss();
                    lost = Some(BatchError::Truncated { len, kept });
                }
            }
        }
        let missing = acks.missing();
        if missing > 0 {
            debug!(missing, count, cause = ?lost, "netlink batch: ACKs missing");
        }
        acks.finish()
            .into_iter()
            .map(|ack| match ack {
                Some(Ack::Done) => Ok(()),
                Some(Ack::Refused(errno, echo)) => Err(BatchError::Kernel(errno, echo)),
                None => Err(lost
                    .as_ref()
                    .map_or(BatchError::Lost(None), BatchError::copy)),
            })
            .collect()
    }

    /// Sends one request with `flags` and reads its replies until the ACK or `NLMSG_DONE`.
    fn exchange(
        &mut self,
        request: &impl Request,
        flags: u16,
        mut each: impl FnMut(Reply<'_>) -> Result<(), DecodeError>,
    ) -> Result<(), NetlinkError> {
        self.drain();
        let is_dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        if is_dump && self.subscription.is_lost() {
            // Notifications queued before the loss would undo what the dump finds.
            self.drop_queued();
        }
        let seq = self.take_seq(1);
        self.out.clear();
        request.emit_message(&mut self.out);
        stamp(&mut self.out, 0, flags, seq);
        let id = || RequestId {
            index: 0,
            seq,
            description: request.describe(),
        };
        if let Err(source) = self.io.send(&self.out) {
            return Err(NetlinkError::Send {
                request: id(),
                source,
            });
        }
        let port = self.io.port();
        // Whether ENOBUFS was seen (see `AfterRecv::ReadOn`).
        let mut dropped = false;
        loop {
            let datagram = match recv(&mut self.io, &mut self.buf, !dropped) {
                Ok(datagram) => datagram,
                Err(fault) => {
                    match after_recv_fault(fault, is_dump, dropped, &mut self.subscription) {
                        AfterRecv::Retry => continue,
                        AfterRecv::ReadOn => {
                            dropped = true;
                            continue;
                        }
                        AfterRecv::Fail(error) => {
                            self.unread = true;
                            return Err(error.into_error(id(), self.io.recv_timeout()));
                        }
                    }
                }
            };
            self.subscription.keep(datagram, port);
            match read_replies(datagram, seq, port, &mut each) {
                Ok(Progress::More) => {}
                Ok(Progress::Finished) => {
                    if is_dump {
                        // ENOBUFS would have failed it: it covers any loss before it.
                        self.subscription.dumped();
                    }
                    return Ok(());
                }
                Err(fault) => {
                    // A refusal ends the exchange; anything else may leave replies queued.
                    self.unread = !matches!(fault, Fault::Kernel(..));
                    return Err(fault.into_error(id()));
                }
            }
        }
    }

    /// Reads and drops what an abandoned exchange left queued, without waiting.
    fn drain(&mut self) {
        if !self.unread {
            return;
        }
        self.unread = false;
        for dropped in 0..DRAIN_LIMIT {
            match recv(&mut self.io, &mut self.buf, false) {
                // Notifications among the stale replies are kept.
                Ok(datagram) => self.subscription.keep(datagram, self.io.port()),
                Err(RecvFault::Truncated { .. }) => self.subscription.note_loss(),
                Err(RecvFault::Io(e))
                    if e.kind() == io::ErrorKind::Interrupted || Errno::of(&e) == Some(ENOBUFS) =>
                {
                    self.subscription.note_error(&e);
                }
                Err(RecvFault::Io(_)) => {
                    trace!(dropped, "netlink: stale replies drained");
                    return;
                }
            }
        }
        // What is left is skipped by sequence number.
        self.unread = true;
    }
}

/// Why `recv` gave no datagram.
pub(crate) enum RecvFault {
    Io(io::Error),
    Truncated { len: usize, kept: usize },
}

/// Receives one datagram into `buf`. A datagram larger than the buffer is an error (its rest
/// is lost), and the buffer grows so that the next one fits.
pub(crate) fn recv<'b>(
    io: &mut impl Datagrams,
    buf: &'b mut Vec<u8>,
    wait: bool,
) -> Result<&'b [u8], RecvFault> {
    let len = io.recv(buf, wait).map_err(RecvFault::Io)?;
    if len > buf.len() {
        let kept = buf.len();
        buf.reserve(len);
        return Err(RecvFault::Truncated { len, kept });
    }
    Ok(buf)
}

/// Walks the messages of one datagram, feeding the replies to request `seq` (from the kernel
/// to `port`) to `each`. Replies to other sequence numbers or ports (left over from an
/// earlier, abandoned request) are skipped; nothing after the ACK or `NLMSG_DONE` is read.
fn read_replies(
    datagram: &[u8],
    seq: u32,
    port: u32,
    each: &mut impl FnMut(Reply<'_>) -> Result<(), DecodeError>,
) -> Result<Progress, Fault> {
    for nl in messages(datagram) {
        let nl = nl.map_err(Fault::Malformed)?;
        if nl.message_type() == NLMSG_OVERRUN {
            return Err(Fault::Overrun);
        }
        let pid = nl.port_number();
        if nl.sequence_number() != seq || (pid != port && pid != 0) {
            trace!(
                seq = nl.sequence_number(),
                pid,
                "netlink: skipped a stale reply"
            );
            continue;
        }
        match nl.message_type() {
            NLMSG_ERROR => {
                let (code, echo) = parse_error(nl.payload()).map_err(Fault::Malformed)?;
                return match code {
                    0 => Ok(Progress::Finished),
                    code => Err(Fault::Kernel(
                        Errno::new(code),
                        (echo.len() > 16).then(|| echo.into()),
                    )),
                };
            }
            NLMSG_DONE => {
                // A dump that failed half-way ends with a negative errno here.
                let code = nl.payload().get(..4).map(parse_i32).transpose();
                return match code.map_err(Fault::Malformed)? {
                    Some(code) if code < 0 => Err(Fault::Kernel(Errno::new(code), None)),
                    _ => Ok(Progress::Finished),
                };
            }
            NLMSG_NOOP => {}
            message_type => each(Reply {
                message_type,
                flags: nl.flags(),
                payload: nl.payload(),
            })
            .map_err(Fault::Malformed)?,
        }
    }
    Ok(Progress::More)
}

/// Why one request of a batch failed, before the request is named.
#[derive(Debug)]
enum BatchError {
    Send(io::Error),
    Recv(io::Error),
    Kernel(Errno, Option<Box<[u8]>>),
    Lost(Option<Errno>),
    Overrun,
    Malformed(DecodeError),
    Truncated { len: usize, kept: usize },
}

impl BatchError {
    /// The same cause for another request whose ACK is missing.
    fn copy(&self) -> BatchError {
        match self {
            BatchError::Send(e) => BatchError::Send(copy_io(e)),
            BatchError::Recv(e) => BatchError::Recv(copy_io(e)),
            BatchError::Kernel(errno, echo) => BatchError::Kernel(*errno, echo.clone()),
            BatchError::Lost(errno) => BatchError::Lost(*errno),
            BatchError::Overrun => BatchError::Overrun,
            BatchError::Malformed(e) => BatchError::Malformed(DecodeError::from(e.to_string())),
            BatchError::Truncated { len, kept } => BatchError::Truncated {
                len: *len,
                kept: *kept,
            },
        }
    }

    fn into_error(self, request: RequestId) -> NetlinkError {
        match self {
            BatchError::Send(source) => NetlinkError::Send { request, source },
            BatchError::Recv(source) => NetlinkError::Recv { request, source },
            BatchError::Kernel(errno, echo) => NetlinkError::Kernel {
                request,
                errno,
                echo,
            },
            BatchError::Lost(errno) => NetlinkError::AckLost { request, errno },
            BatchError::Overrun => NetlinkError::Overrun {
                request,
                cause: "NLMSG_OVERRUN",
            },
            BatchError::Malformed(source) => NetlinkError::Malformed { request, source },
            BatchError::Truncated { len, kept } => NetlinkError::Truncated { request, len, kept },
        }
    }
}

/// A new `io::Error` like `e` (one per request that failed with it).
fn copy_io(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}
