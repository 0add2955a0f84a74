//! Scale through the binary a user runs: a 50,000-service × 10-endpoint table file loads through
//! `svcproxy --dry-run`, in YAML and in JSON (issue #11: the YAML parser's node budget stopped
//! YAML near 2,600 services × 10 endpoints while the same table in JSON loaded).

use std::process::Command;
use std::time::Instant;

use proxy_core::testing::generate::{file_cluster_ip, table_file_text};
use testkit::fs::TempDir;

const SVCPROXY: &str = env!("CARGO_BIN_EXE_svcproxy");
const SERVICES: u32 = 50_000;
const ENDPOINTS: u32 = 10;

fn dry_run(path: &std::path::Path) -> String {
    let started = Instant::now();
    let out = Command::new(SVCPROXY)
        .arg("--services")
        .arg(path)
        .args(["--backend", "iptables", "--dry-run"])
        .env("NO_COLOR", "1")
        .output()
        .expect("run svcproxy");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{} did not load: {}\n{stderr}",
        path.display(),
        out.status
    );
    eprintln!(
        "{}: dry run in {:.1} s",
        path.display(),
        started.elapsed().as_secs_f64()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_table_of_50000_services_by_10_endpoints_loads_in_yaml_and_in_json() {
    let dir = TempDir::new("svcproxy-scale");
    let yaml = dir.join("table.yaml");
    std::fs::write(&yaml, table_file_text(SERVICES, ENDPOINTS, false)).expect("write yaml");
    let json = dir.join("table.json");
    std::fs::write(&json, table_file_text(SERVICES, ENDPOINTS, true)).expect("write json");
    for path in [&yaml, &json] {
        let size = std::fs::metadata(path).expect("stat").len();
        assert!(
            size < proxy_core::file::DEFAULT_MAX_TABLE_BYTES,
            "{} is {size} bytes: over the default --max-table-bytes",
            path.display()
        );
        let rendered = dry_run(path);
        // Every service port made it into the plan: the first and the last cluster IP are
        // dispatched to.
        for vip in [file_cluster_ip(0), file_cluster_ip(SERVICES - 1)] {
            assert!(
                rendered.contains(&format!("{vip}/32")) || rendered.contains(&format!("{vip} ")),
                "{}: no rule for {vip} in the dry run",
                path.display()
            );
        }
    }
}
