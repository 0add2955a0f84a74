//! A run's results: the JSON document (one file per run), the markdown table with ratios, and
//! the list of figures both the table and the chart show.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::BenchError;
use crate::load::{BulkResult, RateResult};
use crate::procfs::Machine;

/// The proxy the ratios are taken against.
pub const REFERENCE: &str = "haproxy";

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
    /// Bytes of each small request and response.
    pub message_bytes: usize,
    /// The backends, all on loopback.
    pub backends: Vec<String>,
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
        let stamp: String = self
            .date
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect();
        format!("{}-{stamp}", self.suite)
    }

    /// Writes `<stem>.json`, `<stem>.md` and `<stem>.svg` into `dir`; returns their paths.
    ///
    /// # Errors
    ///
    /// [`BenchError::Io`] or [`BenchError::Json`] when a file cannot be written.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>, BenchError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| BenchError::io(format!("create {}", dir.display()), e))?;
        let stem = self.stem();
        let json_path = dir.join(format!("{stem}.json"));
        let json = serde_json::to_string_pretty(self).map_err(|source| BenchError::Json {
            path: json_path.clone(),
            source,
        })?;
        let svg_name = format!("{stem}.svg");
        let files = [
            (json_path, json + "\n"),
            (
                dir.join(format!("{stem}.md")),
                render_markdown(self, Some(&svg_name)),
            ),
            (dir.join(&svg_name), crate::svg::render_chart(self)),
        ];
        let mut written = Vec::new();
        for (path, text) in files {
            std::fs::write(&path, text)
                .map_err(|e| BenchError::io(format!("write {}", path.display()), e))?;
            written.push(path);
        }
        Ok(written)
    }

    /// Reads a run back from its JSON file.
    ///
    /// # Errors
    ///
    /// [`BenchError::Io`] or [`BenchError::Json`].
    pub fn read(path: &Path) -> Result<RunReport, BenchError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| BenchError::io(format!("read {}", path.display()), e))?;
        serde_json::from_str(&text).map_err(|source| BenchError::Json {
            path: path.to_owned(),
            source,
        })
    }

    fn proxy(&self, name: &str) -> Option<&ProxyResult> {
        self.proxies.iter().find(|p| p.name == name)
    }
}

/// Whether a larger figure is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    /// Rates, throughput.
    Higher,
    /// Latency, memory, CPU.
    Lower,
}

/// One row of the table (and a candidate panel of the chart).
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    /// Row title.
    pub title: &'static str,
    /// Unit shown after the title.
    pub unit: &'static str,
    /// Which direction wins.
    pub better: Better,
    /// Whether the chart shows it.
    pub charted: bool,
    /// The figure for one proxy, given the whole run (for figures relative to `direct`).
    pub value: fn(&RunReport, &ProxyResult) -> Option<f64>,
}

fn rate(m: &Option<Measured<RateResult>>) -> Option<&RateResult> {
    m.as_ref().map(|m| &m.result).filter(|r| r.ops > 0)
}

fn cpu_per<T>(m: &Option<Measured<T>>, ops: Option<f64>, per: f64) -> Option<f64> {
    let cpu = m.as_ref()?.proxy_cpu_s?;
    let ops = ops.filter(|&ops| ops > 0.0)?;
    Some(cpu * 1_000.0 / ops * per)
}

fn idle_at(p: &ProxyResult, index: usize) -> Option<f64> {
    p.idle
        .get(index)
        .filter(|i| i.opened > 0)
        .map(|i| i.kib_per_1000)
}

fn added(run: &RunReport, p: &ProxyResult, pick: fn(&ProxyResult) -> Option<f64>) -> Option<f64> {
    if p.name == "direct" {
        return None;
    }
    Some(pick(p)? - pick(run.proxy("direct")?)?)
}

/// Every row of the table, in order.
pub const METRICS: &[Metric] = &[
    Metric {
        title: "new connections/s (max rate, 1 request each)",
        unit: "conn/s",
        better: Better::Higher,
        charted: true,
        value: |_, p| rate(&p.conn_max).map(|r| r.ops_per_s),
    },
    Metric {
        title: "connect+request latency p50 at max rate",
        unit: "µs",
        better: Better::Lower,
        charted: false,
        value: |_, p| rate(&p.conn_max)?.latency.map(|l| l.p50_us),
    },
    Metric {
        title: "connect+request latency p50 at fixed rate",
        unit: "µs",
        better: Better::Lower,
        charted: false,
        value: |_, p| rate(&p.conn_fixed)?.latency.map(|l| l.p50_us),
    },
    Metric {
        title: "connect+request latency p90 at fixed rate",
        unit: "µs",
        better: Better::Lower,
        charted: false,
        value: |_, p| rate(&p.conn_fixed)?.latency.map(|l| l.p90_us),
    },
    Metric {
        title: "connect+request latency p99 at fixed rate",
        unit: "µs",
        better: Better::Lower,
        charted: true,
        value: |_, p| rate(&p.conn_fixed)?.latency.map(|l| l.p99_us),
    },
    Metric {
        title: "keep-alive requests/s",
        unit: "req/s",
        better: Better::Higher,
        charted: true,
        value: |_, p| rate(&p.keepalive).map(|r| r.ops_per_s),
    },
    Metric {
        title: "keep-alive request latency p99",
        unit: "µs",
        better: Better::Lower,
        charted: false,
        value: |_, p| rate(&p.keepalive)?.latency.map(|l| l.p99_us),
    },
    Metric {
        title: "bulk throughput (one connection)",
        unit: "MB/s",
        better: Better::Higher,
        charted: true,
        value: |_, p| p.bulk.as_ref().map(|b| b.result.mb_per_s),
    },
    Metric {
        title: "request latency p50 (one in flight)",
        unit: "µs",
        better: Better::Lower,
        charted: false,
        value: |_, p| rate(&p.ping_pong)?.latency.map(|l| l.p50_us),
    },
    Metric {
        title: "request latency p99 (one in flight)",
        unit: "µs",
        better: Better::Lower,
        charted: false,
        value: |_, p| rate(&p.ping_pong)?.latency.map(|l| l.p99_us),
    },
    Metric {
        title: "added latency p50 over direct (one in flight)",
        unit: "µs",
        better: Better::Lower,
        charted: true,
        value: |run, p| added(run, p, |p| rate(&p.ping_pong)?.latency.map(|l| l.p50_us)),
    },
    Metric {
        title: "added latency p99 over direct (one in flight)",
        unit: "µs",
        better: Better::Lower,
        charted: false,
        value: |run, p| added(run, p, |p| rate(&p.ping_pong)?.latency.map(|l| l.p99_us)),
    },
    Metric {
        title: "added connect+request latency p50 over direct (fixed rate)",
        unit: "µs",
        better: Better::Lower,
        charted: false,
        value: |run, p| added(run, p, |p| rate(&p.conn_fixed)?.latency.map(|l| l.p50_us)),
    },
    Metric {
        title: "added connect+request latency p99 over direct (fixed rate)",
        unit: "µs",
        better: Better::Lower,
        charted: false,
        value: |run, p| added(run, p, |p| rate(&p.conn_fixed)?.latency.map(|l| l.p99_us)),
    },
    Metric {
        title: "memory per 1,000 idle connections ({idle0} open)",
        unit: "KiB",
        better: Better::Lower,
        charted: true,
        value: |_, p| idle_at(p, 0),
    },
    Metric {
        title: "memory per 1,000 idle connections ({idle1} open)",
        unit: "KiB",
        better: Better::Lower,
        charted: false,
        value: |_, p| idle_at(p, 1),
    },
    Metric {
        title: "proxy CPU per 1,000 new connections (max rate)",
        unit: "ms",
        better: Better::Lower,
        charted: false,
        value: |_, p| {
            cpu_per(
                &p.conn_max,
                rate(&p.conn_max).map(|r| r.ops as f64),
                1_000.0,
            )
        },
    },
    Metric {
        title: "proxy CPU per 1,000 keep-alive requests",
        unit: "ms",
        better: Better::Lower,
        charted: false,
        value: |_, p| {
            cpu_per(
                &p.keepalive,
                rate(&p.keepalive).map(|r| r.ops as f64),
                1_000.0,
            )
        },
    },
    Metric {
        title: "proxy CPU per GB of bulk transfer",
        unit: "ms",
        better: Better::Lower,
        charted: false,
        value: |_, p| cpu_per(&p.bulk, p.bulk.as_ref().map(|b| b.result.bytes as f64), 1e9),
    },
];

impl Metric {
    /// The title with the run's idle connection counts filled in.
    pub fn title_for(&self, run: &RunReport) -> String {
        let count = |i: usize| {
            run.settings
                .idle_counts
                .get(i)
                .map_or_else(|| "-".to_owned(), ToString::to_string)
        };
        self.title
            .replace("{idle0}", &count(0))
            .replace("{idle1}", &count(1))
    }
}

/// Formats a figure with about three significant digits.
pub fn format_value(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude >= 100.0 {
        format!("{value:.0}")
    } else if magnitude >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

/// `value / reference`, when both exist and the reference is not zero.
pub fn ratio(value: Option<f64>, reference: Option<f64>) -> Option<f64> {
    match (value, reference) {
        (Some(v), Some(r)) if r != 0.0 => Some(v / r),
        _ => None,
    }
}

/// The markdown report: machine, settings, then a table with one column per proxy and one
/// ratio column per proxy against [`REFERENCE`]. `chart` is the SVG's file name to embed.
pub fn render_markdown(run: &RunReport, chart: Option<&str>) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Benchmark: {} suite ({})\n", run.suite, run.label);
    let m = &run.machine;
    let _ = writeln!(
        md,
        "- date: {}\n- machine: {} CPUs, {}, kernel {}\n- commit: {}\n- settings: {}{} s per rate scenario, \
         {} closed-loop clients, fixed rate {}/s, {} keep-alive connections, bulk {} MiB (limit {} s), \
         {} sequential requests, idle {:?}, {}-byte messages, backends {}",
        run.date,
        m.nproc,
        m.cpu_model,
        m.kernel,
        run.git_commit,
        if run.settings.quick { "QUICK, " } else { "" },
        run.settings.duration_s,
        run.settings.conn_concurrency,
        run.settings.fixed_rate,
        run.settings.keepalive_connections,
        run.settings.bulk_bytes >> 20,
        run.settings.bulk_limit_s,
        run.settings.ping_pong_count,
        run.settings.idle_counts,
        run.settings.message_bytes,
        run.settings.backends.join(", "),
    );
    for p in &run.proxies {
        if !p.version.is_empty() {
            let _ = writeln!(md, "- {}: {}", p.name, p.version);
        }
    }
    for s in &run.skipped {
        let reason: Vec<&str> = s
            .reason
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let _ = writeln!(md, "- **{} skipped**: {}", s.name, reason.join(" / "));
    }
    md.push('\n');

    let has_reference = run.proxy(REFERENCE).is_some();
    let compared: Vec<&ProxyResult> = run
        .proxies
        .iter()
        .filter(|p| has_reference && p.name != REFERENCE)
        .collect();
    md.push_str("| metric | better |");
    for p in &run.proxies {
        let _ = write!(md, " {} |", p.name);
    }
    for p in &compared {
        let _ = write!(md, " {} / {REFERENCE} |", p.name);
    }
    md.push_str("\n|---|---|");
    md.push_str(&"---:|".repeat(run.proxies.len() + compared.len()));
    md.push('\n');
    let reference = run.proxy(REFERENCE);
    for metric in METRICS {
        // Rows no proxy has a figure for (a scenario not run) are left out.
        if run.proxies.iter().all(|p| (metric.value)(run, p).is_none()) {
            continue;
        }
        let arrow = match metric.better {
            Better::Higher => "higher",
            Better::Lower => "lower",
        };
        let _ = write!(
            md,
            "| {} ({}) | {arrow} |",
            metric.title_for(run),
            metric.unit
        );
        for p in &run.proxies {
            let cell = (metric.value)(run, p).map_or_else(|| "n/a".to_owned(), format_value);
            let _ = write!(md, " {cell} |");
        }
        for p in &compared {
            let r = ratio(
                (metric.value)(run, p),
                reference.and_then(|reference| (metric.value)(run, reference)),
            );
            let cell = r.map_or_else(|| "n/a".to_owned(), |r| format!("{r:.2}"));
            let _ = write!(md, " {cell} |");
        }
        md.push('\n');
    }
    md.push_str(
        "\nRatios are column / haproxy from the same run (CPU shared with other work makes absolute \
         figures noisy; ratios within one run are the comparison). \"added\" figures subtract the \
         `direct` column of the same run. Memory is the proxy's VmRSS growth per 1,000 open idle \
         connections (each with its upstream connection open); CPU is utime+stime of the proxy process.\n",
    );
    let mut notes = String::new();
    for p in &run.proxies {
        for e in &p.errors {
            let _ = writeln!(notes, "- {}: {e}", p.name);
        }
        for (scenario, r) in [
            ("conn_max", &p.conn_max),
            ("conn_fixed", &p.conn_fixed),
            ("keepalive", &p.keepalive),
            ("ping_pong", &p.ping_pong),
        ] {
            if let Some(m) = r {
                if m.result.errors > 0 || m.result.skipped > 0 {
                    let _ = writeln!(
                        notes,
                        "- {} {scenario}: {} errors, {} skipped; first: {}",
                        p.name,
                        m.result.errors,
                        m.result.skipped,
                        m.result.first_error.as_deref().unwrap_or("-")
                    );
                }
            }
        }
    }
    if !notes.is_empty() {
        let _ = write!(md, "\nErrors during the run:\n\n{notes}");
    }
    if let Some(chart) = chart {
        let _ = writeln!(md, "\n![{} benchmark chart]({chart})", run.suite);
    }
    md
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

    fn row<'a>(md: &'a str, title: &str) -> Vec<&'a str> {
        let line = md
            .lines()
            .find(|line| line.starts_with(&format!("| {title}")))
            .unwrap_or_else(|| panic!("no row {title} in\n{md}"));
        line.split('|')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect()
    }

    #[test]
    fn table_has_figures_and_ratios_against_haproxy() {
        let md = render_markdown(&run(), Some("chart.svg"));
        assert!(md.contains("| metric | better | direct | haproxy | svcproxy | direct / haproxy | svcproxy / haproxy |"), "{md}");
        let cells = row(&md, "new connections/s");
        assert_eq!(
            &cells[1..],
            ["higher", "4000", "1000", "2000", "4.00", "2.00"]
        );
        // 20/2 - 20/4 = 5 µs added for svcproxy, 20 - 5 = 15 for haproxy; none for direct.
        let cells = row(&md, "added latency p50 over direct");
        assert_eq!(&cells[1..], ["lower", "n/a", "15.0", "5.00", "n/a", "0.33"]);
        // No proxy has a bulk figure: the row is left out.
        assert!(!md.contains("| bulk throughput"), "{md}");
        assert!(md.contains("![userspace benchmark chart](chart.svg)"));
    }

    #[test]
    fn idle_titles_name_the_counts() {
        let md = render_markdown(&run(), None);
        let cells = row(&md, "memory per 1,000 idle connections (1000 open)");
        assert_eq!(cells[3], "2000");
        // Only one idle count was measured: no row for a second.
        assert!(!md.contains("(- open)"), "{md}");
    }

    #[test]
    fn cpu_per_thousand_connections() {
        let md = render_markdown(&run(), None);
        // 0.5 s of CPU for 1000 connections = 500 ms per 1,000.
        let cells = row(&md, "proxy CPU per 1,000 new connections");
        assert_eq!(cells[2], "500");
    }

    #[test]
    fn without_haproxy_there_are_no_ratio_columns() {
        let mut run = run();
        run.proxies.retain(|p| p.name != "haproxy");
        let md = render_markdown(&run, None);
        assert!(
            md.contains("| metric | better | direct | svcproxy |\n"),
            "{md}"
        );
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
