//! One runner for the iptables tools, shared by the backends that write rules: which variant
//! (`legacy` or `nft`) plain `iptables` is, as kube-proxy's `pkg/util/iptables` decides it
//! (`iptables --version`), then `iptables-restore` with its input on stdin and `iptables-save`
//! per table or whole, each from an argument vector (never a shell), under an optional command
//! prefix (`ip netns exec NAME`, to program another network namespace).
//!
//! Async ([`Iptables::restore`], [`Iptables::save`], [`detect_variant`]) over
//! `tokio::process`, and blocking ([`Iptables::restore_blocking`]...) over `std::process` for
//! callers that already run on a blocking thread. Both share the argument vectors and the
//! mapping of a finished process to a result, so they cannot drift apart.
//!
//! Every failure is one [`CommandFailure`]: the command line, how it ended (`exit code N`,
//! `killed by signal N`) and its standard error; [`failing_line`] and [`extract_lines`] turn a
//! failed restore into our input lines around the one it blames.
//!
//! Modules:
//! - [`rules`]: the typed rule model (`Table` → `Chain` → `Rule`, `Match`, `SetMatch`,
//!   `Target`) whose `Display` is restore input, and its parser. Every backend that writes
//!   iptables rules builds them with it.
//! - [`BlockingRunner`] / [`ProcessRunner`]: the blocking calls behind a trait, with an
//!   in-memory fake in `testing` (feature `testing`).

use std::fmt;
use std::io::Write as _;
use std::process::{Output, Stdio};

use tokio::io::AsyncWriteExt;
use tracing::debug;

mod blocking;
mod lines;
pub mod rules;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use blocking::{BlockingRunner, ProcessRunner};
pub use lines::{extract_lines, failing_line};

/// The address family: `iptables` or `ip6tables`. The conntrack crate's type, so that the
/// backends, which already use it, pass theirs unchanged.
pub use nf_conntrack::Family;

/// Seconds a tool waits for the xtables lock (`-w`): kube-proxy's default.
pub const DEFAULT_WAIT_SECS: u32 = 5;

/// Which iptables backend the `iptables` binaries drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variant {
    /// `iptables-legacy` (x_tables).
    Legacy,
    /// `iptables-nft` (nf_tables, iptables-compatible rules).
    Nft,
}

impl Variant {
    /// The restore binary for a family.
    pub fn restore_binary(self, family: Family) -> &'static str {
        match (self, family) {
            (Variant::Legacy, Family::V4) => "iptables-legacy-restore",
            (Variant::Legacy, Family::V6) => "ip6tables-legacy-restore",
            (Variant::Nft, Family::V4) => "iptables-nft-restore",
            (Variant::Nft, Family::V6) => "ip6tables-nft-restore",
        }
    }

    /// The rule tool for a family (`iptables-nft`...), for single-rule commands.
    pub fn binary(self, family: Family) -> &'static str {
        match (self, family) {
            (Variant::Legacy, Family::V4) => "iptables-legacy",
            (Variant::Legacy, Family::V6) => "ip6tables-legacy",
            (Variant::Nft, Family::V4) => "iptables-nft",
            (Variant::Nft, Family::V6) => "ip6tables-nft",
        }
    }

    /// The save binary for a family.
    pub fn save_binary(self, family: Family) -> &'static str {
        match (self, family) {
            (Variant::Legacy, Family::V4) => "iptables-legacy-save",
            (Variant::Legacy, Family::V6) => "ip6tables-legacy-save",
            (Variant::Nft, Family::V4) => "iptables-nft-save",
            (Variant::Nft, Family::V6) => "ip6tables-nft-save",
        }
    }

    /// The variant named by `iptables --version` output (`iptables v1.8.9 (nf_tables)` or
    /// `(legacy)`), as kube-proxy's `pkg/util/iptables` reads it.
    pub fn from_version_output(output: &str) -> Option<Variant> {
        if output.contains("(nf_tables)") {
            Some(Variant::Nft)
        } else if output.contains("(legacy)") {
            Some(Variant::Legacy)
        } else {
            None
        }
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Variant::Legacy => "legacy",
            Variant::Nft => "nft",
        })
    }
}

/// An iptables tool that failed to run or exited non-zero.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{command} failed ({}): {stderr}", exit_text(*.status))]
pub struct CommandFailure {
    /// The command line.
    pub command: String,
    /// Its exit code, if it ran and exited; a negative value `-N` means it was killed by signal
    /// `N`; `None` when it did not run or no status is known (`stderr` says why).
    pub status: Option<i32>,
    /// Its standard error, or the spawn error.
    pub stderr: String,
}

impl CommandFailure {
    /// How the command ended, for people: `exit code 4`, `killed by signal 9`, `no exit code`.
    pub fn exit_text(&self) -> String {
        exit_text(self.status)
    }
}

/// How a command ended, for people: `exit code 4`, `killed by signal 9`.
fn exit_text(status: Option<i32>) -> String {
    match status {
        Some(code) if code >= 0 => format!("exit code {code}"),
        Some(signal) => format!("killed by signal {}", signal.unsigned_abs()),
        None => "no exit code".to_owned(),
    }
}

/// The exit status as [`CommandFailure::status`] holds it: the code, or `-signal`.
fn status_of(status: std::process::ExitStatus) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt as _;
    status.code().or_else(|| status.signal().map(|s| -s))
}

/// The words that run a tool in network namespace `name` (`ip netns exec NAME`).
pub fn netns_prefix(name: &str) -> Vec<String> {
    ["ip", "netns", "exec", name].map(str::to_owned).to_vec()
}

/// The argument vector that asks plain `iptables` its variant, under `prefix`.
pub fn version_command(prefix: &[String]) -> Vec<String> {
    let mut argv = prefix.to_vec();
    argv.extend(["iptables".to_owned(), "--version".to_owned()]);
    argv
}

/// The variant a finished `iptables --version` names, or why none.
fn variant_of(command: String, output: &Output) -> Result<Variant, CommandFailure> {
    let text = String::from_utf8_lossy(&output.stdout);
    Variant::from_version_output(&text).ok_or_else(|| CommandFailure {
        command,
        status: status_of(output.status),
        stderr: format!(
            "unknown variant in {:?} (stderr: {:?})",
            text.trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        ),
    })
}

/// Which variant plain `iptables` is (`iptables --version`, run under `prefix`: `ip netns exec
/// NAME` or nothing), as kube-proxy decides which binaries to use.
///
/// # Errors
/// [`CommandFailure`] if `iptables` cannot run or names neither variant.
pub async fn detect_variant(prefix: &[String]) -> Result<Variant, CommandFailure> {
    let argv = version_command(prefix);
    let command = argv.join(" ");
    let output = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| cannot_start(&command, &e))?;
    variant_of(command, &output)
}

/// [`detect_variant`], blocking the calling thread.
///
/// # Errors
/// As [`detect_variant`].
pub fn detect_variant_blocking(prefix: &[String]) -> Result<Variant, CommandFailure> {
    let argv = version_command(prefix);
    let command = argv.join(" ");
    let output = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| cannot_start(&command, &e))?;
    variant_of(command, &output)
}

fn cannot_start(command: &str, e: &std::io::Error) -> CommandFailure {
    CommandFailure {
        command: command.to_owned(),
        status: None,
        stderr: format!("cannot start: {e}"),
    }
}

fn cannot_run(command: &str, e: &std::io::Error) -> CommandFailure {
    CommandFailure {
        command: command.to_owned(),
        status: None,
        stderr: format!("cannot run: {e}"),
    }
}

/// Success, or the failure with the tool's trimmed standard error.
fn check(command: String, output: &Output) -> Result<(), CommandFailure> {
    if output.status.success() {
        Ok(())
    } else {
        Err(CommandFailure {
            command,
            status: status_of(output.status),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

/// The iptables tools of one variant, with a lock wait and a command prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iptables {
    variant: Variant,
    /// Seconds to wait for the xtables lock (`-w`).
    wait_secs: u32,
    /// Words run before the tool (`ip netns exec NAME`), for namespaces.
    prefix: Vec<String>,
}

impl Iptables {
    /// The tools of `variant`, waiting [`DEFAULT_WAIT_SECS`] for the xtables lock, in the
    /// caller's network namespace.
    pub fn new(variant: Variant) -> Self {
        Self {
            variant,
            wait_secs: DEFAULT_WAIT_SECS,
            prefix: Vec::new(),
        }
    }

    /// The same tools, with every command run under `prefix` (e.g. `["ip", "netns", "exec",
    /// "ns1"]`, see [`netns_prefix`]).
    pub fn with_prefix(mut self, prefix: Vec<String>) -> Self {
        self.prefix = prefix;
        self
    }

    /// The variant.
    pub fn variant(&self) -> Variant {
        self.variant
    }

    /// The words run before each tool.
    pub fn prefix(&self) -> &[String] {
        &self.prefix
    }

    /// Seconds each tool waits for the xtables lock (`-w`).
    pub fn wait_secs(&self) -> u32 {
        self.wait_secs
    }

    /// The argument vector of one restore: prefix, restore tool, `-w SECS`, `--noflush` (only
    /// the chains the input names are replaced).
    pub fn restore_command(&self, family: Family) -> Vec<String> {
        let mut argv = self.prefix.clone();
        argv.extend([
            self.variant.restore_binary(family).to_owned(),
            "-w".to_owned(),
            self.wait_secs.to_string(),
            "--noflush".to_owned(),
        ]);
        argv
    }

    /// The argument vector of one save: prefix, save tool, `-t TABLE` for one table (`None`:
    /// every table).
    pub fn save_command(&self, family: Family, table: Option<&str>) -> Vec<String> {
        let mut argv = self.prefix.clone();
        argv.push(self.variant.save_binary(family).to_owned());
        if let Some(table) = table {
            argv.extend(["-t".to_owned(), table.to_owned()]);
        }
        argv
    }

    /// The argument vector of one rule tool call: prefix, tool, `-w SECS`, then `args`.
    pub fn rule_command(&self, family: Family, args: &[String]) -> Vec<String> {
        let mut argv = self.prefix.clone();
        argv.extend([
            self.variant.binary(family).to_owned(),
            "-w".to_owned(),
            self.wait_secs.to_string(),
        ]);
        argv.extend(args.iter().cloned());
        argv
    }

    /// Feeds `input` to the family's restore tool ([`Iptables::restore_command`]).
    ///
    /// # Errors
    /// [`CommandFailure`] with the command, status and stderr.
    pub async fn restore(&self, family: Family, input: &str) -> Result<(), CommandFailure> {
        let argv = self.restore_command(family);
        let command = argv.join(" ");
        let mut child = tokio::process::Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| cannot_start(&command, &e))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A write error means the tool exited early; its status and stderr say why.
            let written = stdin.write_all(input.as_bytes()).await;
            drop(stdin);
            if let Err(e) = written {
                debug!(error = %e, "restore closed its stdin early");
            }
        }
        let output = child.wait_with_output().await.map_err(|e| CommandFailure {
            command: command.clone(),
            status: None,
            stderr: format!("cannot wait: {e}"),
        })?;
        check(command, &output)
    }

    /// [`Iptables::restore`], blocking the calling thread.
    ///
    /// # Errors
    /// As [`Iptables::restore`].
    pub fn restore_blocking(&self, family: Family, input: &str) -> Result<(), CommandFailure> {
        let argv = self.restore_command(family);
        let command = argv.join(" ");
        let mut child = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| cannot_start(&command, &e))?;
        let stdin = child.stdin.take();
        // Written from a thread of its own: a tool that fills its stderr pipe before reading
        // all of its input would otherwise wait on us while we wait on it.
        let output = std::thread::scope(|scope| {
            if let Some(mut stdin) = stdin {
                scope.spawn(move || {
                    if let Err(e) = stdin.write_all(input.as_bytes()) {
                        debug!(error = %e, "restore closed its stdin early");
                    }
                });
            }
            child.wait_with_output()
        })
        .map_err(|e| CommandFailure {
            command: command.clone(),
            status: None,
            stderr: format!("cannot wait: {e}"),
        })?;
        check(command, &output)
    }

    /// The save output of `table` of `family` (`None`: every table).
    ///
    /// # Errors
    /// [`CommandFailure`] if the tool failed.
    pub async fn save(
        &self,
        family: Family,
        table: Option<&str>,
    ) -> Result<String, CommandFailure> {
        let argv = self.save_command(family, table);
        let command = argv.join(" ");
        let output = tokio::process::Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| cannot_run(&command, &e))?;
        check(command, &output)?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// [`Iptables::save`], blocking the calling thread.
    ///
    /// # Errors
    /// As [`Iptables::save`].
    pub fn save_blocking(
        &self,
        family: Family,
        table: Option<&str>,
    ) -> Result<String, CommandFailure> {
        let argv = self.save_command(family, table);
        let command = argv.join(" ");
        let output = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| cannot_run(&command, &e))?;
        check(command, &output)?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Runs the family's rule tool with `args` ([`Iptables::rule_command`]), e.g. `-t nat -C
    /// OUTPUT ...`.
    ///
    /// # Errors
    /// [`CommandFailure`] if the tool failed (for `-C`: the rule is not there).
    pub async fn rule(&self, family: Family, args: &[String]) -> Result<(), CommandFailure> {
        let argv = self.rule_command(family, args);
        let command = argv.join(" ");
        let output = tokio::process::Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| cannot_start(&command, &e))?;
        check(command, &output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variant_is_read_from_version_output() {
        assert_eq!(
            Variant::from_version_output("iptables v1.8.9 (nf_tables)\n"),
            Some(Variant::Nft)
        );
        assert_eq!(
            Variant::from_version_output("iptables v1.8.7 (legacy)"),
            Some(Variant::Legacy)
        );
        assert_eq!(Variant::from_version_output("iptables v1.4.21"), None);
        assert_eq!(Variant::Nft.to_string(), "nft");
        assert_eq!(Variant::Legacy.to_string(), "legacy");
    }

    #[test]
    fn binaries_follow_variant_and_family() {
        assert_eq!(
            Variant::Nft.restore_binary(Family::V6),
            "ip6tables-nft-restore"
        );
        assert_eq!(
            Variant::Legacy.save_binary(Family::V4),
            "iptables-legacy-save"
        );
        assert_eq!(Variant::Legacy.binary(Family::V6), "ip6tables-legacy");
    }

    #[test]
    fn commands_carry_prefix_family_table_and_noflush() {
        let plain = Iptables::new(Variant::Legacy);
        assert_eq!(
            plain.restore_command(Family::V4),
            ["iptables-legacy-restore", "-w", "5", "--noflush"]
        );
        let ns = Iptables::new(Variant::Nft).with_prefix(netns_prefix("ns1"));
        assert_eq!(
            ns.restore_command(Family::V6),
            [
                "ip",
                "netns",
                "exec",
                "ns1",
                "ip6tables-nft-restore",
                "-w",
                "5",
                "--noflush"
            ]
        );
        assert_eq!(
            ns.save_command(Family::V4, Some("nat")),
            [
                "ip",
                "netns",
                "exec",
                "ns1",
                "iptables-nft-save",
                "-t",
                "nat"
            ]
        );
        assert_eq!(
            plain.save_command(Family::V6, None),
            ["ip6tables-legacy-save"]
        );
        assert_eq!(
            ns.rule_command(Family::V4, &["-t".to_owned(), "nat".to_owned()]),
            [
                "ip",
                "netns",
                "exec",
                "ns1",
                "iptables-nft",
                "-w",
                "5",
                "-t",
                "nat"
            ]
        );
        assert_eq!(
            version_command(&netns_prefix("ns1")),
            ["ip", "netns", "exec", "ns1", "iptables", "--version"]
        );
    }

    #[test]
    fn failures_say_how_the_command_ended() {
        let failure = |status| CommandFailure {
            command: "iptables-nft-restore -w 5 --noflush".to_owned(),
            status,
            stderr: "line 3 failed".to_owned(),
        };
        assert_eq!(
            failure(Some(4)).to_string(),
            "iptables-nft-restore -w 5 --noflush failed (exit code 4): line 3 failed"
        );
        assert_eq!(
            failure(Some(-9)).to_string(),
            "iptables-nft-restore -w 5 --noflush failed (killed by signal 9): line 3 failed"
        );
        assert_eq!(
            failure(None).to_string(),
            "iptables-nft-restore -w 5 --noflush failed (no exit code): line 3 failed"
        );
    }

    #[tokio::test]
    async fn a_missing_tool_is_a_failure_that_names_it() {
        let runner = Iptables::new(Variant::Nft)
            .with_prefix(vec!["/nonexistent/svcproxy-no-such-tool".to_owned()]);
        let err = runner
            .save(Family::V4, Some("nat"))
            .await
            .expect_err("no tool");
        assert!(err.command.starts_with("/nonexistent/"), "{err}");
        assert_eq!(err.status, None);
        assert!(err.stderr.starts_with("cannot run: "), "{err}");
        let err = runner
            .restore_blocking(Family::V4, "*nat\nCOMMIT\n")
            .expect_err("no tool");
        assert!(err.stderr.starts_with("cannot start: "), "{err}");
    }
}
