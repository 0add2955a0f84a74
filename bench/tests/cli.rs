//! The `bench` binary end to end: a quick userspace run writes its three files, a quick limits
//! run its two (and, with the release svcproxy, measures it), and (as root)
//! the namespace self-test builds, uses and removes its namespaces.

use std::path::PathBuf;
use std::process::Command;

fn bench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bench"))
}

#[test]
fn quick_userspace_run_writes_json_markdown_and_svg() {
    quick_run("direct");
}

#[test]
#[ignore = "needs haproxy (apt-get install haproxy): CI installs it and runs --include-ignored"]
fn quick_userspace_run_measures_haproxy_side_by_side() {
    quick_run("direct,haproxy");
}

/// A quick run over `proxies` (plus a svcproxy binary that does not exist, which must be listed as
/// skipped), checking the three output files.
fn quick_run(proxies: &str) {
    let out_dir = std::env::temp_dir().join(format!(
        "bench-cli-test-{}-{}",
        std::process::id(),
        proxies.len()
    ));
    let output = bench()
        .args([
            "userspace",
            "--quick",
            "--duration",
            "0.3",
            "--svcproxy",
            "/nonexistent/svcproxy",
        ])
        .args(["--proxies", &format!("{proxies},svcproxy")])
        .arg("--out")
        .arg(&out_dir)
        .output()
        .expect("run bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "bench failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let files: Vec<PathBuf> = stdout.lines().map(PathBuf::from).collect();
    let extensions: Vec<_> = files
        .iter()
        .filter_map(|f| f.extension().map(|e| e.to_string_lossy().into_owned()))
        .collect();
    assert_eq!(extensions, ["json", "md", "svg"], "{stdout}");

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&files[0]).expect("read json"))
            .expect("parse json");
    let markdown = std::fs::read_to_string(&files[1]).expect("read md");
    let _ = std::fs::remove_dir_all(&out_dir);

    let measured: Vec<&str> = json["proxies"]
        .as_array()
        .expect("proxies")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(measured.join(","), proxies);
    let direct = &json["proxies"][0];
    assert!(
        direct["conn_max"]["result"]["ops"].as_u64().expect("ops") > 0,
        "{direct}"
    );
    assert_eq!(json["skipped"][0]["name"], "svcproxy");
    assert!(
        markdown.contains("**svcproxy skipped**: binary /nonexistent/svcproxy not found"),
        "{markdown}"
    );
    if proxies.contains("haproxy") {
        let haproxy = &json["proxies"][1];
        assert!(
            haproxy["conn_max"]["result"]["ops"].as_u64().expect("ops") > 0,
            "{haproxy}"
        );
        let idle = &haproxy["idle"][0];
        assert_eq!(idle["opened"], idle["connections"], "{haproxy}");
        assert!(
            idle["rss_before_kib"].as_u64().expect("rss") > 0,
            "{haproxy}"
        );
        assert!(markdown.contains("| direct / haproxy |"), "{markdown}");
    }
}

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn netns_selftest_passes_and_leaves_no_namespace() {
    let output = bench().arg("netns-selftest").output().expect("run bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "selftest failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("namespaces removed: true"), "{stdout}");
    assert!(stdout.contains("netns-selftest: ok"), "{stdout}");
}

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn quick_iptables_run_measures_every_layout_and_leaves_no_namespace() {
    let out_dir = std::env::temp_dir().join(format!("bench-iptables-test-{}", std::process::id()));
    let started = std::time::Instant::now();
    let output = bench()
        .args([
            "iptables",
            "--quick",
            "--sizes",
            "1,100",
            "--variants",
            "legacy",
        ])
        .arg("--out")
        .arg(&out_dir)
        .output()
        .expect("run bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "bench iptables failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        started.elapsed().as_secs() < 60,
        "took {:?}",
        started.elapsed()
    );
    let paths: Vec<PathBuf> = stdout.lines().map(PathBuf::from).collect();
    assert_eq!(paths.len(), 4, "{stdout}");
    let json = paths
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .expect("a JSON file");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json).expect("read json")).expect("json");
    let cells = report["cells"].as_array().expect("cells");
    assert_eq!(cells.len(), 6, "2 sizes x 1 variant x 3 layouts");
    for cell in cells {
        assert!(cell["error"].is_null(), "{cell}");
        for step in ["full", "endpoint_change", "service_added"] {
            assert!(cell[step]["seconds"].as_f64().is_some(), "{step}: {cell}");
        }
        for scenario in ["conn", "keepalive"] {
            let ops = cell[scenario]["result"]["ops"].as_u64().unwrap_or(0);
            assert!(ops > 100, "{scenario} got {ops} through: {cell}");
        }
        if cell["layout"] == "tree" {
            assert!(
                cell["walk"]["nat_rules"].as_u64().unwrap_or(999) < 100,
                "{cell}"
            );
        }
    }
    let markdown = std::fs::read_to_string(json.with_extension("md")).expect("markdown");
    assert!(
        markdown.contains("| 100 | legacy | full sync |"),
        "{markdown}"
    );
    let left: Vec<String> = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .expect("ip netns list")
            .stdout,
    )
    .lines()
    // The suite's namespaces are `bi<pid>-<n>-<variant>-<layout>-<role>`.
    .filter(|l| l.starts_with("bi") && l.contains("-legacy-"))
    .map(str::to_owned)
    .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    let _ = std::fs::remove_dir_all(&out_dir);
}

#[test]
fn quick_limits_run_without_svcproxy_says_why_each_scenario_was_not_measured() {
    let out_dir = std::env::temp_dir().join(format!("bench-cli-limits-{}", std::process::id()));
    let (json, markdown) = limits_run(&out_dir, "/nonexistent/svcproxy");
    assert_eq!(json["skipped"][0]["name"], "svcproxy", "{json}");
    let errors: Vec<&str> = json["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e.as_str())
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].starts_with("UDP flow memory:"), "{errors:?}");
    assert!(
        errors[1].starts_with("rate at the descriptor limit:"),
        "{errors:?}"
    );
    assert!(markdown.contains("## Not measured"), "{markdown}");
}

#[test]
#[ignore = "needs svcproxy built (cargo test --workspace builds it) and prlimit: CI runs --include-ignored"]
fn quick_limits_run_measures_svcproxy_under_a_low_descriptor_limit() {
    // BENCH_SVCPROXY, else the release build if there is one, else the debug build that
    // `cargo test --workspace` makes for the examples' tests (a fresh clone has no release one),
    // in CARGO_TARGET_DIR when set, as cargo builds there.
    let svcproxy = std::env::var("BENCH_SVCPROXY").unwrap_or_else(|_| {
        let target = std::env::var("CARGO_TARGET_DIR")
            .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../target").to_owned());
        let release = format!("{target}/release/svcproxy");
        if std::path::Path::new(&release).exists() {
            release
        } else {
            format!("{target}/debug/svcproxy")
        }
    });
    assert!(
        std::path::Path::new(&svcproxy).exists(),
        "no svcproxy at {svcproxy}: build it (cargo build -p examples --bin svcproxy) or set BENCH_SVCPROXY"
    );
    let out_dir = std::env::temp_dir().join(format!("bench-cli-limits-sv-{}", std::process::id()));
    let (json, markdown) = limits_run(&out_dir, &svcproxy);
    assert_eq!(json["errors"].as_array().map(Vec::len), Some(0), "{json}");
    let idle = &json["tcp_idle"][0];
    assert_eq!(idle["opened"], idle["connections"], "{idle}");
    let udp = &json["udp"];
    assert_eq!(udp["answered"], udp["flows"], "{udp}");
    let phases = json["fd_limit"]["phases"].as_array().expect("phases");
    assert_eq!(phases.len(), 5, "{json}");
    assert_eq!(json["fd_limit"]["nofile_read_back"], 1024, "{json}");
    // The other service is served whatever the hogs hold, and never waits seconds.
    for phase in phases {
        assert!(phase["fixed"]["ops"].as_u64().expect("ops") > 0, "{phase}");
        let p50 = phase["fixed"]["latency"]["p50_us"].as_f64().expect("p50");
        assert!(p50 < 100_000.0, "{phase}");
    }
    assert!(
        markdown.contains("## Connection rate at the descriptor limit"),
        "{markdown}"
    );
}

/// `bench limits --quick --no-haproxy` with `svcproxy`; returns the JSON and the markdown.
fn limits_run(out_dir: &std::path::Path, svcproxy: &str) -> (serde_json::Value, String) {
    let output = bench()
        .args(["limits", "--quick", "--no-haproxy", "--svcproxy", svcproxy])
        .arg("--out")
        .arg(out_dir)
        .output()
        .expect("run bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "bench failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let files: Vec<PathBuf> = stdout.lines().map(PathBuf::from).collect();
    let extensions: Vec<_> = files
        .iter()
        .filter_map(|f| f.extension().map(|e| e.to_string_lossy().into_owned()))
        .collect();
    assert_eq!(extensions, ["json", "md"], "{stdout}");
    let json = serde_json::from_str(&std::fs::read_to_string(&files[0]).expect("read json"))
        .expect("parse json");
    let markdown = std::fs::read_to_string(&files[1]).expect("read md");
    let _ = std::fs::remove_dir_all(out_dir);
    (json, markdown)
}
