//! An in-memory [`RestoreRunner`]: records every input and keeps, per family, the concatenation
//! of the inputs that "succeeded", which [`crate::testing::trace::Tracer::new`] reads as the kernel's
//! state (later chains replace earlier ones, `-X` deletes, as `--noflush` restores do).

use std::sync::Mutex;

use async_trait::async_trait;

use crate::apply::RestoreRunner;
use crate::error::RestoreFailure;
use crate::rules::Family;

/// The fake restore tool.
#[derive(Debug, Default)]
pub struct FakeRestore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    calls: Vec<(Family, String)>,
    state: [String; 2],
    fail_next: Option<RestoreFailure>,
}

fn slot(family: Family) -> usize {
    match family {
        Family::V4 => 0,
        Family::V6 => 1,
    }
}

impl FakeRestore {
    /// A fake with nothing applied.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the next restore fail with `failure` (and leave the state as it was).
    pub fn fail_next(&self, failure: RestoreFailure) {
        self.lock().fail_next = Some(failure);
    }

    /// Every input given, in order, with its family.
    pub fn calls(&self) -> Vec<(Family, String)> {
        self.lock().calls.clone()
    }

    /// Every successful input of `family`, concatenated.
    pub fn state(&self, family: Family) -> String {
        self.lock().state[slot(family)].clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock only means another test thread panicked; the data is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl crate::observe::SaveRunner for FakeRestore {
    /// The state's blocks of `table`, in order: what a save would show once the `-X` lines and
    /// later declarations are applied by the reader ([`crate::observe::Observed`] does).
    async fn save(
        &self,
        family: Family,
        table: crate::rules::TableName,
    ) -> Result<String, RestoreFailure> {
        let state = self.state(family);
        let header = format!("*{table}");
        let mut out = String::new();
        let mut keep = false;
        for line in state.lines() {
            if line.starts_with('*') {
                keep = line == header;
            }
            if keep {
                out.push_str(line);
                out.push('\n');
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl RestoreRunner for FakeRestore {
    async fn restore(&self, family: Family, input: &str) -> Result<(), RestoreFailure> {
        let mut inner = self.lock();
        inner.calls.push((family, input.to_owned()));
        if let Some(failure) = inner.fail_next.take() {
            return Err(failure);
        }
        inner.state[slot(family)].push_str(input);
        Ok(())
    }
}

/// An in-memory [`crate::hooks::HookOps`]: built-in chains as rule lists. User chains exist
/// unless marked missing with [`FakeHooks::set_missing`].
#[derive(Debug, Default)]
pub struct FakeHooks {
    chains: Mutex<std::collections::BTreeMap<(Family, String, String), Vec<String>>>,
    missing: Mutex<std::collections::BTreeSet<String>>,
}

impl FakeHooks {
    /// No hooks anywhere.
    pub fn new() -> Self {
        Self::default()
    }

    /// The rules of one built-in chain, in order.
    pub fn chain(&self, family: Family, table: &str, chain: &str) -> Vec<String> {
        self.lock()
            .get(&(family, table.to_owned(), chain.to_owned()))
            .cloned()
            .unwrap_or_default()
    }

    /// Makes `chain` (not) exist for `chain_exists`.
    pub fn set_missing(&self, chain: &str, missing: bool) {
        let mut set = self.missing.lock().unwrap_or_else(|e| e.into_inner());
        if missing {
            set.insert(chain.to_owned());
        } else {
            set.remove(chain);
        }
    }

    /// Appends a rule someone else owns.
    pub fn append_foreign(&self, family: Family, table: &str, chain: &str, rule: &str) {
        self.lock()
            .entry((family, table.to_owned(), chain.to_owned()))
            .or_default()
            .push(rule.to_owned());
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<(Family, String, String), Vec<String>>>
    {
        self.chains.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn key(family: Family, hook: &crate::plan::Hook) -> (Family, String, String) {
    (family, hook.table.to_string(), hook.chain.to_string())
}

impl crate::hooks::HookOps for FakeHooks {
    fn exists(
        &self,
        family: Family,
        hook: &crate::plan::Hook,
    ) -> Result<bool, crate::hooks::HookError> {
        let rule = hook.rule.to_string();
        Ok(self
            .lock()
            .get(&key(family, hook))
            .is_some_and(|rules| rules.contains(&rule)))
    }

    fn insert(
        &self,
        family: Family,
        hook: &crate::plan::Hook,
        position: usize,
    ) -> Result<(), crate::hooks::HookError> {
        let mut chains = self.lock();
        let rules = chains.entry(key(family, hook)).or_default();
        let at = position.saturating_sub(1).min(rules.len());
        rules.insert(at, hook.rule.to_string());
        Ok(())
    }

    fn delete(
        &self,
        family: Family,
        hook: &crate::plan::Hook,
    ) -> Result<(), crate::hooks::HookError> {
        let rule = hook.rule.to_string();
        if let Some(rules) = self.lock().get_mut(&key(family, hook)) {
            if let Some(i) = rules.iter().position(|r| *r == rule) {
                rules.remove(i);
            }
        }
        Ok(())
    }

    fn chain_exists(
        &self,
        _family: Family,
        _table: crate::rules::TableName,
        chain: &crate::rules::ChainName,
    ) -> Result<bool, crate::hooks::HookError> {
        let missing = self.missing.lock().unwrap_or_else(|e| e.into_inner());
        Ok(!missing.contains(chain.as_str()))
    }
}
