//! The fixed part of the table and the shared chains: the skeleton every desired table starts
//! from (base chains at kube-proxy's hooks and priorities, the fixed regular chains, every set
//! and map), and the rules of a shared chain, which follow from its name.

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::config::NftablesConfig;
use crate::model::{
    Chain, ChainType, DnatMap, Family, Hook, HookPoint, Key, NodePortScope, Rule, Set, Table,
    Value, SHORT_CIRCUIT_SLOT,
};
use crate::names::{ChainName, SetName};

fn node_port_scope(config: &NftablesConfig) -> NodePortScope {
    if config.node_port_addresses.is_empty() {
        NodePortScope::Local
    } else {
        NodePortScope::Set
    }
}

/// The fixed chains and every set, with the elements that come from the configuration
/// (`cluster-cidrs`, `nodeport-ips`).
pub fn skeleton(config: &NftablesConfig, node_ips: &BTreeSet<IpAddr>) -> Table {
    let mut table = Table::new(config.table.clone());
    for family in Family::ALL {
        for set in fixed_sets(family, config, node_ips) {
            table.sets.insert(set.name, set);
        }
    }
    for (name, hook) in fixed_chains() {
        let chain = Chain {
            name,
            hook,
            rules: fixed_rules(name, config),
        };
        table.chains.insert(name, chain);
    }
    table
}

/// The sets and maps of one family, with their configured elements.
fn fixed_sets(family: Family, config: &NftablesConfig, node_ips: &BTreeSet<IpAddr>) -> Vec<Set> {
    let mut names = vec![
        SetName::ClusterCidrs(family),
        SetName::ClusterIps(family),
        SetName::ServiceIps(family),
        SetName::ServiceNodePorts(family),
        SetName::NoEndpointServices(family),
        SetName::NoEndpointNodePorts(family),
        SetName::FirewallIps(family),
        SetName::FirewallAllow(family),
        SetName::Endpoints(family),
        SetName::NodePortEndpoints(family),
        SetName::Hairpin(family),
        SetName::NodeIps(family),
    ];
    {
        names.extend([
            SetName::AffinityServices(family),
            SetName::AffinityNodePorts(family),
            SetName::Affinity(family),
        ]);
    }
    if node_port_scope(config) == NodePortScope::Set {
        names.push(SetName::NodePortIps(family));
    }
    let mut sets: Vec<Set> = names.into_iter().map(Set::new).collect();
    for set in &mut sets {
        let keys: Vec<Key> = match set.name {
            SetName::ClusterCidrs(_) => config
                .cluster_cidrs
                .iter()
                .filter(|net| Family::of(net.addr()) == family)
                .map(|net| Key::Net(net.trunc()))
                .collect(),
            SetName::NodePortIps(_) => node_port_ips(config, node_ips)
                .into_iter()
                .filter(|ip| Family::of(*ip) == family)
                .map(Key::Addr)
                .collect(),
            SetName::NodeIps(_) => node_ips
                .iter()
                .filter(|ip| Family::of(**ip) == family)
                .map(|ip| Key::Addr(*ip))
                .collect(),
            _ => Vec::new(),
        };
        set.elements
            .extend(keys.into_iter().map(|key| (key, Value::None)));
    }
    sets
}

/// The fixed chains, with the hooks of the base ones (kube-proxy's: `pkg/proxy/nftables`,
/// `baseRules`; `dstnat` - 10 for the source-range check, before DNAT).
fn fixed_chains() -> Vec<(ChainName, Option<Hook>)> {
    use ChainName as C;
    let hook = |chain_type, hook, priority| {
        Some(Hook {
            chain_type,
            hook,
            priority,
        })
    };
    let (filter, nat) = (ChainType::Filter, ChainType::Nat);
    let pre_dnat = Hook::DSTNAT - 10;
    vec![
        (
            C::FilterPreroutingPreDnat,
            hook(filter, HookPoint::Prerouting, pre_dnat),
        ),
        (
            C::FilterOutputPreDnat,
            hook(filter, HookPoint::Output, pre_dnat),
        ),
        (
            C::NatPrerouting,
            hook(nat, HookPoint::Prerouting, Hook::DSTNAT),
        ),
        (C::NatOutput, hook(nat, HookPoint::Output, Hook::DSTNAT)),
        (C::FilterInput, hook(filter, HookPoint::Input, Hook::FILTER)),
        (
            C::FilterForward,
            hook(filter, HookPoint::Forward, Hook::FILTER),
        ),
        (
            C::FilterOutput,
            hook(filter, HookPoint::Output, Hook::FILTER),
        ),
        (
            C::NatPostrouting,
            hook(nat, HookPoint::Postrouting, Hook::SRCNAT),
        ),
        (C::FirewallCheck, None),
        (C::Services, None),
        (C::ServiceEndpointsCheck, None),
        (C::NodePortEndpointsCheck, None),
        (C::MarkForMasquerade, None),
        (C::Masquerading, None),
        (C::RejectChain, None),
    ]
}

/// The rules of a fixed chain.
fn fixed_rules(name: ChainName, config: &NftablesConfig) -> Vec<Rule> {
    use ChainName as C;
    let scope = node_port_scope(config);
    let mark = config.masquerade_mark();
    let per_family = |rule: &dyn Fn(Family) -> Rule| Family::ALL.map(rule).to_vec();
    match name {
        C::FilterPreroutingPreDnat | C::FilterOutputPreDnat => {
            vec![Rule::NewJump(C::FirewallCheck)]
        }
        C::NatPrerouting | C::NatOutput => vec![Rule::Jump(C::Services)],
        C::FilterInput => {
            let mut rules = affinity_dispatch();
            rules.push(Rule::NewJump(C::NodePortEndpointsCheck));
            rules.push(Rule::NewJump(C::ServiceEndpointsCheck));
            rules
        }
        C::FilterForward | C::FilterOutput => {
            let mut rules = affinity_dispatch();
            rules.push(Rule::NewJump(C::ServiceEndpointsCheck));
            rules
        }
        C::NatPostrouting => {
            let mut rules = per_family(&|family| Rule::Hairpin { family });
            rules.push(Rule::Jump(C::Masquerading));
            rules
        }
        C::FirewallCheck => per_family(&|family| Rule::Firewall { family }),
        C::Services => {
            let mut rules = Vec::new();
            for family in Family::ALL {
                let has_cidrs = config
                    .cluster_cidrs
                    .iter()
                    .any(|n| Family::of(n.addr()) == family);
                if config.masquerade_all || has_cidrs {
                    rules.push(Rule::MasqueradeClusterIps {
                        family,
                        all: config.masquerade_all,
                    });
                }
            }
            rules.extend(per_family(&|family| Rule::DispatchVmap {
                family,
                map: SetName::ServiceIps(family),
            }));
            rules.extend(per_family(&|family| Rule::NodePortVmap {
                family,
                scope,
                map: SetName::ServiceNodePorts(family),
            }));
            rules
        }
        C::ServiceEndpointsCheck => per_family(&|family| Rule::DispatchVmap {
            family,
            map: SetName::NoEndpointServices(family),
        }),
        C::NodePortEndpointsCheck => per_family(&|family| Rule::NodePortVmap {
            family,
            scope,
            map: SetName::NoEndpointNodePorts(family),
        }),
        C::MarkForMasquerade => vec![Rule::SetMark(mark)],
        C::Masquerading => vec![
            Rule::ReturnUnmarked(mark),
            Rule::ClearMark(mark),
            Rule::Masquerade,
        ],
        C::RejectChain => vec![Rule::Reject],
        _ => Vec::new(),
    }
}

/// The rules that record client-IP affinity after DNAT, at the start of the filter chains:
/// every new DNATed connection to an address (node port) in `affinity-services`
/// (`affinity-nodeports`) jumps to the `affinity-<timeout>` chain of its port.
fn affinity_dispatch() -> Vec<Rule> {
    Family::ALL
        .into_iter()
        .flat_map(|family| {
            [false, true]
                .into_iter()
                .map(move |node_ports| Rule::AffinityDispatch { family, node_ports })
        })
        .collect()
}

/// The node addresses node ports are served on when `node_port_addresses` narrows them.
pub fn node_port_ips(config: &NftablesConfig, node_ips: &BTreeSet<IpAddr>) -> Vec<IpAddr> {
    node_ips
        .iter()
        .copied()
        .filter(|ip| config.node_port_addresses.iter().any(|n| n.contains(ip)))
        .collect()
}

/// A shared chain's rules: fixed by its name (and the masquerade mark).
pub fn chain(name: ChainName, config: &NftablesConfig) -> Chain {
    use ChainName as C;
    // Every balancing chain first asks the affinity map: a client that has an element for this
    // destination is sent to the same endpoint again (no element: balance).
    let dnat = |map, modulus, offset| {
        let lookups = Family::ALL
            .iter()
            .map(|&family| Rule::AffinityLookup { family });
        let balance = Family::ALL.iter().map(move |&family| Rule::Dnat {
            family,
            map,
            modulus,
            offset,
        });
        lookups.chain(balance).collect::<Vec<Rule>>()
    };
    let local = |k: u32, j: u32, service: ChainName, short: ChainName| {
        let mut rules = Vec::new();
        if j > 0 {
            for family in Family::ALL {
                rules.push(Rule::FromClusterGoto {
                    family,
                    chain: short,
                });
            }
        }
        rules.push(Rule::FromNodeJump(C::MarkForMasquerade));
        if j > 0 {
            rules.push(Rule::FromNodeGoto(short));
        }
        if k > 0 {
            rules.push(Rule::Goto(service));
        }
        rules
    };
    let rules = match name {
        C::Service(k) => dnat(DnatMap::Service, k, 0),
        C::ShortCircuit(j) => dnat(DnatMap::Service, j, SHORT_CIRCUIT_SLOT),
        C::NodePort(k) => dnat(DnatMap::NodePort, k, 0),
        C::NodePortShortCircuit(j) => dnat(DnatMap::NodePort, j, SHORT_CIRCUIT_SLOT),
        C::External(k) => vec![Rule::Jump(C::MarkForMasquerade), Rule::Goto(C::Service(k))],
        C::NodePortExternal(k) => {
            vec![Rule::Jump(C::MarkForMasquerade), Rule::Goto(C::NodePort(k))]
        }
        C::ExternalLocal(k, j) => local(k, j, C::Service(k), C::ShortCircuit(j)),
        C::NodePortLocal(k, j) => local(k, j, C::NodePort(k), C::NodePortShortCircuit(j)),
        C::Affinity(secs) => vec![Rule::AffinityUpdate {
            family: Family::V4,
            timeout_secs: secs,
        }],
        C::AffinityV6(secs) => vec![Rule::AffinityUpdate {
            family: Family::V6,
            timeout_secs: secs,
        }],
        _ => Vec::new(),
    };
    let _ = config;
    Chain {
        name,
        hook: None,
        rules,
    }
}
