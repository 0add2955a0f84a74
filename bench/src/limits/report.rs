//! The limits suite's results: the JSON document and its markdown table.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::BenchError;
use crate::load::RateResult;
use crate::procfs::Machine;
use crate::report::{read_json, run_stem, write_file, write_json, SkippedProxy};

/// Everything one `bench limits` run measured, as written to `<out>/limits-<stamp>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LimitsReport {
    /// `limits`.
    pub suite: String,
    /// Shown in the title.
    pub label: String,
    /// When it started, RFC 3339 UTC.
    pub date: String,
    /// Where it ran.
    pub machine: Machine,
    /// `git rev-parse --short HEAD` of the working tree.
    pub git_commit: String,
    /// The parameters.
    pub settings: LimitsSettings,
    /// Memory per idle TCP connection, one entry per proxy.
    pub tcp_idle: Vec<TcpIdle>,
    /// Memory per UDP flow (svcproxy).
    pub udp: Option<UdpFlows>,
    /// The other service's connection rate while one is held past its limits.
    pub fd_limit: Option<FdLimit>,
    /// Scenarios that could not run, with the reason.
    pub errors: Vec<String>,
    /// Proxies not measured.
    pub skipped: Vec<SkippedProxy>,
}

/// The parameters of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LimitsSettings {
    /// Whether this was a `--quick` run.
    pub quick: bool,
    /// Connections (and flows) opened and kept before the baseline reading, so the runtime's
    /// first allocations are not charged to the measured ones.
    pub warmup: usize,
    /// Idle TCP connections measured.
    pub idle_connections: usize,
    /// UDP flows measured.
    pub udp_flows: usize,
    /// Longest wait for the flows to expire, seconds (0: not waited).
    pub udp_expiry_wait_s: f64,
    /// The open-file limit svcproxy runs under in the descriptor-limit scenario.
    pub nofile: u64,
    /// Connections tried on each hog service (held up to its limit, refused past it).
    pub hog_attempts: usize,
    /// Seconds of each measurement of the other service.
    pub duration_s: f64,
    /// New connections per second of the fixed-rate measurement.
    pub fixed_rate: u32,
    /// Closed-loop clients of the max-rate measurement (and of the hog's retrying clients).
    pub max_clients: usize,
    /// The svcproxy command (`{table}` for the table file).
    pub svcproxy: String,
}

/// A proxy's memory with idle TCP connections open through it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TcpIdle {
    /// `svcproxy`, `haproxy`.
    pub proxy: String,
    /// Its version line.
    pub version: String,
    /// Connections asked for.
    pub connections: usize,
    /// Connections open (each made one request, so the upstream side is open too).
    pub opened: usize,
    /// `VmRSS` with only the warm-up connections open, KiB.
    pub rss_base_kib: u64,
    /// `VmRSS` with them all open, KiB.
    pub rss_open_kib: u64,
    /// `VmRSS` one second after they all closed, KiB.
    pub rss_closed_kib: u64,
}

impl TcpIdle {
    /// Resident bytes per open connection.
    pub fn bytes_per_connection(&self) -> Option<f64> {
        per_unit(self.rss_base_kib, self.rss_open_kib, self.opened)
    }
}

/// Seconds between the reading of `VmRSS` as the flows expired and the settled one.
pub const SETTLED_AFTER_S: u64 = 15;

/// svcproxy's memory with UDP flows in its table, and after they expired.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UdpFlows {
    /// Flows asked for (one client socket, so one source port, each).
    pub flows: usize,
    /// Clients whose datagram was echoed back through the proxy.
    pub answered: usize,
    /// Flows the proxy held then (`svcproxy_userspace_udp_flows_active`, warm-up included).
    pub held: Option<f64>,
    /// `VmRSS` with only the warm-up flows, KiB.
    pub rss_base_kib: u64,
    /// `VmRSS` with them all, KiB.
    pub rss_with_kib: u64,
    /// `VmRSS` once the flow gauge read 0 (or the wait ended), KiB.
    pub rss_expired_kib: Option<u64>,
    /// Seconds from the last flow to the gauge reading 0; `None` if it never did in the wait.
    pub expired_after_s: Option<f64>,
    /// Flows still held when the wait ended.
    pub held_after_wait: Option<f64>,
    /// `VmRSS` [`SETTLED_AFTER_S`] later: what the allocator has given back by then (an
    /// allocator returns freed pages lazily: jemalloc decays them over 10 s), KiB.
    #[serde(default)]
    pub rss_settled_kib: Option<u64>,
    /// `VmRSS` after a second wave of as many flows (reusing what the first freed), KiB.
    pub rss_second_wave_kib: Option<u64>,
    /// Clients answered in the second wave.
    pub second_wave_answered: Option<usize>,
}

impl UdpFlows {
    /// Resident bytes per flow.
    pub fn bytes_per_flow(&self) -> Option<f64> {
        per_unit(self.rss_base_kib, self.rss_with_kib, self.answered)
    }
}

/// svcproxy under a low open-file limit: one service held past its limits, another measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FdLimit {
    /// The open-file limit read back from `/proc/PID/limits` of the running svcproxy.
    pub nofile_read_back: Option<u64>,
    /// The limits the backend derives from it (`ConnectionLimits::derive` with the defaults).
    pub limits: DerivedLimits,
    /// The phases, in the order run; the first has no load on the hogs.
    pub phases: Vec<Phase>,
}

/// The userspace backend's connection limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DerivedLimits {
    /// TCP connections in all.
    pub tcp: usize,
    /// TCP connections per service port.
    pub tcp_per_port: usize,
    /// UDP flows in all.
    pub udp: usize,
}

/// The other service's new connections while the hogs hold what this phase says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    /// What the hogs hold (`no idle load`, ...).
    pub name: String,
    /// Hog connections open during the phase (each through the proxy to a backend).
    pub hog_held: usize,
    /// Hog connections refused (or failed) while opening them.
    pub hog_refused: u64,
    /// Whether the hog's clients kept connecting (and being refused) during the measurement.
    pub hog_retrying: bool,
    /// The other service at a fixed rate (open loop).
    pub fixed: RateResult,
    /// The other service as fast as the clients go.
    pub max: RateResult,
    /// The retrying hog clients' own result, when they ran.
    pub hog_churn: Option<RateResult>,
    /// `connections_failed_total{reason="service_port_limit"}` at the phase's end, all ports.
    pub refused_port_limit: Option<f64>,
    /// `connections_failed_total{reason="global_limit"}` at the phase's end, all ports.
    pub refused_global_limit: Option<f64>,
    /// `accept_errors_total` at the phase's end.
    pub accept_errors: Option<f64>,
    /// The proxy's `VmRSS` at the phase's end, KiB.
    pub rss_kib: Option<u64>,
    /// Descriptors the proxy held at the phase's end (`/proc/PID/fd`).
    #[serde(default)]
    pub open_fds: Option<usize>,
    /// UDP flows the proxy held at the phase's end.
    #[serde(default)]
    pub udp_flows_held: Option<f64>,
}

fn per_unit(before_kib: u64, after_kib: u64, units: usize) -> Option<f64> {
    (units > 0).then(|| after_kib.saturating_sub(before_kib) as f64 * 1024.0 / units as f64)
}

impl LimitsReport {
    /// `limits-<date without separators>`.
    pub fn stem(&self) -> String {
        run_stem(&self.suite, &self.date)
    }

    /// Writes `<stem>.json` and `<stem>.md` into `dir`; returns their paths.
    ///
    /// # Errors
    ///
    /// [`BenchError::Io`] or [`BenchError::Json`] when a file cannot be written.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>, BenchError> {
        let mut written = vec![write_json(dir, &self.stem(), self)?];
        written.extend(self.write_rendered(dir)?);
        Ok(written)
    }

    /// Writes only `<stem>.md` into `dir`.
    ///
    /// # Errors
    ///
    /// [`BenchError::Io`] when the file cannot be written.
    pub fn write_rendered(&self, dir: &Path) -> Result<Vec<PathBuf>, BenchError> {
        let md_path = dir.join(format!("{}.md", self.stem()));
        write_file(&md_path, self.render_markdown())?;
        Ok(vec![md_path])
    }

    /// Reads a run back from its JSON file.
    ///
    /// # Errors
    ///
    /// [`BenchError::Io`] or [`BenchError::Json`].
    pub fn read(path: &Path) -> Result<Self, BenchError> {
        read_json(path)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::stats::Summary;

    fn rate(ops: u64, errors: u64, per_s: f64, p50: f64, p99: f64) -> RateResult {
        RateResult {
            ops,
            errors,
            skipped: 0,
            elapsed_s: 2.0,
            ops_per_s: per_s,
            latency: Some(Summary {
                count: ops,
                mean_us: p50,
                min_us: p50,
                p50_us: p50,
                p90_us: p99,
                p99_us: p99,
                max_us: p99,
            }),
            first_error: (errors > 0).then(|| "read response: connection reset\nmore".to_owned()),
        }
    }

    fn phase(name: &str, held: usize, fixed: RateResult, max: RateResult) -> Phase {
        Phase {
            name: name.to_owned(),
            hog_held: held,
            hog_refused: 0,
            hog_retrying: false,
            fixed,
            max,
            hog_churn: None,
            refused_port_limit: Some(0.0),
            refused_global_limit: Some(0.0),
            accept_errors: Some(0.0),
            rss_kib: Some(9000),
            open_fds: Some(120),
            udp_flows_held: None,
        }
    }

    pub(crate) fn report() -> LimitsReport {
        LimitsReport {
            suite: "limits".to_owned(),
            label: "test".to_owned(),
            date: "2026-12-01T18:30:00Z".to_owned(),
            machine: Machine {
                nproc: 2,
                cpu_model: "AMD EPYC".to_owned(),
                kernel: "6.1".to_owned(),
                hostname: "h".to_owned(),
            },
            git_commit: "abc".to_owned(),
            settings: LimitsSettings {
                quick: false,
                warmup: 50,
                idle_connections: 2000,
                udp_flows: 4000,
                udp_expiry_wait_s: 45.0,
                nofile: 4096,
                hog_attempts: 1500,
                duration_s: 2.0,
                fixed_rate: 500,
                max_clients: 8,
                svcproxy: "target/release/svcproxy --services {table}".to_owned(),
            },
            tcp_idle: vec![TcpIdle {
                proxy: "svcproxy".to_owned(),
                version: "svcproxy 0.1.0".to_owned(),
                connections: 2000,
                opened: 2000,
                rss_base_kib: 8000,
                rss_open_kib: 12000,
                rss_closed_kib: 11000,
            }],
            udp: Some(UdpFlows {
                flows: 4000,
                answered: 4000,
                held: Some(4050.0),
                rss_base_kib: 8000,
                rss_with_kib: 15000,
                rss_expired_kib: Some(9000),
                expired_after_s: Some(31.0),
                rss_settled_kib: Some(8000),
                held_after_wait: Some(0.0),
                rss_second_wave_kib: Some(9500),
                second_wave_answered: Some(4000),
            }),
            fd_limit: Some(FdLimit {
                nofile_read_back: Some(4096),
                limits: DerivedLimits {
                    tcp: 959,
                    tcp_per_port: 479,
                    udp: 1918,
                },
                phases: vec![
                    phase(
                        "no idle load",
                        0,
                        rate(1000, 0, 500.0, 100.0, 400.0),
                        rate(4000, 0, 2000.0, 300.0, 900.0),
                    ),
                    phase(
                        "hog past its port limit",
                        479,
                        rate(1000, 0, 500.0, 150.0, 800.0),
                        rate(3000, 0, 1500.0, 400.0, 1200.0),
                    ),
                    phase(
                        "two hogs past the global limit",
                        958,
                        rate(10, 990, 5.0, 100.0, 100.0),
                        rate(2, 5000, 1.0, 100.0, 100.0),
                    ),
                ],
            }),
            errors: Vec::new(),
            skipped: Vec::new(),
        }
    }

    #[test]
    fn per_unit_figures_are_bytes_of_growth_per_unit() {
        let report = report();
        assert_eq!(report.tcp_idle[0].bytes_per_connection(), Some(2048.0));
        let udp = report.udp.as_ref().expect("udp");
        assert_eq!(udp.bytes_per_flow(), Some(1792.0));
        let mut none = report.tcp_idle[0].clone();
        none.opened = 0;
        assert_eq!(none.bytes_per_connection(), None);
    }

    #[test]
    fn json_round_trips_and_the_file_is_named_by_date() {
        let report = report();
        let dir = std::env::temp_dir().join(format!("bench-limits-test-{}", std::process::id()));
        let written = report.write(&dir).expect("write");
        let names: Vec<String> = written
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        let back = LimitsReport::read(&written[0]).expect("read back");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            names,
            ["limits-20261201T183000Z.json", "limits-20261201T183000Z.md"]
        );
        assert_eq!(back, report);
    }
}
