//! One blocking netlink transport for the workspace: IPVS (generic netlink), ipset and
//! conntrack (nfnetlink) and rtnetlink are message families on top of it. It owns no kernel
//! object; it only carries messages.
//!
//! - [`Connection`]: a socket ([`SysSocket`], on `netlink-sys`) and its sequence numbers.
//!   [`Connection::request`] sends one message and reads its replies up to the ACK or error;
//!   [`Connection::dump`] reads a multipart reply up to `NLMSG_DONE`; [`Connection::batch`]
//!   sends many requests per datagram, each with `NLM_F_ACK`, and returns a result per
//!   request. Replies are checked against the sequence number and our port, stale ones are
//!   skipped, and a receive timeout bounds every wait: a malformed or missing reply is an
//!   error, never a hang. [`Connection::transaction`] sends an nfnetlink transaction (`BATCH_BEGIN`,
//!   the messages, `BATCH_END`) as ONE datagram, never cut, since nfnetlink commits or aborts a
//!   batch per datagram (nf_tables).
//! - [`Request`]: what a message family implements to be sent ([`RawRequest`] for bytes
//!   already framed; `netlink-packet-core`'s `NetlinkMessage` implements it). Replies come back
//!   as [`Reply`] (type, flags, payload) for the family to parse.
//! - [`NetlinkError`]: one error type, naming the request ([`RequestId`]: index in the batch,
//!   sequence number, description) and carrying the errno ([`Errno`], with its name). A lost
//!   ACK ([`NetlinkError::AckLost`]) says the outcome is unknown, never success.
//! - Notifications ([`Connection::join_group`], [`Connection::recv_notifications`]): the
//!   kernel's change messages of multicast groups (rtnetlink's address changes...), kept in
//!   order while requests and dumps run; a queue overflow (`ENOBUFS`) is
//!   [`Notifications::Lost`]: dump again.
//! - [`errno`]: the errno constants, in one place.
//! - `fake::FakeKernel` (feature `testing`): an in-memory kernel behind the same
//!   [`Datagrams`] trait.
//!
//! ```
//! use netlink_transport::{fake::{ack, FakeKernel}, Connection, RawRequest};
//!
//! // A kernel that refuses the second request with EEXIST.
//! let kernel = FakeKernel::new(|m| vec![ack(m.seq, if m.message_type == 21 { 17 } else { 0 })]);
//! let mut conn = Connection::new(kernel.clone());
//! let requests: Vec<RawRequest> = (20u16..23)
//!     .map(|ty| RawRequest {
//!         bytes: netlink_transport::fake::nlmsg(ty, 0, 0, &[]),
//!         description: format!("type {ty}"),
//!     })
//!     .collect();
//! let results = conn.batch(&requests);
//! assert!(results[0].is_ok() && results[2].is_ok());
//! let refused = results[1].as_ref().expect_err("refused");
//! assert_eq!(refused.kernel_errno(), Some(netlink_transport::errno::EEXIST));
//! assert_eq!(kernel.sends(), 1, "one datagram for the three");
//! ```
#![forbid(unsafe_code)]

mod batch;
mod connection;
pub mod errno;
mod error;
#[cfg(any(test, feature = "testing"))]
pub mod fake;
mod message;
mod notify;
mod socket;
#[cfg(test)]
mod tests;
mod transaction;

pub use batch::{BatchLimits, ACK_CHARGE, BATCH_BYTES};
pub use connection::Connection;
pub use errno::Errno;
pub use error::{NetlinkError, RequestId};
pub use message::{messages, RawRequest, Reply, Request};
pub use notify::Notifications;
pub use socket::{Datagrams, Protocol, SocketOptions, SysSocket};
pub use transaction::{Acks, TransactionOutcome};
