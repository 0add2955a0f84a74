//! What the admitted service ports hold: virtual addresses, node ports, health-check node ports.
//! The tracker checks a changed port against this index instead of re-validating the table, so
//! a clash is found in O(addresses of the port), and the newcomer is the one blamed.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use crate::table::{Protocol, ServicePort, ServicePortName};
use crate::validate::{
    node_port_clash, port_path, used_as_health_check_port, used_as_node_port, vip_clash, FieldError,
};

use super::model::ServiceName;

/// The fields of a service port that claim an `(IP, port, protocol)`.
const VIP_FIELDS: [&str; 3] = ["cluster_ips", "external_ips", "load_balancer_ips"];

fn vip_lists(port: &ServicePort) -> [(&'static str, &[IpAddr]); 3] {
    [
        (VIP_FIELDS[0], &port.cluster_ips),
        (VIP_FIELDS[1], &port.external_ips),
        (VIP_FIELDS[2], &port.load_balancer_ips),
    ]
}

/// The claims of every admitted service port.
#[derive(Debug, Default)]
pub(super) struct Claims {
    /// `(IP, port, protocol)` to the port holding it and through which field.
    vips: HashMap<(IpAddr, u16, Protocol), (ServicePortName, &'static str)>,
    /// `(node port, protocol)` to the port holding it.
    node_ports: HashMap<(u16, Protocol), ServicePortName>,
    /// Node port numbers, whatever the protocol, to the ports holding them.
    node_port_numbers: HashMap<u16, BTreeSet<ServicePortName>>,
    /// Health-check node ports to the service holding them and how many of its ports do.
    health_checks: HashMap<u16, (ServiceName, usize)>,
}

impl Claims {
    /// The clashes of `port` with ports of *other* services (the service's own ports are
    /// checked together, by [`crate::validate`]), each as validation words it, and the services
    /// holding what it asks for (to be woken when they let go).
    pub(super) fn clashes(&self, port: &ServicePort) -> (Vec<FieldError>, BTreeSet<ServiceName>) {
        let service = ServiceName::of(&port.name);
        let foreign = |owner: &ServicePortName| ServiceName::of(owner) != service;
        let path = port_path(&port.name);
        let mut errors = Vec::new();
        let mut holders = BTreeSet::new();
        for (field, ips) in vip_lists(port) {
            for (index, ip) in ips.iter().enumerate() {
                let Some((owner, owner_field)) = self.vips.get(&(*ip, port.port, port.protocol))
                else {
                    continue;
                };
                if foreign(owner) {
                    errors.push(FieldError::new(
                        format!("{path}.{field}[{index}]"),
                        vip_clash(*ip, port.port, port.protocol, owner, owner_field),
                    ));
                    holders.insert(ServiceName::of(owner));
                }
            }
        }
        if let Some(node_port) = port.node_port {
            if let Some(owner) = self
                .node_ports
                .get(&(node_port, port.protocol))
                .filter(|o| foreign(o))
            {
                errors.push(FieldError::new(
                    format!("{path}.node_port"),
                    node_port_clash(node_port, owner),
                ));
                holders.insert(ServiceName::of(owner));
            }
            if let Some((holder, _)) = self
                .health_checks
                .get(&node_port)
                .filter(|(s, _)| *s != service)
            {
                errors.push(FieldError::new(
                    format!("{path}.node_port"),
                    used_as_health_check_port(node_port, &holder.port("")),
                ));
                holders.insert(holder.clone());
            }
        }
        if let Some(health_check) = port.health_check_node_port {
            let owners = self.node_port_numbers.get(&health_check);
            if let Some(owner) = owners.and_then(|o| o.iter().find(|o| foreign(o))) {
                errors.push(FieldError::new(
                    format!("{path}.health_check_node_port"),
                    used_as_node_port(health_check, owner),
                ));
                holders.insert(ServiceName::of(owner));
            }
            if let Some((holder, _)) = self
                .health_checks
                .get(&health_check)
                .filter(|(s, _)| *s != service)
            {
                errors.push(FieldError::new(
                    format!("{path}.health_check_node_port"),
                    used_as_health_check_port(health_check, &holder.port("")),
                ));
                holders.insert(holder.clone());
            }
        }
        (errors, holders)
    }

    /// Records what an admitted `port` holds.
    pub(super) fn claim(&mut self, port: &ServicePort) {
        for (field, ips) in vip_lists(port) {
            for ip in ips {
                self.vips
                    .entry((*ip, port.port, port.protocol))
                    .or_insert_with(|| (port.name.clone(), field));
            }
        }
        if let Some(node_port) = port.node_port {
            self.node_ports
                .entry((node_port, port.protocol))
                .or_insert_with(|| port.name.clone());
            self.node_port_numbers
                .entry(node_port)
                .or_default()
                .insert(port.name.clone());
        }
        if let Some(health_check) = port.health_check_node_port {
            let entry = self
                .health_checks
                .entry(health_check)
                .or_insert_with(|| (ServiceName::of(&port.name), 0));
            entry.1 += 1;
        }
    }

    /// Forgets what an admitted `port` held.
    pub(super) fn release(&mut self, port: &ServicePort) {
        for (_, ips) in vip_lists(port) {
            for ip in ips {
                let key = (*ip, port.port, port.protocol);
                if self.vips.get(&key).is_some_and(|(o, _)| *o == port.name) {
                    self.vips.remove(&key);
                }
            }
        }
        if let Some(node_port) = port.node_port {
            let key = (node_port, port.protocol);
            if self.node_ports.get(&key) == Some(&port.name) {
                self.node_ports.remove(&key);
            }
            if let Some(owners) = self.node_port_numbers.get_mut(&node_port) {
                owners.remove(&port.name);
                if owners.is_empty() {
                    self.node_port_numbers.remove(&node_port);
                }
            }
        }
        if let Some(health_check) = port.health_check_node_port {
            if let Some(entry) = self.health_checks.get_mut(&health_check) {
                entry.1 = entry.1.saturating_sub(1);
                if entry.1 == 0 {
                    self.health_checks.remove(&health_check);
                }
            }
        }
    }
}
