//! Neighbours, for real (issue #10): two instances on one node never destroy each other, and
//! rules someone removes behind our back come back within the drift-check period. Dataplanes
//! made by `new` with the `netns` setting, in namespaces this test creates; the root namespace
//! is never written. Needs root; the variant is the host's, as `new` detects it.

mod cases;

use std::process::Command;
use std::time::{Duration, Instant};

use backend_iptables::apply::Variant;
use backend_iptables::rules::Family;
use backend_iptables::{IptablesConfig, IptablesDataplane};
use proxy_core::metrics::encode_text;
use proxy_core::prometheus_client::registry::Registry;
use proxy_core::{
    diff, Dataplane, DataplaneError, Protocol, ServiceTable, SyncConfig, SyncLoop, SyncMode,
    SyncReport, SyncRequest,
};
use testkit::netns::Netns;
use testkit::wait::eventually;

const HOOK: &str = "-A PREROUTING -m comment --comment \"service portals\" -j SVCP-SERVICES";
const DNAT: &str = "-j DNAT --to-destination 198.18.1.20:8080";

fn table() -> ServiceTable {
    ServiceTable::builder()
        .insert(
            cases::port("web", Protocol::Tcp, "198.19.0.20", 80)
                .with_endpoint(cases::remote("198.18.1.20", 8080)),
        )
        .build()
        .expect("valid table")
}

fn dataplane(netns: &Netns, prefix: &str) -> IptablesDataplane {
    IptablesDataplane::new(IptablesConfig {
        prefix: prefix.to_owned(),
        netns: Some(netns.name().to_owned()),
        ..cases::config()
    })
    .expect("valid config")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn first_sync(
    rt: &tokio::runtime::Runtime,
    dp: &mut IptablesDataplane,
) -> Result<SyncReport, DataplaneError> {
    let table = table();
    let changes = diff(&ServiceTable::empty(), &table);
    rt.block_on(dp.sync(SyncRequest {
        desired: &table,
        changes: &changes,
        mode: SyncMode::Full,
    }))
}

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

/// The host's variant, as plain `iptables --version` names it (read only).
fn host_variant() -> Variant {
    let o = Command::new("iptables")
        .arg("--version")
        .output()
        .expect("iptables --version");
    Variant::from_version_output(&String::from_utf8_lossy(&o.stdout)).expect("a known variant")
}

/// The IPv4 nat table of `netns` as `iptables-save` prints it.
fn nat(variant: Variant, netns: &Netns) -> String {
    netns.exec_ok(variant.save_binary(Family::V4), &["-t", "nat"])
}

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn a_second_instance_on_the_same_prefix_and_namespace_is_refused_until_the_first_is_gone() {
    let rt = runtime();
    let node = Netns::new("owner");
    let elsewhere = Netns::new("owner-other");
    let mut first = dataplane(&node, "SVCP-");
    let report = first_sync(&rt, &mut first).expect("the first owns the namespace");
    assert!(report.is_complete(), "{report}");
    let lock = first
        .lock_path()
        .expect("held after the first sync")
        .to_owned();
    assert!(lock.starts_with("/run/svcproxy"), "{}", lock.display());

    // The drift check on an intact namespace: nothing found, and how long it takes.
    let started = Instant::now();
    assert!(!rt.block_on(first.check_drift()).expect("check runs"));
    eprintln!("drift check: {:?}", started.elapsed());

    let mut second = dataplane(&node, "SVCP-");
    let err = first_sync(&rt, &mut second).expect_err("the prefix is owned");
    let text = error_chain(&err);
    assert!(
        text.contains(&format!("pid {}", std::process::id()))
            && text.contains("iptables objects under \"SVCP-\"")
            && text.contains(&lock.display().to_string()),
        "{text}"
    );
    // The caller's own namespace, entered on a thread: the same namespace, the same lock.
    let inside = node.run(|| {
        let rt = runtime();
        let mut dp = IptablesDataplane::new(cases::config()).expect("valid config");
        first_sync(&rt, &mut dp)
            .map(|_| ())
            .map_err(|e| error_chain(&e))
    });
    assert!(
        inside
            .as_ref()
            .is_err_and(|e| e.contains("already managed by")),
        "{inside:?}"
    );

    let mut other_prefix = dataplane(&node, "OTHR-");
    first_sync(&rt, &mut other_prefix).expect("another prefix, other chains");
    let mut other_netns = dataplane(&elsewhere, "SVCP-");
    first_sync(&rt, &mut other_netns).expect("another namespace, other chains");

    // Still the first's rules, untouched by the refused one.
    let variant = first.variant().expect("detected");
    let rules = nat(variant, &node);
    assert!(
        rules.contains(HOOK) && rules.contains(DNAT),
        "{variant}:\n{rules}"
    );

    drop(first);
    assert!(!lock.exists(), "the lock goes with its holder");
    let report = first_sync(&rt, &mut second).expect("free once the first is gone");
    assert!(report.is_complete(), "{report}");
    assert_eq!(second.lock_path(), Some(lock.as_path()));
}

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn a_flushed_or_deleted_nat_table_is_found_by_the_drift_check_and_repaired_at_once() {
    let variant = host_variant();
    let node = Netns::new("drift");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let mut registry = Registry::default();
    let config = SyncConfig {
        min_sync_period: Duration::from_millis(100),
        // Far away: only the drift check can bring the rules back within this test.
        full_sync_period: Duration::from_secs(3_600),
        drift_check_period: Duration::from_millis(500),
        ..SyncConfig::default()
    };
    let sync_loop = SyncLoop::new(dataplane(&node, "SVCP-"), config, &mut registry);
    let health = sync_loop.health();
    let (tables, source) = tokio::sync::watch::channel(ServiceTable::empty());
    tables
        .send(table())
        .expect("the loop is not started yet: kept");
    let task = rt.spawn(sync_loop.run(source, std::future::pending()));

    let bound = Duration::from_secs(10);
    let step = Duration::from_millis(20);
    eventually("the first sync", bound, step, || {
        if health.has_synced() {
            Ok(())
        } else {
            Err(health.last_error())
        }
    });
    let iptables = variant.binary(Family::V4);
    let drifted = |n: f64| {
        let text = encode_text(&registry).expect("encodes");
        text.lines()
            .any(|l| l == format!("svcproxy_sync_drift_detected_total {n}"))
    };

    for (round, vandal) in [&["-F"][..], &["-F", "-X"][..]].into_iter().enumerate() {
        for flag in vandal {
            node.exec_ok(iptables, &["-t", "nat", flag]);
        }
        let broken = nat(variant, &node);
        assert!(!broken.contains(DNAT), "{vandal:?}:\n{broken}");
        let started = Instant::now();
        let repaired = eventually("the rules back", bound, step, || {
            let rules = nat(variant, &node);
            if rules.contains(HOOK) && rules.contains(DNAT) {
                Ok(started.elapsed())
            } else {
                Err(rules)
            }
        });
        eprintln!("{variant} {vandal:?}: repaired after {repaired:?}");
        assert!(
            repaired < Duration::from_secs(2),
            "{vandal:?}: a 0.5 s check and a full sync took {repaired:?}"
        );
        let n = (round + 1) as f64;
        eventually("the drift counted", bound, step, || {
            if drifted(n) {
                Ok(())
            } else {
                Err(encode_text(&registry).expect("encodes"))
            }
        });
        assert_eq!(health.drifts_detected(), round as u64 + 1);
        eventually("health repaired", bound, step, || {
            if health.is_degraded() {
                Err(health.problems())
            } else {
                Ok(())
            }
        });
    }
    task.abort();
    drop(rt);
}
