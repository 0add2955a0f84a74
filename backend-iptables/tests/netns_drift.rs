//! Rules edited by hand inside our chains, for real (issue #10): a rule inserted into one of our
//! service chains, or one of ours deleted from it, is found by the drift check (default period,
//! 2 s) and repaired by the full sync it forces, within a few seconds and not at the 30 s resync,
//! while traffic through the service keeps flowing; an unchanged ruleset is never rewritten by
//! the check. Both variants, in namespaces this test creates. Needs root.

mod cases;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backend_iptables::apply::{CommandRunner, Variant};
use backend_iptables::hooks::IptablesHooks;
use backend_iptables::plan::Planner;
use backend_iptables::rules::Family;
use backend_iptables::IptablesDataplane;
use proxy_core::metrics::encode_text;
use proxy_core::prometheus_client::registry::Registry;
use proxy_core::{Protocol, ServiceTable, SyncConfig, SyncLoop};
use testkit::net::AnswerServer;
use testkit::netns::Netns;
use testkit::wait::eventually;

const MARKER: &str = "198.18.99.0/24";

fn table() -> ServiceTable {
    ServiceTable::builder()
        .node("node-a")
        .insert(
            cases::port("web", Protocol::Tcp, "198.19.0.20", 80)
                .with_endpoint(cases::local("198.18.1.20", 8080)),
        )
        .build()
        .expect("valid table")
}

/// The value of one series in the registry's text, 0 when absent.
fn series(registry: &Registry, name: &str) -> f64 {
    let text = encode_text(registry).expect("encodes");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// The rules of `chain` in the namespace's IPv4 nat table.
fn rules_of(ns: &Netns, variant: Variant, chain: &str) -> Vec<String> {
    let prefix = format!("-A {chain} ");
    ns.exec_ok(variant.save_binary(Family::V4), &["-t", "nat"])
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
        .collect()
}

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn a_rule_edited_by_hand_in_our_chain_is_repaired_within_seconds_while_traffic_flows() {
    for variant in [Variant::Legacy, Variant::Nft] {
        let ns = Netns::new(&format!("drift-{variant}"));
        ns.run(|| cases::setup_node_v4(&["198.18.1.20/32"]));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let runner = CommandRunner::new(variant).with_prefix(ns.exec_prefix());
        let dataplane = IptablesDataplane::with_runners(
            Planner::new(cases::config()).expect("valid config"),
            Arc::new(runner.clone()),
            Arc::new(runner.clone()),
            Arc::new(IptablesHooks::like(&runner)),
        );
        let mut registry = Registry::default();
        let config = SyncConfig {
            min_sync_period: Duration::from_millis(100),
            // Far away: only the drift check can repair the rules within this test.
            full_sync_period: Duration::from_secs(3_600),
            drift_check_period: Duration::from_secs(2),
            ..SyncConfig::default()
        };
        let sync_loop = SyncLoop::new(dataplane, config, &mut registry);
        let health = sync_loop.health();
        let (tables, source) = tokio::sync::watch::channel(ServiceTable::empty());
        tables.send(table()).expect("kept until the loop starts");
        let task = rt.spawn(sync_loop.run(source, std::future::pending()));
        let bound = Duration::from_secs(10);
        let step = Duration::from_millis(50);
        eventually("the first sync", bound, step, || {
            if health.has_synced() {
                Ok(())
            } else {
                Err(health.last_error())
            }
        });

        // Traffic through the cluster IP all along, from the node itself.
        let stop = Arc::new(AtomicBool::new(false));
        let traffic = {
            let stop = Arc::clone(&stop);
            ns.spawn(move || {
                let backend = AnswerServer::named("198.18.1.20:8080".parse().expect("addr"), "a");
                let deadline = Instant::now() + Duration::from_secs(60);
                let (mut asked, mut failed) = (0, Vec::new());
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    asked += 1;
                    match testkit::net::ask(
                        "198.19.0.20:80".parse().expect("addr"),
                        Duration::from_secs(2),
                    ) {
                        Ok(answer) if answer == "a" => {}
                        other => failed.push(format!("{other:?}")),
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                (asked, failed, backend.stop())
            })
        };

        let full_syncs = "kubeproxy_sync_full_proxy_rules_duration_seconds_count";
        let drifts = "svcproxy_sync_drift_detected_total";
        let nat = ns.exec_ok(variant.save_binary(Family::V4), &["-t", "nat"]);
        // The port's own chain, or with inline balancing (one port: no tree) the services chain
        // that holds its rules.
        let chain = nat
            .lines()
            .find_map(|l| l.strip_prefix(":SVCP-SVC-"))
            .map(|rest| format!("SVCP-SVC-{}", rest.split(' ').next().unwrap_or("")))
            .or_else(|| {
                nat.contains(":SVCP-SERVICES ")
                    .then(|| "SVCP-SERVICES".to_owned())
            })
            .unwrap_or_else(|| panic!("{variant}: no service chain in\n{nat}"));
        let ours = rules_of(&ns, variant, &chain);

        // Unchanged: two drift checks later, nothing was rewritten.
        let syncs = series(&registry, full_syncs);
        std::thread::sleep(Duration::from_millis(4_500));
        assert_eq!(series(&registry, full_syncs), syncs, "{variant}: rewritten");
        assert_eq!(series(&registry, drifts), 0.0, "{variant}");

        // A rule inserted into our chain, then one of ours deleted from it.
        let iptables = variant.binary(Family::V4);
        for (round, edit) in [
            vec!["-t", "nat", "-I", &chain, "1", "-s", MARKER, "-j", "RETURN"],
            vec!["-t", "nat", "-D", &chain, "1"],
        ]
        .into_iter()
        .enumerate()
        {
            ns.exec_ok(iptables, &edit);
            assert_ne!(rules_of(&ns, variant, &chain), ours, "{variant}: {edit:?}");
            let started = Instant::now();
            let repaired = eventually("our chain back", bound, step, || {
                let now = rules_of(&ns, variant, &chain);
                if now == ours {
                    Ok(started.elapsed())
                } else {
                    Err(now)
                }
            });
            eprintln!("{variant} {edit:?}: repaired after {repaired:?}");
            assert!(
                repaired < Duration::from_secs(5),
                "{variant} {edit:?}: a 2 s check and a full sync took {repaired:?}"
            );
            let n = (round + 1) as f64;
            eventually("the drift counted", bound, step, || {
                let seen = series(&registry, drifts);
                if seen == n {
                    Ok(())
                } else {
                    Err(seen)
                }
            });
        }

        stop.store(true, Ordering::Relaxed);
        let (asked, failed, served) = traffic.join().expect("traffic thread");
        assert!(
            failed.is_empty(),
            "{variant}: {} of {asked} failed: {failed:?}",
            failed.len()
        );
        assert!(
            asked > 100 && served == asked,
            "{variant}: {served}/{asked}"
        );
        task.abort();
        drop(rt);
    }
}

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn every_case_reads_back_without_drift_so_the_check_never_resyncs_in_a_loop() {
    use proxy_core::{diff, Dataplane, SyncMode, SyncRequest};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for variant in [Variant::Legacy, Variant::Nft] {
        for case in cases::cases() {
            let ns = Netns::new(&format!("nodrift-{variant}"));
            let runner = CommandRunner::new(variant).with_prefix(ns.exec_prefix());
            let config = case.config.clone();
            let mut dp = IptablesDataplane::with_runners(
                Planner::new(config).expect("valid config"),
                Arc::new(runner.clone()),
                Arc::new(runner.clone()),
                Arc::new(IptablesHooks::like(&runner)),
            );
            let changes = diff(&ServiceTable::empty(), &case.table);
            rt.block_on(dp.sync(SyncRequest {
                desired: &case.table,
                changes: &changes,
                mode: SyncMode::Full,
            }))
            .unwrap_or_else(|e| panic!("{variant} {}: {e}", case.name));
            // The first check parses (after an apply), the second only hashes.
            for round in 0..2 {
                assert!(
                    !rt.block_on(dp.check_drift()).expect("check runs"),
                    "{variant} {}: drift found in our own rules (check {round})",
                    case.name
                );
            }
        }
    }
}
