//! Issue #11's suite (`bench watch`): how long an edit to svcproxy's table file takes to reach
//! the dataplane, with the inotify watcher and with the polling it replaced, side by side in one
//! run.
//!
//! For each backend (userspace on the host's loopback; iptables inside a fresh node namespace,
//! [`crate::netns::Topology`]) and each watch mode, a fresh svcproxy runs a table of N services
//! and the file is edited again and again: renamed over (an editor, `sed -i`) and written in place
//! and closed (`cat > table.yaml`). Each edit adds or removes one service; its time runs from the
//! rename, or the start of the write in place, to the end of the sync that applied it ([`run`]). The polling mode is the
//! same binary with `SVCPROXY_WATCH=poll` and the default `--poll-interval-ms 500 --settle-ms
//! 1000`: the behaviour before issue #11.
//!
//! The measuring side runs where the dataplane is: this harness re-executes itself as `bench
//! watch-run`, inside the namespace for iptables, and reads its series as JSON.

mod markdown;
pub mod run;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::error::BenchError;
use crate::netns::{self, Role, Topology};
use crate::procfs::{self, Machine};
use crate::report::{read_json, run_stem, write_file, write_json};
use crate::suite::{git_commit, WorkDir};

use self::run::Series;

/// The backends measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// In-process L4 proxy, on loopback.
    Userspace,
    /// iptables rules, in a network namespace (root).
    Iptables,
}

/// How svcproxy watches its table file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum WatchMode {
    /// inotify (issue #11).
    Inotify,
    /// Polling every 500 ms, in-place writes settling for 1 s (before issue #11).
    Poll,
}

/// How the file is edited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EditKind {
    /// A temporary file renamed over the table.
    Rename,
    /// Truncated, written and closed.
    InPlace,
}

/// `bench watch`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct WatchArgs {
    /// The svcproxy binary.
    #[arg(long, default_value = "target/release/svcproxy")]
    pub svcproxy: PathBuf,
    /// Services in the table (preset: 1,000; quick 100).
    #[arg(long)]
    pub services: Option<usize>,
    /// Timed edits per backend, mode and kind of edit (preset: 30; quick 5).
    #[arg(long)]
    pub edits: Option<usize>,
    /// Which backends (iptables needs root).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Backend::Userspace, Backend::Iptables])]
    pub backends: Vec<Backend>,
    /// A short smoke run.
    #[arg(long)]
    pub quick: bool,
    /// Where the results go.
    #[arg(long, default_value = "bench/results")]
    pub out: PathBuf,
    /// The run's label in titles.
    #[arg(long)]
    pub label: Option<String>,
}

/// Everything one `bench watch` run measured, as written to `<out>/watch-<stamp>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchReport {
    /// `watch`.
    pub suite: String,
    /// Shown in the title.
    pub label: String,
    /// When it started, RFC 3339 UTC.
    pub date: String,
    /// Where it ran.
    pub machine: Machine,
    /// `git rev-parse --short HEAD` of the working tree.
    pub git_commit: String,
    /// Services in the table.
    pub services: usize,
    /// Timed edits per series.
    pub edits: usize,
    /// The series measured.
    pub series: Vec<Series>,
    /// What could not be measured, and why.
    pub errors: Vec<String>,
}

impl WatchReport {
    /// `watch-<date without separators>`.
    pub fn stem(&self) -> String {
        run_stem(&self.suite, &self.date)
    }

    /// Writes `<stem>.json` and `<stem>.md` into `dir`; returns their paths.
    ///
    /// # Errors
    ///
    /// [`BenchError::Io`] or [`BenchError::Json`] when a file cannot be written.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>, BenchError> {
        let mut written = vec![write_json(dir, &self.stem(), self)?];
        written.extend(self.write_rendered(dir)?);
        Ok(written)
    }

    /// Writes only `<stem>.md` into `dir`.
    ///
    /// # Errors
    ///
    /// [`BenchError::Io`] when the file cannot be written.
    pub fn write_rendered(&self, dir: &Path) -> Result<Vec<PathBuf>, BenchError> {
        let path = dir.join(format!("{}.md", self.stem()));
        write_file(&path, self.render_markdown())?;
        Ok(vec![path])
    }

    /// Reads a run back from its JSON file.
    ///
    /// # Errors
    ///
    /// [`BenchError::Io`] or [`BenchError::Json`].
    pub fn read(path: &Path) -> Result<Self, BenchError> {
        read_json(path)
    }
}

/// Runs every backend in both watch modes; a backend that cannot run is reported in `errors`.
///
/// # Errors
///
/// [`BenchError::Io`] when the work directory or this harness's own path cannot be had.
pub fn run_watch(args: &WatchArgs) -> Result<WatchReport, BenchError> {
    let date = procfs::utc_now_rfc3339();
    let services = args
        .services
        .unwrap_or(if args.quick { 100 } else { 1_000 })
        .max(1);
    let edits = args.edits.unwrap_or(if args.quick { 5 } else { 30 }).max(1);
    let exe = std::env::current_exe().map_err(|e| BenchError::io("find this harness", e))?;
    let svcproxy = std::path::absolute(&args.svcproxy)
        .map_err(|e| BenchError::io(format!("resolve {}", args.svcproxy.display()), e))?;
    let workdir = WorkDir::create()?;
    let mut series = Vec::new();
    let mut errors = Vec::new();
    if !svcproxy.is_file() {
        errors.push(format!(
            "binary {} not found (cargo build --release -p examples --bin svcproxy)",
            svcproxy.display()
        ));
    }
    for &backend in args.backends.iter().filter(|_| svcproxy.is_file()) {
        if backend == Backend::Iptables && !netns::is_root() {
            errors.push("iptables: needs root (network namespaces)".to_owned());
            continue;
        }
        for mode in [WatchMode::Inotify, WatchMode::Poll] {
            let spec = run::RunArgs {
                svcproxy: svcproxy.clone(),
                backend,
                mode,
                services,
                edits,
                workdir: workdir
                    .0
                    .join(format!("{backend:?}-{mode:?}").to_lowercase()),
            };
            tracing::info!(?backend, ?mode, services, edits, "measuring edit → applied");
            match run_one(&exe, &spec) {
                Ok(measured) => series.extend(measured),
                Err(e) => errors.push(format!("{backend:?} {mode:?}: {e}")),
            }
        }
    }
    Ok(WatchReport {
        suite: "watch".to_owned(),
        label: args.label.clone().unwrap_or_else(|| {
            if args.quick {
                "quick".to_owned()
            } else {
                "edit → applied".to_owned()
            }
        }),
        date,
        machine: Machine::current(),
        git_commit: git_commit(),
        services,
        edits,
        series,
        errors,
    })
}

/// Runs `exe watch-run ...` where the backend's dataplane is and reads its series.
fn run_one(exe: &Path, spec: &run::RunArgs) -> Result<Vec<Series>, BenchError> {
    // A fresh namespace per run, so no run inherits another's rules.
    let topology = match spec.backend {
        Backend::Userspace => None,
        Backend::Iptables => Some(Topology::create(
            &format!("bw{}{:?}", std::process::id(), spec.mode).to_lowercase(),
            1,
        )?),
    };
    let mut command = match &topology {
        Some(topology) => topology.command(Role::Node, exe),
        None => Command::new(exe),
    };
    command
        .arg("watch-run")
        .arg("--svcproxy")
        .arg(&spec.svcproxy)
        .args(["--backend", &format!("{:?}", spec.backend).to_lowercase()])
        .args(["--mode", &format!("{:?}", spec.mode).to_lowercase()])
        .args(["--services", &spec.services.to_string()])
        .args(["--edits", &spec.edits.to_string()])
        .arg("--workdir")
        .arg(&spec.workdir);
    let output = command.output().map_err(|error| BenchError::Spawn {
        program: format!("{} watch-run", exe.display()),
        error,
    })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(BenchError::Command {
            command: format!("{} watch-run", exe.display()),
            status: output.status,
            stderr: stderr.lines().rev().take(5).collect::<Vec<_>>().join(" | "),
        });
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim()).map_err(|source| BenchError::Json {
        path: "output of bench watch-run".into(),
        source,
    })
}
