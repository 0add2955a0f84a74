//! Choosing, building and dry-running a backend.

use std::fmt::Write as _;

use anyhow::Context as _;
use backend_iptables::{IptablesDataplane, Planner};
use backend_ipvs::IpvsDataplane;
use backend_userspace::{Metrics as UserspaceMetrics, UserspaceDataplane};
use prometheus_client::registry::Registry;
use proxy_core::service_health::WithServiceHealth;
use proxy_core::{Capabilities, Dataplane, ServiceTable};

use crate::cli::{BackendKind, RunArgs};

fn userspace_config(args: &RunArgs) -> backend_userspace::Config {
    backend_userspace::Config {
        node_addresses: args.node_addresses.clone(),
        ..backend_userspace::Config::default()
    }
}

fn iptables_config(args: &RunArgs) -> backend_iptables::Config {
    backend_iptables::Config {
        cluster_cidrs: args.cluster_cidrs.clone(),
        masquerade_all: args.masquerade_all,
        node_port_addresses: args.node_port_addresses.clone(),
        ..backend_iptables::Config::default()
    }
}

fn ipvs_config(args: &RunArgs) -> backend_ipvs::Config {
    backend_ipvs::Config {
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
        ..backend_ipvs::Config::default()
    }
}

/// Builds the chosen backend, registering its metrics in `registry`, with the health-check node
/// ports served beside it unless `--no-service-health`.
///
/// # Errors
/// A bad backend configuration, a missing tool, or a backend that is not available yet.
pub fn build(
    kind: BackendKind,
    args: &RunArgs,
    registry: &mut Registry,
) -> anyhow::Result<Box<dyn Dataplane>> {
    let dataplane = build_backend(kind, args, registry)?;
    if args.no_service_health {
        return Ok(dataplane);
    }
    Ok(Box::new(WithServiceHealth::new(
        dataplane,
        args.node_addresses.clone(),
    )))
}

fn build_backend(
    kind: BackendKind,
    args: &RunArgs,
    registry: &mut Registry,
) -> anyhow::Result<Box<dyn Dataplane>> {
    match kind {
        BackendKind::Userspace => {
            let metrics = UserspaceMetrics::register(registry);
            let dataplane = UserspaceDataplane::with_metrics(userspace_config(args), metrics)
                .context("userspace backend")?;
            Ok(Box::new(dataplane))
        }
        BackendKind::Iptables => {
            let metrics = backend_iptables::metrics::Metrics::register(registry);
            let dataplane =
                IptablesDataplane::system(iptables_config(args)).context("iptables backend")?;
            Ok(Box::new(dataplane.with_metrics(metrics)))
        }
        BackendKind::Ipvs => {
            let mut dataplane = IpvsDataplane::new(ipvs_config(args)).context("ipvs backend")?;
            dataplane.set_metrics(backend_ipvs::Metrics::register(registry));
            Ok(Box::new(dataplane))
        }
    }
}

fn check(capabilities: Capabilities, backend: &str, table: &ServiceTable) -> anyhow::Result<()> {
    capabilities
        .check(backend, table)
        .context("the table cannot run on this backend")?;
    Ok(())
}

/// What a sync to `table` would program, for `--dry-run`. Touches nothing and needs no
/// privileges: only the backends' pure plan steps run.
///
/// # Errors
/// A bad configuration, or a table asking for what the backend lacks.
pub fn dry_run(kind: BackendKind, args: &RunArgs, table: &ServiceTable) -> anyhow::Result<String> {
    match kind {
        BackendKind::Userspace => {
            let dataplane =
                UserspaceDataplane::new(userspace_config(args)).context("userspace backend")?;
            check(dataplane.capabilities(), dataplane.name(), table)?;
            let plan = dataplane.plan(table);
            let mut out = format!(
                "# userspace backend: {} listener(s) for {} service port(s), {} endpoint(s)\n",
                plan.desired.len(),
                table.len(),
                table.endpoint_count()
            );
            out.push_str(&backend_userspace::observe::render(&plan.desired));
            for problem in &plan.problems {
                let _ = writeln!(out, "# problem: {problem}");
            }
            Ok(out)
        }
        BackendKind::Iptables => {
            check(
                IptablesDataplane::supported(),
                backend_iptables::NAME,
                table,
            )?;
            let planner = Planner::new(iptables_config(args)).context("iptables backend")?;
            let plan = planner.plan_full(table);
            let mut out = format!(
                "# iptables backend: full restore input for {} service port(s), {} endpoint(s): {} rules in {} chains\n",
                table.len(),
                table.endpoint_count(),
                plan.rules_written(),
                plan.chains_written()
            );
            out.push_str(&plan.render());
            for hook in planner.hooks() {
                let _ = writeln!(
                    out,
                    "# hook: -t {} -A {} {}",
                    hook.table, hook.chain, hook.rule
                );
            }
            Ok(out)
        }
        BackendKind::Ipvs => {
            let config = ipvs_config(args);
            config.validate().context("ipvs backend")?;
            check(
                IpvsDataplane::supported(config.manage_companions),
                backend_ipvs::NAME,
                table,
            )?;
            let desired = backend_ipvs::plan::plan_desired(table, &config);
            let mut out = format!(
                "# ipvs backend: {} virtual server(s) for {} service port(s), {} endpoint(s); VIPs on {}\n",
                desired.state.services.len(),
                table.len(),
                table.endpoint_count(),
                config.interface
            );
            out.push_str(&backend_ipvs::plan::render_listing(&desired));
            for problem in desired.problems.values().flatten() {
                let _ = writeln!(out, "# problem: {problem}");
            }
            Ok(out)
        }
    }
}
