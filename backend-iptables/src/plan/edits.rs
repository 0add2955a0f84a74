//! [`BuiltinEdits`]: the lines a restore input carries for the built-in chains (the hooks
//! [`super::Planner::hooks`] plans, inserted or deleted), beside our own chains' text. Pure data,
//! rendered here; [`crate::hooks`] decides which hooks need them, from a save, and
//! [`crate::apply`] writes them into each table's block.

use std::collections::{BTreeMap, BTreeSet};

use super::Hook;
use crate::rules::{Family, TableName};

/// Lines for the built-in chains of one restore input, per family and table: `-D` lines go
/// right after the table's `*table` line (before our chains are flushed or deleted, which a
/// reference from a built-in chain would forbid), `-I` lines right before its `COMMIT` (after our
/// chains are declared, which a jump needs). Only the lines given are touched: the built-in chains
/// keep every other rule, since the restore runs with `--noflush` and declares none of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuiltinEdits {
    head: BTreeMap<(Family, TableName), Vec<String>>,
    tail: BTreeMap<(Family, TableName), Vec<String>>,
}

impl BuiltinEdits {
    /// No edits.
    pub fn new() -> Self {
        Self::default()
    }

    /// Inserts each of `hooks` at the top of its built-in chain. Hooks of one chain are inserted
    /// in reverse, so a chain missing all of them ends up in the planned order before anyone
    /// else's rules (as [`crate::hooks::ensure_hooks`] does one process at a time).
    pub fn insert(&mut self, family: Family, hooks: &[&Hook]) {
        for hook in hooks.iter().rev() {
            // `Rule`'s display is restore input (the comment quoted).
            self.tail
                .entry((family, hook.table))
                .or_default()
                .push(format!("-I {} 1 {}", hook.chain, hook.rule));
        }
    }

    /// Deletes `copies` copies of `hook` (as many as the save showed).
    pub fn delete(&mut self, family: Family, hook: &Hook, copies: usize) {
        let line = format!("-D {} {}", hook.chain, hook.rule);
        let lines = self.head.entry((family, hook.table)).or_default();
        lines.extend(std::iter::repeat_n(line, copies));
    }

    /// Adds `other`'s edits after this one's.
    pub fn extend(&mut self, other: BuiltinEdits) {
        for (key, lines) in other.head {
            self.head.entry(key).or_default().extend(lines);
        }
        for (key, lines) in other.tail {
            self.tail.entry(key).or_default().extend(lines);
        }
    }

    /// Lines to put right after `*table`.
    pub fn head(&self, family: Family, table: TableName) -> &[String] {
        self.head.get(&(family, table)).map_or(&[], Vec::as_slice)
    }

    /// Lines to put right before `COMMIT`.
    pub fn tail(&self, family: Family, table: TableName) -> &[String] {
        self.tail.get(&(family, table)).map_or(&[], Vec::as_slice)
    }

    /// The tables with edits, in family then table order.
    pub fn tables(&self) -> BTreeSet<(Family, TableName)> {
        self.head.keys().chain(self.tail.keys()).copied().collect()
    }

    /// How many lines in all.
    pub fn len(&self) -> usize {
        self.head
            .values()
            .chain(self.tail.values())
            .map(Vec::len)
            .sum()
    }

    /// Whether there is no edit.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many `-I` lines.
    pub fn inserted(&self) -> usize {
        self.tail.values().map(Vec::len).sum()
    }

    /// How many `-D` lines.
    pub fn deleted(&self) -> usize {
        self.head.values().map(Vec::len).sum()
    }
}
