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

use std::collections::{BTreeMap, BTreeSet};

use proxy_core::dataplane::SyncProblem;
use proxy_core::diff::ChangeSet;
use proxy_core::table::{Protocol, ServicePortName, ServiceTable};

use super::{
    clash_problem, listener_keys, plan_service_port, sctp_problem, ListenerKey, Listeners, Plan,
    Route, Scope,
};
use crate::config::UserspaceConfig;

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
    applied: &Listeners,
    with_problems: &BTreeSet<ServicePortName>,
) -> Plan {
    let scope: BTreeSet<ServicePortName> =
        changes.touched().chain(with_problems).cloned().collect();
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
        for (index, (key, route)) in plan_service_port(port, config).into_iter().enumerate() {
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
        for (key, _) in listener_keys(port, config) {
            claims.entry(key).or_default();
        }
    }

    let mut plan = Plan::default();
    for (key, mut claims) in claims {
        let applied_route = applied.get(&key);
        if let Some(route) = applied_route.filter(|route| !scope.contains(&route.service_port)) {
            claims.push(Claim {
                service_port: &route.service_port,
                index: claim_index(table, config, &route.service_port, key),
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
    config: &UserspaceConfig,
    service_port: &ServicePortName,
    key: ListenerKey,
) -> usize {
    table
        .get(service_port)
        .and_then(|port| {
            listener_keys(port, config)
                .iter()
                .position(|(claimed, _)| *claimed == key)
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
