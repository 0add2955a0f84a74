//! TCP: listeners, connection setup with failover, and the byte pump.
//!
//! Each accepted connection runs in its own task, detached from the listener: closing a listener
//! (its service port went away) or swapping its route never cuts a connection already open.
//! The pump propagates half-close (EOF on one side becomes a write shutdown on the other) and
//! closes a connection idle in both directions for its service port's idle timeout, else
//! [`crate::UserspaceConfig::idle_timeout`] ([`crate::plan::Route::idle_timeout`]).
//! A connection is proxied only within the connection limits ([`crate::limits`]); an `accept`
//! that fails for want of descriptors backs off instead of spinning.

mod relay;
#[cfg(target_os = "linux")]
mod splice;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use socket2::{Domain, SockRef, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};

use crate::balance::{current, now, Balancer, Context, RouteSlot};
use crate::config::UserspaceConfig;
use crate::limits::{is_local_resource_error, AcceptBackoff, Permit, Refusal};
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
    let mut backoff = AcceptBackoff::default();
    loop {
        let (client, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                accept_failed(&error, &slot, &mut backoff).await;
                continue;
            }
        };
        let failures = backoff.succeeded();
        let balancer = current(&slot);
        if failures > 0 {
            info!(listener = %balancer.key, failures, "accepting again after failed accepts");
        }
        balancer.metrics.accepted.inc();
        if !balancer.route.allows_source(peer.ip()) {
            balancer.metrics.dropped.inc();
            debug!(%peer, listener = %balancer.key, "source outside load-balancer ranges");
            continue;
        }
        match balancer.target_for(peer.ip(), &ctx) {
            RouteTarget::Endpoints(_) => match ctx.limits.admit_tcp(&balancer.port_gate) {
                Ok(permit) => {
                    tokio::spawn(proxy(client, peer, balancer, Arc::clone(&ctx), permit));
                }
                Err(refusal) => {
                    let counter = match refusal {
                        Refusal::ServicePort => &balancer.metrics.port_limit,
                        Refusal::Global => &balancer.metrics.global_limit,
                    };
                    counter.inc();
                    debug!(%peer, listener = %balancer.key, ?refusal, "connection limit reached; reset");
                    reset(&client);
                }
            },
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

/// A failed accept: the client gave up before we accepted (go on at once), or descriptors,
/// buffers or memory ran out, or anything else that may last (back off, doubling, and log the
/// burst once).
async fn accept_failed(error: &io::Error, slot: &RouteSlot, backoff: &mut AcceptBackoff) {
    use io::ErrorKind::{ConnectionAborted, ConnectionReset, Interrupted};
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionReset | Interrupted
    ) {
        debug!(%error, "accept failed; the client left");
        return;
    }
    let balancer = current(slot);
    balancer.metrics.accept_errors.inc();
    let after = backoff.failed();
    if after.is_first {
        warn!(%error, listener = %balancer.key, "accept failed; backing off until it succeeds");
    }
    tokio::time::sleep(after.wait).await;
}

/// Closes `stream` with a RST (SO_LINGER 0) when it drops.
fn reset(stream: &TcpStream) {
    if let Err(error) = SockRef::from(stream).set_linger(Some(Duration::ZERO)) {
        debug!(%error, "SO_LINGER 0 failed; closing normally");
    }
}

/// Connects to an endpoint (failing over) and pumps bytes until both sides are done. An endpoint
/// that accepts and then closes or resets before its first byte back (while the client is still
/// there) has failed as much as one that refuses the connect (HAProxy's `observe layer4`).
async fn proxy(
    client: TcpStream,
    peer: SocketAddr,
    balancer: Arc<Balancer>,
    ctx: Arc<Context>,
    _permit: Permit,
) {
    let Some((upstream, endpoint)) = connect(&balancer, peer, &ctx).await else {
        balancer.metrics.connect_failed.inc();
        reset(&client);
        return;
    };
    let _active = ctx.active.acquire(endpoint);
    balancer.metrics.active.inc();
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let first_reply = || ctx.health.record_success(endpoint);
    let pumped = pump(client, upstream, &balancer, &ctx.config, &first_reply).await;
    balancer.metrics.active.dec();
    if pumped.is_endpoint_failure() {
        let error = pumped.result.as_ref().err().map(ToString::to_string);
        record_failure(
            &balancer,
            &ctx,
            endpoint,
            "closed before its first byte back",
            error,
        );
    }
    match pumped.result {
        Ok(PumpEnd::Done) => debug!(%peer, %endpoint, "connection closed"),
        Ok(PumpEnd::Idle) => debug!(%peer, %endpoint, "connection idle, closed"),
        Err(error) => debug!(%peer, %endpoint, %error, "connection ended with an error"),
    }
}

/// Counts a failure of `endpoint` towards its ejection.
fn record_failure(
    balancer: &Balancer,
    ctx: &Context,
    endpoint: SocketAddr,
    what: &'static str,
    error: Option<String>,
) {
    if ctx.health.record_failure(endpoint, now()) {
        balancer.metrics.ejections.inc();
        info!(%endpoint, service_port = %balancer.route.service_port, what, error, "endpoint ejected after repeated failures");
    } else {
        debug!(%endpoint, what, error, "endpoint failed");
    }
}

/// Tries up to `connect_attempts` endpoints, each within `connect_timeout`. A connect that fails
/// for want of a local resource (descriptors, buffers, local ports) is not the endpoint's fault:
/// it counts against no endpoint, and no other is tried (it would fail the same way).
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
                // The failure streak ends with the first byte back (see `proxy`), not here: an
                // endpoint that accepts and resets at once must not look healthy.
                Ok(Ok(stream)) => return Some((stream, endpoint)),
                Ok(Err(error)) => error,
                Err(_) => io::Error::new(io::ErrorKind::TimedOut, "connect timed out"),
            };
        if is_local_resource_error(&error) {
            debug!(%endpoint, %error, "connect failed for want of a local resource; endpoint not blamed");
            return None;
        }
        record_failure(
            balancer,
            ctx,
            endpoint,
            "connect failed",
            Some(error.to_string()),
        );
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

/// How a pump ended, and whose doing it was.
#[derive(Debug)]
struct Pumped {
    result: io::Result<PumpEnd>,
    /// Bytes the endpoint sent back.
    replied: u64,
    /// How the endpoint's side ended, if it ended while the client's was still open.
    endpoint_ended_first: Option<EndpointEnd>,
    /// Whether the endpoint's side ended within `connect_timeout` of the connect.
    endpoint_ended_soon: bool,
}

/// How the endpoint's side of a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EndpointEnd {
    /// EOF: the endpoint closed.
    Closed,
    /// An error: the endpoint reset.
    Reset,
}

impl Pumped {
    /// The endpoint reset the connection before its first byte back, or closed it at once
    /// (within `connect_timeout`), with the client still there. A close after that is a
    /// server's own idle timeout (a client that connected and never asked), not a failure.
    fn is_endpoint_failure(&self) -> bool {
        self.replied == 0
            && match self.endpoint_ended_first {
                Some(EndpointEnd::Reset) => true,
                Some(EndpointEnd::Closed) => self.endpoint_ended_soon,
                None => false,
            }
    }
}

async fn pump(
    mut client: TcpStream,
    mut upstream: TcpStream,
    balancer: &Balancer,
    config: &UserspaceConfig,
    first_reply: &(dyn Fn() + Sync),
) -> Pumped {
    let activity = Activity::new();
    let (client_read, client_write) = client.split();
    let (upstream_read, upstream_write) = upstream.split();
    let one_ended = AtomicBool::new(false);
    let to_endpoint = Tally::new(&balancer.metrics.bytes_to_endpoint, None);
    let to_client = Tally::new(&balancer.metrics.bytes_to_client, Some(first_reply));
    // Which direction ended first: 0 none yet, 1 the client's, 2 the endpoint's (EOF), 3 the
    // endpoint's (error).
    let first_end = AtomicU8::new(0);
    let started = now();
    let endpoint_ended_soon = AtomicBool::new(false);
    let ended = |side| {
        let _ = first_end.compare_exchange(0, side, Ordering::Relaxed, Ordering::Relaxed);
    };
    let forward = async {
        let result = relay::one_way(
            client_read,
            upstream_write,
            &to_endpoint,
            &activity,
            config.splice,
            &one_ended,
        )
        .await;
        ended(1);
        result
    };
    let backward = async {
        let result = relay::one_way(
            upstream_read,
            client_write,
            &to_client,
            &activity,
            config.splice,
            &one_ended,
        )
        .await;
        endpoint_ended_soon.store(
            now().saturating_duration_since(started) < config.connect_timeout,
            Ordering::Relaxed,
        );
        ended(if result.is_ok() { 2 } else { 3 });
        result
    };
    let idle_timeout = balancer.route.idle_timeout(balancer.key.protocol, config);
    let result = tokio::select! {
        result = async { tokio::try_join!(forward, backward) } => result.map(|_| PumpEnd::Done),
        () = activity.idle(idle_timeout) => Ok(PumpEnd::Idle),
    };
    Pumped {
        result,
        replied: to_client.bytes(),
        endpoint_ended_first: match first_end.load(Ordering::Relaxed) {
            2 => Some(EndpointEnd::Closed),
            3 => Some(EndpointEnd::Reset),
            _ => None,
        },
        endpoint_ended_soon: endpoint_ended_soon.load(Ordering::Relaxed),
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

/// Counts one direction's bytes: into the service port's counter, and for this connection
/// (whose first byte back from the endpoint ends the endpoint's failure streak).
pub(crate) struct Tally<'a> {
    counter: &'a Counter,
    bytes: AtomicU64,
    on_first: Option<&'a (dyn Fn() + Sync)>,
}

impl std::fmt::Debug for Tally<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tally").field("bytes", &self.bytes).finish()
    }
}

impl<'a> Tally<'a> {
    /// Counts into `counter`; calls `on_first` when the first bytes pass.
    pub(crate) fn new(counter: &'a Counter, on_first: Option<&'a (dyn Fn() + Sync)>) -> Self {
        Self {
            counter,
            bytes: AtomicU64::new(0),
            on_first,
        }
    }

    /// Counts `n` bytes moved.
    pub(crate) fn add(&self, n: u64) {
        self.counter.inc_by(n);
        if self.bytes.fetch_add(n, Ordering::Relaxed) == 0 && n > 0 {
            if let Some(on_first) = self.on_first {
                on_first();
            }
        }
    }

    /// Bytes moved so far.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}
