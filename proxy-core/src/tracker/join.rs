//! The join: a service's spec and endpoint slices become its service ports, with locality
//! from this node's name.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::{ChangeTracker, Described, EndpointSlice, ServiceName, ServicePortSpec, SliceEndpoint};
use crate::table::{normalized, Endpoint, EndpointKey, ServicePort};

impl ChangeTracker {
    /// The service's ports as its spec and slices describe them now (none when it is deleted).
    /// A rejected service keeps the ports it runs.
    pub(super) fn candidates(&self, name: &ServiceName) -> Vec<Arc<ServicePort>> {
        if self.rejected.contains_key(name) {
            return self.admitted_ports(name);
        }
        let service = match self.services.get(name) {
            None => return Vec::new(),
            Some(Described::Ports(ports)) => {
                return ports
                    .iter()
                    .map(|port| {
                        normalized(port, &self.node, &self.zone).unwrap_or_else(|| Arc::clone(port))
                    })
                    .collect()
            }
            Some(Described::Service(service)) => service,
        };
        let slices = self.slices.get(name);
        service
            .ports
            .iter()
            .map(|spec| {
                let mut port =
                    ServicePort::new(name.port(spec.name.clone()), spec.protocol, spec.port);
                port.target_port = spec.target_port;
                port.node_port = spec.node_port;
                port.cluster_ips.clone_from(&service.cluster_ips);
                port.external_ips.clone_from(&service.external_ips);
                port.load_balancer_ips
                    .clone_from(&service.load_balancer_ips);
                port.load_balancer_source_ranges
                    .clone_from(&service.load_balancer_source_ranges);
                port.session_affinity = service.session_affinity;
                port.external_traffic_policy = service.external_traffic_policy;
                port.internal_traffic_policy = service.internal_traffic_policy;
                port.scheduler = service.scheduler;
                port.health_check_node_port = service.health_check_node_port;
                port.idle_timeout = service.idle_timeout;
                port.endpoints = self.endpoints_of(spec, slices);
                let port = Arc::new(port);
                normalized(&port, &self.node, &self.zone).unwrap_or(port)
            })
            .collect()
    }

    /// The endpoints of one service port, merged over the service's slices in name order. An
    /// endpoint in two slices counts once (the ready copy if one is; else the first), as
    /// kube-proxy's endpoint slice cache merges them; a copy within one slice is kept, so that
    /// validation reports it.
    fn endpoints_of(
        &self,
        spec: &ServicePortSpec,
        slices: Option<&BTreeMap<String, EndpointSlice>>,
    ) -> Vec<Endpoint> {
        let mut endpoints: Vec<Endpoint> = Vec::new();
        let mut seen: HashMap<EndpointKey, (usize, usize)> = HashMap::new();
        for (slice_index, slice) in slices.into_iter().flat_map(BTreeMap::values).enumerate() {
            let slice_port = if slice.ports.is_empty() {
                Some(spec.target_port)
            } else {
                slice
                    .ports
                    .iter()
                    .find(|p| p.name == spec.name)
                    .map(|p| p.port)
            };
            let Some(slice_port) = slice_port else {
                continue;
            };
            for endpoint in &slice.endpoints {
                let endpoint = self.endpoint(endpoint, endpoint.port.unwrap_or(slice_port));
                match seen.get(&endpoint.key()) {
                    Some((index, from)) if *from != slice_index => {
                        if endpoint.ready && !endpoints[*index].ready {
                            endpoints[*index] = endpoint;
                        }
                    }
                    _ => {
                        seen.insert(endpoint.key(), (endpoints.len(), slice_index));
                        endpoints.push(endpoint);
                    }
                }
            }
        }
        endpoints
    }

    fn endpoint(&self, endpoint: &SliceEndpoint, port: u16) -> Endpoint {
        let on_this_node = endpoint.node.is_some() && endpoint.node == self.node;
        Endpoint {
            addr: endpoint.addr,
            port,
            node: endpoint.node.clone(),
            is_local: endpoint.local.unwrap_or(on_this_node),
            ready: endpoint.ready,
            serving: endpoint.serving,
            terminating: endpoint.terminating,
            zone: endpoint.zone.clone(),
            weight: endpoint.weight,
            zone_hints: endpoint.zone_hints.clone(),
            node_hints: endpoint.node_hints.clone(),
        }
    }
}
