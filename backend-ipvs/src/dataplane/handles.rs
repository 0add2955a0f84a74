//! [`Handles`]: what a sync acts through (IPVS, the dummy interface, the companions, conntrack),
//! apart from what it knows ([`crate::plan::Observed`]) and plans.

use std::sync::Arc;
use std::thread::JoinHandle;

use nf_conntrack::ConntrackOps;
use proxy_core::dataplane::SyncProblem;
use proxy_core::lock::DataplaneLock;
use tracing::debug;

use super::kernel::{self, check_netns, Kernel};
use crate::apply::{CompanionOps, LinkOps};
use crate::config::IpvsConfig;
use crate::error::BackendError;
use crate::flows::{clear_udp_flows, StaleUdpFlows};
use crate::ops::IpvsOps;

/// The effect handles of a dataplane.
#[derive(Debug)]
pub(super) struct Handles {
    /// The IPVS client, or how to open it (with `link` and `companions`) at first use.
    pub kernel: Kernel,
    /// Whether `companions` is to be opened with the kernel connections.
    pub has_companions: bool,
    /// The dummy interface (`None` over a fake IPVS: no interface, no VIPs).
    pub link: Option<Box<dyn LinkOps>>,
    pub companions: Option<Box<dyn CompanionOps>>,
    /// Where the conntrack entries of deleted UDP real servers are deleted; `None`: not at all.
    pub conntrack: Option<Arc<dyn ConntrackOps>>,
    /// The clean-up of stale UDP flows started by the last sync, still running or not yet
    /// joined: its failure is a problem of the first sync after it ended (or of the sync that
    /// starts the next one, which waits for it).
    pub flow_cleanup: Option<JoinHandle<Option<SyncProblem>>>,
    /// The one-owner locks taken when the kernel connections were opened, held until the
    /// dataplane is dropped (see [`kernel`]).
    pub owner: Vec<DataplaneLock>,
}

impl Handles {
    pub fn new(kernel: Kernel, has_companions: bool) -> Self {
        Handles {
            kernel,
            has_companions,
            link: None,
            companions: None,
            conntrack: None,
            flow_cleanup: None,
            owner: Vec::new(),
        }
    }

    /// The IPVS client. The first call opens the kernel connections on this thread (so in its
    /// network namespace); later ones check that this thread is still in that namespace.
    ///
    /// # Errors
    /// See [`kernel::open`] and [`kernel::check_netns`].
    pub fn ipvs(&mut self, config: &IpvsConfig) -> Result<Arc<dyn IpvsOps>, BackendError> {
        let pending = match &self.kernel {
            Kernel::Open { ipvs, netns } => {
                check_netns(netns.as_deref())?;
                return Ok(Arc::clone(ipvs));
            }
            Kernel::Pending { ipvs } => ipvs.as_ref(),
        };
        let opened = kernel::open(pending, config, self.has_companions)?;
        self.link = Some(Box::new(opened.link));
        self.companions = opened
            .companions
            .map(|c| Box::new(c) as Box<dyn CompanionOps>);
        self.owner = opened.owner;
        self.kernel = Kernel::Open {
            ipvs: Arc::clone(&opened.ipvs),
            netns: opened.netns,
        };
        Ok(opened.ipvs)
    }

    /// Whether nothing has been opened yet.
    pub fn is_pending(&self) -> bool {
        matches!(self.kernel, Kernel::Pending { .. })
    }

    /// The last flow clean-up's failure, if it has ended (never waits).
    pub fn ended_flow_cleanup(&mut self) -> Option<SyncProblem> {
        if self
            .flow_cleanup
            .as_ref()
            .is_some_and(JoinHandle::is_finished)
        {
            return self.finish_flow_cleanup();
        }
        None
    }

    /// Joins the last flow clean-up, if any; its failure as a problem.
    pub fn finish_flow_cleanup(&mut self) -> Option<SyncProblem> {
        let handle = self.flow_cleanup.take()?;
        match handle.join() {
            Ok(problem) => problem,
            Err(_) => Some(SyncProblem::new(
                "stale UDP flows",
                "the clean-up thread panicked",
            )),
        }
    }

    /// Starts deleting the conntrack entries of `stale` (nothing without a conntrack handle or
    /// flows), after joining the last clean-up: the problems to report now.
    ///
    /// Off the sync's path: a conntrack dump walks the kernel's whole conntrack hash (it is
    /// shared by every namespace), several ms on a busy host, while the real servers are
    /// already gone. The thread starts in this thread's network namespace; the next sync (or
    /// `wait_for_flow_cleanup`) joins it and reports a failure.
    pub fn start_flow_cleanup(&mut self, stale: Vec<StaleUdpFlows>) -> Vec<SyncProblem> {
        let Some(conntrack) = self.conntrack.clone() else {
            return Vec::new();
        };
        if stale.is_empty() {
            return Vec::new();
        }
        let mut problems: Vec<SyncProblem> = self.finish_flow_cleanup().into_iter().collect();
        let spawned = std::thread::Builder::new()
            .name("svcp-ipvs-flows".into())
            .spawn(move || clean_udp_flows(conntrack.as_ref(), &stale));
        match spawned {
            Ok(handle) => self.flow_cleanup = Some(handle),
            Err(e) => problems.push(SyncProblem::new(
                "stale UDP flows",
                format!("cannot start the clean-up thread: {e}"),
            )),
        }
        problems
    }
}

/// Deletes the conntrack entries of `stale`'s flows; a failure as a problem naming them.
fn clean_udp_flows(conntrack: &dyn ConntrackOps, stale: &[StaleUdpFlows]) -> Option<SyncProblem> {
    match clear_udp_flows(conntrack, stale) {
        Ok(entries) => {
            debug!(
                real_servers = stale.len(),
                entries, "conntrack entries of deleted UDP real servers deleted"
            );
            None
        }
        Err(e) => {
            let flows: Vec<String> = stale.iter().map(ToString::to_string).collect();
            Some(SyncProblem::new(
                format!("conntrack entries of {}", flows.join(", ")),
                proxy_core::error::error_chain(&e),
            ))
        }
    }
}
