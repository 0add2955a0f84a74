//! Our names: the kinds of set, the families, and one [`Names`] that makes every set and chain
//! name under the configured prefix and tells whether a name is ours.

use crate::ipset::{self, SetType};

/// The kinds of set we keep, each per family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SetKind {
    /// Cluster IP, protocol:port.
    ClusterIp,
    /// External, load-balancer IP or node address, protocol:port, for `Cluster` policies: masq.
    ExternalMasq,
    /// Endpoint IP, protocol:port, endpoint IP: hairpin.
    LoopBack,
    /// The cluster CIDRs.
    ClusterCidr,
    /// Load-balancer IP, protocol:port with source ranges.
    LbFirewall,
    /// Load-balancer IP, protocol:port, allowed source net.
    LbSource,
    /// IP, protocol:port to drop.
    Drop,
    /// IP, protocol:port to drop unless the source is in the cluster CIDRs (an external address
    /// of a `Local` policy with no local endpoint, whose pods reach the cluster endpoints).
    DropOutside,
    /// IP, protocol:port to reject.
    Reject,
}

impl SetKind {
    /// Every kind.
    pub const ALL: [SetKind; 9] = [
        SetKind::ClusterIp,
        SetKind::ExternalMasq,
        SetKind::LoopBack,
        SetKind::ClusterCidr,
        SetKind::LbFirewall,
        SetKind::LbSource,
        SetKind::Drop,
        SetKind::DropOutside,
        SetKind::Reject,
    ];

    pub(super) fn suffix(self) -> &'static str {
        match self {
            SetKind::ClusterIp => "CLUSTER-IP",
            SetKind::ExternalMasq => "EXT-MASQ",
            SetKind::LoopBack => "LOOP-BACK",
            SetKind::ClusterCidr => "CLUSTER-CIDR",
            SetKind::LbFirewall => "LB-FW",
            SetKind::LbSource => "LB-SRC",
            SetKind::Drop => "DROP",
            SetKind::DropOutside => "DROP-OUTSIDE",
            SetKind::Reject => "REJECT",
        }
    }

    /// The ipset type of the kind's sets.
    pub fn set_type(self) -> SetType {
        match self {
            SetKind::LoopBack => SetType::HashIpPortIp,
            SetKind::ClusterCidr => SetType::HashNet,
            SetKind::LbSource => SetType::HashIpPortNet,
            _ => SetType::HashIpPort,
        }
    }
}

/// IPv4 or IPv6: `iptables` or `ip6tables`, `family inet` or `inet6` (the runner's type).
pub use iptables_runner::Family;

/// The ipset family of `family`'s sets.
pub fn ipset_family(family: Family) -> ipset::Family {
    match family {
        Family::V4 => ipset::Family::Inet,
        Family::V6 => ipset::Family::Inet6,
    }
}

/// Our names, all under one prefix: sets, chains, and the ownership check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    prefix: String,
}

impl Names {
    /// Names under `prefix` (e.g. `SVCP-IPVS-`).
    pub fn new(prefix: &str) -> Self {
        Names {
            prefix: prefix.to_owned(),
        }
    }

    /// The set of `kind` for `family`: `SVCP-IPVS-CLUSTER-IP`, `SVCP-IPVS-CLUSTER-IP6`.
    pub fn set(&self, kind: SetKind, family: Family) -> String {
        let six = if family == Family::V6 { "6" } else { "" };
        format!("{}{}{six}", self.prefix, kind.suffix())
    }

    /// The temporary set a full sync fills before swapping it in.
    pub(super) fn temp_set(&self, kind: SetKind, family: Family) -> String {
        format!("{}-T", self.set(kind, family))
    }

    /// A chain of ours: `SVCP-IPVS-SERVICES`...
    pub fn chain(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Whether a set or chain name is ours.
    pub fn is_owned(&self, name: &str) -> bool {
        name.starts_with(&self.prefix)
    }
}
