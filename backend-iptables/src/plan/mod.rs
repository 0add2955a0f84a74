//! The planner: a pure function from a [`ServiceTable`] (and what is already applied) to
//! `iptables-restore` input, one [`Restore`] per address family and table. No I/O, clock or
//! randomness; output is byte-stable (tables iterate in name order, chains in a fixed order).
//!
//! The layout is described in the crate's README; in short, per address family:
//!
//! ```text
//! nat PREROUTING/OUTPUT ─▶ SERVICES ─(flat list, or a tree of DT- chains on dst bits)─▶
//!        ├─ cluster IP ─▶ SVC- (or SVL- for iTP=Local): statistic + DNAT inline, hairpin marks
//!        ├─ external/LB IP ─▶ [FW- source ranges ─▶] EXT- ─▶ SVC-/SVL-
//!        └─ last: addrtype LOCAL ─▶ NODEPORTS ─▶ EXT-
//! nat POSTROUTING ─▶ POSTROUTING: masquerade marked packets
//! filter INPUT/FORWARD/OUTPUT ─▶ FIREWALL, SERVICES, EXT-SERVICES (reject/drop), FORWARD (accept)
//! ```
//!
//! A [`SyncMode::Partial`] plan rewrites only the chains of service ports the [`ChangeSet`] names
//! and the shared chains whose content changed (compared by hash with [`Applied`]), and deletes the
//! chains that are no longer needed; a full plan rewrites everything and deletes every stale chain.

use std::borrow::Cow;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::net::IpAddr;

use iptables_runner::Variant;
use proxy_core::{ChangeSet, ServicePort, ServicePortName, ServiceTable, SyncMode};

use crate::config::{InlineBalancing, IptablesConfig};
use crate::error::ConfigError;
use crate::names::Names;
use crate::rules::{Chain, ChainName, CtState, Family, Match, Rule, Table, TableName, Target};

mod edits;
mod port;
mod shared;

pub use edits::BuiltinEdits;

/// A chain's identity in the kernel: family, table, name.
pub type ChainKey = (Family, TableName, ChainName);

/// What we know about one chain we wrote: a hash of its rules and their number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainState {
    /// Hash of the chain's rules (in-process only; never persisted).
    pub hash: u64,
    /// Number of rules.
    pub rules: usize,
}

impl ChainState {
    fn of(chain: &Chain) -> Self {
        Self::of_rules(&chain.rules)
    }

    fn of_rules(rules: &[Rule]) -> Self {
        let mut hasher = DefaultHasher::new();
        rules.hash(&mut hasher);
        Self {
            hash: hasher.finish(),
            rules: rules.len(),
        }
    }
}

/// What is programmed, as far as we know: every chain we own with its state, and which chains
/// belong to which service port. A partial plan is computed against it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    chains: BTreeMap<ChainKey, ChainState>,
    ports: BTreeMap<ServicePortName, BTreeSet<ChainKey>>,
}

impl Applied {
    /// Nothing applied (first sync, or after a failure that left the state unknown).
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether nothing is known to be applied.
    pub fn is_empty(&self) -> bool {
        self.chains.is_empty()
    }

    /// Number of chains.
    pub fn chain_count(&self) -> usize {
        self.chains.len()
    }

    /// Number of rules in one family's table (kube-proxy's `sync_proxy_rules_iptables_total`).
    pub fn rule_count(&self, family: Family, table: TableName) -> usize {
        self.chains
            .iter()
            .filter(|((f, t, _), _)| *f == family && *t == table)
            .map(|(_, s)| s.rules)
            .sum()
    }

    /// Whether a chain is known.
    pub fn contains(&self, key: &ChainKey) -> bool {
        self.chains.contains_key(key)
    }

    /// The state of chains read back from the kernel (no port ownership: fit for full plans).
    pub fn from_chains<'a>(chains: impl IntoIterator<Item = (ChainKey, &'a [Rule])>) -> Self {
        let chains = chains
            .into_iter()
            .map(|(key, rules)| (key, ChainState::of_rules(rules)))
            .collect();
        Self {
            chains,
            ports: BTreeMap::new(),
        }
    }

    /// Like [`Applied::from_chains`], with `tainted` chains given a state no plan produces.
    pub fn from_chains_tainted<'a>(
        tainted: &BTreeSet<ChainKey>,
        chains: impl IntoIterator<Item = (ChainKey, &'a [Rule])>,
    ) -> Self {
        let mut applied = Self::from_chains(chains);
        for key in tainted {
            applied.chains.insert(
                key.clone(),
                // Not the hash of any rule list we plan (SipHash of a list is never 0 in practice).
                ChainState { hash: 0, rules: 0 },
            );
        }
        applied
    }

    /// Chains present in only one of the two, or with different content, in key order.
    pub fn differences(&self, other: &Applied) -> Vec<ChainKey> {
        let keys: BTreeSet<&ChainKey> = self.chains.keys().chain(other.chains.keys()).collect();
        keys.into_iter()
            .filter(|k| self.chains.get(*k) != other.chains.get(*k))
            .cloned()
            .collect()
    }

    /// Records a plan as applied (call after every restore of the plan succeeded).
    pub fn commit(&mut self, plan: &Plan) {
        if plan.mode == SyncMode::Full {
            self.chains.clear();
            self.ports.clear();
        }
        for key in &plan.delta.deleted {
            self.chains.remove(key);
        }
        for (key, state) in &plan.delta.written {
            self.chains.insert(key.clone(), *state);
        }
        for (name, chains) in &plan.delta.ports {
            match chains {
                Some(chains) => {
                    self.ports.insert(name.clone(), chains.clone());
                }
                None => {
                    self.ports.remove(name);
                }
            }
        }
    }
}

/// Changes a plan makes to [`Applied`] once it succeeds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppliedDelta {
    written: Vec<(ChainKey, ChainState)>,
    deleted: Vec<ChainKey>,
    ports: Vec<(ServicePortName, Option<BTreeSet<ChainKey>>)>,
}

/// One `iptables-restore --noflush` (or `ip6tables-restore`) invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restore {
    /// Which binary.
    pub family: Family,
    /// What to write.
    pub table: Table,
}

impl Restore {
    /// The exact restore input.
    pub fn input(&self) -> String {
        self.table.to_string()
    }
}

/// A plan: the restores to run (possibly none), and what they change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Full or partial, as planned (a partial request is planned full when nothing is applied).
    pub mode: SyncMode,
    /// Restores in order: IPv4 filter, IPv4 nat, IPv6 filter, IPv6 nat; empty ones are left out.
    pub restores: Vec<Restore>,
    delta: AppliedDelta,
}

impl Plan {
    /// Keeps only what the plan writes, deletes and records in the families `keep` accepts: the
    /// dataplane leaves a family with nothing to program alone, and must not record its fixed
    /// chains as applied there.
    pub fn retain_families(&mut self, keep: impl Fn(Family) -> bool) {
        self.restores.retain(|r| keep(r.family));
        self.delta.written.retain(|(k, _)| keep(k.0));
        self.delta.deleted.retain(|k| keep(k.0));
        for set in self.delta.ports.iter_mut().filter_map(|(_, s)| s.as_mut()) {
            set.retain(|k| keep(k.0));
        }
    }

    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.restores.is_empty()
    }

    /// Rules written over all restores.
    pub fn rules_written(&self) -> usize {
        self.restores.iter().map(|r| r.table.rule_count()).sum()
    }

    /// Chains written (declared) over all restores.
    pub fn chains_written(&self) -> usize {
        self.restores.iter().map(|r| r.table.chains.len()).sum()
    }

    /// Chains deleted over all restores.
    pub fn chains_deleted(&self) -> usize {
        self.restores.iter().map(|r| r.table.deleted.len()).sum()
    }

    /// The restore for one family and table, if any.
    pub fn restore(&self, family: Family, table: TableName) -> Option<&Restore> {
        self.restores
            .iter()
            .find(|r| r.family == family && r.table.name == table)
    }

    /// Every restore's input, each under a `# ipv4 filter` header line: the golden-file form.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for r in &self.restores {
            out.push_str(&format!("# {} {}\n", r.family, r.table.name));
            out.push_str(&r.input());
        }
        out
    }
}

/// A bootstrap jump from a built-in chain to ours. Not part of the restore input: `apply` adds
/// these idempotently; the tracer uses them as the built-in chains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    /// The table.
    pub table: TableName,
    /// The built-in chain.
    pub chain: ChainName,
    /// The rule, jumping to one of our chains.
    pub rule: Rule,
}

/// Plans rules for one configuration.
#[derive(Debug, Clone)]
pub struct Planner {
    config: IptablesConfig,
    names: Names,
}

/// What the dispatch and filter chains get from each service port, per family.
#[derive(Default)]
struct Shared {
    /// (destination, rules) for the services dispatch chain, in port order: one jump, or a
    /// port's inline balancing rules (`TreeConfig::inline_balancing`).
    dispatch: Vec<(IpAddr, Vec<Rule>)>,
    /// (protocol, node port, rule) for the node-ports chain.
    node_ports: Vec<(proxy_core::Protocol, u16, Rule)>,
    filter_services: Vec<Rule>,
    filter_external: Vec<Rule>,
    filter_firewall: Vec<Rule>,
}

impl Planner {
    /// A planner for `config`.
    ///
    /// # Errors
    /// [`ConfigError`] if the configuration is invalid.
    pub fn new(config: IptablesConfig) -> Result<Self, ConfigError> {
        let names = config.validate()?;
        Ok(Self { config, names })
    }

    /// The configuration.
    pub fn config(&self) -> &IptablesConfig {
        &self.config
    }

    /// This planner for `variant`: resolves [`InlineBalancing::Nft`] to inline balancing with
    /// iptables-nft and to a chain per port with iptables-legacy (the layout each restores
    /// faster; README "Inline balancing"). Other settings are kept as they are.
    #[must_use]
    pub fn for_variant(&self, variant: Variant) -> Self {
        let mut planner = self.clone();
        if planner.config.tree.inline_balancing == InlineBalancing::Nft {
            planner.config.tree.inline_balancing = match variant {
                Variant::Nft => InlineBalancing::Always,
                Variant::Legacy => InlineBalancing::Never,
            };
        }
        planner
    }

    /// The chain names.
    pub fn names(&self) -> &Names {
        &self.names
    }

    /// The bootstrap jumps, in the order they must appear in each built-in chain (kube-proxy's
    /// `iptablesJumpChains`).
    pub fn hooks(&self) -> Vec<Hook> {
        let n = &self.names;
        let new = || Match::Conntrack(vec![CtState::New]);
        let hook = |table, chain: &str, rule: Rule| Hook {
            table,
            chain: ChainName::new(chain),
            rule,
        };
        let jump = |c: ChainName| Rule::new(Target::Jump(c));
        vec![
            hook(
                TableName::Nat,
                "PREROUTING",
                jump(n.services()).comment("service portals"),
            ),
            hook(
                TableName::Nat,
                "OUTPUT",
                jump(n.services()).comment("service portals"),
            ),
            hook(
                TableName::Nat,
                "POSTROUTING",
                jump(n.postrouting()).comment("service postrouting rules"),
            ),
            hook(
                TableName::Filter,
                "INPUT",
                jump(n.firewall())
                    .with(new())
                    .comment("load balancer firewall"),
            ),
            hook(
                TableName::Filter,
                "INPUT",
                jump(n.external_services())
                    .with(new())
                    .comment("externally-visible service portals"),
            ),
            hook(
                TableName::Filter,
                "FORWARD",
                jump(n.firewall())
                    .with(new())
                    .comment("load balancer firewall"),
            ),
            hook(
                TableName::Filter,
                "FORWARD",
                jump(n.forward()).comment("forwarding rules"),
            ),
            hook(
                TableName::Filter,
                "FORWARD",
                jump(n.services()).with(new()).comment("service portals"),
            ),
            hook(
                TableName::Filter,
                "FORWARD",
                jump(n.external_services())
                    .with(new())
                    .comment("externally-visible service portals"),
            ),
            hook(
                TableName::Filter,
                "OUTPUT",
                jump(n.firewall())
                    .with(new())
                    .comment("load balancer firewall"),
            ),
            hook(
                TableName::Filter,
                "OUTPUT",
                jump(n.services()).with(new()).comment("service portals"),
            ),
        ]
    }

    /// A full plan of `table` from nothing: what a first sync writes (and what golden files show).
    pub fn plan_full(&self, table: &ServiceTable) -> Plan {
        self.plan(
            table,
            &ChangeSet::default(),
            &Applied::new(),
            SyncMode::Full,
        )
    }

    /// Plans the restores that take the kernel from `applied` to `table`.
    ///
    /// `changes` must name every service port that differs between the table `applied` was made
    /// from and `table`; it is ignored for a full plan. A partial request is planned full when
    /// nothing is applied or the node changed.
    pub fn plan(
        &self,
        table: &ServiceTable,
        changes: &ChangeSet,
        applied: &Applied,
        mode: SyncMode,
    ) -> Plan {
        let full = mode == SyncMode::Full || applied.is_empty() || changes.node.is_some();
        let touched: Option<BTreeSet<&ServicePortName>> =
            (!full).then(|| changes.touched().collect());
        let mut writer = ChainWriter {
            full,
            applied,
            delta: AppliedDelta::default(),
        };
        let mut restores = Vec::new();
        let mut port_chains: BTreeMap<ServicePortName, BTreeSet<ChainKey>> = BTreeMap::new();
        for family in Family::ALL {
            let rendered = self.render_family(table, family, touched.as_ref());
            let mut filter = Table::new(TableName::Filter);
            let mut nat = Table::new(TableName::Nat);
            // Filter: all chains are shared.
            let mut desired_shared: BTreeSet<ChainKey> = BTreeSet::new();
            for (tname, chains, out) in [
                (TableName::Filter, rendered.filter_shared, &mut filter),
                (TableName::Nat, rendered.nat_shared, &mut nat),
            ] {
                for chain in chains {
                    desired_shared.insert(writer.write(family, tname, chain, out));
                }
            }
            // Port chains (nat only).
            for (name, chains) in rendered.per_port {
                let set = port_chains.entry(name.clone()).or_default();
                for chain in chains {
                    set.insert(writer.write(family, TableName::Nat, chain, &mut nat));
                }
            }
            let stale = if full {
                stale_after_full(family, applied, &desired_shared, &port_chains)
            } else {
                let touched = touched.iter().flatten().copied();
                stale_after_partial(family, applied, &desired_shared, &port_chains, touched)
            };
            for key in stale {
                let out = match key.1 {
                    TableName::Filter => &mut filter,
                    TableName::Nat => &mut nat,
                };
                out.deleted.push(key.2.clone());
                writer.delta.deleted.push(key);
            }
            for t in [filter, nat] {
                if !t.is_empty() {
                    restores.push(Restore { family, table: t });
                }
            }
        }
        let mut delta = writer.delta;
        delta.ports = port_ownership(touched.as_ref(), port_chains);
        Plan {
            mode: if full {
                SyncMode::Full
            } else {
                SyncMode::Partial
            },
            restores,
            delta,
        }
    }

    /// One family's chains: the shared ones (nat, filter) from every port, and the own chains
    /// of the ports in `touched` (of every port when `None`), without comments if the config
    /// says so.
    fn render_family<'t>(
        &self,
        table: &'t ServiceTable,
        family: Family,
        touched: Option<&BTreeSet<&ServicePortName>>,
    ) -> FamilyChains<'t> {
        let mut shared = Shared::default();
        let mut per_port: BTreeMap<&ServicePortName, Vec<Chain>> = BTreeMap::new();
        for port in table.iter() {
            let Some(view) = family_view(port, family) else {
                continue;
            };
            let render = touched.is_none_or(|t| t.contains(&port.name));
            let chains = self.plan_port(&view, family, &mut shared, render);
            if render {
                per_port.insert(&port.name, chains);
            }
        }
        let (mut nat_shared, mut filter_shared) = self.plan_shared(family, shared);
        if !self.config.comments {
            nat_shared
                .iter_mut()
                .chain(filter_shared.iter_mut())
                .chain(per_port.values_mut().flatten())
                .for_each(strip_comments);
        }
        FamilyChains {
            nat_shared,
            filter_shared,
            per_port,
        }
    }
}

/// One family's rendered chains ([`Planner::render_family`]).
struct FamilyChains<'t> {
    nat_shared: Vec<Chain>,
    filter_shared: Vec<Chain>,
    /// Each rendered port's own chains (nat), by port.
    per_port: BTreeMap<&'t ServicePortName, Vec<Chain>>,
}

/// Puts chains into a plan's tables: every chain in a full plan, else only those whose state
/// differs from what is applied; records what it wrote.
struct ChainWriter<'a> {
    full: bool,
    applied: &'a Applied,
    delta: AppliedDelta,
}

impl ChainWriter<'_> {
    /// Writes `chain` into `out` unless it is applied as it is; returns its key either way.
    fn write(
        &mut self,
        family: Family,
        table: TableName,
        chain: Chain,
        out: &mut Table,
    ) -> ChainKey {
        let key = (family, table, chain.name.clone());
        let state = ChainState::of(&chain);
        if self.full || self.applied.chains.get(&key) != Some(&state) {
            self.delta.written.push((key.clone(), state));
            out.chains.push(chain);
        }
        key
    }
}

/// After a full plan: every applied chain of `family` that is neither a desired shared chain
/// nor a chain of a port.
fn stale_after_full(
    family: Family,
    applied: &Applied,
    desired_shared: &BTreeSet<ChainKey>,
    port_chains: &BTreeMap<ServicePortName, BTreeSet<ChainKey>>,
) -> Vec<ChainKey> {
    applied
        .chains
        .keys()
        .filter(|k| k.0 == family)
        .filter(|k| {
            !desired_shared.contains(*k) && !port_chains.values().any(|set| set.contains(*k))
        })
        .cloned()
        .collect()
}

/// After a partial plan: the applied shared chains of `family` no longer desired, and the
/// applied chains of each touched port that it no longer has.
fn stale_after_partial<'n>(
    family: Family,
    applied: &Applied,
    desired_shared: &BTreeSet<ChainKey>,
    port_chains: &BTreeMap<ServicePortName, BTreeSet<ChainKey>>,
    touched: impl Iterator<Item = &'n ServicePortName>,
) -> Vec<ChainKey> {
    let owned_by_ports: BTreeSet<&ChainKey> = applied.ports.values().flatten().collect();
    let mut stale: Vec<ChainKey> = applied
        .chains
        .keys()
        .filter(|k| k.0 == family && !owned_by_ports.contains(k))
        .filter(|k| !desired_shared.contains(*k))
        .cloned()
        .collect();
    for name in touched {
        let old = applied.ports.get(name).into_iter().flatten();
        let new = port_chains.get(name);
        stale.extend(
            old.filter(|k| k.0 == family)
                .filter(|k| new.is_none_or(|set| !set.contains(*k)))
                .cloned(),
        );
    }
    stale
}

/// Port ownership after a plan: touched (or, when `None`, all) ports get their new chain set;
/// removed ports none.
fn port_ownership(
    touched: Option<&BTreeSet<&ServicePortName>>,
    mut port_chains: BTreeMap<ServicePortName, BTreeSet<ChainKey>>,
) -> Vec<(ServicePortName, Option<BTreeSet<ChainKey>>)> {
    match touched {
        None => port_chains.into_iter().map(|(n, s)| (n, Some(s))).collect(),
        Some(touched) => touched
            .iter()
            .map(|name| ((*name).clone(), port_chains.remove(*name)))
            .collect(),
    }
}

/// Drops `-m comment` from a chain's rules (`IptablesConfig::comments = false`).
fn strip_comments(chain: &mut Chain) {
    for rule in &mut chain.rules {
        rule.matches.retain(|m| !matches!(m, Match::Comment(_)));
    }
}

/// The part of `port` that lives in `family`: its addresses, ranges and endpoints of that family.
/// `None` when the port has nothing there. Borrowed when the port is single-family.
pub(crate) fn family_view(port: &ServicePort, family: Family) -> Option<Cow<'_, ServicePort>> {
    let in_family = |ip: &IpAddr| family.contains(*ip);
    let has_ips = port.service_ips().any(|ip| in_family(&ip));
    let has_any_ips = port.service_ips().next().is_some();
    let present = has_ips
        || (!has_any_ips
            && port.node_port.is_some()
            && (port.endpoints.iter().any(|e| in_family(&e.addr))
                || (port.endpoints.is_empty() && family == Family::V4)));
    if !present {
        return None;
    }
    let pure = port.service_ips().all(|ip| in_family(&ip))
        && port.endpoints.iter().all(|e| in_family(&e.addr))
        && port
            .load_balancer_source_ranges
            .iter()
            .all(|r| in_family(&r.addr()));
    if pure {
        return Some(Cow::Borrowed(port));
    }
    let mut view = port.clone();
    view.cluster_ips.retain(in_family);
    view.external_ips.retain(in_family);
    view.load_balancer_ips.retain(in_family);
    view.load_balancer_source_ranges
        .retain(|r| in_family(&r.addr()));
    view.endpoints.retain(|e| in_family(&e.addr));
    Some(Cow::Owned(view))
}
