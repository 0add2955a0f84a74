//! Kubernetes objects in the change tracker's terms, read as kube-proxy reads them.
//!
//! - **Services** (`pkg/proxy/servicechangetracker.go`, `serviceport.go`): headless
//!   (`clusterIP: None` or empty) and `ExternalName` services are skipped; every other type
//!   gives its ports with their cluster IPs (`clusterIPs`, else `clusterIP`), node ports (a port
//!   with `nodePort` 0 has none), external IPs, load-balancer ingress IPs (not those of
//!   `ipMode: Proxy`, which the load balancer proxies itself, KEP-1860), source ranges,
//!   `sessionAffinity: ClientIP` with its timeout (10800 s by default), both traffic policies and
//!   the health-check node port of a `Local` external policy. A service labelled
//!   `service.kubernetes.io/service-proxy-name` belongs to that proxy: ours only when the label
//!   names our `--service-proxy-name` (without one, only unlabelled services, as kube-proxy).
//!   `trafficDistribution` and `publishNotReadyAddresses` act through the endpoint slices (the
//!   EndpointSlice controller writes the hints and marks the endpoints ready), which is where
//!   kube-proxy reads them too.
//! - **EndpointSlices** (`endpointslicecache.go`): joined to their service by the
//!   `kubernetes.io/service-name` label and to its ports by port name; `FQDN` slices are
//!   skipped; of each endpoint the first address, `ready` (absent: true), `serving` (absent: as
//!   ready), `terminating` (absent: false), `nodeName`, `zone` and the `forZones`/`forNodes`
//!   hints.
//! - **The Node**: its zone is the `topology.kubernetes.io/zone` label.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Node, Service as KubeService, ServicePort as KubeServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice as KubeSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use proxy_core::table::{Protocol, SessionAffinity, TrafficPolicy};
use proxy_core::tracker::{EndpointSlice, Service, ServiceName, ServicePortSpec, SliceEndpoint};
use proxy_core::FieldError;

/// The label that gives a service to a named proxy.
pub const SERVICE_PROXY_NAME: &str = "service.kubernetes.io/service-proxy-name";
/// The label of an endpoint slice that names its service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The node label holding its zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// kube-proxy's default `sessionAffinityConfig.clientIP.timeoutSeconds`.
const DEFAULT_AFFINITY_SECONDS: u64 = 10_800;

/// What a Service is to us.
#[derive(Debug, Clone, PartialEq)]
pub enum ServiceView {
    /// Ours: program it.
    Ours(Service),
    /// Not ours (headless, `ExternalName`, another proxy's): what runs of it goes.
    Skipped(&'static str),
    /// Ours, but a field cannot be read: its last good version keeps running.
    Invalid(Vec<FieldError>),
}

/// The service's name, `namespace/name`.
pub fn service_name(service: &KubeService) -> ServiceName {
    ServiceName::new(
        service.metadata.namespace.clone().unwrap_or_default(),
        service.metadata.name.clone().unwrap_or_default(),
    )
}

/// Reads a Service as kube-proxy does (see the [module docs](self)); `proxy_name` is our
/// `--service-proxy-name`.
pub fn service(service: &KubeService, proxy_name: Option<&str>) -> ServiceView {
    let label = service
        .metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(SERVICE_PROXY_NAME));
    if label.map(String::as_str) != proxy_name {
        return ServiceView::Skipped(if label.is_some() {
            "labelled for another service proxy"
        } else {
            "not labelled for this service proxy"
        });
    }
    let Some(spec) = &service.spec else {
        return ServiceView::Skipped("no spec");
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return ServiceView::Skipped("ExternalName");
    }
    let cluster_ip = spec.cluster_ip.as_deref().unwrap_or_default();
    if cluster_ip.is_empty() || cluster_ip == "None" {
        return ServiceView::Skipped("headless");
    }
    let mut errors = Vec::new();
    let mut out = Service::new(service_name(service));
    let cluster_ips: Vec<String> = match &spec.cluster_ips {
        Some(ips) if !ips.is_empty() => ips.clone(),
        _ => vec![cluster_ip.to_owned()],
    };
    out.cluster_ips = addresses("spec.clusterIPs", &cluster_ips, &mut errors);
    for (index, port) in spec.ports.iter().flatten().enumerate() {
        if let Some(port) = service_port(port, &format!("spec.ports[{index}]"), &mut errors) {
            out.ports.push(port);
        }
    }
    out.external_ips = addresses(
        "spec.externalIPs",
        spec.external_ips.as_deref().unwrap_or_default(),
        &mut errors,
    );
    let ingress = service
        .status
        .as_ref()
        .and_then(|status| status.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref());
    let ingress_ips: Vec<String> = ingress
        .into_iter()
        .flatten()
        .filter(|ingress| ingress.ip_mode.as_deref() != Some("Proxy"))
        .filter_map(|ingress| ingress.ip.clone())
        .collect();
    out.load_balancer_ips = addresses("status.loadBalancer.ingress", &ingress_ips, &mut errors);
    for (index, range) in spec
        .load_balancer_source_ranges
        .iter()
        .flatten()
        .enumerate()
    {
        match range.trim().parse::<IpNet>() {
            Ok(net) => out.load_balancer_source_ranges.push(net),
            Err(_) => errors.push(FieldError::new(
                format!("spec.loadBalancerSourceRanges[{index}]"),
                format!("{range:?} is not a network"),
            )),
        }
    }
    if spec.session_affinity.as_deref() == Some("ClientIP") {
        let seconds = spec
            .session_affinity_config
            .as_ref()
            .and_then(|config| config.client_ip.as_ref())
            .and_then(|client_ip| client_ip.timeout_seconds)
            .map_or(DEFAULT_AFFINITY_SECONDS, |s| u64::try_from(s).unwrap_or(0));
        out.session_affinity = SessionAffinity::ClientIp {
            timeout: Duration::from_secs(seconds),
        };
    }
    out.external_traffic_policy = policy(spec.external_traffic_policy.as_deref());
    out.internal_traffic_policy = policy(spec.internal_traffic_policy.as_deref());
    if out.external_traffic_policy == TrafficPolicy::Local {
        out.health_check_node_port = spec
            .health_check_node_port
            .and_then(|port| u16::try_from(port).ok())
            .filter(|port| *port != 0);
    }
    if errors.is_empty() {
        ServiceView::Ours(out)
    } else {
        ServiceView::Invalid(errors)
    }
}

fn policy(value: Option<&str>) -> TrafficPolicy {
    match value {
        Some("Local") => TrafficPolicy::Local,
        _ => TrafficPolicy::Cluster,
    }
}

fn addresses(field: &str, values: &[String], errors: &mut Vec<FieldError>) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for (index, value) in values.iter().enumerate() {
        match value.parse() {
            Ok(ip) => out.push(ip),
            Err(_) => errors.push(FieldError::new(
                format!("{field}[{index}]"),
                format!("{value:?} is not an IP address"),
            )),
        }
    }
    out
}

fn service_port(
    port: &KubeServicePort,
    path: &str,
    errors: &mut Vec<FieldError>,
) -> Option<ServicePortSpec> {
    let protocol = match port.protocol.as_deref().unwrap_or("TCP") {
        "TCP" => Protocol::Tcp,
        "UDP" => Protocol::Udp,
        "SCTP" => Protocol::Sctp,
        other => {
            errors.push(FieldError::new(
                format!("{path}.protocol"),
                format!("{other:?} is not TCP, UDP or SCTP"),
            ));
            return None;
        }
    };
    let number = |value: i32, field: &str, errors: &mut Vec<FieldError>| {
        let parsed = u16::try_from(value).ok().filter(|p| *p != 0);
        if parsed.is_none() {
            errors.push(FieldError::new(
                format!("{path}.{field}"),
                format!("{value} is outside 1-65535"),
            ));
        }
        parsed
    };
    let service_port = number(port.port, "port", errors)?;
    // A named target port is resolved per endpoint by the slices' ports; the number is only
    // the fallback of a slice without ports, which a Service's slices always have.
    let target_port = match &port.target_port {
        Some(IntOrString::Int(value)) => number(*value, "targetPort", errors)?,
        _ => service_port,
    };
    let node_port = match port.node_port {
        None | Some(0) => None,
        Some(value) => Some(number(value, "nodePort", errors)?),
    };
    Some(ServicePortSpec {
        name: port.name.clone().unwrap_or_default(),
        protocol,
        port: service_port,
        target_port,
        node_port,
    })
}

/// Reads an EndpointSlice as kube-proxy does; `None` for a slice that is not a service's
/// (no `kubernetes.io/service-name` label) or holds no IP endpoints (`FQDN`).
pub fn endpoint_slice(slice: &KubeSlice) -> Option<EndpointSlice> {
    let service = slice
        .metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(SERVICE_NAME_LABEL))?;
    if slice.address_type == "FQDN" {
        return None;
    }
    let name = ServiceName::new(
        slice.metadata.namespace.clone().unwrap_or_default(),
        service.clone(),
    );
    let mut out = EndpointSlice::new(name, slice.metadata.name.clone().unwrap_or_default());
    let ports: Vec<(String, u16)> = slice
        .ports
        .iter()
        .flatten()
        .filter_map(|port| {
            let number = u16::try_from(port.port?).ok().filter(|p| *p != 0)?;
            Some((port.name.clone().unwrap_or_default(), number))
        })
        .collect();
    if ports.is_empty() {
        // kube-proxy takes a slice's endpoints port by port: a slice without ports serves none
        // (the tracker would read "no ports" as "every target port").
        return Some(out);
    }
    for (name, port) in ports {
        out = out.with_port(name, port);
    }
    for endpoint in &slice.endpoints {
        // kube-proxy uses the first address only.
        let Some(addr) = endpoint
            .addresses
            .first()
            .and_then(|a| a.parse::<IpAddr>().ok())
        else {
            continue;
        };
        let conditions = endpoint.conditions.as_ref();
        let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
        let mut out_endpoint = SliceEndpoint::new(addr);
        out_endpoint.ready = ready;
        out_endpoint.serving = conditions.and_then(|c| c.serving).unwrap_or(ready);
        out_endpoint.terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
        out_endpoint.node.clone_from(&endpoint.node_name);
        out_endpoint.zone.clone_from(&endpoint.zone);
        if let Some(hints) = &endpoint.hints {
            out_endpoint.zone_hints = hints
                .for_zones
                .iter()
                .flatten()
                .map(|zone| zone.name.clone())
                .collect();
            out_endpoint.node_hints = hints
                .for_nodes
                .iter()
                .flatten()
                .map(|node| node.name.clone())
                .collect();
        }
        out.endpoints.push(out_endpoint);
    }
    Some(out)
}

/// The slice's key in the tracker: its service and its name.
pub fn slice_key(slice: &KubeSlice) -> Option<(ServiceName, String)> {
    let service = slice
        .metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(SERVICE_NAME_LABEL))?;
    Some((
        ServiceName::new(
            slice.metadata.namespace.clone().unwrap_or_default(),
            service.clone(),
        ),
        slice.metadata.name.clone().unwrap_or_default(),
    ))
}

/// The annotation the EndpointSlice controller sets to when the change it carries was triggered
/// (the network programming latency SLI starts there).
pub const TRIGGER_TIME_ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// When the change a slice carries was triggered, if the controller said (RFC 3339).
pub fn trigger_time(slice: &KubeSlice) -> Option<std::time::SystemTime> {
    let text = slice
        .metadata
        .annotations
        .as_ref()?
        .get(TRIGGER_TIME_ANNOTATION)?;
    text.parse::<jiff::Timestamp>().ok().map(Into::into)
}

/// The taint the cluster autoscaler puts on a node it is about to remove.
pub const TO_BE_DELETED_TAINT: &str = "ToBeDeletedByClusterAutoscaler";

/// Whether the node should take load-balancer traffic, as kube-proxy's health server decides
/// (KEP-3836): not while it is being deleted (a deletion timestamp) or tainted
/// [`TO_BE_DELETED_TAINT`], whatever the taint's effect.
pub fn node_eligible(node: &Node) -> bool {
    let deleting = node.metadata.deletion_timestamp.is_some();
    let to_be_deleted = node
        .spec
        .as_ref()
        .and_then(|spec| spec.taints.as_ref())
        .is_some_and(|taints| taints.iter().any(|taint| taint.key == TO_BE_DELETED_TAINT));
    !deleting && !to_be_deleted
}

/// The node's zone label.
pub fn node_zone(node: &Node) -> Option<String> {
    node.metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(ZONE_LABEL))
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kube_service(value: serde_json::Value) -> KubeService {
        serde_json::from_value(value).expect("a Service")
    }

    fn kube_slice(value: serde_json::Value) -> KubeSlice {
        serde_json::from_value(value).expect("an EndpointSlice")
    }

    fn ours(value: serde_json::Value, proxy_name: Option<&str>) -> Service {
        match service(&kube_service(value), proxy_name) {
            ServiceView::Ours(service) => service,
            other => panic!("not ours: {other:?}"),
        }
    }

    fn meta() -> serde_json::Value {
        json!({"namespace": "shop", "name": "web"})
    }

    /// The services kube-proxy leaves alone, each with why.
    #[test]
    fn headless_external_name_and_other_proxies_services_are_skipped() {
        let cases = [
            (
                json!({"metadata": meta(), "spec": {"clusterIP": "None", "ports": [{"port": 80}]}}),
                None,
                "headless",
            ),
            (
                json!({"metadata": meta(), "spec": {"ports": [{"port": 80}]}}),
                None,
                "headless",
            ),
            (
                json!({"metadata": meta(), "spec": {"type": "ExternalName", "externalName": "x.example"}}),
                None,
                "ExternalName",
            ),
            (
                json!({"metadata": {"namespace": "shop", "name": "web",
                    "labels": {SERVICE_PROXY_NAME: "other"}},
                    "spec": {"clusterIP": "198.19.0.10", "ports": [{"port": 80}]}}),
                None,
                "labelled for another service proxy",
            ),
            (
                json!({"metadata": {"namespace": "shop", "name": "web",
                    "labels": {SERVICE_PROXY_NAME: "other"}},
                    "spec": {"clusterIP": "198.19.0.10", "ports": [{"port": 80}]}}),
                Some("ours"),
                "labelled for another service proxy",
            ),
            (
                json!({"metadata": meta(), "spec": {"clusterIP": "198.19.0.10", "ports": [{"port": 80}]}}),
                Some("ours"),
                "not labelled for this service proxy",
            ),
        ];
        for (value, proxy_name, why) in cases {
            assert_eq!(
                service(&kube_service(value.clone()), proxy_name),
                ServiceView::Skipped(why),
                "{value}"
            );
        }
        // Labelled with our name: ours.
        let labelled = json!({"metadata": {"namespace": "shop", "name": "web",
            "labels": {SERVICE_PROXY_NAME: "ours"}},
            "spec": {"clusterIP": "198.19.0.10", "ports": [{"port": 80}]}});
        assert_eq!(ours(labelled, Some("ours")).ports.len(), 1);
    }

    /// Every field kube-proxy reads, each as kube-proxy reads it.
    #[test]
    fn every_field_kube_proxy_reads_is_mapped_as_it_reads_it() {
        let lb = ours(
            json!({
                "metadata": meta(),
                "spec": {
                    "type": "LoadBalancer",
                    "clusterIP": "198.19.0.10",
                    "clusterIPs": ["198.19.0.10", "2001:db8::10"],
                    "ports": [
                        {"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080},
                        {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": "dns"},
                        {"name": "sig", "port": 3868, "protocol": "SCTP", "nodePort": 0}
                    ],
                    "externalIPs": ["198.18.200.1"],
                    "loadBalancerSourceRanges": [" 198.18.0.0/16 ", "2001:db8::/32"],
                    "sessionAffinity": "ClientIP",
                    "externalTrafficPolicy": "Local",
                    "internalTrafficPolicy": "Local",
                    "healthCheckNodePort": 30100,
                    "publishNotReadyAddresses": true,
                    "trafficDistribution": "PreferClose"
                },
                "status": {"loadBalancer": {"ingress": [
                    {"ip": "198.18.201.1"},
                    {"ip": "198.18.201.2", "ipMode": "VIP"},
                    {"ip": "198.18.201.3", "ipMode": "Proxy"},
                    {"hostname": "lb.example"}
                ]}}
            }),
            None,
        );
        assert_eq!(lb.name, ServiceName::new("shop", "web"));
        let ips = |list: &[IpAddr]| list.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(ips(&lb.cluster_ips), ["198.19.0.10", "2001:db8::10"]);
        assert_eq!(ips(&lb.external_ips), ["198.18.200.1"]);
        // ipMode Proxy: the load balancer proxies itself; a hostname has no IP.
        assert_eq!(ips(&lb.load_balancer_ips), ["198.18.201.1", "198.18.201.2"]);
        assert_eq!(
            lb.load_balancer_source_ranges
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["198.18.0.0/16", "2001:db8::/32"]
        );
        let ports: Vec<(String, Protocol, u16, u16, Option<u16>)> = lb
            .ports
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    p.protocol,
                    p.port,
                    p.target_port,
                    p.node_port,
                )
            })
            .collect();
        assert_eq!(
            ports,
            [
                ("http".to_owned(), Protocol::Tcp, 80, 8080, Some(30080)),
                // A named target port: resolved by the slices; the port is the fallback.
                ("dns".to_owned(), Protocol::Udp, 53, 53, None),
                ("sig".to_owned(), Protocol::Sctp, 3868, 3868, None),
            ]
        );
        assert_eq!(
            lb.session_affinity,
            SessionAffinity::ClientIp {
                timeout: Duration::from_secs(10_800)
            }
        );
        assert_eq!(lb.external_traffic_policy, TrafficPolicy::Local);
        assert_eq!(lb.internal_traffic_policy, TrafficPolicy::Local);
        assert_eq!(lb.health_check_node_port, Some(30100));

        // Defaults: Cluster policies, no affinity; a health-check port without Local is unused;
        // the affinity timeout from its config; the single clusterIP when clusterIPs is absent.
        let plain = ours(
            json!({"metadata": meta(), "spec": {
                "clusterIP": "198.19.0.11", "ports": [{"port": 80}],
                "sessionAffinity": "ClientIP",
                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}},
                "healthCheckNodePort": 30100}}),
            None,
        );
        assert_eq!(ips(&plain.cluster_ips), ["198.19.0.11"]);
        assert_eq!(plain.ports[0].protocol, Protocol::Tcp);
        assert_eq!(plain.ports[0].target_port, 80);
        assert_eq!(plain.external_traffic_policy, TrafficPolicy::Cluster);
        assert_eq!(plain.health_check_node_port, None);
        assert_eq!(
            plain.session_affinity,
            SessionAffinity::ClientIp {
                timeout: Duration::from_secs(60)
            }
        );
    }

    #[test]
    fn unreadable_fields_reject_the_service_naming_the_field() {
        let view = service(
            &kube_service(json!({"metadata": meta(), "spec": {
                "clusterIP": "198.19.0.10", "clusterIPs": ["198.19.0.10", "not-an-ip"],
                "ports": [{"port": 80, "protocol": "ICMP"}, {"port": 70000}],
                "loadBalancerSourceRanges": ["everyone"]}})),
            None,
        );
        let ServiceView::Invalid(errors) = view else {
            panic!("{view:?}");
        };
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        let joined = text.join("\n");
        for field in [
            "spec.clusterIPs[1]",
            "spec.ports[0].protocol",
            "spec.ports[1].port",
            "spec.loadBalancerSourceRanges[0]",
        ] {
            assert!(joined.contains(field), "{field} in {joined}");
        }
    }

    #[test]
    fn endpoint_slices_are_read_as_kube_proxy_reads_them() {
        let read = endpoint_slice(&kube_slice(json!({
            "metadata": {"namespace": "shop", "name": "web-abc",
                         "labels": {SERVICE_NAME_LABEL: "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}, {"port": 9090}],
            "endpoints": [
                {"addresses": ["198.18.1.10", "198.18.1.99"], "nodeName": "node-a", "zone": "z1",
                 "hints": {"forZones": [{"name": "z1"}], "forNodes": [{"name": "node-a"}]}},
                {"addresses": ["198.18.1.11"], "conditions": {"ready": false}},
                {"addresses": ["198.18.1.12"],
                 "conditions": {"ready": false, "serving": true, "terminating": true}},
                {"addresses": ["not-an-ip"]}
            ]
        })))
        .expect("a service's slice");
        assert_eq!(read.service, ServiceName::new("shop", "web"));
        assert_eq!(read.name, "web-abc");
        let ports: Vec<(String, u16)> = read
            .ports
            .iter()
            .map(|p| (p.name.clone(), p.port))
            .collect();
        assert_eq!(ports, [("http".to_owned(), 8080), (String::new(), 9090)]);
        let endpoints: Vec<(String, bool, bool, bool)> = read
            .endpoints
            .iter()
            .map(|e| (e.addr.to_string(), e.ready, e.serving, e.terminating))
            .collect();
        assert_eq!(
            endpoints,
            [
                // Conditions absent: ready, serving as ready, not terminating. First address only.
                ("198.18.1.10".to_owned(), true, true, false),
                ("198.18.1.11".to_owned(), false, false, false),
                ("198.18.1.12".to_owned(), false, true, true),
            ]
        );
        assert_eq!(read.endpoints[0].node.as_deref(), Some("node-a"));
        assert_eq!(read.endpoints[0].zone.as_deref(), Some("z1"));
        assert_eq!(read.endpoints[0].zone_hints, ["z1"]);
        assert_eq!(read.endpoints[0].node_hints, ["node-a"]);

        // Not a service's slice, an FQDN slice: none. A slice without ports serves nothing.
        let unlabelled = json!({"metadata": {"namespace": "shop", "name": "x"},
                                "addressType": "IPv4", "endpoints": []});
        assert!(endpoint_slice(&kube_slice(unlabelled)).is_none());
        let fqdn = json!({"metadata": {"namespace": "shop", "name": "x",
                          "labels": {SERVICE_NAME_LABEL: "web"}},
                          "addressType": "FQDN", "endpoints": []});
        assert!(endpoint_slice(&kube_slice(fqdn)).is_none());
        let portless = endpoint_slice(&kube_slice(json!({
            "metadata": {"namespace": "shop", "name": "x", "labels": {SERVICE_NAME_LABEL: "web"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["198.18.1.10"]}]})))
        .expect("a service's slice");
        assert!(portless.endpoints.is_empty());
    }

    #[test]
    fn the_node_zone_is_its_topology_label() {
        let node: Node = serde_json::from_value(json!({"metadata": {"name": "node-a",
            "labels": {ZONE_LABEL: "z1"}}}))
        .expect("a Node");
        assert_eq!(node_zone(&node).as_deref(), Some("z1"));
    }

    #[test]
    fn a_node_being_deleted_or_tainted_for_removal_is_not_eligible() {
        let node =
            |value: serde_json::Value| -> Node { serde_json::from_value(value).expect("a Node") };
        assert!(node_eligible(&node(json!({"metadata": {"name": "a"}}))));
        let other_taint = json!({"metadata": {"name": "a"},
            "spec": {"taints": [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]}});
        assert!(node_eligible(&node(other_taint)));
        let autoscaler = json!({"metadata": {"name": "a"},
            "spec": {"taints": [{"key": "x", "effect": "NoSchedule"},
                                {"key": TO_BE_DELETED_TAINT, "value": "1733100000", "effect": "NoSchedule"}]}});
        assert!(!node_eligible(&node(autoscaler)));
        let deleting =
            json!({"metadata": {"name": "a", "deletionTimestamp": "2026-12-02T06:00:00Z"}});
        assert!(!node_eligible(&node(deleting)));
    }

    #[test]
    fn a_slice_tells_when_its_change_was_triggered() {
        let slice = kube_slice(json!({"metadata": {"namespace": "shop", "name": "web-1",
            "annotations": {TRIGGER_TIME_ANNOTATION: "2026-12-02T06:00:00Z"}},
            "addressType": "IPv4", "endpoints": []}));
        let at = trigger_time(&slice).expect("a trigger time");
        let since_epoch = at
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970");
        assert_eq!(since_epoch.as_secs(), 1_796_191_200);
        let none = kube_slice(json!({"metadata": {"namespace": "shop", "name": "web-1"},
            "addressType": "IPv4", "endpoints": []}));
        assert_eq!(trigger_time(&none), None);
        let garbled = kube_slice(json!({"metadata": {"namespace": "shop", "name": "web-1",
            "annotations": {TRIGGER_TIME_ANNOTATION: "yesterday"}},
            "addressType": "IPv4", "endpoints": []}));
        assert_eq!(trigger_time(&garbled), None);
    }
}
