//! Apply: make the running listeners match a [`Plan`]. Closes first (freeing addresses), then
//! swaps the routes of listeners that stay, then binds new ones. A listener that cannot be bound
//! becomes a [`SyncProblem`] naming it and the OS error; the rest still applies, and the next
//! plan tries to open it again (it is not in the applied set, and its port is left with a
//! problem). After a sync, the metric series of service ports no longer in the table are
//! removed.
//!
//! Everything here follows the plan's [`Scope`]: a partial plan touches the affinity maps,
//! series and health state of its own service ports and endpoints only, so that applying it
//! costs what planning it did.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};

use proxy_core::dataplane::SyncProblem;
use proxy_core::table::{Protocol, ServicePortName, ServiceTable};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::balance::{lock, replace, Balancer, Context, RouteSlot};
use crate::capture::{self, Redirect};
use crate::config::{ListenMode, UserspaceConfig};
use crate::error::UserspaceError;
use crate::limits::PortGate;
use crate::metrics::Metrics;
use crate::pick::AffinityMap;
use crate::plan::{ListenerKey, Listeners, Plan, Route, RouteTarget, Scope};
use crate::{tcp, udp};

/// One open listener's socket: where it is bound and the task serving it.
#[derive(Debug)]
struct Socket {
    /// The address the socket is bound to: the service address, or in capture mode the capture
    /// address and the port the OS picked.
    bound: SocketAddr,
    slot: RouteSlot,
    task: JoinHandle<()>,
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The running listeners (their routes, the applied state plans compare with, and their
/// sockets, under the same keys), the affinity map of each service port with affinity (shared by
/// all its listeners, and kept across syncs while the port keeps affinity), the service ports
/// that have metric series, and what the next partial sync must plan again.
#[derive(Debug, Default)]
pub(crate) struct Live {
    routes: Listeners,
    sockets: BTreeMap<ListenerKey, Socket>,
    affinity: BTreeMap<ServicePortName, Arc<Mutex<AffinityMap>>>,
    /// The connection count of each (service port, protocol) with a listener, for its limit;
    /// shared by the port's listeners, forgotten with its metric series.
    port_gates: BTreeMap<(ServicePortName, Protocol), PortGate>,
    /// Every (service port, protocol) whose series [`Metrics::for_service_port`] has made.
    series: BTreeSet<(ServicePortName, Protocol)>,
    /// How many open listeners' routes send flows to each endpoint: the health state of an
    /// endpoint no route names is forgotten.
    endpoint_uses: HashMap<SocketAddr, usize>,
    /// The service ports the last sync reported problems for (see [`crate::plan::plan_partial`]).
    ports_with_problems: BTreeSet<ServicePortName>,
    /// Whether the capture chain holds exactly the open listeners' redirects (its last write
    /// succeeded), so that a partial sync may edit it rule by rule.
    is_capture_chain_current: bool,
    /// The iptables tools capture mode writes with, once their variant is detected (at the
    /// first capture write), so later syncs run no `iptables --version`.
    capture_tools: Option<iptables_runner::Iptables>,
}

/// What an apply did.
#[derive(Debug, Default)]
pub(crate) struct ApplyOutcome {
    /// Listeners opened, updated or closed.
    pub written: usize,
    /// Listeners that could not be opened.
    pub problems: Vec<SyncProblem>,
}

/// Capture rules to delete and append (capture mode, partial sync).
#[derive(Debug, Default)]
struct RedirectEdits {
    deleted: Vec<Redirect>,
    appended: Vec<Redirect>,
}

impl Live {
    /// The route of every listener applied: what plans compare with. Includes a listener whose
    /// task has ended (it cannot, short of a bug) until [`Live::forget_ended`] drops it.
    pub fn applied(&self) -> &Listeners {
        &self.routes
    }

    /// The routes of the listeners serving now (a listener whose task has ended is left out;
    /// one that rejects every client without a socket, in bind mode, is in).
    pub fn observe(&self) -> Listeners {
        self.routes
            .iter()
            .filter(|(key, route)| match self.sockets.get(key) {
                Some(socket) => !socket.task.is_finished(),
                None => rejects_everyone(route),
            })
            .map(|(key, route)| (*key, route.clone()))
            .collect()
    }

    /// Where each open listener's socket is bound.
    pub fn bound(&self) -> BTreeMap<ListenerKey, SocketAddr> {
        self.sockets
            .iter()
            .map(|(key, socket)| (*key, socket.bound))
            .collect()
    }

    /// How many listeners are open.
    pub fn len(&self) -> usize {
        self.sockets.len()
    }

    /// The service ports the last sync reported problems for.
    pub fn ports_with_problems(&self) -> &BTreeSet<ServicePortName> {
        &self.ports_with_problems
    }

    /// Records the problems of a sync: their service ports are planned again by the next
    /// partial sync.
    pub fn set_problems(&mut self, problems: &[SyncProblem]) {
        self.ports_with_problems = problems
            .iter()
            .filter_map(|problem| problem.service_port.clone())
            .collect();
    }

    /// Drops the listeners whose task has ended, so that the next full plan opens them again:
    /// drift repair, for full syncs (it walks every listener).
    pub fn forget_ended(&mut self, metrics: &Metrics) {
        let ended: Vec<ListenerKey> = self
            .sockets
            .iter()
            .filter(|(_, socket)| socket.task.is_finished())
            .map(|(key, _)| *key)
            .collect();
        for key in ended {
            warn!(listener = %key, "listener task ended; reopening it");
            self.sockets.remove(&key);
            self.remove_route(&key);
            metrics.listeners.dec();
        }
    }

    /// Applies `plan`: closes, swaps routes, binds, then (capture mode) writes the redirects.
    /// Touches only the listeners the plan names, and the affinity maps and endpoint health of
    /// its [`Scope`].
    pub async fn apply(
        &mut self,
        plan: &Plan,
        ctx: &Arc<Context>,
        metrics: &Metrics,
    ) -> ApplyOutcome {
        let mut outcome = ApplyOutcome::default();
        let mut edits = RedirectEdits::default();
        let mut unused = Vec::new();
        self.apply_affinity(plan);
        for key in &plan.close {
            let socket = self.sockets.remove(key);
            let route = self.remove_route(key);
            if let Some(route) = route {
                unused.extend(route_endpoints(&route));
                if let Some(socket) = &socket {
                    edits.deleted.push((*key, route, socket.bound));
                }
                outcome.written += 1;
            }
            if let Some(socket) = socket {
                close(socket).await;
                metrics.listeners.dec();
                info!(listener = %key, "listener closed");
            }
        }
        // Bind mode: listeners that get a socket again (their port has endpoints again).
        let mut reopen = Vec::new();
        for key in &plan.update {
            let Some(route) = plan.desired.get(key) else {
                continue;
            };
            let needs_socket = needs_socket(route, ctx.config.mode);
            match (self.sockets.contains_key(key), needs_socket) {
                (true, true) => {}
                (false, true) => {
                    reopen.push(*key);
                    continue;
                }
                (has_socket, false) => {
                    if has_socket {
                        if let Some(socket) = self.sockets.remove(key) {
                            close(socket).await;
                            metrics.listeners.dec();
                            info!(listener = %key, "listener closed: no endpoints, the kernel refuses");
                        }
                    }
                    self.series
                        .insert((route.service_port.clone(), key.protocol));
                    if let Some(old) = self.set_route(*key, route.clone()) {
                        unused.extend(route_endpoints(&old));
                    }
                    outcome.written += 1;
                    continue;
                }
            }
            let gate = self.port_gate(route, key.protocol);
            let balancer = balancer(*key, route, &self.affinity, gate, ctx, metrics);
            let Some(socket) = self.sockets.get(key) else {
                continue;
            };
            replace(&socket.slot, balancer);
            let bound = socket.bound;
            self.series
                .insert((route.service_port.clone(), key.protocol));
            if let Some(old) = self.set_route(*key, route.clone()) {
                unused.extend(route_endpoints(&old));
                // The rules follow the route's comment, verdict, source ranges and
                // short-circuit: a port whose endpoints go to zero and back edits its own
                // listeners' rules, and an update of endpoints alone edits none.
                let cidrs = &ctx.config.cluster_cidrs;
                if ctx.config.mode == ListenMode::Capture
                    && capture::ListenerRules::of(*key, &old, bound, cidrs)
                        != capture::ListenerRules::of(*key, route, bound, cidrs)
                {
                    edits.deleted.push((*key, old, bound));
                    edits.appended.push((*key, route.clone(), bound));
                }
            }
            outcome.written += 1;
        }
        let open_files = open_file_limit();
        let limit = ctx.config.listener_limit(open_files);
        let mut over_limit = 0usize;
        for key in plan.open.iter().chain(&reopen) {
            let Some(route) = plan.desired.get(key) else {
                continue;
            };
            if !needs_socket(route, ctx.config.mode) {
                // Bind mode, no endpoint: no socket, so that the kernel refuses the
                // connection (RST) or datagram (ICMP port unreachable) as kube-proxy's REJECT.
                self.series
                    .insert((route.service_port.clone(), key.protocol));
                if let Some(old) = self.set_route(*key, route.clone()) {
                    unused.extend(route_endpoints(&old));
                }
                outcome.written += 1;
                continue;
            }
            let gate = self.port_gate(route, key.protocol);
            let balancer = balancer(*key, route, &self.affinity, gate, ctx, metrics);
            self.series
                .insert((route.service_port.clone(), key.protocol));
            let opened = if self.sockets.len() >= limit {
                Err(UserspaceError::ListenerLimit {
                    listener: *key,
                    open: self.sockets.len(),
                })
            } else {
                open(*key, balancer, ctx)
            };
            match opened {
                Ok(socket) => {
                    edits.appended.push((*key, route.clone(), socket.bound));
                    if self.sockets.insert(*key, socket).is_none() {
                        metrics.listeners.inc();
                    }
                    if let Some(old) = self.set_route(*key, route.clone()) {
                        unused.extend(route_endpoints(&old));
                    }
                    outcome.written += 1;
                    info!(listener = %key, service_port = %route.service_port, "listener opened");
                }
                Err(error) => {
                    // Returned as a problem, which the sync loop logs: not logged here too. Over
                    // the limit, one line below says why for all of them.
                    if matches!(error, UserspaceError::ListenerLimit { .. }) {
                        over_limit += 1;
                    }
                    outcome.problems.push(SyncProblem::of_port(
                        route.service_port.clone(),
                        format!("{} {key}", route.service_port),
                        error.to_string(),
                    ));
                }
            }
        }
        ctx.limits
            .update(&ctx.config, open_files, self.sockets.len());
        if over_limit > 0 {
            warn!(
                not_opened = over_limit,
                open = self.sockets.len(),
                limit,
                "listeners not opened: the listener limit is reached (max_listeners, or the \
                 open-file limit less what connections need)"
            );
        }
        self.forget_unused_endpoints(&plan.scope, unused, ctx);
        if ctx.config.mode == ListenMode::Capture {
            self.apply_capture_rules(&plan.scope, edits, &ctx.config, &mut outcome)
                .await;
        }
        outcome
    }

    /// The connection count of a service port, made on first use.
    fn port_gate(&mut self, route: &Route, protocol: Protocol) -> PortGate {
        Arc::clone(
            self.port_gates
                .entry((route.service_port.clone(), protocol))
                .or_default(),
        )
    }

    /// Sets the route of `key`, counting the endpoints it uses; returns the route it replaced.
    fn set_route(&mut self, key: ListenerKey, route: Route) -> Option<Route> {
        for endpoint in route_endpoints(&route) {
            *self.endpoint_uses.entry(endpoint).or_default() += 1;
        }
        let old = self.routes.insert(key, route);
        if let Some(old) = &old {
            self.release_endpoints(old);
        }
        old
    }

    /// Removes the route of `key`; returns it.
    fn remove_route(&mut self, key: &ListenerKey) -> Option<Route> {
        let old = self.routes.remove(key);
        if let Some(old) = &old {
            self.release_endpoints(old);
        }
        old
    }

    fn release_endpoints(&mut self, route: &Route) {
        for endpoint in route_endpoints(route) {
            if let Some(uses) = self.endpoint_uses.get_mut(&endpoint) {
                *uses -= 1;
                if *uses == 0 {
                    self.endpoint_uses.remove(&endpoint);
                }
            }
        }
    }

    /// Forgets the health state of endpoints no route uses any more: those the partial plan's
    /// routes stopped using (`unused`), or for a full plan every one (which also drops state a
    /// flow recorded after its endpoint left).
    fn forget_unused_endpoints(&self, scope: &Scope, unused: Vec<SocketAddr>, ctx: &Context) {
        match scope {
            Scope::Table => ctx
                .health
                .retain(|endpoint| self.endpoint_uses.contains_key(&endpoint)),
            Scope::Ports(_) => ctx.health.forget(
                unused
                    .into_iter()
                    .filter(|endpoint| !self.endpoint_uses.contains_key(endpoint)),
            ),
        }
    }

    /// Brings the capture chain in line with the open listeners: rewritten whole for a full
    /// plan (this repairs an outside flush) or when the last write failed, edited rule by rule
    /// for a partial one (route updates within a service port change no rule).
    async fn apply_capture_rules(
        &mut self,
        scope: &Scope,
        edits: RedirectEdits,
        config: &UserspaceConfig,
        outcome: &mut ApplyOutcome,
    ) {
        let (chain, cidrs) = (config.capture_chain.as_str(), &config.cluster_cidrs);
        let result = if *scope == Scope::Table || !self.is_capture_chain_current {
            let redirects = self
                .sockets
                .iter()
                .filter_map(|(key, socket)| {
                    let route = self.routes.get(key)?;
                    Some((*key, (route.clone(), socket.bound)))
                })
                .collect();
            let input = capture::render_rules(chain, cidrs, &redirects);
            match self.capture_tools().await {
                Ok(tools) => capture::apply_rules_with(&tools, chain, &input).await,
                Err(error) => Err(error),
            }
        } else if let Some(input) =
            capture::render_edits(chain, cidrs, &edits.deleted, &edits.appended)
        {
            match self.capture_tools().await {
                Ok(tools) => capture::apply_edits_with(&tools, &input).await,
                Err(error) => Err(error),
            }
        } else {
            return;
        };
        self.is_capture_chain_current = result.is_ok();
        match result {
            Ok(()) => outcome.written += 1,
            // A problem, which the sync loop logs: not logged here too.
            Err(error) => {
                outcome.problems.push(SyncProblem::new(
                    format!("iptables nat chain {chain}"),
                    error.to_string(),
                ));
            }
        }
    }

    /// The capture tools, detecting their variant on first use (a failed detection is tried
    /// again at the next call).
    async fn capture_tools(&mut self) -> Result<iptables_runner::Iptables, UserspaceError> {
        if let Some(tools) = &self.capture_tools {
            return Ok(tools.clone());
        }
        let tools = capture::detect_tools().await?;
        self.capture_tools = Some(tools.clone());
        Ok(tools)
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
        let sockets = std::mem::take(&mut self.sockets);
        let count = sockets.len();
        for (_, socket) in sockets {
            close(socket).await;
            metrics.listeners.dec();
        }
        self.routes.clear();
        self.endpoint_uses.clear();
        self.affinity.clear();
        self.port_gates.clear();
        self.ports_with_problems.clear();
        self.is_capture_chain_current = false;
        if ctx.config.mode == ListenMode::Capture {
            let tools = self.capture_tools().await?;
            capture::cleanup_with(&tools, &ctx.config.capture_chain).await?;
        }
        Ok(count)
    }

    /// Removes the metric series of every service port `table` no longer has (or has with
    /// another protocol), so that no series outlives its service port: of every port with
    /// series ([`Scope::Table`]) or of the plan's ports only.
    pub fn remove_series_of_removed_ports(
        &mut self,
        table: &ServiceTable,
        scope: &Scope,
        metrics: &Metrics,
    ) {
        let is_in_table = |name: &ServicePortName, protocol: Protocol| {
            table
                .get(name)
                .is_some_and(|port| port.protocol == protocol)
        };
        let gone: Vec<(ServicePortName, Protocol)> = match scope {
            Scope::Table => self
                .series
                .iter()
                .filter(|(name, protocol)| !is_in_table(name, *protocol))
                .cloned()
                .collect(),
            Scope::Ports(names) => names
                .iter()
                .flat_map(|name| Protocol::ALL.map(|protocol| (name.clone(), protocol)))
                .filter(|(name, protocol)| !is_in_table(name, *protocol))
                .filter(|series| self.series.contains(series))
                .collect(),
        };
        for (name, protocol) in gone {
            metrics.remove_service_port(&name, protocol);
            self.port_gates.remove(&(name.clone(), protocol));
            self.series.remove(&(name, protocol));
        }
    }

    /// Keeps the affinity maps of ports that still have affinity (with their new timeout) and
    /// forgets the rest: of every port ([`Scope::Table`]) or of the plan's ports only.
    fn apply_affinity(&mut self, plan: &Plan) {
        let mut wanted: BTreeMap<&ServicePortName, std::time::Duration> = BTreeMap::new();
        for route in plan.desired.values() {
            if let Some(timeout) = route.affinity_timeout {
                if plan.scope.covers(&route.service_port) {
                    wanted.insert(&route.service_port, timeout);
                }
            }
        }
        match &plan.scope {
            Scope::Table => self.affinity.retain(|name, _| wanted.contains_key(name)),
            Scope::Ports(names) => {
                for name in names.iter().filter(|name| !wanted.contains_key(name)) {
                    self.affinity.remove(name);
                }
            }
        }
        for (name, timeout) in wanted {
            let map = self
                .affinity
                .entry(name.clone())
                .or_insert_with(|| Arc::new(Mutex::new(AffinityMap::new(timeout))));
            lock(map).set_timeout(timeout);
        }
    }
}

/// Whether a route refuses every new flow: no usable endpoint for any client.
fn rejects_everyone(route: &Route) -> bool {
    route.target == RouteTarget::Reject
        && matches!(route.short_circuit, None | Some(RouteTarget::Reject))
}

/// Whether a listener with `route` needs a socket. In bind mode, one that rejects everyone
/// has none: the kernel then refuses each connection with a RST and each datagram with ICMP
/// port unreachable, which is kube-proxy's REJECT; a socket would have to accept first. In
/// capture mode the capture chain rejects before any socket sees the flow, and the socket stays
/// bound so that the listener keeps its capture port.
fn needs_socket(route: &Route, mode: ListenMode) -> bool {
    mode == ListenMode::Capture || !rejects_everyone(route)
}

/// The endpoints a route sends new flows to.
fn route_endpoints(route: &Route) -> impl Iterator<Item = SocketAddr> + '_ {
    let backends = match &route.target {
        RouteTarget::Endpoints(backends) => backends.as_slice(),
        RouteTarget::Reject | RouteTarget::Drop => &[],
    };
    backends.iter().map(|backend| backend.addr)
}

fn balancer(
    key: ListenerKey,
    route: &Route,
    affinity: &BTreeMap<ServicePortName, Arc<Mutex<AffinityMap>>>,
    port_gate: PortGate,
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
        port_gate,
        &ctx.config,
    ))
}

fn open(
    key: ListenerKey,
    balancer: Arc<Balancer>,
    ctx: &Arc<Context>,
) -> Result<Socket, UserspaceError> {
    let bind_error = |source: std::io::Error| {
        // Binding the service address itself: say what to do when it is not local.
        if ctx.config.mode == ListenMode::Bind
            && source.kind() == std::io::ErrorKind::AddrNotAvailable
        {
            UserspaceError::AddressNotLocal {
                listener: key,
                error: source,
            }
        } else {
            UserspaceError::Bind {
                listener: key,
                error: source,
            }
        }
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
    Ok(Socket { bound, slot, task })
}

/// Stops the listener's task and waits until its socket is closed, so that the address can be
/// bound again at once. Connections it accepted run in their own tasks and go on.
async fn close(mut socket: Socket) {
    socket.task.abort();
    // Resolves once the task's future, and with it the socket, has been dropped.
    let _ = (&mut socket.task).await;
}

/// The process's soft open-file limit (`RLIMIT_NOFILE`); unlimited when it cannot be read.
fn open_file_limit() -> u64 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(u64::MAX, |(soft, _)| soft)
}
