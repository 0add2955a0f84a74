//! Scale through the binary a user runs: a 50,000-service × 10-endpoint table file loads through
//! `svcproxy --dry-run`, in YAML and in JSON (issue #11: the YAML parser's node budget stopped
//! YAML near 2,600 services × 10 endpoints while the same table in JSON loaded).

use std::process::Command;
use std::time::Instant;

use testkit::fs::TempDir;

const SVCPROXY: &str = env!("CARGO_BIN_EXE_svcproxy");
const SERVICES: u32 = 50_000;
const ENDPOINTS: u32 = 10;

/// The table written out in full, as a generator or an operator would write it: one service per
/// entry, no anchors. Cluster IPs from 198.19.0.0/16, endpoints from 198.18.0.0/16.
fn yaml_table() -> String {
    let mut text = String::with_capacity(40 << 20);
    text.push_str("node: node-0\nservices:\n");
    for i in 0..SERVICES {
        let [_, _, hi, lo] = i.to_be_bytes();
        text.push_str(&format!(
            "  - name: ns-{}/svc-{i}\n    cluster_ips: [198.19.{hi}.{lo}]\n    ports: [{{name: http, port: 80, target_port: 8080}}]\n    endpoints:\n",
            i % 100
        ));
        for j in 0..ENDPOINTS {
            let [_, _, hi, lo] = ((i * ENDPOINTS + j) % 65_536).to_be_bytes();
            text.push_str(&format!(
                "      - {{ip: 198.18.{hi}.{lo}, node: node-{}}}\n",
                j % 3
            ));
        }
    }
    text
}

fn json_table() -> String {
    let services: Vec<serde_json::Value> = (0..SERVICES)
        .map(|i| {
            let [_, _, hi, lo] = i.to_be_bytes();
            let endpoints: Vec<serde_json::Value> = (0..ENDPOINTS)
                .map(|j| {
                    let [_, _, hi, lo] = ((i * ENDPOINTS + j) % 65_536).to_be_bytes();
                    serde_json::json!({"ip": format!("198.18.{hi}.{lo}"), "node": format!("node-{}", j % 3)})
                })
                .collect();
            serde_json::json!({
                "name": format!("ns-{}/svc-{i}", i % 100),
                "cluster_ips": [format!("198.19.{hi}.{lo}")],
                "ports": [{"name": "http", "port": 80, "target_port": 8080}],
                "endpoints": endpoints,
            })
        })
        .collect();
    serde_json::json!({"node": "node-0", "services": services}).to_string()
}

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
    std::fs::write(&yaml, yaml_table()).expect("write yaml");
    let json = dir.join("table.json");
    std::fs::write(&json, json_table()).expect("write json");
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
        let last = SERVICES - 1;
        let [_, _, hi, lo] = last.to_be_bytes();
        for vip in ["198.19.0.0".to_owned(), format!("198.19.{hi}.{lo}")] {
            assert!(
                rendered.contains(&format!("{vip}/32")) || rendered.contains(&format!("{vip} ")),
                "{}: no rule for {vip} in the dry run",
                path.display()
            );
        }
    }
}
