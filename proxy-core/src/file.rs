//! The table file format (YAML, or JSON) and its loader.
//!
//! A table file lists services; each service's ports become the table's service ports, and its
//! endpoints apply to every one of its ports (at each port's `target_port`, unless an endpoint
//! overrides `port`). Unknown fields are errors, so a typo never passes silently.
//!
//! ```yaml
//! node: node-a                      # this node, for local traffic policies
//! zone: zone-a                      # this node's zone, for endpoints' topology hints
//! services:
//!   - name: default/web             # namespace/name; a bare name means namespace `default`
//!     cluster_ips: [198.19.0.10]    # at most one IPv4 and one IPv6 address
//!     ports:                        # protocol: tcp (default), udp or sctp; target_port: = port
//!       - {name: http, protocol: tcp, port: 80, target_port: 8080, node_port: 30080}
//!     external_ips: []
//!     load_balancer_ips: []
//!     load_balancer_source_ranges: []   # CIDRs allowed to reach the load-balancer IPs
//!     session_affinity: {client_ip: {timeout_seconds: 10800}}   # none (default) or client_ip
//!     external_traffic_policy: cluster  # or local
//!     internal_traffic_policy: cluster  # or local
//!     scheduler: rr                     # optional hint: rr wrr lc wlc sh dh sed nq mh random
//!     health_check_node_port: 30100     # optional
//!     idle_timeout_seconds: 600         # optional (1-86400): idle connections and UDP flows close
//!     endpoints:                        # ready: true; serving: = ready; terminating: false;
//!       - {ip: 198.18.1.10, node: node-a, ready: true}         # weight: 1; zone, port, local
//!       - {ip: 198.18.1.11, node: node-b, ready: false, serving: true, terminating: true}
//!       - {ip: 198.18.1.12, node: node-c, hints: {zones: [zone-a], nodes: [node-a]}}
//! ```
//!
//! Field names are those of issue #2; none is renamed. An endpoint's `local` defaults to whether
//! its `node` is the table's `node`. `hints` are the EndpointSlice's topology hints (`forZones`,
//! `forNodes`); [`crate::select`] says how they narrow the endpoints.
//!
//! # Two ways in
//!
//! [`parse_table`] and [`load_table`] read a file whole into a validated [`ServiceTable`]: any
//! problem rejects it. [`TableSpec::apply_to`] feeds a parsed file to a
//! [`ChangeTracker`], the path `svcproxy` takes: only text that
//! does not parse is rejected whole, and each service port is checked on its own, so a bad entry
//! is skipped (keeping its last good version) while the rest applies.
//!
//! # Hostile files
//!
//! [`load_table`] and [`read_table_text`] read only a regular file (symlinks followed), checked
//! before it is opened, and at most a size limit ([`DEFAULT_MAX_TABLE_BYTES`]): `/dev/zero`, a
//! FIFO or a directory is refused with [`LoadError::NotRegular`], a huge file with
//! [`LoadError::TooLarge`]. A reader that must never block opens the file itself with
//! `O_NONBLOCK` and hands it to [`read_table_from`]. Parse errors quote the file's own text at
//! most a few characters at a time, with control characters escaped, and not at all when the
//! file fails on its first line or does not start with a table's key: a path symlinked to the
//! wrong file (a password file) must not end up in a log.
//!
//! # Errors and paths
//!
//! Syntax and type errors ([`LoadError::Parse`]) give the file, line and column. Problems in the
//! values ([`LoadError::Invalid`]) are all reported at once. Those found while reading the file
//! name the entry by index (`services[3].ports[0].node_port: 99999 is outside 1-65535`); those
//! found by [`crate::validate`] on the resulting table name it by key
//! (`services[default/web].ports[http].node_port: 30080 already used by ...`).

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize, Serializer};

use crate::table::{
    Endpoint, Protocol, Scheduler, ServicePort, ServicePortName, ServiceTable, SessionAffinity,
    TrafficPolicy,
};
use crate::tracker::{ChangeTracker, ServiceName};
use crate::validate::{control_character_problem, FieldError, ValidationErrors};

mod incremental;
mod parse_error;
mod read;

pub use incremental::SpecCache;
use parse_error::{json_error, quote_safely, yaml_error};
pub use read::{check_table_file, read_table_from, read_table_text, DEFAULT_MAX_TABLE_BYTES};

/// The namespace of a service written without one (`name: web`).
pub const DEFAULT_NAMESPACE: &str = "default";

/// Why a table file could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read table file {}: {error}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said: in the message (which the file watcher shows alone), not a
        /// `source`, so that a chain of causes prints it once.
        error: std::io::Error,
    },
    /// The text is not a well-formed table: bad syntax, a wrong type, an unknown field.
    #[error("{origin}{}: {message}", location(*line, *column))]
    Parse {
        /// The file name, or whatever the text came from.
        origin: String,
        /// The 1-based line of the problem, when the parser knows it.
        line: Option<usize>,
        /// The 1-based column of the problem, when the parser knows it.
        column: Option<usize>,
        /// What is wrong there.
        message: String,
    },
    /// The path is not a regular file (after following symlinks): a device such as `/dev/zero`
    /// would be read forever, a FIFO would block the reader, a directory holds no table.
    #[error("table file {} is {kind}, not a regular file", path.display())]
    NotRegular {
        /// The file.
        path: PathBuf,
        /// What it is instead: `a FIFO`, `a character device`, `a directory`...
        kind: &'static str,
    },
    /// The file is larger than the reader allows.
    #[error(
        "table file {} is larger than the limit of {limit} bytes ({} MiB)",
        path.display(),
        limit / (1024 * 1024)
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit in bytes.
        limit: u64,
    },
    /// The table is well-formed but its values are not valid.
    #[error("{origin}: {errors}")]
    Invalid {
        /// The file name, or whatever the text came from.
        origin: String,
        /// Every problem, each with its field path.
        errors: ValidationErrors,
    },
}

/// `:line:column` as compilers print it, or nothing when unknown.
fn location(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(line), Some(column)) => format!(":{line}:{column}"),
        (Some(line), None) => format!(":{line}"),
        _ => String::new(),
    }
}

/// Parses a table from YAML or JSON text. JSON is used when `origin` ends in `.json` or the text
/// starts with `{`; YAML otherwise (YAML 1.2 is a superset of JSON, but JSON's own parser gives
/// better messages for JSON). `origin` names the text in errors (usually its file name).
///
/// ```
/// use proxy_core::file::{parse_table, LoadError};
/// use proxy_core::ServicePortName;
///
/// let text = "
/// node: node-a
/// services:
///   - name: web
///     cluster_ips: [198.19.0.10]
///     ports: [{name: http, port: 80, target_port: 8080}]
///     endpoints: [{ip: 198.18.1.10, node: node-a}]
/// ";
/// let table = parse_table(text, "web.yaml")?;
/// let web = table.get(&ServicePortName::new("default", "web", "http")).unwrap();
/// assert_eq!(web.endpoints[0].port, 8080);
/// assert!(web.endpoints[0].is_local);
///
/// let typo = parse_table("services: [{name: web, prots: []}]", "typo.yaml").unwrap_err();
/// assert!(matches!(typo, LoadError::Parse { line: Some(1), .. }));
/// assert!(typo.to_string().starts_with("typo.yaml:1:"), "{typo}");
/// # Ok::<(), LoadError>(())
/// ```
///
/// # Errors
/// [`LoadError::Parse`] with line and column for syntax, type and unknown-field errors;
/// [`LoadError::Invalid`] with every problem in the values.
pub fn parse_table(text: &str, origin: &str) -> Result<ServiceTable, LoadError> {
    let spec = parse_spec(text, origin)?;
    spec.into_table().map_err(|errors| LoadError::Invalid {
        origin: origin.to_owned(),
        errors,
    })
}

/// Parses the text into its spec, without building the table.
///
/// # Errors
/// [`LoadError::Parse`], as [`parse_table`]; [`LoadError::Invalid`] when the node's name or
/// zone holds a control character.
pub fn parse_spec(text: &str, origin: &str) -> Result<TableSpec, LoadError> {
    if is_blank(text) {
        // The parser would say "unexpected end of input"; say what it means here.
        return Err(LoadError::Parse {
            origin: origin.to_owned(),
            line: None,
            column: None,
            message: "the file holds no table (an empty table is `services: []`)".to_owned(),
        });
    }
    let spec: TableSpec = parse_text(text, origin)?;
    // The node's name and zone are the file's own: a control character in them rejects it whole.
    let errors: Vec<FieldError> = [("node", &spec.node), ("zone", &spec.zone)]
        .into_iter()
        .filter_map(|(field, value)| {
            let problem = value.as_deref().and_then(control_character_problem)?;
            Some(FieldError::new(field, problem))
        })
        .collect();
    if errors.is_empty() {
        Ok(spec)
    } else {
        Err(LoadError::Invalid {
            origin: origin.to_owned(),
            errors: ValidationErrors { errors },
        })
    }
}

/// Parses one service entry, in the format of an item of a table file's `services:` (YAML or
/// JSON, told apart as [`parse_table`] does): what a source that keeps one service per record
/// reads (svcproxy's etcd source: one key per service). Build it with [`ServiceSpec::apply_to`].
///
/// ```
/// use proxy_core::file::parse_service;
///
/// let web = parse_service("name: shop/web\ncluster_ips: [198.19.0.10]\nports: [{port: 80}]", "key")?;
/// assert_eq!(web.service_name().map(|n| n.to_string()), Some("shop/web".to_owned()));
/// let typo = parse_service(r#"{"name": "web", "prots": []}"#, "/svcproxy/services/web").unwrap_err();
/// assert!(typo.to_string().starts_with("/svcproxy/services/web:1:"), "{typo}");
/// # Ok::<(), proxy_core::file::LoadError>(())
/// ```
///
/// # Errors
/// [`LoadError::Parse`] with line and column for syntax, type and unknown-field errors, and for
/// a blank text.
pub fn parse_service(text: &str, origin: &str) -> Result<ServiceSpec, LoadError> {
    if is_blank(text) {
        return Err(LoadError::Parse {
            origin: origin.to_owned(),
            line: None,
            column: None,
            message: "holds no service".to_owned(),
        });
    }
    parse_text(text, origin)
}

/// YAML or JSON text into `T`, with the parse errors of [`parse_table`].
fn parse_text<T: serde::de::DeserializeOwned>(text: &str, origin: &str) -> Result<T, LoadError> {
    let is_json = origin.ends_with(".json") || text.trim_start().starts_with('{');
    let parsed = if is_json {
        serde_json::from_str(text).map_err(|error| json_error(&error, origin))
    } else {
        serde_saphyr::from_str_with_options(text, yaml_options(text.len()))
            .map_err(|error| yaml_error(&error, origin))
    };
    parsed.map_err(|error| quote_safely(error, text))
}

/// The YAML parser's limits for a text of `len` bytes. serde-saphyr's defaults (250,000 nodes,
/// 1,000,000 events) stop a table file near 3,000 services × 10 endpoints; every YAML node
/// takes at least two bytes of text, so limits that grow with the text admit any table that is
/// really written out, while aliases and anchors, the way a small file expands into a huge one,
/// keep their default caps.
fn yaml_options(len: usize) -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_nodes = budget.max_nodes.max(len / 2);
    budget.max_events = budget.max_events.max(len);
    budget.max_total_scalar_bytes = budget.max_total_scalar_bytes.max(len);
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options
}

/// Reads and parses a table file (see [`parse_table`]), at most [`DEFAULT_MAX_TABLE_BYTES`] of
/// it, and only a regular file (see [`read_table_text`]).
///
/// # Errors
/// [`LoadError::Io`], [`LoadError::NotRegular`] or [`LoadError::TooLarge`] when the file cannot
/// be read, otherwise as [`parse_table`].
pub fn load_table(path: &Path) -> Result<ServiceTable, LoadError> {
    let text = read_table_text(path, DEFAULT_MAX_TABLE_BYTES)?;
    parse_table(&text, &path.display().to_string())
}

/// Writes a table as YAML in the file format: `parse_table(&render_table_yaml(&t), ..) == t`.
/// Fields at their default are left out. Used to print what was loaded (dry runs).
pub fn render_table_yaml(table: &ServiceTable) -> String {
    let spec = TableSpec::from(table);
    match serde_saphyr::to_string(&spec) {
        Ok(text) => text,
        // The spec holds only strings, numbers, booleans, lists and maps, which always serialize.
        Err(error) => format!("# cannot render the table: {error}\n"),
    }
}

/// Whether the text holds nothing but blank lines, comments and document markers.
fn is_blank(text: &str) -> bool {
    text.lines().all(|line| {
        let line = line.trim();
        line.is_empty() || line.starts_with('#') || line == "---" || line == "..."
    })
}

// === Spec types ===

/// A whole table file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSpec {
    /// This node's name, for local traffic policies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// This node's zone, for endpoints' topology hints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// The services. Required, so that an empty or truncated file is an error, not an empty table.
    pub services: Vec<ServiceSpec>,
}

/// One service: its ports, addresses, policies and endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// `namespace/name`, or `name` in namespace [`DEFAULT_NAMESPACE`].
    pub name: String,
    /// Cluster IPs: at most one IPv4 and one IPv6 address.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "flow_list"
    )]
    pub cluster_ips: Vec<IpAddr>,
    /// The ports; at least one (checked with the other values, so that it is reported with them).
    #[serde(default, serialize_with = "flow_items")]
    pub ports: Vec<PortSpec>,
    /// External IPs.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "flow_list"
    )]
    pub external_ips: Vec<IpAddr>,
    /// Load-balancer ingress IPs.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "flow_list"
    )]
    pub load_balancer_ips: Vec<IpAddr>,
    /// Sources allowed to reach the load-balancer IPs; empty allows everyone.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "flow_list"
    )]
    pub load_balancer_source_ranges: Vec<IpNet>,
    /// `none` (the default) or `{client_ip: {timeout_seconds: N}}`.
    #[serde(
        default,
        skip_serializing_if = "SessionAffinitySpec::is_none",
        serialize_with = "flow_map"
    )]
    pub session_affinity: SessionAffinitySpec,
    /// `cluster` (the default) or `local`.
    #[serde(default, skip_serializing_if = "is_cluster")]
    pub external_traffic_policy: TrafficPolicy,
    /// `cluster` (the default) or `local`.
    #[serde(default, skip_serializing_if = "is_cluster")]
    pub internal_traffic_policy: TrafficPolicy,
    /// A scheduler hint: `rr`, `wrr`, `lc`, `wlc`, `sh`, `dh`, `sed`, `nq`, `mh` or `random`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<Scheduler>,
    /// The node port answering health checks (1-65535).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_node_port: Option<u32>,
    /// How long a connection or UDP flow may stay idle before it is closed (1-86400); the
    /// backend's default when absent. Only the userspace backend reads it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_seconds: Option<u64>,
    /// The endpoints, shared by every port.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "flow_items"
    )]
    pub endpoints: Vec<EndpointSpec>,
}

/// One port of a service. Numbers are read wide so that `99999` is a validation error with a
/// path, not a type error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortSpec {
    /// The port's name; may be empty when the service has one port.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// `tcp` (the default), `udp` or `sctp`.
    #[serde(default = "default_protocol")]
    pub protocol: Protocol,
    /// The service port (1-65535).
    pub port: u32,
    /// The port on endpoints; defaults to `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u32>,
    /// The node port, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_port: Option<u32>,
}

/// Session affinity: `none`, or `{client_ip: {timeout_seconds: N}}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionAffinitySpec {
    /// No affinity.
    #[default]
    None,
    /// Client-IP affinity.
    ClientIp(ClientIpSpec),
}

impl SessionAffinitySpec {
    fn is_none(&self) -> bool {
        *self == SessionAffinitySpec::None
    }
}

/// Client-IP affinity settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientIpSpec {
    /// How long a client stays pinned: 1-86400, default 10800 (3 hours).
    #[serde(default = "default_timeout_seconds")]
    pub timeout_seconds: u64,
}

/// One endpoint of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSpec {
    /// The endpoint's address.
    pub ip: IpAddr,
    /// The node it runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Ready for new connections; default true.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub ready: bool,
    /// Able to answer; defaults to `ready`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving: Option<bool>,
    /// Being shut down; default false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub terminating: bool,
    /// The endpoint's zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Relative weight; default 1.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub weight: u32,
    /// The port on the endpoint, for every service port; defaults to each port's `target_port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// Whether the endpoint is on this node; defaults to `node` == the table's `node`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<bool>,
    /// Topology hints (EndpointSlice `hints`): which zones and nodes should use it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hints: Option<HintsSpec>,
}

/// An endpoint's topology hints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HintsSpec {
    /// Zones whose nodes should use the endpoint (`hints.forZones`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<String>,
    /// Nodes that should use the endpoint (`hints.forNodes`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
}

fn default_protocol() -> Protocol {
    Protocol::Tcp
}

fn default_timeout_seconds() -> u64 {
    SessionAffinity::DEFAULT_TIMEOUT.as_secs()
}

fn yes() -> bool {
    true
}

fn one() -> u32 {
    1
}

fn is_true(value: &bool) -> bool {
    *value
}

fn is_false(value: &bool) -> bool {
    !*value
}

fn is_one(value: &u32) -> bool {
    *value == 1
}

fn is_cluster(policy: &TrafficPolicy) -> bool {
    *policy == TrafficPolicy::Cluster
}

/// Writes each list item in YAML flow style (`- {ip: 198.18.1.10, node: node-a}`), one per line.
fn flow_items<S: Serializer, T: Serialize>(items: &[T], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(items.iter().map(serde_saphyr::FlowMap))
}

/// Writes a list in YAML flow style (`[198.19.0.10, 2001:db8::10]`).
fn flow_list<S: Serializer, T: Serialize>(items: &[T], serializer: S) -> Result<S::Ok, S::Error> {
    serde_saphyr::FlowSeq(items).serialize(serializer)
}

/// Writes a value in YAML flow style (`{client_ip: {timeout_seconds: 600}}`).
fn flow_map<S: Serializer, T: Serialize>(value: &T, serializer: S) -> Result<S::Ok, S::Error> {
    serde_saphyr::FlowMap(value).serialize(serializer)
}

// === impl TableSpec ===

impl TableSpec {
    /// Builds and validates the table. Problems in the spec itself (numbers out of range, bad
    /// names) use index paths (`services[3].ports[0].port`); the entries they affect are left out,
    /// and the rest is validated as a table, so every problem comes back at once.
    ///
    /// # Errors
    /// Every problem found.
    pub fn into_table(self) -> Result<ServiceTable, ValidationErrors> {
        let mut errors = Vec::new();
        let mut builder = ServiceTable::builder();
        builder.set_node(self.node.clone());
        builder.set_zone(self.zone.clone());
        for (index, service) in self.services.iter().enumerate() {
            let path = format!("services[{index}]");
            for port in service.to_ports(&path, self.node.as_deref(), &mut errors) {
                builder.insert_new(port);
            }
        }
        match builder.build() {
            Ok(table) if errors.is_empty() => Ok(table),
            Ok(_) => Err(ValidationErrors { errors }),
            Err(invalid) => {
                errors.extend(invalid.errors);
                Err(ValidationErrors { errors })
            }
        }
    }
}

impl TableSpec {
    /// Feeds this file to a change tracker, the one path every source takes: each service entry
    /// replaces its service (entries of one name together), services no longer in the file are
    /// deleted, and the node's name and zone are set. An entry with problems in the file itself
    /// (a number out of range: `services[3].ports[0].node_port: 99999 is outside 1-65535`) is
    /// rejected, so its service keeps what runs; the tracker checks the rest port by port, so one
    /// bad entry never holds back the others. Returns the tracker's generation after the last
    /// change.
    pub fn apply_to(&self, tracker: &mut ChangeTracker) -> u64 {
        // One file, one generation.
        self.apply_each(&mut tracker.batch());
        tracker.generation()
    }

    fn apply_each(&self, tracker: &mut ChangeTracker) {
        // Parsing refused control characters in both already; a refusal here keeps the last.
        if tracker.table().node() != self.node.as_deref() {
            if let Err(error) = tracker.set_node(self.node.clone()) {
                tracing::warn!(%error, "node name refused");
            }
        }
        if tracker.table().zone() != self.zone.as_deref() {
            if let Err(error) = tracker.set_zone(self.zone.clone()) {
                tracing::warn!(%error, "zone refused");
            }
        }
        // Entries of one service, in the order their names first appear.
        let mut order: Vec<ServiceName> = Vec::new();
        let mut entries: HashMap<ServiceName, FileService> = HashMap::new();
        for (index, service) in self.services.iter().enumerate() {
            let (namespace, name) = service
                .name
                .split_once('/')
                .unwrap_or((DEFAULT_NAMESPACE, &service.name));
            let key = ServiceName::new(namespace, name);
            let entry = entries.entry(key.clone()).or_insert_with(|| {
                order.push(key.clone());
                FileService::default()
            });
            entry.add(
                &key,
                service,
                &format!("services[{index}]"),
                self.node.as_deref(),
            );
        }
        for name in &order {
            if let Some(entry) = entries.remove(name) {
                entry.apply_to(tracker, name.clone());
            }
        }
        let listed: BTreeSet<ServiceName> = order.into_iter().collect();
        for name in tracker.service_names() {
            if !listed.contains(&name) {
                tracker.delete_service(&name);
            }
        }
    }
}

/// One service's entries in a file.
#[derive(Debug, Default)]
struct FileService {
    ports: Vec<ServicePort>,
    errors: Vec<FieldError>,
    port_names: Vec<ServicePortName>,
}

impl FileService {
    /// Adds the entry `service`, named `key`, at `path`.
    fn add(&mut self, key: &ServiceName, service: &ServiceSpec, path: &str, node: Option<&str>) {
        let ports = service.to_ports(path, node, &mut self.errors);
        self.ports.extend(ports);
        self.port_names
            .extend(service.ports.iter().map(|p| key.port(p.name.clone())));
    }

    /// The service's ports replace those of `name`; with problems in the entries, `name` is
    /// rejected instead and keeps what runs.
    fn apply_to(self, tracker: &mut ChangeTracker, name: ServiceName) -> u64 {
        if self.errors.is_empty() {
            tracker.set_service_ports(name, self.ports)
        } else {
            tracker.reject_service(name, self.port_names, self.errors)
        }
    }
}

impl ServiceSpec {
    /// The service's name: `namespace/name`, or `name` in [`DEFAULT_NAMESPACE`]; `None` when it
    /// is empty or has more than one `/`.
    pub fn service_name(&self) -> Option<ServiceName> {
        let (namespace, name) = self.split_name("name", &mut Vec::new())?;
        Some(ServiceName::new(namespace, name))
    }

    /// Feeds this one entry to `tracker` as its service's whole description, the way
    /// [`TableSpec::apply_to`] feeds each entry of a file: its ports replace the service's;
    /// with problems in the entry itself (reported at paths under `path`), the service is
    /// rejected and keeps what runs. Endpoints on the tracker's node are local. Returns the
    /// tracker's generation after the change.
    ///
    /// ```
    /// use proxy_core::file::parse_service;
    /// use proxy_core::tracker::{ChangeTracker, ServiceName};
    /// use proxy_core::{Capabilities, ServicePortName};
    ///
    /// let (mut tracker, _source) = ChangeTracker::new("any", Capabilities::everything());
    /// let web = parse_service(
    ///     "name: shop/web
    /// cluster_ips: [198.19.0.10]
    /// ports: [{name: http, port: 80}]
    /// endpoints: [{ip: 198.18.1.10}]",
    ///     "web",
    /// )?;
    /// web.apply_to(&mut tracker, "web")?;
    /// assert!(tracker.table().get(&ServicePortName::new("shop", "web", "http")).is_some());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// The entry's name is not a service name (empty, or more than one `/`): nothing changed.
    pub fn apply_to(&self, tracker: &mut ChangeTracker, path: &str) -> Result<u64, FieldError> {
        let mut errors = Vec::new();
        let Some((namespace, name)) = self.split_name(path, &mut errors) else {
            return Err(errors.remove(0));
        };
        let key = ServiceName::new(namespace, name);
        let node = tracker.table().node().map(str::to_owned);
        let mut entry = FileService::default();
        entry.add(&key, self, path, node.as_deref());
        Ok(entry.apply_to(tracker, key))
    }
}

/// A number of the file as a port, or an error at `path`.
fn port_number(value: u32, path: impl fmt::Display, errors: &mut Vec<FieldError>) -> Option<u16> {
    match u16::try_from(value) {
        Ok(port) if port != 0 => Some(port),
        _ => {
            errors.push(FieldError::new(
                path.to_string(),
                format!("{value} is outside 1-65535"),
            ));
            None
        }
    }
}

impl ServiceSpec {
    /// `(namespace, name)` from `namespace/name` or `name`.
    fn split_name(&self, path: &str, errors: &mut Vec<FieldError>) -> Option<(&str, &str)> {
        let (namespace, name) = self
            .name
            .split_once('/')
            .unwrap_or((DEFAULT_NAMESPACE, &self.name));
        let problem = if self.name.is_empty() {
            "must not be empty".to_owned()
        } else if name.contains('/') {
            format!("{:?} has more than one '/'", self.name)
        } else {
            return Some((namespace, name));
        };
        errors.push(FieldError::new(format!("{path}.name"), problem));
        None
    }

    /// The service ports this service stands for; spec problems go to `errors`, in the order of
    /// the fields.
    fn to_ports(
        &self,
        path: &str,
        node: Option<&str>,
        errors: &mut Vec<FieldError>,
    ) -> Vec<ServicePort> {
        let name = self.split_name(path, errors);
        if self.ports.is_empty() {
            errors.push(FieldError::new(
                format!("{path}.ports"),
                "must list at least one port",
            ));
        }
        // (port, target port, node port) of each port; `None` leaves the port out.
        let numbers: Vec<Option<(u16, u16, Option<u16>)>> = self
            .ports
            .iter()
            .enumerate()
            .map(|(index, spec)| spec.numbers(&format!("{path}.ports[{index}]"), errors))
            .collect();
        let session_affinity = self.affinity(path, errors);
        let health_check_node_port = self.health_check_node_port.and_then(|port| {
            port_number(port, format_args!("{path}.health_check_node_port"), errors)
        });
        let idle_timeout = self.idle_timeout(path, errors);
        // Endpoint port overrides, checked once for all ports: `None` leaves an endpoint out.
        let endpoint_ports: Vec<Option<Option<u16>>> = self
            .endpoints
            .iter()
            .enumerate()
            .map(|(index, endpoint)| match endpoint.port {
                None => Some(None),
                Some(port) => {
                    port_number(port, format_args!("{path}.endpoints[{index}].port"), errors)
                        .map(Some)
                }
            })
            .collect();
        let Some((namespace, service)) = name else {
            return Vec::new();
        };
        let mut ports = Vec::with_capacity(self.ports.len());
        for (spec, numbers) in self.ports.iter().zip(numbers) {
            let Some((number, target_port, node_port)) = numbers else {
                continue;
            };
            let mut port = ServicePort::new(
                ServicePortName::new(namespace, service, spec.name.as_str()),
                spec.protocol,
                number,
            );
            port.target_port = target_port;
            port.node_port = node_port;
            port.cluster_ips.clone_from(&self.cluster_ips);
            port.external_ips.clone_from(&self.external_ips);
            port.load_balancer_ips.clone_from(&self.load_balancer_ips);
            port.load_balancer_source_ranges
                .clone_from(&self.load_balancer_source_ranges);
            port.session_affinity = session_affinity;
            port.external_traffic_policy = self.external_traffic_policy;
            port.internal_traffic_policy = self.internal_traffic_policy;
            port.scheduler = self.scheduler;
            port.health_check_node_port = health_check_node_port;
            port.idle_timeout = idle_timeout;
            port.endpoints = self
                .endpoints
                .iter()
                .zip(&endpoint_ports)
                .filter_map(|(endpoint, port_override)| {
                    let endpoint_port = (*port_override)?.unwrap_or(target_port);
                    Some(endpoint.to_endpoint(endpoint_port, node))
                })
                .collect();
            ports.push(port);
        }
        ports
    }

    /// The session affinity; an out-of-range timeout is reported here, once for the service, and
    /// clamped so that the table check does not report it again for every port.
    fn affinity(&self, path: &str, errors: &mut Vec<FieldError>) -> SessionAffinity {
        let SessionAffinitySpec::ClientIp(ClientIpSpec { timeout_seconds }) = self.session_affinity
        else {
            return SessionAffinity::None;
        };
        let max = SessionAffinity::MAX_TIMEOUT.as_secs();
        if !(1..=max).contains(&timeout_seconds) {
            errors.push(FieldError::new(
                format!("{path}.session_affinity.client_ip.timeout_seconds"),
                format!("{timeout_seconds} is outside 1-{max}"),
            ));
        }
        SessionAffinity::ClientIp {
            timeout: Duration::from_secs(timeout_seconds.clamp(1, max)),
        }
    }
}

impl ServiceSpec {
    /// The idle timeout, if set; one out of range is reported here, once for the service, and
    /// clamped so that the table check does not report it again for every port.
    fn idle_timeout(&self, path: &str, errors: &mut Vec<FieldError>) -> Option<Duration> {
        let seconds = self.idle_timeout_seconds?;
        let max = ServicePort::MAX_IDLE_TIMEOUT.as_secs();
        if !(1..=max).contains(&seconds) {
            errors.push(FieldError::new(
                format!("{path}.idle_timeout_seconds"),
                format!("{seconds} is outside 1-{max}"),
            ));
        }
        Some(Duration::from_secs(seconds.clamp(1, max)))
    }
}

impl PortSpec {
    /// (port, target port, node port), or `None` when the port or target port is out of range.
    fn numbers(&self, path: &str, errors: &mut Vec<FieldError>) -> Option<(u16, u16, Option<u16>)> {
        let number = port_number(self.port, format_args!("{path}.port"), errors);
        let target_port = match self.target_port {
            None => number,
            Some(target) => port_number(target, format_args!("{path}.target_port"), errors),
        };
        let node_port = self
            .node_port
            .and_then(|port| port_number(port, format_args!("{path}.node_port"), errors));
        Some((number?, target_port?, node_port))
    }
}

impl EndpointSpec {
    fn to_endpoint(&self, port: u16, node: Option<&str>) -> Endpoint {
        Endpoint {
            addr: self.ip,
            port,
            node: self.node.clone(),
            is_local: self
                .local
                .unwrap_or_else(|| is_on_node(self.node.as_deref(), node)),
            ready: self.ready,
            serving: self.serving.unwrap_or(self.ready),
            terminating: self.terminating,
            zone: self.zone.clone(),
            weight: self.weight,
            zone_hints: self
                .hints
                .as_ref()
                .map_or_else(Vec::new, |h| h.zones.clone()),
            node_hints: self
                .hints
                .as_ref()
                .map_or_else(Vec::new, |h| h.nodes.clone()),
        }
    }

    /// The spec of `endpoint` in a port whose target port is `target_port`, defaults left out.
    fn from_endpoint(endpoint: &Endpoint, target_port: u16, node: Option<&str>) -> Self {
        let default_local = is_on_node(endpoint.node.as_deref(), node);
        Self {
            ip: endpoint.addr,
            node: endpoint.node.clone(),
            ready: endpoint.ready,
            serving: (endpoint.serving != endpoint.ready).then_some(endpoint.serving),
            terminating: endpoint.terminating,
            zone: endpoint.zone.clone(),
            weight: endpoint.weight,
            port: (endpoint.port != target_port).then_some(u32::from(endpoint.port)),
            local: (endpoint.is_local != default_local).then_some(endpoint.is_local),
            hints: endpoint.has_hints().then(|| HintsSpec {
                zones: endpoint.zone_hints.clone(),
                nodes: endpoint.node_hints.clone(),
            }),
        }
    }
}

/// An endpoint's default locality: its node is this node.
fn is_on_node(endpoint_node: Option<&str>, node: Option<&str>) -> bool {
    endpoint_node.is_some() && endpoint_node == node
}

impl From<&ServiceTable> for TableSpec {
    /// The spec of a table. Consecutive ports of one service that share every service-wide field
    /// become one service entry; ports that differ get entries of their own (with the same name).
    fn from(table: &ServiceTable) -> Self {
        let node = table.node();
        let mut services: Vec<ServiceSpec> = Vec::new();
        for port in table.iter() {
            let mut service = ServiceSpec {
                name: port.name.service(),
                cluster_ips: port.cluster_ips.clone(),
                ports: Vec::new(),
                external_ips: port.external_ips.clone(),
                load_balancer_ips: port.load_balancer_ips.clone(),
                load_balancer_source_ranges: port.load_balancer_source_ranges.clone(),
                session_affinity: match port.session_affinity {
                    SessionAffinity::None => SessionAffinitySpec::None,
                    SessionAffinity::ClientIp { timeout } => {
                        // Validation keeps timeouts in whole seconds.
                        SessionAffinitySpec::ClientIp(ClientIpSpec {
                            timeout_seconds: timeout.as_secs(),
                        })
                    }
                },
                external_traffic_policy: port.external_traffic_policy,
                internal_traffic_policy: port.internal_traffic_policy,
                scheduler: port.scheduler,
                health_check_node_port: port.health_check_node_port.map(u32::from),
                // Validation keeps idle timeouts in whole seconds.
                idle_timeout_seconds: port.idle_timeout.map(|t| t.as_secs()),
                endpoints: port
                    .endpoints
                    .iter()
                    .map(|e| EndpointSpec::from_endpoint(e, port.target_port, node))
                    .collect(),
            };
            let port_spec = PortSpec {
                name: port.name.port.clone(),
                protocol: port.protocol,
                port: u32::from(port.port),
                target_port: (port.target_port != port.port).then_some(u32::from(port.target_port)),
                node_port: port.node_port.map(u32::from),
            };
            match services.last_mut() {
                Some(last) if same_but_ports(last, &service) => last.ports.push(port_spec),
                _ => {
                    service.ports.push(port_spec);
                    services.push(service);
                }
            }
        }
        TableSpec {
            node: node.map(str::to_owned),
            zone: table.zone().map(str::to_owned),
            services,
        }
    }
}

/// Whether two service entries agree on everything but their ports.
fn same_but_ports(a: &ServiceSpec, b: &ServiceSpec) -> bool {
    // Destructured so that a new field cannot be forgotten here.
    let ServiceSpec {
        name,
        cluster_ips,
        ports: _,
        external_ips,
        load_balancer_ips,
        load_balancer_source_ranges,
        session_affinity,
        external_traffic_policy,
        internal_traffic_policy,
        scheduler,
        health_check_node_port,
        idle_timeout_seconds,
        endpoints,
    } = a;
    *name == b.name
        && *cluster_ips == b.cluster_ips
        && *external_ips == b.external_ips
        && *load_balancer_ips == b.load_balancer_ips
        && *load_balancer_source_ranges == b.load_balancer_source_ranges
        && *session_affinity == b.session_affinity
        && *external_traffic_policy == b.external_traffic_policy
        && *internal_traffic_policy == b.internal_traffic_policy
        && *scheduler == b.scheduler
        && *health_check_node_port == b.health_check_node_port
        && *idle_timeout_seconds == b.idle_timeout_seconds
        && *endpoints == b.endpoints
}
