//! Stale UDP conntrack entries: kube-proxy's well-known UDP blackhole. A UDP "connection" tracked
//! to an endpoint that went away (or tracked un-NATed while a service had no endpoint) keeps
//! matching its conntrack entry, so DNAT is never re-evaluated and the client's packets vanish.
//! After each successful sync we delete exactly those entries, as kube-proxy does in
//! `pkg/proxy/conntrack/cleanup.go`:
//!
//! - a service port that gains its first usable endpoint: entries to each of its addresses and
//!   port (and to its node port on any address), which were created un-NATed;
//! - an endpoint that is no longer used (removed, or no longer ready/serving), or a removed
//!   service port: entries to the service's addresses that were DNATed to that endpoint.
//!
//! [`plan_conntrack`] is pure; [`flush_stale`] dumps the table once per family through a
//! [`ConntrackOps`] and deletes each matching entry by its original tuple. [`Netlink`] is the real
//! implementation: ctnetlink messages hand-written over `netlink-sys` (no rust-netlink crate covers
//! ctnetlink), constants named as in `include/uapi/linux/netfilter/nfnetlink_conntrack.h`.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proxy_core::select::select_endpoints;
use proxy_core::{ChangeSet, Protocol, ServicePort};

use crate::rules::Family;

/// What to delete (UDP only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Flush {
    /// Un-NATed entries to `addr:port` (created while the service had no endpoint).
    ToServiceAddr {
        /// A cluster, external or load-balancer IP.
        addr: IpAddr,
        /// The service port.
        port: u16,
    },
    /// Un-NATed entries to any address on node port `port` (no endpoint before).
    ToNodePort {
        /// The node port.
        port: u16,
    },
    /// Entries to `addr:port` DNATed to `endpoint`.
    ToEndpointVia {
        /// A cluster, external or load-balancer IP.
        addr: IpAddr,
        /// The service port.
        port: u16,
        /// The endpoint that is gone.
        endpoint: IpAddr,
    },
    /// Entries to node port `port` DNATed to `endpoint`.
    ToEndpointViaNodePort {
        /// The node port.
        port: u16,
        /// The endpoint that is gone.
        endpoint: IpAddr,
    },
}

/// One conntrack entry, as much as we match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Entry {
    /// IP protocol number (17 for UDP).
    pub proto: u8,
    /// Original source.
    pub src: IpAddr,
    /// Original destination (the service address).
    pub dst: IpAddr,
    /// Original source port.
    pub sport: u16,
    /// Original destination port.
    pub dport: u16,
    /// Reply source: the endpoint, when DNATed; else `dst`.
    pub reply_src: IpAddr,
}

const IPPROTO_UDP: u8 = 17;

impl Flush {
    /// Whether `entry` is one this flush deletes.
    pub fn matches(&self, e: &Entry) -> bool {
        if e.proto != IPPROTO_UDP {
            return false;
        }
        match *self {
            // Only un-NATed entries (reply from the address itself): DNATed ones are correct.
            Flush::ToServiceAddr { addr, port } => {
                e.dst == addr && e.dport == port && e.reply_src == e.dst
            }
            Flush::ToNodePort { port } => e.dport == port && e.reply_src == e.dst,
            Flush::ToEndpointVia {
                addr,
                port,
                endpoint,
            } => e.dst == addr && e.dport == port && e.reply_src == endpoint,
            Flush::ToEndpointViaNodePort { port, endpoint } => {
                e.dport == port && e.reply_src == endpoint
            }
        }
    }

    fn family(&self) -> Option<Family> {
        match self {
            Flush::ToServiceAddr { addr, .. } | Flush::ToEndpointVia { addr, .. } => {
                Some(Family::of(*addr))
            }
            Flush::ToEndpointViaNodePort { endpoint, .. } => Some(Family::of(*endpoint)),
            Flush::ToNodePort { .. } => None,
        }
    }
}

/// The endpoint addresses a port's traffic may use.
fn used(port: &ServicePort) -> BTreeSet<IpAddr> {
    select_endpoints(port)
        .all_reachable
        .iter()
        .map(|e| e.addr)
        .collect()
}

fn lost(previous: &ServicePort, gone: &BTreeSet<IpAddr>, out: &mut BTreeSet<Flush>) {
    for &endpoint in gone {
        for addr in previous.service_ips() {
            out.insert(Flush::ToEndpointVia {
                addr,
                port: previous.port,
                endpoint,
            });
        }
        if let Some(port) = previous.node_port {
            out.insert(Flush::ToEndpointViaNodePort { port, endpoint });
        }
    }
}

/// What a sync that applied `changes` must delete. Pure.
pub fn plan_conntrack(changes: &ChangeSet) -> Vec<Flush> {
    let mut out = BTreeSet::new();
    for port in changes
        .removed
        .iter()
        .filter(|p| p.protocol == Protocol::Udp)
    {
        lost(port, &used(port), &mut out);
    }
    for change in &changes.changed {
        let (previous, current) = (&change.previous, &change.current);
        if previous.protocol != Protocol::Udp && current.protocol != Protocol::Udp {
            continue;
        }
        let before = used(previous);
        let after = if current.protocol == Protocol::Udp {
            used(current)
        } else {
            BTreeSet::new()
        };
        if previous.protocol == Protocol::Udp {
            let gone: BTreeSet<IpAddr> = before.difference(&after).copied().collect();
            lost(previous, &gone, &mut out);
        }
        if before.is_empty() && !after.is_empty() {
            for addr in current.service_ips() {
                out.insert(Flush::ToServiceAddr {
                    addr,
                    port: current.port,
                });
            }
            if let Some(port) = current.node_port {
                out.insert(Flush::ToNodePort { port });
            }
        }
    }
    for port in changes.added.iter().filter(|p| p.protocol == Protocol::Udp) {
        // A new service may take over addresses that had un-NATed entries.
        if !used(port).is_empty() {
            for addr in port.service_ips() {
                out.insert(Flush::ToServiceAddr {
                    addr,
                    port: port.port,
                });
            }
        }
    }
    out.into_iter().collect()
}

/// A conntrack failure: the operation and the OS error.
#[derive(Debug, thiserror::Error)]
#[error("conntrack {op} ({family}): {source}")]
pub struct ConntrackError {
    /// `dump` or `delete`.
    pub op: &'static str,
    /// Address family.
    pub family: Family,
    /// The OS or protocol error.
    #[source]
    pub source: std::io::Error,
}

/// Dumps and deletes conntrack entries.
pub trait ConntrackOps: Send + Sync + std::fmt::Debug {
    /// Every entry of `family`.
    ///
    /// # Errors
    /// [`ConntrackError`] if the dump failed.
    fn dump(&self, family: Family) -> Result<Vec<Entry>, ConntrackError>;
    /// Deletes one entry by its original tuple; an entry already gone is not an error.
    ///
    /// # Errors
    /// [`ConntrackError`] if the delete failed.
    fn delete(&self, family: Family, entry: &Entry) -> Result<(), ConntrackError>;
}

/// Deletes every entry matching one of `flushes`; returns how many. Blocking: call it off the
/// async runtime.
///
/// # Errors
/// The first [`ConntrackError`].
pub fn flush_stale(ops: &dyn ConntrackOps, flushes: &[Flush]) -> Result<usize, ConntrackError> {
    if flushes.is_empty() {
        return Ok(0);
    }
    let mut deleted = 0;
    for family in Family::ALL {
        let relevant: Vec<&Flush> = flushes
            .iter()
            .filter(|f| f.family().is_none_or(|ff| ff == family))
            .collect();
        if relevant.is_empty() {
            continue;
        }
        for entry in ops.dump(family)? {
            if relevant.iter().any(|f| f.matches(&entry)) {
                ops.delete(family, &entry)?;
                deleted += 1;
            }
        }
    }
    Ok(deleted)
}

// === ctnetlink ===

// include/uapi/linux/netfilter/nfnetlink.h, nfnetlink_conntrack.h, linux/netlink.h
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
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
const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;

fn af(family: Family) -> u8 {
    match family {
        Family::V4 => AF_INET,
        Family::V6 => AF_INET6,
    }
}

fn align4(n: usize) -> usize {
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

/// The real [`ConntrackOps`]: a ctnetlink socket per call, in the caller's network namespace.
#[derive(Debug, Default, Clone, Copy)]
pub struct Netlink;

fn io_error(op: &'static str, family: Family) -> impl Fn(std::io::Error) -> ConntrackError {
    move |source| ConntrackError { op, family, source }
}

impl Netlink {
    fn socket(op: &'static str, family: Family) -> Result<netlink_sys::Socket, ConntrackError> {
        let mut socket = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_NETFILTER)
            .map_err(io_error(op, family))?;
        socket.bind_auto().map_err(io_error(op, family))?;
        socket
            .connect(&netlink_sys::SocketAddr::new(0, 0))
            .map_err(io_error(op, family))?;
        Ok(socket)
    }

    /// Reads replies until DONE (dump) or an ACK/error (request); calls `each` per message body.
    fn receive(
        socket: &netlink_sys::Socket,
        op: &'static str,
        family: Family,
        mut each: impl FnMut(&[u8]),
    ) -> Result<(), ConntrackError> {
        loop {
            let (data, _) = socket.recv_from_full().map_err(io_error(op, family))?;
            let mut rest = data.as_slice();
            while rest.len() >= NLMSG_HDRLEN {
                let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                let kind = u16::from_ne_bytes([rest[4], rest[5]]);
                if len < NLMSG_HDRLEN || len > rest.len() {
                    break;
                }
                let body = &rest[NLMSG_HDRLEN..len];
                match kind {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let code = body
                            .get(..4)
                            .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                            .unwrap_or(0);
                        // 0 is the ACK; ENOENT: the entry expired meanwhile.
                        if code == 0 || code == -libc_enoent() {
                            return Ok(());
                        }
                        return Err(ConntrackError {
                            op,
                            family,
                            source: std::io::Error::from_raw_os_error(-code),
                        });
                    }
                    _ => each(body),
                }
                rest = &rest[align4(len).min(rest.len())..];
            }
        }
    }
}

const fn libc_enoent() -> i32 {
    2
}

impl ConntrackOps for Netlink {
    fn dump(&self, family: Family) -> Result<Vec<Entry>, ConntrackError> {
        let socket = Self::socket("dump", family)?;
        socket
            .send(&encode_dump(family, 1), 0)
            .map_err(io_error("dump", family))?;
        let mut entries = Vec::new();
        Self::receive(&socket, "dump", family, |body| {
            if let Some(e) = body.get(NFGENMSG_LEN..).and_then(parse_entry) {
                entries.push(e);
            }
        })?;
        Ok(entries)
    }

    fn delete(&self, family: Family, entry: &Entry) -> Result<(), ConntrackError> {
        let socket = Self::socket("delete", family)?;
        socket
            .send(&encode_delete(family, entry, 1), 0)
            .map_err(io_error("delete", family))?;
        Self::receive(&socket, "delete", family, |_| {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proxy_core::table::Endpoint;
    use proxy_core::{diff, ServicePortName, ServiceTable};

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn udp(endpoints: &[&str]) -> ServicePort {
        let mut p = ServicePort::new(ServicePortName::new("ns", "dns", "p"), Protocol::Udp, 53)
            .with_cluster_ip(ip("198.19.0.53"))
            .with_node_port(30053);
        for e in endpoints {
            p = p.with_endpoint(Endpoint::new(ip(e), 5353));
        }
        p
    }

    fn table(port: ServicePort) -> ServiceTable {
        ServiceTable::builder().insert(port).build().expect("valid")
    }

    #[test]
    fn a_removed_endpoint_flushes_entries_dnated_to_it() {
        let a = table(udp(&["198.18.1.1", "198.18.1.2"]));
        let b = table(udp(&["198.18.1.2"]));
        assert_eq!(
            plan_conntrack(&diff(&a, &b)),
            [
                Flush::ToEndpointVia {
                    addr: ip("198.19.0.53"),
                    port: 53,
                    endpoint: ip("198.18.1.1")
                },
                Flush::ToEndpointViaNodePort {
                    port: 30053,
                    endpoint: ip("198.18.1.1")
                },
            ]
        );
    }

    #[test]
    fn a_first_endpoint_flushes_un_natted_entries() {
        let a = table(udp(&[]));
        let b = table(udp(&["198.18.1.2"]));
        assert_eq!(
            plan_conntrack(&diff(&a, &b)),
            [
                Flush::ToServiceAddr {
                    addr: ip("198.19.0.53"),
                    port: 53
                },
                Flush::ToNodePort { port: 30053 },
            ]
        );
    }

    #[test]
    fn tcp_and_unchanged_endpoints_flush_nothing() {
        let mut tcp = udp(&["198.18.1.1"]);
        tcp.protocol = Protocol::Tcp;
        let a = table(tcp.clone());
        let b = table(ServicePort {
            endpoints: vec![],
            ..tcp
        });
        assert!(plan_conntrack(&diff(&a, &b)).is_empty());
        let same = table(udp(&["198.18.1.1"]));
        assert!(plan_conntrack(&diff(&same, &same)).is_empty());
    }

    #[test]
    fn delete_message_round_trips_through_the_parser() {
        let entry = Entry {
            proto: IPPROTO_UDP,
            src: ip("198.18.200.1"),
            dst: ip("198.19.0.53"),
            sport: 40000,
            dport: 53,
            reply_src: ip("198.19.0.53"),
        };
        let msg = encode_delete(Family::V4, &entry, 7);
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
        // Re-use the orig tuple as a reply tuple to feed the entry parser.
        let body = &msg[NLMSG_HDRLEN + NFGENMSG_LEN..];
        let mut with_reply = body.to_vec();
        let mut reply = body.to_vec();
        reply[2..4].copy_from_slice(&(CTA_TUPLE_REPLY | NLA_F_NESTED).to_ne_bytes());
        with_reply.extend_from_slice(&reply);
        // The copied tuple's source becomes the reply source.
        let want = Entry {
            reply_src: entry.src,
            ..entry
        };
        assert_eq!(parse_entry(&with_reply), Some(want));
    }
}
