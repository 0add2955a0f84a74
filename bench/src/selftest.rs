//! `bench netns-selftest`: proves the namespace topology works end to end. It builds the
//! namespaces, runs this binary as backends in the server namespace (`bench serve`) and as the
//! load generator in the client namespace (`bench load`), routed through the node namespace,
//! checks the load got through, and checks the namespaces are gone afterwards.

use std::net::SocketAddr;
use std::time::Duration;

use crate::error::BenchError;
use crate::load::{LoadOutcome, LoadSpec, Scenario};
use crate::netns::{self, Role, Topology};

/// Namespaces up, backends in the server namespace, a short load from the client namespace
/// (through the node's routing), namespaces down.
///
/// # Errors
///
/// When not root, when a step fails, or when the load saw errors or namespaces were left.
pub fn netns_selftest() -> Result<(), BenchError> {
    let failed = |detail: String| BenchError::Scenario {
        scenario: "netns-selftest".to_owned(),
        proxy: "none".to_owned(),
        detail,
    };
    if !netns::is_root() {
        return Err(failed("needs root (ip netns add)".to_owned()));
    }
    let exe = std::env::current_exe().map_err(|e| BenchError::io("find own executable", e))?;
    let prefix = format!("bench{}", std::process::id());
    let topology = Topology::create(&prefix, 2)?;
    let servers: Vec<SocketAddr> = topology
        .server_addrs()
        .into_iter()
        .map(|ip| SocketAddr::from((ip, 9000)))
        .collect();
    println!("namespaces {prefix}-{{client,node,server}} up; servers {servers:?}");
    let backends = topology.start_backends(&exe, &servers, Duration::from_secs(30))?;

    let forwarding = topology
        .command(Role::Node, "sysctl")
        .args(["-n", "net.ipv4.ip_forward"])
        .output()
        .map_err(|error| BenchError::Spawn {
            program: "sysctl".to_owned(),
            error,
        })?;
    println!(
        "node ns forwarding: {}",
        String::from_utf8_lossy(&forwarding.stdout).trim()
    );

    let mut ok = true;
    for &target in &servers {
        let mut spec = LoadSpec::new(target, Scenario::ConnMax, Duration::from_millis(500));
        spec.concurrency = 4;
        let LoadOutcome::Rate(result) = topology.run_load(&exe, &spec)? else {
            return Err(failed("conn-max gave a bulk result".to_owned()));
        };
        println!(
            "client ns -> {target}: {} connections ({:.0}/s), {} errors, p50 {:.0} µs",
            result.ops,
            result.ops_per_s,
            result.errors,
            result.latency.map_or(0.0, |l| l.p50_us)
        );
        ok &= result.ops > 0 && result.errors == 0;
    }
    drop(backends);
    drop(topology);
    let left: Vec<String> = netns::list_namespaces()?
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    println!("namespaces removed: {}", left.is_empty());
    if ok && left.is_empty() {
        println!("netns-selftest: ok");
        Ok(())
    } else {
        Err(failed(format!(
            "load without errors: {ok}; namespaces left: {left:?}"
        )))
    }
}
