//! [`NftSocket`] against the real kernel, in a network namespace of the test's own: a
//! transaction builds a table with a base chain, a verdict map keyed `ipv4_addr . inet_proto
//! . inet_service`, a map with concatenated data, and a numgen + DNAT map rule; dumps read it
//! back as sent, and `nft` lists it. A transaction with one bad element reports the error on
//! that element's message and changes nothing.

use backend_nftables::netlink::{
    chain::{hook, POLICY_ACCEPT},
    committed,
    data::{value, Verdict},
    expr::{reg, CmpOp, MetaKey, NatType, PayloadBase, NFPROTO_IPV4_FAMILY},
    set::datatype,
    ChainAttr, Expr, Hook, MsgType, NftMessage, NftObject, NftSocket, ProtoFamily, RuleAttr,
    SetAttr, SetElemAttr, SetElemListAttr, SetFlags, TableAttr,
};
use netlink_transport::{errno::ENOENT, NetlinkError};
use testkit::netns::Netns;

const TABLE: &str = "svcproxy-t";

fn new(msg_type: MsgType, object: NftObject) -> NftMessage {
    NftMessage::new(msg_type, ProtoFamily::Inet, object)
}

fn concat(fields: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in fields {
        out.extend_from_slice(f);
        out.resize((out.len() + 3) & !3, 0);
    }
    out
}

fn vip_key(last: u8, proto: u8, port: u16) -> Vec<u8> {
    concat(&[&[198, 18, 0, last], &[proto], &port.to_be_bytes()])
}

fn vmap_element(last: u8, proto: u8, port: u16, verdict: Verdict) -> Vec<SetElemAttr> {
    vec![
        SetElemAttr::Key(value(vip_key(last, proto, port))),
        SetElemAttr::Data(verdict.to_data()),
    ]
}

fn elements(set: &str, elements: Vec<Vec<SetElemAttr>>) -> NftMessage {
    new(
        MsgType::NewSetElem,
        NftObject::SetElems(vec![
            SetElemListAttr::Table(TABLE.into()),
            SetElemListAttr::Set(set.into()),
            SetElemListAttr::Elements(elements),
        ]),
    )
}

fn chains() -> Vec<Vec<ChainAttr>> {
    vec![
        vec![
            ChainAttr::Table(TABLE.into()),
            ChainAttr::Name("nat-prerouting".into()),
            ChainAttr::Type("nat".into()),
            ChainAttr::Policy(POLICY_ACCEPT),
            ChainAttr::Hook(hook(Hook::Prerouting, -100)),
        ],
        vec![
            ChainAttr::Table(TABLE.into()),
            ChainAttr::Name("service-a".into()),
        ],
    ]
}

fn sets() -> Vec<Vec<SetAttr>> {
    vec![
        vec![
            SetAttr::Table(TABLE.into()),
            SetAttr::Name("service-ips".into()),
            SetAttr::Flags(SetFlags::MAP),
            SetAttr::KeyType(datatype::concat(&[
                datatype::IPV4_ADDR,
                datatype::INET_PROTO,
                datatype::INET_SERVICE,
            ])),
            SetAttr::KeyLen(12),
            SetAttr::DataType(datatype::VERDICT_DATA),
            SetAttr::DataLen(16),
            SetAttr::Id(1),
        ],
        vec![
            SetAttr::Table(TABLE.into()),
            SetAttr::Name("endpoints".into()),
            SetAttr::Flags(SetFlags::MAP),
            SetAttr::KeyType(datatype::concat(&[
                datatype::IPV4_ADDR,
                datatype::INET_SERVICE,
                datatype::MARK,
            ])),
            SetAttr::KeyLen(12),
            SetAttr::DataType(datatype::concat(&[
                datatype::IPV4_ADDR,
                datatype::INET_SERVICE,
            ])),
            SetAttr::DataLen(8),
            SetAttr::Id(2),
        ],
    ]
}

fn endpoint_elements() -> Vec<Vec<SetElemAttr>> {
    (0u8..2)
        .map(|slot| {
            let key = concat(&[
                &[198, 18, 0, 10],
                &80u16.to_be_bytes(),
                &u32::from(slot).to_ne_bytes(),
            ]);
            let data = concat(&[&[198, 18, 1, 1 + slot], &8080u16.to_be_bytes()]);
            vec![SetElemAttr::Key(value(key)), SetElemAttr::Data(value(data))]
        })
        .collect()
}

fn rules() -> Vec<(&'static str, Vec<Expr>)> {
    let nfproto = [
        Expr::meta_load(MetaKey::Nfproto, reg::REG_1),
        Expr::cmp(CmpOp::Eq, reg::REG_1, [2u8]),
    ];
    vec![
        // ip daddr . meta l4proto . th dport vmap @service-ips
        (
            "nat-prerouting",
            [
                nfproto.to_vec(),
                vec![
                    Expr::payload_load(PayloadBase::Network, 16, 4, reg::REG_1),
                    Expr::meta_load(MetaKey::L4proto, reg::reg32(1)),
                    Expr::payload_load(PayloadBase::Transport, 2, 2, reg::reg32(2)),
                    Expr::lookup_map("service-ips", reg::REG_1, reg::VERDICT),
                ],
            ]
            .concat(),
        ),
        // meta l4proto tcp dnat ip to ip daddr . th dport . numgen random mod 2 map @endpoints
        (
            "service-a",
            [
                vec![
                    Expr::meta_load(MetaKey::L4proto, reg::REG_1),
                    Expr::cmp(CmpOp::Eq, reg::REG_1, [6u8]),
                ],
                nfproto.to_vec(),
                vec![
                    Expr::payload_load(PayloadBase::Network, 16, 4, reg::REG_1),
                    Expr::payload_load(PayloadBase::Transport, 2, 2, reg::reg32(1)),
                    Expr::numgen_random(2, reg::reg32(2)),
                    Expr::lookup_map("endpoints", reg::REG_1, reg::REG_1),
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
    ]
}

fn build() -> Vec<NftMessage> {
    let mut out = vec![new(
        MsgType::NewTable,
        NftObject::Table(vec![TableAttr::Name(TABLE.into()), TableAttr::Flags(0)]),
    )];
    out.extend(
        chains()
            .into_iter()
            .map(|c| new(MsgType::NewChain, NftObject::Chain(c))),
    );
    out.extend(
        sets()
            .into_iter()
            .map(|s| new(MsgType::NewSet, NftObject::Set(s))),
    );
    out.push(elements(
        "service-ips",
        vec![
            vmap_element(10, 6, 80, Verdict::Goto("service-a".into())),
            vmap_element(11, 17, 53, Verdict::Drop),
        ],
    ));
    out.push(elements("endpoints", endpoint_elements()));
    out.extend(rules().into_iter().map(|(chain, exprs)| {
        new(
            MsgType::NewRule,
            NftObject::Rule(vec![
                RuleAttr::Table(TABLE.into()),
                RuleAttr::Chain(chain.into()),
                RuleAttr::Expressions(exprs),
            ]),
        )
    }));
    out
}

fn sorted<T: std::fmt::Debug>(mut v: Vec<T>) -> Vec<T> {
    v.sort_by_key(|x| format!("{x:?}"));
    v
}

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn a_transaction_builds_the_table_and_dumps_read_it_back_as_sent() {
    let ns = Netns::new("nft");
    ns.run(|| {
        let mut socket = NftSocket::open().expect("netfilter socket");
        let before = socket.generation().expect("generation");
        let messages = build();
        let outcome = socket.transaction(&messages);
        assert!(committed(&outcome), "{outcome:#?}");
        assert_eq!(
            socket.generation().expect("generation"),
            before.wrapping_add(1),
            "one transaction, one generation"
        );

        let tables = socket.list_tables(ProtoFamily::Inet).expect("tables");
        assert_eq!(tables.len(), 1, "{tables:?}");
        assert!(tables[0].contains(&TableAttr::Name(TABLE.into())));

        let dumped = socket
            .list_chains(ProtoFamily::Inet, TABLE)
            .expect("chains");
        assert_eq!(dumped.len(), 2, "{dumped:?}");
        for (got, sent) in dumped.iter().zip(chains()) {
            for attr in sent {
                assert!(got.contains(&attr), "{attr:?} not in {got:?}");
            }
        }

        let dumped = socket.list_sets(ProtoFamily::Inet, TABLE).expect("sets");
        assert_eq!(dumped.len(), 2, "{dumped:?}");
        for (got, sent) in dumped.iter().zip(sets()) {
            // Set ids name sets within one transaction only.
            for attr in sent.into_iter().filter(|a| !matches!(a, SetAttr::Id(_))) {
                assert!(got.contains(&attr), "{attr:?} not in {got:?}");
            }
        }

        let vmap = socket
            .list_set_elements(ProtoFamily::Inet, TABLE, "service-ips")
            .expect("elements");
        assert_eq!(
            sorted(vmap),
            sorted(vec![
                vmap_element(10, 6, 80, Verdict::Goto("service-a".into())),
                vmap_element(11, 17, 53, Verdict::Drop),
            ])
        );
        let endpoints = socket
            .list_set_elements(ProtoFamily::Inet, TABLE, "endpoints")
            .expect("elements");
        assert_eq!(sorted(endpoints), sorted(endpoint_elements()));

        let dumped = socket
            .list_rules(ProtoFamily::Inet, TABLE, None)
            .expect("rules");
        assert_eq!(dumped.len(), 2, "{dumped:?}");
        for (got, (chain, exprs)) in dumped.iter().zip(rules()) {
            assert!(got.contains(&RuleAttr::Chain(chain.into())), "{got:?}");
            let got_exprs = got
                .iter()
                .find_map(|a| match a {
                    RuleAttr::Expressions(e) => Some(e.clone()),
                    _ => None,
                })
                .expect("expressions");
            let names = |e: &[Expr]| e.iter().map(|x| x.name().to_owned()).collect::<Vec<_>>();
            assert_eq!(names(&got_exprs), names(&exprs), "{chain}");
            // Loads, numgen and the vmap lookup come back as sent (the kernel adds lookup
            // flags 0 and fills nat's max registers).
            for (g, s) in got_exprs.iter().zip(&exprs) {
                if matches!(
                    s,
                    Expr::Payload(_) | Expr::Meta(_) | Expr::Numgen(_) | Expr::Cmp(_)
                ) {
                    assert_eq!(sorted_expr(g), sorted_expr(s), "{chain}");
                }
            }
        }
        // Per chain, by our own handle-less filter.
        let one = socket
            .list_rules(ProtoFamily::Inet, TABLE, Some("service-a"))
            .expect("rules");
        assert_eq!(one.len(), 1);
    });
    let listed = ns.exec_ok("nft", &["list", "table", "inet", TABLE]);
    assert!(
        listed.contains("ip daddr . meta l4proto . th dport vmap @service-ips"),
        "{listed}"
    );
    assert!(
        listed.contains("numgen random mod 2 map @endpoints"),
        "{listed}"
    );
    assert!(
        listed.contains("198.18.0.10 . tcp . 80 : goto service-a"),
        "{listed}"
    );
}

fn sorted_expr(e: &Expr) -> String {
    // Attribute order is the kernel's own in dumps: compare the sorted attribute list.
    let text = format!("{e:?}");
    let (name, rest) = text.split_once('(').unwrap_or((&text, ""));
    let mut parts: Vec<&str> = rest.trim_end_matches(')').split("), ").collect();
    parts.sort_unstable();
    format!("{name}{parts:?}")
}

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn one_bad_element_fails_its_message_and_leaves_the_table_as_it_was() {
    let ns = Netns::new("nft-atomic");
    ns.run(|| {
        let mut socket = NftSocket::open().expect("netfilter socket");
        assert!(committed(&socket.transaction(&build())));
        let before = sorted(
            socket
                .list_set_elements(ProtoFamily::Inet, TABLE, "service-ips")
                .expect("elements"),
        );

        let outcome = socket.transaction(&[
            elements(
                "service-ips",
                vec![vmap_element(20, 6, 443, Verdict::Goto("service-a".into()))],
            ),
            elements("no-such-map", vec![vmap_element(21, 6, 443, Verdict::Drop)]),
            elements(
                "service-ips",
                vec![vmap_element(22, 17, 53, Verdict::Accept)],
            ),
        ]);
        assert!(!committed(&outcome));
        let results = outcome.expect("the kernel answered every message");
        assert!(results[0].is_ok() && results[2].is_ok(), "{results:#?}");
        match &results[1] {
            Err(NetlinkError::Kernel { request, errno, .. }) => {
                assert_eq!(*errno, ENOENT, "{request}");
                assert_eq!(request.index, 1);
                assert!(request.description.contains("no-such-map"), "{request}");
            }
            other => panic!("want ENOENT on the bad element's message, got {other:?}"),
        }

        let after = sorted(
            socket
                .list_set_elements(ProtoFamily::Inet, TABLE, "service-ips")
                .expect("elements"),
        );
        assert_eq!(
            after, before,
            "the batch was aborted whole: nothing was added"
        );
    });
}

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn a_transaction_of_megabytes_goes_in_one_datagram_the_send_buffer_grown_to_fit() {
    let ns = Netns::new("nft-big");
    ns.run(|| {
        // The default 1 MiB send buffer: the transport grows it for the big transaction.
        let mut socket = NftSocket::open().expect("netfilter socket");
        assert!(committed(&socket.transaction(&build())));
        // 40,000 vmap elements (about 2.5 MB): ten times what Connection::batch puts in one
        // datagram, split into element lists below 64 KiB each.
        let elements: Vec<Vec<SetElemAttr>> = (0..40_000u32)
            .map(|i| {
                let [_, _, c, d] = i.to_be_bytes();
                vec![
                    SetElemAttr::Key(value(concat(&[
                        &[198, 19, c, d],
                        &[6],
                        &8080u16.to_be_bytes(),
                    ]))),
                    SetElemAttr::Data(Verdict::Goto("service-a".into()).to_data()),
                ]
            })
            .collect();
        let messages = NftMessage::set_elements(
            MsgType::NewSetElem,
            ProtoFamily::Inet,
            TABLE,
            "service-ips",
            elements,
        );
        let bytes: usize = messages
            .iter()
            .map(|m| 16 + netlink_packet_core::Emitable::buffer_len(m))
            .sum();
        assert!(bytes > 2_000_000, "{bytes} bytes");
        let outcome = socket.transaction(&messages);
        assert!(committed(&outcome), "{:?}", outcome.map(|r| r.len()));
        let dumped = socket
            .list_set_elements(ProtoFamily::Inet, TABLE, "service-ips")
            .expect("elements");
        assert_eq!(dumped.len(), 40_002, "the two of build() and the 40,000");
    });
}
