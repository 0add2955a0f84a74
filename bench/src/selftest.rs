//! `bench netns-selftest`: proves the namespace topology works end to end. It builds the
//! namespaces, runs this binary as backends in the server namespace (`bench serve`) and as the
//! load generator in the client namespace (`bench load`), routed through the node namespace,
//! checks the load got through, and checks the namespaces are gone afterwards.

use std::net::SocketAddr;

use crate::error::BenchError;
use crate::{load, netns};

/// Namespaces up, backends in the server namespace, a short load from the client namespace
/// (through the node's routing), namespaces down.
///
/// # Errors
///
/// When not root, when a step fails, or when the load saw errors or namespaces were left.
pub async fn netns_selftest() -> Result<(), BenchError> {
    use std::io::BufRead as _;
    use std::process::Stdio;

    if !netns::is_root() {
        return Err(BenchError::io(
            "netns-selftest",
            std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "needs root (ip netns add)",
            ),
        ));
    }
    let exe = std::env::current_exe().map_err(|e| BenchError::io("find own executable", e))?;
    let prefix = format!("bench{}", std::process::id());
    let topology = netns::Topology::create(&prefix, 2)?;
    let servers: Vec<String> = topology
        .server_addrs()
        .iter()
        .map(|ip| SocketAddr::from((*ip, 9000)).to_string())
        .collect();
    println!(
        "namespaces {prefix}-{{client,node,server}} up; servers {}",
        servers.join(", ")
    );

    let mut serve = topology.command(netns::Role::Server, &exe);
    serve
        .args(["serve", "--for", "30", "--listen"])
        .args(&servers)
        .stdout(Stdio::piped());
    let mut server = ChildGuard(serve.spawn().map_err(|source| BenchError::Spawn {
        program: "bench serve".to_owned(),
        source,
    })?);
    let stdout =
        server.0.stdout.take().ok_or_else(|| {
            BenchError::io("server stdout", std::io::ErrorKind::BrokenPipe.into())
        })?;
    let ready = tokio::task::spawn_blocking(move || {
        std::io::BufReader::new(stdout)
            .lines()
            .take(2)
            .filter_map(Result::ok)
            .count()
    })
    .await
    .map_err(|e| BenchError::io("wait for servers", std::io::Error::other(e)))?;
    if ready != servers.len() {
        return Err(BenchError::Scenario {
            scenario: "netns-selftest".to_owned(),
            proxy: "none".to_owned(),
            detail: format!("{ready} of {} servers came up", servers.len()),
        });
    }

    let forwarding = topology
        .command(netns::Role::Node, "sysctl")
        .args(["-n", "net.ipv4.ip_forward"])
        .output()
        .map_err(|source| BenchError::Spawn {
            program: "sysctl".to_owned(),
            source,
        })?;
    println!(
        "node ns forwarding: {}",
        String::from_utf8_lossy(&forwarding.stdout).trim()
    );

    let mut results = Vec::new();
    for target in &servers {
        let output = topology
            .command(netns::Role::Client, &exe)
            .args([
                "load",
                "--scenario",
                "conn-max",
                "--duration",
                "0.5",
                "--concurrency",
                "4",
                "--target",
                target,
            ])
            .output()
            .map_err(|source| BenchError::Spawn {
                program: "bench load".to_owned(),
                source,
            })?;
        let text = String::from_utf8_lossy(&output.stdout);
        let result: load::RateResult =
            serde_json::from_str(text.trim()).map_err(|source| BenchError::Json {
                path: format!("output of bench load in {prefix}-client").into(),
                source,
            })?;
        println!(
            "client ns -> {target}: {} connections ({:.0}/s), {} errors, p50 {:.0} µs",
            result.ops,
            result.ops_per_s,
            result.errors,
            result.latency.map_or(0.0, |l| l.p50_us)
        );
        results.push(result);
    }
    drop(server);
    drop(topology);
    let left: Vec<String> = netns::list_namespaces()?
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    let passed = results.iter().all(|r| r.ops > 0 && r.errors == 0) && left.is_empty();
    println!("namespaces removed: {}", left.is_empty());
    if passed {
        println!("netns-selftest: ok");
        Ok(())
    } else {
        Err(BenchError::Scenario {
            scenario: "netns-selftest".to_owned(),
            proxy: "none".to_owned(),
            detail: format!("results {results:?}, namespaces left {left:?}"),
        })
    }
}

/// Kills and reaps a child process on drop.
#[derive(Debug)]
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
