//! The apply step over the transport's fake kernel: a plan becomes one transaction whose
//! element changes are grouped per set, a refused message is reported against the change and
//! the service port it came from, and one endpoint change costs the same messages at any size.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use backend_nftables::apply::{apply, transaction_messages, ApplyError, Encoder};
use backend_nftables::config::NftablesConfig;
use backend_nftables::model::{Family, Key, Value, Verdict};
use backend_nftables::names::{ChainName, SetName};
use backend_nftables::netlink::{MsgType, NftSocket};
use backend_nftables::plan::{desired, plan, Change};
use netlink_transport::errno::ENOENT;
use netlink_transport::fake::{ack, FakeKernel};
use proxy_core::diff::diff;
use proxy_core::table::{Endpoint, Protocol, ServicePort, ServicePortName, ServiceTable};

const NLM_F_ACK: u16 = 0x4;
const NEWSETELEM: u16 = 0x0a0c;

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn service(i: usize, endpoints: usize) -> ServicePort {
    let [_, _, hi, lo] = u32::try_from(i).expect("small").to_be_bytes();
    let mut p = ServicePort::new(
        ServicePortName::new("ns", format!("svc-{i}"), ""),
        Protocol::Tcp,
        80,
    )
    .with_cluster_ip(v4(198, 19, hi, lo));
    for e in 0..endpoints {
        let e = u8::try_from(e).expect("small");
        p = p.with_endpoint(Endpoint::new(v4(198, 18, hi, lo.wrapping_add(e)), 8080));
    }
    p
}

fn table(n: usize, first_endpoints: usize) -> ServiceTable {
    let mut b = ServiceTable::builder().node("node-a");
    for i in 0..n {
        b = b.insert(service(i, if i == 0 { first_endpoints } else { 3 }));
    }
    b.build().expect("valid table")
}

#[test]
fn element_changes_of_one_set_share_one_message_and_map_back_to_their_changes() {
    let changes: Vec<Change> = (0..3u8)
        .map(|i| {
            Change::AddElement(
                SetName::ClusterIps(Family::V4),
                Key::Addr(v4(198, 19, 0, i)),
                Value::None,
            )
        })
        .chain([Change::DeleteElement(
            SetName::Hairpin(Family::V4),
            Key::Pair(v4(198, 18, 0, 1), v4(198, 18, 0, 1)),
        )])
        .collect();
    let (messages, origins) = transaction_messages(&mut Encoder::new("svcproxy"), &changes);
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert_eq!(messages[0].msg_type, MsgType::NewSetElem);
    assert_eq!(messages[1].msg_type, MsgType::DelSetElem);
    assert_eq!(origins, vec![0..3, 3..4]);
}

#[test]
fn a_refused_message_names_its_change_and_service_port() {
    let fake = FakeKernel::new(|m| {
        let errno = if m.message_type == NEWSETELEM {
            ENOENT.raw()
        } else {
            0
        };
        if errno != 0 || m.flags & NLM_F_ACK != 0 {
            vec![ack(m.seq, errno)]
        } else {
            vec![]
        }
    });
    let mut socket = NftSocket::new(fake.clone());
    let changes = vec![
        Change::AddChain(ChainName::Service(1), None),
        Change::AddElement(
            SetName::ServiceIps(Family::V4),
            Key::Dest {
                addr: v4(198, 19, 0, 10),
                proto: Protocol::Tcp,
                port: 80,
            },
            Value::Verdict(Verdict::Goto(ChainName::Service(1))),
        ),
    ];
    let err = apply(&mut socket, "svcproxy", &changes).expect_err("refused");
    match &err {
        ApplyError::Change {
            change, service, ..
        } => {
            assert!(
                change.starts_with(
                    "add element inet svcproxy service-ips-v4 { 198.19.0.10 . tcp . 80"
                ),
                "{change}"
            );
            assert_eq!(service, "198.19.0.10 . tcp . 80");
        }
        other => panic!("not a change error: {other}"),
    }
    assert_eq!(fake.sends(), 1, "one transaction");
    let text = err.to_string();
    assert!(
        text.contains("service-ips-v4") && text.contains("198.19.0.10 . tcp . 80"),
        "{text}"
    );
}

#[test]
fn one_endpoint_change_costs_the_same_messages_at_any_size() {
    let config = NftablesConfig::default();
    let node = BTreeSet::new();
    let mut counts = Vec::new();
    for n in [10, 2000] {
        let before = table(n, 3);
        let after = table(n, 4);
        let mut d = desired(&before, &config, &node);
        let kernel = d.table.clone();
        let changes = diff(&before, &after);
        d.update(&changes);
        let steps = plan(&d, Some(&kernel), Some(&changes));
        let (messages, _) = transaction_messages(&mut Encoder::new("svcproxy"), &steps);
        counts.push(messages.len());
    }
    assert_eq!(
        counts[0], counts[1],
        "messages at 10 and 2,000 services: {counts:?}"
    );
    assert!(counts[0] <= 12, "{counts:?}");
}

#[test]
fn purge_lists_the_affinity_map_only_when_asked() {
    // A plan without PurgeAffinity never dumps; with one, the dump of a missing map (ENOENT,
    // IPv6 has none) is nothing to purge.
    let fake = FakeKernel::new(|m| {
        if m.message_type == 0x0a0d {
            vec![ack(m.seq, ENOENT.raw())]
        } else if m.flags & NLM_F_ACK != 0 {
            vec![ack(m.seq, 0)]
        } else {
            vec![]
        }
    });
    let mut socket = NftSocket::new(fake.clone());
    let ep = SocketAddr::new(v4(198, 18, 0, 1), 8080);
    let sent = apply(
        &mut socket,
        "svcproxy",
        &[Change::PurgeAffinity(Family::V6, ep)],
    )
    .expect("nothing to purge");
    assert_eq!(sent, 0);
    assert_eq!(fake.sends(), 1, "one dump, no transaction");
}

#[test]
fn encoded_element_lists_are_the_attribute_form_byte_for_byte() {
    use netlink_packet_core::Emitable;
    // 3,000 services x 4 endpoints: the endpoints map's additions span several messages
    // (each list stays under the 64 KiB attribute limit), and a delete run follows.
    let mut table = ServiceTable::builder().node("node-a");
    for i in 0..3_000 {
        table = table.insert(service(i, 4));
    }
    let table = table.build().expect("valid");
    let mut changes = plan(
        &desired(&table, &NftablesConfig::default(), &BTreeSet::new()),
        None,
        None,
    );
    changes.extend((0..50).map(|i| {
        Change::DeleteElement(
            SetName::ClusterIps(Family::V4),
            Key::Addr(v4(198, 19, 0, i)),
        )
    }));
    let (plain, plain_origins) = transaction_messages(&mut Encoder::new("svcproxy"), &changes);
    let (encoded, encoded_origins) = transaction_messages(
        &mut Encoder::new("svcproxy").with_encoded_elements(),
        &changes,
    );
    assert!(
        plain.len() > 4,
        "the endpoints run is split: {} messages",
        plain.len()
    );
    assert_eq!(plain.len(), encoded.len());
    assert_eq!(plain_origins, encoded_origins);
    let bytes = |m: &backend_nftables::netlink::NftMessage| {
        let mut b = vec![0; m.buffer_len()];
        m.emit(&mut b);
        b
    };
    for (i, (p, e)) in plain.iter().zip(&encoded).enumerate() {
        assert_eq!(p.msg_type, e.msg_type, "message {i}");
        assert_eq!(bytes(p), bytes(e), "message {i} ({:?})", p.msg_type);
    }
}
