//! A blocking generic-netlink socket that speaks IPVS: resolves the family id once, and either
//! sends one request and collects its replies up to the ACK or the end of the dump, or sends a
//! batch of requests in one datagram and reads their ACKs back (see `super::batch`).

use std::{
    io,
    sync::{
        atomic::{AtomicU32, Ordering},
        Mutex, MutexGuard,
    },
};

use netlink_packet_core::{
    parse_i32, parse_u16, DecodeError, Emitable, ErrorBuffer, ErrorContext, NetlinkBuffer,
    NetlinkMessage, NetlinkSerializable, NlasIterator, ParseableParametrized, NLMSG_DONE,
    NLMSG_ERROR, NLMSG_NOOP, NLMSG_OVERRUN, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_generic::{
    constants::{CTRL_ATTR_FAMILY_ID, GENL_HDRLEN},
    ctrl::{nlas::GenlCtrlAttrs, GenlCtrl, GenlCtrlCmd},
    GenlFamily, GenlHeader, GenlMessage,
};
use netlink_sys::protocols::NETLINK_GENERIC;
use tracing::debug;

use super::batch::Conn;
use super::message::IpvsMessage;

/// What went wrong below the IPVS layer; `crate::client` adds the operation and object.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SocketError {
    /// A socket call failed.
    #[error("netlink socket")]
    Io(#[source] io::Error),
    /// The kernel answered with an error (the errno, as an `io::Error`).
    #[error("kernel error")]
    Kernel(#[source] io::Error),
    /// A reply did not decode.
    #[error("undecodable reply")]
    Decode(#[source] DecodeError),
}

/// A netlink socket bound to the `IPVS` generic-netlink family.
///
/// Requests are serialized by a mutex, so the socket can be shared; each call blocks until
/// the kernel has answered in full (use `tokio::task::spawn_blocking` from async code).
#[derive(Debug)]
pub struct IpvsSocket {
    conn: Mutex<Conn>,
    family_id: u16,
    seq: AtomicU32,
}

impl IpvsSocket {
    /// Opens a `NETLINK_GENERIC` socket and resolves the `IPVS` family id through `nlctrl`
    /// (as genetlink's `Resolver` does); the id is kept for the socket's lifetime.
    pub(crate) fn connect() -> Result<Self, SocketError> {
        let mut this = Self::connect_family(0)?;
        this.family_id = this.resolve_family()?;
        Ok(this)
    }

    /// Opens another socket for the family `family_id` resolved by an earlier
    /// [`IpvsSocket::connect`] (in the calling thread's network namespace).
    pub(crate) fn connect_family(family_id: u16) -> Result<Self, SocketError> {
        let conn = Conn::open(NETLINK_GENERIC).map_err(SocketError::Io)?;
        let limits = conn.limits();
        debug!(
            batch_ops = limits.ops,
            batch_bytes = limits.bytes,
            "IPVS netlink socket"
        );
        Ok(IpvsSocket {
            conn: Mutex::new(conn),
            family_id,
            seq: AtomicU32::new(1),
        })
    }

    /// The resolved generic-netlink id of the `IPVS` family.
    pub fn family_id(&self) -> u16 {
        self.family_id
    }

    fn lock(&self) -> MutexGuard<'_, Conn> {
        // A poisoned lock only means another request panicked mid-way; the socket itself is
        // still usable because stale replies are skipped by sequence number.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn resolve_family(&self) -> Result<u16, SocketError> {
        let ctrl = GenlCtrl {
            cmd: GenlCtrlCmd::GetFamily,
            nlas: vec![GenlCtrlAttrs::FamilyName(
                IpvsMessage::family_name().to_owned(),
            )],
        };
        let request = NetlinkMessage::from(GenlMessage::from_payload(ctrl));
        let mut family_id = None;
        // The reply is walked by hand rather than parsed as `GenlCtrl`, which rejects
        // attributes it does not know and would break on a newer kernel.
        self.exchange(request, NLM_F_REQUEST | NLM_F_ACK, |payload| {
            family_id = family_id.or(family_id_in(payload).map_err(SocketError::Decode)?);
            Ok(())
        })?;
        family_id.ok_or_else(|| {
            SocketError::Decode(DecodeError::from(
                "CTRL_CMD_GETFAMILY reply without CTRL_ATTR_FAMILY_ID",
            ))
        })
    }

    /// Sends `msg` with `NLM_F_ACK` and returns the replies that came before the ACK
    /// (none for commands that only change state).
    pub(crate) fn request(&self, msg: IpvsMessage) -> Result<Vec<IpvsMessage>, SocketError> {
        self.ipvs_exchange(msg, NLM_F_REQUEST | NLM_F_ACK)
    }

    /// Sends `msg` with `NLM_F_DUMP` and returns every message of the multipart reply.
    pub(crate) fn dump(&self, msg: IpvsMessage) -> Result<Vec<IpvsMessage>, SocketError> {
        self.ipvs_exchange(msg, NLM_F_REQUEST | NLM_F_DUMP)
    }

    /// Sends `msgs` (commands that only change state) as few datagrams as the limits allow,
    /// each request with `NLM_F_ACK`, and returns one result per request, in order. A
    /// request the kernel refused does not stop the others; a request whose ACK was lost
    /// (`ENOBUFS`) or never came is an error, as if refused, though it may have been done.
    pub(crate) fn batch(&self, msgs: Vec<IpvsMessage>) -> Vec<Result<(), SocketError>> {
        let mut conn = self.lock();
        conn.batch(&self.seq, msgs.len(), |i, out| {
            if let Some(msg) = msgs.get(i) {
                self.encode(msg.clone(), NLM_F_REQUEST | NLM_F_ACK, 0, out);
            }
        })
    }

    /// Appends `msg` as one request to `out`.
    fn encode(&self, msg: IpvsMessage, flags: u16, seq: u32, out: &mut Vec<u8>) {
        let mut genl = GenlMessage::from_payload(msg);
        genl.set_resolved_family_id(self.family_id);
        let mut request = NetlinkMessage::from(genl);
        request.header.flags = flags;
        request.header.sequence_number = seq;
        request.finalize();
        let start = out.len();
        out.resize(start + request.buffer_len(), 0);
        request.serialize(&mut out[start..]);
    }

    fn ipvs_exchange(&self, msg: IpvsMessage, flags: u16) -> Result<Vec<IpvsMessage>, SocketError> {
        let mut genl = GenlMessage::from_payload(msg);
        genl.set_resolved_family_id(self.family_id);
        let mut replies = Vec::new();
        self.exchange(NetlinkMessage::from(genl), flags, |payload| {
            let header = GenlHeader::parse(payload).map_err(SocketError::Decode)?;
            let reply = IpvsMessage::parse_with_param(&payload[GENL_HDRLEN..], header)
                .map_err(SocketError::Decode)?;
            replies.push(reply);
            Ok(())
        })?;
        Ok(replies)
    }

    /// Sends one request and feeds the payload of every reply message to `each`, until the
    /// ACK, the end of a dump, or an error.
    fn exchange<F>(
        &self,
        mut request: NetlinkMessage<GenlMessage<F>>,
        flags: u16,
        mut each: impl FnMut(&[u8]) -> Result<(), SocketError>,
    ) -> Result<(), SocketError>
    where
        F: GenlFamily + Emitable + std::fmt::Debug,
        GenlMessage<F>: NetlinkSerializable,
    {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        request.header.flags = flags;
        request.header.sequence_number = seq;
        request.finalize();
        let mut bytes = vec![0u8; request.buffer_len()];
        request.serialize(&mut bytes);

        let mut conn = self.lock();
        conn.send(&bytes).map_err(SocketError::Io)?;
        loop {
            let datagram = conn.recv(0).map_err(SocketError::Io)?;
            if read_datagram(datagram, seq, &mut each)? == Progress::Finished {
                return Ok(());
            }
        }
    }
}

/// The netlink messages of one datagram, each checked; stops after the first malformed one.
pub(crate) fn messages(
    datagram: &[u8],
) -> impl Iterator<Item = Result<NetlinkBuffer<&[u8]>, DecodeError>> {
    let mut offset = 0;
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || offset >= datagram.len() {
            return None;
        }
        match NetlinkBuffer::new_checked(&datagram[offset..]) {
            Ok(nl) => {
                // Messages in one datagram are 4-byte aligned (NLMSG_ALIGN); new_checked()
                // made sure the length is at least a header, so this always moves on.
                offset += (nl.length() as usize + 3) & !3;
                Some(Ok(nl))
            }
            Err(e) => {
                failed = true;
                Some(Err(e))
            }
        }
    })
}

/// The `CTRL_ATTR_FAMILY_ID` of a `CTRL_CMD_GETFAMILY` reply payload (genlmsghdr included).
fn family_id_in(payload: &[u8]) -> Result<Option<u16>, DecodeError> {
    let attrs = payload.get(GENL_HDRLEN..).unwrap_or_default();
    for nla in NlasIterator::new(attrs) {
        let nla = nla?;
        if nla.kind() == CTRL_ATTR_FAMILY_ID {
            return parse_u16(nla.value())
                .context("invalid CTRL_ATTR_FAMILY_ID")
                .map(Some);
        }
    }
    Ok(None)
}

/// Whether the reply to a request is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Progress {
    /// More datagrams follow.
    More,
    /// The ACK or the end of the dump arrived.
    Finished,
}

/// Walks the netlink messages of one datagram (a dump packs many into one), feeding the
/// payloads of the replies to request `seq` to `each`. Replies to other sequence numbers
/// (left over from an earlier, interrupted request) are skipped.
pub(crate) fn read_datagram(
    datagram: &[u8],
    seq: u32,
    each: &mut impl FnMut(&[u8]) -> Result<(), SocketError>,
) -> Result<Progress, SocketError> {
    for nl in messages(datagram) {
        let nl = nl.map_err(SocketError::Decode)?;
        if nl.sequence_number() != seq {
            continue;
        }
        match nl.message_type() {
            NLMSG_ERROR => {
                let err = ErrorBuffer::new_checked(nl.payload()).map_err(SocketError::Decode)?;
                return match err.code() {
                    None => Ok(Progress::Finished),
                    Some(code) => Err(SocketError::Kernel(io::Error::from_raw_os_error(
                        code.get().saturating_abs(),
                    ))),
                };
            }
            NLMSG_DONE => {
                // A dump that failed half-way ends with a negative errno here.
                let code = nl.payload().get(..4).map(parse_i32).transpose();
                return match code.map_err(SocketError::Decode)? {
                    Some(code) if code < 0 => Err(SocketError::Kernel(
                        io::Error::from_raw_os_error(code.saturating_abs()),
                    )),
                    _ => Ok(Progress::Finished),
                };
            }
            NLMSG_NOOP => {}
            NLMSG_OVERRUN => {
                return Err(SocketError::Decode(DecodeError::from(
                    "NLMSG_OVERRUN: the kernel dropped part of the reply",
                )))
            }
            _ => each(nl.payload())?,
        }
    }
    Ok(Progress::More)
}

#[cfg(test)]
pub(crate) mod tests {
    //! The reply loop, on datagrams shaped like the kernel's (see the `ipvsadm -Ln` and
    //! `ipvsadm -A` captures in `tests/captures/`: ACKs are 36 bytes with `NLM_F_CAPPED`).

    use super::*;

    pub(crate) const SEQ: u32 = 1_795_616_306;
    pub(crate) const IPVS_FAMILY: u16 = 0x20;
    const NLM_F_MULTI: u16 = 0x2;
    const NLM_F_CAPPED: u16 = 0x100;

    /// One netlink message: nlmsghdr (len, type, flags, seq, pid) + payload, padded to 4.
    pub(crate) fn nlmsg(ty: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&(16 + payload.len() as u32).to_ne_bytes());
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&flags.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&570_425_464u32.to_ne_bytes());
        m.extend_from_slice(payload);
        m.resize((m.len() + 3) & !3, 0);
        m
    }

    /// NLMSG_ERROR with `errno` (0: ACK), echoing a 16-byte request header.
    pub(crate) fn error(seq: u32, errno: i32) -> Vec<u8> {
        let mut payload = (-errno).to_ne_bytes().to_vec();
        payload.extend_from_slice(&nlmsg(IPVS_FAMILY, 0x5, seq, &[])[..16]);
        nlmsg(NLMSG_ERROR, NLM_F_CAPPED, seq, &payload)
    }

    fn read(datagram: &[u8]) -> (Result<Progress, SocketError>, Vec<Vec<u8>>) {
        let mut seen = Vec::new();
        let result = read_datagram(datagram, SEQ, &mut |payload: &[u8]| {
            seen.push(payload.to_vec());
            Ok(())
        });
        (result, seen)
    }

    /// The kernel's reply to `CTRL_CMD_GETFAMILY` for "IPVS", as libnl received it in the
    /// `ipvsadm -A -t 198.18.0.10:80 -s rr` capture.
    fn getfamily_reply() -> Vec<u8> {
        #[rustfmt::skip]
        let head = [
            0x01, 0x02, 0x00, 0x00, // genlmsghdr: cmd CTRL_CMD_NEWFAMILY, version 2
            0x09, 0x00, 0x02, 0x00, // len 9, CTRL_ATTR_FAMILY_NAME
            b'I', b'P', b'V', b'S', //   "IPVS
            0x00, 0x00, 0x00, 0x00, //   \0", padding
            0x06, 0x00, 0x01, 0x00, // len 6, CTRL_ATTR_FAMILY_ID
            0x20, 0x00, 0x00, 0x00, //   0x20, padding
            0x08, 0x00, 0x03, 0x00, // len 8, CTRL_ATTR_VERSION
            0x01, 0x00, 0x00, 0x00, //   IPVS_GENL_VERSION
            0x08, 0x00, 0x04, 0x00, // len 8, CTRL_ATTR_HDRSIZE
            0x00, 0x00, 0x00, 0x00, //   0
            0x08, 0x00, 0x05, 0x00, // len 8, CTRL_ATTR_MAXATTR
            0x06, 0x00, 0x00, 0x00, //   IPVS_CMD_ATTR_MAX
            0x44, 0x01, 0x06, 0x00, // len 324, CTRL_ATTR_OPS: 16 x (CTRL_ATTR_OP_ID, _FLAGS)
        ];
        // (IPVS_CMD_*, GENL_* op flags) as the capture lists them.
        let ops: [(u32, u32); 16] = [
            (1, 0xb),
            (2, 0xb),
            (3, 0xb),
            (4, 0xf),
            (5, 0xb),
            (6, 0xb),
            (7, 0xb),
            (8, 0xd),
            (9, 0xb),
            (10, 0xb),
            (11, 0xd),
            (12, 0xb),
            (13, 0xb),
            (15, 0xb),
            (16, 0xb),
            (17, 0xb),
        ];
        let mut raw = head.to_vec();
        for (i, (id, flags)) in (1u16..).zip(ops) {
            raw.extend_from_slice(&[0x14, 0x00]); // len 20, nest number i
            raw.extend_from_slice(&i.to_ne_bytes());
            raw.extend_from_slice(&[0x08, 0x00, 0x01, 0x00]); // CTRL_ATTR_OP_ID
            raw.extend_from_slice(&id.to_ne_bytes());
            raw.extend_from_slice(&[0x08, 0x00, 0x02, 0x00]); // CTRL_ATTR_OP_FLAGS
            raw.extend_from_slice(&flags.to_ne_bytes());
        }
        raw
    }

    #[test]
    fn family_id_from_the_kernels_getfamily_reply() {
        let raw = getfamily_reply();
        assert_eq!(raw.len(), 372, "the captured payload is 372 bytes");
        assert_eq!(family_id_in(&raw).expect("parses"), Some(0x20));
        assert_eq!(
            family_id_in(&raw[..16]).expect("parses"),
            None,
            "name only, no id"
        );
        assert!(
            family_id_in(&raw[..21]).is_err(),
            "a cut attribute is an error"
        );
    }

    #[test]
    fn ack_finishes_the_request() {
        let (result, seen) = read(&error(SEQ, 0));
        assert_eq!(result.expect("ack"), Progress::Finished);
        assert!(seen.is_empty());
    }

    #[test]
    fn kernel_error_carries_the_errno() {
        let (result, _) = read(&error(SEQ, 17));
        match result {
            Err(SocketError::Kernel(e)) => assert_eq!(e.raw_os_error(), Some(17)),
            other => panic!("want EEXIST, got {other:?}"),
        }
    }

    #[test]
    fn reply_then_ack_in_two_datagrams() {
        // GET_INFO: the reply (IPVS_CMD_SET_INFO), then the ACK in the next datagram.
        let reply = [
            0x0e, 0x01, 0x00, 0x00, 0x08, 0x00, 0x01, 0x00, 0x01, 0x02, 0x01, 0x00,
        ];
        let (result, seen) = read(&nlmsg(IPVS_FAMILY, 0, SEQ, &reply));
        assert_eq!(result.expect("reply"), Progress::More);
        assert_eq!(seen, vec![reply.to_vec()]);
    }

    #[test]
    fn multipart_dump_until_done() {
        let datagram = [
            nlmsg(IPVS_FAMILY, NLM_F_MULTI, SEQ, &[0x01, 0x01, 0x00, 0x00]),
            nlmsg(
                IPVS_FAMILY,
                NLM_F_MULTI,
                SEQ,
                &[0x01, 0x01, 0x00, 0x00, 0xaa],
            ),
            nlmsg(NLMSG_DONE, NLM_F_MULTI, SEQ, &0i32.to_ne_bytes()),
            // Anything after DONE is not ours to read.
            nlmsg(IPVS_FAMILY, NLM_F_MULTI, SEQ, &[0x02, 0x01, 0x00, 0x00]),
        ]
        .concat();
        let (result, seen) = read(&datagram);
        assert_eq!(result.expect("dump"), Progress::Finished);
        assert_eq!(
            seen,
            vec![
                vec![0x01, 0x01, 0x00, 0x00],
                vec![0x01, 0x01, 0x00, 0x00, 0xaa]
            ],
            "the padding of an odd-sized message is not part of its payload"
        );
    }

    #[test]
    fn dump_interrupted_by_an_error_in_done() {
        let (result, _) = read(&nlmsg(NLMSG_DONE, NLM_F_MULTI, SEQ, &(-4i32).to_ne_bytes()));
        match result {
            Err(SocketError::Kernel(e)) => assert_eq!(e.raw_os_error(), Some(4)),
            other => panic!("want EINTR, got {other:?}"),
        }
    }

    #[test]
    fn stale_replies_are_skipped() {
        let datagram = [
            error(SEQ - 1, 17),
            nlmsg(IPVS_FAMILY, 0, SEQ, &[0x0e, 0x01, 0, 0]),
        ]
        .concat();
        let (result, seen) = read(&datagram);
        assert_eq!(
            result.expect("the stale EEXIST is not ours"),
            Progress::More
        );
        assert_eq!(seen.len(), 1);
    }

    #[test]
    fn truncated_datagram_is_an_error_not_a_panic() {
        let mut datagram = error(SEQ, 0);
        datagram.truncate(20);
        assert!(matches!(read(&datagram).0, Err(SocketError::Decode(_))));
        assert!(matches!(read(&[0u8; 7]).0, Err(SocketError::Decode(_))));
        // A length field below the header size must not loop forever.
        let mut zero_len = error(SEQ, 0);
        zero_len[..4].copy_from_slice(&0u32.to_ne_bytes());
        assert!(matches!(read(&zero_len).0, Err(SocketError::Decode(_))));
    }
}
