//! Choosing and building a backend.

use std::fmt::Write as _;

use anyhow::Context as _;
use backend_userspace::{Metrics as UserspaceMetrics, UserspaceDataplane};
use prometheus_client::registry::Registry;
use proxy_core::{Dataplane, ServiceTable};

use crate::cli::{BackendKind, RunArgs};

/// A built backend: its concrete type for `--dry-run`, boxed for the sync loop.
pub enum Backend {
    Userspace(UserspaceDataplane),
}

impl Backend {
    /// The backend as the sync loop drives it.
    pub fn into_dataplane(self) -> Box<dyn Dataplane> {
        match self {
            Backend::Userspace(dataplane) => Box::new(dataplane),
        }
    }

    /// What a sync to `table` would program, for `--dry-run`.
    pub fn dry_run(&self, table: &ServiceTable) -> anyhow::Result<String> {
        match self {
            Backend::Userspace(dataplane) => {
                dataplane
                    .capabilities()
                    .check(dataplane.name(), table)
                    .context("the table cannot run on this backend")?;
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
        }
    }
}

/// Builds the chosen backend, registering its metrics in `registry`.
///
/// # Errors
/// A bad backend configuration, or a backend that is not available yet.
pub fn build(
    kind: BackendKind,
    args: &RunArgs,
    registry: &mut Registry,
) -> anyhow::Result<Backend> {
    match kind {
        BackendKind::Userspace => {
            let config = backend_userspace::Config {
                node_addresses: args.node_addresses.clone(),
                ..backend_userspace::Config::default()
            };
            let metrics = UserspaceMetrics::register(registry);
            let dataplane =
                UserspaceDataplane::with_metrics(config, metrics).context("userspace backend")?;
            Ok(Backend::Userspace(dataplane))
        }
        // TODO(#4), TODO(#5): wire the kernel backends in once they implement `Dataplane`.
        BackendKind::Iptables => {
            anyhow::bail!("the iptables backend is not available in this build yet (issue #4)")
        }
        BackendKind::Ipvs => {
            anyhow::bail!("the ipvs backend is not available in this build yet (issue #5)")
        }
    }
}
