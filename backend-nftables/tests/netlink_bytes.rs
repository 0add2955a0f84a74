//! Our nf_tables messages, byte for byte against what `nft` 1.0.6 sends for the same ruleset
//! (`tests/captures/add_ruleset.{nft,hex}`, `edit_ruleset.{nft,hex}`; how they were captured
//! is in each `.hex` header). Every message kind and every expression we use is asserted both
//! ways: our encoding equals the capture (sequence numbers and port ids masked), and the
//! capture parses to our objects.
//!
//! Flags: `nft` sends no `NLM_F_ACK` (it asks for errors only); our [`NftMessage`] carries the
//! same flags and the transaction adds `NLM_F_ACK`, tested in `netlink_socket.rs`.

mod netlink_support;

use backend_nftables::netlink::DataAttr;
use backend_nftables::netlink::{
    chain::{hook, POLICY_ACCEPT, POLICY_DROP},
    data::{value, Verdict},
    expr::{
        ct_state, ct_status, nat_flags, reg, CmpOp, CtKey, DynsetAttr, LookupAttr, MetaKey,
        NatType, PayloadBase, NFPROTO_IPV4_FAMILY,
    },
    rule::comment_userdata,
    set::{concat_fields, datatype},
    ChainAttr, Expr, GenAttr, Hook, MsgType, NftMessage, NftObject, ProtoFamily, RuleAttr, SetAttr,
    SetDescAttr, SetElemAttr, SetElemListAttr, SetFlags, TableAttr,
};
use netlink_support::{assert_both_ways, datagrams, emit, masked, parse, split};

const TABLE: &str = "svcptest";

// === the objects of add_ruleset.nft, as nft writes them ===

fn table(comment: &str) -> NftMessage {
    NftMessage::new(
        MsgType::NewTable,
        ProtoFamily::Inet,
        NftObject::Table(vec![
            TableAttr::Name(TABLE.into()),
            TableAttr::Flags(0),
            TableAttr::Userdata(comment_userdata(comment).expect("short")),
        ]),
    )
}

fn base_chain(name: &str, kind: &str, policy: u32, at: Hook, priority: i32) -> NftMessage {
    NftMessage::new(
        MsgType::NewChain,
        ProtoFamily::Inet,
        NftObject::Chain(vec![
            ChainAttr::Table(TABLE.into()),
            ChainAttr::Name(name.into()),
            ChainAttr::Type(kind.into()),
            ChainAttr::Policy(policy),
            ChainAttr::Hook(hook(at, priority)),
        ]),
    )
}

fn chain(name: &str) -> NftMessage {
    NftMessage::new(
        MsgType::NewChain,
        ProtoFamily::Inet,
        NftObject::Chain(vec![
            ChainAttr::Table(TABLE.into()),
            ChainAttr::Name(name.into()),
        ]),
    )
}

fn set(attrs: Vec<SetAttr>) -> NftMessage {
    let mut all = vec![SetAttr::Table(TABLE.into())];
    all.extend(attrs);
    NftMessage::new(MsgType::NewSet, ProtoFamily::Inet, NftObject::Set(all))
}

fn elements(set: &str, set_id: Option<u32>, elements: Vec<Vec<SetElemAttr>>) -> NftMessage {
    let mut attrs = vec![
        SetElemListAttr::Table(TABLE.into()),
        SetElemListAttr::Set(set.into()),
    ];
    attrs.extend(set_id.map(SetElemListAttr::SetId));
    attrs.push(SetElemListAttr::Elements(elements));
    NftMessage::new(
        MsgType::NewSetElem,
        ProtoFamily::Inet,
        NftObject::SetElems(attrs),
    )
}

fn rule(chain: &str, exprs: Vec<Expr>) -> NftMessage {
    NftMessage::new(
        MsgType::NewRule,
        ProtoFamily::Inet,
        NftObject::Rule(vec![
            RuleAttr::Table(TABLE.into()),
            RuleAttr::Chain(chain.into()),
            RuleAttr::Expressions(exprs),
        ]),
    )
}

/// Fields of a concatenation, each in its own 4-byte-aligned slot (`NFT_REG32_SIZE`).
fn concat(fields: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in fields {
        out.extend_from_slice(f);
        out.resize((out.len() + 3) & !3, 0);
    }
    out
}

fn ip(a: [u8; 4]) -> Vec<u8> {
    a.to_vec()
}

fn hexbytes(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// `nft` names sets made in the same batch by id too (`NFTA_LOOKUP_SET_ID`,
/// `NFTA_DYNSET_SET_ID`, right after the name).
fn with_set_id(expr: Expr, id: u32) -> Expr {
    match expr {
        Expr::Lookup(mut attrs) => {
            let at = attrs
                .iter()
                .position(|a| matches!(a, LookupAttr::Set(_)))
                .expect("a set");
            attrs.insert(at + 1, LookupAttr::SetId(id));
            Expr::Lookup(attrs)
        }
        Expr::Dynset(mut attrs) => {
            attrs.push(DynsetAttr::SetId(id));
            Expr::Dynset(attrs)
        }
        other => other,
    }
}

/// `meta nfproto ipv4`: what `nft` puts before an `ip` match in an inet table.
fn nfproto_ipv4() -> [Expr; 2] {
    [
        Expr::meta_load(MetaKey::Nfproto, reg::REG_1),
        Expr::cmp(CmpOp::Eq, reg::REG_1, [2u8]),
    ]
}

fn l4proto(proto: u8) -> [Expr; 2] {
    [
        Expr::meta_load(MetaKey::L4proto, reg::REG_1),
        Expr::cmp(CmpOp::Eq, reg::REG_1, [proto]),
    ]
}

fn ip_daddr(dreg: u32) -> Expr {
    Expr::payload_load(PayloadBase::Network, 16, 4, dreg)
}

fn ip_saddr(dreg: u32) -> Expr {
    Expr::payload_load(PayloadBase::Network, 12, 4, dreg)
}

fn th_dport(dreg: u32) -> Expr {
    Expr::payload_load(PayloadBase::Transport, 2, 2, dreg)
}

fn verdict(v: Verdict) -> Expr {
    Expr::verdict(v)
}

fn goto(chain: &str) -> Vec<DataAttr> {
    Verdict::Goto(chain.into()).to_data()
}

/// `ct <key> <bits>`: load, mask, and test non-zero.
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

/// Every message of add_ruleset.nft between BATCH_BEGIN and BATCH_END, in nft's order.
fn add_ruleset() -> Vec<NftMessage> {
    const MARK: u32 = 0x4000;
    let service_ips_key =
        |a: [u8; 4], proto: u8, port: u16| concat(&[&ip(a), &[proto], &port.to_be_bytes()]);
    let mut out = vec![
        table("svcproxy test"),
        base_chain(
            "nat-prerouting",
            "nat",
            POLICY_ACCEPT,
            Hook::Prerouting,
            -100,
        ),
        base_chain("filter-input", "filter", POLICY_DROP, Hook::Input, 0),
        chain("services"),
        chain("services-check"),
        chain("service-a"),
        chain("mark-for-masquerade"),
        chain("masquerading"),
        base_chain(
            "nat-postrouting",
            "nat",
            POLICY_ACCEPT,
            Hook::Postrouting,
            100,
        ),
        // map service-ips { type ipv4_addr . inet_proto . inet_service : verdict }
        set(vec![
            SetAttr::Name("service-ips".into()),
            SetAttr::Flags(SetFlags::MAP),
            SetAttr::KeyType(datatype::concat(&[
                datatype::IPV4_ADDR,
                datatype::INET_PROTO,
                datatype::INET_SERVICE,
            ])),
            SetAttr::KeyLen(12),
            SetAttr::DataType(datatype::VERDICT_DATA),
            SetAttr::DataLen(0),
            SetAttr::Id(1),
            SetAttr::Userdata(hexbytes(
                "000400000000010400000000030800040d0000000100060400000000",
            )),
        ]),
        elements(
            "service-ips",
            Some(1),
            vec![
                vec![
                    SetElemAttr::Key(value(service_ips_key([198, 18, 0, 10], 6, 80))),
                    SetElemAttr::Data(goto("service-a")),
                ],
                vec![
                    SetElemAttr::Key(value(service_ips_key([198, 18, 0, 11], 17, 53))),
                    SetElemAttr::Data(Verdict::Drop.to_data()),
                ],
                vec![
                    SetElemAttr::Key(value(service_ips_key([198, 18, 0, 12], 6, 443))),
                    SetElemAttr::Data(Verdict::Jump("service-a".into()).to_data()),
                ],
                vec![
                    SetElemAttr::Key(value(service_ips_key([198, 18, 0, 13], 6, 22))),
                    SetElemAttr::Data(Verdict::Accept.to_data()),
                ],
            ],
        ),
        // map endpoints { typeof ip daddr . th dport . numgen random mod 2 : ip daddr . th dport }
        set(vec![
            SetAttr::Name("endpoints".into()),
            SetAttr::Flags(SetFlags::MAP),
            SetAttr::KeyType(datatype::concat(&[
                datatype::IPV4_ADDR,
                datatype::INET_SERVICE,
                datatype::INTEGER,
            ])),
            SetAttr::KeyLen(12),
            SetAttr::DataType(datatype::concat(&[
                datatype::IPV4_ADDR,
                datatype::INET_SERVICE,
            ])),
            SetAttr::DataLen(8),
            SetAttr::Id(2),
            SetAttr::Userdata(hexbytes(concat!(
                "000400000000010400000000035000040d00000001480014000407000000010c00040c0000",
                "0001040c0000000114000407000000010c00040b000000010402000000021a000417000000",
                "0112000401000000010402000000020400000000043400040d000000012c00140004070000",
                "00010c00040c00000001040c0000000114000407000000010c00040b000000010402000000",
                "060400000000"
            ))),
        ]),
        elements(
            "endpoints",
            Some(2),
            (0u32..2)
                .map(|slot| {
                    let key = concat(&[
                        &ip([198, 18, 0, 10]),
                        &80u16.to_be_bytes(),
                        &slot.to_ne_bytes(),
                    ]);
                    let data = concat(&[&ip([198, 18, 1, 1 + slot as u8]), &8080u16.to_be_bytes()]);
                    vec![SetElemAttr::Key(value(key)), SetElemAttr::Data(value(data))]
                })
                .collect(),
        ),
        // set affinity { type ipv4_addr; flags dynamic,timeout; timeout 3h }
        set(vec![
            SetAttr::Name("affinity".into()),
            SetAttr::Flags(SetFlags::TIMEOUT | SetFlags::EVAL),
            SetAttr::KeyType(datatype::IPV4_ADDR),
            SetAttr::KeyLen(4),
            SetAttr::Id(3),
            SetAttr::Timeout(3 * 3600 * 1000),
            SetAttr::Userdata(hexbytes("000402000000")),
        ]),
        elements(
            "affinity",
            Some(3),
            vec![vec![
                SetElemAttr::Timeout(3600 * 1000),
                SetElemAttr::Key(value(ip([198, 18, 5, 5]))),
            ]],
        ),
        // set cidrs { type ipv4_addr; flags interval }: 198.18.0.0/16 is [start, end).
        set(vec![
            SetAttr::Name("cidrs".into()),
            SetAttr::Flags(SetFlags::INTERVAL),
            SetAttr::KeyType(datatype::IPV4_ADDR),
            SetAttr::KeyLen(4),
            SetAttr::Id(4),
            SetAttr::Userdata(hexbytes("000402000000")),
        ]),
        elements(
            "cidrs",
            Some(4),
            vec![
                vec![
                    SetElemAttr::Flags(1),
                    SetElemAttr::Key(value(ip([0, 0, 0, 0]))),
                ],
                vec![SetElemAttr::Key(value(ip([198, 18, 0, 0])))],
                vec![
                    SetElemAttr::Flags(1),
                    SetElemAttr::Key(value(ip([198, 19, 0, 0]))),
                ],
            ],
        ),
        // set ranges { type ipv4_addr . inet_service; flags interval }: concatenated ranges
        // need the field lengths (NFTA_SET_DESC_CONCAT) and a closing key (KEY_END).
        set(vec![
            SetAttr::Name("ranges".into()),
            SetAttr::Flags(SetFlags::INTERVAL | SetFlags::CONCAT),
            SetAttr::KeyType(datatype::concat(&[
                datatype::IPV4_ADDR,
                datatype::INET_SERVICE,
            ])),
            SetAttr::KeyLen(8),
            SetAttr::Id(5),
            SetAttr::Desc(vec![concat_fields(&[4, 2])]),
            SetAttr::Userdata(hexbytes("000400000000030800040d0000000100")),
        ]),
        elements(
            "ranges",
            Some(5),
            vec![vec![
                SetElemAttr::Key(value(concat(&[&ip([198, 18, 0, 0]), &80u16.to_be_bytes()]))),
                SetElemAttr::KeyEnd(value(concat(&[
                    &ip([198, 18, 255, 255]),
                    &90u16.to_be_bytes(),
                ]))),
            ]],
        ),
    ];
    let [nf0, nf1] = nfproto_ipv4();
    let nfproto = || [nf0.clone(), nf1.clone()];
    out.extend([
        rule(
            "nat-prerouting",
            vec![verdict(Verdict::Jump("services".into()))],
        ),
        rule(
            "filter-input",
            [
                ct_bits(CtKey::State, ct_state::NEW).to_vec(),
                vec![verdict(Verdict::Jump("services-check".into()))],
            ]
            .concat(),
        ),
        // ip daddr . meta l4proto . th dport vmap @service-ips
        rule(
            "services",
            [
                nfproto().to_vec(),
                vec![
                    ip_daddr(reg::REG_1),
                    Expr::meta_load(MetaKey::L4proto, reg::reg32(1)),
                    th_dport(reg::reg32(2)),
                    with_set_id(Expr::lookup_map("service-ips", reg::REG_1, reg::VERDICT), 1),
                ],
            ]
            .concat(),
        ),
        rule(
            "services-check",
            [
                nfproto().to_vec(),
                vec![
                    ip_daddr(reg::REG_1),
                    with_set_id(Expr::lookup("cidrs", reg::REG_1, false), 4),
                    Expr::reject_icmp(3),
                ],
            ]
            .concat(),
        ),
        rule(
            "services-check",
            [
                nfproto().to_vec(),
                vec![
                    ip_daddr(reg::REG_1),
                    with_set_id(Expr::lookup("cidrs", reg::REG_1, true), 4),
                    Expr::counter(),
                    verdict(Verdict::Drop),
                ],
            ]
            .concat(),
        ),
        // fib daddr type local th dport 30000-32767 drop
        rule(
            "services-check",
            vec![
                Expr::fib_daddr_type(reg::REG_1),
                // RTN_LOCAL, host order.
                Expr::cmp(CmpOp::Eq, reg::REG_1, 2u32.to_ne_bytes()),
                th_dport(reg::REG_1),
                Expr::cmp(CmpOp::Gte, reg::REG_1, 30000u16.to_be_bytes()),
                Expr::cmp(CmpOp::Lte, reg::REG_1, 32767u16.to_be_bytes()),
                verdict(Verdict::Drop),
            ],
        ),
        rule(
            "services-check",
            [l4proto(6).to_vec(), vec![Expr::reject_tcp_reset()]].concat(),
        ),
        rule(
            "services-check",
            [
                ct_bits(CtKey::Status, ct_status::DNAT).to_vec(),
                vec![verdict(Verdict::Accept)],
            ]
            .concat(),
        ),
        // meta l4proto udp th dport != 1000-2000 drop
        rule(
            "services-check",
            [
                l4proto(17).to_vec(),
                vec![
                    th_dport(reg::REG_1),
                    Expr::range(
                        reg::REG_1,
                        true,
                        1000u16.to_be_bytes().to_vec(),
                        2000u16.to_be_bytes().to_vec(),
                    ),
                    verdict(Verdict::Drop),
                ],
            ]
            .concat(),
        ),
        rule(
            "service-a",
            [
                nfproto().to_vec(),
                vec![
                    ip_saddr(reg::REG_1),
                    with_set_id(Expr::dynset("affinity", true, reg::REG_1, None), 3),
                ],
            ]
            .concat(),
        ),
        rule(
            "service-a",
            [
                nfproto().to_vec(),
                vec![
                    ip_saddr(reg::REG_1),
                    with_set_id(
                        Expr::dynset("affinity", false, reg::REG_1, Some(600_000)),
                        3,
                    ),
                ],
            ]
            .concat(),
        ),
        // meta l4proto tcp dnat ip to ip daddr . th dport . numgen random mod 2 map @endpoints
        rule(
            "service-a",
            [
                l4proto(6).to_vec(),
                nfproto().to_vec(),
                vec![
                    ip_daddr(reg::REG_1),
                    th_dport(reg::reg32(1)),
                    Expr::numgen_random(2, reg::reg32(2)),
                    with_set_id(Expr::lookup_map("endpoints", reg::REG_1, reg::REG_1), 2),
                    Expr::nat(
                        NatType::Dnat,
                        NFPROTO_IPV4_FAMILY,
                        Some(reg::REG_1),
                        Some(reg::reg32(1)),
                        None,
                    ),
                ],
            ]
            .concat(),
        ),
        // meta l4proto tcp dnat ip to 198.18.1.1:8080
        rule(
            "service-a",
            [
                l4proto(6).to_vec(),
                vec![
                    Expr::immediate(reg::REG_1, [198, 18, 1, 1]),
                    Expr::immediate(reg::REG_2, 8080u16.to_be_bytes()),
                    Expr::nat(
                        NatType::Dnat,
                        NFPROTO_IPV4_FAMILY,
                        Some(reg::REG_1),
                        Some(reg::REG_2),
                        Some(nat_flags::PROTO_SPECIFIED),
                    ),
                ],
            ]
            .concat(),
        ),
        // meta mark set meta mark | 0x4000: (mark & ~0x4000) ^ 0x4000.
        rule(
            "mark-for-masquerade",
            vec![
                Expr::meta_load(MetaKey::Mark, reg::REG_1),
                Expr::bitwise(
                    reg::REG_1,
                    reg::REG_1,
                    (!MARK).to_ne_bytes().to_vec(),
                    MARK.to_ne_bytes().to_vec(),
                    true,
                ),
                Expr::meta_set(MetaKey::Mark, reg::REG_1),
            ],
        ),
        rule(
            "masquerading",
            vec![
                Expr::meta_load(MetaKey::Mark, reg::REG_1),
                Expr::bitwise(
                    reg::REG_1,
                    reg::REG_1,
                    MARK.to_ne_bytes().to_vec(),
                    vec![0; 4],
                    true,
                ),
                Expr::cmp(CmpOp::Eq, reg::REG_1, [0u8; 4]),
                verdict(Verdict::Return),
            ],
        ),
        rule(
            "masquerading",
            vec![
                Expr::meta_load(MetaKey::Mark, reg::REG_1),
                Expr::bitwise(
                    reg::REG_1,
                    reg::REG_1,
                    u32::MAX.to_ne_bytes().to_vec(),
                    MARK.to_ne_bytes().to_vec(),
                    true,
                ),
                Expr::meta_set(MetaKey::Mark, reg::REG_1),
            ],
        ),
        rule(
            "masquerading",
            vec![Expr::masq(nat_flags::PROTO_RANDOM_FULLY)],
        ),
        rule(
            "nat-postrouting",
            vec![verdict(Verdict::Jump("masquerading".into()))],
        ),
    ]);
    out
}

fn captured(text: &str) -> Vec<Vec<u8>> {
    let dgrams = datagrams(text);
    assert_eq!(dgrams.len(), 1, "one sendmsg: the whole transaction");
    split(&dgrams[0].1)
}

#[test]
fn every_message_of_a_ruleset_equals_what_nft_sends() {
    let raw = captured(include_str!("captures/add_ruleset.hex"));
    let ours = add_ruleset();
    assert_eq!(
        raw.len(),
        ours.len() + 2,
        "BEGIN, {} messages, END",
        ours.len()
    );
    assert_both_ways("batch begin", &raw[0], &NftMessage::batch_begin());
    assert_both_ways("batch end", &raw[raw.len() - 1], &NftMessage::batch_end());
    for (i, (raw, ours)) in raw[1..].iter().zip(&ours).enumerate() {
        let what = format!(
            "message {} ({})",
            i + 1,
            netlink_transport::Request::describe(ours)
        );
        assert_both_ways(&what, raw, ours);
    }
}

#[test]
fn deletes_flushes_inserts_and_element_changes_equal_what_nft_sends() {
    let raw = captured(include_str!("captures/edit_ruleset.hex"));
    let scratch = set(vec![
        SetAttr::Name("scratch".into()),
        SetAttr::Flags(SetFlags(0)),
        SetAttr::KeyType(datatype::IPV4_ADDR),
        SetAttr::KeyLen(4),
        SetAttr::Id(1),
        SetAttr::Userdata(hexbytes("000402000000")),
    ]);
    let service_key = concat(&[&ip([198, 18, 0, 11]), &[17], &53u16.to_be_bytes()]);
    let new_key = concat(&[&ip([198, 18, 0, 14]), &[17], &53u16.to_be_bytes()]);
    let del = |msg_type, object| NftMessage::new(msg_type, ProtoFamily::Inet, object);
    let mut insert = rule(
        "services-check",
        [l4proto(17).to_vec(), vec![verdict(Verdict::Drop)]].concat(),
    );
    if let NftObject::Rule(attrs) = &mut insert.object {
        // add rule ... position 17: after the rule of handle 17.
        attrs.push(RuleAttr::Position(17));
    }
    let expected = vec![
        del(
            MsgType::DelSetElem,
            NftObject::SetElems(vec![
                SetElemListAttr::Table(TABLE.into()),
                SetElemListAttr::Set("service-ips".into()),
                SetElemListAttr::Elements(vec![vec![SetElemAttr::Key(value(service_key))]]),
            ]),
        ),
        // nft names the set by the id of its cache here; the kernel finds it by name first.
        elements(
            "service-ips",
            Some(2),
            vec![vec![
                SetElemAttr::Key(value(new_key)),
                SetElemAttr::Data(goto("service-a")),
            ]],
        ),
        del(
            MsgType::DelRule,
            NftObject::Rule(vec![
                RuleAttr::Table(TABLE.into()),
                RuleAttr::Chain("services-check".into()),
                RuleAttr::Handle(18),
            ]),
        ),
        insert,
        // flush chain: DELRULE without a handle.
        del(
            MsgType::DelRule,
            NftObject::Rule(vec![
                RuleAttr::Table(TABLE.into()),
                RuleAttr::Chain("mark-for-masquerade".into()),
            ]),
        ),
        del(
            MsgType::DelChain,
            NftObject::Chain(vec![
                ChainAttr::Table(TABLE.into()),
                ChainAttr::Name("mark-for-masquerade".into()),
            ]),
        ),
        scratch,
        del(
            MsgType::DelSet,
            NftObject::Set(vec![
                SetAttr::Table(TABLE.into()),
                SetAttr::Name("scratch".into()),
            ]),
        ),
        del(
            MsgType::DelTable,
            NftObject::Table(vec![TableAttr::Name(TABLE.into())]),
        ),
    ];
    assert_eq!(raw.len(), expected.len() + 2);
    for (i, (raw, ours)) in raw[1..].iter().zip(&expected).enumerate() {
        let what = format!(
            "message {} ({})",
            i + 1,
            netlink_transport::Request::describe(ours)
        );
        assert_both_ways(&what, raw, ours);
    }
}

/// The table message, one commented line per field.
#[test]
fn a_table_with_a_comment_field_by_field() {
    // nft -f: table inet svcptest { comment "svcproxy test" }
    #[rustfmt::skip]
    let raw: Vec<u8> = vec![
        0x40, 0x00, 0x00, 0x00, // nlmsg_len 64
        0x00, 0x0a,             // nlmsg_type NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWTABLE
        0x01, 0x00,             // nlmsg_flags NLM_F_REQUEST
        0x00, 0x00, 0x00, 0x00, // nlmsg_seq (masked)
        0x00, 0x00, 0x00, 0x00, // nlmsg_pid
        0x01,                   // nfgen_family NFPROTO_INET
        0x00,                   // version NFNETLINK_V0
        0x00, 0x00,             // res_id
        0x0d, 0x00, 0x01, 0x00, // NFTA_TABLE_NAME, 13 bytes
        b's', b'v', b'c', b'p', b't', b'e', b's', b't', 0x00, // "svcptest\0"
        0x00, 0x00, 0x00,       // padding
        0x08, 0x00, 0x02, 0x00, // NFTA_TABLE_FLAGS, 8 bytes
        0x00, 0x00, 0x00, 0x00, // 0, big-endian
        0x14, 0x00, 0x06, 0x00, // NFTA_TABLE_USERDATA, 20 bytes
        0x00, 0x0e,             // TLV: NFTNL_UDATA_TABLE_COMMENT, 14 bytes
        b's', b'v', b'c', b'p', b'r', b'o', b'x', b'y', b' ', b't', b'e', b's', b't', 0x00,
    ];
    let captured = captured(include_str!("captures/add_ruleset.hex"));
    assert_eq!(masked(&captured[1]), raw, "the capture says the same");
    assert_both_ways("table", &raw, &table("svcproxy test"));
}

/// A base chain, one commented line per field: type, policy, and the hook's priority as a
/// signed big-endian number.
#[test]
fn a_base_chain_field_by_field() {
    // nft -f: chain nat-prerouting { type nat hook prerouting priority dstnat; policy accept; }
    #[rustfmt::skip]
    let raw: Vec<u8> = vec![
        0x5c, 0x00, 0x00, 0x00, // nlmsg_len 92
        0x03, 0x0a,             // NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWCHAIN
        0x01, 0x04,             // NLM_F_REQUEST | NLM_F_CREATE
        0x00, 0x00, 0x00, 0x00, // nlmsg_seq (masked)
        0x00, 0x00, 0x00, 0x00, // nlmsg_pid
        0x01, 0x00, 0x00, 0x00, // nfgenmsg: NFPROTO_INET, NFNETLINK_V0, res_id 0
        0x0d, 0x00, 0x01, 0x00, // NFTA_CHAIN_TABLE, 13 bytes
        b's', b'v', b'c', b'p', b't', b'e', b's', b't', 0x00, 0x00, 0x00, 0x00,
        0x13, 0x00, 0x03, 0x00, // NFTA_CHAIN_NAME, 19 bytes
        b'n', b'a', b't', b'-', b'p', b'r', b'e', b'r', b'o', b'u', b't', b'i', b'n', b'g', 0x00,
        0x00,                   // padding
        0x08, 0x00, 0x07, 0x00, // NFTA_CHAIN_TYPE, 8 bytes
        b'n', b'a', b't', 0x00,
        0x08, 0x00, 0x05, 0x00, // NFTA_CHAIN_POLICY
        0x00, 0x00, 0x00, 0x01, // NF_ACCEPT
        0x14, 0x00, 0x04, 0x80, // NFTA_CHAIN_HOOK | NLA_F_NESTED, 20 bytes
        0x08, 0x00, 0x01, 0x00, //   NFTA_HOOK_HOOKNUM
        0x00, 0x00, 0x00, 0x00, //   NF_INET_PRE_ROUTING
        0x08, 0x00, 0x02, 0x00, //   NFTA_HOOK_PRIORITY
        0xff, 0xff, 0xff, 0x9c, //   -100 (dstnat)
    ];
    assert_both_ways(
        "base chain",
        &raw,
        &base_chain(
            "nat-prerouting",
            "nat",
            POLICY_ACCEPT,
            Hook::Prerouting,
            -100,
        ),
    );
}

/// A vmap element, one commented line per field: a concatenated key in 4-byte slots and a
/// goto verdict.
#[test]
fn a_verdict_map_element_field_by_field() {
    // nft -f: add element inet svcptest service-ips { 198.18.0.14 . udp . 53 : goto service-a }
    #[rustfmt::skip]
    let raw: Vec<u8> = vec![
        0x78, 0x00, 0x00, 0x00, // nlmsg_len 120
        0x0c, 0x0a,             // NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWSETELEM
        0x01, 0x04,             // NLM_F_REQUEST | NLM_F_CREATE
        0x00, 0x00, 0x00, 0x00, // nlmsg_seq (masked)
        0x00, 0x00, 0x00, 0x00, // nlmsg_pid
        0x01, 0x00, 0x00, 0x00, // nfgenmsg: NFPROTO_INET
        0x0d, 0x00, 0x01, 0x00, // NFTA_SET_ELEM_LIST_TABLE
        b's', b'v', b'c', b'p', b't', b'e', b's', b't', 0x00, 0x00, 0x00, 0x00,
        0x10, 0x00, 0x02, 0x00, // NFTA_SET_ELEM_LIST_SET, 16 bytes
        b's', b'e', b'r', b'v', b'i', b'c', b'e', b'-', b'i', b'p', b's', 0x00,
        0x08, 0x00, 0x04, 0x00, // NFTA_SET_ELEM_LIST_SET_ID
        0x00, 0x00, 0x00, 0x02, // 2
        0x3c, 0x00, 0x03, 0x80, // NFTA_SET_ELEM_LIST_ELEMENTS, nested, 60 bytes
        0x38, 0x00, 0x01, 0x80, //   element 1, nested
        0x14, 0x00, 0x01, 0x80, //     NFTA_SET_ELEM_KEY, nested
        0x10, 0x00, 0x01, 0x00, //       NFTA_DATA_VALUE, 12 bytes:
        0xc6, 0x12, 0x00, 0x0e, //         198.18.0.14
        0x11, 0x00, 0x00, 0x00, //         udp, in a 4-byte slot
        0x00, 0x35, 0x00, 0x00, //         53, big-endian, in a 4-byte slot
        0x20, 0x00, 0x02, 0x80, //     NFTA_SET_ELEM_DATA, nested
        0x1c, 0x00, 0x02, 0x80, //       NFTA_DATA_VERDICT, nested
        0x08, 0x00, 0x01, 0x00, //         NFTA_VERDICT_CODE
        0xff, 0xff, 0xff, 0xfc, //         NFT_GOTO (-4)
        0x0e, 0x00, 0x02, 0x00, //         NFTA_VERDICT_CHAIN, 14 bytes
        b's', b'e', b'r', b'v', b'i', b'c', b'e', b'-', b'a', 0x00, 0x00, 0x00,
    ];
    let captured = captured(include_str!("captures/edit_ruleset.hex"));
    assert_eq!(masked(&captured[2]), raw, "the capture says the same");
    let key = concat(&[&ip([198, 18, 0, 14]), &[17], &53u16.to_be_bytes()]);
    assert_both_ways(
        "vmap element",
        &raw,
        &elements(
            "service-ips",
            Some(2),
            vec![vec![
                SetElemAttr::Key(value(key)),
                SetElemAttr::Data(goto("service-a")),
            ]],
        ),
    );
}

#[test]
fn emitted_length_is_buffer_len_for_every_captured_message() {
    use netlink_packet_core::Emitable;
    for message in add_ruleset() {
        assert_eq!(emit(&message).len(), 16 + message.buffer_len());
        assert_eq!(parse(&emit(&message)), message);
    }
}

#[test]
fn a_set_description_with_size_and_concat_round_trips() {
    let message = set(vec![
        SetAttr::Name("sized".into()),
        SetAttr::Desc(vec![SetDescAttr::Size(1024), concat_fields(&[4, 1, 2])]),
    ]);
    assert_eq!(parse(&emit(&message)), message);
}

// === the kernel's dump replies for the same table (captures/list_table.hex) ===

/// Every nf_tables message the kernel sent while `nft list table` read the table back.
fn dumped() -> Vec<NftMessage> {
    datagrams(include_str!("captures/list_table.hex"))
        .into_iter()
        .filter(|(kind, _)| kind == "recvmsg")
        .flat_map(|(_, d)| split(&d))
        .filter(|raw| raw[5] == 0x0a)
        .map(|raw| parse(&raw))
        .collect()
}

fn objects<T>(pick: impl Fn(NftObject) -> Option<T>) -> Vec<T> {
    dumped()
        .into_iter()
        .filter_map(|m| pick(m.object))
        .collect()
}

#[test]
fn dumped_table_and_chains_parse_to_what_was_added() {
    let tables = objects(|o| match o {
        NftObject::Table(a) => Some(a),
        _ => None,
    });
    assert_eq!(tables.len(), 1, "{tables:?}");
    let table = &tables[0];
    assert!(table.contains(&TableAttr::Name(TABLE.into())), "{table:?}");
    assert!(table.contains(&TableAttr::Handle(1)), "{table:?}");
    let comment = table.iter().find_map(|a| match a {
        TableAttr::Userdata(u) => backend_nftables::netlink::rule::comment_of_userdata(u),
        _ => None,
    });
    assert_eq!(comment.as_deref(), Some("svcproxy test"));

    let chains = objects(|o| match o {
        NftObject::Chain(a) => Some(a),
        _ => None,
    });
    let added: Vec<Vec<ChainAttr>> = add_ruleset()
        .into_iter()
        .filter_map(|m| match m.object {
            NftObject::Chain(a) => Some(a),
            _ => None,
        })
        .collect();
    assert_eq!(chains.len(), added.len());
    for (handle, (dumped, added)) in (1u64..).zip(chains.iter().zip(&added)) {
        // The kernel adds the handle, the use count and, for base chains, NFT_CHAIN_BASE.
        for attr in added {
            assert!(
                dumped.contains(attr),
                "chain {handle}: {attr:?} not in {dumped:?}"
            );
        }
        assert!(dumped.contains(&ChainAttr::Handle(handle)), "{dumped:?}");
        let is_base = added.iter().any(|a| matches!(a, ChainAttr::Hook(_)));
        assert_eq!(dumped.contains(&ChainAttr::Flags(1)), is_base, "{dumped:?}");
    }
}

#[test]
fn dumped_sets_and_elements_parse_to_what_was_added() {
    let sets = objects(|o| match o {
        NftObject::Set(a) => Some(a),
        _ => None,
    });
    let added: Vec<Vec<SetAttr>> = add_ruleset()
        .into_iter()
        .filter_map(|m| match m.object {
            NftObject::Set(a) => Some(a),
            _ => None,
        })
        .collect();
    assert_eq!(sets.len(), added.len());
    for (dumped, added) in sets.iter().zip(&added) {
        for attr in added {
            match attr {
                // Set ids live for one transaction only.
                SetAttr::Id(_) => {}
                // nft sends 0 for a verdict map's data; the kernel keeps NFT_REG_SIZE.
                SetAttr::DataLen(0) => {
                    assert!(dumped.contains(&SetAttr::DataLen(16)), "{dumped:?}")
                }
                attr => assert!(dumped.contains(attr), "{attr:?} not in {dumped:?}"),
            }
        }
    }

    let lists = objects(|o| match o {
        NftObject::SetElems(a) => Some(a),
        _ => None,
    });
    let elements_of = |set: &str| -> Vec<Vec<SetElemAttr>> {
        lists
            .iter()
            .filter(|l| l.contains(&SetElemListAttr::Set(set.into())))
            .flat_map(|l| {
                l.iter().filter_map(|a| match a {
                    SetElemListAttr::Elements(e) => Some(e.clone()),
                    _ => None,
                })
            })
            .flatten()
            .collect()
    };
    // The hash set returns elements in its own order: compare as sets.
    let mut vmap = elements_of("service-ips");
    vmap.sort_by_key(|e| format!("{e:?}"));
    let mut want: Vec<Vec<SetElemAttr>> = add_ruleset()
        .into_iter()
        .filter_map(|m| match m.object {
            NftObject::SetElems(a) if a.contains(&SetElemListAttr::Set("service-ips".into())) => {
                a.into_iter().find_map(|x| match x {
                    SetElemListAttr::Elements(e) => Some(e),
                    _ => None,
                })
            }
            _ => None,
        })
        .flatten()
        .collect();
    want.sort_by_key(|e| format!("{e:?}"));
    assert_eq!(vmap, want);

    let affinity = elements_of("affinity");
    assert_eq!(affinity.len(), 1, "{affinity:?}");
    assert!(affinity[0].contains(&SetElemAttr::Key(value(ip([198, 18, 5, 5])))));
    assert!(affinity[0].contains(&SetElemAttr::Timeout(3_600_000)));
    let expiration = affinity[0].iter().find_map(|a| match a {
        SetElemAttr::Expiration(ms) => Some(*ms),
        _ => None,
    });
    assert!(
        matches!(expiration, Some(ms) if ms > 3_500_000 && ms <= 3_600_000),
        "an element with a timeout dumps its time left: {expiration:?}"
    );
    assert_eq!(elements_of("endpoints").len(), 2);
    assert_eq!(elements_of("ranges").len(), 1);
}

/// What the kernel dumps for an expression we added: the same attributes, except that it
/// fills in what it derived (`nft_*_dump`), and that set ids do not outlive the transaction.
fn as_dumped(expr: &Expr) -> Expr {
    use backend_nftables::netlink::expr::{BitwiseAttr, CounterAttr, NatAttr, RejectAttr};
    match expr.clone() {
        Expr::Lookup(a) => {
            let mut a: Vec<LookupAttr> = a
                .into_iter()
                .filter(|x| !matches!(x, LookupAttr::SetId(_)))
                .collect();
            if !a.iter().any(|x| matches!(x, LookupAttr::Flags(_))) {
                a.push(LookupAttr::Flags(0));
            }
            Expr::Lookup(a)
        }
        // `nft_dynset_dump` always sends the timeout (0: the set's) and the flags.
        Expr::Dynset(a) => {
            let mut a: Vec<DynsetAttr> = a
                .into_iter()
                .filter(|x| !matches!(x, DynsetAttr::SetId(_)))
                .collect();
            if !a.iter().any(|x| matches!(x, DynsetAttr::Timeout(_))) {
                a.push(DynsetAttr::Timeout(0));
            }
            a.push(DynsetAttr::Flags(0));
            Expr::Dynset(a)
        }
        Expr::Bitwise(a) if !a.iter().any(|x| matches!(x, BitwiseAttr::Op(_))) => {
            let mut a = a;
            a.push(BitwiseAttr::Op(0));
            Expr::Bitwise(a)
        }
        // `nft_reject_dump` sends a code for the ICMP types only, not for a TCP reset (1).
        Expr::Reject(a) if a.contains(&RejectAttr::Type(1)) => Expr::Reject(
            a.into_iter()
                .filter(|x| !matches!(x, RejectAttr::IcmpCode(_)))
                .collect(),
        ),
        Expr::Counter(_) => Expr::Counter(vec![CounterAttr::Bytes(0), CounterAttr::Packets(0)]),
        Expr::Nat(a) => {
            let mut out = Vec::new();
            let mut flags = 0;
            for x in a {
                match x {
                    NatAttr::RegAddrMin(r) => {
                        flags |= nat_flags::MAP_IPS;
                        out.extend([NatAttr::RegAddrMin(r), NatAttr::RegAddrMax(r)]);
                    }
                    NatAttr::RegProtoMin(r) => {
                        flags |= nat_flags::PROTO_SPECIFIED;
                        out.extend([NatAttr::RegProtoMin(r), NatAttr::RegProtoMax(r)]);
                    }
                    NatAttr::Flags(f) => flags |= f,
                    x => out.push(x),
                }
            }
            out.push(NatAttr::Flags(flags));
            Expr::Nat(out)
        }
        other => other,
    }
}

#[test]
fn dumped_rules_parse_to_the_expressions_that_were_added() {
    let rules = objects(|o| match o {
        NftObject::Rule(a) => Some(a),
        _ => None,
    });
    let added: Vec<Vec<RuleAttr>> = add_ruleset()
        .into_iter()
        .filter_map(|m| match m.object {
            NftObject::Rule(a) => Some(a),
            _ => None,
        })
        .collect();
    assert_eq!(rules.len(), added.len());
    let exprs = |attrs: &[RuleAttr]| -> Vec<Expr> {
        attrs
            .iter()
            .find_map(|a| match a {
                RuleAttr::Expressions(e) => Some(e.clone()),
                _ => None,
            })
            .expect("expressions")
    };
    for (handle, (dumped, added)) in (14u64..).zip(rules.iter().zip(&added)) {
        assert!(dumped.contains(&RuleAttr::Handle(handle)), "{dumped:?}");
        let mut got = exprs(dumped);
        let want: Vec<Expr> = exprs(added).iter().map(as_dumped).collect();
        // Attribute order inside an expression is the kernel's own: compare sorted.
        let sort = |e: &mut Vec<Expr>| {
            for x in e.iter_mut() {
                *x = sorted(x);
            }
        };
        sort(&mut got);
        let mut want = want;
        sort(&mut want);
        assert_eq!(got, want, "rule handle {handle}");
    }
}

/// `expr` with its attributes in a canonical order (by their debug text).
fn sorted(expr: &Expr) -> Expr {
    fn s<T: std::fmt::Debug + Clone>(a: &[T]) -> Vec<T> {
        let mut v = a.to_vec();
        v.sort_by_key(|x| format!("{x:?}"));
        v
    }
    match expr {
        Expr::Payload(a) => Expr::Payload(s(a)),
        Expr::Meta(a) => Expr::Meta(s(a)),
        Expr::Cmp(a) => Expr::Cmp(s(a)),
        Expr::Bitwise(a) => Expr::Bitwise(s(a)),
        Expr::Lookup(a) => Expr::Lookup(s(a)),
        Expr::Immediate(a) => Expr::Immediate(s(a)),
        Expr::Nat(a) => Expr::Nat(s(a)),
        Expr::Masq(a) => Expr::Masq(s(a)),
        Expr::Numgen(a) => Expr::Numgen(s(a)),
        Expr::Ct(a) => Expr::Ct(s(a)),
        Expr::Counter(a) => Expr::Counter(s(a)),
        Expr::Reject(a) => Expr::Reject(s(a)),
        Expr::Dynset(a) => Expr::Dynset(s(a)),
        Expr::Fib(a) => Expr::Fib(s(a)),
        Expr::Range(a) => Expr::Range(s(a)),
        other => other.clone(),
    }
}

/// `raw` (a message of flat attributes) with the padding after each attribute zeroed: `nft`
/// leaves it uninitialised in its dump requests (stack bytes), and the kernel ignores it.
fn zero_padding(raw: &[u8]) -> Vec<u8> {
    let mut out = raw.to_vec();
    let mut at = 20; // nlmsghdr + nfgenmsg
    while at + 4 <= out.len() {
        let len = usize::from(u16::from_ne_bytes([out[at], out[at + 1]]));
        let end = (at + len + 3) & !3;
        out[(at + len).min(raw.len())..end.min(raw.len())].fill(0);
        at = end.max(at + 4);
    }
    out
}

/// Our dump requests are `nft`'s: `GETRULE` and `GETSET` filtered by table, with
/// `NLM_F_DUMP` (which `Connection::dump` adds), and `GETGEN` (`nft` asks without
/// `NLM_F_ACK`; `Connection::request` adds it).
#[test]
fn dump_and_generation_requests_equal_what_nft_sends() {
    let sent: Vec<Vec<u8>> = datagrams(include_str!("captures/list_table.hex"))
        .into_iter()
        .filter(|(kind, _)| kind == "sendto")
        .map(|(_, d)| d)
        .collect();
    let find = |ty: u16| {
        sent.iter()
            .find(|d| u16::from_ne_bytes([d[4], d[5]]) == ty)
            .map(|d| zero_padding(&masked(d)))
            .unwrap_or_else(|| panic!("no request of type {ty:#x} in the capture"))
    };
    let with_flags = |message: NftMessage, flags: u16| {
        let mut bytes = emit(&message);
        let old = u16::from_ne_bytes([bytes[6], bytes[7]]);
        bytes[6..8].copy_from_slice(&(old | flags).to_ne_bytes());
        bytes
    };
    const NLM_F_DUMP: u16 = 0x300;
    let rules = NftMessage::new(
        MsgType::GetRule,
        ProtoFamily::Inet,
        NftObject::Rule(vec![RuleAttr::Table(TABLE.into())]),
    );
    assert_eq!(with_flags(rules, NLM_F_DUMP), find(0x0a07));
    let sets = NftMessage::new(
        MsgType::GetSet,
        ProtoFamily::Inet,
        NftObject::Set(vec![SetAttr::Table(TABLE.into())]),
    );
    assert_eq!(with_flags(sets, NLM_F_DUMP), find(0x0a0a));
    let generation = NftMessage::new(
        MsgType::GetGen,
        ProtoFamily::Unspec,
        NftObject::Gen(Vec::new()),
    );
    assert_eq!(with_flags(generation, 0), find(0x0a10));
    // And the kernel's answer: NFT_MSG_NEWGEN with the generation, our pid and name.
    let reply = datagrams(include_str!("captures/list_table.hex"))
        .into_iter()
        .find(|(kind, d)| kind == "recvmsg" && u16::from_ne_bytes([d[4], d[5]]) == 0x0a0f)
        .expect("a NEWGEN reply");
    let parsed = parse(&reply.1);
    assert_eq!(parsed.msg_type, MsgType::NewGen);
    let NftObject::Gen(attrs) = parsed.object else {
        panic!("{parsed:?}")
    };
    assert!(
        attrs.contains(&GenAttr::ProcName("nft".into())),
        "{attrs:?}"
    );
    assert!(
        attrs.iter().any(|a| matches!(a, GenAttr::Id(_))),
        "{attrs:?}"
    );
}
