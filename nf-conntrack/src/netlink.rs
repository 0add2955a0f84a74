//! [`Netlink`]: the real [`ConntrackOps`] over a `NETLINK_NETFILTER` socket.

use crate::message::{
    align4, encode_delete, encode_dump, parse_entry, NFGENMSG_LEN, NLMSG_DONE, NLMSG_ERROR,
    NLMSG_HDRLEN,
};
use crate::{ConntrackError, ConntrackOps, Entry, Family};

/// The real [`ConntrackOps`]: a ctnetlink socket per call, in the caller's network namespace.
#[derive(Debug, Default, Clone, Copy)]
pub struct Netlink;

fn io_error(op: &'static str, family: Family) -> impl Fn(std::io::Error) -> ConntrackError {
    move |source| ConntrackError { op, family, source }
}

impl Netlink {
    fn socket(op: &'static str, family: Family) -> Result<netlink_sys::Socket, ConntrackError> {
        let mut socket = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_NETFILTER)
            .map_err(io_error(op, family))?;
        socket.bind_auto().map_err(io_error(op, family))?;
        socket
            .connect(&netlink_sys::SocketAddr::new(0, 0))
            .map_err(io_error(op, family))?;
        Ok(socket)
    }

    /// Reads replies until DONE (dump) or an ACK/error (request); calls `each` per message body.
    fn receive(
        socket: &netlink_sys::Socket,
        op: &'static str,
        family: Family,
        mut each: impl FnMut(&[u8]),
    ) -> Result<(), ConntrackError> {
        loop {
            let (data, _) = socket.recv_from_full().map_err(io_error(op, family))?;
            let mut rest = data.as_slice();
            while rest.len() >= NLMSG_HDRLEN {
                let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                let kind = u16::from_ne_bytes([rest[4], rest[5]]);
                if len < NLMSG_HDRLEN || len > rest.len() {
                    break;
                }
                let body = &rest[NLMSG_HDRLEN..len];
                match kind {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let code = body
                            .get(..4)
                            .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                            .unwrap_or(0);
                        // 0 is the ACK; ENOENT: the entry expired meanwhile.
                        if code == 0 || code == -libc_enoent() {
                            return Ok(());
                        }
                        return Err(ConntrackError {
                            op,
                            family,
                            source: std::io::Error::from_raw_os_error(-code),
                        });
                    }
                    _ => each(body),
                }
                rest = &rest[align4(len).min(rest.len())..];
            }
        }
    }
}

const fn libc_enoent() -> i32 {
    2
}

impl ConntrackOps for Netlink {
    fn dump(&self, family: Family) -> Result<Vec<Entry>, ConntrackError> {
        let socket = Self::socket("dump", family)?;
        socket
            .send(&encode_dump(family, 1), 0)
            .map_err(io_error("dump", family))?;
        let mut entries = Vec::new();
        Self::receive(&socket, "dump", family, |body| {
            if let Some(e) = body.get(NFGENMSG_LEN..).and_then(parse_entry) {
                entries.push(e);
            }
        })?;
        Ok(entries)
    }

    fn delete(&self, family: Family, entry: &Entry) -> Result<(), ConntrackError> {
        let socket = Self::socket("delete", family)?;
        socket
            .send(&encode_delete(family, entry, 1), 0)
            .map_err(io_error("delete", family))?;
        Self::receive(&socket, "delete", family, |_| {})
    }
}
