//! Transparent capture (optional, needs root): kube-proxy's old userspace mode. Instead of
//! binding each service address, the proxy listens on an ephemeral port of
//! [`crate::UserspaceConfig::capture_address`] per listener, and one iptables chain of ours,
//! jumped to from nat `PREROUTING` and `OUTPUT`, redirects each service address there:
//!
//! ```text
//! -A SVCPROXY-CAPTURE -d 198.18.0.10/32 -p tcp -m tcp --dport 80 \
//!    -m comment --comment "default/web:http cluster-ip" -j REDIRECT --to-ports 40123
//! ```
//!
//! So VIPs need not be local addresses (only routable, so that a local connect gets as far as
//! nat `OUTPUT`). The per-listener port tells the proxy which service address a connection was
//! for, which is why `SO_ORIGINAL_DST` is not needed. IPv4 only (iptables, not ip6tables).
//!
//! A full sync rewrites the chain whole with `iptables-restore --noflush` (only our chain is
//! named, so nothing else is touched), which also repairs an outside flush; a partial sync
//! deletes and appends the rules of the listeners it closed, opened or gave to another service
//! port ([`render_edits`]), so its cost follows the change. [`cleanup`] removes the jumps and
//! the chain. Dropping
//! the dataplane closes its sockets but leaves the chain, like the kernel backends' state: run
//! `Dataplane::cleanup` on exit.
//! Ref: kube-proxy's userspace proxier (`pkg/proxy/userspace/proxier.go`, removed in 1.26),
//! which installed `REDIRECT --to-ports` rules in `KUBE-PORTALS-CONTAINER`/`-HOST`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::error::UserspaceError;
use crate::plan::{ListenerKey, Route};

/// The comment on our jump rules, so we can find and delete exactly them.
const JUMP_COMMENT: &str = "svcproxy userspace capture";

/// Built-in nat chains that jump to ours: traffic arriving from outside, and traffic from this
/// host.
const HOOKS: [&str; 2] = ["PREROUTING", "OUTPUT"];

/// One listener's redirect: its key, its route (for the comment) and where its capture socket
/// is bound.
pub type Redirect = (ListenerKey, Route, SocketAddr);

/// The `iptables-restore` input that makes `chain` redirect every listener's service address to
/// the port its capture socket is bound to. Byte-stable: listeners in key order.
pub fn render_rules(chain: &str, redirects: &BTreeMap<ListenerKey, (Route, SocketAddr)>) -> String {
    let mut out = format!("*nat\n:{chain} - [0:0]\n");
    for (key, (route, bound)) in redirects {
        if let Some(rule) = rule_spec(*key, route, *bound) {
            let _ = writeln!(out, "-A {chain} {rule}");
        }
    }
    out.push_str("COMMIT\n");
    out
}

/// The `iptables-restore --noflush` input that deletes the rules of `deleted` and appends those
/// of `appended` in `chain`, leaving its other rules alone (no chain line, which would flush
/// it). `None` when there is nothing to write. A rule to delete that is not there fails the
/// whole input, and the next sync rewrites the chain.
pub fn render_edits(chain: &str, deleted: &[Redirect], appended: &[Redirect]) -> Option<String> {
    let mut lines = String::new();
    for (op, redirects) in [("-D", deleted), ("-A", appended)] {
        for (key, route, bound) in redirects {
            if let Some(rule) = rule_spec(*key, route, *bound) {
                let _ = writeln!(lines, "{op} {chain} {rule}");
            }
        }
    }
    (!lines.is_empty()).then(|| format!("*nat\n{lines}COMMIT\n"))
}

/// The rule of one listener after `-A chain`, or `None` for IPv6 (iptables is IPv4 only).
fn rule_spec(key: ListenerKey, route: &Route, bound: SocketAddr) -> Option<String> {
    if key.addr.is_ipv6() {
        return None;
    }
    Some(format!(
        "-d {}/32 -p {proto} -m {proto} --dport {} -m comment --comment \"{}\" -j REDIRECT --to-ports {}",
        key.addr.ip(),
        key.addr.port(),
        comment(route),
        bound.port(),
        proto = key.protocol,
    ))
}

/// The comment on a listener's rule: its service port and address kind.
fn comment(route: &Route) -> String {
    format!("{} {}", route.service_port, route.kind.as_str())
}

/// Loads `input` with `iptables-restore --noflush`, then makes sure both hooks jump to `chain`.
///
/// # Errors
/// [`UserspaceError::Iptables`] with the command, its status and stderr.
pub async fn apply_rules(chain: &str, input: &str) -> Result<(), UserspaceError> {
    restore(input).await?;
    for hook in HOOKS {
        let rule = jump_rule(hook, chain);
        if run("iptables", &with_op("-C", &rule)).await.is_err() {
            run("iptables", &with_op("-I", &rule)).await?;
        }
    }
    Ok(())
}

/// Loads rule edits from [`render_edits`] with `iptables-restore --noflush`; the jumps were
/// checked by the last full rewrite.
///
/// # Errors
/// [`UserspaceError::Iptables`] with the command, its status, stderr and the input.
pub async fn apply_edits(input: &str) -> Result<(), UserspaceError> {
    restore(input).await
}

/// Deletes our jumps and our chain. Missing ones are fine.
///
/// # Errors
/// [`UserspaceError::Iptables`] when the chain exists but cannot be deleted.
pub async fn cleanup(chain: &str) -> Result<(), UserspaceError> {
    for hook in HOOKS {
        let rule = jump_rule(hook, chain);
        // Bounded: one jump per hook is all we insert; a few more covers manual duplicates.
        for _ in 0..8 {
            if run("iptables", &with_op("-D", &rule)).await.is_err() {
                break;
            }
        }
    }
    if run("iptables", &["-w", "-t", "nat", "-L", chain, "-n"])
        .await
        .is_ok()
    {
        run("iptables", &["-w", "-t", "nat", "-F", chain]).await?;
        run("iptables", &["-w", "-t", "nat", "-X", chain]).await?;
    }
    Ok(())
}

fn jump_rule(hook: &str, chain: &str) -> Vec<String> {
    [
        hook,
        "-m",
        "comment",
        "--comment",
        JUMP_COMMENT,
        "-j",
        chain,
    ]
    .map(str::to_owned)
    .to_vec()
}

fn with_op(op: &str, rule: &[String]) -> Vec<String> {
    let mut args: Vec<String> = ["-w", "-t", "nat", op].map(str::to_owned).to_vec();
    args.extend(rule.iter().cloned());
    args
}

async fn run(program: &str, args: &[impl AsRef<str>]) -> Result<(), UserspaceError> {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    let command = format!("{program} {}", args.join(" "));
    let output = Command::new(program)
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|source| UserspaceError::Spawn {
            command: command.clone(),
            source,
        })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(UserspaceError::Iptables {
            command,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

async fn restore(input: &str) -> Result<(), UserspaceError> {
    let command = "iptables-restore -w --noflush".to_owned();
    let mut child = Command::new("iptables-restore")
        .args(["-w", "--noflush"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| UserspaceError::Spawn {
            command: command.clone(),
            source,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .await
            .map_err(|source| UserspaceError::Spawn {
                command: command.clone(),
                source,
            })?;
    }
    let output = child
        .wait_with_output()
        .await
        .map_err(|source| UserspaceError::Spawn {
            command: command.clone(),
            source,
        })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(UserspaceError::Iptables {
            command,
            status: output.status.to_string(),
            stderr: format!(
                "{}\ninput:\n{input}",
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{AddressKind, RouteTarget};
    use proxy_core::table::{Protocol, Scheduler, ServicePortName};

    #[test]
    fn rules_redirect_each_service_address_to_its_capture_port() {
        let route = |kind| Route {
            service_port: ServicePortName::new("default", "web", "http"),
            kind,
            target: RouteTarget::Reject,
            scheduler: Scheduler::RoundRobin,
            affinity_timeout: None,
            port_idle_timeout: None,
            source_ranges: Vec::new(),
        };
        let mut redirects = BTreeMap::new();
        let key = |proto, addr: &str| ListenerKey {
            protocol: proto,
            addr: addr.parse().expect("addr"),
        };
        let bound = |port| SocketAddr::from(([0, 0, 0, 0], port));
        redirects.insert(
            key(Protocol::Tcp, "198.18.0.10:80"),
            (route(AddressKind::ClusterIp), bound(40001)),
        );
        redirects.insert(
            key(Protocol::Udp, "198.18.0.10:53"),
            (route(AddressKind::ClusterIp), bound(40002)),
        );
        redirects.insert(
            key(Protocol::Tcp, "[2001:db8::1]:80"),
            (route(AddressKind::ClusterIp), bound(40003)),
        );
        assert_eq!(
            render_rules("SVCPROXY-CAPTURE", &redirects),
            "*nat\n\
             :SVCPROXY-CAPTURE - [0:0]\n\
             -A SVCPROXY-CAPTURE -d 198.18.0.10/32 -p tcp -m tcp --dport 80 -m comment --comment \"default/web:http cluster-ip\" -j REDIRECT --to-ports 40001\n\
             -A SVCPROXY-CAPTURE -d 198.18.0.10/32 -p udp -m udp --dport 53 -m comment --comment \"default/web:http cluster-ip\" -j REDIRECT --to-ports 40002\n\
             COMMIT\n"
        );
    }

    #[test]
    fn edits_delete_then_append_single_rules_without_naming_the_chain() {
        let route = |service: &str| Route {
            service_port: ServicePortName::new("default", service, "http"),
            kind: AddressKind::ClusterIp,
            target: RouteTarget::Reject,
            scheduler: Scheduler::RoundRobin,
            affinity_timeout: None,
            port_idle_timeout: None,
            source_ranges: Vec::new(),
        };
        let key = ListenerKey {
            protocol: Protocol::Tcp,
            addr: "198.18.0.10:80".parse().expect("addr"),
        };
        let bound = SocketAddr::from(([0, 0, 0, 0], 40001));
        assert_eq!(render_edits("C", &[], &[]), None);
        assert_eq!(
            render_edits("C", &[(key, route("old"), bound)], &[(key, route("new"), bound)])
                .expect("two edits"),
            "*nat\n\
             -D C -d 198.18.0.10/32 -p tcp -m tcp --dport 80 -m comment --comment \"default/old:http cluster-ip\" -j REDIRECT --to-ports 40001\n\
             -A C -d 198.18.0.10/32 -p tcp -m tcp --dport 80 -m comment --comment \"default/new:http cluster-ip\" -j REDIRECT --to-ports 40001\n\
             COMMIT\n"
        );
    }
}
