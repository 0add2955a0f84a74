//! A blocking generic-netlink socket that speaks IPVS: resolves the family id once, and either
//! sends one request and collects its replies up to the ACK or the end of the dump, or sends a
//! batch of requests in one datagram and reads their ACKs back.
//!
//! # Batches
//!
//! The kernel handles every message of a datagram in turn, inside our `sendmsg`
//! (`netlink_rcv_skb` in `net/netlink/af_netlink.c`, called synchronously by `genl_rcv`), and
//! queues one ACK per message (each request carries `NLM_F_ACK` and its own sequence number);
//! a failed message does not stop the next. So when `send` returns, every ACK of the batch is
//! in our receive queue, or was dropped because the queue was full: the kernel then flags the
//! socket with `ENOBUFS` (`netlink_overrun`), which the next `recv` reports. The ACKs are read
//! without blocking, so a lost ACK is an error for its request and never a hang.
//!
//! A batch is bounded by bytes (what one `sendmsg` may carry: 256 KiB, and `SO_SNDBUF`) and
//! by count: the ACKs must fit in the receive buffer, which the kernel charges about 1 KiB per
//! ACK. We ask for a large one (4 MiB, with `SO_RCVBUFFORCE` when we may) and set
//! `NETLINK_CAP_ACK`, so an error ACK does not echo the request.

use std::{
    io,
    os::fd::AsFd,
    sync::{
        atomic::{AtomicU32, Ordering},
        Mutex, MutexGuard,
    },
};

use netlink_packet_core::{
    parse_i32, parse_u16, DecodeError, Emitable, ErrorBuffer, ErrorContext, NetlinkBuffer,
    NetlinkMessage, NetlinkSerializable, NlasIterator, ParseableParametrized, NLMSG_DONE,
    NLMSG_ERROR, NLMSG_NOOP, NLMSG_OVERRUN, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_generic::{
    constants::{CTRL_ATTR_FAMILY_ID, GENL_HDRLEN},
    ctrl::{nlas::GenlCtrlAttrs, GenlCtrl, GenlCtrlCmd},
    GenlFamily, GenlHeader, GenlMessage,
};
use netlink_sys::{protocols::NETLINK_GENERIC, Socket, SocketAddr};
use nix::libc;
use nix::sys::socket::{getsockopt, setsockopt, sockopt};
use tracing::debug;

use super::message::IpvsMessage;

/// Most bytes of requests sent in one datagram (the kernel also caps a datagram at
/// `SO_SNDBUF` minus 32 bytes, `netlink_sendmsg`).
pub(crate) const BATCH_BYTES: usize = 256 * 1024;
/// The receive buffer we ask for: the ACKs of a whole batch wait there until we read them.
pub(crate) const RCVBUF_BYTES: usize = 4 << 20;
/// The send buffer we ask for, so that one datagram can carry [`BATCH_BYTES`].
pub(crate) const SNDBUF_BYTES: usize = 1 << 20;
/// What one ACK costs in the receive buffer: a 36-byte message in its own socket buffer,
/// whose `truesize` (data rounded up to a slab size, plus `skb_shared_info` and `sk_buff`)
/// is about 768 bytes on 64-bit kernels; rounded up for margin.
pub(crate) const ACK_CHARGE: usize = 1024;
/// The user buffer for one datagram. The kernel builds dump datagrams of at most 32 KiB
/// (`netlink_recvmsg` caps `max_recvmsg_len`); a larger datagram grows it.
const RECV_BUF_BYTES: usize = 64 * 1024;
/// `ENOBUFS`: the kernel dropped a reply because our receive buffer was full.
const ENOBUFS: i32 = 105;

/// What went wrong below the IPVS layer; `crate::client` adds the operation and object.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SocketError {
    /// A socket call failed.
    #[error("netlink socket")]
    Io(#[source] io::Error),
    /// The kernel answered with an error (the errno, as an `io::Error`).
    #[error("kernel error")]
    Kernel(#[source] io::Error),
    /// A reply did not decode.
    #[error("undecodable reply")]
    Decode(#[source] DecodeError),
}

/// A netlink socket connected to the kernel, the buffer datagrams are received into, and the
/// batch limits its buffers allow: what [`IpvsSocket`] and `crate::link::RouteSocket` share.
#[derive(Debug)]
pub(crate) struct Conn {
    socket: Socket,
    buf: Vec<u8>,
    limits: BatchLimits,
}

impl Conn {
    /// Opens a socket of `protocol` (`netlink_sys::protocols`), connected to the kernel, with
    /// `NETLINK_CAP_ACK` (error ACKs do not echo the request, so more fit in the buffer) and
    /// large buffers.
    pub(crate) fn open(protocol: isize) -> io::Result<Self> {
        let mut socket = Socket::new(protocol)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        socket.set_cap_ack(true)?;
        let limits = size_buffers(&socket);
        Ok(Conn {
            socket,
            buf: Vec::with_capacity(RECV_BUF_BYTES),
            limits,
        })
    }

    /// How many requests one batch datagram may carry.
    pub(crate) fn limits(&self) -> BatchLimits {
        self.limits
    }

    /// Shrinks the receive buffer to `rcvbuf` and batches to `limits`, whatever they allow:
    /// for tests of lost ACKs.
    #[cfg(test)]
    pub(crate) fn set_limits_for_test(&mut self, rcvbuf: usize, limits: BatchLimits) {
        setsockopt(&self.socket.as_fd(), sockopt::RcvBufForce, &rcvbuf).expect("SO_RCVBUFFORCE");
        self.limits = limits;
    }

    /// Sends one datagram.
    pub(crate) fn send(&self, bytes: &[u8]) -> io::Result<()> {
        self.socket.send(bytes, 0).map(drop)
    }

    /// Receives one datagram (one `recv`, no peek). A datagram larger than the buffer is an
    /// error (its rest is lost), and the buffer grows so that the next one fits.
    pub(crate) fn recv(&mut self, flags: libc::c_int) -> io::Result<&[u8]> {
        self.buf.clear();
        let len = self.socket.recv(&mut self.buf, flags | libc::MSG_TRUNC)?;
        if len > self.buf.len() {
            let kept = self.buf.len();
            self.buf.reserve(len);
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("netlink datagram of {len} bytes truncated to {kept}"),
            ));
        }
        Ok(&self.buf)
    }

    /// Sends `count` requests in as few datagrams as the limits allow and returns one result
    /// per request, in order (see the module docs). `encode(i, out)` appends request `i`
    /// with `NLM_F_ACK` and any sequence number: each gets its own from `seq` here, once its
    /// datagram is cut, so a datagram's numbers are consecutive even when another thread takes
    /// one meanwhile.
    pub(crate) fn batch(
        &mut self,
        seq: &AtomicU32,
        count: usize,
        mut encode: impl FnMut(usize, &mut Vec<u8>),
    ) -> Vec<Result<(), SocketError>> {
        let mut results = Vec::with_capacity(count);
        let mut datagram = Datagram::default();
        let mut next = 0;
        while next < count {
            next = datagram.fill(self.limits, next, count, &mut encode);
            let n = u32::try_from(datagram.starts.len()).expect("bounded by BatchLimits::ops");
            let first = seq.fetch_add(n, Ordering::Relaxed);
            datagram.number(first);
            results.extend(self.send_batch(&datagram.bytes, first, datagram.starts.len()));
        }
        results
    }

    /// Sends one datagram of `count` requests numbered from `first`, and reads their ACKs.
    fn send_batch(
        &mut self,
        bytes: &[u8],
        first: u32,
        count: usize,
    ) -> Vec<Result<(), SocketError>> {
        if let Err(e) = self.send(bytes) {
            return (0..count)
                .map(|_| Err(SocketError::Io(copy_io(&e))))
                .collect();
        }
        let mut acks = BatchAcks::new(first, count);
        let mut lost: Option<io::Error> = None;
        while !acks.is_complete() {
            // Every ACK was queued (or dropped) inside send: never wait for more.
            match self.recv(libc::MSG_DONTWAIT) {
                Ok(datagram) => {
                    if let Err(e) = acks.read_datagram(datagram) {
                        lost = Some(io::Error::new(io::ErrorKind::InvalidData, e.to_string()));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.raw_os_error() == Some(ENOBUFS) => lost = Some(e),
                Err(e) => {
                    lost = Some(e);
                    break;
                }
            }
        }
        let missing = acks.missing();
        if missing > 0 {
            debug!(missing, count, error = ?lost, "netlink batch: ACKs missing");
        }
        acks.finish(|| match &lost {
            Some(e) => SocketError::Io(copy_io(e)),
            None => SocketError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "no acknowledgement from the kernel",
            )),
        })
    }
}

/// One batch datagram being built: its bytes and where each request starts.
#[derive(Debug, Default)]
pub(crate) struct Datagram {
    bytes: Vec<u8>,
    starts: Vec<usize>,
}

impl Datagram {
    /// Empties it, then appends requests `next..count` (each by `encode`) while the limits
    /// allow, but always at least one; returns the index of the first request left out.
    pub(crate) fn fill(
        &mut self,
        limits: BatchLimits,
        mut next: usize,
        count: usize,
        encode: &mut impl FnMut(usize, &mut Vec<u8>),
    ) -> usize {
        self.bytes.clear();
        self.starts.clear();
        while next < count && self.starts.len() < limits.ops {
            let start = self.bytes.len();
            encode(next, &mut self.bytes);
            // Messages in one datagram start 4-byte aligned (NLMSG_ALIGN).
            self.bytes.resize((self.bytes.len() + 3) & !3, 0);
            if self.bytes.len() > limits.bytes && !self.starts.is_empty() {
                self.bytes.truncate(start);
                break;
            }
            self.starts.push(start);
            next += 1;
        }
        next
    }

    /// Gives the requests the sequence numbers `first` up, in order.
    pub(crate) fn number(&mut self, first: u32) {
        for (seq, &start) in (0u32..).map(|i| first.wrapping_add(i)).zip(&self.starts) {
            // nlmsghdr: len (4), type (2), flags (2), then the sequence number. An encoder
            // that wrote less than a header gets no number (and the kernel ignores it).
            if let Some(field) = self.bytes.get_mut(start + 8..start + 12) {
                field.copy_from_slice(&seq.to_ne_bytes());
            }
        }
    }
}

/// How many requests, and how many bytes of them, one batch may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchLimits {
    /// Requests per datagram: their ACKs must fit in the receive buffer.
    pub ops: usize,
    /// Bytes per datagram (a single larger request still goes, alone).
    pub bytes: usize,
}

impl BatchLimits {
    /// The limits for a socket whose kernel-side buffers are `rcvbuf` and `sndbuf` bytes (as
    /// `getsockopt` reports them).
    pub(crate) fn for_buffers(rcvbuf: usize, sndbuf: usize) -> Self {
        BatchLimits {
            // Leave room for one more ACK: the kernel compares before it charges.
            ops: (rcvbuf / ACK_CHARGE).saturating_sub(1).max(1),
            bytes: BATCH_BYTES.min(sndbuf.saturating_sub(64)).max(4096),
        }
    }
}

/// A netlink socket bound to the `IPVS` generic-netlink family.
///
/// Requests are serialized by a mutex, so the socket can be shared; each call blocks until
/// the kernel has answered in full (use `tokio::task::spawn_blocking` from async code).
#[derive(Debug)]
pub struct IpvsSocket {
    conn: Mutex<Conn>,
    family_id: u16,
    seq: AtomicU32,
}

impl IpvsSocket {
    /// Opens a `NETLINK_GENERIC` socket and resolves the `IPVS` family id through `nlctrl`
    /// (as genetlink's `Resolver` does); the id is kept for the socket's lifetime.
    pub(crate) fn connect() -> Result<Self, SocketError> {
        let conn = Conn::open(NETLINK_GENERIC).map_err(SocketError::Io)?;
        let limits = conn.limits();
        debug!(
            batch_ops = limits.ops,
            batch_bytes = limits.bytes,
            "IPVS netlink socket"
        );
        let mut this = IpvsSocket {
            conn: Mutex::new(conn),
            family_id: 0,
            seq: AtomicU32::new(1),
        };
        this.family_id = this.resolve_family()?;
        Ok(this)
    }

    /// The resolved generic-netlink id of the `IPVS` family.
    pub fn family_id(&self) -> u16 {
        self.family_id
    }

    fn lock(&self) -> MutexGuard<'_, Conn> {
        // A poisoned lock only means another request panicked mid-way; the socket itself is
        // still usable because stale replies are skipped by sequence number.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn resolve_family(&self) -> Result<u16, SocketError> {
        let ctrl = GenlCtrl {
            cmd: GenlCtrlCmd::GetFamily,
            nlas: vec![GenlCtrlAttrs::FamilyName(
                IpvsMessage::family_name().to_owned(),
            )],
        };
        let request = NetlinkMessage::from(GenlMessage::from_payload(ctrl));
        let mut family_id = None;
        // The reply is walked by hand rather than parsed as `GenlCtrl`, which rejects
        // attributes it does not know and would break on a newer kernel.
        self.exchange(request, NLM_F_REQUEST | NLM_F_ACK, |payload| {
            family_id = family_id.or(family_id_in(payload).map_err(SocketError::Decode)?);
            Ok(())
        })?;
        family_id.ok_or_else(|| {
            SocketError::Decode(DecodeError::from(
                "CTRL_CMD_GETFAMILY reply without CTRL_ATTR_FAMILY_ID",
            ))
        })
    }

    /// Sends `msg` with `NLM_F_ACK` and returns the replies that came before the ACK
    /// (none for commands that only change state).
    pub(crate) fn request(&self, msg: IpvsMessage) -> Result<Vec<IpvsMessage>, SocketError> {
        self.ipvs_exchange(msg, NLM_F_REQUEST | NLM_F_ACK)
    }

    /// Sends `msg` with `NLM_F_DUMP` and returns every message of the multipart reply.
    pub(crate) fn dump(&self, msg: IpvsMessage) -> Result<Vec<IpvsMessage>, SocketError> {
        self.ipvs_exchange(msg, NLM_F_REQUEST | NLM_F_DUMP)
    }

    /// Sends `msgs` (commands that only change state) as few datagrams as the limits allow,
    /// each request with `NLM_F_ACK`, and returns one result per request, in order. A
    /// request the kernel refused does not stop the others; a request whose ACK was lost
    /// (`ENOBUFS`) or never came is an error, as if refused, though it may have been done.
    pub(crate) fn batch(&self, msgs: Vec<IpvsMessage>) -> Vec<Result<(), SocketError>> {
        let mut conn = self.lock();
        conn.batch(&self.seq, msgs.len(), |i, out| {
            if let Some(msg) = msgs.get(i) {
                self.encode(msg.clone(), NLM_F_REQUEST | NLM_F_ACK, 0, out);
            }
        })
    }

    /// Appends `msg` as one request to `out`.
    fn encode(&self, msg: IpvsMessage, flags: u16, seq: u32, out: &mut Vec<u8>) {
        let mut genl = GenlMessage::from_payload(msg);
        genl.set_resolved_family_id(self.family_id);
        let mut request = NetlinkMessage::from(genl);
        request.header.flags = flags;
        request.header.sequence_number = seq;
        request.finalize();
        let start = out.len();
        out.resize(start + request.buffer_len(), 0);
        request.serialize(&mut out[start..]);
    }

    fn ipvs_exchange(&self, msg: IpvsMessage, flags: u16) -> Result<Vec<IpvsMessage>, SocketError> {
        let mut genl = GenlMessage::from_payload(msg);
        genl.set_resolved_family_id(self.family_id);
        let mut replies = Vec::new();
        self.exchange(NetlinkMessage::from(genl), flags, |payload| {
            let header = GenlHeader::parse(payload).map_err(SocketError::Decode)?;
            let reply = IpvsMessage::parse_with_param(&payload[GENL_HDRLEN..], header)
                .map_err(SocketError::Decode)?;
            replies.push(reply);
            Ok(())
        })?;
        Ok(replies)
    }

    /// Sends one request and feeds the payload of every reply message to `each`, until the
    /// ACK, the end of a dump, or an error.
    fn exchange<F>(
        &self,
        mut request: NetlinkMessage<GenlMessage<F>>,
        flags: u16,
        mut each: impl FnMut(&[u8]) -> Result<(), SocketError>,
    ) -> Result<(), SocketError>
    where
        F: GenlFamily + Emitable + std::fmt::Debug,
        GenlMessage<F>: NetlinkSerializable,
    {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        request.header.flags = flags;
        request.header.sequence_number = seq;
        request.finalize();
        let mut bytes = vec![0u8; request.buffer_len()];
        request.serialize(&mut bytes);

        let mut conn = self.lock();
        conn.send(&bytes).map_err(SocketError::Io)?;
        loop {
            let datagram = conn.recv(0).map_err(SocketError::Io)?;
            if read_datagram(datagram, seq, &mut each)? == Progress::Finished {
                return Ok(());
            }
        }
    }
}

/// Asks for large socket buffers (`SO_*BUFFORCE` needs `CAP_NET_ADMIN`; without it the
/// plain options are capped by `net.core.{r,w}mem_max`) and returns the batch limits the
/// buffers we got allow. Failures only shrink the batches.
fn size_buffers(socket: &Socket) -> BatchLimits {
    let fd = socket.as_fd();
    // The kernel doubles the value (socket(7)); ask for half.
    if setsockopt(&fd, sockopt::RcvBufForce, &(RCVBUF_BYTES / 2)).is_err() {
        let _ = setsockopt(&fd, sockopt::RcvBuf, &(RCVBUF_BYTES / 2));
    }
    if setsockopt(&fd, sockopt::SndBufForce, &(SNDBUF_BYTES / 2)).is_err() {
        let _ = setsockopt(&fd, sockopt::SndBuf, &(SNDBUF_BYTES / 2));
    }
    // The kernel's defaults (`net.core.{r,w}mem_default`) if the sizes cannot be read.
    let rcvbuf = getsockopt(&fd, sockopt::RcvBuf).unwrap_or(212_992);
    let sndbuf = getsockopt(&fd, sockopt::SndBuf).unwrap_or(212_992);
    BatchLimits::for_buffers(rcvbuf, sndbuf)
}

/// A new `io::Error` like `e` (one per request that failed with it).
fn copy_io(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}

/// The ACKs of one batch: the results of requests `first..first + count`, by sequence number.
#[derive(Debug)]
pub(crate) struct BatchAcks {
    first: u32,
    results: Vec<Option<Result<(), SocketError>>>,
    missing: usize,
}

impl BatchAcks {
    /// Waiting for `count` ACKs, of sequence numbers `first` up (wrapping).
    pub(crate) fn new(first: u32, count: usize) -> Self {
        BatchAcks {
            first,
            results: (0..count).map(|_| None).collect(),
            missing: count,
        }
    }

    /// Records the ACKs and errors in one datagram, in any order. Messages of other
    /// sequence numbers (left over from an interrupted request) are skipped, as are replies
    /// with a payload (the batched commands have none) and repeated ACKs.
    ///
    /// # Errors
    /// A malformed datagram or `NLMSG_OVERRUN`; the ACKs before the fault are recorded.
    pub(crate) fn read_datagram(&mut self, datagram: &[u8]) -> Result<(), SocketError> {
        for nl in messages(datagram) {
            let nl = nl.map_err(SocketError::Decode)?;
            let index = nl.sequence_number().wrapping_sub(self.first) as usize;
            match nl.message_type() {
                NLMSG_OVERRUN => {
                    return Err(SocketError::Decode(DecodeError::from(
                        "NLMSG_OVERRUN: the kernel dropped part of the reply",
                    )))
                }
                NLMSG_ERROR => {
                    let Some(slot) = self.results.get_mut(index) else {
                        continue;
                    };
                    let err =
                        ErrorBuffer::new_checked(nl.payload()).map_err(SocketError::Decode)?;
                    if slot.is_none() {
                        *slot = Some(match err.code() {
                            None => Ok(()),
                            Some(code) => Err(SocketError::Kernel(io::Error::from_raw_os_error(
                                code.get().saturating_abs(),
                            ))),
                        });
                        self.missing -= 1;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Requests without an ACK yet.
    pub(crate) fn missing(&self) -> usize {
        self.missing
    }

    /// Whether every request has its ACK.
    pub(crate) fn is_complete(&self) -> bool {
        self.missing == 0
    }

    /// The results in request order; a request without an ACK gets `lost()`.
    pub(crate) fn finish(self, lost: impl Fn() -> SocketError) -> Vec<Result<(), SocketError>> {
        self.results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(lost())))
            .collect()
    }
}

/// The netlink messages of one datagram, each checked; stops after the first malformed one.
fn messages(datagram: &[u8]) -> impl Iterator<Item = Result<NetlinkBuffer<&[u8]>, DecodeError>> {
    let mut offset = 0;
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || offset >= datagram.len() {
            return None;
        }
        match NetlinkBuffer::new_checked(&datagram[offset..]) {
            Ok(nl) => {
                // Messages in one datagram are 4-byte aligned (NLMSG_ALIGN); new_checked()
                // made sure the length is at least a header, so this always moves on.
                offset += (nl.length() as usize + 3) & !3;
                Some(Ok(nl))
            }
            Err(e) => {
                failed = true;
                Some(Err(e))
            }
        }
    })
}

/// The `CTRL_ATTR_FAMILY_ID` of a `CTRL_CMD_GETFAMILY` reply payload (genlmsghdr included).
fn family_id_in(payload: &[u8]) -> Result<Option<u16>, DecodeError> {
    let attrs = payload.get(GENL_HDRLEN..).unwrap_or_default();
    for nla in NlasIterator::new(attrs) {
        let nla = nla?;
        if nla.kind() == CTRL_ATTR_FAMILY_ID {
            return parse_u16(nla.value())
                .context("invalid CTRL_ATTR_FAMILY_ID")
                .map(Some);
        }
    }
    Ok(None)
}

/// Whether the reply to a request is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Progress {
    /// More datagrams follow.
    More,
    /// The ACK or the end of the dump arrived.
    Finished,
}

/// Walks the netlink messages of one datagram (a dump packs many into one), feeding the
/// payloads of the replies to request `seq` to `each`. Replies to other sequence numbers
/// (left over from an earlier, interrupted request) are skipped.
pub(crate) fn read_datagram(
    datagram: &[u8],
    seq: u32,
    each: &mut impl FnMut(&[u8]) -> Result<(), SocketError>,
) -> Result<Progress, SocketError> {
    for nl in messages(datagram) {
        let nl = nl.map_err(SocketError::Decode)?;
        if nl.sequence_number() != seq {
            continue;
        }
        match nl.message_type() {
            NLMSG_ERROR => {
                let err = ErrorBuffer::new_checked(nl.payload()).map_err(SocketError::Decode)?;
                return match err.code() {
                    None => Ok(Progress::Finished),
                    Some(code) => Err(SocketError::Kernel(io::Error::from_raw_os_error(
                        code.get().saturating_abs(),
                    ))),
                };
            }
            NLMSG_DONE => {
                // A dump that failed half-way ends with a negative errno here.
                let code = nl.payload().get(..4).map(parse_i32).transpose();
                return match code.map_err(SocketError::Decode)? {
                    Some(code) if code < 0 => Err(SocketError::Kernel(
                        io::Error::from_raw_os_error(code.saturating_abs()),
                    )),
                    _ => Ok(Progress::Finished),
                };
            }
            NLMSG_NOOP => {}
            NLMSG_OVERRUN => {
                return Err(SocketError::Decode(DecodeError::from(
                    "NLMSG_OVERRUN: the kernel dropped part of the reply",
                )))
            }
            _ => each(nl.payload())?,
        }
    }
    Ok(Progress::More)
}

#[cfg(test)]
mod tests {
    //! The reply loop, on datagrams shaped like the kernel's (see the `ipvsadm -Ln` and
    //! `ipvsadm -A` captures in `tests/captures/`: ACKs are 36 bytes with `NLM_F_CAPPED`).

    use super::*;

    const SEQ: u32 = 1_795_616_306;
    const IPVS_FAMILY: u16 = 0x20;
    const NLM_F_MULTI: u16 = 0x2;
    const NLM_F_CAPPED: u16 = 0x100;

    /// One netlink message: nlmsghdr (len, type, flags, seq, pid) + payload, padded to 4.
    fn nlmsg(ty: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&(16 + payload.len() as u32).to_ne_bytes());
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&flags.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&570_425_464u32.to_ne_bytes());
        m.extend_from_slice(payload);
        m.resize((m.len() + 3) & !3, 0);
        m
    }

    /// NLMSG_ERROR with `errno` (0: ACK), echoing a 16-byte request header.
    fn error(seq: u32, errno: i32) -> Vec<u8> {
        let mut payload = (-errno).to_ne_bytes().to_vec();
        payload.extend_from_slice(&nlmsg(IPVS_FAMILY, 0x5, seq, &[])[..16]);
        nlmsg(NLMSG_ERROR, NLM_F_CAPPED, seq, &payload)
    }

    fn read(datagram: &[u8]) -> (Result<Progress, SocketError>, Vec<Vec<u8>>) {
        let mut seen = Vec::new();
        let result = read_datagram(datagram, SEQ, &mut |payload: &[u8]| {
            seen.push(payload.to_vec());
            Ok(())
        });
        (result, seen)
    }

    /// The kernel's reply to `CTRL_CMD_GETFAMILY` for "IPVS", as libnl received it in the
    /// `ipvsadm -A -t 198.18.0.10:80 -s rr` capture.
    fn getfamily_reply() -> Vec<u8> {
        #[rustfmt::skip]
        let head = [
            0x01, 0x02, 0x00, 0x00, // genlmsghdr: cmd CTRL_CMD_NEWFAMILY, version 2
            0x09, 0x00, 0x02, 0x00, // len 9, CTRL_ATTR_FAMILY_NAME
            b'I', b'P', b'V', b'S', //   "IPVS
            0x00, 0x00, 0x00, 0x00, //   \0", padding
            0x06, 0x00, 0x01, 0x00, // len 6, CTRL_ATTR_FAMILY_ID
            0x20, 0x00, 0x00, 0x00, //   0x20, padding
            0x08, 0x00, 0x03, 0x00, // len 8, CTRL_ATTR_VERSION
            0x01, 0x00, 0x00, 0x00, //   IPVS_GENL_VERSION
            0x08, 0x00, 0x04, 0x00, // len 8, CTRL_ATTR_HDRSIZE
            0x00, 0x00, 0x00, 0x00, //   0
            0x08, 0x00, 0x05, 0x00, // len 8, CTRL_ATTR_MAXATTR
            0x06, 0x00, 0x00, 0x00, //   IPVS_CMD_ATTR_MAX
            0x44, 0x01, 0x06, 0x00, // len 324, CTRL_ATTR_OPS: 16 x (CTRL_ATTR_OP_ID, _FLAGS)
        ];
        // (IPVS_CMD_*, GENL_* op flags) as the capture lists them.
        let ops: [(u32, u32); 16] = [
            (1, 0xb),
            (2, 0xb),
            (3, 0xb),
            (4, 0xf),
            (5, 0xb),
            (6, 0xb),
            (7, 0xb),
            (8, 0xd),
            (9, 0xb),
            (10, 0xb),
            (11, 0xd),
            (12, 0xb),
            (13, 0xb),
            (15, 0xb),
            (16, 0xb),
            (17, 0xb),
        ];
        let mut raw = head.to_vec();
        for (i, (id, flags)) in (1u16..).zip(ops) {
            raw.extend_from_slice(&[0x14, 0x00]); // len 20, nest number i
            raw.extend_from_slice(&i.to_ne_bytes());
            raw.extend_from_slice(&[0x08, 0x00, 0x01, 0x00]); // CTRL_ATTR_OP_ID
            raw.extend_from_slice(&id.to_ne_bytes());
            raw.extend_from_slice(&[0x08, 0x00, 0x02, 0x00]); // CTRL_ATTR_OP_FLAGS
            raw.extend_from_slice(&flags.to_ne_bytes());
        }
        raw
    }

    #[test]
    fn family_id_from_the_kernels_getfamily_reply() {
        let raw = getfamily_reply();
        assert_eq!(raw.len(), 372, "the captured payload is 372 bytes");
        assert_eq!(family_id_in(&raw).expect("parses"), Some(0x20));
        assert_eq!(
            family_id_in(&raw[..16]).expect("parses"),
            None,
            "name only, no id"
        );
        assert!(
            family_id_in(&raw[..21]).is_err(),
            "a cut attribute is an error"
        );
    }

    #[test]
    fn ack_finishes_the_request() {
        let (result, seen) = read(&error(SEQ, 0));
        assert_eq!(result.expect("ack"), Progress::Finished);
        assert!(seen.is_empty());
    }

    #[test]
    fn kernel_error_carries_the_errno() {
        let (result, _) = read(&error(SEQ, 17));
        match result {
            Err(SocketError::Kernel(e)) => assert_eq!(e.raw_os_error(), Some(17)),
            other => panic!("want EEXIST, got {other:?}"),
        }
    }

    #[test]
    fn reply_then_ack_in_two_datagrams() {
        // GET_INFO: the reply (IPVS_CMD_SET_INFO), then the ACK in the next datagram.
        let reply = [
            0x0e, 0x01, 0x00, 0x00, 0x08, 0x00, 0x01, 0x00, 0x01, 0x02, 0x01, 0x00,
        ];
        let (result, seen) = read(&nlmsg(IPVS_FAMILY, 0, SEQ, &reply));
        assert_eq!(result.expect("reply"), Progress::More);
        assert_eq!(seen, vec![reply.to_vec()]);
    }

    #[test]
    fn multipart_dump_until_done() {
        let datagram = [
            nlmsg(IPVS_FAMILY, NLM_F_MULTI, SEQ, &[0x01, 0x01, 0x00, 0x00]),
            nlmsg(
                IPVS_FAMILY,
                NLM_F_MULTI,
                SEQ,
                &[0x01, 0x01, 0x00, 0x00, 0xaa],
            ),
            nlmsg(NLMSG_DONE, NLM_F_MULTI, SEQ, &0i32.to_ne_bytes()),
            // Anything after DONE is not ours to read.
            nlmsg(IPVS_FAMILY, NLM_F_MULTI, SEQ, &[0x02, 0x01, 0x00, 0x00]),
        ]
        .concat();
        let (result, seen) = read(&datagram);
        assert_eq!(result.expect("dump"), Progress::Finished);
        assert_eq!(
            seen,
            vec![
                vec![0x01, 0x01, 0x00, 0x00],
                vec![0x01, 0x01, 0x00, 0x00, 0xaa]
            ],
            "the padding of an odd-sized message is not part of its payload"
        );
    }

    #[test]
    fn dump_interrupted_by_an_error_in_done() {
        let (result, _) = read(&nlmsg(NLMSG_DONE, NLM_F_MULTI, SEQ, &(-4i32).to_ne_bytes()));
        match result {
            Err(SocketError::Kernel(e)) => assert_eq!(e.raw_os_error(), Some(4)),
            other => panic!("want EINTR, got {other:?}"),
        }
    }

    #[test]
    fn stale_replies_are_skipped() {
        let datagram = [
            error(SEQ - 1, 17),
            nlmsg(IPVS_FAMILY, 0, SEQ, &[0x0e, 0x01, 0, 0]),
        ]
        .concat();
        let (result, seen) = read(&datagram);
        assert_eq!(
            result.expect("the stale EEXIST is not ours"),
            Progress::More
        );
        assert_eq!(seen.len(), 1);
    }

    // === batches ===

    /// `count` ACKs of the batch starting at `first`, with the errno of request `i` from
    /// `errno(i)` (0: success), each in its own datagram as the kernel sends them.
    fn acks(first: u32, count: u32, errno: impl Fn(u32) -> i32) -> Vec<Vec<u8>> {
        (0..count)
            .map(|i| error(first.wrapping_add(i), errno(i)))
            .collect()
    }

    fn no_ack() -> SocketError {
        SocketError::Io(io::Error::from_raw_os_error(ENOBUFS))
    }

    fn errnos(results: &[Result<(), SocketError>]) -> Vec<Option<i32>> {
        results
            .iter()
            .map(|r| match r {
                Ok(()) => Some(0),
                Err(SocketError::Kernel(e) | SocketError::Io(e)) => e.raw_os_error(),
                Err(SocketError::Decode(_)) => None,
            })
            .collect()
    }

    #[test]
    fn batch_acks_in_any_order_complete_the_batch() {
        let mut batch = BatchAcks::new(SEQ, 3);
        for datagram in [error(SEQ + 2, 0), error(SEQ, 0), error(SEQ + 1, 0)] {
            assert!(!batch.is_complete());
            batch.read_datagram(&datagram).expect("ack");
        }
        assert!(batch.is_complete());
        assert_eq!(errnos(&batch.finish(no_ack)), vec![Some(0); 3]);
    }

    #[test]
    fn an_error_in_the_middle_of_a_batch_belongs_to_its_request() {
        let mut batch = BatchAcks::new(SEQ, 2_000);
        // Request 1,234 is refused (EEXIST); the kernel goes on with the rest.
        for datagram in acks(SEQ, 2_000, |i| if i == 1_234 { 17 } else { 0 }) {
            batch.read_datagram(&datagram).expect("ack");
        }
        assert!(batch.is_complete());
        let results = batch.finish(no_ack);
        let failed: Vec<usize> = (0..results.len())
            .filter(|&i| results[i].is_err())
            .collect();
        assert_eq!(failed, vec![1_234]);
        match &results[1_234] {
            Err(SocketError::Kernel(e)) => assert_eq!(e.raw_os_error(), Some(17)),
            other => panic!("want the kernel's EEXIST, got {other:?}"),
        }
    }

    #[test]
    fn acks_of_several_requests_in_one_datagram() {
        let datagram = [error(SEQ + 1, 3), error(SEQ, 0)].concat();
        let mut batch = BatchAcks::new(SEQ, 2);
        batch.read_datagram(&datagram).expect("acks");
        assert_eq!(errnos(&batch.finish(no_ack)), vec![Some(0), Some(3)]);
    }

    #[test]
    fn batch_skips_stale_foreign_and_repeated_acks() {
        let mut batch = BatchAcks::new(SEQ, 2);
        let datagram = [
            error(SEQ - 1, 17),                              // an earlier request's
            error(SEQ + 2, 17),                              // past the batch
            nlmsg(IPVS_FAMILY, 0, SEQ, &[0x0e, 0x01, 0, 0]), // a reply, not an ACK
            error(SEQ, 0),
            error(SEQ, 2), // the same request again: the first answer counts
        ]
        .concat();
        batch.read_datagram(&datagram).expect("acks");
        assert_eq!(batch.missing(), 1);
        batch.read_datagram(&error(SEQ + 1, 0)).expect("ack");
        assert_eq!(errnos(&batch.finish(no_ack)), vec![Some(0), Some(0)]);
    }

    #[test]
    fn batch_numbers_wrap_around() {
        let first = u32::MAX - 1;
        let mut batch = BatchAcks::new(first, 4);
        for datagram in acks(first, 4, |i| if i == 2 { 2 } else { 0 }) {
            batch.read_datagram(&datagram).expect("ack");
        }
        assert!(batch.is_complete());
        assert_eq!(
            errnos(&batch.finish(no_ack)),
            vec![Some(0), Some(0), Some(2), Some(0)],
            "request 2 has sequence number 0"
        );
    }

    #[test]
    fn requests_whose_acks_were_lost_are_errors() {
        // ENOBUFS: the kernel dropped the ACKs of requests 1 and 3.
        let mut batch = BatchAcks::new(SEQ, 4);
        for datagram in [error(SEQ, 0), error(SEQ + 2, 0)] {
            batch.read_datagram(&datagram).expect("ack");
        }
        assert_eq!(batch.missing(), 2);
        assert_eq!(
            errnos(&batch.finish(no_ack)),
            vec![Some(0), Some(ENOBUFS), Some(0), Some(ENOBUFS)]
        );
    }

    #[test]
    fn truncated_batch_datagram_is_an_error_not_a_panic() {
        let mut datagram = [error(SEQ, 0), error(SEQ + 1, 0)].concat();
        datagram.truncate(36 + 20);
        let mut batch = BatchAcks::new(SEQ, 2);
        assert!(matches!(
            batch.read_datagram(&datagram),
            Err(SocketError::Decode(_))
        ));
        assert_eq!(batch.missing(), 1, "the ACK before the cut counts");
        // An ACK too short for its errno and header.
        let mut short = error(SEQ + 1, 0);
        short[..4].copy_from_slice(&18u32.to_ne_bytes());
        short.truncate(18);
        assert!(batch.read_datagram(&short).is_err());
        assert!(matches!(
            batch.read_datagram(&[0u8; 7]),
            Err(SocketError::Decode(_))
        ));
        let overrun = nlmsg(NLMSG_OVERRUN, 0, SEQ + 1, &[]);
        assert!(batch.read_datagram(&overrun).is_err());
    }

    /// A 100-byte request `i`: a header whose type is `i`, then filler.
    fn encode_fixed(i: usize, out: &mut Vec<u8>) {
        let ty = u16::try_from(i).expect("small test index");
        out.extend_from_slice(&nlmsg(ty, 0x5, 0, &[0xab; 84]));
    }

    fn types(datagram: &Datagram) -> Vec<u16> {
        datagram
            .starts
            .iter()
            .map(|&s| u16::from_ne_bytes([datagram.bytes[s + 4], datagram.bytes[s + 5]]))
            .collect()
    }

    #[test]
    fn batches_are_cut_by_count_and_by_bytes() {
        let mut datagram = Datagram::default();
        let by_count = BatchLimits {
            ops: 3,
            bytes: 1 << 20,
        };
        assert_eq!(datagram.fill(by_count, 0, 10, &mut encode_fixed), 3);
        assert_eq!(types(&datagram), vec![0, 1, 2]);
        assert_eq!(datagram.bytes.len(), 300);
        assert_eq!(datagram.fill(by_count, 9, 10, &mut encode_fixed), 10);
        assert_eq!(types(&datagram), vec![9], "the last one, alone");

        let by_bytes = BatchLimits {
            ops: 1_000,
            bytes: 250,
        };
        assert_eq!(datagram.fill(by_bytes, 0, 10, &mut encode_fixed), 2);
        assert_eq!(
            datagram.bytes.len(),
            200,
            "the third did not fit and was taken back"
        );
        let tiny = BatchLimits {
            ops: 1_000,
            bytes: 10,
        };
        assert_eq!(
            datagram.fill(tiny, 4, 10, &mut encode_fixed),
            5,
            "a request larger than the limit goes alone"
        );
    }

    #[test]
    fn batch_requests_get_consecutive_sequence_numbers() {
        let mut datagram = Datagram::default();
        let limits = BatchLimits {
            ops: 100,
            bytes: 1 << 20,
        };
        datagram.fill(limits, 0, 3, &mut encode_fixed);
        datagram.number(u32::MAX);
        let mut seqs = Vec::new();
        for nl in messages(&datagram.bytes) {
            seqs.push(nl.expect("well formed").sequence_number());
        }
        assert_eq!(seqs, vec![u32::MAX, 0, 1]);
    }

    #[test]
    fn batch_limits_follow_the_buffers() {
        // Without CAP_NET_ADMIN: 2 x the default rmem_max/wmem_max.
        let plain = BatchLimits::for_buffers(425_984, 425_984);
        assert_eq!(plain.ops, 415);
        assert_eq!(plain.bytes, 256 * 1024);
        let forced = BatchLimits::for_buffers(RCVBUF_BYTES, SNDBUF_BYTES);
        assert_eq!(forced.ops, 4_095);
        let small = BatchLimits::for_buffers(100, 4_000);
        assert_eq!((small.ops, small.bytes), (1, 4_096));
    }

    #[test]
    fn truncated_datagram_is_an_error_not_a_panic() {
        let mut datagram = error(SEQ, 0);
        datagram.truncate(20);
        assert!(matches!(read(&datagram).0, Err(SocketError::Decode(_))));
        assert!(matches!(read(&[0u8; 7]).0, Err(SocketError::Decode(_))));
        // A length field below the header size must not loop forever.
        let mut zero_len = error(SEQ, 0);
        zero_len[..4].copy_from_slice(&0u32.to_ne_bytes());
        assert!(matches!(read(&zero_len).0, Err(SocketError::Decode(_))));
    }
}
