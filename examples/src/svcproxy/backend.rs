//! Choosing and building a backend: one constructor shape for all four.

use anyhow::Context as _;
use backend_iptables::{IptablesConfig, IptablesDataplane};
use backend_ipvs::{IpvsConfig, IpvsDataplane};
use backend_nftables::{NftablesConfig, NftablesDataplane};
use backend_userspace::{ListenMode, UserspaceConfig, UserspaceDataplane};
use proxy_core::service_health::WithServiceHealth;
use proxy_core::Dataplane;

use crate::svcproxy::cli::{BackendKind, RunArgs};

pub(crate) fn userspace_config(args: &RunArgs) -> UserspaceConfig {
    UserspaceConfig {
        node_addresses: args.node_addresses.clone(),
        node_port_addresses: args.node_port_addresses.clone(),
        cluster_cidrs: args.cluster_cidrs.clone(),
        mode: if args.userspace_capture {
            ListenMode::Capture
        } else {
            ListenMode::Bind
        },
        capture_address: args.userspace_capture_address,
        capture_chain: args.userspace_capture_chain.clone(),
        freebind: args.freebind,
        ..UserspaceConfig::default()
    }
}

pub(crate) fn iptables_config(args: &RunArgs) -> IptablesConfig {
    IptablesConfig {
        cluster_cidrs: args.cluster_cidrs.clone(),
        masquerade_all: args.masquerade_all,
        node_port_addresses: args.node_port_addresses.clone(),
        node_ips: node_ips_once(args),
        ..IptablesConfig::default()
    }
}

pub(crate) fn nftables_config(args: &RunArgs) -> NftablesConfig {
    NftablesConfig {
        cluster_cidrs: args.cluster_cidrs.clone(),
        node_addresses: node_ips_once(args),
        node_port_addresses: args.node_port_addresses.clone(),
        masquerade_all: args.masquerade_all,
        ..NftablesConfig::default()
    }
}

/// This node's addresses for the iptables and nftables backends' load-balancer source ranges:
/// the listed ones, or those the node has now (kube-proxy, too, reads its node IP once, at
/// start). Node ports need none: `-m addrtype --dst-type LOCAL` and `fib daddr type local` find
/// the addresses at packet time.
fn node_ips_once(args: &RunArgs) -> Vec<std::net::IpAddr> {
    if !args.node_addresses.is_empty() {
        return args.node_addresses.clone();
    }
    let source = proxy_core::node_addresses::NodeAddresses::kernel();
    match source.start() {
        Ok(()) => source.current().iter().map(|address| address.ip).collect(),
        Err(error) => {
            tracing::warn!(
                error = %error,
                "cannot read the node's addresses: no load-balancer source range lets the node in from its load-balancer IPs"
            );
            Vec::new()
        }
    }
}

pub(crate) fn ipvs_config(args: &RunArgs) -> IpvsConfig {
    IpvsConfig {
        node_addresses: args.node_addresses.clone(),
        node_port_addresses: args.node_port_addresses.clone(),
        cluster_cidrs: args.cluster_cidrs.clone(),
        masquerade_all: args.masquerade_all,
        strict_arp: args.ipvs_strict_arp,
        vip_binding: args.ipvs_vip_binding.into(),
        timeouts: backend_ipvs::ConnectionTimeouts {
            tcp_seconds: args.ipvs_tcp_timeout,
            tcp_fin_seconds: args.ipvs_tcpfin_timeout,
            udp_seconds: args.ipvs_udp_timeout,
        },
        ..IpvsConfig::default()
    }
}

/// Builds the chosen backend in the one shape every backend has (`Backend::new(config)`), with
/// the health-check node ports served beside it unless `--no-service-health`. Nothing is opened
/// or run yet (a dry run needs no privileges); metrics are registered by the sync loop
/// (`Dataplane::register_metrics`).
///
/// # Errors
/// A bad backend configuration.
pub fn build(kind: BackendKind, args: &RunArgs) -> anyhow::Result<Box<dyn Dataplane>> {
    let dataplane: Box<dyn Dataplane> = match kind {
        BackendKind::Userspace => {
            Box::new(UserspaceDataplane::new(userspace_config(args)).context("userspace backend")?)
        }
        BackendKind::Iptables => {
            Box::new(IptablesDataplane::new(iptables_config(args)).context("iptables backend")?)
        }
        BackendKind::Ipvs => {
            Box::new(IpvsDataplane::new(ipvs_config(args)).context("ipvs backend")?)
        }
        BackendKind::Nftables => Box::new(NftablesDataplane::new(nftables_config(args))),
    };
    if args.no_service_health {
        return Ok(dataplane);
    }
    // Without a list, the node's addresses: all of them, as kube-proxy's health server.
    let health_addresses = if args.node_addresses.is_empty() {
        vec![std::net::IpAddr::from([0, 0, 0, 0])]
    } else {
        args.node_addresses.clone()
    };
    Ok(Box::new(WithServiceHealth::new(
        dataplane,
        health_addresses,
    )))
}
