//! Property tests: every message we can express emits to exactly `buffer_len()` bytes and
//! parses back to itself; arbitrary bytes never make the parser panic; the model survives
//! its own attributes.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use netlink_packet_core::{DefaultNla, Emitable, ParseableParametrized};
use netlink_packet_generic::{GenlHeader, GenlMessage};
use proptest::{collection::vec, option, prelude::*};
use proxy_core::Protocol;

use super::{emit, parse};
use crate::{
    model::{ForwardMethod as Fwd, RealServer, SchedFlags, Scheduler, VirtualServer},
    netlink::{
        AddressFamily, Counter, DestAttr, ForwardMethod, InetAddr, IpProtocol, IpvsAttr, IpvsCmd,
        IpvsMessage, ServiceAttr, ServiceFlags, StatsAttr,
    },
};

/// An attribute of a kind the enums do not know (kinds above every header value).
fn other_nla() -> impl Strategy<Value = DefaultNla> {
    (20u16..200, vec(any::<u8>(), 0..12)).prop_map(|(kind, value)| DefaultNla::new(kind, value))
}

fn counter() -> impl Strategy<Value = Counter> {
    prop_oneof![
        any::<u32>().prop_map(Counter::U32),
        any::<u64>().prop_map(Counter::U64)
    ]
}

fn stats() -> impl Strategy<Value = Vec<StatsAttr>> {
    vec(
        prop_oneof![
            counter().prop_map(StatsAttr::Conns),
            counter().prop_map(StatsAttr::InPkts),
            counter().prop_map(StatsAttr::OutBytes),
            counter().prop_map(StatsAttr::Cps),
            counter().prop_map(StatsAttr::OutBps),
            other_nla().prop_map(StatsAttr::Other),
        ],
        0..4,
    )
}

fn name() -> impl Strategy<Value = String> {
    "[a-z]{0,15}"
}

fn service_attr() -> impl Strategy<Value = ServiceAttr> {
    prop_oneof![
        any::<u16>().prop_map(|v| ServiceAttr::Af(v.into())),
        any::<u16>().prop_map(|v| ServiceAttr::Protocol(v.into())),
        any::<[u8; 16]>().prop_map(|v| ServiceAttr::Address(InetAddr(v))),
        any::<u16>().prop_map(ServiceAttr::Port),
        any::<u32>().prop_map(ServiceAttr::Fwmark),
        name().prop_map(ServiceAttr::SchedName),
        (any::<u32>(), any::<u32>())
            .prop_map(|(flags, mask)| ServiceAttr::Flags(ServiceFlags { flags, mask })),
        any::<u32>().prop_map(ServiceAttr::Timeout),
        any::<u32>().prop_map(ServiceAttr::Netmask),
        stats().prop_map(ServiceAttr::Stats),
        name().prop_map(ServiceAttr::PeName),
        stats().prop_map(ServiceAttr::Stats64),
        other_nla().prop_map(ServiceAttr::Other),
    ]
}

fn dest_attr() -> impl Strategy<Value = DestAttr> {
    prop_oneof![
        any::<[u8; 16]>().prop_map(|v| DestAttr::Address(InetAddr(v))),
        any::<u16>().prop_map(DestAttr::Port),
        any::<u32>().prop_map(|v| DestAttr::FwdMethod(v.into())),
        any::<u32>().prop_map(DestAttr::Weight),
        any::<u32>().prop_map(DestAttr::UThresh),
        any::<u32>().prop_map(DestAttr::LThresh),
        any::<u32>().prop_map(DestAttr::ActiveConns),
        any::<u32>().prop_map(DestAttr::InactConns),
        any::<u32>().prop_map(DestAttr::PersistConns),
        stats().prop_map(DestAttr::Stats),
        any::<u16>().prop_map(|v| DestAttr::AddrFamily(v.into())),
        stats().prop_map(DestAttr::Stats64),
        any::<u8>().prop_map(DestAttr::TunType),
        any::<u16>().prop_map(DestAttr::TunPort),
        any::<u16>().prop_map(DestAttr::TunFlags),
        other_nla().prop_map(DestAttr::Other),
    ]
}

fn message() -> impl Strategy<Value = IpvsMessage> {
    any::<u8>().prop_map(IpvsCmd::from).prop_flat_map(|cmd| {
        let attrs = if cmd == IpvsCmd::SetInfo {
            vec(
                prop_oneof![
                    any::<u32>().prop_map(IpvsAttr::InfoVersion),
                    any::<u32>().prop_map(IpvsAttr::InfoConnTabSize),
                    other_nla().prop_map(IpvsAttr::Other),
                ],
                0..4,
            )
            .boxed()
        } else {
            vec(
                prop_oneof![
                    vec(service_attr(), 0..6).prop_map(IpvsAttr::Service),
                    vec(dest_attr(), 0..6).prop_map(IpvsAttr::Dest),
                    vec(other_nla(), 0..3).prop_map(IpvsAttr::Daemon),
                    any::<u32>().prop_map(IpvsAttr::TimeoutTcp),
                    any::<u32>().prop_map(IpvsAttr::TimeoutTcpFin),
                    any::<u32>().prop_map(IpvsAttr::TimeoutUdp),
                    other_nla().prop_map(IpvsAttr::Other),
                ],
                0..4,
            )
            .boxed()
        };
        attrs.prop_map(move |attrs| IpvsMessage::new(cmd, attrs))
    })
}

fn test_addr() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        // 198.18.0.0/15
        (0u32..(1 << 17)).prop_map(|n| IpAddr::V4(Ipv4Addr::from(0xc612_0000 | n))),
        // 2001:db8::/32
        any::<u64>()
            .prop_map(|n| IpAddr::V6(Ipv6Addr::from((0x2001_0db8_u128 << 96) | u128::from(n)))),
    ]
}

fn virtual_server() -> impl Strategy<Value = VirtualServer> {
    let scheduler = prop_oneof![
        Just(Scheduler::RoundRobin),
        Just(Scheduler::WeightedLeastConnection),
        Just(Scheduler::SourceHash),
        Just(Scheduler::Maglev),
        Just(Scheduler::Other("lblcr".into())),
    ];
    (
        test_addr(),
        prop_oneof![
            Just(Protocol::Tcp),
            Just(Protocol::Udp),
            Just(Protocol::Sctp)
        ],
        any::<u16>(),
        scheduler,
        any::<(bool, bool, bool)>(),
        option::of(1u64..100_000),
        any::<bool>(),
        any::<u8>(),
    )
        .prop_map(
            |(addr, protocol, port, scheduler, flags, persistence, one_packet, prefix)| {
                let full = if addr.is_ipv4() { 32 } else { 128 };
                VirtualServer {
                    sched_flags: SchedFlags {
                        flag1: flags.0,
                        flag2: flags.1,
                        flag3: flags.2,
                    },
                    persistence: persistence.map(Duration::from_secs),
                    one_packet,
                    netmask: prefix % (full + 1),
                    ..VirtualServer::new(addr, protocol, port, scheduler)
                }
            },
        )
}

proptest! {
    #[test]
    fn message_emits_buffer_len_and_parses_back(msg in message()) {
        let genl = GenlMessage::from_payload(msg.clone());
        let bytes = emit(&msg);
        prop_assert_eq!(bytes.len(), genl.buffer_len());
        prop_assert_eq!(bytes.len(), 4 + msg.buffer_len());
        prop_assert_eq!(parse(&bytes), msg);
    }

    #[test]
    fn arbitrary_bytes_never_panic(cmd in any::<u8>(), bytes in vec(any::<u8>(), 0..256)) {
        let header = GenlHeader { cmd, version: 1 };
        // Ok or Err, both fine; a panic fails the test.
        let _ = IpvsMessage::parse_with_param(&bytes[..], header);
    }

    #[test]
    fn virtual_server_survives_its_attributes(vs in virtual_server()) {
        let attrs = vs.to_attrs().expect("netmask within the address length");
        prop_assert_eq!(VirtualServer::try_from(attrs.as_slice()), Ok(vs));
    }

    #[test]
    fn real_server_survives_its_attributes(
        addr in test_addr(),
        port in any::<u16>(),
        weight in any::<u32>(),
        forward in prop_oneof![Just(Fwd::Masquerade), Just(Fwd::Tunnel), Just(Fwd::DirectRoute)],
        thresholds in any::<(u32, u32)>(),
    ) {
        let rs = RealServer {
            forward,
            upper_threshold: thresholds.0,
            lower_threshold: thresholds.1,
            ..RealServer::new(addr, port, weight)
        };
        prop_assert_eq!(RealServer::try_from(rs.to_attrs().as_slice()), Ok(rs));
    }
}

#[test]
fn kernel_enums_convert_both_ways() {
    for n in 0..=u8::MAX {
        assert_eq!(u8::from(IpvsCmd::from(n)), n);
    }
    for n in [0u16, 2, 10, 6, 17, 132, 255, u16::MAX] {
        assert_eq!(u16::from(AddressFamily::from(n)), n);
        assert_eq!(u16::from(IpProtocol::from(n)), n);
    }
    for n in 0..8u32 {
        assert_eq!(u32::from(ForwardMethod::from(n)), n);
    }
    assert_eq!(IpvsCmd::from(17), IpvsCmd::Flush);
    assert_eq!(ForwardMethod::from(3), ForwardMethod::DirectRoute);
}
