//! Validation of a service table. Every problem is reported at once, each naming its field path.
//!
//! [`validate`] runs inside [`crate::table::TableBuilder::build`], so a [`crate::ServiceTable`] that
//! exists has passed it. It checks what a backend cannot program, or would program wrongly:
//!
//! - names: empty namespace or name, or one with a `/`; an empty port name on a service with several ports;
//!   a service port inserted twice ([`crate::table::TableBuilder::insert_new`]);
//! - text: a control character (newline, NUL, ESC...) in any name or string: the namespace, name
//!   and port name, this node's name, and endpoints' node, zone and hint names. They end up in
//!   logs, rule comments and dry-run output, where a newline forges a line and ESC drives the
//!   terminal;
//! - ports: `port`, `target_port`, `node_port`, `health_check_node_port` and endpoint ports of 0;
//! - addresses: at most one cluster IP per family and none twice; no unspecified (`0.0.0.0`, `::`)
//!   or multicast address anywhere (loopback is allowed); endpoints, external and load-balancer IPs
//!   in a family the cluster IPs have (when there are cluster IPs);
//! - clashes: two service ports on the same (IP, port, protocol) over cluster, external and
//!   load-balancer IPs; two node ports on the same (port, protocol); a health-check node port equal
//!   to a node port or to another service's health-check node port;
//! - policies: a client-IP affinity timeout or an idle timeout outside 1-86,400 s (Kubernetes'
//!   limits for the first) or not in whole seconds;
//! - endpoints: the same `addr:port` twice in a service port; a weight above `i32::MAX` (IPVS
//!   stores weights as a signed 32-bit int: `net/netfilter/ipvs/ip_vs_ctl.c`, `IPVS_DEST_ATTR_WEIGHT`).
//!
//! # Field paths
//!
//! Paths name model objects by key, not by index: `services[default/web].ports[http].node_port`
//! (an unnamed port is `ports[]`), an address list entry by index
//! (`...ports[http].cluster_ips[1]`), an endpoint by its `addr:port` key
//! (`...ports[http].endpoints[198.18.1.10:8080].weight`), and a service-wide problem by service
//! (`services[default/].name`). A clash names both sides:
//! `services[default/web].ports[http].node_port: 30080 already used by services[default/api].ports[http]`.
//! Errors come in table order (service port name order), each clash reported on the later entry.
//!
//! The cost is linear in the table: one pass with hash maps for the clash checks. A 10,000-service x
//! 10-endpoint table validates in a few milliseconds (release build).

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

/// Kept at its old path: it now sits with the model, whose names it escapes.
pub use crate::model::escape_control;
use crate::model::{Endpoint, PortMap, Protocol, ServicePort, ServicePortName, SessionAffinity};

/// One problem, at one field: `services[default/web].ports[http].node_port: 99999 is outside 1-65535`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Where: a field path such as `services[default/web].ports[http].node_port`.
    pub path: String,
    /// What is wrong, with the offending value.
    pub message: String,
}

impl FieldError {
    /// A problem at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl std::error::Error for FieldError {}

/// Every problem found in a table; never empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors {
    /// The problems, in table order.
    pub errors: Vec<FieldError>,
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid service table ({} problem(s)):",
            self.errors.len()
        )?;
        for error in &self.errors {
            write!(f, "\n  {error}")?;
        }
        Ok(())
    }
}

/// The path of a service port: `services[default/web].ports[http]` (`ports[]` when unnamed).
/// Control characters in the names are escaped (`\n`, `\u{1b}`).
pub fn port_path(name: &ServicePortName) -> String {
    format!(
        "services[{}].ports[{}]",
        escape_control(&name.service()),
        escape_control(&name.port)
    )
}

/// The path of a service: `services[default/web]`, control characters escaped.
pub fn service_path(name: &ServicePortName) -> String {
    format!("services[{}]", escape_control(&name.service()))
}

/// The problem with a name or string of the table holding a control character, if it does.
/// Used for every text field of the model, and by the file reader for its own fields.
pub fn control_character_problem(value: &str) -> Option<String> {
    let c = value.chars().find(|c| c.is_control())?;
    Some(format!(
        "{value:?} contains the control character U+{:04X}",
        u32::from(c)
    ))
}

// === the clash messages, shared with the change tracker's index ===

/// `ip`:`port`/`protocol` is claimed by `owner`'s `owner_field`.
pub(crate) fn vip_clash(
    ip: IpAddr,
    port: u16,
    protocol: Protocol,
    owner: &ServicePortName,
    owner_field: &str,
) -> String {
    format!(
        "{ip}:{port}/{protocol} already used by {} ({owner_field})",
        port_path(owner)
    )
}

/// `node_port` is `owner`'s node port (same protocol).
pub(crate) fn node_port_clash(node_port: u16, owner: &ServicePortName) -> String {
    format!("{node_port} already used by {}", port_path(owner))
}

/// `number` is `owner`'s node port (any protocol).
pub(crate) fn used_as_node_port(number: u16, owner: &ServicePortName) -> String {
    format!("{number} already used as node port by {}", port_path(owner))
}

/// `number` is the health-check node port of the service `owner` belongs to.
pub(crate) fn used_as_health_check_port(number: u16, owner: &ServicePortName) -> String {
    format!(
        "{number} already used as health-check node port by {}",
        service_path(owner)
    )
}

/// The highest endpoint weight IPVS accepts (`IPVS_DEST_ATTR_WEIGHT` is a signed 32-bit int).
pub const MAX_WEIGHT: u32 = i32::MAX as u32;

/// Checks a table's service ports. Called by [`crate::table::TableBuilder::build`], after it has
/// sorted each port's endpoints by key.
///
/// `node` is this node's name; `duplicates` lists keys inserted twice through
/// [`crate::table::TableBuilder::insert_new`].
///
/// # Errors
/// Every problem found, in table order (see the [module docs](self) for the checks and paths).
pub fn validate(
    node: Option<&str>,
    ports: &PortMap,
    duplicates: &[ServicePortName],
) -> Result<(), ValidationErrors> {
    // The node name does not affect validity (locality is carried by each endpoint), but it is
    // printed.
    let mut checker = Checker::new(ports, duplicates);
    if let Some(problem) = node.and_then(control_character_problem) {
        checker.error("node".to_owned(), problem);
    }
    let mut service_start = 0;
    let all: Vec<&ServicePort> = ports.values().map(|p| &**p).collect();
    while service_start < all.len() {
        let first = &all[service_start].name;
        let service_len = all[service_start..]
            .iter()
            .take_while(|p| p.name.namespace == first.namespace && p.name.name == first.name)
            .count();
        checker.check_service(&all[service_start..service_start + service_len]);
        service_start += service_len;
    }
    checker.finish()
}

/// What is valid but probably not meant, in one service port: each a [`FieldError`] naming
/// the field, for the operator to see (the change tracker logs them when it admits a new or
/// changed port; `svcproxy --dry-run` prints them). Never a reason to reject a table.
///
/// - every endpoint has weight 0: weight 0 means "no new connections" on every backend
///   ([`crate::select`]), so the port rejects every new connection while open ones drain.
///
/// ```
/// use proxy_core::table::*;
/// use proxy_core::validate::warnings;
///
/// let mut drained = Endpoint::new("198.18.1.10".parse().unwrap(), 8080);
/// drained.weight = 0;
/// let web = ServicePort::new(ServicePortName::new("default", "web", "http"), Protocol::Tcp, 80)
///     .with_endpoint(drained);
/// assert_eq!(
///     warnings(&web)[0].to_string(),
///     "services[default/web].ports[http].endpoints: every endpoint has weight 0: \
///      new connections are rejected (open ones drain)"
/// );
/// ```
pub fn warnings(port: &ServicePort) -> Vec<FieldError> {
    let mut warnings = Vec::new();
    if !port.endpoints.is_empty() && port.endpoints.iter().all(|e| e.weight == 0) {
        warnings.push(FieldError::new(
            format!("{}.endpoints", port_path(&port.name)),
            "every endpoint has weight 0: new connections are rejected (open ones drain)",
        ));
    }
    warnings
}

/// Who holds a virtual address: a service port, and through which field.
#[derive(Clone, Copy)]
struct Claim<'a> {
    owner: &'a ServicePortName,
    field: &'static str,
}

/// The state of one validation pass.
struct Checker<'a> {
    errors: Vec<FieldError>,
    /// Duplicate keys not yet reported, with how many extra copies were inserted.
    duplicates: BTreeMap<&'a ServicePortName, usize>,
    /// The first service port (in table order) holding each node port, per protocol.
    node_ports: HashMap<(u16, Protocol), &'a ServicePortName>,
    /// The first service port holding each node port number, whatever the protocol.
    node_port_numbers: HashMap<u16, &'a ServicePortName>,
    /// The first service (by one of its ports) using each health-check node port.
    health_check_ports: HashMap<u16, &'a ServicePortName>,
    /// Virtual addresses claimed so far: (IP, port, protocol) to the first claim.
    vips: HashMap<(IpAddr, u16, Protocol), Claim<'a>>,
}

impl<'a> Checker<'a> {
    /// Collects the node ports and health-check ports of the whole table first, so that a clash is
    /// found whichever entry comes first, and reported on the later one.
    fn new(ports: &'a PortMap, duplicates: &'a [ServicePortName]) -> Self {
        let mut node_ports = HashMap::new();
        let mut node_port_numbers = HashMap::new();
        let mut health_check_ports = HashMap::new();
        let mut vip_count = 0;
        for port in ports.values() {
            if let Some(node_port) = port.node_port {
                node_ports
                    .entry((node_port, port.protocol))
                    .or_insert(&port.name);
                node_port_numbers.entry(node_port).or_insert(&port.name);
            }
            if let Some(health_check) = port.health_check_node_port {
                health_check_ports.entry(health_check).or_insert(&port.name);
            }
            vip_count += port.cluster_ips.len() + port.external_ips.len();
            vip_count += port.load_balancer_ips.len();
        }
        let mut pending = BTreeMap::new();
        for name in duplicates {
            *pending.entry(name).or_insert(0) += 1;
        }
        Self {
            errors: Vec::new(),
            duplicates: pending,
            node_ports,
            node_port_numbers,
            health_check_ports,
            vips: HashMap::with_capacity(vip_count),
        }
    }

    fn finish(mut self) -> Result<(), ValidationErrors> {
        // Duplicates of keys that were later removed from the builder.
        for (name, extra) in std::mem::take(&mut self.duplicates) {
            self.errors
                .push(FieldError::new(port_path(name), duplicate_message(extra)));
        }
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors {
                errors: self.errors,
            })
        }
    }

    fn error(&mut self, path: String, message: String) {
        self.errors.push(FieldError::new(path, message));
    }

    /// Checks the ports of one service (`namespace/name`), given in name order.
    fn check_service(&mut self, service: &[&'a ServicePort]) {
        let Some(first) = service.first() else {
            return;
        };
        if first.name.namespace.is_empty() {
            self.error(
                format!("{}.namespace", service_path(&first.name)),
                "must not be empty".to_owned(),
            );
        }
        if first.name.name.is_empty() {
            self.error(
                format!("{}.name", service_path(&first.name)),
                "must not be empty".to_owned(),
            );
        }
        // Table files write services as `namespace/name`: a slash in either part is ambiguous.
        for (field, value) in [
            ("namespace", &first.name.namespace),
            ("name", &first.name.name),
        ] {
            if value.contains('/') {
                self.error(
                    format!("{}.{field}", service_path(&first.name)),
                    format!("{value:?} must not contain '/'"),
                );
            }
            if let Some(problem) = control_character_problem(value) {
                self.error(format!("{}.{field}", service_path(&first.name)), problem);
            }
        }
        let mut reported_health_checks: Vec<u16> = Vec::new();
        for port in service {
            if port.name.port.is_empty() && service.len() > 1 {
                self.error(
                    format!("{}.name", port_path(&port.name)),
                    format!("must not be empty: the service has {} ports", service.len()),
                );
            }
            if let Some(problem) = control_character_problem(&port.name.port) {
                self.error(format!("{}.name", port_path(&port.name)), problem);
            }
            if let Some(extra) = self.duplicates.remove(&port.name) {
                self.error(port_path(&port.name), duplicate_message(extra));
            }
            self.check_port_numbers(port);
            if let Some(health_check) = port.health_check_node_port {
                if !reported_health_checks.contains(&health_check) {
                    reported_health_checks.push(health_check);
                    self.check_health_check_port(port, health_check);
                }
            }
            self.check_affinity(port);
            self.check_idle_timeout(port);
            self.check_cluster_ips(port);
            self.check_service_ips(port, "external_ips", &port.external_ips);
            self.check_service_ips(port, "load_balancer_ips", &port.load_balancer_ips);
            self.check_endpoints(port);
        }
    }

    /// Zero ports and node-port clashes.
    fn check_port_numbers(&mut self, port: &'a ServicePort) {
        let fields = [
            ("port", Some(port.port)),
            ("target_port", Some(port.target_port)),
            ("node_port", port.node_port),
            ("health_check_node_port", port.health_check_node_port),
        ];
        for (field, value) in fields {
            if value == Some(0) {
                self.error(
                    format!("{}.{field}", port_path(&port.name)),
                    "0 is outside 1-65535".to_owned(),
                );
            }
        }
        if let Some(node_port) = port.node_port {
            let owner = self.node_ports.get(&(node_port, port.protocol)).copied();
            if let Some(owner) = owner.filter(|owner| *owner != &port.name) {
                self.error(
                    format!("{}.node_port", port_path(&port.name)),
                    node_port_clash(node_port, owner),
                );
            }
        }
    }

    /// A health-check node port must be no node port, and no other service's health-check port.
    fn check_health_check_port(&mut self, port: &'a ServicePort, health_check: u16) {
        let path = format!("{}.health_check_node_port", port_path(&port.name));
        if let Some(owner) = self.node_port_numbers.get(&health_check).copied() {
            self.error(path.clone(), used_as_node_port(health_check, owner));
        }
        let owner = self.health_check_ports.get(&health_check).copied();
        if let Some(owner) = owner.filter(|owner| !same_service(owner, &port.name)) {
            self.error(path, used_as_health_check_port(health_check, owner));
        }
    }

    fn check_affinity(&mut self, port: &ServicePort) {
        let SessionAffinity::ClientIp { timeout } = port.session_affinity else {
            return;
        };
        // Every backend counts affinity in whole seconds (`-m recent --seconds`, IPVS
        // persistence timeout), as does Kubernetes' `timeoutSeconds`.
        if let Some(problem) = whole_seconds_problem(timeout, SessionAffinity::MAX_TIMEOUT) {
            self.error(
                format!(
                    "{}.session_affinity.client_ip.timeout_seconds",
                    port_path(&port.name)
                ),
                problem,
            );
        }
    }

    /// The idle timeout, when set: whole seconds, 1 s to a day (the table file's unit).
    fn check_idle_timeout(&mut self, port: &ServicePort) {
        let Some(timeout) = port.idle_timeout else {
            return;
        };
        if let Some(problem) = whole_seconds_problem(timeout, ServicePort::MAX_IDLE_TIMEOUT) {
            self.error(
                format!("{}.idle_timeout_seconds", port_path(&port.name)),
                problem,
            );
        }
    }

    /// At most one cluster IP per family, none twice, none unspecified or multicast; each claims
    /// (IP, port, protocol).
    fn check_cluster_ips(&mut self, port: &'a ServicePort) {
        for (index, ip) in port.cluster_ips.iter().enumerate() {
            let earlier = &port.cluster_ips[..index];
            let path = || format!("{}.cluster_ips[{index}]", port_path(&port.name));
            if let Some(problem) = unusable_address(*ip) {
                self.error(path(), format!("{ip} is {problem}"));
            } else if earlier.contains(ip) {
                self.error(path(), format!("{ip} is listed twice"));
            } else if let Some(other) = earlier.iter().find(|e| e.is_ipv4() == ip.is_ipv4()) {
                self.error(
                    path(),
                    format!(
                        "second {} cluster IP ({other} and {ip}): at most one per family",
                        family(*ip)
                    ),
                );
            } else {
                self.claim(port, "cluster_ips", index, *ip);
            }
        }
    }

    /// External or load-balancer IPs: usable, in a cluster-IP family, and unclaimed.
    fn check_service_ips(&mut self, port: &'a ServicePort, field: &'static str, ips: &[IpAddr]) {
        for (index, ip) in ips.iter().enumerate() {
            let path = || format!("{}.{field}[{index}]", port_path(&port.name));
            if let Some(problem) = unusable_address(*ip) {
                self.error(path(), format!("{ip} is {problem}"));
            } else if let Some(families) = cluster_families(port).filter(|f| !f.has(*ip)) {
                self.error(
                    path(),
                    format!(
                        "{ip} is {}, but the cluster IPs are {families}",
                        family(*ip)
                    ),
                );
            } else {
                self.claim(port, field, index, *ip);
            }
        }
    }

    /// Records that `port` answers on `ip`, reporting a clash with an earlier claim.
    fn claim(&mut self, port: &'a ServicePort, field: &'static str, index: usize, ip: IpAddr) {
        let claim = Claim {
            owner: &port.name,
            field,
        };
        let earlier = match self.vips.entry((ip, port.port, port.protocol)) {
            Entry::Vacant(vacant) => {
                vacant.insert(claim);
                return;
            }
            // Keep the first claim: later clashes name it too.
            Entry::Occupied(occupied) => *occupied.get(),
        };
        let path = format!("{}.{field}[{index}]", port_path(&port.name));
        let message = if earlier.owner == &port.name {
            format!("{ip} is listed twice (also in {})", earlier.field)
        } else {
            vip_clash(ip, port.port, port.protocol, earlier.owner, earlier.field)
        };
        self.error(path, message);
    }

    /// Each endpoint: usable address in a cluster-IP family, non-zero port, IPVS-sized weight,
    /// listed once. Endpoints are sorted by key, so copies are neighbours.
    fn check_endpoints(&mut self, port: &ServicePort) {
        let families = cluster_families(port);
        let mut previous: Option<&Endpoint> = None;
        let mut previous_was_copy = false;
        for endpoint in &port.endpoints {
            let is_copy = previous.is_some_and(|p| p.key() == endpoint.key());
            let run_reported = previous_was_copy;
            previous = Some(endpoint);
            previous_was_copy = is_copy;
            let cheap_ok = endpoint.port != 0
                && endpoint.weight <= MAX_WEIGHT
                && !is_copy
                && families.is_none_or(|f| f.has(endpoint.addr))
                && unusable_address(endpoint.addr).is_none()
                && !has_control_characters(endpoint);
            if cheap_ok {
                continue;
            }
            let path = format!("{}.endpoints[{}]", port_path(&port.name), endpoint.key());
            if is_copy {
                // Report a run of copies once, at its second entry.
                if !run_reported {
                    self.error(path, "listed more than once".to_owned());
                }
                continue;
            }
            if let Some(problem) = unusable_address(endpoint.addr) {
                self.error(
                    format!("{path}.ip"),
                    format!("{} is {problem}", endpoint.addr),
                );
            } else if let Some(families) = families.filter(|f| !f.has(endpoint.addr)) {
                self.error(
                    format!("{path}.ip"),
                    format!(
                        "{} is {}, but the cluster IPs are {families}",
                        endpoint.addr,
                        family(endpoint.addr)
                    ),
                );
            }
            if endpoint.port == 0 {
                self.error(format!("{path}.port"), "0 is outside 1-65535".to_owned());
            }
            self.check_endpoint_text(&path, endpoint);
            if endpoint.weight > MAX_WEIGHT {
                self.error(
                    format!("{path}.weight"),
                    format!(
                        "{} is above {MAX_WEIGHT}, the most IPVS accepts",
                        endpoint.weight
                    ),
                );
            }
        }
    }
}

impl Checker<'_> {
    /// Control characters in an endpoint's node, zone and hint names.
    fn check_endpoint_text(&mut self, path: &str, endpoint: &Endpoint) {
        let single = [("node", &endpoint.node), ("zone", &endpoint.zone)];
        for (field, value) in single {
            if let Some(problem) = value.as_deref().and_then(control_character_problem) {
                self.error(format!("{path}.{field}"), problem);
            }
        }
        let lists = [
            ("hints.zones", &endpoint.zone_hints),
            ("hints.nodes", &endpoint.node_hints),
        ];
        for (field, values) in lists {
            for (index, value) in values.iter().enumerate() {
                if let Some(problem) = control_character_problem(value) {
                    self.error(format!("{path}.{field}[{index}]"), problem);
                }
            }
        }
    }
}

/// Whether any string of the endpoint holds a control character.
fn has_control_characters(endpoint: &Endpoint) -> bool {
    let has = |text: &str| text.chars().any(char::is_control);
    endpoint.node.as_deref().is_some_and(has)
        || endpoint.zone.as_deref().is_some_and(has)
        || endpoint.zone_hints.iter().any(|t| has(t))
        || endpoint.node_hints.iter().any(|t| has(t))
}

/// Why `timeout` is not a whole number of seconds from 1 to `max`, if it is not.
fn whole_seconds_problem(timeout: Duration, max: Duration) -> Option<String> {
    if timeout < Duration::from_secs(1) || timeout > max {
        let shown = if timeout.subsec_nanos() == 0 {
            timeout.as_secs().to_string()
        } else {
            format!("{}", timeout.as_secs_f64())
        };
        Some(format!("{shown} is outside 1-{}", max.as_secs()))
    } else if timeout.subsec_nanos() != 0 {
        Some(format!(
            "{} is not a whole number of seconds",
            timeout.as_secs_f64()
        ))
    } else {
        None
    }
}

fn duplicate_message(extra: usize) -> String {
    if extra == 1 {
        "defined twice".to_owned()
    } else {
        format!("defined {} times", extra + 1)
    }
}

fn same_service(a: &ServicePortName, b: &ServicePortName) -> bool {
    a.namespace == b.namespace && a.name == b.name
}

/// Why an address cannot be a service or endpoint address, if it cannot.
fn unusable_address(ip: IpAddr) -> Option<&'static str> {
    if ip.is_unspecified() {
        Some("the unspecified address")
    } else if ip.is_multicast() {
        Some("a multicast address")
    } else {
        None
    }
}

fn family(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}

/// The address families of a port's cluster IPs.
#[derive(Clone, Copy)]
struct Families {
    ipv4: bool,
    ipv6: bool,
}

impl Families {
    fn has(self, ip: IpAddr) -> bool {
        if ip.is_ipv4() {
            self.ipv4
        } else {
            self.ipv6
        }
    }
}

impl fmt::Display for Families {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.ipv4, self.ipv6) {
            (true, false) => f.write_str("IPv4 only"),
            (false, true) => f.write_str("IPv6 only"),
            _ => f.write_str("IPv4 and IPv6"),
        }
    }
}

/// The families of a port's cluster IPs, or `None` when it has none (anything goes).
fn cluster_families(port: &ServicePort) -> Option<Families> {
    if port.cluster_ips.is_empty() {
        return None;
    }
    Some(Families {
        ipv4: port.cluster_ips.iter().any(IpAddr::is_ipv4),
        ipv6: port.cluster_ips.iter().any(IpAddr::is_ipv6),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{ServiceTable, TableBuilder, TrafficPolicy};

    /// A TCP service port `ns/name:port_name` on `port`, no addresses.
    fn port(service: &str, port_name: &str, port: u16) -> ServicePort {
        let (namespace, name) = service.split_once('/').expect("tests write ns/name");
        ServicePort::new(
            ServicePortName::new(namespace, name, port_name),
            Protocol::Tcp,
            port,
        )
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("tests write valid IPs")
    }

    fn endpoint(addr: &str, port: u16) -> Endpoint {
        Endpoint::new(ip(addr), port)
    }

    /// The problems `build` reports, as `path: message` lines (empty when the table is valid).
    fn problems(builder: TableBuilder) -> Vec<String> {
        match builder.build() {
            Ok(_) => Vec::new(),
            Err(errors) => errors.errors.iter().map(ToString::to_string).collect(),
        }
    }

    fn problems_of(ports: impl IntoIterator<Item = ServicePort>) -> Vec<String> {
        let mut builder = ServiceTable::builder().node("node-a");
        for port in ports {
            builder = builder.insert(port);
        }
        problems(builder)
    }

    #[test]
    fn full_valid_table_has_no_problems() {
        let mut web = port("default/web", "http", 80)
            .with_cluster_ip(ip("198.19.0.10"))
            .with_cluster_ip(ip("2001:db8::10"))
            .with_node_port(30080)
            .with_endpoint(endpoint("198.18.1.10", 8080))
            .with_endpoint(endpoint("2001:db8:1::10", 8080));
        web.external_ips = vec![ip("198.18.200.1")];
        web.load_balancer_ips = vec![ip("198.18.201.1"), ip("2001:db8:2::1")];
        web.session_affinity = SessionAffinity::ClientIp {
            timeout: SessionAffinity::DEFAULT_TIMEOUT,
        };
        web.external_traffic_policy = TrafficPolicy::Local;
        web.health_check_node_port = Some(30100);
        let mut https = web.clone();
        https.name.port = "https".to_owned();
        https.port = 443;
        https.node_port = Some(30443);
        let api = port("default/api", "", 80)
            .with_cluster_ip(ip("198.19.0.11"))
            .with_node_port(30080 + 1);
        assert_eq!(problems_of([web, https, api]), Vec::<String>::new());
    }

    #[test]
    fn loopback_addresses_are_allowed() {
        let mut demo = port("default/demo", "http", 8080)
            .with_cluster_ip(ip("127.0.0.10"))
            .with_endpoint(endpoint("127.0.0.1", 9001));
        demo.external_ips = vec![ip("127.0.0.11")];
        assert_eq!(problems_of([demo]), Vec::<String>::new());
    }

    #[test]
    fn empty_namespace_is_reported() {
        let bad = ServicePort::new(ServicePortName::new("", "web", "http"), Protocol::Tcp, 80);
        assert_eq!(
            problems_of([bad]),
            ["services[/web].namespace: must not be empty"]
        );
    }

    #[test]
    fn empty_service_name_is_reported_once_per_service() {
        let mut a = port("default/x", "a", 80);
        let mut b = port("default/x", "b", 81);
        a.name.name.clear();
        b.name.name.clear();
        assert_eq!(
            problems_of([a, b]),
            ["services[default/].name: must not be empty"]
        );
    }

    #[test]
    fn slash_in_namespace_or_name_is_reported() {
        let bad = ServicePort::new(
            ServicePortName::new("a/b", "c/d", "http"),
            Protocol::Tcp,
            80,
        );
        assert_eq!(
            problems_of([bad]),
            [
                "services[a/b/c/d].namespace: \"a/b\" must not contain '/'",
                "services[a/b/c/d].name: \"c/d\" must not contain '/'",
            ]
        );
    }

    #[test]
    fn empty_port_name_in_multi_port_service_is_reported() {
        assert_eq!(
            problems_of([
                port("default/web", "", 80),
                port("default/web", "https", 443)
            ]),
            ["services[default/web].ports[].name: must not be empty: the service has 2 ports"]
        );
    }

    #[test]
    fn empty_port_name_in_single_port_service_is_allowed() {
        assert_eq!(
            problems_of([port("default/web", "", 80), port("default/api", "", 80)]),
            Vec::<String>::new()
        );
    }

    #[test]
    fn zero_ports_are_reported_per_field() {
        let mut bad = port("default/web", "http", 0).with_node_port(0);
        bad.target_port = 0;
        bad.health_check_node_port = Some(0);
        assert_eq!(
            problems_of([bad]),
            [
                "services[default/web].ports[http].port: 0 is outside 1-65535",
                "services[default/web].ports[http].target_port: 0 is outside 1-65535",
                "services[default/web].ports[http].node_port: 0 is outside 1-65535",
                "services[default/web].ports[http].health_check_node_port: 0 is outside 1-65535",
                // Port 0 is also a node port, so the health check clashes with it.
                "services[default/web].ports[http].health_check_node_port: 0 already used as node \
                 port by services[default/web].ports[http]",
            ]
        );
    }

    #[test]
    fn zero_endpoint_port_is_reported() {
        let bad = port("default/web", "http", 80).with_endpoint(endpoint("198.18.1.10", 0));
        assert_eq!(
            problems_of([bad]),
            ["services[default/web].ports[http].endpoints[198.18.1.10:0].port: 0 is outside 1-65535"]
        );
    }

    #[test]
    fn duplicate_key_is_reported() {
        let mut builder = ServiceTable::builder();
        builder.insert_new(port("default/web", "http", 80));
        builder.insert_new(port("default/web", "http", 81));
        builder.insert_new(port("default/web", "http", 82));
        builder.insert_new(port("default/api", "http", 80));
        assert_eq!(
            problems(builder),
            ["services[default/web].ports[http]: defined 3 times"]
        );
    }

    #[test]
    fn duplicate_key_is_reported_even_after_removal() {
        let mut builder = ServiceTable::builder();
        builder.insert_new(port("default/web", "http", 80));
        builder.insert_new(port("default/web", "http", 81));
        builder.remove(&ServicePortName::new("default", "web", "http"));
        assert_eq!(
            problems(builder),
            ["services[default/web].ports[http]: defined twice"]
        );
    }

    #[test]
    fn remove_service_takes_every_port_of_that_service_only() {
        let table = ServiceTable::builder()
            .insert(port("default/web", "http", 80))
            .insert(port("default/web", "https", 443))
            .insert(port("default/webx", "http", 80))
            .build()
            .expect("valid");
        let mut builder = table.edit();
        let removed: Vec<String> = builder
            .remove_service("default", "web")
            .iter()
            .map(|p| p.name.to_string())
            .collect();
        assert_eq!(removed, ["default/web:http", "default/web:https"]);
        let left = builder.build().expect("valid");
        assert_eq!(left.len(), 1);
    }

    #[test]
    fn second_cluster_ip_of_a_family_is_reported() {
        let bad = port("default/web", "http", 80)
            .with_cluster_ip(ip("198.19.0.10"))
            .with_cluster_ip(ip("198.19.0.11"));
        assert_eq!(
            problems_of([bad]),
            [
                "services[default/web].ports[http].cluster_ips[1]: second IPv4 cluster IP \
              (198.19.0.10 and 198.19.0.11): at most one per family"
            ]
        );
    }

    #[test]
    fn repeated_cluster_ip_is_reported() {
        let bad = port("default/web", "http", 80)
            .with_cluster_ip(ip("2001:db8::10"))
            .with_cluster_ip(ip("2001:db8::10"));
        assert_eq!(
            problems_of([bad]),
            ["services[default/web].ports[http].cluster_ips[1]: 2001:db8::10 is listed twice"]
        );
    }

    #[test]
    fn unspecified_addresses_are_reported_everywhere() {
        let mut bad = port("default/web", "http", 80)
            .with_cluster_ip(ip("0.0.0.0"))
            .with_endpoint(endpoint("0.0.0.0", 8080));
        bad.external_ips = vec![ip("::")];
        bad.load_balancer_ips = vec![ip("0.0.0.0")];
        assert_eq!(
            problems_of([bad]),
            [
                "services[default/web].ports[http].cluster_ips[0]: 0.0.0.0 is the unspecified address",
                "services[default/web].ports[http].external_ips[0]: :: is the unspecified address",
                "services[default/web].ports[http].load_balancer_ips[0]: 0.0.0.0 is the unspecified address",
                "services[default/web].ports[http].endpoints[0.0.0.0:8080].ip: 0.0.0.0 is the \
                 unspecified address",
            ]
        );
    }

    #[test]
    fn multicast_addresses_are_reported_everywhere() {
        let mut bad = port("default/web", "http", 80)
            .with_cluster_ip(ip("ff02::1"))
            .with_endpoint(endpoint("ff02::2", 8080));
        bad.external_ips = vec![ip("ff05::1")];
        bad.load_balancer_ips = vec![ip("ff0e::1")];
        assert_eq!(
            problems_of([bad]),
            [
                "services[default/web].ports[http].cluster_ips[0]: ff02::1 is a multicast address",
                "services[default/web].ports[http].external_ips[0]: ff05::1 is a multicast address",
                "services[default/web].ports[http].load_balancer_ips[0]: ff0e::1 is a multicast address",
                "services[default/web].ports[http].endpoints[[ff02::2]:8080].ip: ff02::2 is a \
                 multicast address",
            ]
        );
        let v4 = port("default/api", "http", 80).with_cluster_ip(ip("224.0.0.1"));
        assert_eq!(
            problems_of([v4]),
            ["services[default/api].ports[http].cluster_ips[0]: 224.0.0.1 is a multicast address"]
        );
    }

    #[test]
    fn endpoint_outside_cluster_ip_families_is_reported() {
        let bad = port("default/web", "http", 80)
            .with_cluster_ip(ip("198.19.0.10"))
            .with_endpoint(endpoint("198.18.1.10", 8080))
            .with_endpoint(endpoint("2001:db8::1", 8080));
        assert_eq!(
            problems_of([bad]),
            [
                "services[default/web].ports[http].endpoints[[2001:db8::1]:8080].ip: 2001:db8::1 \
              is IPv6, but the cluster IPs are IPv4 only"
            ]
        );
    }

    #[test]
    fn endpoints_of_any_family_are_allowed_without_cluster_ips() {
        let headless = port("default/web", "http", 80)
            .with_node_port(30080)
            .with_endpoint(endpoint("198.18.1.10", 8080))
            .with_endpoint(endpoint("2001:db8::1", 8080));
        assert_eq!(problems_of([headless]), Vec::<String>::new());
    }

    #[test]
    fn external_and_load_balancer_ips_outside_cluster_ip_families_are_reported() {
        let mut bad = port("default/web", "http", 80).with_cluster_ip(ip("2001:db8::10"));
        bad.external_ips = vec![ip("198.18.200.1")];
        bad.load_balancer_ips = vec![ip("2001:db8::20"), ip("198.18.201.1")];
        assert_eq!(
            problems_of([bad]),
            [
                "services[default/web].ports[http].external_ips[0]: 198.18.200.1 is IPv4, but the \
                 cluster IPs are IPv6 only",
                "services[default/web].ports[http].load_balancer_ips[1]: 198.18.201.1 is IPv4, but \
                 the cluster IPs are IPv6 only",
            ]
        );
    }

    #[test]
    fn two_ports_on_one_ip_port_protocol_are_reported_naming_both() {
        let api = port("default/api", "http", 80).with_cluster_ip(ip("198.19.0.10"));
        let web = port("default/web", "http", 80).with_cluster_ip(ip("198.19.0.10"));
        assert_eq!(
            problems_of([web, api]),
            ["services[default/web].ports[http].cluster_ips[0]: 198.19.0.10:80/tcp already used \
              by services[default/api].ports[http] (cluster_ips)"]
        );
    }

    #[test]
    fn one_ip_port_on_two_protocols_is_allowed() {
        let tcp = port("default/dns", "tcp", 53).with_cluster_ip(ip("198.19.0.10"));
        let mut udp = port("default/dns", "udp", 53).with_cluster_ip(ip("198.19.0.10"));
        udp.protocol = Protocol::Udp;
        assert_eq!(problems_of([tcp, udp]), Vec::<String>::new());
    }

    #[test]
    fn external_ip_on_another_ports_cluster_ip_is_reported() {
        let api = port("default/api", "http", 80).with_cluster_ip(ip("198.19.0.10"));
        let mut web = port("default/web", "http", 80);
        web.load_balancer_ips = vec![ip("198.19.0.10")];
        assert_eq!(
            problems_of([api, web]),
            ["services[default/web].ports[http].load_balancer_ips[0]: 198.19.0.10:80/tcp already \
              used by services[default/api].ports[http] (cluster_ips)"]
        );
    }

    #[test]
    fn one_ip_twice_on_one_port_is_reported() {
        let mut web = port("default/web", "http", 80).with_cluster_ip(ip("198.19.0.10"));
        web.external_ips = vec![ip("198.18.200.1"), ip("198.19.0.10"), ip("198.18.200.1")];
        assert_eq!(
            problems_of([web]),
            [
                "services[default/web].ports[http].external_ips[1]: 198.19.0.10 is listed twice \
                 (also in cluster_ips)",
                "services[default/web].ports[http].external_ips[2]: 198.18.200.1 is listed twice \
                 (also in external_ips)",
            ]
        );
    }

    #[test]
    fn node_port_clash_is_reported_naming_both() {
        let api = port("default/api", "http", 80).with_node_port(30080);
        let web = port("default/web", "http", 8080).with_node_port(30080);
        let other = port("other/web", "http", 8080).with_node_port(30080);
        assert_eq!(
            problems_of([web, api, other]),
            [
                "services[default/web].ports[http].node_port: 30080 already used by \
                 services[default/api].ports[http]",
                "services[other/web].ports[http].node_port: 30080 already used by \
                 services[default/api].ports[http]",
            ]
        );
    }

    #[test]
    fn one_node_port_on_two_protocols_is_allowed() {
        let tcp = port("default/dns", "tcp", 53).with_node_port(30053);
        let mut udp = port("default/dns", "udp", 53).with_node_port(30053);
        udp.protocol = Protocol::Udp;
        assert_eq!(problems_of([tcp, udp]), Vec::<String>::new());
    }

    #[test]
    fn health_check_port_on_a_node_port_is_reported() {
        let mut web = port("default/web", "http", 80);
        web.health_check_node_port = Some(30080);
        let mut api = port("default/zzz", "dns", 53).with_node_port(30080);
        api.protocol = Protocol::Udp;
        assert_eq!(
            problems_of([web, api]),
            [
                "services[default/web].ports[http].health_check_node_port: 30080 already used as \
              node port by services[default/zzz].ports[dns]"
            ]
        );
    }

    #[test]
    fn health_check_port_of_two_services_is_reported() {
        let mut api = port("default/api", "http", 80);
        api.health_check_node_port = Some(30100);
        let mut web = port("default/web", "http", 80);
        web.health_check_node_port = Some(30100);
        assert_eq!(
            problems_of([api, web]),
            [
                "services[default/web].ports[http].health_check_node_port: 30100 already used as \
              health-check node port by services[default/api]"
            ]
        );
    }

    #[test]
    fn health_check_port_shared_by_one_services_ports_is_allowed() {
        let mut http = port("default/web", "http", 80);
        http.health_check_node_port = Some(30100);
        let mut https = port("default/web", "https", 443);
        https.health_check_node_port = Some(30100);
        assert_eq!(problems_of([http, https]), Vec::<String>::new());
    }

    #[test]
    fn affinity_timeout_outside_one_second_to_one_day_or_fractional_is_reported() {
        let with_timeout = |name: &str, timeout: Duration| {
            let mut p = port(name, "http", 80);
            p.session_affinity = SessionAffinity::ClientIp { timeout };
            p
        };
        assert_eq!(
            problems_of([
                with_timeout("default/a", Duration::ZERO),
                with_timeout("default/b", Duration::from_millis(500)),
                with_timeout("default/c", Duration::from_secs(1)),
                with_timeout("default/d", Duration::from_secs(86_400)),
                with_timeout("default/e", Duration::from_secs(86_401)),
                with_timeout("default/f", Duration::from_millis(1_500)),
            ]),
            [
                "services[default/a].ports[http].session_affinity.client_ip.timeout_seconds: 0 is \
                 outside 1-86400",
                "services[default/b].ports[http].session_affinity.client_ip.timeout_seconds: 0.5 \
                 is outside 1-86400",
                "services[default/e].ports[http].session_affinity.client_ip.timeout_seconds: 86401 \
                 is outside 1-86400",
                "services[default/f].ports[http].session_affinity.client_ip.timeout_seconds: 1.5 \
                 is not a whole number of seconds",
            ]
        );
    }

    #[test]
    fn idle_timeout_outside_one_second_to_one_day_or_fractional_is_reported() {
        let with_idle =
            |name: &str, timeout: Duration| port(name, "http", 80).with_idle_timeout(timeout);
        assert_eq!(
            problems_of([
                with_idle("default/a", Duration::ZERO),
                with_idle("default/b", Duration::from_millis(500)),
                with_idle("default/c", Duration::from_secs(1)),
                with_idle("default/d", Duration::from_secs(86_400)),
                with_idle("default/e", Duration::from_secs(86_401)),
                with_idle("default/f", Duration::from_millis(1_500)),
                port("default/g", "http", 80),
            ]),
            [
                "services[default/a].ports[http].idle_timeout_seconds: 0 is outside 1-86400",
                "services[default/b].ports[http].idle_timeout_seconds: 0.5 is outside 1-86400",
                "services[default/e].ports[http].idle_timeout_seconds: 86401 is outside 1-86400",
                "services[default/f].ports[http].idle_timeout_seconds: 1.5 is not a whole number \
                 of seconds",
            ]
        );
    }

    #[test]
    fn every_endpoint_of_weight_zero_is_a_warning_not_an_error() {
        let weighted = |addr: &str, weight: u32| {
            let mut e = endpoint(addr, 8080);
            e.weight = weight;
            e
        };
        let drained = port("default/web", "http", 80)
            .with_endpoint(weighted("198.18.1.10", 0))
            .with_endpoint(weighted("198.18.1.11", 0));
        let shown: Vec<String> = warnings(&drained).iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "services[default/web].ports[http].endpoints: every endpoint has weight 0: new \
              connections are rejected (open ones drain)"
            ]
        );
        assert_eq!(problems_of([drained]), Vec::<String>::new());

        let one_left = port("default/web", "http", 80)
            .with_endpoint(weighted("198.18.1.10", 0))
            .with_endpoint(weighted("198.18.1.11", 3));
        assert_eq!(warnings(&one_left), []);
        assert_eq!(
            warnings(&port("default/empty", "http", 80)),
            [],
            "no endpoints: none"
        );
    }

    #[test]
    fn repeated_endpoint_is_reported_once() {
        let web = port("default/web", "http", 80)
            .with_endpoint(endpoint("198.18.1.11", 8080))
            .with_endpoint(endpoint("198.18.1.10", 8080))
            .with_endpoint(endpoint("198.18.1.11", 8080))
            .with_endpoint(endpoint("198.18.1.11", 8080))
            .with_endpoint(endpoint("198.18.1.11", 8081));
        assert_eq!(
            problems_of([web]),
            ["services[default/web].ports[http].endpoints[198.18.1.11:8080]: listed more than once"]
        );
    }

    #[test]
    fn endpoint_weight_above_ipvs_limit_is_reported() {
        let mut heavy = endpoint("198.18.1.10", 8080);
        heavy.weight = MAX_WEIGHT + 1;
        let mut heaviest_allowed = endpoint("198.18.1.11", 8080);
        heaviest_allowed.weight = MAX_WEIGHT;
        let web = port("default/web", "http", 80)
            .with_endpoint(heavy)
            .with_endpoint(heaviest_allowed);
        assert_eq!(
            problems_of([web]),
            [
                "services[default/web].ports[http].endpoints[198.18.1.10:8080].weight: 2147483648 \
              is above 2147483647, the most IPVS accepts"
            ]
        );
    }

    /// Newline, NUL and ESC: a forged log line, a cut C string, a terminal escape.
    const CONTROL_CHARACTERS: [(char, &str); 3] =
        [('\n', "\\n"), ('\0', "\\0"), ('\u{1b}', "\\u{1b}")];

    #[test]
    fn control_characters_in_service_and_port_names_are_reported_escaped() {
        for (c, escaped) in CONTROL_CHARACTERS {
            let bad = format!("we{c}b");
            let ports = [
                port(&format!("default/{bad}"), "http", 80),
                port(&format!("ns{c}/api"), "http", 81),
                port("default/db", &format!("sql{c}"), 82),
            ];
            let problems = problems_of(ports);
            assert_eq!(
                problems,
                [
                    format!(
                        "services[default/db].ports[sql{escaped}].name: \"sql{escaped}\" contains \
                         the control character U+{:04X}",
                        u32::from(c)
                    ),
                    format!(
                        "services[default/we{escaped}b].name: \"we{escaped}b\" contains the \
                         control character U+{:04X}",
                        u32::from(c)
                    ),
                    format!(
                        "services[ns{escaped}/api].namespace: \"ns{escaped}\" contains the \
                         control character U+{:04X}",
                        u32::from(c)
                    ),
                ],
                "{c:?}"
            );
            for problem in &problems {
                assert!(!problem.contains(c), "raw {c:?} in {problem:?}");
            }
        }
    }

    #[test]
    fn control_characters_in_node_zone_and_hint_names_are_reported_escaped() {
        for (c, escaped) in CONTROL_CHARACTERS {
            let mut on_node = endpoint("198.18.1.10", 8080);
            on_node.node = Some(format!("node-b{c}"));
            on_node.zone = Some(format!("zone{c}"));
            on_node.zone_hints = vec!["zone-a".to_owned(), format!("z{c}")];
            on_node.node_hints = vec![format!("n{c}")];
            let web = port("default/web", "http", 80).with_endpoint(on_node);
            let problems = problems(
                ServiceTable::builder()
                    .node(format!("node-a{c}"))
                    .insert(web),
            );
            let at = "services[default/web].ports[http].endpoints[198.18.1.10:8080]";
            let code = format!("the control character U+{:04X}", u32::from(c));
            assert_eq!(
                problems,
                [
                    format!("node: \"node-a{escaped}\" contains {code}"),
                    format!("{at}.node: \"node-b{escaped}\" contains {code}"),
                    format!("{at}.zone: \"zone{escaped}\" contains {code}"),
                    format!("{at}.hints.zones[1]: \"z{escaped}\" contains {code}"),
                    format!("{at}.hints.nodes[0]: \"n{escaped}\" contains {code}"),
                ],
                "{c:?}"
            );
        }
    }

    #[test]
    fn printable_unicode_names_are_allowed() {
        let mut ep = endpoint("198.18.1.10", 8080);
        ep.node = Some("nœud-ä".to_owned());
        let web = port("défaut/wéb", "http-ü", 80).with_endpoint(ep);
        assert_eq!(problems_of([web]), Vec::<String>::new());
    }

    #[test]
    fn every_problem_is_reported_at_once_in_table_order() {
        let zzz = port("default/zzz", "http", 0);
        let aaa = port("default/aaa", "http", 80)
            .with_cluster_ip(ip("198.19.0.10"))
            .with_endpoint(endpoint("2001:db8::1", 0));
        let errors = ServiceTable::builder()
            .insert(zzz)
            .insert(aaa)
            .build()
            .expect_err("four problems");
        assert_eq!(
            errors.to_string(),
            "invalid service table (4 problem(s)):\n  \
             services[default/aaa].ports[http].endpoints[[2001:db8::1]:0].ip: 2001:db8::1 is \
             IPv6, but the cluster IPs are IPv4 only\n  \
             services[default/aaa].ports[http].endpoints[[2001:db8::1]:0].port: 0 is outside \
             1-65535\n  \
             services[default/zzz].ports[http].port: 0 is outside 1-65535\n  \
             services[default/zzz].ports[http].target_port: 0 is outside 1-65535"
        );
    }

    /// 10,000 services x 10 endpoints, each with a cluster IP, node port and external IP.
    fn large_table(services: u32) -> TableBuilder {
        let mut builder = ServiceTable::builder().node("node-a");
        for i in 0..services {
            let [_, _, hi, lo] = i.to_be_bytes();
            let mut p = port(&format!("ns-{}/svc-{i}", i % 100), "http", 80)
                .with_cluster_ip(IpAddr::from([198, 19, hi, lo]))
                .with_node_port(30_000 + u16::try_from(i % 30_000).expect("below 30000"));
            p.external_ips = vec![IpAddr::from([198, 18, 200 + hi, lo])];
            for e in 0..10u8 {
                p.endpoints.push(Endpoint::new(
                    IpAddr::from([198, 18, hi, lo]),
                    8000 + u16::from(e),
                ));
            }
            builder = builder.insert(p);
        }
        builder
    }

    #[test]
    fn large_valid_table_has_no_problems_and_one_clash_is_found() {
        let builder = large_table(10_000);
        let table = builder.build().expect("generated table is valid");
        let mut clash = table.edit();
        let mut extra = port("zz/extra", "http", 80).with_node_port(30_005);
        extra.cluster_ips = vec![ip("198.19.0.7")];
        clash.upsert(extra);
        assert_eq!(
            problems(clash),
            [
                "services[zz/extra].ports[http].node_port: 30005 already used by \
                 services[ns-5/svc-5].ports[http]",
                "services[zz/extra].ports[http].cluster_ips[0]: 198.19.0.7:80/tcp already used by \
                 services[ns-7/svc-7].ports[http] (cluster_ips)",
            ]
        );
    }

    #[test]
    #[cfg(not(debug_assertions))] // A timing bound means something only in an optimised build.
    fn large_table_validates_within_20_ms() {
        let table = large_table(10_000)
            .build()
            .expect("generated table is valid");
        let mut best = Duration::MAX;
        for _ in 0..5 {
            let started = std::time::Instant::now();
            let outcome = validate(table.node(), table.ports(), &[]);
            best = best.min(started.elapsed());
            assert!(outcome.is_ok());
        }
        eprintln!("validated 10,000 services x 10 endpoints in {best:?}");
        assert!(best < Duration::from_millis(20), "took {best:?}");
    }
}
