//! A minimal HTTP/1.1 responder for `/metrics`, `/healthz` and the demo's backends.
//!
//! Two fixed GET routes do not justify an HTTP framework: read the request head (bounded in size
//! and time), answer, close.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::registry::Registry;
use proxy_core::metrics::encode_text;
use proxy_core::sync::SyncHealth;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tracing::debug;

const MAX_HEAD_BYTES: usize = 8 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// One response.
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Response {
    pub fn new(status: u16, content_type: &'static str, body: String) -> Self {
        Self {
            status,
            content_type,
            body,
        }
    }
}

/// Binds a TCP listener, with the address in the error.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|err| std::io::Error::new(err.kind(), format!("cannot listen on {addr}: {err}")))
}

/// Reads one request head and returns its path (`None` if the request is malformed or too slow).
async fn read_path(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let read = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD_BYTES {
            let n = stream.read(&mut buf).await.ok()?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Some(())
    };
    tokio::time::timeout(READ_TIMEOUT, read).await.ok()??;
    let line = head.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    let _method = parts.next()?;
    Some(parts.next()?.to_owned())
}

async fn respond(stream: &mut TcpStream, response: Response) -> std::io::Result<()> {
    let reason = match response.status {
        200 => "OK",
        404 => "Not Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    };
    let head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        response.status,
        response.content_type,
        response.body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(response.body.as_bytes()).await?;
    stream.shutdown().await
}

/// Serves every connection on `listener` with `handler(path)`, one task per connection.
pub async fn serve<H>(listener: TcpListener, handler: H)
where
    H: Fn(&str) -> Response + Send + Sync + 'static,
{
    let handler = Arc::new(handler);
    loop {
        let (mut stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                debug!(error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let handler = Arc::clone(&handler);
        tokio::spawn(async move {
            let Some(path) = read_path(&mut stream).await else {
                return;
            };
            let response = handler(&path);
            if let Err(err) = respond(&mut stream, response).await {
                debug!(%peer, error = %err, "response not sent");
            }
        });
    }
}

fn unix_seconds(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Whether load balancers should send this node traffic: kube-proxy's `nodeEligible` (KEP-3836).
/// A node being deleted, or tainted `ToBeDeletedByClusterAutoscaler`, is not eligible: its
/// `/healthz` answers 503 so that load balancers drain it before it goes, while `/livez` (is the
/// proxy itself alive?) does not look at it. Only a source that knows the node (Kubernetes) sets
/// it; shared between that source and the status server.
#[derive(Debug, Clone)]
pub struct NodeEligibility(Arc<AtomicBool>);

impl Default for NodeEligibility {
    fn default() -> Self {
        Self(Arc::new(AtomicBool::new(true)))
    }
}

impl NodeEligibility {
    /// Whether the node takes load-balancer traffic.
    pub fn is_eligible(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Sets it; true when that changed it.
    pub fn set(&self, eligible: bool) -> bool {
        self.0.swap(eligible, Ordering::Relaxed) != eligible
    }
}

/// Whether `/healthz` or `/livez` answers 200: the last sync is recent and, for `/healthz`, the
/// node (when the source knows it) is eligible.
fn is_healthy(path: &str, synced: bool, node_eligible: Option<bool>) -> bool {
    synced && (path == "/livez" || node_eligible != Some(false))
}

/// `/metrics` (Prometheus text), and `/healthz` and `/livez` as kube-proxy serves them: 200 while
/// the last sync is recent, 503 otherwise, with a small JSON body. With `node` (a source that
/// knows the node), `/healthz` also answers 503 while the node is not eligible and says so in
/// `nodeEligible`; `/livez` ignores it.
pub async fn serve_status(
    listener: TcpListener,
    registry: Arc<Registry>,
    health: SyncHealth,
    node: Option<NodeEligibility>,
) {
    serve(listener, move |path| match path {
        "/metrics" => match encode_text(&registry) {
            Ok(text) => Response::new(200, "application/openmetrics-text; version=1.0.0; charset=utf-8", text),
            Err(err) => Response::new(500, "text/plain", format!("cannot encode metrics: {err}\n")),
        },
        "/healthz" | "/livez" => {
            let synced = health.is_healthy();
            let node_eligible = node.as_ref().map(NodeEligibility::is_eligible);
            let healthy = is_healthy(path, synced, node_eligible);
            let last_updated = health
                .last_success()
                .map(|at| {
                    // SyncHealth keeps tokio instants; turn the age into wall-clock time.
                    let age = tokio::time::Instant::now().saturating_duration_since(at);
                    unix_seconds(SystemTime::now() - age)
                })
                .unwrap_or(0.0);
            // What the node runs without: the backend's problems and the skipped service ports.
            let problems: Vec<String> = health
                .problems()
                .iter()
                .map(|p| serde_json::Value::from(p.as_str()).to_string())
                .collect();
            let eligible = node_eligible
                .map(|eligible| format!(", \"nodeEligible\": {eligible}"))
                .unwrap_or_default();
            let body = format!(
                "{{\"healthy\": {healthy}, \"synced\": {synced}{eligible}, \"degraded\": {}, \"problems\": [{}], \"lastUpdated\": {last_updated:.3}, \"currentTime\": {:.3}}}\n",
                !problems.is_empty(),
                problems.join(", "),
                unix_seconds(SystemTime::now())
            );
            Response::new(if healthy { 200 } else { 503 }, "application/json", body)
        }
        _ => Response::new(404, "text/plain", "try /metrics or /healthz\n".to_owned()),
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_eligibility_is_shared_and_reports_changes() {
        let node = NodeEligibility::default();
        let seen_by_the_server = node.clone();
        assert!(seen_by_the_server.is_eligible());
        assert!(node.set(false), "a change");
        assert!(!node.set(false), "no change");
        assert!(!seen_by_the_server.is_eligible());
        assert!(node.set(true));
        assert!(seen_by_the_server.is_eligible());
    }

    #[test]
    fn healthz_fails_for_a_node_not_eligible_and_livez_does_not() {
        for path in ["/healthz", "/livez"] {
            assert!(is_healthy(path, true, None), "{path}: no node known");
            assert!(is_healthy(path, true, Some(true)), "{path}");
            assert!(!is_healthy(path, false, Some(true)), "{path}: sync overdue");
            assert!(!is_healthy(path, false, None), "{path}: sync overdue");
        }
        assert!(!is_healthy("/healthz", true, Some(false)));
        assert!(is_healthy("/livez", true, Some(false)));
    }
}
