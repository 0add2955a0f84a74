//! Observe: our table read back over netlink dumps (never `nft list`) into the model types
//! the planner diffs against ([`observe`]).
//!
//! - Sets and maps by name ([`SetName::parse`]), each checked against our declaration (flags,
//!   key and data types, `nft`'s user data): a set of our name declared otherwise cannot be
//!   repaired in place and is reported in [`Observed::redeclare`] (the dataplane then deletes
//!   the table and programs it whole). The affinity maps' elements are the datapath's, never
//!   read.
//! - Elements decoded back into [`Key`]s and [`Value`]s; an element whose data we cannot read
//!   (a verdict to a chain that is not ours) is kept with [`Value::None`], which no desired map
//!   element has, so the planner replaces it.
//! - Chains by name ([`ChainName::parse`]) with their hooks, and their rules compared by
//!   expressions: a rule whose expressions are those of a rule we encode for the known table
//!   is that rule; any other is [`Rule::Foreign`], so its chain differs and is rewritten.
//!   Expressions are compared in the kernel's form ([`canonical`]): the kernel dumps
//!   attributes in its own order and fills in defaults (`bitwise` op, `lookup` flags, `nat`
//!   max registers), and names anonymous sets `__set<n>`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use netlink_transport::{Datagrams, NetlinkError};
use proxy_core::Protocol;

use crate::apply::encode::{
    element_attrs, needs_l4proto_set, proto_number, rule_exprs, Encoder, ANONYMOUS_SET,
};
use crate::model::{
    Chain, ChainType, Family, Hook, HookPoint, Key, Rule, Set, Table, Value, Verdict,
};
use crate::names::{ChainName, SetName};
use crate::netlink::data::{value_of, verdict_of, Verdict as NlVerdict};
use crate::netlink::expr::{nat_flags, BitwiseAttr, DynsetAttr, LookupAttr, NatAttr};
use crate::netlink::set_elem::ELEM_INTERVAL_END;
use crate::netlink::{
    ChainAttr, Expr, Hook as NlHook, HookAttr, NftObject, NftSocket, ProtoFamily, RuleAttr,
    SetAttr, SetElemAttr, TableAttr,
};

/// What [`observe`] read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// Our table as the kernel holds it, in the planner's terms.
    pub table: Table,
    /// Sets of our names declared otherwise than we declare them.
    pub redeclare: BTreeSet<SetName>,
    /// Base chains of ours whose hook, type or priority someone changed (a chain cannot be
    /// re-hooked in place).
    pub rehook: BTreeSet<ChainName>,
    /// Names in our table that are none of ours (left alone; `cleanup` removes them with
    /// the table).
    pub foreign: Vec<String>,
}

impl Observed {
    /// Whether the table must be deleted and programmed whole: a set or base chain cannot be
    /// redeclared in place.
    pub fn needs_rebuild(&self) -> bool {
        !self.redeclare.is_empty() || !self.rehook.is_empty()
    }
}

/// A rule's expressions in the kernel's form, comparable between what we encode and what a
/// dump returns: attributes the kernel fills in are filled in, set ids dropped (the kernel
/// names sets), anonymous set names unified, and each expression's attributes sorted.
pub fn canonical(exprs: &[Expr]) -> Vec<(String, Vec<String>)> {
    exprs
        .iter()
        .map(|e| {
            let mut attrs: Vec<String> = match e.clone() {
                Expr::Lookup(mut a) => {
                    a.retain(|x| !matches!(x, LookupAttr::SetId(_)));
                    for x in &mut a {
                        if let LookupAttr::Set(name) = x {
                            if name.starts_with("__set") {
                                *name = ANONYMOUS_SET.to_owned();
                            }
                        }
                    }
                    if !a.iter().any(|x| matches!(x, LookupAttr::Flags(_))) {
                        a.push(LookupAttr::Flags(0));
                    }
                    a.iter().map(|x| format!("{x:?}")).collect()
                }
                Expr::Bitwise(mut a) => {
                    if !a.iter().any(|x| matches!(x, BitwiseAttr::Op(_))) {
                        a.push(BitwiseAttr::Op(0));
                    }
                    a.iter().map(|x| format!("{x:?}")).collect()
                }
                Expr::Dynset(mut a) => {
                    a.retain(|x| !matches!(x, DynsetAttr::SetId(_)));
                    if !a.iter().any(|x| matches!(x, DynsetAttr::Flags(_))) {
                        a.push(DynsetAttr::Flags(0));
                    }
                    a.iter().map(|x| format!("{x:?}")).collect()
                }
                Expr::Nat(mut a) => {
                    let mut flags = 0;
                    let mut extra = Vec::new();
                    for x in &a {
                        match x {
                            NatAttr::RegAddrMin(r) => {
                                flags |= nat_flags::MAP_IPS;
                                extra.push(NatAttr::RegAddrMax(*r));
                            }
                            NatAttr::RegProtoMin(r) => {
                                flags |= nat_flags::PROTO_SPECIFIED;
                                extra.push(NatAttr::RegProtoMax(*r));
                            }
                            NatAttr::Flags(f) => flags |= *f,
                            _ => {}
                        }
                    }
                    a.retain(|x| {
                        !matches!(
                            x,
                            NatAttr::Flags(_) | NatAttr::RegAddrMax(_) | NatAttr::RegProtoMax(_)
                        )
                    });
                    a.extend(extra);
                    a.push(NatAttr::Flags(flags));
                    a.iter().map(|x| format!("{x:?}")).collect()
                }
                other => match other {
                    Expr::Payload(a) => a.iter().map(|x| format!("{x:?}")).collect(),
                    Expr::Meta(a) => a.iter().map(|x| format!("{x:?}")).collect(),
                    Expr::Cmp(a) => a.iter().map(|x| format!("{x:?}")).collect(),
                    Expr::Immediate(a) => a.iter().map(|x| format!("{x:?}")).collect(),
                    Expr::Masq(a) => a.iter().map(|x| format!("{x:?}")).collect(),
                    Expr::Numgen(a) => a.iter().map(|x| format!("{x:?}")).collect(),
                    Expr::Ct(a) => a.iter().map(|x| format!("{x:?}")).collect(),
                    Expr::Counter(a) => a.iter().map(|x| format!("{x:?}")).collect(),
                    Expr::Reject(a) => a.iter().map(|x| format!("{x:?}")).collect(),
                    Expr::Fib(a) => a.iter().map(|x| format!("{x:?}")).collect(),
                    Expr::Range(a) => a.iter().map(|x| format!("{x:?}")).collect(),
                    other => vec![format!("{other:?}")],
                },
            };
            attrs.sort();
            (e.name().to_owned(), attrs)
        })
        .collect()
}

/// The rules we may have written for `known`, by their canonical expressions.
fn rule_index(known: &Table) -> BTreeMap<Vec<(String, Vec<String>)>, Rule> {
    let mut index = BTreeMap::new();
    for chain in known.chains.values() {
        for rule in &chain.rules {
            let anon = needs_l4proto_set(rule).then_some(0);
            index
                .entry(canonical(&rule_exprs(rule, anon)))
                .or_insert(*rule);
        }
    }
    index
}

/// Reads table `name` back (`None`: there is none). `known` is the table the rules are
/// recognised against (the desired one): a rule of ours that it does not hold reads as
/// [`Rule::Foreign`].
///
/// # Errors
/// A dump that failed.
pub fn observe<D: Datagrams>(
    socket: &mut NftSocket<D>,
    name: &str,
    known: &Table,
) -> Result<Option<Observed>, NetlinkError> {
    match observe_sets(socket, name)? {
        Some(sets) => sets.finish(socket, known).map(Some),
        None => Ok(None),
    }
}

/// The first half of [`observe`]: the sets and their elements, the bulk of the reading (at
/// 10,000 service ports, 200,000 elements), which needs no desired table. A full sync plans
/// the desired table on another thread meanwhile, then [`ObservedSets::finish`]es with it.
///
/// # Errors
/// A dump that failed.
pub fn observe_sets<D: Datagrams>(
    socket: &mut NftSocket<D>,
    name: &str,
) -> Result<Option<ObservedSets>, NetlinkError> {
    let exists = socket
        .list_tables(ProtoFamily::Inet)?
        .iter()
        .any(|t| t.contains(&TableAttr::Name(name.to_owned())));
    if !exists {
        return Ok(None);
    }
    let mut observed = Observed {
        table: Table::new(name),
        redeclare: BTreeSet::new(),
        rehook: BTreeSet::new(),
        foreign: Vec::new(),
    };
    let mut encoder = Encoder::new(name);
    for attrs in socket.list_sets(ProtoFamily::Inet, name)? {
        let Some(set_name) = attrs.iter().find_map(|a| match a {
            SetAttr::Name(n) => Some(n.clone()),
            _ => None,
        }) else {
            continue;
        };
        if set_name.starts_with("__set") {
            continue;
        }
        let Some(set) = SetName::parse(&set_name) else {
            observed.foreign.push(set_name);
            continue;
        };
        if declared(&attrs) != declared(&set_attrs(&mut encoder, set)) {
            observed.redeclare.insert(set);
        }
        let mut s = Set::new(set);
        if !matches!(set, SetName::Affinity(_)) {
            let elements = socket.list_set_elements(ProtoFamily::Inet, name, &set_name)?;
            s.elements = decode_elements(set, &elements);
        }
        observed.table.sets.insert(set, s);
    }
    Ok(Some(ObservedSets(observed)))
}

/// Our table's sets as [`observe_sets`] read them; [`ObservedSets::finish`] adds the chains and
/// rules.
#[derive(Debug)]
pub struct ObservedSets(Observed);

impl ObservedSets {
    /// Reads the chains and rules, recognising rules against `known` (as [`observe`]).
    ///
    /// # Errors
    /// A dump that failed.
    pub fn finish<D: Datagrams>(
        self,
        socket: &mut NftSocket<D>,
        known: &Table,
    ) -> Result<Observed, NetlinkError> {
        let mut observed = self.0;
        let name = observed.table.name.clone();
        let name = name.as_str();
        for attrs in socket.list_chains(ProtoFamily::Inet, name)? {
            let Some(chain_name) = attrs.iter().find_map(|a| match a {
                ChainAttr::Name(n) => Some(n.clone()),
                _ => None,
            }) else {
                continue;
            };
            let Some(chain) = ChainName::parse(&chain_name) else {
                observed.foreign.push(chain_name);
                continue;
            };
            let hook = chain_hook(&attrs);
            if let Some(want) = known.chains.get(&chain) {
                if want.hook != hook {
                    observed.rehook.insert(chain);
                }
            }
            observed.table.chains.insert(
                chain,
                Chain {
                    name: chain,
                    hook,
                    rules: Vec::new(),
                },
            );
        }
        let index = rule_index(known);
        for attrs in socket.list_rules(ProtoFamily::Inet, name, None)? {
            let mut chain = None;
            let mut exprs: &[Expr] = &[];
            for a in &attrs {
                match a {
                    RuleAttr::Chain(c) => chain = ChainName::parse(c),
                    RuleAttr::Expressions(e) => exprs = e,
                    _ => {}
                }
            }
            let Some(chain) = chain.and_then(|c| observed.table.chains.get_mut(&c)) else {
                continue;
            };
            let rule = index
                .get(&canonical(exprs))
                .copied()
                .unwrap_or(Rule::Foreign);
            chain.rules.push(rule);
        }
        Ok(observed)
    }
}

fn set_attrs(encoder: &mut Encoder, set: SetName) -> Vec<SetAttr> {
    match encoder.add_set(set).object {
        NftObject::Set(attrs) => attrs,
        _ => Vec::new(),
    }
}

/// What must match for a set to be ours as declared: flags, key type and length, data type,
/// timeout and `nft`'s user data (data lengths differ: the kernel reports 16 for verdicts).
fn declared(attrs: &[SetAttr]) -> Vec<String> {
    let mut out: Vec<String> = attrs
        .iter()
        .filter(|a| {
            matches!(
                a,
                SetAttr::Flags(_)
                    | SetAttr::KeyType(_)
                    | SetAttr::KeyLen(_)
                    | SetAttr::DataType(_)
                    | SetAttr::Timeout(_)
                    | SetAttr::Userdata(_)
            )
        })
        .map(|a| format!("{a:?}"))
        .collect();
    // The kernel leaves out flags of 0.
    out.retain(|a| a != "Flags(SetFlags(0))");
    out.sort();
    out
}

fn chain_hook(attrs: &[ChainAttr]) -> Option<Hook> {
    let mut hooknum = None;
    let mut priority = None;
    let mut chain_type = None;
    for a in attrs {
        match a {
            ChainAttr::Hook(h) => {
                for x in h {
                    match x {
                        HookAttr::Hooknum(n) => hooknum = Some(NlHook::from(*n)),
                        HookAttr::Priority(p) => priority = Some(*p),
                        _ => {}
                    }
                }
            }
            ChainAttr::Type(t) => {
                chain_type = match t.as_str() {
                    "filter" => Some(ChainType::Filter),
                    "nat" => Some(ChainType::Nat),
                    _ => None,
                }
            }
            _ => {}
        }
    }
    let hook = match hooknum? {
        NlHook::Prerouting => HookPoint::Prerouting,
        NlHook::Input => HookPoint::Input,
        NlHook::Forward => HookPoint::Forward,
        NlHook::Output => HookPoint::Output,
        NlHook::Postrouting => HookPoint::Postrouting,
        // A hook we never use: it cannot equal ours, so it reads as "some other hook".
        _ => HookPoint::Prerouting,
    };
    Some(Hook {
        chain_type: chain_type.unwrap_or(ChainType::Filter),
        hook,
        priority: priority?,
    })
}

// --- elements ---

/// Reads `n` bytes of an address of `family` at `bytes[at..]`.
fn addr_at(family: Family, bytes: &[u8], at: usize) -> Option<IpAddr> {
    match family {
        Family::V4 => {
            let b: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
            Some(IpAddr::from(b))
        }
        Family::V6 => {
            let b: [u8; 16] = bytes.get(at..at + 16)?.try_into().ok()?;
            Some(IpAddr::from(b))
        }
    }
}

fn proto_of(n: u8) -> Option<Protocol> {
    Protocol::ALL.into_iter().find(|p| proto_number(*p) == n)
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn u32_ne_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn addr_len(family: Family) -> usize {
    match family {
        Family::V4 => 4,
        Family::V6 => 16,
    }
}

/// `addr . proto . port` at the start of a key.
fn dest(family: Family, k: &[u8]) -> Option<(IpAddr, Protocol, u16, usize)> {
    let a = addr_len(family);
    Some((
        addr_at(family, k, 0)?,
        proto_of(*k.get(a)?)?,
        u16_at(k, a + 4)?,
        a + 8,
    ))
}

/// The smallest network from `first` to `last` if it is exactly one.
fn net_of(first: IpAddr, last: IpAddr) -> Option<IpNet> {
    let (f, l, bits) = match (first, last) {
        (IpAddr::V4(f), IpAddr::V4(l)) => (u128::from(u32::from(f)), u128::from(u32::from(l)), 32),
        (IpAddr::V6(f), IpAddr::V6(l)) => (u128::from(f), u128::from(l), 128),
        _ => return None,
    };
    let size = l.checked_sub(f)?.checked_add(1);
    let host_bits = match size {
        Some(s) if s.is_power_of_two() => s.trailing_zeros(),
        None if f == 0 && bits == 128 => 128,
        _ => return None,
    };
    let prefix = u8::try_from(bits - host_bits).ok()?;
    let net = IpNet::new(first, prefix).ok()?;
    (net.network() == first).then_some(net)
}

fn prev_addr(a: IpAddr) -> Option<IpAddr> {
    match a {
        IpAddr::V4(a) => u32::from(a).checked_sub(1).map(|n| IpAddr::V4(n.into())),
        IpAddr::V6(a) => u128::from(a).checked_sub(1).map(|n| IpAddr::V6(n.into())),
    }
}

fn last_addr(family: Family) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(u32::MAX.into()),
        Family::V6 => IpAddr::V6(u128::MAX.into()),
    }
}

fn decode_value(set: SetName, attrs: &[SetElemAttr]) -> Value {
    let Some(data) = attrs.iter().find_map(|a| match a {
        SetElemAttr::Data(d) => Some(d),
        _ => None,
    }) else {
        return Value::None;
    };
    if let Some(v) = verdict_of(data) {
        let chain = |c: &str| ChainName::parse(c);
        return match v {
            NlVerdict::Drop => Value::Verdict(Verdict::Drop),
            NlVerdict::Goto(c) => {
                chain(&c).map_or(Value::None, |c| Value::Verdict(Verdict::Goto(c)))
            }
            NlVerdict::Jump(c) => {
                chain(&c).map_or(Value::None, |c| Value::Verdict(Verdict::Jump(c)))
            }
            _ => Value::None,
        };
    }
    let family = set.family();
    value_of(data)
        .and_then(|d| {
            let addr = addr_at(family, d, 0)?;
            let port = u16_at(d, addr_len(family))?;
            Some(Value::Endpoint(SocketAddr::new(addr, port)))
        })
        .unwrap_or(Value::None)
}

fn key_bytes(attrs: &[SetElemAttr], end: bool) -> Option<&[u8]> {
    attrs.iter().find_map(|a| match a {
        SetElemAttr::Key(k) if !end => value_of(k),
        SetElemAttr::KeyEnd(k) if end => value_of(k),
        _ => None,
    })
}

/// The elements of `set` as the kernel dumped them, decoded; those that do not decode are
/// left out (the planner then adds ours; a foreign element stays until cleanup).
pub fn decode_elements(set: SetName, elements: &[Vec<SetElemAttr>]) -> BTreeMap<Key, Value> {
    let family = set.family();
    let mut out = BTreeMap::new();
    if matches!(set, SetName::ClusterCidrs(_)) {
        // Interval set: starts, and interval ends after each range's last address.
        let mut bounds: Vec<(IpAddr, bool)> = elements
            .iter()
            .filter_map(|el| {
                let end = el
                    .iter()
                    .any(|a| matches!(a, SetElemAttr::Flags(f) if f & ELEM_INTERVAL_END != 0));
                Some((addr_at(family, key_bytes(el, false)?, 0)?, end))
            })
            .collect();
        bounds.sort();
        let mut i = 0;
        while i < bounds.len() {
            let (start, is_end) = bounds[i];
            if is_end {
                i += 1;
                continue;
            }
            let last = match bounds.get(i + 1) {
                Some((next, true)) => prev_addr(*next),
                _ => Some(last_addr(family)),
            };
            if let Some(net) = last.and_then(|l| net_of(start, l)) {
                out.insert(Key::Net(net), Value::None);
            }
            i += 1;
        }
        return out;
    }
    let mut decoded = Vec::with_capacity(elements.len());
    for el in elements {
        let Some(k) = key_bytes(el, false) else {
            continue;
        };
        let key = match set {
            SetName::ClusterIps(_) | SetName::NodePortIps(_) | SetName::NodeIps(_) => {
                addr_at(family, k, 0).map(Key::Addr)
            }
            SetName::ServiceIps(_)
            | SetName::NoEndpointServices(_)
            | SetName::AffinityServices(_)
            | SetName::FirewallIps(_) => {
                dest(family, k).map(|(addr, proto, port, _)| Key::Dest { addr, proto, port })
            }
            SetName::ServiceNodePorts(_)
            | SetName::NoEndpointNodePorts(_)
            | SetName::AffinityNodePorts(_) => (|| {
                Some(Key::Port {
                    proto: proto_of(*k.first()?)?,
                    port: u16_at(k, 4)?,
                })
            })(),
            SetName::Endpoints(_) => dest(family, k).and_then(|(addr, proto, port, at)| {
                Some(Key::Slot {
                    addr,
                    proto,
                    port,
                    slot: u32_ne_at(k, at)?,
                })
            }),
            SetName::NodePortEndpoints(_) => (|| {
                Some(Key::PortSlot {
                    proto: proto_of(*k.first()?)?,
                    port: u16_at(k, 4)?,
                    slot: u32_ne_at(k, 8)?,
                })
            })(),
            SetName::Hairpin(_) => (|| {
                Some(Key::Pair(
                    addr_at(family, k, 0)?,
                    addr_at(family, k, addr_len(family))?,
                ))
            })(),
            SetName::FirewallAllow(_) => (|| {
                let (addr, proto, port, at) = dest(family, k)?;
                let first = addr_at(family, k, at)?;
                let last = addr_at(family, key_bytes(el, true)?, at)?;
                Some(Key::DestSource {
                    addr,
                    proto,
                    port,
                    source: net_of(first, last)?,
                })
            })(),
            SetName::ClusterCidrs(_) | SetName::Affinity(_) => None,
        };
        let Some(key) = key else {
            continue;
        };
        let value = decode_value(set, el);
        // Round trip: what we would send for it must be what the kernel holds, else it is
        // not an element of ours (e.g. a key with bytes in our padding).
        let ours = element_attrs(key, &value);
        if ours.len() == 1 && key_bytes(&ours[0], false) == Some(k) {
            decoded.push((key, value));
        }
    }
    // The kernel dumps in hash order: `from_iter` sorts the vector once and builds the map in
    // bulk, rather than 100,000 inserts each descending the tree to a random place.
    decoded.into_iter().collect()
}
