//! The userspace suite: the same backends, the same client and the same scenarios against each
//! proxy in turn, in one run (issue #3's comparison with HAProxy).

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use crate::error::BenchError;
use crate::load::{self, SMALL_MESSAGE};
use crate::procfs::{self, Machine};
use crate::proxy::{ProxySpec, RunningProxy};
use crate::report::{IdleResult, Measured, ProxyResult, Round, RunReport, Settings, SkippedProxy};
use crate::wire::Backends;

/// The backends' addresses: two loopback IPs on one port, as two endpoints of one service.
pub const BACKEND_IPS: [Ipv4Addr; 2] = [Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3)];

/// Pause between scenarios, so one's closing connections do not load the next.
const SETTLE: Duration = Duration::from_millis(300);

/// The suite's parameters.
#[derive(Debug, Clone)]
pub struct SuiteConfig {
    /// Shown in titles (`harness smoke run`...).
    pub label: String,
    /// A tiny run to check the pipeline.
    pub quick: bool,
    /// Length of each rate scenario.
    pub duration: Duration,
    /// Closed-loop clients for the max connection rate.
    pub conn_concurrency: usize,
    /// Connections per second for the fixed-rate latency.
    pub fixed_rate: u32,
    /// Keep-alive connections for the request rate.
    pub keepalive_connections: usize,
    /// Bytes of the bulk transfer.
    pub bulk_bytes: u64,
    /// Time limit of the bulk transfer.
    pub bulk_limit: Duration,
    /// Sequential requests for the added latency.
    pub ping_pong_count: u64,
    /// Idle connection counts for memory.
    pub idle_counts: Vec<usize>,
    /// The backends' port; 0 picks a free one.
    pub backend_port: u16,
    /// How often the scenarios after idle memory run; the report keeps each one's median round.
    pub rounds: usize,
}

impl SuiteConfig {
    /// The full suite: about 45 s per proxy (3 rounds of 3 s scenarios).
    pub fn full() -> SuiteConfig {
        SuiteConfig {
            label: "userspace vs haproxy".to_owned(),
            quick: false,
            duration: Duration::from_secs(3),
            conn_concurrency: 32,
            fixed_rate: 1_000,
            keepalive_connections: 32,
            bulk_bytes: 1 << 30,
            bulk_limit: Duration::from_secs(10),
            ping_pong_count: 5_000,
            idle_counts: vec![1_000, 5_000],
            backend_port: 0,
            rounds: 3,
        }
    }

    /// A smoke run: a few seconds per proxy.
    pub fn quick() -> SuiteConfig {
        SuiteConfig {
            label: "quick smoke run".to_owned(),
            quick: true,
            duration: Duration::from_millis(500),
            conn_concurrency: 8,
            fixed_rate: 1_000,
            keepalive_connections: 8,
            bulk_bytes: 64 << 20,
            bulk_limit: Duration::from_secs(2),
            ping_pong_count: 500,
            idle_counts: vec![200],
            backend_port: 0,
            rounds: 1,
        }
    }
}

/// Runs every scenario against each proxy in `specs` and returns the report. A proxy that
/// fails to start is reported as skipped, with its error; the others still run.
///
/// # Errors
///
/// [`BenchError::Io`] when the backends or the work directory cannot be set up.
pub async fn run_userspace(
    specs: &[ProxySpec],
    mut skipped: Vec<SkippedProxy>,
    config: &SuiteConfig,
) -> Result<RunReport, BenchError> {
    let date = procfs::utc_now_rfc3339();
    let ips: Vec<IpAddr> = BACKEND_IPS.iter().copied().map(IpAddr::V4).collect();
    let backends = Backends::start(&ips, config.backend_port).await?;
    let backend_addrs = backends.addrs().to_vec();
    let workdir = WorkDir::create()?;
    // The harness holds both ends of each idle connection (client and backend).
    let most_idle = config.idle_counts.iter().copied().max().unwrap_or(0) as u64;
    if let Some(limit) = procfs::open_file_limit() {
        if 2 * most_idle + 500 > limit {
            tracing::warn!(
                limit,
                most_idle,
                "open file limit too low for the idle scenario; raise it with ulimit -n"
            );
        }
    }
    tracing::info!(backends = ?backend_addrs, workdir = %workdir.0.display(), "backends ready");

    // All proxies run side by side, and each scenario runs against each proxy in turn: load
    // from other work on the machine then hits every proxy alike, within seconds.
    let mut running = Vec::new();
    for spec in specs {
        let start_spec = spec.clone();
        let addrs = backend_addrs.clone();
        let dir = workdir.0.clone();
        let started = tokio::task::spawn_blocking(move || start_spec.start(&addrs, &dir))
            .await
            .map_err(|e| BenchError::io("start proxy", std::io::Error::other(e)))?;
        match started {
            Ok(proxy) => {
                let result = empty_result(&proxy);
                running.push((proxy, result));
            }
            Err(e) => {
                tracing::warn!(proxy = spec.name(), error = %e, "proxy skipped");
                skipped.push(SkippedProxy {
                    name: spec.name().to_owned(),
                    reason: e.to_string(),
                });
            }
        }
    }
    // Memory first, on fresh processes: later scenarios fill allocator pools that idle
    // connections would then reuse, hiding their cost.
    for (proxy, result) in &mut running {
        run_step(Step::Idle, proxy, result, config).await;
    }
    // Rounds spread each proxy's measurements over the run, so a burst of outside load
    // lands in one round, and the median round leaves it out.
    let mut rounds: Vec<Vec<Round>> = vec![Vec::new(); running.len()];
    for round in 0..config.rounds.max(1) {
        tracing::info!(round, "round");
        interleaved_ping_pong(&mut running, config).await;
        for step in Step::AFTER_IDLE {
            for (proxy, result) in &mut running {
                run_step(step, proxy, result, config).await;
                tokio::time::sleep(SETTLE).await;
            }
        }
        for ((_, result), kept) in running.iter_mut().zip(&mut rounds) {
            kept.push(Round {
                conn_max: result.conn_max.take(),
                conn_fixed: result.conn_fixed.take(),
                keepalive: result.keepalive.take(),
                bulk: result.bulk.take(),
                ping_pong: result.ping_pong.take(),
            });
        }
    }
    for ((_, result), kept) in running.iter_mut().zip(rounds) {
        keep_medians(result, kept);
    }
    let mut proxies = Vec::new();
    for (mut proxy, mut result) in running {
        if !proxy.is_alive() {
            result
                .errors
                .push("the proxy process exited during the run".to_owned());
        }
        proxies.push(result);
    }
    tracing::info!(accepted = ?backends.accepted(), "backend connections accepted");

    Ok(RunReport {
        suite: "userspace".to_owned(),
        label: config.label.clone(),
        date,
        machine: Machine::current(),
        git_commit: git_commit(),
        settings: Settings {
            quick: config.quick,
            duration_s: config.duration.as_secs_f64(),
            conn_concurrency: config.conn_concurrency,
            fixed_rate: config.fixed_rate,
            keepalive_connections: config.keepalive_connections,
            bulk_bytes: config.bulk_bytes,
            bulk_limit_s: config.bulk_limit.as_secs_f64(),
            ping_pong_count: config.ping_pong_count,
            idle_counts: config.idle_counts.clone(),
            rounds: config.rounds.max(1),
            message_bytes: SMALL_MESSAGE,
            backends: backend_addrs.iter().map(ToString::to_string).collect(),
        },
        proxies,
        skipped,
    })
}

/// The scenarios, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    ConnFixed,
    ConnMax,
    Keepalive,
    Bulk,
    Idle,
}

impl Step {
    /// The scenarios run one proxy after another, after the idle memory and the interleaved
    /// latency.
    const AFTER_IDLE: [Step; 4] = [Step::ConnFixed, Step::ConnMax, Step::Keepalive, Step::Bulk];
}

/// The one-in-flight latency of every proxy, measured in alternation (so that the "added
/// latency over direct" compares figures taken under the same outside load).
async fn interleaved_ping_pong(running: &mut [(RunningProxy, ProxyResult)], config: &SuiteConfig) {
    const ROUNDS: u64 = 10;
    tracing::info!(proxies = running.len(), "interleaved ping-pong latency");
    let targets: Vec<_> = running.iter().map(|(proxy, _)| proxy.listen()).collect();
    let pids: Vec<_> = running.iter().map(|(proxy, _)| proxy.pid()).collect();
    let own = std::process::id();
    let cpu = |pid: Option<u32>| pid.and_then(|pid| procfs::cpu_time(pid).ok());
    let before: Vec<_> = pids.iter().map(|&pid| cpu(pid)).collect();
    let own_before = cpu(Some(own));
    let system_before = procfs::system_busy_time().ok();
    // Every proxy is idle while another is measured, so each one's CPU over the whole
    // interleaved scenario is its own share.
    let limit = config.duration.max(Duration::from_secs(1)) * targets.len().max(1) as u32;
    let results =
        load::ping_pong_interleaved(&targets, config.ping_pong_count, ROUNDS, limit).await;
    let harness_cpu_s = cpu(Some(own))
        .zip(own_before)
        .map(|(after, before)| after.saturating_sub(before).as_secs_f64());
    // The machine's busy time covers all proxies' rounds together: not split per proxy.
    let system_cpu_s = procfs::system_busy_time()
        .ok()
        .zip(system_before)
        .map(|(after, before)| after.saturating_sub(before).as_secs_f64());
    for (((_, result), rate), (pid, before)) in running
        .iter_mut()
        .zip(results)
        .zip(pids.into_iter().zip(before))
    {
        result.ping_pong = Some(Measured {
            result: rate,
            proxy_cpu_s: cpu(pid)
                .zip(before)
                .map(|(after, before)| after.saturating_sub(before).as_secs_f64()),
            harness_cpu_s,
            system_cpu_s,
        });
    }
    tokio::time::sleep(SETTLE).await;
}

fn empty_result(proxy: &RunningProxy) -> ProxyResult {
    ProxyResult {
        name: proxy.name().to_owned(),
        version: proxy.version().to_owned(),
        listen: proxy.listen().to_string(),
        config: proxy.config().to_owned(),
        conn_max: None,
        conn_fixed: None,
        keepalive: None,
        bulk: None,
        ping_pong: None,
        idle: Vec::new(),
        errors: Vec::new(),
        rounds: Vec::new(),
    }
}

/// Sets each scenario's figures to its median round (by the scenario's headline figure), and
/// keeps every round when there were several.
fn keep_medians(result: &mut ProxyResult, rounds: Vec<Round>) {
    let p50 = |r: &load::RateResult| r.latency.map(|l| l.p50_us);
    result.conn_max = median_by(rounds.iter().map(|r| &r.conn_max), |r| Some(r.ops_per_s));
    result.conn_fixed = median_by(rounds.iter().map(|r| &r.conn_fixed), p50);
    result.keepalive = median_by(rounds.iter().map(|r| &r.keepalive), |r| Some(r.ops_per_s));
    result.bulk = median_by(rounds.iter().map(|r| &r.bulk), |b| Some(b.mb_per_s));
    result.ping_pong = median_by(rounds.iter().map(|r| &r.ping_pong), p50);
    if rounds.len() > 1 {
        result.rounds = rounds;
    }
}

/// The measurement with the median key (the lower one of an even count); if none has a key,
/// the first measurement.
fn median_by<'a, T: Clone + 'a>(
    measurements: impl Iterator<Item = &'a Option<Measured<T>>>,
    key: impl Fn(&T) -> Option<f64>,
) -> Option<Measured<T>> {
    let present: Vec<&Measured<T>> = measurements.flatten().collect();
    let mut keyed: Vec<(f64, &Measured<T>)> = present
        .iter()
        .filter_map(|m| key(&m.result).map(|k| (k, *m)))
        .collect();
    keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
    keyed
        .get(keyed.len().saturating_sub(1) / 2)
        .map(|(_, m)| *m)
        .or_else(|| present.first().copied())
        .cloned()
}

/// One scenario against one proxy, with the CPU it cost.
async fn run_step(
    step: Step,
    proxy: &mut RunningProxy,
    result: &mut ProxyResult,
    config: &SuiteConfig,
) {
    let target = proxy.listen();
    let pid = proxy.pid();
    if !proxy.is_alive() {
        result
            .errors
            .push(format!("{step:?}: not run, the proxy process has exited"));
        return;
    }
    tracing::info!(proxy = %result.name, ?step, "measuring");
    match step {
        Step::ConnFixed => {
            let scenario =
                load::connections_fixed_rate(target, config.fixed_rate, config.duration, 4_096);
            result.conn_fixed = Some(with_cpu(pid, scenario).await);
        }
        Step::ConnMax => {
            let scenario =
                load::connections_max_rate(target, config.conn_concurrency, config.duration);
            result.conn_max = Some(with_cpu(pid, scenario).await);
        }
        Step::Keepalive => {
            let scenario =
                load::keepalive_requests(target, config.keepalive_connections, config.duration);
            result.keepalive = Some(with_cpu(pid, scenario).await);
        }
        Step::Bulk => {
            let bulk = with_cpu(
                pid,
                load::bulk(target, config.bulk_bytes, config.bulk_limit),
            )
            .await;
            match bulk.result {
                Ok(transfer) => {
                    result.bulk = Some(Measured {
                        result: transfer,
                        proxy_cpu_s: bulk.proxy_cpu_s,
                        harness_cpu_s: bulk.harness_cpu_s,
                        system_cpu_s: bulk.system_cpu_s,
                    });
                }
                Err(e) => result.errors.push(format!("bulk: {e}")),
            }
        }
        Step::Idle => {
            // Memory needs a process to read; `direct` has none.
            let Some(pid) = pid else { return };
            for &count in &config.idle_counts {
                match measure_idle(target, pid, count).await {
                    Ok(idle) => result.idle.push(idle),
                    Err(e) => result.errors.push(format!("idle {count}: {e}")),
                }
                tokio::time::sleep(SETTLE).await;
            }
        }
    }
}

/// Runs `scenario`, reading the proxy's, our own and the machine's CPU time around it.
async fn with_cpu<T>(
    pid: Option<u32>,
    scenario: impl std::future::Future<Output = T>,
) -> Measured<T> {
    let own = std::process::id();
    let proxy_before = pid.and_then(|pid| procfs::cpu_time(pid).ok());
    let own_before = procfs::cpu_time(own).ok();
    let system_before = procfs::system_busy_time().ok();
    let result = scenario.await;
    let system_cpu_s = procfs::system_busy_time()
        .ok()
        .zip(system_before)
        .map(|(after, before)| after.saturating_sub(before).as_secs_f64());
    let delta = |pid: u32, before: Option<Duration>| {
        let after = procfs::cpu_time(pid).ok()?;
        Some(after.saturating_sub(before?).as_secs_f64())
    };
    Measured {
        result,
        proxy_cpu_s: pid.and_then(|pid| delta(pid, proxy_before)),
        harness_cpu_s: delta(own, own_before),
        system_cpu_s,
    }
}

/// The proxy's memory before and with `count` idle connections open through it.
async fn measure_idle(
    target: std::net::SocketAddr,
    pid: u32,
    count: usize,
) -> Result<IdleResult, BenchError> {
    let before = procfs::rss_kib(pid)?;
    let (open, _failed) = load::open_idle(target, count, Duration::from_secs(20)).await;
    // Let the proxy finish its side of the last connections.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = procfs::rss_kib(pid)?;
    let opened = open.len();
    drop(open);
    Ok(IdleResult {
        connections: count,
        opened,
        rss_before_kib: before,
        rss_after_kib: after,
        kib_per_1000: if opened > 0 {
            after.saturating_sub(before) as f64 / opened as f64 * 1_000.0
        } else {
            0.0
        },
    })
}

/// `git rev-parse --short HEAD`, with `-dirty` when the tree has changes; `unknown` without git.
pub(crate) fn git_commit() -> String {
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    match run(&["rev-parse", "--short", "HEAD"]) {
        Some(commit) => match run(&["status", "--porcelain", "--untracked-files=no"]) {
            Some(status) if !status.is_empty() => format!("{commit}-dirty"),
            _ => commit,
        },
        None => "unknown".to_owned(),
    }
}

/// A scratch directory for generated configurations and proxy logs, removed on drop.
#[derive(Debug)]
pub(crate) struct WorkDir(pub(crate) PathBuf);

impl WorkDir {
    pub(crate) fn create() -> Result<WorkDir, BenchError> {
        let path = std::env::temp_dir().join(format!("bench-{}", std::process::id()));
        std::fs::create_dir_all(&path)
            .map_err(|e| BenchError::io(format!("create {}", path.display()), e))?;
        Ok(WorkDir(path))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            tracing::debug!(path = %self.0.display(), error = %e, "remove work directory");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(value: f64) -> Option<Measured<f64>> {
        Some(Measured {
            result: value,
            proxy_cpu_s: None,
            harness_cpu_s: None,
            system_cpu_s: None,
        })
    }

    #[test]
    fn median_of_three_is_the_middle_whatever_the_order() {
        let rounds = [measured(30.0), measured(10.0), measured(20.0)];
        let median = median_by(rounds.iter(), |v| Some(*v)).expect("three rounds");
        assert_eq!(median.result, 20.0);
    }

    #[test]
    fn median_of_two_is_the_lower_and_missing_rounds_are_skipped() {
        let rounds = [measured(30.0), None, measured(10.0)];
        let median = median_by(rounds.iter(), |v| Some(*v)).expect("two rounds");
        assert_eq!(median.result, 10.0);
    }

    #[test]
    fn without_keys_the_first_measurement_is_kept() {
        let rounds = [None, measured(5.0), measured(6.0)];
        let median = median_by(rounds.iter(), |_| None).expect("present");
        assert_eq!(median.result, 5.0);
        let none: [Option<Measured<f64>>; 0] = [];
        assert!(median_by(none.iter(), |v| Some(*v)).is_none());
    }
}
