//! The backend's configuration: one struct with defaults, deserializable from a config file.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// How the nftables dataplane names its table and what it masquerades.
///
/// ```
/// use backend_nftables::config::NftablesConfig;
/// let config = NftablesConfig { cluster_cidrs: vec!["198.18.0.0/17".parse().unwrap()], ..NftablesConfig::default() };
/// assert_eq!(config.table, "svcproxy");
/// assert_eq!(config.masquerade_mark(), 0x4000);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NftablesConfig {
    /// The name of our `inet` table. It is ours alone: cleanup deletes it whole.
    pub table: String,
    /// The pod networks (kube-proxy's `--cluster-cidr`): traffic to a cluster IP from outside
    /// them is masqueraded, and traffic from inside them to an external address of an
    /// `externalTrafficPolicy: Local` port is short-circuited to every endpoint. Empty (and no
    /// `masquerade_all`): cluster-IP traffic is not masqueraded, as in kube-proxy.
    pub cluster_cidrs: Vec<IpNet>,
    /// The node's addresses, a fixed list, as the other backends take them: they decide which
    /// addresses serve node ports when [`NftablesConfig::node_port_addresses`] is set, and
    /// whether a load-balancer source range lets the node in. Added to the addresses the
    /// planner is given ([`crate::plan::desired()`]'s `node_ips`).
    pub node_addresses: Vec<IpAddr>,
    /// Serve node ports only on the node addresses within these networks (kube-proxy's
    /// `--nodeport-addresses`, a `nodeport-ips` set); empty: on every local address but
    /// loopback (`fib daddr type local`).
    pub node_port_addresses: Vec<IpNet>,
    /// Masquerade every connection to a service (kube-proxy's `--masquerade-all`).
    pub masquerade_all: bool,
    /// The packet-mark bit that asks for masquerade (kube-proxy's `--iptables-masquerade-bit`,
    /// 14: `0x4000`).
    pub masquerade_bit: u8,
    /// The most balancing slots a service port gets: endpoint weights are divided by their
    /// greatest common divisor and, if their sum is still larger, scaled down to this (each
    /// endpoint keeps at least one slot).
    pub max_slots: u32,
}

impl Default for NftablesConfig {
    fn default() -> Self {
        Self {
            table: "svcproxy".to_string(),
            cluster_cidrs: Vec::new(),
            node_addresses: Vec::new(),
            node_port_addresses: Vec::new(),
            masquerade_all: false,
            masquerade_bit: 14,
            max_slots: 256,
        }
    }
}

impl NftablesConfig {
    /// The masquerade mark: `1 << masquerade_bit` (a bit above 31 falls back to 14).
    pub fn masquerade_mark(&self) -> u32 {
        1u32.checked_shl(u32::from(self.masquerade_bit))
            .unwrap_or(1 << 14)
    }
}
