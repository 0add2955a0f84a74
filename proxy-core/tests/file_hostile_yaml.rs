//! Hostile YAML documents stay bounded in time and memory, while the parser's budget grows with
//! the text so that real tables of 50,000 services load (issue #11). Each document here is
//! refused with an error (never a hang, a crash or gigabytes of memory), within a few seconds
//! even in a debug build.

use std::time::{Duration, Instant};

use proxy_core::file::{parse_table, LoadError};

/// Generous for a debug build on a loaded 2-core machine: the parser refuses each of these
/// after a bounded amount of work; an unbounded one would take minutes or exhaust memory.
const BOUND: Duration = Duration::from_secs(20);

fn refused(text: &str, what: &str) -> String {
    let started = Instant::now();
    let result = parse_table(text, "hostile.yaml");
    let took = started.elapsed();
    eprintln!(
        "{what}: {took:?}: {}",
        match &result {
            Err(e) => e.to_string().chars().take(200).collect::<String>(),
            Ok(_) => "parsed".into(),
        }
    );
    assert!(took < BOUND, "{what}: took {took:?}");
    match result {
        Err(error @ (LoadError::Parse { .. } | LoadError::Invalid { .. })) => error.to_string(),
        Err(other) => panic!("{what}: unexpected error kind: {other}"),
        Ok(table) => panic!("{what}: parsed into {} service ports", table.len()),
    }
}

/// "Billion laughs": each level an anchor over ten aliases of the one before, nine levels deep
/// (10⁹ nodes once expanded) in under 1 KB.
fn billion_laughs() -> String {
    let mut text = String::from("a0: &a0 [x]\n");
    for level in 1..=9 {
        let prev = level - 1;
        let refs = vec![format!("*a{prev}"); 10].join(", ");
        text.push_str(&format!("a{level}: &a{level} [{refs}]\n"));
    }
    text.push_str("services: *a9\n");
    text
}

#[test]
fn an_alias_bomb_is_refused_quickly() {
    let error = refused(&billion_laughs(), "billion laughs");
    assert!(error.contains("hostile.yaml"), "{error}");
}

/// The budget grows with the text; padding a bomb with megabytes of comments must not buy it
/// an expansion proportional to anything but the padding.
#[test]
fn an_alias_bomb_padded_with_megabytes_of_comments_stays_bounded() {
    let mut text = String::with_capacity(12 << 20);
    while text.len() < 10 << 20 {
        text.push_str("# padding to raise a budget that grows with the text's length ......\n");
    }
    text.push_str(&billion_laughs());
    refused(&text, "padded billion laughs");
}

#[test]
fn deep_nesting_is_refused_without_exhausting_the_stack() {
    let depth = 200_000;
    let text = format!("services: {}{}\n", "[".repeat(depth), "]".repeat(depth));
    refused(&text, "deeply nested flow sequences");
    let mut block = String::from("services:\n");
    for level in 0..2_000 {
        block.push_str(&" ".repeat(level));
        block.push_str("- \n");
    }
    refused(&block, "deeply nested block sequences");
}

/// A bomb that type-checks: one service with 1,000 endpoints, anchored, and 10,000 aliases of
/// it in the services list (10 million endpoints once expanded, from about 60 KB of text). Every
/// alias is a valid service, so only the parser's budget can stop it.
fn typed_bomb() -> String {
    let mut text = String::from(
        "services:\n  - &svc\n    name: default/web\n    ports: [{name: http, port: 80}]\n    endpoints:\n",
    );
    for i in 0..1_000u32 {
        let [_, _, hi, lo] = i.to_be_bytes();
        text.push_str(&format!("      - {{ip: 198.18.{hi}.{lo}}}\n"));
    }
    for _ in 0..10_000 {
        text.push_str("  - *svc\n");
    }
    text
}

#[test]
fn an_alias_bomb_that_type_checks_is_stopped_by_the_budget() {
    let error = refused(&typed_bomb(), "10,000 aliases of a 1,000-endpoint service");
    assert!(
        error.contains("budget") || error.contains("alias"),
        "{error}"
    );
}

#[test]
fn an_alias_bomb_that_type_checks_padded_with_comments_stays_bounded() {
    let mut text = String::with_capacity(12 << 20);
    while text.len() < 10 << 20 {
        text.push_str("# padding to raise a budget that grows with the text's length ......\n");
    }
    text.push_str(&typed_bomb());
    // The node budget grew with the padding; the cap on replayed alias events did not.
    let error = refused(&text, "the typed bomb under 10 MiB of comments");
    assert!(
        error.contains("budget") || error.contains("alias"),
        "{error}"
    );
}

/// One long string anchored once and aliased many times: scalar bytes multiply without nodes.
#[test]
fn a_large_scalar_aliased_many_times_is_refused() {
    let long = "x".repeat(1 << 20);
    let mut text = format!("services:\n  - name: &big \"{long}\"\n");
    for i in 0..2_000 {
        text.push_str(&format!(
            "  - name: *big\n    ports: [{{name: p{i}, port: 80}}]\n"
        ));
    }
    refused(&text, "a 1 MiB scalar aliased 2,000 times");
}

#[test]
fn many_keys_and_unknown_fields_are_refused_by_name() {
    let mut text = String::from("services:\n  - name: default/web\n");
    for i in 0..100_000 {
        text.push_str(&format!("    k{i}: v\n"));
    }
    let error = refused(&text, "100,000 unknown keys");
    assert!(
        error.contains("k0"),
        "the first unknown field is named: {error}"
    );
}
