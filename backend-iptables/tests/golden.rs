//! Golden files: each case in `cases/` renders (full plan, from nothing) to
//! `tests/golden/<case>.rules`, compared byte for byte. `UPDATE_GOLDEN=1 cargo test` rewrites them.
//! Each case is also checked for consistency: every jump targets a declared chain, every hashed
//! chain of ours is referenced, and nothing but our prefix and built-ins is named.

mod cases;

use std::collections::BTreeSet;
use std::path::PathBuf;

use backend_iptables::plan::{Plan, Planner};
use backend_iptables::rules::{parse_restore, ChainName};

fn golden_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.rules"))
}

fn render_golden(planner: &Planner, plan: &Plan) -> String {
    let mut out =
        String::from("# Bootstrap jumps (added by apply, not part of the restore input):\n");
    for hook in planner.hooks() {
        out.push_str(&format!(
            "#   {} -A {} {}\n",
            hook.table, hook.chain, hook.rule
        ));
    }
    out.push_str(&plan.render());
    out
}

/// Consistency of one plan: returns every problem found.
fn check_consistency(planner: &Planner, plan: &Plan) -> Vec<String> {
    let names = planner.names();
    let hooks = planner.hooks();
    let mut problems = Vec::new();
    for restore in &plan.restores {
        let table = &restore.table;
        let tag = format!("{} {}", restore.family, table.name);
        let declared: BTreeSet<&ChainName> = table.chains.iter().map(|c| &c.name).collect();
        let mut referenced: BTreeSet<&ChainName> = BTreeSet::new();
        for hook in hooks.iter().filter(|h| h.table == table.name) {
            referenced.extend(hook.rule.target_chain());
        }
        for chain in &table.chains {
            if !names.is_owned(chain.name.as_str()) {
                problems.push(format!("{tag}: chain {} is not ours", chain.name));
            }
            for rule in &chain.rules {
                if let Some(to) = rule.target_chain() {
                    referenced.insert(to);
                    if !declared.contains(to) {
                        problems.push(format!(
                            "{tag}: -A {} {rule}: jump to undeclared chain",
                            chain.name
                        ));
                    }
                    if !names.is_owned(to.as_str()) {
                        problems.push(format!(
                            "{tag}: -A {} {rule}: jump outside our prefix",
                            chain.name
                        ));
                    }
                }
            }
        }
        for chain in &table.chains {
            let fixed = !chain.name.as_str().contains("-SVC-")
                && !chain.name.as_str().contains("-SVL-")
                && !chain.name.as_str().contains("-EXT-")
                && !chain.name.as_str().contains("-FW-")
                && !chain.name.as_str().contains("-SEP-")
                && !chain.name.as_str().contains("-DT-");
            if !fixed && !referenced.contains(&chain.name) {
                problems.push(format!("{tag}: chain {} is never referenced", chain.name));
            }
        }
        if let Err(e) = parse_restore(&restore.input()) {
            problems.push(format!("{tag}: does not parse back: {e}"));
        }
    }
    problems
}

#[test]
fn golden_files_match_and_are_consistent() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    for case in cases::cases() {
        let planner = Planner::new(case.config.clone()).expect("valid config");
        let plan = planner.plan_full(&case.table);
        for problem in check_consistency(&planner, &plan) {
            failures.push(format!("{}: {problem}", case.name));
        }
        let got = render_golden(&planner, &plan);
        let path = golden_path(case.name);
        if update {
            std::fs::write(&path, &got).expect("write golden file");
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(want) if want == got => {}
            Ok(want) => {
                let first = want
                    .lines()
                    .zip(got.lines())
                    .position(|(a, b)| a != b)
                    .unwrap_or(want.lines().count().min(got.lines().count()));
                failures.push(format!(
                    "{}: differs from {} at line {}:\n  want: {:?}\n  got:  {:?}\n(run UPDATE_GOLDEN=1 cargo test to accept)",
                    case.name,
                    path.display(),
                    first + 1,
                    want.lines().nth(first),
                    got.lines().nth(first)
                ));
            }
            Err(e) => failures.push(format!(
                "{}: cannot read {}: {e} (run UPDATE_GOLDEN=1 cargo test to create)",
                case.name,
                path.display()
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn rendering_is_byte_stable() {
    for case in cases::cases() {
        let planner = Planner::new(case.config.clone()).expect("valid config");
        let a = planner.plan_full(&case.table).render();
        let b = planner
            .plan_full(&case.table.edit().build().expect("same table"))
            .render();
        assert_eq!(a, b, "{}: two renders differ", case.name);
    }
}
