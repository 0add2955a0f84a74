//! backend-nftables: nf_tables as a [`proxy_core::Dataplane`], programmed over netlink in pure
//! Rust (no `nft` process, no C library, no `unsafe`).
//!
//! The layout has O(1) kernel objects per service: one `inet` table of ours, base chains at
//! kube-proxy's hooks and priorities, global verdict maps for dispatch (`daddr . l4proto .
//! dport` for cluster, external and load-balancer IPs; `l4proto . dport` for node ports), one
//! shared balancing chain per distinct endpoint count `k` (`service-k`: `numgen random mod k`),
//! and one global endpoints map keyed by `vip . proto . port . slot`. A service port costs one
//! dispatch element per address plus `k` endpoint elements, so a sync's cost follows the
//! change, not the table. The layout, and why each rule sits where it does, is in [`plan`] and
//! in the crate's design note (`README.md`).
//!
//! **What it owns** (and `Dataplane::cleanup` removes): the table
//! [`NftablesConfig::table`] (`inet svcproxy` by default), with everything in it: its 15 fixed
//! chains, the shared chains of the endpoint counts and affinity timeouts in use, and its sets
//! and maps ([`names`]). Cleanup deletes that table in one transaction, and nothing else: the
//! tables of others (kube-proxy's `kube-proxy`, firewalld's `firewalld`) are never touched; a
//! chain or set of a name we do not know inside our table is left alone until cleanup deletes
//! it with the table. Stale UDP conntrack entries are deleted after each successful sync
//! ([`conntrack`]); conntrack state is the kernel's, not ours, and cleanup leaves it.
//!
//! **Syncs.** A full sync (the first, the periodic one, any after a failure) plans the desired
//! table, reads ours back over netlink dumps ([`observe`]) and sends only the difference in one
//! transaction, so a restart with the rules in place sends nothing. A partial sync plans from
//! the loop's change set against what we last applied, without reading the kernel: element adds
//! and deletes, plus a chain when a new endpoint count appears. `Dataplane::check_drift` reads
//! the ruleset generation and, when it moved, counts our chains and sets. Details in
//! [`dataplane`].
//!
//! # Modules: model → plan (pure) → apply → observe
//!
//! | step | module | what |
//! |---|---|---|
//! | model | [`model`] | our table as data: [`model::Table`], [`model::Chain`], [`model::Set`], typed [`model::Rule`]s, element [`model::Key`]s and [`model::Value`]s |
//! | | [`names`] | [`names::ChainName`], [`names::SetName`] (their declarations: [`names::SetName::spec`]), [`names::is_owned`] |
//! | plan | [`plan`] | pure: [`plan::desired()`] (the skeleton of [`plan::layout`] plus each port's elements, endpoints through `proxy_core::select`), [`plan::plan()`] (full or partial diff as ordered [`plan::Change`]s), [`plan::apply_changes`] (the same in memory) |
//! | | [`render`] | [`render::render_table`]: the table as `nft list table inet <name>` prints it (dry runs, goldens); [`plan::render_changes`]: a plan as an `nft -f` script |
//! | apply | [`apply`] | [`apply::apply`]: a plan as one nf_tables transaction ([`apply::encode`]: our objects as the messages `nft` sends for the same text); kernel errors named by change and service port ([`apply::ApplyError`]); affinity purges after the commit |
//! | | [`netlink`] | the nf_tables messages, hand-written on `netlink-packet-core`, and [`netlink::NftSocket`] (transactions, dumps, generation) on `netlink-transport` |
//! | observe | [`observe`] | [`observe::observe`]: our table read back over dumps into the model; rules recognised by their expressions, anything else [`model::Rule::Foreign`]; sets or base chains declared otherwise force a rebuild |
//! | | [`dataplane`] | [`NftablesDataplane`], the [`proxy_core::Dataplane`]: full and partial syncs, drift check, cleanup, dry run |
//! | | [`conntrack`] | stale UDP entries after a sync, over the shared ctnetlink client (`nf-conntrack`) |
//! | | [`metrics`] | [`metrics::Metrics`]: kube-proxy's nftables series and ours |
//! | | [`config`], [`error`] | [`NftablesConfig`] (serde, `Default`); [`NftablesError`] |
//!
//! # Embedding
//!
//! [`NftablesDataplane::new`] does no I/O: the netlink socket is opened at the first sync or
//! cleanup, in the network namespace of the thread that runs it. A dry run needs neither root
//! nor nf_tables; it renders the table a full sync would program, as `nft list table` prints
//! it:
//!
//! ```
//! use backend_nftables::{NftablesConfig, NftablesDataplane};
//! use proxy_core::table::*;
//! use proxy_core::Dataplane;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dp = NftablesDataplane::new(NftablesConfig::default());
//!
//! let web = ServicePort::new(ServicePortName::new("default", "web", "http"), Protocol::Tcp, 80)
//!     .with_cluster_ip("198.19.0.10".parse()?)
//!     .with_endpoint(Endpoint::new("198.18.1.10".parse()?, 8080));
//! let table = ServiceTable::builder().insert(web).build()?;
//! // What a full sync would program; no privileges, no I/O.
//! let plan = dp.dry_run(&table)?;
//! assert!(plan.rendered.starts_with("table inet svcproxy {\n"));
//! // One dispatch element, to the shared chain of one endpoint...
//! assert!(plan.rendered.contains("elements = { 198.19.0.10 . tcp . 80 : goto service-1 }"));
//! // ...and one slot in the global endpoints map.
//! assert!(plan.rendered.contains("elements = { 198.19.0.10 . tcp . 80 . 0 : 198.18.1.10 . 8080 }"));
//! assert!(plan.problems.is_empty());
//! # Ok(())
//! # }
//! ```
//!
//! **Metrics**: `Dataplane::register_metrics` with the embedder's root registry registers
//! [`metrics::Metrics`]: kube-proxy's nftables series (`kubeproxy_sync_proxy_rules_nftables_
//! {sync,cleanup}_failures_total`, full and partial sync durations) and ours
//! (`svcproxy_nftables_*`: elements and objects written, transactions and their bytes).
//!
//! **Node addresses** (which addresses serve node ports with
//! [`NftablesConfig::node_port_addresses`], and whether a load-balancer source range holding
//! one admits the load-balancer IP itself): [`NftablesConfig::node_addresses`], or, when it is
//! empty, the node's own, followed through rtnetlink from the first sync on
//! ([`proxy_core::node_addresses::NodeAddresses::kernel`]; another source with
//! [`NftablesDataplane::with_node_addresses`]). `Dataplane::node_addresses` hands the source to
//! the sync loop, whose partial sync on a change rewrites only the elements that depend on the
//! addresses ([`plan::DesiredTable::readdress`]). Without `node_port_addresses`, node ports
//! follow `fib daddr type local` and need no address.
//!
//! The known limits (a transaction bounded by what the socket's send buffer can grow to; `nft`
//! 1.0.6 cannot load back a table with IPv6 affinity, which it lists; node-port affinity only
//! on the node addresses the address source knows) are in the design note.
#![forbid(unsafe_code)]

pub use config::NftablesConfig;
pub use dataplane::NftablesDataplane;
pub use error::NftablesError;

pub mod apply;
pub mod config;
pub mod conntrack;
pub mod dataplane;
pub mod error;
pub mod metrics;
pub mod model;
pub mod names;
pub mod netlink;
pub mod observe;
pub mod plan;
pub mod render;
