//! The backend's configuration: one struct with defaults, deserializable from a config file.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use ipnet::IpNet;
use proxy_core::table::Scheduler;
use serde::{Deserialize, Serialize};

use crate::error::UserspaceError;

/// How the userspace proxy listens, connects and balances.
///
/// ```
/// use backend_userspace::UserspaceConfig;
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let config = UserspaceConfig {
///     node_addresses: vec!["127.0.0.1".parse()?],
///     ..UserspaceConfig::default()
/// };
/// config.validate()?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UserspaceConfig {
    /// The node's addresses, on which node ports are served: a fixed list (loopback included
    /// when listed). Empty (the default): every address of the node but loopback and IPv6
    /// link-local, as kube-proxy does, followed as they come and go (rtnetlink, in the network
    /// namespace of the first sync; [`proxy_core::node_addresses::NodeAddresses::kernel`]).
    /// An embedder can feed its own instead
    /// ([`crate::UserspaceDataplane::with_node_addresses`]).
    pub node_addresses: Vec<IpAddr>,
    /// Serve node ports only on the node addresses within these networks (kube-proxy's
    /// `--nodeport-addresses`); empty: on all of them.
    pub node_port_addresses: Vec<IpNet>,
    /// The pod network (kube-proxy's `--cluster-cidr`): clients in it reaching an external
    /// address (node port, external or load-balancer IP) of a service whose external traffic
    /// policy is `Local` go to every endpoint, as clients on the node itself do (kube-proxy's
    /// short-circuit). Empty: only the node's own traffic is short-circuited.
    pub cluster_cidrs: Vec<IpNet>,
    /// How long a connect to one endpoint may take before the next endpoint is tried.
    pub connect_timeout: Duration,
    /// A TCP connection with no byte in either direction for this long is closed, unless its
    /// service port sets its own ([`proxy_core::table::ServicePort::idle_timeout`]).
    pub idle_timeout: Duration,
    /// Endpoints tried for one new connection before it is given up (at least 1).
    pub connect_attempts: usize,
    /// Consecutive connect failures after which an endpoint is ejected (at least 1).
    pub eject_after_failures: u32,
    /// How long an ejected endpoint gets no new connections before it is tried again.
    pub ejection_time: Duration,
    /// The scheduler for service ports that ask for none.
    pub default_scheduler: Scheduler,
    /// Slots in each Maglev lookup table: a prime (the paper uses 65,537).
    pub maglev_table_size: usize,
    /// A UDP flow (client address ↔ endpoint) with no datagram for this long is forgotten,
    /// unless its service port sets its own ([`proxy_core::table::ServicePort::idle_timeout`]).
    pub udp_idle_timeout: Duration,
    /// Most UDP flows per listener; datagrams opening more are dropped.
    pub udp_max_flows: usize,
    /// Largest UDP datagram relayed, in bytes.
    pub udp_max_datagram_bytes: usize,
    /// Set `IP_FREEBIND`/`IPV6_FREEBIND` on listening sockets, so that addresses not (yet) local
    /// can be bound (Linux only; ignored elsewhere).
    pub freebind: bool,
    /// Switch a TCP direction that carries bulk (a read filled the 64 KiB buffer) to `splice(2)`
    /// through a pipe (zero copy, Linux only); otherwise, and on other systems, every byte is
    /// read and written through the buffer. Short exchanges never use a pipe either way.
    pub splice: bool,
    /// The `listen(2)` backlog of each TCP listener.
    pub tcp_backlog: u32,
    /// How traffic reaches the listeners: bound on the service addresses, or captured with
    /// iptables (root).
    pub mode: ListenMode,
    /// Capture mode: the address capture sockets bind, on a port the OS picks. The default
    /// `0.0.0.0` receives both REDIRECTed flows from `PREROUTING` (sent to the incoming
    /// interface's address) and from `OUTPUT` (sent to 127.0.0.1).
    pub capture_address: IpAddr,
    /// Capture mode: our nat chain (the redirects) and our filter chain (the verdicts), both of
    /// this name (they must be ours alone; cleanup deletes them).
    pub capture_chain: String,
    /// The most listeners this backend keeps open. `None` (the default): the process's open-file
    /// limit (`RLIMIT_NOFILE`) less what connections need, an eighth of it and at least 256;
    /// see [`UserspaceConfig::listener_limit`]. Listeners past it are reported, not opened, so
    /// that a table with more addresses than the process may open leaves room to accept
    /// connections, read files and answer health checks.
    pub max_listeners: Option<usize>,
    /// The most TCP connections proxied at once, over all service ports; more are reset at once
    /// and counted (`connections_failed_total{reason="global_limit"}`). `None` (the default):
    /// derived from the open-file limit at each sync, see [`crate::ConnectionLimits::derive`].
    pub max_connections: Option<usize>,
    /// The most TCP connections proxied at once to one service port (all its listeners
    /// together), so that one service's connections cannot starve the others; more are reset
    /// and counted (`reason="service_port_limit"`). `None` (the default): half of the global
    /// limit.
    pub max_connections_per_port: Option<usize>,
    /// The most UDP flows over all listeners (each holds a socket); datagrams that would open
    /// more are dropped and counted (`reason="global_limit"`). `None` (the default): derived from
    /// the open-file limit at each sync, see [`crate::ConnectionLimits::derive`].
    pub udp_max_flows_total: Option<usize>,
}

/// How traffic for a service address reaches the proxy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenMode {
    /// Bind each service address itself (it must be local, or [`UserspaceConfig::freebind`] set).
    #[default]
    Bind,
    /// Listen on ephemeral ports of [`UserspaceConfig::capture_address`] and redirect each
    /// service address there with iptables `REDIRECT` rules in
    /// [`UserspaceConfig::capture_chain`] (needs root and iptables; IPv4 only). See
    /// [`crate::capture`].
    Capture,
}

impl Default for UserspaceConfig {
    fn default() -> Self {
        Self {
            node_addresses: Vec::new(),
            node_port_addresses: Vec::new(),
            cluster_cidrs: Vec::new(),
            connect_timeout: Duration::from_secs(3),
            idle_timeout: Duration::from_secs(3600),
            connect_attempts: 3,
            eject_after_failures: 3,
            ejection_time: Duration::from_secs(10),
            default_scheduler: Scheduler::RoundRobin,
            maglev_table_size: 65_537,
            udp_idle_timeout: Duration::from_secs(30),
            udp_max_flows: 16_384,
            udp_max_datagram_bytes: 65_535,
            freebind: false,
            splice: cfg!(target_os = "linux"),
            tcp_backlog: 1024,
            mode: ListenMode::Bind,
            capture_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            capture_chain: "SVCPROXY-CAPTURE".to_owned(),
            max_listeners: None,
            max_connections: None,
            max_connections_per_port: None,
            udp_max_flows_total: None,
        }
    }
}

impl UserspaceConfig {
    /// The most listeners to keep open: [`UserspaceConfig::max_listeners`], or else the
    /// open-file limit `open_files` less an eighth of it (at least 256) kept for connections.
    pub fn listener_limit(&self, open_files: u64) -> usize {
        self.max_listeners.unwrap_or_else(|| {
            let open_files = usize::try_from(open_files).unwrap_or(usize::MAX);
            let reserve = (open_files / 8).max(256);
            open_files.saturating_sub(reserve)
        })
    }

    /// Checks every field's range.
    ///
    /// # Errors
    /// [`UserspaceError::Config`] naming the first bad field.
    pub fn validate(&self) -> Result<(), UserspaceError> {
        let bad = |field, message: &str| {
            Err(UserspaceError::Config {
                field,
                message: message.to_owned(),
            })
        };
        if !is_prime(self.maglev_table_size) {
            return bad(
                "maglev_table_size",
                "must be a prime (such as 65537 or 251)",
            );
        }
        if self.connect_attempts == 0 {
            return bad("connect_attempts", "must be at least 1");
        }
        if self.eject_after_failures == 0 {
            return bad("eject_after_failures", "must be at least 1");
        }
        if self.connect_timeout.is_zero() || self.idle_timeout.is_zero() {
            return bad("connect_timeout/idle_timeout", "must be above zero");
        }
        if self.udp_idle_timeout.is_zero() {
            return bad("udp_idle_timeout", "must be above zero");
        }
        let is_zero = |limit: Option<usize>| limit == Some(0);
        if is_zero(self.max_connections) || is_zero(self.max_connections_per_port) {
            return bad(
                "max_connections/max_connections_per_port",
                "must be at least 1",
            );
        }
        if is_zero(self.udp_max_flows_total) {
            return bad("udp_max_flows_total", "must be at least 1");
        }
        if self.udp_max_flows == 0 {
            return bad("udp_max_flows", "must be at least 1");
        }
        if !(512..=65_535).contains(&self.udp_max_datagram_bytes) {
            return bad("udp_max_datagram_bytes", "must be within 512-65535");
        }
        let chain_ok = !self.capture_chain.is_empty()
            && self.capture_chain.len() <= 28
            && self
                .capture_chain
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !chain_ok {
            return bad(
                "capture_chain",
                "must be 1-28 characters of A-Z, a-z, 0-9, - and _",
            );
        }
        Ok(())
    }
}

/// Trial division; table sizes are small enough.
pub(crate) fn is_prime(n: usize) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid() {
        assert!(UserspaceConfig::default().validate().is_ok());
    }

    #[test]
    fn missing_fields_take_defaults_and_unknown_fields_are_rejected() {
        let config: UserspaceConfig =
            serde_json::from_str(r#"{"node_addresses": ["127.0.0.2"], "mode": "capture"}"#)
                .expect("partial config");
        assert_eq!(config.node_addresses, [IpAddr::from([127, 0, 0, 2])]);
        assert_eq!(config.mode, ListenMode::Capture);
        assert_eq!(
            config.udp_max_flows,
            UserspaceConfig::default().udp_max_flows
        );
        let err =
            serde_json::from_str::<UserspaceConfig>(r#"{"node_adresses": []}"#).expect_err("typo");
        assert!(err.to_string().contains("node_adresses"), "{err}");
    }

    #[test]
    fn connection_limits_must_admit_one() {
        for config in [
            UserspaceConfig {
                max_connections: Some(0),
                ..UserspaceConfig::default()
            },
            UserspaceConfig {
                max_connections_per_port: Some(0),
                ..UserspaceConfig::default()
            },
            UserspaceConfig {
                udp_max_flows_total: Some(0),
                ..UserspaceConfig::default()
            },
        ] {
            let err = config.validate().expect_err("a limit of 0");
            assert!(err.to_string().contains("max_"), "{err}");
        }
        let config: UserspaceConfig =
            serde_json::from_str(r#"{"max_connections": 100, "max_connections_per_port": 10}"#)
                .expect("limits in a config file");
        assert_eq!(
            (config.max_connections, config.max_connections_per_port),
            (Some(100), Some(10))
        );
        assert!(config.validate().is_ok());
    }

    #[test]
    fn maglev_table_size_must_be_prime() {
        let config = UserspaceConfig {
            maglev_table_size: 65_536,
            ..UserspaceConfig::default()
        };
        let err = config.validate().expect_err("65536 is not prime");
        assert!(err.to_string().contains("maglev_table_size"), "{err}");
        assert!(is_prime(65_537) && is_prime(251) && !is_prime(1) && !is_prime(9));
    }
}
