//! What the harness reads from `/proc`: a process's resident memory and CPU time, and the machine.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::BenchError;

/// Resident set size of a process, in KiB (`VmRSS` of `/proc/PID/status`).
///
/// # Errors
///
/// [`BenchError::Io`] when the file cannot be read or has no `VmRSS` line (process gone).
pub fn rss_kib(pid: u32) -> Result<u64, BenchError> {
    let path = format!("/proc/{pid}/status");
    let text =
        std::fs::read_to_string(&path).map_err(|e| BenchError::io(format!("read {path}"), e))?;
    parse_vm_rss_kib(&text).ok_or_else(|| {
        BenchError::io(
            format!("no VmRSS in {path}"),
            std::io::ErrorKind::InvalidData.into(),
        )
    })
}

fn parse_vm_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// User plus system CPU time of a process, all threads (`utime + stime` of `/proc/PID/stat`).
///
/// # Errors
///
/// [`BenchError::Io`] when the file cannot be read or parsed.
pub fn cpu_time(pid: u32) -> Result<Duration, BenchError> {
    let path = format!("/proc/{pid}/stat");
    let text =
        std::fs::read_to_string(&path).map_err(|e| BenchError::io(format!("read {path}"), e))?;
    let ticks = parse_stat_ticks(&text).ok_or_else(|| {
        BenchError::io(
            format!("cannot parse utime/stime in {path}"),
            std::io::ErrorKind::InvalidData.into(),
        )
    })?;
    Ok(Duration::from_secs_f64(
        ticks as f64 / clock_ticks_per_second() as f64,
    ))
}

/// `utime + stime` in clock ticks. Fields 14 and 15 (1-based), counted after the command name,
/// which is in parentheses and may itself hold spaces or parentheses (proc(5)).
fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_comm.split_whitespace();
    // After the name come field 3 (state) onwards: utime is field 14, so the 12th from here.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// CPU time the whole machine spent busy (every CPU's `user nice system irq softirq steal` of
/// `/proc/stat`): for kernel dataplanes, whose work (softirq) belongs to no process.
///
/// # Errors
///
/// [`BenchError::Io`] when `/proc/stat` cannot be read or parsed.
pub fn system_busy_time() -> Result<Duration, BenchError> {
    let text =
        std::fs::read_to_string("/proc/stat").map_err(|e| BenchError::io("read /proc/stat", e))?;
    let ticks = parse_busy_ticks(&text).ok_or_else(|| {
        BenchError::io(
            "cannot parse the cpu line of /proc/stat",
            std::io::ErrorKind::InvalidData.into(),
        )
    })?;
    Ok(Duration::from_secs_f64(
        ticks as f64 / clock_ticks_per_second() as f64,
    ))
}

/// Busy ticks of the aggregate `cpu` line: user nice system (idle iowait) irq softirq steal.
fn parse_busy_ticks(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|line| line.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let get = |i: usize| fields.get(i).copied().unwrap_or(0);
    Some(get(0) + get(1) + get(2) + get(5) + get(6) + get(7))
}

/// `CLK_TCK`, from `getconf` (100 on every Linux we know of, used if `getconf` fails).
pub(crate) fn clock_ticks_per_second() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|&ticks: &u64| ticks > 0)
            .unwrap_or(100)
    })
}

/// This process's soft limit on open files (`Max open files` of `/proc/self/limits`); children
/// such as the proxies inherit it. `None` when unreadable or unlimited.
pub fn open_file_limit() -> Option<u64> {
    parse_open_file_limit(&std::fs::read_to_string("/proc/self/limits").ok()?)
}

/// Descriptors a process has open (entries of `/proc/PID/fd`; another user's process needs root).
///
/// # Errors
///
/// [`BenchError::Io`] when the directory cannot be read.
pub fn open_fds(pid: u32) -> Result<usize, BenchError> {
    let path = format!("/proc/{pid}/fd");
    let entries =
        std::fs::read_dir(&path).map_err(|e| BenchError::io(format!("read {path}"), e))?;
    Ok(entries.filter(Result::is_ok).count())
}

/// Another process's soft limit on open files (`/proc/PID/limits`), as [`open_file_limit`].
pub fn open_file_limit_of(pid: u32) -> Option<u64> {
    parse_open_file_limit(&std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?)
}

/// The soft limit of the `Max open files` line of a `limits` file.
fn parse_open_file_limit(limits: &str) -> Option<u64> {
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The machine a run was made on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// CPUs available to the harness.
    pub nproc: usize,
    /// `model name` of `/proc/cpuinfo`.
    pub cpu_model: String,
    /// Kernel release (`/proc/sys/kernel/osrelease`).
    pub kernel: String,
    /// Host name.
    pub hostname: String,
}

impl Machine {
    /// Reads the current machine; unknown fields become `"unknown"`.
    pub fn current() -> Machine {
        let read = |path: &str| {
            std::fs::read_to_string(path)
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|_| "unknown".to_owned())
        };
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find(|line| line.starts_with("model name"))
                    .and_then(|line| line.split_once(':'))
                    .map(|(_, model)| model.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".to_owned());
        Machine {
            nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model,
            kernel: read("/proc/sys/kernel/osrelease"),
            hostname: read("/proc/sys/kernel/hostname"),
        }
    }
}

/// The current UTC time as RFC 3339 (`2026-11-25T14:27:41Z`), without a date crate.
pub fn utc_now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    rfc3339(secs)
}

/// Formats seconds since the epoch (civil-from-days, H. Hinnant's algorithm).
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_read_in_kib() {
        let status = "Name:\tx\nVmPeak:\t  9000 kB\nVmRSS:\t    1234 kB\nThreads:\t2\n";
        assert_eq!(parse_vm_rss_kib(status), Some(1234));
        assert_eq!(parse_vm_rss_kib("Name:\tkthread\n"), None);
    }

    #[test]
    fn stat_ticks_survive_a_name_with_spaces_and_parentheses() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime ...
        let stat = "42 (a b) c) S 1 42 42 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 1 0 100 0 0";
        assert_eq!(parse_stat_ticks(stat), Some(12));
    }

    #[test]
    fn busy_ticks_leave_out_idle_and_iowait() {
        // cpu user nice system idle iowait irq softirq steal guest guest_nice
        let stat = "cpu  10 1 5 1000 50 2 3 4 0 0\ncpu0 5 0 2 500 25 1 1 2 0 0\n";
        assert_eq!(parse_busy_ticks(stat), Some(25));
        assert!(system_busy_time().is_ok());
    }

    #[test]
    fn own_process_has_rss_and_cpu() {
        let pid = std::process::id();
        assert!(rss_kib(pid).expect("own status") > 0);
        assert!(cpu_time(pid).is_ok());
    }

    #[test]
    fn open_file_limit_is_read() {
        assert!(open_file_limit().is_some_and(|limit| limit > 0));
        assert_eq!(open_file_limit_of(std::process::id()), open_file_limit());
        assert!(open_fds(std::process::id()).expect("own fds") >= 3);
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             unlimited            unlimited            processes \n\
                      Max open files            4096                 8192                 files     \n";
        assert_eq!(parse_open_file_limit(limits), Some(4096));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_open_file_limit(unlimited), None);
    }

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_617_061), "2026-11-25T14:31:01Z");
    }
}

/// The kernel's CPU time so far on every CPU, in clock ticks: the system, irq and softirq
/// columns of `/proc/stat`'s `cpu` line (`None` when unreadable).
pub fn kernel_cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    parse_kernel_ticks(&stat)
}

/// The system + irq + softirq ticks of a `/proc/stat` text (`cpu  user nice system idle iowait
/// irq softirq ...`).
pub fn parse_kernel_ticks(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    Some(fields.get(2)? + fields.get(5)? + fields.get(6)?)
}

#[cfg(test)]
mod kernel_ticks_tests {
    use super::parse_kernel_ticks;

    #[test]
    fn system_irq_and_softirq_are_summed() {
        let stat = "cpu  100 5 200 9000 30 7 11 0 0 0\ncpu0 50 2 100 4500 15 3 5 0 0 0\n";
        assert_eq!(parse_kernel_ticks(stat), Some(200 + 7 + 11));
        assert_eq!(parse_kernel_ticks("cpu0 1 2 3\n"), None);
    }
}
