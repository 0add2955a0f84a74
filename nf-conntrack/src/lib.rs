//! A small ctnetlink client: dump the kernel's conntrack table and delete entries by their
//! original tuple, without spawning the `conntrack` tool (a process costs milliseconds; a
//! netlink round trip, microseconds).
//!
//! [`ConntrackOps`] is the narrow interface (dump a family, delete an entry), [`Netlink`] the
//! real implementation in the caller's network namespace, and
//! `testing::FakeConntrack` (feature `testing`) an in-memory one. [`delete_matching`] dumps a
//! family once and deletes each entry a predicate picks: the backends build their flushes on
//! it. [`stale`] plans and deletes kube-proxy's stale UDP entries from a sync's change set, for
//! the NAT backends (iptables, nftables); backend-ipvs deletes the flows to a deleted UDP real
//! server. [`tuning`] sizes the table and sets its TCP timeouts as kube-proxy does (sysctls).
//!
//! The messages ([`encode_dump`], [`encode_delete`], [`parse_entry`]) are
//! `netlink-packet-netfilter`'s ctnetlink types (its `conntrack` module, 0.4, on the same
//! `netlink-packet-core` 0.9 as the rest of the workspace): they cover what we send (a dump of
//! a family, a delete by original tuple) and what we read (both tuples), and keep every other
//! attribute of a kernel entry as `Other`. They are byte-tested against captures from a real
//! kernel and the `conntrack` tool (`src/message/captures.rs`), both ways. One flaw of theirs
//! shows there and does not touch us: an unknown nested attribute is emitted without
//! `NLA_F_NESTED` (we never send one). They travel on the workspace's one transport,
//! `netlink-transport`, as a message family of `NETLINK_NETFILTER`. This crate owns no kernel
//! object.
//!
//! ```
//! use nf_conntrack::{delete_matching, testing::FakeConntrack, Entry, Family, IPPROTO_UDP};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let flow = Entry {
//!     proto: IPPROTO_UDP,
//!     src: "198.18.0.1".parse()?,
//!     dst: "198.19.0.53".parse()?,
//!     sport: 40000,
//!     dport: 53,
//!     reply_src: "198.18.1.1".parse()?,
//! };
//! let ops = FakeConntrack::with_entries([flow]);
//! let deleted = delete_matching(&ops, Family::V4, |e| e.reply_src == flow.reply_src)?;
//! assert_eq!(deleted, 1);
//! assert!(ops.entries().is_empty());
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

use std::fmt;
use std::net::IpAddr;

mod message;
mod netlink;
pub mod stale;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod tuning;

pub use message::{encode_delete, encode_dump, parse_entry};
pub use netlink::Netlink;

/// The IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;

/// An address family: conntrack is dumped per family, and `iptables`/`ip6tables` split the same
/// way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4 (`AF_INET`, `iptables`).
    V4,
    /// IPv6 (`AF_INET6`, `ip6tables`).
    V6,
}

impl Family {
    /// Both families, IPv4 first.
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    /// The family of an address.
    pub fn of(addr: IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// Whether `addr` belongs to this family.
    pub fn contains(self, addr: IpAddr) -> bool {
        Family::of(addr) == self
    }

    /// Address width in bits.
    pub fn bits(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        })
    }
}

/// One conntrack entry, as much as we match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Entry {
    /// IP protocol number ([`IPPROTO_UDP`] for UDP).
    pub proto: u8,
    /// Original source.
    pub src: IpAddr,
    /// Original destination (the service address).
    pub dst: IpAddr,
    /// Original source port.
    pub sport: u16,
    /// Original destination port.
    pub dport: u16,
    /// Reply source: the endpoint (real server), when DNATed or IPVS-forwarded; else `dst`.
    pub reply_src: IpAddr,
}

/// A conntrack failure: the operation and the OS error.
#[derive(Debug, thiserror::Error)]
#[error("conntrack {op} ({family}): {error}")]
pub struct ConntrackError {
    /// `dump` or `delete`.
    pub op: &'static str,
    /// Address family.
    pub family: Family,
    /// The OS or protocol error, printed in the message (so not also a `source`).
    pub error: std::io::Error,
}

/// Dumps and deletes conntrack entries.
pub trait ConntrackOps: Send + Sync + std::fmt::Debug {
    /// Every entry of `family`.
    ///
    /// # Errors
    /// [`ConntrackError`] if the dump failed.
    fn dump(&self, family: Family) -> Result<Vec<Entry>, ConntrackError>;
    /// Deletes one entry by its original tuple; an entry already gone is not an error.
    ///
    /// # Errors
    /// [`ConntrackError`] if the delete failed.
    fn delete(&self, family: Family, entry: &Entry) -> Result<(), ConntrackError>;
    /// Deletes `entries` in order, as [`ConntrackOps::delete`] does each, and returns how
    /// many; [`Netlink`] sends them all on one socket.
    ///
    /// # Errors
    /// The first [`ConntrackError`]; the entries after it are left.
    fn delete_all(&self, family: Family, entries: &[Entry]) -> Result<usize, ConntrackError> {
        for entry in entries {
            self.delete(family, entry)?;
        }
        Ok(entries.len())
    }
}

/// Dumps `family` once and deletes every entry `matches` picks; returns how many. Nothing
/// matched is `Ok(0)`. Blocking: call it off the async runtime.
///
/// # Errors
/// The first [`ConntrackError`] (the dump, or a delete; later entries are then left).
pub fn delete_matching(
    ops: &dyn ConntrackOps,
    family: Family,
    mut matches: impl FnMut(&Entry) -> bool,
) -> Result<usize, ConntrackError> {
    let mut picked = ops.dump(family)?;
    picked.retain(|entry| matches(entry));
    ops.delete_all(family, &picked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeConntrack;

    fn udp(src: &str, reply_src: &str) -> Entry {
        Entry {
            proto: IPPROTO_UDP,
            src: src.parse().expect("ip"),
            dst: "198.19.0.53".parse().expect("ip"),
            sport: 40000,
            dport: 53,
            reply_src: reply_src.parse().expect("ip"),
        }
    }

    #[test]
    fn delete_matching_dumps_once_and_deletes_only_matches() {
        let keep = udp("198.18.0.1", "198.18.1.2");
        let gone = udp("198.18.0.2", "198.18.1.1");
        let ops = FakeConntrack::with_entries([keep, gone]);
        let n =
            delete_matching(&ops, Family::V4, |e| e.reply_src == gone.reply_src).expect("delete");
        assert_eq!(n, 1);
        assert_eq!(ops.entries(), [keep]);
        assert_eq!(ops.deleted(), [(Family::V4, gone)]);
        assert_eq!(ops.dumps(), [Family::V4]);
    }

    #[test]
    fn nothing_matched_is_zero_not_an_error() {
        let ops = FakeConntrack::with_entries([udp("198.18.0.1", "198.18.1.2")]);
        assert_eq!(delete_matching(&ops, Family::V4, |_| false).expect("ok"), 0);
        assert_eq!(ops.entries().len(), 1);
    }

    #[test]
    fn the_fake_dumps_only_the_asked_family() {
        let v6 = Entry {
            src: "2001:db8::1".parse().expect("ip"),
            dst: "2001:db8::53".parse().expect("ip"),
            reply_src: "2001:db8::2".parse().expect("ip"),
            ..udp("198.18.0.1", "198.18.1.2")
        };
        let ops = FakeConntrack::with_entries([v6]);
        assert_eq!(delete_matching(&ops, Family::V4, |_| true).expect("ok"), 0);
        assert_eq!(delete_matching(&ops, Family::V6, |_| true).expect("ok"), 1);
    }

    #[test]
    fn a_failed_dump_is_reported_with_its_family() {
        let ops = FakeConntrack::default();
        ops.fail_with(netlink_transport::errno::EPERM.raw());
        let e = delete_matching(&ops, Family::V6, |_| true).expect_err("fails");
        assert_eq!((e.op, e.family), ("dump", Family::V6));
        assert_eq!(
            e.to_string(),
            "conntrack dump (ipv6): Operation not permitted (os error 1)"
        );
    }
}
