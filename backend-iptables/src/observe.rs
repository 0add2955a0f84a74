//! Observe: reads our chains back from `iptables-save` into the same model the planner writes,
//! so drift is `observed != planned` and a full resync can delete chains it no longer knows about.
//!
//! Rules are written in `iptables-save`'s canonical form (see [`crate::rules`]), so a chain read
//! back compares equal to the one we wrote; probabilities compare by the kernel's value.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use tracing::warn;

use crate::error::{IptablesError, RestoreFailure};
use crate::names::Names;
use crate::plan::{Applied, ChainKey};

use crate::rules::{parse_rule_spec, ChainName, Family, Rule, TableName};

/// Our chains as the kernel has them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// Every chain we own, with the rules we could read.
    pub chains: BTreeMap<ChainKey, Vec<Rule>>,
    /// Chains of ours holding a rule shape we never write (someone edited them): they count as
    /// drift, and a full sync rewrites or deletes them.
    pub tainted: BTreeSet<ChainKey>,
}

impl Observed {
    /// Adds `iptables-save` output (or concatenated restore inputs: a `:CHAIN` line empties the
    /// chain, `-X` deletes it), keeping only chains `names` owns. Never fails on foreign chains;
    /// a rule of ours it cannot read taints its chain instead of failing the whole read, so a
    /// full sync can still repair it.
    pub fn add_save_output(&mut self, family: Family, save: &str, names: &Names) {
        let mut table = None;
        for line in save.lines().map(str::trim) {
            if let Some(name) = line.strip_prefix('*') {
                table = match name {
                    "nat" => Some(TableName::Nat),
                    "filter" => Some(TableName::Filter),
                    _ => None,
                };
                continue;
            }
            let Some(table) = table else { continue };
            let key = |chain: &str| (family, table, ChainName::new(chain));
            if let Some(decl) = line.strip_prefix(':') {
                let chain = decl.split_whitespace().next().unwrap_or("");
                if names.is_owned(chain) {
                    self.chains.insert(key(chain), Vec::new());
                    self.tainted.remove(&key(chain));
                }
            } else if let Some(rest) = line.strip_prefix("-A ") {
                let (chain, spec) = rest.split_once(' ').unwrap_or((rest, ""));
                if !names.is_owned(chain) {
                    continue;
                }
                match parse_rule_spec(spec) {
                    Ok(rule) => self.chains.entry(key(chain)).or_default().push(rule),
                    Err(reason) => {
                        warn!(chain, %reason, "rule of ours not in our shapes");
                        self.chains.entry(key(chain)).or_default();
                        self.tainted.insert(key(chain));
                    }
                }
            } else if let Some(chain) = line.strip_prefix("-X ") {
                self.chains.remove(&key(chain.trim()));
                self.tainted.remove(&key(chain.trim()));
            }
        }
    }

    /// What is applied, as far as the kernel says: usable for a full plan, which then deletes
    /// every chain of ours that the table no longer needs.
    pub fn to_applied(&self) -> Applied {
        Applied::from_chains_tainted(
            &self.tainted,
            self.chains
                .iter()
                .map(|(k, rules)| (k.clone(), rules.as_slice())),
        )
    }

    /// The chains whose kernel content differs from what `applied` recorded, plus chains missing
    /// on either side: non-empty means drift, and the next sync must be full.
    pub fn drift(&self, applied: &Applied) -> Vec<ChainKey> {
        let observed = self.to_applied();
        applied.differences(&observed)
    }
}

/// Reads one table of one family (`iptables-save -t TABLE`), or all of them.
#[async_trait]
pub trait SaveRunner: Send + Sync + std::fmt::Debug {
    /// The save output.
    ///
    /// # Errors
    /// [`RestoreFailure`] (the command, status and stderr) if the tool failed.
    async fn save(&self, family: Family, table: TableName) -> Result<String, RestoreFailure>;

    /// The save output of every table of `family` (`iptables-save`, no `-t`): what a full sync
    /// and the drift check read, one process per family. By default the `filter` and `nat`
    /// saves, concatenated (two calls).
    ///
    /// # Errors
    /// [`RestoreFailure`] if the tool failed.
    async fn save_family(&self, family: Family) -> Result<String, RestoreFailure> {
        let mut text = self.save(family, TableName::Filter).await?;
        text.push_str(&self.save(family, TableName::Nat).await?);
        Ok(text)
    }
}

#[async_trait]
impl SaveRunner for crate::apply::CommandRunner {
    async fn save(&self, family: Family, table: TableName) -> Result<String, RestoreFailure> {
        self.tools().save(family, Some(table.as_str())).await
    }

    async fn save_family(&self, family: Family) -> Result<String, RestoreFailure> {
        self.tools().save(family, None).await
    }
}

/// One family's `iptables-save` output (every table), as a full sync or a drift check read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    /// The family.
    pub family: Family,
    /// The tool's output.
    pub text: String,
}

/// Reads every table of each of `families`: one [`SaveRunner::save_family`] each.
///
/// # Errors
/// [`IptablesError::SaveFamily`] if a save failed.
pub async fn save_families(
    runner: &dyn SaveRunner,
    families: &[Family],
) -> Result<Vec<Saved>, IptablesError> {
    let mut out = Vec::with_capacity(families.len());
    for &family in families {
        let text = runner
            .save_family(family)
            .await
            .map_err(|failure| IptablesError::SaveFamily { family, failure })?;
        out.push(Saved { family, text });
    }
    Ok(out)
}

/// Our chains in `saved`.
pub fn observe_saved(saved: &[Saved], names: &Names) -> Observed {
    let mut observed = Observed::default();
    for s in saved {
        observed.add_save_output(s.family, &s.text, names);
    }
    observed
}

/// Reads every table of both families we write (one save per family).
///
/// # Errors
/// [`IptablesError::SaveFamily`] if a save failed.
pub async fn observe(runner: &dyn SaveRunner, names: &Names) -> Result<Observed, IptablesError> {
    let saved = save_families(runner, &Family::ALL).await?;
    Ok(observe_saved(&saved, names))
}

/// A hash of what we own in one family's `iptables-save` output, as printed: our chains'
/// declarations (counters stripped) and rules, and the rules of the built-in chains that jump to
/// our chains (the hooks), each with its table. Foreign chains and foreign rules of the built-in
/// chains are left out, so their changes do not count. Cheap next to parsing: no rule is parsed,
/// so the drift check compares this first and parses only when it changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(u64);

impl Fingerprint {
    /// The fingerprint of `saved` (one family's output, every table).
    pub fn of(saved: &Saved, names: &Names) -> Self {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        saved.family.hash(&mut hasher);
        let mut table: Option<&str> = None;
        for line in saved.text.lines() {
            if let Some(name) = line.strip_prefix('*') {
                table = matches!(name, "nat" | "filter").then_some(name);
                continue;
            }
            let Some(table) = table else { continue };
            if let Some(decl) = line.strip_prefix(':') {
                let chain = decl.split_whitespace().next().unwrap_or("");
                if names.is_owned(chain) {
                    (table, ':', chain).hash(&mut hasher);
                }
            } else if let Some(rest) = line.strip_prefix("-A ") {
                let chain = rest.split(' ').next().unwrap_or("");
                let ours = names.is_owned(chain)
                    || rest
                        .split_once(" -j ")
                        .is_some_and(|(_, target)| names.is_owned(target.trim()));
                if ours {
                    (table, rest).hash(&mut hasher);
                }
            }
        }
        Self(hasher.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::ChainName;

    /// `iptables-nft-save -t nat` of a namespace holding our chains and a foreign one.
    const SAVE: &str = "# Generated by iptables-nft-save v1.8.9 (nf_tables) on Wed Nov 25 14:32:58 2026
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:SVCP-SVC-KMYSRGI72NSJYQNZ - [0:0]
-A PREROUTING -m comment --comment \"service portals\" -j SVCP-SERVICES
-A KUBE-SERVICES -p tcp -m multiport --dports 80,443 -j RETURN
-A SVCP-SVC-KMYSRGI72NSJYQNZ -p tcp -m comment --comment ns/etpl:p -m statistic --mode random --probability 0.33333333349 -j DNAT --to-destination 198.18.1.7:80
COMMIT
# Completed on Wed Nov 25 14:32:58 2026
";

    #[test]
    fn reads_our_chains_and_skips_everything_else() {
        let names = Names::default();
        let mut observed = Observed::default();
        observed.add_save_output(Family::V4, SAVE, &names);
        assert!(observed.tainted.is_empty());
        let keys: Vec<&ChainKey> = observed.chains.keys().collect();
        assert_eq!(
            keys,
            [&(
                Family::V4,
                TableName::Nat,
                ChainName::new("SVCP-SVC-KMYSRGI72NSJYQNZ")
            )]
        );
        let rules = observed.chains.values().next().expect("one chain");
        let written = crate::rules::parse_rule_spec(
            "-p tcp -m comment --comment \"ns/etpl:p\" -m statistic --mode random \
             --probability 0.3333333333 -j DNAT --to-destination 198.18.1.7:80",
        )
        .expect("our shape");
        assert_eq!(rules, &vec![written], "save's 11 digits equal our 10");
    }

    #[test]
    fn drift_names_changed_and_missing_chains() {
        let names = Names::default();
        let mut observed = Observed::default();
        observed.add_save_output(Family::V4, SAVE, &names);
        assert!(observed.drift(&observed.to_applied()).is_empty());
        assert_eq!(observed.drift(&Applied::new()).len(), 1);
    }

    #[test]
    fn an_edited_chain_of_ours_is_tainted_not_fatal() {
        let names = Names::default();
        let applied = {
            let mut o = Observed::default();
            o.add_save_output(Family::V4, SAVE, &names);
            o.to_applied()
        };
        let edited = SAVE.replace(
            "-A KUBE-SERVICES",
            "-A SVCP-SVC-KMYSRGI72NSJYQNZ -p tcp -m multiport --dports 1,2 -j RETURN\n-A KUBE-SERVICES",
        );
        let mut observed = Observed::default();
        observed.add_save_output(Family::V4, &edited, &names);
        assert_eq!(observed.tainted.len(), 1);
        assert_eq!(
            observed.drift(&applied).len(),
            1,
            "a tainted chain is drift"
        );
    }
}
