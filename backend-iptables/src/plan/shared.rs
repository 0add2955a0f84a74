//! The chains every service port shares: the dispatch chain (flat or tree), node ports, the
//! masquerade chains and the filter chains.

use std::net::IpAddr;

use ipnet::IpNet;

use super::{Planner, Shared};
use crate::config::DispatchLayout;
use crate::rules::{AddrTypeDir, Chain, ChainName, CtState, Family, Match, Rule, Target};

impl Planner {
    /// The fixed and dispatch chains of one family: (nat, filter).
    pub(super) fn plan_shared(&self, family: Family, shared: Shared) -> (Vec<Chain>, Vec<Chain>) {
        let n = &self.names;
        let cfg = &self.config;
        let masq = cfg.masquerade_mark();
        let both = masq | cfg.select_mark();

        let mut services = Chain::new(n.services());
        let mut tree_chains = Vec::new();
        match cfg.dispatch {
            DispatchLayout::Flat => {
                services
                    .rules
                    .extend(shared.dispatch.into_iter().map(|(_, r)| r));
            }
            DispatchLayout::Tree => {
                let mut entries: Vec<(u128, Rule)> = shared
                    .dispatch
                    .into_iter()
                    .map(|(a, r)| (addr_bits(a), r))
                    .collect();
                // Stable: rules of one address keep table order.
                entries.sort_by_key(|(a, _)| *a);
                services.rules = self.tree_node(family, entries, Target::Jump, &mut tree_chains);
            }
        }
        let loopback: IpNet = match family {
            Family::V4 => "127.0.0.0/8",
            Family::V6 => "::1/128",
        }
        .parse()
        .expect("constant network");
        services.push(
            Rule::new(Target::Jump(n.node_ports()))
                .destination_net(loopback, true)
                .comment("service nodeports; NOTE: this must be the last rule in this chain")
                .with(Match::AddrTypeLocal(AddrTypeDir::Dst)),
        );
        let mut node_ports = Chain::new(n.node_ports());
        node_ports.rules = shared.node_ports;
        let mut mark_masq = Chain::new(n.mark_masq());
        mark_masq.push(Rule::new(Target::Mark {
            value: masq,
            mask: masq,
        }));
        let mut post = Chain::new(n.postrouting());
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
        tree_chains.sort_by(|a, b| a.name.cmp(&b.name));
        let mut nat = vec![services, node_ports, mark_masq, post];
        nat.extend(tree_chains);

        let mut f_services = Chain::new(n.services());
        f_services.rules = shared.filter_services;
        let mut f_external = Chain::new(n.external_services());
        f_external.rules = shared.filter_external;
        let mut f_firewall = Chain::new(n.firewall());
        f_firewall.rules = shared.filter_firewall;
        let mut f_forward = Chain::new(n.forward());
        if cfg.drop_invalid {
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
        (nat, vec![f_services, f_external, f_forward, f_firewall])
    }

    /// One node of the tree dispatch: returns the node's rules, pushing child chains.
    ///
    /// Entries are sorted by address. A node with few rules (or one address)
    /// keeps them inline; otherwise entries are grouped by the `stride_bits` bits after their
    /// common prefix, each group becoming a `-d group/len -g child` rule (or its single rule
    /// inline). Groups are disjoint networks, so at most one child can match.
    fn tree_node(
        &self,
        family: Family,
        entries: Vec<(u128, Rule)>,
        link: fn(ChainName) -> Target,
        chains: &mut Vec<Chain>,
    ) -> Vec<Rule> {
        let width = u32::from(family.bits());
        let (first, last) = match (entries.first(), entries.last()) {
            (Some(f), Some(l)) => (f.0, l.0),
            _ => return Vec::new(),
        };
        if entries.len() <= self.config.tree.leaf_rules.max(1) || first == last {
            return entries.into_iter().map(|(_, r)| r).collect();
        }
        // Common prefix length of the whole (sorted) set = that of its extremes.
        let common = ((first ^ last) << (128 - width)).leading_zeros().min(width);
        let stride = u32::from(self.config.tree.stride_bits.clamp(1, 8));
        // The fewest bits (up to `stride`) that make every group a leaf; else `stride`.
        let leaf = self.config.tree.leaf_rules.max(1);
        let split = (1..=stride)
            .map(|bits| (common + bits).min(width))
            .find(|&split| max_group(&entries, width - split) <= leaf)
            .unwrap_or((common + stride).min(width));
        let shift = width - split;
        let mut rules = Vec::new();
        let mut group: Vec<(u128, Rule)> = Vec::new();
        let flush = |group: Vec<(u128, Rule)>, rules: &mut Vec<Rule>, chains: &mut Vec<Chain>| {
            let Some(&(addr, _)) = group.first() else {
                return;
            };
            if group.len() == 1 {
                rules.extend(group.into_iter().map(|(_, r)| r));
                return;
            }
            let child_net = IpNet::new(from_bits(family, addr), split as u8)
                .expect("prefix within family width")
                .trunc();
            let name = self.names.dispatch_node(family, child_net);
            let mut child = Chain::new(name.clone());
            child.rules = self.tree_node(family, group, Target::Goto, chains);
            chains.push(child);
            rules.push(Rule::new(link(name)).destination_net(child_net, false));
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
}

/// The largest run of entries sharing `addr >> shift` (entries are sorted by address).
fn max_group(entries: &[(u128, Rule)], shift: u32) -> usize {
    let mut best = 0;
    let mut run = 0;
    let mut prev = None;
    for (addr, _) in entries {
        let key = addr >> shift;
        if prev == Some(key) {
            run += 1;
        } else {
            run = 1;
            prev = Some(key);
        }
        best = best.max(run);
    }
    best
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
