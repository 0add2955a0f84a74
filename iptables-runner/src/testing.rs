//! An in-memory [`BlockingRunner`] for tests of the crates that run the tools: it records every
//! command (the argument vector [`Iptables`] builds, and the restore input), answers the variant
//! probe and saves from canned text, and fails the tools it is told to.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::{version_command, BlockingRunner, CommandFailure, Family, Iptables, Variant};

/// One command the fake was asked to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The whole argument vector, prefix included.
    pub argv: Vec<String>,
    /// The restore input, for restores.
    pub input: Option<String>,
}

impl Call {
    /// The tool run (the first word after `prefix`).
    pub fn tool(&self, prefix: &[String]) -> &str {
        self.argv.get(prefix.len()).map_or("", String::as_str)
    }
}

#[derive(Debug)]
struct State {
    variant: Option<Variant>,
    calls: Vec<Call>,
    saved: BTreeMap<Family, String>,
    failures: BTreeMap<String, (i32, String)>,
}

/// The fake tools. Clones share one state, so a test keeps a handle on what a boxed clone saw.
///
/// Unless told otherwise, plain `iptables` is the nft variant, every save prints nothing and
/// every tool succeeds.
#[derive(Debug, Clone)]
pub struct FakeTools {
    state: Arc<Mutex<State>>,
}

impl Default for FakeTools {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeTools {
    /// Tools of the nft variant, with empty tables.
    pub fn new() -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                variant: Some(Variant::Nft),
                calls: Vec::new(),
                saved: BTreeMap::new(),
                failures: BTreeMap::new(),
            })),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock has failed already; keep its state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What `iptables --version` names (`None`: neither variant, so detection fails).
    pub fn set_variant(&self, variant: Option<Variant>) {
        self.state().variant = variant;
    }

    /// What `family`'s save tool prints for every table (`-t TABLE` gets that table's block).
    pub fn set_saved(&self, family: Family, text: &str) {
        self.state().saved.insert(family, text.to_owned());
    }

    /// Makes every run of `tool` (`iptables-nft-restore`...) exit with `code` and `stderr`.
    pub fn fail(&self, tool: &str, code: i32, stderr: &str) {
        self.state()
            .failures
            .insert(tool.to_owned(), (code, stderr.to_owned()));
    }

    /// Every command so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    /// The inputs given to `tool`, in order.
    pub fn inputs_of(&self, tool: &str) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|c| c.argv.iter().any(|w| w == tool))
            .filter_map(|c| c.input)
            .collect()
    }

    /// Records `argv` and answers with the failure set for its tool, if any.
    fn run(
        &self,
        argv: Vec<String>,
        tool: &str,
        input: Option<&str>,
    ) -> Result<(), CommandFailure> {
        let mut state = self.state();
        let command = argv.join(" ");
        state.calls.push(Call {
            argv,
            input: input.map(str::to_owned),
        });
        match state.failures.get(tool) {
            Some((code, stderr)) => Err(CommandFailure {
                command,
                status: Some(*code),
                stderr: stderr.clone(),
            }),
            None => Ok(()),
        }
    }
}

/// `table`'s block of save output: from `*table` through its `COMMIT`.
fn table_block(saved: &str, table: &str) -> String {
    let header = format!("*{table}");
    let mut out = String::new();
    let mut inside = false;
    for line in saved.lines() {
        if line.trim() == header {
            inside = true;
        }
        if inside {
            out.push_str(line);
            out.push('\n');
            if line.trim() == "COMMIT" {
                inside = false;
            }
        }
    }
    out
}

impl BlockingRunner for FakeTools {
    fn detect_variant(&self, prefix: &[String]) -> Result<Variant, CommandFailure> {
        let argv = version_command(prefix);
        let command = argv.join(" ");
        self.run(argv, "iptables", None)?;
        self.state().variant.ok_or_else(|| CommandFailure {
            command,
            status: Some(0),
            stderr: "unknown variant in \"iptables v1.4.21\"".to_owned(),
        })
    }

    fn restore(&self, tools: &Iptables, family: Family, input: &str) -> Result<(), CommandFailure> {
        let argv = tools.restore_command(family);
        let tool = tools.variant().restore_binary(family);
        self.run(argv, tool, Some(input))
    }

    fn save(
        &self,
        tools: &Iptables,
        family: Family,
        table: Option<&str>,
    ) -> Result<String, CommandFailure> {
        let argv = tools.save_command(family, table);
        let tool = tools.variant().save_binary(family);
        self.run(argv, tool, None)?;
        let saved = self.state().saved.get(&family).cloned().unwrap_or_default();
        Ok(match table {
            Some(table) => table_block(&saved, table),
            None => saved,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fake_records_the_real_commands_and_answers_saves_per_table() {
        let fake = FakeTools::new();
        let prefix = crate::netns_prefix("ns1");
        let variant = fake.detect_variant(&prefix).expect("nft by default");
        let tools = Iptables::new(variant).with_prefix(prefix.clone());
        fake.set_saved(
            Family::V4,
            "*nat\n:A - [0:0]\nCOMMIT\n*filter\n:B - [0:0]\nCOMMIT\n",
        );
        assert_eq!(
            fake.save(&tools, Family::V4, Some("filter")).expect("save"),
            "*filter\n:B - [0:0]\nCOMMIT\n"
        );
        assert_eq!(fake.save(&tools, Family::V6, None).expect("save"), "");
        fake.fail("ip6tables-nft-restore", 2, "line 1 failed");
        fake.restore(&tools, Family::V4, "*nat\nCOMMIT\n")
            .expect("v4 works");
        let err = fake
            .restore(&tools, Family::V6, "*nat\nCOMMIT\n")
            .expect_err("v6 fails");
        assert_eq!(
            err.to_string(),
            "ip netns exec ns1 ip6tables-nft-restore -w 5 --noflush failed (exit code 2): \
             line 1 failed"
        );
        let tools: Vec<String> = fake
            .calls()
            .iter()
            .map(|c| c.tool(&prefix).to_owned())
            .collect();
        assert_eq!(
            tools,
            [
                "iptables",
                "iptables-nft-save",
                "ip6tables-nft-save",
                "iptables-nft-restore",
                "ip6tables-nft-restore"
            ]
        );
        assert_eq!(fake.inputs_of("iptables-nft-restore"), ["*nat\nCOMMIT\n"]);
        fake.set_variant(None);
        assert!(fake.detect_variant(&[]).is_err());
    }
}
