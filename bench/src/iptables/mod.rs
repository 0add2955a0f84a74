//! `bench iptables`: issue #4's benchmark. For each size N (service ports x 10 endpoints), each
//! iptables variant (legacy, nft) and each layout (ours with tree dispatch, ours flat,
//! kube-proxy's), in a fresh client/node/server topology:
//!
//! 1. sync costs: the cold full sync, one endpoint change and one service added, each timed as
//!    the backend runs it (one `iptables-restore -w 5 --noflush` per family, both tables in one
//!    input; kube-proxy's layout: its nat table), in the node namespace,
//!    with a per-step timeout after which the restore is killed and the cell abandoned;
//! 2. the data path: the hooks are added, backends start in the server namespace, and the
//!    client opens 1,000 connections/s (and, separately, sends 1,000 requests/s over keep-alive
//!    connections) to the last service port's VIP, through the node's rules;
//! 3. the report: JSON, markdown and SVG charts ([`report`]).
//!
//! The pure half (tables, restore inputs, rule walks) is [`inputs`].

pub mod inputs;
pub mod report;

use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use backend_iptables::apply::{CommandRunner, Variant};
use backend_iptables::rules::Family;

use crate::error::BenchError;
use crate::load::{LoadOutcome, LoadSpec, Scenario};
use crate::netns::{Role, Topology};
use crate::procfs::{self, Machine};

use self::inputs::{bench_table, target_vip, Inputs, Layout, Step, BACKEND_PORT, TARGET_PORT};
use self::report::{Cell, DataPath, IptablesReport, IptablesSettings, Round, StepResult};

/// How a run is set up.
#[derive(Debug, Clone)]
pub struct IptablesConfig {
    /// Service port counts.
    pub sizes: Vec<usize>,
    /// Endpoints per service port (the target's are real backends; at most 249).
    pub endpoints: usize,
    /// iptables variants.
    pub variants: Vec<Variant>,
    /// Layouts, in order.
    pub layouts: Vec<Layout>,
    /// Longest a sync step may take.
    pub restore_timeout: Duration,
    /// Seconds of each data-path scenario.
    pub duration: Duration,
    /// Connections (or requests) per second.
    pub rate: u32,
    /// Keep-alive connections of the request scenario.
    pub keepalive_connections: usize,
    /// Data-path rounds per cell; the report shows each scenario's median round (by p50).
    pub rounds: usize,
    /// Whether this is the `--quick` preset.
    pub quick: bool,
    /// The run's label.
    pub label: String,
}

impl IptablesConfig {
    /// The full suite: 1, 100, 1,000, 10,000 x 10, both variants, 3 s per scenario.
    pub fn full() -> Self {
        Self {
            sizes: vec![1, 100, 1_000, 10_000],
            endpoints: 10,
            variants: vec![Variant::Legacy, Variant::Nft],
            layouts: vec![Layout::Tree, Layout::Flat, Layout::Kube],
            restore_timeout: Duration::from_secs(120),
            duration: Duration::from_secs(3),
            rate: 1_000,
            keepalive_connections: 16,
            rounds: 3,
            quick: false,
            label: "iptables: ours (tree, flat) vs kube-proxy's layout".to_owned(),
        }
    }

    /// A smoke run: sizes 1 and 100, 0.5 s per scenario, 30 s restore timeout.
    pub fn quick() -> Self {
        Self {
            sizes: vec![1, 100],
            restore_timeout: Duration::from_secs(30),
            duration: Duration::from_millis(500),
            rounds: 1,
            quick: true,
            ..Self::full()
        }
    }
}

/// A variant's name in reports.
pub fn variant_name(variant: Variant) -> String {
    variant.to_string()
}

/// Runs the suite. Needs root (namespaces, iptables).
///
/// # Errors
/// [`BenchError::Scenario`] when not root or a binary is missing; per-cell failures are recorded
/// in the report instead.
pub fn run_iptables(config: &IptablesConfig) -> Result<IptablesReport, BenchError> {
    let fail = |detail: String| BenchError::Scenario {
        scenario: "iptables".to_owned(),
        proxy: "setup".to_owned(),
        detail,
    };
    if !crate::netns::is_root() {
        return Err(fail("needs root (network namespaces, iptables)".to_owned()));
    }
    let exe = std::env::current_exe().map_err(|e| BenchError::io("current exe", e))?;
    let date = procfs::utc_now_rfc3339();
    let mut cells = Vec::new();
    for &n in &config.sizes {
        let table = bench_table(n, config.endpoints);
        for &layout in &config.layouts {
            let started = Instant::now();
            let inputs = inputs::inputs(&table, layout);
            tracing::info!(
                n,
                layout = layout.label(),
                planned_s = started.elapsed().as_secs_f64(),
                bytes = inputs.full.bytes(),
                "planned"
            );
            for &variant in &config.variants {
                let cell = run_cell(&exe, config, n, variant, layout, &inputs);
                tracing::info!(
                    n,
                    %variant,
                    layout = layout.label(),
                    full = %cell.full.display(),
                    endpoint_change = %cell.endpoint_change.display(),
                    "cell done"
                );
                cells.push(cell);
            }
        }
    }
    Ok(IptablesReport {
        suite: "iptables".to_owned(),
        label: config.label.clone(),
        date,
        machine: Machine::current(),
        git_commit: crate::suite::git_commit(),
        settings: IptablesSettings {
            quick: config.quick,
            sizes: config.sizes.clone(),
            endpoints: config.endpoints,
            variants: config.variants.iter().map(|v| variant_name(*v)).collect(),
            restore_timeout_s: config.restore_timeout.as_secs_f64(),
            duration_s: config.duration.as_secs_f64(),
            rate: config.rate,
            keepalive_connections: config.keepalive_connections,
            rounds: config.rounds,
            target: format!("the last service port, 198.19.192.1 + N - 1 port {TARGET_PORT} ({} at the largest N)", target_vip(config.sizes.iter().copied().max().unwrap_or(1))),
        },
        cells,
    })
}

fn run_cell(
    exe: &Path,
    config: &IptablesConfig,
    n: usize,
    variant: Variant,
    layout: Layout,
    inputs: &Inputs,
) -> Cell {
    let mut cell = Cell {
        n,
        variant: variant_name(variant),
        layout,
        full: StepResult::planned(&inputs.full),
        endpoint_change: StepResult::planned(&inputs.endpoint_change),
        service_added: StepResult::planned(&inputs.service_added),
        walk: inputs.walk.clone(),
        conn: None,
        keepalive: None,
        rounds: Vec::new(),
        error: None,
    };
    let prefix = format!("bi{}-{n}-{variant}-{layout:?}", std::process::id()).to_lowercase();
    let endpoints = u8::try_from(config.endpoints).unwrap_or(249);
    // Dropped at the end of this function, on every path: the namespaces go with it.
    let topology = match Topology::create(&prefix, endpoints) {
        Ok(topology) => topology,
        Err(e) => {
            cell.error = Some(format!("topology: {e}"));
            return cell;
        }
    };
    let runner = CommandRunner::new(variant).with_prefix(vec![
        "ip".to_owned(),
        "netns".to_owned(),
        "exec".to_owned(),
        topology.name(Role::Node).to_owned(),
    ]);
    let argv = runner.command(Family::V4);
    let steps = [&inputs.full, &inputs.endpoint_change, &inputs.service_added];
    for (i, step) in steps.into_iter().enumerate() {
        let result = timed_step(&argv, step, config.restore_timeout);
        let failed = result.seconds.is_none();
        let outcome = result.outcome.clone();
        match i {
            0 => cell.full = result,
            1 => cell.endpoint_change = result,
            _ => cell.service_added = result,
        }
        if failed {
            cell.error = Some(format!(
                "sync step {}; the rest of the cell is skipped",
                outcome
            ));
            return cell;
        }
    }
    if let Err(e) = restore(&argv, &inputs.hooks, config.restore_timeout) {
        cell.error = Some(format!("hooks: {e}"));
        return cell;
    }
    match data_path(exe, config, &topology, n) {
        Ok(rounds) => {
            cell.conn = report::median_by_p50(rounds.iter().map(|r| &r.conn));
            cell.keepalive = report::median_by_p50(rounds.iter().map(|r| &r.keepalive));
            cell.rounds = rounds;
        }
        Err(e) => cell.error = Some(format!("data path: {e}")),
    }
    cell
}

/// Runs every restore of a step in order; the time is the sum, the timeout covers the step.
fn timed_step(argv: &[String], step: &Step, timeout: Duration) -> StepResult {
    let mut result = StepResult::planned(step);
    let mut total = Duration::ZERO;
    for input in &step.inputs {
        match restore(argv, input, timeout.saturating_sub(total)) {
            Ok(took) => total += took,
            Err(RestoreError::TimedOut) => {
                result.outcome = format!("> {} s (killed)", timeout.as_secs());
                return result;
            }
            Err(e) => {
                result.outcome = format!("failed: {e}");
                return result;
            }
        }
    }
    result.seconds = Some(total.as_secs_f64());
    result.outcome = "ok".to_owned();
    result
}

/// Why a restore did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// It ran past its time and was killed.
    #[error("timed out (killed)")]
    TimedOut,
    /// It could not be started or waited for.
    #[error("{0}")]
    Io(String),
    /// It exited with an error.
    #[error("exit {status}: {stderr}")]
    Failed {
        /// The exit status.
        status: std::process::ExitStatus,
        /// Its standard error (the first 2,000 bytes).
        stderr: String,
    },
}

/// Feeds `input` to `argv` (the backend's restore command line) and waits at most `timeout`;
/// kills it past that. Returns the wall time from start to exit.
fn restore(argv: &[String], input: &str, timeout: Duration) -> Result<Duration, RestoreError> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| RestoreError::Io("empty command".to_owned()))?;
    let started = Instant::now();
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| RestoreError::Io(format!("spawn {program}: {e}")))?;
    let stdin = child.stdin.take();
    let stderr = child.stderr.take();
    let input = input.to_owned();
    // Writer and reader threads, so a full pipe on either side never blocks the clock.
    let writer = std::thread::spawn(move || {
        if let Some(mut stdin) = stdin {
            // A write error means the tool exited early; its status says why.
            let _ = stdin.write_all(input.as_bytes());
        }
    });
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(stderr) = stderr {
            let _ = stderr.take(1 << 20).read_to_string(&mut text);
        }
        text
    });
    let deadline = started + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => break None,
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(RestoreError::Io(format!("wait: {e}"))),
        }
    };
    let took = started.elapsed();
    let Some(status) = status else {
        // `ip netns exec` execs the tool: this is the restore itself.
        let _ = child.kill();
        let _ = child.wait();
        let _ = writer.join();
        let _ = reader.join();
        return Err(RestoreError::TimedOut);
    };
    let _ = writer.join();
    let stderr = reader.join().unwrap_or_default();
    if status.success() {
        Ok(took)
    } else {
        Err(RestoreError::Failed {
            status,
            stderr: stderr.chars().take(2_000).collect(),
        })
    }
}

/// Backends up, a short warm-up, then the two fixed-rate scenarios, each with the machine's
/// busy and softirq CPU time around it.
fn data_path(
    exe: &Path,
    config: &IptablesConfig,
    topology: &Topology,
    n: usize,
) -> Result<Vec<Round>, BenchError> {
    let addrs: Vec<SocketAddr> = topology
        .server_addrs()
        .into_iter()
        .map(|ip| SocketAddr::new(ip.into(), BACKEND_PORT))
        .collect();
    let lifetime =
        config.duration * (2 * config.rounds.max(1) as u32 + 2) + Duration::from_secs(30);
    let _backends = topology.start_backends(exe, &addrs, lifetime)?;
    let target = SocketAddr::new(target_vip(n).into(), TARGET_PORT);
    let mut warm = LoadSpec::new(target, Scenario::ConnFixed, Duration::from_millis(300));
    warm.rate = config.rate;
    topology.run_load(exe, &warm)?;

    let mut conn = LoadSpec::new(target, Scenario::ConnFixed, config.duration);
    conn.rate = config.rate;
    let mut keepalive = LoadSpec::new(target, Scenario::ReqFixed, config.duration);
    keepalive.rate = config.rate;
    keepalive.concurrency = config.keepalive_connections;
    (0..config.rounds.max(1))
        .map(|_| {
            Ok(Round {
                conn: measure(exe, topology, &conn)?,
                keepalive: measure(exe, topology, &keepalive)?,
            })
        })
        .collect()
}

fn measure(exe: &Path, topology: &Topology, spec: &LoadSpec) -> Result<DataPath, BenchError> {
    let busy = procfs::system_busy_time().ok();
    let softirq = softirq_time();
    let outcome = topology.run_load(exe, spec)?;
    let busy_after = procfs::system_busy_time().ok();
    let softirq_after = softirq_time();
    let LoadOutcome::Rate(result) = outcome else {
        return Err(BenchError::Scenario {
            scenario: format!("{:?}", spec.scenario),
            proxy: "iptables".to_owned(),
            detail: "not a rate result".to_owned(),
        });
    };
    let diff = |a: Option<Duration>, b: Option<Duration>| {
        a.zip(b).map(|(a, b)| b.saturating_sub(a).as_secs_f64())
    };
    Ok(DataPath {
        result,
        system_cpu_s: diff(busy, busy_after),
        softirq_cpu_s: diff(softirq, softirq_after),
    })
}

/// The machine's softirq time (the 7th field of `/proc/stat`'s `cpu` line): where a kernel
/// dataplane's packet work is charged.
fn softirq_time() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks = parse_softirq_ticks(&text)?;
    Some(Duration::from_secs_f64(
        ticks as f64 / procfs::clock_ticks_per_second() as f64,
    ))
}

fn parse_softirq_ticks(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|line| line.starts_with("cpu "))?;
    line.split_whitespace().nth(7)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softirq_is_the_seventh_cpu_field() {
        let stat = "cpu  10 20 30 400 50 60 77 80 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        assert_eq!(parse_softirq_ticks(stat), Some(77));
        assert_eq!(parse_softirq_ticks("intr 1 2"), None);
    }

    #[test]
    fn a_restore_past_its_timeout_is_killed() {
        let argv = ["sleep".to_owned(), "5".to_owned()];
        let started = Instant::now();
        let result = restore(&argv, "", Duration::from_millis(200));
        assert!(matches!(result, Err(RestoreError::TimedOut)), "{result:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn a_failing_restore_reports_its_stderr() {
        let argv = [
            "sh".to_owned(),
            "-c".to_owned(),
            "cat >/dev/null; echo bad line 3 >&2; exit 2".to_owned(),
        ];
        match restore(&argv, "input\n", Duration::from_secs(5)) {
            Err(RestoreError::Failed { stderr, .. }) => assert!(stderr.contains("bad line 3")),
            other => panic!("expected a failure, got {other:?}"),
        }
        let ok = ["cat".to_owned()];
        assert!(restore(&ok, "x", Duration::from_secs(5)).is_ok());
    }
}
