//! Command-line flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Runs a service table from a file (or an etcd catalogue, --etcd) on a load-balancing backend.
///
/// Watches FILE and applies its changes (also when an editor or `sed -i` replaces the file): a
/// file that does not parse is logged and the running table stays; in one that parses, a bad
/// service port is skipped and reported by name (its last good version keeps running) and the
/// rest applies.
/// SIGINT/SIGTERM stop it cleanly. Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=debug) for more.
#[derive(Debug, Parser)]
#[command(name = "svcproxy", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Starts tiny HTTP and UDP echo backends on loopback and a table that fronts them (userspace
    /// backend, no root needed), and prints the commands to try.
    Demo(DemoArgs),
}

/// The backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// An L4 TCP/UDP proxy in this process. Needs no privileges.
    Userspace,
    /// NAT rules with iptables-restore (root).
    Iptables,
    /// The kernel's IPVS load balancer (root, a kernel with IPVS).
    Ipvs,
    /// An nf_tables table of global maps, programmed over netlink (root).
    Nftables,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The service table file (YAML or JSON; format in the README).
    #[arg(long, value_name = "FILE", conflicts_with = "etcd")]
    pub services: Option<PathBuf>,

    /// Read the services from etcd instead of a file: one key per service under --etcd-prefix,
    /// `<prefix><namespace>/<name>`, its value one entry of the table file's `services:` list
    /// (`svcproxyctl put FILE` writes them). Endpoints as `http://host:port` (`https://` with
    /// --etcd-cacert), comma-separated or repeated. Nothing is programmed before the first
    /// complete read.
    #[arg(long, value_name = "URL", value_delimiter = ',')]
    pub etcd: Vec<String>,

    /// Read Services, EndpointSlices and this Node from Kubernetes (in-cluster config, else
    /// $KUBECONFIG or ~/.kube/config), as kube-proxy does; `kube-svcproxy` runs this with
    /// kube-proxy's flags. Nothing is programmed before all three are listed.
    #[arg(long, conflicts_with_all = ["services", "etcd"])]
    pub kubernetes: bool,

    /// Like --kubernetes, with this kubeconfig file.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["services", "etcd"])]
    pub kubeconfig: Option<PathBuf>,

    /// With --kubernetes: serve the Services labelled `service.kubernetes.io/service-proxy-name`
    /// with this value (without it, only unlabelled Services, as kube-proxy).
    #[arg(long, value_name = "NAME")]
    pub service_proxy_name: Option<String>,

    /// With --etcd: the prefix of the service keys.
    #[arg(long, value_name = "PREFIX", default_value = "/svcproxy/services/")]
    pub etcd_prefix: String,

    /// With --etcd: TLS and authentication.
    #[command(flatten)]
    pub etcd_security: super::etcd::EtcdSecurity,

    /// With --etcd: this node's zone, for endpoints' topology hints (a table file names it
    /// with `zone:`).
    #[arg(long, value_name = "Z", requires = "etcd")]
    pub zone: Option<String>,

    /// The backend that implements the table [default: userspace]. With --cleanup, the backend
    /// whose state to remove; without --backend, --cleanup removes that of every kernel backend
    /// whose tools this host has.
    #[arg(long, value_enum)]
    pub backend: Option<BackendKind>,

    /// This node's name (overrides the file's `node:`), for local traffic policies. With
    /// --kubernetes: the Node to watch (default: the host name, as kube-proxy).
    #[arg(long, value_name = "N")]
    pub node_name: Option<String>,

    /// Print what the backend would program (userspace: the listeners and the endpoint choice
    /// per service; iptables: the restore input and hooks; ipvs: an ipvsadm-style listing;
    /// nftables: the table as `nft list table` prints it) and the skipped service ports, then
    /// exit without changing anything.
    #[arg(long, conflicts_with = "once")]
    pub dry_run: bool,

    /// Remove everything an earlier run programmed on this node (kube-proxy's --cleanup): the
    /// state of the --backend given, or else of every kernel backend whose tools are present;
    /// print what was removed and exit (0 when clean). Needs no --services; refuses while a
    /// running instance owns that state.
    #[arg(long, conflicts_with_all = ["once", "dry_run", "cleanup_on_exit"])]
    pub cleanup: bool,

    /// Remove everything this proxy programmed when it stops (SIGINT/SIGTERM).
    #[arg(long)]
    pub cleanup_on_exit: bool,

    /// Sync once, print the sync report and exit (kernel backends leave their state in place).
    #[arg(long)]
    pub once: bool,

    /// Serve Prometheus metrics at http://ADDR/metrics (also /healthz).
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// Serve kube-proxy-style health at http://ADDR/healthz: 200 while the last sync is recent,
    /// 503 otherwise.
    #[arg(long, value_name = "ADDR")]
    pub healthz_addr: Option<SocketAddr>,

    /// Size the kernel's conntrack table at N entries per CPU (kube-proxy's flag; 0: leave it;
    /// the size is only ever raised). kube-svcproxy passes kube-proxy's default, 32768.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub conntrack_max_per_core: u64,

    /// With --conntrack-max-per-core: the least conntrack table size (kube-proxy's default
    /// 131072).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub conntrack_min: u64,

    /// Idle timeout of established TCP flows in the conntrack table, e.g. 24h (kube-proxy's
    /// default; 0s: leave it). Set in svcproxy's network namespace.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub conntrack_tcp_timeout_established: Option<Duration>,

    /// Timeout of TCP flows in CLOSE_WAIT, e.g. 1h (kube-proxy's default; 0s: leave it).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub conntrack_tcp_timeout_close_wait: Option<Duration>,

    /// Fallback: how often FILE is checked for changes while inotify cannot watch it (no
    /// inotify, a directory on the way gone, or SVCPROXY_WATCH=poll), in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 500)]
    pub poll_interval_ms: u64,

    /// How long a change written in place must hold still (size, mtime and content) before it
    /// applies, in milliseconds, unless inotify sees the writer close the file. A file renamed
    /// over FILE (temp file + rename: the safe way to write it) applies at once.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub settle_ms: u64,

    /// The largest table file read, in bytes (a 50,000-service x 10-endpoint table is about
    /// 34 MB). Larger files, and anything but a regular file, are refused.
    #[arg(long, value_name = "BYTES", default_value_t = proxy_core::file::DEFAULT_MAX_TABLE_BYTES)]
    pub max_table_bytes: u64,

    /// The pod network (kube-proxy's --cluster-cidr; iptables and ipvs: at most one per family).
    /// iptables and ipvs: traffic from outside it to a cluster IP is masqueraded. iptables and
    /// userspace: pods reaching a node port, external or LB IP of an externalTrafficPolicy Local
    /// service go to every endpoint (kube-proxy's short-circuit). Repeatable.
    #[arg(long = "cluster-cidr", value_name = "CIDR")]
    pub cluster_cidrs: Vec<ipnet::IpNet>,

    /// iptables and ipvs backends: masquerade all traffic to cluster IPs (kube-proxy's --masquerade-all).
    #[arg(long)]
    pub masquerade_all: bool,

    /// The node's addresses, a fixed list (repeatable; loopback allowed): userspace and ipvs
    /// serve node ports on them, iptables lets the node reach a load-balancer IP from that IP
    /// when a source range holds one of them, health-check node ports answer on them. Default:
    /// every address of the node but loopback and IPv6 link-local, as kube-proxy; userspace
    /// and ipvs follow them as they come and go, iptables reads them once at start, and
    /// health-check node ports answer on 0.0.0.0.
    #[arg(long = "node-address", value_name = "IP")]
    pub node_addresses: Vec<std::net::IpAddr>,

    /// Every backend: serve node ports only on this node's addresses within these networks
    /// (kube-proxy's --nodeport-addresses; repeatable). Default: on all of them.
    #[arg(long = "nodeport-addresses", value_name = "CIDR")]
    pub node_port_addresses: Vec<ipnet::IpNet>,

    /// ipvs backend: answer ARP only for each interface's own addresses (kube-proxy's
    /// --ipvs-strict-arp; needed beside layer-2 load balancers such as MetalLB).
    #[arg(long)]
    pub ipvs_strict_arp: bool,

    /// ipvs backend: bind VIPs to the dummy interface as addresses (kube-proxy's way, listed by
    /// `ip addr`) or as local routes (`ip route show table local`; much faster at thousands of
    /// VIPs: the kernel walks the address list on every address added).
    #[arg(long, value_enum, default_value_t = VipBindingArg::Addresses)]
    pub ipvs_vip_binding: VipBindingArg,

    /// ipvs backend: IPVS timeout of established TCP connections, in seconds (0: leave as is).
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    pub ipvs_tcp_timeout: u32,

    /// ipvs backend: IPVS timeout of TCP connections after a FIN, in seconds (0: leave as is).
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    pub ipvs_tcpfin_timeout: u32,

    /// ipvs backend: IPVS timeout of UDP flows, in seconds (0: leave as is).
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    pub ipvs_udp_timeout: u32,

    /// userspace backend: do not bind the service addresses; listen on ephemeral ports of
    /// --userspace-capture-address and redirect each service address there with iptables
    /// REDIRECT rules in --userspace-capture-chain (kube-proxy's old userspace mode: VIPs need
    /// not be local addresses; root, iptables, IPv4 only).
    #[arg(long)]
    pub userspace_capture: bool,

    /// userspace backend, with --userspace-capture: the address the capture sockets bind.
    #[arg(long, value_name = "IP", default_value = "0.0.0.0")]
    pub userspace_capture_address: std::net::IpAddr,

    /// userspace backend, with --userspace-capture: our nat chain (ours alone: --cleanup and
    /// --cleanup-on-exit delete it).
    #[arg(long, value_name = "CHAIN", default_value = "SVCPROXY-CAPTURE")]
    pub userspace_capture_chain: String,

    /// userspace backend: bind service addresses that are not (yet) local addresses of this host
    /// (IP_FREEBIND); traffic reaches them once the address is added or routed here.
    #[arg(long)]
    pub freebind: bool,

    /// Do not answer on the health-check node ports of `local` external-policy services (by
    /// default they are served on the --node-address addresses, or 0.0.0.0 without any, as
    /// kube-proxy does).
    #[arg(long)]
    pub no_service_health: bool,
}

/// A duration as kube-proxy's flags and configuration write them (Go's form): `24h`, `1h30m`,
/// `90s`, `500ms`, `0s`, or a bare `0`.
///
/// # Errors
/// The text is not such a duration.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    if rest.is_empty() {
        return Err("an empty duration".to_owned());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let number: u64 = rest[..digits].parse().map_err(|_| {
            format!("{text:?}: expected a number before each unit (24h, 1h30m, 90s)")
        })?;
        rest = &rest[digits..];
        let unit = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let part = match &rest[..unit] {
            "h" => Duration::from_secs(number.saturating_mul(3600)),
            "m" => Duration::from_secs(number.saturating_mul(60)),
            "s" => Duration::from_secs(number),
            "ms" => Duration::from_millis(number),
            other => return Err(format!("{text:?}: unknown unit {other:?} (h, m, s, ms)")),
        };
        total = total.saturating_add(part);
        rest = &rest[unit..];
    }
    Ok(total)
}

impl RunArgs {
    /// The conntrack tuning the flags ask for (empty: none).
    pub fn conntrack_tuning(&self) -> nf_conntrack::tuning::Tuning {
        nf_conntrack::tuning::Tuning {
            max_per_core: self.conntrack_max_per_core,
            min: self.conntrack_min,
            tcp_established_timeout: self.conntrack_tcp_timeout_established,
            tcp_close_wait_timeout: self.conntrack_tcp_timeout_close_wait,
        }
    }

    /// Whether the source is Kubernetes.
    pub fn kubernetes(&self) -> bool {
        self.kubernetes || self.kubeconfig.is_some()
    }

    /// The backend to run: --backend, else userspace.
    pub fn backend(&self) -> BackendKind {
        self.backend.unwrap_or(BackendKind::Userspace)
    }

    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms.max(10))
    }

    pub fn settle(&self) -> Duration {
        Duration::from_millis(self.settle_ms)
    }
}

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Where to write the demo table (edit it while the demo runs to see live updates).
    /// Default: a file in the system's temporary directory.
    #[arg(long, value_name = "FILE")]
    pub table: Option<PathBuf>,

    /// Serve metrics and health on this address.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9101")]
    pub metrics_addr: SocketAddr,
}

/// How the ipvs backend binds VIPs (`--ipvs-vip-binding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum VipBindingArg {
    /// A /32 or /128 address per VIP.
    Addresses,
    /// A local route per VIP.
    LocalRoutes,
}

impl From<VipBindingArg> for backend_ipvs::VipBinding {
    fn from(arg: VipBindingArg) -> Self {
        match arg {
            VipBindingArg::Addresses => backend_ipvs::VipBinding::Addresses,
            VipBindingArg::LocalRoutes => backend_ipvs::VipBinding::LocalRoutes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_read_as_kube_proxy_writes_them() {
        let secs = |s: u64| Ok(Duration::from_secs(s));
        assert_eq!(parse_duration("24h"), secs(86_400));
        assert_eq!(parse_duration("1h30m"), secs(5_400));
        assert_eq!(parse_duration("90s"), secs(90));
        assert_eq!(parse_duration("0s"), secs(0));
        assert_eq!(parse_duration("0"), secs(0));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1_500)));
        for bad in ["", "24", "h", "1d", "1.5h", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
