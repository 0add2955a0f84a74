//! Errors of the ipset client, naming the set and entry, with the kernel's errno explained.

use std::fmt;
use std::io;

use netlink_packet_core::DecodeError;

use super::constants::*;
use super::message::IpsetCmd;

/// `ENOENT`: the set does not exist.
pub const ENOENT: i32 = netlink_transport::errno::ENOENT.raw();
/// `EEXIST`: a set of that name exists, and differs.
pub const EEXIST: i32 = netlink_transport::errno::EEXIST.raw();
/// `EPERM`: not allowed (needs `CAP_NET_ADMIN` in the namespace's user namespace).
pub const EPERM: i32 = netlink_transport::errno::EPERM.raw();

/// What an errno means for ipset, for the system codes the kernel uses there and every
/// `IPSET_ERR_*` (`include/uapi/linux/netfilter/ipset/ip_set.h`, `ip_set_hash.h`).
pub fn describe(errno: i32) -> &'static str {
    match errno {
        EPERM => "operation not permitted (needs CAP_NET_ADMIN)",
        ENOENT => "the set does not exist",
        12 => "out of memory",
        // ip_set_create(): a set of that name exists and is not the same (`-exist` only
        // forgives an identical one).
        EEXIST => "a set of that name exists with another type or parameters",
        // Also what an address of the other family gets: `ip_set_get_ipaddr4()` finds no
        // IPSET_ATTR_IPADDR_IPV4 in the nest.
        IPSET_ERR_PROTOCOL => {
            "the kernel rejected the request as malformed (ipset protocol error; \
             an address of the wrong family, or a field the set type lacks)"
        }
        IPSET_ERR_FIND_TYPE => "the kernel has no such set type, family or revision",
        IPSET_ERR_MAX_SETS => "the kernel's maximum number of sets is reached",
        IPSET_ERR_BUSY => "the set is in use by a kernel component",
        IPSET_ERR_EXIST_SETNAME2 => {
            "the second set is wrong (missing for a swap, already taken for a rename)"
        }
        IPSET_ERR_TYPE_MISMATCH => "the sets differ in type or family",
        IPSET_ERR_EXIST => "the element already exists",
        IPSET_ERR_INVALID_CIDR => "invalid prefix length",
        IPSET_ERR_INVALID_NETMASK => "invalid netmask",
        IPSET_ERR_INVALID_FAMILY => "the family does not match the set's",
        IPSET_ERR_TIMEOUT => "the set has no timeout support",
        IPSET_ERR_REFERENCED => "the set is referenced (by an iptables rule or a list set)",
        IPSET_ERR_IPADDR_IPV4 => "an IPv4 address was expected (the set is family inet)",
        IPSET_ERR_IPADDR_IPV6 => "an IPv6 address was expected (the set is family inet6)",
        IPSET_ERR_COUNTER => "the set has no counter support",
        IPSET_ERR_COMMENT => "the set has no comment support",
        IPSET_ERR_INVALID_MARKMASK => "invalid markmask",
        IPSET_ERR_SKBINFO => "the set has no skbinfo support",
        IPSET_ERR_HASH_FULL => "the set is full (maxelem)",
        IPSET_ERR_HASH_ELEM => "null-valued element",
        IPSET_ERR_INVALID_PROTO => "invalid protocol",
        IPSET_ERR_MISSING_PROTO => "protocol missing but must be specified",
        IPSET_ERR_HASH_RANGE_UNSUPPORTED => "ranges are not supported",
        IPSET_ERR_HASH_RANGE => "invalid range",
        _ => "kernel error",
    }
}

impl fmt::Display for IpsetCmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IpsetCmd::Protocol => "ipset protocol",
            IpsetCmd::Create => "create",
            IpsetCmd::Destroy => "destroy",
            IpsetCmd::Flush => "flush",
            IpsetCmd::Rename => "rename",
            IpsetCmd::Swap => "swap",
            IpsetCmd::List => "list",
            IpsetCmd::Save => "save",
            IpsetCmd::Add => "add",
            IpsetCmd::Del => "del",
            IpsetCmd::Test => "test",
            IpsetCmd::Header => "header",
            IpsetCmd::Type => "type",
            IpsetCmd::Other(_) => "ipset command",
        })
    }
}

/// An error of the ipset client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IpsetError {
    /// No ipset here: the socket did not open, or the kernel does not answer the protocol query
    /// (module `ip_set` missing), or it speaks a protocol older than 6.
    #[error("ipset is not available in this kernel: {reason}")]
    Unavailable {
        /// What failed.
        reason: String,
        /// The socket or kernel error.
        #[source]
        source: Option<io::Error>,
    },
    /// The kernel refused a request.
    #[error(
        "{cmd} {set}{}: {} (errno {errno})",
        entry.as_ref().map(|e| format!(" entry {e}")).unwrap_or_default(),
        describe(*errno)
    )]
    Kernel {
        /// The command.
        cmd: IpsetCmd,
        /// The set (for swap and rename, `"A -> B"`).
        set: String,
        /// The entry that failed, for add and del (in `ipset` syntax).
        entry: Option<String>,
        /// The errno: a system one, or `IPSET_ERR_*` (4097 and up).
        errno: i32,
    },
    /// The netlink socket itself failed.
    #[error("{cmd} {set}: netlink socket")]
    Socket {
        /// The command.
        cmd: IpsetCmd,
        /// The set, or `(all)`.
        set: String,
        /// The socket error.
        #[source]
        source: io::Error,
    },
    /// A kernel message did not decode.
    #[error("decoding the reply to ipset {cmd}")]
    Decode {
        /// The command of the request the reply answered.
        cmd: IpsetCmd,
        /// What was wrong with it.
        #[source]
        source: DecodeError,
    },
    /// A listed entry does not fit the set's type, or a request cannot be expressed.
    #[error("set {set}: {reason}")]
    Invalid {
        /// The set.
        set: String,
        /// What is wrong.
        reason: String,
    },
}

impl IpsetError {
    /// The kernel's errno, for [`IpsetError::Kernel`].
    pub fn errno(&self) -> Option<i32> {
        match self {
            IpsetError::Kernel { errno, .. } => Some(*errno),
            _ => None,
        }
    }

    /// The set does not exist (`ENOENT`).
    pub fn is_not_found(&self) -> bool {
        self.errno() == Some(ENOENT)
    }
}
