//! The runtime side of a route: a [`Balancer`] per listener (route + scheduler state + the
//! service port's affinity map), and the dataplane-wide endpoint state the schedulers read:
//! active connections per endpoint ([`ActiveCounts`]) and ejection after repeated connect
//! failures ([`Health`]). A sync swaps a listener's `Balancer` as a whole ([`RouteSlot`]); flows
//! already open never look at it again, which is what lets removed endpoints drain.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use crate::config::UserspaceConfig;
use crate::limits::{Limits, PortGate};
use crate::metrics::PortMetrics;
use crate::pick::{mix64, AffinityMap, PickInput, Picker, Slot};
use crate::plan::{ListenerKey, Route, RouteTarget};

impl Context {
    /// Whether a new flow from `client` is short-circuited to every endpoint on a route that
    /// has a short-circuit ([`Route::short_circuit`]): the client is a pod
    /// ([`UserspaceConfig::cluster_cidrs`]) or the node itself.
    pub fn is_pod_or_node(&self, client: IpAddr) -> bool {
        client.is_loopback()
            || self
                .config
                .cluster_cidrs
                .iter()
                .any(|net| net.contains(&client))
            || self
                .local_ips
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(&client)
    }

    /// Sets the node's own addresses (each sync).
    pub fn set_local_ips(&self, ips: BTreeSet<IpAddr>) {
        let mut current = self
            .local_ips
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if **current != ips {
            *current = Arc::new(ips);
        }
    }
}

/// The time, from tokio's clock so that tests may pause it.
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Locks a mutex, recovering the data if another thread panicked while holding it (all state
/// behind these locks stays consistent between statements).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What every listener task shares.
#[derive(Debug)]
pub(crate) struct Context {
    pub config: UserspaceConfig,
    /// The node's own addresses (all of them, as the last sync saw them): a client at one of
    /// these, or at a loopback address, is the node itself (kube-proxy's `--src-type LOCAL`).
    pub local_ips: RwLock<Arc<BTreeSet<IpAddr>>>,
    pub health: Health,
    pub active: Arc<ActiveCounts>,
    /// Connections and flows held, and their limits.
    pub limits: Limits,
}

/// A listener's current balancer; a sync replaces the `Arc` inside.
pub(crate) type RouteSlot = Arc<RwLock<Arc<Balancer>>>;

/// The balancer a listener uses now.
pub(crate) fn current(slot: &RouteSlot) -> Arc<Balancer> {
    slot.read().unwrap_or_else(PoisonError::into_inner).clone()
}

/// Replaces a listener's balancer.
pub(crate) fn replace(slot: &RouteSlot, balancer: Arc<Balancer>) {
    *slot.write().unwrap_or_else(PoisonError::into_inner) = balancer;
}

/// A route with its scheduler state.
#[derive(Debug)]
pub(crate) struct Balancer {
    pub key: ListenerKey,
    pub route: Route,
    pub metrics: PortMetrics,
    /// The connections of this listener's service port (shared by its listeners).
    pub port_gate: PortGate,
    picker: Mutex<Picker>,
    /// The scheduler state of the short-circuit's endpoints, when the route has one.
    short_circuit_picker: Option<Mutex<Picker>>,
    affinity: Option<Arc<Mutex<AffinityMap>>>,
    rng: AtomicU64,
}

impl Balancer {
    pub fn new(
        key: ListenerKey,
        route: Route,
        affinity: Option<Arc<Mutex<AffinityMap>>>,
        metrics: PortMetrics,
        port_gate: PortGate,
        config: &UserspaceConfig,
    ) -> Self {
        let picker_for = |target: &RouteTarget| {
            let (names, weights): (Vec<String>, Vec<u32>) = match target {
                RouteTarget::Endpoints(backends) => backends
                    .iter()
                    .map(|b| (b.addr.to_string(), b.weight))
                    .unzip(),
                RouteTarget::Reject | RouteTarget::Drop => (Vec::new(), Vec::new()),
            };
            Picker::new(route.scheduler, &names, &weights, config.maglev_table_size)
        };
        let picker = picker_for(&route.target);
        let short_circuit_picker = route
            .short_circuit
            .as_ref()
            .map(|target| Mutex::new(picker_for(target)));
        let seed =
            std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), key);
        Self {
            key,
            route,
            metrics,
            port_gate,
            picker: Mutex::new(picker),
            short_circuit_picker,
            affinity,
            rng: AtomicU64::new(seed),
        }
    }

    /// What the route does with a new flow from `client`: its short-circuit for a pod or the
    /// node itself when it has one, else its target.
    pub fn target_for(&self, client: IpAddr, ctx: &Context) -> &RouteTarget {
        match &self.route.short_circuit {
            Some(short_circuit) if ctx.is_pod_or_node(client) => short_circuit,
            _ => &self.route.target,
        }
    }

    /// The endpoint for a new flow from `client`, skipping `tried` ones; `None` when the route
    /// has no endpoint left to try. Ejected endpoints are used only when nothing else is left.
    pub fn choose(
        &self,
        client: IpAddr,
        tried: &[SocketAddr],
        ctx: &Context,
    ) -> Option<SocketAddr> {
        let target = self.target_for(client, ctx);
        let RouteTarget::Endpoints(backends) = target else {
            return None;
        };
        let picker = match &self.short_circuit_picker {
            Some(short_circuit) if !std::ptr::eq(target, &self.route.target) => short_circuit,
            _ => &self.picker,
        };
        let now = now();
        if let Some(affinity) = &self.affinity {
            let pinned = lock(affinity).get(client, now);
            if let Some(pinned) = pinned {
                let usable = backends.iter().any(|b| b.addr == pinned && b.weight > 0)
                    && !tried.contains(&pinned)
                    && !ctx.health.is_ejected(pinned, now);
                if usable {
                    lock(affinity).set(client, pinned, now);
                    return Some(pinned);
                }
            }
        }
        let active = ctx.active.snapshot(backends.iter().map(|b| b.addr));
        let mut slots: Vec<Slot> = backends
            .iter()
            .zip(active)
            .map(|(b, active)| Slot {
                weight: b.weight,
                active,
                eligible: !tried.contains(&b.addr) && !ctx.health.is_ejected(b.addr, now),
            })
            .collect();
        let input = PickInput {
            client,
            dest: self.key.addr.ip(),
            random: mix64(self.rng.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)),
        };
        let mut picker = lock(picker);
        let mut chosen = picker.pick(&slots, &input);
        if chosen.is_none() {
            // Everything left is ejected: trying one beats refusing the client.
            for (slot, b) in slots.iter_mut().zip(backends) {
                slot.eligible = !tried.contains(&b.addr);
            }
            chosen = picker.pick(&slots, &input);
        }
        drop(picker);
        let endpoint = backends.get(chosen?)?.addr;
        if let Some(affinity) = &self.affinity {
            lock(affinity).set(client, endpoint, now);
        }
        Some(endpoint)
    }
}

/// Open flows per endpoint address, for `lc`-style schedulers. Shared by every listener, so an
/// endpoint's count survives route swaps.
#[derive(Debug, Default)]
pub(crate) struct ActiveCounts {
    counts: Mutex<HashMap<SocketAddr, usize>>,
}

impl ActiveCounts {
    /// Counts one more flow to `endpoint` until the guard drops.
    pub fn acquire(self: &Arc<Self>, endpoint: SocketAddr) -> ActiveGuard {
        *lock(&self.counts).entry(endpoint).or_default() += 1;
        ActiveGuard {
            counts: Arc::clone(self),
            endpoint,
        }
    }

    fn snapshot(&self, endpoints: impl Iterator<Item = SocketAddr>) -> Vec<usize> {
        let counts = lock(&self.counts);
        endpoints
            .map(|ep| counts.get(&ep).copied().unwrap_or(0))
            .collect()
    }
}

/// One open flow to an endpoint.
#[derive(Debug)]
pub(crate) struct ActiveGuard {
    counts: Arc<ActiveCounts>,
    endpoint: SocketAddr,
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        let mut counts = lock(&self.counts.counts);
        if let Some(n) = counts.get_mut(&self.endpoint) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.endpoint);
            }
        }
    }
}

/// Passive health: consecutive connect failures per endpoint, and ejections.
#[derive(Debug)]
pub(crate) struct Health {
    eject_after: u32,
    ejection_time: Duration,
    state: Mutex<HashMap<SocketAddr, EndpointHealth>>,
}

#[derive(Debug, Default, Clone, Copy)]
struct EndpointHealth {
    failures: u32,
    ejected_until: Option<Instant>,
}

impl Health {
    pub fn new(eject_after: u32, ejection_time: Duration) -> Self {
        Self {
            eject_after,
            ejection_time,
            state: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `endpoint` is ejected at `now`. An ejection that ran out is forgotten, so the
    /// endpoint is tried again (and ejected again after as many failures).
    pub fn is_ejected(&self, endpoint: SocketAddr, now: Instant) -> bool {
        let mut state = lock(&self.state);
        let Some(health) = state.get(&endpoint) else {
            return false;
        };
        match health.ejected_until {
            Some(until) if now < until => true,
            Some(_) => {
                state.remove(&endpoint);
                false
            }
            None => false,
        }
    }

    /// Records a failed connect; returns whether this ejected the endpoint.
    pub fn record_failure(&self, endpoint: SocketAddr, now: Instant) -> bool {
        let mut state = lock(&self.state);
        let health = state.entry(endpoint).or_default();
        health.failures += 1;
        if health.failures >= self.eject_after && health.ejected_until.is_none() {
            health.ejected_until = Some(now + self.ejection_time);
            return true;
        }
        false
    }

    /// Forgets endpoints `keep` rejects (no longer in the table), so the map stays bounded.
    /// Cost: the endpoints with failures on record (a full sync).
    pub fn retain(&self, keep: impl Fn(SocketAddr) -> bool) {
        lock(&self.state).retain(|endpoint, _| keep(*endpoint));
    }

    /// Forgets these endpoints (no route names them any more). Cost: the endpoints given (a
    /// partial sync).
    pub fn forget(&self, endpoints: impl IntoIterator<Item = SocketAddr>) {
        let mut state = lock(&self.state);
        for endpoint in endpoints {
            state.remove(&endpoint);
        }
    }

    /// Records a successful connect: the failure streak ends.
    pub fn record_success(&self, endpoint: SocketAddr) {
        let mut state = lock(&self.state);
        if state
            .get(&endpoint)
            .is_some_and(|h| h.ejected_until.is_none())
        {
            state.remove(&endpoint);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_is_ejected_after_repeated_failures_then_retried() {
        let health = Health::new(2, Duration::from_secs(5));
        let ep: SocketAddr = "127.0.0.9:1".parse().expect("addr");
        let t0 = Instant::now();
        assert!(!health.record_failure(ep, t0));
        assert!(!health.is_ejected(ep, t0));
        assert!(health.record_failure(ep, t0), "second failure ejects");
        assert!(health.is_ejected(ep, t0 + Duration::from_secs(4)));
        assert!(
            !health.is_ejected(ep, t0 + Duration::from_secs(5)),
            "retried after the ejection time"
        );
        assert!(
            !health.record_failure(ep, t0 + Duration::from_secs(6)),
            "streak starts over"
        );
    }

    #[test]
    fn success_resets_the_failure_streak() {
        let health = Health::new(2, Duration::from_secs(5));
        let ep: SocketAddr = "127.0.0.9:1".parse().expect("addr");
        let t0 = Instant::now();
        health.record_failure(ep, t0);
        health.record_success(ep);
        assert!(!health.record_failure(ep, t0));
    }

    #[test]
    fn pods_and_the_node_take_the_short_circuit_and_other_clients_the_local_policy() {
        use crate::plan::{AddressKind, Backend};
        use proxy_core::table::{Protocol, Scheduler, ServicePortName};

        let remote: SocketAddr = "198.18.2.10:8080".parse().expect("addr");
        let name = ServicePortName::new("default", "web", "http");
        let route = Route {
            service_port: name.clone(),
            kind: AddressKind::NodePort,
            target: RouteTarget::Drop,
            short_circuit: Some(RouteTarget::Endpoints(vec![Backend {
                addr: remote,
                weight: 1,
            }])),
            scheduler: Scheduler::RoundRobin,
            affinity_timeout: None,
            port_idle_timeout: None,
            source_ranges: Vec::new(),
        };
        let config = UserspaceConfig {
            cluster_cidrs: vec!["198.18.0.0/17".parse().expect("net")],
            ..UserspaceConfig::default()
        };
        let ctx = Context {
            local_ips: RwLock::default(),
            health: Health::new(3, Duration::from_secs(1)),
            active: Arc::default(),
            limits: Limits::default(),
            config: config.clone(),
        };
        ctx.set_local_ips(BTreeSet::from(["198.18.250.254".parse().expect("ip")]));
        let key = ListenerKey {
            protocol: Protocol::Tcp,
            addr: "198.18.250.254:30502".parse().expect("addr"),
        };
        let metrics = crate::Metrics::default().for_service_port(&name, Protocol::Tcp);
        let balancer = Balancer::new(key, route, None, metrics, PortGate::default(), &config);
        for (client, short_circuited) in [
            ("198.18.3.10", true),    // a pod
            ("198.18.250.254", true), // the node, from its own address
            ("127.0.0.1", true),      // the node, from loopback
            ("198.18.250.1", false),  // outside: the Local policy, no local endpoint
        ] {
            let client: IpAddr = client.parse().expect("ip");
            let chosen = balancer.choose(client, &[], &ctx);
            if short_circuited {
                assert_eq!(chosen, Some(remote), "{client}");
            } else {
                assert_eq!(balancer.target_for(client, &ctx), &RouteTarget::Drop);
                assert_eq!(chosen, None, "{client}");
            }
        }
    }

    #[test]
    fn active_counts_follow_guards() {
        let counts = Arc::new(ActiveCounts::default());
        let ep: SocketAddr = "127.0.0.9:1".parse().expect("addr");
        let a = counts.acquire(ep);
        let b = counts.acquire(ep);
        assert_eq!(counts.snapshot([ep].into_iter()), [2]);
        drop(a);
        drop(b);
        assert_eq!(counts.snapshot([ep].into_iter()), [0]);
        assert!(lock(&counts.counts).is_empty());
    }
}
