//! Our encoding of a golden case's full plan against what `nft -f` sends for the golden file
//! (`tests/captures/golden/<case>.hex`, captured with `tests/tools/capture_golden.sh`): every
//! table, chain, set and rule message equal, and the same elements in each set.
//!
//! The two sides order a transaction differently (`nft` declares each set with its elements,
//! and its chains before its sets), so objects are compared by name, rules in order per chain.
//! Normalised away: set ids (`nft` names every set of the batch by id as well; we only name the
//! anonymous set so), and the interval-end element at address 0 `nft` opens a plain interval
//! set with (see `apply::encode`).

mod netlink_support;
#[path = "nft_cases.rs"]
mod nft_cases;

use std::collections::BTreeMap;

use backend_nftables::apply::encode::ANONYMOUS_SET;
use backend_nftables::apply::{transaction_messages, Encoder};
use backend_nftables::netlink::expr::{DynsetAttr, LookupAttr};
use backend_nftables::netlink::{
    ChainAttr, Expr, MsgType, NftMessage, NftObject, RuleAttr, SetAttr, SetElemListAttr,
};
use backend_nftables::plan::plan;
use netlink_support::{datagrams, emit, masked, parse, split};

#[derive(Default, Debug)]
struct Objects {
    tables: Vec<NftMessage>,
    chains: BTreeMap<String, NftMessage>,
    sets: BTreeMap<String, NftMessage>,
    elements: BTreeMap<String, Vec<String>>,
    rules: BTreeMap<String, Vec<Vec<Expr>>>,
    /// Anonymous sets, in order.
    anonymous: Vec<NftMessage>,
}

fn strip_ids(exprs: &mut [Expr]) {
    for e in exprs {
        match e {
            Expr::Lookup(attrs) => attrs.retain(|a| !matches!(a, LookupAttr::SetId(_))),
            Expr::Dynset(attrs) => attrs.retain(|a| !matches!(a, DynsetAttr::SetId(_))),
            _ => {}
        }
    }
}

fn collect(messages: impl IntoIterator<Item = NftMessage>) -> Objects {
    let mut o = Objects::default();
    for mut m in messages {
        match &mut m.object {
            NftObject::Table(_) => o.tables.push(m),
            NftObject::Chain(attrs) => {
                let name = attrs
                    .iter()
                    .find_map(|a| match a {
                        ChainAttr::Name(n) => Some(n.clone()),
                        _ => None,
                    })
                    .expect("chain name");
                o.chains.insert(name, m);
            }
            NftObject::Set(attrs) => {
                attrs.retain(|a| !matches!(a, SetAttr::Id(_)));
                let name = attrs
                    .iter()
                    .find_map(|a| match a {
                        SetAttr::Name(n) => Some(n.clone()),
                        _ => None,
                    })
                    .expect("set name");
                if name == ANONYMOUS_SET {
                    o.anonymous.push(m);
                } else {
                    o.sets.insert(name, m);
                }
            }
            NftObject::SetElems(attrs) => {
                let name = attrs
                    .iter()
                    .find_map(|a| match a {
                        SetElemListAttr::Set(n) => Some(n.clone()),
                        _ => None,
                    })
                    .expect("set name");
                let entry = o.elements.entry(name).or_default();
                for a in attrs.iter() {
                    if let SetElemListAttr::Elements(list) = a {
                        entry.extend(list.iter().map(|el| format!("{el:?}")));
                    }
                }
            }
            NftObject::Rule(attrs) => {
                let mut chain = String::new();
                let mut exprs = Vec::new();
                for a in attrs.iter() {
                    match a {
                        RuleAttr::Chain(c) => chain = c.clone(),
                        RuleAttr::Expressions(e) => exprs = e.clone(),
                        _ => {}
                    }
                }
                strip_ids(&mut exprs);
                o.rules.entry(chain).or_default().push(exprs);
            }
            _ => {}
        }
    }
    o
}

fn is_zero_interval_end(element: &str) -> bool {
    element.starts_with("[Flags(1), Key([Value([")
        && element
            .trim_start_matches("[Flags(1), Key([Value([")
            .trim_end_matches("])])]")
            .split(", ")
            .all(|b| b == "0")
}

#[test]
fn our_full_plans_encode_as_nft_sends_the_goldens() {
    let mut checked = 0;
    for (name, path) in nft_cases::cases() {
        let capture = nft_cases::dir("captures/golden").join(format!("{name}.hex"));
        let Ok(text) = std::fs::read_to_string(&capture) else {
            continue;
        };
        assert!(
            !nft_cases::NFT_CANNOT_LOAD.contains(&name.as_str()),
            "{name}: nft cannot send this table, so there is no capture of it"
        );
        checked += 1;
        let raw = datagrams(&text);
        let theirs: Vec<NftMessage> = split(&raw[0].1)
            .iter()
            .map(|m| parse(m))
            .filter(|m| !matches!(m.msg_type, MsgType::BatchBegin | MsgType::BatchEnd))
            .collect();
        let desired = nft_cases::plan_case(&path);
        let changes = plan(&desired, None, None);
        let mut encoder = Encoder::new(desired.table.name.clone());
        let (ours, _) = transaction_messages(&mut encoder, &changes);
        // Our bytes are our objects' (no encoding surprise on either side).
        for m in &ours {
            let bytes = emit(m);
            assert_eq!(
                parse(&masked(&bytes)),
                *m,
                "{name}: our message round-trips"
            );
        }
        let mut theirs = collect(theirs);
        let ours = collect(ours);
        for list in theirs.elements.values_mut() {
            list.retain(|e| !is_zero_interval_end(e));
        }
        for list in theirs.elements.values_mut() {
            list.sort();
        }
        let mut our_elements = ours.elements.clone();
        for list in our_elements.values_mut() {
            list.sort();
        }
        theirs.elements.retain(|_, l| !l.is_empty());
        our_elements.retain(|_, l| !l.is_empty());
        assert_eq!(ours.tables, theirs.tables, "{name}: table");
        assert_eq!(
            ours.chains.keys().collect::<Vec<_>>(),
            theirs.chains.keys().collect::<Vec<_>>(),
            "{name}: chains"
        );
        for (chain, m) in &theirs.chains {
            assert_eq!(&ours.chains[chain], m, "{name}: chain {chain}");
        }
        assert_eq!(
            ours.sets.keys().collect::<Vec<_>>(),
            theirs.sets.keys().collect::<Vec<_>>(),
            "{name}: sets"
        );
        for (set, m) in &theirs.sets {
            assert_eq!(&ours.sets[set], m, "{name}: set {set}");
        }
        // Anonymous sets differ only by name-binding id, stripped above.
        let elements_of_anon =
            |o: &BTreeMap<String, Vec<String>>| o.get(ANONYMOUS_SET).cloned().unwrap_or_default();
        assert_eq!(
            elements_of_anon(&our_elements),
            elements_of_anon(&theirs.elements),
            "{name}: anonymous set elements"
        );
        assert_eq!(ours.anonymous, theirs.anonymous, "{name}: anonymous sets");
        for (set, list) in &theirs.elements {
            assert_eq!(
                our_elements.get(set),
                Some(list),
                "{name}: elements of {set}"
            );
        }
        assert_eq!(
            our_elements.keys().collect::<Vec<_>>(),
            theirs.elements.keys().collect::<Vec<_>>(),
            "{name}: sets with elements"
        );
        for (chain, rules) in &theirs.rules {
            let mine = ours.rules.get(chain).cloned().unwrap_or_default();
            assert_eq!(mine.len(), rules.len(), "{name}: rule count of {chain}");
            for (i, (a, b)) in mine.iter().zip(rules).enumerate() {
                assert_eq!(a, b, "{name}: rule {i} of {chain}");
            }
        }
        assert_eq!(
            ours.rules.keys().collect::<Vec<_>>(),
            theirs.rules.keys().collect::<Vec<_>>(),
            "{name}: chains with rules"
        );
    }
    assert!(
        checked >= 3,
        "expected captures of at least 3 goldens, found {checked}"
    );
}
