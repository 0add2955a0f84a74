//! The transport over a real `NETLINK_ROUTE` socket, in a fresh network namespace per test
//! (testkit's `in_new_netns`): a dump, a refused request, a batch with one refusal among
//! five, a batch whose ACKs overflow the receive buffer, and address notifications, received
//! and lost.

use std::net::Ipv4Addr;

use netlink_packet_core::{
    NetlinkDeserializable, NetlinkHeader, NetlinkMessage, NLM_F_CREATE, NLM_F_EXCL,
};
use netlink_packet_route::{
    address::{AddressAttribute, AddressMessage},
    link::{LinkAttribute, LinkFlags, LinkMessage},
    AddressFamily, RouteNetlinkMessage,
};
use netlink_transport::{
    errno::{EEXIST, ENOBUFS, ENODEV},
    BatchLimits, Connection, NetlinkError, Notifications, Protocol, Reply,
};

/// `RTNLGRP_IPV4_IFADDR` (`include/uapi/linux/rtnetlink.h`).
const RTNLGRP_IPV4_IFADDR: u32 = 5;

fn route(message: RouteNetlinkMessage, flags: u16) -> NetlinkMessage<RouteNetlinkMessage> {
    let mut message = NetlinkMessage::from(message);
    message.header.flags = flags;
    message
}

/// The rtnetlink message of a reply.
fn parse(reply: Reply<'_>) -> RouteNetlinkMessage {
    let mut header = NetlinkHeader::default();
    header.message_type = reply.message_type;
    RouteNetlinkMessage::deserialize(&header, reply.payload).expect("a valid rtnetlink reply")
}

fn links(conn: &mut Connection) -> Vec<LinkMessage> {
    let mut links = Vec::new();
    conn.dump(
        &route(RouteNetlinkMessage::GetLink(LinkMessage::default()), 0),
        |reply| {
            if let RouteNetlinkMessage::NewLink(link) = parse(reply) {
                links.push(link);
            }
            Ok(())
        },
    )
    .expect("dump links");
    links
}

fn name(link: &LinkMessage) -> Option<&str> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(name) => Some(name.as_str()),
        _ => None,
    })
}

/// `lo`'s index, after setting it up.
fn lo_up(conn: &mut Connection) -> u32 {
    let links = links(conn);
    let lo = links.iter().find(|l| name(l) == Some("lo")).expect("lo");
    let mut up = LinkMessage::default();
    up.header.index = lo.header.index;
    up.header.flags = LinkFlags::Up;
    up.header.change_mask = LinkFlags::Up;
    conn.request(&route(RouteNetlinkMessage::SetLink(up), 0), |_| Ok(()))
        .expect("lo up");
    lo.header.index
}

fn add_address(index: u32, ip: Ipv4Addr) -> NetlinkMessage<RouteNetlinkMessage> {
    let mut msg = AddressMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.prefix_len = 32;
    msg.header.index = index;
    msg.attributes.push(AddressAttribute::Local(ip.into()));
    msg.attributes.push(AddressAttribute::Address(ip.into()));
    route(
        RouteNetlinkMessage::NewAddress(msg),
        NLM_F_CREATE | NLM_F_EXCL,
    )
}

fn addresses(conn: &mut Connection) -> usize {
    let mut count = 0;
    let mut get = AddressMessage::default();
    get.header.family = AddressFamily::Inet;
    conn.dump(&route(RouteNetlinkMessage::GetAddress(get), 0), |reply| {
        if let RouteNetlinkMessage::NewAddress(a) = parse(reply) {
            // 127.0.0.1 is there too; count ours.
            count += usize::from(a.attributes.iter().any(|attr| {
                matches!(attr, AddressAttribute::Local(ip) if ip.to_string().starts_with("198.18."))
            }));
        }
        Ok(())
    })
    .expect("dump addresses");
    count
}

fn nth(i: usize) -> Ipv4Addr {
    let [hi, lo] = u16::try_from(i).expect("small test index").to_be_bytes();
    Ipv4Addr::new(198, 18, 32 + hi, lo)
}

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn a_fresh_namespace_dumps_exactly_loopback() {
    testkit::netns::in_new_netns(|| {
        let mut conn = Connection::open(Protocol::Route).expect("rtnetlink socket");
        let links = links(&mut conn);
        let names: Vec<Option<&str>> = links.iter().map(name).collect();
        assert_eq!(names, vec![Some("lo")]);
        // Again on the same socket: sequence numbers move on, nothing stale is left.
        assert_eq!(self::links(&mut conn).len(), 1);
    });
}

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn a_refused_request_carries_the_kernels_errno() {
    testkit::netns::in_new_netns(|| {
        let mut conn = Connection::open(Protocol::Route).expect("rtnetlink socket");
        let mut gone = LinkMessage::default();
        gone.header.index = 9_999;
        let error = conn
            .request(&route(RouteNetlinkMessage::DelLink(gone), 0), |_| Ok(()))
            .expect_err("no link 9999");
        assert_eq!(error.kernel_errno(), Some(ENODEV), "{error}");
        assert!(
            error.to_string().contains("ENODEV (No such device)"),
            "{error}"
        );
    });
}

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn a_batch_of_five_with_a_duplicate_third_has_a_result_each() {
    testkit::netns::in_new_netns(|| {
        let mut conn = Connection::open(Protocol::Route).expect("rtnetlink socket");
        let lo = lo_up(&mut conn);
        let ips = [nth(0), nth(1), nth(0), nth(2), nth(3)];
        let requests: Vec<_> = ips.iter().map(|&ip| add_address(lo, ip)).collect();
        let results = conn.batch(&requests);
        for (i, result) in results.iter().enumerate() {
            if i == 2 {
                let error = result.as_ref().expect_err("a duplicate with NLM_F_EXCL");
                assert_eq!(error.kernel_errno(), Some(EEXIST), "{error}");
                assert_eq!(error.request().map(|r| r.index), Some(2));
            } else {
                assert!(result.is_ok(), "request {i}: {result:?}");
            }
        }
        assert_eq!(addresses(&mut conn), 4);
    });
}

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn acks_dropped_by_a_full_buffer_are_lost_not_successes_and_nothing_hangs() {
    testkit::netns::in_new_netns(|| {
        let mut conn = Connection::open(Protocol::Route).expect("rtnetlink socket");
        let lo = lo_up(&mut conn);
        // Room for a handful of ACKs, and one datagram for all 1,000 requests.
        conn.io_mut().force_rcvbuf(4_096).expect("SO_RCVBUFFORCE");
        conn.set_limits(BatchLimits {
            ops: 1_000,
            bytes: 1 << 20,
        });
        let requests: Vec<_> = (0..1_000).map(|i| add_address(lo, nth(i))).collect();
        let results = conn.batch(&requests);
        let lost: Vec<&NetlinkError> = results.iter().filter_map(|r| r.as_ref().err()).collect();
        assert!(!lost.is_empty(), "a 4 KiB buffer cannot hold 1,000 ACKs");
        for error in &lost {
            assert!(
                matches!(error, NetlinkError::AckLost { errno: Some(e), .. } if *e == ENOBUFS),
                "{error:?}"
            );
        }
        conn.io_mut().force_rcvbuf(1 << 20).expect("SO_RCVBUFFORCE");
        // The kernel did every request, acknowledged or not, and the socket still works.
        assert_eq!(addresses(&mut conn), 1_000);
    });
}

/// The IPv4 `IFA_LOCAL` addresses of the `RTM_NEWADDR` notifications one receive gets.
fn new_addresses(conn: &mut Connection, wait: bool) -> (Notifications, Vec<String>) {
    let mut added = Vec::new();
    let outcome = conn
        .recv_notifications(wait, |reply| {
            if let RouteNetlinkMessage::NewAddress(a) = parse(reply) {
                added.extend(a.attributes.iter().filter_map(|attr| match attr {
                    AddressAttribute::Local(ip) => Some(ip.to_string()),
                    _ => None,
                }));
            }
            Ok(())
        })
        .expect("notifications");
    (outcome, added)
}

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn a_subscribed_connection_receives_the_changes_another_makes() {
    testkit::netns::in_new_netns(|| {
        let mut changer = Connection::open(Protocol::Route).expect("rtnetlink socket");
        let lo = lo_up(&mut changer);
        let mut watcher = Connection::open(Protocol::Route).expect("rtnetlink socket");
        watcher.join_group(RTNLGRP_IPV4_IFADDR).expect("join");
        assert_eq!(new_addresses(&mut watcher, false).0, Notifications::Idle);
        changer
            .request(&add_address(lo, nth(7)), |_| Ok(()))
            .expect("add");
        let (outcome, added) = new_addresses(&mut watcher, true);
        assert_eq!(outcome, Notifications::Received(1));
        assert_eq!(added, vec![nth(7).to_string()]);
        // A change during a dump on the watcher's own socket is kept for after it.
        changer
            .request(&add_address(lo, nth(8)), |_| Ok(()))
            .expect("add");
        assert_eq!(addresses(&mut watcher), 2);
        let (outcome, added) = new_addresses(&mut watcher, true);
        assert_eq!(outcome, Notifications::Received(1));
        assert_eq!(added, vec![nth(8).to_string()]);
        assert_eq!(new_addresses(&mut watcher, false).0, Notifications::Idle);
    });
}

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn notifications_past_a_full_buffer_are_lost_once_and_a_dump_resumes() {
    testkit::netns::in_new_netns(|| {
        let mut changer = Connection::open(Protocol::Route).expect("rtnetlink socket");
        let lo = lo_up(&mut changer);
        let mut watcher = Connection::open(Protocol::Route).expect("rtnetlink socket");
        watcher.join_group(RTNLGRP_IPV4_IFADDR).expect("join");
        // Room for a handful of notifications; 300 changes overflow it.
        watcher
            .io_mut()
            .force_rcvbuf(4_096)
            .expect("SO_RCVBUFFORCE");
        let requests: Vec<_> = (0..300).map(|i| add_address(lo, nth(i))).collect();
        assert!(changer.batch(&requests).iter().all(Result::is_ok));
        let (outcome, added) = new_addresses(&mut watcher, true);
        assert_eq!(outcome, Notifications::Lost, "{} came first", added.len());
        assert_eq!(
            new_addresses(&mut watcher, false).0,
            Notifications::Idle,
            "reported once, the queue discarded"
        );
        watcher
            .io_mut()
            .force_rcvbuf(1 << 20)
            .expect("SO_RCVBUFFORCE");
        assert_eq!(addresses(&mut watcher), 300, "the dump again");
        changer
            .request(&add_address(lo, nth(300)), |_| Ok(()))
            .expect("add");
        let (outcome, added) = new_addresses(&mut watcher, true);
        assert_eq!(outcome, Notifications::Received(1));
        assert_eq!(added, vec![nth(300).to_string()]);
    });
}
