//! Batches: many requests per datagram, each with `NLM_F_ACK` and its own sequence number,
//! and their ACKs mapped back to them.
//!
//! The kernel handles every message of a datagram in turn, inside our `sendmsg`
//! (`netlink_rcv_skb` in `net/netlink/af_netlink.c`, called synchronously by `rtnetlink_rcv`,
//! `genl_rcv` and `nfnetlink_rcv`), and queues one ACK per message; a failed message does not
//! stop the next. So when `send` returns, every ACK of the batch is in our receive queue, or
//! was dropped because the queue was full: the kernel then flags the socket with `ENOBUFS`
//! (`netlink_overrun`), which the next `recv` reports. The ACKs are therefore read without
//! blocking, and a lost ACK is reported for its request (outcome unknown), never a hang.
//!
//! A batch is bounded by bytes (what one `sendmsg` may carry: 256 KiB, and `SO_SNDBUF`) and
//! by count: the ACKs must fit in the receive buffer, which the kernel charges about 1 KiB
//! per ACK.

use netlink_packet_core::{ErrorBuffer, NLMSG_ERROR, NLMSG_OVERRUN};

use crate::errno::Errno;
use crate::message::{align4, messages, Reply};

/// Most bytes of requests sent in one datagram (the kernel also caps a datagram at
/// `SO_SNDBUF` minus 32 bytes, `netlink_sendmsg`).
pub const BATCH_BYTES: usize = 256 * 1024;
/// What one ACK costs in the receive buffer: a 36-byte message in its own socket buffer,
/// whose `truesize` (data rounded up to a slab size, plus `skb_shared_info` and `sk_buff`) is
/// about 768 bytes on 64-bit kernels; rounded up for margin.
pub const ACK_CHARGE: usize = 1024;

/// How many requests, and how many bytes of them, one batch datagram may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Requests per datagram: their ACKs must fit in the receive buffer.
    pub ops: usize,
    /// Bytes per datagram (a single larger request still goes, alone).
    pub bytes: usize,
}

impl BatchLimits {
    /// The limits for a socket whose kernel-side buffers are `rcvbuf` and `sndbuf` bytes (as
    /// `getsockopt` reports them).
    pub fn for_buffers(rcvbuf: usize, sndbuf: usize) -> Self {
        BatchLimits {
            // Leave room for one more ACK: the kernel compares before it charges.
            ops: (rcvbuf / ACK_CHARGE).saturating_sub(1).max(1),
            bytes: BATCH_BYTES.min(sndbuf.saturating_sub(64)).max(4096),
        }
    }
}

/// One batch datagram being built: its bytes and where each request starts.
#[derive(Debug, Default)]
pub(crate) struct Datagram {
    pub(crate) bytes: Vec<u8>,
    pub(crate) starts: Vec<usize>,
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
            self.bytes.resize(align4(self.bytes.len()), 0);
            if self.bytes.len() > limits.bytes && !self.starts.is_empty() {
                self.bytes.truncate(start);
                break;
            }
            self.starts.push(start);
            next += 1;
        }
        next
    }
}

/// How one request of a batch ended, as far as its ACK tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ack {
    /// The kernel did it.
    Done,
    /// The kernel refused it, with the echo of the request when not capped.
    Refused(Errno, Option<Box<[u8]>>),
}

/// The ACKs of one batch datagram: the results of requests `first..first + count`, by
/// sequence number.
#[derive(Debug)]
pub(crate) struct BatchAcks {
    first: u32,
    port: u32,
    acks: Vec<Option<Ack>>,
    missing: usize,
}

/// `sizeof(struct nlmsghdr)`, which an error message echoes at least.
const NLMSG_HDRLEN: usize = 16;

/// The errno and echo of an `NLMSG_ERROR` payload (0: an ACK).
pub(crate) fn parse_error(
    payload: &[u8],
) -> Result<(i32, &[u8]), netlink_packet_core::DecodeError> {
    let err = ErrorBuffer::new_checked(payload)?;
    Ok((err.code().map_or(0, |c| c.get()), &payload[4..]))
}

impl BatchAcks {
    /// Waiting for `count` ACKs, of sequence numbers `first` up (wrapping), for port `port`.
    pub(crate) fn new(first: u32, count: usize, port: u32) -> Self {
        BatchAcks {
            first,
            port,
            acks: (0..count).map(|_| None).collect(),
            missing: count,
        }
    }

    /// Records the ACKs and errors in one datagram, in any order, and feeds replies with a
    /// payload to `on_reply(index, reply)`. Messages of other sequence numbers or ports (left
    /// over from an interrupted request) are skipped, as are repeated ACKs.
    ///
    /// # Errors
    /// A malformed message or `NLMSG_OVERRUN` (what); the ACKs before the fault are recorded.
    pub(crate) fn read_datagram(
        &mut self,
        datagram: &[u8],
        on_reply: &mut impl FnMut(usize, Reply<'_>) -> Result<(), netlink_packet_core::DecodeError>,
    ) -> Result<(), BatchFault> {
        for nl in messages(datagram) {
            let nl = nl.map_err(BatchFault::Malformed)?;
            if nl.message_type() == NLMSG_OVERRUN {
                return Err(BatchFault::Overrun);
            }
            let index = nl.sequence_number().wrapping_sub(self.first) as usize;
            let port = nl.port_number();
            if index >= self.acks.len() || (port != self.port && port != 0) {
                continue;
            }
            match nl.message_type() {
                NLMSG_ERROR => {
                    let (code, echo) = parse_error(nl.payload()).map_err(BatchFault::Malformed)?;
                    let slot = &mut self.acks[index];
                    if slot.is_none() {
                        *slot = Some(match code {
                            0 => Ack::Done,
                            code => Ack::Refused(
                                Errno::new(code),
                                // More than the capped header: the kernel echoed the request.
                                (echo.len() > NLMSG_HDRLEN).then(|| echo.into()),
                            ),
                        });
                        self.missing -= 1;
                    }
                }
                message_type => {
                    let reply = Reply {
                        message_type,
                        flags: nl.flags(),
                        payload: nl.payload(),
                    };
                    on_reply(index, reply).map_err(BatchFault::Malformed)?;
                }
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

    /// The ACKs in request order; `None` where none came.
    pub(crate) fn finish(self) -> Vec<Option<Ack>> {
        self.acks
    }
}

/// Why reading a batch's ACKs stopped short.
#[derive(Debug)]
pub(crate) enum BatchFault {
    Malformed(netlink_packet_core::DecodeError),
    Overrun,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{ack, nlmsg};

    const SEQ: u32 = 1_795_616_306;
    const PORT: u32 = 570_425_464;

    fn no_replies(_: usize, _: Reply<'_>) -> Result<(), netlink_packet_core::DecodeError> {
        Ok(())
    }

    fn errnos(acks: Vec<Option<Ack>>) -> Vec<Option<i32>> {
        acks.into_iter()
            .map(|a| match a? {
                Ack::Done => Some(0),
                Ack::Refused(e, _) => Some(e.raw()),
            })
            .collect()
    }

    #[test]
    fn acks_in_any_order_and_several_per_datagram() {
        let mut batch = BatchAcks::new(SEQ, 3, PORT);
        batch
            .read_datagram(&ack(SEQ + 2, 0), &mut no_replies)
            .expect("ack");
        assert!(!batch.is_complete());
        let two = [ack(SEQ + 1, 3), ack(SEQ, 0)].concat();
        batch.read_datagram(&two, &mut no_replies).expect("acks");
        assert!(batch.is_complete());
        assert_eq!(errnos(batch.finish()), vec![Some(0), Some(3), Some(0)]);
    }

    #[test]
    fn stale_foreign_and_repeated_acks_are_skipped() {
        let mut batch = BatchAcks::new(SEQ, 2, PORT);
        let mut foreign_port = ack(SEQ + 1, 17);
        foreign_port[12..16].copy_from_slice(&7u32.to_ne_bytes());
        let datagram = [
            ack(SEQ - 1, 17), // an earlier request's
            ack(SEQ + 2, 17), // past the batch
            foreign_port,
            ack(SEQ, 0),
            ack(SEQ, 2), // the same request again: the first answer counts
        ]
        .concat();
        batch
            .read_datagram(&datagram, &mut no_replies)
            .expect("acks");
        assert_eq!(batch.missing(), 1);
        batch
            .read_datagram(&ack(SEQ + 1, 0), &mut no_replies)
            .expect("ack");
        assert_eq!(errnos(batch.finish()), vec![Some(0), Some(0)]);
    }

    #[test]
    fn sequence_numbers_wrap_around() {
        let first = u32::MAX - 1;
        let mut batch = BatchAcks::new(first, 4, PORT);
        for i in 0..4u32 {
            let errno = if i == 2 { 2 } else { 0 };
            batch
                .read_datagram(&ack(first.wrapping_add(i), errno), &mut no_replies)
                .expect("ack");
        }
        assert_eq!(
            errnos(batch.finish()),
            vec![Some(0), Some(0), Some(2), Some(0)],
            "request 2 has sequence number 0"
        );
    }

    #[test]
    fn replies_go_to_their_request_and_uncapped_errors_keep_the_echo() {
        let mut batch = BatchAcks::new(SEQ, 2, PORT);
        // An ipset-style refusal: errno, then the whole request echoed (header + payload).
        let mut echoed = (-4097i32).to_ne_bytes().to_vec();
        echoed.extend_from_slice(&nlmsg(0x601, 5, SEQ, &[1, 2, 3, 4]));
        let datagram = [
            nlmsg(0x600, 0, SEQ + 1, &[9, 9]),
            ack(SEQ + 1, 0),
            nlmsg(NLMSG_ERROR, 0, SEQ, &echoed),
        ]
        .concat();
        let mut seen = Vec::new();
        batch
            .read_datagram(&datagram, &mut |i, r: Reply<'_>| {
                seen.push((i, r.message_type, r.payload.to_vec()));
                Ok(())
            })
            .expect("acks");
        assert_eq!(seen, vec![(1, 0x600, vec![9, 9])]);
        let acks = batch.finish();
        match &acks[0] {
            Some(Ack::Refused(e, Some(echo))) => {
                assert_eq!(e.raw(), 4097);
                assert_eq!(&echo[16..], &[1, 2, 3, 4]);
            }
            other => panic!("want the refusal with its echo, got {other:?}"),
        }
    }

    #[test]
    fn a_truncated_ack_or_an_overrun_is_a_fault_not_a_panic() {
        let mut datagram = [ack(SEQ, 0), ack(SEQ + 1, 0)].concat();
        datagram.truncate(36 + 20);
        let mut batch = BatchAcks::new(SEQ, 2, PORT);
        assert!(matches!(
            batch.read_datagram(&datagram, &mut no_replies),
            Err(BatchFault::Malformed(_))
        ));
        assert_eq!(batch.missing(), 1, "the ACK before the cut counts");
        let mut short = ack(SEQ + 1, 0);
        short[..4].copy_from_slice(&18u32.to_ne_bytes());
        short.truncate(18);
        assert!(batch.read_datagram(&short, &mut no_replies).is_err());
        let overrun = nlmsg(NLMSG_OVERRUN, 0, SEQ + 1, &[]);
        assert!(matches!(
            batch.read_datagram(&overrun, &mut no_replies),
            Err(BatchFault::Overrun)
        ));
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
        assert_eq!(datagram.fill(by_count, 9, 10, &mut encode_fixed), 10);
        assert_eq!(types(&datagram), vec![9], "the last one, alone");
        let by_bytes = BatchLimits {
            ops: 1_000,
            bytes: 250,
        };
        assert_eq!(datagram.fill(by_bytes, 0, 10, &mut encode_fixed), 2);
        assert_eq!(datagram.bytes.len(), 200, "the third was taken back");
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
    fn batch_limits_follow_the_buffers() {
        let plain = BatchLimits::for_buffers(425_984, 425_984);
        assert_eq!((plain.ops, plain.bytes), (415, 256 * 1024));
        assert_eq!(BatchLimits::for_buffers(4 << 20, 1 << 20).ops, 4_095);
        let small = BatchLimits::for_buffers(100, 4_000);
        assert_eq!((small.ops, small.bytes), (1, 4_096));
    }
}
