//! The companion rules, pure, in the shared typed model ([`iptables_runner::rules`]): a fixed
//! handful of chains per family whose rules match our ipsets, the jumps into them from the
//! built-in chains, and the restore input of both.

use iptables_runner::rules::{
    saved_copies, ChainName, Edit, Match, RejectWith, Rule, SetDir, SetMatch, Table, TableName,
    Target,
};
use iptables_runner::Family;

use super::names::{Names, SetKind};
use crate::config::IpvsConfig;

/// The masquerade mark bit, kube-proxy's (`--iptables-masquerade-bit` 14). Sharing it with a
/// kube-proxy on the same node is harmless: both mean "SNAT this".
pub const MASQ_MARK: u32 = 0x4000;

/// The comment on our jumps from the built-in chains.
const HOOK_COMMENT: &str = "svcp-ipvs";

/// Our chains, per table: nat `SERVICES`, `MARK-MASQ`, `POSTROUTING`; filter `FILTER`.
const NAT_CHAINS: [&str; 3] = ["SERVICES", "MARK-MASQ", "POSTROUTING"];
const FILTER_CHAINS: [&str; 1] = ["FILTER"];

/// A jump from a built-in chain into one of ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    /// The table.
    pub table: TableName,
    /// The built-in chain.
    pub chain: ChainName,
    /// The rule: a comment and the jump.
    pub rule: Rule,
}

impl Hook {
    /// The restore line that inserts it at the top of its chain.
    pub fn insert(&self) -> Edit {
        Edit::Insert {
            chain: self.chain.clone(),
            rule: self.rule.clone(),
        }
    }

    /// The restore line that deletes one copy of it.
    pub fn delete(&self) -> Edit {
        Edit::Delete {
            chain: self.chain.clone(),
            rule: self.rule.clone(),
        }
    }
}

/// The jumps from built-in chains into ours, in insertion order.
pub fn hooks(names: &Names) -> Vec<Hook> {
    let hook = |table, chain: &str, target: &str| Hook {
        table,
        chain: ChainName::new(chain),
        rule: Rule::new(Target::Jump(ChainName::new(names.chain(target)))).comment(HOOK_COMMENT),
    };
    vec![
        hook(TableName::Nat, "PREROUTING", "SERVICES"),
        hook(TableName::Nat, "OUTPUT", "SERVICES"),
        hook(TableName::Nat, "POSTROUTING", "POSTROUTING"),
        hook(TableName::Filter, "INPUT", "FILTER"),
        hook(TableName::Filter, "FORWARD", "FILTER"),
    ]
}

/// How many copies of each of `hooks` (same index) one family's `iptables-save` output shows
/// ([`saved_copies`]: in the hook's table and chain, reading back as its rule).
pub fn saved_hooks(saved: &str, hooks: &[Hook]) -> Vec<usize> {
    let wanted: Vec<_> = hooks
        .iter()
        .map(|hook| (hook.table, &hook.chain, &hook.rule))
        .collect();
    saved_copies(saved, &wanted)
}

/// The chains of ours (`:NAME` lines of a name [`Names::is_owned`] accepts) in one family's
/// `iptables-save` output.
pub fn saved_chains(names: &Names, saved: &str) -> usize {
    saved
        .lines()
        .filter_map(|l| l.strip_prefix(':'))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|chain| names.is_owned(chain))
        .count()
}

/// `-m set --match-set SET dst,dst`: the destination address and port are in the set.
fn dst_port_in(names: &Names, kind: SetKind, family: Family) -> SetMatch {
    SetMatch::new(names.set(kind, family), &[SetDir::Dst, SetDir::Dst])
}

/// `-m set ! --match-set CLUSTER-CIDR src`: the source is outside the cluster CIDRs.
fn src_outside_cluster(names: &Names, family: Family) -> SetMatch {
    SetMatch::not(names.set(SetKind::ClusterCidr, family), &[SetDir::Src])
}

/// Our chains and their fixed rules for one family: the `nat` table, then `filter`.
pub fn plan_rules(names: &Names, config: &IpvsConfig, family: Family) -> Vec<Table> {
    let chain = |name: &str| ChainName::new(names.chain(name));
    let (services, mark_masq, postrouting, filter) = (
        chain("SERVICES"),
        chain("MARK-MASQ"),
        chain("POSTROUTING"),
        chain("FILTER"),
    );
    let has_cluster_cidr = config
        .cluster_cidrs
        .iter()
        .any(|n| Family::of(n.addr()) == family);
    let to_mark_masq = || Rule::new(Target::Jump(mark_masq.clone()));

    let mut services_rules = Vec::new();
    if config.masquerade_all {
        services_rules.push(
            to_mark_masq()
                .comment("svcp-ipvs cluster IP, masquerade all")
                .match_set(dst_port_in(names, SetKind::ClusterIp, family)),
        );
    } else if has_cluster_cidr {
        services_rules.push(
            to_mark_masq()
                .comment("svcp-ipvs cluster IP from outside the cluster")
                .match_set(dst_port_in(names, SetKind::ClusterIp, family))
                .match_set(src_outside_cluster(names, family)),
        );
    }
    services_rules.push(
        to_mark_masq()
            .comment("svcp-ipvs node port, external and LB IP")
            .match_set(dst_port_in(names, SetKind::ExternalMasq, family)),
    );
    // `--or-mark`, as iptables-save prints it back.
    let mark_masq_rules = vec![Rule::new(Target::Mark {
        value: MASQ_MARK,
        mask: MASQ_MARK,
    })];
    let postrouting_rules = vec![
        Rule::new(Target::Masquerade {
            random_fully: false,
        })
        .comment("svcp-ipvs endpoint reaching itself")
        .match_set(SetMatch::new(
            names.set(SetKind::LoopBack, family),
            &[SetDir::Dst, SetDir::Dst, SetDir::Src],
        )),
        Rule::new(Target::Return).with(Match::Mark {
            value: MASQ_MARK,
            mask: MASQ_MARK,
            negated: true,
        }),
        // Clear the bit before the packet leaves (kube-proxy writes `--xor-mark`; the bit is
        // known set here, so both clear it).
        Rule::new(Target::Mark {
            value: 0,
            mask: MASQ_MARK,
        }),
        Rule::new(Target::Masquerade { random_fully: true })
            .comment("svcp-ipvs service traffic requiring SNAT"),
    ];

    let mut drop_outside = Rule::new(Target::Drop)
        .comment("svcp-ipvs no local endpoints, from outside the cluster")
        .match_set(dst_port_in(names, SetKind::DropOutside, family));
    // Pods keep reaching an eTP=Local address with no local endpoint (its virtual server holds
    // the cluster endpoints, as kube-proxy's IPVS mode has it); without a cluster CIDR of the
    // family nothing tells pods apart, and everyone is dropped.
    if has_cluster_cidr {
        drop_outside = drop_outside.match_set(src_outside_cluster(names, family));
    }
    // `-j REJECT` rejects with this by default; written out as iptables-save prints it.
    let unreachable = match family {
        Family::V4 => RejectWith::IcmpPortUnreachable,
        Family::V6 => RejectWith::Icmp6PortUnreachable,
    };
    let filter_rules = vec![
        Rule::new(Target::Drop)
            .comment("svcp-ipvs LB source ranges")
            .match_set(dst_port_in(names, SetKind::LbFirewall, family))
            .match_set(SetMatch::not(
                names.set(SetKind::LbSource, family),
                &[SetDir::Dst, SetDir::Dst, SetDir::Src],
            )),
        Rule::new(Target::Drop)
            .comment("svcp-ipvs no local endpoints")
            .match_set(dst_port_in(names, SetKind::Drop, family)),
        drop_outside,
        Rule::new(Target::Reject(unreachable))
            .comment("svcp-ipvs no endpoints")
            .match_set(dst_port_in(names, SetKind::Reject, family)),
    ];

    let table = |name, chains: Vec<(ChainName, Vec<Rule>)>| {
        let mut table = Table::new(name);
        table.chains = chains
            .into_iter()
            .map(|(name, rules)| iptables_runner::rules::Chain { name, rules })
            .collect();
        table
    };
    vec![
        table(
            TableName::Nat,
            vec![
                (services, services_rules),
                (mark_masq, mark_masq_rules),
                (postrouting, postrouting_rules),
            ],
        ),
        table(TableName::Filter, vec![(filter, filter_rules)]),
    ]
}

/// `iptables-restore --noflush` input for one family: our chains and their fixed rules
/// ([`plan_rules`]), and an `-I` for each of `insert` (from [`hooks`]: those the family's
/// `iptables-save` lacks) in its table, after our chains are declared.
pub fn render_rules(names: &Names, config: &IpvsConfig, family: Family, insert: &[Hook]) -> String {
    let mut tables = plan_rules(names, config, family);
    for table in &mut tables {
        let name = table.name;
        table.edits.extend(
            insert
                .iter()
                .filter(|hook| hook.table == name)
                .map(Hook::insert),
        );
    }
    tables.iter().map(ToString::to_string).collect()
}

/// `iptables-restore --noflush` input that deletes `delete` (hooks, each as many times as
/// given), then empties and deletes our chains.
pub fn render_cleanup(names: &Names, delete: &[(&Hook, usize)]) -> String {
    [
        (TableName::Nat, &NAT_CHAINS[..]),
        (TableName::Filter, &FILTER_CHAINS[..]),
    ]
    .into_iter()
    .map(|(name, chains)| {
        let mut table = Table::new(name);
        for (hook, copies) in delete.iter().filter(|(hook, _)| hook.table == name) {
            table
                .edits
                .extend(std::iter::repeat_n(hook.delete(), *copies));
        }
        table.deleted = chains
            .iter()
            .map(|chain| ChainName::new(names.chain(chain)))
            .collect();
        table.to_string()
    })
    .collect()
}
