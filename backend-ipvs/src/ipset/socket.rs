//! A blocking `NETLINK_NETFILTER` socket that speaks ipset, on the workspace's one netlink
//! transport (`netlink-transport`): many requests per `sendmsg`, each with `NLM_F_ACK` and its
//! own sequence number, so every answer (ACK, error, reply) is matched to its request and
//! each request gets its own result; and dumps.
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

use std::sync::{Mutex, MutexGuard};

use netlink_packet_core::{
    parse_u32_be, DecodeError, Emitable, NlasIterator, ParseableParametrized,
};
use netlink_transport::{Connection, Datagrams, NetlinkError, Protocol, Reply, Request, SysSocket};

use super::constants::*;
use super::message::{IpsetCmd, IpsetMessage, NFGENMSG_LEN};

/// `sizeof(struct nlmsghdr)`.
const NLMSG_HDRLEN: usize = 16;

/// The kernel's refusal of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// The errno (positive): a system one, or `IPSET_ERR_*` (4097 and up).
    pub errno: i32,
    /// The `IPSET_ATTR_CADT_LINENO` of the failing entry, for add/del lists.
    pub lineno: Option<u32>,
}

/// What one request of a batch got back.
#[derive(Debug)]
pub(crate) struct Answer {
    /// Replies before the ACK (protocol and type queries have one).
    pub replies: Vec<IpsetMessage>,
    /// The ACK (`Ok`), the kernel's refusal ([`NetlinkError::Kernel`], see
    /// [`Answer::refusal`]), or why its outcome is unknown (a lost ACK, a bad reply).
    pub result: Result<(), NetlinkError>,
}

impl Answer {
    /// The kernel's refusal, with the failing entry's line number when the kernel named it.
    pub(crate) fn refusal(&self) -> Option<Refusal> {
        match &self.result {
            Err(NetlinkError::Kernel { errno, echo, .. }) => Some(Refusal {
                errno: errno.raw(),
                lineno: echo.as_deref().and_then(echoed_lineno),
            }),
            _ => None,
        }
    }
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

/// An ipset message with its own flags, as the transport sends it.
struct Wire<'a> {
    msg: &'a IpsetMessage,
    flags: u16,
}

impl Request for Wire<'_> {
    fn emit_message(&self, out: &mut Vec<u8>) {
        push_message(out, self.msg, self.flags, 0);
    }

    fn describe(&self) -> String {
        format!("ipset {}", self.msg.cmd)
    }
}

/// The `IpsetMessage` of a reply (its command is the low byte of the message type).
fn parse_reply(reply: Reply<'_>) -> Result<IpsetMessage, DecodeError> {
    let cmd = IpsetCmd::from((reply.message_type & 0xff) as u8);
    IpsetMessage::parse_with_param(reply.payload, cmd)
}

/// A netlink socket for the ipset subsystem of nfnetlink.
///
/// Calls are serialized by a mutex, so it can be shared; each blocks until the kernel has
/// answered in full or the receive timeout passed.
#[derive(Debug)]
pub(crate) struct IpsetSocket<D = SysSocket> {
    conn: Mutex<Connection<D>>,
}

impl IpsetSocket {
    /// Opens and connects a `NETLINK_NETFILTER` socket.
    pub(crate) fn connect() -> Result<Self, NetlinkError> {
        Ok(IpsetSocket::over(Connection::open(Protocol::Netfilter)?))
    }
}

impl<D: Datagrams> IpsetSocket<D> {
    /// The ipset exchanges over `conn` (a fake kernel's, in tests).
    pub(crate) fn over(conn: Connection<D>) -> Self {
        IpsetSocket {
            conn: Mutex::new(conn),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Connection<D>> {
        // A poisoned lock only means another call panicked mid-way; stale replies are
        // skipped by sequence number.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends every request with `NLM_F_REQUEST | NLM_F_ACK | flags`, in order, in as few
    /// `sendmsg` calls as the socket's buffers allow, and returns one [`Answer`] per request.
    /// A refused request does not stop the others.
    pub(crate) fn batch(&self, requests: &[(IpsetMessage, u16)]) -> Vec<Answer> {
        let wire: Vec<Wire<'_>> = requests
            .iter()
            .map(|(msg, flags)| Wire { msg, flags: *flags })
            .collect();
        let mut replies: Vec<Vec<IpsetMessage>> = requests.iter().map(|_| Vec::new()).collect();
        let results = self.lock().batch_with_replies(&wire, |i, reply| {
            let msg = parse_reply(reply)?;
            if let Some(replies) = replies.get_mut(i) {
                replies.push(msg);
            }
            Ok(())
        });
        replies
            .into_iter()
            .zip(results)
            .map(|(replies, result)| Answer { replies, result })
            .collect()
    }

    /// Sends `msg` as a dump request and returns every message of the multipart reply.
    pub(crate) fn dump(&self, msg: &IpsetMessage) -> Result<Vec<IpsetMessage>, NetlinkError> {
        let mut replies = Vec::new();
        self.lock().dump(&Wire { msg, flags: 0 }, |reply| {
            replies.push(parse_reply(reply)?);
            Ok(())
        })?;
        Ok(replies)
    }
}

/// The `IPSET_ATTR_LINENO` in the copy of our request that an error carries (the request's
/// `nlmsghdr`, then its payload), if any.
fn echoed_lineno(echo: &[u8]) -> Option<u32> {
    let attrs = echo.get(NLMSG_HDRLEN + NFGENMSG_LEN..)?;
    NlasIterator::new(attrs)
        .filter_map(Result::ok)
        .find(|nla| nla.kind() == IPSET_ATTR_LINENO)
        .and_then(|nla| parse_u32_be(nla.value()).ok())
}
