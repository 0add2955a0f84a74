//! [`IpvsDataplane`]: the [`Dataplane`] over IPVS, the dummy interface and the companions.
//!
//! One sync, on a blocking thread (every kernel call blocks):
//!
//! 1. make sure the dummy interface exists and is up; on a full sync, read its addresses
//!    (they say which virtual servers are ours, see [`crate::observe`]);
//! 2. read our virtual servers from the kernel (full), or trust the applied state and re-read
//!    only the draining ones (partial);
//! 3. bind the new VIPs, [`plan`](crate::plan::plan), [`apply`](crate::apply::apply_ops), then
//!    unbind the VIPs no longer used;
//! 4. write the companion ipsets and rules (if managed).
//!
//! A failed operation is reported as a problem and the next sync is upgraded to full.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use proxy_core::dataplane::{
    Capabilities, CleanupReport, SyncMode, SyncProblem, SyncReport, SyncRequest,
};
use proxy_core::table::{Protocol, Scheduler, ServiceTable};
use proxy_core::{Dataplane, DataplaneError};
use tracing::{debug, info, warn};

use crate::apply::apply_ops;
use crate::cleanup::cleanup_owned;
use crate::companions::Companions;
use crate::config::Config;
use crate::error::BackendError;
use crate::link::RouteSocket;
use crate::metrics::Metrics;
use crate::observe::{observe_owned, refresh_services, Ownership};
use crate::ops::IpvsOps;
use crate::plan::{plan, plan_desired, Desired, Draining, IpvsState, Op};
use crate::NetlinkIpvs;

/// The backend's name in logs, metrics and reports.
pub const NAME: &str = "ipvs";

/// The IPVS dataplane. See the crate docs for what it owns.
#[derive(Debug)]
pub struct IpvsDataplane {
    core: Arc<Mutex<Core>>,
    metrics: Metrics,
}

/// Everything a sync reads and writes, moved to the blocking thread and back.
#[derive(Debug)]
struct Core {
    config: Config,
    ipvs: Arc<dyn IpvsOps>,
    link: Option<RouteSocket>,
    companions: Option<Companions>,
    applied: IpvsState,
    draining: Draining,
    ownership: Ownership,
    needs_full: bool,
}

/// What one blocking sync did.
#[derive(Debug, Default)]
struct Outcome {
    mode: Option<SyncMode>,
    written: usize,
    drift: usize,
    problems: Vec<SyncProblem>,
}

impl IpvsDataplane {
    /// The dataplane on the kernel of this thread's network namespace: the IPVS netlink client,
    /// an rtnetlink socket for the dummy interface, and (if configured) the companions.
    ///
    /// # Errors
    /// [`BackendError::Config`] for a bad config; [`BackendError::Ipvs`] when the kernel has no
    /// IPVS; [`BackendError::Link`] when no rtnetlink socket opens.
    pub fn new(config: Config) -> Result<Self, BackendError> {
        config.validate()?;
        let ipvs = Arc::new(NetlinkIpvs::connect()?);
        let link = RouteSocket::connect()?;
        let companions = config
            .manage_companions
            .then(|| Companions::new(&config))
            .transpose()?;
        Ok(Self::from_parts(config, ipvs, Some(link), companions))
    }

    /// A dataplane over any [`IpvsOps`] (a fake in tests), with no dummy interface and no
    /// companions: ownership then rests on what this dataplane created.
    ///
    /// # Errors
    /// [`BackendError::Config`] for a bad config.
    pub fn with_ops(config: Config, ipvs: Arc<dyn IpvsOps>) -> Result<Self, BackendError> {
        config.validate()?;
        Ok(Self::from_parts(config, ipvs, None, None))
    }

    fn from_parts(
        config: Config,
        ipvs: Arc<dyn IpvsOps>,
        link: Option<RouteSocket>,
        companions: Option<Companions>,
    ) -> Self {
        IpvsDataplane {
            core: Arc::new(Mutex::new(Core {
                config,
                ipvs,
                link,
                companions,
                applied: IpvsState::default(),
                draining: Draining::default(),
                ownership: Ownership::default(),
                needs_full: true,
            })),
            metrics: Metrics::default(),
        }
    }

    /// Records into `metrics` (from [`Metrics::register`]) from now on.
    pub fn set_metrics(&mut self, metrics: Metrics) {
        self.metrics = metrics;
    }

    /// The capabilities of this backend (also [`Dataplane::capabilities`]). Source ranges need
    /// the companion rules.
    pub fn supported(manage_companions: bool) -> Capabilities {
        Capabilities {
            protocols: Protocol::ALL.into_iter().collect(),
            schedulers: Scheduler::ALL
                .into_iter()
                .filter(|s| *s != Scheduler::Random)
                .collect(),
            session_affinity: true,
            local_traffic_policy: true,
            load_balancer_source_ranges: manage_companions,
            node_ports: true,
            ipv6: true,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Core> {
        // Every field is replaced whole by a sync; a panic mid-way leaves `needs_full` set.
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What IPVS should hold for `table` under this dataplane's config.
    pub fn desired(&self, table: &ServiceTable) -> Desired {
        plan_desired(table, &self.lock().config)
    }

    /// The state our last sync left, as we recorded it.
    pub fn applied(&self) -> IpvsState {
        self.lock().applied.clone()
    }

    /// The real servers draining now.
    pub fn draining(&self) -> Draining {
        self.lock().draining.clone()
    }

    /// Syncs on this thread, at time `now` (tests pass a fake clock). [`Dataplane::sync`] runs
    /// this on a blocking thread with `Instant::now()`.
    ///
    /// # Errors
    /// [`BackendError`] when the kernel state cannot be read or the interface cannot be set
    /// up; failed operations are problems in the report instead.
    pub fn sync_at(
        &self,
        request: &SyncRequest<'_>,
        now: Instant,
    ) -> Result<SyncReport, BackendError> {
        let started = Instant::now();
        let desired = self.desired(request.desired);
        let outcome = self.lock().sync(&desired, request.mode, now);
        let mut report = SyncReport::for_request(request);
        report.duration = started.elapsed();
        match outcome {
            Ok(outcome) => {
                report.mode = outcome.mode.unwrap_or(request.mode);
                report.objects_written = outcome.written;
                report.problems = outcome.problems;
                self.metrics.record_sync(
                    report.mode,
                    report.duration,
                    outcome.written,
                    outcome.drift,
                );
                Ok(report)
            }
            Err(e) => {
                self.lock().needs_full = true;
                Err(e)
            }
        }
    }

    /// Removes every virtual server of ours, our interface, our sets and rules, on this thread.
    ///
    /// # Errors
    /// The first failure; what could be removed was.
    pub fn cleanup_now(&self) -> Result<CleanupReport, BackendError> {
        self.lock().cleanup()
    }
}

impl Core {
    fn sync(
        &mut self,
        desired: &Desired,
        requested: SyncMode,
        now: Instant,
    ) -> Result<Outcome, BackendError> {
        let mode = if self.needs_full {
            SyncMode::Full
        } else {
            requested
        };
        let mut outcome = Outcome {
            mode: Some(mode),
            problems: desired.problems.clone(),
            ..Outcome::default()
        };
        let index = match &self.link {
            Some(link) => {
                let (index, created) = link.ensure_dummy(&self.config.interface)?;
                if created {
                    info!(interface = %self.config.interface, "created dummy interface");
                }
                if mode == SyncMode::Full || created {
                    self.ownership.bound = link.addresses(index)?.into_iter().collect();
                }
                Some(index)
            }
            None => None,
        };

        if self.link.is_some() && mode == SyncMode::Full {
            set_ipvs_sysctls();
        }
        let ipvs = Arc::clone(&self.ipvs);
        if mode == SyncMode::Full {
            let observed = observe_owned(ipvs.as_ref(), &self.ownership)?;
            outcome.drift = count_drift(&self.applied, &observed);
            if outcome.drift > 0 && !self.applied.services.is_empty() {
                warn!(
                    differences = outcome.drift,
                    "IPVS state drifted from what we applied; repairing"
                );
            }
            self.applied = observed;
        } else {
            refresh_services(ipvs.as_ref(), &self.draining.services(), &mut self.applied)?;
        }

        // VIPs first, so a new virtual server is reachable as soon as it exists.
        if let (Some(link), Some(index)) = (&self.link, index) {
            for ip in desired.vips.difference(&self.ownership.bound.clone()) {
                match link.add_address(index, *ip) {
                    Ok(()) => {
                        self.ownership.bound.insert(*ip);
                        outcome.written += 1;
                    }
                    Err(e) => outcome.problems.push(problem_of(desired, *ip, &e)),
                }
            }
        }

        let plan = plan(
            &desired.state,
            &self.applied,
            &self.draining,
            now,
            self.config.graceful_termination,
        );
        debug!(ops = plan.ops.len(), draining = plan.draining.len(), %mode, "IPVS plan");
        let applied = apply_ops(ipvs.as_ref(), &plan.ops, &mut self.applied);
        outcome.written += applied.done;
        for failure in &applied.failures {
            let origin = desired
                .origins
                .get(&failure.op.key())
                .map(|o| format!("{} {}: ", o.port, o.kind))
                .unwrap_or_default();
            outcome.problems.push(SyncProblem {
                object: format!("{origin}{}", failure.op),
                reason: failure.to_string(),
            });
        }
        if let Some(companions) = &self.companions {
            for op in &plan.ops {
                let Op::DeleteRealServer(key, rs) = op else {
                    continue;
                };
                let deleted = self
                    .applied
                    .services
                    .get(key)
                    .is_none_or(|s| !s.real_servers.contains_key(&rs.socket_addr()));
                if key.protocol == Protocol::Udp && deleted {
                    if let Err(e) = companions.clear_udp_flows(key.addr, key.port, rs.addr) {
                        outcome.problems.push(SyncProblem {
                            object: format!("UDP flows {key} -> {}", rs.socket_addr()),
                            reason: e.to_string(),
                        });
                    }
                }
            }
        }
        self.draining = plan.draining;
        self.draining.retain_present(&self.applied);
        for op in &plan.ops {
            match op {
                Op::AddVirtualServer(vs) if self.applied.services.contains_key(&vs.key()) => {
                    self.ownership.created.insert(vs.key());
                }
                Op::DeleteVirtualServer(key) if !self.applied.services.contains_key(key) => {
                    self.ownership.created.remove(key);
                }
                _ => {}
            }
        }

        // Unbind what no virtual server of ours uses any more.
        if let (Some(link), Some(index)) = (&self.link, index) {
            let in_use: BTreeSet<IpAddr> = self.applied.services.keys().map(|k| k.addr).collect();
            let stale: Vec<IpAddr> = self
                .ownership
                .bound
                .iter()
                .filter(|ip| !desired.vips.contains(ip) && !in_use.contains(ip))
                .copied()
                .collect();
            for ip in stale {
                match link.delete_address(index, ip) {
                    Ok(()) => {
                        self.ownership.bound.remove(&ip);
                        outcome.written += 1;
                    }
                    Err(e) => outcome.problems.push(SyncProblem {
                        object: format!("{} address {ip}", self.config.interface),
                        reason: e.to_string(),
                    }),
                }
            }
        }

        if let Some(companions) = &mut self.companions {
            match companions.sync(desired, mode == SyncMode::Full) {
                Ok(written) => outcome.written += written,
                Err(e) => outcome.problems.push(SyncProblem {
                    object: "companion ipsets and iptables rules".into(),
                    reason: e.to_string(),
                }),
            }
        }
        self.needs_full = !applied.failures.is_empty();
        Ok(outcome)
    }

    fn cleanup(&mut self) -> Result<CleanupReport, BackendError> {
        let result = cleanup_owned(
            self.ipvs.as_ref(),
            self.link.as_ref(),
            &self.config.interface,
            self.companions.as_mut(),
            &self.ownership.created,
        );
        self.applied = IpvsState::default();
        self.draining = Draining::default();
        self.ownership = Ownership::default();
        self.needs_full = true;
        result.map(|objects_removed| CleanupReport { objects_removed })
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

fn problem_of(desired: &Desired, ip: IpAddr, e: &BackendError) -> SyncProblem {
    let ports: Vec<String> = desired
        .origins
        .iter()
        .filter(|(key, _)| key.addr == ip)
        .map(|(_, o)| o.port.to_string())
        .collect();
    SyncProblem {
        object: format!("{} ({})", ip, ports.join(", ")),
        reason: e.to_string(),
    }
}

/// Virtual servers that differ between what we applied and what the kernel holds (connection
/// counts aside).
fn count_drift(applied: &IpvsState, observed: &IpvsState) -> usize {
    let applied = &applied.services;
    let observed = &observed.services;
    let keys: BTreeSet<_> = applied.keys().chain(observed.keys()).collect();
    keys.into_iter()
        .filter(|key| {
            let strip = |s: &crate::plan::ServiceState| {
                (
                    s.vs.clone(),
                    s.real_servers
                        .values()
                        .map(|rs| rs.without_conns())
                        .collect::<Vec<_>>(),
                )
            };
            applied.get(key).map(strip) != observed.get(key).map(strip)
        })
        .count()
}

#[async_trait]
impl Dataplane for IpvsDataplane {
    fn name(&self) -> &'static str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        Self::supported(self.lock().companions.is_some())
    }

    async fn sync(&mut self, request: SyncRequest<'_>) -> Result<SyncReport, DataplaneError> {
        // The blocking thread is spawned from this one, so it starts in the same network
        // namespace; the sockets are bound to theirs anyway.
        let started = Instant::now();
        let desired = self.desired(request.desired);
        let core = Arc::clone(&self.core);
        let mode = request.mode;
        let outcome = tokio::task::spawn_blocking(move || {
            let mut core = core.lock().unwrap_or_else(|e| e.into_inner());
            let result = core.sync(&desired, mode, Instant::now());
            if result.is_err() {
                core.needs_full = true;
            }
            result
        })
        .await
        .map_err(|e| DataplaneError::backend(NAME, BackendError::Task(e.to_string())))?
        .map_err(|e| DataplaneError::backend(NAME, e))?;
        let mut report = SyncReport::for_request(&request);
        report.mode = outcome.mode.unwrap_or(mode);
        report.objects_written = outcome.written;
        report.problems = outcome.problems;
        report.duration = started.elapsed();
        self.metrics
            .record_sync(report.mode, report.duration, outcome.written, outcome.drift);
        debug!(
            service_ports = report.service_ports,
            written = report.objects_written,
            problems = report.problems.len(),
            "sync complete"
        );
        Ok(report)
    }

    async fn cleanup(&mut self) -> Result<CleanupReport, DataplaneError> {
        let core = Arc::clone(&self.core);
        tokio::task::spawn_blocking(move || {
            core.lock().unwrap_or_else(|e| e.into_inner()).cleanup()
        })
        .await
        .map_err(|e| DataplaneError::backend(NAME, BackendError::Task(e.to_string())))?
        .map_err(|e| DataplaneError::backend(NAME, e))
    }
}

#[cfg(test)]
mod tests;
