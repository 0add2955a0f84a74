//! Stale UDP conntrack entries, deleted after each successful sync through the shared
//! ctnetlink client (`nf-conntrack`), as backend-iptables does (kube-proxy's
//! `pkg/proxy/conntrack/cleanup.go`):
//!
//! - a UDP service port that gains its first usable endpoint (or is added with some): entries
//!   to each of its addresses and port, and to its node port, created un-NATed;
//! - an endpoint no longer used (removed, or no longer ready/serving), or a removed port:
//!   entries to the service's addresses (or node port) that were DNATed to that endpoint.
//!
//! [`plan_conntrack`] (pure) and [`flush_stale`] (one dump per family) are written once, in
//! `nf_conntrack::stale`, for both NAT backends; they and the client are re-exported here.

pub use nf_conntrack::stale::{flush_stale, plan_conntrack, Flush};
pub use nf_conntrack::{ConntrackError, ConntrackOps, Entry, Netlink, IPPROTO_UDP};
