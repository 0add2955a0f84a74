//! Apply through the in-memory restore runner: full then partial syncs leave the same behaviour as
//! a fresh full sync, and a failed restore is reported with our input lines around the failure.

mod cases;

use backend_iptables::apply::apply_plan;
use backend_iptables::error::{IptablesError, RestoreFailure};
use backend_iptables::plan::{Applied, Planner};
use backend_iptables::rules::{Family, TableName};
use backend_iptables::testing::fake::FakeRestore;
use backend_iptables::testing::trace::{Packet, Tracer};
use proxy_core::table::Endpoint;
use proxy_core::{diff, ServicePort, ServicePortName, SyncMode};

#[tokio::test]
async fn full_then_partial_through_the_fake_matches_a_fresh_plan() {
    let planner = Planner::new(cases::config()).expect("valid config");
    let fake = FakeRestore::new();
    let before = cases::scale_table(200, 3);
    let mut applied = Applied::new();
    let full = planner.plan_full(&before);
    let report = apply_plan(&fake, &full).await.expect("full apply");
    assert_eq!(report.restores, families(&full), "one restore per family");
    applied.commit(&full);

    let name = ServicePortName::new("scale", "s7", "p");
    let mut port = ServicePort::clone(before.get(&name).expect("exists"));
    port.endpoints = vec![Endpoint::new("198.18.222.1".parse().expect("ip"), 9090)];
    let after = before.edit().insert(port).build().expect("valid");
    let partial = planner.plan(&after, &diff(&before, &after), &applied, SyncMode::Partial);
    let report = apply_plan(&fake, &partial).await.expect("partial apply");
    assert_eq!(report.rules_written, partial.rules_written());
    assert_eq!(fake.calls().len(), families(&full) + families(&partial));

    let kernel = Tracer::new(
        Family::V4,
        &fake.state(Family::V4),
        &planner.hooks(),
        cases::local_addrs(),
    )
    .expect("state parses");
    let t = kernel
        .trace(&Packet::tcp(cases::POD, "198.19.0.7", 80))
        .expect("trace");
    assert_eq!(t.summary(), "198.18.222.1:9090", "{t}");
}

/// How many families `plan` writes in: the restore processes it takes.
fn families(plan: &backend_iptables::Plan) -> usize {
    Family::ALL
        .into_iter()
        .filter(|f| plan.restores.iter().any(|r| r.family == *f))
        .count()
}

#[tokio::test]
async fn a_failed_restore_names_the_line_and_shows_the_input_around_it() {
    let planner = Planner::new(cases::config()).expect("valid config");
    let fake = FakeRestore::new();
    fake.fail_next(RestoreFailure {
        command: "iptables-nft-restore -w 5 --noflush".into(),
        status: Some(2),
        stderr: "iptables-nft-restore v1.8.9 (nf_tables): Chain 'X' does not exist\nError occurred at line: 3"
            .into(),
    });
    let plan = planner.plan_full(&cases::scale_table(2, 1));
    let err = apply_plan(&fake, &plan).await.expect_err("must fail");
    match &err {
        IptablesError::Restore { line, context, .. } => {
            assert_eq!(*line, Some(3));
            let input = plan.restores[0].input();
            let third = input.lines().nth(2).expect("line 3");
            assert!(context.contains(&format!(">     3 {third}")), "{context}");
        }
        other => panic!("unexpected error {other}"),
    }
    let message = err.to_string();
    assert!(message.contains("exit code 2"), "{message}");
    assert!(
        fake.state(Family::V4).is_empty(),
        "failed restore must not change state"
    );
}

#[test]
fn hooks_are_ensured_once_in_order_before_foreign_rules() {
    use backend_iptables::hooks::{ensure_hooks, remove_hooks};
    use backend_iptables::testing::fake::FakeHooks;
    let planner = Planner::new(cases::config()).expect("valid config");
    let hooks = planner.hooks();
    let fake = FakeHooks::new();
    fake.append_foreign(Family::V4, "filter", "FORWARD", "-j SOMEONE-ELSE");
    let inserted = ensure_hooks(&fake, &hooks).expect("ensure");
    assert_eq!(inserted, hooks.len() * 2, "both families");
    assert_eq!(ensure_hooks(&fake, &hooks).expect("again"), 0, "idempotent");
    let forward = fake.chain(Family::V4, "filter", "FORWARD");
    let planned: Vec<String> = hooks
        .iter()
        .filter(|h| h.chain.as_str() == "FORWARD")
        .map(|h| h.rule.to_string())
        .collect();
    assert_eq!(forward[..planned.len()], planned[..], "{forward:?}");
    assert_eq!(forward.last().map(String::as_str), Some("-j SOMEONE-ELSE"));
    assert_eq!(
        remove_hooks(&fake, &hooks).expect("remove"),
        hooks.len() * 2
    );
    assert_eq!(
        fake.chain(Family::V4, "filter", "FORWARD"),
        ["-j SOMEONE-ELSE"]
    );
}

#[tokio::test]
async fn one_restore_per_family_carries_both_tables_and_a_failure_names_its_table() {
    let planner = Planner::new(cases::config()).expect("valid config");
    let plan = planner.plan_full(&cases::scale_table(2, 1));
    let v4: String = plan
        .restores
        .iter()
        .filter(|r| r.family == Family::V4)
        .map(|r| r.input())
        .collect();
    assert!(v4.starts_with("*filter\n") && v4.contains("COMMIT\n*nat\n"));
    // The tool blames a line of the nat block: the error says nat, with that line shown.
    let line = v4.lines().position(|l| l == "*nat").expect("nat block") + 3;
    let fake = FakeRestore::new();
    fake.fail_next(RestoreFailure {
        command: "iptables-legacy-restore -w 5 --noflush".into(),
        status: Some(1),
        stderr: format!("iptables-restore: line {line} failed"),
    });
    let err = apply_plan(&fake, &plan).await.expect_err("must fail");
    match &err {
        IptablesError::Restore {
            family,
            table,
            line: Some(at),
            context,
            ..
        } => {
            assert_eq!((*family, *table, *at), (Family::V4, TableName::Nat, line));
            let text = v4.lines().nth(line - 1).expect("the line");
            assert!(
                context.contains(&format!("> {line:>5} {text}")),
                "{context}"
            );
        }
        other => panic!("unexpected error {other}"),
    }
    assert_eq!(fake.calls().len(), 1, "stopped at the first family");
    assert_eq!(fake.calls()[0].1, v4, "both tables in one input");
}
