//! The backend's configuration.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::error::ConfigError;
use crate::names::{Names, DEFAULT_PREFIX};
use crate::rules::Family;

/// How the services dispatch chain finds a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DispatchLayout {
    /// kube-proxy's: one rule per (service port, address) in one chain; a new connection walks
    /// them in order (O(N)).
    Flat,
    /// A tree of chains keyed on destination address bits: a new connection walks O(log N) rules.
    #[default]
    Tree,
}

/// Where the tree puts the balancing rules of a service port that needs no chain of its own.
///
/// Measured (README "Inline balancing"): inline rules cut `iptables-nft-restore`'s time, which
/// follows the chain count (10,000 x 10: 2,688 chains instead of 10,812, 3x faster), but slow
/// `iptables-legacy-restore`, whose time follows the rules' match modules (each inline rule
/// carries a `-m tcp --dport` guard: 1.6x slower there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InlineBalancing {
    /// Inline with iptables-nft, a chain per port with iptables-legacy, once the dataplane has
    /// detected the variant ([`crate::plan::Planner::for_variant`]); a planner that has not been
    /// told the variant (a dry run, golden files) plans inline.
    #[default]
    Nft,
    /// Inline with either variant.
    Always,
    /// A chain per service port (the layout before issue #11).
    Never,
}

/// Shape of the tree dispatch layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TreeConfig {
    /// A node with at most this many dispatch entries (one per (service port, address)) is a
    /// leaf: its rules are written inline.
    pub leaf_rules: usize,
    /// Address bits consumed per level: a node has up to `2^stride_bits` children.
    pub stride_bits: u8,
    /// Whether service ports that need no chain of their own keep their balancing rules in the
    /// tree's leaf chain, each rule guarded by the port's `-d <cluster IP> -p <proto> --dport
    /// <port>`, instead of a jump to an `SVC-`/`SVL-` chain (README "Inline balancing").
    pub inline_balancing: InlineBalancing,
    /// Most rules a leaf may hold, inline balancing rules counted: a node with more is split
    /// (like one with more than `leaf_rules` entries), and a port whose balancing rules alone
    /// exceed it keeps its own chain. Bounds the rules a new connection walks in a leaf.
    pub leaf_max_rules: usize,
}

impl Default for TreeConfig {
    fn default() -> Self {
        Self {
            leaf_rules: 16,
            stride_bits: 4,
            inline_balancing: InlineBalancing::Nft,
            leaf_max_rules: 80,
        }
    }
}

/// Configuration of the iptables backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct IptablesConfig {
    /// Prefix of every chain we own (at most 8 characters, not `KUBE-`).
    pub prefix: String,
    /// Flat (kube-proxy's) or tree dispatch.
    pub dispatch: DispatchLayout,
    /// Tree shape, when `dispatch` is `Tree`.
    pub tree: TreeConfig,
    /// The pod network, at most one per family: traffic from outside it to a cluster IP is
    /// masqueraded, and traffic from inside it to an external address of a `Local` service is
    /// short-circuited to all endpoints (kube-proxy's `--cluster-cidr` local detector).
    pub cluster_cidrs: Vec<IpNet>,
    /// Masquerade all traffic to cluster IPs (kube-proxy's `--masquerade-all`).
    pub masquerade_all: bool,
    /// The packet-mark bit that asks for masquerade (kube-proxy's `--iptables-masquerade-bit`, 14).
    pub masquerade_bit: u8,
    /// A second mark bit used inside a service chain to tie a hairpin's endpoint choice to its
    /// masquerade (see README "Hairpin"). Must be reserved for us.
    pub select_bit: u8,
    /// `MASQUERADE --random-fully`.
    pub random_fully: bool,
    /// Drop forwarded packets in conntrack state INVALID (kube-proxy does unless
    /// `nf_conntrack_tcp_be_liberal` is set).
    pub drop_invalid: bool,
    /// Write hairpin rules for every endpoint, not only this node's. Needed only when pods on
    /// other nodes can reach our service addresses without their own node NATing them (a node
    /// without this proxy).
    pub hairpin_all_endpoints: bool,
    /// Write `-m comment` on rules (kube-proxy drops them above 1,000 endpoints; here it is
    /// explicit). Comments are about a third of the restore input at scale.
    pub comments: bool,
    /// Where node ports answer: this node's addresses within these networks (kube-proxy's
    /// `--nodeport-addresses`). Empty: every local address but loopback. A family with no
    /// network in a non-empty list gets no node ports. Matched with `-d <net> -m addrtype
    /// --dst-type LOCAL`, so an address added later inside a network needs no resync.
    pub node_port_addresses: Vec<IpNet>,
    /// This node's own addresses (kube-proxy's node IP, one per family, or more). Node ports
    /// do not need them (`-m addrtype --dst-type LOCAL` finds the node's addresses at packet
    /// time); load-balancer source ranges do: when a range holds one of them, the port's
    /// load-balancer IPs are allowed as sources too, since the node reaching a load-balancer IP
    /// it holds locally sends from that IP (kube-proxy's `allowFromNode`,
    /// `pkg/proxy/iptables/proxier.go`). Empty: no range lets the node in that way.
    pub node_ips: Vec<IpAddr>,
    /// The named network namespace to program (`ip netns add NAME`, a file in `/run/netns`), or
    /// `None` for the caller's own. With a name, every command the backend runs (variant
    /// detection, `iptables-restore`, `iptables-save`, the hooks' `iptables`) runs under
    /// `ip netns exec NAME`, and the conntrack sockets are opened inside the namespace from a
    /// thread of their own ([`crate::conntrack::NetnsNetlink`]): nothing touches the caller's
    /// namespace. The namespace must exist at the first sync.
    pub netns: Option<String>,
}

impl Default for IptablesConfig {
    fn default() -> Self {
        Self {
            prefix: DEFAULT_PREFIX.to_owned(),
            dispatch: DispatchLayout::default(),
            tree: TreeConfig::default(),
            cluster_cidrs: Vec::new(),
            masquerade_all: false,
            masquerade_bit: 14,
            select_bit: 13,
            random_fully: false,
            drop_invalid: true,
            hairpin_all_endpoints: false,
            comments: true,
            node_port_addresses: Vec::new(),
            node_ips: Vec::new(),
            netns: None,
        }
    }
}

impl IptablesConfig {
    /// Checks the configuration and makes the chain names.
    ///
    /// # Errors
    /// [`ConfigError`] naming the bad field.
    pub fn validate(&self) -> Result<Names, ConfigError> {
        let names = Names::new(&self.prefix)?;
        let bits = |reason| ConfigError::MarkBits {
            masquerade: self.masquerade_bit,
            select: self.select_bit,
            reason,
        };
        if self.masquerade_bit > 31 || self.select_bit > 31 {
            return Err(bits("bits are 0-31"));
        }
        if self.masquerade_bit == self.select_bit {
            return Err(bits("must differ"));
        }
        for family in Family::ALL {
            let count = self
                .cluster_cidrs
                .iter()
                .filter(|n| family.contains(n.addr()))
                .count();
            if count > 1 {
                return Err(ConfigError::ClusterCidrs {
                    family: if family == Family::V4 { "IPv4" } else { "IPv6" },
                    count,
                });
            }
        }
        if let Some(net) = self
            .node_port_addresses
            .iter()
            .find(|net| net.trunc().addr().is_loopback())
        {
            // Loopback node ports need route_localnet, which exposes 127/8 services to the
            // network (CVE-2020-8558): not offered.
            return Err(ConfigError::NodePortAddresses {
                net: *net,
                reason: "loopback node ports are not supported",
            });
        }
        if let Some(name) = &self.netns {
            check_netns_name(name)?;
        }
        Ok(names)
    }

    /// The words run before every command: `ip netns exec NAME` with [`Self::netns`], else none.
    pub fn command_prefix(&self) -> Vec<String> {
        match &self.netns {
            Some(name) => iptables_runner::netns_prefix(name),
            None => Vec::new(),
        }
    }

    /// The masquerade mark value.
    pub fn masquerade_mark(&self) -> u32 {
        1 << self.masquerade_bit
    }

    /// The endpoint-select mark value.
    pub fn select_mark(&self) -> u32 {
        1 << self.select_bit
    }

    /// The cluster CIDR of `family`, if configured.
    pub fn cluster_cidr(&self, family: Family) -> Option<IpNet> {
        self.cluster_cidrs
            .iter()
            .copied()
            .find(|n| family.contains(n.addr()))
    }
}

/// `ip netns exec` takes a name and opens `/run/netns/NAME` (iproute2's `netns_switch`): a path,
/// or a name that walks out of that directory, is refused.
fn check_netns_name(name: &str) -> Result<(), ConfigError> {
    let refuse = |reason| {
        Err(ConfigError::Netns {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return refuse("empty");
    }
    if name == "." || name == ".." || name.contains('/') {
        return refuse("a name in /run/netns, not a path");
    }
    if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return refuse("whitespace or control characters");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert!(IptablesConfig::default().validate().is_ok());
    }

    #[test]
    fn two_cluster_cidrs_of_one_family_are_refused_by_name() {
        let config = IptablesConfig {
            cluster_cidrs: vec![
                "198.18.0.0/17".parse().expect("cidr"),
                "198.19.0.0/17".parse().expect("cidr"),
            ],
            ..IptablesConfig::default()
        };
        let err = config.validate().expect_err("two IPv4 CIDRs");
        assert_eq!(
            err.to_string(),
            "cluster_cidrs: at most one CIDR per address family, got 2 for IPv4"
        );
    }

    #[test]
    fn loopback_node_port_addresses_are_refused_by_name() {
        for net in ["127.0.0.0/8", "127.0.0.1/32", "::1/128"] {
            let config = IptablesConfig {
                node_port_addresses: vec![
                    "198.18.200.0/24".parse().expect("cidr"),
                    net.parse().expect("cidr"),
                ],
                ..IptablesConfig::default()
            };
            let err = config.validate().expect_err("loopback");
            assert_eq!(
                err.to_string(),
                format!("node_port_addresses: {net}: loopback node ports are not supported")
            );
        }
    }

    #[test]
    fn netns_runs_every_command_under_ip_netns_exec() {
        assert!(IptablesConfig::default().command_prefix().is_empty());
        let config = IptablesConfig {
            netns: Some("node-a".into()),
            ..IptablesConfig::default()
        };
        assert!(config.validate().is_ok());
        assert_eq!(config.command_prefix(), ["ip", "netns", "exec", "node-a"]);
    }

    #[test]
    fn netns_paths_and_empty_names_are_refused_by_name() {
        for (name, reason) in [
            ("", "empty"),
            ("../etc", "a name in /run/netns, not a path"),
            ("/proc/1/ns/net", "a name in /run/netns, not a path"),
            ("..", "a name in /run/netns, not a path"),
            ("a b", "whitespace or control characters"),
        ] {
            let config = IptablesConfig {
                netns: Some(name.into()),
                ..IptablesConfig::default()
            };
            let err = config.validate().expect_err(name);
            assert_eq!(err.to_string(), format!("netns {name:?}: {reason}"));
        }
    }
}
