//! Model objects → nf_tables messages ([`Encoder`]): the table, chains, sets and maps with
//! their `typeof` user data, rules as expression lists, elements.
//!
//! Every encoding is what `nft` 1.0.6 sends for the same text (the rendered table of
//! [`crate::render`]), checked against captures of `nft -f` loading the goldens
//! (`tests/encode_bytes.rs`, `tests/captures/golden/`), so `nft list table` of what we program
//! prints our golden byte for byte (`tests/encode_netns.rs`). Two things differ, on purpose:
//!
//! - `nft` names a set made in the same batch by id too (`NFTA_LOOKUP_SET_ID`); we name sets
//!   by name only (the kernel finds a set of the same transaction by name), except the
//!   anonymous set of `meta l4proto { tcp, udp, sctp }`, which has no name before the commit;
//! - `nft` opens a plain interval set with an interval-end element at address 0; we do not
//!   (the kernel and `nft list` need none), so adding and deleting a network is two elements.
//!
//! Registers are allocated as `nft` does: a field at byte offset `o` of a concatenation goes
//! to the 16-byte register `NFT_REG_1 + o / 16` when `o` is a multiple of 16, else to the
//! 4-byte register `NFT_REG32_00 + o / 4` ([`reg_at`]).

use std::net::IpAddr;

use netlink_packet_core::DefaultNla;
use proxy_core::Protocol;

use crate::model::{
    ChainType, DnatMap, Family, Hook, HookPoint, Key, NodePortScope, Rule, Value, Verdict,
};
use crate::names::{ChainName, SetName};
use crate::netlink::chain::{hook as hook_attrs, POLICY_ACCEPT};
use crate::netlink::constants::{
    NFTA_FIB_F_SADDR, NFT_CT_DST_IP, NFT_CT_DST_IP6, NFT_CT_PROTO_DST, NFT_NG_RANDOM,
};
use crate::netlink::data::{value, Verdict as NlVerdict};
use crate::netlink::expr::{
    ct_state, ct_status, nat_flags, reg, CmpOp, CtAttr, CtKey, DynsetAttr, FibAttr, LookupAttr,
    MetaKey, NatType, NumgenAttr, PayloadBase, NFPROTO_IPV4_FAMILY, NFPROTO_IPV6_FAMILY,
};
use crate::netlink::set::{concat_fields, datatype};
use crate::netlink::set_elem::ELEM_INTERVAL_END;
use crate::netlink::{
    ChainAttr, Expr, Hook as NlHook, MsgType, NftMessage, NftObject, ProtoFamily, RuleAttr,
    SetAttr, SetDescAttr, SetElemAttr, SetElemListAttr, SetFlags, TableAttr,
};

/// The name `nft` gives an anonymous set; the kernel fills in the number at commit.
pub const ANONYMOUS_SET: &str = "__set%d";

/// The register of the field at 4-byte offset `units` of a concatenation (see the module
/// docs).
pub fn reg_at(units: u32) -> u32 {
    if units % 4 == 0 {
        reg::REG_1 + units / 4
    } else {
        reg::reg32(units)
    }
}

/// The IP protocol number.
pub fn proto_number(proto: Protocol) -> u8 {
    match proto {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Sctp => 132,
    }
}

/// Encodes our objects into messages of one transaction. Set ids (`NFTA_SET_ID`, required
/// on `NEWSET`, unique in a transaction) are allocated here: use one encoder per
/// transaction.
#[derive(Debug, Clone)]
pub struct Encoder {
    table: String,
    next_set_id: u32,
    /// Element lists written out into bytes as they are built
    /// ([`NftMessage::set_elements_encoded`]) rather than kept as attributes.
    encoded_elements: bool,
}

fn msg(msg_type: MsgType, object: NftObject) -> NftMessage {
    NftMessage::new(msg_type, ProtoFamily::Inet, object)
}

impl Encoder {
    /// An encoder for table `table` (family `inet`).
    pub fn new(table: impl Into<String>) -> Self {
        Encoder {
            table: table.into(),
            next_set_id: 1,
            encoded_elements: false,
        }
    }

    /// The same encoder, writing element lists out into bytes as it builds them: the same
    /// messages on the wire, a fraction of the memory for large transactions (what
    /// [`crate::apply::apply`] sends). Element lists are then [`SetElemListAttr::Other`]
    /// attributes, not [`SetElemListAttr::Elements`].
    #[must_use]
    pub fn with_encoded_elements(mut self) -> Self {
        self.encoded_elements = true;
        self
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    fn set_id(&mut self) -> u32 {
        let id = self.next_set_id;
        self.next_set_id += 1;
        id
    }

    /// `add table inet <name>`.
    pub fn add_table(&self) -> NftMessage {
        msg(
            MsgType::NewTable,
            NftObject::Table(vec![
                TableAttr::Name(self.table.clone()),
                TableAttr::Flags(0),
            ]),
        )
    }

    /// `delete table inet <name>`.
    pub fn delete_table(&self) -> NftMessage {
        msg(
            MsgType::DelTable,
            NftObject::Table(vec![TableAttr::Name(self.table.clone())]),
        )
    }

    /// `add chain`, with type, hook, priority and policy `accept` for a base chain.
    pub fn add_chain(&self, name: ChainName, hook: Option<Hook>) -> NftMessage {
        let mut attrs = vec![
            ChainAttr::Table(self.table.clone()),
            ChainAttr::Name(name.to_string()),
        ];
        if let Some(h) = hook {
            attrs.extend([
                ChainAttr::Type(
                    match h.chain_type {
                        ChainType::Filter => "filter",
                        ChainType::Nat => "nat",
                    }
                    .to_owned(),
                ),
                ChainAttr::Policy(POLICY_ACCEPT),
                ChainAttr::Hook(hook_attrs(hook_point(h.hook), h.priority)),
            ]);
        }
        msg(MsgType::NewChain, NftObject::Chain(attrs))
    }

    /// `flush chain`: `DELRULE` without a handle.
    pub fn flush_chain(&self, name: ChainName) -> NftMessage {
        msg(
            MsgType::DelRule,
            NftObject::Rule(vec![
                RuleAttr::Table(self.table.clone()),
                RuleAttr::Chain(name.to_string()),
            ]),
        )
    }

    /// `delete chain`.
    pub fn delete_chain(&self, name: ChainName) -> NftMessage {
        msg(
            MsgType::DelChain,
            NftObject::Chain(vec![
                ChainAttr::Table(self.table.clone()),
                ChainAttr::Name(name.to_string()),
            ]),
        )
    }

    /// `add set` / `add map`, declared as [`SetName::spec`] says, with the user data `nft`
    /// writes (key byte order, `typeof` expressions) so `nft list` prints our type line.
    pub fn add_set(&mut self, name: SetName) -> NftMessage {
        let spec = name.spec();
        let decl = declaration(name);
        let mut flags = SetFlags(0);
        if spec.is_map {
            flags = flags | SetFlags::MAP;
        }
        if spec.interval {
            flags = flags | SetFlags::INTERVAL;
        }
        if spec.dynamic {
            flags = flags | SetFlags::TIMEOUT | SetFlags::EVAL;
        }
        let concat_interval = spec.interval && decl.key.len() > 1;
        if concat_interval {
            flags = flags | SetFlags::CONCAT;
        }
        let mut attrs = vec![
            SetAttr::Table(self.table.clone()),
            SetAttr::Name(name.to_string()),
            SetAttr::Flags(flags),
            SetAttr::KeyType(datatype::concat(
                &decl.key.iter().map(|f| f.0).collect::<Vec<_>>(),
            )),
            SetAttr::KeyLen(padded_len(&decl.key)),
        ];
        if let Some(data) = &decl.data {
            if data.is_empty() {
                attrs.extend([
                    SetAttr::DataType(datatype::VERDICT_DATA),
                    SetAttr::DataLen(0),
                ]);
            } else {
                attrs.extend([
                    SetAttr::DataType(datatype::concat(
                        &data.iter().map(|f| f.0).collect::<Vec<_>>(),
                    )),
                    SetAttr::DataLen(padded_len(data)),
                ]);
            }
        }
        attrs.push(SetAttr::Id(self.set_id()));
        if concat_interval {
            attrs.push(SetAttr::Desc(vec![concat_fields(
                &decl.key.iter().map(|f| f.1).collect::<Vec<_>>(),
            )]));
        }
        if let Some(size) = spec.size {
            attrs.push(SetAttr::Desc(vec![SetDescAttr::Size(size)]));
        }
        if let Some(t) = spec.timeout {
            attrs.push(SetAttr::Timeout(
                u64::try_from(t.as_millis()).unwrap_or(u64::MAX),
            ));
        }
        attrs.push(SetAttr::Userdata(hex(decl.userdata)));
        msg(MsgType::NewSet, NftObject::Set(attrs))
    }

    /// `delete set` / `delete map`.
    pub fn delete_set(&self, name: SetName) -> NftMessage {
        msg(
            MsgType::DelSet,
            NftObject::Set(vec![
                SetAttr::Table(self.table.clone()),
                SetAttr::Name(name.to_string()),
            ]),
        )
    }

    /// `add element` (`NewSetElem`) or `delete element` (`DelSetElem`) of `elements` of one
    /// set, in as few messages as the 64 KiB attribute limit allows (one, below it): the
    /// kernel lists interval-set elements in the order of their insertion batches.
    pub fn elements(
        &self,
        msg_type: MsgType,
        set: SetName,
        elements: &[(Key, Value)],
    ) -> Vec<NftMessage> {
        let delete = msg_type == MsgType::DelSetElem;
        let list = elements
            .iter()
            .flat_map(|(k, v)| element_attrs(*k, if delete { &Value::None } else { v }));
        let (table, set) = (&self.table, &set.to_string());
        if self.encoded_elements {
            NftMessage::set_elements_encoded(msg_type, ProtoFamily::Inet, table, set, list)
        } else {
            NftMessage::set_elements(msg_type, ProtoFamily::Inet, table, set, list.collect())
        }
    }

    /// `add rule <chain> <rule>`: the rule, preceded by the anonymous set it binds, if any
    /// (`meta l4proto { tcp, udp, sctp }`).
    pub fn add_rule(&mut self, chain: ChainName, rule: &Rule) -> Vec<NftMessage> {
        let mut out = Vec::new();
        let anon = if needs_l4proto_set(rule) {
            let id = self.set_id();
            out.extend(self.l4proto_set(id));
            Some(id)
        } else {
            None
        };
        out.push(msg(
            MsgType::NewRule,
            NftObject::Rule(vec![
                RuleAttr::Table(self.table.clone()),
                RuleAttr::Chain(chain.to_string()),
                RuleAttr::Expressions(rule_exprs(rule, anon)),
            ]),
        ));
        out
    }

    /// The anonymous set `{ tcp, udp, sctp }` and its elements.
    fn l4proto_set(&self, id: u32) -> [NftMessage; 2] {
        let set = msg(
            MsgType::NewSet,
            NftObject::Set(vec![
                SetAttr::Table(self.table.clone()),
                SetAttr::Name(ANONYMOUS_SET.to_owned()),
                SetAttr::Flags(SetFlags::ANONYMOUS | SetFlags::CONSTANT),
                SetAttr::KeyType(datatype::INET_PROTO),
                SetAttr::KeyLen(1),
                SetAttr::Id(id),
                SetAttr::Desc(vec![SetDescAttr::Size(3)]),
                SetAttr::Userdata(hex("000401000000030e0004090000000106000410000000")),
            ]),
        );
        let elements = msg(
            MsgType::NewSetElem,
            NftObject::SetElems(vec![
                SetElemListAttr::Table(self.table.clone()),
                SetElemListAttr::Set(ANONYMOUS_SET.to_owned()),
                SetElemListAttr::SetId(id),
                SetElemListAttr::Elements(
                    Protocol::ALL
                        .iter()
                        .map(|p| vec![SetElemAttr::Key(value([proto_number(*p)]))])
                        .collect(),
                ),
            ]),
        );
        [set, elements]
    }
}

fn hook_point(h: HookPoint) -> NlHook {
    match h {
        HookPoint::Prerouting => NlHook::Prerouting,
        HookPoint::Input => NlHook::Input,
        HookPoint::Forward => NlHook::Forward,
        HookPoint::Output => NlHook::Output,
        HookPoint::Postrouting => NlHook::Postrouting,
    }
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .filter_map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// A field of a key or data: `nft`'s type number and its length in bytes.
type Field = (u32, u32);

/// How a set is declared on the wire: key fields, data fields (`Some(empty)`: verdicts) and
/// `nft`'s user data (hex).
struct Declaration {
    key: Vec<Field>,
    data: Option<Vec<Field>>,
    userdata: &'static str,
}

fn padded_len(fields: &[Field]) -> u32 {
    fields.iter().map(|f| (f.1 + 3) & !3).sum()
}

// `nft`'s set user data (`NFTNL_UDATA_SET_*` TLVs): key byte order, data byte order, and for
// `typeof` sets the key and data expressions. Captured from nft 1.0.6 (tests/captures/golden).
const UD_HOST: &str = "000402000000";
const UD_CONCAT_SET: &str = "000400000000030800040d0000000100";
const UD_VMAP: &str = "000400000000010400000000030800040d0000000100060400000000";
const UD_AFFINITY: &str =
    "000400000000010400000000030800040d0000000100040800040d0000000100060400000000";
const UD_ENDPOINTS_V4: &str = "000400000000010400000000036000040d00000001580014000407000000010c00040c00000001040c000000010e00040900000001060004100000000214000407000000010c00040b000000010402000000031a0004170000000112000401000000010401000000020400000000043400040d000000012c0014000407000000010c00040c00000001040c0000000114000407000000010c00040b000000010402000000060400000000";
const UD_ENDPOINTS_V6: &str = "000400000000010400000000036000040d00000001580014000407000000010c00040d000000010409000000010e00040900000001060004100000000214000407000000010c00040b000000010402000000031a0004170000000112000401000000010401000000020400000000043400040d000000012c0014000407000000010c00040d0000000104090000000114000407000000010c00040b000000010402000000060400000000";
const UD_NODEPORT_ENDPOINTS_V4: &str = "000400000000010400000000034a00040d0000000142000e00040900000001060004100000000114000407000000010c00040b000000010402000000021a0004170000000112000401000000010401000000020400000000043400040d000000012c0014000407000000010c00040c00000001040c0000000114000407000000010c00040b000000010402000000060400000000";
const UD_NODEPORT_ENDPOINTS_V6: &str = "000400000000010400000000034a00040d0000000142000e00040900000001060004100000000114000407000000010c00040b000000010402000000021a0004170000000112000401000000010401000000020400000000043400040d000000012c0014000407000000010c00040d0000000104090000000114000407000000010c00040b000000010402000000060400000000";

fn declaration(name: SetName) -> Declaration {
    let family = name.family();
    let addr: Field = match family {
        Family::V4 => (datatype::IPV4_ADDR, 4),
        Family::V6 => (datatype::IPV6_ADDR, 16),
    };
    let proto: Field = (datatype::INET_PROTO, 1);
    let port: Field = (datatype::INET_SERVICE, 2);
    let slot: Field = (datatype::INTEGER, 4);
    let v4 = family == Family::V4;
    let (key, data, userdata) = match name {
        SetName::ClusterCidrs(_)
        | SetName::ClusterIps(_)
        | SetName::NodePortIps(_)
        | SetName::NodeIps(_) => (vec![addr], None, UD_HOST),
        SetName::ServiceIps(_) | SetName::NoEndpointServices(_) | SetName::AffinityServices(_) => {
            (vec![addr, proto, port], Some(vec![]), UD_VMAP)
        }
        SetName::ServiceNodePorts(_)
        | SetName::NoEndpointNodePorts(_)
        | SetName::AffinityNodePorts(_) => (vec![proto, port], Some(vec![]), UD_VMAP),
        SetName::FirewallIps(_) => (vec![addr, proto, port], None, UD_CONCAT_SET),
        SetName::FirewallAllow(_) => (vec![addr, proto, port, addr], None, UD_CONCAT_SET),
        SetName::Endpoints(_) => (
            vec![addr, proto, port, slot],
            Some(vec![addr, port]),
            if v4 { UD_ENDPOINTS_V4 } else { UD_ENDPOINTS_V6 },
        ),
        SetName::NodePortEndpoints(_) => (
            vec![proto, port, slot],
            Some(vec![addr, port]),
            if v4 {
                UD_NODEPORT_ENDPOINTS_V4
            } else {
                UD_NODEPORT_ENDPOINTS_V6
            },
        ),
        SetName::Hairpin(_) => (vec![addr, addr], None, UD_CONCAT_SET),
        SetName::Affinity(_) => (
            vec![addr, addr, proto, port],
            Some(vec![addr, port]),
            UD_AFFINITY,
        ),
    };
    Declaration {
        key,
        data,
        userdata,
    }
}

/// Fields of a concatenation, each in its own 4-byte slot.
fn concat(fields: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in fields {
        out.extend_from_slice(f);
        out.resize((out.len() + 3) & !3, 0);
    }
    out
}

fn addr_bytes(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// The address after `a` (`None` past the last).
fn next_addr(a: IpAddr) -> Option<IpAddr> {
    match a {
        IpAddr::V4(a) => u32::from(a).checked_add(1).map(|n| IpAddr::V4(n.into())),
        IpAddr::V6(a) => u128::from(a).checked_add(1).map(|n| IpAddr::V6(n.into())),
    }
}

/// The element(s) of one key and value: a network of a plain interval set is two (its
/// start, and the interval end after its last address, unless that is past the last address).
pub fn element_attrs(key: Key, v: &Value) -> Vec<Vec<SetElemAttr>> {
    let data = match v {
        Value::None => None,
        Value::Verdict(verdict) => Some(SetElemAttr::Data(nl_verdict(*verdict).to_data())),
        Value::Endpoint(ep) => Some(SetElemAttr::Data(value(concat(&[
            &addr_bytes(ep.ip()),
            &ep.port().to_be_bytes(),
        ])))),
    };
    let p = |proto: Protocol| [proto_number(proto)];
    let key_bytes = match key {
        Key::Net(net) => {
            let mut out = vec![vec![SetElemAttr::Key(value(addr_bytes(net.network())))]];
            if let Some(end) = next_addr(net.broadcast()) {
                out.push(vec![
                    SetElemAttr::Flags(ELEM_INTERVAL_END),
                    SetElemAttr::Key(value(addr_bytes(end))),
                ]);
            }
            return out;
        }
        Key::DestSource {
            addr,
            proto,
            port,
            source,
        } => {
            let head = |a: IpAddr| {
                concat(&[
                    &addr_bytes(addr),
                    &p(proto),
                    &port.to_be_bytes(),
                    &addr_bytes(a),
                ])
            };
            return vec![vec![
                SetElemAttr::Key(value(head(source.network()))),
                SetElemAttr::KeyEnd(value(head(source.broadcast()))),
            ]];
        }
        Key::Addr(a) => addr_bytes(a),
        Key::Dest { addr, proto, port } => {
            concat(&[&addr_bytes(addr), &p(proto), &port.to_be_bytes()])
        }
        Key::Port { proto, port } => concat(&[&p(proto), &port.to_be_bytes()]),
        Key::Slot {
            addr,
            proto,
            port,
            slot,
        } => concat(&[
            &addr_bytes(addr),
            &p(proto),
            &port.to_be_bytes(),
            &slot.to_ne_bytes(),
        ]),
        Key::PortSlot { proto, port, slot } => {
            concat(&[&p(proto), &port.to_be_bytes(), &slot.to_ne_bytes()])
        }
        Key::Pair(a, b) => concat(&[&addr_bytes(a), &addr_bytes(b)]),
    };
    let mut attrs = vec![SetElemAttr::Key(value(key_bytes))];
    attrs.extend(data);
    vec![attrs]
}

/// Our verdict as a netlink verdict.
pub fn nl_verdict(v: Verdict) -> NlVerdict {
    match v {
        Verdict::Drop => NlVerdict::Drop,
        Verdict::Goto(c) => NlVerdict::Goto(c.to_string()),
        Verdict::Jump(c) => NlVerdict::Jump(c.to_string()),
    }
}

/// Whether the rule binds the anonymous set `{ tcp, udp, sctp }`.
pub fn needs_l4proto_set(rule: &Rule) -> bool {
    matches!(
        rule,
        Rule::AffinityDispatch { .. } | Rule::AffinityUpdate { .. }
    )
}

// --- expressions ---

/// Length of an address, in 4-byte units.
fn addr_units(f: Family) -> u32 {
    match f {
        Family::V4 => 1,
        Family::V6 => 4,
    }
}

fn nfproto(f: Family) -> [Expr; 2] {
    [
        Expr::meta_load(MetaKey::Nfproto, reg::REG_1),
        Expr::cmp(
            CmpOp::Eq,
            reg::REG_1,
            [match f {
                Family::V4 => 2u8,
                Family::V6 => 10,
            }],
        ),
    ]
}

fn saddr(f: Family, dreg: u32) -> Expr {
    match f {
        Family::V4 => Expr::payload_load(PayloadBase::Network, 12, 4, dreg),
        Family::V6 => Expr::payload_load(PayloadBase::Network, 8, 16, dreg),
    }
}

fn daddr(f: Family, dreg: u32) -> Expr {
    match f {
        Family::V4 => Expr::payload_load(PayloadBase::Network, 16, 4, dreg),
        Family::V6 => Expr::payload_load(PayloadBase::Network, 24, 16, dreg),
    }
}

fn l4proto(dreg: u32) -> Expr {
    Expr::meta_load(MetaKey::L4proto, dreg)
}

fn th_dport(dreg: u32) -> Expr {
    Expr::payload_load(PayloadBase::Transport, 2, 2, dreg)
}

fn ct_bits(key: CtKey, bits: u32) -> [Expr; 3] {
    [
        Expr::ct_load(key, reg::REG_1),
        Expr::bitwise(
            reg::REG_1,
            reg::REG_1,
            bits.to_ne_bytes().to_vec(),
            vec![0; 4],
            false,
        ),
        Expr::cmp(CmpOp::Neq, reg::REG_1, [0u8; 4]),
    ]
}

fn ct_original(key: u32, dreg: u32) -> Expr {
    Expr::Ct(vec![
        CtAttr::Key(CtKey::Other(key)),
        CtAttr::Dreg(dreg),
        CtAttr::Direction(0),
    ])
}

fn ct_original_daddr(f: Family, dreg: u32) -> Expr {
    ct_original(
        match f {
            Family::V4 => NFT_CT_DST_IP,
            Family::V6 => NFT_CT_DST_IP6,
        },
        dreg,
    )
}

fn fib_type_local(flags: u32) -> [Expr; 2] {
    [
        Expr::Fib(vec![
            FibAttr::Flags(flags),
            FibAttr::Result(3),
            FibAttr::Dreg(reg::REG_1),
        ]),
        // RTN_LOCAL, host order.
        Expr::cmp(CmpOp::Eq, reg::REG_1, 2u32.to_ne_bytes()),
    ]
}

fn jump(c: ChainName) -> Expr {
    Expr::verdict(NlVerdict::Jump(c.to_string()))
}

fn goto(c: ChainName) -> Expr {
    Expr::verdict(NlVerdict::Goto(c.to_string()))
}

fn nat_family(f: Family) -> u32 {
    match f {
        Family::V4 => NFPROTO_IPV4_FAMILY,
        Family::V6 => NFPROTO_IPV6_FAMILY,
    }
}

/// `daddr != loopback`, as `nft` writes `ip daddr != 127.0.0.0/8` and `ip6 daddr != ::1`.
fn not_loopback(f: Family) -> [Expr; 2] {
    match f {
        Family::V4 => [
            Expr::payload_load(PayloadBase::Network, 16, 1, reg::REG_1),
            Expr::cmp(CmpOp::Neq, reg::REG_1, [127u8]),
        ],
        Family::V6 => {
            let mut one = [0u8; 16];
            one[15] = 1;
            [daddr(f, reg::REG_1), Expr::cmp(CmpOp::Neq, reg::REG_1, one)]
        }
    }
}

/// `nft`'s `byteorder` for `meta l4proto` inside an interval concatenation: host to network
/// order of the 1-byte protocol in its 4-byte slot.
fn l4proto_byteorder(r: u32) -> Expr {
    let be = |v: u32| v.to_be_bytes().to_vec();
    Expr::Other {
        name: "byteorder".to_owned(),
        data: vec![
            DefaultNla::new(1, be(r)),
            DefaultNla::new(2, be(r)),
            DefaultNla::new(3, be(1)),
            DefaultNla::new(4, be(1)),
            DefaultNla::new(5, be(2)),
        ],
    }
}

fn anon_lookup(id: Option<u32>) -> [Expr; 2] {
    [
        l4proto(reg::REG_1),
        Expr::Lookup(vec![
            LookupAttr::Sreg(reg::REG_1),
            LookupAttr::Set(ANONYMOUS_SET.to_owned()),
            LookupAttr::SetId(id.unwrap_or(0)),
        ]),
    ]
}

/// The expressions of one rule, as `nft` compiles its text. `anon`: the id of the anonymous
/// `{ tcp, udp, sctp }` set of this transaction, for the rules that bind one.
pub fn rule_exprs(rule: &Rule, anon: Option<u32>) -> Vec<Expr> {
    let mut e: Vec<Expr> = Vec::new();
    match *rule {
        // Never planned: nothing to encode.
        Rule::Foreign => {}
        Rule::Jump(c) => e.push(jump(c)),
        Rule::Goto(c) => e.push(goto(c)),
        Rule::NewJump(c) => {
            e.extend(ct_bits(CtKey::State, ct_state::NEW));
            e.push(jump(c));
        }
        Rule::DispatchVmap { family, map } => {
            let a = addr_units(family);
            e.extend(nfproto(family));
            e.extend([
                daddr(family, reg::REG_1),
                l4proto(reg_at(a)),
                th_dport(reg_at(a + 1)),
                Expr::lookup_map(&map.to_string(), reg::REG_1, reg::VERDICT),
            ]);
        }
        Rule::NodePortVmap { family, scope, map } => {
            match scope {
                NodePortScope::Local => {
                    e.extend([
                        Expr::fib_daddr_type(reg::REG_1),
                        Expr::cmp(CmpOp::Eq, reg::REG_1, 2u32.to_ne_bytes()),
                    ]);
                    e.extend(nfproto(family));
                    e.extend(not_loopback(family));
                }
                NodePortScope::Set => {
                    e.extend(nfproto(family));
                    e.extend([
                        daddr(family, reg::REG_1),
                        Expr::lookup(&SetName::NodePortIps(family).to_string(), reg::REG_1, false),
                    ]);
                }
            }
            e.extend([
                l4proto(reg::REG_1),
                th_dport(reg_at(1)),
                Expr::lookup_map(&map.to_string(), reg::REG_1, reg::VERDICT),
            ]);
        }
        Rule::MasqueradeClusterIps { family, all } => {
            e.extend(nfproto(family));
            e.extend([
                daddr(family, reg::REG_1),
                Expr::lookup(&SetName::ClusterIps(family).to_string(), reg::REG_1, false),
            ]);
            if !all {
                e.extend([
                    saddr(family, reg::REG_1),
                    Expr::lookup(&SetName::ClusterCidrs(family).to_string(), reg::REG_1, true),
                ]);
            }
            e.push(jump(ChainName::MarkForMasquerade));
        }
        Rule::Firewall { family } => {
            let a = addr_units(family);
            e.extend(nfproto(family));
            e.extend([
                daddr(family, reg::REG_1),
                l4proto(reg_at(a)),
                th_dport(reg_at(a + 1)),
                Expr::lookup(&SetName::FirewallIps(family).to_string(), reg::REG_1, false),
                daddr(family, reg::REG_1),
                l4proto(reg_at(a)),
                l4proto_byteorder(reg_at(a)),
                th_dport(reg_at(a + 1)),
                saddr(family, reg_at(a + 2)),
                Expr::lookup(
                    &SetName::FirewallAllow(family).to_string(),
                    reg::REG_1,
                    true,
                ),
                Expr::verdict(NlVerdict::Drop),
            ]);
        }
        Rule::SetMark(bit) => e.extend([
            Expr::meta_load(MetaKey::Mark, reg::REG_1),
            Expr::bitwise(
                reg::REG_1,
                reg::REG_1,
                (!bit).to_ne_bytes().to_vec(),
                bit.to_ne_bytes().to_vec(),
                true,
            ),
            Expr::meta_set(MetaKey::Mark, reg::REG_1),
        ]),
        Rule::ReturnUnmarked(bit) => e.extend([
            Expr::meta_load(MetaKey::Mark, reg::REG_1),
            Expr::bitwise(
                reg::REG_1,
                reg::REG_1,
                bit.to_ne_bytes().to_vec(),
                vec![0; 4],
                true,
            ),
            Expr::cmp(CmpOp::Eq, reg::REG_1, [0u8; 4]),
            Expr::verdict(NlVerdict::Return),
        ]),
        Rule::ClearMark(bit) => e.extend([
            Expr::meta_load(MetaKey::Mark, reg::REG_1),
            Expr::bitwise(
                reg::REG_1,
                reg::REG_1,
                u32::MAX.to_ne_bytes().to_vec(),
                bit.to_ne_bytes().to_vec(),
                true,
            ),
            Expr::meta_set(MetaKey::Mark, reg::REG_1),
        ]),
        Rule::Masquerade => e.push(Expr::masq(nat_flags::PROTO_RANDOM_FULLY)),
        Rule::Reject => e.push(Expr::reject_icmpx(1)),
        Rule::AffinityLookup { family } => {
            let a = addr_units(family);
            e.extend(nfproto(family));
            e.extend([
                saddr(family, reg::REG_1),
                daddr(family, reg_at(a)),
                l4proto(reg_at(2 * a)),
                th_dport(reg_at(2 * a + 1)),
                Expr::lookup_map(
                    &SetName::Affinity(family).to_string(),
                    reg::REG_1,
                    reg::REG_1,
                ),
                Expr::nat(
                    NatType::Dnat,
                    nat_family(family),
                    Some(reg::REG_1),
                    Some(reg_at(a)),
                    None,
                ),
            ]);
        }
        Rule::AffinityDispatch { family, node_ports } => {
            e.extend(anon_lookup(anon));
            e.extend(ct_bits(CtKey::State, ct_state::NEW));
            e.extend(ct_bits(CtKey::Status, ct_status::DNAT));
            let map = if node_ports {
                // Only connections to a node address: a cluster IP that shares the node
                // port's number is not a node-port connection.
                e.extend([
                    ct_original_daddr(family, reg::REG_1),
                    Expr::lookup(&SetName::NodeIps(family).to_string(), reg::REG_1, false),
                ]);
                e.extend([
                    l4proto(reg::REG_1),
                    ct_original(NFT_CT_PROTO_DST, reg_at(1)),
                ]);
                SetName::AffinityNodePorts(family)
            } else {
                let a = addr_units(family);
                e.extend([
                    ct_original_daddr(family, reg::REG_1),
                    l4proto(reg_at(a)),
                    ct_original(NFT_CT_PROTO_DST, reg_at(a + 1)),
                ]);
                SetName::AffinityServices(family)
            };
            e.push(Expr::lookup_map(&map.to_string(), reg::REG_1, reg::VERDICT));
        }
        Rule::AffinityUpdate {
            family,
            timeout_secs,
        } => {
            let a = addr_units(family);
            // IPv4: the data in the 16-byte register after the key's, where `nft` puts it (so
            // that a rule loaded with `nft -f` reads back the same). IPv6: right after the
            // 40-byte key, the only place 20 bytes of data still fit in the 64 bytes of
            // registers (`nft` 1.0.6 cannot build this rule: it allocates 16-byte registers).
            let key_units = 2 * a + 2;
            let data = match family {
                Family::V4 => (key_units + 3) & !3,
                Family::V6 => key_units,
            };
            e.extend(anon_lookup(anon));
            e.extend(nfproto(family));
            e.extend([
                saddr(family, reg::REG_1),
                ct_original_daddr(family, reg_at(a)),
                l4proto(reg_at(2 * a)),
                ct_original(NFT_CT_PROTO_DST, reg_at(2 * a + 1)),
                daddr(family, reg_at(data)),
                th_dport(reg_at(data + a)),
                Expr::Dynset(vec![
                    DynsetAttr::SregKey(reg::REG_1),
                    DynsetAttr::SregData(reg_at(data)),
                    DynsetAttr::Op(1),
                    DynsetAttr::Timeout(u64::from(timeout_secs) * 1000),
                    DynsetAttr::SetName(SetName::Affinity(family).to_string()),
                ]),
            ]);
        }
        Rule::Dnat {
            family,
            map,
            modulus,
            offset,
        } => {
            let a = addr_units(family);
            e.extend(nfproto(family));
            let (numgen_reg, set) = match map {
                DnatMap::Service => {
                    e.extend([
                        daddr(family, reg::REG_1),
                        l4proto(reg_at(a)),
                        th_dport(reg_at(a + 1)),
                    ]);
                    (reg_at(a + 2), SetName::Endpoints(family))
                }
                DnatMap::NodePort => {
                    e.extend([l4proto(reg::REG_1), th_dport(reg_at(1))]);
                    (reg_at(2), SetName::NodePortEndpoints(family))
                }
            };
            e.extend([
                Expr::Numgen(vec![
                    NumgenAttr::Dreg(numgen_reg),
                    NumgenAttr::Modulus(modulus),
                    NumgenAttr::Type(NFT_NG_RANDOM),
                    NumgenAttr::Offset(offset),
                ]),
                Expr::lookup_map(&set.to_string(), reg::REG_1, reg::REG_1),
                Expr::nat(
                    NatType::Dnat,
                    nat_family(family),
                    Some(reg::REG_1),
                    Some(reg_at(a)),
                    None,
                ),
            ]);
        }
        Rule::FromClusterGoto { family, chain } => {
            e.extend(nfproto(family));
            e.extend([
                saddr(family, reg::REG_1),
                Expr::lookup(
                    &SetName::ClusterCidrs(family).to_string(),
                    reg::REG_1,
                    false,
                ),
                goto(chain),
            ]);
        }
        Rule::FromNodeJump(c) => {
            e.extend(fib_type_local(NFTA_FIB_F_SADDR));
            e.push(jump(c));
        }
        Rule::FromNodeGoto(c) => {
            e.extend(fib_type_local(NFTA_FIB_F_SADDR));
            e.push(goto(c));
        }
        Rule::Hairpin { family } => {
            e.extend(ct_bits(CtKey::Status, ct_status::DNAT));
            e.extend(nfproto(family));
            e.extend([
                saddr(family, reg::REG_1),
                daddr(family, reg_at(addr_units(family))),
                Expr::lookup(&SetName::Hairpin(family).to_string(), reg::REG_1, false),
                jump(ChainName::MarkForMasquerade),
            ]);
        }
    }
    e
}
