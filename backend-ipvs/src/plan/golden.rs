//! Golden files: each `tests/tables/<case>.yaml` renders to `tests/golden/<case>.ipvs` (the
//! plan as an `ipvsadm -Ln`-style listing) and `tests/golden/<case>.rules` (the companions'
//! `ipset restore` and `iptables-restore` input), compared byte for byte.
//! `UPDATE_GOLDEN=1 cargo test -p backend-ipvs golden` rewrites them; review reads the diff.

use std::path::{Path, PathBuf};

use super::*;
use crate::companions::{plan_entries, render_rules, render_sets_full, Family, Names};
use crate::config::IpvsConfig;

fn config() -> IpvsConfig {
    IpvsConfig {
        node_addresses: vec![
            "198.18.0.1".parse().expect("literal"),
            "2001:db8::1".parse().expect("literal"),
        ],
        cluster_cidrs: vec!["198.18.1.0/24".parse().expect("literal")],
        ..IpvsConfig::default()
    }
}

pub(super) fn dir(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(sub)
}

fn render_rules_file(desired: &Desired, config: &IpvsConfig) -> String {
    let names = Names::new(&config.prefix);
    let mut out = String::from("# ipset restore\n");
    out.push_str(&render_sets_full(&names, &plan_entries(desired, config)));
    out.push_str("# iptables-restore --noflush\n");
    out.push_str(&render_rules(&names, config, Family::V4, &[]));
    out.push_str("# ip6tables-restore --noflush\n");
    out.push_str(&render_rules(&names, config, Family::V6, &[]));
    out
}

pub(super) fn check(path: &Path, got: &str) -> Result<(), String> {
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

#[test]
fn tables_render_to_their_golden_listing_and_rules() {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(dir("tables"))
        .expect("tests/tables")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 2, "{cases:?}");
    let mut failures = Vec::new();
    for case in &cases {
        let table = proxy_core::file::load_table(case).expect("valid case table");
        let desired = plan_desired(&table, &config());
        let stem = case
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("utf-8 name");
        let golden = dir("golden");
        for (ext, text) in [
            ("ipvs", render_listing(&desired)),
            ("rules", render_rules_file(&desired, &config())),
        ] {
            if let Err(e) = check(&golden.join(format!("{stem}.{ext}")), &text) {
                failures.push(e);
            }
        }
        // Stable: the same table renders to the same bytes.
        assert_eq!(
            render_listing(&plan_desired(&table, &config())),
            render_listing(&desired)
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
