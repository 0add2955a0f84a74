//! A run's results: the JSON document (one file per run) and the files rendered from it
//! (the markdown table of [`crate::table`] and the chart of [`crate::svg`]).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::BenchError;
use crate::load::{BulkResult, RateResult};
use crate::procfs::Machine;

/// Everything one run measured, as written to `<out>/<suite>-<stamp>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// The suite (`userspace`).
    pub suite: String,
    /// What the run is for (`harness smoke run`, `final`...), shown in the title.
    pub label: String,
    /// When it started, RFC 3339 UTC.
    pub date: String,
    /// Where it ran.
    pub machine: Machine,
    /// `git rev-parse --short HEAD` of the working tree, if known.
    pub git_commit: String,
    /// The scenario parameters.
    pub settings: Settings,
    /// Each proxy's results, in the order measured.
    pub proxies: Vec<ProxyResult>,
    /// Proxies asked for but not measured, with the reason.
    pub skipped: Vec<SkippedProxy>,
}

/// The scenario parameters of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// Whether this was a `--quick` smoke run.
    pub quick: bool,
    /// Seconds of each rate scenario.
    pub duration_s: f64,
    /// Closed-loop clients in the max-rate connection scenario.
    pub conn_concurrency: usize,
    /// Connections per second in the fixed-rate scenario.
    pub fixed_rate: u32,
    /// Keep-alive connections in the request-rate scenario.
    pub keepalive_connections: usize,
    /// Bytes asked for in the bulk transfer.
    pub bulk_bytes: u64,
    /// Time limit of the bulk transfer, seconds.
    pub bulk_limit_s: f64,
    /// Requests in the sequential latency scenario.
    pub ping_pong_count: u64,
    /// Idle connection counts measured for memory.
    pub idle_counts: Vec<usize>,
    /// Rounds of the other scenarios (the report shows each scenario's median round).
    #[serde(default = "one")]
    pub rounds: usize,
    /// Bytes of each small request and response.
    pub message_bytes: usize,
    /// The backends, all on loopback.
    pub backends: Vec<String>,
}

/// Writes `text` to `path`.
pub(crate) fn write_file(path: &Path, text: String) -> Result<(), BenchError> {
    std::fs::write(path, text).map_err(|e| BenchError::io(format!("write {}", path.display()), e))
}

/// The file stem of a suite's run: `<suite>-<date without separators>`.
pub(crate) fn run_stem(suite: &str, date: &str) -> String {
    let stamp: String = date.chars().filter(char::is_ascii_alphanumeric).collect();
    format!("{suite}-{stamp}")
}

/// Writes `report` as pretty JSON to `<dir>/<stem>.json`, creating `dir`; returns the path.
pub(crate) fn write_json(
    dir: &Path,
    stem: &str,
    report: &impl Serialize,
) -> Result<PathBuf, BenchError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| BenchError::io(format!("create {}", dir.display()), e))?;
    let path = dir.join(format!("{stem}.json"));
    let json = serde_json::to_string_pretty(report).map_err(|source| BenchError::Json {
        path: path.clone(),
        source,
    })?;
    write_file(&path, json + "\n")?;
    Ok(path)
}

/// Reads a run back from its JSON file.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, BenchError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| BenchError::io(format!("read {}", path.display()), e))?;
    serde_json::from_str(&text).map_err(|source| BenchError::Json {
        path: path.to_owned(),
        source,
    })
}

fn one() -> usize {
    1
}

/// A proxy that was not measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkippedProxy {
    /// Its name.
    pub name: String,
    /// Why.
    pub reason: String,
}

/// One proxy's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProxyResult {
    /// `direct`, `haproxy`, `svcproxy`...
    pub name: String,
    /// Its version line.
    pub version: String,
    /// Where it listened.
    pub listen: String,
    /// The configuration the harness generated for it.
    pub config: String,
    /// New connections, one request each, as fast as possible.
    pub conn_max: Option<Measured<RateResult>>,
    /// New connections at a fixed rate.
    pub conn_fixed: Option<Measured<RateResult>>,
    /// Requests on keep-alive connections.
    pub keepalive: Option<Measured<RateResult>>,
    /// One large transfer.
    pub bulk: Option<Measured<BulkResult>>,
    /// Sequential requests on one connection.
    pub ping_pong: Option<Measured<RateResult>>,
    /// Memory with idle connections open.
    pub idle: Vec<IdleResult>,
    /// Errors of scenarios that could not run.
    pub errors: Vec<String>,
    /// With more than one round: every round's figures (the fields above hold, per scenario,
    /// the round with the median headline figure).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rounds: Vec<Round>,
}

/// One round of the repeated scenarios.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Round {
    /// New connections as fast as possible.
    pub conn_max: Option<Measured<RateResult>>,
    /// New connections at a fixed rate.
    pub conn_fixed: Option<Measured<RateResult>>,
    /// Keep-alive requests.
    pub keepalive: Option<Measured<RateResult>>,
    /// One large transfer.
    pub bulk: Option<Measured<BulkResult>>,
    /// Sequential requests.
    pub ping_pong: Option<Measured<RateResult>>,
}

/// A scenario's result and the CPU it cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measured<T> {
    /// What the load generator measured.
    pub result: T,
    /// CPU seconds (user + system) the proxy process used during the scenario.
    pub proxy_cpu_s: Option<f64>,
    /// CPU seconds the harness itself (client and backends) used.
    pub harness_cpu_s: Option<f64>,
    /// Busy CPU seconds of the whole machine (`/proc/stat`), including softirq work no process
    /// is charged for, and whatever else ran at the time.
    #[serde(default)]
    pub system_cpu_s: Option<f64>,
}

/// Memory of the proxy with idle connections open through it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdleResult {
    /// Connections asked for.
    pub connections: usize,
    /// Connections actually open.
    pub opened: usize,
    /// `VmRSS` before opening them, KiB.
    pub rss_before_kib: u64,
    /// `VmRSS` with them open, KiB.
    pub rss_after_kib: u64,
    /// `(after - before) / opened * 1000`, KiB.
    pub kib_per_1000: f64,
}

impl RunReport {
    /// The file stem of this run: `<suite>-<date without separators>`.
    pub fn stem(&self) -> String {
        run_stem(&self.suite, &self.date)
    }

    /// Writes `<stem>.json`, `<stem>.md` and `<stem>.svg` into `dir`; returns their paths.
    ///
    /// # Errors
    ///
    /// [`BenchError::Io`] or [`BenchError::Json`] when a file cannot be written.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>, BenchError> {
        let mut written = vec![write_json(dir, &self.stem(), self)?];
        written.extend(self.write_rendered(dir)?);
        Ok(written)
    }

    /// Writes only `<stem>.md` and `<stem>.svg` (rendered from this run) into `dir`.
    ///
    /// # Errors
    ///
    /// [`BenchError::Io`] when a file cannot be written.
    pub fn write_rendered(&self, dir: &Path) -> Result<Vec<PathBuf>, BenchError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| BenchError::io(format!("create {}", dir.display()), e))?;
        let stem = self.stem();
        let svg_name = format!("{stem}.svg");
        let md_path = dir.join(format!("{stem}.md"));
        let svg_path = dir.join(&svg_name);
        write_file(
            &md_path,
            crate::table::render_markdown(self, Some(&svg_name)),
        )?;
        write_file(&svg_path, crate::svg::render_chart(self))?;
        Ok(vec![md_path, svg_path])
    }

    /// Reads a run back from its JSON file.
    ///
    /// # Errors
    ///
    /// [`BenchError::Io`] or [`BenchError::Json`].
    pub fn read(path: &Path) -> Result<RunReport, BenchError> {
        read_json(path)
    }

    pub(crate) fn proxy(&self, name: &str) -> Option<&ProxyResult> {
        self.proxies.iter().find(|p| p.name == name)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::stats::Summary;

    fn rate_result(ops: u64, per_s: f64, p50: f64) -> Measured<RateResult> {
        Measured {
            result: RateResult {
                ops,
                errors: 0,
                skipped: 0,
                elapsed_s: 1.0,
                ops_per_s: per_s,
                latency: Some(Summary {
                    count: ops,
                    mean_us: p50,
                    min_us: p50,
                    p50_us: p50,
                    p90_us: p50,
                    p99_us: p50 * 2.0,
                    max_us: p50 * 3.0,
                }),
                first_error: None,
            },
            proxy_cpu_s: Some(0.5),
            harness_cpu_s: Some(0.5),
            system_cpu_s: Some(1.5),
        }
    }

    pub(crate) fn proxy(name: &str, scale: f64) -> ProxyResult {
        ProxyResult {
            name: name.to_owned(),
            version: String::new(),
            listen: "127.0.0.10:1".to_owned(),
            config: String::new(),
            conn_max: Some(rate_result(1000, 1000.0 * scale, 100.0)),
            conn_fixed: Some(rate_result(500, 500.0, 100.0 / scale)),
            keepalive: Some(rate_result(5000, 5000.0 * scale, 50.0)),
            bulk: None,
            ping_pong: Some(rate_result(100, 100.0, 20.0 / scale)),
            idle: vec![IdleResult {
                connections: 1000,
                opened: 1000,
                rss_before_kib: 1000,
                rss_after_kib: 3000,
                kib_per_1000: 2000.0,
            }],
            errors: Vec::new(),
            rounds: Vec::new(),
        }
    }

    pub(crate) fn run() -> RunReport {
        RunReport {
            suite: "userspace".to_owned(),
            label: "test".to_owned(),
            date: "2026-11-25T14:31:01Z".to_owned(),
            machine: Machine {
                nproc: 2,
                cpu_model: "cpu".to_owned(),
                kernel: "6.1".to_owned(),
                hostname: "h".to_owned(),
            },
            git_commit: "abc".to_owned(),
            settings: Settings {
                quick: true,
                duration_s: 1.0,
                conn_concurrency: 4,
                fixed_rate: 1000,
                keepalive_connections: 8,
                bulk_bytes: 1 << 30,
                bulk_limit_s: 5.0,
                ping_pong_count: 100,
                idle_counts: vec![1000],
                rounds: 1,
                message_bytes: 64,
                backends: vec!["127.0.0.2:9".to_owned()],
            },
            proxies: vec![
                proxy("direct", 4.0),
                proxy("haproxy", 1.0),
                proxy("svcproxy", 2.0),
            ],
            skipped: Vec::new(),
        }
    }

    #[test]
    fn json_round_trips_and_files_are_named_by_date() {
        let run = run();
        let dir = std::env::temp_dir().join(format!("bench-report-test-{}", std::process::id()));
        let written = run.write(&dir).expect("write report");
        let names: Vec<String> = written
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        assert_eq!(
            names,
            [
                "userspace-20261125T143101Z.json",
                "userspace-20261125T143101Z.md",
                "userspace-20261125T143101Z.svg"
            ]
        );
        let back = RunReport::read(&written[0]).expect("read back");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(back, run);
    }
}
