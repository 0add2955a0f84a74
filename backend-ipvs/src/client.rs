//! [`NetlinkIpvs`]: [`IpvsOps`] over a generic-netlink socket.

use std::{net::SocketAddr, time::Duration};

use netlink_packet_core::DecodeError;
use netlink_transport::NetlinkError;
use tracing::{debug, trace};

use crate::{
    error::{IpvsError, IpvsOp, IpvsTarget},
    model::{ModelError, RealServer, ServiceKey, VirtualServer},
    netlink::{AddressFamily, DestAttr, IpvsAttr, IpvsCmd, IpvsMessage, IpvsSocket},
    ops::{IpvsInfo, IpvsOps, Timeouts},
    plan::Op,
};

/// The kernel's IPVS table, reached over generic netlink.
///
/// It works in the network namespace of the thread that called [`NetlinkIpvs::connect`]:
/// the socket stays in that namespace.
#[derive(Debug)]
pub struct NetlinkIpvs {
    socket: IpvsSocket,
    /// More sockets, for dumping the real servers of many virtual servers in parallel
    /// ([`IpvsOps::real_servers_of`]); may be empty.
    dumpers: Vec<IpvsSocket>,
}

/// Most threads [`IpvsOps::real_servers_of`] dumps on (the caller's included).
const DUMP_THREADS: usize = 4;
/// Fewer keys than this per thread are dumped on the caller's thread alone.
const KEYS_PER_THREAD: usize = 64;

impl NetlinkIpvs {
    /// Opens the socket and resolves the `IPVS` family.
    ///
    /// # Errors
    ///
    /// [`IpvsError::Unavailable`] when the kernel has no IPVS; [`IpvsError::Socket`] when
    /// no netlink socket can be opened.
    pub fn connect() -> Result<Self, IpvsError> {
        let socket = IpvsSocket::connect().map_err(|e| match e {
            // nlctrl refused the family lookup: no IPVS in this kernel.
            NetlinkError::Kernel { errno, .. } => IpvsError::Unavailable {
                source: errno.to_io(),
            },
            other => IpvsError::Socket {
                op: IpvsOp::Connect,
                target: IpvsTarget::Global,
                source: other.into_io(),
            },
        })?;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        // Opened here, so they are in this thread's network namespace like the first one.
        let dumpers: Vec<IpvsSocket> = (1..threads.min(DUMP_THREADS))
            .map_while(|_| IpvsSocket::connect_family(socket.family_id()).ok())
            .collect();
        debug!(
            family_id = socket.family_id(),
            dump_sockets = 1 + dumpers.len(),
            "resolved IPVS generic netlink family"
        );
        Ok(NetlinkIpvs { socket, dumpers })
    }

    fn call(
        &self,
        op: IpvsOp,
        target: impl FnOnce() -> IpvsTarget,
        msg: IpvsMessage,
        dump: bool,
    ) -> Result<Vec<IpvsMessage>, IpvsError> {
        call_on(&self.socket, op, target, msg, dump)
    }

    fn service_op(
        &self,
        op: IpvsOp,
        cmd: IpvsCmd,
        key: &ServiceKey,
        attrs: Vec<crate::netlink::ServiceAttr>,
    ) -> Result<(), IpvsError> {
        let msg = IpvsMessage::new(cmd, vec![IpvsAttr::Service(attrs)]);
        self.call(op, || IpvsTarget::Service(*key), msg, false)
            .map(drop)
    }

    fn dest_op(
        &self,
        op: IpvsOp,
        cmd: IpvsCmd,
        key: &ServiceKey,
        rs: SocketAddr,
        attrs: Vec<DestAttr>,
    ) -> Result<(), IpvsError> {
        let msg = IpvsMessage::new(
            cmd,
            vec![IpvsAttr::Service(key.to_attrs()), IpvsAttr::Dest(attrs)],
        );
        self.call(op, || IpvsTarget::Dest(*key, rs), msg, false)
            .map(drop)
    }
}

/// One request (or dump) on `socket`.
fn call_on(
    socket: &IpvsSocket,
    op: IpvsOp,
    target: impl FnOnce() -> IpvsTarget,
    msg: IpvsMessage,
    dump: bool,
) -> Result<Vec<IpvsMessage>, IpvsError> {
    let cmd = msg.cmd;
    trace!(%op, ?msg, dump, "IPVS request");
    let result = if dump {
        socket.dump(msg)
    } else {
        socket.request(msg)
    };
    result.map_err(|e| ipvs_error(op, target, cmd, e))
}

/// The real servers of `key`, dumped on `socket` (`IPVS_CMD_GET_DEST` takes one service).
fn dump_real_servers(socket: &IpvsSocket, key: &ServiceKey) -> Result<Vec<RealServer>, IpvsError> {
    let op = IpvsOp::GetRealServers;
    let msg = IpvsMessage::new(IpvsCmd::GetDest, vec![IpvsAttr::Service(key.to_attrs())]);
    let replies = call_on(socket, op, || IpvsTarget::Service(*key), msg, true)?;
    let mut servers = Vec::with_capacity(replies.len());
    for attr in replies.iter().flat_map(|m| &m.attrs) {
        let IpvsAttr::Dest(attrs) = attr else {
            continue;
        };
        let has_family = attrs.iter().any(|a| matches!(a, DestAttr::AddrFamily(_)));
        let rs = if has_family {
            RealServer::try_from(attrs.as_slice())
        } else {
            // Kernels before 4.3: the destination has the service's family.
            let mut with_family = vec![DestAttr::AddrFamily(AddressFamily::of(key.addr))];
            with_family.extend(attrs.iter().cloned());
            RealServer::try_from(with_family.as_slice())
        };
        servers.push(rs.map_err(model_err(op))?);
    }
    Ok(servers)
}

/// The error of request `op` about `target`, from the socket's.
fn ipvs_error(
    op: IpvsOp,
    target: impl FnOnce() -> IpvsTarget,
    cmd: IpvsCmd,
    e: NetlinkError,
) -> IpvsError {
    match e {
        NetlinkError::Kernel { errno, .. } => IpvsError::Kernel {
            op,
            target: target(),
            source: errno.to_io(),
        },
        NetlinkError::Malformed { source, .. } => IpvsError::Decode { cmd, source },
        // The kernel dropped part of a reply: what came cannot be trusted to be whole.
        e @ NetlinkError::Overrun { .. } => IpvsError::Decode {
            cmd,
            source: DecodeError::from(e.to_string()),
        },
        // A socket call, a lost ACK (ENOBUFS, outcome unknown), a timeout.
        other => IpvsError::Socket {
            op,
            target: target(),
            source: other.into_io(),
        },
    }
}

/// One state-changing request: what it is called in errors, and its message.
struct Request {
    op: IpvsOp,
    target: IpvsTarget,
    msg: IpvsMessage,
}

impl Request {
    /// The request that does `op`.
    fn of(op: &Op) -> Result<Self, IpvsError> {
        let service = |op: IpvsOp, cmd: IpvsCmd, key: ServiceKey, attrs| Request {
            op,
            target: IpvsTarget::Service(key),
            msg: IpvsMessage::new(cmd, vec![IpvsAttr::Service(attrs)]),
        };
        let dest = |op: IpvsOp, cmd: IpvsCmd, key: &ServiceKey, rs: &RealServer, attrs| Request {
            op,
            target: IpvsTarget::Dest(*key, rs.socket_addr()),
            msg: IpvsMessage::new(
                cmd,
                vec![IpvsAttr::Service(key.to_attrs()), IpvsAttr::Dest(attrs)],
            ),
        };
        Ok(match op {
            Op::AddVirtualServer(vs) => {
                let op = IpvsOp::AddVirtualServer;
                let attrs = vs.to_attrs().map_err(model_err(op))?;
                service(op, IpvsCmd::NewService, vs.key(), attrs)
            }
            Op::UpdateVirtualServer(vs) => {
                let op = IpvsOp::UpdateVirtualServer;
                let attrs = vs.to_attrs().map_err(model_err(op))?;
                service(op, IpvsCmd::SetService, vs.key(), attrs)
            }
            Op::DeleteVirtualServer(key) => service(
                IpvsOp::DeleteVirtualServer,
                IpvsCmd::DelService,
                *key,
                key.to_attrs(),
            ),
            Op::AddRealServer(key, rs) => dest(
                IpvsOp::AddRealServer,
                IpvsCmd::NewDest,
                key,
                rs,
                rs.to_attrs(),
            ),
            Op::UpdateRealServer(key, rs) => dest(
                IpvsOp::UpdateRealServer,
                IpvsCmd::SetDest,
                key,
                rs,
                rs.to_attrs(),
            ),
            Op::DeleteRealServer(key, rs) => dest(
                IpvsOp::DeleteRealServer,
                IpvsCmd::DelDest,
                key,
                rs,
                rs.key_attrs(),
            ),
        })
    }
}

fn model_err(op: IpvsOp) -> impl Fn(ModelError) -> IpvsError {
    move |source| IpvsError::Model { op, source }
}

impl IpvsOps for NetlinkIpvs {
    fn info(&self) -> Result<IpvsInfo, IpvsError> {
        let op = IpvsOp::GetInfo;
        let replies = self.call(
            op,
            || IpvsTarget::Global,
            IpvsMessage::new(IpvsCmd::GetInfo, vec![]),
            false,
        )?;
        let (mut version, mut size) = (None, None);
        for attr in replies.iter().flat_map(|m| &m.attrs) {
            match attr {
                IpvsAttr::InfoVersion(v) => version = Some(*v),
                IpvsAttr::InfoConnTabSize(v) => size = Some(*v),
                _ => {}
            }
        }
        match (version, size) {
            (Some(v), Some(conn_tab_size)) => Ok(IpvsInfo {
                // IP_VS_VERSION_CODE: 0x010201 is 1.2.1 (the header's NVERSION macro).
                version: ((v >> 16) as u8, (v >> 8) as u8, v as u8),
                conn_tab_size,
            }),
            _ => Err(IpvsError::Model {
                op,
                source: ModelError::MissingAttributes {
                    object: "info",
                    attrs: [
                        ("IPVS_INFO_ATTR_VERSION", version.is_none()),
                        ("IPVS_INFO_ATTR_CONN_TAB_SIZE", size.is_none()),
                    ]
                    .into_iter()
                    .filter_map(|(n, absent)| absent.then_some(n))
                    .collect(),
                },
            }),
        }
    }

    fn add_virtual_server(&self, vs: &VirtualServer) -> Result<(), IpvsError> {
        let op = IpvsOp::AddVirtualServer;
        let attrs = vs.to_attrs().map_err(model_err(op))?;
        self.service_op(op, IpvsCmd::NewService, &vs.key(), attrs)
    }

    fn update_virtual_server(&self, vs: &VirtualServer) -> Result<(), IpvsError> {
        let op = IpvsOp::UpdateVirtualServer;
        let attrs = vs.to_attrs().map_err(model_err(op))?;
        self.service_op(op, IpvsCmd::SetService, &vs.key(), attrs)
    }

    fn delete_virtual_server(&self, key: &ServiceKey) -> Result<(), IpvsError> {
        self.service_op(
            IpvsOp::DeleteVirtualServer,
            IpvsCmd::DelService,
            key,
            key.to_attrs(),
        )
    }

    fn virtual_servers(&self) -> Result<Vec<VirtualServer>, IpvsError> {
        let op = IpvsOp::GetVirtualServers;
        let replies = self.call(
            op,
            || IpvsTarget::Global,
            IpvsMessage::new(IpvsCmd::GetService, vec![]),
            true,
        )?;
        let mut servers = Vec::with_capacity(replies.len());
        for attr in replies.iter().flat_map(|m| &m.attrs) {
            let IpvsAttr::Service(attrs) = attr else {
                continue;
            };
            match VirtualServer::try_from(attrs.as_slice()) {
                Ok(vs) => servers.push(vs),
                Err(ModelError::FirewallMarkService(mark)) => {
                    debug!(mark, "skipping IPVS service named by firewall mark");
                }
                Err(source) => return Err(IpvsError::Model { op, source }),
            }
        }
        Ok(servers)
    }

    fn virtual_server(&self, key: &ServiceKey) -> Result<Option<VirtualServer>, IpvsError> {
        let op = IpvsOp::GetVirtualServer;
        let msg = IpvsMessage::new(IpvsCmd::GetService, vec![IpvsAttr::Service(key.to_attrs())]);
        let replies = match self.call(op, || IpvsTarget::Service(*key), msg, false) {
            Ok(replies) => replies,
            Err(e) if e.errno() == Some(crate::error::errno::ESRCH) => return Ok(None),
            Err(e) => return Err(e),
        };
        let attrs = replies.iter().flat_map(|m| &m.attrs).find_map(|a| match a {
            IpvsAttr::Service(attrs) => Some(attrs),
            _ => None,
        });
        match attrs {
            Some(attrs) => VirtualServer::try_from(attrs.as_slice())
                .map(Some)
                .map_err(model_err(op)),
            None => Err(IpvsError::Model {
                op,
                source: ModelError::MissingAttributes {
                    object: "reply",
                    attrs: vec!["IPVS_CMD_ATTR_SERVICE"],
                },
            }),
        }
    }

    fn add_real_server(&self, key: &ServiceKey, rs: &RealServer) -> Result<(), IpvsError> {
        self.dest_op(
            IpvsOp::AddRealServer,
            IpvsCmd::NewDest,
            key,
            rs.socket_addr(),
            rs.to_attrs(),
        )
    }

    fn update_real_server(&self, key: &ServiceKey, rs: &RealServer) -> Result<(), IpvsError> {
        self.dest_op(
            IpvsOp::UpdateRealServer,
            IpvsCmd::SetDest,
            key,
            rs.socket_addr(),
            rs.to_attrs(),
        )
    }

    fn delete_real_server(&self, key: &ServiceKey, rs: &RealServer) -> Result<(), IpvsError> {
        self.dest_op(
            IpvsOp::DeleteRealServer,
            IpvsCmd::DelDest,
            key,
            rs.socket_addr(),
            rs.key_attrs(),
        )
    }

    fn real_servers(&self, key: &ServiceKey) -> Result<Vec<RealServer>, IpvsError> {
        dump_real_servers(&self.socket, key)
    }

    fn real_servers_of(&self, keys: &[ServiceKey]) -> Result<Vec<Vec<RealServer>>, IpvsError> {
        // One dump per virtual server, and a socket runs one dump at a time (a second one
        // meets EBUSY until the first is read to its end): spread them over sockets.
        let sockets: Vec<&IpvsSocket> = std::iter::once(&self.socket)
            .chain(&self.dumpers)
            .take(keys.len().div_ceil(KEYS_PER_THREAD).max(1))
            .collect();
        let chunk = keys.len().div_ceil(sockets.len()).max(1);
        let dump_chunk = |socket: &IpvsSocket, keys: &[ServiceKey]| {
            keys.iter()
                .map(|key| dump_real_servers(socket, key))
                .collect::<Result<Vec<_>, _>>()
        };
        let mut chunks = keys.chunks(chunk).zip(&sockets);
        let Some((first_keys, first_socket)) = chunks.next() else {
            return Ok(Vec::new());
        };
        std::thread::scope(|scope| {
            let others: Vec<_> = chunks
                .map(|(keys, socket)| scope.spawn(move || dump_chunk(socket, keys)))
                .collect();
            let mut all = dump_chunk(first_socket, first_keys)?;
            for handle in others {
                let part = handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
                all.extend(part);
            }
            Ok(all)
        })
    }

    fn timeouts(&self) -> Result<Timeouts, IpvsError> {
        let replies = self.call(
            IpvsOp::GetTimeouts,
            || IpvsTarget::Global,
            IpvsMessage::new(IpvsCmd::GetConfig, vec![]),
            false,
        )?;
        let mut timeouts = Timeouts::default();
        for attr in replies.iter().flat_map(|m| &m.attrs) {
            match attr {
                IpvsAttr::TimeoutTcp(s) => timeouts.tcp = Duration::from_secs(u64::from(*s)),
                IpvsAttr::TimeoutTcpFin(s) => timeouts.tcp_fin = Duration::from_secs(u64::from(*s)),
                IpvsAttr::TimeoutUdp(s) => timeouts.udp = Duration::from_secs(u64::from(*s)),
                _ => {}
            }
        }
        Ok(timeouts)
    }

    fn set_timeouts(&self, timeouts: &Timeouts) -> Result<(), IpvsError> {
        let secs = |d: Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
        let msg = IpvsMessage::new(
            IpvsCmd::SetConfig,
            vec![
                IpvsAttr::TimeoutTcp(secs(timeouts.tcp)),
                IpvsAttr::TimeoutTcpFin(secs(timeouts.tcp_fin)),
                IpvsAttr::TimeoutUdp(secs(timeouts.udp)),
            ],
        );
        self.call(IpvsOp::SetTimeouts, || IpvsTarget::Global, msg, false)
            .map(drop)
    }

    fn run_batch(&self, ops: &[Op]) -> Vec<Result<(), IpvsError>> {
        let mut results: Vec<Result<(), IpvsError>> = Vec::with_capacity(ops.len());
        let mut sent = Vec::with_capacity(ops.len());
        let mut msgs = Vec::with_capacity(ops.len());
        for (index, op) in ops.iter().enumerate() {
            match Request::of(op) {
                Ok(request) => {
                    trace!(op = %request.op, msg = ?request.msg, "IPVS request (batched)");
                    sent.push((index, request.op, request.target, request.msg.cmd));
                    msgs.push(request.msg);
                    results.push(Ok(()));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        // One result per message, in order (IpvsSocket::batch).
        for ((index, op, target, cmd), result) in sent.into_iter().zip(self.socket.batch(msgs)) {
            if let (Err(e), Some(slot)) = (result, results.get_mut(index)) {
                *slot = Err(ipvs_error(op, || target, cmd, e));
            }
        }
        results
    }

    fn flush(&self) -> Result<(), IpvsError> {
        self.call(
            IpvsOp::Flush,
            || IpvsTarget::Global,
            IpvsMessage::new(IpvsCmd::Flush, vec![]),
            false,
        )
        .map(drop)
    }
}
