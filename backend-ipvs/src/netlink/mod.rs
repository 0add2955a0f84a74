//! The IPVS generic-netlink interface (`include/uapi/linux/ip_vs.h`), written by hand.
//!
//! Why by hand: IPVS has no rust-netlink crate. `CleverCloud/nlrs` brings its own netlink
//! framing, and `netlink-packet-ipvs` panics on bad input and has no byte tests. So the
//! messages are built here on `netlink-packet-core` (attribute plumbing: [`Nla`], `Emitable`,
//! `Parseable`) and `netlink-packet-generic` (the `genlmsghdr` and the `nlctrl` family
//! lookup), and sent on the workspace's one netlink transport (`netlink-transport`), in the
//! style of rust-netlink's own crates:
//!
//! - `constants`: the header's numbers under the header's names (crate-private);
//! - [`kinds`]: address family, protocol, forwarding method, `nf_inet_addr`, `ip_vs_flags`;
//! - [`service`], [`dest`], [`stats`]: one enum per attribute set, unknown attributes kept in
//!   `Other(DefaultNla)`;
//! - [`message`]: [`IpvsMessage`] (command + top-level attributes, nested ones as `Vec`s);
//! - [`socket`]: the IPVS family on the transport: family lookup, requests, dumps, batches.
//!
//! Nothing here panics on bytes from the kernel: every length is checked before it is read.
//! Emitting follows `netlink-packet-core`'s contract: `emit` writes into a buffer of exactly
//! `buffer_len()` bytes and may panic on a shorter one.
//!
//! [`Nla`]: netlink_packet_core::Nla

pub(crate) mod constants;
pub mod dest;
pub mod kinds;
pub mod message;
pub mod service;
pub mod socket;
pub mod stats;

#[cfg(test)]
mod tests;

pub use dest::DestAttr;
pub use kinds::{AddressFamily, ForwardMethod, InetAddr, IpProtocol, ServiceFlags};
pub use message::{IpvsAttr, IpvsCmd, IpvsMessage};
pub use service::ServiceAttr;
pub use socket::IpvsSocket;
pub use stats::{Counter, StatsAttr};
