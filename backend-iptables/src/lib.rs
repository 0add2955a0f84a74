//! `backend-iptables`: kube-proxy's iptables semantics, planned as typed rules and written with
//! `iptables-restore --noflush`, with a layout whose chain count does not grow with endpoints and
//! whose dispatch walk grows with log N (see `README.md` beside this crate for the design note).
//!
//! It owns, in the `nat` and `filter` tables of each address family the service table uses, every
//! chain whose name [`names::Names::is_owned`] accepts (prefix `SVCP-` by default) and the jumps
//! to them from the built-in chains ([`plan::Planner::hooks`]), written together: one
//! `iptables-save` and one `iptables-restore --noflush` per family and full sync, the missing
//! jumps as lines of that restore ([`hooks::BuiltinEdits`]). A family the table does not use is
//! not touched (once what an earlier run left there is removed). [`cleanup::cleanup`] removes
//! exactly what it owns, in both families (`Dataplane::cleanup`). It also deletes stale UDP
//! conntrack entries ([`conntrack`]) but creates none. From its first sync or cleanup until it is
//! dropped, a dataplane holds a lock file under `/run/svcproxy` ([`proxy_core::lock`]) keyed by
//! network namespace and prefix: a second instance that would own the same chains is refused by
//! name instead of deleting ours at each full sync. Between syncs, its drift check (a save and a
//! [`observe::Fingerprint`] of what it owns, within a CPU budget; [`hooks::find_drift`] between)
//! lets the sync loop repair a flushed table, a deleted chain or a rule edited inside our chains
//! within seconds.
//!
//! Shape: **model** ([`rules`]) → **plan** ([`plan`], pure) → **apply** ([`apply`], [`hooks`]) →
//! **observe** ([`observe`]); [`dataplane::IptablesDataplane`] ties them into a
//! [`proxy_core::Dataplane`].
//!
//! One way to build it, as every backend: a config, `new` (no I/O: legacy or nft is detected at
//! the first sync), then the metrics in the embedder's root registry (kube-proxy's names, under
//! `kubeproxy_`; only the first `register_metrics` call registers). [`IptablesConfig::netns`] puts everything it runs in a named network namespace.
//! `dry_run` shows what a sync would program, without root or iptables:
//!
//! ```
//! use backend_iptables::{IptablesConfig, IptablesDataplane};
//! use proxy_core::prometheus_client::registry::Registry;
//! use proxy_core::table::*;
//! use proxy_core::Dataplane;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut registry = Registry::default();
//! let mut dp = IptablesDataplane::new(IptablesConfig::default())?;
//! dp.register_metrics(&mut registry);
//!
//! let web = ServicePort::new(ServicePortName::new("default", "web", "http"), Protocol::Tcp, 80)
//!     .with_cluster_ip("198.19.0.10".parse()?)
//!     .with_endpoint(Endpoint::new("198.18.1.10".parse()?, 8080));
//! let table = ServiceTable::builder().insert(web).build()?;
//! let plan = dp.dry_run(&table)?;
//! assert!(plan.rendered.contains("-j DNAT --to-destination 198.18.1.10:8080"));
//! assert!(plan.rendered.contains("# hook: -t nat -A PREROUTING"));
//! // Then hand `dp` to `proxy_core::SyncLoop::new(dp, config, &mut registry)`, which calls
//! // `sync` (root needed from here on); its own `register_metrics` call is then a no-op.
//! # Ok(())
//! # }
//! ```
//!
//! The planner alone, for tests and tools (restore input per family and table):
//!
//! ```
//! use backend_iptables::{plan::Planner, rules::{Family, TableName}, IptablesConfig};
//! use proxy_core::table::*;
//!
//! let web = ServicePort::new(ServicePortName::new("default", "web", "http"), Protocol::Tcp, 80)
//!     .with_cluster_ip("198.19.0.10".parse().unwrap())
//!     .with_endpoint(Endpoint::new("198.18.1.10".parse().unwrap(), 8080));
//! let table = ServiceTable::builder().insert(web).build().unwrap();
//! let planner = Planner::new(IptablesConfig::default()).unwrap();
//! let plan = planner.plan_full(&table);
//! let nat = plan.restore(Family::V4, TableName::Nat).unwrap().input();
//! assert!(nat.contains("-j DNAT --to-destination 198.18.1.10:8080"));
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod apply;
pub mod cleanup;
pub mod config;
pub mod conntrack;
pub mod dataplane;
pub mod error;
pub mod hooks;
pub mod metrics;
pub mod names;
pub mod observe;
pub mod plan;
/// The typed rule model, shared with the other backends that write iptables rules.
pub use iptables_runner::rules;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use config::{DispatchLayout, IptablesConfig};
pub use dataplane::{IptablesDataplane, NAME};
pub use error::IptablesError;
pub use plan::{Applied, Plan, Planner};
