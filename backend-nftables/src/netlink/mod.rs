//! The nf_tables netlink interface (`NFNL_SUBSYS_NFTABLES`,
//! `include/uapi/linux/netfilter/nf_tables.h`), written by hand.
//!
//! Why by hand: no Rust crate covers what a service proxy needs. `netlink-packet-netfilter`
//! has no `nat`, `numgen`, `ct` or `counter`; `nftnl` binds the C libnftnl and has no
//! `numgen` nor map data; `rustables` is GPL; `nftables` runs the `nft` binary. So the
//! messages are built here on `netlink-packet-core` (attribute plumbing: `Nla`, `Emitable`,
//! `Parseable`) and sent on the workspace's one netlink transport (`netlink-transport`), in
//! the style of rust-netlink's crates and of `backend-ipvs/src/netlink/`:
//!
//! - `constants`: the headers' numbers under the headers' names (crate-private);
//! - [`attr`]: how a value is written ([`attr::NlaValue`]: integers big-endian, as nf_tables
//!   reads them), and the macro that makes each attribute enum;
//! - [`table`], [`chain`], [`rule`], [`set`], [`set_elem`], [`data`]: one enum per
//!   attribute set, unknown attributes kept in `Other(DefaultNla)`;
//! - [`expr`]: [`Expr`], the rule expressions (payload, meta, cmp, bitwise, lookup,
//!   immediate, nat, masq, numgen, ct, counter, reject, dynset, fib, range), with
//!   constructors in libnftnl's attribute order;
//! - [`message`]: [`NftMessage`] (type, flags, `struct nfgenmsg`, the object);
//! - [`socket`]: [`NftSocket`], transactions (BEGIN … END in one datagram, a result per
//!   message; with or without an ACK per message), dumps of one table (tables, chains,
//!   sets, elements of a set, rules) and the ruleset generation.
//!
//! Limits a planner must respect: an attribute holds at most 64 KiB (`nla_len` is 16 bits;
//! [`NftMessage::set_elements`] splits element lists below it), a transaction must fit the
//! socket's send buffer ([`NftSocket::open_with`]), and an error names its message, not
//! one element inside it (nf_tables reports that only in an extended ACK).
//!
//! Every message kind and expression is byte-tested against what `nft` 1.0.6 sends for the
//! same ruleset, and dump replies of a 6.18 kernel are parsed back
//! (`tests/netlink_*.rs`, `tests/captures/`).
//!
//! Nothing here panics on bytes from the kernel: every length is checked before it is read.
//! Emitting follows `netlink-packet-core`'s contract: `emit` writes into a buffer of exactly
//! `buffer_len()` bytes and may panic on a shorter one.
//!
//! A trap in dumps: the kernel nests with `nla_nest_start_noflag`, so nested attributes it
//! sends lack `NLA_F_NESTED`, which we (like libmnl) set. Parsing ignores the bit.

pub mod attr;
pub mod chain;
pub(crate) mod constants;
pub mod data;
pub mod expr;
pub mod message;
pub mod rule;
pub mod set;
pub mod set_elem;
pub mod socket;
pub mod table;

pub use attr::ListElem;
pub use chain::{ChainAttr, Hook, HookAttr};
pub use data::{DataAttr, Verdict, VerdictAttr};
pub use expr::Expr;
pub use message::{GenAttr, MsgType, NftMessage, NftObject, ProtoFamily, MAX_ATTRIBUTE_BYTES};
pub use rule::RuleAttr;
pub use set::{SetAttr, SetDescAttr, SetFieldAttr, SetFlags};
pub use set_elem::{SetElemAttr, SetElemListAttr};
pub use socket::{committed, NftSocket};
pub use table::TableAttr;
