//! Golden files: each `tests/tables/<case>.yaml` renders (full plan, from nothing) to
//! `tests/golden/<case>.nft`, the table as `nft list table` prints it, compared byte for byte.
//! `UPDATE_GOLDEN=1 cargo test -p backend-nftables --test nft_golden` rewrites them.
//! Each case is also checked for consistency: every jump, goto and verdict targets a declared
//! chain, every shared chain is referenced, every name is ours, and applying the full plan to
//! an empty table gives the desired table.

#[path = "nft_cases.rs"]
mod nft_cases;

use std::collections::BTreeSet;
use std::fmt::Write as _;

use backend_nftables::model::{Table, Value};
use backend_nftables::names::{is_owned, ChainName};
use backend_nftables::plan::{apply_changes, plan};
use backend_nftables::render::render_table;

/// The golden text: the problems as `#` comments, then the table.
fn golden_text(desired: &backend_nftables::plan::DesiredTable) -> String {
    let mut out = String::new();
    for problem in desired.problems() {
        let _ = writeln!(out, "# problem: {problem}");
    }
    out.push_str(&render_table(&desired.table));
    out
}

fn check_consistency(table: &Table) -> Vec<String> {
    let mut problems = Vec::new();
    let declared: BTreeSet<ChainName> = table.chains.keys().copied().collect();
    let mut referenced: BTreeSet<ChainName> = BTreeSet::new();
    for chain in table.chains.values() {
        if !is_owned(&chain.name.to_string()) {
            problems.push(format!("chain {} is not ours", chain.name));
        }
        for rule in &chain.rules {
            if let Some(to) = rule.target() {
                referenced.insert(to);
                if !declared.contains(&to) {
                    problems.push(format!("{}: {rule}: undeclared chain", chain.name));
                }
            }
        }
    }
    for set in table.sets.values() {
        if !is_owned(&set.name.to_string()) {
            problems.push(format!("set {} is not ours", set.name));
        }
        for (key, value) in &set.elements {
            if let Value::Verdict(v) = value {
                if let Some(to) = v.chain() {
                    referenced.insert(to);
                    if !declared.contains(&to) {
                        problems.push(format!("{} {key}: {v}: undeclared chain", set.name));
                    }
                }
            }
        }
    }
    for name in &declared {
        if name.is_shared() && !referenced.contains(name) {
            problems.push(format!("shared chain {name} is never referenced"));
        }
    }
    problems
}

#[test]
fn tables_render_to_their_golden_nft() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    for (name, path) in nft_cases::cases() {
        let desired = nft_cases::plan_case(&path);
        let text = golden_text(&desired);
        let golden = nft_cases::dir("golden").join(format!("{name}.nft"));
        if update {
            std::fs::write(&golden, &text).expect("write golden");
        }
        match std::fs::read_to_string(&golden) {
            Ok(want) if want == text => {}
            Ok(want) => failures.push(format!(
                "{name}: differs from {}\n--- want\n{want}\n--- got\n{text}",
                golden.display()
            )),
            Err(e) => failures.push(format!("{name}: {}: {e}", golden.display())),
        }
        for problem in check_consistency(&desired.table) {
            failures.push(format!("{name}: {problem}"));
        }
        // The full plan from nothing builds exactly the desired table.
        let changes = plan(&desired, None, None);
        let mut built = Table::new(desired.table.name.clone());
        apply_changes(&mut built, &changes);
        if built != desired.table {
            failures.push(format!(
                "{name}: applying the full plan does not give the table"
            ));
        }
        // And a full plan against it is empty.
        let again = plan(&desired, Some(&built), None);
        if !again.is_empty() {
            failures.push(format!(
                "{name}: plan against itself is not empty: {again:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
