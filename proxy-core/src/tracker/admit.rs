//! Admission: re-reading one service after a change, checking its ports (on their own, then
//! together), and putting each in the table, keeping its last good version, or leaving it out.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::{ChangeTracker, ServiceName, SkipReason, SkippedPort};
use crate::table::{PortMap, ServicePort, ServicePortName};
use crate::validate::{port_path, service_path, validate, warnings, FieldError};

impl ChangeTracker {
    pub(super) fn refresh_all(&mut self) {
        self.dirty = true;
        let mut names: BTreeSet<ServiceName> = self.services.keys().cloned().collect();
        names.extend(self.ports.keys().map(ServiceName::of));
        for name in names {
            self.refresh_one(&name);
        }
    }

    /// Re-reads one service, then every service that waited for what it let go, until none is
    /// left to wake. Each wake re-reads a service whose clash may be gone; a service is woken
    /// at most once per service re-read, so this ends.
    pub(super) fn refresh(&mut self, name: ServiceName) {
        self.dirty = true;
        let mut queue = vec![name];
        let mut budget = self.services.len() + 1;
        while let Some(name) = queue.pop() {
            let released = self.refresh_one(&name);
            if released {
                if let Some(waiters) = self.waiting_on.remove(&name) {
                    // Reverse order: the queue pops from the end, and waiters wake in name order.
                    queue.extend(waiters.into_iter().rev());
                }
            }
            budget = budget.saturating_sub(1);
            if budget == 0 {
                break;
            }
        }
    }

    /// Re-reads one service: builds its ports, checks them, and admits each one that passes.
    /// Returns whether the service let go of anything it held (so waiters may now pass).
    fn refresh_one(&mut self, name: &ServiceName) -> bool {
        let admitted = self.admitted_ports(name);
        let candidates = self.candidates(name);

        // The service's own checks (names, families, duplicates, clashes between its ports)
        // run over its candidate ports together; the cross-service clashes against the index,
        // without the service's own old claims.
        for port in &admitted {
            self.claims.release(port);
        }
        let mut verdicts: BTreeMap<ServicePortName, Verdict> = BTreeMap::new();
        let mut duplicates = Vec::new();
        let mut by_name: BTreeMap<ServicePortName, Arc<ServicePort>> = BTreeMap::new();
        for port in candidates {
            if by_name.contains_key(&port.name) {
                duplicates.push(port.name.clone());
            } else {
                by_name.insert(port.name.clone(), port);
            }
        }
        let own_errors = self.own_errors(name, &by_name, &duplicates);
        let mut blockers = BTreeSet::new();
        for (port_name, port) in &by_name {
            let errors = own_errors.get(port_name).cloned().unwrap_or_default();
            if !errors.is_empty() {
                verdicts.insert(
                    port_name.clone(),
                    Verdict::Skip(SkipReason::Invalid, errors),
                );
                continue;
            }
            let unsupported = self.capabilities.check_port(&self.backend, port);
            if !unsupported.is_empty() {
                verdicts.insert(
                    port_name.clone(),
                    Verdict::Skip(SkipReason::Unsupported, unsupported),
                );
                continue;
            }
            let (clashes, holders) = self.claims.clashes(port);
            if clashes.is_empty() {
                verdicts.insert(port_name.clone(), Verdict::Admit(Arc::clone(port)));
            } else {
                blockers.extend(holders);
                verdicts.insert(port_name.clone(), Verdict::Skip(SkipReason::Clash, clashes));
            }
        }
        let previous: BTreeMap<ServicePortName, Arc<ServicePort>> = admitted
            .iter()
            .map(|p| (p.name.clone(), Arc::clone(p)))
            .collect();
        let effective = self.settle(name, verdicts, &previous);

        // Apply: the table, the claims, the skipped ports, the waiters.
        let mut released = false;
        for (port_name, old) in &previous {
            match effective.ports.get(port_name) {
                Some(new) if Arc::ptr_eq(new, old) => {}
                _ => released = true,
            }
            if !effective.ports.contains_key(port_name) {
                self.endpoint_count -= old.endpoints.len();
                self.ports.remove(port_name);
            }
        }
        for (port_name, port) in &effective.ports {
            self.claims.claim(port);
            let old = previous.get(port_name);
            if old.is_some_and(|old| Arc::ptr_eq(old, port)) {
                continue;
            }
            if let Some(old) = old {
                self.endpoint_count -= old.endpoints.len();
            }
            self.endpoint_count += port.endpoints.len();
            self.ports.insert(port_name.clone(), Arc::clone(port));
            warn_of(port);
        }
        let stale: Vec<ServicePortName> = self
            .skipped
            .range(name.port("")..)
            .take_while(|(n, _)| n.namespace == name.namespace && n.name == name.name)
            .map(|(n, _)| n.clone())
            .collect();
        for port_name in stale {
            self.skipped.remove(&port_name);
        }
        for (port_name, skipped) in effective.skipped {
            self.skipped.insert(port_name, skipped);
        }
        if let Some(rejection) = self.rejected.get(name) {
            for port_name in &rejection.ports {
                self.skipped.insert(
                    port_name.clone(),
                    SkippedPort {
                        reason: SkipReason::Invalid,
                        problems: rejection.problems.clone(),
                        runs_previous: self.ports.contains_key(port_name),
                    },
                );
            }
        }
        for holder in blockers {
            self.waiting_on
                .entry(holder)
                .or_default()
                .insert(name.clone());
        }
        released
    }

    /// Decides each port: admitted as new, kept at its previous version, or left out. A new
    /// version that passed alone may still clash with a port of its own service kept at its
    /// previous version; then every changed port falls back to its previous version (or is left
    /// out), which is the last set of versions known to agree.
    fn settle(
        &self,
        name: &ServiceName,
        mut verdicts: BTreeMap<ServicePortName, Verdict>,
        previous: &BTreeMap<ServicePortName, Arc<ServicePort>>,
    ) -> Settled {
        let settled = Self::settle_once(&verdicts, previous);
        let mixed = settled
            .ports
            .keys()
            .any(|n| settled.skipped.contains_key(n));
        if !mixed {
            return settled;
        }
        let errors = self.own_errors(name, &settled.ports, &[]);
        if errors.is_empty() {
            return settled;
        }
        let all: Vec<FieldError> = errors.values().flatten().cloned().collect();
        for (port_name, verdict) in &mut verdicts {
            let Verdict::Admit(port) = verdict else {
                continue;
            };
            if previous.get(port_name).is_some_and(|old| **old == **port) {
                continue;
            }
            let problems = errors
                .get(port_name)
                .cloned()
                .unwrap_or_else(|| all.clone());
            *verdict = Verdict::Skip(SkipReason::Invalid, problems);
        }
        Self::settle_once(&verdicts, previous)
    }

    fn settle_once(
        verdicts: &BTreeMap<ServicePortName, Verdict>,
        previous: &BTreeMap<ServicePortName, Arc<ServicePort>>,
    ) -> Settled {
        let mut settled = Settled::default();
        for (port_name, verdict) in verdicts {
            match verdict {
                Verdict::Admit(port) => {
                    // Keep the old `Arc` when nothing changed, so the diff skips it.
                    let port = match previous.get(port_name) {
                        Some(old) if **old == **port => Arc::clone(old),
                        _ => Arc::clone(port),
                    };
                    settled.ports.insert(port_name.clone(), port);
                }
                Verdict::Skip(reason, problems) => {
                    let old = previous.get(port_name);
                    if let Some(old) = old {
                        settled.ports.insert(port_name.clone(), Arc::clone(old));
                    }
                    settled.skipped.insert(
                        port_name.clone(),
                        SkippedPort {
                            reason: *reason,
                            problems: problems.clone(),
                            runs_previous: old.is_some(),
                        },
                    );
                }
            }
        }
        settled
    }

    /// The service's own problems, by port: validation of its ports together. A problem of
    /// the whole service (its name) is every port's.
    fn own_errors(
        &self,
        name: &ServiceName,
        ports: &BTreeMap<ServicePortName, Arc<ServicePort>>,
        duplicates: &[ServicePortName],
    ) -> BTreeMap<ServicePortName, Vec<FieldError>> {
        let map: PortMap = ports
            .iter()
            .map(|(n, p)| (n.clone(), Arc::clone(p)))
            .collect();
        let Err(invalid) = validate(self.node.as_deref(), &map, duplicates) else {
            return BTreeMap::new();
        };
        let mut by_port: BTreeMap<ServicePortName, Vec<FieldError>> = BTreeMap::new();
        let service_wide = service_path(&name.port(""));
        for error in invalid.errors {
            let owner = ports.keys().find(|n| {
                let path = port_path(n);
                error.path == path || error.path.starts_with(&format!("{path}."))
            });
            match owner {
                Some(owner) => by_port.entry(owner.clone()).or_default().push(error),
                None if error.path.starts_with(&service_wide) => {
                    for port_name in ports.keys() {
                        by_port
                            .entry(port_name.clone())
                            .or_default()
                            .push(error.clone());
                    }
                }
                None => {}
            }
        }
        by_port
    }

    /// The service's ports in the table now.
    pub(super) fn admitted_ports(&self, name: &ServiceName) -> Vec<Arc<ServicePort>> {
        self.ports
            .range(name.port("")..)
            .take_while(|(n, _)| n.namespace == name.namespace && n.name == name.name)
            .map(|(_, p)| Arc::clone(p))
            .collect()
    }
}

/// Logs what is valid in a port just admitted (new or changed) but probably not meant, such as
/// every endpoint of weight 0: `warn`, the port runs, degraded.
fn warn_of(port: &ServicePort) {
    for warning in warnings(port) {
        tracing::warn!(
            service_port = %port.name,
            field = %warning.path,
            warning = %warning.message,
            "service port admitted with a warning"
        );
    }
}

/// One candidate port's verdict before the service's ports are settled together.
#[derive(Debug)]
enum Verdict {
    Admit(Arc<ServicePort>),
    Skip(SkipReason, Vec<FieldError>),
}

/// A service's ports after settling: what runs, and what is skipped.
#[derive(Debug, Default)]
struct Settled {
    ports: BTreeMap<ServicePortName, Arc<ServicePort>>,
    skipped: BTreeMap<ServicePortName, SkippedPort>,
}
