//! Shared by the `netlink_*` tests: reading capture files, splitting datagrams into messages,
//! emitting ours, and comparing with a readable diff.
#![allow(dead_code)]

use backend_nftables::netlink::NftMessage;
use netlink_transport::{messages, Request};

/// The datagrams of a capture file (`tests/captures/*.hex`): `# <syscall> <n> bytes` starts
/// one, hex lines follow, other `#` lines are comments.
pub fn datagrams(text: &str) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix("# ") {
            let words: Vec<&str> = comment.split_whitespace().collect();
            if words.len() == 3 && words[2] == "bytes" {
                let len: usize = words[1].parse().expect("byte count");
                out.push((words[0].to_owned(), Vec::with_capacity(len)));
            }
            continue;
        }
        let current = &mut out.last_mut().expect("hex before any datagram header").1;
        current.extend(
            line.split_whitespace()
                .map(|b| u8::from_str_radix(b, 16).expect("hex byte")),
        );
    }
    out
}

/// The netlink messages of a datagram, each whole (header and payload, without padding).
pub fn split(datagram: &[u8]) -> Vec<Vec<u8>> {
    messages(datagram)
        .map(|m| {
            let m = m.expect("well-formed capture");
            let len = m.length() as usize;
            m.into_inner()[..len].to_vec()
        })
        .collect()
}

/// Our message as the transport sends it, sequence number 0.
pub fn emit(message: &NftMessage) -> Vec<u8> {
    let mut out = Vec::new();
    message.emit_message(&mut out);
    out
}

/// `raw` with its sequence number and port id zeroed (they differ between runs).
pub fn masked(raw: &[u8]) -> Vec<u8> {
    let mut raw = raw.to_vec();
    raw[8..16].fill(0);
    raw
}

/// Parses a whole captured message.
pub fn parse(raw: &[u8]) -> NftMessage {
    let ty = u16::from_ne_bytes([raw[4], raw[5]]);
    let flags = u16::from_ne_bytes([raw[6], raw[7]]);
    NftMessage::parse(ty, flags, &raw[16..]).expect("parses")
}

/// Hex, 16 bytes a line, with offsets: for failure messages.
pub fn hex(bytes: &[u8]) -> String {
    bytes
        .chunks(16)
        .enumerate()
        .map(|(i, c)| {
            let line: Vec<String> = c.iter().map(|b| format!("{b:02x}")).collect();
            format!("{:04x}: {}", i * 16, line.join(" "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Asserts both directions for one captured message: our encoding of `expected` is the
/// capture's bytes (sequence number and port masked), and the capture parses to `expected`.
pub fn assert_both_ways(what: &str, raw: &[u8], expected: &NftMessage) {
    let ours = emit(expected);
    let theirs = masked(raw);
    if ours != theirs {
        let first = ours
            .iter()
            .zip(&theirs)
            .position(|(a, b)| a != b)
            .unwrap_or(ours.len().min(theirs.len()));
        panic!(
            "{what}: our bytes differ from nft's at offset {first:#x} (ours {} bytes, nft {})\n\
             ours:\n{}\nnft:\n{}",
            ours.len(),
            theirs.len(),
            hex(&ours),
            hex(&theirs)
        );
    }
    assert_eq!(&parse(raw), expected, "{what}: parse(capture)");
}
