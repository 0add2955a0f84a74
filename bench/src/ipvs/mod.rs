//! `bench ipvs`: issue #5's benchmark. For each table size N (service ports of 10 endpoints) and
//! each backend (IPVS, iptables tree, iptables flat), in a fresh client/node/server topology
//! ([`crate::netns`]): a cold full sync, a partial sync with one endpoint changed, a partial sync
//! with one service port added, a warm full resync of the same table (each timed around
//! `Dataplane::sync`), then new connections at a
//! fixed rate to the last service port's VIP (p50/p99). Meant to run as root inside the IPVS
//! VM (`scripts/bench-ipvs`); see `bench/README.md`.
//!
//! The syncs run in a child, `bench ipvs-sync` ([`node`]), started in the node namespace: the
//! dataplanes program the namespace they run in. Every step is bounded by `--step-timeout`; a
//! backend that overruns is killed and the rest of its work at that N is skipped, with the
//! reason in the report.

pub mod node; // `bench ipvs-sync`: the four timed syncs, in the node namespace
pub mod render; // markdown and SVG
pub mod table; // the benchmark's tables and address plan

use std::io::BufRead as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::BenchError;
use crate::load::{LoadOutcome, LoadSpec, RateResult, Scenario};
use crate::netns::{self, Role, Topology};
use crate::procfs::{self, Machine};
use node::{Backend, StepResult, STEPS};

/// `bench ipvs`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct IpvsArgs {
    /// Table sizes (service ports).
    #[arg(long, value_delimiter = ',', default_values_t = [1, 100, 1_000, 10_000])]
    pub sizes: Vec<usize>,
    /// Sizes 1 and 100 only (overrides --sizes).
    #[arg(long)]
    pub quick: bool,
    /// Endpoints per service port (also the number of real servers).
    #[arg(long, default_value_t = 10)]
    pub endpoints: usize,
    /// Backends, in run order at each size.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Backend::Ipvs, Backend::Iptables, Backend::IptablesFlat])]
    pub backends: Vec<Backend>,
    /// New connections per second in the latency measurement (the same at every N).
    #[arg(long, default_value_t = 200)]
    pub rate: u32,
    /// Seconds of the latency measurement.
    #[arg(long, default_value_t = 3.0)]
    pub duration: f64,
    /// Seconds each sync step may take before the backend is killed and skipped at that N.
    #[arg(long, default_value_t = 120.0)]
    pub step_timeout: f64,
    /// Where the results go.
    #[arg(long, default_value = "bench/results")]
    pub out: PathBuf,
    /// The run's label in titles.
    #[arg(long, default_value = "IPVS vs iptables")]
    pub label: String,
    /// The commit measured (the guest has no git; scripts/bench-ipvs passes it).
    #[arg(long, default_value = "unknown")]
    pub commit: String,
    /// What the guest runs on, e.g. "guest under TCG emulation on `<host CPU>`".
    #[arg(long, default_value = "")]
    pub environment: String,
    /// Measure nothing: re-render the markdown and SVG of this run's JSON (beside it).
    #[arg(long)]
    pub render: Option<PathBuf>,
}

/// The whole run: `ipvs-<stamp>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IpvsReport {
    /// `ipvs`.
    pub suite: String,
    /// The title's label.
    pub label: String,
    /// UTC start, RFC 3339.
    pub date: String,
    /// The commit measured.
    pub git_commit: String,
    /// Where it ran (the guest's view).
    pub machine: Machine,
    /// What the guest runs on (emulation, host CPU).
    pub environment: String,
    /// Sizes, endpoints, rate, duration, step timeout.
    pub settings: Settings,
    /// One entry per (size, backend), in run order.
    pub runs: Vec<BackendRun>,
}

/// The run's settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    /// Table sizes, in run order.
    pub sizes: Vec<usize>,
    /// Endpoints per service port.
    pub endpoints: usize,
    /// Backends, in run order.
    pub backends: Vec<Backend>,
    /// Connections per second of the latency load.
    pub rate: u32,
    /// Seconds of the latency load.
    pub duration_s: f64,
    /// Per-step time limit, seconds.
    pub step_timeout_s: f64,
}

/// One backend at one size.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackendRun {
    /// Which backend.
    pub backend: Backend,
    /// Service ports in the table.
    pub ports: usize,
    /// The sync steps that finished, in order.
    pub steps: Vec<StepResult>,
    /// The latency load to the last VIP, if it ran.
    pub latency: Option<RateResult>,
    /// The machine's kernel CPU (system, irq and softirq time of every CPU, `/proc/stat`)
    /// during the latency load, per completed connection, in µs: client, NAT and server paths
    /// together, and whatever else ran meanwhile (compare backends of one run).
    #[serde(default)]
    pub kernel_cpu_us_per_conn: Option<f64>,
    /// Wall seconds this backend took at this size, everything included.
    pub wall_s: f64,
    /// Why steps are missing, if they are.
    pub skipped: Option<String>,
}

impl BackendRun {
    /// The seconds of `step`, if it finished.
    pub fn seconds(&self, step: node::Step) -> Option<f64> {
        self.steps
            .iter()
            .find(|s| s.step == step)
            .map(|s| s.seconds)
    }
}

/// Runs the suite and writes `ipvs-<stamp>.{json,md,svg}` under `--out`.
///
/// # Errors
/// When not root, the topology cannot be built, or the results cannot be written. A backend
/// that fails or overruns is recorded and skipped, not an error.
pub fn run(args: &IpvsArgs) -> Result<Vec<PathBuf>, BenchError> {
    if let Some(json) = &args.render {
        let text = std::fs::read_to_string(json)
            .map_err(|e| BenchError::io(format!("read {}", json.display()), e))?;
        let report: IpvsReport =
            serde_json::from_str(&text).map_err(|source| BenchError::Json {
                path: json.clone(),
                source,
            })?;
        let dir = json
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_owned);
        return render::write(&report, &dir);
    }
    if !netns::is_root() {
        return Err(BenchError::Scenario {
            scenario: "ipvs".to_owned(),
            proxy: "-".to_owned(),
            detail: "needs root (network namespaces, IPVS, iptables): run it in the VM with scripts/bench-ipvs".to_owned(),
        });
    }
    let exe = std::env::current_exe().map_err(|e| BenchError::io("current_exe", e))?;
    let sizes = if args.quick {
        vec![1, 100]
    } else {
        args.sizes.clone()
    };
    let mut report = IpvsReport {
        suite: "ipvs".to_owned(),
        label: args.label.clone(),
        date: procfs::utc_now_rfc3339(),
        git_commit: args.commit.clone(),
        machine: Machine::current(),
        environment: args.environment.clone(),
        settings: Settings {
            sizes: sizes.clone(),
            endpoints: args.endpoints,
            backends: args.backends.clone(),
            rate: args.rate,
            duration_s: args.duration,
            step_timeout_s: args.step_timeout,
        },
        runs: Vec::new(),
    };
    for &ports in &sizes {
        for &backend in &args.backends {
            tracing::info!(ports, backend = backend.name(), "measuring");
            let run = run_one(&exe, args, backend, ports)?;
            tracing::info!(?run, "measured");
            report.runs.push(run);
            // Written after each backend, so a VM timeout still leaves the figures so far.
            render::write(&report, &args.out)?;
        }
    }
    render::write(&report, &args.out)
}

fn run_one(
    exe: &Path,
    args: &IpvsArgs,
    backend: Backend,
    ports: usize,
) -> Result<BackendRun, BenchError> {
    let started = Instant::now();
    let servers = u8::try_from(args.endpoints.clamp(1, 249)).expect("clamped below 250");
    let topology = Topology::create(&format!("bi{}", std::process::id()), servers)?;
    let step_timeout = Duration::from_secs_f64(args.step_timeout);
    let addrs: Vec<SocketAddr> = topology
        .server_addrs()
        .into_iter()
        .map(|ip| SocketAddr::new(ip.into(), table::SERVER_PORT))
        .collect();
    let lifetime =
        step_timeout * 4 + Duration::from_secs_f64(args.duration) + Duration::from_secs(60);
    let _servers = topology.start_backends(exe, &addrs, lifetime)?;
    let mut run = BackendRun {
        backend,
        ports,
        steps: Vec::new(),
        latency: None,
        kernel_cpu_us_per_conn: None,
        wall_s: 0.0,
        skipped: None,
    };
    run.skipped = sync_steps(
        exe,
        &topology,
        backend,
        ports,
        args.endpoints,
        step_timeout,
        &mut run.steps,
    );
    // With a fake in place of IPVS nothing forwards: there is no latency to measure.
    if run.skipped.is_none() && !backend.fakes_ipvs() {
        let mut spec = LoadSpec::new(
            table::last_vip(ports),
            Scenario::ConnFixed,
            Duration::from_secs_f64(args.duration),
        );
        spec.rate = args.rate;
        let kernel_before = crate::procfs::kernel_cpu_ticks();
        let outcome = topology.run_load(exe, &spec);
        let kernel_ticks = crate::procfs::kernel_cpu_ticks()
            .zip(kernel_before)
            .map(|(after, before)| after.saturating_sub(before));
        match outcome {
            Ok(LoadOutcome::Rate(result)) => {
                run.kernel_cpu_us_per_conn = kernel_ticks.filter(|_| result.ops > 0).map(|ticks| {
                    let seconds = ticks as f64 / crate::procfs::clock_ticks_per_second() as f64;
                    seconds * 1e6 / result.ops as f64
                });
                run.latency = Some(result);
            }
            Ok(LoadOutcome::Bulk(_)) => {
                run.skipped = Some("latency: unexpected bulk result".to_owned())
            }
            Err(e) => run.skipped = Some(format!("latency load failed: {e}")),
        }
    }
    drop(topology);
    run.wall_s = started.elapsed().as_secs_f64();
    Ok(run)
}

/// Runs `bench ipvs-sync` in the node namespace, collecting its step lines; `Some(reason)` when
/// a step did not finish.
fn sync_steps(
    exe: &Path,
    topology: &Topology,
    backend: Backend,
    ports: usize,
    endpoints: usize,
    step_timeout: Duration,
    steps: &mut Vec<StepResult>,
) -> Option<String> {
    let mut command = topology.command(Role::Node, exe);
    command
        .args(["ipvs-sync", "--backend", backend.name()])
        .args([
            "--ports",
            &ports.to_string(),
            "--endpoints",
            &endpoints.to_string(),
        ])
        .env(
            "RUST_LOG",
            std::env::var("BENCH_SYNC_LOG").unwrap_or_else(|_| "warn".to_owned()),
        )
        .stdout(Stdio::piped());
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => return Some(format!("cannot start bench ipvs-sync: {e}")),
    };
    let Some(stdout) = child.stdout.take() else {
        let _ = child.kill();
        let _ = child.wait();
        return Some("no stdout from bench ipvs-sync".to_owned());
    };
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut skipped = None;
    for step in STEPS {
        match rx.recv_timeout(step_timeout) {
            Ok(line) => match serde_json::from_str::<StepResult>(&line) {
                Ok(result) => steps.push(result),
                Err(e) => {
                    skipped = Some(format!("{step:?}: unreadable result {line:?}: {e}"));
                    break;
                }
            },
            Err(mpsc::RecvTimeoutError::Timeout) => {
                skipped = Some(format!(
                    "{step:?} sync did not finish within the step timeout ({} s): killed, rest skipped",
                    step_timeout.as_secs_f64()
                ));
                break;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                skipped = Some(format!(
                    "{step:?} sync failed (bench ipvs-sync exited; its error is in the log)"
                ));
                break;
            }
        }
    }
    if skipped.is_some() {
        let _ = child.kill();
    }
    match child.wait() {
        Ok(status) if !status.success() && skipped.is_none() => {
            skipped = Some(format!("bench ipvs-sync exited with {status}"));
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "wait for bench ipvs-sync"),
    }
    let _ = reader.join();
    skipped
}
