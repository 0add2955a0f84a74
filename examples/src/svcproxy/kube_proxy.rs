//! `kube-svcproxy`: a kube-proxy replacement built on the library. It takes kube-proxy's flags
//! (those that exist for what it does, with kube-proxy's defaults) and runs svcproxy's
//! Kubernetes source (`--kubernetes`): the flags are translated into svcproxy's, so the two
//! programs share one runtime.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser as _;

use crate::svcproxy::cli::BackendKind;

/// A kube-proxy replacement: watches Services, EndpointSlices and this Node and programs the
/// node's service dataplane (kube-proxy's flags and defaults where they exist).
#[derive(Debug, clap::Parser)]
#[command(name = "kube-svcproxy", version)]
pub struct KubeProxyArgs {
    /// Path to a kubeconfig file (default: the in-cluster config).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,

    /// This node's name, instead of the host name.
    #[arg(long, value_name = "NAME")]
    pub hostname_override: Option<String>,

    /// Which proxy mode to use.
    #[arg(long, value_enum, default_value_t = BackendKind::Iptables)]
    pub proxy_mode: BackendKind,

    /// The pod network, comma-separated (one per family): traffic from outside it to a
    /// cluster IP is masqueraded.
    #[arg(long, value_name = "CIDRS", value_delimiter = ',')]
    pub cluster_cidr: Vec<ipnet::IpNet>,

    /// Serve node ports only on this node's addresses within these networks (comma-separated).
    #[arg(long, value_name = "CIDRS", value_delimiter = ',')]
    pub nodeport_addresses: Vec<ipnet::IpNet>,

    /// Where to serve /metrics (kube-proxy's default: localhost only).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:10249")]
    pub metrics_bind_address: SocketAddr,

    /// Where to serve /healthz and /livez.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:10256")]
    pub healthz_bind_address: SocketAddr,

    /// Masquerade all traffic to cluster IPs.
    #[arg(long)]
    pub masquerade_all: bool,

    /// Serve the Services labelled `service.kubernetes.io/service-proxy-name` with this name
    /// (without it, only unlabelled Services, as kube-proxy).
    #[arg(long, value_name = "NAME")]
    pub service_proxy_name: Option<String>,

    /// ipvs mode: strict ARP.
    #[arg(long)]
    pub ipvs_strict_arp: bool,

    /// Remove what any proxy mode programmed on this node, and exit.
    #[arg(long)]
    pub cleanup: bool,
}

impl KubeProxyArgs {
    /// svcproxy's command line for the same run.
    pub fn svcproxy_args(&self) -> Vec<String> {
        let mut args = vec!["svcproxy".to_owned()];
        if self.cleanup {
            // Every mode's state, as kube-proxy's --cleanup.
            args.push("--cleanup".to_owned());
            return args;
        }
        match &self.kubeconfig {
            Some(path) => {
                args.push("--kubeconfig".to_owned());
                args.push(path.display().to_string());
            }
            None => args.push("--kubernetes".to_owned()),
        }
        let mode = match self.proxy_mode {
            BackendKind::Userspace => "userspace",
            BackendKind::Iptables => "iptables",
            BackendKind::Ipvs => "ipvs",
            BackendKind::Nftables => "nftables",
        };
        args.extend(["--backend".to_owned(), mode.to_owned()]);
        if let Some(node) = &self.hostname_override {
            args.extend(["--node-name".to_owned(), node.clone()]);
        }
        for cidr in &self.cluster_cidr {
            args.extend(["--cluster-cidr".to_owned(), cidr.to_string()]);
        }
        for cidr in &self.nodeport_addresses {
            args.extend(["--nodeport-addresses".to_owned(), cidr.to_string()]);
        }
        args.extend([
            "--metrics-addr".to_owned(),
            self.metrics_bind_address.to_string(),
            "--healthz-addr".to_owned(),
            self.healthz_bind_address.to_string(),
        ]);
        if self.masquerade_all {
            args.push("--masquerade-all".to_owned());
        }
        if let Some(name) = &self.service_proxy_name {
            args.extend(["--service-proxy-name".to_owned(), name.clone()]);
        }
        if self.ipvs_strict_arp {
            args.push("--ipvs-strict-arp".to_owned());
        }
        args
    }
}

/// `kube-svcproxy`'s `main`.
pub fn main() -> ExitCode {
    let args = KubeProxyArgs::parse();
    crate::svcproxy::main_with(crate::svcproxy::cli::Cli::parse_from(args.svcproxy_args()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kube_proxy_flags_become_svcproxy_flags_with_kube_proxy_defaults() {
        let args = KubeProxyArgs::parse_from([
            "kube-svcproxy",
            "--kubeconfig",
            "/etc/kube.conf",
            "--hostname-override",
            "node-a",
            "--proxy-mode",
            "nftables",
            "--cluster-cidr",
            "198.18.0.0/16,2001:db8::/64",
        ]);
        assert_eq!(
            args.svcproxy_args().join(" "),
            "svcproxy --kubeconfig /etc/kube.conf --backend nftables --node-name node-a \
             --cluster-cidr 198.18.0.0/16 --cluster-cidr 2001:db8::/64 \
             --metrics-addr 127.0.0.1:10249 --healthz-addr 0.0.0.0:10256"
        );
        let defaults = KubeProxyArgs::parse_from(["kube-svcproxy"]);
        assert!(defaults
            .svcproxy_args()
            .join(" ")
            .starts_with("svcproxy --kubernetes --backend iptables"));
        let cleanup = KubeProxyArgs::parse_from(["kube-svcproxy", "--cleanup"]);
        assert_eq!(cleanup.svcproxy_args(), ["svcproxy", "--cleanup"]);
        // Every translation parses as svcproxy's own command line.
        for args in [args, defaults, cleanup] {
            crate::svcproxy::cli::Cli::try_parse_from(args.svcproxy_args()).expect("parses");
        }
    }
}
