//! `backend-userspace`: an L4 proxy on tokio that implements [`proxy_core::Dataplane`] with
//! ordinary sockets, so it needs no root and no kernel state.
//!
//! Every service port gets a listener on each of its addresses (cluster, external and
//! load-balancer IPs on the service port; each node address on the node port: by default every
//! address of the node but loopback, followed as addresses come and go, see
//! [`UserspaceConfig::node_addresses`] and [`UserspaceDataplane::with_node_addresses`]). A new
//! TCP connection or UDP flow is sent to an endpoint chosen by the port's scheduler (IPVS's
//! `rr`, `wrr`, `lc`, `wlc`, `sed`, `nq`, `sh`, `dh`, `mh`, and `random`; see [`pick`]), with
//! client-IP affinity if asked, failing over on connect errors and ejecting endpoints that keep
//! failing. TCP bytes are read and written straight through a per-thread buffer, and a
//! direction that carries bulk switches to `splice(2)` on Linux. The addresses must be local
//! (loopback `127.0.0.0/8` is, on Linux) unless [`UserspaceConfig::freebind`] is set.
//!
//! It owns only its sockets: [`Dataplane::cleanup`] closes every listener (connections already
//! open finish on their own). In the optional transparent capture mode ([`ListenMode::Capture`],
//! root) it also owns two iptables chains named [`UserspaceConfig::capture_chain`], one in nat
//! (the redirects) and one in filter (kube-proxy's drop and reject verdicts), and their jumps;
//! cleanup removes them (see [`capture`]).
//!
//! Inner shape, as every backend: **plan** ([`plan::plan`] for a full sync,
//! [`plan::plan_partial`] for the service ports a partial sync's change set names; pure: desired
//! listeners and their routes against the applied ones) → **apply** (bind, close, swap routes)
//! → **observe**
//! ([`UserspaceDataplane::observe`], the same model, for tests). [`Dataplane::dry_run`] renders
//! the plan of a full sync without binding anything.
//!
//! One construction shape, as every backend: [`UserspaceDataplane::new`] takes the config and
//! does no I/O (listeners are bound by the first sync), then [`Dataplane::register_metrics`]
//! puts the backend's series ([`metrics`]) in the embedder's root registry.
//!
//! ```
//! use backend_userspace::{UserspaceConfig, UserspaceDataplane};
//! use proxy_core::dataplane::{Dataplane, SyncMode, SyncRequest};
//! use proxy_core::prometheus_client::registry::Registry;
//! use proxy_core::table::*;
//! use proxy_core::diff;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut registry = Registry::default();
//! let mut dp = UserspaceDataplane::new(UserspaceConfig::default())?;
//! dp.register_metrics(&mut registry);
//!
//! let name = ServicePortName::new("default", "web", "http");
//! let port = ServicePort::new(name, Protocol::Tcp, 18080)
//!     .with_cluster_ip("127.77.0.10".parse()?)
//!     .with_endpoint(Endpoint::new("127.0.0.50".parse()?, 8080));
//! let table = ServiceTable::builder().insert(port).build()?;
//! print!("{}", dp.dry_run(&table)?);
//! let changes = diff(&ServiceTable::empty(), &table);
//! let report = dp
//!     .sync(SyncRequest { desired: &table, changes: &changes, mode: SyncMode::Full })
//!     .await?;
//! assert!(report.is_complete(), "{report}");
//! assert_eq!(dp.observe().len(), 1);
//! # Ok(())
//! # }
//! ```
//!
//! See `README.md` beside this crate for the design notes and how it differs from the kernel
//! backends.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod apply;
mod balance;
pub mod capture;
pub mod config;
pub mod error;
mod limits;
mod listener;
pub mod metrics;
pub mod observe;
pub mod pick;
pub mod plan;
mod tcp;
mod udp;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use prometheus_client::registry::Registry;
use proxy_core::dataplane::SyncProblem;
use proxy_core::dataplane::{
    Capabilities, CleanupReport, DryRun, SyncMode, SyncReport, SyncRequest,
};
use proxy_core::diff::ChangeSet;
use proxy_core::node_addresses::{node_port_ips, NodeAddresses};
use proxy_core::table::{Protocol, Scheduler, ServicePortName, ServiceTable};
use proxy_core::{Dataplane, DataplaneError};
use tracing::debug;

pub use config::{ListenMode, UserspaceConfig};
pub use error::UserspaceError;
pub use limits::ConnectionLimits;
pub use metrics::Metrics;
pub use plan::{ListenerKey, Listeners, NodeIps, Plan, Scope};

use apply::Live;
use balance::{ActiveCounts, Context, Health};
use limits::Limits;

/// The backend's name in logs, metrics and reports.
pub const NAME: &str = "userspace";

/// The userspace proxy dataplane. Needs a tokio runtime for [`Dataplane::sync`]; dropping it
/// closes every listener.
#[derive(Debug)]
pub struct UserspaceDataplane {
    ctx: Arc<Context>,
    metrics: Metrics,
    live: Live,
    /// Where the node's addresses come from.
    node_addresses: NodeAddresses,
    /// The node addresses the last sync planned node ports on.
    node_ips: NodeIps,
    /// The service ports of the last table whose listeners depend on the node's addresses
    /// ([`plan::depends_on_node_ips`]): what a change of addresses plans again.
    dependent: BTreeSet<ServicePortName>,
}

impl UserspaceDataplane {
    /// The dataplane for `config`, with no listener yet: it binds nothing and does no I/O
    /// (the first [`Dataplane::sync`] opens the listeners). Its metrics record from the start and
    /// appear in a registry once [`Dataplane::register_metrics`] puts them there.
    ///
    /// # Errors
    /// [`UserspaceError::Config`] when a config field is out of range.
    pub fn new(config: UserspaceConfig) -> Result<Self, UserspaceError> {
        config.validate()?;
        let health = Health::new(config.eject_after_failures, config.ejection_time);
        let node_addresses = if config.node_addresses.is_empty() {
            NodeAddresses::kernel()
        } else {
            NodeAddresses::fixed(config.node_addresses.iter().copied())
        };
        Ok(Self {
            node_addresses,
            node_ips: NodeIps::new(),
            dependent: BTreeSet::new(),
            ctx: Arc::new(Context {
                config,
                local_ips: std::sync::RwLock::default(),
                health,
                active: Arc::new(ActiveCounts::default()),
                limits: Limits::default(),
            }),
            metrics: Metrics::default(),
            live: Live::default(),
        })
    }

    /// The same dataplane, serving node ports on the addresses of `source` (filtered by
    /// [`UserspaceConfig::node_port_addresses`]) instead of those the config names: an
    /// embedder feeds them by hand with [`NodeAddresses::manual`]. The sync loop follows the
    /// source ([`Dataplane::node_addresses`]): each change re-plans only the listeners of the
    /// service ports that depend on the addresses.
    #[must_use]
    pub fn with_node_addresses(mut self, source: NodeAddresses) -> Self {
        self.node_addresses = source;
        self
    }

    /// The node addresses node ports are served on now (after the
    /// [`UserspaceConfig::node_port_addresses`] filter).
    pub fn node_ips(&self) -> NodeIps {
        node_port_ips(
            &self.node_addresses.current(),
            &self.ctx.config.node_port_addresses,
            None,
        )
    }

    /// The configuration.
    pub fn config(&self) -> &UserspaceConfig {
        &self.ctx.config
    }

    /// The metric families this dataplane records into.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// What a full sync to `table` would do now, from the listeners open now, without doing it.
    pub fn plan(&self, table: &ServiceTable) -> Plan {
        plan::plan(
            table,
            &self.ctx.config,
            &self.node_ips(),
            &self.live.observe(),
        )
    }

    /// What a partial sync to `table` with `changes` (from the table of the last sync) would do
    /// now, without doing it: the listeners of the changed service ports only.
    pub fn plan_partial(&self, table: &ServiceTable, changes: &ChangeSet) -> Plan {
        let current = self.node_ips();
        let node_ips = plan::NodeIpsChange {
            previous: &self.node_ips,
            current: &current,
            dependent: &self.dependent,
        };
        plan::plan_partial(
            table,
            changes,
            &self.ctx.config,
            node_ips,
            self.live.applied(),
            self.live.ports_with_problems(),
        )
    }

    /// Keeps [`UserspaceDataplane::dependent`] in step with the table a sync planned.
    fn track_dependent(&mut self, request: &SyncRequest<'_>) {
        match request.mode {
            SyncMode::Full => {
                self.dependent = request
                    .desired
                    .iter()
                    .filter(|port| plan::depends_on_node_ips(port))
                    .map(|port| port.name.clone())
                    .collect();
            }
            SyncMode::Partial => {
                let changes = request.changes;
                for port in &changes.removed {
                    self.dependent.remove(&port.name);
                }
                let current = changes.changed.iter().map(|c| &c.current);
                for port in changes.added.iter().chain(current) {
                    if plan::depends_on_node_ips(port) {
                        self.dependent.insert(port.name.clone());
                    } else {
                        self.dependent.remove(&port.name);
                    }
                }
            }
        }
    }

    /// The limits on TCP connections and UDP flows in force now (set by each sync, see
    /// [`ConnectionLimits::derive`]; unlimited before the first).
    pub fn connection_limits(&self) -> ConnectionLimits {
        self.ctx.limits.current()
    }

    /// TCP connections and UDP flows held now (within [`Self::connection_limits`]).
    pub fn connections_held(&self) -> (usize, usize) {
        (
            self.ctx.limits.tcp_connections(),
            self.ctx.limits.udp_flows(),
        )
    }

    /// The listeners open now, with the route each applies to new flows.
    pub fn observe(&self) -> Listeners {
        self.live.observe()
    }

    /// Where each open listener's socket is bound: its service address, or in capture mode the
    /// capture address and the port the OS picked.
    pub fn bound_addrs(&self) -> BTreeMap<ListenerKey, SocketAddr> {
        self.live.bound()
    }

    /// The capabilities of this backend (also [`Dataplane::capabilities`]).
    pub fn supported() -> Capabilities {
        Capabilities {
            protocols: [Protocol::Tcp, Protocol::Udp].into_iter().collect(),
            schedulers: Scheduler::ALL.into_iter().collect(),
            session_affinity: true,
            local_traffic_policy: true,
            load_balancer_source_ranges: true,
            node_ports: true,
            ipv6: true,
        }
    }
}

#[async_trait]
impl Dataplane for UserspaceDataplane {
    fn name(&self) -> &'static str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        Self::supported()
    }

    /// A [`SyncMode::Full`] request plans every listener of the table against the open ones
    /// (and reopens a listener whose task ended); a [`SyncMode::Partial`] one plans only the
    /// listeners of the service ports its change set names, and of those the last sync left
    /// with problems ([`plan::plan_partial`]), so that its cost follows the change.
    async fn sync(&mut self, request: SyncRequest<'_>) -> Result<SyncReport, DataplaneError> {
        // The caller (proxy-core's sync loop) runs this inside the `sync{backend, full}` span.
        let started = Instant::now();
        // The first sync of a source that follows the kernel dumps its addresses (blocking for
        // one rtnetlink request); without them, node ports wait for the next sync.
        let address_problem = self.node_addresses.start().err().map(|error| {
            let cause = std::error::Error::source(&error)
                .map(|source| format!(": {source}"))
                .unwrap_or_default();
            SyncProblem::new("node addresses", format!("{error}{cause}"))
        });
        let node_ips = self.node_ips();
        self.ctx
            .set_local_ips(self.node_addresses.current().iter().map(|a| a.ip).collect());
        let plan = match request.mode {
            SyncMode::Full => {
                self.live.forget_ended(&self.metrics);
                plan::plan(
                    request.desired,
                    &self.ctx.config,
                    &node_ips,
                    self.live.applied(),
                )
            }
            SyncMode::Partial => plan::plan_partial(
                request.desired,
                request.changes,
                &self.ctx.config,
                plan::NodeIpsChange {
                    previous: &self.node_ips,
                    current: &node_ips,
                    dependent: &self.dependent,
                },
                self.live.applied(),
                self.live.ports_with_problems(),
            ),
        };
        if node_ips != self.node_ips {
            debug!(
                node_addresses = node_ips.len(),
                service_ports = self.dependent.len(),
                "node addresses changed: their service ports planned again"
            );
        }
        self.node_ips = node_ips;
        self.track_dependent(&request);
        let outcome = self.live.apply(&plan, &self.ctx, &self.metrics).await;
        self.live
            .remove_series_of_removed_ports(request.desired, &plan.scope, &self.metrics);
        let mut report = SyncReport::for_request(&request);
        report.objects_written = outcome.written;
        report.problems = plan.problems;
        report.problems.extend(outcome.problems);
        report.problems.extend(address_problem);
        self.live.set_problems(&report.problems);
        report.duration = started.elapsed();
        debug!(
            listeners = self.live.len(),
            planned = plan.desired.len(),
            opened = plan.open.len(),
            updated = plan.update.len(),
            closed = plan.close.len(),
            problems = report.problems.len(),
            "sync complete"
        );
        Ok(report)
    }

    async fn cleanup(&mut self) -> Result<CleanupReport, DataplaneError> {
        let objects_removed = self
            .live
            .close_all(&self.ctx, &self.metrics)
            .await
            .map_err(|error| DataplaneError::backend(NAME, error))?;
        Ok(CleanupReport { objects_removed })
    }

    /// A header line, then one line per listener a full sync would open
    /// ([`observe::render`]); addresses claimed twice and SCTP ports go to
    /// [`DryRun::problems`]. Never fails: the config was checked by [`UserspaceDataplane::new`].
    fn dry_run(&self, table: &ServiceTable) -> Result<DryRun, DataplaneError> {
        let (listeners, problems) = plan::plan_listeners(table, &self.ctx.config, &self.node_ips());
        let mut rendered = format!(
            "# userspace backend: {} listener(s) for {} service port(s), {} endpoint(s)\n",
            listeners.len(),
            table.len(),
            table.endpoint_count()
        );
        rendered.push_str(&observe::render(&listeners));
        Ok(DryRun { rendered, problems })
    }

    /// Registers [`Metrics`] (`svcproxy_userspace_*`; kube-proxy has no such series) in the root
    /// `registry`, with what they recorded so far. Call it once per registry: prometheus-client
    /// does not check names, so a second call would list every series twice.
    fn register_metrics(&mut self, registry: &mut Registry) {
        self.metrics.register_in(registry);
    }

    /// The source node ports follow: the sync loop runs a partial sync after each change.
    fn node_addresses(&self) -> Option<NodeAddresses> {
        Some(self.node_addresses.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proxy_core::diff;
    use proxy_core::metrics::encode_text;
    use proxy_core::table::{Endpoint, ServicePort, ServicePortName};

    fn port(name: &str, protocol: Protocol, vip: &str, port: u16) -> ServicePort {
        ServicePort::new(ServicePortName::new("test", name, "p"), protocol, port)
            .with_cluster_ip(vip.parse().expect("valid ip"))
            .with_endpoint(Endpoint::new("127.78.1.10".parse().expect("valid ip"), 9))
    }

    fn table(ports: impl IntoIterator<Item = ServicePort>) -> ServiceTable {
        ports
            .into_iter()
            .fold(ServiceTable::builder(), |builder, port| {
                builder.insert(port)
            })
            .build()
            .expect("valid table")
    }

    /// A port of `ip` that nothing listens on (for TCP and UDP) at the time of the call.
    fn free_port(ip: &str) -> u16 {
        let tcp = std::net::TcpListener::bind((ip.parse::<std::net::IpAddr>().expect("ip"), 0))
            .expect("bind a free TCP port");
        let port = tcp.local_addr().expect("local addr").port();
        std::net::UdpSocket::bind((ip.parse::<std::net::IpAddr>().expect("ip"), port))
            .expect("the same UDP port is free");
        port
    }

    async fn sync_partial(
        dp: &mut UserspaceDataplane,
        from: &ServiceTable,
        to: &ServiceTable,
    ) -> SyncReport {
        let changes = diff(from, to);
        dp.sync(SyncRequest {
            desired: to,
            changes: &changes,
            mode: SyncMode::Partial,
        })
        .await
        .expect("sync")
    }

    async fn sync_to(dp: &mut UserspaceDataplane, from: &ServiceTable, to: &ServiceTable) {
        let report = sync_partial(dp, from, to).await;
        assert!(report.is_complete(), "{report}");
    }

    fn problems(problems: &[proxy_core::dataplane::SyncProblem]) -> Vec<String> {
        problems.iter().map(ToString::to_string).collect()
    }

    /// Partial syncs through clashing addresses (a node port on a node address that another
    /// port's cluster IP takes) leave the listeners and problems one full sync would, and a full
    /// sync afterwards writes nothing.
    #[tokio::test]
    async fn partial_syncs_end_where_a_full_sync_does() {
        let node = "127.78.4.1";
        let shared = free_port(node);
        let mut dp = UserspaceDataplane::new(UserspaceConfig {
            node_addresses: vec![node.parse().expect("ip")],
            ..UserspaceConfig::default()
        })
        .expect("valid config");
        let web = port(
            "web",
            Protocol::Tcp,
            "127.78.4.10",
            free_port("127.78.4.10"),
        )
        .with_node_port(shared);
        let mut api = port(
            "api",
            Protocol::Udp,
            "127.78.4.11",
            free_port("127.78.4.11"),
        );
        api.session_affinity = proxy_core::table::SessionAffinity::ClientIp {
            timeout: std::time::Duration::from_secs(30),
        };
        let db = port("db", Protocol::Tcp, node, shared);
        let mut api_changed = api.clone();
        api_changed.endpoints[0].ready = false;
        let steps = [
            table([web.clone(), api.clone()]),
            table([web.clone(), api.clone(), db.clone()]),
            table([web.clone(), api_changed, db]),
            table([web.clone(), api]),
        ];
        let mut previous = ServiceTable::empty();
        for (step, next) in steps.iter().enumerate() {
            let report = sync_partial(&mut dp, &previous, next).await;
            let clashes = [0, 1, 1, 0][step];
            assert_eq!(report.problems.len(), clashes, "step {step}: {report}");
            let full = dp.plan(next);
            assert_eq!(dp.observe(), full.desired, "step {step}");
            assert!(full.is_noop(), "step {step}: {full:?}");
            assert_eq!(
                problems(&report.problems),
                problems(&full.problems),
                "step {step}: {report}"
            );
            previous = next.clone();
        }
        let changes = diff(&previous, &previous);
        let report = dp
            .sync(SyncRequest {
                desired: &previous,
                changes: &changes,
                mode: SyncMode::Full,
            })
            .await
            .expect("sync");
        assert!(report.is_complete(), "{report}");
        assert_eq!(report.objects_written, 0, "{report}");
    }

    /// A listener that could not be bound is retried by the next partial sync, even one that
    /// changes nothing.
    #[tokio::test]
    async fn a_partial_sync_retries_the_listeners_the_last_one_could_not_bind() {
        let vip = "127.78.5.1";
        let busy = std::net::TcpListener::bind((vip, 0)).expect("bind");
        let web = port(
            "web",
            Protocol::Tcp,
            vip,
            busy.local_addr().expect("addr").port(),
        );
        let other = port(
            "other",
            Protocol::Tcp,
            "127.78.5.2",
            free_port("127.78.5.2"),
        );
        let mut dp = UserspaceDataplane::new(UserspaceConfig::default()).expect("valid config");
        let t = table([web, other]);
        let report = sync_partial(&mut dp, &ServiceTable::empty(), &t).await;
        assert_eq!(report.problems.len(), 1, "{report}");
        assert_eq!(dp.observe().len(), 1);

        let report = sync_partial(&mut dp, &t, &t).await;
        assert_eq!(
            report.problems.len(),
            1,
            "still busy, still reported: {report}"
        );
        drop(busy);
        let report = sync_partial(&mut dp, &t, &t).await;
        assert!(report.is_complete(), "{report}");
        assert_eq!(
            report.objects_written, 1,
            "only the retried listener: {report}"
        );
        assert_eq!(dp.observe(), dp.plan(&t).desired);
    }

    #[tokio::test]
    async fn a_service_port_removed_by_a_sync_takes_its_series_with_it() {
        let mut registry = Registry::default();
        let mut dp = UserspaceDataplane::new(UserspaceConfig::default()).expect("valid config");
        dp.register_metrics(&mut registry);
        let web = port("web", Protocol::Tcp, "127.78.0.1", free_port("127.78.0.1"));
        let dns = port("dns", Protocol::Udp, "127.78.0.2", free_port("127.78.0.2"));
        let both = table([web, dns.clone()]);
        sync_to(&mut dp, &ServiceTable::empty(), &both).await;
        let text = encode_text(&registry).expect("encode");
        for series in [
            r#"svcproxy_userspace_connections_accepted_total{service_port="test/web:p",protocol="tcp"} 0"#,
            r#"svcproxy_userspace_connections_active{service_port="test/web:p",protocol="tcp"} 0"#,
            r#"svcproxy_userspace_bytes_total{service_port="test/web:p",protocol="tcp",direction="to_client"} 0"#,
            r#"svcproxy_userspace_connections_failed_total{service_port="test/web:p",protocol="tcp",reason="no_endpoints"} 0"#,
            r#"svcproxy_userspace_udp_flows_active{service_port="test/dns:p",protocol="udp"} 0"#,
            "svcproxy_userspace_listeners 2",
        ] {
            assert!(text.contains(series), "missing {series} in:\n{text}");
        }

        let dns_only = table([dns]);
        sync_to(&mut dp, &both, &dns_only).await;
        let text = encode_text(&registry).expect("encode");
        assert!(
            !text.contains("test/web:p"),
            "series of the removed port left:\n{text}"
        );
        assert!(
            text.contains(
                r#"svcproxy_userspace_udp_flows_active{service_port="test/dns:p",protocol="udp"} 0"#
            ),
            "the remaining port's series went too:\n{text}"
        );
        assert!(text.contains("svcproxy_userspace_listeners 1"), "{text}");
    }

    #[test]
    fn dry_run_renders_a_header_and_the_listeners_and_reports_problems_apart() {
        let config = UserspaceConfig {
            node_addresses: vec!["127.0.0.1".parse().expect("ip")],
            ..UserspaceConfig::default()
        };
        let dp = UserspaceDataplane::new(config).expect("valid config");
        let t = table([
            port("web", Protocol::Tcp, "127.78.2.1", 80).with_node_port(30080),
            port("db", Protocol::Sctp, "127.78.2.2", 5432),
        ]);
        let dry_run = dp.dry_run(&t).expect("dry run");
        assert_eq!(
            dry_run.rendered,
            "# userspace backend: 2 listener(s) for 2 service port(s), 2 endpoint(s)\n\
             tcp 127.0.0.1:30080 test/web:p node-port rr -> 127.78.1.10:9\n\
             tcp 127.78.2.1:80 test/web:p cluster-ip rr -> 127.78.1.10:9\n"
        );
        assert_eq!(dry_run.problems.len(), 1, "{dry_run}");
        let problem = &dry_run.problems[0];
        assert_eq!(
            problem.service_port,
            Some(ServicePortName::new("test", "db", "p"))
        );
        assert!(problem.reason.contains("SCTP"), "{problem}");
        assert!(
            dry_run
                .to_string()
                .ends_with(&format!("# problem: {problem}\n")),
            "{dry_run}"
        );
        assert!(dp.observe().is_empty(), "a dry run opens nothing");
    }

    #[test]
    fn capabilities_reject_sctp_and_accept_every_scheduler() {
        let sctp = ServicePort::new(ServicePortName::new("ns", "s", "p"), Protocol::Sctp, 9);
        let table = ServiceTable::builder().insert(sctp).build().expect("valid");
        let err = UserspaceDataplane::supported()
            .check(NAME, &table)
            .expect_err("SCTP is not served");
        assert!(err.to_string().contains("sctp"), "{err}");
        for scheduler in Scheduler::ALL {
            let mut port = ServicePort::new(ServicePortName::new("ns", "s", "p"), Protocol::Udp, 9);
            port.scheduler = Some(scheduler);
            let table = ServiceTable::builder().insert(port).build().expect("valid");
            assert!(
                UserspaceDataplane::supported().check(NAME, &table).is_ok(),
                "{scheduler}"
            );
        }
    }
}
