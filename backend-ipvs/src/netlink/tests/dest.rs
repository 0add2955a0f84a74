//! Destination commands and the destination dump.

use std::net::IpAddr;

use super::{
    assert_round_trip, emit, parse, parse_without_stats,
    service::{zero_stats, zero_stats64, ZERO_STATS, ZERO_STATS64},
};
use crate::{
    model::{ConnCounts, RealServer, ServiceKey},
    netlink::{
        AddressFamily, DestAttr, ForwardMethod, InetAddr, IpProtocol, IpvsAttr, IpvsCmd,
        IpvsMessage, ServiceAttr, ServiceFlags,
    },
};
use proxy_core::Protocol;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address literal")
}

fn key_attrs() -> Vec<ServiceAttr> {
    vec![
        ServiceAttr::Af(AddressFamily::Inet),
        ServiceAttr::Protocol(IpProtocol::Tcp),
        ServiceAttr::Address(InetAddr::from(ip("198.18.0.10"))),
        ServiceAttr::Port(80),
    ]
}

/// The service part ipvsadm sends with every destination command: the key, then an empty
/// scheduler, no flags, no timeout, full netmask.
#[rustfmt::skip]
static IPVSADM_SERVICE: [u8; 84] = [
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

fn ipvsadm_service() -> IpvsAttr {
    let mut attrs = key_attrs();
    attrs.extend([
        ServiceAttr::SchedName(String::new()),
        ServiceAttr::Flags(ServiceFlags {
            flags: 0,
            mask: u32::MAX,
        }),
        ServiceAttr::Timeout(0),
        ServiceAttr::Netmask(0xffff_ffff),
    ]);
    IpvsAttr::Service(attrs)
}

/// ipvsadm's destination part, `weight` and `fwd` varying.
#[rustfmt::skip]
fn ipvsadm_dest(fwd: u8, weight: u8) -> [u8; 96] {
    [
        0x60, 0x00, 0x02, 0x80, // len 96, IPVS_CMD_ATTR_DEST | NLA_F_NESTED
        0x06, 0x00, 0x0b, 0x00, //   len 6, IPVS_DEST_ATTR_ADDR_FAMILY
        0x02, 0x00, 0x00, 0x00, //   AF_INET, padding
        0x14, 0x00, 0x01, 0x00, //   len 20, IPVS_DEST_ATTR_ADDR
        0xc6, 0x12, 0x01, 0x0a, //   198.18.1.10
        0x00, 0x00, 0x00, 0x00, //   rest of the union
        0x00, 0x00, 0x00, 0x00, //
        0x00, 0x00, 0x00, 0x00, //
        0x06, 0x00, 0x02, 0x00, //   len 6, IPVS_DEST_ATTR_PORT
        0x1f, 0x90, 0x00, 0x00, //   8080, network byte order; padding
        0x08, 0x00, 0x03, 0x00, //   len 8, IPVS_DEST_ATTR_FWD_METHOD
        fwd,  0x00, 0x00, 0x00, //   IP_VS_CONN_F_*
        0x08, 0x00, 0x04, 0x00, //   len 8, IPVS_DEST_ATTR_WEIGHT
        weight, 0x00, 0x00, 0x00, // weight
        0x05, 0x00, 0x0d, 0x00, //   len 5, IPVS_DEST_ATTR_TUN_TYPE
        0x00, 0x00, 0x00, 0x00, //   IP_VS_CONN_F_TUNNEL_TYPE_IPIP (u8), padding
        0x06, 0x00, 0x0e, 0x00, //   len 6, IPVS_DEST_ATTR_TUN_PORT
        0x00, 0x00, 0x00, 0x00, //   0, padding
        0x06, 0x00, 0x0f, 0x00, //   len 6, IPVS_DEST_ATTR_TUN_FLAGS
        0x00, 0x00, 0x00, 0x00, //   IP_VS_TUNNEL_ENCAP_FLAG_NOCSUM, padding
        0x08, 0x00, 0x05, 0x00, //   len 8, IPVS_DEST_ATTR_U_THRESH
        0x00, 0x00, 0x00, 0x00, //   0: no limit
        0x08, 0x00, 0x06, 0x00, //   len 8, IPVS_DEST_ATTR_L_THRESH
        0x00, 0x00, 0x00, 0x00, //   0: no limit
    ]
}

fn dest_attrs(fwd: ForwardMethod, weight: u32) -> Vec<DestAttr> {
    vec![
        DestAttr::AddrFamily(AddressFamily::Inet),
        DestAttr::Address(InetAddr::from(ip("198.18.1.10"))),
        DestAttr::Port(8080),
        DestAttr::FwdMethod(fwd),
        DestAttr::Weight(weight),
        DestAttr::TunType(0),
        DestAttr::TunPort(0),
        DestAttr::TunFlags(0),
        DestAttr::UThresh(0),
        DestAttr::LThresh(0),
    ]
}

fn without_tunnel(attrs: &[DestAttr]) -> Vec<DestAttr> {
    attrs
        .iter()
        .filter(|a| {
            !matches!(
                a,
                DestAttr::TunType(_) | DestAttr::TunPort(_) | DestAttr::TunFlags(_)
            )
        })
        .cloned()
        .collect()
}

// ipvsadm -a -t 198.18.0.10:80 -r 198.18.1.10:8080 -m -w 2
#[test]
fn new_dest_masq_weight_2() {
    #[rustfmt::skip]
    let head = [
        0x05, 0x01, 0x00, 0x00, // genlmsghdr: cmd IPVS_CMD_NEW_DEST, version 1
    ];
    let raw = [&head[..], &IPVSADM_SERVICE[..], &ipvsadm_dest(0, 2)[..]].concat();
    let expected = IpvsMessage::new(
        IpvsCmd::NewDest,
        vec![
            ipvsadm_service(),
            IpvsAttr::Dest(dest_attrs(ForwardMethod::Masq, 2)),
        ],
    );
    assert_round_trip(&raw, &expected, false);

    // Our model writes the same destination, minus the tunnel attributes it never uses.
    let rs = RealServer::new(ip("198.18.1.10"), 8080, 2);
    assert_eq!(
        rs.to_attrs(),
        without_tunnel(&dest_attrs(ForwardMethod::Masq, 2))
    );
}

// ipvsadm -e -t 198.18.0.10:80 -r 198.18.1.10:8080 -m -w 0
#[test]
fn set_dest_weight_0() {
    #[rustfmt::skip]
    let head = [
        0x06, 0x01, 0x00, 0x00, // genlmsghdr: cmd IPVS_CMD_SET_DEST, version 1
    ];
    let raw = [&head[..], &IPVSADM_SERVICE[..], &ipvsadm_dest(0, 0)[..]].concat();
    let expected = IpvsMessage::new(
        IpvsCmd::SetDest,
        vec![
            ipvsadm_service(),
            IpvsAttr::Dest(dest_attrs(ForwardMethod::Masq, 0)),
        ],
    );
    assert_round_trip(&raw, &expected, false);
}

// ipvsadm -d -t 198.18.0.10:80 -r 198.18.1.10:8080: ipvsadm fills in a direct-routing
// method and weight 1 that the kernel ignores for a delete.
#[test]
fn del_dest() {
    #[rustfmt::skip]
    let head = [
        0x07, 0x01, 0x00, 0x00, // genlmsghdr: cmd IPVS_CMD_DEL_DEST, version 1
    ];
    let raw = [&head[..], &IPVSADM_SERVICE[..], &ipvsadm_dest(3, 1)[..]].concat();
    let expected = IpvsMessage::new(
        IpvsCmd::DelDest,
        vec![
            ipvsadm_service(),
            IpvsAttr::Dest(dest_attrs(ForwardMethod::DirectRoute, 1)),
        ],
    );
    assert_round_trip(&raw, &expected, false);
}

// ipvsadm -Ln: the request for the destinations of TCP 198.18.0.10:80 (sent with NLM_F_DUMP).
#[rustfmt::skip]
static GET_DEST: [u8; 52] = [
    0x08, 0x01, 0x00, 0x00, // genlmsghdr: cmd IPVS_CMD_GET_DEST, version 1
    0x30, 0x00, 0x01, 0x80, // len 48, IPVS_CMD_ATTR_SERVICE | NLA_F_NESTED
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
];

#[test]
fn get_dest_request_is_what_our_client_sends() {
    let expected = IpvsMessage::new(IpvsCmd::GetDest, vec![IpvsAttr::Service(key_attrs())]);
    assert_round_trip(&GET_DEST, &expected, false);
    let key = ServiceKey {
        addr: ip("198.18.0.10"),
        protocol: Protocol::Tcp,
        port: 80,
    };
    let ours = IpvsMessage::new(IpvsCmd::GetDest, vec![IpvsAttr::Service(key.to_attrs())]);
    assert_eq!(emit(&ours), GET_DEST);
}

// ipvsadm -Ln: the kernel's reply to GET_DEST, one destination ("-> 198.18.1.10:8080 Masq 2").
#[rustfmt::skip]
static DUMPED_DEST_HEAD: [u8; 124] = [
    0x05, 0x01, 0x00, 0x00, // genlmsghdr: cmd IPVS_CMD_NEW_DEST (dump replies use it)
    0x50, 0x01, 0x02, 0x00, // len 336, IPVS_CMD_ATTR_DEST, no NLA_F_NESTED (kernel)
    0x14, 0x00, 0x01, 0x00, //   len 20, IPVS_DEST_ATTR_ADDR
    0xc6, 0x12, 0x01, 0x0a, //   198.18.1.10
    0x00, 0x00, 0x00, 0x00, //   rest of the union
    0x00, 0x00, 0x00, 0x00, //
    0x00, 0x00, 0x00, 0x00, //
    0x06, 0x00, 0x02, 0x00, //   len 6, IPVS_DEST_ATTR_PORT
    0x1f, 0x90, 0x00, 0x00, //   8080; padding
    0x08, 0x00, 0x03, 0x00, //   len 8, IPVS_DEST_ATTR_FWD_METHOD
    0x00, 0x00, 0x00, 0x00, //   IP_VS_CONN_F_MASQ
    0x08, 0x00, 0x04, 0x00, //   len 8, IPVS_DEST_ATTR_WEIGHT
    0x02, 0x00, 0x00, 0x00, //   2
    0x05, 0x00, 0x0d, 0x00, //   len 5, IPVS_DEST_ATTR_TUN_TYPE
    0x00, 0x00, 0x00, 0x00, //   0, padding
    0x06, 0x00, 0x0e, 0x00, //   len 6, IPVS_DEST_ATTR_TUN_PORT
    0x00, 0x00, 0x00, 0x00, //   0, padding
    0x06, 0x00, 0x0f, 0x00, //   len 6, IPVS_DEST_ATTR_TUN_FLAGS
    0x00, 0x00, 0x00, 0x00, //   0, padding
    0x08, 0x00, 0x05, 0x00, //   len 8, IPVS_DEST_ATTR_U_THRESH
    0x00, 0x00, 0x00, 0x00, //   0
    0x08, 0x00, 0x06, 0x00, //   len 8, IPVS_DEST_ATTR_L_THRESH
    0x00, 0x00, 0x00, 0x00, //   0
    0x08, 0x00, 0x07, 0x00, //   len 8, IPVS_DEST_ATTR_ACTIVE_CONNS
    0x00, 0x00, 0x00, 0x00, //   0
    0x08, 0x00, 0x08, 0x00, //   len 8, IPVS_DEST_ATTR_INACT_CONNS
    0x00, 0x00, 0x00, 0x00, //   0
    0x08, 0x00, 0x09, 0x00, //   len 8, IPVS_DEST_ATTR_PERSIST_CONNS
    0x00, 0x00, 0x00, 0x00, //   0
    0x06, 0x00, 0x0b, 0x00, //   len 6, IPVS_DEST_ATTR_ADDR_FAMILY
    0x02, 0x00, 0x00, 0x00, //   AF_INET, padding
    // ... followed by ZERO_STATS and ZERO_STATS64 (IPVS_DEST_ATTR_STATS[64] share the numbers)
];

#[test]
fn dumped_dest_with_conns_and_stats() {
    let raw = [&DUMPED_DEST_HEAD[..], &ZERO_STATS[..], &ZERO_STATS64[..]].concat();
    let attrs = vec![
        DestAttr::Address(InetAddr::from(ip("198.18.1.10"))),
        DestAttr::Port(8080),
        DestAttr::FwdMethod(ForwardMethod::Masq),
        DestAttr::Weight(2),
        DestAttr::TunType(0),
        DestAttr::TunPort(0),
        DestAttr::TunFlags(0),
        DestAttr::UThresh(0),
        DestAttr::LThresh(0),
        DestAttr::ActiveConns(0),
        DestAttr::InactConns(0),
        DestAttr::PersistConns(0),
        DestAttr::AddrFamily(AddressFamily::Inet),
        DestAttr::Stats(zero_stats()),
        DestAttr::Stats64(zero_stats64()),
    ];
    let without_stats = attrs[..attrs.len() - 2].to_vec();
    let expected = IpvsMessage::new(IpvsCmd::NewDest, vec![IpvsAttr::Dest(attrs)]);
    assert_round_trip(&raw, &expected, true);

    let parsed = parse(&raw);
    let IpvsAttr::Dest(attrs) = &parsed.attrs[0] else {
        panic!("not a dest: {parsed:?}")
    };
    let real_server = RealServer {
        conns: Some(ConnCounts::default()),
        ..RealServer::new(ip("198.18.1.10"), 8080, 2)
    };
    assert_eq!(
        RealServer::try_from(attrs.as_slice()).expect("model"),
        real_server
    );

    // As a dump reads it: every attribute but the two statistics nests, the same model.
    let dumped = parse_without_stats(&raw);
    assert_eq!(
        dumped,
        IpvsMessage::new(
            IpvsCmd::NewDest,
            vec![IpvsAttr::Dest(without_stats.clone())]
        )
    );
    assert_eq!(
        RealServer::try_from(without_stats.as_slice()).expect("model"),
        real_server
    );
}
