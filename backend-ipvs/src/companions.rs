//! The companions IPVS needs, as kube-proxy's IPVS mode has them: ipsets that list the
//! service addresses by role, and a fixed handful of iptables rules that match those sets.
//! The rule count does not grow with the number of services; only the sets do.
//!
//! ```text
//!  nat PREROUTING ─┐
//!  nat OUTPUT ─────┴─▶ {P}SERVICES: cluster IP:port from outside the cluster CIDRs ─▶ {P}MARK-MASQ
//!                                   node port / external / LB IP:port (Cluster policy) ─▶ {P}MARK-MASQ
//!  nat POSTROUTING ──▶ {P}POSTROUTING: endpoint reaching itself ({P}LOOP-BACK) ─▶ MASQUERADE
//!                                      marked 0x4000 ─▶ clear the bit, MASQUERADE
//!  filter INPUT ───┐
//!  filter FORWARD ─┴─▶ {P}FILTER: LB IP:port with source ranges, source not in them ─▶ DROP
//!                                 no local endpoint for a Local policy ({P}DROP) ─▶ DROP
//!                                 same, external address, source outside the cluster CIDRs
//!                                   ({P}DROP-OUTSIDE: pods reach the cluster endpoints) ─▶ DROP
//!                                 no endpoint at all ({P}REJECT) ─▶ REJECT
//! ```
//!
//! Why there: IPVS hooks `LOCAL_IN` after filter `INPUT`, so filter verdicts come first; the
//! masquerade mark is set before IPVS picks a real server and acted on in `POSTROUTING`, which
//! IPVS-forwarded packets pass only with `net.ipv4.vs.conntrack=1` (set at each full sync, as
//! kube-proxy does). IPVS itself already answers ICMP port unreachable for a virtual server with
//! no real servers; the REJECT rule makes that explicit and independent of IPVS.
//!
//! Sets are written over netlink ([`crate::ipset`], no process): a full sync fills a temporary
//! set and swaps it in, a partial one adds and deletes only the changed entries, all in one
//! batch of messages. Rules are built in the shared typed model ([`iptables_runner::rules`],
//! the iptables backend's) and written with `iptables-restore --noflush` through the shared
//! runner ([`iptables_runner::BlockingRunner`]), declaring only our chains (which flushes and
//! refills them); the jumps from the built-in chains that the family's `iptables-save` lacks
//! are inserted (`-I`) by the same restore. A full sync runs two processes per family; a
//! partial one runs none. Which iptables (legacy or nft) is decided once, as every backend
//! decides it: [`IptablesVariant::Auto`] asks plain `iptables --version`. Cleanup is the same
//! shape: one save per family shows our jumps and chains, one restore deletes them (`-D`, then
//! `-X`). Everything is per family: IPv6 sets end in `6`, and `ip6tables` carries their rules.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use iptables_runner::{
    extract_lines, failing_line, BlockingRunner, CommandFailure, Iptables, ProcessRunner, Variant,
};
use proxy_core::table::Protocol;
use tracing::{debug, trace};

use crate::config::{IptablesVariant, IpvsConfig};
use crate::error::BackendError;
use crate::ipset::{IpsetOp, IpsetOps, NetlinkIpset};
use crate::model::ServiceKey;
use crate::plan::{Desired, Touched};

/// Input lines shown on each side of the line a failed restore blames.
const CONTEXT_LINES: usize = 2;

/// The set entries the last syncs wrote: per virtual server, and the endpoints with a hairpin
/// entry, so a partial sync sends only what really changed.
#[derive(Debug, Default)]
struct Written {
    by_key: BTreeMap<ServiceKey, Vec<Entry>>,
    endpoints: BTreeSet<(IpAddr, Protocol, u16)>,
}

/// The companion sets and rules, with what the last sync wrote.
#[derive(Debug)]
pub struct Companions {
    config: IpvsConfig,
    names: Names,
    runner: Box<dyn BlockingRunner>,
    ipset: Box<dyn IpsetOps>,
    /// What the sets hold, as we wrote them; `None` until a full sync succeeded (and after a
    /// failure, so the next sync is full).
    written: Option<Written>,
    /// The iptables tools, once the variant is decided.
    tools: Option<Iptables>,
    /// `iptables-restore` runs of full syncs that failed, ever (kube-proxy's
    /// `sync_proxy_rules_iptables_restore_failures_total`).
    restore_failures: usize,
}

/// A failed tool as the backend's error, with our input lines around the one a restore blames
/// (kube-proxy's `ExtractLines`).
fn command_error(failure: CommandFailure, input: Option<&str>) -> BackendError {
    let input_context = match (input, failing_line(&failure.stderr)) {
        (Some(input), Some(line)) if line > 0 => extract_lines(input, line, CONTEXT_LINES)
            .lines()
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    BackendError::Command {
        status: failure.exit_text(),
        command: failure.command,
        stderr: failure.stderr,
        input_context,
    }
}

impl Companions {
    /// Companions on this network namespace's kernel: ipsets over netlink, iptables with the
    /// system's tools (the variant decided at the first full sync or cleanup).
    ///
    /// # Errors
    /// [`BackendError::Ipset`] when the kernel has no ipset.
    pub fn new(config: &IpvsConfig) -> Result<Self, BackendError> {
        let ipset = NetlinkIpset::connect()?;
        Ok(Self::with_parts(
            config,
            Box::new(ProcessRunner),
            Box::new(ipset),
        ))
    }

    /// Companions that run the iptables tools through `runner` and write sets through `ipset`
    /// (fakes in tests: `iptables_runner::testing::FakeTools`, `ipset::FakeIpset`).
    pub fn with_parts(
        config: &IpvsConfig,
        runner: Box<dyn BlockingRunner>,
        ipset: Box<dyn IpsetOps>,
    ) -> Self {
        Companions {
            config: config.clone(),
            names: Names::new(&config.prefix),
            runner,
            ipset,
            written: None,
            tools: None,
            restore_failures: 0,
        }
    }

    /// How many `iptables-restore` runs of [`Companions::sync`] have failed so far.
    pub fn restore_failures(&self) -> usize {
        self.restore_failures
    }

    /// Runs one batch of ipset steps, logged in full at trace level.
    fn apply_sets(&self, ops: &[IpsetOp]) -> Result<(), BackendError> {
        if ops.is_empty() {
            return Ok(());
        }
        trace!(
            steps = ops.len(),
            ops = %ops.iter().map(ToString::to_string).collect::<String>(),
            "writing ipsets"
        );
        Ok(self.ipset.apply(ops)?)
    }

    /// The iptables tools of the configured variant, deciding `Auto` once, as every backend
    /// does (`iptables --version`, kube-proxy's way). A failed probe is not remembered: the
    /// next sync asks again.
    fn tools(&mut self) -> Result<Iptables, BackendError> {
        if let Some(tools) = &self.tools {
            return Ok(tools.clone());
        }
        let variant = match self.config.iptables {
            IptablesVariant::Legacy => Variant::Legacy,
            IptablesVariant::Nft => Variant::Nft,
            IptablesVariant::Auto => self
                .runner
                .detect_variant(&[])
                .map_err(|e| command_error(e, None))?,
        };
        debug!(%variant, "iptables variant");
        let tools = Iptables::new(variant);
        self.tools = Some(tools.clone());
        Ok(tools)
    }

    fn save(
        &self,
        tools: &Iptables,
        family: Family,
        table: Option<&str>,
    ) -> Result<String, BackendError> {
        self.runner
            .save(tools, family, table)
            .map_err(|e| command_error(e, None))
    }

    fn restore(&self, tools: &Iptables, family: Family, input: &str) -> Result<(), BackendError> {
        trace!(%family, input, "iptables-restore");
        self.runner
            .restore(tools, family, input)
            .map_err(|e| command_error(e, Some(input)))
    }

    /// Writes the sets and, on a full sync (`touched` is `None`), the rules and their jumps:
    /// a full sync rewrites every set, a partial one only the entries of the touched virtual
    /// servers and endpoints. Returns the number of set entries and rules written.
    ///
    /// # Errors
    /// [`BackendError::Ipset`] for the first set step the kernel refused (naming the set and
    /// entry); [`BackendError::Command`] for a failed iptables tool, with its input around the
    /// failing line. The next sync is then full.
    pub fn sync(
        &mut self,
        desired: &Desired,
        touched: Option<&Touched>,
    ) -> Result<usize, BackendError> {
        match (self.written.take(), touched) {
            (Some(mut written), Some(touched)) => {
                let by_key = &mut written.by_key;
                let (mut before, mut after) = (Entries::new(), Entries::new());
                let put = |sets: &mut Entries, (kind, family, entry): Entry| {
                    sets.entry((kind, family)).or_default().insert(entry);
                };
                for key in &touched.keys {
                    for entry in by_key.remove(key).into_iter().flatten() {
                        put(&mut before, entry);
                    }
                    if let Some(origin) = desired.origins.get(key) {
                        let entries = key_entries(key, origin);
                        for entry in &entries {
                            put(&mut after, entry.clone());
                        }
                        by_key.insert(*key, entries);
                    }
                }
                // A touched endpoint's hairpin entry changes only if it came or went.
                for ep in &touched.endpoints {
                    let wanted = desired.endpoints.contains_key(ep);
                    if wanted && written.endpoints.insert(*ep) {
                        put(&mut after, endpoint_entry(ep));
                    } else if !wanted && written.endpoints.remove(ep) {
                        put(&mut before, endpoint_entry(ep));
                    }
                }
                let ops = plan_sets_diff(&self.names, &before, &after);
                self.apply_sets(&ops)?;
                self.written = Some(written);
                Ok(entries_written(&ops))
            }
            _ => self.sync_full(desired),
        }
    }

    fn sync_full(&mut self, desired: &Desired) -> Result<usize, BackendError> {
        let tools = self.tools()?;
        let entries = plan_entries(desired, &self.config);
        self.apply_sets(&plan_sets_full(&self.names, &entries))?;
        let mut written = entries.values().map(BTreeSet::len).sum::<usize>();
        let hooks = hooks(&self.names);
        for family in Family::ALL {
            // One save per family tells which jumps from the built-in chains exist; the missing
            // ones go into the same restore as our chains, so a sync runs two processes per
            // family (each costs more than the work under emulation: tens of ms).
            let saved = self.save(&tools, family, None)?;
            let missing: Vec<Hook> = saved_hooks(&saved, &hooks)
                .into_iter()
                .zip(&hooks)
                .filter(|(copies, _)| *copies == 0)
                .map(|(_, hook)| hook.clone())
                .collect();
            let tables = plan_rules(&self.names, &self.config, family);
            let input = render_rules(&self.names, &self.config, family, &missing);
            if let Err(e) = self.restore(&tools, family, &input) {
                self.restore_failures += 1;
                return Err(e);
            }
            written += tables.iter().map(|t| t.rule_count()).sum::<usize>() + missing.len();
        }
        self.written = Some(Written {
            by_key: desired
                .origins
                .iter()
                .map(|(key, origin)| (*key, key_entries(key, origin)))
                .collect(),
            endpoints: desired.endpoints.keys().copied().collect(),
        });
        Ok(written)
    }

    /// Removes our jumps, chains and sets (each family), and nothing else: per family, one
    /// save shows what is there and one restore deletes it (none if nothing is ours). Returns
    /// how many objects went.
    ///
    /// # Errors
    /// The first failure that is not "already gone".
    pub fn cleanup(&mut self) -> Result<usize, BackendError> {
        self.written = None;
        let mut removed = self.cleanup_rules()?;
        let destroy: Vec<IpsetOp> = self
            .ipset
            .list_names()?
            .into_iter()
            .filter(|name| self.names.is_owned(name))
            .map(IpsetOp::Destroy)
            .collect();
        self.apply_sets(&destroy)?;
        removed += destroy.len();
        Ok(removed)
    }

    /// The rules part of [`Companions::cleanup`]. Where iptables cannot tell what it holds (no
    /// tools, or a save that fails) nothing of ours can be found, so there is nothing to remove.
    fn cleanup_rules(&mut self) -> Result<usize, BackendError> {
        let tools = match self.tools() {
            Ok(tools) => tools,
            Err(error) => {
                debug!(%error, "no iptables: no companion rules to remove");
                return Ok(0);
            }
        };
        let hooks = hooks(&self.names);
        let mut removed = 0;
        for family in Family::ALL {
            let saved = match self.save(&tools, family, None) {
                Ok(saved) => saved,
                Err(error) => {
                    debug!(%family, %error, "no iptables-save: no companion rules to remove");
                    continue;
                }
            };
            let copies = saved_hooks(&saved, &hooks);
            let chains = saved_chains(&self.names, &saved);
            if chains == 0 && copies.iter().all(|n| *n == 0) {
                continue;
            }
            let delete: Vec<(&Hook, usize)> = hooks.iter().zip(copies).collect();
            self.restore(&tools, family, &render_cleanup(&self.names, &delete))?;
            removed += chains + delete.iter().map(|(_, n)| n).sum::<usize>();
        }
        Ok(removed)
    }
}

mod names;
mod render;
mod rules;

pub use names::{ipset_family, Family, Names, SetKind};
pub use render::{
    endpoint_entry, entries_written, key_entries, plan_entries, plan_sets_diff, plan_sets_full,
    render_sets_full, set_spec, Entries, Entry, MAX_SET_ELEMENTS,
};
pub use rules::{
    hooks, plan_rules, render_cleanup, render_rules, saved_chains, saved_hooks, Hook, MASQ_MARK,
};

#[cfg(test)]
mod tests;
