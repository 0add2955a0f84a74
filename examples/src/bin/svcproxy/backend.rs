//! Choosing and building a backend: one constructor shape for all three.

use anyhow::Context as _;
use backend_iptables::{IptablesConfig, IptablesDataplane};
use backend_ipvs::{IpvsConfig, IpvsDataplane};
use backend_userspace::{UserspaceConfig, UserspaceDataplane};
use proxy_core::service_health::WithServiceHealth;
use proxy_core::Dataplane;

use crate::cli::{BackendKind, RunArgs};

fn userspace_config(args: &RunArgs) -> UserspaceConfig {
    UserspaceConfig {
        node_addresses: args.node_addresses.clone(),
        ..UserspaceConfig::default()
    }
}

fn iptables_config(args: &RunArgs) -> IptablesConfig {
    IptablesConfig {
        cluster_cidrs: args.cluster_cidrs.clone(),
        masquerade_all: args.masquerade_all,
        node_port_addresses: args.node_port_addresses.clone(),
        ..IptablesConfig::default()
    }
}

fn ipvs_config(args: &RunArgs) -> IpvsConfig {
    IpvsConfig {
        node_addresses: args.node_addresses.clone(),
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
    };
    if args.no_service_health {
        return Ok(dataplane);
    }
    Ok(Box::new(WithServiceHealth::new(
        dataplane,
        args.node_addresses.clone(),
    )))
}
