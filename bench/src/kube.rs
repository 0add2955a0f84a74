//! Issue #14's figures (`bench kube`): the release `kube-svcproxy` fed by the fake API server
//! (`testkit::kubeapi`, the real list/watch protocol over HTTP) with N Services, N
//! EndpointSlices of E endpoints each, and the Node, on each proxy mode:
//!
//! - **first sync**: from the process's start to the end of its first sync of the whole table
//!   (`/healthz` `lastUpdated` set and `svcproxy_sync_service_ports` = N): the three lists
//!   (paged, 500 objects a page, as kube-runtime asks), the decoding, the tracker, the sync;
//! - **event to dataplane**: one EndpointSlice changed (one endpoint moved) at a time, from the
//!   moment the fake API server takes the change to the end of the sync that applied it
//!   (`kubeproxy_sync_proxy_rules_endpoint_changes_total` moved and `lastUpdated` later than the
//!   change), p50 / p99 / max over `--changes`; changes 1.1 s apart, past the sync loop's
//!   one-second minimum period, so each is one sync;
//! - **memory**: the process's RSS after the first sync and after the changes.
//!
//! userspace runs on the host's loopback (no root); iptables (the system's variant, and
//! iptables-legacy) and nftables each in a fresh network namespace (root), with the fake API
//! server listening inside it.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use testkit::kubeapi::{FakeApiServer, Resource};
use testkit::netns::Netns;

use crate::child::ProxyProcess;
use crate::error::BenchError;
use crate::limits::prom;
use crate::procfs::{self, Machine};
use crate::report::{run_stem, write_file, write_json};
use crate::suite::git_commit;

/// The longest a first sync may take.
const START_TIMEOUT: Duration = Duration::from_secs(300);
/// The longest one change may take to apply before it counts as a timeout.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// Past the sync loop's minimum period: each change is its own sync.
const GAP: Duration = Duration::from_millis(1_100);

/// The proxy modes measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// In-process L4 proxy on loopback (no root).
    Userspace,
    /// iptables rules in a network namespace (root), with the system's `iptables` (on Debian
    /// 12: the nft variant).
    Iptables,
    /// The same with iptables-legacy.
    IptablesLegacy,
    /// nf_tables over netlink in a network namespace (root).
    Nftables,
    /// IPVS in a network namespace (root, a kernel with IPVS: the VM of `scripts/vm-test`).
    Ipvs,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Userspace => "userspace",
            Mode::Iptables => "iptables",
            Mode::IptablesLegacy => "iptables-legacy",
            Mode::Nftables => "nftables",
            Mode::Ipvs => "ipvs",
        }
    }

    /// kube-svcproxy's `--proxy-mode`.
    fn proxy_mode(self) -> &'static str {
        match self {
            Mode::IptablesLegacy => "iptables",
            other => other.name(),
        }
    }
}

/// `bench kube`'s flags.
#[derive(Debug, clap::Args)]
pub struct KubeArgs {
    /// The kube-svcproxy binary.
    #[arg(long, default_value = "target/release/kube-svcproxy")]
    pub kube_svcproxy: PathBuf,
    /// Numbers of Services (one port each).
    #[arg(long, value_delimiter = ',', default_values_t = [10_000u32])]
    pub sizes: Vec<u32>,
    /// Endpoints per Service.
    #[arg(long, default_value_t = 10)]
    pub endpoints: u32,
    /// Proxy modes, in run order (`ipvs` only where the kernel has IPVS: run it in the VM,
    /// `scripts/vm/run-in-vm`).
    #[arg(long, value_enum, value_delimiter = ',',
          default_values_t = [Mode::Userspace, Mode::Iptables, Mode::IptablesLegacy, Mode::Nftables])]
    pub modes: Vec<Mode>,
    /// EndpointSlice changes timed per mode.
    #[arg(long, default_value_t = 30)]
    pub changes: u32,
    /// Where the results go.
    #[arg(long, default_value = "bench/results")]
    pub out: PathBuf,
}

/// One mode at one size.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KubeRow {
    /// The proxy mode.
    pub mode: Mode,
    /// Services (and EndpointSlices).
    pub services: u32,
    /// Endpoints per slice.
    pub endpoints: u32,
    /// Start to the end of the first complete sync, seconds.
    pub first_sync_s: f64,
    /// Event-to-dataplane latencies of the changes, milliseconds, in order.
    pub change_ms: Vec<f64>,
    /// Changes that did not apply within 10 s.
    pub timeouts: u32,
    /// RSS after the first sync, MiB.
    pub rss_mib_synced: f64,
    /// RSS after the changes, MiB.
    pub rss_mib_end: f64,
    /// Lists and watches the fake API server served.
    pub api_requests: (u64, u64),
    /// The iptables variant the proxy detected (`nft`, `legacy`), for the iptables mode.
    #[serde(default)]
    pub variant: Option<String>,
}

/// A whole run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KubeReport {
    /// When it ran (UTC, RFC 3339).
    pub started: String,
    /// The commit measured.
    pub commit: String,
    /// The machine.
    pub machine: Machine,
    /// The rows.
    pub rows: Vec<KubeRow>,
}

/// Runs the suite; writes `kube-<time>.{json,md}` under `args.out`.
///
/// # Errors
/// The binary missing, a proxy that does not sync or dies, a file that cannot be written.
pub fn run_kube(args: &KubeArgs) -> Result<Vec<PathBuf>, BenchError> {
    crate::child::require_release_binary(&args.kube_svcproxy, "kube-svcproxy")?;
    let root = crate::netns::is_root();
    let mut rows = Vec::new();
    for &services in &args.sizes {
        for &mode in &args.modes {
            if mode != Mode::Userspace && !root {
                tracing::warn!(mode = mode.name(), "not root: skipped");
                continue;
            }
            tracing::info!(mode = mode.name(), services, "measuring");
            let row = measure(args, mode, services)?;
            tracing::info!(?row.first_sync_s, rss = row.rss_mib_end, "measured");
            rows.push(row);
        }
    }
    let report = KubeReport {
        started: procfs::utc_now_rfc3339(),
        commit: git_commit(),
        machine: Machine::current(),
        rows,
    };
    let stem = run_stem("kube", &report.started);
    let json = write_json(&args.out, &stem, &report)?;
    let md = args.out.join(format!("{stem}.md"));
    write_file(&md, markdown(&report))?;
    Ok(vec![json, md])
}

/// Where the proxy runs: the host, or a namespace of its own.
struct Place {
    netns: Option<Netns>,
}

impl Place {
    /// Runs `body` where the proxy is (its loopback).
    fn run<T: Send + 'static>(&self, body: impl FnOnce() -> T + Send + 'static) -> T {
        match &self.netns {
            Some(ns) => ns.run(body),
            None => body(),
        }
    }
}

fn measure(args: &KubeArgs, mode: Mode, services: u32) -> Result<KubeRow, BenchError> {
    let place = Place {
        netns: (mode != Mode::Userspace).then(|| {
            let ns = Netns::new("kube");
            ns.ip(&["link", "set", "lo", "up"]);
            ns
        }),
    };
    let listener = place
        .run(|| TcpListener::bind("127.0.0.1:0"))
        .map_err(|e| BenchError::io("bind the fake API server", e))?;
    let api = FakeApiServer::serve(listener);
    api.apply(
        Resource::Nodes,
        json!({"metadata": {"name": "node-a", "labels": {"topology.kubernetes.io/zone": "z1"}}}),
    );
    api.apply_all(
        Resource::Services,
        (0..services).map(|i| service(mode, i)).collect(),
    );
    api.apply_all(
        Resource::EndpointSlices,
        (0..services)
            .map(|i| slice(i, args.endpoints, None))
            .collect(),
    );
    let workdir = std::env::temp_dir().join(format!("bench-kube-{}", std::process::id()));
    std::fs::create_dir_all(&workdir)
        .map_err(|e| BenchError::io(format!("create {}", workdir.display()), e))?;
    let kubeconfig = workdir.join("kubeconfig");
    write_file(&kubeconfig, api.kubeconfig())?;
    // Two free ports (each listener serves /metrics and /healthz; the second is kube-proxy's
    // healthz address, unused here).
    let (status, healthz) = place
        .run(|| {
            let first = TcpListener::bind("127.0.0.1:0")?;
            let second = TcpListener::bind("127.0.0.1:0")?;
            Ok::<_, std::io::Error>((first.local_addr()?, second.local_addr()?))
        })
        .map_err(|e| BenchError::io("pick status ports", e))?;

    let mut command = match &place.netns {
        Some(ns) => ns.command(&args.kube_svcproxy.display().to_string()),
        None => Command::new(&args.kube_svcproxy),
    };
    let log = workdir.join(format!("kube-svcproxy-{}.log", mode.name()));
    if mode == Mode::IptablesLegacy {
        // svcproxy picks its variant from `iptables --version`: the legacy tools first on PATH.
        let [legacy, _] = crate::first_sync::variant_tools(&workdir)?;
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs = vec![legacy];
        dirs.extend(std::env::split_paths(&path));
        let joined = std::env::join_paths(dirs)
            .map_err(|e| BenchError::io("PATH", std::io::Error::other(e)))?;
        command.env("PATH", joined);
    }
    let started = Instant::now();
    command
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args([
            "--hostname-override",
            "node-a",
            "--proxy-mode",
            mode.proxy_mode(),
        ])
        .args(["--metrics-bind-address", &status.to_string()])
        .args(["--healthz-bind-address", &healthz.to_string()])
        .env("RUST_LOG", "info,kube=warn")
        .env("NO_COLOR", "1");
    let mut proxy = ProxyProcess::spawn(&mut command, log, "kube", "kube-svcproxy")?;
    let result = (|| {
        wait_synced(&mut proxy, &place, status, services)?;
        let first_sync_s = started.elapsed().as_secs_f64();
        let rss_mib_synced = rss_mib(proxy.id())?;
        // Past the minimum period of any sync the start may have queued (the node's addresses
        // arriving), so that the first change is not held behind it.
        std::thread::sleep(Duration::from_secs(2));
        let mut change_ms = Vec::new();
        let mut timeouts = 0;
        for change in 0..args.changes {
            std::thread::sleep(GAP);
            let target = (change * 7919) % services;
            let before = endpoint_changes(&place, status).unwrap_or(0.0);
            let at = unix_seconds();
            api.apply(
                Resource::EndpointSlices,
                slice(target, args.endpoints, Some(change)),
            );
            match wait_applied(&mut proxy, &place, status, before, at)? {
                Some(took) => change_ms.push(took),
                None => timeouts += 1,
            }
        }
        Ok(KubeRow {
            mode,
            services,
            endpoints: args.endpoints,
            first_sync_s,
            change_ms,
            timeouts,
            rss_mib_synced,
            rss_mib_end: rss_mib(proxy.id())?,
            api_requests: api.requests(),
            variant: detected_variant(proxy.log()),
        })
    })();
    proxy.stop();
    let _ = std::fs::remove_dir_all(&workdir);
    result
}

/// Service `i`: one TCP port; its cluster IP on loopback for userspace (which binds it), in
/// 198.19.0.0/16 for the kernel modes.
fn service(mode: Mode, i: u32) -> Value {
    let (ip, port) = match mode {
        Mode::Userspace => (format!("127.1.{}.{}", i / 250, i % 250 + 1), 8080),
        _ => (format!("198.19.{}.{}", i / 250, i % 250 + 1), 80),
    };
    json!({
        "metadata": {"namespace": "bench", "name": format!("svc-{i}")},
        "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip],
                 "ports": [{"name": "http", "port": port, "protocol": "TCP", "targetPort": 8080}]}
    })
}

/// Service `i`'s slice: `endpoints` ready endpoints on node-a; with `moved`, its first endpoint
/// elsewhere (each change a different address).
fn slice(i: u32, endpoints: u32, moved: Option<u32>) -> Value {
    let endpoints: Vec<Value> = (0..endpoints)
        .map(|k| {
            let ip = match (k, moved) {
                (0, Some(change)) => format!("198.18.255.{}", change % 250 + 1),
                _ => format!("198.18.{}.{}", i % 250, k + 1),
            };
            json!({"addresses": [ip], "conditions": {"ready": true}, "nodeName": "node-a"})
        })
        .collect();
    json!({
        "metadata": {"namespace": "bench", "name": format!("svc-{i}-1"),
                     "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints
    })
}

fn wait_synced(
    proxy: &mut ProxyProcess,
    place: &Place,
    status: SocketAddr,
    services: u32,
) -> Result<(), BenchError> {
    let started = Instant::now();
    while started.elapsed() < START_TIMEOUT {
        proxy.check_alive()?;
        let synced = place.run(move || {
            crate::watch::run::last_updated(status).is_some_and(|at| at > 0.0)
                && prom::scrape(status)
                    .ok()
                    .and_then(|text| prom::sum(&text, "svcproxy_sync_service_ports", &[]))
                    == Some(f64::from(services))
        });
        if synced {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Err(BenchError::Scenario {
        scenario: "kube".to_owned(),
        proxy: "kube-svcproxy".to_owned(),
        detail: format!("no complete sync within {START_TIMEOUT:?}"),
    })
}

fn endpoint_changes(place: &Place, status: SocketAddr) -> Option<f64> {
    place.run(move || {
        prom::scrape(status).ok().and_then(|text| {
            prom::sum(
                &text,
                "kubeproxy_sync_proxy_rules_endpoint_changes_total",
                &[],
            )
        })
    })
}

/// Waits for the sync that applied a change made at `at` (unix seconds); its end, less `at`, in
/// milliseconds, or `None` after [`CHANGE_TIMEOUT`].
fn wait_applied(
    proxy: &mut ProxyProcess,
    place: &Place,
    status: SocketAddr,
    changes_before: f64,
    at: f64,
) -> Result<Option<f64>, BenchError> {
    let started = Instant::now();
    while started.elapsed() < CHANGE_TIMEOUT {
        proxy.check_alive()?;
        let (changes, last) = place.run(move || {
            let changes = prom::scrape(status).ok().and_then(|text| {
                prom::sum(
                    &text,
                    "kubeproxy_sync_proxy_rules_endpoint_changes_total",
                    &[],
                )
            });
            (changes, crate::watch::run::last_updated(status))
        });
        if let (Some(changes), Some(last)) = (changes, last) {
            if changes > changes_before && last >= at {
                return Ok(Some(((last - at) * 1e3).max(0.0)));
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(None)
}

/// `variant=X` of the proxy's "iptables variant detected" log line.
fn detected_variant(log: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text
        .lines()
        .find(|l| l.contains("iptables variant detected"))?;
    let (_, rest) = line.split_once("variant=")?;
    Some(rest.split_whitespace().next()?.trim_matches('"').to_owned())
}

fn rss_mib(pid: u32) -> Result<f64, BenchError> {
    Ok(procfs::rss_kib(pid)? as f64 / 1024.0)
}

fn unix_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted.get(rank.min(sorted.len() - 1)).copied()
}

/// The results as a markdown table.
pub fn markdown(report: &KubeReport) -> String {
    let mut out = format!(
        "# kube-svcproxy fed by a fake API server\n\n{}, commit {}, {} CPUs ({}), kernel {}.\n\n\
         Release `kube-svcproxy` against `testkit::kubeapi` (the list/watch protocol over HTTP on \
         loopback): N Services of one port, N EndpointSlices of E ready endpoints, one Node. \
         First sync: process start to the end of the first complete sync. Event to dataplane: \
         one EndpointSlice changed (an endpoint moved), from the API server taking it to the end \
         of the sync that applied it (the sync loop's minimum period is 1 s; changes are 1.1 s \
         apart). userspace on the host's loopback; iptables and nftables in a fresh network \
         namespace.\n\n\
         | mode | services × endpoints | first sync | change p50 | change p90 | change p99 | \
         change max | timeouts | RSS after sync | RSS at end | lists / watches |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        report.started,
        report.commit,
        report.machine.nproc,
        report.machine.cpu_model,
        report.machine.kernel
    );
    for row in &report.rows {
        let mut sorted = row.change_ms.clone();
        sorted.sort_by(f64::total_cmp);
        let ms = |value: Option<f64>| value.map_or("–".to_owned(), |v| format!("{v:.1} ms"));
        let mode = match &row.variant {
            Some(variant) => format!("{} ({variant})", row.mode.name()),
            None => row.mode.name().to_owned(),
        };
        out.push_str(&format!(
            "| {} | {} × {} | {:.2} s | {} | {} | {} | {} | {} | {:.0} MiB | {:.0} MiB | {} / {} |\n",
            mode,
            row.services,
            row.endpoints,
            row.first_sync_s,
            ms(percentile(&sorted, 50.0)),
            ms(percentile(&sorted, 90.0)),
            ms(percentile(&sorted, 99.0)),
            ms(sorted.last().copied()),
            row.timeouts,
            row.rss_mib_synced,
            row.rss_mib_end,
            row.api_requests.0,
            row.api_requests.1
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_objects_name_their_service_and_move_one_endpoint() {
        let base = slice(3, 10, None);
        let moved = slice(3, 10, Some(0));
        assert_eq!(
            base["metadata"]["labels"]["kubernetes.io/service-name"],
            "svc-3"
        );
        assert_eq!(base["endpoints"].as_array().map(Vec::len), Some(10));
        assert_ne!(base["endpoints"][0], moved["endpoints"][0]);
        assert_eq!(base["endpoints"][1], moved["endpoints"][1]);
        assert_eq!(
            service(Mode::Userspace, 251)["spec"]["clusterIP"],
            "127.1.1.2"
        );
        assert_eq!(
            service(Mode::Nftables, 0)["spec"]["clusterIP"],
            "198.19.0.1"
        );
    }

    #[test]
    fn percentiles_pick_by_rank() {
        let sorted = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&sorted, 50.0), Some(3.0));
        assert_eq!(percentile(&sorted, 99.0), Some(4.0));
        assert_eq!(percentile(&[], 50.0), None);
    }
}
