//! The chains every service port shares: the dispatch chain (flat or tree), node ports, the
//! masquerade chains and the filter chains.

use std::net::IpAddr;

use ipnet::IpNet;

use super::{Planner, Shared};
use crate::config::DispatchLayout;
use proxy_core::Protocol;

use crate::rules::{AddrTypeDir, Chain, ChainName, CtState, Family, Match, Rule, Target};

impl Planner {
    /// The fixed and dispatch chains of one family: (nat, filter).
    pub(super) fn plan_shared(&self, family: Family, shared: Shared) -> (Vec<Chain>, Vec<Chain>) {
        let n = &self.names;
        let mut tree_chains = Vec::new();
        let mut services = Chain::new(n.services());
        services.rules = self.dispatch_rules(family, shared.dispatch, &mut tree_chains);
        services.rules.extend(self.node_ports_jumps(family));
        let mut node_ports = Chain::new(n.node_ports());
        node_ports.rules = self.node_ports_rules(family, shared.node_ports, &mut tree_chains);
        tree_chains.sort_by(|a, b| a.name.cmp(&b.name));
        let mut nat = vec![
            services,
            node_ports,
            self.mark_masq_chain(),
            self.postrouting_chain(),
            Chain::new(n.canary()),
        ];
        nat.extend(tree_chains);

        let mut f_services = Chain::new(n.services());
        f_services.rules = shared.filter_services;
        let mut f_external = Chain::new(n.external_services());
        f_external.rules = shared.filter_external;
        let mut f_firewall = Chain::new(n.firewall());
        f_firewall.rules = shared.filter_firewall;
        let filter = vec![
            f_services,
            f_external,
            self.forward_chain(),
            f_firewall,
            Chain::new(n.canary()),
        ];
        (nat, filter)
    }

    /// The services chain's dispatch rules, in table order (flat) or as a tree over the
    /// destination address whose inner chains go into `tree_chains`.
    fn dispatch_rules(
        &self,
        family: Family,
        dispatch: Vec<(IpAddr, Vec<Rule>)>,
        tree_chains: &mut Vec<Chain>,
    ) -> Vec<Rule> {
        match self.config.dispatch {
            DispatchLayout::Flat => dispatch.into_iter().flat_map(|(_, r)| r).collect(),
            DispatchLayout::Tree => {
                let mut entries: Vec<(u128, Vec<Rule>)> = dispatch
                    .into_iter()
                    .map(|(a, r)| (addr_bits(a), r))
                    .collect();
                // Stable: rules of one address keep table order.
                entries.sort_by_key(|(a, _)| *a);
                let names = &self.names;
                let by_address = move |prefix: u128, len: u32| {
                    let net = IpNet::new(from_bits(family, prefix), len as u8)
                        .expect("prefix within family width")
                        .trunc();
                    (
                        names.dispatch_node(family, net),
                        Rule::new(Target::Return).destination_net(net, false),
                    )
                };
                let key = TreeKey {
                    width: u32::from(family.bits()),
                    group: &by_address,
                };
                self.tree_node(&key, entries, Target::Jump, tree_chains)
            }
        }
    }

    /// The services chain's last rules: to the node-ports chain for local destinations, on
    /// every address but loopback, or (kube-proxy's `--nodeport-addresses`) on each configured
    /// network of this family.
    fn node_ports_jumps(&self, family: Family) -> Vec<Rule> {
        let node_ports_jump = |net: IpNet, negated: bool| {
            Rule::new(Target::Jump(self.names.node_ports()))
                .destination_net(net, negated)
                .comment("service nodeports; NOTE: this must be the last rule in this chain")
                .with(Match::AddrTypeLocal(AddrTypeDir::Dst))
        };
        let addresses = &self.config.node_port_addresses;
        if addresses.is_empty() {
            let loopback: IpNet = match family {
                Family::V4 => "127.0.0.0/8",
                Family::V6 => "::1/128",
            }
            .parse()
            .expect("constant network");
            return vec![node_ports_jump(loopback, true)];
        }
        addresses
            .iter()
            .filter(|net| family.contains(net.addr()))
            .map(|net| node_ports_jump(net.trunc(), false))
            .collect()
    }

    /// The chain that marks a packet for masquerading.
    fn mark_masq_chain(&self) -> Chain {
        let masq = self.config.masquerade_mark();
        let mut mark_masq = Chain::new(self.names.mark_masq());
        mark_masq.push(Rule::new(Target::Mark {
            value: masq,
            mask: masq,
        }));
        mark_masq
    }

    /// The nat POSTROUTING chain of ours: masquerade marked packets, clearing the marks.
    fn postrouting_chain(&self) -> Chain {
        let cfg = &self.config;
        let masq = cfg.masquerade_mark();
        let both = masq | cfg.select_mark();
        let mut post = Chain::new(self.names.postrouting());
        post.push(Rule::new(Target::Return).with(Match::Mark {
            value: masq,
            mask: masq,
            negated: true,
        }));
        // Clears both bits: the select bit is only ever set together with the masquerade bit.
        post.push(Rule::new(Target::Mark {
            value: 0,
            mask: both,
        }));
        post.push(
            Rule::new(Target::Masquerade {
                random_fully: cfg.random_fully,
            })
            .comment("service traffic requiring SNAT"),
        );
        post
    }

    /// The filter FORWARD chain of ours: drop invalid packets (if configured), accept marked
    /// and established traffic.
    fn forward_chain(&self) -> Chain {
        let masq = self.config.masquerade_mark();
        let mut f_forward = Chain::new(self.names.forward());
        if self.config.drop_invalid {
            f_forward.push(
                Rule::new(Target::Drop)
                    .comment("drop invalid packets")
                    .with(Match::Conntrack(vec![CtState::Invalid])),
            );
        }
        f_forward.push(
            Rule::new(Target::Accept)
                .comment("forwarding rules")
                .with(Match::Mark {
                    value: masq,
                    mask: masq,
                    negated: false,
                }),
        );
        f_forward.push(
            Rule::new(Target::Accept)
                .comment("forwarding conntrack rule")
                .with(Match::Conntrack(vec![
                    CtState::Related,
                    CtState::Established,
                ])),
        );
        f_forward
    }

    /// One node of a dispatch tree: returns the node's rules, pushing child chains.
    ///
    /// Entries are sorted by key (an address, or a port) of `key.width` bits; each holds one
    /// rule, or a port's inline balancing rules. A node with few entries and rules (or one key)
    /// keeps them inline; otherwise entries are grouped by the fewest bits (up to `stride_bits`)
    /// after their common prefix that make every group a leaf, each group becoming `<key.group
    /// match> -g child` (or its single rule inline). Groups are disjoint, so at most one can match.
    fn tree_node(
        &self,
        key: &TreeKey<'_>,
        entries: Vec<(u128, Vec<Rule>)>,
        link: fn(ChainName) -> Target,
        chains: &mut Vec<Chain>,
    ) -> Vec<Rule> {
        let width = key.width;
        let (first, last) = match (entries.first(), entries.last()) {
            (Some(f), Some(l)) => (f.0, l.0),
            _ => return Vec::new(),
        };
        let limits = Limits {
            entries: self.config.tree.leaf_rules.max(1),
            rules: self.config.tree.leaf_max_rules.max(1),
        };
        if limits.fit(entries.len(), rule_count(&entries)) || first == last {
            return entries.into_iter().flat_map(|(_, r)| r).collect();
        }
        // Common prefix length of the whole (sorted) set = that of its extremes.
        let common = ((first ^ last) << (128 - width)).leading_zeros().min(width);
        let stride = u32::from(self.config.tree.stride_bits.clamp(1, 8));
        let split = (1..=stride)
            .map(|bits| (common + bits).min(width))
            .find(|&split| groups_fit(&entries, width - split, limits))
            .unwrap_or((common + stride).min(width));
        let shift = width - split;
        let mut rules = Vec::new();
        let mut group: Vec<(u128, Vec<Rule>)> = Vec::new();
        let flush =
            |group: Vec<(u128, Vec<Rule>)>, rules: &mut Vec<Rule>, chains: &mut Vec<Chain>| {
                let Some(&(value, _)) = group.first() else {
                    return;
                };
                // A single rule costs the parent's walk no more than the jump to a child would.
                if rule_count(&group) == 1 {
                    rules.extend(group.into_iter().flat_map(|(_, r)| r));
                    return;
                }
                let prefix = (value >> shift) << shift;
                let (name, mut rule) = (key.group)(prefix, split);
                let mut child = Chain::new(name.clone());
                child.rules = self.tree_node(key, group, Target::Goto, chains);
                chains.push(child);
                rule.target = link(name);
                rules.push(rule);
            };
        for entry in entries {
            let same = group
                .first()
                .is_some_and(|(a, _)| (a >> shift) == (entry.0 >> shift));
            if !same {
                flush(std::mem::take(&mut group), &mut rules, chains);
            }
            group.push(entry);
        }
        flush(group, &mut rules, chains);
        rules
    }

    /// The node-ports chain: flat, or per protocol a tree on port bits (`--dport lo:hi`).
    fn node_ports_rules(
        &self,
        family: Family,
        entries: Vec<(Protocol, u16, Rule)>,
        chains: &mut Vec<Chain>,
    ) -> Vec<Rule> {
        if self.config.dispatch == DispatchLayout::Flat {
            return entries.into_iter().map(|(_, _, r)| r).collect();
        }
        let mut rules = Vec::new();
        for protocol in Protocol::ALL {
            let mut group: Vec<(u128, Vec<Rule>)> = entries
                .iter()
                .filter(|(p, _, _)| *p == protocol)
                .map(|(_, port, r)| (u128::from(*port), vec![r.clone()]))
                .collect();
            group.sort_by_key(|(p, _)| *p);
            let names = &self.names;
            let by_ports = move |prefix: u128, len: u32| {
                let span = (1u32 << (16 - len)) - 1;
                let first = u16::try_from(prefix).unwrap_or(u16::MAX);
                let last = u16::try_from(u32::from(first) + span).unwrap_or(u16::MAX);
                (
                    names.node_port_node(family, protocol, first, last),
                    Rule::new(Target::Return)
                        .protocol(protocol)
                        .with(Match::DestPortRange {
                            protocol,
                            first,
                            last,
                        }),
                )
            };
            let key = TreeKey {
                width: 16,
                group: &by_ports,
            };
            rules.extend(self.tree_node(&key, group, Target::Goto, chains));
        }
        rules
    }
}

/// What a dispatch tree is keyed on.
struct TreeKey<'a> {
    /// Key width in bits (32, 128 for addresses; 16 for ports).
    width: u32,
    /// For a group of keys sharing `prefix` (of `len` bits): the child chain's name and the rule
    /// matching the group (its target is set by the caller).
    group: &'a dyn Fn(u128, u32) -> (ChainName, Rule),
}

/// How much a leaf may hold.
#[derive(Clone, Copy)]
struct Limits {
    /// Entries (`TreeConfig::leaf_rules`).
    entries: usize,
    /// Rules, inline balancing rules counted (`TreeConfig::leaf_max_rules`).
    rules: usize,
}

impl Limits {
    fn fit(self, entries: usize, rules: usize) -> bool {
        entries <= self.entries && rules <= self.rules
    }
}

fn rule_count(entries: &[(u128, Vec<Rule>)]) -> usize {
    entries.iter().map(|(_, r)| r.len()).sum()
}

/// Whether every run of entries sharing `addr >> shift` (entries are sorted by address) fits in
/// a leaf, or is a single address (which no split divides).
fn groups_fit(entries: &[(u128, Vec<Rule>)], shift: u32, limits: Limits) -> bool {
    let mut start = 0;
    while start < entries.len() {
        let key = entries[start].0 >> shift;
        let len = entries[start..]
            .iter()
            .take_while(|(a, _)| a >> shift == key)
            .count();
        let run = &entries[start..start + len];
        let single_address = run.first().map(|e| e.0) == run.last().map(|e| e.0);
        if !single_address && !limits.fit(len, rule_count(run)) {
            return false;
        }
        start += len;
    }
    true
}

fn addr_bits(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn from_bits(family: Family, bits: u128) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(u32::try_from(bits).unwrap_or(u32::MAX).into()),
        Family::V6 => IpAddr::V6(bits.into()),
    }
}
