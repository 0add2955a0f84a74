//! Cleanup: removes every chain we own (by [`crate::names::Names::is_owned`]) in both tables and
//! both families, and nothing else. Remove the hooks first ([`crate::hooks::remove_hooks`]): a
//! chain still jumped to from a built-in chain cannot be deleted.

use crate::apply::{apply_plan, RestoreRunner};
use crate::error::IptablesError;
use crate::names::Names;
use crate::observe::{observe, SaveRunner};
use crate::plan::{Plan, Restore};
use crate::rules::{Family, Table, TableName};

/// Deletes every chain of ours found by `iptables-save`: one restore per family and table that
/// flushes them all (`:CHAIN`) and then deletes them (`-X`). Returns how many were deleted.
///
/// # Errors
/// [`IptablesError::Save`]/[`IptablesError::Parse`] from reading, [`IptablesError::Restore`]
/// from deleting (for instance, a chain still referenced by a hook).
pub async fn cleanup_chains(
    restore: &dyn RestoreRunner,
    save: &dyn SaveRunner,
    names: &Names,
) -> Result<usize, IptablesError> {
    let observed = observe(save, names).await?;
    let mut restores = Vec::new();
    for family in Family::ALL {
        for name in [TableName::Filter, TableName::Nat] {
            let mut table = Table::new(name);
            table.deleted = observed
                .chains
                .keys()
                .filter(|(f, t, _)| *f == family && *t == name)
                .map(|(_, _, chain)| chain.clone())
                .collect();
            if !table.is_empty() {
                restores.push(Restore { family, table });
            }
        }
    }
    let plan = Plan::deletions(restores);
    let report = apply_plan(restore, &plan).await?;
    Ok(report.chains_deleted)
}
