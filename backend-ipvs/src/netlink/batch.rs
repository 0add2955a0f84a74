//! Batches of netlink requests: many in one datagram, each with `NLM_F_ACK` and its own
//! sequence number, their ACKs read back and mapped to their requests; and [`Conn`], the
//! socket (with its receive buffer and batch limits) that `IpvsSocket` and
//! `crate::link::RouteSocket` share.
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
    sync::atomic::{AtomicU32, Ordering},
};

use netlink_packet_core::{DecodeError, ErrorBuffer, NLMSG_ERROR, NLMSG_OVERRUN};
use netlink_sys::{Socket, SocketAddr};
use nix::libc;
use nix::sys::socket::{getsockopt, setsockopt, sockopt};
use tracing::debug;

use super::socket::{messages, SocketError};

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

#[cfg(test)]
mod tests {
    //! The ACK reader on datagrams shaped like the kernel's, and how batches are cut.

    use super::*;
    use crate::netlink::socket::tests::{error, nlmsg, IPVS_FAMILY, SEQ};

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
}
