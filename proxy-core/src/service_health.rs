//! Health-check node ports: what an external load balancer asks a node before sending it a
//! service's traffic, for services with `external_traffic_policy: local`.
//!
//! With a `Local` external policy only nodes that run a ready endpoint of the service should
//! get its external traffic, and the load balancer learns which by polling each node's
//! `health_check_node_port`. kube-proxy answers there (`pkg/proxy/healthcheck`), and so does
//! [`ServiceHealthServer`], in the same shape: any path, `200` while the service has a local
//! *ready* endpoint and `503` otherwise (serving-but-terminating endpoints do not count, so a
//! load balancer drains a node whose last local endpoint is shutting down), a JSON body
//! `{"service":{"namespace":..,"name":..},"localEndpoints":N,"serviceProxyHealthy":true}` and
//! the header `X-Load-Balancing-Endpoint-Weight: N`.
//!
//! It works with every backend: [`WithServiceHealth`] wraps any [`Dataplane`] and updates the
//! server after each successful sync. A health port that cannot be bound is logged and reported
//! by [`ServiceHealthServer::update`] without failing the dataplane's sync: the data path must
//! not depend on a health endpoint.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use proxy_core::service_health::ServiceHealthServer;
//! use proxy_core::ServiceTable;
//!
//! let mut health = ServiceHealthServer::new(vec!["0.0.0.0".parse()?]);
//! let table: ServiceTable = proxy_core::file::load_table("services.yaml".as_ref())?;
//! health.update(&table).await?; // listens on each Local service's health_check_node_port
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::dataplane::{CleanupReport, Dataplane, DryRun, SyncMode, SyncReport, SyncRequest};
use crate::diff::ChangeSet;
use crate::error::DataplaneError;
use crate::table::{ServiceTable, TrafficPolicy};
use crate::{Capabilities, ServicePort};

/// The most request-head bytes read before answering (the answer does not depend on them).
const MAX_HEAD_BYTES: usize = 4 * 1024;
/// How long a client may take to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// What one health-check node port answers for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceHealth {
    /// The service's namespace.
    pub namespace: String,
    /// The service's name.
    pub name: String,
    /// Distinct addresses of the service's local, ready endpoints (over all its ports).
    pub local_endpoints: usize,
}

/// The health-check node ports `table` asks for: every service port with a `Local` external
/// policy, external addresses and a `health_check_node_port`. Ports of one service share their
/// health port; the count is of distinct local ready endpoint addresses over all of them.
pub fn desired_health(table: &ServiceTable) -> BTreeMap<u16, ServiceHealth> {
    let mut addresses: BTreeMap<u16, (ServiceHealth, BTreeSet<IpAddr>)> = BTreeMap::new();
    for port in table.iter().filter(|p| answers_health_checks(p)) {
        let Some(health_port) = port.health_check_node_port else {
            continue;
        };
        let (_, local) = addresses.entry(health_port).or_insert_with(|| {
            (
                ServiceHealth {
                    namespace: port.name.namespace.clone(),
                    name: port.name.name.clone(),
                    local_endpoints: 0,
                },
                BTreeSet::new(),
            )
        });
        local.extend(
            port.endpoints
                .iter()
                .filter(|ep| ep.is_local && ep.ready)
                .map(|ep| ep.addr),
        );
    }
    addresses
        .into_iter()
        .map(|(port, (mut health, local))| {
            health.local_endpoints = local.len();
            (port, health)
        })
        .collect()
}

fn answers_health_checks(port: &ServicePort) -> bool {
    port.external_traffic_policy == TrafficPolicy::Local
        && port.has_external_addresses()
        && port.health_check_node_port.is_some()
}

/// A health-check port that could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("health-check node port {addr} of {namespace}/{name}: {error}")]
pub struct BindError {
    /// The address and port.
    pub addr: SocketAddr,
    /// The service's namespace.
    pub namespace: String,
    /// The service's name.
    pub name: String,
    /// Why: in the message, not a `source`, so that a chain of causes prints it once (this
    /// error is also summed up in [`ServiceHealthError`]'s message, which has no source).
    pub error: std::io::Error,
}

/// Why [`ServiceHealthServer::update`] did not open every port; the others are serving.
#[derive(Debug, thiserror::Error)]
#[error("{} health-check node port(s) not open: {}", .failures.len(), first(.failures))]
pub struct ServiceHealthError {
    /// Each port that could not be opened.
    pub failures: Vec<BindError>,
}

fn first(failures: &[BindError]) -> String {
    failures
        .first()
        .map(ToString::to_string)
        .unwrap_or_default()
}

type SharedHealth = Arc<RwLock<HashMap<u16, ServiceHealth>>>;

/// Serves the health-check node ports of a table; see the [module docs](self).
#[derive(Debug)]
pub struct ServiceHealthServer {
    bind: Vec<IpAddr>,
    health: SharedHealth,
    /// The accept loop of each open port (one per bind address); aborted when the port goes.
    listeners: BTreeMap<u16, Vec<JoinHandle<()>>>,
}

impl ServiceHealthServer {
    /// A server that will listen on `bind` (the node's addresses; `0.0.0.0` for every IPv4
    /// address). Nothing is opened until [`ServiceHealthServer::update`].
    pub fn new(bind: Vec<IpAddr>) -> Self {
        ServiceHealthServer {
            bind,
            health: Arc::default(),
            listeners: BTreeMap::new(),
        }
    }

    /// Makes the open ports and their answers match `table`: new health ports are opened,
    /// ports no longer asked for are closed, counts change at once for the next request.
    ///
    /// # Errors
    /// [`ServiceHealthError`] naming each port that could not be opened (in use, no
    /// permission); every other port is updated all the same, and a later update retries.
    pub async fn update(&mut self, table: &ServiceTable) -> Result<(), ServiceHealthError> {
        let desired = desired_health(table);
        let gone: Vec<u16> = self
            .listeners
            .keys()
            .filter(|port| !desired.contains_key(port))
            .copied()
            .collect();
        for port in gone {
            for task in self.listeners.remove(&port).into_iter().flatten() {
                task.abort();
            }
            info!(port, "health-check node port closed");
        }
        {
            let mut health = self.health.write().unwrap_or_else(|e| e.into_inner());
            health.clear();
            health.extend(desired.iter().map(|(port, h)| (*port, h.clone())));
        }
        let mut failures = Vec::new();
        for (port, service) in &desired {
            if self.listeners.contains_key(port) {
                continue;
            }
            let mut tasks = Vec::new();
            for ip in &self.bind {
                let addr = SocketAddr::new(*ip, *port);
                match TcpListener::bind(addr).await {
                    Ok(listener) => {
                        let health = Arc::clone(&self.health);
                        tasks.push(tokio::spawn(serve(listener, *port, health)));
                    }
                    Err(error) => failures.push(BindError {
                        addr,
                        namespace: service.namespace.clone(),
                        name: service.name.clone(),
                        error,
                    }),
                }
            }
            if tasks.len() == self.bind.len() {
                info!(port, service = %format_args!("{}/{}", service.namespace, service.name),
                    "health-check node port open");
                self.listeners.insert(*port, tasks);
            } else {
                // All or nothing per port, so the next update retries the whole port.
                tasks.iter().for_each(JoinHandle::abort);
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(ServiceHealthError { failures })
        }
    }

    /// The ports open now.
    pub fn open_ports(&self) -> Vec<u16> {
        self.listeners.keys().copied().collect()
    }

    /// What `port` answers now, if it is asked for.
    pub fn health(&self, port: u16) -> Option<ServiceHealth> {
        let health = self.health.read().unwrap_or_else(|e| e.into_inner());
        health.get(&port).cloned()
    }

    /// Closes every port.
    pub fn close(&mut self) {
        for task in std::mem::take(&mut self.listeners).into_values().flatten() {
            task.abort();
        }
        self.health
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

impl Drop for ServiceHealthServer {
    fn drop(&mut self) {
        self.close();
    }
}

/// The response to any request on `port`.
fn response(port: u16, health: &SharedHealth) -> String {
    let current = health
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(&port)
        .cloned();
    let (status, body, weight) = match current {
        Some(h) => {
            let body = serde_json::json!({
                "service": {"namespace": h.namespace, "name": h.name},
                "localEndpoints": h.local_endpoints,
                "serviceProxyHealthy": true,
            });
            let status = if h.local_endpoints > 0 {
                "200 OK"
            } else {
                "503 Service Unavailable"
            };
            (status, body.to_string(), h.local_endpoints)
        }
        // Closed between accept and answer.
        None => ("404 Not Found", "{}".to_owned(), 0),
    };
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nX-Content-Type-Options: nosniff\r\n\
         X-Load-Balancing-Endpoint-Weight: {weight}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

async fn serve(listener: TcpListener, port: u16, health: SharedHealth) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                debug!(port, error = %err, "health-check accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let health = Arc::clone(&health);
        tokio::spawn(async move {
            if let Err(err) = answer(stream, port, &health).await {
                debug!(port, %peer, error = %err, "health-check answer not sent");
            }
        });
    }
}

async fn answer(mut stream: TcpStream, port: u16, health: &SharedHealth) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 512];
    let read_head = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD_BYTES {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    };
    tokio::time::timeout(READ_TIMEOUT, read_head)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "request head"))??;
    stream.write_all(response(port, health).as_bytes()).await?;
    stream.shutdown().await
}

/// Whether `changes` adds, removes or changes a port that has (or had) a health-check port.
fn touches_health_ports(changes: &ChangeSet) -> bool {
    let has = |port: &ServicePort| port.health_check_node_port.is_some();
    changes.added.iter().chain(&changes.removed).any(|p| has(p))
        || changes
            .changed
            .iter()
            .any(|c| has(&c.previous) || has(&c.current))
}

/// Any [`Dataplane`] plus a [`ServiceHealthServer`] updated after each successful sync.
///
/// A health port that cannot be opened is logged (`warn`) and retried at the next sync; it
/// never fails the sync. Cleanup closes every health port, then cleans up the dataplane.
#[derive(Debug)]
pub struct WithServiceHealth<D> {
    inner: D,
    health: ServiceHealthServer,
}

impl<D: Dataplane> WithServiceHealth<D> {
    /// Wraps `inner`; health ports listen on `bind`.
    pub fn new(inner: D, bind: Vec<IpAddr>) -> Self {
        WithServiceHealth {
            inner,
            health: ServiceHealthServer::new(bind),
        }
    }

    /// The health server.
    pub fn health(&self) -> &ServiceHealthServer {
        &self.health
    }

    /// The wrapped dataplane.
    pub fn inner(&self) -> &D {
        &self.inner
    }
}

#[async_trait]
impl<D: Dataplane> Dataplane for WithServiceHealth<D> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn sync(&mut self, request: SyncRequest<'_>) -> Result<SyncReport, DataplaneError> {
        let desired = request.desired;
        // A partial sync that touches no port with a health-check port leaves every answer as
        // it was: skip the walk over the whole table. (`changes` is relative to the last
        // successful sync, which is also when the server was last updated.)
        let update = request.mode == SyncMode::Full || touches_health_ports(request.changes);
        let report = self.inner.sync(request).await?;
        if update {
            if let Err(err) = self.health.update(desired).await {
                warn!(error = %err, "health-check node ports");
            }
        }
        Ok(report)
    }

    async fn cleanup(&mut self) -> Result<CleanupReport, DataplaneError> {
        self.health.close();
        self.inner.cleanup().await
    }

    fn dry_run(&self, table: &ServiceTable) -> Result<DryRun, DataplaneError> {
        let mut dry_run = self.inner.dry_run(table)?;
        for (port, health) in desired_health(table) {
            dry_run.rendered.push_str(&format!(
                "# health-check node port {port}: {}/{} ({} local endpoint(s))\n",
                health.namespace, health.name, health.local_endpoints
            ));
        }
        Ok(dry_run)
    }

    fn register_metrics(&mut self, registry: &mut prometheus_client::registry::Registry) {
        self.inner.register_metrics(registry);
    }

    async fn check_drift(&mut self) -> Result<bool, DataplaneError> {
        self.inner.check_drift().await
    }

    fn node_addresses(&self) -> Option<crate::node_addresses::NodeAddresses> {
        self.inner.node_addresses()
    }
}

#[cfg(test)]
mod tests;
