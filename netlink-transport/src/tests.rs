//! The exchanges of [`Connection`] against [`FakeKernel`]: framing, sequence and port checks,
//! overruns, malformed and truncated replies, batches with a result per request, lost ACKs.

use netlink_packet_core::{DecodeError, NLMSG_OVERRUN, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};

use crate::errno::{EEXIST, ENOBUFS};
use crate::fake::{ack, done, nlmsg, FakeKernel, Received};
use crate::{BatchLimits, Connection, NetlinkError, RawRequest, Reply};

const NLM_F_MULTI: u16 = 0x2;
/// A family message type, as rtnetlink's `RTM_NEWLINK`.
const TYPE: u16 = 16;

fn request(ty: u16, what: &str) -> RawRequest {
    RawRequest {
        bytes: nlmsg(ty, 0, 0, &[0xab; 6]),
        description: what.to_owned(),
    }
}

/// Runs `f` on the connection and collects the payloads of the replies it fed.
fn collect(
    conn: &mut Connection<FakeKernel>,
    dump: bool,
) -> (Result<(), NetlinkError>, Vec<Vec<u8>>) {
    let mut seen = Vec::new();
    let each = |r: Reply<'_>| {
        seen.push(r.payload.to_vec());
        Ok(())
    };
    let result = if dump {
        conn.dump(&request(TYPE, "get"), each)
    } else {
        conn.request(&request(TYPE, "get"), each)
    };
    (result, seen)
}

#[test]
fn a_request_is_framed_with_request_ack_and_its_own_sequence() {
    let kernel = FakeKernel::acking();
    let mut conn = Connection::new(kernel.clone());
    let create = RawRequest {
        // NLM_F_CREATE | NLM_F_EXCL, the family's own flags.
        bytes: nlmsg(TYPE, 0x600, 99, &[1, 2, 3]),
        description: "new".to_owned(),
    };
    conn.request(&create, |_| Ok(())).expect("acked");
    conn.request(&create, |_| Ok(())).expect("acked");
    let received = kernel.received();
    assert_eq!(
        received[0],
        Received {
            message_type: TYPE,
            flags: 0x600 | NLM_F_REQUEST | NLM_F_ACK,
            seq: 1,
            payload: vec![1, 2, 3],
        }
    );
    assert_eq!(received[1].seq, 2, "each request its own number");
}

#[test]
fn a_refusal_names_the_request_and_the_errno() {
    let mut conn = Connection::new(FakeKernel::new(|m| vec![ack(m.seq, 17)]));
    let error = conn
        .request(
            &request(TYPE, "IPVS_CMD_NEW_SERVICE 198.18.0.10:80"),
            |_| Ok(()),
        )
        .expect_err("refused");
    assert_eq!(error.kernel_errno(), Some(EEXIST));
    assert_eq!(
        error.to_string(),
        "netlink request 0 (IPVS_CMD_NEW_SERVICE 198.18.0.10:80, seq 1): \
         the kernel answered EEXIST (File exists)"
    );
}

#[test]
fn replies_before_the_ack_are_fed_in_order_across_datagrams() {
    let mut conn = Connection::new(FakeKernel::new(|m| {
        vec![nlmsg(TYPE, 0, m.seq, &[1, 2, 3, 4, 5]), ack(m.seq, 0)]
    }));
    let (result, seen) = collect(&mut conn, false);
    result.expect("acked");
    assert_eq!(seen, vec![vec![1, 2, 3, 4, 5]], "padding is not payload");
}

#[test]
fn a_dump_reads_every_part_until_done_and_nothing_after() {
    let kernel = FakeKernel::new(|m| {
        assert_eq!(m.flags & NLM_F_DUMP, NLM_F_DUMP);
        vec![
            [
                nlmsg(TYPE, NLM_F_MULTI, m.seq, &[1]),
                nlmsg(TYPE, NLM_F_MULTI, m.seq, &[2]),
            ]
            .concat(),
            [
                nlmsg(TYPE, NLM_F_MULTI, m.seq, &[3]),
                done(m.seq, 0),
                nlmsg(TYPE, NLM_F_MULTI, m.seq, &[4]),
            ]
            .concat(),
        ]
    });
    let mut conn = Connection::new(kernel);
    let (result, seen) = collect(&mut conn, true);
    result.expect("dump");
    assert_eq!(seen, vec![vec![1], vec![2], vec![3]]);
}

#[test]
fn a_dump_ended_by_an_errno_in_done_is_refused() {
    let mut conn = Connection::new(FakeKernel::new(|m| {
        vec![nlmsg(TYPE, NLM_F_MULTI, m.seq, &[1]), done(m.seq, 4)]
    }));
    let (result, _) = collect(&mut conn, true);
    assert_eq!(
        result.expect_err("EINTR").kernel_errno(),
        Some(crate::errno::EINTR)
    );
}

#[test]
fn replies_of_other_sequence_numbers_or_ports_are_skipped() {
    let kernel = FakeKernel::new(|m| vec![nlmsg(TYPE, 0, m.seq, &[7]), ack(m.seq, 0)]);
    // Left over from an earlier request, and one for another socket's port.
    kernel.push_datagram([ack(0, 17), nlmsg(TYPE, 0, 0, &[6])].concat());
    let mut foreign = nlmsg(TYPE, 0, 1, &[5]);
    foreign[12..16].copy_from_slice(&42u32.to_ne_bytes());
    kernel.push_datagram(foreign);
    let mut conn = Connection::new(kernel);
    let (result, seen) = collect(&mut conn, false);
    result.expect("the stale EEXIST is not ours");
    assert_eq!(seen, vec![vec![7]]);
}

#[test]
fn a_reply_that_never_comes_is_a_timeout_not_a_hang() {
    // Only a reply with the wrong sequence number arrives.
    let mut conn = Connection::new(FakeKernel::new(|m| vec![ack(m.seq.wrapping_add(5), 0)]));
    let (result, _) = collect(&mut conn, false);
    let error = result.expect_err("no ACK");
    assert!(matches!(error, NetlinkError::Timeout { .. }), "{error:?}");
    assert!(error.outcome_unknown());
}

#[test]
fn an_overrun_fails_the_dump() {
    let mut conn = Connection::new(FakeKernel::new(|m| {
        vec![
            nlmsg(TYPE, NLM_F_MULTI, m.seq, &[1]),
            nlmsg(NLMSG_OVERRUN, 0, m.seq, &[]),
            done(m.seq, 0),
        ]
    }));
    let (result, _) = collect(&mut conn, true);
    let error = result.expect_err("overrun");
    assert!(
        matches!(
            error,
            NetlinkError::Overrun {
                cause: "NLMSG_OVERRUN",
                ..
            }
        ),
        "{error:?}"
    );
    // ENOBUFS half-way through a dump: replies were dropped.
    let kernel = FakeKernel::new(|m| {
        (0..4)
            .map(|i| nlmsg(TYPE, NLM_F_MULTI, m.seq, &[i]))
            .chain([done(m.seq, 0)])
            .collect()
    })
    .with_queue_limit(2);
    let mut conn = Connection::new(kernel.clone());
    // The kernel reports the socket error before the queued replies (sock_error() in
    // __skb_try_recv_datagram), and so does the fake.
    let (result, _) = collect(&mut conn, true);
    let error = result.expect_err("ENOBUFS");
    assert!(
        matches!(
            error,
            NetlinkError::Overrun {
                cause: "ENOBUFS",
                ..
            }
        ),
        "{error:?}"
    );
}

#[test]
fn a_malformed_message_is_an_error_and_the_next_request_still_works() {
    let kernel = FakeKernel::new(|m| {
        if m.seq == 1 {
            let mut bad = nlmsg(TYPE, NLM_F_MULTI, m.seq, &[1; 8]);
            // A length past the end of the datagram.
            bad[..4].copy_from_slice(&200u32.to_ne_bytes());
            vec![
                bad,
                [nlmsg(TYPE, NLM_F_MULTI, m.seq, &[2]), done(m.seq, 0)].concat(),
            ]
        } else {
            vec![ack(m.seq, 0)]
        }
    });
    let mut conn = Connection::new(kernel.clone());
    let (result, seen) = collect(&mut conn, true);
    let error = result.expect_err("malformed");
    assert!(matches!(error, NetlinkError::Malformed { .. }), "{error:?}");
    assert!(seen.is_empty());
    assert_eq!(kernel.queued(), 1, "no further datagram was read for it");
    conn.request(&request(TYPE, "next"), |_| Ok(()))
        .expect("the rest of the failed dump is drained, then this one is acked");
    assert_eq!(kernel.queued(), 0);
}

#[test]
fn a_reply_the_family_cannot_parse_fails_its_request() {
    let mut conn = Connection::new(FakeKernel::new(|m| {
        vec![nlmsg(TYPE, 0, m.seq, &[1]), ack(m.seq, 0)]
    }));
    let error = conn
        .request(&request(TYPE, "get"), |_| {
            Err(DecodeError::from("bad attribute"))
        })
        .expect_err("undecodable");
    assert!(matches!(error, NetlinkError::Malformed { .. }), "{error:?}");
}

#[test]
fn truncated_messages_and_datagrams_are_errors_not_panics() {
    // An ACK cut short of its errno and echoed header.
    let mut conn = Connection::new(FakeKernel::new(|m| {
        let mut short = ack(m.seq, 0);
        short[..4].copy_from_slice(&18u32.to_ne_bytes());
        short.truncate(20);
        vec![short]
    }));
    let (result, _) = collect(&mut conn, false);
    assert!(
        matches!(result, Err(NetlinkError::Malformed { .. })),
        "{result:?}"
    );
    // A datagram larger than the receive buffer (64 KiB).
    let mut conn = Connection::new(FakeKernel::new(|m| {
        vec![
            nlmsg(TYPE, NLM_F_MULTI, m.seq, &vec![0; 70_000]),
            done(m.seq, 0),
        ]
    }));
    let (result, _) = collect(&mut conn, true);
    match result {
        Err(NetlinkError::Truncated { len, kept, .. }) => {
            assert_eq!((len, kept), (70_016, 65_536));
        }
        other => panic!("want Truncated, got {other:?}"),
    }
}

fn five() -> Vec<RawRequest> {
    (0..5)
        .map(|i| request(TYPE + i, &format!("op {i}")))
        .collect()
}

#[test]
fn a_batch_where_request_3_of_5_fails_has_a_result_per_request() {
    let kernel = FakeKernel::new(|m| {
        let errno = if m.message_type == TYPE + 2 { 17 } else { 0 };
        vec![ack(m.seq, errno)]
    });
    let mut conn = Connection::new(kernel.clone());
    let results = conn.batch(&five());
    assert_eq!(kernel.sends(), 1, "one datagram");
    assert_eq!(results.len(), 5);
    for (i, result) in results.iter().enumerate() {
        if i == 2 {
            let error = result.as_ref().expect_err("refused");
            assert_eq!(error.kernel_errno(), Some(EEXIST));
            let id = error.request().expect("names its request");
            assert_eq!((id.index, id.seq, id.description.as_str()), (2, 3, "op 2"));
        } else {
            assert!(result.is_ok(), "request {i}: {result:?}");
        }
    }
    let seqs: Vec<u32> = kernel.received().iter().map(|m| m.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    assert!(kernel
        .received()
        .iter()
        .all(|m| m.flags == NLM_F_REQUEST | NLM_F_ACK));
}

#[test]
fn a_batch_is_cut_into_datagrams_by_the_limits() {
    let kernel = FakeKernel::acking();
    let mut conn = Connection::new(kernel.clone());
    conn.set_limits(BatchLimits {
        ops: 2,
        bytes: 1 << 20,
    });
    let results = conn.batch(&five());
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(kernel.sends(), 3);
}

#[test]
fn lost_acks_are_reported_per_request_as_unknown_not_success() {
    // The receive queue holds 3 ACKs; the kernel drops the other two (ENOBUFS).
    let kernel = FakeKernel::acking().with_queue_limit(3);
    let mut conn = Connection::new(kernel);
    let results = conn.batch(&five());
    assert!(results[..3].iter().all(Result::is_ok), "{results:?}");
    for (i, result) in results.iter().enumerate().skip(3) {
        match result {
            Err(e @ NetlinkError::AckLost { request, errno }) => {
                assert_eq!((request.index, *errno), (i, Some(ENOBUFS)));
                assert!(e.outcome_unknown());
            }
            other => panic!("request {i}: want AckLost, got {other:?}"),
        }
    }
}

#[test]
fn a_batch_without_some_acks_and_no_enobufs_reports_them_lost() {
    let kernel = FakeKernel::new(|m| {
        if m.message_type == TYPE + 4 {
            vec![]
        } else {
            vec![ack(m.seq, 0)]
        }
    });
    let results = Connection::new(kernel).batch(&five());
    assert!(matches!(
        results[4],
        Err(NetlinkError::AckLost { errno: None, .. })
    ));
    assert!(results[..4].iter().all(Result::is_ok));
}

#[test]
fn a_lost_ack_of_a_single_request_is_unknown() {
    // The reply fits, the ACK is dropped.
    let kernel =
        FakeKernel::new(|m| vec![nlmsg(TYPE, 0, m.seq, &[1]), ack(m.seq, 0)]).with_queue_limit(1);
    let mut conn = Connection::new(kernel);
    let (result, seen) = collect(&mut conn, false);
    assert_eq!(seen.len(), 1);
    assert!(
        matches!(
            result,
            Err(NetlinkError::AckLost {
                errno: Some(ENOBUFS),
                ..
            })
        ),
        "{result:?}"
    );
}

#[test]
fn batch_replies_go_to_their_request() {
    let kernel = FakeKernel::new(|m| vec![nlmsg(TYPE, 0, m.seq, &[m.seq as u8]), ack(m.seq, 0)]);
    let mut conn = Connection::new(kernel);
    let mut seen = Vec::new();
    let results = conn.batch_with_replies(&five(), |i, r| {
        seen.push((i, r.payload[0]));
        Ok(())
    });
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(seen, vec![(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]);
}

#[test]
fn a_netlink_packet_core_message_frames_as_if_finalized() {
    use crate::Request;
    use netlink_packet_core::NetlinkMessage;
    use netlink_packet_route::{link::LinkMessage, RouteNetlinkMessage};

    let mut link = LinkMessage::default();
    link.header.index = 7;
    let message = NetlinkMessage::from(RouteNetlinkMessage::GetLink(link));
    let mut ours = vec![0xee; 3];
    message.emit_message(&mut ours);
    let mut finalized = message.clone();
    finalized.finalize();
    let mut want = vec![0u8; finalized.buffer_len()];
    finalized.serialize(&mut want);
    assert_eq!(&ours[..3], &[0xee; 3], "appended, not overwritten");
    assert_eq!(&ours[3..], &want[..]);
}
