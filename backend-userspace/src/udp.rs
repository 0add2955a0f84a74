//! UDP: one socket per listener and a flow table per listener.
//!
//! The first datagram from a client address opens a flow: an upstream socket connected to the
//! chosen endpoint. Later datagrams from that client reuse it, and replies read from it are sent
//! back from the listener's socket to that client, so each client gets its own replies. A flow
//! with no datagram either way for its service port's idle timeout, else
//! [`crate::UserspaceConfig::udp_idle_timeout`], is forgotten;
//! the table holds at most [`crate::UserspaceConfig::udp_max_flows`] flows, and all listeners
//! together at most [`crate::UserspaceConfig::udp_max_flows_total`]; datagrams that would open
//! more are dropped. A flow holds its upstream socket and its task, no buffer (see `replies`).
//! Route swaps leave existing flows alone.
//!
//! Flow tasks live in the listener task's `JoinSet`, so closing the listener ends them too (UDP
//! has no connection to drain; IPVS does the same).

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Weak};

use socket2::{Domain, Socket, Type};
use tokio::net::UdpSocket;
use tokio::task::JoinSet;
use tracing::debug;

#[cfg(target_os = "linux")]
mod pktinfo;

use crate::balance::{current, now, ActiveGuard, Balancer, Context, RouteSlot};
use crate::config::{ListenMode, UserspaceConfig};
use crate::limits::{is_local_resource_error, Permit};
use crate::plan::RouteTarget;
use crate::tcp::{set_freebind, Activity};

/// Binds `addr` (no SO_REUSEADDR: for UDP it would let two sockets share the port).
pub(crate) fn bind(addr: SocketAddr, config: &UserspaceConfig) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, None)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    set_freebind(&socket, addr, config.freebind)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

struct Flow {
    upstream: Arc<UdpSocket>,
    activity: Arc<Activity>,
    balancer: Arc<Balancer>,
    /// The flow's place within [`crate::UserspaceConfig::udp_max_flows_total`].
    _permit: Permit,
}

/// Relays datagrams until the task is aborted.
pub(crate) async fn serve(socket: UdpSocket, slot: RouteSlot, ctx: Arc<Context>) {
    let socket = Arc::new(socket);
    let with_pktinfo = ctx.config.mode == ListenMode::Capture && enable_pktinfo(&socket);
    let mut flows: HashMap<SocketAddr, Flow> = HashMap::new();
    let mut tasks: JoinSet<SocketAddr> = JoinSet::new();
    let mut buf = vec![0u8; ctx.config.udp_max_datagram_bytes];
    loop {
        tokio::select! {
            received = recv(&socket, &mut buf, with_pktinfo) => match received {
                Ok((len, client, local)) => {
                    let arrival = Arrival { client, local };
                    datagram(&buf[..len], arrival, &socket, &slot, &ctx, &mut flows, &mut tasks).await;
                }
                Err(error) => {
                    // Back off a little so that a persistent error cannot spin the task.
                    debug!(%error, "UDP receive failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            },
            Some(ended) = tasks.join_next() => {
                if let Ok(client) = ended {
                    if let Some(flow) = flows.remove(&client) {
                        flow.balancer.metrics.udp_flows.dec();
                    }
                    // Give back what a burst of flows grew the table to.
                    if flows.capacity() > 64 && flows.len() < flows.capacity() / 4 {
                        flows.shrink_to(flows.len() * 2);
                    }
                }
            }
        }
    }
}

/// Where a datagram came from and, in capture mode, the local address it arrived at.
#[derive(Debug, Clone, Copy)]
struct Arrival {
    client: SocketAddr,
    local: Option<Ipv4Addr>,
}

#[cfg(target_os = "linux")]
fn enable_pktinfo(socket: &UdpSocket) -> bool {
    match pktinfo::enable(socket) {
        Ok(()) => socket.local_addr().is_ok_and(|a| a.is_ipv4()),
        Err(error) => {
            tracing::warn!(%error, "IP_PKTINFO unavailable; captured UDP replies may not be recognised");
            false
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn enable_pktinfo(_: &UdpSocket) -> bool {
    false
}

async fn recv(
    socket: &UdpSocket,
    buf: &mut [u8],
    with_pktinfo: bool,
) -> io::Result<(usize, SocketAddr, Option<Ipv4Addr>)> {
    #[cfg(target_os = "linux")]
    if with_pktinfo {
        return pktinfo::recv(socket, buf).await;
    }
    let _ = with_pktinfo;
    let (len, from) = socket.recv_from(buf).await?;
    Ok((len, from, None))
}

async fn send_to(
    socket: &UdpSocket,
    data: &[u8],
    to: SocketAddr,
    source: Option<Ipv4Addr>,
) -> io::Result<usize> {
    #[cfg(target_os = "linux")]
    if let Some(source) = source {
        return pktinfo::send_from(socket, data, to, source).await;
    }
    let _ = source;
    socket.send_to(data, to).await
}

async fn datagram(
    data: &[u8],
    arrival: Arrival,
    socket: &Arc<UdpSocket>,
    slot: &RouteSlot,
    ctx: &Arc<Context>,
    flows: &mut HashMap<SocketAddr, Flow>,
    tasks: &mut JoinSet<SocketAddr>,
) {
    let client = arrival.client;
    if let Some(flow) = flows.get(&client) {
        flow.activity.touch();
        match flow.upstream.send(data).await {
            Ok(sent) => {
                flow.balancer.metrics.bytes_to_endpoint.inc_by(sent as u64);
            }
            Err(error) => debug!(%client, %error, "UDP send to endpoint failed"),
        }
        return;
    }
    let balancer = current(slot);
    if !balancer.route.allows_source(client.ip()) {
        balancer.metrics.dropped.inc();
        return;
    }
    match balancer.target_for(client.ip(), ctx) {
        RouteTarget::Endpoints(_) => {}
        // Userspace cannot send the ICMP port unreachable a kernel REJECT would; both discard.
        // (In capture mode the datagram never gets here: iptables rejects it.)
        RouteTarget::Reject => {
            balancer.metrics.no_endpoints.inc();
            return;
        }
        RouteTarget::Drop => {
            balancer.metrics.dropped.inc();
            return;
        }
    }
    if flows.len() >= ctx.config.udp_max_flows {
        balancer.metrics.flow_table_full.inc();
        return;
    }
    let Ok(permit) = ctx.limits.admit_udp() else {
        balancer.metrics.global_limit.inc();
        return;
    };
    let Some(endpoint) = balancer.choose(client.ip(), &[], ctx) else {
        balancer.metrics.no_endpoints.inc();
        return;
    };
    let upstream = match open_upstream(endpoint).await {
        Ok(upstream) => Arc::new(upstream),
        Err(error) => {
            debug!(%endpoint, %error, "cannot open a UDP flow");
            balancer.metrics.connect_failed.inc();
            return;
        }
    };
    balancer.metrics.accepted.inc();
    balancer.metrics.udp_flows.inc();
    let activity = Arc::new(Activity::new());
    activity.touch();
    match upstream.send(data).await {
        Ok(sent) => {
            balancer.metrics.bytes_to_endpoint.inc_by(sent as u64);
        }
        Err(error) => debug!(%endpoint, %error, "UDP send to endpoint failed"),
    };
    tasks.spawn(replies(
        client,
        endpoint,
        Arc::clone(&upstream),
        Arc::downgrade(socket),
        arrival.local,
        Arc::clone(&activity),
        Arc::clone(&balancer),
        Arc::clone(ctx),
        ctx.active.acquire(endpoint),
    ));
    flows.insert(
        client,
        Flow {
            upstream,
            activity,
            balancer,
            _permit: permit,
        },
    );
}

async fn open_upstream(endpoint: SocketAddr) -> io::Result<UdpSocket> {
    let any: IpAddr = match endpoint {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let upstream = UdpSocket::bind(SocketAddr::new(any, 0)).await?;
    upstream.connect(endpoint).await?;
    Ok(upstream)
}

/// Sends the endpoint's replies to `client` until the flow is idle; returns the client so the
/// listener can forget the flow.
///
/// A flow keeps no receive buffer of its own: a reply is read into the worker thread's buffer
/// and copied out at its own size only to be sent, so an idle flow costs its socket and this
/// task, not [`crate::UserspaceConfig::udp_max_datagram_bytes`].
#[allow(clippy::too_many_arguments)]
async fn replies(
    client: SocketAddr,
    endpoint: SocketAddr,
    upstream: Arc<UdpSocket>,
    listener: Weak<UdpSocket>,
    reply_source: Option<Ipv4Addr>,
    activity: Arc<Activity>,
    balancer: Arc<Balancer>,
    ctx: Arc<Context>,
    _active: ActiveGuard,
) -> SocketAddr {
    let max = ctx.config.udp_max_datagram_bytes;
    let idle_timeout = balancer
        .route
        .idle_timeout(balancer.key.protocol, &ctx.config);
    loop {
        let received = tokio::select! {
            ready = upstream.readable() => ready.and_then(|()| receive(&upstream, max)),
            () = activity.idle(idle_timeout) => return client,
        };
        match received {
            Ok(reply) => {
                activity.touch();
                let Some(listener) = listener.upgrade() else {
                    return client;
                };
                match send_to(&listener, &reply, client, reply_source).await {
                    Ok(sent) => {
                        balancer.metrics.bytes_to_client.inc_by(sent as u64);
                    }
                    Err(error) => debug!(%client, %error, "UDP reply to client failed"),
                }
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(error) => {
                // ECONNREFUSED: the endpoint answered with ICMP port unreachable. Our own
                // shortage of buffers or memory is not the endpoint's fault.
                if !is_local_resource_error(&error) && ctx.health.record_failure(endpoint, now()) {
                    balancer.metrics.ejections.inc();
                }
                debug!(%client, %endpoint, %error, "UDP flow ended by an error");
                return client;
            }
        }
    }
}

thread_local! {
    /// The reply buffer of this worker thread (see [`replies`]).
    static REPLY_BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Reads one datagram (of at most `max` bytes) without waiting; `WouldBlock` when none is there.
fn receive(upstream: &UdpSocket, max: usize) -> io::Result<Vec<u8>> {
    REPLY_BUFFER.with_borrow_mut(|buffer| {
        if buffer.len() < max {
            buffer.resize(max, 0);
        }
        let len = upstream.try_recv(&mut buffer[..max])?;
        Ok(buffer[..len].to_vec())
    })
}
