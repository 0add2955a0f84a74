//! [`Netlink`]: the real [`ConntrackOps`] over a `NETLINK_NETFILTER` socket, on the
//! workspace's one netlink transport (`netlink-transport`): replies are matched by sequence
//! number and port, a malformed reply or `NLMSG_OVERRUN` is an error, and every wait is
//! bounded by the receive timeout.

use netlink_transport::{
    errno::ENOENT, Connection, Datagrams, NetlinkError, Protocol, RawRequest, Reply,
};

use crate::message::{encode_delete, encode_dump, entry_of, parse_message};
use crate::{ConntrackError, ConntrackOps, Entry, Family};

/// The real [`ConntrackOps`]: a ctnetlink socket per call in the caller's network namespace
/// (so a caller may switch namespaces between calls), one socket for all the deletes of a
/// [`ConntrackOps::delete_all`].
#[derive(Debug, Default, Clone, Copy)]
pub struct Netlink;

/// A [`ConntrackError`] from a transport error: the errno as the OS error where there is
/// one, else the transport's error itself.
fn conntrack_error(
    op: &'static str,
    family: Family,
) -> impl FnOnce(NetlinkError) -> ConntrackError {
    move |error| ConntrackError {
        op,
        family,
        error: error.into_io(),
    }
}

fn connect(op: &'static str, family: Family) -> Result<Connection, ConntrackError> {
    Connection::open(Protocol::Netfilter).map_err(conntrack_error(op, family))
}

/// Dumps every entry of `family` on `conn`. Messages that are not an entry we match on
/// (no ports: ICMP...) are skipped; one that does not parse fails the dump (the kernel's
/// messages always parse: an error means a bug, ours or the kernel's, to see, not to hide).
pub(crate) fn dump_on<D: Datagrams>(
    conn: &mut Connection<D>,
    family: Family,
) -> Result<Vec<Entry>, ConntrackError> {
    let request = RawRequest {
        bytes: encode_dump(family, 0),
        description: format!("IPCTNL_MSG_CT_GET dump ({family})"),
    };
    let mut entries = Vec::new();
    conn.dump(&request, |reply: Reply<'_>| {
        let message = parse_message(reply.message_type, reply.payload)?;
        entries.extend(entry_of(&message));
        Ok(())
    })
    .map_err(conntrack_error("dump", family))?;
    Ok(entries)
}

/// Deletes `entry` on `conn`; an entry already gone (`ENOENT`: it expired meanwhile) is not
/// an error.
pub(crate) fn delete_on<D: Datagrams>(
    conn: &mut Connection<D>,
    family: Family,
    entry: &Entry,
) -> Result<(), ConntrackError> {
    let request = RawRequest {
        bytes: encode_delete(family, entry, 0),
        description: format!(
            "IPCTNL_MSG_CT_DELETE {} {}:{} -> {}:{}",
            entry.proto, entry.src, entry.sport, entry.dst, entry.dport
        ),
    };
    match conn.request(&request, |_| Ok(())) {
        Err(e) if e.kernel_errno() == Some(ENOENT) => Ok(()),
        result => result.map_err(conntrack_error("delete", family)),
    }
}

impl ConntrackOps for Netlink {
    fn dump(&self, family: Family) -> Result<Vec<Entry>, ConntrackError> {
        dump_on(&mut connect("dump", family)?, family)
    }

    fn delete(&self, family: Family, entry: &Entry) -> Result<(), ConntrackError> {
        delete_on(&mut connect("delete", family)?, family, entry)
    }

    fn delete_all(&self, family: Family, entries: &[Entry]) -> Result<usize, ConntrackError> {
        if entries.is_empty() {
            return Ok(0);
        }
        let mut conn = connect("delete", family)?;
        for entry in entries {
            delete_on(&mut conn, family, entry)?;
        }
        Ok(entries.len())
    }
}

#[cfg(test)]
mod tests {
    //! The ctnetlink exchanges against the transport's `FakeKernel`.

    use netlink_transport::fake::{ack, done, nlmsg, FakeKernel};

    use super::*;
    use crate::message::NFGENMSG_LEN;
    use crate::IPPROTO_UDP;

    /// `IPCTNL_MSG_CT_NEW` as a dump carries it.
    const CT_NEW: u16 = 0x0100;
    const NLM_F_MULTI: u16 = 0x2;

    fn entry(i: u8) -> Entry {
        Entry {
            proto: IPPROTO_UDP,
            src: [198, 18, 0, i].into(),
            dst: "198.19.0.53".parse().expect("ip"),
            sport: 40000,
            dport: 53,
            reply_src: [198, 18, 0, i].into(),
        }
    }

    /// The payload (nfgenmsg + attributes) of a dump message for `entry`: its original tuple
    /// twice, the second as the reply tuple.
    fn entry_payload(entry: &Entry) -> Vec<u8> {
        let msg = encode_delete(Family::V4, entry, 0);
        let body = &msg[16..];
        let tuple = &body[NFGENMSG_LEN..];
        let mut reply = tuple.to_vec();
        // CTA_TUPLE_REPLY | NLA_F_NESTED.
        reply[2..4].copy_from_slice(&(2u16 | 0x8000).to_ne_bytes());
        [body, &reply].concat()
    }

    #[test]
    fn a_dump_across_datagrams_parses_every_entry() {
        let kernel = FakeKernel::new(|m| {
            vec![
                nlmsg(CT_NEW, NLM_F_MULTI, m.seq, &entry_payload(&entry(1))),
                [
                    nlmsg(CT_NEW, NLM_F_MULTI, m.seq, &entry_payload(&entry(2))),
                    done(m.seq, 0),
                ]
                .concat(),
            ]
        });
        let mut conn = Connection::new(kernel.clone());
        let entries = dump_on(&mut conn, Family::V4).expect("dump");
        assert_eq!(entries, vec![entry(1), entry(2)]);
        let sent = kernel.received();
        assert_eq!(sent[0].message_type, 0x0101, "CTNETLINK, GET");
        assert_eq!(sent[0].flags & 0x300, 0x300, "NLM_F_DUMP");
    }

    #[test]
    fn stale_replies_of_an_earlier_sequence_are_not_entries() {
        let kernel = FakeKernel::new(|m| vec![done(m.seq, 0)]);
        kernel.push_datagram(nlmsg(CT_NEW, NLM_F_MULTI, 0, &entry_payload(&entry(9))));
        let mut conn = Connection::new(kernel);
        assert_eq!(dump_on(&mut conn, Family::V4).expect("dump"), vec![]);
    }

    #[test]
    fn an_overrun_or_a_malformed_message_fails_the_dump_without_hanging() {
        let overrun = FakeKernel::new(|m| vec![nlmsg(4, 0, m.seq, &[]), done(m.seq, 0)]);
        let e = dump_on(&mut Connection::new(overrun), Family::V4).expect_err("overrun");
        assert_eq!(e.op, "dump");
        assert!(e.to_string().contains("NLMSG_OVERRUN"), "{e}");
        let malformed = FakeKernel::new(|m| {
            let mut bad = nlmsg(CT_NEW, NLM_F_MULTI, m.seq, &entry_payload(&entry(1)));
            bad[..4].copy_from_slice(&4_000u32.to_ne_bytes());
            // The old reader broke out of this datagram into another blocking recv.
            vec![bad]
        });
        let e = dump_on(&mut Connection::new(malformed), Family::V4).expect_err("malformed");
        assert_eq!(e.error.kind(), std::io::ErrorKind::InvalidData, "{e}");
    }

    #[test]
    fn deleting_an_entry_already_gone_is_fine_and_other_errnos_are_not() {
        let kernel = FakeKernel::new(|m| {
            let errno = match m.seq {
                1 => 0,
                2 => 2, // ENOENT: expired meanwhile
                _ => 1, // EPERM
            };
            vec![ack(m.seq, errno)]
        });
        let mut conn = Connection::new(kernel.clone());
        delete_on(&mut conn, Family::V4, &entry(1)).expect("deleted");
        delete_on(&mut conn, Family::V4, &entry(2)).expect("gone is fine");
        let e = delete_on(&mut conn, Family::V4, &entry(3)).expect_err("EPERM");
        assert_eq!(
            e.to_string(),
            "conntrack delete (ipv4): Operation not permitted (os error 1)"
        );
        let sent = kernel.received();
        assert_eq!(sent.len(), 3, "one socket for the three deletes");
        assert_eq!(sent[0].message_type, 0x0102, "CTNETLINK, DELETE");
        assert_eq!(sent[0].flags & 0x5, 0x5, "NLM_F_REQUEST | NLM_F_ACK");
    }
}
