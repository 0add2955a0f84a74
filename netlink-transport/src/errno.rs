//! Errno values, in one place: what the kernel puts (negated) in `NLMSG_ERROR` and
//! `NLMSG_DONE`, and what a socket call fails with. Names and numbers are Linux's
//! (`include/uapi/asm-generic/errno-base.h`, `errno.h`).

use std::fmt;
use std::io;

/// A positive errno, as the kernel's netlink answers carry it (negated on the wire).
///
/// Families may define their own codes above the system range (ipset's `IPSET_ERR_*` start at
/// 4097); those print as `errno 4097`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Errno(i32);

/// `EPERM`: the caller lacks `CAP_NET_ADMIN`.
pub const EPERM: Errno = Errno(1);
/// `ENOENT`: no such object (a conntrack entry, an ipset set).
pub const ENOENT: Errno = Errno(2);
/// `ESRCH`: no such object (IPVS services and real servers, routes).
pub const ESRCH: Errno = Errno(3);
/// `EINTR`: a dump changed while it ran and ended early.
pub const EINTR: Errno = Errno(4);
/// `EAGAIN`: no datagram within the receive timeout.
pub const EAGAIN: Errno = Errno(11);
/// `EBUSY`: another dump is still running on the socket.
pub const EBUSY: Errno = Errno(16);
/// `EEXIST`: the object exists already.
pub const EEXIST: Errno = Errno(17);
/// `ENODEV`: no such network device.
pub const ENODEV: Errno = Errno(19);
/// `EINVAL`: the kernel rejected the message's contents.
pub const EINVAL: Errno = Errno(22);
/// `EMSGSIZE`: a datagram larger than the socket's send buffer.
pub const EMSGSIZE: Errno = Errno(90);
/// `EPROTONOSUPPORT`: the netlink protocol is not available.
pub const EPROTONOSUPPORT: Errno = Errno(93);
/// `EOPNOTSUPP`: the family does not support the command.
pub const EOPNOTSUPP: Errno = Errno(95);
/// `EAFNOSUPPORT`: the address family is not supported.
pub const EAFNOSUPPORT: Errno = Errno(97);
/// `EADDRNOTAVAIL`: no such address on the interface.
pub const EADDRNOTAVAIL: Errno = Errno(99);
/// `ENOBUFS`: the kernel dropped replies because our receive buffer was full
/// (`netlink_overrun` in `net/netlink/af_netlink.c`).
pub const ENOBUFS: Errno = Errno(105);

const NAMES: [(Errno, &str); 16] = [
    (EPERM, "EPERM"),
    (ENOENT, "ENOENT"),
    (ESRCH, "ESRCH"),
    (EINTR, "EINTR"),
    (EAGAIN, "EAGAIN"),
    (EBUSY, "EBUSY"),
    (EEXIST, "EEXIST"),
    (ENODEV, "ENODEV"),
    (EINVAL, "EINVAL"),
    (EMSGSIZE, "EMSGSIZE"),
    (EPROTONOSUPPORT, "EPROTONOSUPPORT"),
    (EOPNOTSUPP, "EOPNOTSUPP"),
    (EAFNOSUPPORT, "EAFNOSUPPORT"),
    (EADDRNOTAVAIL, "EADDRNOTAVAIL"),
    (ENOBUFS, "ENOBUFS"),
    (Errno(12), "ENOMEM"),
];

impl Errno {
    /// The errno `code`, of either sign (the kernel sends them negative).
    pub const fn new(code: i32) -> Self {
        Errno(code.saturating_abs())
    }

    /// The errno of an `io::Error` from a system call, if it has one.
    pub fn of(error: &io::Error) -> Option<Self> {
        error.raw_os_error().map(Errno::new)
    }

    /// The positive number.
    pub const fn raw(self) -> i32 {
        self.0
    }

    /// Its symbolic name (`"EEXIST"`), for the ones this crate knows.
    pub fn name(self) -> Option<&'static str> {
        NAMES.iter().find(|(e, _)| *e == self).map(|(_, n)| *n)
    }

    /// The same errno as an `io::Error`, for callers that keep one as a `#[source]`.
    pub fn to_io(self) -> io::Error {
        io::Error::from_raw_os_error(self.0)
    }
}

impl fmt::Display for Errno {
    /// `EEXIST (File exists)`; an unknown code prints as `errno 4097`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => {
                // io::Error's text ends in " (os error N)": keep only the description.
                let text = self.to_io().to_string();
                let text = text.split(" (os error").next().unwrap_or_default();
                write!(f, "{name} ({text})")
            }
            None => write!(f, "errno {}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errnos_print_name_and_description() {
        assert_eq!(EEXIST.to_string(), "EEXIST (File exists)");
        assert_eq!(Errno::new(-105), ENOBUFS);
        assert_eq!(Errno::new(4097).to_string(), "errno 4097");
        assert_eq!(Errno::of(&io::Error::from_raw_os_error(2)), Some(ENOENT));
    }
}
