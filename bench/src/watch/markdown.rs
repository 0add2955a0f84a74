//! The watch suite's markdown report: one row per backend, kind of edit and watch mode, with the
//! polling mode's p50 as a multiple of inotify's.

use std::fmt::Write as _;

use crate::stats::percentile;

use super::run::Series;
use super::{Backend, EditKind, WatchMode, WatchReport};

/// p50, p90 and max of a series, in microseconds; `None` when no edit applied.
fn summary(series: &Series) -> Option<(u64, u64, u64)> {
    let mut sorted = series.applied_us.clone();
    sorted.sort_unstable();
    let max = *sorted.last()?;
    Some((percentile(&sorted, 50.0), percentile(&sorted, 90.0), max))
}

fn ms(us: u64) -> String {
    let ms = us as f64 / 1000.0;
    if ms < 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

impl WatchReport {
    /// The markdown report.
    pub fn render_markdown(&self) -> String {
        let m = &self.machine;
        let mut out = format!(
            "# watch: {}\n\n{}, commit {}, {} CPUs ({}), kernel {}, host {}.\n\n\
             Time from an edit to the table file (the rename; the start of a write in place) until the end of the sync that \
             applied it (svcproxy's `/healthz` `lastUpdated`, checked against \
             `svcproxy_sync_service_ports`), N = {} services, {} timed edits per row (after one \
             untimed), each at least 1.1 s after the last sync (the sync loop's minimum period). \
             *inotify*: svcproxy's watcher (issue #11); *poll*: the same binary with \
             `SVCPROXY_WATCH=poll`, `--poll-interval-ms 500 --settle-ms 1000` (before issue #11). \
             *rename*: a temporary file renamed over the table; *in place*: truncated, written \
             and closed. userspace on loopback, iptables in a network namespace.\n\n",
            self.label,
            self.date,
            self.git_commit,
            m.nproc,
            m.cpu_model,
            m.kernel,
            m.hostname,
            self.services,
            self.edits,
        );
        out.push_str(
            "| backend | edit | watcher | p50 | p90 | max | timeouts | poll p50 ÷ inotify p50 |\n\
             |---|---|---|---:|---:|---:|---:|---:|\n",
        );
        for backend in [Backend::Userspace, Backend::Iptables] {
            for kind in [EditKind::Rename, EditKind::InPlace] {
                let find = |mode| {
                    self.series
                        .iter()
                        .find(|s| s.backend == backend && s.kind == kind && s.mode == mode)
                };
                let p50 = |mode| find(mode).and_then(summary).map(|(p50, _, _)| p50);
                for mode in [WatchMode::Inotify, WatchMode::Poll] {
                    let Some(series) = find(mode) else { continue };
                    let cells = summary(series).map_or_else(
                        || "– | – | –".to_owned(),
                        |(p50, p90, max)| format!("{} | {} | {}", ms(p50), ms(p90), ms(max)),
                    );
                    let ratio = match (mode, p50(WatchMode::Poll), p50(WatchMode::Inotify)) {
                        (WatchMode::Poll, Some(poll), Some(inotify)) if inotify > 0 => {
                            format!("{:.0}×", poll as f64 / inotify as f64)
                        }
                        _ => String::new(),
                    };
                    let _ = writeln!(
                        out,
                        "| {} | {} | {} | {cells} | {} | {ratio} |",
                        format!("{backend:?}").to_lowercase(),
                        match kind {
                            EditKind::Rename => "rename",
                            EditKind::InPlace => "in place",
                        },
                        format!("{mode:?}").to_lowercase(),
                        series.timeouts,
                    );
                }
            }
        }
        if !self.errors.is_empty() {
            out.push_str("\n## Not measured\n\n");
            for error in &self.errors {
                let _ = writeln!(out, "- {error}");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procfs::Machine;

    fn series(mode: WatchMode, kind: EditKind, applied_us: Vec<u64>) -> Series {
        Series {
            backend: Backend::Userspace,
            mode,
            kind,
            applied_us,
            timeouts: 0,
        }
    }

    #[test]
    fn rows_show_percentiles_and_the_poll_to_inotify_ratio() {
        let report = WatchReport {
            suite: "watch".to_owned(),
            label: "test".to_owned(),
            date: "2026-12-01T20:00:00Z".to_owned(),
            machine: Machine {
                nproc: 2,
                cpu_model: "cpu".to_owned(),
                kernel: "6.1".to_owned(),
                hostname: "h".to_owned(),
            },
            git_commit: "abc".to_owned(),
            services: 1000,
            edits: 3,
            series: vec![
                series(
                    WatchMode::Inotify,
                    EditKind::Rename,
                    vec![3_000, 2_000, 4_000],
                ),
                series(
                    WatchMode::Poll,
                    EditKind::Rename,
                    vec![300_000, 200_000, 400_000],
                ),
            ],
            errors: vec!["iptables: needs root (network namespaces)".to_owned()],
        };
        let text = report.render_markdown();
        assert!(
            text.contains("| userspace | rename | inotify | 3.0 ms | 4.0 ms | 4.0 ms | 0 |  |"),
            "{text}"
        );
        assert!(
            text.contains("| userspace | rename | poll | 300 ms | 400 ms | 400 ms | 0 | 100× |"),
            "{text}"
        );
        assert!(text.contains("- iptables: needs root"), "{text}");
        assert_eq!(report.stem(), "watch-20261201T200000Z");
    }
}
