//! The limits suite's markdown report: one table per scenario.

use std::fmt::Write as _;

use crate::load::RateResult;

use super::report::LimitsReport;

impl LimitsReport {
    /// The markdown report: one table per scenario.
    pub fn render_markdown(&self) -> String {
        let mut out = String::new();
        let m = &self.machine;
        let _ = write!(
            out,
            "# limits: {}\n\n{}, commit {}, {} CPUs ({}), kernel {}, host {}. svcproxy: `{}`.\n",
            self.label,
            self.date,
            self.git_commit,
            m.nproc,
            m.cpu_model,
            m.kernel,
            m.hostname,
            self.settings.svcproxy
        );
        self.render_tcp_idle(&mut out);
        self.render_udp(&mut out);
        self.render_fd_limit(&mut out);
        if !self.errors.is_empty() || !self.skipped.is_empty() {
            out.push_str("\n## Not measured\n\n");
            for error in &self.errors {
                let _ = writeln!(out, "- {}", one_line(error));
            }
            for skipped in &self.skipped {
                let _ = writeln!(out, "- {}: {}", skipped.name, one_line(&skipped.reason));
            }
        }
        out
    }

    fn render_tcp_idle(&self, out: &mut String) {
        if self.tcp_idle.is_empty() {
            return;
        }
        let _ = write!(
            out,
            "\n## Memory per idle TCP connection\n\n\
             Each connection made one {}-byte request, so the proxy holds both sides; {} warm-up \
             connections stay open under the baseline. `VmRSS` of the proxy process.\n\n\
             | proxy | connections open | RSS, warm-up only | RSS with them | per connection | RSS 1 s after closing them |\n\
             |---|---:|---:|---:|---:|---:|\n",
            crate::load::SMALL_MESSAGE,
            self.settings.warmup
        );
        for idle in &self.tcp_idle {
            let _ = writeln!(
                out,
                "| {} | {} of {} | {} | {} | {} | {} |",
                idle.proxy,
                thousands(idle.opened as u64),
                thousands(idle.connections as u64),
                kib(idle.rss_base_kib),
                kib(idle.rss_open_kib),
                idle.bytes_per_connection().map_or_else(dash, bytes),
                kib(idle.rss_closed_kib),
            );
        }
    }

    fn render_udp(&self, out: &mut String) {
        let Some(udp) = &self.udp else { return };
        let _ = write!(
            out,
            "\n## Memory per UDP flow (svcproxy)\n\n\
             One client socket (one source port on loopback) per flow, one datagram echoed each; \
             {} warm-up flows under the baseline. Flows expire after the backend's UDP idle \
             timeout (30 s by default; svcproxy has no flag for it).\n\n\
             | flows answered / held | RSS, warm-up only | RSS with them | per flow | after they expired (kept) | {settled} s later | a second wave as large |\n\
             |---:|---:|---:|---:|---:|---:|---:|\n",
            self.settings.warmup,
            settled = super::report::SETTLED_AFTER_S,
        );
        let settled = udp.rss_settled_kib.map_or_else(dash, |rss| {
            format!(
                "{} (+{})",
                kib(rss),
                kib(rss.saturating_sub(udp.rss_base_kib))
            )
        });
        let expired = match (udp.rss_expired_kib, udp.expired_after_s) {
            (Some(rss), Some(after)) => format!(
                "{} (+{}) after {after:.0} s",
                kib(rss),
                kib(rss.saturating_sub(udp.rss_base_kib))
            ),
            (Some(rss), None) => format!(
                "{} with {} still held",
                kib(rss),
                udp.held_after_wait
                    .map_or_else(dash, |h| thousands(h as u64))
            ),
            _ => "not waited".to_owned(),
        };
        let second = match (udp.rss_second_wave_kib, udp.rss_expired_kib) {
            (Some(second), Some(expired)) => {
                format!("{} (+{})", kib(second), kib(second.saturating_sub(expired)))
            }
            _ => dash(),
        };
        let _ = writeln!(
            out,
            "| {} / {} | {} | {} | {} | {} | {} | {} |",
            thousands(udp.answered as u64),
            udp.held.map_or_else(dash, |h| thousands(h as u64)),
            kib(udp.rss_base_kib),
            kib(udp.rss_with_kib),
            udp.bytes_per_flow().map_or_else(dash, bytes),
            expired,
            settled,
            second,
        );
    }

    fn render_fd_limit(&self, out: &mut String) {
        let Some(fd) = &self.fd_limit else { return };
        let s = &self.settings;
        let _ = write!(
            out,
            "\n## Connection rate at the descriptor limit\n\n\
             svcproxy under `prlimit --nofile={n}:{n}` (read back from `/proc/PID/limits`: {read}); \
             the limits the userspace backend derives from it: {tcp} TCP connections, {port} per \
             service port, {udp} UDP flows. The hog services get {hog} connection attempts each, \
             held open (refused past the limits); the figures are the **other** service's new \
             connections (connect, one {msg}-byte request, close) at {rate}/s for {d} s (open loop) \
             and as fast as {c} clients go for {d} s.\n\n\
             | phase | hog held / refused | proxy descriptors (UDP flows) | fixed rate: done (errors) | p50 | p99 | max rate: conn/s (errors) | p50 | p99 | proxy refusals: port / global limit, accept errors |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
            n = s.nofile,
            read = fd.nofile_read_back.map_or_else(dash, thousands),
            tcp = thousands(fd.limits.tcp as u64),
            port = thousands(fd.limits.tcp_per_port as u64),
            udp = thousands(fd.limits.udp as u64),
            hog = thousands(s.hog_attempts as u64),
            msg = crate::load::SMALL_MESSAGE,
            rate = thousands(u64::from(s.fixed_rate)),
            d = s.duration_s,
            c = s.max_clients,
        );
        for phase in &fd.phases {
            let p = |r: &RateResult, pick: fn(&crate::stats::Summary) -> f64| {
                r.latency.as_ref().map_or_else(dash, |l| micros(pick(l)))
            };
            let count = |v: Option<f64>| v.map_or_else(dash, |v| thousands(v as u64));
            let _ = writeln!(
                out,
                "| {} | {} / {} | {} of {} ({}) | {} ({}) | {} | {} | {} ({}) | {} | {} | {} / {}, {} |",
                phase.name,
                thousands(phase.hog_held as u64),
                thousands(phase.hog_refused),
                phase.open_fds.map_or_else(dash, |n| thousands(n as u64)),
                thousands(fd.nofile_read_back.unwrap_or(s.nofile)),
                count(phase.udp_flows_held),
                thousands(phase.fixed.ops),
                thousands(phase.fixed.errors),
                p(&phase.fixed, |l| l.p50_us),
                p(&phase.fixed, |l| l.p99_us),
                thousands(phase.max.ops_per_s.round() as u64),
                thousands(phase.max.errors),
                p(&phase.max, |l| l.p50_us),
                p(&phase.max, |l| l.p99_us),
                count(phase.refused_port_limit),
                count(phase.refused_global_limit),
                count(phase.accept_errors),
            );
        }
        let Some((baseline, loaded)) = fd.phases.split_first() else {
            return;
        };
        out.push_str("\nAgainst the first phase (no idle load):\n\n");
        for phase in loaded {
            let ratio =
                |r: &RateResult, b: &RateResult, pick: fn(&crate::stats::Summary) -> f64| match (
                    &r.latency, &b.latency,
                ) {
                    (Some(l), Some(base)) if pick(base) > 0.0 => {
                        format!("{:.2}×", pick(l) / pick(base))
                    }
                    _ => dash(),
                };
            let rate = if baseline.max.ops_per_s > 0.0 {
                format!("{:.2}×", phase.max.ops_per_s / baseline.max.ops_per_s)
            } else {
                dash()
            };
            let _ = writeln!(
                out,
                "- {}: fixed-rate p50 {}, p99 {}; max rate {rate}{}",
                phase.name,
                ratio(&phase.fixed, &baseline.fixed, |l| l.p50_us),
                ratio(&phase.fixed, &baseline.fixed, |l| l.p99_us),
                phase
                    .fixed
                    .first_error
                    .as_ref()
                    .or(phase.max.first_error.as_ref())
                    .map_or_else(String::new, |e| format!("; first error: {}", one_line(e))),
            );
        }
    }
}

fn dash() -> String {
    "–".to_owned()
}

fn one_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_owned()
}

/// `12,345`.
pub fn thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// KiB as `850 KiB` or `12.3 MiB`.
pub fn kib(value: u64) -> String {
    if value >= 1024 {
        format!("{:.1} MiB", value as f64 / 1024.0)
    } else {
        format!("{value} KiB")
    }
}

/// Bytes as `512 B` or `2.4 KiB`.
pub fn bytes(value: f64) -> String {
    if value >= 1024.0 {
        format!("{:.1} KiB", value / 1024.0)
    } else {
        format!("{value:.0} B")
    }
}

/// Microseconds as `85 µs`, `1.23 ms` or `14.5 s`.
pub fn micros(value: f64) -> String {
    if value >= 1e6 {
        format!("{:.1} s", value / 1e6)
    } else if value >= 1e3 {
        format!("{:.2} ms", value / 1e3)
    } else {
        format!("{value:.0} µs")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::report::tests::report;

    #[test]
    fn markdown_has_a_row_per_figure_and_ratios_against_the_baseline() {
        let md = report().render_markdown();
        for want in [
            "| svcproxy | 2,000 of 2,000 | 7.8 MiB | 11.7 MiB | 2.0 KiB | 10.7 MiB |",
            "| 4,000 / 4,050 | 7.8 MiB | 14.6 MiB | 1.8 KiB | 8.8 MiB (+1000 KiB) after 31 s | 7.8 MiB (+0 KiB) | 9.3 MiB (+500 KiB) |",
            "prlimit --nofile=4096:4096` (read back from `/proc/PID/limits`: 4,096)",
            "959 TCP connections, 479 per service port, 1,918 UDP flows",
            "| no idle load | 0 / 0 | 120 of 4,096 (–) | 1,000 (0) | 100 µs | 400 µs | 2,000 (0) | 300 µs | 900 µs | 0 / 0, 0 |",
            "- hog past its port limit: fixed-rate p50 1.50×, p99 2.00×; max rate 0.75×\n",
            "- two hogs past the global limit: fixed-rate p50 1.00×, p99 0.25×; max rate 0.00×; first error: read response: connection reset\n",
        ] {
            assert!(md.contains(want), "missing {want:?} in:\n{md}");
        }
        assert!(!md.contains("Not measured"), "{md}");
    }

    #[test]
    fn units_read_naturally() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(kib(850), "850 KiB");
        assert_eq!(kib(1_024), "1.0 MiB");
        assert_eq!(kib(12_595), "12.3 MiB");
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes(2_458.0), "2.4 KiB");
        assert_eq!(micros(85.0), "85 µs");
        assert_eq!(micros(1_234.0), "1.23 ms");
        assert_eq!(micros(14_500_000.0), "14.5 s");
    }
}
