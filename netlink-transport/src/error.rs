//! [`NetlinkError`]: every way a request can fail, each naming the request it belongs to.

use std::{fmt, io, time::Duration};

use netlink_packet_core::DecodeError;

use crate::errno::Errno;

/// Which request an error belongs to: its place in a batch, its sequence number and what
/// the caller said it was ([`crate::Request::describe`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId {
    /// Its index in the batch (0 for a single request or dump).
    pub index: usize,
    /// The sequence number it was sent with.
    pub seq: u32,
    /// The caller's description, such as `IPVS_CMD_NEW_SERVICE` or `conntrack delete`.
    pub description: String,
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "netlink request {} ({}, seq {})",
            self.index, self.description, self.seq
        )
    }
}

/// A failed netlink request, socket call or reply.
///
/// Whether the request took effect: no for [`NetlinkError::Kernel`] (the kernel refused it)
/// and [`NetlinkError::Send`]; unknown for [`NetlinkError::AckLost`] and
/// [`NetlinkError::Timeout`] ([`NetlinkError::outcome_unknown`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetlinkError {
    /// Opening or setting up the socket failed.
    #[error("netlink socket: {op}")]
    Socket {
        /// The call: `socket`, `bind`, `connect`, `setsockopt(NETLINK_CAP_ACK)`...
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The request could not be sent.
    #[error("{request}: send failed")]
    Send {
        /// The request.
        request: RequestId,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Receiving its reply failed.
    #[error("{request}: receive failed")]
    Recv {
        /// The request.
        request: RequestId,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The kernel refused the request (or ended a dump) with an errno.
    #[error("{request}: the kernel answered {errno}")]
    Kernel {
        /// The request.
        request: RequestId,
        /// The kernel's errno.
        errno: Errno,
        /// The request as the kernel echoed it after the errno, when it did not cap the echo
        /// (ipset puts the failing entry's line number there); `None` otherwise.
        echo: Option<Box<[u8]>>,
    },
    /// The ACK never came: the kernel dropped it (`errno` is `ENOBUFS`, our receive buffer
    /// was full) or sent none. The request may or may not have been done.
    #[error("{request}: acknowledgement lost ({}): the request may or may not have been done", errno.map_or("none came".to_owned(), |e| e.to_string()))]
    AckLost {
        /// The request.
        request: RequestId,
        /// `ENOBUFS` when the kernel said it dropped replies.
        errno: Option<Errno>,
    },
    /// Replies of a dump were dropped (`ENOBUFS`, or `NLMSG_OVERRUN`): what came is incomplete.
    #[error("{request}: the kernel dropped part of the reply ({cause})")]
    Overrun {
        /// The request.
        request: RequestId,
        /// `NLMSG_OVERRUN` or `ENOBUFS`.
        cause: &'static str,
    },
    /// A reply did not parse: a malformed netlink header, error message, or payload.
    #[error("{request}: malformed reply")]
    Malformed {
        /// The request.
        request: RequestId,
        /// What was wrong.
        #[source]
        source: DecodeError,
    },
    /// A datagram was larger than our buffer; its rest is lost.
    #[error("{request}: reply datagram of {len} bytes truncated to {kept}")]
    Truncated {
        /// The request.
        request: RequestId,
        /// The datagram's length.
        len: usize,
        /// What we read of it.
        kept: usize,
    },
    /// No reply within the receive timeout. The request may or may not have been done.
    #[error("{request}: no reply within {timeout:?}")]
    Timeout {
        /// The request.
        request: RequestId,
        /// The receive timeout.
        timeout: Duration,
    },
}

impl NetlinkError {
    /// The request it belongs to, unless the socket itself failed.
    pub fn request(&self) -> Option<&RequestId> {
        match self {
            NetlinkError::Socket { .. } => None,
            NetlinkError::Send { request, .. }
            | NetlinkError::Recv { request, .. }
            | NetlinkError::Kernel { request, .. }
            | NetlinkError::AckLost { request, .. }
            | NetlinkError::Overrun { request, .. }
            | NetlinkError::Malformed { request, .. }
            | NetlinkError::Truncated { request, .. }
            | NetlinkError::Timeout { request, .. } => Some(request),
        }
    }

    /// The errno: the kernel's refusal, a failed socket call's, or `ENOBUFS` for a lost ACK.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            NetlinkError::Kernel { errno, .. } => Some(*errno),
            NetlinkError::AckLost { errno, .. } => *errno,
            NetlinkError::Socket { source, .. }
            | NetlinkError::Send { source, .. }
            | NetlinkError::Recv { source, .. } => Errno::of(source),
            NetlinkError::Timeout { .. } => Some(crate::errno::EAGAIN),
            _ => None,
        }
    }

    /// The kernel's refusal errno, and nothing else (not a socket call's).
    pub fn kernel_errno(&self) -> Option<Errno> {
        match self {
            NetlinkError::Kernel { errno, .. } => Some(*errno),
            _ => None,
        }
    }

    /// Whether the request may have been done although it reports failure (its ACK was lost,
    /// or none came in time).
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self,
            NetlinkError::AckLost { .. } | NetlinkError::Timeout { .. }
        )
    }

    /// An `io::Error` for callers whose own error keeps one as its source: the errno when
    /// there is one, else this error's text.
    pub fn to_io(&self) -> io::Error {
        match self.errno() {
            Some(errno) => errno.to_io(),
            None => io::Error::new(io::ErrorKind::InvalidData, self.to_string()),
        }
    }

    /// This error as an `io::Error`, for callers whose own error keeps one as its source: a
    /// socket call's own error; the kernel's errno (`ENOBUFS` for an ACK it dropped); else
    /// (a timeout, an overrun, a bad reply) this error itself, as the `io::Error`'s source.
    pub fn into_io(self) -> io::Error {
        match self {
            NetlinkError::Socket { source, .. }
            | NetlinkError::Send { source, .. }
            | NetlinkError::Recv { source, .. } => source,
            NetlinkError::Kernel { errno, .. }
            | NetlinkError::AckLost {
                errno: Some(errno), ..
            } => errno.to_io(),
            NetlinkError::Timeout { .. } => io::Error::new(io::ErrorKind::TimedOut, self),
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errno::{EEXIST, ENOBUFS};

    fn id() -> RequestId {
        RequestId {
            index: 2,
            seq: 7,
            description: "IPVS_CMD_NEW_SERVICE".to_owned(),
        }
    }

    #[test]
    fn errors_name_the_request_and_the_errno() {
        let e = NetlinkError::Kernel {
            request: id(),
            errno: EEXIST,
            echo: None,
        };
        assert_eq!(
            e.to_string(),
            "netlink request 2 (IPVS_CMD_NEW_SERVICE, seq 7): the kernel answered EEXIST (File exists)"
        );
        assert_eq!(e.errno(), Some(EEXIST));
        assert!(!e.outcome_unknown());
        let lost = NetlinkError::AckLost {
            request: id(),
            errno: Some(ENOBUFS),
        };
        assert!(lost.outcome_unknown());
        assert!(lost.to_string().contains("ENOBUFS"), "{lost}");
        assert_eq!(lost.to_io().raw_os_error(), Some(105));
    }
}
