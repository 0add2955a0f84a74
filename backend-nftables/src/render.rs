//! The table in `nft` syntax, exactly as `nft list table inet <name>` (nft 1.0.6) prints it,
//! so a dry run can be loaded with `nft -f` and the listing of what was loaded compared byte
//! for byte (`tests/nft_load.rs`).
//!
//! What `nft list` does and the renderer copies (nftables `src/rule.c`, `src/expression.c`,
//! `src/mergesort.c`):
//! - sets and maps first, then chains, each in creation order (ours: name order), one blank
//!   line between objects, one tab of indent per level;
//! - elements sorted: a single-field key by value; a concatenation by its bytes read as one
//!   host-endian (little-endian) number, i.e. from the *last* byte (`concat_expr_msort_value`);
//!   interval concatenations (`firewall-allow`) are not sorted (kernel order = insertion order);
//! - elements wrapped per line by key type (`calculate_delim`): two IPv4 addresses, else one
//!   (concatenations, IPv6), continuation lines indented `\t\t\t     `;
//! - a full-length prefix in an interval set prints as the bare address.

use std::fmt::{self, Write as _};
use std::net::IpAddr;

use ipnet::IpNet;

use crate::model::{
    Chain, ChainType, DnatMap, Family, Hook, HookPoint, Key, NodePortScope, Rule, Set, Table,
    Value, Verdict,
};
use crate::names::{ChainName, SetName};

/// The table as `nft list table inet <name>` prints it.
pub fn render_table(table: &Table) -> String {
    let mut blocks: Vec<String> = Vec::new();
    blocks.extend(table.sets.values().map(render_set));
    blocks.extend(table.chains.values().map(render_chain));
    let mut out = format!("table inet {} {{\n", table.name);
    out.push_str(&blocks.join("\n"));
    out.push_str("}\n");
    out
}

fn render_set(set: &Set) -> String {
    let spec = set.name.spec();
    let mut out = String::new();
    let kind = if spec.is_map { "map" } else { "set" };
    let _ = writeln!(out, "\t{kind} {} {{", set.name);
    let _ = writeln!(out, "\t\t{}", type_line(set.name));
    if let Some(size) = spec.size {
        let _ = writeln!(out, "\t\tsize {size}");
    }
    let mut flags = Vec::new();
    if spec.interval {
        flags.push("interval");
    }
    if spec.dynamic {
        flags.push("dynamic");
        flags.push("timeout");
    }
    if !flags.is_empty() {
        let _ = writeln!(out, "\t\tflags {}", flags.join(","));
    }
    if let Some(timeout) = spec.timeout {
        let _ = writeln!(out, "\t\ttimeout {}", render_duration(timeout.as_secs()));
    }
    if !set.elements.is_empty() {
        out.push_str("\t\telements = { ");
        let per_line = per_line(set.name);
        let elements = sorted_elements(set);
        for (i, (key, value)) in elements.iter().enumerate() {
            if i > 0 {
                if i % per_line == 0 {
                    out.push_str(",\n\t\t\t     ");
                } else {
                    out.push_str(", ");
                }
            }
            let _ = write!(out, "{key}");
            match value {
                Value::None => {}
                other => {
                    let _ = write!(out, " : {other}");
                }
            }
        }
        out.push_str(" }\n");
    }
    out.push_str("\t}\n");
    out
}

/// The declaration line of a set: `type ...` or `typeof ...`.
pub fn type_line(name: SetName) -> String {
    let f = name.family();
    let a = f.addr_type();
    let kw = f.keyword();
    match name {
        SetName::ClusterCidrs(_)
        | SetName::ClusterIps(_)
        | SetName::NodePortIps(_)
        | SetName::NodeIps(_) => format!("type {a}"),
        SetName::ServiceIps(_) | SetName::NoEndpointServices(_) => {
            format!("type {a} . inet_proto . inet_service : verdict")
        }
        SetName::AffinityServices(_) => {
            format!("type {a} . inet_proto . inet_service : verdict")
        }
        SetName::AffinityNodePorts(_) => "type inet_proto . inet_service : verdict".to_string(),
        SetName::ServiceNodePorts(_) | SetName::NoEndpointNodePorts(_) => {
            "type inet_proto . inet_service : verdict".to_string()
        }
        SetName::FirewallIps(_) => format!("type {a} . inet_proto . inet_service"),
        SetName::FirewallAllow(_) => format!("type {a} . inet_proto . inet_service . {a}"),
        SetName::Endpoints(_) => format!(
            "typeof {kw} daddr . meta l4proto . th dport . numgen random mod 1 : {kw} daddr . th dport"
        ),
        SetName::NodePortEndpoints(_) => format!(
            "typeof meta l4proto . th dport . numgen random mod 1 : {kw} daddr . th dport"
        ),
        SetName::Hairpin(_) => format!("type {a} . {a}"),
        SetName::Affinity(_) => format!(
            "type {a} . {a} . inet_proto . inet_service : {a} . inet_service"
        ),
    }
}

/// Elements per line in nft's listing (`calculate_delim`): IPv4 addresses two, others one.
fn per_line(name: SetName) -> usize {
    match name {
        SetName::ClusterCidrs(Family::V4)
        | SetName::ClusterIps(Family::V4)
        | SetName::NodePortIps(Family::V4)
        | SetName::NodeIps(Family::V4) => 2,
        _ => 1,
    }
}

/// The elements in the order nft lists them.
fn sorted_elements(set: &Set) -> Vec<(Key, Value)> {
    let mut elements: Vec<(Key, Value)> = set.elements.iter().map(|(k, v)| (*k, *v)).collect();
    if matches!(set.name, SetName::FirewallAllow(_)) {
        return elements;
    }
    elements.sort_by_cached_key(|(key, _)| sort_bytes(key));
    elements
}

fn addr_bytes(addr: IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn proto_byte(proto: proxy_core::Protocol) -> u8 {
    match proto {
        proxy_core::Protocol::Tcp => 6,
        proxy_core::Protocol::Udp => 17,
        proxy_core::Protocol::Sctp => 132,
    }
}

/// nft's sort key: a single value by its (big-endian) value; a concatenation by its field bytes
/// (each in its own byte order: addresses and ports big-endian, `numgen` host order) read as a
/// little-endian number, i.e. compared from the last byte.
fn sort_bytes(key: &Key) -> Vec<u8> {
    let concat = |parts: Vec<Vec<u8>>| {
        let mut bytes: Vec<u8> = parts.concat();
        bytes.reverse();
        bytes
    };
    match *key {
        Key::Addr(a) => addr_bytes(a),
        Key::Net(n) => addr_bytes(n.network()),
        Key::Dest { addr, proto, port } => concat(vec![
            addr_bytes(addr),
            vec![proto_byte(proto)],
            port.to_be_bytes().to_vec(),
        ]),
        Key::Port { proto, port } => {
            concat(vec![vec![proto_byte(proto)], port.to_be_bytes().to_vec()])
        }
        Key::Slot {
            addr,
            proto,
            port,
            slot,
        } => concat(vec![
            addr_bytes(addr),
            vec![proto_byte(proto)],
            port.to_be_bytes().to_vec(),
            slot.to_le_bytes().to_vec(),
        ]),
        Key::PortSlot { proto, port, slot } => concat(vec![
            vec![proto_byte(proto)],
            port.to_be_bytes().to_vec(),
            slot.to_le_bytes().to_vec(),
        ]),
        Key::Pair(a, b) => concat(vec![addr_bytes(a), addr_bytes(b)]),
        Key::DestSource {
            addr,
            proto,
            port,
            source,
        } => concat(vec![
            addr_bytes(addr),
            vec![proto_byte(proto)],
            port.to_be_bytes().to_vec(),
            addr_bytes(source.network()),
        ]),
    }
}

/// nft's time format: `1d`, `3h`, `10m`, `1h1m40s`.
pub fn render_duration(secs: u64) -> String {
    if secs == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    let (d, rest) = (secs / 86_400, secs % 86_400);
    let (h, rest) = (rest / 3600, rest % 3600);
    let (m, s) = (rest / 60, rest % 60);
    for (n, unit) in [(d, "d"), (h, "h"), (m, "m"), (s, "s")] {
        if n > 0 {
            let _ = write!(out, "{n}{unit}");
        }
    }
    out
}

fn render_chain(chain: &Chain) -> String {
    let mut out = format!("\tchain {} {{\n", chain.name);
    if let Some(hook) = chain.hook {
        let _ = writeln!(out, "\t\t{hook}");
    }
    for rule in &chain.rules {
        let _ = writeln!(out, "\t\t{rule}");
    }
    out.push_str("\t}\n");
    out
}

impl fmt::Display for Hook {
    /// `type nat hook prerouting priority dstnat; policy accept;`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let chain_type = match self.chain_type {
            ChainType::Filter => "filter",
            ChainType::Nat => "nat",
        };
        let hook = match self.hook {
            HookPoint::Prerouting => "prerouting",
            HookPoint::Input => "input",
            HookPoint::Forward => "forward",
            HookPoint::Output => "output",
            HookPoint::Postrouting => "postrouting",
        };
        write!(
            f,
            "type {chain_type} hook {hook} priority {}; policy accept;",
            priority_name(self.hook, self.priority)
        )
    }
}

/// nft's names for priorities (`std_prio_lookup`): `dstnat` only at prerouting, `srcnat` only
/// at postrouting, `filter` everywhere, with an offset of up to 10; a number otherwise.
fn priority_name(hook: HookPoint, priority: i32) -> String {
    let mut names: Vec<(&str, i32)> = vec![("filter", Hook::FILTER)];
    match hook {
        HookPoint::Prerouting => names.push(("dstnat", Hook::DSTNAT)),
        HookPoint::Postrouting => names.push(("srcnat", Hook::SRCNAT)),
        _ => {}
    }
    for (name, base) in names {
        let offset = priority - base;
        if offset == 0 {
            return name.to_string();
        }
        if (1..=10).contains(&offset) {
            return format!("{name} + {offset}");
        }
        if (-10..=-1).contains(&offset) {
            return format!("{name} - {}", -offset);
        }
    }
    priority.to_string()
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Drop => f.write_str("drop"),
            Verdict::Goto(c) => write!(f, "goto {c}"),
            Verdict::Jump(c) => write!(f, "jump {c}"),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::None => Ok(()),
            Value::Verdict(v) => v.fmt(f),
            Value::Endpoint(sa) => write!(f, "{} . {}", sa.ip(), sa.port()),
        }
    }
}

/// A network as nft prints it in an interval set: the bare address for a host prefix.
fn net(n: &IpNet) -> String {
    if n.prefix_len() == n.max_prefix_len() {
        n.addr().to_string()
    } else {
        n.trunc().to_string()
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Addr(a) => write!(f, "{a}"),
            Key::Net(n) => f.write_str(&net(n)),
            Key::Dest { addr, proto, port } => write!(f, "{addr} . {proto} . {port}"),
            Key::Port { proto, port } => write!(f, "{proto} . {port}"),
            Key::Slot {
                addr,
                proto,
                port,
                slot,
            } => write!(f, "{addr} . {proto} . {port} . {slot}"),
            Key::PortSlot { proto, port, slot } => write!(f, "{proto} . {port} . {slot}"),
            Key::Pair(a, b) => write!(f, "{a} . {b}"),
            Key::DestSource {
                addr,
                proto,
                port,
                source,
            } => write!(f, "{addr} . {proto} . {port} . {}", net(source)),
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dispatch =
            |family: Family| format!("{} daddr . meta l4proto . th dport", family.keyword());
        match *self {
            Rule::Jump(c) => write!(f, "jump {c}"),
            Rule::Goto(c) => write!(f, "goto {c}"),
            Rule::NewJump(c) => write!(f, "ct state new jump {c}"),
            Rule::Foreign => f.write_str("# a rule svcproxy did not write"),
            Rule::DispatchVmap { family, map } => write!(f, "{} vmap @{map}", dispatch(family)),
            Rule::NodePortVmap { family, scope, map } => {
                let kw = family.keyword();
                match scope {
                    NodePortScope::Local => {
                        let loopback = match family {
                            Family::V4 => "127.0.0.0/8",
                            Family::V6 => "::1",
                        };
                        write!(f, "fib daddr type local {kw} daddr != {loopback} ")?;
                    }
                    NodePortScope::Set => {
                        write!(f, "{kw} daddr @{} ", SetName::NodePortIps(family))?;
                    }
                }
                write!(f, "meta l4proto . th dport vmap @{map}")
            }
            Rule::MasqueradeClusterIps { family, all } => {
                let kw = family.keyword();
                write!(f, "{kw} daddr @{} ", SetName::ClusterIps(family))?;
                if !all {
                    write!(f, "{kw} saddr != @{} ", SetName::ClusterCidrs(family))?;
                }
                write!(f, "jump {}", ChainName::MarkForMasquerade)
            }
            Rule::Firewall { family } => write!(
                f,
                "{d} @{} {d} . {kw} saddr != @{} drop",
                SetName::FirewallIps(family),
                SetName::FirewallAllow(family),
                d = dispatch(family),
                kw = family.keyword(),
            ),
            Rule::SetMark(bit) => write!(f, "meta mark set meta mark | {bit:#010x}"),
            Rule::ReturnUnmarked(bit) => {
                write!(f, "meta mark & {bit:#010x} == 0x00000000 return")
            }
            Rule::ClearMark(bit) => write!(f, "meta mark set meta mark ^ {bit:#010x}"),
            Rule::Masquerade => f.write_str("masquerade fully-random"),
            Rule::Reject => f.write_str("reject"),
            Rule::AffinityLookup { family } => {
                let kw = family.keyword();
                write!(
                    f,
                    "dnat {kw} to {kw} saddr . {d} map @{}",
                    SetName::Affinity(family),
                    d = dispatch(family)
                )
            }
            Rule::AffinityDispatch { family, node_ports } => {
                f.write_str("meta l4proto { tcp, udp, sctp } ")?;
                if node_ports {
                    write!(
                        f,
                        "ct state new ct status dnat ct original {} daddr @{} meta l4proto . ct original proto-dst vmap @{}",
                        family.keyword(),
                        SetName::NodeIps(family),
                        SetName::AffinityNodePorts(family)
                    )
                } else {
                    write!(
                        f,
                        "ct state new ct status dnat ct original {} daddr . meta l4proto . ct original proto-dst vmap @{}",
                        family.keyword(),
                        SetName::AffinityServices(family)
                    )
                }
            }
            Rule::AffinityUpdate {
                family,
                timeout_secs,
            } => {
                let kw = family.keyword();
                write!(
                    f,
                    "meta l4proto {{ tcp, udp, sctp }} update @{} {{ {kw} saddr . ct original {kw} daddr . meta l4proto . ct original proto-dst timeout {} : {kw} daddr . th dport }}",
                    SetName::Affinity(family),
                    render_duration(u64::from(timeout_secs))
                )
            }
            Rule::Dnat {
                family,
                map,
                modulus,
                offset,
            } => {
                let kw = family.keyword();
                let (prefix, key, set) = match map {
                    DnatMap::Service => {
                        (String::new(), dispatch(family), SetName::Endpoints(family))
                    }
                    DnatMap::NodePort => (
                        format!("meta nfproto {} ", family.nfproto()),
                        "meta l4proto . th dport".to_string(),
                        SetName::NodePortEndpoints(family),
                    ),
                };
                write!(
                    f,
                    "{prefix}dnat {kw} to {key} . numgen random mod {modulus}"
                )?;
                if offset != 0 {
                    write!(f, " offset {offset}")?;
                }
                write!(f, " map @{set}")
            }
            Rule::FromClusterGoto { family, chain } => write!(
                f,
                "{} saddr @{} goto {chain}",
                family.keyword(),
                SetName::ClusterCidrs(family)
            ),
            Rule::FromNodeJump(c) => write!(f, "fib saddr type local jump {c}"),
            Rule::FromNodeGoto(c) => write!(f, "fib saddr type local goto {c}"),
            Rule::Hairpin { family } => write!(
                f,
                "ct status dnat {kw} saddr . {kw} daddr @{} jump {}",
                SetName::Hairpin(family),
                ChainName::MarkForMasquerade,
                kw = family.keyword()
            ),
        }
    }
}
