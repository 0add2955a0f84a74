//! `bench nftables --quick` end to end (as root): N = 1 and 100 for every contender, each in
//! its own namespace. Every contender must load at both sizes, the ratios against
//! kube-proxy's layout must be computed, our partial syncs measured, the restart must write
//! nothing, and no namespace of the run may be left behind.

use std::path::PathBuf;
use std::process::Command;

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn quick_nftables_run_loads_every_contender_and_computes_ratios() {
    let out_dir = std::env::temp_dir().join(format!("bench-nftables-test-{}", std::process::id()));
    let output = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(["nftables", "--quick", "--repetitions", "5"])
        .arg("--out")
        .arg(&out_dir)
        .output()
        .expect("run bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench failed: {stdout}\n{stderr}");
    let files: Vec<PathBuf> = stdout.lines().map(PathBuf::from).collect();
    let extensions: Vec<_> = files
        .iter()
        .filter_map(|f| f.extension().map(|e| e.to_string_lossy().into_owned()))
        .collect();
    assert_eq!(extensions, ["json", "md", "svg"], "{stdout}");

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&files[0]).expect("read json"))
            .expect("parse json");
    let cells = json["cells"].as_array().expect("cells");
    let contenders = ["kube-proxy-nft", "ours-nft-cli", "ours", "iptables"];
    assert_eq!(cells.len(), 2 * contenders.len(), "{json:#}");
    for cell in cells {
        let name = format!("N = {}, {}", cell["n"], cell["contender"]);
        assert_eq!(cell["outcome"], "ok", "{name}: {cell:#}\n{stderr}");
        let seconds = cell["full"]["seconds"].as_f64().unwrap_or(-1.0);
        assert!(seconds > 0.0 && seconds < 60.0, "{name}: {cell:#}");
    }
    for cell in cells.iter().filter(|c| c["contender"] == "ours") {
        for step in ["endpoint_change", "service_add"] {
            assert_eq!(cell[step]["count"], 5, "{step}: {cell:#}");
            assert!(
                cell[step]["p50_ms"].as_f64().is_some_and(|ms| ms > 0.0),
                "{cell:#}"
            );
        }
        let restart = cell["restart"].as_str().unwrap_or_default();
        assert!(
            restart.ends_with(" s, 0 written"),
            "restart must write nothing: {restart}"
        );
    }

    let markdown = std::fs::read_to_string(&files[1]).expect("read markdown");
    for contender in &contenders[1..] {
        assert!(markdown.contains(contender), "{markdown}");
    }
    // Every non-reference contender has a ratio against kube-proxy's layout at both sizes.
    for n in ["| 1 |", "| 100 |"] {
        let row = markdown
            .lines()
            .find(|l| l.starts_with(n))
            .unwrap_or_else(|| panic!("no row {n} in\n{markdown}"));
        let ratios = row.split('|').filter(|c| c.trim().ends_with('x')).count();
        assert_eq!(ratios, 3, "{row}");
    }
    assert!(std::fs::read_to_string(&files[2])
        .expect("read svg")
        .contains("</svg>"));

    let namespaces = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns");
    let listed = String::from_utf8_lossy(&namespaces.stdout);
    // The suite's namespaces are `bnft<pid>-<n>-<contender>`; the harness has exited.
    assert!(
        !listed.lines().any(|l| l.starts_with("bnft")),
        "namespaces left behind:\n{listed}"
    );
    let _ = std::fs::remove_dir_all(&out_dir);
}
