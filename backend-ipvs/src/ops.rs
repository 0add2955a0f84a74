//! [`IpvsOps`]: the narrow interface over the kernel's IPVS table that the rest of the
//! backend uses (kube-proxy's `pkg/proxy/ipvs/util/ipvs.go` `Interface`). The real one is
//! [`crate::client::NetlinkIpvs`]; tests use `testing::FakeIpvs`.

use std::time::Duration;

use crate::{
    error::IpvsError,
    model::{RealServer, ServiceKey, VirtualServer},
    plan::Op,
};

/// General IPVS facts (`IPVS_CMD_GET_INFO`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpvsInfo {
    /// IPVS version as (major, minor, patch); 6.x kernels report 1.2.1.
    pub version: (u8, u8, u8),
    /// Size of the connection hash table.
    pub conn_tab_size: u32,
}

/// Connection timeouts (`IPVS_CMD_GET_CONFIG`/`SET_CONFIG`, `ipvsadm --set`), whole seconds.
/// When setting, a zero leaves that timeout unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timeouts {
    /// Established TCP connections.
    pub tcp: Duration,
    /// TCP connections after a FIN.
    pub tcp_fin: Duration,
    /// UDP flows.
    pub udp: Duration,
}

/// The IPVS operations the backend needs. Each call is one kernel request (a batch: as few
/// datagrams as fit) and blocks; call it from `tokio::task::spawn_blocking` in async code.
///
/// Errors carry the operation and the service or real server, with the kernel's errno:
/// [`IpvsError::is_exists`] for an add of something present, [`IpvsError::is_not_found`]
/// for an update or delete of something absent.
pub trait IpvsOps: Send + Sync + std::fmt::Debug {
    /// IPVS version and connection table size.
    ///
    /// # Errors
    ///
    /// A kernel or socket error.
    fn info(&self) -> Result<IpvsInfo, IpvsError>;

    /// Adds a virtual server.
    ///
    /// # Errors
    ///
    /// `EEXIST` if it exists; `ENOENT` if its scheduler module is missing.
    fn add_virtual_server(&self, vs: &VirtualServer) -> Result<(), IpvsError>;

    /// Changes scheduler, flags, persistence or netmask of an existing virtual server.
    ///
    /// # Errors
    ///
    /// `ESRCH` if it does not exist.
    fn update_virtual_server(&self, vs: &VirtualServer) -> Result<(), IpvsError>;

    /// Deletes a virtual server with its real servers.
    ///
    /// # Errors
    ///
    /// `ESRCH` if it does not exist.
    fn delete_virtual_server(&self, key: &ServiceKey) -> Result<(), IpvsError>;

    /// Every virtual server (services named by firewall mark are not ours and are skipped).
    ///
    /// # Errors
    ///
    /// A kernel, socket or decoding error.
    fn virtual_servers(&self) -> Result<Vec<VirtualServer>, IpvsError>;

    /// One virtual server (`IPVS_CMD_GET_SERVICE` without `NLM_F_DUMP`), `None` if absent.
    ///
    /// # Errors
    ///
    /// A kernel, socket or decoding error other than "no such service".
    fn virtual_server(&self, key: &ServiceKey) -> Result<Option<VirtualServer>, IpvsError>;

    /// Adds a real server to a virtual server.
    ///
    /// # Errors
    ///
    /// `ESRCH` if the virtual server does not exist, `EEXIST` if the real server does.
    fn add_real_server(&self, key: &ServiceKey, rs: &RealServer) -> Result<(), IpvsError>;

    /// Changes weight, forwarding or thresholds of a real server.
    ///
    /// # Errors
    ///
    /// `ESRCH` if the virtual server does not exist, `ENOENT` if the real server does not.
    fn update_real_server(&self, key: &ServiceKey, rs: &RealServer) -> Result<(), IpvsError>;

    /// Deletes a real server (only its address and port are used).
    ///
    /// # Errors
    ///
    /// `ESRCH` if the virtual server does not exist, `ENOENT` if the real server does not.
    fn delete_real_server(&self, key: &ServiceKey, rs: &RealServer) -> Result<(), IpvsError>;

    /// The real servers of a virtual server, with their connection counts. Like the kernel's
    /// dump, a virtual server that does not exist has none.
    ///
    /// # Errors
    ///
    /// A kernel, socket or decoding error.
    fn real_servers(&self, key: &ServiceKey) -> Result<Vec<RealServer>, IpvsError>;

    /// [`IpvsOps::real_servers`] of each of `keys`, in the same order. The default dumps them
    /// one by one; [`crate::NetlinkIpvs`] spreads the dumps over a few sockets and threads.
    ///
    /// # Errors
    ///
    /// The first failing dump.
    fn real_servers_of(&self, keys: &[ServiceKey]) -> Result<Vec<Vec<RealServer>>, IpvsError> {
        keys.iter().map(|key| self.real_servers(key)).collect()
    }

    /// The connection timeouts.
    ///
    /// # Errors
    ///
    /// A kernel or socket error.
    fn timeouts(&self) -> Result<Timeouts, IpvsError>;

    /// Sets the connection timeouts; zero fields are left unchanged.
    ///
    /// # Errors
    ///
    /// A kernel or socket error.
    fn set_timeouts(&self, timeouts: &Timeouts) -> Result<(), IpvsError>;

    /// Deletes every virtual server, ours or not. Only for tests and full cleanup.
    ///
    /// # Errors
    ///
    /// A kernel or socket error.
    fn flush(&self) -> Result<(), IpvsError>;

    /// Runs `ops` in order, each as its own method would ([`run_op`]), and returns one result
    /// per operation, in the same order. A failed operation does not stop the next ones, as
    /// in the kernel, which handles each request of a batch on its own.
    ///
    /// The default runs them one by one; [`crate::NetlinkIpvs`] sends many requests per
    /// datagram and reads their acknowledgements back by sequence number. Each error names its
    /// operation and object as the single methods' errors do. A request whose acknowledgement
    /// was lost is an error ([`IpvsError::Socket`]) even though the kernel may have done it:
    /// the next full sync reads the kernel again.
    fn run_batch(&self, ops: &[Op]) -> Vec<Result<(), IpvsError>> {
        ops.iter().map(|op| run_op(self, op)).collect()
    }
}

/// Runs one [`Op`] through the method that does it.
///
/// # Errors
///
/// The method's error.
pub fn run_op<I: IpvsOps + ?Sized>(ipvs: &I, op: &Op) -> Result<(), IpvsError> {
    match op {
        Op::AddVirtualServer(vs) => ipvs.add_virtual_server(vs),
        Op::UpdateVirtualServer(vs) => ipvs.update_virtual_server(vs),
        Op::DeleteVirtualServer(key) => ipvs.delete_virtual_server(key),
        Op::AddRealServer(key, rs) => ipvs.add_real_server(key, rs),
        Op::UpdateRealServer(key, rs) => ipvs.update_real_server(key, rs),
        Op::DeleteRealServer(key, rs) => ipvs.delete_real_server(key, rs),
    }
}
