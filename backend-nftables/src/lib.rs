//! backend-nftables: nf_tables as a [`proxy_core::Dataplane`], programmed over netlink.
//!
//! The layout has O(1) kernel objects per service: one table of ours, base chains at
//! kube-proxy's hooks and priorities, global verdict maps for dispatch (`daddr . l4proto .
//! dport`), one shared balancing chain per distinct endpoint count `k`, and one global
//! endpoints map keyed by `vip . port . slot`. A service costs one dispatch element plus `k`
//! endpoint elements, so a sync's cost follows the change, not the table.
//!
//! The module list is the inner shape, **model → plan (pure) → apply → observe**:
//!
//! - [`netlink`]: the nf_tables messages (tables, chains, rules and their expressions, sets,
//!   maps and elements, batches), hand-written on `netlink-packet-core` (no crate covers
//!   numgen, nat and map data; see the module docs), carried by `netlink-transport`;
//! - [`model`]: the objects of our table, what plans and observations are made of;
//! - [`plan`]: the desired table for a [`proxy_core::ServiceTable`] and the difference from
//!   what the kernel holds, pure (the layout and each design choice are in its docs);
//! - [`render`]: the table in `nft` syntax, as `nft list table` prints it, for dry runs and
//!   golden tests;
//! - [`config`] and [`names`]: the configuration, and the names of our chains and sets.
#![forbid(unsafe_code)]

pub mod config;
pub mod model;
pub mod names;
pub mod netlink;
pub mod plan;
pub mod render;
