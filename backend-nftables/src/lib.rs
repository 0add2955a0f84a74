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
//! - [`apply`]: a plan as one nf_tables transaction ([`apply::encode`]: our objects as the
//!   messages `nft` sends for the same text), errors mapped back to the change and service
//!   port; [`observe`]: our table read back over netlink dumps into the model;
//! - [`dataplane`]: [`NftablesDataplane`], the [`proxy_core::Dataplane`] (full sync = observe,
//!   plan, apply; partial = plan from the change set; cleanup deletes our table only), with
//!   stale UDP conntrack cleanup ([`conntrack`]);
//! - [`config`], [`names`] and [`error`]: the configuration, the names of our chains and sets,
//!   and the errors.
#![forbid(unsafe_code)]

pub use config::NftablesConfig;
pub use dataplane::NftablesDataplane;
pub use error::NftablesError;

pub mod apply;
pub mod config;
pub mod conntrack;
pub mod dataplane;
pub mod error;
pub mod model;
pub mod names;
pub mod netlink;
pub mod observe;
pub mod plan;
pub mod render;
