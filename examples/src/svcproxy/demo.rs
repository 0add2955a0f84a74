//! `svcproxy demo`: a self-contained tour on loopback, no root needed.
//!
//! Starts two tiny HTTP backends (127.0.0.2:9080, 127.0.0.3:9080) and two UDP echo backends
//! (:9053 on the same addresses), writes `examples/tables/demo.yaml` (VIP 127.0.0.10) to a file
//! the user may edit live, and runs the userspace backend on it.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use tokio::net::UdpSocket;
use tracing::debug;

use crate::svcproxy::cli::{Cli, DemoArgs};
use crate::svcproxy::http::{self, Response};

/// The demo table: the same file the README and the tests use.
const DEMO_TABLE: &str = include_str!("../../tables/demo.yaml");
const HTTP_BACKENDS: [&str; 2] = ["127.0.0.2:9080", "127.0.0.3:9080"];
const UDP_BACKENDS: [&str; 2] = ["127.0.0.2:9053", "127.0.0.3:9053"];

pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    for backend in HTTP_BACKENDS {
        let addr: SocketAddr = backend.parse().context("demo backend address")?;
        let listener = http::bind(addr).await.context("demo HTTP backend")?;
        tokio::spawn(http::serve(listener, move |path| {
            Response::new(
                200,
                "text/plain",
                format!("hello from backend {addr} (you asked for {path})\n"),
            )
        }));
    }
    for backend in UDP_BACKENDS {
        let addr: SocketAddr = backend.parse().context("demo backend address")?;
        let socket = UdpSocket::bind(addr)
            .await
            .with_context(|| format!("demo UDP backend: cannot bind {addr}"))?;
        tokio::spawn(udp_echo(socket, addr));
    }

    let (table_path, private_dir) = match args.table.clone() {
        Some(path) => {
            std::fs::write(&path, DEMO_TABLE)
                .with_context(|| format!("cannot write the demo table to {}", path.display()))?;
            (path, None)
        }
        None => {
            let dir = private_temp_dir()?;
            let path = dir.join("demo.yaml");
            write_new_file(&path, DEMO_TABLE)?;
            (path, Some(dir))
        }
    };

    println!(
        "svcproxy demo: backends on {} (HTTP) and {} (UDP echo)",
        HTTP_BACKENDS.join(", "),
        UDP_BACKENDS.join(", ")
    );
    println!(
        "  table:   {}  (edit it: changes apply live)",
        table_path.display()
    );
    println!("  try:     curl http://127.0.0.10:8080/");
    println!("           echo hello | nc -u -w1 127.0.0.10 8053");
    println!(
        "  metrics: curl http://{}/metrics   health: curl http://{}/healthz",
        args.metrics_addr, args.metrics_addr
    );
    println!("  stop:    Ctrl-C");

    // Parsed like a command line, so every flag not given here takes its documented default.
    let metrics_addr = args.metrics_addr.to_string();
    let run_args = Cli::try_parse_from([
        OsStr::new("svcproxy"),
        OsStr::new("--services"),
        table_path.as_os_str(),
        OsStr::new("--backend"),
        OsStr::new("userspace"),
        OsStr::new("--cleanup-on-exit"),
        OsStr::new("--metrics-addr"),
        OsStr::new(&metrics_addr),
        OsStr::new("--node-address"),
        OsStr::new("127.0.0.1"),
    ])
    .context("demo flags")?
    .run;
    let outcome = crate::svcproxy::run(run_args).await;
    if let Some(dir) = private_dir {
        remove_quietly(&table_path, &dir);
    }
    outcome
}

/// A new directory in the system's temporary directory, with an unpredictable name and mode
/// 0700 (as `mkdtemp(3)`): a predictable name there is a place another user can plant a symlink
/// first, and a plain write would follow it onto any file we may write.
fn private_temp_dir() -> anyhow::Result<PathBuf> {
    use std::hash::{BuildHasher as _, Hasher as _};
    use std::os::unix::fs::DirBuilderExt as _;
    let base = std::env::temp_dir();
    let mut attempts = 0;
    loop {
        // std seeds each `RandomState` from the OS's random source: 64 unpredictable bits.
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let dir = base.join(format!("svcproxy-demo-{random:016x}"));
        // mkdir never follows a symlink at its last component, and fails if anything is there.
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists && attempts < 8 => {
                attempts += 1;
            }
            Err(err) => {
                return Err(err).with_context(|| {
                    format!(
                        "cannot create a private directory for the demo table in {}",
                        base.display()
                    )
                })
            }
        }
    }
}

/// Creates `path` (mode 0600) and writes `text` to it; never opens an existing file and never
/// follows a symlink (`O_CREAT | O_EXCL | O_NOFOLLOW`).
fn write_new_file(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(path)
        .and_then(|mut file| file.write_all(text.as_bytes()).map(|()| file))
        .with_context(|| format!("cannot write the demo table to {}", path.display()))?;
    file.flush()
        .with_context(|| format!("cannot write the demo table to {}", path.display()))
}

fn remove_quietly(path: &Path, dir: &Path) {
    let removed = std::fs::remove_file(path).and_then(|()| std::fs::remove_dir(dir));
    if let Err(err) = removed {
        debug!(file = %path.display(), error = %err, "demo table not removed");
    }
}

async fn udp_echo(socket: UdpSocket, addr: SocketAddr) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, peer)) => {
                let mut reply = format!("echo from {addr}: ").into_bytes();
                reply.extend_from_slice(&buf[..n]);
                if let Err(err) = socket.send_to(&reply, peer).await {
                    debug!(%peer, error = %err, "echo reply not sent");
                }
            }
            Err(err) => debug!(error = %err, "echo receive failed"),
        }
    }
}
