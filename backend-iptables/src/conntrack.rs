//! Stale UDP conntrack entries: kube-proxy's well-known UDP blackhole. A UDP "connection" tracked
//! to an endpoint that went away (or tracked un-NATed while a service had no endpoint) keeps
//! matching its conntrack entry, so DNAT is never re-evaluated and the client's packets vanish.
//! After each successful sync we delete exactly those entries, as kube-proxy does in
//! `pkg/proxy/conntrack/cleanup.go`:
//!
//! - a service port that gains its first usable endpoint: entries to each of its addresses and
//!   port (and to its node port on any address), which were created un-NATed;
//! - an endpoint that is no longer used (removed, or no longer ready/serving), or a removed
//!   service port: entries to the service's addresses that were DNATed to that endpoint.
//!
//! [`plan_conntrack`] is pure; [`flush_stale`] dumps the table once per family through a
//! [`ConntrackOps`] and deletes each matching entry by its original tuple. The ctnetlink client
//! ([`ConntrackOps`], [`Netlink`], [`Entry`]...) lives in the `nf-conntrack` crate, shared with
//! backend-ipvs, and is re-exported here. [`NetnsNetlink`] is the same client in a named network
//! namespace ([`crate::IptablesConfig::netns`]).

use std::collections::BTreeSet;
use std::fs::File;
use std::net::IpAddr;
use std::path::PathBuf;

use nix::sched::{setns, CloneFlags};

pub use nf_conntrack::{
    encode_delete, encode_dump, parse_entry, ConntrackError, ConntrackOps, Entry, Netlink,
    IPPROTO_UDP,
};
use proxy_core::select::select_endpoints;
use proxy_core::{ChangeSet, Protocol, ServicePort};

use crate::rules::Family;

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

/// What a sync that applied `changes` must delete. Pure.
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
/// once. Blocking: call it off the async runtime.
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
        deleted += nf_conntrack::delete_matching(ops, family, |entry| {
            relevant.iter().any(|f| f.matches(entry))
        })?;
    }
    Ok(deleted)
}

/// [`Netlink`] in a named network namespace: each call runs on a thread of its own that first
/// enters `/run/netns/NAME` (`setns(2)`, as `ip netns exec` does), so the ctnetlink socket is
/// opened in, and talks to, that namespace's conntrack table. The thread ends with the call:
/// no thread of the caller (or of tokio's pool) ever changes namespace. Needs `CAP_SYS_ADMIN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetnsNetlink {
    path: PathBuf,
}

impl NetnsNetlink {
    /// The conntrack table of the namespace `ip netns add NAME` made.
    pub fn new(name: &str) -> Self {
        Self {
            path: PathBuf::from("/run/netns").join(name),
        }
    }

    /// The namespace file entered.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Runs `call` on a new thread inside the namespace.
    fn inside<T: Send>(
        &self,
        op: &'static str,
        family: Family,
        call: impl FnOnce() -> Result<T, ConntrackError> + Send,
    ) -> Result<T, ConntrackError> {
        let error = |source: std::io::Error| ConntrackError { op, family, source };
        std::thread::scope(|scope| {
            let thread = std::thread::Builder::new()
                .name("conntrack-netns".into())
                .spawn_scoped(scope, || {
                    let file = File::open(&self.path).map_err(error)?;
                    setns(&file, CloneFlags::CLONE_NEWNET)
                        .map_err(|errno| error(std::io::Error::from(errno)))?;
                    call()
                })
                .map_err(error)?;
            thread.join().unwrap_or_else(|_| {
                Err(error(std::io::Error::other(format!(
                    "thread in {} panicked",
                    self.path.display()
                ))))
            })
        })
    }
}

impl ConntrackOps for NetnsNetlink {
    fn dump(&self, family: Family) -> Result<Vec<Entry>, ConntrackError> {
        self.inside("dump", family, || Netlink.dump(family))
    }

    fn delete(&self, family: Family, entry: &Entry) -> Result<(), ConntrackError> {
        self.inside("delete", family, || Netlink.delete(family, entry))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
}
