//! The kernel's ipsets over nfnetlink, written by hand: model → messages → socket, as
//! [`crate::netlink`] does for IPVS.
//!
//! Why by hand: the Rust `ipset` crates wrap `libipset` through FFI (a C library to link and
//! `unsafe` to call), and rust-netlink has no ipset crate. Why at all: the companions used to
//! run `ipset restore`, and under the test VM's emulation that process start alone cost about
//! 100 ms per sync, ten times the IPVS netlink work. Here a partial sync is one `sendmsg` of
//! add/del messages and the reads of their ACKs.
//!
//! The protocol (`include/uapi/linux/netfilter/ipset/ip_set.h`, kernel side in
//! `net/netfilter/ipset/ip_set_core.c`): netlink messages of subsystem `NFNL_SUBSYS_IPSET` on
//! a `NETLINK_NETFILTER` socket, `nlmsg_type = 6 << 8 | IPSET_CMD_*`, an `nfgenmsg` header, then
//! attributes; every request carries `IPSET_ATTR_PROTOCOL` (6 or 7, agreed at connect).
//!
//! - `constants`: the header's numbers under the header's names (crate-private);
//! - [`attr`]: [`DataAttr`], the attributes inside `IPSET_ATTR_DATA` (entry fields, set
//!   parameters);
//! - [`message`]: [`IpsetMessage`] (command, `nfgenmsg`, [`IpsetAttr`]s);
//! - [`model`]: [`SetSpec`], [`SetEntry`], [`SetListing`]: what callers use;
//! - [`ops`]: [`IpsetOps`] (the interface) and [`IpsetOp`] (one step of a batch);
//! - `socket`: batched requests with per-message ACKs, and dumps;
//! - [`client`]: [`NetlinkIpset`]; [`error`]: [`IpsetError`]; `fake` (feature `testing`):
//!   `FakeIpset`.
//!
//! `-exist` is no attribute: the kernel treats a request *without* `NLM_F_EXCL` as `-exist`
//! (`flag_exist()`), so our creates, adds and dels are idempotent by leaving the flag out.
//!
//! Nothing here panics on bytes from the kernel: every length is checked before it is read.
//! Emitting follows `netlink-packet-core`'s contract: `emit` writes into a buffer of exactly
//! `buffer_len()` bytes and may panic on a shorter one.

pub mod attr;
pub mod client;
pub(crate) mod constants;
pub mod error;
#[cfg(any(test, feature = "testing"))]
pub mod fake;
pub mod message;
pub mod model;
pub mod ops;
pub(crate) mod socket;

#[cfg(test)]
mod tests;

pub use attr::DataAttr;
pub use client::NetlinkIpset;
pub use error::IpsetError;
#[cfg(any(test, feature = "testing"))]
pub use fake::FakeIpset;
pub use message::{IpsetAttr, IpsetCmd, IpsetMessage};
pub use model::{Family, SetEntry, SetListing, SetSpec, SetType};
pub use ops::{IpsetOp, IpsetOps};
