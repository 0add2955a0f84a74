//! The IPVS test topology on testkit's namespaces: a client and a server namespace joined by
//! veth pairs to the node (the namespace of the thread that builds it), servers that say who
//! they are and echo, and clients that count who answered.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use testkit::netns::Netns;
use testkit::process::run_with_stdin;

pub const NEEDS_VM: &str = "needs root, IPVS, ipset and iptables: run via scripts/vm-test";
pub const TIMEOUT: Duration = Duration::from_secs(5);

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address literal")
}

pub fn sa(s: &str) -> SocketAddr {
    s.parse().expect("test socket address literal")
}

// === the namespaces ===

/// The client and server namespaces around the node, deleted on drop. The node is the
/// namespace of the thread that made the topology: a test body runs in
/// [`testkit::netns::in_new_netns`], so its node goes with its thread.
pub struct Topology {
    pub client: Netns,
    pub server: Netns,
}

impl Topology {
    /// Builds the client and server namespaces around this thread's namespace, the node.
    ///
    /// # Panics
    ///
    /// When this thread is in the root namespace (the node is programmed: it must be a test's
    /// own), or when `ip` fails.
    pub fn new(tag: &str) -> Self {
        assert_ne!(
            testkit::netns::current(),
            root_netns(),
            "Topology::new programs this thread's namespace: call it inside in_new_netns"
        );
        let topo = Topology {
            client: Netns::new(&format!("{tag}-cli")),
            server: Netns::new(&format!("{tag}-srv")),
        };
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").expect("ip_forward");
        std::fs::write("/proc/sys/net/ipv6/conf/all/forwarding", "1").expect("forwarding");
        // One `ip -batch` per namespace: process starts are slow in the emulated VM.
        let mut node = vec!["link set lo up".to_owned()];
        for (peer, ns, node4, node6, addrs) in [
            (
                "n-cli",
                &topo.client,
                "198.18.2.1",
                "2001:db8:2::1",
                &["198.18.2.10/24", "2001:db8:2::10/64"][..],
            ),
            (
                "n-srv",
                &topo.server,
                "198.18.1.1",
                "2001:db8:1::1",
                &[
                    "198.18.1.10/24",
                    "198.18.1.11/24",
                    "2001:db8:1::10/64",
                    "2001:db8:1::11/64",
                ][..],
            ),
        ] {
            node.extend([
                format!(
                    "link add {peer} type veth peer name eth0 netns {}",
                    ns.name()
                ),
                format!("addr add {node4}/24 dev {peer}"),
                format!("addr add {node6}/64 dev {peer} nodad"),
                format!("link set {peer} up"),
            ]);
            let mut inside: Vec<String> = addrs
                .iter()
                .map(|addr| {
                    let nodad = if addr.contains(':') { " nodad" } else { "" };
                    format!("addr add {addr} dev eth0{nodad}")
                })
                .collect();
            inside.extend([
                "link set lo up".to_owned(),
                "link set eth0 up".to_owned(),
                format!("route add default via {node4}"),
                // The gateway's family makes this an IPv6 route (no `-6` in batch lines).
                format!("route add default via {node6}"),
            ]);
            node_batch(&node);
            node.clear();
            // The veth end must exist in `ns` before its own batch runs.
            ns.ip_batch(&inside);
        }
        topo
    }

    /// Runs `f` in the client namespace and waits for it.
    pub fn client<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.client.run(f)
    }
}

/// `ip -batch -` with `lines`, in this thread's namespace (the node).
fn node_batch(lines: &[String]) {
    let input: String = lines.iter().map(|line| format!("{line}\n")).collect();
    run_with_stdin("ip", &["-batch", "-"], &input);
}

/// The root network namespace as `/proc` names it (pid 1's), which a test never programs.
fn root_netns() -> String {
    std::fs::read_link("/proc/1/ns/net")
        .unwrap_or_else(|e| panic!("read /proc/1/ns/net: {e}; {NEEDS_VM}"))
        .display()
        .to_string()
}

/// Servers in the server namespace: each TCP connection gets "<local> <peer>\n" and then an
/// echo of what it sends; each UDP datagram gets "<local> <peer>". Stopped on drop.
pub struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Servers {
    pub fn start(topo: &Topology, addrs: &[&str]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for addr in addrs {
            let addr = sa(addr);
            let stop_tcp = Arc::clone(&stop);
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            let ready_udp = ready_tx.clone();
            threads.push(topo.server.spawn(move || {
                let listener = TcpListener::bind(addr).expect("bind TCP backend");
                listener.set_nonblocking(true).expect("nonblocking");
                let _ = ready_tx.send(());
                while !stop_tcp.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((conn, peer)) => {
                            thread::spawn(move || serve_tcp(conn, addr, peer));
                        }
                        Err(_) => thread::sleep(Duration::from_millis(5)),
                    }
                }
            }));
            let stop_udp = Arc::clone(&stop);
            threads.push(topo.server.spawn(move || {
                let socket = UdpSocket::bind(addr).expect("bind UDP backend");
                socket
                    .set_read_timeout(Some(Duration::from_millis(20)))
                    .expect("timeout");
                let _ = ready_udp.send(());
                let mut buf = [0u8; 512];
                while !stop_udp.load(Ordering::Relaxed) {
                    if let Ok((_, peer)) = socket.recv_from(&mut buf) {
                        let _ = socket.send_to(format!("{addr} {peer}").as_bytes(), peer);
                    }
                }
            }));
            for _ in 0..2 {
                ready_rx.recv_timeout(TIMEOUT).expect("backend ready");
            }
        }
        Servers { stop, threads }
    }
}

pub fn serve_tcp(mut conn: TcpStream, local: SocketAddr, peer: SocketAddr) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    if conn
        .write_all(format!("{local} {peer}\n").as_bytes())
        .is_err()
    {
        return;
    }
    let mut buf = [0u8; 256];
    while let Ok(n) = conn.read(&mut buf) {
        if n == 0 || conn.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// One TCP connection to `vip`: the server's "<local> <peer>" greeting.
pub fn tcp_hello(vip: SocketAddr) -> std::io::Result<(SocketAddr, SocketAddr)> {
    let conn = TcpStream::connect_timeout(&vip, TIMEOUT)?;
    conn.set_read_timeout(Some(TIMEOUT))?;
    let mut line = String::new();
    BufReader::new(conn).read_line(&mut line)?;
    Ok(parse_greeting(&line))
}

pub fn parse_greeting(line: &str) -> (SocketAddr, SocketAddr) {
    let mut words = line.split_whitespace().map(sa);
    match (words.next(), words.next()) {
        (Some(local), Some(peer)) => (local, peer),
        _ => panic!("unexpected greeting {line:?}"),
    }
}

/// How many of `n` new connections each real server took.
pub fn tcp_spread(topo: &Topology, vip: &str, n: usize) -> BTreeMap<SocketAddr, usize> {
    let vip = sa(vip);
    topo.client(move || {
        let mut seen = BTreeMap::new();
        for _ in 0..n {
            let (server, _) = tcp_hello(vip).unwrap_or_else(|e| panic!("connect {vip}: {e}"));
            *seen.entry(server).or_default() += 1;
        }
        seen
    })
}

pub fn udp_spread(topo: &Topology, vip: &str, n: usize) -> BTreeMap<SocketAddr, usize> {
    let vip = sa(vip);
    topo.client(move || {
        let mut seen = BTreeMap::new();
        for _ in 0..n {
            // A new socket (source port) per datagram: a new IPVS connection each.
            let any = if vip.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
            let socket = UdpSocket::bind(any).expect("bind client");
            socket.set_read_timeout(Some(TIMEOUT)).expect("timeout");
            socket.send_to(b"hello", vip).expect("send");
            let mut buf = [0u8; 512];
            let (len, _) = socket.recv_from(&mut buf).expect("UDP answer");
            let (server, _) = parse_greeting(&String::from_utf8_lossy(&buf[..len]));
            *seen.entry(server).or_default() += 1;
        }
        seen
    })
}

/// A TCP connection from a given local address.
pub fn socket_from(local: SocketAddr, remote: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(remote),
        socket2::Type::STREAM,
        None,
    )
    .expect("socket");
    socket.bind(&local.into()).expect("bind source");
    socket
        .connect_timeout(&remote.into(), TIMEOUT)
        .unwrap_or_else(|e| panic!("connect {remote} from {local}: {e}"));
    socket.into()
}
