//! `bench ipvs`'s outputs: the JSON document, a markdown report (sync times per N and backend,
//! ratios to IPVS, latency per N with its ratio to N = 1, the issue's targets) and an SVG chart
//! (log-log, one panel per figure, one line per backend).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::error::BenchError;
use crate::ipvs::node::{Backend, Step};
use crate::ipvs::{BackendRun, IpvsReport};

/// The file stem: `ipvs-<stamp>` from the run's date.
pub fn stem(report: &IpvsReport) -> String {
    crate::report::run_stem(&report.suite, &report.date)
}

/// Writes `<stem>.json`, `.md` and `.svg` into `dir`.
///
/// # Errors
/// When the directory or a file cannot be written.
pub fn write(report: &IpvsReport, dir: &Path) -> Result<Vec<PathBuf>, BenchError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| BenchError::io(format!("create {}", dir.display()), e))?;
    let stem = stem(report);
    let json = serde_json::to_string_pretty(report).map_err(|source| BenchError::Json {
        path: dir.join(format!("{stem}.json")),
        source,
    })?;
    let files = [
        (format!("{stem}.json"), json),
        (
            format!("{stem}.md"),
            markdown(report, &format!("{stem}.svg")),
        ),
        (format!("{stem}.svg"), chart(report)),
    ];
    let mut written = Vec::new();
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::write(&path, text)
            .map_err(|e| BenchError::io(format!("write {}", path.display()), e))?;
        written.push(path);
    }
    Ok(written)
}

fn find(report: &IpvsReport, backend: Backend, ports: usize) -> Option<&BackendRun> {
    report
        .runs
        .iter()
        .find(|r| r.backend == backend && r.ports == ports)
}

/// Milliseconds with about three significant digits.
pub fn ms(seconds: f64) -> String {
    let ms = seconds * 1e3;
    if ms < 10.0 {
        format!("{ms:.2}")
    } else if ms < 1_000.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.0}")
    }
}

fn ratio(num: Option<f64>, den: Option<f64>) -> String {
    match (num, den) {
        (Some(n), Some(d)) if d > 0.0 => format!("{:.2}x", n / d),
        _ => "-".to_owned(),
    }
}

fn step_title(step: Step) -> &'static str {
    match step {
        Step::Full => "Full sync (cold), ms",
        Step::EndpointChange => "One endpoint changed (partial sync), ms",
        Step::ServiceAdd => "One service port added (partial sync), ms",
        Step::Resync => "Full resync, nothing changed (warm: kernel state dumped), ms",
    }
}

fn p50(run: Option<&BackendRun>) -> Option<f64> {
    run?.latency
        .as_ref()?
        .latency
        .as_ref()
        .map(|l| l.p50_us / 1e3)
}

fn p99(run: Option<&BackendRun>) -> Option<f64> {
    run?.latency
        .as_ref()?
        .latency
        .as_ref()
        .map(|l| l.p99_us / 1e3)
}

/// The markdown report.
pub fn markdown(report: &IpvsReport, svg_name: &str) -> String {
    let s = &report.settings;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# {}: sync cost and new-connection latency by table size\n",
        report.label
    );
    let _ = writeln!(
        out,
        "{} · commit `{}` · guest kernel {} · {} vCPU ({}) · {}\n",
        report.date,
        report.git_commit,
        report.machine.kernel,
        report.machine.nproc,
        report.machine.cpu_model,
        if report.environment.is_empty() {
            "environment not given"
        } else {
            &report.environment
        },
    );
    let _ = writeln!(
        out,
        "N service ports x {} endpoints; each backend at each N in a fresh node namespace. Sync times are \
         wall time around `Dataplane::sync`. Latency: new connections (connect, 64-byte request and reply, close) \
         at {}/s for {} s to the last service port's VIP, from the client namespace through the node namespace \
         to 10 real servers. Step timeout {} s. Everything runs under emulation when the environment says TCG: \
         absolute figures are several times the host's; compare within the run.\n",
        s.endpoints, s.rate, s.duration_s, s.step_timeout_s
    );
    let others: Vec<Backend> = s
        .backends
        .iter()
        .copied()
        .filter(|b| *b != Backend::Ipvs)
        .collect();
    let has_ipvs = s.backends.contains(&Backend::Ipvs);
    for step in [
        Step::Full,
        Step::EndpointChange,
        Step::ServiceAdd,
        Step::Resync,
    ] {
        let _ = writeln!(out, "## {}\n", step_title(step));
        let mut header = "| N |".to_owned();
        let mut rule = "|---:|".to_owned();
        for b in &s.backends {
            let _ = write!(header, " {} |", b.name());
            rule.push_str("---:|");
        }
        if has_ipvs {
            for b in &others {
                let _ = write!(header, " {} / ipvs |", b.name());
                rule.push_str("---:|");
            }
        }
        let _ = writeln!(out, "{header}\n{rule}");
        for &n in &s.sizes {
            let mut row = format!("| {n} |");
            for &b in &s.backends {
                let value = find(report, b, n).and_then(|r| r.seconds(step));
                let _ = write!(row, " {} |", value.map_or_else(|| "-".to_owned(), ms));
            }
            if has_ipvs {
                let ipvs = find(report, Backend::Ipvs, n).and_then(|r| r.seconds(step));
                for &b in &others {
                    let value = find(report, b, n).and_then(|r| r.seconds(step));
                    let _ = write!(row, " {} |", ratio(value, ipvs));
                }
            }
            let _ = writeln!(out, "{row}");
        }
        let _ = writeln!(out);
    }
    latency_table(report, &mut out);
    targets(report, &mut out);
    let problems: Vec<String> = report
        .runs
        .iter()
        .flat_map(|r| {
            r.steps.iter().flat_map(move |step| {
                step.problems.iter().map(move |p| {
                    format!(
                        "- {} at N = {}, {:?} step: {p}",
                        r.backend.name(),
                        r.ports,
                        step.step
                    )
                })
            })
        })
        .collect();
    if !problems.is_empty() {
        let _ = writeln!(
            out,
            "## Problems the backends reported (the sync finished with parts not applied)\n"
        );
        for line in problems {
            let _ = writeln!(out, "{line}");
        }
        let _ = writeln!(out);
    }
    let skipped: Vec<&BackendRun> = report.runs.iter().filter(|r| r.skipped.is_some()).collect();
    if !skipped.is_empty() {
        let _ = writeln!(out, "## Skipped\n");
        for r in skipped {
            let _ = writeln!(
                out,
                "- {} at N = {}: {}",
                r.backend.name(),
                r.ports,
                r.skipped.as_deref().unwrap_or("")
            );
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(out, "![IPVS benchmark]({svg_name})");
    out
}

fn latency_table(report: &IpvsReport, out: &mut String) {
    let s = &report.settings;
    let _ = writeln!(out, "## New-connection latency at {}/s, ms\n", s.rate);
    let mut header = "| N |".to_owned();
    let mut rule = "|---:|".to_owned();
    for b in &s.backends {
        let _ = write!(
            header,
            " {0} p50 | {0} p99 | {0} p50 / p50(N=1) | {0} ok / errors | {0} kernel CPU µs/conn |",
            b.name()
        );
        rule.push_str("---:|---:|---:|---:|---:|");
    }
    let _ = writeln!(out, "{header}\n{rule}");
    let first = s.sizes.first().copied();
    for &n in &s.sizes {
        let mut row = format!("| {n} |");
        for &b in &s.backends {
            let run = find(report, b, n);
            let base = first.and_then(|f| p50(find(report, b, f)));
            let fmt = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"));
            let counts = run
                .and_then(|r| r.latency.as_ref())
                .map_or_else(|| "-".to_owned(), |l| format!("{} / {}", l.ops, l.errors));
            let cpu = run
                .and_then(|r| r.kernel_cpu_us_per_conn)
                .map_or_else(|| "-".to_owned(), |v| format!("{v:.0}"));
            let _ = write!(
                row,
                " {} | {} | {} | {} | {cpu} |",
                fmt(p50(run)),
                fmt(p99(run)),
                ratio(p50(run), base),
                counts
            );
        }
        let _ = writeln!(out, "{row}");
    }
    let _ = writeln!(out);
}

fn targets(report: &IpvsReport, out: &mut String) {
    let ipvs: Vec<&BackendRun> = report
        .runs
        .iter()
        .filter(|r| r.backend == Backend::Ipvs)
        .collect();
    if ipvs.is_empty() {
        return;
    }
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    let _ = writeln!(out, "## Issue #5's targets (IPVS, as measured here)\n");
    let worst = |step: Step| {
        ipvs.iter()
            .filter_map(|r| r.seconds(step).map(|s| (s, r.ports)))
            .max_by(|a, b| a.0.total_cmp(&b.0))
    };
    for (step, what) in [
        (Step::EndpointChange, "one endpoint change"),
        (Step::ServiceAdd, "one service add"),
    ] {
        if let Some((secs, n)) = worst(step) {
            let _ = writeln!(
                out,
                "- {what} under 5 ms at any N: worst {} ms (N = {n}): {}",
                ms(secs),
                verdict(secs < 0.005)
            );
        }
    }
    match ipvs
        .iter()
        .find(|r| r.ports == 10_000)
        .and_then(|r| r.seconds(Step::Full))
    {
        Some(secs) => {
            let _ = writeln!(
                out,
                "- full sync of 10,000 x 10 under 2 s: {} ms: {}",
                ms(secs),
                verdict(secs < 2.0)
            );
        }
        None => {
            let _ = writeln!(
                out,
                "- full sync of 10,000 x 10 under 2 s: not measured in this run"
            );
        }
    }
    let with_latency: Vec<(usize, f64)> = ipvs
        .iter()
        .filter_map(|r| p50(Some(r)).map(|v| (r.ports, v)))
        .collect();
    if let (Some(first), Some(last)) = (with_latency.first(), with_latency.last()) {
        let _ = writeln!(
            out,
            "- per-connection latency flat in N: p50 {:.2} ms at N = {} and {:.2} ms at N = {} (ratio {:.2})",
            first.1, first.0, last.1, last.0, last.1 / first.1
        );
    }
    let _ = writeln!(out);
}

// === chart ===

const COLORS: [&str; 4] = ["#1f77b4", "#d62728", "#ff7f0e", "#2ca02c"];
const PANEL_W: f64 = 420.0;
const PANEL_H: f64 = 260.0;
const MARGIN: f64 = 50.0;

/// The SVG chart: four log-log panels (three sync steps, p50 latency), a line per backend.
pub fn chart(report: &IpvsReport) -> String {
    type Get = fn(&BackendRun) -> Option<f64>;
    let panels: [(&str, Get); 4] = [
        ("full sync, ms", |r| r.seconds(Step::Full).map(|s| s * 1e3)),
        ("one endpoint change, ms", |r| {
            r.seconds(Step::EndpointChange).map(|s| s * 1e3)
        }),
        ("one service add, ms", |r| {
            r.seconds(Step::ServiceAdd).map(|s| s * 1e3)
        }),
        ("new-connection p50, ms", |r| p50(Some(r))),
    ];
    let width = PANEL_W * 2.0;
    let height = 40.0 + PANEL_H * 2.0;
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">
<rect width="100%" height="100%" fill="white"/>
<text x="10" y="18" font-size="14">{} (x: service ports N, log; y: log)</text>
"#,
        escape(&report.label)
    );
    for (k, b) in report.settings.backends.iter().enumerate() {
        let x = 10.0 + 130.0 * k as f64;
        let _ = writeln!(
            svg,
            r#"<rect x="{x}" y="26" width="10" height="10" fill="{}"/><text x="{}" y="35">{}</text>"#,
            COLORS[k % COLORS.len()],
            x + 14.0,
            b.name()
        );
    }
    let sizes = &report.settings.sizes;
    let (xmin, xmax) = log_range(sizes.iter().map(|&n| n as f64));
    for (p, (title, get)) in panels.iter().enumerate() {
        let ox = PANEL_W * (p % 2) as f64;
        let oy = 40.0 + PANEL_H * (p / 2) as f64;
        let values: Vec<f64> = report
            .runs
            .iter()
            .filter_map(get)
            .filter(|v| *v > 0.0)
            .collect();
        let (ymin, ymax) = log_range(values.iter().copied());
        let (pw, ph) = (PANEL_W - 2.0 * MARGIN, PANEL_H - 2.0 * MARGIN);
        let px = |n: f64| ox + MARGIN + pw * (n.log10() - xmin) / (xmax - xmin);
        let py = |v: f64| oy + MARGIN + ph * (1.0 - (v.log10() - ymin) / (ymax - ymin));
        let _ = writeln!(
            svg,
            r##"<text x="{}" y="{}" font-size="12">{}</text><rect x="{}" y="{}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>"##,
            ox + MARGIN,
            oy + MARGIN - 8.0,
            escape(title),
            ox + MARGIN,
            oy + MARGIN
        );
        for &n in sizes {
            let _ = writeln!(
                svg,
                r#"<text x="{}" y="{}" text-anchor="middle">{n}</text>"#,
                px(n as f64),
                oy + MARGIN + ph + 14.0
            );
        }
        for (label, v) in [
            (fmt_axis(10f64.powf(ymin)), ymin),
            (fmt_axis(10f64.powf(ymax)), ymax),
        ] {
            let _ = writeln!(
                svg,
                r#"<text x="{}" y="{}" text-anchor="end">{label}</text>"#,
                ox + MARGIN - 4.0,
                py(10f64.powf(v)) + 4.0
            );
        }
        for (k, b) in report.settings.backends.iter().enumerate() {
            let color = COLORS[k % COLORS.len()];
            let points: Vec<(f64, f64)> = sizes
                .iter()
                .filter_map(|&n| {
                    find(report, *b, n)
                        .and_then(get)
                        .filter(|v| *v > 0.0)
                        .map(|v| (n as f64, v))
                })
                .collect();
            let path: Vec<String> = points
                .iter()
                .map(|&(n, v)| format!("{:.1},{:.1}", px(n), py(v)))
                .collect();
            if path.len() > 1 {
                let _ = writeln!(
                    svg,
                    r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
                    path.join(" ")
                );
            }
            for &(n, v) in &points {
                let _ = writeln!(
                    svg,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"/><text x="{:.1}" y="{:.1}" fill="{color}">{}</text>"#,
                    px(n),
                    py(v),
                    px(n) + 4.0,
                    py(v) - 4.0,
                    fmt_axis(v)
                );
            }
        }
    }
    svg.push_str("</svg>\n");
    svg
}

/// The log10 range of positive values, widened to at least one decade around them.
fn log_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let logs: Vec<f64> = values.filter(|v| *v > 0.0).map(f64::log10).collect();
    let lo = logs.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    let (lo, hi) = (lo.floor(), hi.ceil());
    if hi - lo < 1.0 {
        (lo, lo + 1.0)
    } else {
        (lo, hi)
    }
}

fn fmt_axis(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipvs::node::StepResult;
    use crate::ipvs::Settings;
    use crate::load::RateResult;
    use crate::procfs::Machine;
    use crate::stats::Summary;

    fn run(backend: Backend, ports: usize, full: f64, change: f64, p50_us: f64) -> BackendRun {
        let step = |step, seconds| StepResult {
            step,
            seconds,
            objects_written: 1,
            mode: "full".to_owned(),
            problems: vec![],
        };
        BackendRun {
            backend,
            ports,
            steps: vec![step(Step::Full, full), step(Step::EndpointChange, change)],
            latency: Some(RateResult {
                ops: 600,
                errors: 0,
                skipped: 0,
                elapsed_s: 3.0,
                ops_per_s: 200.0,
                latency: Some(Summary {
                    count: 600,
                    mean_us: p50_us,
                    min_us: p50_us,
                    p50_us,
                    p90_us: p50_us,
                    p99_us: p50_us * 2.0,
                    max_us: p50_us * 3.0,
                }),
                first_error: None,
            }),
            kernel_cpu_us_per_conn: Some(150.0),
            wall_s: 1.0,
            skipped: (ports == 10_000).then(|| "ServiceAdd sync did not finish".to_owned()),
        }
    }

    fn report() -> IpvsReport {
        IpvsReport {
            suite: "ipvs".to_owned(),
            label: "IPVS vs iptables".to_owned(),
            date: "2026-11-25T16:00:00Z".to_owned(),
            git_commit: "abc".to_owned(),
            machine: Machine {
                nproc: 2,
                cpu_model: "QEMU".to_owned(),
                kernel: "6.1".to_owned(),
                hostname: "vm".to_owned(),
            },
            environment: "guest under TCG emulation on Test CPU".to_owned(),
            settings: Settings {
                sizes: vec![1, 100, 10_000],
                endpoints: 10,
                backends: vec![Backend::Ipvs, Backend::Iptables],
                rate: 200,
                duration_s: 3.0,
                step_timeout_s: 60.0,
            },
            runs: vec![
                run(Backend::Ipvs, 1, 0.010, 0.002, 500.0),
                run(Backend::Iptables, 1, 0.040, 0.030, 500.0),
                run(Backend::Ipvs, 100, 0.020, 0.003, 550.0),
                run(Backend::Iptables, 100, 0.080, 0.060, 1_000.0),
                run(Backend::Ipvs, 10_000, 3.0, 0.004, 600.0),
            ],
        }
    }

    #[test]
    fn the_markdown_has_times_ratios_latency_and_targets() {
        let mut report = report();
        report.runs[4].steps[0].problems = vec!["ipset restore: could not run".to_owned()];
        let md = markdown(&report, "ipvs-x.svg");
        assert!(
            md.contains("- ipvs at N = 10000, Full step: ipset restore: could not run"),
            "{md}"
        );
        assert!(md.starts_with("# IPVS vs iptables"), "{md}");
        assert!(md.contains("guest under TCG emulation on Test CPU"), "{md}");
        assert!(md.contains("| 100 | 20.0 | 80.0 | 4.00x |"), "{md}");
        assert!(md.contains("| 10000 | 3000 | - | - |"), "{md}");
        // Latency: iptables doubles from N=1 to N=100.
        assert!(
            md.contains(
                "| 100 | 0.55 | 1.10 | 1.10x | 600 / 0 | 150 | 1.00 | 2.00 | 2.00x | 600 / 0 | 150 |"
            ),
            "{md}"
        );
        assert!(
            md.contains("one endpoint change under 5 ms at any N: worst 4.00 ms (N = 10000): met"),
            "{md}"
        );
        assert!(
            md.contains("full sync of 10,000 x 10 under 2 s: 3000 ms: NOT met"),
            "{md}"
        );
        assert!(
            md.contains("- ipvs at N = 10000: ServiceAdd sync did not finish"),
            "{md}"
        );
        assert!(md.ends_with("![IPVS benchmark](ipvs-x.svg)\n"));
    }

    #[test]
    fn the_chart_draws_a_line_per_backend_per_panel() {
        let svg = chart(&report());
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        // ipvs has 3 sizes in every panel but the service-add one (no such step): 3 lines;
        // iptables has 2 sizes in 3 panels: 3 lines.
        assert_eq!(svg.matches("<polyline").count(), 6, "{svg}");
        assert!(svg.contains("new-connection p50, ms"));
    }

    #[test]
    fn log_ranges_cover_whole_decades() {
        assert_eq!(log_range([1.0, 10_000.0].into_iter()), (0.0, 4.0));
        assert_eq!(log_range([2.0, 3.0].into_iter()), (0.0, 1.0));
        assert_eq!(log_range(std::iter::empty()), (0.0, 1.0));
        assert_eq!(ms(0.00123), "1.23");
        assert_eq!(ms(1.5), "1500");
        assert_eq!(stem(&report()), "ipvs-20261125T160000Z");
    }
}
