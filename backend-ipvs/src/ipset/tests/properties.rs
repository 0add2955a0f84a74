//! Encode → parse round trips, for any entry of any of our set types.

use ipnet::IpNet;
use netlink_packet_core::Emitable;
use proptest::prelude::*;
use proxy_core::table::Protocol;

use super::*;
use crate::ipset::model::SetEntry;

/// Addresses in 198.18.0.0/15 or 2001:db8::/32.
fn arb_addr(v6: bool) -> impl Strategy<Value = std::net::IpAddr> {
    if v6 {
        any::<u128>()
            .prop_map(|n| {
                let n = (0x2001_0db8u128 << 96) | (n & ((1u128 << 96) - 1));
                std::net::IpAddr::from(n.to_be_bytes())
            })
            .boxed()
    } else {
        any::<u32>()
            .prop_map(|n| {
                std::net::IpAddr::from(((198u32 << 24) | (18 << 16) | (n & 0x1_ffff)).to_be_bytes())
            })
            .boxed()
    }
}

fn arb_net(v6: bool) -> impl Strategy<Value = IpNet> {
    let max: u8 = if v6 { 128 } else { 32 };
    (arb_addr(v6), 1u8..=max).prop_map(|(a, p)| IpNet::new(a, p).expect("prefix in range").trunc())
}

fn arb_protocol() -> impl Strategy<Value = Protocol> {
    prop::sample::select(Protocol::ALL.to_vec())
}

fn arb_entry() -> impl Strategy<Value = SetEntry> {
    any::<bool>().prop_flat_map(|v6| {
        prop_oneof![
            (arb_addr(v6), arb_protocol(), any::<u16>()).prop_map(|(addr, protocol, port)| {
                SetEntry::IpPort {
                    addr,
                    protocol,
                    port,
                }
            }),
            (arb_addr(v6), arb_protocol(), any::<u16>(), arb_addr(v6)).prop_map(
                |(addr, protocol, port, addr2)| SetEntry::IpPortIp {
                    addr,
                    protocol,
                    port,
                    addr2
                }
            ),
            (arb_addr(v6), arb_protocol(), any::<u16>(), arb_net(v6)).prop_map(
                |(addr, protocol, port, net)| SetEntry::IpPortNet {
                    addr,
                    protocol,
                    port,
                    net
                }
            ),
            arb_net(v6).prop_map(SetEntry::Net),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// An add message of any entries emits `buffer_len()` bytes and parses back to itself,
    /// and each entry reads back from its attributes.
    #[test]
    fn entries_round_trip_through_an_add_message(entries in prop::collection::vec(arb_entry(), 1..20)) {
        let adt: Vec<Vec<DataAttr>> = entries
            .iter()
            .zip(1..)
            .map(|(e, line)| numbered(e.to_attrs(), line))
            .collect();
        let msg = IpsetMessage::new(
            IpsetCmd::Add,
            vec![IpsetAttr::Protocol(7), name("SVCP-T-PROP"), IpsetAttr::Lineno(0), IpsetAttr::Adt(adt)],
        );
        let raw = emit(&msg);
        prop_assert_eq!(raw.len(), msg.buffer_len());
        let back = parse(IpsetCmd::Add, &raw);
        prop_assert_eq!(&back, &msg);
        let Some(IpsetAttr::Adt(parsed)) = back.attrs.last() else {
            return Err(TestCaseError::fail("no ADT in the parsed message"));
        };
        for (entry, attrs) in entries.iter().zip(parsed) {
            prop_assert_eq!(&SetEntry::from_attrs(entry.set_type(), attrs).expect("fits"), entry);
        }
    }
}
