//! The chart: one small bar panel per charted metric, one bar per proxy, written as plain SVG
//! text (no plotting dependency; any browser and GitHub's markdown render it).

use std::fmt::Write as _;

use crate::report::RunReport;
use crate::table::{format_value, ratio, Better, METRICS, REFERENCE};

const PANEL_WIDTH: f64 = 330.0;
const PANEL_HEIGHT: f64 = 230.0;
const COLUMNS: usize = 3;
const HEADER: f64 = 56.0;
const PLOT_TOP: f64 = 52.0;
const PLOT_BOTTOM: f64 = 36.0;

/// A fixed colour per well-known proxy, so charts of different runs read alike.
fn colour(name: &str) -> &'static str {
    match name {
        "direct" => "#9e9e9e",
        "haproxy" => "#1f77b4",
        "svcproxy" => "#ff7f0e",
        _ => "#2ca02c",
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Renders the run's charted metrics as an SVG document.
pub fn render_chart(run: &RunReport) -> String {
    let metrics: Vec<_> = METRICS.iter().filter(|m| m.charted).collect();
    let rows = metrics.len().div_ceil(COLUMNS).max(1);
    let width = PANEL_WIDTH * COLUMNS as f64;
    let height = HEADER + PANEL_HEIGHT * rows as f64;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="10" y="22" font-size="16" font-weight="bold">{} suite: {}</text>"#,
        escape(&run.suite),
        escape(&run.label)
    );
    let _ = writeln!(
        svg,
        r##"<text x="10" y="42" fill="#555">{} · {} CPUs, {} · kernel {}</text>"##,
        escape(&run.date),
        run.machine.nproc,
        escape(&run.machine.cpu_model),
        escape(&run.machine.kernel)
    );
    for (index, metric) in metrics.iter().enumerate() {
        let x0 = PANEL_WIDTH * (index % COLUMNS) as f64;
        let y0 = HEADER + PANEL_HEIGHT * (index / COLUMNS) as f64;
        let reference = run
            .proxies
            .iter()
            .find(|p| p.name == REFERENCE)
            .and_then(|p| (metric.value)(run, p));
        let bars: Vec<Bar<'_>> = run
            .proxies
            .iter()
            .map(|p| {
                let value = (metric.value)(run, p);
                Bar {
                    name: &p.name,
                    value,
                    ratio: if p.name == REFERENCE {
                        None
                    } else {
                        ratio(value, reference)
                    },
                }
            })
            .collect();
        let title = metric.title_for(run);
        panel(&mut svg, x0, y0, &title, metric.unit, metric.better, &bars);
    }
    svg.push_str("</svg>\n");
    svg
}

/// One bar: a proxy's figure and its ratio to the reference proxy's.
#[derive(Debug)]
struct Bar<'a> {
    name: &'a str,
    value: Option<f64>,
    ratio: Option<f64>,
}

fn panel(
    svg: &mut String,
    x0: f64,
    y0: f64,
    title: &str,
    unit: &str,
    better: Better,
    bars: &[Bar<'_>],
) {
    let better = match better {
        Better::Higher => "higher is better",
        Better::Lower => "lower is better",
    };
    let _ = writeln!(
        svg,
        r##"<rect x="{}" y="{}" width="{}" height="{}" fill="none" stroke="#ddd"/>"##,
        x0 + 4.0,
        y0 + 4.0,
        PANEL_WIDTH - 8.0,
        PANEL_HEIGHT - 8.0
    );
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" font-weight="bold" font-size="11">{}</text>"#,
        x0 + 12.0,
        y0 + 22.0,
        escape(title)
    );
    let _ = writeln!(
        svg,
        r##"<text x="{}" y="{}" fill="#555" font-size="11">{} ({better})</text>"##,
        x0 + 12.0,
        y0 + 38.0,
        escape(unit)
    );
    let max = bars
        .iter()
        .filter_map(|bar| bar.value)
        .fold(0.0_f64, |max, v| max.max(v.abs()));
    let plot_height = PANEL_HEIGHT - PLOT_TOP - PLOT_BOTTOM - 16.0;
    let baseline = y0 + PANEL_HEIGHT - PLOT_BOTTOM;
    let slot = (PANEL_WIDTH - 24.0) / bars.len().max(1) as f64;
    let bar_width = (slot * 0.6).min(60.0);
    for (i, bar) in bars.iter().enumerate() {
        let (name, value) = (bar.name, bar.value);
        let centre = x0 + 12.0 + slot * (i as f64 + 0.5);
        let (bar_height, label) = match value {
            Some(v) if max > 0.0 => (v.abs() / max * plot_height, format_value(v)),
            Some(v) => (0.0, format_value(v)),
            None => (0.0, "n/a".to_owned()),
        };
        let _ = writeln!(
            svg,
            r#"<rect x="{:.1}" y="{:.1}" width="{bar_width:.1}" height="{bar_height:.1}" fill="{}"/>"#,
            centre - bar_width / 2.0,
            baseline - bar_height,
            colour(name)
        );
        let label = match bar.ratio {
            Some(r) => format!("{label} ({r:.2}x {REFERENCE})"),
            None => label,
        };
        let _ = writeln!(
            svg,
            r#"<text x="{centre:.1}" y="{:.1}" text-anchor="middle" font-size="11">{}</text>"#,
            baseline - bar_height - 4.0,
            escape(&label)
        );
        let _ = writeln!(
            svg,
            r#"<text x="{centre:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            baseline + 16.0,
            escape(name)
        );
    }
    let _ = writeln!(
        svg,
        r##"<line x1="{}" y1="{baseline}" x2="{}" y2="{baseline}" stroke="#333"/>"##,
        x0 + 12.0,
        x0 + PANEL_WIDTH - 12.0
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::run;

    #[test]
    fn chart_has_a_panel_per_charted_metric_and_a_bar_per_proxy() {
        let run = run();
        let svg = render_chart(&run);
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        let panels = METRICS.iter().filter(|m| m.charted).count();
        for metric in METRICS.iter().filter(|m| m.charted) {
            let title = metric.title_for(&run);
            assert!(svg.contains(&escape(&title)), "no panel {title}");
        }
        let bars = svg.matches(r##"fill="#1f77b4""##).count();
        assert_eq!(bars, panels, "one haproxy bar per panel");
        // The largest connection rate (direct, 4000) fills the plot height.
        assert!(svg.contains(">4000 (4.00x haproxy)</text>"), "{svg}");
        assert!(svg.contains(">1000</text>"));
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(escape("a<b & c>"), "a&lt;b &amp; c&gt;");
    }
}
