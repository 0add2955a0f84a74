//! Stale UDP flows: when a UDP real server is deleted, its conntrack entries (IPVS-forwarded
//! packets are tracked, `net.ipv4.vs.conntrack=1`) would keep steering the client's datagrams
//! to it. We delete them over ctnetlink ([`nf_conntrack`], no `conntrack` process): the UDP
//! entries whose original destination is the VIP and port and whose reply source is the real
//! server, what `conntrack -D -p udp --orig-dst VIP --dport PORT --reply-src RS` deletes.
//! kube-proxy's IPVS mode does the same for removed UDP endpoints
//! (`pkg/proxy/conntrack/cleanup.go`).
//!
//! All the flows of one sync go together: one dump per address family, however many real
//! servers went.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use nf_conntrack::{delete_matching, ConntrackError, ConntrackOps, Family, IPPROTO_UDP};

/// The UDP flows from clients through `vip:port` to a deleted real server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StaleUdpFlows {
    /// The virtual server's address.
    pub vip: IpAddr,
    /// The virtual server's port.
    pub port: u16,
    /// The deleted real server's address.
    pub real_server: IpAddr,
}

impl fmt::Display for StaleUdpFlows {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let vip = std::net::SocketAddr::new(self.vip, self.port);
        write!(f, "UDP {vip} -> {}", self.real_server)
    }
}

/// Deletes the conntrack entries of every one of `flows`, dumping each family that has any
/// once; returns how many entries went. Nothing matched is `Ok(0)`. Blocking.
///
/// # Errors
/// The first [`ConntrackError`] (the dump or a delete).
pub fn clear_udp_flows(
    ops: &dyn ConntrackOps,
    flows: &[StaleUdpFlows],
) -> Result<usize, ConntrackError> {
    let mut deleted = 0;
    for family in Family::ALL {
        // (VIP, port, real server), looked up once per dumped entry.
        let wanted: BTreeSet<(IpAddr, u16, IpAddr)> = flows
            .iter()
            .filter(|f| family.contains(f.vip))
            .map(|f| (f.vip, f.port, f.real_server))
            .collect();
        if wanted.is_empty() {
            continue;
        }
        deleted += delete_matching(ops, family, |e| {
            e.proto == IPPROTO_UDP && wanted.contains(&(e.dst, e.dport, e.reply_src))
        })?;
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use nf_conntrack::testing::FakeConntrack;
    use nf_conntrack::Entry;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address literal")
    }

    fn entry(proto: u8, client: &str, vip: &str, port: u16, reply_src: &str) -> Entry {
        Entry {
            proto,
            src: ip(client),
            dst: ip(vip),
            sport: 40000,
            dport: port,
            reply_src: ip(reply_src),
        }
    }

    fn flows(vip: &str, port: u16, rs: &str) -> StaleUdpFlows {
        StaleUdpFlows {
            vip: ip(vip),
            port,
            real_server: ip(rs),
        }
    }

    #[test]
    fn only_udp_entries_to_the_vip_port_answered_by_the_real_server_go() {
        let gone = entry(IPPROTO_UDP, "198.18.0.1", "198.19.0.53", 53, "198.18.1.1");
        let keep = [
            // Another real server of the same virtual server.
            entry(IPPROTO_UDP, "198.18.0.2", "198.19.0.53", 53, "198.18.1.2"),
            // Same real server behind another port.
            entry(IPPROTO_UDP, "198.18.0.3", "198.19.0.53", 5353, "198.18.1.1"),
            // Same real server behind another VIP.
            entry(IPPROTO_UDP, "198.18.0.4", "198.19.0.54", 53, "198.18.1.1"),
            // TCP (drains gracefully instead).
            entry(6, "198.18.0.5", "198.19.0.53", 53, "198.18.1.1"),
        ];
        let ops = FakeConntrack::with_entries(std::iter::once(gone).chain(keep));
        let n = clear_udp_flows(&ops, &[flows("198.19.0.53", 53, "198.18.1.1")]).expect("clear");
        assert_eq!(n, 1);
        assert_eq!(ops.deleted(), [(Family::V4, gone)]);
        assert_eq!(ops.entries(), keep);
    }

    #[test]
    fn several_real_servers_cost_one_dump_per_family() {
        let v4 = [
            entry(IPPROTO_UDP, "198.18.0.1", "198.19.0.53", 53, "198.18.1.1"),
            entry(IPPROTO_UDP, "198.18.0.2", "198.19.0.53", 53, "198.18.1.2"),
            entry(IPPROTO_UDP, "198.18.0.3", "198.19.0.60", 60, "198.18.1.3"),
        ];
        let v6 = entry(
            IPPROTO_UDP,
            "2001:db8::1",
            "2001:db8::53",
            53,
            "2001:db8::a",
        );
        let ops = FakeConntrack::with_entries(v4.into_iter().chain([v6]));
        let n = clear_udp_flows(
            &ops,
            &[
                flows("198.19.0.53", 53, "198.18.1.1"),
                flows("198.19.0.53", 53, "198.18.1.2"),
                flows("198.19.0.60", 60, "198.18.1.3"),
                flows("2001:db8::53", 53, "2001:db8::a"),
            ],
        )
        .expect("clear");
        assert_eq!(n, 4);
        assert_eq!(ops.dumps(), [Family::V4, Family::V6]);
        assert!(ops.entries().is_empty(), "{:?}", ops.entries());
    }

    #[test]
    fn no_flows_dump_nothing_and_no_match_is_success() {
        let ops = FakeConntrack::with_entries([entry(
            IPPROTO_UDP,
            "198.18.0.1",
            "198.19.0.53",
            53,
            "198.18.1.2",
        )]);
        assert_eq!(clear_udp_flows(&ops, &[]).expect("nothing to do"), 0);
        assert!(ops.dumps().is_empty());
        let n = clear_udp_flows(&ops, &[flows("198.19.0.53", 53, "198.18.1.1")]).expect("ok");
        assert_eq!(n, 0);
        assert_eq!(ops.dumps(), [Family::V4], "IPv6 has no flow to clear");
    }
}
