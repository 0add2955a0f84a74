//! [`Netlink`] against a real kernel, in a fresh network namespace (testkit's `in_new_netns`):
//! the table of a new namespace dumps empty, deleting entries that do not exist is not an
//! error (`ENOENT`: expired meanwhile), one at a time or all on one socket; and entries the
//! `conntrack` tool inserts (those of the byte captures in `src/message/captures.rs`) are
//! dumped as they were made and deleted by their original tuple, leaving the others.

use nf_conntrack::{delete_matching, ConntrackOps, Entry, Family, Netlink, IPPROTO_UDP};

fn udp(src: &str, dst: &str) -> Entry {
    Entry {
        proto: IPPROTO_UDP,
        src: src.parse().expect("ip"),
        dst: dst.parse().expect("ip"),
        sport: 40000,
        dport: 53,
        reply_src: dst.parse().expect("ip"),
    }
}

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn a_new_namespace_dumps_empty_and_deletes_of_absent_entries_succeed() {
    testkit::netns::in_new_netns(|| {
        for family in Family::ALL {
            let entries = Netlink.dump(family).expect("dump");
            assert_eq!(entries, vec![], "{family}: a new namespace has no flows");
            assert_eq!(
                delete_matching(&Netlink, family, |_| true).expect("none"),
                0
            );
        }
        Netlink
            .delete(Family::V4, &udp("198.18.0.1", "198.18.0.2"))
            .expect("absent is fine");
        let absent = [
            udp("198.18.0.1", "198.18.0.2"),
            udp("198.18.0.3", "198.18.0.4"),
            udp("198.18.0.5", "198.18.0.6"),
        ];
        assert_eq!(
            Netlink.delete_all(Family::V4, &absent).expect("one socket"),
            3
        );
        let v6 = [udp("2001:db8::1", "2001:db8::2")];
        assert_eq!(Netlink.delete_all(Family::V6, &v6).expect("ipv6"), 1);
    });
}

/// A DNATed UDP flow of `family`, as the captures have it: client, service, endpoint.
fn dnat_flow(family: Family) -> (Entry, [&'static str; 14]) {
    let (src, dst, endpoint, sport, dport) = match family {
        Family::V4 => ("198.18.0.1", "198.18.0.10", "198.18.1.1", "40000", "53"),
        Family::V6 => (
            "2001:db8::1",
            "2001:db8::10",
            "2001:db8:1::1",
            "40001",
            "5353",
        ),
    };
    let entry = Entry {
        proto: IPPROTO_UDP,
        src: src.parse().expect("ip"),
        dst: dst.parse().expect("ip"),
        sport: sport.parse().expect("port"),
        dport: dport.parse().expect("port"),
        reply_src: endpoint.parse().expect("ip"),
    };
    // `-I` takes the family from the addresses (`-f` is refused with it).
    let insert = [
        "-I", "-p", "udp", "-s", src, "-d", dst, "--sport", sport, "--dport", dport, "-r",
        endpoint, "-q",
    ];
    (entry, insert)
}

/// Inserts `entry` (its reply going from the endpoint, `reply_port`, back to the client).
fn insert(family: Family, reply_port: &str) -> Entry {
    let (entry, args) = dnat_flow(family);
    let client = entry.src.to_string();
    let sport = entry.sport.to_string();
    let mut args = args.to_vec();
    args.extend([
        client.as_str(),
        "--reply-port-src",
        reply_port,
        "--reply-port-dst",
        sport.as_str(),
        "-t",
        "120",
    ]);
    testkit::process::run("conntrack", &args);
    entry
}

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn entries_the_tool_inserted_are_dumped_and_deleted_by_their_tuple() {
    testkit::netns::in_new_netns(|| {
        for family in Family::ALL {
            let flow = insert(family, "8053");
            assert_eq!(Netlink.dump(family).expect("dump"), vec![flow], "{family}");
        }
        // Another flow to the same service, to another endpoint: it stays.
        let other = Entry {
            sport: 40002,
            reply_src: "198.18.1.2".parse().expect("ip"),
            ..dnat_flow(Family::V4).0
        };
        testkit::process::run(
            "conntrack",
            &[
                "-I",
                "-p",
                "udp",
                "-s",
                "198.18.0.1",
                "-d",
                "198.18.0.10",
                "--sport",
                "40002",
                "--dport",
                "53",
                "-r",
                "198.18.1.2",
                "-q",
                "198.18.0.1",
                "--reply-port-src",
                "8053",
                "--reply-port-dst",
                "40002",
                "-t",
                "120",
            ],
        );
        for family in Family::ALL {
            let gone = dnat_flow(family).0;
            let deleted = delete_matching(&Netlink, family, |e| e.reply_src == gone.reply_src)
                .expect("delete");
            assert_eq!(deleted, 1, "{family}");
        }
        assert_eq!(Netlink.dump(Family::V4).expect("dump"), vec![other]);
        assert_eq!(Netlink.dump(Family::V6).expect("dump"), vec![]);
    });
}
