//! The [`Dataplane`] trait every backend implements, and what a sync reports.
//!
//! A dataplane is driven by [`crate::sync`]: it is handed the desired [`ServiceTable`] and the
//! [`ChangeSet`] since its last *successful* sync, and makes the kernel (or the proxy) match. A
//! backend may ignore the change set and sync everything; a [`SyncMode::Full`] request asks it to,
//! and to repair any drift it finds.
//!
//! ```
//! use async_trait::async_trait;
//! use proxy_core::dataplane::*;
//! use proxy_core::DataplaneError;
//!
//! /// A dataplane that only counts what it was asked to do.
//! #[derive(Debug, Default)]
//! struct Counting { syncs: usize }
//!
//! #[async_trait]
//! impl Dataplane for Counting {
//!     fn name(&self) -> &'static str { "counting" }
//!     fn capabilities(&self) -> Capabilities { Capabilities::everything() }
//!     async fn sync(&mut self, request: SyncRequest<'_>) -> Result<SyncReport, DataplaneError> {
//!         self.syncs += 1;
//!         Ok(SyncReport::for_request(&request))
//!     }
//!     async fn cleanup(&mut self) -> Result<CleanupReport, DataplaneError> {
//!         Ok(CleanupReport::default())
//!     }
//!     fn dry_run(&self, table: &proxy_core::ServiceTable) -> Result<DryRun, DataplaneError> {
//!         Ok(DryRun::new(format!("{} service port(s)\n", table.len())))
//!     }
//! }
//! ```

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use prometheus_client::registry::Registry;

use crate::diff::ChangeSet;
use crate::error::{DataplaneError, UnsupportedFeatures};
use crate::table::{
    Protocol, Scheduler, ServicePort, ServicePortName, ServiceTable, SessionAffinity, TrafficPolicy,
};
use crate::validate::FieldError;

/// Whether a sync may rely on the change set or must rewrite and verify everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SyncMode {
    /// Rewrite everything we own and repair drift (first sync, periodic resync, after a failure).
    Full,
    /// Apply only what the change set names (a backend may still choose to do more).
    Partial,
}

impl fmt::Display for SyncMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SyncMode::Full => "full",
            SyncMode::Partial => "partial",
        })
    }
}

/// One request to a dataplane: the table to reach, and what changed since the last success.
#[derive(Debug, Clone, Copy)]
pub struct SyncRequest<'a> {
    /// The table the dataplane must implement when the sync returns.
    pub desired: &'a ServiceTable,
    /// The changes between the last successfully synced table and `desired`.
    pub changes: &'a ChangeSet,
    /// Full or partial.
    pub mode: SyncMode,
}

/// What one sync did. Counts are of the desired table; `objects_written` is the backend's own unit
/// (rules, netlink operations, listeners).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncReport {
    /// Full or partial, as actually done (a backend may upgrade a partial sync to full).
    pub mode: SyncMode,
    /// Service ports in the desired table.
    pub service_ports: usize,
    /// Endpoints in the desired table.
    pub endpoints: usize,
    /// Service ports added, removed or changed by this sync.
    pub service_ports_changed: usize,
    /// Kernel objects or listeners written (rules, netlink operations, sockets), backend-defined.
    pub objects_written: usize,
    /// Wall time of the sync.
    pub duration: Duration,
    /// Parts of the table that could not be applied while the rest was (an address that cannot be
    /// bound...). A sync with problems is degraded: the loop retries it.
    pub problems: Vec<SyncProblem>,
}

impl SyncReport {
    /// A report with the request's counts, nothing written and no problems, to be filled in.
    pub fn for_request(request: &SyncRequest<'_>) -> Self {
        Self {
            mode: request.mode,
            service_ports: request.desired.len(),
            endpoints: request.desired.endpoint_count(),
            service_ports_changed: request.changes.service_ports_changed(),
            objects_written: 0,
            duration: Duration::ZERO,
            problems: Vec::new(),
        }
    }

    /// Whether everything in the table was applied.
    pub fn is_complete(&self) -> bool {
        self.problems.is_empty()
    }
}

impl fmt::Display for SyncReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} sync: {} service ports, {} endpoints, {} changed, {} objects written in {:.3} ms",
            self.mode,
            self.service_ports,
            self.endpoints,
            self.service_ports_changed,
            self.objects_written,
            self.duration.as_secs_f64() * 1e3
        )?;
        for problem in &self.problems {
            write!(f, "\n  problem: {problem}")?;
        }
        Ok(())
    }
}

/// A part of the table a sync could not apply, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncProblem {
    /// The service port it belongs to, when it belongs to one (a listener of that port, its
    /// virtual server...); `None` for node-wide objects.
    pub service_port: Option<ServicePortName>,
    /// What could not be applied (`default/web:http 127.0.0.1:80`).
    pub object: String,
    /// Why, with the OS error where there is one.
    pub reason: String,
}

impl SyncProblem {
    /// A problem with a node-wide object (no service port).
    pub fn new(object: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            service_port: None,
            object: object.into(),
            reason: reason.into(),
        }
    }

    /// A problem with an object of `service_port`.
    pub fn of_port(
        service_port: ServicePortName,
        object: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Self {
            service_port: Some(service_port),
            object: object.into(),
            reason: reason.into(),
        }
    }
}

/// What a sync of a table would program, rendered for people, without programming it
/// ([`Dataplane::dry_run`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DryRun {
    /// The backend's own notation of the desired state: `iptables-restore` input, an
    /// `ipvsadm -Ln`-style listing, a listener list. Ends with a newline unless empty.
    pub rendered: String,
    /// Parts of the table the backend could not program, as a sync would report them.
    pub problems: Vec<SyncProblem>,
}

impl DryRun {
    /// A dry run with this rendering and no problems.
    pub fn new(rendered: impl Into<String>) -> Self {
        Self {
            rendered: rendered.into(),
            problems: Vec::new(),
        }
    }
}

impl fmt::Display for DryRun {
    /// The rendering, then one `# problem: ...` line per problem.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.rendered)?;
        for problem in &self.problems {
            writeln!(f, "# problem: {problem}")?;
        }
        Ok(())
    }
}

impl fmt::Display for SyncProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.object, self.reason)
    }
}

/// What a cleanup removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanupReport {
    /// Kernel objects or listeners removed.
    pub objects_removed: usize,
}

/// What a backend can implement. The sync loop checks every table against it and rejects one that
/// asks for more, naming each field, before the dataplane sees it.
///
/// Tuning a backend may ignore has no flag: [`ServicePort::idle_timeout`] is read by the
/// userspace backend, while the kernel backends' timeouts are per network namespace and a port
/// asking for its own still runs there, with the namespace's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// Protocols it can balance.
    pub protocols: BTreeSet<Protocol>,
    /// Schedulers a service port may ask for.
    pub schedulers: BTreeSet<Scheduler>,
    /// Whether it implements client-IP session affinity.
    pub session_affinity: bool,
    /// Whether it implements `Local` traffic policies.
    pub local_traffic_policy: bool,
    /// Whether it implements load-balancer source ranges.
    pub load_balancer_source_ranges: bool,
    /// Whether it implements node ports.
    pub node_ports: bool,
    /// Whether it handles IPv6 addresses.
    pub ipv6: bool,
}

impl Capabilities {
    /// Everything the model can express (for fakes and tests).
    pub fn everything() -> Self {
        Self {
            protocols: Protocol::ALL.into_iter().collect(),
            schedulers: Scheduler::ALL.into_iter().collect(),
            session_affinity: true,
            local_traffic_policy: true,
            load_balancer_source_ranges: true,
            node_ports: true,
            ipv6: true,
        }
    }

    /// Checks that `table` asks for nothing this backend lacks.
    ///
    /// # Errors
    /// [`UnsupportedFeatures`] naming the backend and every field that asks for too much.
    pub fn check(&self, backend: &str, table: &ServiceTable) -> Result<(), UnsupportedFeatures> {
        let problems: Vec<FieldError> = table
            .iter()
            .flat_map(|port| self.check_port(backend, port))
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(UnsupportedFeatures {
                backend: backend.to_owned(),
                problems,
            })
        }
    }

    /// Every field of `port` that asks for what this backend lacks; empty when it can run.
    pub fn check_port(&self, backend: &str, port: &ServicePort) -> Vec<FieldError> {
        let mut problems = Vec::new();
        let path = crate::validate::port_path(&port.name);
        let mut unsupported = |field: &str, message: String| {
            problems.push(FieldError::new(format!("{path}.{field}"), message));
        };
        if !self.protocols.contains(&port.protocol) {
            unsupported(
                "protocol",
                format!(
                    "{} is not supported by the {backend} backend",
                    port.protocol
                ),
            );
        }
        if let Some(scheduler) = port.scheduler {
            if !self.schedulers.contains(&scheduler) {
                let known: Vec<&str> = self.schedulers.iter().map(|s| s.as_str()).collect();
                unsupported(
                    "scheduler",
                    format!(
                        "{scheduler} is not supported by the {backend} backend (it has: {})",
                        known.join(", ")
                    ),
                );
            }
        }
        if !self.session_affinity && port.session_affinity != SessionAffinity::None {
            unsupported(
                "session_affinity",
                format!("client IP affinity is not supported by the {backend} backend"),
            );
        }
        if !self.local_traffic_policy {
            if port.external_traffic_policy == TrafficPolicy::Local {
                unsupported(
                    "external_traffic_policy",
                    format!("local is not supported by the {backend} backend"),
                );
            }
            if port.internal_traffic_policy == TrafficPolicy::Local {
                unsupported(
                    "internal_traffic_policy",
                    format!("local is not supported by the {backend} backend"),
                );
            }
        }
        if !self.load_balancer_source_ranges && !port.load_balancer_source_ranges.is_empty() {
            unsupported(
                "load_balancer_source_ranges",
                format!("source ranges are not supported by the {backend} backend"),
            );
        }
        if !self.node_ports && port.node_port.is_some() {
            unsupported(
                "node_port",
                format!("node ports are not supported by the {backend} backend"),
            );
        }
        if !self.ipv6 {
            let has_v6 = port.service_ips().any(|ip| ip.is_ipv6())
                || port.endpoints.iter().any(|ep| ep.addr.is_ipv6());
            if has_v6 {
                unsupported(
                    "cluster_ips",
                    format!("IPv6 is not supported by the {backend} backend"),
                );
            }
        }
        problems
    }
}

/// A backend that turns a [`ServiceTable`] into kernel state (or a running proxy).
///
/// Implementations must keep what they had when a sync fails (atomic, or converging on the next
/// sync), own only what they create, and never panic on any valid table.
#[async_trait]
pub trait Dataplane: Send {
    /// A short name for logs and metrics labels (`userspace`, `iptables`, `ipvs`).
    fn name(&self) -> &'static str;

    /// What this backend can implement.
    fn capabilities(&self) -> Capabilities;

    /// Makes the dataplane implement `request.desired`.
    ///
    /// # Errors
    /// [`DataplaneError`] when the sync failed as a whole; the previous state must still be in place.
    async fn sync(&mut self, request: SyncRequest<'_>) -> Result<SyncReport, DataplaneError>;

    /// Removes everything this backend created, and nothing else.
    ///
    /// # Errors
    /// [`DataplaneError`] when something could not be removed; what could be was.
    async fn cleanup(&mut self) -> Result<CleanupReport, DataplaneError>;

    /// What a full sync of `table` would program, rendered for people; changes nothing, needs
    /// no privileges and does no I/O (only the backend's pure plan step runs). `svcproxy
    /// --dry-run` prints it, and [`crate::sync::SyncHandle::dry_run`] asks a running loop for it.
    ///
    /// # Errors
    /// [`DataplaneError`] when the backend cannot plan the table at all (a bad configuration).
    fn dry_run(&self, table: &ServiceTable) -> Result<DryRun, DataplaneError>;

    /// Registers this backend's metrics in the embedder's `registry`, once, before the first
    /// sync. Every backend uses the same convention as the sync loop's
    /// [`crate::metrics::SyncMetrics`]: kube-proxy's names under the `kubeproxy` prefix where
    /// kube-proxy has the metric, our own under `svcproxy`; pass the root registry. Series of a
    /// service port are removed when the port is. The default registers nothing.
    fn register_metrics(&mut self, registry: &mut Registry) {
        let _ = registry;
    }

    /// Checks, cheaply, whether what the last successful sync programmed is still in place:
    /// `true` when someone changed it behind our back (a flushed table, a deleted chain or
    /// hook), so that the sync loop runs a full sync now rather than at the next periodic
    /// resync. The loop calls it every [`crate::SyncConfig::drift_check_period`] while idle,
    /// never during a sync and never before the first success. It must cost little (a few
    /// kernel reads, no dump of the whole state) and must not block the async runtime. What it
    /// cannot see cheaply is left to the periodic full sync. The default sees nothing.
    ///
    /// # Errors
    /// [`DataplaneError`] when the check itself could not run; the loop logs it and checks
    /// again at the next period.
    async fn check_drift(&mut self) -> Result<bool, DataplaneError> {
        Ok(false)
    }

    /// Where this dataplane reads the node's addresses from, when they may change while it
    /// runs ([`crate::node_addresses`]): the sync loop waits on it and runs a partial sync after
    /// each change, in which the backend re-plans only what depends on the addresses (its node
    /// ports). `None` (the default): nothing outside the table changes what it programs.
    fn node_addresses(&self) -> Option<crate::node_addresses::NodeAddresses> {
        None
    }
}

#[async_trait]
impl<D: Dataplane + ?Sized> Dataplane for Box<D> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn capabilities(&self) -> Capabilities {
        (**self).capabilities()
    }
    async fn sync(&mut self, request: SyncRequest<'_>) -> Result<SyncReport, DataplaneError> {
        (**self).sync(request).await
    }
    async fn cleanup(&mut self) -> Result<CleanupReport, DataplaneError> {
        (**self).cleanup().await
    }
    fn dry_run(&self, table: &ServiceTable) -> Result<DryRun, DataplaneError> {
        (**self).dry_run(table)
    }
    fn register_metrics(&mut self, registry: &mut Registry) {
        (**self).register_metrics(registry);
    }
    async fn check_drift(&mut self) -> Result<bool, DataplaneError> {
        (**self).check_drift().await
    }
    fn node_addresses(&self) -> Option<crate::node_addresses::NodeAddresses> {
        (**self).node_addresses()
    }
}
