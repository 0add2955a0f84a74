//! The backend's configuration: one struct with defaults, deserializable from a config file.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use proxy_core::table::Scheduler;
use serde::{Deserialize, Serialize};

use crate::error::BackendError;

/// How the IPVS dataplane names, binds and drains what it programs.
///
/// ```
/// use backend_ipvs::IpvsConfig;
/// let config = IpvsConfig { node_addresses: vec!["198.18.0.1".parse().unwrap()], ..IpvsConfig::default() };
/// config.validate().unwrap();
/// assert_eq!(config.interface, "svcp-ipvs0");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IpvsConfig {
    /// The dummy interface the service VIPs are bound to (kube-proxy's `kube-ipvs0`). It is
    /// ours alone: every address on it marks a virtual server as ours, and cleanup deletes it.
    pub interface: String,
    /// The node's addresses, a fixed list: each node port gets a virtual server on each of
    /// them. Empty (the default): every address of the node but loopback, IPv6 link-local and
    /// those on [`IpvsConfig::interface`] (the VIPs), as kube-proxy does, followed as they come
    /// and go (rtnetlink, in the namespace of the first sync;
    /// [`proxy_core::node_addresses::NodeAddresses::kernel`]). An embedder can feed its own
    /// instead ([`crate::IpvsDataplane::with_node_addresses`]).
    pub node_addresses: Vec<IpAddr>,
    /// Serve node ports only on the node addresses within these networks (kube-proxy's
    /// `--nodeport-addresses`); empty: on all of them.
    pub node_port_addresses: Vec<IpNet>,
    /// The scheduler for service ports that ask for none (`rr`, as kube-proxy).
    pub default_scheduler: Scheduler,
    /// Masquerade (SNAT to the node) every connection to a service, as kube-proxy's
    /// `--masquerade-all`. Otherwise only connections from outside [`IpvsConfig::cluster_cidrs`],
    /// to node ports, and hairpin connections (a pod reaching itself) are masqueraded.
    pub masquerade_all: bool,
    /// The pod networks (kube-proxy's `--cluster-cidr`): connections to a cluster IP from
    /// sources outside them are masqueraded. Empty (and no `masquerade_all`): cluster-IP
    /// traffic is not masqueraded, as in kube-proxy. Sources in them also keep reaching a node
    /// port, external or load-balancer IP of an `externalTrafficPolicy: Local` service with no
    /// endpoint on this node (over the cluster-wide endpoints, as in kube-proxy's IPVS mode),
    /// which everyone else finds dropped; empty: dropped for everyone.
    pub cluster_cidrs: Vec<IpNet>,
    /// How long a removed TCP real server keeps its open connections (at weight 0) before it is
    /// deleted anyway. kube-proxy has no limit but the connections' own timeouts; we bound it.
    pub graceful_termination: Duration,
    /// Prefix of our ipsets and iptables chains. Not `KUBE-`, so we can run beside kube-proxy and
    /// cleanup finds exactly what is ours. At most 16 characters (ipset names are limited to 31).
    pub prefix: String,
    /// Which iptables to run for the companion rules.
    pub iptables: IptablesVariant,
    /// Program the companions (ipsets and iptables rules for masquerade, source ranges and
    /// reject). Off: only IPVS and the dummy interface are touched.
    pub manage_companions: bool,
    /// Answer ARP only for addresses of the interface asked on (`arp_ignore=1`) and announce
    /// only such addresses (`arp_announce=2`), on every interface of the namespace: kube-proxy's
    /// `--ipvs-strict-arp`. Without it the node answers ARP for every VIP on the dummy
    /// interface, which breaks layer-2 load balancers (MetalLB) announcing load-balancer IPs.
    /// Namespace-wide sysctls, not ours alone: cleanup leaves them as set.
    pub strict_arp: bool,
    /// How VIPs are bound to [`IpvsConfig::interface`] so the node accepts their traffic: as
    /// addresses (kube-proxy's way, the default: `ip addr show` lists them) or as local routes
    /// (`local VIP dev <interface> table local`). The kernel walks an interface's address list
    /// on every address added, so binding N addresses costs O(N²): about 2 s for 10,000 on a
    /// 2-vCPU host. Local routes cost O(N log N), and the node never picks a VIP as a source
    /// address.
    pub vip_binding: VipBinding,
    /// IPVS connection timeouts set at each full sync (kube-proxy's `--ipvs-tcp-timeout`,
    /// `--ipvs-tcpfin-timeout`, `--ipvs-udp-timeout`); zero leaves a timeout as the kernel has
    /// it (the default). Namespace-wide, like the sysctls.
    pub timeouts: ConnectionTimeouts,
}

/// How VIPs are bound to our interface; see [`IpvsConfig::vip_binding`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VipBinding {
    /// A /32 or /128 address per VIP on the interface (kube-proxy's `kube-ipvs0`).
    #[default]
    Addresses,
    /// A `local` route per VIP through the interface, in the `local` table.
    LocalRoutes,
}

/// IPVS connection timeouts in whole seconds; zero means "leave as it is".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectionTimeouts {
    /// Established TCP connections (kernel default 900 s).
    pub tcp_seconds: u32,
    /// TCP connections after a FIN (kernel default 120 s).
    pub tcp_fin_seconds: u32,
    /// UDP flows (kernel default 300 s).
    pub udp_seconds: u32,
}

impl ConnectionTimeouts {
    /// Whether any timeout is to be set.
    pub fn any(&self) -> bool {
        *self != ConnectionTimeouts::default()
    }

    /// As the netlink client's [`Timeouts`](crate::ops::Timeouts) (zero: unchanged).
    pub fn to_ops(self) -> crate::ops::Timeouts {
        let secs = |s: u32| Duration::from_secs(u64::from(s));
        crate::ops::Timeouts {
            tcp: secs(self.tcp_seconds),
            tcp_fin: secs(self.tcp_fin_seconds),
            udp: secs(self.udp_seconds),
        }
    }

    /// Whether `current` (the kernel's) already has every timeout this asks for.
    pub fn satisfied_by(&self, current: &crate::ops::Timeouts) -> bool {
        let wanted = self.to_ops();
        let ok = |want: Duration, have: Duration| want.is_zero() || want == have;
        ok(wanted.tcp, current.tcp)
            && ok(wanted.tcp_fin, current.tcp_fin)
            && ok(wanted.udp, current.udp)
    }
}

/// Which iptables binary family writes the companion rules.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IptablesVariant {
    /// Whichever plain `iptables` is, as `iptables --version` names it (`(nf_tables)` or
    /// `(legacy)`): kube-proxy's way, and every backend's here
    /// ([`iptables_runner::detect_variant`]). Decided once, at the first full sync or cleanup; a
    /// sync fails while `iptables` cannot run or names neither.
    #[default]
    Auto,
    /// `iptables-legacy-restore`.
    Legacy,
    /// `iptables-nft-restore`.
    Nft,
}

impl Default for IpvsConfig {
    fn default() -> Self {
        Self {
            interface: "svcp-ipvs0".to_owned(),
            node_addresses: Vec::new(),
            node_port_addresses: Vec::new(),
            default_scheduler: Scheduler::RoundRobin,
            masquerade_all: false,
            cluster_cidrs: Vec::new(),
            graceful_termination: Duration::from_secs(30),
            prefix: "SVCP-IPVS-".to_owned(),
            iptables: IptablesVariant::Auto,
            manage_companions: true,
            strict_arp: false,
            vip_binding: VipBinding::Addresses,
            timeouts: ConnectionTimeouts::default(),
        }
    }
}

impl IpvsConfig {
    /// Checks the fields the kernel would reject later, with a clearer message now.
    ///
    /// # Errors
    /// [`BackendError::Config`] naming the field.
    pub fn validate(&self) -> Result<(), BackendError> {
        let bad = |field: &'static str, reason: String| BackendError::Config { field, reason };
        // IFNAMSIZ is 16 with the NUL.
        if self.interface.is_empty() || self.interface.len() > 15 || self.interface.contains('/') {
            return Err(bad(
                "interface",
                format!("{:?}: 1 to 15 characters, no '/'", self.interface),
            ));
        }
        if self.default_scheduler == Scheduler::Random {
            return Err(bad(
                "default_scheduler",
                "random has no IPVS scheduler".to_owned(),
            ));
        }
        if self.prefix.is_empty()
            || self.prefix.len() > 16
            || self.prefix.starts_with("KUBE-")
            || !self
                .prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(bad(
                "prefix",
                format!(
                    "{:?}: 1 to 16 of [A-Za-z0-9_-], not KUBE- (that is kube-proxy's)",
                    self.prefix
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_round_trip_through_serde() {
        let config = IpvsConfig::default();
        config.validate().expect("defaults are valid");
        let json = serde_json::to_string(&config).expect("serialize");
        let back: IpvsConfig = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, config);
        let partial: IpvsConfig =
            serde_json::from_str(r#"{"interface":"svc1","iptables":"nft"}"#).expect("partial");
        assert_eq!(partial.interface, "svc1");
        assert_eq!(partial.iptables, IptablesVariant::Nft);
        assert_eq!(partial.graceful_termination, Duration::from_secs(30));
    }

    #[test]
    fn timeouts_read_from_a_file_and_zero_means_unchanged() {
        let config: IpvsConfig = serde_json::from_str(
            r#"{"strict_arp": true, "timeouts": {"tcp_seconds": 7200, "udp_seconds": 60}}"#,
        )
        .expect("parse");
        assert!(config.strict_arp);
        assert!(config.timeouts.any());
        let ops = config.timeouts.to_ops();
        assert_eq!(
            (ops.tcp, ops.tcp_fin, ops.udp),
            (
                Duration::from_secs(7200),
                Duration::ZERO,
                Duration::from_secs(60)
            )
        );
        let kernel = |tcp, fin, udp| crate::ops::Timeouts {
            tcp: Duration::from_secs(tcp),
            tcp_fin: Duration::from_secs(fin),
            udp: Duration::from_secs(udp),
        };
        assert!(
            config.timeouts.satisfied_by(&kernel(7200, 120, 60)),
            "fin left alone"
        );
        assert!(!config.timeouts.satisfied_by(&kernel(900, 120, 60)));
        assert!(!IpvsConfig::default().timeouts.any());
        assert!(IpvsConfig::default()
            .timeouts
            .satisfied_by(&kernel(900, 120, 300)));
        assert!(
            serde_json::from_str::<IpvsConfig>(r#"{"timeouts": {"tcp": 5}}"#).is_err(),
            "unknown timeout keys are errors"
        );
    }

    #[test]
    fn kube_prefix_long_interface_and_random_are_rejected() {
        for (config, field) in [
            (
                IpvsConfig {
                    prefix: "KUBE-X-".into(),
                    ..IpvsConfig::default()
                },
                "prefix",
            ),
            (
                IpvsConfig {
                    interface: "a-very-long-interface".into(),
                    ..IpvsConfig::default()
                },
                "interface",
            ),
            (
                IpvsConfig {
                    default_scheduler: Scheduler::Random,
                    ..IpvsConfig::default()
                },
                "default_scheduler",
            ),
        ] {
            match config.validate() {
                Err(BackendError::Config { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: expected a config error, got {other:?}"),
            }
        }
    }
}
