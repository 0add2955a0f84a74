//! Errors of the IPVS backend.

use std::{fmt, io, net::SocketAddr};

use netlink_packet_core::DecodeError;

use crate::{
    model::{ModelError, ServiceKey},
    netlink::IpvsCmd,
};

/// errno values the kernel answers IPVS requests with (`net/netfilter/ipvs/ip_vs_ctl.c`), as
/// raw numbers, from the one errno table of the workspace (`netlink_transport::errno`).
pub(crate) mod errno {
    use netlink_transport::errno as table;
    /// `ENOENT`: no such destination (or the IPVS family is missing).
    pub const ENOENT: i32 = table::ENOENT.raw();
    /// `ESRCH`: no such service.
    pub const ESRCH: i32 = table::ESRCH.raw();
    /// `EEXIST`: the service or destination already exists.
    pub const EEXIST: i32 = table::EEXIST.raw();
}

/// An IPVS operation, as named in errors and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IpvsOp {
    /// Opening the socket and resolving the `IPVS` family.
    Connect,
    /// `IPVS_CMD_GET_INFO`.
    GetInfo,
    /// `IPVS_CMD_NEW_SERVICE`.
    AddVirtualServer,
    /// `IPVS_CMD_SET_SERVICE`.
    UpdateVirtualServer,
    /// `IPVS_CMD_DEL_SERVICE`.
    DeleteVirtualServer,
    /// `IPVS_CMD_GET_SERVICE` with `NLM_F_DUMP`.
    GetVirtualServers,
    /// `IPVS_CMD_GET_SERVICE` of one service.
    GetVirtualServer,
    /// `IPVS_CMD_NEW_DEST`.
    AddRealServer,
    /// `IPVS_CMD_SET_DEST`.
    UpdateRealServer,
    /// `IPVS_CMD_DEL_DEST`.
    DeleteRealServer,
    /// `IPVS_CMD_GET_DEST`.
    GetRealServers,
    /// `IPVS_CMD_GET_CONFIG`.
    GetTimeouts,
    /// `IPVS_CMD_SET_CONFIG`.
    SetTimeouts,
    /// `IPVS_CMD_FLUSH`.
    Flush,
}

impl fmt::Display for IpvsOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IpvsOp::Connect => "connect to IPVS",
            IpvsOp::GetInfo => "get IPVS info",
            IpvsOp::AddVirtualServer => "add virtual server",
            IpvsOp::UpdateVirtualServer => "update virtual server",
            IpvsOp::DeleteVirtualServer => "delete virtual server",
            IpvsOp::GetVirtualServers => "get virtual servers",
            IpvsOp::GetVirtualServer => "get virtual server",
            IpvsOp::AddRealServer => "add real server",
            IpvsOp::UpdateRealServer => "update real server",
            IpvsOp::DeleteRealServer => "delete real server",
            IpvsOp::GetRealServers => "get real servers",
            IpvsOp::GetTimeouts => "get IPVS timeouts",
            IpvsOp::SetTimeouts => "set IPVS timeouts",
            IpvsOp::Flush => "flush IPVS",
        })
    }
}

/// The kernel object an operation was about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IpvsTarget {
    /// The whole IPVS table or configuration.
    Global,
    /// One virtual server.
    Service(ServiceKey),
    /// One real server of a virtual server.
    Dest(ServiceKey, SocketAddr),
}

impl fmt::Display for IpvsTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpvsTarget::Global => f.write_str("(all)"),
            IpvsTarget::Service(key) => write!(f, "{key}"),
            IpvsTarget::Dest(key, rs) => write!(f, "{key} -> {rs}"),
        }
    }
}

/// An error of the IPVS backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IpvsError {
    /// The kernel has no `IPVS` generic-netlink family (module `ip_vs` not loaded or not built).
    #[error("IPVS is not available in this kernel (generic netlink family \"IPVS\" not found)")]
    Unavailable {
        /// The errno of the family lookup.
        #[source]
        source: io::Error,
    },
    /// The kernel refused a request; `source` carries the errno.
    #[error("{op} {target}: rejected by the kernel")]
    Kernel {
        /// What we asked for.
        op: IpvsOp,
        /// What we asked it about.
        target: IpvsTarget,
        /// The errno (`io::Error::raw_os_error`).
        #[source]
        source: io::Error,
    },
    /// The netlink socket itself failed.
    #[error("{op} {target}: netlink socket")]
    Socket {
        /// What we asked for.
        op: IpvsOp,
        /// What we asked it about.
        target: IpvsTarget,
        /// The socket error.
        #[source]
        source: io::Error,
    },
    /// A kernel message did not decode.
    #[error("decoding IPVS {cmd:?} message")]
    Decode {
        /// The command of the request the reply answered.
        cmd: IpvsCmd,
        /// What was wrong with it.
        #[source]
        source: DecodeError,
    },
    /// A kernel object does not fit our model (or ours cannot be expressed to the kernel).
    #[error("{op}: unusable IPVS object")]
    Model {
        /// The operation that met it.
        op: IpvsOp,
        /// What was wrong with it.
        #[source]
        source: ModelError,
    },
}

impl IpvsError {
    /// The kernel's errno, for [`IpvsError::Kernel`] and [`IpvsError::Unavailable`].
    pub fn errno(&self) -> Option<i32> {
        match self {
            IpvsError::Kernel { source, .. } | IpvsError::Unavailable { source } => {
                source.raw_os_error()
            }
            _ => None,
        }
    }

    /// The service or destination already exists (`EEXIST`).
    pub fn is_exists(&self) -> bool {
        self.errno() == Some(errno::EEXIST)
    }

    /// The service (`ESRCH`) or destination (`ENOENT`) does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, IpvsError::Kernel { .. })
            && matches!(self.errno(), Some(errno::ESRCH | errno::ENOENT))
    }
}

/// An error of the IPVS dataplane above the IPVS table: configuration, the dummy interface and
/// its addresses, the companion ipsets and iptables rules.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// A configuration field is out of range.
    #[error("config.{field}: {reason}")]
    Config {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// An IPVS operation failed.
    #[error(transparent)]
    Ipvs(#[from] IpvsError),
    /// An rtnetlink request about our dummy interface failed.
    #[error("{op} {object}: rtnetlink")]
    Link {
        /// What we asked for (`create link`, `add address`...).
        op: &'static str,
        /// The interface or address.
        object: String,
        /// The errno or socket error.
        #[source]
        source: io::Error,
    },
    /// Writing or reading the companion ipsets failed.
    #[error(transparent)]
    Ipset(#[from] crate::ipset::IpsetError),
    /// A companion tool (`iptables-restore`, `iptables`) failed.
    #[error("{command}: {status}: {stderr}{}", context_lines(input_context))]
    Command {
        /// The program and arguments.
        command: String,
        /// The exit status, or how it failed to start.
        status: String,
        /// Its standard error, trimmed.
        stderr: String,
        /// Our input lines around the failing one, if it named a line.
        input_context: Vec<String>,
    },
    /// A sync, cleanup or observation ran on a thread of another network namespace than the
    /// one the dataplane's sockets were opened in (at its first sync): its commands and sysctls
    /// would act on one namespace and its sockets on the other.
    #[error(
        "this thread is in network namespace {current}, but the dataplane programs {opened} \
         (where its first sync ran): sync and clean up from threads in that namespace"
    )]
    Namespace {
        /// Where the sockets were opened (`net:[4026531840]`).
        opened: String,
        /// Where this thread is.
        current: String,
    },
    /// Another instance owns our prefix or our interface in this network namespace (its pid
    /// and command line are in the message), or the lock could not be taken
    /// ([`proxy_core::lock`]).
    #[error(transparent)]
    Lock(#[from] proxy_core::lock::LockError),
    /// A blocking task was cancelled or panicked.
    #[error("blocking task: {0}")]
    Task(String),
}

fn context_lines(lines: &[String]) -> String {
    if lines.is_empty() {
        String::new()
    } else {
        format!("\n  input:\n    {}", lines.join("\n    "))
    }
}
