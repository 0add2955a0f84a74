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
//! A filter chain of the same name, jumped to from `INPUT`, `FORWARD` and `OUTPUT` for new
//! connections, holds kube-proxy's verdicts for what is not redirected ([`ListenerRules`]):
//! sources outside the load-balancer source ranges are dropped, a port with no endpoint is
//! rejected, and external traffic to a `Local` port with no local endpoint is dropped (pods and
//! the node itself are redirected past it: the short-circuit). No socket ever accepts a flow
//! kube-proxy would refuse.
//!
//! A full sync rewrites both chains whole with `iptables-restore --noflush` (only our chains
//! are named, so nothing else is touched), which also repairs an outside flush; a partial sync
//! deletes and appends the rules of the listeners it closed, opened, gave to another service
//! port or whose rules changed (endpoints gone or back: [`render_edits`]), so its cost follows
//! the change. [`cleanup`] removes the jumps and the chains. Dropping
//! the dataplane closes its sockets but leaves the chains, like the kernel backends' state: run
//! `Dataplane::cleanup` on exit.
//! Ref: kube-proxy's userspace proxier (`pkg/proxy/userspace/proxier.go`, removed in 1.26),
//! which installed `REDIRECT --to-ports` rules in `KUBE-PORTALS-CONTAINER`/`-HOST`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use ipnet::{IpNet, Ipv4Net};
use iptables_runner::{CommandFailure, Family, Iptables};

use proxy_core::table::Protocol;

use crate::error::UserspaceError;
use crate::plan::{ListenerKey, Route, RouteTarget};

/// The comment on our jump rules, so we can find and delete exactly them.
const JUMP_COMMENT: &str = "svcproxy userspace capture";

/// Built-in nat chains that jump to ours: traffic arriving from outside, and traffic from this
/// host.
const HOOKS: [&str; 2] = ["PREROUTING", "OUTPUT"];

/// Built-in filter chains that jump to our filter chain (new connections only, as
/// kube-proxy's `KUBE-PROXY-FIREWALL` and `KUBE-EXTERNAL-SERVICES` jumps): traffic to this
/// host, through it, and from it.
const FILTER_HOOKS: [&str; 3] = ["INPUT", "FORWARD", "OUTPUT"];

/// One listener's redirect: its key, its route (for the comment) and where its capture socket
/// is bound.
pub type Redirect = (ListenerKey, Route, SocketAddr);

/// The rules of one listener, after `-A chain`: in our nat chain (the `REDIRECT`s to its capture
/// socket) and in our filter chain of the same name (kube-proxy's verdicts for what was not
/// redirected). Empty for IPv6 (iptables is IPv4 only).
///
/// The verdicts sit in the filter table, as kube-proxy's do (`REJECT` is a filter target and the
/// nat table refuses `DROP`), and match the *service* address: nat runs first on every path
/// (`PREROUTING` before `INPUT`/`FORWARD`, nat `OUTPUT` before filter `OUTPUT`), so a packet that
/// is still addressed to the service there was not redirected. Ref: kube-proxy's
/// `pkg/proxy/iptables/proxier.go` (`KUBE-FW-*` accepts the source ranges in nat and
/// `KUBE-PROXY-FIREWALL` drops the rest in filter; `"has no endpoints"` REJECT and `"has no
/// local endpoints"` DROP in `KUBE-SERVICES`/`KUBE-EXTERNAL-SERVICES`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListenerRules {
    /// Rules of our nat chain.
    pub nat: Vec<String>,
    /// Rules of our filter chain, in order (an accepted source range's verdict comes before the
    /// drop of every other source).
    pub filter: Vec<String>,
}

impl ListenerRules {
    /// The rules of the listener `key` with `route`, whose capture socket is bound at `bound`;
    /// `cluster_cidrs` is the pod network (for the short-circuit of pod traffic).
    pub fn of(key: ListenerKey, route: &Route, bound: SocketAddr, cluster_cidrs: &[IpNet]) -> Self {
        let mut rules = ListenerRules::default();
        let IpAddr::V4(ip) = key.addr.ip() else {
            return rules;
        };
        let base = format!(
            "-d {ip}/32 -p {proto} -m {proto} --dport {}",
            key.addr.port(),
            proto = key.protocol,
        );
        let name = comment(route);
        let redirect = format!(
            "-m comment --comment \"{name}\" -j REDIRECT --to-ports {}",
            bound.port()
        );
        // `None`: every source; else the IPv4 ranges allowed (possibly none).
        let allowed: Option<Vec<Ipv4Net>> = (!route.source_ranges.is_empty()).then(|| {
            route
                .source_ranges
                .iter()
                .filter_map(|net| match net {
                    IpNet::V4(v4) => Some(*v4),
                    IpNet::V6(_) => None,
                })
                .collect()
        });
        let sources: Vec<String> = match &allowed {
            None => vec![String::new()],
            Some(nets) => nets.iter().map(|net| format!(" -s {net}")).collect(),
        };
        let verdict = match &route.target {
            RouteTarget::Endpoints(_) => None,
            // A TCP reset rather than ICMP for TCP, as backend-iptables does: the kernel
            // rate-limits ICMP errors per destination (`net.ipv4.icmp_ratelimit`), a RST is
            // not, so a client that retries is refused every time.
            RouteTarget::Reject if key.protocol == Protocol::Tcp => {
                Some(("has no endpoints", "REJECT --reject-with tcp-reset"))
            }
            RouteTarget::Reject => Some((
                "has no endpoints",
                "REJECT --reject-with icmp-port-unreachable",
            )),
            RouteTarget::Drop => Some(("has no local endpoints", "DROP")),
        };
        match verdict {
            None => {
                for source in &sources {
                    rules.nat.push(format!("{base}{source} {redirect}"));
                }
            }
            Some((why, target)) => {
                // Traffic from pods and from the node itself to an external address of a
                // `Local` service goes to every endpoint (kube-proxy's short-circuit), even when
                // none is local: redirected here, it never meets the verdict. Source ranges
                // still come first (kube-proxy's firewall chain precedes it): only the pods and
                // the node within them.
                if matches!(route.short_circuit, Some(RouteTarget::Endpoints(_))) {
                    let cidrs = cluster_cidrs.iter().filter_map(|cidr| match cidr {
                        IpNet::V4(cidr) => Some(*cidr),
                        IpNet::V6(_) => None,
                    });
                    let (pods, node): (Vec<Ipv4Net>, Vec<String>) = match &allowed {
                        None => (cidrs.collect(), vec![String::new()]),
                        Some(ranges) => (
                            cidrs
                                .flat_map(|cidr| {
                                    ranges
                                        .iter()
                                        .filter_map(move |range| narrower(cidr, *range))
                                })
                                .collect(),
                            ranges.iter().map(|range| format!(" -s {range}")).collect(),
                        ),
                    };
                    for pods in pods {
                        rules.nat.push(format!("{base} -s {pods} {redirect}"));
                    }
                    for source in node {
                        rules.nat.push(format!(
                            "{base}{source} -m addrtype --src-type LOCAL {redirect}"
                        ));
                    }
                }
                for source in &sources {
                    rules.filter.push(format!(
                        "{base}{source} -m comment --comment \"{name} {why}\" -j {target}"
                    ));
                }
            }
        }
        if allowed.is_some() {
            rules.filter.push(format!(
                "{base} -m comment --comment \"{name} traffic not accepted by its source ranges\" -j DROP"
            ));
        }
        rules
    }
}

/// The intersection of two networks: the narrower when one holds the other, else none.
fn narrower(a: Ipv4Net, b: Ipv4Net) -> Option<Ipv4Net> {
    if a.contains(&b) {
        Some(b)
    } else if b.contains(&a) {
        Some(a)
    } else {
        None
    }
}

/// The `iptables-restore` input that makes `chain` redirect every listener's service address to
/// the port its capture socket is bound to, and our filter chain of the same name hold the
/// verdicts for what is not redirected ([`ListenerRules`]). Byte-stable: listeners in key order.
pub fn render_rules(
    chain: &str,
    cluster_cidrs: &[IpNet],
    redirects: &BTreeMap<ListenerKey, (Route, SocketAddr)>,
) -> String {
    let rules: Vec<ListenerRules> = redirects
        .iter()
        .map(|(key, (route, bound))| ListenerRules::of(*key, route, *bound, cluster_cidrs))
        .collect();
    let mut out = format!("*nat\n:{chain} - [0:0]\n");
    for rule in rules.iter().flat_map(|rules| &rules.nat) {
        let _ = writeln!(out, "-A {chain} {rule}");
    }
    let _ = write!(out, "COMMIT\n*filter\n:{chain} - [0:0]\n");
    for rule in rules.iter().flat_map(|rules| &rules.filter) {
        let _ = writeln!(out, "-A {chain} {rule}");
    }
    out.push_str("COMMIT\n");
    out
}

/// The `iptables-restore --noflush` input that deletes the rules of `deleted` and appends those
/// of `appended` in `chain` (nat and filter), leaving its other rules alone (no chain line,
/// which would flush it). `None` when there is nothing to write. A rule to delete that is not
/// there fails the whole input, and the next sync rewrites the chain.
pub fn render_edits(
    chain: &str,
    cluster_cidrs: &[IpNet],
    deleted: &[Redirect],
    appended: &[Redirect],
) -> Option<String> {
    let rules = |redirects: &[Redirect]| -> Vec<ListenerRules> {
        redirects
            .iter()
            .map(|(key, route, bound)| ListenerRules::of(*key, route, *bound, cluster_cidrs))
            .collect()
    };
    let (deleted, appended) = (rules(deleted), rules(appended));
    let mut out = String::new();
    for (table, of) in [
        (
            "nat",
            (|r: &ListenerRules| r.nat.clone()) as fn(&ListenerRules) -> Vec<String>,
        ),
        ("filter", |r: &ListenerRules| r.filter.clone()),
    ] {
        let mut lines = String::new();
        for (op, rules) in [("-D", &deleted), ("-A", &appended)] {
            for rule in rules.iter().flat_map(of) {
                let _ = writeln!(lines, "{op} {chain} {rule}");
            }
        }
        if !lines.is_empty() {
            let _ = write!(out, "*{table}\n{lines}COMMIT\n");
        }
    }
    (!out.is_empty()).then_some(out)
}

/// The comment on a listener's rules: its service port and address kind.
fn comment(route: &Route) -> String {
    format!("{} {}", route.service_port, route.kind.as_str())
}

/// The iptables tools capture runs: plain `iptables`'s variant (`iptables --version`, as the
/// other backends decide it), so the chains land in the tables the node's iptables uses.
///
/// # Errors
/// [`UserspaceError::Iptables`] when `iptables` cannot run or names neither variant.
pub async fn detect_tools() -> Result<Iptables, UserspaceError> {
    let variant = iptables_runner::detect_variant(&[]).await.map_err(failed)?;
    Ok(Iptables::new(variant))
}

/// Loads `input` with `iptables-restore --noflush`, then makes sure both hooks jump to `chain`.
/// Detects the variant first ([`detect_tools`]); [`apply_rules_with`] reuses a detected one.
///
/// # Errors
/// [`UserspaceError::Iptables`] with the command, its status and stderr.
pub async fn apply_rules(chain: &str, input: &str) -> Result<(), UserspaceError> {
    apply_rules_with(&detect_tools().await?, chain, input).await
}

/// [`apply_rules`] through `tools`.
///
/// # Errors
/// As [`apply_rules`].
pub async fn apply_rules_with(
    tools: &Iptables,
    chain: &str,
    input: &str,
) -> Result<(), UserspaceError> {
    restore(tools, input).await?;
    for (table, rule) in jump_rules(chain) {
        if run(tools, &with_op(table, "-C", &rule)).await.is_err() {
            run(tools, &with_op(table, "-I", &rule)).await?;
        }
    }
    Ok(())
}

/// Loads rule edits from [`render_edits`] with `iptables-restore --noflush`; the jumps were
/// checked by the last full rewrite. Detects the variant first ([`detect_tools`]).
///
/// # Errors
/// [`UserspaceError::Iptables`] with the command, its status, stderr and the input.
pub async fn apply_edits(input: &str) -> Result<(), UserspaceError> {
    apply_edits_with(&detect_tools().await?, input).await
}

/// [`apply_edits`] through `tools`.
///
/// # Errors
/// As [`apply_edits`].
pub async fn apply_edits_with(tools: &Iptables, input: &str) -> Result<(), UserspaceError> {
    restore(tools, input).await
}

/// What of ours an earlier run left: whether `chain` exists in nat or filter, and how many
/// rules of the built-in chains jump to it (the hooks [`cleanup`] deletes). One
/// `iptables-save` of every table, with the detected variant's tool.
///
/// # Errors
/// [`UserspaceError::Iptables`] when the save fails.
pub async fn leftovers(chain: &str) -> Result<(bool, usize), UserspaceError> {
    let tools = detect_tools().await?;
    let saved = tools.save(Family::V4, None).await.map_err(failed)?;
    Ok(leftovers_in(&saved, chain))
}

/// [`leftovers`] read from `saved` (`iptables-save` output, every table).
fn leftovers_in(saved: &str, chain: &str) -> (bool, usize) {
    let declared = format!(":{chain} ");
    let jump = format!(" -j {chain}");
    let has_chain = saved.lines().any(|line| line.starts_with(&declared));
    let jumps = saved
        .lines()
        .filter(|line| {
            HOOKS
                .iter()
                .chain(&FILTER_HOOKS)
                .any(|hook| line.starts_with(&format!("-A {hook} ")))
                && line.trim_end().ends_with(&jump)
        })
        .count();
    (has_chain, jumps)
}

/// Deletes our jumps and our chains (nat and filter). Missing ones are fine. Detects the
/// variant first ([`detect_tools`]).
///
/// # Errors
/// [`UserspaceError::Iptables`] when the chain exists but cannot be deleted.
pub async fn cleanup(chain: &str) -> Result<(), UserspaceError> {
    cleanup_with(&detect_tools().await?, chain).await
}

/// [`cleanup`] through `tools`.
///
/// # Errors
/// As [`cleanup`].
pub async fn cleanup_with(tools: &Iptables, chain: &str) -> Result<(), UserspaceError> {
    for (table, rule) in jump_rules(chain) {
        // Bounded: one jump per hook is all we insert; a few more covers manual duplicates.
        for _ in 0..8 {
            if run(tools, &with_op(table, "-D", &rule)).await.is_err() {
                break;
            }
        }
    }
    for table in ["nat", "filter"] {
        if run(tools, &args(&["-t", table, "-L", chain, "-n"]))
            .await
            .is_ok()
        {
            run(tools, &args(&["-t", table, "-F", chain])).await?;
            run(tools, &args(&["-t", table, "-X", chain])).await?;
        }
    }
    Ok(())
}

/// Our jumps, by table: nat `PREROUTING`/`OUTPUT` to the redirects, filter
/// `INPUT`/`FORWARD`/`OUTPUT` (new connections) to the verdicts.
fn jump_rules(chain: &str) -> Vec<(&'static str, Vec<String>)> {
    let jump = |hook: &str, state: &[&str]| {
        let mut rule = vec![hook.to_owned()];
        rule.extend(state.iter().map(|arg| (*arg).to_owned()));
        rule.extend(["-m", "comment", "--comment", JUMP_COMMENT, "-j", chain].map(str::to_owned));
        rule
    };
    let nat = HOOKS.iter().map(|hook| ("nat", jump(hook, &[])));
    let filter = FILTER_HOOKS.iter().map(|hook| {
        (
            "filter",
            jump(hook, &["-m", "conntrack", "--ctstate", "NEW"]),
        )
    });
    nat.chain(filter).collect()
}

/// `-t TABLE OP` and the rule; the runner adds the tool and its lock wait (`-w`).
fn with_op(table: &str, op: &str, rule: &[String]) -> Vec<String> {
    let mut args = args(&["-t", table, op]);
    args.extend(rule.iter().cloned());
    args
}

fn args(words: &[&str]) -> Vec<String> {
    words.iter().map(|word| (*word).to_owned()).collect()
}

/// A runner failure as this crate has always reported iptables failures.
fn failed(failure: CommandFailure) -> UserspaceError {
    UserspaceError::Iptables {
        status: failure.exit_text(),
        command: failure.command,
        stderr: failure.stderr,
    }
}

/// Runs the IPv4 rule tool (capture is IPv4 only) with `args`.
async fn run(tools: &Iptables, args: &[String]) -> Result<(), UserspaceError> {
    tools.rule(Family::V4, args).await.map_err(failed)
}

/// Loads `input` with the IPv4 restore tool, `--noflush`; a failure carries the input.
async fn restore(tools: &Iptables, input: &str) -> Result<(), UserspaceError> {
    tools
        .restore(Family::V4, input)
        .await
        .map_err(|failure| UserspaceError::Iptables {
            status: failure.exit_text(),
            command: failure.command,
            stderr: format!("{}\ninput:\n{input}", failure.stderr),
        })
}

#[cfg(test)]
mod tests {
    #[test]
    fn leftovers_count_our_chain_and_its_jumps_only() {
        let saved = "*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
                     :SVCPROXY-CAPTURE - [0:0]\n:SVCPROXY-CAPTURE2 - [0:0]\n\
                     -A PREROUTING -m comment --comment \"svcproxy userspace capture\" -j SVCPROXY-CAPTURE\n\
                     -A OUTPUT -m comment --comment \"svcproxy userspace capture\" -j SVCPROXY-CAPTURE\n\
                     -A OUTPUT -j SVCPROXY-CAPTURE2\nCOMMIT\n";
        assert_eq!(leftovers_in(saved, "SVCPROXY-CAPTURE"), (true, 2));
        assert_eq!(leftovers_in(saved, "OTHER"), (false, 0));
        // Only the filter chain left (the verdicts): still ours to remove.
        let filter_only = "*filter\n:INPUT ACCEPT [0:0]\n:SVCPROXY-CAPTURE - [0:0]\n\
                           -A INPUT -m conntrack --ctstate NEW -j SVCPROXY-CAPTURE\nCOMMIT\n";
        assert_eq!(leftovers_in(filter_only, "SVCPROXY-CAPTURE"), (true, 1));
    }

    use super::*;
    use crate::plan::{AddressKind, Backend, RouteTarget};
    use proxy_core::table::{Scheduler, ServicePortName};

    fn endpoints() -> RouteTarget {
        RouteTarget::Endpoints(vec![Backend {
            addr: "198.18.2.10:8080".parse().expect("addr"),
            weight: 1,
        }])
    }

    fn route(kind: AddressKind, target: RouteTarget) -> Route {
        Route {
            service_port: ServicePortName::new("default", "web", "http"),
            kind,
            target,
            short_circuit: None,
            scheduler: Scheduler::RoundRobin,
            affinity_timeout: None,
            port_idle_timeout: None,
            source_ranges: Vec::new(),
        }
    }

    fn key(protocol: Protocol, addr: &str) -> ListenerKey {
        ListenerKey {
            protocol,
            addr: addr.parse().expect("addr"),
        }
    }

    fn bound(port: u16) -> SocketAddr {
        SocketAddr::from(([0, 0, 0, 0], port))
    }

    fn net(text: &str) -> IpNet {
        text.parse().expect("net")
    }

    #[test]
    fn rules_redirect_each_service_address_to_its_capture_port() {
        let mut redirects = BTreeMap::new();
        redirects.insert(
            key(Protocol::Tcp, "198.18.0.10:80"),
            (route(AddressKind::ClusterIp, endpoints()), bound(40001)),
        );
        redirects.insert(
            key(Protocol::Udp, "198.18.0.10:53"),
            (route(AddressKind::ClusterIp, endpoints()), bound(40002)),
        );
        redirects.insert(
            key(Protocol::Tcp, "[2001:db8::1]:80"),
            (route(AddressKind::ClusterIp, endpoints()), bound(40003)),
        );
        assert_eq!(
            render_rules("SVCPROXY-CAPTURE", &[], &redirects),
            "*nat\n\
             :SVCPROXY-CAPTURE - [0:0]\n\
             -A SVCPROXY-CAPTURE -d 198.18.0.10/32 -p tcp -m tcp --dport 80 -m comment --comment \"default/web:http cluster-ip\" -j REDIRECT --to-ports 40001\n\
             -A SVCPROXY-CAPTURE -d 198.18.0.10/32 -p udp -m udp --dport 53 -m comment --comment \"default/web:http cluster-ip\" -j REDIRECT --to-ports 40002\n\
             COMMIT\n\
             *filter\n\
             :SVCPROXY-CAPTURE - [0:0]\n\
             COMMIT\n"
        );
    }

    #[test]
    fn a_port_without_endpoints_is_rejected_and_one_without_local_endpoints_dropped() {
        let mut redirects = BTreeMap::new();
        redirects.insert(
            key(Protocol::Tcp, "198.18.0.10:80"),
            (
                route(AddressKind::ClusterIp, RouteTarget::Reject),
                bound(40001),
            ),
        );
        redirects.insert(
            key(Protocol::Udp, "198.18.0.10:53"),
            (
                route(AddressKind::ClusterIp, RouteTarget::Reject),
                bound(40002),
            ),
        );
        redirects.insert(
            key(Protocol::Tcp, "198.18.0.11:80"),
            (
                route(AddressKind::ClusterIp, RouteTarget::Drop),
                bound(40003),
            ),
        );
        assert_eq!(
            render_rules("C", &[], &redirects),
            "*nat\n\
             :C - [0:0]\n\
             COMMIT\n\
             *filter\n\
             :C - [0:0]\n\
             -A C -d 198.18.0.10/32 -p tcp -m tcp --dport 80 -m comment --comment \"default/web:http cluster-ip has no endpoints\" -j REJECT --reject-with tcp-reset\n\
             -A C -d 198.18.0.11/32 -p tcp -m tcp --dport 80 -m comment --comment \"default/web:http cluster-ip has no local endpoints\" -j DROP\n\
             -A C -d 198.18.0.10/32 -p udp -m udp --dport 53 -m comment --comment \"default/web:http cluster-ip has no endpoints\" -j REJECT --reject-with icmp-port-unreachable\n\
             COMMIT\n",
            "no redirect: nothing accepts the connection before the verdict"
        );
    }

    #[test]
    fn source_ranges_redirect_the_allowed_sources_and_drop_the_rest() {
        let lb = key(Protocol::Tcp, "198.19.102.1:80");
        let mut allowed = route(AddressKind::LoadBalancerIp, endpoints());
        allowed.source_ranges = vec![
            net("198.18.250.0/24"),
            net("2001:db8::/64"),
            net("198.19.102.1/32"),
        ];
        let rules = ListenerRules::of(lb, &allowed, bound(40001), &[]);
        let base = "-d 198.19.102.1/32 -p tcp -m tcp --dport 80";
        let comment = "-m comment --comment \"default/web:http load-balancer-ip";
        assert_eq!(
            rules.nat,
            [
                format!("{base} -s 198.18.250.0/24 {comment}\" -j REDIRECT --to-ports 40001"),
                format!("{base} -s 198.19.102.1/32 {comment}\" -j REDIRECT --to-ports 40001"),
            ]
        );
        assert_eq!(
            rules.filter,
            [format!(
                "{base} {comment} traffic not accepted by its source ranges\" -j DROP"
            )]
        );
        // No endpoints: the allowed sources are rejected, the others still dropped, in order.
        allowed.target = RouteTarget::Reject;
        let rules = ListenerRules::of(lb, &allowed, bound(40001), &[]);
        assert!(rules.nat.is_empty(), "{rules:?}");
        assert_eq!(
            rules.filter,
            [
                format!("{base} -s 198.18.250.0/24 {comment} has no endpoints\" -j REJECT --reject-with tcp-reset"),
                format!("{base} -s 198.19.102.1/32 {comment} has no endpoints\" -j REJECT --reject-with tcp-reset"),
                format!("{base} {comment} traffic not accepted by its source ranges\" -j DROP"),
            ]
        );
    }

    #[test]
    fn pods_and_the_node_are_short_circuited_past_the_drop_of_a_local_service() {
        let node_port = key(Protocol::Tcp, "198.18.250.254:30502");
        let mut local = route(AddressKind::NodePort, RouteTarget::Drop);
        local.short_circuit = Some(endpoints());
        let rules = ListenerRules::of(node_port, &local, bound(40001), &[net("198.18.0.0/17")]);
        let base = "-d 198.18.250.254/32 -p tcp -m tcp --dport 30502";
        let comment = "-m comment --comment \"default/web:http node-port";
        assert_eq!(
            rules.nat,
            [
                format!("{base} -s 198.18.0.0/17 {comment}\" -j REDIRECT --to-ports 40001"),
                format!(
                    "{base} -m addrtype --src-type LOCAL {comment}\" -j REDIRECT --to-ports 40001"
                ),
            ]
        );
        assert_eq!(
            rules.filter,
            [format!("{base} {comment} has no local endpoints\" -j DROP")]
        );
        // With source ranges, only the pods and the node within them.
        let mut ranged = local.clone();
        ranged.kind = AddressKind::LoadBalancerIp;
        ranged.source_ranges = vec![net("198.18.3.0/24"), net("198.18.250.0/24")];
        let cidrs = [net("198.18.0.0/17")];
        let rules = ListenerRules::of(node_port, &ranged, bound(40001), &cidrs);
        let comment = "-m comment --comment \"default/web:http load-balancer-ip";
        assert_eq!(
            rules.nat,
            [
                format!("{base} -s 198.18.3.0/24 {comment}\" -j REDIRECT --to-ports 40001"),
                format!(
                    "{base} -s 198.18.3.0/24 -m addrtype --src-type LOCAL {comment}\" -j REDIRECT --to-ports 40001"
                ),
                format!(
                    "{base} -s 198.18.250.0/24 -m addrtype --src-type LOCAL {comment}\" -j REDIRECT --to-ports 40001"
                ),
            ]
        );
        assert_eq!(rules.filter.len(), 3, "{rules:?}");
        // Nowhere to short-circuit to: every source gets the verdict.
        local.short_circuit = Some(RouteTarget::Reject);
        let rules = ListenerRules::of(node_port, &local, bound(40001), &[net("198.18.0.0/17")]);
        assert!(rules.nat.is_empty(), "{rules:?}");
    }

    #[test]
    fn edits_delete_then_append_single_rules_without_naming_the_chain() {
        let named = |service: &str| Route {
            service_port: ServicePortName::new("default", service, "http"),
            ..route(AddressKind::ClusterIp, endpoints())
        };
        let key = key(Protocol::Tcp, "198.18.0.10:80");
        let bound = bound(40001);
        assert_eq!(render_edits("C", &[], &[], &[]), None);
        assert_eq!(
            render_edits("C", &[], &[(key, named("old"), bound)], &[(key, named("new"), bound)])
                .expect("two edits"),
            "*nat\n\
             -D C -d 198.18.0.10/32 -p tcp -m tcp --dport 80 -m comment --comment \"default/old:http cluster-ip\" -j REDIRECT --to-ports 40001\n\
             -A C -d 198.18.0.10/32 -p tcp -m tcp --dport 80 -m comment --comment \"default/new:http cluster-ip\" -j REDIRECT --to-ports 40001\n\
             COMMIT\n"
        );
        // The endpoints went: the redirect goes, the reject comes, in their own tables.
        let rejecting = Route {
            target: RouteTarget::Reject,
            ..named("old")
        };
        assert_eq!(
            render_edits("C", &[], &[(key, named("old"), bound)], &[(key, rejecting, bound)])
                .expect("two edits"),
            "*nat\n\
             -D C -d 198.18.0.10/32 -p tcp -m tcp --dport 80 -m comment --comment \"default/old:http cluster-ip\" -j REDIRECT --to-ports 40001\n\
             COMMIT\n\
             *filter\n\
             -A C -d 198.18.0.10/32 -p tcp -m tcp --dport 80 -m comment --comment \"default/old:http cluster-ip has no endpoints\" -j REJECT --reject-with tcp-reset\n\
             COMMIT\n"
        );
    }
}
