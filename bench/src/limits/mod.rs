//! Issue #10's suite (`bench limits`): what the userspace backend's limits cost and what they
//! protect, measured through `svcproxy` as a user runs it (the release binary with a table file).
//!
//! 1. Memory per idle TCP connection, svcproxy and HAProxy beside it (fresh processes).
//! 2. Memory per UDP flow (svcproxy, a fresh process), with the flows, after they expired (what
//!    is kept), and after a second wave as large (whether the first wave's memory is reused).
//! 3. The connection rate at the descriptor limit: svcproxy under `prlimit --nofile=N:N`; two
//!    "hog" TCP services held open up to and past their limits (per service port, then global),
//!    then UDP flows past theirs, so the proxy holds nearly all its descriptors; meanwhile a
//!    third, unrelated service's new-connection rate and latency, against the same with no idle
//!    load (the failure: p50 14.5 s for the unrelated service once the proxy ran out of
//!    descriptors).
//!
//! `prlimit` (util-linux) sets the limit and then runs svcproxy in its own process, so the
//! harness needs no `unsafe` `pre_exec`; svcproxy may only raise its soft limit to the hard one,
//! which `N:N` pins.

mod markdown;
pub mod prom;
pub mod report;
mod svcproxy;
pub mod udp;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use backend_userspace::{ConnectionLimits, UserspaceConfig};

use crate::error::BenchError;
use crate::load;
use crate::procfs::{self, Machine};
use crate::proxy::{self, ProxySpec, RunningProxy, PROXY_IP};
use crate::report::SkippedProxy;
use crate::suite::{git_commit, WorkDir, BACKEND_IPS};
use crate::wire::Backends;

use self::report::{
    DerivedLimits, FdLimit, LimitsReport, LimitsSettings, Phase, TcpIdle, UdpFlows,
};
use self::svcproxy::{
    free_ports_on, free_udp_port_on, render_table, scenario_error, start_svcproxy, Svcproxy,
    TableService,
};

/// Pause between steps, so one step's closing connections do not load the next.
const SETTLE: Duration = Duration::from_millis(300);

/// The clients' address for UDP flows (each client socket its own port).
const UDP_CLIENT_IP: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// Service ports in the descriptor-limit table (for the limits' derivation: one listener each).
const FD_LIMIT_LISTENERS: usize = 4;

/// The suite's parameters.
#[derive(Debug, Clone)]
pub struct LimitsConfig {
    /// Shown in the title.
    pub label: String,
    /// A short run to check the pipeline.
    pub quick: bool,
    /// Connections (and flows) opened before the baseline reading and kept open.
    pub warmup: usize,
    /// Idle TCP connections measured.
    pub idle_connections: usize,
    /// UDP flows measured.
    pub udp_flows: usize,
    /// Longest wait for the UDP flows to expire (zero: do not wait).
    pub udp_expiry_wait: Duration,
    /// svcproxy's open-file limit in the descriptor-limit scenario.
    pub nofile: u64,
    /// Connections tried on each hog service.
    pub hog_attempts: usize,
    /// Length of each measurement of the other service.
    pub duration: Duration,
    /// New connections per second of the fixed-rate measurement.
    pub fixed_rate: u32,
    /// Closed-loop clients of the max-rate measurement and of the retrying hog.
    pub max_clients: usize,
    /// The svcproxy binary.
    pub svcproxy: PathBuf,
    /// The haproxy binary, measured beside svcproxy for idle TCP memory; `None`: not measured.
    pub haproxy: Option<PathBuf>,
    /// Which scenarios run, in their fixed order.
    pub scenarios: Vec<Scenario>,
}

/// The suite's scenarios (`--scenarios`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Memory per idle TCP connection.
    TcpIdle,
    /// Memory per UDP flow, and after the flows expired.
    Udp,
    /// The other service's connection rate at the descriptor limit.
    FdLimit,
}

impl Scenario {
    /// Every scenario, in run order.
    pub const ALL: [Scenario; 3] = [Scenario::TcpIdle, Scenario::Udp, Scenario::FdLimit];
}

impl LimitsConfig {
    /// The full run: about a minute, most of it waiting for the UDP flows to expire.
    pub fn full() -> LimitsConfig {
        LimitsConfig {
            label: "memory per connection and flow, rate at the descriptor limit".to_owned(),
            quick: false,
            warmup: 50,
            // Under the per-port limit svcproxy derives from a 20,000-descriptor limit (2,343).
            idle_connections: 2_000,
            udp_flows: 4_000,
            udp_expiry_wait: Duration::from_secs(45),
            nofile: 4_096,
            hog_attempts: 1_500,
            duration: Duration::from_secs(2),
            fixed_rate: 500,
            max_clients: 8,
            svcproxy: PathBuf::from("target/release/svcproxy"),
            haproxy: Some(PathBuf::from("haproxy")),
            scenarios: Scenario::ALL.to_vec(),
        }
    }

    /// A smoke run: a few seconds, no wait for the UDP flows to expire.
    pub fn quick() -> LimitsConfig {
        LimitsConfig {
            label: "quick smoke run".to_owned(),
            quick: true,
            warmup: 20,
            idle_connections: 200,
            udp_flows: 200,
            udp_expiry_wait: Duration::ZERO,
            nofile: 1_024,
            hog_attempts: 400,
            duration: Duration::from_millis(500),
            max_clients: 4,
            ..LimitsConfig::full()
        }
    }
}

/// Runs the three scenarios; one that fails is reported in `errors` and the others still run.
///
/// # Errors
///
/// [`BenchError::Io`] when the backends or the work directory cannot be set up.
pub async fn run_limits(config: &LimitsConfig) -> Result<LimitsReport, BenchError> {
    let date = procfs::utc_now_rfc3339();
    let ips: Vec<IpAddr> = BACKEND_IPS.iter().copied().map(IpAddr::V4).collect();
    let backends = Backends::start(&ips, 0).await?;
    let backend_addrs = backends.addrs().to_vec();
    let workdir = WorkDir::create()?;
    let mut errors = Vec::new();
    let mut skipped = Vec::new();

    let runs = |scenario| config.scenarios.contains(&scenario);
    let mut tcp_idle = Vec::new();
    if runs(Scenario::TcpIdle) {
        tcp_idle = measure_tcp_idle_each(
            config,
            &backend_addrs,
            &workdir.0,
            &mut errors,
            &mut skipped,
        )
        .await;
    }
    let mut udp = None;
    if runs(Scenario::Udp) {
        match measure_udp_flows(config, &backend_addrs, &workdir.0).await {
            Ok(measured) => udp = Some(measured),
            Err(e) => errors.push(format!("UDP flow memory: {e}")),
        }
    }
    let mut fd_limit = None;
    if runs(Scenario::FdLimit) {
        match measure_fd_limit(config, &backend_addrs, &workdir.0).await {
            Ok(measured) => fd_limit = Some(measured),
            Err(e) => errors.push(format!("rate at the descriptor limit: {e}")),
        }
    }
    tracing::info!(accepted = ?backends.accepted(), "backend connections accepted");
    Ok(LimitsReport {
        suite: "limits".to_owned(),
        label: config.label.clone(),
        date,
        machine: Machine::current(),
        git_commit: git_commit(),
        settings: LimitsSettings {
            quick: config.quick,
            warmup: config.warmup,
            idle_connections: config.idle_connections,
            udp_flows: config.udp_flows,
            udp_expiry_wait_s: config.udp_expiry_wait.as_secs_f64(),
            nofile: config.nofile,
            hog_attempts: config.hog_attempts,
            duration_s: config.duration.as_secs_f64(),
            fixed_rate: config.fixed_rate,
            max_clients: config.max_clients,
            svcproxy: format!("{} --services {{table}}", config.svcproxy.display()),
        },
        tcp_idle,
        udp,
        fd_limit,
        errors,
        skipped,
    })
}

/// Idle TCP memory of svcproxy and (unless left out) HAProxy, each freshly started with the
/// userspace suite's configuration and stopped after; a proxy that does not start is skipped.
async fn measure_tcp_idle_each(
    config: &LimitsConfig,
    backends: &[SocketAddr],
    workdir: &Path,
    errors: &mut Vec<String>,
    skipped: &mut Vec<SkippedProxy>,
) -> Vec<TcpIdle> {
    let mut specs = vec![ProxySpec::Svcproxy {
        program: config.svcproxy.clone(),
        args: proxy::SVCPROXY_ARGS
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
    }];
    if let Some(haproxy) = &config.haproxy {
        specs.push(ProxySpec::Haproxy {
            program: haproxy.clone(),
        });
    }
    let mut measured = Vec::new();
    for spec in specs {
        let name = spec.name().to_owned();
        match start(spec, backends, workdir).await {
            Ok(proxy) => match measure_tcp_idle(&proxy, config).await {
                Ok(idle) => measured.push(idle),
                Err(e) => errors.push(format!("idle TCP memory of {name}: {e}")),
            },
            Err(e) => {
                tracing::warn!(proxy = %name, error = %e, "proxy skipped");
                skipped.push(SkippedProxy {
                    name,
                    reason: e.to_string(),
                });
            }
        }
    }
    measured
}

/// Starts a proxy of the userspace suite's kinds off the runtime (it waits for the listener).
async fn start(
    spec: ProxySpec,
    backends: &[SocketAddr],
    workdir: &Path,
) -> Result<RunningProxy, BenchError> {
    let (backends, workdir) = (backends.to_vec(), workdir.to_owned());
    tokio::task::spawn_blocking(move || spec.start(&backends, &workdir))
        .await
        .map_err(|e| BenchError::io("start proxy", std::io::Error::other(e)))?
}

/// The proxy's memory with `idle_connections` open, on top of the warm-up ones.
async fn measure_tcp_idle(
    proxy: &RunningProxy,
    config: &LimitsConfig,
) -> Result<TcpIdle, BenchError> {
    let (target, name) = (proxy.listen(), proxy.name());
    let pid = proxy
        .pid()
        .ok_or_else(|| scenario_error("idle TCP", name, "no process"))?;
    tracing::info!(
        proxy = name,
        count = config.idle_connections,
        "idle TCP memory"
    );
    let (warm, _) = load::open_idle(target, config.warmup, Duration::from_secs(10)).await;
    tokio::time::sleep(SETTLE).await;
    let rss_base_kib = procfs::rss_kib(pid)?;
    let (open, failed) =
        load::open_idle(target, config.idle_connections, Duration::from_secs(30)).await;
    tokio::time::sleep(SETTLE).await;
    let rss_open_kib = procfs::rss_kib(pid)?;
    let opened = open.len();
    drop((open, warm));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_closed_kib = procfs::rss_kib(pid)?;
    if failed > 0 {
        tracing::warn!(proxy = name, failed, "idle connections that did not open");
    }
    Ok(TcpIdle {
        proxy: name.to_owned(),
        version: proxy.version().to_owned(),
        connections: config.idle_connections,
        opened,
        rss_base_kib,
        rss_open_kib,
        rss_closed_kib,
    })
}

/// svcproxy with one UDP service (and a TCP one to tell when it is ready): memory with the
/// flows, after they expired and after a second wave.
async fn measure_udp_flows(
    config: &LimitsConfig,
    backends: &[SocketAddr],
    workdir: &Path,
) -> Result<UdpFlows, BenchError> {
    let echo = udp::UdpEcho::start(IpAddr::V4(BACKEND_IPS[0]), 0).await?;
    let ready = proxy::free_port_on(PROXY_IP)?;
    let udp_port = free_udp_port_on(PROXY_IP)?;
    let table = render_table(&[
        TableService::new("default/ready", "tcp", ready.port(), backends),
        TableService::new("default/dns", "udp", udp_port, &[echo.addr()]),
    ]);
    let svcproxy = start_svcproxy(config, "svcproxy-udp", table, ready, None, workdir).await?;
    let pid = svcproxy.pid()?;
    let to = SocketAddr::new(IpAddr::from(PROXY_IP), udp_port);
    let held = |metrics| {
        prom::scrape(metrics)
            .ok()
            .and_then(|text| prom::sum(&text, "svcproxy_userspace_udp_flows_active", &[]))
    };
    let clients_ip = IpAddr::V4(UDP_CLIENT_IP);
    let clients = udp::clients(clients_ip, config.warmup + config.udp_flows)?;
    let (warm, measured) = clients.split_at(config.warmup);
    tracing::info!(flows = config.udp_flows, "UDP flow memory");
    udp::open_flows(to, warm, Duration::from_secs(10)).await;
    tokio::time::sleep(SETTLE).await;
    let rss_base_kib = procfs::rss_kib(pid)?;
    let answered = udp::open_flows(to, measured, Duration::from_secs(30)).await;
    let last_flow = Instant::now();
    tokio::time::sleep(SETTLE).await;
    let rss_with_kib = procfs::rss_kib(pid)?;
    let mut udp = UdpFlows {
        flows: config.udp_flows,
        answered,
        held: held(svcproxy.metrics),
        rss_base_kib,
        rss_with_kib,
        rss_expired_kib: None,
        expired_after_s: None,
        held_after_wait: None,
        rss_settled_kib: None,
        rss_second_wave_kib: None,
        second_wave_answered: None,
    };
    if config.udp_expiry_wait.is_zero() {
        return Ok(udp);
    }
    tracing::info!(
        wait_s = config.udp_expiry_wait.as_secs_f64(),
        "waiting for the flows to expire"
    );
    while last_flow.elapsed() < config.udp_expiry_wait {
        tokio::time::sleep(Duration::from_millis(500)).await;
        udp.held_after_wait = held(svcproxy.metrics);
        if udp.held_after_wait == Some(0.0) {
            udp.expired_after_s = Some(last_flow.elapsed().as_secs_f64());
            break;
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_expired_kib = procfs::rss_kib(pid)?;
    udp.rss_expired_kib = Some(rss_expired_kib);
    tokio::time::sleep(Duration::from_secs(report::SETTLED_AFTER_S)).await;
    udp.rss_settled_kib = Some(procfs::rss_kib(pid)?);
    udp.second_wave_answered = Some(udp::open_flows(to, measured, Duration::from_secs(30)).await);
    tokio::time::sleep(SETTLE).await;
    udp.rss_second_wave_kib = Some(procfs::rss_kib(pid)?);
    Ok(udp)
}

/// svcproxy under `prlimit --nofile=N:N` with two hog TCP services, a UDP one and the other:
/// the other's connection rate with no idle load, with hog-a held past its per-port limit (then
/// with its clients retrying), with both hogs held (the global limit), and with UDP flows past
/// their limit too.
async fn measure_fd_limit(
    config: &LimitsConfig,
    backends: &[SocketAddr],
    workdir: &Path,
) -> Result<FdLimit, BenchError> {
    let ports = free_ports_on(PROXY_IP, 3)?;
    let [hog_a, hog_b, other] = [ports[0], ports[1], ports[2]];
    let echo = udp::UdpEcho::start(IpAddr::V4(BACKEND_IPS[0]), 0).await?;
    let flood = SocketAddr::new(IpAddr::from(PROXY_IP), free_udp_port_on(PROXY_IP)?);
    let table = render_table(&[
        TableService::new("default/hog-a", "tcp", hog_a.port(), backends),
        TableService::new("default/hog-b", "tcp", hog_b.port(), backends),
        TableService::new("default/other", "tcp", other.port(), backends),
        TableService::new("default/flood", "udp", flood.port(), &[echo.addr()]),
    ]);
    let svcproxy = start_svcproxy(
        config,
        "svcproxy-nofile",
        table,
        other,
        Some(config.nofile),
        workdir,
    )
    .await?;
    let pid = svcproxy.pid()?;
    let nofile_read_back = procfs::open_file_limit_of(pid);
    let derived = ConnectionLimits::derive(
        &UserspaceConfig::default(),
        nofile_read_back.unwrap_or(config.nofile),
        FD_LIMIT_LISTENERS,
    );
    let limits = DerivedLimits {
        tcp: derived.tcp,
        tcp_per_port: derived.tcp_per_port,
        udp: derived.udp,
    };
    tracing::info!(nofile = ?nofile_read_back, ?limits, "svcproxy under a low open-file limit");
    let mut phases = Vec::new();
    let measure = |name: &str, held: usize, refused: u64, churn: Option<SocketAddr>| {
        measure_phase(
            config,
            &svcproxy,
            other,
            churn,
            (name.to_owned(), held, refused),
        )
    };
    phases.push(measure("no idle load", 0, 0, None).await?);

    let (held_a, refused_a) =
        load::open_idle(hog_a, config.hog_attempts, Duration::from_secs(30)).await;
    let held = held_a.len();
    phases.push(measure("hog-a held past its per-port limit", held, refused_a, None).await?);
    phases.push(
        measure(
            "hog-a held, its clients retrying",
            held,
            refused_a,
            Some(hog_a),
        )
        .await?,
    );
    let (held_b, refused_b) =
        load::open_idle(hog_b, config.hog_attempts, Duration::from_secs(30)).await;
    let held = held + held_b.len();
    phases.push(
        measure(
            "both hogs held (the global limit)",
            held,
            refused_a + refused_b,
            None,
        )
        .await?,
    );
    // UDP flows take the other half of the descriptors: past their limit too, the proxy holds
    // about as many descriptors as it ever will.
    let flood_clients = udp::clients(IpAddr::V4(UDP_CLIENT_IP), limits.udp + limits.udp / 10)?;
    let sent = udp::send_once(flood, &flood_clients).await;
    tracing::info!(sent, "UDP flows opened past their limit");
    phases.push(
        measure(
            "both hogs held, UDP flows past their limit",
            held,
            refused_a + refused_b,
            None,
        )
        .await?,
    );
    drop((held_a, held_b, flood_clients));
    Ok(FdLimit {
        nofile_read_back,
        limits,
        phases,
    })
}

/// The other service at a fixed rate, then at its max rate, with the hog's clients retrying
/// meanwhile when `churn` names it; the proxy's refusals and memory at the end.
async fn measure_phase(
    config: &LimitsConfig,
    svcproxy: &Svcproxy,
    other: SocketAddr,
    churn: Option<SocketAddr>,
    (name, hog_held, hog_refused): (String, usize, u64),
) -> Result<Phase, BenchError> {
    let pid = svcproxy.pid()?;
    tokio::time::sleep(SETTLE).await;
    tracing::info!(phase = %name, hog_held, hog_refused, "measuring the other service");
    let churn_for = config.duration * 2 + SETTLE;
    let churn = churn.map(|hog| {
        tokio::spawn(load::connections_max_rate(
            hog,
            config.max_clients,
            churn_for,
        ))
    });
    let fixed =
        load::connections_fixed_rate(other, config.fixed_rate, config.duration, 4_096).await;
    let max = load::connections_max_rate(other, config.max_clients, config.duration).await;
    let hog_churn = match churn {
        Some(task) => Some(
            task.await
                .map_err(|e| BenchError::io("hog clients", std::io::Error::other(e)))?,
        ),
        None => None,
    };
    let text = prom::scrape(svcproxy.metrics).ok();
    let read = |name: &str, labels: &[(&str, &str)]| {
        text.as_deref()
            .and_then(|text| prom::sum(text, name, labels))
    };
    let failed = "svcproxy_userspace_connections_failed_total";
    Ok(Phase {
        name,
        hog_held,
        hog_refused,
        hog_retrying: hog_churn.is_some(),
        fixed,
        max,
        hog_churn,
        refused_port_limit: read(failed, &[("reason", "service_port_limit")]),
        refused_global_limit: read(failed, &[("reason", "global_limit")]),
        accept_errors: read("svcproxy_userspace_accept_errors_total", &[]),
        rss_kib: procfs::rss_kib(pid).ok(),
        open_fds: procfs::open_fds(pid).ok(),
        udp_flows_held: read("svcproxy_userspace_udp_flows_active", &[]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quick_run_stays_small_and_skips_the_expiry_wait() {
        let (full, quick) = (LimitsConfig::full(), LimitsConfig::quick());
        assert!(quick.idle_connections < full.idle_connections);
        assert!(quick.udp_expiry_wait.is_zero() && !full.udp_expiry_wait.is_zero());
        // Past the per-port limit in both, so the hog is refused.
        for config in [full, quick] {
            let limits = ConnectionLimits::derive(
                &UserspaceConfig::default(),
                config.nofile,
                FD_LIMIT_LISTENERS,
            );
            assert!(
                config.hog_attempts > limits.tcp_per_port,
                "{config:?} {limits:?}"
            );
        }
    }
}
