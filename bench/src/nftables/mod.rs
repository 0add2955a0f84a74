//! `bench nftables`: issue #13's benchmark. For each size N (service ports x 10 endpoints)
//! and each contender, in a **fresh** network namespace per step (its `Drop` removes it, on
//! every path):
//!
//! - `kube-proxy-nft`: kube-proxy's nftables layout ([`kube`]) loaded with `nft -f`;
//! - `ours-nft-cli`: our layout (`backend_nftables::plan::desired` + `plan` +
//!   `render_changes`) loaded with `nft -f`;
//! - `ours`: backend-nftables in process over netlink ([`node`]), a cold full sync, then
//!   one-endpoint changes and service adds (p50/p99 over the repetitions), restart and memory;
//! - `iptables`: `backend_iptables::IptablesDataplane`, a cold full sync.
//!
//! The CLI contenders are timed around `nft` (its user and system time from the shell's
//! `times`); the in-process ones run as `bench nftables-sync` in the namespace and report
//! their own figures. A step past `--step-timeout` is killed (its whole process group) and
//! reported as "> timeout". The pure halves are [`workload`] (the table) and [`kube`].

pub mod kube;
pub mod node;
pub mod report;
pub mod workload;

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::net::IpAddr;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::BenchError;
use crate::procfs::{self, Machine};

use self::node::{Driven, Line};
use self::report::{Cell, Full, Latency, NftablesReport, Settings};

/// The contenders, in report order (the first is the ratios' reference).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Contender {
    /// kube-proxy's nftables layout through `nft -f`.
    KubeProxyNft,
    /// Our layout through `nft -f`.
    OursNftCli,
    /// backend-nftables in process, over netlink.
    Ours,
    /// backend-iptables in process.
    Iptables,
}

impl Contender {
    /// Every contender, in report order.
    pub const ALL: [Contender; 4] = [
        Contender::KubeProxyNft,
        Contender::OursNftCli,
        Contender::Ours,
        Contender::Iptables,
    ];

    /// The name in reports.
    pub fn label(self) -> &'static str {
        match self {
            Contender::KubeProxyNft => "kube-proxy-nft",
            Contender::OursNftCli => "ours-nft-cli",
            Contender::Ours => "ours",
            Contender::Iptables => "iptables",
        }
    }
}

/// `bench nftables`'s options.
#[derive(Debug, Clone, clap::Args)]
pub struct NftablesArgs {
    /// Service port counts (each with --endpoints endpoints); default 1,1000,10000,50000.
    #[arg(long, value_delimiter = ',')]
    pub sizes: Option<Vec<usize>>,
    /// Endpoints per service port.
    #[arg(long, default_value_t = 10)]
    pub endpoints: usize,
    /// Contenders, in order (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub contenders: Option<Vec<Contender>>,
    /// Seconds one step may take; past that it is killed and reported as "> timeout"
    /// (default 300, quick 60).
    #[arg(long)]
    pub step_timeout: Option<f64>,
    /// Repetitions of each partial sync of `ours` (default 50, quick 10).
    #[arg(long)]
    pub repetitions: Option<usize>,
    /// Largest N kube-proxy's layout is loaded at (its load is quadratic: 10,000 x 10 takes
    /// minutes); larger sizes are reported as not run.
    #[arg(long)]
    pub kube_max: Option<usize>,
    /// Sizes 1 and 100, short timeout.
    #[arg(long)]
    pub quick: bool,
    /// Where the results go.
    #[arg(long, default_value = "bench/results")]
    pub out: std::path::PathBuf,
    /// The run's label in titles.
    #[arg(long)]
    pub label: Option<String>,
}

impl NftablesArgs {
    /// The run's configuration: the preset, then each option given.
    pub fn config(&self) -> NftablesConfig {
        let mut config = if self.quick {
            NftablesConfig::quick()
        } else {
            NftablesConfig::full()
        };
        if let Some(sizes) = &self.sizes {
            config.sizes = sizes.clone();
        }
        config.endpoints = self.endpoints.clamp(1, 1_000);
        if let Some(contenders) = &self.contenders {
            config.contenders = contenders.clone();
        }
        if let Some(secs) = self.step_timeout {
            config.step_timeout = Duration::from_secs_f64(secs.max(0.1));
        }
        if let Some(repetitions) = self.repetitions {
            config.repetitions = repetitions;
        }
        config.kube_max = self.kube_max;
        if let Some(label) = &self.label {
            config.label = label.clone();
        }
        config
    }
}

/// Runs the suite and writes its files; returns their paths.
///
/// # Errors
/// As [`run_nftables`], and when a file cannot be written.
pub fn run_cli(args: &NftablesArgs) -> Result<Vec<std::path::PathBuf>, BenchError> {
    run_nftables(&args.config())?.write(&args.out)
}

/// How a run is set up.
#[derive(Debug, Clone)]
pub struct NftablesConfig {
    /// Service port counts.
    pub sizes: Vec<usize>,
    /// Endpoints per service port.
    pub endpoints: usize,
    /// Contenders, in order.
    pub contenders: Vec<Contender>,
    /// Longest one step (one load, or one contender's in-process run) may take.
    pub step_timeout: Duration,
    /// Repetitions of each partial sync of `ours`.
    pub repetitions: usize,
    /// Largest N kube-proxy's layout is loaded at (above: "not run"); `None`: every size.
    pub kube_max: Option<usize>,
    /// Whether this is the `--quick` preset.
    pub quick: bool,
    /// The run's label.
    pub label: String,
}

impl NftablesConfig {
    /// The full suite: 1, 1,000, 10,000, 50,000 x 10, every contender, 300 s per step.
    pub fn full() -> Self {
        Self {
            sizes: vec![1, 1_000, 10_000, 50_000],
            endpoints: 10,
            contenders: Contender::ALL.to_vec(),
            step_timeout: Duration::from_secs(300),
            repetitions: 50,
            kube_max: None,
            quick: false,
            label: "nftables: ours vs kube-proxy's nftables layout and our iptables backend"
                .to_owned(),
        }
    }

    /// A smoke run: sizes 1 and 100, 60 s per step, 10 repetitions.
    pub fn quick() -> Self {
        Self {
            sizes: vec![1, 100],
            step_timeout: Duration::from_secs(60),
            repetitions: 10,
            quick: true,
            ..Self::full()
        }
    }
}

/// Runs the suite. Needs root (namespaces, nf_tables).
///
/// # Errors
/// [`BenchError::Scenario`] when not root or the binary cannot find itself; per-cell failures
/// are recorded in the report instead.
pub fn run_nftables(config: &NftablesConfig) -> Result<NftablesReport, BenchError> {
    let fail = |detail: String| BenchError::Scenario {
        scenario: "nftables".to_owned(),
        proxy: "setup".to_owned(),
        detail,
    };
    if !crate::netns::is_root() {
        return Err(fail(
            "needs root (network namespaces, nf_tables)".to_owned(),
        ));
    }
    let exe = std::env::current_exe().map_err(|e| BenchError::io("current exe", e))?;
    let date = procfs::utc_now_rfc3339();
    let mut cells = Vec::new();
    for &n in &config.sizes {
        if n == 0 || n > workload::MAX_PORTS {
            return Err(fail(format!(
                "size {n} outside 1..={}",
                workload::MAX_PORTS
            )));
        }
        let table = workload::table(n, config.endpoints);
        for &contender in &config.contenders {
            let cell = run_cell(&exe, config, n, contender, &table);
            tracing::info!(
                n,
                contender = contender.label(),
                outcome = %cell.outcome,
                seconds = cell.full.as_ref().map(|f| f.seconds),
                "cell done"
            );
            cells.push(cell);
        }
    }
    Ok(NftablesReport {
        suite: "nftables".to_owned(),
        label: config.label.clone(),
        date,
        machine: Machine::current(),
        git_commit: crate::suite::git_commit(),
        settings: Settings {
            quick: config.quick,
            sizes: config.sizes.clone(),
            endpoints: config.endpoints,
            contenders: config
                .contenders
                .iter()
                .map(|c| c.label().to_owned())
                .collect(),
            step_timeout_s: config.step_timeout.as_secs_f64(),
            repetitions: config.repetitions,
            kube_max: config.kube_max,
            nft_version: nft_version(),
        },
        cells,
    })
}

fn run_cell(
    exe: &Path,
    config: &NftablesConfig,
    n: usize,
    contender: Contender,
    table: &proxy_core::ServiceTable,
) -> Cell {
    let mut cell = Cell::new(n, contender.label());
    if contender == Contender::KubeProxyNft && config.kube_max.is_some_and(|max| n > max) {
        cell.outcome = format!("not run (--kube-max {})", config.kube_max.unwrap_or(0));
        return cell;
    }
    let name = format!("bnft{}-{n}-{}", std::process::id(), contender.label());
    let netns = match Netns::add(name) {
        Ok(netns) => netns,
        Err(e) => {
            cell.outcome = format!("failed: namespace: {e}");
            return cell;
        }
    };
    match contender {
        Contender::KubeProxyNft | Contender::OursNftCli => {
            let started = Instant::now();
            let (script, objects) = if contender == Contender::KubeProxyNft {
                let (script, counts) = kube::script(table, workload::CLUSTER_CIDR);
                let objects = format!(
                    "{} chains, {} rules, {} elements",
                    counts.chains, counts.rules, counts.elements
                );
                (script, objects)
            } else {
                let config = node::our_config();
                let desired =
                    backend_nftables::plan::desired(table, &config, &BTreeSet::<IpAddr>::new());
                let changes = backend_nftables::plan::plan(&desired, None, None);
                let script = backend_nftables::plan::render_changes(&config.table, &changes);
                (script, format!("{} changes", changes.len()))
            };
            cell.generate_s = Some(started.elapsed().as_secs_f64());
            cell.script_bytes = Some(script.len());
            cell.objects = Some(objects);
            match load_nft(&netns, &script, config.step_timeout) {
                Ok(full) => {
                    cell.full = Some(full);
                    cell.outcome = "ok".to_owned();
                }
                Err(e) => cell.outcome = e,
            }
        }
        Contender::Ours | Contender::Iptables => {
            let driven = if contender == Contender::Ours {
                Driven::Ours
            } else {
                Driven::Iptables
            };
            in_process(exe, config, &netns, n, driven, &mut cell);
        }
    }
    cell
}

/// Loads `script` with `nft -f -` in `netns`; the time is nft's start to exit.
fn load_nft(netns: &Netns, script: &str, timeout: Duration) -> Result<Full, String> {
    let mut command = Command::new("ip");
    command.args([
        "netns",
        "exec",
        &netns.name,
        "sh",
        "-c",
        // `times` prints the shell's and then its children's user and system time.
        "nft -f -; status=$?; times; exit $status",
    ]);
    let run = run_with_timeout(command, Some(script.to_owned()), timeout)?;
    if !run.success {
        return Err(format!("failed: nft: {}", run.stderr.trim()));
    }
    let (user_s, sys_s) = parse_times(&run.stdout).unzip();
    Ok(Full {
        seconds: run.elapsed.as_secs_f64(),
        user_s,
        sys_s,
        plan_s: None,
        written: None,
    })
}

/// `ip netns exec NS bench nftables-sync ...`: reads its lines until it exits or times out.
fn in_process(
    exe: &Path,
    config: &NftablesConfig,
    netns: &Netns,
    n: usize,
    driven: Driven,
    cell: &mut Cell,
) {
    let contender = match driven {
        Driven::Ours => "ours",
        Driven::Iptables => "iptables",
    };
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", &netns.name])
        .arg(exe)
        .args(["nftables-sync", "--contender", contender])
        .args(["--ports", &n.to_string()])
        .args(["--endpoints", &config.endpoints.to_string()])
        .args(["--repetitions", &config.repetitions.to_string()])
        .env("RUST_LOG", "warn");
    let run = match run_with_timeout(command, None, config.step_timeout) {
        Ok(run) => run,
        Err(e) => {
            cell.outcome = e;
            return;
        }
    };
    for text in run.stdout.lines() {
        let Ok(line) = serde_json::from_str::<Line>(text) else {
            continue;
        };
        match line {
            Line::Full {
                seconds,
                user_s,
                sys_s,
                plan_s,
                written,
            } => {
                cell.full = Some(Full {
                    seconds,
                    user_s: Some(user_s),
                    sys_s: Some(sys_s),
                    plan_s,
                    written: Some(written),
                });
            }
            Line::Partial {
                step,
                seconds,
                written,
            } => {
                let latency = Latency::of(&seconds, written);
                match step.as_str() {
                    "endpoint-move" => cell.endpoint_move = latency,
                    "endpoint-change" => cell.endpoint_change = latency,
                    _ => cell.service_add = latency,
                }
            }
            Line::Restart { seconds, written } => {
                cell.restart = Some(format!("{seconds:.3} s, {written} written"));
            }
            Line::NotMeasured { step, reason } => {
                if step == "restart" {
                    cell.restart = Some(format!("not measured: {reason}"));
                }
            }
            Line::Memory {
                at,
                rss_kib,
                hwm_kib,
            } => {
                if at == "after-full" {
                    cell.rss_after_full_kib = Some(rss_kib);
                } else if at == "end" {
                    cell.rss_kib = Some(rss_kib);
                    cell.hwm_kib = Some(hwm_kib);
                }
            }
        }
    }
    cell.outcome = if run.timed_out {
        timeout_text(config.step_timeout)
    } else if !run.success {
        format!("failed: {}", last_lines(&run.stderr, 3))
    } else if cell.full.is_none() {
        "failed: no full sync reported".to_owned()
    } else {
        "ok".to_owned()
    };
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// What a finished (or killed) child left.
#[derive(Debug)]
struct Run {
    elapsed: Duration,
    success: bool,
    timed_out: bool,
    stdout: String,
    stderr: String,
}

/// Runs `command` in its own process group with `input` on stdin; past `timeout` the whole
/// group is killed (`ip netns exec` execs its program, which may start others: `sh` runs
/// `nft`). A timeout with nothing printed is an `Err` ("> N s (killed)"); otherwise a `Run`
/// with `timed_out`, so the lines an in-process run printed still count.
fn run_with_timeout(
    mut command: Command,
    input: Option<String>,
    timeout: Duration,
) -> Result<Run, String> {
    command
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let started = Instant::now();
    let mut child = command.spawn().map_err(|e| format!("failed: spawn: {e}"))?;
    let stdin = child.stdin.take();
    let writer = std::thread::spawn(move || {
        if let (Some(mut stdin), Some(input)) = (stdin, input) {
            // A write error means the program exited early; its status says why.
            let _ = stdin.write_all(input.as_bytes());
        }
    });
    let stdout = read_all(child.stdout.take());
    let stderr = read_all(child.stderr.take());
    let deadline = started + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => break None,
            Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            Err(e) => return Err(format!("failed: wait: {e}")),
        }
    };
    let elapsed = started.elapsed();
    let timed_out = status.is_none();
    if timed_out {
        kill_group(&mut child);
    }
    let _ = writer.join();
    let stdout = stdout
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_default();
    let stderr = stderr
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_default();
    let run = Run {
        elapsed,
        success: status.is_some_and(|s| s.success()),
        timed_out,
        stdout,
        stderr,
    };
    if timed_out && run.stdout.is_empty() {
        return Err(timeout_text(timeout));
    }
    Ok(run)
}

/// A step killed at its timeout, as the report shows it.
fn timeout_text(timeout: Duration) -> String {
    format!("> {} s (timeout, killed)", timeout.as_secs_f64())
}

/// Reads a pipe to its end on a thread (so a full pipe never blocks the child or the clock).
fn read_all(pipe: Option<impl std::io::Read + Send + 'static>) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(pipe) = pipe {
            let _ = pipe.take(16 << 20).read_to_string(&mut text);
        }
        let _ = tx.send(text);
    });
    rx
}

/// Kills the child's process group (it leads it: `process_group(0)`), then reaps it.
fn kill_group(child: &mut Child) {
    use nix::sys::signal::{killpg, Signal};
    use nix::unistd::Pid;
    let group = i32::try_from(child.id()).map(Pid::from_raw);
    let killed = group.is_ok_and(|g| killpg(g, Signal::SIGKILL).is_ok());
    if !killed {
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// The children's (user, system) seconds from `times` output (its second line).
fn parse_times(stdout: &str) -> Option<(f64, f64)> {
    let line = stdout.lines().rev().find(|l| !l.trim().is_empty())?;
    let mut fields = line.split_whitespace().map(parse_minutes_seconds);
    Some((fields.next()??, fields.next()??))
}

/// `1m2.500000s` -> 62.5.
fn parse_minutes_seconds(text: &str) -> Option<f64> {
    let (minutes, rest) = text.split_once('m')?;
    let seconds = rest.strip_suffix('s')?;
    Some(minutes.parse::<f64>().ok()? * 60.0 + seconds.parse::<f64>().ok()?)
}

fn nft_version() -> String {
    Command::new("nft")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// One network namespace (`ip netns add`), deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Adds it.
    ///
    /// # Errors
    /// The `ip` command's failure.
    pub fn add(name: String) -> Result<Netns, String> {
        let output = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .map_err(|e| format!("spawn ip: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "ip netns add {name}: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(Netns { name })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let deleted = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status()
            .is_ok_and(|s| s.success());
        if !deleted {
            tracing::warn!(netns = %self.name, "cannot delete namespace");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_output_gives_the_childrens_user_and_system_seconds() {
        let out = "0m0.001000s 0m0.002000s\n1m2.500000s 0m3.250000s\n";
        assert_eq!(parse_times(out), Some((62.5, 3.25)));
        assert_eq!(parse_times("nothing"), None);
    }

    #[test]
    fn a_step_past_its_timeout_is_killed_with_its_children() {
        let mut command = Command::new("sh");
        command.args(["-c", "sleep 30; echo never"]);
        let started = Instant::now();
        let run = run_with_timeout(command, None, Duration::from_millis(300));
        assert_eq!(
            run.map(|r| r.stdout),
            Err("> 0.3 s (timeout, killed)".to_owned())
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn input_reaches_the_child_and_its_output_comes_back() {
        let mut command = Command::new("sh");
        command.args(["-c", "wc -l; echo oops >&2; exit 3"]);
        let run = run_with_timeout(command, Some("a\nb\n".to_owned()), Duration::from_secs(10))
            .expect("a run");
        assert!(!run.success && !run.timed_out);
        assert_eq!(run.stdout.trim(), "2");
        assert_eq!(run.stderr.trim(), "oops");
    }
}
