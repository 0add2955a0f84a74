//! A blocking generic-netlink socket that speaks IPVS: resolves the family id once, sends one
//! request at a time and collects the replies up to the ACK or the end of the dump.

use std::{
    io,
    sync::{
        atomic::{AtomicU32, Ordering},
        Mutex,
    },
};

use netlink_packet_core::{
    parse_i32, parse_u16, DecodeError, Emitable, ErrorBuffer, NetlinkBuffer, NetlinkMessage,
    NetlinkSerializable, NlasIterator, ParseableParametrized, NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP,
    NLMSG_OVERRUN, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_generic::{
    constants::{CTRL_ATTR_FAMILY_ID, GENL_HDRLEN},
    ctrl::{nlas::GenlCtrlAttrs, GenlCtrl, GenlCtrlCmd},
    GenlFamily, GenlHeader, GenlMessage,
};
use netlink_sys::{protocols::NETLINK_GENERIC, Socket, SocketAddr};

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
    socket: Mutex<Socket>,
    family_id: u16,
    seq: AtomicU32,
}

impl IpvsSocket {
    /// Opens a `NETLINK_GENERIC` socket and resolves the `IPVS` family id through `nlctrl`
    /// (as genetlink's `Resolver` does); the id is kept for the socket's lifetime.
    pub(crate) fn connect() -> Result<Self, SocketError> {
        let mut socket = Socket::new(NETLINK_GENERIC).map_err(SocketError::Io)?;
        socket.bind_auto().map_err(SocketError::Io)?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(SocketError::Io)?;
        let mut this = IpvsSocket {
            socket: Mutex::new(socket),
            family_id: 0,
            seq: AtomicU32::new(1),
        };
        this.family_id = this.resolve_family()?;
        Ok(this)
    }

    /// The resolved generic-netlink id of the `IPVS` family.
    pub fn family_id(&self) -> u16 {
        self.family_id
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
            let attrs = payload.get(GENL_HDRLEN..).unwrap_or_default();
            for nla in NlasIterator::new(attrs) {
                let nla = nla.map_err(SocketError::Decode)?;
                if nla.kind() == CTRL_ATTR_FAMILY_ID {
                    family_id = Some(parse_u16(nla.value()).map_err(SocketError::Decode)?);
                }
            }
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
    /// ACK, the end of a dump, or an error. Replies to other sequence numbers (left over from
    /// an earlier, interrupted request) are skipped.
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

        // A poisoned lock only means another request panicked mid-way; the socket itself is
        // still usable because stale replies are skipped by sequence number.
        let socket = self.socket.lock().unwrap_or_else(|e| e.into_inner());
        socket.send(&bytes, 0).map_err(SocketError::Io)?;
        loop {
            let (datagram, _) = socket.recv_from_full().map_err(SocketError::Io)?;
            let mut offset = 0;
            while offset < datagram.len() {
                let nl =
                    NetlinkBuffer::new_checked(&datagram[offset..]).map_err(SocketError::Decode)?;
                // Messages in one datagram are 4-byte aligned (NLMSG_ALIGN).
                let next = offset + ((nl.length() as usize + 3) & !3);
                if nl.sequence_number() == seq {
                    match nl.message_type() {
                        NLMSG_ERROR => {
                            let err = ErrorBuffer::new_checked(nl.payload())
                                .map_err(SocketError::Decode)?;
                            return match err.code() {
                                None => Ok(()),
                                Some(code) => Err(SocketError::Kernel(
                                    io::Error::from_raw_os_error(code.get().saturating_abs()),
                                )),
                            };
                        }
                        NLMSG_DONE => {
                            // A dump that failed half-way ends with a negative errno here.
                            let code = nl.payload().get(..4).map(parse_i32).transpose();
                            return match code.map_err(SocketError::Decode)? {
                                Some(code) if code < 0 => Err(SocketError::Kernel(
                                    io::Error::from_raw_os_error(code.saturating_abs()),
                                )),
                                _ => Ok(()),
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
                offset = next;
            }
        }
    }
}
