//! ctnetlink messages: `netlink-packet-netfilter`'s conntrack types ([`ConntrackMessage`],
//! [`ConntrackAttribute`], [`Tuple`]...), framed here and read into our [`Entry`]. They cover
//! all we send (a dump of a family; a delete by original tuple) and all we read (the original
//! and reply tuples); every other attribute of a kernel entry is kept as `Other(DefaultNla)`,
//! so a message parses and emits back byte for byte (see `captures.rs`).
//!
//! Traps, as the kernel has them (`net/netfilter/nf_conntrack_netlink.c`):
//! - Ports are network order (`nla_put_be16`); `CTA_STATUS`, `CTA_TIMEOUT`, `CTA_MARK`,
//!   `CTA_ID` are big-endian u32; netlink headers are host order.
//! - `ctnetlink_del_conntrack` looks up `CTA_TUPLE_ORIG`, else `CTA_TUPLE_REPLY`, and with
//!   *neither* it flushes the whole table: a delete always carries the original tuple.
//!   Other attributes (status, timeout, mark, which the `conntrack` tool copies from the
//!   entry it dumped) are ignored, so ours sends the tuple alone.

use std::net::IpAddr;

use netlink_packet_core::{
    DecodeError, ErrorContext, NetlinkHeader, NetlinkMessage, NetlinkPayload,
    ParseableParametrized, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
#[cfg(test)]
use netlink_packet_netfilter::conntrack::Protocol;
use netlink_packet_netfilter::conntrack::{
    ConntrackAttribute, ConntrackMessage, IPTuple, ProtoTuple, Tuple,
};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};

use crate::{Entry, Family};

/// `NFNETLINK_V0` (`include/uapi/linux/netfilter/nfnetlink.h`), nfgenmsg's version.
const NFNETLINK_V0: u8 = 0;
/// `IPCTNL_MSG_CT_NEW` (`nfnetlink_conntrack.h`): how a dump carries each entry.
const IPCTNL_MSG_CT_NEW: u8 = 0;
/// `sizeof(struct nlmsghdr)`.
#[cfg(test)]
pub(crate) const NLMSG_HDRLEN: usize = 16;
/// `sizeof(struct nfgenmsg)`: family, version, resource id.
#[cfg(test)]
pub(crate) const NFGENMSG_LEN: usize = 4;

fn proto_family(family: Family) -> NetfilterProtoFamily {
    match family {
        Family::V4 => NetfilterProtoFamily::IPv4,
        Family::V6 => NetfilterProtoFamily::IPv6,
    }
}

/// The ctnetlink message of `family` (nfgenmsg and attributes), without the netlink header.
fn netfilter(family: Family, message: ConntrackMessage) -> NetfilterMessage {
    NetfilterMessage::new(
        NetfilterHeader::new(proto_family(family), NFNETLINK_V0, 0),
        message,
    )
}

/// `IPCTNL_MSG_CT_GET` without attributes: with `NLM_F_DUMP`, every entry of the family.
pub(crate) fn dump_message(family: Family) -> NetfilterMessage {
    netfilter(family, ConntrackMessage::Get(Vec::new()))
}

/// `IPCTNL_MSG_CT_DELETE` of `entry`, by its original tuple alone (see the module docs).
pub(crate) fn delete_message(family: Family, entry: &Entry) -> NetfilterMessage {
    let tuple = vec![
        Tuple::Ip(vec![
            IPTuple::SourceAddress(entry.src),
            IPTuple::DestinationAddress(entry.dst),
        ]),
        Tuple::Proto(vec![
            ProtoTuple::Protocol(entry.proto.into()),
            ProtoTuple::SourcePort(entry.sport),
            ProtoTuple::DestinationPort(entry.dport),
        ]),
    ];
    netfilter(
        family,
        ConntrackMessage::Delete(vec![ConntrackAttribute::CtaTupleOrig(tuple)]),
    )
}

/// `message` framed as one netlink message with `flags` and `seq` (port id 0: to the kernel).
fn frame(message: NetfilterMessage, flags: u16, seq: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = seq;
    let mut message = NetlinkMessage::new(header, NetlinkPayload::from(message));
    message.finalize();
    let mut bytes = vec![0; message.buffer_len()];
    message.serialize(&mut bytes);
    bytes
}

/// `IPCTNL_MSG_CT_GET` with `NLM_F_DUMP`: every entry of the family.
pub fn encode_dump(family: Family, seq: u32) -> Vec<u8> {
    frame(dump_message(family), NLM_F_REQUEST | NLM_F_DUMP, seq)
}

/// `IPCTNL_MSG_CT_DELETE` of one entry by its original tuple, with an ACK.
pub fn encode_delete(family: Family, entry: &Entry, seq: u32) -> Vec<u8> {
    frame(
        delete_message(family, entry),
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
    )
}

/// Parses a ctnetlink message: `message_type` from its netlink header, `payload` after it
/// (nfgenmsg and attributes).
///
/// # Errors
/// A `DecodeError` naming the attribute that did not parse.
pub(crate) fn parse_message(
    message_type: u16,
    payload: &[u8],
) -> Result<NetfilterMessage, DecodeError> {
    NetfilterMessage::parse_with_param(payload, message_type).context("invalid ctnetlink message")
}

/// The [`Entry`] of a ctnetlink message: an `IPCTNL_MSG_CT_NEW` (as dumps carry entries) with
/// both tuples and ports; `None` for anything else (ICMP entries have no ports).
pub(crate) fn entry_of(message: &NetfilterMessage) -> Option<Entry> {
    let NetfilterMessageInner::Conntrack(ConntrackMessage::New(attributes)) = &message.inner else {
        return None;
    };
    entry_of_attributes(attributes)
}

fn entry_of_attributes(attributes: &[ConntrackAttribute]) -> Option<Entry> {
    let orig = attributes.iter().find_map(|a| match a {
        ConntrackAttribute::CtaTupleOrig(t) => Some(TupleView::of(t)),
        _ => None,
    })?;
    let reply = attributes.iter().find_map(|a| match a {
        ConntrackAttribute::CtaTupleReply(t) => Some(TupleView::of(t)),
        _ => None,
    })?;
    Some(Entry {
        proto: orig.proto?,
        src: orig.src?,
        dst: orig.dst?,
        sport: orig.sport?,
        dport: orig.dport?,
        reply_src: reply.src?,
    })
}

/// Parses one conntrack entry's attributes (the payload after nfgenmsg of an
/// `IPCTNL_MSG_CT_NEW`) into an [`Entry`]; `None` when they do not parse, or for entries
/// without ports (ICMP...).
pub fn parse_entry(attributes: &[u8]) -> Option<Entry> {
    match ConntrackMessage::parse_with_param(attributes, IPCTNL_MSG_CT_NEW) {
        Ok(ConntrackMessage::New(attributes)) => entry_of_attributes(&attributes),
        _ => None,
    }
}

/// The fields of one tuple we match on.
#[derive(Default)]
struct TupleView {
    src: Option<IpAddr>,
    dst: Option<IpAddr>,
    proto: Option<u8>,
    sport: Option<u16>,
    dport: Option<u16>,
}

impl TupleView {
    fn of(tuple: &[Tuple]) -> Self {
        let mut view = TupleView::default();
        for part in tuple {
            match part {
                Tuple::Ip(ips) => {
                    for ip in ips {
                        match ip {
                            IPTuple::SourceAddress(a) => view.src = Some(*a),
                            IPTuple::DestinationAddress(a) => view.dst = Some(*a),
                            _ => {}
                        }
                    }
                }
                Tuple::Proto(protos) => {
                    for proto in protos {
                        match proto {
                            ProtoTuple::Protocol(p) => view.proto = Some((*p).into()),
                            ProtoTuple::SourcePort(p) => view.sport = Some(*p),
                            ProtoTuple::DestinationPort(p) => view.dport = Some(*p),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        view
    }
}

#[cfg(test)]
mod captures;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::IPPROTO_UDP;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn udp(src: &str, dst: &str) -> Entry {
        Entry {
            proto: IPPROTO_UDP,
            src: ip(src),
            dst: ip(dst),
            sport: 40000,
            dport: 53,
            reply_src: ip(dst),
        }
    }

    /// A dump entry made of the delete's original tuple and the same tuple as reply tuple.
    fn as_dumped(family: Family, entry: &Entry) -> Vec<u8> {
        let msg = encode_delete(family, entry, 7);
        let body = &msg[NLMSG_HDRLEN + NFGENMSG_LEN..];
        let mut reply = body.to_vec();
        // CTA_TUPLE_REPLY | NLA_F_NESTED.
        reply[2..4].copy_from_slice(&(2u16 | 0x8000).to_ne_bytes());
        [body, &reply].concat()
    }

    #[test]
    fn delete_messages_read_back_as_their_entry_in_both_families() {
        for (family, entry) in [
            (Family::V4, udp("198.18.200.1", "198.19.0.53")),
            (Family::V6, udp("2001:db8::1", "2001:db8::53")),
        ] {
            let msg = encode_delete(family, &entry, 7);
            assert_eq!(
                u32::from_ne_bytes([msg[0], msg[1], msg[2], msg[3]]) as usize,
                msg.len()
            );
            assert_eq!(
                u16::from_ne_bytes([msg[4], msg[5]]),
                0x0102,
                "CTNETLINK, DELETE"
            );
            assert_eq!(u16::from_ne_bytes([msg[6], msg[7]]), 0x5, "REQUEST | ACK");
            // The reply tuple is the original one copied: its source is the client.
            let want = Entry {
                reply_src: entry.src,
                ..entry
            };
            assert_eq!(
                parse_entry(&as_dumped(family, &entry)),
                Some(want),
                "{family}"
            );
        }
    }

    #[test]
    fn dump_request_is_a_bare_get_with_the_dump_flags() {
        let msg = encode_dump(Family::V6, 3);
        assert_eq!(msg.len(), NLMSG_HDRLEN + NFGENMSG_LEN);
        assert_eq!(
            u16::from_ne_bytes([msg[4], msg[5]]),
            0x0101,
            "CTNETLINK, GET"
        );
        assert_eq!(
            u16::from_ne_bytes([msg[6], msg[7]]),
            0x301,
            "REQUEST | DUMP"
        );
        assert_eq!(u32::from_ne_bytes([msg[8], msg[9], msg[10], msg[11]]), 3);
        assert_eq!(msg[NLMSG_HDRLEN], 10, "AF_INET6");
    }

    #[test]
    fn an_entry_without_ports_or_reply_tuple_is_not_an_entry() {
        let icmp = ConntrackMessage::New(vec![ConntrackAttribute::CtaTupleOrig(vec![
            Tuple::Ip(vec![
                IPTuple::SourceAddress(ip("198.18.0.1")),
                IPTuple::DestinationAddress(ip("198.18.0.2")),
            ]),
            Tuple::Proto(vec![ProtoTuple::Protocol(Protocol::Icmp)]),
        ])]);
        let message = netfilter(Family::V4, icmp);
        assert_eq!(entry_of(&message), None, "ICMP: no ports");
        let dumped = as_dumped(Family::V4, &udp("198.18.0.1", "198.18.0.2"));
        assert_eq!(
            parse_entry(&dumped[..dumped.len() / 2]),
            None,
            "no reply tuple"
        );
        assert_eq!(parse_entry(&dumped[..dumped.len() - 3]), None, "truncated");
    }

    #[test]
    fn a_malformed_attribute_is_a_decode_error_naming_it() {
        let mut payload = frame(
            delete_message(Family::V4, &udp("198.18.0.1", "198.18.0.2")),
            0,
            0,
        )[NLMSG_HDRLEN..]
            .to_vec();
        // CTA_PROTO_SRC_PORT (at its header's length field) one byte short of a u16.
        let at = payload
            .windows(4)
            .position(|w| w == [6, 0, 2, 0])
            .expect("CTA_PROTO_SRC_PORT");
        payload[at] = 5;
        let error = parse_message(0x0102, &payload).expect_err("a 1-byte port");
        assert!(
            format!("{error:?}").contains("CTA_PROTO_SRC_PORT"),
            "{error:?}"
        );
    }
}
