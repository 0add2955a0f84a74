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
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use proxy_core::select::{select_endpoints, Target as SelTarget};
use proxy_core::table::{Endpoint, SessionAffinity, TrafficPolicy};
use proxy_core::{ChangeSet, Protocol, ServicePort, ServicePortName, ServiceTable, SyncMode};

use crate::config::{Config, DispatchLayout};
use crate::error::ConfigError;
use crate::names::Names;
use crate::rules::{
    AddrTypeDir, Chain, ChainName, CtState, Family, Match, Probability, Recent, RejectWith, Rule,
    Table, TableName, Target,
};

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
    /// A plan that only deletes chains (cleanup); it changes no recorded state.
    pub(crate) fn deletions(restores: Vec<Restore>) -> Self {
        Self {
            mode: SyncMode::Full,
            restores,
            delta: AppliedDelta::default(),
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
    config: Config,
    names: Names,
}

/// What the dispatch and filter chains get from each service port, per family.
#[derive(Default)]
struct Shared {
    /// (destination, rule) for the services dispatch chain, in port order.
    dispatch: Vec<(IpAddr, Rule)>,
    node_ports: Vec<Rule>,
    filter_services: Vec<Rule>,
    filter_external: Vec<Rule>,
    filter_firewall: Vec<Rule>,
}

impl Planner {
    /// A planner for `config`.
    ///
    /// # Errors
    /// [`ConfigError`] if the configuration is invalid.
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        let names = config.validate()?;
        Ok(Self { config, names })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
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
        let mut restores = Vec::new();
        let mut delta = AppliedDelta::default();
        let mut port_chains: BTreeMap<ServicePortName, BTreeSet<ChainKey>> = BTreeMap::new();

        for family in Family::ALL {
            let mut shared = Shared::default();
            let mut per_port: BTreeMap<&ServicePortName, Vec<Chain>> = BTreeMap::new();
            for port in table.iter() {
                let Some(view) = family_view(port, family) else {
                    continue;
                };
                let render = touched.as_ref().is_none_or(|t| t.contains(&port.name));
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
                    .for_each(strip_comments);
            }

            // Filter: all chains are shared.
            let mut filter = Table::new(TableName::Filter);
            let mut nat = Table::new(TableName::Nat);
            let mut desired_shared: BTreeSet<ChainKey> = BTreeSet::new();
            for (tname, chains, out) in [
                (TableName::Filter, filter_shared, &mut filter),
                (TableName::Nat, nat_shared, &mut nat),
            ] {
                for chain in chains {
                    let key = (family, tname, chain.name.clone());
                    let state = ChainState::of(&chain);
                    desired_shared.insert(key.clone());
                    if full || applied.chains.get(&key) != Some(&state) {
                        delta.written.push((key, state));
                        out.chains.push(chain);
                    }
                }
            }
            // Port chains (nat only).
            if !self.config.comments {
                per_port.values_mut().flatten().for_each(strip_comments);
            }
            for (name, chains) in per_port {
                let set = port_chains.entry(name.clone()).or_default();
                for chain in chains {
                    let key = (family, TableName::Nat, chain.name.clone());
                    let state = ChainState::of(&chain);
                    set.insert(key.clone());
                    if full || applied.chains.get(&key) != Some(&state) {
                        delta.written.push((key, state));
                        nat.chains.push(chain);
                    }
                }
            }
            // Deletions.
            let stale: Vec<ChainKey> = if full {
                applied
                    .chains
                    .keys()
                    .filter(|k| k.0 == family)
                    .filter(|k| {
                        !desired_shared.contains(*k)
                            && !port_chains.values().any(|set| set.contains(*k))
                    })
                    .cloned()
                    .collect()
            } else {
                let owned_by_ports: BTreeSet<&ChainKey> =
                    applied.ports.values().flatten().collect();
                let mut stale: Vec<ChainKey> = applied
                    .chains
                    .keys()
                    .filter(|k| k.0 == family && !owned_by_ports.contains(k))
                    .filter(|k| !desired_shared.contains(*k))
                    .cloned()
                    .collect();
                for name in touched.iter().flatten() {
                    let old = applied.ports.get(*name).into_iter().flatten();
                    let new = port_chains.get(*name);
                    stale.extend(
                        old.filter(|k| k.0 == family)
                            .filter(|k| new.is_none_or(|set| !set.contains(*k)))
                            .cloned(),
                    );
                }
                stale
            };
            for key in stale {
                let out = match key.1 {
                    TableName::Filter => &mut filter,
                    TableName::Nat => &mut nat,
                };
                out.deleted.push(key.2.clone());
                delta.deleted.push(key);
            }
            for t in [filter, nat] {
                if !t.is_empty() {
                    restores.push(Restore { family, table: t });
                }
            }
        }
        // Port ownership: touched (or all) ports get their new chain set; removed ports none.
        match &touched {
            None => {
                delta.ports = port_chains.into_iter().map(|(n, s)| (n, Some(s))).collect();
            }
            Some(touched) => {
                for name in touched {
                    let set = port_chains.remove(*name);
                    delta.ports.push(((*name).clone(), set));
                }
            }
        }
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

    /// The fixed and dispatch chains of one family: (nat, filter).
    fn plan_shared(&self, family: Family, shared: Shared) -> (Vec<Chain>, Vec<Chain>) {
        let n = &self.names;
        let cfg = &self.config;
        let masq = cfg.masquerade_mark();
        let both = masq | cfg.select_mark();

        let mut services = Chain::new(n.services());
        let mut tree_chains = Vec::new();
        match cfg.dispatch {
            DispatchLayout::Flat => {
                services
                    .rules
                    .extend(shared.dispatch.into_iter().map(|(_, r)| r));
            }
            DispatchLayout::Tree => {
                let mut entries: Vec<(u128, Rule)> = shared
                    .dispatch
                    .into_iter()
                    .map(|(a, r)| (addr_bits(a), r))
                    .collect();
                // Stable: rules of one address keep table order.
                entries.sort_by_key(|(a, _)| *a);
                services.rules = self.tree_node(family, entries, Target::Jump, &mut tree_chains);
            }
        }
        let loopback: IpNet = match family {
            Family::V4 => "127.0.0.0/8",
            Family::V6 => "::1/128",
        }
        .parse()
        .expect("constant network");
        services.push(
            Rule::new(Target::Jump(n.node_ports()))
                .destination_net(loopback, true)
                .comment("service nodeports; NOTE: this must be the last rule in this chain")
                .with(Match::AddrTypeLocal(AddrTypeDir::Dst)),
        );
        let mut node_ports = Chain::new(n.node_ports());
        node_ports.rules = shared.node_ports;
        let mut mark_masq = Chain::new(n.mark_masq());
        mark_masq.push(Rule::new(Target::Mark {
            value: masq,
            mask: masq,
        }));
        let mut post = Chain::new(n.postrouting());
        post.push(Rule::new(Target::Return).with(Match::Mark {
            value: masq,
            mask: masq,
            negated: true,
        }));
        // Clears both bits: the select bit is only ever set together with the masquerade bit.
        post.push(Rule::new(Target::Mark {
            value: 0,
            mask: both,
        }));
        post.push(
            Rule::new(Target::Masquerade {
                random_fully: cfg.random_fully,
            })
            .comment("service traffic requiring SNAT"),
        );
        tree_chains.sort_by(|a, b| a.name.cmp(&b.name));
        let mut nat = vec![services, node_ports, mark_masq, post];
        nat.extend(tree_chains);

        let mut f_services = Chain::new(n.services());
        f_services.rules = shared.filter_services;
        let mut f_external = Chain::new(n.external_services());
        f_external.rules = shared.filter_external;
        let mut f_firewall = Chain::new(n.firewall());
        f_firewall.rules = shared.filter_firewall;
        let mut f_forward = Chain::new(n.forward());
        if cfg.drop_invalid {
            f_forward.push(
                Rule::new(Target::Drop)
                    .comment("drop invalid packets")
                    .with(Match::Conntrack(vec![CtState::Invalid])),
            );
        }
        f_forward.push(
            Rule::new(Target::Accept)
                .comment("forwarding rules")
                .with(Match::Mark {
                    value: masq,
                    mask: masq,
                    negated: false,
                }),
        );
        f_forward.push(
            Rule::new(Target::Accept)
                .comment("forwarding conntrack rule")
                .with(Match::Conntrack(vec![
                    CtState::Related,
                    CtState::Established,
                ])),
        );
        (nat, vec![f_services, f_external, f_forward, f_firewall])
    }

    /// One node of the tree dispatch: returns the node's rules, pushing child chains.
    ///
    /// Entries are sorted by address. A node with few rules (or one address)
    /// keeps them inline; otherwise entries are grouped by the `stride_bits` bits after their
    /// common prefix, each group becoming a `-d group/len -g child` rule (or its single rule
    /// inline). Groups are disjoint networks, so at most one child can match.
    fn tree_node(
        &self,
        family: Family,
        entries: Vec<(u128, Rule)>,
        link: fn(ChainName) -> Target,
        chains: &mut Vec<Chain>,
    ) -> Vec<Rule> {
        let width = u32::from(family.bits());
        let (first, last) = match (entries.first(), entries.last()) {
            (Some(f), Some(l)) => (f.0, l.0),
            _ => return Vec::new(),
        };
        if entries.len() <= self.config.tree.leaf_rules.max(1) || first == last {
            return entries.into_iter().map(|(_, r)| r).collect();
        }
        // Common prefix length of the whole (sorted) set = that of its extremes.
        let common = ((first ^ last) << (128 - width)).leading_zeros().min(width);
        let stride = u32::from(self.config.tree.stride_bits.clamp(1, 8));
        // The fewest bits (up to `stride`) that make every group a leaf; else `stride`.
        let leaf = self.config.tree.leaf_rules.max(1);
        let split = (1..=stride)
            .map(|bits| (common + bits).min(width))
            .find(|&split| max_group(&entries, width - split) <= leaf)
            .unwrap_or((common + stride).min(width));
        let shift = width - split;
        let mut rules = Vec::new();
        let mut group: Vec<(u128, Rule)> = Vec::new();
        let flush = |group: Vec<(u128, Rule)>, rules: &mut Vec<Rule>, chains: &mut Vec<Chain>| {
            let Some(&(addr, _)) = group.first() else {
                return;
            };
            if group.len() == 1 {
                rules.extend(group.into_iter().map(|(_, r)| r));
                return;
            }
            let child_net = IpNet::new(from_bits(family, addr), split as u8)
                .expect("prefix within family width")
                .trunc();
            let name = self.names.dispatch_node(family, child_net);
            let mut child = Chain::new(name.clone());
            child.rules = self.tree_node(family, group, Target::Goto, chains);
            chains.push(child);
            rules.push(Rule::new(link(name)).destination_net(child_net, false));
        };
        for entry in entries {
            let same = group
                .first()
                .is_some_and(|(a, _)| (a >> shift) == (entry.0 >> shift));
            if !same {
                flush(std::mem::take(&mut group), &mut rules, chains);
            }
            group.push(entry);
        }
        flush(group, &mut rules, chains);
        rules
    }

    /// Plans one service port in one family: pushes its dispatch and filter rules into `shared`
    /// and, when `render`, returns its own chains.
    fn plan_port(
        &self,
        port: &ServicePort,
        family: Family,
        shared: &mut Shared,
        render: bool,
    ) -> Vec<Chain> {
        let n = &self.names;
        let name = &port.name;
        let proto = port.protocol;
        let selection = select_endpoints(port);
        let cluster = usable(&selection.cluster);
        let local = usable(&selection.local);

        let svc = (!cluster.is_empty()).then(|| n.service_cluster(name, proto));
        let svl = (!local.is_empty()).then(|| n.service_local(name, proto));
        let policy_chain = |policy| match policy {
            TrafficPolicy::Cluster => svc.clone(),
            TrafficPolicy::Local => svl.clone(),
        };
        let internal_chain = policy_chain(port.internal_traffic_policy);
        let external_chain = policy_chain(port.external_traffic_policy);
        let has_external = port.has_external_addresses();
        let ext = (selection.has_any_endpoints && has_external).then(|| n.external(name, proto));
        let ranges = &port.load_balancer_source_ranges;
        let fw = (ext.is_some() && !ranges.is_empty() && !port.load_balancer_ips.is_empty())
            .then(|| n.firewall_lb(name, proto));

        let filter_rule = |target: SelTarget<'_, '_>| -> Option<(Target, &'static str)> {
            match target {
                SelTarget::Endpoints(_) => None,
                SelTarget::Reject => Some((
                    Target::Reject(reject_with(family, proto)),
                    "has no endpoints",
                )),
                SelTarget::Drop => Some((Target::Drop, "has no local endpoints")),
            }
        };

        // Dispatch: cluster IPs.
        for &ip in &port.cluster_ips {
            match (&internal_chain, filter_rule(selection.internal())) {
                (Some(chain), _) => shared.dispatch.push((
                    ip,
                    Rule::new(Target::Jump(chain.clone()))
                        .destination(ip)
                        .protocol(proto)
                        .comment(format!("{name} cluster IP"))
                        .dport(proto, port.port),
                )),
                (None, Some((target, why))) => shared.filter_services.push(
                    Rule::new(target)
                        .destination(ip)
                        .protocol(proto)
                        .comment(format!("{name} {why}"))
                        .dport(proto, port.port),
                ),
                // Endpoints selected but filtered out (all weight 0 is handled in `usable`).
                (None, None) => {}
            }
        }
        // External destinations.
        let external_filter = filter_rule(selection.external());
        let external_ips = port
            .external_ips
            .iter()
            .map(|ip| (*ip, "external IP", false))
            .chain(
                port.load_balancer_ips
                    .iter()
                    .map(|ip| (*ip, "loadbalancer IP", true)),
            );
        for (ip, kind, is_lb) in external_ips {
            if let Some(ext) = &ext {
                let to = match (&fw, is_lb) {
                    (Some(fw), true) => fw.clone(),
                    _ => ext.clone(),
                };
                shared.dispatch.push((
                    ip,
                    Rule::new(Target::Jump(to))
                        .destination(ip)
                        .protocol(proto)
                        .comment(format!("{name} {kind}"))
                        .dport(proto, port.port),
                ));
            }
            if let Some((target, why)) = &external_filter {
                shared.filter_external.push(
                    Rule::new(target.clone())
                        .destination(ip)
                        .protocol(proto)
                        .comment(format!("{name} {why}"))
                        .dport(proto, port.port),
                );
            }
        }
        if let Some(node_port) = port.node_port {
            if let Some(ext) = &ext {
                shared.node_ports.push(
                    Rule::new(Target::Jump(ext.clone()))
                        .protocol(proto)
                        .comment(name.to_string())
                        .dport(proto, node_port),
                );
            }
            if let Some((target, why)) = &external_filter {
                shared.filter_external.push(
                    Rule::new(target.clone())
                        .protocol(proto)
                        .comment(format!("{name} {why}"))
                        .with(Match::AddrTypeLocal(AddrTypeDir::Dst))
                        .dport(proto, node_port),
                );
            }
        }
        if let Some(fw) = &fw {
            for &ip in &port.load_balancer_ips {
                shared.filter_firewall.push(
                    Rule::new(Target::Drop)
                        .destination(ip)
                        .protocol(proto)
                        .comment(format!("{name} traffic not accepted by {fw}"))
                        .dport(proto, port.port),
                );
            }
        }

        if !render {
            return Vec::new();
        }
        let mut chains = Vec::new();
        let affinity = match port.session_affinity {
            SessionAffinity::None => None,
            SessionAffinity::ClientIp { timeout } => {
                Some(u32::try_from(timeout.as_secs()).unwrap_or(u32::MAX))
            }
        };
        let internal_is = |chain: &Option<ChainName>| chain.is_some() && *chain == internal_chain;
        if let Some(svc) = &svc {
            chains.push(self.balance_chain(
                port,
                family,
                svc,
                &cluster,
                internal_is(&Some(svc.clone())),
                affinity,
            ));
        }
        if let Some(svl) = &svl {
            chains.push(self.balance_chain(
                port,
                family,
                svl,
                &local,
                internal_is(&Some(svl.clone())),
                affinity,
            ));
        }
        if let Some(ext) = &ext {
            let mut chain = Chain::new(ext.clone());
            let masq = Target::Jump(n.mark_masq());
            match port.external_traffic_policy {
                TrafficPolicy::Cluster => {
                    chain.push(Rule::new(masq).comment(format!(
                        "masquerade traffic for {name} external destinations"
                    )));
                }
                TrafficPolicy::Local => {
                    if let (Some(cidr), Some(svc)) = (self.config.cluster_cidr(family), &svc) {
                        chain.push(
                            Rule::new(Target::Jump(svc.clone()))
                                .source_net(cidr, false)
                                .comment(format!("pod traffic for {name} external destinations")),
                        );
                    }
                    chain.push(
                        Rule::new(masq)
                            .comment(format!(
                                "masquerade LOCAL traffic for {name} external destinations"
                            ))
                            .with(Match::AddrTypeLocal(AddrTypeDir::Src)),
                    );
                    if let Some(svc) = &svc {
                        chain.push(
                            Rule::new(Target::Jump(svc.clone()))
                                .comment(format!(
                                    "route LOCAL traffic for {name} external destinations"
                                ))
                                .with(Match::AddrTypeLocal(AddrTypeDir::Src)),
                        );
                    }
                }
            }
            if let Some(to) = &external_chain {
                chain.push(Rule::new(Target::Jump(to.clone())));
            }
            chains.push(chain);
        }
        if let (Some(fw), Some(ext)) = (&fw, &ext) {
            let mut chain = Chain::new(fw.clone());
            for range in ranges.iter().filter(|r| family.contains(r.addr())) {
                chain.push(
                    Rule::new(Target::Jump(ext.clone()))
                        .source_net(*range, false)
                        .comment(format!("{name} loadbalancer IP")),
                );
            }
            chains.push(chain);
        }
        if affinity.is_some() {
            let mut seen = BTreeSet::new();
            for ep in cluster.iter().chain(&local) {
                if !seen.insert(ep.key()) {
                    continue;
                }
                let sep = n.endpoint(name, proto, &ep.key());
                let mut chain = Chain::new(sep.clone());
                chain.push(
                    Rule::new(Target::Jump(n.mark_masq()))
                        .source(ep.addr)
                        .comment(name.to_string()),
                );
                chain.push(
                    Rule::new(Target::Dnat(SocketAddr::new(ep.addr, ep.port)))
                        .protocol(proto)
                        .comment(name.to_string())
                        .with(Match::Recent(Recent::Set {
                            name: sep.to_string(),
                            family,
                        })),
                );
                chains.push(chain);
            }
        }
        chains
    }

    /// A service port's balancing chain (SVC- or SVL-) over `endpoints` (never empty).
    ///
    /// Without affinity each endpoint gets, inline (see README "Hairpin"):
    /// 1. `! -s ep -m statistic p -j DNAT ep` (the common case: one rule, one draw);
    /// 2. `-s ep -m statistic p -j MARK masq|select` (the endpoint calling itself: same draw);
    /// 3. `-s ep -m mark select -j DNAT ep` (finish the hairpin pick, masqueraded).
    ///
    /// The last endpoint needs no draw: `! -s ep -j DNAT`, `-j MARK-MASQ`, `-j DNAT`.
    ///
    /// Only endpoints on this node can send hairpin traffic through this node's rules (a remote
    /// pod's connections are NATed by its own node), so rules 2 and 3 (and the `! -s` of rule 1)
    /// are written for local endpoints only, unless `hairpin_all_endpoints` is set.
    fn balance_chain(
        &self,
        port: &ServicePort,
        family: Family,
        chain_name: &ChainName,
        endpoints: &[&Endpoint],
        is_internal_chain: bool,
        affinity: Option<u32>,
    ) -> Chain {
        let n = &self.names;
        let name = &port.name;
        let proto = port.protocol;
        let mut chain = Chain::new(chain_name.clone());
        if is_internal_chain {
            for &ip in &port.cluster_ips {
                let rule = Rule::new(Target::Jump(n.mark_masq()));
                let rule = if self.config.masquerade_all {
                    rule
                } else if let Some(cidr) = self.config.cluster_cidr(family) {
                    rule.source_net(cidr, true)
                } else {
                    continue;
                };
                chain.push(
                    rule.destination(ip)
                        .protocol(proto)
                        .comment(format!("{name} cluster IP"))
                        .dport(proto, port.port),
                );
            }
        }
        if affinity.is_some() {
            for ep in endpoints {
                let sep = n.endpoint(name, proto, &ep.key());
                chain.push(
                    Rule::new(Target::Jump(sep.clone()))
                        .comment(format!("{name} -> {}", ep.key()))
                        .with(Match::Recent(Recent::Check {
                            name: sep.to_string(),
                            seconds: affinity.unwrap_or_default(),
                            family,
                        })),
                );
            }
        }
        let total: u64 = endpoints.iter().map(|e| u64::from(weight(e))).sum();
        let mut remaining = total;
        let masq = self.config.masquerade_mark();
        let select = self.config.select_mark();
        for (i, ep) in endpoints.iter().enumerate() {
            let is_last = i + 1 == endpoints.len();
            let w = u64::from(weight(ep));
            let stat = (!is_last).then(|| Match::Statistic(Probability::ratio(w, remaining)));
            remaining -= w;
            let to = SocketAddr::new(ep.addr, ep.port);
            let comment = format!("{name} -> {}", ep.key());
            if affinity.is_some() {
                let mut rule =
                    Rule::new(Target::Jump(n.endpoint(name, proto, &ep.key()))).comment(&comment);
                rule.matches.extend(stat);
                chain.push(rule);
                continue;
            }
            let needs_hairpin = ep.is_local || self.config.hairpin_all_endpoints;
            let mut direct = Rule::new(Target::Dnat(to))
                .protocol(proto)
                .comment(&comment);
            if needs_hairpin {
                direct = direct.source_net(IpNet::from(ep.addr), true);
            }
            direct.matches.extend(stat.clone());
            chain.push(direct);
            if !needs_hairpin {
                continue;
            }
            match stat {
                Some(stat) => {
                    chain.push(
                        Rule::new(Target::Mark {
                            value: masq | select,
                            mask: masq | select,
                        })
                        .source(ep.addr)
                        .with(stat),
                    );
                    chain.push(
                        Rule::new(Target::Dnat(to))
                            .source(ep.addr)
                            .protocol(proto)
                            .with(Match::Mark {
                                value: select,
                                mask: select,
                                negated: false,
                            }),
                    );
                }
                None => {
                    // Only the endpoint itself gets here: the rule above took everyone else.
                    chain.push(Rule::new(Target::Jump(n.mark_masq())));
                    chain.push(Rule::new(Target::Dnat(to)).protocol(proto));
                }
            }
        }
        chain
    }
}

/// Drops `-m comment` from a chain's rules (`Config::comments = false`).
fn strip_comments(chain: &mut Chain) {
    for rule in &mut chain.rules {
        rule.matches.retain(|m| !matches!(m, Match::Comment(_)));
    }
}

/// An endpoint's weight; weight 0 only when every endpoint has weight 0 (then all count as 1).
fn weight(ep: &Endpoint) -> u32 {
    ep.weight.max(1)
}

/// Endpoints that take new connections: weight 0 ones are left out unless all have weight 0.
fn usable<'a>(endpoints: &[&'a Endpoint]) -> Vec<&'a Endpoint> {
    if endpoints.iter().any(|e| e.weight > 0) {
        endpoints.iter().copied().filter(|e| e.weight > 0).collect()
    } else {
        endpoints.to_vec()
    }
}

fn reject_with(family: Family, protocol: Protocol) -> RejectWith {
    match (protocol, family) {
        (Protocol::Tcp, _) => RejectWith::TcpReset,
        (_, Family::V4) => RejectWith::IcmpPortUnreachable,
        (_, Family::V6) => RejectWith::Icmp6PortUnreachable,
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

/// The largest run of entries sharing `addr >> shift` (entries are sorted by address).
fn max_group(entries: &[(u128, Rule)], shift: u32) -> usize {
    let mut best = 0;
    let mut run = 0;
    let mut prev = None;
    for (addr, _) in entries {
        let key = addr >> shift;
        if prev == Some(key) {
            run += 1;
        } else {
            run = 1;
            prev = Some(key);
        }
        best = best.max(run);
    }
    best
}

fn addr_bits(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn from_bits(family: Family, bits: u128) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(u32::try_from(bits).unwrap_or(u32::MAX).into()),
        Family::V6 => IpAddr::V6(bits.into()),
    }
}
