//! ctnetlink messages, hand-written: no rust-netlink crate covers ctnetlink. Constants keep
//! their names from `include/uapi/linux/netfilter/nfnetlink.h`,
//! `include/uapi/linux/netfilter/nfnetlink_conntrack.h` and `include/uapi/linux/netlink.h`.
//! Integers in headers are host order; ports in tuples are network order (`nla_put_be16`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::{Entry, Family};

// include/uapi/linux/netfilter/nfnetlink.h, nfnetlink_conntrack.h, linux/netlink.h
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
pub(crate) const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
pub(crate) const NLMSG_HDRLEN: usize = 16;
pub(crate) const NFGENMSG_LEN: usize = 4;

fn af(family: Family) -> u8 {
    match family {
        Family::V4 => AF_INET,
        Family::V6 => AF_INET6,
    }
}

pub(crate) fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn put_attr(buf: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = u16::try_from(4 + value.len()).unwrap_or(u16::MAX);
    buf.extend_from_slice(&len.to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(value);
    buf.resize(align4(buf.len()), 0);
}

fn put_nested(buf: &mut Vec<u8>, kind: u16, inner: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend_from_slice(&[0, 0]);
    buf.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
    inner(buf);
    let len = u16::try_from(buf.len() - start).unwrap_or(u16::MAX);
    buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
}

fn ip_bytes(addr: IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// A ctnetlink request: header, nfgenmsg, attributes.
fn message(family: Family, msg: u16, flags: u16, seq: u32, attrs: &[u8]) -> Vec<u8> {
    let len = NLMSG_HDRLEN + NFGENMSG_LEN + attrs.len();
    let mut buf = Vec::with_capacity(len);
    buf.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_ne_bytes());
    buf.extend_from_slice(&((NFNL_SUBSYS_CTNETLINK << 8) | msg).to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
    // nfgenmsg: family, version (NFNETLINK_V0), res_id (big endian).
    buf.extend_from_slice(&[af(family), 0, 0, 0]);
    buf.extend_from_slice(attrs);
    buf
}

/// `IPCTNL_MSG_CT_GET` with `NLM_F_DUMP`: every entry of the family.
pub fn encode_dump(family: Family, seq: u32) -> Vec<u8> {
    message(
        family,
        IPCTNL_MSG_CT_GET,
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        &[],
    )
}

/// `IPCTNL_MSG_CT_DELETE` of one entry by its original tuple, with an ACK.
pub fn encode_delete(family: Family, entry: &Entry, seq: u32) -> Vec<u8> {
    let (src_kind, dst_kind) = match family {
        Family::V4 => (CTA_IP_V4_SRC, CTA_IP_V4_DST),
        Family::V6 => (CTA_IP_V6_SRC, CTA_IP_V6_DST),
    };
    let mut attrs = Vec::new();
    put_nested(&mut attrs, CTA_TUPLE_ORIG, |b| {
        put_nested(b, CTA_TUPLE_IP, |b| {
            put_attr(b, src_kind, &ip_bytes(entry.src));
            put_attr(b, dst_kind, &ip_bytes(entry.dst));
        });
        put_nested(b, CTA_TUPLE_PROTO, |b| {
            put_attr(b, CTA_PROTO_NUM, &[entry.proto]);
            put_attr(b, CTA_PROTO_SRC_PORT, &entry.sport.to_be_bytes());
            put_attr(b, CTA_PROTO_DST_PORT, &entry.dport.to_be_bytes());
        });
    });
    message(
        family,
        IPCTNL_MSG_CT_DELETE,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        &attrs,
    )
}

/// Attributes in `buf`: (type without flags, value).
fn attrs(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([buf[0], buf[1]]));
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > buf.len() {
            return None;
        }
        let value = &buf[4..len];
        buf = &buf[align4(len).min(buf.len())..];
        Some((kind, value))
    })
}

fn parse_ip(value: &[u8]) -> Option<IpAddr> {
    match value.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::new(
            value[0], value[1], value[2], value[3],
        ))),
        16 => {
            let octets: [u8; 16] = value.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(octets)))
        }
        _ => None,
    }
}

struct Tuple {
    src: Option<IpAddr>,
    dst: Option<IpAddr>,
    proto: Option<u8>,
    sport: Option<u16>,
    dport: Option<u16>,
}

fn parse_tuple(value: &[u8]) -> Tuple {
    let mut t = Tuple {
        src: None,
        dst: None,
        proto: None,
        sport: None,
        dport: None,
    };
    for (kind, v) in attrs(value) {
        match kind {
            CTA_TUPLE_IP => {
                for (k, a) in attrs(v) {
                    match k {
                        CTA_IP_V4_SRC | CTA_IP_V6_SRC => t.src = parse_ip(a),
                        CTA_IP_V4_DST | CTA_IP_V6_DST => t.dst = parse_ip(a),
                        _ => {}
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for (k, a) in attrs(v) {
                    match (k, a) {
                        (CTA_PROTO_NUM, [n, ..]) => t.proto = Some(*n),
                        (CTA_PROTO_SRC_PORT, [a, b, ..]) => {
                            t.sport = Some(u16::from_be_bytes([*a, *b]))
                        }
                        (CTA_PROTO_DST_PORT, [a, b, ..]) => {
                            t.dport = Some(u16::from_be_bytes([*a, *b]))
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    t
}

/// Parses one conntrack message's attributes (after nfgenmsg) into an [`Entry`]; `None` for
/// entries without ports (ICMP...).
pub fn parse_entry(attributes: &[u8]) -> Option<Entry> {
    let mut orig = None;
    let mut reply = None;
    for (kind, value) in attrs(attributes) {
        match kind {
            CTA_TUPLE_ORIG => orig = Some(parse_tuple(value)),
            CTA_TUPLE_REPLY => reply = Some(parse_tuple(value)),
            _ => {}
        }
    }
    let (orig, reply) = (orig?, reply?);
    Some(Entry {
        proto: orig.proto?,
        src: orig.src?,
        dst: orig.dst?,
        sport: orig.sport?,
        dport: orig.dport?,
        reply_src: reply.src?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::IPPROTO_UDP;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    /// The delete request's original tuple, re-used as a reply tuple, parses back to the entry
    /// (with the copied source as reply source).
    fn round_trip(family: Family, entry: Entry) {
        let msg = encode_delete(family, &entry, 7);
        assert_eq!(msg.len() % 4, 0);
        assert_eq!(
            u32::from_ne_bytes([msg[0], msg[1], msg[2], msg[3]]) as usize,
            msg.len()
        );
        assert_eq!(
            u16::from_ne_bytes([msg[4], msg[5]]),
            0x0102,
            "CTNETLINK, DELETE"
        );
        assert_eq!(msg[NLMSG_HDRLEN], af(family), "nfgenmsg family");
        let body = &msg[NLMSG_HDRLEN + NFGENMSG_LEN..];
        let mut with_reply = body.to_vec();
        let mut reply = body.to_vec();
        reply[2..4].copy_from_slice(&(CTA_TUPLE_REPLY | NLA_F_NESTED).to_ne_bytes());
        with_reply.extend_from_slice(&reply);
        let want = Entry {
            reply_src: entry.src,
            ..entry
        };
        assert_eq!(parse_entry(&with_reply), Some(want));
    }

    #[test]
    fn delete_message_round_trips_through_the_parser() {
        round_trip(
            Family::V4,
            Entry {
                proto: IPPROTO_UDP,
                src: ip("198.18.200.1"),
                dst: ip("198.19.0.53"),
                sport: 40000,
                dport: 53,
                reply_src: ip("198.19.0.53"),
            },
        );
    }

    #[test]
    fn ipv6_delete_message_round_trips_through_the_parser() {
        round_trip(
            Family::V6,
            Entry {
                proto: IPPROTO_UDP,
                src: ip("2001:db8::1"),
                dst: ip("2001:db8::53"),
                sport: 40001,
                dport: 5353,
                reply_src: ip("2001:db8::53"),
            },
        );
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
            NLM_F_REQUEST | NLM_F_DUMP
        );
        assert_eq!(u32::from_ne_bytes([msg[8], msg[9], msg[10], msg[11]]), 3);
        assert_eq!(msg[NLMSG_HDRLEN], AF_INET6);
    }

    #[test]
    fn an_entry_without_ports_or_reply_tuple_is_skipped() {
        let mut attrs = Vec::new();
        put_nested(&mut attrs, CTA_TUPLE_ORIG, |b| {
            put_nested(b, CTA_TUPLE_IP, |b| {
                put_attr(b, CTA_IP_V4_SRC, &[198, 18, 0, 1]);
                put_attr(b, CTA_IP_V4_DST, &[198, 18, 0, 2]);
            });
            put_nested(b, CTA_TUPLE_PROTO, |b| put_attr(b, CTA_PROTO_NUM, &[1]));
        });
        assert_eq!(parse_entry(&attrs), None, "ICMP: no ports");
        assert_eq!(parse_entry(&attrs[..attrs.len() - 3]), None, "truncated");
    }
}
