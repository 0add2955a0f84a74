//! Cleanup: remove everything of ours, and nothing else.
//!
//! Ours is: every virtual server whose address is on our dummy interface, or that this process
//! created (see [`crate::observe`] for the ownership rule); the dummy interface itself (its
//! addresses go with it); the companion jumps, chains and sets under our prefix. A virtual
//! server on any other address, kube-proxy's `KUBE-` chains and sets, and other interfaces are
//! never touched.

use std::collections::BTreeSet;

use crate::apply::{CompanionOps, LinkOps};
use crate::config::VipBinding;
use crate::error::BackendError;
use crate::model::ServiceKey;
use crate::observe::Ownership;
use crate::ops::IpvsOps;

/// Removes our virtual servers, our interface and our companions; returns how many objects
/// went. Every step is tried even after a failure.
///
/// # Errors
/// The first failure; what could be removed was.
pub fn cleanup_owned(
    ipvs: &dyn IpvsOps,
    link: Option<&dyn LinkOps>,
    interface: &str,
    companions: Option<&mut dyn CompanionOps>,
    created: &BTreeSet<ServiceKey>,
) -> Result<usize, BackendError> {
    let mut removed = 0;
    let mut first_error: Option<BackendError> = None;
    let keep = |e: BackendError, first: &mut Option<BackendError>| {
        if first.is_none() {
            *first = Some(e);
        }
    };
    // Read the interface's VIPs now, both kinds of binding (addresses and local routes): a
    // previous process's VIPs count as ours too, whatever it was configured with.
    let mut ownership = Ownership {
        bound: BTreeSet::new(),
        created: created.clone(),
    };
    if let Some(link) = link {
        match link.link_index(interface) {
            Ok(Some(index)) => {
                for binding in [VipBinding::Addresses, VipBinding::LocalRoutes] {
                    match link.vips(index, binding) {
                        Ok(vips) => ownership.bound.extend(vips),
                        Err(e) => keep(e, &mut first_error),
                    }
                }
            }
            Ok(None) => {}
            Err(e) => keep(e, &mut first_error),
        }
    }
    match ipvs.virtual_servers() {
        Ok(all) => {
            for vs in all.iter().filter(|vs| ownership.is_owned(&vs.key())) {
                match ipvs.delete_virtual_server(&vs.key()) {
                    Ok(()) => removed += 1,
                    Err(e) if e.is_not_found() => {}
                    Err(e) => keep(e.into(), &mut first_error),
                }
            }
        }
        Err(e) => keep(e.into(), &mut first_error),
    }
    if let Some(link) = link {
        match link.delete_link(interface) {
            Ok(true) => removed += 1,
            Ok(false) => {}
            Err(e) => keep(e, &mut first_error),
        }
    }
    if let Some(companions) = companions {
        match companions.cleanup() {
            Ok(n) => removed += n,
            Err(e) => keep(e, &mut first_error),
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(removed),
    }
}
