//! The bootstrap jumps from the built-in chains to ours ([`crate::plan::Planner::hooks`]). They
//! are not part of the restore input (a restore of a built-in chain would flush other users'
//! rules), so they are ensured one by one, idempotently, as kube-proxy's `EnsureRule` does, with
//! the `iptables` crate. That crate runs one process per call and blocks: call these functions
//! off the async runtime (`tokio::task::spawn_blocking`).

use std::fmt;

use crate::apply::Variant;
use crate::plan::Hook;
use crate::rules::{ChainName, Family, TableName};

/// A hook operation that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{op} {family} {table} {chain} {rule}: {message}")]
pub struct HookError {
    /// `check`, `insert` or `delete`.
    pub op: &'static str,
    /// Address family.
    pub family: Family,
    /// Table.
    pub table: String,
    /// Built-in chain.
    pub chain: String,
    /// The rule spec.
    pub rule: String,
    /// What the tool said.
    pub message: String,
}

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

/// Whether every canary chain is still there (both tables, both families). `false` means
/// someone flushed a table behind our back: the next sync must be full.
///
/// # Errors
/// The first [`HookError`].
pub fn canaries_present(ops: &dyn HookOps, canary: &ChainName) -> Result<bool, HookError> {
    for family in Family::ALL {
        for table in [TableName::Nat, TableName::Filter] {
            if !ops.chain_exists(family, table, canary)? {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// [`HookOps`] over the `iptables` crate, with its command set to the detected variant's binary.
pub struct IptablesHooks {
    v4: iptables::IPTables,
    v6: iptables::IPTables,
}

impl fmt::Debug for IptablesHooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IptablesHooks")
            .field("v4", &self.v4.cmd)
            .field("v6", &self.v6.cmd)
            .finish()
    }
}

fn tool(cmd: &'static str) -> iptables::IPTables {
    // Every iptables we support (>= 1.4.20) has -C and -w; building the struct directly avoids the
    // crate's `--version` probe of plain `iptables`, which may be the other variant.
    iptables::IPTables {
        cmd,
        has_check: true,
        has_wait: true,
        is_numeric: false,
    }
}

impl IptablesHooks {
    /// Hooks through `iptables-legacy`/`iptables-nft` (and the `ip6tables` ones).
    pub fn new(variant: Variant) -> Self {
        let (v4, v6) = match variant {
            Variant::Legacy => ("iptables-legacy", "ip6tables-legacy"),
            Variant::Nft => ("iptables-nft", "ip6tables-nft"),
        };
        Self {
            v4: tool(v4),
            v6: tool(v6),
        }
    }

    fn tool(&self, family: Family) -> &iptables::IPTables {
        match family {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }
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

impl HookOps for IptablesHooks {
    fn exists(&self, family: Family, hook: &Hook) -> Result<bool, HookError> {
        self.tool(family)
            .exists(
                hook.table.as_str(),
                hook.chain.as_str(),
                &hook.rule.to_string(),
            )
            .map_err(|e| hook_error("check", family, hook, e.to_string()))
    }

    fn insert(&self, family: Family, hook: &Hook, position: usize) -> Result<(), HookError> {
        let position = i32::try_from(position).unwrap_or(1);
        self.tool(family)
            .insert(
                hook.table.as_str(),
                hook.chain.as_str(),
                &hook.rule.to_string(),
                position,
            )
            .map_err(|e| hook_error("insert", family, hook, e.to_string()))
    }

    fn delete(&self, family: Family, hook: &Hook) -> Result<(), HookError> {
        self.tool(family)
            .delete(
                hook.table.as_str(),
                hook.chain.as_str(),
                &hook.rule.to_string(),
            )
            .map_err(|e| hook_error("delete", family, hook, e.to_string()))
    }

    fn chain_exists(
        &self,
        family: Family,
        table: TableName,
        chain: &ChainName,
    ) -> Result<bool, HookError> {
        self.tool(family)
            .chain_exists(table.as_str(), chain.as_str())
            .map_err(|e| HookError {
                op: "check chain",
                family,
                table: table.to_string(),
                chain: chain.to_string(),
                rule: String::new(),
                message: e.to_string(),
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
