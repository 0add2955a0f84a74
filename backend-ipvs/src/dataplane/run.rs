//! One sync, as observe → plan → apply: [`Core::sync_desired`] sets up what it must before it
//! can read the kernel ([`plan_setup`]), observes ([`observe_owned`] on a full sync, the
//! draining virtual servers on a partial one), plans every effect ([`plan_sync`], pure), then
//! runs each through its handle, in order: VIP binds, IPVS operations ([`apply_ops`]), the
//! flow clean-up, VIP unbinds, the companions. Each step maps its failures to the report's
//! problems; the only decisions left here are the ones that depend on what the kernel did
//! (an unbind waits while a failed delete keeps a virtual server on the address; flows are
//! cleaned only for the real servers actually gone).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Instant;

use proxy_core::dataplane::{SyncMode, SyncProblem};
use proxy_core::table::ServicePortName;
use tracing::{debug, debug_span, info, warn};

use super::Core;
use crate::apply::{apply_ops, ApplyOutcome, OpFailure};
use crate::config::IpvsConfig;
use crate::error::BackendError;
use crate::metrics::SyncStats;
use crate::observe::{observe_owned, refresh_services};
use crate::ops::IpvsOps;
use crate::plan::{
    plan_setup, plan_sync, services_on, CompanionScope, DeletedUdp, Desired, Effects, IpvsState,
    Op, ServiceState, Setup, Touched,
};

/// What one blocking sync did.
#[derive(Debug)]
pub(super) struct Outcome {
    pub mode: SyncMode,
    pub written: usize,
    pub failed_ops: usize,
    pub drift: usize,
    pub draining: usize,
    pub restore_failures: usize,
    pub problems: Vec<SyncProblem>,
}

impl Outcome {
    fn new(full: bool, problems: Vec<SyncProblem>) -> Self {
        Outcome {
            mode: if full {
                SyncMode::Full
            } else {
                SyncMode::Partial
            },
            written: 0,
            failed_ops: 0,
            drift: 0,
            draining: 0,
            restore_failures: 0,
            problems,
        }
    }

    pub fn stats(&self, duration: std::time::Duration) -> SyncStats {
        SyncStats {
            mode: self.mode,
            duration,
            written: self.written,
            failed_ops: self.failed_ops,
            drift: self.drift,
            draining: self.draining,
            restore_failures: self.restore_failures,
        }
    }
}

impl Core {
    /// Syncs to `desired`: whole (`touched` is `None`) or only what `touched` names.
    ///
    /// # Errors
    /// The interface cannot be set up or the kernel read; failed effects are problems instead.
    pub(super) fn sync_desired(
        &mut self,
        ipvs: &dyn IpvsOps,
        desired: &Desired,
        touched: Option<&Touched>,
        now: Instant,
    ) -> Result<Outcome, BackendError> {
        let full = touched.is_none();
        let mut phases = Phases::start();
        let mut outcome = Outcome::new(full, desired.problems());
        // The last flow clean-up's failure, if it has ended (a sync never waits for it here).
        outcome.problems.extend(self.handles.ended_flow_cleanup());
        let setup = plan_setup(full, &self.observed, &self.config);
        self.run_setup(setup, ipvs, &mut outcome)?;
        phases.lap("link");
        self.observe_kernel(ipvs, full, &mut outcome)?;
        phases.lap("observe");
        let grace = self.config.graceful_termination;
        let effects = plan_sync(desired, &self.observed, touched, now, grace);
        debug!(
            binds = effects.binds.len(),
            ops = effects.ops.len(),
            unbinds = effects.unbinds.len(),
            draining = effects.draining.len(),
            full,
            "IPVS plan"
        );
        phases.lap("plan");
        self.run_effects(ipvs, desired, effects, &mut outcome, &mut phases);
        phases.log(full, outcome.written);
        Ok(outcome)
    }

    /// The dummy interface (exists, is up; its VIPs read) and the sysctls, then the timeouts.
    fn run_setup(
        &mut self,
        setup: Setup,
        ipvs: &dyn IpvsOps,
        outcome: &mut Outcome,
    ) -> Result<(), BackendError> {
        if let (true, Some(link)) = (setup.link, &self.handles.link) {
            let _span = debug_span!("link").entered();
            let (index, created) = link.ensure_dummy(&self.config.interface)?;
            if created {
                info!(interface = %self.config.interface, "created dummy interface");
            }
            self.observed.ownership.bound = link
                .vips(index, self.config.vip_binding)?
                .into_iter()
                .collect();
            self.observed.link_index = Some(index);
            link.set_sysctls(setup.strict_arp);
        }
        if setup.timeouts {
            if let Err(e) = apply_timeouts(&self.config, ipvs) {
                outcome.problems.push(SyncProblem::new(
                    "IPVS connection timeouts",
                    proxy_core::error::error_chain(&e),
                ));
            }
        }
        Ok(())
    }

    /// Full: our virtual servers as the kernel holds them (counting the drift from what we
    /// applied). Partial: the applied state is trusted, the draining virtual servers re-read.
    fn observe_kernel(
        &mut self,
        ipvs: &dyn IpvsOps,
        full: bool,
        outcome: &mut Outcome,
    ) -> Result<(), BackendError> {
        let _span = debug_span!("observe", full).entered();
        let observed = &mut self.observed;
        if !full {
            refresh_services(ipvs, &observed.draining.services(), &mut observed.applied)?;
            return Ok(());
        }
        let now = observe_owned(ipvs, &observed.ownership)?;
        outcome.drift = count_drift(&observed.applied, &now);
        if outcome.drift > 0 && !observed.applied.services.is_empty() {
            warn!(
                differences = outcome.drift,
                "IPVS state drifted from what we applied; repairing"
            );
        }
        observed.applied = now;
        Ok(())
    }

    /// Runs `effects` in order, each through its handle.
    fn run_effects(
        &mut self,
        ipvs: &dyn IpvsOps,
        desired: &Desired,
        effects: Effects,
        outcome: &mut Outcome,
        phases: &mut Phases,
    ) {
        self.bind(desired, &effects.binds, outcome);
        phases.lap("bind");
        let applied = debug_span!("apply", ops = effects.ops.len())
            .in_scope(|| apply_ops(ipvs, &effects.ops, &mut self.observed.applied));
        phases.lap("apply");
        self.after_apply(desired, &effects, &applied, outcome);
        self.observed.draining = effects.draining;
        self.observed
            .draining
            .retain_present(&self.observed.applied);
        outcome.draining = self.observed.draining.len();
        self.unbind(&effects.unbinds, outcome);
        phases.lap("unbind");
        self.sync_companions(desired, &effects.companions, outcome);
        phases.lap("companions");
        self.needs_full = !applied.failures.is_empty();
    }

    /// Binds `ips` to the dummy interface (none without one).
    fn bind(&mut self, desired: &Desired, ips: &[IpAddr], outcome: &mut Outcome) {
        let (Some(link), Some(index)) = (&self.handles.link, self.observed.link_index) else {
            return;
        };
        let _span = debug_span!("bind").entered();
        let results = link.bind_vips(index, self.config.vip_binding, ips);
        for (ip, result) in ips.iter().zip(results) {
            match result {
                Ok(()) => {
                    self.observed.ownership.bound.insert(*ip);
                    outcome.written += 1;
                }
                Err(e) => {
                    outcome
                        .problems
                        .extend(problems_of(desired, &self.config.interface, *ip, &e))
                }
            }
        }
    }

    /// Counts and reports what the operations did, records which virtual servers we created,
    /// and starts cleaning the flows of the UDP real servers now gone.
    fn after_apply(
        &mut self,
        desired: &Desired,
        effects: &Effects,
        applied: &ApplyOutcome,
        outcome: &mut Outcome,
    ) {
        outcome.written += applied.done;
        outcome.failed_ops = applied.failures.len();
        let failures = applied.failures.iter().map(|f| op_problem(desired, f));
        outcome.problems.extend(failures);
        let state = &self.observed.applied;
        let created = &mut self.observed.ownership.created;
        for op in &effects.ops {
            match op {
                Op::AddVirtualServer(vs) if state.services.contains_key(&vs.key()) => {
                    created.insert(vs.key());
                }
                Op::DeleteVirtualServer(key) if !state.services.contains_key(key) => {
                    created.remove(key);
                }
                _ => {}
            }
        }
        let gone = |d: &&DeletedUdp| {
            state
                .services
                .get(&d.key)
                .is_none_or(|s| !s.real_servers.contains_key(&d.real_server))
        };
        let stale = effects
            .deleted_udp
            .iter()
            .filter(gone)
            .map(DeletedUdp::flows)
            .collect();
        let problems = self.handles.start_flow_cleanup(stale);
        outcome.problems.extend(problems);
    }

    /// Unbinds `ips`, but those a virtual server of ours still uses (a failed delete).
    fn unbind(&mut self, ips: &[IpAddr], outcome: &mut Outcome) {
        let (Some(link), Some(index)) = (&self.handles.link, self.observed.link_index) else {
            return;
        };
        let _span = debug_span!("unbind").entered();
        let applied = &self.observed.applied;
        let stale: Vec<IpAddr> = ips
            .iter()
            .filter(|ip| services_on(applied, **ip).next().is_none())
            .copied()
            .collect();
        let results = link.unbind_vips(index, self.config.vip_binding, &stale);
        for (&ip, result) in stale.iter().zip(results) {
            match result {
                Ok(()) => {
                    self.observed.ownership.bound.remove(&ip);
                    outcome.written += 1;
                }
                Err(e) => outcome.problems.push(SyncProblem::new(
                    format!("{} address {ip}", self.config.interface),
                    e.to_string(),
                )),
            }
        }
    }

    /// The companion ipsets and rules of `scope` (none when not managed).
    fn sync_companions(
        &mut self,
        desired: &Desired,
        scope: &CompanionScope,
        outcome: &mut Outcome,
    ) {
        let Some(companions) = &mut self.handles.companions else {
            return;
        };
        let _span = debug_span!("companions").entered();
        let restore_failures = companions.restore_failures();
        match companions.sync(desired, scope.touched()) {
            Ok(written) => outcome.written += written,
            Err(e) => outcome.problems.push(SyncProblem::new(
                "companion ipsets and iptables rules",
                e.to_string(),
            )),
        }
        outcome.restore_failures = companions
            .restore_failures()
            .saturating_sub(restore_failures);
    }
}

/// Sets the configured IPVS connection timeouts unless the kernel already has them (one read,
/// and one write only when something differs).
fn apply_timeouts(config: &IpvsConfig, ipvs: &dyn IpvsOps) -> Result<(), BackendError> {
    let current = ipvs.timeouts()?;
    if config.timeouts.satisfied_by(&current) {
        return Ok(());
    }
    ipvs.set_timeouts(&config.timeouts.to_ops())?;
    info!(timeouts = ?config.timeouts, "IPVS connection timeouts set");
    Ok(())
}

/// A failed operation as a problem of the port whose virtual server it is about.
fn op_problem(desired: &Desired, failure: &OpFailure) -> SyncProblem {
    match desired.origins.get(&failure.op.key()) {
        Some(o) => SyncProblem::of_port(
            o.port.clone(),
            format!("{} {}: {}", o.port, o.kind, failure.op),
            failure.to_string(),
        ),
        // A virtual server of no port any more (being deleted).
        None => SyncProblem::new(failure.op.to_string(), failure.to_string()),
    }
}

/// A VIP that could not be bound, as a problem of each service port with a virtual server on
/// it (each is unreachable there).
pub(super) fn problems_of(
    desired: &Desired,
    interface: &str,
    ip: IpAddr,
    e: &BackendError,
) -> Vec<SyncProblem> {
    let mut kinds: BTreeMap<&ServicePortName, Vec<String>> = BTreeMap::new();
    for (_, origin) in desired.origins.iter().filter(|(key, _)| key.addr == ip) {
        kinds
            .entry(&origin.port)
            .or_default()
            .push(origin.kind.to_string());
    }
    kinds
        .into_iter()
        .map(|(port, kinds)| {
            SyncProblem::of_port(
                port.clone(),
                format!("{port} {} {ip} on {interface}", kinds.join(", ")),
                e.to_string(),
            )
        })
        .collect()
}

/// Virtual servers that differ between what we applied and what the kernel holds (connection
/// counts aside).
fn count_drift(applied: &IpvsState, observed: &IpvsState) -> usize {
    let applied = &applied.services;
    let observed = &observed.services;
    let keys: BTreeSet<_> = applied.keys().chain(observed.keys()).collect();
    let strip = |s: &ServiceState| {
        (
            s.vs.clone(),
            s.real_servers
                .values()
                .map(|rs| rs.without_conns())
                .collect::<Vec<_>>(),
        )
    };
    keys.into_iter()
        .filter(|key| applied.get(key).map(strip) != observed.get(key).map(strip))
        .count()
}

/// Where a sync's time goes: the wall time of each phase, logged at debug level once per sync.
#[derive(Debug)]
pub(super) struct Phases {
    last: Instant,
    laps: Vec<(&'static str, std::time::Duration)>,
}

impl Phases {
    fn start() -> Self {
        Phases {
            last: Instant::now(),
            laps: Vec::with_capacity(8),
        }
    }

    /// Ends the phase `name` (started at the previous lap).
    fn lap(&mut self, name: &'static str) {
        let now = Instant::now();
        self.laps.push((name, now - self.last));
        self.last = now;
    }

    fn ms(&self, name: &str) -> f64 {
        self.laps
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, d)| d.as_secs_f64() * 1e3)
            .sum()
    }

    fn log(&self, full: bool, written: usize) {
        debug!(
            full,
            written,
            link_ms = self.ms("link"),
            observe_ms = self.ms("observe"),
            bind_ms = self.ms("bind"),
            plan_ms = self.ms("plan"),
            apply_ms = self.ms("apply"),
            unbind_ms = self.ms("unbind"),
            companions_ms = self.ms("companions"),
            "IPVS sync phases"
        );
    }
}
