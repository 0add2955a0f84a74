//! Everything one sync does, planned, pure: [`plan_setup`] (the dummy interface, the sysctls,
//! the IPVS timeouts: what a sync must do before it can read the kernel) and [`plan_sync`]
//! ([`Effects`]: VIP binds, the IPVS [`Op`]s, VIP unbinds, the companions, the UDP flows to
//! clean and the draining list after them), from the desired state and what we know of the
//! kernel ([`Observed`]).
//!
//! No I/O: the dataplane observes, plans, then applies each effect through its handle (see
//! `dataplane/run.rs`), so what a sync will do is testable and its cost countable without a
//! kernel. A partial sync plans only what its [`Touched`] names (and the draining virtual
//! servers): one endpoint changed plans one IPVS operation, whatever the table's size.

use std::collections::BTreeSet;
use std::fmt::{self, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use proxy_core::table::Protocol;

use super::{plan, plan_keys, Desired, Draining, IpvsState, Op, Touched};
use crate::config::IpvsConfig;
use crate::flows::StaleUdpFlows;
use crate::model::ServiceKey;
use crate::observe::Ownership;

/// What we know of the kernel between syncs, and what a sync plans against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// Our virtual servers as our last sync left them (a full sync dumps them again first; a
    /// partial one re-reads only the draining ones).
    pub applied: IpvsState,
    /// Which virtual servers are ours: the VIPs on our interface, the ones we created.
    pub ownership: Ownership,
    /// The index of our dummy interface, once known.
    pub link_index: Option<u32>,
    /// The real servers draining.
    pub draining: Draining,
}

/// What a sync does before it reads the kernel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Setup {
    /// Make sure the dummy interface exists and is up, read its VIPs, and write the IPVS
    /// sysctls (full syncs, and until the interface is known).
    pub link: bool,
    /// Also write the strict ARP sysctls (with `link`, when configured).
    pub strict_arp: bool,
    /// Set the configured IPVS connection timeouts (full syncs, when any is configured).
    pub timeouts: bool,
}

/// The setup of a sync: `full` or not, given what is known.
pub fn plan_setup(full: bool, observed: &Observed, config: &IpvsConfig) -> Setup {
    let link = full || observed.link_index.is_none();
    Setup {
        link,
        strict_arp: link && config.strict_arp,
        timeouts: full && config.timeouts.any(),
    }
}

/// Which companion entries a sync writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompanionScope {
    /// All of them (full sync).
    All,
    /// Those of the touched virtual servers and endpoints (partial sync).
    Touched(Touched),
}

impl CompanionScope {
    /// What `Companions::sync` takes: `None` for all.
    pub fn touched(&self) -> Option<&Touched> {
        match self {
            CompanionScope::All => None,
            CompanionScope::Touched(touched) => Some(touched),
        }
    }
}

/// A UDP real server the plan deletes: once it is gone, its conntrack entries go too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DeletedUdp {
    /// Its virtual server.
    pub key: ServiceKey,
    /// The real server's address and port.
    pub real_server: SocketAddr,
}

impl DeletedUdp {
    /// The flows to clean once it is deleted.
    pub fn flows(&self) -> StaleUdpFlows {
        StaleUdpFlows {
            vip: self.key.addr,
            port: self.key.port,
            real_server: self.real_server.ip(),
        }
    }
}

/// Everything a sync does after observing, in the order it is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effects {
    /// Whether the whole table was planned.
    pub full: bool,
    /// VIPs to bind to the dummy interface, first: a new virtual server is reachable as soon as
    /// it exists.
    pub binds: Vec<IpAddr>,
    /// The IPVS operations.
    pub ops: Vec<Op>,
    /// VIPs to unbind after the operations: no desired virtual server on them, and every one
    /// of ours there deleted by `ops` (applying checks again: a failed delete keeps it).
    pub unbinds: Vec<IpAddr>,
    /// The companion ipsets and rules.
    pub companions: CompanionScope,
    /// UDP real servers `ops` delete, whose flows are cleaned once they are gone.
    pub deleted_udp: Vec<DeletedUdp>,
    /// The draining list once the operations are done.
    pub draining: Draining,
}

/// The effects that take the kernel from `observed` to `desired`: everything (`touched` is
/// `None`, a full sync) or only the virtual servers and entries `touched` names, with the
/// draining virtual servers (partial).
pub fn plan_sync(
    desired: &Desired,
    observed: &Observed,
    touched: Option<&Touched>,
    now: Instant,
    grace: Duration,
) -> Effects {
    let bound = &observed.ownership.bound;
    // The addresses this sync may bind or unbind: all (full) or the touched ones.
    let candidates: BTreeSet<IpAddr> = match touched {
        None => desired.vips.keys().chain(bound).copied().collect(),
        Some(touched) => touched.keys.iter().map(|k| k.addr).collect(),
    };
    let binds = candidates
        .iter()
        .filter(|ip| desired.vips.contains_key(ip) && !bound.contains(ip))
        .copied()
        .collect();
    let plan = match touched {
        None => plan(
            &desired.state,
            &observed.applied,
            &observed.draining,
            now,
            grace,
        ),
        Some(touched) => {
            let mut keys = observed.draining.services();
            keys.extend(touched.keys.iter().copied());
            plan_keys(
                &desired.state,
                &observed.applied,
                &keys,
                &observed.draining,
                now,
                grace,
            )
        }
    };
    let deleted: BTreeSet<ServiceKey> = plan
        .ops
        .iter()
        .filter_map(|op| match op {
            Op::DeleteVirtualServer(key) => Some(*key),
            _ => None,
        })
        .collect();
    let unbinds = candidates
        .into_iter()
        .filter(|ip| {
            bound.contains(ip)
                && !desired.vips.contains_key(ip)
                && services_on(&observed.applied, *ip).all(|key| deleted.contains(key))
        })
        .collect();
    let deleted_udp = plan
        .ops
        .iter()
        .filter_map(|op| match op {
            Op::DeleteRealServer(key, rs) if key.protocol == Protocol::Udp => Some(DeletedUdp {
                key: *key,
                real_server: rs.socket_addr(),
            }),
            _ => None,
        })
        .collect();
    Effects {
        full: touched.is_none(),
        binds,
        ops: plan.ops,
        unbinds,
        companions: touched.map_or(CompanionScope::All, |t| CompanionScope::Touched(t.clone())),
        deleted_udp,
        draining: plan.draining,
    }
}

/// The keys of `state`'s virtual servers on address `ip`.
pub fn services_on(state: &IpvsState, ip: IpAddr) -> impl Iterator<Item = &ServiceKey> + '_ {
    let first = ServiceKey {
        addr: ip,
        protocol: Protocol::Tcp,
        port: 0,
    };
    state
        .services
        .range(first..)
        .map(|(key, _)| key)
        .take_while(move |key| key.addr == ip)
}

impl Setup {
    /// One line per step, in order (empty when nothing is set up).
    pub fn render(&self) -> String {
        let mut out = String::new();
        if self.link {
            out.push_str("setup dummy interface, VIPs read, IPVS sysctls\n");
        }
        if self.strict_arp {
            out.push_str("setup strict ARP sysctls\n");
        }
        if self.timeouts {
            out.push_str("setup IPVS connection timeouts\n");
        }
        out
    }
}

impl Effects {
    /// Binds, operations, unbinds, companion steps and flow clean-ups planned, each counted
    /// once: what a cost test compares across table sizes.
    pub fn count(&self) -> usize {
        let companions = match &self.companions {
            CompanionScope::All => 1,
            CompanionScope::Touched(t) => t.keys.len() + t.endpoints.len(),
        };
        self.binds.len() + self.ops.len() + self.unbinds.len() + companions + self.deleted_udp.len()
    }

    /// One line per effect, in the order they are applied; draining deadlines relative to
    /// `now`. What the golden test pins.
    pub fn render(&self, now: Instant) -> String {
        let mut out = String::new();
        let mode = if self.full { "full" } else { "partial" };
        let _ = writeln!(out, "# {mode} sync");
        for ip in &self.binds {
            let _ = writeln!(out, "bind {ip}");
        }
        for op in &self.ops {
            let _ = writeln!(out, "ipvs {op}");
        }
        for ip in &self.unbinds {
            let _ = writeln!(out, "unbind {ip}");
        }
        let _ = writeln!(out, "companions {}", self.companions);
        for deleted in &self.deleted_udp {
            let _ = writeln!(out, "clean flows {}", deleted.flows());
        }
        for ((key, rs), deadline) in self.draining.entries() {
            let left = deadline.saturating_duration_since(now).as_secs();
            let _ = writeln!(out, "drain {key} -> {rs} for {left}s");
        }
        out
    }
}

impl fmt::Display for CompanionScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompanionScope::All => f.write_str("all"),
            CompanionScope::Touched(t) => {
                let keys: Vec<String> = t.keys.iter().map(ToString::to_string).collect();
                let endpoints: Vec<String> = t
                    .endpoints
                    .iter()
                    .map(|(ip, protocol, port)| {
                        format!("{protocol} {}", SocketAddr::new(*ip, *port))
                    })
                    .collect();
                write!(
                    f,
                    "of [{}], endpoints [{}]",
                    keys.join(", "),
                    endpoints.join(", ")
                )
            }
        }
    }
}

#[cfg(test)]
mod tests;
