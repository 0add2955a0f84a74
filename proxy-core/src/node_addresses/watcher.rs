//! The kernel source of [`super::NodeAddresses`]: an rtnetlink connection (on the workspace's
//! one netlink transport, `netlink-transport`) subscribed to the address groups, a dump at
//! start and after lost notifications, and the notifications in between.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use netlink_packet_core::{
    NetlinkDeserializable, NetlinkHeader, NetlinkMessage, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_transport::{
    Connection, Datagrams, Notifications, Protocol, Reply, SocketOptions, SysSocket,
};
use tokio::sync::watch;
use tracing::{debug, warn};

use super::{publish, AddressSet, NodeAddress, NodeAddressError};

/// `RTNLGRP_IPV4_IFADDR` (`include/uapi/linux/rtnetlink.h`): IPv4 address changes.
const RTNLGRP_IPV4_IFADDR: u32 = 5;
/// `RTNLGRP_IPV6_IFADDR`: IPv6 address changes.
const RTNLGRP_IPV6_IFADDR: u32 = 9;
/// How often the watcher thread wakes without news, to notice that nobody listens any more.
const IDLE_WAKE: Duration = Duration::from_secs(1);
/// The most datagrams of one burst read before publishing what they said.
const BURST_ROUNDS: usize = 1024;
/// The receive buffer asked for: a burst of address changes (thousands of VIPs bound by a
/// backend) should not overflow it; if it does, the watcher dumps again.
const RECV_BUFFER_BYTES: usize = 4 << 20;

/// Whether the kernel watcher keeps `ip`: not loopback (node ports are for other hosts) and not
/// IPv6 link-local (it cannot be bound without naming its interface).
pub(super) fn is_node_port_candidate(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !v4.is_loopback(),
        IpAddr::V6(v6) => !v6.is_loopback() && (v6.segments()[0] & 0xffc0) != 0xfe80,
    }
}

/// The rtnetlink connection subscribed to address changes (on the workspace's one netlink
/// transport), and the addresses seen so far.
pub(super) struct Watcher<D: Datagrams = SysSocket> {
    conn: Connection<D>,
    pub(super) addresses: AddressSet,
    excluded: Arc<Mutex<BTreeSet<u32>>>,
}

impl Watcher {
    pub(super) fn open(excluded: Arc<Mutex<BTreeSet<u32>>>) -> Result<Self, NodeAddressError> {
        let options = SocketOptions {
            // The watcher wakes this often without news, to notice that nobody listens.
            recv_timeout: IDLE_WAKE,
            // A burst of address changes (thousands of VIPs bound by a backend) should not
            // overflow it; if it does, the watcher dumps again.
            rcvbuf_bytes: RECV_BUFFER_BYTES,
            ..SocketOptions::default()
        };
        let conn = Connection::open_with(Protocol::Route, options)
            .map_err(|e| NodeAddressError::Open(e.into_io()))?;
        Watcher::subscribe(conn, excluded)
    }
}

impl<D: Datagrams> Watcher<D> {
    /// Joins the address groups on `conn` (before any dump, so that no change falls between).
    fn subscribe(
        mut conn: Connection<D>,
        excluded: Arc<Mutex<BTreeSet<u32>>>,
    ) -> Result<Self, NodeAddressError> {
        for group in [RTNLGRP_IPV4_IFADDR, RTNLGRP_IPV6_IFADDR] {
            conn.join_group(group)
                .map_err(|e| NodeAddressError::Open(e.into_io()))?;
        }
        Ok(Watcher {
            conn,
            addresses: AddressSet::new(),
            excluded,
        })
    }

    /// Dumps every address, replacing what was known. Notifications that arrive meanwhile are
    /// kept by the transport and applied after it, in order: idempotent for what the dump
    /// saw, and correct for what it missed.
    pub(super) fn dump(&mut self) -> Result<(), NodeAddressError> {
        let mut request =
            NetlinkMessage::from(RouteNetlinkMessage::GetAddress(AddressMessage::default()));
        request.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        let mut fresh = AddressSet::new();
        self.conn
            .dump(&request, |reply| {
                apply_reply(&mut fresh, reply);
                Ok(())
            })
            .map_err(|e| NodeAddressError::Dump(e.into_io()))?;
        self.addresses = fresh;
        self.forget_excluded();
        Ok(())
    }

    /// Drops the addresses of excluded links.
    fn forget_excluded(&mut self) {
        let excluded = self.excluded.lock().unwrap_or_else(|e| e.into_inner());
        if !excluded.is_empty() {
            self.addresses.retain(|a| !excluded.contains(&a.link));
        }
    }

    /// Applies what came since the last call: waits up to [`IDLE_WAKE`] for a notification,
    /// then reads the rest of the burst without waiting (bounded), so that a burst is
    /// published once. A loss (`ENOBUFS`) dumps again.
    fn follow(&mut self) -> Result<(), FollowError> {
        for round in 0..BURST_ROUNDS {
            let addresses = &mut self.addresses;
            let outcome = self.conn.recv_notifications(round == 0, |reply| {
                apply_reply(addresses, reply);
                Ok(())
            });
            match outcome.map_err(FollowError::Recv)? {
                Notifications::Received(_) => {}
                Notifications::Idle => break,
                Notifications::Lost => {
                    warn!("node address notifications overflowed; dumping the addresses again");
                    return self.dump().map_err(FollowError::Dump);
                }
            }
        }
        self.forget_excluded();
        Ok(())
    }

    /// Follows notifications until nobody listens any more.
    pub(super) fn run(mut self, tx: &watch::Sender<Arc<AddressSet>>) {
        // Whether a dump failed: what is known may be stale until one succeeds.
        let mut stale = false;
        loop {
            if tx.is_closed() {
                debug!("nobody follows the node's addresses any more; watcher stopped");
                return;
            }
            if stale {
                if let Err(e) = self.dump() {
                    warn!(error = %e, "node address dump failed; trying again");
                    std::thread::sleep(IDLE_WAKE);
                    continue;
                }
                stale = false;
                publish(tx, &self.addresses);
            }
            match self.follow() {
                Ok(()) => publish(tx, &self.addresses),
                Err(FollowError::Dump(e)) => {
                    warn!(error = %e, "node address dump failed; trying again");
                    std::thread::sleep(IDLE_WAKE);
                    stale = true;
                }
                Err(FollowError::Recv(e)) => {
                    warn!(error = %e, "node address watcher stopped: cannot read notifications");
                    return;
                }
            }
        }
    }
}

/// Why following stopped short.
#[derive(Debug)]
enum FollowError {
    /// The dump after lost notifications failed: dump again.
    Dump(NodeAddressError),
    /// The socket failed.
    Recv(netlink_transport::NetlinkError),
}

/// Applies one rtnetlink reply or notification to `set`; one that does not parse is skipped
/// (logged at debug), as before this watcher moved onto the transport: the kernel sends none.
fn apply_reply(set: &mut AddressSet, reply: Reply<'_>) {
    let mut header = NetlinkHeader::default();
    header.message_type = reply.message_type;
    match RouteNetlinkMessage::deserialize(&header, reply.payload) {
        Ok(message) => apply(set, &message),
        Err(e) => debug!(error = %e, "undecodable rtnetlink message skipped"),
    }
}

/// Applies one address message to `set`.
fn apply(set: &mut AddressSet, msg: &RouteNetlinkMessage) {
    let (msg, add) = match msg {
        RouteNetlinkMessage::NewAddress(m) => (m, true),
        RouteNetlinkMessage::DelAddress(m) => (m, false),
        _ => return,
    };
    // IPv4 reports the interface's own address as IFA_LOCAL (IFA_ADDRESS is the peer's on a
    // point-to-point link); IPv6 only as IFA_ADDRESS.
    let local = msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    let address = msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Address(ip) => Some(*ip),
        _ => None,
    });
    let Some(ip) = local.or(address) else {
        return;
    };
    if !is_node_port_candidate(ip) {
        return;
    }
    let entry = NodeAddress {
        ip,
        link: msg.header.index,
    };
    if add {
        set.insert(entry);
    } else {
        set.remove(&entry);
    }
}

#[cfg(test)]
mod tests {
    //! The watcher against the transport's `FakeKernel`: a dump, notifications, notifications
    //! during the dump, and a lost burst healed by a dump; and, as root in a fresh network
    //! namespace, against the kernel.

    use std::sync::{Arc, Mutex};

    use netlink_packet_core::NetlinkSerializable;
    use netlink_packet_route::address::{AddressAttribute, AddressMessage};
    use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
    use netlink_transport::fake::{done, nlmsg, notification, FakeKernel};
    use netlink_transport::Connection;

    use super::*;

    /// `RTM_GETADDR` (`include/uapi/linux/rtnetlink.h`).
    const RTM_GETADDR: u16 = 22;
    const NLM_F_MULTI: u16 = 0x2;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    /// `RTM_NEWADDR` (or `RTM_DELADDR` when not `add`) of `ip` on link `link`: its type and
    /// payload, as the kernel fills them (`inet_fill_ifaddr`: IPv4 has IFA_LOCAL).
    fn address(add: bool, addr: &str, link: u32) -> (u16, Vec<u8>) {
        let addr = ip(addr);
        let mut msg = AddressMessage::default();
        msg.header.index = link;
        msg.header.family = match addr {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        msg.header.prefix_len = 24;
        msg.attributes.push(AddressAttribute::Address(addr));
        if addr.is_ipv4() {
            msg.attributes.push(AddressAttribute::Local(addr));
        }
        let msg = if add {
            RouteNetlinkMessage::NewAddress(msg)
        } else {
            RouteNetlinkMessage::DelAddress(msg)
        };
        let mut payload = vec![0; NetlinkSerializable::buffer_len(&msg)];
        msg.serialize(&mut payload);
        (msg.message_type(), payload)
    }

    fn notify(kernel: &FakeKernel, add: bool, addr: &str, link: u32) {
        let (ty, payload) = address(add, addr, link);
        kernel.notify(notification(ty, &payload));
    }

    /// A kernel whose address dump lists `state`, then sends the notifications `during`.
    fn kernel(
        state: Arc<Mutex<Vec<(&'static str, u32)>>>,
        during: Vec<(bool, &'static str, u32)>,
    ) -> FakeKernel {
        FakeKernel::new(move |m| {
            assert_eq!(m.message_type, RTM_GETADDR, "only dumps");
            let mut out: Vec<Vec<u8>> = state
                .lock()
                .expect("state")
                .iter()
                .map(|(a, link)| {
                    let (ty, payload) = address(true, a, *link);
                    nlmsg(ty, NLM_F_MULTI, m.seq, &payload)
                })
                .collect();
            for (i, (add, a, link)) in during.iter().enumerate() {
                let (ty, payload) = address(*add, a, *link);
                out.insert((1 + i).min(out.len()), notification(ty, &payload));
            }
            out.push(done(m.seq, 0));
            out
        })
    }

    fn watcher(kernel: &FakeKernel) -> Watcher<FakeKernel> {
        Watcher::subscribe(Connection::new(kernel.clone()), Arc::default()).expect("subscribe")
    }

    fn set(entries: &[(&str, u32)]) -> AddressSet {
        entries
            .iter()
            .map(|(a, link)| NodeAddress {
                ip: ip(a),
                link: *link,
            })
            .collect()
    }

    #[test]
    fn a_dump_then_notifications_follow_the_addresses_but_loopback_and_link_local() {
        let state = Arc::new(Mutex::new(vec![
            ("127.0.0.1", 1),
            ("198.18.0.1", 2),
            ("fe80::1", 2),
            ("2001:db8::1", 2),
        ]));
        let kernel = kernel(state, vec![]);
        let mut w = watcher(&kernel);
        assert_eq!(
            kernel.groups(),
            vec![RTNLGRP_IPV4_IFADDR, RTNLGRP_IPV6_IFADDR]
        );
        w.dump().expect("dump");
        assert_eq!(w.addresses, set(&[("198.18.0.1", 2), ("2001:db8::1", 2)]));
        notify(&kernel, true, "198.18.0.2", 3);
        notify(&kernel, false, "198.18.0.1", 2);
        notify(&kernel, true, "127.0.0.2", 1);
        w.follow().expect("follow");
        assert_eq!(w.addresses, set(&[("198.18.0.2", 3), ("2001:db8::1", 2)]));
        assert_eq!(
            kernel.queued(),
            0,
            "the whole burst is read before publishing"
        );
        w.follow().expect("idle");
        assert_eq!(w.addresses.len(), 2, "nothing new, nothing changed");
    }

    #[test]
    fn an_address_removed_while_the_dump_runs_is_gone_after_it() {
        let state = Arc::new(Mutex::new(vec![("198.18.0.1", 2), ("198.18.0.2", 2)]));
        // The dump lists 198.18.0.1; its removal is notified in the middle of the dump.
        let kernel = kernel(
            state,
            vec![(false, "198.18.0.1", 2), (true, "198.18.0.3", 2)],
        );
        let mut w = watcher(&kernel);
        w.dump().expect("dump");
        w.follow().expect("follow");
        assert_eq!(w.addresses, set(&[("198.18.0.2", 2), ("198.18.0.3", 2)]));
    }

    #[test]
    fn lost_notifications_are_healed_by_a_new_dump() {
        let state = Arc::new(Mutex::new(vec![("198.18.0.1", 2)]));
        let kernel = kernel(Arc::clone(&state), vec![]).with_queue_limit(2);
        let mut w = watcher(&kernel);
        w.dump().expect("dump");
        // The kernel moves to 198.18.0.9; the burst overflows the queue and the removal of
        // 198.18.0.1 is among what is dropped.
        *state.lock().expect("state") = vec![("198.18.0.9", 2)];
        notify(&kernel, true, "198.18.0.9", 2);
        notify(&kernel, true, "198.18.0.8", 2);
        notify(&kernel, false, "198.18.0.8", 2);
        notify(&kernel, false, "198.18.0.1", 2);
        w.follow().expect("a dump after the loss");
        assert_eq!(w.addresses, set(&[("198.18.0.9", 2)]));
        let dumps = kernel.received().len();
        assert_eq!(dumps, 2, "one dump at start, one after the loss");
    }

    #[test]
    fn addresses_of_an_excluded_link_are_forgotten() {
        let state = Arc::new(Mutex::new(vec![("198.18.0.1", 2), ("198.19.0.10", 9)]));
        let kernel = kernel(state, vec![]);
        let excluded = Arc::new(Mutex::new(BTreeSet::from([9])));
        let mut w =
            Watcher::subscribe(Connection::new(kernel.clone()), excluded).expect("subscribe");
        w.dump().expect("dump");
        assert_eq!(w.addresses, set(&[("198.18.0.1", 2)]));
        notify(&kernel, true, "198.19.0.11", 9);
        w.follow().expect("follow");
        assert_eq!(w.addresses, set(&[("198.18.0.1", 2)]));
    }

    #[test]
    fn an_undecodable_message_is_skipped_and_the_rest_applied() {
        let kernel = kernel(Arc::default(), vec![]);
        let mut w = watcher(&kernel);
        w.dump().expect("dump");
        let (ty, payload) = address(true, "198.18.0.4", 2);
        // An RTM_NEWADDR too short for its header, then a good one.
        kernel.notify([notification(ty, &[1, 2]), notification(ty, &payload)].concat());
        w.follow().expect("follow");
        assert_eq!(w.addresses, set(&[("198.18.0.4", 2)]));
    }

    /// Polls `addresses` every 20 ms, up to 3 s, until `check` holds.
    fn wait_for(
        addresses: &crate::node_addresses::NodeAddresses,
        what: &str,
        check: impl Fn(&AddressSet) -> bool,
    ) {
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        loop {
            let now = addresses.current();
            if check(&now) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: not within 3 s; addresses: {now:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    #[ignore = "needs root: CI runs --include-ignored"]
    fn the_kernel_source_follows_added_and_removed_addresses() {
        testkit::netns::in_new_netns(|| {
            use testkit::process::run;
            run("ip", &["link", "set", "lo", "up"]);
            // A veth pair: this kernel may lack the dummy driver.
            run(
                "ip",
                &["link", "add", "d0", "type", "veth", "peer", "name", "d1"],
            );
            run("ip", &["link", "set", "d0", "up"]);
            run("ip", &["link", "set", "d1", "up"]);
            run("ip", &["addr", "add", "198.18.60.1/24", "dev", "d0"]);
            let addresses = crate::node_addresses::NodeAddresses::kernel();
            addresses.start().expect("start");
            let has = |a: &'static str| move |set: &AddressSet| set.iter().any(|n| n.ip == ip(a));
            assert!(
                has("198.18.60.1")(&addresses.current()),
                "the dump at start"
            );
            assert!(
                !addresses.current().iter().any(|n| n.ip.is_loopback()),
                "{:?}",
                addresses.current()
            );
            // Another subnet: removing 198.18.60.1 would take its secondaries with it.
            run("ip", &["addr", "add", "198.18.61.2/24", "dev", "d0"]);
            run(
                "ip",
                &["addr", "add", "2001:db8:60::2/64", "dev", "d0", "nodad"],
            );
            wait_for(&addresses, "added", |s| {
                has("198.18.61.2")(s) && has("2001:db8:60::2")(s)
            });
            run("ip", &["addr", "del", "198.18.60.1/24", "dev", "d0"]);
            wait_for(&addresses, "removed", |s| !has("198.18.60.1")(s));
            assert!(has("198.18.61.2")(&addresses.current()));
        });
    }
}
