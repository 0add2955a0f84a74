//! The kernel's answers: protocol, list dumps, ACKs and refusals, read by [`IpsetSocket`] from
//! the transport's fake kernel.

use proxy_core::table::Protocol;

use super::*;
use crate::ipset::client::listing;
use crate::ipset::model::{Family, SetEntry, SetListing, SetType};
use crate::ipset::socket::{Answer, IpsetSocket, Refusal};
use netlink_transport::fake::{nlmsg, FakeKernel};
use netlink_transport::{Connection, NetlinkError};

/// A socket whose kernel answers each request (by its sequence number) with `answer`.
fn socket(answer: impl Fn(u32) -> Vec<Vec<u8>> + Send + 'static) -> IpsetSocket<FakeKernel> {
    IpsetSocket::over(Connection::new(FakeKernel::new(move |m| answer(m.seq))))
}

/// The answers to `n` protocol queries sent as one batch.
fn answers(answer: impl Fn(u32) -> Vec<Vec<u8>> + Send + 'static, n: usize) -> Vec<Answer> {
    let query = IpsetMessage::new(IpsetCmd::Protocol, vec![IpsetAttr::Protocol(7)]);
    socket(answer).batch(&vec![(query, 0); n])
}

/// The messages of a list dump answered by `answer`.
fn dump(
    answer: impl Fn(u32) -> Vec<Vec<u8>> + Send + 'static,
) -> Result<Vec<IpsetMessage>, NetlinkError> {
    let list = IpsetMessage::new(IpsetCmd::List, vec![IpsetAttr::Protocol(7)]);
    socket(answer).dump(&list)
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
    let replies = dump(move |seq| {
        vec![[
            nlmsg(LIST, NLM_F_MULTI, seq, &raw),
            nlmsg(NLMSG_DONE, NLM_F_MULTI, seq, &0i32.to_ne_bytes()),
        ]
        .concat()]
    })
    .expect("DONE ends it");
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
    // The DONE comes in a datagram of its own.
    let replies = dump(move |seq| {
        vec![
            [
                nlmsg(LIST, NLM_F_MULTI, seq, &first),
                nlmsg(LIST, NLM_F_MULTI, seq, &more),
            ]
            .concat(),
            nlmsg(NLMSG_DONE, NLM_F_MULTI, seq, &0i32.to_ne_bytes()),
        ]
    })
    .expect("dump");
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

/// The kernel's ACK of request `seq`: error 0, the request's header only (NLM_F_CAPPED).
fn ack(seq: u32) -> Vec<u8> {
    let mut payload = 0i32.to_ne_bytes().to_vec();
    payload.extend_from_slice(&hex("58000000 09060502 8d14076b 00000000"));
    nlmsg(NLMSG_ERROR, NLM_F_CAPPED, seq, &payload)
}

#[test]
fn acks_are_filed_by_sequence_number() {
    // Each ACK comes after one of another request (seq + 7), which is not ours to count.
    let answers = answers(|seq| vec![[ack(seq + 7), ack(seq)].concat()], 3);
    assert_eq!(answers.len(), 3);
    assert!(
        answers
            .iter()
            .all(|a| a.result.is_ok() && a.refusal().is_none()),
        "{answers:?}"
    );
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
    let answers = answers(move |seq| vec![nlmsg(NLMSG_ERROR, 0, seq, &payload)], 1);
    assert_eq!(
        answers[0].refusal(),
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
    // This error is the only answer (no ACK follows), and the next request is answered.
    let answers = answers(
        move |seq| {
            if seq == 1 {
                vec![nlmsg(NLMSG_ERROR, 0, seq, &payload)]
            } else {
                vec![ack(seq)]
            }
        },
        2,
    );
    assert_eq!(
        answers[0].refusal(),
        Some(Refusal {
            errno: 4103,
            lineno: Some(2)
        })
    );
    assert!(answers[1].result.is_ok(), "{:?}", answers[1]);
}

#[test]
fn replies_before_the_ack_belong_to_their_request() {
    let reply = hex("02000000 05000100 07000000 05000a00 06000000");
    let answers = answers(
        move |seq| {
            let mine = if seq == 2 { &reply[..] } else { &[][..] };
            let mut datagram = Vec::new();
            if !mine.is_empty() {
                datagram.extend(nlmsg(0x0601, 0, seq, mine));
            }
            datagram.extend(ack(seq));
            vec![datagram]
        },
        3,
    );
    assert!(answers[0].replies.is_empty() && answers[2].replies.is_empty());
    assert_eq!(
        answers[1].replies,
        [IpsetMessage::new(
            IpsetCmd::Protocol,
            vec![IpsetAttr::Protocol(7), IpsetAttr::ProtocolMin(6)]
        )]
    );
}

#[test]
fn a_lost_ack_fails_its_request_only() {
    // The kernel sends nothing for request 2 (of 3): its outcome is unknown.
    let answers = answers(|seq| if seq == 2 { vec![] } else { vec![ack(seq)] }, 3);
    assert!(answers[0].result.is_ok() && answers[2].result.is_ok());
    assert!(
        matches!(answers[1].result, Err(NetlinkError::AckLost { .. })),
        "{:?}",
        answers[1]
    );
    assert_eq!(answers[1].refusal(), None);
}

#[test]
fn truncated_and_garbled_replies_are_errors_not_panics() {
    let answers = answers(
        |seq| {
            let mut short = nlmsg(NLMSG_ERROR, NLM_F_CAPPED, seq, &[0; 20]);
            short[..4].copy_from_slice(&18u32.to_ne_bytes());
            short.truncate(18);
            vec![short]
        },
        1,
    );
    assert!(
        matches!(answers[0].result, Err(NetlinkError::Malformed { .. })),
        "{:?}",
        answers[0]
    );
    // A reply whose attribute runs past its end.
    let garbled = dump(|seq| {
        vec![nlmsg(
            LIST,
            NLM_F_MULTI,
            seq,
            &hex("02000000 ff000200 53564350"),
        )]
    });
    assert!(
        matches!(garbled, Err(NetlinkError::Malformed { .. })),
        "{garbled:?}"
    );
}
