//! The namespace side of `bench nftables`: `bench nftables-sync` (hidden) runs inside the
//! fresh namespace of one step (`ip netns exec`), builds the table, drives one contender in
//! this process and prints one JSON line per measurement as it finishes, so the parent keeps
//! the earlier ones when it kills a slow step.
//!
//! - `ours`: backend-nftables' [`NftablesDataplane`] through the [`Dataplane`] trait: a cold
//!   full sync, then partial syncs (one endpoint changed, one service port added), each timed
//!   around `Dataplane::sync` with the [`ChangeSet`] in hand (the call to the kernel's last
//!   ACK, plus the dataplane's own checks after it), then a restart: a new dataplane's first
//!   full sync over the table in place, which reads it back and must write nothing.
//! - `iptables`: `backend_iptables::IptablesDataplane` through the [`Dataplane`] trait, a cold
//!   full sync, as `bench ipvs-sync` runs it.

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backend_nftables::config::NftablesConfig;
use backend_nftables::conntrack::Netlink;
use backend_nftables::netlink::NftSocket;
use backend_nftables::NftablesDataplane;
use netlink_transport::SocketOptions;
use proxy_core::dataplane::{Dataplane, SyncMode, SyncRequest};
use proxy_core::diff::{diff, ChangeSet};
use proxy_core::table::ServiceTable;
use proxy_core::testing::generate::{with_endpoint_changed, with_service_added};
use serde::{Deserialize, Serialize};

use crate::error::BenchError;

use super::workload::{self, CLUSTER_CIDR};

/// The in-process contenders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Driven {
    /// backend-nftables over netlink.
    Ours,
    /// backend-iptables (`IptablesDataplane`, default config).
    Iptables,
}

/// `bench nftables-sync`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct SyncArgs {
    /// Which contender.
    #[arg(long, value_enum)]
    pub contender: Driven,
    /// Service ports.
    #[arg(long)]
    pub ports: usize,
    /// Endpoints per service port.
    #[arg(long, default_value_t = 10)]
    pub endpoints: usize,
    /// Repetitions of each partial sync (`ours` only; 0: none).
    #[arg(long, default_value_t = 50)]
    pub repetitions: usize,
}

/// One line of `bench nftables-sync`'s output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Line {
    /// The cold full sync.
    Full {
        /// Wall time of the sync call.
        seconds: f64,
        /// This process's user CPU time during it.
        user_s: f64,
        /// This process's system CPU time during it (the kernel's work on our messages).
        sys_s: f64,
        /// Of `seconds`, planning (ours: `desired` and `plan`; none for iptables).
        plan_s: Option<f64>,
        /// The contender's count of what it wrote (netlink messages; iptables: rules).
        written: usize,
    },
    /// Repeated partial syncs, each from the call to the kernel's ACK.
    Partial {
        /// `endpoint-move`, `endpoint-change` or `service-add`.
        step: String,
        /// Each repetition's seconds, in order.
        seconds: Vec<f64>,
        /// Messages of the last repetition.
        written: usize,
    },
    /// A new dataplane's first full sync over the table in place.
    Restart {
        /// Wall time.
        seconds: f64,
        /// What it wrote (must be nothing).
        written: usize,
    },
    /// A step that was not measured, and why.
    NotMeasured {
        /// Which.
        step: String,
        /// Why.
        reason: String,
    },
    /// The process's memory: `VmRSS` and `VmHWM` of `/proc/self/status`, after the full
    /// sync (`after-full`) and at the end (`end`).
    Memory {
        /// When.
        at: String,
        /// Resident now.
        rss_kib: u64,
        /// Peak resident.
        hwm_kib: u64,
    },
}

fn emit(line: &Line) -> Result<(), BenchError> {
    // Through `BenchError::io`: the one constructor whose shape is stable.
    let text = serde_json::to_string(line)
        .map_err(|e| BenchError::io("serialize a result line", std::io::Error::other(e)))?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}")
        .and_then(|()| stdout.flush())
        .map_err(|e| BenchError::io("write a result line", e))
}

fn failed(contender: Driven, step: &str, detail: String) -> BenchError {
    BenchError::Scenario {
        scenario: format!("nftables-sync {step}"),
        proxy: format!("{contender:?}").to_lowercase(),
        detail,
    }
}

/// Runs the contender's steps in this process's network namespace, printing each result.
///
/// # Errors
/// [`BenchError::Scenario`] when a sync fails.
pub async fn run_sync(args: &SyncArgs) -> Result<(), BenchError> {
    let table = workload::table(args.ports, args.endpoints);
    emit_memory("table")?;
    match args.contender {
        Driven::Ours => run_ours(args, table).await?,
        Driven::Iptables => run_iptables(args, &table).await?,
    }
    emit_memory("end")
}

fn emit_memory(at: &str) -> Result<(), BenchError> {
    let (rss_kib, hwm_kib) = memory();
    emit(&Line::Memory {
        at: at.to_owned(),
        rss_kib,
        hwm_kib,
    })
}

/// The configuration both nftables contenders plan with.
pub fn our_config() -> NftablesConfig {
    NftablesConfig {
        cluster_cidrs: vec![CLUSTER_CIDR.parse().expect("a valid network")],
        ..NftablesConfig::default()
    }
}

/// Netlink socket buffers for a whole cold sync in one datagram (50,000 x 10 is ~60 MB).
fn socket_options() -> SocketOptions {
    SocketOptions {
        recv_timeout: Duration::from_secs(600),
        rcvbuf_bytes: 64 << 20,
        sndbuf_bytes: 512 << 20,
    }
}

/// `ours`: an [`NftablesDataplane`] with its conntrack cleanup, as `NftablesDataplane::new`
/// makes it, but a socket with [`socket_options`] (a cold sync is one datagram).
fn our_dataplane() -> NftablesDataplane {
    NftablesDataplane::with_opener(
        our_config(),
        Box::new(|| NftSocket::open_with(socket_options())),
    )
    .with_conntrack(Arc::new(Netlink))
}

/// One sync through the [`Dataplane`] trait, from `previous` to `desired`; returns what it
/// wrote.
async fn sync(
    dataplane: &mut NftablesDataplane,
    previous: &ServiceTable,
    desired: &ServiceTable,
    mode: SyncMode,
    step: &str,
) -> Result<usize, BenchError> {
    let changes = diff(previous, desired);
    sync_changes(dataplane, desired, &changes, mode, step).await
}

async fn sync_changes(
    dataplane: &mut NftablesDataplane,
    desired: &ServiceTable,
    changes: &ChangeSet,
    mode: SyncMode,
    step: &str,
) -> Result<usize, BenchError> {
    let report = dataplane
        .sync(SyncRequest {
            desired,
            changes,
            mode,
        })
        .await
        .map_err(|e| failed(Driven::Ours, step, proxy_core::error::error_chain(&e)))?;
    if report.mode != mode {
        return Err(failed(
            Driven::Ours,
            step,
            format!(
                "asked for a {mode} sync, the dataplane ran a {} one",
                report.mode
            ),
        ));
    }
    Ok(report.objects_written)
}

async fn run_ours(args: &SyncArgs, table: ServiceTable) -> Result<(), BenchError> {
    let mut dataplane = our_dataplane();
    let cpu = cpu_split();
    let started = Instant::now();
    let written = sync(
        &mut dataplane,
        &ServiceTable::empty(),
        &table,
        SyncMode::Full,
        "full",
    )
    .await?;
    let seconds = started.elapsed().as_secs_f64();
    let (user_s, sys_s) = cpu_since(cpu);
    emit(&Line::Full {
        seconds,
        user_s,
        sys_s,
        plan_s: None,
        written,
    })?;
    emit_memory("after-full")?;
    let mut current = table;
    if args.repetitions > 0 {
        // Each step changes a different port each time, spread over the table; the change
        // set is computed before the clock starts, as the change tracker hands it over.
        let spread = |r: usize| (args.ports / 2 + r * 7_919) % args.ports;
        // An endpoint moves (a pod replaced by one at another address): the port keeps its
        // endpoint count, so only its endpoint slots and hairpin pair change.
        current = partial_steps(
            &mut dataplane,
            current,
            args.repetitions,
            "endpoint-move",
            |t, r| workload::with_endpoint_moved(t, spread(r), r),
        )
        .await?;
        // A ready endpoint turns terminating: the port's endpoint count changes, so its slots
        // are rewritten and its dispatch element re-pointed at another balancing chain.
        current = partial_steps(
            &mut dataplane,
            current,
            args.repetitions,
            "endpoint-change",
            |t, r| with_endpoint_changed(t, spread(r)),
        )
        .await?;
        current = partial_steps(
            &mut dataplane,
            current,
            args.repetitions,
            "service-add",
            |t, _| with_service_added(t),
        )
        .await?;
    }
    // Restart: the old dataplane goes (the kernel keeps the table), a new one's first full
    // sync reads it back and must write nothing.
    drop(dataplane);
    let mut restarted = our_dataplane();
    let started = Instant::now();
    let written = sync(
        &mut restarted,
        &ServiceTable::empty(),
        &current,
        SyncMode::Full,
        "restart",
    )
    .await?;
    emit(&Line::Restart {
        seconds: started.elapsed().as_secs_f64(),
        written,
    })
}

async fn run_iptables(args: &SyncArgs, table: &ServiceTable) -> Result<(), BenchError> {
    let contender = args.contender;
    let mut dataplane =
        backend_iptables::IptablesDataplane::new(backend_iptables::IptablesConfig::default())
            .map_err(|e| failed(contender, "create", e.to_string()))?;
    let changes = diff(&ServiceTable::empty(), table);
    let cpu = cpu_split();
    let started = Instant::now();
    let report = dataplane
        .sync(SyncRequest {
            desired: table,
            changes: &changes,
            mode: SyncMode::Full,
        })
        .await
        .map_err(|e| failed(contender, "full", e.to_string()))?;
    let seconds = started.elapsed().as_secs_f64();
    let (user_s, sys_s) = cpu_since(cpu);
    emit(&Line::Full {
        seconds,
        user_s,
        sys_s,
        plan_s: None,
        written: report.objects_written,
    })
}

/// `repetitions` partial syncs of `step`, each over `edit(table, r)` of the table before it,
/// timed from the sync call to its return; emits them and returns the last table.
async fn partial_steps(
    dataplane: &mut NftablesDataplane,
    mut current: ServiceTable,
    repetitions: usize,
    step: &str,
    edit: impl Fn(&ServiceTable, usize) -> ServiceTable,
) -> Result<ServiceTable, BenchError> {
    let mut seconds = Vec::with_capacity(repetitions);
    let mut written = 0;
    for r in 0..repetitions {
        let next = edit(&current, r);
        let changes = diff(&current, &next);
        let started = Instant::now();
        written = sync_changes(dataplane, &next, &changes, SyncMode::Partial, step).await?;
        seconds.push(started.elapsed().as_secs_f64());
        current = next;
    }
    emit(&Line::Partial {
        step: step.to_owned(),
        seconds,
        written,
    })?;
    Ok(current)
}

/// This process's (user, system) CPU time so far, its waited-for children's included (the
/// `iptables-restore` runs of the iptables contender), from `/proc/self/stat`.
fn cpu_split() -> (Duration, Duration) {
    let ticks = crate::procfs::clock_ticks_per_second() as f64;
    let text = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let (user, sys) = parse_user_sys(&text).unwrap_or((0, 0));
    (
        Duration::from_secs_f64(user as f64 / ticks),
        Duration::from_secs_f64(sys as f64 / ticks),
    )
}

fn cpu_since(before: (Duration, Duration)) -> (f64, f64) {
    let after = cpu_split();
    (
        after.0.saturating_sub(before.0).as_secs_f64(),
        after.1.saturating_sub(before.1).as_secs_f64(),
    )
}

/// `utime + cutime` and `stime + cstime` (fields 14 to 17) of a `stat` line, in ticks.
pub fn parse_user_sys(stat: &str) -> Option<(u64, u64)> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    // After the name come field 3 (state) onwards: utime (field 14) is at index 11 here.
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let tick = |i: usize| -> Option<u64> { fields.get(i)?.parse().ok() };
    Some((tick(11)? + tick(13)?, tick(12)? + tick(14)?))
}

/// `VmRSS` and `VmHWM` of this process, in KiB (0 when unreadable).
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_and_system_ticks_add_the_waited_for_childrens() {
        let stat = "42 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 111 222 5 7 20 0 1 0";
        assert_eq!(parse_user_sys(stat), Some((116, 229)));
        assert_eq!(parse_user_sys("garbage"), None);
    }

    #[test]
    fn lines_round_trip_through_json() {
        let line = Line::Partial {
            step: "service-add".to_owned(),
            seconds: vec![0.001, 0.002],
            written: 5,
        };
        let text = serde_json::to_string(&line).expect("serializes");
        assert!(text.contains("\"kind\":\"partial\""), "{text}");
        assert_eq!(serde_json::from_str::<Line>(&text).expect("parses"), line);
    }
}
