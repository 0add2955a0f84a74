//! One service port's rules: its dispatch and filter entries, and its own chains (SVC-, SVL-,
//! EXT-, FW-, and SEP- for affinity).

use std::collections::BTreeSet;
use std::net::SocketAddr;

use ipnet::IpNet;
use proxy_core::select::{select_endpoints, Target as SelTarget};
use proxy_core::table::{Endpoint, SessionAffinity, TrafficPolicy};
use proxy_core::{Protocol, ServicePort};

use super::{Planner, Shared};
use crate::config::{DispatchLayout, InlineBalancing};
use crate::rules::{
    AddrTypeDir, Chain, ChainName, Family, Match, Probability, Recent, RejectWith, Rule, Target,
};

impl Planner {
    /// Plans one service port in one family: pushes its dispatch and filter rules into `shared`
    /// and, when `render`, returns its own chains.
    pub(super) fn plan_port(
        &self,
        port: &ServicePort,
        family: Family,
        shared: &mut Shared,
        render: bool,
    ) -> Vec<Chain> {
        let n = &self.names;
        let name = &port.name;
        let proto = port.protocol;
        let selection = select_endpoints(port);
        // New connections only: weight-0 endpoints take none (proxy_core::select).
        let cluster = selection.for_policy_new(TrafficPolicy::Cluster).to_vec();
        let local = selection.for_policy_new(TrafficPolicy::Local).to_vec();

        let svc = (!cluster.is_empty()).then(|| n.service_cluster(name, proto));
        let svl = (!local.is_empty()).then(|| n.service_local(name, proto));
        let policy_chain = |policy| match policy {
            TrafficPolicy::Cluster => svc.clone(),
            TrafficPolicy::Local => svl.clone(),
        };
        let internal_chain = policy_chain(port.internal_traffic_policy);
        let external_chain = policy_chain(port.external_traffic_policy);
        let has_external = port.has_external_addresses();
        // An EXT chain unless external traffic is rejected (same as "has endpoints" before
        // weights: a Cluster policy with no candidate of weight above 0 rejects).
        let ext = (has_external && selection.external_new() != SelTarget::Reject)
            .then(|| n.external(name, proto));
        let ranges = &port.load_balancer_source_ranges;
        let fw = (ext.is_some() && !ranges.is_empty() && !port.load_balancer_ips.is_empty())
            .then(|| n.firewall_lb(name, proto));

        let filter_rule = |target: SelTarget<'_, '_>| -> Option<(Target, &'static str)> {
            match target {
                SelTarget::Endpoints(_) => None,
                SelTarget::Reject => Some((
                    Target::Reject(reject_with(family, proto)),
                    "has no endpoints",
                )),
                SelTarget::Drop => Some((Target::Drop, "has no local endpoints")),
            }
        };

        let affinity = match port.session_affinity {
            SessionAffinity::None => None,
            SessionAffinity::ClientIp { timeout } => {
                Some(u32::try_from(timeout.as_secs()).unwrap_or(u32::MAX))
            }
        };
        // Inline balancing: the internal chain's rules, guarded, go into the dispatch leaf.
        let inline = match (&internal_chain, &port.cluster_ips[..]) {
            (Some(chain), &[ip]) if ext.is_none() && affinity.is_none() => {
                let endpoints = if Some(chain) == svc.as_ref() {
                    &cluster
                } else {
                    &local
                };
                self.inline_rules(port, family, ip, chain, endpoints)
            }
            _ => None,
        };

        // Dispatch: cluster IPs.
        for &ip in &port.cluster_ips {
            if let Some(rules) = &inline {
                shared.dispatch.push((ip, rules.clone()));
                continue;
            }
            match (&internal_chain, filter_rule(selection.internal_new())) {
                (Some(chain), _) => shared.dispatch.push((
                    ip,
                    vec![Rule::new(Target::Jump(chain.clone()))
                        .destination(ip)
                        .protocol(proto)
                        .comment(format!("{name} cluster IP"))
                        .dport(proto, port.port)],
                )),
                (None, Some((target, why))) => shared.filter_services.push(
                    Rule::new(target)
                        .destination(ip)
                        .protocol(proto)
                        .comment(format!("{name} {why}"))
                        .dport(proto, port.port),
                ),
                // Unreachable: no chain means no endpoint for new connections, a filter rule.
                (None, None) => {}
            }
        }
        // External destinations.
        let external_filter = filter_rule(selection.external_new());
        let external_ips = port
            .external_ips
            .iter()
            .map(|ip| (*ip, "external IP", false))
            .chain(
                port.load_balancer_ips
                    .iter()
                    .map(|ip| (*ip, "loadbalancer IP", true)),
            );
        for (ip, kind, is_lb) in external_ips {
            if let Some(ext) = &ext {
                let to = match (&fw, is_lb) {
                    (Some(fw), true) => fw.clone(),
                    _ => ext.clone(),
                };
                shared.dispatch.push((
                    ip,
                    vec![Rule::new(Target::Jump(to))
                        .destination(ip)
                        .protocol(proto)
                        .comment(format!("{name} {kind}"))
                        .dport(proto, port.port)],
                ));
            }
            if let Some((target, why)) = &external_filter {
                shared.filter_external.push(
                    Rule::new(target.clone())
                        .destination(ip)
                        .protocol(proto)
                        .comment(format!("{name} {why}"))
                        .dport(proto, port.port),
                );
            }
        }
        if let Some(node_port) = port.node_port {
            if let Some(ext) = &ext {
                shared.node_ports.push((
                    proto,
                    node_port,
                    Rule::new(Target::Jump(ext.clone()))
                        .protocol(proto)
                        .comment(name.to_string())
                        .dport(proto, node_port),
                ));
            }
            if let Some((target, why)) = &external_filter {
                shared.filter_external.push(
                    Rule::new(target.clone())
                        .protocol(proto)
                        .comment(format!("{name} {why}"))
                        .with(Match::AddrTypeLocal(AddrTypeDir::Dst))
                        .dport(proto, node_port),
                );
            }
        }
        if let Some(fw) = &fw {
            for &ip in &port.load_balancer_ips {
                shared.filter_firewall.push(
                    Rule::new(Target::Drop)
                        .destination(ip)
                        .protocol(proto)
                        .comment(format!("{name} traffic not accepted by {fw}"))
                        .dport(proto, port.port),
                );
            }
        }

        if !render || inline.is_some() {
            // An inline port has no chain of its own: its only referrer was the dispatch rule.
            return Vec::new();
        }
        let mut chains = Vec::new();
        let internal_is = |chain: &Option<ChainName>| chain.is_some() && *chain == internal_chain;
        if let Some(svc) = &svc {
            chains.push(self.balance_chain(
                port,
                family,
                svc,
                &cluster,
                internal_is(&Some(svc.clone())),
                affinity,
            ));
        }
        if let Some(svl) = &svl {
            chains.push(self.balance_chain(
                port,
                family,
                svl,
                &local,
                internal_is(&Some(svl.clone())),
                affinity,
            ));
        }
        if let Some(ext) = &ext {
            let mut chain = Chain::new(ext.clone());
            let masq = Target::Jump(n.mark_masq());
            match port.external_traffic_policy {
                TrafficPolicy::Cluster => {
                    chain.push(Rule::new(masq).comment(format!(
                        "masquerade traffic for {name} external destinations"
                    )));
                }
                TrafficPolicy::Local => {
                    if let (Some(cidr), Some(svc)) = (self.config.cluster_cidr(family), &svc) {
                        chain.push(
                            Rule::new(Target::Jump(svc.clone()))
                                .source_net(cidr, false)
                                .comment(format!("pod traffic for {name} external destinations")),
                        );
                    }
                    chain.push(
                        Rule::new(masq)
                            .comment(format!(
                                "masquerade LOCAL traffic for {name} external destinations"
                            ))
                            .with(Match::AddrTypeLocal(AddrTypeDir::Src)),
                    );
                    if let Some(svc) = &svc {
                        chain.push(
                            Rule::new(Target::Jump(svc.clone()))
                                .comment(format!(
                                    "route LOCAL traffic for {name} external destinations"
                                ))
                                .with(Match::AddrTypeLocal(AddrTypeDir::Src)),
                        );
                    }
                }
            }
            if let Some(to) = &external_chain {
                chain.push(Rule::new(Target::Jump(to.clone())));
            }
            chains.push(chain);
        }
        if let (Some(fw), Some(ext)) = (&fw, &ext) {
            let mut chain = Chain::new(fw.clone());
            let ranges: Vec<&IpNet> = ranges
                .iter()
                .filter(|r| family.contains(r.addr()))
                .collect();
            for range in &ranges {
                chain.push(
                    Rule::new(Target::Jump(ext.clone()))
                        .source_net(**range, false)
                        .comment(format!("{name} loadbalancer IP")),
                );
            }
            // kube-proxy's allowFromNode: a node reaching a load-balancer IP it holds locally
            // (a VIP-like load balancer adds it, or routes it, to the node) sends from that IP,
            // which no range names; let it in when a range lets the node in.
            let allows_node = ranges
                .iter()
                .any(|range| self.config.node_ips.iter().any(|ip| range.contains(ip)));
            if allows_node {
                for &ip in port
                    .load_balancer_ips
                    .iter()
                    .filter(|ip| family.contains(**ip))
                {
                    chain.push(
                        Rule::new(Target::Jump(ext.clone()))
                            .source(ip)
                            .comment(format!("{name} loadbalancer IP")),
                    );
                }
            }
            chains.push(chain);
        }
        if affinity.is_some() {
            let mut seen = BTreeSet::new();
            for ep in cluster.iter().chain(&local) {
                if !seen.insert(ep.key()) {
                    continue;
                }
                let sep = n.endpoint(name, proto, &ep.key());
                let mut chain = Chain::new(sep.clone());
                chain.push(
                    Rule::new(Target::Jump(n.mark_masq()))
                        .source(ep.addr)
                        .comment(name.to_string()),
                );
                chain.push(
                    Rule::new(Target::Dnat(SocketAddr::new(ep.addr, ep.port)))
                        .protocol(proto)
                        .comment(name.to_string())
                        .with(Match::Recent(Recent::Set {
                            name: sep.to_string(),
                            family,
                        })),
                );
                chains.push(chain);
            }
        }
        chains
    }

    /// The rules of a port's balancing chain `chain`, each guarded by `-d ip -p proto --dport
    /// port`, for a dispatch leaf; `None` when inline balancing is off or they would not fit.
    ///
    /// The caller only asks for a port whose balancing chain would have a single referrer, the
    /// dispatch rule of its one cluster IP in this family: no EXT chain (no node port, external or
    /// load-balancer IP with a usable policy: EXT would jump to the chain, and for eTP=Local
    /// to both SVC and SVL), no session affinity (its SEP chains are `-m recent` targets), one
    /// cluster IP. Everything the chain decides is then per packet and needs no state between
    /// its rules but the hairpin pair's select mark, which stays valid: the port's rules keep
    /// their order and are contiguous, and each ends the walk (DNAT) or falls to the next rule
    /// of the same port (MARK), which the guard lets through alike.
    fn inline_rules(
        &self,
        port: &ServicePort,
        family: Family,
        ip: std::net::IpAddr,
        chain: &ChainName,
        endpoints: &[&Endpoint],
    ) -> Option<Vec<Rule>> {
        let tree = &self.config.tree;
        if self.config.dispatch != DispatchLayout::Tree
            || tree.inline_balancing == InlineBalancing::Never
        {
            return None;
        }
        let rules = self
            .balance_chain(port, family, chain, endpoints, true, None)
            .rules;
        if rules.len() > tree.leaf_max_rules.max(1) {
            return None;
        }
        let proto = port.protocol;
        Some(
            rules
                .into_iter()
                .map(|mut rule| {
                    if rule.destination.is_none() {
                        rule = rule.destination(ip);
                    }
                    if rule.protocol.is_none() {
                        rule = rule.protocol(proto);
                    }
                    let has_port = rule
                        .matches
                        .iter()
                        .any(|m| matches!(m, Match::DestPort { .. }));
                    if !has_port {
                        // After the comment, as the dispatch rules write it.
                        let at =
                            usize::from(matches!(rule.matches.first(), Some(Match::Comment(_))));
                        rule.matches.insert(
                            at,
                            Match::DestPort {
                                protocol: proto,
                                port: port.port,
                            },
                        );
                    }
                    rule
                })
                .collect(),
        )
    }

    /// A service port's balancing chain (SVC- or SVL-) over `endpoints` (never empty).
    ///
    /// Without affinity each endpoint gets, inline (see README "Hairpin"):
    /// 1. `! -s ep -m statistic p -j DNAT ep` (the common case: one rule, one draw);
    /// 2. `-s ep -m statistic p -j MARK masq|select` (the endpoint calling itself: same draw);
    /// 3. `-s ep -m mark select -j DNAT ep` (finish the hairpin pick, masqueraded).
    ///
    /// The last endpoint needs no draw: `! -s ep -j DNAT`, `-j MARK-MASQ`, `-j DNAT`.
    ///
    /// Only endpoints on this node can send hairpin traffic through this node's rules (a remote
    /// pod's connections are NATed by its own node), so rules 2 and 3 (and the `! -s` of rule 1)
    /// are written for local endpoints only, unless `hairpin_all_endpoints` is set.
    fn balance_chain(
        &self,
        port: &ServicePort,
        family: Family,
        chain_name: &ChainName,
        endpoints: &[&Endpoint],
        is_internal_chain: bool,
        affinity: Option<u32>,
    ) -> Chain {
        let n = &self.names;
        let name = &port.name;
        let proto = port.protocol;
        let mut chain = Chain::new(chain_name.clone());
        if is_internal_chain {
            for &ip in &port.cluster_ips {
                let rule = Rule::new(Target::Jump(n.mark_masq()));
                let rule = if self.config.masquerade_all {
                    rule
                } else if let Some(cidr) = self.config.cluster_cidr(family) {
                    rule.source_net(cidr, true)
                } else {
                    continue;
                };
                chain.push(
                    rule.destination(ip)
                        .protocol(proto)
                        .comment(format!("{name} cluster IP"))
                        .dport(proto, port.port),
                );
            }
        }
        if affinity.is_some() {
            for ep in endpoints {
                let sep = n.endpoint(name, proto, &ep.key());
                chain.push(
                    Rule::new(Target::Jump(sep.clone()))
                        .comment(format!("{name} -> {}", ep.key()))
                        .with(Match::Recent(Recent::Check {
                            name: sep.to_string(),
                            seconds: affinity.unwrap_or_default(),
                            family,
                        })),
                );
            }
        }
        let total: u64 = endpoints.iter().map(|e| u64::from(weight(e))).sum();
        let mut remaining = total;
        let masq = self.config.masquerade_mark();
        let select = self.config.select_mark();
        for (i, ep) in endpoints.iter().enumerate() {
            let is_last = i + 1 == endpoints.len();
            let w = u64::from(weight(ep));
            let stat = (!is_last).then(|| Match::Statistic(Probability::ratio(w, remaining)));
            remaining -= w;
            let to = SocketAddr::new(ep.addr, ep.port);
            let comment = format!("{name} -> {}", ep.key());
            if affinity.is_some() {
                let mut rule =
                    Rule::new(Target::Jump(n.endpoint(name, proto, &ep.key()))).comment(&comment);
                rule.matches.extend(stat);
                chain.push(rule);
                continue;
            }
            let needs_hairpin = ep.is_local || self.config.hairpin_all_endpoints;
            let mut direct = Rule::new(Target::Dnat(to))
                .protocol(proto)
                .comment(&comment);
            if needs_hairpin {
                direct = direct.source_net(IpNet::from(ep.addr), true);
            }
            direct.matches.extend(stat.clone());
            chain.push(direct);
            if !needs_hairpin {
                continue;
            }
            match stat {
                Some(stat) => {
                    chain.push(
                        Rule::new(Target::Mark {
                            value: masq | select,
                            mask: masq | select,
                        })
                        .source(ep.addr)
                        .with(stat),
                    );
                    chain.push(
                        Rule::new(Target::Dnat(to))
                            .source(ep.addr)
                            .protocol(proto)
                            .with(Match::Mark {
                                value: select,
                                mask: select,
                                negated: false,
                            }),
                    );
                }
                None => {
                    // Only the endpoint itself gets here: the rule above took everyone else.
                    chain.push(Rule::new(Target::Jump(n.mark_masq())));
                    chain.push(Rule::new(Target::Dnat(to)).protocol(proto));
                }
            }
        }
        chain
    }
}

/// An endpoint's weight. Endpoints of weight 0 never reach a service chain (they take no new
/// connections: `EndpointSelection::for_policy_new`); the floor only guards the arithmetic.
fn weight(ep: &Endpoint) -> u32 {
    ep.weight.max(1)
}

fn reject_with(family: Family, protocol: Protocol) -> RejectWith {
    match (protocol, family) {
        (Protocol::Tcp, _) => RejectWith::TcpReset,
        (_, Family::V4) => RejectWith::IcmpPortUnreachable,
        (_, Family::V6) => RejectWith::Icmp6PortUnreachable,
    }
}
