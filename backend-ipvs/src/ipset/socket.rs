//! A blocking `NETLINK_NETFILTER` socket that speaks ipset: many requests per `sendmsg`, each
//! with `NLM_F_ACK` and its own sequence number, so every answer (ACK, error, reply) is matched
//! to its request; and dumps.
//!
//! Batching is the point: a partial sync sends its few add/del messages in one `sendmsg` and
//! reads the ACKs back, where the `ipset` tool would have been a process start plus a
//! round trip per message. The kernel handles the messages of one datagram in order and ACKs
//! each (`netlink_rcv_skb()`), carrying on after a failed one.
//!
//! An add or del that fails half-way through an `IPSET_ATTR_ADT` list is answered, instead of
//! the usual error, with a copy of the request whose `IPSET_ATTR_LINENO` holds the
//! `IPSET_ATTR_CADT_LINENO` of the failing entry (`call_ad()` in
//! `net/netfilter/ipset/ip_set_core.c`); [`Refusal::lineno`] carries it up, so the error
//! names the entry. Entries before it were applied, entries after it were not.

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use netlink_packet_core::{
    parse_i32, parse_u32_be, DecodeError, Emitable, ErrorBuffer, NetlinkBuffer, NlasIterator,
    ParseableParametrized, NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP, NLMSG_OVERRUN, NLM_F_ACK,
    NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

use super::constants::*;
use super::message::{IpsetCmd, IpsetMessage, NFGENMSG_LEN};

/// The most bytes we put in one `sendmsg`: well under the default socket send buffer
/// (`net.core.wmem_default`, 208 KiB), past which `netlink_sendmsg()` answers `EMSGSIZE`.
pub(crate) const SEND_LIMIT: usize = 64 * 1024;
/// The most messages per `sendmsg`: each is ACKed, and the ACKs must fit in the receive
/// buffer before we read them (an overflow drops them: `ENOBUFS`).
pub(crate) const MESSAGES_PER_SEND: usize = 64;
/// `sizeof(struct nlmsghdr)`.
const NLMSG_HDRLEN: usize = 16;
/// The receive buffer we ask for (capped by `net.core.rmem_max`).
const RECV_BUFFER: usize = 1 << 20;

/// The kernel's refusal of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// The errno (positive): a system one, or `IPSET_ERR_*` (4097 and up).
    pub errno: i32,
    /// The `IPSET_ATTR_CADT_LINENO` of the failing entry, for add/del lists.
    pub lineno: Option<u32>,
}

/// What one request got back.
#[derive(Debug, Default)]
pub(crate) struct Answer {
    /// Replies before the ACK (protocol and type queries have one).
    pub replies: Vec<IpsetMessage>,
    /// The refusal, if it was refused.
    pub refusal: Option<Refusal>,
}

/// What went wrong below the ipset layer; [`super::client`] adds the operation and set.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SocketError {
    /// A socket call failed.
    #[error("netlink socket")]
    Io(#[source] io::Error),
    /// The kernel refused a dump.
    #[error("refused with errno {}", .0.errno)]
    Kernel(Refusal),
    /// A reply did not decode.
    #[error("undecodable reply")]
    Decode(#[source] DecodeError),
}

/// A netlink socket for the ipset subsystem of nfnetlink.
///
/// Calls are serialized by a mutex, so it can be shared; each blocks until the kernel has
/// answered in full.
#[derive(Debug)]
pub(crate) struct IpsetSocket {
    socket: Mutex<Socket>,
    seq: AtomicU32,
}

/// Writes `msg` as one netlink message (header, payload, padding) at the end of `out`.
pub(crate) fn push_message(out: &mut Vec<u8>, msg: &IpsetMessage, flags: u16, seq: u32) {
    let len = NLMSG_HDRLEN + msg.buffer_len();
    let start = out.len();
    out.resize(start + ((len + 3) & !3), 0);
    let header = &mut out[start..start + NLMSG_HDRLEN];
    let len32 = u32::try_from(len).expect("messages are built far below 4 GiB");
    header[0..4].copy_from_slice(&len32.to_ne_bytes());
    header[4..6].copy_from_slice(&msg.message_type().to_ne_bytes());
    header[6..8].copy_from_slice(&flags.to_ne_bytes());
    header[8..12].copy_from_slice(&seq.to_ne_bytes());
    // nlmsg_pid 0: the kernel.
    msg.emit(&mut out[start + NLMSG_HDRLEN..start + len]);
}

impl IpsetSocket {
    /// Opens and connects a `NETLINK_NETFILTER` socket.
    pub(crate) fn connect() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_NETFILTER)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        // ACKs of big add messages need not echo them (errors with a line number still do).
        socket.set_cap_ack(true)?;
        // Best effort: the kernel caps it at net.core.rmem_max.
        let _ = socket.set_rx_buf_sz(RECV_BUFFER);
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.subsec_nanos() | 1);
        Ok(IpsetSocket {
            socket: Mutex::new(socket),
            seq: AtomicU32::new(seed),
        })
    }

    /// Sends every request with `NLM_F_REQUEST | NLM_F_ACK | flags`, in order, in as few
    /// `sendmsg` calls as [`SEND_LIMIT`] and [`MESSAGES_PER_SEND`] allow, and returns one
    /// [`Answer`] per request.
    pub(crate) fn batch(
        &self,
        requests: &[(IpsetMessage, u16)],
    ) -> Result<Vec<Answer>, SocketError> {
        let mut answers: Vec<Answer> = requests.iter().map(|_| Answer::default()).collect();
        // A poisoned lock only means another call panicked mid-way; stale replies are
        // skipped by sequence number.
        let socket = self.socket.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = 0;
        while next < requests.len() {
            let first = next;
            let base = self
                .seq
                .fetch_add(MESSAGES_PER_SEND as u32, Ordering::Relaxed);
            let mut bytes = Vec::new();
            while next < requests.len() && next - first < MESSAGES_PER_SEND {
                let (msg, flags) = &requests[next];
                let size = NLMSG_HDRLEN + msg.buffer_len();
                if next > first && bytes.len() + size > SEND_LIMIT {
                    break;
                }
                let seq = base.wrapping_add((next - first) as u32);
                push_message(&mut bytes, msg, NLM_F_REQUEST | NLM_F_ACK | flags, seq);
                next += 1;
            }
            socket.send(&bytes, 0).map_err(SocketError::Io)?;
            let mut pending = next - first;
            while pending > 0 {
                let (datagram, _) = socket.recv_from_full().map_err(SocketError::Io)?;
                read_answers(&datagram, base, &mut answers[first..next], &mut pending)?;
            }
        }
        Ok(answers)
    }

    /// Sends `msg` as a dump request and returns every message of the multipart reply.
    pub(crate) fn dump(&self, msg: &IpsetMessage) -> Result<Vec<IpsetMessage>, SocketError> {
        let socket = self.socket.lock().unwrap_or_else(|e| e.into_inner());
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let mut bytes = Vec::new();
        push_message(&mut bytes, msg, NLM_F_REQUEST | NLM_F_DUMP, seq);
        socket.send(&bytes, 0).map_err(SocketError::Io)?;
        let mut replies = Vec::new();
        loop {
            let (datagram, _) = socket.recv_from_full().map_err(SocketError::Io)?;
            if read_dump(&datagram, seq, &mut replies)? {
                return Ok(replies);
            }
        }
    }
}

/// The `IPSET_ATTR_LINENO` in the copy of our request that an error carries (after the errno
/// and the request's `nlmsghdr`), if any.
fn echoed_lineno(error_payload: &[u8]) -> Option<u32> {
    let attrs = error_payload.get(4 + NLMSG_HDRLEN + NFGENMSG_LEN..)?;
    NlasIterator::new(attrs)
        .filter_map(Result::ok)
        .find(|nla| nla.kind() == IPSET_ATTR_LINENO)
        .and_then(|nla| parse_u32_be(nla.value()).ok())
}

/// Walks the netlink messages of one datagram, filing each answer under its request
/// (`answers[seq - base]`) and counting down `pending` at each ACK or error.
pub(crate) fn read_answers(
    datagram: &[u8],
    base: u32,
    answers: &mut [Answer],
    pending: &mut usize,
) -> Result<(), SocketError> {
    let mut offset = 0;
    while offset < datagram.len() {
        let nl = NetlinkBuffer::new_checked(&datagram[offset..]).map_err(SocketError::Decode)?;
        // new_checked() made sure the length is at least a header, so this always moves on.
        offset += (nl.length() as usize + 3) & !3;
        let index = nl.sequence_number().wrapping_sub(base) as usize;
        let Some(answer) = answers.get_mut(index) else {
            continue; // left over from an earlier, interrupted call
        };
        match nl.message_type() {
            NLMSG_ERROR => {
                let err = ErrorBuffer::new_checked(nl.payload()).map_err(SocketError::Decode)?;
                if let Some(code) = err.code() {
                    answer.refusal = Some(Refusal {
                        errno: code.get().saturating_abs(),
                        lineno: echoed_lineno(nl.payload()),
                    });
                }
                *pending = pending.saturating_sub(1);
            }
            NLMSG_NOOP | NLMSG_DONE => {}
            NLMSG_OVERRUN => {
                return Err(SocketError::Decode(DecodeError::from(
                    "NLMSG_OVERRUN: the kernel dropped part of the reply",
                )))
            }
            ty => {
                let cmd = IpsetCmd::from((ty & 0xff) as u8);
                let reply = IpsetMessage::parse_with_param(nl.payload(), cmd)
                    .map_err(SocketError::Decode)?;
                answer.replies.push(reply);
            }
        }
    }
    Ok(())
}

/// Walks one datagram of a dump for request `seq`; true once the dump is complete.
pub(crate) fn read_dump(
    datagram: &[u8],
    seq: u32,
    replies: &mut Vec<IpsetMessage>,
) -> Result<bool, SocketError> {
    let mut offset = 0;
    while offset < datagram.len() {
        let nl = NetlinkBuffer::new_checked(&datagram[offset..]).map_err(SocketError::Decode)?;
        offset += (nl.length() as usize + 3) & !3;
        if nl.sequence_number() != seq {
            continue;
        }
        match nl.message_type() {
            NLMSG_ERROR => {
                let err = ErrorBuffer::new_checked(nl.payload()).map_err(SocketError::Decode)?;
                return match err.code() {
                    None => Ok(true),
                    Some(code) => Err(SocketError::Kernel(Refusal {
                        errno: code.get().saturating_abs(),
                        lineno: None,
                    })),
                };
            }
            NLMSG_DONE => {
                // A dump that failed half-way ends with a negative errno here.
                let code = nl.payload().get(..4).map(parse_i32).transpose();
                return match code.map_err(SocketError::Decode)? {
                    Some(code) if code < 0 => Err(SocketError::Kernel(Refusal {
                        errno: code.saturating_abs(),
                        lineno: None,
                    })),
                    _ => Ok(true),
                };
            }
            NLMSG_NOOP => {}
            NLMSG_OVERRUN => {
                return Err(SocketError::Decode(DecodeError::from(
                    "NLMSG_OVERRUN: the kernel dropped part of the reply",
                )))
            }
            ty => {
                let cmd = IpsetCmd::from((ty & 0xff) as u8);
                replies.push(
                    IpsetMessage::parse_with_param(nl.payload(), cmd)
                        .map_err(SocketError::Decode)?,
                );
            }
        }
    }
    Ok(false)
}
