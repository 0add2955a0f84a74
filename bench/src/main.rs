//! `bench`: the project's benchmark harness.
//!
//! It starts its own backends on loopback, puts each proxy under test in front of them, drives
//! the same client load through each in one run, and writes the results as JSON, a markdown
//! table with ratios against HAProxy, and an SVG chart (see `bench/README.md`).
//!
//! ```text
//! bench userspace [--svcproxy target/release/svcproxy] [--quick] [--out bench/results]
//! bench report bench/results/userspace-....json      # re-render the table and chart
//! bench netns-selftest                               # as root: namespaces up, load through, down
//! bench serve --listen ADDR... / bench load --target ADDR --scenario ...   # building blocks
//! ```
#![forbid(unsafe_code)]

mod error;
mod load;
mod netns;
mod procfs;
mod proxy;
mod report;
mod stats;
mod suite;
mod svg;
mod wire;

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
    Load {
        /// Where to connect.
        #[arg(long)]
        target: SocketAddr,
        /// Which scenario.
        #[arg(long, value_enum)]
        scenario: Scenario,
        /// Seconds (rate scenarios; the limit for bulk).
        #[arg(long, default_value_t = 1.0)]
        duration: f64,
        /// Concurrent clients (conn-max) or connections (keepalive).
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Connections per second (conn-fixed).
        #[arg(long, default_value_t = 1_000)]
        rate: u32,
        /// Bytes (bulk) or requests (ping-pong).
        #[arg(long, default_value_t = 1 << 30)]
        count: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    ConnMax,
    ConnFixed,
    Keepalive,
    Bulk,
    PingPong,
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
    /// Extra arguments for svcproxy, after `--services FILE` (repeat for each).
    #[arg(long = "svcproxy-arg", allow_hyphen_values = true)]
    svcproxy_args: Vec<String>,
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
    /// The backends' port (0: any free port). Set it when measuring a --running proxy.
    #[arg(long, default_value_t = 0)]
    backend_port: u16,
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
        Cmd::Report { json, out } => {
            let run = RunReport::read(&json)?;
            let dir = out.unwrap_or_else(|| {
                json.parent()
                    .map_or_else(|| PathBuf::from("."), Path::to_owned)
            });
            for path in run.write(&dir)? {
                println!("{}", path.display());
            }
            Ok(())
        }
        Cmd::NetnsSelftest => netns_selftest().await,
        Cmd::Serve { listen, for_secs } => serve(&listen, Duration::from_secs_f64(for_secs)).await,
        Cmd::Load {
            target,
            scenario,
            duration,
            concurrency,
            rate,
            count,
        } => {
            let duration = Duration::from_secs_f64(duration);
            let json = match scenario {
                Scenario::ConnMax => serde_json::to_string(
                    &load::connections_max_rate(target, concurrency, duration).await,
                ),
                Scenario::ConnFixed => serde_json::to_string(
                    &load::connections_fixed_rate(target, rate, duration, 4_096).await,
                ),
                Scenario::Keepalive => serde_json::to_string(
                    &load::keepalive_requests(target, concurrency, duration).await,
                ),
                Scenario::PingPong => {
                    serde_json::to_string(&load::ping_pong(target, count, duration).await)
                }
                Scenario::Bulk => {
                    serde_json::to_string(&load::bulk(target, count, duration).await?)
                }
            }
            .map_err(|source| BenchError::Json {
                path: "<stdout>".into(),
                source,
            })?;
            println!("{json}");
            Ok(())
        }
    }
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
                args: args.svcproxy_args.clone(),
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

/// Namespaces up, backends in the server namespace, a short load from the client namespace
/// (through the node's routing), namespaces down.
async fn netns_selftest() -> Result<(), BenchError> {
    use std::io::BufRead as _;
    use std::process::Stdio;

    if !netns::is_root() {
        return Err(BenchError::io(
            "netns-selftest",
            std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "needs root (ip netns add)",
            ),
        ));
    }
    let exe = std::env::current_exe().map_err(|e| BenchError::io("find own executable", e))?;
    let prefix = format!("bench{}", std::process::id());
    let topology = netns::Topology::create(&prefix, 2)?;
    let servers: Vec<String> = topology
        .server_addrs()
        .iter()
        .map(|ip| SocketAddr::from((*ip, 9000)).to_string())
        .collect();
    println!(
        "namespaces {prefix}-{{client,node,server}} up; servers {}",
        servers.join(", ")
    );

    let mut serve = topology.command(netns::Role::Server, &exe);
    serve
        .args(["serve", "--for", "30", "--listen"])
        .args(&servers)
        .stdout(Stdio::piped());
    let mut server = ChildGuard(serve.spawn().map_err(|source| BenchError::Spawn {
        program: "bench serve".to_owned(),
        source,
    })?);
    let stdout =
        server.0.stdout.take().ok_or_else(|| {
            BenchError::io("server stdout", std::io::ErrorKind::BrokenPipe.into())
        })?;
    let ready = tokio::task::spawn_blocking(move || {
        std::io::BufReader::new(stdout)
            .lines()
            .take(2)
            .filter_map(Result::ok)
            .count()
    })
    .await
    .map_err(|e| BenchError::io("wait for servers", std::io::Error::other(e)))?;
    if ready != servers.len() {
        return Err(BenchError::Scenario {
            scenario: "netns-selftest".to_owned(),
            proxy: "none".to_owned(),
            detail: format!("{ready} of {} servers came up", servers.len()),
        });
    }

    let forwarding = topology
        .command(netns::Role::Node, "sysctl")
        .args(["-n", "net.ipv4.ip_forward"])
        .output()
        .map_err(|source| BenchError::Spawn {
            program: "sysctl".to_owned(),
            source,
        })?;
    println!(
        "node ns forwarding: {}",
        String::from_utf8_lossy(&forwarding.stdout).trim()
    );

    let mut results = Vec::new();
    for target in &servers {
        let output = topology
            .command(netns::Role::Client, &exe)
            .args([
                "load",
                "--scenario",
                "conn-max",
                "--duration",
                "0.5",
                "--concurrency",
                "4",
                "--target",
                target,
            ])
            .output()
            .map_err(|source| BenchError::Spawn {
                program: "bench load".to_owned(),
                source,
            })?;
        let text = String::from_utf8_lossy(&output.stdout);
        let result: load::RateResult =
            serde_json::from_str(text.trim()).map_err(|source| BenchError::Json {
                path: format!("output of bench load in {prefix}-client").into(),
                source,
            })?;
        println!(
            "client ns -> {target}: {} connections ({:.0}/s), {} errors, p50 {:.0} µs",
            result.ops,
            result.ops_per_s,
            result.errors,
            result.latency.map_or(0.0, |l| l.p50_us)
        );
        results.push(result);
    }
    drop(server);
    drop(topology);
    let left: Vec<String> = netns::list_namespaces()?
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    let passed = results.iter().all(|r| r.ops > 0 && r.errors == 0) && left.is_empty();
    println!("namespaces removed: {}", left.is_empty());
    if passed {
        println!("netns-selftest: ok");
        Ok(())
    } else {
        Err(BenchError::Scenario {
            scenario: "netns-selftest".to_owned(),
            proxy: "none".to_owned(),
            detail: format!("results {results:?}, namespaces left {left:?}"),
        })
    }
}

/// Kills and reaps a child process on drop.
#[derive(Debug)]
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
