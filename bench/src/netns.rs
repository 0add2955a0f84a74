//! Network namespaces for the kernel backends' benchmarks (issues #4 and #5): a client
//! namespace, a node namespace (where the dataplane under test runs, routing between the two
//! sides) and a server namespace, joined by veth pairs, with addresses in 198.18.0.0/15.
//!
//! ```text
//!  client ns                  node ns                          server ns
//!  c0 198.18.0.1/24  <-veth->  n0 198.18.0.254/24
//!                              n1 198.18.1.254/24  <-veth->  s0 198.18.1.1/24 (+ .2, .3 ...)
//! ```
//!
//! Everything is made with `ip` inside the new namespaces (each veth is created with both ends
//! already in their namespaces), so the root namespace's links, routes and firewall are never
//! touched. [`Topology`]'s `Drop` deletes the namespaces, which deletes their veths.
//! [`Topology::command`] runs a program inside one of them, e.g. this harness itself re-executed
//! as the load generator (`bench load ...`) or as backends (`bench serve ...`).

use std::io::BufRead as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::error::BenchError;
use crate::load::{LoadOutcome, LoadSpec};

/// The client's address.
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The node's address on the client side (the client's gateway).
pub const NODE_CLIENT_SIDE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 254);
/// The node's address on the server side (the servers' gateway).
pub const NODE_SERVER_SIDE: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 254);

/// The `n`th server address (`n` from 0): 198.18.1.1, 198.18.1.2, ...
///
/// # Panics
///
/// If `n >= 250` (the /24 would run into the gateway).
pub fn server_addr(n: u8) -> Ipv4Addr {
    assert!(n < 250, "server address {n} out of the /24");
    Ipv4Addr::new(198, 18, 1, n + 1)
}

/// The three namespaces' roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Runs the load generator.
    Client,
    /// Runs the dataplane under test and routes between client and server.
    Node,
    /// Runs the backends.
    Server,
}

/// One network namespace, deleted on drop.
#[derive(Debug)]
struct Netns {
    name: String,
}

impl Netns {
    fn add(name: String) -> Result<Netns, BenchError> {
        run_ip(&["netns", "add", &name])?;
        Ok(Netns { name })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = run_ip(&["netns", "del", &self.name]) {
            tracing::warn!(netns = %self.name, error = %e, "cannot delete namespace");
        }
    }
}

/// The client/node/server namespaces and their links. Dropping it removes them all.
#[derive(Debug)]
pub struct Topology {
    // Dropped in declaration order; each namespace removes its own veth ends.
    client: Netns,
    node: Netns,
    server: Netns,
    servers: u8,
}

impl Topology {
    /// Builds the topology with `servers` addresses on the server side (at least one), with
    /// namespace names `<prefix>-client`, `<prefix>-node`, `<prefix>-server`. Needs root.
    ///
    /// # Errors
    ///
    /// [`BenchError::Command`] or [`BenchError::Spawn`] when an `ip` command fails; whatever
    /// was already made is removed.
    pub fn create(prefix: &str, servers: u8) -> Result<Topology, BenchError> {
        let servers = servers.clamp(1, 249);
        let topology = Topology {
            client: Netns::add(format!("{prefix}-client"))?,
            node: Netns::add(format!("{prefix}-node"))?,
            server: Netns::add(format!("{prefix}-server"))?,
            servers,
        };
        topology.wire()?;
        Ok(topology)
    }

    fn wire(&self) -> Result<(), BenchError> {
        let (c, n, s) = (&self.client.name, &self.node.name, &self.server.name);
        // Each veth is born with its ends in the namespaces: no name in the root namespace.
        run_ip(&[
            "link", "add", "c0", "netns", c, "type", "veth", "peer", "name", "n0", "netns", n,
        ])?;
        run_ip(&[
            "link", "add", "n1", "netns", n, "type", "veth", "peer", "name", "s0", "netns", s,
        ])?;
        for ns in [c, n, s] {
            run_ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        let client = format!("{CLIENT_ADDR}/24");
        let node_client = format!("{NODE_CLIENT_SIDE}/24");
        let node_server = format!("{NODE_SERVER_SIDE}/24");
        run_ip(&["-n", c, "addr", "add", &client, "dev", "c0"])?;
        run_ip(&["-n", c, "link", "set", "c0", "up"])?;
        run_ip(&[
            "-n",
            c,
            "route",
            "add",
            "default",
            "via",
            &NODE_CLIENT_SIDE.to_string(),
        ])?;
        run_ip(&["-n", n, "addr", "add", &node_client, "dev", "n0"])?;
        run_ip(&["-n", n, "addr", "add", &node_server, "dev", "n1"])?;
        run_ip(&["-n", n, "link", "set", "n0", "up"])?;
        run_ip(&["-n", n, "link", "set", "n1", "up"])?;
        for i in 0..self.servers {
            run_ip(&[
                "-n",
                s,
                "addr",
                "add",
                &format!("{}/24", server_addr(i)),
                "dev",
                "s0",
            ])?;
        }
        run_ip(&["-n", s, "link", "set", "s0", "up"])?;
        run_ip(&[
            "-n",
            s,
            "route",
            "add",
            "default",
            "via",
            &NODE_SERVER_SIDE.to_string(),
        ])?;
        // Forwarding only inside the node namespace (a per-namespace sysctl).
        run(Command::new("ip").args([
            "netns",
            "exec",
            n,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]))?;
        // The client opens connections fast to non-loopback addresses, where the default
        // tcp_tw_reuse=2 does not apply: reuse TIME_WAIT ports and widen the range, in the
        // client namespace only (both sysctls are per namespace).
        run(Command::new("ip").args([
            "netns",
            "exec",
            c,
            "sysctl",
            "-qw",
            "net.ipv4.tcp_tw_reuse=1",
            "net.ipv4.ip_local_port_range=1024 65000",
        ]))?;
        Ok(())
    }

    /// The namespace's name for a role.
    pub fn name(&self, role: Role) -> &str {
        match role {
            Role::Client => &self.client.name,
            Role::Node => &self.node.name,
            Role::Server => &self.server.name,
        }
    }

    /// The server-side addresses.
    pub fn server_addrs(&self) -> Vec<Ipv4Addr> {
        (0..self.servers).map(server_addr).collect()
    }

    /// A command that runs `program args...` inside the role's namespace
    /// (`ip netns exec NAME program args...`).
    pub fn command(&self, role: Role, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command
            .arg("netns")
            .arg("exec")
            .arg(self.name(role))
            .arg(program);
        command
    }
}

// === running this harness inside a namespace ===

impl Topology {
    /// Starts backends (`exe serve --listen ADDRS --for LIFETIME`) in the server namespace and
    /// waits until each reports that it listens. `exe` is this harness's binary
    /// (`std::env::current_exe()`).
    ///
    /// # Errors
    ///
    /// [`BenchError::Spawn`] when it cannot start, [`BenchError::Scenario`] when fewer servers
    /// than asked came up.
    pub fn start_backends(
        &self,
        exe: &Path,
        addrs: &[SocketAddr],
        lifetime: Duration,
    ) -> Result<NsProcess, BenchError> {
        let mut command = self.command(Role::Server, exe);
        command
            .args([
                "serve",
                "--for",
                &lifetime.as_secs_f64().to_string(),
                "--listen",
            ])
            .args(addrs.iter().map(ToString::to_string))
            .stdout(Stdio::piped());
        let mut child = NsProcess(command.spawn().map_err(|error| BenchError::Spawn {
            program: format!("{} serve in {}", exe.display(), self.name(Role::Server)),
            error,
        })?);
        let stdout = child.0.stdout.take().ok_or_else(|| {
            BenchError::io("backends' stdout", std::io::ErrorKind::BrokenPipe.into())
        })?;
        // `serve` prints one line per listening server, then nothing until it exits.
        let ready = std::io::BufReader::new(stdout)
            .lines()
            .take(addrs.len())
            .map_while(Result::ok)
            .filter(|line| line.starts_with("listening "))
            .count();
        if ready != addrs.len() {
            return Err(BenchError::Scenario {
                scenario: "start backends".to_owned(),
                proxy: self.name(Role::Server).to_owned(),
                detail: format!("{ready} of {} servers came up", addrs.len()),
            });
        }
        Ok(child)
    }

    /// Runs `exe load ...` in the client namespace and reads its JSON result.
    ///
    /// # Errors
    ///
    /// [`BenchError::Spawn`], [`BenchError::Command`] when it fails, [`BenchError::Json`] when
    /// its output is not a result.
    pub fn run_load(&self, exe: &Path, spec: &LoadSpec) -> Result<LoadOutcome, BenchError> {
        let mut command = self.command(Role::Client, exe);
        command.args(spec.to_args());
        let stdout = run(&mut command)?;
        serde_json::from_str(stdout.trim()).map_err(|source| BenchError::Json {
            path: format!("output of bench load in {}", self.name(Role::Client)).into(),
            source,
        })
    }
}

/// A process started in a namespace; killed and reaped on drop.
#[derive(Debug)]
pub struct NsProcess(Child);

impl Drop for NsProcess {
    fn drop(&mut self) {
        // `ip netns exec` execs the program, so this is the program itself.
        if let Err(e) = self.0.kill() {
            tracing::debug!(error = %e, "kill (already exited?)");
        }
        let _ = self.0.wait();
    }
}

/// Whether we run as root (effective uid 0, from `/proc/self/status`).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("Uid:"))
                .and_then(|line| line.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// The names `ip netns list` shows.
///
/// # Errors
///
/// When `ip` cannot run.
pub fn list_namespaces() -> Result<Vec<String>, BenchError> {
    let out = run(Command::new("ip").args(["netns", "list"]))?;
    Ok(out
        .lines()
        .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
        .collect())
}

fn run_ip(args: &[&str]) -> Result<String, BenchError> {
    run(Command::new("ip").args(args))
}

/// Runs a command to completion; its stdout on success.
fn run(command: &mut Command) -> Result<String, BenchError> {
    let line = format!("{command:?}").replace('"', "");
    let out = command.output().map_err(|error| BenchError::Spawn {
        program: line.clone(),
        error,
    })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(BenchError::Command {
            command: line,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_in_the_benchmark_range() {
        let range = |ip: Ipv4Addr| {
            let [a, b, ..] = ip.octets();
            a == 198 && (b == 18 || b == 19)
        };
        for ip in [
            CLIENT_ADDR,
            NODE_CLIENT_SIDE,
            NODE_SERVER_SIDE,
            server_addr(0),
            server_addr(249),
        ] {
            assert!(range(ip), "{ip} outside 198.18.0.0/15");
        }
        assert_eq!(server_addr(1), Ipv4Addr::new(198, 18, 1, 2));
    }

    #[test]
    #[ignore = "needs root: CI runs --include-ignored"]
    fn topology_is_built_and_removed() {
        assert!(is_root(), "this test needs root (ip netns add)");
        let prefix = format!("bt{}", std::process::id());
        let topology = Topology::create(&prefix, 3).expect("create topology");
        let names = list_namespaces().expect("ip netns list");
        for role in [Role::Client, Role::Node, Role::Server] {
            assert!(names.iter().any(|n| n == topology.name(role)), "{names:?}");
        }
        let node = run(topology
            .command(Role::Node, "ip")
            .args(["-4", "-o", "addr"]))
        .expect("node addrs");
        assert!(
            node.contains("198.18.0.254/24") && node.contains("198.18.1.254/24"),
            "{node}"
        );
        let server = run(topology
            .command(Role::Server, "ip")
            .args(["-4", "-o", "addr"]))
        .expect("server addrs");
        assert!(server.contains("198.18.1.3/24"), "{server}");
        let route = run(topology
            .command(Role::Client, "ip")
            .args(["route", "get", "198.18.1.1"]))
        .expect("client route");
        assert!(route.contains("via 198.18.0.254"), "{route}");
        let forwarding = run(topology
            .command(Role::Node, "sysctl")
            .args(["-n", "net.ipv4.ip_forward"]))
        .expect("sysctl");
        assert_eq!(forwarding.trim(), "1");
        let reuse = run(topology
            .command(Role::Client, "sysctl")
            .args(["-n", "net.ipv4.tcp_tw_reuse"]))
        .expect("sysctl");
        assert_eq!(reuse.trim(), "1");
        drop(topology);
        let names = list_namespaces().expect("ip netns list");
        assert!(
            !names.iter().any(|n| n.starts_with(&prefix)),
            "left behind: {names:?}"
        );
    }
}
