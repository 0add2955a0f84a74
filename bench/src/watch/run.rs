//! `bench watch-run`: one svcproxy on a table of N services, edited again and again, with each
//! edit's time to reach the dataplane. Runs where the dataplane is: on the host for the userspace
//! backend, inside the node namespace for iptables (`ip netns exec`), and prints its series as
//! one JSON line.
//!
//! An edit is applied when svcproxy's `/healthz` shows a sync that ended after the edit began
//! (`lastUpdated`, the wall-clock end of the last successful sync, in milliseconds) and its
//! `/metrics` shows the edited table's service count. Each edit adds or removes one service
//! (`default/probe`), so the count tells the edit's sync from a periodic resync.

use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::child::ProxyProcess;
use crate::error::BenchError;
use crate::limits::prom;

use super::{Backend, EditKind, WatchMode};

/// Longer than the sync loop's minimum period (1 s): each edit's sync runs at once.
const GAP: Duration = Duration::from_millis(1_100);
/// The longest one edit may take to apply before it counts as a timeout.
const EDIT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest the first sync may take.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How often `/healthz` is read while waiting.
const PROBE_EVERY: Duration = Duration::from_millis(2);

/// `bench watch-run`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// The svcproxy binary.
    #[arg(long)]
    pub svcproxy: PathBuf,
    /// The backend.
    #[arg(long, value_enum)]
    pub backend: Backend,
    /// How svcproxy watches its file.
    #[arg(long, value_enum)]
    pub mode: WatchMode,
    /// Services in the table.
    #[arg(long)]
    pub services: usize,
    /// Timed edits per kind (one more, untimed, warms up).
    #[arg(long)]
    pub edits: usize,
    /// Where the table and svcproxy's log go.
    #[arg(long)]
    pub workdir: PathBuf,
}

/// One backend × watch mode × kind of edit: the edits' times to apply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// The backend.
    pub backend: Backend,
    /// How svcproxy watched its file.
    pub mode: WatchMode,
    /// How the file was edited.
    pub kind: EditKind,
    /// Each timed edit's time from the edit (the rename, or the start of the write in place) to
    /// the end of its sync, microseconds.
    pub applied_us: Vec<u64>,
    /// Edits not applied within the timeout.
    pub timeouts: usize,
}

/// Runs the edits and prints the series as one JSON line.
///
/// # Errors
///
/// [`BenchError`] when svcproxy does not start or its status cannot be read.
pub fn run(args: &RunArgs) -> Result<(), BenchError> {
    let series = measure(args)?;
    let json = serde_json::to_string(&series).map_err(|source| BenchError::Json {
        path: "<stdout>".into(),
        source,
    })?;
    println!("{json}");
    Ok(())
}

fn measure(args: &RunArgs) -> Result<Vec<Series>, BenchError> {
    std::fs::create_dir_all(&args.workdir)
        .map_err(|e| BenchError::io(format!("create {}", args.workdir.display()), e))?;
    let path = args.workdir.join("table.yaml");
    let table = Table {
        backend: args.backend,
        services: args.services,
    };
    replace(&path, &table.render(false))?;
    let status = free_port()?;
    let mut proxy = start_proxy(args, &path, status)?;
    let mut series = Vec::new();
    let mut with_probe = false;
    let result = (|| {
        wait_first_sync(&mut proxy, status)?;
        for kind in [EditKind::Rename, EditKind::InPlace] {
            let mut timed = Series {
                backend: args.backend,
                mode: args.mode,
                kind,
                applied_us: Vec::new(),
                timeouts: 0,
            };
            for edit in 0..=args.edits {
                // A varying pause, so that edits fall at every phase of a poll.
                std::thread::sleep(GAP + Duration::from_millis((edit as u64 * 53) % 200));
                with_probe = !with_probe;
                let want = table.service_ports(with_probe);
                let took = edit_and_wait(&path, kind, &table.render(with_probe), status, want)?;
                if edit == 0 {
                    continue;
                }
                match took {
                    Some(took) => timed.applied_us.push(took),
                    None => timed.timeouts += 1,
                }
            }
            series.push(timed);
        }
        Ok(())
    })();
    proxy.stop();
    result.map(|()| series)
}

/// A generated table: `services` one-port services, plus `default/probe` when asked.
struct Table {
    backend: Backend,
    services: usize,
}

impl Table {
    fn service_ports(&self, with_probe: bool) -> usize {
        self.services + usize::from(with_probe)
    }

    /// The `i`th service's VIP and port: userspace listens on loopback; iptables takes
    /// 198.19.0.0/16 (inside 198.18.0.0/15, in the namespace only).
    fn vip(&self, i: usize) -> (Ipv4Addr, u16) {
        let (hi, lo) = ((i / 250) as u8, (i % 250 + 1) as u8);
        match self.backend {
            Backend::Userspace => (Ipv4Addr::new(127, 77, hi, lo), 18_080),
            Backend::Iptables => (Ipv4Addr::new(198, 19, hi, lo), 80),
        }
    }

    fn render(&self, with_probe: bool) -> String {
        let endpoint = match self.backend {
            Backend::Userspace => Ipv4Addr::new(127, 0, 0, 1),
            Backend::Iptables => Ipv4Addr::new(198, 18, 1, 1),
        };
        let mut yaml = "# Generated by bench watch.\nnode: bench\nservices:\n".to_owned();
        let mut service = |name: String, i: usize| {
            let (vip, port) = self.vip(i);
            let _ = write!(
                yaml,
                "  - name: {name}\n    cluster_ips: [{vip}]\n    ports: [{{name: http, port: {port}, target_port: 8080}}]\n    endpoints: [{{ip: {endpoint}}}]\n"
            );
        };
        for i in 0..self.services {
            service(format!("default/svc-{i}"), i);
        }
        if with_probe {
            service("default/probe".to_owned(), self.services);
        }
        yaml
    }
}

/// Starts svcproxy under test (killed on drop if not stopped).
fn start_proxy(
    args: &RunArgs,
    table: &Path,
    status: SocketAddr,
) -> Result<ProxyProcess, BenchError> {
    let log = args.workdir.join("svcproxy.log");
    let backend = match args.backend {
        Backend::Userspace => "userspace",
        Backend::Iptables => "iptables",
    };
    let mode = match args.mode {
        WatchMode::Inotify => "inotify",
        WatchMode::Poll => "poll",
    };
    let mut command = Command::new(&args.svcproxy);
    command
        .arg("--services")
        .arg(table)
        .args(["--backend", backend, "--metrics-addr", &status.to_string()])
        .env("SVCPROXY_WATCH", mode)
        .env("RUST_LOG", "info");
    ProxyProcess::spawn(&mut command, log, "watch", "svcproxy")
}

fn wait_first_sync(proxy: &mut ProxyProcess, status: SocketAddr) -> Result<(), BenchError> {
    let started = Instant::now();
    while started.elapsed() < START_TIMEOUT {
        proxy.check_alive()?;
        if last_updated(status).is_some_and(|at| at > 0.0) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(BenchError::Scenario {
        scenario: "watch".to_owned(),
        proxy: "svcproxy".to_owned(),
        detail: format!("no sync within {START_TIMEOUT:?}"),
    })
}

/// Writes the table as `kind` says and waits until a sync of it ended; returns the time from the
/// edit (the rename, or the start of the write in place) to the end of that sync, or `None` after [`EDIT_TIMEOUT`].
fn edit_and_wait(
    path: &Path,
    kind: EditKind,
    text: &str,
    status: SocketAddr,
    want_service_ports: usize,
) -> Result<Option<u64>, BenchError> {
    let mut before = last_updated(status).unwrap_or(0.0);
    let (edited_at, edited) = match kind {
        EditKind::Rename => {
            // The edit is the rename. The temporary file is written first, and a tick of the
            // file system's clock before the rename, so that a poll can tell a rename from a
            // write (its change time after its mtime), as it can for an editor's save.
            let tmp = temporary(path);
            std::fs::write(&tmp, text)
                .map_err(|e| BenchError::io(format!("write {}", tmp.display()), e))?;
            std::thread::sleep(Duration::from_millis(20));
            let start = (unix_seconds(SystemTime::now()), Instant::now());
            std::fs::rename(&tmp, path).map_err(|e| {
                BenchError::io(
                    format!("rename {} over {}", tmp.display(), path.display()),
                    e,
                )
            })?;
            start
        }
        EditKind::InPlace => {
            // Truncate, write, close: what `cat > table.yaml` or an editor writing in place does.
            let start = (unix_seconds(SystemTime::now()), Instant::now());
            std::fs::write(path, text)
                .map_err(|e| BenchError::io(format!("write {}", path.display()), e))?;
            start
        }
    };
    while edited.elapsed() < EDIT_TIMEOUT {
        std::thread::sleep(PROBE_EVERY);
        let Some(at) = last_updated(status) else {
            continue;
        };
        if at <= before {
            continue;
        }
        // A sync ended; is it this edit's (not a periodic resync of the old table)?
        let ports = prom::scrape(status)
            .ok()
            .and_then(|text| prom::sum(&text, "svcproxy_sync_service_ports", &[]));
        if ports == Some(want_service_ports as f64) {
            // `lastUpdated` has millisecond resolution; a sync cannot end before the edit began.
            let took_s = (at - edited_at).max(0.0);
            return Ok(Some((took_s * 1e6).round() as u64));
        }
        before = at;
    }
    Ok(None)
}

/// `lastUpdated` of `http://ADDR/healthz`: the wall-clock end of the last successful sync.
pub(crate) fn last_updated(addr: SocketAddr) -> Option<f64> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    stream
        .write_all(b"GET /healthz HTTP/1.0\r\nHost: bench\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    parse_last_updated(&response)
}

fn parse_last_updated(response: &str) -> Option<f64> {
    let (_, rest) = response.split_once("\"lastUpdated\":")?;
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end].trim().parse().ok()
}

fn unix_seconds(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The temporary file beside `path` that is renamed over it.
fn temporary(path: &Path) -> PathBuf {
    path.with_extension("yaml.tmp")
}

/// Writes a temporary file beside `path` and renames it over `path`.
fn replace(path: &Path, text: &str) -> Result<(), BenchError> {
    let tmp = temporary(path);
    std::fs::write(&tmp, text)
        .map_err(|e| BenchError::io(format!("write {}", tmp.display()), e))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        BenchError::io(
            format!("rename {} over {}", tmp.display(), path.display()),
            e,
        )
    })
}

fn free_port() -> Result<SocketAddr, BenchError> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map_err(|e| BenchError::io("find a free port on 127.0.0.1", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_last_updated_from_the_healthz_body() {
        let response = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"healthy\": true, \"degraded\": false, \"problems\": [], \"lastUpdated\": 1764617000.123, \"currentTime\": 1764617001.000}\n";
        assert_eq!(parse_last_updated(response), Some(1_764_617_000.123));
        assert_eq!(parse_last_updated("HTTP/1.1 404 Not Found\r\n\r\n"), None);
    }

    #[test]
    fn the_table_parses_and_the_probe_adds_one_service_port() {
        for backend in [Backend::Userspace, Backend::Iptables] {
            let table = Table {
                backend,
                services: 300,
            };
            for with_probe in [false, true] {
                let parsed = proxy_core::file::parse_table(&table.render(with_probe), "generated")
                    .expect("a valid table");
                assert_eq!(parsed.len(), table.service_ports(with_probe));
            }
        }
    }
}
