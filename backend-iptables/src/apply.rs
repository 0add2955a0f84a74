//! Apply: runs a [`Plan`]'s restores, in order, through a [`RestoreRunner`], one process per
//! family (its `filter` and `nat` blocks in one input), with the hook lines of a
//! [`BuiltinEdits`] in the same input. Thin: its other logic is mapping a failure to an error
//! that names the failing input line, its table and the lines around it.
//!
//! The real runner ([`CommandRunner`]) spawns `iptables-restore --noflush` (or `ip6tables-restore`,
//! legacy or nft variant) from an argument vector with the input on stdin, under an optional
//! command prefix (`ip netns exec NAME`, from [`crate::IptablesConfig::netns`]). Tests use
//! `testing::fake::FakeRestore` (feature `testing`).

use std::fmt;

use async_trait::async_trait;
use iptables_runner::Iptables;
use tracing::trace;

use crate::error::{IptablesError, RestoreFailure};
use crate::plan::{BuiltinEdits, Plan, Restore};
use crate::rules::{Family, Table, TableName};

/// Which iptables backend the `iptables` binaries drive, and how plain `iptables` is probed
/// for it: the shared runner's, re-exported where this crate has always had them.
pub use iptables_runner::{detect_variant, Variant};

/// The input line a restore tool blamed, and our input lines around it: the shared runner's,
/// re-exported for callers of this module.
pub use iptables_runner::{extract_lines, failing_line};

/// Runs one restore: input on stdin, `--noflush`.
#[async_trait]
pub trait RestoreRunner: Send + Sync + fmt::Debug {
    /// Feeds `input` to the family's restore tool.
    ///
    /// # Errors
    /// [`RestoreFailure`] with the command, status and stderr.
    async fn restore(&self, family: Family, input: &str) -> Result<(), RestoreFailure>;
}

/// The real runner: spawns the variant's restore binary through the shared
/// [`iptables_runner::Iptables`]. A wrapper rather than the shared type itself so that
/// [`RestoreRunner`] (the seam the fakes implement) stays this crate's.
#[derive(Debug, Clone)]
pub struct CommandRunner {
    tools: Iptables,
}

impl CommandRunner {
    /// A runner for `variant`, waiting up to 5 s for the xtables lock (kube-proxy's default).
    pub fn new(variant: Variant) -> Self {
        Self {
            tools: Iptables::new(variant),
        }
    }

    /// The same runner, with every command run under `prefix` (e.g. `["ip", "netns", "exec",
    /// "ns1"]`), so tests and embedders can program another network namespace.
    pub fn with_prefix(mut self, prefix: Vec<String>) -> Self {
        self.tools = self.tools.with_prefix(prefix);
        self
    }

    /// The shared runner underneath.
    pub fn tools(&self) -> &Iptables {
        &self.tools
    }

    /// The variant.
    pub fn variant(&self) -> Variant {
        self.tools.variant()
    }

    /// The words run before each tool.
    pub fn prefix(&self) -> &[String] {
        self.tools.prefix()
    }

    /// Seconds each tool waits for the xtables lock (`-w`).
    pub fn wait_secs(&self) -> u32 {
        self.tools.wait_secs()
    }

    /// The argument vector for one restore.
    pub fn command(&self, family: Family) -> Vec<String> {
        self.tools.restore_command(family)
    }
}

#[async_trait]
impl RestoreRunner for CommandRunner {
    async fn restore(&self, family: Family, input: &str) -> Result<(), RestoreFailure> {
        self.tools.restore(family, input).await
    }
}

/// What an apply did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Restore processes run (one per family with something to write).
    pub restores: usize,
    /// Rules written.
    pub rules_written: usize,
    /// Chains written.
    pub chains_written: usize,
    /// Chains deleted.
    pub chains_deleted: usize,
    /// Hooks inserted into built-in chains.
    pub hooks_inserted: usize,
    /// Hooks deleted from built-in chains.
    pub hooks_deleted: usize,
}

/// Runs every restore of `plan`, one restore process per family (its tables one after the
/// other in one input), stopping at the first failure.
///
/// # Errors
/// See [`apply_restores`].
pub async fn apply_plan(
    runner: &dyn RestoreRunner,
    plan: &Plan,
) -> Result<ApplyReport, IptablesError> {
    apply_restores(runner, plan.restores.iter(), &BuiltinEdits::new()).await
}

/// Runs `restores` with `edits` (hook lines for the built-in chains) in one restore process per
/// family: IPv4 first, each family's tables in the order given, a table with edits but nothing
/// of ours to write getting a block of its own. Restore is atomic per table (`COMMIT`), not per
/// process: a failing table leaves the tables before it applied.
///
/// # Errors
/// [`IptablesError::Restore`] for the first failing family, naming the table the failing line
/// belongs to, with our input lines around it. Earlier tables did apply, so after an error the
/// caller must treat what is applied as unknown (`Applied::new()`) and plan a full sync next.
pub async fn apply_restores<'a>(
    runner: &dyn RestoreRunner,
    restores: impl IntoIterator<Item = &'a Restore>,
    edits: &BuiltinEdits,
) -> Result<ApplyReport, IptablesError> {
    let restores: Vec<&Restore> = restores.into_iter().collect();
    let mut report = ApplyReport::default();
    for family in Family::ALL {
        let mut tables: Vec<(TableName, Option<&Table>)> = restores
            .iter()
            .filter(|r| r.family == family)
            .map(|r| (r.table.name, Some(&r.table)))
            .collect();
        for (f, name) in edits.tables() {
            if f == family && !tables.iter().any(|(t, _)| *t == name) {
                tables.push((name, None));
            }
        }
        if tables.is_empty() {
            continue;
        }
        let (input, blocks) = family_input(family, &tables, edits);
        trace!(%family, %input, "restore input");
        if let Err(failure) = runner.restore(family, &input).await {
            let line = failing_line(&failure.stderr);
            let context = line
                .map(|l| extract_lines(&input, l, 2))
                .unwrap_or_default();
            // The table whose block holds the blamed line (the first one if none was named).
            let table = line
                .and_then(|l| blocks.iter().rev().find(|(start, _)| *start <= l))
                .or(blocks.first())
                .map_or(TableName::Nat, |(_, t)| *t);
            return Err(IptablesError::Restore {
                family,
                table,
                failure,
                line,
                context,
            });
        }
        report.restores += 1;
        for (name, table) in &tables {
            if let Some(table) = table {
                report.rules_written += table.rule_count();
                report.chains_written += table.chains.len();
                report.chains_deleted += table.deleted.len();
            }
            report.hooks_inserted += edits.tail(family, *name).len();
            report.hooks_deleted += edits.head(family, *name).len();
        }
    }
    Ok(report)
}

/// One family's restore input: per table, `*table`, the edits' head lines, our chains (the
/// table's own restore text), the edits' tail lines, `COMMIT`. Also the 1-based line each
/// table's block starts at, to name the table of a failing line.
fn family_input(
    family: Family,
    tables: &[(TableName, Option<&Table>)],
    edits: &BuiltinEdits,
) -> (String, Vec<(usize, TableName)>) {
    let mut input = String::new();
    let mut blocks = Vec::with_capacity(tables.len());
    let mut line = 1;
    for (name, table) in tables {
        blocks.push((line, *name));
        let header = format!("*{name}\n");
        let rendered = table.map(ToString::to_string).unwrap_or_default();
        // `Table`'s text is `*name`, its lines, `COMMIT`: keep the lines between.
        let body = rendered
            .strip_prefix(header.as_str())
            .and_then(|b| b.strip_suffix("COMMIT\n"))
            .unwrap_or("");
        input.push_str(&header);
        for edit in edits.head(family, *name) {
            input.push_str(edit);
            input.push('\n');
        }
        input.push_str(body);
        for edit in edits.tail(family, *name) {
            input.push_str(edit);
            input.push('\n');
        }
        input.push_str("COMMIT\n");
        line += 2
            + edits.head(family, *name).len()
            + edits.tail(family, *name).len()
            + body.lines().count();
    }
    (input, blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_restore_prints_the_tools_words_once() {
        let failure = RestoreFailure {
            command: "iptables-restore -w 5 --noflush".to_owned(),
            status: Some(1),
            stderr: "iptables-restore: line 3 failed".to_owned(),
        };
        let error = IptablesError::Restore {
            family: Family::V4,
            table: TableName::Nat,
            failure,
            line: Some(3),
            context: extract_lines("*nat\n:A - [0:0]\n-A A -j B\nCOMMIT\n", 3, 1),
        };
        assert!(std::error::Error::source(&error).is_none(), "{error:?}");
        let text = proxy_core::error::error_chain(&error.into_dataplane());
        assert_eq!(text.matches("line 3 failed").count(), 1, "{text}");
        assert!(text.contains(">     3 -A A -j B"), "{text}");
    }

    #[test]
    fn variants_name_their_tools() {
        assert_eq!(
            Variant::from_version_output("iptables v1.8.9 (nf_tables)"),
            Some(Variant::Nft)
        );
        assert_eq!(
            Variant::from_version_output("iptables v1.8.9 (legacy)"),
            Some(Variant::Legacy)
        );
        assert_eq!(
            Variant::Nft.restore_binary(Family::V6),
            "ip6tables-nft-restore"
        );
        assert_eq!(
            CommandRunner::new(Variant::Legacy).command(Family::V4),
            ["iptables-legacy-restore", "-w", "5", "--noflush"]
        );
    }
}
