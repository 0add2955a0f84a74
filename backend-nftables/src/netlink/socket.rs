//! [`NftSocket`]: nf_tables on the workspace's netlink transport. A transaction is one
//! datagram (`NFNL_MSG_BATCH_BEGIN`, the messages, `NFNL_MSG_BATCH_END`) with a result per
//! message; dumps read our table back.
//!
//! Why one datagram: nfnetlink processes a batch per socket buffer (`nfnetlink_rcv_batch`,
//! `net/netfilter/nfnetlink.c`), and a batch cut across datagrams would need its own
//! BEGIN/END per piece and lose atomicity. So a transaction is never split (unlike
//! [`netlink_transport::Connection::batch`], which cuts at 256 KiB), and must fit the socket's
//! send buffer (`netlink_sendmsg` refuses a datagram above `SO_SNDBUF - 32` with `EMSGSIZE`):
//! the transport grows the buffer for a transaction that needs it (`SO_SNDBUFFORCE`, as `nft`
//! does).
//!
//! Errors map back to messages: every message carries `NLM_F_ACK` and its own sequence
//! number, and nfnetlink answers each one (0, or the errno of the message that failed; it
//! keeps going after a failure, so one transaction reports every bad message), then aborts
//! the whole batch if any failed. A failed commit is reported against the BEGIN message.
//! BEGIN and END carry no `NLM_F_ACK`, as with `nft`: kernels before 6.10 never answer them.
//!
//! The sending and the reading of replies are `netlink-transport`'s
//! ([`Connection::transaction`]): one transport in the workspace.

use netlink_transport::errno::EMSGSIZE;
use netlink_transport::{
    Acks, Connection, Datagrams, NetlinkError, Protocol, Reply, Request, RequestId, SocketOptions,
    SysSocket,
};
use tracing::debug;

use super::chain::ChainAttr;
use super::message::{GenAttr, MsgType, NftMessage, NftObject, ProtoFamily};
use super::rule::RuleAttr;
use super::set::SetAttr;
use super::set_elem::{SetElemAttr, SetElemListAttr};
use super::table::TableAttr;

/// An nf_tables netlink socket: transactions and dumps, one at a time.
#[derive(Debug)]
pub struct NftSocket<D = SysSocket> {
    conn: Connection<D>,
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

impl<D: Datagrams> NftSocket<D> {
    /// An nf_tables socket over `io` (a [`SysSocket`], or a fake kernel in tests).
    pub fn new(io: D) -> Self {
        NftSocket {
            conn: Connection::new(io),
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
    /// attribute over 64 KiB) or the datagram exceeds a send buffer that cannot grow
    /// (`EMSGSIZE`; nothing was sent), sending failed, or the kernel refused the commit (its errno, against
    /// BEGIN). Inner errors name their message ([`Request::describe`]):
    /// [`NetlinkError::Kernel`] with the errno of the message that failed, or
    /// [`NetlinkError::AckLost`] when its reply was dropped (`ENOBUFS`: the outcome is then
    /// unknown) or never came.
    pub fn transaction(
        &mut self,
        messages: &[NftMessage],
    ) -> Result<Vec<Result<(), NetlinkError>>, NetlinkError> {
        self.run_transaction(messages, Acks::Each)
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
        self.run_transaction(messages, Acks::ErrorsOnly)
    }

    fn run_transaction(
        &mut self,
        messages: &[NftMessage],
        acks: Acks,
    ) -> Result<Vec<Result<(), NetlinkError>>, NetlinkError> {
        // An attribute over 64 KiB cannot be encoded (`nla_len` is 16 bits): refuse before
        // sending anything.
        if let Some((index, (kind, len))) = messages
            .iter()
            .enumerate()
            .find_map(|(i, m)| m.oversized_attribute().map(|o| (i, o)))
        {
            return Err(NetlinkError::Send {
                request: RequestId {
                    index,
                    seq: 0,
                    description: format!(
                        "nf_tables transaction of {} messages (message {index}, {}: attribute \
                         {kind} of {len} bytes exceeds the 65535 an attribute can hold; split \
                         element lists with NftMessage::set_elements)",
                        messages.len(),
                        messages[index].describe()
                    ),
                },
                source: EMSGSIZE.to_io(),
            });
        }
        let outcome = self.conn.transaction(
            &NftMessage::batch_begin(),
            messages,
            &NftMessage::batch_end(),
            acks,
        );
        debug!(
            messages = messages.len(),
            ?acks,
            ok = outcome.is_ok(),
            "nf_tables transaction"
        );
        outcome
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
