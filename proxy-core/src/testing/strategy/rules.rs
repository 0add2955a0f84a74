//! A naive check of the rules `validate` is to enforce (issue 2), so that the strategies and
//! generators are known valid before (and independently of) the validator.

use std::collections::{BTreeSet, HashMap};

use proptest::prelude::*;

use super::{arb_edited_pair, arb_table_with, cluster_ip, endpoint_ip, Family};
use crate::table::{Endpoint, Protocol, ServicePort, ServicePortName, ServiceTable};

/// The rules `validate` is to enforce (issue 2), checked naively so that the strategies and
/// generators are known valid before the validator lands. Returns the first broken rule.
pub(crate) fn check_planned_rules(table: &ServiceTable) -> Result<(), String> {
    let mut claims = HashMap::new();
    let mut node_ports = HashMap::new();
    let mut health_ports = HashMap::new();
    let mut port_names: HashMap<(String, String), Vec<String>> = HashMap::new();
    if table.node() == Some("") {
        return Err("empty node name".into());
    }
    for port in table.iter() {
        let name = &port.name;
        if name.namespace.is_empty() || name.name.is_empty() {
            return Err(format!("{name}: empty name"));
        }
        port_names
            .entry((name.namespace.clone(), name.name.clone()))
            .or_default()
            .push(name.port.clone());
        let families: BTreeSet<Family> =
            port.cluster_ips.iter().map(|ip| Family::of(*ip)).collect();
        if families.len() != port.cluster_ips.len() {
            return Err(format!("{name}: two cluster IPs of one family"));
        }
        for ip in port.service_ips() {
            if !families.contains(&Family::of(ip)) {
                return Err(format!("{name}: {ip} not of a cluster IP family"));
            }
            if let Some(other) = claims.insert((ip, port.port, port.protocol), name) {
                return Err(format!(
                    "{name}: {ip}:{} also claimed by {other}",
                    port.port
                ));
            }
        }
        let mut ports = vec![port.port, port.target_port];
        ports.extend(port.node_port);
        ports.extend(port.health_check_node_port);
        ports.extend(port.endpoints.iter().map(|e| e.port));
        if ports.contains(&0) {
            return Err(format!("{name}: port 0"));
        }
        if let Some(np) = port.node_port {
            if let Some(other) = node_ports.insert((np, port.protocol), name) {
                return Err(format!("{name}: node port {np} also used by {other}"));
            }
        }
        if let Some(hc) = port.health_check_node_port {
            if let Some(other) = health_ports.insert(hc, name) {
                return Err(format!(
                    "{name}: health-check port {hc} also used by {other}"
                ));
            }
        }
        if let Some(timeout) = port.session_affinity.timeout() {
            if !(1..=86_400).contains(&timeout.as_secs()) || timeout.subsec_nanos() != 0 {
                return Err(format!("{name}: affinity timeout {timeout:?}"));
            }
        }
        let mut keys = BTreeSet::new();
        for endpoint in &port.endpoints {
            if !keys.insert(endpoint.key()) {
                return Err(format!("{name}: endpoint {} twice", endpoint.key()));
            }
            if !families.contains(&Family::of(endpoint.addr)) {
                return Err(format!(
                    "{name}: endpoint {} of no cluster family",
                    endpoint.addr
                ));
            }
        }
        let addresses = port
            .service_ips()
            .chain(port.endpoints.iter().map(|e| e.addr));
        for ip in addresses {
            if ip.is_unspecified() || ip.is_multicast() {
                return Err(format!("{name}: address {ip}"));
            }
        }
    }
    for hc in health_ports.keys() {
        if Protocol::ALL
            .iter()
            .any(|protocol| node_ports.contains_key(&(*hc, *protocol)))
        {
            return Err(format!("health-check port {hc} is also a node port"));
        }
    }
    for ((namespace, name), ports) in port_names {
        if ports.len() > 1 && ports.iter().any(String::is_empty) {
            return Err(format!("{namespace}/{name}: unnamed port among several"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checker itself catches what it checks.
    #[test]
    fn planned_rules_catch_clashes() {
        let name = |svc: &str| ServicePortName::new("default", svc, "http");
        let port = |svc: &str| {
            ServicePort::new(name(svc), Protocol::Tcp, 80)
                .with_cluster_ip(cluster_ip(0, Family::V4))
                .with_node_port(30_000)
        };
        let one = ServiceTable::builder().insert(port("a")).build();
        assert_eq!(one.as_ref().map(check_planned_rules), Ok(Ok(())));
        let clash = ServiceTable::builder()
            .insert(port("a"))
            .insert(port("b"))
            .build();
        let verdict = clash.as_ref().map(check_planned_rules);
        assert!(
            matches!(&verdict, Ok(Err(e)) if e.contains("also claimed")),
            "{verdict:?}"
        );
        let v6_endpoint = port("a").with_endpoint(Endpoint::new(endpoint_ip(Family::V6, 1), 80));
        let mixed = ServiceTable::builder().insert(v6_endpoint).build();
        let verdict = mixed.as_ref().map(check_planned_rules);
        assert!(
            matches!(&verdict, Ok(Err(e)) if e.contains("no cluster family")),
            "{verdict:?}"
        );
    }

    proptest! {
        #[test]
        fn tables_obey_the_planned_rules(table in arb_table_with(20)) {
            prop_assert_eq!(check_planned_rules(&table), Ok(()));
        }

        #[test]
        fn edited_tables_obey_the_planned_rules((_, table) in arb_edited_pair()) {
            prop_assert_eq!(check_planned_rules(&table), Ok(()));
        }
    }
}
