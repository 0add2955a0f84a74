//! Rendering, pure: the set entries of a desired state, `ipset restore` input (full or the
//! difference) and the fixed `iptables-restore` input of our chains.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;

use proxy_core::table::Protocol;

use super::names::{Family, Names, SetKind};
use super::MASQ_MARK;
use crate::config::Config;
use crate::model::ServiceKey;
use crate::plan::{Desired, Origin, Verdict, VipKind};

// === entries ===

fn proto(p: Protocol) -> &'static str {
    p.as_str()
}

/// A set entry: which set (kind and family) and the entry text.
pub type Entry = (SetKind, Family, String);

/// Every set's entries, by set, for a full sync. Sets absent from the map are empty.
pub type Entries = BTreeMap<(SetKind, Family), BTreeSet<String>>;

/// The entries one virtual server puts in the sets, by its role.
pub fn key_entries(key: &ServiceKey, origin: &Origin) -> Vec<Entry> {
    let family = Family::of(key.addr);
    let ip_port = format!("{},{}:{}", key.addr, proto(key.protocol), key.port);
    let mut entries = Vec::new();
    match origin.kind {
        VipKind::ClusterIp => entries.push((SetKind::ClusterIp, family, ip_port.clone())),
        _ if !origin.is_local_policy => {
            entries.push((SetKind::ExternalMasq, family, ip_port.clone()));
        }
        _ => {}
    }
    if origin.kind == VipKind::LoadBalancerIp && !origin.source_ranges.is_empty() {
        entries.push((SetKind::LbFirewall, family, ip_port.clone()));
        for net in &origin.source_ranges {
            if Family::of(net.addr()) == family {
                entries.push((SetKind::LbSource, family, format!("{ip_port},{net}")));
            }
        }
    }
    match origin.verdict {
        Verdict::Forward => {}
        Verdict::Drop => entries.push((SetKind::Drop, family, ip_port)),
        Verdict::Reject => entries.push((SetKind::Reject, family, ip_port)),
    }
    entries
}

/// The hairpin entry of an endpoint: a connection from it to itself through a service.
pub fn endpoint_entry(&(addr, protocol, port): &(IpAddr, Protocol, u16)) -> Entry {
    (
        SetKind::LoopBack,
        Family::of(addr),
        format!("{addr},{}:{port},{addr}", proto(protocol)),
    )
}

/// Every set's entries for a desired state.
pub fn plan_entries(desired: &Desired, config: &Config) -> Entries {
    let mut sets = Entries::new();
    let entries = desired
        .origins
        .iter()
        .flat_map(|(key, origin)| key_entries(key, origin))
        .chain(desired.endpoints.keys().map(endpoint_entry))
        .chain(config.cluster_cidrs.iter().map(|net| {
            (
                SetKind::ClusterCidr,
                Family::of(net.addr()),
                net.to_string(),
            )
        }));
    for (kind, family, entry) in entries {
        sets.entry((kind, family)).or_default().insert(entry);
    }
    sets
}

/// The most entries one of our sets may hold. ipset's default `maxelem` is 65,536, which a
/// 10,000-service table overflows ("Hash is full, cannot add more elements"). A hash set
/// allocates its buckets as it grows, so a high bound costs nothing until it is used; it is fixed
/// (not sized to the table) because `create -exist` fails when an existing set was made with
/// other parameters.
pub const MAX_SET_ELEMENTS: u32 = 1 << 20;

/// `ipset restore` input that makes every set hold exactly `entries`: create (if missing),
/// fill a temporary set, swap, destroy the temporary one.
pub fn render_sets_full(
    names: &Names,
    entries: &BTreeMap<(SetKind, Family), BTreeSet<String>>,
) -> String {
    let mut out = String::new();
    for family in Family::ALL {
        for kind in SetKind::ALL {
            let name = names.set(kind, family);
            let temp = names.temp_set(kind, family);
            let create = |n: &str| {
                format!(
                    "create {n} {} family {} maxelem {MAX_SET_ELEMENTS} -exist\n",
                    kind.set_type(),
                    family.ipset_family()
                )
            };
            out.push_str(&create(&name));
            out.push_str(&create(&temp));
            let _ = writeln!(out, "flush {temp}");
            for entry in entries.get(&(kind, family)).into_iter().flatten() {
                let _ = writeln!(out, "add {temp} {entry}");
            }
            let _ = writeln!(out, "swap {temp} {name}");
            let _ = writeln!(out, "destroy {temp}");
        }
    }
    out
}

/// `ipset restore` input for the entries that changed from `before` to `after` (empty if none).
pub fn render_sets_diff(
    names: &Names,
    before: &BTreeMap<(SetKind, Family), BTreeSet<String>>,
    after: &BTreeMap<(SetKind, Family), BTreeSet<String>>,
) -> String {
    let empty = BTreeSet::new();
    let mut out = String::new();
    for family in Family::ALL {
        for kind in SetKind::ALL {
            let old = before.get(&(kind, family)).unwrap_or(&empty);
            let new = after.get(&(kind, family)).unwrap_or(&empty);
            if old == new {
                continue;
            }
            let name = names.set(kind, family);
            for entry in old.difference(new) {
                let _ = writeln!(out, "del {name} {entry} -exist");
            }
            for entry in new.difference(old) {
                let _ = writeln!(out, "add {name} {entry} -exist");
            }
        }
    }
    out
}

// === rules ===

/// The jumps from built-in chains into ours: (table, built-in chain, our chain).
pub fn hooks(names: &Names) -> Vec<(&'static str, &'static str, String)> {
    vec![
        ("nat", "PREROUTING", names.chain("SERVICES")),
        ("nat", "OUTPUT", names.chain("SERVICES")),
        ("nat", "POSTROUTING", names.chain("POSTROUTING")),
        ("filter", "INPUT", names.chain("FILTER")),
        ("filter", "FORWARD", names.chain("FILTER")),
    ]
}

/// `iptables-restore --noflush` input for one family: our chains and their fixed rules.
pub fn render_rules(names: &Names, config: &Config, family: Family) -> String {
    let set = |kind| names.set(kind, family);
    let services = names.chain("SERVICES");
    let mark_masq = names.chain("MARK-MASQ");
    let postrouting = names.chain("POSTROUTING");
    let filter = names.chain("FILTER");
    let mut out = String::new();
    let _ = writeln!(out, "*nat");
    for chain in [&services, &mark_masq, &postrouting] {
        let _ = writeln!(out, ":{chain} - [0:0]");
    }
    let _ = writeln!(out, "-A {mark_masq} -j MARK --or-mark {MASQ_MARK}");
    if config.masquerade_all {
        let _ = writeln!(
            out,
            "-A {services} -m comment --comment \"svcp-ipvs cluster IP, masquerade all\" -m set --match-set {} dst,dst -j {mark_masq}",
            set(SetKind::ClusterIp)
        );
    } else if config
        .cluster_cidrs
        .iter()
        .any(|n| Family::of(n.addr()) == family)
    {
        let _ = writeln!(
            out,
            "-A {services} -m comment --comment \"svcp-ipvs cluster IP from outside the cluster\" -m set --match-set {} dst,dst -m set ! --match-set {} src -j {mark_masq}",
            set(SetKind::ClusterIp),
            set(SetKind::ClusterCidr)
        );
    }
    let _ = writeln!(
        out,
        "-A {services} -m comment --comment \"svcp-ipvs node port, external and LB IP\" -m set --match-set {} dst,dst -j {mark_masq}",
        set(SetKind::ExternalMasq)
    );
    let _ = writeln!(
        out,
        "-A {postrouting} -m comment --comment \"svcp-ipvs endpoint reaching itself\" -m set --match-set {} dst,dst,src -j MASQUERADE",
        set(SetKind::LoopBack)
    );
    let _ = writeln!(
        out,
        "-A {postrouting} -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN"
    );
    let _ = writeln!(out, "-A {postrouting} -j MARK --xor-mark {MASQ_MARK}");
    let _ = writeln!(
        out,
        "-A {postrouting} -m comment --comment \"svcp-ipvs service traffic requiring SNAT\" -j MASQUERADE --random-fully"
    );
    let _ = writeln!(out, "COMMIT");
    let _ = writeln!(out, "*filter");
    let _ = writeln!(out, ":{filter} - [0:0]");
    let _ = writeln!(
        out,
        "-A {filter} -m comment --comment \"svcp-ipvs LB source ranges\" -m set --match-set {} dst,dst -m set ! --match-set {} dst,dst,src -j DROP",
        set(SetKind::LbFirewall),
        set(SetKind::LbSource)
    );
    let _ = writeln!(
        out,
        "-A {filter} -m comment --comment \"svcp-ipvs no local endpoints\" -m set --match-set {} dst,dst -j DROP",
        set(SetKind::Drop)
    );
    let _ = writeln!(
        out,
        "-A {filter} -m comment --comment \"svcp-ipvs no endpoints\" -m set --match-set {} dst,dst -j REJECT",
        set(SetKind::Reject)
    );
    let _ = writeln!(out, "COMMIT");
    out
}

/// `iptables-restore --noflush` input that empties and deletes our chains.
pub(super) fn render_delete_chains(names: &Names) -> String {
    let mut out = String::from("*nat\n");
    let nat = ["SERVICES", "MARK-MASQ", "POSTROUTING"].map(|c| names.chain(c));
    for chain in &nat {
        let _ = writeln!(out, ":{chain} - [0:0]");
    }
    for chain in &nat {
        let _ = writeln!(out, "-X {chain}");
    }
    let filter = names.chain("FILTER");
    let _ = write!(
        out,
        "COMMIT\n*filter\n:{filter} - [0:0]\n-X {filter}\nCOMMIT\n"
    );
    out
}
