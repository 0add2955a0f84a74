//! The names of the chains, sets and maps in our table, each kind made by one variant here.
//!
//! The table is ours alone (its name, [`crate::config::NftablesConfig::table`], is the one
//! prefix: `cleanup` deletes the table), so the names inside it need no prefix and follow
//! kube-proxy's nftables mode where an object has a counterpart there (`services`,
//! `service-ips`, `mark-for-masquerade`...; `pkg/proxy/nftables/proxier.go`). Objects kube-proxy
//! keeps per family in two tables carry a family suffix here (`service-ips-v4`), as our one
//! `inet` table holds both. Shared balancing chains carry their endpoint count instead of a
//! service hash (`service-3`): the layout has no per-service object.
//!
//! Names are typed ([`ChainName`], [`SetName`]) and ordered: the derived order is the order we
//! declare them in, so a rendered table is byte-stable. [`is_owned`] recognises every name.
//!
//! ```
//! use backend_nftables::names::{is_owned, ChainName, SetName};
//! use backend_nftables::model::Family;
//!
//! assert_eq!(ChainName::Service(3).to_string(), "service-3");
//! assert_eq!(SetName::ServiceIps(Family::V6).to_string(), "service-ips-v6");
//! assert!(is_owned("external-local-2-5"));
//! assert!(!is_owned("KUBE-SERVICES"));
//! ```

use std::fmt;

use crate::model::Family;

/// A chain of our table. Base chains first, then fixed regular chains, then the shared
/// balancing chains (one per distinct endpoint count, or pair of counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChainName {
    /// filter / prerouting / dstnat - 10: the load-balancer source-range check.
    FilterPreroutingPreDnat,
    /// filter / output / dstnat - 10: the same for locally sent traffic.
    FilterOutputPreDnat,
    /// nat / prerouting / dstnat: `jump services`.
    NatPrerouting,
    /// nat / output / dstnat: `jump services`.
    NatOutput,
    /// filter / input / filter: the no-endpoint checks for node ports and services.
    FilterInput,
    /// filter / forward / filter: the no-endpoint check for services.
    FilterForward,
    /// filter / output / filter: the no-endpoint check for services.
    FilterOutput,
    /// nat / postrouting / srcnat: hairpin and masquerade.
    NatPostrouting,
    /// Drops traffic to a load-balancer IP from outside its source ranges.
    FirewallCheck,
    /// The dispatch: the `service-ips` and `service-nodeports` verdict maps.
    Services,
    /// Reject or drop for service addresses without (local) endpoints.
    ServiceEndpointsCheck,
    /// Reject or drop for node ports without (local) endpoints.
    NodePortEndpointsCheck,
    /// Sets the masquerade bit.
    MarkForMasquerade,
    /// Masquerades marked packets (and clears the bit).
    Masquerading,
    /// `reject`: the verdict of a no-endpoint element.
    RejectChain,
    /// Balances over `k` slots of the endpoints map (`numgen random mod k`).
    Service(u32),
    /// External traffic (external IP, load-balancer IP) of a `Cluster` policy: masquerade,
    /// then [`ChainName::Service`] of `k`.
    External(u32),
    /// External traffic of a `Local` policy: pods and the node short-circuit to
    /// [`ChainName::ShortCircuit`] of `j`; everyone else goes to [`ChainName::Service`] of
    /// `k` local endpoints (`k` = 0: no local endpoint, left to the filter check's drop).
    ExternalLocal(u32, u32),
    /// Balances over `j` short-circuit slots (the cluster-wide endpoints of a `Local` port).
    ShortCircuit(u32),
    /// Balances over `k` slots of the node-port endpoints map.
    NodePort(u32),
    /// A node port of a `Cluster` policy: masquerade, then [`ChainName::NodePort`] of `k`.
    NodePortExternal(u32),
    /// A node port of a `Local` policy: as [`ChainName::ExternalLocal`], on the node-port
    /// endpoints map.
    NodePortLocal(u32, u32),
    /// Balances over `j` short-circuit slots of the node-port endpoints map.
    NodePortShortCircuit(u32),
    /// Records the client's endpoint choice in `affinity-v4` with this timeout (seconds).
    Affinity(u32),
    /// The same for IPv6 (`affinity-v6`): a chain of its own, so that a table without IPv6
    /// affinity holds no IPv6 `update` rule, which `nft` 1.0.6 cannot load back (see
    /// `Rule::AffinityUpdate`).
    AffinityV6(u32),
}

impl ChainName {
    /// The shared chains this shared chain's rules go to (`external-3` goes to `service-3`).
    pub fn leads_to(self) -> Vec<ChainName> {
        let nonzero = |n: u32, chain: ChainName| (n > 0).then_some(chain);
        match self {
            ChainName::External(k) => vec![ChainName::Service(k)],
            ChainName::NodePortExternal(k) => vec![ChainName::NodePort(k)],
            ChainName::ExternalLocal(k, j) => [
                nonzero(k, ChainName::Service(k)),
                nonzero(j, ChainName::ShortCircuit(j)),
            ]
            .into_iter()
            .flatten()
            .collect(),
            ChainName::NodePortLocal(k, j) => [
                nonzero(k, ChainName::NodePort(k)),
                nonzero(j, ChainName::NodePortShortCircuit(j)),
            ]
            .into_iter()
            .flatten()
            .collect(),
            _ => Vec::new(),
        }
    }

    /// Whether the chain is shared by the service ports of one endpoint count (created and
    /// deleted as counts come and go), rather than fixed.
    pub fn is_shared(self) -> bool {
        matches!(
            self,
            ChainName::Service(_)
                | ChainName::External(_)
                | ChainName::ExternalLocal(..)
                | ChainName::ShortCircuit(_)
                | ChainName::NodePort(_)
                | ChainName::NodePortExternal(_)
                | ChainName::NodePortLocal(..)
                | ChainName::NodePortShortCircuit(_)
                | ChainName::Affinity(_)
                | ChainName::AffinityV6(_)
        )
    }
}

impl ChainName {
    /// The fixed (not shared) chains, in declaration order.
    pub const FIXED: [ChainName; 15] = [
        ChainName::FilterPreroutingPreDnat,
        ChainName::FilterOutputPreDnat,
        ChainName::NatPrerouting,
        ChainName::NatOutput,
        ChainName::FilterInput,
        ChainName::FilterForward,
        ChainName::FilterOutput,
        ChainName::NatPostrouting,
        ChainName::FirewallCheck,
        ChainName::Services,
        ChainName::ServiceEndpointsCheck,
        ChainName::NodePortEndpointsCheck,
        ChainName::MarkForMasquerade,
        ChainName::Masquerading,
        ChainName::RejectChain,
    ];

    /// The chain of this name, if it is one of ours (the inverse of `Display`).
    pub fn parse(name: &str) -> Option<ChainName> {
        if let Some(c) = ChainName::FIXED.iter().find(|c| c.to_string() == name) {
            return Some(*c);
        }
        if let Some(secs) = name
            .strip_prefix("affinity-v6-")
            .filter(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|rest| rest.parse().ok())
        {
            return Some(ChainName::AffinityV6(secs));
        }
        let numbers = |rest: &str| -> Option<Vec<u32>> {
            rest.split('-')
                .map(|p| {
                    (!p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                        .then(|| p.parse().ok())
                        .flatten()
                })
                .collect()
        };
        type One = fn(u32) -> ChainName;
        type Two = fn(u32, u32) -> ChainName;
        // Longest prefixes first: `nodeport-local-` before `nodeport-`.
        let two: [(&str, Two); 2] = [
            ("external-local-", ChainName::ExternalLocal),
            ("nodeport-local-", ChainName::NodePortLocal),
        ];
        let one: [(&str, One); 7] = [
            ("nodeport-short-circuit-", ChainName::NodePortShortCircuit),
            ("nodeport-external-", ChainName::NodePortExternal),
            ("short-circuit-", ChainName::ShortCircuit),
            ("external-", ChainName::External),
            ("nodeport-", ChainName::NodePort),
            ("service-", ChainName::Service),
            ("affinity-", ChainName::Affinity),
        ];
        for (prefix, make) in two {
            if let Some(n) = name.strip_prefix(prefix).and_then(numbers) {
                if let [k, j] = n[..] {
                    return Some(make(k, j));
                }
            }
        }
        for (prefix, make) in one {
            if let Some(n) = name.strip_prefix(prefix).and_then(numbers) {
                if let [k] = n[..] {
                    return Some(make(k));
                }
            }
        }
        None
    }
}

impl fmt::Display for ChainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChainName::FilterPreroutingPreDnat => f.write_str("filter-prerouting-pre-dnat"),
            ChainName::FilterOutputPreDnat => f.write_str("filter-output-pre-dnat"),
            ChainName::NatPrerouting => f.write_str("nat-prerouting"),
            ChainName::NatOutput => f.write_str("nat-output"),
            ChainName::FilterInput => f.write_str("filter-input"),
            ChainName::FilterForward => f.write_str("filter-forward"),
            ChainName::FilterOutput => f.write_str("filter-output"),
            ChainName::NatPostrouting => f.write_str("nat-postrouting"),
            ChainName::FirewallCheck => f.write_str("firewall-check"),
            ChainName::Services => f.write_str("services"),
            ChainName::ServiceEndpointsCheck => f.write_str("service-endpoints-check"),
            ChainName::NodePortEndpointsCheck => f.write_str("nodeport-endpoints-check"),
            ChainName::MarkForMasquerade => f.write_str("mark-for-masquerade"),
            ChainName::Masquerading => f.write_str("masquerading"),
            ChainName::RejectChain => f.write_str("reject-chain"),
            ChainName::Service(k) => write!(f, "service-{k}"),
            ChainName::External(k) => write!(f, "external-{k}"),
            ChainName::ExternalLocal(k, j) => write!(f, "external-local-{k}-{j}"),
            ChainName::ShortCircuit(j) => write!(f, "short-circuit-{j}"),
            ChainName::NodePort(k) => write!(f, "nodeport-{k}"),
            ChainName::NodePortExternal(k) => write!(f, "nodeport-external-{k}"),
            ChainName::NodePortLocal(k, j) => write!(f, "nodeport-local-{k}-{j}"),
            ChainName::NodePortShortCircuit(j) => write!(f, "nodeport-short-circuit-{j}"),
            ChainName::Affinity(secs) => write!(f, "affinity-{secs}"),
            ChainName::AffinityV6(secs) => write!(f, "affinity-v6-{secs}"),
        }
    }
}

/// A named set or map of our table, per family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SetName {
    /// The pod networks (`cluster_cidrs`): interval set of addresses.
    ClusterCidrs(Family),
    /// Every cluster IP (for the masquerade of traffic from outside the pod networks).
    ClusterIps(Family),
    /// The node addresses node ports answer on, when `node_port_addresses` narrows them.
    NodePortIps(Family),
    /// Every address of the node (followed as they come and go): a connection to one of them
    /// is a node-port connection to the affinity dispatch.
    NodeIps(Family),
    /// Dispatch: `addr . proto . port : verdict` for cluster, external and load-balancer IPs.
    ServiceIps(Family),
    /// Dispatch: `proto . port : verdict` for node ports.
    ServiceNodePorts(Family),
    /// `addr . proto . port : drop | goto reject-chain`.
    NoEndpointServices(Family),
    /// `proto . port : drop | goto reject-chain`.
    NoEndpointNodePorts(Family),
    /// Load-balancer IPs with source ranges: `addr . proto . port`.
    FirewallIps(Family),
    /// What those admit: `addr . proto . port . source range`.
    FirewallAllow(Family),
    /// Balancing: `addr . proto . port . slot : endpoint addr . endpoint port`.
    Endpoints(Family),
    /// Node-port balancing: `proto . port . slot : endpoint addr . endpoint port`.
    NodePortEndpoints(Family),
    /// Hairpin: `endpoint addr . endpoint addr`.
    Hairpin(Family),
    /// Service addresses with client-IP affinity: `addr . proto . port : jump
    /// affinity-<timeout>`, read after DNAT from the connection's original destination.
    AffinityServices(Family),
    /// Node ports with client-IP affinity: `proto . port : jump affinity-<timeout>`.
    AffinityNodePorts(Family),
    /// Client-IP affinity, dynamic: `client . addr . proto . port : endpoint addr . port`.
    Affinity(Family),
}

impl SetName {
    /// The family the set holds addresses of.
    pub fn family(self) -> Family {
        match self {
            SetName::ClusterCidrs(f)
            | SetName::ClusterIps(f)
            | SetName::NodePortIps(f)
            | SetName::NodeIps(f)
            | SetName::ServiceIps(f)
            | SetName::ServiceNodePorts(f)
            | SetName::NoEndpointServices(f)
            | SetName::NoEndpointNodePorts(f)
            | SetName::FirewallIps(f)
            | SetName::FirewallAllow(f)
            | SetName::Endpoints(f)
            | SetName::NodePortEndpoints(f)
            | SetName::Hairpin(f)
            | SetName::AffinityServices(f)
            | SetName::AffinityNodePorts(f)
            | SetName::Affinity(f) => f,
        }
    }

    fn base(self) -> &'static str {
        match self {
            SetName::ClusterCidrs(_) => "cluster-cidrs",
            SetName::ClusterIps(_) => "cluster-ips",
            SetName::NodePortIps(_) => "nodeport-ips",
            SetName::NodeIps(_) => "node-ips",
            SetName::ServiceIps(_) => "service-ips",
            SetName::ServiceNodePorts(_) => "service-nodeports",
            SetName::NoEndpointServices(_) => "no-endpoint-services",
            SetName::NoEndpointNodePorts(_) => "no-endpoint-nodeports",
            SetName::FirewallIps(_) => "firewall-ips",
            SetName::FirewallAllow(_) => "firewall-allow",
            SetName::Endpoints(_) => "endpoints",
            SetName::NodePortEndpoints(_) => "nodeport-endpoints",
            SetName::Hairpin(_) => "hairpin",
            SetName::AffinityServices(_) => "affinity-services",
            SetName::AffinityNodePorts(_) => "affinity-nodeports",
            SetName::Affinity(_) => "affinity",
        }
    }
}

impl SetName {
    /// Every set and map of one family, in declaration order.
    pub fn all(family: Family) -> [SetName; 16] {
        [
            SetName::ClusterCidrs(family),
            SetName::ClusterIps(family),
            SetName::NodePortIps(family),
            SetName::NodeIps(family),
            SetName::ServiceIps(family),
            SetName::ServiceNodePorts(family),
            SetName::NoEndpointServices(family),
            SetName::NoEndpointNodePorts(family),
            SetName::FirewallIps(family),
            SetName::FirewallAllow(family),
            SetName::Endpoints(family),
            SetName::NodePortEndpoints(family),
            SetName::Hairpin(family),
            SetName::AffinityServices(family),
            SetName::AffinityNodePorts(family),
            SetName::Affinity(family),
        ]
    }

    /// The set of this name, if it is one of ours (the inverse of `Display`).
    pub fn parse(name: &str) -> Option<SetName> {
        Family::ALL
            .iter()
            .flat_map(|f| SetName::all(*f))
            .find(|s| s.to_string() == name)
    }
}

impl fmt::Display for SetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.base(), self.family().suffix())
    }
}

/// Whether `name` is the name of a chain, set or map this crate creates in its table.
pub fn is_owned(name: &str) -> bool {
    ChainName::parse(name).is_some() || SetName::parse(name).is_some()
}
