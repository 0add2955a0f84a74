//! The rule tracer: pushes a virtual packet through *our* rendered rules, as kube-proxy's
//! `tracePacket` (`pkg/proxy/iptables/proxier_test.go`) does.
//!
//! It parses restore text with [`crate::rules::parse_restore`] (so any rule shape we do not emit
//! is an error), builds the built-in chains from [`crate::plan::Planner::hooks`], and walks:
//! nat `PREROUTING` (or `OUTPUT` for a packet from this node) → our chains; then filter `INPUT`,
//! `FORWARD` or `OUTPUT` with the post-DNAT destination; then nat `POSTROUTING`. Jumps, gotos and
//! returns are followed with a call stack. A `-m statistic` rule forks the walk: one branch with
//! probability `p` takes the rule, the other goes on with `1 - p`, so every DNAT destination is
//! found with its exact probability. `-m recent --rcheck` is false (a new client), conntrack state
//! is `NEW`. The mark is tracked; the masquerade verdict is whether POSTROUTING reached
//! `MASQUERADE`. Each outcome keeps the rules it matched and the number of rules it walked.
//!
//! ```
//! use backend_iptables::testing::trace::{Packet, Tracer};
//! use backend_iptables::{config::IptablesConfig, plan::Planner, rules::Family};
//! use proxy_core::table::*;
//!
//! let web = ServicePort::new(ServicePortName::new("default", "web", "http"), Protocol::Tcp, 80)
//!     .with_cluster_ip("198.19.0.10".parse().unwrap())
//!     .with_endpoint(Endpoint::new("198.18.1.10".parse().unwrap(), 8080))
//!     .with_endpoint(Endpoint::new("198.18.1.11".parse().unwrap(), 8080));
//! let table = ServiceTable::builder().insert(web).build().unwrap();
//! let planner = Planner::new(IptablesConfig::default()).unwrap();
//! let tracer = Tracer::from_plan(&planner, &planner.plan_full(&table), Family::V4,
//!     vec!["198.18.200.1".parse().unwrap()]).unwrap();
//! let trace = tracer.trace(&Packet::tcp("198.18.250.1", "198.19.0.10", 80)).unwrap();
//! assert_eq!(trace.summary(), "198.18.1.10:8080, 198.18.1.11:8080");
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use proxy_core::Protocol;

use crate::error::ParseError;
use crate::plan::{Hook, Plan, Planner};
use crate::rules::{
    parse_restore, AddrTypeDir, ChainName, CtState, Family, Match, Recent, Rule, TableName, Target,
};

/// Why a trace could not be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum TraceError {
    /// The restore text has a shape we do not emit.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// A rule matches on an ipset (`-m set`): the iptables backend never writes one, so the
    /// tracer does not follow it.
    #[error("{table}: {chain} matches an ipset, a shape the iptables backend does not emit")]
    SetMatch {
        /// The table.
        table: TableName,
        /// The chain holding the rule.
        chain: ChainName,
    },
    /// A rule jumps to a chain nobody declared.
    #[error("{table}: jump to undeclared chain {chain} from {from}")]
    UndeclaredChain {
        /// The table.
        table: TableName,
        /// The missing chain.
        chain: ChainName,
        /// The chain holding the jump.
        from: ChainName,
    },
    /// The walk did not end (a loop).
    #[error("walk exceeded {0} steps: a loop?")]
    TooLong(usize),
    /// A target that makes no sense where it was found (DNAT in filter...).
    #[error("{table}/{chain}: target not allowed here: {rule}")]
    Misplaced {
        /// The table.
        table: TableName,
        /// The chain.
        chain: ChainName,
        /// The rule.
        rule: String,
    },
}

/// A virtual packet: the first packet of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Protocol.
    pub proto: Protocol,
    /// Destination port.
    pub dport: u16,
    /// Sent by a process on this node (walks `OUTPUT`, not `PREROUTING`).
    pub local_src: bool,
}

impl Packet {
    /// A TCP packet from a remote source.
    ///
    /// # Panics
    /// If an address does not parse (test input).
    pub fn tcp(src: &str, dst: &str, dport: u16) -> Self {
        Self {
            src: src.parse().expect("test source address"),
            dst: dst.parse().expect("test destination address"),
            proto: Protocol::Tcp,
            dport,
            local_src: false,
        }
    }
}

/// Where the packet ends up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verdict {
    /// Destination-NATed to this endpoint (and let through by filter).
    Dnat(SocketAddr),
    /// Not ours: passed through untouched.
    Accept,
    /// Dropped.
    Drop,
    /// Rejected.
    Reject,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Dnat(a) => a.fmt(f),
            Verdict::Accept => f.write_str("ACCEPT"),
            Verdict::Drop => f.write_str("DROP"),
            Verdict::Reject => f.write_str("REJECT"),
        }
    }
}

/// One way the packet can go, with its probability.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The verdict.
    pub verdict: Verdict,
    /// Probability of this outcome (outcomes sum to 1).
    pub probability: f64,
    /// Whether nat POSTROUTING masqueraded it.
    pub masq: bool,
    /// Rules evaluated in nat PREROUTING/OUTPUT and below.
    pub nat_rules_walked: usize,
    /// Rules evaluated in filter.
    pub filter_rules_walked: usize,
    /// The rules that matched, as `-A CHAIN spec` lines, in order.
    pub matched: Vec<String>,
}

/// Every outcome of one packet.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// Outcomes, merged by (verdict, masq), sorted by verdict.
    pub outcomes: Vec<Outcome>,
}

impl Trace {
    /// kube-proxy's form: the DNAT destinations joined by `", "`, or `ACCEPT`/`DROP`/`REJECT`;
    /// mixed outcomes are all listed.
    pub fn summary(&self) -> String {
        let set: BTreeSet<Verdict> = self.outcomes.iter().map(|o| o.verdict).collect();
        let list: Vec<String> = set.iter().map(Verdict::to_string).collect();
        list.join(", ")
    }

    /// DNAT destinations with their total probability.
    pub fn destinations(&self) -> BTreeMap<SocketAddr, f64> {
        let mut out = BTreeMap::new();
        for o in &self.outcomes {
            if let Verdict::Dnat(a) = o.verdict {
                *out.entry(a).or_insert(0.0) += o.probability;
            }
        }
        out
    }

    /// Whether every outcome is masqueraded (`Some(true)`), none is (`Some(false)`), or it depends
    /// on the pick (`None`).
    pub fn masq(&self) -> Option<bool> {
        let all = self.outcomes.iter().all(|o| o.masq);
        let none = self.outcomes.iter().all(|o| !o.masq);
        match (all, none) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        }
    }

    /// The most nat rules any outcome walked.
    pub fn max_nat_rules_walked(&self) -> usize {
        self.outcomes
            .iter()
            .map(|o| o.nat_rules_walked)
            .max()
            .unwrap_or(0)
    }
}

impl fmt::Display for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for o in &self.outcomes {
            writeln!(
                f,
                "  {} p={:.6} masq={} nat_rules_walked={} filter_rules_walked={}",
                o.verdict, o.probability, o.masq, o.nat_rules_walked, o.filter_rules_walked
            )?;
            for line in &o.matched {
                writeln!(f, "      {line}")?;
            }
        }
        Ok(())
    }
}

type Chains = BTreeMap<ChainName, Vec<Rule>>;

/// A pending walk: path so far, call stack of (chain, return index), current chain and index.
type WorkItem = (Path, Vec<(ChainName, usize)>, ChainName, usize);

/// One family's rules, ready to trace packets through.
#[derive(Debug, Clone)]
pub struct Tracer {
    family: Family,
    tables: BTreeMap<TableName, Chains>,
    local_addrs: Vec<IpAddr>,
}

/// How a walk of a built-in chain ended.
#[derive(Debug, Clone, Copy, PartialEq)]
enum End {
    FellOff,
    Accept,
    Drop,
    Reject,
    Dnat(SocketAddr),
    Masquerade,
}

#[derive(Debug, Clone)]
struct Path {
    mark: u32,
    probability: f64,
    walked: usize,
    matched: Vec<String>,
}

struct Fields {
    src: IpAddr,
    dst: IpAddr,
    proto: Protocol,
    dport: u16,
    src_local: bool,
    dst_local: bool,
}

const MAX_STEPS: usize = 1_000_000;
const MAX_DEPTH: usize = 64;

impl Tracer {
    /// A tracer over `restore` text (one family; tables may repeat, later chains replace earlier
    /// ones as `--noflush` restores would), with `hooks` as the built-in chains and `local_addrs`
    /// as this node's addresses (for `-m addrtype LOCAL`).
    ///
    /// # Errors
    /// [`TraceError::Parse`] for a shape we do not emit; [`TraceError::UndeclaredChain`] for a
    /// jump to a chain that does not exist.
    pub fn new(
        family: Family,
        restore: &str,
        hooks: &[Hook],
        local_addrs: Vec<IpAddr>,
    ) -> Result<Self, TraceError> {
        let mut tables: BTreeMap<TableName, Chains> = BTreeMap::new();
        for table in parse_restore(restore)? {
            let chains = tables.entry(table.name).or_default();
            for name in &table.deleted {
                chains.remove(name);
            }
            for chain in table.chains {
                chains.insert(chain.name, chain.rules);
            }
        }
        for hook in hooks {
            tables
                .entry(hook.table)
                .or_default()
                .entry(hook.chain.clone())
                .or_default()
                .push(hook.rule.clone());
        }
        for (table, chains) in &tables {
            for (from, rules) in chains {
                for rule in rules {
                    if !rule.sets.is_empty() {
                        return Err(TraceError::SetMatch {
                            table: *table,
                            chain: from.clone(),
                        });
                    }
                    if let Some(to) = rule.target_chain() {
                        if !chains.contains_key(to) {
                            return Err(TraceError::UndeclaredChain {
                                table: *table,
                                chain: to.clone(),
                                from: from.clone(),
                            });
                        }
                    }
                }
            }
        }
        Ok(Self {
            family,
            tables,
            local_addrs,
        })
    }

    /// A tracer over a full plan's rendered text for `family` (rendered, then parsed back).
    ///
    /// # Errors
    /// As [`Tracer::new`].
    pub fn from_plan(
        planner: &Planner,
        plan: &Plan,
        family: Family,
        local_addrs: Vec<IpAddr>,
    ) -> Result<Self, TraceError> {
        let text: String = plan
            .restores
            .iter()
            .filter(|r| r.family == family)
            .map(|r| r.input())
            .collect();
        Self::new(family, &text, &planner.hooks(), local_addrs)
    }

    /// The address family traced.
    pub fn family(&self) -> Family {
        self.family
    }

    /// Every way `packet` can go.
    ///
    /// # Errors
    /// [`TraceError`] on a loop or a misplaced target.
    pub fn trace(&self, packet: &Packet) -> Result<Trace, TraceError> {
        let is_local = |a: IpAddr| self.local_addrs.contains(&a);
        let fields = Fields {
            src: packet.src,
            dst: packet.dst,
            proto: packet.proto,
            dport: packet.dport,
            src_local: packet.local_src || is_local(packet.src),
            dst_local: is_local(packet.dst),
        };
        let start = Path {
            mark: 0,
            probability: 1.0,
            walked: 0,
            matched: Vec::new(),
        };
        let nat_hook = if packet.local_src {
            "OUTPUT"
        } else {
            "PREROUTING"
        };
        let mut outcomes: Vec<Outcome> = Vec::new();
        for (end, nat_path) in self.walk(TableName::Nat, nat_hook, &fields, start)? {
            let dnat = match end {
                End::FellOff => None,
                End::Dnat(to) => Some(to),
                _ => return Err(self.misplaced(TableName::Nat, nat_hook, &nat_path)),
            };
            let after = Fields {
                dst: dnat.map_or(fields.dst, |a| a.ip()),
                dport: dnat.map_or(fields.dport, |a| a.port()),
                dst_local: is_local(dnat.map_or(fields.dst, |a| a.ip())),
                ..fields
            };
            let filter_hook = if packet.local_src {
                "OUTPUT"
            } else if after.dst_local {
                "INPUT"
            } else {
                "FORWARD"
            };
            let nat_walked = nat_path.walked;
            let filter_start = Path {
                walked: 0,
                ..nat_path
            };
            for (fend, fpath) in self.walk(TableName::Filter, filter_hook, &after, filter_start)? {
                let verdict = match (fend, dnat) {
                    (End::Drop, _) => Verdict::Drop,
                    (End::Reject, _) => Verdict::Reject,
                    (End::Accept | End::FellOff, Some(to)) => Verdict::Dnat(to),
                    (End::Accept | End::FellOff, None) => Verdict::Accept,
                    _ => return Err(self.misplaced(TableName::Filter, filter_hook, &fpath)),
                };
                let filter_walked = fpath.walked;
                let post_start = Path { walked: 0, ..fpath };
                if matches!(verdict, Verdict::Drop | Verdict::Reject) {
                    outcomes.push(outcome(
                        verdict,
                        post_start,
                        false,
                        nat_walked,
                        filter_walked,
                    ));
                    continue;
                }
                for (pend, ppath) in self.walk(TableName::Nat, "POSTROUTING", &after, post_start)? {
                    let masq = match pend {
                        End::Masquerade => true,
                        End::FellOff => false,
                        _ => return Err(self.misplaced(TableName::Nat, "POSTROUTING", &ppath)),
                    };
                    outcomes.push(outcome(verdict, ppath, masq, nat_walked, filter_walked));
                }
            }
        }
        Ok(Trace {
            outcomes: merge(outcomes),
        })
    }

    fn misplaced(&self, table: TableName, chain: &str, path: &Path) -> TraceError {
        TraceError::Misplaced {
            table,
            chain: ChainName::new(chain),
            rule: path.matched.last().cloned().unwrap_or_default(),
        }
    }

    /// Walks a built-in chain; returns every way it can end.
    fn walk(
        &self,
        table: TableName,
        builtin: &str,
        fields: &Fields,
        path: Path,
    ) -> Result<Vec<(End, Path)>, TraceError> {
        let empty = Chains::new();
        let chains = self.tables.get(&table).unwrap_or(&empty);
        let mut done = Vec::new();
        // (path, call stack, current chain, index)
        let mut work: Vec<WorkItem> = vec![(path, Vec::new(), ChainName::new(builtin), 0)];
        let mut steps = 0;
        while let Some((mut path, mut stack, mut chain, mut index)) = work.pop() {
            loop {
                steps += 1;
                if steps > MAX_STEPS || stack.len() > MAX_DEPTH {
                    return Err(TraceError::TooLong(MAX_STEPS));
                }
                let rules = chains.get(&chain).map(Vec::as_slice).unwrap_or(&[]);
                let Some(rule) = rules.get(index) else {
                    match stack.pop() {
                        Some((c, i)) => {
                            chain = c;
                            index = i;
                            continue;
                        }
                        None => {
                            done.push((End::FellOff, path));
                            break;
                        }
                    }
                };
                path.walked += 1;
                index += 1;
                let (static_match, probability) = self.matches(rule, fields, path.mark);
                if !static_match {
                    continue;
                }
                if let Some(p) = probability {
                    let mut miss = path.clone();
                    miss.probability *= 1.0 - p;
                    if miss.probability > 0.0 {
                        work.push((miss, stack.clone(), chain.clone(), index));
                    }
                    path.probability *= p;
                    if path.probability == 0.0 {
                        break;
                    }
                }
                path.matched.push(format!("-A {chain} {rule}"));
                let end = match &rule.target {
                    Target::Jump(to) => {
                        stack.push((chain.clone(), index));
                        chain = to.clone();
                        index = 0;
                        continue;
                    }
                    Target::Goto(to) => {
                        chain = to.clone();
                        index = 0;
                        continue;
                    }
                    Target::Return => match stack.pop() {
                        Some((c, i)) => {
                            chain = c;
                            index = i;
                            continue;
                        }
                        None => End::FellOff,
                    },
                    Target::Mark { value, mask } => {
                        path.mark = (path.mark & !mask) ^ value;
                        continue;
                    }
                    Target::Accept => End::Accept,
                    Target::Drop => End::Drop,
                    Target::Reject(_) => End::Reject,
                    Target::Dnat(to) => End::Dnat(*to),
                    Target::Masquerade { .. } => End::Masquerade,
                };
                done.push((end, path));
                break;
            }
        }
        Ok(done)
    }

    /// Whether the rule's non-random matches hold, and its statistic probability if it has one.
    fn matches(&self, rule: &Rule, f: &Fields, mark: u32) -> (bool, Option<f64>) {
        if rule.source.is_some_and(|s| !s.matches(f.src))
            || rule.destination.is_some_and(|d| !d.matches(f.dst))
            || rule.protocol.is_some_and(|p| p != f.proto)
        {
            return (false, None);
        }
        let mut probability = None;
        for m in &rule.matches {
            let ok = match m {
                Match::Comment(_) => true,
                Match::DestPort { protocol, port } => *protocol == f.proto && *port == f.dport,
                Match::DestPortRange {
                    protocol,
                    first,
                    last,
                } => *protocol == f.proto && (*first..=*last).contains(&f.dport),
                Match::AddrTypeLocal(AddrTypeDir::Src) => f.src_local,
                Match::AddrTypeLocal(AddrTypeDir::Dst) => f.dst_local,
                Match::Statistic(p) => {
                    probability = Some(p.as_f64());
                    true
                }
                Match::Recent(Recent::Check { .. }) => false,
                Match::Recent(Recent::Set { .. }) => true,
                Match::Mark {
                    value,
                    mask,
                    negated,
                } => ((mark & mask) == *value) != *negated,
                Match::Conntrack(states) => states.contains(&CtState::New),
            };
            if !ok {
                return (false, None);
            }
        }
        (true, probability)
    }
}

fn outcome(
    verdict: Verdict,
    path: Path,
    masq: bool,
    nat_rules_walked: usize,
    filter_rules_walked: usize,
) -> Outcome {
    Outcome {
        verdict,
        probability: path.probability,
        masq,
        nat_rules_walked,
        filter_rules_walked,
        matched: path.matched,
    }
}

fn merge(outcomes: Vec<Outcome>) -> Vec<Outcome> {
    let mut merged: BTreeMap<(Verdict, bool), Outcome> = BTreeMap::new();
    for o in outcomes {
        match merged.get_mut(&(o.verdict, o.masq)) {
            Some(m) => {
                m.probability += o.probability;
                m.nat_rules_walked = m.nat_rules_walked.max(o.nat_rules_walked);
                m.filter_rules_walked = m.filter_rules_walked.max(o.filter_rules_walked);
            }
            None => {
                merged.insert((o.verdict, o.masq), o);
            }
        }
    }
    merged.into_values().collect()
}

/// One packet-flow case, as kube-proxy's `packetFlowTest`.
#[derive(Debug, Clone)]
pub struct PacketFlow {
    /// What the case checks.
    pub name: &'static str,
    /// Source address.
    pub src: &'static str,
    /// Protocol.
    pub proto: Protocol,
    /// Destination address.
    pub dst: &'static str,
    /// Destination port.
    pub dport: u16,
    /// Sent from this node.
    pub local_src: bool,
    /// Expected [`Trace::summary`].
    pub want: &'static str,
    /// Expected masquerade (checked unless the verdict is DROP or REJECT).
    pub masq: bool,
}

impl PacketFlow {
    /// A TCP flow from a remote source, not masqueraded.
    pub fn tcp(
        name: &'static str,
        src: &'static str,
        dst: &'static str,
        dport: u16,
        want: &'static str,
    ) -> Self {
        Self {
            name,
            src,
            proto: Protocol::Tcp,
            dst,
            dport,
            local_src: false,
            want,
            masq: false,
        }
    }

    /// The same flow, expecting masquerade.
    pub fn masq(mut self) -> Self {
        self.masq = true;
        self
    }

    /// The same flow, sent from this node.
    pub fn from_node(mut self) -> Self {
        self.local_src = true;
        self
    }

    /// The same flow over `proto`.
    pub fn proto(mut self, proto: Protocol) -> Self {
        self.proto = proto;
        self
    }
}

/// Runs every flow; returns one message per failure, each with the full trace.
pub fn run_packet_flows(tracer: &Tracer, flows: &[PacketFlow]) -> Vec<String> {
    let mut failures = Vec::new();
    for flow in flows {
        let packet = match (flow.src.parse(), flow.dst.parse()) {
            (Ok(src), Ok(dst)) => Packet {
                src,
                dst,
                proto: flow.proto,
                dport: flow.dport,
                local_src: flow.local_src,
            },
            _ => {
                failures.push(format!("{}: bad address in test", flow.name));
                continue;
            }
        };
        let trace = match tracer.trace(&packet) {
            Ok(t) => t,
            Err(e) => {
                failures.push(format!("{}: trace failed: {e}", flow.name));
                continue;
            }
        };
        let summary = trace.summary();
        let checks_masq = !matches!(flow.want, "DROP" | "REJECT");
        let masq_ok = !checks_masq || trace.masq() == Some(flow.masq);
        if summary != flow.want || !masq_ok {
            failures.push(format!(
                "{}: {packet:?}\n  want {} (masq {}), got {} (masq {:?})\n{trace}",
                flow.name,
                flow.want,
                flow.masq,
                summary,
                trace.masq()
            ));
        }
    }
    failures
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE: &str = "198.18.200.1";

    fn hooks() -> Vec<Hook> {
        Planner::new(crate::config::IptablesConfig::default())
            .expect("default config")
            .hooks()
    }

    fn tracer(text: &str) -> Tracer {
        Tracer::new(
            Family::V4,
            text,
            &hooks(),
            vec![NODE.parse().expect("node ip")],
        )
        .expect("valid rules")
    }

    const FILTER: &str = "*filter
:SVCP-SERVICES - [0:0]
:SVCP-EXT-SERVICES - [0:0]
:SVCP-FORWARD - [0:0]
:SVCP-FIREWALL - [0:0]
COMMIT
";

    const BASE: &str = "*nat
:SVCP-SERVICES - [0:0]
:SVCP-NODEPORTS - [0:0]
:SVCP-POSTROUTING - [0:0]
:SVCP-MARK-MASQ - [0:0]
:SVCP-SVC-A - [0:0]
:SVCP-SVC-B - [0:0]
-A SVCP-SERVICES -d 198.19.0.1/32 -p tcp -m tcp --dport 80 -j SVCP-SVC-A
-A SVCP-SERVICES -d 198.19.0.2/32 -p tcp -m tcp --dport 80 -j SVCP-SVC-B
-A SVCP-SERVICES -m addrtype --dst-type LOCAL -j SVCP-NODEPORTS
-A SVCP-NODEPORTS -p tcp -m tcp --dport 30001 -j SVCP-SVC-B
-A SVCP-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A SVCP-POSTROUTING -j MASQUERADE
-A SVCP-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A SVCP-SVC-A -m statistic --mode random --probability 0.2500000000 -j DNAT --to-destination 198.18.1.1:80
-A SVCP-SVC-A -j DNAT --to-destination 198.18.1.2:80
-A SVCP-SVC-B -j SVCP-MARK-MASQ
-A SVCP-SVC-B -p tcp -j DNAT --to-destination 198.18.1.3:80
COMMIT
*filter
:SVCP-SERVICES - [0:0]
:SVCP-EXT-SERVICES - [0:0]
:SVCP-FORWARD - [0:0]
:SVCP-FIREWALL - [0:0]
-A SVCP-SERVICES -d 198.19.0.9/32 -p tcp -m tcp --dport 80 -j REJECT --reject-with tcp-reset
-A SVCP-FIREWALL -d 198.19.0.8/32 -j DROP
COMMIT
";

    #[test]
    fn statistic_rules_fork_with_exact_probabilities() {
        let t = tracer(BASE);
        let trace = t
            .trace(&Packet::tcp("198.18.250.1", "198.19.0.1", 80))
            .expect("trace");
        assert_eq!(trace.summary(), "198.18.1.1:80, 198.18.1.2:80", "{trace}");
        let d = trace.destinations();
        let p1 = d[&"198.18.1.1:80".parse().expect("addr")];
        assert!((p1 - 0.25).abs() < 1e-9, "{trace}");
        assert_eq!(trace.masq(), Some(false));
        // PREROUTING hook, SERVICES rule 1, then SVC-A rule 1 (and rule 2 on the miss branch).
        assert_eq!(trace.max_nat_rules_walked(), 4, "{trace}");
    }

    #[test]
    fn jumps_marks_and_postrouting_masquerade() {
        let t = tracer(BASE);
        let trace = t
            .trace(&Packet::tcp("198.18.250.1", "198.19.0.2", 80))
            .expect("trace");
        assert_eq!(trace.summary(), "198.18.1.3:80");
        assert_eq!(trace.masq(), Some(true), "{trace}");
        let matched = &trace.outcomes[0].matched;
        assert!(
            matched.iter().any(|l| l.contains("MASQUERADE")),
            "{matched:?}"
        );
    }

    #[test]
    fn node_ports_need_a_local_destination() {
        let t = tracer(BASE);
        let to_node = t
            .trace(&Packet::tcp("198.18.250.1", NODE, 30001))
            .expect("trace");
        assert_eq!(to_node.summary(), "198.18.1.3:80");
        let elsewhere = t
            .trace(&Packet::tcp("198.18.250.1", "198.18.200.2", 30001))
            .expect("trace");
        assert_eq!(elsewhere.summary(), "ACCEPT", "{elsewhere}");
    }

    #[test]
    fn filter_rejects_and_drops() {
        let t = tracer(BASE);
        let reject = t
            .trace(&Packet::tcp("198.18.250.1", "198.19.0.9", 80))
            .expect("trace");
        assert_eq!(reject.summary(), "REJECT");
        let drop = t
            .trace(&Packet::tcp("198.18.250.1", "198.19.0.8", 80))
            .expect("trace");
        assert_eq!(drop.summary(), "DROP");
        let other_port = t
            .trace(&Packet::tcp("198.18.250.1", "198.19.0.9", 81))
            .expect("trace");
        assert_eq!(other_port.summary(), "ACCEPT");
    }

    #[test]
    fn goto_returns_to_the_caller_of_the_caller() {
        let text = "*nat
:SVCP-SERVICES - [0:0]
:SVCP-NODEPORTS - [0:0]
:SVCP-POSTROUTING - [0:0]
:SVCP-DT-A - [0:0]
:SVCP-DT-B - [0:0]
-A SVCP-SERVICES -d 198.19.0.0/24 -j SVCP-DT-A
-A SVCP-SERVICES -m addrtype --dst-type LOCAL -j SVCP-NODEPORTS
-A SVCP-DT-A -d 198.19.0.0/28 -g SVCP-DT-B
-A SVCP-DT-A -j DNAT --to-destination 198.18.9.9:1
-A SVCP-DT-B -d 198.19.0.1/32 -p tcp -j DNAT --to-destination 198.18.1.1:80
-A SVCP-NODEPORTS -p tcp -m tcp --dport 80 -j DNAT --to-destination 198.18.1.2:80
COMMIT
";
        let t = Tracer::new(
            Family::V4,
            &format!("{text}{FILTER}"),
            &hooks(),
            vec!["198.19.0.2".parse().expect("ip")],
        )
        .expect("valid");
        let hit = t
            .trace(&Packet::tcp("198.18.250.1", "198.19.0.1", 80))
            .expect("trace");
        assert_eq!(hit.summary(), "198.18.1.1:80");
        // Falls off DT-B: goto means we return to SERVICES, skipping DT-A's second rule.
        let miss = t
            .trace(&Packet::tcp("198.18.250.1", "198.19.0.2", 80))
            .expect("trace");
        assert_eq!(miss.summary(), "198.18.1.2:80", "{miss}");
    }

    #[test]
    fn undeclared_chains_and_unknown_shapes_are_errors() {
        let dangling = "*nat\n:SVCP-SERVICES - [0:0]\n-A SVCP-SERVICES -j SVCP-NOPE\nCOMMIT\n";
        assert!(matches!(
            Tracer::new(Family::V4, dangling, &[], vec![]),
            Err(TraceError::UndeclaredChain { .. })
        ));
        let unknown =
            "*nat\n:SVCP-SERVICES - [0:0]\n-A SVCP-SERVICES -m multiport --dports 1,2 -j RETURN\nCOMMIT\n";
        assert!(matches!(
            Tracer::new(Family::V4, unknown, &[], vec![]),
            Err(TraceError::Parse(_))
        ));
        let set = "*nat\n:SVCP-SERVICES - [0:0]\n\
                   -A SVCP-SERVICES -m set --match-set SVCP-X dst,dst -j RETURN\nCOMMIT\n";
        assert!(matches!(
            Tracer::new(Family::V4, set, &[], vec![]),
            Err(TraceError::SetMatch { .. })
        ));
    }

    #[test]
    fn loops_are_detected() {
        let text =
            "*nat\n:SVCP-SERVICES - [0:0]\n:SVCP-NODEPORTS - [0:0]\n:SVCP-POSTROUTING - [0:0]\n\
                    -A SVCP-SERVICES -j SVCP-SERVICES\nCOMMIT\n";
        let t =
            Tracer::new(Family::V4, &format!("{text}{FILTER}"), &hooks(), vec![]).expect("parses");
        assert!(matches!(
            t.trace(&Packet::tcp("198.18.250.1", "198.19.0.1", 80)),
            Err(TraceError::TooLong(_))
        ));
    }
}
