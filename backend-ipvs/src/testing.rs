//! Test helpers: [`FakeIpvs`], an in-memory [`IpvsOps`] (kube-proxy's
//! `pkg/proxy/ipvs/util/testing/fake.go`) that answers with the kernel's errnos.

use std::{
    collections::BTreeMap,
    io,
    sync::{Mutex, MutexGuard},
    time::Duration,
};

use crate::{
    error::{errno, IpvsError, IpvsOp, IpvsTarget},
    model::{ConnCounts, RealServer, ServiceKey, VirtualServer},
    ops::{run_op, IpvsInfo, IpvsOps, Timeouts},
    plan::Op,
};

/// An in-memory IPVS table. It keeps real servers in insertion order (as the kernel lists
/// them) and reports the same errnos as `net/netfilter/ipvs/ip_vs_ctl.c`: `EEXIST` on a
/// duplicate, `ESRCH` for a missing virtual server, `ENOENT` for a missing real server.
///
/// [`IpvsOps::run_batch`] behaves like the kernel's handling of a batch: each operation in
/// turn, a failure does not stop the next. The fake counts batches ([`FakeIpvs::batch_sizes`])
/// so tests can assert how many round trips a sync would cost.
#[derive(Debug)]
pub struct FakeIpvs {
    state: Mutex<FakeState>,
}

#[derive(Debug)]
struct FakeState {
    services: BTreeMap<ServiceKey, (VirtualServer, Vec<RealServer>)>,
    timeouts: Timeouts,
    batches: Vec<usize>,
}

impl Default for FakeIpvs {
    fn default() -> Self {
        FakeIpvs {
            state: Mutex::new(FakeState {
                services: BTreeMap::new(),
                // The kernel's defaults (ip_vs_proto_tcp.c, ip_vs_proto_udp.c).
                timeouts: Timeouts {
                    tcp: Duration::from_secs(900),
                    tcp_fin: Duration::from_secs(120),
                    udp: Duration::from_secs(300),
                },
                batches: Vec::new(),
            }),
        }
    }
}

impl FakeIpvs {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, FakeState> {
        // A test that panicked while holding the lock left consistent data behind: every
        // mutation below is a single map operation.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The size of each [`IpvsOps::run_batch`] call so far, in order.
    pub fn batch_sizes(&self) -> Vec<usize> {
        self.state().batches.clone()
    }

    /// Sets the connection counts a later [`IpvsOps::real_servers`] reports, as traffic
    /// would; returns false if there is no such real server.
    pub fn set_conns(&self, key: &ServiceKey, rs: &RealServer, conns: ConnCounts) -> bool {
        let mut state = self.state();
        let Some((_, dests)) = state.services.get_mut(key) else {
            return false;
        };
        match dests
            .iter_mut()
            .find(|d| d.socket_addr() == rs.socket_addr())
        {
            Some(d) => {
                d.conns = Some(conns);
                true
            }
            None => false,
        }
    }
}

fn kernel_err(op: IpvsOp, target: IpvsTarget, code: i32) -> IpvsError {
    IpvsError::Kernel {
        op,
        target,
        source: io::Error::from_raw_os_error(code),
    }
}

impl IpvsOps for FakeIpvs {
    fn info(&self) -> Result<IpvsInfo, IpvsError> {
        Ok(IpvsInfo {
            version: (1, 2, 1),
            conn_tab_size: 4096,
        })
    }

    fn add_virtual_server(&self, vs: &VirtualServer) -> Result<(), IpvsError> {
        let key = vs.key();
        let mut state = self.state();
        if state.services.contains_key(&key) {
            return Err(kernel_err(
                IpvsOp::AddVirtualServer,
                IpvsTarget::Service(key),
                errno::EEXIST,
            ));
        }
        state.services.insert(key, (vs.clone(), Vec::new()));
        Ok(())
    }

    fn update_virtual_server(&self, vs: &VirtualServer) -> Result<(), IpvsError> {
        let key = vs.key();
        match self.state().services.get_mut(&key) {
            Some((current, _)) => {
                *current = vs.clone();
                Ok(())
            }
            None => Err(kernel_err(
                IpvsOp::UpdateVirtualServer,
                IpvsTarget::Service(key),
                errno::ESRCH,
            )),
        }
    }

    fn delete_virtual_server(&self, key: &ServiceKey) -> Result<(), IpvsError> {
        match self.state().services.remove(key) {
            Some(_) => Ok(()),
            None => Err(kernel_err(
                IpvsOp::DeleteVirtualServer,
                IpvsTarget::Service(*key),
                errno::ESRCH,
            )),
        }
    }

    fn virtual_servers(&self) -> Result<Vec<VirtualServer>, IpvsError> {
        Ok(self
            .state()
            .services
            .values()
            .map(|(vs, _)| vs.clone())
            .collect())
    }

    fn virtual_server(&self, key: &ServiceKey) -> Result<Option<VirtualServer>, IpvsError> {
        Ok(self.state().services.get(key).map(|(vs, _)| vs.clone()))
    }

    fn add_real_server(&self, key: &ServiceKey, rs: &RealServer) -> Result<(), IpvsError> {
        let op = IpvsOp::AddRealServer;
        let target = || IpvsTarget::Dest(*key, rs.socket_addr());
        let mut state = self.state();
        let Some((_, dests)) = state.services.get_mut(key) else {
            return Err(kernel_err(op, target(), errno::ESRCH));
        };
        if dests.iter().any(|d| d.socket_addr() == rs.socket_addr()) {
            return Err(kernel_err(op, target(), errno::EEXIST));
        }
        dests.push(RealServer {
            conns: Some(ConnCounts::default()),
            ..rs.clone()
        });
        Ok(())
    }

    fn update_real_server(&self, key: &ServiceKey, rs: &RealServer) -> Result<(), IpvsError> {
        let op = IpvsOp::UpdateRealServer;
        let target = || IpvsTarget::Dest(*key, rs.socket_addr());
        let mut state = self.state();
        let Some((_, dests)) = state.services.get_mut(key) else {
            return Err(kernel_err(op, target(), errno::ESRCH));
        };
        match dests
            .iter_mut()
            .find(|d| d.socket_addr() == rs.socket_addr())
        {
            Some(d) => {
                *d = RealServer {
                    conns: d.conns,
                    ..rs.clone()
                };
                Ok(())
            }
            None => Err(kernel_err(op, target(), errno::ENOENT)),
        }
    }

    fn delete_real_server(&self, key: &ServiceKey, rs: &RealServer) -> Result<(), IpvsError> {
        let op = IpvsOp::DeleteRealServer;
        let target = || IpvsTarget::Dest(*key, rs.socket_addr());
        let mut state = self.state();
        let Some((_, dests)) = state.services.get_mut(key) else {
            return Err(kernel_err(op, target(), errno::ESRCH));
        };
        let before = dests.len();
        dests.retain(|d| d.socket_addr() != rs.socket_addr());
        if dests.len() == before {
            return Err(kernel_err(op, target(), errno::ENOENT));
        }
        Ok(())
    }

    fn real_servers(&self, key: &ServiceKey) -> Result<Vec<RealServer>, IpvsError> {
        Ok(self
            .state()
            .services
            .get(key)
            .map(|(_, dests)| dests.clone())
            .unwrap_or_default())
    }

    fn timeouts(&self) -> Result<Timeouts, IpvsError> {
        Ok(self.state().timeouts)
    }

    fn set_timeouts(&self, timeouts: &Timeouts) -> Result<(), IpvsError> {
        let mut state = self.state();
        let current = &mut state.timeouts;
        for (current, new) in [
            (&mut current.tcp, timeouts.tcp),
            (&mut current.tcp_fin, timeouts.tcp_fin),
            (&mut current.udp, timeouts.udp),
        ] {
            if !new.is_zero() {
                *current = Duration::from_secs(new.as_secs());
            }
        }
        Ok(())
    }

    fn run_batch(&self, ops: &[Op]) -> Vec<Result<(), IpvsError>> {
        self.state().batches.push(ops.len());
        ops.iter().map(|op| run_op(self, op)).collect()
    }

    fn flush(&self) -> Result<(), IpvsError> {
        self.state().services.clear();
        Ok(())
    }
}
