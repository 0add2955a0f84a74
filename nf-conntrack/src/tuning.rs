//! kube-proxy's conntrack tuning: raise the table's size for the node's CPUs and set the TCP
//! timeouts a proxy's long-lived connections need, through `/proc/sys` (and the module's hash
//! size in `/sys`). The plan is pure ([`plan`], from what the files hold now); [`apply`] reads,
//! plans and writes.
//!
//! As kube-proxy's defaults (`--conntrack-max-per-core 32768 --conntrack-min 131072
//! --conntrack-tcp-timeout-established 24h --conntrack-tcp-timeout-close-wait 1h`), with one
//! difference: the table's size is only ever raised, never lowered below what the host already
//! has (an operator's larger setting stays). `nf_conntrack_max` and the hash size are global and
//! the kernel refuses them outside the initial network namespace: there the writes fail and are
//! reported, the per-namespace timeouts still apply.
//!
//! ```
//! use nf_conntrack::tuning::{plan, Tuning};
//! use std::time::Duration;
//!
//! let tuning = Tuning::kube_proxy_defaults();
//! // A 2-CPU host with the kernel's defaults (65,536 entries, a 16,384-bucket hash, 5 days).
//! let now = |path: &str| match path {
//!     "/proc/sys/net/netfilter/nf_conntrack_max" => Some(65_536),
//!     "/sys/module/nf_conntrack/parameters/hashsize" => Some(16_384),
//!     "/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_established" => Some(432_000),
//!     "/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_close_wait" => Some(60),
//!     _ => None,
//! };
//! let writes = plan(&tuning, 2, now);
//! let values: Vec<(&str, u64)> = writes.iter().map(|w| (w.path, w.value)).collect();
//! assert_eq!(values, [
//!     ("/proc/sys/net/netfilter/nf_conntrack_max", 131_072), // max(2 x 32,768, 131,072)
//!     ("/sys/module/nf_conntrack/parameters/hashsize", 32_768), // a quarter of it
//!     ("/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_established", 86_400),
//!     ("/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_close_wait", 3_600),
//! ]);
//! ```

use std::time::Duration;

/// The table's size limit (global).
pub const MAX: &str = "/proc/sys/net/netfilter/nf_conntrack_max";
/// The table's hash buckets (the module's parameter, global).
pub const HASHSIZE: &str = "/sys/module/nf_conntrack/parameters/hashsize";
/// How long an established TCP flow may idle (per network namespace).
pub const TCP_TIMEOUT_ESTABLISHED: &str =
    "/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_established";
/// How long a flow in CLOSE_WAIT is kept (per network namespace).
pub const TCP_TIMEOUT_CLOSE_WAIT: &str =
    "/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_close_wait";

/// What to tune; zero (or `None`) leaves that setting alone, as kube-proxy's flags do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tuning {
    /// Table entries per CPU (kube-proxy's `--conntrack-max-per-core`).
    pub max_per_core: u64,
    /// The least table size, whatever the CPU count (`--conntrack-min`).
    pub min: u64,
    /// `--conntrack-tcp-timeout-established`.
    pub tcp_established_timeout: Option<Duration>,
    /// `--conntrack-tcp-timeout-close-wait`.
    pub tcp_close_wait_timeout: Option<Duration>,
}

impl Tuning {
    /// kube-proxy's defaults.
    pub fn kube_proxy_defaults() -> Self {
        Self {
            max_per_core: 32_768,
            min: 131_072,
            tcp_established_timeout: Some(Duration::from_secs(24 * 3600)),
            tcp_close_wait_timeout: Some(Duration::from_secs(3600)),
        }
    }

    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        let zero = |t: Option<Duration>| t.is_none_or(|t| t.is_zero());
        self.max_per_core == 0
            && zero(self.tcp_established_timeout)
            && zero(self.tcp_close_wait_timeout)
    }

    /// The table size wanted on `cpus` CPUs (0: leave it), as kube-proxy computes it.
    pub fn table_size(&self, cpus: u64) -> u64 {
        if self.max_per_core == 0 {
            return 0;
        }
        (self.max_per_core.saturating_mul(cpus)).max(self.min)
    }
}

/// One file to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// The file.
    pub path: &'static str,
    /// The value it should hold.
    pub value: u64,
}

/// The writes that bring the files `now` reads to `tuning` on `cpus` CPUs, in order (the size
/// before the hash that follows it). A file `now` cannot read is left alone (the module is
/// not loaded, or the file is not there).
pub fn plan(tuning: &Tuning, cpus: u64, now: impl Fn(&str) -> Option<u64>) -> Vec<Write> {
    let mut writes = Vec::new();
    let size = tuning.table_size(cpus);
    if size > 0 {
        if let Some(current) = now(MAX) {
            if current < size {
                writes.push(Write {
                    path: MAX,
                    value: size,
                });
                // The hash is sized to a quarter of the table, as kube-proxy does; raised only.
                if now(HASHSIZE).is_some_and(|hash| hash < size / 4) {
                    writes.push(Write {
                        path: HASHSIZE,
                        value: size / 4,
                    });
                }
            }
        }
    }
    for (path, timeout) in [
        (TCP_TIMEOUT_ESTABLISHED, tuning.tcp_established_timeout),
        (TCP_TIMEOUT_CLOSE_WAIT, tuning.tcp_close_wait_timeout),
    ] {
        let Some(seconds) = timeout.map(|t| t.as_secs()).filter(|s| *s > 0) else {
            continue;
        };
        if now(path).is_some_and(|current| current != seconds) {
            writes.push(Write {
                path,
                value: seconds,
            });
        }
    }
    writes
}

/// A write the kernel refused.
#[derive(Debug, thiserror::Error)]
#[error("cannot set {path} to {value}: {source}")]
pub struct TuningError {
    /// The file.
    pub path: &'static str,
    /// The value.
    pub value: u64,
    /// The error (outside the initial network namespace: permission denied or not supported).
    #[source]
    pub source: std::io::Error,
}

/// Reads the files, plans, and writes; returns what was written and what the kernel refused
/// (a refused size skips the hash that follows it). Needs root.
pub fn apply(tuning: &Tuning) -> (Vec<Write>, Vec<TuningError>) {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    let read = |path: &str| std::fs::read_to_string(path).ok()?.trim().parse().ok();
    let mut written = Vec::new();
    let mut refused = Vec::new();
    for write in plan(tuning, cpus, read) {
        if write.path == HASHSIZE && refused.iter().any(|e: &TuningError| e.path == MAX) {
            continue;
        }
        match std::fs::write(write.path, write.value.to_string()) {
            Ok(()) => written.push(write),
            Err(source) => refused.push(TuningError {
                path: write.path,
                value: write.value,
                source,
            }),
        }
    }
    (written, refused)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn files(entries: &[(&'static str, u64)]) -> BTreeMap<&'static str, u64> {
        entries.iter().copied().collect()
    }

    #[test]
    fn the_table_size_scales_with_cpus_above_the_minimum_and_is_only_raised() {
        let tuning = Tuning::kube_proxy_defaults();
        assert_eq!(tuning.table_size(2), 131_072);
        assert_eq!(tuning.table_size(16), 524_288);
        let host = files(&[(MAX, 262_144), (HASHSIZE, 65_536)]);
        // 2 CPUs want 131,072: the host's 262,144 stays.
        assert!(plan(&tuning, 2, |p| host.get(p).copied()).is_empty());
        // 16 CPUs want 524,288: raised, and the hash to a quarter.
        assert_eq!(
            plan(&tuning, 16, |p| host.get(p).copied()),
            [
                Write {
                    path: MAX,
                    value: 524_288
                },
                Write {
                    path: HASHSIZE,
                    value: 131_072
                }
            ]
        );
        // A hash already large enough is left.
        let big_hash = files(&[(MAX, 65_536), (HASHSIZE, 1 << 20)]);
        assert_eq!(
            plan(&tuning, 2, |p| big_hash.get(p).copied()),
            [Write {
                path: MAX,
                value: 131_072
            }]
        );
    }

    #[test]
    fn zero_leaves_a_setting_alone_and_equal_values_are_not_rewritten() {
        let host = files(&[
            (MAX, 1),
            (HASHSIZE, 1),
            (TCP_TIMEOUT_ESTABLISHED, 86_400),
            (TCP_TIMEOUT_CLOSE_WAIT, 60),
        ]);
        let off = Tuning::default();
        assert!(off.is_empty());
        assert!(plan(&off, 8, |p| host.get(p).copied()).is_empty());
        let timeouts_only = Tuning {
            tcp_established_timeout: Some(Duration::from_secs(86_400)),
            tcp_close_wait_timeout: Some(Duration::from_secs(3_600)),
            ..Tuning::default()
        };
        assert!(!timeouts_only.is_empty());
        assert_eq!(
            plan(&timeouts_only, 8, |p| host.get(p).copied()),
            [Write {
                path: TCP_TIMEOUT_CLOSE_WAIT,
                value: 3_600
            }]
        );
        // Nothing readable (no nf_conntrack module): nothing to write.
        assert!(plan(&Tuning::kube_proxy_defaults(), 8, |_| None).is_empty());
    }
}
