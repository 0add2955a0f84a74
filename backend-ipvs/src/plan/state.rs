//! [`IpvsState`]: a picture of IPVS (desired, observed or applied), virtual server by virtual
//! server.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::Op;
use crate::model::{RealServer, ServiceKey, VirtualServer};

/// One virtual server and its real servers, by address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceState {
    /// The virtual server.
    pub vs: VirtualServer,
    /// Its real servers, by address and port.
    pub real_servers: BTreeMap<SocketAddr, RealServer>,
}

impl ServiceState {
    /// A virtual server with no real servers.
    pub fn new(vs: VirtualServer) -> Self {
        ServiceState {
            vs,
            real_servers: BTreeMap::new(),
        }
    }
}

/// A picture of IPVS: desired, observed (dumped) or applied (what our last sync left).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpvsState {
    /// Virtual servers by key.
    pub services: BTreeMap<ServiceKey, ServiceState>,
}

impl IpvsState {
    /// The same state without connection counts: what to compare with a desired state.
    pub fn without_conns(&self) -> IpvsState {
        let mut state = self.clone();
        for service in state.services.values_mut() {
            for rs in service.real_servers.values_mut() {
                rs.conns = None;
            }
        }
        state
    }

    /// Number of real servers over all virtual servers.
    pub fn real_server_count(&self) -> usize {
        self.services.values().map(|s| s.real_servers.len()).sum()
    }

    /// Records a successful operation, so the state stays what the kernel holds.
    pub fn record(&mut self, op: &Op) {
        match op {
            Op::AddVirtualServer(vs) => {
                self.services
                    .insert(vs.key(), ServiceState::new(vs.clone()));
            }
            Op::UpdateVirtualServer(vs) => {
                if let Some(service) = self.services.get_mut(&vs.key()) {
                    service.vs = vs.clone();
                }
            }
            Op::DeleteVirtualServer(key) => {
                self.services.remove(key);
            }
            Op::AddRealServer(key, rs) | Op::UpdateRealServer(key, rs) => {
                if let Some(service) = self.services.get_mut(key) {
                    let conns = service
                        .real_servers
                        .get(&rs.socket_addr())
                        .and_then(|old| old.conns);
                    service.real_servers.insert(
                        rs.socket_addr(),
                        RealServer {
                            conns,
                            ..rs.clone()
                        },
                    );
                }
            }
            Op::DeleteRealServer(key, rs) => {
                if let Some(service) = self.services.get_mut(key) {
                    service.real_servers.remove(&rs.socket_addr());
                }
            }
        }
    }
}
