//! [`NftSocket`]: nf_tables on the workspace's netlink transport. A transaction is one
//! datagram (`NFNL_MSG_BATCH_BEGIN`, the messages, `NFNL_MSG_BATCH_END`) with a result per
//! message; dumps read our table back.
//!
//! Why one datagram: nfnetlink processes a batch per socket buffer (`nfnetlink_rcv_batch`,
//! `net/netfilter/nfnetlink.c`), and a batch cut across datagrams would need its own
//! BEGIN/END per piece and lose atomicity. So a transaction is never split (unlike
//! [`netlink_transport::Connection::batch`], which cuts at 256 KiB), and must fit the socket's
//! send buffer (`netlink_sendmsg` refuses a datagram above `SO_SNDBUF - 32` with `EMSGSIZE`):
//! open the socket with [`SocketOptions::sndbuf_bytes`] sized for the largest transaction
//! (set with `SO_SNDBUFFORCE`, as `nft` does).
//!
//! Errors map back to messages: every message carries `NLM_F_ACK` and its own sequence
//! number, and nfnetlink answers each one (0, or the errno of the message that failed; it
//! keeps going after a failure, so one transaction reports every bad message), then aborts
//! the whole batch if any failed. A failed commit is reported against the BEGIN message.
//! BEGIN and END carry no `NLM_F_ACK`, as with `nft`: kernels before 6.10 never answer them.
//!
//! TODO(#13): the sending belongs in `netlink-transport` (one transport):
//! `netlink-transport/src/transaction.rs` has it as `Connection::transaction`; once `lib.rs`
//! declares that module, [`NftSocket::transaction`] becomes a call to it.

use std::io;

use netlink_packet_core::{ErrorBuffer, NLMSG_ERROR, NLMSG_OVERRUN, NLM_F_ACK};
use netlink_transport::errno::{EMSGSIZE, ENOBUFS};
use netlink_transport::{
    messages, Connection, Datagrams, Errno, NetlinkError, Protocol, Reply, Request, RequestId,
    SocketOptions, SysSocket,
};
use tracing::debug;

use super::chain::ChainAttr;
use super::message::{GenAttr, MsgType, NftMessage, NftObject, ProtoFamily};
use super::rule::RuleAttr;
use super::set::SetAttr;
use super::set_elem::{SetElemAttr, SetElemListAttr};
use super::table::TableAttr;

/// Sequence numbers of transactions start here, away from the [`Connection`]'s own (which
/// start at 1), so that a reply left over from one never matches the other.
const FIRST_TRANSACTION_SEQ: u32 = 0x4000_0000;
/// What `netlink_sendmsg` keeps of `SO_SNDBUF` for itself.
const SNDBUF_RESERVED: usize = 32;

/// An nf_tables netlink socket: transactions and dumps, one at a time.
#[derive(Debug)]
pub struct NftSocket<D = SysSocket> {
    conn: Connection<D>,
    next_seq: u32,
    out: Vec<u8>,
    buf: Vec<u8>,
}

impl NftSocket<SysSocket> {
    /// Opens a `NETLINK_NETFILTER` socket in the calling thread's network namespace with
    /// [`SocketOptions::default`] (1 MiB send buffer, 4 MiB receive buffer).
    ///
    /// # Errors
    /// [`NetlinkError::Socket`] naming the call that failed.
    pub fn open() -> Result<Self, NetlinkError> {
        Self::open_with(SocketOptions::default())
    }

    /// Opens one with `options`: `sndbuf_bytes` bounds a transaction's size, `rcvbuf_bytes`
    /// its message count (each ACK costs about [`netlink_transport::ACK_CHARGE`] bytes until
    /// read).
    ///
    /// # Errors
    /// [`NetlinkError::Socket`] naming the call that failed.
    pub fn open_with(options: SocketOptions) -> Result<Self, NetlinkError> {
        Ok(Self::new(SysSocket::open(Protocol::Netfilter, options)?))
    }
}

/// How one message of a transaction ended, as far as the replies tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ack {
    Done,
    Refused(i32),
}

/// The replies to one transaction datagram.
#[derive(Debug)]
struct Acks {
    /// The BEGIN message's sequence number; message `i` has `begin + 1 + i`.
    begin: u32,
    port: u32,
    acks: Vec<Option<Ack>>,
    missing: usize,
    /// The errno the kernel answered against BEGIN: the commit failed (or the batch could
    /// not be processed at all).
    commit: Option<i32>,
    /// `ENOBUFS` or `NLMSG_OVERRUN`: replies were dropped.
    dropped: bool,
}

impl Acks {
    fn read_datagram(&mut self, datagram: &[u8]) -> Result<(), netlink_packet_core::DecodeError> {
        for nl in messages(datagram) {
            let nl = nl?;
            if nl.message_type() == NLMSG_OVERRUN {
                self.dropped = true;
                continue;
            }
            let port = nl.port_number();
            if nl.message_type() != NLMSG_ERROR || (port != self.port && port != 0) {
                continue;
            }
            let code = ErrorBuffer::new_checked(nl.payload())?
                .code()
                .map_or(0, |c| -c.get());
            let offset = nl.sequence_number().wrapping_sub(self.begin) as usize;
            if offset == 0 {
                if code != 0 {
                    self.commit = Some(code);
                }
                continue;
            }
            if let Some(slot) = self.acks.get_mut(offset - 1) {
                if slot.is_none() {
                    *slot = Some(if code == 0 {
                        Ack::Done
                    } else {
                        Ack::Refused(code)
                    });
                    self.missing -= 1;
                }
            }
        }
        Ok(())
    }
}

impl Acks {
    /// One result per message: see [`NftSocket::transaction`].
    fn results(&self, messages: &[NftMessage], ack_each: bool) -> Vec<Result<(), NetlinkError>> {
        self.acks
            .iter()
            .zip(messages)
            .enumerate()
            .map(|(index, (ack, message))| {
                let request = || RequestId {
                    index,
                    seq: self
                        .begin
                        .wrapping_add(1 + u32::try_from(index).unwrap_or(0)),
                    description: message.describe(),
                };
                match ack {
                    Some(Ack::Done) => Ok(()),
                    Some(Ack::Refused(code)) => Err(NetlinkError::Kernel {
                        request: request(),
                        errno: Errno::new(*code),
                        echo: None,
                    }),
                    // Without NLM_F_ACK, silence is success unless replies were dropped.
                    None if !ack_each && !self.dropped => Ok(()),
                    None => Err(NetlinkError::AckLost {
                        request: request(),
                        errno: self.dropped.then_some(ENOBUFS),
                    }),
                }
            })
            .collect()
    }
}

/// Why reading a transaction's replies stopped, before the request is named.
enum ReadFault {
    Malformed(netlink_packet_core::DecodeError),
    Recv(io::Error),
}

impl ReadFault {
    fn into_error(self, request: RequestId) -> NetlinkError {
        match self {
            ReadFault::Malformed(source) => NetlinkError::Malformed { request, source },
            ReadFault::Recv(source) => NetlinkError::Recv { request, source },
        }
    }
}

impl<D: Datagrams> NftSocket<D> {
    /// An nf_tables socket over `io` (a [`SysSocket`], or a fake kernel in tests).
    pub fn new(io: D) -> Self {
        NftSocket {
            conn: Connection::new(io),
            next_seq: FIRST_TRANSACTION_SEQ,
            out: Vec::new(),
            buf: Vec::with_capacity(64 * 1024),
        }
    }

    /// Sends `messages` as one transaction (one datagram: BEGIN, the messages each with
    /// `NLM_F_ACK`, END) and returns one result per message, in order.
    ///
    /// The transaction was committed if and only if this returns `Ok` and every result is
    /// `Ok` ([`committed`]): when one message fails, the kernel still answers the others
    /// (0 for those it accepted) but rolls all of them back.
    ///
    /// Each ACK holds about [`netlink_transport::ACK_CHARGE`] bytes of the receive buffer
    /// until read, so a transaction of more messages than the receive buffer holds ACKs loses
    /// some (reported as [`NetlinkError::AckLost`]): put many elements in one message
    /// ([`NftMessage::set_elements`]), or use [`NftSocket::transaction_errors_only`].
    ///
    /// # Errors
    /// The outer error fails the transaction as a whole: a message cannot be encoded (an
    /// attribute over 64 KiB) or the datagram exceeds the send buffer (`EMSGSIZE`; nothing
    /// was sent), sending failed, or the kernel refused the commit (its errno, against
    /// BEGIN). Inner errors name their message ([`Request::describe`]):
    /// [`NetlinkError::Kernel`] with the errno of the message that failed, or
    /// [`NetlinkError::AckLost`] when its reply was dropped (`ENOBUFS`: the outcome is then
    /// unknown) or never came.
    pub fn transaction(
        &mut self,
        messages: &[NftMessage],
    ) -> Result<Vec<Result<(), NetlinkError>>, NetlinkError> {
        self.run_transaction(messages, true)
    }

    /// [`NftSocket::transaction`] without `NLM_F_ACK` on the messages, as `nft` sends them:
    /// nfnetlink still answers every failed message (and a failed commit), so a message
    /// nobody complained about succeeded, unless replies were dropped (`ENOBUFS`, then every
    /// unanswered message is [`NetlinkError::AckLost`]). For transactions of more messages
    /// than the receive buffer holds ACKs.
    ///
    /// # Errors
    /// As [`NftSocket::transaction`].
    pub fn transaction_errors_only(
        &mut self,
        messages: &[NftMessage],
    ) -> Result<Vec<Result<(), NetlinkError>>, NetlinkError> {
        self.run_transaction(messages, false)
    }

    fn run_transaction(
        &mut self,
        messages: &[NftMessage],
        ack_each: bool,
    ) -> Result<Vec<Result<(), NetlinkError>>, NetlinkError> {
        let count = u32::try_from(messages.len()).unwrap_or(u32::MAX - 2);
        let begin = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(count + 2);
        let begin_id = |note: &str| RequestId {
            index: 0,
            seq: begin,
            description: format!("nf_tables transaction of {count} messages ({note})"),
        };
        self.encode_checked(messages, begin, ack_each)
            .map_err(|note| NetlinkError::Send {
                request: begin_id(&note),
                source: EMSGSIZE.to_io(),
            })?;
        let io = self.conn.io_mut();
        io.send(&self.out).map_err(|source| NetlinkError::Send {
            request: begin_id("batch begin"),
            source,
        })?;
        let mut acks = Acks {
            begin,
            port: io.port(),
            acks: vec![None; messages.len()],
            missing: messages.len(),
            commit: None,
            dropped: false,
        };
        self.read_replies(&mut acks, ack_each)
            .map_err(|e| e.into_error(begin_id("its replies")))?;
        if let Some(code) = acks.commit {
            return Err(NetlinkError::Kernel {
                request: begin_id("the commit"),
                errno: Errno::new(code),
                echo: None,
            });
        }
        debug!(
            messages = messages.len(),
            bytes = self.out.len(),
            missing = acks.missing,
            ack_each,
            "nf_tables transaction"
        );
        Ok(acks.results(messages, ack_each))
    }

    /// Encodes the transaction into `self.out` if it can be sent: no attribute over 64 KiB,
    /// and the datagram within the send buffer; else says why.
    fn encode_checked(
        &mut self,
        messages: &[NftMessage],
        begin: u32,
        ack_each: bool,
    ) -> Result<(), String> {
        if let Some((index, (kind, len))) = messages
            .iter()
            .enumerate()
            .find_map(|(i, m)| m.oversized_attribute().map(|o| (i, o)))
        {
            return Err(format!(
                "message {index}, {}: attribute {kind} of {len} bytes exceeds the 65535 an \
                 attribute can hold (split element lists with NftMessage::set_elements)",
                messages[index].describe()
            ));
        }
        self.encode(messages, begin, ack_each);
        let (_, sndbuf) = self.conn.io_mut().buffer_sizes();
        if self.out.len() > sndbuf.saturating_sub(SNDBUF_RESERVED) {
            return Err(format!(
                "{} bytes: more than the socket send buffer ({sndbuf} bytes) allows",
                self.out.len()
            ));
        }
        Ok(())
    }

    /// Reads the replies of the transaction just sent into `acks`. The kernel handles the
    /// whole batch inside our sendmsg, so every reply is queued now (or was dropped, which
    /// recv reports as ENOBUFS): wait only for ACKs that must come and none is known lost.
    fn read_replies(&mut self, acks: &mut Acks, ack_each: bool) -> Result<(), ReadFault> {
        let io = self.conn.io_mut();
        while acks.missing > 0 {
            let wait = ack_each && !acks.dropped && acks.commit.is_none();
            match io.recv(&mut self.buf, wait) {
                Ok(len) if len <= self.buf.len() => {
                    acks.read_datagram(&self.buf)
                        .map_err(ReadFault::Malformed)?;
                }
                Ok(len) => {
                    // Truncated: grow the buffer; what it held is lost.
                    self.buf.reserve(len);
                    acks.dropped = true;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if Errno::of(&e) == Some(ENOBUFS) => acks.dropped = true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(ReadFault::Recv(e)),
            }
        }
        Ok(())
    }

    /// Writes the transaction's datagram into `self.out`: BEGIN with sequence number
    /// `begin`, message `i` with `begin + 1 + i` (and `NLM_F_ACK` if `ack_each`), END last.
    fn encode(&mut self, messages: &[NftMessage], begin: u32, ack_each: bool) {
        self.out.clear();
        let put = |out: &mut Vec<u8>, message: &NftMessage, seq: u32, ack: bool| {
            let start = out.len();
            message.emit_message(out);
            out.resize((out.len() + 3) & !3, 0);
            if ack {
                let flags = u16::from_ne_bytes([out[start + 6], out[start + 7]]) | NLM_F_ACK;
                out[start + 6..start + 8].copy_from_slice(&flags.to_ne_bytes());
            }
            out[start + 8..start + 12].copy_from_slice(&seq.to_ne_bytes());
        };
        put(&mut self.out, &NftMessage::batch_begin(), begin, false);
        let mut seq = begin;
        for message in messages {
            seq = seq.wrapping_add(1);
            put(&mut self.out, message, seq, ack_each);
        }
        put(
            &mut self.out,
            &NftMessage::batch_end(),
            seq.wrapping_add(1),
            false,
        );
    }

    /// Dumps with `request` (a `GET*` message with `NLM_F_DUMP`) and parses every reply.
    ///
    /// # Errors
    /// As [`Connection::dump`]; a reply that does not parse is [`NetlinkError::Malformed`].
    pub fn dump(&mut self, request: &NftMessage) -> Result<Vec<NftMessage>, NetlinkError> {
        let mut out = Vec::new();
        self.conn.dump(request, |reply: Reply<'_>| {
            out.push(NftMessage::parse(
                reply.message_type,
                reply.flags,
                reply.payload,
            )?);
            Ok(())
        })?;
        Ok(out)
    }

    /// The ruleset generation (`NFT_MSG_GETGEN`): it changes with every committed
    /// transaction, ours or anyone's, so an unchanged number means an unchanged ruleset.
    ///
    /// # Errors
    /// As [`Connection::request`]; a reply without `NFTA_GEN_ID` is
    /// [`NetlinkError::Malformed`].
    pub fn generation(&mut self) -> Result<u32, NetlinkError> {
        let request = NftMessage::new(
            MsgType::GetGen,
            ProtoFamily::Unspec,
            NftObject::Gen(Vec::new()),
        );
        let mut id = None;
        self.conn.request(&request, |reply: Reply<'_>| {
            let message = NftMessage::parse(reply.message_type, reply.flags, reply.payload)?;
            if let NftObject::Gen(attrs) = message.object {
                id = id.or(attrs.iter().find_map(|a| match a {
                    GenAttr::Id(id) => Some(*id),
                    _ => None,
                }));
            }
            Ok(())
        })?;
        id.ok_or_else(|| NetlinkError::Malformed {
            request: RequestId {
                index: 0,
                seq: 0,
                description: request.describe(),
            },
            source: "NFT_MSG_NEWGEN without NFTA_GEN_ID".into(),
        })
    }

    /// The tables of `family`.
    ///
    /// # Errors
    /// As [`NftSocket::dump`].
    pub fn list_tables(
        &mut self,
        family: ProtoFamily,
    ) -> Result<Vec<Vec<TableAttr>>, NetlinkError> {
        let request = NftMessage::new(MsgType::GetTable, family, NftObject::Table(Vec::new()));
        Ok(self
            .dump(&request)?
            .into_iter()
            .filter_map(|m| match m.object {
                NftObject::Table(attrs) => Some(attrs),
                _ => None,
            })
            .collect())
    }

    /// The chains of `table`.
    ///
    /// # Errors
    /// As [`NftSocket::dump`].
    pub fn list_chains(
        &mut self,
        family: ProtoFamily,
        table: &str,
    ) -> Result<Vec<Vec<ChainAttr>>, NetlinkError> {
        let request = NftMessage::new(
            MsgType::GetChain,
            family,
            NftObject::Chain(vec![ChainAttr::Table(table.to_owned())]),
        );
        let is_ours = |attrs: &[ChainAttr]| attrs.contains(&ChainAttr::Table(table.to_owned()));
        Ok(self
            .dump(&request)?
            .into_iter()
            .filter_map(|m| match m.object {
                NftObject::Chain(attrs) if is_ours(&attrs) => Some(attrs),
                _ => None,
            })
            .collect())
    }

    /// The sets and maps of `table`.
    ///
    /// # Errors
    /// As [`NftSocket::dump`].
    pub fn list_sets(
        &mut self,
        family: ProtoFamily,
        table: &str,
    ) -> Result<Vec<Vec<SetAttr>>, NetlinkError> {
        let request = NftMessage::new(
            MsgType::GetSet,
            family,
            NftObject::Set(vec![SetAttr::Table(table.to_owned())]),
        );
        let is_ours = |attrs: &[SetAttr]| attrs.contains(&SetAttr::Table(table.to_owned()));
        Ok(self
            .dump(&request)?
            .into_iter()
            .filter_map(|m| match m.object {
                NftObject::Set(attrs) if is_ours(&attrs) => Some(attrs),
                _ => None,
            })
            .collect())
    }

    /// The elements of `set` in `table` (the kernel's order).
    ///
    /// # Errors
    /// As [`NftSocket::dump`]; `ENOENT` when there is no such set.
    pub fn list_set_elements(
        &mut self,
        family: ProtoFamily,
        table: &str,
        set: &str,
    ) -> Result<Vec<Vec<SetElemAttr>>, NetlinkError> {
        let request = NftMessage::new(
            MsgType::GetSetElem,
            family,
            NftObject::SetElems(vec![
                SetElemListAttr::Table(table.to_owned()),
                SetElemListAttr::Set(set.to_owned()),
            ]),
        );
        let mut elements = Vec::new();
        for m in self.dump(&request)? {
            if let NftObject::SetElems(attrs) = m.object {
                for attr in attrs {
                    if let SetElemListAttr::Elements(list) = attr {
                        elements.extend(list);
                    }
                }
            }
        }
        Ok(elements)
    }

    /// The rules of `table`, of one chain or all.
    ///
    /// # Errors
    /// As [`NftSocket::dump`].
    pub fn list_rules(
        &mut self,
        family: ProtoFamily,
        table: &str,
        chain: Option<&str>,
    ) -> Result<Vec<Vec<RuleAttr>>, NetlinkError> {
        let mut filter = vec![RuleAttr::Table(table.to_owned())];
        filter.extend(chain.map(|c| RuleAttr::Chain(c.to_owned())));
        let request = NftMessage::new(MsgType::GetRule, family, NftObject::Rule(filter.clone()));
        Ok(self
            .dump(&request)?
            .into_iter()
            .filter_map(|m| match m.object {
                NftObject::Rule(attrs) if filter.iter().all(|f| attrs.contains(f)) => Some(attrs),
                _ => None,
            })
            .collect())
    }
}

/// Whether a [`NftSocket::transaction`] was committed: no outer error and no message failed.
pub fn committed(outcome: &Result<Vec<Result<(), NetlinkError>>, NetlinkError>) -> bool {
    matches!(outcome, Ok(results) if results.iter().all(Result::is_ok))
}
