//! Reading the kernel back into the plan's model: the virtual servers that are ours, with
//! their real servers and connection counts. Drift is `observed != applied`.
//!
//! # Ownership
//!
//! IPVS keeps no owner or comment per virtual server, so ownership is a rule ([`Ownership`]):
//! a virtual server is ours if its address is bound to our dummy interface (cluster, external
//! and load-balancer IPs are, and nothing else should be), or if this process created it (node
//! ports live on the node's own addresses). kube-proxy instead takes every virtual server not in
//! its `--ipvs-exclude-cidrs`; we never touch one we cannot tell is ours.
//!
//! Consequence: node-port virtual servers left by an earlier process are not recognised after a
//! restart, unless their address is also bound to the interface.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Instant;

use tracing::debug;

use crate::error::IpvsError;
use crate::model::ServiceKey;
use crate::ops::IpvsOps;
use crate::plan::{IpvsState, ServiceState};

/// Which virtual servers are ours.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ownership {
    /// The addresses on our dummy interface.
    pub bound: BTreeSet<IpAddr>,
    /// The virtual servers this process created (and has not deleted).
    pub created: BTreeSet<ServiceKey>,
}

impl Ownership {
    /// Whether the virtual server `key` is ours.
    pub fn is_owned(&self, key: &ServiceKey) -> bool {
        self.bound.contains(&key.addr) || self.created.contains(key)
    }
}

/// Dumps every virtual server that `ownership` says is ours, with its real servers. One dump of
/// the services plus one per owned service.
///
/// # Errors
/// The first failing dump.
pub fn observe_owned(ipvs: &dyn IpvsOps, ownership: &Ownership) -> Result<IpvsState, IpvsError> {
    let started = Instant::now();
    let mut services = BTreeMap::new();
    let all = ipvs.virtual_servers()?;
    let services_ms = started.elapsed().as_secs_f64() * 1e3;
    let owned: Vec<_> = all
        .into_iter()
        .filter(|vs| ownership.is_owned(&vs.key()))
        .collect();
    let keys: Vec<ServiceKey> = owned.iter().map(|vs| vs.key()).collect();
    let mut real_servers = 0;
    for (vs, dests) in owned.into_iter().zip(ipvs.real_servers_of(&keys)?) {
        let mut service = ServiceState::new(vs);
        for rs in dests {
            service.real_servers.insert(rs.socket_addr(), rs);
            real_servers += 1;
        }
        services.insert(service.vs.key(), service);
    }
    debug!(
        services = services.len(),
        real_servers,
        services_ms,
        total_ms = started.elapsed().as_secs_f64() * 1e3,
        "observed IPVS state"
    );
    Ok(IpvsState { services })
}

/// Re-reads the real servers (and their connection counts) of `keys` into `state`, for a partial
/// sync that trusts the rest of its applied state. A key no longer in the kernel is removed.
///
/// # Errors
/// The first failing dump.
pub fn refresh_services(
    ipvs: &dyn IpvsOps,
    keys: &BTreeSet<ServiceKey>,
    state: &mut IpvsState,
) -> Result<(), IpvsError> {
    for key in keys {
        match ipvs.virtual_server(key)? {
            None => {
                state.services.remove(key);
            }
            Some(vs) => {
                let mut service = ServiceState::new(vs);
                for rs in ipvs.real_servers(key)? {
                    service.real_servers.insert(rs.socket_addr(), rs);
                }
                state.services.insert(*key, service);
            }
        }
    }
    Ok(())
}
