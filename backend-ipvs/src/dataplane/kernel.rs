//! The dataplane's connections to the kernel, opened at its first use rather than at
//! construction, and the namespace-wide settings a full sync writes.
//!
//! [`IpvsDataplane::new`](super::IpvsDataplane::new) only checks its config: a dry run, a
//! capability check or metrics registration needs no IPVS, no root and no socket. The first
//! sync, cleanup or observation opens everything, on the thread it runs on: the IPVS socket
//! (resolving the `IPVS` family, a blocking round trip), the rtnetlink socket for the dummy
//! interface and the companions' ipset socket. A socket stays in the network namespace it was
//! opened in, but `iptables-restore`, the sysctls and the conntrack clean-up thread act in the
//! namespace of the thread that runs them; so every later use checks that its thread is still
//! in the namespace the sockets were opened in, and fails with
//! [`BackendError::Namespace`] rather than program two namespaces at once.

use std::sync::Arc;

use tracing::{debug, info, warn};

use crate::client::NetlinkIpvs;
use crate::companions::Companions;
use crate::config::IpvsConfig;
use crate::error::BackendError;
use crate::link::RouteSocket;
use crate::ops::IpvsOps;

/// How a dataplane reaches the kernel.
#[derive(Debug)]
pub(super) enum Kernel {
    /// Nothing opened yet. `ipvs` is `None` for [`IpvsDataplane::new`](super::IpvsDataplane::new)
    /// (the netlink client is opened too), or what stands in for IPVS
    /// ([`IpvsDataplane::with_kernel_parts`](super::IpvsDataplane::with_kernel_parts)).
    Pending { ipvs: Option<Arc<dyn IpvsOps>> },
    /// Open. `netns` is where the sockets were opened (`None`: a dataplane over caller-given
    /// ops only, which runs nothing in a namespace, or `/proc` could not say).
    Open {
        ipvs: Arc<dyn IpvsOps>,
        netns: Option<String>,
    },
}

/// What [`open`] opened.
#[derive(Debug)]
pub(super) struct Opened {
    pub ipvs: Arc<dyn IpvsOps>,
    pub link: RouteSocket,
    pub companions: Option<Companions>,
    pub netns: Option<String>,
}

/// Opens, on this thread and so in its network namespace: the IPVS client (unless `ipvs` stands
/// in for it), the rtnetlink socket and, with `companions`, the ipset socket.
///
/// # Errors
/// [`BackendError::Ipvs`] with [`IpvsError::Unavailable`](crate::IpvsError::Unavailable) when
/// the kernel has no IPVS; [`BackendError::Link`] when no rtnetlink socket opens;
/// [`BackendError::Ipset`] when the kernel has no ipset.
pub(super) fn open(
    ipvs: Option<&Arc<dyn IpvsOps>>,
    config: &IpvsConfig,
    companions: bool,
) -> Result<Opened, BackendError> {
    let ipvs: Arc<dyn IpvsOps> = match ipvs {
        Some(ipvs) => Arc::clone(ipvs),
        None => Arc::new(NetlinkIpvs::connect()?),
    };
    let link = RouteSocket::connect()?;
    let companions = companions.then(|| Companions::new(config)).transpose()?;
    let netns = current_netns();
    info!(
        netns = netns.as_deref().unwrap_or("unknown"),
        companions = companions.is_some(),
        "IPVS dataplane connected"
    );
    Ok(Opened {
        ipvs,
        link,
        companions,
        netns,
    })
}

/// This thread's network namespace as `/proc` names it (`net:[4026531840]`); `None` when
/// `/proc/thread-self` cannot be read (no `/proc`, or a kernel before 3.17).
fn current_netns() -> Option<String> {
    std::fs::read_link("/proc/thread-self/ns/net")
        .ok()
        .map(|link| link.display().to_string())
}

/// Checks that this thread is in `opened`, the namespace the sockets were opened in.
///
/// # Errors
/// [`BackendError::Namespace`] naming both.
pub(super) fn check_netns(opened: Option<&str>) -> Result<(), BackendError> {
    let (Some(opened), Some(current)) = (opened, current_netns()) else {
        return Ok(());
    };
    if opened == current {
        return Ok(());
    }
    Err(BackendError::Namespace {
        opened: opened.to_owned(),
        current,
    })
}

/// kube-proxy's `--ipvs-strict-arp`: answer and announce ARP only for addresses of the
/// interface concerned, so the VIPs on the dummy interface are not answered for on the wire.
/// Written only when different; a failure is logged, not fatal.
pub(super) fn set_strict_arp() {
    for (name, value) in [("arp_ignore", "1"), ("arp_announce", "2")] {
        let path = format!("/proc/sys/net/ipv4/conf/all/{name}");
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        if current.trim() == value {
            continue;
        }
        match std::fs::write(&path, value) {
            Ok(()) => info!(path, value, "strict ARP sysctl set"),
            Err(e) => warn!(path, error = %e, "could not set strict ARP sysctl"),
        }
    }
}

/// The IPVS sysctls kube-proxy sets (`pkg/proxy/ipvs/proxier.go`), per network namespace:
/// IPVS-forwarded packets pass through conntrack, so `POSTROUTING` can masquerade them
/// (`conntrack`); connections to a deleted real server are expired rather than black-holed
/// (`expire_nodest_conn`); persistence templates of a weight-0 real server expire
/// (`expire_quiescent_template`). A missing file (no IPVS) is logged, not fatal.
pub(super) fn set_ipvs_sysctls() {
    for name in [
        "conntrack",
        "expire_nodest_conn",
        "expire_quiescent_template",
    ] {
        let path = format!("/proc/sys/net/ipv4/vs/{name}");
        if let Err(e) = std::fs::write(&path, "1") {
            debug!(path, error = %e, "could not set IPVS sysctl");
        }
    }
}
