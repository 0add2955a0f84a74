//! Applying a plan: each [`Op`] through [`IpvsOps`], recording what succeeded in the applied
//! state and reporting what failed. Thin: its only logic is error mapping and not touching a
//! virtual server we failed to create (it may be someone else's).
//!
//! A failed operation does not stop the others: it is reported, and the next full sync (which
//! reads the kernel again) converges.

use std::collections::BTreeSet;
use std::fmt;

use tracing::trace;

use crate::error::IpvsError;
use crate::model::ServiceKey;
use crate::ops::IpvsOps;
use crate::plan::{IpvsState, Op};

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

/// Runs `ops` in order against `ipvs`, recording each success in `applied`. Blocking.
pub fn apply_ops(ipvs: &dyn IpvsOps, ops: &[Op], applied: &mut IpvsState) -> ApplyOutcome {
    let mut outcome = ApplyOutcome::default();
    // Virtual servers we could not create: their real-server operations are skipped, since an
    // EEXIST means the virtual server is someone else's.
    let mut not_created: BTreeSet<ServiceKey> = BTreeSet::new();
    for op in ops {
        if not_created.contains(&op.key()) {
            continue;
        }
        trace!(%op, "IPVS op");
        let result = match op {
            Op::AddVirtualServer(vs) => ipvs.add_virtual_server(vs),
            Op::UpdateVirtualServer(vs) => ipvs.update_virtual_server(vs),
            Op::DeleteVirtualServer(key) => ipvs.delete_virtual_server(key),
            Op::AddRealServer(key, rs) => ipvs.add_real_server(key, rs),
            Op::UpdateRealServer(key, rs) => ipvs.update_real_server(key, rs),
            Op::DeleteRealServer(key, rs) => ipvs.delete_real_server(key, rs),
        };
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
                if let Op::AddVirtualServer(vs) = op {
                    not_created.insert(vs.key());
                }
                outcome.failures.push(OpFailure {
                    op: op.clone(),
                    error,
                });
            }
        }
    }
    outcome
}
