//! The iptables suite's results: the JSON document, the markdown tables (sync times with
//! kube-proxy/ours ratios, sizes, data path with latency(N)/latency(1) ratios, the issue's
//! targets) and two SVG charts (sync time vs N, latency vs N, log scales).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::inputs::{Layout, Step, Walk};
use crate::error::BenchError;
use crate::load::RateResult;
use crate::procfs::Machine;

/// One run of `bench iptables`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IptablesReport {
    /// `iptables`.
    pub suite: String,
    /// Title.
    pub label: String,
    /// UTC start, RFC 3339.
    pub date: String,
    /// Where it ran.
    pub machine: Machine,
    /// `git rev-parse --short HEAD` (`-dirty` with changes).
    pub git_commit: String,
    /// How it ran.
    pub settings: IptablesSettings,
    /// One per (N, variant, layout), each in its own fresh namespaces.
    pub cells: Vec<Cell>,
}

/// The run's parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IptablesSettings {
    /// `--quick`.
    pub quick: bool,
    /// Service port counts.
    pub sizes: Vec<usize>,
    /// Endpoints per service port.
    pub endpoints: usize,
    /// `legacy`, `nft`.
    pub variants: Vec<String>,
    /// The per-step restore timeout.
    pub restore_timeout_s: f64,
    /// Seconds per data-path scenario.
    pub duration_s: f64,
    /// Connections or requests per second.
    pub rate: u32,
    /// Connections of the keep-alive scenario.
    pub keepalive_connections: usize,
    /// Data-path rounds per cell.
    #[serde(default = "one")]
    pub rounds: usize,
    /// The VIP:port connected to (the last service port).
    pub target: String,
}

/// One (N, variant, layout).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    /// Service ports.
    pub n: usize,
    /// `legacy` or `nft`.
    pub variant: String,
    /// Which rules.
    pub layout: Layout,
    /// Cold full sync.
    pub full: StepResult,
    /// One endpoint changed (partial sync).
    pub endpoint_change: StepResult,
    /// One service port added (partial sync).
    pub service_added: StepResult,
    /// Rules a new connection to the target walks.
    pub walk: Walk,
    /// 1,000 new connections/s.
    pub conn: Option<DataPath>,
    /// 1,000 requests/s over keep-alive connections.
    pub keepalive: Option<DataPath>,
    /// Every data-path round (`conn` and `keepalive` are the median rounds by p50).
    #[serde(default)]
    pub rounds: Vec<Round>,
    /// Why part of the cell was not measured.
    pub error: Option<String>,
}

/// One sync step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepResult {
    /// Bytes of restore input.
    pub bytes: usize,
    /// Rules written.
    pub rules: usize,
    /// Chains written.
    pub chains: usize,
    /// Wall time of the restores, when they finished.
    pub seconds: Option<f64>,
    /// `ok`, `> T s (killed)`, `failed: ...` or `not run`.
    pub outcome: String,
}

impl StepResult {
    /// The step's sizes, not run yet.
    pub fn planned(step: &Step) -> Self {
        Self {
            bytes: step.bytes(),
            rules: step.rules,
            chains: step.chains,
            seconds: None,
            outcome: "not run".to_owned(),
        }
    }

    /// Seconds, or the outcome.
    pub fn display(&self) -> String {
        self.seconds
            .map_or_else(|| self.outcome.clone(), |s| format!("{s:.3} s"))
    }
}

/// One data-path scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataPath {
    /// What the client measured.
    pub result: RateResult,
    /// The machine's busy CPU seconds during the scenario (client and backends included).
    pub system_cpu_s: Option<f64>,
    /// Of which softirq (the kernel's packet work, rules included).
    pub softirq_cpu_s: Option<f64>,
}

fn one() -> usize {
    1
}

/// One data-path round: both scenarios, back to back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Round {
    /// New connections.
    pub conn: DataPath,
    /// Keep-alive requests.
    pub keepalive: DataPath,
}

/// The round whose p50 is the median (the lower middle of an even count); rounds without a
/// latency are left out.
pub fn median_by_p50<'a>(rounds: impl Iterator<Item = &'a DataPath>) -> Option<DataPath> {
    let mut measured: Vec<&DataPath> = rounds.filter(|d| d.p50().is_some()).collect();
    measured.sort_by(|a, b| {
        a.p50()
            .partial_cmp(&b.p50())
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    measured
        .get(measured.len().saturating_sub(1) / 2)
        .map(|d| (*d).clone())
}

impl DataPath {
    fn p50(&self) -> Option<f64> {
        self.result.latency.as_ref().map(|l| l.p50_us)
    }

    fn p99(&self) -> Option<f64> {
        self.result.latency.as_ref().map(|l| l.p99_us)
    }
}

const LAYOUTS: [Layout; 4] = [
    Layout::Tree,
    Layout::TreePortChains,
    Layout::Flat,
    Layout::Kube,
];

impl IptablesReport {
    /// `iptables-<stamp>`.
    pub fn stem(&self) -> String {
        crate::report::run_stem(&self.suite, &self.date)
    }

    fn cell(&self, n: usize, variant: &str, layout: Layout) -> Option<&Cell> {
        self.cells
            .iter()
            .find(|c| c.n == n && c.variant == variant && c.layout == layout)
    }

    /// Writes `<stem>.json`, `.md`, `-sync.svg`, `-latency.svg` into `dir`.
    ///
    /// # Errors
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
        let files = [
            (json_path, json + "\n"),
            (dir.join(format!("{stem}.md")), self.render_markdown()),
            (
                dir.join(format!("{stem}-sync.svg")),
                self.render_sync_chart(),
            ),
            (
                dir.join(format!("{stem}-latency.svg")),
                self.render_latency_chart(),
            ),
        ];
        let mut written = Vec::new();
        for (path, text) in files {
            std::fs::write(&path, text)
                .map_err(|e| BenchError::io(format!("write {}", path.display()), e))?;
            written.push(path);
        }
        Ok(written)
    }

    /// Reads a results file.
    ///
    /// # Errors
    /// [`BenchError::Io`] or [`BenchError::Json`].
    pub fn read(path: &Path) -> Result<Self, BenchError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| BenchError::io(format!("read {}", path.display()), e))?;
        serde_json::from_str(&text).map_err(|source| BenchError::Json {
            path: path.to_owned(),
            source,
        })
    }

    /// The issue's three targets, each with its measured figure.
    pub fn targets(&self) -> Vec<(String, String, Option<bool>)> {
        let mut out = Vec::new();
        let big = self.settings.sizes.iter().copied().max().unwrap_or(0);
        let small = self.settings.sizes.iter().copied().min().unwrap_or(0);
        for variant in &self.settings.variants {
            for (what, pick) in [
                (
                    "cold full sync",
                    (|c: &Cell| &c.full) as fn(&Cell) -> &StepResult,
                ),
                ("one-endpoint change", |c: &Cell| &c.endpoint_change),
            ] {
                let ours = self.cell(big, variant, Layout::Tree).map(pick);
                let kube = self.cell(big, variant, Layout::Kube).map(pick);
                let name = format!(
                    "{what} at {big} x {}, {variant}: kube-proxy/ours >= 5",
                    self.settings.endpoints
                );
                let (text, pass) = match (ours.and_then(|s| s.seconds), kube) {
                    (Some(o), Some(k)) => match k.seconds {
                        Some(k) => (
                            format!("{:.1}x ({:.3} s vs {o:.3} s)", k / o, k),
                            Some(k / o >= 5.0),
                        ),
                        None if k.outcome.starts_with('>') => (
                            format!(
                                "kube-proxy {}, ours {o:.3} s: at least {:.0}x",
                                k.outcome,
                                self.settings.restore_timeout_s / o
                            ),
                            (self.settings.restore_timeout_s / o >= 5.0).then_some(true),
                        ),
                        None => (format!("kube-proxy {}", k.outcome), None),
                    },
                    _ => ("not measured".to_owned(), None),
                };
                out.push((name, text, pass));
            }
            let lat = |n| {
                self.cell(n, variant, Layout::Tree)
                    .and_then(|c| c.conn.as_ref())
                    .and_then(DataPath::p50)
            };
            let name =
                format!("new-connection p50 at {big} within 10% of at {small} (tree), {variant}");
            let (text, pass) = match (lat(big), lat(small)) {
                (Some(b), Some(s)) => (
                    format!("{:.2} ({b:.0} µs vs {s:.0} µs)", b / s),
                    Some(b / s <= 1.10),
                ),
                _ => ("not measured".to_owned(), None),
            };
            out.push((name, text, pass));
            let walk = self
                .cell(big, variant, Layout::Tree)
                .map(|c| c.walk.nat_rules);
            out.push((
                format!("rules walked at {big} (tree) < 100"),
                walk.map_or("not measured".to_owned(), |w| w.to_string()),
                walk.map(|w| w < 100),
            ));
        }
        out
    }

    /// The markdown report.
    pub fn render_markdown(&self) -> String {
        let mut md = String::new();
        let s = &self.settings;
        let _ = writeln!(md, "# {}\n", self.label);
        let _ = writeln!(
            md,
            "{} · commit {} · {} ({} CPUs) · kernel {}{}\n",
            self.date,
            self.git_commit,
            self.machine.cpu_model,
            self.machine.nproc,
            self.machine.kernel,
            if s.quick { " · **quick run**" } else { "" }
        );
        let _ = writeln!(
            md,
            "N service ports x {} endpoints; each (N, variant, layout) in fresh namespaces. Sync steps: cold full sync, then one endpoint changed, then one service added, each timed as the backend runs it (one `iptables-restore -w 5 --noflush` per family, both tables in one input; kube-proxy's layout: nat; timeout {:.0} s). Data path: client -> node (rules) -> backends, {} new connections/s and {} requests/s over {} keep-alive connections, {:.1} s each ({} rounds, the median round by p50 shown), to {}. The table is `large_table(N, {})` reduced to cluster IPs (what the kube-proxy layout generator models: no node ports, affinity or `Local` policies), its VIPs renumbered into one dense block.\n",
            s.endpoints, s.restore_timeout_s, s.rate, s.rate, s.keepalive_connections, s.duration_s, s.rounds, s.target, s.endpoints
        );
        md.push_str("## Targets\n\n| target | measured | met |\n|---|---|---|\n");
        for (name, text, pass) in self.targets() {
            let met = match pass {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "n/a",
            };
            let _ = writeln!(md, "| {name} | {text} | {met} |");
        }
        md.push_str(
            "\n## Sync time\n\nSeconds of restore wall time; ratio = kube-proxy / ours (tree).\n\n",
        );
        // The per-port-chains columns only when that layout ran (it is not in the default set).
        let port_chains = self
            .cells
            .iter()
            .any(|c| c.layout == Layout::TreePortChains);
        md.push_str(if port_chains {
            "| N | variant | step | ours (tree) | ours (tree, per-port chains) | ours (flat) | kube-proxy | kube-proxy/tree | kube-proxy/per-port chains | per-port chains/tree |\n|---:|---|---|---:|---:|---:|---:|---:|---:|---:|\n"
        } else {
            "| N | variant | step | ours (tree) | ours (flat) | kube-proxy | kube-proxy/tree |\n|---:|---|---|---:|---:|---:|---:|\n"
        });
        for &n in &s.sizes {
            for variant in &s.variants {
                for (step, pick) in steps() {
                    let get = |l| self.cell(n, variant, l).map(pick);
                    let text = |l| get(l).map_or("-".to_owned(), StepResult::display);
                    let ratio = |num: Layout, den: Layout| match (
                        get(num),
                        get(den).and_then(|s| s.seconds),
                    ) {
                        (Some(k), Some(o)) => match k.seconds {
                            Some(k) => format!("{:.1}x", k / o),
                            None if k.outcome.starts_with('>') => {
                                format!("> {:.0}x", s.restore_timeout_s / o)
                            }
                            None => "-".to_owned(),
                        },
                        _ => "-".to_owned(),
                    };
                    let _ = if port_chains {
                        writeln!(
                            md,
                            "| {n} | {variant} | {step} | {} | {} | {} | {} | {} | {} | {} |",
                            text(Layout::Tree),
                            text(Layout::TreePortChains),
                            text(Layout::Flat),
                            text(Layout::Kube),
                            ratio(Layout::Kube, Layout::Tree),
                            ratio(Layout::Kube, Layout::TreePortChains),
                            ratio(Layout::TreePortChains, Layout::Tree),
                        )
                    } else {
                        writeln!(
                            md,
                            "| {n} | {variant} | {step} | {} | {} | {} | {} |",
                            text(Layout::Tree),
                            text(Layout::Flat),
                            text(Layout::Kube),
                            ratio(Layout::Kube, Layout::Tree),
                        )
                    };
                }
            }
        }
        md.push_str("\n## Restore input size\n\nBytes / rules / chains written per step (the same for both variants).\n\n");
        md.push_str("| N | layout | full | one-endpoint change | service added |\n|---:|---|---:|---:|---:|\n");
        let first_variant = s.variants.first().cloned().unwrap_or_default();
        for &n in &s.sizes {
            for layout in LAYOUTS {
                if let Some(c) = self.cell(n, &first_variant, layout) {
                    let size =
                        |st: &StepResult| format!("{} B / {} / {}", st.bytes, st.rules, st.chains);
                    let _ = writeln!(
                        md,
                        "| {n} | {} | {} | {} | {} |",
                        layout.label(),
                        size(&c.full),
                        size(&c.endpoint_change),
                        size(&c.service_added)
                    );
                }
            }
        }
        md.push_str("\n## Data path\n\nLatency in µs (connect + one 64-byte request/response); ratio = p50 at N / p50 at the smallest N, same variant and layout. CPU: the machine's busy seconds during the scenario (client, backends and the kernel's packet work; softirq in brackets).\n\n");
        md.push_str("| N | variant | layout | rules walked | conn/s p50 | p99 | p50 ratio | CPU s (softirq) | keep-alive p50 | p99 | p50 ratio | CPU s (softirq) |\n|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        let small = s.sizes.iter().copied().min().unwrap_or(0);
        for &n in &s.sizes {
            for variant in &s.variants {
                for layout in LAYOUTS {
                    let Some(c) = self.cell(n, variant, layout) else {
                        continue;
                    };
                    let base = self.cell(small, variant, layout);
                    let cols = |d: Option<&DataPath>, b: Option<&DataPath>| match d {
                        Some(d) => {
                            let ratio = d
                                .p50()
                                .zip(b.and_then(DataPath::p50))
                                .map_or("-".to_owned(), |(x, y)| format!("{:.2}", x / y));
                            format!("{} | {} | {ratio} | {}", num(d.p50()), num(d.p99()), cpu(d))
                        }
                        None => "- | - | - | -".to_owned(),
                    };
                    let walk = if c.walk.method == "tracer" {
                        c.walk.nat_rules.to_string()
                    } else {
                        format!("{} (analytic)", c.walk.nat_rules)
                    };
                    let _ = writeln!(
                        md,
                        "| {n} | {variant} | {} | {walk} | {} | {} |",
                        layout.label(),
                        cols(c.conn.as_ref(), base.and_then(|b| b.conn.as_ref())),
                        cols(
                            c.keepalive.as_ref(),
                            base.and_then(|b| b.keepalive.as_ref())
                        )
                    );
                }
            }
        }
        let errors: Vec<&Cell> = self.cells.iter().filter(|c| c.error.is_some()).collect();
        if !errors.is_empty() {
            md.push_str("\n## Not measured\n\n");
            for c in errors {
                let _ = writeln!(
                    md,
                    "- N = {}, {}, {}: {}",
                    c.n,
                    c.variant,
                    c.layout.label(),
                    c.error.as_deref().unwrap_or_default()
                );
            }
        }
        let stem = self.stem();
        let _ = writeln!(
            md,
            "\n![sync time]({stem}-sync.svg)\n\n![latency]({stem}-latency.svg)"
        );
        md
    }

    /// Sync time vs N, log-log, one panel per step, a line per (layout, variant).
    pub fn render_sync_chart(&self) -> String {
        let panels: Vec<Panel> = steps()
            .into_iter()
            .map(|(step, pick)| Panel {
                title: format!("{step}: restore seconds"),
                series: self.series(|c| pick(c).seconds),
            })
            .collect();
        chart("iptables sync time vs N (log scales)", &panels)
    }

    /// New-connection latency vs N, one panel per scenario and percentile.
    pub fn render_latency_chart(&self) -> String {
        let panels = vec![
            Panel {
                title: "new connection p50 (µs)".to_owned(),
                series: self.series(|c| c.conn.as_ref().and_then(DataPath::p50)),
            },
            Panel {
                title: "new connection p99 (µs)".to_owned(),
                series: self.series(|c| c.conn.as_ref().and_then(DataPath::p99)),
            },
            Panel {
                title: "keep-alive request p50 (µs)".to_owned(),
                series: self.series(|c| c.keepalive.as_ref().and_then(DataPath::p50)),
            },
        ];
        chart("iptables data path latency vs N (log scales)", &panels)
    }

    fn series(&self, value: impl Fn(&Cell) -> Option<f64>) -> Vec<Series> {
        let mut out = Vec::new();
        for variant in &self.settings.variants {
            for layout in LAYOUTS {
                let points: Vec<(f64, f64)> = self
                    .settings
                    .sizes
                    .iter()
                    .filter_map(|&n| self.cell(n, variant, layout))
                    .filter_map(|c| value(c).map(|v| (c.n as f64, v)))
                    .collect();
                if !points.is_empty() {
                    out.push(Series {
                        name: format!("{} {variant}", layout.label()),
                        colour: colour(layout),
                        dashed: variant == "nft",
                        points,
                    });
                }
            }
        }
        out
    }
}

type Pick = fn(&Cell) -> &StepResult;

fn steps() -> [(&'static str, Pick); 3] {
    [
        ("full sync", |c| &c.full),
        ("one-endpoint change", |c| &c.endpoint_change),
        ("service added", |c| &c.service_added),
    ]
}

fn num(v: Option<f64>) -> String {
    v.map_or("-".to_owned(), |v| format!("{v:.0}"))
}

fn cpu(d: &DataPath) -> String {
    match (d.system_cpu_s, d.softirq_cpu_s) {
        (Some(b), Some(s)) => format!("{b:.2} ({s:.2})"),
        (Some(b), None) => format!("{b:.2}"),
        _ => "-".to_owned(),
    }
}

fn colour(layout: Layout) -> &'static str {
    match layout {
        Layout::Tree => "#1b7837",
        Layout::TreePortChains => "#762a83",
        Layout::Flat => "#2166ac",
        Layout::Kube => "#b2182b",
    }
}

struct Series {
    name: String,
    colour: &'static str,
    dashed: bool,
    points: Vec<(f64, f64)>,
}

struct Panel {
    title: String,
    series: Vec<Series>,
}

const PANEL_W: f64 = 360.0;
const PANEL_H: f64 = 240.0;
const MARGIN: f64 = 50.0;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Panels side by side, log-log axes with decade ticks, and one legend.
fn chart(title: &str, panels: &[Panel]) -> String {
    let width = MARGIN + panels.len() as f64 * (PANEL_W + MARGIN);
    let legend: Vec<(&str, &str, bool)> = {
        let mut seen: Vec<(&str, &str, bool)> = Vec::new();
        for s in panels.iter().flat_map(|p| &p.series) {
            if !seen.iter().any(|(n, ..)| *n == s.name) {
                seen.push((&s.name, s.colour, s.dashed));
            }
        }
        seen
    };
    let height = 40.0 + PANEL_H + 2.0 * MARGIN + 18.0 * legend.len() as f64;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{MARGIN}" y="20" font-size="14">{}</text>"#,
        escape(title)
    );
    for (i, panel) in panels.iter().enumerate() {
        let x0 = MARGIN + i as f64 * (PANEL_W + MARGIN);
        panel_svg(&mut svg, panel, x0, 40.0);
    }
    let mut y = 40.0 + PANEL_H + MARGIN + 10.0;
    for (name, colour, dashed) in legend {
        let dash = if dashed {
            r#" stroke-dasharray="5,3""#
        } else {
            ""
        };
        let _ = writeln!(
            svg,
            r#"<line x1="{MARGIN}" y1="{y}" x2="{}" y2="{y}" stroke="{colour}" stroke-width="2"{dash}/><text x="{}" y="{}">{}</text>"#,
            MARGIN + 30.0,
            MARGIN + 36.0,
            y + 4.0,
            escape(name)
        );
        y += 18.0;
    }
    svg.push_str("</svg>\n");
    svg
}

fn decades(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| *v > 0.0) {
        lo = lo.min(v.log10().floor());
        hi = hi.max(v.log10().ceil());
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if hi <= lo {
        hi = lo + 1.0;
    }
    (lo, hi)
}

fn panel_svg(svg: &mut String, panel: &Panel, x0: f64, y0: f64) {
    let points = || panel.series.iter().flat_map(|s| s.points.iter());
    let (xlo, xhi) = decades(points().map(|p| p.0));
    let (ylo, yhi) = decades(points().map(|p| p.1));
    let sx = |x: f64| x0 + (x.max(1e-12).log10() - xlo) / (xhi - xlo) * PANEL_W;
    let sy = |y: f64| y0 + PANEL_H - (y.max(1e-12).log10() - ylo) / (yhi - ylo) * PANEL_H;
    let _ = writeln!(
        svg,
        r##"<rect x="{x0}" y="{y0}" width="{PANEL_W}" height="{PANEL_H}" fill="none" stroke="#999"/><text x="{x0}" y="{}">{}</text>"##,
        y0 - 5.0,
        escape(&panel.title)
    );
    let mut d = xlo;
    while d <= xhi {
        let x = sx(10f64.powf(d));
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{y0}" x2="{x:.1}" y2="{}" stroke="#eee"/><text x="{x:.1}" y="{}" text-anchor="middle">N={}</text>"##,
            y0 + PANEL_H,
            y0 + PANEL_H + 14.0,
            10f64.powf(d)
        );
        d += 1.0;
    }
    let mut d = ylo;
    while d <= yhi {
        let y = sy(10f64.powf(d));
        let _ = writeln!(
            svg,
            r##"<line x1="{x0}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            x0 + PANEL_W,
            x0 - 4.0,
            y + 4.0,
            10f64.powf(d)
        );
        d += 1.0;
    }
    for s in &panel.series {
        let path: Vec<String> = s
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let dash = if s.dashed {
            r#" stroke-dasharray="5,3""#
        } else {
            ""
        };
        let _ = writeln!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"{dash}><title>{}</title></polyline>"#,
            path.join(" "),
            s.colour,
            escape(&s.name)
        );
        for &(x, y) in &s.points {
            let _ = writeln!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{}"><title>{}: N={x} {y:.4}</title></circle>"#,
                sx(x),
                sy(y),
                s.colour,
                escape(&s.name)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Summary;

    fn step(seconds: Option<f64>, outcome: &str) -> StepResult {
        StepResult {
            bytes: 1_000,
            rules: 10,
            chains: 2,
            seconds,
            outcome: outcome.to_owned(),
        }
    }

    fn data(p50: f64) -> DataPath {
        DataPath {
            result: RateResult {
                ops: 1_000,
                errors: 0,
                skipped: 0,
                elapsed_s: 1.0,
                ops_per_s: 1_000.0,
                latency: Some(Summary {
                    count: 1_000,
                    mean_us: p50,
                    min_us: p50,
                    p50_us: p50,
                    p90_us: p50,
                    p99_us: p50 * 2.0,
                    max_us: p50 * 3.0,
                }),
                first_error: None,
            },
            system_cpu_s: Some(0.5),
            softirq_cpu_s: Some(0.1),
        }
    }

    fn cell(n: usize, layout: Layout, full: StepResult, ep: f64, p50: f64) -> Cell {
        Cell {
            n,
            variant: "legacy".to_owned(),
            layout,
            full,
            endpoint_change: step(Some(ep), "ok"),
            service_added: step(Some(ep), "ok"),
            walk: Walk {
                nat_rules: if layout == Layout::Tree { 20 } else { n + 13 },
                method: "tracer".to_owned(),
            },
            conn: Some(data(p50)),
            keepalive: Some(data(p50 / 2.0)),
            rounds: Vec::new(),
            error: None,
        }
    }

    fn report() -> IptablesReport {
        let mut cells = Vec::new();
        for (n, p50) in [(1, 100.0), (1_000, 105.0)] {
            cells.push(cell(n, Layout::Tree, step(Some(0.1), "ok"), 0.01, p50));
            cells.push(cell(
                n,
                Layout::Flat,
                step(Some(0.1), "ok"),
                0.01,
                p50 * 2.0,
            ));
        }
        cells.push(cell(1, Layout::Kube, step(Some(0.2), "ok"), 0.02, 100.0));
        let mut timed_out = cell(
            1_000,
            Layout::Kube,
            step(None, "> 120 s (killed)"),
            0.0,
            0.0,
        );
        timed_out.endpoint_change = step(None, "not run");
        timed_out.conn = None;
        timed_out.keepalive = None;
        timed_out.error = Some("sync step > 120 s (killed)".to_owned());
        cells.push(timed_out);
        IptablesReport {
            suite: "iptables".to_owned(),
            label: "test".to_owned(),
            date: "2026-11-25T15:00:00Z".to_owned(),
            machine: Machine {
                nproc: 2,
                cpu_model: "cpu".to_owned(),
                kernel: "6.1".to_owned(),
                hostname: "h".to_owned(),
            },
            git_commit: "abc".to_owned(),
            settings: IptablesSettings {
                quick: false,
                sizes: vec![1, 1_000],
                endpoints: 10,
                variants: vec!["legacy".to_owned()],
                restore_timeout_s: 120.0,
                duration_s: 1.0,
                rate: 1_000,
                keepalive_connections: 16,
                rounds: 1,
                target: "the last service port".to_owned(),
            },
            cells,
        }
    }

    #[test]
    fn markdown_has_ratios_timeouts_and_targets() {
        let md = report().render_markdown();
        // kube-proxy/tree at N=1: 0.2 / 0.1; at 1,000 the timeout bounds it: > 120/0.1.
        assert!(
            md.contains("| 1 | legacy | full sync | 0.100 s | 0.100 s | 0.200 s | 2.0x |"),
            "{md}"
        );
        assert!(
            md.contains(
                "| 1000 | legacy | full sync | 0.100 s | 0.100 s | > 120 s (killed) | > 1200x |"
            ),
            "{md}"
        );
        // Latency ratio against N=1, same layout: 105/100 and (210/200).
        assert!(
            md.contains("| 1000 | legacy | ours (tree) | 20 | 105 | 210 | 1.05 |"),
            "{md}"
        );
        assert!(md.contains("new-connection p50 at 1000 within 10% of at 1 (tree), legacy | 1.05 (105 µs vs 100 µs) | yes |"), "{md}");
        assert!(md.contains("cold full sync at 1000 x 10, legacy: kube-proxy/ours >= 5 | kube-proxy > 120 s (killed), ours 0.100 s: at least 1200x | yes |"), "{md}");
        assert!(md.contains("one-endpoint change at 1000 x 10, legacy: kube-proxy/ours >= 5 | kube-proxy not run | n/a |"), "{md}");
        assert!(md.contains("## Not measured"), "{md}");
        assert!(md.contains("iptables-20261125T150000Z-sync.svg"), "{md}");
    }

    #[test]
    fn charts_draw_a_line_per_measured_series() {
        let r = report();
        let sync = r.render_sync_chart();
        assert!(sync.starts_with("<svg") && sync.trim_end().ends_with("</svg>"));
        // full-sync panel: tree, flat and kube (one point); 3 panels in all.
        assert_eq!(sync.matches("<polyline").count(), 9, "{sync}");
        assert!(sync.contains("kube-proxy legacy"));
        let latency = r.render_latency_chart();
        assert_eq!(latency.matches("<polyline").count(), 9, "{latency}");
        assert!(latency.contains("N=1000"));
    }

    #[test]
    fn the_median_round_is_picked_by_p50() {
        let rounds = [data(300.0), data(100.0), data(200.0)];
        assert_eq!(
            median_by_p50(rounds.iter()).and_then(|d| d.p50()),
            Some(200.0)
        );
        assert_eq!(
            median_by_p50(rounds[..2].iter()).and_then(|d| d.p50()),
            Some(100.0)
        );
        assert_eq!(median_by_p50(std::iter::empty()), None);
    }

    #[test]
    fn json_round_trips() {
        let r = report();
        let text = serde_json::to_string(&r).expect("serialize");
        let back: IptablesReport = serde_json::from_str(&text).expect("parse");
        assert_eq!(back, r);
    }
}
