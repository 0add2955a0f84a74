//! The dummy interface the VIPs are bound to, over rtnetlink (a blocking `NETLINK_ROUTE`
//! socket, `netlink-packet-route` messages).
//!
//! IPVS only sees packets the node accepts as local, so every cluster, external and
//! load-balancer IP is added to a dummy interface we own (kube-proxy's `kube-ipvs0`), as a /32
//! or /128. IPv6 addresses are added with `IFA_F_NODAD`: duplicate address detection would keep
//! them tentative (unusable) for a second or more, and a VIP is on every node by design.

use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};

use netlink_packet_core::{
    NetlinkMessage, ParseableParametrized, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::AddressMessage;
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressScope,
};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_transport::errno::{Errno, EADDRNOTAVAIL, EEXIST, ENODEV, ESRCH};
use netlink_transport::{Connection, NetlinkError, Protocol, Reply};

use crate::config::VipBinding;
use crate::error::BackendError;

/// `RTM_NEWLINK`: the type of a link reply.
const RTM_NEWLINK: u16 = 16;
/// `RTM_NEWADDR`: the type of an address reply.
const RTM_NEWADDR: u16 = 20;
/// `RTM_NEWROUTE`: the type of a route reply.
const RTM_NEWROUTE: u16 = 24;
/// The kernel's `local` routing table.
const RT_TABLE_LOCAL: u8 = 255;

/// A blocking rtnetlink socket, in the network namespace of the thread that opened it.
///
/// Messages are `netlink-packet-route`'s, sent on the workspace's one netlink transport
/// (`netlink-transport`). Address changes go in batches: many requests per datagram, their
/// ACKs read back by sequence number, a result per request.
#[derive(Debug)]
pub struct RouteSocket {
    conn: Mutex<Connection>,
}

fn link_err(
    op: &'static str,
    object: impl Into<String>,
) -> impl FnOnce(NetlinkError) -> BackendError {
    let object = object.into();
    move |e| BackendError::Link {
        op,
        object,
        source: e.into_io(),
    }
}

/// A route's table: the `RTA_TABLE` attribute when present (tables above 255), else the header's.
fn route_table(msg: &RouteMessage) -> u32 {
    msg.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(table) => Some(*table),
            _ => None,
        })
        .unwrap_or(u32::from(msg.header.table))
}

/// The only result of a batch of one.
fn one(results: Vec<Result<(), BackendError>>) -> Result<(), BackendError> {
    results
        .into_iter()
        .next()
        .expect("a batch of one request has one result")
}

fn errno_of(e: &NetlinkError) -> Option<Errno> {
    e.kernel_errno()
}

impl RouteSocket {
    /// Opens the socket.
    ///
    /// # Errors
    /// [`BackendError::Link`] when no netlink socket can be opened.
    pub fn connect() -> Result<Self, BackendError> {
        let conn = Connection::open(Protocol::Route).map_err(|e| BackendError::Link {
            op: "open",
            object: "NETLINK_ROUTE socket".into(),
            source: e.into_io(),
        })?;
        Ok(RouteSocket {
            conn: Mutex::new(conn),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // Stale replies of a request interrupted by a panic are skipped by sequence number.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn exchange(
        &self,
        msg: RouteNetlinkMessage,
        flags: u16,
        reply_type: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        let is_dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut request = NetlinkMessage::from(msg);
        // The transport adds NLM_F_REQUEST, and NLM_F_ACK or NLM_F_DUMP; the rest
        // (NLM_F_CREATE, NLM_F_EXCL) is the request's own.
        request.header.flags = flags & !(NLM_F_REQUEST | NLM_F_ACK | NLM_F_DUMP);
        let mut replies = Vec::new();
        let each = |reply: Reply<'_>| {
            replies.push(RouteNetlinkMessage::parse_with_param(
                reply.payload,
                reply_type,
            )?);
            Ok(())
        };
        let mut conn = self.lock();
        if is_dump {
            conn.dump(&request, each)?;
        } else {
            conn.request(&request, each)?;
        }
        Ok(replies)
    }

    /// The index of the interface `name`, `None` if there is none.
    ///
    /// # Errors
    /// [`BackendError::Link`] for any other failure.
    pub fn link_index(&self, name: &str) -> Result<Option<u32>, BackendError> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
        match self.exchange(
            RouteNetlinkMessage::GetLink(msg),
            NLM_F_REQUEST | NLM_F_ACK,
            RTM_NEWLINK,
        ) {
            Ok(replies) => Ok(replies.into_iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(link) => Some(link.header.index),
                _ => None,
            })),
            Err(e) if errno_of(&e) == Some(ENODEV) => Ok(None),
            Err(e) => Err(link_err("get link", name)(e)),
        }
    }

    /// Creates the dummy interface `name` if it is missing and sets it up; returns its index
    /// and whether it was created.
    ///
    /// # Errors
    /// [`BackendError::Link`] naming the interface.
    pub fn ensure_dummy(&self, name: &str) -> Result<(u32, bool), BackendError> {
        let mut created = false;
        if self.link_index(name)?.is_none() {
            let mut msg = LinkMessage::default();
            msg.header.flags = LinkFlags::Up;
            msg.header.change_mask = LinkFlags::Up;
            msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
            msg.attributes
                .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                    InfoKind::Dummy,
                )]));
            match self.exchange(
                RouteNetlinkMessage::NewLink(msg),
                NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
                RTM_NEWLINK,
            ) {
                Ok(_) => created = true,
                Err(e) if errno_of(&e) == Some(EEXIST) => {}
                Err(e) => return Err(link_err("create dummy link", name)(e)),
            }
        }
        let index = self.link_index(name)?.ok_or_else(|| BackendError::Link {
            op: "get link",
            object: name.to_owned(),
            source: ENODEV.to_io(),
        })?;
        // Up, in case someone set it down (a down dummy still accepts local traffic, but
        // IPv6 addresses on it would not be usable).
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        self.exchange(
            RouteNetlinkMessage::SetLink(msg),
            NLM_F_REQUEST | NLM_F_ACK,
            RTM_NEWLINK,
        )
        .map_err(link_err("set link up", name))?;
        Ok((index, created))
    }

    /// Deletes the interface `name`; false if there was none.
    ///
    /// # Errors
    /// [`BackendError::Link`] naming the interface.
    pub fn delete_link(&self, name: &str) -> Result<bool, BackendError> {
        let Some(index) = self.link_index(name)? else {
            return Ok(false);
        };
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        match self.exchange(
            RouteNetlinkMessage::DelLink(msg),
            NLM_F_REQUEST | NLM_F_ACK,
            RTM_NEWLINK,
        ) {
            Ok(_) => Ok(true),
            Err(e) if errno_of(&e) == Some(ENODEV) => Ok(false),
            Err(e) => Err(link_err("delete link", name)(e)),
        }
    }

    /// The global-scope addresses on interface `index`.
    ///
    /// # Errors
    /// [`BackendError::Link`].
    pub fn addresses(&self, index: u32) -> Result<Vec<IpAddr>, BackendError> {
        let replies = self
            .exchange(
                RouteNetlinkMessage::GetAddress(AddressMessage::default()),
                NLM_F_REQUEST | NLM_F_DUMP,
                RTM_NEWADDR,
            )
            .map_err(link_err("dump addresses", format!("link {index}")))?;
        let mut addrs = Vec::new();
        for reply in replies {
            let RouteNetlinkMessage::NewAddress(msg) = reply else {
                continue;
            };
            // Only global addresses: the kernel gives an interface that comes up an IPv6
            // link-local address of its own, which is neither a VIP nor ours to remove.
            if msg.header.index != index || msg.header.scope != AddressScope::Universe {
                continue;
            }
            // IPv4 reports the interface address as IFA_LOCAL; IPv6 only as IFA_ADDRESS.
            let local = msg.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            });
            let address = msg.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            });
            if let Some(ip) = local.or(address) {
                addrs.push(ip);
            }
        }
        addrs.sort();
        addrs.dedup();
        Ok(addrs)
    }

    fn address_message(index: u32, ip: IpAddr) -> AddressMessage {
        let mut msg = AddressMessage::default();
        msg.header.index = index;
        match ip {
            IpAddr::V4(_) => {
                msg.header.family = AddressFamily::Inet;
                msg.header.prefix_len = 32;
                msg.attributes.push(AddressAttribute::Local(ip));
                msg.attributes.push(AddressAttribute::Address(ip));
            }
            IpAddr::V6(_) => {
                msg.header.family = AddressFamily::Inet6;
                msg.header.prefix_len = 128;
                msg.header.flags = AddressHeaderFlags::Nodad;
                msg.attributes.push(AddressAttribute::Address(ip));
                msg.attributes
                    .push(AddressAttribute::Flags(AddressFlags::Nodad));
            }
        }
        msg
    }

    /// Adds `ip` as a /32 or /128 to interface `index`; an address already there is fine.
    ///
    /// # Errors
    /// [`BackendError::Link`] naming the address.
    pub fn add_address(&self, index: u32, ip: IpAddr) -> Result<(), BackendError> {
        one(self.add_addresses(index, &[ip]))
    }

    /// Removes `ip` from interface `index`; an address already gone is fine.
    ///
    /// # Errors
    /// [`BackendError::Link`] naming the address.
    pub fn delete_address(&self, index: u32, ip: IpAddr) -> Result<(), BackendError> {
        one(self.delete_addresses(index, &[ip]))
    }

    /// [`RouteSocket::add_address`] for each of `ips`, batched: one result per address, in
    /// order.
    pub fn add_addresses(&self, index: u32, ips: &[IpAddr]) -> Vec<Result<(), BackendError>> {
        self.each_ip(
            ips,
            |ip| RouteNetlinkMessage::NewAddress(Self::address_message(index, ip)),
            NLM_F_CREATE | NLM_F_EXCL,
            (EEXIST, "add address"),
        )
    }

    /// [`RouteSocket::delete_address`] for each of `ips`, batched: one result per address, in
    /// order.
    pub fn delete_addresses(&self, index: u32, ips: &[IpAddr]) -> Vec<Result<(), BackendError>> {
        self.each_ip(
            ips,
            |ip| RouteNetlinkMessage::DelAddress(Self::address_message(index, ip)),
            0,
            (EADDRNOTAVAIL, "delete address"),
        )
    }

    // === VIPs as local routes (`IpvsConfig::vip_binding = LocalRoutes`) ===

    fn local_route_message(index: u32, ip: IpAddr) -> RouteMessage {
        let mut msg = RouteMessage::default();
        msg.header.address_family = match ip {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        msg.header.destination_prefix_length = if ip.is_ipv4() { 32 } else { 128 };
        msg.header.table = RT_TABLE_LOCAL;
        // Static, so that ours are told from the kernel's own local routes (protocol kernel)
        // for addresses on the interface, such as its IPv6 link-local one.
        msg.header.protocol = RouteProtocol::Static;
        msg.header.scope = RouteScope::Host;
        msg.header.kind = RouteType::Local;
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(ip)));
        msg.attributes.push(RouteAttribute::Oif(index));
        msg
    }

    /// The VIPs bound as local routes through interface `index` (`local VIP dev <it> table
    /// local`), not counting the kernel's own routes for its addresses.
    ///
    /// # Errors
    /// [`BackendError::Link`].
    pub fn local_routes(&self, index: u32) -> Result<Vec<IpAddr>, BackendError> {
        let mut request = RouteMessage::default();
        request.header.table = RT_TABLE_LOCAL;
        let replies = self
            .exchange(
                RouteNetlinkMessage::GetRoute(request),
                NLM_F_REQUEST | NLM_F_DUMP,
                RTM_NEWROUTE,
            )
            .map_err(link_err("dump local routes", format!("link {index}")))?;
        let mut vips = Vec::new();
        for reply in replies {
            let RouteNetlinkMessage::NewRoute(msg) = reply else {
                continue;
            };
            let full = match msg.header.address_family {
                AddressFamily::Inet => 32,
                AddressFamily::Inet6 => 128,
                _ => continue,
            };
            if msg.header.kind != RouteType::Local
                || msg.header.protocol == RouteProtocol::Kernel
                || msg.header.destination_prefix_length != full
                || route_table(&msg) != u32::from(RT_TABLE_LOCAL)
                || !msg.attributes.contains(&RouteAttribute::Oif(index))
            {
                continue;
            }
            let destination = msg.attributes.iter().find_map(|a| match a {
                RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(IpAddr::V4(*ip)),
                RouteAttribute::Destination(RouteAddress::Inet6(ip)) => Some(IpAddr::V6(*ip)),
                _ => None,
            });
            vips.extend(destination);
        }
        vips.sort();
        vips.dedup();
        Ok(vips)
    }

    /// Adds a local route for each of `ips` through interface `index`, batched: one result per
    /// VIP, in order; a route already there is fine.
    pub fn add_local_routes(&self, index: u32, ips: &[IpAddr]) -> Vec<Result<(), BackendError>> {
        self.each_ip(
            ips,
            |ip| RouteNetlinkMessage::NewRoute(Self::local_route_message(index, ip)),
            NLM_F_CREATE | NLM_F_EXCL,
            (EEXIST, "add local route"),
        )
    }

    /// Deletes the local routes of `ips` through interface `index`, batched; a route already
    /// gone is fine.
    pub fn delete_local_routes(&self, index: u32, ips: &[IpAddr]) -> Vec<Result<(), BackendError>> {
        self.each_ip(
            ips,
            |ip| RouteNetlinkMessage::DelRoute(Self::local_route_message(index, ip)),
            0,
            (ESRCH, "delete local route"),
        )
    }

    // === either binding ===

    /// The VIPs bound to interface `index` the way `binding` binds them.
    ///
    /// # Errors
    /// [`BackendError::Link`].
    pub fn vips(&self, index: u32, binding: VipBinding) -> Result<Vec<IpAddr>, BackendError> {
        match binding {
            VipBinding::Addresses => self.addresses(index),
            VipBinding::LocalRoutes => self.local_routes(index),
        }
    }

    /// Binds `ips` to interface `index` the way `binding` says, batched.
    pub fn bind_vips(
        &self,
        index: u32,
        binding: VipBinding,
        ips: &[IpAddr],
    ) -> Vec<Result<(), BackendError>> {
        match binding {
            VipBinding::Addresses => self.add_addresses(index, ips),
            VipBinding::LocalRoutes => self.add_local_routes(index, ips),
        }
    }

    /// Unbinds `ips` from interface `index`, batched.
    pub fn unbind_vips(
        &self,
        index: u32,
        binding: VipBinding,
        ips: &[IpAddr],
    ) -> Vec<Result<(), BackendError>> {
        match binding {
            VipBinding::Addresses => self.delete_addresses(index, ips),
            VipBinding::LocalRoutes => self.delete_local_routes(index, ips),
        }
    }

    /// One request per address of `ips` (`NLM_F_REQUEST | NLM_F_ACK | flags`), batched; one
    /// result per address, in order. `harmless` is the errno that means "already so" (taken
    /// as success) and the operation's name for errors.
    fn each_ip(
        &self,
        ips: &[IpAddr],
        message: impl Fn(IpAddr) -> RouteNetlinkMessage,
        flags: u16,
        (harmless, op): (Errno, &'static str),
    ) -> Vec<Result<(), BackendError>> {
        if ips.is_empty() {
            return Vec::new();
        }
        let requests: Vec<NetlinkMessage<RouteNetlinkMessage>> = ips
            .iter()
            .map(|ip| {
                let mut request = NetlinkMessage::from(message(*ip));
                request.header.flags = flags;
                request
            })
            .collect();
        let results = self.lock().batch(&requests);
        ips.iter()
            .zip(results)
            .map(|(ip, result)| match result {
                Ok(()) => Ok(()),
                Err(e) if errno_of(&e) == Some(harmless) => Ok(()),
                Err(e) => Err(link_err(op, ip.to_string())(e)),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_transport::BatchLimits;

    /// Shrinks the receive buffer to `rcvbuf` bytes and sets the batch limits, whatever the
    /// buffer allows: for tests of lost ACKs.
    fn set_limits_for_test(socket: &RouteSocket, rcvbuf: usize, limits: BatchLimits) {
        let mut conn = socket.lock();
        conn.io_mut().force_rcvbuf(rcvbuf).expect("SO_RCVBUFFORCE");
        conn.set_limits(limits);
    }

    /// Runs `body` on a thread in a new network namespace of its own (testkit's
    /// `in_new_netns`), with a route socket there and `lo` up.
    fn with_route_socket<T: Send + 'static>(
        body: impl FnOnce(&RouteSocket) -> T + Send + 'static,
    ) -> T {
        testkit::netns::in_new_netns(move || body(&route_socket_lo_up()))
    }

    /// A route socket in this thread's namespace, with `lo` up.
    fn route_socket_lo_up() -> RouteSocket {
        let socket = RouteSocket::connect().expect("rtnetlink socket");
        let lo = socket.link_index("lo").expect("get lo").expect("lo exists");
        let mut up = LinkMessage::default();
        up.header.index = lo;
        up.header.flags = LinkFlags::Up;
        up.header.change_mask = LinkFlags::Up;
        socket
            .exchange(
                RouteNetlinkMessage::SetLink(up),
                NLM_F_REQUEST | NLM_F_ACK,
                RTM_NEWLINK,
            )
            .expect("lo up");
        socket
    }

    fn nth(i: usize) -> IpAddr {
        let i = u16::try_from(i).expect("small test index");
        let [hi, lo] = i.to_be_bytes();
        IpAddr::from([198, 18, 32 + hi, lo])
    }

    #[test]
    #[ignore = "needs root: CI runs --include-ignored"]
    fn a_batch_whose_acks_overflow_the_buffer_reports_them_lost_and_does_not_hang() {
        with_route_socket(|socket| {
            let lo = socket.link_index("lo").expect("get lo").expect("lo exists");
            // Room for a handful of ACKs only, and one datagram for all 1,000 requests.
            set_limits_for_test(
                socket,
                4_096,
                BatchLimits {
                    ops: 1_000,
                    bytes: 1 << 20,
                },
            );
            let ips: Vec<IpAddr> = (0..1_000).map(nth).collect();
            let results = socket.add_addresses(lo, &ips);
            assert_eq!(results.len(), 1_000);
            let lost: Vec<&BackendError> =
                results.iter().filter_map(|r| r.as_ref().err()).collect();
            assert!(!lost.is_empty(), "a 4 KiB buffer cannot hold 1,000 ACKs");
            for e in &lost {
                let BackendError::Link { op, source, .. } = e else {
                    panic!("want a link error, got {e:?}");
                };
                assert_eq!(*op, "add address");
                assert_eq!(
                    source.raw_os_error(),
                    Some(netlink_transport::errno::ENOBUFS.raw()),
                    "ENOBUFS: {e:?}"
                );
            }
            // The kernel did every request, acknowledged or not.
            let bound = socket.addresses(lo).expect("dump addresses");
            assert_eq!(bound.iter().filter(|ip| ips.contains(ip)).count(), 1_000);
            // The socket still works: stale state does not leak into the next request.
            set_limits_for_test(
                socket,
                1 << 20,
                BatchLimits {
                    ops: 100,
                    bytes: 1 << 20,
                },
            );
            let again = socket.delete_addresses(lo, &ips);
            assert!(
                again.iter().all(Result::is_ok),
                "{:?}",
                again.iter().find(|r| r.is_err())
            );
            assert_eq!(socket.addresses(lo).expect("dump").len(), 0);
        });
    }

    #[test]
    #[ignore = "needs root: CI runs --include-ignored"]
    fn batched_address_changes_report_each_address() {
        with_route_socket(|socket| {
            let lo = socket.link_index("lo").expect("get lo").expect("lo exists");
            let ips: Vec<IpAddr> = (0..600).map(nth).collect();
            assert!(socket.add_addresses(lo, &ips).iter().all(Result::is_ok));
            // Adding again is fine (EEXIST), as is deleting what is gone (EADDRNOTAVAIL).
            assert!(socket
                .add_addresses(lo, &ips[..10])
                .iter()
                .all(Result::is_ok));
            let bound = socket.addresses(lo).expect("dump");
            assert_eq!(bound.len(), 600, "global addresses on lo: ours only");
            assert!(socket.delete_addresses(lo, &ips).iter().all(Result::is_ok));
            assert!(socket
                .delete_addresses(lo, &ips[..10])
                .iter()
                .all(Result::is_ok));
            // A bad interface index fails each address, naming it.
            let results = socket.add_addresses(9_999, &ips[..3]);
            for (ip, result) in ips.iter().zip(&results) {
                let e = result.as_ref().expect_err("no such interface");
                assert!(e.to_string().contains(&ip.to_string()), "{e}");
            }
            assert_eq!(socket.addresses(lo).expect("dump").len(), 0);
        });
    }
}
