//! Measurements, not assertions of speed: the time `iptables-restore` takes to load our layout
//! and kube-proxy's at N service ports x 10 endpoints (`MEASURE_N`, default 1,000), for a cold full
//! sync and for one endpoint change, with both variants, each in a fresh namespace. Prints a
//! table; asserts only that every restore succeeded and our input is the smaller. Needs root.
//!
//! Also the fixed cost of a sync and the cost of the drift check (issues #10 and #11): processes
//! and wall time of a full sync and of each kind of drift check at N service ports x 2 endpoints
//! (`MEASURE_SYNC_N`, default `1,1000,10000`), before (the same library driven the old way: a save
//! and a restore per table, then one `iptables -C`/`-I` per hook and family) and after.

mod cases;
mod counting;

use std::time::{Duration, Instant};

use backend_iptables::apply::Variant;
use backend_iptables::names::Names;
use backend_iptables::plan::{Applied, Planner};
use backend_iptables::rules::{Family, TableName};
use backend_iptables::testing::kube_layout::kube_proxy_nat;
use proxy_core::table::Endpoint;
use proxy_core::{diff, ServicePort, ServicePortName, SyncMode};
use testkit::netns::Netns;
use testkit::process::run_with_stdin;

fn restore(ns: &Netns, variant: Variant, input: &str) -> Duration {
    let start = Instant::now();
    // Panics with the command (which names the variant's binary) and stderr on failure.
    run_with_stdin(
        "ip",
        &[
            "netns",
            "exec",
            ns.name(),
            variant.restore_binary(Family::V4),
            "--noflush",
        ],
        input,
    );
    start.elapsed()
}

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn measure_full_and_one_endpoint_syncs_against_kube_proxy_layout() {
    let n: u32 = std::env::var("MEASURE_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let before = cases::scale_table(n, 10);
    let name = ServicePortName::new("scale", format!("s{}", n / 2), "p");
    let mut port = ServicePort::clone(before.get(&name).expect("exists"));
    port.endpoints[0] = Endpoint::new("198.18.255.1".parse().expect("ip"), 8080);
    let after = before.edit().insert(port).build().expect("valid");

    let planner = Planner::new(cases::config()).expect("valid config");
    let full = planner.plan_full(&before);
    let ours_full: String = full
        .restores
        .iter()
        .filter(|r| r.family == Family::V4)
        .map(|r| r.input())
        .collect();
    let mut applied = Applied::new();
    applied.commit(&full);
    let partial = planner.plan(&after, &diff(&before, &after), &applied, SyncMode::Partial);
    let ours_partial = partial
        .restore(Family::V4, TableName::Nat)
        .map(|r| r.input())
        .unwrap_or_default();

    let kpl = Names::new("KPL-").expect("prefix");
    let kube_full = kube_proxy_nat(&before, &kpl);
    // kube-proxy's partial sync: the services chain in full, plus the changed SVC and SEP chains
    // (the old SEP chain is deleted, as its stale-chain GC does).
    let kube_after = kube_proxy_nat(&after, &kpl);
    let mut kube_partial = kube_after.clone();
    let svc = kpl.service_cluster(&name, proxy_core::Protocol::Tcp);
    let changed: Vec<String> = kube_after
        .chains
        .iter()
        .filter(|c| c.name == kpl.services() || c.name == svc || kube_full.chain(&c.name).is_none())
        .map(|c| c.name.to_string())
        .collect();
    kube_partial
        .chains
        .retain(|c| changed.contains(&c.name.to_string()));
    kube_partial.deleted = kube_full
        .chains
        .iter()
        .filter(|c| kube_after.chain(&c.name).is_none())
        .map(|c| c.name.clone())
        .collect();

    println!("\nN = {n} service ports x 10 endpoints (IPv4)");
    println!("| variant | layout | full: bytes | full: chains | full restore | 1-endpoint change: bytes | restore |");
    println!("|---|---|---|---|---|---|---|");
    for variant in [Variant::Legacy, Variant::Nft] {
        for (layout, full_text, chains, partial_text) in [
            (
                "ours (tree)",
                ours_full.clone(),
                full.chains_written(),
                ours_partial.clone(),
            ),
            (
                "kube-proxy",
                kube_full.to_string(),
                kube_full.chains.len(),
                kube_partial.to_string(),
            ),
        ] {
            let ns = Netns::new(&format!("measure-{variant}"));
            let t_full = restore(&ns, variant, &full_text);
            let t_partial = restore(&ns, variant, &partial_text);
            println!(
                "| {variant} | {layout} | {} | {chains} | {:.3} s | {} | {:.3} s |",
                full_text.len(),
                t_full.as_secs_f64(),
                partial_text.len(),
                t_partial.as_secs_f64()
            );
        }
    }
    assert!(ours_partial.len() < kube_partial.to_string().len());
}

// === fixed cost of a sync, cost of the drift check ===

/// The full sync as it was before issue #11, through the same library, on `c`: a save per family
/// and table, a restore per family and table, then each hook checked and inserted one `iptables`
/// process at a time, in both families.
fn old_full_sync(
    rt: &tokio::runtime::Runtime,
    c: &counting::Counting,
    planner: &Planner,
    table: &proxy_core::ServiceTable,
) {
    use backend_iptables::observe::{Observed, SaveRunner};
    let mut observed = Observed::default();
    for family in Family::ALL {
        for t in [TableName::Filter, TableName::Nat] {
            let text = rt.block_on(c.save(family, t)).expect("save");
            observed.add_save_output(family, &text, planner.names());
        }
    }
    let plan = planner.plan(
        table,
        &proxy_core::ChangeSet::default(),
        &observed.to_applied(),
        SyncMode::Full,
    );
    for restore in &plan.restores {
        rt.block_on(backend_iptables::apply::apply_restores(
            c,
            [restore],
            &backend_iptables::hooks::BuiltinEdits::new(),
        ))
        .expect("restore");
    }
    backend_iptables::hooks::ensure_hooks(c, &planner.hooks()).expect("hooks");
}

/// Runs `f`, returning how long it took and how many processes it ran on `c`.
fn timed<T>(c: &counting::Counting, f: impl FnOnce() -> T) -> (T, Duration, usize) {
    c.take();
    let started = Instant::now();
    let out = f();
    let took = started.elapsed();
    (out, took, c.take().len())
}

fn cell(took: Duration, processes: usize) -> String {
    format!("{processes} / {:.1} ms", took.as_secs_f64() * 1e3)
}

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn measure_sync_fixed_cost_and_drift_checks_before_and_after() {
    use backend_iptables::hooks::find_drift;
    use backend_iptables::observe::{observe_saved, save_families, Fingerprint};
    use backend_iptables::IptablesDataplane;
    use proxy_core::{Dataplane, ServiceTable, SyncRequest};

    let sizes: Vec<u32> = std::env::var("MEASURE_SYNC_N")
        .unwrap_or_else(|_| "1,1000,10000".to_owned())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let planner = Planner::new(cases::config()).expect("valid config");
    let hooks = planner.hooks();
    let canary = planner.names().canary();
    println!("\nprocesses / wall time; N service ports x 2 endpoints, IPv4 only");
    println!(
        "| variant | N | before: cold full sync | before: full resync | before: drift check | \
         after: cold full sync | after: full resync | after: drift check, first after a sync \
         (save + parse) | after: drift check, unchanged (save + hash) | after: canary check |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for &n in &sizes {
        let table = cases::scale_table(n, 2);
        for variant in [Variant::Legacy, Variant::Nft] {
            // Before, in a namespace of its own (`MEASURE_SKIP_BEFORE=1`: not measured).
            let mut before = ["-".to_owned(), "-".to_owned(), "-".to_owned()];
            if std::env::var_os("MEASURE_SKIP_BEFORE").is_none() {
                let ns = Netns::new(&format!("cost-old-{variant}"));
                let c = counting::Counting::new(variant, ns.exec_prefix());
                let ((), old_cold, old_cold_n) =
                    timed(&c, || old_full_sync(&rt, &c, &planner, &table));
                let ((), old_full, old_full_n) =
                    timed(&c, || old_full_sync(&rt, &c, &planner, &table));
                let (found, old_check, old_check_n) =
                    timed(&c, || find_drift(c.as_ref(), &canary, &hooks, &Family::ALL));
                assert_eq!(found.expect("runs"), None);
                before = [
                    cell(old_cold, old_cold_n),
                    cell(old_full, old_full_n),
                    cell(old_check, old_check_n),
                ];
            }

            // After.
            let ns = Netns::new(&format!("cost-new-{variant}"));
            let c = counting::Counting::new(variant, ns.exec_prefix());
            let mut dp =
                IptablesDataplane::with_runners(planner.clone(), c.clone(), c.clone(), c.clone());
            let changes = proxy_core::diff(&ServiceTable::empty(), &table);
            let mut full_sync = || {
                rt.block_on(dp.sync(SyncRequest {
                    desired: &table,
                    changes: &changes,
                    mode: SyncMode::Full,
                }))
                .expect("sync");
            };
            let ((), new_cold, new_cold_n) = timed(&c, &mut full_sync);
            let ((), new_full, new_full_n) = timed(&c, &mut full_sync);
            let (drift, first_check, first_check_n) = timed(&c, || rt.block_on(dp.check_drift()));
            assert!(
                !drift.expect("runs"),
                "{variant} N={n}: no drift after a sync"
            );
            let (_, steady_check, steady_check_n) = timed(&c, || {
                let saved = rt
                    .block_on(save_families(c.as_ref(), &[Family::V4]))
                    .expect("save");
                Fingerprint::of(&saved[0], planner.names())
            });
            let (_, parse_only, _) = timed(&c, || {
                let saved = rt
                    .block_on(save_families(c.as_ref(), &[Family::V4]))
                    .expect("save");
                observe_saved(&saved, planner.names())
                    .drift(dp.applied())
                    .len()
            });
            let (found, canary_check, canary_check_n) = timed(&c, || {
                find_drift(c.as_ref(), &canary, &hooks, &[Family::V4])
            });
            assert_eq!(found.expect("runs"), None);
            println!(
                "| {variant} | {n} | {} | {} | {} | {} | {} | {} (save + parse alone: {:.1} ms) | {} | {} |",
                before[0],
                before[1],
                before[2],
                cell(new_cold, new_cold_n),
                cell(new_full, new_full_n),
                cell(first_check, first_check_n),
                parse_only.as_secs_f64() * 1e3,
                cell(steady_check, steady_check_n),
                cell(canary_check, canary_check_n),
            );
        }
    }
}
