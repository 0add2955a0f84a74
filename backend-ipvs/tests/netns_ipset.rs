//! The ipset netlink client on a real kernel, each test in a network namespace of its own
//! (testkit's `in_new_netns`: ipsets are per namespace, and the namespace goes with the test's
//! thread). The results are checked with the `ipset` tool itself.
//!
//! Needs root and the `ip_set` modules, which the development hosts have (they lack only
//! IPVS): `cargo test -p backend-ipvs --test netns_ipset -- --include-ignored`.
//! `scripts/vm-test` runs them in the VM as well.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Instant;

use backend_ipvs::ipset::{
    Family, IpsetError, IpsetOp, IpsetOps, NetlinkIpset, SetEntry, SetSpec, SetType,
};
use ipnet::IpNet;
use proxy_core::table::Protocol;
use testkit::netns::in_new_netns;
use testkit::process::run;

const NEEDS: &str = "needs root and ipset (ip_set modules, the ipset tool)";

/// Runs `body` on a thread in a fresh network namespace of its own (ipsets are per namespace),
/// with our ipset client connected there.
fn with_ipset<T: Send + 'static>(body: impl FnOnce(&NetlinkIpset) -> T + Send + 'static) -> T {
    in_new_netns(move || {
        let ipset_ops =
            NetlinkIpset::connect().unwrap_or_else(|e| panic!("connect: {e:?}; {NEEDS}"));
        body(&ipset_ops)
    })
}

/// `ipset ARGS...` in this thread's namespace; its standard output.
fn ipset(args: &[&str]) -> String {
    run("ipset", args)
}

/// The `add` lines of `ipset save NAME`, as entries in ipset syntax.
fn saved_entries(name: &str) -> BTreeSet<String> {
    ipset(&["save", name])
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("add {name} ")))
        .map(str::to_owned)
        .collect()
}

fn spec(name: &str, set_type: SetType, family: Family) -> SetSpec {
    SetSpec {
        name: name.to_owned(),
        set_type,
        family,
        max_elements: 1 << 20,
        hash_size: None,
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address literal")
}

fn net(s: &str) -> IpNet {
    s.parse().expect("test network literal")
}

fn ip_port(n: u32) -> SetEntry {
    SetEntry::IpPort {
        addr: IpAddr::from([198, 18, (n >> 8) as u8, n as u8]),
        protocol: Protocol::Tcp,
        port: 1 + (n >> 16) as u16,
    }
}

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn every_set_type_round_trips_through_the_kernel_and_ipset_save() {
    with_ipset(|ipset_ops| {
        let sets = [
            (
                spec("SVCP-T-IPPORT", SetType::HashIpPort, Family::Inet),
                vec![
                    SetEntry::IpPort {
                        addr: ip("198.18.0.1"),
                        protocol: Protocol::Tcp,
                        port: 80,
                    },
                    SetEntry::IpPort {
                        addr: ip("198.18.0.2"),
                        protocol: Protocol::Udp,
                        port: 53,
                    },
                    SetEntry::IpPort {
                        addr: ip("198.18.0.3"),
                        protocol: Protocol::Sctp,
                        port: 9,
                    },
                ],
            ),
            (
                spec("SVCP-T-IPPORT6", SetType::HashIpPort, Family::Inet6),
                vec![SetEntry::IpPort {
                    addr: ip("2001:db8::1"),
                    protocol: Protocol::Udp,
                    port: 53,
                }],
            ),
            (
                spec("SVCP-T-LOOP", SetType::HashIpPortIp, Family::Inet),
                vec![SetEntry::IpPortIp {
                    addr: ip("198.18.1.10"),
                    protocol: Protocol::Tcp,
                    port: 8080,
                    addr2: ip("198.18.1.10"),
                }],
            ),
            (
                spec("SVCP-T-LOOP6", SetType::HashIpPortIp, Family::Inet6),
                vec![SetEntry::IpPortIp {
                    addr: ip("2001:db8::1"),
                    protocol: Protocol::Tcp,
                    port: 8080,
                    addr2: ip("2001:db8::1"),
                }],
            ),
            (
                spec("SVCP-T-SRC", SetType::HashIpPortNet, Family::Inet),
                vec![SetEntry::IpPortNet {
                    addr: ip("198.18.0.4"),
                    protocol: Protocol::Tcp,
                    port: 443,
                    net: net("198.19.0.0/16"),
                }],
            ),
            (
                spec("SVCP-T-SRC6", SetType::HashIpPortNet, Family::Inet6),
                vec![SetEntry::IpPortNet {
                    addr: ip("2001:db8:2::53"),
                    protocol: Protocol::Udp,
                    port: 53,
                    net: net("2001:db8:3::/48"),
                }],
            ),
            (
                spec("SVCP-T-CIDR", SetType::HashNet, Family::Inet),
                vec![SetEntry::Net(net("198.18.128.0/17"))],
            ),
            (
                spec("SVCP-T-CIDR6", SetType::HashNet, Family::Inet6),
                vec![SetEntry::Net(net("2001:db8:4::/64"))],
            ),
        ];
        let mut ops = Vec::new();
        for (spec, entries) in &sets {
            ops.push(IpsetOp::Create(spec.clone()));
            ops.push(IpsetOp::Add(spec.name.clone(), entries.clone()));
        }
        ipset_ops
            .apply(&ops)
            .expect("one batch creates and fills every set");
        // Again: create and add are `-exist`.
        ipset_ops
            .apply(&ops)
            .expect("the same batch again is no error");

        let mut names = ipset_ops.list_names().expect("list names");
        names.sort();
        let mut want: Vec<String> = sets.iter().map(|(s, _)| s.name.clone()).collect();
        want.sort();
        assert_eq!(names, want);

        for (spec, entries) in &sets {
            let header = ipset(&["list", "-t", &spec.name]);
            assert!(
                header.contains(&format!("Type: {}", spec.set_type)),
                "{header}"
            );
            assert!(
                header.contains(&format!("family {} ", spec.family.name())),
                "{header}"
            );
            assert!(header.contains("maxelem 1048576"), "{header}");
            let want: BTreeSet<String> = entries.iter().map(ToString::to_string).collect();
            assert_eq!(saved_entries(&spec.name), want, "ipset save {}", spec.name);

            let listed = ipset_ops.list(&spec.name).expect("list");
            assert_eq!(listed.set_type, Some(spec.set_type));
            assert_eq!(listed.family, Some(spec.family));
            assert_eq!(listed.max_elements, Some(1 << 20));
            let listed: BTreeSet<&SetEntry> = listed.entries.iter().collect();
            assert_eq!(listed, entries.iter().collect(), "list {}", spec.name);
        }
    });
}

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn fifty_thousand_entries_go_in_and_half_come_out_in_one_batch_each() {
    with_ipset(|ipset_ops| {
        let name = "SVCP-T-BIG";
        let entries: Vec<SetEntry> = (0..50_000).map(ip_port).collect();
        let started = Instant::now();
        ipset_ops
            .apply(&[
                IpsetOp::Create(spec(name, SetType::HashIpPort, Family::Inet)),
                IpsetOp::Add(name.to_owned(), entries.clone()),
            ])
            .expect("add 50,000");
        let added = started.elapsed();
        let header = ipset(&["list", "-t", name]);
        assert!(header.contains("Number of entries: 50000"), "{header}");

        let started = Instant::now();
        ipset_ops
            .apply(&[IpsetOp::Del(name.to_owned(), entries[..25_000].to_vec())])
            .expect("del 25,000");
        let deleted = started.elapsed();
        let header = ipset(&["list", "-t", name]);
        assert!(header.contains("Number of entries: 25000"), "{header}");
        eprintln!("50,000 adds in {added:?}, 25,000 dels in {deleted:?}");

        let listed = ipset_ops.list(name).expect("list 25,000");
        let listed: BTreeSet<SetEntry> = listed.entries.into_iter().collect();
        let want: BTreeSet<SetEntry> = entries[25_000..].iter().cloned().collect();
        assert_eq!(
            listed.len(),
            25_000,
            "a dump in many messages is folded whole"
        );
        assert_eq!(listed, want);
    });
}

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn swap_exchanges_contents_and_destroy_removes_the_temporary_set() {
    with_ipset(|ipset_ops| {
        let (live, temp) = ("SVCP-T-LIVE", "SVCP-T-LIVE-T");
        ipset_ops
            .apply(&[
                IpsetOp::Create(spec(live, SetType::HashIpPort, Family::Inet)),
                IpsetOp::Add(live.to_owned(), vec![ip_port(1)]),
                IpsetOp::Create(spec(temp, SetType::HashIpPort, Family::Inet)),
                IpsetOp::Flush(temp.to_owned()),
                IpsetOp::Add(temp.to_owned(), vec![ip_port(2), ip_port(3)]),
                IpsetOp::Swap(temp.to_owned(), live.to_owned()),
                IpsetOp::Destroy(temp.to_owned()),
            ])
            .expect("fill, swap, destroy");
        assert_eq!(
            saved_entries(live),
            [ip_port(2), ip_port(3)]
                .iter()
                .map(ToString::to_string)
                .collect()
        );
        assert_eq!(ipset(&["list", "-n"]).trim(), live);

        ipset_ops
            .apply(&[IpsetOp::Rename(live.to_owned(), "SVCP-T-OLD".to_owned())])
            .expect("rename");
        assert_eq!(ipset(&["list", "-n"]).trim(), "SVCP-T-OLD");
    });
}

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn refusals_name_the_set_and_the_entry() {
    with_ipset(|ipset_ops| {
        let name = "SVCP-T-V4";
        ipset_ops
            .apply(&[IpsetOp::Create(spec(
                name,
                SetType::HashIpPort,
                Family::Inet,
            ))])
            .expect("create");

        // An IPv6 entry in the middle of an inet set's list: the kernel names it by its number.
        let v6 = SetEntry::IpPort {
            addr: ip("2001:db8::1"),
            protocol: Protocol::Tcp,
            port: 80,
        };
        let err = ipset_ops
            .apply(&[IpsetOp::Add(
                name.to_owned(),
                vec![ip_port(1), v6.clone(), ip_port(2)],
            )])
            .expect_err("wrong family");
        match &err {
            IpsetError::Kernel {
                set, entry, errno, ..
            } => {
                assert_eq!(set, name);
                assert_eq!(entry.as_deref(), Some("2001:db8::1,tcp:80"), "{err}");
                // ip_set_get_ipaddr4() finds no IPSET_ATTR_IPADDR_IPV4 in the nest.
                assert_eq!(*errno, 4097, "IPSET_ERR_PROTOCOL: {err}");
            }
            other => panic!("want a kernel refusal, got {other:?}"),
        }
        assert!(err.to_string().contains("malformed"), "{err}");
        assert_eq!(
            saved_entries(name),
            [ip_port(1).to_string()].into(),
            "entries before the failing one are in, those after it are not"
        );

        let err = ipset_ops
            .apply(&[IpsetOp::Add("SVCP-T-NONE".to_owned(), vec![ip_port(1)])])
            .expect_err("missing set");
        assert!(err.is_not_found(), "{err:?}");
        assert!(err.to_string().contains("SVCP-T-NONE"), "{err}");

        // Same name, other type: create -exist still refuses.
        let err = ipset_ops
            .apply(&[IpsetOp::Create(spec(name, SetType::HashNet, Family::Inet))])
            .expect_err("conflicting create");
        assert_eq!(err.errno(), Some(17), "EEXIST: {err}");
        assert!(
            err.to_string().contains("other type or parameters"),
            "{err}"
        );

        // A batch carries on after a refused step, and reports the first refusal.
        let err = ipset_ops
            .apply(&[
                IpsetOp::Flush("SVCP-T-NONE".to_owned()),
                IpsetOp::Add(name.to_owned(), vec![ip_port(9)]),
            ])
            .expect_err("flush of a missing set");
        assert!(err.to_string().starts_with("flush SVCP-T-NONE"), "{err}");
        assert!(saved_entries(name).contains(&ip_port(9).to_string()));

        let err = ipset_ops
            .list("SVCP-T-NONE")
            .expect_err("list of a missing set");
        assert!(err.is_not_found(), "{err:?}");
    });
}

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn deleting_what_is_not_there_and_adding_what_is_are_no_errors() {
    with_ipset(|ipset_ops| {
        let name = "SVCP-T-IDEM";
        ipset_ops
            .apply(&[
                IpsetOp::Create(spec(name, SetType::HashIpPort, Family::Inet)),
                IpsetOp::Add(name.to_owned(), vec![ip_port(1), ip_port(1)]),
                IpsetOp::Del(name.to_owned(), vec![ip_port(2)]),
            ])
            .expect("-exist semantics");
        assert_eq!(saved_entries(name), [ip_port(1).to_string()].into());
    });
}

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn a_refusal_deep_in_a_long_list_names_the_right_entry() {
    with_ipset(|ipset_ops| {
        let name = "SVCP-T-LONG";
        ipset_ops
            .apply(&[IpsetOp::Create(spec(
                name,
                SetType::HashIpPort,
                Family::Inet,
            ))])
            .expect("create");
        // Several messages' worth; the bad entry sits in a later message.
        let mut entries: Vec<SetEntry> = (0..3000).map(ip_port).collect();
        let bad = SetEntry::IpPort {
            addr: ip("2001:db8::7"),
            protocol: Protocol::Udp,
            port: 7,
        };
        entries[2000] = bad.clone();
        let err = ipset_ops
            .apply(&[IpsetOp::Add(name.to_owned(), entries)])
            .expect_err("wrong family");
        match &err {
            IpsetError::Kernel { entry, .. } => {
                assert_eq!(entry.as_deref(), Some(bad.to_string().as_str()), "{err}")
            }
            other => panic!("want a kernel refusal, got {other:?}"),
        }
        // Before it: in. After it in its own message (about 400 entries of 40 bytes each fill
        // one): not applied. In the later messages: in (the kernel carries on after a refused
        // message).
        let saved = saved_entries(name);
        assert!(saved.contains(&ip_port(1999).to_string()));
        assert!(!saved.contains(&ip_port(2001).to_string()));
        assert!(saved.contains(&ip_port(2999).to_string()));
    });
}
