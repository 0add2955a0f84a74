//! Byte tests against messages captured from a real kernel (Debian 6.1.0-56-amd64, ipvsadm
//! v1.31 over libnl), and property tests. How the captures were made:
//! `backend-ipvs/tests/captures/README.md`.
//!
//! Each test keeps the exact `ipvsadm` command and one commented line per field, and checks
//! both directions: `parse(raw) == expected` and `emit(expected) == raw`. The bytes are the
//! generic-netlink payload (`genlmsghdr` + attributes) of one netlink message; the
//! `nlmsghdr` in front (type = the resolved family id, 0x20 in the VM) is netlink-packet-core's.
//!
//! Trap: the kernel's replies open nested attributes without `NLA_F_NESTED`
//! (`nla_nest_start_noflag` in `ip_vs_ctl.c`), while libnl's requests and ours set it. Reply
//! tests therefore compare our emitted bytes with that bit cleared ([`clear_nested`]).

mod config;
mod dest;
mod roundtrip;
mod service;

use netlink_packet_core::{Emitable, NlasIterator, ParseableParametrized, NLA_F_NESTED};
use netlink_packet_generic::{GenlHeader, GenlMessage};

use super::IpvsMessage;

/// Parses a generic-netlink payload as an IPVS message.
fn parse(raw: &[u8]) -> IpvsMessage {
    let header = GenlHeader::parse(raw).expect("genlmsghdr");
    IpvsMessage::parse_with_param(&raw[4..], header).expect("IPVS message parses")
}

/// Parses a generic-netlink payload as a dump's reply is read: without the statistics.
fn parse_without_stats(raw: &[u8]) -> IpvsMessage {
    let header = GenlHeader::parse(raw).expect("genlmsghdr");
    IpvsMessage::parse_without_stats(&raw[4..], header).expect("IPVS message parses")
}

/// Emits `msg` behind its `genlmsghdr`, into a buffer of exactly `buffer_len()` bytes.
fn emit(msg: &IpvsMessage) -> Vec<u8> {
    let genl = GenlMessage::from_payload(msg.clone());
    let mut buf = vec![0u8; genl.buffer_len()];
    genl.emit(&mut buf);
    buf
}

/// Clears `NLA_F_NESTED` wherever our emitter set it, at every depth of the attributes that
/// follow the 4-byte `genlmsghdr`: the kernel's own replies do not set the bit.
fn clear_nested(mut bytes: Vec<u8>) -> Vec<u8> {
    fn walk(buf: &mut [u8]) {
        let mut offset = 0;
        while offset + 4 <= buf.len() {
            let len = usize::from(u16::from_ne_bytes([buf[offset], buf[offset + 1]]));
            let kind = u16::from_ne_bytes([buf[offset + 2], buf[offset + 3]]);
            assert!(
                len >= 4 && offset + len <= buf.len(),
                "malformed attribute at {offset}"
            );
            if kind & NLA_F_NESTED != 0 {
                buf[offset + 2..offset + 4].copy_from_slice(&(kind & !NLA_F_NESTED).to_ne_bytes());
                walk(&mut buf[offset + 4..offset + len]);
            }
            offset += (len + 3) & !3;
        }
    }
    walk(&mut bytes[4..]);
    bytes
}

/// Both directions; `nested_flag_differs` for kernel replies (see the module docs).
#[track_caller]
fn assert_round_trip(raw: &[u8], expected: &IpvsMessage, nested_flag_differs: bool) {
    assert_eq!(&parse(raw), expected, "parse(raw) == expected");
    let mut emitted = emit(expected);
    if nested_flag_differs {
        emitted = clear_nested(emitted);
    }
    assert_eq!(
        emitted, raw,
        "emit(expected) == raw\nemitted: {emitted:02x?}\nraw:     {raw:02x?}"
    );
    // The attributes we parsed cover the whole payload: nothing was skipped.
    assert_eq!(NlasIterator::new(&raw[4..]).count(), expected.attrs.len());
}
