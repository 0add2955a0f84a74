//! In-memory runners. [`FakeRestore`] records every input and keeps, per family, the
//! concatenation of the inputs that "succeeded" (our chains), which
//! [`crate::testing::trace::Tracer::new`] reads as the kernel's state (later chains replace
//! earlier ones, `-X` deletes, as `--noflush` restores do); lines on the built-in chains (`-I`,
//! `-A`, `-D` on `PREROUTING`...: the hooks) go to a model of those chains instead, which its
//! saves print back. Every restore and save is counted as the process it would be, so tests can
//! assert what a sync costs ([`FakeRestore::processes`], plus [`FakeHooks::calls`]).

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::apply::RestoreRunner;
use crate::error::RestoreFailure;
use crate::rules::{Family, TableName};

/// The built-in chains of the tables we write.
const BUILTIN: [&str; 5] = ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"];

/// The fake restore (and save) tool.
#[derive(Debug, Default)]
pub struct FakeRestore {
    inner: Mutex<Inner>,
}

/// One process the fake stood in for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Process {
    /// A restore of `family`.
    Restore(Family),
    /// A save of `family`: one table, or every table (`None`).
    Save(Family, Option<TableName>),
}

impl Process {
    /// The family it ran for.
    pub fn family(&self) -> Family {
        match self {
            Process::Restore(f) | Process::Save(f, _) => *f,
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    calls: Vec<(Family, String)>,
    processes: Vec<Process>,
    state: [String; 2],
    /// (family, table, built-in chain) → rule specs, in order.
    builtin: BTreeMap<(Family, String, String), Vec<String>>,
    fail_next: Option<RestoreFailure>,
}

fn slot(family: Family) -> usize {
    match family {
        Family::V4 => 0,
        Family::V6 => 1,
    }
}

/// A line on a built-in chain: (op, chain, position, spec).
fn builtin_line(line: &str) -> Option<(&str, &str, Option<usize>, &str)> {
    let (op, rest) = line.split_once(' ')?;
    if !matches!(op, "-I" | "-A" | "-D") {
        return None;
    }
    let (chain, mut spec) = rest.split_once(' ').unwrap_or((rest, ""));
    if !BUILTIN.contains(&chain) {
        return None;
    }
    let mut position = None;
    if op == "-I" {
        let (first, after) = spec.split_once(' ').unwrap_or((spec, ""));
        if let Ok(n) = first.parse() {
            position = Some(n);
            spec = after;
        }
    }
    Some((op, chain, position, spec))
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

    /// Every restore and save run, in order: the processes the real tools would have been.
    pub fn processes(&self) -> Vec<Process> {
        self.lock().processes.clone()
    }

    /// Every successful input of `family`, concatenated, without the lines on built-in chains.
    pub fn state(&self, family: Family) -> String {
        self.lock().state[slot(family)].clone()
    }

    /// The rules of one built-in chain, in order (the specs, as after `-A CHAIN `).
    pub fn builtin(&self, family: Family, table: &str, chain: &str) -> Vec<String> {
        self.lock()
            .builtin
            .get(&(family, table.to_owned(), chain.to_owned()))
            .cloned()
            .unwrap_or_default()
    }

    /// Appends a rule someone else owns to a built-in chain.
    pub fn append_builtin(&self, family: Family, table: &str, chain: &str, spec: &str) {
        self.lock()
            .builtin
            .entry((family, table.to_owned(), chain.to_owned()))
            .or_default()
            .push(spec.to_owned());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock only means another test thread panicked; the data is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What a save of one table shows: the state's blocks of `table`, in order (the reader,
    /// [`crate::observe::Observed`], applies later declarations and `-X` lines), then the
    /// built-in chains' rules.
    fn render_save(inner: &Inner, family: Family, table: TableName) -> String {
        let header = format!("*{table}");
        let mut out = String::new();
        let mut keep = false;
        for line in inner.state[slot(family)].lines() {
            if line.starts_with('*') {
                keep = line == header;
            }
            if keep {
                out.push_str(line);
                out.push('\n');
            }
        }
        out.push_str(&header);
        out.push('\n');
        for chain in BUILTIN {
            out.push_str(&format!(":{chain} ACCEPT [0:0]\n"));
        }
        for ((f, t, chain), rules) in &inner.builtin {
            if *f == family && *t == table.as_str() {
                for rule in rules {
                    out.push_str(&format!("-A {chain} {rule}\n"));
                }
            }
        }
        out.push_str("COMMIT\n");
        out
    }
}

#[async_trait]
impl crate::observe::SaveRunner for FakeRestore {
    async fn save(&self, family: Family, table: TableName) -> Result<String, RestoreFailure> {
        let mut inner = self.lock();
        inner.processes.push(Process::Save(family, Some(table)));
        Ok(Self::render_save(&inner, family, table))
    }

    async fn save_family(&self, family: Family) -> Result<String, RestoreFailure> {
        let mut inner = self.lock();
        inner.processes.push(Process::Save(family, None));
        let mut text = Self::render_save(&inner, family, TableName::Filter);
        text.push_str(&Self::render_save(&inner, family, TableName::Nat));
        Ok(text)
    }
}

#[async_trait]
impl RestoreRunner for FakeRestore {
    async fn restore(&self, family: Family, input: &str) -> Result<(), RestoreFailure> {
        let mut inner = self.lock();
        inner.calls.push((family, input.to_owned()));
        inner.processes.push(Process::Restore(family));
        if let Some(failure) = inner.fail_next.take() {
            return Err(failure);
        }
        // Built-in chain lines apply to a copy, kept only if the whole input is good.
        let mut builtin = inner.builtin.clone();
        let mut ours = String::new();
        let mut table = String::new();
        for (n, line) in input.lines().enumerate() {
            if let Some(name) = line.strip_prefix('*') {
                name.clone_into(&mut table);
            }
            let Some((op, chain, position, spec)) = builtin_line(line) else {
                ours.push_str(line);
                ours.push('\n');
                continue;
            };
            let rules = builtin
                .entry((family, table.clone(), chain.to_owned()))
                .or_default();
            match op {
                "-I" => {
                    let at = position.unwrap_or(1).saturating_sub(1).min(rules.len());
                    rules.insert(at, spec.to_owned());
                }
                "-A" => rules.push(spec.to_owned()),
                _ => match rules.iter().position(|r| r == spec) {
                    Some(i) => {
                        rules.remove(i);
                    }
                    None => {
                        return Err(RestoreFailure {
                            command: "fake-restore".into(),
                            status: Some(1),
                            stderr: format!(
                                "no such rule in {chain}\niptables-restore: line {} failed",
                                n + 1
                            ),
                        })
                    }
                },
            }
        }
        inner.builtin = builtin;
        inner.state[slot(family)].push_str(&ours);
        Ok(())
    }
}

/// An in-memory [`crate::hooks::HookOps`]: built-in chains as rule lists. User chains exist
/// unless marked missing with [`FakeHooks::set_missing`].
#[derive(Debug, Default)]
pub struct FakeHooks {
    chains: Mutex<std::collections::BTreeMap<(Family, String, String), Vec<String>>>,
    missing: Mutex<std::collections::BTreeSet<String>>,
    calls: std::sync::atomic::AtomicUsize,
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

    /// How many calls were made: each one an `iptables` process for the real thing.
    pub fn calls(&self) -> usize {
        self.calls.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn count(&self) {
        self.calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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
        self.count();
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
        self.count();
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
        self.count();
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
        self.count();
        let missing = self.missing.lock().unwrap_or_else(|e| e.into_inner());
        Ok(!missing.contains(chain.as_str()))
    }
}
