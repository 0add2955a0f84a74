//! Root tests: the full plan of each golden case, sent as one transaction through
//! [`NftSocket`] in a fresh network namespace, programs the table `nft list table` prints as
//! the golden, byte for byte.
//!
//! Run with `cargo test -p backend-nftables --test encode_netns -- --include-ignored` as root.

#[path = "nft_cases.rs"]
mod nft_cases;

use backend_nftables::apply::apply;
use backend_nftables::netlink::NftSocket;
use backend_nftables::plan::plan;
use testkit::netns::in_new_netns;
use testkit::process::run;

/// The golden text without its `# problem:` comment lines: the table itself.
fn table_text(golden: &str) -> String {
    golden
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn every_golden_full_plan_through_netlink_lists_as_the_golden() {
    let mut failures = Vec::new();
    for (name, path) in nft_cases::cases() {
        let golden = std::fs::read_to_string(nft_cases::dir("golden").join(format!("{name}.nft")))
            .expect("golden file");
        let text = table_text(&golden);
        let desired = nft_cases::plan_case(&path);
        let changes = plan(&desired, None, None);
        let table = desired.table.name.clone();
        let listed = in_new_netns(move || {
            let mut socket = NftSocket::open().expect("socket");
            apply(&mut socket, &table, &changes).map_err(|e| e.to_string())?;
            Ok::<_, String>(run("nft", &["list", "table", "inet", &table]))
        });
        match listed {
            Ok(listed) if listed == text => {}
            Ok(listed) => failures.push(format!(
                "{name}: nft list differs from the golden\n--- golden\n{text}\n--- listed\n{listed}"
            )),
            Err(e) => failures.push(format!("{name}: apply failed: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
