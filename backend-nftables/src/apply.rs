//! Apply: a plan ([`Change`]s) → one nf_tables transaction ([`transaction_messages`],
//! [`apply`]), each kernel error mapped back to the change it came from ([`ApplyError`]).
//!
//! The plan's order is the order to send (tables, sets, chains, rule flushes, rules, element
//! deletes then adds, chain and set deletes), so a chain is added before the rules and
//! elements that lead to it, and deleted after them. The element changes of one set are
//! grouped in one message (split only at the 64 KiB attribute limit): the kernel lists an
//! interval set's elements in the order of its insertion batches, and one message per element
//! would cost an ACK each.
//!
//! [`Change::PurgeAffinity`] is not sent in the transaction: the datapath writes the affinity
//! elements, so [`purge_affinity`] lists the map and deletes the elements leading to the
//! endpoint, after the commit (an element that expired in between is listed again).

pub mod encode;

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;

use netlink_transport::errno::ENOENT;
use netlink_transport::{Datagrams, NetlinkError};

pub use encode::Encoder;

use crate::model::{Family, Key, Value};
use crate::names::SetName;
use crate::netlink::data::value_of;
use crate::netlink::{MsgType, NftMessage, NftSocket, ProtoFamily, SetElemAttr};
use crate::plan::Change;

/// The messages of one transaction for `changes`, and for each message the range of the
/// changes it comes from (an element list split over several messages: each names the
/// whole run). [`Change::PurgeAffinity`] is left out (see [`purge_affinity`]).
pub fn transaction_messages(
    encoder: &mut Encoder,
    changes: &[Change],
) -> (Vec<NftMessage>, Vec<Range<usize>>) {
    let mut messages = Vec::new();
    let mut origins = Vec::new();
    let mut push = |ms: Vec<NftMessage>, from: Range<usize>| {
        for m in ms {
            messages.push(m);
            origins.push(from.clone());
        }
    };
    let mut i = 0;
    while i < changes.len() {
        match &changes[i] {
            Change::AddElement(set, ..) | Change::DeleteElement(set, _) => {
                let add = matches!(changes[i], Change::AddElement(..));
                let mut elements = Vec::new();
                let start = i;
                while let Some(c) = changes.get(i) {
                    match c {
                        Change::AddElement(s, k, v) if add && s == set => {
                            elements.push((*k, *v));
                        }
                        Change::DeleteElement(s, k) if !add && s == set => {
                            elements.push((*k, Value::None));
                        }
                        _ => break,
                    }
                    i += 1;
                }
                let msg_type = if add {
                    MsgType::NewSetElem
                } else {
                    MsgType::DelSetElem
                };
                push(encoder.elements(msg_type, *set, &elements), start..i);
                continue;
            }
            Change::AddTable => push(vec![encoder.add_table()], i..i + 1),
            Change::AddSet(name) => push(vec![encoder.add_set(*name)], i..i + 1),
            Change::AddChain(name, hook) => push(vec![encoder.add_chain(*name, *hook)], i..i + 1),
            Change::FlushChain(name) => push(vec![encoder.flush_chain(*name)], i..i + 1),
            Change::AddRule(chain, rule) => push(encoder.add_rule(*chain, rule), i..i + 1),
            Change::PurgeAffinity(..) => {}
            Change::DeleteChain(name) => push(vec![encoder.delete_chain(*name)], i..i + 1),
            Change::DeleteSet(name) => push(vec![encoder.delete_set(*name)], i..i + 1),
        }
        i += 1;
    }
    (messages, origins)
}

/// A change the kernel refused, or a transaction that failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// One message failed; nothing of the transaction was committed.
    #[error("{table}: {change} (service {service}): {source}")]
    Change {
        /// Our table.
        table: String,
        /// The change, in `nft` syntax (the first of its message when several share one).
        change: String,
        /// The service address and port the change is about (`addr . proto . port`, or
        /// `proto . port` for a node port), or `shared` for the table's fixed objects.
        service: String,
        /// The kernel's answer.
        #[source]
        source: Box<NetlinkError>,
    },
    /// The transaction failed as a whole (too large, not sent, or the commit refused).
    #[error("{table}: transaction of {changes} changes: {source}")]
    Transaction {
        /// Our table.
        table: String,
        /// How many changes it carried.
        changes: usize,
        /// Why.
        #[source]
        source: Box<NetlinkError>,
    },
}

/// The service address and port a change is about, for errors.
pub fn service_of(change: &Change) -> String {
    let key = match change {
        Change::AddElement(_, k, _) | Change::DeleteElement(_, k) => *k,
        Change::PurgeAffinity(_, ep) => return format!("endpoint {ep}"),
        _ => return "shared".to_owned(),
    };
    match key {
        Key::Dest { addr, proto, port }
        | Key::Slot {
            addr, proto, port, ..
        }
        | Key::DestSource {
            addr, proto, port, ..
        } => format!("{addr} . {} . {port}", proto.as_str()),
        Key::Port { proto, port } | Key::PortSlot { proto, port, .. } => {
            format!("{} . {port}", proto.as_str())
        }
        Key::Addr(a) => a.to_string(),
        Key::Net(n) => n.to_string(),
        Key::Pair(a, _) => format!("endpoint {a}"),
    }
}

struct Shown<'a>(&'a str, &'a Change);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = crate::plan::render_changes(self.0, std::slice::from_ref(self.1));
        f.write_str(text.trim_end())
    }
}

/// Sends `changes` as one transaction (with an ACK per message) and then purges the affinity
/// elements of [`Change::PurgeAffinity`]. Returns the number of messages sent.
///
/// # Errors
/// The first refused change ([`ApplyError::Change`]; nothing was committed), or the
/// transaction's own failure ([`ApplyError::Transaction`]).
pub fn apply<D: Datagrams>(
    socket: &mut NftSocket<D>,
    table: &str,
    changes: &[Change],
) -> Result<usize, ApplyError> {
    apply_measured(socket, table, changes).map(|applied| applied.messages)
}

/// What [`apply_measured`] sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Applied {
    /// Messages sent: the transaction's and the affinity purges'.
    pub messages: usize,
    /// The transaction's datagram ([`transaction_bytes`]); 0 when it had nothing to send.
    pub transaction_bytes: usize,
}

/// [`apply`], also measuring the transaction's datagram from the messages it sends (for the
/// metrics; no second encoding).
///
/// # Errors
/// As [`apply`].
pub fn apply_measured<D: Datagrams>(
    socket: &mut NftSocket<D>,
    table: &str,
    changes: &[Change],
) -> Result<Applied, ApplyError> {
    let mut encoder = Encoder::new(table).with_encoded_elements();
    let (messages, origins) = transaction_messages(&mut encoder, changes);
    let bytes = if messages.is_empty() {
        0
    } else {
        transaction_bytes(&messages)
    };
    let mut sent = 0;
    if !messages.is_empty() {
        let results = socket
            .transaction(&messages)
            .map_err(|source| ApplyError::Transaction {
                table: table.to_owned(),
                changes: changes.len(),
                source: Box::new(source),
            })?;
        sent = messages.len();
        if let Some((index, source)) = results
            .into_iter()
            .enumerate()
            .find_map(|(i, r)| r.err().map(|e| (i, e)))
        {
            let change = &changes[origins[index].start];
            return Err(ApplyError::Change {
                table: table.to_owned(),
                change: Shown(table, change).to_string(),
                service: service_of(change),
                source: Box::new(source),
            });
        }
    }
    let purges: BTreeSet<(Family, SocketAddr)> = changes
        .iter()
        .filter_map(|c| match c {
            Change::PurgeAffinity(f, ep) => Some((*f, *ep)),
            _ => None,
        })
        .collect();
    if !purges.is_empty() {
        sent +=
            purge_affinity(socket, table, &purges).map_err(|(ep, source)| ApplyError::Change {
                table: table.to_owned(),
                change: Shown(table, &Change::PurgeAffinity(Family::of(ep.ip()), ep)).to_string(),
                service: format!("endpoint {ep}"),
                source: Box::new(source),
            })?;
    }
    Ok(Applied {
        messages: sent,
        transaction_bytes: bytes,
    })
}

/// The size of the datagram that carries `messages` as one transaction: BEGIN, the messages,
/// END, each a 16-byte `nlmsghdr` and its payload, padded to 4 bytes.
pub fn transaction_bytes(messages: &[NftMessage]) -> usize {
    use netlink_packet_core::Emitable;
    const NLMSG_HDRLEN: usize = 16;
    let one = |m: &NftMessage| (NLMSG_HDRLEN + m.buffer_len() + 3) & !3;
    let ends = one(&NftMessage::batch_begin()) + one(&NftMessage::batch_end());
    ends + messages.iter().map(one).sum::<usize>()
}

/// The endpoint an affinity element leads to (its data: `addr . port`).
fn affinity_endpoint(family: Family, element: &[SetElemAttr]) -> Option<SocketAddr> {
    let data = element.iter().find_map(|a| match a {
        SetElemAttr::Data(d) => value_of(d),
        _ => None,
    })?;
    let (addr, rest): (IpAddr, &[u8]) = match family {
        Family::V4 => {
            let b: [u8; 4] = data.get(..4)?.try_into().ok()?;
            (IpAddr::from(b), data.get(4..)?)
        }
        Family::V6 => {
            let b: [u8; 16] = data.get(..16)?.try_into().ok()?;
            (IpAddr::from(b), data.get(16..)?)
        }
    };
    let port = u16::from_be_bytes(rest.get(..2)?.try_into().ok()?);
    Some(SocketAddr::new(addr, port))
}

/// Deletes every element of the affinity maps that leads to one of `endpoints`: lists the map,
/// deletes the matches in one transaction; an element that expired between the two
/// (`ENOENT`) makes it list and try again (three times at most). Returns the messages sent.
///
/// # Errors
/// The endpoint whose purge failed, and why.
pub fn purge_affinity<D: Datagrams>(
    socket: &mut NftSocket<D>,
    table: &str,
    endpoints: &BTreeSet<(Family, SocketAddr)>,
) -> Result<usize, (SocketAddr, NetlinkError)> {
    let mut sent = 0;
    for family in Family::ALL {
        let wanted: BTreeSet<SocketAddr> = endpoints
            .iter()
            .filter(|(f, _)| *f == family)
            .map(|(_, ep)| *ep)
            .collect();
        let Some(first) = wanted.iter().next().copied() else {
            continue;
        };
        let set = SetName::Affinity(family).to_string();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let listed = match socket.list_set_elements(ProtoFamily::Inet, table, &set) {
                Ok(l) => l,
                // No such map (IPv6 has none yet): nothing to purge.
                Err(e) if e.errno() == Some(ENOENT) => break,
                Err(e) => return Err((first, e)),
            };
            let doomed: Vec<Vec<SetElemAttr>> = listed
                .into_iter()
                .filter(|el| affinity_endpoint(family, el).is_some_and(|ep| wanted.contains(&ep)))
                .map(|el| {
                    el.into_iter()
                        .filter(|a| matches!(a, SetElemAttr::Key(_)))
                        .collect()
                })
                .collect();
            if doomed.is_empty() {
                break;
            }
            let messages = NftMessage::set_elements(
                MsgType::DelSetElem,
                ProtoFamily::Inet,
                table,
                &set,
                doomed,
            );
            let outcome = socket.transaction(&messages).map_err(|e| (first, e))?;
            sent += messages.len();
            match outcome.into_iter().find_map(Result::err) {
                None => break,
                Some(e) if e.errno() == Some(ENOENT) && attempt < 3 => continue,
                Some(e) => return Err((first, e)),
            }
        }
    }
    Ok(sent)
}
