//! nfnetlink transactions ([`Connection::transaction`]): a batch-begin message, the
//! requests, a batch-end message, in **one** datagram, with a result per request.
//!
//! Why not [`Connection::batch`]: nfnetlink processes a batch per socket buffer
//! (`nfnetlink_rcv_batch`, `net/netfilter/nfnetlink.c`) and commits or aborts it whole at the
//! end message. Cut into several datagrams, each piece would need its own begin/end and the
//! whole would lose atomicity; so a transaction is never split, and must fit the socket's
//! send buffer (`netlink_sendmsg` refuses a datagram above `SO_SNDBUF - 32` with `EMSGSIZE`):
//! a transaction larger than the buffer grows it first ([`Datagrams::grow_sndbuf`],
//! `SO_SNDBUFFORCE`, as `nft` does), and is refused with `EMSGSIZE` only where it cannot grow.
//!
//! Replies: every request carries `NLM_F_ACK` and its own sequence number; nfnetlink answers
//! each one (0, or the errno of the request that failed; it goes on after a failure, so one
//! transaction reports every bad request), then aborts the batch if any failed. A failed
//! commit is answered against the begin message. Begin and end carry no `NLM_F_ACK`: kernels
//! before 6.10 never answer them. The kernel handles the whole batch inside our `sendmsg`,
//! so every reply is queued when it returns (or was dropped: `ENOBUFS`).
//!
//! Without `NLM_F_ACK` ([`Acks::ErrorsOnly`], as `nft` sends), nfnetlink still answers
//! every failed request and a failed commit, so silence means success unless replies were
//! dropped: for transactions of more requests than the receive buffer holds ACKs (each
//! holds about [`crate::ACK_CHARGE`] bytes until read).

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};

use netlink_packet_core::{NLMSG_ERROR, NLM_F_ACK};
use tracing::debug;

use crate::batch::{parse_error, Ack, BatchAcks, BatchFault};
use crate::errno::{Errno, EMSGSIZE, ENOBUFS};
use crate::error::{NetlinkError, RequestId};
use crate::message::{align4, messages, stamp, Request};
use crate::socket::Datagrams;
use crate::Connection;

/// What one transaction's requests did: one result per request, in order. The transaction
/// was committed if and only if every one is `Ok`:
/// when one fails, the kernel still answers the others (0 for those it accepted) but rolls
/// all of them back.
pub type TransactionOutcome = Vec<Result<(), NetlinkError>>;

/// Which requests of a transaction ask for an ACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// Every request carries `NLM_F_ACK`: each gets 0 or its errno.
    Each,
    /// None does: only failures are answered; silence is success unless replies were
    /// dropped (`ENOBUFS`), when every unanswered request is [`NetlinkError::AckLost`].
    ErrorsOnly,
}

/// Sequence numbers of transactions, away from [`Connection`]'s own (which start at 1), so
/// that a reply left over from one never matches the other. Process-wide, so that two
/// connections never share a number either.
static NEXT_SEQ: AtomicU32 = AtomicU32::new(0x4000_0000);

/// What `netlink_sendmsg` keeps of `SO_SNDBUF` for itself.
const SNDBUF_RESERVED: usize = 32;
/// The user buffer for one reply datagram (ACKs are small; it grows if one is larger).
const RECV_BUF_BYTES: usize = 64 * 1024;

impl<D: Datagrams> Connection<D> {
    /// Sends `begin`, `requests` (each with `NLM_F_ACK` if `acks` is [`Acks::Each`]) and
    /// `end` in one datagram, and returns one result per request: see the `transaction`
    /// module's docs.
    ///
    /// # Errors
    /// The outer error fails the transaction as a whole, naming the begin message: the
    /// datagram exceeds the send buffer ([`NetlinkError::Send`] with `EMSGSIZE`; nothing was
    /// sent), sending failed, a reply was malformed, or the kernel refused the commit
    /// ([`NetlinkError::Kernel`] against the begin message). Inner errors name their request:
    /// [`NetlinkError::Kernel`] with the errno of the request that failed, or
    /// [`NetlinkError::AckLost`] when its reply was dropped (`ENOBUFS`: the outcome is then
    /// unknown) or never came.
    pub fn transaction<B: Request, R: Request>(
        &mut self,
        begin: &B,
        requests: &[R],
        end: &B,
        acks: Acks,
    ) -> Result<TransactionOutcome, NetlinkError> {
        let ack_flag = match acks {
            Acks::Each => NLM_F_ACK,
            Acks::ErrorsOnly => 0,
        };
        let count = u32::try_from(requests.len()).unwrap_or(u32::MAX - 2);
        let first = NEXT_SEQ.fetch_add(count + 2, Ordering::Relaxed);
        let begin_id = |note: String| RequestId {
            index: 0,
            seq: first,
            description: format!("{} ({note})", begin.describe()),
        };

        let mut out = Vec::new();
        let put = |out: &mut Vec<u8>, request: &dyn Request, seq: u32, flags: u16| {
            let start = out.len();
            request.emit_message(out);
            out.resize(align4(out.len()), 0);
            stamp(out, start, flags, seq);
        };
        put(&mut out, begin, first, 0);
        for (k, request) in (1u32..).zip(requests) {
            put(&mut out, request, first.wrapping_add(k), ack_flag);
        }
        put(&mut out, end, first.wrapping_add(count + 1), 0);

        let io = self.io_mut();
        let (_, mut sndbuf) = io.buffer_sizes();
        if out.len() > sndbuf.saturating_sub(SNDBUF_RESERVED) {
            // Grown only for the transaction that needs it: most are small.
            if let Ok(grown) = io.grow_sndbuf(out.len() + SNDBUF_RESERVED) {
                debug!(
                    bytes = out.len(),
                    sndbuf = grown,
                    "send buffer grown for a transaction"
                );
                sndbuf = grown;
            }
        }
        if out.len() > sndbuf.saturating_sub(SNDBUF_RESERVED) {
            return Err(NetlinkError::Send {
                request: begin_id(format!(
                    "transaction of {count} requests, {} bytes: more than the send buffer \
                     ({sndbuf} bytes) allows",
                    out.len()
                )),
                source: EMSGSIZE.to_io(),
            });
        }
        io.send(&out).map_err(|source| NetlinkError::Send {
            request: begin_id(format!("transaction of {count} requests")),
            source,
        })?;

        let port = io.port();
        let ack_each = acks == Acks::Each;
        let mut acks = BatchAcks::new(first.wrapping_add(1), requests.len(), port);
        let mut commit: Option<Errno> = None;
        let mut dropped = false;
        let mut buf = Vec::with_capacity(RECV_BUF_BYTES);
        while !acks.is_complete() {
            // Wait only while no reply is known to be lost and the commit did not fail
            // (after a failed commit, the kernel may answer nothing more).
            let wait = ack_each && !dropped && commit.is_none();
            match io.recv(&mut buf, wait) {
                Ok(len) if len <= buf.len() => {
                    commit = commit.or(begin_errno(&buf, first, port));
                    let mut no_replies = |_: usize, _: crate::Reply<'_>| Ok(());
                    match acks.read_datagram(&buf, &mut no_replies) {
                        Ok(()) => {}
                        Err(BatchFault::Overrun) => dropped = true,
                        Err(BatchFault::Malformed(source)) => {
                            return Err(NetlinkError::Malformed {
                                request: begin_id("a reply".to_owned()),
                                source,
                            })
                        }
                    }
                }
                Ok(len) => {
                    // Truncated: what it held is lost; grow the buffer for the next one.
                    buf.reserve(len);
                    dropped = true;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if Errno::of(&e) == Some(ENOBUFS) => dropped = true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(source) => {
                    return Err(NetlinkError::Recv {
                        request: begin_id("the replies".to_owned()),
                        source,
                    })
                }
            }
        }
        if let Some(errno) = commit {
            return Err(NetlinkError::Kernel {
                request: begin_id("the commit".to_owned()),
                errno,
                echo: None,
            });
        }
        Ok(acks
            .finish()
            .into_iter()
            .zip(requests)
            .enumerate()
            .map(|(index, (ack, request))| {
                let id = || RequestId {
                    index,
                    seq: first.wrapping_add(1 + u32::try_from(index).unwrap_or(0)),
                    description: request.describe(),
                };
                match ack {
                    Some(Ack::Done) => Ok(()),
                    Some(Ack::Refused(errno, echo)) => Err(NetlinkError::Kernel {
                        request: id(),
                        errno,
                        echo,
                    }),
                    None if !ack_each && !dropped => Ok(()),
                    None => Err(NetlinkError::AckLost {
                        request: id(),
                        errno: dropped.then_some(ENOBUFS),
                    }),
                }
            })
            .collect())
    }
}

/// The errno of an error answered against the begin message (sequence number `seq`) in
/// `datagram`, if any.
fn begin_errno(datagram: &[u8], seq: u32, port: u32) -> Option<Errno> {
    messages(datagram)
        .map_while(Result::ok)
        .filter(|m| {
            m.message_type() == NLMSG_ERROR
                && m.sequence_number() == seq
                && (m.port_number() == port || m.port_number() == 0)
        })
        .find_map(|m| match parse_error(m.payload()) {
            Ok((code, _)) if code != 0 => Some(Errno::new(code)),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::Acks;
    use crate::errno::{EMSGSIZE, ENOBUFS, ENOENT};
    use crate::fake::{ack, nlmsg, FakeKernel};
    use crate::{Connection, NetlinkError, RawRequest};

    const NLM_F_ACK: u16 = 0x4;

    fn raw(ty: u16) -> RawRequest {
        RawRequest {
            bytes: nlmsg(ty, 0x1, 0, &[0, 0, 0, 10]),
            description: format!("type {ty:#x}"),
        }
    }

    /// ACKs what asks for it; refuses type 0x0a0c with ENOENT.
    fn kernel() -> FakeKernel {
        FakeKernel::new(|m| match (m.message_type, m.flags & NLM_F_ACK != 0) {
            (0x0a0c, _) => vec![ack(m.seq, 2)],
            (_, true) => vec![ack(m.seq, 0)],
            _ => vec![],
        })
    }

    #[test]
    fn one_datagram_begin_and_end_unacked_and_a_result_per_request() {
        let fake = kernel();
        let mut conn = Connection::new(fake.clone());
        let requests = [raw(0x0a00), raw(0x0a0c), raw(0x0a03)];
        let results = conn
            .transaction(&raw(0x10), &requests, &raw(0x11), Acks::Each)
            .expect("sent");
        assert_eq!(fake.sends(), 1);
        let got = fake.received();
        let flags: Vec<u16> = got.iter().map(|m| m.flags & NLM_F_ACK).collect();
        assert_eq!(flags, vec![0, NLM_F_ACK, NLM_F_ACK, NLM_F_ACK, 0]);
        let seqs: Vec<u32> = got.iter().map(|m| m.seq.wrapping_sub(got[0].seq)).collect();
        assert_eq!(seqs, vec![0, 1, 2, 3, 4]);
        assert!(results[0].is_ok() && results[2].is_ok());
        match &results[1] {
            Err(NetlinkError::Kernel { request, errno, .. }) => {
                assert_eq!((*errno, request.index), (ENOENT, 1));
            }
            other => panic!("want ENOENT on request 1, got {other:?}"),
        }
    }

    #[test]
    fn without_acks_silence_is_success_and_errors_still_name_their_request() {
        let fake = kernel();
        let mut conn = Connection::new(fake.clone());
        let requests = [raw(0x0a00), raw(0x0a0c)];
        let results = conn
            .transaction(&raw(0x10), &requests, &raw(0x11), Acks::ErrorsOnly)
            .expect("sent");
        assert!(fake.received().iter().all(|m| m.flags & NLM_F_ACK == 0));
        assert!(results[0].is_ok());
        assert!(matches!(
            &results[1],
            Err(NetlinkError::Kernel { errno, .. }) if *errno == ENOENT
        ));
    }

    #[test]
    fn a_failed_commit_and_lost_acks_and_an_oversized_datagram() {
        let commit = FakeKernel::new(|m| match m.message_type {
            0x10 => vec![ack(m.seq, 12)],
            0x11 => vec![],
            _ => vec![ack(m.seq, 0)],
        });
        let mut conn = Connection::new(commit);
        match conn.transaction(&raw(0x10), &[raw(0x0a00)], &raw(0x11), Acks::Each) {
            Err(NetlinkError::Kernel { errno, .. }) => assert_eq!(errno.raw(), 12),
            other => panic!("want the commit's ENOMEM, got {other:?}"),
        }

        let mut conn = Connection::new(kernel().with_queue_limit(1));
        let results = conn
            .transaction(
                &raw(0x10),
                &[raw(0x0a00), raw(0x0a03)],
                &raw(0x11),
                Acks::Each,
            )
            .expect("sent");
        assert!(results[0].is_ok());
        assert!(matches!(
            &results[1],
            Err(NetlinkError::AckLost { errno: Some(e), .. }) if *e == ENOBUFS
        ));

        let fake = kernel();
        let mut conn = Connection::new(fake.clone());
        let big = RawRequest {
            bytes: nlmsg(0x0a0c, 0x1, 0, &vec![0; 2 << 20]),
            description: "big".into(),
        };
        match conn.transaction(&raw(0x10), &[big], &raw(0x11), Acks::Each) {
            Err(NetlinkError::Send { source, .. }) => {
                assert_eq!(source.raw_os_error(), Some(EMSGSIZE.raw()));
            }
            other => panic!("want EMSGSIZE, got {other:?}"),
        }
        assert_eq!(fake.sends(), 0);
    }
}
