//! Golden files for the IPVS companions: a service table (`tests/tables/<table>.yaml`) and a
//! config, synced in full through [`Companions`] on a node that has none of our rules yet (the
//! shared runner's fake tools and the ipset fake), render to
//! `tests/golden/companions-<case>.rules`: the ipset batch (in `ipset restore` syntax), each
//! family's exact `iptables-restore` input with the command that reads it, then the cleanup's
//! restore input. Compared byte for byte; `UPDATE_GOLDEN=1 cargo test -p backend-ipvs --test
//! companions_golden` rewrites them, and review reads the diff like code.
//!
//! Each case is also checked for consistency, as the iptables backend's goldens are
//! (kube-proxy's `checkIPTablesRuleJumps`): the input parses into the typed model and prints
//! back unchanged, every jump targets a chain declared in its table, every chain of ours is
//! jumped to, and only our chains, our sets of the restore's family and built-in chains are
//! named.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use backend_ipvs::companions::{hooks, render_cleanup, Companions, Family, Names, SetKind};
use backend_ipvs::ipset::FakeIpset;
use backend_ipvs::plan::plan_desired;
use backend_ipvs::{IptablesVariant, IpvsConfig};
use iptables_runner::rules::{parse_restore, ChainName, Edit, Table};
use iptables_runner::testing::FakeTools;

/// One case: golden name, input table, config.
struct Case {
    name: &'static str,
    table: &'static str,
    config: IpvsConfig,
}

fn base_config() -> IpvsConfig {
    IpvsConfig {
        node_addresses: vec![
            "198.18.0.1".parse().expect("literal"),
            "2001:db8::1".parse().expect("literal"),
        ],
        ..IpvsConfig::default()
    }
}

fn cases() -> Vec<Case> {
    let cidr = |s: &str| s.parse().expect("literal");
    vec![
        // The usual node: an IPv4 pod network, cluster IPs masqueraded from outside it.
        Case {
            name: "cluster-cidr",
            table: "cluster_ips",
            config: IpvsConfig {
                cluster_cidrs: vec![cidr("198.18.1.0/24")],
                ..base_config()
            },
        },
        // No pod network known: cluster IPs are not masqueraded, and an eTP=Local address with
        // no local endpoint is dropped for everyone.
        Case {
            name: "no-cluster-cidr",
            table: "policies",
            config: base_config(),
        },
        // `--masquerade-all`: every cluster-IP connection is masqueraded.
        Case {
            name: "masquerade-all",
            table: "policies",
            config: IpvsConfig {
                masquerade_all: true,
                cluster_cidrs: vec![cidr("198.18.1.0/24")],
                ..base_config()
            },
        },
        // A pod network per family, the legacy tools configured (no probe).
        Case {
            name: "dual-stack-legacy",
            table: "policies",
            config: IpvsConfig {
                cluster_cidrs: vec![cidr("198.18.1.0/24"), cidr("2001:db8:1::/64")],
                iptables: IptablesVariant::Legacy,
                ..base_config()
            },
        },
    ]
}

fn dir(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(sub)
}

/// What a full sync of `case` writes, then the cleanup's restore input.
fn render_case(case: &Case) -> (String, Vec<(Family, String)>) {
    let table = proxy_core::file::load_table(&dir("tables").join(format!("{}.yaml", case.table)))
        .expect("valid case table");
    let desired = plan_desired(&table, &case.config);
    let tools = FakeTools::new();
    let ipset = Arc::new(FakeIpset::new());
    let mut companions = Companions::with_parts(
        &case.config,
        Box::new(tools.clone()),
        Box::new(Arc::clone(&ipset)),
    );
    companions.sync(&desired, None).expect("full sync");

    let mut out = String::from("# ipset: one netlink batch, in `ipset restore` syntax\n");
    let batches = ipset.batches();
    assert_eq!(batches.len(), 1, "{}: one batch", case.name);
    for op in &batches[0] {
        out.push_str(&op.to_string());
    }
    let mut restores = Vec::new();
    for call in tools.calls() {
        let Some(input) = call.input else { continue };
        let family = if call.argv[0].starts_with("ip6") {
            Family::V6
        } else {
            Family::V4
        };
        out.push_str(&format!("# {}\n{input}", call.argv.join(" ")));
        restores.push((family, input));
    }
    let names = Names::new(&case.config.prefix);
    let every_hook = hooks(&names);
    let delete: Vec<_> = every_hook.iter().map(|hook| (hook, 1)).collect();
    let cleanup = render_cleanup(&names, &delete);
    out.push_str(&format!(
        "# cleanup, each family with our chains and jumps: iptables-restore --noflush\n{cleanup}"
    ));
    restores.push((Family::V4, cleanup));
    (out, restores)
}

fn check_golden(path: &Path, got: &str) -> Result<(), String> {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(path, got).map_err(|e| format!("{}: {e}", path.display()))?;
        return Ok(());
    }
    let want = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()))?;
    if want == got {
        return Ok(());
    }
    let first = want
        .lines()
        .zip(got.lines())
        .position(|(w, g)| w != g)
        .unwrap_or_else(|| want.lines().count().min(got.lines().count()));
    Err(format!(
        "{} differs from line {}:\n  want: {:?}\n  got:  {:?}\n(UPDATE_GOLDEN=1 rewrites it)\n--- got ---\n{got}",
        path.display(),
        first + 1,
        want.lines().nth(first),
        got.lines().nth(first),
    ))
}

/// The consistency checks of one restore input; every problem, one per line.
fn check_semantics(names: &Names, family: Family, input: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let tables = match parse_restore(input) {
        Ok(tables) => tables,
        Err(e) => return vec![format!("does not parse as our shapes: {e}")],
    };
    let printed: String = tables.iter().map(ToString::to_string).collect();
    if printed != input {
        problems.push(format!("does not print back unchanged:\n{printed}"));
    }
    let our_sets: BTreeSet<String> = SetKind::ALL
        .iter()
        .map(|kind| names.set(*kind, family))
        .collect();
    let named = |chain: &ChainName, problems: &mut Vec<String>| {
        if !chain.is_builtin() && !names.is_owned(chain.as_str()) {
            problems.push(format!("names a foreign chain {chain}"));
        }
    };
    for table in &tables {
        let declared = declared(table);
        let mut jumped = BTreeSet::new();
        let mut rules: Vec<(&ChainName, &iptables_runner::rules::Rule)> = table
            .chains
            .iter()
            .flat_map(|c| c.rules.iter().map(move |r| (&c.name, r)))
            .collect();
        for edit in &table.edits {
            match edit {
                Edit::Insert { chain, rule } | Edit::Delete { chain, rule } => {
                    rules.push((chain, rule));
                }
            }
        }
        for (chain, rule) in rules {
            named(chain, &mut problems);
            if let Some(target) = rule.target_chain() {
                named(target, &mut problems);
                if !declared.contains(target) {
                    problems.push(format!(
                        "{} -A {chain} {rule}: jump to undeclared chain",
                        table.name
                    ));
                }
                jumped.insert(target.clone());
            }
            for set in &rule.sets {
                if !our_sets.contains(&set.name) {
                    problems.push(format!("-A {chain} {rule}: set {} is not ours", set.name));
                }
            }
        }
        for chain in &table.chains {
            named(&chain.name, &mut problems);
            if !jumped.contains(&chain.name) {
                problems.push(format!(
                    "{} {}: nothing jumps to it",
                    table.name, chain.name
                ));
            }
        }
        for chain in &table.deleted {
            named(chain, &mut problems);
        }
    }
    if input.contains("KUBE-") {
        problems.push("names kube-proxy's objects".to_owned());
    }
    problems
}

fn declared(table: &Table) -> BTreeSet<ChainName> {
    table
        .chains
        .iter()
        .map(|c| c.name.clone())
        .chain(table.deleted.iter().cloned())
        .collect()
}

#[test]
fn companion_cases_render_to_their_golden_rules_and_are_consistent() {
    let mut failures = Vec::new();
    for case in cases() {
        let (text, restores) = render_case(&case);
        if let Err(e) = check_golden(
            &dir("golden").join(format!("companions-{}.rules", case.name)),
            &text,
        ) {
            failures.push(e);
        }
        assert_eq!(
            restores.len(),
            3,
            "{}: a restore per family, then the cleanup",
            case.name
        );
        let names = Names::new(&case.config.prefix);
        for (family, input) in &restores {
            for problem in check_semantics(&names, *family, input) {
                failures.push(format!("{} ({family}): {problem}", case.name));
            }
        }
        // Stable: the same case renders to the same bytes.
        assert_eq!(render_case(&case).0, text, "{}", case.name);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn the_consistency_checks_catch_what_they_are_for() {
    let names = Names::new("SVCP-IPVS-");
    let bad = "*nat\n:SVCP-IPVS-SERVICES - [0:0]\n:SVCP-IPVS-LONELY - [0:0]\n\
               -A SVCP-IPVS-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst -j SVCP-IPVS-GONE\n\
               -I PREROUTING -j SVCP-IPVS-SERVICES\n-I OUTPUT -j KUBE-SERVICES\nCOMMIT\n";
    let problems = check_semantics(&names, Family::V4, bad).join("\n");
    for want in [
        "jump to undeclared chain",
        "set KUBE-CLUSTER-IP is not ours",
        "SVCP-IPVS-LONELY: nothing jumps to it",
        "names a foreign chain KUBE-SERVICES",
        "names kube-proxy's objects",
    ] {
        assert!(problems.contains(want), "{want} missing from:\n{problems}");
    }
    assert!(
        check_semantics(&names, Family::V6, "*nat\n-A X -j Y\nCOMMIT\n")[0]
            .starts_with("does not parse"),
        "a rule for an undeclared chain is no shape of ours"
    );
}
