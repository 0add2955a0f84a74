//! [`NftablesError`]: what failed in the nftables dataplane, with its context.

use netlink_transport::NetlinkError;

use crate::apply::ApplyError;

impl From<ApplyError> for NftablesError {
    fn from(e: ApplyError) -> Self {
        NftablesError::Apply(Box::new(e))
    }
}

/// An nftables dataplane failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NftablesError {
    /// The `NETLINK_NETFILTER` socket could not be opened.
    #[error("open the nf_tables netlink socket")]
    Socket(#[source] Box<NetlinkError>),
    /// Reading our table back (a dump) failed.
    #[error("read table inet {table} back")]
    Observe {
        /// Our table.
        table: String,
        /// The dump that failed.
        #[source]
        source: Box<NetlinkError>,
    },
    /// A transaction failed: nothing of it was committed.
    #[error(transparent)]
    Apply(Box<ApplyError>),
    /// Another instance owns our table in this network namespace (its pid and command line are
    /// in the message), or the lock could not be taken ([`proxy_core::lock`]).
    #[error(transparent)]
    Lock(#[from] proxy_core::lock::LockError),
}
