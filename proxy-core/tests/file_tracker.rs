//! The table file through the change tracker: one bad entry never holds back the others, a
//! service that leaves the file is deleted, and a fixed entry applies again.

use proxy_core::dataplane::Capabilities;
use proxy_core::file::parse_spec;
use proxy_core::tracker::{ChangeTracker, SkipReason};
use proxy_core::ServicePortName;

fn apply(tracker: &mut ChangeTracker, yaml: &str) {
    parse_spec(yaml, "table.yaml")
        .expect("the text parses")
        .apply_to(tracker);
}

fn name(service: &str, port: &str) -> ServicePortName {
    ServicePortName::new("default", service, port)
}

const GOOD: &str = "
node: node-a
services:
  - name: web
    cluster_ips: [198.19.0.10]
    ports: [{name: http, port: 80, target_port: 8080, node_port: 30080}]
    endpoints: [{ip: 198.18.1.10, node: node-a}]
  - name: api
    cluster_ips: [198.19.0.11]
    ports: [{name: http, port: 80}]
    endpoints: [{ip: 198.18.1.11, node: node-b}]
";

#[test]
fn a_good_file_applies_whole_with_locality_from_the_node() {
    let (mut tracker, _source) = ChangeTracker::new("any", Capabilities::everything());
    apply(&mut tracker, GOOD);
    assert_eq!(tracker.table().len(), 2);
    assert!(tracker.skipped().is_empty());
    let web = tracker.table().get(&name("web", "http")).expect("web");
    assert!(web.endpoints[0].is_local);
    let api = tracker.table().get(&name("api", "http")).expect("api");
    assert!(!api.endpoints[0].is_local);
}

#[test]
fn an_entry_out_of_range_keeps_its_last_good_version_and_the_rest_applies() {
    let (mut tracker, _source) = ChangeTracker::new("any", Capabilities::everything());
    apply(&mut tracker, GOOD);
    let web_before = tracker.table().get(&name("web", "http")).cloned();
    // web's node port is out of range; api gains an endpoint.
    let edited = GOOD
        .replace("node_port: 30080", "node_port: 99999")
        .replace(
            "endpoints: [{ip: 198.18.1.11, node: node-b}]",
            "endpoints: [{ip: 198.18.1.11, node: node-b}, {ip: 198.18.1.12}]",
        );
    apply(&mut tracker, &edited);
    assert_eq!(
        tracker.table().get(&name("web", "http")).cloned(),
        web_before
    );
    let skipped = &tracker.skipped()[&name("web", "http")];
    assert_eq!(skipped.reason, SkipReason::Invalid);
    assert!(skipped.runs_previous);
    assert_eq!(
        skipped.problems[0].to_string(),
        "services[0].ports[0].node_port: 99999 is outside 1-65535"
    );
    let api = tracker.table().get(&name("api", "http")).expect("api");
    assert_eq!(api.endpoints.len(), 2, "the unrelated change applied");

    apply(&mut tracker, GOOD);
    assert!(
        tracker.skipped().is_empty(),
        "fixed: {:?}",
        tracker.skipped()
    );
}

#[test]
fn a_clash_added_to_the_file_blames_the_newcomer() {
    let (mut tracker, _source) = ChangeTracker::new("any", Capabilities::everything());
    apply(&mut tracker, GOOD);
    // `aaa` sorts before `web` but arrives later: it is the one skipped.
    let edited = format!(
        "{GOOD}  - name: aaa\n    cluster_ips: [198.19.0.10]\n    ports: [{{name: http, port: 80}}]\n"
    );
    apply(&mut tracker, &edited);
    assert!(tracker.table().get(&name("web", "http")).is_some());
    assert_eq!(
        tracker.skipped()[&name("aaa", "http")].reason,
        SkipReason::Clash
    );
}

#[test]
fn a_service_gone_from_the_file_is_deleted() {
    let (mut tracker, _source) = ChangeTracker::new("any", Capabilities::everything());
    apply(&mut tracker, GOOD);
    let without_api = GOOD.split("  - name: api").next().expect("web part");
    apply(&mut tracker, without_api);
    assert_eq!(tracker.table().len(), 1);
    assert!(tracker.table().get(&name("api", "http")).is_none());
}

#[test]
fn a_file_is_one_generation_and_an_unchanged_file_is_none() {
    let (mut tracker, _source) = ChangeTracker::new("any", Capabilities::everything());
    let spec = parse_spec(GOOD, "table.yaml").expect("parses");
    assert_eq!(
        spec.apply_to(&mut tracker),
        1,
        "node and two services: one generation"
    );
    assert_eq!(tracker.table().len(), 2);
    assert_eq!(
        spec.apply_to(&mut tracker),
        1,
        "nothing changed, nothing published"
    );
}

/// More YAML nodes than serde-saphyr's default budget (250,000): a table written out in full is
/// not a hostile file, whatever its size.
#[test]
fn a_table_of_thousands_of_services_parses() {
    let mut yaml = String::from("node: node-0\nservices:\n");
    for i in 0..4_000u32 {
        let [_, _, hi, lo] = i.to_be_bytes();
        yaml.push_str(&format!(
            "  - name: ns/svc-{i}\n    cluster_ips: [198.19.{hi}.{lo}]\n    ports: [{{name: http, port: 80}}]\n    endpoints:\n"
        ));
        for j in 0..10u32 {
            let [_, _, hi, lo] = (i * 10 + j).to_be_bytes();
            yaml.push_str(&format!(
                "      - {{ip: 198.18.{hi}.{lo}, node: node-{}}}\n",
                j % 3
            ));
        }
    }
    let table = proxy_core::file::parse_table(&yaml, "big.yaml").expect("parses");
    assert_eq!(table.len(), 4_000);
    assert_eq!(table.endpoint_count(), 40_000);
}
