//! Edits of a table through [`ServiceTable::edit`]: random choices, resolved against the builder's
//! current state when applied, so that a sequence of edits stays valid whatever it does.

use std::collections::BTreeSet;
use std::sync::Arc;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

use super::{
    apply_settings, arb_table, build, endpoint_conditions, endpoint_from, endpoint_spec,
    endpoints_from, port_settings, port_slot, port_spec, service_from, service_index, service_spec,
    set_conditions, EndpointConditions, EndpointSpec, Family, PortSettings, PortSpec, ServiceSpec,
    MAX_PORTS_PER_SERVICE, MAX_SERVICE_INDEX, NODES, PORT_NUMBERS, ZONES,
};
use crate::table::{Endpoint, ServicePort, ServicePortName, ServiceTable, TableBuilder};

/// One edit of a table.
#[derive(Debug, Clone)]
enum Edit {
    /// Add a service at the smallest free index.
    AddService(ServiceSpec),
    /// Change the node name.
    SetNode(Option<usize>),
    /// Change the node's zone.
    SetZone(Option<usize>),
    /// Edit the service port at this position (in name order).
    Port(Index, PortEdit),
}

/// One edit of one service port.
#[derive(Debug, Clone)]
enum PortEdit {
    Remove,
    /// Add a port to the same service, in its first free slot, with a free port number (only
    /// when every port of the service is named, so the new one makes no unnamed port ambiguous).
    AddSibling(PortSpec, Index),
    /// New settings, and a new port number among those its siblings leave free.
    Change(PortSettings, Index),
    /// Add an endpoint (or change the one with the same key).
    AddEndpoint(EndpointSpec),
    RemoveEndpoint(Index),
    ChangeEndpoint(Index, EndpointConditions),
}

fn port_edit() -> impl Strategy<Value = PortEdit> {
    prop_oneof![
        2 => Just(PortEdit::Remove),
        1 => (port_spec(), any::<Index>())
            .prop_map(|(spec, number)| PortEdit::AddSibling(spec, number)),
        2 => (port_settings(), any::<Index>())
            .prop_map(|(settings, number)| PortEdit::Change(settings, number)),
        3 => endpoint_spec().prop_map(PortEdit::AddEndpoint),
        2 => any::<Index>().prop_map(PortEdit::RemoveEndpoint),
        3 => (any::<Index>(), endpoint_conditions())
            .prop_map(|(which, conditions)| PortEdit::ChangeEndpoint(which, conditions)),
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        1 => service_spec(1..=3).prop_map(Edit::AddService),
        1 => prop::option::of(0..NODES.len()).prop_map(Edit::SetNode),
        1 => prop::option::of(0..ZONES.len()).prop_map(Edit::SetZone),
        12 => (any::<Index>(), port_edit()).prop_map(|(port, edit)| Edit::Port(port, edit)),
    ]
}

/// A builder started from a table, with the keys it holds (a `TableBuilder` cannot list them).
struct Editor {
    builder: TableBuilder,
    names: BTreeSet<ServicePortName>,
}

impl Editor {
    fn apply(&mut self, edit: &Edit) {
        match edit {
            Edit::AddService(spec) => self.add_service(spec),
            Edit::SetNode(node) => {
                self.builder.set_node(node.map(|n| NODES[n].to_owned()));
            }
            Edit::SetZone(zone) => {
                self.builder.set_zone(zone.map(|z| ZONES[z].to_owned()));
            }
            Edit::Port(pick, edit) => {
                if self.names.is_empty() {
                    return;
                }
                let at = pick.index(self.names.len());
                let Some(name) = self.names.iter().nth(at).cloned() else {
                    return;
                };
                self.edit_port(&name, edit);
            }
        }
    }

    fn add_service(&mut self, spec: &ServiceSpec) {
        let used: BTreeSet<u16> = self.names.iter().filter_map(service_index).collect();
        let Some(index) = (0..MAX_SERVICE_INDEX).find(|i| !used.contains(i)) else {
            return;
        };
        for port in service_from(index, spec) {
            self.names.insert(port.name.clone());
            self.builder.upsert(port);
        }
    }

    fn edit_port(&mut self, name: &ServicePortName, edit: &PortEdit) {
        let Some(current) = self.builder.get(name).map(Arc::clone) else {
            return;
        };
        let mut port = ServicePort::clone(&current);
        let families: Vec<Family> = port.cluster_ips.iter().map(|ip| Family::of(*ip)).collect();
        match edit {
            PortEdit::Remove => {
                self.names.remove(name);
                self.builder.remove(name);
                return;
            }
            PortEdit::AddSibling(spec, number) => {
                self.add_sibling(&port, spec, number);
                return;
            }
            PortEdit::Change(settings, number) => {
                let index = service_index(name).expect("strategy tables name services svc-<i>");
                let free = self.free_port_numbers(name);
                port.port = free[number.index(free.len())];
                apply_settings(&mut port, index, port_slot(name), settings);
            }
            PortEdit::AddEndpoint(spec) => {
                let endpoint = endpoint_from(&families, port.target_port, spec);
                port.endpoints.retain(|ep| ep.key() != endpoint.key());
                port.endpoints.push(endpoint);
                port.endpoints.sort_by_key(Endpoint::key);
            }
            PortEdit::RemoveEndpoint(which) => {
                if port.endpoints.is_empty() {
                    return;
                }
                port.endpoints.remove(which.index(port.endpoints.len()));
            }
            PortEdit::ChangeEndpoint(which, conditions) => {
                if port.endpoints.is_empty() {
                    return;
                }
                let at = which.index(port.endpoints.len());
                set_conditions(&mut port.endpoints[at], conditions);
            }
        }
        self.builder.upsert(port);
    }

    fn add_sibling(&mut self, port: &ServicePort, spec: &PortSpec, number: &Index) {
        let siblings = self.siblings(&port.name);
        if port.name.port.is_empty() || siblings.iter().any(|name| name.port.is_empty()) {
            return;
        }
        let slots: BTreeSet<u16> = siblings.iter().chain([&port.name]).map(port_slot).collect();
        let Some(slot) = (0..MAX_PORTS_PER_SERVICE).find(|slot| !slots.contains(slot)) else {
            return;
        };
        let index = service_index(&port.name).expect("strategy tables name services svc-<i>");
        let name = ServicePortName::new(
            port.name.namespace.clone(),
            port.name.name.clone(),
            format!("p{slot}"),
        );
        let mut sibling = ServicePort::new(name.clone(), port.protocol, 0);
        let free = self.free_port_numbers(&name);
        sibling.port = free[number.index(free.len())];
        sibling.cluster_ips.clone_from(&port.cluster_ips);
        apply_settings(&mut sibling, index, slot, &spec.settings);
        let families: Vec<Family> = port.cluster_ips.iter().map(|ip| Family::of(*ip)).collect();
        sibling.endpoints = endpoints_from(&families, sibling.target_port, &spec.endpoints);
        self.names.insert(name);
        self.builder.upsert(sibling);
    }

    /// The other ports of `name`'s service.
    fn siblings(&self, name: &ServicePortName) -> Vec<ServicePortName> {
        self.names
            .iter()
            .filter(|other| {
                *other != name && other.namespace == name.namespace && other.name == name.name
            })
            .cloned()
            .collect()
    }

    /// The port numbers `name` may take: those its sibling ports (same service) do not use, so
    /// that no (IP, port, protocol) is claimed twice. Never empty: a service has at most
    /// `MAX_PORTS_PER_SERVICE` (4) ports and there are 5 numbers.
    fn free_port_numbers(&self, name: &ServicePortName) -> Vec<u16> {
        let taken: BTreeSet<u16> = self
            .siblings(name)
            .iter()
            .filter_map(|other| self.builder.get(other).map(|p| p.port))
            .collect();
        PORT_NUMBERS
            .into_iter()
            .filter(|n| !taken.contains(n))
            .collect()
    }
}

/// `table` changed by one to four random edits made through [`ServiceTable::edit`]: add a service
/// (1 to 3 ports), add a port to a service (up to 4), remove a service port, change a service port's settings or port number, add,
/// remove or change an endpoint, change the node name or zone. Untouched service ports stay shared by
/// `Arc` with `table`. An edit may happen to leave a port as it was.
///
/// `table` must come from this module's strategies (its addresses follow the plan, and its
/// services are named `svc-<index>`).
pub fn arb_table_edit(table: ServiceTable) -> impl Strategy<Value = ServiceTable> {
    vec(edit(), 1..=4).prop_map(move |edits| {
        let mut editor = Editor {
            builder: table.edit(),
            names: table.ports().keys().cloned().collect(),
        };
        for edit in &edits {
            editor.apply(edit);
        }
        build(editor.builder)
    })
}

/// A table from [`arb_table`] and an edit of it from [`arb_table_edit`].
pub fn arb_edited_pair() -> impl Strategy<Value = (ServiceTable, ServiceTable)> {
    arb_table().prop_flat_map(|table| (Just(table.clone()), arb_table_edit(table)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::test_runner::{Config, TestRunner};

    /// Edits of edits stay valid (`build` would panic otherwise) and share untouched ports.
    #[test]
    fn repeated_edits_stay_valid_and_share_untouched_ports() {
        let mut runner = TestRunner::new(Config::with_cases(64));
        let chain = arb_table().prop_flat_map(|table| {
            arb_table_edit(table).prop_flat_map(|table| {
                arb_table_edit(table.clone()).prop_map(move |next| (table.clone(), next))
            })
        });
        runner
            .run(&chain, |(before, after)| {
                let shared = after
                    .ports()
                    .iter()
                    .filter(|(name, port)| {
                        before.get(name).is_some_and(|old| Arc::ptr_eq(old, port))
                    })
                    .count();
                // At most 4 edits touch at most 4 existing ports, besides the ports whose
                // hints read the node name an edit changed.
                let kept = before
                    .ports()
                    .iter()
                    .filter(|(name, old)| {
                        after
                            .get(name)
                            .is_some_and(|new| new.topology == old.topology)
                    })
                    .count();
                prop_assert!(shared + 4 >= kept, "shared {shared}, kept {kept}");
                Ok(())
            })
            .expect("edits keep tables valid and shared");
    }
}
