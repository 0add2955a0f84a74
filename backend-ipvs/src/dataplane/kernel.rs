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
//! [`BackendError::Namespace`] rather than program two namespaces at once. Before it opens
//! anything, the first use takes the one-owner locks of that namespace (our prefix, our
//! interface) and the dataplane keeps them for its life, so a second instance is refused by
//! name rather than fight over the same objects.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use proxy_core::lock::{DataplaneLock, LockError, LockKey, NetnsId, DEFAULT_LOCK_DIR};
use tracing::{debug, info, warn};

use crate::apply::{CompanionOps, LinkOps};
use crate::client::NetlinkIpvs;
use crate::companions::Companions;
use crate::config::{IpvsConfig, VipBinding};
use crate::error::BackendError;
use crate::link::RouteSocket;
use crate::ops::IpvsOps;
use crate::plan::{Desired, Touched};

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
    /// The one-owner locks, held for the dataplane's life (see [`take_owner_locks`]).
    pub owner: Vec<DataplaneLock>,
}

/// Takes, in [`DEFAULT_LOCK_DIR`], the one-owner locks of this thread's network namespace
/// ([`proxy_core::lock`]): one on our prefix (the companion sets and chains) and one on our
/// interface (whose addresses say which virtual servers are ours). A second instance sharing
/// either would delete the other's objects at each full sync and all of them at cleanup.
///
/// # Errors
/// [`BackendError::Lock`], naming the holder when another instance has either.
fn take_owner_locks(config: &IpvsConfig) -> Result<Vec<DataplaneLock>, BackendError> {
    let netns = NetnsId::current().map_err(|source| LockError::Io {
        path: PathBuf::from("/proc/thread-self/ns/net"),
        op: "identify the network namespace",
        source,
    })?;
    let dir = std::path::Path::new(DEFAULT_LOCK_DIR);
    let prefix = DataplaneLock::acquire_in(dir, &LockKey::new(netns, "ipvs", &config.prefix))?;
    let interface = DataplaneLock::acquire_in(
        dir,
        &LockKey::new(netns, "ipvs-interface", &config.interface),
    )?;
    Ok(vec![prefix, interface])
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
    // Before anything is opened or changed.
    let owner = take_owner_locks(config)?;
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
        owner,
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

impl LinkOps for RouteSocket {
    fn link_index(&self, name: &str) -> Result<Option<u32>, BackendError> {
        RouteSocket::link_index(self, name)
    }

    fn ensure_dummy(&self, name: &str) -> Result<(u32, bool), BackendError> {
        RouteSocket::ensure_dummy(self, name)
    }

    fn delete_link(&self, name: &str) -> Result<bool, BackendError> {
        RouteSocket::delete_link(self, name)
    }

    fn vips(&self, index: u32, binding: VipBinding) -> Result<Vec<IpAddr>, BackendError> {
        RouteSocket::vips(self, index, binding)
    }

    fn bind_vips(
        &self,
        index: u32,
        binding: VipBinding,
        ips: &[IpAddr],
    ) -> Vec<Result<(), BackendError>> {
        RouteSocket::bind_vips(self, index, binding, ips)
    }

    fn unbind_vips(
        &self,
        index: u32,
        binding: VipBinding,
        ips: &[IpAddr],
    ) -> Vec<Result<(), BackendError>> {
        RouteSocket::unbind_vips(self, index, binding, ips)
    }

    fn set_sysctls(&self, strict_arp: bool) {
        set_ipvs_sysctls();
        if strict_arp {
            set_strict_arp();
        }
    }
}

impl CompanionOps for Companions {
    fn sync(
        &mut self,
        desired: &Desired,
        touched: Option<&Touched>,
    ) -> Result<usize, BackendError> {
        Companions::sync(self, desired, touched)
    }

    fn restore_failures(&self) -> usize {
        Companions::restore_failures(self)
    }

    fn cleanup(&mut self) -> Result<usize, BackendError> {
        Companions::cleanup(self)
    }
}

/// kube-proxy's `--ipvs-strict-arp`: answer and announce ARP only for addresses of the
/// interface concerned, so the VIPs on the dummy interface are not answered for on the wire.
/// Written only when different; a failure is logged, not fatal.
fn set_strict_arp() {
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
fn set_ipvs_sysctls() {
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

#[cfg(test)]
mod tests {
    use proxy_core::lock::LockError;

    use super::*;
    use crate::testing::FakeIpvs;
    use crate::IpvsDataplane;

    fn config(prefix: &str, interface: &str) -> IpvsConfig {
        IpvsConfig {
            prefix: prefix.to_owned(),
            interface: interface.to_owned(),
            manage_companions: false,
            ..IpvsConfig::default()
        }
    }

    fn held_by_us(result: Result<impl std::fmt::Debug, BackendError>) {
        match result {
            Err(BackendError::Lock(LockError::Held { holder, .. })) => {
                assert_eq!(holder.pid, Some(std::process::id()), "{holder}");
            }
            other => panic!("expected a lock held by this process, got {other:?}"),
        }
    }

    #[test]
    #[ignore = "needs root (a namespace of its own, /run/svcproxy): scripts/vm-test runs it"]
    fn a_second_instance_sharing_our_prefix_or_interface_is_refused_until_the_first_is_gone() {
        testkit::netns::in_new_netns(|| {
            let ours = config("SVCP-IPVS-", "svcp-ipvs0");
            let first = IpvsDataplane::with_kernel_parts(ours.clone(), Arc::new(FakeIpvs::new()))
                .expect("valid config");
            first.observe().expect("the first use opens and locks");
            let second = IpvsDataplane::with_kernel_parts(ours.clone(), Arc::new(FakeIpvs::new()))
                .expect("valid config");
            held_by_us(second.observe());
            held_by_us(second.cleanup_now());
            held_by_us(take_owner_locks(&config("SVCP-IPVS-", "svcp-other0")));
            held_by_us(take_owner_locks(&config("SVCP-OTHER-", "svcp-ipvs0")));
            let apart =
                take_owner_locks(&config("SVCP-OTHER-", "svcp-other0")).expect("nothing shared");
            drop(first);
            second.observe().expect("free once the first is gone");
            drop(apart);
        });
    }
}
