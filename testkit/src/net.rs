//! TCP servers that answer each connection with a short text and close it (a backend that says
//! who it is), and the client that reads such an answer.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// A TCP server on a thread of its own that answers each connection with a text (computed from
/// the peer's address) and closes it. Stopped on drop, or by [`AnswerServer::stop`], which says
/// how many connections it answered.
///
/// The listener is bound by the caller, so a test can bind it inside a namespace
/// (`ns.run(|| TcpListener::bind(addr))`): a socket stays in the namespace it was made in, and
/// the serving thread may run anywhere.
#[derive(Debug)]
pub struct AnswerServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    served: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl AnswerServer {
    /// Serves `listener`, answering each connection with `answer(peer)`.
    ///
    /// # Panics
    ///
    /// When the listener's address cannot be read or it cannot be made non-blocking.
    pub fn start(
        listener: TcpListener,
        answer: impl Fn(SocketAddr) -> String + Send + 'static,
    ) -> Self {
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("non-blocking listener on {addr}: {e}"));
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicUsize::new(0));
        let thread = {
            let (stop, served) = (Arc::clone(&stop), Arc::clone(&served));
            std::thread::spawn(move || {
                // Polled, so that the stop flag is seen within a few milliseconds.
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((mut conn, peer)) => {
                            let _ = conn.set_nonblocking(false);
                            let _ = conn.write_all(answer(peer).as_bytes());
                            served.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(2)),
                    }
                }
            })
        };
        Self {
            addr,
            stop,
            served,
            thread: Some(thread),
        }
    }

    /// Binds `addr` (in the calling thread's namespace) and answers every connection with `text`.
    ///
    /// # Panics
    ///
    /// When `addr` cannot be bound.
    pub fn named(addr: SocketAddr, text: &str) -> Self {
        let listener =
            TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind answer server {addr}: {e}"));
        let text = text.to_owned();
        Self::start(listener, move |_| text.clone())
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many connections it has answered so far.
    pub fn served(&self) -> usize {
        self.served.load(Ordering::Relaxed)
    }

    /// Stops serving and returns how many connections it answered.
    pub fn stop(mut self) -> usize {
        self.shut_down();
        self.served()
    }

    fn shut_down(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for AnswerServer {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// A free TCP port on `ip` (bound, then released: the caller binds it right after).
///
/// # Panics
///
/// When nothing can be bound on `ip`.
pub fn free_port(ip: impl Into<std::net::IpAddr>) -> u16 {
    let ip = ip.into();
    TcpListener::bind((ip, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .unwrap_or_else(|e| panic!("cannot find a free port on {ip}: {e}"))
}

/// Connects to `addr` and reads until the server closes: its whole answer. `timeout` bounds the
/// connect and each read.
///
/// # Errors
///
/// The connect or read error (a refused or timed-out connection is often what a test asserts).
pub fn ask(addr: SocketAddr, timeout: Duration) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

/// One `GET path` over HTTP/1.1 (the server closes after answering, as svcproxy's status server
/// does): the status code and the body. `timeout` bounds the connect and each read.
///
/// # Errors
///
/// The connect, write or read error, or `InvalidData` when the answer is not an HTTP response.
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> std::io::Result<(u16, String)> {
    use std::io::Write as _;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let invalid = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not HTTP: {answer:?}"),
        )
    };
    let (head, body) = answer.split_once("\r\n\r\n").ok_or_else(invalid)?;
    let status = head
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| head.strip_prefix("HTTP/1.0 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .ok_or_else(invalid)?;
    Ok((status, body.to_owned()))
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn answer_server_answers_each_peer_and_counts() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let server = AnswerServer::start(listener, |peer| format!("hi {}", peer.ip()));
        for _ in 0..3 {
            assert_eq!(
                ask(server.addr(), Duration::from_secs(2)).expect("answer"),
                "hi 127.0.0.1"
            );
        }
        assert_eq!(server.served(), 3);
        let addr = server.addr();
        assert_eq!(server.stop(), 3);
        let err = ask(addr, Duration::from_secs(2)).expect_err("stopped");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    }

    /// Serves one connection: reads the request head, answers `answer`, closes.
    fn serve_once(answer: &'static str) -> (SocketAddr, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("bound");
        let thread = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().expect("accept");
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).expect("read") == 1 {
                head.push(byte[0]);
            }
            conn.write_all(answer.as_bytes()).expect("write");
            String::from_utf8_lossy(&head).into_owned()
        });
        (addr, thread)
    }

    #[test]
    fn http_get_reads_the_status_and_the_body() {
        let (addr, server) =
            serve_once("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 3\r\n\r\nno\n");
        let got = http_get(addr, "/healthz", Duration::from_secs(2)).expect("answer");
        assert_eq!(got, (503, "no\n".to_owned()));
        let request = server.join().expect("server");
        assert!(
            request.starts_with("GET /healthz HTTP/1.1\r\n"),
            "{request:?}"
        );

        let (addr, server) = serve_once("hello");
        let err = http_get(addr, "/", Duration::from_secs(2)).expect_err("not HTTP");
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        server.join().expect("server");
    }

    #[test]
    fn named_answer_server_says_its_name() {
        let server = AnswerServer::named(([127, 0, 0, 1], 0).into(), "blue");
        assert_eq!(
            ask(server.addr(), Duration::from_secs(2)).expect("answer"),
            "blue"
        );
    }

    #[test]
    fn ask_reads_the_whole_answer_and_reports_refusals() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().expect("accept");
            conn.write_all(b"hello ").expect("write");
            conn.write_all(b"there").expect("write");
        });
        assert_eq!(
            ask(addr, Duration::from_secs(2)).expect("answer"),
            "hello there"
        );
        server.join().expect("server thread");
        // The listener is gone: nothing listens on that port any more.
        let err = ask(addr, Duration::from_secs(2)).expect_err("refused");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    }
}
