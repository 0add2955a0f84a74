//! Service commands and the service dump.

use std::net::IpAddr;

use super::{assert_round_trip, emit, parse, parse_without_stats};
use crate::{
    model::{SchedFlags, Scheduler, VirtualServer},
    netlink::{
        AddressFamily, Counter, InetAddr, IpProtocol, IpvsAttr, IpvsCmd, IpvsMessage, ServiceAttr,
        ServiceFlags, StatsAttr,
    },
};
use proxy_core::Protocol;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address literal")
}

// ipvsadm -A -t 198.18.0.10:80 -s rr
#[rustfmt::skip]
static NEW_SERVICE_TCP_RR: [u8; 88] = [
    0x01, 0x01, 0x00, 0x00, // genlmsghdr: cmd IPVS_CMD_NEW_SERVICE, version 1
    0x54, 0x00, 0x01, 0x80, // len 84, IPVS_CMD_ATTR_SERVICE | NLA_F_NESTED
    0x06, 0x00, 0x01, 0x00, //   len 6, IPVS_SVC_ATTR_AF
    0x02, 0x00, 0x00, 0x00, //   AF_INET, 2 bytes padding
    0x06, 0x00, 0x02, 0x00, //   len 6, IPVS_SVC_ATTR_PROTOCOL
    0x06, 0x00, 0x00, 0x00, //   IPPROTO_TCP, padding
    0x14, 0x00, 0x03, 0x00, //   len 20, IPVS_SVC_ATTR_ADDR (union nf_inet_addr)
    0xc6, 0x12, 0x00, 0x0a, //   198.18.0.10
    0x00, 0x00, 0x00, 0x00, //   rest of the union, zero for IPv4
    0x00, 0x00, 0x00, 0x00, //
    0x00, 0x00, 0x00, 0x00, //
    0x06, 0x00, 0x04, 0x00, //   len 6, IPVS_SVC_ATTR_PORT
    0x00, 0x50, 0x00, 0x00, //   80, network byte order; padding
    0x07, 0x00, 0x06, 0x00, //   len 7, IPVS_SVC_ATTR_SCHED_NAME
    b'r', b'r', 0x00, 0x00, //   "rr\0", padding
    0x0c, 0x00, 0x07, 0x00, //   len 12, IPVS_SVC_ATTR_FLAGS (struct ip_vs_flags)
    0x00, 0x00, 0x00, 0x00, //   flags: none
    0xff, 0xff, 0xff, 0xff, //   mask: all bits
    0x08, 0x00, 0x08, 0x00, //   len 8, IPVS_SVC_ATTR_TIMEOUT
    0x00, 0x00, 0x00, 0x00, //   0 s (not persistent)
    0x08, 0x00, 0x09, 0x00, //   len 8, IPVS_SVC_ATTR_NETMASK
    0xff, 0xff, 0xff, 0xff, //   255.255.255.255
];

fn tcp_rr_attrs(flags: u32) -> Vec<ServiceAttr> {
    vec![
        ServiceAttr::Af(AddressFamily::Inet),
        ServiceAttr::Protocol(IpProtocol::Tcp),
        ServiceAttr::Address(InetAddr::from(ip("198.18.0.10"))),
        ServiceAttr::Port(80),
        ServiceAttr::SchedName("rr".into()),
        ServiceAttr::Flags(ServiceFlags {
            flags,
            mask: u32::MAX,
        }),
        ServiceAttr::Timeout(0),
        ServiceAttr::Netmask(0xffff_ffff),
    ]
}

#[test]
fn new_service_tcp_rr() {
    let expected = IpvsMessage::new(
        IpvsCmd::NewService,
        vec![IpvsAttr::Service(tcp_rr_attrs(0))],
    );
    assert_round_trip(&NEW_SERVICE_TCP_RR, &expected, false);
}

#[test]
fn virtual_server_emits_what_ipvsadm_sends() {
    let vs = VirtualServer::new(ip("198.18.0.10"), Protocol::Tcp, 80, Scheduler::RoundRobin);
    let msg = IpvsMessage::new(
        IpvsCmd::NewService,
        vec![IpvsAttr::Service(vs.to_attrs().expect("valid netmask"))],
    );
    assert_eq!(emit(&msg), NEW_SERVICE_TCP_RR);
}

// ipvsadm -A -u [2001:db8::10]:53 -s mh -b flag-1,flag-2
#[rustfmt::skip]
static NEW_SERVICE_UDP6_MH: [u8; 88] = [
    0x01, 0x01, 0x00, 0x00, // genlmsghdr: cmd IPVS_CMD_NEW_SERVICE, version 1
    0x54, 0x00, 0x01, 0x80, // len 84, IPVS_CMD_ATTR_SERVICE | NLA_F_NESTED
    0x06, 0x00, 0x01, 0x00, //   len 6, IPVS_SVC_ATTR_AF
    0x0a, 0x00, 0x00, 0x00, //   AF_INET6, padding
    0x06, 0x00, 0x02, 0x00, //   len 6, IPVS_SVC_ATTR_PROTOCOL
    0x11, 0x00, 0x00, 0x00, //   IPPROTO_UDP, padding
    0x14, 0x00, 0x03, 0x00, //   len 20, IPVS_SVC_ATTR_ADDR
    0x20, 0x01, 0x0d, 0xb8, //   2001:db8:
    0x00, 0x00, 0x00, 0x00, //   :
    0x00, 0x00, 0x00, 0x00, //   :
    0x00, 0x00, 0x00, 0x10, //   :10
    0x06, 0x00, 0x04, 0x00, //   len 6, IPVS_SVC_ATTR_PORT
    0x00, 0x35, 0x00, 0x00, //   53, network byte order; padding
    0x07, 0x00, 0x06, 0x00, //   len 7, IPVS_SVC_ATTR_SCHED_NAME
    b'm', b'h', 0x00, 0x00, //   "mh\0", padding
    0x0c, 0x00, 0x07, 0x00, //   len 12, IPVS_SVC_ATTR_FLAGS
    0x18, 0x00, 0x00, 0x00, //   IP_VS_SVC_F_SCHED1 | IP_VS_SVC_F_SCHED2 (mh-fallback, mh-port)
    0xff, 0xff, 0xff, 0xff, //   mask: all bits
    0x08, 0x00, 0x08, 0x00, //   len 8, IPVS_SVC_ATTR_TIMEOUT
    0x00, 0x00, 0x00, 0x00, //   0 s
    0x08, 0x00, 0x09, 0x00, //   len 8, IPVS_SVC_ATTR_NETMASK
    0x80, 0x00, 0x00, 0x00, //   prefix length 128 as a host-order u32 (the IPv6 trap)
];

#[test]
fn new_service_udp6_mh_with_flags() {
    let expected = IpvsMessage::new(
        IpvsCmd::NewService,
        vec![IpvsAttr::Service(vec![
            ServiceAttr::Af(AddressFamily::Inet6),
            ServiceAttr::Protocol(IpProtocol::Udp),
            ServiceAttr::Address(InetAddr::from(ip("2001:db8::10"))),
            ServiceAttr::Port(53),
            ServiceAttr::SchedName("mh".into()),
            ServiceAttr::Flags(ServiceFlags {
                flags: 0x18,
                mask: u32::MAX,
            }),
            ServiceAttr::Timeout(0),
            ServiceAttr::Netmask(0x8000_0000),
        ])],
    );
    assert_round_trip(&NEW_SERVICE_UDP6_MH, &expected, false);

    let IpvsAttr::Service(attrs) = &expected.attrs[0] else {
        unreachable!("built above")
    };
    let vs = VirtualServer::try_from(attrs.as_slice()).expect("model");
    assert_eq!(
        vs,
        VirtualServer {
            sched_flags: SchedFlags {
                flag1: true,
                flag2: true,
                flag3: false
            },
            ..VirtualServer::new(ip("2001:db8::10"), Protocol::Udp, 53, Scheduler::Maglev)
        }
    );
    assert_eq!(vs.netmask, 128);
    assert_eq!(
        vs.to_attrs().expect("valid"),
        *attrs,
        "model writes ipvsadm's attributes back"
    );
}

// ipvsadm -A -t 198.18.0.11:443 -s wlc -p 600
#[rustfmt::skip]
static NEW_SERVICE_PERSISTENT: [u8; 88] = [
    0x01, 0x01, 0x00, 0x00, // genlmsghdr: cmd IPVS_CMD_NEW_SERVICE, version 1
    0x54, 0x00, 0x01, 0x80, // len 84, IPVS_CMD_ATTR_SERVICE | NLA_F_NESTED
    0x06, 0x00, 0x01, 0x00, //   len 6, IPVS_SVC_ATTR_AF
    0x02, 0x00, 0x00, 0x00, //   AF_INET, padding
    0x06, 0x00, 0x02, 0x00, //   len 6, IPVS_SVC_ATTR_PROTOCOL
    0x06, 0x00, 0x00, 0x00, //   IPPROTO_TCP, padding
    0x14, 0x00, 0x03, 0x00, //   len 20, IPVS_SVC_ATTR_ADDR
    0xc6, 0x12, 0x00, 0x0b, //   198.18.0.11
    0x00, 0x00, 0x00, 0x00, //   rest of the union
    0x00, 0x00, 0x00, 0x00, //
    0x00, 0x00, 0x00, 0x00, //
    0x06, 0x00, 0x04, 0x00, //   len 6, IPVS_SVC_ATTR_PORT
    0x01, 0xbb, 0x00, 0x00, //   443, network byte order; padding
    0x08, 0x00, 0x06, 0x00, //   len 8, IPVS_SVC_ATTR_SCHED_NAME
    b'w', b'l', b'c', 0x00, //   "wlc\0"
    0x0c, 0x00, 0x07, 0x00, //   len 12, IPVS_SVC_ATTR_FLAGS
    0x01, 0x00, 0x00, 0x00, //   IP_VS_SVC_F_PERSISTENT
    0xff, 0xff, 0xff, 0xff, //   mask: all bits
    0x08, 0x00, 0x08, 0x00, //   len 8, IPVS_SVC_ATTR_TIMEOUT
    0x58, 0x02, 0x00, 0x00, //   600 s
    0x08, 0x00, 0x09, 0x00, //   len 8, IPVS_SVC_ATTR_NETMASK
    0xff, 0xff, 0xff, 0xff, //   255.255.255.255
];

#[test]
fn new_service_persistent() {
    let vs = VirtualServer {
        persistence: Some(std::time::Duration::from_secs(600)),
        ..VirtualServer::new(
            ip("198.18.0.11"),
            Protocol::Tcp,
            443,
            Scheduler::WeightedLeastConnection,
        )
    };
    let expected = IpvsMessage::new(
        IpvsCmd::NewService,
        vec![IpvsAttr::Service(vs.to_attrs().expect("valid"))],
    );
    assert_round_trip(&NEW_SERVICE_PERSISTENT, &expected, false);
}

// ipvsadm -D -t 198.18.0.10:80: ipvsadm sends the whole service with an empty scheduler; our
// client sends only the key attributes, which the kernel also accepts (see the VM tests).
#[rustfmt::skip]
static DEL_SERVICE: [u8; 88] = [
    0x03, 0x01, 0x00, 0x00, // genlmsghdr: cmd IPVS_CMD_DEL_SERVICE, version 1
    0x54, 0x00, 0x01, 0x80, // len 84, IPVS_CMD_ATTR_SERVICE | NLA_F_NESTED
    0x06, 0x00, 0x01, 0x00, //   len 6, IPVS_SVC_ATTR_AF
    0x02, 0x00, 0x00, 0x00, //   AF_INET, padding
    0x06, 0x00, 0x02, 0x00, //   len 6, IPVS_SVC_ATTR_PROTOCOL
    0x06, 0x00, 0x00, 0x00, //   IPPROTO_TCP, padding
    0x14, 0x00, 0x03, 0x00, //   len 20, IPVS_SVC_ATTR_ADDR
    0xc6, 0x12, 0x00, 0x0a, //   198.18.0.10
    0x00, 0x00, 0x00, 0x00, //   rest of the union
    0x00, 0x00, 0x00, 0x00, //
    0x00, 0x00, 0x00, 0x00, //
    0x06, 0x00, 0x04, 0x00, //   len 6, IPVS_SVC_ATTR_PORT
    0x00, 0x50, 0x00, 0x00, //   80; padding
    0x05, 0x00, 0x06, 0x00, //   len 5, IPVS_SVC_ATTR_SCHED_NAME
    0x00, 0x00, 0x00, 0x00, //   "\0", padding
    0x0c, 0x00, 0x07, 0x00, //   len 12, IPVS_SVC_ATTR_FLAGS
    0x00, 0x00, 0x00, 0x00, //   flags: none
    0xff, 0xff, 0xff, 0xff, //   mask: all bits
    0x08, 0x00, 0x08, 0x00, //   len 8, IPVS_SVC_ATTR_TIMEOUT
    0x00, 0x00, 0x00, 0x00, //   0 s
    0x08, 0x00, 0x09, 0x00, //   len 8, IPVS_SVC_ATTR_NETMASK
    0xff, 0xff, 0xff, 0xff, //   255.255.255.255
];

#[test]
fn del_service_as_ipvsadm_sends_it() {
    let mut attrs = tcp_rr_attrs(0);
    attrs[4] = ServiceAttr::SchedName(String::new());
    let expected = IpvsMessage::new(IpvsCmd::DelService, vec![IpvsAttr::Service(attrs)]);
    assert_round_trip(&DEL_SERVICE, &expected, false);
}

/// `IPVS_SVC_ATTR_STATS` as the kernel dumps it for an idle service: u32 counters, u64 bytes.
#[rustfmt::skip]
pub(super) static ZERO_STATS: [u8; 92] = [
    0x5c, 0x00, 0x0a, 0x00, // len 92, IPVS_SVC_ATTR_STATS (== IPVS_DEST_ATTR_STATS), no NLA_F_NESTED
    0x08, 0x00, 0x01, 0x00, //   len 8, IPVS_STATS_ATTR_CONNS
    0x00, 0x00, 0x00, 0x00, //   0 (u32)
    0x08, 0x00, 0x02, 0x00, //   len 8, IPVS_STATS_ATTR_INPKTS
    0x00, 0x00, 0x00, 0x00, //   0 (u32)
    0x08, 0x00, 0x03, 0x00, //   len 8, IPVS_STATS_ATTR_OUTPKTS
    0x00, 0x00, 0x00, 0x00, //   0 (u32)
    0x0c, 0x00, 0x04, 0x00, //   len 12, IPVS_STATS_ATTR_INBYTES
    0x00, 0x00, 0x00, 0x00, //   0 (u64)
    0x00, 0x00, 0x00, 0x00, //
    0x0c, 0x00, 0x05, 0x00, //   len 12, IPVS_STATS_ATTR_OUTBYTES
    0x00, 0x00, 0x00, 0x00, //   0 (u64)
    0x00, 0x00, 0x00, 0x00, //
    0x08, 0x00, 0x06, 0x00, //   len 8, IPVS_STATS_ATTR_CPS
    0x00, 0x00, 0x00, 0x00, //   0 (u32)
    0x08, 0x00, 0x07, 0x00, //   len 8, IPVS_STATS_ATTR_INPPS
    0x00, 0x00, 0x00, 0x00, //   0 (u32)
    0x08, 0x00, 0x08, 0x00, //   len 8, IPVS_STATS_ATTR_OUTPPS
    0x00, 0x00, 0x00, 0x00, //   0 (u32)
    0x08, 0x00, 0x09, 0x00, //   len 8, IPVS_STATS_ATTR_INBPS
    0x00, 0x00, 0x00, 0x00, //   0 (u32)
    0x08, 0x00, 0x0a, 0x00, //   len 8, IPVS_STATS_ATTR_OUTBPS
    0x00, 0x00, 0x00, 0x00, //   0 (u32)
];

/// `IPVS_SVC_ATTR_STATS64` for an idle service: the same counters, all u64.
#[rustfmt::skip]
pub(super) static ZERO_STATS64: [u8; 124] = [
    0x7c, 0x00, 0x0c, 0x00, // len 124, IPVS_SVC_ATTR_STATS64 (== IPVS_DEST_ATTR_STATS64)
    0x0c, 0x00, 0x01, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, //   IPVS_STATS_ATTR_CONNS: 0
    0x0c, 0x00, 0x02, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, //   IPVS_STATS_ATTR_INPKTS: 0
    0x0c, 0x00, 0x03, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, //   IPVS_STATS_ATTR_OUTPKTS: 0
    0x0c, 0x00, 0x04, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, //   IPVS_STATS_ATTR_INBYTES: 0
    0x0c, 0x00, 0x05, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, //   IPVS_STATS_ATTR_OUTBYTES: 0
    0x0c, 0x00, 0x06, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, //   IPVS_STATS_ATTR_CPS: 0
    0x0c, 0x00, 0x07, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, //   IPVS_STATS_ATTR_INPPS: 0
    0x0c, 0x00, 0x08, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, //   IPVS_STATS_ATTR_OUTPPS: 0
    0x0c, 0x00, 0x09, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, //   IPVS_STATS_ATTR_INBPS: 0
    0x0c, 0x00, 0x0a, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, //   IPVS_STATS_ATTR_OUTBPS: 0
];

pub(super) fn zero_stats() -> Vec<StatsAttr> {
    let z = Counter::U32(0);
    let zz = Counter::U64(0);
    vec![
        StatsAttr::Conns(z),
        StatsAttr::InPkts(z),
        StatsAttr::OutPkts(z),
        StatsAttr::InBytes(zz),
        StatsAttr::OutBytes(zz),
        StatsAttr::Cps(z),
        StatsAttr::InPps(z),
        StatsAttr::OutPps(z),
        StatsAttr::InBps(z),
        StatsAttr::OutBps(z),
    ]
}

pub(super) fn zero_stats64() -> Vec<StatsAttr> {
    let zz = Counter::U64(0);
    vec![
        StatsAttr::Conns(zz),
        StatsAttr::InPkts(zz),
        StatsAttr::OutPkts(zz),
        StatsAttr::InBytes(zz),
        StatsAttr::OutBytes(zz),
        StatsAttr::Cps(zz),
        StatsAttr::InPps(zz),
        StatsAttr::OutPps(zz),
        StatsAttr::InBps(zz),
        StatsAttr::OutBps(zz),
    ]
}

// ipvsadm -Ln, after the commands above: one message of the multipart IPVS_CMD_GET_SERVICE
// dump (request: genlmsghdr 04 01 00 00, NLM_F_DUMP), the one for TCP 198.18.0.10:80 rr.
#[rustfmt::skip]
static DUMPED_SERVICE_HEAD: [u8; 88] = [
    0x01, 0x01, 0x00, 0x00, // genlmsghdr: cmd IPVS_CMD_NEW_SERVICE (dump replies use it)
    0x2c, 0x01, 0x01, 0x00, // len 300, IPVS_CMD_ATTR_SERVICE, no NLA_F_NESTED (kernel)
    0x06, 0x00, 0x01, 0x00, //   len 6, IPVS_SVC_ATTR_AF
    0x02, 0x00, 0x00, 0x00, //   AF_INET, padding
    0x06, 0x00, 0x02, 0x00, //   len 6, IPVS_SVC_ATTR_PROTOCOL
    0x06, 0x00, 0x00, 0x00, //   IPPROTO_TCP, padding
    0x14, 0x00, 0x03, 0x00, //   len 20, IPVS_SVC_ATTR_ADDR
    0xc6, 0x12, 0x00, 0x0a, //   198.18.0.10
    0x00, 0x00, 0x00, 0x00, //   rest of the union
    0x00, 0x00, 0x00, 0x00, //
    0x00, 0x00, 0x00, 0x00, //
    0x06, 0x00, 0x04, 0x00, //   len 6, IPVS_SVC_ATTR_PORT
    0x00, 0x50, 0x00, 0x00, //   80; padding
    0x07, 0x00, 0x06, 0x00, //   len 7, IPVS_SVC_ATTR_SCHED_NAME
    b'r', b'r', 0x00, 0x00, //   "rr\0", padding
    0x0c, 0x00, 0x07, 0x00, //   len 12, IPVS_SVC_ATTR_FLAGS
    0x02, 0x00, 0x00, 0x00, //   IP_VS_SVC_F_HASHED (the kernel's own bit)
    0xff, 0xff, 0xff, 0xff, //   mask: all bits
    0x08, 0x00, 0x08, 0x00, //   len 8, IPVS_SVC_ATTR_TIMEOUT
    0x00, 0x00, 0x00, 0x00, //   0 s
    0x08, 0x00, 0x09, 0x00, //   len 8, IPVS_SVC_ATTR_NETMASK
    0xff, 0xff, 0xff, 0xff, //   255.255.255.255
    // ... followed by ZERO_STATS and ZERO_STATS64
];

#[test]
fn dumped_service_with_stats() {
    let raw = [&DUMPED_SERVICE_HEAD[..], &ZERO_STATS[..], &ZERO_STATS64[..]].concat();
    let mut attrs = tcp_rr_attrs(0x2);
    let without_stats = attrs.clone();
    attrs.push(ServiceAttr::Stats(zero_stats()));
    attrs.push(ServiceAttr::Stats64(zero_stats64()));
    let expected = IpvsMessage::new(IpvsCmd::NewService, vec![IpvsAttr::Service(attrs)]);
    assert_round_trip(&raw, &expected, true);
    // As a dump reads it: every attribute but the two statistics nests.
    assert_eq!(
        parse_without_stats(&raw),
        IpvsMessage::new(IpvsCmd::NewService, vec![IpvsAttr::Service(without_stats)])
    );

    // The model ignores the kernel's IP_VS_SVC_F_HASHED and the stats.
    let parsed = parse(&raw);
    let IpvsAttr::Service(attrs) = &parsed.attrs[0] else {
        panic!("not a service: {parsed:?}")
    };
    assert_eq!(
        VirtualServer::try_from(attrs.as_slice()).expect("model"),
        VirtualServer::new(ip("198.18.0.10"), Protocol::Tcp, 80, Scheduler::RoundRobin)
    );
}
