//! Cleanup: removes every chain we own (by [`crate::names::Names::is_owned`]) and every hook
//! (jump from a built-in chain to ours) in both tables, and nothing else. One `iptables-save`
//! per family shows what is there; when something of ours is, one `iptables-restore --noflush`
//! per family deletes the hooks (`-D`, every copy), then flushes (`:CHAIN`) and deletes (`-X`) our
//! chains. The built-in chains keep every other rule: the restore declares none of them.
//!
//! The dataplane uses the same [`removal`] to retire a family it no longer programs (an
//! IPv4-only table on a host whose IPv6 tables still hold our chains from an earlier run).

use crate::apply::{apply_restores, RestoreRunner};
use crate::error::IptablesError;
use crate::hooks::{saved_hooks, BuiltinEdits};
use crate::names::Names;
use crate::observe::{observe_saved, save_families, SaveRunner, Saved};
use crate::plan::{Hook, Restore};
use crate::rules::{Family, Table, TableName};

/// What a cleanup removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Removed {
    /// Hook copies deleted from built-in chains.
    pub hooks: usize,
    /// Chains of ours deleted.
    pub chains: usize,
    /// Restore processes run (families that held something of ours).
    pub restores: usize,
}

/// The restores and hook deletions that remove everything of ours from one family, as `saved`
/// shows it: per table, our chains to flush and delete, and a `-D` per copy of each of `hooks`
/// found. Both empty when the family holds nothing of ours.
pub fn removal(saved: &Saved, names: &Names, hooks: &[Hook]) -> (Vec<Restore>, BuiltinEdits) {
    let observed = observe_saved(std::slice::from_ref(saved), names);
    let mut restores = Vec::new();
    for name in [TableName::Filter, TableName::Nat] {
        let mut table = Table::new(name);
        table.deleted = observed
            .chains
            .keys()
            .filter(|(f, t, _)| *f == saved.family && *t == name)
            .map(|(_, _, chain)| chain.clone())
            .collect();
        if !table.is_empty() {
            restores.push(Restore {
                family: saved.family,
                table,
            });
        }
    }
    let mut edits = BuiltinEdits::new();
    for (hook, copies) in hooks.iter().zip(saved_hooks(&saved.text, hooks)) {
        if copies > 0 {
            edits.delete(saved.family, hook, copies);
        }
    }
    (restores, edits)
}

/// Deletes every hook and chain of ours in both families: one save per family, and one restore
/// per family that holds something of ours.
///
/// # Errors
/// [`IptablesError::SaveFamily`] from reading, [`IptablesError::Restore`] from deleting.
pub async fn cleanup(
    restore: &dyn RestoreRunner,
    save: &dyn SaveRunner,
    names: &Names,
    hooks: &[Hook],
) -> Result<Removed, IptablesError> {
    let saved = save_families(save, &Family::ALL).await?;
    let mut restores = Vec::new();
    let mut edits = BuiltinEdits::new();
    for family in &saved {
        let (r, e) = removal(family, names, hooks);
        restores.extend(r);
        edits.extend(e);
    }
    let report = apply_restores(restore, &restores, &edits).await?;
    Ok(Removed {
        hooks: report.hooks_deleted,
        chains: report.chains_deleted,
        restores: report.restores,
    })
}

/// Deletes every chain of ours found by `iptables-save`, leaving the built-in chains alone: a
/// chain a hook still jumps to cannot be deleted, so remove the hooks first, or call [`cleanup`]
/// with [`crate::Planner::hooks`], which does both. Returns how many chains were deleted.
///
/// # Errors
/// As [`cleanup`].
pub async fn cleanup_chains(
    restore: &dyn RestoreRunner,
    save: &dyn SaveRunner,
    names: &Names,
) -> Result<usize, IptablesError> {
    Ok(cleanup(restore, save, names, &[]).await?.chains)
}
