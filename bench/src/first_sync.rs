//! `bench first-sync`: file → first sync through `svcproxy`, the binary a user runs (issue #11:
//! "put file → first sync at 10,000 and 50,000 in the benchmark").
//!
//! For each table size and format (YAML, JSON: the same table, written out in full as a
//! generator would, no anchors), it times two runs of the release binary:
//!
//! - `svcproxy --services F --backend iptables --dry-run`: read, parse, validate, plan and render
//!   the restore input (written to `/dev/null`); no kernel, no root;
//! - as root, `ip netns exec NS svcproxy --services F --backend iptables --once` in a fresh
//!   network namespace: the same, then the first full sync into the kernel, and exit.
//!
//! The files are written before the clock starts; each run is a fresh process.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use proxy_core::testing::generate::table_file_text;

use crate::error::BenchError;
use crate::procfs::{self, Machine};
use crate::report::{run_stem, write_file, write_json};
use crate::suite::{git_commit, WorkDir};

/// `bench first-sync`'s flags.
#[derive(Debug, clap::Args)]
pub struct FirstSyncArgs {
    /// The svcproxy binary.
    #[arg(long, default_value = "target/release/svcproxy")]
    pub svcproxy: PathBuf,
    /// Table sizes, in service ports (one port per service).
    #[arg(long, value_delimiter = ',', default_values_t = [1_000u32, 10_000, 50_000])]
    pub sizes: Vec<u32>,
    /// Endpoints per service.
    #[arg(long, default_value_t = 10)]
    pub endpoints: u32,
    /// The largest table given to the iptables-nft variant's `--once` (iptables-nft-restore's
    /// cost grows with the number of chains: minutes past 10,000 service ports, which
    /// `bench iptables` measures on its own).
    #[arg(long, default_value_t = 10_000)]
    pub nft_max: u32,
    /// A smoke run: 100 and 1,000 services only.
    #[arg(long)]
    pub quick: bool,
    /// Where the results go.
    #[arg(long, default_value = "bench/results")]
    pub out: PathBuf,
    /// The run's label in titles.
    #[arg(long)]
    pub label: Option<String>,
}

/// One table file's timings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FirstSyncRow {
    /// Service ports in the table.
    pub services: u32,
    /// Endpoints per service.
    pub endpoints: u32,
    /// `yaml` or `json`.
    pub format: String,
    /// The file's size in bytes.
    pub bytes: u64,
    /// Wall time of `--dry-run`, seconds.
    pub dry_run_s: f64,
    /// Wall time of `--once` in a fresh namespace with iptables-legacy, seconds (`None`: not
    /// root).
    pub once_legacy_s: Option<f64>,
    /// The same with iptables-nft (`None`: not root, or past `--nft-max`).
    pub once_nft_s: Option<f64>,
}

/// A whole run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FirstSyncReport {
    /// The title.
    pub label: String,
    /// When it ran (UTC, RFC 3339).
    pub started: String,
    /// The commit measured.
    pub commit: String,
    /// The machine it ran on.
    pub machine: Machine,
    /// The rows, by size then format.
    pub rows: Vec<FirstSyncRow>,
}

/// Runs the suite and writes `first-sync-<time>.{json,md}` under `args.out`.
///
/// # Errors
/// A file that could not be written, svcproxy missing or failing on a table.
pub fn run_first_sync(args: &FirstSyncArgs) -> Result<Vec<PathBuf>, BenchError> {
    crate::child::require_release_binary(&args.svcproxy, "svcproxy")?;
    let sizes = if args.quick {
        vec![100, 1_000]
    } else {
        args.sizes.clone()
    };
    let root = crate::netns::is_root();
    if !root {
        tracing::warn!("not root: the --once runs (first sync into the kernel) are skipped");
    }
    let workdir = WorkDir::create()?;
    let tools = variant_tools(&workdir.0)?;
    let mut rows = Vec::new();
    for &services in &sizes {
        for format in ["yaml", "json"] {
            let path = workdir.0.join(format!("table-{services}.{format}"));
            let text = table_file_text(services, args.endpoints, format == "json");
            std::fs::write(&path, &text)
                .map_err(|e| BenchError::io(format!("write {}", path.display()), e))?;
            drop(text);
            let bytes = std::fs::metadata(&path)
                .map_err(|e| BenchError::io(format!("stat {}", path.display()), e))?
                .len();
            tracing::info!(services, format, bytes, "dry run");
            let dry_run = time_dry_run(&args.svcproxy, &path)?;
            let mut once = [None, None];
            for (slot, variant) in once.iter_mut().zip(["legacy", "nft"]) {
                if !root || (variant == "nft" && services > args.nft_max) {
                    continue;
                }
                tracing::info!(services, format, variant, "first sync in a fresh namespace");
                let took = time_once_in_netns(&args.svcproxy, &path, services, variant, &tools)?;
                *slot = Some(took.as_secs_f64());
            }
            rows.push(FirstSyncRow {
                services,
                endpoints: args.endpoints,
                format: format.to_owned(),
                bytes,
                dry_run_s: dry_run.as_secs_f64(),
                once_legacy_s: once[0],
                once_nft_s: once[1],
            });
            std::fs::remove_file(&path)
                .map_err(|e| BenchError::io(format!("remove {}", path.display()), e))?;
        }
    }
    let report = FirstSyncReport {
        label: args
            .label
            .clone()
            .unwrap_or_else(|| "file → first sync through svcproxy".to_owned()),
        started: procfs::utc_now_rfc3339(),
        commit: git_commit(),
        machine: Machine::current(),
        rows,
    };
    report.write(&args.out)
}

fn svcproxy_command(svcproxy: &Path, table: &Path) -> Command {
    let mut command = Command::new(svcproxy);
    command
        .arg("--services")
        .arg(table)
        .args(["--backend", "iptables"])
        .env("NO_COLOR", "1");
    command
}

fn time_dry_run(svcproxy: &Path, table: &Path) -> Result<Duration, BenchError> {
    let mut command = svcproxy_command(svcproxy, table);
    command.arg("--dry-run").stdout(Stdio::null());
    timed(command, "svcproxy --dry-run").map(|(took, _)| took)
}

/// Directories whose `iptables*` commands are one variant's: svcproxy picks its variant from
/// `iptables --version` (as the system's alternative says), so a `PATH` with these first makes it
/// use the one measured. `[legacy, nft]`.
pub(crate) fn variant_tools(workdir: &Path) -> Result<[PathBuf; 2], BenchError> {
    let mut dirs = Vec::new();
    for variant in ["legacy", "nft"] {
        let dir = workdir.join(format!("tools-{variant}"));
        std::fs::create_dir_all(&dir)
            .map_err(|e| BenchError::io(format!("create {}", dir.display()), e))?;
        for tool in [
            "iptables",
            "iptables-save",
            "iptables-restore",
            "ip6tables",
            "ip6tables-save",
            "ip6tables-restore",
        ] {
            let target = which(&format!(
                "{}-{variant}{}",
                tool.split('-').next().unwrap_or(tool),
                tool.find('-').map_or("", |i| &tool[i..])
            ))?;
            let link = dir.join(tool);
            if !link.exists() {
                std::os::unix::fs::symlink(&target, &link)
                    .map_err(|e| BenchError::io(format!("symlink {}", link.display()), e))?;
            }
        }
        dirs.push(dir);
    }
    let [legacy, nft]: [PathBuf; 2] = dirs.try_into().map_err(|_| {
        BenchError::io(
            "variant tools",
            std::io::Error::other("two variants expected"),
        )
    })?;
    Ok([legacy, nft])
}

/// The first `program` on `PATH`.
fn which(program: &str) -> Result<PathBuf, BenchError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            BenchError::io(
                format!("find {program} on PATH"),
                std::io::Error::new(std::io::ErrorKind::NotFound, "install iptables"),
            )
        })
}

/// `--once` with `variant`'s tools first on `PATH`, in a namespace of its own (created and
/// deleted here); its wall time. Fails if svcproxy detected another variant.
fn time_once_in_netns(
    svcproxy: &Path,
    table: &Path,
    services: u32,
    variant: &str,
    tools: &[PathBuf; 2],
) -> Result<Duration, BenchError> {
    let ns = format!("svcp-fs-{}-{services}", std::process::id());
    let dir = if variant == "legacy" {
        &tools[0]
    } else {
        &tools[1]
    };
    let path = std::env::join_paths(std::iter::once(dir.clone()).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .map_err(|e| BenchError::io("PATH", std::io::Error::other(e)))?;
    run_ip(&["netns", "add", &ns])?;
    let result = (|| {
        run_ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &ns])
            .arg(svcproxy)
            .arg("--services")
            .arg(table)
            .args(["--backend", "iptables", "--once"])
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .env("PATH", &path)
            .stdout(Stdio::null());
        let (took, stderr) = timed(command, "svcproxy --once")?;
        let detected = stderr
            .lines()
            .find(|line| line.contains("iptables variant detected"))
            .and_then(|line| line.split("variant=").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or("unknown");
        if detected != variant {
            return Err(BenchError::Scenario {
                scenario: format!("first sync, {variant}"),
                proxy: "svcproxy".to_owned(),
                detail: format!("svcproxy detected the {detected} variant"),
            });
        }
        Ok(took)
    })();
    let deleted = run_ip(&["netns", "del", &ns]);
    let measured = result?;
    deleted?;
    Ok(measured)
}

/// Runs `command` to its end; its wall time and standard error.
fn timed(mut command: Command, what: &str) -> Result<(Duration, String), BenchError> {
    command.stderr(Stdio::piped());
    let started = Instant::now();
    let output = command.output().map_err(|error| BenchError::Spawn {
        program: what.to_owned(),
        error,
    })?;
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if !output.status.success() {
        return Err(BenchError::Command {
            command: what.to_owned(),
            status: output.status,
            stderr: tail(&stderr),
        });
    }
    Ok((took, stderr))
}

fn run_ip(args: &[&str]) -> Result<(), BenchError> {
    let mut command = Command::new("ip");
    command.args(args).stdout(Stdio::null());
    timed(command, &format!("ip {}", args.join(" "))).map(|_| ())
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join("\n")
}

impl FirstSyncReport {
    /// Writes the JSON and the markdown; their paths.
    ///
    /// # Errors
    /// A file that could not be written.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>, BenchError> {
        let stem = run_stem("first-sync", &self.started);
        let json = write_json(dir, &stem, self)?;
        let md = dir.join(format!("{stem}.md"));
        write_file(&md, self.markdown())?;
        Ok(vec![json, md])
    }

    /// The results as a markdown table.
    pub fn markdown(&self) -> String {
        let mut out = format!(
            "# {}\n\n{}, commit {}, {} CPUs ({}), kernel {}.\n\n\
             Release `svcproxy --backend iptables` on a table file written out in full (one \
             port per service, cluster IPs only); wall time of a fresh process each: \
             `--dry-run` (read, parse, validate, plan, render the restore input) and, as root, \
             `--once` in a fresh network namespace (the same, then the first full sync into \
             the kernel), with iptables-legacy and with iptables-nft.\n\n\
             | services × endpoints | format | file | `--dry-run` | `--once`, legacy | `--once`, nft |\n\
             |---:|---|---:|---:|---:|---:|\n",
            self.label,
            self.started,
            self.commit,
            self.machine.nproc,
            self.machine.cpu_model,
            self.machine.kernel
        );
        for row in &self.rows {
            let seconds =
                |s: Option<f64>| s.map_or_else(|| "–".to_owned(), |s| format!("{s:.2} s"));
            out.push_str(&format!(
                "| {} × {} | {} | {:.1} MB | {:.2} s | {} | {} |\n",
                row.services,
                row.endpoints,
                row.format,
                row.bytes as f64 / 1e6,
                row.dry_run_s,
                seconds(row.once_legacy_s),
                seconds(row.once_nft_s)
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_markdown_has_a_row_per_file() {
        let report = FirstSyncReport {
            label: "t".into(),
            started: "2026-12-01T20:00:00Z".into(),
            commit: "abc".into(),
            machine: Machine::current(),
            rows: vec![FirstSyncRow {
                services: 10_000,
                endpoints: 10,
                format: "yaml".into(),
                bytes: 6_800_000,
                dry_run_s: 1.234,
                once_legacy_s: Some(2.5),
                once_nft_s: None,
            }],
        };
        let dir = std::env::temp_dir().join(format!("first-sync-test-{}", std::process::id()));
        let written = report.write(&dir).expect("write");
        let names: Vec<String> = written
            .iter()
            .map(|p| {
                p.file_name()
                    .expect("a file name")
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert_eq!(
            names,
            [
                "first-sync-20261201T200000Z.json",
                "first-sync-20261201T200000Z.md"
            ]
        );
        std::fs::remove_dir_all(&dir).expect("remove");
        let md = report.markdown();
        assert!(
            md.contains("| 10000 × 10 | yaml | 6.8 MB | 1.23 s | 2.50 s | – |"),
            "{md}"
        );
    }
}
