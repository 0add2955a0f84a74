//! The objects of our nf_tables table, as data: what plans are made of and what observation
//! reads back.
//!
//! One `inet` table holds both families: one table to own, list and delete (kube-proxy keeps an
//! `ip` and an `ip6` table, so its cleanup and its "is the table there" checks run twice). The
//! family-agnostic parts (base chains, the shared balancing chains, `reject-chain`, the
//! masquerade chains) exist once; sets and maps whose keys hold addresses exist per family
//! ([`Family`]), and the rules that read them match the family by their first expression
//! (`ip daddr` or `ip6 daddr`, or `meta nfproto` where no address is read).
//!
//! Rules are typed shapes ([`Rule`]), one variant per statement we emit; their `Display` (in
//! [`crate::render`]) writes nft syntax as `nft list table` prints it. Elements are typed keys
//! ([`Key`]) and values ([`Value`]) in `BTreeMap`s, so a table's order is deterministic.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use proxy_core::Protocol;

use crate::names::{ChainName, SetName};

/// An address family of the `inet` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4 (`ip`).
    V4,
    /// IPv6 (`ip6`).
    V6,
}

impl Family {
    /// Both families, in order.
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    /// The family of an address.
    pub fn of(addr: IpAddr) -> Family {
        if addr.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }

    /// The suffix of per-family names: `v4`, `v6`.
    pub fn suffix(self) -> &'static str {
        match self {
            Family::V4 => "v4",
            Family::V6 => "v6",
        }
    }

    /// The payload protocol keyword: `ip`, `ip6`.
    pub fn keyword(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }

    /// The `meta nfproto` value: `ipv4`, `ipv6`.
    pub fn nfproto(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }

    /// The set data type of an address: `ipv4_addr`, `ipv6_addr`.
    pub fn addr_type(self) -> &'static str {
        match self {
            Family::V4 => "ipv4_addr",
            Family::V6 => "ipv6_addr",
        }
    }
}

/// The slots of the short-circuit (cluster-wide) endpoints of a `Local` port start here, in
/// the same endpoints map as its local slots (`numgen random mod j offset 65536`): one map and
/// one key shape serve both lists.
pub const SHORT_CIRCUIT_SLOT: u32 = 1 << 16;

/// The key of one set or map element, one variant per key shape we use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    /// One address (`cluster-ips`, `nodeport-ips`).
    Addr(IpAddr),
    /// A network (`cluster-cidrs`, interval set).
    Net(IpNet),
    /// A service address: `addr . proto . port`.
    Dest {
        /// The service address.
        addr: IpAddr,
        /// Its protocol.
        proto: Protocol,
        /// Its port.
        port: u16,
    },
    /// A node port: `proto . port`.
    Port {
        /// The protocol.
        proto: Protocol,
        /// The node port.
        port: u16,
    },
    /// One balancing slot of a service address: `addr . proto . port . slot`.
    Slot {
        /// The service address.
        addr: IpAddr,
        /// Its protocol.
        proto: Protocol,
        /// Its port.
        port: u16,
        /// The slot (`numgen` value).
        slot: u32,
    },
    /// One balancing slot of a node port: `proto . port . slot`.
    PortSlot {
        /// The protocol.
        proto: Protocol,
        /// The node port.
        port: u16,
        /// The slot (`numgen` value).
        slot: u32,
    },
    /// A hairpin pair: `endpoint . endpoint`.
    Pair(IpAddr, IpAddr),
    /// A source range a load-balancer address admits: `addr . proto . port . range`.
    DestSource {
        /// The load-balancer address.
        addr: IpAddr,
        /// Its protocol.
        proto: Protocol,
        /// Its port.
        port: u16,
        /// The admitted sources.
        source: IpNet,
    },
}

/// What a set element maps to: nothing (a set), a verdict, or an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Value {
    /// A set element: no data.
    None,
    /// A verdict-map element.
    Verdict(Verdict),
    /// An endpoints-map element: the DNAT destination.
    Endpoint(SocketAddr),
}

/// A verdict, as data of a verdict map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verdict {
    /// `drop`.
    Drop,
    /// `goto <chain>`.
    Goto(ChainName),
    /// `jump <chain>`.
    Jump(ChainName),
}

impl Verdict {
    /// The chain the verdict leads to, if any.
    pub fn chain(self) -> Option<ChainName> {
        match self {
            Verdict::Drop => None,
            Verdict::Goto(c) | Verdict::Jump(c) => Some(c),
        }
    }
}

/// A named set or map with its elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    /// Its name (which fixes its key and data types, see [`SetName::spec`]).
    pub name: SetName,
    /// Its elements.
    pub elements: BTreeMap<Key, Value>,
}

impl Set {
    /// An empty set.
    pub fn new(name: SetName) -> Self {
        Self {
            name,
            elements: BTreeMap::new(),
        }
    }
}

/// How a set is declared: its type line and flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetSpec {
    /// Whether it is a map (has data).
    pub is_map: bool,
    /// Whether it holds intervals (`flags interval`).
    pub interval: bool,
    /// Whether the datapath adds elements with a timeout (`flags dynamic,timeout`).
    pub dynamic: bool,
    /// The default element timeout, for dynamic sets.
    pub timeout: Option<Duration>,
    /// The most elements, for dynamic sets (the kernel's default, 65,535, is far too small
    /// for one map shared by every client of every service).
    pub size: Option<u32>,
}

/// The size of the affinity maps: one element per (client, service address) pair in use.
pub const AFFINITY_MAP_SIZE: u32 = 1 << 20;

impl SetName {
    /// How the set is declared.
    pub fn spec(self) -> SetSpec {
        let plain = SetSpec {
            is_map: false,
            interval: false,
            dynamic: false,
            timeout: None,
            size: None,
        };
        match self {
            SetName::ClusterCidrs(_) => SetSpec {
                interval: true,
                ..plain
            },
            SetName::FirewallAllow(_) => SetSpec {
                interval: true,
                ..plain
            },
            SetName::ClusterIps(_)
            | SetName::NodePortIps(_)
            | SetName::NodeIps(_)
            | SetName::FirewallIps(_)
            | SetName::Hairpin(_) => plain,
            SetName::ServiceIps(_)
            | SetName::ServiceNodePorts(_)
            | SetName::NoEndpointServices(_)
            | SetName::NoEndpointNodePorts(_)
            | SetName::Endpoints(_)
            | SetName::NodePortEndpoints(_)
            | SetName::AffinityServices(_)
            | SetName::AffinityNodePorts(_) => SetSpec {
                is_map: true,
                ..plain
            },
            SetName::Affinity(_) => SetSpec {
                is_map: true,
                dynamic: true,
                // The longest timeout Kubernetes allows; each element carries its port's.
                timeout: Some(Duration::from_secs(86_400)),
                size: Some(AFFINITY_MAP_SIZE),
                ..plain
            },
        }
    }
}

/// A base chain's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChainType {
    /// `type filter`.
    Filter,
    /// `type nat`.
    Nat,
}

/// A netfilter hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HookPoint {
    /// `prerouting`.
    Prerouting,
    /// `input`.
    Input,
    /// `forward`.
    Forward,
    /// `output`.
    Output,
    /// `postrouting`.
    Postrouting,
}

/// Where a base chain hooks in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hook {
    /// Chain type.
    pub chain_type: ChainType,
    /// Hook.
    pub hook: HookPoint,
    /// Priority (`dstnat` = -100, `filter` = 0, `srcnat` = 100).
    pub priority: i32,
}

impl Hook {
    /// The `dstnat` priority.
    pub const DSTNAT: i32 = -100;
    /// The `filter` priority.
    pub const FILTER: i32 = 0;
    /// The `srcnat` priority.
    pub const SRCNAT: i32 = 100;
}

/// How node-port traffic is recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NodePortScope {
    /// Any local address but loopback (`fib daddr type local`).
    Local,
    /// The addresses in `nodeport-ips` (`--nodeport-addresses`).
    Set,
}

/// Which endpoints map a DNAT rule reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DnatMap {
    /// `endpoints`, keyed `daddr . l4proto . dport . slot`.
    Service,
    /// `nodeport-endpoints`, keyed `l4proto . dport . slot`.
    NodePort,
}

/// One rule: one variant per statement shape we emit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rule {
    /// `jump <chain>`.
    Jump(ChainName),
    /// `goto <chain>`.
    Goto(ChainName),
    /// `ct state new jump <chain>`.
    NewJump(ChainName),
    /// `ip daddr . meta l4proto . th dport vmap @<map>`.
    DispatchVmap {
        /// Family of the map.
        family: Family,
        /// The verdict map.
        map: SetName,
    },
    /// Node ports: `fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport
    /// vmap @<map>`, or `ip daddr @nodeport-ips-v4 ...`.
    NodePortVmap {
        /// Family.
        family: Family,
        /// Which destinations are node ports.
        scope: NodePortScope,
        /// The verdict map.
        map: SetName,
    },
    /// `ip daddr @cluster-ips-v4 [ip saddr != @cluster-cidrs-v4] jump mark-for-masquerade`:
    /// traffic to a cluster IP from outside the pod networks (or all of it) is masqueraded.
    MasqueradeClusterIps {
        /// Family.
        family: Family,
        /// `--masquerade-all`: no source condition.
        all: bool,
    },
    /// `ip daddr . meta l4proto . th dport @firewall-ips-v4 ip daddr . meta l4proto . th dport
    /// . ip saddr != @firewall-allow-v4 drop`.
    Firewall {
        /// Family.
        family: Family,
    },
    /// `meta mark set meta mark | <bit>`.
    SetMark(u32),
    /// `meta mark & <bit> == 0 return`.
    ReturnUnmarked(u32),
    /// `meta mark set meta mark ^ <bit>`.
    ClearMark(u32),
    /// `masquerade fully-random`.
    Masquerade,
    /// `reject`.
    Reject,
    /// Client-IP affinity, lookup: `dnat ip to ip saddr . ip daddr . meta l4proto . th dport
    /// map @affinity-v4`. Without an element the rule does nothing and balancing follows.
    AffinityLookup {
        /// Family.
        family: Family,
    },
    /// Client-IP affinity, after DNAT: `meta l4proto { tcp, udp, sctp } ct state new ct status
    /// dnat ct original ip daddr . meta l4proto . ct original proto-dst vmap
    /// @affinity-services-v4` (node ports: `... ct original ip daddr @node-ips-v4 meta l4proto .
    /// ct original proto-dst vmap @affinity-nodeports-v4`). The protocol set gives `proto-dst`
    /// its type.
    AffinityDispatch {
        /// Family.
        family: Family,
        /// Whether it reads the node-port map.
        node_ports: bool,
    },
    /// Client-IP affinity, record: `meta l4proto { tcp, udp, sctp } update @affinity-v4 { ip
    /// saddr . ct original ip daddr . meta l4proto . ct original proto-dst timeout <t> : ip
    /// daddr . th dport }`: the endpoint this connection was DNATed to, under its original
    /// destination, refreshed by every new connection.
    AffinityUpdate {
        /// Family.
        family: Family,
        /// The port's timeout, seconds.
        timeout_secs: u32,
    },
    /// `dnat ip to <key> . numgen random mod <modulus> [offset <offset>] map @<endpoints>`.
    Dnat {
        /// Family.
        family: Family,
        /// Which endpoints map.
        map: DnatMap,
        /// The slot count.
        modulus: u32,
        /// The first slot.
        offset: u32,
    },
    /// `ip saddr @cluster-cidrs-v4 goto <chain>`: pod traffic.
    FromClusterGoto {
        /// Family.
        family: Family,
        /// Target chain.
        chain: ChainName,
    },
    /// `fib saddr type local jump <chain>`: traffic from the node itself.
    FromNodeJump(ChainName),
    /// `fib saddr type local goto <chain>`.
    FromNodeGoto(ChainName),
    /// `ct status dnat ip saddr . ip daddr @hairpin-v4 jump mark-for-masquerade`.
    Hairpin {
        /// Family.
        family: Family,
    },
    /// A rule in one of our chains that is none of ours (observed only, never planned): someone
    /// else wrote it, or an older version of us. A chain holding one differs from every
    /// desired chain, so the planner rewrites it.
    Foreign,
}

impl Rule {
    /// The chain a rule jumps or goes to, if any.
    pub fn target(&self) -> Option<ChainName> {
        match *self {
            Rule::Jump(c) | Rule::Goto(c) | Rule::NewJump(c) => Some(c),
            Rule::FromClusterGoto { chain, .. } => Some(chain),
            Rule::FromNodeJump(c) | Rule::FromNodeGoto(c) => Some(c),
            Rule::MasqueradeClusterIps { .. } | Rule::Hairpin { .. } => {
                Some(ChainName::MarkForMasquerade)
            }
            _ => None,
        }
    }
}

/// A chain with its rules; a base chain has a hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// Its name.
    pub name: ChainName,
    /// Where it hooks in, for base chains.
    pub hook: Option<Hook>,
    /// Its rules, in order.
    pub rules: Vec<Rule>,
}

/// Our whole table: sets and chains, each ordered by name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Table {
    /// The table's name (family `inet`).
    pub name: String,
    /// Sets and maps.
    pub sets: BTreeMap<SetName, Set>,
    /// Chains.
    pub chains: BTreeMap<ChainName, Chain>,
}

impl Table {
    /// An empty table.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    /// Number of elements over all sets.
    pub fn element_count(&self) -> usize {
        self.sets.values().map(|s| s.elements.len()).sum()
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.suffix())
    }
}
