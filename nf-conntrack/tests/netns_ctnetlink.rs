//! [`Netlink`] against a real kernel, in a fresh network namespace (testkit's `in_new_netns`):
//! the table of a new namespace dumps empty, and deleting entries that do not exist is not an
//! error (`ENOENT`: expired meanwhile), one at a time or all on one socket.

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
