//! A minimal HTTP/1.1 responder for `/metrics`, `/healthz` and the demo's backends.
//!
//! Two fixed GET routes do not justify an HTTP framework: read the request head (bounded in size
//! and time), answer, close.

use std::net::SocketAddr;
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

/// `/metrics` (Prometheus text) and `/healthz` (kube-proxy style: 200 while the last sync is
/// recent, 503 otherwise, with a small JSON body).
pub async fn serve_status(listener: TcpListener, registry: Arc<Registry>, health: SyncHealth) {
    serve(listener, move |path| match path {
        "/metrics" => match encode_text(&registry) {
            Ok(text) => Response::new(200, "application/openmetrics-text; version=1.0.0; charset=utf-8", text),
            Err(err) => Response::new(500, "text/plain", format!("cannot encode metrics: {err}\n")),
        },
        "/healthz" | "/livez" => {
            let healthy = health.is_healthy();
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
            let body = format!(
                "{{\"healthy\": {healthy}, \"degraded\": {}, \"problems\": [{}], \"lastUpdated\": {last_updated:.3}, \"currentTime\": {:.3}}}\n",
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
