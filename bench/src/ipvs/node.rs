//! The node namespace's side of `bench ipvs`: `bench ipvs-sync` (hidden) builds one dataplane,
//! drives it through the [`Dataplane`] trait (a cold full sync, a partial sync with one endpoint
//! changed, a partial sync with one service port added, a warm full resync) and prints one JSON line per step as it
//! finishes, so the parent still has the earlier steps when it kills a slow one.
//!
//! The kernel state stays behind when the process exits (no backend cleans up on drop): the
//! parent then sends the latency load through it, and deleting the namespace removes it all.

use std::io::Write as _;
use std::time::Instant;

use proxy_core::dataplane::{Dataplane, SyncMode, SyncRequest};
use proxy_core::diff::diff;
use proxy_core::table::ServiceTable;
use proxy_core::testing::generate::{with_endpoint_changed, with_service_added};
use serde::{Deserialize, Serialize};

use crate::error::BenchError;
use crate::ipvs::table::bench_table;
use crate::netns::NODE_CLIENT_SIDE;

/// The dataplanes compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// backend-ipvs with its defaults (companion ipsets and iptables rules on), node ports on
    /// the node's client-side address.
    Ipvs,
    /// backend-ipvs without its companions (no ipsets, no iptables rules): IPVS and the dummy
    /// interface only, to separate the netlink cost from the `ipset`/`iptables` processes.
    IpvsBare,
    /// backend-ipvs with its companions, its dummy interface and conntrack clean-up on the real
    /// kernel, but an in-memory fake in place of the kernel's IPVS: runs on a kernel without
    /// IPVS (the host), to measure at host speed everything a sync costs but the IPVS work.
    /// Nothing forwards, so no latency is measured.
    IpvsFakeKernel,
    /// `ipvs` with its VIPs bound as local routes instead of addresses.
    IpvsRoutes,
    /// `ipvs-fake-kernel` with its VIPs bound as local routes instead of addresses.
    IpvsFakeKernelRoutes,
    /// backend-iptables with its defaults (tree dispatch).
    Iptables,
    /// backend-iptables with kube-proxy's flat dispatch chain.
    IptablesFlat,
    /// backend-nftables (one `inet` table of global maps over netlink), node ports on the
    /// node's client-side address. Its kernel side is the host's: it runs without the VM.
    Nftables,
}

impl Backend {
    /// The name in reports and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Ipvs => "ipvs",
            Backend::IpvsBare => "ipvs-bare",
            Backend::IpvsFakeKernel => "ipvs-fake-kernel",
            Backend::IpvsRoutes => "ipvs-routes",
            Backend::IpvsFakeKernelRoutes => "ipvs-fake-kernel-routes",
            Backend::Iptables => "iptables",
            Backend::IptablesFlat => "iptables-flat",
            Backend::Nftables => "nftables",
        }
    }

    fn vip_binding(self) -> backend_ipvs::VipBinding {
        match self {
            Backend::IpvsRoutes | Backend::IpvsFakeKernelRoutes => {
                backend_ipvs::VipBinding::LocalRoutes
            }
            _ => backend_ipvs::VipBinding::Addresses,
        }
    }

    /// Whether an in-memory fake stands in for the kernel's IPVS (nothing forwards).
    pub fn fakes_ipvs(self) -> bool {
        matches!(
            self,
            Backend::IpvsFakeKernel | Backend::IpvsFakeKernelRoutes
        )
    }

    fn dataplane(self) -> Result<Box<dyn Dataplane>, BenchError> {
        let failed = |detail: String| BenchError::Scenario {
            scenario: "create dataplane".to_owned(),
            proxy: self.name().to_owned(),
            detail,
        };
        Ok(match self {
            Backend::Ipvs | Backend::IpvsBare | Backend::IpvsRoutes => {
                let config = backend_ipvs::IpvsConfig {
                    node_addresses: vec![NODE_CLIENT_SIDE.into()],
                    manage_companions: self != Backend::IpvsBare,
                    vip_binding: self.vip_binding(),
                    ..backend_ipvs::IpvsConfig::default()
                };
                Box::new(
                    backend_ipvs::IpvsDataplane::new(config).map_err(|e| failed(e.to_string()))?,
                )
            }
            Backend::IpvsFakeKernel | Backend::IpvsFakeKernelRoutes => {
                let config = backend_ipvs::IpvsConfig {
                    node_addresses: vec![NODE_CLIENT_SIDE.into()],
                    vip_binding: self.vip_binding(),
                    ..backend_ipvs::IpvsConfig::default()
                };
                // A kernel without IPVS may lack the dummy module too (these hosts do): then a
                // bridge stands in for the dummy interface. The backend uses an existing
                // interface of its name as it is, and an address costs the kernel the same on
                // either kind.
                let has_link = |kind: &str| {
                    std::process::Command::new("ip")
                        .args(["link", "add", &config.interface, "type", kind])
                        .stderr(std::process::Stdio::null())
                        .status()
                        .is_ok_and(|s| s.success())
                };
                if !has_link("dummy") && !has_link("bridge") {
                    return Err(failed(format!(
                        "cannot create {} (neither dummy nor bridge)",
                        config.interface
                    )));
                }
                let fake = std::sync::Arc::new(backend_ipvs::testing::FakeIpvs::new());
                Box::new(
                    backend_ipvs::IpvsDataplane::with_kernel_parts(config, fake)
                        .map_err(|e| failed(e.to_string()))?,
                )
            }
            Backend::Nftables => {
                let config = backend_nftables::NftablesConfig {
                    node_addresses: vec![NODE_CLIENT_SIDE.into()],
                    ..backend_nftables::NftablesConfig::default()
                };
                Box::new(backend_nftables::NftablesDataplane::new(config))
            }
            Backend::Iptables | Backend::IptablesFlat => {
                let mut config = backend_iptables::IptablesConfig::default();
                if self == Backend::IptablesFlat {
                    config.dispatch = backend_iptables::DispatchLayout::Flat;
                }
                Box::new(
                    backend_iptables::IptablesDataplane::new(config)
                        .map_err(|e| failed(e.to_string()))?,
                )
            }
        })
    }
}

/// The four timed syncs, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// Cold full sync of the whole table.
    Full,
    /// Partial sync: one endpoint of one service port changed (ready becomes terminating).
    EndpointChange,
    /// Partial sync: one service port (10 endpoints) added.
    ServiceAdd,
    /// Full sync of the same table again (a periodic resync): the kernel's state is dumped
    /// and compared, and nothing needs writing.
    Resync,
}

/// All steps, in run order.
pub const STEPS: [Step; 4] = [
    Step::Full,
    Step::EndpointChange,
    Step::ServiceAdd,
    Step::Resync,
];

/// One step's measurement: the line `bench ipvs-sync` prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepResult {
    /// Which step.
    pub step: Step,
    /// Wall time of `Dataplane::sync`, measured around the call.
    pub seconds: f64,
    /// The backend's own count of what it wrote (rules, netlink operations).
    pub objects_written: usize,
    /// Full or partial, as the backend actually did it.
    pub mode: String,
    /// Problems the backend reported (parts it could not apply).
    pub problems: Vec<String>,
}

/// `bench ipvs-sync`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct SyncArgs {
    /// Which dataplane.
    #[arg(long, value_enum)]
    pub backend: Backend,
    /// Service ports.
    #[arg(long)]
    pub ports: usize,
    /// Endpoints per service port.
    #[arg(long, default_value_t = 10)]
    pub endpoints: usize,
}

/// The service port whose endpoint the second step changes: the middle one, so never the
/// latency target (the last) once there are two or more.
pub fn changed_port(ports: usize) -> usize {
    ports.saturating_sub(1) / 2
}

/// Marks the start of one timed sync, for an instruction count of each step alone: valgrind
/// `--tool=callgrind --zero-before='*step_started*' --dump-before='*step_finished*'` writes one
/// profile per step, every thread's instructions from here to [`step_finished`] (used to compare
/// two builds deterministically where the emulated VM's timings are too noisy; bench/README.md).
#[inline(never)]
fn step_started(step: Step) {
    // Distinct bodies: identical ones are folded into one symbol, and callgrind would see one.
    std::hint::black_box((step, "started"));
}

/// Marks the end of one timed sync (see [`step_started`]).
#[inline(never)]
fn step_finished(step: Step) {
    std::hint::black_box((step, "finished"));
}

/// Runs the four steps in this process's network namespace, printing each result.
///
/// # Errors
/// [`BenchError::Scenario`] when the dataplane cannot be made or a sync fails.
pub async fn run_sync(args: &SyncArgs) -> Result<(), BenchError> {
    let mut dataplane = args.backend.dataplane()?;
    let base = bench_table(args.ports, args.endpoints);
    let changed = with_endpoint_changed(&base, changed_port(args.ports));
    let added = with_service_added(&changed);
    let tables = [
        (
            Step::Full,
            ServiceTable::empty(),
            base.clone(),
            SyncMode::Full,
        ),
        (
            Step::EndpointChange,
            base,
            changed.clone(),
            SyncMode::Partial,
        ),
        (Step::ServiceAdd, changed, added.clone(), SyncMode::Partial),
        (Step::Resync, added.clone(), added, SyncMode::Full),
    ];
    for (step, previous, desired, mode) in tables {
        let changes = diff(&previous, &desired);
        let request = SyncRequest {
            desired: &desired,
            changes: &changes,
            mode,
        };
        step_started(step);
        let started = Instant::now();
        let synced = dataplane.sync(request).await;
        let seconds = started.elapsed().as_secs_f64();
        step_finished(step);
        let report = synced.map_err(|e| BenchError::Scenario {
            scenario: format!("{step:?} sync of {} service ports", args.ports),
            proxy: args.backend.name().to_owned(),
            detail: e.to_string(),
        })?;
        let result = StepResult {
            step,
            seconds,
            objects_written: report.objects_written,
            mode: report.mode.to_string(),
            problems: report.problems.iter().map(ToString::to_string).collect(),
        };
        let line = serde_json::to_string(&result).map_err(|source| BenchError::Json {
            path: "<stdout>".into(),
            source,
        })?;
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{line}")
            .and_then(|()| stdout.flush())
            .map_err(|e| BenchError::io("write a step result", e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_changed_port_is_not_the_latency_target() {
        for ports in [2, 100, 1_000, 10_000] {
            assert_ne!(changed_port(ports), ports - 1, "{ports}");
        }
        assert_eq!(changed_port(1), 0);
    }

    #[test]
    fn step_results_round_trip_as_one_json_line() {
        let result = StepResult {
            step: Step::EndpointChange,
            seconds: 0.0042,
            objects_written: 3,
            mode: "partial".to_owned(),
            problems: vec![],
        };
        let line = serde_json::to_string(&result).expect("serialize");
        assert!(!line.contains('\n'));
        assert!(line.contains(r#""step":"endpoint-change""#), "{line}");
        let back: StepResult = serde_json::from_str(&line).expect("parse");
        assert_eq!(back, result);
    }
}
