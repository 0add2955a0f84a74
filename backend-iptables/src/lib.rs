//! `backend-iptables`: kube-proxy's iptables semantics, planned as typed rules and written with
//! `iptables-restore --noflush`, with a layout whose chain count does not grow with endpoints and
//! whose dispatch walk grows with log N (see `README.md` beside this crate for the design note).
//!
//! It owns, in the `nat` and `filter` tables of both address families, every chain whose name
//! [`names::Names::is_owned`] accepts (prefix `SVCP-` by default) and the jumps to them from the
//! built-in chains ([`plan::Planner::hooks`]); [`cleanup::cleanup_chains`] and
//! [`hooks::remove_hooks`] remove exactly those.
//!
//! Shape: **model** ([`rules`]) → **plan** ([`plan`], pure) → **apply** ([`apply`], [`hooks`]) →
//! **observe** ([`observe`]); [`dataplane::IptablesDataplane`] ties them into a
//! [`proxy_core::Dataplane`].
//!
//! ```
//! use backend_iptables::{config::Config, plan::Planner, rules::{Family, TableName}};
//! use proxy_core::table::*;
//!
//! let web = ServicePort::new(ServicePortName::new("default", "web", "http"), Protocol::Tcp, 80)
//!     .with_cluster_ip("198.19.0.10".parse().unwrap())
//!     .with_endpoint(Endpoint::new("198.18.1.10".parse().unwrap(), 8080));
//! let table = ServiceTable::builder().insert(web).build().unwrap();
//! let planner = Planner::new(Config::default()).unwrap();
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
pub mod rules;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use config::{Config, DispatchLayout};
pub use dataplane::{IptablesDataplane, NAME};
pub use error::IptablesError;
pub use plan::{Applied, Plan, Planner};
