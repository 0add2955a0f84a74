//! The table file format: defaults, every field, JSON, errors with locations and paths, and
//! rendering back to YAML.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use proxy_core::file::{load_table, parse_spec, parse_table, render_table_yaml, LoadError};
use proxy_core::table::{
    Endpoint, Protocol, Scheduler, ServicePort, ServicePortName, ServiceTable, SessionAffinity,
    TrafficPolicy,
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/tables")
        .join(name)
}

fn load(name: &str) -> ServiceTable {
    load_table(&fixture(name)).unwrap_or_else(|error| panic!("{name} should load:\n{error}"))
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("tests write valid IPs")
}

fn port<'a>(table: &'a ServiceTable, namespace: &str, name: &str, port: &str) -> &'a ServicePort {
    table
        .get(&ServicePortName::new(namespace, name, port))
        .unwrap_or_else(|| panic!("no {namespace}/{name}:{port} in {table:?}"))
}

/// The endpoint at `addr` in `port`.
fn endpoint<'a>(port: &'a ServicePort, addr: &str) -> &'a Endpoint {
    port.endpoints
        .iter()
        .find(|e| e.addr == ip(addr))
        .unwrap_or_else(|| panic!("no endpoint {addr} in {}", port.name))
}

/// The problems of an invalid table, as `path: message` lines.
fn problems(error: LoadError) -> Vec<String> {
    match error {
        LoadError::Invalid { errors, .. } => {
            errors.errors.iter().map(ToString::to_string).collect()
        }
        other => panic!("expected validation errors, got: {other}"),
    }
}

// === Defaults ===

#[test]
fn minimal_service_takes_every_default() {
    let table = load("minimal.yaml");
    assert_eq!(table.node(), Some("node-a"));
    assert_eq!(table.len(), 1);
    let web = port(&table, "default", "web", "");
    assert_eq!(web.protocol, Protocol::Tcp);
    assert_eq!((web.port, web.target_port, web.node_port), (80, 80, None));
    assert!(web.external_ips.is_empty() && web.load_balancer_ips.is_empty());
    assert!(web.load_balancer_source_ranges.is_empty());
    assert_eq!(web.session_affinity, SessionAffinity::None);
    assert_eq!(web.external_traffic_policy, TrafficPolicy::Cluster);
    assert_eq!(web.internal_traffic_policy, TrafficPolicy::Cluster);
    assert_eq!((web.scheduler, web.health_check_node_port), (None, None));
    let mut local = Endpoint::new(ip("198.18.1.10"), 80);
    local.node = Some("node-a".to_owned());
    local.is_local = true;
    let mut remote = Endpoint::new(ip("198.18.1.11"), 80);
    remote.node = Some("node-b".to_owned());
    assert_eq!(web.endpoints, [local, remote]);
}

#[test]
fn client_ip_affinity_timeout_defaults_to_three_hours() {
    let table = parse_table(
        "services: [{name: web, ports: [{port: 80}], session_affinity: {client_ip: {}}}]",
        "t.yaml",
    )
    .expect("valid");
    assert_eq!(
        port(&table, "default", "web", "").session_affinity,
        SessionAffinity::ClientIp {
            timeout: Duration::from_secs(10_800)
        }
    );
}

#[test]
fn session_affinity_none_is_accepted() {
    let table = parse_table(
        "services: [{name: web, ports: [{port: 80}], session_affinity: none}]",
        "t.yaml",
    )
    .expect("valid");
    assert_eq!(
        port(&table, "default", "web", "").session_affinity,
        SessionAffinity::None
    );
}

#[test]
fn serving_defaults_to_ready() {
    let table = parse_table(
        "services: [{name: web, ports: [{port: 80}], endpoints: [{ip: 198.18.1.10, ready: false}]}]",
        "t.yaml",
    )
    .expect("valid");
    let endpoint = &port(&table, "default", "web", "").endpoints[0];
    assert_eq!(
        (endpoint.ready, endpoint.serving, endpoint.terminating),
        (false, false, false)
    );
}

#[test]
fn endpoints_are_local_only_on_this_node_without_a_node_name() {
    let text = "services: [{name: web, ports: [{port: 80}], endpoints: [{ip: 198.18.1.10, node: node-a}]}]";
    let table = parse_table(text, "t.yaml").expect("valid");
    assert_eq!(table.node(), None);
    assert!(!port(&table, "default", "web", "").endpoints[0].is_local);
}

// === Every field ===

#[test]
fn every_field_is_read() {
    let table = load("full.yaml");
    assert_eq!(table.len(), 3);
    assert_eq!(table.endpoint_count(), 12);
    let http = port(&table, "shop", "web", "http");
    assert_eq!(http.protocol, Protocol::Tcp);
    assert_eq!(http.cluster_ips, [ip("198.19.0.10"), ip("2001:db8::10")]);
    assert_eq!(
        (http.port, http.target_port, http.node_port),
        (80, 8080, Some(30080))
    );
    assert_eq!(http.external_ips, [ip("198.18.200.1")]);
    assert_eq!(
        http.load_balancer_ips,
        [ip("198.18.201.1"), ip("2001:db8:2::1")]
    );
    assert_eq!(
        http.load_balancer_source_ranges,
        [
            "198.18.0.0/16".parse().expect("cidr"),
            "2001:db8::/32".parse().expect("cidr")
        ]
    );
    assert_eq!(
        http.session_affinity,
        SessionAffinity::ClientIp {
            timeout: Duration::from_secs(600)
        }
    );
    assert_eq!(http.external_traffic_policy, TrafficPolicy::Local);
    assert_eq!(http.internal_traffic_policy, TrafficPolicy::Local);
    assert_eq!(http.scheduler, Some(Scheduler::Maglev));
    assert_eq!(http.health_check_node_port, Some(30100));

    let dns = port(&table, "shop", "web", "dns");
    assert_eq!(
        (dns.protocol, dns.port, dns.target_port, dns.node_port),
        (Protocol::Udp, 53, 53, Some(30053))
    );
    let sig = port(&table, "shop", "web", "sig");
    assert_eq!(
        (sig.protocol, sig.port, sig.node_port),
        (Protocol::Sctp, 3868, None)
    );
    // Service-wide fields reach every port.
    assert_eq!(sig.cluster_ips, http.cluster_ips);
    assert_eq!(sig.health_check_node_port, Some(30100));

    let first = endpoint(http, "198.18.1.10");
    assert_eq!(first.port, 8080);
    assert_eq!(first.node.as_deref(), Some("node-a"));
    assert!(first.is_local && first.ready && first.serving && !first.terminating);
    assert_eq!((first.zone.as_deref(), first.weight), (Some("zone-1"), 3));
    let draining = endpoint(http, "198.18.1.11");
    assert!(!draining.ready && draining.serving && draining.terminating);
    assert!(!draining.is_local);
    assert_eq!(draining.zone.as_deref(), Some("zone-2"));
    let forced_local = endpoint(http, "198.18.1.12");
    assert!(forced_local.is_local, "local: true overrides the node");
    assert_eq!(forced_local.port, 9090, "port overrides the target port");
    let forced_remote = endpoint(http, "2001:db8:1::10");
    assert!(!forced_remote.is_local, "local: false overrides the node");
    assert_eq!(forced_remote.weight, 0);
}

#[test]
fn endpoints_apply_to_every_port_at_its_target_port() {
    let table = load("full.yaml");
    for (name, target) in [("http", 8080), ("dns", 53), ("sig", 3868)] {
        let p = port(&table, "shop", "web", name);
        let ports: Vec<(String, u16)> = p
            .endpoints
            .iter()
            .map(|e| (e.addr.to_string(), e.port))
            .collect();
        assert_eq!(
            ports,
            [
                ("198.18.1.10".to_owned(), target),
                ("198.18.1.11".to_owned(), target),
                ("198.18.1.12".to_owned(), 9090),
                ("2001:db8:1::10".to_owned(), target),
            ],
            "port {name}"
        );
    }
}

// === JSON ===

#[test]
fn json_file_gives_the_same_table_as_yaml() {
    assert_eq!(load("full.json"), load("full.yaml"));
}

#[test]
fn json_is_recognised_by_a_leading_brace() {
    let text = r#"  {"services": [{"name": "web", "ports": [{"port": 80}]}]}"#;
    let table = parse_table(text, "from-stdin").expect("valid JSON");
    assert_eq!(port(&table, "default", "web", "").port, 80);
    // JSON's own parser reports JSON errors: a trailing comma is not YAML's message.
    let error = parse_table(r#"{"services": [],}"#, "from-stdin").expect_err("bad JSON");
    assert_eq!(
        error.to_string(),
        "from-stdin:1:17: trailing comma",
        "{error:?}"
    );
}

#[test]
fn json_syntax_error_gives_file_line_and_column() {
    let path = fixture("syntax_error.json");
    let error = load_table(&path).expect_err("trailing comma");
    let LoadError::Parse {
        origin,
        line,
        column,
        message,
    } = &error
    else {
        panic!("expected a parse error, got {error}");
    };
    assert_eq!(origin, &path.display().to_string());
    assert_eq!((*line, *column), (Some(4), Some(52)));
    assert_eq!(message, "trailing comma");
    assert_eq!(
        error.to_string(),
        format!("{}:4:52: trailing comma", path.display())
    );
}

// === Parse errors ===

#[test]
fn yaml_syntax_error_gives_file_line_and_column() {
    let path = fixture("syntax_error.yaml");
    let error = load_table(&path).expect_err("unclosed flow sequence");
    let LoadError::Parse { line, column, .. } = &error else {
        panic!("expected a parse error, got {error}");
    };
    // The parser notices the unclosed `[` of line 4 at the next key.
    assert_eq!((*line, *column), (Some(5), Some(10)), "{error}");
    assert_eq!(
        error.to_string(),
        format!(
            "{}:5:10: illegal placement of ':' indicator",
            path.display()
        )
    );
}

#[test]
fn unknown_field_is_an_error_at_its_place() {
    let path = fixture("unknown_field.yaml");
    let error = load_table(&path).expect_err("nodeport is a typo");
    assert_eq!(
        error.to_string(),
        format!(
            "{}:6:32: unknown field `nodeport`, expected one of name, protocol, port, \
             target_port, node_port",
            path.display()
        )
    );
}

#[test]
fn unknown_scheduler_names_the_choices() {
    let error = parse_table(
        "services:\n  - name: web\n    ports: [{port: 80}]\n    scheduler: fastest\n",
        "t.yaml",
    )
    .expect_err("no such scheduler");
    assert_eq!(
        error.to_string(),
        "t.yaml:4:16: unknown variant `fastest`, expected one of rr, wrr, lc, wlc, sh, dh, \
         sed, nq, mh, random"
    );
}

#[test]
fn empty_file_is_an_error_not_an_empty_table() {
    for blank in ["", "\n# nothing yet\n---\n"] {
        let error = parse_table(blank, "empty.yaml").expect_err("no table");
        assert_eq!(
            error.to_string(),
            "empty.yaml: the file holds no table (an empty table is `services: []`)"
        );
    }
    let error = parse_table("node: node-a", "t.yaml").expect_err("services is required");
    assert!(matches!(error, LoadError::Parse { .. }), "{error}");
    assert!(error.to_string().contains("services"), "{error}");
    let table = parse_table("services: []", "none.yaml").expect("explicitly empty");
    assert!(table.is_empty());
}

#[test]
fn missing_file_is_an_io_error_naming_the_path() {
    let path = fixture("no-such-file.yaml");
    let error = load_table(&path).expect_err("missing");
    assert!(matches!(error, LoadError::Io { .. }), "{error}");
    assert!(
        error
            .to_string()
            .starts_with(&format!("cannot read table file {}: ", path.display())),
        "{error}"
    );
}

#[test]
fn idle_timeout_applies_to_every_port_of_its_service_and_renders_back() {
    let text = "
services:
  - name: web
    ports: [{name: http, port: 80}, {name: dns, protocol: udp, port: 53}]
    idle_timeout_seconds: 5
  - name: api
    ports: [{port: 80}]
    cluster_ips: [198.19.0.11]
";
    let table = parse_table(text, "t.yaml").expect("valid");
    for name in ["http", "dns"] {
        let web = port(&table, "default", "web", name);
        assert_eq!(web.idle_timeout, Some(Duration::from_secs(5)), "{name}");
    }
    assert_eq!(port(&table, "default", "api", "").idle_timeout, None);
    let rendered = render_table_yaml(&table);
    assert_eq!(
        rendered.matches("idle_timeout_seconds: 5").count(),
        1,
        "one service entry, one field:\n{rendered}"
    );
    assert_eq!(
        parse_table(&rendered, "rendered.yaml").expect("renders parse"),
        table
    );
}

#[test]
fn idle_timeout_out_of_range_is_reported_once_per_service() {
    let text = "
services:
  - name: web
    ports: [{name: a, port: 80}, {name: b, port: 81}]
    idle_timeout_seconds: 0
  - name: api
    ports: [{port: 80}]
    idle_timeout_seconds: 86401
";
    let error = parse_table(text, "t.yaml").expect_err("out of range");
    assert_eq!(
        problems(error),
        [
            "services[0].idle_timeout_seconds: 0 is outside 1-86400",
            "services[1].idle_timeout_seconds: 86401 is outside 1-86400",
        ]
    );
}

// === Validation errors ===

#[test]
fn numbers_out_of_range_use_index_paths() {
    let text = "
services:
  - name: web
    ports: [{port: 80, node_port: 30080}]
  - name: api
    ports:
      - {name: a, port: 0}
      - {name: b, port: 80, target_port: 65536, node_port: 99999}
    health_check_node_port: 70000
    session_affinity: {client_ip: {timeout_seconds: 86401}}
    endpoints: [{ip: 198.18.1.10, port: 0}]
";
    let error = parse_table(text, "t.yaml").expect_err("out of range");
    assert_eq!(
        problems(error),
        [
            "services[1].ports[0].port: 0 is outside 1-65535",
            "services[1].ports[1].target_port: 65536 is outside 1-65535",
            "services[1].ports[1].node_port: 99999 is outside 1-65535",
            "services[1].session_affinity.client_ip.timeout_seconds: 86401 is outside 1-86400",
            "services[1].health_check_node_port: 70000 is outside 1-65535",
            "services[1].endpoints[0].port: 0 is outside 1-65535",
        ]
    );
}

#[test]
fn bad_service_names_are_reported() {
    let text = "
services:
  - {name: '', ports: [{port: 80}]}
  - {name: a/b/c, ports: [{port: 80}]}
  - {name: /web, ports: [{port: 80}]}
  - {name: web}
";
    let error = parse_table(text, "t.yaml").expect_err("bad names");
    assert_eq!(
        problems(error),
        [
            "services[0].name: must not be empty",
            "services[1].name: \"a/b/c\" has more than one '/'",
            "services[3].ports: must list at least one port",
            "services[/web].namespace: must not be empty",
        ]
    );
}

#[test]
fn a_port_name_used_twice_is_reported() {
    let text = "
services:
  - {name: web, ports: [{name: http, port: 80}, {name: http, port: 8080}]}
";
    assert_eq!(
        problems(parse_table(text, "t.yaml").expect_err("duplicate")),
        ["services[default/web].ports[http]: defined twice"]
    );
}

#[test]
fn file_and_table_problems_are_reported_together() {
    let path = fixture("many_errors.yaml");
    let error = load_table(&path).expect_err("many problems");
    assert_eq!(
        error.to_string(),
        format!(
            "{}: invalid service table (8 problem(s)):\n  \
             services[1].ports[1].port: 99999 is outside 1-65535\n  \
             services[1].session_affinity.client_ip.timeout_seconds: 0 is outside 1-86400\n  \
             services[1].endpoints[1].port: 70000 is outside 1-65535\n  \
             services[2].name: \"a/b/c\" has more than one '/'\n  \
             services[default/api].ports[http].cluster_ips[1]: second IPv4 cluster IP \
             (198.19.0.10 and 198.19.0.11): at most one per family\n  \
             services[default/api].ports[http].endpoints[[2001:db8::1]:80].ip: 2001:db8::1 is \
             IPv6, but the cluster IPs are IPv4 only\n  \
             services[default/web].ports[http].node_port: 30080 already used by \
             services[default/api].ports[http]\n  \
             services[default/web].ports[http].cluster_ips[0]: 198.19.0.10:80/tcp already used \
             by services[default/api].ports[http] (cluster_ips)",
            path.display()
        )
    );
}

// === Rendering ===

fn assert_round_trip(table: &ServiceTable) {
    let text = render_table_yaml(table);
    let parsed = parse_table(&text, "rendered.yaml")
        .unwrap_or_else(|error| panic!("rendered table does not parse:\n{error}\n{text}"));
    assert_eq!(&parsed, table, "rendered:\n{text}");
}

#[test]
fn rendering_then_parsing_gives_the_same_table() {
    assert_round_trip(&load("full.yaml"));
    assert_round_trip(&load("minimal.yaml"));
    assert_round_trip(&ServiceTable::empty());
}

#[test]
fn ports_of_one_service_that_differ_render_as_separate_entries() {
    let name = |port: &str| ServicePortName::new("default", "web", port);
    let mut http = ServicePort::new(name("http"), Protocol::Tcp, 80)
        .with_cluster_ip(ip("198.19.0.10"))
        .with_endpoint(Endpoint::new(ip("198.18.1.10"), 8080));
    http.target_port = 8080;
    let https = ServicePort::new(name("https"), Protocol::Tcp, 443)
        .with_cluster_ip(ip("198.19.0.11"))
        .with_endpoint(Endpoint::new(ip("198.18.1.10"), 8443));
    let table = ServiceTable::builder()
        .insert(http)
        .insert(https)
        .build()
        .expect("valid");
    let text = render_table_yaml(&table);
    assert_eq!(
        text.matches("name: default/web").count(),
        2,
        "one entry per distinct port:\n{text}"
    );
    assert_round_trip(&table);
}

#[test]
fn rendering_leaves_defaults_out() {
    let text = render_table_yaml(&load("minimal.yaml"));
    let spec = parse_spec(&text, "rendered.yaml").expect("parses");
    assert_eq!(spec.services.len(), 1);
    for default in [
        "weight",
        "ready",
        "serving",
        "terminating",
        "local",
        "target_port",
        "policy",
    ] {
        assert!(
            !text.contains(default),
            "{default} should be left out:\n{text}"
        );
    }
    assert!(text.contains("name: default/web"), "{text}");
}

// === The example table ===

fn demo_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/tables/demo.yaml")
}

#[test]
fn demo_table_is_valid_and_on_loopback() {
    let table = load_table(&demo_path()).unwrap_or_else(|error| panic!("{error}"));
    assert!(!table.is_empty());
    for p in table.iter() {
        assert!(p.port > 1024, "{} needs no privileges", p.name);
        for address in p.service_ips().chain(p.endpoints.iter().map(|e| e.addr)) {
            assert!(address.is_loopback(), "{} uses {address}", p.name);
        }
    }
    assert_round_trip(&table);
}

#[test]
fn demo_commented_full_example_is_valid_when_uncommented() {
    let text = std::fs::read_to_string(demo_path()).expect("demo table is readable");
    let mut uncommented = String::new();
    let mut inside = false;
    for line in text.lines() {
        match line {
            "# --- begin full example" => inside = true,
            "# --- end full example" => inside = false,
            _ if inside => {
                let line = line
                    .strip_prefix("# ")
                    .expect("every example line is commented");
                uncommented.push_str(line);
                uncommented.push('\n');
            }
            _ => {
                uncommented.push_str(line);
                uncommented.push('\n');
            }
        }
    }
    let table = parse_table(&uncommented, "demo-uncommented.yaml")
        .unwrap_or_else(|error| panic!("{error}\n{uncommented}"));
    let http = port(&table, "shop", "web", "http");
    assert_eq!(http.scheduler, Some(Scheduler::WeightedRoundRobin));
    assert_eq!(http.idle_timeout, Some(Duration::from_secs(600)));
    assert_eq!(http.endpoints.len(), 4);
    assert_round_trip(&table);
}

#[test]
fn topology_hints_and_the_node_zone_are_read_and_steer_selection() {
    let text = r#"
node: node-a
zone: zone-a
services:
  - name: default/web
    cluster_ips: [198.18.0.10]
    ports: [{port: 80}]
    endpoints:
      - {ip: 198.18.1.10, zone: zone-a, hints: {zones: [zone-a]}}
      - {ip: 198.18.1.11, zone: zone-b, hints: {zones: [zone-b]}}
      - {ip: 198.18.1.12, zone: zone-b, hints: {zones: [zone-b, zone-a], nodes: [node-c]}}
"#;
    let table = proxy_core::file::parse_table(text, "hints.yaml").expect("valid table");
    assert_eq!(table.zone(), Some("zone-a"));
    let web = port(&table, "default", "web", "");
    assert_eq!(
        endpoint(web, "198.18.1.12").zone_hints,
        ["zone-b", "zone-a"]
    );
    assert_eq!(endpoint(web, "198.18.1.12").node_hints, ["node-c"]);
    let selection = proxy_core::select::select_endpoints(web);
    let chosen: Vec<IpAddr> = selection.cluster.iter().map(|ep| ep.addr).collect();
    // Node hints are incomplete (one endpoint has them), so zone hints decide.
    assert_eq!(chosen, [ip("198.18.1.10"), ip("198.18.1.12")]);
    // And the rendering keeps them.
    let rendered = proxy_core::file::render_table_yaml(&table);
    assert!(rendered.contains("zone: zone-a\n"), "{rendered}");
    assert!(rendered.contains("hints:"), "{rendered}");
    assert_eq!(
        proxy_core::file::parse_table(&rendered, "rendered.yaml").expect("round trip"),
        table
    );
}

#[test]
fn an_unknown_hint_key_is_reported() {
    let text = "services:\n  - name: default/web\n    cluster_ips: [198.18.0.10]\n    ports: [{port: 80}]\n    endpoints: [{ip: 198.18.1.10, hints: {zone: [zone-a]}}]\n";
    let error = proxy_core::file::parse_table(text, "hints.yaml").expect_err("unknown key");
    assert!(error.to_string().contains("zone"), "{error}");
}
