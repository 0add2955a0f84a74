//! Proxies under test: how to start one, where it listens, where it forwards, and its process
//! (for memory and CPU readings).
//!
//! Each kind renders its own configuration from the same backends: HAProxy in TCP mode with
//! round-robin balancing, svcproxy with a one-service table, or no proxy at all (`direct`, the
//! baseline for added latency). A proxy may also be one already running (`running`), given by
//! its address and optionally its process id.

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::BenchError;

/// The cluster IP the proxies listen on (loopback, so no root and no routes are needed).
pub const PROXY_IP: [u8; 4] = [127, 0, 0, 10];

/// svcproxy's default arguments; `{table}` is replaced by the table file's path.
pub const SVCPROXY_ARGS: &str = "--services {table}";

/// How long a proxy may take to start listening.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Which proxy to measure, and how to start it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxySpec {
    /// No proxy: the client connects straight to the first backend.
    Direct,
    /// HAProxy in TCP mode, started as `PROGRAM -db -f CONFIG`.
    Haproxy {
        /// The haproxy binary.
        program: PathBuf,
    },
    /// Our reference proxy, started as `PROGRAM ARGS...` where the argument `{table}` becomes
    /// the generated table's path (default arguments: [`SVCPROXY_ARGS`]).
    Svcproxy {
        /// The svcproxy binary.
        program: PathBuf,
        /// Its arguments, with `{table}` for the table file.
        args: Vec<String>,
    },
    /// A proxy someone else started, already forwarding to the harness's backends.
    Running {
        /// Its name in the report.
        name: String,
        /// Where it listens.
        listen: SocketAddr,
        /// Its process, for memory and CPU readings.
        pid: Option<u32>,
    },
}

impl ProxySpec {
    /// The name in reports (`direct`, `haproxy`, `svcproxy`, or the given one).
    pub fn name(&self) -> &str {
        match self {
            ProxySpec::Direct => "direct",
            ProxySpec::Haproxy { .. } => "haproxy",
            ProxySpec::Svcproxy { .. } => "svcproxy",
            ProxySpec::Running { name, .. } => name,
        }
    }

    /// Starts the proxy in front of `backends` and waits until it accepts connections.
    ///
    /// # Errors
    ///
    /// [`BenchError::Spawn`] when the program cannot start, [`BenchError::NotReady`] when it
    /// does not listen in time, [`BenchError::Io`] for the work directory.
    pub fn start(
        &self,
        backends: &[SocketAddr],
        workdir: &Path,
    ) -> Result<RunningProxy, BenchError> {
        let first = *backends
            .first()
            .ok_or_else(|| BenchError::io("start proxy", std::io::Error::other("no backends")))?;
        match self {
            ProxySpec::Direct => Ok(RunningProxy {
                name: self.name().to_owned(),
                listen: first,
                child: None,
                pid: None,
                config: String::new(),
                version: String::new(),
            }),
            ProxySpec::Running { name, listen, pid } => Ok(RunningProxy {
                name: name.clone(),
                listen: *listen,
                child: None,
                pid: *pid,
                config: String::new(),
                version: String::new(),
            }),
            ProxySpec::Haproxy { program } => {
                let listen = free_port_on(PROXY_IP)?;
                let config = render_haproxy_config(listen, backends, haproxy_maxconn());
                let path = write_file(workdir, "haproxy.cfg", &config)?;
                let mut command = Command::new(program);
                command.arg("-db").arg("-f").arg(&path);
                let version = version_line(program, "-v");
                spawn_and_wait(self.name(), command, listen, config, version, workdir)
            }
            ProxySpec::Svcproxy { program, args } => {
                let listen = free_port_on(PROXY_IP)?;
                let table = render_svcproxy_table(listen, backends);
                let path = write_file(workdir, "svcproxy.yaml", &table)?;
                let mut command = Command::new(program);
                command.args(args.iter().map(|arg| {
                    if arg == "{table}" {
                        path.clone().into_os_string()
                    } else {
                        arg.into()
                    }
                }));
                if std::env::var_os("RUST_LOG").is_none() {
                    // Like HAProxy here, no per-connection logging.
                    command.env("RUST_LOG", "warn");
                }
                let version = version_line(program, "--version");
                spawn_and_wait(self.name(), command, listen, table, version, workdir)
            }
        }
    }
}

/// A started (or adopted) proxy. Dropping it stops a process the harness started.
#[derive(Debug)]
pub struct RunningProxy {
    name: String,
    listen: SocketAddr,
    child: Option<Child>,
    pid: Option<u32>,
    config: String,
    version: String,
}

impl RunningProxy {
    /// Its name in reports.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where clients connect.
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// Its process, if there is one to read memory and CPU from.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// The configuration the harness generated for it (empty for `direct` and `running`).
    pub fn config(&self) -> &str {
        &self.config
    }

    /// The first line of its `--version` output, if any.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Whether the process the harness started is still alive (always true otherwise).
    pub fn is_alive(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => true,
        }
    }
}

impl Drop for RunningProxy {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            if let Err(e) = child.kill() {
                tracing::debug!(proxy = %self.name, error = %e, "kill (already exited?)");
            }
            if let Err(e) = child.wait() {
                tracing::warn!(proxy = %self.name, error = %e, "wait for proxy to exit");
            }
        }
    }
}

/// HAProxy's configuration: TCP mode, round robin over `backends`, no health checks and no logs
/// (svcproxy's userspace backend has neither on the data path), and timeouts long enough for
/// the idle-connection scenario. `maxconn` must fit the file descriptor limit (two per
/// connection): HAProxy refuses to start otherwise (see [`haproxy_maxconn`]).
pub fn render_haproxy_config(listen: SocketAddr, backends: &[SocketAddr], maxconn: u64) -> String {
    let mut config = format!(
        "# Generated by the bench harness: HAProxy in TCP mode in front of the harness's backends.\n\
         global\n    maxconn {maxconn}\n\n\
         defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 120s\n    timeout server 120s\n\n"
    );
    let _ = write!(
        config,
        "frontend bench\n    bind {listen}\n    maxconn {maxconn}\n    default_backend servers\n\n\
         backend servers\n    mode tcp\n    balance roundrobin\n"
    );
    for (i, backend) in backends.iter().enumerate() {
        let _ = writeln!(config, "    server s{i} {backend}");
    }
    config
}

/// svcproxy's table: one service `default/bench` on [`PROXY_IP`] at `listen`'s port, whose
/// endpoints are the backends' IPs at the backends' shared port.
pub fn render_svcproxy_table(listen: SocketAddr, backends: &[SocketAddr]) -> String {
    let target_port = backends.first().map_or(0, SocketAddr::port);
    let mut table = format!(
        "# Generated by the bench harness.\nnode: local\nservices:\n  - name: default/bench\n    \
         cluster_ips: [{}]\n    ports:\n      - {{name: tcp, protocol: tcp, port: {}, target_port: {target_port}}}\n    \
         endpoints:\n",
        listen.ip(),
        listen.port(),
    );
    for backend in backends {
        if backend.port() == target_port {
            let _ = writeln!(table, "      - {{ip: {}, node: local}}", backend.ip());
        } else {
            let _ = writeln!(
                table,
                "      - {{ip: {}, node: local, port: {}}}",
                backend.ip(),
                backend.port()
            );
        }
    }
    table
}

/// The most connections HAProxy can take under our open-file limit (which it inherits): two
/// descriptors per proxied connection, less a reserve, at most 50,000.
pub fn haproxy_maxconn() -> u64 {
    let limit = crate::procfs::open_file_limit().unwrap_or(1024);
    (limit.saturating_sub(200) / 2).clamp(100, 50_000)
}

/// A port free right now on `ip` (the kernel's choice; taken again by the proxy a moment later).
pub(crate) fn free_port_on(ip: [u8; 4]) -> Result<SocketAddr, BenchError> {
    let listener = TcpListener::bind((std::net::Ipv4Addr::from(ip), 0))
        .map_err(|e| BenchError::io(format!("find a free port on {ip:?}"), e))?;
    listener
        .local_addr()
        .map_err(|e| BenchError::io("local address", e))
}

pub(crate) fn write_file(dir: &Path, name: &str, text: &str) -> Result<PathBuf, BenchError> {
    let path = dir.join(name);
    std::fs::write(&path, text)
        .map_err(|e| BenchError::io(format!("write {}", path.display()), e))?;
    Ok(path)
}

/// The first non-empty line a program prints for `flag`, or empty.
pub(crate) fn version_line(program: &Path, flag: &str) -> String {
    Command::new(program)
        .arg(flag)
        .output()
        .ok()
        .map(|out| {
            let text = if out.stdout.is_empty() {
                out.stderr
            } else {
                out.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .find(|line| !line.trim().is_empty())
                .unwrap_or_default()
                .trim()
                .to_owned()
        })
        .unwrap_or_default()
}

/// Starts `command` with its output in a log file, and waits until `listen` accepts.
pub(crate) fn spawn_and_wait(
    name: &str,
    mut command: Command,
    listen: SocketAddr,
    config: String,
    version: String,
    workdir: &Path,
) -> Result<RunningProxy, BenchError> {
    let log_path = workdir.join(format!("{name}.log"));
    let log = std::fs::File::create(&log_path)
        .map_err(|e| BenchError::io(format!("create {}", log_path.display()), e))?;
    let log_err = log
        .try_clone()
        .map_err(|e| BenchError::io("duplicate log file", e))?;
    command.stdin(Stdio::null()).stdout(log).stderr(log_err);
    let program = command.get_program().to_string_lossy().into_owned();
    let child = command
        .spawn()
        .map_err(|error| BenchError::Spawn { program, error })?;
    let mut proxy = RunningProxy {
        name: name.to_owned(),
        listen,
        pid: Some(child.id()),
        child: Some(child),
        config,
        version,
    };
    let start = Instant::now();
    while start.elapsed() < READY_TIMEOUT {
        if !proxy.is_alive() {
            break;
        }
        if std::net::TcpStream::connect_timeout(&listen, Duration::from_millis(200)).is_ok() {
            tracing::info!(proxy = name, %listen, pid = proxy.pid, "proxy ready");
            return Ok(proxy);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = proxy
        .child
        .as_mut()
        .and_then(|child| child.try_wait().ok().flatten());
    let log_text = std::fs::read_to_string(&log_path).unwrap_or_default();
    let lines: Vec<&str> = log_text.lines().collect();
    let tail = lines[lines.len().saturating_sub(10)..].join("\n");
    Err(BenchError::NotReady {
        proxy: name.to_owned(),
        addr: listen,
        waited: start.elapsed(),
        detail: match status {
            Some(status) => format!(": exited with {status}; log:\n{tail}"),
            None => format!("; log:\n{tail}"),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs() -> (SocketAddr, Vec<SocketAddr>) {
        let listen = "127.0.0.10:40000".parse().expect("literal");
        let backends = vec![
            "127.0.0.2:9000".parse().expect("literal"),
            "127.0.0.3:9000".parse().expect("literal"),
        ];
        (listen, backends)
    }

    #[test]
    fn haproxy_config_is_tcp_round_robin_over_every_backend() {
        let (listen, backends) = addrs();
        let config = render_haproxy_config(listen, &backends, 9000);
        let want = "\
# Generated by the bench harness: HAProxy in TCP mode in front of the harness's backends.
global
    maxconn 9000

defaults
    mode tcp
    timeout connect 5s
    timeout client 120s
    timeout server 120s

frontend bench
    bind 127.0.0.10:40000
    maxconn 9000
    default_backend servers

backend servers
    mode tcp
    balance roundrobin
    server s0 127.0.0.2:9000
    server s1 127.0.0.3:9000
";
        assert_eq!(config, want, "got:\n{config}");
    }

    #[test]
    #[ignore = "needs haproxy (apt-get install haproxy): CI installs it and runs --include-ignored"]
    fn haproxy_accepts_the_generated_config() {
        let status = Command::new("haproxy")
            .arg("-v")
            .stdout(Stdio::null())
            .status()
            .expect("haproxy is installed (apt-get install haproxy)");
        assert!(status.success());
        let dir = std::env::temp_dir().join(format!("bench-cfg-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let (listen, backends) = addrs();
        let path = write_file(
            &dir,
            "haproxy.cfg",
            &render_haproxy_config(listen, &backends, haproxy_maxconn()),
        )
        .expect("write config");
        let out = Command::new("haproxy")
            .arg("-c")
            .arg("-f")
            .arg(&path)
            .output()
            .expect("run haproxy -c");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            out.status.success(),
            "haproxy -c rejected the config: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn haproxy_maxconn_fits_the_descriptor_limit() {
        let maxconn = haproxy_maxconn();
        assert!((100..=50_000).contains(&maxconn), "{maxconn}");
    }

    #[test]
    fn svcproxy_table_lists_the_backends_as_endpoints() {
        let (listen, backends) = addrs();
        let table = render_svcproxy_table(listen, &backends);
        let want = "\
# Generated by the bench harness.
node: local
services:
  - name: default/bench
    cluster_ips: [127.0.0.10]
    ports:
      - {name: tcp, protocol: tcp, port: 40000, target_port: 9000}
    endpoints:
      - {ip: 127.0.0.2, node: local}
      - {ip: 127.0.0.3, node: local}
";
        assert_eq!(table, want, "got:\n{table}");
        let parsed = proxy_core::file::parse_table(&table, "generated").expect("a valid table");
        assert_eq!((parsed.len(), parsed.endpoint_count()), (1, 2));
    }

    #[test]
    fn direct_listens_on_the_first_backend_and_has_no_process() {
        let (_, backends) = addrs();
        let proxy = ProxySpec::Direct
            .start(&backends, &std::env::temp_dir())
            .expect("direct needs nothing");
        assert_eq!(proxy.listen(), backends[0]);
        assert_eq!(proxy.pid(), None);
    }

    #[test]
    fn a_program_that_exits_at_once_is_not_ready_with_its_status() {
        // Like today's placeholder svcproxy (`fn main() {}`): it starts, then exits.
        let (_, backends) = addrs();
        let dir = std::env::temp_dir().join(format!("bench-exit-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let spec = ProxySpec::Svcproxy {
            program: "true".into(),
            args: Vec::new(),
        };
        let err = spec.start(&backends, &dir).expect_err("never listens");
        let _ = std::fs::remove_dir_all(&dir);
        match &err {
            BenchError::NotReady { proxy, detail, .. } => {
                assert_eq!(proxy, "svcproxy");
                assert!(detail.contains("exited with exit status: 0"), "{err}");
            }
            other => panic!("want NotReady, got {other}"),
        }
    }

    #[test]
    fn svcproxy_gets_the_table_path_in_place_of_the_placeholder() {
        let (_, backends) = addrs();
        let dir = std::env::temp_dir().join(format!("bench-args-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let copy = dir.join("seen.yaml");
        // A stand-in that copies the file it was given, then exits.
        let spec = ProxySpec::Svcproxy {
            program: "sh".into(),
            args: vec![
                "-c".to_owned(),
                format!("cp \"$0\" {}", copy.display()),
                "{table}".to_owned(),
            ],
        };
        let err = spec.start(&backends, &dir).expect_err("never listens");
        let seen = std::fs::read_to_string(&copy);
        let _ = std::fs::remove_dir_all(&dir);
        assert!(matches!(err, BenchError::NotReady { .. }), "{err}");
        let seen = seen.expect("the stand-in was given a readable table path");
        assert!(seen.contains("name: default/bench"), "{seen}");
    }

    #[test]
    fn a_missing_program_is_a_spawn_error() {
        let (_, backends) = addrs();
        let dir = std::env::temp_dir().join(format!("bench-spawn-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let spec = ProxySpec::Svcproxy {
            program: "/nonexistent/svcproxy".into(),
            args: Vec::new(),
        };
        let err = spec.start(&backends, &dir).expect_err("no such program");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(matches!(err, BenchError::Spawn { .. }), "{err}");
    }
}
