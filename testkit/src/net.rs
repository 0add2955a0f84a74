//! A TCP client for servers that answer each connection with a short text and close it.

use std::io::Read as _;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

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

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::net::TcpListener;

    use super::*;

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
