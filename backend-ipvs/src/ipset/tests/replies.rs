//! The kernel's answers: protocol, list dumps, ACKs and refusals, read the way the socket
//! reads them.

use proxy_core::table::Protocol;

use super::*;
use crate::ipset::client::listing;
use crate::ipset::model::{Family, SetEntry, SetListing, SetType};
use crate::ipset::socket::{read_answers, read_dump, Answer, Refusal};

const SEQ: u32 = 1_795_626_124;

/// One netlink message: nlmsghdr (len, type, flags, seq, pid) + payload, padded to 4.
fn nlmsg(ty: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&(16 + payload.len() as u32).to_ne_bytes());
    m.extend_from_slice(&ty.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&3_469u32.to_ne_bytes());
    m.extend_from_slice(payload);
    m.resize((m.len() + 3) & !3, 0);
    m
}

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_MULTI: u16 = 2;
const NLM_F_CAPPED: u16 = 0x100;
const LIST: u16 = 0x0607;

#[test]
fn protocol_reply_has_the_kernels_version_and_minimum() {
    // The kernel's answer to every IPSET_CMD_PROTOCOL in the captures.
    let raw = "02000000 05000100 07000000 05000a00 06000000"; // PROTOCOL 7, PROTOCOL_MIN 6
    both_ways(
        raw,
        &IpsetMessage::new(
            IpsetCmd::Protocol,
            vec![IpsetAttr::Protocol(7), IpsetAttr::ProtocolMin(6)],
        ),
    );
}

/// `ipset list SVCP-T-IPPORT` (after the restore captures): the one message of the dump.
#[rustfmt::skip]
const LIST_IPPORT: &[&str] = &[
    "02000000 05000100 07000000",
    "12000200 53564350 2d542d49 50504f52 54000000",          // SETNAME
    "11000300 68617368 3a69702c 706f7274 00000000",          // TYPENAME "hash:ip,port"
    "05000500 02000000",                                     // FAMILY inet
    "05000400 07000000",                                     // REVISION 7
    "06000b40 00000000",                                     // INDEX | NET_BYTEORDER 0
    "3c000780",                                              // DATA (set parameters)
    "08001240 00000400",                                     //   HASHSIZE 1024
    "08001340 00100000",                                     //   MAXELEM 1048576
    "05001500 0c000000",                                     //   BUCKETSIZE 12
    "08001140 a663e493",                                     //   INITVAL
    "08001940 00000000",                                     //   REFERENCES 0
    "08001a40 00000168",                                     //   MEMSIZE 360
    "08001840 00000003",                                     //   ELEMENTS 3
    "64000880",                                              // ADT
    "20000780 0c000180 08000100 c6120005 06000440 00010000 05000700 06000000",
    "20000780 0c000180 08000100 c6120002 06000440 00350000 05000700 11000000",
    "20000780 0c000180 08000100 c6120001 06000440 00500000 05000700 06000000",
];

#[test]
fn a_list_dump_folds_into_a_typed_listing() {
    let raw = hex(&LIST_IPPORT.join(" "));
    let datagram = [
        nlmsg(LIST, NLM_F_MULTI, SEQ, &raw),
        nlmsg(NLMSG_DONE, NLM_F_MULTI, SEQ, &0i32.to_ne_bytes()),
    ]
    .concat();
    let mut replies = Vec::new();
    assert!(
        read_dump(&datagram, SEQ, &mut replies).expect("dump"),
        "DONE ends it"
    );
    assert_eq!(replies.len(), 1);
    let port = |last: u8, protocol, port| SetEntry::IpPort {
        addr: v4(&format!("198.18.0.{last}")),
        protocol,
        port,
    };
    assert_eq!(
        listing("SVCP-T-IPPORT", &replies).expect("listing"),
        SetListing {
            name: "SVCP-T-IPPORT".into(),
            set_type: Some(SetType::HashIpPort),
            type_name: "hash:ip,port".into(),
            family: Some(Family::Inet),
            max_elements: Some(1 << 20),
            entries: vec![
                port(5, Protocol::Tcp, 1),
                port(2, Protocol::Udp, 53),
                port(1, Protocol::Tcp, 80),
            ],
        }
    );
    // Emitting the parsed message gives the capture back, but for one bit: the kernel flags
    // the address inside IPSET_ATTR_IP without NLA_F_NET_BYTEORDER; we always set it.
    let ours = emit(&replies[0]);
    let kernel = hex(&LIST_IPPORT.join(" ").replace("08000100", "08000140"));
    assert_eq!(ours, kernel);
}

#[test]
fn a_set_listed_in_two_messages_keeps_all_its_entries() {
    // A big set's dump goes on in further messages with SETNAME and ADT only.
    let first = hex(&LIST_IPPORT.join(" "));
    #[rustfmt::skip]
    let more = hex(&[
        "02000000 05000100 07000000",
        "12000200 53564350 2d542d49 50504f52 54000000",
        "24000880",
        "20000780 0c000180 08000100 c6120009 06000440 00010000 05000700 11000000",
    ]
    .join(" "));
    let datagram = [
        nlmsg(LIST, NLM_F_MULTI, SEQ, &first),
        nlmsg(LIST, NLM_F_MULTI, SEQ, &more),
    ]
    .concat();
    let mut replies = Vec::new();
    assert!(
        !read_dump(&datagram, SEQ, &mut replies).expect("dump"),
        "no DONE yet"
    );
    let done = nlmsg(NLMSG_DONE, NLM_F_MULTI, SEQ, &0i32.to_ne_bytes());
    assert!(read_dump(&done, SEQ, &mut replies).expect("done"));
    let listed = listing("SVCP-T-IPPORT", &replies).expect("listing");
    assert_eq!(listed.entries.len(), 4);
    assert_eq!(listed.entries[3].to_string(), "198.18.0.9,udp:1");
}

#[test]
fn list_names_reply() {
    // ipset list -n: one message per set, SETNAME only.
    let raw = "02000000 05000100 07000000 11000200 53564350 2d542d4c 4f4f5036 00000000";
    both_ways(
        raw,
        &IpsetMessage::new(
            IpsetCmd::List,
            vec![IpsetAttr::Protocol(7), name("SVCP-T-LOOP6")],
        ),
    );
}

fn answers(datagram: &[u8], n: usize) -> (Vec<Answer>, usize) {
    let mut answers: Vec<Answer> = (0..n).map(|_| Answer::default()).collect();
    let mut pending = n;
    read_answers(datagram, SEQ, &mut answers, &mut pending).expect("answers read");
    (answers, pending)
}

#[test]
fn acks_in_one_datagram_are_filed_by_sequence_number() {
    // The kernel's ACK: error 0, the request's header only (NLM_F_CAPPED).
    let ack = |seq| {
        let mut payload = 0i32.to_ne_bytes().to_vec();
        payload.extend_from_slice(&hex("58000000 09060502 8d14076b 00000000"));
        nlmsg(NLMSG_ERROR, NLM_F_CAPPED, seq, &payload)
    };
    let datagram = [ack(SEQ + 1), ack(SEQ + 7), ack(SEQ)].concat();
    let (answers, pending) = answers(&datagram, 3);
    assert_eq!(
        pending, 1,
        "the ACK of SEQ + 7 is not ours: one request still waits"
    );
    assert!(answers.iter().all(|a| a.refusal.is_none()));
}

#[test]
fn a_missing_set_is_enoent() {
    // ipset add SVCP-T-NONE ...: the kernel's answer (to the header query the tool sends
    // first): error -2, then the whole request echoed.
    #[rustfmt::skip]
    let payload = hex(&[
        "feffffff",                                        // error -ENOENT
        "2c000000 0c060100 8c14076b 00000000",             // the request's nlmsghdr
        "02000000 05000100 07000000 10000200 53564350 2d542d4e 4f4e4500",
    ]
    .join(" "));
    let (answers, pending) = answers(&nlmsg(NLMSG_ERROR, 0, SEQ, &payload), 1);
    assert_eq!(pending, 0);
    assert_eq!(
        answers[0].refusal,
        Some(Refusal {
            errno: 2,
            lineno: None
        })
    );
}

#[test]
fn a_failed_entry_in_a_list_is_named_by_its_line_number() {
    // ipset restore: add SVCP-T-IPPORT 198.18.0.5,tcp:1 / 198.18.0.2,udp:53 (present, no
    // -exist) / 198.18.0.6,tcp:1. The kernel answers -IPSET_ERR_EXIST with the request, its
    // top-level LINENO set to the failing entry's CADT_LINENO: 2.
    #[rustfmt::skip]
    let payload = hex(&[
        "f9efffff",                                        // error -4103 IPSET_ERR_EXIST
        "b4000000 09060502 8f14076b 00000000",             // the request's nlmsghdr
        "02000000 05000100 07000000",
        "12000200 53564350 2d542d49 50504f52 54000000",
        "08000940 00000002",                               // LINENO: 2, was 1 in the request
        "7c000880",
        "28000780 0c000180 08000140 c6120005 06000440 00010000 05000700 06000000 08000940 00000001",
        "28000780 0c000180 08000140 c6120002 06000440 00350000 05000700 11000000 08000940 00000002",
        "28000780 0c000180 08000140 c6120006 06000440 00010000 05000700 06000000 08000940 00000003",
    ]
    .join(" "));
    let (answers, pending) = answers(&nlmsg(NLMSG_ERROR, 0, SEQ, &payload), 1);
    assert_eq!(pending, 0, "this error is the only answer (no ACK follows)");
    assert_eq!(
        answers[0].refusal,
        Some(Refusal {
            errno: 4103,
            lineno: Some(2)
        })
    );
}

#[test]
fn replies_before_the_ack_belong_to_their_request() {
    let reply = hex("02000000 05000100 07000000 05000a00 06000000");
    let mut ack = 0i32.to_ne_bytes().to_vec();
    ack.extend_from_slice(&hex("1c000000 01060500 8c14076b 00000000"));
    let datagram = [
        nlmsg(0x0601, 0, SEQ, &reply),
        nlmsg(NLMSG_ERROR, NLM_F_CAPPED, SEQ, &ack),
    ]
    .concat();
    let (answers, pending) = answers(&datagram, 1);
    assert_eq!(pending, 0);
    assert_eq!(
        answers[0].replies,
        [IpsetMessage::new(
            IpsetCmd::Protocol,
            vec![IpsetAttr::Protocol(7), IpsetAttr::ProtocolMin(6)]
        )]
    );
}

#[test]
fn truncated_and_garbled_datagrams_are_errors_not_panics() {
    let mut ack = nlmsg(NLMSG_ERROR, NLM_F_CAPPED, SEQ, &[0; 20]);
    ack.truncate(18);
    let mut answers = vec![Answer::default()];
    let mut pending = 1;
    assert!(read_answers(&ack, SEQ, &mut answers, &mut pending).is_err());
    assert!(read_answers(&[0u8; 7], SEQ, &mut answers, &mut pending).is_err());
    // A reply whose attribute runs past its end.
    let bad = nlmsg(LIST, NLM_F_MULTI, SEQ, &hex("02000000 ff000200 53564350"));
    assert!(read_dump(&bad, SEQ, &mut Vec::new()).is_err());
}
