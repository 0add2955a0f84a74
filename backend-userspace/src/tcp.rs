//! TCP: listeners, connection setup with failover, and the byte pump.
//!
//! Each accepted connection runs in its own task, detached from the listener: closing a listener
//! (its service port went away) or swapping its route never cuts a connection already open.
//! The pump propagates half-close (EOF on one side becomes a write shutdown on the other) and
//! closes a connection idle in both directions for [`crate::UserspaceConfig::idle_timeout`].

mod relay;
#[cfg(target_os = "linux")]
mod splice;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::{Domain, SockRef, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};

use crate::balance::{current, now, Balancer, Context, RouteSlot};
use crate::config::UserspaceConfig;
use crate::plan::RouteTarget;

/// Binds and listens on `addr` (SO_REUSEADDR, so that a port closed with connections in
/// TIME_WAIT can be bound again; optionally IP_FREEBIND).
pub(crate) fn bind(addr: SocketAddr, config: &UserspaceConfig) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    set_freebind(&socket, addr, config.freebind)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(i32::try_from(config.tcp_backlog).unwrap_or(i32::MAX))?;
    TcpListener::from_std(socket.into())
}

#[cfg(target_os = "linux")]
pub(crate) fn set_freebind(socket: &Socket, addr: SocketAddr, freebind: bool) -> io::Result<()> {
    if !freebind {
        return Ok(());
    }
    match addr {
        SocketAddr::V4(_) => socket.set_freebind_v4(true),
        SocketAddr::V6(_) => socket.set_freebind_v6(true),
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn set_freebind(_: &Socket, _: SocketAddr, _: bool) -> io::Result<()> {
    Ok(())
}

/// Accepts connections until the task is aborted.
pub(crate) async fn serve(listener: TcpListener, slot: RouteSlot, ctx: Arc<Context>) {
    loop {
        let (client, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // EMFILE and friends: back off briefly instead of spinning.
                warn!(%error, listener = %current(&slot).key, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let balancer = current(&slot);
        balancer.metrics.accepted.inc();
        if !balancer.route.allows_source(peer.ip()) {
            balancer.metrics.dropped.inc();
            debug!(%peer, listener = %balancer.key, "source outside load-balancer ranges");
            continue;
        }
        match &balancer.route.target {
            RouteTarget::Endpoints(_) => {
                tokio::spawn(proxy(client, peer, balancer, Arc::clone(&ctx)));
            }
            RouteTarget::Reject => {
                balancer.metrics.no_endpoints.inc();
                reset(&client);
            }
            // A userspace proxy cannot drop a SYN the kernel already answered; closing without
            // a byte is the nearest it gets.
            RouteTarget::Drop => {
                balancer.metrics.dropped.inc();
            }
        }
    }
}

/// Closes `stream` with a RST (SO_LINGER 0) when it drops.
fn reset(stream: &TcpStream) {
    if let Err(error) = SockRef::from(stream).set_linger(Some(Duration::ZERO)) {
        debug!(%error, "SO_LINGER 0 failed; closing normally");
    }
}

/// Connects to an endpoint (failing over) and pumps bytes until both sides are done.
async fn proxy(client: TcpStream, peer: SocketAddr, balancer: Arc<Balancer>, ctx: Arc<Context>) {
    let Some((upstream, endpoint)) = connect(&balancer, peer, &ctx).await else {
        balancer.metrics.connect_failed.inc();
        reset(&client);
        return;
    };
    let _active = ctx.active.acquire(endpoint);
    balancer.metrics.active.inc();
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let result = pump(client, upstream, &balancer, &ctx.config).await;
    balancer.metrics.active.dec();
    match result {
        Ok(PumpEnd::Done) => debug!(%peer, %endpoint, "connection closed"),
        Ok(PumpEnd::Idle) => debug!(%peer, %endpoint, "connection idle, closed"),
        Err(error) => debug!(%peer, %endpoint, %error, "connection ended with an error"),
    }
}

/// Tries up to `connect_attempts` endpoints, each within `connect_timeout`.
async fn connect(
    balancer: &Balancer,
    peer: SocketAddr,
    ctx: &Context,
) -> Option<(TcpStream, SocketAddr)> {
    let mut tried = Vec::new();
    for _ in 0..ctx.config.connect_attempts {
        let endpoint = balancer.choose(peer.ip(), &tried, ctx)?;
        tried.push(endpoint);
        let error =
            match tokio::time::timeout(ctx.config.connect_timeout, TcpStream::connect(endpoint))
                .await
            {
                Ok(Ok(stream)) => {
                    ctx.health.record_success(endpoint);
                    return Some((stream, endpoint));
                }
                Ok(Err(error)) => error,
                Err(_) => io::Error::new(io::ErrorKind::TimedOut, "connect timed out"),
            };
        if ctx.health.record_failure(endpoint, now()) {
            balancer.metrics.ejections.inc();
            info!(%endpoint, service_port = %balancer.route.service_port, %error, "endpoint ejected after repeated connect failures");
        } else {
            debug!(%endpoint, %error, "connect failed, trying the next endpoint");
        }
    }
    None
}

/// How a pump ended without error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PumpEnd {
    /// Both directions reached EOF.
    Done,
    /// No byte moved for the idle timeout.
    Idle,
}

async fn pump(
    mut client: TcpStream,
    mut upstream: TcpStream,
    balancer: &Balancer,
    config: &UserspaceConfig,
) -> io::Result<PumpEnd> {
    let activity = Activity::new();
    let (client_read, client_write) = client.split();
    let (upstream_read, upstream_write) = upstream.split();
    let one_ended = AtomicBool::new(false);
    let forward = relay::one_way(
        client_read,
        upstream_write,
        &balancer.metrics.bytes_to_endpoint,
        &activity,
        config.splice,
        &one_ended,
    );
    let backward = relay::one_way(
        upstream_read,
        client_write,
        &balancer.metrics.bytes_to_client,
        &activity,
        config.splice,
        &one_ended,
    );
    tokio::select! {
        result = async { tokio::try_join!(forward, backward) } => result.map(|_| PumpEnd::Done),
        () = activity.idle(config.idle_timeout) => Ok(PumpEnd::Idle),
    }
}

/// When a connection last moved a byte.
#[derive(Debug)]
pub(crate) struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    pub(crate) fn new() -> Self {
        Self {
            start: now(),
            last_ms: AtomicU64::new(0),
        }
    }

    pub(crate) fn touch(&self) {
        let ms = u64::try_from(now().saturating_duration_since(self.start).as_millis())
            .unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// Completes once nothing happened for `timeout`.
    pub(crate) async fn idle(&self, timeout: Duration) {
        loop {
            let deadline = self.last() + timeout;
            let now = now();
            if now >= deadline {
                return;
            }
            tokio::time::sleep(deadline - now).await;
        }
    }
}
