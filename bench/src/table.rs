//! The figures a run reports (one [`Metric`] per row of the table and panel of the chart), and
//! the markdown table with ratios against HAProxy.

use std::fmt::Write as _;

use crate::load::RateResult;
use crate::report::{Measured, ProxyResult, RunReport};

/// The proxy the ratios are taken against.
pub const REFERENCE: &str = "haproxy";

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
        title: "memory per 1,000 idle connections (of {idle0} asked for)",
        unit: "KiB",
        better: Better::Lower,
        charted: true,
        value: |_, p| idle_at(p, 0),
    },
    Metric {
        title: "memory per 1,000 idle connections (of {idle1} asked for)",
        unit: "KiB",
        better: Better::Lower,
        charted: false,
        value: |_, p| idle_at(p, 1),
    },
    Metric {
        // A proxy with connection limits (svcproxy's per-port limit) holds fewer than asked
        // for: the memory rows above are per connection it held, and this row says how many.
        title: "idle connections held open (of {idle1} asked for)",
        unit: "",
        better: Better::Higher,
        charted: false,
        value: |_, p| p.idle.get(1).map(|i| i.opened as f64),
    },
    Metric {
        title:
            "machine busy CPU per 1,000 new connections (max rate; client, backends, kernel too)",
        unit: "ms",
        better: Better::Lower,
        charted: false,
        value: |_, p| {
            let cpu = p.conn_max.as_ref()?.system_cpu_s?;
            let ops = rate(&p.conn_max)?.ops as f64;
            Some(cpu * 1e6 / ops)
        },
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
    write_header(&mut md, run);
    write_table(&mut md, run);
    md.push_str(
        "\nRatios are column / haproxy from the same run (CPU shared with other work makes absolute \
         figures noisy; ratios within one run are the comparison). \"added\" figures subtract the \
         `direct` column of the same run (noise can make them negative). Memory is the proxy's VmRSS \
         growth per 1,000 open idle connections (each with its upstream connection open); CPU is \
         utime+stime of the proxy process.\n",
    );
    write_errors(&mut md, run);
    if let Some(chart) = chart {
        let _ = writeln!(md, "\n![{} benchmark chart]({chart})", run.suite);
    }
    md
}

/// Title, machine, settings, versions and skipped proxies.
fn write_header(md: &mut String, run: &RunReport) {
    let _ = writeln!(md, "# Benchmark: {} suite ({})\n", run.suite, run.label);
    let m = &run.machine;
    let _ = writeln!(
        md,
        "- date: {}\n- machine: {} CPUs, {}, kernel {}\n- commit: {}\n- settings: {}{} round(s), each scenario's \
         median round shown; {} s per rate scenario, \
         {} closed-loop clients, fixed rate {}/s, {} keep-alive connections, bulk {} MiB (limit {} s), \
         {} sequential requests, idle {:?}, {}-byte messages, backends {}",
        run.date,
        m.nproc,
        m.cpu_model,
        m.kernel,
        run.git_commit,
        if run.settings.quick { "QUICK, " } else { "" },
        run.settings.rounds,
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
}

/// One row per metric some proxy has a figure for: the figures, then the ratios.
fn write_table(md: &mut String, run: &RunReport) {
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
}

/// Scenario errors and skipped operations, if any.
fn write_errors(md: &mut String, run: &RunReport) {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::run;

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
        let cells = row(&md, "memory per 1,000 idle connections (of 1000 asked for)");
        assert_eq!(cells[3], "2000");
        // Only one idle count was measured: no row for a second.
        assert!(!md.contains("(of - asked for)"), "{md}");
    }

    #[test]
    fn cpu_per_thousand_connections() {
        let md = render_markdown(&run(), None);
        // 0.5 s of CPU for 1000 connections = 500 ms per 1,000.
        let cells = row(&md, "proxy CPU per 1,000 new connections");
        assert_eq!(cells[2], "500");
        // 1.5 s of machine time for 1000 connections.
        let cells = row(&md, "machine busy CPU per 1,000 new connections");
        assert_eq!(cells[2], "1500");
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
}
