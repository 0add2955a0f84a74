//! The node's own addresses, where node ports are served, as a source that can change while a
//! dataplane runs.
//!
//! kube-proxy serves a node port on every local address of the node (iptables: `-m addrtype
//! --dst-type LOCAL`; IPVS: one virtual server per node address, re-read at every sync),
//! restricted by `--nodeport-addresses` CIDRs. Backends that need the addresses themselves
//! (IPVS, the userspace proxy) read them from a [`NodeAddresses`]:
//!
//! - [`NodeAddresses::kernel`] follows the kernel: a dump of `RTM_GETADDR` when
//!   [`NodeAddresses::start`] runs, then the `RTNLGRP_IPV4_IFADDR`/`RTNLGRP_IPV6_IFADDR`
//!   notifications (rtnetlink, in the network namespace of the thread that starts it). Loopback
//!   and IPv6 link-local addresses are left out: a node port is for other hosts, and a
//!   link-local address cannot be bound without its interface.
//! - [`NodeAddresses::manual`] is fed by the embedder ([`NodeAddressFeed`]), from its own
//!   source of truth (a Node object, a config service).
//! - [`NodeAddresses::fixed`] never changes (a configured list).
//!
//! A dataplane hands its source to the sync loop ([`crate::Dataplane::node_addresses`]), which
//! runs a partial sync after each change; the backend then re-plans only what depends on the
//! addresses (the node ports), so the cost follows the change.
//!
//! ```
//! use proxy_core::node_addresses::{node_port_ips, NodeAddresses};
//!
//! let (feed, addresses) = NodeAddresses::manual(["198.18.0.1".parse().unwrap()]);
//! feed.insert("198.18.0.2".parse().unwrap());
//! let cidrs = ["198.18.0.2/32".parse().unwrap()];
//! let ips = node_port_ips(&addresses.current(), &cidrs, None);
//! assert_eq!(ips.into_iter().collect::<Vec<_>>(), ["198.18.0.2".parse::<std::net::IpAddr>().unwrap()]);
//! ```

use std::collections::BTreeSet;
use std::fmt;
use std::io;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use ipnet::IpNet;
use tokio::sync::watch;
use tracing::info;

mod watcher;

use watcher::Watcher;

/// One address of the node, and the interface (link index) it is on; `link` is 0 when the
/// source does not know it (addresses fed by hand or configured).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeAddress {
    /// The address.
    pub ip: IpAddr,
    /// The interface index, or 0 when unknown.
    pub link: u32,
}

impl NodeAddress {
    /// An address on an unknown interface.
    pub fn new(ip: IpAddr) -> Self {
        NodeAddress { ip, link: 0 }
    }
}

impl fmt::Display for NodeAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.link == 0 {
            write!(f, "{}", self.ip)
        } else {
            write!(f, "{} (link {})", self.ip, self.link)
        }
    }
}

/// A snapshot of the node's addresses.
pub type AddressSet = BTreeSet<NodeAddress>;

/// Why the node's addresses could not be read from the kernel.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeAddressError {
    /// The rtnetlink socket could not be opened, bound or subscribed.
    #[error("cannot open an rtnetlink socket for address notifications")]
    Open(#[source] io::Error),
    /// The address dump failed.
    #[error("cannot dump the node's addresses (RTM_GETADDR)")]
    Dump(#[source] io::Error),
    /// The watcher thread could not be started.
    #[error("cannot start the node address watcher thread")]
    Thread(#[source] io::Error),
}

/// Where the node's addresses come from, and how to wait for them to change: cheap to clone,
/// every clone sees the same addresses. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct NodeAddresses {
    rx: watch::Receiver<Arc<AddressSet>>,
    /// For [`NodeAddresses::kernel`]: the sender the watcher feeds, and whether it started.
    kernel: Option<Arc<KernelSource>>,
}

#[derive(Debug)]
struct KernelSource {
    tx: watch::Sender<Arc<AddressSet>>,
    started: Mutex<bool>,
    /// Links whose addresses are not the node's (see [`NodeAddresses::exclude_link`]), shared
    /// with the watcher thread.
    excluded: Arc<Mutex<BTreeSet<u32>>>,
}

/// The embedder's side of [`NodeAddresses::manual`]: every change is seen by the sync loop,
/// which runs a partial sync for it.
#[derive(Debug)]
pub struct NodeAddressFeed {
    tx: watch::Sender<Arc<AddressSet>>,
}

impl NodeAddressFeed {
    /// Replaces the whole set.
    pub fn set(&self, ips: impl IntoIterator<Item = IpAddr>) {
        let set: AddressSet = ips.into_iter().map(NodeAddress::new).collect();
        self.tx.send_if_modified(|current| {
            if **current == set {
                return false;
            }
            *current = Arc::new(set);
            true
        });
    }

    /// Adds one address (no change if it is there).
    pub fn insert(&self, ip: IpAddr) {
        self.tx.send_if_modified(|current| {
            if current.contains(&NodeAddress::new(ip)) {
                return false;
            }
            Arc::make_mut(current).insert(NodeAddress::new(ip));
            true
        });
    }

    /// Removes one address (no change if it is not there).
    pub fn remove(&self, ip: IpAddr) {
        self.tx
            .send_if_modified(|current| Arc::make_mut(current).remove(&NodeAddress::new(ip)));
    }
}

impl NodeAddresses {
    /// Addresses that never change (a configured list), on no known interface.
    pub fn fixed(ips: impl IntoIterator<Item = IpAddr>) -> Self {
        let set: AddressSet = ips.into_iter().map(NodeAddress::new).collect();
        // The sender goes at once: `changed` then says there will be no change.
        let (_, rx) = watch::channel(Arc::new(set));
        NodeAddresses { rx, kernel: None }
    }

    /// Addresses the embedder feeds through the returned [`NodeAddressFeed`], starting with
    /// `initial`. When the feed is dropped, the addresses stay as they were last set.
    pub fn manual(initial: impl IntoIterator<Item = IpAddr>) -> (NodeAddressFeed, Self) {
        let set: AddressSet = initial.into_iter().map(NodeAddress::new).collect();
        let (tx, rx) = watch::channel(Arc::new(set));
        (NodeAddressFeed { tx }, NodeAddresses { rx, kernel: None })
    }

    /// The kernel's addresses (but loopback and IPv6 link-local), followed through rtnetlink
    /// once [`NodeAddresses::start`] has run. Opens nothing yet: empty until started.
    pub fn kernel() -> Self {
        let (tx, rx) = watch::channel(Arc::new(AddressSet::new()));
        NodeAddresses {
            rx,
            kernel: Some(Arc::new(KernelSource {
                tx,
                started: Mutex::new(false),
                excluded: Arc::new(Mutex::new(BTreeSet::new())),
            })),
        }
    }

    /// Leaves out, from now on, the addresses on interface `index` (a backend's own dummy
    /// interface: thousands of service VIPs that are not the node's): the kernel watcher
    /// forgets them, so they cost neither a wake-up nor a place in the set. Other sources have
    /// no interfaces; for them this does nothing. Readers should still pass the link to
    /// [`node_port_ips`]: the watcher applies it at its next wake-up (within a second).
    pub fn exclude_link(&self, index: u32) {
        if let Some(kernel) = &self.kernel {
            kernel
                .excluded
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(index);
        }
    }

    /// Whether the addresses follow the kernel ([`NodeAddresses::kernel`]).
    pub fn follows_kernel(&self) -> bool {
        self.kernel.is_some()
    }

    /// For [`NodeAddresses::kernel`], the first call dumps the addresses (so that
    /// [`NodeAddresses::current`] has them when it returns) and starts a thread that follows
    /// their changes, in the network namespace of the calling thread; later calls, and other
    /// sources, do nothing. Blocks for the dump (one rtnetlink request).
    ///
    /// # Errors
    /// [`NodeAddressError`] when the socket cannot be opened or the dump fails; a later call
    /// tries again.
    pub fn start(&self) -> Result<(), NodeAddressError> {
        let Some(kernel) = &self.kernel else {
            return Ok(());
        };
        let mut started = kernel.started.lock().unwrap_or_else(|e| e.into_inner());
        if *started {
            return Ok(());
        }
        let mut watcher = Watcher::open(Arc::clone(&kernel.excluded))?;
        watcher.dump()?;
        publish(&kernel.tx, &watcher.addresses);
        info!(
            addresses = watcher.addresses.len(),
            "following the node's addresses (rtnetlink)"
        );
        let tx = kernel.tx.clone();
        std::thread::Builder::new()
            .name("svcp-node-addrs".into())
            .spawn(move || watcher.run(&tx))
            .map_err(NodeAddressError::Thread)?;
        *started = true;
        Ok(())
    }

    /// The addresses now.
    pub fn current(&self) -> Arc<AddressSet> {
        Arc::clone(&self.rx.borrow())
    }

    /// Waits for the next change; `false` when there will be none (a fixed list, a dropped
    /// feed). Cancel-safe: a change that happens while nobody waits is seen by the next call.
    pub async fn changed(&mut self) -> bool {
        self.rx.changed().await.is_ok()
    }
}

/// The addresses node ports are served on: those of `set` within `cidrs` (kube-proxy's
/// `--nodeport-addresses`; empty: all of them), and not on interface `exclude_link` (a
/// backend's own dummy interface, whose addresses are service VIPs, not the node's).
pub fn node_port_ips(
    set: &AddressSet,
    cidrs: &[IpNet],
    exclude_link: Option<u32>,
) -> BTreeSet<IpAddr> {
    set.iter()
        .filter(|a| exclude_link.is_none_or(|link| a.link == 0 || a.link != link))
        .map(|a| a.ip)
        .filter(|ip| cidrs.is_empty() || cidrs.iter().any(|net| net.contains(ip)))
        .collect()
}

fn publish(tx: &watch::Sender<Arc<AddressSet>>, addresses: &AddressSet) {
    tx.send_if_modified(|current| {
        if **current == *addresses {
            return false;
        }
        *current = Arc::new(addresses.clone());
        true
    });
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::watcher::is_node_port_candidate;
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
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
    fn node_port_ips_keep_the_cidrs_and_leave_out_the_excluded_link() {
        let all = set(&[
            ("198.18.0.1", 2),
            ("198.18.1.1", 3),
            ("198.19.0.10", 9),
            ("2001:db8::1", 2),
        ]);
        let got = node_port_ips(&all, &[], Some(9));
        assert_eq!(
            got,
            [ip("198.18.0.1"), ip("198.18.1.1"), ip("2001:db8::1")].into()
        );
        let cidrs = [
            "198.18.1.0/24".parse().expect("net"),
            "2001:db8::/32".parse().expect("net"),
        ];
        assert_eq!(
            node_port_ips(&all, &cidrs, None),
            [ip("198.18.1.1"), ip("2001:db8::1")].into()
        );
        // An address on our link and on another is still the node's.
        let both = set(&[("198.18.0.1", 2), ("198.18.0.1", 9)]);
        assert_eq!(
            node_port_ips(&both, &[], Some(9)),
            [ip("198.18.0.1")].into()
        );
    }

    #[test]
    fn the_kernel_watcher_leaves_out_loopback_and_link_local() {
        assert!(!is_node_port_candidate(ip("127.0.0.1")));
        assert!(!is_node_port_candidate(ip("::1")));
        assert!(!is_node_port_candidate(ip("fe80::1")));
        assert!(is_node_port_candidate(ip("198.18.0.1")));
        assert!(is_node_port_candidate(ip("2001:db8::1")));
    }

    #[tokio::test]
    async fn a_manual_feed_wakes_the_follower_once_per_change() {
        let (feed, mut addresses) = NodeAddresses::manual([ip("198.18.0.1")]);
        feed.insert(ip("198.18.0.1"));
        feed.insert(ip("198.18.0.2"));
        assert!(addresses.changed().await);
        assert_eq!(addresses.current().len(), 2);
        feed.remove(ip("198.18.0.9"));
        feed.set([ip("198.18.0.1"), ip("198.18.0.2")]);
        let waited = tokio::time::timeout(Duration::from_millis(50), addresses.changed()).await;
        assert!(waited.is_err(), "no change, no wake-up");
        drop(feed);
        assert!(
            !addresses.changed().await,
            "a dropped feed ends the changes"
        );
        let mut fixed = NodeAddresses::fixed([ip("198.18.0.1")]);
        assert!(!fixed.changed().await);
        assert_eq!(fixed.current().len(), 1);
    }
}
