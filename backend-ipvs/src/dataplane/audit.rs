//! [`DriftAudit`]: the drift check's rolling audit of our virtual servers.

use std::time::Instant;

use tracing::debug;

use crate::error::BackendError;
use crate::model::{RealServer, ServiceKey};
use crate::ops::IpvsOps;
use crate::plan::IpvsState;

/// The drift check's rolling audit: each check compares a slice of our virtual servers (their
/// attributes and real servers) with what the kernel holds, picking up after the last slice and
/// wrapping around. IPVS has no generation number to compare, and a real server changed by hand
/// (`ipvsadm -e`, `-d`, `-a`) is visible only by dumping that virtual server, so the slice is
/// sized to a time budget: the whole table each check while it fits (a small table: found
/// within one check period), a sweep over several checks when it does not (10,000 virtual
/// servers take a few periods), and never more than [`DriftAudit::BUDGET`] of work a check.
#[derive(Debug, Clone)]
pub(super) struct DriftAudit {
    /// The first key of the next slice; `None`: start from the first.
    pub(super) next: Option<ServiceKey>,
    /// How many virtual servers the next slice holds.
    pub(super) batch: usize,
}

impl DriftAudit {
    /// Work a check may spend on the audit: 40 ms every 2 s period is 2 % of one core.
    const BUDGET: std::time::Duration = std::time::Duration::from_millis(40);
    /// The first slice, before any measurement, and the floor (so a slow moment cannot stall
    /// the sweep).
    const FIRST_BATCH: usize = 256;
    pub(super) const MIN_BATCH: usize = 32;

    pub fn new() -> Self {
        DriftAudit {
            next: None,
            batch: Self::FIRST_BATCH,
        }
    }

    /// The keys of the next slice of `applied`, wrapping around, and where the one after starts.
    pub fn slice(&self, applied: &IpvsState) -> (Vec<ServiceKey>, Option<ServiceKey>) {
        let services = &applied.services;
        let batch = self.batch.min(services.len());
        let start = self
            .next
            .as_ref()
            .filter(|key| services.range(*key..).next().is_some());
        let from_start = match start {
            Some(key) => services.range(key..),
            None => services.range(..),
        };
        let mut keys: Vec<ServiceKey> = from_start.map(|(k, _)| *k).take(batch).collect();
        if keys.len() < batch {
            // Wrap around, stopping before the slice's own first key.
            let first = keys.first().cloned();
            keys.extend(
                services
                    .keys()
                    .take_while(|k| Some(*k) != first.as_ref())
                    .take(batch - keys.len())
                    .cloned(),
            );
        }
        let next = keys.last().and_then(|last| {
            services
                .range((std::ops::Bound::Excluded(last), std::ops::Bound::Unbounded))
                .next()
                .map(|(k, _)| *k)
        });
        (keys, next)
    }

    /// Sizes the next slice from what this one cost.
    pub fn measured(&mut self, audited: usize, took: std::time::Duration) {
        if audited == 0 {
            return;
        }
        // Keys that fit the budget at this slice's cost per key (integer nanoseconds: exact).
        let took = took.as_nanos().max(1);
        let fits = Self::BUDGET.as_nanos() * audited as u128 / took;
        let fits = usize::try_from(fits).unwrap_or(usize::MAX);
        self.batch = fits.max(Self::MIN_BATCH);
    }

    /// Compares the next slice of our virtual servers with the kernel's (attributes, and real
    /// servers without their connection counts), and moves the audit on.
    pub fn audit(&mut self, ipvs: &dyn IpvsOps, applied: &IpvsState) -> Result<bool, BackendError> {
        let started = Instant::now();
        let (keys, next) = self.slice(applied);
        let observed = ipvs.real_servers_of(&keys)?;
        let mut drifted = None;
        for (key, real_servers) in keys.iter().zip(observed) {
            let Some(applied) = applied.services.get(key) else {
                continue;
            };
            let mut seen: Vec<RealServer> = real_servers
                .into_iter()
                .map(|rs| rs.without_conns())
                .collect();
            seen.sort_by_key(RealServer::socket_addr);
            let expected = applied.real_servers.values().map(RealServer::without_conns);
            let same_real_servers =
                seen.len() == applied.real_servers.len() && seen.iter().cloned().eq(expected);
            let same_vs =
                same_real_servers && ipvs.virtual_server(key)?.as_ref() == Some(&applied.vs);
            if !same_vs {
                drifted = Some(*key);
                break;
            }
        }
        self.measured(keys.len(), started.elapsed());
        self.next = next;
        if let Some(key) = drifted {
            debug!(virtual_server = %key, "drift audit: the kernel's virtual server differs from ours");
            return Ok(true);
        }
        Ok(false)
    }
}
