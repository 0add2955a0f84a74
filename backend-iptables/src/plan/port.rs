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

/// One service port in one family, as its rules see it: the endpoints new connections may use
/// under each policy, and the names of the chains the port gets (`None`: no such chain).
struct PortLayout<'p> {
    port: &'p ServicePort,
    family: Family,
    /// Endpoints for `Cluster` policies (new connections only).
    cluster: Vec<&'p Endpoint>,
    /// Endpoints for `Local` policies (new connections only).
    local: Vec<&'p Endpoint>,
    /// SVC-: balances over `cluster`, when it is not empty.
    svc: Option<ChainName>,
    /// SVL-: balances over `local`, when it is not empty.
    svl: Option<ChainName>,
    /// The chain of the internal policy (SVC- or SVL-), if it has endpoints.
    internal_chain: Option<ChainName>,
    /// The chain of the external policy, if it has endpoints.
    external_chain: Option<ChainName>,
    /// EXT-: unless external traffic is rejected, when the port has external addresses.
    ext: Option<ChainName>,
    /// FW-: with EXT-, for load-balancer IPs with source ranges.
    fw: Option<ChainName>,
    /// The client-IP affinity timeout in seconds, if any.
    affinity: Option<u32>,
    /// The filter rule for internal traffic with no endpoint to go to (target, comment).
    internal_filter: Option<(Target, &'static str)>,
    /// The filter rule for external traffic with no endpoint to go to.
    external_filter: Option<(Target, &'static str)>,
}

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
        let layout = self.port_layout(port, family);
        let inline = self.inline_balancing(&layout);
        push_cluster_ip_entries(&layout, inline.as_deref(), shared);
        push_external_ip_entries(&layout, shared);
        push_node_port_entries(&layout, shared);
        push_firewall_drops(&layout, shared);
        if !render || inline.is_some() {
            // An inline port has no chain of its own: its only referrer was the dispatch rule.
            return Vec::new();
        }
        let mut chains = self.balance_chains(&layout);
        chains.extend(self.external_chain(&layout));
        chains.extend(self.firewall_chain(&layout));
        chains.extend(self.affinity_chains(&layout));
        chains
    }

    /// Which endpoints and chains `port` has in `family`.
    fn port_layout<'p>(&self, port: &'p ServicePort, family: Family) -> PortLayout<'p> {
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
        // An EXT chain unless external traffic is rejected (same as "has endpoints" before
        // weights: a Cluster policy with no candidate of weight above 0 rejects).
        let ext = (port.has_external_addresses() && selection.external_new() != SelTarget::Reject)
            .then(|| n.external(name, proto));
        let fw = (ext.is_some()
            && !port.load_balancer_source_ranges.is_empty()
            && !port.load_balancer_ips.is_empty())
        .then(|| n.firewall_lb(name, proto));
        let affinity = match port.session_affinity {
            SessionAffinity::None => None,
            SessionAffinity::ClientIp { timeout } => {
                Some(u32::try_from(timeout.as_secs()).unwrap_or(u32::MAX))
            }
        };
        PortLayout {
            port,
            family,
            internal_filter: filter_rule(selection.internal_new(), family, proto),
            external_filter: filter_rule(selection.external_new(), family, proto),
            cluster,
            local,
            svc,
            svl,
            internal_chain,
            external_chain,
            ext,
            fw,
            affinity,
        }
    }

    /// The dispatch rules that balance the port inline (the internal chain's rules, guarded, in
    /// the dispatch leaf), for a port with one cluster IP, no EXT chain and no affinity, when
    /// the config allows it ([`Planner::inline_rules`]); `None` otherwise.
    fn inline_balancing(&self, l: &PortLayout<'_>) -> Option<Vec<Rule>> {
        match (&l.internal_chain, &l.port.cluster_ips[..]) {
            (Some(chain), &[ip]) if l.ext.is_none() && l.affinity.is_none() => {
                let endpoints = if Some(chain) == l.svc.as_ref() {
                    &l.cluster
                } else {
                    &l.local
                };
                self.inline_rules(l.port, l.family, ip, chain, endpoints)
            }
            _ => None,
        }
    }

    /// The port's balancing chains: SVC- over the cluster endpoints, SVL- over the local ones.
    fn balance_chains(&self, l: &PortLayout<'_>) -> Vec<Chain> {
        let internal_is = |chain: &ChainName| l.internal_chain.as_ref() == Some(chain);
        let mut chains = Vec::new();
        if let Some(svc) = &l.svc {
            chains.push(self.balance_chain(
                l.port,
                l.family,
                svc,
                &l.cluster,
                internal_is(svc),
                l.affinity,
            ));
        }
        if let Some(svl) = &l.svl {
            chains.push(self.balance_chain(
                l.port,
                l.family,
                svl,
                &l.local,
                internal_is(svl),
                l.affinity,
            ));
        }
        chains
    }

    /// The EXT- chain: masquerade as the external policy asks, then jump to its chain.
    fn external_chain(&self, l: &PortLayout<'_>) -> Option<Chain> {
        let ext = l.ext.as_ref()?;
        let name = &l.port.name;
        let mut chain = Chain::new(ext.clone());
        let masq = Target::Jump(self.names.mark_masq());
        match l.port.external_traffic_policy {
            TrafficPolicy::Cluster => {
                chain.push(Rule::new(masq).comment(format!(
                    "masquerade traffic for {name} external destinations"
                )));
            }
            TrafficPolicy::Local => {
                if let (Some(cidr), Some(svc)) = (self.config.cluster_cidr(l.family), &l.svc) {
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
                if let Some(svc) = &l.svc {
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
        if let Some(to) = &l.external_chain {
            chain.push(Rule::new(Target::Jump(to.clone())));
        }
        Some(chain)
    }

    /// The FW- chain: to EXT- from the allowed source ranges of this family (and from the
    /// load-balancer IPs themselves when a range lets the node in).
    fn firewall_chain(&self, l: &PortLayout<'_>) -> Option<Chain> {
        let (Some(fw), Some(ext)) = (&l.fw, &l.ext) else {
            return None;
        };
        let name = &l.port.name;
        let family = l.family;
        let mut chain = Chain::new(fw.clone());
        let ranges: Vec<&IpNet> = l
            .port
            .load_balancer_source_ranges
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
            for &ip in l
                .port
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
        Some(chain)
    }

    /// With client-IP affinity, one SEP- chain per endpoint (of either policy, once each):
    /// masquerade hairpin traffic, then DNAT and remember the client (`-m recent --set`).
    fn affinity_chains(&self, l: &PortLayout<'_>) -> Vec<Chain> {
        if l.affinity.is_none() {
            return Vec::new();
        }
        let n = &self.names;
        let name = &l.port.name;
        let proto = l.port.protocol;
        let mut chains = Vec::new();
        let mut seen = BTreeSet::new();
        for ep in l.cluster.iter().chain(&l.local) {
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
                        family: l.family,
                    })),
            );
            chains.push(chain);
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
        let mut chain = Chain::new(chain_name.clone());
        if is_internal_chain {
            chain
                .rules
                .extend(self.masquerade_off_cluster(port, family));
        }
        if let Some(seconds) = affinity {
            chain
                .rules
                .extend(self.affinity_checks(port, family, endpoints, seconds));
        }
        let total: u64 = endpoints.iter().map(|e| u64::from(weight(e))).sum();
        let mut remaining = total;
        for (i, ep) in endpoints.iter().enumerate() {
            let is_last = i + 1 == endpoints.len();
            let w = u64::from(weight(ep));
            let stat = (!is_last).then(|| Match::Statistic(Probability::ratio(w, remaining)));
            remaining -= w;
            if affinity.is_some() {
                let mut rule = Rule::new(Target::Jump(self.names.endpoint(
                    &port.name,
                    port.protocol,
                    &ep.key(),
                )))
                .comment(format!("{} -> {}", port.name, ep.key()));
                rule.matches.extend(stat);
                chain.push(rule);
            } else {
                chain.rules.extend(self.endpoint_rules(port, ep, stat));
            }
        }
        chain
    }

    /// The internal chain's first rules: mark for masquerading what reaches a cluster IP from
    /// outside the cluster CIDR (from anywhere with `masquerade_all`; nothing without a CIDR).
    fn masquerade_off_cluster(&self, port: &ServicePort, family: Family) -> Vec<Rule> {
        let name = &port.name;
        let proto = port.protocol;
        let mut rules = Vec::new();
        for &ip in &port.cluster_ips {
            let rule = Rule::new(Target::Jump(self.names.mark_masq()));
            let rule = if self.config.masquerade_all {
                rule
            } else if let Some(cidr) = self.config.cluster_cidr(family) {
                rule.source_net(cidr, true)
            } else {
                continue;
            };
            rules.push(
                rule.destination(ip)
                    .protocol(proto)
                    .comment(format!("{name} cluster IP"))
                    .dport(proto, port.port),
            );
        }
        rules
    }

    /// With client-IP affinity: to an endpoint's SEP- chain when the client was sent there
    /// within `seconds` (`-m recent --rcheck`).
    fn affinity_checks(
        &self,
        port: &ServicePort,
        family: Family,
        endpoints: &[&Endpoint],
        seconds: u32,
    ) -> Vec<Rule> {
        let name = &port.name;
        endpoints
            .iter()
            .map(|ep| {
                let sep = self.names.endpoint(name, port.protocol, &ep.key());
                Rule::new(Target::Jump(sep.clone()))
                    .comment(format!("{name} -> {}", ep.key()))
                    .with(Match::Recent(Recent::Check {
                        name: sep.to_string(),
                        seconds,
                        family,
                    }))
            })
            .collect()
    }

    /// One endpoint's rules without affinity, `stat` its draw (`None` for the last endpoint):
    /// the DNAT, and for an endpoint that may call itself the hairpin pair (see
    /// [`Planner::balance_chain`]).
    fn endpoint_rules(&self, port: &ServicePort, ep: &Endpoint, stat: Option<Match>) -> Vec<Rule> {
        let proto = port.protocol;
        let to = SocketAddr::new(ep.addr, ep.port);
        let needs_hairpin = ep.is_local || self.config.hairpin_all_endpoints;
        let mut direct = Rule::new(Target::Dnat(to)).protocol(proto).comment(format!(
            "{} -> {}",
            port.name,
            ep.key()
        ));
        if needs_hairpin {
            direct = direct.source_net(IpNet::from(ep.addr), true);
        }
        direct.matches.extend(stat.clone());
        if !needs_hairpin {
            return vec![direct];
        }
        let masq = self.config.masquerade_mark();
        let select = self.config.select_mark();
        match stat {
            Some(stat) => vec![
                direct,
                Rule::new(Target::Mark {
                    value: masq | select,
                    mask: masq | select,
                })
                .source(ep.addr)
                .with(stat),
                Rule::new(Target::Dnat(to))
                    .source(ep.addr)
                    .protocol(proto)
                    .with(Match::Mark {
                        value: select,
                        mask: select,
                        negated: false,
                    }),
            ],
            // Only the endpoint itself gets here: the rule above took everyone else.
            None => vec![
                direct,
                Rule::new(Target::Jump(self.names.mark_masq())),
                Rule::new(Target::Dnat(to)).protocol(proto),
            ],
        }
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

/// The filter rule for traffic `target` sends nowhere (no endpoint for it): a reject or a drop,
/// with the comment's reason; `None` when there are endpoints.
fn filter_rule(
    target: SelTarget<'_, '_>,
    family: Family,
    protocol: Protocol,
) -> Option<(Target, &'static str)> {
    match target {
        SelTarget::Endpoints(_) => None,
        SelTarget::Reject => Some((
            Target::Reject(reject_with(family, protocol)),
            "has no endpoints",
        )),
        SelTarget::Drop => Some((Target::Drop, "has no local endpoints")),
    }
}

/// The cluster IPs' entries: a dispatch rule to the internal chain (or the inline rules), or a
/// filter rule when internal traffic has nowhere to go.
fn push_cluster_ip_entries(l: &PortLayout<'_>, inline: Option<&[Rule]>, shared: &mut Shared) {
    let port = l.port;
    let (name, proto) = (&port.name, port.protocol);
    for &ip in &port.cluster_ips {
        if let Some(rules) = inline {
            shared.dispatch.push((ip, rules.to_vec()));
            continue;
        }
        match (&l.internal_chain, &l.internal_filter) {
            (Some(chain), _) => shared.dispatch.push((
                ip,
                vec![Rule::new(Target::Jump(chain.clone()))
                    .destination(ip)
                    .protocol(proto)
                    .comment(format!("{name} cluster IP"))
                    .dport(proto, port.port)],
            )),
            (None, Some((target, why))) => shared.filter_services.push(
                Rule::new(target.clone())
                    .destination(ip)
                    .protocol(proto)
                    .comment(format!("{name} {why}"))
                    .dport(proto, port.port),
            ),
            // Unreachable: no chain means no endpoint for new connections, a filter rule.
            (None, None) => {}
        }
    }
}

/// The external and load-balancer IPs' entries: a dispatch rule to EXT- (FW- for a
/// load-balancer IP with source ranges), and a filter rule when external traffic has nowhere
/// to go.
fn push_external_ip_entries(l: &PortLayout<'_>, shared: &mut Shared) {
    let port = l.port;
    let (name, proto) = (&port.name, port.protocol);
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
        if let Some(ext) = &l.ext {
            let to = match (&l.fw, is_lb) {
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
        if let Some((target, why)) = &l.external_filter {
            shared.filter_external.push(
                Rule::new(target.clone())
                    .destination(ip)
                    .protocol(proto)
                    .comment(format!("{name} {why}"))
                    .dport(proto, port.port),
            );
        }
    }
}

/// The node port's entries: a node-port rule to EXT-, and a filter rule (local destinations)
/// when external traffic has nowhere to go.
fn push_node_port_entries(l: &PortLayout<'_>, shared: &mut Shared) {
    let port = l.port;
    let (name, proto) = (&port.name, port.protocol);
    let Some(node_port) = port.node_port else {
        return;
    };
    if let Some(ext) = &l.ext {
        shared.node_ports.push((
            proto,
            node_port,
            Rule::new(Target::Jump(ext.clone()))
                .protocol(proto)
                .comment(name.to_string())
                .dport(proto, node_port),
        ));
    }
    if let Some((target, why)) = &l.external_filter {
        shared.filter_external.push(
            Rule::new(target.clone())
                .protocol(proto)
                .comment(format!("{name} {why}"))
                .with(Match::AddrTypeLocal(AddrTypeDir::Dst))
                .dport(proto, node_port),
        );
    }
}

/// With FW-: the filter rules that drop what it did not accept, per load-balancer IP.
fn push_firewall_drops(l: &PortLayout<'_>, shared: &mut Shared) {
    let Some(fw) = &l.fw else {
        return;
    };
    let port = l.port;
    let (name, proto) = (&port.name, port.protocol);
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
