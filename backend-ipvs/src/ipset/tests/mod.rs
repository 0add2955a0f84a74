//! Byte tests against what the kernel and the `ipset` tool (v7.17, protocol 7, kernel 6.18)
//! really exchanged: `tests/captures/ipset/` (how they were taken is in
//! `tests/captures/README.md`). The payloads below are `./extract.py <capture>` output: the
//! bytes after the 16-byte `nlmsghdr`, 4 bytes per group. Each request test asserts
//! `parse(raw) == expected` and `emit(expected) == raw`.

use netlink_packet_core::{Emitable, ParseableParametrized};

use super::attr::DataAttr;
use super::message::{IpsetAttr, IpsetCmd, IpsetMessage};

mod messages;
mod properties;
mod replies;

/// The bytes of `extract.py` output: hex groups separated by spaces.
fn hex(groups: &str) -> Vec<u8> {
    let digits: String = groups.split_whitespace().collect();
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).expect("hex literal"))
        .collect()
}

fn emit(msg: &IpsetMessage) -> Vec<u8> {
    let mut out = vec![0u8; msg.buffer_len()];
    msg.emit(&mut out);
    out
}

fn parse(cmd: IpsetCmd, raw: &[u8]) -> IpsetMessage {
    IpsetMessage::parse_with_param(raw, cmd).expect("the captured message parses")
}

/// Both directions: the capture parses to `expected`, and `expected` emits the capture.
fn both_ways(raw: &str, expected: &IpsetMessage) {
    let raw = hex(raw);
    assert_eq!(&parse(expected.cmd, &raw), expected, "parse(raw)");
    assert_eq!(emit(expected), raw, "emit(expected)");
}

fn name(s: &str) -> IpsetAttr {
    IpsetAttr::SetName(s.to_owned())
}

fn v4(s: &str) -> std::net::IpAddr {
    s.parse().expect("address literal")
}

/// `entry` with its `IPSET_ATTR_CADT_LINENO`, as `ipset restore` numbers its lines.
fn numbered(mut entry: Vec<DataAttr>, line: u32) -> Vec<DataAttr> {
    entry.push(DataAttr::Lineno(line));
    entry
}
