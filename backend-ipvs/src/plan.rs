//! Planning, pure: what IPVS should hold for a [`ServiceTable`](proxy_core::ServiceTable) ([`plan_desired`]), and the
//! operations that take the kernel from what it holds to that ([`plan`]).
//!
//! No I/O, clock or randomness: time comes in as `now`, the kernel's state as an
//! [`IpvsState`]. Maps are ordered, so the same input gives the same operations in the same order.
//!
//! # What is programmed
//!
//! A virtual server per (VIP, port, protocol):
//! - each cluster IP on the service port, with the *internal* endpoints;
//! - each external and load-balancer IP on the service port, and each node address of the
//!   service's families on the node port, with the *external* endpoints (`Local`: only this
//!   node's). The node addresses are the configured ones, or the node's own as they come and go
//!   ([`Desired::readdress`] plans again only the ports that depend on them);
//!
//! with the port's scheduler (or the configured default; `mh` also gets the `mh-port` flag, as
//! kube-proxy sets it), persistence for client-IP affinity, and a masquerading real server per
//! selected endpoint of the VIP's family, with the endpoint's weight. A port whose traffic must
//! be refused or dropped ([`Verdict`]) keeps a virtual server with no real servers: IPVS answers
//! ICMP port unreachable, and the companion rules drop where the policy says drop. The exception,
//! kube-proxy's IPVS mode's: an external address of a `Local` external policy with no local
//! endpoint keeps the cluster-wide endpoints for pods ([`Verdict::DropOutsideCluster`]), and
//! the companions drop every other source.
//!
//! # Graceful termination
//!
//! A TCP real server that leaves the table is not deleted at once: it gets weight 0 (no new
//! connections) and a deadline `now + grace` in the [`Draining`] list; a later sync deletes it
//! when the kernel reports no active connection on it, or the deadline has passed. UDP and SCTP
//! real servers are deleted at once (kube-proxy's `IsRsGracefulTerminationNeeded`). An endpoint
//! that comes back while draining is simply updated to its weight again.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use proxy_core::table::Protocol;

use crate::model::{RealServer, ServiceKey, VirtualServer};

mod desired;
mod effects;
mod state;

pub use desired::{
    configured_node_ips, depends_on_node_ips, plan_desired, plan_desired_on, render_listing,
    render_state, Desired, Origin, Touched, Verdict, VipKind,
};
pub use effects::{
    plan_setup, plan_sync, services_on, CompanionScope, DeletedUdp, Effects, Observed, Setup,
};
pub use state::{IpvsState, ServiceState};

// === Plan ===

/// One IPVS operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Create a virtual server.
    AddVirtualServer(VirtualServer),
    /// Change a virtual server's scheduler, flags or persistence.
    UpdateVirtualServer(VirtualServer),
    /// Delete a virtual server with its real servers.
    DeleteVirtualServer(ServiceKey),
    /// Add a real server.
    AddRealServer(ServiceKey, RealServer),
    /// Change a real server's weight (0 starts draining it).
    UpdateRealServer(ServiceKey, RealServer),
    /// Delete a real server.
    DeleteRealServer(ServiceKey, RealServer),
}

impl Op {
    /// The virtual server the operation is about.
    pub fn key(&self) -> ServiceKey {
        match self {
            Op::AddVirtualServer(vs) | Op::UpdateVirtualServer(vs) => vs.key(),
            Op::DeleteVirtualServer(key)
            | Op::AddRealServer(key, _)
            | Op::UpdateRealServer(key, _)
            | Op::DeleteRealServer(key, _) => *key,
        }
    }
}

impl fmt::Display for Op {
    /// `ipvsadm`-like: `-A TCP 198.18.0.10:80 rr`, `-a TCP 198.18.0.10:80 -r 198.18.1.10:8080 -w 1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::AddVirtualServer(vs) => write!(f, "-A {} {}", vs.key(), vs.scheduler),
            Op::UpdateVirtualServer(vs) => write!(f, "-E {} {}", vs.key(), vs.scheduler),
            Op::DeleteVirtualServer(key) => write!(f, "-D {key}"),
            Op::AddRealServer(key, rs) => {
                write!(f, "-a {key} -r {} -w {}", rs.socket_addr(), rs.weight)
            }
            Op::UpdateRealServer(key, rs) => {
                write!(f, "-e {key} -r {} -w {}", rs.socket_addr(), rs.weight)
            }
            Op::DeleteRealServer(key, rs) => write!(f, "-d {key} -r {}", rs.socket_addr()),
        }
    }
}

/// The real servers being drained: removed TCP real servers at weight 0, each with the
/// deadline after which it is deleted even with connections open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Draining {
    deadlines: BTreeMap<(ServiceKey, SocketAddr), Instant>,
}

impl Draining {
    /// Number of real servers draining.
    pub fn len(&self) -> usize {
        self.deadlines.len()
    }

    /// Whether nothing drains.
    pub fn is_empty(&self) -> bool {
        self.deadlines.is_empty()
    }

    /// The deadline of one real server, if it drains.
    pub fn deadline(&self, key: &ServiceKey, rs: SocketAddr) -> Option<Instant> {
        self.deadlines.get(&(*key, rs)).copied()
    }

    /// Every draining real server with its deadline, in key order.
    pub fn entries(&self) -> impl Iterator<Item = ((ServiceKey, SocketAddr), Instant)> + '_ {
        self.deadlines.iter().map(|(k, d)| (*k, *d))
    }

    /// The virtual servers with a draining real server (whose connection counts a sync reads).
    pub fn services(&self) -> BTreeSet<ServiceKey> {
        self.deadlines.keys().map(|(key, _)| *key).collect()
    }

    /// Forgets real servers whose virtual server is gone from `state`, or that are gone from it.
    pub fn retain_present(&mut self, state: &IpvsState) {
        self.deadlines.retain(|(key, rs), _| {
            state
                .services
                .get(key)
                .is_some_and(|s| s.real_servers.contains_key(rs))
        });
    }
}

/// What a sync does: the operations, in order, and the draining list after them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// The operations, virtual server by virtual server in key order.
    pub ops: Vec<Op>,
    /// The draining list once the operations are done.
    pub draining: Draining,
}

/// Whether a removed real server of this protocol keeps its connections until they end
/// (kube-proxy's `IsRsGracefulTerminationNeeded`: TCP only).
pub fn drains(protocol: Protocol) -> bool {
    protocol == Protocol::Tcp
}

/// The operations that take `observed` (our virtual servers only, with connection counts where
/// known) to `desired`, given the real servers already draining and the time now.
pub fn plan(
    desired: &IpvsState,
    observed: &IpvsState,
    draining: &Draining,
    now: Instant,
    grace: Duration,
) -> Plan {
    let keys: BTreeSet<ServiceKey> = desired
        .services
        .keys()
        .chain(observed.services.keys())
        .copied()
        .collect();
    plan_keys(desired, observed, &keys, draining, now, grace)
}

/// [`plan`] restricted to the virtual servers `keys`: what a partial sync plans (the keys a
/// change touched, and those with a draining real server). Draining entries of other virtual
/// servers are kept as they are.
pub fn plan_keys(
    desired: &IpvsState,
    observed: &IpvsState,
    keys: &BTreeSet<ServiceKey>,
    draining: &Draining,
    now: Instant,
    grace: Duration,
) -> Plan {
    let mut ops = Vec::new();
    let mut next = draining.clone();
    next.deadlines.retain(|(key, _), _| !keys.contains(key));
    for key in keys {
        match (desired.services.get(key), observed.services.get(key)) {
            (None, Some(_)) => ops.push(Op::DeleteVirtualServer(*key)),
            (Some(want), None) => {
                ops.push(Op::AddVirtualServer(want.vs.clone()));
                ops.extend(
                    want.real_servers
                        .values()
                        .map(|rs| Op::AddRealServer(*key, rs.clone())),
                );
            }
            (Some(want), Some(have)) => {
                plan_service(want, have, draining, now, grace, &mut ops, &mut next);
            }
            (None, None) => {}
        }
    }
    Plan {
        ops,
        draining: next,
    }
}

fn plan_service(
    want: &ServiceState,
    have: &ServiceState,
    draining: &Draining,
    now: Instant,
    grace: Duration,
    ops: &mut Vec<Op>,
    next: &mut Draining,
) {
    let key = want.vs.key();
    if have.vs != want.vs {
        ops.push(Op::UpdateVirtualServer(want.vs.clone()));
    }
    for (addr, rs) in &want.real_servers {
        match have.real_servers.get(addr) {
            None => ops.push(Op::AddRealServer(key, rs.clone())),
            Some(current) if current.without_conns() != *rs => {
                ops.push(Op::UpdateRealServer(key, rs.clone()));
            }
            Some(_) => {}
        }
    }
    for (addr, current) in &have.real_servers {
        if want.real_servers.contains_key(addr) {
            continue;
        }
        let active = current.conns.map(|c| c.active);
        if !drains(key.protocol) || active == Some(0) {
            ops.push(Op::DeleteRealServer(key, current.without_conns()));
            continue;
        }
        let deadline = draining.deadline(&key, *addr).unwrap_or(now + grace);
        if now >= deadline {
            ops.push(Op::DeleteRealServer(key, current.without_conns()));
            continue;
        }
        if current.weight != 0 {
            ops.push(Op::UpdateRealServer(
                key,
                RealServer {
                    weight: 0,
                    ..current.without_conns()
                },
            ));
        }
        next.deadlines.insert((key, *addr), deadline);
    }
}

#[cfg(test)]
mod golden;
#[cfg(test)]
mod tests;
