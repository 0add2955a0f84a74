//! Applying a plan: the [`Op`]s through [`IpvsOps::run_batch`] (two batches: virtual servers,
//! then real servers), recording what succeeded in the applied state and reporting what failed.
//! Thin: its only logic is error mapping and not touching a virtual server we failed to create
//! (it may be someone else's).
//!
//! A failed operation does not stop the others: it is reported, and the next full sync (which
//! reads the kernel again) converges.
//!
//! The other effects of a sync ([`crate::plan::Effects`]) go through the handles here too:
//! [`LinkOps`] (the dummy interface and the namespace's sysctls) and [`CompanionOps`] (the
//! companion ipsets and rules), which the dataplane's tests fake.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use tracing::trace;

use crate::config::VipBinding;
use crate::error::{BackendError, IpvsError};
use crate::model::ServiceKey;
use crate::ops::IpvsOps;
use crate::plan::{Desired, IpvsState, Op, Touched};

/// The dummy interface that holds our VIPs, and the namespace-wide settings that go with it:
/// [`crate::link::RouteSocket`] and `/proc/sys` on the real kernel.
pub trait LinkOps: Send + fmt::Debug {
    /// The index of interface `name`, `None` if there is none.
    ///
    /// # Errors
    /// [`BackendError::Link`].
    fn link_index(&self, name: &str) -> Result<Option<u32>, BackendError>;

    /// Makes sure the dummy interface `name` exists and is up: its index, and whether it was
    /// created.
    ///
    /// # Errors
    /// [`BackendError::Link`].
    fn ensure_dummy(&self, name: &str) -> Result<(u32, bool), BackendError>;

    /// Deletes interface `name`; whether it existed.
    ///
    /// # Errors
    /// [`BackendError::Link`].
    fn delete_link(&self, name: &str) -> Result<bool, BackendError>;

    /// The VIPs bound to interface `index` the way `binding` binds them.
    ///
    /// # Errors
    /// [`BackendError::Link`].
    fn vips(&self, index: u32, binding: VipBinding) -> Result<Vec<IpAddr>, BackendError>;

    /// Binds `ips` to interface `index`: one result per address, in order.
    fn bind_vips(
        &self,
        index: u32,
        binding: VipBinding,
        ips: &[IpAddr],
    ) -> Vec<Result<(), BackendError>>;

    /// Unbinds `ips` from interface `index`: one result per address, in order.
    fn unbind_vips(
        &self,
        index: u32,
        binding: VipBinding,
        ips: &[IpAddr],
    ) -> Vec<Result<(), BackendError>>;

    /// Writes the namespace's IPVS sysctls, and the strict ARP ones if `strict_arp`. A failure
    /// is logged, not fatal.
    fn set_sysctls(&self, strict_arp: bool);
}

/// The companion ipsets and iptables rules ([`crate::companions::Companions`]).
pub trait CompanionOps: Send + fmt::Debug {
    /// Writes the companions of `desired`: all, or the entries `touched` names. Returns how
    /// many objects were written.
    ///
    /// # Errors
    /// What could not be written.
    fn sync(&mut self, desired: &Desired, touched: Option<&Touched>)
        -> Result<usize, BackendError>;

    /// How many restores have failed so far.
    fn restore_failures(&self) -> usize;

    /// Removes every companion of ours; how many objects went.
    ///
    /// # Errors
    /// The first failure.
    fn cleanup(&mut self) -> Result<usize, BackendError>;
}

/// One operation that failed.
#[derive(Debug)]
pub struct OpFailure {
    /// What was asked.
    pub op: Op,
    /// The error, naming the operation, the virtual or real server and the errno.
    pub error: IpvsError,
}

impl fmt::Display for OpFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.op, self.error)?;
        let mut source = std::error::Error::source(&self.error);
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

/// What an apply did.
#[derive(Debug, Default)]
pub struct ApplyOutcome {
    /// Operations the kernel accepted (deletes of what was already gone count).
    pub done: usize,
    /// Operations it refused, in plan order.
    pub failures: Vec<OpFailure>,
}

/// Runs `ops` against `ipvs` as two batches ([`IpvsOps::run_batch`]), recording each success
/// in `applied`. Blocking.
///
/// First every virtual-server operation, then the real-server operations of every virtual
/// server that exists: those of a virtual server we failed to create are not sent, since an
/// `EEXIST` means it is someone else's. The plan never has real-server operations on a virtual
/// server it deletes, so the two batches do what the plan's order would. Failures are reported
/// in plan order.
pub fn apply_ops(ipvs: &dyn IpvsOps, ops: &[Op], applied: &mut IpvsState) -> ApplyOutcome {
    let mut outcome = ApplyOutcome::default();
    let mut failures: Vec<(usize, OpFailure)> = Vec::new();
    let (services, dests): (Vec<Indexed<'_>>, Vec<Indexed<'_>>) = ops
        .iter()
        .enumerate()
        .partition(|(_, op)| is_service_op(op));

    // Virtual servers we could not create: their real-server operations are skipped.
    let mut not_created: BTreeSet<ServiceKey> = BTreeSet::new();
    run(
        ipvs,
        &services,
        applied,
        &mut outcome,
        &mut failures,
        |op| {
            if let Op::AddVirtualServer(vs) = op {
                not_created.insert(vs.key());
            }
        },
    );
    let dests: Vec<Indexed<'_>> = dests
        .into_iter()
        .filter(|(_, op)| !not_created.contains(&op.key()))
        .collect();
    run(ipvs, &dests, applied, &mut outcome, &mut failures, |_| {});

    failures.sort_by_key(|(index, _)| *index);
    outcome.failures = failures.into_iter().map(|(_, f)| f).collect();
    outcome
}

/// An operation and its index in the plan.
type Indexed<'a> = (usize, &'a Op);

fn is_service_op(op: &Op) -> bool {
    matches!(
        op,
        Op::AddVirtualServer(_) | Op::UpdateVirtualServer(_) | Op::DeleteVirtualServer(_)
    )
}

/// One batch: `ops` (with their index in the plan), results into `applied` and `outcome`;
/// `on_failure` sees each failed operation.
fn run(
    ipvs: &dyn IpvsOps,
    ops: &[Indexed<'_>],
    applied: &mut IpvsState,
    outcome: &mut ApplyOutcome,
    failures: &mut Vec<(usize, OpFailure)>,
    mut on_failure: impl FnMut(&Op),
) {
    if ops.is_empty() {
        return;
    }
    let batch: Vec<Op> = ops.iter().map(|(_, op)| (*op).clone()).collect();
    for op in &batch {
        trace!(%op, "IPVS op");
    }
    let results = ipvs.run_batch(&batch);
    debug_assert_eq!(results.len(), batch.len(), "one result per op");
    for (&(index, op), result) in ops.iter().zip(results) {
        let gone_already = matches!(op, Op::DeleteVirtualServer(_) | Op::DeleteRealServer(..));
        match result {
            Ok(()) => {
                applied.record(op);
                outcome.done += 1;
            }
            Err(e) if gone_already && e.is_not_found() => {
                applied.record(op);
                outcome.done += 1;
            }
            Err(error) => {
                on_failure(op);
                failures.push((
                    index,
                    OpFailure {
                        op: op.clone(),
                        error,
                    },
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use proxy_core::table::Protocol;

    use super::*;
    use crate::model::{RealServer, Scheduler, VirtualServer};
    use crate::plan::ServiceState;
    use crate::testing::FakeIpvs;

    fn vs(last: u8) -> VirtualServer {
        VirtualServer::new(
            IpAddr::from([198, 19, 0, last]),
            Protocol::Tcp,
            80,
            Scheduler::RoundRobin,
        )
    }

    fn rs(last: u8) -> RealServer {
        RealServer::new(IpAddr::from([198, 18, 1, last]), 8080, 1)
    }

    /// Adds of virtual server `last` with real servers `rss`, in plan order.
    fn adds(last: u8, rss: &[u8]) -> Vec<Op> {
        let mut ops = vec![Op::AddVirtualServer(vs(last))];
        ops.extend(
            rss.iter()
                .map(|&r| Op::AddRealServer(vs(last).key(), rs(r))),
        );
        ops
    }

    #[test]
    fn a_plan_is_two_batches_virtual_servers_then_real_servers() {
        let fake = FakeIpvs::new();
        let ops = [adds(1, &[1, 2]), adds(2, &[3, 4]), adds(3, &[5, 6])].concat();
        let mut applied = IpvsState::default();
        let outcome = apply_ops(&fake, &ops, &mut applied);
        assert!(outcome.failures.is_empty(), "{:?}", outcome.failures);
        assert_eq!(outcome.done, 9);
        assert_eq!(fake.batch_sizes(), vec![3, 6]);
        assert_eq!(applied.services.len(), 3);
        assert_eq!(applied.real_server_count(), 6);
        assert_eq!(fake.real_servers(&vs(2).key()).expect("dump").len(), 2);
    }

    #[test]
    fn real_servers_of_a_virtual_server_we_could_not_create_are_not_sent() {
        // Someone else's virtual server sits on 198.19.0.1:80.
        let fake = FakeIpvs::new();
        let foreign = VirtualServer {
            scheduler: Scheduler::Maglev,
            ..vs(1)
        };
        fake.add_virtual_server(&foreign).expect("foreign add");
        let ops = [adds(1, &[1, 2]), adds(2, &[3])].concat();
        let mut applied = IpvsState::default();
        let outcome = apply_ops(&fake, &ops, &mut applied);

        assert_eq!(
            fake.batch_sizes(),
            vec![2, 1],
            "only 198.19.0.2's real server"
        );
        assert_eq!(outcome.done, 2);
        assert_eq!(outcome.failures.len(), 1, "{:?}", outcome.failures);
        assert_eq!(outcome.failures[0].op, Op::AddVirtualServer(vs(1)));
        assert!(outcome.failures[0].error.is_exists());
        assert_eq!(fake.real_servers(&foreign.key()).expect("dump"), vec![]);
        assert_eq!(
            fake.virtual_server(&foreign.key()).expect("get"),
            Some(foreign),
            "untouched"
        );
        let mut want = ServiceState::new(vs(2));
        want.real_servers.insert(rs(3).socket_addr(), rs(3));
        assert_eq!(
            applied.without_conns().services.get(&vs(2).key()),
            Some(&want)
        );
        assert!(!applied.services.contains_key(&vs(1).key()));
    }

    #[test]
    fn failures_are_reported_in_plan_order_and_do_not_stop_the_rest() {
        let fake = FakeIpvs::new();
        let missing = vs(9).key();
        let ops = vec![
            Op::AddVirtualServer(vs(1)),
            Op::AddRealServer(missing, rs(1)), // ESRCH, second batch
            Op::UpdateVirtualServer(vs(9)),    // ESRCH, first batch
            Op::AddRealServer(vs(1).key(), rs(2)),
        ];
        let mut applied = IpvsState::default();
        let outcome = apply_ops(&fake, &ops, &mut applied);
        let failed: Vec<&Op> = outcome.failures.iter().map(|f| &f.op).collect();
        assert_eq!(failed, vec![&ops[1], &ops[2]]);
        assert_eq!(outcome.done, 2);
        assert_eq!(fake.real_servers(&vs(1).key()).expect("dump").len(), 1);
    }

    #[test]
    fn deletes_of_what_is_already_gone_count_as_done() {
        let fake = FakeIpvs::new();
        let ops = vec![
            Op::DeleteVirtualServer(vs(1).key()),
            Op::DeleteRealServer(vs(2).key(), rs(1)),
        ];
        let mut applied = IpvsState::default();
        applied.record(&Op::AddVirtualServer(vs(1)));
        let outcome = apply_ops(&fake, &ops, &mut applied);
        assert!(outcome.failures.is_empty(), "{:?}", outcome.failures);
        assert_eq!(outcome.done, 2);
        assert_eq!(applied, IpvsState::default());
    }

    #[test]
    fn an_empty_plan_sends_nothing() {
        let fake = FakeIpvs::new();
        let outcome = apply_ops(&fake, &[], &mut IpvsState::default());
        assert_eq!((outcome.done, outcome.failures.len()), (0, 0));
        assert_eq!(fake.batch_sizes(), Vec::<usize>::new());
    }
}
