//! Apply: make the running listeners match a [`Plan`]. Closes first (freeing addresses), then
//! swaps the routes of listeners that stay, then binds new ones. A listener that cannot be bound
//! becomes a [`SyncProblem`] naming it and the OS error; the rest still applies, and the next
//! plan tries to open it again (it is not in the applied set). After a sync, the metric series
//! of service ports no longer in the table are removed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};

use proxy_core::dataplane::SyncProblem;
use proxy_core::table::{Protocol, ServicePortName, ServiceTable};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::balance::{lock, replace, Balancer, Context, RouteSlot};
use crate::capture;
use crate::config::ListenMode;
use crate::error::UserspaceError;
use crate::metrics::Metrics;
use crate::pick::AffinityMap;
use crate::plan::{ListenerKey, Listeners, Plan, Route, RouteTarget};
use crate::{tcp, udp};

/// One open listener: its route and the task serving it.
#[derive(Debug)]
struct LiveListener {
    route: Route,
    /// The address the socket is bound to: the service address, or in capture mode the capture
    /// address and the port the OS picked.
    bound: SocketAddr,
    slot: RouteSlot,
    task: JoinHandle<()>,
}

impl Drop for LiveListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The running listeners, the affinity map of each service port with affinity (shared by all
/// its listeners, and kept across syncs while the port keeps affinity), and the service ports
/// that have metric series.
#[derive(Debug, Default)]
pub(crate) struct Live {
    listeners: BTreeMap<ListenerKey, LiveListener>,
    affinity: BTreeMap<ServicePortName, Arc<Mutex<AffinityMap>>>,
    /// Every (service port, protocol) whose series [`Metrics::for_service_port`] has made.
    series: BTreeSet<(ServicePortName, Protocol)>,
}

/// What an apply did.
#[derive(Debug, Default)]
pub(crate) struct ApplyOutcome {
    /// Listeners opened, updated or closed.
    pub written: usize,
    /// Listeners that could not be opened.
    pub problems: Vec<SyncProblem>,
}

impl Live {
    /// The routes of the open listeners. A listener whose task has ended (it cannot, short of
    /// a bug) is left out, so that the next plan opens it again: drift repair.
    pub fn applied(&self) -> Listeners {
        self.listeners
            .iter()
            .filter(|(_, live)| !live.task.is_finished())
            .map(|(key, live)| (*key, live.route.clone()))
            .collect()
    }

    /// Where each open listener's socket is bound.
    pub fn bound(&self) -> BTreeMap<ListenerKey, SocketAddr> {
        self.listeners
            .iter()
            .map(|(key, live)| (*key, live.bound))
            .collect()
    }

    pub async fn apply(
        &mut self,
        plan: &Plan,
        ctx: &Arc<Context>,
        metrics: &Metrics,
    ) -> ApplyOutcome {
        let mut outcome = ApplyOutcome::default();
        self.plan_affinity(&plan.desired);
        ctx.health.retain(|endpoint| {
            plan.desired.values().any(|route| match &route.target {
                RouteTarget::Endpoints(backends) => backends.iter().any(|b| b.addr == endpoint),
                RouteTarget::Reject | RouteTarget::Drop => false,
            })
        });
        for key in &plan.close {
            if let Some(live) = self.listeners.remove(key) {
                close(live).await;
                metrics.listeners.dec();
                outcome.written += 1;
                info!(listener = %key, "listener closed");
            }
        }
        for key in &plan.update {
            let (Some(route), Some(live)) = (plan.desired.get(key), self.listeners.get_mut(key))
            else {
                continue;
            };
            let balancer = balancer(*key, route, &self.affinity, ctx, metrics);
            self.series
                .insert((route.service_port.clone(), key.protocol));
            replace(&live.slot, balancer);
            live.route = route.clone();
            outcome.written += 1;
        }
        for key in &plan.open {
            let Some(route) = plan.desired.get(key) else {
                continue;
            };
            let balancer = balancer(*key, route, &self.affinity, ctx, metrics);
            self.series
                .insert((route.service_port.clone(), key.protocol));
            match open(*key, balancer, ctx) {
                Ok((bound, slot, task)) => {
                    let replaced = self.listeners.insert(
                        *key,
                        LiveListener {
                            route: route.clone(),
                            bound,
                            slot,
                            task,
                        },
                    );
                    if replaced.is_none() {
                        metrics.listeners.inc();
                    }
                    outcome.written += 1;
                    info!(listener = %key, service_port = %route.service_port, "listener opened");
                }
                Err(error) => {
                    warn!(%error, "listener not opened");
                    outcome.problems.push(SyncProblem::of_port(
                        route.service_port.clone(),
                        format!("{} {key}", route.service_port),
                        error.to_string(),
                    ));
                }
            }
        }
        if ctx.config.mode == ListenMode::Capture {
            self.apply_capture_rules(&ctx.config.capture_chain, &mut outcome)
                .await;
        }
        outcome
    }

    /// Rewrites the capture chain for the open listeners (every sync: the chain is small, and
    /// this repairs an outside flush).
    async fn apply_capture_rules(&self, chain: &str, outcome: &mut ApplyOutcome) {
        let redirects = self
            .listeners
            .iter()
            .map(|(key, live)| (*key, (live.route.clone(), live.bound)))
            .collect();
        let input = capture::render_rules(chain, &redirects);
        match capture::apply_rules(chain, &input).await {
            Ok(()) => outcome.written += 1,
            Err(error) => {
                warn!(%error, "capture rules not applied");
                outcome.problems.push(SyncProblem::new(
                    format!("iptables nat chain {chain}"),
                    error.to_string(),
                ));
            }
        }
    }

    /// Closes every listener (and in capture mode removes our chain); returns how many
    /// listeners there were.
    ///
    /// # Errors
    /// The capture chain could not be removed; the listeners are closed anyway.
    pub async fn close_all(
        &mut self,
        ctx: &Context,
        metrics: &Metrics,
    ) -> Result<usize, UserspaceError> {
        let listeners = std::mem::take(&mut self.listeners);
        let count = listeners.len();
        for (_, live) in listeners {
            close(live).await;
            metrics.listeners.dec();
        }
        self.affinity.clear();
        if ctx.config.mode == ListenMode::Capture {
            capture::cleanup(&ctx.config.capture_chain).await?;
        }
        Ok(count)
    }

    /// Removes the metric series of every service port `table` no longer has (or has with
    /// another protocol), so that no series outlives its service port.
    pub fn remove_series_of_removed_ports(&mut self, table: &ServiceTable, metrics: &Metrics) {
        self.series.retain(|(name, protocol)| {
            let is_in_table = table
                .get(name)
                .is_some_and(|port| port.protocol == *protocol);
            if !is_in_table {
                metrics.remove_service_port(name, *protocol);
            }
            is_in_table
        });
    }

    /// Keeps the affinity maps of ports that still have affinity (with their new timeout) and
    /// forgets the rest.
    fn plan_affinity(&mut self, desired: &Listeners) {
        let mut wanted: BTreeMap<ServicePortName, std::time::Duration> = BTreeMap::new();
        for route in desired.values() {
            if let Some(timeout) = route.affinity_timeout {
                wanted.insert(route.service_port.clone(), timeout);
            }
        }
        self.affinity.retain(|name, _| wanted.contains_key(name));
        for (name, timeout) in wanted {
            let map = self
                .affinity
                .entry(name)
                .or_insert_with(|| Arc::new(Mutex::new(AffinityMap::new(timeout))));
            lock(map).set_timeout(timeout);
        }
    }
}

fn balancer(
    key: ListenerKey,
    route: &Route,
    affinity: &BTreeMap<ServicePortName, Arc<Mutex<AffinityMap>>>,
    ctx: &Context,
    metrics: &Metrics,
) -> Arc<Balancer> {
    let affinity = route
        .affinity_timeout
        .and_then(|_| affinity.get(&route.service_port).cloned());
    let port_metrics = metrics.for_service_port(&route.service_port, key.protocol);
    Arc::new(Balancer::new(
        key,
        route.clone(),
        affinity,
        port_metrics,
        &ctx.config,
    ))
}

fn open(
    key: ListenerKey,
    balancer: Arc<Balancer>,
    ctx: &Arc<Context>,
) -> Result<(SocketAddr, RouteSlot, JoinHandle<()>), UserspaceError> {
    let bind_error = |source| UserspaceError::Bind {
        listener: key,
        source,
    };
    let unsupported = |message: &str| {
        bind_error(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            message,
        ))
    };
    let addr = match ctx.config.mode {
        ListenMode::Bind => key.addr,
        ListenMode::Capture if key.addr.is_ipv6() => {
            return Err(unsupported(
                "capture mode supports IPv4 service addresses only",
            ))
        }
        ListenMode::Capture => SocketAddr::new(ctx.config.capture_address, 0),
    };
    let slot: RouteSlot = Arc::new(RwLock::new(balancer));
    let (bound, task) = match key.protocol {
        Protocol::Tcp => {
            let listener = tcp::bind(addr, &ctx.config).map_err(bind_error)?;
            let bound = listener.local_addr().map_err(bind_error)?;
            let task = tokio::spawn(tcp::serve(listener, Arc::clone(&slot), Arc::clone(ctx)));
            (bound, task)
        }
        Protocol::Udp => {
            let socket = udp::bind(addr, &ctx.config).map_err(bind_error)?;
            let bound = socket.local_addr().map_err(bind_error)?;
            let task = tokio::spawn(udp::serve(socket, Arc::clone(&slot), Arc::clone(ctx)));
            (bound, task)
        }
        Protocol::Sctp => {
            return Err(unsupported(
                "SCTP is not supported by the userspace backend",
            ))
        }
    };
    Ok((bound, slot, task))
}

/// Stops the listener's task and waits until its socket is closed, so that the address can be
/// bound again at once. Connections it accepted run in their own tasks and go on.
async fn close(mut live: LiveListener) {
    live.task.abort();
    // Resolves once the task's future, and with it the socket, has been dropped.
    let _ = (&mut live.task).await;
}
