//! `bench calibrate`: how much slower is the IPVS VM than the host?
//!
//! The host kernel has no IPVS, so issue #5's benchmark runs in a VM, and the development
//! machines have no usable KVM: the guest runs under TCG emulation. Its figures are real but
//! slow, and by an unknown factor. This suite measures that factor: the same small workloads,
//! of the kinds a sync is made of (CPU work in our code, plain syscalls, netlink round trips
//! that change kernel state, process spawns), run once on the host and once in the guest;
//! `bench calibrate --compare HOST.json GUEST.json` turns the pair into a table of ratios.
//!
//! Dividing a guest figure by the matching ratio gives an *estimate* of the host figure, never
//! a measurement; the README says so wherever it uses one.
//!
//! The netlink workloads add and delete an address (`198.18.0.1/32`, the benchmarking range) on
//! `lo`, so they refuse to run in the initial network namespace: run the suite under
//! `unshare -n` (scripts/calibrate-vm does).

use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use backend_ipvs::link::RouteSocket;
use serde::{Deserialize, Serialize};

use crate::error::BenchError;
use crate::procfs::{self, Machine};

/// `bench calibrate`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct CalibrateArgs {
    /// Where this run's JSON goes (`calibrate-<where>-<stamp>.json`).
    #[arg(long, default_value = "bench/results")]
    pub out: PathBuf,
    /// Where this runs, in the file name and the report: `host` or `guest`.
    #[arg(long, default_value = "host")]
    pub place: String,
    /// What the machine is, in words (e.g. "guest under TCG emulation").
    #[arg(long, default_value = "")]
    pub environment: String,
    /// Measure nothing: compare a host run and a guest run (two JSON files) and write
    /// `calibrate-<stamp>.md` beside the first.
    #[arg(long, num_args = 2, value_names = ["HOST_JSON", "GUEST_JSON"])]
    pub compare: Option<Vec<PathBuf>>,
}

/// One workload's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workload {
    /// Short name, the key the comparison matches on.
    pub name: String,
    /// What one operation is.
    pub what: String,
    /// Operations per timed round.
    pub ops: u64,
    /// The median round's time per operation, microseconds.
    pub us_per_op: f64,
}

/// One run: `calibrate-<place>-<stamp>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CalibrateReport {
    /// `calibrate`.
    pub suite: String,
    /// `host` or `guest`.
    pub place: String,
    /// The caller's words about the machine.
    pub environment: String,
    /// UTC start, RFC 3339.
    pub started: String,
    /// The machine.
    pub machine: Machine,
    /// The workloads, in run order.
    pub workloads: Vec<Workload>,
}

/// Timed rounds per workload; the median is kept (noisy machines).
const ROUNDS: usize = 5;

/// Runs the suite (or the comparison) and returns the files written.
///
/// # Errors
/// [`BenchError`] when a workload fails (e.g. the netlink ones outside a private namespace).
pub fn run(args: &CalibrateArgs) -> Result<Vec<PathBuf>, BenchError> {
    if let Some(files) = &args.compare {
        return compare(&files[0], &files[1]);
    }
    let started = procfs::utc_now_rfc3339();
    let workloads = vec![
        cpu_diff()?,
        syscall_stat()?,
        netlink_get_link()?,
        netlink_address()?,
        spawn_true()?,
    ];
    let report = CalibrateReport {
        suite: "calibrate".into(),
        place: args.place.clone(),
        environment: args.environment.clone(),
        started: started.clone(),
        machine: Machine::current(),
        workloads,
    };
    std::fs::create_dir_all(&args.out).map_err(io_err(format!("create {}", args.out.display())))?;
    let path = args.out.join(format!(
        "calibrate-{}-{}.json",
        args.place,
        started.replace([':', '-'], "")
    ));
    let json = serde_json::to_string_pretty(&report).map_err(|e| BenchError::Io {
        what: "encode calibrate report".into(),
        error: io::Error::new(io::ErrorKind::InvalidData, e),
    })?;
    std::fs::write(&path, json + "\n").map_err(io_err(format!("write {}", path.display())))?;
    for w in &report.workloads {
        eprintln!(
            "calibrate: {:<16} {:>12.2} µs/op  ({})",
            w.name, w.us_per_op, w.what
        );
    }
    Ok(vec![path])
}

fn io_err(what: String) -> impl FnOnce(io::Error) -> BenchError {
    move |error| BenchError::Io { what, error }
}

/// Times `ROUNDS` rounds of `ops` operations and keeps the median per-operation time.
fn measure(
    name: &str,
    what: &str,
    ops: u64,
    mut round: impl FnMut() -> Result<(), BenchError>,
) -> Result<Workload, BenchError> {
    round()?; // warm-up: caches, page faults, first-use allocations
    let mut per_op: Vec<f64> = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let start = Instant::now();
        round()?;
        per_op.push(start.elapsed().as_secs_f64() * 1e6 / ops as f64);
    }
    per_op.sort_by(f64::total_cmp);
    Ok(Workload {
        name: name.into(),
        what: what.into(),
        ops,
        us_per_op: per_op[ROUNDS / 2],
    })
}

/// Our own CPU work: proxy-core's deep diff of two independently built 10,000 × 10 tables
/// (what a sync does before it talks to the kernel).
fn cpu_diff() -> Result<Workload, BenchError> {
    use proxy_core::testing::generate;
    let before = generate::large_table(10_000, 10);
    let after = generate::deep_copy(&generate::with_endpoint_changed(&before, 5_000));
    measure(
        "cpu-diff",
        "diff of two 10,000 × 10 tables (deep compare)",
        1,
        || {
            let changes = proxy_core::diff(&before, &after);
            std::hint::black_box(changes);
            Ok(())
        },
    )
}

/// A cheap syscall (`stat("/")`): the cost of entering and leaving the kernel.
fn syscall_stat() -> Result<Workload, BenchError> {
    const OPS: u64 = 20_000;
    measure("syscall", "stat(\"/\")", OPS, || {
        for _ in 0..OPS {
            std::hint::black_box(std::fs::metadata("/").map_err(io_err("stat /".into()))?);
        }
        Ok(())
    })
}

/// The IPVS backend's own rtnetlink socket (`backend_ipvs::link::RouteSocket`), so the
/// calibration times the code path a sync runs.
fn route_socket() -> Result<RouteSocket, BenchError> {
    RouteSocket::connect().map_err(link_error("open NETLINK_ROUTE socket"))
}

fn link_error(what: &'static str) -> impl Fn(backend_ipvs::BackendError) -> BenchError {
    move |e| BenchError::Io {
        what: what.into(),
        error: io::Error::other(e.to_string()),
    }
}

/// A read-only netlink round trip: `RTM_GETLINK` of `lo`.
fn netlink_get_link() -> Result<Workload, BenchError> {
    const OPS: u64 = 2_000;
    let socket = route_socket()?;
    measure(
        "netlink-read",
        "RTM_GETLINK lo (request, reply, ack)",
        OPS,
        || {
            for _ in 0..OPS {
                socket
                    .link_index("lo")
                    .map_err(link_error("RTM_GETLINK lo"))?;
            }
            Ok(())
        },
    )
}

/// Whether this process's network namespace has an interface besides `lo`: then it is not
/// a throw-away namespace, and we change nothing in it. (`/proc/1/ns/net` is not always
/// readable, so the test is what the namespace holds, read from `/proc/self/net/dev`.)
fn namespace_in_use() -> bool {
    match std::fs::read_to_string("/proc/self/net/dev") {
        Ok(dev) => dev
            .lines()
            .skip(2) // two header lines
            .filter_map(|line| line.split_once(':'))
            .any(|(name, _)| name.trim() != "lo"),
        // Cannot tell: assume the worst.
        Err(_) => true,
    }
}

/// A netlink round trip that changes kernel state: add then delete `198.18.0.1/32` on `lo`
/// (what the IPVS backend does per VIP, and close to an IPVS add in kernel work).
fn netlink_address() -> Result<Workload, BenchError> {
    const PAIRS: u64 = 1_000;
    if namespace_in_use() {
        return Err(BenchError::Io {
            what: "netlink address workload refused".into(),
            error: io::Error::new(
                io::ErrorKind::PermissionDenied,
                "this network namespace has interfaces besides lo: run under `unshare -n`",
            ),
        });
    }
    let socket = route_socket()?;
    let vip = std::net::IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
    let lo = 1; // lo is always index 1 in a fresh namespace
    measure(
        "netlink-write",
        "RTM_NEWADDR or RTM_DELADDR on lo (request, ack)",
        2 * PAIRS,
        || {
            for _ in 0..PAIRS {
                socket
                    .add_address(lo, vip)
                    .map_err(link_error("RTM_NEWADDR"))?;
                socket
                    .delete_address(lo, vip)
                    .map_err(link_error("RTM_DELADDR"))?;
            }
            Ok(())
        },
    )
}

/// A process spawn: `true`, waited for (what running `ipset` or `iptables-restore` costs
/// before it does any work).
fn spawn_true() -> Result<Workload, BenchError> {
    const OPS: u64 = 50;
    measure("spawn", "spawn and wait for `true`", OPS, || {
        for _ in 0..OPS {
            let status = Command::new("true")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map_err(|error| BenchError::Spawn {
                    program: "true".into(),
                    error,
                })?;
            std::hint::black_box(status);
        }
        Ok(())
    })
}

fn read_report(path: &Path) -> Result<CalibrateReport, BenchError> {
    let text = std::fs::read_to_string(path).map_err(io_err(format!("read {}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| BenchError::Io {
        what: format!("parse {}", path.display()),
        error: io::Error::new(io::ErrorKind::InvalidData, e),
    })
}

/// The guest's time per operation over the host's, per workload both runs have.
pub fn slowdowns(host: &CalibrateReport, guest: &CalibrateReport) -> Vec<(String, f64)> {
    host.workloads
        .iter()
        .filter_map(|h| {
            let g = guest.workloads.iter().find(|g| g.name == h.name)?;
            (h.us_per_op > 0.0).then(|| (h.name.clone(), g.us_per_op / h.us_per_op))
        })
        .collect()
}

/// The comparison as markdown.
pub fn render_comparison(host: &CalibrateReport, guest: &CalibrateReport) -> String {
    let mut md = String::new();
    md.push_str("# How much slower the IPVS VM is than the host (`bench calibrate`)\n\n");
    md.push_str(&format!(
        "- host: {} ({} CPUs, kernel {}), run {}{}\n",
        host.machine.cpu_model,
        host.machine.nproc,
        host.machine.kernel,
        host.started,
        suffix(&host.environment)
    ));
    md.push_str(&format!(
        "- guest: {} ({} CPUs, kernel {}), run {}{}\n\n",
        guest.machine.cpu_model,
        guest.machine.nproc,
        guest.machine.kernel,
        guest.started,
        suffix(&guest.environment)
    ));
    md.push_str("| workload | one operation | host µs/op | guest µs/op | guest / host |\n");
    md.push_str("|---|---|---:|---:|---:|\n");
    for (name, ratio) in slowdowns(host, guest) {
        let h = host.workloads.iter().find(|w| w.name == name);
        let g = guest.workloads.iter().find(|w| w.name == name);
        if let (Some(h), Some(g)) = (h, g) {
            md.push_str(&format!(
                "| {} | {} | {:.2} | {:.2} | {:.1}× |\n",
                name, h.what, h.us_per_op, g.us_per_op, ratio
            ));
        }
    }
    md.push_str(
        "\nEach figure is the median of 5 timed rounds after a warm-up. Dividing a guest \
         figure by the ratio of the workload it is made of gives an estimate of the host \
         figure, not a measurement.\n",
    );
    md
}

fn suffix(environment: &str) -> String {
    if environment.is_empty() {
        String::new()
    } else {
        format!("; {environment}")
    }
}

fn compare(host: &Path, guest: &Path) -> Result<Vec<PathBuf>, BenchError> {
    let host_report = read_report(host)?;
    let guest_report = read_report(guest)?;
    let md = render_comparison(&host_report, &guest_report);
    let dir = host.parent().unwrap_or_else(|| Path::new("."));
    let path = dir.join(format!(
        "calibrate-{}.md",
        guest_report.started.replace([':', '-'], "")
    ));
    std::fs::write(&path, &md).map_err(io_err(format!("write {}", path.display())))?;
    print!("{md}");
    Ok(vec![path])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(place: &str, figures: &[(&str, f64)]) -> CalibrateReport {
        CalibrateReport {
            suite: "calibrate".into(),
            place: place.into(),
            environment: String::new(),
            started: "2026-11-25T17:00:00Z".into(),
            machine: Machine::current(),
            workloads: figures
                .iter()
                .map(|&(name, us)| Workload {
                    name: name.into(),
                    what: format!("{name} op"),
                    ops: 10,
                    us_per_op: us,
                })
                .collect(),
        }
    }

    #[test]
    fn slowdown_is_guest_over_host_for_shared_workloads_only() {
        let host = report(
            "host",
            &[("syscall", 0.5), ("spawn", 1000.0), ("only-host", 1.0)],
        );
        let guest = report("guest", &[("spawn", 25_000.0), ("syscall", 5.0)]);
        assert_eq!(
            slowdowns(&host, &guest),
            vec![("syscall".to_owned(), 10.0), ("spawn".to_owned(), 25.0)]
        );
        let md = render_comparison(&host, &guest);
        assert!(
            md.contains("| syscall | syscall op | 0.50 | 5.00 | 10.0× |"),
            "{md}"
        );
        assert!(!md.contains("only-host"), "{md}");
    }

    #[test]
    fn median_of_rounds_is_kept() {
        let mut calls = 0u32;
        let w = measure("x", "x", 1, || {
            calls += 1;
            Ok(())
        })
        .expect("measure");
        assert_eq!(calls, ROUNDS as u32 + 1, "warm-up plus rounds");
        assert!(w.us_per_op >= 0.0);
    }

    #[test]
    fn stat_and_spawn_workloads_run_anywhere() {
        assert!(syscall_stat().expect("stat").us_per_op > 0.0);
        assert!(spawn_true().expect("spawn").us_per_op > 0.0);
    }
}
