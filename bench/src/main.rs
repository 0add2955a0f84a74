//! `bench`: the project's benchmark harness.
//!
//! It starts its own backends on loopback, puts each proxy under test in front of them, drives
//! the same client load through each in one run, and writes the results as JSON, a markdown
//! table with ratios against HAProxy, and an SVG chart (see `bench/README.md`).
//!
//! ```text
//! bench userspace [--svcproxy target/release/svcproxy] [--quick] [--out bench/results]
//! bench report bench/results/userspace-....json      # re-render the table and chart
//! bench limits [--quick]                             # memory per connection/flow, rate at the fd limit
//! bench first-sync [--sizes 1000,10000,50000]         # table file -> first sync through svcproxy
//! bench watch [--quick] [--services N]                # table edit -> applied: inotify vs polling
//! bench nftables [--quick] [--sizes 1,1000,10000]     # as root: nftables sync costs vs kube-proxy's layout
//! bench netns-selftest                               # as root: namespaces up, load through, down
//! bench serve --listen ADDR... / bench load --target ADDR --scenario ...   # building blocks
//! ```
#![forbid(unsafe_code)]

mod calibrate; // how much slower the IPVS VM is than the host
mod child; // a proxy under test as a child process with a log, killed on drop
mod error; // BenchError
mod first_sync; // issue #11: file -> first sync through svcproxy, YAML and JSON, by table size
mod iptables; // issue #4's suite: iptables sync costs and data path vs kube-proxy's layout
mod ipvs; // issue #5's suite: IPVS vs iptables by table size, in the VM
mod kube; // issue #14's figures: kube-svcproxy fed by a fake API server
mod limits; // issue #10's suite: memory per connection and flow, rate at the descriptor limit
mod load; // the load generator's scenarios
mod netns; // client/node/server namespaces for the kernel backends
mod nftables; // issue #13's suite: our nftables backend vs kube-proxy's nftables layout and iptables
mod procfs; // RSS and CPU time of a process, the machine
mod proxy; // proxies under test: direct, haproxy, svcproxy, an already-running one
mod report; // the run's JSON document
mod selftest; // `bench netns-selftest`
mod stats; // latency samples, percentiles
mod suite; // the userspace suite: every scenario against every proxy, one run
mod svg; // the chart
mod table; // the figures and the markdown table with ratios
mod watch; // issue #11's suite: table edit -> applied, inotify vs polling
mod wire; // the request/response protocol and the backend servers

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::error::BenchError;
use crate::proxy::ProxySpec;
use crate::report::{RunReport, SkippedProxy};
use crate::suite::SuiteConfig;

/// The benchmark harness.
#[derive(Debug, Parser)]
#[command(name = "bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// The userspace suite: direct vs HAProxy (TCP mode) vs svcproxy, same backends, one run.
    Userspace(UserspaceArgs),
    /// Issue #4's suite (as root): sync costs and data-path latency of our iptables layouts
    /// (tree, flat) and kube-proxy's, per N and variant, each in fresh namespaces.
    Iptables(IptablesArgs),
    /// Issue #10's suite: svcproxy's memory per idle TCP connection (HAProxy beside it) and per
    /// UDP flow, and one service's connection rate while others are held past their limits
    /// under a low open-file limit (`prlimit`).
    Limits(LimitsArgs),
    /// Issue #11: file -> first sync through svcproxy (`--dry-run`, and as root `--once` in a
    /// fresh namespace) for YAML and JSON tables of each size.
    FirstSync(first_sync::FirstSyncArgs),
    /// Re-renders the markdown table and SVG chart of a results JSON file.
    Report {
        /// The run's JSON file.
        json: PathBuf,
        /// Where to write (default: beside the JSON).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// As root: builds the client/node/server namespaces, runs backends and a short load inside
    /// them (re-executing this binary), checks the load got through, and removes everything.
    NetnsSelftest,
    /// Runs backend servers until killed or `--for` elapses; prints `listening ADDR` per server.
    Serve {
        /// Addresses to serve on (all must share a port if the port is 0).
        #[arg(long, required = true, num_args = 1..)]
        listen: Vec<SocketAddr>,
        /// Stop after this many seconds.
        #[arg(long = "for", default_value_t = 60.0)]
        for_secs: f64,
    },
    /// Runs one load scenario against an address and prints its result as JSON.
    Load(load::LoadSpec),
    /// As root, in the IPVS VM (scripts/bench-ipvs): IPVS vs iptables sync times and latency by N.
    Ipvs(ipvs::IpvsArgs),
    /// The VM's slowdown against the host: the same small workloads on each (run it under
    /// `unshare -n`: it adds and deletes an address on `lo`), or `--compare HOST GUEST`.
    Calibrate(calibrate::CalibrateArgs),
    /// `bench ipvs`'s node-namespace side: the three timed syncs, one JSON line each.
    #[command(hide = true)]
    IpvsSync(ipvs::node::SyncArgs),
    /// Issue #11's suite: how long an edit to svcproxy's table file (N services) takes to reach
    /// the dataplane, with inotify and with polling, on userspace and (as root, in a namespace)
    /// iptables.
    Watch(watch::WatchArgs),
    /// `bench watch`'s measuring side, run where the dataplane is: one JSON line of series.
    #[command(hide = true)]
    WatchRun(watch::run::RunArgs),
    /// Issue #13's suite (as root): cold full sync of our nftables backend (in process and
    /// through `nft -f`), kube-proxy's nftables layout and our iptables backend by N, each step
    /// in a fresh namespace; our partial syncs, restart and memory.
    Nftables(nftables::NftablesArgs),
    /// Issue #14's figures: kube-svcproxy fed by a fake API server with N Services x E
    /// endpoints: first sync, event-to-dataplane latency and memory per proxy mode.
    Kube(kube::KubeArgs),
    /// `bench nftables`'s namespace side: one contender's syncs, one JSON line each.
    #[command(hide = true)]
    NftablesSync(nftables::node::SyncArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ProxyName {
    Direct,
    Haproxy,
    Svcproxy,
}

#[derive(Debug, clap::Args)]
struct UserspaceArgs {
    /// The svcproxy binary; skipped (with a note in the report) if it does not exist.
    #[arg(long, default_value = "target/release/svcproxy")]
    svcproxy: PathBuf,
    /// svcproxy's arguments, split at spaces; `{table}` is the generated table file.
    #[arg(long, allow_hyphen_values = true, default_value = proxy::SVCPROXY_ARGS)]
    svcproxy_args: String,
    /// The haproxy binary.
    #[arg(long, default_value = "haproxy")]
    haproxy: PathBuf,
    /// Which proxies to measure, in order.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [ProxyName::Direct, ProxyName::Haproxy, ProxyName::Svcproxy])]
    proxies: Vec<ProxyName>,
    /// An already-running proxy to measure too: NAME=ADDR or NAME=ADDR/PID. It must forward to
    /// the harness's backends (127.0.0.2 and 127.0.0.3 on the port given by --backend-port).
    #[arg(long, value_parser = parse_running)]
    running: Vec<ProxySpec>,
    /// Where the results go.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
    /// A tiny smoke run (a few seconds per proxy).
    #[arg(long)]
    quick: bool,
    /// The run's label in titles.
    #[arg(long)]
    label: Option<String>,
    /// Seconds per rate scenario (overrides the preset).
    #[arg(long)]
    duration: Option<f64>,
    /// Rounds of the repeated scenarios (overrides the preset: 3 full, 1 quick); the report
    /// shows each scenario's median round.
    #[arg(long)]
    rounds: Option<usize>,
    /// The backends' port (0: any free port). Set it when measuring a --running proxy.
    #[arg(long, default_value_t = 0)]
    backend_port: u16,
}

#[derive(Debug, clap::Args)]
struct LimitsArgs {
    /// The svcproxy binary.
    #[arg(long, default_value = "target/release/svcproxy")]
    svcproxy: PathBuf,
    /// The haproxy binary, measured beside svcproxy for idle TCP memory.
    #[arg(long, default_value = "haproxy")]
    haproxy: PathBuf,
    /// Leave HAProxy out.
    #[arg(long)]
    no_haproxy: bool,
    /// Which scenarios to run.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = limits::Scenario::ALL)]
    scenarios: Vec<limits::Scenario>,
    /// Idle TCP connections measured (preset: 2,000 full, 200 quick).
    #[arg(long)]
    idle: Option<usize>,
    /// UDP flows measured (preset: 4,000 full, 200 quick).
    #[arg(long)]
    udp_flows: Option<usize>,
    /// Longest wait, in seconds, for the UDP flows to expire (svcproxy's UDP idle timeout is
    /// 30 s); 0 skips it (preset: 45 full, 0 quick).
    #[arg(long)]
    udp_expiry_wait: Option<f64>,
    /// svcproxy's open-file limit in the descriptor-limit scenario (preset: 4,096 full, 1,024
    /// quick).
    #[arg(long)]
    nofile: Option<u64>,
    /// Connections tried on each hog service (preset: 1,500 full, 400 quick).
    #[arg(long)]
    hog_attempts: Option<usize>,
    /// Seconds of each measurement of the other service (preset: 2 full, 0.5 quick).
    #[arg(long)]
    duration: Option<f64>,
    /// New connections per second to the other service in the fixed-rate measurement.
    #[arg(long)]
    rate: Option<u32>,
    /// A short smoke run.
    #[arg(long)]
    quick: bool,
    /// Where the results go.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
    /// The run's label in titles.
    #[arg(long)]
    label: Option<String>,
}

#[derive(Debug, clap::Args)]
struct IptablesArgs {
    /// Service port counts (each with --endpoints endpoints).
    #[arg(long, value_delimiter = ',')]
    sizes: Option<Vec<usize>>,
    /// iptables variants.
    #[arg(long, value_delimiter = ',', value_parser = parse_variant)]
    variants: Option<Vec<backend_iptables::apply::Variant>>,
    /// Layouts.
    #[arg(long, value_enum, value_delimiter = ',')]
    layouts: Option<Vec<iptables::inputs::Layout>>,
    /// Endpoints per service port (1-249).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u8).range(1..250))]
    endpoints: u8,
    /// Seconds a sync step may take; past that the restore is killed and the cell abandoned.
    #[arg(long)]
    restore_timeout: Option<f64>,
    /// Seconds per data-path scenario (overrides the preset: 3 full, 0.5 quick).
    #[arg(long)]
    duration: Option<f64>,
    /// New connections (and keep-alive requests) per second.
    #[arg(long, default_value_t = 1_000)]
    rate: u32,
    /// Data-path rounds per cell (overrides the preset: 3 full, 1 quick); the report shows the
    /// median round by p50.
    #[arg(long)]
    rounds: Option<usize>,
    /// Sizes 1 and 100 with short scenarios.
    #[arg(long)]
    quick: bool,
    /// Where the results go.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
    /// The run's label in titles.
    #[arg(long)]
    label: Option<String>,
}

fn parse_variant(text: &str) -> Result<backend_iptables::apply::Variant, String> {
    match text {
        "legacy" => Ok(backend_iptables::apply::Variant::Legacy),
        "nft" => Ok(backend_iptables::apply::Variant::Nft),
        other => Err(format!("{other}: expected legacy or nft")),
    }
}

fn parse_running(text: &str) -> Result<ProxySpec, String> {
    let (name, rest) = text.split_once('=').ok_or("expected NAME=ADDR[/PID]")?;
    let (addr, pid) = match rest.split_once('/') {
        Some((addr, pid)) => (
            addr,
            Some(pid.parse::<u32>().map_err(|e| format!("pid: {e}"))?),
        ),
        None => (rest, None),
    };
    Ok(ProxySpec::Running {
        name: name.to_owned(),
        listen: addr.parse().map_err(|e| format!("address {addr}: {e}"))?,
        pid,
    })
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("bench: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Cmd) -> Result<(), BenchError> {
    match command {
        Cmd::Userspace(args) => userspace(args).await,
        Cmd::Iptables(args) => {
            let config = iptables_config(&args);
            let report = tokio::task::spawn_blocking(move || iptables::run_iptables(&config))
                .await
                .map_err(|e| BenchError::io("iptables suite", std::io::Error::other(e)))??;
            for path in report.write(&args.out)? {
                println!("{}", path.display());
            }
            Ok(())
        }
        Cmd::FirstSync(args) => {
            run_suite("first-sync suite", move || {
                first_sync::run_first_sync(&args)
            })
            .await
        }
        Cmd::Limits(args) => {
            let report = limits::run_limits(&limits_config(&args)).await?;
            for path in report.write(&args.out)? {
                println!("{}", path.display());
            }
            Ok(())
        }
        Cmd::Report { json, out } => {
            let dir = out.unwrap_or_else(|| {
                json.parent()
                    .map_or_else(|| PathBuf::from("."), Path::to_owned)
            });
            let is_watch = json
                .file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with("watch-"));
            if is_watch {
                for path in watch::WatchReport::read(&json)?.write_rendered(&dir)? {
                    println!("{}", path.display());
                }
                return Ok(());
            }
            let is_limits = json
                .file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with("limits-"));
            if is_limits {
                for path in limits::report::LimitsReport::read(&json)?.write_rendered(&dir)? {
                    println!("{}", path.display());
                }
                return Ok(());
            }
            let is_nftables = json
                .file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with("nftables-"));
            if is_nftables {
                for path in nftables::report::NftablesReport::read(&json)?.write(&dir)? {
                    println!("{}", path.display());
                }
                return Ok(());
            }
            let is_iptables = json
                .file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with("iptables-"));
            if is_iptables {
                for path in iptables::report::IptablesReport::read(&json)?.write(&dir)? {
                    println!("{}", path.display());
                }
                return Ok(());
            }
            let run = RunReport::read(&json)?;
            for path in run.write_rendered(&dir)? {
                println!("{}", path.display());
            }
            Ok(())
        }
        Cmd::NetnsSelftest => selftest::netns_selftest(),
        Cmd::Ipvs(args) => {
            ipvs::run(&args).map(|paths| paths.iter().for_each(|p| println!("{}", p.display())))
        }
        Cmd::Calibrate(args) => calibrate::run(&args)
            .map(|paths| paths.iter().for_each(|p| println!("{}", p.display()))),
        Cmd::IpvsSync(args) => ipvs::node::run_sync(&args).await,
        Cmd::Watch(args) => {
            let out = args.out.clone();
            let report = tokio::task::spawn_blocking(move || watch::run_watch(&args))
                .await
                .map_err(|e| BenchError::io("watch suite", std::io::Error::other(e)))??;
            for path in report.write(&out)? {
                println!("{}", path.display());
            }
            Ok(())
        }
        Cmd::WatchRun(args) => watch::run::run(&args),
        Cmd::Nftables(args) => run_suite("nftables suite", move || nftables::run_cli(&args)).await,
        Cmd::NftablesSync(args) => nftables::node::run_sync(&args).await,
        Cmd::Kube(args) => run_suite("kube suite", move || kube::run_kube(&args)).await,
        Cmd::Serve { listen, for_secs } => serve(&listen, Duration::from_secs_f64(for_secs)).await,
        Cmd::Load(spec) => {
            let outcome = spec.run().await?;
            let json = serde_json::to_string(&outcome).map_err(|source| BenchError::Json {
                path: "<stdout>".into(),
                source,
            })?;
            println!("{json}");
            Ok(())
        }
    }
}

fn limits_config(args: &LimitsArgs) -> limits::LimitsConfig {
    let mut config = if args.quick {
        limits::LimitsConfig::quick()
    } else {
        limits::LimitsConfig::full()
    };
    config.svcproxy = args.svcproxy.clone();
    config.haproxy = (!args.no_haproxy).then(|| args.haproxy.clone());
    config.scenarios = args.scenarios.clone();
    if let Some(label) = &args.label {
        config.label = label.clone();
    }
    if let Some(idle) = args.idle {
        config.idle_connections = idle.max(1);
    }
    if let Some(flows) = args.udp_flows {
        config.udp_flows = flows.max(1);
    }
    if let Some(secs) = args.udp_expiry_wait {
        config.udp_expiry_wait = Duration::from_secs_f64(secs.clamp(0.0, 600.0));
    }
    if let Some(nofile) = args.nofile {
        config.nofile = nofile.max(128);
    }
    if let Some(attempts) = args.hog_attempts {
        config.hog_attempts = attempts.max(1);
    }
    if let Some(secs) = args.duration {
        config.duration = Duration::from_secs_f64(secs.clamp(0.1, 60.0));
    }
    if let Some(rate) = args.rate {
        config.fixed_rate = rate.max(1);
    }
    config
}

fn iptables_config(args: &IptablesArgs) -> iptables::IptablesConfig {
    let mut config = if args.quick {
        iptables::IptablesConfig::quick()
    } else {
        iptables::IptablesConfig::full()
    };
    if let Some(sizes) = &args.sizes {
        config.sizes = sizes.iter().copied().filter(|&n| n > 0).collect();
    }
    if let Some(variants) = &args.variants {
        config.variants = variants.clone();
    }
    if let Some(layouts) = &args.layouts {
        config.layouts = layouts.clone();
    }
    config.endpoints = usize::from(args.endpoints);
    if let Some(secs) = args.restore_timeout {
        config.restore_timeout = Duration::from_secs_f64(secs.max(0.1));
    }
    if let Some(secs) = args.duration {
        config.duration = Duration::from_secs_f64(secs.max(0.1));
    }
    config.rate = args.rate.max(1);
    if let Some(rounds) = args.rounds {
        config.rounds = rounds.max(1);
    }
    if let Some(label) = &args.label {
        config.label = label.clone();
    }
    config
}

async fn userspace(args: UserspaceArgs) -> Result<(), BenchError> {
    let mut config = if args.quick {
        SuiteConfig::quick()
    } else {
        SuiteConfig::full()
    };
    if let Some(label) = args.label {
        config.label = label;
    }
    config.backend_port = args.backend_port;
    if let Some(rounds) = args.rounds {
        config.rounds = rounds.max(1);
    }
    if let Some(secs) = args.duration {
        config.duration = Duration::from_secs_f64(secs);
    }
    let mut specs = Vec::new();
    let mut skipped = Vec::new();
    for name in &args.proxies {
        match name {
            ProxyName::Direct => specs.push(ProxySpec::Direct),
            ProxyName::Haproxy => specs.push(ProxySpec::Haproxy {
                program: args.haproxy.clone(),
            }),
            ProxyName::Svcproxy if args.svcproxy.is_file() => specs.push(ProxySpec::Svcproxy {
                program: args.svcproxy.clone(),
                args: args
                    .svcproxy_args
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect(),
            }),
            ProxyName::Svcproxy => {
                let reason = format!(
                    "binary {} not found (build it: cargo build --release -p examples --bin svcproxy, or pass --svcproxy PATH)",
                    args.svcproxy.display()
                );
                tracing::warn!(%reason, "svcproxy skipped");
                skipped.push(SkippedProxy {
                    name: "svcproxy".to_owned(),
                    reason,
                });
            }
        }
    }
    specs.extend(args.running);
    let report = suite::run_userspace(&specs, skipped, &config).await?;
    for path in report.write(&args.out)? {
        println!("{}", path.display());
    }
    Ok(())
}

/// Runs a blocking suite off the runtime and prints the paths of the files it wrote.
async fn run_suite(
    name: &'static str,
    suite: impl FnOnce() -> Result<Vec<PathBuf>, BenchError> + Send + 'static,
) -> Result<(), BenchError> {
    let paths = tokio::task::spawn_blocking(suite)
        .await
        .map_err(|e| BenchError::io(name, std::io::Error::other(e)))??;
    for path in paths {
        println!("{}", path.display());
    }
    Ok(())
}

async fn serve(listen: &[SocketAddr], duration: Duration) -> Result<(), BenchError> {
    let port = listen.first().map_or(0, SocketAddr::port);
    let ips: Vec<IpAddr> = listen.iter().map(SocketAddr::ip).collect();
    let backends = wire::Backends::start(&ips, port).await?;
    for addr in backends.addrs() {
        println!("listening {addr}");
    }
    // The parent reads these lines to know we are ready.
    use std::io::Write as _;
    std::io::stdout()
        .flush()
        .map_err(|e| BenchError::io("flush stdout", e))?;
    tokio::time::sleep(duration).await;
    Ok(())
}
