//! The request/response protocol and the backend servers the harness starts itself.
//!
//! A request is a 16-byte header (request body length, response length: both `u64` big-endian)
//! and the body; the server reads it all and answers with exactly the asked number of bytes, then
//! waits for the next request on the same connection until the client closes. One protocol covers
//! every scenario: a 64-byte ping-pong per connection, keep-alive request loops, and a bulk transfer
//! (a tiny request asking for a gigabyte).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;

use crate::error::BenchError;

/// The header's length in bytes.
pub const HEADER_LEN: usize = 16;

/// Backlog of the backend listeners (the kernel caps it at `net.core.somaxconn`).
const BACKLOG: u32 = 4096;

/// Chunk size of the server's writes and the client's reads in bulk transfers.
pub const CHUNK: usize = 256 * 1024;

/// What the server writes: zeros, from one static buffer.
static ZEROS: [u8; CHUNK] = [0; CHUNK];

/// Builds a request header.
pub fn header(request_len: u64, response_len: u64) -> [u8; HEADER_LEN] {
    let mut header = [0; HEADER_LEN];
    header[..8].copy_from_slice(&request_len.to_be_bytes());
    header[8..].copy_from_slice(&response_len.to_be_bytes());
    header
}

/// Reads a request header: (request body length, response length).
pub fn parse_header(header: &[u8; HEADER_LEN]) -> (u64, u64) {
    let mut request = [0; 8];
    let mut response = [0; 8];
    request.copy_from_slice(&header[..8]);
    response.copy_from_slice(&header[8..]);
    (u64::from_be_bytes(request), u64::from_be_bytes(response))
}

/// Sends one small request (header and `request_len` zero bytes, in one write) and reads the
/// whole `response_len`-byte answer. `buf` is reused scratch space.
///
/// # Errors
///
/// The socket's error, or [`BenchError::Protocol`] when the server closes early.
pub async fn round_trip(
    stream: &mut TcpStream,
    request_len: usize,
    response_len: usize,
    buf: &mut Vec<u8>,
) -> Result<(), BenchError> {
    let peer = stream
        .peer_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    buf.clear();
    buf.extend_from_slice(&header(request_len as u64, response_len as u64));
    buf.resize(HEADER_LEN + request_len, 0);
    stream
        .write_all(buf)
        .await
        .map_err(|e| BenchError::io(format!("write request to {peer}"), e))?;
    buf.resize(response_len.max(1), 0);
    match stream.read_exact(&mut buf[..response_len]).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(BenchError::Protocol {
            peer,
            detail: format!("closed before sending {response_len} response bytes"),
        }),
        Err(e) => Err(BenchError::io(format!("read response from {peer}"), e)),
    }
}

/// Backend servers on one port of several loopback (or namespace) addresses.
#[derive(Debug)]
pub struct Backends {
    addrs: Vec<SocketAddr>,
    accepted: Vec<Arc<AtomicU64>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Backends {
    /// Starts one server per address, all on the same port: `port`, or if 0 the first free port
    /// of the first address (tried a few times in case another address has it taken).
    ///
    /// # Errors
    ///
    /// [`BenchError::Io`] when an address cannot be bound.
    pub async fn start(ips: &[IpAddr], port: u16) -> Result<Backends, BenchError> {
        let mut last_error = None;
        for _attempt in 0..10 {
            match Self::try_start(ips, port).await {
                Ok(backends) => return Ok(backends),
                Err(e) if port == 0 => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| {
            BenchError::io("bind backends", std::io::ErrorKind::AddrInUse.into())
        }))
    }

    async fn try_start(ips: &[IpAddr], port: u16) -> Result<Backends, BenchError> {
        let mut backends = Backends {
            addrs: Vec::new(),
            accepted: Vec::new(),
            tasks: Vec::new(),
        };
        let mut port = port;
        for &ip in ips {
            let listener = listen(SocketAddr::new(ip, port))?;
            let addr = listener
                .local_addr()
                .map_err(|e| BenchError::io(format!("local address of backend {ip}"), e))?;
            port = addr.port();
            let accepted = Arc::new(AtomicU64::new(0));
            backends
                .tasks
                .push(tokio::spawn(serve(listener, accepted.clone())));
            backends.addrs.push(addr);
            backends.accepted.push(accepted);
        }
        Ok(backends)
    }

    /// The servers' addresses, in the order of the given IPs.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Connections accepted so far, per server.
    pub fn accepted(&self) -> Vec<u64> {
        self.accepted
            .iter()
            .map(|count| count.load(Ordering::Relaxed))
            .collect()
    }
}

impl Drop for Backends {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A listener with a deep backlog, so connection bursts are not dropped by the backend.
fn listen(addr: SocketAddr) -> Result<TcpListener, BenchError> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(|e| BenchError::io("create backend socket", e))?;
    socket
        .set_reuseaddr(true)
        .map_err(|e| BenchError::io("SO_REUSEADDR", e))?;
    socket
        .bind(addr)
        .map_err(|e| BenchError::io(format!("bind backend {addr}"), e))?;
    socket
        .listen(BACKLOG)
        .map_err(|e| BenchError::io(format!("listen on backend {addr}"), e))
}

/// Accepts forever; each connection is served on its own task.
async fn serve(listener: TcpListener, accepted: Arc<AtomicU64>) {
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                accepted.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    if let Err(e) = serve_connection(stream).await {
                        tracing::trace!(error = %e, "backend connection ended");
                    }
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "backend accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}

/// Answers requests until the client closes.
async fn serve_connection(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut header_buf = [0; HEADER_LEN];
    let mut scratch = vec![0; 16 * 1024];
    loop {
        match stream.read_exact(&mut header_buf).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let (mut request_left, mut response_left) = parse_header(&header_buf);
        while request_left > 0 {
            let want = scratch
                .len()
                .min(usize::try_from(request_left).unwrap_or(usize::MAX));
            let read = stream.read(&mut scratch[..want]).await?;
            if read == 0 {
                return Ok(());
            }
            request_left -= read as u64;
        }
        while response_left > 0 {
            let len = CHUNK.min(usize::try_from(response_left).unwrap_or(usize::MAX));
            stream.write_all(&ZEROS[..len]).await?;
            response_left -= len as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let bytes = header(64, 1 << 40);
        assert_eq!(parse_header(&bytes), (64, 1 << 40));
        assert_eq!(&bytes[..8], &64u64.to_be_bytes());
    }

    #[tokio::test]
    async fn backend_answers_the_asked_length_twice_on_one_connection() {
        let backends = Backends::start(&["127.0.0.1".parse().expect("literal")], 0)
            .await
            .expect("bind loopback");
        let mut stream = TcpStream::connect(backends.addrs()[0])
            .await
            .expect("connect");
        let mut buf = Vec::new();
        round_trip(&mut stream, 10, 100_000, &mut buf)
            .await
            .expect("first");
        round_trip(&mut stream, 0, 3, &mut buf)
            .await
            .expect("second");
        assert_eq!(backends.accepted(), vec![1]);
    }
}
