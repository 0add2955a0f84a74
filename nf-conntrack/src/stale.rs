//! Stale UDP conntrack entries: kube-proxy's well-known UDP blackhole. A UDP "connection" tracked
//! to an endpoint that went away (or tracked un-NATed while a service had no endpoint) keeps
//! matching its conntrack entry, so DNAT is never re-evaluated and the client's packets vanish.
//! After each successful sync a NAT backend (iptables, nftables) deletes exactly those entries,
//! as kube-proxy does in `pkg/proxy/conntrack/cleanup.go`:
//!
//! - a UDP service port that gains its first usable endpoint (or is added with some): entries
//!   to each of its addresses and port, and to its node port on any address, which were created
//!   un-NATed;
//! - an endpoint that is no longer used (removed, or no longer ready/serving), or a removed
//!   service port: entries to the service's addresses (or node port) that were DNATed to that
//!   endpoint.
//!
//! [`plan_conntrack`] is pure (a [`ChangeSet`] in, the [`Flush`]es out); [`flush_stale`] dumps
//! each family at most once through a [`ConntrackOps`] and deletes each matching entry by its
//! original tuple ([`crate::delete_matching`]).

use std::collections::BTreeSet;
use std::net::IpAddr;

use proxy_core::select::select_endpoints;
use proxy_core::{ChangeSet, Protocol, ServicePort};

use crate::{ConntrackError, ConntrackOps, Entry, Family, IPPROTO_UDP};

/// What to delete (UDP only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Flush {
    /// Un-NATed entries to `addr:port` (created while the service had no endpoint).
    ToServiceAddr {
        /// A cluster, external or load-balancer IP.
        addr: IpAddr,
        /// The service port.
        port: u16,
    },
    /// Un-NATed entries to any address on node port `port` (no endpoint before).
    ToNodePort {
        /// The node port.
        port: u16,
    },
    /// Entries to `addr:port` DNATed to `endpoint`.
    ToEndpointVia {
        /// A cluster, external or load-balancer IP.
        addr: IpAddr,
        /// The service port.
        port: u16,
        /// The endpoint that is gone.
        endpoint: IpAddr,
    },
    /// Entries to node port `port` DNATed to `endpoint`.
    ToEndpointViaNodePort {
        /// The node port.
        port: u16,
        /// The endpoint that is gone.
        endpoint: IpAddr,
    },
}

impl Flush {
    /// Whether `entry` is one this flush deletes.
    pub fn matches(&self, e: &Entry) -> bool {
        if e.proto != IPPROTO_UDP {
            return false;
        }
        match *self {
            // Only un-NATed entries (reply from the address itself): DNATed ones are correct.
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

    /// The one family whose table can hold such entries; `None` (a node port): both.
    fn family(&self) -> Option<Family> {
        match self {
            Flush::ToServiceAddr { addr, .. } | Flush::ToEndpointVia { addr, .. } => {
                Some(Family::of(*addr))
            }
            Flush::ToEndpointViaNodePort { endpoint, .. } => Some(Family::of(*endpoint)),
            Flush::ToNodePort { .. } => None,
        }
    }
}

/// The endpoint addresses a port's traffic may use.
fn used(port: &ServicePort) -> BTreeSet<IpAddr> {
    select_endpoints(port)
        .all_reachable
        .iter()
        .map(|e| e.addr)
        .collect()
}

/// The flushes of `previous`'s entries DNATed to each of `gone`.
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

/// What a sync that applied `changes` must delete, sorted and without duplicates. Pure.
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
        // A new service may take over addresses that had un-NATed entries.
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

/// Deletes every entry matching one of `flushes`; returns how many. Dumps each family at most
/// once, and only one that a flush can concern. Blocking: call it off the async runtime.
///
/// # Errors
/// The first [`ConntrackError`].
pub fn flush_stale(ops: &dyn ConntrackOps, flushes: &[Flush]) -> Result<usize, ConntrackError> {
    let mut deleted = 0;
    for family in Family::ALL {
        let relevant: Vec<&Flush> = flushes
            .iter()
            .filter(|f| f.family().is_none_or(|ff| ff == family))
            .collect();
        if relevant.is_empty() {
            continue;
        }
        deleted += crate::delete_matching(ops, family, |entry| {
            relevant.iter().any(|f| f.matches(entry))
        })?;
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeConntrack;
    use proxy_core::table::Endpoint;
    use proxy_core::{diff, ServicePortName, ServiceTable};

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn udp(endpoints: &[&str]) -> ServicePort {
        let mut p = ServicePort::new(ServicePortName::new("ns", "dns", "p"), Protocol::Udp, 53)
            .with_cluster_ip(ip("198.19.0.53"))
            .with_node_port(30053);
        for e in endpoints {
            p = p.with_endpoint(Endpoint::new(ip(e), 5353));
        }
        p
    }

    fn table(port: ServicePort) -> ServiceTable {
        ServiceTable::builder().insert(port).build().expect("valid")
    }

    fn entry(proto: u8, dst: &str, dport: u16, reply_src: &str) -> Entry {
        Entry {
            proto,
            src: ip("198.18.0.1"),
            dst: ip(dst),
            sport: 40000,
            dport,
            reply_src: ip(reply_src),
        }
    }

    #[test]
    fn a_removed_endpoint_flushes_entries_dnated_to_it() {
        let a = table(udp(&["198.18.1.1", "198.18.1.2"]));
        let b = table(udp(&["198.18.1.2"]));
        assert_eq!(
            plan_conntrack(&diff(&a, &b)),
            [
                Flush::ToEndpointVia {
                    addr: ip("198.19.0.53"),
                    port: 53,
                    endpoint: ip("198.18.1.1")
                },
                Flush::ToEndpointViaNodePort {
                    port: 30053,
                    endpoint: ip("198.18.1.1")
                },
            ]
        );
    }

    #[test]
    fn a_first_endpoint_flushes_un_natted_entries() {
        let a = table(udp(&[]));
        let b = table(udp(&["198.18.1.2"]));
        assert_eq!(
            plan_conntrack(&diff(&a, &b)),
            [
                Flush::ToServiceAddr {
                    addr: ip("198.19.0.53"),
                    port: 53
                },
                Flush::ToNodePort { port: 30053 },
            ]
        );
    }

    #[test]
    fn tcp_and_unchanged_endpoints_flush_nothing() {
        let mut tcp = udp(&["198.18.1.1"]);
        tcp.protocol = Protocol::Tcp;
        let a = table(tcp.clone());
        let b = table(ServicePort {
            endpoints: vec![],
            ..tcp
        });
        assert!(plan_conntrack(&diff(&a, &b)).is_empty());
        let same = table(udp(&["198.18.1.1"]));
        assert!(plan_conntrack(&diff(&same, &same)).is_empty());
    }

    #[test]
    fn flush_stale_deletes_only_matching_udp_entries_of_the_concerned_family() {
        let stale = entry(IPPROTO_UDP, "198.19.0.53", 53, "198.18.1.1");
        let fresh = entry(IPPROTO_UDP, "198.19.0.53", 53, "198.18.1.2");
        let tcp = entry(6, "198.19.0.53", 53, "198.18.1.1");
        let ops = FakeConntrack::with_entries([stale, fresh, tcp]);
        let flushes = [Flush::ToEndpointVia {
            addr: ip("198.19.0.53"),
            port: 53,
            endpoint: ip("198.18.1.1"),
        }];
        assert_eq!(flush_stale(&ops, &flushes).expect("fake"), 1);
        assert_eq!(ops.deleted(), [(Family::V4, stale)]);
        assert_eq!(ops.dumps(), [Family::V4], "no IPv6 flush, no IPv6 dump");
        assert_eq!(ops.entries(), [fresh, tcp]);
    }

    #[test]
    fn a_node_port_flush_dumps_both_families_and_nothing_dumps_none() {
        let ops = FakeConntrack::default();
        assert_eq!(flush_stale(&ops, &[]).expect("fake"), 0);
        assert!(ops.dumps().is_empty(), "{:?}", ops.dumps());
        let flushes = [Flush::ToNodePort { port: 30053 }];
        assert_eq!(flush_stale(&ops, &flushes).expect("fake"), 0);
        assert_eq!(ops.dumps(), [Family::V4, Family::V6]);
    }

    #[test]
    fn a_failed_dump_is_returned() {
        let ops = FakeConntrack::default();
        ops.fail_with(1);
        let error = flush_stale(&ops, &[Flush::ToNodePort { port: 30053 }]).expect_err("EPERM");
        assert_eq!(error.op, "dump", "{error}");
        assert_eq!(error.error.raw_os_error(), Some(1), "{error}");
    }
}
