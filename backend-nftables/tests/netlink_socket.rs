//! [`NftSocket`] over the transport's fake kernel: a transaction is one datagram (BEGIN,
//! messages with `NLM_F_ACK` and consecutive sequence numbers, END), errors come back on the
//! message that caused them, a failed commit fails the whole transaction, lost ACKs are
//! "unknown", never success; dumps parse the kernel's replies (captured ones).

mod netlink_support;

use backend_nftables::netlink::{
    committed, data::value, Expr, MsgType, NftMessage, NftObject, NftSocket, ProtoFamily, RuleAttr,
    SetElemAttr, SetElemListAttr, TableAttr, Verdict,
};
use netlink_support::{datagrams, split};
use netlink_transport::errno::{ENOBUFS, ENOENT};
use netlink_transport::fake::{ack, done, FakeKernel, Received, FAKE_PORT};
use netlink_transport::Errno;
use netlink_transport::NetlinkError;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const BATCH_BEGIN: u16 = 0x10;
const BATCH_END: u16 = 0x11;
/// `ENOMEM`.
const ENOMEM: Errno = Errno::new(12);

fn table() -> NftMessage {
    NftMessage::new(
        MsgType::NewTable,
        ProtoFamily::Inet,
        NftObject::Table(vec![TableAttr::Name("svcptest".into())]),
    )
}

fn element(set: &str, last_octet: u8) -> NftMessage {
    NftMessage::new(
        MsgType::NewSetElem,
        ProtoFamily::Inet,
        NftObject::SetElems(vec![
            SetElemListAttr::Table("svcptest".into()),
            SetElemListAttr::Set(set.into()),
            SetElemListAttr::Elements(vec![vec![SetElemAttr::Key(value([
                198, 18, 0, last_octet,
            ]))]]),
        ]),
    )
}

fn three() -> Vec<NftMessage> {
    vec![
        table(),
        element("cluster-ips", 1),
        element("cluster-ips", 2),
    ]
}

/// A kernel that ACKs what asks for it and answers `refuse(message) = errno` otherwise.
fn kernel(mut refuse: impl FnMut(&Received) -> i32 + Send + 'static) -> FakeKernel {
    FakeKernel::new(move |m| {
        let errno = refuse(m);
        if errno != 0 || m.flags & NLM_F_ACK != 0 {
            vec![ack(m.seq, errno)]
        } else {
            vec![]
        }
    })
}

#[test]
fn a_transaction_is_one_datagram_with_begin_and_end_around_acked_messages() {
    let fake = kernel(|_| 0);
    let mut socket = NftSocket::new(fake.clone());
    let outcome = socket.transaction(&three());
    assert!(committed(&outcome), "{outcome:?}");
    assert_eq!(outcome.expect("sent").len(), 3);
    assert_eq!(fake.sends(), 1, "BEGIN ... END in one datagram");
    let got = fake.received();
    let types: Vec<u16> = got.iter().map(|m| m.message_type).collect();
    assert_eq!(types, vec![BATCH_BEGIN, 0x0a00, 0x0a0c, 0x0a0c, BATCH_END]);
    let flags: Vec<u16> = got.iter().map(|m| m.flags).collect();
    assert_eq!(
        flags,
        vec![
            NLM_F_REQUEST,
            NLM_F_REQUEST | NLM_F_ACK,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE,
            NLM_F_REQUEST,
        ],
        "BEGIN and END carry no NLM_F_ACK: kernels before 6.10 never answer them"
    );
    let first = got[0].seq;
    let seqs: Vec<u32> = got.iter().map(|m| m.seq.wrapping_sub(first)).collect();
    assert_eq!(seqs, vec![0, 1, 2, 3, 4], "consecutive sequence numbers");
    // BEGIN's res_id names the subsystem: NFNL_SUBSYS_NFTABLES, big-endian.
    assert_eq!(got[0].payload, vec![0, 0, 0, 10]);

    // The next transaction does not reuse the numbers.
    let again = socket.transaction(&three());
    assert!(committed(&again));
    assert_eq!(fake.received()[5].seq, first.wrapping_add(5));
}

#[test]
fn a_refused_message_is_reported_on_that_message_and_the_rest_is_rolled_back() {
    // The kernel refuses the second element (its set does not exist), answers the others.
    let fake = kernel(|m| {
        if m.message_type == 0x0a0c && m.payload.windows(4).any(|w| w == [198, 18, 0, 2]) {
            ENOENT.raw()
        } else {
            0
        }
    });
    let mut socket = NftSocket::new(fake);
    let outcome = socket.transaction(&three());
    assert!(!committed(&outcome), "one failure aborts the batch");
    let results = outcome.expect("the transaction was sent");
    assert!(results[0].is_ok() && results[1].is_ok(), "{results:?}");
    match &results[2] {
        Err(NetlinkError::Kernel { request, errno, .. }) => {
            assert_eq!(*errno, ENOENT);
            assert_eq!(request.index, 2);
            assert_eq!(
                request.description,
                "NFT_MSG_NEWSETELEM svcptest/cluster-ips (1 elements)"
            );
        }
        other => panic!("want ENOENT on message 2, got {other:?}"),
    }
}

#[test]
fn a_failed_commit_fails_the_whole_transaction() {
    // nfnetlink answers a failed commit against the batch's first message (BEGIN).
    let fake = FakeKernel::new(|m| match m.message_type {
        BATCH_BEGIN => vec![ack(m.seq, ENOMEM.raw())],
        BATCH_END => vec![],
        _ => vec![ack(m.seq, 0)],
    });
    let mut socket = NftSocket::new(fake);
    let outcome = socket.transaction(&three());
    assert!(!committed(&outcome));
    match outcome {
        Err(NetlinkError::Kernel { errno, request, .. }) => {
            assert_eq!(errno, ENOMEM);
            assert!(request.description.contains("the commit"), "{request}");
        }
        other => panic!("want the commit's ENOMEM, got {other:?}"),
    }
}

#[test]
fn without_acks_only_errors_come_back_and_silence_is_success() {
    let fake = kernel(|m| {
        if m.message_type == 0x0a0c && m.payload.windows(4).any(|w| w == [198, 18, 0, 1]) {
            ENOENT.raw()
        } else {
            0
        }
    });
    let mut socket = NftSocket::new(fake.clone());
    let results = socket.transaction_errors_only(&three()).expect("sent");
    assert!(fake.received().iter().all(|m| m.flags & NLM_F_ACK == 0));
    assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
    assert!(
        matches!(&results[1], Err(NetlinkError::Kernel { errno, .. }) if *errno == ENOENT),
        "{results:?}"
    );

    // Dropped replies make silence unknown, not success.
    let fake = kernel(|m| {
        if m.message_type >> 8 == 0x0a {
            ENOENT.raw()
        } else {
            0
        }
    })
    .with_queue_limit(1);
    let mut socket = NftSocket::new(fake);
    let results = socket.transaction_errors_only(&three()).expect("sent");
    assert!(results[0].is_err());
    assert!(
        results[1..]
            .iter()
            .all(|r| matches!(r, Err(NetlinkError::AckLost { .. }))),
        "{results:?}"
    );
}

#[test]
fn lost_acks_are_unknown_outcomes_not_successes() {
    // Room for one reply: the others are dropped and recv reports ENOBUFS.
    let fake = kernel(|_| 0).with_queue_limit(1);
    let mut socket = NftSocket::new(fake);
    let outcome = socket.transaction(&three());
    assert!(!committed(&outcome));
    let results = outcome.expect("sent");
    assert!(results[0].is_ok());
    for r in &results[1..] {
        match r {
            Err(e @ NetlinkError::AckLost { errno, .. }) => {
                assert_eq!(*errno, Some(ENOBUFS));
                assert!(e.outcome_unknown());
            }
            other => panic!("want AckLost, got {other:?}"),
        }
    }
}

#[test]
fn stale_and_foreign_replies_are_skipped() {
    let fake = kernel(|_| 0);
    // An ACK of an earlier exchange, and one for another port, queued before ours.
    fake.push_datagram(ack(7, ENOENT.raw()));
    let mut foreign = ack(0x4000_0001, ENOENT.raw());
    foreign[12..16].copy_from_slice(&(FAKE_PORT + 1).to_ne_bytes());
    fake.push_datagram(foreign);
    let mut socket = NftSocket::new(fake);
    assert!(committed(&socket.transaction(&three())));
}

#[test]
fn a_transaction_larger_than_the_send_buffer_is_refused_before_sending() {
    let fake = kernel(|_| 0);
    let mut socket = NftSocket::new(fake.clone());
    // 20,000 messages of 64 bytes: above the fake's 1 MiB send buffer.
    let big: Vec<NftMessage> = (0..20_000u32)
        .map(|i| element("cluster-ips", (i % 250) as u8))
        .collect();
    match socket.transaction(&big) {
        Err(NetlinkError::Send { request, source }) => {
            assert_eq!(source.raw_os_error(), Some(90), "EMSGSIZE");
            assert!(request.description.contains("send buffer"), "{request}");
        }
        other => panic!("want EMSGSIZE before sending, got {other:?}"),
    }
    assert_eq!(fake.sends(), 0, "never split: nothing was sent");
}

#[test]
fn an_attribute_over_64_kib_is_refused_and_element_lists_split_below_it() {
    let fake = kernel(|_| 0);
    let mut socket = NftSocket::new(fake.clone());
    let elements: Vec<Vec<SetElemAttr>> = (0..5_000u32)
        .map(|i| vec![SetElemAttr::Key(value(i.to_be_bytes()))])
        .collect();
    let one = NftMessage::new(
        MsgType::NewSetElem,
        ProtoFamily::Inet,
        NftObject::SetElems(vec![
            SetElemListAttr::Table("svcptest".into()),
            SetElemListAttr::Set("cluster-ips".into()),
            SetElemListAttr::Elements(elements.clone()),
        ]),
    );
    // nla_len is 16 bits: 5,000 elements of 20 bytes do not fit one attribute.
    match socket.transaction(std::slice::from_ref(&one)) {
        Err(NetlinkError::Send { request, source }) => {
            assert_eq!(source.raw_os_error(), Some(90), "EMSGSIZE");
            assert!(request.description.contains("65535"), "{request}");
        }
        other => panic!("want EMSGSIZE, got {other:?}"),
    }
    assert_eq!(fake.sends(), 0);
    let split = NftMessage::set_elements(
        MsgType::NewSetElem,
        ProtoFamily::Inet,
        "svcptest",
        "cluster-ips",
        elements.clone(),
    );
    assert!(split.len() > 1);
    let mut back = Vec::new();
    for m in &split {
        if let NftObject::SetElems(attrs) = &m.object {
            for a in attrs {
                if let SetElemListAttr::Elements(e) = a {
                    back.extend(e.clone());
                }
            }
        }
    }
    assert_eq!(back, elements, "every element once, in order");
    assert!(committed(&socket.transaction(&split)));
}

/// The captured dump replies (`nft list table`) of one message type, re-addressed to
/// sequence number `seq` and the fake's port.
fn captured_replies(message_type: u16, seq: u32) -> Vec<u8> {
    let mut out = Vec::new();
    for (kind, datagram) in datagrams(include_str!("captures/list_table.hex")) {
        if kind != "recvmsg" {
            continue;
        }
        for mut m in split(&datagram) {
            if u16::from_ne_bytes([m[4], m[5]]) == message_type {
                m[8..12].copy_from_slice(&seq.to_ne_bytes());
                m[12..16].copy_from_slice(&FAKE_PORT.to_ne_bytes());
                m.resize((m.len() + 3) & !3, 0);
                out.extend(m);
            }
        }
    }
    out.extend(done(seq, 0));
    out
}

#[test]
fn dumps_send_the_table_filter_and_parse_the_kernels_replies() {
    // A GET dump is answered with NEW messages (NFT_MSG_GETRULE - 1 is NFT_MSG_NEWRULE).
    let fake = FakeKernel::new(|m| vec![captured_replies(m.message_type - 1, m.seq)]);
    let mut socket = NftSocket::new(fake.clone());

    let rules = socket
        .list_rules(ProtoFamily::Inet, "svcptest", None)
        .expect("rules");
    assert_eq!(rules.len(), 18);
    let first = &rules[0];
    assert!(first.contains(&RuleAttr::Chain("nat-prerouting".into())));
    assert!(
        first.contains(&RuleAttr::Expressions(vec![Expr::verdict(Verdict::Jump(
            "services".into()
        ))]))
    );
    let request = &fake.received()[0];
    assert_eq!(request.flags, 0x301, "NLM_F_REQUEST | NLM_F_DUMP");
    assert_eq!(request.payload[0], 1, "NFPROTO_INET");

    let elements = socket
        .list_set_elements(ProtoFamily::Inet, "svcptest", "service-ips")
        .expect("elements");
    // The capture holds the replies of every set's dump: 4 + 2 + 1 + 3 + 1 (with the
    // interval set's ends).
    assert!(elements.len() >= 4, "{elements:?}");
    let chains = socket
        .list_chains(ProtoFamily::Inet, "svcptest")
        .expect("chains");
    assert_eq!(chains.len(), 8);
    let sets = socket
        .list_sets(ProtoFamily::Inet, "svcptest")
        .expect("sets");
    assert_eq!(sets.len(), 5);
    let other_table = socket.list_sets(ProtoFamily::Inet, "other").expect("sets");
    assert!(
        other_table.is_empty(),
        "objects of other tables are filtered out"
    );
}
