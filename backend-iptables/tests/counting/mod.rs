//! The real runners, counting every process they start (tests only).

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use backend_iptables::apply::{CommandRunner, RestoreRunner, Variant};
use backend_iptables::error::RestoreFailure;
use backend_iptables::hooks::{HookError, HookOps, IptablesHooks};
use backend_iptables::observe::SaveRunner;
use backend_iptables::plan::Hook;
use backend_iptables::rules::{ChainName, Family, TableName};

/// Which tool ran, for which family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ran {
    /// `iptables-save` (one table or all).
    Save(Family),
    /// `iptables-restore`.
    Restore(Family),
    /// A single-rule `iptables` call.
    Rule,
}

/// The real runners, counting every process they start.
#[derive(Debug)]
pub struct Counting {
    /// The real runner.
    pub runner: CommandRunner,
    /// The real hooks.
    pub hooks: IptablesHooks,
    log: Mutex<Vec<Ran>>,
}

impl Counting {
    /// Runners for `variant`, every command under `prefix` (`ip netns exec NAME`, or none).
    pub fn new(variant: Variant, prefix: Vec<String>) -> Arc<Self> {
        let runner = CommandRunner::new(variant).with_prefix(prefix);
        Arc::new(Self {
            hooks: IptablesHooks::like(&runner),
            runner,
            log: Mutex::new(Vec::new()),
        })
    }

    fn push(&self, ran: Ran) {
        self.log.lock().expect("log").push(ran);
    }

    /// What ran since the log was last taken.
    pub fn take(&self) -> Vec<Ran> {
        std::mem::take(&mut *self.log.lock().expect("log"))
    }
}

#[async_trait]
impl RestoreRunner for Counting {
    async fn restore(&self, family: Family, input: &str) -> Result<(), RestoreFailure> {
        self.push(Ran::Restore(family));
        self.runner.restore(family, input).await
    }
}

#[async_trait]
impl SaveRunner for Counting {
    async fn save(&self, family: Family, table: TableName) -> Result<String, RestoreFailure> {
        self.push(Ran::Save(family));
        self.runner.save(family, table).await
    }

    async fn save_family(&self, family: Family) -> Result<String, RestoreFailure> {
        self.push(Ran::Save(family));
        self.runner.save_family(family).await
    }
}

impl HookOps for Counting {
    fn exists(&self, family: Family, hook: &Hook) -> Result<bool, HookError> {
        self.push(Ran::Rule);
        self.hooks.exists(family, hook)
    }

    fn insert(&self, family: Family, hook: &Hook, position: usize) -> Result<(), HookError> {
        self.push(Ran::Rule);
        self.hooks.insert(family, hook, position)
    }

    fn delete(&self, family: Family, hook: &Hook) -> Result<(), HookError> {
        self.push(Ran::Rule);
        self.hooks.delete(family, hook)
    }

    fn chain_exists(
        &self,
        family: Family,
        table: TableName,
        chain: &ChainName,
    ) -> Result<bool, HookError> {
        self.push(Ran::Rule);
        self.hooks.chain_exists(family, table, chain)
    }
}
