//! The bootstrap jumps from the built-in chains to ours ([`crate::plan::Planner::hooks`]).
//!
//! A sync adds them **in its restore input**: the full sync's `iptables-save` (one per family)
//! shows which are there ([`saved_hooks`], [`missing_hooks`]), and the missing ones become `-I
//! CHAIN 1` lines of the same `iptables-restore --noflush` ([`BuiltinEdits`]), which declares
//! only our chains, so the built-in chains keep everyone else's rules. Cleanup deletes them the
//! same way (`-D` lines). A full sync therefore runs two processes per family, whatever the
//! number of hooks.
//!
//! [`HookOps`] / [`IptablesHooks`] check, insert and delete one rule per `iptables` process
//! (kube-proxy's `EnsureRule`: `-C` to check, exit status 1 meaning "absent"), from an argument
//! vector made from the typed rule ([`crate::rules::Rule::args`]), under the same command prefix
//! as the restores (`ip netns exec NAME`). The dataplane uses them only for the canary check
//! between syncs ([`find_drift`], [`canaries_present`]); [`ensure_hooks`] and [`remove_hooks`]
//! remain for tools and tests. They block: call them off the async runtime
//! (`tokio::task::spawn_blocking`).

use std::fmt;
use std::process::{Command, Stdio};

use iptables_runner::Variant;

use crate::apply::CommandRunner;
/// The hook errors, defined with the crate's others (so that `error` needs nothing of this
/// module), under the path they have always had.
pub use crate::error::HookError;
use crate::plan::Hook;
use crate::rules::{ChainName, Family, TableName};

/// Checks, inserts and deletes single rules in built-in chains.
pub trait HookOps: Send + Sync + fmt::Debug {
    /// Whether `hook` is present.
    ///
    /// # Errors
    /// [`HookError`] if the tool failed.
    fn exists(&self, family: Family, hook: &Hook) -> Result<bool, HookError>;
    /// Inserts `hook` at 1-based `position`.
    ///
    /// # Errors
    /// [`HookError`] if the tool failed.
    fn insert(&self, family: Family, hook: &Hook, position: usize) -> Result<(), HookError>;
    /// Deletes one copy of `hook`.
    ///
    /// # Errors
    /// [`HookError`] if the tool failed.
    fn delete(&self, family: Family, hook: &Hook) -> Result<(), HookError>;

    /// Whether a chain exists (the canary check).
    ///
    /// # Errors
    /// [`HookError`] if the tool failed to run.
    fn chain_exists(
        &self,
        family: Family,
        table: TableName,
        chain: &ChainName,
    ) -> Result<bool, HookError>;
}

/// Whether every canary chain is still there (both tables of each of `families`: those we
/// program). `false` means someone flushed a table behind our back: the next sync must be full.
///
/// # Errors
/// The first [`HookError`].
pub fn canaries_present(
    ops: &dyn HookOps,
    canary: &ChainName,
    families: &[Family],
) -> Result<bool, HookError> {
    for &family in families {
        for table in [TableName::Nat, TableName::Filter] {
            if !ops.chain_exists(family, table, canary)? {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// The cheap drift check ([`proxy_core::Dataplane::check_drift`]): per family and table, that
/// the canary chain exists (`-L`: gone when someone deleted the table's chains, `-X`, or a
/// firewall reload replaced the table) and that the table's first hook does (`-C`: gone when
/// someone flushed the table's rules, `-F`). Four processes per family, never a dump of a
/// table, in each of `families` (those we program). Returns what it found first, for the log;
/// `None` when all is in place.
///
/// What it cannot see (a hook deleted by hand from another built-in chain, a rule deleted from
/// or inserted into one of our chains) the dataplane's save-based check finds
/// ([`crate::observe::Fingerprint`]); this one runs between those when they are too costly to
/// run every period.
///
/// # Errors
/// The first [`HookError`] of a canary check (the tool could not run).
pub fn find_drift(
    ops: &dyn HookOps,
    canary: &ChainName,
    hooks: &[Hook],
    families: &[Family],
) -> Result<Option<String>, HookError> {
    for &family in families {
        for table in [TableName::Nat, TableName::Filter] {
            if !ops.chain_exists(family, table, canary)? {
                return Ok(Some(format!(
                    "{family} {table}: canary chain {canary} missing (our chains were deleted)"
                )));
            }
            let Some(hook) = hooks.iter().find(|h| h.table == table) else {
                continue;
            };
            let missing = format!(
                "{family} {table}: hook -A {} {} missing (the table was flushed)",
                hook.chain, hook.rule
            );
            match ops.exists(family, hook) {
                Ok(true) => {}
                Ok(false) => return Ok(Some(missing)),
                // The canary check just ran, so the tool works: a check that fails means the
                // jump's target chain is gone.
                Err(e) => return Ok(Some(format!("{missing}: {}", e.message))),
            }
        }
    }
    Ok(None)
}

/// [`HookOps`] over the variant's `iptables`/`ip6tables` binaries, each call one process run
/// from an argument vector: `[prefix...] iptables-nft -w 5 -t nat -C PREROUTING <rule args>`.
#[derive(Debug, Clone)]
pub struct IptablesHooks {
    variant: Variant,
    wait_secs: u32,
    prefix: Vec<String>,
}

/// How one tool run ended: its exit code (`None`: killed by a signal) and stderr.
struct Ran {
    command: String,
    code: Option<i32>,
    stderr: String,
}

impl Ran {
    fn message(&self) -> String {
        match self.code {
            Some(code) => format!("{} exited {code}: {}", self.command, self.stderr),
            None => format!("{} killed by a signal: {}", self.command, self.stderr),
        }
    }
}

impl IptablesHooks {
    /// Hooks through `iptables-legacy`/`iptables-nft` (and the `ip6tables` ones), waiting up to
    /// 5 s for the xtables lock, in the caller's network namespace.
    pub fn new(variant: Variant) -> Self {
        Self {
            variant,
            wait_secs: 5,
            prefix: Vec::new(),
        }
    }

    /// Hooks through the same variant, lock wait and command prefix as `runner`: what the
    /// dataplane uses, so that restores and hooks always reach the same namespace.
    pub fn like(runner: &CommandRunner) -> Self {
        Self {
            variant: runner.variant(),
            wait_secs: runner.wait_secs(),
            prefix: runner.prefix().to_vec(),
        }
    }

    /// The same hooks, with every command run under `prefix` (`["ip", "netns", "exec", "ns1"]`).
    pub fn with_prefix(mut self, prefix: Vec<String>) -> Self {
        self.prefix = prefix;
        self
    }

    /// The argument vector of one call: prefix, tool, lock wait, `-t table`, then `args`.
    pub fn command(&self, family: Family, table: TableName, args: &[String]) -> Vec<String> {
        let mut argv = self.prefix.clone();
        argv.extend([
            self.variant.binary(family).to_owned(),
            "-w".to_owned(),
            self.wait_secs.to_string(),
            "-t".to_owned(),
            table.as_str().to_owned(),
        ]);
        argv.extend_from_slice(args);
        argv
    }

    /// Runs one call. `Err` only when the process could not start (its message).
    fn run(&self, family: Family, table: TableName, args: &[String]) -> Result<Ran, String> {
        let argv = self.command(family, table, args);
        let command = display_argv(&argv);
        let output = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("{command}: cannot start: {e}"))?;
        Ok(Ran {
            command,
            code: output.status.code(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }

    /// `-C`/`-L`: exit 0 is yes, 1 is no (kube-proxy's `checkRuleUsingCheck`), anything else
    /// (a missing namespace, a bad rule) an error.
    fn ask(&self, family: Family, table: TableName, args: &[String]) -> Result<bool, String> {
        let ran = self.run(family, table, args)?;
        match ran.code {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => Err(ran.message()),
        }
    }

    /// `-I`/`-D`: anything but exit 0 is an error.
    fn change(&self, family: Family, table: TableName, args: &[String]) -> Result<(), String> {
        let ran = self.run(family, table, args)?;
        if ran.code == Some(0) {
            Ok(())
        } else {
            Err(ran.message())
        }
    }
}

/// `argv` as one line for messages, words with spaces (a comment) in double quotes.
fn display_argv(argv: &[String]) -> String {
    let words: Vec<String> = argv
        .iter()
        .map(|w| {
            if w.is_empty() || w.contains(char::is_whitespace) {
                format!("\"{w}\"")
            } else {
                w.clone()
            }
        })
        .collect();
    words.join(" ")
}

fn hook_error(op: &'static str, family: Family, hook: &Hook, message: String) -> HookError {
    HookError {
        op,
        family,
        table: hook.table.to_string(),
        chain: hook.chain.to_string(),
        rule: hook.rule.to_string(),
        message,
    }
}

/// `-X CHAIN <rule args>`, for a hook.
fn hook_args(op: &str, hook: &Hook, position: Option<usize>) -> Vec<String> {
    let mut args = vec![op.to_owned(), hook.chain.to_string()];
    args.extend(position.map(|p| p.to_string()));
    args.extend(hook.rule.args());
    args
}

impl HookOps for IptablesHooks {
    fn exists(&self, family: Family, hook: &Hook) -> Result<bool, HookError> {
        self.ask(family, hook.table, &hook_args("-C", hook, None))
            .map_err(|e| hook_error("check", family, hook, e))
    }

    fn insert(&self, family: Family, hook: &Hook, position: usize) -> Result<(), HookError> {
        self.change(family, hook.table, &hook_args("-I", hook, Some(position)))
            .map_err(|e| hook_error("insert", family, hook, e))
    }

    fn delete(&self, family: Family, hook: &Hook) -> Result<(), HookError> {
        self.change(family, hook.table, &hook_args("-D", hook, None))
            .map_err(|e| hook_error("delete", family, hook, e))
    }

    fn chain_exists(
        &self,
        family: Family,
        table: TableName,
        chain: &ChainName,
    ) -> Result<bool, HookError> {
        // `-n`: no DNS lookups while listing (kube-proxy's `ChainExists`).
        let args = ["-n", "-L", chain.as_str()].map(str::to_owned);
        self.ask(family, table, &args).map_err(|message| HookError {
            op: "check chain",
            family,
            table: table.to_string(),
            chain: chain.to_string(),
            rule: String::new(),
            message,
        })
    }
}

/// Ensures every hook exists, in both families. Missing hooks of one built-in chain are inserted
/// at the top in reverse, so a fresh chain ends up in the planned order before anyone else's rules.
/// Returns how many were inserted. Our chains must exist first (apply the plan before this).
///
/// # Errors
/// The first [`HookError`].
pub fn ensure_hooks(ops: &dyn HookOps, hooks: &[Hook]) -> Result<usize, HookError> {
    let mut inserted = 0;
    for family in Family::ALL {
        for hook in hooks.iter().rev() {
            if !ops.exists(family, hook)? {
                ops.insert(family, hook, 1)?;
                inserted += 1;
            }
        }
    }
    Ok(inserted)
}

// === hooks in the restore input ===

/// The restore-input edits of the built-in chains, defined with the plan (which [`crate::apply`]
/// reads, and which needs nothing of this module) under the path they have always had.
pub use crate::plan::BuiltinEdits;

/// How many copies of each of `hooks` (same index) one family's `iptables-save` output shows in
/// its built-in chains. A saved line counts when it reads back as the hook's rule (or prints
/// exactly as it), in the hook's table and chain; foreign rules never do.
pub fn saved_hooks(saved: &str, hooks: &[Hook]) -> Vec<usize> {
    let wanted: Vec<_> = hooks.iter().map(|h| (h.table, &h.chain, &h.rule)).collect();
    crate::rules::saved_copies(saved, &wanted)
}

/// The hooks `saved` (one family's `iptables-save`) lacks, in planned order.
pub fn missing_hooks<'a>(saved: &str, hooks: &'a [Hook]) -> Vec<&'a Hook> {
    saved_hooks(saved, hooks)
        .into_iter()
        .zip(hooks)
        .filter(|(n, _)| *n == 0)
        .map(|(_, h)| h)
        .collect()
}

/// Deletes every copy of every hook, in both families. Returns how many were deleted.
///
/// # Errors
/// The first [`HookError`].
pub fn remove_hooks(ops: &dyn HookOps, hooks: &[Hook]) -> Result<usize, HookError> {
    let mut deleted = 0;
    for family in Family::ALL {
        for hook in hooks {
            // Bounded: a chain cannot hold more copies than this of one rule in practice.
            for _ in 0..64 {
                if !ops.exists(family, hook)? {
                    break;
                }
                ops.delete(family, hook)?;
                deleted += 1;
            }
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Planner;

    #[test]
    fn hook_commands_honour_the_prefix_and_keep_the_comment_whole() {
        let planner = Planner::new(crate::IptablesConfig::default()).expect("valid");
        let hooks = planner.hooks();
        let ops = IptablesHooks::like(
            &CommandRunner::new(Variant::Nft)
                .with_prefix(["ip", "netns", "exec", "ns1"].map(str::to_owned).to_vec()),
        );
        let argv = ops.command(
            Family::V6,
            hooks[0].table,
            &hook_args("-I", &hooks[0], Some(1)),
        );
        assert_eq!(
            display_argv(&argv),
            "ip netns exec ns1 ip6tables-nft -w 5 -t nat -I PREROUTING 1 \
             -m comment --comment \"service portals\" -j SVCP-SERVICES"
        );
        assert_eq!(
            argv.join(" | "),
            "ip | netns | exec | ns1 | ip6tables-nft | -w | 5 | -t | nat | -I | PREROUTING | 1 | \
             -m | comment | --comment | service portals | -j | SVCP-SERVICES"
        );
    }
}
