//! Framing: what a request is to the transport ([`Request`]), what a reply is ([`Reply`]), and
//! walking the netlink messages of one datagram.

use netlink_packet_core::{DecodeError, NetlinkBuffer, NetlinkMessage, NetlinkSerializable};

/// One request, as the transport sends it.
///
/// A message family (IPVS, ipset, conntrack, rtnetlink) implements it for its messages; the
/// transport then sets the sequence number and ORs in the flags the exchange needs
/// (`NLM_F_REQUEST`, and `NLM_F_ACK` or `NLM_F_DUMP`).
pub trait Request {
    /// Appends the request as one whole netlink message at the end of `out`: `nlmsghdr` (with
    /// its length, type and the family's own flags, such as `NLM_F_CREATE`) and payload. The
    /// sequence number may be anything; it is overwritten.
    fn emit_message(&self, out: &mut Vec<u8>);

    /// What the request is, for errors (`"IPVS_CMD_NEW_SERVICE"`). Called only on failure.
    fn describe(&self) -> String;
}

impl<T: Request + ?Sized> Request for &T {
    fn emit_message(&self, out: &mut Vec<u8>) {
        (**self).emit_message(out);
    }

    fn describe(&self) -> String {
        (**self).describe()
    }
}

/// A `netlink-packet-core` message is a request: its header's length and type are computed
/// here, so it need not be `finalize`d. Only an inner (family) message has a payload; the
/// control payloads (`Done`, `Error`...) are never requests and are sent as a bare header.
impl<T: NetlinkSerializable + std::fmt::Debug> Request for NetlinkMessage<T> {
    fn emit_message(&self, out: &mut Vec<u8>) {
        use netlink_packet_core::{Emitable, NetlinkPayload};
        let start = out.len();
        let mut header = self.header;
        let payload_len = match &self.payload {
            NetlinkPayload::InnerMessage(inner) => {
                header.message_type = inner.message_type();
                inner.buffer_len()
            }
            _ => 0,
        };
        let len = HEADER_LEN + payload_len;
        header.length = u32::try_from(len).unwrap_or(u32::MAX);
        out.resize(start + len, 0);
        header.emit(&mut out[start..start + HEADER_LEN]);
        if let NetlinkPayload::InnerMessage(inner) = &self.payload {
            inner.serialize(&mut out[start + HEADER_LEN..]);
        }
    }

    fn describe(&self) -> String {
        format!("netlink message type {}", self.payload.message_type())
    }
}

/// Bytes already framed as one netlink message, with a description: for families that
/// encode their own headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRequest {
    /// The whole message, `nlmsghdr` included.
    pub bytes: Vec<u8>,
    /// What it is, for errors.
    pub description: String,
}

impl Request for RawRequest {
    fn emit_message(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.bytes);
    }

    fn describe(&self) -> String {
        self.description.clone()
    }
}

/// One reply message of a request or dump (not the ACK, error or `NLMSG_DONE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply<'a> {
    /// `nlmsg_type`: the family's message type (`RTM_NEWLINK`, the IPVS family id...).
    pub message_type: u16,
    /// `nlmsg_flags` (`NLM_F_MULTI` in dumps).
    pub flags: u16,
    /// The payload after `nlmsghdr`, without padding.
    pub payload: &'a [u8],
}

/// `sizeof(struct nlmsghdr)`.
pub(crate) const HEADER_LEN: usize = 16;

/// `NLMSG_ALIGN`: messages in one datagram start 4-byte aligned.
pub(crate) fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Overwrites the sequence number of the message at `start` in `bytes` and ORs `flags` into
/// its flags. An emitter that wrote less than a header gets neither (the kernel rejects it).
pub(crate) fn stamp(bytes: &mut [u8], start: usize, flags: u16, seq: u32) {
    // nlmsghdr: len (4), type (2), flags (2), seq (4), pid (4).
    if let Some(field) = bytes.get_mut(start + 6..start + 8) {
        let old = u16::from_ne_bytes([field[0], field[1]]);
        field.copy_from_slice(&(old | flags).to_ne_bytes());
    }
    if let Some(field) = bytes.get_mut(start + 8..start + 12) {
        field.copy_from_slice(&seq.to_ne_bytes());
    }
}

/// The netlink messages of one datagram, each checked; stops after the first malformed one,
/// so a bad length can neither loop nor read past the datagram.
pub fn messages(
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
                // new_checked() made sure the length is at least a header, so this moves on.
                offset += align4(nl.length() as usize).max(HEADER_LEN);
                Some(Ok(nl))
            }
            Err(e) => {
                failed = true;
                Some(Err(e))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::nlmsg;

    #[test]
    fn messages_of_a_datagram_are_walked_with_padding() {
        let datagram = [nlmsg(20, 0, 1, &[1, 2, 3, 4, 5]), nlmsg(21, 0, 2, &[])].concat();
        let walked: Vec<(u16, u32, Vec<u8>)> = messages(&datagram)
            .map(|m| {
                let m = m.expect("well formed");
                (m.message_type(), m.sequence_number(), m.payload().to_vec())
            })
            .collect();
        assert_eq!(
            walked,
            vec![(20, 1, vec![1, 2, 3, 4, 5]), (21, 2, vec![])],
            "the padding of the odd-sized first message is not payload"
        );
    }

    #[test]
    fn a_bad_length_ends_the_walk_with_an_error() {
        let mut zero_len = nlmsg(20, 0, 1, &[]);
        zero_len[..4].copy_from_slice(&0u32.to_ne_bytes());
        let walked: Vec<_> = messages(&zero_len).collect();
        assert_eq!(walked.len(), 1);
        assert!(walked[0].is_err());
        let mut long = nlmsg(20, 0, 1, &[0; 8]);
        long[..4].copy_from_slice(&100u32.to_ne_bytes());
        assert!(messages(&long).all(|m| m.is_err()));
        assert!(messages(&[0u8; 7]).all(|m| m.is_err()));
    }

    #[test]
    fn stamping_sets_the_sequence_and_adds_flags() {
        let mut bytes = nlmsg(20, 0x400, 0, &[9; 4]);
        stamp(&mut bytes, 0, 0x5, 0xdead_beef);
        let m = NetlinkBuffer::new_checked(&bytes[..]).expect("well formed");
        assert_eq!(m.flags(), 0x405, "the family's NLM_F_CREATE stays");
        assert_eq!(m.sequence_number(), 0xdead_beef);
        assert_eq!(m.payload(), &[9; 4]);
        let mut short = vec![0u8; 10];
        stamp(&mut short, 0, 0x5, 1);
        assert_eq!(short[6], 5, "flags fit, the sequence number does not");
    }
}
