//! Rendering the sets, pure: the set entries of a desired state and the ipset steps that write
//! them (full or the difference). The rules are in `rules.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use proxy_core::table::Protocol;

use super::names::{ipset_family, Family, Names, SetKind};
use crate::config::IpvsConfig;
use crate::ipset::{IpsetOp, SetEntry, SetSpec};
use crate::model::ServiceKey;
use crate::plan::{Desired, Origin, Verdict, VipKind};

// === entries ===

/// A set entry: which set (kind and family) and the entry.
pub type Entry = (SetKind, Family, SetEntry);

/// Every set's entries, by set, for a full sync. Sets absent from the map are empty.
pub type Entries = BTreeMap<(SetKind, Family), BTreeSet<SetEntry>>;

/// The entries one virtual server puts in the sets, by its role.
pub fn key_entries(key: &ServiceKey, origin: &Origin) -> Vec<Entry> {
    let family = Family::of(key.addr);
    let ip_port = SetEntry::IpPort {
        addr: key.addr,
        protocol: key.protocol,
        port: key.port,
    };
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
                let entry = SetEntry::IpPortNet {
                    addr: key.addr,
                    protocol: key.protocol,
                    port: key.port,
                    // The kernel keeps the network address only; so do we, so that a listing
                    // compares equal.
                    net: net.trunc(),
                };
                entries.push((SetKind::LbSource, family, entry));
            }
        }
    }
    match origin.verdict {
        Verdict::Forward => {}
        Verdict::Drop => entries.push((SetKind::Drop, family, ip_port)),
        Verdict::DropOutsideCluster => entries.push((SetKind::DropOutside, family, ip_port)),
        Verdict::Reject => entries.push((SetKind::Reject, family, ip_port)),
    }
    entries
}

/// The hairpin entry of an endpoint: a connection from it to itself through a service.
pub fn endpoint_entry(&(addr, protocol, port): &(IpAddr, Protocol, u16)) -> Entry {
    let entry = SetEntry::IpPortIp {
        addr,
        protocol,
        port,
        addr2: addr,
    };
    (SetKind::LoopBack, Family::of(addr), entry)
}

/// Every set's entries for a desired state.
pub fn plan_entries(desired: &Desired, config: &IpvsConfig) -> Entries {
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
                SetEntry::Net(net.trunc()),
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

/// The set of `kind` and `family` under `name`, as we create it.
pub fn set_spec(name: String, kind: SetKind, family: Family) -> SetSpec {
    SetSpec {
        name,
        set_type: kind.set_type(),
        family: ipset_family(family),
        max_elements: MAX_SET_ELEMENTS,
        hash_size: None,
    }
}

/// The ipset steps that make every set hold exactly `entries`: per set, create it (if
/// missing), fill a temporary set, swap them, destroy the temporary one. One batch: the kernel
/// gets it in a few `sendmsg` calls.
pub fn plan_sets_full(names: &Names, entries: &Entries) -> Vec<IpsetOp> {
    let mut ops = Vec::new();
    for family in Family::ALL {
        for kind in SetKind::ALL {
            let name = names.set(kind, family);
            let temp = names.temp_set(kind, family);
            ops.push(IpsetOp::Create(set_spec(name.clone(), kind, family)));
            ops.push(IpsetOp::Create(set_spec(temp.clone(), kind, family)));
            ops.push(IpsetOp::Flush(temp.clone()));
            let members: Vec<SetEntry> = entries
                .get(&(kind, family))
                .into_iter()
                .flatten()
                .cloned()
                .collect();
            if !members.is_empty() {
                ops.push(IpsetOp::Add(temp.clone(), members));
            }
            ops.push(IpsetOp::Swap(temp.clone(), name));
            ops.push(IpsetOp::Destroy(temp));
        }
    }
    ops
}

/// [`plan_sets_full`] in `ipset restore` syntax, for the golden files and logs.
pub fn render_sets_full(names: &Names, entries: &Entries) -> String {
    plan_sets_full(names, entries)
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// The ipset steps for the entries that changed from `before` to `after` (none if none):
/// deletions first, then additions, per set.
pub fn plan_sets_diff(names: &Names, before: &Entries, after: &Entries) -> Vec<IpsetOp> {
    let empty = BTreeSet::new();
    let mut ops = Vec::new();
    for family in Family::ALL {
        for kind in SetKind::ALL {
            let old = before.get(&(kind, family)).unwrap_or(&empty);
            let new = after.get(&(kind, family)).unwrap_or(&empty);
            if old == new {
                continue;
            }
            let name = names.set(kind, family);
            let gone: Vec<SetEntry> = old.difference(new).cloned().collect();
            let added: Vec<SetEntry> = new.difference(old).cloned().collect();
            if !gone.is_empty() {
                ops.push(IpsetOp::Del(name.clone(), gone));
            }
            if !added.is_empty() {
                ops.push(IpsetOp::Add(name, added));
            }
        }
    }
    ops
}

/// The number of entries `ops` add or delete.
pub fn entries_written(ops: &[IpsetOp]) -> usize {
    ops.iter()
        .map(|op| match op {
            IpsetOp::Add(_, e) | IpsetOp::Del(_, e) => e.len(),
            _ => 0,
        })
        .sum()
}
