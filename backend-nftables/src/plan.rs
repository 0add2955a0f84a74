//! Planning, pure: the desired table ([`desired()`]) and the difference from the observed one
//! ([`plan()`]), as a list of [`Change`]s the apply step sends in one transaction.
//!
//! # The layout (issue #13): global maps, no per-service chain or set
//!
//! ```text
//! prerouting  filter-prerouting-pre-dnat (dstnat-10)  ct state new → firewall-check
//!             nat-prerouting (dstnat)                 → services
//! output      filter-output-pre-dnat (-110)           ct state new → firewall-check
//!             nat-output (-100)                       → services
//! input       filter-input (filter)                   ct state new → nodeport-endpoints-check,
//!                                                                    service-endpoints-check
//! forward     filter-forward (filter)                 ct state new → service-endpoints-check
//! output      filter-output (filter)                  ct state new → service-endpoints-check
//! postrouting nat-postrouting (srcnat)                hairpin → mark; → masquerading
//!
//! services:  [ip daddr @cluster-ips ip saddr != @cluster-cidrs → mark-for-masquerade]
//!            ip daddr . l4proto . dport vmap @service-ips        (cluster, external, LB IPs)
//!            fib daddr local, not loopback: l4proto . dport vmap @service-nodeports
//! service-k: dnat to daddr . l4proto . dport . numgen random mod k map @endpoints
//! ```
//!
//! A service port costs one dispatch element per address plus one endpoints element per slot;
//! the chains are shared by every port of the same endpoint count. The choices, each forced
//! by the global shape:
//!
//! - **Balancing.** `service-k` DNATs through the `endpoints` map keyed `vip . proto . port .
//!   slot`: one chain per distinct slot count `k`, created the first time a count is used and
//!   deleted with its last user. Weights repeat an endpoint over slots ([`desired::slots`]).
//!   A change of a port's count rewrites its slots and re-points its dispatch element in the
//!   same transaction. `numgen` inside a concatenation needs `typeof` for the map's key (nft
//!   rejects `integer` in a `type` concatenation; tried with nft 1.0.6).
//! - **Node ports.** Their destination is a node address, not a VIP: they have their own
//!   `service-nodeports` verdict map keyed `proto . port`, their own `nodeport-endpoints` map
//!   keyed `proto . port . slot`, and their own balancing chains (`nodeport-k`). The local
//!   address check is `fib daddr type local` minus loopback, or `@nodeport-ips` with
//!   `--nodeport-addresses`.
//! - **Masquerade.** kube-proxy's mark (`mark-for-masquerade`) and `masquerading` in
//!   postrouting. Cluster IPs: one global rule for sources outside `@cluster-cidrs` (or every
//!   source with `masquerade_all`). External addresses of a `Cluster` policy go through
//!   `external-k` / `nodeport-external-k` (mark, then balance).
//! - **Traffic policy `Local`, short-circuit.** The local endpoints take slots `0..k`; the
//!   cluster-wide endpoints (for pods and the node itself) take slots from
//!   [`SHORT_CIRCUIT_SLOT`](crate::model::SHORT_CIRCUIT_SLOT) in the same map. The dispatch
//!   element leads to `external-local-k-j` (`nodeport-local-k-j`): pods (`@cluster-cidrs`) and
//!   the node (`fib saddr type local`, masqueraded) go to `short-circuit-j`, everyone else to
//!   `service-k`; with no local endpoint (`k` = 0) the rest falls through un-DNATed and the
//!   filter chains drop it (`no-endpoint-*` holds `drop` for the address).
//! - **No endpoints.** `no-endpoint-services` / `no-endpoint-nodeports` verdict maps read in
//!   the filter hooks (input, forward, output) after DNAT, as kube-proxy does: a reject is not
//!   allowed in prerouting on kernels before 5.9; a DNATed packet no longer matches its
//!   service address, so only traffic that was not balanced is refused (`goto reject-chain`)
//!   or dropped.
//! - **Hairpin.** After DNAT a pod reaching itself has source = destination: postrouting
//!   `ct status dnat ip saddr . ip daddr @hairpin` marks it, the set holding one `E . E` pair
//!   per reachable endpoint address (shared between ports, reference-counted).
//! - **Source ranges.** `firewall-check` (filter, dstnat-10, before DNAT) drops traffic to an
//!   address in `@firewall-ips` whose `addr . proto . port . saddr` is not in the interval set
//!   `@firewall-allow`; the load-balancer IP itself is admitted when a range holds a node
//!   address (kube-proxy's `allowFromNode`). Node ports are not subject to source ranges, as in
//!   kube-proxy.
//! - **Session affinity.** One dynamic map per family, `affinity`: `client . addr . proto .
//!   port : endpoint addr . endpoint port`, with a timeout per element. Every balancing chain
//!   first tries `dnat to saddr . daddr . l4proto . dport map @affinity` (no element: the rule
//!   does nothing, balancing follows). The element is written *after* DNAT, in the filter
//!   chains, where the chosen endpoint is the packet's destination and the service address
//!   and port are the connection's original ones: `ct original ip daddr . meta l4proto . ct
//!   original proto-dst vmap @affinity-services` leads a new connection of an affinity port
//!   to `affinity-<timeout>` (IPv6: `affinity-v6-<timeout>`), one shared chain per distinct
//!   timeout and family, which does `update
//!   @affinity { ... timeout <t> : ip daddr . th dport }` (`update` refreshes the timeout on
//!   each new connection, as `-m recent --set` does). Node ports use `affinity-nodeports`,
//!   keyed `proto . port`, for connections whose original destination is in `node-ips` (the
//!   node's addresses). Why not record before DNAT: nft 1.0.6 cannot write an element whose
//!   data is a map lookup (`update @m { k : ... map @endpoints }` is a syntax error), and `ct
//!   original proto-dst` needs a protocol (`meta l4proto { tcp, udp, sctp }`) to have a type in
//!   a concatenation (both tried on this host). An endpoint an affinity port stops using is
//!   purged from the map ([`Change::PurgeAffinity`]). Unlike kube-proxy, stickiness is per
//!   (client, service address) rather than per (client, service port): a client reaching a
//!   port through two addresses may get two endpoints. A node port's affinity element is
//!   keyed by `proto . port` alone, so a cluster IP with the same port number also records
//!   stickiness (always to the endpoint its own balancing chose).
//!
//! # Partial syncs
//!
//! [`DesiredTable::update`] follows a [`ChangeSet`] port by port, and [`plan()`] given the
//! change set compares only the keys and chains of the changed ports: the cost follows the
//! change (element adds and deletes, plus a chain only when a new count appears).

pub mod desired;
pub mod layout;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::SocketAddr;

use proxy_core::diff::ChangeSet;
use proxy_core::select::select_endpoints;
use proxy_core::table::ServicePort;

pub use desired::{desired, DesiredTable, PortObjects};

use crate::model::{Chain, Family, Hook, Key, Rule, Set, Table, Value};
use crate::names::{ChainName, SetName};
use crate::render::type_line;

/// One step of a transaction. The order of a plan is the order to send: tables, sets,
/// chains, rules, element deletes then adds, then chain and set deletes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// `add table inet <name>`.
    AddTable,
    /// Declares a set or map (empty).
    AddSet(SetName),
    /// Declares a chain (empty), with its hook if it is a base chain.
    AddChain(ChainName, Option<Hook>),
    /// Removes every rule of a chain (before rewriting it or deleting it).
    FlushChain(ChainName),
    /// Appends a rule.
    AddRule(ChainName, Rule),
    /// Deletes one element.
    DeleteElement(SetName, Key),
    /// Adds one element.
    AddElement(SetName, Key, Value),
    /// Deletes every element of the affinity map whose endpoint is this one: an endpoint an
    /// affinity port no longer uses (removed, or the port lost its affinity) must not keep its
    /// clients. The datapath writes these elements, so the apply step lists the map and deletes
    /// the matching ones (kube-proxy deletes the endpoint's own affinity set instead).
    PurgeAffinity(Family, SocketAddr),
    /// Deletes a (flushed, unreferenced) chain.
    DeleteChain(ChainName),
    /// Deletes a set or map.
    DeleteSet(SetName),
}

/// What a change is about, for ordering changes within a phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum ChangeObject {
    Chain(ChainName),
    Element(SetName, Key),
}

impl Change {
    fn phase(&self) -> u8 {
        match self {
            Change::AddTable => 0,
            Change::AddSet(_) => 1,
            Change::AddChain(..) => 2,
            Change::FlushChain(_) => 3,
            Change::AddRule(..) => 4,
            Change::DeleteElement(..) => 5,
            Change::AddElement(..) => 6,
            Change::PurgeAffinity(..) => 7,
            Change::DeleteChain(_) => 8,
            Change::DeleteSet(_) => 9,
        }
    }

    /// What the change is about, for ordering: its chain, or its set and key.
    fn object(&self) -> Option<ChangeObject> {
        match self {
            Change::AddChain(c, _)
            | Change::FlushChain(c)
            | Change::AddRule(c, _)
            | Change::DeleteChain(c) => Some(ChangeObject::Chain(*c)),
            Change::AddElement(s, k, _) | Change::DeleteElement(s, k) => {
                Some(ChangeObject::Element(*s, *k))
            }
            _ => None,
        }
    }

    /// Whether the change is an element add or delete.
    pub fn is_element(&self) -> bool {
        matches!(self, Change::AddElement(..) | Change::DeleteElement(..))
    }
}

/// The changes that turn `observed` (`None`: no table) into `desired`.
///
/// With `changes`, a partial plan: only the elements and shared chains of the service ports
/// in the change set are compared (the fixed chains and sets are assumed in place, as after
/// a successful full sync), so the cost follows the change; `desired` must have been planned
/// with the configuration and node addresses the observed table was (a change of either is a
/// full sync of a new [`desired()`]). Without, a full plan: the whole tables are compared and
/// only the difference is written. Either way the changes come in one order: by phase (see
/// [`Change`]), then by chain or element.
pub fn plan(
    desired: &DesiredTable,
    observed: Option<&Table>,
    changes: Option<&ChangeSet>,
) -> Vec<Change> {
    let empty = Table::new(desired.table.name.clone());
    let mut out = Vec::new();
    let observed = match observed {
        Some(t) => t,
        None => {
            out.push(Change::AddTable);
            &empty
        }
    };
    match changes {
        None => plan_full(&desired.table, observed, &mut out),
        Some(changes) => plan_partial(desired, observed, changes, &mut out),
    }
    // One order whatever the path: by phase, then by chain or element (stable, so a chain's
    // rules keep their order).
    out.sort_by(|a, b| {
        a.phase()
            .cmp(&b.phase())
            .then_with(|| match (a.object(), b.object()) {
                (Some(x), Some(y)) => x.cmp(&y),
                _ => std::cmp::Ordering::Equal,
            })
    });
    out
}

fn plan_full(desired: &Table, observed: &Table, out: &mut Vec<Change>) {
    for (name, set) in &desired.sets {
        let empty = Set::new(*name);
        let have = match observed.sets.get(name) {
            Some(have) => have,
            None => {
                out.push(Change::AddSet(*name));
                &empty
            }
        };
        diff_elements(*name, set, have, out);
    }
    for name in observed.sets.keys() {
        if !desired.sets.contains_key(name) {
            out.push(Change::DeleteSet(*name));
        }
    }
    for (name, chain) in &desired.chains {
        diff_chain(chain, observed.chains.get(name), out);
    }
    for name in observed.chains.keys() {
        if !desired.chains.contains_key(name) {
            out.push(Change::FlushChain(*name));
            out.push(Change::DeleteChain(*name));
        }
    }
}

/// Both maps are walked once, side by side in key order (a merge), rather than each element
/// looked up in the other: at 10,000 service ports a restart compares 200,000 elements, and
/// lookups were most of the planner's time.
fn diff_elements(name: SetName, want: &Set, have: &Set, out: &mut Vec<Change>) {
    use std::cmp::Ordering;
    let mut wants = want.elements.iter().peekable();
    let mut haves = have.elements.iter().peekable();
    // Deletions of keys we do not want are pushed after the additions, as before the merge:
    // a transaction's order is the planner's contract with the golden files.
    let mut unwanted = Vec::new();
    loop {
        match (wants.peek(), haves.peek()) {
            (Some((wk, wv)), Some((hk, hv))) => match wk.cmp(hk) {
                Ordering::Less => {
                    out.push(Change::AddElement(name, **wk, **wv));
                    wants.next();
                }
                Ordering::Greater => {
                    unwanted.push(Change::DeleteElement(name, **hk));
                    haves.next();
                }
                Ordering::Equal => {
                    if wv != hv {
                        out.push(Change::DeleteElement(name, **wk));
                        out.push(Change::AddElement(name, **wk, **wv));
                    }
                    wants.next();
                    haves.next();
                }
            },
            (Some((wk, wv)), None) => {
                out.push(Change::AddElement(name, **wk, **wv));
                wants.next();
            }
            (None, Some((hk, _))) => {
                unwanted.push(Change::DeleteElement(name, **hk));
                haves.next();
            }
            (None, None) => break,
        }
    }
    out.extend(unwanted);
}

fn diff_chain(want: &Chain, have: Option<&Chain>, out: &mut Vec<Change>) {
    match have {
        None => {
            out.push(Change::AddChain(want.name, want.hook));
        }
        // A chain's hook follows from its name, so an observed chain of ours with another hook
        // was changed by someone else; a chain cannot be re-hooked in place and a transaction
        // adds before it deletes, so its rules are rewritten here and the hook is left to the
        // dataplane's repair (delete the table, then a full sync).
        Some(have) if have.rules == want.rules => return,
        Some(_) => out.push(Change::FlushChain(want.name)),
    }
    out.extend(want.rules.iter().map(|r| Change::AddRule(want.name, *r)));
}

fn plan_partial(
    desired: &DesiredTable,
    observed: &Table,
    changes: &ChangeSet,
    out: &mut Vec<Change>,
) {
    let mut keys: BTreeSet<(SetName, Key)> = BTreeSet::new();
    let mut chains: BTreeSet<ChainName> = BTreeSet::new();
    let ports: Vec<&ServicePort> = changes
        .removed
        .iter()
        .chain(&changes.added)
        .map(|p| p.as_ref())
        .chain(
            changes
                .changed
                .iter()
                .flat_map(|c| [c.previous.as_ref(), c.current.as_ref()]),
        )
        .collect();
    for port in ports {
        let objects = desired.port_objects(port);
        keys.extend(objects.elements.iter().map(|(s, k, _)| (*s, *k)));
        keys.extend(objects.shared.iter().copied());
        chains.extend(objects.chains);
    }
    out.extend(
        stale_affinity(changes)
            .into_iter()
            .map(|(family, ep)| Change::PurgeAffinity(family, ep)),
    );
    for (set, key) in keys {
        let want = desired
            .table
            .sets
            .get(&set)
            .and_then(|s| s.elements.get(&key));
        let have = observed.sets.get(&set).and_then(|s| s.elements.get(&key));
        match (want, have) {
            (Some(w), Some(h)) if w == h => {}
            (Some(w), Some(_)) => {
                out.push(Change::DeleteElement(set, key));
                out.push(Change::AddElement(set, key, *w));
            }
            (Some(w), None) => out.push(Change::AddElement(set, key, *w)),
            (None, Some(_)) => out.push(Change::DeleteElement(set, key)),
            (None, None) => {}
        }
    }
    for name in chains {
        match (desired.table.chains.get(&name), observed.chains.get(&name)) {
            (Some(want), have) => diff_chain(want, have, out),
            (None, Some(_)) => {
                out.push(Change::FlushChain(name));
                out.push(Change::DeleteChain(name));
            }
            (None, None) => {}
        }
    }
}

/// The endpoints whose affinity elements must go: those an affinity port of `changes` used
/// and no longer uses with affinity.
fn stale_affinity(changes: &ChangeSet) -> BTreeSet<(Family, SocketAddr)> {
    fn sticky(port: &ServicePort) -> BTreeSet<(Family, SocketAddr)> {
        if port.session_affinity.timeout().is_none() {
            return BTreeSet::new();
        }
        select_endpoints(port)
            .all_reachable
            .iter()
            .map(|ep| (Family::of(ep.addr), SocketAddr::new(ep.addr, ep.port)))
            .collect()
    }
    let mut stale = BTreeSet::new();
    for port in &changes.removed {
        stale.extend(sticky(port));
    }
    for change in &changes.changed {
        let now = sticky(&change.current);
        stale.extend(sticky(&change.previous).difference(&now).copied());
    }
    stale
}

/// Applies `changes` to `table` in memory: what the kernel holds after the transaction (the
/// fakes and the property tests use it).
pub fn apply_changes(table: &mut Table, changes: &[Change]) {
    for change in changes {
        match change {
            Change::AddTable => {}
            Change::AddSet(name) => {
                table.sets.entry(*name).or_insert_with(|| Set::new(*name));
            }
            Change::AddChain(name, hook) => {
                table.chains.entry(*name).or_insert_with(|| Chain {
                    name: *name,
                    hook: *hook,
                    rules: Vec::new(),
                });
            }
            Change::FlushChain(name) => {
                if let Some(c) = table.chains.get_mut(name) {
                    c.rules.clear();
                }
            }
            Change::AddRule(name, rule) => {
                if let Some(c) = table.chains.get_mut(name) {
                    c.rules.push(*rule);
                }
            }
            Change::DeleteElement(set, key) => {
                if let Some(s) = table.sets.get_mut(set) {
                    s.elements.remove(key);
                }
            }
            Change::AddElement(set, key, value) => {
                if let Some(s) = table.sets.get_mut(set) {
                    s.elements.insert(*key, *value);
                }
            }
            Change::PurgeAffinity(..) => {}
            Change::DeleteChain(name) => {
                table.chains.remove(name);
            }
            Change::DeleteSet(name) => {
                table.sets.remove(name);
            }
        }
    }
}

/// The changes as an `nft -f` script, for dry runs and tests: one command a line, the element
/// adds (deletes) of consecutive changes to one set grouped in one command, as the apply step
/// sends them in one message (the kernel lists an interval concatenation such as
/// `firewall-allow` in the order of its insertion batches).
pub fn render_changes(table: &str, changes: &[Change]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < changes.len() {
        let group = match &changes[i] {
            Change::AddElement(set, ..) | Change::DeleteElement(set, _) => {
                let same = |c: &Change| match (c, &changes[i]) {
                    (Change::AddElement(s, ..), Change::AddElement(..))
                    | (Change::DeleteElement(s, _), Change::DeleteElement(..)) => s == set,
                    _ => false,
                };
                changes[i..].iter().take_while(|c| same(c)).count()
            }
            _ => 0,
        };
        if group > 0 {
            render_elements(&mut out, table, &changes[i..i + group]);
            i += group;
        } else {
            render_change(&mut out, table, &changes[i]);
            i += 1;
        }
    }
    out
}

/// One `add element` or `delete element` command for a run of changes to one set.
fn render_elements(out: &mut String, table: &str, changes: &[Change]) {
    let mut verb = "add";
    let mut name = None;
    let items: Vec<String> = changes
        .iter()
        .filter_map(|c| match c {
            Change::AddElement(set, key, Value::None) => {
                name = Some(*set);
                Some(key.to_string())
            }
            Change::AddElement(set, key, value) => {
                name = Some(*set);
                Some(format!("{key} : {value}"))
            }
            Change::DeleteElement(set, key) => {
                verb = "delete";
                name = Some(*set);
                Some(key.to_string())
            }
            _ => None,
        })
        .collect();
    if let Some(set) = name {
        let _ = writeln!(
            out,
            "{verb} element inet {table} {set} {{ {} }}",
            items.join(", ")
        );
    }
}

fn render_change(out: &mut String, table: &str, change: &Change) {
    let _ = match change {
        Change::AddTable => writeln!(out, "add table inet {table}"),
        Change::AddSet(name) => {
            let spec = name.spec();
            let kind = if spec.is_map { "map" } else { "set" };
            let mut decl = type_line(*name);
            let mut flags = Vec::new();
            if spec.interval {
                flags.push("interval");
            }
            if spec.dynamic {
                flags.push("dynamic");
                flags.push("timeout");
            }
            if !flags.is_empty() {
                let _ = write!(decl, "; flags {}", flags.join(","));
            }
            if let Some(t) = spec.timeout {
                let _ = write!(decl, "; timeout {}s", t.as_secs());
            }
            if let Some(size) = spec.size {
                let _ = write!(decl, "; size {size}");
            }
            writeln!(out, "add {kind} inet {table} {name} {{ {decl}; }}")
        }
        Change::AddChain(name, None) => writeln!(out, "add chain inet {table} {name}"),
        Change::AddChain(name, Some(hook)) => {
            writeln!(out, "add chain inet {table} {name} {{ {hook} }}")
        }
        Change::FlushChain(name) => writeln!(out, "flush chain inet {table} {name}"),
        Change::AddRule(name, rule) => writeln!(out, "add rule inet {table} {name} {rule}"),
        Change::DeleteElement(..) | Change::AddElement(..) => {
            render_elements(out, table, std::slice::from_ref(change));
            Ok(())
        }
        Change::PurgeAffinity(family, ep) => writeln!(
            out,
            "# purge @{} elements leading to {} . {} (listed and deleted by apply)",
            SetName::Affinity(*family),
            ep.ip(),
            ep.port()
        ),
        Change::DeleteChain(name) => writeln!(out, "delete chain inet {table} {name}"),
        Change::DeleteSet(name) => {
            let kind = if name.spec().is_map { "map" } else { "set" };
            writeln!(out, "delete {kind} inet {table} {name}")
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Family, Key, Set, Value};
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};

    fn key(last: u8) -> Key {
        Key::Addr(IpAddr::V4(Ipv4Addr::new(198, 18, 0, last)))
    }

    fn endpoint(port: u16) -> Value {
        Value::Endpoint(SocketAddr::from((Ipv4Addr::new(198, 18, 1, 1), port)))
    }

    fn set(elements: &[(u8, u16)]) -> Set {
        let mut set = Set::new(SetName::ClusterIps(Family::V4));
        set.elements = elements
            .iter()
            .map(|&(k, port)| (key(k), endpoint(port)))
            .collect();
        set
    }

    #[test]
    fn element_diff_adds_and_replaces_in_key_order_then_deletes() {
        let name = SetName::ClusterIps(Family::V4);
        let want = set(&[(1, 1), (2, 2), (4, 4), (6, 6)]);
        let have = set(&[(0, 9), (2, 3), (3, 9), (6, 6), (7, 9)]);
        let mut out = Vec::new();
        diff_elements(name, &want, &have, &mut out);
        assert_eq!(
            out,
            vec![
                Change::AddElement(name, key(1), endpoint(1)),
                Change::DeleteElement(name, key(2)),
                Change::AddElement(name, key(2), endpoint(2)),
                Change::AddElement(name, key(4), endpoint(4)),
                Change::DeleteElement(name, key(0)),
                Change::DeleteElement(name, key(3)),
                Change::DeleteElement(name, key(7)),
            ]
        );
        let mut none = Vec::new();
        diff_elements(name, &want, &want, &mut none);
        assert!(none.is_empty(), "{none:?}");
    }
}
