//! Stale UDP conntrack entries, deleted after each successful sync through the shared
//! ctnetlink client (`nf-conntrack`), as `backend-iptables/src/conntrack.rs` does (kube-proxy's
//! `pkg/proxy/conntrack/cleanup.go`):
//!
//! - a UDP service port that gains its first usable endpoint (or is added with some): entries
//!   to each of its addresses and port, and to its node port, created un-NATed;
//! - an endpoint no longer used (removed, or no longer ready/serving), or a removed port:
//!   entries to the service's addresses (or node port) that were DNATed to that endpoint.
//!
//! [`plan_conntrack`] is pure (the same rules as backend-iptables'; the two belong in one
//! shared place, see the lead's notes), [`flush_stale`] dumps each family once.

use std::collections::BTreeSet;
use std::net::IpAddr;

use nf_conntrack::Family;
pub use nf_conntrack::{ConntrackError, ConntrackOps, Entry, Netlink, IPPROTO_UDP};
use proxy_core::select::select_endpoints;
use proxy_core::{ChangeSet, Protocol, ServicePort};

/// One kind of stale entry to delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Flush {
    /// Un-NATed entries to a service address and port.
    ToServiceAddr {
        /// The service address.
        addr: IpAddr,
        /// Its port.
        port: u16,
    },
    /// Un-NATed entries to a node port, on any address.
    ToNodePort {
        /// The node port.
        port: u16,
    },
    /// Entries to a service address and port DNATed to `endpoint`.
    ToEndpointVia {
        /// The service address.
        addr: IpAddr,
        /// Its port.
        port: u16,
        /// The endpoint that went.
        endpoint: IpAddr,
    },
    /// Entries to a node port DNATed to `endpoint`.
    ToEndpointViaNodePort {
        /// The node port.
        port: u16,
        /// The endpoint that went.
        endpoint: IpAddr,
    },
}

impl Flush {
    /// Whether `e` is a stale entry of this kind.
    pub fn matches(&self, e: &Entry) -> bool {
        if e.proto != IPPROTO_UDP {
            return false;
        }
        match *self {
            Flush::ToServiceAddr { addr, port } => {
                e.dst == addr && e.dport == port && e.reply_src == e.dst
            }
            Flush::ToNodePort { port } => e.dport == port && e.reply_src == e.dst,
            Flush::ToEndpointVia {
                addr,
                port,
                endpoint,
            } => e.dst == addr && e.dport == port && e.reply_src == endpoint,
            Flush::ToEndpointViaNodePort { port, endpoint } => {
                e.dport == port && e.reply_src == endpoint
            }
        }
    }

    fn family(&self) -> Option<Family> {
        let of = |a: &IpAddr| if a.is_ipv4() { Family::V4 } else { Family::V6 };
        match self {
            Flush::ToServiceAddr { addr, .. } | Flush::ToEndpointVia { addr, .. } => Some(of(addr)),
            Flush::ToEndpointViaNodePort { endpoint, .. } => Some(of(endpoint)),
            Flush::ToNodePort { .. } => None,
        }
    }
}

fn used(port: &ServicePort) -> BTreeSet<IpAddr> {
    select_endpoints(port)
        .all_reachable
        .iter()
        .map(|e| e.addr)
        .collect()
}

fn lost(previous: &ServicePort, gone: &BTreeSet<IpAddr>, out: &mut BTreeSet<Flush>) {
    for &endpoint in gone {
        for addr in previous.service_ips() {
            out.insert(Flush::ToEndpointVia {
                addr,
                port: previous.port,
                endpoint,
            });
        }
        if let Some(port) = previous.node_port {
            out.insert(Flush::ToEndpointViaNodePort { port, endpoint });
        }
    }
}

/// The stale entries a change set leaves, pure.
pub fn plan_conntrack(changes: &ChangeSet) -> Vec<Flush> {
    let mut out = BTreeSet::new();
    for port in changes
        .removed
        .iter()
        .filter(|p| p.protocol == Protocol::Udp)
    {
        lost(port, &used(port), &mut out);
    }
    for change in &changes.changed {
        let (previous, current) = (&change.previous, &change.current);
        if previous.protocol != Protocol::Udp && current.protocol != Protocol::Udp {
            continue;
        }
        let before = used(previous);
        let after = if current.protocol == Protocol::Udp {
            used(current)
        } else {
            BTreeSet::new()
        };
        if previous.protocol == Protocol::Udp {
            let gone: BTreeSet<IpAddr> = before.difference(&after).copied().collect();
            lost(previous, &gone, &mut out);
        }
        if before.is_empty() && !after.is_empty() {
            for addr in current.service_ips() {
                out.insert(Flush::ToServiceAddr {
                    addr,
                    port: current.port,
                });
            }
            if let Some(port) = current.node_port {
                out.insert(Flush::ToNodePort { port });
            }
        }
    }
    for port in changes.added.iter().filter(|p| p.protocol == Protocol::Udp) {
        if !used(port).is_empty() {
            for addr in port.service_ips() {
                out.insert(Flush::ToServiceAddr {
                    addr,
                    port: port.port,
                });
            }
        }
    }
    out.into_iter().collect()
}

/// Deletes the entries `flushes` pick, one dump per family that has any; returns how many.
/// Blocking.
///
/// # Errors
/// The first [`ConntrackError`].
pub fn flush_stale(ops: &dyn ConntrackOps, flushes: &[Flush]) -> Result<usize, ConntrackError> {
    let mut deleted = 0;
    for family in [Family::V4, Family::V6] {
        let relevant: Vec<&Flush> = flushes
            .iter()
            .filter(|f| f.family().is_none_or(|ff| ff == family))
            .collect();
        if relevant.is_empty() {
            continue;
        }
        deleted += nf_conntrack::delete_matching(ops, family, |entry| {
            relevant.iter().any(|f| f.matches(entry))
        })?;
    }
    Ok(deleted)
}
