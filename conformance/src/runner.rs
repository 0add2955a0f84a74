//! Runs the case list against one dataplane: one table holding every scenario's service ports
//! (each scenario has addresses and node ports of its own), one sync, then every flow in
//! order with real traffic, each judged against its expectation and the backend's plan.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use proxy_core::ServiceTable;

use crate::cases::{plan, Backend, Expect, Flow, Plan, Scenario, Seen, NODE_NAME};
use crate::driver::NodeDriver;
use crate::probe::{probe, Outcome};
use crate::topology::{node_facing, Topology};

/// Tries per expected endpoint before an endpoint that never answered counts as missing: with
/// random selection among n endpoints one is missed in 12·n tries with probability below
/// n·(1 − 1/n)^(12n) (2·10⁻⁴ for n = 2); round robin needs n.
const TRIES_PER_ENDPOINT: usize = 12;

/// The verdict on one flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Everything as expected.
    Pass,
    /// The endpoints as expected; the source they saw was not checked, for this reason.
    PassWithoutSourceCheck(&'static str),
    /// Not run, for this reason.
    Skipped(String),
    /// Failed, as the case list says it does (a known bug): the reason, and what happened.
    KnownFailure {
        /// The case list's reason.
        reason: &'static str,
        /// What happened.
        got: String,
    },
    /// Failed, as kube-proxy's own mode does (a shared deviation): how, where kube-proxy does
    /// the same, and what happened.
    SharedDeviation {
        /// The case list's description of the deviation.
        how: &'static str,
        /// Where kube-proxy does the same.
        source: &'static str,
        /// What happened.
        got: String,
    },
    /// Failed.
    Fail(String),
    /// Listed as a known failure, but it passed: the list must be updated.
    UnexpectedPass(&'static str),
}

impl Verdict {
    fn tag(&self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::PassWithoutSourceCheck(_) => "PASS (source not checked)",
            Verdict::Skipped(_) => "SKIPPED",
            Verdict::KnownFailure { .. } => "KNOWN FAILURE",
            Verdict::SharedDeviation { .. } => "AS KUBE-PROXY",
            Verdict::Fail(_) => "FAIL",
            Verdict::UnexpectedPass(_) => "FIXED (remove the known-failure or deviation note)",
        }
    }

    /// Whether this verdict fails the suite.
    pub fn is_failure(&self) -> bool {
        matches!(self, Verdict::Fail(_) | Verdict::UnexpectedPass(_))
    }
}

/// One flow's result.
#[derive(Debug, Clone)]
pub struct FlowResult {
    /// The scenario's id.
    pub scenario: &'static str,
    /// The kube-proxy test it comes from.
    pub origin: &'static str,
    /// The flow's name.
    pub flow: &'static str,
    /// The verdict.
    pub verdict: Verdict,
}

/// Everything one backend's run gave.
#[derive(Debug, Clone)]
pub struct Report {
    /// The backend.
    pub backend: Backend,
    /// What ran, for the log: the backend's name, or a configuration of it.
    pub label: &'static str,
    /// The sync's own report (problems included), for the log.
    pub sync: String,
    /// One result per flow, in case-list order.
    pub results: Vec<FlowResult>,
    /// How long the sync and every flow took.
    pub elapsed: Duration,
}

impl Report {
    fn count(&self, pred: impl Fn(&Verdict) -> bool) -> usize {
        self.results.iter().filter(|r| pred(&r.verdict)).count()
    }

    /// Panics, with the whole report, when a flow failed or a known failure passed.
    ///
    /// # Panics
    ///
    /// As said.
    pub fn assert_conformant(&self) {
        let failed = self.count(Verdict::is_failure);
        assert!(
            failed == 0,
            "{failed} flow(s) failed on {}:\n{self}",
            self.label
        );
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "conformance: {} ({})", self.label, self.sync)?;
        for r in &self.results {
            write!(
                f,
                "  {:<13} {} / {}  [{}]",
                r.verdict.tag(),
                r.scenario,
                r.flow,
                r.origin
            )?;
            match &r.verdict {
                Verdict::Pass => writeln!(f)?,
                Verdict::PassWithoutSourceCheck(why) | Verdict::UnexpectedPass(why) => {
                    writeln!(f, "\n        {why}")?
                }
                Verdict::Skipped(why) => writeln!(f, "\n        {why}")?,
                Verdict::KnownFailure { reason, got } => {
                    writeln!(f, "\n        {reason}\n        got: {got}")?
                }
                Verdict::SharedDeviation { how, source, got } => writeln!(
                    f,
                    "\n        {how}\n        kube-proxy: {source}\n        got: {got}"
                )?,
                Verdict::Fail(got) => writeln!(f, "\n        {got}")?,
            }
        }
        writeln!(
            f,
            "conformance: {}: {} passed, {} passed without the source check, {} skipped, \
             {} known failures, {} deviations shared with kube-proxy, {} failed, \
             {} known failures now pass; {:.1} s",
            self.label,
            self.count(|v| *v == Verdict::Pass),
            self.count(|v| matches!(v, Verdict::PassWithoutSourceCheck(_))),
            self.count(|v| matches!(v, Verdict::Skipped(_))),
            self.count(|v| matches!(v, Verdict::KnownFailure { .. })),
            self.count(|v| matches!(v, Verdict::SharedDeviation { .. })),
            self.count(|v| matches!(v, Verdict::Fail(_))),
            self.count(|v| matches!(v, Verdict::UnexpectedPass(_))),
            self.elapsed.as_secs_f64(),
        )
    }
}

/// One table with every scenario's service ports, this node named [`NODE_NAME`].
///
/// # Panics
///
/// When the case list makes an invalid table (a clash between scenarios).
pub fn table_of(scenarios: &[Scenario]) -> ServiceTable {
    let mut builder = ServiceTable::builder().node(NODE_NAME);
    for scenario in scenarios {
        for port in &scenario.ports {
            builder.insert_new(port.clone());
        }
    }
    builder
        .build()
        .unwrap_or_else(|e| panic!("the case list's table is invalid: {e}"))
}

/// Syncs every scenario's ports into `driver`'s dataplane, then runs every flow from the
/// namespaces of `topology`, `timeout` bounding each TCP connect (after it, a SYN counts as
/// dropped; answers get [`crate::probe::ANSWER_TIMEOUT`]).
///
/// # Panics
///
/// When the sync fails: nothing can be judged then.
pub fn run_suite(
    backend: Backend,
    topology: &Topology,
    driver: &NodeDriver,
    scenarios: &[Scenario],
    timeout: Duration,
) -> Report {
    let started = Instant::now();
    let table = table_of(scenarios);
    let sync = driver
        .sync(&table)
        .unwrap_or_else(|e| panic!("{}: {e}", backend.name()));
    let mut results = Vec::new();
    for scenario in scenarios {
        for flow in &scenario.flows {
            let verdict = judge(backend, topology, scenario, flow, timeout);
            tracing::info!(
                backend = backend.name(),
                scenario = scenario.id,
                flow = flow.name,
                verdict = verdict.tag(),
                "flow"
            );
            results.push(FlowResult {
                scenario: scenario.id,
                origin: scenario.origin,
                flow: flow.name,
                verdict,
            });
        }
    }
    Report {
        backend,
        label: backend.name(),
        sync: sync.to_string().replace('\n', "; "),
        results,
        elapsed: started.elapsed(),
    }
}

fn judge(
    backend: Backend,
    topology: &Topology,
    scenario: &Scenario,
    flow: &Flow,
    timeout: Duration,
) -> Verdict {
    let (check_source, known) = match plan(backend, scenario, flow) {
        Plan::Skip(why) => return Verdict::Skipped(why),
        Plan::Run => (true, None),
        Plan::RunWithoutSourceCheck(why) => (false, Some(Err(why))),
        Plan::KnownFailure(why) => (true, Some(Ok(why))),
        Plan::SharedDeviation { how, source } => {
            let outcomes = sample(topology, flow, timeout);
            return match check(flow, &outcomes, true) {
                Ok(()) => Verdict::UnexpectedPass(how),
                Err(got) => Verdict::SharedDeviation { how, source, got },
            };
        }
    };
    let outcomes = sample(topology, flow, timeout);
    let result = check(flow, &outcomes, check_source);
    match (result, known) {
        (Ok(()), None) => Verdict::Pass,
        (Ok(()), Some(Err(why))) => Verdict::PassWithoutSourceCheck(why),
        (Ok(()), Some(Ok(why))) => Verdict::UnexpectedPass(why),
        (Err(got), Some(Ok(reason))) => Verdict::KnownFailure { reason, got },
        (Err(got), _) => Verdict::Fail(got),
    }
}

/// Probes `flow` from its source's namespace: for an expected answer, until every expected
/// endpoint answered or something else happened (bounded); otherwise once.
fn sample(topology: &Topology, flow: &Flow, timeout: Duration) -> Vec<Outcome> {
    let expected: BTreeSet<SocketAddr> = match &flow.expect {
        Expect::Answer { from, .. } => from.iter().copied().collect(),
        _ => BTreeSet::new(),
    };
    let tries = if expected.is_empty() {
        1
    } else if expected.len() == 1 {
        3
    } else {
        TRIES_PER_ENDPOINT * expected.len()
    };
    let (protocol, src, dst) = (flow.protocol, flow.from.addr, flow.to);
    topology.netns(flow.from.host).run(move || {
        let mut seen = BTreeSet::new();
        let mut outcomes = Vec::new();
        for _ in 0..tries {
            let outcome = probe(protocol, src, dst, timeout);
            let expected_answer = match &outcome {
                Outcome::Answered(a) => expected.contains(&a.endpoint),
                _ => false,
            };
            if let Outcome::Answered(a) = &outcome {
                seen.insert(a.endpoint);
            }
            outcomes.push(outcome);
            if !expected_answer || seen == expected {
                break;
            }
        }
        outcomes
    })
}

/// Judges `outcomes` against `flow`'s expectation; `Err` says what was wrong.
fn check(flow: &Flow, outcomes: &[Outcome], check_source: bool) -> Result<(), String> {
    let summary = || {
        let mut seen: Vec<String> = outcomes.iter().map(ToString::to_string).collect();
        seen.dedup();
        seen.join("; ")
    };
    match &flow.expect {
        Expect::Answer { from, seen } => {
            let mut answered = BTreeSet::new();
            for outcome in outcomes {
                let Outcome::Answered(a) = outcome else {
                    return Err(format!("want answers from {from:?}, got {outcome}"));
                };
                if !from.contains(&a.endpoint) {
                    return Err(format!("want answers from {from:?} only, got {outcome}"));
                }
                let want_peer = match seen {
                    Seen::Client => Some(flow.from.addr),
                    Seen::Node => node_facing(a.endpoint.ip()),
                };
                if check_source && want_peer != Some(a.peer) {
                    let what = match seen {
                        Seen::Client => "its own address (not masqueraded)",
                        Seen::Node => "the node's address (masqueraded)",
                    };
                    return Err(format!(
                        "the endpoint must see {what} {}, got {outcome}",
                        want_peer.map(|p| p.to_string()).unwrap_or_default()
                    ));
                }
                answered.insert(a.endpoint);
            }
            let missing: Vec<_> = from.iter().filter(|e| !answered.contains(e)).collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "{missing:?} never answered in {} tries ({})",
                    outcomes.len(),
                    summary()
                ))
            }
        }
        Expect::Refused => match outcomes {
            [Outcome::Refused(_)] => Ok(()),
            _ => Err(format!("want refused fast, got {}", summary())),
        },
        Expect::Dropped => match outcomes {
            [Outcome::TimedOut] => Ok(()),
            _ => Err(format!("want dropped (a timeout), got {}", summary())),
        },
        Expect::NotServed => match outcomes {
            [Outcome::Answered(_)] => Err(format!("want no endpoint to answer, got {}", summary())),
            _ => Ok(()),
        },
    }
}

/// The whole suite for one backend: a topology of its own (namespaces tagged with the
/// backend's name), the dataplane `make` builds inside the node's namespace, every scenario,
/// and the report written to stderr past the test harness's capture, so that skips and known
/// failures show in every run, passing or not. The dataplane is cleaned up and the namespaces
/// removed before it returns.
///
/// # Panics
///
/// When the topology cannot be built or the sync fails.
pub fn run_backend<D, F>(backend: Backend, make: F, timeout: Duration) -> Report
where
    D: proxy_core::Dataplane + 'static,
    F: FnOnce() -> D + Send + 'static,
{
    run_backend_as(backend, backend.name(), make, timeout)
}

/// [`run_backend`] for a configuration of `backend` other than the usual one, named `label`
/// in the report (`iptables-legacy, flat dispatch`); `backend`'s notes apply.
///
/// # Panics
///
/// As [`run_backend`].
pub fn run_backend_as<D, F>(
    backend: Backend,
    label: &'static str,
    make: F,
    timeout: Duration,
) -> Report
where
    D: proxy_core::Dataplane + 'static,
    F: FnOnce() -> D + Send + 'static,
{
    let tag = match backend {
        Backend::IptablesLegacy => "cf-ipt-leg",
        Backend::IptablesNft => "cf-ipt-nft",
        Backend::Userspace => "cf-user",
        Backend::Ipvs => "cf-ipvs",
        Backend::Nftables => "cf-nft",
        Backend::KubeProxyLayout => "cf-kube",
    };
    let topology = Topology::new(tag);
    let report = {
        let driver = NodeDriver::start(topology.node(), backend.name(), make);
        let scenarios = crate::cases::scenarios();
        let mut report = run_suite(backend, &topology, &driver, &scenarios, timeout);
        report.label = label;
        report
        // The driver cleans the dataplane up here, before the namespaces go.
    };
    // Written to the process's stderr, not through `eprintln!`, which the test harness
    // captures and shows only on failure.
    let _ = std::io::Write::write_all(&mut std::io::stderr(), format!("\n{report}").as_bytes());
    report
}

#[cfg(test)]
mod tests {
    use std::io::ErrorKind;
    use std::net::IpAddr;

    use proxy_core::Protocol;

    use super::*;
    use crate::cases::{DestKind, FROM_CLIENT};
    use crate::endpoints::Answer;
    use crate::topology::{CLIENT_IP, NODE_TO_B, NODE_TO_L1, POD_L1, POD_R1};

    fn flow(expect: Expect) -> Flow {
        Flow {
            name: "test flow",
            from: FROM_CLIENT,
            to: "198.19.0.1:80".parse().expect("addr"),
            kind: DestKind::ClusterIp,
            protocol: Protocol::Tcp,
            expect,
            notes: Vec::new(),
        }
    }

    fn answered(endpoint: IpAddr, peer: IpAddr) -> Outcome {
        Outcome::Answered(Answer {
            endpoint: SocketAddr::new(endpoint, 8080),
            peer,
        })
    }

    fn both(seen: Seen) -> Expect {
        Expect::Answer {
            from: vec![SocketAddr::new(POD_L1, 8080), SocketAddr::new(POD_R1, 8080)],
            seen,
        }
    }

    #[test]
    fn an_answer_needs_every_endpoint_and_no_other() {
        let f = flow(both(Seen::Node));
        let good = [answered(POD_L1, NODE_TO_L1), answered(POD_R1, NODE_TO_B)];
        assert_eq!(check(&f, &good, true), Ok(()));
        let one = [answered(POD_L1, NODE_TO_L1), answered(POD_L1, NODE_TO_L1)];
        let err = check(&f, &one, true).expect_err("R1 never answered");
        assert!(err.contains("never answered"), "{err}");
        let stranger = [answered(crate::topology::POD_L2, NODE_TO_L1)];
        assert!(check(&f, &stranger, true).is_err());
        let refused = [Outcome::Refused(ErrorKind::ConnectionRefused)];
        assert!(check(&f, &refused, true).is_err());
    }

    #[test]
    fn the_source_seen_is_checked_unless_told_not_to() {
        // Masquerade wanted, the client's own address seen.
        let f = flow(both(Seen::Node));
        let unmasqueraded = [answered(POD_L1, CLIENT_IP), answered(POD_R1, CLIENT_IP)];
        let err = check(&f, &unmasqueraded, true).expect_err("not masqueraded");
        assert!(err.contains("masqueraded"), "{err}");
        assert_eq!(check(&f, &unmasqueraded, false), Ok(()));
        // The client's own address wanted, the node's seen.
        let f = flow(both(Seen::Client));
        let masqueraded = [answered(POD_L1, NODE_TO_L1), answered(POD_R1, NODE_TO_B)];
        assert!(check(&f, &masqueraded, true).is_err());
        let kept = [answered(POD_L1, CLIENT_IP), answered(POD_R1, CLIENT_IP)];
        assert_eq!(check(&f, &kept, true), Ok(()));
    }

    #[test]
    fn refused_dropped_and_not_served_are_told_apart() {
        let refused = [Outcome::Refused(ErrorKind::ConnectionRefused)];
        let dropped = [Outcome::TimedOut];
        let closed = [Outcome::ClosedWithoutAnswer];
        let served = [answered(POD_L1, CLIENT_IP)];
        let f = flow(Expect::Refused);
        assert_eq!(check(&f, &refused, true), Ok(()));
        assert!(check(&f, &dropped, true).is_err());
        assert!(
            check(&f, &closed, true).is_err(),
            "accepting is not refusing"
        );
        let f = flow(Expect::Dropped);
        assert_eq!(check(&f, &dropped, true), Ok(()));
        assert!(check(&f, &refused, true).is_err());
        assert!(check(&f, &closed, true).is_err());
        let f = flow(Expect::NotServed);
        for outcome in [&refused, &dropped, &closed] {
            assert_eq!(check(&f, outcome, true), Ok(()));
        }
        assert!(check(&f, &served, true).is_err());
    }
}
