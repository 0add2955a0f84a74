//! The partial plan: only the listeners of the service ports a change set names, so that a sync
//! costs O(ports changed × log N), not O(table).
//!
//! # Who owns a listener
//!
//! A listener key may be claimed by several service ports (a node port on a node address that
//! is also a cluster IP, an address a port lists twice). The full plan gives it to the first
//! claim in service port order, then in the port's own claim order, and reports every other
//! claim as a problem of the port that lost ([`super::plan_listeners`]). A partial plan must
//! reach the same owner without walking the table, and it can, from what the last sync left:
//!
//! - every claim that lost, and every listener that could not be bound, was a problem of its
//!   port, so its port is in `with_problems` and is planned again (as kube-proxy's
//!   `pkg/proxy/iptables/proxier.go` retries every service of a failed sync);
//! - so a port outside the scope claims a key only if it owns it: it is the applied listener's
//!   port, with the applied route (its value is unchanged, so its claim is too).
//!
//! For each key that a port of the scope claims now or claimed before, the claimants are
//! therefore the scope's claims plus the applied owner when it is outside the scope. The first
//! one wins, as in the full plan; a key nobody claims any more is closed. A port outside the
//! scope that loses its key here (a port of the scope with a smaller name now claims it) is
//! reported like any other loser, and so is planned again by the next partial plan.
//!
//! # When the node's addresses change
//!
//! Only the ports whose listeners or routes depend on the node's addresses
//! ([`super::depends_on_node_ips`]) are looked at, and of those only what the change moves: the
//! node-port keys on the addresses that came (claimed, with the node-port route) or went (closed
//! unless someone else claims them). Their applied owner is not counted as a claimant there:
//! its claim is the one being planned. A port whose load-balancer source ranges change verdict
//! (one of them holds a node address now, or no longer) joins the scope whole, with the keys it
//! claimed on the previous addresses. Every other claim does not depend on the addresses, so the
//! reasoning above holds.

use std::collections::{BTreeMap, BTreeSet};

use proxy_core::dataplane::SyncProblem;
use proxy_core::diff::ChangeSet;
use proxy_core::table::{Protocol, ServicePortName, ServiceTable};

use super::{
    allows_node, clash_problem, listener_keys, plan_service_port, sctp_problem, AddressKind,
    ListenerKey, Listeners, NodeIps, Plan, Route, Scope,
};
use crate::config::UserspaceConfig;

/// The node addresses of a partial plan: those the last sync planned with, those to plan with
/// now, and the service ports that depend on them.
#[derive(Debug, Clone, Copy)]
pub struct NodeIpsChange<'a> {
    /// The addresses the last sync planned node ports on.
    pub previous: &'a NodeIps,
    /// The addresses to plan node ports on now.
    pub current: &'a NodeIps,
    /// The service ports of the last table (and of this one, for those it adds or changes)
    /// that depend on the node's addresses ([`super::depends_on_node_ips`]): planned again
    /// when the addresses differ. A superset does no harm.
    pub dependent: &'a BTreeSet<ServicePortName>,
}

impl<'a> NodeIpsChange<'a> {
    /// Addresses that stay as they are (no port is planned for them).
    pub fn unchanged(ips: &'a NodeIps, dependent: &'a BTreeSet<ServicePortName>) -> Self {
        NodeIpsChange {
            previous: ips,
            current: ips,
            dependent,
        }
    }

    fn changed(&self) -> bool {
        self.previous != self.current
    }
}

/// One claim on a listener key.
struct Claim<'a> {
    service_port: &'a ServicePortName,
    /// The claim's place in its port's claim order (the order of [`plan_service_port`]).
    index: usize,
    /// The route the claim asks for; `None` for the applied owner outside the scope, whose
    /// route is the applied one.
    route: Option<Route>,
}

impl<'a> Claim<'a> {
    /// The full plan's order of claims: service port, then the port's own order.
    fn order(&self) -> (&'a ServicePortName, usize) {
        (self.service_port, self.index)
    }
}

/// The plan from `applied` for the service ports `changes` names (added, removed or changed
/// since the last sync) and those in `with_problems` (the ports the last sync reported problems
/// for: claims that lost, listeners that could not be bound, SCTP). Its [`Plan::desired`] holds
/// every listener those ports claim, with the route of the port that owns it (see the module
/// docs); [`Plan::problems`] are those of the ports that claim one of these listeners. Every
/// other applied listener is left out of the plan, and stays as it is.
///
/// `changes` must lead from the table the last sync applied to `table`, as the sync loop's
/// change set does (`diff(last successful table, desired)`). Cost: O(k × log N) for k listeners
/// of the ports in scope, plus selecting their endpoints; nothing in it walks the table.
///
/// Applied, it gives the same listeners and problems as [`super::plan`] of `table`: the test
/// `a_series_of_partial_plans_ends_where_one_full_plan_does` checks this over random series of
/// changes, with clashing addresses and listeners that fail to bind.
pub fn plan_partial(
    table: &ServiceTable,
    changes: &ChangeSet,
    config: &UserspaceConfig,
    node_ips: NodeIpsChange<'_>,
    applied: &Listeners,
    with_problems: &BTreeSet<ServicePortName>,
) -> Plan {
    let readdress = node_ips.changed();
    let mut scope: BTreeSet<ServicePortName> =
        changes.touched().chain(with_problems).cloned().collect();
    // Readdressed: the dependent ports outside the scope whose node ports move, and those
    // (rare) whose source ranges change verdict, planned whole.
    let mut moved = Vec::new();
    let mut whole = Vec::new();
    if readdress {
        for name in node_ips
            .dependent
            .iter()
            .filter(|name| !scope.contains(*name))
        {
            let Some(port) = table.get(name) else {
                continue;
            };
            if allows_node(port, node_ips.previous) != allows_node(port, node_ips.current) {
                whole.push(port);
            } else if port.node_port.is_some() {
                moved.push(port);
            }
        }
        scope.extend(whole.iter().map(|port| port.name.clone()));
    }
    let came: NodeIps = node_ips
        .current
        .difference(node_ips.previous)
        .copied()
        .collect();
    let went: NodeIps = node_ips
        .previous
        .difference(node_ips.current)
        .copied()
        .collect();
    let current_ips = node_ips.current;
    let mut problems: Vec<((&ServicePortName, usize), SyncProblem)> = Vec::new();
    let mut claims: BTreeMap<ListenerKey, Vec<Claim<'_>>> = BTreeMap::new();
    for name in &scope {
        let Some(port) = table.get(name) else {
            continue;
        };
        if port.protocol == Protocol::Sctp {
            problems.push(((name, 0), sctp_problem(name)));
            continue;
        }
        for (index, (key, route)) in plan_service_port(port, config, current_ips)
            .into_iter()
            .enumerate()
        {
            claims.entry(key).or_default().push(Claim {
                service_port: name,
                index,
                route: Some(route),
            });
        }
    }
    // The keys the changed and removed ports held before: closed unless someone claims them.
    let previous = changes.changed.iter().map(|change| &change.previous);
    for port in changes.removed.iter().chain(previous) {
        for (key, _) in listener_keys(port, node_ips.previous) {
            claims.entry(key).or_default();
        }
    }
    // Readdressed: the keys the dependent ports of the scope (planned whole, changed, or left
    // with problems) held on the previous addresses.
    if readdress {
        let in_scope = node_ips
            .dependent
            .iter()
            .filter(|name| scope.contains(*name));
        for port in in_scope.filter_map(|name| table.get(name)) {
            for (key, _) in listener_keys(port, node_ips.previous) {
                claims.entry(key).or_default();
            }
        }
    }
    // Readdressed, node ports moved: their keys on the addresses that went, and their claims on
    // those that came.
    for port in &moved {
        let (Some(node_port), false) = (port.node_port, port.protocol == Protocol::Sctp) else {
            continue;
        };
        for &ip in &went {
            let key = ListenerKey {
                protocol: port.protocol,
                addr: std::net::SocketAddr::new(ip, node_port),
            };
            claims.entry(key).or_default();
        }
        if came.is_empty() {
            continue;
        }
        let node_port_routes = plan_service_port(port, config, &came)
            .into_iter()
            .filter(|(_, route)| route.kind == AddressKind::NodePort);
        // Each claim's place among the port's own: its node-port claim, which may come after
        // a claim of the port's on the same key (a cluster IP that is now a node address).
        let order = listener_keys(port, current_ips);
        for (key, route) in node_port_routes {
            let index = order
                .iter()
                .position(|claimed| *claimed == (key, AddressKind::NodePort))
                .unwrap_or(0);
            claims.entry(key).or_default().push(Claim {
                service_port: &port.name,
                index,
                route: Some(route),
            });
        }
    }

    let mut plan = Plan::default();
    for (key, mut claims) in claims {
        let applied_route = applied.get(&key);
        // A node-port listener on an address that came or went is claimed above, or not at all.
        let is_moved = |route: &Route| {
            route.kind == AddressKind::NodePort
                && (came.contains(&key.addr.ip()) || went.contains(&key.addr.ip()))
        };
        let outside = |route: &&Route| !scope.contains(&route.service_port) && !is_moved(route);
        if let Some(route) = applied_route.filter(outside) {
            claims.push(Claim {
                service_port: &route.service_port,
                index: claim_index(table, current_ips, &route.service_port, key),
                route: None,
            });
        }
        claims.sort_by(|a, b| a.order().cmp(&b.order()));
        let mut claims = claims.into_iter();
        let Some(owner) = claims.next() else {
            if applied_route.is_some() {
                plan.close.push(key);
            }
            continue;
        };
        for lost in claims {
            let problem = clash_problem(lost.service_port, key, owner.service_port);
            problems.push((lost.order(), problem));
        }
        let route = match (owner.route, applied_route) {
            (Some(route), _) => route,
            (None, Some(applied)) => applied.clone(),
            // Cannot happen: only the applied owner claims without a route.
            (None, None) => continue,
        };
        match applied_route {
            None => plan.open.push(key),
            Some(old) if *old == route => plan.keep.push(key),
            Some(_) => plan.update.push(key),
        }
        plan.desired.insert(key, route);
    }
    // In the full plan's order: service port, then the port's claim order.
    problems.sort_by(|a, b| a.0.cmp(&b.0));
    plan.problems = problems.into_iter().map(|(_, problem)| problem).collect();
    plan.scope = Scope::Ports(scope);
    plan
}

/// Where `key` is in the claim order of `service_port` (an applied owner outside the scope):
/// orders the problems of a port that loses several keys as the full plan does.
fn claim_index(
    table: &ServiceTable,
    node_ips: &NodeIps,
    service_port: &ServicePortName,
    key: ListenerKey,
) -> usize {
    table
        .get(service_port)
        .and_then(|port| {
            listener_keys(port, node_ips)
                .iter()
                .position(|(claimed, _)| *claimed == key)
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
