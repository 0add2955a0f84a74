//! Properties of every message: `parse(emit(m)) == m`, and the emitted length is the
//! header plus `buffer_len()`.

mod netlink_support;

use backend_nftables::netlink::{
    chain::hook,
    data::{value, Verdict},
    expr::{CmpOp, CtKey, MetaKey, NatType, PayloadBase},
    set::concat_fields,
    ChainAttr, Expr, Hook, MsgType, NftMessage, NftObject, ProtoFamily, RuleAttr, SetAttr,
    SetDescAttr, SetElemAttr, SetElemListAttr, SetFlags, TableAttr,
};
use netlink_packet_core::Emitable;
use netlink_support::{emit, parse};
use proptest::collection::vec;
use proptest::prelude::*;

fn name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9-]{0,30}"
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..20)
}

/// An address in 198.18.0.0/15.
fn addr() -> impl Strategy<Value = Vec<u8>> {
    (0u8..2, any::<u8>(), any::<u8>()).prop_map(|(b, c, d)| vec![198, 18 + b, c, d])
}

fn verdict() -> impl Strategy<Value = Verdict> {
    prop_oneof![
        Just(Verdict::Accept),
        Just(Verdict::Drop),
        Just(Verdict::Continue),
        Just(Verdict::Return),
        name().prop_map(Verdict::Jump),
        name().prop_map(Verdict::Goto),
    ]
}

fn register() -> impl Strategy<Value = u32> {
    prop_oneof![Just(0u32), 1u32..5, 8u32..24]
}

fn expr() -> impl Strategy<Value = Expr> {
    prop_oneof![
        (any::<u32>(), 0u32..64, 1u32..17, register())
            .prop_map(|(b, o, l, r)| { Expr::payload_load(PayloadBase::from(b % 4), o, l, r) }),
        (any::<u32>(), register()).prop_map(|(k, r)| Expr::meta_load(MetaKey::from(k % 20), r)),
        (any::<u32>(), register()).prop_map(|(k, r)| Expr::meta_set(MetaKey::from(k % 20), r)),
        (0u32..6, register(), bytes()).prop_map(|(op, r, d)| Expr::cmp(CmpOp::from(op), r, d)),
        (
            register(),
            register(),
            vec(any::<u8>(), 4),
            vec(any::<u8>(), 4),
            any::<bool>()
        )
            .prop_map(|(s, d, m, x, op)| Expr::bitwise(s, d, m, x, op)),
        (name(), register(), any::<bool>()).prop_map(|(s, r, i)| Expr::lookup(&s, r, i)),
        (name(), register(), register()).prop_map(|(s, r, d)| Expr::lookup_map(&s, r, d)),
        (register(), bytes()).prop_map(|(r, d)| Expr::immediate(r, d)),
        verdict().prop_map(Expr::verdict),
        (
            any::<bool>(),
            prop::option::of(register()),
            prop::option::of(register()),
            prop::option::of(0u32..64)
        )
            .prop_map(|(snat, a, p, f)| {
                let t = if snat { NatType::Snat } else { NatType::Dnat };
                Expr::nat(t, 2, a, p, f)
            }),
        (0u32..64).prop_map(Expr::masq),
        (1u32..1000, register()).prop_map(|(m, r)| Expr::numgen_random(m, r)),
        (0u32..4, register()).prop_map(|(k, r)| Expr::ct_load(CtKey::from(k), r)),
        Just(Expr::counter()),
        any::<u8>().prop_map(Expr::reject_icmp),
        any::<u8>().prop_map(Expr::reject_icmpx),
        Just(Expr::reject_tcp_reset()),
        (
            name(),
            any::<bool>(),
            register(),
            prop::option::of(any::<u64>())
        )
            .prop_map(|(s, u, r, t)| Expr::dynset(&s, u, r, t)),
        register().prop_map(Expr::fib_daddr_type),
        (register(), any::<bool>(), bytes(), bytes())
            .prop_map(|(r, n, f, t)| Expr::range(r, n, f, t)),
    ]
}

fn element() -> impl Strategy<Value = Vec<SetElemAttr>> {
    (
        addr(),
        prop::option::of(verdict()),
        prop::option::of(addr()),
        prop::option::of(any::<u64>()),
        prop::option::of(0u32..4),
    )
        .prop_map(|(key, verdict, data, timeout, flags)| {
            let mut e = Vec::new();
            e.extend(flags.map(SetElemAttr::Flags));
            e.extend(timeout.map(SetElemAttr::Timeout));
            e.push(SetElemAttr::Key(value(key)));
            e.extend(verdict.map(|v| SetElemAttr::Data(v.to_data())));
            e.extend(data.map(|d| SetElemAttr::Data(value(d))));
            e
        })
}

fn object() -> impl Strategy<Value = (MsgType, NftObject)> {
    prop_oneof![
        (name(), any::<u32>(), bytes()).prop_map(|(n, f, u)| (
            MsgType::NewTable,
            NftObject::Table(vec![
                TableAttr::Name(n),
                TableAttr::Flags(f),
                TableAttr::Userdata(u),
                TableAttr::Handle(7),
            ])
        )),
        (
            name(),
            name(),
            prop::option::of((0u32..5, any::<i32>(), 0u32..2))
        )
            .prop_map(|(t, n, base)| {
                let mut attrs = vec![ChainAttr::Table(t), ChainAttr::Name(n)];
                if let Some((h, prio, policy)) = base {
                    attrs.extend([
                        ChainAttr::Type("nat".into()),
                        ChainAttr::Policy(policy),
                        ChainAttr::Hook(hook(Hook::from(h), prio)),
                    ]);
                }
                (MsgType::NewChain, NftObject::Chain(attrs))
            }),
        (
            name(),
            name(),
            vec(expr(), 0..8),
            prop::option::of(any::<u64>())
        )
            .prop_map(|(t, c, e, pos)| {
                let mut attrs = vec![
                    RuleAttr::Table(t),
                    RuleAttr::Chain(c),
                    RuleAttr::Expressions(e),
                ];
                attrs.extend(pos.map(RuleAttr::Position));
                (MsgType::NewRule, NftObject::Rule(attrs))
            }),
        (
            name(),
            name(),
            any::<u32>(),
            vec(1u32..17, 0..4),
            any::<u64>()
        )
            .prop_map(|(t, n, flags, fields, timeout)| (
                MsgType::NewSet,
                NftObject::Set(vec![
                    SetAttr::Table(t),
                    SetAttr::Name(n),
                    SetAttr::Flags(SetFlags(flags)),
                    SetAttr::KeyLen(4 * fields.len() as u32),
                    SetAttr::Id(1),
                    SetAttr::Timeout(timeout),
                    SetAttr::Desc(vec![SetDescAttr::Size(10), concat_fields(&fields)]),
                ])
            )),
        (name(), name(), vec(element(), 0..6), any::<bool>()).prop_map(|(t, s, e, del)| (
            if del {
                MsgType::DelSetElem
            } else {
                MsgType::NewSetElem
            },
            NftObject::SetElems(vec![
                SetElemListAttr::Table(t),
                SetElemListAttr::Set(s),
                SetElemListAttr::Elements(e),
            ])
        )),
    ]
}

fn message() -> impl Strategy<Value = NftMessage> {
    (object(), any::<u8>(), any::<u16>(), 0u16..16).prop_map(
        |((msg_type, object), family, res_id, flags)| {
            let mut m = NftMessage::new(msg_type, ProtoFamily::from(family), object);
            m.res_id = res_id;
            // NLM_F_CREATE, NLM_F_EXCL, NLM_F_APPEND, NLM_F_REPLACE in any combination
            // (REQUEST and ACK are the sender's).
            m.flags = (flags & 0xf) << 8;
            m
        },
    )
}

proptest! {
    #[test]
    fn parse_of_emit_is_the_message(m in message()) {
        let bytes = emit(&m);
        prop_assert_eq!(bytes.len(), 16 + m.buffer_len());
        prop_assert_eq!(
            u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize,
            bytes.len(),
            "nlmsg_len"
        );
        prop_assert_eq!(parse(&bytes), m);
    }

    #[test]
    fn parsing_never_panics_on_garbage(payload in vec(any::<u8>(), 0..200), ty in 0u16..20) {
        let _ = NftMessage::parse(0x0a00 | ty, 0, &payload);
    }
}

proptest! {
    #[test]
    fn parsing_never_panics_on_damaged_messages(
        m in message(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = emit(&m);
        let i = at.index(bytes.len());
        bytes[i] = byte;
        let end = 16 + cut.index(bytes.len() - 15);
        let ty = u16::from_ne_bytes([bytes[4], bytes[5]]);
        let _ = NftMessage::parse(ty, 0, &bytes[16..end]);
    }
}
