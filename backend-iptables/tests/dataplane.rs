//! The Dataplane over the in-memory restore, save and hook fakes: full and partial syncs, drift
//! repair, recovery after a failed restore, cleanup.

mod cases;

use std::sync::Arc;

use backend_iptables::apply::RestoreRunner;
use backend_iptables::error::RestoreFailure;
use backend_iptables::observe::observe;
use backend_iptables::plan::Planner;
use backend_iptables::rules::Family;
use backend_iptables::testing::fake::{FakeHooks, FakeRestore};
use backend_iptables::testing::trace::{Packet, Tracer};
use backend_iptables::IptablesDataplane;
use proxy_core::table::Endpoint;
use proxy_core::{
    diff, Dataplane, DataplaneError, ServicePort, ServicePortName, ServiceTable, SyncMode,
    SyncReport, SyncRequest,
};

struct Rig {
    restore: Arc<FakeRestore>,
    hooks: Arc<FakeHooks>,
    dataplane: IptablesDataplane,
    planner: Planner,
}

fn rig() -> Rig {
    let planner = Planner::new(cases::config()).expect("valid config");
    let restore = Arc::new(FakeRestore::new());
    let hooks = Arc::new(FakeHooks::new());
    let dataplane = IptablesDataplane::with_runners(
        planner.clone(),
        restore.clone(),
        restore.clone(),
        hooks.clone(),
    );
    Rig {
        restore,
        hooks,
        dataplane,
        planner,
    }
}

impl Rig {
    fn summary(&self, dst: &str) -> String {
        let tracer = Tracer::new(
            Family::V4,
            &self.restore.state(Family::V4),
            &self.planner.hooks(),
            cases::local_addrs(),
        )
        .expect("state parses");
        tracer
            .trace(&Packet::tcp(cases::POD, dst, 80))
            .expect("trace")
            .summary()
    }
}

async fn sync(
    rig: &mut Rig,
    before: &ServiceTable,
    after: &ServiceTable,
    mode: SyncMode,
) -> proxy_core::SyncReport {
    let changes = diff(before, after);
    rig.dataplane
        .sync(SyncRequest {
            desired: after,
            changes: &changes,
            mode,
        })
        .await
        .expect("sync")
}

fn with_endpoint(table: &ServiceTable, i: u32, addr: &str) -> ServiceTable {
    let name = ServicePortName::new("scale", format!("s{i}"), "p");
    let mut port = ServicePort::clone(table.get(&name).expect("exists"));
    port.endpoints = vec![Endpoint::new(addr.parse().expect("ip"), 8080)];
    table.edit().insert(port).build().expect("valid")
}

#[tokio::test]
async fn full_then_partial_sync_then_cleanup() {
    let mut rig = rig();
    let empty = ServiceTable::empty();
    let a = cases::scale_table(50, 2);
    let report = sync(&mut rig, &empty, &a, SyncMode::Partial).await;
    assert_eq!(report.mode, SyncMode::Full, "first sync is full");
    assert_eq!(
        rig.summary("198.19.0.3"),
        "198.18.0.6:8080, 198.18.0.7:8080"
    );
    let hooked = rig.restore.builtin(Family::V4, "nat", "PREROUTING");
    assert_eq!(hooked.len(), 1, "{hooked:?}");

    let b = with_endpoint(&a, 3, "198.18.100.3");
    let calls_before = rig.restore.calls().len();
    let report = sync(&mut rig, &a, &b, SyncMode::Partial).await;
    assert_eq!(report.mode, SyncMode::Partial);
    // The dispatch leaf holding the port (inline balancing: up to 16 ports of 3 rules).
    assert!(report.objects_written <= 3 * 16, "{report}");
    assert_eq!(rig.restore.calls().len(), calls_before + 1, "one restore");
    assert_eq!(rig.summary("198.19.0.3"), "198.18.100.3:8080");

    let removed = rig.dataplane.cleanup().await.expect("cleanup");
    // The fixed chains and the dispatch leaves (inline balancing: the 50 ports have no chains).
    assert!(removed.objects_removed > 10, "{removed:?}");
    assert!(rig
        .restore
        .builtin(Family::V4, "nat", "PREROUTING")
        .is_empty());
    let left = observe(rig.restore.as_ref(), rig.planner.names())
        .await
        .expect("observe");
    assert!(
        left.chains.is_empty(),
        "{:?}",
        left.chains.keys().collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_full_sync_repairs_drift() {
    let mut rig = rig();
    let a = cases::scale_table(10, 2);
    sync(&mut rig, &ServiceTable::empty(), &a, SyncMode::Full).await;
    // Someone flushes our dispatch chain.
    rig.restore
        .restore(Family::V4, "*nat\n:SVCP-SERVICES - [0:0]\nCOMMIT\n")
        .await
        .expect("vandal");
    assert_eq!(rig.summary("198.19.0.1"), "ACCEPT");
    // A partial sync with no changes trusts its state and writes nothing...
    sync(&mut rig, &a, &a, SyncMode::Partial).await;
    assert_eq!(rig.summary("198.19.0.1"), "ACCEPT");
    // ...the periodic full sync reads the kernel back and repairs it.
    sync(&mut rig, &a, &a, SyncMode::Full).await;
    assert_eq!(
        rig.summary("198.19.0.1"),
        "198.18.0.2:8080, 198.18.0.3:8080"
    );
}

#[tokio::test]
async fn after_a_failed_restore_the_next_sync_is_full() {
    let mut rig = rig();
    let a = cases::scale_table(10, 2);
    sync(&mut rig, &ServiceTable::empty(), &a, SyncMode::Full).await;
    let b = with_endpoint(&a, 1, "198.18.100.1");
    rig.restore.fail_next(RestoreFailure {
        command: "fake".into(),
        status: Some(1),
        stderr: "Error occurred at line: 2".into(),
    });
    let changes = diff(&a, &b);
    let err = rig
        .dataplane
        .sync(SyncRequest {
            desired: &b,
            changes: &changes,
            mode: SyncMode::Partial,
        })
        .await
        .expect_err("restore fails");
    let chain = error_chain(&err);
    assert!(chain.contains("line 2"), "{chain}");
    assert_eq!(
        rig.summary("198.19.0.1"),
        "198.18.0.2:8080, 198.18.0.3:8080",
        "old rules kept"
    );
    let report = sync(&mut rig, &a, &b, SyncMode::Partial).await;
    assert_eq!(report.mode, SyncMode::Full);
    assert_eq!(rig.summary("198.19.0.1"), "198.18.100.1:8080");
}

#[derive(Debug, Default)]
struct FakeConntrack {
    entries: std::sync::Mutex<Vec<backend_iptables::conntrack::Entry>>,
}

impl backend_iptables::conntrack::ConntrackOps for FakeConntrack {
    fn dump(
        &self,
        _family: Family,
    ) -> Result<Vec<backend_iptables::conntrack::Entry>, backend_iptables::conntrack::ConntrackError>
    {
        Ok(self.entries.lock().expect("lock").clone())
    }

    fn delete(
        &self,
        _family: Family,
        entry: &backend_iptables::conntrack::Entry,
    ) -> Result<(), backend_iptables::conntrack::ConntrackError> {
        self.entries.lock().expect("lock").retain(|e| e != entry);
        Ok(())
    }
}

#[tokio::test]
async fn a_sync_deletes_udp_entries_of_a_removed_endpoint() {
    use backend_iptables::conntrack::Entry;
    let planner = Planner::new(cases::config()).expect("valid config");
    let restore = Arc::new(FakeRestore::new());
    let conntrack = Arc::new(FakeConntrack::default());
    let mut dataplane = IptablesDataplane::with_runners(
        planner,
        restore.clone(),
        restore.clone(),
        Arc::new(FakeHooks::new()),
    )
    .with_conntrack(conntrack.clone());
    let udp = |eps: &[&str]| {
        let mut p = ServicePort::new(
            ServicePortName::new("ns", "dns", "p"),
            proxy_core::Protocol::Udp,
            53,
        )
        .with_cluster_ip("198.19.0.53".parse().expect("ip"));
        for e in eps {
            p = p.with_endpoint(Endpoint::new(e.parse().expect("ip"), 5353));
        }
        ServiceTable::builder().insert(p).build().expect("valid")
    };
    let a = udp(&["198.18.1.1", "198.18.1.2"]);
    let b = udp(&["198.18.1.2"]);
    let entry = |reply: &str| Entry {
        proto: 17,
        src: "198.18.5.5".parse().expect("ip"),
        dst: "198.19.0.53".parse().expect("ip"),
        sport: 40000,
        dport: 53,
        reply_src: reply.parse().expect("ip"),
    };
    *conntrack.entries.lock().expect("lock") = vec![entry("198.18.1.1"), entry("198.18.1.2")];
    for (before, after) in [(ServiceTable::empty(), a.clone()), (a, b)] {
        let changes = diff(&before, &after);
        let report = dataplane
            .sync(SyncRequest {
                desired: &after,
                changes: &changes,
                mode: SyncMode::Partial,
            })
            .await
            .expect("sync");
        assert!(report.is_complete(), "{report}");
    }
    assert_eq!(
        *conntrack.entries.lock().expect("lock"),
        vec![entry("198.18.1.2")]
    );
}

#[tokio::test]
async fn a_missing_canary_turns_a_partial_sync_into_a_full_one() {
    let mut rig = rig();
    let a = cases::scale_table(10, 2);
    sync(&mut rig, &ServiceTable::empty(), &a, SyncMode::Full).await;
    // Someone flushes and deletes everything in nat: our chains and the canary are gone.
    rig.restore
        .restore(Family::V4, "*nat\n:SVCP-SERVICES - [0:0]\nCOMMIT\n")
        .await
        .expect("vandal");
    rig.hooks.set_missing("SVCP-CANARY", true);
    let report = sync(&mut rig, &a, &a, SyncMode::Partial).await;
    assert_eq!(report.mode, SyncMode::Full, "{report}");
    assert_eq!(
        rig.summary("198.19.0.1"),
        "198.18.0.2:8080, 198.18.0.3:8080"
    );
    rig.hooks.set_missing("SVCP-CANARY", false);
    let report = sync(&mut rig, &a, &a, SyncMode::Partial).await;
    assert_eq!(report.mode, SyncMode::Partial);
}

#[test]
fn a_ports_idle_timeout_is_accepted_and_changes_no_rule() {
    // Conntrack's timeouts are per namespace, none per rule: the port runs with them.
    let dataplane = IptablesDataplane::new(cases::config()).expect("valid config");
    let plain = cases::scale_table(2, 2);
    let mut idle = plain.edit();
    for port in plain.iter() {
        idle.upsert(ServicePort::clone(port).with_idle_timeout(std::time::Duration::from_secs(5)));
    }
    let idle = idle.build().expect("valid table");
    assert!(idle.iter().all(|p| p.idle_timeout.is_some()));
    let with = dataplane.dry_run(&idle).expect("plans");
    assert!(with.problems.is_empty(), "{:?}", with.problems);
    assert_eq!(
        with.rendered,
        dataplane.dry_run(&plain).expect("plans").rendered
    );
    assert!(IptablesDataplane::supported()
        .check("iptables", &idle)
        .is_ok());
}

#[test]
fn dry_run_renders_the_restore_input_and_hooks_without_touching_anything() {
    // A namespace that does not exist: `new` and `dry_run` must not care (no I/O at all).
    let config = backend_iptables::IptablesConfig {
        netns: Some("svcp-t-missing".into()),
        ..cases::config()
    };
    let planner = Planner::new(config.clone()).expect("valid config");
    let dataplane = IptablesDataplane::new(config).expect("valid config");
    assert_eq!(dataplane.variant(), None, "nothing detected before a sync");
    let table = cases::scale_table(2, 2);
    let dry_run = dataplane.dry_run(&table).expect("plans");
    let plan = planner.plan_full(&table);
    let mut want = format!(
        "# iptables backend in netns svcp-t-missing: full restore input for 2 service port(s), \
         4 endpoint(s): {} rules in {} chains\n",
        plan.rules_written(),
        plan.chains_written()
    );
    want.push_str(&plan.render());
    for hook in planner.hooks() {
        want.push_str(&format!(
            "# hook: -t {} -A {} {}\n",
            hook.table, hook.chain, hook.rule
        ));
    }
    assert_eq!(dry_run.rendered, want);
    assert!(dry_run.problems.is_empty(), "{:?}", dry_run.problems);
    assert!(
        dry_run.to_string().contains(
            "# hook: -t nat -A PREROUTING -m comment --comment \"service portals\" -j SVCP-SERVICES\n"
        ),
        "{dry_run}"
    );
}

#[test]
fn dry_run_refuses_a_scheduler_it_lacks_by_field() {
    let dataplane = IptablesDataplane::new(cases::config()).expect("valid config");
    let mut port = cases::port("web", proxy_core::Protocol::Tcp, "198.19.0.1", 80);
    port.scheduler = Some(proxy_core::Scheduler::RoundRobin);
    let table = ServiceTable::builder().insert(port).build().expect("valid");
    let err = dataplane.dry_run(&table).expect_err("rr is not ours");
    assert!(
        err.to_string().contains(
            "services[ns/web].ports[p].scheduler: rr is not supported by the iptables backend"
        ),
        "{err}"
    );
}

#[tokio::test]
async fn a_missing_namespace_fails_the_first_sync_at_detection_and_is_retried() {
    let mut dataplane = IptablesDataplane::new(backend_iptables::IptablesConfig {
        netns: Some("svcp-t-missing".into()),
        ..cases::config()
    })
    .expect("valid config");
    let table = cases::scale_table(1, 1);
    let changes = diff(&ServiceTable::empty(), &table);
    for attempt in 0..2 {
        let err = dataplane
            .sync(SyncRequest {
                desired: &table,
                changes: &changes,
                mode: SyncMode::Full,
            })
            .await
            .expect_err("no such namespace");
        let text = error_chain(&err);
        assert!(
            text.contains("cannot detect the iptables variant")
                && text.contains("ip netns exec svcp-t-missing iptables --version"),
            "attempt {attempt}: {text}"
        );
        assert_eq!(
            dataplane.variant(),
            None,
            "a failed detection is not cached"
        );
    }
}

#[tokio::test]
async fn metrics_registered_in_the_root_registry_carry_the_kubeproxy_prefix() {
    use proxy_core::prometheus_client::encoding::text::encode;
    use proxy_core::prometheus_client::registry::Registry;
    let mut rig = rig();
    let mut registry = Registry::default();
    rig.dataplane.register_metrics(&mut registry);
    let a = cases::scale_table(3, 2);
    sync(&mut rig, &ServiceTable::empty(), &a, SyncMode::Full).await;
    let b = with_endpoint(&a, 1, "198.18.100.1");
    sync(&mut rig, &a, &b, SyncMode::Partial).await;
    let mut text = String::new();
    encode(&mut text, &registry).expect("encode");
    for want in [
        "kubeproxy_sync_full_proxy_rules_duration_seconds_count 1\n",
        "kubeproxy_sync_partial_proxy_rules_duration_seconds_count 1\n",
        "kubeproxy_sync_proxy_rules_iptables_restore_failures_total 0\n",
        "kubeproxy_sync_proxy_rules_iptables_last{ip_family=\"IPv4\",table=\"nat\"} ",
        "kubeproxy_sync_proxy_rules_iptables_total{ip_family=\"IPv6\",table=\"filter\"} ",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    assert!(
        !text.lines().any(|l| l.starts_with("sync_")),
        "a series without its prefix:\n{text}"
    );
    // The sync loop registers the dataplane's metrics too: a second call adds nothing.
    rig.dataplane.register_metrics(&mut registry);
    let mut again = String::new();
    encode(&mut again, &registry).expect("encode");
    assert_eq!(again, text, "registered twice");
}

/// An error and every cause under it, on one line.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

// === one owner ===

/// A dataplane over fakes of its own, taking its owner lock in `dir`.
fn locked_rig(prefix: &str, dir: &std::path::Path) -> Rig {
    let planner = Planner::new(backend_iptables::IptablesConfig {
        prefix: prefix.to_owned(),
        ..cases::config()
    })
    .expect("valid config");
    let restore = Arc::new(FakeRestore::new());
    let hooks = Arc::new(FakeHooks::new());
    let dataplane = IptablesDataplane::with_runners(
        planner.clone(),
        restore.clone(),
        restore.clone(),
        hooks.clone(),
    )
    .with_lock_dir(dir);
    Rig {
        restore,
        hooks,
        dataplane,
        planner,
    }
}

async fn try_sync(rig: &mut Rig, table: &ServiceTable) -> Result<SyncReport, DataplaneError> {
    let changes = diff(&ServiceTable::empty(), table);
    rig.dataplane
        .sync(SyncRequest {
            desired: table,
            changes: &changes,
            mode: SyncMode::Full,
        })
        .await
}

#[tokio::test]
async fn a_second_dataplane_on_the_same_prefix_is_refused_by_name_until_the_first_is_gone() {
    let dir = testkit::fs::TempDir::new("iptables-owner");
    let table = cases::scale_table(2, 1);
    let mut first = locked_rig("SVCP-", dir.path());
    assert_eq!(first.dataplane.lock_path(), None, "taken at the first sync");
    try_sync(&mut first, &table).await.expect("free");
    let lock = first.dataplane.lock_path().expect("held").to_owned();

    let mut second = locked_rig("SVCP-", dir.path());
    for attempt in 0..2 {
        let err = try_sync(&mut second, &table).await.expect_err("owned");
        let text = error_chain(&err);
        assert!(
            text.contains(&format!("pid {}", std::process::id()))
                && text.contains("iptables objects under \"SVCP-\"")
                && text.contains(&lock.display().to_string()),
            "attempt {attempt}: {text}"
        );
        assert!(
            second.restore.calls().is_empty(),
            "nothing written before the lock"
        );
    }
    let err = second.dataplane.cleanup().await.expect_err("owned");
    assert!(
        error_chain(&err).contains("already managed by"),
        "{}",
        error_chain(&err)
    );
    assert!(
        second
            .restore
            .builtin(Family::V4, "nat", "PREROUTING")
            .is_empty(),
        "a refused cleanup removes nothing either"
    );

    let mut other = locked_rig("OTHER-", dir.path());
    try_sync(&mut other, &table)
        .await
        .expect("another prefix owns other chains");

    drop(first);
    assert!(!lock.exists(), "the lock file goes with its holder");
    try_sync(&mut second, &table)
        .await
        .expect("free once the first is gone");
}

// === drift check ===

/// `rig`'s first nat chain holding a service port's rules (`SVCP-SVC-...`, or with inline
/// balancing a dispatch leaf `SVCP-DT-...`) in `family`.
fn a_service_chain(rig: &Rig, family: Family) -> String {
    rig.restore
        .state(family)
        .lines()
        .find_map(|l| {
            l.strip_prefix(':')
                .filter(|c| c.starts_with("SVCP-SVC-") || c.starts_with("SVCP-DT-"))
                .map(|c| c.split(' ').next().unwrap_or("").to_owned())
        })
        .expect("a service chain")
}

#[tokio::test]
async fn the_drift_check_finds_deleted_chains_flushed_hooks_and_edited_chains() {
    let mut rig = rig();
    assert!(
        !rig.dataplane.check_drift().await.expect("runs"),
        "nothing programmed, nothing to drift"
    );
    // 40 ports: more than a leaf of 16, so the dispatch tree has leaves.
    let a = cases::scale_table(40, 1);
    sync(&mut rig, &ServiceTable::empty(), &a, SyncMode::Full).await;
    assert!(!rig.dataplane.check_drift().await.expect("runs"));

    // Chains deleted (`-X`): the canary is gone.
    rig.restore
        .restore(
            Family::V4,
            "*nat\n:SVCP-CANARY - [0:0]\n-X SVCP-CANARY\nCOMMIT\n",
        )
        .await
        .expect("vandal");
    assert!(rig.dataplane.check_drift().await.expect("runs"));
    sync(&mut rig, &a, &a, SyncMode::Full).await;
    assert!(!rig.dataplane.check_drift().await.expect("runs"));

    // A hook deleted by hand from the IPv4 filter table (not its first one).
    let hook = rig
        .planner
        .hooks()
        .into_iter()
        .filter(|h| h.table == backend_iptables::rules::TableName::Filter)
        .nth(2)
        .expect("a filter hook");
    rig.restore
        .restore(
            Family::V4,
            &format!("*filter\n-D {} {}\nCOMMIT\n", hook.chain, hook.rule),
        )
        .await
        .expect("vandal");
    assert!(rig.dataplane.check_drift().await.expect("runs"));
    let report = sync(&mut rig, &a, &a, SyncMode::Full).await;
    assert_eq!(report.mode, SyncMode::Full);
    assert!(
        rig.restore
            .builtin(Family::V4, "filter", hook.chain.as_str())
            .contains(&hook.rule.to_string()),
        "the full sync put the hook back"
    );
    assert!(!rig.dataplane.check_drift().await.expect("runs"));

    // A rule added by hand to one of our service chains (issue #10): found by the next check,
    // not only by the periodic full sync.
    let chain = a_service_chain(&rig, Family::V4);
    rig.restore
        .restore(
            Family::V4,
            &format!("*nat\n-A {chain} -s 198.18.99.0/24 -j RETURN\nCOMMIT\n"),
        )
        .await
        .expect("vandal");
    assert!(rig.dataplane.check_drift().await.expect("runs"));
    sync(&mut rig, &a, &a, SyncMode::Full).await;
    assert!(
        !rig.restore
            .state(Family::V4)
            .rsplit(&format!(":{chain} "))
            .next()
            .expect("declared")
            .contains("198.18.99.0/24"),
        "the full sync rewrote the chain"
    );
    assert!(!rig.dataplane.check_drift().await.expect("runs"));
}

#[tokio::test]
async fn an_unchanged_ruleset_is_checked_with_one_save_and_never_rewritten() {
    let mut rig = rig();
    let a = cases::scale_table(5, 2);
    sync(&mut rig, &ServiceTable::empty(), &a, SyncMode::Full).await;
    let restores = rig.restore.calls().len();
    let processes = rig.restore.processes().len();
    for _ in 0..5 {
        assert!(!rig.dataplane.check_drift().await.expect("runs"));
    }
    assert_eq!(rig.restore.calls().len(), restores, "nothing written");
    let checks = &rig.restore.processes()[processes..];
    assert_eq!(
        checks,
        vec![backend_iptables::testing::fake::Process::Save(Family::V4, None); 5],
        "one save of the one family we program per check"
    );
    assert_eq!(rig.hooks.calls(), 0, "no per-rule iptables call");
}

// === fixed cost (issue #11) ===

/// Processes a sync ran per family: (saves, restores), plus single-rule `iptables` calls.
fn processes_since(rig: &Rig, from: usize, family: Family) -> (usize, usize) {
    use backend_iptables::testing::fake::Process;
    let all = rig.restore.processes();
    let of = all[from..].iter().filter(|p| p.family() == family);
    let saves = of
        .clone()
        .filter(|p| matches!(p, Process::Save(..)))
        .count();
    (saves, of.count() - saves)
}

#[tokio::test]
async fn a_full_sync_of_one_service_runs_at_most_two_processes_per_family() {
    let mut rig = rig();
    let one = cases::scale_table(1, 1);
    sync(&mut rig, &ServiceTable::empty(), &one, SyncMode::Full).await;
    assert_eq!(
        processes_since(&rig, 0, Family::V4),
        (1, 1),
        "one save and one restore"
    );
    assert_eq!(
        processes_since(&rig, 0, Family::V6),
        (1, 0),
        "IPv6 read once for leftovers of ours, nothing written"
    );
    assert_eq!(rig.hooks.calls(), 0, "hooks go in the restore");
    let hooked = rig.restore.builtin(Family::V4, "filter", "FORWARD");
    assert_eq!(hooked.len(), 4, "{hooked:?}");
    assert!(rig
        .restore
        .builtin(Family::V6, "nat", "PREROUTING")
        .is_empty());

    // The periodic full sync: IPv6 is known to hold nothing of ours, and stays untouched.
    let from = rig.restore.processes().len();
    sync(&mut rig, &one, &one, SyncMode::Full).await;
    assert_eq!(processes_since(&rig, from, Family::V4), (1, 1));
    assert_eq!(processes_since(&rig, from, Family::V6), (0, 0));
    assert_eq!(rig.hooks.calls(), 0);
    assert!(
        !rig.restore
            .calls()
            .last()
            .expect("a restore")
            .1
            .contains("-I "),
        "hooks in place are not inserted again"
    );
    assert_eq!(rig.summary("198.19.0.0"), "198.18.0.0:8080");
}

#[tokio::test]
async fn missing_hooks_go_first_in_planned_order_and_foreign_rules_stay() {
    let mut rig = rig();
    rig.restore.append_builtin(
        Family::V4,
        "filter",
        "FORWARD",
        "-p tcp -m tcp --dport 9 -j ACCEPT",
    );
    rig.restore.append_builtin(
        Family::V4,
        "nat",
        "PREROUTING",
        "-p udp -m udp --dport 9 -j RETURN",
    );
    let a = cases::scale_table(2, 1);
    sync(&mut rig, &ServiceTable::empty(), &a, SyncMode::Full).await;
    let planned: Vec<String> = rig
        .planner
        .hooks()
        .iter()
        .filter(|h| h.chain.as_str() == "FORWARD")
        .map(|h| h.rule.to_string())
        .collect();
    let mut want = planned.clone();
    want.push("-p tcp -m tcp --dport 9 -j ACCEPT".to_owned());
    assert_eq!(rig.restore.builtin(Family::V4, "filter", "FORWARD"), want);
    assert_eq!(
        rig.restore.builtin(Family::V4, "nat", "PREROUTING").last(),
        Some(&"-p udp -m udp --dport 9 -j RETURN".to_owned())
    );

    // One hook deleted by hand: the next full sync puts it back at the top, and only it.
    rig.restore
        .restore(
            Family::V4,
            &format!("*filter\n-D FORWARD {}\nCOMMIT\n", planned[1]),
        )
        .await
        .expect("vandal");
    sync(&mut rig, &a, &a, SyncMode::Full).await;
    let calls = rig.restore.calls();
    let input = &calls.last().expect("a restore").1;
    let inserts: Vec<&str> = input.lines().filter(|l| l.starts_with("-I ")).collect();
    assert_eq!(inserts, [format!("-I FORWARD 1 {}", planned[1])]);

    // Cleanup takes exactly ours away, with one save and at most one restore per family.
    let from = rig.restore.processes().len();
    rig.dataplane.cleanup().await.expect("cleanup");
    assert_eq!(processes_since(&rig, from, Family::V4), (1, 1));
    assert_eq!(
        processes_since(&rig, from, Family::V6),
        (1, 0),
        "nothing of ours there"
    );
    assert_eq!(
        rig.restore.builtin(Family::V4, "filter", "FORWARD"),
        ["-p tcp -m tcp --dport 9 -j ACCEPT"]
    );
    assert_eq!(
        rig.restore.builtin(Family::V4, "nat", "PREROUTING"),
        ["-p udp -m udp --dport 9 -j RETURN"]
    );
    assert_eq!(rig.hooks.calls(), 0);
}

#[tokio::test]
async fn a_family_the_table_stops_using_is_emptied_then_left_alone() {
    let mut rig = rig();
    let dual = cases::cases()
        .into_iter()
        .find(|c| c.name == "dual_stack")
        .expect("case")
        .table;
    sync(&mut rig, &ServiceTable::empty(), &dual, SyncMode::Full).await;
    assert!(!rig
        .restore
        .builtin(Family::V6, "nat", "PREROUTING")
        .is_empty());
    let v6_chains = |rig: &Rig| {
        let names = rig.planner.names().clone();
        let restore = rig.restore.clone();
        async move {
            observe(restore.as_ref(), &names)
                .await
                .expect("observe")
                .chains
                .keys()
                .filter(|k| k.0 == Family::V6)
                .count()
        }
    };
    assert!(v6_chains(&rig).await > 5);

    // The IPv6 side goes: a partial sync deletes its chains, the next full sync the rest.
    let v4 = cases::scale_table(2, 1);
    sync(&mut rig, &dual, &v4, SyncMode::Partial).await;
    sync(&mut rig, &v4, &v4, SyncMode::Full).await;
    assert_eq!(v6_chains(&rig).await, 0);
    for chain in ["PREROUTING", "OUTPUT", "POSTROUTING"] {
        assert!(rig.restore.builtin(Family::V6, "nat", chain).is_empty());
    }
    assert!(!rig.dataplane.check_drift().await.expect("runs"));
    let from = rig.restore.processes().len();
    sync(&mut rig, &v4, &v4, SyncMode::Full).await;
    assert!(!rig.dataplane.check_drift().await.expect("runs"));
    assert_eq!(processes_since(&rig, from, Family::V6), (0, 0));

    // An IPv6 service port again: its first sync is full, and hooks IPv6 again.
    let report = sync(&mut rig, &v4, &dual, SyncMode::Partial).await;
    assert_eq!(report.mode, SyncMode::Full);
    assert_eq!(
        rig.restore.builtin(Family::V6, "nat", "PREROUTING").len(),
        1
    );
}

#[tokio::test]
async fn leftovers_of_an_earlier_run_in_an_unused_family_are_removed_at_the_first_sync() {
    let mut earlier = rig();
    let dual = cases::cases()
        .into_iter()
        .find(|c| c.name == "dual_stack")
        .expect("case")
        .table;
    sync(&mut earlier, &ServiceTable::empty(), &dual, SyncMode::Full).await;
    // A new process on the same kernel, with an IPv4-only table.
    let mut rig = Rig {
        dataplane: IptablesDataplane::with_runners(
            earlier.planner.clone(),
            earlier.restore.clone(),
            earlier.restore.clone(),
            earlier.hooks.clone(),
        ),
        restore: earlier.restore.clone(),
        hooks: earlier.hooks.clone(),
        planner: earlier.planner.clone(),
    };
    let from = rig.restore.processes().len();
    let v4 = cases::scale_table(2, 1);
    sync(&mut rig, &ServiceTable::empty(), &v4, SyncMode::Full).await;
    assert_eq!(processes_since(&rig, from, Family::V6), (1, 1));
    let left = observe(rig.restore.as_ref(), rig.planner.names())
        .await
        .expect("observe");
    assert!(left.chains.keys().all(|k| k.0 == Family::V4));
    assert!(rig
        .restore
        .builtin(Family::V6, "filter", "FORWARD")
        .is_empty());
}
