//! `kube-svcproxy` end to end against a fake API server that speaks the real list/watch protocol
//! (`testkit::kubeapi`): initial sync gating, changes, several slices merged, a watch dropped
//! mid-stream, a relist after `410 Gone` that holds fewer objects, an API server restart; the
//! userspace backend on loopback with real connections (no root), and the iptables backend in a
//! network namespace (root). The objects are k8s-openapi's types, serialised.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, NodeSpec, Service, ServicePort, ServiceSpec, Taint};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;
use testkit::fs::TempDir;
use testkit::kubeapi::{FakeApiServer, Resource};
use testkit::net::{free_port, AnswerServer};
use testkit::netns::Netns;
use testkit::process::LoggedChild;
use testkit::wait::poll;

const KUBE_SVCPROXY: &str = env!("CARGO_BIN_EXE_kube-svcproxy");
const WAIT: Duration = Duration::from_secs(20);

// The objects are built from k8s-openapi's types and serialised, as the API server would send
// them.

fn to_json<T: serde::Serialize>(object: &T) -> Value {
    serde_json::to_value(object).expect("k8s-openapi objects serialise")
}

fn meta(namespace: Option<&str>, name: &str, labels: &[(&str, &str)]) -> ObjectMeta {
    ObjectMeta {
        namespace: namespace.map(str::to_owned),
        name: Some(name.to_owned()),
        labels: (!labels.is_empty()).then(|| {
            labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>()
        }),
        ..ObjectMeta::default()
    }
}

fn node(name: &str, zone: &str) -> Value {
    to_json(&Node {
        metadata: meta(None, name, &[("topology.kubernetes.io/zone", zone)]),
        ..Node::default()
    })
}

/// `node` as the cluster autoscaler leaves it before removing it.
fn node_tainted_for_removal(name: &str, zone: &str) -> Value {
    to_json(&Node {
        metadata: meta(None, name, &[("topology.kubernetes.io/zone", zone)]),
        spec: Some(NodeSpec {
            taints: Some(vec![Taint {
                key: "ToBeDeletedByClusterAutoscaler".to_owned(),
                value: Some("1764655200".to_owned()),
                effect: "NoSchedule".to_owned(),
                time_added: None,
            }]),
            ..NodeSpec::default()
        }),
        ..Node::default()
    })
}

fn service(namespace: &str, name: &str, vip: SocketAddr) -> Value {
    to_json(&Service {
        metadata: meta(Some(namespace), name, &[]),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            cluster_ip: Some(vip.ip().to_string()),
            cluster_ips: Some(vec![vip.ip().to_string()]),
            ports: Some(vec![ServicePort {
                name: Some("http".to_owned()),
                port: i32::from(vip.port()),
                protocol: Some("TCP".to_owned()),
                target_port: Some(IntOrString::String("http".to_owned())),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}

/// An EndpointSlice of `service` with `endpoints` (all ready, on `node-a`) at `port`.
fn slice(namespace: &str, service: &str, name: &str, port: u16, endpoints: &[Ipv4Addr]) -> Value {
    to_json(&EndpointSlice {
        metadata: meta(
            Some(namespace),
            name,
            &[("kubernetes.io/service-name", service)],
        ),
        address_type: "IPv4".to_owned(),
        ports: Some(vec![EndpointPort {
            name: Some("http".to_owned()),
            port: Some(i32::from(port)),
            protocol: Some("TCP".to_owned()),
            ..EndpointPort::default()
        }]),
        endpoints: endpoints
            .iter()
            .map(|ip| Endpoint {
                addresses: vec![ip.to_string()],
                conditions: Some(EndpointConditions {
                    ready: Some(true),
                    ..EndpointConditions::default()
                }),
                node_name: Some("node-a".to_owned()),
                ..Endpoint::default()
            })
            .collect(),
    })
}

fn ask(addr: SocketAddr) -> std::io::Result<String> {
    testkit::net::ask(addr, Duration::from_secs(2))
}

/// Asks until the answers (several tries) are exactly `want` (empty: refused).
fn wait_for(addr: SocketAddr, want: &[&str], proxy: &LoggedChild) {
    let want: BTreeSet<String> = want.iter().map(|s| (*s).to_owned()).collect();
    let settled = poll(WAIT, Duration::from_millis(50), || {
        let mut seen = BTreeSet::new();
        for _ in 0..8 {
            match ask(addr) {
                Ok(answer) => {
                    seen.insert(answer);
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                Err(e) => return Err(format!("{e}")),
            }
        }
        if seen == want {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    });
    if let Err(last) = settled {
        panic!(
            "{addr} never answered {want:?}; last: {last}; log:\n{}",
            proxy.log()
        );
    }
}

/// A fake API server on loopback and a kubeconfig for it in `dir`.
fn api_server(dir: &TempDir) -> (FakeApiServer, std::path::PathBuf) {
    let api = FakeApiServer::start();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig()).expect("write kubeconfig");
    (api, kubeconfig)
}

/// Starts kube-svcproxy with its metrics and health endpoints on free ports.
fn start(kubeconfig: &std::path::Path, mode: &str, extra: &[&str]) -> LoggedChild {
    LoggedChild::spawn(
        "kube-svcproxy",
        Command::new(KUBE_SVCPROXY)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--hostname-override", "node-a", "--proxy-mode", mode])
            .args(["--metrics-bind-address", "127.0.0.1:0"])
            .args(["--healthz-bind-address", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", "info,kube=warn")
            .env("NO_COLOR", "1"),
    )
    .expect("start kube-svcproxy")
}

#[test]
fn follows_the_api_server_through_gating_drops_410_relists_and_restarts() {
    let dir = TempDir::new("kube");
    let (api, kubeconfig) = api_server(&dir);

    let vip = Ipv4Addr::new(127, 0, 0, 51);
    let blue = AnswerServer::named((Ipv4Addr::new(127, 0, 0, 52), 0).into(), "blue");
    let port = blue.addr().port();
    let green = AnswerServer::named((Ipv4Addr::new(127, 0, 0, 53), port).into(), "green");
    let web = SocketAddr::from((vip, free_port(vip)));
    let other = SocketAddr::from((vip, free_port(vip)));
    api.apply(Resource::Nodes, node("node-a", "zone-1"));
    api.apply(Resource::Services, service("shop", "web", web));
    api.apply(Resource::Services, service("shop", "other", other));
    // The slice `name` of shop/web: one endpoint, 127.0.0.`last`.
    let set_web_slice = |name: &str, last: u8| {
        let endpoint = Ipv4Addr::new(127, 0, 0, last);
        api.apply(
            Resource::EndpointSlices,
            slice("shop", "web", name, port, &[endpoint]),
        );
    };
    set_web_slice("web-1", 52);
    api.apply(
        Resource::EndpointSlices,
        slice(
            "shop",
            "other",
            "other-1",
            port,
            &[Ipv4Addr::new(127, 0, 0, 52)],
        ),
    );

    // Gating: with the endpoint slices unlistable, nothing is programmed.
    api.set_resource_available(Resource::EndpointSlices, false);
    let proxy = start(&kubeconfig, "userspace", &[]);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !proxy.log().contains("table loaded"),
        "synced before the slices were listed:\n{}",
        proxy.log()
    );
    assert!(ask(web).is_err(), "served before the first complete list");
    api.set_resource_available(Resource::EndpointSlices, true);
    wait_for(web, &["blue"], &proxy);
    wait_for(other, &["blue"], &proxy);

    // A change, and a second slice merged into the same port.
    set_web_slice("web-1", 53);
    wait_for(web, &["green"], &proxy);
    set_web_slice("web-2", 52);
    wait_for(web, &["blue", "green"], &proxy);

    // A watch dropped mid-stream: the next change still arrives.
    api.drop_watches();
    api.delete(Resource::EndpointSlices, "shop", "web-2");
    wait_for(web, &["green"], &proxy);

    // 410 Gone: while the API server is away, a Service goes and the history is compacted; the
    // watch that resumes gets 410, the relist holds one Service fewer, which goes, and nothing
    // else does. (Only a relist can tell: no watch was open to see the delete.)
    let lists_before = api.requests().0;
    api.set_available(false);
    api.delete(Resource::Services, "shop", "other");
    api.compact();
    std::thread::sleep(Duration::from_millis(300));
    api.set_available(true);
    wait_for(other, &[], &proxy);
    wait_for(web, &["green"], &proxy);
    assert!(
        api.requests().0 > lists_before,
        "relisted: {lists_before} lists before, {:?} after",
        api.requests()
    );

    // The API server restarts: the dataplane keeps serving, then follows again.
    api.set_available(false);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        ask(web).expect("serves while the API server is down"),
        "green"
    );
    api.set_available(true);
    set_web_slice("web-1", 52);
    wait_for(web, &["blue"], &proxy);

    let (status, log) = proxy.terminate(WAIT);
    assert!(status.success(), "{status}; log:\n{log}");
    drop(green);
}

/// kube-proxy's `/healthz` drains a node that is going away (KEP-3836): 503 with `nodeEligible:
/// false` while the node carries the autoscaler's taint or a deletion timestamp, while `/livez`
/// stays 200 and the dataplane keeps serving; 200 again when the taint goes. Configured through a
/// `KubeProxyConfiguration` file (`--config`), as kubeadm runs kube-proxy, and ended as kube-proxy
/// ends when that file changes.
#[test]
fn healthz_drains_a_node_being_deleted_and_livez_does_not() {
    let dir = TempDir::new("kube-health");
    let (api, kubeconfig) = api_server(&dir);
    let vip = Ipv4Addr::new(127, 0, 0, 61);
    let blue = AnswerServer::named((Ipv4Addr::new(127, 0, 0, 62), 0).into(), "blue");
    let web = SocketAddr::from((vip, free_port(vip)));
    api.apply(Resource::Nodes, node("node-a", "zone-1"));
    api.apply(Resource::Services, service("shop", "web", web));
    api.apply(
        Resource::EndpointSlices,
        slice(
            "shop",
            "web",
            "web-1",
            blue.addr().port(),
            &[Ipv4Addr::new(127, 0, 0, 62)],
        ),
    );
    // Started as kubeadm's kube-proxy DaemonSet starts kube-proxy: a KubeProxyConfiguration
    // file, and only --hostname-override on the command line.
    let health = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port(Ipv4Addr::LOCALHOST)));
    let metrics = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port(Ipv4Addr::LOCALHOST)));
    let config = dir.join("config.conf");
    std::fs::write(
        &config,
        format!(
            "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n\
             clientConnection:\n  kubeconfig: {}\nmode: userspace\n\
             metricsBindAddress: {metrics}\nhealthzBindAddress: {health}\n",
            kubeconfig.display()
        ),
    )
    .expect("write config");
    let proxy = LoggedChild::spawn(
        "kube-svcproxy",
        Command::new(KUBE_SVCPROXY)
            .arg(format!("--config={}", config.display()))
            .arg("--hostname-override=node-a")
            .env("RUST_LOG", "info,kube=warn")
            .env("NO_COLOR", "1"),
    )
    .expect("start kube-svcproxy");
    let get = |path: &str| testkit::net::http_get(health, path, Duration::from_secs(2));
    // Waits until `path` answers `status` with `field` in its body.
    let wait_health = |path: &str, status: u16, field: &str| {
        poll(WAIT, Duration::from_millis(50), || match get(path) {
            Ok((code, body)) if code == status && body.contains(field) => Ok(()),
            other => Err(format!("{other:?}")),
        })
        .unwrap_or_else(|last| {
            panic!(
                "{path} never {status} with {field}; last: {last}; log:\n{}",
                proxy.log()
            )
        });
    };
    wait_for(web, &["blue"], &proxy);
    wait_health("/healthz", 200, "\"nodeEligible\": true");

    // The network programming latency SLI: a slice change stamped by the EndpointSlice
    // controller is observed once it is synced.
    let mut stamped = slice(
        "shop",
        "web",
        "web-1",
        blue.addr().port(),
        &[Ipv4Addr::new(127, 0, 0, 62), Ipv4Addr::new(127, 0, 0, 63)],
    );
    // The second endpoint not ready: a real change of the table that sends no traffic there.
    stamped["endpoints"][1]["conditions"]["ready"] = Value::Bool(false);
    stamped["metadata"]["annotations"] = serde_json::json!({
        "endpoints.kubernetes.io/last-change-trigger-time": jiff::Timestamp::now().to_string()
    });
    api.apply(Resource::EndpointSlices, stamped);
    poll(WAIT, Duration::from_millis(50), || {
        let (_, text) = testkit::net::http_get(metrics, "/metrics", Duration::from_secs(2))
            .map_err(|e| e.to_string())?;
        text.lines()
            .any(|l| l == "kubeproxy_network_programming_duration_seconds_count 1")
            .then_some(())
            .ok_or(text)
    })
    .unwrap_or_else(|last| panic!("no programming latency observed; /metrics:\n{last}"));

    api.apply(
        Resource::Nodes,
        node_tainted_for_removal("node-a", "zone-1"),
    );
    wait_health("/healthz", 503, "\"nodeEligible\": false");
    let (livez, body) = get("/livez").expect("/livez answers");
    assert_eq!(livez, 200, "{body}");
    assert_eq!(ask(web).expect("still serves"), "blue");

    api.apply(Resource::Nodes, node("node-a", "zone-1"));
    wait_health("/healthz", 200, "\"nodeEligible\": true");

    let mut deleting: Value = node("node-a", "zone-1");
    deleting["metadata"]["deletionTimestamp"] = Value::from("2026-12-02T06:00:00Z");
    api.apply(Resource::Nodes, deleting);
    wait_health("/healthz", 503, "\"nodeEligible\": false");
    wait_health("/livez", 200, "\"synced\": true");

    // A new configuration (kubeadm's ConfigMap edited): kube-svcproxy exits with 1, as
    // kube-proxy does, for its DaemonSet to start it again with the new file.
    let text = std::fs::read_to_string(&config).expect("read config");
    std::fs::write(&config, format!("{text}iptables:\n  masqueradeAll: true\n"))
        .expect("change config");
    let (status, log) = proxy.wait_exit(WAIT, "did not exit after --config changed");
    assert_eq!(status.code(), Some(1), "{status}; log:\n{log}");
    assert!(log.contains("load balancers drain it"), "{log}");
    assert!(
        log.contains("--config changed: its content changed; exiting"),
        "{log}"
    );
}

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn kube_svcproxy_programs_iptables_in_a_namespace_from_the_api_server() {
    let dir = TempDir::new("kube-ipt");
    let ns = Netns::new("kube-ipt");
    ns.ip_batch(&[
        "link set lo up",
        "addr add 198.18.5.1/32 dev lo",
        "addr add 198.18.5.2/32 dev lo",
        // Somewhere to route the cluster IP before OUTPUT's DNAT rewrites it.
        "route add 198.19.0.0/16 dev lo",
    ]);
    // The API server and the pods inside the namespace.
    let api = FakeApiServer::serve(
        ns.run(|| TcpListener::bind("127.0.0.1:0"))
            .expect("bind the fake API server"),
    );
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig()).expect("write kubeconfig");
    let pod = |ip: [u8; 4], name: &'static str| {
        let listener = ns
            .run(move || TcpListener::bind((Ipv4Addr::from(ip), 8080)))
            .expect("bind pod");
        AnswerServer::start(listener, move |_| name.to_owned())
    };
    let _a = pod([198, 18, 5, 1], "pod-a");
    let _b = pod([198, 18, 5, 2], "pod-b");
    let vip = SocketAddr::from(([198, 19, 0, 10], 80));
    api.apply(Resource::Nodes, node("node-a", "zone-1"));
    api.apply(Resource::Services, service("shop", "web", vip));
    api.apply(
        Resource::EndpointSlices,
        slice(
            "shop",
            "web",
            "web-1",
            8080,
            &[Ipv4Addr::new(198, 18, 5, 1)],
        ),
    );
    let proxy = LoggedChild::spawn(
        "kube-svcproxy",
        ns.command(KUBE_SVCPROXY)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["--hostname-override", "node-a", "--proxy-mode", "iptables"])
            .args(["--metrics-bind-address", "127.0.0.1:10249"])
            .args(["--healthz-bind-address", "127.0.0.1:10256"])
            .env("RUST_LOG", "info,kube=warn")
            .env("NO_COLOR", "1"),
    )
    .expect("start kube-svcproxy");
    let ask_in_ns =
        |addr: SocketAddr| ns.run(move || testkit::net::ask(addr, Duration::from_secs(1)));
    let answered = |want: &'static str| {
        poll(WAIT, Duration::from_millis(100), || match ask_in_ns(vip) {
            Ok(answer) if answer == want => Ok(()),
            other => Err(format!("{other:?}")),
        })
        .unwrap_or_else(|last| panic!("never {want}: {last}; log:\n{}", proxy.log()))
    };
    answered("pod-a");
    let rules = ns.exec_ok("iptables-save", &["-t", "nat"]);
    assert!(rules.contains("shop/web:http"), "{rules}");
    // kube-proxy's health endpoints answer.
    let health = SocketAddr::from((Ipv4Addr::LOCALHOST, 10256));
    let (livez, body) = ns
        .run(move || testkit::net::http_get(health, "/livez", Duration::from_secs(2)))
        .expect("livez answers");
    assert_eq!(livez, 200, "{body}");

    api.apply(
        Resource::EndpointSlices,
        slice(
            "shop",
            "web",
            "web-1",
            8080,
            &[Ipv4Addr::new(198, 18, 5, 2)],
        ),
    );
    answered("pod-b");
    let (status, log) = proxy.terminate(WAIT);
    assert!(status.success(), "{status}; log:\n{log}");
}
