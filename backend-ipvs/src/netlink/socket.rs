//! A blocking generic-netlink socket that speaks IPVS, on the workspace's one netlink
//! transport (`netlink-transport`): resolves the family id once, and sends one request and
//! collects its replies up to the ACK or the end of the dump, or a batch of requests with a
//! result per request.

use std::sync::{Mutex, MutexGuard};

use netlink_packet_core::{
    parse_u16, DecodeError, Emitable, ErrorContext, NetlinkHeader, NetlinkMessage, NlasIterator,
};
use netlink_packet_generic::{
    constants::{CTRL_ATTR_FAMILY_ID, GENL_HDRLEN},
    ctrl::{nlas::GenlCtrlAttrs, GenlCtrl, GenlCtrlCmd},
    GenlFamily, GenlHeader, GenlMessage,
};
use netlink_transport::{Connection, Datagrams, NetlinkError, Protocol, Reply, Request, SysSocket};
use tracing::debug;

use super::message::{IpvsMessage, Statistics};

/// `sizeof(struct nlmsghdr)`.
const NLMSG_HDRLEN: usize = 16;

/// A netlink socket bound to the `IPVS` generic-netlink family.
///
/// Requests are serialized by a mutex, so the socket can be shared; each call blocks until
/// the kernel has answered in full or the receive timeout passed (use
/// `tokio::task::spawn_blocking` from async code).
#[derive(Debug)]
pub struct IpvsSocket<D = SysSocket> {
    conn: Mutex<Connection<D>>,
    family_id: u16,
}

impl IpvsSocket {
    /// Opens a `NETLINK_GENERIC` socket and resolves the `IPVS` family id through `nlctrl`
    /// (as genetlink's `Resolver` does); the id is kept for the socket's lifetime.
    pub(crate) fn connect() -> Result<Self, NetlinkError> {
        IpvsSocket::resolve(Connection::open(Protocol::Generic)?)
    }

    /// Opens another socket for the family `family_id` resolved by an earlier
    /// [`IpvsSocket::connect`] (in the calling thread's network namespace).
    pub(crate) fn connect_family(family_id: u16) -> Result<Self, NetlinkError> {
        Ok(IpvsSocket::over(
            Connection::open(Protocol::Generic)?,
            family_id,
        ))
    }
}

/// An IPVS message as the transport sends it: `nlmsghdr`, `genlmsghdr`, attributes. It is
/// written in place, so a batch does not copy its messages.
struct IpvsRequest<'a> {
    msg: &'a IpvsMessage,
    family_id: u16,
}

impl Request for IpvsRequest<'_> {
    fn emit_message(&self, out: &mut Vec<u8>) {
        let start = out.len();
        let len = NLMSG_HDRLEN + GENL_HDRLEN + self.msg.buffer_len();
        out.resize(start + len, 0);
        let mut header = NetlinkHeader::default();
        header.length = u32::try_from(len).unwrap_or(u32::MAX);
        header.message_type = self.family_id;
        header.emit(&mut out[start..start + NLMSG_HDRLEN]);
        let genl = GenlHeader {
            cmd: self.msg.command(),
            version: self.msg.version(),
        };
        genl.emit(&mut out[start + NLMSG_HDRLEN..start + NLMSG_HDRLEN + GENL_HDRLEN]);
        self.msg
            .emit(&mut out[start + NLMSG_HDRLEN + GENL_HDRLEN..start + len]);
    }

    fn describe(&self) -> String {
        format!("IPVS {:?}", self.msg.cmd)
    }
}

/// The `IpvsMessage` of a reply payload (`genlmsghdr` and attributes), its statistics as
/// `statistics` says.
fn parse_reply(reply: Reply<'_>, statistics: Statistics) -> Result<IpvsMessage, DecodeError> {
    let header = GenlHeader::parse(reply.payload)?;
    IpvsMessage::parse_in(&reply.payload[GENL_HDRLEN..], header, statistics)
}

impl<D: Datagrams> IpvsSocket<D> {
    /// The IPVS exchanges over `conn`, for the already resolved `family_id`.
    pub(crate) fn over(conn: Connection<D>, family_id: u16) -> Self {
        let limits = conn.limits();
        debug!(
            batch_ops = limits.ops,
            batch_bytes = limits.bytes,
            "IPVS netlink socket"
        );
        IpvsSocket {
            conn: Mutex::new(conn),
            family_id,
        }
    }

    /// Resolves the `IPVS` family id on `conn` (`CTRL_CMD_GETFAMILY`).
    pub(crate) fn resolve(mut conn: Connection<D>) -> Result<Self, NetlinkError> {
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
        conn.request(&request, |reply| {
            family_id = family_id.or(family_id_in(reply.payload)?);
            Ok(())
        })?;
        match family_id {
            Some(id) => Ok(IpvsSocket::over(conn, id)),
            None => Err(NetlinkError::Malformed {
                request: netlink_transport::RequestId {
                    index: 0,
                    seq: 0,
                    description: "CTRL_CMD_GETFAMILY IPVS".to_owned(),
                },
                source: DecodeError::from("CTRL_CMD_GETFAMILY reply without CTRL_ATTR_FAMILY_ID"),
            }),
        }
    }

    /// The resolved generic-netlink id of the `IPVS` family.
    pub fn family_id(&self) -> u16 {
        self.family_id
    }

    fn lock(&self) -> MutexGuard<'_, Connection<D>> {
        // A poisoned lock only means another request panicked mid-way; the socket itself is
        // still usable because stale replies are skipped by sequence number.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn request_of<'a>(&self, msg: &'a IpvsMessage) -> IpvsRequest<'a> {
        IpvsRequest {
            msg,
            family_id: self.family_id,
        }
    }

    /// Sends `msg` with `NLM_F_ACK` and returns the replies that came before the ACK
    /// (none for commands that only change state).
    pub(crate) fn request(&self, msg: IpvsMessage) -> Result<Vec<IpvsMessage>, NetlinkError> {
        let mut replies = Vec::new();
        self.lock().request(&self.request_of(&msg), |reply| {
            replies.push(parse_reply(reply, Statistics::Decode)?);
            Ok(())
        })?;
        Ok(replies)
    }

    /// Sends `msg` with `NLM_F_DUMP` and returns every message of the multipart reply, without
    /// the services' and destinations' traffic statistics
    /// ([`IpvsMessage::parse_without_stats`]: nothing reads them, and they are most of a dump).
    pub(crate) fn dump(&self, msg: IpvsMessage) -> Result<Vec<IpvsMessage>, NetlinkError> {
        let mut replies = Vec::new();
        self.lock().dump(&self.request_of(&msg), |reply| {
            replies.push(parse_reply(reply, Statistics::Skip)?);
            Ok(())
        })?;
        Ok(replies)
    }

    /// Sends `msgs` (commands that only change state) in as few datagrams as the socket's
    /// buffers allow, each request with `NLM_F_ACK`, and returns one result per request, in
    /// order. A request the kernel refused does not stop the others; a request whose ACK was
    /// lost (`ENOBUFS`) or never came is [`NetlinkError::AckLost`]: it may have been done.
    pub(crate) fn batch(&self, msgs: Vec<IpvsMessage>) -> Vec<Result<(), NetlinkError>> {
        let requests: Vec<IpvsRequest<'_>> = msgs.iter().map(|m| self.request_of(m)).collect();
        self.lock().batch(&requests)
    }
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

#[cfg(test)]
mod tests {
    //! Family resolution and the IPVS exchanges against the transport's fake kernel, with
    //! datagrams shaped like the kernel's (see the `ipvsadm -Ln` and `ipvsadm -A` captures
    //! in `tests/captures/`).

    use netlink_transport::errno::EEXIST;
    use netlink_transport::fake::{ack, done, nlmsg, FakeKernel};

    use super::*;
    use crate::netlink::IpvsCmd;

    const IPVS_FAMILY: u16 = 0x20;
    /// `GENL_ID_CTRL`: nlctrl's fixed id.
    const GENL_ID_CTRL: u16 = 0x10;
    const NLM_F_MULTI: u16 = 0x2;

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

    /// A kernel with IPVS at [`IPVS_FAMILY`]: nlctrl answers the family query, and IPVS
    /// requests get `answer(seq, cmd)`.
    fn kernel(answer: impl Fn(u32, u8) -> Vec<Vec<u8>> + Send + 'static) -> FakeKernel {
        FakeKernel::new(move |m| match m.message_type {
            GENL_ID_CTRL => vec![
                nlmsg(GENL_ID_CTRL, 0, m.seq, &getfamily_reply()),
                ack(m.seq, 0),
            ],
            IPVS_FAMILY => answer(m.seq, m.payload[0]),
            other => panic!("a request to family {other:#x}"),
        })
    }

    #[test]
    fn connecting_resolves_the_family_and_requests_go_to_it() {
        let fake = kernel(|seq, _| vec![ack(seq, 0)]);
        let socket = IpvsSocket::resolve(Connection::new(fake.clone())).expect("resolved");
        assert_eq!(socket.family_id(), IPVS_FAMILY);
        socket
            .request(IpvsMessage::new(IpvsCmd::Flush, vec![]))
            .expect("acked");
        let sent = fake.received();
        assert_eq!(sent[1].message_type, IPVS_FAMILY);
        // genlmsghdr: IPVS_CMD_FLUSH (17), IPVS_GENL_VERSION 1.
        assert_eq!(&sent[1].payload[..2], &[17, 1]);
    }

    #[test]
    fn a_family_reply_without_an_id_is_an_error() {
        let fake = FakeKernel::new(|m| {
            vec![
                nlmsg(GENL_ID_CTRL, 0, m.seq, &getfamily_reply()[..16]),
                ack(m.seq, 0),
            ]
        });
        let error = IpvsSocket::resolve(Connection::new(fake)).expect_err("no id");
        assert!(matches!(error, NetlinkError::Malformed { .. }), "{error:?}");
    }

    #[test]
    fn a_dump_collects_every_reply() {
        // Two IPVS_CMD_NEW_SERVICE replies without attributes, then DONE.
        let fake = kernel(|seq, _| {
            vec![[
                nlmsg(IPVS_FAMILY, NLM_F_MULTI, seq, &[4, 1, 0, 0]),
                nlmsg(IPVS_FAMILY, NLM_F_MULTI, seq, &[4, 1, 0, 0]),
                done(seq, 0),
            ]
            .concat()]
        });
        let socket = IpvsSocket::resolve(Connection::new(fake)).expect("resolved");
        let replies = socket
            .dump(IpvsMessage::new(IpvsCmd::GetService, vec![]))
            .expect("dump");
        assert_eq!(replies.len(), 2);
    }

    #[test]
    fn a_batch_has_a_result_per_request() {
        // The second of three is refused (EEXIST); one datagram carries all three.
        let fake = kernel(|seq, _| vec![ack(seq, if seq == 3 { 17 } else { 0 })]);
        let socket = IpvsSocket::resolve(Connection::new(fake.clone())).expect("resolved");
        let msgs = vec![IpvsMessage::new(IpvsCmd::Flush, vec![]); 3];
        let results = socket.batch(msgs);
        assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
        let refused = results[1].as_ref().expect_err("EEXIST");
        assert_eq!(refused.kernel_errno(), Some(EEXIST));
        assert_eq!(
            refused.request().map(|r| (r.index, r.description.as_str())),
            Some((1, "IPVS Flush"))
        );
        assert_eq!(fake.sends(), 2, "the family query, then one batch datagram");
    }
}
